//! Hostile JSON for the serde forms of the crate's types (feature `serde`): random JSON
//! documents and the serialized forms of real values with one or more nodes replaced give an
//! error or a value that keeps the type's invariants and serializes back to what it decodes
//! from; never a panic.
#![cfg(feature = "serde")]

mod hostile_cases;
mod serde_campaign;

use hostile_cases::cases;
use proptest::prelude::*;
use serde_campaign::Campaign;
use vmcs_fields::{
    ActivityState, EptPointer, ExceptionBitmap, FieldType, FieldWidth, GuestPhysAddr, HostPhysAddr,
    InterruptibilityState, InterruptionInfo, InterruptionType, MemoryType, SegmentAccessRights,
    SystemSegmentType, WalkLength,
};

/// Regression: the addresses deserialized any 64-bit number, so a JSON document could make a
/// `GuestPhysAddr` beyond the 52 bits every constructor enforces.
#[test]
fn addresses_beyond_52_bits_are_refused() {
    for text in ["4503599627370496", "18446744073709551615"] {
        assert!(
            serde_json::from_str::<GuestPhysAddr>(text).is_err(),
            "{text}"
        );
        assert!(
            serde_json::from_str::<HostPhysAddr>(text).is_err(),
            "{text}"
        );
    }
    let top = serde_json::from_str::<GuestPhysAddr>("4503599627370495").unwrap();
    assert_eq!(top.as_u64(), (1 << 52) - 1);
    assert_eq!(serde_json::to_string(&top).unwrap(), "4503599627370495");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn hostile_json(c in Campaign::strategy()) {
        c.run(&[GuestPhysAddr::new(0x1234).unwrap(), GuestPhysAddr::new((1 << 52) - 1).unwrap()],
            |a| a.as_u64() >> 52 == 0)?;
        c.run(&[HostPhysAddr::new(0x20_0000).unwrap()], |a| a.as_u64() >> 52 == 0)?;
        c.run(&[EptPointer::from_bits(0x10_005e)], |_| true)?;
        c.run(&[InterruptionInfo::new(14, InterruptionType::HardwareException, true)], |_| true)?;
        c.run(&[SegmentAccessRights::code()], |_| true)?;
        c.run(&[SystemSegmentType(11)], |_| true)?;
        c.run(&[ActivityState::Hlt, ActivityState::WaitForSipi], |_| true)?;
        c.run(&[InterruptionType::Nmi], |_| true)?;
        c.run(&[ExceptionBitmap::PAGE_FAULT], |_| true)?;
        c.run(&[InterruptibilityState::BLOCKING_BY_STI], |_| true)?;
        c.run(&[MemoryType::WriteBack], |_| true)?;
        c.run(&[WalkLength::Four], |_| true)?;
        c.run(&[FieldWidth::Natural], |_| true)?;
        c.run(&[FieldType::GuestState], |_| true)?;
    }
}
