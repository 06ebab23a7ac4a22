//! Maps 1 GiB as 4-KiB pages and translates 10^6 random addresses, with this crate's range
//! mapping and with the `x86_64` crate's `OffsetPageTable` (offset 0, heap frames) for
//! comparison. Run with `cargo bench -p ept`.

use std::alloc::Layout;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ept::{
    EptConfig, EptMapper, FrameAllocator, GuestPhysAddr, HostPhysAddr, LeafAttributes, MemoryType,
    OffsetPhysToVirt, PageSize, Permissions,
};
use vmx_caps::EptVpidCap;
use x86_64::structures::paging::{
    self as x86p, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
    Translate,
};
use x86_64::{PhysAddr, VirtAddr};

const GIB: u64 = 1 << 30;
const GUEST_BASE: u64 = GIB;
const HOST_BASE: u64 = 0x40_0000_0000;
const LOOKUPS: usize = 1_000_000;
const ROUNDS: usize = 5;
const FRAME: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("valid layout"),
};

/// The same heap frame source for both mappers: uninitialised 4-KiB blocks, counted.
#[derive(Default)]
struct Heap {
    frames: Vec<*mut u8>,
}

impl Heap {
    fn take(&mut self) -> Option<u64> {
        // SAFETY: FRAME has a nonzero size.
        let p = unsafe { std::alloc::alloc(FRAME) };
        if p.is_null() {
            return None;
        }
        self.frames.push(p);
        Some(p as u64)
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        for &p in &self.frames {
            // SAFETY: every pointer came from `alloc(FRAME)` and is freed once, here.
            unsafe { std::alloc::dealloc(p, FRAME) };
        }
    }
}

// SAFETY: heap blocks are 4-KiB aligned, unused, and owned until the Heap drops.
unsafe impl FrameAllocator for Heap {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        self.take().and_then(|a| HostPhysAddr::new(a).ok())
    }

    unsafe fn deallocate_frame(&mut self, _frame: HostPhysAddr) {
        // Frames are all freed when the Heap drops.
    }
}

// SAFETY: as above.
unsafe impl x86p::FrameAllocator<Size4KiB> for Heap {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.take()
            .map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

fn caps() -> EptVpidCap {
    // IA32_VMX_EPT_VPID_CAP of Bochs' corei7_skylake_x.
    EptVpidCap(0x0000_0f01_0633_4141)
}

fn map_ours(heap: &mut Heap) -> (Duration, EptMapper<OffsetPhysToVirt, &mut Heap>) {
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let start = Instant::now();
    let mut ept = EptMapper::new(EptConfig::new(caps(), 48), p2v, heap)
        .map_err(|e| e.error)
        .expect("mapper");
    let flush = ept
        .map_with_max_page(
            GuestPhysAddr::new(GUEST_BASE).expect("gpa"),
            HostPhysAddr::new(HOST_BASE).expect("hpa"),
            GIB,
            LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack),
            PageSize::Size4K,
        )
        .expect("map");
    let took = start.elapsed();
    // SAFETY: these tables are never used by a processor.
    unsafe { ept.assume_flushed(flush) };
    (took, ept)
}

fn map_theirs(heap: &mut Heap) -> (Duration, OffsetPageTable<'static>) {
    let start = Instant::now();
    let root = heap.take().expect("root") as *mut PageTable;
    // SAFETY: a fresh, exclusively owned 4-KiB block, valid for a PageTable; leaked on purpose
    // (the Heap frees it at the end of the run, after the mapper is gone).
    let root = unsafe {
        root.write(PageTable::new());
        &mut *root
    };
    // SAFETY: physical memory (= the heap) is mapped at offset 0.
    let mut mapper = unsafe { OffsetPageTable::new(root, VirtAddr::new(0)) };
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
    for i in 0..GIB / 4096 {
        let page: Page<Size4KiB> = Page::containing_address(VirtAddr::new(GUEST_BASE + i * 4096));
        let frame = PhysFrame::containing_address(PhysAddr::new(HOST_BASE + i * 4096));
        // SAFETY: the mapped frames are never accessed.
        unsafe { mapper.map_to(page, frame, flags, heap) }
            .expect("map_to")
            .ignore();
    }
    (start.elapsed(), mapper)
}

fn main() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let addrs: Vec<u64> = (0..LOOKUPS)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            GUEST_BASE + (rng % GIB)
        })
        .collect();

    let (mut best_ours, mut best_theirs) = (Duration::MAX, Duration::MAX);
    let (mut tr_ours, mut tr_theirs) = (Duration::MAX, Duration::MAX);
    let (mut frames_ours, mut frames_theirs) = (0, 0);
    for _ in 0..ROUNDS {
        let mut heap_ours = Heap::default();
        let (t, ept) = map_ours(&mut heap_ours);
        best_ours = best_ours.min(t);
        frames_ours = ept.allocator().frames.len();
        assert_eq!(frames_ours, ept.table_frames());

        let mut heap_theirs = Heap::default();
        let (t, mapper) = map_theirs(&mut heap_theirs);
        best_theirs = best_theirs.min(t);
        frames_theirs = heap_theirs.frames.len();

        let start = Instant::now();
        let mut sum_ours = 0u64;
        for &a in &addrs {
            let gpa = GuestPhysAddr::new_truncate(black_box(a));
            sum_ours = sum_ours.wrapping_add(ept.translate(gpa).map_or(0, |t| t.hpa.as_u64()));
        }
        tr_ours = tr_ours.min(start.elapsed());

        let start = Instant::now();
        let mut sum_theirs = 0u64;
        for &a in &addrs {
            let va = VirtAddr::new(black_box(a));
            sum_theirs =
                sum_theirs.wrapping_add(mapper.translate_addr(va).map_or(0, |p| p.as_u64()));
        }
        tr_theirs = tr_theirs.min(start.elapsed());
        assert_eq!(
            black_box(sum_ours),
            black_box(sum_theirs),
            "both walks must agree"
        );
    }

    let pages = (GIB / 4096) as f64;
    println!(
        "map 1 GiB as 4-KiB pages (best of {ROUNDS}): ept {:.2} ms ({:.2} ns/page), x86_64 {:.2} ms ({:.2} ns/page)",
        best_ours.as_secs_f64() * 1e3,
        best_ours.as_secs_f64() * 1e9 / pages,
        best_theirs.as_secs_f64() * 1e3,
        best_theirs.as_secs_f64() * 1e9 / pages,
    );
    println!(
        "translate {LOOKUPS} random addresses: ept {:.2} ns each, x86_64 {:.2} ns each",
        tr_ours.as_secs_f64() * 1e9 / LOOKUPS as f64,
        tr_theirs.as_secs_f64() * 1e9 / LOOKUPS as f64,
    );
    println!(
        "table frames (root included): ept {frames_ours}, x86_64 {frames_theirs}; minimum 515"
    );
    println!(
        "ept speedup vs x86_64: map {:.1}x translate {:.1}x frames {frames_ours}/{frames_theirs}",
        best_theirs.as_secs_f64() / best_ours.as_secs_f64(),
        tr_theirs.as_secs_f64() / tr_ours.as_secs_f64(),
    );
}
