//! Every serializable type of the crate through serde_json and back (feature `serde`), with
//! values from real mapper operations and walks. Flag sets are plain integers (see
//! `vmx_caps::serde_bits`).
#![cfg(feature = "serde")]

use std::fmt::Debug;

use ept::diagnose::WalkOutcome;
use ept::{
    Access, AddrError, EntryFlags, EntryKind, EptConfig, EptMapper, EptPointer, EptWalker,
    EptpError, GuestPhysAddr, HeapFrameAllocator, HostPhysAddr, LeafAttributes, LeafFlags, Level,
    MapError, MemoryType, MisconfigRule, OffsetPhysToVirt, PdEntry, PdptEntry, Permissions,
    Pml4Entry, Pml5Entry, PtEntry, RangePart, ReservedMemoryType, ReservedWalkLength,
    ViolationReason, WalkLength,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vmx_caps::EptVpidCap;

/// IA32_VMX_EPT_VPID_CAP of Bochs' corei7_skylake_x (vmx-caps/testdata).
const SKYLAKE_X: EptVpidCap = EptVpidCap(0x0000_0f01_0633_4141);

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> serde_json::Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value, "{json}");
    json
}

#[test]
fn flag_sets_are_numbers() {
    assert_eq!(round_trip(&Permissions::RWX), 7);
    assert_eq!(
        round_trip(&(Permissions::READ | Permissions::USER_EXECUTE)),
        9
    );
    assert_eq!(round_trip(&Access::DATA_WRITE), 2);
    assert_eq!(round_trip(&LeafFlags::IGNORE_PAT), 1 << 6);
    // EntryFlags keeps unknown bits: bit 11 has no name and comes back.
    let flags = EntryFlags::READ | EntryFlags::SUPPRESS_VE | EntryFlags::from_bits_retain(1 << 11);
    assert_eq!(
        round_trip(&flags),
        serde_json::json!((1u64 << 63) | (1 << 11) | 1)
    );
    // Permissions keeps only its named bits: a number with others is refused, not truncated.
    let err = serde_json::from_str::<Permissions>("16").unwrap_err();
    assert!(err.to_string().contains("0x10"), "{err}");
    assert!(serde_json::from_str::<Access>("8").is_err());
}

#[test]
fn every_type_round_trips() {
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let mut ept = EptMapper::new(
        EptConfig::new(SKYLAKE_X, 48),
        p2v,
        HeapFrameAllocator::new(),
    )
    .unwrap();
    let attrs = LeafAttributes::new(Permissions::RX, MemoryType::WriteBack);
    round_trip(&attrs);
    let gpa = GuestPhysAddr::new(0x20_0000).unwrap();
    let flush = ept
        .map(gpa, HostPhysAddr::new(1 << 30).unwrap(), 0x20_1000, attrs)
        .unwrap();
    // SAFETY: no processor has used this EPT.
    unsafe { ept.assume_flushed(flush) };

    round_trip(&gpa);
    round_trip(&ept.eptp());
    round_trip(&EptPointer::from_bits(0x1234_505e));
    let translation = ept
        .translate(GuestPhysAddr::new(0x20_1234).unwrap())
        .unwrap();
    round_trip(&translation);
    let mut mappings = Vec::new();
    ept.for_each_mapping(|m| mappings.push(m));
    assert_eq!(mappings.len(), 2);
    for m in &mappings {
        round_trip(m);
        round_trip(&m.page_size);
    }

    let walker = ept.walker();
    let walk = walker.walk(GuestPhysAddr::new(0x20_1234).unwrap(), ept.entry_reader());
    assert!(matches!(walk.outcome, WalkOutcome::Translated { .. }));
    round_trip(&walk.outcome);
    for step in walk.steps() {
        round_trip(step);
        round_trip(&step.level);
    }
    let walk = walker.walk(GuestPhysAddr::new(0x100_0000).unwrap(), ept.entry_reader());
    assert!(matches!(walk.outcome, WalkOutcome::NotPresent { .. }));
    round_trip(&walk.outcome);
    let violation = walker
        .explain_violation(gpa, Access::DATA_WRITE, false, ept.entry_reader())
        .unwrap();
    assert_eq!(
        violation.reason,
        ViolationReason::Missing(Permissions::WRITE)
    );
    round_trip(&violation);
    round_trip(&violation.reason);
    round_trip(&ViolationReason::NotPresent);

    // A misconfigured root entry: write without read.
    let eptp = EptPointer::from_bits(0x1000 | 0x1e);
    let walker = EptWalker::new(eptp, SKYLAKE_X, 48).unwrap();
    let misconfig = walker
        .explain_misconfiguration(GuestPhysAddr::new(0).unwrap(), |_| Some(0x2000 | 0b010))
        .unwrap();
    assert_eq!(misconfig.rule, MisconfigRule::WriteWithoutRead);
    round_trip(&misconfig);
    for rule in [
        MisconfigRule::ExecuteOnlyNotSupported,
        MisconfigRule::UserExecuteOnlyNotSupported,
        MisconfigRule::LargePageNotAllowed,
        MisconfigRule::ReservedBits(0x78),
        MisconfigRule::ReservedMemoryType(2),
    ] {
        round_trip(&rule);
    }

    // Errors of real requests.
    let taken = ept
        .map(gpa, HostPhysAddr::new(0).unwrap(), 0x1000, attrs)
        .unwrap_err();
    assert!(matches!(taken, MapError::AlreadyMapped { .. }));
    round_trip(&taken);
    let unaligned = ept
        .map(
            GuestPhysAddr::new(0x123).unwrap(),
            HostPhysAddr::new(0).unwrap(),
            0x1000,
            attrs,
        )
        .unwrap_err();
    assert!(matches!(
        unaligned,
        MapError::Unaligned {
            what: RangePart::GuestPhysAddr,
            ..
        }
    ));
    round_trip(&unaligned);
    round_trip(&RangePart::HostPhysAddr);
    let addr = HostPhysAddr::new(1 << 60).unwrap_err();
    round_trip(&addr);
    let _: &AddrError = &addr;
    let eptp_err = EptPointer::builder(HostPhysAddr::new(0x1234).unwrap())
        .build(&SKYLAKE_X)
        .unwrap_err();
    assert!(matches!(eptp_err, EptpError::UnalignedRoot(_)));
    round_trip(&eptp_err);

    // Entries of every level, with their decoded kinds.
    round_trip(&Pml5Entry::from_bits(0x1000 | 7));
    round_trip(&Pml4Entry::from_bits(0x2000 | 7));
    round_trip(&PdptEntry::from_bits(0x4000_0000 | 0x80 | 0x37));
    round_trip(&PdEntry::from_bits(0x20_0000 | 0x80 | 0x37));
    let pte = PtEntry::from_bits(0x5000 | 0x37);
    round_trip(&pte);
    round_trip(&pte.kind());
    round_trip(&EntryKind::NotPresent);
    round_trip(&PdEntry::from_bits(0x20_0000 | 0x80 | 0x37).kind());

    for memory_type in [MemoryType::Uncacheable, MemoryType::WriteBack] {
        round_trip(&memory_type);
    }
    round_trip(&ReservedMemoryType(2));
    round_trip(&WalkLength::Four);
    round_trip(&ReservedWalkLength(7));
    round_trip(&Level::Pml5);
}
