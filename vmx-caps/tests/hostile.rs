//! Hostile-input campaign for `vmx_caps`: capability MSRs of arbitrary values (each MSR of
//! `msr::ALL` random, missing, or a Bochs dump's value with bits flipped) decoded, then
//! virtualized under arbitrary policies (`VirtualPolicy::virtualize`). Besides the absence of
//! panics (debug build: overflow checks on), the virtual capabilities must be consistent by the
//! SDM's rules (Vol. 3D, Appendix A: allowed-0 within allowed-1, the TRUE MSRs' default1 class),
//! within the real ones (nothing the processor refuses, no EPT/VPID capability it lacks, no more
//! CR3 targets, no higher VMCS index), carry the policy's revision identifier and VMCS size, and
//! decode again to themselves; and an error must be the one the policy's own defect calls for.

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;

use hostile_cases::cases;
use proptest::prelude::*;
use vmx_caps::virt::{VirtualCapsError, VirtualPolicy};
use vmx_caps::{
    ControlGroup, ControlRequest, ControlSet, Default1Policy, DependencyPolicy, MsrSnapshot,
    MsrSource, VmxCapabilities, arch::Cr4, msr,
};

const DUMPS: [&str; 4] = [
    include_str!("../testdata/tigerlake.msr"),
    include_str!("../testdata/corei7_skylake_x.msr"),
    include_str!("../testdata/core2_penryn_t9600.msr"),
    include_str!("../testdata/nested/hyperv_nested_raptorlake.msr"),
];

/// How one capability MSR of the hostile dump is made.
#[derive(Debug, Clone, Copy)]
enum MsrValue {
    Missing,
    Random(u64),
    /// The dump's value with one bit flipped.
    Flipped(u8),
    Kept,
}

fn msr_value() -> impl Strategy<Value = MsrValue> {
    prop_oneof![
        1 => Just(MsrValue::Missing),
        2 => any::<u64>().prop_map(MsrValue::Random),
        3 => (0..64u8).prop_map(MsrValue::Flipped),
        4 => Just(MsrValue::Kept),
    ]
}

fn hostile_snapshot(dump: usize, values: &[MsrValue]) -> MsrSnapshot {
    let mut base = MsrSnapshot::parse(DUMPS[dump]).unwrap();
    let mut out = MsrSnapshot::new();
    for (&(address, _), value) in msr::ALL.iter().zip(values) {
        let original = base.read_msr(address).ok();
        let v = match (*value, original) {
            (MsrValue::Missing, _) => continue,
            (MsrValue::Random(v), _) => v,
            (MsrValue::Flipped(bit), Some(v)) => v ^ (1 << bit),
            (MsrValue::Kept, Some(v)) => v,
            (_, None) => continue,
        };
        out.insert(address, v).unwrap();
    }
    out
}

fn control_set() -> impl Strategy<Value = ControlSet> {
    proptest::collection::vec(any::<u64>(), 8).prop_map(|raw| {
        let mut set = ControlSet::EMPTY;
        for (group, bits) in ControlGroup::ALL.into_iter().zip(raw) {
            set.set(group, bits);
        }
        set
    })
}

fn policy() -> impl Strategy<Value = VirtualPolicy> {
    let everything = VirtualPolicy::everything(0x11e5_7ed0);
    (
        prop_oneof![3 => 0..0x8000_0000u32, 1 => any::<u32>()],
        prop_oneof![3 => Just(4096u32), 1 => any::<u32>(), 1 => 0..5000u32],
        any::<bool>(),
        prop_oneof![Just(everything.offer), control_set()],
        prop_oneof![3 => Just(ControlSet::EMPTY), 1 => control_set()],
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<bool>(),
        any::<u64>(),
        any::<u16>(),
    )
        .prop_map(
            |(
                revision_id,
                vmcs_size,
                true_controls,
                offer,
                require,
                ept_vpid,
                misc_flags,
                cr3_targets,
                no_error_code_check,
                cr4,
                vmcs_highest_index,
            )| VirtualPolicy {
                revision_id,
                vmcs_size,
                true_controls,
                offer,
                require,
                ept_vpid,
                misc_flags,
                cr3_targets,
                no_error_code_check,
                cr4_may_be_one: Cr4::from_bits_retain(cr4),
                vmcs_highest_index,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    #[test]
    fn hostile_capabilities_virtualize_consistently(
        dump in 0..DUMPS.len(),
        values in proptest::collection::vec(msr_value(), msr::ALL.len()),
        policy in policy(),
    ) {
        let mut snapshot = hostile_snapshot(dump, &values);
        // Decoding is total: a typed error or capabilities.
        let strict = VmxCapabilities::read(&mut snapshot.clone());
        let Ok(partial) = VmxCapabilities::read_partial(&mut snapshot) else {
            prop_assert!(strict.is_err(), "strict decode succeeded where partial failed");
            return Ok(());
        };
        if let Ok(strict) = strict {
            prop_assert_eq!(strict, partial.caps, "strict and partial decodes differ");
        }
        let real = partial.caps;
        // The report renders whatever the MSRs say.
        let _ = format!("{partial}");
        match policy.virtualize(&real) {
            Ok(v) => {
                let virt = v.caps;
                for group in ControlGroup::ALL {
                    let (r0, r1) = real.allowed(group);
                    let (v0, v1) = virt.allowed(group);
                    prop_assert_eq!(v0 & !v1, 0, "{:?}: allowed-0 outside allowed-1", group);
                    prop_assert_eq!(v1 & !(r1 | r0), 0, "{:?}: offers what the processor refuses", group);
                    let required = policy.require.get(group);
                    prop_assert_eq!(required & !r1, 0, "{:?}: required but refused, yet accepted", group);
                }
                prop_assert_eq!(virt.ept_vpid.0 & !real.ept_vpid.0, 0, "EPT/VPID capabilities beyond the real ones");
                prop_assert!(virt.misc.cr3_target_count() <= real.misc.cr3_target_count());
                prop_assert!(virt.misc.cr3_target_count() <= policy.cr3_targets);
                prop_assert!(virt.vmcs_enum.highest_index() <= real.vmcs_enum.highest_index());
                prop_assert_eq!(virt.basic.revision_id(), policy.revision_id);
                prop_assert_eq!(virt.basic.vmcs_region_size(), policy.vmcs_size);
                prop_assert!(!virt.basic.true_controls() || real.basic.true_controls());
                prop_assert_eq!(virt.cr4_fixed.fixed1 & !(real.cr4_fixed.fixed1 | real.cr4_fixed.fixed0), 0);
                prop_assert_eq!(virt.cr0_fixed, real.cr0_fixed);
                prop_assert!(virt.feature_control.vmxon_allowed_outside_smx());
                // The MSRs decode to the capabilities they are said to be.
                let again = VmxCapabilities::read(&mut v.msrs.clone());
                prop_assert_eq!(again, Ok(virt));
            }
            Err(VirtualCapsError::RevisionId(id)) => {
                prop_assert_eq!(id, policy.revision_id);
                prop_assert!(id >> 31 == 1);
            }
            Err(VirtualCapsError::VmcsSize(size)) => {
                prop_assert!(size == 0 || size > 4096);
                prop_assert!(policy.revision_id >> 31 == 0);
            }
            Err(VirtualCapsError::RequiredNotAllowed(bit)) => {
                let (_, r1) = real.allowed(bit.group);
                prop_assert!(policy.require.get(bit.group) & bit.mask() != 0);
                prop_assert!(r1 & policy.offer.get(bit.group) & bit.mask() == 0);
            }
            Err(other) => prop_assert!(false, "{:?} from a policy that is valid", other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    /// Negotiation over hostile capabilities with arbitrary requests and policies: a typed
    /// error, or controls the capabilities allow (no bit outside allowed-1, every allowed-0 bit
    /// of a field in use) that contain every required control.
    #[test]
    fn hostile_capabilities_negotiate_within_the_allowed_settings(
        dump in 0..DUMPS.len(),
        values in proptest::collection::vec(
            prop_oneof![1 => msr_value(), 3 => Just(MsrValue::Kept)], msr::ALL.len()),
        required in prop_oneof![4 => Just(ControlSet::EMPTY), 1 => control_set()],
        optional in control_set(),
        default1 in prop_oneof![Just(Default1Policy::Clear), Just(Default1Policy::Keep)],
        dependencies in prop_oneof![Just(DependencyPolicy::Reject), Just(DependencyPolicy::DropOptional)],
    ) {
        let Ok(partial) = VmxCapabilities::read_partial(&mut hostile_snapshot(dump, &values)) else {
            return Ok(());
        };
        let caps = partial.caps;
        let request = ControlRequest { required, optional, default1, dependencies };
        let Ok(n) = caps.negotiate(&request) else { return Ok(()) };
        for group in ControlGroup::ALL {
            let (a0, a1) = caps.allowed(group);
            let value = n.value.get(group);
            prop_assert_eq!(value & !a1, 0, "{:?}: {:#x} outside allowed-1 {:#x}", group, value, a1);
            if n.value.is_active(group) {
                prop_assert_eq!(a0 & !value, 0, "{:?}: allowed-0 {:#x} not in {:#x}", group, a0, value);
                prop_assert_eq!(required.get(group) & !value, 0, "{:?}: a required control is missing", group);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    /// The dump parser and the number syntax over arbitrary text: a located error, or a
    /// snapshot whose entries, written back one per line, parse to the same snapshot; a number
    /// printed in either radix parses to itself.
    #[test]
    fn dump_text_and_numbers(
        text in prop_oneof![
            ".{0,200}",
            "([0-9a-fA-Fx_+# \\-]{0,12}[ \t]{0,2}[0-9a-fA-FxX_]{0,20}[\r\n]{1,2}){0,12}",
        ],
        value in any::<u64>(),
    ) {
        if let Ok(snapshot) = MsrSnapshot::parse(&text) {
            let again: String = snapshot.iter().map(|(m, v)| format!("{m:x} {v:x}\n")).collect();
            let reparsed = MsrSnapshot::parse(&again).unwrap();
            prop_assert!(reparsed.iter().eq(snapshot.iter()));
        }
        use vmx_caps::number::{Radix, parse_u64};
        prop_assert_eq!(parse_u64(&value.to_string(), Radix::Decimal), Ok(value));
        prop_assert_eq!(parse_u64(&format!("{value:#x}"), Radix::Decimal), Ok(value));
        prop_assert_eq!(parse_u64(&format!("{value:x}"), Radix::Hex), Ok(value));
        let _ = parse_u64(&text, Radix::Hex);
    }
}
