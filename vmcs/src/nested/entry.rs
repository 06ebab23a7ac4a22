//! VMLAUNCH and VMRESUME of L1: the VM-entry checks on VMCS12, with the SDM's result for L1.

use super::vmcs02::{GuestMsrs, load_entry_msrs};
use super::{GuestMemory, L1Context, L1VmxState, VmxOutcome};

/// Exit reason 34 with bit 31 set: "VM-entry failure due to MSR loading".
const EXIT_REASON_MSR_LOADING: u32 = 0x8000_0022;
use crate::check::{
    CheckError, Checker, CpuFacts, EntryInstruction, LaunchContext, Outcome, ViolationSink,
};
use crate::fields;

/// What L1's VMLAUNCH or VMRESUME does ([`L1VmxState::enter_l2`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L2Entry {
    /// The instruction completed in L1 without entering L2: a fault, VMfailInvalid, or
    /// VMfailValid (4, 5, 7, 8, 26, ...) whose number is now in VMCS12's VM-instruction error
    /// field. L0 reflects it into L1's RFLAGS (or injects the fault) and resumes L1 after the
    /// instruction.
    Instruction(VmxOutcome),
    /// A VM-entry failure during or after loading guest state (SDM Vol. 3C, "VM-Entry Failures
    /// During or After Loading Guest State"): VMCS12's exit reason (bit 31 set, basic reason 33
    /// or 34) and exit qualification have been written, and no other VM-exit information field
    /// ("All other VM-exit information fields are unmodified"). L0 now loads VMCS12's host
    /// state into L1 and processes its VM-exit MSR-load area, as a VM exit would, and resumes
    /// L1 at its host RIP.
    EntryFailure {
        /// The exit reason written into VMCS12 (bit 31 set).
        exit_reason: u32,
        /// The exit qualification written into VMCS12: 0, 2, 3 or 4 for reason 33, the 1-based
        /// index of the failing VM-entry MSR-load entry for 34.
        qualification: u64,
    },
    /// Every check passed: L0 builds the VMCS that runs L2 from VMCS12 and enters L2. For
    /// VMLAUNCH, the launch state of VMCS12 is now "launched".
    Enter,
}

impl L1VmxState {
    /// L1's VMLAUNCH or VMRESUME: the instruction's own checks ([`L1VmxState::vm_entry`]),
    /// then the software VM-entry checker ([`Checker`]) on VMCS12 with the capabilities L1 sees
    /// and `cpu` (L1's processor as L0 presents it), reading the structures VMCS12 points to
    /// (VMCS link pointer, VM-entry MSR-load area, PDPTEs, virtual-APIC page) from L1's memory
    /// `mem`. Every violation found goes to `sink`; the result is the one the SDM's order of
    /// evaluation gives (the first failing class: VMfailValid 7 for the controls, 8 for the
    /// host state, then a VM-entry failure with reason 33 or 34).
    ///
    /// # Errors
    ///
    /// [`CheckError`] when a field every processor has cannot be read from VMCS12, or the exit
    /// reason or qualification cannot be written (the capabilities' VMCS_ENUM excludes it).
    pub fn enter_l2<M, S, G>(
        &mut self,
        cx: &L1Context,
        instruction: EntryInstruction,
        cpu: CpuFacts,
        mem: &mut M,
        sink: &mut S,
        msrs: &mut G,
    ) -> Result<L2Entry, CheckError>
    where
        M: GuestMemory + ?Sized,
        S: ViolationSink + ?Sized,
        G: GuestMsrs + ?Sized,
    {
        match self.vm_entry(cx, instruction) {
            VmxOutcome::Succeed(()) => {}
            other => return Ok(L2Entry::Instruction(other)),
        }
        let (Some(vmxon), Some(current)) = (self.vmxon, self.current.as_ref()) else {
            // `vm_entry` succeeded, so both exist.
            return Ok(L2Entry::Instruction(VmxOutcome::VmFailInvalid));
        };
        let launch = LaunchContext {
            instruction,
            launch_state: current.launch,
            current_vmcs: Some(current.pointer),
            current_vmcs_is_shadow: current.shadow,
            vmxon_pointer: vmxon,
            efer_lma: cx.efer_lma,
            in_smm: false,
            blocked_by_mov_ss: cx.blocked_by_mov_ss,
        };
        let checker = Checker::new(&self.caps, cpu, launch);
        let summary = checker.check(&current.vmcs, mem, sink)?;
        Ok(match summary.outcome {
            Outcome::Success => {
                if let Err(index) = load_entry_msrs(&current.vmcs, mem, msrs) {
                    return self.entry_failure(EXIT_REASON_MSR_LOADING, index.into());
                }
                if instruction == EntryInstruction::Vmlaunch {
                    self.mark_launched();
                }
                L2Entry::Enter
            }
            Outcome::VmFailInvalid => L2Entry::Instruction(VmxOutcome::VmFailInvalid),
            Outcome::VmFailValid(error) => L2Entry::Instruction(self.fail(error)),
            Outcome::EntryFailure {
                exit_reason,
                qualification,
            } => self.entry_failure(exit_reason, qualification)?,
        })
    }

    /// Writes the exit reason and qualification of a VM-entry failure into VMCS12.
    fn entry_failure(
        &mut self,
        exit_reason: u32,
        qualification: u64,
    ) -> Result<L2Entry, CheckError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(L2Entry::Instruction(VmxOutcome::VmFailInvalid));
        };
        for (encoding, value) in [
            (fields::EXIT_REASON.encoding(), u64::from(exit_reason)),
            (fields::EXIT_QUALIFICATION.encoding(), qualification),
        ] {
            current
                .vmcs
                .store(encoding, value)
                .map_err(|error| CheckError { encoding, error })?;
        }
        Ok(L2Entry::EntryFailure {
            exit_reason,
            qualification,
        })
    }
}
