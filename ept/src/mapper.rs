//! The EPT mapper: builds and edits EPT paging structures in memory the caller owns.

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

    // ----- translate -----

    /// Walks the tables in software: where `gpa` goes, with which rights and memory type, and
    /// by which page size. `None` if it is not mapped.
    #[inline]
    pub fn translate(&self, gpa: GuestPhysAddr) -> Option<Translation> {
        let gpa = gpa.as_u64();
        let mut frame = self.root;
        let mut shift = self.root_shift;
        loop {
            // SAFETY: `frame` is the root or was read from a present non-leaf entry of ours.
            let e = unsafe {
                self.table(frame)
                    .add(((gpa >> shift) & 0x1ff) as usize)
                    .read_volatile()
            };
            if e & ACCESS_BITS == 0 {
                return None;
            }
            if shift == 12 || e & PS != 0 {
                let size_mask = (1u64 << shift) - 1;
                let page_size = match shift {
                    12 => PageSize::Size4K,
                    21 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                return Some(Translation {
                    hpa: HostPhysAddr::new_truncate(
                        (e & ADDRESS_MASK & !size_mask) | (gpa & size_mask),
                    ),
                    page_size,
                    leaf: e,
                });
            }
            frame = e & ADDRESS_MASK;
            shift -= 9;
        }
    }

    /// A walker over these tables that applies the processor's misconfiguration rules (see
    /// [`crate::diagnose`]); pass [`EptMapper::entry_reader`] as its reader.
    pub fn walker(&self) -> EptWalker {
        EptWalker::from_parts(
            self.eptp,
            self.root_level(),
            self.config.caps,
            self.config.phys_addr_width,
        )
    }

    /// Reads the entry at a host-physical address inside one of this mapper's tables
    /// (`None` for any other address): the reader for [`EptMapper::walker`].
    pub fn entry_reader(&self) -> impl FnMut(HostPhysAddr) -> Option<u64> + '_ {
        move |addr: HostPhysAddr| {
            let frame = addr.as_u64() & !(PAGE - 1);
            let mut found = false;
            self.visit_tables(self.root, self.root_level(), &mut |t, _| {
                found |= t.as_u64() == frame
            });
            // SAFETY: `frame` is one of our tables; the offset is 8-aligned inside it.
            found.then(|| unsafe { self.read(frame, ((addr.as_u64() & (PAGE - 1)) / 8) as usize) })
        }
    }

    /// Calls `f` with every page mapping, in ascending guest-physical order.
    pub fn for_each_mapping(&self, mut f: impl FnMut(Mapping)) {
        self.visit(self.root, self.root_level(), 0, &mut f);
    }

    fn visit(&self, frame: u64, level: Level, base: u64, f: &mut impl FnMut(Mapping)) {
        for idx in 0..512 {
            // SAFETY: `frame` is a table of ours.
            let e = unsafe { self.read(frame, idx) };
            if e & ACCESS_BITS == 0 {
                continue;
            }
            let gpa = base + ((idx as u64) << level.shift());
            if is_leaf(e, level) {
                let page_size = level.page_size().unwrap_or(PageSize::Size4K);
                f(Mapping {
                    gpa: GuestPhysAddr::new_truncate(gpa),
                    hpa: HostPhysAddr::new_truncate(e & ADDRESS_MASK & !(page_size.bytes() - 1)),
                    page_size,
                    leaf: e,
                });
            } else {
                self.visit(e & ADDRESS_MASK, level_below(level), gpa, f);
            }
        }
    }

    /// Calls `f` with the host-physical address and level of every table, the root included.
    pub fn for_each_table(&self, mut f: impl FnMut(HostPhysAddr, Level)) {
        self.visit_tables(self.root, self.root_level(), &mut f);
    }

    fn visit_tables(&self, frame: u64, level: Level, f: &mut impl FnMut(HostPhysAddr, Level)) {
        f(HostPhysAddr::new_truncate(frame), level);
        if level == Level::Pt {
            return;
        }
        for idx in 0..512 {
            // SAFETY: `frame` is a table of ours.
            let e = unsafe { self.read(frame, idx) };
            if e & ACCESS_BITS != 0 && !is_leaf(e, level) {
                self.visit_tables(e & ADDRESS_MASK, level_below(level), f);
            }
        }
    }

    // ----- map -----

    /// Maps `len` bytes of guest-physical memory at `gpa` to host-physical memory at `hpa`,
    /// with the largest pages that the alignment of both addresses, the length and the
    /// configuration allow.
    pub fn map(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len: u64,
        attrs: LeafAttributes,
    ) -> Result<EptFlush, MapError> {
        self.map_with_max_page(gpa, hpa, len, attrs, PageSize::Size1G)
    }

    /// Like [`EptMapper::map`], with pages no larger than `max_page`.
    pub fn map_with_max_page(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len: u64,
        attrs: LeafAttributes,
        max_page: PageSize,
    ) -> Result<EptFlush, MapError> {
        let (s, hs) = (gpa.as_u64(), hpa.as_u64());
        let e = self.check_range(s, len)?;
        if !hs.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned {
                what: RangePart::HostPhysAddr,
                value: hs,
            });
        }
        let width = self.config.phys_addr_width;
        match hs.checked_add(len) {
            Some(he) if he <= 1 << width => {}
            _ => {
                return Err(MapError::BeyondWidth {
                    what: RangePart::HostPhysAddr,
                    end: hs.wrapping_add(len),
                    width,
                });
            }
        }
        self.check_attributes(&attrs)?;
        let op = MapOp {
            delta: hs.wrapping_sub(s),
            bits: attrs.to_bits(),
            max_level: match max_page.min(self.config.largest_page) {
                PageSize::Size4K => Level::Pt,
                PageSize::Size2M => Level::Pd,
                PageSize::Size1G => Level::Pdpt,
            },
        };
        let needed = self.plan_map(Some(self.root), self.root_level(), s, e, &op)?;
        let mut r = self.reserve(needed)?;
        self.apply_map(self.root, self.root_level(), s, e, &op, &mut r, false);
        self.release(r);
        Ok(self.new_flush())
    }

    #[inline(always)]
    fn leaf_here(&self, level: Level, op: &MapOp, es: u64, ee: u64, s: u64, e: u64) -> bool {
        level <= op.max_level
            && self.page_allowed(level)
            && s <= es
            && ee <= e
            && es.wrapping_add(op.delta) & (level.span() - 1) == 0
    }

    /// Checks for overlaps and counts new tables. `frame` is `None` for a table that does not
    /// exist yet.
    fn plan_map(
        &self,
        frame: Option<u64>,
        level: Level,
        s: u64,
        e: u64,
        op: &MapOp,
    ) -> Result<usize, MapError> {
        if level == Level::Pt {
            if let Some(frame) = frame {
                for idx in Level::Pt.index_of(s)..=Level::Pt.index_of(e - 1) {
                    // SAFETY: `frame` is a table of ours.
                    if unsafe { self.read(frame, idx) } & ACCESS_BITS != 0 {
                        let gpa = (s & !(Level::Pd.span() - 1)) | ((idx as u64) << 12);
                        return Err(MapError::AlreadyMapped {
                            gpa: GuestPhysAddr::new_truncate(gpa),
                            level,
                        });
                    }
                }
            }
            return Ok(0);
        }
        let span = level.span();
        let mut needed = 0;
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let ee = es + span;
            let pe = ee.min(e);
            let entry = match frame {
                // SAFETY: `frame` is a table of ours.
                Some(f) => unsafe { self.read(f, level.index_of(cur)) },
                None => 0,
            };
            if entry & ACCESS_BITS != 0 {
                if is_leaf(entry, level) {
                    return Err(MapError::AlreadyMapped {
                        gpa: GuestPhysAddr::new_truncate(cur),
                        level,
                    });
                }
                needed +=
                    self.plan_map(Some(entry & ADDRESS_MASK), level_below(level), cur, pe, op)?;
            } else if !self.leaf_here(level, op, es, ee, cur, e) {
                needed += 1 + self.plan_map(None, level_below(level), cur, pe, op)?;
            }
            cur = pe;
        }
        Ok(needed)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_map(
        &mut self,
        frame: u64,
        level: Level,
        s: u64,
        e: u64,
        op: &MapOp,
        r: &mut Reserve,
        fresh: bool,
    ) {
        if level == Level::Pt {
            let lo = Level::Pt.index_of(s);
            let hi = Level::Pt.index_of(e - 1) + 1;
            let first = (s.wrapping_add(op.delta) & ADDRESS_MASK) | op.bits;
            if fresh {
                // SAFETY: a fresh table is ours alone and not yet linked: plain writes.
                let t = unsafe { core::slice::from_raw_parts_mut(self.table(frame), 512) };
                for (i, slot) in t[lo..hi].iter_mut().enumerate() {
                    *slot = first + ((i as u64) << 12);
                }
            } else {
                for (i, idx) in (lo..hi).enumerate() {
                    // SAFETY: `frame` is a table of ours.
                    unsafe { self.write(frame, idx, first + ((i as u64) << 12)) };
                }
            }
            return;
        }
        let span = level.span();
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let ee = es + span;
            let pe = ee.min(e);
            let idx = level.index_of(cur);
            let entry = if fresh {
                0
            } else {
                // SAFETY: `frame` is a table of ours.
                unsafe { self.read(frame, idx) }
            };
            if entry & ACCESS_BITS != 0 {
                self.apply_map(
                    entry & ADDRESS_MASK,
                    level_below(level),
                    cur,
                    pe,
                    op,
                    r,
                    false,
                );
            } else if self.leaf_here(level, op, es, ee, cur, e) {
                let leaf = (es.wrapping_add(op.delta) & ADDRESS_MASK) | op.bits | PS;
                // SAFETY: `frame` is a table of ours.
                unsafe { self.write(frame, idx, leaf) };
            } else {
                let child = self.take_table(r);
                let below = level_below(level);
                let whole_pt = below == Level::Pt && cur == es && pe == ee;
                if !whole_pt {
                    // SAFETY: the reserved frame is ours and unlinked.
                    unsafe { self.zero(child) };
                }
                self.apply_map(child, below, cur, pe, op, r, true);
                // SAFETY: `frame` is a table of ours; the child is complete before it is linked.
                unsafe { self.write(frame, idx, child | TABLE_BITS) };
            }
            cur = pe;
        }
    }

    // ----- unmap / protect (shared walk) -----

    /// Removes every mapping in `len` bytes at `gpa`; the whole range must be mapped. Large
    /// pages that straddle an end of the range are split first; tables that become empty are
    /// freed once the returned flush has run.
    pub fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<EptFlush, MapError> {
        let s = gpa.as_u64();
        let e = self.check_range(s, len)?;
        let needed = self.plan_edit(self.root, self.root_level(), s, e)?;
        let mut r = self.reserve(needed)?;
        self.apply_edit(self.root, self.root_level(), s, e, Edit::Unmap, &mut r);
        self.release(r);
        Ok(self.new_flush())
    }

    /// Changes permissions, memory type and leaf flags of every page in `len` bytes at `gpa`;
    /// the whole range must be mapped. Large pages that straddle an end of the range are split
    /// first, so that pages outside keep their attributes.
    pub fn protect(
        &mut self,
        gpa: GuestPhysAddr,
        len: u64,
        attrs: LeafAttributes,
    ) -> Result<EptFlush, MapError> {
        let s = gpa.as_u64();
        let e = self.check_range(s, len)?;
        self.check_attributes(&attrs)?;
        let needed = self.plan_edit(self.root, self.root_level(), s, e)?;
        let mut r = self.reserve(needed)?;
        let bits = attrs.to_bits();
        self.apply_edit(
            self.root,
            self.root_level(),
            s,
            e,
            Edit::Protect(bits),
            &mut r,
        );
        self.release(r);
        Ok(self.new_flush())
    }

    /// Checks that [s, e) is wholly mapped and counts the tables that splitting its edges needs.
    fn plan_edit(&self, frame: u64, level: Level, s: u64, e: u64) -> Result<usize, MapError> {
        let span = level.span();
        let mut needed = 0;
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let pe = (es + span).min(e);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, level.index_of(cur)) };
            if entry & ACCESS_BITS == 0 {
                return Err(MapError::NotMapped {
                    gpa: GuestPhysAddr::new_truncate(cur),
                });
            }
            if is_leaf(entry, level) {
                if cur != es || pe != es + span {
                    needed += self.split_cost(level, cur, pe);
                }
            } else {
                needed += self.plan_edit(entry & ADDRESS_MASK, level_below(level), cur, pe)?;
            }
            cur = pe;
        }
        Ok(needed)
    }

    /// Tables needed to split a large leaf at `level` so that [s, e) (inside it) is covered by
    /// whole leaves.
    fn split_cost(&self, level: Level, s: u64, e: u64) -> usize {
        let below = level_below(level);
        if below == Level::Pt || !self.page_allowed(below) {
            return self.split_tables(level);
        }
        let span = below.span();
        let mut n = 1;
        if s & (span - 1) != 0 {
            n += 1;
        }
        if e & (span - 1) != 0 && (s & !(span - 1) != (e - 1) & !(span - 1) || s & (span - 1) == 0)
        {
            n += 1;
        }
        n
    }

    /// Tables that splitting one large leaf at `level` takes: one, or for a 1-GiB page where
    /// 2-MiB pages are not allowed, a page directory and its 512 page tables.
    fn split_tables(&self, level: Level) -> usize {
        let below = level_below(level);
        if below != Level::Pt && !self.page_allowed(below) {
            513
        } else {
            1
        }
    }

    /// Replaces the large leaf `entry` at `level` with a table of next-lower leaves, or, for a
    /// 1-GiB page where 2-MiB pages are not allowed, with a page directory of 512 page tables of
    /// 4-KiB leaves.
    fn split_entry(&mut self, entry: u64, level: Level, r: &mut Reserve) -> u64 {
        let below = level_below(level);
        if below != Level::Pt && !self.page_allowed(below) {
            let child = self.take_table(r);
            let base = entry & ADDRESS_MASK & !(level.span() - 1);
            for i in 0..512u64 {
                // A 2-MiB leaf with this one's attributes, split in turn into a page table.
                let leaf = (entry & !ADDRESS_MASK) | (base + i * below.span());
                let pt = self.split_entry(leaf, below, r);
                // SAFETY: the reserved frame `child` is ours and unlinked.
                unsafe { self.write(child, i as usize, pt | TABLE_BITS) };
            }
            return child;
        }
        let child = self.take_table(r);
        let step = below.span();
        let keep = if below == Level::Pt {
            entry & !(ADDRESS_MASK | PS | SPP)
        } else {
            entry & !(ADDRESS_MASK | SPP)
        };
        let base = entry & ADDRESS_MASK & !(level.span() - 1);
        // SAFETY: the reserved frame is ours and unlinked.
        let t = unsafe { core::slice::from_raw_parts_mut(self.table(child), 512) };
        for (i, slot) in t.iter_mut().enumerate() {
            *slot = keep | (base + i as u64 * step);
        }
        child
    }

    fn apply_edit(
        &mut self,
        frame: u64,
        level: Level,
        s: u64,
        e: u64,
        edit: Edit,
        r: &mut Reserve,
    ) {
        let span = level.span();
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let pe = (es + span).min(e);
            let whole = cur == es && pe == es + span;
            let idx = level.index_of(cur);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, idx) };
            if is_leaf(entry, level) && whole {
                let new = match edit {
                    Edit::Unmap => 0,
                    Edit::Protect(bits) => (entry & !LEAF_ATTR_MASK) | bits,
                };
                // SAFETY: `frame` is a table of ours.
                unsafe { self.write(frame, idx, new) };
            } else if whole && matches!(edit, Edit::Unmap) {
                // SAFETY: `frame` is a table of ours; the subtree is unlinked before it is freed.
                unsafe { self.write(frame, idx, 0) };
                self.free_subtree(entry & ADDRESS_MASK, level_below(level));
            } else {
                let child = if is_leaf(entry, level) {
                    let child = self.split_entry(entry, level, r);
                    // SAFETY: `frame` is a table of ours; the child is complete.
                    unsafe { self.write(frame, idx, child | TABLE_BITS) };
                    child
                } else {
                    entry & ADDRESS_MASK
                };
                self.apply_edit(child, level_below(level), cur, pe, edit, r);
                if matches!(edit, Edit::Unmap) && self.is_empty(child) {
                    // SAFETY: `frame` is a table of ours; the child is unlinked, then freed.
                    unsafe {
                        self.write(frame, idx, 0);
                        self.defer_free(child);
                    }
                }
            }
            cur = pe;
        }
    }

    fn is_empty(&self, frame: u64) -> bool {
        // SAFETY: `frame` is a table of ours.
        (0..512).all(|i| unsafe { self.read(frame, i) } & ACCESS_BITS == 0)
    }

    fn free_subtree(&mut self, frame: u64, level: Level) {
        if level != Level::Pt {
            for idx in 0..512 {
                // SAFETY: `frame` is a table of ours.
                let e = unsafe { self.read(frame, idx) };
                if e & ACCESS_BITS != 0 && !is_leaf(e, level) {
                    self.free_subtree(e & ADDRESS_MASK, level_below(level));
                }
            }
        }
        // SAFETY: the subtree was unlinked by the caller.
        unsafe { self.defer_free(frame) };
    }

    // ----- split / merge -----

    /// Splits the large page that maps `gpa` into pages of the next smaller size with the same
    /// attributes (1 GiB into 2 MiB, 2 MiB into 4 KiB; 1 GiB into 4 KiB where the processor
    /// allows 1-GiB but not 2-MiB pages).
    pub fn split(&mut self, gpa: GuestPhysAddr) -> Result<EptFlush, MapError> {
        let g = gpa.as_u64();
        self.check_range(g & !(PAGE - 1), PAGE)?;
        let mut frame = self.root;
        let mut level = self.root_level();
        loop {
            let idx = level.index_of(g);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, idx) };
            if entry & ACCESS_BITS == 0 {
                return Err(MapError::NotMapped { gpa });
            }
            if is_leaf(entry, level) {
                if level == Level::Pt {
                    return Err(MapError::NotLargePage { gpa });
                }
                let mut r = self.reserve(self.split_tables(level))?;
                let child = self.split_entry(entry, level, &mut r);
                // SAFETY: `frame` is a table of ours; the child is complete.
                unsafe { self.write(frame, idx, child | TABLE_BITS) };
                self.release(r);
                return Ok(self.new_flush());
            }
            frame = entry & ADDRESS_MASK;
            level = level_below(level);
        }
    }

    /// [`EptMapper::split`] for a page the guest may be executing from on other processors, in
    /// break-before-make order (see [`crate::shootdown`]): takes execute access (bits 2 and 10)
    /// away from the large page and invalidates through `invalidate`, splits and invalidates,
    /// then gives execute access back and invalidates. No processor can hold instruction-TLB
    /// entries of both sizes for the page (the iTLB-multihit erratum). A page without execute
    /// access is simply split (and invalidated). If the split fails (out of frames), execute
    /// access is restored before the error is returned.
    pub fn split_break_before_make<I: EptInvalidate>(
        &mut self,
        gpa: GuestPhysAddr,
        invalidate: &mut I,
    ) -> Result<(), BreakBeforeMakeError<I::Error>> {
        let t = self.translate(gpa).ok_or(MapError::NotMapped { gpa })?;
        if t.page_size == PageSize::Size4K {
            return Err(MapError::NotLargePage { gpa }.into());
        }
        let base = GuestPhysAddr::new_truncate(gpa.as_u64() & !(t.page_size.bytes() - 1));
        let len = t.page_size.bytes();
        let attrs =
            LeafAttributes::from_leaf_bits(t.leaf).map_err(|_| MapError::NotMapped { gpa })?;
        let execute = Permissions::EXECUTE | Permissions::USER_EXECUTE;
        let executable = attrs.permissions.intersects(execute);
        if executable {
            if !attrs.permissions.contains(Permissions::READ) {
                return Err(BreakBeforeMakeError::ExecuteOnly(attrs.permissions));
            }
            let no_exec = LeafAttributes {
                permissions: attrs.permissions - execute,
                ..attrs
            };
            let f = self.protect(base, len, no_exec)?;
            self.flush(f, invalidate)?;
        }
        match self.split(gpa) {
            Ok(f) => self.flush(f, invalidate)?,
            Err(e) => {
                if executable {
                    let f = self.protect(base, len, attrs)?;
                    self.flush(f, invalidate)?;
                }
                return Err(e.into());
            }
        }
        if executable {
            let f = self.protect(base, len, attrs)?;
            self.flush(f, invalidate)?;
        }
        Ok(())
    }

    /// Replaces every table that lies wholly within `len` bytes at `gpa` and whose 512 leaves
    /// map one contiguous, suitably aligned host range with identical attributes by one large
    /// leaf, where the configuration allows that page size; repeats upwards (4 KiB → 2 MiB →
    /// 1 GiB). Accessed and dirty flags of the merged leaves are combined. Leaves with sub-page
    /// write permissions are never merged. Returns the number of merges with the flush.
    pub fn merge(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<(EptFlush, usize), MapError> {
        let s = gpa.as_u64();
        let e = self.check_range(s, len)?;
        let merged = self.apply_merge(self.root, self.root_level(), s, e);
        Ok((self.new_flush(), merged))
    }

    fn apply_merge(&mut self, frame: u64, level: Level, s: u64, e: u64) -> usize {
        if level == Level::Pt {
            return 0;
        }
        let span = level.span();
        let mut merged = 0;
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let pe = (es + span).min(e);
            let idx = level.index_of(cur);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, idx) };
            if entry & ACCESS_BITS != 0 && !is_leaf(entry, level) {
                let child = entry & ADDRESS_MASK;
                merged += self.apply_merge(child, level_below(level), cur, pe);
                let whole = cur == es && pe == es + span;
                if let Some(leaf) = self
                    .mergeable(child, level)
                    .filter(|_| whole && self.page_allowed(level))
                {
                    // SAFETY: `frame` is a table of ours; the child is unlinked, then freed.
                    unsafe {
                        self.write(frame, idx, leaf);
                        self.defer_free(child);
                    }
                    merged += 1;
                }
            }
            cur = pe;
        }
        merged
    }

    /// The large leaf at `level` equivalent to the table `child`, if there is one.
    fn mergeable(&self, child: u64, level: Level) -> Option<u64> {
        let below = level_below(level);
        // SAFETY: `child` is a table of ours.
        let first = unsafe { self.read(child, 0) };
        if first & ACCESS_BITS == 0 || !is_leaf(first, below) {
            return None;
        }
        let base = first & ADDRESS_MASK;
        if base & (level.span() - 1) != 0 {
            return None;
        }
        let attrs = first & LEAF_ATTR_MASK;
        let mut ad = 0;
        for i in 0..512u64 {
            // SAFETY: `child` is a table of ours.
            let x = unsafe { self.read(child, i as usize) };
            let ok = x & ACCESS_BITS != 0
                && is_leaf(x, below)
                && x & LEAF_ATTR_MASK == attrs
                && x & ADDRESS_MASK == base + i * below.span()
                && (below != Level::Pt || x & SPP == 0);
            if !ok {
                return None;
            }
            ad |= x & AD;
        }
        Some(base | attrs | ad | PS)
    }

    // ----- teardown -----

    /// Tears the hierarchy down: invalidates the mappings derived from this EPT through
    /// `invalidate`, then gives every table, the root included, back to the allocator, and
    /// returns the allocator. If the invalidation fails, the mapper comes back unchanged.
    ///
    /// # Safety
    ///
    /// No VMCS that will be used for a VM entry holds this EPTP any more (VMCLEAR'ed or given
    /// another EPTP): INVEPT drops cached translations, it cannot stop a later VM entry from
    /// walking the freed tables.
    pub unsafe fn destroy<I: EptInvalidate>(
        mut self,
        invalidate: &mut I,
    ) -> Result<A, (Self, I::Error)> {
        if let Err(e) = invalidate.invalidate(self.invept, self.eptp.bits()) {
            return Err((self, e));
        }
        let root = self.root;
        self.free_subtree(root, self.root_level());
        // SAFETY: every table came from `self.alloc`; no processor holds cached translations
        // of this EPT (the invalidation above) and no VM entry will load it (the caller's
        // promise).
        unsafe { self.pending.release(&self.p2v, &mut self.alloc) };
        Ok(self.alloc)
    }

    /// Checks the invariants the mapper keeps: every entry it wrote is well-formed for its
    /// level (no reserved bit, valid memory type, no write-without-read), large pages only
    /// where configured, no empty table below the root, and the table count. Returns the
    /// first violation as (guest-physical address, level).
    pub fn check_invariants(&self) -> Result<(), (GuestPhysAddr, Level)> {
        let mut count = 0;
        self.check_table(self.root, self.root_level(), 0, &mut count)?;
        if count != self.tables {
            return Err((GuestPhysAddr::ZERO, self.root_level()));
        }
        Ok(())
    }

    fn check_table(
        &self,
        frame: u64,
        level: Level,
        base: u64,
        count: &mut usize,
    ) -> Result<(), (GuestPhysAddr, Level)> {
        *count += 1;
        let mut present = 0;
        for idx in 0..512 {
            // SAFETY: `frame` is a table of ours.
            let e = unsafe { self.read(frame, idx) };
            let gpa = base + ((idx as u64) << level.shift());
            let bad = (GuestPhysAddr::new_truncate(gpa), level);
            if e & ACCESS_BITS == 0 {
                if e != 0 {
                    return Err(bad);
                }
                continue;
            }
            present += 1;
            let leaf = is_leaf(e, level);
            if leaf && !self.page_allowed(level) {
                return Err(bad);
            }
            if e & reserved_mask(level, leaf, self.config.phys_addr_width) != 0 {
                return Err(bad);
            }
            if e & 2 != 0 && e & 1 == 0 {
                return Err(bad);
            }
            if leaf {
                if MemoryType::from_bits(((e >> 3) & 7) as u8).is_err() {
                    return Err(bad);
                }
            } else {
                self.check_table(e & ADDRESS_MASK, level_below(level), gpa, count)?;
            }
        }
        if present == 0 && frame != self.root {
            return Err((GuestPhysAddr::new_truncate(base), level));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct MapOp {
    /// hpa - gpa (wrapping).
    delta: u64,
    /// Leaf attribute bits.
    bits: u64,
    /// The largest level at which a leaf may be written.
    max_level: Level,
}

#[derive(Clone, Copy)]
enum Edit {
    Unmap,
    Protect(u64),
}
