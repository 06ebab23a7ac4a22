//! Hostile-input campaign for `vmcs::nested`: L1's VMX instructions with arbitrary operands,
//! contexts and L1 memory (regions outside L1's memory, misaligned or beyond the address width,
//! garbage revision identifiers and VMCS12 images), VM entries of mutated VMCS12s followed by
//! VMCS02 construction and the reflected exit or the exit after a failed entry, EPT12 tables of
//! random entries, and VMCS shadowing with random field lists. Capabilities are those of the
//! Bochs dumps in `vmx-caps/testdata`, virtualized as L0 shows them to L1.
//!
//! Besides the absence of panics (debug builds: overflow checks on), each step asserts what the
//! SDM says of the outcome: the class of the instruction's result (SDM Vol. 3C, 31.2
//! "Conventions"), the state a fault leaves alone, the VM-instruction error of VMfailValid, the
//! current-VMCS pointer's alignment and width, VMWRITE/VMREAD round trips, the exit reason of a
//! failed entry, the host state loaded at a reflected exit, the VMX-abort indicator, and the
//! rights of an EPT02 mapping.

mod check_common;
mod nested_common;

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;

use ept::{
    Access, EptConfig, EptMapper, GuestPhysAddr, HeapFrameAllocator, HostPhysAddr, LeafAttributes,
    MemoryType, OffsetPhysToVirt, Permissions,
};
use hostile_cases::cases;
use nested_common::{Msrs, l0_part, virtual_caps};
use proptest::prelude::*;
use vmcs::check::{CpuFacts, EntryInstruction, LaunchState};
use vmcs::field::FieldWidth;
use vmcs::nested::{
    Ept02Resolution, FlatGuestMemory, L1Context, L1VmxState, L2Entry, Pml12, PointerOperand,
    Reflected, SHADOWED_FIELDS, VmxFault, VmxOutcome, build_vmcs02, merge_io_bitmaps,
    merge_msr_bitmap, resolve_ept_violation, shadow_bitmaps, sync_from_shadow, sync_to_shadow,
};
use vmcs::structures::{IoBitmaps, MsrBitmap, ShadowBitmap};
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::{MsrSnapshot, VmxCapabilities};
use vmx_core::VmInstructionError;

const REVISION: u32 = 0x11e5_7ed0;

/// The Bochs dumps (and the Hyper-V nested profile) the campaign draws the real capabilities
/// from.
const DUMPS: [&str; 6] = [
    include_str!("../../vmx-caps/testdata/tigerlake.msr"),
    include_str!("../../vmx-caps/testdata/corei7_skylake_x.msr"),
    include_str!("../../vmx-caps/testdata/core2_penryn_t9600.msr"),
    include_str!("../../vmx-caps/testdata/corei5_lynnfield_750.msr"),
    include_str!("../../vmx-caps/testdata/corei3_cnl.msr"),
    include_str!("../../vmx-caps/testdata/nested/hyperv_nested_raptorlake.msr"),
];

fn real_caps(dump: usize) -> VmxCapabilities {
    let mut msrs = MsrSnapshot::parse(DUMPS[dump % DUMPS.len()]).unwrap();
    VmxCapabilities::read_partial(&mut msrs).unwrap().caps
}

/// The bytes of L1's memory as the campaign's memory: 64 KiB at `base`.
const L1_PAGES: u64 = 16;

/// How a page of L1's memory starts: the revision identifier, the same with the shadow-VMCS
/// indicator, another identifier, or random bytes throughout.
#[derive(Debug, Clone, Copy)]
enum PageHeader {
    Revision,
    ShadowRevision,
    Other(u32),
    Random,
}

fn page_header() -> impl Strategy<Value = PageHeader> {
    prop_oneof![
        4 => Just(PageHeader::Revision),
        1 => Just(PageHeader::ShadowRevision),
        1 => any::<u32>().prop_map(PageHeader::Other),
        2 => Just(PageHeader::Random),
    ]
}

/// A VMX pointer operand: a page of L1's memory (the common case), anything, a misaligned
/// address inside, beyond the physical-address width, the last page, or the register form.
fn pointer() -> impl Strategy<Value = PointerOperand> {
    prop_oneof![
        6 => (0..L1_PAGES).prop_map(|p| PointerOperand::Memory(p * 0x1000)),
        1 => any::<u64>().prop_map(PointerOperand::Memory),
        1 => (0..0x10000u64).prop_map(PointerOperand::Memory),
        1 => (32..64u32).prop_map(|b| PointerOperand::Memory(1u64 << b)),
        1 => Just(PointerOperand::Memory(!0xfff)),
        1 => Just(PointerOperand::Register),
    ]
}

/// A VMREAD/VMWRITE encoding operand: a field of the table (full or high access), any 32-bit
/// or 64-bit value.
fn encoding() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0..fields::ALL.len(), any::<bool>()).prop_map(|(i, high)| {
            let f = &fields::ALL[i];
            u64::from(match f.high_encoding() {
                Some(h) if high => h,
                _ => f.encoding,
            })
        }),
        1 => any::<u32>().prop_map(u64::from),
        1 => any::<u64>(),
    ]
}

fn context() -> impl Strategy<Value = L1Context> {
    let long = L1Context::long_mode_cpl0();
    prop_oneof![
        8 => Just(long),
        2 => (0..4u8, any::<u64>(), any::<u64>(), any::<[bool; 4]>()).prop_map(
            move |(cpl, cr0, cr4, [vm, lma, l, movss])| L1Context {
                cpl,
                cr0: Cr0::from_bits_retain(cr0),
                cr4: Cr4::from_bits_retain(cr4),
                rflags_vm: vm,
                efer_lma: lma,
                cs_l: l,
                blocked_by_mov_ss: movss,
            }
        ),
        1 => Just(L1Context { blocked_by_mov_ss: true, ..long }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Vmxon(PointerOperand),
    Vmxoff,
    Vmclear(PointerOperand),
    Vmptrld(PointerOperand),
    Vmptrst,
    Vmread(u64),
    Vmwrite(u64, u64),
    Entry(EntryInstruction, u8),
    Invept(u64, u128),
    Invvpid(u64, u128, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => pointer().prop_map(Op::Vmxon),
        1 => Just(Op::Vmxoff),
        2 => pointer().prop_map(Op::Vmclear),
        3 => pointer().prop_map(Op::Vmptrld),
        1 => Just(Op::Vmptrst),
        3 => encoding().prop_map(Op::Vmread),
        4 => (encoding(), any::<u64>()).prop_map(|(e, v)| Op::Vmwrite(e, v)),
        2 => (any::<bool>(), any::<u8>()).prop_map(|(l, w)| Op::Entry(
            if l { EntryInstruction::Vmlaunch } else { EntryInstruction::Vmresume },
            w,
        )),
        1 => (0..5u64, any::<u128>()).prop_map(|(t, d)| Op::Invept(t, d)),
        1 => (any::<u64>(), any::<u128>()).prop_map(|(t, d)| Op::Invept(t, d)),
        1 => (0..5u64, any::<u128>(), any::<u8>()).prop_map(|(t, d, w)| Op::Invvpid(t, d, w)),
    ]
}

/// What a fault must leave alone.
#[derive(Debug, PartialEq)]
struct Visible {
    vmxon: Option<u64>,
    current: Option<u64>,
    launch: Option<LaunchState>,
    vmcs: Option<Vec<(u32, u64)>>,
}

fn visible(l1: &L1VmxState) -> Visible {
    Visible {
        vmxon: l1.vmxon_pointer(),
        current: l1.current_pointer(),
        launch: l1.launch_state(),
        vmcs: l1
            .current_vmcs()
            .map(|v| v.iter().map(|(f, value)| (f.encoding, value)).collect()),
    }
}

/// The bits of `value` a VMWRITE of `encoding` keeps: a high access takes 32 bits.
fn written_bits(encoding: u32, value: u64) -> u64 {
    if encoding & 1 == 1 {
        value & 0xffff_ffff
    } else {
        value & FieldWidth::from_encoding(encoding).mask()
    }
}

fn instruction_error(l1: &L1VmxState) -> Option<u64> {
    l1.current_vmcs()
        .and_then(|v| v.read_raw(fields::VM_INSTRUCTION_ERROR.encoding()).ok())
}

/// An L1 memory image: 16 pages, each starting with `headers[i]`, the rest `fill`.
fn l1_memory(headers: &[PageHeader], fill: &[u8]) -> Vec<u8> {
    let mut memory = vec![0u8; (L1_PAGES * 0x1000) as usize];
    for (i, chunk) in memory.chunks_mut(fill.len().max(1)).enumerate() {
        let n = chunk.len();
        chunk.copy_from_slice(&fill[..n]);
        let _ = i;
    }
    for (page, header) in headers.iter().enumerate() {
        let at = page * 0x1000;
        let word = match header {
            PageHeader::Revision => REVISION,
            PageHeader::ShadowRevision => REVISION | 1 << 31,
            PageHeader::Other(w) => *w,
            PageHeader::Random => continue,
        };
        memory[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }
    memory
}

/// A VMCS of `caps` whose every field holds a value from `values` (cycled).
fn random_vmcs(caps: &VmxCapabilities, values: &[u64]) -> SoftVmcs {
    let mut v = SoftVmcs::new(caps);
    for (i, f) in fields::ALL.iter().enumerate() {
        let _ = v.store(f.encoding, values[i % values.len()]);
    }
    v
}

/// Flips the bits `g` selects in every capability of `caps`.
fn hostile_caps(caps: &mut VmxCapabilities, g: &[u64; 12]) {
    use vmx_caps::{AllowedControls, Controls};
    fn flip<F: Controls>(a: &mut AllowedControls<F>, g: u64) {
        let (a0, a1) = (a.allowed0.to_raw(), a.allowed1.to_raw());
        *a = AllowedControls::from_split_msr(((a1 ^ (g >> 32)) << 32) | ((a0 ^ g) & 0xffff_ffff));
    }
    caps.basic.0 ^= g[0];
    caps.misc.0 ^= g[1];
    caps.vmcs_enum.0 ^= g[2];
    caps.ept_vpid.0 ^= g[3];
    caps.cr0_fixed.fixed0 ^= g[4];
    caps.cr0_fixed.fixed1 ^= g[4].rotate_left(7);
    caps.cr4_fixed.fixed0 ^= g[5];
    caps.cr4_fixed.fixed1 ^= g[5].rotate_left(7);
    flip(&mut caps.pin, g[6]);
    flip(&mut caps.proc, g[7]);
    flip(&mut caps.proc2, g[8]);
    flip(&mut caps.exit, g[9]);
    flip(&mut caps.entry, g[10]);
    caps.feature_control =
        vmx_caps::FeatureControl::from_bits_retain(caps.feature_control.bits() ^ g[11]);
}

/// One step's checks beyond those every outcome shares.
fn check_outcome<T: core::fmt::Debug>(
    label: &str,
    before: &Visible,
    after: &L1VmxState,
    cx: &L1Context,
    outcome: &VmxOutcome<T>,
    may_fail_invalid_with_current: bool,
) -> Result<(), TestCaseError> {
    let mode_faults = !cx.cr0.contains(Cr0::PE) || cx.rflags_vm || (cx.efer_lma && !cx.cs_l);
    match outcome {
        VmxOutcome::Fault(_) => {
            prop_assert_eq!(
                before,
                &visible(after),
                "{}: a fault changed the state",
                label
            );
        }
        VmxOutcome::VmFailValid(error) => {
            prop_assert!(
                before.current.is_some(),
                "{}: VMfailValid without a VMCS",
                label
            );
            prop_assert_eq!(
                instruction_error(after),
                Some(u64::from(error.number())),
                "{}: VM-instruction error",
                label
            );
        }
        VmxOutcome::VmFailInvalid => prop_assert!(
            before.current.is_none() || may_fail_invalid_with_current,
            "{}: VMfailInvalid with a current VMCS",
            label
        ),
        VmxOutcome::Succeed(_) => {}
    }
    if mode_faults {
        prop_assert_eq!(
            outcome.cf_zf(),
            None,
            "{}: succeeded in a mode that faults",
            label
        );
    }
    if before.vmxon.is_none() && !label.starts_with("VMXON") {
        prop_assert!(
            matches!(outcome, VmxOutcome::Fault(VmxFault::InvalidOpcode)),
            "{}: outside VMX operation: {:?}",
            label,
            outcome
        );
    }
    if let Some(p) = after.current_pointer() {
        prop_assert!(
            p & 0xfff == 0 && p >> 52 == 0,
            "{}: pointer {:#x}",
            label,
            p
        );
        prop_assert_ne!(Some(p), after.vmxon_pointer(), "{}: current = VMXON", label);
        prop_assert!(
            after.in_vmx_operation(),
            "{}: current VMCS outside VMX",
            label
        );
    }
    Ok(())
}

/// Counters of the sequence campaign, printed at the end of the test.
static STEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ENTERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    /// Sequences of L1's VMX instructions over a random L1 memory image.
    #[test]
    fn instruction_sequences_keep_the_sdm_classes(
        dump in 0..DUMPS.len(),
        virtualized in any::<bool>(),
        maxphyaddr in 32..=52u8,
        base in prop_oneof![Just(0u64), Just(0x1000u64), Just(u64::MAX - 0xffff)],
        headers in proptest::collection::vec(page_header(), L1_PAGES as usize),
        fill in proptest::collection::vec(any::<u8>(), 1..64),
        ops in proptest::collection::vec((context(), op()), 1..48),
        exit_values in proptest::collection::vec(any::<u64>(), 1..16),
        garbage in proptest::option::weighted(0.25, any::<[u64; 12]>()),
    ) {
        let real = real_caps(dump);
        let mut caps = if virtualized { virtual_caps(&real, REVISION) } else { real };
        if let Some(g) = garbage {
            // Capabilities no processor reports: every MSR's bits flipped at random.
            hostile_caps(&mut caps, &g);
        }
        let Ok(mut l1) = L1VmxState::new(&caps, maxphyaddr) else {
            // The dump's region is smaller than the VMCS12 layout: refused with a typed error.
            prop_assert!(caps.basic.vmcs_region_size() < vmcs::nested::VMCS12_LAYOUT_SIZE);
            return Ok(());
        };
        let revision = caps.basic.revision_id();
        let mut memory = l1_memory(&headers, &fill);
        for page in 0..L1_PAGES as usize {
            let at = page * 0x1000;
            if memory[at..at + 4] == REVISION.to_le_bytes() {
                memory[at..at + 4].copy_from_slice(&revision.to_le_bytes());
            } else if memory[at..at + 4] == (REVISION | 1 << 31).to_le_bytes() {
                memory[at..at + 4].copy_from_slice(&(revision | 1 << 31).to_le_bytes());
            }
        }
        let mut msrs = Msrs::default();
        for (cx, op) in ops {
            STEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let before = visible(&l1);
            let mut mem = FlatGuestMemory { base, bytes: &mut memory };
            match op {
                Op::Vmxon(p) => {
                    let o = l1.vmxon(&cx, p, &mut mem);
                    check_outcome("VMXON", &before, &l1, &cx, &o, false)?;
                    if o == VmxOutcome::Succeed(()) {
                        prop_assert_eq!(l1.vmxon_pointer(), Some(match p {
                            PointerOperand::Memory(a) => a,
                            PointerOperand::Register => unreachable!("#UD"),
                        }));
                        prop_assert_eq!(l1.current_pointer(), None);
                    }
                }
                Op::Vmxoff => {
                    let o = l1.vmxoff(&cx, &mut mem);
                    check_outcome("VMXOFF", &before, &l1, &cx, &o, false)?;
                    if o == VmxOutcome::Succeed(()) {
                        prop_assert!(!l1.in_vmx_operation());
                        prop_assert_eq!(l1.current_pointer(), None);
                    }
                }
                Op::Vmclear(p) => {
                    let o = l1.vmclear(&cx, p, &mut mem);
                    check_outcome("VMCLEAR", &before, &l1, &cx, &o, false)?;
                    if let (VmxOutcome::Succeed(()), PointerOperand::Memory(a)) = (o, p) {
                        prop_assert_ne!(l1.current_pointer(), Some(a));
                        let mut launch = [0xaa; 4];
                        if vmcs::check::PhysMemory::read(&mut mem, a + 8, &mut launch).is_ok() {
                            prop_assert_eq!(launch, [0; 4], "VMCLEAR: launch state");
                        }
                    }
                }
                Op::Vmptrld(p) => {
                    let o = l1.vmptrld(&cx, p, &mut mem);
                    check_outcome("VMPTRLD", &before, &l1, &cx, &o, false)?;
                    match (o, p) {
                        (VmxOutcome::Succeed(()), PointerOperand::Memory(a)) => {
                            prop_assert_eq!(l1.current_pointer(), Some(a));
                        }
                        (VmxOutcome::VmFailValid(_), _) => {
                            prop_assert_eq!(l1.current_pointer(), before.current);
                        }
                        _ => {}
                    }
                }
                Op::Vmptrst => {
                    let o = l1.vmptrst(&cx);
                    check_outcome("VMPTRST", &before, &l1, &cx, &o, false)?;
                    if let VmxOutcome::Succeed(p) = o {
                        prop_assert_eq!(p, before.current.unwrap_or(u64::MAX));
                    }
                }
                Op::Vmread(e) => {
                    let o = l1.vmread(&cx, e);
                    check_outcome("VMREAD", &before, &l1, &cx, &o, false)?;
                    if let VmxOutcome::VmFailValid(error) = o {
                        prop_assert_eq!(error, VmInstructionError::UnsupportedVmcsComponent);
                    }
                }
                Op::Vmwrite(e, value) => {
                    let o = l1.vmwrite(&cx, e, value);
                    check_outcome("VMWRITE", &before, &l1, &cx, &o, false)?;
                    if o == VmxOutcome::Succeed(()) {
                        let e32 = u32::try_from(e).unwrap();
                        prop_assert_eq!(l1.vmread(&cx, e), VmxOutcome::Succeed(written_bits(e32, value)));
                        prop_assert!(l1.take_dirty().contains(e32), "VMWRITE not marked dirty");
                    }
                }
                Op::Entry(instruction, width) => {
                    let mut cpu = CpuFacts::new(maxphyaddr);
                    if !(32..=64).contains(&width) {
                        cpu.linear_address_width = width;
                        cpu.maxphyaddr = width;
                    }
                    let mut sink = |_: &vmcs::check::Violation| {};
                    let entry = l1.enter_l2(&cx, instruction, cpu, &mut mem, &mut sink, &mut msrs);
                    let entry = entry.map_err(|e| TestCaseError::fail(format!("enter_l2: {e:?}")))?;
                    match entry {
                        L2Entry::Instruction(o) => {
                            check_outcome("VMLAUNCH", &before, &l1, &cx, &o, true)?;
                        }
                        L2Entry::EntryFailure { exit_reason, qualification } => {
                            prop_assert!(exit_reason & 0x8000_0000 != 0);
                            prop_assert!(matches!(exit_reason & 0xffff, 33 | 34 | 41));
                            let v12 = l1.current_vmcs().unwrap();
                            prop_assert_eq!(v12.read_raw(fields::EXIT_REASON.encoding()), Ok(u64::from(exit_reason)));
                            prop_assert_eq!(v12.read_raw(fields::EXIT_QUALIFICATION.encoding()), Ok(qualification));
                        }
                        L2Entry::Enter => {
                            ENTERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            prop_assert_eq!(l1.launch_state(), Some(LaunchState::Launched));
                            // An arbitrary exit of L2 reflected to L1.
                            let vmcs02 = random_vmcs(&real, &exit_values);
                            let mut vmcs01 = random_vmcs(&real, &exit_values);
                            let built = build_vmcs02(
                                l1.current_vmcs().unwrap(), &vmcs01, &l0_part(), &real,
                                &mut SoftVmcs::new(&real),
                            );
                            if let Ok(built) = built {
                                let r = l1.reflect_exit(&vmcs02, &vmcs02, &built, &mut vmcs01, &mut mem, &mut msrs);
                                prop_assert!(r.is_ok(), "{:?}", r);
                            }
                        }
                    }
                }
                Op::Invept(kind, descriptor) => {
                    let o = l1.invept(&cx, kind, descriptor);
                    check_outcome("INVEPT", &before, &l1, &cx, &o, false)?;
                    if let VmxOutcome::VmFailValid(e) = o {
                        prop_assert_eq!(e, VmInstructionError::InvalidInveptInvvpidOperand);
                    }
                    if o.cf_zf().is_some() {
                        prop_assert!(l1.caps().ept_vpid.invept(), "INVEPT without the capability");
                    }
                }
                Op::Invvpid(kind, descriptor, width) => {
                    let o = l1.invvpid(&cx, kind, descriptor, width);
                    check_outcome("INVVPID", &before, &l1, &cx, &o, false)?;
                    if let VmxOutcome::Succeed(_) = o {
                        prop_assert_eq!(descriptor as u64 >> 16, 0, "INVVPID: bits 63:16");
                    }
                }
            }
        }
    }
}

/// The VMCS02 inputs shared by the entry campaign: tigerlake, its virtual capabilities, a
/// VMCS01 at the checker's baseline.
struct EntryCase {
    real: VmxCapabilities,
    l1: L1VmxState,
    memory: Vec<u8>,
    vmcs01: SoftVmcs,
}

const VMXON: u64 = 0x1000;
const VMCS12: u64 = 0x4000;

/// L1's VMXON at [`VMXON`] and VMPTRLD of [`VMCS12`], both succeeding.
fn vmxon_and_vmptrld(l1: &mut L1VmxState, mem: &mut impl vmcs::nested::GuestMemory) {
    let cx = L1Context::long_mode_cpl0();
    let m = PointerOperand::Memory;
    assert_eq!(l1.vmxon(&cx, m(VMXON), mem), VmxOutcome::Succeed(()));
    assert_eq!(l1.vmptrld(&cx, m(VMCS12), mem), VmxOutcome::Succeed(()));
}

fn entry_case(dump: usize) -> EntryCase {
    let real = real_caps(dump);
    let caps = virtual_caps(&real, REVISION);
    let mut memory = vec![0u8; 0x40_0000];
    for region in [VMXON, VMCS12] {
        let at = region as usize;
        memory[at..at + 4].copy_from_slice(&REVISION.to_le_bytes());
    }
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut memory,
    };
    vmxon_and_vmptrld(&mut l1, &mut mem);
    check_common::baseline(l1.current_vmcs_mut().unwrap());
    let mut vmcs01 = SoftVmcs::new(&real);
    check_common::baseline(&mut vmcs01);
    EntryCase {
        real,
        l1,
        memory,
        vmcs01,
    }
}

/// A change of one VMCS12 field: a random value, or one bit of the current value flipped.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u64),
    Flip(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..fields::ALL.len(), any::<u64>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (0..fields::ALL.len(), 0..64u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        // Small counts and addresses inside L1's memory for the MSR areas and bitmaps.
        (0..fields::ALL.len(), 0..0x40_0000u64).prop_map(|(i, v)| Mutation::Set(i, v)),
        (0..fields::ALL.len(), 0..600u64).prop_map(|(i, v)| Mutation::Set(i, v)),
    ]
}

fn apply(v: &mut SoftVmcs, m: &Mutation) {
    let (i, value) = match *m {
        Mutation::Set(i, value) => (i, value),
        Mutation::Flip(i, bit) => {
            let e = fields::ALL[i].encoding;
            (i, v.read_raw(e).unwrap_or(0) ^ (1 << bit))
        }
    };
    let _ = v.write_raw(fields::ALL[i].encoding, value);
}

static ENTRY_OUTCOMES: [std::sync::atomic::AtomicU64; 5] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// The entry campaign's case: dump, VMCS12 mutations, memory pokes, exit values and edits.
type EntryInputs = (
    usize,
    Vec<Mutation>,
    Vec<(usize, u64)>,
    Vec<u64>,
    Vec<Mutation>,
    Option<u8>,
);

fn entry_inputs() -> impl Strategy<Value = EntryInputs> {
    (
        prop_oneof![Just(0usize), Just(1usize)],
        proptest::collection::vec(mutation(), 0..6),
        proptest::collection::vec((0..0x40_0000usize, any::<u64>()), 0..24),
        proptest::collection::vec(any::<u64>(), 1..16),
        proptest::collection::vec(mutation(), 0..8),
        proptest::option::of(any::<u8>()),
    )
}

/// L0's model of the shared MSRs, refusing (WRMSR and RDMSR both) every MSR whose low byte is
/// `refuse`: the MSR-load and MSR-store areas then fail part-way.
struct Picky {
    inner: Msrs,
    refuse: Option<u8>,
}

impl vmcs::nested::GuestMsrs for Picky {
    fn read(&mut self, msr: u32) -> Option<u64> {
        if self.refuse == Some(msr as u8) {
            return None;
        }
        self.inner.read(msr).or(Some(0))
    }
    fn write(&mut self, msr: u32, value: u64) -> bool {
        self.refuse != Some(msr as u8) && self.inner.write(msr, value)
    }
}

/// A VMCS12 at the checker's baseline with a few fields changed, L1's memory with random
/// bytes written at random places: L1's VMLAUNCH, then VMCS02 built and an arbitrary exit of L2
/// reflected, or the exit after a failed entry.
#[test]
fn mutated_vmcs12_entries_and_exits() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(2048),
        ..ProptestConfig::default()
    });
    runner
        .run(
            &entry_inputs(),
            |(dump, mutations, pokes, exit_values, exit_edits, refuse)| {
                entry_case_run(dump, &mutations, &pokes, &exit_values, &exit_edits, refuse)
            },
        )
        .unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    let [instr, failed, entered, resumed, aborted] =
        ENTRY_OUTCOMES.each_ref().map(|a| a.load(Relaxed));
    eprintln!(
        "entry campaign: {instr} instruction outcomes, {failed} failed entries, {entered} entries, \
         {resumed} resumed L1, {aborted} VMX aborts"
    );
    assert!(failed > 0 && entered > 0 && resumed > 0 && instr > 0);
}

fn entry_case_run(
    dump: usize,
    mutations: &[Mutation],
    pokes: &[(usize, u64)],
    exit_values: &[u64],
    exit_edits: &[Mutation],
    refuse: Option<u8>,
) -> Result<(), TestCaseError> {
    use std::sync::atomic::Ordering::Relaxed;
    let EntryCase {
        real,
        mut l1,
        mut memory,
        mut vmcs01,
    } = entry_case(dump);
    for m in mutations {
        apply(l1.current_vmcs_mut().unwrap(), m);
    }
    for &(at, value) in pokes {
        let at = at.min(memory.len() - 8);
        memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    let cx = L1Context::long_mode_cpl0();
    let mut msrs = Picky {
        inner: Msrs::default(),
        refuse,
    };
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut memory,
    };
    let mut cpu = CpuFacts::new(39);
    cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));
    let mut sink = |_: &vmcs::check::Violation| {};
    let entry = l1.enter_l2(
        &cx,
        EntryInstruction::Vmlaunch,
        cpu,
        &mut mem,
        &mut sink,
        &mut msrs,
    );
    let entry = entry.map_err(|e| TestCaseError::fail(format!("enter_l2: {e:?}")))?;
    let reflected = match entry {
        L2Entry::Instruction(o) => {
            ENTRY_OUTCOMES[0].fetch_add(1, Relaxed);
            if let VmxOutcome::VmFailValid(e) = o {
                prop_assert_eq!(instruction_error(&l1), Some(u64::from(e.number())));
            }
            prop_assert!(o.cf_zf().is_some(), "VMLAUNCH faulted at CPL 0: {:?}", o);
            return Ok(());
        }
        L2Entry::EntryFailure { exit_reason, .. } => {
            ENTRY_OUTCOMES[1].fetch_add(1, Relaxed);
            prop_assert!(exit_reason & 0x8000_0000 != 0);
            prop_assert_eq!(l1.launch_state(), Some(LaunchState::Clear));
            l1.exit_after_failed_entry(&mut vmcs01, &mut mem, &mut msrs)
        }
        L2Entry::Enter => {
            ENTRY_OUTCOMES[2].fetch_add(1, Relaxed);
            let mut vmcs02 = SoftVmcs::new(&real);
            let built = match build_vmcs02(
                l1.current_vmcs().unwrap(),
                &vmcs01,
                &l0_part(),
                &real,
                &mut vmcs02,
            ) {
                Ok(built) => built,
                // A typed refusal (controls VMCS02 cannot carry) ends the case.
                Err(_) => return Ok(()),
            };
            // The bitmaps merged from L1's memory contain L0's.
            let mut l0_msr = MsrBitmap::default();
            l0_msr.fill(false);
            let mut msr_out = MsrBitmap::default();
            merge_msr_bitmap(l1.current_vmcs().unwrap(), &mut mem, &l0_msr, &mut msr_out)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let mut io_out = IoBitmaps::default();
            merge_io_bitmaps(
                l1.current_vmcs().unwrap(),
                &mut mem,
                &IoBitmaps::default(),
                &mut io_out,
            )
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            // The processor's exit: arbitrary exit information and guest state.
            let exit = random_vmcs(&real, exit_values);
            for (f, v) in exit.iter() {
                if f.field_type() == vmcs::FieldType::ExitInformation
                    || f.field_type() == vmcs::FieldType::GuestState
                {
                    let _ = vmcs02.store(f.encoding, v);
                }
            }
            for m in exit_edits {
                apply(&mut vmcs02, m);
            }
            let r = l1.reflect_exit(&vmcs02, &vmcs02, &built, &mut vmcs01, &mut mem, &mut msrs);
            if let Ok(Reflected::Resume) = r {
                let v12 = l1.current_vmcs().unwrap();
                prop_assert_eq!(
                    v12.read_raw(fields::EXIT_REASON.encoding()),
                    vmcs02.read_raw(fields::EXIT_REASON.encoding())
                );
                prop_assert_eq!(
                    v12.read_raw(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding())
                        .unwrap()
                        >> 31,
                    0,
                    "the valid bit of entry interruption information survives an exit"
                );
            }
            r
        }
    };
    let reflected = reflected.map_err(|e| TestCaseError::fail(format!("reflect: {e:?}")))?;
    let v12 = l1.current_vmcs().unwrap();
    match reflected {
        Reflected::Resume => {
            ENTRY_OUTCOMES[3].fetch_add(1, Relaxed);
            let host64 = v12
                .read_raw(fields::PRIMARY_VM_EXIT_CONTROLS.encoding())
                .unwrap()
                & (1 << 9)
                != 0;
            let rip = v12.read_raw(fields::HOST_RIP.encoding()).unwrap();
            let rip = if host64 { rip } else { rip & 0xffff_ffff };
            prop_assert_eq!(vmcs01.read_raw(fields::GUEST_RIP.encoding()), Ok(rip));
            prop_assert_eq!(vmcs01.read_raw(fields::GUEST_RFLAGS.encoding()), Ok(2));
            prop_assert_eq!(vmcs01.read_raw(fields::GUEST_DR7.encoding()), Ok(0x400));
        }
        Reflected::Abort(abort) => {
            ENTRY_OUTCOMES[4].fetch_add(1, Relaxed);
            let at = VMCS12 as usize + 4;
            prop_assert_eq!(
                u32::from_le_bytes(memory[at..at + 4].try_into().unwrap()),
                abort as u32
            );
        }
    }
    Ok(())
}

type Mapper = EptMapper<OffsetPhysToVirt, HeapFrameAllocator>;

fn mapper(caps: vmx_caps::EptVpidCap) -> Mapper {
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    EptMapper::new(EptConfig::new(caps, 48), p2v, HeapFrameAllocator::new()).unwrap()
}

/// An EPT12 entry: random, or one that points into the 64 KiB of L1's memory with random
/// low bits.
fn ept_entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0..16u64, 0..0x1000u64).prop_map(|(page, low)| page << 12 | low),
        (0..16u64, 0..8u64, 0..8u64).prop_map(|(page, rwx, mt)| page << 12 | mt << 3 | rwx),
        Just(0u64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    /// EPT12 tables of random entries in L1's memory (64 KiB, mapped RWX by EPT01 up to a
    /// random size), a random EPTP12, width, address and qualification.
    #[test]
    fn ept12_garbage_resolves_or_reflects(
        dump in 0..DUMPS.len(),
        entries in proptest::collection::vec(ept_entry(), 64),
        eptp in prop_oneof![any::<u64>(), (0..16u64, 0..0x80u64).prop_map(|(p, low)| p << 12 | low)],
        width in prop_oneof![Just(39u8), any::<u8>()],
        l2 in prop_oneof![any::<u64>(), 0..0x20_0000u64],
        qualification in any::<u64>(),
        ept01_pages in 0..=16u64,
        pml in proptest::option::of((any::<u64>(), any::<u16>())),
    ) {
        // L1's EPT capabilities from the dump; L0's (for EPT01 and EPT02) tigerlake's.
        let caps = real_caps(dump).ept_vpid;
        let l0_caps = real_caps(0).ept_vpid;
        let mut memory = vec![0u8; 0x10000];
        // Eight entries at the start of each of the 16 pages, at the indices a low address uses.
        for (i, e) in entries.iter().enumerate() {
            let page = i % 16;
            let slot = i / 16;
            let at = page * 0x1000 + slot * 8;
            memory[at..at + 8].copy_from_slice(&e.to_le_bytes());
        }
        let mut ept01 = mapper(l0_caps);
        if ept01_pages > 0 {
            let flush = ept01.map(
                GuestPhysAddr::new(0).unwrap(),
                HostPhysAddr::new(0x1_0000_0000).unwrap(),
                ept01_pages * 0x1000,
                LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack),
            ).unwrap();
            // SAFETY: no processor uses these tables.
            unsafe { ept01.assume_flushed(flush) };
        }
        let mut ept02 = mapper(l0_caps);
        let mut mem = FlatGuestMemory { base: 0, bytes: &mut memory };
        let mut pml = pml.map(|(address, index)| Pml12 { address, index });
        let index_before = pml.map(|p| p.index);
        let r = resolve_ept_violation(eptp, caps, width, l2, qualification, &mut mem, &ept01, &mut ept02, pml.as_mut());
        // The index only counts down by one, from a valid index, when a page is mapped.
        if let Some(p) = pml && Some(p.index) != index_before {
            let before = index_before.unwrap_or(0);
            prop_assert!(before < 512 && p.index == before.wrapping_sub(1));
            let went_on = matches!(
                r,
                Ok(Ept02Resolution::Mapped { .. } | Ept02Resolution::L1Access { .. })
            );
            prop_assert!(went_on, "logged, then {:?}", r);
        }
        let access = Access::from_exit_qualification(qualification);
        match r {
            Ok(Ept02Resolution::Mapped { flush, l1_physical, host_physical, permissions }) => {
                // SAFETY: no processor uses EPT02.
                unsafe { ept02.assume_flushed(flush) };
                prop_assert!(l1_physical < ept01_pages * 0x1000);
                prop_assert_eq!(host_physical, 0x1_0000_0000 + (l1_physical & !0xfff) + (l2 & 0xfff));
                let t = ept02.translate(GuestPhysAddr::new_truncate(l2)).unwrap();
                prop_assert_eq!(t.hpa.as_u64(), host_physical);
                prop_assert_eq!(t.permissions(), permissions);
                for (a, p) in [
                    (Access::DATA_READ, Permissions::READ),
                    (Access::DATA_WRITE, Permissions::WRITE),
                    (Access::INSTRUCTION_FETCH, Permissions::EXECUTE),
                ] {
                    if access.contains(a) {
                        prop_assert!(permissions.contains(p), "{:?} lacks {:?}", permissions, p);
                    }
                }
            }
            Ok(Ept02Resolution::Reflect(exit)) => {
                prop_assert_eq!(exit.guest_physical, l2);
                match exit.reason {
                    48 => prop_assert_eq!(exit.qualification & 7, u64::from(access.bits())),
                    49 => prop_assert_eq!(exit.qualification, 0),
                    other => prop_assert!(false, "exit reason {}", other),
                }
            }
            Ok(Ept02Resolution::L1Access { l1_physical }) => {
                prop_assert!(l1_physical >= ept01_pages * 0x1000, "EPT01 maps {:#x}", l1_physical);
            }
            Ok(Ept02Resolution::PmlFull(exit)) => {
                prop_assert!(index_before.is_some_and(|i| i >= 512));
                prop_assert_eq!(exit.reason, 62);
                prop_assert_eq!(exit.qualification, qualification & 1 << 12);
            }
            Err(e) => prop_assert!(false, "map error {:?}", e),
        }
    }

    /// VMCS shadowing with random field lists, capabilities and values: the bitmaps pass only
    /// listed fields, and the synchronisation in either direction copies what they pass.
    #[test]
    fn shadow_sync_with_random_fields(
        dump in 0..DUMPS.len(),
        shadowed in proptest::collection::vec(
            prop_oneof![
                (0..SHADOWED_FIELDS.len()).prop_map(|i| SHADOWED_FIELDS[i]),
                (0..fields::ALL.len()).prop_map(|i| fields::ALL[i].encoding),
                any::<u32>(),
            ],
            0..32,
        ),
        values in proptest::collection::vec(any::<u64>(), 1..8),
    ) {
        let real = real_caps(dump);
        let l1caps = virtual_caps(&real, REVISION);
        let mut vmread = ShadowBitmap::default();
        let mut vmwrite = ShadowBitmap::default();
        shadow_bitmaps(&shadowed, &l1caps, &real, &mut vmread, &mut vmwrite);
        for bitmap in [&vmread, &vmwrite] {
            for i in 0..0x8000u64 {
                if !bitmap.exits_raw(i) {
                    prop_assert!(shadowed.iter().any(|&e| u64::from(e) == i || u64::from(e) + 1 == i));
                }
            }
        }
        let vmcs12 = random_vmcs(&l1caps, &values);
        let mut shadow = SoftVmcs::new(&real);
        sync_to_shadow(&vmcs12, &mut shadow, &shadowed, &vmread)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let mut back = SoftVmcs::new(&l1caps);
        sync_from_shadow(&shadow, &mut back, &shadowed, &vmwrite)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        for &e in &shadowed {
            if !vmread.exits_raw(u64::from(e)) && !vmwrite.exits_raw(u64::from(e)) {
                prop_assert_eq!(back.read_raw(e), vmcs12.read_raw(e), "field {:#x}", e);
            }
        }
    }
}

/// L1's memory in two pieces: the low 64 KiB and the last 64 KiB of the 64-bit address space.
struct LowAndTop {
    low: Vec<u8>,
    top: Vec<u8>,
}

impl LowAndTop {
    const TOP: u64 = u64::MAX - 0xffff;

    fn piece(&mut self, address: u64, len: usize) -> Option<&mut [u8]> {
        let (bytes, offset) = if address >= Self::TOP {
            (&mut self.top, address - Self::TOP)
        } else {
            (&mut self.low, address)
        };
        let start = usize::try_from(offset).ok()?;
        bytes.get_mut(start..start.checked_add(len)?)
    }
}

impl vmcs::check::PhysMemory for LowAndTop {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), vmcs::check::MemoryError> {
        let len = buf.len();
        let piece = self
            .piece(address, len)
            .ok_or(vmcs::check::MemoryError::OutOfRange { address, len })?;
        buf.copy_from_slice(piece);
        Ok(())
    }
}

impl vmcs::nested::GuestMemory for LowAndTop {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), vmcs::check::MemoryError> {
        let len = bytes.len();
        self.piece(address, len)
            .ok_or(vmcs::check::MemoryError::OutOfRange { address, len })?
            .copy_from_slice(bytes);
        Ok(())
    }
}

/// Regression: a VM-exit MSR-store area whose last entry's head is the last 8 bytes of the
/// address space (readable memory there) overflowed the address of the entry's data in
/// `save_exit`; the data's address now wraps as the entries' addresses do (such an area never
/// passes the VM-entry checks, which keep it within the physical-address width).
#[test]
fn msr_store_entry_at_the_top_of_the_address_space_wraps() {
    let real = real_caps(0);
    let caps = virtual_caps(&real, REVISION);
    let mut mem = LowAndTop {
        low: vec![0; 0x10000],
        top: vec![0; 0x10000],
    };
    for region in [VMXON, VMCS12] {
        let at = region as usize;
        mem.low[at..at + 4].copy_from_slice(&REVISION.to_le_bytes());
    }
    // The head of the only entry: MSR 0x10 (IA32_TSC), at the very end of memory.
    mem.top[0xfff8..].copy_from_slice(&0x10u64.to_le_bytes());
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    vmxon_and_vmptrld(&mut l1, &mut mem);
    let v12 = l1.current_vmcs_mut().unwrap();
    check_common::baseline(v12);
    v12.write_raw(fields::VM_EXIT_MSR_STORE_COUNT.encoding(), 1)
        .unwrap();
    v12.write_raw(fields::VM_EXIT_MSR_STORE_ADDRESS.encoding(), u64::MAX - 7)
        .unwrap();
    let mut vmcs02 = SoftVmcs::new(&real);
    check_common::baseline(&mut vmcs02);
    let mut vmcs01 = vmcs02.clone();
    let built = vmcs::nested::Vmcs02 {
        controls: vmx_caps::ControlSet::EMPTY,
        timer_is_l1s: false,
        timer_start: 0,
        timer_l1: 0,
        cr0_l0_only: 0,
        cr4_l0_only: 0,
    };
    let mut msrs = Msrs::default();
    msrs.0.insert(0x10, 0x1234);
    let r = l1.reflect_exit(&vmcs02, &vmcs02, &built, &mut vmcs01, &mut mem, &mut msrs);
    assert_eq!(r, Ok(Reflected::Resume));
    assert_eq!(mem.low[..8], 0x1234u64.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    /// VMCS12 lives in L1's memory: what L1 VMWRITEs survives VMCLEAR (written back with launch
    /// state clear) and a VMPTRLD of another VMCS, and reads back after VMPTRLD of the region;
    /// the region's bytes L1 sees hold the launch state "clear" (SDM 31.3 "VMCLEAR").
    #[test]
    fn vmcs12_survives_its_region(
        dump in 0..DUMPS.len(),
        writes in proptest::collection::vec((encoding(), any::<u64>()), 1..64),
    ) {
        let real = real_caps(dump);
        let caps = virtual_caps(&real, REVISION);
        let Ok(mut l1) = L1VmxState::new(&caps, 39) else { return Ok(()) };
        let mut memory = vec![0u8; 0x4000];
        for page in 0..4 {
            memory[page * 0x1000..page * 0x1000 + 4].copy_from_slice(&REVISION.to_le_bytes());
        }
        let cx = L1Context::long_mode_cpl0();
        let mut mem = FlatGuestMemory { base: 0, bytes: &mut memory };
        let m = PointerOperand::Memory;
        prop_assert_eq!(l1.vmxon(&cx, m(0), &mut mem), VmxOutcome::Succeed(()));
        prop_assert_eq!(l1.vmptrld(&cx, m(0x1000), &mut mem), VmxOutcome::Succeed(()));
        let mut expected = std::collections::HashMap::new();
        for &(e, v) in &writes {
            if l1.vmwrite(&cx, e, v) == VmxOutcome::Succeed(()) {
                // The full field holds the value; a high access sets its bits 63:32.
                let e32 = e as u32;
                let full = e32 & !1;
                let now = match l1.vmread(&cx, u64::from(full)) {
                    VmxOutcome::Succeed(now) => now,
                    other => return Err(TestCaseError::fail(format!("{other:?}"))),
                };
                expected.insert(full, now);
                if e32 & 1 == 1 {
                    prop_assert_eq!(now >> 32, v & 0xffff_ffff);
                }
            }
        }
        // Later failures change the VM-instruction error: the values as VMCLEAR finds them.
        for (&e, v) in expected.iter_mut() {
            if let VmxOutcome::Succeed(now) = l1.vmread(&cx, u64::from(e)) {
                *v = now;
            }
        }
        prop_assert_eq!(l1.vmclear(&cx, m(0x1000), &mut mem), VmxOutcome::Succeed(()));
        prop_assert_eq!(l1.current_pointer(), None);
        prop_assert_eq!(l1.vmptrld(&cx, m(0x2000), &mut mem), VmxOutcome::Succeed(()));
        prop_assert_eq!(l1.vmptrld(&cx, m(0x1000), &mut mem), VmxOutcome::Succeed(()));
        prop_assert_eq!(l1.launch_state(), Some(LaunchState::Clear));
        for (&e, &v) in &expected {
            prop_assert_eq!(l1.vmread(&cx, u64::from(e)), VmxOutcome::Succeed(v), "field {:#x}", e);
        }
        prop_assert_eq!(&memory[0x1008..0x100c], &[0u8; 4][..]);
    }
}
