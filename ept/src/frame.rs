//! Where the mapper's table frames come from, and how it reaches them.

use core::marker::PhantomData;

use crate::HostPhysAddr;

/// A source of 4-KiB frames for EPT paging structures.
///
/// # Safety
///
/// Implementors guarantee that every frame returned by [`FrameAllocator::allocate_frame`] is
/// 4-KiB aligned, is not in use by anything else, and stays exclusively owned by the caller
/// until it is handed back through [`FrameAllocator::deallocate_frame`]. The mapper writes to
/// these frames and has the processor read them as EPT paging structures.
pub unsafe trait FrameAllocator {
    /// Hands out one unused 4-KiB frame, or `None` when none is left. The frame's content may
    /// be arbitrary: the mapper initialises every table it takes.
    fn allocate_frame(&mut self) -> Option<HostPhysAddr>;

    /// Takes back a frame.
    ///
    /// # Safety
    ///
    /// `frame` was returned by `allocate_frame` of this allocator and is no longer used.
    unsafe fn deallocate_frame(&mut self, frame: HostPhysAddr);
}

// SAFETY: forwards to `A`, whose guarantees carry over.
unsafe impl<A: FrameAllocator + ?Sized> FrameAllocator for &mut A {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        (**self).allocate_frame()
    }

    unsafe fn deallocate_frame(&mut self, frame: HostPhysAddr) {
        // SAFETY: the caller's promise is `A`'s precondition.
        unsafe { (**self).deallocate_frame(frame) }
    }
}

/// How the mapper reaches a table frame from the host's point of view: the caller's
/// physical-to-virtual translation.
///
/// # Safety
///
/// For every frame the mapper obtains from the frame allocators used with it,
/// [`PhysToVirt::phys_to_virt`] returns a pointer to the frame's 4096 bytes, 8-byte aligned,
/// valid for reads and writes for as long as the frame is allocated, and not accessed through
/// any other Rust reference meanwhile.
pub unsafe trait PhysToVirt {
    /// The host-virtual address of the frame at `frame`.
    fn phys_to_virt(&self, frame: HostPhysAddr) -> *mut u64;
}

/// Physical memory mapped at a constant offset (`virtual = physical + offset`), the usual
/// "physical memory map" of a kernel; offset 0 is an identity mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPhysToVirt {
    offset: u64,
}

impl OffsetPhysToVirt {
    /// Physical memory identity-mapped (offset 0).
    ///
    /// # Safety
    ///
    /// Every frame handed to the mapper is accessible at its physical address, as
    /// [`PhysToVirt`] requires.
    pub const unsafe fn identity() -> Self {
        Self { offset: 0 }
    }

    /// Physical memory mapped at `offset`.
    ///
    /// # Safety
    ///
    /// Every frame handed to the mapper is accessible at `physical + offset`, as
    /// [`PhysToVirt`] requires.
    pub const unsafe fn new(offset: u64) -> Self {
        Self { offset }
    }

    /// The offset added to physical addresses.
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

// SAFETY: the constructors are `unsafe` and make the caller promise the mapping exists.
unsafe impl PhysToVirt for OffsetPhysToVirt {
    #[inline(always)]
    fn phys_to_virt(&self, frame: HostPhysAddr) -> *mut u64 {
        frame.as_u64().wrapping_add(self.offset) as *mut u64
    }
}

/// A fixed pool of frames in a caller-provided, 4-KiB aligned array, identity "mapped": the
/// frame's host-physical address is taken to be its address in this address space. This suits
/// host-side tests, tools and kernels whose memory is identity-mapped; pair it with
/// [`OffsetPhysToVirt::identity`].
///
/// ```
/// use ept::{Frame, FrameAllocator, FramePool};
///
/// // Three 4-KiB frames (here on the heap; in a kernel, a static array).
/// let mut frames = vec![Frame::ZERO; 3];
/// let mut pool = FramePool::new(&mut frames);
/// assert_eq!(pool.free_frames(), 3);
/// let frame = pool.allocate_frame().unwrap();
/// assert!(frame.is_aligned(0x1000));
/// assert_eq!(pool.free_frames(), 2);
/// // SAFETY: the frame came from this pool and is no longer used.
/// unsafe { pool.deallocate_frame(frame) };
/// assert_eq!(pool.free_frames(), 3);
/// ```
pub struct FramePool<'a> {
    /// The array, held as a raw pointer: once handed out, a frame is written through pointers
    /// derived from its address, so the pool must not keep a `&mut` over it.
    frames: *mut Frame,
    len: usize,
    _borrow: PhantomData<&'a mut [Frame]>,
    /// Bit i set: frame i is free.
    free: [u64; 64],
    free_count: usize,
}

/// One 4-KiB, 4-KiB aligned frame of memory.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Frame(pub [u64; 512]);

impl Frame {
    /// A zeroed frame (usable in a `static`).
    pub const ZERO: Frame = Frame([0; 512]);
}

impl<'a> FramePool<'a> {
    /// The most frames one pool manages.
    pub const MAX_FRAMES: usize = 64 * 64;

    /// A pool over `frames`; frames past [`FramePool::MAX_FRAMES`] are not used.
    pub fn new(frames: &'a mut [Frame]) -> Self {
        let n = frames.len().min(Self::MAX_FRAMES);
        let (frames, len) = (frames.as_mut_ptr(), n);
        let mut free = [0u64; 64];
        for (i, word) in free.iter_mut().enumerate() {
            let lo = i * 64;
            if lo < n {
                let count = (n - lo).min(64);
                *word = if count == 64 {
                    u64::MAX
                } else {
                    (1u64 << count) - 1
                };
            }
        }
        Self {
            frames,
            len,
            _borrow: PhantomData,
            free,
            free_count: n,
        }
    }

    /// How many frames are free.
    pub fn free_frames(&self) -> usize {
        self.free_count
    }

    fn index_of(&self, frame: HostPhysAddr) -> Option<usize> {
        let base = self.frames as u64;
        let off = frame.as_u64().checked_sub(base)?;
        let idx = (off / 4096) as usize;
        (off % 4096 == 0 && idx < self.len).then_some(idx)
    }
}

impl core::fmt::Debug for FramePool<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FramePool")
            .field("frames", &self.len)
            .field("free", &self.free_count)
            .finish_non_exhaustive()
    }
}

// SAFETY: each frame of the exclusively borrowed array is handed out at most once until it is
// given back; frames are 4-KiB aligned by `Frame`'s alignment.
unsafe impl FrameAllocator for FramePool<'_> {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        let (word_idx, word) = self.free.iter_mut().enumerate().find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros() as usize;
        let idx = word_idx * 64 + bit;
        // `idx < len` since only bits below `len` are ever set; the cast exposes the pointer's
        // provenance for the integer-to-pointer translation that follows.
        let addr = HostPhysAddr::new(self.frames.wrapping_add(idx) as u64).ok()?;
        *word &= !(1u64 << bit);
        self.free_count -= 1;
        Some(addr)
    }

    unsafe fn deallocate_frame(&mut self, frame: HostPhysAddr) {
        if let Some(idx) = self.index_of(frame) {
            let mask = 1u64 << (idx % 64);
            if self.free[idx / 64] & mask == 0 {
                self.free[idx / 64] |= mask;
                self.free_count += 1;
            }
        }
    }
}

#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub use heap::HeapFrameAllocator;

#[cfg(feature = "alloc")]
mod heap {
    use core::alloc::Layout;
    use core::cell::Cell;

    use super::FrameAllocator;
    use crate::HostPhysAddr;

    const FRAME: Layout = match Layout::from_size_align(4096, 4096) {
        Ok(l) => l,
        Err(_) => panic!("4096/4096 is a valid layout"),
    };

    /// Frames from the global heap, identity "mapped" (the frame's host-physical address is
    /// its heap address): for host-side tests and benchmarks, with
    /// [`crate::OffsetPhysToVirt::identity`]. Optionally limited to a number of frames, to
    /// exercise out-of-frames paths.
    #[derive(Debug, Default)]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub struct HeapFrameAllocator {
        live: usize,
        allocated_total: usize,
        limit: Cell<Option<usize>>,
    }

    impl HeapFrameAllocator {
        /// An allocator without a limit.
        pub const fn new() -> Self {
            Self {
                live: 0,
                allocated_total: 0,
                limit: Cell::new(None),
            }
        }

        /// An allocator that hands out at most `limit` frames at a time.
        pub const fn with_limit(limit: usize) -> Self {
            Self {
                live: 0,
                allocated_total: 0,
                limit: Cell::new(Some(limit)),
            }
        }

        /// Changes the limit (`None`: unlimited). Takes `&self`, so that a test can change it
        /// while a mapper owns the allocator ([`crate::EptMapper::allocator`]).
        pub fn set_limit(&self, limit: Option<usize>) {
            self.limit.set(limit);
        }

        /// Frames currently handed out.
        pub const fn live_frames(&self) -> usize {
            self.live
        }

        /// Frames handed out since creation.
        pub const fn allocated_total(&self) -> usize {
            self.allocated_total
        }
    }

    // SAFETY: each frame is a fresh 4096-byte, 4096-aligned heap block, owned by the caller
    // until given back.
    unsafe impl FrameAllocator for HeapFrameAllocator {
        fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
            if self.limit.get().is_some_and(|l| self.live >= l) {
                return None;
            }
            // SAFETY: FRAME has a nonzero size.
            let p = unsafe { alloc::alloc::alloc(FRAME) };
            if p.is_null() {
                return None;
            }
            match HostPhysAddr::new(p as u64) {
                Ok(a) => {
                    self.live += 1;
                    self.allocated_total += 1;
                    Some(a)
                }
                Err(_) => {
                    // SAFETY: `p` was just allocated with FRAME.
                    unsafe { alloc::alloc::dealloc(p, FRAME) };
                    None
                }
            }
        }

        unsafe fn deallocate_frame(&mut self, frame: HostPhysAddr) {
            self.live = self.live.saturating_sub(1);
            // SAFETY: the caller guarantees `frame` came from `allocate_frame`, i.e. from
            // `alloc(FRAME)` at this address.
            unsafe { alloc::alloc::dealloc(frame.as_u64() as *mut u8, FRAME) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_pool_hands_out_each_frame_once() {
        let mut frames = [Frame::ZERO; 5];
        let mut pool = FramePool::new(&mut frames);
        let got: [_; 5] = core::array::from_fn(|_| pool.allocate_frame().unwrap());
        assert_eq!(pool.allocate_frame(), None);
        assert!(got.iter().all(|f| f.is_aligned(4096)));
        for w in got.windows(2) {
            assert_eq!(w[1].as_u64() - w[0].as_u64(), 4096);
        }
        // SAFETY: got[2] came from this pool.
        unsafe { pool.deallocate_frame(got[2]) };
        assert_eq!(pool.free_frames(), 1);
        assert_eq!(pool.allocate_frame(), Some(got[2]));
    }
}
