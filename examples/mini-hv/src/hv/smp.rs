//! VMX root operation on every processor `--cpus N` started: one VMXON region per processor,
//! entered on each through vmx-core's [`PerCpuVmx`] over the mailbox [`RunOnCpu`] of
//! [`crate::smp::Cpus`], and left on each again. A processor that cannot enter stops the run with a
//! message naming it, after the processors already entered have left VMX operation
//! ([`PerCpuVmx::enter_all`]'s rollback).
//!
//! Later, while the vCPUs run, each processor's VMX root operation belongs to the code that runs
//! its vCPU (a current VMCS borrows the processor's [`super::Root`]). Cross-processor
//! invalidations still go through a [`PerCpuVmx`]: [`Lend`] fills one with [`InVmx`] tokens that
//! execute INVEPT/INVVPID on their processor, lent by the owners ([`declare_in_vmx`]) and given
//! back before they leave VMX operation ([`withdraw`]). Requests reach a processor that runs a
//! vCPU at its VM exits ([`crate::smp::serve_calls`]).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vmx_caps::EptVpidCap;
use vmx_core::{
    CpuInvalidate, CpuVmxOps, InvalidationError, InveptDescriptor, InveptType, InvvpidDescriptor,
    InvvpidType, LiveVmxOn, PerCpuVmx, RunOnCpu, VmxonRegion,
};

use super::{Outcome, identity};
use crate::println;
use crate::smp::{Cpus, MAX_CPUS};

/// Enters VMX root operation on every processor of `cpus` (each with its own VMXON region),
/// reports it, and leaves it on all of them again. `withhold` names a processor that gets no VMXON
/// region (the command line's `smp-fault=vmxon-cpuN`), to prove the failure path.
pub fn enter_and_leave_everywhere(cpus: &mut Cpus, withhold: Option<usize>) -> Result<(), Outcome> {
    let count = cpus.cpu_count();
    let mut regions: [Option<&'static mut VmxonRegion>; MAX_CPUS] = [const { None }; MAX_CPUS];
    for (cpu, slot) in regions.iter_mut().enumerate().take(count) {
        if withhold == Some(cpu) {
            println!("mini-hv: CPU {cpu} gets no VMXON region (smp-fault on the command line)");
            continue;
        }
        let Some(frame) = crate::mem::alloc_frame() else {
            println!("mini-hv: out of memory for the VMXON region of CPU {cpu}");
            return Err(Outcome::Fail);
        };
        // SAFETY: a fresh identity-mapped frame, used only as this VMXON region from now on.
        match unsafe { VmxonRegion::from_frame(frame as *mut u8) } {
            Ok(region) => *slot = Some(region),
            Err(e) => {
                println!("mini-hv: cannot use the VMXON frame of CPU {cpu}: {e}");
                return Err(Outcome::Fail);
            }
        }
    }
    // SAFETY: used only through `PerCpuVmx` with `cpus` (each call on its processor, CPL 0);
    // `identity` is the host's true translation; nothing else on these processors uses VMX
    // meanwhile (the hypervisor proper enters VMX on the bootstrap processor only after this has
    // left it everywhere); the IA32_FEATURE_CONTROL, CR0 and CR4 changes are fine for this kernel.
    let mut ops = unsafe { LiveVmxOn::new(&mut regions[..count], identity) };
    let mut slots: [Option<super::Root>; MAX_CPUS] = [const { None }; MAX_CPUS];
    let per_cpu = match PerCpuVmx::enter_all(cpus, &mut ops, &mut slots[..count]) {
        Ok(per_cpu) => per_cpu,
        Err(e) => {
            println!("mini-hv: {e}");
            return Err(Outcome::Fail);
        }
    };
    println!(
        "mini-hv: VMX root operation entered on CPUs {:?}, each with its own VMXON region",
        per_cpu.cpus_in_vmx()
    );
    match per_cpu.leave_all(cpus, &mut ops) {
        Ok(_) => {
            println!("mini-hv: VMX root operation left on all {count} CPUs");
            Ok(())
        }
        Err((_, e)) => {
            println!("mini-hv: {e}");
            Err(Outcome::Fail)
        }
    }
}

/// Processors in VMX root operation now, each flag set and cleared by its own processor (the
/// owner of the processor's [`super::Root`]: the hypervisor on the bootstrap processor, a vCPU
/// job on an application processor).
static IN_VMX: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Processors whose VMX root operation is lent to an [`InVmx`] token now.
static LENT: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// INVEPTs executed through [`InVmx`] tokens, per processor.
static INVEPTS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Declares processor `cpu` in VMX root operation, so that [`Lend`] can lend it out.
///
/// # Safety
/// The caller runs on processor `cpu`, at CPL 0, in VMX root operation, and stays in it until
/// [`withdraw`] has returned `true`.
pub unsafe fn declare_in_vmx(cpu: usize) {
    if let Some(flag) = IN_VMX.get(cpu) {
        flag.store(true, Ordering::Release);
    }
}

/// Takes processor `cpu`'s VMX root operation back before it leaves it: waits until no
/// [`InVmx`] token of it is out, serving [`RunOnCpu`] requests meanwhile (the token comes back
/// through one: [`PerCpuVmx::leave_all`]), for at most `ticks` TSC ticks. `false`: a token is
/// still out, and the processor must stay in VMX root operation.
///
/// # Safety
/// The caller runs on processor `cpu` (it serves requests addressed to `cpu`).
pub unsafe fn withdraw(cpu: usize, ticks: u64) -> bool {
    let (Some(lent), Some(in_vmx)) = (LENT.get(cpu), IN_VMX.get(cpu)) else {
        return true;
    };
    let start = crate::smp::rdtsc();
    while lent.load(Ordering::Acquire) {
        if cpu != 0 {
            // SAFETY: the caller runs on `cpu`.
            unsafe { crate::smp::serve_calls(cpu) };
        }
        if crate::smp::rdtsc().wrapping_sub(start) > ticks {
            return false;
        }
        core::hint::spin_loop();
    }
    in_vmx.store(false, Ordering::Release);
    true
}

/// INVEPTs processor `cpu` executed through [`InVmx`] tokens so far.
pub fn invepts(cpu: usize) -> u64 {
    INVEPTS.get(cpu).map_or(0, |n| n.load(Ordering::Acquire))
}

/// A processor's VMX root operation, lent by its owner for cross-processor invalidations: the
/// [`CpuInvalidate`] token of a [`PerCpuVmx`] made by [`Lend`]. Its owner keeps using its
/// [`super::Root`] (a vCPU loop's current VMCS borrows it), so the token executes INVEPT and
/// INVVPID itself, on the processor [`PerCpuVmx`] runs it on.
pub struct InVmx {
    cpu: usize,
    ept_vpid: EptVpidCap,
}

// SAFETY: `PerCpuVmx` runs each token on its processor (through `RunOnCpu`); the token exists
// only while that processor is in VMX root operation (`Lend::enter` checks `declare_in_vmx`'s flag
// on the processor itself, and the owner `withdraw`s before it leaves, which waits for the token to
// come back); each method checks the capability and executes the instruction or returns its error.
unsafe impl CpuInvalidate for InVmx {
    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), InvalidationError> {
        kind.check(&self.ept_vpid)?;
        // SAFETY: VMX root operation at CPL 0 on this processor (see above); INVEPT and the type
        // are supported (checked).
        unsafe { vmx_core::instructions::invept(kind, &InveptDescriptor::new(eptp)) }?;
        if let Some(count) = INVEPTS.get(self.cpu) {
            count.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid: u16,
        linear_address: u64,
    ) -> Result<(), InvalidationError> {
        kind.check(&self.ept_vpid)?;
        let descriptor = InvvpidDescriptor::new(kind, vpid, linear_address)?;
        // SAFETY: VMX root operation at CPL 0 on this processor (see above); INVVPID and the type
        // are supported (checked).
        unsafe { vmx_core::instructions::invvpid(kind, &descriptor) }?;
        Ok(())
    }
}

/// Why [`Lend`] could not lend a processor's VMX root operation.
#[derive(Debug, Clone, Copy)]
pub struct NotInVmx;

impl core::fmt::Display for NotInVmx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the processor is not in VMX root operation (no vCPU owns it now)")
    }
}

/// [`CpuVmxOps`] that lends each processor's VMX root operation (entered by its owner, see
/// [`declare_in_vmx`]) as an [`InVmx`] token instead of entering it, and takes the token back
/// instead of leaving: a [`PerCpuVmx`] of these drives [`ept::EptShootdown`] while the vCPUs run.
pub struct Lend {
    /// IA32_VMX_EPT_VPID_CAP (the same on every processor of this machine).
    pub ept_vpid: EptVpidCap,
}

impl CpuVmxOps for Lend {
    type Root = InVmx;
    type Error = NotInVmx;

    fn enter(&mut self, cpu: usize) -> Result<InVmx, NotInVmx> {
        let (Some(in_vmx), Some(lent)) = (IN_VMX.get(cpu), LENT.get(cpu)) else {
            return Err(NotInVmx);
        };
        if !in_vmx.load(Ordering::Acquire) {
            return Err(NotInVmx);
        }
        lent.store(true, Ordering::Release);
        Ok(InVmx {
            cpu,
            ept_vpid: self.ept_vpid,
        })
    }

    fn leave(&mut self, cpu: usize, root: InVmx) -> Result<(), (InVmx, NotInVmx)> {
        match LENT.get(cpu) {
            Some(lent) if root.cpu == cpu => {
                lent.store(false, Ordering::Release);
                Ok(())
            }
            _ => Err((root, NotInVmx)),
        }
    }
}
