//! The application processors' vCPUs: with `cpus=N`, every application processor enters VMX
//! operation with its own VMXON region, loads its own VMCS (host state: its own GDT, TSS and stack)
//! and runs a small real-mode guest while the bootstrap processor runs the test suite — CPUID (leaf
//! 1 must report the processor's own local APIC ID), WRMSR/RDMSR of a hypervisor-emulated MSR,
//! port I/O and a VMCALL, [`ROUNDS`] times — then leaves VMX operation. Each has its own EPT,
//! built on the bootstrap processor, mapping its page of code at guest-physical 0 and a data page
//! at [`SHARED_GPA`].
//!
//! The `ept-shootdown` check (with 2 processors): after its rounds, CPU 1's guest keeps reading
//! the data page (an OUT of each value read: a VM exit, at which the vCPU loop also serves the
//! bootstrap processor's requests). When the suite has ended, the bootstrap processor unmaps the
//! page from CPU 1's EPT and flushes through [`ept::EptShootdown`] over a [`PerCpuVmx`] of the
//! processors' lent VMX operation ([`super::smp::Lend`]) and [`crate::smp::Cpus`]: one INVEPT on
//! each processor. The vCPU must then take an EPT violation at the page on its next access; a read
//! that completes after CPU 1's INVEPT, or after the change returned, is a stale translation.
//! `smp-fault=no-shootdown` flushes on CPU 0 only, to show that the check catches it.
//!
//! Every frame is allocated on the bootstrap processor before the job is posted (the kernel's frame
//! allocator is single-processor).

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use ept::{
    EptConfig, EptMapper, EptShootdown, GuestPhysAddr, HostPhysAddr, LeafAttributes, MemoryType,
    OffsetPhysToVirt, Permissions,
};
use exits::complete::skip_instruction;
use exits::{ExitReason, IoDirection, IoSize, VmExit};
use vmx_caps::{ControlSet, VmxCapabilities};
use vmx_core::{CpuSet, GuestRegisters, PerCpuVmx, VmxRoot, VmxonRegion};

use super::vcpu::{Config, TimeSource, Vcpu};
use super::{Outcome, identity, memory, vmcs_region};
use crate::println;
use mini_hv_logic::requirements;
use vmcs::{VmcsRead, VmcsWrite, fields};

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
/// Frames of the per-vCPU pool: EPT tables (4 levels for two pages) and spares.
const POOL_FRAMES: usize = 6;
/// Guest-physical address of the data page the guest reads in the `ept-shootdown` phase.
pub const SHARED_GPA: u64 = 0x1000;
/// What the data page holds (every dword).
const SHARED_VALUE: u32 = 0x5EED_F00D;
/// Guest-physical address (in the code page, after the code) of the count of the guest's reads
/// of [`SHARED_GPA`].
const READ_COUNTER: u64 = 0x800;
/// TSC ticks between CPU 1's VM exits in the reading phase (VMX-preemption timer): the longest a
/// request to it waits, and the window in which a missing INVEPT would show.
const READ_PERIOD_TICKS: u64 = 200_000;
/// The same period in ticks of the local APIC timer (where it stands in for the VMX-preemption
/// timer).
const READ_PERIOD_APIC_TICKS: u32 = 200_000;
/// TSC ticks CPU 1's vCPU keeps reading before it gives up waiting for the change, and the
/// bootstrap processor waits for the first read or for the token's return.
const SHOOTDOWN_TIMEOUT_TICKS: u64 = 20_000_000_000;

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
ap_guest_read:
    movl ({shared}), %eax
    cmpl ${value}, %eax
    jne ap_guest_bad
    incl ({counter})
    jmp ap_guest_read
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
    shared = const SHARED_GPA,
    value = const SHARED_VALUE,
    counter = const READ_COUNTER,
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

/// What one application processor's vCPU did.
#[derive(Debug)]
pub struct Report {
    /// VM exits by basic reason, in the rounds.
    pub exits: [u64; 80],
    /// OUTs to [`REPORT_PORT`] whose CPUID.1:EBX\[31:24\] was this processor's APIC ID.
    pub own_apic_id: u64,
    /// OUTs to [`REPORT_PORT`] with another APIC ID.
    pub other_apic_id: u64,
    /// The guest's VMCALL after the rounds said every MSR round trip matched.
    pub passed: bool,
    /// The `ept-shootdown` phase, when it ran.
    pub reads: Option<Reads>,
    /// Why the vCPU stopped early, if it did.
    pub stopped: Option<&'static str>,
}

/// What gives CPU 1's vCPU its periodic VM exits in the reading phase.
enum ReadTimer {
    /// The VMX-preemption timer, counting every 2^shift TSC ticks.
    Preemption(u32),
    /// The processor's local APIC timer, with external-interrupt exiting (where the
    /// VMX-preemption timer is absent).
    Apic(super::lapic::ApicTimer),
}

/// The `ept-shootdown` phase on the vCPU's side.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reads {
    /// The guest's reads of [`SHARED_GPA`] when the phase ended.
    pub count: u64,
    /// Timer exits in the phase (at each, requests were served).
    pub timer_exits: u64,
    /// The guest read another value than the page's.
    pub wrong_value: bool,
    /// The EPT violation that ended the phase: its guest-physical address, and whether its run
    /// was entered after this processor's INVEPT (else the processor held no translation of the
    /// page when it was entered).
    pub violation: Option<(u64, bool)>,
}

/// What the bootstrap processor and CPU 1's vCPU tell each other in the `ept-shootdown` check.
#[derive(Default)]
pub struct Signals {
    /// The vCPU has started reading the page.
    reading: AtomicBool,
    /// The vCPU's reading phase has ended.
    ended: AtomicBool,
    /// The bootstrap processor will make no change: stop reading.
    stop: AtomicBool,
}

/// One application processor's frames, allocated up front, and its EPT's pointer.
pub struct Job {
    cpu: usize,
    vmxon: u64,
    vmcs: u64,
    msr_bitmap: u64,
    io_bitmaps: u64,
    code: u64,
    eptp: ept::EptPointer,
    /// Filled by [`Job::run`].
    pub report: Report,
}

/// An application processor's EPT, kept on the bootstrap processor (which changes it).
type ApEpt = EptMapper<OffsetPhysToVirt, super::FramePool>;

impl Job {
    /// Allocates processor `cpu`'s frames, copies the guest into its code page and builds its EPT
    /// (code page at 0, data page at [`SHARED_GPA`]).
    fn prepare(cpu: usize, caps: &VmxCapabilities) -> Result<(Job, ApEpt), &'static str> {
        let frames = || crate::mem::alloc_frame().ok_or("out of memory");
        let (code, data) = (frames()?, frames()?);
        let pool = crate::mem::alloc_frames(POOL_FRAMES).ok_or("out of memory")?;
        // SAFETY: the host identity-maps every frame of the pool.
        let p2v = unsafe { OffsetPhysToVirt::identity() };
        // SAFETY: fresh frames from the kernel allocator (zeroed, identity-mapped), this EPT's alone.
        let pool = unsafe { super::FramePool::new(pool, POOL_FRAMES) };
        let config = EptConfig::new(caps.ept_vpid, super::phys_addr_width());
        let mut ept = EptMapper::new(config, p2v, pool).map_err(|_| "cannot create the EPT")?;
        let rwx = LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack);
        for (gpa, frame) in [(0, code), (SHARED_GPA, data)] {
            let flush = ept
                .map(
                    GuestPhysAddr::new_truncate(gpa),
                    HostPhysAddr::new_truncate(frame),
                    4096,
                    rwx,
                )
                .map_err(|_| "cannot map the guest's pages")?;
            // SAFETY: the EPT is new: no VMCS has held its pointer yet, so no processor caches
            // anything of it.
            unsafe { ept.assume_flushed(flush) };
        }
        let job = Job {
            cpu,
            vmxon: frames()?,
            vmcs: frames()?,
            msr_bitmap: frames()?,
            io_bitmaps: crate::mem::alloc_frames(2).ok_or("out of memory")?,
            code,
            eptp: ept.eptp(),
            report: Report {
                exits: [0; 80],
                own_apic_id: 0,
                other_apic_id: 0,
                passed: false,
                reads: None,
                stopped: None,
            },
        };
        let start = core::ptr::addr_of!(ap_guest_start);
        let len = core::ptr::addr_of!(ap_guest_end) as usize - start as usize;
        // SAFETY: fresh identity-mapped frames; the code is shorter than a page.
        unsafe {
            core::ptr::copy_nonoverlapping(start, code as *mut u8, len.min(4096));
            core::slice::from_raw_parts_mut(data as *mut u32, 1024).fill(SHARED_VALUE);
        }
        Ok((job, ept))
    }

    /// Runs on the application processor: VMXON, VMCS, the guest (with the `ept-shootdown`
    /// phase when `signals` are given), VMCLEAR, VMXOFF.
    pub fn run(
        &mut self,
        caps: &VmxCapabilities,
        controls: &ControlSet,
        settings: Settings,
        signals: Option<&Signals>,
    ) {
        if let Err(why) = self.run_inner(caps, controls, settings, signals) {
            self.report.stopped.get_or_insert(why);
        }
    }

    fn run_inner(
        &mut self,
        caps: &VmxCapabilities,
        controls: &ControlSet,
        settings: Settings,
        signals: Option<&Signals>,
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
        // SAFETY: this job runs on processor `self.cpu`, in VMX root operation until the
        // `withdraw` below has returned true.
        unsafe { super::smp::declare_in_vmx(self.cpu) };
        let result = self.with_root(&mut root, caps, controls, settings, signals);
        // SAFETY: on processor `self.cpu`.
        if !unsafe { super::smp::withdraw(self.cpu, SHOOTDOWN_TIMEOUT_TICKS) } {
            // A token of this processor's VMX operation is still out: stay in it.
            return Err("the lent VMX operation never came back (VMXOFF not executed)");
        }
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
        signals: Option<&Signals>,
    ) -> Result<(), &'static str> {
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
        // SAFETY: the code page is this vCPU's alone, identity-mapped.
        let mem = unsafe { memory::GuestMemory::new(self.code, 4096) };
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
            // The application processors' guest runs neither instruction.
            monitor_mwait_exiting: false,
            l1_kernel: false,
        };
        let vcpu = Vcpu::new(mem, config);
        let setup = super::write_vmcs(
            &mut vmcs,
            &super::extras::without(*controls),
            self.eptp,
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
        let mut regs = GuestRegisters::default();
        let mut result = self.rounds(&mut vmcs, &mut regs);
        if let (Ok(()), Some(signals)) = (result, signals) {
            let timer = if requirements::PREEMPTION_TIMER.chosen_in(controls) {
                Ok(ReadTimer::Preemption(
                    caps.misc.preemption_timer_tsc_shift(),
                ))
            } else {
                // SAFETY: ring 0 with interrupts off; this processor's own local APIC, whose
                // timer nothing else uses now (the vCPU's `Vcpu` never runs the guest here).
                unsafe { super::lapic::ApicTimer::init() }
                    .map(ReadTimer::Apic)
                    .ok_or("no local APIC timer")
            };
            result = timer.and_then(|timer| self.read_phase(&mut vmcs, &mut regs, signals, &timer));
        }
        if let Some(signals) = signals {
            signals.ended.store(true, Ordering::Release);
        }
        if vmcs.clear().is_err() {
            return Err("VMCLEAR failed");
        }
        result
    }

    /// Enters the guest; the exit's reason (counted in `exits` when given) and decoded exit.
    fn enter(
        &mut self,
        vmcs: &mut super::Vmcs<'_>,
        regs: &mut GuestRegisters,
        count: bool,
    ) -> Result<VmExit, &'static str> {
        // SAFETY: the host state was written on this processor (its GDT, TSS, CR3); the EPT
        // maps the guest's two pages only; SSE is enabled and the host takes no interrupts.
        unsafe { vmcs.run(regs) }.map_err(|_| "VM entry failed")?;
        let reason = ExitReason::read(vmcs).map_err(|_| "cannot read the exit reason")?;
        if count
            && let Some(n) = self
                .report
                .exits
                .get_mut(usize::from(reason.basic.number()))
        {
            *n += 1;
        }
        if reason.entry_failure {
            return Err("VM entry failed (exit reason with the entry-failure bit)");
        }
        VmExit::read_for(reason, vmcs).map_err(|_| "cannot read the VM exit")
    }

    /// The rounds: CPUID, OUT, WRMSR, RDMSR until the guest's VMCALL.
    fn rounds(
        &mut self,
        vmcs: &mut super::Vmcs<'_>,
        regs: &mut GuestRegisters,
    ) -> Result<(), &'static str> {
        let own_id = crate::smp::apic_id();
        let mut scratch = 0u64;
        loop {
            let length = match self.enter(vmcs, regs, true)? {
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
                VmExit::Vmcall { length } => {
                    self.report.passed = regs.rax == GUEST_PASS;
                    // The guest continues with its reads after the VMCALL (if asked to).
                    skip_instruction(vmcs, length)
                        .map_err(|_| "cannot complete the instruction")?;
                    return Ok(());
                }
                _ => return Err("an unexpected VM exit"),
            };
            skip_instruction(vmcs, length).map_err(|_| "cannot complete the instruction")?;
        }
    }

    /// The `ept-shootdown` phase: the guest reads [`SHARED_GPA`] and counts its reads at
    /// [`READ_COUNTER`], without VM exits but a timer's (the VMX-preemption timer's every
    /// [`READ_PERIOD_TICKS`], else the local APIC timer's), at which the vCPU loop serves the bootstrap processor's requests
    /// (the shootdown's INVEPT among them), until an EPT violation.
    fn read_phase(
        &mut self,
        vmcs: &mut super::Vmcs<'_>,
        regs: &mut GuestRegisters,
        signals: &Signals,
        timer: &ReadTimer,
    ) -> Result<(), &'static str> {
        let mut reads = Reads::default();
        let invepts = super::smp::invepts(self.cpu);
        if let ReadTimer::Preemption(shift) = *timer {
            vmcs.write(
                fields::VMX_PREEMPTION_TIMER_VALUE,
                super::vcpu::timer_value(READ_PERIOD_TICKS, shift) as u32,
            )
            .map_err(|_| "cannot write the VMX-preemption timer")?;
        } else {
            // Bochs 2.7 holds a pending external interrupt back while the guest's RFLAGS.IF is
            // 0, although external-interrupt exiting makes IF irrelevant; with IF = 1 it exits
            // (the interrupt never reaches the guest, which has no interrupt handlers).
            let rflags = vmcs
                .read(fields::GUEST_RFLAGS)
                .map_err(|_| "cannot read the guest's RFLAGS")?;
            vmcs.write(fields::GUEST_RFLAGS, rflags | vmx_caps::arch::Rflags::IF)
                .map_err(|_| "cannot write the guest's RFLAGS")?;
            // The rounds' controls leave external-interrupt exiting off (`extras::without`).
            vmcs.modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |c| {
                c | vmx_caps::PinBasedControls::EXTERNAL_INTERRUPT_EXITING
            })
            .map_err(|_| "cannot turn external-interrupt exiting on")?;
        }
        signals.reading.store(true, Ordering::Release);
        let start = crate::smp::rdtsc();
        let result = loop {
            let after_invept = super::smp::invepts(self.cpu) != invepts;
            if let ReadTimer::Apic(apic) = timer {
                apic.start(READ_PERIOD_APIC_TICKS);
            }
            let exit = match self.enter(vmcs, regs, false) {
                Ok(exit) => exit,
                Err(e) => break Err(e),
            };
            match exit {
                VmExit::PreemptionTimerExpired => reads.timer_exits += 1,
                // The local APIC timer's interrupt, acknowledged on exit.
                VmExit::ExternalInterrupt { .. } if matches!(timer, ReadTimer::Apic(_)) => {
                    if let ReadTimer::Apic(apic) = timer {
                        apic.eoi();
                    }
                    reads.timer_exits += 1;
                }
                VmExit::EptViolation { guest_physical, .. } => {
                    reads.violation = Some((guest_physical, after_invept));
                    break Ok(());
                }
                VmExit::Vmcall { .. } => {
                    reads.wrong_value = true;
                    break Ok(());
                }
                _ => break Err("an unexpected VM exit while reading"),
            }
            if signals.stop.load(Ordering::Acquire) {
                break Ok(());
            }
            if crate::smp::rdtsc().wrapping_sub(start) > SHOOTDOWN_TIMEOUT_TICKS {
                break Err("no EPT change within the timeout");
            }
            // SAFETY: this job runs on processor `self.cpu`.
            unsafe { crate::smp::serve_calls(self.cpu) };
        };
        if let ReadTimer::Apic(apic) = timer {
            apic.stop();
        }
        reads.count = read_count(self.code);
        self.report.reads = Some(reads);
        result
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

/// The guest's count of its reads of [`SHARED_GPA`], in the code page at host `code`.
fn read_count(code: u64) -> u64 {
    // SAFETY: the counter is an aligned dword of the guest's code page (identity-mapped), which
    // the guest increments with single writes.
    u64::from(unsafe { core::ptr::read_volatile((code + READ_COUNTER) as *const u32) })
}

/// The `ept-shootdown` check on the bootstrap processor, while CPU 1's vCPU reads: waits for its
/// reads, lends every processor's VMX operation to a [`PerCpuVmx`], unmaps [`SHARED_GPA`] from
/// CPU 1's EPT and flushes through [`EptShootdown`] (or, with `smp-fault=no-shootdown`, on CPU 0
/// only), takes the tokens back, and counts the guest's reads from the moment the change returned
/// to the end of its reading phase (at most 1 without a stale translation: an increment whose
/// read came before the INVEPT's VM exit).
fn shootdown(
    cpus: &mut crate::smp::Cpus,
    ept: &mut ApEpt,
    code: u64,
    signals: &Signals,
    caps: &VmxCapabilities,
) -> Result<Figures, &'static str> {
    let started =
        wait(|| signals.reading.load(Ordering::Acquire) || signals.ended.load(Ordering::Acquire));
    // A few periods of reads, so that the page's translation is cached.
    let warm = wait(|| read_count(code) > 10_000 || signals.ended.load(Ordering::Acquire));
    if !started || !warm || signals.ended.load(Ordering::Acquire) {
        return Err("CPU 1's vCPU did not read the page");
    }
    let mut slots: [Option<super::smp::InVmx>; crate::smp::MAX_CPUS] =
        [const { None }; crate::smp::MAX_CPUS];
    let count = cpus.count();
    let mut lend = super::smp::Lend {
        ept_vpid: caps.ept_vpid,
    };
    let mut per_cpu = match PerCpuVmx::enter_all(cpus, &mut lend, &mut slots[..count]) {
        Ok(per_cpu) => per_cpu,
        Err(e) => {
            println!("mini-hv: ept-shootdown: {e}");
            return Err("the processors' VMX operation could not be lent");
        }
    };
    let before: [u64; 2] = [super::smp::invepts(0), super::smp::invepts(1)];
    let only_here = crate::boot::cmdline()
        .split_whitespace()
        .any(|w| w == "smp-fault=no-shootdown");
    let flushed = ept
        .unmap(GuestPhysAddr::new_truncate(SHARED_GPA), 4096)
        .map_err(|_| "cannot unmap the page")
        .and_then(|token| {
            if only_here {
                println!(
                    "mini-hv: ept-shootdown: INVEPT on CPU 0 only (smp-fault on the command line)"
                );
                let mut here = CpuSet::EMPTY;
                here.insert(0);
                // SAFETY: deliberately false (CPU 1 uses this EPT), to show that the check catches
                // a missing invalidation: the unmap of the one 4-KiB leaf frees no table (the
                // code page stays mapped in the same tables), so no frame is reused behind it.
                let mut shoot = unsafe { EptShootdown::only(cpus, &mut per_cpu, here) };
                ept.flush(token, &mut shoot).map(|()| shoot.invalidations())
            } else {
                let mut shoot = EptShootdown::new(cpus, &mut per_cpu);
                ept.flush(token, &mut shoot).map(|()| shoot.invalidations())
            }
            .map_err(|e| {
                println!("mini-hv: ept-shootdown: {e}");
                "the shootdown failed"
            })
        });
    let at_return = read_count(code);
    let ended = wait(|| signals.ended.load(Ordering::Acquire));
    let after_return = read_count(code) - at_return;
    let figures = flushed.map(|total| Figures {
        total,
        per_cpu: [
            super::smp::invepts(0) - before[0],
            super::smp::invepts(1) - before[1],
        ],
        at_return,
        after_return,
        ended,
    });
    if let Err((_, e)) = per_cpu.leave_all(cpus, &mut lend) {
        println!("mini-hv: ept-shootdown: {e}");
        return Err("the lent VMX operation could not be taken back");
    }
    figures
}

/// The `ept-shootdown` check's one change, seen from the bootstrap processor.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// INVEPTs as counted by [`EptShootdown::invalidations`].
    total: u64,
    /// INVEPTs executed on CPU 0 and CPU 1 (counted by the tokens).
    per_cpu: [u64; 2],
    /// The guest's reads when the change returned.
    at_return: u64,
    /// The guest's reads after the change returned.
    after_return: u64,
    /// CPU 1's reading phase ended (within the timeout).
    ended: bool,
}

/// Waits up to [`SHOOTDOWN_TIMEOUT_TICKS`] for `done()`.
fn wait(mut done: impl FnMut() -> bool) -> bool {
    let start = crate::smp::rdtsc();
    while !done() {
        if crate::smp::rdtsc().wrapping_sub(start) > SHOOTDOWN_TIMEOUT_TICKS {
            return done();
        }
        core::hint::spin_loop();
    }
    true
}

/// Prints the `ept-shootdown` verdict; whether it passed.
fn judge_shootdown(figures: Result<Figures, &'static str>, reads: Option<Reads>) -> bool {
    let Some(reads) = reads else {
        println!("mini-hv: ept-shootdown: CPU 1's vCPU did not reach its reads: FAIL");
        return false;
    };
    let figures = match figures {
        Ok(figures) => figures,
        Err(why) => {
            println!("mini-hv: ept-shootdown: {why} (its reading phase: {reads:?}): FAIL");
            return false;
        }
    };
    println!(
        "mini-hv: ept-shootdown: CPU 1's vCPU read GPA {SHARED_GPA:#x} {} times before the change \
         returned ({} timer exits in all)",
        figures.at_return, reads.timer_exits
    );
    let on_page = |gpa: u64| gpa & !0xFFF == SHARED_GPA;
    // A violation in a run entered before CPU 1's INVEPT is fine too: the processor held no
    // translation of the page then (Bochs keeps none across VM exits).
    let next = match reads.violation {
        Some((gpa, true)) if on_page(gpa) => "an EPT violation at the page (after its INVEPT)",
        Some((gpa, false)) if on_page(gpa) => "an EPT violation at the page (before its INVEPT)",
        Some(_) => "an EPT violation elsewhere",
        None if reads.wrong_value => "a read of another value",
        None => "nothing (the vCPU stopped)",
    };
    // One increment may follow the change: its read came before the INVEPT's VM exit.
    let stale = figures.after_return.saturating_sub(1);
    if stale > 0 {
        println!(
            "mini-hv: ept-shootdown: CPU 1 read the unmapped page {stale} times after the change \
             returned (stale translation)"
        );
    }
    let ok = figures.ended
        && stale == 0
        && !reads.wrong_value
        && matches!(reads.violation, Some((gpa, _)) if on_page(gpa))
        && figures.per_cpu == [1, 1]
        && figures.total == 2;
    println!(
        "mini-hv: ept-shootdown: 1 change, INVEPT on CPU 0: {}, CPU 1: {} ({} through \
         ept::EptShootdown); reads after it returned: {} (stale: {stale}); CPU 1's next access: \
         {next}: {}",
        figures.per_cpu[0],
        figures.per_cpu[1],
        figures.total,
        figures.after_return,
        if ok { "pass" } else { "FAIL" }
    );
    ok
}

/// Runs `here` (the bootstrap processor's guest) while every application processor of `cpus`
/// runs its own vCPU, and with exactly 2 processors the `ept-shootdown` check after `here`; the
/// outcome is `here`'s unless an application processor's vCPU or the check failed.
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
    let mut first_ept = None;
    for (cpu, slot) in jobs.iter_mut().enumerate().take(cpus.count()).skip(1) {
        match Job::prepare(cpu, caps) {
            Ok((job, ept)) => {
                *slot = Some(job);
                // The other processors' EPTs are never changed; their frames stay allocated.
                first_ept.get_or_insert(ept);
            }
            Err(why) => {
                println!("mini-hv: the vCPU of CPU {cpu}: {why}");
                return Outcome::Fail;
            }
        }
    }
    let [_, first, rest @ ..] = &mut jobs;
    let (Some(first_job), Some(mut ept)) = (first.as_mut(), first_ept) else {
        return here();
    };
    println!(
        "mini-hv: CPU 1 runs its own vCPU (own VMXON region, VMCS, EPT) alongside CPU 0's guest"
    );
    let check = cpus.count() == 2;
    if !check {
        println!(
            "mini-hv: ept-shootdown runs with 2 CPUs (here {})",
            cpus.count()
        );
    }
    let signals = Signals::default();
    let code = first_job.code;
    let signals_ap = check.then_some(&signals);
    let mut run_first = || first_job.run(caps, controls, settings, signals_ap);
    let ((outcome, figures), posted) = cpus.alongside(1, &mut run_first, |cpus| {
        let outcome = here();
        let figures = check.then(|| shootdown(cpus, &mut ept, code, &signals, caps));
        // Whatever happened, the vCPU stops reading now.
        signals.stop.store(true, Ordering::Release);
        (outcome, figures)
    });
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
        let mut run = || job.run(caps, controls, settings, None);
        if let Err(e) = vmx_core::RunOnCpu::run_on(cpus, i + 2, &mut run) {
            println!("mini-hv: {e}");
            return Outcome::Fail;
        }
    }
    let mut all = overlapped;
    for job in jobs.iter().flatten() {
        all &= job.judge();
    }
    if let (Some(figures), Some(job)) = (figures, jobs[1].as_ref()) {
        all &= judge_shootdown(figures, job.report.reads);
    }
    match outcome {
        Outcome::Pass if !all => Outcome::Fail,
        outcome => outcome,
    }
}
