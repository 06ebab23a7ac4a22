//! Hostile-input campaign for `vmcs::structures`, `InterruptionInfo` and the host-state area:
//! arbitrary MSR numbers, ports, access sizes, ranges, encodings, vectors, indices, register
//! offsets, raw pages and VMCS contents. Besides the absence of panics (debug build: overflow
//! checks on): the MSR bitmap's answer for an MSR outside its two ranges is "exits" (SDM Vol.
//! 3C, 26.1.3), a range set through `set_range` reads back bit by bit, merging another page
//! (`union_bytes`) only adds exits, an I/O access exits when any of its ports' bits is set or it
//! wraps past FFFFH, a posted vector is pending until taken, an interruption-information word
//! decodes to the parts it was built from, and a host-state area read from a VMCS writes back
//! what reads as the same area.

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;

use ept::EptPointer;
use hostile_cases::cases;
use proptest::prelude::*;
use vmcs::structures::{
    ApicRegister, EPTP_LIST_ENTRIES, EptpList, IoBitmaps, MsrAccess, MsrArea, MsrBitmap, MsrEntry,
    PML_ENTRIES, PmlLog, PostOutcome, PostedInterruptDescriptor, ShadowBitmap, VirtualApicPage,
};
use vmcs::{HostState, InterruptionInfo, InterruptionType, SoftVmcs, fields};
use vmx_caps::ExitControls;

fn msr() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        0..0x2000u32,
        0xc000_0000..0xc000_2000u32,
        0x1f00..0x2100u32
    ]
}

fn access() -> impl Strategy<Value = MsrAccess> {
    prop_oneof![Just(MsrAccess::Read), Just(MsrAccess::Write)]
}

/// Whether `msr` lies in one of the MSR bitmap's ranges (SDM 25.6.9).
fn in_bitmap(msr: u32) -> bool {
    msr <= 0x1fff || (0xc000_0000..=0xc000_1fff).contains(&msr)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    #[test]
    fn msr_bitmap_ranges_and_merges(
        first in msr(), last in msr(), access in access(), intercept in any::<bool>(),
        page in proptest::collection::vec(any::<u8>(), 4096),
        probes in proptest::collection::vec((msr(), access()), 0..32),
    ) {
        let mut bitmap = MsrBitmap::pass_all();
        let r = bitmap.set_range(first..=last, access, intercept);
        for &(m, a) in &probes {
            let exits = bitmap.exits(m, a);
            if !in_bitmap(m) {
                prop_assert!(exits, "MSR {:#x} outside the bitmap does not exit", m);
            } else if r.is_ok() && a == access && (first..=last).contains(&m) {
                prop_assert_eq!(exits, intercept, "MSR {:#x} in the range", m);
            } else if a != access || r.is_err() || !(first..=last).contains(&m) {
                prop_assert!(!exits, "MSR {:#x} outside the range exits", m);
            }
        }
        if r.is_ok() {
            prop_assert!(first <= last);
            prop_assert!(in_bitmap(first) && in_bitmap(last));
        }
        let before = bitmap.clone();
        let page: [u8; 4096] = page.try_into().unwrap();
        bitmap.union_bytes(&page);
        for &(m, a) in &probes {
            prop_assert!(!before.exits(m, a) || bitmap.exits(m, a), "merging lost MSR {:#x}", m);
        }
        for (i, (&b, &p)) in bitmap.as_bytes().iter().zip(page.iter()).enumerate() {
            prop_assert_eq!(b & p, p, "byte {}", i);
        }
    }

    #[test]
    fn io_bitmaps_sizes_ranges_and_wraps(
        first in any::<u16>(), last in any::<u16>(), intercept in any::<bool>(),
        probes in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..32),
        a in proptest::collection::vec(any::<u8>(), 4096),
    ) {
        let mut io = IoBitmaps::pass_all();
        let r = io.set_range(first..=last, intercept);
        prop_assert_eq!(r.is_ok(), first <= last);
        for &(port, size) in &probes {
            match io.exits(port, size) {
                Err(_) => prop_assert!(!matches!(size, 1 | 2 | 4)),
                Ok(exits) => {
                    let last_port = u32::from(port) + u32::from(size) - 1;
                    let any = (u32::from(port)..=last_port.min(0xffff))
                        .any(|p| io.is_intercepted(p as u16));
                    prop_assert_eq!(exits, last_port > 0xffff || any, "port {:#x} size {}", port, size);
                }
            }
        }
        let a: [u8; 4096] = a.try_into().unwrap();
        let before = io.clone();
        io.union_bytes(&a, &[0; 4096]);
        for &(port, _) in &probes {
            prop_assert!(!before.is_intercepted(port) || io.is_intercepted(port));
        }
    }

    #[test]
    fn shadow_bitmap_raw_encodings(encodings in proptest::collection::vec(any::<u64>(), 1..16)) {
        let mut bitmap = ShadowBitmap::pass_all();
        for &e in &encodings {
            let r = bitmap.set_raw(e, true);
            prop_assert_eq!(r.is_ok(), e >> 15 == 0);
            prop_assert!(bitmap.exits_raw(e));
        }
    }

    #[test]
    fn small_structures_take_any_index(
        vectors in proptest::collection::vec(any::<u8>(), 0..16),
        offsets in proptest::collection::vec(any::<u16>(), 0..16),
        value in any::<u32>(),
        index in any::<u16>(),
        eptp in any::<u64>(),
        pml_index in any::<u16>(),
        entries in proptest::collection::vec((any::<u32>(), any::<u64>()), 0..12),
        raw_entry in any::<[u8; 16]>(),
    ) {
        let pi = PostedInterruptDescriptor::new();
        let mut expected = std::collections::BTreeSet::new();
        for &v in &vectors {
            let outcome = pi.post(v);
            prop_assert_eq!(outcome == PostOutcome::AlreadyPending, !expected.insert(v));
            prop_assert!(pi.pending().contains(v));
        }
        prop_assert_eq!(pi.outstanding_notification(), !vectors.is_empty());
        let taken = pi.take();
        for v in 0..=255u8 {
            prop_assert_eq!(taken.contains(v), expected.contains(&v));
        }
        prop_assert!(!pi.outstanding_notification());

        let apic = VirtualApicPage::new();
        for &o in &offsets {
            match ApicRegister::at(o) {
                Some(reg) => {
                    apic.write(reg, value);
                    prop_assert_eq!(apic.read(reg), value);
                }
                None => prop_assert!(o % 16 != 0 || o >= 4096),
            }
        }

        let mut list = EptpList::new();
        let set = list.set(index, EptPointer::from_bits(eptp));
        prop_assert_eq!(set.is_ok(), usize::from(index) < EPTP_LIST_ENTRIES);
        prop_assert_eq!(list.get(index).map(|e| e.bits()), set.ok().map(|()| eptp));

        let log = PmlLog::new();
        match PmlLog::logged_count(pml_index) {
            Ok(n) => {
                prop_assert!(n <= PML_ENTRIES);
                prop_assert_eq!(log.logged(pml_index).unwrap().count(), n);
            }
            Err(_) => prop_assert!((512..0xffff).contains(&pml_index)),
        }

        let mut area = MsrArea::<8>::new();
        for (i, &(index, data)) in entries.iter().enumerate() {
            let r = area.push(MsrEntry { index, data });
            prop_assert_eq!(r.is_ok(), i < 8);
        }
        prop_assert_eq!(area.len(), entries.len().min(8));
        let (entry, reserved) = MsrEntry::from_le_bytes(raw_entry);
        prop_assert_eq!(u64::from(entry.index), u64::from(u32::from_le_bytes(raw_entry[..4].try_into().unwrap())));
        prop_assert_eq!(reserved, u32::from_le_bytes(raw_entry[4..8].try_into().unwrap()));
        prop_assert_eq!(entry.data, u64::from_le_bytes(raw_entry[8..].try_into().unwrap()));
    }

    #[test]
    fn interruption_information_parts(bits in any::<u32>(), vector in any::<u8>(), kind in 0..8u8, ec in any::<bool>()) {
        let info = InterruptionInfo::from_bits(bits);
        prop_assert_eq!(u32::from(info.vector()), bits & 0xff);
        prop_assert_eq!(info.valid(), bits >> 31 == 1);
        prop_assert_eq!(info.error_code(), bits & (1 << 11) != 0);
        let kind = InterruptionType::from_raw(kind);
        let built = InterruptionInfo::new(vector, kind, ec);
        prop_assert_eq!(built.vector(), vector);
        prop_assert_eq!(built.interruption_type(), kind);
        prop_assert_eq!(built.error_code(), ec);
        prop_assert!(built.valid());
        prop_assert_eq!(built.reserved_bits(), 0);
    }

    #[test]
    fn host_state_round_trips_any_vmcs(values in proptest::collection::vec(any::<u64>(), 1..32), exit in any::<u32>()) {
        let mut vmcs = SoftVmcs::all_fields();
        for (i, f) in fields::ALL.iter().enumerate() {
            vmcs.store(f.encoding, values[i % values.len()] & f.width().mask()).unwrap();
        }
        let exit = ExitControls::from_bits_retain(exit);
        let host = HostState::read(&vmcs, exit).unwrap();
        let mut copy = SoftVmcs::all_fields();
        host.write(&mut copy).unwrap();
        prop_assert_eq!(HostState::read(&copy, exit), Ok(host));
    }
}
