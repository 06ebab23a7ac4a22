//! The must-use token that stands for a pending INVEPT.

use core::ptr;

use vmx_core::{InvalidationError, InveptType, VmxRoot};

use crate::addr::HostPhysAddr;
use crate::frame::FrameAllocator;

/// Table frames unlinked by a change, held until the INVEPT that makes them unreachable for the
/// processor. Each frame links to the next through its own first two words: word 0 holds the
/// host-virtual address of the next frame (null at the end), word 1 the frame's host-physical
/// address. Both are multiples of 8, so to a processor still walking the frame through a stale
/// paging-structure cache entry they read as not-present EPT entries.
#[derive(Debug)]
struct FreedFrames {
    head: *mut u64,
    tail: *mut u64,
    count: usize,
}

impl FreedFrames {
    const EMPTY: Self = Self {
        head: ptr::null_mut(),
        tail: ptr::null_mut(),
        count: 0,
    };

    /// # Safety
    ///
    /// `virt` points to the 4096 writable bytes of the unlinked frame `phys`, owned from now on
    /// by this list.
    unsafe fn push(&mut self, virt: *mut u64, phys: HostPhysAddr) {
        // SAFETY: per the contract, `virt` is valid for writes of its first two words.
        unsafe {
            virt.write_volatile(0);
            virt.add(1).write_volatile(phys.as_u64());
        }
        if self.tail.is_null() {
            self.head = virt;
        } else {
            // SAFETY: `tail` is a frame of this list, valid for writes.
            unsafe { self.tail.write_volatile(virt as u64) };
        }
        self.tail = virt;
        self.count += 1;
    }

    fn append(&mut self, other: FreedFrames) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is a frame of this list, valid for writes.
            unsafe { self.tail.write_volatile(other.head as u64) };
        }
        self.tail = other.tail;
        self.count += other.count;
    }

    fn release(self, alloc: &mut impl FrameAllocator) {
        let mut cur = self.head;
        while !cur.is_null() {
            // SAFETY: every frame of the list is valid for reads of its first two words.
            let (next, phys) =
                unsafe { (cur.read_volatile() as *mut u64, cur.add(1).read_volatile()) };
            // SAFETY: the frame came from the allocator the mapper was given (the caller's
            // promise on `EptFlush::flush`) and is no longer linked into any table.
            unsafe { alloc.deallocate_frame(HostPhysAddr::new_truncate(phys)) };
            cur = next;
        }
    }
}

/// A pending invalidation of the EPT-derived translations after a change to the tables
/// (SDM Vol. 3C §29.4.3.1 "Operations that Invalidate Cached Mappings").
///
/// Discharge it with [`EptFlush::flush`], which executes INVEPT of the type the capabilities
/// allow (single-context when supported, else all-context) — never INVLPG or a CR3 reload,
/// which do not touch EPT-derived mappings. Table frames the change unlinked are kept in the
/// token and given back to the allocator only after the INVEPT, since until then the
/// processor may still walk them through its paging-structure caches. Dropping the token
/// leaks those frames.
#[must_use = "the processor may keep using the old translations until INVEPT: call `flush`"]
#[derive(Debug)]
pub struct EptFlush {
    eptp: u64,
    kind: InveptType,
    all_context_supported: bool,
    freed: FreedFrames,
}

impl EptFlush {
    pub(crate) const fn new(eptp: u64, kind: InveptType, all_context_supported: bool) -> Self {
        Self {
            eptp,
            kind,
            all_context_supported,
            freed: FreedFrames::EMPTY,
        }
    }

    /// # Safety
    ///
    /// As [`FreedFrames::push`].
    pub(crate) unsafe fn defer_free(&mut self, virt: *mut u64, phys: HostPhysAddr) {
        // SAFETY: forwarded to the caller.
        unsafe { self.freed.push(virt, phys) };
    }

    /// The EPTP whose translations are stale.
    pub const fn eptp(&self) -> u64 {
        self.eptp
    }

    /// The INVEPT type [`EptFlush::flush`] will use.
    pub const fn invept_type(&self) -> InveptType {
        self.kind
    }

    /// How many table frames wait for the INVEPT before going back to the allocator.
    pub const fn pending_frames(&self) -> usize {
        self.freed.count
    }

    /// Merges two pending invalidations into one. For the same EPTP the result keeps the
    /// stronger type; for different EPTPs it becomes all-context if the processor supports
    /// it. Without all-context support, tokens of different EPTPs are given back unchanged.
    pub fn combine(mut self, other: EptFlush) -> Result<EptFlush, (EptFlush, EptFlush)> {
        if self.eptp != other.eptp {
            if !(self.all_context_supported && other.all_context_supported) {
                return Err((self, other));
            }
            self.kind = InveptType::AllContext;
        } else if other.kind == InveptType::AllContext {
            self.kind = InveptType::AllContext;
        }
        self.freed.append(other.freed);
        Ok(self)
    }

    /// Executes INVEPT through [`VmxRoot::invept`] (which checks the type against the
    /// capabilities), then gives the frames the change unlinked back to `alloc`, the allocator
    /// the mapper took them from. If INVEPT fails, the token comes back inside the error,
    /// frames still held.
    pub fn flush(self, root: &VmxRoot, alloc: &mut impl FrameAllocator) -> Result<(), FlushError> {
        match root.invept(self.kind, self.eptp) {
            Ok(()) => {
                self.freed.release(alloc);
                Ok(())
            }
            Err(error) => Err(FlushError { error, token: self }),
        }
    }

    /// Gives the held frames back without invalidating.
    ///
    /// # Safety
    ///
    /// No logical processor may hold translations derived from this EPT: it was never used
    /// for a VM entry (e.g. the tables are still being built), or an INVEPT covering it has
    /// been executed since the change by other means. `alloc` is the allocator the mapper
    /// took the frames from.
    pub unsafe fn assume_flushed(self, alloc: &mut impl FrameAllocator) {
        self.freed.release(alloc);
    }
}

/// INVEPT failed; the token is handed back so that its frames are not lost.
#[derive(Debug, thiserror::Error)]
#[error("INVEPT for EPTP {:#x} failed: {error}", .token.eptp)]
pub struct FlushError {
    /// Why INVEPT failed.
    pub error: InvalidationError,
    /// The token, still pending.
    pub token: EptFlush,
}
