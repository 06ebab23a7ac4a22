//! Hostile-input campaign for the field table and the value types: every field's value shown
//! through its value type for arbitrary raw values (the decoders behind `display_value` are
//! total), lookups by arbitrary encodings and names, EPT pointers of arbitrary bits and widths,
//! access rights, interruption information and activity states of arbitrary bits. Besides the
//! absence of panics (debug build: overflow checks on): a lookup finds a field only by its own
//! encoding or name, the width and type of an encoding are its bits 14:13 and 11:10 (SDM Vol.
//! 3C, 25.11.2 "VMCS Field Encoding"), and an EPT pointer's parts reassemble to its bits where
//! they are valid.

mod hostile_cases;

use hostile_cases::cases;
use proptest::prelude::*;
use vmcs_fields::{
    ActivityState, EptPointer, ExceptionBitmap, FieldType, FieldWidth, HostPhysAddr,
    InterruptionInfo, InterruptionType, SegmentAccessRights, fields,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn every_field_shows_any_value(raw in any::<u64>(), small in 0..64u64) {
        for info in fields::ALL.iter() {
            let _ = format!("{} {}", info.display_value(raw), info.display_value(small));
            let _ = format!("{info:?}");
        }
    }

    #[test]
    fn lookups_by_arbitrary_keys(encoding in any::<u32>(), name in "[A-Z_0-9]{0,40}") {
        if let Some(info) = fields::by_encoding(encoding) {
            prop_assert_eq!(info.encoding, encoding);
            prop_assert_eq!(info.width(), FieldWidth::from_encoding(encoding));
            prop_assert_eq!(info.field_type(), FieldType::from_encoding(encoding));
            prop_assert_eq!(info.width().code(), (encoding >> 13) & 3);
            prop_assert_eq!(info.field_type().code(), (encoding >> 10) & 3);
        }
        if let Some(i) = fields::position(encoding) {
            prop_assert_eq!(fields::ALL[i].encoding, encoding);
        }
        if let Some(info) = fields::by_name(&name) {
            prop_assert_eq!(info.name, name.as_str());
        }
    }

    #[test]
    fn ept_pointers_of_any_bits(bits in any::<u64>(), width in any::<u8>()) {
        let eptp = EptPointer::from_bits(bits);
        let _ = format!("{eptp:?}");
        let reserved = eptp.reserved_bits(width);
        prop_assert_eq!(reserved & !bits, 0, "reserved bits not in the pointer");
        prop_assert_eq!(reserved & 0xf00, bits & 0xf00);
        prop_assert!(eptp.pml4_address().as_u64() >> 52 == 0);
        if let (Ok(mt), Ok(walk)) = (eptp.memory_type(), eptp.walk_length()) {
            let again = EptPointer::from_parts(
                HostPhysAddr::new_truncate(bits),
                mt,
                walk,
                eptp.accessed_dirty_enabled(),
                eptp.supervisor_shadow_stack_enabled(),
            );
            // The parts cover bits 7:0 and 51:12; bits 11:8 and 63:52 are reserved.
            prop_assert_eq!(again.bits(), bits & !0xfff0_0000_0000_0f00);
        }
    }

    #[test]
    fn value_types_of_any_bits(bits in any::<u32>(), small in any::<u8>()) {
        let ar = SegmentAccessRights::from_bits(bits);
        let _ = format!("{ar:?}");
        prop_assert_eq!(ar.segment_type(), (bits & 0xf) as u8);
        prop_assert_eq!(ar.dpl(), ((bits >> 5) & 3) as u8);
        prop_assert_eq!(ar.unusable(), bits & (1 << 16) != 0);
        let info = InterruptionInfo::from_bits(bits);
        let _ = format!("{info:?}");
        prop_assert_eq!(info.interruption_type(), InterruptionType::from_raw(((bits >> 8) & 7) as u8));
        let state = ActivityState::from_raw(bits);
        let _ = format!("{state:?}");
        prop_assert_eq!(state.raw(), bits);
        let kind = InterruptionType::from_raw(small);
        let _ = format!("{kind:?}");
        let bitmap = ExceptionBitmap::from_bits_retain(bits);
        let _ = format!("{bitmap}");
        prop_assert_eq!(bitmap.intercepts(small), small < 32 && bits & (1 << small) != 0);
        prop_assert_eq!(ExceptionBitmap::vector(small).is_some(), small < 32);
    }
}
