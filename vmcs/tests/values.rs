//! Property tests of the value types: total decoders, encode/decode round trips, no panics.

use proptest::prelude::*;
use vmcs::{
    ActivityState, DebugCtl, ExceptionBitmap, FieldValue, InterruptibilityState, InterruptionInfo,
    InterruptionType, PendingDebugExceptions, SegmentAccessRights, fields,
};

fn round_trip<T: FieldValue + PartialEq + std::fmt::Debug>(raw: u64) {
    let mask = if T::BITS == 64 {
        u64::MAX
    } else {
        (1u64 << T::BITS) - 1
    };
    let value = T::from_raw(raw);
    assert_eq!(value.into_raw(), raw & mask);
    assert_eq!(T::from_raw(value.into_raw()), value);
}

/// A field layout transcribed from an SDM table: (name, low bit, high bit); `None` names the
/// reserved ranges.
type Layout = &'static [(Option<&'static str>, u32, u32)];

/// SDM Vol. 3C, "Format of the Access-Rights Field" (guest-state area).
const AR_LAYOUT: Layout = &[
    (Some("type"), 0, 3),
    (Some("S"), 4, 4),
    (Some("DPL"), 5, 6),
    (Some("P"), 7, 7),
    (None, 8, 11),
    (Some("AVL"), 12, 12),
    (Some("L"), 13, 13),
    (Some("D/B"), 14, 14),
    (Some("G"), 15, 15),
    (Some("unusable"), 16, 16),
    (None, 17, 31),
];

/// SDM Vol. 3C, "Format of the VM-Entry Interruption-Information Field".
const INTERRUPTION_INFO_LAYOUT: Layout = &[
    (Some("vector"), 0, 7),
    (Some("type"), 8, 10),
    (Some("deliver error code"), 11, 11),
    (None, 12, 12),
    // SDM Vol. 3C, "Format of the VM-Entry Interruption-Information Field" (and the VM-exit and
    // IDT-vectoring formats): bit 13 is "nested exception" (VMX nested-exception support).
    (Some("nested exception"), 13, 13),
    (None, 14, 30),
    (Some("valid"), 31, 31),
];

fn mask(low: u32, high: u32) -> u64 {
    ((1u64 << (high - low + 1)) - 1) << low
}

/// The named field of `raw` per `layout`.
fn sdm_field(layout: Layout, raw: u32, name: &str) -> u64 {
    let &(_, low, high) = layout.iter().find(|(n, ..)| *n == Some(name)).unwrap();
    (u64::from(raw) & mask(low, high)) >> low
}

/// The bits of `raw` in the layout's reserved ranges, in place.
fn reserved(layout: Layout, raw: u32) -> u64 {
    layout
        .iter()
        .filter(|(n, ..)| n.is_none())
        .map(|&(_, low, high)| u64::from(raw) & mask(low, high))
        .sum()
}

/// SDM Vol. 3C, "Format of Pending-Debug-Exceptions" (64 bits).
const PENDING_DEBUG_LAYOUT: Layout = &[
    (Some("B3:B0"), 0, 3),
    (None, 4, 11),
    (Some("enabled breakpoint"), 12, 12),
    (None, 13, 13),
    (Some("BS"), 14, 14),
    (None, 15, 15),
    (Some("RTM"), 16, 16),
    (None, 17, 63),
];

#[test]
fn pending_debug_exceptions_follow_the_sdm_layout() {
    let all: u64 = PENDING_DEBUG_LAYOUT
        .iter()
        .map(|&(_, low, high)| mask(low, high))
        .fold(0, |a, m| a | m);
    assert_eq!(all, u64::MAX);
    let reserved: u64 = PENDING_DEBUG_LAYOUT
        .iter()
        .filter(|(n, ..)| n.is_none())
        .map(|&(_, low, high)| mask(low, high))
        .fold(0, |a, m| a | m);
    assert_eq!(PendingDebugExceptions::RESERVED_MASK, reserved);
    let bit = |name| {
        let &(_, low, _) = PENDING_DEBUG_LAYOUT
            .iter()
            .find(|(n, ..)| *n == Some(name))
            .unwrap();
        1u64 << low
    };
    assert_eq!(PendingDebugExceptions::BS.bits(), bit("BS"));
    assert_eq!(PendingDebugExceptions::RTM.bits(), bit("RTM"));
    assert_eq!(
        PendingDebugExceptions::ENABLED_BREAKPOINT.bits(),
        bit("enabled breakpoint")
    );
    let b = PendingDebugExceptions::B0
        | PendingDebugExceptions::B1
        | PendingDebugExceptions::B2
        | PendingDebugExceptions::B3;
    assert_eq!(b.bits(), mask(0, 3));
    assert_eq!(
        (PendingDebugExceptions::BS | PendingDebugExceptions::B0).to_string(),
        "B0 | BS"
    );
    // IA32_DEBUGCTL.BTF is bit 1 (SDM Vol. 3B, "IA32_DEBUGCTL MSR"; Linux DEBUGCTLMSR_BTF).
    assert_eq!(DebugCtl::BTF.bits(), 0b10);
}

#[test]
fn the_layouts_cover_32_bits() {
    for layout in [AR_LAYOUT, INTERRUPTION_INFO_LAYOUT] {
        let all: u64 = layout.iter().map(|&(_, low, high)| mask(low, high)).sum();
        assert_eq!(all, 0xffff_ffff);
    }
}

proptest! {
    #[test]
    fn every_value_type_round_trips(raw in any::<u64>()) {
        round_trip::<u16>(raw);
        round_trip::<u32>(raw);
        round_trip::<u64>(raw);
        round_trip::<SegmentAccessRights>(raw);
        round_trip::<InterruptibilityState>(raw);
        round_trip::<ActivityState>(raw);
        round_trip::<InterruptionInfo>(raw);
        round_trip::<ExceptionBitmap>(raw);
        round_trip::<PendingDebugExceptions>(raw);
        round_trip::<DebugCtl>(raw);
        round_trip::<ept::EptPointer>(raw);
        round_trip::<vmx_caps::PinBasedControls>(raw);
        round_trip::<vmx_caps::PrimaryControls>(raw);
        round_trip::<vmx_caps::SecondaryControls>(raw);
        round_trip::<vmx_caps::TertiaryControls>(raw);
        round_trip::<vmx_caps::ExitControls>(raw);
        round_trip::<vmx_caps::SecondaryExitControls>(raw);
        round_trip::<vmx_caps::EntryControls>(raw);
        round_trip::<vmx_caps::VmFuncControls>(raw);
    }

    #[test]
    fn every_field_displays_any_value(raw in any::<u64>()) {
        for info in &fields::ALL {
            let text = info.display_value(raw & info.width().mask()).to_string();
            prop_assert!(text.starts_with("0x"), "{}: {}", info.name, text);
        }
    }

    #[test]
    fn segment_access_rights_fields_decode_what_the_builder_encodes(
        ty in 0u8..16, s in any::<bool>(), dpl in 0u8..4, p in any::<bool>(),
        l in any::<bool>(), db in any::<bool>(), g in any::<bool>(),
    ) {
        let ar = SegmentAccessRights::from_bits(0)
            .with_type(ty)
            .with_code_or_data(s)
            .with_dpl(dpl)
            .with_present(p)
            .with_long_mode(l)
            .with_default_big(db)
            .with_granularity(g);
        prop_assert_eq!(ar.segment_type(), ty);
        prop_assert_eq!(ar.code_or_data(), s);
        prop_assert_eq!(ar.dpl(), dpl);
        prop_assert_eq!(ar.present(), p);
        prop_assert_eq!(ar.long_mode(), l);
        prop_assert_eq!(ar.default_big(), db);
        prop_assert_eq!(ar.granularity(), g);
        prop_assert!(!ar.unusable() && !ar.available());
        prop_assert_eq!(ar.reserved_bits(), 0);
        prop_assert!(ar.with_unusable(true).unusable());
        prop_assert_eq!(ar.with_unusable(true).with_unusable(false), ar);
    }

    #[test]
    fn segment_access_rights_follow_the_sdm_layout(raw in any::<u32>()) {
        let ar = SegmentAccessRights::from_bits(raw);
        let f = |name| sdm_field(AR_LAYOUT, raw, name);
        prop_assert_eq!(u64::from(ar.segment_type()), f("type"));
        prop_assert_eq!(u64::from(ar.code_or_data()), f("S"));
        prop_assert_eq!(u64::from(ar.dpl()), f("DPL"));
        prop_assert_eq!(u64::from(ar.present()), f("P"));
        prop_assert_eq!(u64::from(ar.available()), f("AVL"));
        prop_assert_eq!(u64::from(ar.long_mode()), f("L"));
        prop_assert_eq!(u64::from(ar.default_big()), f("D/B"));
        prop_assert_eq!(u64::from(ar.granularity()), f("G"));
        prop_assert_eq!(u64::from(ar.unusable()), f("unusable"));
        prop_assert_eq!(u64::from(ar.reserved_bits()), reserved(AR_LAYOUT, raw));
    }

    #[test]
    fn entry_interruption_info_decodes_what_new_encodes(vector in any::<u8>(), kind in 0u8..8, code in any::<bool>()) {
        let kind = InterruptionType::from_raw(kind);
        let info = InterruptionInfo::new(vector, kind, code);
        prop_assert!(info.valid());
        prop_assert_eq!(info.vector(), vector);
        prop_assert_eq!(info.interruption_type(), kind);
        prop_assert_eq!(info.error_code(), code);
        prop_assert_eq!(info.reserved_bits(), 0);
    }

    #[test]
    fn entry_interruption_info_follows_the_sdm_layout(raw in any::<u32>()) {
        let info = InterruptionInfo::from_bits(raw);
        let f = |name| sdm_field(INTERRUPTION_INFO_LAYOUT, raw, name);
        prop_assert_eq!(u64::from(info.vector()), f("vector"));
        prop_assert_eq!(u64::from(info.interruption_type().raw()), f("type"));
        prop_assert_eq!(u64::from(info.error_code()), f("deliver error code"));
        prop_assert_eq!(u64::from(info.valid()), f("valid"));
        prop_assert_eq!(u64::from(info.nested_exception()), f("nested exception"));
        prop_assert_eq!(info.with_nested_exception(info.nested_exception()), info);
        prop_assert_eq!(u64::from(info.reserved_bits()), reserved(INTERRUPTION_INFO_LAYOUT, raw));
        prop_assert!(!info.to_string().is_empty());
        let debug = format!("{info:?}");
        prop_assert!(!debug.is_empty());
    }

    #[test]
    fn activity_state_is_total(raw in any::<u32>()) {
        let state = ActivityState::from_raw(raw);
        prop_assert_eq!(state.raw(), raw);
        prop_assert_eq!(matches!(state, ActivityState::Unknown(_)), raw > 3);
        prop_assert!(!state.to_string().is_empty());
    }

    #[test]
    fn exception_bitmap_vectors(vector in any::<u8>()) {
        match ExceptionBitmap::vector(vector) {
            Some(bit) => {
                prop_assert!(vector < 32);
                prop_assert!(bit.intercepts(vector));
                prop_assert_eq!(bit.bits().count_ones(), 1);
            }
            None => prop_assert!(vector >= 32 && !ExceptionBitmap::all().intercepts(vector)),
        }
    }
}

#[test]
fn named_bits_are_the_sdm_ones() {
    assert_eq!(ExceptionBitmap::PAGE_FAULT.bits(), 1 << 14);
    assert_eq!(ExceptionBitmap::VIRTUALIZATION_EXCEPTION.bits(), 1 << 20);
    assert_eq!(ExceptionBitmap::CONTROL_PROTECTION.bits(), 1 << 21);
    assert_eq!(InterruptibilityState::BLOCKING_BY_NMI.bits(), 8);
    assert_eq!(InterruptibilityState::ENCLAVE_INTERRUPTION.bits(), 16);
    // A 64-bit code segment as Linux loads it: 0xa09b.
    let cs = SegmentAccessRights::from_bits(0xa09b);
    assert_eq!(cs, SegmentAccessRights::CODE_64);
    assert_eq!(cs.to_string(), "type=0xb code/data dpl=0 P L G");
    assert_eq!(
        SegmentAccessRights::UNUSABLE_SEGMENT.to_string(),
        "unusable"
    );
    // The presets, against the encodings Linux, Bochs' reset state and the SDM's Table 10-1 use.
    for (preset, raw) in [
        (SegmentAccessRights::CODE_32, 0xc09b),
        (SegmentAccessRights::DATA_32, 0xc093),
        (SegmentAccessRights::CODE_16, 0x9b),
        (SegmentAccessRights::DATA_16, 0x93),
        (SegmentAccessRights::TSS_BUSY, 0x8b),
        (SegmentAccessRights::LDT, 0x82),
    ] {
        assert_eq!(preset.bits(), raw, "{preset}");
    }
    assert_eq!(
        SegmentAccessRights::code()
            .with_dpl(3)
            .with_long_mode(true)
            .bits(),
        0x20fb
    );
    // #PF with error code, as a hypervisor injects it.
    let pf = InterruptionInfo::new(14, InterruptionType::HardwareException, true);
    assert_eq!(pf.bits(), 0x8000_0b0e);
    assert_eq!(
        pf.to_string(),
        "hardware exception vector 14 with error code"
    );
    assert_eq!(InterruptionInfo::NONE.to_string(), "invalid");
    assert_eq!(ActivityState::from_raw(3), ActivityState::WaitForSipi);
    assert_eq!(ActivityState::from_raw(9).to_string(), "reserved (9)");
    let info = fields::by_name("GUEST_INTERRUPTIBILITY_STATE").unwrap();
    assert_eq!(
        info.display_value(0x9).to_string(),
        "0x9 (BLOCKING_BY_STI | BLOCKING_BY_NMI)"
    );
    let info = fields::by_name("PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS").unwrap();
    assert_eq!(info.display_value(0x80).to_string(), "0x80 (HLT_EXITING)");
    let info = fields::by_name("EPT_POINTER").unwrap();
    assert_eq!(
        info.display_value(0x1234_505e).to_string(),
        "0x1234505e (root 0x12345000, WB, 4-level walk, A/D)"
    );
    let info = fields::by_name("GUEST_RIP").unwrap();
    assert_eq!(info.display_value(0xfff0).to_string(), "0xfff0");
}
