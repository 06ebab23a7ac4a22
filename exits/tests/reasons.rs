//! Exit reasons: totality over every number and every flag combination, and the SDM's table.

use exits::{BasicExitReason, ExitReason, RawExitInfo, VmExit};
use proptest::prelude::*;

/// The numbers Appendix C of the SDM leaves undefined, up to the highest defined reason (85).
const UNDEFINED_BELOW_86: [u16; 6] = [35, 38, 42, 71, 82, 83];

#[test]
fn every_basic_reason_number_decodes_and_round_trips() {
    for number in 0..=u16::MAX {
        let reason = BasicExitReason::from_number(number);
        assert_eq!(reason.number(), number);
        let defined = number <= 85 && !UNDEFINED_BELOW_86.contains(&number);
        assert_eq!(reason.sdm_name().is_some(), defined, "reason {number}");
        assert_eq!(matches!(reason, BasicExitReason::Unknown(_)), !defined);
        assert!(!reason.to_string().is_empty());
    }
}

#[test]
fn all_lists_every_defined_reason_in_order() {
    let numbers: Vec<u16> = BasicExitReason::ALL.iter().map(|r| r.number()).collect();
    let expected: Vec<u16> = (0..=85)
        .filter(|n| !UNDEFINED_BELOW_86.contains(n))
        .collect();
    assert_eq!(numbers, expected);
}

#[test]
fn sdm_names_of_selected_reasons() {
    let table = [
        (0, "Exception or non-maskable interrupt (NMI)"),
        (2, "Triple fault"),
        (10, "CPUID"),
        (28, "Control-register accesses"),
        (30, "I/O instruction"),
        (33, "VM-entry failure due to invalid guest state"),
        (48, "EPT violation"),
        (49, "EPT misconfiguration"),
        (54, "WBINVD or WBNOINVD"),
        (74, "Bus lock"),
        (75, "Instruction timeout"),
        (76, "SEAMCALL"),
        (77, "TDCALL"),
        (78, "RDMSRLIST"),
        (79, "WRMSRLIST"),
        (84, "RDMSR with immediate operand"),
        (85, "WRMSRNS with immediate operand"),
    ];
    for (number, name) in table {
        assert_eq!(BasicExitReason::from_number(number).sdm_name(), Some(name));
    }
    assert_eq!(
        BasicExitReason::from_number(35).to_string(),
        "undefined exit reason 35"
    );
    assert_eq!(BasicExitReason::from_number(12).to_string(), "HLT (12)");
}

#[test]
fn every_flag_combination_decodes_and_round_trips() {
    // Bits 31:16 hold the flags and reserved bits: all 65536 combinations, with several basic
    // reasons each.
    for high in 0..=u16::MAX as u32 {
        for basic in [0u32, 33, 48, 86, 0xffff] {
            let raw = high << 16 | basic;
            let reason = ExitReason::from_raw(raw);
            assert_eq!(reason.to_raw(), raw);
            assert_eq!(reason.entry_failure, raw & 1 << 31 != 0);
            assert_eq!(reason.enclave_mode, raw & 1 << 27 != 0);
            assert_eq!(reason.pending_mtf, raw & 1 << 28 != 0);
            assert_eq!(reason.from_vmx_root, raw & 1 << 29 != 0);
            assert_eq!(reason.bus_lock_detected, raw & 1 << 26 != 0);
            assert!(!reason.to_string().is_empty());
        }
    }
}

#[test]
fn entry_failure_reason_display() {
    let reason = ExitReason::from_raw(0x8000_0021);
    assert!(reason.entry_failure);
    assert_eq!(reason.basic, BasicExitReason::EntryFailureInvalidGuestState);
    assert_eq!(
        reason.to_string(),
        "VM-entry failure due to invalid guest state (33), VM-entry failure"
    );
    let enclave = ExitReason::from_raw(1 << 27 | 12);
    assert_eq!(enclave.to_string(), "HLT (12), enclave mode");
}

#[test]
fn every_reason_number_decodes_to_its_variant() {
    let raw = RawExitInfo {
        qualification: u64::MAX,
        guest_linear_address: u64::MAX,
        guest_physical_address: u64::MAX,
        interruption_info: u32::MAX,
        interruption_error_code: u32::MAX,
        idt_vectoring_info: u32::MAX,
        idt_vectoring_error_code: u32::MAX,
        instruction_length: u32::MAX,
        instruction_info: u32::MAX,
        reason: 0,
    };
    for number in 0..=u16::MAX as u32 {
        for raw in [
            RawExitInfo {
                reason: number,
                ..raw
            },
            RawExitInfo {
                reason: number | 1 << 31,
                ..RawExitInfo::default()
            },
        ] {
            let exit = VmExit::from_raw(&raw);
            assert_eq!(exit.basic_reason().number() as u32, number);
            assert!(!exit.to_string().is_empty());
        }
    }
}

proptest! {
    #[test]
    fn any_raw_exit_decodes(
        reason in any::<u32>(),
        qualification in any::<u64>(),
        guest_linear_address in any::<u64>(),
        guest_physical_address in any::<u64>(),
        interruption_info in any::<u32>(),
        interruption_error_code in any::<u32>(),
        idt_vectoring_info in any::<u32>(),
        idt_vectoring_error_code in any::<u32>(),
        instruction_length in any::<u32>(),
        instruction_info in any::<u32>(),
    ) {
        let raw = RawExitInfo {
            reason: (reason % 90) | (reason & 0xffff_0000),
            qualification,
            guest_linear_address,
            guest_physical_address,
            interruption_info,
            interruption_error_code,
            idt_vectoring_info,
            idt_vectoring_error_code,
            instruction_length,
            instruction_info,
        };
        let exit = VmExit::from_raw(&raw);
        prop_assert_eq!(exit.basic_reason().number() as u32, raw.reason & 0xffff);
        prop_assert!(!exit.to_string().is_empty());
        if let Some(event) = exit.idt_vectoring() {
            prop_assert!(!event.reinjection().to_string().is_empty());
        }
    }
}
