//! MONITOR and MWAIT exits, completed the same way for both guests ([`mini_hv_logic::mwait`]):
//! MONITOR as a no-op after its checks (including the translation of its address through the
//! guest's paging structures), MWAIT as a NOP after its checks.

use exits::inject::Exception;
use vmcs::{VmcsRead, fields};
use vmx_caps::PrimaryControls;
use vmx_core::{GuestRegisters, VmFail};

use super::memory::{GuestMemory, MemError, Paging};
use crate::println;
use mini_hv_logic::mwait::{
    MONITOR_OPCODE_LENGTH, MONITOR_PF_ERROR_CODE, MonitorCheck, check_monitor, check_mwait,
    in_64_bit_mode,
};

/// The opcode bytes of MONITOR.
const MONITOR_OPCODE: [u8; 3] = [0x0f, 0x01, 0xc8];
/// The longest instruction (SDM Vol. 2A, 2.3.11).
const MAX_INSTRUCTION: usize = 15;

/// CPUID.01H:ECX.MONITOR\[bit 3\].
const CPUID_1_ECX_MONITOR: u32 = 1 << 3;
/// CPUID.05H:ECX\[1\]: interrupts break MWAIT even when masked (MWAIT's ECX\[0\]).
const CPUID_5_ECX_INTERRUPT_BREAK: u32 = 1 << 1;

/// How an exit is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The instruction completed: advance RIP past it.
    Skip,
    /// The instruction raises this exception with this error code (CR2 is already set for #PF).
    Fault(Exception, u32),
    /// The hypervisor cannot complete it (the reason was printed): stop the guest.
    Stop,
}

/// Whether MONITOR and MWAIT exist (CPUID.01H:ECX.MONITOR, passed through to both guests) and exit
/// under `controls`: the test guest's `monitor-mwait` check runs exactly then.
pub fn exiting(controls: PrimaryControls) -> bool {
    crate::arch::cpuid(1, 0).ecx & CPUID_1_ECX_MONITOR != 0
        && controls.contains(PrimaryControls::MONITOR_EXITING | PrimaryControls::MWAIT_EXITING)
}

/// Completes a MONITOR exit of `length` bytes. `mem` is the guest's RAM as the hypervisor reads it
/// (the paging structures and the instruction's prefixes); `accessible(gpa)` says whether the
/// guest may read guest-physical `gpa` (for the test guest: RAM; otherwise the access would be an
/// EPT violation, which the test guest's hypervisor answers with #GP(0)).
pub fn monitor(
    vmcs: &impl VmcsRead,
    regs: &mut GuestRegisters,
    length: u32,
    mem: &GuestMemory,
    accessible: impl Fn(u64) -> bool,
) -> Result<Completion, VmFail> {
    let paging = Paging::of(vmcs)?;
    let mut bytes = [0u8; MAX_INSTRUCTION];
    let prefix_count = length.saturating_sub(MONITOR_OPCODE_LENGTH) as usize;
    if prefix_count != 0 {
        let Some(instruction) = bytes.get_mut(..length as usize) else {
            println!("mini-hv: MONITOR exit with instruction length {length}; stopping the guest");
            return Ok(Completion::Stop);
        };
        let rip = vmcs.read(fields::GUEST_RIP)?;
        let long_mode = in_64_bit_mode(vmcs)?;
        let linear = if long_mode {
            rip
        } else {
            vmcs.read(fields::GUEST_CS_BASE)?.wrapping_add(rip) & 0xffff_ffff
        };
        if let Err(e) = mem.read_virt(paging, linear, instruction) {
            println!(
                "mini-hv: cannot fetch the MONITOR instruction at {linear:#x}: {e}; stopping the guest"
            );
            return Ok(Completion::Stop);
        }
        if instruction[prefix_count..] != MONITOR_OPCODE {
            println!(
                "mini-hv: MONITOR exit, but the bytes at {linear:#x} are {instruction:02x?}; \
                 stopping the guest"
            );
            return Ok(Completion::Stop);
        }
    }
    let linear = match check_monitor(vmcs, regs, &bytes[..prefix_count])? {
        MonitorCheck::Fault(exception) => return Ok(Completion::Fault(exception, 0)),
        MonitorCheck::Translate { linear } => linear,
    };
    Ok(match mem.translate(paging, linear) {
        Ok(gpa) if accessible(gpa) => Completion::Skip,
        Ok(gpa) => {
            println!(
                "mini-hv: MONITOR of unbacked guest-physical {gpa:#x} (linear {linear:#x}); \
                 injecting #GP(0)"
            );
            Completion::Fault(Exception::GP, 0)
        }
        Err(MemError::NotMapped { .. }) => {
            regs.cr2 = linear;
            Completion::Fault(Exception::PF, MONITOR_PF_ERROR_CODE)
        }
        Err(MemError::NotRam { gpa }) => {
            println!(
                "mini-hv: MONITOR of linear {linear:#x}: a paging structure at guest-physical \
                 {gpa:#x} is not guest RAM; injecting #GP(0)"
            );
            Completion::Fault(Exception::GP, 0)
        }
        Err(e @ MemError::UnsupportedPaging) => {
            println!("mini-hv: MONITOR of linear {linear:#x}: {e}; stopping the guest");
            Completion::Stop
        }
    })
}

/// Completes an MWAIT exit: a NOP after its checks.
pub fn mwait(vmcs: &impl VmcsRead, regs: &GuestRegisters) -> Result<Completion, VmFail> {
    let interrupt_break = crate::arch::cpuid(0, 0).eax >= 5
        && crate::arch::cpuid(5, 0).ecx & CPUID_5_ECX_INTERRUPT_BREAK != 0;
    Ok(match check_mwait(vmcs, regs, interrupt_break)? {
        None => Completion::Skip,
        Some(exception) => Completion::Fault(exception, 0),
    })
}
