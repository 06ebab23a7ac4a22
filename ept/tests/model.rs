//! Model-based property tests: random sequences of map/unmap/protect/split/merge, each checked
//! against a plain `BTreeMap` of 4-KiB pages, with frame limits that make some operations run
//! out of frames (which must leave the tables unchanged).

use std::cell::Cell;
use std::collections::BTreeMap;

use ept::{
    EptConfig, EptMapper, GuestPhysAddr, HeapFrameAllocator, HostPhysAddr, LeafAttributes,
    LeafFlags, MapError, MemoryType, OffsetPhysToVirt, PageSize, Permissions,
};
use proptest::prelude::*;
use proptest::test_runner::RngAlgorithm;
use vmx_caps::EptVpidCap;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;
/// IA32_VMX_EPT_VPID_CAP of Bochs' corei7_skylake_x (execute-only, 2M and 1G pages, A/D).
const SKYLAKE_X: EptVpidCap = EptVpidCap(0x0000_0f01_0633_4141);

fn attrs(i: usize) -> LeafAttributes {
    match i % 6 {
        0 => LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack),
        1 => LeafAttributes::new(Permissions::READ, MemoryType::WriteBack),
        2 => LeafAttributes::new(Permissions::RW, MemoryType::Uncacheable)
            .with_flags(LeafFlags::SUPPRESS_VE),
        3 => LeafAttributes::new(
            Permissions::RX | Permissions::USER_EXECUTE,
            MemoryType::WriteThrough,
        )
        .with_flags(LeafFlags::IGNORE_PAT),
        4 => LeafAttributes::new(Permissions::EXECUTE, MemoryType::WriteBack),
        // Invalid: write without read.
        _ => LeafAttributes::new(Permissions::WRITE, MemoryType::WriteBack),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Map {
        gpa: u64,
        hpa: u64,
        len: u64,
        attr: usize,
        max: PageSize,
    },
    Unmap {
        gpa: u64,
        len: u64,
    },
    Protect {
        gpa: u64,
        len: u64,
        attr: usize,
    },
    Split {
        gpa: u64,
    },
    Merge {
        gpa: u64,
        len: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Space {
    bytes: u64,
    big: u64,
}

fn addr(space: Space) -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => (0..space.bytes / space.big).prop_map(move |c| c * space.big),
        3 => (0..space.bytes / M2).prop_map(|c| c * M2),
        3 => (0..space.bytes / K4).prop_map(|p| p * K4),
    ]
}

fn len(space: Space) -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => (1..3u64).prop_map(move |n| n * space.big),
        3 => (1..4u64).prop_map(|n| n * M2),
        3 => (1..300u64).prop_map(|n| n * K4),
        2 => (1..8u64).prop_map(|n| n * K4),
    ]
}

fn op(space: Space) -> impl Strategy<Value = Op> {
    let hpa = prop_oneof![
        // Same alignment as the guest side (a 1-GiB-aligned delta).
        Just(None),
        (0..(1u64 << 20)).prop_map(|p| Some((1 << 36) + p * K4)),
    ];
    let max = prop_oneof![
        Just(PageSize::Size1G),
        Just(PageSize::Size2M),
        Just(PageSize::Size4K)
    ];
    prop_oneof![
        4 => (addr(space), hpa, len(space), 0..6usize, max).prop_map(|(gpa, hpa, len, attr, max)| Op::Map {
            gpa,
            hpa: hpa.unwrap_or(gpa + (1 << 37)),
            len,
            attr,
            max
        }),
        2 => (addr(space), len(space)).prop_map(|(gpa, len)| Op::Unmap { gpa, len }),
        2 => (addr(space), len(space), 0..6usize).prop_map(|(gpa, len, attr)| Op::Protect { gpa, len, attr }),
        2 => addr(space).prop_map(|gpa| Op::Split { gpa }),
        1 => (addr(space), len(space)).prop_map(|(gpa, len)| Op::Merge { gpa, len }),
    ]
}

/// Whether to move the operation into a mapped run (3 in 4).
fn target() -> impl Strategy<Value = bool> {
    prop_oneof![3 => Just(true), 1 => Just(false)]
}

/// Frame limit for one operation: usually none, sometimes only 0-2 frames beyond what is live.
fn limit() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![4 => Just(None), 1 => (0..3usize).prop_map(Some)]
}

type Model = BTreeMap<u64, (u64, u64)>;

/// Outcomes seen on this thread, to check that the generated cases exercise every path.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: [usize; 5],
    errors: usize,
    out_of_frames: usize,
    merged: usize,
}

thread_local! {
    static TALLY: Cell<Tally> = Cell::new(Tally::default());
}

fn tally(f: impl FnOnce(&mut Tally)) {
    TALLY.with(|t| {
        let mut v = t.get();
        f(&mut v);
        t.set(v);
    });
}

struct World {
    ept: EptMapper<OffsetPhysToVirt, HeapFrameAllocator>,
    model: Model,
    space: Space,
}

fn gpa(a: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(a).unwrap()
}

impl World {
    fn new(space: Space, caps: EptVpidCap, largest: PageSize) -> Self {
        // SAFETY: HeapFrameAllocator frames live at their "physical" (= heap) address.
        let p2v = unsafe { OffsetPhysToVirt::identity() };
        let ept = EptMapper::new(
            EptConfig::new(caps, 48).largest_page(largest),
            p2v,
            HeapFrameAllocator::new(),
        )
        .unwrap();
        Self {
            ept,
            model: Model::new(),
            space,
        }
    }

    fn done(&mut self, flush: ept::EptFlush) {
        // SAFETY: these tables are never used by a processor.
        unsafe { self.ept.assume_flushed(flush) };
    }

    /// Maximal runs of mapped pages, as [start, end).
    fn runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &k in self.model.keys() {
            match runs.last_mut() {
                Some(r) if r.1 == k => r.1 += K4,
                _ => runs.push((k, k + K4)),
            }
        }
        runs
    }

    /// Moves an unmap/protect/split/merge into a mapped run (the op's own address and length
    /// pick which run and where), so that those operations often succeed.
    fn retarget(&self, op: &Op) -> Op {
        let runs = self.runs();
        if runs.is_empty() {
            return op.clone();
        }
        let place = |g: u64, len: u64| {
            let (rs, re) = runs[(g / K4) as usize % runs.len()];
            let aligned = (rs + M2 - 1) & !(M2 - 1);
            let start = if g.is_multiple_of(M2) && aligned < re {
                aligned
            } else {
                rs + (g / K4) % ((re - rs) / K4) * K4
            };
            (start, len.min(re - start))
        };
        match *op {
            Op::Map {
                gpa,
                hpa,
                len,
                attr,
                max,
            } => {
                // Into a gap between runs, keeping the host side's alignment relative to it.
                let mut gaps = Vec::new();
                let mut prev = 0;
                for &(rs, re) in runs
                    .iter()
                    .chain([(self.space.bytes, self.space.bytes)].iter())
                {
                    if rs > prev {
                        gaps.push((prev, rs));
                    }
                    prev = re;
                }
                if gaps.is_empty() {
                    return op.clone();
                }
                let (gs, ge) = gaps[(gpa / K4) as usize % gaps.len()];
                let aligned = (gs + M2 - 1) & !(M2 - 1);
                let start = if gpa.is_multiple_of(M2) && aligned < ge {
                    aligned
                } else {
                    gs
                };
                Op::Map {
                    gpa: start,
                    hpa: hpa - gpa + start,
                    len: len.min(ge - start),
                    attr,
                    max,
                }
            }
            Op::Unmap { gpa, len } => {
                let (gpa, len) = place(gpa, len);
                Op::Unmap { gpa, len }
            }
            Op::Protect { gpa, len, attr } => {
                let (gpa, len) = place(gpa, len);
                Op::Protect { gpa, len, attr }
            }
            Op::Split { gpa } => {
                // Prefer a page that is large, if there is one.
                let large: Vec<u64> = (0..self.space.bytes)
                    .step_by(M2 as usize)
                    .filter(|&a| {
                        self.ept
                            .translate(self::gpa(a))
                            .is_some_and(|t| t.page_size != PageSize::Size4K)
                    })
                    .collect();
                match large.len() {
                    0 => Op::Split {
                        gpa: place(gpa, K4).0,
                    },
                    n => Op::Split {
                        gpa: large[(gpa / K4) as usize % n] + gpa % M2,
                    },
                }
            }
            Op::Merge { gpa, len } => {
                let (gpa, len) = place(gpa, len);
                Op::Merge { gpa, len }
            }
        }
    }

    fn first_mapped(&self, s: u64, e: u64) -> Option<u64> {
        self.model.range(s..e).next().map(|(k, _)| *k)
    }

    fn first_unmapped(&self, s: u64, e: u64) -> Option<u64> {
        let mut expect = s;
        for k in self.model.range(s..e).map(|(k, _)| *k) {
            if k != expect {
                return Some(expect);
            }
            expect += K4;
        }
        (expect < e).then_some(expect)
    }

    /// Applies `op` to both and checks the outcome against the model's prediction.
    fn step(&mut self, op: &Op, limit: Option<usize>) -> Result<(), TestCaseError> {
        let clamp = |g: u64, l: u64| l.min(self.space.bytes - g);
        self.ept
            .allocator()
            .set_limit(limit.map(|l| self.ept.allocator().live_frames() + l));
        let before_frames = self.ept.allocator().live_frames();
        let result = match *op {
            Op::Map {
                gpa: g,
                hpa,
                len,
                attr,
                max,
            } => {
                let len = clamp(g, len);
                let a = attrs(attr);
                let r = self.ept.map_with_max_page(
                    gpa(g),
                    HostPhysAddr::new(hpa).unwrap(),
                    len,
                    a,
                    max,
                );
                let expect = if attr % 6 == 5 {
                    Err(MapError::WriteWithoutRead(Permissions::WRITE))
                } else if let Some(m) = self.first_mapped(g, g + len) {
                    let level = self.ept.translate(gpa(m)).unwrap().page_size.level();
                    Err(MapError::AlreadyMapped { gpa: gpa(m), level })
                } else {
                    Ok(())
                };
                let ok = self.check(r, expect, before_frames)?;
                if ok {
                    for p in (g..g + len).step_by(K4 as usize) {
                        self.model.insert(p, (hpa + (p - g), a.to_bits()));
                    }
                }
                if ok && max == PageSize::Size4K {
                    prop_assert_eq!(
                        self.ept.translate(gpa(g)).unwrap().page_size,
                        PageSize::Size4K
                    );
                }
                ok
            }
            Op::Unmap { gpa: g, len } => {
                let len = clamp(g, len);
                let r = self.ept.unmap(gpa(g), len);
                let expect = match self.first_unmapped(g, g + len) {
                    Some(u) => Err(MapError::NotMapped { gpa: gpa(u) }),
                    None => Ok(()),
                };
                let ok = self.check(r, expect, before_frames)?;
                if ok {
                    let keys: Vec<u64> = self.model.range(g..g + len).map(|(k, _)| *k).collect();
                    for k in keys {
                        self.model.remove(&k);
                    }
                }
                ok
            }
            Op::Protect { gpa: g, len, attr } => {
                let len = clamp(g, len);
                let a = attrs(attr);
                let r = self.ept.protect(gpa(g), len, a);
                let expect = if attr % 6 == 5 {
                    Err(MapError::WriteWithoutRead(Permissions::WRITE))
                } else if let Some(u) = self.first_unmapped(g, g + len) {
                    Err(MapError::NotMapped { gpa: gpa(u) })
                } else {
                    Ok(())
                };
                let ok = self.check(r, expect, before_frames)?;
                if ok {
                    for (_, v) in self.model.range_mut(g..g + len) {
                        v.1 = a.to_bits();
                    }
                }
                ok
            }
            Op::Split { gpa: g } => {
                let before = self.ept.translate(gpa(g));
                let r = self.ept.split(gpa(g));
                let expect = match before {
                    None => Err(MapError::NotMapped { gpa: gpa(g) }),
                    Some(t) if t.page_size == PageSize::Size4K => {
                        Err(MapError::NotLargePage { gpa: gpa(g) })
                    }
                    Some(_) => Ok(()),
                };
                let ok = self.check(r, expect, before_frames)?;
                if ok {
                    let (b, a) = (
                        before.unwrap().page_size,
                        self.ept.translate(gpa(g)).unwrap().page_size,
                    );
                    // The next smaller size, or 4 KiB for a 1-GiB page without 2-MiB pages.
                    let no_2m = !self.ept.config().capabilities().pde_2mb();
                    let expected = if b == PageSize::Size1G && no_2m {
                        PageSize::Size4K.bytes()
                    } else {
                        b.bytes() / 512
                    };
                    prop_assert_eq!(a.bytes(), expected);
                }
                ok
            }
            Op::Merge { gpa: g, len } => {
                let len = clamp(g, len);
                let (flush, merged) = self.ept.merge(gpa(g), len).unwrap();
                tally(|t| t.merged += merged);
                self.done(flush);
                true
            }
        };
        self.ept.allocator().set_limit(None);
        // Check the neighbourhood of the range (the large pages around its ends included) and
        // the frame accounting after every operation; everything at the end of the case.
        let (s, e) = match *op {
            Op::Map { gpa, len, .. }
            | Op::Unmap { gpa, len }
            | Op::Protect { gpa, len, .. }
            | Op::Merge { gpa, len } => (gpa, gpa + len),
            Op::Split { gpa } => (gpa, gpa + K4),
        };
        let big = self.space.big;
        self.compare_range(
            s.saturating_sub(big) & !(big - 1),
            ((e + big - 1) & !(big - 1)).min(self.space.bytes),
            s,
            e,
        )?;
        prop_assert_eq!(self.ept.allocator().live_frames(), self.ept.table_frames());
        let kind = match op {
            Op::Map { .. } => 0,
            Op::Unmap { .. } => 1,
            Op::Protect { .. } => 2,
            Op::Split { .. } => 3,
            Op::Merge { .. } => 4,
        };
        if result {
            tally(|t| t.ok[kind] += 1);
        }
        Ok(())
    }

    /// The pages of the window [s, e) around an operation on [op_s, op_e) translate as the
    /// model says: every page within 64 KiB of either end of the operation or within 16 KiB of
    /// a 2-MiB boundary, every 17th page elsewhere (the whole space is compared at the end of
    /// each case).
    fn compare_range(&self, s: u64, e: u64, op_s: u64, op_e: u64) -> Result<(), TestCaseError> {
        let near = |p: u64, x: u64| p.abs_diff(x) < 64 << 10;
        let mut it = self.model.range(s..e).peekable();
        let mut p = s;
        let mut n = 0u64;
        while p < e {
            let full = near(p, op_s) || near(p, op_e) || (p + (16 << 10)) % M2 < 32 << 10;
            n += 1;
            if !full && !n.is_multiple_of(17) {
                p += K4;
                continue;
            }
            while it.peek().is_some_and(|(k, _)| **k < p) {
                it.next();
            }
            let want = it.peek().filter(|(k, _)| **k == p).map(|(_, v)| **v);
            let got = self.ept.translate(gpa(p)).map(|t| {
                (
                    t.hpa.as_u64(),
                    t.leaf & !(ept::ADDRESS_MASK | (1 << 7) | (3 << 8)),
                )
            });
            prop_assert_eq!(got, want, "at {:#x}", p);
            p += K4;
        }
        Ok(())
    }

    /// Checks a mapper result against the expected outcome; on out-of-frames (only allowed
    /// under a frame limit) and on every error, the allocator must hold as many frames as before.
    fn check(
        &mut self,
        r: Result<ept::EptFlush, MapError>,
        expect: Result<(), MapError>,
        before_frames: usize,
    ) -> Result<bool, TestCaseError> {
        match r {
            Ok(flush) => {
                prop_assert_eq!(expect, Ok(()));
                self.done(flush);
                Ok(true)
            }
            Err(MapError::OutOfFrames { needed, obtained }) => {
                prop_assert_eq!(
                    expect,
                    Ok(()),
                    "out of frames where the model expected an error"
                );
                prop_assert!(obtained < needed);
                tally(|t| t.out_of_frames += 1);
                prop_assert_eq!(self.ept.allocator().live_frames(), before_frames);
                Ok(false)
            }
            Err(e) => {
                tally(|t| t.errors += 1);
                prop_assert_eq!(Err(e), expect);
                prop_assert_eq!(self.ept.allocator().live_frames(), before_frames);
                Ok(false)
            }
        }
    }

    /// The whole mapper state, expanded to 4-KiB pages, equals the model; invariants hold; the
    /// allocator holds exactly the mapper's table frames.
    fn compare_all(&self) -> Result<(), TestCaseError> {
        let mut it = self.model.iter();
        let mut mismatch = None;
        self.ept.for_each_mapping(|m| {
            if mismatch.is_some() {
                return;
            }
            let bits = m.leaf & !(ept::ADDRESS_MASK | (1 << 7) | (3 << 8));
            for i in 0..m.page_size.bytes() / K4 {
                let want = (m.gpa.as_u64() + i * K4, (m.hpa.as_u64() + i * K4, bits));
                match it.next() {
                    Some((k, v)) if (*k, *v) == want => {}
                    other => {
                        mismatch = Some(format!(
                            "mapper has {want:x?} (in {m:x?}), model has {other:x?}"
                        ));
                        return;
                    }
                }
            }
        });
        if let Some(msg) = mismatch {
            return Err(TestCaseError::fail(msg));
        }
        if let Some(extra) = it.next() {
            return Err(TestCaseError::fail(format!(
                "model has {extra:x?}, mapper does not"
            )));
        }
        prop_assert_eq!(self.ept.check_invariants(), Ok(()));
        prop_assert_eq!(self.ept.allocator().live_frames(), self.ept.table_frames());
        Ok(())
    }
}

fn run(
    space: Space,
    caps: EptVpidCap,
    largest: PageSize,
    ops: &[(Op, bool, Option<usize>)],
) -> Result<(), TestCaseError> {
    let mut w = World::new(space, caps, largest);
    for (op, target, limit) in ops {
        let op = if *target { w.retarget(op) } else { op.clone() };
        w.step(&op, *limit)?;
    }
    w.compare_all()?;
    // Unmap everything that is left; only the root remains.
    let keys: Vec<u64> = w.model.keys().copied().collect();
    for k in keys {
        if w.model.contains_key(&k) {
            let run_end = (k..)
                .step_by(K4 as usize)
                .find(|p| !w.model.contains_key(p))
                .unwrap();
            let flush = w.ept.unmap(gpa(k), run_end - k).unwrap();
            w.done(flush);
            for p in (k..run_end).step_by(K4 as usize) {
                w.model.remove(&p);
            }
        }
    }
    prop_assert_eq!(w.ept.table_frames(), 1);
    prop_assert_eq!(w.ept.allocator().live_frames(), 1);
    Ok(())
}

const SMALL: Space = Space {
    bytes: 4 * M2,
    big: M2,
};
const LARGE: Space = Space {
    bytes: 4 * G1,
    big: G1,
};

proptest! {
    // 2-MiB pages at most, an 8-MiB guest space: 2000 cases × 1-99 operations (about 10^5).
    #![proptest_config(ProptestConfig { cases: 2000, rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]
    #[test]
    fn model_2m(ops in proptest::collection::vec((op(SMALL), target(), limit()), 1..100)) {
        run(SMALL, SKYLAKE_X, PageSize::Size2M, &ops)?;
    }
}

proptest! {
    // 1-GiB pages, a 4-GiB guest space, fewer operations per case (each 1-GiB page is 262144
    // model entries).
    #![proptest_config(ProptestConfig { cases: 48, rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]
    #[test]
    fn model_1g(ops in proptest::collection::vec((op(LARGE), target(), limit()), 1..12)) {
        run(LARGE, SKYLAKE_X, PageSize::Size1G, &ops)?;
    }
}

proptest! {
    // Issue 11: 1-GiB pages allowed but 2-MiB pages not (IA32_VMX_EPT_VPID_CAP[16] = 0, seen in
    // nested setups): the mapper must never write a 2-MiB leaf (its invariant check, run after
    // every operation, applies the per-size rule), and splitting a 1-GiB page goes straight to
    // 4-KiB pages.
    #![proptest_config(ProptestConfig { cases: 16, rng_algorithm: RngAlgorithm::XorShift, ..ProptestConfig::default() })]
    #[test]
    fn model_1g_without_2m(ops in proptest::collection::vec((op(LARGE), target(), limit()), 1..12)) {
        run(LARGE, EptVpidCap(SKYLAKE_X.0 & !(1 << 16)), PageSize::Size1G, &ops)?;
    }
}

/// The generated cases reach every outcome often: successes of each operation, typed errors,
/// out-of-frames refusals and merges.
#[test]
fn generated_cases_exercise_every_path() {
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    // A fixed seed: the thresholds below are about the generator, and must not depend on luck
    // (with a random seed they failed now and then).
    let mut runner = TestRunner::new(Config {
        cases: 150,
        rng_algorithm: RngAlgorithm::XorShift,
        rng_seed: RngSeed::Fixed(0x0e97_5eed),
        ..Config::default()
    });
    let strategy = proptest::collection::vec((op(SMALL), target(), limit()), 1..100);
    runner
        .run(&strategy, |ops| {
            run(SMALL, SKYLAKE_X, PageSize::Size2M, &ops)
        })
        .unwrap();
    let t = TALLY.with(Cell::get);
    eprintln!("{t:?}");
    // Successes of map, unmap, protect, split (needs a large page) and merge calls.
    let at_least = [500, 500, 500, 40, 300];
    for (i, (ok, min)) in t.ok.iter().zip(at_least).enumerate() {
        assert!(
            *ok >= min,
            "operation kind {i} succeeded only {ok} times: {t:?}"
        );
    }
    assert!(
        t.errors >= 1000 && t.out_of_frames >= 40 && t.merged >= 10,
        "{t:?}"
    );
}
