//! With the `serde` feature, every decoded value serializes to its decoded fields and back.
#![cfg(feature = "serde")]

use exits::{ExitReason, RawExitInfo, VmExit};
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
