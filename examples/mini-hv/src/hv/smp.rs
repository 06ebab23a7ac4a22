//! VMX root operation on every processor `--cpus N` started: one VMXON region per processor,
//! entered on each through vmx-core's [`PerCpuVmx`] over the mailbox [`RunOnCpu`] of
//! [`crate::smp::Cpus`], and left on each again. A processor that cannot enter stops the run with a
//! message naming it, after the processors already entered have left VMX operation
//! ([`PerCpuVmx::enter_all`]'s rollback).

use vmx_core::{LiveVmxOn, PerCpuVmx, RunOnCpu, VmxonRegion};

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
