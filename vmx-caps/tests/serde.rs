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
