//! Snapshots: capture, load back, serde round trip, dump.

use vmcs::{
    ExceptionBitmap, FieldType, SegmentAccessRights, SoftVmcs, VmcsRead, VmcsSnapshot, VmcsWrite,
    fields,
};
use vmx_core::VmFail;

fn filled() -> SoftVmcs {
    let mut vmcs = SoftVmcs::all_fields();
    for (i, info) in fields::ALL.iter().enumerate() {
        vmcs.store(
            info.encoding,
            0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1),
        )
        .unwrap();
    }
    vmcs
}

#[test]
fn capture_then_load_reproduces_every_field() {
    let vmcs = filled();
    let snapshot = VmcsSnapshot::capture(&vmcs).unwrap();
    assert_eq!(snapshot.len(), fields::COUNT);
    let mut copy = SoftVmcs::all_fields();
    copy.load(&snapshot).unwrap();
    for info in &fields::ALL {
        assert_eq!(
            copy.read_raw(info.encoding),
            vmcs.read_raw(info.encoding),
            "{}",
            info.name
        );
    }
    assert_eq!(VmcsSnapshot::capture(&copy).unwrap(), snapshot);
}

#[test]
fn capture_leaves_out_unsupported_fields_and_load_refuses_them() {
    let small = SoftVmcs::with_limits(0x10, false);
    let snapshot = VmcsSnapshot::capture(&small).unwrap();
    let expected = fields::ALL.iter().filter(|i| i.index() <= 0x10).count();
    assert_eq!(snapshot.len(), expected);
    assert_eq!(snapshot.get_raw(fields::TSC_MULTIPLIER.encoding()), None);

    let full = VmcsSnapshot::capture(&filled()).unwrap();
    let mut target = SoftVmcs::with_limits(0x10, false);
    let error = target.load(&full).unwrap_err();
    assert!(fields::by_encoding(error.encoding).unwrap().index() > 0x10);
    assert!(error.to_string().contains(error.field));
}

#[test]
fn a_snapshot_reads_like_the_vmcs_it_was_taken_from() {
    let vmcs = filled();
    let snapshot = VmcsSnapshot::capture(&vmcs).unwrap();
    for encoding in 0..0x8000 {
        assert_eq!(
            snapshot.read_raw(encoding),
            vmcs.read_raw(encoding),
            "{encoding:#x}"
        );
    }
    let small = SoftVmcs::with_limits(0x10, false);
    let partial = VmcsSnapshot::capture(&small).unwrap();
    assert_eq!(
        partial.read(fields::TSC_MULTIPLIER),
        Err(VmFail::Valid(
            vmx_core::VmInstructionError::UnsupportedVmcsComponent
        ))
    );
    assert_eq!(partial.read(fields::GUEST_RIP), Ok(0));
}

/// A VMCS that has no current VMCS: every access fails with VMfailInvalid.
struct NoCurrentVmcs;
impl VmcsRead for NoCurrentVmcs {
    fn read_raw(&self, _: u32) -> Result<u64, VmFail> {
        Err(VmFail::Invalid)
    }
}

#[test]
fn capture_reports_failures_other_than_unsupported_fields() {
    assert_eq!(VmcsSnapshot::capture(&NoCurrentVmcs), Err(VmFail::Invalid));
}

#[test]
fn typed_get_insert_remove() {
    let mut snapshot = VmcsSnapshot::new();
    assert!(snapshot.is_empty());
    snapshot
        .insert(fields::GUEST_CS_ACCESS_RIGHTS.encoding(), 0xa09b)
        .unwrap();
    snapshot
        .insert(fields::VMCS_LINK_POINTER.encoding(), u64::MAX)
        .unwrap();
    assert_eq!(
        snapshot.insert(fields::GUEST_CS_SELECTOR.encoding(), 0x1_0008),
        Ok(None),
        "truncated to 16 bits"
    );
    assert_eq!(snapshot.get(fields::GUEST_CS_SELECTOR), Some(8));
    assert_eq!(
        snapshot.get(fields::GUEST_CS_ACCESS_RIGHTS),
        Some(SegmentAccessRights::from_bits(0xa09b))
    );
    assert_eq!(
        snapshot.get(fields::VMCS_LINK_POINTER.high()),
        Some(0xffff_ffff)
    );
    assert_eq!(snapshot.insert(0x681f, 0), Err(vmcs::UnknownField(0x681f)));
    assert_eq!(
        snapshot.remove(fields::GUEST_CS_SELECTOR.encoding()),
        Some(8)
    );
    assert_eq!(snapshot.len(), 2);
}

#[test]
fn dump_groups_fields_as_the_sdm_and_names_each() {
    let mut vmcs = SoftVmcs::all_fields();
    vmcs.write(fields::EXCEPTION_BITMAP, ExceptionBitmap::PAGE_FAULT)
        .unwrap();
    vmcs.write(
        fields::GUEST_CS_ACCESS_RIGHTS,
        SegmentAccessRights::from_bits(0xa09b),
    )
    .unwrap();
    let snapshot = VmcsSnapshot::capture(&vmcs).unwrap();
    let dump = snapshot.dump().to_string();
    let titles: Vec<usize> = [
        FieldType::GuestState,
        FieldType::HostState,
        FieldType::Control,
        FieldType::ExitInformation,
    ]
    .iter()
    .map(|t| dump.find(&format!("{}:", t.title())).unwrap())
    .collect();
    assert!(titles.windows(2).all(|w| w[0] < w[1]), "{titles:?}");
    for info in &fields::ALL {
        let line = dump
            .lines()
            .find(|l| l.split_whitespace().next() == Some(info.name))
            .unwrap_or_else(|| panic!("{} not in dump", info.name));
        assert!(line.contains(&format!("{:#06x}", info.encoding)), "{line}");
        // The field sits in its group: after its title, before the next one.
        let at = dump.find(line).unwrap();
        let group = titles.iter().filter(|&&t| t < at).count() - 1;
        let expected = match info.field_type() {
            FieldType::GuestState => 0,
            FieldType::HostState => 1,
            FieldType::Control => 2,
            FieldType::ExitInformation => 3,
        };
        assert_eq!(group, expected, "{}", info.name);
    }
    assert!(dump.contains("0x4000 (PAGE_FAULT)"), "{dump}");
    assert!(
        dump.contains("0xa09b (type=0xb code/data dpl=0 P L G)"),
        "{dump}"
    );
    assert!(VmcsSnapshot::new().dump().to_string().contains("(none)"));
}

#[cfg(feature = "serde")]
mod serde_tests {
    use super::*;

    #[test]
    fn json_round_trip_keyed_by_encoding() {
        let snapshot = VmcsSnapshot::capture(&filled()).unwrap();
        let json = serde_json::to_string(&snapshot).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let map = value.as_object().unwrap();
        assert_eq!(map.len(), fields::COUNT);
        assert!(map.contains_key(&fields::GUEST_RIP.encoding().to_string()));
        let back: VmcsSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn keys_may_be_hex_decimal_or_names() {
        let json = r#"{"0x681e": 4096, "26_652": 8192, "GUEST_CS_SELECTOR": 16}"#;
        let snapshot: VmcsSnapshot = serde_json::from_str(json).unwrap();
        assert_eq!(snapshot.get(fields::GUEST_RIP), Some(4096));
        assert_eq!(snapshot.get(fields::GUEST_RSP), Some(8192));
        assert_eq!(snapshot.get(fields::GUEST_CS_SELECTOR), Some(16));
    }

    #[test]
    fn bad_snapshots_are_refused_with_a_reason() {
        for (json, reason) in [
            (r#"{"0x681f": 1}"#, "not the full encoding"),
            (r#"{"NO_SUCH_FIELD": 1}"#, "neither an encoding nor"),
            // One number syntax everywhere (vmx_caps::number): no sign, before or after `0x`.
            (
                r#"{"+26652": 1}"#,
                "a sign (`+` or `-`) is not part of a number",
            ),
            (
                r#"{"0x+681e": 1}"#,
                "'+' at position 2 is not a hexadecimal digit",
            ),
            (r#"{"0x1_0000_0000": 1}"#, "does not fit in 32 bits"),
            (r#"{"GUEST_CS_SELECTOR": 65536}"#, "does not fit"),
            (r#"{"GUEST_RIP": 1, "0x681e": 2}"#, "appears twice"),
            (r#"[1, 2]"#, "a map"),
        ] {
            let error = serde_json::from_str::<VmcsSnapshot>(json)
                .unwrap_err()
                .to_string();
            assert!(error.contains(reason), "{json}: {error}");
        }
    }
}
