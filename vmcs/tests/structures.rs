//! The structures a VMCS points to, against the SDM's layouts (offsets and bit positions taken
//! from the SDM's text and tables, not from the code), with property tests of the bitmaps and
//! vector sets against plain models, and concurrent posting to a posted-interrupt descriptor.

use std::collections::BTreeSet;
use std::sync::Arc;

use ept::EptPointer;
use proptest::prelude::*;
use vmcs::structures::{
    ApicRegister, EptpList, GuestInterruptStatus, InFrame, IoBitmapError, IoBitmaps, MsrAccess,
    MsrArea, MsrAreaError, MsrAreaKind, MsrBitmap, MsrBitmapError, MsrEntry, PmlLog, PostOutcome,
    PostedInterruptDescriptor, ShadowBitmap, ShadowBitmapError, StructureError, VeInformation,
    VeInformationArea, VectorSet, VirtualApicPage, read_eoi_exit_bitmap, write_eoi_exit_bitmap,
    write_msr_areas,
};
use vmcs::{SoftVmcs, VmcsRead, fields};
use vmx_caps::{MsrSnapshot, VmxCapabilities, VmxMisc};

fn identity(p: *const u8) -> Option<u64> {
    Some(p as u64)
}

fn caps(name: &str) -> VmxCapabilities {
    let path = format!(
        "{}/../vmx-caps/testdata/{name}.msr",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut msrs = MsrSnapshot::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap()
}

/// The byte at `offset` of any structure, as the processor would read it.
fn byte_at<T>(value: &T, offset: usize) -> u8 {
    assert!(offset < std::mem::size_of::<T>());
    // SAFETY: inside `value` (asserted); every structure is plain integers.
    unsafe { *std::ptr::from_ref(value).cast::<u8>().add(offset) }
}

fn u32_at<T>(value: &T, offset: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|i| byte_at(value, offset + i)))
}

fn u64_at<T>(value: &T, offset: usize) -> u64 {
    u64::from_le_bytes(std::array::from_fn(|i| byte_at(value, offset + i)))
}

// ---- MSR bitmap (SDM 25.6.9) ----

#[test]
fn msr_bitmap_positions_follow_the_sdm_quarters() {
    // Write of IA32_EFER (C0000080H): write-high quarter at 3072, byte 3072 + 0x80/8, bit 0.
    assert_eq!(
        MsrBitmap::bit_position(0xc000_0080, MsrAccess::Write),
        Ok((3088, 0))
    );
    // Read of IA32_TIME_STAMP_COUNTER (10H): read-low at 0, byte 2, bit 0.
    assert_eq!(MsrBitmap::bit_position(0x10, MsrAccess::Read), Ok((2, 0)));
    // Read of IA32_FS_BASE (C0000100H): read-high at 1024, byte 1024 + 0x100/8.
    assert_eq!(
        MsrBitmap::bit_position(0xc000_0100, MsrAccess::Read),
        Ok((1056, 0))
    );
    // Write of 1FFFH: last bit of the write-low quarter.
    assert_eq!(
        MsrBitmap::bit_position(0x1fff, MsrAccess::Write),
        Ok((3071, 7))
    );
    // Write of IA32_SYSENTER_CS (174H): byte 2048 + 0x2e, bit 4.
    assert_eq!(
        MsrBitmap::bit_position(0x174, MsrAccess::Write),
        Ok((2094, 4))
    );

    let mut bitmap = Box::new(MsrBitmap::pass_all());
    bitmap.intercept(0xc000_0080, MsrAccess::Write).unwrap();
    assert_eq!(bitmap.as_bytes()[3088], 1);
    assert_eq!(
        bitmap
            .as_bytes()
            .iter()
            .map(|b| b.count_ones())
            .sum::<u32>(),
        1
    );
    assert!(bitmap.exits(0xc000_0080, MsrAccess::Write));
    assert!(!bitmap.exits(0xc000_0080, MsrAccess::Read));
}

#[test]
fn msrs_outside_the_ranges_are_errors_and_always_exit() {
    let mut bitmap = Box::new(MsrBitmap::pass_all());
    for msr in [0x2000, 0x4000_0000, 0xbfff_ffff, 0xc000_2000, u32::MAX] {
        for access in [MsrAccess::Read, MsrAccess::Write] {
            assert_eq!(
                bitmap.pass_through(msr, access),
                Err(MsrBitmapError::OutOfRange(msr))
            );
            assert!(bitmap.exits(msr, access), "{msr:#x} must exit");
        }
    }
    assert!(bitmap.as_bytes().iter().all(|&b| b == 0));
    for bad in [
        0x1ff0..=0x2000,
        0x10..=0xc000_0001,
        std::ops::RangeInclusive::new(0x20, 0x10),
        0xc000_1fff..=0xc000_2000,
    ] {
        assert!(matches!(
            bitmap.set_range(bad, MsrAccess::Read, true),
            Err(MsrBitmapError::BadRange { .. })
        ));
    }
    assert!(bitmap.as_bytes().iter().all(|&b| b == 0));
}

#[test]
fn msr_bitmap_range_sets_exactly_its_bits() {
    let mut bitmap = Box::new(MsrBitmap::pass_all());
    bitmap
        .set_range(0xc000_0003..=0xc000_0011, MsrAccess::Read, true)
        .unwrap();
    for msr in 0xc000_0000..0xc000_0020u32 {
        assert_eq!(
            bitmap.exits(msr, MsrAccess::Read),
            (3..=0x11).contains(&(msr - 0xc000_0000))
        );
        assert!(!bitmap.exits(msr, MsrAccess::Write));
    }
    // Bits 3..=17 of the read-high quarter: byte 1024 = 0xf8, 1025 = 0xff, 1026 = 0x03.
    assert_eq!(&bitmap.as_bytes()[1024..1027], &[0xf8, 0xff, 0x03]);
}

#[test]
fn msr_bitmap_goes_into_its_field() {
    let bitmap = Box::new(MsrBitmap::intercept_all());
    let mut vmcs = SoftVmcs::all_fields();
    bitmap.write_to(&mut vmcs, &identity).unwrap();
    assert_eq!(
        vmcs.read(fields::ADDRESS_OF_MSR_BITMAPS).unwrap(),
        std::ptr::from_ref(&*bitmap) as u64
    );
    let err = bitmap
        .write_to(&mut vmcs, &|p: *const u8| Some(p as u64 + 8))
        .unwrap_err();
    assert!(matches!(
        err,
        StructureError::Misaligned { align: 4096, .. }
    ));
    let err = bitmap
        .write_to(&mut vmcs, &|_: *const u8| None)
        .unwrap_err();
    assert!(matches!(err, StructureError::Unmapped { .. }));
}

fn covered_msr() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..0x2000, 0xc000_0000u32..0xc000_2000]
}

fn access() -> impl Strategy<Value = MsrAccess> {
    prop_oneof![Just(MsrAccess::Read), Just(MsrAccess::Write)]
}

proptest! {
    #[test]
    fn msr_bitmap_matches_a_set_model(ops in prop::collection::vec((covered_msr(), access(), any::<bool>()), 1..64),
                                      probes in prop::collection::vec((any::<u32>(), access()), 32)) {
        let mut bitmap = Box::new(MsrBitmap::pass_all());
        let mut model = BTreeSet::new();
        for &(msr, a, intercept) in &ops {
            bitmap.set(msr, a, intercept).unwrap();
            if intercept { model.insert((msr, a == MsrAccess::Write)); } else { model.remove(&(msr, a == MsrAccess::Write)); }
        }
        for (msr, a) in ops.iter().map(|&(m, a, _)| (m, a)).chain(probes) {
            let covered = msr < 0x2000 || (0xc000_0000..0xc000_2000).contains(&msr);
            let expected = !covered || model.contains(&(msr, a == MsrAccess::Write));
            prop_assert_eq!(bitmap.exits(msr, a), expected);
            if covered {
                let (byte, bit) = MsrBitmap::bit_position(msr, a).unwrap();
                prop_assert_eq!(bitmap.as_bytes()[byte] >> bit & 1 == 1, expected);
            }
        }
        let set: u32 = bitmap.as_bytes().iter().map(|b| b.count_ones()).sum();
        prop_assert_eq!(set as usize, model.len());
    }
}

// ---- I/O bitmaps (SDM 25.6.4, 26.1.3) ----

#[test]
fn io_bitmap_positions() {
    assert_eq!(IoBitmaps::bit_position(0x8000), (1, 0, 0));
    assert_eq!(IoBitmaps::bit_position(0x7fff), (0, 0xfff, 7));
    assert_eq!(IoBitmaps::bit_position(0x3f8), (0, 0x7f, 0));
    assert_eq!(IoBitmaps::bit_position(0xffff), (1, 0xfff, 7));
    let mut io = Box::new(IoBitmaps::pass_all());
    io.intercept(0x8000);
    io.intercept(0x3f9);
    assert_eq!(io.bitmap_b()[0], 1);
    assert_eq!(io.bitmap_a()[0x7f], 2);
    // In memory, B follows A at byte 4096.
    assert_eq!(byte_at(&*io, 4096), 1);
    assert_eq!(byte_at(&*io, 0x7f), 2);
}

#[test]
fn io_accesses_straddling_and_wrapping() {
    let mut io = Box::new(IoBitmaps::pass_all());
    // Nothing intercepted: only wrapping accesses exit.
    assert!(!io.exits(0xfffc, 4).unwrap());
    assert!(io.exits(0xfffd, 4).unwrap());
    assert!(io.exits(0xffff, 2).unwrap());
    assert!(!io.exits(0xffff, 1).unwrap());
    assert_eq!(io.exits(0x60, 3), Err(IoBitmapError::BadSize(3)));
    assert_eq!(io.exits(0x60, 0), Err(IoBitmapError::BadSize(0)));
    // A 4-byte access at 7FFEH reads bits 7FFEH, 7FFFH of A and 0, 1 of B.
    io.intercept(0x8001);
    assert!(io.exits(0x7ffe, 4).unwrap());
    assert!(!io.exits(0x7ffe, 2).unwrap());
    io.pass_through(0x8001);
    io.intercept(0x7fff);
    assert!(io.exits(0x7ffd, 4).unwrap());
    assert!(io.exits(0x7fff, 1).unwrap());
    assert!(!io.exits(0x8000, 4).unwrap());
}

#[test]
fn io_range_crosses_from_a_into_b() {
    let mut io = Box::new(IoBitmaps::pass_all());
    io.set_range(0x7ff4..=0x800b, true).unwrap();
    assert_eq!(&io.bitmap_a()[0xffe..], &[0xf0, 0xff]);
    assert_eq!(&io.bitmap_b()[..2], &[0xff, 0x0f]);
    assert_eq!(
        io.set_range(std::ops::RangeInclusive::new(0x10, 0x0f), true),
        Err(IoBitmapError::EmptyRange {
            first: 0x10,
            last: 0x0f
        })
    );
    let mut vmcs = SoftVmcs::all_fields();
    io.write_to(&mut vmcs, &identity).unwrap();
    let base = std::ptr::from_ref(&*io) as u64;
    assert_eq!(vmcs.read(fields::ADDRESS_OF_IO_BITMAP_A).unwrap(), base);
    assert_eq!(
        vmcs.read(fields::ADDRESS_OF_IO_BITMAP_B).unwrap(),
        base + 4096
    );
}

proptest! {
    #[test]
    fn io_exits_match_a_port_model(ports in prop::collection::btree_set(any::<u16>(), 0..32),
                                   probes in prop::collection::vec((any::<u16>(), prop_oneof![Just(1u8), Just(2), Just(4)]), 64),
                                   range in (any::<u16>(), 0u16..64)) {
        let mut io = Box::new(IoBitmaps::pass_all());
        let mut model = ports.clone();
        for &p in &ports { io.intercept(p); }
        let (start, len) = range;
        let end = start.saturating_add(len);
        io.set_range(start..=end, true).unwrap();
        model.extend(start..=end);
        let near = ports.iter().flat_map(|&p| [(p, 1), (p.wrapping_sub(1), 2), (p.wrapping_sub(3), 4)]);
        for (port, size) in probes.into_iter().chain(near) {
            let last = u32::from(port) + u32::from(size) - 1;
            let expected = last > 0xffff || (u32::from(port)..=last).any(|q| model.contains(&(q as u16)));
            prop_assert_eq!(io.exits(port, size).unwrap(), expected, "port {:#x} size {}", port, size);
        }
    }
}

// ---- VMREAD/VMWRITE bitmaps (SDM 25.6.15) ----

#[test]
fn shadow_bitmap_bits_are_encoding_bits_14_0() {
    // GUEST_RIP 681EH: byte 0xd03, bit 6. GUEST_ES_SELECTOR 0800H: byte 0x100, bit 0.
    assert_eq!(ShadowBitmap::bit_position(fields::GUEST_RIP), (0xd03, 6));
    assert_eq!(
        ShadowBitmap::bit_position(fields::GUEST_ES_SELECTOR),
        (0x100, 0)
    );
    assert_eq!(
        ShadowBitmap::bit_position(fields::GUEST_IA32_EFER.high()),
        (0x500, 7)
    );
    let mut reads = Box::new(ShadowBitmap::pass_all());
    reads.intercept(fields::GUEST_RIP);
    assert_eq!(reads.as_bytes()[0xd03], 1 << 6);
    assert!(reads.exits(fields::GUEST_RIP));
    assert!(reads.exits_raw(0x681e));
    assert!(!reads.exits(fields::GUEST_RSP));
    assert!(reads.exits_raw(0x8000)); // bit 15: always
    assert!(reads.exits_raw(1 << 40));
    assert_eq!(
        reads.set_raw(0x1_0000, false),
        Err(ShadowBitmapError::EncodingTooWide(0x1_0000))
    );
    let mut vmcs = SoftVmcs::all_fields();
    reads.write_as_vmread_bitmap(&mut vmcs, &identity).unwrap();
    let writes = Box::new(ShadowBitmap::intercept_all());
    writes
        .write_as_vmwrite_bitmap(&mut vmcs, &identity)
        .unwrap();
    assert_eq!(
        vmcs.read(fields::VMREAD_BITMAP_ADDRESS).unwrap(),
        std::ptr::from_ref(&*reads) as u64
    );
    assert_eq!(
        vmcs.read(fields::VMWRITE_BITMAP_ADDRESS).unwrap(),
        std::ptr::from_ref(&*writes) as u64
    );
}

#[test]
fn every_field_of_the_table_has_its_own_bit() {
    let mut bitmap = Box::new(ShadowBitmap::pass_all());
    for info in fields::ALL.iter() {
        assert!(!bitmap.exits_raw(u64::from(info.encoding)), "{}", info.name);
        bitmap.set_raw(u64::from(info.encoding), true).unwrap();
        assert!(bitmap.exits_raw(u64::from(info.encoding)));
    }
    let set: u32 = bitmap.as_bytes().iter().map(|b| b.count_ones()).sum();
    assert_eq!(set as usize, fields::ALL.len());
}

proptest! {
    #[test]
    fn shadow_bitmap_raw_model(ops in prop::collection::vec((any::<u64>(), any::<bool>()), 1..64)) {
        let mut bitmap = Box::new(ShadowBitmap::pass_all());
        let mut model = BTreeSet::new();
        for &(encoding, intercept) in &ops {
            let encoding = if encoding % 4 == 0 { encoding } else { encoding & 0x7fff };
            let result = bitmap.set_raw(encoding, intercept);
            if encoding >> 15 != 0 {
                prop_assert_eq!(result, Err(ShadowBitmapError::EncodingTooWide(encoding)));
                prop_assert!(bitmap.exits_raw(encoding));
            } else {
                prop_assert!(result.is_ok());
                if intercept { model.insert(encoding); } else { model.remove(&encoding); }
            }
        }
        for &(encoding, _) in &ops {
            let e = encoding & 0x7fff;
            prop_assert_eq!(bitmap.exits_raw(e), model.contains(&e));
        }
    }
}

// ---- MSR areas (SDM 25.7.2, 25.8.2, Table 25-15) ----

#[test]
fn msr_entries_are_laid_out_as_the_sdm_says() {
    let mut area = Box::new(MsrArea::<4>::new());
    assert_eq!(std::mem::align_of::<MsrArea<4>>(), 16);
    area.push(MsrEntry {
        index: 0xc000_0102,
        data: 0x1122_3344_5566_7788,
    })
    .unwrap();
    area.push(MsrEntry {
        index: 0x174,
        data: 8,
    })
    .unwrap();
    assert_eq!(u32_at(&*area, 0), 0xc000_0102);
    assert_eq!(u32_at(&*area, 4), 0);
    assert_eq!(u64_at(&*area, 8), 0x1122_3344_5566_7788);
    assert_eq!(u32_at(&*area, 16), 0x174);
    assert_eq!(u64_at(&*area, 24), 8);
    // The processor stores into the data field of an MSR-store area.
    assert!(area.set_data(1, 0x10));
    assert_eq!(area.data_of(0x174), Some(0x10));
    assert!(!area.set_data(2, 0));
    let bytes = area.entry_bytes(0).unwrap();
    assert_eq!(MsrEntry::from_le_bytes(bytes), (area.get(0).unwrap(), 0));
    assert!(area.set(
        0,
        MsrEntry {
            index: 0x277,
            data: 6
        }
    ));
    assert_eq!(u32_at(&*area, 0), 0x277);
    assert_eq!(u64_at(&*area, 8), 6);
    assert!(!area.set(2, MsrEntry::default()));
    assert!(area.set_with_reserved(
        1,
        MsrEntry {
            index: 0x174,
            data: 0
        },
        1
    ));
    assert_eq!(u32_at(&*area, 20), 1);
    assert_eq!(MsrEntry::from_le_bytes(area.entry_bytes(1).unwrap()).1, 1);
    assert_eq!(MsrEntry::address_in(0x1000, 3), 0x1030);
    area.push(MsrEntry::default()).unwrap();
    area.push(MsrEntry::default()).unwrap();
    assert_eq!(
        area.push(MsrEntry::default()),
        Err(MsrAreaError::Full { capacity: 4 })
    );
}

#[test]
fn msr_areas_write_their_count_and_address_pairs() {
    let misc = caps("corei7_skylake_x").misc;
    let guest = Box::new({
        let mut a = MsrArea::<2>::new();
        a.push(MsrEntry {
            index: 0xc000_0081,
            data: 1,
        })
        .unwrap();
        a
    });
    let host = Box::new({
        let mut a = MsrArea::<3>::new();
        a.push(MsrEntry {
            index: 0xc000_0081,
            data: 2,
        })
        .unwrap();
        a.push(MsrEntry {
            index: 0xc000_0084,
            data: 3,
        })
        .unwrap();
        a
    });
    let mut vmcs = SoftVmcs::all_fields();
    write_msr_areas(&mut vmcs, &identity, misc, &*guest, &*guest, &*host).unwrap();
    let g = std::ptr::from_ref(&*guest) as u64;
    assert_eq!(vmcs.read(fields::VM_ENTRY_MSR_LOAD_ADDRESS).unwrap(), g);
    assert_eq!(vmcs.read(fields::VM_ENTRY_MSR_LOAD_COUNT).unwrap(), 1);
    assert_eq!(vmcs.read(fields::VM_EXIT_MSR_STORE_ADDRESS).unwrap(), g);
    assert_eq!(vmcs.read(fields::VM_EXIT_MSR_STORE_COUNT).unwrap(), 1);
    assert_eq!(
        vmcs.read(fields::VM_EXIT_MSR_LOAD_ADDRESS).unwrap(),
        std::ptr::from_ref(&*host) as u64
    );
    assert_eq!(vmcs.read(fields::VM_EXIT_MSR_LOAD_COUNT).unwrap(), 2);
    // 16-byte alignment of the physical address.
    let err = guest
        .write_as(
            MsrAreaKind::EntryLoad,
            &mut vmcs,
            &|p: *const u8| Some(p as u64 + 8),
            misc,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        MsrAreaError::Structure(StructureError::Misaligned { align: 16, .. })
    ));
}

#[test]
fn msr_area_count_limit_comes_from_vmx_misc_27_25() {
    let mut big = Box::new(MsrArea::<1024>::new());
    for i in 0..600 {
        big.push(MsrEntry { index: i, data: 0 }).unwrap();
    }
    let mut vmcs = SoftVmcs::all_fields();
    // N = 0: 512 entries.
    assert_eq!(
        big.write_as(MsrAreaKind::ExitLoad, &mut vmcs, &identity, VmxMisc(0)),
        Err(MsrAreaError::TooManyEntries {
            kind: MsrAreaKind::ExitLoad,
            count: 600,
            limit: 512
        })
    );
    assert_eq!(vmcs.read(fields::VM_EXIT_MSR_LOAD_COUNT).unwrap(), 0);
    // N = 1 (bits 27:25 = 001): 1024 entries.
    big.write_as(
        MsrAreaKind::ExitLoad,
        &mut vmcs,
        &identity,
        VmxMisc(1 << 25),
    )
    .unwrap();
    assert_eq!(vmcs.read(fields::VM_EXIT_MSR_LOAD_COUNT).unwrap(), 600);
    // Nothing is written when one of the three counts is too large.
    let empty = Box::new(MsrArea::<1>::new());
    let mut fresh = SoftVmcs::all_fields();
    assert!(write_msr_areas(&mut fresh, &identity, VmxMisc(0), &*empty, &*big, &*empty).is_err());
    assert_eq!(fresh.read(fields::VM_ENTRY_MSR_LOAD_ADDRESS).unwrap(), 0);
}

// ---- Virtual-APIC page (SDM 30.1), guest interrupt status, EOI-exit bitmap ----

#[test]
fn virtual_apic_registers_sit_at_the_apic_offsets() {
    let page = Box::new(VirtualApicPage::new());
    page.set_vtpr(0x5f);
    page.set_vppr(0x40);
    page.set_visr([0x20, 0xff].into_iter().collect());
    page.set_vtmr([0x41].into_iter().collect());
    page.set_virr([0x31, 0x80].into_iter().collect());
    page.set_vicr(0x0300_0000_0000_40f0);
    page.write(ApicRegister::TIMER_INITIAL_COUNT, 1000);
    page.write(ApicRegister::TIMER_DIVIDE_CONFIGURATION, 0xb);
    assert_eq!(u32_at(&*page, 0x80), 0x5f);
    assert_eq!(u32_at(&*page, 0xa0), 0x40);
    assert_eq!(u32_at(&*page, 0x110), 1); // ISR1 bit 0 = vector 0x20
    assert_eq!(u32_at(&*page, 0x170), 1 << 31); // ISR7 bit 31 = vector 0xff
    assert_eq!(u32_at(&*page, 0x1a0), 1 << 1); // TMR2 bit 1 = vector 0x41
    assert_eq!(u32_at(&*page, 0x210), 1 << 17); // IRR1 bit 17 = vector 0x31
    assert_eq!(u32_at(&*page, 0x240), 1); // IRR4 bit 0 = vector 0x80
    assert_eq!(u32_at(&*page, 0x300), 0x40f0);
    assert_eq!(u32_at(&*page, 0x310), 0x0300_0000);
    assert_eq!(u32_at(&*page, 0x380), 1000);
    assert_eq!(u32_at(&*page, 0x3e0), 0xb);
    assert_eq!(page.timer_initial_count(), 1000);
    assert_eq!(page.timer_divide_configuration(), 0xb);
    assert_eq!(page.virr().highest(), Some(0x80));
    assert_eq!(page.visr().highest(), Some(0xff));
    assert_eq!(ApicRegister::at(0x84), None);
    assert_eq!(ApicRegister::at(0x1000), None);

    let mut vmcs = SoftVmcs::all_fields();
    page.write_to(&mut vmcs, &identity, 4).unwrap();
    assert_eq!(
        vmcs.read(fields::VIRTUAL_APIC_ADDRESS).unwrap(),
        std::ptr::from_ref(&*page) as u64
    );
    assert_eq!(vmcs.read(fields::TPR_THRESHOLD).unwrap(), 4);
    assert!(matches!(
        page.write_to(&mut vmcs, &identity, 16),
        Err(StructureError::InvalidValue { value: 16, .. })
    ));
}

#[test]
fn guest_interrupt_status_and_eoi_exit_bitmap_fields() {
    let mut vmcs = SoftVmcs::all_fields();
    GuestInterruptStatus {
        rvi: 0x31,
        svi: 0x80,
    }
    .write(&mut vmcs)
    .unwrap();
    assert_eq!(vmcs.read(fields::GUEST_INTERRUPT_STATUS).unwrap(), 0x8031);
    assert_eq!(
        GuestInterruptStatus::read(&vmcs).unwrap(),
        GuestInterruptStatus {
            rvi: 0x31,
            svi: 0x80
        }
    );
    let exiting: VectorSet = [0x00, 0x41, 0xbf, 0xc0].into_iter().collect();
    write_eoi_exit_bitmap(&mut vmcs, exiting).unwrap();
    assert_eq!(vmcs.read(fields::EOI_EXIT_BITMAP_0).unwrap(), 1);
    assert_eq!(vmcs.read(fields::EOI_EXIT_BITMAP_1).unwrap(), 1 << 1);
    assert_eq!(vmcs.read(fields::EOI_EXIT_BITMAP_2).unwrap(), 1 << 63);
    assert_eq!(vmcs.read(fields::EOI_EXIT_BITMAP_3).unwrap(), 1);
    assert_eq!(read_eoi_exit_bitmap(&vmcs).unwrap(), exiting);
}

proptest! {
    #[test]
    fn vector_set_matches_a_set_model(ops in prop::collection::vec((any::<u8>(), any::<bool>()), 0..100)) {
        let mut set = VectorSet::new();
        let mut model = BTreeSet::new();
        for &(v, add) in &ops {
            if add {
                prop_assert_eq!(set.insert(v), model.insert(v));
            } else {
                prop_assert_eq!(set.remove(v), model.remove(&v));
            }
        }
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(set.highest(), model.last().copied());
        prop_assert_eq!(set.len() as usize, model.len());
        prop_assert_eq!(set.is_empty(), model.is_empty());
        prop_assert_eq!(VectorSet::from_apic_words(set.apic_words()), set);
        prop_assert_eq!(VectorSet::from_words(set.words()), set);
        for v in 0..=255u8 {
            let reg = set.apic_words()[usize::from(v / 32)];
            prop_assert_eq!(reg >> (v % 32) & 1 == 1, model.contains(&v));
        }
    }

    #[test]
    fn guest_interrupt_status_round_trips(raw in any::<u16>()) {
        let s = GuestInterruptStatus::from_raw(raw);
        prop_assert_eq!(s.raw(), raw);
        prop_assert_eq!(s.rvi, raw as u8);
        prop_assert_eq!(s.svi, (raw >> 8) as u8);
    }
}

// ---- Posted-interrupt descriptor (SDM 30.6, Table 30-1) ----

#[test]
fn posted_interrupt_descriptor_layout() {
    let pid = PostedInterruptDescriptor::new();
    assert_eq!(std::mem::align_of::<PostedInterruptDescriptor>(), 64);
    assert_eq!(pid.post(0x41), PostOutcome::NotificationNeeded);
    assert_eq!(pid.post(0xff), PostOutcome::Posted);
    let bytes = pid.to_bytes();
    assert_eq!(bytes[8], 1 << 1); // PIR bit 0x41 = byte 8, bit 1
    assert_eq!(bytes[31], 1 << 7); // PIR bit 255
    assert_eq!(bytes[32], 1); // ON = bit 256
    assert_eq!(byte_at(&pid, 32), 1);
    assert!(bytes[33..].iter().all(|&b| b == 0));
    let mut vmcs = SoftVmcs::all_fields();
    let boxed = Box::new(PostedInterruptDescriptor::new());
    boxed.write_to(&mut vmcs, &identity, 0xf2).unwrap();
    assert_eq!(
        vmcs.read(fields::POSTED_INTERRUPT_DESCRIPTOR_ADDRESS)
            .unwrap(),
        std::ptr::from_ref(&*boxed) as u64
    );
    assert_eq!(
        vmcs.read(fields::POSTED_INTERRUPT_NOTIFICATION_VECTOR)
            .unwrap(),
        0xf2
    );
    let err = boxed
        .write_to(&mut vmcs, &|p: *const u8| Some(p as u64 + 32), 0xf2)
        .unwrap_err();
    assert!(matches!(err, StructureError::Misaligned { align: 64, .. }));
}

#[test]
fn concurrent_posting_sends_one_notification_and_loses_nothing() {
    let pid = Arc::new(PostedInterruptDescriptor::new());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pid = Arc::clone(&pid);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                // Every thread posts every vector, in a different order.
                for i in 0..=255u8 {
                    let v = i.wrapping_mul(37).wrapping_add(t * 29);
                    outcomes.push((v, pid.post(v)));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let notifications = outcomes
        .iter()
        .filter(|(_, o)| o.needs_notification())
        .count();
    assert_eq!(notifications, 1, "ON goes 0 -> 1 once");
    for v in 0..=255u8 {
        let newly = outcomes
            .iter()
            .filter(|&&(w, o)| w == v && o != PostOutcome::AlreadyPending)
            .count();
        assert_eq!(newly, 1, "vector {v:#x} posted exactly once");
    }
    assert_eq!(pid.pending(), VectorSet::all());
    assert!(pid.outstanding_notification());
}

#[test]
fn posting_races_a_consumer_without_losing_a_request_or_a_notification() {
    let pid = Arc::new(PostedInterruptDescriptor::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let (pid, done) = (Arc::clone(&pid), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if pid.outstanding_notification() {
                    taken.push(pid.take());
                }
            }
            taken
        })
    };
    let producers: Vec<_> = (0..4u8)
        .map(|t| {
            let pid = Arc::clone(&pid);
            std::thread::spawn(move || {
                let mut posted = 0u32;
                for round in 0..2000u32 {
                    let v = (round as u8).wrapping_mul(7).wrapping_add(t * 64);
                    if pid.post(v) != PostOutcome::AlreadyPending {
                        posted += 1;
                    }
                }
                posted
            })
        })
        .collect();
    let posted: u32 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let taken = consumer.join().unwrap();
    // Every request still in the PIR is announced by ON (no lost notification).
    let rest = pid.pending();
    assert!(
        rest.is_empty() || pid.outstanding_notification(),
        "requests {rest:?} without ON"
    );
    let delivered: u32 = taken.iter().map(|s| s.len()).sum::<u32>() + pid.take().len();
    assert_eq!(
        delivered, posted,
        "each newly posted request is taken exactly once"
    );
}

// ---- #VE information area (SDM 26.5.7.2, Table 26-1) ----

#[test]
fn ve_information_area_offsets() {
    let area = Box::new(VeInformationArea::new());
    assert!(area.is_armed());
    // Write as the processor does, at the SDM's offsets.
    let base = std::ptr::from_ref(&*area).cast::<u8>().cast_mut();
    // SAFETY: inside the area, which nothing else accesses in this test; its fields are
    // atomics, which may be written through a raw pointer.
    unsafe {
        base.cast::<u32>().write_volatile(48);
        base.add(4).cast::<u32>().write_volatile(0xffff_ffff);
        base.add(8).cast::<u64>().write_volatile(0x182);
        base.add(16)
            .cast::<u64>()
            .write_volatile(0xffff_8000_0000_1234);
        base.add(24).cast::<u64>().write_volatile(0x1234);
        base.add(32).cast::<u16>().write_volatile(3);
    }
    assert!(area.is_delivered());
    assert_eq!(
        area.information(),
        VeInformation {
            exit_reason: 48,
            exit_qualification: 0x182,
            guest_linear_address: 0xffff_8000_0000_1234,
            guest_physical_address: 0x1234,
            eptp_index: 3,
        }
    );
    area.arm();
    assert_eq!(u32_at(&*area, 4), 0);
    let mut vmcs = SoftVmcs::all_fields();
    area.write_to(&mut vmcs, &identity).unwrap();
    assert_eq!(
        vmcs.read(fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS)
            .unwrap(),
        base as u64
    );
}

// ---- EPTP list (SDM 25.6.14) ----

#[test]
fn eptp_list_entries_are_8_bytes_apart() {
    let mut list = Box::new(EptpList::new());
    list.set(0, EptPointer::from_bits(0x1000 | 0x1e)).unwrap();
    list.set(3, EptPointer::from_bits(0x5000 | 0x5e)).unwrap();
    list.set(511, EptPointer::from_bits(0x9000 | 0x1e)).unwrap();
    assert_eq!(u64_at(&*list, 24), 0x505e);
    assert_eq!(u64_at(&*list, 4088), 0x901e);
    assert!(matches!(
        list.set(512, EptPointer::from_bits(0)),
        Err(StructureError::InvalidValue { value: 512, .. })
    ));
    assert_eq!(list.get(512), None);
    let mut vmcs = SoftVmcs::all_fields();
    list.write_to(&mut vmcs, &identity, 3).unwrap();
    assert_eq!(
        vmcs.read(fields::EPTP_LIST_ADDRESS).unwrap(),
        std::ptr::from_ref(&*list) as u64
    );
    assert_eq!(vmcs.read(fields::EPTP_INDEX).unwrap(), 3);
    assert_eq!(vmcs.read(fields::EPT_POINTER).unwrap().bits(), 0x505e);
    assert!(list.write_to(&mut vmcs, &identity, 600).is_err());
    list.clear(3).unwrap();
    assert_eq!(u64_at(&*list, 24), 0);
}

// ---- PML log (SDM 29.3.6) ----

#[test]
fn pml_index_counts_down_from_511() {
    let log = Box::new(PmlLog::new());
    // The processor writes entry `index` at PML address + 8 * index, then decrements.
    let base = std::ptr::from_ref(&*log).cast::<u8>().cast_mut();
    for (n, gpa) in [0x7000u64, 0x3000, 0x1f_f000].into_iter().enumerate() {
        // SAFETY: inside the log; its entries are atomics.
        unsafe { base.add(8 * (511 - n)).cast::<u64>().write_volatile(gpa) };
    }
    assert_eq!(
        log.logged(508).unwrap().collect::<Vec<_>>(),
        [0x7000, 0x3000, 0x1f_f000]
    );
    assert_eq!(log.logged(511).unwrap().count(), 0);
    assert_eq!(log.logged(PmlLog::FULL_INDEX).unwrap().count(), 512);
    assert!(matches!(
        log.logged(512),
        Err(StructureError::InvalidValue { value: 512, .. })
    ));
    let mut vmcs = SoftVmcs::all_fields();
    log.write_to(&mut vmcs, &identity).unwrap();
    assert_eq!(vmcs.read(fields::PML_ADDRESS).unwrap(), base as u64);
    assert_eq!(PmlLog::read_index(&vmcs).unwrap(), 511);
}

proptest! {
    #[test]
    fn pml_logged_count(index in any::<u16>()) {
        let count = PmlLog::logged_count(index);
        match index {
            0..=511 => prop_assert_eq!(count.unwrap(), 511 - usize::from(index)),
            0xffff => prop_assert_eq!(count.unwrap(), 512),
            _ => prop_assert!(count.is_err()),
        }
    }
}

// ---- Frames ----

#[test]
fn from_frame_checks_and_zeroes() {
    let layout = std::alloc::Layout::from_size_align(8192, 4096).unwrap();
    // SAFETY: non-zero size.
    let frame = unsafe { std::alloc::alloc(layout) };
    // SAFETY: 8192 writable bytes, ours.
    unsafe { frame.write_bytes(0xaa, 8192) };
    // SAFETY: 8192 bytes, used only through the reference below.
    let io = unsafe { IoBitmaps::from_frame(frame) }.unwrap();
    assert!(!io.exits(0x1234, 4).unwrap());
    // SAFETY: the misaligned pointer is refused before anything is written.
    let misaligned = unsafe { MsrBitmap::from_frame(frame.wrapping_add(8)) };
    assert!(matches!(
        misaligned,
        Err(StructureError::FrameMisaligned { align: 4096, .. })
    ));
    // SAFETY: null is refused before anything is written.
    let null = unsafe { PmlLog::from_frame(std::ptr::null_mut()) };
    assert!(matches!(null, Err(StructureError::NullFrame { .. })));
    // SAFETY: allocated above with this layout; `io` is not used any more.
    unsafe { std::alloc::dealloc(frame, layout) };
}

// ---- Sub-page permission table (SDM "Sub-Page Write Permissions"; Bochs 2.7 `spp_walk`) ----

mod spp {
    use super::*;
    use ept::{GuestPhysAddr, HeapFrameAllocator, OffsetPhysToVirt};
    use vmcs::structures::{SppError, SppTable, SppVector, SppWalkError};

    fn table(limit: Option<usize>) -> SppTable<OffsetPhysToVirt, HeapFrameAllocator> {
        // SAFETY: heap frames are "physical" at their own addresses.
        let p2v = unsafe { OffsetPhysToVirt::identity() };
        let alloc = match limit {
            Some(l) => HeapFrameAllocator::with_limit(l),
            None => HeapFrameAllocator::new(),
        };
        SppTable::new(p2v, alloc).unwrap()
    }

    fn entry(table: u64, i: u64) -> u64 {
        // SAFETY: `table` is a live table frame of the SPPT (identity-mapped heap), i < 512.
        unsafe {
            ((table & 0x000f_ffff_ffff_f000) as *const u64)
                .add(i as usize)
                .read()
        }
    }

    fn raw_write(table: u64, i: u64, value: u64) {
        // SAFETY: as in `entry`; the test owns the table.
        unsafe {
            ((table & 0x000f_ffff_ffff_f000) as *mut u64)
                .add(i as usize)
                .write(value)
        }
    }

    #[test]
    fn vector_bits_are_the_even_bits() {
        // Sub-page i (bytes 128i..128i+127) is bit 2i.
        let v = SppVector::from_writable(1 << 5);
        assert_eq!(v.bits(), 1 << 10);
        assert!(v.allows_write(0x280) && v.allows_write(0x2ff));
        assert!(!v.allows_write(0x27f) && !v.allows_write(0x300));
        assert_eq!(SppVector::ALL_WRITABLE.bits(), 0x5555_5555_5555_5555);
        assert_eq!(SppVector::from_bits(2).reserved_bits(), 2);
    }

    proptest! {
        #[test]
        fn vector_round_trips(mask in any::<u32>(), offset in 0u64..4096) {
            let v = SppVector::from_writable(mask);
            prop_assert_eq!(v.writable(), mask);
            prop_assert_eq!(v.reserved_bits(), 0);
            prop_assert_eq!(v.allows_write(offset), mask >> (offset / 128) & 1 == 1);
        }
    }

    #[test]
    fn table_walks_four_levels_like_the_ept() {
        let mut sppt = table(None);
        let gpa = 0x0000_0080_4060_3000u64; // PML4 1, PDPT 1, PD 3, PT 3
        let vector = SppVector::from_writable(0x8000_0001);
        sppt.set(GuestPhysAddr::new(gpa).unwrap(), vector).unwrap();
        assert_eq!(sppt.table_frames(), 4);
        let l4 = entry(sppt.pointer(), (gpa >> 39) & 0x1ff);
        assert_eq!(l4 & 0xfff, 1, "valid bit, reserved bits 11:1 clear");
        let l3 = entry(l4, (gpa >> 30) & 0x1ff);
        let l2 = entry(l3, (gpa >> 21) & 0x1ff);
        assert_eq!(l2 & 1, 1);
        assert_eq!(entry(l2, (gpa >> 12) & 0x1ff), vector.bits());
        assert_eq!(
            sppt.lookup(GuestPhysAddr::new(gpa + 0x123).unwrap()),
            Ok(vector)
        );
        // The neighbour page shares the leaf table: present, nothing writable.
        assert_eq!(
            sppt.lookup(GuestPhysAddr::new(gpa + 0x1000).unwrap()),
            Ok(SppVector::NONE_WRITABLE)
        );
        // Another 512-GiB region: the root entry is not valid.
        assert_eq!(
            sppt.lookup(GuestPhysAddr::new(0x1000).unwrap()),
            Err(SppWalkError::NotPresent {
                level: 4,
                gpa: 0x1000
            })
        );
        // Reserved bits make the walk a misconfiguration, at the leaf and above it.
        raw_write(l2, (gpa >> 12) & 0x1ff, vector.bits() | 1 << 1);
        assert!(matches!(
            sppt.lookup(GuestPhysAddr::new(gpa).unwrap()),
            Err(SppWalkError::Misconfigured { level: 1, .. })
        ));
        raw_write(l3, (gpa >> 21) & 0x1ff, l2 | 1 << 4);
        assert!(matches!(
            sppt.lookup(GuestPhysAddr::new(gpa).unwrap()),
            Err(SppWalkError::Misconfigured { level: 2, .. })
        ));
        let mut vmcs = SoftVmcs::all_fields();
        sppt.write_to(&mut vmcs).unwrap();
        assert_eq!(
            vmcs.read(fields::SUB_PAGE_PERMISSION_TABLE_POINTER)
                .unwrap(),
            sppt.pointer()
        );
        // SAFETY: no VMCS a processor uses references this table.
        let alloc = unsafe { sppt.destroy() };
        assert_eq!(alloc.live_frames(), 0);
    }

    #[test]
    fn refusals() {
        let mut sppt = table(Some(2));
        let gpa = GuestPhysAddr::new(0x5000).unwrap();
        assert_eq!(
            sppt.set(gpa, SppVector::from_bits(0x3)),
            Err(SppError::ReservedBits(0x3))
        );
        assert_eq!(
            sppt.set(gpa, SppVector::ALL_WRITABLE),
            Err(SppError::OutOfFrames)
        );
        assert_eq!(sppt.table_frames(), 2);
        // SAFETY: no VMCS references this table.
        let alloc = unsafe { sppt.destroy() };
        assert_eq!(alloc.live_frames(), 0);
    }

    proptest! {
        #[test]
        fn table_matches_a_map(pages in prop::collection::btree_map(0u64..(1 << 24), any::<u32>(), 1..24)) {
            let mut sppt = table(None);
            for (&page, &mask) in &pages {
                sppt.set(GuestPhysAddr::new(page << 12).unwrap(), SppVector::from_writable(mask)).unwrap();
            }
            for (&page, &mask) in &pages {
                let got = sppt.lookup(GuestPhysAddr::new(page << 12).unwrap()).unwrap();
                prop_assert_eq!(got.writable(), mask);
            }
            // SAFETY: no VMCS references this table.
            let alloc = unsafe { sppt.destroy() };
            prop_assert_eq!(alloc.live_frames(), 0);
        }
    }
}
