//! The physical frame allocator: 4 KiB frames taken from the Multiboot memory map's available RAM below
//! 4 GiB (the identity-mapped range, so a frame's physical address is also its virtual address).
//!
//! Never handed out: the first 1 MiB (real-mode IVT, BIOS data, EBDA, option ROMs), the kernel image, the
//! Multiboot information, memory map, module list, strings and modules ([`crate::boot::reserved_ranges`]).
//! Frames are never freed: the example allocates its structures once. Each usable range keeps its own bump
//! pointer, so a contiguous request that does not fit one range is served from a later one, and the rest of
//! the first stays available to smaller requests.

use core::cell::UnsafeCell;

/// Size of a frame.
pub const FRAME_SIZE: u64 = 4096;
/// Lowest address handed out.
const LOW_LIMIT: u64 = 0x10_0000;
/// One past the highest address handed out: the identity map covers 0–4 GiB.
const HIGH_LIMIT: u64 = 0x1_0000_0000;
/// Capacity of the usable-range table.
const MAX_RANGES: usize = 64;
/// Capacity of the reserved-range table.
const MAX_RESERVED: usize = 64;

#[derive(Clone, Copy)]
struct Range {
    /// Next free frame.
    next: u64,
    /// One past the last frame.
    end: u64,
}

struct Allocator {
    ranges: [Range; MAX_RANGES],
    count: usize,
    /// Bytes of available RAM left out because the range table was full.
    dropped: u64,
}

struct AllocatorCell(UnsafeCell<Allocator>);

// SAFETY: one CPU, interrupts off, no re-entrancy: every access is a short, non-nested borrow in this module.
unsafe impl Sync for AllocatorCell {}

static ALLOCATOR: AllocatorCell = AllocatorCell(UnsafeCell::new(Allocator {
    ranges: [Range { next: 0, end: 0 }; MAX_RANGES],
    count: 0,
    dropped: 0,
}));

fn with_allocator<R>(f: impl FnOnce(&mut Allocator) -> R) -> R {
    // SAFETY: see `AllocatorCell`; `f` cannot reach `ALLOCATOR` again (nothing in it calls back here).
    f(unsafe { &mut *ALLOCATOR.0.get() })
}

/// Builds the usable ranges from the memory map minus the reserved ranges. Returns how many bytes are usable.
pub fn init() -> u64 {
    let mut reserved = [(0u64, 0u64); MAX_RESERVED];
    let mut reserved_count = 0;
    let mut reserved_overflow = false;
    crate::boot::reserved_ranges(|start, end| {
        if reserved_count < MAX_RESERVED {
            reserved[reserved_count] = (start, end);
            reserved_count += 1;
        } else {
            reserved_overflow = true;
        }
    });
    if reserved_overflow {
        // Handing out a reserved frame would corrupt a module or the boot information: refuse to guess.
        panic!("more than {MAX_RESERVED} reserved ranges in the boot information");
    }
    let reserved = &reserved[..reserved_count];

    with_allocator(|a| {
        for region in crate::boot::memory_map() {
            if region.kind != crate::boot::RegionKind::Available {
                continue;
            }
            // Whole frames inside the region, inside [LOW_LIMIT, HIGH_LIMIT).
            let mut start = region.base.saturating_add(FRAME_SIZE - 1) & !(FRAME_SIZE - 1);
            let end = region.base.saturating_add(region.len) & !(FRAME_SIZE - 1);
            start = start.max(LOW_LIMIT);
            let end = end.min(HIGH_LIMIT);
            // Cut the reserved ranges out of [start, end), lowest first.
            while start < end {
                let next_hole = reserved
                    .iter()
                    .filter(|&&(s, e)| s < end && e > start)
                    .min_by_key(|&&(s, _)| s);
                match next_hole {
                    None => {
                        a.push(start, end);
                        start = end;
                    }
                    Some(&(s, e)) => {
                        if s > start {
                            a.push(start, s);
                        }
                        start = e;
                    }
                }
            }
        }
        a.ranges[..a.count].iter().map(|r| r.end - r.next).sum()
    })
}

impl Allocator {
    fn push(&mut self, start: u64, end: u64) {
        if self.count < MAX_RANGES {
            self.ranges[self.count] = Range { next: start, end };
            self.count += 1;
        } else {
            self.dropped += end - start;
        }
    }
}

/// Allocates `count` contiguous, zeroed 4 KiB frames; returns the physical (== virtual) address of the first.
/// `None` when no usable range has `count` free frames left (or `count` is 0).
pub fn alloc_frames(count: usize) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let bytes = (count as u64).checked_mul(FRAME_SIZE)?;
    let addr = with_allocator(|a| {
        let range = a.ranges[..a.count]
            .iter_mut()
            .find(|r| r.end - r.next >= bytes)?;
        let addr = range.next;
        range.next += bytes;
        Some(addr)
    })?;
    // SAFETY: [addr, addr + bytes) is available RAM below 4 GiB (identity-mapped), not reserved, and was never
    // handed out before: nobody else refers to it.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, bytes as usize) };
    Some(addr)
}

/// Allocates one zeroed 4 KiB frame.
pub fn alloc_frame() -> Option<u64> {
    alloc_frames(1)
}

/// Bytes still available.
pub fn total_free() -> u64 {
    with_allocator(|a| a.ranges[..a.count].iter().map(|r| r.end - r.next).sum())
}

/// Bytes of available RAM the allocator could not track (its range table was full); 0 normally.
pub fn untracked() -> u64 {
    with_allocator(|a| a.dropped)
}
