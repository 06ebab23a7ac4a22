//! Nested VMX (`mini-hv.nested=1`): the hypervisor (L0) offers VMX to its guest (L1), emulates
//! L1's VMX instructions with `vmcs::nested::L1VmxState` over VMCS12 in L1's memory, and runs
//! L1's guest (L2) on the processor with VMCS02 (`vmcs::nested::build_vmcs02`); each exit of L2
//! goes to L1 (`exits::nested::exit_owner`, `L1VmxState::reflect_exit`) or stays with L0.
//!
//! What L1 is offered ([`policy`]): the controls VMCS02 can carry, EPT among them (L2 then runs
//! on EPT02, EPT12 composed with L1's RAM and filled page by page from L2's EPT violations,
//! emptied at L1's INVEPT; `vmcs::nested::resolve_ept_violation`) and unrestricted guest (L2 in
//! real mode or unpaged protected mode: VMCS02 always runs on EPT), VPID (L2 runs with
//! [`VPID02`], flushed when L1's VPID12 changes and at L1's INVVPID), VMFUNC's EPTP switching
//! (L2's VMFUNC exits to L0, which switches EPTP12 and EPT02 as L1's processor would:
//! `vmcs::nested::L1VmxState::vmfunc`) and EPT-violation #VE (EPT12's convertible violations
//! delivered to L2 as #VE by L0: `vmcs::nested::deliver_ve`), page-modification logging (L0
//! logs the dirty flags of EPT12 it sets in L1's log, VMCS02's PML index the live one while L2
//! runs, and reflects a page-modification log-full event as exit 62: `vmcs::nested::Pml12`),
//! and without VMCS shadowing for L1's own guests. L0 itself uses
//! VMCS shadowing where the processor has it (`mini-hv.nested=1`; `mini-hv.nested=noshadow`
//! turns it off): L1's VMREAD and VMWRITE of [`SHADOWED_FIELDS`] go to a shadow VMCS without an
//! exit, and L0 synchronizes it with VMCS12 around every VMX instruction of L1 it emulates
//! (`vmcs::nested::sync_from_shadow` before, `sync_to_shadow` after).
//!
//! An exit of L2 that L1 does not intercept is L0's: L0 handles it on L2's behalf as L1's
//! processor would (RDMSR/WRMSR, I/O, HLT with L0's wake-up, the MMIO device, the timers, EPT02's
//! fills; an exception it raises that VMCS12 intercepts becomes L1's exit) and resumes L2. The
//! MSRs of VMCS12's MSR-load and MSR-store areas are the ones L0 models for L1 ([`ListMsrs`]),
//! within the recommended maximum L1 is shown (`IA32_VMX_MISC[27:25]`).

use core::ops::ControlFlow;

use ept::{EptConfig, EptMapper, MemoryType, OffsetPhysToVirt, Permissions};
use exits::inject::{Exception, reinject};
use exits::nested::{ExitOwner, L2Registers, exit_owner};
use exits::{CrAccessType, ExitReason, MemoryOperand, Operand, VmExit};
use vmcs::check::{self, CpuFacts, EntryInstruction};
use vmcs::nested::{
    ApicPages02, DirtyFields, GuestMemory as L1Memory, GuestMsrs, L0Part, L1Context, L1VmxState,
    L2Entry, MergedIoBitmaps, MergedMsrBitmap, PointerOperand, Reflected, SHADOWED_FIELDS,
    SavedExit, Vmcs02, VmxFault, VmxOutcome, build_vmcs02, shadow_bitmaps, sync_to_shadow,
    vmcs02_preemption_timer,
};
use vmcs::nested::{
    Ept01, Ept02Resolution, L1Page, Pml12, VeDelivery, VmfuncOutcome, clear_ept02, deliver_ve,
    resolve_ept_violation,
};
use vmcs::structures::{InFrame, IoBitmaps, MsrArea, MsrBitmap, ShadowBitmap};
use vmcs::{
    ActivityState, FieldInfo, FieldType, GuestSegment, HardwareVmcs, SoftVmcs, VmcsRead,
    VmcsSnapshot, VmcsWrite, fields,
};
use vmx_caps::arch::{Cr0, Cr4, Efer, Rflags};
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{
    ControlSet, CrUse, MsrSnapshot, PinBasedControls, PrimaryControls, SecondaryControls,
    VmxCapabilities,
};
use vmx_core::{
    GpReg, GuestRegisters, HostStateCache, InveptDescriptor, InveptType, InvvpidDescriptor, VmFail,
    VmxInstructions,
};

use super::Vmcs;
use super::dispatch::{Flow, Stopped, inject, skip};
use super::memory::{GuestMemory, Paging};
use crate::guest::abi;
use crate::println;
use mini_hv_logic::guest_state::{CrPolicy, CrWriteError};

/// Whether the command line asks for nested VMX: `Some(true)` with VMCS shadowing where the
/// processor has it (`mini-hv.nested=1`), `Some(false)` without (`mini-hv.nested=noshadow`).
pub fn requested() -> Option<bool> {
    crate::boot::cmdline()
        .split_ascii_whitespace()
        .find_map(|w| match w {
            "mini-hv.nested=1" => Some(true),
            "mini-hv.nested=noshadow" => Some(false),
            _ => None,
        })
}

/// L0's VMCS shadowing for L1: the shadow VMCS and the VMREAD/VMWRITE bitmaps of VMCS01.
struct Shadow {
    phys: u64,
    vmread: &'static mut ShadowBitmap,
    vmwrite: &'static mut ShadowBitmap,
    /// The physical addresses of the VMREAD and VMWRITE bitmaps (their frames').
    bitmaps_phys: (u64, u64),
    /// VMCS01's link pointer points at the shadow VMCS (L1 has a current VMCS).
    linked: bool,
    /// "VMCS shadowing" is on in VMCS01: only while L1 is in VMX operation, since outside it
    /// L1's VMREAD and VMWRITE must #UD, which only L0's emulation gives.
    enabled: bool,
    /// L1's VMREAD/VMWRITE that went to the shadow VMCS are not counted by anyone; the syncs are.
    syncs: u64,
}

/// What L0 offers L1 (`mini_hv_logic::nested_policy`, also behind `vmxtool caps --nested`).
pub fn policy(real: &VmxCapabilities) -> VirtualPolicy {
    mini_hv_logic::nested_policy::policy(real)
}

/// VPID02: the VPID L2 runs with where VMCS12 enables VPID (VMCS01's is [`super::GUEST_VPID`],
/// the host's 0). Every VPID12 of L1 maps to it, so L0 flushes it when L2 next runs under another
/// VPID12 than the one whose translations it holds, and at every INVVPID of L1 (SDM 29.4.3: the
/// processor may keep a VPID's translations across VM entries and exits, and only INVVPID, or an
/// entry or exit with "enable VPID" 0, removes them).
const VPID02: u16 = super::GUEST_VPID + 1;

/// A VMCS02 kept after an exit of L2 reflected to L1: valid for L1's next VMRESUME of the same
/// VMCS12 with the same inputs from VMCS01 ([`Nested::reuse_vmcs02`]).
struct Kept {
    /// VMCS12's pointer.
    pointer: u64,
    /// How VMCS02 was built.
    built: Vmcs02,
    /// What of VMCS01 went into it ([`Nested::l1_inputs`]).
    inputs: [u64; 8],
}

/// Exits and reflections of the nested run.
pub struct Stats {
    /// L1's VMX instructions emulated.
    pub l1_instructions: u64,
    /// VM entries of L2 (VMCS02 launched or resumed).
    pub l2_entries: u64,
    /// Exits of L2 by basic exit reason.
    pub l2_exits: [u64; 96],
    /// Exits of L2 reflected to L1.
    pub reflected: u64,
    /// L1's VM entries that failed the SDM's checks (VMfail or entry failure), L1's own doing.
    pub l1_entry_refused: u64,
    /// Pages EPT02 got from L2's EPT violations.
    pub ept02_fills: u64,
    /// EPT violations and misconfigurations EPT12 caused, reflected to L1.
    pub ept12_exits: u64,
    /// Times EPT02 was emptied (L1's INVEPT, a new EPTP12, L2's EPTP switching).
    pub ept02_clears: u64,
    /// VMFUNCs of L2 L0 completed as EPTP switching for L1's processor (no exit to L1).
    pub eptp_switches: u64,
    /// EPT violations EPT12 caused that L0 delivered to L2 as #VE (no exit to L1).
    pub ve_delivered: u64,
    /// Pages L0 logged in L1's page-modification log (a dirty flag of EPT12 set with PML on).
    pub pml_logged: u64,
    /// Page-modification log-full events of L2, reflected to L1 (exit reason 62).
    pub pml_full: u64,
    /// INVVPIDs of VPID02 (L1's INVVPID, a new VPID12).
    pub vpid02_flushes: u64,
    /// Exits of L2 L0 handled on L2's behalf (L1 does not intercept them), L2 resumed after.
    pub l0_handled: u64,
    /// Exceptions L0 raised in L2 while handling its exits that L1 intercepts, reflected.
    pub l0_exceptions_reflected: u64,
    /// Entries of VMCS12's MSR-load and MSR-store areas L0 processed.
    pub list_msrs: u64,
    /// VMCS02 built anew (every VMLAUNCH, and each VMRESUME after a change it cannot carry).
    pub vmcs02_built: u64,
    /// VMCS02 kept for a VMRESUME, only VMCS12's changed fields written into it.
    pub vmcs02_kept: u64,
}

/// L2's MOV to CR0 or CR4 that L0 handles ([`Nested::l2_mov_to_cr`]).
#[derive(Clone, Copy)]
struct L2MovToCr {
    /// CR0 (else CR4).
    cr0: bool,
    /// The source register.
    gpr: GpReg,
    /// The instruction's length.
    length: u32,
}

/// What the exit handler does after a VMX instruction of L1.
pub enum Action {
    /// The instruction completed (RFLAGS set): skip it.
    Skip,
    /// Inject #UD.
    InvalidOpcode,
    /// Inject #GP(0).
    GeneralProtection,
    /// Inject #PF with this error code at this linear address (a memory operand not mapped).
    PageFault(u32, u64),
    /// Resume L1 where its state now says (after an exit of L2 or a failed entry).
    Resume,
    /// Stop the guest (the reason was printed).
    Stop,
}

/// L0's nested-VMX state for its one guest.
pub struct Nested {
    l1: L1VmxState,
    msrs: MsrSnapshot,
    real: VmxCapabilities,
    vmcs01_phys: u64,
    vmcs02_phys: u64,
    /// VMCS02's MSR and I/O bitmaps: L0's (for L1) merged with VMCS12's at each entry of L2.
    msr02: MergedMsrBitmap<'static>,
    io02: MergedIoBitmaps<'static>,
    /// The physical addresses of VMCS02's MSR bitmap and I/O bitmaps A and B (their frames').
    msr02_phys: u64,
    io02_phys: u64,
    /// A frame of L0's no EPT maps: VMCS02's virtual-APIC or APIC-access page where VMCS12's is
    /// not in L1's RAM (`ApicPages02::of`).
    apic_scratch_phys: u64,
    shadow: Option<Shadow>,
    /// EPT02, the tables that run L2 when L1 uses EPT.
    ept02: EptMapper<OffsetPhysToVirt, super::KernelFrames>,
    /// The EPTP12 whose translations EPT02 holds.
    ept02_for: Option<u64>,
    /// The VPID12 whose translations VPID02 may hold ([`VPID02`]).
    vpid02_for: Option<u16>,
    /// VMCS02 as the last exit of L2 left it, for L1's next VMRESUME of the same VMCS12.
    kept: Option<Kept>,
    /// Exits and reflections.
    pub stats: Stats,
    /// Where L0's time goes in L1's VMLAUNCH/VMRESUME that run L2 until an exit of L1's.
    phases: Phases,
}

/// The phases of L0's part of a nested round trip: L1's VMLAUNCH/VMRESUME exit, until L1 is
/// resumed at its host RIP with L2's exit in VMCS12. TSC stamps at each boundary, summed over
/// the rounds that ran L2 until an exit reflected to L1.
struct Phases {
    /// The stamps of the current round ([`PHASES`] + 1 boundaries).
    stamps: [u64; PHASES.len() + 1],
    /// The current round reached the reflected exit (stamp 4).
    reflected: bool,
    /// Ticks per phase over the counted rounds.
    sums: [u64; PHASES.len()],
    /// Rounds counted.
    rounds: u64,
}

/// What each phase of [`Phases`] covers.
const PHASES: [&str; 6] = [
    "VMCS12 updated from the shadow VMCS",
    "VMCS12's VM-entry checks and MSR-load area (the software checker)",
    "VMCS02 made ready (kept: VMCS12's changed fields and the merged bitmaps; or built)",
    "L2 entered, ran and exited (with the exits L0 handles for L2)",
    "the exit saved into VMCS12 (exit information, guest state, MSR-store area)",
    "L1's host state loaded from VMCS12, VMCS12 to the shadow VMCS",
];

impl Phases {
    const fn new() -> Self {
        Self {
            stamps: [0; PHASES.len() + 1],
            reflected: false,
            sums: [0; PHASES.len()],
            rounds: 0,
        }
    }

    /// Records boundary `i`.
    #[inline(always)]
    fn stamp(&mut self, i: usize) {
        if let Some(stamp) = self.stamps.get_mut(i) {
            *stamp = super::probe::rdtsc();
        }
    }

    /// Ends a round: counted if it ran L2 until an exit reflected to L1.
    fn end(&mut self) {
        self.stamp(PHASES.len());
        if core::mem::take(&mut self.reflected) {
            for (sum, pair) in self.sums.iter_mut().zip(self.stamps.windows(2)) {
                *sum += pair[1].wrapping_sub(pair[0]);
            }
            self.rounds += 1;
        }
    }
}

/// L0's EPT of L1 (EPT01) as the EPT02 composition consults it: L1's RAM, read/write/execute,
/// write-back, at `GuestMemory::host_base` plus the L1-physical address.
struct L1Ram<'a>(&'a GuestMemory);

impl Ept01 for L1Ram<'_> {
    fn translate_l1(&self, address: u64) -> Option<L1Page> {
        let page = address & !0xfff;
        self.0.contains(page, 4096).then(|| L1Page {
            host_physical: self.0.host_base() + page,
            permissions: Permissions::RWX,
            memory_type: MemoryType::WriteBack,
        })
    }
}

/// L1's memory for the emulation: guest RAM.
struct Ram<'a>(&'a GuestMemory);

impl check::PhysMemory for Ram<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), check::MemoryError> {
        self.0
            .read(address, buf)
            .map_err(|_| check::MemoryError::OutOfRange {
                address,
                len: buf.len(),
            })
    }
}

impl L1Memory for Ram<'_> {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), check::MemoryError> {
        self.0
            .write(address, bytes)
            .map_err(|_| check::MemoryError::OutOfRange {
                address,
                len: bytes.len(),
            })
    }
}

/// The parts of L1's virtual processor the nested emulation works with: L1's registers (L2's
/// while L2 runs: they share the frame the trampoline saves), L1's RAM, the MSRs L0 emulates,
/// and L0's handling of an exit of L2 that L1 does not intercept.
pub trait L1Host {
    /// L1's general-purpose registers and RAM.
    fn parts(&mut self) -> (&mut GuestRegisters, &GuestMemory);
    /// The scratch MSR ([`abi::MSR_SCRATCH`]) L0 emulates for its guest.
    fn scratch_msr(&mut self) -> &mut u64;
    /// The area where L0 keeps its guest's IA32_KERNEL_GS_BASE while the hypervisor runs (VMCS01's
    /// VM-entry MSR-load and VM-exit MSR-store area, which VMCS02 shares), if it has one.
    fn kernel_gs_base_area(&self) -> Option<&'static MsrArea<1>>;
    /// An exit of L2 that is L0's and not handled in this module (RDMSR/WRMSR, I/O, HLT, the
    /// MMIO device, the timers): handled as for L1 itself on the current VMCS (VMCS02).
    /// `Break`: the run stops (printed).
    fn l2_exit(&mut self, exit: VmExit, vmcs: &mut Vmcs<'_>) -> Result<ControlFlow<()>, VmFail>;
}

/// The MSRs of VMCS12's MSR-load and MSR-store areas (SDM 27.4, 28.4, 28.6) as L0 models them
/// for L1's processor: the scratch MSR and the read-only VMX MSRs L0 emulates, the TSC (read
/// only: L2's, with the TSC offsets), IA32_KERNEL_GS_BASE (in L0's MSR area, which VM entry
/// loads into the processor and VM exit stores back), and the MSRs VMCS02 and VMCS01 hold in
/// guest-state fields
/// (IA32_SYSENTER_CS/ESP/EIP, IA32_PAT, IA32_DEBUGCTL; IA32_EFER read only): read from L2's
/// state at an exit, loaded into VMCS02 after VM entry's guest state or into L1's state after
/// the exit's host state (`FieldLoads::apply`). Every other MSR faults (a failed entry, a VMX
/// abort), as the WRMSR or RDMSR would.
struct ListMsrs<'a, L: VmcsRead> {
    vmx: &'a MsrSnapshot,
    scratch: u64,
    /// L0's MSR area with IA32_KERNEL_GS_BASE.
    kernel_gs_base: Option<&'static MsrArea<1>>,
    /// L2's state at the exit (VMCS02), for the VM-exit MSR-store area.
    l2: Option<&'a L>,
    /// Loads of MSRs held in guest-state fields, in order.
    loads: FieldLoads,
    /// Entries processed.
    processed: u64,
}

/// Loads of VMCS-held MSRs one list may make before L0 refuses further ones (a VM-entry failure
/// or VMX abort where the processor would load them all, up to `IA32_VMX_MISC[27:25]`'s
/// maximum: a limit of this L0, far above what a hypervisor lists).
const PENDING_MAX: usize = 16;

impl<'a, L: VmcsRead> ListMsrs<'a, L> {
    fn new(vmx: &'a MsrSnapshot, host: &mut dyn L1Host, l2: Option<&'a L>) -> Self {
        Self {
            vmx,
            scratch: *host.scratch_msr(),
            kernel_gs_base: host.kernel_gs_base_area(),
            l2,
            loads: FieldLoads {
                entries: [(0, 0); PENDING_MAX],
                count: 0,
            },
            processed: 0,
        }
    }

    /// The guest-state field that holds `msr`.
    fn field(msr: u32) -> Option<u32> {
        use vmx_caps::msr as m;
        Some(match msr {
            m::IA32_SYSENTER_CS => fields::GUEST_IA32_SYSENTER_CS.encoding(),
            m::IA32_SYSENTER_ESP => fields::GUEST_IA32_SYSENTER_ESP.encoding(),
            m::IA32_SYSENTER_EIP => fields::GUEST_IA32_SYSENTER_EIP.encoding(),
            m::IA32_PAT => fields::GUEST_IA32_PAT.encoding(),
            m::IA32_DEBUGCTL => fields::GUEST_IA32_DEBUGCTL.encoding(),
            m::IA32_EFER => fields::GUEST_IA32_EFER.encoding(),
            _ => return None,
        })
    }
}

/// What an MSR list loaded into MSRs that guest-state fields hold: (field encoding, value), in
/// list order.
#[derive(Clone, Copy)]
struct FieldLoads {
    entries: [(u32, u64); PENDING_MAX],
    count: usize,
}

impl FieldLoads {
    /// Writes the loads into `v` (VMCS02 after VM entry, VMCS01 after an exit), in list order.
    fn apply(&self, v: &mut impl VmcsWrite) -> Result<(), VmFail> {
        for &(field, value) in &self.entries[..self.count] {
            v.write_raw(field, value)?;
        }
        Ok(())
    }
}

/// Whether `address` is canonical for 48-bit linear addresses (WRMSR of IA32_SYSENTER_ESP/EIP
/// faults otherwise).
fn canonical48(address: u64) -> bool {
    ((address << 16) as i64 >> 16) as u64 == address
}

/// Whether every entry of a PAT value is a memory type (0, 1, 4, 5, 6, 7; WRMSR faults otherwise).
fn valid_pat(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4..=7))
}

impl<L: VmcsRead> GuestMsrs for ListMsrs<'_, L> {
    fn read(&mut self, msr: u32) -> Option<u64> {
        self.processed += 1;
        use vmx_caps::msr as m;
        let l2 = |f: u32| self.l2.and_then(|v| v.read_raw(f).ok());
        match msr {
            abi::MSR_SCRATCH => Some(self.scratch),
            m::IA32_KERNEL_GS_BASE => self.kernel_gs_base?.data_of(msr),
            m::IA32_FEATURE_CONTROL => Some(abi::FEATURE_CONTROL_NESTED_VALUE),
            0x480..=0x493 => self.vmx.get(msr),
            m::IA32_TIME_STAMP_COUNTER => {
                let v = self.l2?;
                let offsetting = v
                    .read_controls()
                    .ok()?
                    .proc
                    .contains(PrimaryControls::USE_TSC_OFFSETTING);
                let offset = if offsetting {
                    v.read_raw(fields::TSC_OFFSET.encoding()).ok()?
                } else {
                    0
                };
                Some(super::probe::rdtsc().wrapping_add(offset))
            }
            _ => Self::field(msr).and_then(l2),
        }
    }

    fn write(&mut self, msr: u32, value: u64) -> bool {
        self.processed += 1;
        use vmx_caps::msr as m;
        let ok = match msr {
            abi::MSR_SCRATCH => {
                self.scratch = value;
                return true;
            }
            m::IA32_KERNEL_GS_BASE => {
                let slot = self
                    .kernel_gs_base
                    .and_then(|a| Some((a, a.iter().position(|e| e.index == msr)?)));
                if let Some((area, i)) = slot
                    && canonical48(value)
                {
                    return area.set_data(i, value);
                }
                false
            }
            m::IA32_SYSENTER_CS => true,
            m::IA32_SYSENTER_ESP | m::IA32_SYSENTER_EIP => canonical48(value),
            m::IA32_PAT => valid_pat(value),
            // LBR (0), BTF (1), FREEZE_WHILE_SMM (14): the bits L0 lets a guest set.
            m::IA32_DEBUGCTL => value & !((1 << 0) | (1 << 1) | (1 << 14)) == 0,
            _ => false,
        };
        match Self::field(msr) {
            Some(field) if ok && self.loads.count < PENDING_MAX => {
                self.loads.entries[self.loads.count] = (field, value);
                self.loads.count += 1;
                true
            }
            _ => {
                println!(
                    "mini-hv: nested: an MSR list of L1 loads {value:#x} into MSR {msr:#x},                      which faults"
                );
                false
            }
        }
    }
}

fn read_u64(mem: &GuestMemory, gpa: u64) -> Option<u64> {
    let mut bytes = [0u8; 8];
    mem.read(gpa, &mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

impl Nested {
    /// The state for a guest of a processor with capabilities `real`, whose VMCS (VMCS01) is at
    /// `vmcs01_phys` with the bitmaps `l0_msr` and `l0_io`; `None` (printed) when the policy
    /// cannot be applied or memory is short. The vCPU keeps it in frames of its own
    /// ([`Nested::into_frames`]).
    pub fn new(
        real: &VmxCapabilities,
        vmcs01_phys: u64,
        l0_msr: &'static MsrBitmap,
        l0_io: &'static IoBitmaps,
        shadowing: bool,
    ) -> Option<Self> {
        let virt = match policy(real).virtualize(real) {
            Ok(v) => v,
            Err(e) => {
                println!("mini-hv: nested: cannot make L1's capabilities: {e}");
                return None;
            }
        };
        let l1 = match L1VmxState::new(&virt.caps, super::phys_addr_width()) {
            Ok(l1) => l1,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return None;
            }
        };
        let (Some(vmcs02), Some(msr_frame), Some(io_frames), Some(apic_scratch)) = (
            crate::mem::alloc_frame(),
            crate::mem::alloc_frame(),
            crate::mem::alloc_frames(2),
            crate::mem::alloc_frame(),
        ) else {
            println!("mini-hv: nested: out of memory for VMCS02 and its bitmaps");
            return None;
        };
        // SAFETY: a fresh identity-mapped frame, used only as VMCS02 from here on.
        unsafe { (vmcs02 as *mut u32).write(real.basic.revision_id()) };
        // SAFETY: fresh identity-mapped frames, used only as VMCS02's bitmaps.
        let (msr02, io02) = unsafe { super::bitmaps_in(msr_frame, io_frames) }?;
        // SAFETY: the kernel's frame allocator hands out identity-mapped frames.
        let p2v = unsafe { OffsetPhysToVirt::identity() };
        let config = EptConfig::new(real.ept_vpid, super::phys_addr_width());
        let ept02 = match EptMapper::new(config, p2v, super::KernelFrames) {
            Ok(ept) => ept,
            Err(e) => {
                println!("mini-hv: nested: cannot create EPT02: {}", e.error);
                return None;
            }
        };
        let shadow = if shadowing && real.proc2.allows(SecondaryControls::VMCS_SHADOWING) {
            Some(Self::shadow(real, &virt.caps)?)
        } else {
            None
        };
        // VMCS02 always has external-interrupt exiting (L0's): L2 with RFLAGS.IF = 1 (e.g. taking
        // a virtual interrupt L1 delivers) must not find the PIT's request pending on the 8259s,
        // which L1 cannot mask (its port writes are L0's to emulate).
        // SAFETY: ring 0; L0 uses no interrupt of the 8259s.
        unsafe { super::lapic::mask_8259s() };
        println!(
            "mini-hv: nested: VMX offered to the guest (VMCS revision {:#x}, VMCS02 at {vmcs02:#x}, \
             VMCS shadowing {})",
            abi::NESTED_VMCS_REVISION,
            if shadow.is_some() { "on" } else { "off" }
        );
        Some(Self {
            l1,
            msrs: virt.msrs,
            real: *real,
            vmcs01_phys,
            vmcs02_phys: vmcs02,
            msr02: MergedMsrBitmap::new(l0_msr, msr02),
            io02: MergedIoBitmaps::new(l0_io, io02),
            msr02_phys: msr_frame,
            io02_phys: io_frames,
            apic_scratch_phys: apic_scratch,
            shadow,
            ept02,
            ept02_for: None,
            vpid02_for: None,
            kept: None,
            phases: Phases::new(),
            stats: Stats {
                l1_instructions: 0,
                l2_entries: 0,
                l2_exits: [0; 96],
                reflected: 0,
                l1_entry_refused: 0,
                ept02_fills: 0,
                ept12_exits: 0,
                ept02_clears: 0,
                eptp_switches: 0,
                ve_delivered: 0,
                pml_logged: 0,
                pml_full: 0,
                vpid02_flushes: 0,
                l0_handled: 0,
                l0_exceptions_reflected: 0,
                list_msrs: 0,
                vmcs02_built: 0,
                vmcs02_kept: 0,
            },
        })
    }

    /// Moves the state into frames of its own, where it stays for the run: the vCPU holds it by
    /// reference, so lending it out around each emulated instruction moves no bytes.
    pub fn into_frames(self) -> Option<&'static mut Self> {
        let Some(at) = crate::mem::alloc_frames(size_of::<Self>().div_ceil(4096)) else {
            println!("mini-hv: nested: out of memory for L0's nested state");
            return None;
        };
        let place = at as *mut Self;
        // SAFETY: fresh identity-mapped frames, 4-KiB aligned (more than `Self` needs) and
        // large enough, used only for this value from here on.
        unsafe {
            place.write(self);
            Some(&mut *place)
        }
    }

    /// The shadow VMCS (cleared, its header with the shadow-VMCS indicator) and the bitmaps for
    /// [`SHADOWED_FIELDS`] under L1's capabilities `l1`.
    fn shadow(real: &VmxCapabilities, l1: &VmxCapabilities) -> Option<Shadow> {
        let (Some(frame), Some(read_frame), Some(write_frame)) = (
            crate::mem::alloc_frame(),
            crate::mem::alloc_frame(),
            crate::mem::alloc_frame(),
        ) else {
            println!("mini-hv: nested: out of memory for the shadow VMCS");
            return None;
        };
        // SAFETY: a fresh identity-mapped frame, used only as the shadow VMCS from here on.
        unsafe { (frame as *mut u32).write(real.basic.revision_id() | 1 << 31) };
        // SAFETY: the frame is the shadow VMCS's (not current, never launched).
        if let Err(fail) = unsafe { vmx_core::instructions::vmclear(frame) } {
            println!("mini-hv: nested: VMCLEAR of the shadow VMCS failed: {fail}");
            return None;
        }
        // SAFETY: fresh identity-mapped frames, used only as these bitmaps.
        let bitmaps = unsafe {
            ShadowBitmap::from_frame(read_frame as *mut u8)
                .and_then(|r| Ok((r, ShadowBitmap::from_frame(write_frame as *mut u8)?)))
        };
        let (vmread, vmwrite) = match bitmaps {
            Ok(b) => b,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return None;
            }
        };
        shadow_bitmaps(&SHADOWED_FIELDS, l1, real, vmread, vmwrite);
        Some(Shadow {
            phys: frame,
            vmread,
            vmwrite,
            bitmaps_phys: (read_frame, write_frame),
            linked: false,
            enabled: false,
            syncs: 0,
        })
    }

    /// Prepares VMCS shadowing in VMCS01 (after L0 wrote it): the VMREAD/VMWRITE bitmaps and
    /// the link pointer FFFFFFFF_FFFFFFFFH; the control itself follows L1's VMXON and VMXOFF.
    pub fn attach(&mut self, vmcs: &mut Vmcs<'_>) -> Result<(), VmFail> {
        let Some(shadow) = &self.shadow else {
            return Ok(());
        };
        let (read, write) = shadow.bitmaps_phys;
        vmcs.write(fields::VMREAD_BITMAP_ADDRESS, read)?;
        vmcs.write(fields::VMWRITE_BITMAP_ADDRESS, write)?;
        vmcs.write(fields::VMCS_LINK_POINTER, u64::MAX)
    }

    /// Runs `f` with the shadow VMCS current, then makes VMCS01 current again.
    fn with_shadow<T>(
        phys: u64,
        vmcs01: u64,
        f: impl FnOnce(&mut HardwareVmcs) -> T,
    ) -> Result<T, VmFail> {
        // SAFETY: the shadow VMCS is this state's own cleared region; VMCS01 (the active VMCS of
        // the caller's handle) is current again before returning.
        unsafe { vmx_core::instructions::vmptrld(phys)? };
        // SAFETY: the shadow VMCS is current until the VMPTRLD below.
        let mut hw = unsafe { HardwareVmcs::new() };
        let result = f(&mut hw);
        // SAFETY: as above.
        unsafe { vmx_core::instructions::vmptrld(vmcs01)? };
        Ok(result)
    }

    /// Before L0 reads VMCS12 for L1: what L1 wrote through the shadow VMCS goes to VMCS12
    /// (the fields it changed marked dirty for a kept VMCS02).
    fn shadow_to_vmcs12(&mut self) -> Result<(), VmFail> {
        let Some(shadow) = &mut self.shadow else {
            return Ok(());
        };
        if !shadow.linked || self.l1.current_vmcs().is_none() {
            return Ok(());
        }
        shadow.syncs += 1;
        let vmwrite = &*shadow.vmwrite;
        let l1 = &mut self.l1;
        Self::with_shadow(shadow.phys, self.vmcs01_phys, |hw| {
            l1.sync_from_shadow(hw, &SHADOWED_FIELDS, vmwrite)
        })?
    }

    /// After L0 emulated a VMX instruction of L1: "VMCS shadowing" follows L1's VMX operation,
    /// VMCS01's link pointer L1's current VMCS, and the shadow VMCS gets VMCS12's fields (`full`)
    /// or, after an instruction that can change no shadowed field but the VM-instruction error,
    /// that field alone.
    fn vmcs12_to_shadow(&mut self, vmcs: &mut Vmcs<'_>, full: bool) -> Result<(), VmFail> {
        let Some(shadow) = &mut self.shadow else {
            return Ok(());
        };
        let in_vmx = self.l1.in_vmx_operation();
        if in_vmx != shadow.enabled {
            vmcs.modify(
                fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                |c| {
                    if in_vmx {
                        c | SecondaryControls::VMCS_SHADOWING
                    } else {
                        c - SecondaryControls::VMCS_SHADOWING
                    }
                },
            )?;
            shadow.enabled = in_vmx;
        }
        let current = self.l1.current_vmcs();
        let link = current.is_some();
        if link != shadow.linked {
            vmcs.write(
                fields::VMCS_LINK_POINTER,
                if link { shadow.phys } else { u64::MAX },
            )?;
            shadow.linked = link;
        }
        let Some(vmcs12) = current else {
            return Ok(());
        };
        shadow.syncs += 1;
        let vmread = &*shadow.vmread;
        let error = [fields::VM_INSTRUCTION_ERROR.encoding()];
        let list: &[u32] = if full { &SHADOWED_FIELDS } else { &error };
        Self::with_shadow(shadow.phys, self.vmcs01_phys, |hw| {
            sync_to_shadow(vmcs12, hw, list, vmread)
        })?
    }

    /// INVVPID of every translation tagged with [`VPID02`] on this processor (the only one that
    /// runs L2). Only called where L1 was offered VPID, so where
    /// `mini_hv_logic::nested_policy::vpid_flush_type` found a type.
    /// `false` (printed) where it could not be done.
    fn flush_vpid02(&mut self) -> Result<bool, VmFail> {
        let Some(kind) = mini_hv_logic::nested_policy::vpid_flush_type(&self.real.ept_vpid) else {
            println!("mini-hv: nested: no INVVPID type flushes VPID02 on this processor");
            return Ok(false);
        };
        let descriptor = match InvvpidDescriptor::new(kind, VPID02, 0) {
            Ok(descriptor) => descriptor,
            Err(e) => {
                println!("mini-hv: nested: INVVPID of VPID02: {e}");
                return Ok(false);
            }
        };
        self.stats.vpid02_flushes += 1;
        // SAFETY: VMX root operation, INVVPID with this type supported (`vpid_flush_type`).
        unsafe { vmx_core::instructions::invvpid(kind, &descriptor)? };
        Ok(true)
    }

    /// INVEPT of EPT02's translations on this processor (the only one that runs L2).
    fn invept02(&self) -> Result<(), VmFail> {
        let kind = InveptType::best_for(&self.real.ept_vpid).unwrap_or(InveptType::AllContext);
        let descriptor = InveptDescriptor::new(self.ept02.eptp().bits());
        // SAFETY: VMX root operation, INVEPT supported (EPT02 exists only with EPT).
        unsafe { vmx_core::instructions::invept(kind, &descriptor) }
    }

    /// Empties EPT02 (L1's INVEPT, or another EPTP12) and invalidates what was derived from it.
    fn clear_ept02(&mut self) -> Result<(), VmFail> {
        match clear_ept02(&mut self.ept02) {
            Ok(Some(flush)) => {
                self.stats.ept02_clears += 1;
                self.invept02()?;
                // SAFETY: `invept02` invalidated EPT02's translations on this, the only processor
                // that uses EPT02.
                unsafe { self.ept02.assume_flushed(flush) };
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                // Unmapping 4-KiB pages needs no frame; should the mapper refuse, the next
                // EPTP12 check empties it again.
                println!("mini-hv: nested: emptying EPT02 failed: {e}");
                self.ept02_for = None;
                Ok(())
            }
        }
    }

    /// RDMSR of a VMX capability MSR as L1 reads it (`None`: not a capability MSR L1 has).
    pub fn rdmsr(&self, msr: u32) -> Option<u64> {
        (0x480..=0x493).contains(&msr).then(|| self.msrs.get(msr))?
    }

    /// Whether L1 is in VMX operation (CR4.VMXE cannot be cleared then).
    pub fn in_vmx_operation(&self) -> bool {
        self.l1.in_vmx_operation()
    }

    /// L0 uses VMCS shadowing for L1's VMREAD and VMWRITE.
    pub fn shadowing(&self) -> bool {
        self.shadow.is_some()
    }

    /// Prints the nested run's statistics.
    pub fn print_stats(&self) {
        let s = &self.stats;
        println!(
            "mini-hv: nested: {} VMX instructions of L1 emulated, {} VM entries of L2, {} exits of \
             L2 reflected to L1, {} of L1's VMLAUNCH/VMRESUME ended in L1 (fault, VMfail or VM-entry failure)",
            s.l1_instructions, s.l2_entries, s.reflected, s.l1_entry_refused
        );
        println!(
            "mini-hv: nested: EPT02: {} pages filled from L2's EPT violations, {} exits EPT12 \
             caused reflected to L1, emptied {} times; VPID02 flushed {} times",
            s.ept02_fills, s.ept12_exits, s.ept02_clears, s.vpid02_flushes
        );
        println!(
            "mini-hv: nested: for L1's processor: {} EPTP switches (VMFUNC 0) of L2 completed, \
             {} EPT violations of L2 delivered as #VE, {} pages logged in L1's \
             page-modification log, {} page-modification log-full exits",
            s.eptp_switches, s.ve_delivered, s.pml_logged, s.pml_full
        );
        println!(
            "mini-hv: nested: {} exits of L2 handled by L0 for L2 (L1 does not intercept them), \
             {} exceptions L0 raised in L2 reflected to L1 (L1 intercepts them), {} MSR-list \
             entries of VMCS12 processed",
            s.l0_handled, s.l0_exceptions_reflected, s.list_msrs
        );
        println!(
            "mini-hv: nested: VMCS02 built {} times, kept for {} VMRESUMEs of L1 (only VMCS12's \
             changed fields written)",
            s.vmcs02_built, s.vmcs02_kept
        );
        println!(
            "mini-hv: nested: VMCS02's bitmaps: {} of 512 MSR-bitmap words and {} of 1024 \
             I/O-bitmap words follow L1's at each merge (L0 intercepts the rest whole)",
            self.msr02.open_words(),
            self.io02.open_words()
        );
        if let Some(shadow) = &self.shadow {
            println!(
                "mini-hv: nested: VMCS shadowing on: {} shadow-VMCS synchronizations",
                shadow.syncs
            );
        }
        for (reason, &count) in s.l2_exits.iter().enumerate() {
            if count != 0 {
                println!("mini-hv: nested: L2 exit reason {reason:2}: {count}");
            }
        }
        let p = &self.phases;
        if p.rounds != 0 {
            println!(
                "mini-hv: nested: L0's part of a round trip (L1's VMLAUNCH/VMRESUME exit to L1 \
                 resumed with L2's exit), mean TSC ticks over {} rounds:",
                p.rounds
            );
            for (name, sum) in PHASES.iter().zip(p.sums) {
                println!("mini-hv: nested:   {:>7}  {name}", sum / p.rounds);
            }
            println!(
                "mini-hv: nested:   {:>7}  total",
                p.sums.iter().sum::<u64>() / p.rounds
            );
        }
    }

    /// L1's processor state as its VMX instructions test it.
    fn context(vmcs: &Vmcs<'_>, cr: CrPolicy) -> Result<L1Context, VmFail> {
        let ss = vmcs.read(fields::GUEST_SS_ACCESS_RIGHTS)?;
        let cs = vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?;
        Ok(L1Context {
            cpl: ss.dpl(),
            cr0: cr.guest_cr0(vmcs)?,
            cr4: cr.guest_cr4(vmcs)?,
            rflags_vm: vmcs.read(fields::GUEST_RFLAGS)?.contains(Rflags::VM),
            efer_lma: vmcs.read(fields::GUEST_IA32_EFER)?.contains(Efer::LMA),
            cs_l: cs.long_mode(),
            blocked_by_mov_ss: vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?.bits() & 2 != 0,
        })
    }

    /// The guest-physical address of a memory operand (`Err`: the action for an unmapped one).
    fn operand(
        m: &MemoryOperand,
        displacement: u64,
        vmcs: &Vmcs<'_>,
        regs: &GuestRegisters,
        mem: &GuestMemory,
        write: bool,
    ) -> Result<Result<u64, Action>, VmFail> {
        let Ok(segment) = m.segment else {
            return Ok(Err(Action::InvalidOpcode));
        };
        let efer = vmcs.read(fields::GUEST_IA32_EFER)?;
        let long = efer.contains(Efer::LMA);
        let base = if long && !matches!(segment, GuestSegment::Fs | GuestSegment::Gs) {
            0
        } else {
            vmcs.read(segment.base_field())?
        };
        let rsp = vmcs.read(fields::GUEST_RSP)?;
        let Ok(linear) = m.linear_address_in(displacement, base, regs, rsp) else {
            return Ok(Err(Action::InvalidOpcode));
        };
        let paging = Paging::of(vmcs)?;
        Ok(match mem.translate(paging, linear) {
            Ok(gpa) => Ok(gpa),
            Err(_) => Err(Action::PageFault(if write { 2 } else { 0 }, linear)),
        })
    }

    /// Writes the outcome's arithmetic flags into L1's RFLAGS (SDM 31.2): the action to take.
    fn finish<T>(vmcs: &mut Vmcs<'_>, outcome: &VmxOutcome<T>) -> Result<Action, VmFail> {
        let Some((cf, zf)) = outcome.cf_zf() else {
            return Ok(match outcome {
                VmxOutcome::Fault(VmxFault::GeneralProtection) => Action::GeneralProtection,
                _ => Action::InvalidOpcode,
            });
        };
        let arithmetic =
            Rflags::CF | Rflags::PF | Rflags::AF | Rflags::ZF | Rflags::SF | Rflags::OF;
        let mut rflags = vmcs.read(fields::GUEST_RFLAGS)? - arithmetic;
        rflags.set(Rflags::CF, cf);
        rflags.set(Rflags::ZF, zf);
        vmcs.write(fields::GUEST_RFLAGS, rflags)?;
        Ok(Action::Skip)
    }

    /// Handles a VMX instruction exit of L1 (VMCALL excepted: the hypercall), with the shadow
    /// VMCS synchronized around it.
    pub fn instruction(
        &mut self,
        exit: &VmExit,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        self.stats.l1_instructions += 1;
        // VMREAD, VMWRITE, VMPTRST, INVEPT and INVVPID read no field L1 may have written through
        // the shadow VMCS and change none it shows but the VM-instruction error.
        let full = !matches!(
            exit,
            VmExit::Vmread { .. }
                | VmExit::Vmwrite { .. }
                | VmExit::Vmptrst { .. }
                | VmExit::Invept { .. }
                | VmExit::Invvpid { .. }
        );
        self.phases.stamp(0);
        if full {
            self.shadow_to_vmcs12()?;
        }
        self.phases.stamp(1);
        let error = |l1: &L1VmxState| {
            l1.current_vmcs()
                .and_then(|v| v.read_raw(fields::VM_INSTRUCTION_ERROR.encoding()).ok())
        };
        let error_before = error(&self.l1);
        let action = self.emulate(exit, vmcs, host, cr)?;
        // The others change nothing the shadow VMCS shows unless they VMfailValid with a new
        // error number: the shadow is left alone (with a value L1 may have written there).
        if full || error(&self.l1) != error_before {
            self.vmcs12_to_shadow(vmcs, full)?;
        }
        self.phases.end();
        Ok(action)
    }

    /// The emulation of one VMX instruction of L1.
    fn emulate(
        &mut self,
        exit: &VmExit,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        let cx = Self::context(vmcs, cr)?;
        match exit {
            VmExit::Vmlaunch { .. } => {
                return self.enter(&cx, EntryInstruction::Vmlaunch, vmcs, host, cr);
            }
            VmExit::Vmresume { .. } => {
                return self.enter(&cx, EntryInstruction::Vmresume, vmcs, host, cr);
            }
            _ => {}
        }
        let (regs, mem) = host.parts();
        let reg = |r: GpReg, vmcs: &Vmcs<'_>| -> Result<u64, VmFail> {
            match regs.gpr(r) {
                Some(v) => Ok(v),
                None => vmcs.read(fields::GUEST_RSP),
            }
        };
        macro_rules! address {
            ($m:expr, $d:expr, $write:expr) => {
                match Self::operand($m, $d, vmcs, regs, mem, $write)? {
                    Ok(gpa) => gpa,
                    Err(action) => return Ok(action),
                }
            };
        }
        macro_rules! pointer {
            ($m:expr, $d:expr) => {{
                let gpa = address!($m, $d, false);
                match read_u64(mem, gpa) {
                    Some(p) => PointerOperand::Memory(p),
                    None => return Ok(Action::GeneralProtection),
                }
            }};
        }
        let mut ram = Ram(mem);
        match exit {
            VmExit::Vmxon {
                displacement, info, ..
            } => {
                let p = pointer!(&info.0, *displacement);
                let o = self.l1.vmxon(&cx, p, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmxoff { .. } => {
                let o = self.l1.vmxoff(&cx, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmclear {
                displacement, info, ..
            } => {
                let p = pointer!(&info.0, *displacement);
                let o = self.l1.vmclear(&cx, p, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmptrld {
                displacement, info, ..
            } => {
                let p = pointer!(&info.0, *displacement);
                let o = self.l1.vmptrld(&cx, p, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmptrst {
                displacement, info, ..
            } => {
                let o = self.l1.vmptrst(&cx);
                if let VmxOutcome::Succeed(p) = o {
                    let gpa = address!(&info.0, *displacement, true);
                    if mem.write(gpa, &p.to_le_bytes()).is_err() {
                        return Ok(Action::GeneralProtection);
                    }
                }
                Self::finish(vmcs, &o)
            }
            VmExit::Vmread {
                displacement, info, ..
            } => {
                let field = reg(info.field_register, vmcs)?;
                let o = self.l1.vmread(&cx, field);
                if let VmxOutcome::Succeed(value) = o {
                    match info.operand {
                        Operand::Register(r) => match regs.set_gpr(r, value) {
                            Ok(()) => {}
                            Err(_) => vmcs.write(fields::GUEST_RSP, value)?,
                        },
                        Operand::Memory(m) => {
                            let gpa = address!(&m, *displacement, true);
                            if mem.write(gpa, &value.to_le_bytes()).is_err() {
                                return Ok(Action::GeneralProtection);
                            }
                        }
                    }
                }
                Self::finish(vmcs, &o)
            }
            VmExit::Vmwrite {
                displacement, info, ..
            } => {
                let field = reg(info.field_register, vmcs)?;
                let value = match info.operand {
                    Operand::Register(r) => reg(r, vmcs)?,
                    Operand::Memory(m) => {
                        let gpa = address!(&m, *displacement, false);
                        match read_u64(mem, gpa) {
                            Some(v) => v,
                            None => return Ok(Action::GeneralProtection),
                        }
                    }
                };
                let o = self.l1.vmwrite(&cx, field, value);
                Self::finish(vmcs, &o)
            }
            VmExit::Invept {
                displacement, info, ..
            } => {
                let kind = reg(info.register, vmcs)?;
                let descriptor = Self::descriptor(&info.memory, *displacement, vmcs, regs, mem)?;
                let descriptor = match descriptor {
                    Ok(d) => d,
                    Err(action) => return Ok(action),
                };
                let o = self.l1.invept(&cx, kind, descriptor);
                if let VmxOutcome::Succeed(_) = o {
                    // EPT02 holds only translations of L1's current EPTP12: any INVEPT type
                    // covers them.
                    self.clear_ept02()?;
                }
                Self::finish(vmcs, &o)
            }
            VmExit::Invvpid {
                displacement, info, ..
            } => {
                let kind = reg(info.register, vmcs)?;
                let descriptor = Self::descriptor(&info.memory, *displacement, vmcs, regs, mem)?;
                let descriptor = match descriptor {
                    Ok(d) => d,
                    Err(action) => return Ok(action),
                };
                let o = self.l1.invvpid(&cx, kind, descriptor, 48);
                // VPID02 holds only translations of the last VPID12 L2 ran with: flushing it
                // whole covers every type and VPID (more than asked, which INVVPID allows).
                if let VmxOutcome::Succeed(_) = o
                    && !self.flush_vpid02()?
                {
                    return Ok(Action::Stop);
                }
                Self::finish(vmcs, &o)
            }
            // VMFUNC of L1 itself: VMCS01 enables no VM functions (those offered are VMCS12's,
            // for L2, which `run_l2` emulates).
            _ => Ok(Action::InvalidOpcode),
        }
    }

    /// The 128-bit INVEPT/INVVPID descriptor at a memory operand.
    fn descriptor(
        m: &MemoryOperand,
        displacement: u64,
        vmcs: &Vmcs<'_>,
        regs: &GuestRegisters,
        mem: &GuestMemory,
    ) -> Result<Result<u128, Action>, VmFail> {
        let gpa = match Self::operand(m, displacement, vmcs, regs, mem, false)? {
            Ok(gpa) => gpa,
            Err(action) => return Ok(Err(action)),
        };
        let mut bytes = [0u8; 16];
        Ok(match mem.read(gpa, &mut bytes) {
            Ok(()) => Ok(u128::from_le_bytes(bytes)),
            Err(_) => Err(Action::GeneralProtection),
        })
    }

    /// Applies L0's CR0/CR4 policy to the L1 state a VM exit of L2 (or a failed entry) wrote
    /// into VMCS01: the guest-visible values go to the read shadows, the real registers get the
    /// bits L0 fixes.
    fn apply_cr_policy(vmcs: &mut Vmcs<'_>, cr: CrPolicy) -> Result<(), VmFail> {
        let cr0 = vmcs.read(fields::CR0_READ_SHADOW)?;
        let cr4 = vmcs.read(fields::CR4_READ_SHADOW)?;
        vmcs.write(fields::GUEST_CR0, cr.real_cr0(cr0))?;
        vmcs.write(fields::GUEST_CR4, cr.real_cr4(cr4))?;
        Ok(())
    }

    /// L1's VMLAUNCH or VMRESUME.
    fn enter(
        &mut self,
        cx: &L1Context,
        instruction: EntryInstruction,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        let mut lists = ListMsrs::<HardwareVmcs>::new(&self.msrs, host, None);
        let entry = {
            let (_, mem) = host.parts();
            self.l1.enter_l2(
                cx,
                instruction,
                CpuFacts::from_cpuid(),
                &mut Ram(mem),
                &mut |_: &check::Violation| {},
                &mut lists,
            )
        };
        self.phases.stamp(2);
        *host.scratch_msr() = lists.scratch;
        self.stats.list_msrs += lists.processed;
        let loads = lists.loads;
        match entry {
            Err(e) => {
                println!("mini-hv: nested: VMCS12 cannot be checked: {e}");
                Ok(Action::Stop)
            }
            Ok(L2Entry::Instruction(o)) => {
                self.stats.l1_entry_refused += 1;
                Self::finish(vmcs, &o)
            }
            Ok(L2Entry::EntryFailure { .. }) => {
                self.stats.l1_entry_refused += 1;
                // The entries loaded before the failing one stay loaded (into L1's registers,
                // which the host-state load then partly replaces).
                loads.apply(vmcs)?;
                self.exit_to_l1(vmcs, host, cr, None)
            }
            Ok(L2Entry::Enter) => self.run_l2(vmcs, host, cr, loads, instruction),
        }
    }

    /// L1's side of a VM exit: VMCS12's host state and VM-exit MSR-load area into L1's state
    /// (VMCS01), after a reflected exit of L2 whose first half is `saved`
    /// ([`L1VmxState::save_exit`]) or after a VM-entry failure (`None`).
    fn exit_to_l1(
        &mut self,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        cr: CrPolicy,
        saved: Option<SavedExit>,
    ) -> Result<Action, VmFail> {
        let mut lists = ListMsrs::<HardwareVmcs>::new(&self.msrs, host, None);
        let reflected = {
            let (_, mem) = host.parts();
            let mut ram = Ram(mem);
            match saved {
                Some(saved) => self.l1.complete_exit(saved, vmcs, &mut ram, &mut lists),
                None => self.l1.exit_after_failed_entry(vmcs, &mut ram, &mut lists),
            }
        };
        *host.scratch_msr() = lists.scratch;
        self.stats.list_msrs += lists.processed;
        let loads = lists.loads;
        match reflected {
            Ok(Reflected::Resume) => {
                loads.apply(vmcs)?;
                Self::apply_cr_policy(vmcs, cr)?;
                Ok(Action::Resume)
            }
            Ok(Reflected::Abort(abort)) => {
                println!("mini-hv: nested: VMX abort {abort:?} of L1 (shutdown)");
                Ok(Action::Stop)
            }
            Err(e) => {
                println!("mini-hv: nested: reflecting to L1 failed: {e}");
                Ok(Action::Stop)
            }
        }
    }

    /// Makes VMCS01 current again.
    fn back_to_vmcs01(&self) -> Result<(), VmFail> {
        // SAFETY: VMCS01 is the active VMCS of this processor's `Vmcs` handle, which the caller
        // holds; it was current before `run_l2` made VMCS02 current.
        unsafe { vmx_core::instructions::vmptrld(self.vmcs01_phys) }
    }

    /// The index of VMCS01's pin-based controls in [`Nested::l1_inputs`].
    const INPUT_PIN01: usize = 5;

    /// What of VMCS01 (L1's state) goes into VMCS02 besides L0's constant host state: L1's
    /// IA32_EFER, IA32_PAT, DR7 and IA32_DEBUGCTL (L2's where VMCS12 loads none), the TSC
    /// offset, and the controls L0 takes from it.
    fn l1_inputs(vmcs: &Vmcs<'_>) -> Result<[u64; 8], VmFail> {
        let c01 = vmcs.read_controls()?;
        Ok([
            vmcs.read_raw(fields::GUEST_IA32_EFER.encoding())?,
            vmcs.read_raw(fields::GUEST_IA32_PAT.encoding())?,
            vmcs.read_raw(fields::GUEST_DR7.encoding())?,
            vmcs.read_raw(fields::GUEST_IA32_DEBUGCTL.encoding())?,
            vmcs.read_raw(fields::TSC_OFFSET.encoding())?,
            c01.pin.bits().into(),
            c01.proc.bits().into(),
            c01.exit.bits().into(),
        ])
    }

    /// Whether a change of VMCS12's field `info` can be carried into a kept VMCS02 by copying
    /// it (`Some(true)`), needs no action (`Some(false)`: the VM-exit information and the host
    /// state, which VMCS02 does not take from VMCS12), or needs VMCS02 built again (`None`): the
    /// guest state but
    /// the fields VMCS02 derives from more than the field itself (CR0 and CR4 with the read
    /// shadows, the registers VMCS02 may load with L1's values, the link pointer, the
    /// VMX-preemption timer), and the VM-entry event fields.
    fn carried(info: &FieldInfo) -> Option<bool> {
        let e = info.encoding;
        let derived = [
            fields::GUEST_CR0.encoding(),
            fields::GUEST_CR4.encoding(),
            fields::GUEST_IA32_EFER.encoding(),
            fields::GUEST_IA32_PAT.encoding(),
            fields::GUEST_DR7.encoding(),
            fields::GUEST_IA32_DEBUGCTL.encoding(),
            fields::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(),
            fields::VMCS_LINK_POINTER.encoding(),
        ];
        let events = [
            fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
            fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
            fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
        ];
        match info.field_type() {
            // VMCS02's host state is L0's; VMCS12's is read when an exit is reflected.
            FieldType::ExitInformation | FieldType::HostState => Some(false),
            // Written again at every reuse ([`Nested::reuse_vmcs02`]).
            _ if e == fields::VMX_PREEMPTION_TIMER_VALUE.encoding() => Some(false),
            FieldType::GuestState if !derived.contains(&e) => Some(true),
            _ if events.contains(&e) => Some(true),
            _ => None,
        }
    }

    /// VMCS02 made current for L1's VMRESUME of VMCS12 at `pointer` without being built again,
    /// where the VMCS02 of its last entry is still valid: the same VMCS12, L1's changes since
    /// (`dirty`) all carried by a copy ([`Nested::carried`]), the same inputs from VMCS01.
    /// VMCS02 then gets the changed fields, the VMX-preemption timer value as a new build would
    /// give it (the earlier of L1's and L0's, [`vmcs02_preemption_timer`]), and the bitmaps
    /// merged again where they come from L1's memory (which L1 may have changed without a
    /// VMWRITE). `None`: build it.
    fn reuse_vmcs02(
        &mut self,
        pointer: u64,
        dirty: &DirtyFields,
        inputs: &[u64; 8],
        l0_timer: u32,
        host: &mut dyn L1Host,
    ) -> Result<Option<Vmcs02>, VmFail> {
        let Some(kept) = self.kept.as_ref() else {
            return Ok(None);
        };
        let Some(vmcs12) = self.l1.current_vmcs() else {
            return Ok(None);
        };
        if kept.pointer != pointer
            || kept.inputs != *inputs
            || dirty.is_all()
            || dirty.iter().any(|f| Self::carried(f).is_none())
        {
            return Ok(None);
        }
        let c12 = vmcs12.read_controls()?;
        let activate = PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER;
        let l1_timer = if c12.pin.contains(activate) {
            Some(vmcs12.read_raw(fields::VMX_PREEMPTION_TIMER_VALUE.encoding())? as u32)
        } else {
            None
        };
        // L0 wants the timer while L2 runs where VMCS01 has it (`build_vmcs02`'s own controls).
        let l0_wants = inputs[Self::INPUT_PIN01] & u64::from(activate.bits()) != 0;
        let timer = vmcs02_preemption_timer(l1_timer, l0_wants.then_some(l0_timer));
        let mut built = kept.built;
        if c12.proc.contains(PrimaryControls::USE_MSR_BITMAPS)
            || c12.proc.contains(PrimaryControls::USE_IO_BITMAPS)
        {
            let (_, mem) = host.parts();
            let mut ram = Ram(mem);
            let merged = self
                .msr02
                .merge(vmcs12, &mut ram)
                .and_then(|()| self.io02.merge(vmcs12, &mut ram));
            if merged.is_err() {
                return Ok(None);
            }
        }
        // SAFETY: VMCS02's region is this state's own, launched by the entry `kept` records;
        // VMPTRLD makes it current (VMCS01 stays active and becomes current again later).
        unsafe { vmx_core::instructions::vmptrld(self.vmcs02_phys)? };
        // SAFETY: VMCS02 is current until `back_to_vmcs01`.
        let mut hw = unsafe { HardwareVmcs::new() };
        for f in dirty.iter() {
            if Self::carried(f) == Some(true) {
                hw.write_raw(f.encoding, vmcs12.read_raw(f.encoding)?)?;
            }
        }
        if let Some((value, is_l1s)) = timer {
            hw.write(fields::VMX_PREEMPTION_TIMER_VALUE, value)?;
            built.timer_start = value;
            built.timer_is_l1s = is_l1s;
            built.timer_l1 = l1_timer.unwrap_or(0);
        }
        self.stats.vmcs02_kept += 1;
        Ok(Some(built))
    }

    /// Runs L2 with VMCS02 until an exit that belongs to L1, then reflects it. `entry_msrs`
    /// holds what VMCS12's VM-entry MSR-load area loaded into registers VMCS02 has fields for.
    fn run_l2(
        &mut self,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        cr: CrPolicy,
        entry_msrs: FieldLoads,
        instruction: EntryInstruction,
    ) -> Result<Action, VmFail> {
        // EPTP12, when L1 uses EPT; EPT02 must hold only its translations. VPID12, when L1 uses
        // VPID; VPID02 likewise.
        let (pointer, mut eptp12, vpid12) =
            match (self.l1.current_pointer(), self.l1.current_vmcs()) {
                (Some(pointer), Some(v12)) => {
                    let proc2 = v12.read_controls()?.proc2;
                    (
                        pointer,
                        proc2
                            .contains(SecondaryControls::ENABLE_EPT)
                            .then(|| v12.read_raw(fields::EPT_POINTER.encoding()))
                            .transpose()?,
                        proc2
                            .contains(SecondaryControls::ENABLE_VPID)
                            .then(|| v12.read(fields::VIRTUAL_PROCESSOR_IDENTIFIER))
                            .transpose()?,
                    )
                }
                _ => return Ok(Action::Stop),
            };
        if eptp12.is_some() && self.ept02_for != eptp12 {
            self.clear_ept02()?;
            self.ept02_for = eptp12;
        }
        if vpid12.is_some() && self.vpid02_for != vpid12 {
            if !self.flush_vpid02()? {
                return Ok(Action::Stop);
            }
            self.vpid02_for = vpid12;
        }
        let dirty = self.l1.take_dirty();
        let inputs = Self::l1_inputs(vmcs)?;
        let l0_timer = vmcs
            .read_raw(fields::VMX_PREEMPTION_TIMER_VALUE.encoding())
            .map_or(u32::MAX, |v| v as u32);
        let kept = match instruction {
            EntryInstruction::Vmresume => {
                self.reuse_vmcs02(pointer, &dirty, &inputs, l0_timer, host)?
            }
            EntryInstruction::Vmlaunch => None,
        };
        self.kept = None;
        let (built, launched) = match kept {
            Some(built) => (built, true),
            None => match self.build_vmcs02(vmcs, host, cr, eptp12, l0_timer)? {
                Some(built) => (built, false),
                None => return Ok(Action::Stop),
            },
        };
        // SAFETY: VMCS02 is current until `back_to_vmcs01`.
        let mut hw = unsafe { HardwareVmcs::new() };
        // SDM 27.4: the VM-entry MSR-load area is loaded after the guest state.
        entry_msrs.apply(&mut hw)?;
        if self.l1.current_vmcs().is_none() {
            self.back_to_vmcs01()?;
            return Ok(Action::Stop);
        }
        // L1's VMX-preemption timer runs in VMCS02: L2's HLT then waits for it, not for L0's.
        let l1_timer_governs = built.timer_is_l1s
            && built
                .controls
                .pin
                .contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
        // VMLAUNCH of a VMCS02 built anew, VMRESUME of a kept one and after each exit L0
        // handles itself (an EPT violation EPT02 lacked a page for, an exit L1 does not
        // intercept), until an exit that is L1's.
        let mut cache = HostStateCache::new();
        let mut launched = launched;
        self.phases.stamp(3);
        let reflect_info = loop {
            self.stats.l2_entries += 1;
            let entered = {
                let (regs, _) = host.parts();
                // SAFETY: VMCS02 is current; its host state is VMCS01's (this host) with
                // HOST_RSP and HOST_RIP the trampoline's (written through `cache`); it runs L2
                // on EPT02 or L0's EPT of L1's memory; CR4.OSFXSR set, CR0.TS/EM clear (boot
                // code).
                unsafe { vmcs.processor_mut().vm_entry(regs, &mut cache, launched) }
            };
            if let Err(fail) = entered {
                self.back_to_vmcs01()?;
                println!("mini-hv: nested: VM entry of VMCS02 failed: {fail}");
                return Ok(Action::Stop);
            }
            let reason = match ExitReason::read(&hw) {
                Ok(reason) => reason,
                Err(e) => {
                    self.back_to_vmcs01()?;
                    println!("mini-hv: nested: cannot read L2's exit reason: {e}");
                    return Ok(Action::Stop);
                }
            };
            if reason.entry_failure {
                let q = hw.read_raw(fields::EXIT_QUALIFICATION.encoding())?;
                self.back_to_vmcs01()?;
                println!("mini-hv: nested: VMCS02 failed VM entry: {reason}, qualification {q}");
                return Ok(Action::Stop);
            }
            launched = true;
            if let Some(count) = self
                .stats
                .l2_exits
                .get_mut(usize::from(reason.basic.number()))
            {
                *count += 1;
            }
            let exit = match VmExit::read_for(reason, &hw) {
                Ok(exit) => exit,
                Err(e) => {
                    self.back_to_vmcs01()?;
                    println!("mini-hv: nested: cannot read L2's exit: {e}");
                    return Ok(Action::Stop);
                }
            };
            let rsp = hw.read_raw(fields::GUEST_RSP.encoding())?;
            // VMCS12 again at each exit: L2's EPTP switching changes it.
            let Some(vmcs12) = self.l1.current_vmcs() else {
                self.back_to_vmcs01()?;
                return Ok(Action::Stop);
            };
            let owner = {
                let (regs, mem) = host.parts();
                let l2 = L2Registers {
                    frame: regs,
                    rsp,
                    ia32_xss: 0,
                };
                exit_owner(&exit, vmcs12, &mut Ram(mem), &l2, built.timer_is_l1s)?
            };
            let rip = hw.read_raw(fields::GUEST_RIP.encoding())?;
            let exit = match (owner, exit, eptp12) {
                // VMCS02's VM-function controls are 0: L0 does what L1's processor would.
                (ExitOwner::L1, VmExit::Vmfunc { length }, _) => {
                    let (regs, mem) = host.parts();
                    let (eax, ecx) = (regs.rax, regs.rcx);
                    match self.l1.vmfunc(eax, ecx, &mut Ram(mem))? {
                        VmfuncOutcome::Exit => break None,
                        VmfuncOutcome::Switched { eptp, changed, .. } => {
                            self.stats.eptp_switches += 1;
                            if changed {
                                // EPT02 held EPTP12's translations: emptied, refilled on demand.
                                self.ept02_for = Some(eptp);
                                self.clear_ept02()?;
                                eptp12 = Some(eptp);
                            }
                            let flow: Flow<Stopped> = skip(vmcs, length.get());
                            if flow?.is_break() {
                                self.back_to_vmcs01()?;
                                return Ok(Action::Stop);
                            }
                            continue;
                        }
                    }
                }
                (ExitOwner::L1, ..) => break None,
                (
                    ExitOwner::Ept12,
                    VmExit::EptViolation {
                        guest_physical,
                        idt_vectoring,
                        ..
                    },
                    Some(eptp12),
                ) => {
                    let qualification = hw.read_raw(fields::EXIT_QUALIFICATION.encoding())?;
                    // L1's page-modification log, with VMCS02's PML index: the live one (copied
                    // from VMCS12 at the build, L1's VMWRITEs carried in, saved back to VMCS12
                    // at a reflected exit).
                    let mut pml = if vmcs12
                        .read_controls()?
                        .proc2
                        .contains(SecondaryControls::ENABLE_PML)
                    {
                        Some(Pml12 {
                            address: vmcs12.read_raw(fields::PML_ADDRESS.encoding())?,
                            index: hw.read(fields::PML_INDEX)?,
                        })
                    } else {
                        None
                    };
                    let index_before = pml.map(|p| p.index);
                    let (_, mem) = host.parts();
                    let resolved = resolve_ept_violation(
                        eptp12,
                        self.l1.caps().ept_vpid,
                        super::phys_addr_width(),
                        guest_physical,
                        qualification,
                        &mut Ram(mem),
                        &L1Ram(mem),
                        &mut self.ept02,
                        pml.as_mut(),
                    );
                    if let Some(p) = pml
                        && Some(p.index) != index_before
                    {
                        self.stats.pml_logged += 1;
                        hw.write(fields::PML_INDEX, p.index)?;
                    }
                    match resolved {
                        Ok(Ept02Resolution::Mapped { flush, .. }) => {
                            self.stats.ept02_fills += 1;
                            self.invept02()?;
                            // SAFETY: `invept02` invalidated EPT02's translations on this, the
                            // only processor that uses EPT02.
                            unsafe { self.ept02.assume_flushed(flush) };
                            // An event whose delivery the fill interrupted (e.g. a #VE L0
                            // injected, through an IDT or stack page EPT02 lacked) is delivered
                            // again (SDM 28.2.4 "Information for VM Exits During Event
                            // Delivery").
                            if let Some(event) = idt_vectoring
                                && let Err(e) = reinject(&mut hw, &event)
                            {
                                self.back_to_vmcs01()?;
                                println!(
                                    "mini-hv: nested: L2's interrupted event cannot be \
                                     delivered again: {e}"
                                );
                                return Ok(Action::Stop);
                            }
                            continue;
                        }
                        Ok(Ept02Resolution::Reflect(e)) => {
                            // A #VE in L2 where L1's processor would convert the violation.
                            let ve = deliver_ve(&e, vmcs12, &mut hw, &built, &mut Ram(mem))?;
                            if ve == VeDelivery::Delivered {
                                self.stats.ve_delivered += 1;
                                if let Some(info) = Self::intercepted_injection(&mut hw, vmcs12)? {
                                    self.stats.l0_exceptions_reflected += 1;
                                    break Some(info);
                                }
                                continue;
                            }
                            self.stats.ept12_exits += 1;
                            break Some(e.exit_info(&hw));
                        }
                        Ok(Ept02Resolution::PmlFull(e)) => {
                            self.stats.pml_full += 1;
                            break Some(e.exit_info(&hw));
                        }
                        Ok(Ept02Resolution::L1Access { l1_physical }) => {
                            self.back_to_vmcs01()?;
                            println!(
                                "mini-hv: nested: L2 at RIP {rip:#x} reaches L1-physical \
                                 {l1_physical:#x}, which is not L1's RAM; stopping"
                            );
                            return Ok(Action::Stop);
                        }
                        Err(e) => {
                            self.back_to_vmcs01()?;
                            println!("mini-hv: nested: EPT02: {e}; stopping");
                            return Ok(Action::Stop);
                        }
                    }
                }
                (_, exit, _) => exit,
            };
            // L0's own exit of L2: what L1's processor does with it, on L2's behalf.
            self.stats.l0_handled += 1;
            match self.l0_exit(
                exit,
                &mut hw,
                vmcs,
                host,
                l1_timer_governs,
                vmcs12,
                cr,
                eptp12,
            )? {
                ControlFlow::Continue(()) => {}
                ControlFlow::Break(()) => {
                    self.back_to_vmcs01()?;
                    println!("mini-hv: nested: L0 stopped L2 at RIP {rip:#x}");
                    return Ok(Action::Stop);
                }
            }
            // An exception L0 raised in L2 that L1 intercepts is an exit to L1 instead.
            if let Some(info) = Self::intercepted_injection(&mut hw, vmcs12)? {
                self.stats.l0_exceptions_reflected += 1;
                break Some(info);
            }
        };
        self.phases.stamp(4);
        self.phases.reflected = true;
        // The first half of the exit, from VMCS02 while it is current: exit information,
        // L2's state and the VM-exit MSR-store area into VMCS12.
        self.stats.reflected += 1;
        let saved = {
            let mut lists = ListMsrs::new(&self.msrs, host, Some(&hw));
            let (_, mem) = host.parts();
            let mut ram = Ram(mem);
            let saved = match &reflect_info {
                Some(info) => self.l1.save_exit(info, &hw, &built, &mut ram, &mut lists),
                None => self.l1.save_exit(&hw, &hw, &built, &mut ram, &mut lists),
            };
            self.stats.list_msrs += lists.processed;
            saved
        };
        self.back_to_vmcs01()?;
        let saved = match saved {
            Ok(saved) => saved,
            Err(e) => {
                println!("mini-hv: nested: reflecting L2's exit failed: {e}");
                return Ok(Action::Stop);
            }
        };
        self.phases.stamp(5);
        // VMCS02 now holds L2's state as VMCS12 does (but what VMCS12 does not save): kept for
        // L1's next VMRESUME of this VMCS12.
        self.kept = Some(Kept {
            pointer,
            built,
            inputs,
        });
        self.exit_to_l1(vmcs, host, cr, Some(saved))
    }

    /// VMCS02 built anew from VMCS12 (VMCLEAR, then every field): `None` (printed, VMCS01
    /// current) when it cannot be.
    fn build_vmcs02(
        &mut self,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        cr: CrPolicy,
        eptp12: Option<u64>,
        l0_timer: u32,
    ) -> Result<Option<Vmcs02>, VmFail> {
        let Some(vmcs12) = self.l1.current_vmcs() else {
            return Ok(None);
        };
        {
            let (_, mem) = host.parts();
            let mut ram = Ram(mem);
            let merged = self
                .msr02
                .merge(vmcs12, &mut ram)
                .and_then(|()| self.io02.merge(vmcs12, &mut ram));
            if let Err(e) = merged {
                println!("mini-hv: nested: {e}");
                return Ok(None);
            }
        }
        // VMCS01 (current) as software: L0's host state, L1's registers.
        let vmcs01 = match SoftVmcs::from_snapshot(&self.real, &VmcsSnapshot::capture(vmcs)?) {
            Ok(v) => v,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return Ok(None);
            }
        };
        let c01 = vmcs.read_controls()?;
        let mut own = ControlSet::EMPTY;
        own.pin = c01.pin
            & (PinBasedControls::EXTERNAL_INTERRUPT_EXITING
                | PinBasedControls::NMI_EXITING
                | PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
        // L0 waits out L2's HLT itself where L1 lets it through (its wake-up timer).
        own.proc = c01.proc & PrimaryControls::HLT_EXITING;
        own.exit = c01.exit;
        // VMCS02 runs on EPT: EPT02 (EPT12 composed with L0's EPT of L1's RAM) where L1 uses
        // EPT, else L0's EPT for L1 itself.
        own.proc2 = SecondaryControls::ENABLE_EPT;
        let io02 = self.io02_phys;
        let apic_pages = {
            let (_, mem) = host.parts();
            match ApicPages02::of(vmcs12, &L1Ram(mem), self.apic_scratch_phys) {
                Ok(pages) => pages,
                Err(e) => {
                    println!("mini-hv: nested: {e}");
                    return Ok(None);
                }
            }
        };
        if apic_pages.virtual_apic == self.apic_scratch_phys {
            // Memory outside L1's RAM reads as all ones, and so does the virtual-APIC page
            // VMCS12 puts there at each VM entry.
            // SAFETY: L0's own identity-mapped frame, which no EPT maps and nothing else uses.
            unsafe { core::ptr::write_bytes(self.apic_scratch_phys as *mut u8, 0xff, 4096) };
        }
        let part = L0Part {
            controls: own,
            exceptions: vmcs::ExceptionBitmap::empty(),
            cr0_mask: cr.cr0_mask().bits(),
            cr4_mask: cr.cr4_mask().bits(),
            eptp: match eptp12 {
                Some(_) => self.ept02.eptp().bits(),
                None => vmcs.read_raw(fields::EPT_POINTER.encoding())?,
            },
            vpid: VPID02,
            msr_bitmap: self.msr02_phys,
            io_bitmaps: (io02, io02 + 4096),
            preemption_timer: l0_timer,
            apic_pages,
        };
        // SAFETY: VMCS02's region is this state's own frame with the processor's revision; VMCLEAR
        // and VMPTRLD make it current (VMCS01 stays active and becomes current again later).
        unsafe {
            vmx_core::instructions::vmclear(self.vmcs02_phys)?;
            vmx_core::instructions::vmptrld(self.vmcs02_phys)?;
        }
        // SAFETY: VMCS02 is current until `back_to_vmcs01`.
        let mut hw = unsafe { HardwareVmcs::new() };
        match build_vmcs02(vmcs12, &vmcs01, &part, &self.real, &mut hw) {
            Ok(built) => {
                self.stats.vmcs02_built += 1;
                Ok(Some(built))
            }
            Err(e) => {
                self.back_to_vmcs01()?;
                println!("mini-hv: nested: cannot build VMCS02: {e}");
                Ok(None)
            }
        }
    }

    /// An exit of L2 that L1 does not intercept, handled by L0 as L1's processor would: L2 runs
    /// on L1's (virtual) processor, so its RDMSR, WRMSR, I/O, HLT, EPT violations outside EPT12
    /// (L0's MMIO device), external interrupts and L0's timer meet what L1's own would, on
    /// VMCS02 (current); the VMX capability MSRs L1 is shown and L2's MOV to CR0/CR4 of bits
    /// only L0 owns ([`Nested::l2_mov_to_cr`]), L0 answers here. `Break`: L0 stops L2
    /// (printed). With the local-APIC-timer fallback instead of the VMX-preemption timer, L2's
    /// HLT resumes at once and L0 waits out the wake-up before L1's next entry.
    #[allow(clippy::too_many_arguments)]
    fn l0_exit(
        &self,
        exit: VmExit,
        hw: &mut HardwareVmcs,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        l1_timer_governs: bool,
        vmcs12: &SoftVmcs,
        cr: CrPolicy,
        eptp12: Option<u64>,
    ) -> Result<ControlFlow<()>, VmFail> {
        let stopped = |flow: Flow<Stopped>| flow.map(|f| f.map_break(|Stopped| ()));
        match exit {
            VmExit::Rdmsr { length } => {
                let (regs, _) = host.parts();
                let msr = regs.rcx as u32;
                if let Some(value) = self.vmx_msr(msr) {
                    regs.rax = value & 0xffff_ffff;
                    regs.rdx = value >> 32;
                    return stopped(skip(vmcs, length.get()));
                }
            }
            VmExit::Wrmsr { .. } => {
                let (regs, _) = host.parts();
                if self.vmx_msr(regs.rcx as u32).is_some() {
                    // Read-only (IA32_FEATURE_CONTROL is locked).
                    return stopped(inject(vmcs, Exception::GP, Some(0)));
                }
            }
            // With L1's VMX-preemption timer in VMCS02, L2's HLT lasts until that timer expires
            // (an exit of L1's) rather than until L0's wake-up.
            VmExit::Hlt { length } if l1_timer_governs => {
                if stopped(skip(vmcs, length.get()))?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
                hw.write(fields::GUEST_ACTIVITY_STATE, ActivityState::Hlt)?;
                return Ok(ControlFlow::Continue(()));
            }
            VmExit::ControlRegisterAccess {
                qualification: q,
                length,
                ..
            } if q.access_type == CrAccessType::MovToCr && matches!(q.cr, 0 | 4) => {
                let mov = L2MovToCr {
                    cr0: q.cr == 0,
                    gpr: q.gpr,
                    length: length.get(),
                };
                return self.l2_mov_to_cr(mov, hw, vmcs, host, vmcs12, cr, eptp12);
            }
            VmExit::ControlRegisterAccess { qualification, .. } => {
                // CR3 and CR8 exits are L1's: L0 sets no CR3/CR8 exiting of its own in VMCS02.
                println!(
                    "mini-hv: nested: L2's {qualification} is L0's, which L0 does not emulate"
                );
                return Ok(ControlFlow::Break(()));
            }
            _ => {}
        }
        host.l2_exit(exit, vmcs)
    }

    /// L2's MOV to CR0 or CR4 that L1 does not intercept (the bits it changes in the read
    /// shadow are only L0's): as L1's processor would run it in VMX non-root operation. The
    /// bits of VMCS12's CR0/CR4 guest/host mask keep L2's value (a MOV does not change them
    /// without an exit, SDM 26.3), the others take the source's; #GP(0) where that breaks the
    /// bits fixed in VMX operation for L1's processor (CR0.PE and PG exempt under VMCS12's
    /// "unrestricted guest") or the architectural checks (`CrPolicy::mov_to_cr0` and
    /// `mov_to_cr4`, which also load PAE PDPTEs when L1 does not use EPT; with EPT12 the PDPTEs
    /// are L2-physical and L0 stops); VMCS02's read shadow keeps L1's shadow in L1's bits and
    /// L2's value in L0's.
    #[allow(clippy::too_many_arguments)]
    fn l2_mov_to_cr(
        &self,
        mov: L2MovToCr,
        hw: &mut HardwareVmcs,
        vmcs: &mut Vmcs<'_>,
        host: &mut dyn L1Host,
        vmcs12: &SoftVmcs,
        cr: CrPolicy,
        eptp12: Option<u64>,
    ) -> Result<ControlFlow<()>, VmFail> {
        let stopped = |flow: Flow<Stopped>| flow.map(|f| f.map_break(|Stopped| ()));
        let (mask_f, shadow_f, guest_f) = if mov.cr0 {
            (
                fields::CR0_GUEST_HOST_MASK.encoding(),
                fields::CR0_READ_SHADOW.encoding(),
                fields::GUEST_CR0.encoding(),
            )
        } else {
            (
                fields::CR4_GUEST_HOST_MASK.encoding(),
                fields::CR4_READ_SHADOW.encoding(),
                fields::GUEST_CR4.encoding(),
            )
        };
        let (regs, mem) = host.parts();
        let source = super::dispatch::read_gpr(regs, mov.gpr, vmcs)?;
        let mask12 = vmcs12.read_raw(mask_f)?;
        let shadow_before = hw.read_raw(shadow_f)?;
        let value = (source & !mask12) | (hw.read_raw(guest_f)? & mask12);
        let fixed_ok = if mov.cr0 {
            let c12 = vmcs12.read_controls()?;
            let unrestricted_guest = c12.proc2.contains(SecondaryControls::UNRESTRICTED_GUEST);
            // The guest-state use: CD and NW are not fixed for L2 either.
            let fixed = self
                .l1
                .caps()
                .cr0_fixed_bits(CrUse::Guest { unrestricted_guest });
            fixed.check(Cr0::from_bits_retain(value)).is_ok()
        } else {
            self.l1
                .caps()
                .cr4_fixed_bits()
                .check(Cr4::from_bits_retain(value))
                .is_ok()
        };
        if !fixed_ok {
            return stopped(inject(vmcs, Exception::GP, Some(0)));
        }
        let read_u64 = |gpa: u64| {
            let mut bytes = [0u8; 8];
            (eptp12.is_none() && mem.read(gpa, &mut bytes).is_ok())
                .then(|| u64::from_le_bytes(bytes))
        };
        let written = if mov.cr0 {
            cr.mov_to_cr0(hw, Cr0::from_bits_retain(value), read_u64)
        } else {
            cr.mov_to_cr4(hw, Cr4::from_bits_retain(value), read_u64)
        };
        match written {
            Ok(()) => {}
            Err(CrWriteError::Fault(_)) => return stopped(inject(vmcs, Exception::GP, Some(0))),
            Err(CrWriteError::Vmcs(fail)) => return Err(fail),
            Err(CrWriteError::PdptNotReadable(gpa)) => {
                println!(
                    "mini-hv: nested: L2's MOV to CR{} loads PDPTEs from L2-physical {gpa:#x}, \
                     which L0 does not read",
                    if mov.cr0 { 0 } else { 4 }
                );
                return Ok(ControlFlow::Break(()));
            }
        }
        let shadow = hw.read_raw(shadow_f)?;
        hw.write_raw(shadow_f, (shadow & !mask12) | (shadow_before & mask12))?;
        stopped(skip(vmcs, mov.length))
    }

    /// The VMX MSRs L1 is shown (IA32_FEATURE_CONTROL and the capability MSRs), which L0
    /// answers for L2 too.
    fn vmx_msr(&self, msr: u32) -> Option<u64> {
        if msr == vmx_caps::msr::IA32_FEATURE_CONTROL {
            return Some(abi::FEATURE_CONTROL_NESTED_VALUE);
        }
        self.rdmsr(msr)
    }

    /// After L0 handled an exit of L2: the exception it injects into L2 (VMCS02's VM-entry
    /// interruption information), when VMCS12's exception bitmap (with the page-fault
    /// error-code mask and match) makes it an exit of L1 (SDM 26.2 "Other Causes of VM
    /// Exits": an exception in L2 that L1 intercepts exits instead of being delivered): the
    /// exit information of that exit (reason 0, the event as the VM-exit interruption
    /// information; L2's RIP still at the instruction that faulted), with the injection
    /// withdrawn from VMCS02.
    fn intercepted_injection(
        hw: &mut HardwareVmcs,
        vmcs12: &SoftVmcs,
    ) -> Result<Option<SoftVmcs>, VmFail> {
        let injected = hw.read_raw(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding())?;
        // Valid (bit 31), type 3 (hardware exception).
        if injected & (1 << 31) == 0 || (injected >> 8) & 7 != 3 {
            return Ok(None);
        }
        let vector = injected & 0xff;
        let bitmap = vmcs12.read_raw(fields::EXCEPTION_BITMAP.encoding())?;
        let error = hw.read_raw(fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding())?;
        let mut exits = bitmap & (1 << vector) != 0;
        if vector == 14 {
            let mask = vmcs12.read_raw(fields::PAGE_FAULT_ERROR_CODE_MASK.encoding())?;
            let matching = vmcs12.read_raw(fields::PAGE_FAULT_ERROR_CODE_MATCH.encoding())?;
            exits = exits == (error & mask == matching);
        }
        if !exits {
            return Ok(None);
        }
        // Withdrawn from VMCS02, which is kept for L1's next VMRESUME.
        hw.write_raw(
            fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
            injected & !(1 << 31),
        )?;
        let mut info = SoftVmcs::all_fields();
        for (f, v) in [
            (fields::EXIT_REASON.encoding(), 0),
            (fields::EXIT_QUALIFICATION.encoding(), 0),
            (
                fields::VM_EXIT_INTERRUPTION_INFORMATION.encoding(),
                injected & 0x8000_0fff,
            ),
            (fields::VM_EXIT_INTERRUPTION_ERROR_CODE.encoding(), error),
            (fields::IDT_VECTORING_INFORMATION.encoding(), 0),
            (fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), 0),
        ] {
            info.store(f, v)?;
        }
        Ok(Some(info))
    }
}

/// CR4 value helper for the exit handler: whether a MOV to CR4 of `value` would clear VMXE
/// while L1 is in VMX operation (#GP(0), SDM "MOV—Move to/from Control Registers").
pub fn clears_vmxe_in_vmx_operation(nested: Option<&Nested>, value: u64) -> bool {
    nested.is_some_and(|n| n.in_vmx_operation()) && value & Cr4::VMXE.bits() == 0
}
