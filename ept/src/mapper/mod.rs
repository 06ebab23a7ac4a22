//! The EPT mapper: builds and edits EPT paging structures in memory the caller owns.
//!
//! This file holds the types, the configuration, construction, invalidation, table access and
//! validation; each operation has its own file: `query` (translate, walk, iterate), `map`, `edit`
//! (unmap and protect), `resize` (split and merge) and `teardown` (destroy, invariants).

use core::fmt;

use vmx_caps::EptVpidCap;
use vmx_core::InveptType;

use crate::diagnose::EptWalker;
use crate::entry::{ADDRESS_MASK, EntryFlags, LeafAttributes, reserved_mask};
use crate::flush::{EptFlush, EptInvalidate, FlushError, FreedFrames};
use crate::frame::{FrameAllocator, PhysToVirt};
use crate::{EptPointer, EptpError};
use crate::{GuestPhysAddr, HostPhysAddr, MAX_PHYS_ADDR_WIDTH};
use crate::{Level, MemoryType, PageSize, Permissions, ReservedMemoryType, WalkLength};

const PAGE: u64 = 4096;
/// Bits that make a mapper-written entry present: R, W, X and user-mode X.
const ACCESS_BITS: u64 = 0x407;
/// Access rights of every non-leaf entry the mapper writes: all, so that leaves decide.
const TABLE_BITS: u64 = 0x407;
const PS: u64 = EntryFlags::PAGE_SIZE.bits();
const AD: u64 = EntryFlags::ACCESSED.bits() | EntryFlags::DIRTY.bits();
const SPP: u64 = EntryFlags::SUB_PAGE_WRITE.bits();
/// Bits that make two leaves "the same mapping" apart from their address.
const LEAF_ATTR_MASK: u64 = !(ADDRESS_MASK | AD | PS | SPP);
const END: u64 = u64::MAX;

/// Which address of a request was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RangePart {
    /// The guest-physical start.
    GuestPhysAddr,
    /// The host-physical start.
    HostPhysAddr,
    /// The length.
    Length,
}

impl fmt::Display for RangePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GuestPhysAddr => "guest-physical address",
            Self::HostPhysAddr => "host-physical address",
            Self::Length => "length",
        })
    }
}

/// Why the mapper refused a request. When an operation returns an error, the tables are
/// exactly as they were before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MapError {
    /// The range has length 0.
    #[error("the range is empty")]
    EmptyRange,
    /// A start or the length is not a multiple of 4 KiB.
    #[error("{what} {value:#x} is not a multiple of 4 KiB")]
    Unaligned {
        /// Which part of the request.
        what: RangePart,
        /// Its value.
        value: u64,
    },
    /// The range ends beyond what the tables can translate (guest side: the page-walk length's
    /// 48 or 57 bits, capped at 52) or beyond the physical-address width (host side).
    #[error("{what} range ends at {end:#x}, beyond the {width}-bit limit")]
    BeyondWidth {
        /// Which side of the mapping.
        what: RangePart,
        /// The first address past the range.
        end: u64,
        /// The width exceeded.
        width: u8,
    },
    /// Part of the range is already mapped.
    #[error("guest-physical {gpa:?} is already mapped (by an {level})")]
    AlreadyMapped {
        /// The first mapped guest-physical address met in the range.
        gpa: GuestPhysAddr,
        /// The level of the leaf that maps it.
        level: Level,
    },
    /// Part of the range is not mapped.
    #[error("guest-physical {gpa:?} is not mapped")]
    NotMapped {
        /// The first unmapped guest-physical address met in the range.
        gpa: GuestPhysAddr,
    },
    /// `split` was asked to split a 4-KiB page.
    #[error("guest-physical {gpa:?} is mapped by a 4-KiB page, which cannot be split")]
    NotLargePage {
        /// The address.
        gpa: GuestPhysAddr,
    },
    /// The frame allocator ran dry before the operation could reserve every table it needs.
    #[error(
        "out of frames: the operation needs {needed} new table frames, the allocator gave {obtained}"
    )]
    OutOfFrames {
        /// Frames the operation needs.
        needed: usize,
        /// Frames the allocator gave before returning `None`.
        obtained: usize,
    },
    /// The frame allocator returned a frame that is not 4-KiB aligned.
    #[error("the frame allocator returned {0:?}, which is not 4-KiB aligned")]
    MisalignedFrame(HostPhysAddr),
    /// The frame allocator returned a frame beyond the physical-address width; an entry
    /// pointing at it would set reserved bits (an EPT misconfiguration).
    #[error(
        "the frame allocator returned {frame:?}, beyond the {width}-bit physical-address width"
    )]
    FrameBeyondWidth {
        /// The frame.
        frame: HostPhysAddr,
        /// The configured physical-address width.
        width: u8,
    },
    /// Write access without read access: an EPT misconfiguration (SDM §29.3.3.1).
    #[error("permissions {0:?} allow write without read, an EPT misconfiguration")]
    WriteWithoutRead(Permissions),
    /// Execute-only permissions on a processor without execute-only support
    /// (IA32_VMX_EPT_VPID_CAP bit 0).
    #[error(
        "permissions {0:?} are execute-only, which this processor does not support (IA32_VMX_EPT_VPID_CAP[0] is 0)"
    )]
    ExecuteOnlyNotSupported(Permissions),
    /// No access at all: such an entry is simply not present; use `unmap` instead.
    #[error("a mapping needs at least one of read, execute or user-mode execute access")]
    NoAccess,
    /// The page size is not supported (IA32_VMX_EPT_VPID_CAP bit 16 for 2 MiB, 17 for 1 GiB).
    #[error("{0:?} pages are not supported by this processor")]
    PageSizeNotSupported(PageSize),
    /// The EPTP settings are not supported.
    #[error(transparent)]
    Eptp(#[from] EptpError),
    /// The processor supports neither INVEPT type (IA32_VMX_EPT_VPID_CAP bits 20, 25, 26).
    #[error(
        "INVEPT (single-context or all-context) is not supported: EPT changes could not be invalidated"
    )]
    InveptNotSupported,
    /// The physical-address width is not in 12..=52.
    #[error("physical-address width {0} is not in 12..=52")]
    InvalidPhysAddrWidth(u8),
}

/// [`EptMapper::new`] failed; the allocator it was given comes back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CreateError<A> {
    /// Why the mapper could not be created.
    pub error: MapError,
    /// The allocator, every frame it handed out given back.
    pub allocator: A,
}

/// Why [`EptMapper::split_break_before_make`] stopped. After a [`FlushError`] the tables hold
/// the step before it (the page without execute access, or split): retry the flush with the
/// token inside, then the remaining steps.
#[derive(Debug, thiserror::Error)]
pub enum BreakBeforeMakeError<E: fmt::Debug + fmt::Display> {
    /// The split (or a protect step) was refused; execute access is as it was.
    #[error(transparent)]
    Map(#[from] MapError),
    /// An invalidation failed.
    #[error(transparent)]
    Flush(#[from] FlushError<E>),
    /// The page is execute-only: it cannot lose execute access without losing every access.
    /// Unmap it, flush, and map it again instead.
    #[error("permissions {0:?} are execute-only: taking execute away would leave no access")]
    ExecuteOnly(Permissions),
}

/// The settings of an EPT hierarchy, checked against the processor's capabilities when the
/// mapper is created.
///
/// ```
/// use ept::{EptConfig, MemoryType, PageSize, WalkLength};
/// use vmx_caps::EptVpidCap;
///
/// // IA32_VMX_EPT_VPID_CAP of Bochs' corei7_skylake_x: 4-level walks, WB, 2-MiB and 1-GiB pages.
/// let caps = EptVpidCap(0x0000_0f01_0633_4141);
/// let config = EptConfig::new(caps, 46).largest_page(PageSize::Size2M);
/// assert_eq!(config.phys_addr_width(), 46);
/// let _ = config.walk_length(WalkLength::Four).memory_type(MemoryType::WriteBack);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptConfig {
    caps: EptVpidCap,
    phys_addr_width: u8,
    walk: WalkLength,
    largest_page: PageSize,
    memory_type: MemoryType,
    accessed_dirty: bool,
    supervisor_shadow_stack: bool,
}

impl EptConfig {
    /// The defaults the capabilities allow: a 4-level walk (5 if only that is supported),
    /// write-back paging structures (UC if WB is not allowed), the largest supported page
    /// size, no A/D flags, no supervisor shadow-stack control. `phys_addr_width` is the
    /// processor's MAXPHYADDR (CPUID.80000008H:EAX bits 7:0).
    pub fn new(caps: EptVpidCap, phys_addr_width: u8) -> Self {
        let walk = if !caps.page_walk_4() && caps.page_walk_5() {
            WalkLength::Five
        } else {
            WalkLength::Four
        };
        let memory_type = if !caps.memory_type_wb() && caps.memory_type_uc() {
            MemoryType::Uncacheable
        } else {
            MemoryType::WriteBack
        };
        let largest_page = if caps.pdpte_1gb() {
            PageSize::Size1G
        } else if caps.pde_2mb() {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        Self {
            caps,
            phys_addr_width,
            walk,
            largest_page,
            memory_type,
            accessed_dirty: false,
            supervisor_shadow_stack: false,
        }
    }

    /// Sets the page-walk length.
    pub fn walk_length(self, walk: WalkLength) -> Self {
        Self { walk, ..self }
    }

    /// Limits the largest page size the mapper uses.
    pub fn largest_page(self, size: PageSize) -> Self {
        Self {
            largest_page: size,
            ..self
        }
    }

    /// Sets the EPT paging-structure memory type (EPTP bits 2:0).
    pub fn memory_type(self, memory_type: MemoryType) -> Self {
        Self {
            memory_type,
            ..self
        }
    }

    /// Enables accessed and dirty flags (EPTP bit 6).
    pub fn accessed_dirty(self, on: bool) -> Self {
        Self {
            accessed_dirty: on,
            ..self
        }
    }

    /// Enables supervisor shadow-stack enforcement (EPTP bit 7).
    pub fn supervisor_shadow_stack(self, on: bool) -> Self {
        Self {
            supervisor_shadow_stack: on,
            ..self
        }
    }

    /// The capabilities this configuration was made from.
    pub fn capabilities(&self) -> EptVpidCap {
        self.caps
    }

    /// The physical-address width (MAXPHYADDR).
    pub fn phys_addr_width(&self) -> u8 {
        self.phys_addr_width
    }
}

/// The result of a software walk: where a guest-physical address goes and with which rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Translation {
    /// The host-physical address the guest-physical address translates to.
    pub hpa: HostPhysAddr,
    /// The size of the page that maps it.
    pub page_size: PageSize,
    /// The raw leaf entry.
    pub leaf: u64,
}

impl Translation {
    /// The access rights of the page.
    pub const fn permissions(&self) -> Permissions {
        Permissions::from_entry_bits(self.leaf)
    }

    /// The EPT memory type of the page.
    pub const fn memory_type(&self) -> Result<MemoryType, ReservedMemoryType> {
        MemoryType::from_bits(((self.leaf >> 3) & 7) as u8)
    }

    /// Permissions, memory type and leaf flags.
    pub const fn attributes(&self) -> Result<LeafAttributes, ReservedMemoryType> {
        LeafAttributes::from_leaf_bits(self.leaf)
    }
}

/// One page mapping, as reported by [`EptMapper::for_each_mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Mapping {
    /// The first guest-physical address of the page.
    pub gpa: GuestPhysAddr,
    /// The host-physical address of the page.
    pub hpa: HostPhysAddr,
    /// The page size.
    pub page_size: PageSize,
    /// The raw leaf entry.
    pub leaf: u64,
}

/// Frames taken from the allocator before a change, linked through their first word (host-
/// physical address of the next, [`END`] at the end).
struct Reserve {
    head: u64,
    count: usize,
}

/// Builds and edits an EPT hierarchy in frames from a [`FrameAllocator`], reached through a
/// [`PhysToVirt`] translation.
///
/// Every change is all-or-nothing: a first pass checks the request against the tables and
/// counts the table frames it needs, the frames are reserved, and only then are the tables
/// written. Every change returns an [`EptFlush`] to be discharged with INVEPT. Non-root tables
/// that become empty are freed (after the INVEPT).
///
/// Non-leaf entries are written with every access right (R, W, X and user-mode X), so that
/// leaves alone decide.
///
/// ```
/// use ept::{
///     EptConfig, EptMapper, Frame, FramePool, GuestPhysAddr, HostPhysAddr, LeafAttributes,
///     MemoryType, OffsetPhysToVirt, PageSize, Permissions,
/// };
/// use vmx_caps::EptVpidCap;
///
/// let caps = EptVpidCap(0x0000_0f01_0633_4141); // Bochs' corei7_skylake_x
/// let mut frames = vec![Frame::ZERO; 8];
/// let mut pool = FramePool::new(&mut frames);
/// // SAFETY: host-side, a pool frame's address stands for its physical one.
/// let p2v = unsafe { OffsetPhysToVirt::identity() };
/// let config = EptConfig::new(caps, 48).largest_page(PageSize::Size2M);
/// let mut ept = EptMapper::new(config, p2v, &mut pool).map_err(|e| e.error)?;
/// // 4 MiB of RAM at GPA 0x20_0000 -> HPA 0x4000_0000: two 2-MiB pages.
/// let ram = LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack);
/// let gpa = GuestPhysAddr::new(0x20_0000)?;
/// let flush = ept.map(gpa, HostPhysAddr::new(0x4000_0000)?, 4 << 20, ram)?;
/// // SAFETY: no processor has used this EPT yet.
/// unsafe { ept.assume_flushed(flush) };
/// let t = ept.translate(GuestPhysAddr::new(0x40_0123)?).unwrap();
/// assert_eq!((t.hpa.as_u64(), t.page_size), (0x4020_0123, PageSize::Size2M));
/// // Make the first 4 KiB read-only: the 2-MiB page is split, and the change must be flushed.
/// let read_only = LeafAttributes::new(Permissions::READ, MemoryType::WriteBack);
/// let flush = ept.protect(gpa, 0x1000, read_only)?;
/// unsafe { ept.assume_flushed(flush) };
/// assert_eq!(ept.translate(gpa).unwrap().permissions(), Permissions::READ);
/// assert_eq!(ept.translate(gpa).unwrap().page_size, PageSize::Size4K);
/// ept.check_invariants().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EptMapper<P: PhysToVirt, A: FrameAllocator> {
    p2v: P,
    alloc: A,
    /// Table frames unlinked by changes, waiting for the invalidation before going back to
    /// `alloc`.
    pending: FreedFrames,
    root: u64,
    config: EptConfig,
    eptp: EptPointer,
    invept: InveptType,
    tables: usize,
    /// The shift of the root level (39 or 48), cached for `translate`.
    root_shift: u32,
}

impl<P: PhysToVirt, A: FrameAllocator> fmt::Debug for EptMapper<P, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EptMapper")
            .field("eptp", &self.eptp)
            .field("config", &self.config)
            .field("invept", &self.invept)
            .field("tables", &self.tables)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

#[inline(always)]
const fn level_below(level: Level) -> Level {
    match level {
        Level::Pml5 => Level::Pml4,
        Level::Pml4 => Level::Pdpt,
        Level::Pdpt => Level::Pd,
        _ => Level::Pt,
    }
}

#[inline(always)]
const fn is_leaf(entry: u64, level: Level) -> bool {
    matches!(level, Level::Pt) || entry & PS != 0
}

impl<P: PhysToVirt, A: FrameAllocator> EptMapper<P, A> {
    /// Creates an empty hierarchy over the frames of `alloc`: takes one frame for the root
    /// table (PML4 or PML5) and builds the EPTP, checking the configuration against the
    /// capabilities. The mapper keeps `alloc` for its life, so that every table frame goes back
    /// to the allocator it came from; pass `&mut allocator` to keep ownership. On error the
    /// allocator comes back inside the error.
    pub fn new(config: EptConfig, p2v: P, mut alloc: A) -> Result<Self, CreateError<A>> {
        match Self::create_root(&config, &mut alloc) {
            Ok((root, eptp, invept)) => {
                let mapper = Self {
                    p2v,
                    alloc,
                    pending: FreedFrames::EMPTY,
                    root: root.as_u64(),
                    config,
                    eptp,
                    invept,
                    tables: 1,
                    root_shift: Level::root(config.walk).shift(),
                };
                // SAFETY: the root frame is ours and not yet linked anywhere.
                unsafe { mapper.zero(mapper.root) };
                Ok(mapper)
            }
            Err(error) => Err(CreateError {
                error,
                allocator: alloc,
            }),
        }
    }

    fn create_root(
        config: &EptConfig,
        alloc: &mut A,
    ) -> Result<(HostPhysAddr, EptPointer, InveptType), MapError> {
        let caps = config.caps;
        if !(12..=MAX_PHYS_ADDR_WIDTH).contains(&config.phys_addr_width) {
            return Err(MapError::InvalidPhysAddrWidth(config.phys_addr_width));
        }
        match config.largest_page {
            PageSize::Size1G if !caps.pdpte_1gb() => {
                return Err(MapError::PageSizeNotSupported(PageSize::Size1G));
            }
            PageSize::Size2M if !caps.pde_2mb() => {
                return Err(MapError::PageSizeNotSupported(PageSize::Size2M));
            }
            _ => {}
        }
        let invept = InveptType::best_for(&caps).ok_or(MapError::InveptNotSupported)?;
        // Validate the EPTP settings before taking a frame.
        EptPointer::builder(HostPhysAddr::ZERO)
            .memory_type(config.memory_type)
            .walk_length(config.walk)
            .accessed_dirty(config.accessed_dirty)
            .supervisor_shadow_stack(config.supervisor_shadow_stack)
            .build(&caps)?;
        let root = alloc.allocate_frame().ok_or(MapError::OutOfFrames {
            needed: 1,
            obtained: 0,
        })?;
        if let Err(e) = Self::check_frame(root, config.phys_addr_width) {
            // SAFETY: `root` came from `alloc` and is unused.
            unsafe { alloc.deallocate_frame(root) };
            return Err(e);
        }
        // The settings were validated above.
        let eptp = EptPointer::from_parts(
            root,
            config.memory_type,
            config.walk,
            config.accessed_dirty,
            config.supervisor_shadow_stack,
        );
        Ok((root, eptp, invept))
    }

    /// The EPTP to write into the VMCS.
    pub fn eptp(&self) -> EptPointer {
        self.eptp
    }

    /// The host-physical address of the root table.
    pub fn root(&self) -> HostPhysAddr {
        HostPhysAddr::new_truncate(self.root)
    }

    /// The configuration.
    pub fn config(&self) -> &EptConfig {
        &self.config
    }

    /// The INVEPT type flush tokens use.
    pub fn invept_type(&self) -> InveptType {
        self.invept
    }

    /// The number of table frames in use, the root included.
    pub fn table_frames(&self) -> usize {
        self.tables
    }

    /// The number of unlinked table frames waiting for a flush before going back to the
    /// allocator.
    pub fn pending_frames(&self) -> usize {
        self.pending.len()
    }

    /// The allocator the table frames come from (read-only: replacing it would send frames
    /// back to the wrong one).
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    // ----- invalidation -----

    /// Discharges `token`: invalidates the mappings derived from this EPT through `invalidate`
    /// (INVEPT of the token's type everywhere the EPT may be cached), then gives every table
    /// frame that changes unlinked back to the allocator. A token of another EPT, or a failed
    /// invalidation, comes back inside the error with the frames still held.
    pub fn flush<I: EptInvalidate>(
        &mut self,
        token: EptFlush,
        invalidate: &mut I,
    ) -> Result<(), FlushError<I::Error>> {
        if token.eptp() != self.eptp.bits() {
            return Err(FlushError::ForeignToken {
                token,
                mapper: self.eptp.bits(),
            });
        }
        match invalidate.invalidate(token.invept_type(), token.eptp()) {
            // SAFETY: the pending frames came from `self.alloc` and were unlinked before the
            // invalidation began; `EptInvalidate` promises that no processor holds cached
            // translations of this EPT from before that point, so none can reach them.
            Ok(()) => unsafe { self.pending.release(&self.p2v, &mut self.alloc) },
            Err(error) => return Err(FlushError::Invalidation { error, token }),
        }
        Ok(())
    }

    /// Discharges `token` without invalidating, giving the unlinked table frames back.
    ///
    /// # Safety
    ///
    /// No logical processor may hold translations derived from this EPT from before the
    /// changes: the EPT was never in a VMCS used for VM entry (e.g. the tables are still being
    /// built), or an INVEPT covering it has been executed since the changes, by other means,
    /// on every processor that used it.
    pub unsafe fn assume_flushed(&mut self, token: EptFlush) {
        debug_assert_eq!(token.eptp(), self.eptp.bits(), "token of another EPT");
        // SAFETY: the frames came from `self.alloc`; unreachable per the caller's promise.
        unsafe { self.pending.release(&self.p2v, &mut self.alloc) };
    }

    // ----- raw table access -----

    #[inline(always)]
    fn table(&self, frame: u64) -> *mut u64 {
        self.p2v.phys_to_virt(HostPhysAddr::new_truncate(frame))
    }

    /// # Safety
    /// `frame` is a table frame of this mapper (or reserved by it).
    #[inline(always)]
    unsafe fn read(&self, frame: u64, idx: usize) -> u64 {
        // SAFETY: per `PhysToVirt`, the frame's 512 entries are readable; idx < 512.
        unsafe { self.table(frame).add(idx).read_volatile() }
    }

    /// # Safety
    /// `frame` is a table frame of this mapper (or reserved by it).
    #[inline(always)]
    unsafe fn write(&self, frame: u64, idx: usize, value: u64) {
        // SAFETY: per `PhysToVirt`, the frame's 512 entries are writable; idx < 512.
        unsafe { self.table(frame).add(idx).write_volatile(value) }
    }

    /// # Safety
    /// `frame` is a frame of this mapper that no processor walks.
    unsafe fn zero(&self, frame: u64) {
        // SAFETY: per `PhysToVirt`, the frame's 4096 bytes are writable.
        unsafe { core::ptr::write_bytes(self.table(frame), 0, 512) }
    }

    fn new_flush(&self) -> EptFlush {
        EptFlush::new(self.eptp.bits(), self.invept)
    }

    /// # Safety
    /// `frame` is a table frame of this mapper, already unlinked.
    unsafe fn defer_free(&mut self, frame: u64) {
        self.tables -= 1;
        // SAFETY: the frame is ours, unlinked, and its memory reachable per `PhysToVirt`.
        unsafe {
            self.pending
                .push(&self.p2v, HostPhysAddr::new_truncate(frame))
        };
    }

    /// `width` is the configuration's, which `EptMapper::new` keeps within 12..=52 (checked
    /// before the root frame is): the shift is in range.
    fn check_frame(frame: HostPhysAddr, width: u8) -> Result<(), MapError> {
        if !frame.is_aligned(PAGE) {
            Err(MapError::MisalignedFrame(frame))
        } else if frame.as_u64() >> width != 0 {
            Err(MapError::FrameBeyondWidth { frame, width })
        } else {
            Ok(())
        }
    }

    fn reserve(&mut self, needed: usize) -> Result<Reserve, MapError> {
        let mut r = Reserve {
            head: END,
            count: 0,
        };
        while r.count < needed {
            match self.alloc.allocate_frame() {
                Some(f) if Self::check_frame(f, self.config.phys_addr_width).is_ok() => {
                    // SAFETY: `f` is a fresh frame from the allocator, reachable per `PhysToVirt`.
                    unsafe { self.write(f.as_u64(), 0, r.head) };
                    r.head = f.as_u64();
                    r.count += 1;
                }
                other => {
                    let obtained = r.count;
                    self.release(r);
                    return Err(match other {
                        Some(f) => {
                            // SAFETY: `f` came from `alloc` and is unused.
                            unsafe { self.alloc.deallocate_frame(f) };
                            match Self::check_frame(f, self.config.phys_addr_width) {
                                Err(e) => e,
                                Ok(()) => MapError::MisalignedFrame(f),
                            }
                        }
                        None => MapError::OutOfFrames { needed, obtained },
                    });
                }
            }
        }
        Ok(r)
    }

    fn release(&mut self, mut r: Reserve) {
        while r.count > 0 {
            let f = self.pop(&mut r);
            // SAFETY: reserved frames come from `alloc` and are unused.
            unsafe { self.alloc.deallocate_frame(HostPhysAddr::new_truncate(f)) };
        }
    }

    /// Takes a reserved frame (content undefined) and counts it as a table.
    fn pop(&self, r: &mut Reserve) -> u64 {
        // The planning passes count exactly what the apply passes take (the model tests check
        // this); an empty reserve here would be a bug in those counts.
        debug_assert!(
            r.count > 0,
            "EPT mapper reserve exhausted: planning undercounted"
        );
        let f = r.head;
        // SAFETY: `f` is a reserved frame; its word 0 holds the link.
        r.head = unsafe { self.read(f, 0) };
        r.count -= 1;
        f
    }

    fn take_table(&mut self, r: &mut Reserve) -> u64 {
        self.tables += 1;
        self.pop(r)
    }

    // ----- validation -----

    fn check_range(&self, gpa: u64, len: u64) -> Result<u64, MapError> {
        if len == 0 {
            return Err(MapError::EmptyRange);
        }
        if !gpa.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned {
                what: RangePart::GuestPhysAddr,
                value: gpa,
            });
        }
        if !len.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned {
                what: RangePart::Length,
                value: len,
            });
        }
        let width = self.config.walk.gpa_width().min(MAX_PHYS_ADDR_WIDTH);
        match gpa.checked_add(len) {
            Some(end) if end <= 1 << width => Ok(end),
            _ => Err(MapError::BeyondWidth {
                what: RangePart::GuestPhysAddr,
                end: gpa.wrapping_add(len),
                width,
            }),
        }
    }

    fn check_attributes(&self, attrs: &LeafAttributes) -> Result<(), MapError> {
        let p = attrs.permissions;
        if p.contains(Permissions::WRITE) && !p.contains(Permissions::READ) {
            return Err(MapError::WriteWithoutRead(p));
        }
        if !p.intersects(Permissions::READ | Permissions::EXECUTE | Permissions::USER_EXECUTE) {
            return Err(MapError::NoAccess);
        }
        if !p.contains(Permissions::READ) && !self.config.caps.execute_only() {
            return Err(MapError::ExecuteOnlyNotSupported(p));
        }
        Ok(())
    }

    fn page_allowed(&self, level: Level) -> bool {
        match level {
            Level::Pt => true,
            Level::Pd => self.config.largest_page >= PageSize::Size2M && self.config.caps.pde_2mb(),
            Level::Pdpt => {
                self.config.largest_page >= PageSize::Size1G && self.config.caps.pdpte_1gb()
            }
            _ => false,
        }
    }

    fn root_level(&self) -> Level {
        Level::root(self.config.walk)
    }
}

mod edit;
mod map;
mod query;
mod resize;
mod teardown;
