//! VM-instruction error decoding against the SDM's table (Vol. 3C, §31.4), typed here independently
//! of the crate's own table.

use proptest::prelude::*;
use vmx_core::{VmFail, VmInstructionError};

/// SDM Vol. 3C, Table 31-1 "VM-Instruction Error Numbers", transcribed.
const SDM_TABLE: &[(u32, &str)] = &[
    (1, "VMCALL executed in VMX root operation"),
    (2, "VMCLEAR with invalid physical address"),
    (3, "VMCLEAR with VMXON pointer"),
    (4, "VMLAUNCH with non-clear VMCS"),
    (5, "VMRESUME with non-launched VMCS"),
    (
        6,
        "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
    ),
    (7, "VM entry with invalid control field(s)"),
    (8, "VM entry with invalid host-state field(s)"),
    (9, "VMPTRLD with invalid physical address"),
    (10, "VMPTRLD with VMXON pointer"),
    (11, "VMPTRLD with incorrect VMCS revision identifier"),
    (12, "VMREAD/VMWRITE from/to unsupported VMCS component"),
    (13, "VMWRITE to read-only VMCS component"),
    (15, "VMXON executed in VMX root operation"),
    (16, "VM entry with invalid executive-VMCS pointer"),
    (17, "VM entry with non-launched executive VMCS"),
    (
        18,
        "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)",
    ),
    (
        19,
        "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    ),
    (20, "VMCALL with invalid VM-exit control fields"),
    (
        22,
        "VMCALL with incorrect MSEG revision identifier (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    ),
    (23, "VMXOFF under dual-monitor treatment of SMIs and SMM"),
    (
        24,
        "VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    ),
    (
        25,
        "VM entry with invalid VM-execution control fields in executive VMCS (when attempting to return from SMM)",
    ),
    (26, "VM entry with events blocked by MOV SS"),
    (28, "Invalid operand to INVEPT/INVVPID"),
];

#[test]
fn every_sdm_number_decodes_to_its_own_variant_with_the_sdm_text() {
    for &(number, text) in SDM_TABLE {
        let error = VmInstructionError::from_raw(number);
        assert!(
            !matches!(error, VmInstructionError::Unknown(_)),
            "error {number} decoded as unknown"
        );
        assert_eq!(error.number(), number);
        assert_eq!(error.description(), Some(text), "error {number}");
        assert_eq!(
            error.to_string(),
            format!("VM-instruction error {number}: {text}")
        );
    }
}

#[test]
fn all_lists_exactly_the_sdm_numbers_in_order() {
    let numbers: Vec<u32> = VmInstructionError::ALL.iter().map(|e| e.number()).collect();
    let expected: Vec<u32> = SDM_TABLE.iter().map(|&(n, _)| n).collect();
    assert_eq!(numbers, expected);
}

#[test]
fn named_variants() {
    use VmInstructionError as E;
    assert_eq!(E::from_raw(4), E::VmlaunchNonClearVmcs);
    assert_eq!(E::from_raw(5), E::VmresumeNonLaunchedVmcs);
    assert_eq!(E::from_raw(7), E::EntryInvalidControlFields);
    assert_eq!(E::from_raw(8), E::EntryInvalidHostStateFields);
    assert_eq!(E::from_raw(11), E::VmptrldIncorrectRevision);
    assert_eq!(E::from_raw(12), E::UnsupportedVmcsComponent);
    assert_eq!(E::from_raw(13), E::VmwriteReadOnlyComponent);
    assert_eq!(E::from_raw(15), E::VmxonInVmxRoot);
    assert_eq!(E::from_raw(26), E::EntryEventsBlockedByMovSs);
    assert_eq!(E::from_raw(28), E::InvalidInveptInvvpidOperand);
}

#[test]
fn unassigned_numbers_are_kept() {
    for number in [0, 14, 21, 27, 29, 30, 0xffff, u32::MAX] {
        let error = VmInstructionError::from_raw(number);
        assert_eq!(error, VmInstructionError::Unknown(number));
        assert_eq!(error.number(), number);
        assert_eq!(error.description(), None);
        assert_eq!(
            error.to_string(),
            format!("VM-instruction error {number}: number not assigned by the SDM")
        );
    }
}

#[test]
fn vmfail_display_and_error_trait() {
    let fail = VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent);
    assert_eq!(
        fail.to_string(),
        "VMfailValid: VM-instruction error 13: VMWRITE to read-only VMCS component"
    );
    assert!(VmFail::Invalid.to_string().starts_with("VMfailInvalid"));
    let as_error: &dyn core::error::Error = &fail;
    assert!(as_error.source().is_none());
    let inner: &dyn core::error::Error = &VmInstructionError::VmxonInVmxRoot;
    assert!(
        inner
            .to_string()
            .contains("VMXON executed in VMX root operation")
    );
}

#[cfg(feature = "serde")]
#[test]
fn serde_uses_the_sdm_number() {
    let json = serde_json::to_string(&VmInstructionError::EntryInvalidControlFields).unwrap();
    assert_eq!(json, "7");
    let back: VmInstructionError = serde_json::from_str("21").unwrap();
    assert_eq!(back, VmInstructionError::Unknown(21));
    for fail in [
        VmFail::Invalid,
        VmFail::Valid(VmInstructionError::VmptrldVmxonPointer),
        VmFail::Valid(VmInstructionError::Unknown(99)),
    ] {
        let json = serde_json::to_string(&fail).unwrap();
        assert_eq!(serde_json::from_str::<VmFail>(&json).unwrap(), fail);
    }
}

proptest! {
    #[test]
    fn decoding_is_total_and_round_trips(number in any::<u32>()) {
        let error = VmInstructionError::from_raw(number);
        prop_assert_eq!(error.number(), number);
        let assigned = SDM_TABLE.iter().any(|&(n, _)| n == number);
        prop_assert_eq!(matches!(error, VmInstructionError::Unknown(_)), !assigned);
        prop_assert_eq!(VmInstructionError::from(u32::from(error)), error);
        let prefix = format!("VM-instruction error {number}: ");
        prop_assert!(error.to_string().starts_with(&prefix));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_round_trips(number in any::<u32>()) {
        let error = VmInstructionError::from_raw(number);
        let json = serde_json::to_string(&error).unwrap();
        prop_assert_eq!(serde_json::from_str::<VmInstructionError>(&json).unwrap(), error);
        let fail = VmFail::Valid(error);
        let json = serde_json::to_string(&fail).unwrap();
        prop_assert_eq!(serde_json::from_str::<VmFail>(&json).unwrap(), fail);
    }
}
