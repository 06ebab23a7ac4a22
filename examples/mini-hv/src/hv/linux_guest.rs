//! The Linux guest (`mini-hv.guest=linux` on the hypervisor's command line): an unmodified Linux
//! kernel, loaded per the x86 boot protocol ([`mini_hv_logic::boot_protocol`]) by [`loader`], run with its devices passed through.
//!
//! - EPT identity-maps (guest-physical == host-physical) the first MiB (but any Multiboot structure in it)
//!   and everything from `hv_end` to 4 GiB: guest RAM, the ACPI tables, the PCI hole with the IOAPIC,
//!   HPET and LAPIC. `[1 MiB, hv_end)` — the hypervisor's image, stack, modules, VMCS, bitmaps and EPT
//!   tables — is never mapped, and the guest's e820 map marks it reserved: a guest touch is a reported
//!   EPT violation.
//! - I/O bitmaps open but for the ACPI PM1a control port (power-off), the keyboard controller's command
//!   port and 0xCF9 (resets); MSR bitmap open but for IA32_FEATURE_CONTROL and the VMX capability MSRs.
//!   No external-interrupt exiting: interrupts reach the guest directly. No HLT exiting where it may be 0:
//!   HLT halts the guest in place.
//! - Controls the processor forces to 1 (`mini-hv.mask-caps=hyperv` shows Hyper-V's): HLT exiting (the
//!   guest waits in the HLT activity state), MONITOR and MWAIT exiting (completed as in
//!   [`super::monitor`]; CPUID.01H:ECX.MONITOR is then hidden, so that Linux idles with HLT), "load debug
//!   controls" (with "save debug controls", so the guest's DR7 and IA32_DEBUGCTL survive VM exits).
//! - Handled exits: CPUID (hypervisor bit, VMX hidden, leaf 0x40000000), the intercepted MSRs and ports,
//!   CR0/CR4 writes to host-owned bits, XSETBV, INVD/WBINVD, HLT, MONITOR, MWAIT; INIT, SIPI, triple fault,
//!   EPT violations and anything else end the run with a report. The guest's ACPI power-off is its
//!   "pass", a reset its "fail".

use core::arch::asm;
use core::fmt;
use core::ops::ControlFlow;

use ept::{
    EptConfig, EptMapper, HostPhysAddr, LeafAttributes, MemoryType, OffsetPhysToVirt, Permissions,
};
use exits::{ExitReason, IoDirection, IoQualification, VmExit};
use vmcs::structures::{IoBitmaps, MsrAccess, MsrBitmap};
use vmcs::{ActivityState, GuestState, Segment, VmcsWrite, fields};
use vmx_caps::{LiveMsrs, PrimaryControls, SecondaryControls, VmxCapabilities};
use vmx_core::{GuestRegisters, LivePlatform, VmFail};

use super::Vmcs;
use super::dispatch::{self, Flow, Guest, Stopped};
use super::memory::GuestMemory;
use super::monitor::{self, Completion};
use super::probe;

use super::Outcome;
use crate::println;
use mini_hv_logic::guest_state::{self, CrPolicy};
use mini_hv_logic::linux_requirements;
use vmx_caps::arch::{Cr4, Xcr0};
use vmx_caps::msr::{IA32_FEATURE_CONTROL, IA32_VMX_BASIC, IA32_VMX_VMFUNC};

#[path = "../linux/loader.rs"]
mod loader;

const MIB: u64 = 1 << 20;
const LARGE_PAGE: u64 = 2 * MIB;
/// Frames reserved for the EPT paging structures (an identity map of 4 GiB with large pages needs
/// about a dozen).
const EPT_POOL_FRAMES: usize = 64;
/// The most guest-physical ranges the EPT maps (the first MiB around its holes, RAM, the rest).
const MAX_RANGES: usize = 80;

/// IA32_VMX_BASIC through IA32_VMX_VMFUNC.
const VMX_CAPABILITY_MSRS: core::ops::RangeInclusive<u32> = IA32_VMX_BASIC..=IA32_VMX_VMFUNC;
/// IA32_FEATURE_CONTROL as the guest reads it: locked, VMX off.
const FEATURE_CONTROL_LOCKED: u64 = 1;
/// PAT after reset.
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// The hypervisor's CPUID signature (leaf 0x40000000, EBX:ECX:EDX).
const SIGNATURE: &[u8; 12] = b"MiniHVLinux!";
/// CPUID.01H:ECX.MONITOR\[bit 3\].
const CPUID_1_ECX_MONITOR: u32 = 1 << 3;
/// PM1x_CNT.SLP_EN.
const SLP_EN: u16 = 1 << 13;
/// The keyboard controller's command port (command 0xFE pulses the reset line).
const KBC_COMMAND: u16 = 0x64;
/// The PIIX reset control register (bit 2 resets the CPU).
const RESET_CONTROL: u16 = 0xcf9;
/// PM1a control port Bochs' PIIX4 uses when the FADT cannot be read.
const BOCHS_PM1A_CNT: u16 = 0xb004;

/// Whether the command line asks for the Linux guest.
pub fn requested() -> bool {
    crate::boot::cmdline()
        .split_ascii_whitespace()
        .any(|w| w == "mini-hv.guest=linux")
}

/// Frames for the EPT from a pool allocated up front (so that they lie below `hv_end`).
struct Pool {
    next: u64,
    end: u64,
}

// SAFETY: the pool's frames were allocated (zeroed, identity-mapped) for the EPT alone; each is handed out
// once.
unsafe impl ept::FrameAllocator for Pool {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        (self.next < self.end).then(|| {
            let f = self.next;
            self.next += 4096;
            HostPhysAddr::new_truncate(f)
        })
    }

    unsafe fn deallocate_frame(&mut self, _frame: HostPhysAddr) {}
}

/// How the guest ended.
enum End {
    PowerOff,
    Reset(&'static str),
    Stopped,
}

struct Linux {
    regs: GuestRegisters,
    /// The CR0/CR4 ownership policy.
    cr: CrPolicy,
    xcr0_supported: Xcr0,
    pm1a: u16,
    /// Guest RAM above the hypervisor, `[hv_end, ram_top)`: where MOV to CR0/CR4 may read PDPTEs.
    ram: (u64, u64),
    /// The guest's memory as the hypervisor reads it (paging structures, instruction bytes):
    /// `[0, ram_top)` identity-mapped but the hypervisor's `[1 MiB, hv_end)`.
    mem: GuestMemory,
    /// The guest-physical ranges EPT maps, `[start, end)`.
    mapped: [(u64, u64); MAX_RANGES],
    mapped_count: usize,
    proc2: SecondaryControls,
    /// "MWAIT exiting" is 1: CPUID.01H:ECX.MONITOR is hidden, so that Linux idles with HLT (a
    /// wait in the HLT activity state) rather than with an MWAIT that completes as a NOP.
    hide_monitor: bool,
    exit_counts: [u64; 96],
    total: u64,
    /// TSC ticks the host spent between each VM exit and the next VM entry (the trampoline
    /// excepted), summed over the run, the two RDTSCs' own cost left out.
    host_ticks: u64,
}

/// Runs Linux as the guest.
pub fn run() -> Outcome {
    println!("mini-hv: guest: Linux (boot protocol, 32-bit entry, devices passed through)");
    // SAFETY: ring 0, one processor.
    let mut msrs = unsafe { LiveMsrs::new() };
    let Some(caps) = super::read_caps(&mut msrs).and_then(super::masked) else {
        return Outcome::Fail;
    };
    let linux = match linux_requirements::negotiate(&caps) {
        Ok(linux) => linux,
        Err(e) => {
            println!("mini-hv: unsupported: {e}");
            return Outcome::Unsupported;
        }
    };
    // Controls the processor forces to 1 (Hyper-V: HLT, MWAIT and MONITOR exiting) are handled:
    // HLT enters the HLT activity state, MONITOR and MWAIT complete as in `super::monitor`.
    if linux.hlt_exiting {
        println!("mini-hv: HLT exiting is forced: HLT is completed in the HLT activity state");
    }
    if linux.monitor_mwait_exiting {
        println!(
            "mini-hv: MONITOR/MWAIT exiting is forced: MONITOR completes as a no-op, MWAIT as a NOP"
        );
    }
    for dropped in linux.negotiated.drops() {
        println!("mini-hv: optional control dropped: {dropped}");
    }
    let controls = linux.negotiated.value;
    let pat = linux.pat;

    let xsave = super::HostXsave::enable();

    // Everything the hypervisor needs, allocated before hv_end is fixed.
    let (Some(vmxon_frame), Some(vmcs_frame), Some(msr_frame), Some(io_frames), Some(pool)) = (
        crate::mem::alloc_frame(),
        crate::mem::alloc_frame(),
        crate::mem::alloc_frame(),
        crate::mem::alloc_frames(2),
        crate::mem::alloc_frames(EPT_POOL_FRAMES),
    ) else {
        println!("mini-hv: out of memory for the VMCS, bitmaps and EPT");
        return Outcome::Fail;
    };
    let mut high = pool + EPT_POOL_FRAMES as u64 * 4096;
    for a in [vmxon_frame, vmcs_frame, msr_frame, io_frames + 4096] {
        high = high.max(a + 4096);
    }
    let mut holes = [(0u64, 0u64); 72];
    let mut n_holes = 0;
    crate::boot::reserved_ranges(|s, e| {
        high = high.max(e);
        if s < MIB && n_holes < holes.len() - 1 {
            holes[n_holes] = (s, e.min(MIB));
            n_holes += 1;
        }
    });
    let hv_end = high.next_multiple_of(LARGE_PAGE);
    holes[n_holes] = (MIB, hv_end);
    n_holes += 1;
    let holes = &holes[..n_holes];
    println!(
        "mini-hv: hypervisor memory 0x100000..{hv_end:#x} (reserved in the guest's e820 map, unmapped)"
    );

    let loaded = match loader::load(hv_end, holes) {
        Ok(l) => l,
        Err(e) => {
            println!("mini-hv: cannot load Linux: {e}");
            return Outcome::Fail;
        }
    };
    println!(
        "mini-hv: Linux boot protocol {}.{:02}, {}relocatable; kernel {:#x} ({} KiB, init_size {} MiB), \
         initrd {:#x} ({} KiB), zero page {:#x}",
        loaded.protocol >> 8,
        loaded.protocol & 0xff,
        if loaded.relocatable { "" } else { "not " },
        loaded.entry32,
        loaded.kernel_size / 1024,
        loaded.init_size.div_ceil(MIB),
        loaded.initrd,
        loaded.initrd_size / 1024,
        loaded.boot_params
    );
    println!("mini-hv: Linux command line: {}", loaded.cmdline);
    println!("mini-hv: guest e820 map:");
    let mut ram_top = 0;
    for e in loaded.e820.entries() {
        println!(
            "mini-hv:   {:#014x}..{:#014x} type {}",
            e.addr,
            e.addr + e.size,
            e.kind
        );
        if e.kind == mini_hv_logic::boot_protocol::E820_RAM && e.addr + e.size <= 1 << 32 {
            ram_top = ram_top.max(e.addr + e.size);
        }
    }
    let (pm1a, source) = match loader::pm1a_control_port() {
        Some(port) => (port, "from the FADT"),
        None => (BOCHS_PM1A_CNT, "no FADT found: the PIIX4 port Bochs uses"),
    };
    println!("mini-hv: ACPI PM1a control port {pm1a:#x} ({source}) trapped (power-off)");

    // Bitmaps: MSRs all open but the VMX ones; ports all open but power-off and reset.
    // SAFETY: fresh identity-mapped frames, used only as these bitmaps for the rest of the run.
    let Some((msr_bitmap, io_bitmaps)) = (unsafe { super::bitmaps_in(msr_frame, io_frames) })
    else {
        return Outcome::Fail;
    };
    for msr in core::iter::once(IA32_FEATURE_CONTROL).chain(VMX_CAPABILITY_MSRS) {
        let trapped = msr_bitmap
            .intercept(msr, MsrAccess::Read)
            .and_then(|()| msr_bitmap.intercept(msr, MsrAccess::Write));
        if let Err(e) = trapped {
            println!("mini-hv: cannot trap MSR {msr:#x}: {e}");
            return Outcome::Fail;
        }
    }
    for port in [pm1a, pm1a + 1, KBC_COMMAND, RESET_CONTROL] {
        io_bitmaps.intercept(port);
    }

    // EPT: identity map of [0, 1 MiB) but the holes, and of [hv_end, 4 GiB).
    let pool = Pool {
        next: pool,
        end: pool + EPT_POOL_FRAMES as u64 * 4096,
    };
    let config = EptConfig::new(caps.ept_vpid, super::phys_addr_width());
    // SAFETY: the host identity-maps every frame of the pool.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let mut ept = match EptMapper::new(config, p2v, pool) {
        Ok(ept) => ept,
        Err(e) => {
            println!("mini-hv: cannot create the EPT: {e}");
            return Outcome::Fail;
        }
    };
    let ram_top = ram_top.next_multiple_of(LARGE_PAGE);
    let mut ranges = [(0u64, 0u64, MemoryType::WriteBack); MAX_RANGES];
    let mut count = 0;
    let mut at = 0;
    let mut low_holes = [(0u64, 0u64); 72];
    low_holes[..holes.len() - 1].copy_from_slice(&holes[..holes.len() - 1]);
    let low_holes = &mut low_holes[..holes.len() - 1];
    low_holes.sort_unstable();
    for &(s, e) in low_holes.iter() {
        if s > at {
            ranges[count] = (at, s, MemoryType::WriteBack);
            count += 1;
        }
        at = at.max(e);
    }
    if at < MIB {
        ranges[count] = (at, MIB, MemoryType::WriteBack);
        count += 1;
    }
    ranges[count] = (hv_end, ram_top, MemoryType::WriteBack);
    ranges[count + 1] = (ram_top, 1 << 32, MemoryType::Uncacheable);
    count += 2;
    // SAFETY: ring 0 on the only processor.
    let platform = unsafe { LivePlatform::new() };
    // SAFETY: a fresh frame (identity-mapped) used for nothing else, for the rest of the run; `caps`
    // were read on this processor; nothing else uses VMX.
    let Some(mut root) = (unsafe { super::enter_vmx(platform, &caps, vmxon_frame) }) else {
        return Outcome::Fail;
    };
    for &(s, e, memory_type) in &ranges[..count] {
        if e <= s {
            continue;
        }
        let attributes = LeafAttributes::new(Permissions::RWX, memory_type);
        if let Err(err) = super::ept_map(&mut ept, &root, s, s, e - s, attributes) {
            println!("mini-hv: cannot map {s:#x}..{e:#x} in the EPT: {err}");
            let _ = root.disable();
            return Outcome::Fail;
        }
        println!("mini-hv: EPT identity map {s:#x}..{e:#x} ({memory_type:?})");
    }
    println!("mini-hv: EPT {} table frames", ept.table_frames());

    let mut mapped = [(0u64, 0u64); MAX_RANGES];
    for (slot, &(s, e, _)) in mapped.iter_mut().zip(&ranges[..count]) {
        *slot = (s, e);
    }
    let mut linux = Linux {
        // SAFETY: EPT identity-maps guest RAM; the hole is the hypervisor's memory, never read.
        mem: unsafe { GuestMemory::identity_with_hole(ram_top, MIB..hv_end) },
        mapped,
        mapped_count: count,
        regs: GuestRegisters::new(),
        cr: super::cr_policy(&caps),
        xcr0_supported: xsave.supported,
        pm1a,
        ram: (hv_end, ram_top),
        proc2: controls.proc2,
        hide_monitor: controls.proc.contains(PrimaryControls::MWAIT_EXITING),
        exit_counts: [0; 96],
        total: 0,
        host_ticks: 0,
    };
    linux.regs.rsi = loaded.boot_params;
    let end = launch(
        &mut root,
        &caps,
        &controls,
        ept.eptp(),
        msr_bitmap,
        io_bitmaps,
        vmcs_frame,
        pat,
        loaded.entry32,
        &mut linux,
    );
    xsave.restore();
    if let Err((_, fail)) = root.disable() {
        println!("mini-hv: VMXOFF failed: {fail}");
        return Outcome::Fail;
    }
    println!("mini-hv: VM exit statistics (whole Linux run):");
    for (number, &count) in linux.exit_counts.iter().enumerate() {
        if count != 0 {
            println!(
                "mini-hv:   {count:>8}  {}",
                ExitReason::from_raw(number as u32).basic
            );
        }
    }
    println!("mini-hv:   {:>8}  total", linux.total);
    match end {
        End::PowerOff => {
            println!("mini-hv: the Linux guest powered off (ACPI S5): guest result pass");
            Outcome::Pass
        }
        End::Reset(how) => {
            println!("mini-hv: the Linux guest reset the machine ({how}): guest result fail");
            Outcome::Fail
        }
        End::Stopped => Outcome::Fail,
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    root: &mut super::Root,
    caps: &VmxCapabilities,
    controls: &vmx_caps::ControlSet,
    eptp: ept::EptPointer,
    msr_bitmap: &MsrBitmap,
    io_bitmaps: &IoBitmaps,
    vmcs_frame: u64,
    pat: bool,
    entry32: u64,
    linux: &mut Linux,
) -> End {
    // SAFETY: a fresh frame (identity-mapped), used only as this VMCS for the rest of the run.
    let Some(region) = (unsafe { super::vmcs_region(vmcs_frame, caps) }) else {
        return End::Stopped;
    };
    let Some(mut active) = super::load_vmcs(region, root) else {
        return End::Stopped;
    };
    let vpid = controls.proc2.contains(SecondaryControls::ENABLE_VPID);
    let setup = super::write_vmcs(&mut active, controls, eptp, msr_bitmap, io_bitmaps, vpid)
        .and_then(|()| linux.write_entry_state(&mut active, caps, entry32, pat));
    if let Err(fail) = setup {
        println!("mini-hv: writing the VMCS failed: {fail}");
        super::dump_vmcs(&active);
        return End::Stopped;
    }
    println!(
        "mini-hv: launching Linux at {entry32:#x} (32-bit protected mode, paging off, ESI = zero page {:#x})",
        linux.regs.rsi
    );
    let start = probe::rdtsc();
    let end = linux.run(&mut active);
    let ticks = probe::rdtsc().wrapping_sub(start);
    println!(
        "mini-hv: the guest ran {ticks} TSC ticks for {} VM exits ({} ticks per exit)",
        linux.total,
        ticks / linux.total.max(1)
    );
    println!(
        "mini-hv: host: {} TSC ticks per VM exit from the trampoline's return to its next call, \
         mean over the run (instructions under Bochs with clock sync=none; the trampoline adds its \
         own, see the CPUID round-trip breakdown)",
        linux.host_ticks / linux.total.max(1)
    );
    if let Err((_, fail)) = active.clear() {
        println!("mini-hv: VMCLEAR failed: {fail}");
        return End::Stopped;
    }
    end
}

impl Linux {
    /// The boot protocol's 32-bit entry state ([`GuestState::protected_mode_32`]): flat 4 GiB
    /// code (selector 0x10) and data (0x18) segments, protected mode, paging off, interrupts off;
    /// ESI (set by the caller) points to the zero page. The guest's PAT starts at its reset value.
    fn write_entry_state(
        &self,
        vmcs: &mut Vmcs<'_>,
        caps: &VmxCapabilities,
        entry: u64,
        pat: bool,
    ) -> Result<(), super::SetupError> {
        let flat = GuestState::protected_mode_32(entry);
        let data = Segment {
            selector: 0x18,
            ..flat.ds
        };
        let state = GuestState {
            cs: Segment {
                selector: 0x10,
                ..flat.cs
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: Segment {
                selector: 0x20,
                ..flat.tr
            },
            ..flat
        };
        self.cr.write_initial_state(vmcs, &state, caps)?;
        if pat {
            vmcs.write(fields::GUEST_IA32_PAT, PAT_RESET)?;
        }
        Ok(())
    }

    /// Runs the guest ([`dispatch::run`]), summing the host's part of each round trip.
    fn run(&mut self, vmcs: &mut Vmcs<'_>) -> End {
        let mut host = probe::HostTicks::new();
        let end = dispatch::run(self, vmcs, &mut host);
        self.host_ticks = host.total;
        end
    }
}

impl From<Stopped> for End {
    fn from(Stopped: Stopped) -> Self {
        End::Stopped
    }
}

/// The Linux guest's personality: the processor's CPUID with VMX hidden and the hypervisor's leaves,
/// IA32_FEATURE_CONTROL locked, its devices passed through but power-off and reset, HLT in the HLT
/// activity state, and the end of the run for memory that is not its own.
impl Guest for Linux {
    type Stop = End;

    fn regs(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }

    fn cr(&self) -> CrPolicy {
        self.cr
    }

    fn xcr0_supported(&self) -> Xcr0 {
        self.xcr0_supported
    }

    fn cpuid(&self, leaf: u32, sub: u32, guest_cr4: Cr4) -> [u32; 4] {
        let word = |i: usize| {
            u32::from_le_bytes([
                SIGNATURE[i],
                SIGNATURE[i + 1],
                SIGNATURE[i + 2],
                SIGNATURE[i + 3],
            ])
        };
        match leaf {
            0x4000_0000 => [0x4000_0000, word(0), word(4), word(8)],
            0x4000_0001..=0x4fff_ffff => [0; 4],
            _ => {
                let r = crate::arch::cpuid(leaf, sub);
                let (mut a, mut b, mut c, mut d) = (r.eax, r.ebx, r.ecx, r.edx);
                match leaf {
                    1 => {
                        c = guest_state::cpuid_leaf1_ecx(c, guest_cr4);
                        if self.hide_monitor {
                            c &= !CPUID_1_ECX_MONITOR;
                        }
                    }
                    7 if sub == 0 => {
                        if !self.proc2.contains(SecondaryControls::ENABLE_INVPCID) {
                            b &= !(1 << 10);
                        }
                        if !self.proc2.contains(SecondaryControls::ENABLE_RDTSCP) {
                            c &= !(1 << 22); // RDPID
                        }
                        c &= !(1 << 5); // WAITPKG: "enable user wait and pause" is not set
                    }
                    0xd if sub == 1
                        && !self
                            .proc2
                            .contains(SecondaryControls::ENABLE_XSAVES_XRSTORS) =>
                    {
                        a &= !(1 << 3);
                    }
                    0x8000_0001 if !self.proc2.contains(SecondaryControls::ENABLE_RDTSCP) => {
                        d &= !(1 << 27)
                    }
                    _ => {}
                }
                [a, b, c, d]
            }
        }
    }

    /// IA32_FEATURE_CONTROL reads as locked with VMX off; the VMX capability MSRs are hidden.
    fn rdmsr(&mut self, msr: u32, _: &mut Vmcs<'_>) -> Result<Option<u64>, VmFail> {
        Ok((msr == IA32_FEATURE_CONTROL).then_some(FEATURE_CONTROL_LOCKED))
    }

    /// IA32_FEATURE_CONTROL is locked; the VMX capability MSRs are read-only (and hidden).
    fn wrmsr(&mut self, _: u32, _: u64, _: &mut Vmcs<'_>) -> Result<bool, VmFail> {
        Ok(false)
    }

    /// The trapped ports: power-off (PM1a control with SLP_EN) and the resets end the run; any
    /// other access goes to the device.
    fn io(&mut self, q: IoQualification, size: u16) -> ControlFlow<End> {
        let value = self.regs.rax as u32;
        if q.direction == IoDirection::Out {
            if q.port == self.pm1a && size >= 2 && value as u16 & SLP_EN != 0 {
                return ControlFlow::Break(End::PowerOff);
            }
            if q.port == KBC_COMMAND && value as u8 == 0xfe {
                return ControlFlow::Break(End::Reset("keyboard controller reset pulse"));
            }
            if q.port == RESET_CONTROL && value & 4 != 0 {
                return ControlFlow::Break(End::Reset("reset control register 0xcf9"));
            }
            // SAFETY: a port the guest owns (passed through), written as the guest asked.
            unsafe { port_out(q.port, size, value) };
        } else {
            // SAFETY: as above, a read.
            let v = u64::from(unsafe { port_in(q.port, size) });
            self.regs.rax = match size {
                1 => (self.regs.rax & !0xff) | v,
                2 => (self.regs.rax & !0xffff) | v,
                _ => v,
            };
        }
        ControlFlow::Continue(())
    }

    /// Guest RAM above the hypervisor (identity-mapped).
    fn read_ram(&self, gpa: u64) -> Option<u64> {
        let (ram_start, ram_end) = self.ram;
        (gpa >= ram_start && gpa.checked_add(8).is_some_and(|end| end <= ram_end)).then(|| {
            // SAFETY: guest RAM above the hypervisor, identity-mapped in the host, read only.
            unsafe { (gpa as *const u64).read_unaligned() }
        })
    }

    /// The end of the run: the guest went beyond what a machine of its e820 map has.
    fn unbacked(&mut self, vmcs: &mut Vmcs<'_>, what: fmt::Arguments<'_>) -> Flow<End> {
        dispatch::stop(vmcs, what)
    }

    fn monitor(&mut self, vmcs: &mut Vmcs<'_>, length: u32) -> Result<Completion, VmFail> {
        let (mem, mapped) = (&self.mem, &self.mapped[..self.mapped_count]);
        let accessible = |gpa| mapped.iter().any(|&(s, e)| (s..e).contains(&gpa));
        monitor::monitor(vmcs, &mut self.regs, length, mem, accessible)
    }

    /// Forced HLT exiting: the guest waits in the HLT activity state for the interrupts that
    /// reach it directly (no external-interrupt exiting).
    fn halted(&mut self, vmcs: &mut Vmcs<'_>) -> Flow<End> {
        vmcs.write(fields::GUEST_ACTIVITY_STATE, ActivityState::Hlt)?;
        Ok(ControlFlow::Continue(()))
    }

    fn count_exit(&mut self, number: u16) -> u64 {
        if let Some(c) = self.exit_counts.get_mut(usize::from(number)) {
            *c += 1;
        }
        self.total += 1;
        self.total
    }

    fn entry_failed(&mut self, _: bool) -> End {
        End::Stopped
    }

    /// Triple fault, INIT, SIPI, EPT violations and anything else end the run.
    fn other(&mut self, exit: VmExit, vmcs: &mut Vmcs<'_>) -> Flow<End> {
        match exit {
            VmExit::TripleFault => dispatch::stop(vmcs, format_args!("the guest triple-faulted")),
            VmExit::InitSignal => dispatch::stop(
                vmcs,
                format_args!("INIT signal to the guest (not emulated)"),
            ),
            VmExit::StartupIpi { vector } => dispatch::stop(
                vmcs,
                format_args!("SIPI (vector {vector:#x}) to the guest (not emulated)"),
            ),
            VmExit::EptViolation {
                qualification,
                guest_physical,
                ..
            } => self.unbacked(
                vmcs,
                format_args!(
                    "EPT violation: guest-physical {guest_physical:#x} is not the guest's \
                     ({qualification})"
                ),
            ),
            other => dispatch::stop(vmcs, format_args!("unexpected VM exit: {other}")),
        }
    }
}

/// OUT of `size` bytes.
///
/// # Safety
/// The port belongs to the guest's passed-through devices.
unsafe fn port_out(port: u16, size: u16, value: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        match size {
            1 => asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack)),
            2 => asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack)),
            _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)),
        }
    }
}

/// IN of `size` bytes.
///
/// # Safety
/// The port belongs to the guest's passed-through devices.
unsafe fn port_in(port: u16, size: u16) -> u32 {
    let v: u32;
    // SAFETY: guaranteed by the caller.
    unsafe {
        match size {
            1 => {
                let b: u8;
                asm!("in al, dx", in("dx") port, out("al") b, options(nomem, nostack));
                v = u32::from(b);
            }
            2 => {
                let w: u16;
                asm!("in ax, dx", in("dx") port, out("ax") w, options(nomem, nostack));
                v = u32::from(w);
            }
            _ => asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack)),
        }
    }
    v
}
