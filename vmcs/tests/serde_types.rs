//! Every serializable type of the crate through serde_json (feature `serde`): the value types
//! and the checker's inputs and verdicts round-trip; flag sets are plain integers, unknown bits
//! kept (see `vmx_caps::serde_bits`). `VmcsSnapshot` has its own tests (`tests/snapshot.rs`).
#![cfg(feature = "serde")]

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vmcs::check::{
    Checker, CpuFacts, CpuFeatures, EntryInstruction, FailureClass, LaunchContext, LaunchState,
    NoMemory, Outcome, Rule, RuleGroup, Violation,
};
use vmcs::{
    ActivityState, DescriptorTable, ExceptionBitmap, GuestDescriptorTable, GuestSegment,
    GuestState, HostState, InterruptibilityState, InterruptionInfo, InterruptionType,
    PendingDebugExceptions, Segment, SegmentAccessRights, SoftVmcs, SystemSegmentType, VmcsWrite,
    fields,
};
use vmx_caps::arch::{Cr0, Efer};
use vmx_caps::{ExitControls, MsrSnapshot, VmxCapabilities};
use vmx_core::VmInstructionError;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> serde_json::Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value, "{json}");
    json
}

#[test]
fn flag_sets_are_numbers_with_unknown_bits_kept() {
    let state =
        InterruptibilityState::BLOCKING_BY_STI | InterruptibilityState::from_bits_retain(1 << 20);
    assert_eq!(round_trip(&state), (1 << 20) | 1);
    // #PF (14) and #UD (6), plus vector 31 (no architectural exception).
    let bitmap = ExceptionBitmap::from_bits_retain(1 << 14 | 1 << 6 | 1 << 31);
    assert_eq!(round_trip(&bitmap), 0x8000_4040u32);
    assert_eq!(
        serde_json::from_str::<ExceptionBitmap>("4294967295")
            .unwrap()
            .bits(),
        u32::MAX
    );
    // A single-step trap pending inside an RTM region, with reserved bit 40 kept.
    let pending = PendingDebugExceptions::BS
        | PendingDebugExceptions::RTM
        | PendingDebugExceptions::from_bits_retain(1 << 40);
    assert_eq!(round_trip(&pending), (1u64 << 40) | (1 << 16) | (1 << 14));
    let features = CpuFacts::from_cpuid().features;
    assert_eq!(round_trip(&features), features.bits());
    assert_eq!(
        round_trip(&(CpuFeatures::INTEL64)),
        CpuFeatures::INTEL64.bits()
    );
}

#[test]
fn value_types_round_trip() {
    let code = SegmentAccessRights::CODE_64;
    round_trip(&code);
    round_trip(&SegmentAccessRights::from_bits(0x1_0000)); // unusable
    let segment = Segment {
        selector: 0x8,
        base: 0,
        limit: 0xffff_ffff,
        access_rights: code,
    };
    round_trip(&segment);
    for seg in GuestSegment::ALL {
        round_trip(&seg);
    }
    for table in GuestDescriptorTable::ALL {
        round_trip(&table);
    }
    round_trip(&DescriptorTable {
        base: 0xffff_8000_0000_1000,
        limit: 0xfff,
    });
    for ty in [
        SystemSegmentType::TSS16_AVAILABLE,
        SystemSegmentType::LDT,
        SystemSegmentType::TSS_BUSY,
    ] {
        round_trip(&ty);
        round_trip(&SegmentAccessRights::system(ty));
    }
    for state in [
        GuestState::reset(),
        GuestState::protected_mode_32(0x10_0000),
        GuestState::long_mode_64(0x20_0000, 0x1000),
    ] {
        round_trip(&state);
    }
    // A host-state area as a 64-bit host fills it, read back from a VMCS.
    let mut vmcs = SoftVmcs::all_fields();
    vmcs.write(fields::HOST_CR0, Cr0::PE | Cr0::NE | Cr0::PG)
        .unwrap();
    vmcs.write(fields::HOST_CS_SELECTOR, 0x8).unwrap();
    vmcs.write(fields::HOST_TR_SELECTOR, 0x28).unwrap();
    vmcs.write(fields::HOST_RIP, 0xffff_8000_0010_0000).unwrap();
    vmcs.write(fields::HOST_IA32_EFER, Efer::LME | Efer::LMA)
        .unwrap();
    let host = HostState::read(&vmcs, ExitControls::LOAD_IA32_EFER).unwrap();
    assert_eq!(host.cs, 0x8);
    round_trip(&host);
    for raw in 0..6 {
        round_trip(&ActivityState::from_raw(raw));
    }
    for raw in 0..8 {
        let kind = InterruptionType::from_raw(raw);
        round_trip(&kind);
        round_trip(&InterruptionInfo::new(14, kind, true));
    }
    for info in fields::ALL {
        round_trip(&info.width());
        round_trip(&info.field_type());
    }
}

#[test]
fn checker_inputs_and_verdicts_round_trip() {
    let text = include_str!("../../vmx-caps/testdata/corei7_skylake_x.msr");
    let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
    let facts = CpuFacts::new(46);
    round_trip(&facts);
    let mut context = LaunchContext::new(EntryInstruction::Vmresume, 0x2000, 0x1000);
    context.launch_state = LaunchState::Launched;
    round_trip(&context);
    round_trip(&EntryInstruction::Vmlaunch);
    round_trip(&LaunchState::Clear);

    // A VMCS of zeros: the checker finds violations of every kind of outcome there is here.
    let vmcs = SoftVmcs::new(&caps);
    let mut violations = Vec::new();
    let summary = Checker::new(&caps, facts, context)
        .check(&vmcs, &mut NoMemory, &mut |v: &Violation| {
            violations.push(*v)
        })
        .unwrap();
    let _ = summary;
    assert!(!violations.is_empty());
    for v in &violations {
        // Violation is serialize-only (its field list is a borrowed view): its parts round-trip.
        let json = serde_json::to_value(v).unwrap();
        assert_eq!(json["actual"], v.actual);
        round_trip(&v.rule);
        round_trip(&v.outcome);
    }
    let mut groups = Vec::<RuleGroup>::new();
    let mut classes = Vec::<FailureClass>::new();
    for rule in Rule::ALL {
        round_trip(&rule);
        round_trip(&rule.class());
        round_trip(&rule.group());
        groups.push(rule.group());
        classes.push(rule.class());
    }
    groups.dedup();
    assert!(groups.len() > 5, "{groups:?}");
    assert!(classes.iter().any(|c| c != &classes[0]));
    round_trip(&Outcome::Success);
    round_trip(&Outcome::VmFailValid(VmInstructionError::from_raw(7)));
    round_trip(&Outcome::EntryFailure {
        exit_reason: 0x8000_0021,
        qualification: 0,
    });
}
