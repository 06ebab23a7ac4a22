//! Targeted tests of the mapper: page-size choice, every error path, all-or-nothing behaviour
//! when frames run out, merge/split/destroy frame accounting, flush tokens and diagnosis.

use ept::{
    Access, EptConfig, EptInvalidate, EptMapper, EptpError, FlushError, GuestPhysAddr,
    HeapFrameAllocator, HostPhysAddr, LeafAttributes, Level, MapError, Mapping, MemoryType,
    OffsetPhysToVirt, PageSize, Permissions, RangePart, ViolationReason, WalkLength,
};
use vmx_caps::EptVpidCap;
use vmx_core::InveptType;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
/// IA32_VMX_EPT_VPID_CAP values captured under Bochs (the dumps in vmx-caps/testdata).
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

type Mapper = EptMapper<OffsetPhysToVirt, HeapFrameAllocator>;

fn setup(caps: EptVpidCap) -> Mapper {
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    EptMapper::new(EptConfig::new(caps, 48), p2v, HeapFrameAllocator::new()).unwrap()
}

fn done(ept: &mut Mapper, flush: ept::EptFlush) {
    // SAFETY: these tables are never used by a processor.
    unsafe { ept.assume_flushed(flush) };
}

/// Tears `ept` down and returns its allocator.
fn destroy(ept: Mapper) -> HeapFrameAllocator {
    // SAFETY: no VMCS holds this EPT; `NeverUsed` invalidates nothing, which is right for
    // tables no processor has walked.
    unsafe { ept.destroy(&mut NeverUsed) }.unwrap()
}

/// The invalidation of an EPT that no processor has used: nothing to do.
struct NeverUsed;

// SAFETY: the tests' EPTs are never loaded by a processor, so none holds their translations.
unsafe impl EptInvalidate for NeverUsed {
    type Error = core::convert::Infallible;

    fn invalidate(&mut self, _: InveptType, _: u64) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn live(ept: &Mapper) -> usize {
    ept.allocator().live_frames()
}

fn mappings(ept: &Mapper) -> Vec<Mapping> {
    let mut v = Vec::new();
    ept.for_each_mapping(|m| v.push(m));
    v
}

fn sizes(ept: &Mapper) -> Vec<(u64, PageSize)> {
    mappings(ept)
        .into_iter()
        .map(|m| (m.gpa.as_u64(), m.page_size))
        .collect()
}

#[test]
fn chooses_the_largest_page_alignment_and_capabilities_allow() {
    let mut ept = setup(SKYLAKE_X);
    // GPA 1G - 2M - 4K .. 2G + 2M + 4K, HPA offset by 4 GiB: 4K, 2M, 1G, 2M, 4K.
    let start = G1 - M2 - K4;
    let len = G1 + 2 * M2 + 2 * K4;
    let f = ept.map(g(start), h(start + 4 * G1), len, RWX).unwrap();
    done(&mut ept, f);
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
    assert_eq!(live(&ept), 6);
    let t = ept.translate(g(G1 + 0x1234_5678)).unwrap();
    assert_eq!(
        (t.hpa.as_u64(), t.page_size),
        (5 * G1 + 0x1234_5678, PageSize::Size1G)
    );

    // Without 1-GiB support (Lynnfield) the same range uses 2-MiB pages.
    let mut ept = setup(LYNNFIELD);
    let f = ept.map(g(G1), h(5 * G1), G1, RWX).unwrap();
    done(&mut ept, f);
    assert!(sizes(&ept).iter().all(|&(_, s)| s == PageSize::Size2M));
    assert_eq!(sizes(&ept).len(), 512);

    // A host address only 4-KiB aligned relative to the guest side forces 4-KiB pages.
    let mut ept = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(K4), 2 * M2, RWX).unwrap();
    done(&mut ept, f);
    assert_eq!(sizes(&ept).len(), 1024);
    assert_eq!(ept.table_frames(), 1 + 1 + 1 + 2);
}

#[test]
fn every_request_error() {
    let mut ept = setup(SKYLAKE_X);
    let before = live(&ept);
    let cases: Vec<(Result<ept::EptFlush, MapError>, MapError)> = vec![
        (ept.map(g(0), h(0), 0, RWX), MapError::EmptyRange),
        (
            ept.map(g(0x800), h(0), K4, RWX),
            MapError::Unaligned {
                what: RangePart::GuestPhysAddr,
                value: 0x800,
            },
        ),
        (
            ept.map(g(0), h(0x10), K4, RWX),
            MapError::Unaligned {
                what: RangePart::HostPhysAddr,
                value: 0x10,
            },
        ),
        (
            ept.map(g(0), h(0), 100, RWX),
            MapError::Unaligned {
                what: RangePart::Length,
                value: 100,
            },
        ),
        (
            ept.map(g((1 << 48) - K4), h(0), 2 * K4, RWX),
            MapError::BeyondWidth {
                what: RangePart::GuestPhysAddr,
                end: (1 << 48) + K4,
                width: 48,
            },
        ),
        (
            ept.map(g(0), h((1 << 48) - K4), 2 * K4, RWX),
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
            ),
            MapError::WriteWithoutRead(Permissions::WRITE | Permissions::EXECUTE),
        ),
        (
            ept.map(
                g(0),
                h(0),
                K4,
                LeafAttributes::new(Permissions::empty(), MemoryType::WriteBack),
            ),
            MapError::NoAccess,
        ),
        (ept.unmap(g(0), K4), MapError::NotMapped { gpa: g(0) }),
        (ept.protect(g(0), K4, RO), MapError::NotMapped { gpa: g(0) }),
        (ept.split(g(0)), MapError::NotMapped { gpa: g(0) }),
    ];
    for (got, want) in cases {
        assert_eq!(got.map(|f| f.eptp()).unwrap_err(), want);
    }
    assert_eq!(live(&ept), before);

    let f = ept.map(g(M2), h(M2), M2 + K4, RWX).unwrap();
    done(&mut ept, f);
    assert_eq!(
        ept.map(g(0), h(0), 2 * M2, RWX).unwrap_err(),
        MapError::AlreadyMapped {
            gpa: g(M2),
            level: Level::Pd
        }
    );
    assert_eq!(
        ept.map(g(2 * M2), h(0), K4, RWX).unwrap_err(),
        MapError::AlreadyMapped {
            gpa: g(2 * M2),
            level: Level::Pt
        }
    );
    assert_eq!(
        ept.unmap(g(M2), M2 + 2 * K4).unwrap_err(),
        MapError::NotMapped {
            gpa: g(2 * M2 + K4)
        }
    );
    assert_eq!(
        ept.split(g(2 * M2)).unwrap_err(),
        MapError::NotLargePage { gpa: g(2 * M2) }
    );

    // Execute-only needs IA32_VMX_EPT_VPID_CAP[0].
    let mut ept = setup(EptVpidCap(SKYLAKE_X.0 & !1));
    let xo = LeafAttributes::new(Permissions::EXECUTE, MemoryType::WriteBack);
    assert_eq!(
        ept.map(g(0), h(0), K4, xo).unwrap_err(),
        MapError::ExecuteOnlyNotSupported(Permissions::EXECUTE)
    );
}

#[test]
fn configuration_errors() {
    let mut alloc = HeapFrameAllocator::new();
    let new = |cfg: EptConfig, alloc: &mut HeapFrameAllocator| {
        // SAFETY: heap frames are reachable at their address.
        EptMapper::new(cfg, unsafe { OffsetPhysToVirt::identity() }, alloc)
            .map(|_| ())
            .map_err(|e| e.error)
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
    let mut ept = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(4 * G1), G1, RWX).unwrap();
    done(&mut ept, f);
    let f = ept.map(g(G1), h(8 * G1 + K4), 3 * M2, RO).unwrap();
    done(&mut ept, f);
    let snapshot = mappings(&ept);
    let tables = ept.table_frames();

    type Op = fn(&mut Mapper) -> Result<ept::EptFlush, MapError>;
    // (operation, frames it needs)
    let ops: [(Op, usize); 5] = [
        // A new 1-GiB-aligned region as 4-KiB pages: PDPT exists; PD + 512 PTs.
        (
            |e| e.map_with_max_page(g(2 * G1), h(2 * G1), G1, RWX, PageSize::Size4K),
            513,
        ),
        // Protect a 4-KiB page inside the 1-GiB page: PD + PT.
        (|e| e.protect(g(M2 + K4), K4, RO), 2),
        // Unmap across two 2-MiB boundaries inside the 1-GiB page: PD + 2 PTs.
        (|e| e.unmap(g(M2 - K4), M2 + 2 * K4), 3),
        // Split the 1-GiB page.
        (|e| e.split(g(0)), 1),
        // Map into a fresh PML4 slot: PDPT + PD + PT.
        (|e| e.map(g(1 << 40), h(0), K4, RWX), 3),
    ];
    for (op, needed) in ops {
        for limit in 0..needed.min(4) {
            ept.allocator().set_limit(Some(live(&ept) + limit));
            let before = live(&ept);
            assert_eq!(
                op(&mut ept).unwrap_err(),
                MapError::OutOfFrames {
                    needed,
                    obtained: limit
                }
            );
            assert_eq!(live(&ept), before);
            assert_eq!(mappings(&ept), snapshot);
            assert_eq!(ept.table_frames(), tables);
            assert_eq!(ept.check_invariants(), Ok(()));
        }
        // With exactly enough, it works; then undo by rebuilding from scratch.
        ept.allocator().set_limit(Some(live(&ept) + needed));
        let f = op(&mut ept).unwrap();
        done(&mut ept, f);
        ept.allocator().set_limit(None);
        assert_eq!(ept.check_invariants(), Ok(()));
        assert_eq!(destroy(ept).live_frames(), 0);
        ept = setup(SKYLAKE_X);
        let f = ept.map(g(0), h(4 * G1), G1, RWX).unwrap();
        done(&mut ept, f);
        let f = ept.map(g(G1), h(8 * G1 + K4), 3 * M2, RO).unwrap();
        done(&mut ept, f);
    }
}

#[test]
fn protect_splits_only_at_the_edges_and_merge_restores() {
    let mut ept = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(4 * G1), G1, RWX).unwrap();
    done(&mut ept, f);
    let f = ept.protect(g(M2 - K4), M2 + 2 * K4, RO).unwrap();
    done(&mut ept, f);
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
    let f = ept.protect(g(0), G1, RWX).unwrap();
    done(&mut ept, f);
    let (f, merged) = ept.merge(g(0), G1).unwrap();
    assert_eq!(merged, 3);
    assert_eq!(ept.pending_frames(), 3);
    // Frames come back only once the flush has run.
    assert_eq!(live(&ept), 5);
    done(&mut ept, f);
    assert_eq!(live(&ept), 2);
    assert_eq!(sizes(&ept), [(0, PageSize::Size1G)]);
    assert_eq!(
        ept.translate(g(0x1234_5678)).unwrap().hpa.as_u64(),
        4 * G1 + 0x1234_5678
    );
}

#[test]
fn merge_respects_alignment_attributes_and_range() {
    let mut ept = setup(SKYLAKE_X);
    // 4 MiB as 4-KiB pages, second 2 MiB read-only.
    let f = ept
        .map_with_max_page(g(0), h(G1), 2 * M2, RWX, PageSize::Size4K)
        .unwrap();
    done(&mut ept, f);
    let f = ept.protect(g(M2 + K4), K4, RO).unwrap();
    done(&mut ept, f);
    // A range that does not cover a whole table merges nothing.
    let (f, merged) = ept.merge(g(0), M2 - K4).unwrap();
    assert_eq!((merged, ept.pending_frames()), (0, 0));
    done(&mut ept, f);
    let (f, merged) = ept.merge(g(0), 2 * M2).unwrap();
    done(&mut ept, f);
    assert_eq!(merged, 1);
    assert_eq!(ept.translate(g(0)).unwrap().page_size, PageSize::Size2M);
    assert_eq!(ept.translate(g(M2)).unwrap().page_size, PageSize::Size4K);
    // Non-contiguous host pages never merge.
    let mut ept = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(G1), M2 - K4, RWX).unwrap();
    done(&mut ept, f);
    let f = ept.map(g(M2 - K4), h(3 * G1), K4, RWX).unwrap();
    done(&mut ept, f);
    let (f, merged) = ept.merge(g(0), M2).unwrap();
    done(&mut ept, f);
    assert_eq!(merged, 0);
}

#[test]
fn unmap_frees_empty_tables_after_the_flush_and_destroy_frees_all() {
    let mut ept = setup(SKYLAKE_X);
    let f = ept
        .map_with_max_page(g(G1), h(G1), 4 * M2, RWX, PageSize::Size4K)
        .unwrap();
    done(&mut ept, f);
    assert_eq!(ept.table_frames(), 1 + 1 + 1 + 4);
    let f = ept.unmap(g(G1), 4 * M2).unwrap();
    assert_eq!(ept.pending_frames(), 6);
    assert_eq!(f.invept_type(), InveptType::SingleContext);
    assert_eq!(f.eptp(), ept.eptp().bits());
    assert_eq!(ept.table_frames(), 1);
    assert_eq!(live(&ept), 7);
    done(&mut ept, f);
    assert_eq!(live(&ept), 1);
    assert_eq!(mappings(&ept), []);

    let f = ept.map(g(0), h(0), 3 * G1 + 5 * K4, RWX).unwrap();
    // An unflushed change: destroy's own invalidation covers it.
    let _pending = ept.unmap(g(3 * G1), 5 * K4).unwrap();
    assert_eq!(ept.pending_frames(), 2); // the PT and the PD
    done(&mut ept, f);
    assert_eq!(destroy(ept).live_frames(), 0);
}

#[test]
fn flush_tokens_combine_per_ept() {
    let mut ept = setup(SKYLAKE_X);
    let a = ept
        .map_with_max_page(g(0), h(0), M2, RWX, PageSize::Size4K)
        .unwrap();
    let b = ept.unmap(g(0), M2).unwrap();
    let c = a.combine(b).unwrap();
    assert_eq!(c.invept_type(), InveptType::SingleContext);
    assert_eq!(ept.pending_frames(), 3);
    // Tokens of different EPTs stay apart: each mapper flushes its own.
    let mut other = setup(SKYLAKE_X);
    let d = other.map(g(0), h(0), K4, RWX).unwrap();
    let (c, d) = c.combine(d).unwrap_err();
    done(&mut ept, c);
    done(&mut other, d);
    assert_eq!(ept.pending_frames(), 0);
}

/// An invalidation that records its calls and fails when told to.
#[derive(Default)]
struct Recorder {
    calls: Vec<(InveptType, u64)>,
    fail: bool,
}

// SAFETY: the tests' EPTs are never loaded by a processor; the recorder claims success only
// where that is vacuously true.
unsafe impl EptInvalidate for Recorder {
    type Error = &'static str;

    fn invalidate(&mut self, kind: InveptType, eptp: u64) -> Result<(), Self::Error> {
        self.calls.push((kind, eptp));
        if self.fail { Err("refused") } else { Ok(()) }
    }
}

/// Issue 11: with the allocator passed per call, a frame could be freed into another pool.
/// Now each mapper owns (here: borrows for its life) its pool: a token flushed on the wrong
/// mapper is refused, frames go back only to the pool they came from, and only after a
/// successful invalidation of the right EPTP.
#[test]
fn freed_frames_go_back_to_their_own_pool_after_the_invalidation() {
    let mut frames_a = vec![ept::Frame::ZERO; 8];
    let mut frames_b = vec![ept::Frame::ZERO; 8];
    let mut pool_a = ept::FramePool::new(&mut frames_a);
    let mut pool_b = ept::FramePool::new(&mut frames_b);
    // SAFETY: pool frames are reachable at their address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let config = EptConfig::new(SKYLAKE_X, 48);
    let mut a = EptMapper::new(config, p2v, &mut pool_a).unwrap();
    let mut b = EptMapper::new(config, p2v, &mut pool_b).unwrap();
    let mut inv = Recorder::default();
    let f = a.map(g(0), h(0), K4, RWX).unwrap();
    a.flush(f, &mut inv).unwrap();
    let f = b.map(g(0), h(0), K4, RWX).unwrap();
    b.flush(f, &mut inv).unwrap();
    assert_eq!(
        (a.allocator().free_frames(), b.allocator().free_frames()),
        (4, 4)
    );

    let unmap_a = a.unmap(g(0), K4).unwrap();
    assert_eq!(a.pending_frames(), 3);
    // A's token on B: refused, nothing invalidated, nothing freed anywhere.
    let calls = inv.calls.len();
    let unmap_a = match b.flush(unmap_a, &mut inv) {
        Err(FlushError::ForeignToken { token, mapper }) => {
            assert_eq!(mapper, b.eptp().bits());
            token
        }
        other => panic!("foreign token accepted: {other:?}"),
    };
    assert_eq!(inv.calls.len(), calls);
    assert_eq!(
        (a.allocator().free_frames(), b.allocator().free_frames()),
        (4, 4)
    );
    // A failed invalidation keeps the frames.
    inv.fail = true;
    let unmap_a = match a.flush(unmap_a, &mut inv) {
        Err(FlushError::Invalidation { error, token }) => {
            assert_eq!(error, "refused");
            token
        }
        other => panic!("failed invalidation reported as {other:?}"),
    };
    assert_eq!(a.allocator().free_frames(), 4);
    // The right mapper, a successful invalidation: the PDPT, PD and PT go back to pool A.
    inv.fail = false;
    a.flush(unmap_a, &mut inv).unwrap();
    assert_eq!(
        inv.calls.last(),
        Some(&(InveptType::SingleContext, a.eptp().bits()))
    );
    assert_eq!(
        (a.allocator().free_frames(), b.allocator().free_frames()),
        (7, 4)
    );
    assert_eq!(a.pending_frames(), 0);
    // SAFETY: no VMCS holds these EPTs.
    let pool_b = unsafe { b.destroy(&mut inv) }.unwrap();
    assert_eq!(pool_b.free_frames(), 8);
    assert_eq!(a.table_frames(), 1);
}

#[test]
fn diagnosis_on_mapper_tables() {
    let mut ept = setup(SKYLAKE_X);
    let f = ept.map(g(0), h(G1), M2 + K4, RO).unwrap();
    done(&mut ept, f);
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
    let f = ept.map(g(top), h(K4), K4, RWX).unwrap();
    // SAFETY: never used by a processor.
    unsafe { ept.assume_flushed(f) };
    assert_eq!(ept.table_frames(), 5);
    assert_eq!(
        ept.translate(g(top + 0x10)).unwrap().hpa.as_u64(),
        K4 + 0x10
    );
    assert_eq!(ept.allocator().free_frames(), 3);
    assert_eq!(
        ept.map(g((1 << 52) - K4), h(0), 2 * K4, RWX).unwrap_err(),
        MapError::BeyondWidth {
            what: RangePart::GuestPhysAddr,
            end: (1 << 52) + K4,
            width: 52
        }
    );
}

/// Issue 11: a processor (typically a nested one) may allow 1-GiB pages but not 2-MiB pages.
/// Each size is checked on its own: no 2-MiB leaf is ever written (the processor would treat
/// it as an EPT misconfiguration), and a split 1-GiB page becomes 4-KiB pages.
#[test]
fn one_gib_pages_without_two_mib_pages() {
    let caps = EptVpidCap(SKYLAKE_X.0 & !(1 << 16));
    assert!(caps.pdpte_1gb() && !caps.pde_2mb());
    let mut ept = setup(caps);
    let walker = ept.walker();
    let f = ept.map(g(0), h(G1), G1 + 2 * M2, RWX).unwrap();
    done(&mut ept, f);
    let s = sizes(&ept);
    assert_eq!(s[0], (0, PageSize::Size1G));
    assert_eq!(s.len(), 1 + 1024);
    assert!(
        s[1..].iter().all(|&(_, size)| size == PageSize::Size4K),
        "{:?}",
        &s[..3]
    );
    assert_eq!(ept.check_invariants(), Ok(()));
    for a in [0, M2, G1, G1 + M2 + 0x1234] {
        assert_eq!(
            walker.explain_misconfiguration(g(a), ept.entry_reader()),
            None,
            "{a:#x}"
        );
    }
    // Splitting the 1-GiB page: a PD and 512 PTs of 4-KiB pages, same translations.
    let tables = ept.table_frames();
    let f = ept.split(g(0x1234_5000)).unwrap();
    done(&mut ept, f);
    assert_eq!(ept.table_frames(), tables + 513);
    assert_eq!(
        ept.translate(g(0x1234_5678)).unwrap().page_size,
        PageSize::Size4K
    );
    assert_eq!(
        ept.translate(g(0x1234_5678)).unwrap().hpa.as_u64(),
        G1 + 0x1234_5678
    );
    // Protecting a page inside a fresh 1-GiB page splits it the same way.
    let f = ept.map(g(4 * G1), h(4 * G1), G1, RWX).unwrap();
    done(&mut ept, f);
    let f = ept.protect(g(4 * G1 + M2), K4, RO).unwrap();
    done(&mut ept, f);
    assert_eq!(ept.check_invariants(), Ok(()));
    // Merging never builds a 2-MiB page.
    let f = ept.protect(g(4 * G1 + M2), K4, RWX).unwrap();
    done(&mut ept, f);
    let (f, _) = ept.merge(g(0), 5 * G1).unwrap();
    done(&mut ept, f);
    assert!(
        !sizes(&ept)
            .iter()
            .any(|&(_, size)| size == PageSize::Size2M)
    );
    assert_eq!(ept.check_invariants(), Ok(()));
    for a in [0x1234_5678, 4 * G1 + M2, 4 * G1 + G1 - K4] {
        assert_eq!(
            walker.explain_misconfiguration(g(a), ept.entry_reader()),
            None,
            "{a:#x}"
        );
    }
    assert_eq!(destroy(ept).live_frames(), 0);
}
