//! The decoded capabilities and negotiation results through serde (feature `serde`).
#![cfg(feature = "serde")]

use vmx_caps::{ControlRequest, MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};

#[test]
fn capabilities_round_trip_through_json() {
    for text in [
        include_str!("../testdata/core2_penryn_t9600.msr"),
        include_str!("../testdata/corei5_lynnfield_750.msr"),
        include_str!("../testdata/corei7_skylake_x.msr"),
        include_str!("../testdata/tigerlake.msr"),
    ] {
        let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap();
        let json = serde_json::to_value(caps).unwrap();
        // Control fields are plain integers, unknown bits included.
        assert_eq!(json["pin"]["allowed0"], 0x16);
        assert_eq!(json["basic"], caps.basic.0);
        let back: VmxCapabilities = serde_json::from_value(json).unwrap();
        assert_eq!(back, caps);
    }
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
