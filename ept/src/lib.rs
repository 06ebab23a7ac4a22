//! Intel extended page tables (EPT), SDM Vol. 3C §29.3 "The Extended Page Table Mechanism
//! (EPT)": typed entries for every level, the EPT pointer built from what the processor
//! allows, guest- and host-physical addresses, a mapper over tables the caller owns with
//! 4-KiB/2-MiB/1-GiB pages, software walks, INVEPT-backed flush tokens and a diagnosis of EPT
//! misconfigurations and violations.
//!
//! ```
//! use ept::{
//!     EptConfig, EptMapper, Frame, FramePool, GuestPhysAddr, HostPhysAddr, LeafAttributes,
//!     MemoryType, OffsetPhysToVirt, PageSize, Permissions,
//! };
//! use vmx_caps::EptVpidCap;
//!
//! // IA32_VMX_EPT_VPID_CAP as read on Bochs' corei7_skylake_x model.
//! let caps = EptVpidCap(0x0000_0f01_0633_4141);
//! // Table frames from a fixed pool; host-side, a frame's address stands for its physical one.
//! let mut frames = vec![Frame::ZERO; 16];
//! let mut pool = FramePool::new(&mut frames);
//! // SAFETY: FramePool frames are accessible at their "physical" (= own) address.
//! let p2v = unsafe { OffsetPhysToVirt::identity() };
//! // The mapper borrows the pool for its life: table frames can only go back to it.
//! let mut ept = EptMapper::new(EptConfig::new(caps, 48), p2v, &mut pool).map_err(|e| e.error)?;
//!
//! // 1 GiB + 4 MiB of guest RAM at GPA 0 -> HPA 1 GiB: one 1-GiB page and two 2-MiB pages.
//! let ram = LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack);
//! let gpa = GuestPhysAddr::new(0)?;
//! let flush = ept.map(gpa, HostPhysAddr::new(1 << 30)?, (1 << 30) + (4 << 20), ram)?;
//! // SAFETY: this EPT has never been used by a VM entry; on a live one call
//! // `ept.flush(flush, &mut invalidate)`, which executes INVEPT on every CPU that may cache it.
//! unsafe { ept.assume_flushed(flush) };
//!
//! let t = ept.translate(GuestPhysAddr::new(0x4020_1234)?).unwrap();
//! assert_eq!(t.hpa.as_u64(), 0x8020_1234);
//! assert_eq!(t.page_size, PageSize::Size2M);
//! assert_eq!(t.permissions(), Permissions::RWX);
//! assert_eq!(t.memory_type(), Ok(MemoryType::WriteBack));
//! assert_eq!(ept.eptp().bits(), ept.root().as_u64() | 0x1e); // WB, 4-level walk
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Model
//!
//! - The caller owns the memory: frames come from a [`FrameAllocator`] and are reached through a
//!   [`PhysToVirt`] translation (both `unsafe` traits: their implementor vouches for the frames).
//!   [`FramePool`] needs no allocator; `HeapFrameAllocator` (feature `alloc`) suits host tests.
//!   The mapper owns its allocator (or a `&mut` to it) for its whole life, so a table frame can
//!   only ever go back to the allocator that gave it.
//! - Every change is all-or-nothing: it is validated and its table frames are reserved before any
//!   entry is written, so an error ([`MapError`]) leaves tables and allocator untouched.
//! - Every change returns an [`EptFlush`] token, discharged by [`EptMapper::flush`] with INVEPT
//!   (single-context where supported, else all-context) through an [`EptInvalidate`]: on every
//!   processor that may cache the EPT. Tables that changes emptied go back to the allocator
//!   only after that. [`EptShootdown`] runs the INVEPT on every processor through the caller's
//!   "run on CPU n" primitive; [`ThisCpuOnly`] (an `unsafe` promise) covers an EPT used by one
//!   processor. [`shootdown`] says which changes need the invalidation before and which after.
//! - [`EptWalker`] explains EPT misconfigurations and violations for any tables.
//!
//! Feature `serde`: addresses, entries, the EPTP, walks, diagnoses and errors serialize; the flag
//! sets ([`Permissions`], [`EntryFlags`], [`LeafFlags`], [`Access`]) as their raw number, like every
//! flag set of the workspace (`vmx_caps::serde_bits` says why); a number with bits the type does not
//! define is refused, not truncated.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod diagnose;
mod entry;
mod flush;
mod frame;
mod mapper;
pub mod shootdown;
mod types;

pub use diagnose::{
    Access, EptWalker, MisconfigRule, Misconfiguration, Violation, ViolationReason,
};
pub use entry::{
    ADDRESS_MASK, EntryFlags, EntryKind, LeafAttributes, LeafFlags, MEMORY_TYPE_MASK, PdEntry,
    PdptEntry, Pml4Entry, Pml5Entry, PtEntry, reserved_mask,
};
pub use flush::{EptFlush, EptInvalidate, FlushError, ThisCpuOnly};
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub use frame::HeapFrameAllocator;
pub use frame::{Frame, FrameAllocator, FramePool, OffsetPhysToVirt, PhysToVirt};
pub use mapper::{
    BreakBeforeMakeError, CreateError, EptConfig, EptMapper, MapError, Mapping, RangePart,
    Translation,
};
pub use shootdown::{EptShootdown, ShootdownError};
pub use types::{Level, PageSize, Permissions};
/// The EPTP and the values it holds, and the physical addresses: declared in `vmcs-fields`
/// beside the field table whose `EPT_POINTER` field holds an [`EptPointer`], so that the field
/// table does not depend on the mapper.
pub use vmcs_fields::{
    AddrError, EptPointer, EptpBuilder, EptpError, GuestPhysAddr, HostPhysAddr,
    MAX_PHYS_ADDR_WIDTH, MemoryType, ReservedMemoryType, ReservedWalkLength, WalkLength,
};
