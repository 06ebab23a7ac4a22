//! Property tests of the decoders: every value decodes without panicking, and encoding what was
//! decoded gives the value back.

use ept::{
    EntryKind, EptPointer, GuestPhysAddr, HostPhysAddr, LeafAttributes, LeafFlags, MemoryType,
    PageSize, PdEntry, PdptEntry, Permissions, Pml4Entry, PtEntry, WalkLength,
};
use proptest::prelude::*;
use vmx_caps::EptVpidCap;

fn memory_type() -> impl Strategy<Value = MemoryType> {
    prop_oneof![
        Just(MemoryType::Uncacheable),
        Just(MemoryType::WriteCombining),
        Just(MemoryType::WriteThrough),
        Just(MemoryType::WriteProtected),
        Just(MemoryType::WriteBack),
    ]
}

fn attributes() -> impl Strategy<Value = LeafAttributes> {
    (0u8..16, memory_type(), any::<u64>()).prop_map(|(p, mt, f)| LeafAttributes {
        permissions: Permissions::from_bits_truncate(p),
        memory_type: mt,
        flags: LeafFlags::from_bits_truncate(f),
    })
}

proptest! {
    #[test]
    fn eptp_decodes_every_value(bits in any::<u64>()) {
        let e = EptPointer::from_bits(bits);
        prop_assert_eq!(e.bits(), bits);
        prop_assert_eq!(e.memory_type().map(|m| m.bits() as u64).unwrap_or_else(|r| r.0 as u64), bits & 7);
        prop_assert_eq!(e.walk_length_raw() as u64, ((bits >> 3) & 7) + 1);
        prop_assert_eq!(e.accessed_dirty_enabled(), bits & 0x40 != 0);
        prop_assert_eq!(e.supervisor_shadow_stack_enabled(), bits & 0x80 != 0);
        prop_assert_eq!(e.pml4_address().as_u64(), bits & 0x000f_ffff_ffff_f000);
        let _ = format!("{e:?}");
    }

    #[test]
    fn eptp_builder_round_trips(root in 0u64..(1 << 40), wb in any::<bool>(), five in any::<bool>(), ad in any::<bool>(), sss in any::<bool>()) {
        // A processor that allows everything.
        let caps = EptVpidCap((1 << 6) | (1 << 7) | (1 << 8) | (1 << 14) | (1 << 21) | (1 << 23));
        let mt = if wb { MemoryType::WriteBack } else { MemoryType::Uncacheable };
        let walk = if five { WalkLength::Five } else { WalkLength::Four };
        let e = EptPointer::builder(HostPhysAddr::new(root << 12).unwrap())
            .memory_type(mt).walk_length(walk).accessed_dirty(ad).supervisor_shadow_stack(sss)
            .build(&caps).unwrap();
        prop_assert_eq!(e.memory_type(), Ok(mt));
        prop_assert_eq!(e.walk_length(), Ok(walk));
        prop_assert_eq!((e.accessed_dirty_enabled(), e.supervisor_shadow_stack_enabled()), (ad, sss));
        prop_assert_eq!(e.pml4_address().as_u64(), root << 12);
        prop_assert_eq!(e.reserved_bits(52), 0);
    }

    #[test]
    fn entries_decode_every_value(bits in any::<u64>(), width in 12u8..=52) {
        let pt = PtEntry::from_bits(bits);
        prop_assert_eq!(pt.bits(), bits);
        prop_assert_eq!(pt.permissions().to_entry_bits(), bits & 0x407);
        prop_assert_eq!(pt.memory_type().map(|m| m.bits()).unwrap_or_else(|r| r.0) as u64, (bits >> 3) & 7);
        prop_assert_eq!(pt.sub_page_write(), bits >> 61 & 1 == 1);
        prop_assert_eq!(pt.suppress_ve(), bits >> 63 == 1);
        let pd = PdEntry::from_bits(bits);
        match pd.kind() {
            EntryKind::NotPresent => prop_assert_eq!(bits & 7, 0),
            EntryKind::Page(a, size) => {
                prop_assert_eq!(size, PageSize::Size2M);
                prop_assert_eq!(a.as_u64(), bits & 0x000f_ffff_ffe0_0000);
            }
            EntryKind::Table(a) => prop_assert_eq!(a.as_u64(), bits & 0x000f_ffff_ffff_f000),
        }
        let pdpt = PdptEntry::from_bits(bits);
        if let EntryKind::Page(a, size) = pdpt.kind() {
            prop_assert_eq!(size, PageSize::Size1G);
            prop_assert_eq!(a.as_u64() & 0x3fff_ffff, 0);
        }
        // Reserved bits are a subset of the entry and never include the flags bits 0-2.
        for r in [pt.reserved_bits(width), pd.reserved_bits(width), pdpt.reserved_bits(width), Pml4Entry::from_bits(bits).reserved_bits(width)] {
            prop_assert_eq!(r & !bits, 0);
            prop_assert_eq!(r & 7, 0);
        }
    }

    #[test]
    fn leaf_attributes_round_trip(a in attributes(), page in 0u64..(1 << 30)) {
        let pte = PtEntry::page_4k(HostPhysAddr::new(page << 12).unwrap(), a);
        prop_assert_eq!(pte.leaf_attributes(), Ok(a));
        prop_assert_eq!(pte.address().as_u64(), page << 12);
        let pde = PdEntry::page_2m(HostPhysAddr::new((page >> 9) << 21).unwrap(), a);
        prop_assert_eq!(pde.leaf_attributes(), Ok(a));
        prop_assert!(pde.is_page());
        prop_assert_eq!(pde.reserved_bits(52), 0);
        let pdpte = PdptEntry::page_1g(HostPhysAddr::new((page >> 18) << 30).unwrap(), a);
        prop_assert_eq!(pdpte.leaf_attributes(), Ok(a));
        prop_assert_eq!(pdpte.reserved_bits(52), 0);
    }

    #[test]
    fn addresses_check_width(addr in any::<u64>(), width in 0u8..=64) {
        let r = GuestPhysAddr::new(addr);
        prop_assert_eq!(r.is_ok(), addr < 1 << 52);
        let w = width.min(52);
        prop_assert_eq!(HostPhysAddr::new_with_width(addr, width).is_ok(), addr >> w == 0);
    }
}
