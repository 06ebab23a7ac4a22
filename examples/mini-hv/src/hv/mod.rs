//! The hypervisor: reads the VMX capabilities, negotiates the controls, enters VMX operation,
//! builds the VMCS and the EPT for one guest, runs it, and judges the run. The guest is the test
//! guest of [`crate::guest`] (this module's capabilities are printed with the raw capability MSRs,
//! so that every run yields a dump) or Linux ([`linux_guest`], `mini-hv.guest=linux`).
//!
//! The test guest's guest-physical memory: RAM at `[0, RAM_SIZE)` (a host allocation holding a copy of the kernel
//! image at the image's own addresses, so the guest's code runs at its linked addresses), nothing
//! else: the MMIO device page and everything beyond RAM are unmapped, so each access is an EPT
//! violation the hypervisor emulates or refuses. The hypervisor's own memory is never mapped.

mod ap_vcpu;
mod devices;
mod dispatch;
pub(crate) mod extras;
mod lapic;
mod linux_guest;
mod memory;
mod monitor;
mod nested;
mod probe;
pub mod smp;
pub(crate) mod vcpu;

use ept::{
    EptConfig, EptMapper, FrameAllocator, GuestPhysAddr, HostPhysAddr, LeafAttributes, MemoryType,
    OffsetPhysToVirt, Permissions, ThisCpuOnly,
};
use exits::ExitReason;
use vmcs::structures::{
    InFrame, IoBitmaps, MsrAccess, MsrArea, MsrAreaError, MsrBitmap, MsrEntry, StructureError,
    write_msr_areas,
};
use vmcs::{VmcsSnapshot, VmcsWrite, check, fields};
use vmx_caps::{LiveMsrs, MsrSnapshot, SecondaryControls, VmxCapabilities};
use vmx_core::{CurrentVmcs, LivePlatform, VmFail, VmcsRegion, VmxRoot, VmxonRegion};

/// The current VMCS on this processor: the loaded VMCS, read and written through the `vmcs`
/// crate's typed access traits.
pub(crate) type Vmcs<'a> = CurrentVmcs<'a, LivePlatform>;

/// VMX root operation on this processor.
pub(crate) type Root = VmxRoot<LivePlatform>;

use crate::guest::{self, abi};
use crate::{print, println};
use mini_hv_logic::guest_state;
use mini_hv_logic::profiles;
use mini_hv_logic::requirements::{self, Verdict as Requirements};
use vcpu::{Config, End, TimeSource, Vcpu, Verdict};
use vmx_caps::arch::{Cr4, Xcr0};

/// How the hypervisor's run ended; `main` prints the matching `mini-hv: RESULT ...` line and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Pass,
    /// Something failed (the reason was printed).
    Fail,
    /// The CPU lacks VMX or a required VMX feature (the missing features were printed).
    Unsupported,
}

/// CPUID.1:ECX.XSAVE.
const CPUID_1_ECX_XSAVE: u32 = 1 << 26;

/// 2 MiB.
const LARGE_PAGE: u64 = 2 << 20;

/// The VPID of the guest (0 is the host's).
const GUEST_VPID: u16 = 1;

/// Frames for the EPT paging structures, from the kernel's frame allocator (which never takes
/// frames back: freed table frames are leaked, and this hypervisor frees none).
pub(crate) struct KernelFrames;

// SAFETY: `crate::mem::alloc_frame` hands out zeroed, 4-KiB aligned, identity-mapped frames that no one
// else uses.
unsafe impl FrameAllocator for KernelFrames {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        crate::mem::alloc_frame().map(HostPhysAddr::new_truncate)
    }

    unsafe fn deallocate_frame(&mut self, _frame: HostPhysAddr) {}
}

/// The identity translation of the host (physical == virtual below 4 GiB).
pub(crate) fn identity(virt: *const u8) -> Option<u64> {
    let addr = virt as u64;
    (addr < 1 << 32).then_some(addr)
}

/// Prints a dump of the current VMCS.
pub(crate) fn dump_vmcs(vmcs: &Vmcs<'_>) {
    match VmcsSnapshot::capture(vmcs) {
        Ok(snapshot) => {
            println!("--- vmcs dump begin ---");
            println!("{}", snapshot.dump());
            println!("--- vmcs dump end ---");
        }
        Err(fail) => println!("mini-hv: cannot dump the VMCS: {fail}"),
    }
}

/// Whether this processor has VMX (CPUID.1:ECX.VMX); prints why not.
pub fn vmx_present() -> bool {
    let present = vmx_caps::cpu_has_vmx();
    if !present {
        println!("mini-hv: VMX not supported by this CPU (CPUID.1:ECX.VMX[bit 5] = 0)");
    }
    present
}

/// Runs the hypervisor with the guest the command line asks for: the test guest of
/// [`crate::guest`], or Linux ([`linux_guest`]).
///
/// With `cpus` (more than one processor started), every application processor runs its own small
/// vCPU while the bootstrap processor runs the test guest ([`ap_vcpu`]).
pub fn run(cpus: Option<&mut crate::smp::Cpus>) -> Outcome {
    if !vmx_present() {
        return Outcome::Unsupported;
    }
    if linux_guest::requested() {
        return linux_guest::run();
    }
    let TestMachine {
        caps,
        negotiated,
        ept_config,
        vpid,
        wbinvd_exiting,
        xsave,
        mem,
        mut root,
    } = match TestMachine::prepare() {
        Ok(machine) => machine,
        Err(outcome) => return outcome,
    };
    // SAFETY: this is processor 0 (the bootstrap processor), in VMX root operation until the
    // `withdraw` below.
    unsafe { smp::declare_in_vmx(0) };
    let ap_config = ap_vcpu::Settings {
        wbinvd_exiting,
        xcr0_supported: xsave.supported,
    };
    let outcome = ap_vcpu::alongside(cpus, &caps, &negotiated.value, ap_config, || {
        run_guest(
            &mut root,
            &caps,
            &negotiated.value,
            mem,
            // PML needs the EPT's dirty flags.
            ept_config.accessed_dirty(extras::wants_accessed_dirty(&negotiated.value, &caps)),
            vpid,
            wbinvd_exiting,
            xsave.supported,
        )
    });
    xsave.restore();
    // SAFETY: processor 0. Its lent VMX operation came back when `ap_vcpu::alongside` returned
    // (the tokens live in its scope), so this does not wait.
    if !unsafe { smp::withdraw(0, 0) } {
        println!("mini-hv: CPU 0's VMX operation is still lent out; staying in VMX operation");
        return Outcome::Fail;
    }
    match leave_vmx(root) {
        Outcome::Pass => outcome,
        failed => failed,
    }
}

/// The host's XSAVE set-up: CR4.OSXSAVE set while a guest runs (so that XSETBV can load the
/// guest's XCR0), and the host's XCR0 to give back afterwards.
#[derive(Clone, Copy)]
pub(crate) struct HostXsave {
    /// XCR0 bits the processor supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX); empty without XSAVE.
    pub supported: Xcr0,
    /// The host's XCR0 (`None` without XSAVE).
    host: Option<Xcr0>,
}

impl HostXsave {
    /// Sets CR4.OSXSAVE where CPUID.1:ECX.XSAVE says XSAVE exists, and reads what XCR0 supports.
    pub fn enable() -> Self {
        if crate::arch::cpuid(1, 0).ecx & CPUID_1_ECX_XSAVE == 0 {
            return Self {
                supported: Xcr0::empty(),
                host: None,
            };
        }
        // SAFETY: XSAVE is supported, so CR4.OSXSAVE may be set; it changes nothing else the host uses.
        unsafe { crate::arch::write_cr4(crate::arch::cr4() | Cr4::OSXSAVE) };
        let d = crate::arch::cpuid(0xd, 0);
        Self {
            supported: Xcr0::from_bits_retain(u64::from(d.eax) | u64::from(d.edx) << 32),
            host: Some(xgetbv0()),
        }
    }

    /// Gives the host its own XCR0 back: a guest's stayed loaded while it ran (the host uses no
    /// XSAVE-managed state beyond x87/SSE).
    pub fn restore(&self) {
        if let Some(host) = self.host {
            // SAFETY: the host's XCR0 was valid when read, with CR4.OSXSAVE set (still set).
            unsafe { xsetbv0(host) };
        }
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
}

impl TestMachine {
    /// Reads and negotiates, allocates guest RAM and enters VMX root operation; the outcome to end
    /// with where that fails (the reason was printed).
    pub fn prepare() -> Result<Self, Outcome> {
        let caps = capabilities().ok_or(Outcome::Fail)?;
        // The requirements as data (`mini_hv_logic::requirements`, also behind `vmxtool caps
        // --example`), plus the optional controls of the extra checks.
        let verdict = Requirements::evaluate(&caps, &extras::prefer(requirements::request()));
        print!("mini-hv: {verdict}");
        if let Err(e) = &verdict.negotiated {
            println!("mini-hv: unsupported: {e}");
        }
        let ept_config = EptConfig::new(caps.ept_vpid, phys_addr_width());
        let negotiated = match verdict.negotiated {
            Ok(n) if verdict.runs() => n,
            _ => return Err(Outcome::Unsupported),
        };
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
        let mem = test_guest_ram().ok_or(Outcome::Fail)?;
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
        })
    }
}

/// Leaves VMX operation (VMXOFF); `Fail` where that fails (printed).
pub(crate) fn leave_vmx(root: Root) -> Outcome {
    match root.disable() {
        Ok(_) => {
            println!("mini-hv: VMX operation left (VMXOFF)");
            Outcome::Pass
        }
        Err((_, fail)) => {
            println!("mini-hv: VMXOFF failed: {fail}");
            Outcome::Fail
        }
    }
}

/// The processor's VMX capabilities, printed with a dump of the raw capability MSRs, restricted
/// to the profile `mini-hv.mask-caps=NAME` names, if any; prints why not.
pub(crate) fn capabilities() -> Option<VmxCapabilities> {
    // SAFETY: ring 0, one processor.
    let mut msrs = unsafe { LiveMsrs::new() };
    let caps = read_caps(&mut msrs)?;
    println!("mini-hv: VMX capabilities:");
    println!("{caps}");
    match MsrSnapshot::capture(&mut msrs) {
        Ok(snapshot) => {
            println!("--- msr dump begin ---");
            print!("{snapshot}");
            println!("--- msr dump end ---");
        }
        Err(e) => println!("mini-hv: cannot capture the capability MSRs: {e}"),
    }
    masked(caps)
}

/// The test guest's RAM, `[0, abi::RAM_SIZE)`, 2 MiB aligned (so that EPT maps it with 2 MiB
/// pages), with a copy of the kernel image at its linked addresses; prints why not.
fn test_guest_ram() -> Option<memory::GuestMemory> {
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

/// Enters VMX root operation on this processor with a fresh VMXON region; prints why not.
fn enter_vmx_here(caps: &VmxCapabilities) -> Option<Root> {
    let Some(vmxon_frame) = crate::mem::alloc_frame() else {
        println!("mini-hv: out of memory for the VMXON region");
        return None;
    };
    // SAFETY: ring 0 on the only processor.
    let platform = unsafe { LivePlatform::new() };
    // SAFETY: a fresh frame (identity-mapped) used for nothing else, for the rest of the run; `caps`
    // were read on this processor; nothing else uses VMX.
    unsafe { enter_vmx(platform, caps, vmxon_frame) }
}

/// `caps` restricted to the profile `mini-hv.mask-caps=NAME` names, if any: the negotiation then
/// sees what platform NAME would offer (as far as this processor offers it too), e.g. Hyper-V's
/// nested VMX on top of Bochs'. Prints the restricted capabilities, or why the profile cannot be
/// used (`None`).
fn masked(caps: VmxCapabilities) -> Option<VmxCapabilities> {
    let Some(name) = requested_mask() else {
        return Some(caps);
    };
    match profiles::profile(name) {
        Ok(profile) => {
            let masked = profiles::restrict(&caps, &profile);
            println!("mini-hv: capabilities restricted to the {name} profile:");
            println!("{masked}");
            Some(masked)
        }
        Err(e) => {
            println!("mini-hv: mini-hv.mask-caps={name}: {e}");
            None
        }
    }
}

/// The VMX capabilities (SDM Vol. 3D, Appendix A) of this processor; prints why not.
fn read_caps(msrs: &mut LiveMsrs) -> Option<VmxCapabilities> {
    match VmxCapabilities::read(msrs) {
        Ok(caps) => Some(caps),
        Err(e) => {
            println!("mini-hv: cannot read the VMX capability MSRs: {e}");
            None
        }
    }
}

/// Enters VMX root operation (VMXON) with the VMXON region in `vmxon_frame`; prints why not.
///
/// # Safety
/// `vmxon_frame` is a fresh identity-mapped frame used for nothing else for the rest of the run;
/// `caps` were read on this processor; nothing else uses VMX.
unsafe fn enter_vmx(
    platform: LivePlatform,
    caps: &VmxCapabilities,
    vmxon_frame: u64,
) -> Option<Root> {
    // SAFETY: guaranteed by the caller (a fresh frame, the caller's alone).
    let region = match unsafe { VmxonRegion::from_frame(vmxon_frame as *mut u8) } {
        Ok(region) => region,
        Err(e) => {
            println!("mini-hv: cannot use the VMXON frame: {e}");
            return None;
        }
    };
    // SAFETY: `caps` were read on this processor (caller); `identity` is the host's true
    // translation; nothing else uses VMX (caller).
    match unsafe { VmxRoot::enable(platform, caps, region, &identity) } {
        Ok(root) => Some(root),
        Err((_, e)) => {
            println!("mini-hv: cannot enter VMX operation: {e}");
            None
        }
    }
}

/// A VMCS region in `frame`, with this processor's revision identifier; prints why not.
///
/// # Safety
/// `frame` is a fresh identity-mapped frame, used only as this VMCS for the rest of the run.
unsafe fn vmcs_region(frame: u64, caps: &VmxCapabilities) -> Option<&'static mut VmcsRegion> {
    // SAFETY: guaranteed by the caller.
    let region = match unsafe { VmcsRegion::from_frame(frame as *mut u8) } {
        Ok(region) => region,
        Err(e) => {
            println!("mini-hv: cannot use the VMCS frame: {e}");
            return None;
        }
    };
    if let Err(e) = region.init(caps.basic.revision_id(), false) {
        println!("mini-hv: cannot prepare the VMCS region: {e}");
        return None;
    }
    Some(region)
}

/// VMPTRLD of `region`: the current VMCS; prints why not.
fn load_vmcs<'a>(region: &'static mut VmcsRegion, root: &'a mut Root) -> Option<Vmcs<'a>> {
    match region.load(root, &identity) {
        Ok(active) => Some(active),
        Err(e) => {
            println!("mini-hv: cannot load the VMCS: {e}");
            None
        }
    }
}

/// XCR0 (requires CR4.OSXSAVE).
fn xgetbv0() -> Xcr0 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller set CR4.OSXSAVE; XGETBV of XCR0 has no side effect.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                         options(nomem, nostack, preserves_flags))
    };
    Xcr0::from_bits_retain(u64::from(hi) << 32 | u64::from(lo))
}

/// Loads XCR0.
///
/// # Safety
/// CR4.OSXSAVE is set and `value` is a valid XCR0 for this processor.
unsafe fn xsetbv0(value: Xcr0) {
    let value = value.bits();
    // SAFETY: guaranteed by the caller.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
                         options(nomem, nostack, preserves_flags))
    };
}

/// XSETBV emulation: loads XCR0 with the guest's EDX:EAX when [`guest_state::xsetbv_value`]
/// accepts it; `false` means #GP.
fn emulate_xsetbv(regs: &vmx_core::GuestRegisters, xcr0_supported: Xcr0) -> bool {
    let Some(value) = guest_state::xsetbv_value(regs, xcr0_supported) else {
        return false;
    };
    // SAFETY: a valid XCR0 for this processor (checked by `xsetbv_value`; without XSAVE
    // `xcr0_supported` is empty and nothing is valid); both guests' set-up set the host's
    // CR4.OSXSAVE when XSAVE exists; the host uses no state component beyond x87/SSE, which stay
    // enabled.
    unsafe { xsetbv0(value) };
    true
}

/// INVD and WBINVD emulation: both write back (INVD would discard the host's dirty cache lines
/// too).
fn emulate_wbinvd() {
    // SAFETY: WBINVD only writes back and invalidates caches.
    unsafe { core::arch::asm!("wbinvd", options(nomem, nostack)) };
}

/// The CR0/CR4 ownership policy of this processor ([`guest_state::CrPolicy`]), for a guest that
/// is offered no VMX.
pub(crate) fn cr_policy(caps: &VmxCapabilities) -> guest_state::CrPolicy {
    guest_state::CrPolicy {
        cr0_fixed: caps.cr0_fixed,
        cr4_fixed: caps.cr4_fixed,
        maxphyaddr: phys_addr_width(),
        vmx_exposed: false,
    }
}

/// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\]).
pub(crate) fn phys_addr_width() -> u8 {
    if crate::arch::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        crate::arch::cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    }
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
) -> Outcome {
    let Some(mut ept) = guest_ram_ept(root, ept_config, &mem) else {
        return Outcome::Fail;
    };
    let Some((msr_bitmap, io_bitmaps)) = test_guest_bitmaps() else {
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
    };
    let ram_base = mem.host_base();
    let mut vcpu = Vcpu::new(mem, config);
    let Some(mut active) = load_vmcs(region, root) else {
        return Outcome::Fail;
    };
    if let Some(shadowing) = nested::requested() {
        let msr_bitmap: &'static MsrBitmap = msr_bitmap;
        let io_bitmaps: &'static IoBitmaps = io_bitmaps;
        match nested::Nested::new(caps, active.phys_addr(), msr_bitmap, io_bitmaps, shadowing) {
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
    .and_then(|()| Ok(vcpu.write_reset_state(&mut active, guest::entry16())?))
    .and_then(|()| write_guest_msr_areas(&mut active, caps))
    .map(|area| vcpu.guest_msrs = Some(area))
    .and_then(|()| extras::Extras::setup(&mut active, controls, caps, &mut ept, ram_base))
    .map(|extras| vcpu.extras = Some(extras))
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
    println!(
        "mini-hv: launching the guest in real mode at CS.base {:#x} (VPID {})",
        guest::entry16(),
        if vpid { "on" } else { "off" }
    );
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
    let outcome = match judge(&vcpu, caps, end, wbinvd_exiting, !xcr0_supported.is_empty()) {
        Outcome::Pass if !cache_held => Outcome::Fail,
        outcome => outcome,
    };
    if let Err((_, fail)) = active.clear() {
        println!("mini-hv: VMCLEAR failed: {fail}");
        return Outcome::Fail;
    }
    outcome
}

/// The EPT of guest RAM `mem` with `config`: guest-physical `[0, mem.size())` mapped
/// read/write/execute and write-back to its host frames, nothing else; prints it, or why not.
pub(crate) fn guest_ram_ept(
    root: &Root,
    config: EptConfig,
    mem: &memory::GuestMemory,
) -> Option<EptMapper<OffsetPhysToVirt, KernelFrames>> {
    // SAFETY: the host identity-maps every frame the kernel allocator hands out.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let mut ept = match EptMapper::new(config, p2v, KernelFrames) {
        Ok(ept) => ept,
        Err(e) => {
            println!("mini-hv: cannot create the EPT: {e}");
            return None;
        }
    };
    let ram = LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack);
    if let Err(e) = ept_map(&mut ept, root, 0, mem.host_base(), mem.size(), ram) {
        println!("mini-hv: cannot map guest RAM in the EPT: {e}");
        return None;
    }
    println!(
        "mini-hv: EPT {:#x}: guest-physical 0..{:#x} -> host {:#x} ({} table frames)",
        ept.eptp().bits(),
        mem.size(),
        mem.host_base(),
        ept.table_frames()
    );
    Some(ept)
}

/// Maps guest-physical `[gpa, gpa + len)` to host-physical `[hpa, hpa + len)` in `ept` with
/// `attributes`, and invalidates what this processor cached of the EPT (INVEPT).
pub(crate) fn ept_map<A: FrameAllocator>(
    ept: &mut EptMapper<OffsetPhysToVirt, A>,
    root: &Root,
    gpa: u64,
    hpa: u64,
    len: u64,
    attributes: LeafAttributes,
) -> Result<(), SetupError> {
    let flush = ept.map(
        GuestPhysAddr::new_truncate(gpa),
        HostPhysAddr::new_truncate(hpa),
        len,
        attributes,
    )?;
    // SAFETY: each EPT of this hypervisor is used by the one processor that builds it.
    let mut this_cpu = unsafe { ThisCpuOnly::new(root) };
    ept.flush(flush, &mut this_cpu)?;
    Ok(())
}

/// The test guest's bitmaps: the MSR bitmap intercepts every MSR but the pass-through ones
/// ([`vcpu::PASSTHROUGH_READ`], [`vcpu::PASSTHROUGH_WRITE`]), the I/O bitmaps every port; prints
/// why not.
pub(crate) fn test_guest_bitmaps() -> Option<(&'static mut MsrBitmap, &'static mut IoBitmaps)> {
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

/// A VMCS region in a fresh frame, with this processor's revision identifier; prints why not.
pub(crate) fn new_vmcs_region(caps: &VmxCapabilities) -> Option<&'static mut VmcsRegion> {
    let Some(frame) = crate::mem::alloc_frame() else {
        println!("mini-hv: out of memory for the VMCS");
        return None;
    };
    // SAFETY: a fresh frame (identity-mapped), used only as this VMCS for the rest of the run.
    unsafe { vmcs_region(frame, caps) }
}

/// The MSR bitmap in `msr_frame` and the I/O bitmaps in `io_frames` (two contiguous frames),
/// zeroed (nothing intercepted); prints why not.
///
/// # Safety
/// The frames are fresh and identity-mapped, used only as these bitmaps for the rest of the run.
unsafe fn bitmaps_in(
    msr_frame: u64,
    io_frames: u64,
) -> Option<(&'static mut MsrBitmap, &'static mut IoBitmaps)> {
    // SAFETY: guaranteed by the caller (one frame for the 4-KiB MSR bitmap, two for the 8-KiB I/O
    // bitmaps).
    let made = unsafe {
        MsrBitmap::from_frame(msr_frame as *mut u8)
            .and_then(|msr| Ok((msr, IoBitmaps::from_frame(io_frames as *mut u8)?)))
    };
    made.map_err(|e| println!("mini-hv: cannot place the bitmaps: {e}"))
        .ok()
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

/// Why writing the VMCS failed: a VMWRITE, or a structure the VMCS points to.
#[derive(Debug)]
pub(crate) enum SetupError {
    /// A VMWRITE failed.
    Vmcs(VmFail),
    /// A structure's address was refused, or its VMWRITE failed.
    Structure(StructureError),
    /// An MSR area was refused.
    MsrArea(MsrAreaError),
    /// No frame for a structure.
    OutOfMemory,
    /// The control fields were refused or their VMWRITE failed.
    Controls(vmcs::ControlsError),
    /// The guest state was refused or its VMWRITE failed.
    GuestState(vmcs::GuestStateError),
    /// An EPT change was refused.
    Ept(ept::MapError),
    /// An EPT flush failed.
    Flush(ept::FlushError<vmx_core::InvalidationError>),
}

impl From<vmcs::GuestStateError> for SetupError {
    fn from(e: vmcs::GuestStateError) -> Self {
        SetupError::GuestState(e)
    }
}

impl From<vmcs::ControlsError> for SetupError {
    fn from(e: vmcs::ControlsError) -> Self {
        SetupError::Controls(e)
    }
}

impl From<ept::MapError> for SetupError {
    fn from(e: ept::MapError) -> Self {
        SetupError::Ept(e)
    }
}

impl From<ept::FlushError<vmx_core::InvalidationError>> for SetupError {
    fn from(e: ept::FlushError<vmx_core::InvalidationError>) -> Self {
        SetupError::Flush(e)
    }
}

impl From<MsrAreaError> for SetupError {
    fn from(e: MsrAreaError) -> Self {
        SetupError::MsrArea(e)
    }
}

impl From<VmFail> for SetupError {
    fn from(fail: VmFail) -> Self {
        SetupError::Vmcs(fail)
    }
}

impl From<StructureError> for SetupError {
    fn from(e: StructureError) -> Self {
        SetupError::Structure(e)
    }
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Vmcs(fail) => fail.fmt(f),
            SetupError::Structure(e) => e.fmt(f),
            SetupError::MsrArea(e) => e.fmt(f),
            SetupError::Ept(e) => e.fmt(f),
            SetupError::Flush(e) => e.fmt(f),
            SetupError::OutOfMemory => {
                f.write_str("out of memory for a structure the VMCS points to")
            }
            SetupError::Controls(e) => e.fmt(f),
            SetupError::GuestState(e) => e.fmt(f),
        }
    }
}

/// Runs the `vmcs` crate's software VM-entry checker on the current VMCS (before the first
/// VMLAUNCH, and again after a VM entry failed) for `instruction`, prints every violated rule and
/// returns the predicted outcome (`None` if the checker could not read the VMCS).
fn software_check(
    vmcs: &Vmcs<'_>,
    caps: &VmxCapabilities,
    instruction: check::EntryInstruction,
    vmcs_phys: u64,
    vmxon_phys: u64,
) -> Option<check::Outcome> {
    let launch = check::LaunchContext::new(instruction, vmcs_phys, vmxon_phys);
    let checker = check::Checker::new(caps, check::CpuFacts::new(phys_addr_width()), launch);
    let report: check::Report<16> = match checker.report(vmcs, &mut check::NoMemory) {
        Ok(report) => report,
        Err(e) => {
            println!("mini-hv: the software VM-entry checker failed: {e}");
            return None;
        }
    };
    for violation in report.violations() {
        println!("mini-hv: software VM-entry check: {violation}");
    }
    let outcome = report.outcome();
    println!("mini-hv: software VM-entry check predicts: {outcome}");
    Some(outcome)
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

/// The profile named by `mini-hv.mask-caps=NAME` on the kernel command line.
fn requested_mask() -> Option<&'static str> {
    crate::boot::cmdline()
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix("mini-hv.mask-caps="))
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

/// Controls, host state and the addresses of the bitmaps and the EPT.
pub(crate) fn write_vmcs(
    vmcs: &mut Vmcs<'_>,
    controls: &vmx_caps::ControlSet,
    eptp: ept::EptPointer,
    msr_bitmap: &MsrBitmap,
    io_bitmaps: &IoBitmaps,
    vpid: bool,
) -> Result<(), SetupError> {
    vmcs.write_controls(controls)?;
    vmcs.write(fields::EXCEPTION_BITMAP, vmcs::ExceptionBitmap::empty())?;
    vmcs.write(fields::PAGE_FAULT_ERROR_CODE_MASK, 0)?;
    vmcs.write(fields::PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
    vmcs.write(fields::CR3_TARGET_COUNT, 0)?;
    vmcs.write(fields::VM_EXIT_MSR_STORE_COUNT, 0)?;
    vmcs.write(fields::VM_EXIT_MSR_LOAD_COUNT, 0)?;
    vmcs.write(fields::VM_ENTRY_MSR_LOAD_COUNT, 0)?;
    vmcs.write(
        fields::VM_ENTRY_INTERRUPTION_INFORMATION,
        vmcs::InterruptionInfo::from_bits(0),
    )?;
    msr_bitmap.write_to(vmcs, &identity)?;
    io_bitmaps.write_to(vmcs, &identity)?;
    vmcs.write(fields::EPT_POINTER, eptp)?;
    if vpid {
        vmcs.write(fields::VIRTUAL_PROCESSOR_IDENTIFIER, GUEST_VPID)?;
    }

    // SAFETY: CPL 0 in 64-bit mode; the GDT (with the TSS descriptor) is identity-mapped and
    // readable; IA32_PAT exists when "load IA32_PAT" was negotiated (the capability says so).
    let host = unsafe { vmcs::HostState::capture(controls.exit) };
    host.write(vmcs)?;
    Ok(())
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
    }
    if ok { Outcome::Pass } else { Outcome::Fail }
}
