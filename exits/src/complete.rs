//! Completing an instruction the hypervisor emulated: what the processor would have done at its
//! end, applied to the guest-state area (SDM Vol. 3C, "Virtualization of System Resources",
//! "Debug Exceptions"; Vol. 3A, "Single-Step Exception Condition").
//!
//! ```
//! use exits::{InstructionLength, complete::skip_instruction};
//! use vmcs::{InterruptibilityState, SoftVmcs, VmcsRead, VmcsWrite, fields};
//!
//! let mut vmcs = SoftVmcs::all_fields();
//! vmcs.write(fields::GUEST_RIP, 0x1000)?;
//! vmcs.write(fields::GUEST_RFLAGS, vmcs::Rflags::RESET | vmcs::Rflags::IF)?;
//! vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, InterruptibilityState::BLOCKING_BY_STI)?;
//!
//! // The guest executed a 2-byte CPUID right after STI; the hypervisor emulated it.
//! let done = skip_instruction(&mut vmcs, InstructionLength(2))?;
//! assert_eq!((done.rip, done.single_step), (0x1002, false));
//! assert_eq!(vmcs.read(fields::GUEST_RIP)?, 0x1002);
//! // The STI shadow covered only that instruction.
//! assert!(vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use vmcs::{
    DebugCtl, InterruptibilityState, PendingDebugExceptions, Rflags, VmcsRead, VmcsWrite, fields,
};
use vmx_caps::EntryControls;
use vmx_core::VmFail;

use crate::instruction::InstructionLength;

/// Why an instruction could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompleteError {
    /// The instruction length is not that of an x86 instruction (1 to 15 bytes): it did not come
    /// from the VM-exit instruction length of an instruction exit. Nothing was written.
    #[error("instruction length {0} is not 1 to 15 bytes")]
    Length(InstructionLength),
    /// A VMREAD or VMWRITE failed.
    #[error("VMCS access failed: {0}")]
    Vmcs(#[from] VmFail),
}

/// What [`skip_instruction`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Skipped {
    /// The guest RIP now: the next instruction.
    pub rip: u64,
    /// Whether a single-step debug exception was made pending (RFLAGS.TF was 1 and
    /// IA32_DEBUGCTL.BTF 0).
    pub single_step: bool,
}

/// Completes an instruction the hypervisor emulated instead of the guest: what the processor does
/// at the end of an instruction, applied to the guest-state area.
///
/// - RIP advances by `length` (the VM-exit instruction length the decoded exit carries, e.g.
///   `VmExit::Cpuid { length }`). Outside 64-bit mode the instruction pointer is EIP, 32 bits,
///   so a sum that carries into bit 32 wraps (VM entry requires bits 63:32 of RIP to be 0 there);
///   whether the guest is in 64-bit mode (an IA-32e mode guest with CS.L = 1) is read only in
///   that rare case. (16-bit code does not wrap at 64 KiB: the next fetch faults on the CS
///   limit instead.)
/// - Blocking by STI and by MOV SS end with the instruction that follows STI or MOV SS, so both
///   are cleared in the interruptibility state (SDM Vol. 3C, "Guest Non-Register State").
/// - RFLAGS.RF is cleared, as by any instruction that completes (SDM Vol. 3A,
///   "Instruction-Breakpoint Exception Condition").
/// - With RFLAGS.TF = 1, the instruction ends in a single-step trap, unless IA32_DEBUGCTL.BTF = 1
///   (single-step on branches only; the emulated instructions are not branches). The SDM says the
///   VMM should not inject that #DB but set it pending, so that it gets its priority among the
///   other events (SDM Vol. 3C, "Virtualization of System Resources", "Debug Exceptions"): BS
///   (bit 14) of the pending debug exceptions is set, and VM entry delivers it (SDM Vol. 3C,
///   "Delivery of Pending Debug Exceptions after VM Entry").
///
/// Reads GUEST_RIP, GUEST_RFLAGS and GUEST_INTERRUPTIBILITY_STATE, and GUEST_IA32_DEBUGCTL only
/// when TF is 1; writes GUEST_RIP, and the other fields only when they change.
///
/// # Errors
///
/// [`CompleteError::Length`] for a length outside 1–15 (nothing written);
/// [`CompleteError::Vmcs`] for the first failing VMREAD or VMWRITE.
#[inline(always)]
pub fn skip_instruction(
    vmcs: &mut impl VmcsWrite,
    length: InstructionLength,
) -> Result<Skipped, CompleteError> {
    if !length.is_architectural() {
        return Err(CompleteError::Length(length));
    }
    let rip = vmcs.read(fields::GUEST_RIP)?;
    let mut next = rip.wrapping_add(u64::from(length.get()));
    // A carry out of bit 31 (the low half wraps) from an RIP below 4 GiB is the rare case where
    // the mode decides; testing the carry first keeps the common path to one branch.
    if (rip as u32).checked_add(length.get()).is_none() && rip >> 32 == 0 && !in_64bit_mode(vmcs)? {
        next &= 0xffff_ffff;
    }
    vmcs.write(fields::GUEST_RIP, next)?;

    let state = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
    let ended = InterruptibilityState::BLOCKING_BY_STI | InterruptibilityState::BLOCKING_BY_MOV_SS;
    if state.intersects(ended) {
        vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, state - ended)?;
    }

    let rflags = vmcs.read(fields::GUEST_RFLAGS)?;
    let single_step = if rflags.intersects(Rflags::RF | Rflags::TF) {
        rf_tf(vmcs, rflags)?
    } else {
        false
    };
    Ok(Skipped {
        rip: next,
        single_step,
    })
}

/// The rare part of [`skip_instruction`]: RFLAGS.RF or RFLAGS.TF is set. Clears RF and makes the
/// single-step trap pending; returns whether it did.
#[cold]
#[inline(never)]
fn rf_tf(vmcs: &mut impl VmcsWrite, rflags: Rflags) -> Result<bool, VmFail> {
    if rflags.contains(Rflags::RF) {
        vmcs.write(fields::GUEST_RFLAGS, rflags - Rflags::RF)?;
    }
    let single_step = rflags.contains(Rflags::TF)
        && !vmcs
            .read(fields::GUEST_IA32_DEBUGCTL)?
            .contains(DebugCtl::BTF);
    if single_step {
        vmcs.modify(fields::GUEST_PENDING_DEBUG_EXCEPTIONS, |p| {
            p | PendingDebugExceptions::BS
        })?;
    }
    Ok(single_step)
}

/// Whether the guest runs 64-bit code: an IA-32e mode guest (VM-entry control) with CS.L = 1.
fn in_64bit_mode(vmcs: &impl VmcsRead) -> Result<bool, VmFail> {
    Ok(vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?.long_mode()
        && vmcs
            .read(fields::VM_ENTRY_CONTROLS)?
            .contains(EntryControls::IA32E_MODE_GUEST))
}
