//! VM-exit interruption information, IDT-vectoring information and re-injection.

use exits::{
    ExitInterruptionInfo, IdtVectoring, IdtVectoringInfo, InstructionLength, InterruptionInfo,
    InterruptionType,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn exit_interruption_info_round_trips(raw in any::<u32>()) {
        match ExitInterruptionInfo::from_raw(raw) {
            None => prop_assert_eq!(raw & 1 << 31, 0),
            Some(info) => {
                prop_assert_eq!(info.to_raw(), raw & ExitInterruptionInfo::DEFINED_BITS);
                prop_assert!(!info.to_string().is_empty());
            }
        }
    }

    #[test]
    fn idt_vectoring_round_trips_and_reinjects(raw in any::<u32>(), code in any::<u32>(), len in any::<u32>()) {
        match IdtVectoringInfo::from_raw(raw) {
            None => prop_assert_eq!(raw & 1 << 31, 0),
            Some(info) => {
                prop_assert_eq!(info.to_raw(), raw & IdtVectoringInfo::DEFINED_BITS);
                let event = IdtVectoring {
                    info,
                    error_code: info.error_code_valid.then_some(code),
                    instruction_length: Some(InstructionLength(len)),
                };
                let injection = event.reinjection();
                // The VM-entry field carries the same vector, type and error-code bit, valid.
                let entry = injection.interruption_info();
                prop_assert_eq!(entry.bits(), raw & 0xfff | 1 << 31);
                prop_assert!(!injection.to_string().is_empty());
            }
        }
    }
}

#[test]
fn page_fault_with_error_code() {
    // #PF (vector 14), hardware exception (type 3), error code valid (bit 11), valid (bit 31).
    let info = ExitInterruptionInfo::from_raw(0x8000_0b0e).unwrap();
    assert_eq!(info.vector, 14);
    assert_eq!(info.kind, InterruptionType::HardwareException);
    assert!(info.error_code_valid && !info.nmi_unblocking);
    assert_eq!(
        info.to_string(),
        "hardware exception, vector 14 (#PF), error code valid"
    );
    assert_eq!(ExitInterruptionInfo::from_raw(0x0000_0b0e), None);
}

#[test]
fn nmi_and_software_exception() {
    let nmi = ExitInterruptionInfo::from_raw(0x8000_0202).unwrap();
    assert_eq!((nmi.vector, nmi.kind), (2, InterruptionType::Nmi));
    // INT3 with NMI unblocking due to IRET (bit 12).
    let int3 = ExitInterruptionInfo::from_raw(0x8000_1603).unwrap();
    assert_eq!(
        (int3.vector, int3.kind),
        (3, InterruptionType::SoftwareException)
    );
    assert!(int3.nmi_unblocking);
}

/// Bit 13 of the IDT-vectoring information (and of the VM-exit interruption information, read
/// from the raw field): "nested exception" (SDM Vol. 3C 25.9.2, 25.9.3; processors with
/// `IA32_VMX_BASIC[58]`).
#[test]
fn nested_exception_bit_13() {
    // #GP (13) with an error code raised while delivering another event: the decoded VM-exit
    // interruption information leaves bit 13 to the raw field's type.
    let exit = ExitInterruptionInfo::from_raw(0x8000_2b0d).unwrap();
    assert!(exit.error_code_valid && !exit.nmi_unblocking);
    assert_eq!(exit.to_raw(), 0x8000_0b0d);
    assert!(vmcs::InterruptionInfo::from_bits(0x8000_2b0d).nested_exception());
    // The delivery of a nested #PF was interrupted: the bit travels to the re-injection.
    let idt = IdtVectoringInfo::from_raw(0x8000_2b0e).unwrap();
    assert!(idt.nested_exception);
    assert_eq!(idt.to_raw(), 0x8000_2b0e);
    assert!(idt.to_info().nested_exception());
    assert!(idt.to_string().ends_with("(#PF), nested exception"));
    assert!(
        !IdtVectoringInfo::from_raw(0x8000_0b0e)
            .unwrap()
            .nested_exception
    );
}

#[test]
fn reinject_external_interrupt() {
    // An EPT violation while delivering external interrupt 0x20: re-inject it unchanged.
    let info = IdtVectoringInfo::from_raw(0x8000_0020).unwrap();
    let event = IdtVectoring {
        info,
        error_code: None,
        instruction_length: None,
    };
    let injection = event.reinjection();
    assert_eq!(
        injection.interruption_info(),
        InterruptionInfo::from_bits(0x8000_0020)
    );
    assert_eq!(injection.error_code, None);
    assert_eq!(injection.instruction_length, None);
}

#[test]
fn reinject_general_protection_with_error_code() {
    let info = IdtVectoringInfo::from_raw(0x8000_0b0d).unwrap();
    let event = IdtVectoring {
        info,
        error_code: Some(0x10),
        instruction_length: Some(InstructionLength(3)),
    };
    let injection = event.reinjection();
    assert_eq!(injection.interruption_info().bits(), 0x8000_0b0d);
    assert_eq!(injection.error_code, Some(0x10));
    // A hardware exception needs no instruction length, even if one was read.
    assert_eq!(injection.instruction_length, None);
    assert_eq!(
        injection.to_string(),
        "inject hardware exception, vector 13 (#GP), error code 0x10"
    );
}

#[test]
fn reinject_software_interrupt_with_length() {
    // INT 0x80 (type 4), 2 bytes long.
    let info = IdtVectoringInfo::from_raw(0x8000_0480).unwrap();
    let event = IdtVectoring {
        info,
        error_code: None,
        instruction_length: Some(InstructionLength(2)),
    };
    let injection = event.reinjection();
    assert_eq!(injection.interruption_info().bits(), 0x8000_0480);
    assert_eq!(injection.instruction_length, Some(InstructionLength(2)));
    // An error code that the information says is not valid is not delivered.
    let event = IdtVectoring {
        error_code: Some(5),
        ..event
    };
    assert_eq!(event.reinjection().error_code, None);
}
