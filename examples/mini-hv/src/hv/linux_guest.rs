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
//!   CR0/CR4 writes to host-owned bits, XSETBV, INVD/WBINVD, HLT, MONITOR, MWAIT, INIT and SIPI
//!   (`vmcs::init`); a triple fault, EPT violations and anything else end the run with a report. The
//!   guest's ACPI power-off is its "pass", a reset its "fail".
//! - With `cpus=2`: CPU 1 runs the guest's second vCPU (own VMXON region and VMCS, the same EPT) from the
//!   wait-for-SIPI state; the guest's own INIT-SIPI-SIPI starts it (INIT IPIs emulated through the
//!   write-protected local APIC page, see `Linux::apic_write`; the SIPI as a SIPI VM exit). Both vCPUs
//!   have the VMX-preemption timer, so that each sees the other's end of the run ([`STOP`]).

use core::arch::asm;
use core::fmt;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicBool, Ordering};

use ept::{
    EptConfig, EptMapper, GuestPhysAddr, LeafAttributes, MemoryType, OffsetPhysToVirt, Permissions,
    ThisCpuOnly,
};
use exits::{ExitReason, IoDirection, IoQualification, VmExit};
use vmcs::init::{ProcessorRole, SipiOutcome, apply_init, apply_sipi};
use vmcs::structures::{IoBitmaps, MsrAccess, MsrBitmap};
use vmcs::{ActivityState, InterruptibilityState, VmcsRead, VmcsWrite, fields};
use vmx_caps::{
    ControlRequest, LiveMsrs, PinBasedControls, PrimaryControls, SecondaryControls, VmxCapabilities,
};
use vmx_core::{GpReg, GuestRegisters, InveptType, LivePlatform, VmFail, VmxRoot, VmxonRegion};

use super::Vmcs;
use super::dispatch::{self, Flow, Guest, Stopped};
use super::memory::GuestMemory;
use super::monitor::{self, Completion};
use super::probe;

use super::Outcome;
use crate::println;
use mini_hv_logic::guest_state::{self, CrPolicy};
use mini_hv_logic::init_ipi::{self, IcrWrite};
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

/// How the guest ended.
enum End {
    PowerOff,
    Reset(&'static str),
    Stopped,
    /// The other vCPU ended the run.
    Other,
}

/// TSC ticks after which the VMX-preemption timer makes a vCPU of an SMP guest exit (when it made
/// no other VM exit), so that it sees [`STOP`] (the timer restarts at every VM entry).
const STOP_CHECK_TICKS: u64 = 20_000_000;

/// Set by the vCPU that ends the run (power-off, reset, a stop): the other one ends at its next
/// VM exit.
static STOP: AtomicBool = AtomicBool::new(false);
/// CPU 1's vCPU runs (in VMX operation, between its first VM entry and its last VM exit).
static AP_IN_VCPU: AtomicBool = AtomicBool::new(false);
/// CPU 1's vCPU has left the wait-for-SIPI state (the guest's SIPI started it).
static AP_STARTED: AtomicBool = AtomicBool::new(false);
/// The guest sent CPU 0 (index 0) or CPU 1 (index 1, once its vCPU runs) an INIT: that vCPU
/// applies it before its next VM entry.
static INIT_PENDING: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

/// The local APIC page (xAPIC, the default base: the guest's and the host's, identity-mapped).
const LAPIC_BASE: u64 = 0xfee0_0000;
/// xAPIC registers: ID, interrupt command (low, high).
const APIC_ID: u64 = 0x20;
const APIC_ICR_LOW: u64 = 0x300;
const APIC_ICR_HIGH: u64 = 0x310;

/// INIT IPIs of the guest, by target.
#[derive(Default)]
struct InitCounts {
    to_bsp: u64,
    to_ap: u64,
    to_self: u64,
    to_nobody: u64,
}

/// How a vCPU starts.
#[derive(Clone, Copy)]
enum Start {
    /// The boot protocol's 32-bit entry point.
    Boot(u64),
    /// The post-INIT state of an application processor, waiting for the guest's SIPI.
    WaitForSipi,
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
    /// Which processor this vCPU is (what an INIT leaves it in).
    role: ProcessorRole,
    /// The processor's VMX capabilities (for the post-INIT state).
    caps: VmxCapabilities,
    /// The guest has 2 vCPUs: its local APIC page is write-protected ([`Linux::apic_write`]).
    smp: bool,
    /// The vector of the last SIPI that started this vCPU.
    sipi_vector: Option<u8>,
    /// INIT IPIs of the guest that the hypervisor emulated instead of sending.
    inits: InitCounts,
    exit_counts: [u64; 96],
    total: u64,
    /// TSC ticks the host spent between each VM exit and the next VM entry (the trampoline
    /// excepted), summed over the run, the two RDTSCs' own cost left out.
    host_ticks: u64,
}

/// Runs Linux as the guest, on `cpus` (when started, 2 processors: CPU 1's vCPU waits for the
/// guest's own INIT-SIPI-SIPI).
pub fn run(cpus: Option<&mut crate::smp::Cpus>) -> Outcome {
    println!("mini-hv: guest: Linux (boot protocol, 32-bit entry, devices passed through)");
    let cpus = cpus.filter(|c| c.count() > 1);
    if let Some(c) = &cpus
        && c.count() != 2
    {
        // The processors beyond would meet the guest's SIPIs outside VMX operation and run its
        // code unvirtualized.
        println!(
            "mini-hv: the Linux guest runs on 1 or 2 CPUs, not {}",
            c.count()
        );
        return Outcome::Fail;
    }
    let smp = cpus.is_some();
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
    let mut controls = linux.negotiated.value;
    let pat = linux.pat;
    if smp {
        // Each vCPU must see the other's end of the run: a VM exit at least every
        // STOP_CHECK_TICKS. CPU 1's vCPU starts in the wait-for-SIPI state.
        let timer = PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER;
        if let Err(e) = caps.negotiate(&ControlRequest::new().require(timer)) {
            println!("mini-hv: unsupported with 2 CPUs: {e}");
            return Outcome::Unsupported;
        }
        if !caps.misc.activity_wait_for_sipi() {
            println!("mini-hv: unsupported with 2 CPUs: the wait-for-SIPI activity state");
            return Outcome::Unsupported;
        }
        controls.pin |= timer;
    }

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
    // CPU 1's VMXON region and VMCS.
    let ap_frames = match smp {
        true => match (crate::mem::alloc_frame(), crate::mem::alloc_frame()) {
            (Some(vmxon), Some(vmcs)) => Some((vmxon, vmcs)),
            _ => {
                println!("mini-hv: out of memory for CPU 1's VMXON region and VMCS");
                return Outcome::Fail;
            }
        },
        false => None,
    };
    let (ap_vmxon, ap_vmcs) = ap_frames.unwrap_or((vmxon_frame, vmcs_frame));
    let mut high = pool + EPT_POOL_FRAMES as u64 * 4096;
    for a in [
        vmxon_frame,
        vmcs_frame,
        msr_frame,
        io_frames + 4096,
        ap_vmxon,
        ap_vmcs,
    ] {
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
    // SAFETY: fresh frames from the kernel allocator (zeroed, identity-mapped), the EPT's alone.
    let pool = unsafe { super::FramePool::new(pool, EPT_POOL_FRAMES) };
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
    if smp {
        // The guest's APIC writes go through the hypervisor (`Linux::apic_write`), reads do not.
        let protect = ept.protect(
            GuestPhysAddr::new_truncate(LAPIC_BASE),
            4096,
            LeafAttributes::new(Permissions::READ, MemoryType::Uncacheable),
        );
        // SAFETY: no other processor has used this EPT yet (CPU 1 loads it later).
        let mut this_cpu = unsafe { ThisCpuOnly::new(&root) };
        let done = match protect {
            Ok(flush) => ept
                .flush(flush, &mut this_cpu)
                .map_err(|e| println!("mini-hv: INVEPT failed: {e}")),
            Err(e) => {
                println!("mini-hv: cannot write-protect the local APIC page: {e}");
                Err(())
            }
        };
        if done.is_err() {
            let _ = root.disable();
            return Outcome::Fail;
        }
        println!(
            "mini-hv: EPT local APIC page {LAPIC_BASE:#x} read-only (writes emulated: INIT IPIs)"
        );
    }
    println!("mini-hv: EPT {} table frames", ept.table_frames());

    let mut mapped = [(0u64, 0u64); MAX_RANGES];
    for (slot, &(s, e, _)) in mapped.iter_mut().zip(&ranges[..count]) {
        *slot = (s, e);
    }
    let vcpu = |role| Linux {
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
        role,
        caps,
        smp,
        sipi_vector: None,
        inits: InitCounts::default(),
        exit_counts: [0; 96],
        total: 0,
        host_ticks: 0,
    };
    let mut linux = vcpu(ProcessorRole::Bootstrap);
    linux.regs.rsi = loaded.boot_params;
    let timer = smp.then(|| {
        super::vcpu::timer_value(STOP_CHECK_TICKS, caps.misc.preemption_timer_tsc_shift()) as u32
    });
    let setup = Setup {
        caps: &caps,
        controls: &controls,
        eptp: ept.eptp(),
        msr_bitmap,
        io_bitmaps,
        pat,
        timer,
    };
    let mut ap_linux = vcpu(ProcessorRole::Application);
    let boot = Start::Boot(loaded.entry32);
    let (end, ap_end) = match cpus {
        Some(cpus) => {
            let mut ap_end = End::Stopped;
            let mut ap_job = || ap_end = run_ap(&setup, ap_vmxon, ap_vmcs, &mut ap_linux);
            println!(
                "mini-hv: CPU 1 runs the guest's second vCPU, waiting for its INIT-SIPI-SIPI (own \
                 VMXON region and VMCS, the same EPT)"
            );
            let (end, posted) = cpus.alongside(1, &mut ap_job, |cpus| {
                let end = launch(&mut root, &setup, vmcs_frame, boot, &mut linux);
                STOP.store(true, Ordering::Release);
                if AP_IN_VCPU.load(Ordering::Acquire) && !AP_STARTED.load(Ordering::Acquire) {
                    // Waiting for a SIPI that will not come (no timer runs in that state): a SIPI
                    // makes it exit and see STOP; a processor that is not waiting discards it.
                    if let Err(e) = cpus.send_startup(1, 0) {
                        println!("mini-hv: cannot send CPU 1 a SIPI: {e}");
                    }
                }
                end
            });
            if let Err(e) = posted {
                println!("mini-hv: CPU 1's vCPU did not run: {e}");
                ap_end = End::Stopped;
            }
            (end, Some(ap_end))
        }
        None => (
            launch(&mut root, &setup, vmcs_frame, boot, &mut linux),
            None,
        ),
    };
    xsave.restore();
    if let Err((_, fail)) = root.disable() {
        println!("mini-hv: VMXOFF failed: {fail}");
        return Outcome::Fail;
    }
    linux.print_statistics(0);
    let end = match ap_end {
        Some(ap_end) => {
            ap_linux.print_statistics(1);
            match (end, ap_end) {
                // The vCPU that ended the run says how.
                (End::Other, ap_end) => ap_end,
                (end, _) => end,
            }
        }
        None => end,
    };
    match end {
        End::PowerOff => {
            println!("mini-hv: the Linux guest powered off (ACPI S5): guest result pass");
            Outcome::Pass
        }
        End::Reset(how) => {
            println!("mini-hv: the Linux guest reset the machine ({how}): guest result fail");
            Outcome::Fail
        }
        End::Stopped | End::Other => Outcome::Fail,
    }
}

/// What both vCPUs' VMCSs share.
struct Setup<'a> {
    caps: &'a VmxCapabilities,
    controls: &'a vmx_caps::ControlSet,
    eptp: ept::EptPointer,
    msr_bitmap: &'a MsrBitmap,
    io_bitmaps: &'a IoBitmaps,
    pat: bool,
    /// The VMX-preemption timer value of an SMP guest's vCPUs.
    timer: Option<u32>,
}

/// CPU 1's vCPU (run there): VMXON with its own region, an all-context INVEPT (SDM Vol. 3C
/// §29.4.3.3: no EPT-derived translations of an earlier VMX period may remain), the vCPU from
/// the post-INIT wait-for-SIPI state, VMXOFF.
fn run_ap(setup: &Setup<'_>, vmxon_frame: u64, vmcs_frame: u64, linux: &mut Linux) -> End {
    // SAFETY: a fresh identity-mapped frame, this processor's VMXON region from now on.
    let region = match unsafe { VmxonRegion::from_frame(vmxon_frame as *mut u8) } {
        Ok(region) => region,
        Err(e) => {
            println!("mini-hv: CPU 1's VMXON region: {e}");
            return End::Stopped;
        }
    };
    // SAFETY: CPL 0 on processor 1, whose VMX operation nothing else uses.
    let platform = unsafe { LivePlatform::new() };
    // SAFETY: `caps` describe every processor of this machine (Bochs gives each the same
    // capability MSRs); `identity` is the true translation; nothing else uses VMX here.
    let root = unsafe { VmxRoot::enable(platform, setup.caps, region, &super::identity) };
    let mut root = match root {
        Ok(root) => root,
        Err((_, e)) => {
            println!("mini-hv: CPU 1 cannot enter VMX operation: {e}");
            return End::Stopped;
        }
    };
    let all = InveptType::AllContext;
    if all.supported_by(&setup.caps.ept_vpid)
        && let Err(e) = root.invept(all, 0)
    {
        println!("mini-hv: CPU 1: INVEPT after VMXON failed: {e}");
    }
    let end = launch(&mut root, setup, vmcs_frame, Start::WaitForSipi, linux);
    if let Err((_, fail)) = root.disable() {
        println!("mini-hv: CPU 1: VMXOFF failed: {fail}");
        return End::Stopped;
    }
    end
}

/// Loads a VMCS for `linux` on this processor (the shared parts from `setup`), runs the vCPU
/// from `start` until the run ends, and clears the VMCS.
fn launch(
    root: &mut super::Root,
    setup: &Setup<'_>,
    vmcs_frame: u64,
    start: Start,
    linux: &mut Linux,
) -> End {
    let caps = setup.caps;
    // SAFETY: a fresh frame (identity-mapped), used only as this VMCS for the rest of the run.
    let Some(region) = (unsafe { super::vmcs_region(vmcs_frame, caps) }) else {
        return End::Stopped;
    };
    let Some(mut active) = super::load_vmcs(region, root) else {
        return End::Stopped;
    };
    let controls = setup.controls;
    let vpid = controls.proc2.contains(SecondaryControls::ENABLE_VPID);
    let entry32 = match start {
        Start::Boot(entry32) => entry32,
        Start::WaitForSipi => 0,
    };
    let written = super::write_vmcs(
        &mut active,
        controls,
        setup.eptp,
        setup.msr_bitmap,
        setup.io_bitmaps,
        vpid,
    )
    .and_then(|()| linux.write_entry_state(&mut active, caps, entry32, setup.pat))
    .and_then(|()| match setup.timer {
        Some(value) => Ok(active.write(fields::VMX_PREEMPTION_TIMER_VALUE, value)?),
        None => Ok(()),
    });
    if let Err(fail) = written {
        println!("mini-hv: writing the VMCS failed: {fail}");
        super::dump_vmcs(&active);
        return End::Stopped;
    }
    match start {
        Start::Boot(entry32) => println!(
            "mini-hv: launching Linux at {entry32:#x} (32-bit protected mode, paging off, ESI = zero page {:#x})",
            linux.regs.rsi
        ),
        Start::WaitForSipi => {
            let signature = crate::arch::cpuid(1, 0).eax;
            if let Err(e) = apply_init(&mut active, &mut linux.regs, caps, linux.role, signature) {
                println!("mini-hv: CPU 1: cannot put the vCPU into its post-INIT state: {e}");
                return End::Stopped;
            }
            AP_IN_VCPU.store(true, Ordering::Release);
        }
    }
    let start_tsc = probe::rdtsc();
    let end = linux.run(&mut active);
    AP_IN_VCPU.store(false, Ordering::Release);
    let ticks = probe::rdtsc().wrapping_sub(start_tsc);
    let per_exit = ticks / linux.total.max(1);
    match linux.role {
        ProcessorRole::Bootstrap => println!(
            "mini-hv: the guest ran {ticks} TSC ticks for {} VM exits ({per_exit} ticks per exit)",
            linux.total
        ),
        ProcessorRole::Application => println!(
            "mini-hv: CPU 1's vCPU ran {ticks} TSC ticks for {} VM exits ({per_exit} ticks per exit)",
            linux.total
        ),
    }
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
    /// The boot protocol's 32-bit entry state ([`vmcs::GuestState::protected_mode_32`]): flat 4 GiB
    /// code (selector 0x10) and data (0x18) segments, protected mode, paging off, interrupts off;
    /// ESI (set by the caller) points to the zero page. The guest's PAT starts at its reset value.
    fn write_entry_state(
        &self,
        vmcs: &mut Vmcs<'_>,
        caps: &VmxCapabilities,
        entry: u64,
        pat: bool,
    ) -> Result<(), super::SetupError> {
        let state = super::flat_protected_mode(entry, 0x10, 0x18, Some(0x20));
        self.cr.write_initial_state(vmcs, &state, caps)?;
        if pat {
            vmcs.write(fields::GUEST_IA32_PAT, PAT_RESET)?;
        }
        Ok(())
    }

    /// Runs the guest ([`dispatch::run`]), summing the host's part of each round trip; an end of
    /// its own ends the other vCPU's run too ([`STOP`]).
    fn run(&mut self, vmcs: &mut Vmcs<'_>) -> End {
        let mut host = probe::HostTicks::new();
        let end = dispatch::run(self, vmcs, &mut host);
        self.host_ticks = host.total;
        if !matches!(end, End::Other) {
            STOP.store(true, Ordering::Release);
        }
        end
    }

    /// Prints this vCPU's VM exits by reason (of CPU `cpu` when the guest has 2 vCPUs).
    fn print_statistics(&self, cpu: usize) {
        if self.smp {
            println!("mini-hv: VM exit statistics of CPU {cpu}'s vCPU (whole Linux run):");
        } else {
            println!("mini-hv: VM exit statistics (whole Linux run):");
        }
        for (number, &count) in self.exit_counts.iter().enumerate() {
            if count != 0 {
                println!(
                    "mini-hv:   {count:>8}  {}",
                    ExitReason::from_raw(number as u32).basic
                );
            }
        }
        println!("mini-hv:   {:>8}  total", self.total);
        if let Some(vector) = self.sipi_vector {
            println!(
                "mini-hv: CPU {cpu}'s vCPU was started by the guest's SIPI with vector {vector:#x} \
                 (at {:#x})",
                u32::from(vector) << 12
            );
        }
        let i = &self.inits;
        if i.to_bsp + i.to_ap + i.to_self + i.to_nobody != 0 {
            println!(
                "mini-hv: CPU {cpu}'s vCPU sent INIT IPIs (emulated): {} to CPU 0, {} to CPU 1, {} \
                 to itself, {} to no processor",
                i.to_bsp, i.to_ap, i.to_self, i.to_nobody
            );
        }
    }
    /// A guest write to its local APIC's page, write-protected in the EPT when the guest has 2
    /// vCPUs (reads go to the APIC directly): the instruction (a MOV) is decoded and the write
    /// done on the APIC, but for INIT IPIs, which the hypervisor emulates (SDM Vol. 3A §11.6.1:
    /// INIT puts the target into the INIT state; for an application processor that is waiting
    /// for SIPI, where CPU 1's vCPU starts; an INIT to an APIC ID no processor has reaches
    /// nobody). An INIT must not reach a processor in VMX non-root operation as a signal: Bochs
    /// 2.7 keeps it pending after the INIT VM exit, which then recurs at every VM entry. The
    /// SIPIs go to the APIC: CPU 1 takes them as SIPI VM exits.
    fn apic_write(&mut self, vmcs: &mut Vmcs<'_>, offset: u64) -> Flow<End> {
        let rip = vmcs.read(fields::GUEST_RIP)?;
        let linear = vmcs.read(fields::GUEST_CS_BASE)?.wrapping_add(rip);
        let paging = super::memory::Paging::of(vmcs)?;
        let mut bytes = [0u8; 15];
        let in_page = ((0x1000 - (linear & 0xfff)) as usize).min(bytes.len());
        let fetched = if self.mem.read_virt(paging, linear, &mut bytes).is_ok() {
            bytes.len()
        } else if self
            .mem
            .read_virt(paging, linear, &mut bytes[..in_page])
            .is_ok()
        {
            in_page
        } else {
            return dispatch::stop(
                vmcs,
                format_args!("cannot fetch the APIC write at RIP {rip:#x}"),
            );
        };
        let access = match mini_hv_logic::decode::decode_mov(&bytes[..fetched]) {
            Ok(access) => access,
            Err(e) => {
                return dispatch::stop(
                    vmcs,
                    format_args!(
                        "APIC write at offset {offset:#x} by an instruction not emulated ({e})"
                    ),
                );
            }
        };
        let value = match access.operation {
            mini_hv_logic::decode::Operation::Store(reg) if !reg.high_byte => {
                let gpr = GpReg::from_field(u64::from(reg.index));
                dispatch::read_gpr(&self.regs, gpr, vmcs)?
            }
            mini_hv_logic::decode::Operation::StoreImmediate(v) => v,
            _ => {
                return dispatch::stop(
                    vmcs,
                    format_args!("APIC access at offset {offset:#x} is not a store"),
                );
            }
        };
        if access.size != 4 || offset & 0xf != 0 {
            return dispatch::stop(
                vmcs,
                format_args!("APIC write of {} bytes at offset {offset:#x}", access.size),
            );
        }
        let value = value as u32;
        let length = u32::from(access.length);
        let apic = |reg: u64| (LAPIC_BASE + reg) as *mut u32;
        if offset != APIC_ICR_LOW {
            // SAFETY: the guest's own write to its own APIC (passed through but for INIT).
            unsafe { core::ptr::write_volatile(apic(offset), value) };
            return dispatch::skip(vmcs, length);
        }
        // SAFETY: reading the APIC's ID and ICR high registers has no side effect.
        let (own, high) = unsafe {
            (
                core::ptr::read_volatile(apic(APIC_ID)) >> 24,
                core::ptr::read_volatile(apic(APIC_ICR_HIGH)),
            )
        };
        // CPU 1's APIC ID follows the bootstrap processor's (`crate::smp`).
        let (ids, me) = match self.role {
            ProcessorRole::Bootstrap => ([own, own + 1], 0),
            ProcessorRole::Application => ([own.wrapping_sub(1), own], 1),
        };
        let targets = match init_ipi::classify(value, high, me, &ids) {
            IcrWrite::NotInit => {
                // SAFETY: the guest's own IPI from its own APIC (SIPIs among them).
                unsafe { core::ptr::write_volatile(apic(offset), value) };
                return dispatch::skip(vmcs, length);
            }
            IcrWrite::InitDeassert => return dispatch::skip(vmcs, length),
            IcrWrite::InitLogical => {
                return dispatch::stop(
                    vmcs,
                    format_args!("INIT IPI in logical destination mode (not emulated)"),
                );
            }
            IcrWrite::Init(targets) => targets,
        };
        if targets.others & 0b10 != 0 {
            self.inits.to_ap += 1;
            // A CPU 1 still waiting for SIPI is in the post-INIT state already.
            if AP_STARTED.load(Ordering::Acquire) {
                INIT_PENDING[1].store(true, Ordering::Release);
            }
        }
        if targets.others & 0b01 != 0 {
            self.inits.to_bsp += 1;
            INIT_PENDING[0].store(true, Ordering::Release);
        }
        if targets.to_nobody() {
            self.inits.to_nobody += 1;
        }
        let to_self = targets.to_self;
        let next = dispatch::skip(vmcs, length)?;
        if to_self {
            self.inits.to_self += 1;
            let signature = crate::arch::cpuid(1, 0).eax;
            if let Err(e) = apply_init(vmcs, &mut self.regs, &self.caps, self.role, signature) {
                return dispatch::stop(
                    vmcs,
                    format_args!("cannot apply the guest's INIT to itself: {e}"),
                );
            }
        }
        Ok(next)
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

    /// With 2 vCPUs: the other vCPU's end ends this one; a vCPU applies the guest's INIT sent to
    /// it by the other one; on CPU 1 "blocking by SMI" is cleared (VM exits outside SMM save it as 0 and VM entry outside SMM
    /// requires 0, SDM Vol. 3C §27.3.4 and §26.3.1.5; Bochs 2.7 saves the SMI mask it sets in the
    /// wait-for-SIPI state at every exit of a vCPU started from there).
    fn before_entry(&mut self, vmcs: &mut Vmcs<'_>) -> ControlFlow<End> {
        if !self.smp {
            return ControlFlow::Continue(());
        }
        if STOP.load(Ordering::Acquire) {
            return ControlFlow::Break(End::Other);
        }
        let me = match self.role {
            ProcessorRole::Bootstrap => 0,
            ProcessorRole::Application => 1,
        };
        let fixed = (|| -> Result<(), VmFail> {
            if INIT_PENDING[me].swap(false, Ordering::AcqRel) {
                let signature = crate::arch::cpuid(1, 0).eax;
                if let Err(e) = apply_init(vmcs, &mut self.regs, &self.caps, self.role, signature) {
                    println!("mini-hv: CPU {me}: cannot apply the guest's INIT: {e}");
                    return Err(VmFail::Invalid);
                }
            }
            let blocking = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
            if me == 1 && blocking.contains(InterruptibilityState::BLOCKING_BY_SMI) {
                vmcs.write(
                    fields::GUEST_INTERRUPTIBILITY_STATE,
                    blocking - InterruptibilityState::BLOCKING_BY_SMI,
                )?;
            }
            Ok(())
        })();
        match fixed {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(End::Stopped),
        }
    }

    /// INIT and SIPI are emulated (`vmcs::init`), the guest's writes to its local APIC with 2
    /// vCPUs too ([`Linux::apic_write`]); a triple fault, other EPT violations and anything else
    /// end the run.
    fn other(&mut self, exit: VmExit, vmcs: &mut Vmcs<'_>) -> Flow<End> {
        match exit {
            VmExit::TripleFault => dispatch::stop(vmcs, format_args!("the guest triple-faulted")),
            // The timer only makes the vCPU look at STOP (`before_entry`).
            VmExit::PreemptionTimerExpired if self.smp => Ok(ControlFlow::Continue(())),
            // An INIT signal to this processor: the post-INIT state (SDM Vol. 3A §10.1.1),
            // waiting for SIPI on an application processor, at the reset vector on the bootstrap
            // processor.
            VmExit::InitSignal => {
                let signature = crate::arch::cpuid(1, 0).eax;
                match apply_init(vmcs, &mut self.regs, &self.caps, self.role, signature) {
                    Ok(_) => Ok(ControlFlow::Continue(())),
                    Err(e) => dispatch::stop(vmcs, format_args!("cannot apply an INIT: {e}")),
                }
            }
            // The host's own SIPI, sent to end the run (`before_entry` sees STOP).
            VmExit::StartupIpi { .. } if STOP.load(Ordering::Acquire) => {
                Ok(ControlFlow::Continue(()))
            }
            VmExit::StartupIpi { vector } => {
                // Only a processor in the wait-for-SIPI state takes SIPI exits (SDM Vol. 3C
                // §26.6.2: the active and HLT states discard SIPIs), so the state saved by this
                // exit was wait-for-SIPI (§27.3.4), with no blocking outside SMM. Bochs 2.7 saves
                // "active" and blocking by SMI and NMI instead: write what the SDM says.
                vmcs.write(fields::GUEST_ACTIVITY_STATE, ActivityState::WaitForSipi)?;
                vmcs.write(
                    fields::GUEST_INTERRUPTIBILITY_STATE,
                    InterruptibilityState::empty(),
                )?;
                if apply_sipi(vmcs, vector)? == SipiOutcome::Started {
                    self.sipi_vector = Some(vector);
                    if self.role == ProcessorRole::Application {
                        AP_STARTED.store(true, Ordering::Release);
                    }
                }
                Ok(ControlFlow::Continue(()))
            }
            VmExit::EptViolation {
                qualification,
                guest_physical,
                ..
            } if self.smp && guest_physical & !0xfff == LAPIC_BASE && qualification.write => {
                self.apic_write(vmcs, guest_physical & 0xfff)
            }
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
