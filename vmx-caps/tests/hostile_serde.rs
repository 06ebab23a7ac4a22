//! Hostile JSON for the serde forms of the crate's types (feature `serde`), through the
//! campaign shared with the other crates (`vmcs-fields/tests/serde_campaign`): an error or a
//! value that keeps the type's invariants and round-trips again; never a panic.
#![cfg(feature = "serde")]

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;
#[path = "../../vmcs-fields/tests/serde_campaign/mod.rs"]
mod serde_campaign;

use hostile_cases::cases;
use proptest::prelude::*;
use serde_campaign::Campaign;
use vmx_caps::msr::MsrSet;
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{
    ControlBit, ControlGroup, ControlSet, CrUse, MsrSnapshot, PartialCapabilities,
    SecondaryControls, VmxCapabilities,
};

fn tigerlake() -> VmxCapabilities {
    let mut msrs = MsrSnapshot::parse(include_str!("../testdata/tigerlake.msr")).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap()
}

fn hyperv() -> PartialCapabilities {
    let mut msrs = MsrSnapshot::parse(include_str!(
        "../testdata/nested/hyperv_nested_raptorlake.msr"
    ))
    .unwrap();
    VmxCapabilities::read_partial(&mut msrs).unwrap()
}

/// A set's members and its emptiness agree: every bit names a capability MSR.
fn msr_set_consistent(set: &MsrSet) -> bool {
    set.is_empty() == set.iter().next().is_none()
}

/// Regression: an `MsrSet` deserialized any 32-bit number, so bits above the 21 capability
/// MSRs made a set that is not empty yet has no member.
#[test]
fn msr_sets_with_unknown_members_are_refused() {
    let high: Result<MsrSet, _> = serde_json::from_str("2147483648");
    assert!(high.is_err(), "{high:?}");
    let all: MsrSet = serde_json::from_str("2097151").unwrap();
    assert_eq!(all.iter().count(), vmx_caps::msr::ALL.len());
    assert!(msr_set_consistent(&all));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn hostile_json(c in Campaign::strategy()) {
        c.run(&[tigerlake()], |_| true)?;
        c.run(&[hyperv()], |p| msr_set_consistent(&p.missing))?;
        c.run(&[hyperv().missing, MsrSet::EMPTY], msr_set_consistent)?;
        c.run(&[ControlSet::from(SecondaryControls::ENABLE_EPT)], |_| true)?;
        c.run(&[ControlBit::new(ControlGroup::Exit, 9)], |_| true)?;
        c.run(&[ControlGroup::Tertiary], |_| true)?;
        c.run(&[VirtualPolicy::everything(0x11e5_7ed0)], |_| true)?;
        c.run(&[tigerlake().cr0_fixed_bits(CrUse::Vmx)], |_| true)?;
        c.run(&[tigerlake().feature_control], |_| true)?;
    }
}
