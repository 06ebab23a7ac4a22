//! The hypervisor: one vCPU core with two guest personalities.
//!
//! - Shared set-up, here: the VMX capabilities ([`capabilities`], restricted to a profile with
//!   `mini-hv.mask-caps=NAME`), the host's XSAVE set-up ([`HostXsave`]), VMX operation
//!   ([`enter_vmx`], [`leave_vmx`]), the VMCS region, the bitmaps' frames, EPT map-and-flush
//!   ([`ept_map`]), the CR0/CR4 policy ([`cr_policy`]), the control fields and host state every
//!   VMCS starts from ([`write_vmcs`]), the software VM-entry check ([`software_check`]).
//! - The vCPU core, [`dispatch`]: the run loop and the dispatch of the exits both guests meet the
//!   same way (CPUID, MSRs, I/O, HLT, MOV to CR0/CR4, XSETBV, INVD/WBINVD, MONITOR/MWAIT in
//!   [`monitor`], the VMX instructions), asking the guest's personality (`dispatch::Guest`) for
//!   its policy.
//! - The test guest ([`crate::guest`], the default), in [`test_guest`]: its machine, run and
//!   judgement, its personality in [`test_guest::vcpu`] (hypercalls, the devices of
//!   `test_guest::devices`, the timers of [`lapic`], the extra checks of [`test_guest::extras`],
//!   nested VMX in [`nested`], the round-trip probe of [`probe`]); with more processors,
//!   [`ap_vcpu`] and [`smp`].
//! - Linux ([`linux_guest`], `mini-hv.guest=linux`): its machine and personality in one module.
//!
//! The differential test of the VM-entry checker is a mode of its own ([`crate::entry_diff`]).

mod ap_vcpu;
mod dispatch;
mod lapic;
mod linux_guest;
mod memory;
mod monitor;
mod nested;
mod probe;
pub mod smp;
pub(crate) mod test_guest;

pub(crate) use test_guest::{extras, vcpu};

use ept::{
    EptConfig, EptMapper, FrameAllocator, GuestPhysAddr, HostPhysAddr, LeafAttributes, MemoryType,
    OffsetPhysToVirt, Permissions, ThisCpuOnly,
};
use vmcs::structures::{InFrame, IoBitmaps, MsrAreaError, MsrBitmap, StructureError};
use vmcs::{VmcsSnapshot, VmcsWrite, check, fields};
use vmx_caps::{LiveMsrs, MsrSnapshot, VmxCapabilities};
use vmx_core::{CurrentVmcs, LivePlatform, VmFail, VmcsRegion, VmxRoot, VmxonRegion};

/// The current VMCS on this processor: the loaded VMCS, read and written through the `vmcs`
/// crate's typed access traits.
pub(crate) type Vmcs<'a> = CurrentVmcs<'a, LivePlatform>;

/// VMX root operation on this processor.
pub(crate) type Root = VmxRoot<LivePlatform>;

use crate::{print, println};
use mini_hv_logic::guest_state;
use mini_hv_logic::profiles;
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

/// The 32-bit protected-mode entry state of a loaded kernel ([`vmcs::GuestState::protected_mode_32`]:
/// flat 4 GiB segments, paging off, interrupts off, at `entry`) with the loader's code and data
/// selectors (every data segment register gets `data`) and, where given, TR's.
pub(crate) fn flat_protected_mode(
    entry: u64,
    code: u16,
    data: u16,
    tr: Option<u16>,
) -> vmcs::GuestState {
    let flat = vmcs::GuestState::protected_mode_32(entry);
    let data = vmcs::Segment {
        selector: data,
        ..flat.ds
    };
    vmcs::GuestState {
        cs: vmcs::Segment {
            selector: code,
            ..flat.cs
        },
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: vmcs::Segment {
            selector: tr.unwrap_or(flat.tr.selector),
            ..flat.tr
        },
        ..flat
    }
}

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
/// [`crate::guest`] ([`test_guest`]), or Linux ([`linux_guest`]).
///
/// With `cpus` (more than one processor started), every application processor runs its own small
/// vCPU while the bootstrap processor runs the test guest ([`ap_vcpu`]).
pub fn run(cpus: Option<&mut crate::smp::Cpus>) -> Outcome {
    if !vmx_present() {
        return Outcome::Unsupported;
    }
    if linux_guest::requested() {
        return linux_guest::run(cpus);
    }
    test_guest::run(cpus)
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

/// EPT table frames from a range of `frames` frames at `start` allocated up front (e.g. so that they
/// lie below the Linux guest's `hv_end`, or before a job goes to another processor): handed out
/// once each, never given back.
pub(crate) struct FramePool {
    next: u64,
    end: u64,
}

impl FramePool {
    /// The frames `[start, start + frames * 4 KiB)`.
    ///
    /// # Safety
    /// The range is zeroed, 4-KiB aligned, identity-mapped host memory allocated for this pool alone.
    pub(crate) unsafe fn new(start: u64, frames: usize) -> Self {
        Self {
            next: start,
            end: start + frames as u64 * 4096,
        }
    }
}

// SAFETY: `new`'s contract: the range is the pool's alone; each frame is handed out once.
unsafe impl FrameAllocator for FramePool {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        (self.next < self.end).then(|| {
            let frame = self.next;
            self.next += 4096;
            HostPhysAddr::new_truncate(frame)
        })
    }

    unsafe fn deallocate_frame(&mut self, _frame: HostPhysAddr) {}
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

/// The profile named by `mini-hv.mask-caps=NAME` on the kernel command line.
fn requested_mask() -> Option<&'static str> {
    crate::boot::cmdline()
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix("mini-hv.mask-caps="))
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
