//! Targeted tests of the mapper: page-size choice, every error path, all-or-nothing behaviour
//! when frames run out, merge/split/destroy frame accounting, flush tokens and diagnosis.

use ept::{
    Access, EptConfig, EptMapper, EptpError, GuestPhysAddr, HeapFrameAllocator, HostPhysAddr,
    LeafAttributes, Level, MapError, Mapping, MemoryType, OffsetPhysToVirt, PageSize, Permissions,
    RangePart, ViolationReason, WalkLength,
};
use vmx_caps::EptVpidCap;
use vmx_core::InveptType;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
/// IA32_VMX_EPT_VPID_CAP values captured under Bochs (shared/testdata/msr-dumps).
const SKYLAKE_X: EptVpidCap = EptVpidCap(0x0000_0f01_0633_4141);
const LYNNFIELD: EptVpidCap = EptVpidCap(0x0000_0f01_0611_4141);
const RWX: LeafAttributes = LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack);
const RO: LeafAttributes = LeafAttributes::new(Permissions::READ, MemoryType::Uncacheable);

fn g(a: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(a).unwrap()
}
fn h(a: u64) -> HostPhysAddr {
    HostPhysAddr::new(a).unwrap()
}

fn setup(caps: EptVpidCap) -> (EptMapper<OffsetPhysToVirt>, HeapFrameAllocator) {
    let mut alloc = HeapFrameAllocator::new();
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let ept = EptMapper::new(EptConfig::new(caps, 48), p2v, &mut alloc).unwrap();
    (ept, alloc)
}

fn done(flush: ept::EptFlush, alloc: &mut HeapFrameAllocator) {
    // SAFETY: these tables are never used by a processor.
    unsafe { flush.assume_flushed(alloc) };
}

fn mappings(ept: &EptMapper<OffsetPhysToVirt>) -> Vec<Mapping> {
    let mut v = Vec::new();
    ept.for_each_mapping(|m| v.push(m));
    v
}

fn sizes(ept: &EptMapper<OffsetPhysToVirt>) -> Vec<(u64, PageSize)> {
    mappings(ept)
        .into_iter()
        .map(|m| (m.gpa.as_u64(), m.page_size))
        .collect()
}

#[test]
fn chooses_the_largest_page_alignment_and_capabilities_allow() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    // GPA 1G - 2M - 4K .. 2G + 2M + 4K, HPA offset by 4 GiB: 4K, 2M, 1G, 2M, 4K.
    let start = G1 - M2 - K4;
    let len = G1 + 2 * M2 + 2 * K4;
    let f = ept
        .map(g(start), h(start + 4 * G1), len, RWX, &mut alloc)
        .unwrap();
    done(f, &mut alloc);
    assert_eq!(
        sizes(&ept),
        [
            (start, PageSize::Size4K),
            (G1 - M2, PageSize::Size2M),
            (G1, PageSize::Size1G),
            (2 * G1, PageSize::Size2M),
            (2 * G1 + M2, PageSize::Size4K)
        ]
    );
    // Root, PDPT, two PDs, two PTs.
    assert_eq!(ept.table_frames(), 6);
    assert_eq!(alloc.live_frames(), 6);
    let t = ept.translate(g(G1 + 0x1234_5678)).unwrap();
    assert_eq!(
        (t.hpa.as_u64(), t.page_size),
        (5 * G1 + 0x1234_5678, PageSize::Size1G)
    );

    // Without 1-GiB support (Lynnfield) the same range uses 2-MiB pages.
    let (mut ept, mut alloc) = setup(LYNNFIELD);
    let f = ept.map(g(G1), h(5 * G1), G1, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    assert!(sizes(&ept).iter().all(|&(_, s)| s == PageSize::Size2M));
    assert_eq!(sizes(&ept).len(), 512);

    // A host address only 4-KiB aligned relative to the guest side forces 4-KiB pages.
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(K4), 2 * M2, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    assert_eq!(sizes(&ept).len(), 1024);
    assert_eq!(ept.table_frames(), 1 + 1 + 1 + 2);
}

#[test]
fn every_request_error() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let before = alloc.live_frames();
    let cases: Vec<(Result<ept::EptFlush, MapError>, MapError)> = vec![
        (
            ept.map(g(0), h(0), 0, RWX, &mut alloc),
            MapError::EmptyRange,
        ),
        (
            ept.map(g(0x800), h(0), K4, RWX, &mut alloc),
            MapError::Unaligned {
                what: RangePart::GuestPhysAddr,
                value: 0x800,
            },
        ),
        (
            ept.map(g(0), h(0x10), K4, RWX, &mut alloc),
            MapError::Unaligned {
                what: RangePart::HostPhysAddr,
                value: 0x10,
            },
        ),
        (
            ept.map(g(0), h(0), 100, RWX, &mut alloc),
            MapError::Unaligned {
                what: RangePart::Length,
                value: 100,
            },
        ),
        (
            ept.map(g((1 << 48) - K4), h(0), 2 * K4, RWX, &mut alloc),
            MapError::BeyondWidth {
                what: RangePart::GuestPhysAddr,
                end: (1 << 48) + K4,
                width: 48,
            },
        ),
        (
            ept.map(g(0), h((1 << 48) - K4), 2 * K4, RWX, &mut alloc),
            MapError::BeyondWidth {
                what: RangePart::HostPhysAddr,
                end: (1 << 48) + K4,
                width: 48,
            },
        ),
        (
            ept.map(
                g(0),
                h(0),
                K4,
                LeafAttributes::new(
                    Permissions::WRITE | Permissions::EXECUTE,
                    MemoryType::WriteBack,
                ),
                &mut alloc,
            ),
            MapError::WriteWithoutRead(Permissions::WRITE | Permissions::EXECUTE),
        ),
        (
            ept.map(
                g(0),
                h(0),
                K4,
                LeafAttributes::new(Permissions::empty(), MemoryType::WriteBack),
                &mut alloc,
            ),
            MapError::NoAccess,
        ),
        (
            ept.unmap(g(0), K4, &mut alloc),
            MapError::NotMapped { gpa: g(0) },
        ),
        (
            ept.protect(g(0), K4, RO, &mut alloc),
            MapError::NotMapped { gpa: g(0) },
        ),
        (
            ept.split(g(0), &mut alloc),
            MapError::NotMapped { gpa: g(0) },
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got.map(|f| f.pending_frames()).unwrap_err(), want);
    }
    assert_eq!(alloc.live_frames(), before);

    let f = ept.map(g(M2), h(M2), M2 + K4, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    assert_eq!(
        ept.map(g(0), h(0), 2 * M2, RWX, &mut alloc).unwrap_err(),
        MapError::AlreadyMapped {
            gpa: g(M2),
            level: Level::Pd
        }
    );
    assert_eq!(
        ept.map(g(2 * M2), h(0), K4, RWX, &mut alloc).unwrap_err(),
        MapError::AlreadyMapped {
            gpa: g(2 * M2),
            level: Level::Pt
        }
    );
    assert_eq!(
        ept.unmap(g(M2), M2 + 2 * K4, &mut alloc).unwrap_err(),
        MapError::NotMapped {
            gpa: g(2 * M2 + K4)
        }
    );
    assert_eq!(
        ept.split(g(2 * M2), &mut alloc).unwrap_err(),
        MapError::NotLargePage { gpa: g(2 * M2) }
    );

    // Execute-only needs IA32_VMX_EPT_VPID_CAP[0].
    let (mut ept, mut alloc) = setup(EptVpidCap(SKYLAKE_X.0 & !1));
    let xo = LeafAttributes::new(Permissions::EXECUTE, MemoryType::WriteBack);
    assert_eq!(
        ept.map(g(0), h(0), K4, xo, &mut alloc).unwrap_err(),
        MapError::ExecuteOnlyNotSupported(Permissions::EXECUTE)
    );
}

#[test]
fn configuration_errors() {
    let mut alloc = HeapFrameAllocator::new();
    let new = |cfg: EptConfig, alloc: &mut HeapFrameAllocator| {
        // SAFETY: heap frames are reachable at their address.
        EptMapper::new(cfg, unsafe { OffsetPhysToVirt::identity() }, alloc).map(|_| ())
    };
    assert_eq!(
        new(
            EptConfig::new(LYNNFIELD, 46).largest_page(PageSize::Size1G),
            &mut alloc
        ),
        Err(MapError::PageSizeNotSupported(PageSize::Size1G))
    );
    assert_eq!(
        new(
            EptConfig::new(SKYLAKE_X, 46).walk_length(WalkLength::Five),
            &mut alloc
        ),
        Err(MapError::Eptp(EptpError::WalkLengthNotSupported(
            WalkLength::Five
        )))
    );
    assert_eq!(
        new(
            EptConfig::new(LYNNFIELD, 46).accessed_dirty(true),
            &mut alloc
        ),
        Err(MapError::Eptp(EptpError::AccessedDirtyNotSupported))
    );
    assert_eq!(
        new(
            EptConfig::new(EptVpidCap(SKYLAKE_X.0 & !(1 << 20)), 46),
            &mut alloc
        ),
        Err(MapError::InveptNotSupported)
    );
    assert_eq!(
        new(EptConfig::new(SKYLAKE_X, 60), &mut alloc),
        Err(MapError::InvalidPhysAddrWidth(60))
    );
    assert_eq!(alloc.live_frames(), 0);
    // Heap frames lie far above 2^20: a 20-bit physical-address width refuses them, and the
    // root frame goes back.
    assert!(matches!(
        new(EptConfig::new(SKYLAKE_X, 20), &mut alloc),
        Err(MapError::FrameBeyondWidth { width: 20, .. })
    ));
    assert_eq!(alloc.live_frames(), 0);
    let mut empty = HeapFrameAllocator::with_limit(0);
    assert_eq!(
        new(EptConfig::new(SKYLAKE_X, 46), &mut empty),
        Err(MapError::OutOfFrames {
            needed: 1,
            obtained: 0
        })
    );
}

/// Out of frames: the tables and the allocator are exactly as before, for every limit below
/// what the operation needs; at the exact need, it succeeds.
#[test]
fn out_of_frames_leaves_everything_unchanged() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(4 * G1), G1, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    let f = ept
        .map(g(G1), h(8 * G1 + K4), 3 * M2, RO, &mut alloc)
        .unwrap();
    done(f, &mut alloc);
    let snapshot = mappings(&ept);
    let tables = ept.table_frames();

    type Op = fn(
        &mut EptMapper<OffsetPhysToVirt>,
        &mut HeapFrameAllocator,
    ) -> Result<ept::EptFlush, MapError>;
    // (operation, frames it needs)
    let ops: [(Op, usize); 5] = [
        // A new 1-GiB-aligned region as 4-KiB pages: PDPT exists; PD + 512 PTs.
        (
            |e, a| e.map_with_max_page(g(2 * G1), h(2 * G1), G1, RWX, PageSize::Size4K, a),
            513,
        ),
        // Protect a 4-KiB page inside the 1-GiB page: PD + PT.
        (|e, a| e.protect(g(M2 + K4), K4, RO, a), 2),
        // Unmap across two 2-MiB boundaries inside the 1-GiB page: PD + 2 PTs.
        (|e, a| e.unmap(g(M2 - K4), M2 + 2 * K4, a), 3),
        // Split the 1-GiB page.
        (|e, a| e.split(g(0), a), 1),
        // Map into a fresh PML4 slot: PDPT + PD + PT.
        (|e, a| e.map(g(1 << 40), h(0), K4, RWX, a), 3),
    ];
    for (op, needed) in ops {
        for limit in 0..needed.min(4) {
            alloc.set_limit(Some(alloc.live_frames() + limit));
            let live = alloc.live_frames();
            assert_eq!(
                op(&mut ept, &mut alloc).unwrap_err(),
                MapError::OutOfFrames {
                    needed,
                    obtained: limit
                }
            );
            assert_eq!(alloc.live_frames(), live);
            assert_eq!(mappings(&ept), snapshot);
            assert_eq!(ept.table_frames(), tables);
            assert_eq!(ept.check_invariants(), Ok(()));
        }
        // With exactly enough, it works; then undo by rebuilding from scratch.
        alloc.set_limit(Some(alloc.live_frames() + needed));
        let f = op(&mut ept, &mut alloc).unwrap();
        done(f, &mut alloc);
        alloc.set_limit(None);
        assert_eq!(ept.check_invariants(), Ok(()));
        done(ept.destroy(), &mut alloc);
        assert_eq!(alloc.live_frames(), 0);
        let (e2, a2) = setup(SKYLAKE_X);
        ept = e2;
        alloc = a2;
        let f = ept.map(g(0), h(4 * G1), G1, RWX, &mut alloc).unwrap();
        done(f, &mut alloc);
        let f = ept
            .map(g(G1), h(8 * G1 + K4), 3 * M2, RO, &mut alloc)
            .unwrap();
        done(f, &mut alloc);
    }
}

#[test]
fn protect_splits_only_at_the_edges_and_merge_restores() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(4 * G1), G1, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    let f = ept
        .protect(g(M2 - K4), M2 + 2 * K4, RO, &mut alloc)
        .unwrap();
    done(f, &mut alloc);
    // 1 GiB -> 512 × 2 MiB; the 2-MiB pages at both edges -> 4 KiB; the middle one stays 2 MiB.
    let s = sizes(&ept);
    assert_eq!(s.len(), 512 + 1 + 512 + 509);
    assert_eq!(ept.translate(g(M2)).unwrap().page_size, PageSize::Size2M);
    assert_eq!(
        ept.translate(g(M2)).unwrap().permissions(),
        Permissions::READ
    );
    assert_eq!(
        ept.translate(g(M2 - K4)).unwrap().memory_type(),
        Ok(MemoryType::Uncacheable)
    );
    assert_eq!(
        ept.translate(g(M2 - 2 * K4)).unwrap().permissions(),
        Permissions::RWX
    );
    assert_eq!(
        ept.translate(g(2 * M2 + K4)).unwrap().permissions(),
        Permissions::RWX
    );
    assert_eq!(ept.table_frames(), 1 + 1 + 1 + 2);

    // Restoring the attributes lets everything merge back into one 1-GiB page.
    let f = ept.protect(g(0), G1, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    let (f, merged) = ept.merge(g(0), G1).unwrap();
    assert_eq!(merged, 3);
    assert_eq!(f.pending_frames(), 3);
    // Frames come back only once the flush has run.
    assert_eq!(alloc.live_frames(), 5);
    done(f, &mut alloc);
    assert_eq!(alloc.live_frames(), 2);
    assert_eq!(sizes(&ept), [(0, PageSize::Size1G)]);
    assert_eq!(
        ept.translate(g(0x1234_5678)).unwrap().hpa.as_u64(),
        4 * G1 + 0x1234_5678
    );
}

#[test]
fn merge_respects_alignment_attributes_and_range() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    // 4 MiB as 4-KiB pages, second 2 MiB read-only.
    let f = ept
        .map_with_max_page(g(0), h(G1), 2 * M2, RWX, PageSize::Size4K, &mut alloc)
        .unwrap();
    done(f, &mut alloc);
    let f = ept.protect(g(M2 + K4), K4, RO, &mut alloc).unwrap();
    done(f, &mut alloc);
    // A range that does not cover a whole table merges nothing.
    let (f, merged) = ept.merge(g(0), M2 - K4).unwrap();
    assert_eq!((merged, f.pending_frames()), (0, 0));
    done(f, &mut alloc);
    let (f, merged) = ept.merge(g(0), 2 * M2).unwrap();
    done(f, &mut alloc);
    assert_eq!(merged, 1);
    assert_eq!(ept.translate(g(0)).unwrap().page_size, PageSize::Size2M);
    assert_eq!(ept.translate(g(M2)).unwrap().page_size, PageSize::Size4K);
    // Non-contiguous host pages never merge.
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(G1), M2 - K4, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    let f = ept.map(g(M2 - K4), h(3 * G1), K4, RWX, &mut alloc).unwrap();
    done(f, &mut alloc);
    let (f, merged) = ept.merge(g(0), M2).unwrap();
    done(f, &mut alloc);
    assert_eq!(merged, 0);
}

#[test]
fn unmap_frees_empty_tables_after_the_flush_and_destroy_frees_all() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let f = ept
        .map_with_max_page(g(G1), h(G1), 4 * M2, RWX, PageSize::Size4K, &mut alloc)
        .unwrap();
    done(f, &mut alloc);
    assert_eq!(ept.table_frames(), 1 + 1 + 1 + 4);
    let f = ept.unmap(g(G1), 4 * M2, &mut alloc).unwrap();
    assert_eq!(f.pending_frames(), 6);
    assert_eq!(f.invept_type(), InveptType::SingleContext);
    assert_eq!(f.eptp(), ept.eptp().bits());
    assert_eq!(ept.table_frames(), 1);
    assert_eq!(alloc.live_frames(), 7);
    done(f, &mut alloc);
    assert_eq!(alloc.live_frames(), 1);
    assert_eq!(mappings(&ept), []);

    let f = ept
        .map(g(0), h(0), 3 * G1 + 5 * K4, RWX, &mut alloc)
        .unwrap();
    done(f, &mut alloc);
    let f = ept.destroy();
    assert_eq!(f.pending_frames(), alloc.live_frames());
    done(f, &mut alloc);
    assert_eq!(alloc.live_frames(), 0);
}

#[test]
fn flush_tokens_combine() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let a = ept
        .map_with_max_page(g(0), h(0), M2, RWX, PageSize::Size4K, &mut alloc)
        .unwrap();
    let b = ept.unmap(g(0), M2, &mut alloc).unwrap();
    let c = a.combine(b).unwrap();
    assert_eq!(c.invept_type(), InveptType::SingleContext);
    assert_eq!(c.pending_frames(), 3);
    let (other, mut alloc2) = setup(SKYLAKE_X);
    let d = c.combine(other.destroy()).unwrap();
    assert_eq!(d.invept_type(), InveptType::AllContext);
    assert_eq!(d.pending_frames(), 4);
    // SAFETY: never used by a processor; frames of both mappers come from heap blocks of the
    // same global allocator, so either HeapFrameAllocator can take them back.
    unsafe { d.assume_flushed(&mut alloc2) };

    // Without all-context INVEPT, tokens of different EPTPs stay apart.
    let caps = EptVpidCap(SKYLAKE_X.0 & !(1 << 26));
    let (e1, mut a1) = setup(caps);
    let (e2, mut a2) = setup(caps);
    let (t1, t2) = e1.destroy().combine(e2.destroy()).unwrap_err();
    done(t1, &mut a1);
    done(t2, &mut a2);
}

#[test]
fn diagnosis_on_mapper_tables() {
    let (mut ept, mut alloc) = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(G1), M2 + K4, RO, &mut alloc).unwrap();
    done(f, &mut alloc);
    let walker = ept.walker();
    let v = walker
        .explain_violation(g(0x1000), Access::DATA_WRITE, false, ept.entry_reader())
        .unwrap();
    assert_eq!(
        (v.level, v.reason),
        (Level::Pd, ViolationReason::Missing(Permissions::WRITE))
    );
    let v = walker
        .explain_violation(g(M2 + K4), Access::DATA_READ, false, ept.entry_reader())
        .unwrap();
    assert_eq!(
        (v.level, v.reason),
        (Level::Pt, ViolationReason::NotPresent)
    );
    let v = walker
        .explain_violation(g(G1), Access::DATA_READ, false, ept.entry_reader())
        .unwrap();
    assert_eq!(
        (v.level, v.reason),
        (Level::Pdpt, ViolationReason::NotPresent)
    );
    assert_eq!(
        walker.explain_violation(g(M2), Access::DATA_READ, false, ept.entry_reader()),
        None
    );
    assert_eq!(
        walker.explain_misconfiguration(g(M2), ept.entry_reader()),
        None
    );
}

#[test]
fn frame_pool_backed_mapper_and_five_level_walk() {
    let mut frames = vec![ept::Frame::ZERO; 8];
    let mut pool = ept::FramePool::new(&mut frames);
    // A processor with 5-level EPT (IA32_VMX_EPT_VPID_CAP bit 7).
    let caps = EptVpidCap(SKYLAKE_X.0 | (1 << 7));
    // SAFETY: pool frames are reachable at their address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let mut ept = EptMapper::new(
        EptConfig::new(caps, 48).walk_length(WalkLength::Five),
        p2v,
        &mut pool,
    )
    .unwrap();
    assert_eq!(ept.eptp().walk_length(), Ok(WalkLength::Five));
    let top = 1u64 << 51;
    let f = ept.map(g(top), h(K4), K4, RWX, &mut pool).unwrap();
    // SAFETY: never used by a processor.
    unsafe { f.assume_flushed(&mut pool) };
    assert_eq!(ept.table_frames(), 5);
    assert_eq!(
        ept.translate(g(top + 0x10)).unwrap().hpa.as_u64(),
        K4 + 0x10
    );
    assert_eq!(pool.free_frames(), 3);
    assert_eq!(
        ept.map(g((1 << 52) - K4), h(0), 2 * K4, RWX, &mut pool)
            .unwrap_err(),
        MapError::BeyondWidth {
            what: RangePart::GuestPhysAddr,
            end: (1 << 52) + K4,
            width: 52
        }
    );
}
