//! The vCPU core both guests share: the run loop ([`run`]: VM entry, the exit read, counted and
//! decoded, its handling) and the exit dispatcher ([`dispatch`]): one `match` on the decoded
//! [`VmExit`] for the exits every guest of this hypervisor meets the same way — CPUID, RDMSR/WRMSR, non-string I/O, HLT, MOV to
//! CR0/CR4, XSETBV, INVD/WBINVD, MONITOR/MWAIT and the VMX instructions — asking the guest's
//! personality ([`Guest`]) only for its policy (which CPUID bits it sees, which MSRs and ports it
//! has, how it waits after HLT, what touching memory that is not its own does). Every other exit
//! goes to the personality whole ([`Guest::other`]).
//!
//! The completions every handler ends with are here too: [`skip`] (the instruction completed),
//! [`inject`] (it raised an exception) and [`stop`] (the hypervisor ends the run).

use core::fmt;
use core::ops::ControlFlow;

use exits::complete::{CompleteError, skip_instruction};
use exits::inject::{Exception, InjectError, inject_exception};
use exits::{CrAccessType, ExitReason, InstructionLength, IoQualification, IoSize, VmExit};
use vmcs::{VmcsRead, VmcsWrite, fields};
use vmx_core::{GpReg, GuestRegisters, RspInVmcs, VmFail};

use super::Vmcs;
use super::monitor::{self, Completion};
use super::probe::{At, Probe};
use crate::println;
use mini_hv_logic::guest_state::{self, CrPolicy, CrWriteError};
use vmx_caps::arch::{Cr0, Cr4, Xcr0};

/// The hypervisor stopped the guest (the reason was printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// What a handler decided: resume the guest (`Continue`) or leave the run loop with `S`; `Err`
/// when a VMCS access failed.
pub type Flow<S> = Result<ControlFlow<S>, VmFail>;

/// A guest's personality: the state the shared handlers read and write, and the policy they ask
/// for.
pub trait Guest {
    /// Why the run loop is left (the hypervisor's own stop among the reasons).
    type Stop: From<Stopped>;

    // The state the shared handlers use.

    /// The guest's general-purpose registers (but RSP, which is in the VMCS).
    fn regs(&mut self) -> &mut GuestRegisters;

    /// The CR0/CR4 ownership policy.
    fn cr(&self) -> CrPolicy;

    /// The XCR0 bits XSETBV may set (the processor's; empty without XSAVE).
    fn xcr0_supported(&self) -> Xcr0;

    // The guest's policy for the shared exits.

    /// CPUID as the guest sees it: EAX, EBX, ECX, EDX of `leaf`/`subleaf`; `guest_cr4` is the
    /// guest's view of CR4, read for leaf 1 only (OSXSAVE), empty otherwise.
    fn cpuid(&self, leaf: u32, subleaf: u32, guest_cr4: Cr4) -> [u32; 4];

    /// RDMSR of an intercepted MSR: its value, or `None` for #GP(0).
    fn rdmsr(&mut self, msr: u32, vmcs: &mut Vmcs<'_>) -> Result<Option<u64>, VmFail>;

    /// WRMSR of an intercepted MSR: whether it is accepted (`false`: #GP(0)).
    fn wrmsr(&mut self, msr: u32, value: u64, vmcs: &mut Vmcs<'_>) -> Result<bool, VmFail>;

    /// A non-string IN or OUT of `size` bytes on an intercepted port, done with the guest's
    /// registers (`Continue`: the instruction completes), or the end of the run.
    fn io(&mut self, q: IoQualification, size: u16) -> ControlFlow<Self::Stop>;

    /// Eight bytes of the guest's RAM at guest-physical `gpa` (the PDPTEs a MOV to CR0/CR4 loads),
    /// or `None` outside it.
    fn read_ram(&self, gpa: u64) -> Option<u64>;

    /// Whether a MOV of `value` to CR4 is refused with #GP(0) before the CR0/CR4 policy sees it
    /// (clearing CR4.VMXE in VMX operation, where the guest is offered VMX).
    fn refuses_cr4(&self, value: u64) -> bool {
        let _ = value;
        false
    }

    /// The guest touched guest-physical memory that is not its own (what an EPT violation there
    /// would say): what this hypervisor does then; `what` names the access.
    fn unbacked(&mut self, vmcs: &mut Vmcs<'_>, what: fmt::Arguments<'_>) -> Flow<Self::Stop>;

    /// MONITOR's checks and translation ([`monitor::monitor`]) with this guest's memory.
    fn monitor(&mut self, vmcs: &mut Vmcs<'_>, length: u32) -> Result<Completion, VmFail>;

    /// HLT completed (RIP is past it): how the guest waits for its wake-up.
    fn halted(&mut self, vmcs: &mut Vmcs<'_>) -> Flow<Self::Stop>;

    /// A VMX instruction (but VMCALL, which is [`Guest::other`]'s): #UD unless the guest is
    /// offered VMX.
    fn vmx_instruction(&mut self, exit: &VmExit, vmcs: &mut Vmcs<'_>) -> Flow<Self::Stop> {
        let _ = exit;
        inject(vmcs, Exception::UD, None)
    }

    // The guest's own exits.

    /// Every exit the shared dispatcher does not handle.
    fn other(&mut self, exit: VmExit, vmcs: &mut Vmcs<'_>) -> Flow<Self::Stop>;

    // The run loop's bookkeeping.

    /// The most VM exits a run may make; beyond, it is stopped as a runaway.
    const MAX_EXITS: u64 = u64::MAX;

    /// Counts an exit of basic reason `number`; the run's exits so far.
    fn count_exit(&mut self, number: u16) -> u64;

    /// The end of the run after a VM entry failed (the reason and a VMCS dump were printed);
    /// `counted`: the failure was counted as an exit.
    fn entry_failed(&mut self, counted: bool) -> Self::Stop;

    /// Before each VM entry: `Break` ends the run instead.
    fn before_entry(&mut self, vmcs: &mut Vmcs<'_>) -> ControlFlow<Self::Stop> {
        let _ = vmcs;
        ControlFlow::Continue(())
    }

    /// Whether the run loop with probe `P` goes on where a handler asked to leave it with `stop`
    /// (the test guest: a switch to the probe that already runs).
    fn goes_on<P: Probe>(&self, stop: &Self::Stop) -> bool {
        let _ = stop;
        false
    }
}

/// Runs `guest` on the current VMCS until it ends: enters it, reads, counts and decodes each
/// exit, and handles it ([`dispatch`]). `probe` stamps the phases of the round trip
/// ([`super::probe`]).
#[inline(always)]
pub fn run<G: Guest, P: Probe>(guest: &mut G, vmcs: &mut Vmcs<'_>, probe: &mut P) -> G::Stop {
    loop {
        if let ControlFlow::Break(stop) = guest.before_entry(vmcs) {
            return stop;
        }
        probe.entering();
        // SAFETY: every VMCS of this hypervisor holds the host state of this host (`write_vmcs`
        // from `vmcs::HostState::capture`), and its EPT never maps the hypervisor's memory;
        // CR4.OSFXSR is set and CR0.TS/EM are clear (boot code, never changed); the host's NMI
        // handler only reports and stops.
        if let Err(fail) = unsafe { vmcs.run(guest.regs()) } {
            println!("mini-hv: {fail}");
            super::dump_vmcs(vmcs);
            return guest.entry_failed(false);
        }
        let regs = guest.regs();
        probe.exited(regs.r8, regs.r9);
        let reason = match ExitReason::read(vmcs) {
            Ok(reason) => reason,
            Err(e) => return unreadable(e),
        };
        probe.stamp(At::ReasonRead);
        let exits = guest.count_exit(reason.basic.number());
        if reason.entry_failure || exits > G::MAX_EXITS {
            return stop_early(guest, vmcs);
        }
        probe.stamp(At::Booked);
        let exit = match VmExit::read_for(reason, vmcs) {
            Ok(exit) => exit,
            Err(e) => return unreadable(e),
        };
        probe.stamp(At::Decoded);
        match dispatch(guest, exit, vmcs, probe) {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(stop)) if guest.goes_on::<P>(&stop) => {}
            Ok(ControlFlow::Break(stop)) => return stop,
            Err(fail) => {
                println!("mini-hv: VMCS access failed while handling an exit: {fail}");
                return Stopped.into();
            }
        }
    }
}

/// The exit could not be read (printed): the run ends.
#[cold]
fn unreadable<S: From<Stopped>>(e: impl fmt::Display) -> S {
    println!("mini-hv: cannot read the VM exit: {e}");
    Stopped.into()
}

/// Ends the run after a VM-entry failure or too many exits (off the common path: the exit
/// reason's flags are read again here, only to be printed).
#[cold]
#[inline(never)]
fn stop_early<G: Guest>(guest: &mut G, vmcs: &mut Vmcs<'_>) -> G::Stop {
    let reason = match ExitReason::read(vmcs) {
        Ok(reason) => reason,
        Err(e) => return unreadable(e),
    };
    if !reason.entry_failure {
        println!(
            "mini-hv: stopping the guest after {} VM exits (runaway)",
            G::MAX_EXITS
        );
        return Stopped.into();
    }
    match VmExit::read_for(reason, vmcs) {
        Ok(exit) => println!("mini-hv: VM entry failed: {reason}: {exit}"),
        Err(e) => println!("mini-hv: VM entry failed: {reason} (exit information unreadable: {e})"),
    }
    super::dump_vmcs(vmcs);
    guest.entry_failed(true)
}

/// Handles `exit` of `guest`: the shared exits here, the others by the guest. `probe` stamps the
/// phases of the CPUID round trip ([`super::probe`]).
#[inline(always)]
pub fn dispatch<G: Guest, P: Probe>(
    guest: &mut G,
    exit: VmExit,
    vmcs: &mut Vmcs<'_>,
    probe: &mut P,
) -> Flow<G::Stop> {
    match exit {
        VmExit::Cpuid { length } => {
            probe.cpuid();
            let (leaf, subleaf) = {
                let regs = guest.regs();
                (regs.rax as u32, regs.rcx as u32)
            };
            // Leaf 1 reports CR4.OSXSAVE as the guest sees it: the read shadow for the bits the
            // host owns, the real value for the others.
            let guest_cr4 = if leaf == 1 {
                guest.cr().guest_cr4(vmcs)?
            } else {
                Cr4::empty()
            };
            let [a, b, c, d] = guest.cpuid(leaf, subleaf, guest_cr4);
            let regs = guest.regs();
            regs.rax = u64::from(a);
            regs.rbx = u64::from(b);
            regs.rcx = u64::from(c);
            regs.rdx = u64::from(d);
            probe.stamp(At::Handled);
            let next = skip(vmcs, length.get());
            probe.stamp(At::Completed);
            next
        }
        VmExit::Rdmsr { length } => {
            let msr = guest.regs().rcx as u32;
            match guest.rdmsr(msr, vmcs)? {
                Some(value) => {
                    let regs = guest.regs();
                    regs.rax = value & 0xffff_ffff;
                    regs.rdx = value >> 32;
                    skip(vmcs, length.get())
                }
                None => inject(vmcs, Exception::GP, Some(0)),
            }
        }
        VmExit::Wrmsr { length } => {
            let regs = guest.regs();
            let (msr, value) = (regs.rcx as u32, (regs.rdx << 32) | (regs.rax & 0xffff_ffff));
            if guest.wrmsr(msr, value, vmcs)? {
                skip(vmcs, length.get())
            } else {
                inject(vmcs, Exception::GP, Some(0))
            }
        }
        VmExit::IoInstruction {
            qualification,
            string: None,
            length,
        } => {
            let size = match qualification.size {
                IoSize::Byte => 1,
                IoSize::Word => 2,
                IoSize::Dword => 4,
                IoSize::Reserved(raw) => {
                    return stop(
                        vmcs,
                        format_args!("I/O exit with reserved size encoding {raw}"),
                    );
                }
            };
            match guest.io(qualification, size) {
                ControlFlow::Continue(()) => skip(vmcs, length.get()),
                ControlFlow::Break(end) => Ok(ControlFlow::Break(end)),
            }
        }
        VmExit::IoInstruction { qualification, .. } => stop(
            vmcs,
            format_args!("guest string I/O ({qualification}) is not emulated"),
        ),
        VmExit::Hlt { length } => match skip(vmcs, length.get())? {
            ControlFlow::Continue(()) => guest.halted(vmcs),
            end => Ok(end),
        },
        VmExit::ControlRegisterAccess {
            qualification: q,
            length,
            ..
        } if q.access_type == CrAccessType::MovToCr && matches!(q.cr, 0 | 4) => {
            let value = read_gpr(guest.regs(), q.gpr, vmcs)?;
            if q.cr == 4 && guest.refuses_cr4(value) {
                return inject(vmcs, Exception::GP, Some(0));
            }
            let cr = guest.cr();
            let read_u64 = |gpa| guest.read_ram(gpa);
            let written = if q.cr == 0 {
                cr.mov_to_cr0(vmcs, Cr0::from_bits_retain(value), read_u64)
            } else {
                cr.mov_to_cr4(vmcs, Cr4::from_bits_retain(value), read_u64)
            };
            match written {
                Ok(()) => skip(vmcs, length.get()),
                Err(CrWriteError::Fault(_)) => inject(vmcs, Exception::GP, Some(0)),
                Err(CrWriteError::Vmcs(fail)) => Err(fail),
                // What the processor's PDPTE load meets there: an EPT violation.
                Err(CrWriteError::PdptNotReadable(gpa)) => guest.unbacked(
                    vmcs,
                    format_args!(
                        "MOV to CR{} loads PDPTEs from guest-physical {gpa:#x}, outside guest RAM",
                        q.cr
                    ),
                ),
            }
        }
        VmExit::Xsetbv { length } => {
            let xcr0_supported = guest.xcr0_supported();
            if !super::emulate_xsetbv(guest.regs(), xcr0_supported) {
                return inject(vmcs, Exception::GP, Some(0));
            }
            skip(vmcs, length.get())
        }
        VmExit::Invd { length } | VmExit::Wbinvd { length } => {
            super::emulate_wbinvd();
            skip(vmcs, length.get())
        }
        VmExit::Monitor { length } => {
            let done = guest.monitor(vmcs, length.get())?;
            complete(vmcs, done, length.get())
        }
        VmExit::Mwait { length, .. } => {
            let done = monitor::mwait(vmcs, guest.regs())?;
            complete(vmcs, done, length.get())
        }
        // VMCALL is the guest's (a hypercall).
        VmExit::Vmcall { .. } => guest.other(exit, vmcs),
        vmx if guest_state::is_vmx_instruction(&vmx) => guest.vmx_instruction(&vmx, vmcs),
        other => guest.other(other, vmcs),
    }
}

/// Completes the exiting instruction ([`exits::complete::skip_instruction`]); a length that is no
/// instruction's stops the guest.
#[inline(always)]
pub fn skip<S: From<Stopped>>(vmcs: &mut Vmcs<'_>, length: u32) -> Flow<S> {
    match skip_instruction(vmcs, InstructionLength(length)) {
        Ok(_) => Ok(ControlFlow::Continue(())),
        Err(CompleteError::Vmcs(fail)) => Err(fail),
        Err(e) => {
            println!("mini-hv: cannot complete the instruction: {e}; stopping the guest");
            Ok(ControlFlow::Break(Stopped.into()))
        }
    }
}

/// Injects `exception` (with `error`, its error code) at the next VM entry
/// ([`exits::inject::inject_exception`]).
pub fn inject<S: From<Stopped>>(
    vmcs: &mut Vmcs<'_>,
    exception: Exception,
    error: Option<u32>,
) -> Flow<S> {
    match inject_exception(vmcs, exception, error) {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(InjectError::Vmcs(fail)) => Err(fail),
        Err(e) => {
            println!("mini-hv: cannot inject {exception}: {e}; stopping the guest");
            Ok(ControlFlow::Break(Stopped.into()))
        }
    }
}

/// Completes a MONITOR or MWAIT exit as [`monitor`] decided.
pub fn complete<S: From<Stopped>>(vmcs: &mut Vmcs<'_>, done: Completion, length: u32) -> Flow<S> {
    match done {
        Completion::Skip => skip(vmcs, length),
        Completion::Fault(exception, error) => inject(vmcs, exception, Some(error)),
        Completion::Stop => Ok(ControlFlow::Break(Stopped.into())),
    }
}

/// Stops the guest because of `what` (printed with the guest's RIP).
#[cold]
pub fn stop<S: From<Stopped>>(vmcs: &Vmcs<'_>, what: fmt::Arguments<'_>) -> Flow<S> {
    let rip = vmcs.read(fields::GUEST_RIP)?;
    println!("mini-hv: {what} (guest RIP {rip:#x}); stopping the guest");
    Ok(ControlFlow::Break(Stopped.into()))
}

/// The guest's register `reg`: from `regs`, or GUEST_RSP for RSP. Kept out of line (cold: MMIO and
/// CR accesses only), so that inlining it does not cost the CPUID path.
#[inline(never)]
pub fn read_gpr(regs: &GuestRegisters, reg: GpReg, vmcs: &Vmcs<'_>) -> Result<u64, VmFail> {
    match regs.gpr(reg) {
        Some(value) => Ok(value),
        None => vmcs.read(fields::GUEST_RSP),
    }
}

/// Writes the guest's register `reg`: in `regs`, or GUEST_RSP for RSP.
#[inline(never)]
pub fn write_gpr(
    regs: &mut GuestRegisters,
    reg: GpReg,
    value: u64,
    vmcs: &mut Vmcs<'_>,
) -> Result<(), VmFail> {
    match regs.set_gpr(reg, value) {
        Ok(()) => Ok(()),
        Err(RspInVmcs) => vmcs.write(fields::GUEST_RSP, value),
    }
}
