//! The sub-page permission table (SPPT) of "sub-page write permissions for EPT" (secondary
//! processor-based control 23).
//!
//! Layout, as the Intel SDM editions that document SPP (Vol. 3C, "Sub-Page Write Permissions")
//! give it and as Bochs 2.7 implements it (`spp_walk` in `cpu/paging.cc`): a 4-level table,
//! rooted at the SPPTP (VMCS field `SUB_PAGE_PERMISSION_TABLE_POINTER`, bits 51:12 the root's
//! physical address), indexed by guest-physical address bits 47:39, 38:30, 29:21 and 20:12 like
//! the EPT. A non-leaf entry has bit 0 "valid", bits 11:1 and 63:52 reserved and bits 51:12 the
//! next table's address; a leaf entry is the write-permission vector of one 4-KiB page: bit 2*i*
//! allows writes to the *i*-th 128-byte sub-page, the odd bits are reserved. The processor walks
//! the table for a write to a page whose EPT PTE has bit 61 set and is read-only; a missing
//! entry or a reserved bit causes an SPP-related VM exit (reason 66).

use ept::{FrameAllocator, GuestPhysAddr, HostPhysAddr, PhysToVirt};
use vmx_core::VmFail;

use crate::{VmcsWrite, fields};

/// Sub-pages of a 4-KiB page (128 bytes each).
pub const SUBPAGES: u32 = 32;

/// Bytes per sub-page.
pub const SUBPAGE_SIZE: u64 = 128;

/// A leaf entry of the SPPT: the write-permission vector of one 4-KiB page.
///
/// ```
/// use vmcs::structures::SppVector;
///
/// // Sub-pages 0 and 31 writable: bits 0 and 62.
/// let v = SppVector::from_writable(1 | 1 << 31);
/// assert_eq!(v.bits(), 1 | 1 << 62);
/// assert!(v.allows_write(0x000) && v.allows_write(0xf80) && !v.allows_write(0x080));
/// assert_eq!(v.writable(), 1 | 1 << 31);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct SppVector(u64);

impl SppVector {
    /// The reserved (odd) bits of a leaf entry.
    pub const RESERVED: u64 = 0xaaaa_aaaa_aaaa_aaaa;
    /// Every sub-page writable.
    pub const ALL_WRITABLE: SppVector = SppVector(!Self::RESERVED);
    /// No sub-page writable.
    pub const NONE_WRITABLE: SppVector = SppVector(0);

    /// The vector from a mask of writable sub-pages (bit *i* of `mask` is sub-page *i*).
    #[must_use]
    pub const fn from_writable(mask: u32) -> Self {
        let mut bits = 0u64;
        let mut i = 0;
        while i < SUBPAGES {
            bits |= ((mask >> i) as u64 & 1) << (2 * i);
            i += 1;
        }
        Self(bits)
    }

    /// A raw leaf entry, as the table holds it (reserved bits included: see
    /// [`SppVector::reserved_bits`]).
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw leaf entry.
    #[must_use]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The writable sub-pages as a mask (bit *i* is sub-page *i*).
    #[must_use]
    pub const fn writable(self) -> u32 {
        let mut mask = 0u32;
        let mut i = 0;
        while i < SUBPAGES {
            mask |= ((self.0 >> (2 * i)) as u32 & 1) << i;
            i += 1;
        }
        mask
    }

    /// The sub-page of byte `offset` of its page (bits 11:7).
    #[must_use]
    pub const fn subpage_of(offset: u64) -> u32 {
        ((offset & 0xfff) / SUBPAGE_SIZE) as u32
    }

    /// Whether a write to byte `offset` of the page is allowed.
    #[must_use]
    pub const fn allows_write(self, offset: u64) -> bool {
        self.0 >> (2 * Self::subpage_of(offset)) & 1 != 0
    }

    /// The reserved bits that are set (a processor's walk ends in an SPP-related VM exit when
    /// this is not 0).
    #[must_use]
    pub const fn reserved_bits(self) -> u64 {
        self.0 & Self::RESERVED
    }
}

/// Bit 0 of a non-leaf SPPT entry: valid.
const VALID: u64 = 1;
/// Bits 51:12 of a non-leaf SPPT entry: the next table.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Reserved bits of a non-leaf SPPT entry (11:1 and 63:52; bits between MAXPHYADDR and 51 too).
const NON_LEAF_RESERVED: u64 = 0xfff0_0000_0000_0ffe;

/// Levels of the SPPT, root first: the guest-physical address bits each indexes start here.
const LEVEL_SHIFTS: [u32; 4] = [39, 30, 21, 12];

/// The index into a table at `shift` for `gpa`.
const fn index(gpa: u64, shift: u32) -> usize {
    ((gpa >> shift) & 0x1ff) as usize
}

/// Why a software walk of the SPPT stopped, as the processor's walk would (an SPP-related VM
/// exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SppWalkError {
    /// A non-leaf entry is not valid (bit 0 clear): exit qualification bit 11 set.
    #[error("SPPT level {level} entry for guest-physical {gpa:#x} is not valid")]
    NotPresent {
        /// The level (4 = root, 2 = the last non-leaf level).
        level: u8,
        /// The address walked.
        gpa: u64,
    },
    /// A reserved bit of an entry is set (a misconfiguration).
    #[error(
        "SPPT level {level} entry {entry:#x} for guest-physical {gpa:#x} has reserved bits set"
    )]
    Misconfigured {
        /// The level (1 = leaf).
        level: u8,
        /// The entry.
        entry: u64,
        /// The address walked.
        gpa: u64,
    },
}

/// Why the SPPT could not be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SppError {
    /// The frame allocator has no frame left for a table.
    #[error("no frame left for an SPPT table")]
    OutOfFrames,
    /// A vector with reserved (odd) bits set: the processor would refuse it.
    #[error("SPP vector {0:#x} has reserved (odd) bits set")]
    ReservedBits(u64),
}

/// A sub-page permission table over 4-KiB frames of the caller's allocator (the `ept` crate's
/// [`FrameAllocator`] and [`PhysToVirt`], as for the EPT itself), which it owns.
///
/// ```
/// use ept::{GuestPhysAddr, HeapFrameAllocator, OffsetPhysToVirt};
/// use vmcs::structures::{SppTable, SppVector};
///
/// // SAFETY (of this example): heap frames are "physical" at their own addresses.
/// let p2v = unsafe { OffsetPhysToVirt::identity() };
/// let mut sppt = SppTable::new(p2v, HeapFrameAllocator::new())?;
/// let page = GuestPhysAddr::new(0x1234_5000).unwrap();
/// sppt.set(page, SppVector::from_writable(0x0000_ffff))?; // first half writable
/// assert_eq!(sppt.lookup(page), Ok(SppVector::from_writable(0x0000_ffff)));
/// assert_eq!(sppt.table_frames(), 4); // one table per level
/// # Ok::<(), vmcs::structures::SppError>(())
/// ```
pub struct SppTable<P: PhysToVirt, A: FrameAllocator> {
    root: HostPhysAddr,
    p2v: P,
    alloc: A,
    frames: usize,
}

impl<P: PhysToVirt, A: FrameAllocator> SppTable<P, A> {
    /// An empty table (a root whose entries are all invalid).
    ///
    /// # Errors
    ///
    /// [`SppError::OutOfFrames`].
    pub fn new(p2v: P, mut alloc: A) -> Result<Self, SppError> {
        let root = alloc.allocate_frame().ok_or(SppError::OutOfFrames)?;
        let table = Self {
            root,
            p2v,
            alloc,
            frames: 1,
        };
        table.zero(root);
        Ok(table)
    }

    /// The table at `frame` as 512 entries.
    fn entries(&self, frame: HostPhysAddr) -> *mut u64 {
        self.p2v.phys_to_virt(frame)
    }

    fn zero(&self, frame: HostPhysAddr) {
        // SAFETY: `frame` is a table frame of this table's allocator (owned by it), and
        // `PhysToVirt` maps it to 4096 writable bytes.
        unsafe { core::ptr::write_bytes(self.entries(frame), 0, 512) };
    }

    fn read(&self, frame: HostPhysAddr, i: usize) -> u64 {
        // SAFETY: as in `zero`; `i` < 512 (a 9-bit index).
        unsafe { self.entries(frame).add(i).read_volatile() }
    }

    fn write(&self, frame: HostPhysAddr, i: usize, value: u64) {
        // SAFETY: as in `read`.
        unsafe { self.entries(frame).add(i).write_volatile(value) };
    }

    /// Sets the write-permission vector of the 4-KiB page at `gpa` (bits 11:0 ignored),
    /// creating the tables on the way.
    ///
    /// # Errors
    ///
    /// [`SppError::ReservedBits`] for a vector with odd bits set; [`SppError::OutOfFrames`]
    /// (the tables created before stay, valid and empty).
    pub fn set(&mut self, gpa: GuestPhysAddr, vector: SppVector) -> Result<(), SppError> {
        if vector.reserved_bits() != 0 {
            return Err(SppError::ReservedBits(vector.bits()));
        }
        let gpa = gpa.as_u64();
        let mut table = self.root;
        for &shift in &LEVEL_SHIFTS[..3] {
            let i = index(gpa, shift);
            let entry = self.read(table, i);
            table = if entry & VALID != 0 {
                HostPhysAddr::new_truncate(entry & ADDRESS)
            } else {
                let next = self.alloc.allocate_frame().ok_or(SppError::OutOfFrames)?;
                self.frames += 1;
                self.zero(next);
                self.write(table, i, next.as_u64() | VALID);
                next
            };
        }
        self.write(table, index(gpa, 12), vector.bits());
        Ok(())
    }

    /// Walks the table for `gpa` as the processor does and returns the page's vector.
    ///
    /// # Errors
    ///
    /// [`SppWalkError`] where the processor's walk would cause an SPP-related VM exit.
    pub fn lookup(&self, gpa: GuestPhysAddr) -> Result<SppVector, SppWalkError> {
        let gpa = gpa.as_u64();
        let mut table = self.root;
        for (level, &shift) in (2..=4u8).rev().zip(&LEVEL_SHIFTS[..3]) {
            let entry = self.read(table, index(gpa, shift));
            if entry & VALID == 0 {
                return Err(SppWalkError::NotPresent { level, gpa });
            }
            if entry & NON_LEAF_RESERVED != 0 {
                return Err(SppWalkError::Misconfigured { level, entry, gpa });
            }
            table = HostPhysAddr::new_truncate(entry & ADDRESS);
        }
        let vector = SppVector(self.read(table, index(gpa, 12)));
        if vector.reserved_bits() != 0 {
            return Err(SppWalkError::Misconfigured {
                level: 1,
                entry: vector.bits(),
                gpa,
            });
        }
        Ok(vector)
    }

    /// The SPPTP: the root table's physical address.
    #[must_use]
    pub fn pointer(&self) -> u64 {
        self.root.as_u64()
    }

    /// Table frames in use.
    #[must_use]
    pub fn table_frames(&self) -> usize {
        self.frames
    }

    /// Writes the SPPTP into `SUB_PAGE_PERMISSION_TABLE_POINTER`.
    ///
    /// # Errors
    ///
    /// The VMWRITE's failure.
    pub fn write_to(&self, vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
        vmcs.write(fields::SUB_PAGE_PERMISSION_TABLE_POINTER, self.pointer())
    }

    /// Gives every table frame back to the allocator and returns it.
    ///
    /// # Safety
    ///
    /// No VMCS that a processor may use references this table (its SPPTP), and no processor
    /// caches its entries.
    pub unsafe fn destroy(mut self) -> A {
        self.free(self.root, 0);
        self.alloc
    }

    /// Frees `table` (at depth `depth`, 0 = root) and the tables below it.
    fn free(&mut self, table: HostPhysAddr, depth: usize) {
        if depth < 3 {
            for i in 0..512 {
                let entry = self.read(table, i);
                if entry & VALID != 0 {
                    self.free(HostPhysAddr::new_truncate(entry & ADDRESS), depth + 1);
                }
            }
        }
        // SAFETY: `table` came from this allocator (the root or a table `set` created) and,
        // per `destroy`'s contract, nothing uses it any more.
        unsafe { self.alloc.deallocate_frame(table) };
        self.frames -= 1;
    }
}
