//! The decoded capabilities and negotiation results through serde (feature `serde`).
#![cfg(feature = "serde")]

use vmx_caps::{ControlRequest, MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};

#[test]
fn capabilities_round_trip_through_json() {
    let dir = format!("{}/testdata", env!("CARGO_MANIFEST_DIR"));
    let mut dumps = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("msr") {
            continue;
        }
        dumps += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.as_str();
        let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
        let json = serde_json::to_value(caps).unwrap();
        // Control fields are plain integers, unknown bits included.
        assert_eq!(json["pin"]["allowed0"], 0x16);
        assert_eq!(json["basic"], caps.basic.0);
        let back: VmxCapabilities = serde_json::from_value(json).unwrap();
        assert_eq!(back, caps, "{}", path.display());
    }
    assert_eq!(dumps, 11, "every bundled dump");
}

#[test]
fn negotiation_result_serializes() {
    let text = include_str!("../testdata/corei7_skylake_x.msr");
    let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
    let n = caps
        .negotiate(
            &ControlRequest::new()
                .require(PrimaryControls::HLT_EXITING)
                .require(SecondaryControls::ENABLE_EPT),
        )
        .unwrap();
    let json = serde_json::to_value(n).unwrap();
    assert_eq!(json["value"]["proc2"], 0x2);
    assert_eq!(json["value"]["proc"], 0x0400_6172 | 0x80 | 0x8000_0000u32);
}

#[test]
fn architectural_registers_serialize_as_integers() {
    use vmx_caps::arch::{Cr0, Cr4, Dr7, Efer, Rflags, Xcr0};
    use vmx_caps::{CrUse, MsrSnapshot as Snap};
    // Linux's long-mode EFER with an unknown bit 16: the integer, unknown bit kept.
    let efer = Efer::from_bits_retain(0x1_0d01);
    assert_eq!(serde_json::to_value(efer).unwrap(), 0x1_0d01);
    assert_eq!(
        serde_json::from_value::<Efer>(0x1_0d01.into()).unwrap(),
        efer
    );
    let cr0 = Cr0::PE | Cr0::NE | Cr0::PG;
    assert_eq!(serde_json::to_string(&cr0).unwrap(), "2147483681");
    for raw in [0u64, 0x2000, u64::MAX] {
        let json = serde_json::Value::from(raw);
        assert_eq!(
            serde_json::from_value::<Cr4>(json.clone()).unwrap().bits(),
            raw
        );
        assert_eq!(
            serde_json::from_value::<Rflags>(json.clone())
                .unwrap()
                .bits(),
            raw
        );
        assert_eq!(
            serde_json::from_value::<Dr7>(json.clone()).unwrap().bits(),
            raw
        );
        assert_eq!(serde_json::from_value::<Xcr0>(json).unwrap().bits(), raw);
    }
    // The fixed bits, as a whole.
    let text = include_str!("../testdata/tigerlake.msr");
    let caps = VmxCapabilities::read(&mut Snap::parse(text).unwrap()).unwrap();
    let fixed = caps.cr0_fixed_bits(CrUse::Vmx);
    let json = serde_json::to_value(fixed).unwrap();
    assert_eq!(json["must_be_one"], 0x8000_0021u64);
    assert_eq!(json["register"], "Cr0");
}

/// `value` through JSON and back serializes to the same JSON (the round trip loses nothing).
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> serde_json::Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    json
}

#[test]
fn every_type_round_trips() {
    use vmx_caps::arch::{Cr0, Cr4, DebugCtl, Dr7, Efer, Rflags, Xcr0};
    use vmx_caps::virt::VirtualPolicy;
    use vmx_caps::{
        ControlBit, ControlGroup, ControlRegister, ControlSet, CrUse, Default1Policy,
        DependencyPolicy, EntryControls, ExitControls, FeatureControl, PinBasedControls,
        RequestProblem, SecondaryExitControls, TertiaryControls, VmFuncControls, msr,
    };
    let text = include_str!("../testdata/tigerlake.msr");
    let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
    round_trip(&caps);
    round_trip(&caps.basic);
    round_trip(&caps.basic.memory_type());
    round_trip(&caps.misc);
    round_trip(&caps.vmcs_enum);
    round_trip(&caps.ept_vpid);
    round_trip(&caps.proc2);
    round_trip(&caps.cr0_fixed);
    assert_eq!(
        round_trip(&caps.feature_control),
        caps.feature_control.bits()
    );
    assert_eq!(
        round_trip(&FeatureControl::from_bits_retain(1 << 20 | 5)),
        (1 << 20) | 5
    );
    round_trip(&caps.cr0_fixed_bits(CrUse::Guest {
        unrestricted_guest: true,
    }));
    round_trip(&caps.cr4_fixed_bits());
    round_trip(&CrUse::Vmx);
    round_trip(&ControlRegister::Cr4);
    round_trip(&Cr0::PE);
    for group in ControlGroup::ALL {
        round_trip(&group);
        for bit in 0..64 {
            round_trip(&caps.control_state(group, bit));
        }
    }
    // Every flag set of the workspace's vmx-caps: the number, unknown bits kept.
    assert_eq!(
        round_trip(&PinBasedControls::from_bits_retain(u32::MAX)),
        u32::MAX
    );
    assert_eq!(round_trip(&PrimaryControls::HLT_EXITING), 0x80);
    assert_eq!(round_trip(&SecondaryControls::ENABLE_EPT), 2);
    assert_eq!(round_trip(&ExitControls::from_bits_retain(1 << 9)), 1 << 9);
    assert_eq!(
        round_trip(&SecondaryExitControls::from_bits_retain(1 << 40)),
        1u64 << 40
    );
    assert_eq!(round_trip(&EntryControls::from_bits_retain(1 << 9)), 1 << 9);
    assert_eq!(round_trip(&VmFuncControls::from_bits_retain(1)), 1);
    for raw in [0u64, 0x8000_0011, u64::MAX] {
        assert_eq!(round_trip(&Cr0::from_bits_retain(raw)), raw);
        assert_eq!(round_trip(&Cr4::from_bits_retain(raw)), raw);
        assert_eq!(round_trip(&Efer::from_bits_retain(raw)), raw);
        assert_eq!(round_trip(&Rflags::from_bits_retain(raw)), raw);
        assert_eq!(round_trip(&Dr7::from_bits_retain(raw)), raw);
        assert_eq!(round_trip(&Xcr0::from_bits_retain(raw)), raw);
        assert_eq!(round_trip(&DebugCtl::from_bits_retain(raw)), raw);
    }
    round_trip(&caps.pin);
    round_trip(&caps.cr4_fixed);
    round_trip(&ControlSet::EMPTY.union(&PrimaryControls::HLT_EXITING.into()));
    round_trip(&ControlBit::new(ControlGroup::Secondary, 1));
    assert_eq!(
        round_trip(&TertiaryControls::from_bits_retain(1 << 63)),
        1u64 << 63
    );

    // A dump without IA32_FEATURE_CONTROL and IA32_VMX_VMFUNC, read partially.
    let partial_text: String = text
        .lines()
        .filter(|l| !l.starts_with("0x3a ") && !l.starts_with("0x491 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let partial =
        VmxCapabilities::read_partial(&mut MsrSnapshot::parse(&partial_text).unwrap()).unwrap();
    assert!(partial.missing.contains(msr::IA32_FEATURE_CONTROL));
    round_trip(&partial);
    round_trip(&partial.missing);
    for group in [ControlGroup::Pin, ControlGroup::Secondary] {
        round_trip(&partial.group_knowledge(group));
    }

    // Negotiation: policies, drops and their reasons, the errors.
    let request = ControlRequest::new()
        .require(PrimaryControls::HLT_EXITING)
        .prefer(SecondaryControls::ENABLE_PCONFIG | SecondaryControls::ENABLE_VPID)
        .with_default1(Default1Policy::Keep)
        .with_dependencies(DependencyPolicy::DropOptional);
    round_trip(&request);
    let negotiated = caps.negotiate(&request).unwrap();
    round_trip(&negotiated);
    round_trip(&negotiated.value);
    let drops: Vec<_> = negotiated.drops().collect();
    assert!(!drops.is_empty());
    for drop in drops {
        round_trip(&drop);
        round_trip(&drop.reason);
    }
    let impossible = ControlRequest::new().require(SecondaryControls::from_bits_retain(1 << 31));
    let error = caps.negotiate(&impossible).unwrap_err();
    let json = serde_json::to_value(error.unsupported).unwrap();
    assert_eq!(json["proc2"], 1u64 << 31);
    // A request with a conflict and a missing dependency: its problems, one by one.
    let inconsistent = ControlRequest::new()
        .require(
            SecondaryControls::VIRTUALIZE_APIC_ACCESSES | SecondaryControls::VIRTUALIZE_X2APIC_MODE,
        )
        .require(SecondaryControls::UNRESTRICTED_GUEST);
    let error = caps.negotiate(&inconsistent).unwrap_err();
    let problems: Vec<RequestProblem> = error.problems.iter().collect();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, RequestProblem::Conflict { .. })),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, RequestProblem::MissingDependency { .. })),
        "{problems:?}"
    );
    for problem in problems {
        round_trip(&problem);
    }

    // The policy for a nested L1 (vmx_caps::virt).
    let policy = VirtualPolicy::everything(0x1234)
        .without(SecondaryControls::ENABLE_VM_FUNCTIONS)
        .requiring(PrimaryControls::HLT_EXITING);
    let json = round_trip(&policy);
    assert_eq!(json["revision_id"], 0x1234);
}
