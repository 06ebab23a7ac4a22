//! Negotiation: dependencies, conflicts, activation, and properties over arbitrary capabilities.

use proptest::prelude::*;
use vmx_caps::{
    ControlBit, ControlGroup, ControlRequest, ControlSet, DEPENDENCIES, ExitControls, MsrSnapshot,
    NegotiationError, PinBasedControls, PrimaryControls, SecondaryControls, VmxCapabilities, msr,
};

fn bit<F: vmx_caps::Controls>(flag: F) -> ControlBit {
    ControlBit::of(flag).expect("a single flag")
}

fn skylake() -> VmxCapabilities {
    let text = include_str!("../testdata/corei7_skylake_x.msr");
    VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap()
}

#[test]
fn unrestricted_guest_requires_ept() {
    let err = skylake()
        .negotiate(&ControlRequest::new().require(SecondaryControls::UNRESTRICTED_GUEST))
        .unwrap_err();
    assert_eq!(
        err,
        NegotiationError::MissingDependency {
            control: bit(SecondaryControls::UNRESTRICTED_GUEST),
            requires: bit(SecondaryControls::ENABLE_EPT),
            required: true,
        }
    );
    assert_eq!(
        err.to_string(),
        "\"unrestricted guest\" (secondary processor-based VM-execution controls bit 7) requires \
         \"enable EPT\" (secondary processor-based VM-execution controls bit 1), which is not required"
    );
    // Required UG with only optional EPT is not enough either.
    let err = skylake()
        .negotiate(
            &ControlRequest::new()
                .require(SecondaryControls::UNRESTRICTED_GUEST)
                .prefer(SecondaryControls::ENABLE_EPT),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        NegotiationError::MissingDependency { required: true, .. }
    ));
}

#[test]
fn virtual_nmis_and_vid_dependencies() {
    let c = skylake();
    let err = c
        .negotiate(&ControlRequest::new().prefer(PinBasedControls::VIRTUAL_NMIS))
        .unwrap_err();
    assert!(matches!(
        err,
        NegotiationError::MissingDependency { requires, required: false, .. }
            if requires == bit(PinBasedControls::NMI_EXITING)
    ));
    let err = c
        .negotiate(
            &ControlRequest::new()
                .prefer(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
                .prefer(PrimaryControls::USE_TPR_SHADOW),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        NegotiationError::MissingDependency { requires, .. }
            if requires == bit(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
    ));
}

#[test]
fn dropped_dependency_drops_the_dependent() {
    // Skylake-X under Bochs has no posted interrupts: asking for them optionally keeps the rest
    // of the APIC virtualization and drops only them.
    let n = skylake()
        .negotiate(
            &ControlRequest::new()
                .prefer(PinBasedControls::PROCESS_POSTED_INTERRUPTS)
                .prefer(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
                .prefer(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
                .prefer(PrimaryControls::USE_TPR_SHADOW)
                .prefer(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT),
        )
        .unwrap();
    assert_eq!(n.dropped.pin, PinBasedControls::PROCESS_POSTED_INTERRUPTS);
    assert!(
        n.value
            .proc2
            .contains(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
    );

    // Take away virtual-interrupt delivery from the processor: it is dropped, and so is nothing
    // else, but a processor without "use TPR shadow" drops VID through the chain.
    let mut c = skylake();
    c.proc.allowed1.remove(PrimaryControls::USE_TPR_SHADOW);
    let n = c
        .negotiate(
            &ControlRequest::new()
                .prefer(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
                .prefer(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
                .prefer(PrimaryControls::USE_TPR_SHADOW)
                .require(SecondaryControls::ENABLE_EPT),
        )
        .unwrap();
    assert_eq!(
        n.dropped.proc2,
        SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY
    );
    assert_eq!(n.dropped.proc, PrimaryControls::USE_TPR_SHADOW);
    assert!(n.value.proc2.contains(SecondaryControls::ENABLE_EPT));
}

#[test]
fn conflicts() {
    let c = skylake();
    let both =
        SecondaryControls::VIRTUALIZE_APIC_ACCESSES | SecondaryControls::VIRTUALIZE_X2APIC_MODE;
    let err = c
        .negotiate(
            &ControlRequest::new()
                .require(both)
                .require(PrimaryControls::USE_TPR_SHADOW),
        )
        .unwrap_err();
    assert!(matches!(err, NegotiationError::Conflict { .. }));
    let n = c
        .negotiate(
            &ControlRequest::new()
                .prefer(both)
                .prefer(PrimaryControls::USE_TPR_SHADOW),
        )
        .unwrap();
    assert!(
        n.value
            .proc2
            .contains(SecondaryControls::VIRTUALIZE_APIC_ACCESSES)
    );
    assert_eq!(n.dropped.proc2, SecondaryControls::VIRTUALIZE_X2APIC_MODE);
}

#[test]
fn activation_follows_the_activated_field() {
    let c = skylake();
    // Nothing secondary requested: "activate secondary controls" stays 0.
    let n = c
        .negotiate(&ControlRequest::new().require(PrimaryControls::HLT_EXITING))
        .unwrap();
    assert!(
        !n.value
            .proc
            .contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    );
    // Only optional secondary controls, none allowed: activation is not left on.
    let n = c
        .negotiate(&ControlRequest::new().prefer(SecondaryControls::ENABLE_PCONFIG))
        .unwrap();
    assert!(
        !n.value
            .proc
            .contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    );
    assert_eq!(n.dropped.proc2, SecondaryControls::ENABLE_PCONFIG);
    // Secondary exit controls do not exist on this model: a required one is unsupported, and
    // so is the activating control it implies.
    let err = c
        .negotiate(&ControlRequest::new().require(vmx_caps::SecondaryExitControls::LOAD_FRED))
        .unwrap_err();
    let NegotiationError::Unsupported(u) = err else {
        panic!("{err:?}")
    };
    let bits: Vec<_> = u.iter().collect();
    assert_eq!(
        bits,
        [
            bit(ExitControls::ACTIVATE_SECONDARY_CONTROLS),
            bit(vmx_caps::SecondaryExitControls::LOAD_FRED),
        ]
    );
}

/// Capabilities from arbitrary values of every capability MSR.
fn arb_caps() -> impl Strategy<Value = VmxCapabilities> {
    proptest::collection::vec(any::<u64>(), msr::ALL.len()).prop_map(|values| {
        let mut snap = MsrSnapshot::new();
        for ((m, _), v) in msr::ALL.iter().zip(values) {
            snap.insert(*m, v).unwrap();
        }
        VmxCapabilities::read(&mut snap).unwrap()
    })
}

/// Capabilities from arbitrary values, with every allowed-0 bit also allowed-1 (as on real
/// processors), so that negotiation can succeed.
fn arb_consistent_caps() -> impl Strategy<Value = VmxCapabilities> {
    proptest::collection::vec(any::<u64>(), msr::ALL.len()).prop_map(|values| {
        let mut snap = MsrSnapshot::new();
        for ((m, _), mut v) in msr::ALL.iter().zip(values) {
            let split = matches!(
                *m,
                msr::IA32_VMX_PINBASED_CTLS..=msr::IA32_VMX_ENTRY_CTLS
                    | msr::IA32_VMX_PROCBASED_CTLS2
                    | msr::IA32_VMX_TRUE_PINBASED_CTLS..=msr::IA32_VMX_TRUE_ENTRY_CTLS
            );
            if split {
                // Few forced bits, like real processors, so that activation can be 0.
                v &= 0xffff_ffff_0f0f_0f0f;
                v |= (v & 0xffff_ffff) << 32;
            }
            snap.insert(*m, v).unwrap();
        }
        VmxCapabilities::read(&mut snap).unwrap()
    })
}

/// A control set from raw per-group values.
fn arb_set() -> impl Strategy<Value = ControlSet> {
    proptest::collection::vec(any::<u64>(), 8).prop_map(|raw| {
        let mut s = ControlSet::EMPTY;
        for (g, r) in ControlGroup::ALL.into_iter().zip(raw) {
            s.set(g, r);
        }
        s
    })
}

/// Whether `group`'s field is in use in `value` (its activation chain is 1).
fn active(value: &ControlSet, group: ControlGroup) -> bool {
    match group.activated_by() {
        None => true,
        Some(act) => value.contains(act) && active(value, act.group),
    }
}

proptest! {
    #[test]
    fn any_msr_values_decode_and_report(caps in arb_caps()) {
        let report = caps.to_string();
        // The report names every bit of every field, with its state.
        for group in ControlGroup::ALL {
            for &(bit, name) in group.names() {
                let state = caps.control_state(group, u32::from(bit)).as_str();
                let line = format!("\n    {name:<48}{state}\n");
                prop_assert!(report.contains(&line), "{} {}", group, line);
            }
        }
        for &(_, name) in vmx_caps::EptVpidCap::NAMES {
            prop_assert!(report.contains(name));
        }
    }

    #[test]
    fn negotiation_respects_allowed_settings(
        caps in prop_oneof![1 => arb_caps(), 9 => arb_consistent_caps()],
        req_mask in arb_set(),
        optional in arb_set(),
        keep in any::<bool>(),
    ) {
        // Make the required set mostly satisfiable: a random part of allowed-1.
        let mut required = ControlSet::EMPTY;
        for g in ControlGroup::ALL {
            required.set(g, req_mask.get(g) & caps.allowed(g).1 & 0x1111_1111_1111_1111);
        }
        let mut request = ControlRequest { required, optional, ..ControlRequest::new() };
        if keep {
            request = request.with_default1(vmx_caps::Default1Policy::Keep);
        }
        match caps.negotiate(&request) {
            Ok(n) => {
                for g in ControlGroup::ALL {
                    let (a0, a1) = caps.allowed(g);
                    let v = n.value.get(g);
                    if active(&n.value, g) {
                        prop_assert_eq!(v & a0, a0, "{} violates allowed-0", g);
                    } else {
                        prop_assert_eq!(v, 0, "{} used while inactive", g);
                    }
                    prop_assert_eq!(v & !a1, 0, "{} violates allowed-1", g);
                    prop_assert_eq!(v & n.dropped.get(g), 0);
                    prop_assert_eq!(required.get(g) & !v, 0, "{} lost a required bit", g);
                }
                for &(control, requires) in DEPENDENCIES {
                    if n.value.contains(control) && !caps_forces(&caps, control) {
                        prop_assert!(n.value.contains(requires), "{} without {}", control, requires);
                    }
                }
            }
            Err(NegotiationError::Unsupported(u)) => {
                prop_assert!(u.iter().next().is_some());
                for bit in u.iter() {
                    prop_assert!(!may_be_one(&caps, bit), "{} is allowed", bit);
                }
            }
            Err(_) => {}
        }
    }

    #[test]
    fn snapshot_round_trips(pairs in proptest::collection::btree_map(any::<u32>(), any::<u64>(), 0..32)) {
        let mut snap = MsrSnapshot::new();
        for (&m, &v) in &pairs {
            snap.insert(m, v).unwrap();
        }
        let text = snap.to_string();
        prop_assert_eq!(MsrSnapshot::parse(&text).unwrap(), snap.clone());
        prop_assert_eq!(snap.iter().collect::<Vec<_>>(), pairs.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn snapshot_parse_never_panics(text in "[0-9a-fxX# \t\n-]{0,200}") {
        let _ = MsrSnapshot::parse(&text);
    }

    #[test]
    fn snapshot_error_names_the_line(good in 0usize..10, bad in "[g-z]{1,4}") {
        let mut text = String::new();
        for i in 0..good {
            text.push_str(&format!("{:#x} {:#x}\n# comment\n\n", 0x480 + i, i));
        }
        text.push_str(&format!("0x3a {bad}\n"));
        let err = MsrSnapshot::parse(&text).unwrap_err();
        prop_assert_eq!(err.line, good * 3 + 1);
        prop_assert_eq!(err.kind, vmx_caps::SnapshotErrorKind::InvalidValue);
    }
}

#[test]
fn negotiation_property_reaches_success() {
    // Run the property's generator directly and make sure successes are common enough for the
    // property to mean something.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut ok = 0;
    for _ in 0..200 {
        let caps = arb_consistent_caps()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut required = ControlSet::EMPTY;
        for g in ControlGroup::ALL {
            required.set(g, caps.allowed(g).1 & 0x0101_0101_0101_0101);
        }
        let request = ControlRequest {
            required,
            ..ControlRequest::new()
        };
        if caps.negotiate(&request).is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 20, "only {ok} of 200 negotiations succeeded");
}

/// Whether `bit` may be 1: allowed-1, and so is every control of its activation chain.
fn may_be_one(caps: &VmxCapabilities, bit: ControlBit) -> bool {
    caps.allowed(bit.group).1 & bit.mask() != 0
        && bit
            .group
            .activated_by()
            .is_none_or(|act| may_be_one(caps, act))
}

fn caps_forces(caps: &VmxCapabilities, bit: ControlBit) -> bool {
    caps.allowed(bit.group).0 & bit.mask() != 0
}

#[test]
fn snapshot_errors() {
    use vmx_caps::SnapshotErrorKind as K;
    let cases = [
        ("0x480\n", 1, K::MissingValue),
        ("# c\n0x1_0 1\n", 2, K::InvalidMsr),
        ("0x100000000 1\n", 1, K::InvalidMsr),
        ("0x480 0x1ffffffffffffffff\n", 1, K::InvalidValue),
        ("0x480 1 2\n", 1, K::TrailingText),
        ("0x480 1\n0x480 2\n", 2, K::Duplicate { msr: 0x480 }),
    ];
    for (text, line, kind) in cases {
        let err = MsrSnapshot::parse(text).unwrap_err();
        assert_eq!((err.line, err.kind), (line, kind), "{text:?}");
    }
    let mut many = String::new();
    for i in 0..33 {
        many.push_str(&format!("{i:x} 0\n"));
    }
    assert_eq!(
        MsrSnapshot::parse(&many).unwrap_err(),
        vmx_caps::SnapshotError {
            line: 33,
            kind: K::TooMany
        }
    );
    assert_eq!(
        MsrSnapshot::parse("0x480 zz").unwrap_err().to_string(),
        "line 1: the MSR value is not a 64-bit hexadecimal number"
    );
}
