//! VMFUNC of L2 emulated by L0: EPTP switching (VM function 0) as L1's processor would carry it
//! out (SDM Vol. 3C, 26.5.6 "VM Functions", 26.5.6.3 "EPTP Switching"; Vol. 2B "VMFUNC—Invoke
//! VM function").
//!
//! VMCS02 enables VM functions when VMCS12 does, but with VM-function controls 0: every VMFUNC
//! of L2 then exits to L0 (basic exit reason 59, SDM 26.5.6.2), and L0 decides with
//! [`L1VmxState::vmfunc`] whether L1's processor would have completed it (L0 then switches L2 to
//! the new EPTP12 and skips the instruction) or exited to L1 (L0 reflects the exit). Without
//! "enable VM functions" in VMCS12, VMCS02 does not enable them either, and the processor raises
//! the #UD L1's would.

use vmx_caps::{SecondaryControls, VmFuncControls};
use vmx_core::VmFail;

use super::{L1VmxState, eptp_valid};
use crate::check::PhysMemory;
use crate::{VmcsRead, VmcsWrite, fields};

/// Entries of an EPTP list (SDM 25.6.14 "VM-Function Controls": 512 8-byte EPTPs).
const EPTP_LIST_ENTRIES: u64 = 512;

/// What L1's processor does with a VMFUNC of L2 ([`L1VmxState::vmfunc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmfuncOutcome {
    /// EPTP switching completed: VMCS12's EPT pointer (and, where L1's processor has
    /// "EPT-violation #VE", its EPTP index) now hold the new values. L0 runs L2 on the new
    /// EPTP12 and resumes it after the instruction, with no exit to L1.
    Switched {
        /// The new EPTP12 (entry `index` of the EPTP list).
        eptp: u64,
        /// The EPTP index (ECX\[15:0\]).
        index: u16,
        /// Whether the EPT pointer changed (EPT02, derived from the old one, must follow).
        changed: bool,
    },
    /// The VMFUNC causes a VM exit to L1 (basic exit reason 59): a function VMCS12 does not
    /// enable, ECX ≥ 512, or an EPTP-list entry that is not a valid EPTP.
    Exit,
}

impl L1VmxState {
    /// L2's VMFUNC with `function` in EAX and `index` in ECX (the low 32 bits of RAX and RCX are
    /// used), on L1's processor whose current VMCS (VMCS12) runs L2, reading the EPTP list from
    /// L1's memory `mem` (an entry outside it reads as all ones, which is no valid EPTP).
    ///
    /// As the SDM's VMFUNC operation: a function above 63 or whose bit is 0 in VMCS12's
    /// VM-function controls (or VMCS12 without "enable VM functions") exits. Function 0 (EPTP
    /// switching, 26.5.6.3): ECX ≥ 512 exits; else the 8 bytes of entry ECX of the EPTP list
    /// (at the EPTP-list address plus 8 × ECX) are the tentative EPTP, which must pass the checks VM entry makes of the EPT
    /// pointer (27.2.1.1: memory type and page-walk length L1's capabilities allow, the
    /// accessed/dirty and supervisor shadow-stack bits only where supported, reserved bits 0)
    /// or the VMFUNC exits; a valid one is written into VMCS12's EPT pointer, and ECX\[15:0\]
    /// into the EPTP index where L1's processor supports "EPT-violation #VE".
    ///
    /// L0 changes VMCS12 here on L2's behalf, as L1's processor changes its current VMCS: the
    /// fields are not marked dirty (a VMCS02 L0 keeps does not hold them: its EPT pointer is
    /// EPT02's, which L0 switches itself).
    ///
    /// # Errors
    ///
    /// [`VmFail`] when a VMCS12 field cannot be read or written; without a current VMCS,
    /// [`VmFail::Invalid`].
    pub fn vmfunc(
        &mut self,
        function: u64,
        index: u64,
        mem: &mut (impl PhysMemory + ?Sized),
    ) -> Result<VmfuncOutcome, VmFail> {
        let function = function as u32;
        let index = index as u32;
        let ve = self.caps.proc2.allows(SecondaryControls::EPT_VIOLATION_VE);
        let phys_width = self.phys_width;
        let cap = self.caps.ept_vpid;
        let Some(current) = self.current.as_mut() else {
            return Err(VmFail::Invalid);
        };
        let vmcs12 = &mut current.vmcs;
        let controls = vmcs12.read_controls()?;
        if !controls
            .proc2
            .contains(SecondaryControls::ENABLE_VM_FUNCTIONS)
            || function > 63
            || controls.vmfunc.bits() & (1u64 << function) == 0
        {
            return Ok(VmfuncOutcome::Exit);
        }
        if function != 0 || !controls.vmfunc.contains(VmFuncControls::EPTP_SWITCHING) {
            // No other VM function is offered to L1: nothing L0 could carry out.
            return Ok(VmfuncOutcome::Exit);
        }
        if u64::from(index) >= EPTP_LIST_ENTRIES {
            return Ok(VmfuncOutcome::Exit);
        }
        let list = vmcs12.read_raw(fields::EPTP_LIST_ADDRESS.encoding())?;
        let mut bytes = [0xffu8; 8];
        if mem
            .read(list.wrapping_add(8 * u64::from(index)), &mut bytes)
            .is_err()
        {
            bytes = [0xff; 8];
        }
        let eptp = u64::from_le_bytes(bytes);
        if !eptp_valid(eptp, &cap, phys_width) {
            return Ok(VmfuncOutcome::Exit);
        }
        let old = vmcs12.read_raw(fields::EPT_POINTER.encoding())?;
        vmcs12.write_raw(fields::EPT_POINTER.encoding(), eptp)?;
        let index = index as u16;
        if ve {
            vmcs12.write_raw(fields::EPTP_INDEX.encoding(), index.into())?;
        }
        Ok(VmfuncOutcome::Switched {
            eptp,
            index,
            changed: eptp != old,
        })
    }
}
