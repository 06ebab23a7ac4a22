//! The application processors' vCPUs: with `cpus=N`, every application processor enters VMX
//! operation with its own VMXON region, loads its own VMCS (host state: its own GDT, TSS and stack)
//! and runs a small real-mode guest while the bootstrap processor runs the test suite — CPUID (leaf
//! 1 must report the processor's own local APIC ID), WRMSR/RDMSR of a hypervisor-emulated MSR,
//! port I/O and a final VMCALL, [`ROUNDS`] times — then leaves VMX operation. Each has its own
//! EPT mapping its one page of guest RAM, so no EPT is shared across processors here.
//!
//! Every frame is allocated on the bootstrap processor before the job is posted (the kernel's frame
//! allocator is single-processor).

use core::arch::global_asm;

use ept::{
    EptConfig, EptMapper, FrameAllocator, GuestPhysAddr, HostPhysAddr, LeafAttributes, MemoryType,
    OffsetPhysToVirt, Permissions, ThisCpuOnly,
};
use exits::complete::skip_instruction;
use exits::{ExitReason, IoDirection, IoSize, VmExit};
use vmx_caps::{ControlSet, VmxCapabilities};
use vmx_core::{GuestRegisters, VmxRoot, VmxonRegion};

use super::vcpu::{Config, TimeSource, Vcpu};
use super::{Outcome, identity, memory, vmcs_region};
use crate::println;
use mini_hv_logic::requirements;
use vmcs::{VmcsWrite, fields};

/// Rounds of the guest's loop (four exits each).
pub const ROUNDS: u32 = 500;
/// The hypervisor-emulated MSR the guest writes and reads back (in the range reserved for
/// hypervisors, 0x4000_0000..0x4000_00FF is Hyper-V's; this one is mini-hv's own).
const SCRATCH_MSR: u32 = 0x4000_0100;
/// The port the guest writes CPUID.1:EBX to.
const REPORT_PORT: u16 = 0xE9;
/// RAX of the guest's final VMCALL: every round's MSR round trip matched.
const GUEST_PASS: u64 = 0x600D;
/// The AP guests' VPID (the bootstrap processor's guest has 1).
const AP_VPID: u16 = 2;
/// Frames of the per-vCPU pool: EPT tables (4 levels for one page) and spares.
const POOL_FRAMES: usize = 6;

global_asm!(
    r#"
    .pushsection .rodata.ap_guest, "a"
    .code16
    .global ap_guest_start
ap_guest_start:
    movl ${rounds}, %esi
ap_guest_round:
    movl $1, %eax
    xorl %ecx, %ecx
    cpuid
    movl %ebx, %eax
    movw ${port}, %dx
    outl %eax, %dx
    movl ${msr}, %ecx
    movl %esi, %eax
    movl $0x5A5A5A5A, %edx
    wrmsr
    xorl %eax, %eax
    xorl %edx, %edx
    rdmsr
    cmpl %esi, %eax
    jne ap_guest_bad
    cmpl $0x5A5A5A5A, %edx
    jne ap_guest_bad
    decl %esi
    jnz ap_guest_round
    movl ${pass}, %eax
    vmcall
ap_guest_bad:
    movl $0xBAD, %eax
    vmcall
    .global ap_guest_end
ap_guest_end:
    .code64
    .popsection
"#,
    rounds = const ROUNDS,
    port = const REPORT_PORT,
    msr = const SCRATCH_MSR,
    pass = const GUEST_PASS,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_guest_start: u8;
    static ap_guest_end: u8;
}

/// The parts of every application processor's vCPU [`Config`] that the bootstrap processor
/// decides; the time source each processor sets up for itself (the VMX-preemption timer when
/// negotiated, else its own local APIC timer).
#[derive(Clone, Copy)]
pub struct Settings {
    /// "WBINVD exiting" was negotiated.
    pub wbinvd_exiting: bool,
    /// XCR0 bits the processor supports.
    pub xcr0_supported: vmx_caps::arch::Xcr0,
}

/// Frames handed out from a range allocated on the bootstrap processor.
struct Pool {
    next: u64,
    end: u64,
}

// SAFETY: the range was allocated for this pool alone (zeroed, 4-KiB aligned, identity-mapped);
// each frame is handed out once.
unsafe impl FrameAllocator for Pool {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        (self.next < self.end).then(|| {
            let frame = self.next;
            self.next += 4096;
            HostPhysAddr::new_truncate(frame)
        })
    }

    unsafe fn deallocate_frame(&mut self, _frame: HostPhysAddr) {}
}

/// What one application processor's vCPU did.
#[derive(Debug)]
pub struct Report {
    /// VM exits by basic reason.
    pub exits: [u64; 80],
    /// OUTs to [`REPORT_PORT`] whose CPUID.1:EBX\[31:24\] was this processor's APIC ID.
    pub own_apic_id: u64,
    /// OUTs to [`REPORT_PORT`] with another APIC ID.
    pub other_apic_id: u64,
    /// The guest's final VMCALL said every MSR round trip matched.
    pub passed: bool,
    /// Why the vCPU stopped early, if it did.
    pub stopped: Option<&'static str>,
}

/// One application processor's frames, allocated up front.
pub struct Job {
    cpu: usize,
    vmxon: u64,
    vmcs: u64,
    msr_bitmap: u64,
    io_bitmaps: u64,
    guest_page: u64,
    pool: u64,
    /// Filled by [`Job::run`].
    pub report: Report,
}

impl Job {
    /// Allocates processor `cpu`'s frames and copies the guest into its page.
    pub fn prepare(cpu: usize) -> Option<Job> {
        let job = Job {
            cpu,
            vmxon: crate::mem::alloc_frame()?,
            vmcs: crate::mem::alloc_frame()?,
            msr_bitmap: crate::mem::alloc_frame()?,
            io_bitmaps: crate::mem::alloc_frames(2)?,
            guest_page: crate::mem::alloc_frame()?,
            pool: crate::mem::alloc_frames(POOL_FRAMES)?,
            report: Report {
                exits: [0; 80],
                own_apic_id: 0,
                other_apic_id: 0,
                passed: false,
                stopped: None,
            },
        };
        let start = core::ptr::addr_of!(ap_guest_start);
        let len = core::ptr::addr_of!(ap_guest_end) as usize - start as usize;
        // SAFETY: the guest page is a fresh identity-mapped frame; the code is shorter than it.
        unsafe { core::ptr::copy_nonoverlapping(start, job.guest_page as *mut u8, len.min(4096)) };
        Some(job)
    }

    /// Runs on the application processor: VMXON, VMCS, the guest, VMCLEAR, VMXOFF.
    pub fn run(&mut self, caps: &VmxCapabilities, controls: &ControlSet, settings: Settings) {
        if let Err(why) = self.run_inner(caps, controls, settings) {
            self.report.stopped.get_or_insert(why);
        }
    }

    fn run_inner(
        &mut self,
        caps: &VmxCapabilities,
        controls: &ControlSet,
        settings: Settings,
    ) -> Result<(), &'static str> {
        // SAFETY: a fresh identity-mapped frame, this processor's VMXON region from now on.
        let region = unsafe { VmxonRegion::from_frame(self.vmxon as *mut u8) }
            .map_err(|_| "the VMXON frame was refused")?;
        // SAFETY: CPL 0 on this processor, whose VMX operation nothing else uses.
        let platform = unsafe { vmx_core::LivePlatform::new() };
        // SAFETY: `caps` describe every processor of this machine (Bochs and QEMU give each the
        // same capability MSRs); `identity` is the true translation; nothing else uses VMX here.
        let mut root = unsafe { VmxRoot::enable(platform, caps, region, &identity) }
            .map_err(|_| "VMXON failed")?;
        let result = self.with_root(&mut root, caps, controls, settings);
        if root.disable().is_err() {
            return Err("VMXOFF failed");
        }
        result
    }

    fn with_root(
        &mut self,
        root: &mut super::Root,
        caps: &VmxCapabilities,
        controls: &ControlSet,
        settings: Settings,
    ) -> Result<(), &'static str> {
        // SAFETY: the host identity-maps every frame of the pool.
        let p2v = unsafe { OffsetPhysToVirt::identity() };
        let pool = Pool {
            next: self.pool,
            end: self.pool + POOL_FRAMES as u64 * 4096,
        };
        let config_ept = EptConfig::new(caps.ept_vpid, super::phys_addr_width());
        let mut ept = EptMapper::new(config_ept, p2v, pool).map_err(|_| "cannot create the EPT")?;
        let flush = ept
            .map(
                GuestPhysAddr::new_truncate(0),
                HostPhysAddr::new_truncate(self.guest_page),
                4096,
                LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack),
            )
            .map_err(|_| "cannot map the guest page")?;
        // SAFETY: this EPT is new and used by this processor's VMCS alone.
        let mut this_cpu = unsafe { ThisCpuOnly::new(root) };
        ept.flush(flush, &mut this_cpu)
            .map_err(|_| "INVEPT failed")?;
        // SAFETY: fresh identity-mapped frames, used only as these bitmaps.
        let (msr_bitmap, io_bitmaps) =
            unsafe { super::bitmaps_in(self.msr_bitmap, self.io_bitmaps) }
                .ok_or("cannot place the bitmaps")?;
        msr_bitmap.fill(true);
        io_bitmaps.fill(true);
        // SAFETY: a fresh frame, used only as this processor's VMCS.
        let region = unsafe { vmcs_region(self.vmcs, caps) }.ok_or("cannot prepare the VMCS")?;
        let mut vmcs = super::load_vmcs(region, root).ok_or("VMPTRLD failed")?;
        let vpid = controls
            .proc2
            .contains(vmx_caps::SecondaryControls::ENABLE_VPID);
        // SAFETY: the guest page is this vCPU's alone, identity-mapped.
        let mem = unsafe { memory::GuestMemory::new(self.guest_page, 4096) };
        let timer = if requirements::PREEMPTION_TIMER.chosen_in(controls) {
            TimeSource::PreemptionTimer {
                shift: caps.misc.preemption_timer_tsc_shift(),
            }
        } else {
            // SAFETY: ring 0 with interrupts off; this processor's own local APIC, whose timer
            // nothing else uses (the 8259s are masked already).
            TimeSource::ApicTimer(
                unsafe { super::lapic::ApicTimer::init() }.ok_or("no local APIC timer")?,
            )
        };
        let config = Config {
            caps: *caps,
            timer,
            wbinvd_exiting: settings.wbinvd_exiting,
            xcr0_supported: settings.xcr0_supported,
        };
        let vcpu = Vcpu::new(mem, config);
        let setup = super::write_vmcs(
            &mut vmcs,
            &super::extras::without(*controls),
            ept.eptp(),
            msr_bitmap,
            io_bitmaps,
            vpid,
        )
        .map_err(|_| "writing the VMCS failed")
        .and_then(|()| {
            vcpu.write_reset_state(&mut vmcs, 0)
                .map_err(|_| "writing the guest state failed")
        })
        .and_then(|()| {
            if vpid {
                vmcs.write(fields::VIRTUAL_PROCESSOR_IDENTIFIER, AP_VPID)
                    .map_err(|_| "writing the VPID failed")
            } else {
                Ok(())
            }
        });
        if let Err(why) = setup {
            let _ = vmcs.clear();
            return Err(why);
        }
        let result = self.guest_loop(&mut vmcs);
        if vmcs.clear().is_err() {
            return Err("VMCLEAR failed");
        }
        result
    }

    fn guest_loop(&mut self, vmcs: &mut super::Vmcs<'_>) -> Result<(), &'static str> {
        let own_id = crate::smp::apic_id();
        let mut regs = GuestRegisters::default();
        let mut scratch = 0u64;
        loop {
            // SAFETY: the host state was written on this processor (its GDT, TSS, CR3); the EPT
            // maps the guest page only; SSE is enabled and the host takes no interrupts.
            unsafe { vmcs.run(&mut regs) }.map_err(|_| "VM entry failed")?;
            let reason = ExitReason::read(vmcs).map_err(|_| "cannot read the exit reason")?;
            if let Some(count) = self
                .report
                .exits
                .get_mut(usize::from(reason.basic.number()))
            {
                *count += 1;
            }
            if reason.entry_failure {
                return Err("VM entry failed (exit reason with the entry-failure bit)");
            }
            let exit = VmExit::read_for(reason, vmcs).map_err(|_| "cannot read the VM exit")?;
            let length = match exit {
                VmExit::Cpuid { length } => {
                    let r = crate::arch::cpuid(regs.rax as u32, regs.rcx as u32);
                    regs.rax = u64::from(r.eax);
                    regs.rbx = u64::from(r.ebx);
                    regs.rcx = u64::from(r.ecx);
                    regs.rdx = u64::from(r.edx);
                    length
                }
                VmExit::IoInstruction {
                    qualification,
                    string: None,
                    length,
                } if qualification.port == REPORT_PORT
                    && qualification.direction == IoDirection::Out
                    && qualification.size == IoSize::Dword =>
                {
                    if (regs.rax as u32) >> 24 == own_id {
                        self.report.own_apic_id += 1;
                    } else {
                        self.report.other_apic_id += 1;
                    }
                    length
                }
                VmExit::Wrmsr { length } if regs.rcx as u32 == SCRATCH_MSR => {
                    scratch = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
                    length
                }
                VmExit::Rdmsr { length } if regs.rcx as u32 == SCRATCH_MSR => {
                    regs.rax = scratch & 0xFFFF_FFFF;
                    regs.rdx = scratch >> 32;
                    length
                }
                VmExit::Vmcall { .. } => {
                    self.report.passed = regs.rax == GUEST_PASS;
                    return Ok(());
                }
                _ => return Err("an unexpected VM exit"),
            };
            skip_instruction(vmcs, length).map_err(|_| "cannot complete the instruction")?;
        }
    }

    /// Prints the vCPU's exits and verdict; whether it passed.
    pub fn judge(&self) -> bool {
        let r = &self.report;
        crate::print!("mini-hv: CPU {} vCPU exits by reason:", self.cpu);
        for (reason, &count) in r.exits.iter().enumerate() {
            if count != 0 {
                crate::print!(" {reason}:{count}");
            }
        }
        println!();
        let rounds = u64::from(ROUNDS);
        let ok = r.stopped.is_none()
            && r.passed
            && r.own_apic_id == rounds
            && r.other_apic_id == 0
            && r.exits[10] == rounds
            && r.exits[30] == rounds
            && r.exits[31] == rounds
            && r.exits[32] == rounds
            && r.exits[18] == 1;
        if let Some(why) = r.stopped {
            println!("mini-hv: CPU {} vCPU stopped: {why}", self.cpu);
        }
        println!(
            "mini-hv: CPU {} vCPU (CPUID, MSR, I/O, VMCALL; {ROUNDS} rounds, own APIC ID seen {} \
             times, another {} times): {}",
            self.cpu,
            r.own_apic_id,
            r.other_apic_id,
            if ok { "pass" } else { "FAIL" }
        );
        ok
    }
}

/// Runs `here` (the bootstrap processor's guest) while every application processor of `cpus`
/// runs its own vCPU; the outcome is `here`'s unless an application processor's vCPU failed.
pub fn alongside(
    cpus: Option<&mut crate::smp::Cpus>,
    caps: &VmxCapabilities,
    controls: &ControlSet,
    settings: Settings,
    here: impl FnOnce() -> Outcome,
) -> Outcome {
    let Some(cpus) = cpus.filter(|c| c.count() > 1) else {
        return here();
    };
    // One application processor runs a vCPU next to the bootstrap processor's; with more, the
    // others run theirs one after the other afterwards (`Cpus::alongside` takes one job).
    let mut jobs: [Option<Job>; crate::smp::MAX_CPUS] = [const { None }; crate::smp::MAX_CPUS];
    for (cpu, slot) in jobs.iter_mut().enumerate().take(cpus.count()).skip(1) {
        let Some(job) = Job::prepare(cpu) else {
            println!("mini-hv: out of memory for the vCPU of CPU {cpu}");
            return Outcome::Fail;
        };
        *slot = Some(job);
    }
    let [_, first, rest @ ..] = &mut jobs;
    let Some(first_job) = first.as_mut() else {
        return here();
    };
    println!(
        "mini-hv: CPU 1 runs its own vCPU (own VMXON region, VMCS, EPT) alongside CPU 0's guest"
    );
    let mut run_first = || first_job.run(caps, controls, settings);
    let (outcome, posted) = cpus.alongside(1, &mut run_first, here);
    let overlapped = match posted {
        Ok(overlapped) => overlapped,
        Err(e) => {
            println!("mini-hv: {e}");
            return Outcome::Fail;
        }
    };
    if overlapped {
        println!("mini-hv: CPU 1's vCPU started while CPU 0's guest ran");
    } else {
        println!("mini-hv: CPU 1's vCPU did not start before CPU 0's guest ended");
    }
    for (i, job) in rest.iter_mut().enumerate() {
        let Some(job) = job.as_mut() else { continue };
        let mut run = || job.run(caps, controls, settings);
        if let Err(e) = vmx_core::RunOnCpu::run_on(cpus, i + 2, &mut run) {
            println!("mini-hv: {e}");
            return Outcome::Fail;
        }
    }
    let mut all = overlapped;
    for job in jobs.iter().flatten() {
        all &= job.judge();
    }
    match outcome {
        Outcome::Pass if !all => Outcome::Fail,
        outcome => outcome,
    }
}
