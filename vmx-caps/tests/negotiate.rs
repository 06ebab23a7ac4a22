//! Negotiation: dependencies, conflicts, activation, and properties over arbitrary capabilities.

use proptest::prelude::*;
use vmx_caps::number::NumberError;
use vmx_caps::{
    CONFLICTS, ControlBit, ControlGroup, ControlRequest, ControlSet, DEPENDENCIES,
    DependencyPolicy, DropReason, DroppedControl, ExitControls, MsrSnapshot, NegotiationError,
    PinBasedControls, PrimaryControls, RequestProblem, SecondaryControls, VmxCapabilities, msr,
};

fn bit<F: vmx_caps::Controls>(flag: F) -> ControlBit {
    ControlBit::of(flag).expect("a single flag")
}

fn skylake() -> VmxCapabilities {
    let text = include_str!("../testdata/corei7_skylake_x.msr");
    VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap()
}

/// The request problems of a failed negotiation.
fn problems(err: &NegotiationError) -> Vec<RequestProblem> {
    err.problems.iter().collect()
}

#[test]
fn unrestricted_guest_requires_ept() {
    let err = skylake()
        .negotiate(&ControlRequest::new().require(SecondaryControls::UNRESTRICTED_GUEST))
        .unwrap_err();
    assert_eq!(
        problems(&err),
        [RequestProblem::MissingDependency {
            control: bit(SecondaryControls::UNRESTRICTED_GUEST),
            requires: bit(SecondaryControls::ENABLE_EPT),
            required: true,
        }]
    );
    assert!(err.unsupported.is_empty() && err.contradictory.is_empty());
    assert_eq!(
        err.to_string(),
        "inconsistent request: \"unrestricted guest\" (secondary processor-based VM-execution \
         controls bit 7) requires \"enable EPT\" (secondary processor-based VM-execution controls \
         bit 1), which is not required"
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
        problems(&err)[..],
        [RequestProblem::MissingDependency { required: true, .. }]
    ));
}

#[test]
fn virtual_nmis_and_vid_dependencies() {
    let c = skylake();
    let err = c
        .negotiate(&ControlRequest::new().prefer(PinBasedControls::VIRTUAL_NMIS))
        .unwrap_err();
    assert!(matches!(
        problems(&err)[..],
        [RequestProblem::MissingDependency { requires, required: false, .. }]
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
        problems(&err)[..],
        [RequestProblem::MissingDependency { requires, .. }]
            if requires == bit(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
    ));
}

#[test]
fn every_problem_at_once() {
    // Penryn: no EPT, no unrestricted guest, no preemption timer. The request also forgets
    // three dependencies (two required, one optional) and asks for two conflicting controls.
    let text = include_str!("../testdata/core2_penryn_t9600.msr");
    let c = VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
    let request = ControlRequest::new()
        .require(SecondaryControls::UNRESTRICTED_GUEST | SecondaryControls::ENABLE_PML)
        .require(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE)
        .prefer(PrimaryControls::NMI_WINDOW_EXITING)
        .require(
            SecondaryControls::VIRTUALIZE_APIC_ACCESSES | SecondaryControls::VIRTUALIZE_X2APIC_MODE,
        )
        .require(PrimaryControls::USE_TPR_SHADOW);
    let err = c.negotiate(&request).unwrap_err();
    let missing = |control, requires, required| RequestProblem::MissingDependency {
        control,
        requires,
        required,
    };
    assert_eq!(
        problems(&err),
        [
            missing(
                bit(SecondaryControls::UNRESTRICTED_GUEST),
                bit(SecondaryControls::ENABLE_EPT),
                true
            ),
            missing(
                bit(SecondaryControls::ENABLE_PML),
                bit(SecondaryControls::ENABLE_EPT),
                true
            ),
            missing(
                bit(PrimaryControls::NMI_WINDOW_EXITING),
                bit(PinBasedControls::VIRTUAL_NMIS),
                false
            ),
            missing(
                bit(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE),
                bit(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER),
                true
            ),
            RequestProblem::Conflict {
                first: bit(SecondaryControls::VIRTUALIZE_APIC_ACCESSES),
                second: bit(SecondaryControls::VIRTUALIZE_X2APIC_MODE),
            },
        ]
    );
    // And, in the same error, every required control Penryn lacks (its dump: secondary
    // controls only "virtualize APIC accesses" and "WBINVD exiting"; no timer save).
    let expected = ControlSet::from(
        SecondaryControls::UNRESTRICTED_GUEST
            | SecondaryControls::ENABLE_PML
            | SecondaryControls::VIRTUALIZE_X2APIC_MODE,
    ) | ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE;
    assert_eq!(err.unsupported, expected);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "required controls not supported by the processor: secondary processor-based \
             VM-execution controls: \"virtualize x2APIC mode\" (bit 4), \"unrestricted guest\" \
             (bit 7), \"enable PML\" (bit 17); primary VM-exit controls: \
             \"save VMX-preemption timer value\" (bit 22); inconsistent request: "
        ),
        "{text}"
    );
    assert_eq!(text.matches(" requires ").count(), 4, "{text}");
    assert!(text.ends_with("cannot both be 1"), "{text}");
}

#[test]
fn optional_controls_without_their_dependency_can_be_dropped() {
    let c = skylake();
    let request = ControlRequest::new()
        .require(SecondaryControls::ENABLE_EPT)
        .prefer(PinBasedControls::VIRTUAL_NMIS)
        .prefer(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY | SecondaryControls::ENABLE_PML)
        .prefer(PrimaryControls::USE_TPR_SHADOW)
        .prefer(PinBasedControls::PROCESS_POSTED_INTERRUPTS);
    // Rejected by default: three optional controls lack a requested dependency.
    let err = c.negotiate(&request).unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    assert!(problems(&err).iter().all(|p| matches!(
        p,
        RequestProblem::MissingDependency {
            required: false,
            ..
        }
    )));

    let n = c
        .negotiate(&request.with_dependencies(DependencyPolicy::DropOptional))
        .unwrap();
    // PML depends on EPT, which is required: kept. TPR shadow has no dependency: kept.
    assert!(n.value.proc2.contains(SecondaryControls::ENABLE_PML));
    assert!(n.value.proc.contains(PrimaryControls::USE_TPR_SHADOW));
    let drops: Vec<_> = n.drops().collect();
    let dependency = |control, requires| DroppedControl {
        control,
        reason: DropReason::Dependency {
            requires,
            requested: false,
        },
    };
    assert_eq!(
        drops,
        [
            dependency(
                bit(PinBasedControls::VIRTUAL_NMIS),
                bit(PinBasedControls::NMI_EXITING)
            ),
            // Posted interrupts lack both, and are not supported by Bochs either.
            DroppedControl {
                control: bit(PinBasedControls::PROCESS_POSTED_INTERRUPTS),
                reason: DropReason::Unsupported,
            },
            dependency(
                bit(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
                bit(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
            ),
        ]
    );
    assert_eq!(
        drops[0].to_string(),
        "\"virtual NMIs\" (pin-based VM-execution controls bit 5): requires \"NMI exiting\" \
         (pin-based VM-execution controls bit 3), which was not requested"
    );
    assert_eq!(
        n.dropped,
        ControlSet::from(
            PinBasedControls::VIRTUAL_NMIS | PinBasedControls::PROCESS_POSTED_INTERRUPTS
        ) | SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY
    );
    // A required control still needs its dependency required.
    let err = c
        .negotiate(
            &ControlRequest::new()
                .require(PinBasedControls::VIRTUAL_NMIS)
                .with_dependencies(DependencyPolicy::DropOptional),
        )
        .unwrap_err();
    assert_eq!(err.problems.len(), 1);
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
    assert!(matches!(
        problems(&err)[..],
        [RequestProblem::Conflict { .. }]
    ));
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
    assert_eq!(
        n.drops().collect::<Vec<_>>(),
        [DroppedControl {
            control: bit(SecondaryControls::VIRTUALIZE_X2APIC_MODE),
            reason: DropReason::Conflict {
                with: bit(SecondaryControls::VIRTUALIZE_APIC_ACCESSES)
            },
        }]
    );
}

#[test]
fn set_display_and_activation() {
    let set = ControlSet::from(
        PrimaryControls::HLT_EXITING | PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
    ) | SecondaryControls::ENABLE_EPT
        | vmx_caps::TertiaryControls::IPI_VIRTUALIZATION;
    assert_eq!(
        set.to_string(),
        "primary processor-based VM-execution controls: \"HLT exiting\" (bit 7), \
         \"activate secondary controls\" (bit 31); secondary processor-based VM-execution \
         controls: \"enable EPT\" (bit 1); tertiary processor-based VM-execution controls: \
         \"IPI virtualization\" (bit 4)"
    );
    // Tertiary controls without "activate tertiary controls" would have no effect.
    assert_eq!(
        set.inactive(),
        ControlSet::from(vmx_caps::TertiaryControls::IPI_VIRTUALIZATION)
    );
    assert_eq!(ControlSet::EMPTY.to_string(), "none");
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
    assert!(err.problems.is_empty());
    let bits: Vec<_> = err.unsupported.iter().collect();
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
        drop_optional in any::<bool>(),
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
        if drop_optional {
            request = request.with_dependencies(DependencyPolicy::DropOptional);
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
                // Every dropped control has exactly one reason, and the reason holds.
                prop_assert_eq!(n.drops().count(), n.dropped.iter().count());
                for d in n.drops() {
                    prop_assert!(n.dropped.contains(d.control) && !n.value.contains(d.control));
                    match d.reason {
                        DropReason::Unsupported => {
                            prop_assert!(!may_be_one(&caps, d.control), "{}", d)
                        }
                        DropReason::Dependency { requires, requested } => {
                            prop_assert!(!n.value.contains(requires), "{}", d);
                            prop_assert!(
                                DEPENDENCIES.contains(&(d.control, requires)),
                                "{}", d
                            );
                            let asked = request.required.contains(requires)
                                || request.optional.contains(requires);
                            prop_assert_eq!(requested, asked, "{}", d);
                            prop_assert!(requested || drop_optional, "{}", d);
                        }
                        DropReason::Conflict { with } => {
                            prop_assert!(n.value.contains(with), "{}", d);
                            prop_assert!(
                                CONFLICTS.contains(&(d.control, with))
                                    || CONFLICTS.contains(&(with, d.control)),
                                "{}", d
                            );
                        }
                    }
                }
            }
            Err(e) => {
                prop_assert!(
                    !(e.unsupported.is_empty() && e.problems.is_empty() && e.contradictory.is_empty())
                );
                for bit in e.unsupported.iter() {
                    prop_assert!(!may_be_one(&caps, bit), "{} is allowed", bit);
                }
                for bit in e.contradictory.iter() {
                    prop_assert!(caps_forces(&caps, bit), "{} is not forced", bit);
                }
            }
        }
    }

    #[test]
    fn set_operations_are_the_per_field_bit_operations(a in arb_set(), b in arb_set()) {
        let (union, inter, diff) = (a | b, a & b, a - b);
        for g in ControlGroup::ALL {
            let (x, y) = (a.get(g), b.get(g));
            prop_assert_eq!(union.get(g), x | y);
            prop_assert_eq!(inter.get(g), x & y);
            prop_assert_eq!(diff.get(g), x & !y);
        }
        prop_assert!(union.contains_all(&a) && union.contains_all(&b));
        prop_assert!(a.contains_all(&inter) && a.contains_all(&diff));
        prop_assert!(!diff.intersects(&b));
        prop_assert_eq!(diff | inter, a);
        prop_assert_eq!(a.contains_all(&b), (b - a).is_empty());
        prop_assert_eq!(a.intersects(&b), a.iter().any(|bit| b.contains(bit)));
        let mut c = a;
        c |= b;
        c -= inter;
        prop_assert_eq!(c, (a - b) | (b - a));
        c &= a;
        prop_assert_eq!(c, a - b);
        for bit in a.iter() {
            prop_assert!(a.contains_all(&ControlSet::from(bit)));
        }
    }

    #[test]
    fn set_display_names_every_bit(a in arb_set()) {
        let text = a.to_string();
        if a.is_empty() {
            prop_assert_eq!(text, "none");
        } else {
            prop_assert_eq!(text.matches("bit ").count(), a.iter().count(), "{}", text);
            for bit in a.iter() {
                let needle = match bit.name() {
                    Some(name) => format!("\"{name}\" (bit {})", bit.bit),
                    None => format!("reserved bit {}", bit.bit),
                };
                prop_assert!(text.contains(&needle), "{} in {}", needle, text);
            }
            for g in ControlGroup::ALL {
                prop_assert_eq!(text.contains(&format!("{g}: ")), a.get(g) != 0);
            }
        }
    }

    #[test]
    fn inactive_bits_are_those_of_fields_without_activation(a in arb_set()) {
        let inactive = a.inactive();
        for g in ControlGroup::ALL {
            let expected = if active(&a, g) { 0 } else { a.get(g) };
            prop_assert_eq!(inactive.get(g), expected, "{}", g);
            prop_assert_eq!(a.is_active(g), active(&a, g));
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
        // Either a snapshot or an error naming a line of the text.
        if let Err(e) = MsrSnapshot::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
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
        let names_the_first_digit = matches!(
            err.kind,
            vmx_caps::SnapshotErrorKind::InvalidValue(NumberError::InvalidDigit { position: 0, .. })
        );
        prop_assert!(names_the_first_digit, "{:?}", err.kind);
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
        (
            "# c\n0x1__0 1\n",
            2,
            K::InvalidMsr(NumberError::InvalidDigit {
                found: '_',
                position: 4,
                radix: "hexadecimal",
            }),
        ),
        (
            "0x100000000 1\n",
            1,
            K::InvalidMsr(NumberError::TooLarge { bits: 32 }),
        ),
        (
            "0x480 0x1ffffffffffffffff\n",
            1,
            K::InvalidValue(NumberError::TooLarge { bits: 64 }),
        ),
        // One number syntax everywhere (vmx_caps::number): no sign.
        ("+480 1\n", 1, K::InvalidMsr(NumberError::Sign)),
        ("0x480 +1\n", 1, K::InvalidValue(NumberError::Sign)),
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
        "line 1: the MSR value is not a 64-bit hexadecimal number: 'z' at position 0 is not a hexadecimal digit"
    );
    // Line ends: LF, CR LF and a lone CR all end a line; a UTF-8 byte-order mark is skipped.
    for text in [
        "# c\n0x480 1\n0x481 2\n",
        "# c\r\n0x480 1\r\n0x481 2\r\n",
        "# c\r0x480 1\r0x481 2\r",
        "\u{feff}# c\n0x480 1\r0x481 2",
    ] {
        let snap = MsrSnapshot::parse(text).unwrap();
        assert_eq!(
            snap.iter().collect::<Vec<_>>(),
            [(0x480, 1), (0x481, 2)],
            "{text:?}"
        );
    }
    assert_eq!(
        MsrSnapshot::parse("# c\r0x480 1\r\r0x481 zz\r")
            .unwrap_err()
            .line,
        4
    );
    assert_eq!(
        MsrSnapshot::parse("# c\r\n\r\n0x481 zz\n")
            .unwrap_err()
            .line,
        3
    );
}
