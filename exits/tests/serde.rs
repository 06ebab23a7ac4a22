//! With the `serde` feature, every decoded value serializes to its decoded fields and back.
#![cfg(feature = "serde")]

use exits::{BasicExitReason, ExitReason, RawExitInfo, VmExit};
use proptest::prelude::*;

proptest! {
    #[test]
    fn exits_round_trip_through_json(
        reason in 0u32..90,
        flags in any::<u16>(),
        qualification in any::<u64>(),
        interruption_info in any::<u32>(),
        idt_vectoring_info in any::<u32>(),
        instruction_info in any::<u32>(),
        instruction_length in any::<u32>(),
    ) {
        let raw = RawExitInfo {
            reason: reason | (flags as u32) << 16,
            qualification,
            interruption_info,
            idt_vectoring_info,
            instruction_info,
            instruction_length,
            ..RawExitInfo::default()
        };
        let exit = VmExit::from_raw(&raw);
        let text = serde_json::to_string(&exit).unwrap();
        prop_assert_eq!(serde_json::from_str::<VmExit>(&text).unwrap(), exit);
        let reason = ExitReason::from_raw(raw.reason);
        let text = serde_json::to_string(&reason).unwrap();
        prop_assert_eq!(serde_json::from_str::<ExitReason>(&text).unwrap(), reason);
        if let Some(event) = exit.idt_vectoring() {
            let injection = event.reinjection();
            let text = serde_json::to_string(&injection).unwrap();
            prop_assert_eq!(serde_json::from_str::<exits::EventInjection>(&text).unwrap(), injection);
        }
    }
}

#[test]
fn io_qualification_serializes_decoded() {
    let exit = VmExit::from_raw(&RawExitInfo {
        reason: 30,
        qualification: 0x03f8_0000,
        instruction_length: 1,
        ..RawExitInfo::default()
    });
    let value = serde_json::to_value(exit).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "IoInstruction": {
                "qualification": {
                    "size": "Byte",
                    "direction": "Out",
                    "string": false,
                    "rep": false,
                    "operand_encoding": "Dx",
                    "port": 1016
                },
                "string": null,
                "length": 1
            }
        })
    );
}

#[test]
fn exceptions_deserialize_only_from_exception_vectors() {
    use exits::inject::Exception;
    assert_eq!(serde_json::to_string(&Exception::GP).unwrap(), "13");
    assert_eq!(
        serde_json::from_str::<Exception>("14").unwrap(),
        Exception::PF
    );
    assert!(serde_json::from_str::<Exception>("2").is_err());
    assert!(serde_json::from_str::<Exception>("32").is_err());
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
) -> serde_json::Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value, "{json}");
    json
}

/// The types `VmExit` does not carry, each through JSON and back (those it carries are covered by
/// `exits_round_trip_through_json`).
#[test]
fn the_other_types_round_trip() {
    use exits::inject::{Blocking, Delivery, Exception, SoftwareEvent, Window};
    use exits::{ExitField, IdtVectoring};
    use vmcs::{InterruptibilityState, SoftVmcs, fields};

    for field in ExitField::ALL {
        round_trip(&field);
    }
    for number in [0u16, 10, 48, 85, 86, 0xffff] {
        round_trip(&BasicExitReason::from_number(number));
    }
    round_trip(&RawExitInfo {
        reason: 48,
        qualification: 0x182,
        guest_physical_address: 0xfee0_0000,
        ..RawExitInfo::default()
    });
    // An exit that interrupted the delivery of #PF (error code 2), as IDT-vectoring reads it.
    let mut vmcs = SoftVmcs::all_fields();
    vmcs.store(fields::IDT_VECTORING_INFORMATION.encoding(), 0x8000_0b0e)
        .unwrap();
    vmcs.store(fields::IDT_VECTORING_ERROR_CODE.encoding(), 2)
        .unwrap();
    let event = IdtVectoring::read(&vmcs, None).unwrap().unwrap();
    round_trip(&event);
    round_trip(&event.reinjection());
    for vector in [0u8, 8, 13, 14, 31] {
        if let Ok(exception) = Exception::new(vector) {
            assert_eq!(round_trip(&exception), vector);
        }
    }
    for event in [
        SoftwareEvent::Interrupt(0x80),
        SoftwareEvent::Int1,
        SoftwareEvent::Int3,
        SoftwareEvent::Into,
    ] {
        round_trip(&event);
    }
    let blocking = Blocking {
        interruptibility: InterruptibilityState::BLOCKING_BY_STI,
        interrupts_enabled: true,
    };
    // The interruptibility state is a number, as every flag set (vmx_caps::serde_bits).
    assert_eq!(round_trip(&blocking)["interruptibility"], 1);
    round_trip(&Delivery::Injected);
    round_trip(&Delivery::WindowRequested);
    round_trip(&Window::Interrupt);
    round_trip(&Window::Nmi);
}

/// Every basic exit reason the SDM defines, each with qualification and information fields of
/// all-zero, all-one and alternating bits: the decoded exit through JSON and back. Between them
/// these reach every variant of `VmExit` and every qualification and instruction-information
/// type it carries (each field of each format is 0 in one pattern and 1 in another).
#[test]
fn every_exit_reason_round_trips() {
    let patterns = [0u64, u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa];
    let mut variants = std::collections::BTreeSet::new();
    for reason in 0u32..=85 {
        for &a in &patterns {
            for &b in &patterns {
                let raw = RawExitInfo {
                    reason,
                    qualification: a,
                    guest_linear_address: b,
                    guest_physical_address: a,
                    interruption_info: b as u32,
                    interruption_error_code: a as u32,
                    idt_vectoring_info: a as u32,
                    idt_vectoring_error_code: b as u32,
                    instruction_length: 1 + (a as u32 & 0xf),
                    instruction_info: b as u32,
                };
                let exit = VmExit::from_raw(&raw);
                let json = round_trip(&exit);
                // A unit variant is a string, the others an object with the variant's name.
                let name = match &json {
                    serde_json::Value::String(name) => name.clone(),
                    serde_json::Value::Object(map) => map.keys().next().unwrap().clone(),
                    other => panic!("{other}"),
                };
                variants.insert(name);
            }
        }
    }
    // One variant per defined basic reason, and `Unknown` for the numbers the SDM leaves
    // undefined.
    let defined = (0u16..=85)
        .filter(|&n| !matches!(BasicExitReason::from_number(n), BasicExitReason::Unknown(_)))
        .count();
    assert!(defined < 86);
    assert_eq!(variants.len(), defined + 1, "{variants:?}");
}
