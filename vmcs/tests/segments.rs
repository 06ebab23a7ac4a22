//! The typed guest-segment API against the field table and the software VMCS.

use proptest::prelude::*;
use vmcs::{
    DescriptorTable, GuestDescriptorTable, GuestSegment, Segment, SegmentAccessRights, SoftVmcs,
    VmcsRead, VmcsWrite, fields,
};
use vmx_core::{VmFail, VmInstructionError};

/// Each register's four encodings are the fields the SDM's Appendix B names "Guest <reg>
/// selector", "Guest <reg> base", "Guest <reg> limit" and "Guest <reg> access rights".
#[test]
fn segment_encodings_are_the_sdm_fields() {
    for seg in GuestSegment::ALL {
        let name = seg.name();
        let expect = [
            (
                seg.selector_field().encoding(),
                format!("Guest {name} selector"),
            ),
            (seg.base_field().encoding(), format!("Guest {name} base")),
            (seg.limit_field().encoding(), format!("Guest {name} limit")),
            (
                seg.access_rights_field().encoding(),
                format!("Guest {name} access rights"),
            ),
        ];
        for (encoding, sdm_name) in expect {
            let info = fields::by_encoding(encoding)
                .unwrap_or_else(|| panic!("{seg}: {encoding:#x} is not in the field table"));
            assert_eq!(info.sdm_name, sdm_name, "{seg}: encoding {encoding:#x}");
        }
    }
    for table in GuestDescriptorTable::ALL {
        let name = table.name();
        let base = fields::by_encoding(table.base_field().encoding()).unwrap();
        let limit = fields::by_encoding(table.limit_field().encoding()).unwrap();
        assert_eq!(base.sdm_name, format!("Guest {name} base"));
        assert_eq!(limit.sdm_name, format!("Guest {name} limit"));
    }
}

/// The SDM's encodings (Appendix B.1.2, B.3.3, B.4.3), written out here as an outside check:
/// selectors 0x0800 + 2i, limits 0x4800 + 2i, access rights 0x4814 + 2i, bases 0x6806 + 2i.
#[test]
fn segment_encodings_follow_appendix_b_order() {
    for (i, seg) in GuestSegment::ALL.into_iter().enumerate() {
        let step = 2 * i as u32;
        assert_eq!(seg.selector_field().encoding(), 0x0800 + step, "{seg}");
        assert_eq!(seg.limit_field().encoding(), 0x4800 + step, "{seg}");
        assert_eq!(seg.access_rights_field().encoding(), 0x4814 + step, "{seg}");
        assert_eq!(seg.base_field().encoding(), 0x6806 + step, "{seg}");
    }
    assert_eq!(GuestDescriptorTable::Gdtr.base_field().encoding(), 0x6816);
    assert_eq!(GuestDescriptorTable::Gdtr.limit_field().encoding(), 0x4810);
    assert_eq!(GuestDescriptorTable::Idtr.base_field().encoding(), 0x6818);
    assert_eq!(GuestDescriptorTable::Idtr.limit_field().encoding(), 0x4812);
}

/// Writing one register touches its four fields and no other register's.
#[test]
fn write_touches_only_its_register() {
    for target in GuestSegment::ALL {
        let mut vmcs = SoftVmcs::all_fields();
        let value = Segment {
            selector: 0x1234,
            base: 0xffff_8000_0000_1000,
            limit: 0xfffff,
            access_rights: SegmentAccessRights::from_bits(0xc093),
        };
        vmcs.write_guest_segment(target, value).unwrap();
        assert_eq!(
            vmcs.read_raw(target.selector_field().encoding()),
            Ok(0x1234)
        );
        assert_eq!(
            vmcs.read_raw(target.base_field().encoding()),
            Ok(0xffff_8000_0000_1000)
        );
        assert_eq!(vmcs.read_raw(target.limit_field().encoding()), Ok(0xfffff));
        assert_eq!(
            vmcs.read_raw(target.access_rights_field().encoding()),
            Ok(0xc093)
        );
        for other in GuestSegment::ALL.into_iter().filter(|&s| s != target) {
            let zero = Segment {
                selector: 0,
                base: 0,
                limit: 0,
                access_rights: SegmentAccessRights::from_bits(0),
            };
            assert_eq!(
                vmcs.read_guest_segment(other),
                Ok(zero),
                "{target} wrote {other}"
            );
        }
    }
}

#[test]
fn unusable_segment_value() {
    let mut vmcs = SoftVmcs::all_fields();
    vmcs.write_guest_segment(GuestSegment::Ldtr, Segment::UNUSABLE)
        .unwrap();
    assert_eq!(
        vmcs.read(fields::GUEST_LDTR_ACCESS_RIGHTS),
        Ok(SegmentAccessRights::UNUSABLE_SEGMENT)
    );
    assert!(
        vmcs.read(fields::GUEST_LDTR_ACCESS_RIGHTS)
            .unwrap()
            .unusable()
    );
}

/// A VMCS without the segment fields fails the way VMREAD/VMWRITE does (error 12).
#[test]
fn unsupported_fields_fail() {
    let mut vmcs = SoftVmcs::with_limits(0, false);
    let unsupported = Err(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent));
    assert_eq!(
        vmcs.write_guest_segment(GuestSegment::Tr, Segment::UNUSABLE),
        unsupported
    );
    assert_eq!(
        vmcs.read_guest_segment(GuestSegment::Tr),
        unsupported.map(|()| Segment::UNUSABLE)
    );
}

fn any_segment() -> impl Strategy<Value = GuestSegment> {
    proptest::sample::select(GuestSegment::ALL.to_vec())
}

proptest! {
    /// Every register round-trips any value the fields can hold.
    #[test]
    fn segment_round_trip(seg in any_segment(), selector: u16, base: u64, limit: u32, ar: u32) {
        let mut vmcs = SoftVmcs::all_fields();
        let value = Segment {
            selector,
            base,
            limit,
            access_rights: SegmentAccessRights::from_bits(ar),
        };
        vmcs.write_guest_segment(seg, value).unwrap();
        prop_assert_eq!(vmcs.read_guest_segment(seg), Ok(value));
    }

    /// GDTR and IDTR round-trip, each without touching the other.
    #[test]
    fn descriptor_table_round_trip(base: u64, limit: u32) {
        for table in GuestDescriptorTable::ALL {
            let mut vmcs = SoftVmcs::all_fields();
            let value = DescriptorTable { base, limit };
            vmcs.write_guest_descriptor_table(table, value).unwrap();
            prop_assert_eq!(vmcs.read_guest_descriptor_table(table), Ok(value));
            for other in GuestDescriptorTable::ALL.into_iter().filter(|&t| t != table) {
                prop_assert_eq!(
                    vmcs.read_guest_descriptor_table(other),
                    Ok(DescriptorTable { base: 0, limit: 0 })
                );
            }
        }
    }
}
