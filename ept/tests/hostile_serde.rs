//! Hostile JSON for the serde forms of the crate's types (feature `serde`), through the
//! campaign shared with the other crates (`vmcs-fields/tests/serde_campaign`): an error or a
//! value that round-trips again, never a panic. Deserialized addresses are within 52 bits, and
//! deserialized mapping requests (addresses, leaf attributes, EPT pointers) are used: mapped,
//! translated, walked; none of it may panic.
#![cfg(feature = "serde")]

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;
#[path = "../../vmcs-fields/tests/serde_campaign/mod.rs"]
mod serde_campaign;

use ept::diagnose::WalkOutcome;
use ept::{
    EptConfig, EptMapper, EptPointer, EptWalker, GuestPhysAddr, HeapFrameAllocator, HostPhysAddr,
    LeafAttributes, Level, MemoryType, OffsetPhysToVirt, PageSize, Permissions, PtEntry,
};
use hostile_cases::cases;
use proptest::prelude::*;
use serde_campaign::Campaign;
use vmx_caps::EptVpidCap;

/// IA32_VMX_EPT_VPID_CAP of Bochs' corei7_skylake_x (vmx-caps/testdata).
const SKYLAKE_X: EptVpidCap = EptVpidCap(0x0000_0f01_0633_4141);

type Mapper = EptMapper<OffsetPhysToVirt, HeapFrameAllocator>;

fn mapper() -> Mapper {
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    EptMapper::new(
        EptConfig::new(SKYLAKE_X, 48),
        p2v,
        HeapFrameAllocator::new(),
    )
    .unwrap()
}

/// Maps a page with `attrs` at `gpa` to `hpa`, translates it back and walks it; `true` when
/// that neither panics nor translates to anything but what was mapped.
fn used(gpa: GuestPhysAddr, hpa: HostPhysAddr, attrs: LeafAttributes) -> bool {
    let mut ept = mapper();
    let gpa = GuestPhysAddr::new_truncate(gpa.as_u64() & !0xfff);
    let hpa = HostPhysAddr::new_truncate(hpa.as_u64() & !0xfff);
    match ept.map(gpa, hpa, 0x1000, attrs) {
        Ok(flush) => {
            // SAFETY: no processor uses this EPT.
            unsafe { ept.assume_flushed(flush) };
            let t = ept.translate(gpa);
            let _ = ept.walker().walk(gpa, ept.entry_reader());
            t.is_some_and(|t| t.hpa == hpa)
        }
        Err(_) => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn hostile_json(c in Campaign::strategy()) {
        let page = HostPhysAddr::new(0x4000_0000).unwrap();
        let attrs = LeafAttributes::new(Permissions::RX, MemoryType::WriteBack);
        c.run(&[GuestPhysAddr::new(0x20_0000).unwrap()], |gpa| {
            gpa.as_u64() >> 52 == 0 && (gpa.as_u64() >> 48 != 0 || used(*gpa, page, attrs))
        })?;
        c.run(&[page], |hpa| hpa.as_u64() >> 52 == 0 && used(GuestPhysAddr::ZERO, *hpa, attrs))?;
        c.run(&[attrs], |a| used(GuestPhysAddr::ZERO, page, *a))?;
        c.run(&[EptPointer::from_bits(0x1000 | 0x1e)], |eptp| {
            if let Ok(walker) = EptWalker::new(*eptp, SKYLAKE_X, 48) {
                let _ = walker.walk(GuestPhysAddr::ZERO, |_| Some(0x2000 | 7));
            }
            true
        })?;
        let mut ept = mapper();
        let flush = ept.map(GuestPhysAddr::new(0x20_0000).unwrap(), page, 0x1000, attrs).unwrap();
        // SAFETY: no processor uses this EPT.
        unsafe { ept.assume_flushed(flush) };
        let gpa = GuestPhysAddr::new(0x20_0123).unwrap();
        let t = ept.translate(gpa).unwrap();
        c.run(&[t], |t| t.hpa.as_u64() >> 52 == 0)?;
        let walk = ept.walker().walk(gpa, ept.entry_reader());
        prop_assert!(matches!(walk.outcome, WalkOutcome::Translated { .. }), "{:?}", walk.outcome);
        c.run(&[walk.outcome], |_| true)?;
        c.run(&walk.steps().copied().collect::<Vec<_>>(), |s| s.entry_address.as_u64() >> 52 == 0)?;
        c.run(&[PtEntry::from_bits(0x1234_5007)], |_| true)?;
        c.run(&[Level::Pml4, Level::Pt], |_| true)?;
        c.run(&[PageSize::Size2M], |_| true)?;
    }
}
