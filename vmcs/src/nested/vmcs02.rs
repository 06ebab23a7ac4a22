//! VMCS02: the VMCS that really runs L2, built from VMCS12 and L0's own requirements
//! ([`build_vmcs02`]).

use vmx_caps::{
    ControlGroup, ControlSet, EntryControls, ExitControls, PinBasedControls, PrimaryControls,
    SecondaryControls, SecondaryExitControls, TertiaryControls, VmFuncControls, VmxCapabilities,
};
use vmx_core::{VmFail, VmInstructionError};

use super::ept02::Ept01;
use crate::ExceptionBitmap;
use crate::check::PhysMemory;
use crate::field::FieldType;
use crate::structures::{IoBitmaps, MsrBitmap};
use crate::{VmcsRead, VmcsWrite, fields};
use ept::Permissions;

/// The VMCS12 controls L0 can carry into VMCS02 (besides the default1 class, which VMCS12 may
/// have to set): every exit condition that needs no L1-physical structure but the MSR and I/O
/// bitmaps (merged), EPT and VPID (replaced by L0's), the APIC virtualization of memory-mapped
/// accesses (TPR shadow, APIC-access virtualization, APIC-register virtualization and
/// virtual-interrupt delivery, whose pages VMCS02 names by host-physical address,
/// [`ApicPages02`]), the VM-exit and VM-entry controls L0 emulates (the host and guest MSRs,
/// debug controls and address-space sizes), and two that L0 carries out in software: "enable VM
/// functions" with EPTP switching (VMCS02 enables VM functions with VM-function controls 0, so
/// that each VMFUNC of L2 exits to L0, [`super::L1VmxState::vmfunc`]), "EPT-violation #VE"
/// (never in VMCS02; L0 converts EPT12's violations, [`super::deliver_ve`]) and "enable PML"
/// (never in VMCS02: EPT02's dirty flags are not EPT12's; L0 sets EPT12's and logs them in L1's
/// page-modification log, [`super::Pml12`]; VMCS02's PML index field, a guest-state field
/// copied from and back to VMCS12 like the others, is the live index while L2 runs).
///
/// Not here: "virtualize x2APIC mode" (L0's merged MSR bitmaps could make an x2APIC MSR access
/// L1 lets the processor virtualize exit to L0 instead) and "process posted interrupts" (the
/// posted-interrupt descriptor and notification vector are L1's, which L0 would have to
/// translate and forward).
pub const VMCS02_CONTROLS: ControlSet = ControlSet {
    pin: PinBasedControls::EXTERNAL_INTERRUPT_EXITING
        .union(PinBasedControls::NMI_EXITING)
        .union(PinBasedControls::VIRTUAL_NMIS)
        .union(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER),
    proc: PrimaryControls::INTERRUPT_WINDOW_EXITING
        .union(PrimaryControls::USE_TSC_OFFSETTING)
        .union(PrimaryControls::HLT_EXITING)
        .union(PrimaryControls::INVLPG_EXITING)
        .union(PrimaryControls::MWAIT_EXITING)
        .union(PrimaryControls::RDPMC_EXITING)
        .union(PrimaryControls::RDTSC_EXITING)
        .union(PrimaryControls::CR3_LOAD_EXITING)
        .union(PrimaryControls::CR3_STORE_EXITING)
        .union(PrimaryControls::CR8_LOAD_EXITING)
        .union(PrimaryControls::CR8_STORE_EXITING)
        .union(PrimaryControls::NMI_WINDOW_EXITING)
        .union(PrimaryControls::MOV_DR_EXITING)
        .union(PrimaryControls::UNCONDITIONAL_IO_EXITING)
        .union(PrimaryControls::USE_IO_BITMAPS)
        .union(PrimaryControls::MONITOR_TRAP_FLAG)
        .union(PrimaryControls::USE_MSR_BITMAPS)
        .union(PrimaryControls::MONITOR_EXITING)
        .union(PrimaryControls::PAUSE_EXITING)
        .union(PrimaryControls::USE_TPR_SHADOW)
        .union(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS),
    proc2: SecondaryControls::ENABLE_EPT
        .union(SecondaryControls::VIRTUALIZE_APIC_ACCESSES)
        .union(SecondaryControls::APIC_REGISTER_VIRTUALIZATION)
        .union(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
        .union(SecondaryControls::DESCRIPTOR_TABLE_EXITING)
        .union(SecondaryControls::ENABLE_RDTSCP)
        .union(SecondaryControls::ENABLE_VPID)
        .union(SecondaryControls::WBINVD_EXITING)
        .union(SecondaryControls::UNRESTRICTED_GUEST)
        .union(SecondaryControls::PAUSE_LOOP_EXITING)
        .union(SecondaryControls::RDRAND_EXITING)
        .union(SecondaryControls::ENABLE_INVPCID)
        .union(SecondaryControls::RDSEED_EXITING)
        .union(SecondaryControls::ENABLE_XSAVES_XRSTORS)
        .union(SecondaryControls::ENABLE_VM_FUNCTIONS)
        .union(SecondaryControls::EPT_VIOLATION_VE)
        .union(SecondaryControls::ENABLE_PML),
    proc3: TertiaryControls::empty(),
    exit: ExitControls::SAVE_DEBUG_CONTROLS
        .union(ExitControls::HOST_ADDRESS_SPACE_SIZE)
        .union(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL)
        .union(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
        .union(ExitControls::SAVE_IA32_PAT)
        .union(ExitControls::LOAD_IA32_PAT)
        .union(ExitControls::SAVE_IA32_EFER)
        .union(ExitControls::LOAD_IA32_EFER)
        .union(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE),
    exit2: SecondaryExitControls::empty(),
    entry: EntryControls::LOAD_DEBUG_CONTROLS
        .union(EntryControls::IA32E_MODE_GUEST)
        .union(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL)
        .union(EntryControls::LOAD_IA32_PAT)
        .union(EntryControls::LOAD_IA32_EFER),
    vmfunc: VmFuncControls::EPTP_SWITCHING,
};

/// The default1 class of every control field (SDM Vol. 3D, A.2 "Reserved Controls and Default
/// Settings"): bits a VMCS may have to set whatever it wants.
fn default1() -> ControlSet {
    let mut set = ControlSet::EMPTY;
    for group in ControlGroup::ALL {
        set.set(group, group.default1());
    }
    set
}

/// What L0 puts into every VMCS02 of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L0Part {
    /// Controls L0 needs in VMCS02 whatever L1 asks (e.g. external-interrupt and NMI exiting for
    /// its own interrupts, "enable EPT" for EPT02). Its VM-exit controls are VMCS02's (they
    /// describe L0's host); its VM-entry controls are added to VMCS12's.
    pub controls: ControlSet,
    /// The exceptions L0 intercepts for itself. When #PF is one, every page fault exits
    /// (page-fault error-code mask and match 0) and L0 applies L1's mask and match in software.
    pub exceptions: ExceptionBitmap,
    /// The CR0 bits L0 owns (its CR0 guest/host mask for L1).
    pub cr0_mask: u64,
    /// The CR4 bits L0 owns (its CR4 guest/host mask for L1).
    pub cr4_mask: u64,
    /// The EPT pointer of EPT02, the tables that translate L2-physical addresses to
    /// host-physical ones; used when VMCS02 enables EPT.
    pub eptp: u64,
    /// VPID02, the VPID L0 reserves for L2; used when VMCS02 enables VPID.
    pub vpid: u16,
    /// Host-physical address of VMCS02's MSR bitmaps ([`merge_msr_bitmap`] fills them).
    pub msr_bitmap: u64,
    /// Host-physical addresses of VMCS02's I/O bitmaps A and B ([`merge_io_bitmaps`] fills
    /// them).
    pub io_bitmaps: (u64, u64),
    /// The VMX-preemption timer value L0 wants while L2 runs (with "activate VMX-preemption
    /// timer" in `controls`); when L1 activates the timer too, the smaller value is used.
    pub preemption_timer: u32,
    /// The host-physical addresses of the virtual-APIC page and the APIC-access page VMCS12
    /// names ([`ApicPages02::of`]); used where VMCS12 has "use TPR shadow" and "virtualize APIC
    /// accesses".
    pub apic_pages: ApicPages02,
}

/// The pages of APIC virtualization (SDM Vol. 3C, chapter 30 "APIC Virtualization and Virtual
/// Interrupts") as VMCS02 names them: VMCS12's "virtual-APIC address" and "APIC-access address"
/// are L1-physical, VMCS02's host-physical.
///
/// The processor reads and writes the virtual-APIC page by its physical address (30.1), so
/// VMCS02 points at the very page of L1's memory VMCS12 names: L2's virtual TPR, ISR and IRR
/// are where L1 reads them. An access of L2 is to the APIC-access page when its translation,
/// through EPT02, ends at the APIC-access address (30.4); EPT02 maps L2-physical addresses to
/// the host-physical pages of L1's memory EPT12 names, so the APIC-access page of VMCS02 is the
/// host-physical page of VMCS12's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApicPages02 {
    /// VMCS02's virtual-APIC address.
    pub virtual_apic: u64,
    /// VMCS02's APIC-access address.
    pub apic_access: u64,
}

impl ApicPages02 {
    /// The pages for `vmcs12`, translated by `ept01` (L0's translation of L1-physical
    /// addresses). Where VMCS12 names a page EPT01 does not map to L1, or a virtual-APIC page
    /// EPT01 does not let L1 write (the processor writes it on L2's behalf, past any EPT),
    /// `scratch` stands in: a host-physical page of L0's that no EPT02 maps, so the processor
    /// never finds an access of L2 to it; as a virtual-APIC page it should read as all ones, as
    /// memory outside L1's RAM would (the VTPR the TPR-threshold check of VM entry reads, SDM
    /// 27.2.1.1). A field whose control VMCS12 does not set is 0.
    ///
    /// # Errors
    ///
    /// [`Vmcs02Error::Vmcs`] when VMCS12's controls or addresses cannot be read.
    pub fn of(
        vmcs12: &(impl VmcsRead + ?Sized),
        ept01: &(impl Ept01 + ?Sized),
        scratch: u64,
    ) -> Result<Self, Vmcs02Error> {
        let c12 = controls_of(vmcs12)?;
        let page = |field: u32, write: bool| -> Result<u64, Vmcs02Error> {
            let address = rd(vmcs12, field)? & !0xfff;
            Ok(ept01
                .translate_l1(address)
                .filter(|p| !write || p.permissions.contains(Permissions::WRITE))
                .map_or(scratch, |p| p.host_physical & !0xfff))
        };
        Ok(Self {
            virtual_apic: if c12.proc.contains(PrimaryControls::USE_TPR_SHADOW) {
                page(fields::VIRTUAL_APIC_ADDRESS.encoding(), true)?
            } else {
                0
            },
            apic_access: if c12
                .proc2
                .contains(SecondaryControls::VIRTUALIZE_APIC_ACCESSES)
            {
                page(fields::APIC_ACCESS_ADDRESS.encoding(), false)?
            } else {
                0
            },
        })
    }
}

/// Why VMCS02 cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Vmcs02Error {
    /// VMCS12 uses controls that are not in [`VMCS02_CONTROLS`] (L0's policy should not have
    /// offered them).
    #[error("VMCS12 uses controls L0 cannot carry into VMCS02: {0}")]
    Unsupported(ControlSet),
    /// The merged controls include settings the processor does not allow.
    #[error("the processor does not allow these VMCS02 controls: {0}")]
    NotAllowed(ControlSet),
    /// A VMREAD of VMCS12 or VMCS01 or a VMWRITE of VMCS02 failed.
    #[error("access to field {encoding:#06x} failed: {error:?}")]
    Vmcs {
        /// Encoding of the field.
        encoding: u32,
        /// How it failed.
        error: VmFail,
    },
}

/// What [`build_vmcs02`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vmcs02 {
    /// The controls of VMCS02 (every group, 0 where not in use).
    pub controls: ControlSet,
    /// Whether the VMX-preemption timer value of VMCS02 is L1's (true) or L0's (false); only
    /// meaningful with "activate VMX-preemption timer".
    pub timer_is_l1s: bool,
    /// The VMX-preemption timer value VMCS02 started with (0 without the timer).
    pub timer_start: u32,
    /// L1's VMX-preemption timer value from VMCS12 (0 when L1 does not activate the timer).
    pub timer_l1: u32,
    /// The CR0 bits L0 owns and L1 does not (`L0Part::cr0_mask` outside VMCS12's CR0
    /// guest/host mask): VMCS02's read shadow holds L2's value of them, its guest CR0 the one L0
    /// runs L2 with; L1 is told the read shadow's (`L1VmxState::save_exit`).
    pub cr0_l0_only: u64,
    /// The same for CR4.
    pub cr4_l0_only: u64,
}

pub(super) fn rd(v: &(impl VmcsRead + ?Sized), encoding: u32) -> Result<u64, Vmcs02Error> {
    v.read_raw(encoding)
        .map_err(|error| Vmcs02Error::Vmcs { encoding, error })
}

fn wr(v: &mut (impl VmcsWrite + ?Sized), encoding: u32, value: u64) -> Result<(), Vmcs02Error> {
    v.write_raw(encoding, value)
        .map_err(|error| Vmcs02Error::Vmcs { encoding, error })
}

/// Whether a failure is "unsupported VMCS component" (the field does not exist in that VMCS).
fn unsupported(error: VmFail) -> bool {
    error == VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent)
}

/// Copies `encoding` from `from` to `to`, skipping a field either VMCS does not have.
fn copy(
    from: &(impl VmcsRead + ?Sized),
    to: &mut (impl VmcsWrite + ?Sized),
    encoding: u32,
) -> Result<(), Vmcs02Error> {
    let value = match from.read_raw(encoding) {
        Ok(v) => v,
        Err(e) if unsupported(e) => return Ok(()),
        Err(error) => return Err(Vmcs02Error::Vmcs { encoding, error }),
    };
    match to.write_raw(encoding, value) {
        Err(e) if unsupported(e) => Ok(()),
        other => other.map_err(|error| Vmcs02Error::Vmcs { encoding, error }),
    }
}

/// The controls of a VMCS that are in use, every group (0 where the group is not activated).
pub(super) fn controls_of(v: &(impl VmcsRead + ?Sized)) -> Result<ControlSet, Vmcs02Error> {
    v.read_controls().map_err(|error| Vmcs02Error::Vmcs {
        encoding: fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
        error,
    })
}

/// Builds VMCS02 into `vmcs02` (a VMCS of the processor `real`, cleared) from `vmcs12` (checked
/// by [`super::L1VmxState::enter_l2`]), `vmcs01` (the VMCS that runs L1: L0's host state, L1's
/// TSC offset, MSR areas and current IA32_EFER, IA32_PAT, DR7 and IA32_DEBUGCTL in its guest
/// state, which L0 must have saved) and `l0` (L0's own part).
///
/// The rule for every part (the SDM describes one processor; L0 plays that processor for L1
/// while it runs L2 on the real one):
///
/// - **VM-execution controls**: an exit condition is in VMCS02 when L1 or L0 wants it (the
///   union): an exit only L0 wanted is handled by L0, one L1 wanted is reflected to L1 (see
///   `exits::nested`). The page-fault error-code mask and match, the CR0/CR4 guest/host masks
///   and read shadows, the CR3-target values, the TSC offset, the MSR and I/O bitmaps are merged
///   accordingly ([`merge_msr_bitmap`], [`merge_io_bitmaps`]). L0's own EPT (EPT02), VPID and
///   bitmap pages replace L1's addresses, which are L1-physical. "Enable VM functions" is
///   VMCS12's with VMCS02's VM-function controls 0 (every VMFUNC of L2 exits to L0, which
///   emulates EPTP switching); "EPT-violation #VE" is never in VMCS02 (L0 emulates it).
/// - **VM-exit controls**: VMCS02's VM exits return to L0, so they are L0's, plus the "save"
///   controls that let L0 report L2's IA32_EFER, IA32_PAT, DR7/IA32_DEBUGCTL and
///   VMX-preemption timer value to L1. VMCS12's exit controls are carried out in software when
///   an exit is reflected.
/// - **VM-entry controls and guest state**: VMCS12's, copied field by field. Where L1 does not
///   load IA32_EFER, IA32_PAT or the debug controls, L2 starts with L1's values (SDM 27.3.2.1:
///   the registers keep their values, IA32_EFER.LMA and LME following "IA-32e mode guest"), so
///   VMCS02 loads L1's values, read from VMCS01's guest state. The VMCS link pointer is
///   FFFFFFFF_FFFFFFFFH (L2 has no shadow VMCS of L0's making).
/// - **MSR areas**: VMCS01's (L0's own lists for its guest); the areas of VMCS12 are processed
///   by L0 in software at entry ([`load_entry_msrs`]) and at a reflected exit.
/// - **Host state**: L0's, copied from VMCS01.
///
/// Only the controls in [`VMCS02_CONTROLS`] can be carried into VMCS02 (those whose structures
/// need no L1-physical address in VMCS02); L0's [`vmx_caps::virt::VirtualPolicy`] offers L1 no
/// others, and this function refuses a VMCS12 that uses one.
///
/// # Errors
///
/// [`Vmcs02Error::Unsupported`] when VMCS12 uses a control outside [`VMCS02_CONTROLS`],
/// [`Vmcs02Error::NotAllowed`] when the merged controls are not allowed by `real`, and
/// [`Vmcs02Error::Vmcs`] for a failed VMREAD or VMWRITE of a field every VMCS has.
pub fn build_vmcs02<V12, V01, V02>(
    vmcs12: &V12,
    vmcs01: &V01,
    l0: &L0Part,
    real: &VmxCapabilities,
    vmcs02: &mut V02,
) -> Result<Vmcs02, Vmcs02Error>
where
    V12: VmcsRead + ?Sized,
    V01: VmcsRead + ?Sized,
    V02: VmcsWrite + ?Sized,
{
    let c12 = controls_of(vmcs12)?;
    let c01 = controls_of(vmcs01)?;
    let beyond = c12.difference(&VMCS02_CONTROLS.union(&default1()));
    if !beyond.is_empty() {
        return Err(Vmcs02Error::Unsupported(beyond));
    }
    let mut c = merge_controls(&c12, &c01, l0, real);
    // The processor's must-be-1 settings, then what it cannot do.
    let mut not_allowed = ControlSet::EMPTY;
    for group in ControlGroup::ALL {
        let (allowed0, allowed1) = real.allowed(group);
        let value = c.get(group) | allowed0;
        c.set(group, value);
        not_allowed.set(group, value & !allowed1);
    }
    if !c
        .proc
        .contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    {
        not_allowed.proc2 = SecondaryControls::empty();
        c.proc2 = SecondaryControls::empty();
    }
    if !c.proc.contains(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS) {
        not_allowed.proc3 = TertiaryControls::empty();
        c.proc3 = TertiaryControls::empty();
    }
    if !c.exit.contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS) {
        not_allowed.exit2 = SecondaryExitControls::empty();
        c.exit2 = SecondaryExitControls::empty();
    }
    if !c.proc2.contains(SecondaryControls::ENABLE_VM_FUNCTIONS) {
        not_allowed.vmfunc = VmFuncControls::empty();
        c.vmfunc = VmFuncControls::empty();
    }
    if !not_allowed.is_empty() {
        return Err(Vmcs02Error::NotAllowed(not_allowed));
    }
    write_controls(vmcs02, &c)?;

    // Guest state: VMCS12's, every field either VMCS has.
    for &e in fields::encodings_of(FieldType::GuestState) {
        copy(vmcs12, vmcs02, e)?;
    }
    wr(vmcs02, fields::VMCS_LINK_POINTER.encoding(), u64::MAX)?;
    l1_values_not_loaded(vmcs01, &c12, &c, vmcs02)?;

    // Host state: L0's.
    for &e in fields::encodings_of(FieldType::HostState) {
        copy(vmcs01, vmcs02, e)?;
    }

    let (timer_start, timer_l1, timer_is_l1s) =
        execution_fields(vmcs12, vmcs01, &c12, &c01, &c, l0, vmcs02)?;
    Ok(Vmcs02 {
        controls: c,
        timer_is_l1s,
        timer_start,
        timer_l1,
        cr0_l0_only: l0.cr0_mask & !rd(vmcs12, fields::CR0_GUEST_HOST_MASK.encoding())?,
        cr4_l0_only: l0.cr4_mask & !rd(vmcs12, fields::CR4_GUEST_HOST_MASK.encoding())?,
    })
}

/// The controls of VMCS02 before the processor's must-be-1 bits.
fn merge_controls(
    c12: &ControlSet,
    c01: &ControlSet,
    l0: &L0Part,
    real: &VmxCapabilities,
) -> ControlSet {
    let own = &l0.controls;
    let io_msr = PrimaryControls::USE_IO_BITMAPS
        | PrimaryControls::UNCONDITIONAL_IO_EXITING
        | PrimaryControls::USE_MSR_BITMAPS;
    let mut proc = (c12.proc - io_msr) | own.proc;
    proc |= PrimaryControls::USE_IO_BITMAPS | PrimaryControls::USE_MSR_BITMAPS;
    if c01.proc.contains(PrimaryControls::USE_TSC_OFFSETTING) {
        proc |= PrimaryControls::USE_TSC_OFFSETTING;
    }
    // "EPT-violation #VE" and "enable PML" are L0's to emulate (the information area and the
    // log are L1-physical, EPT12's dirty flags L0's to set); "enable VM functions" stays, with
    // VMCS02's VM-function controls L0's (0): VMFUNC exits to L0.
    let emulated = SecondaryControls::EPT_VIOLATION_VE | SecondaryControls::ENABLE_PML;
    let proc2 = (c12.proc2 - emulated) | own.proc2;
    if !proc2.is_empty() {
        proc |= PrimaryControls::ACTIVATE_SECONDARY_CONTROLS;
    }
    if !own.proc3.is_empty() {
        proc |= PrimaryControls::ACTIVATE_TERTIARY_CONTROLS;
    }
    // What L0 needs to report L2's state to L1 after an exit, where the processor has it.
    let (_, exit_allowed1) = real.allowed(ControlGroup::Exit);
    let saves = ExitControls::SAVE_DEBUG_CONTROLS
        | ExitControls::SAVE_IA32_PAT
        | ExitControls::SAVE_IA32_EFER;
    let exit = own.exit
        | (saves & ExitControls::from_bits_retain(exit_allowed1 as u32))
        | (c12.exit & ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE);
    // L2 starts with L1's IA32_EFER, IA32_PAT and debug controls where L1 loads none: VMCS02
    // loads one or the other, where the processor can.
    let (_, entry_allowed1) = real.allowed(ControlGroup::Entry);
    let loads = EntryControls::LOAD_DEBUG_CONTROLS
        | EntryControls::LOAD_IA32_PAT
        | EntryControls::LOAD_IA32_EFER;
    let entry =
        c12.entry | own.entry | (loads & EntryControls::from_bits_retain(entry_allowed1 as u32));
    ControlSet {
        pin: c12.pin | own.pin,
        proc,
        proc2,
        proc3: own.proc3,
        exit,
        exit2: own.exit2,
        entry,
        vmfunc: own.vmfunc,
    }
}

/// Writes the control fields in use.
fn write_controls(v: &mut (impl VmcsWrite + ?Sized), c: &ControlSet) -> Result<(), Vmcs02Error> {
    wr(
        v,
        fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
        c.pin.bits().into(),
    )?;
    wr(
        v,
        fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
        c.proc.bits().into(),
    )?;
    wr(
        v,
        fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
        c.exit.bits().into(),
    )?;
    wr(
        v,
        fields::VM_ENTRY_CONTROLS.encoding(),
        c.entry.bits().into(),
    )?;
    if c.proc
        .contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    {
        wr(
            v,
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
            c.proc2.bits().into(),
        )?;
    }
    if c.proc.contains(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS) {
        wr(
            v,
            fields::TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
            c.proc3.bits(),
        )?;
    }
    if c.exit.contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS) {
        wr(
            v,
            fields::SECONDARY_VM_EXIT_CONTROLS.encoding(),
            c.exit2.bits(),
        )?;
    }
    if c.proc2.contains(SecondaryControls::ENABLE_VM_FUNCTIONS) {
        wr(v, fields::VM_FUNCTION_CONTROLS.encoding(), c.vmfunc.bits())?;
    }
    Ok(())
}

/// IA32_EFER, IA32_PAT, DR7 and IA32_DEBUGCTL where VMCS02 loads them and VMCS12 does not: L1's
/// current values (VMCS01's guest state); IA32_EFER.LMA and LME follow "IA-32e mode guest"
/// (SDM 27.3.2.1).
fn l1_values_not_loaded(
    vmcs01: &(impl VmcsRead + ?Sized),
    c12: &ControlSet,
    c: &ControlSet,
    vmcs02: &mut (impl VmcsWrite + ?Sized),
) -> Result<(), Vmcs02Error> {
    let loads = |bit: EntryControls| c.entry.contains(bit) && !c12.entry.contains(bit);
    if loads(EntryControls::LOAD_IA32_EFER) {
        const LME_LMA: u64 = (1 << 8) | (1 << 10);
        let efer = rd(vmcs01, fields::GUEST_IA32_EFER.encoding())? & !LME_LMA;
        let ia32e = c12.entry.contains(EntryControls::IA32E_MODE_GUEST);
        wr(
            vmcs02,
            fields::GUEST_IA32_EFER.encoding(),
            efer | if ia32e { LME_LMA } else { 0 },
        )?;
    }
    if loads(EntryControls::LOAD_IA32_PAT) {
        let pat = rd(vmcs01, fields::GUEST_IA32_PAT.encoding())?;
        wr(vmcs02, fields::GUEST_IA32_PAT.encoding(), pat)?;
    }
    if loads(EntryControls::LOAD_DEBUG_CONTROLS) {
        for f in [
            fields::GUEST_DR7.encoding(),
            fields::GUEST_IA32_DEBUGCTL.encoding(),
        ] {
            wr(vmcs02, f, rd(vmcs01, f)?)?;
        }
    }
    // VMCS12's own values where it loads them are already in place (guest-state copy).
    Ok(())
}

/// The VM-execution control fields other than the controls, and the VM-entry event fields.
/// Returns the VMX-preemption timer value of VMCS02, L1's, and whether VMCS02's is L1's.
fn execution_fields(
    vmcs12: &(impl VmcsRead + ?Sized),
    vmcs01: &(impl VmcsRead + ?Sized),
    c12: &ControlSet,
    c01: &ControlSet,
    c: &ControlSet,
    l0: &L0Part,
    vmcs02: &mut (impl VmcsWrite + ?Sized),
) -> Result<(u32, u32, bool), Vmcs02Error> {
    // Exceptions: either's; with L0 taking every #PF, L1's filter is applied in software.
    let eb12 = rd(vmcs12, fields::EXCEPTION_BITMAP.encoding())?;
    wr(
        vmcs02,
        fields::EXCEPTION_BITMAP.encoding(),
        eb12 | u64::from(l0.exceptions.bits()),
    )?;
    let (mask, matching) = if l0.exceptions.contains(ExceptionBitmap::PAGE_FAULT) {
        (0, 0)
    } else {
        (
            rd(vmcs12, fields::PAGE_FAULT_ERROR_CODE_MASK.encoding())?,
            rd(vmcs12, fields::PAGE_FAULT_ERROR_CODE_MATCH.encoding())?,
        )
    };
    wr(vmcs02, fields::PAGE_FAULT_ERROR_CODE_MASK.encoding(), mask)?;
    wr(
        vmcs02,
        fields::PAGE_FAULT_ERROR_CODE_MATCH.encoding(),
        matching,
    )?;

    // CR0 and CR4: a bit is host-owned when L1 or L0 owns it. L2 reads L1's shadow for L1's
    // bits and, for bits only L0 owns, the value L1 gave L2 (L1 sees no shadowing there).
    for (mask_f, shadow_f, guest_f, own) in [
        (
            fields::CR0_GUEST_HOST_MASK.encoding(),
            fields::CR0_READ_SHADOW.encoding(),
            fields::GUEST_CR0.encoding(),
            l0.cr0_mask,
        ),
        (
            fields::CR4_GUEST_HOST_MASK.encoding(),
            fields::CR4_READ_SHADOW.encoding(),
            fields::GUEST_CR4.encoding(),
            l0.cr4_mask,
        ),
    ] {
        let mask12 = rd(vmcs12, mask_f)?;
        let shadow12 = rd(vmcs12, shadow_f)?;
        let guest12 = rd(vmcs12, guest_f)?;
        let mask02 = mask12 | own;
        wr(vmcs02, mask_f, mask02)?;
        // Bits outside the mask are never read from the shadow: kept 0.
        let shadow02 = ((shadow12 & mask12) | (guest12 & !mask12)) & mask02;
        wr(vmcs02, shadow_f, shadow02)?;
    }

    // CR3-target values: L1's (L0 has no CR3 interest with EPT).
    copy(vmcs12, vmcs02, fields::CR3_TARGET_COUNT.encoding())?;
    for f in [
        fields::CR3_TARGET_VALUE_0.encoding(),
        fields::CR3_TARGET_VALUE_1.encoding(),
        fields::CR3_TARGET_VALUE_2.encoding(),
        fields::CR3_TARGET_VALUE_3.encoding(),
    ] {
        copy(vmcs12, vmcs02, f)?;
    }

    // TSC: L2's TSC is L1's TSC (the TSC plus VMCS01's offset) plus VMCS12's offset.
    if c.proc.contains(PrimaryControls::USE_TSC_OFFSETTING) {
        let offset = |v: &dyn Fn() -> Result<u64, Vmcs02Error>, used: bool| {
            if used { v() } else { Ok(0) }
        };
        let o01 = offset(
            &|| rd(vmcs01, fields::TSC_OFFSET.encoding()),
            c01.proc.contains(PrimaryControls::USE_TSC_OFFSETTING),
        )?;
        let o12 = offset(
            &|| rd(vmcs12, fields::TSC_OFFSET.encoding()),
            c12.proc.contains(PrimaryControls::USE_TSC_OFFSETTING),
        )?;
        wr(vmcs02, fields::TSC_OFFSET.encoding(), o01.wrapping_add(o12))?;
    }

    // L0's structures.
    wr(
        vmcs02,
        fields::ADDRESS_OF_MSR_BITMAPS.encoding(),
        l0.msr_bitmap,
    )?;
    wr(
        vmcs02,
        fields::ADDRESS_OF_IO_BITMAP_A.encoding(),
        l0.io_bitmaps.0,
    )?;
    wr(
        vmcs02,
        fields::ADDRESS_OF_IO_BITMAP_B.encoding(),
        l0.io_bitmaps.1,
    )?;
    if c.proc2.contains(SecondaryControls::ENABLE_EPT) {
        wr(vmcs02, fields::EPT_POINTER.encoding(), l0.eptp)?;
    }
    if c.proc2.contains(SecondaryControls::ENABLE_VPID) {
        wr(
            vmcs02,
            fields::VIRTUAL_PROCESSOR_IDENTIFIER.encoding(),
            l0.vpid.into(),
        )?;
    }
    for f in [
        fields::VM_EXIT_MSR_STORE_COUNT.encoding(),
        fields::VM_EXIT_MSR_STORE_ADDRESS.encoding(),
        fields::VM_EXIT_MSR_LOAD_COUNT.encoding(),
        fields::VM_EXIT_MSR_LOAD_ADDRESS.encoding(),
        fields::VM_ENTRY_MSR_LOAD_COUNT.encoding(),
        fields::VM_ENTRY_MSR_LOAD_ADDRESS.encoding(),
    ] {
        copy(vmcs01, vmcs02, f)?;
    }

    // Event injection into L2: L1's.
    for f in [
        fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
        fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
        fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
    ] {
        copy(vmcs12, vmcs02, f)?;
    }
    // APIC virtualization: VMCS12's pages at their host-physical addresses, its TPR threshold and
    // EOI-exit bitmaps; its guest interrupt status came with the guest state.
    if c12.proc.contains(PrimaryControls::USE_TPR_SHADOW) {
        wr(
            vmcs02,
            fields::VIRTUAL_APIC_ADDRESS.encoding(),
            l0.apic_pages.virtual_apic,
        )?;
        copy(vmcs12, vmcs02, fields::TPR_THRESHOLD.encoding())?;
    }
    if c12
        .proc2
        .contains(SecondaryControls::VIRTUALIZE_APIC_ACCESSES)
    {
        wr(
            vmcs02,
            fields::APIC_ACCESS_ADDRESS.encoding(),
            l0.apic_pages.apic_access,
        )?;
    }
    if c12
        .proc2
        .contains(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
    {
        for f in [
            fields::EOI_EXIT_BITMAP_0.encoding(),
            fields::EOI_EXIT_BITMAP_1.encoding(),
            fields::EOI_EXIT_BITMAP_2.encoding(),
            fields::EOI_EXIT_BITMAP_3.encoding(),
        ] {
            copy(vmcs12, vmcs02, f)?;
        }
    }
    if c12.proc2.contains(SecondaryControls::PAUSE_LOOP_EXITING) {
        copy(vmcs12, vmcs02, fields::PLE_GAP.encoding())?;
        copy(vmcs12, vmcs02, fields::PLE_WINDOW.encoding())?;
    }
    if c12.proc2.contains(SecondaryControls::ENABLE_XSAVES_XRSTORS) {
        copy(vmcs12, vmcs02, fields::XSS_EXITING_BITMAP.encoding())?;
    }

    // The VMX-preemption timer: the earlier of L1's and L0's.
    let timer = fields::VMX_PREEMPTION_TIMER_VALUE.encoding();
    let l1_timer = c12
        .pin
        .contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
    let l0_timer = l0
        .controls
        .pin
        .contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
    let l1_value = if l1_timer {
        rd(vmcs12, timer)? as u32
    } else {
        0
    };
    let Some((value, is_l1s)) = vmcs02_preemption_timer(
        l1_timer.then_some(l1_value),
        l0_timer.then_some(l0.preemption_timer),
    ) else {
        return Ok((0, 0, false));
    };
    wr(vmcs02, timer, value.into())?;
    Ok((value, l1_value, is_l1s))
}

/// The VMX-preemption timer value VMCS02 runs L2 with, from L1's value (`l1`: VMCS12's field,
/// when VMCS12 activates the timer) and L0's (`l0`, when L0 wants the timer while L2 runs): the
/// earlier of the two, and whether it is L1's (a tie is L1's: its expiry is an exit L1 asked
/// for). `None` when neither activates the timer.
///
/// [`build_vmcs02`] writes this value; an L0 that keeps VMCS02 across L1's VMRESUMEs writes it
/// again at each of them, since VMCS12's timer value (re-armed at every VM entry, SDM 27.7.4)
/// and L0's both change.
pub fn vmcs02_preemption_timer(l1: Option<u32>, l0: Option<u32>) -> Option<(u32, bool)> {
    match (l1, l0) {
        (Some(l1), Some(l0)) => Some((l1.min(l0), l1 <= l0)),
        (Some(l1), None) => Some((l1, true)),
        (None, Some(l0)) => Some((l0, false)),
        (None, None) => None,
    }
}

/// VMCS02's MSR bitmaps in `out`: every bit L0 intercepts (`l0`) or L1 does, from VMCS12's MSR
/// bitmaps in L1's memory when it uses them; without "use MSR bitmaps" in VMCS12 every RDMSR and
/// WRMSR of L2 exits to L1 (SDM 26.1.3), so every bit is set. One merge of
/// [`MergedMsrBitmap`](super::MergedMsrBitmap), which keeps `out` merged across entries.
///
/// # Errors
///
/// [`Vmcs02Error::Vmcs`] when VMCS12's controls or bitmap address cannot be read.
pub fn merge_msr_bitmap(
    vmcs12: &(impl VmcsRead + ?Sized),
    mem: &mut (impl PhysMemory + ?Sized),
    l0: &MsrBitmap,
    out: &mut MsrBitmap,
) -> Result<(), Vmcs02Error> {
    super::MergedMsrBitmap::new(l0, out).merge(vmcs12, mem)
}

/// VMCS02's I/O bitmaps in `out`: every port L0 intercepts (`l0`) or L1 does: from VMCS12's I/O
/// bitmaps in L1's memory with "use I/O bitmaps", every port with "unconditional I/O exiting"
/// alone, none without either (SDM 26.1.3). One merge of
/// [`MergedIoBitmaps`](super::MergedIoBitmaps), which keeps `out` merged across entries.
///
/// # Errors
///
/// [`Vmcs02Error::Vmcs`] when VMCS12's controls or bitmap addresses cannot be read.
pub fn merge_io_bitmaps(
    vmcs12: &(impl VmcsRead + ?Sized),
    mem: &mut (impl PhysMemory + ?Sized),
    l0: &IoBitmaps,
    out: &mut IoBitmaps,
) -> Result<(), Vmcs02Error> {
    super::MergedIoBitmaps::new(l0, out).merge(vmcs12, mem)
}

/// The MSRs of L1 and L2 that no VMCS field holds, as L0 keeps them (L1 and L2 share them, as
/// a guest and its host share the MSRs of one processor).
pub trait GuestMsrs {
    /// RDMSR of `msr`: `None` where RDMSR would fault.
    fn read(&mut self, msr: u32) -> Option<u64>;
    /// WRMSR of `value` to `msr`: false where WRMSR would fault (SDM 27.4 and 28.6 make such a
    /// load fail).
    fn write(&mut self, msr: u32, value: u64) -> bool;
}

/// Loads VMCS12's VM-entry MSR-load area from L1's memory into `msrs` (SDM 27.4 "Loading MSRs"),
/// entry by entry; the entries' form was checked with VMCS12. `Err(n)` is the 1-based index of
/// the entry that could not be read or whose WRMSR faults: the qualification of a VM-entry
/// failure with exit reason 34, after which L2 is not entered.
///
/// # Errors
///
/// As above, and `Err(0)` when the area's count or address cannot be read.
pub fn load_entry_msrs(
    vmcs12: &(impl VmcsRead + ?Sized),
    mem: &mut (impl PhysMemory + ?Sized),
    msrs: &mut (impl GuestMsrs + ?Sized),
) -> Result<(), u32> {
    let count = vmcs12
        .read_raw(fields::VM_ENTRY_MSR_LOAD_COUNT.encoding())
        .map_err(|_| 0u32)?;
    if count == 0 {
        return Ok(());
    }
    let address = vmcs12
        .read_raw(fields::VM_ENTRY_MSR_LOAD_ADDRESS.encoding())
        .map_err(|_| 0u32)?;
    load_msr_list(mem, address, count, msrs)
}

/// WRMSR of each entry of the MSR list at `address` (`count` entries of 16 bytes: MSR index in
/// bits 31:0, data in bytes 15:8); `Err(n)` names the failing entry, 1-based.
pub(crate) fn load_msr_list(
    mem: &mut (impl PhysMemory + ?Sized),
    address: u64,
    count: u64,
    msrs: &mut (impl GuestMsrs + ?Sized),
) -> Result<(), u32> {
    for i in 0..count {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut entry = [0u8; 16];
        mem.read(address.wrapping_add(16 * i), &mut entry)
            .map_err(|_| n)?;
        let (head, data) = entry.split_at(8);
        let head = u64::from_le_bytes(head.try_into().unwrap_or([0xff; 8]));
        let data = u64::from_le_bytes(data.try_into().unwrap_or([0; 8]));
        if head >> 32 != 0 || !msrs.write(head as u32, data) {
            return Err(n);
        }
    }
    Ok(())
}
