//! The cases' mutations: seeded random changes aimed at the VM-entry rules ([`mutate`]: bit flips
//! and boundary values in the controls, host and guest fields, event injection, the VM-entry
//! MSR-load list) and the event-injection grid ([`inject_grid`]), each recorded ([`Mutation`]) to be
//! printed with a disagreement.

use core::fmt;

use vmcs::structures::MsrEntry;
use vmcs::{GuestSegment, GuestState, VmcsRead, VmcsWrite, fields};
use vmx_caps::arch::{Cr0, Cr4, Efer, Rflags};
use vmx_caps::msr::{
    IA32_DEBUGCTL, IA32_EFER, IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_LSTAR,
    IA32_PAT, IA32_SMM_MONITOR_CTL, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP,
    IA32_SYSENTER_ESP, IA32_X2APIC_LAST, IA32_X2APIC_TPR,
};
use vmx_caps::{CrFixedBits, EntryControls};
use vmx_core::VmFail;

use super::{ENTRY_AREA_ENTRIES, EntryArea, STUB_GPA};
use crate::hv::Vmcs;

/// SplitMix64: small, seedable, deterministic.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One change a mutation made.
#[derive(Clone, Copy, Debug)]
pub(super) enum Change {
    /// A VMCS field (full encoding) changed from `old` to `new`.
    Field { encoding: u32, old: u64, new: u64 },
    /// Entry `slot` (0-based) of the VM-entry MSR-load area.
    MsrEntry { slot: usize, index: u64, value: u64 },
    /// The guest was switched to a consistent state of another mode before the mutations.
    Mode(GuestMode),
}

/// The guest mode a case starts from (the known-good VMCS is real mode).
#[derive(Clone, Copy, Debug)]
pub(super) enum GuestMode {
    /// 32-bit protected mode, flat segments, no paging.
    Protected32,
    /// 32-bit protected mode with PAE paging (PDPTEs from the VMCS, EPT being on).
    Pae32,
    /// IA-32e mode, 64-bit code segment, 4-level paging.
    Long64,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Change::Field { encoding, old, new } => {
                match fields::by_encoding(encoding) {
                    Some(info) => f.write_str(info.name)?,
                    None => write!(f, "{encoding:#x}")?,
                }
                write!(f, " {old:#x}->{new:#x}")
            }
            Change::MsrEntry { slot, index, value } => {
                write!(f, "msr-load[{slot}]=({index:#x}, {value:#x})")
            }
            Change::Mode(mode) => write!(f, "mode {mode:?}"),
        }
    }
}

/// The changes of one case.
pub(super) struct Mutation {
    changes: [Option<Change>; 12],
    len: usize,
}

impl Mutation {
    pub(super) fn new() -> Self {
        Self {
            changes: [None; 12],
            len: 0,
        }
    }

    fn push(&mut self, change: Change) {
        if let Some(slot) = self.changes.get_mut(self.len) {
            *slot = Some(change);
            self.len += 1;
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, change) in self.changes.iter().flatten().enumerate() {
            if i != 0 {
                f.write_str("; ")?;
            }
            write!(f, "{change}")?;
        }
        Ok(())
    }
}

/// What a case's mutation generator may use.
pub(super) struct Env {
    pub(super) maxphyaddr: u8,
    pub(super) cr0_fixed: CrFixedBits<Cr0>,
    pub(super) cr4_fixed: CrFixedBits<Cr4>,
    /// The VM-entry MSR-load area, every entry in use (the VMCS count says how many load).
    pub(super) entry_area: &'static EntryArea,
    /// Its physical address.
    pub(super) entry_area_phys: u64,
    pub(super) msr_list_max: u32,
    /// Frames the feature mutations point control fields at: virtual-APIC page, APIC-access
    /// page, shadow VMCS, and one for bitmaps, lists and logs.
    pub(super) frames: [u64; 4],
    /// VMCS revision identifier (for shadow-VMCS headers).
    pub(super) revision: u32,
    /// The current-VMCS pointer.
    pub(super) vmcs_phys: u64,
    /// The VMXON pointer.
    pub(super) vmxon_phys: u64,
    /// "monitor trap flag" is supported. Without it, Bochs does not reject the injection of
    /// type 7 (other event, rule C6) but panics while delivering it, so such models get none.
    pub(super) mtf: bool,
}

/// Control fields whose bits are flipped.
pub(super) const CONTROL_FIELDS: &[u32] = &[
    fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
    fields::VM_ENTRY_CONTROLS.encoding(),
];

/// Other control fields: bit flips and boundary values.
pub(super) const CONTROL_VALUES: &[u32] = &[
    fields::CR3_TARGET_COUNT.encoding(),
    fields::TPR_THRESHOLD.encoding(),
    fields::VIRTUAL_PROCESSOR_IDENTIFIER.encoding(),
    fields::EPT_POINTER.encoding(),
    fields::ADDRESS_OF_IO_BITMAP_A.encoding(),
    fields::ADDRESS_OF_IO_BITMAP_B.encoding(),
    fields::ADDRESS_OF_MSR_BITMAPS.encoding(),
    fields::VIRTUAL_APIC_ADDRESS.encoding(),
    fields::APIC_ACCESS_ADDRESS.encoding(),
    fields::VMREAD_BITMAP_ADDRESS.encoding(),
    fields::VMWRITE_BITMAP_ADDRESS.encoding(),
    fields::PML_ADDRESS.encoding(),
    fields::EPTP_LIST_ADDRESS.encoding(),
    fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS.encoding(),
    fields::VM_ENTRY_MSR_LOAD_COUNT.encoding(),
];

/// Guest-state fields: bit flips and boundary values (the guest never executes an instruction).
pub(super) const GUEST_FIELDS: &[u32] = &[
    fields::GUEST_CR0.encoding(),
    fields::GUEST_CR3.encoding(),
    fields::GUEST_CR4.encoding(),
    fields::GUEST_DR7.encoding(),
    fields::GUEST_RSP.encoding(),
    fields::GUEST_RIP.encoding(),
    fields::GUEST_RFLAGS.encoding(),
    fields::GUEST_ES_SELECTOR.encoding(),
    fields::GUEST_CS_SELECTOR.encoding(),
    fields::GUEST_SS_SELECTOR.encoding(),
    fields::GUEST_DS_SELECTOR.encoding(),
    fields::GUEST_FS_SELECTOR.encoding(),
    fields::GUEST_GS_SELECTOR.encoding(),
    fields::GUEST_LDTR_SELECTOR.encoding(),
    fields::GUEST_TR_SELECTOR.encoding(),
    fields::GUEST_ES_BASE.encoding(),
    fields::GUEST_CS_BASE.encoding(),
    fields::GUEST_SS_BASE.encoding(),
    fields::GUEST_DS_BASE.encoding(),
    fields::GUEST_FS_BASE.encoding(),
    fields::GUEST_GS_BASE.encoding(),
    fields::GUEST_LDTR_BASE.encoding(),
    fields::GUEST_TR_BASE.encoding(),
    fields::GUEST_ES_LIMIT.encoding(),
    fields::GUEST_CS_LIMIT.encoding(),
    fields::GUEST_SS_LIMIT.encoding(),
    fields::GUEST_DS_LIMIT.encoding(),
    fields::GUEST_FS_LIMIT.encoding(),
    fields::GUEST_GS_LIMIT.encoding(),
    fields::GUEST_LDTR_LIMIT.encoding(),
    fields::GUEST_TR_LIMIT.encoding(),
    fields::GUEST_ES_ACCESS_RIGHTS.encoding(),
    fields::GUEST_CS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_SS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_DS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_FS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_GS_ACCESS_RIGHTS.encoding(),
    fields::GUEST_LDTR_ACCESS_RIGHTS.encoding(),
    fields::GUEST_TR_ACCESS_RIGHTS.encoding(),
    fields::GUEST_GDTR_BASE.encoding(),
    fields::GUEST_IDTR_BASE.encoding(),
    fields::GUEST_GDTR_LIMIT.encoding(),
    fields::GUEST_IDTR_LIMIT.encoding(),
    fields::GUEST_IA32_DEBUGCTL.encoding(),
    fields::GUEST_IA32_SYSENTER_CS.encoding(),
    fields::GUEST_IA32_SYSENTER_ESP.encoding(),
    fields::GUEST_IA32_SYSENTER_EIP.encoding(),
    fields::GUEST_IA32_EFER.encoding(),
    fields::GUEST_IA32_PAT.encoding(),
    fields::GUEST_INTERRUPTIBILITY_STATE.encoding(),
    fields::GUEST_ACTIVITY_STATE.encoding(),
    fields::GUEST_PENDING_DEBUG_EXCEPTIONS.encoding(),
    fields::VMCS_LINK_POINTER.encoding(),
    fields::GUEST_PDPTE0.encoding(),
    fields::GUEST_PDPTE1.encoding(),
    fields::GUEST_PDPTE2.encoding(),
    fields::GUEST_PDPTE3.encoding(),
    fields::GUEST_IA32_S_CET.encoding(),
    fields::GUEST_SSP.encoding(),
    fields::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR.encoding(),
    fields::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(),
];

/// Host selectors: an RPL or TI bit, or a null CS/TR, must make VM entry fail.
pub(super) const HOST_SELECTORS: &[u32] = &[
    fields::HOST_ES_SELECTOR.encoding(),
    fields::HOST_CS_SELECTOR.encoding(),
    fields::HOST_SS_SELECTOR.encoding(),
    fields::HOST_DS_SELECTOR.encoding(),
    fields::HOST_FS_SELECTOR.encoding(),
    fields::HOST_GS_SELECTOR.encoding(),
    fields::HOST_TR_SELECTOR.encoding(),
];

/// Host addresses that must be canonical.
pub(super) const HOST_ADDRESSES: &[u32] = &[
    fields::HOST_FS_BASE.encoding(),
    fields::HOST_GS_BASE.encoding(),
    fields::HOST_TR_BASE.encoding(),
    fields::HOST_GDTR_BASE.encoding(),
    fields::HOST_IDTR_BASE.encoding(),
    fields::HOST_IA32_SYSENTER_ESP.encoding(),
    fields::HOST_IA32_SYSENTER_EIP.encoding(),
    fields::HOST_IA32_INTERRUPT_SSP_TABLE_ADDR.encoding(),
    fields::HOST_SSP.encoding(),
];

/// Entries for the VM-entry MSR-load list: (index quadword, value). Valid ones load MSRs this
/// host does not depend on (SYSENTER MSRs are reloaded at every VM exit; no SYSCALL is used).
pub(super) const MSR_ENTRIES: &[(u64, u64)] = &[
    (msr(IA32_SYSENTER_CS), 0x10),
    (msr(IA32_SYSENTER_ESP), 0x1000),
    (msr(IA32_SYSENTER_ESP), 0x0000_8000_0000_0000), // non-canonical: M6
    (msr(IA32_SYSENTER_EIP), 0xffff_8000_0000_0000),
    (msr(IA32_STAR), 0x0023_0010_0000_0000),
    (msr(IA32_LSTAR), 0xffff_ffff_8000_0000),
    (msr(IA32_LSTAR), 0x8000_0000_0000), // non-canonical: M6
    (msr(IA32_KERNEL_GS_BASE), 0x1234_5000),
    (msr(IA32_KERNEL_GS_BASE), 0xfff0_0000_0000_0000 ^ (1 << 63)), // non-canonical: M6
    (msr(IA32_PAT), 0x0007_0406_0007_0406),
    (msr(IA32_PAT), 0x0007_0406_0007_0402), // memory type 2: M6
    (msr(IA32_EFER), 0x2),                  // reserved bit: M6
    (msr(IA32_FS_BASE), 0),                 // M2
    (msr(IA32_GS_BASE), 0),                 // M2
    (msr(IA32_X2APIC_TPR), 0),              // M3
    (msr(IA32_X2APIC_LAST), 0),             // x2APIC range end: M3
    (msr(IA32_SMM_MONITOR_CTL), 0),         // M4
    (1 << 32 | msr(IA32_SYSENTER_CS), 0),   // reserved bits 63:32: M1
    (msr(IA32_DEBUGCTL), 0),
    (msr(IA32_DEBUGCTL), 1 << 63), // reserved: M6
];

/// An MSR address as the index quadword of an MSR-area entry.
pub(super) const fn msr(index: u32) -> u64 {
    index as u64
}

pub(super) fn field_bits(encoding: u32) -> u32 {
    match fields::by_encoding(encoding) {
        Some(info) => info.width().bits(),
        None => 64,
    }
}

/// A boundary value for a field that holds `old`.
pub(super) fn boundary(rng: &mut Rng, env: &Env, old: u64) -> u64 {
    let m = u32::from(env.maxphyaddr);
    match rng.below(14) {
        0 => 0,
        1 => u64::MAX,
        2 => old | 1 << m,
        3 => old | 1 << (m - 1),
        4 => 0x0000_8000_0000_0000,
        5 => 0xffff_8000_0000_0000,
        6 => 0x0000_7fff_ffff_f000,
        7 => old | 1,
        8 => old | 0xfff,
        9 => old | 1 << 32,
        10 => old ^ 1 << 31,
        11 => old.wrapping_add(1),
        12 => old.wrapping_sub(1),
        _ => old | 1 << 63,
    }
}

pub(super) fn set_field(
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
    encoding: u32,
    new: u64,
) -> Result<(), VmFail> {
    let old = active.read_raw(encoding)?;
    let bits = field_bits(encoding);
    let new = if bits >= 64 {
        new
    } else {
        new & ((1 << bits) - 1)
    };
    active.write_raw(encoding, new)?;
    mutation.push(Change::Field { encoding, old, new });
    Ok(())
}

/// Every `GRID_EVERY`-th case (from case 0) injects one combination of the event-injection grid
/// instead of random mutations; the combinations follow each other in order, so any
/// `GRID_EVERY * GRID_SIZE` consecutive cases cover each of them.
pub(super) const GRID_EVERY: u32 = 4;

/// The hardware-exception vectors of the grid: all 32, and two beyond (C8).
pub(super) const HARDWARE_VECTORS: [u8; 34] = {
    let mut v = [0u8; 34];
    let mut i = 0;
    while i < 32 {
        v[i] = i as u8;
        i += 1;
    }
    v[32] = 32;
    v[33] = 0xff;
    v
};

/// The grid's vectors for each interruption type (index = type, SDM "Format of the VM-Entry
/// Interruption-Information Field"): every vector for hardware exceptions (C8, C10), the valid
/// and an invalid one where the type fixes it (C7 NMI = 2, C9 other event = 0), a few others.
pub(super) const GRID_VECTORS: [&[u8]; 8] = [
    &[0x20, 8, 0xff], // external interrupt
    &[0, 8],          // reserved (C6)
    &[2, 8],          // NMI
    &HARDWARE_VECTORS,
    &[3, 0x80], // software interrupt
    &[1],       // privileged software exception (INT1)
    &[3, 4],    // software exception (INT3, INTO)
    &[0, 1],    // other event (pending MTF VM exit)
];

/// The guest modes of the grid: CR0.PE = 0 (only with "unrestricted guest"), and CR0.PE = 1 with
/// and without "unrestricted guest".
pub(super) const GRID_MODES: [(Option<GuestMode>, bool); 4] = [
    (None, true),                         // the baseline: real mode, unrestricted guest
    (Some(GuestMode::Protected32), true), // CR0.PE = 1, paging off
    (Some(GuestMode::Pae32), false),      // CR0.PE = 1 without unrestricted guest
    (Some(GuestMode::Long64), true),      // IA-32e mode
];

/// Number of grid combinations: guest modes x deliver-error-code x (type, vector) pairs.
pub(super) const GRID_SIZE: u32 = {
    let mut pairs = 0;
    let mut t = 0;
    while t < GRID_VECTORS.len() {
        pairs += GRID_VECTORS[t].len();
        t += 1;
    }
    (GRID_MODES.len() * 2 * pairs) as u32
};

/// The grid combination case `case` runs, if it is a grid case.
pub(super) fn grid_combination(case: u32) -> Option<u32> {
    case.is_multiple_of(GRID_EVERY)
        .then_some((case / GRID_EVERY) % GRID_SIZE)
}

/// Injects grid combination `index` into an otherwise valid guest: the guest mode, then the
/// event (error code 0, instruction length 1, RFLAGS.IF = 1 so that only the injection rules
/// decide). Type 7 becomes the reserved type 1 on models without the monitor trap flag (Bochs
/// panics delivering it there instead of failing C6).
pub(super) fn inject_grid(
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
    index: u32,
) -> Result<(), VmFail> {
    let (mode, unrestricted) = GRID_MODES[(index % GRID_MODES.len() as u32) as usize];
    let rest = index / GRID_MODES.len() as u32;
    let deliver = u64::from(rest % 2);
    let mut pair = (rest / 2) as usize;
    let mut kind = 0;
    for (t, vectors) in GRID_VECTORS.iter().enumerate() {
        if pair < vectors.len() {
            kind = t;
            break;
        }
        pair -= vectors.len();
    }
    let vector = u64::from(GRID_VECTORS[kind][pair]);
    let kind = if kind == 7 && !env.mtf {
        1
    } else {
        kind as u64
    };
    if let Some(mode) = mode {
        switch_mode(active, mode)?;
        mutation.push(Change::Mode(mode));
    }
    if !unrestricted {
        let proc2 = fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding();
        let old = active.read_raw(proc2)?;
        set_field(active, mutation, proc2, old & !(1 << 7))?;
    }
    set_field(active, mutation, fields::GUEST_RFLAGS.encoding(), 0x202)?;
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
        1,
    )?;
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
        0,
    )?;
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
        1 << 31 | deliver << 11 | kind << 8 | vector,
    )
}

/// Applies one to three mutations. Fields the processor does not support are skipped.
pub(super) fn mutate(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let mode = match rng.below(10) {
        0..=4 => None,
        5 | 6 => Some(GuestMode::Protected32),
        7 => Some(GuestMode::Pae32),
        _ => Some(GuestMode::Long64),
    };
    if let Some(mode) = mode {
        switch_mode(active, mode)?;
        mutation.push(Change::Mode(mode));
    }
    let count = match rng.below(10) {
        0..=5 => 1,
        6..=8 => 2,
        _ => 3,
    };
    for _ in 0..count {
        match one_mutation(rng, env, active, mutation) {
            // An unsupported field (VMREAD/VMWRITE error 12): nothing changed.
            Err(VmFail::Valid(e)) if e.number() == 12 => {}
            other => other?,
        }
    }
    Ok(())
}

/// Guest-physical address of the (empty) top-level paging structure of the paged modes.
pub(super) const PAGING_ROOT_GPA: u64 = 0x8000;

/// Rewrites the guest state as a consistent `mode` (the guest is parked on the stub at
/// `STUB_GPA`; its paging structures are empty, which does not matter before its first
/// instruction).
pub(super) fn switch_mode(active: &mut Vmcs<'_>, mode: GuestMode) -> Result<(), VmFail> {
    let long = matches!(mode, GuestMode::Long64);
    let paged = !matches!(mode, GuestMode::Protected32);
    let cr0 = active.read_raw(fields::GUEST_CR0.encoding())? | Cr0::PE.bits();
    let cr4 = active.read_raw(fields::GUEST_CR4.encoding())?;
    let (cr0, cr4) = if paged {
        (cr0 | Cr0::PG.bits(), cr4 | Cr4::PAE.bits())
    } else {
        (cr0, cr4)
    };
    let writes: [(u32, u64); 5] = [
        (fields::GUEST_CR0.encoding(), cr0),
        (fields::GUEST_CR4.encoding(), cr4),
        (
            fields::GUEST_CR3.encoding(),
            if paged { PAGING_ROOT_GPA } else { 0 },
        ),
        (
            fields::GUEST_IA32_EFER.encoding(),
            if long {
                (Efer::LME | Efer::LMA).bits()
            } else {
                0
            },
        ),
        (fields::GUEST_RIP.encoding(), STUB_GPA),
    ];
    for (encoding, value) in writes {
        active.write_raw(encoding, value)?;
    }
    // The flat segments and TR of the matching template.
    let template = if long {
        GuestState::long_mode_64(STUB_GPA, PAGING_ROOT_GPA)
    } else {
        GuestState::protected_mode_32(STUB_GPA)
    };
    active.write_guest_segment(GuestSegment::Cs, template.cs)?;
    for seg in [GuestSegment::Ss, GuestSegment::Ds, GuestSegment::Es] {
        active.write_guest_segment(seg, template.ds)?;
    }
    active.write_guest_segment(GuestSegment::Tr, template.tr)?;
    if long {
        let entry = fields::VM_ENTRY_CONTROLS.encoding();
        let controls = active.read_raw(entry)?;
        active.write_raw(
            entry,
            controls | u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        )?;
    }
    Ok(())
}

pub(super) fn one_mutation(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    match rng.below(100) {
        // A feature switched on with the fields it uses.
        0..=11 => feature(rng, env, active, mutation),
        // Control bits.
        12..=24 => {
            let encoding = rng.pick(CONTROL_FIELDS);
            let mut bit = rng.below(32);
            // Keep "activate VMX-preemption timer": it ends every successful entry at once.
            if encoding == fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding() && bit == 6 {
                bit = 5;
            }
            let old = active.read_raw(encoding)?;
            set_field(active, mutation, encoding, old ^ 1 << bit)
        }
        // Other control fields.
        25..=39 => {
            let encoding = rng.pick(CONTROL_VALUES);
            let old = active.read_raw(encoding)?;
            let new = if encoding == fields::VM_ENTRY_MSR_LOAD_COUNT.encoding() {
                // Up to the area's size (past the recommended maximum): a longer list would run
                // into memory this test does not control, and the checker does not look past
                // the recommended maximum.
                let max = u64::from(env.msr_list_max);
                rng.pick(&[0, 1, 2, 5, max, max + 1, ENTRY_AREA_ENTRIES as u64])
            } else if encoding == fields::CR3_TARGET_COUNT.encoding() {
                rng.pick(&[0, 1, 3, 4, 5, 0x100, 0xffff_ffff])
            } else if rng.chance(50) {
                old ^ 1 << rng.below(u64::from(field_bits(encoding)))
            } else {
                boundary(rng, env, old)
            };
            set_field(active, mutation, encoding, new)
        }
        // Guest state.
        40..=64 => {
            let encoding = rng.pick(GUEST_FIELDS);
            let old = active.read_raw(encoding)?;
            let new = match encoding {
                // Not wait-for-SIPI (3) here: a guest that VM entry puts into that state stays
                // there (Bochs does not end it with the preemption timer), and the run would
                // hang. `inject` uses it, where the injection itself must fail the entry (K6).
                e if e == fields::GUEST_ACTIVITY_STATE.encoding() => {
                    rng.pick(&[0, 1, 2, 4, 0xffff_ffff])
                }
                _ if rng.chance(60) => old ^ 1 << rng.below(u64::from(field_bits(encoding))),
                _ => boundary(rng, env, old),
            };
            set_field(active, mutation, encoding, new)
        }
        // Event injection, with the guest state it depends on.
        65..=79 => inject(rng, env, active, mutation),
        // The VM-entry MSR-load list.
        80..=89 => msr_list(rng, env, active, mutation),
        // Host state: only values VM entry must reject.
        _ => host(rng, env, active, mutation),
    }
}

/// Sets `bits` in the control field `encoding`.
pub(super) fn set_bits(
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
    encoding: u32,
    bits: u64,
) -> Result<(), VmFail> {
    let old = active.read_raw(encoding)?;
    set_field(active, mutation, encoding, old | bits)
}

/// A page address for a control field: one of the feature frames, usually valid, sometimes
/// misaligned or beyond MAXPHYADDR.
pub(super) fn page(rng: &mut Rng, env: &Env, frame: usize) -> u64 {
    let base = env.frames[frame];
    match rng.below(10) {
        0 => base | 0x80,
        1 => base | 1 << env.maxphyaddr,
        _ => base,
    }
}

/// Switches on a feature (pin/processor-based/secondary controls) together with the fields and
/// memory it uses, with valid and boundary values: the TPR shadow and APIC virtualization, VMCS
/// shadowing and the link pointer, VM functions, PML, #VE, virtual NMIs, the preemption-timer
/// save control.
pub(super) fn feature(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let pin = fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding();
    let proc = fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding();
    let proc2 = fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding();
    match rng.below(7) {
        0 => {
            // TPR shadow, APIC virtualization.
            if rng.chance(85) {
                set_bits(active, mutation, proc, 1 << 21)?;
            }
            let vapic = page(rng, env, 0);
            set_field(
                active,
                mutation,
                fields::VIRTUAL_APIC_ADDRESS.encoding(),
                vapic,
            )?;
            let threshold = rng.pick(&[0u64, 1, 7, 15, 16, 0x80]);
            set_field(
                active,
                mutation,
                fields::TPR_THRESHOLD.encoding(),
                threshold,
            )?;
            let vtpr = rng.pick(&[0u8, 0x10, 0x70, 0xf0, 0xff]);
            // SAFETY: the virtual-APIC frame is owned by this module, identity-mapped.
            unsafe { ((env.frames[0] + 0x80) as *mut u8).write_volatile(vtpr) };
            let mut extra = 0;
            for bit in [0u64, 4, 8, 9] {
                if rng.chance(30) {
                    extra |= 1 << bit;
                }
            }
            if extra != 0 {
                set_bits(active, mutation, proc2, extra)?;
            }
            if extra & 1 != 0 {
                let apic = page(rng, env, 1);
                set_field(
                    active,
                    mutation,
                    fields::APIC_ACCESS_ADDRESS.encoding(),
                    apic,
                )?;
            }
            if rng.chance(50) {
                set_bits(active, mutation, pin, 1)?;
            }
            Ok(())
        }
        1 => {
            // VMCS shadowing and the VMCS link pointer.
            if rng.chance(70) {
                set_bits(active, mutation, proc2, 1 << 14)?;
                let bitmap = page(rng, env, 3);
                set_field(
                    active,
                    mutation,
                    fields::VMREAD_BITMAP_ADDRESS.encoding(),
                    bitmap,
                )?;
                let bitmap = page(rng, env, 3);
                set_field(
                    active,
                    mutation,
                    fields::VMWRITE_BITMAP_ADDRESS.encoding(),
                    bitmap,
                )?;
            }
            let shadow = env.frames[2];
            let header = match rng.below(4) {
                0 => env.revision,
                1 => env.revision | 1 << 31,
                2 => env.revision ^ 1,
                _ => 0,
            };
            // SAFETY: the shadow-VMCS frame is owned by this module, identity-mapped.
            unsafe { (shadow as *mut u32).write_volatile(header) };
            let link = rng.pick(&[
                shadow,
                shadow,
                shadow | 8,
                env.vmcs_phys,
                env.vmxon_phys,
                shadow | 1 << env.maxphyaddr,
            ]);
            set_field(active, mutation, fields::VMCS_LINK_POINTER.encoding(), link)
        }
        2 => {
            // VM functions (EPTP switching).
            set_bits(active, mutation, proc2, 1 << 13)?;
            let functions = rng.pick(&[0u64, 1, 2, 1 << 63]);
            set_field(
                active,
                mutation,
                fields::VM_FUNCTION_CONTROLS.encoding(),
                functions,
            )?;
            let list = page(rng, env, 3);
            set_field(active, mutation, fields::EPTP_LIST_ADDRESS.encoding(), list)?;
            if rng.chance(20) {
                let old = active.read_raw(proc2)?;
                set_field(active, mutation, proc2, old & !(1 << 1))?;
            }
            Ok(())
        }
        3 => {
            // Page-modification logging.
            set_bits(active, mutation, proc2, 1 << 17)?;
            let log = page(rng, env, 3);
            set_field(active, mutation, fields::PML_ADDRESS.encoding(), log)?;
            let index = rng.pick(&[0u64, 511, 512, 0xffff]);
            set_field(active, mutation, fields::PML_INDEX.encoding(), index)?;
            if rng.chance(20) {
                let old = active.read_raw(proc2)?;
                set_field(active, mutation, proc2, old & !(1 << 1))?;
            }
            Ok(())
        }
        4 => {
            // EPT-violation #VE.
            set_bits(active, mutation, proc2, 1 << 18)?;
            let info = page(rng, env, 3);
            set_field(
                active,
                mutation,
                fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS.encoding(),
                info,
            )
        }
        5 => {
            // NMI exiting, virtual NMIs, NMI-window exiting.
            let old = active.read_raw(pin)?;
            let new =
                (old & !(1 << 3 | 1 << 5)) | rng.pick(&[0u64, 1 << 3, 1 << 5, 1 << 3 | 1 << 5]);
            set_field(active, mutation, pin, new)?;
            if rng.chance(50) {
                set_bits(active, mutation, proc, 1 << 22)?;
            }
            Ok(())
        }
        _ => {
            // Save the preemption timer, acknowledge interrupts on exit.
            let exit = fields::PRIMARY_VM_EXIT_CONTROLS.encoding();
            set_bits(
                active,
                mutation,
                exit,
                rng.pick(&[1u64 << 22, 1 << 15, 1 << 22 | 1 << 15]),
            )
        }
    }
}

pub(super) fn inject(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let kind = rng.below(if env.mtf { 8 } else { 7 });
    let vector = rng.pick(&[
        0u64, 1, 2, 3, 6, 8, 10, 13, 14, 17, 18, 21, 31, 32, 0x80, 0xff,
    ]);
    let mut info = 1 << 31 | kind << 8 | vector;
    if rng.chance(40) {
        info |= 1 << 11;
    }
    if rng.chance(5) {
        info |= 1 << rng.pick(&[12u64, 13, 20, 30]);
    }
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
        info,
    )?;
    if info & 1 << 11 != 0 || rng.chance(20) {
        let code = rng.pick(&[0u64, 0x1234, 0x8000, 0x1_0000, 0xffff_ffff]);
        set_field(
            active,
            mutation,
            fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
            code,
        )?;
    }
    if matches!(kind, 4..=6) || rng.chance(20) {
        let length = rng.pick(&[0u64, 1, 2, 15, 16]);
        set_field(
            active,
            mutation,
            fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
            length,
        )?;
    }
    // The guest state the injection rules look at.
    match rng.below(8) {
        0 | 1 => set_field(
            active,
            mutation,
            fields::GUEST_RFLAGS.encoding(),
            (Rflags::RESERVED_1 | Rflags::IF).bits(),
        ),
        2 => set_field(
            active,
            mutation,
            fields::GUEST_INTERRUPTIBILITY_STATE.encoding(),
            rng.pick(&[1u64, 2, 8, 9]),
        ),
        3 => set_field(
            active,
            mutation,
            fields::GUEST_ACTIVITY_STATE.encoding(),
            rng.pick(&[1u64, 2, 3]),
        ),
        4 => {
            let cr0 = active.read_raw(fields::GUEST_CR0.encoding())?;
            set_field(
                active,
                mutation,
                fields::GUEST_CR0.encoding(),
                cr0 | Cr0::PE.bits(),
            )
        }
        _ => Ok(()),
    }
}

pub(super) fn msr_list(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    let count = 1 + rng.below(4);
    for slot in 0..count as usize {
        let (index, value) = rng.pick(MSR_ENTRIES);
        // Bits 31:0 of `index` are the MSR, bits 63:32 the entry's reserved bits (rule M1).
        let entry = MsrEntry {
            index: index as u32,
            data: value,
        };
        env.entry_area
            .set_with_reserved(slot, entry, (index >> 32) as u32);
        mutation.push(Change::MsrEntry { slot, index, value });
    }
    set_field(
        active,
        mutation,
        fields::VM_ENTRY_MSR_LOAD_COUNT.encoding(),
        count,
    )?;
    if rng.chance(15) {
        let address = env.entry_area_phys | rng.pick(&[8u64, 1, 1 << env.maxphyaddr, 1 << 63]);
        set_field(
            active,
            mutation,
            fields::VM_ENTRY_MSR_LOAD_ADDRESS.encoding(),
            address,
        )?;
    }
    Ok(())
}

pub(super) fn host(
    rng: &mut Rng,
    env: &Env,
    active: &mut Vmcs<'_>,
    mutation: &mut Mutation,
) -> Result<(), VmFail> {
    match rng.below(7) {
        0 => {
            // A CR0 bit fixed to 1 cleared, or one fixed to 0 set.
            let old = active.read_raw(fields::HOST_CR0.encoding())?;
            let f = env.cr0_fixed;
            let new = fixed_violation(rng, f.must_be_one.bits(), f.must_be_zero.bits(), old);
            set_field(active, mutation, fields::HOST_CR0.encoding(), new)
        }
        1 => {
            let old = active.read_raw(fields::HOST_CR4.encoding())?;
            let new = if rng.chance(20) {
                old & !Cr4::PAE.bits() // required with "host address-space size"
            } else {
                let f = env.cr4_fixed;
                fixed_violation(rng, f.must_be_one.bits(), f.must_be_zero.bits(), old)
            };
            set_field(active, mutation, fields::HOST_CR4.encoding(), new)
        }
        2 => {
            let old = active.read_raw(fields::HOST_CR3.encoding())?;
            let bit = rng.below(64 - u64::from(env.maxphyaddr)) + u64::from(env.maxphyaddr);
            set_field(
                active,
                mutation,
                fields::HOST_CR3.encoding(),
                old | 1 << bit,
            )
        }
        3 => {
            let encoding = rng.pick(HOST_SELECTORS);
            let old = active.read_raw(encoding)?;
            let new = if rng.chance(25)
                && (encoding == fields::HOST_CS_SELECTOR.encoding()
                    || encoding == fields::HOST_TR_SELECTOR.encoding())
            {
                0
            } else {
                old | rng.pick(&[1u64, 2, 3, 4])
            };
            set_field(active, mutation, encoding, new)
        }
        4 => {
            let encoding = rng.pick(HOST_ADDRESSES);
            let old = active.read_raw(encoding)?;
            let new = old
                ^ rng.pick(&[
                    1u64 << 47,
                    1 << 63,
                    1 << 48,
                    0x0000_8000_0000_0000 | 1 << 62,
                ]);
            set_field(active, mutation, encoding, new)
        }
        5 => {
            let old = active.read_raw(fields::HOST_IA32_EFER.encoding())?;
            let new = match rng.below(4) {
                0 => old & !Efer::LMA.bits(),
                1 => old & !Efer::LME.bits(),
                _ => old | 1 << rng.pick(&[1u64, 2, 7, 9, 12, 16, 63]),
            };
            set_field(active, mutation, fields::HOST_IA32_EFER.encoding(), new)
        }
        _ => {
            // "host address-space size" cleared while the host runs in IA-32e mode.
            let encoding = fields::PRIMARY_VM_EXIT_CONTROLS.encoding();
            let old = active.read_raw(encoding)?;
            set_field(active, mutation, encoding, old & !(1 << 9))
        }
    }
}

/// `old` with one bit that IA32_VMX_CRx_FIXED0/1 fix (`ones` must be 1, `zeros` must be 0) put
/// on the wrong side (or a bit of 63:32 set).
pub(super) fn fixed_violation(rng: &mut Rng, ones: u64, zeros: u64, old: u64) -> u64 {
    let zeros = zeros & 0xffff_ffff;
    for _ in 0..8 {
        let bit = 1u64 << rng.below(32);
        if ones & bit != 0 {
            return old & !bit;
        }
        if zeros & bit != 0 {
            return old | bit;
        }
    }
    old | 1 << (32 + rng.below(32))
}
