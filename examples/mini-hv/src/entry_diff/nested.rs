//! Each case launched a second time, the way a guest hypervisor's VMLAUNCH reaches an outer one:
//! the mutated VMCS as L1's VMCS12 through [`vmcs::nested::L1VmxState`] ([`l1_launch`]).

use vmcs::check::{self, Outcome};
use vmcs::fields;
use vmcs::nested::{
    GuestMemory, GuestMsrs, L1Context, L1VmxState, L2Entry, PointerOperand, VmxOutcome,
};
use vmx_caps::VmxCapabilities;

use super::IdentityMemory;
use crate::hv::Vmcs;

/// L1's memory for the nested launch: physical memory read through [`IdentityMemory`], except
/// the VMCS12 region (the real current VMCS's address, so that the launch context is the same),
/// which lives in `overlay` so that the emulation never writes the processor's VMCS region.
pub(super) struct L1Memory<'a> {
    vmcs12: u64,
    overlay: &'a mut [u8; 4096],
}

impl L1Memory<'_> {
    fn overlaid(&self, address: u64, len: usize) -> Option<usize> {
        let offset = address.checked_sub(self.vmcs12)?;
        (offset + len as u64 <= 4096).then_some(offset as usize)
    }
}

impl check::PhysMemory for L1Memory<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), check::MemoryError> {
        match self.overlaid(address, buf.len()) {
            Some(at) => {
                buf.copy_from_slice(&self.overlay[at..at + buf.len()]);
                Ok(())
            }
            None => IdentityMemory.read(address, buf),
        }
    }
}

impl GuestMemory for L1Memory<'_> {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), check::MemoryError> {
        match self.overlaid(address, bytes.len()) {
            Some(at) => {
                self.overlay[at..at + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
            // Only the VMCS12 region is L1's to write here.
            None => Err(check::MemoryError::OutOfRange {
                address,
                len: bytes.len(),
            }),
        }
    }
}

/// The MSRs of the nested launch: every WRMSR succeeds, as the checker assumes.
pub(super) struct AnyMsr;

impl GuestMsrs for AnyMsr {
    fn read(&mut self, _msr: u32) -> Option<u64> {
        Some(0)
    }
    fn write(&mut self, _msr: u32, _value: u64) -> bool {
        true
    }
}

/// The outcome of the current (mutated) VMCS launched by L1 through the nested emulation:
/// VMXON and VMPTRLD at the real pointers, the VMCS's fields as VMCS12, VMLAUNCH.
pub(super) fn l1_launch(
    caps: &VmxCapabilities,
    cpu: check::CpuFacts,
    active: &Vmcs<'_>,
    vmxon: u64,
    maxphyaddr: u8,
) -> Result<Outcome, &'static str> {
    let mut l1 = L1VmxState::new(caps, maxphyaddr).map_err(|_| "capabilities refused")?;
    let mut overlay = [0u8; 4096];
    overlay[..4].copy_from_slice(&caps.basic.revision_id().to_le_bytes());
    let vmcs12 = active.phys_addr();
    let mut mem = L1Memory {
        vmcs12,
        overlay: &mut overlay,
    };
    let cx = L1Context::long_mode_cpl0();
    if l1.vmxon(&cx, PointerOperand::Memory(vmxon), &mut mem) != VmxOutcome::Succeed(()) {
        return Err("VMXON failed");
    }
    if l1.vmptrld(&cx, PointerOperand::Memory(vmcs12), &mut mem) != VmxOutcome::Succeed(()) {
        return Err("VMPTRLD failed");
    }
    let Some(v12) = l1.current_vmcs_mut() else {
        return Err("no current VMCS");
    };
    for info in fields::ALL.iter() {
        if let Ok(value) = active.read_raw(info.encoding) {
            // A field beyond VMCS12's highest index is not part of it.
            let _ = v12.store(info.encoding, value);
        }
    }
    let entry = l1
        .enter_l2(
            &cx,
            check::EntryInstruction::Vmlaunch,
            cpu,
            &mut mem,
            &mut |_: &check::Violation| {},
            &mut AnyMsr,
        )
        .map_err(|_| "VMCS12 unreadable")?;
    Ok(match entry {
        L2Entry::Enter => Outcome::Success,
        L2Entry::Instruction(VmxOutcome::VmFailValid(error)) => Outcome::VmFailValid(error),
        L2Entry::Instruction(_) => Outcome::VmFailInvalid,
        L2Entry::EntryFailure {
            exit_reason,
            qualification,
        } => Outcome::EntryFailure {
            exit_reason,
            qualification,
        },
    })
}
