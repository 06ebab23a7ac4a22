//! Pending invalidations: the must-use token a change returns, the table frames it unlinked,
//! and the INVEPT that must run on every processor that may cache the EPT before those frames
//! are reused.

use core::fmt;

use vmx_core::{InvalidationError, InveptType, VmxInstructions, VmxRoot};

use crate::HostPhysAddr;
use crate::frame::{FrameAllocator, PhysToVirt};

/// Table frames unlinked by changes, held by the mapper until the INVEPT that makes them
/// unreachable for every processor. The frames form a list through their own first word, the
/// host-physical address of the next frame ([`END`] at the end). Both are multiples of 8 with
/// bit 10 clear, so to a processor still walking the frame through a stale paging-structure
/// cache entry the word reads as a not-present EPT entry.
#[derive(Debug)]
pub(crate) struct FreedFrames {
    head: u64,
    count: usize,
}

/// The end of a [`FreedFrames`] list: not 4-KiB aligned, so never a frame.
const END: u64 = 8;

impl FreedFrames {
    pub(crate) const EMPTY: Self = Self {
        head: END,
        count: 0,
    };

    /// # Safety
    ///
    /// `frame` is an unlinked table frame reachable through `p2v`, owned from now on by this
    /// list.
    pub(crate) unsafe fn push(&mut self, p2v: &impl PhysToVirt, frame: HostPhysAddr) {
        // SAFETY: per the contract and `PhysToVirt`, the frame's first word is writable.
        unsafe { p2v.phys_to_virt(frame).write_volatile(self.head) };
        self.head = frame.as_u64();
        self.count += 1;
    }

    pub(crate) const fn len(&self) -> usize {
        self.count
    }

    /// Gives every frame of the list to `alloc` and empties the list.
    ///
    /// # Safety
    ///
    /// Every frame of the list came from `alloc`, and no logical processor can reach it any
    /// more, not even through cached EPT paging-structure entries.
    pub(crate) unsafe fn release(
        &mut self,
        p2v: &impl PhysToVirt,
        alloc: &mut impl FrameAllocator,
    ) {
        let mut cur = core::mem::replace(&mut self.head, END);
        self.count = 0;
        while cur != END {
            let frame = HostPhysAddr::new_truncate(cur);
            // SAFETY: every frame of the list is reachable through `p2v` and holds the link.
            cur = unsafe { p2v.phys_to_virt(frame).read_volatile() };
            // SAFETY: per the contract, the frame came from `alloc` and is unreachable.
            unsafe { alloc.deallocate_frame(frame) };
        }
    }
}

/// Executes INVEPT on every logical processor that may hold translations or paging-structure
/// cache entries derived from an EPT (SDM Vol. 3C §29.4.3.1 "Operations that Invalidate Cached
/// Mappings"): the proof the mapper needs before it reuses table frames.
///
/// [`ThisCpuOnly`] covers an EPT used by one logical processor; a shootdown through the
/// caller's "run on these CPUs" primitive covers the others.
///
/// # Safety
///
/// When [`EptInvalidate::invalidate`] returns `Ok(())`, every logical processor that may hold
/// translations derived from `eptp` (every processor on which a VMCS with this EPTP has been
/// current since the EPT was created) has executed INVEPT of type `kind` for `eptp`, or an
/// all-context INVEPT, after the call began. The mapper frees table frames on the strength of
/// this promise.
pub unsafe trait EptInvalidate {
    /// Why the invalidation failed.
    type Error: fmt::Debug + fmt::Display;

    /// Invalidates the mappings derived from `eptp` everywhere they may be cached.
    fn invalidate(&mut self, kind: InveptType, eptp: u64) -> Result<(), Self::Error>;
}

/// INVEPT on the current logical processor only, for EPTs that no other processor has used.
/// `P` is the processor of the VMX root operation ([`vmx_core::LivePlatform`], or
/// [`vmx_core::SoftVmx`] in tests).
#[derive(Debug)]
pub struct ThisCpuOnly<'a, P> {
    root: &'a VmxRoot<P>,
}

impl<P> Clone for ThisCpuOnly<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for ThisCpuOnly<'_, P> {}

impl<'a, P: VmxInstructions> ThisCpuOnly<'a, P> {
    /// Invalidation through `root`, the VMX root operation of the current logical processor.
    ///
    /// # Safety
    ///
    /// Every EPT invalidated through the result has been, since its creation, in the current
    /// VMCS of no logical processor but this one (e.g. a hypervisor that runs on one processor,
    /// or an EPT bound to a vCPU that never migrated).
    pub const unsafe fn new(root: &'a VmxRoot<P>) -> Self {
        Self { root }
    }
}

// SAFETY: the constructor's contract limits the EPTs to this processor, and `VmxRoot::invept`
// executes INVEPT on it (it is `!Send`, so it is this processor's) or returns an error.
unsafe impl<P: VmxInstructions> EptInvalidate for ThisCpuOnly<'_, P> {
    type Error = InvalidationError;

    fn invalidate(&mut self, kind: InveptType, eptp: u64) -> Result<(), InvalidationError> {
        self.root.invept(kind, eptp)
    }
}

/// A pending invalidation of the EPT-derived translations after a change to the tables
/// (SDM Vol. 3C §29.4.3.1 "Operations that Invalidate Cached Mappings").
///
/// Discharge it with [`crate::EptMapper::flush`], which executes INVEPT of the type the
/// capabilities allow (single-context when supported, else all-context) wherever the
/// [`EptInvalidate`] says the EPT may be cached — never INVLPG or a CR3 reload, which do not
/// touch EPT-derived mappings — and only then gives the table frames that changes unlinked back
/// to the mapper's own allocator. The token holds no frames: dropping it only delays their
/// release to the next flush.
#[must_use = "processors may keep using the old translations until INVEPT: call `EptMapper::flush`"]
#[derive(Debug, PartialEq, Eq)]
pub struct EptFlush {
    eptp: u64,
    kind: InveptType,
}

impl EptFlush {
    pub(crate) const fn new(eptp: u64, kind: InveptType) -> Self {
        Self { eptp, kind }
    }

    /// The EPTP whose translations are stale.
    pub const fn eptp(&self) -> u64 {
        self.eptp
    }

    /// The INVEPT type the flush will use.
    pub const fn invept_type(&self) -> InveptType {
        self.kind
    }

    /// Merges two pending invalidations of the same EPT into one, of the stronger type. Tokens
    /// of different EPTs are given back unchanged: each is flushed by its own mapper.
    pub fn combine(self, other: EptFlush) -> Result<EptFlush, (EptFlush, EptFlush)> {
        if self.eptp != other.eptp {
            return Err((self, other));
        }
        let kind = if other.kind == InveptType::AllContext {
            InveptType::AllContext
        } else {
            self.kind
        };
        Ok(Self { kind, ..self })
    }
}

/// Why [`crate::EptMapper::flush`] did not flush; the token comes back so that it is not lost.
#[derive(Debug, thiserror::Error)]
pub enum FlushError<E: fmt::Debug + fmt::Display> {
    /// The token is another EPT's: flushing this mapper would leave that EPT stale.
    #[error("the flush token is for EPTP {:#x}, this mapper's EPTP is {mapper:#x}", .token.eptp)]
    ForeignToken {
        /// The token, still pending.
        token: EptFlush,
        /// This mapper's EPTP.
        mapper: u64,
    },
    /// The invalidation failed; the frames stay held.
    #[error("INVEPT for EPTP {:#x} failed: {error}", .token.eptp)]
    Invalidation {
        /// Why it failed.
        error: E,
        /// The token, still pending.
        token: EptFlush,
    },
}
