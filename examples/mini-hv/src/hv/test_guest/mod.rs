//! The test guest's machine ([`crate::guest`]): its RAM (a copy of the kernel image at its linked
//! addresses, mapped by EPT, nothing else: the MMIO device page and everything beyond RAM are
//! unmapped, so each access is an EPT violation the hypervisor emulates or refuses; the
//! hypervisor's own memory is never mapped), its bitmaps (every MSR but the pass-through ones and
//! every port intercepted), its MSR areas and the structures of the extra checks, the VMCS with the
//! reset state, the run on its vCPU ([`vcpu`]), and the judgement of the run. The entry-diff
//! mode ([`crate::entry_diff`]) builds its known-good VMCS on the same machine ([`TestMachine`]).

mod devices;
pub(crate) mod extras;
mod l1_kernel;
pub(crate) mod vcpu;

use ept::EptConfig;
use exits::ExitReason;
use vmcs::structures::{
    InFrame, IoBitmaps, MsrAccess, MsrArea, MsrBitmap, MsrEntry, write_msr_areas,
};
use vmcs::{VmcsWrite, check, fields};
use vmx_caps::{SecondaryControls, VmxCapabilities};
use vmx_core::VmFail;

// The hypervisor's shared parts, also for the submodules (`super::` there).
use super::{
    HostXsave, KernelFrames, LARGE_PAGE, Outcome, Root, SetupError, Vmcs, ap_vcpu, bitmaps_in,
    capabilities, cr_policy, dispatch, dump_vmcs, enter_vmx_here, ept_map, guest_ram_ept, identity,
    lapic, leave_vmx, load_vmcs, memory, monitor, nested, new_vmcs_region, phys_addr_width, probe,
    smp, software_check, write_vmcs,
};
use crate::guest::{self, abi};
use crate::{print, println};
use mini_hv_logic::l1_kernel::{Reported, l1_result};
use mini_hv_logic::requirements::{self, Verdict as Requirements};
use vcpu::{Config, End, TimeSource, Vcpu, Verdict};
use vmx_caps::arch::Xcr0;

/// Runs the test guest.
///
/// With `cpus` (more than one processor started), every application processor runs its own small
/// vCPU while the bootstrap processor runs the test guest ([`ap_vcpu`]).
///
/// With VMX offered to the guest (`mini-hv.nested=1`) and a boot module marked `l1`, the guest is
/// that module instead: a second mini-hv kernel as L1 ([`l1_kernel`]), which runs its own test
/// guest as L2.
pub fn run(cpus: Option<&mut crate::smp::Cpus>) -> Outcome {
    let l1 = nested::requested().and_then(|_| l1_kernel::requested());
    if l1.is_some() && cpus.is_some() {
        println!("mini-hv: L1's kernel runs on one processor: start mini-hv with one CPU");
        return Outcome::Fail;
    }
    let mut machine = match TestMachine::prepare_for(l1) {
        Ok(machine) => machine,
        Err(outcome) => return outcome,
    };
    // SAFETY: this is processor 0 (the bootstrap processor), in VMX root operation until the
    // `withdraw` below.
    unsafe { smp::declare_in_vmx(0) };
    let ap_config = ap_vcpu::Settings {
        wbinvd_exiting: machine.wbinvd_exiting,
        xcr0_supported: machine.xsave.supported,
    };
    let controls = machine.negotiated.value;
    // PML needs the EPT's dirty flags.
    let ept_config = machine
        .ept_config
        .accessed_dirty(extras::wants_accessed_dirty(&controls, &machine.caps));
    let outcome = ap_vcpu::alongside(cpus, &machine.caps, &controls, ap_config, || {
        run_guest(
            &mut machine.root,
            &machine.caps,
            &controls,
            machine.mem,
            ept_config,
            machine.vpid,
            machine.wbinvd_exiting,
            machine.xsave.supported,
            machine.l1_entry,
        )
    });
    machine.xsave.restore();
    // SAFETY: processor 0. Its lent VMX operation came back when `ap_vcpu::alongside` returned
    // (the tokens live in its scope), so this does not wait.
    if !unsafe { smp::withdraw(0, 0) } {
        println!("mini-hv: CPU 0's VMX operation is still lent out; staying in VMX operation");
        return Outcome::Fail;
    }
    match leave_vmx(machine.root) {
        Outcome::Pass => outcome,
        failed => failed,
    }
}

/// The test guest's machine up to its VMCS (shared with the entry-diff mode, whose known-good
/// VMCS is the test guest's): the capabilities (printed, with the raw capability MSRs, so that
/// every run yields a dump), the negotiated controls, the host's XSAVE set-up, guest RAM holding a
/// copy of the kernel image at its linked addresses, and VMX root operation.
pub(crate) struct TestMachine {
    /// The processor's VMX capabilities (restricted to a requested profile).
    pub caps: VmxCapabilities,
    /// The negotiation of [`requirements::request`] with the extra checks' controls.
    pub negotiated: vmx_caps::NegotiatedControls,
    /// The EPT configuration of this processor.
    pub ept_config: EptConfig,
    /// "enable VPID" was negotiated.
    pub vpid: bool,
    /// "WBINVD exiting" was negotiated.
    pub wbinvd_exiting: bool,
    /// The host's XSAVE set-up.
    pub xsave: HostXsave,
    /// Guest RAM.
    pub mem: memory::GuestMemory,
    /// VMX root operation on this processor.
    pub root: Root,
    /// The guest is L1's kernel ([`l1_kernel`]) loaded in [`TestMachine::mem`], entered here.
    pub l1_entry: Option<u32>,
}

impl TestMachine {
    /// Reads and negotiates, allocates guest RAM and enters VMX root operation; the outcome to end
    /// with where that fails (the reason was printed).
    pub fn prepare() -> Result<Self, Outcome> {
        Self::prepare_for(None)
    }

    /// As [`TestMachine::prepare`], for the test guest (`None`) or L1's kernel, which gets its
    /// own RAM and none of the extra checks' optional controls.
    fn prepare_for(l1: Option<l1_kernel::L1Kernel>) -> Result<Self, Outcome> {
        let caps = capabilities().ok_or(Outcome::Fail)?;
        // The requirements as data (`mini_hv_logic::requirements`, also behind `vmxtool caps
        // --example`), plus the optional controls of the extra checks.
        let request = match l1 {
            None => extras::prefer(requirements::request()),
            Some(_) => requirements::request(),
        };
        let verdict = Requirements::evaluate(&caps, &request);
        print!("mini-hv: {verdict}");
        if let Err(e) = &verdict.negotiated {
            println!("mini-hv: unsupported: {e}");
        }
        let ept_config = EptConfig::new(caps.ept_vpid, phys_addr_width());
        let negotiated = match verdict.negotiated {
            Ok(n) if verdict.runs() => n,
            _ => return Err(Outcome::Unsupported),
        };
        if l1.is_some() && !mini_hv_logic::nested_policy::l1_has_time_source(&caps) {
            // L1's mini-hv needs a time source; L0 passes the VMX-preemption timer on, but
            // models no local APIC (timer) for L1.
            println!(
                "mini-hv: unsupported: L1's kernel needs the VMX-preemption timer, which this \
                 processor does not offer (L0 models no local APIC timer for L1)"
            );
            return Err(Outcome::Unsupported);
        }
        let mut controls = negotiated.value;
        if !requirements::PREEMPTION_TIMER.chosen_in(&controls) {
            // The APIC-timer fallback needs external-interrupt exiting for the whole run, which the
            // virtual-interrupt-delivery check turns on and off: that check is left out.
            controls
                .proc2
                .remove(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY);
        }
        for dropped in negotiated.drops() {
            println!("mini-hv: optional control dropped: {dropped}");
        }
        let vpid = controls.proc2.contains(SecondaryControls::ENABLE_VPID);
        let wbinvd_exiting = controls.proc2.contains(SecondaryControls::WBINVD_EXITING);
        let xsave = HostXsave::enable();
        let (mem, l1_entry) = match l1 {
            None => (ram().ok_or(Outcome::Fail)?, None),
            Some(l1) => {
                let loaded = l1.load().ok_or(Outcome::Fail)?;
                (loaded.mem, Some(loaded.entry))
            }
        };
        let root = enter_vmx_here(&caps).ok_or(Outcome::Fail)?;
        println!("mini-hv: VMX root operation entered");
        Ok(Self {
            caps,
            negotiated,
            ept_config,
            vpid,
            wbinvd_exiting,
            xsave,
            mem,
            root,
            l1_entry,
        })
    }
}

/// The test guest's RAM, `[0, abi::RAM_SIZE)`, 2 MiB aligned (so that EPT maps it with 2 MiB
/// pages), with a copy of the kernel image at its linked addresses; prints why not.
fn ram() -> Option<memory::GuestMemory> {
    let pages = ((abi::RAM_SIZE + LARGE_PAGE - 4096) / 4096) as usize;
    let Some(allocation) = crate::mem::alloc_frames(pages) else {
        println!(
            "mini-hv: cannot allocate {} MiB of guest RAM",
            abi::RAM_SIZE >> 20
        );
        return None;
    };
    let ram = allocation.next_multiple_of(LARGE_PAGE);
    let (image_start, image_end) = crate::boot::image_range();
    if image_end > abi::RAM_SIZE {
        println!("mini-hv: the kernel image ends at {image_end:#x}, beyond the guest's RAM");
        return None;
    }
    // SAFETY: the image is mapped and readable; the destination is the fresh allocation, large
    // enough (checked), identity-mapped and owned by the guest.
    unsafe {
        core::ptr::copy_nonoverlapping(
            image_start as *const u8,
            (ram + image_start) as *mut u8,
            (image_end - image_start) as usize,
        )
    };
    // SAFETY: [ram, ram + RAM_SIZE) was just allocated for the guest alone.
    let mem = unsafe { memory::GuestMemory::new(ram, abi::RAM_SIZE) };
    println!(
        "mini-hv: guest RAM {} MiB at host {:#x}; kernel image copied to guest {image_start:#x}..{image_end:#x}",
        abi::RAM_SIZE >> 20,
        mem.host_base()
    );
    Some(mem)
}

#[allow(clippy::too_many_arguments)]
fn run_guest(
    root: &mut Root,
    caps: &VmxCapabilities,
    controls: &vmx_caps::ControlSet,
    mem: memory::GuestMemory,
    ept_config: EptConfig,
    vpid: bool,
    wbinvd_exiting: bool,
    xcr0_supported: Xcr0,
    l1_entry: Option<u32>,
) -> Outcome {
    let Some(mut ept) = guest_ram_ept(root, ept_config, &mem) else {
        return Outcome::Fail;
    };
    let Some((msr_bitmap, io_bitmaps)) = bitmaps() else {
        return Outcome::Fail;
    };
    let Some(region) = new_vmcs_region(caps) else {
        return Outcome::Fail;
    };
    let apic_timer = !requirements::PREEMPTION_TIMER.chosen_in(controls);
    let timer = if !apic_timer {
        TimeSource::PreemptionTimer {
            shift: caps.misc.preemption_timer_tsc_shift(),
        }
    } else {
        // The fallback the requirements name: the verdict negotiated external-interrupt exiting and
        // "acknowledge interrupt on exit" for it.
        // SAFETY: ring 0 with interrupts off, one processor; nothing else uses the local APIC
        // timer, and the host no interrupt of the 8259s.
        match unsafe { lapic::ApicTimer::init() } {
            Some(apic) => {
                println!("mini-hv: no VMX-preemption timer: the local APIC timer stands in for it");
                TimeSource::ApicTimer(apic)
            }
            None => return Outcome::Unsupported,
        }
    };
    let config = Config {
        caps: *caps,
        timer,
        wbinvd_exiting,
        xcr0_supported,
        monitor_mwait_exiting: monitor::exiting(controls.proc),
        l1_kernel: l1_entry.is_some(),
    };
    let ram_base = mem.host_base();
    let mut vcpu = Vcpu::new(mem, config);
    let Some(mut active) = load_vmcs(region, root) else {
        return Outcome::Fail;
    };
    if let Some(shadowing) = nested::requested() {
        let msr_bitmap: &'static MsrBitmap = msr_bitmap;
        let io_bitmaps: &'static IoBitmaps = io_bitmaps;
        match nested::Nested::new(caps, active.phys_addr(), msr_bitmap, io_bitmaps, shadowing)
            .and_then(nested::Nested::into_frames)
        {
            Some(n) => vcpu.nested = Some(n),
            None => return Outcome::Fail,
        }
    }
    let setup = write_vmcs(
        &mut active,
        controls,
        ept.eptp(),
        msr_bitmap,
        io_bitmaps,
        vpid,
    )
    .and_then(|()| {
        match l1_entry {
            None => vcpu.write_reset_state(&mut active, guest::entry16())?,
            Some(entry) => vcpu.write_l1_entry_state(&mut active, entry)?,
        }
        Ok(())
    })
    .and_then(|()| write_guest_msr_areas(&mut active, caps))
    .map(|area| vcpu.guest_msrs = Some(area))
    .and_then(|()| match l1_entry {
        None => extras::Extras::setup(&mut active, controls, caps, &mut ept, ram_base).map(Some),
        Some(_) => Ok(None),
    })
    .map(|extras| vcpu.extras = extras)
    .and_then(|()| {
        // The extra checks leave external-interrupt exiting off; the APIC timer needs it.
        if apic_timer {
            active.modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |c| {
                c | vmx_caps::PinBasedControls::EXTERNAL_INTERRUPT_EXITING
            })?;
        }
        Ok(())
    });
    let setup = setup.and_then(|()| match vcpu.nested.as_mut() {
        Some(nested) => Ok(nested.attach(&mut active)?),
        None => Ok(()),
    });
    if let Err(fail) = setup {
        println!("mini-hv: writing the VMCS failed: {fail}");
        dump_vmcs(&active);
        return Outcome::Fail;
    }
    if let Some(defect) = requested_defect()
        && let Err(fail) = defect.apply(&mut active, caps)
    {
        println!("mini-hv: writing the VMCS failed: {fail}");
        return Outcome::Fail;
    }
    match l1_entry {
        None => println!(
            "mini-hv: launching the guest in real mode at CS.base {:#x} (VPID {})",
            guest::entry16(),
            if vpid { "on" } else { "off" }
        ),
        Some(entry) => println!(
            "mini-hv: launching L1's kernel at {entry:#x} (32-bit protected mode, paging off, \
             EBX = its Multiboot information; VPID {}); L1's console follows, prefixed \"L1: \"",
            if vpid { "on" } else { "off" }
        ),
    }
    let predicted = software_check(
        &active,
        caps,
        check::EntryInstruction::Vmlaunch,
        active.phys_addr(),
        active.root().vmxon_region_phys(),
    );
    let end = vcpu.run(&mut active);
    vcpu.stop_timer();
    if let Some(nested) = &vcpu.nested {
        nested.print_stats();
    }
    if end == End::EntryFailed {
        // Next to the VMCS dump `run` printed: the checker's diagnosis of the entry that failed
        // (a failed entry leaves the guest state as it was, and the launch state tells which
        // instruction ran).
        println!("mini-hv: the software VM-entry checker's diagnosis of the failed VM entry:");
        let instruction = if active.is_launched() {
            check::EntryInstruction::Vmresume
        } else {
            check::EntryInstruction::Vmlaunch
        };
        software_check(
            &active,
            caps,
            instruction,
            active.phys_addr(),
            active.root().vmxon_region_phys(),
        );
    }
    // The first VMLAUNCH entered the guest if any exit but an entry failure was counted.
    let entered = vcpu
        .exit_counts
        .iter()
        .enumerate()
        .any(|(reason, &count)| count != 0 && !matches!(reason, 33 | 34));
    if let Some(predicted) = predicted
        && (predicted == check::Outcome::Success) != entered
    {
        println!(
            "mini-hv: WARNING: the software VM-entry checker predicted {predicted}, the processor \
             disagreed"
        );
    }
    let host_writes = active.host_state_cache().writes();
    println!(
        "mini-hv: HOST_RSP/HOST_RIP written {host_writes} time(s) for {} VM exits (trampoline cache)",
        vcpu.total_exits
    );
    // Every entry comes from one frame of `Vcpu::run_with` (one per probe mode) and nothing else
    // writes the two fields, so the trampoline writes them at the first entry and again at most
    // when the guest switches the round-trip probe on or off (the other loop's frame may sit at
    // another depth).
    let allowed = 1 + vcpu.probe_switches;
    let cache_held = host_writes >= 1 && host_writes <= allowed;
    if !cache_held {
        println!(
            "mini-hv: the trampoline's host-state cache failed: HOST_RSP/HOST_RIP written \
             {host_writes} time(s), expected 1 to {allowed}"
        );
    }
    let judged = match l1_entry {
        None => judge(&vcpu, caps, end, wbinvd_exiting, !xcr0_supported.is_empty()),
        Some(_) => judge_l1(&vcpu, end),
    };
    let outcome = match judged {
        Outcome::Pass if !cache_held => Outcome::Fail,
        outcome => outcome,
    };
    if let Err((_, fail)) = active.clear() {
        println!("mini-hv: VMCLEAR failed: {fail}");
        return Outcome::Fail;
    }
    outcome
}

/// The test guest's bitmaps: the MSR bitmap intercepts every MSR but the pass-through ones
/// ([`vcpu::PASSTHROUGH_READ`], [`vcpu::PASSTHROUGH_WRITE`]), the I/O bitmaps every port; prints
/// why not.
pub(crate) fn bitmaps() -> Option<(&'static mut MsrBitmap, &'static mut IoBitmaps)> {
    let (Some(msr_frame), Some(io_frames)) =
        (crate::mem::alloc_frame(), crate::mem::alloc_frames(2))
    else {
        println!("mini-hv: out of memory for the bitmaps");
        return None;
    };
    // SAFETY: fresh identity-mapped frames (one, and two contiguous), used only as these bitmaps
    // for the rest of the run.
    let (msr_bitmap, io_bitmaps) = unsafe { bitmaps_in(msr_frame, io_frames) }?;
    msr_bitmap.fill(true);
    io_bitmaps.fill(true);
    let passthrough = vcpu::PASSTHROUGH_READ
        .iter()
        .map(|&msr| (msr, MsrAccess::Read))
        .chain(
            vcpu::PASSTHROUGH_WRITE
                .iter()
                .map(|&msr| (msr, MsrAccess::Write)),
        );
    for (msr, access) in passthrough {
        if let Err(e) = msr_bitmap.pass_through(msr, access) {
            println!("mini-hv: cannot pass MSR {msr:#x} through: {e}");
            return None;
        }
    }
    Some((msr_bitmap, io_bitmaps))
}

/// The test guest's MSR areas: IA32_KERNEL_GS_BASE switched by VM entry and exit. The guest's
/// value lives in one area, the VM-entry MSR-load and VM-exit MSR-store area (loaded with
/// [`abi::MSR_AREA_GUEST_INITIAL`] at the first entry); the host's
/// ([`vcpu::HOST_KERNEL_GS_BASE`], set here) comes back from the VM-exit MSR-load area.
fn write_guest_msr_areas(
    active: &mut Vmcs<'_>,
    caps: &VmxCapabilities,
) -> Result<&'static MsrArea<1>, SetupError> {
    let (Some(guest_frame), Some(host_frame)) =
        (crate::mem::alloc_frame(), crate::mem::alloc_frame())
    else {
        return Err(SetupError::OutOfMemory);
    };
    // SAFETY: fresh identity-mapped frames, used only as these areas for the rest of the run.
    let (guest, host) = unsafe {
        (
            MsrArea::<1>::from_frame(guest_frame as *mut u8)?,
            MsrArea::<1>::from_frame(host_frame as *mut u8)?,
        )
    };
    let entry = |data| MsrEntry {
        index: abi::IA32_KERNEL_GS_BASE,
        data,
    };
    guest.push(entry(abi::MSR_AREA_GUEST_INITIAL))?;
    host.push(entry(vcpu::HOST_KERNEL_GS_BASE))?;
    // SAFETY: the host does not use IA32_KERNEL_GS_BASE (no SWAPGS); the value is canonical.
    unsafe { crate::arch::wrmsr(abi::IA32_KERNEL_GS_BASE, vcpu::HOST_KERNEL_GS_BASE) };
    write_msr_areas(active, &identity, caps.misc, &*guest, &*guest, &*host)?;
    Ok(guest)
}

/// A deliberate VMCS defect, requested on the kernel command line with `mini-hv.defect=guest-state`
/// or `mini-hv.defect=control`, to exercise the reporting of a failed VM entry.
#[derive(Debug, Clone, Copy)]
enum Defect {
    /// TR not busy: VM entry fails on the guest-state checks (exit reason 33).
    GuestState,
    /// More CR3-target values than the processor supports: VMLAUNCH fails with VM-instruction
    /// error 7 (invalid control fields).
    Control,
}

fn requested_defect() -> Option<Defect> {
    crate::boot::cmdline()
        .split_ascii_whitespace()
        .find_map(|word| match word.strip_prefix("mini-hv.defect=")? {
            "guest-state" => Some(Defect::GuestState),
            "control" => Some(Defect::Control),
            other => {
                println!("mini-hv: ignoring unknown mini-hv.defect={other}");
                None
            }
        })
}

impl Defect {
    fn apply(self, vmcs: &mut Vmcs<'_>, caps: &VmxCapabilities) -> Result<(), VmFail> {
        println!("mini-hv: breaking the VMCS on purpose: {self:?}");
        match self {
            // An available (not busy) TSS.
            Self::GuestState => vmcs.write(
                fields::GUEST_TR_ACCESS_RIGHTS,
                vmcs::SegmentAccessRights::system(vmcs::SystemSegmentType::TSS_AVAILABLE),
            ),
            Self::Control => vmcs.write(fields::CR3_TARGET_COUNT, caps.misc.cr3_target_count() + 1),
        }
    }
}

/// Prints the guest's VM exits by basic exit reason.
fn print_exit_statistics(vcpu: &Vcpu) {
    println!("mini-hv: VM exit statistics:");
    let mut total = 0;
    for (number, &count) in vcpu.exit_counts.iter().enumerate() {
        if count != 0 {
            total += count;
            println!(
                "mini-hv:   {count:>8}  {}",
                ExitReason::from_raw(number as u32).basic
            );
        }
    }
    println!("mini-hv:   {total:>8}  total");
}

/// L1's run: L0's exit statistics for L1 and L2 (the nested ones were printed), the nested CPUID
/// round trip L2 measured (as L1 reported it), and L1's own verdict, which is L0's.
fn judge_l1(vcpu: &Vcpu, end: End) -> Outcome {
    println!("mini-hv: VM exits of L1 and of L2 through VMCS02, as L0 saw them:");
    print_exit_statistics(vcpu);
    let (result, round_trip) = vcpu.console_reports();
    let shadowing = vcpu.nested.as_ref().is_some_and(|n| n.shadowing());
    match round_trip {
        Some(median) => println!(
            "mini-hv: nested: CPUID round trip L2 measured (L2 exit, L0 reflects to L1, L1's \
             handler, L1's VMRESUME emulated by L0, L2 entry): median {median} TSC ticks \
             (VMCS shadowing {})",
            if shadowing { "on" } else { "off" }
        ),
        None => println!("mini-hv: nested: L1 reported no CPUID round trip of its guest"),
    }
    let End::L1Ended { code } = end else {
        println!("mini-hv: nested: L1 did not end its run itself");
        return Outcome::Fail;
    };
    // L1's verdict is L0's: UNSUPPORTED where the capabilities L0 could offer L1 lack what L1
    // needs (e.g. unrestricted guest on a processor without it).
    let outcome = match l1_result(code, result) {
        Some(Reported::Pass) => Outcome::Pass,
        Some(Reported::Unsupported) => Outcome::Unsupported,
        _ => Outcome::Fail,
    };
    let said = match result {
        Some(Reported::Pass) => "RESULT PASS",
        Some(Reported::Fail) => "RESULT FAIL",
        Some(Reported::Unsupported) => "RESULT UNSUPPORTED",
        None => "no RESULT line",
    };
    match code {
        Some(code) => {
            println!("mini-hv: nested: L1 ended with {said} (isa-debug-exit code {code:#x})")
        }
        None => println!("mini-hv: nested: L1 ended with {said} (no isa-debug-exit code)"),
    }
    if outcome == Outcome::Pass && round_trip.is_none() {
        return Outcome::Fail;
    }
    outcome
}

/// Prints the run's report and decides the outcome.
fn judge(
    vcpu: &Vcpu,
    caps: &VmxCapabilities,
    end: End,
    wbinvd_exiting: bool,
    xsave: bool,
) -> Outcome {
    if end == End::EntryFailed && vcpu.total_exits <= 1 {
        println!("mini-hv: the guest never ran");
        return Outcome::Fail;
    }
    let mut ok = true;
    println!("mini-hv: guest test results:");
    for (index, name) in abi::TESTS.iter().enumerate() {
        let verdict = match vcpu.reports[index] {
            Some(Verdict::Pass) => "pass",
            Some(Verdict::Fail) => {
                ok = false;
                "FAIL"
            }
            // The nested-VMX check needs VMX offered to the guest (`mini-hv.nested=1`).
            Some(Verdict::Skipped) if *name == "nested-vmx" => {
                if vcpu.nested.is_none() {
                    "skipped (VMX not offered: mini-hv.nested=1)"
                } else {
                    ok = false;
                    "FAIL (skipped, but VMX is offered)"
                }
            }
            Some(Verdict::Skipped) => {
                match vcpu.lacks(name).or_else(|| extras::model_lacks(name, caps)) {
                    Some(true) if *name == abi::MONITOR_MWAIT_TEST => {
                        "skipped (MONITOR/MWAIT do not exit here)"
                    }
                    Some(true) => "skipped (not supported by this CPU)",
                    Some(false) => {
                        ok = false;
                        "FAIL (skipped, but this CPU has what it needs)"
                    }
                    None => {
                        ok = false;
                        "FAIL (skipped, but it needs no optional feature)"
                    }
                }
            }
            None => {
                ok = false;
                "not reported"
            }
        };
        println!("mini-hv:   {index:2} {name:<26} {verdict}");
    }
    if vcpu.duplicate_reports != 0 {
        println!("mini-hv: {} duplicate test reports", vcpu.duplicate_reports);
        ok = false;
    }
    print_exit_statistics(vcpu);
    match vcpu.timing {
        Some((median, samples, min)) => println!(
            "mini-hv: CPUID round trip (VM exit + emulation + VM entry): median {median} TSC ticks over \
             {samples} samples (minimum {min})"
        ),
        None => {
            println!("mini-hv: the guest reported no CPUID timing");
            ok = false;
        }
    }
    match &vcpu.breakdown {
        Some(breakdown) => println!("{breakdown}"),
        None => {
            println!("mini-hv: no CPUID round-trip breakdown was measured");
            ok = false;
        }
    }
    let wbinvd: &[u64] = if wbinvd_exiting {
        &[abi::reason::WBINVD]
    } else {
        &[]
    };
    let xsetbv: &[u64] = if xsave { &[abi::reason::XSETBV] } else { &[] };
    let wake = [vcpu.wake_exit()];
    for &reason in vcpu::EXPECTED_EXITS
        .iter()
        .chain(wbinvd)
        .chain(xsetbv)
        .chain(&wake)
    {
        if vcpu.exit_counts[reason as usize] == 0 {
            println!(
                "mini-hv: expected VM exit never happened: {}",
                ExitReason::from_raw(reason as u32).basic
            );
            ok = false;
        }
    }
    match end {
        End::TripleFault { .. } => {
            println!("mini-hv: the guest ended with the expected triple fault; host alive")
        }
        End::GuestExit { status } => {
            println!(
                "mini-hv: the guest stopped itself with status {status:#x} before its final triple fault"
            );
            ok = false;
        }
        End::Stopped => {
            println!("mini-hv: the hypervisor stopped the guest");
            ok = false;
        }
        End::EntryFailed => ok = false,
        End::L1Ended { .. } => {
            println!("mini-hv: the test guest wrote the emulators' exit ports");
            ok = false;
        }
    }
    if ok { Outcome::Pass } else { Outcome::Fail }
}
