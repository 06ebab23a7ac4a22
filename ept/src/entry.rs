//! EPT paging-structure entries for every level (SDM Vol. 3C §29.3.2 "EPT Translation
//! Mechanism", Tables "Format of an EPT PML5 Entry" through "Format of an EPT Page-Table Entry").

use core::fmt;

use crate::HostPhysAddr;
use crate::{Level, MemoryType, PageSize, Permissions, ReservedMemoryType};

bitflags::bitflags! {
    /// The single-bit fields of an EPT paging-structure entry, at their SDM positions. Which of
    /// them an entry at a given level uses is documented on each level's type; unknown bits are
    /// retained.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EntryFlags: u64 {
        /// Bit 0: read access.
        const READ = 1 << 0;
        /// Bit 1: write access.
        const WRITE = 1 << 1;
        /// Bit 2: execute access (supervisor-mode linear addresses under mode-based execute
        /// control).
        const EXECUTE = 1 << 2;
        /// Bit 6 (leaves): ignore PAT memory type.
        const IGNORE_PAT = 1 << 6;
        /// Bit 7 (PDPTE, PDE): the entry maps a page (1 GiB or 2 MiB) instead of a table.
        const PAGE_SIZE = 1 << 7;
        /// Bit 8: accessed (when accessed and dirty flags are enabled in the EPTP).
        const ACCESSED = 1 << 8;
        /// Bit 9 (leaves): dirty (when accessed and dirty flags are enabled in the EPTP).
        const DIRTY = 1 << 9;
        /// Bit 10: execute access for user-mode linear addresses (mode-based execute control).
        const USER_EXECUTE = 1 << 10;
        /// Bit 57 (leaves): verify guest paging (guest-paging verification).
        const VERIFY_GUEST_PAGING = 1 << 57;
        /// Bit 58 (leaves): paging-write access.
        const PAGING_WRITE_ACCESS = 1 << 58;
        /// Bit 60 (leaves): supervisor shadow stack.
        const SUPERVISOR_SHADOW_STACK = 1 << 60;
        /// Bit 61 (PTE only): sub-page write permissions.
        const SUB_PAGE_WRITE = 1 << 61;
        /// Bit 63 (leaves): suppress #VE.
        const SUPPRESS_VE = 1 << 63;
        const _ = !0;
    }
}

vmx_caps::serde_as_bits!(EntryFlags);

bitflags::bitflags! {
    /// The optional single-bit attributes of a leaf entry (a page mapping) that a mapping
    /// carries besides permissions and memory type, at their SDM bit positions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct LeafFlags: u64 {
        /// Bit 6: ignore PAT memory type.
        const IGNORE_PAT = 1 << 6;
        /// Bit 57: verify guest paging.
        const VERIFY_GUEST_PAGING = 1 << 57;
        /// Bit 58: paging-write access.
        const PAGING_WRITE_ACCESS = 1 << 58;
        /// Bit 60: supervisor shadow stack.
        const SUPERVISOR_SHADOW_STACK = 1 << 60;
        /// Bit 63: suppress #VE.
        const SUPPRESS_VE = 1 << 63;
    }
}

vmx_caps::serde_as_bits!(LeafFlags);

/// Bits 5:3 of a leaf entry: the EPT memory type.
pub const MEMORY_TYPE_MASK: u64 = 0x7 << 3;
/// Bits 51:12: the physical-address field (bits at or above MAXPHYADDR are reserved).
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// What a page mapping carries: permissions, memory type and the optional leaf flags.
///
/// ```
/// use ept::{LeafAttributes, LeafFlags, MemoryType, Permissions};
///
/// // Read-execute, write-back, PAT ignored: entry bits 0 and 2, memory type 6 in bits 5:3, bit 6.
/// let attrs = LeafAttributes::new(Permissions::RX, MemoryType::WriteBack).with_flags(LeafFlags::IGNORE_PAT);
/// assert_eq!(attrs.to_bits(), 0x75);
/// assert_eq!(LeafAttributes::from_leaf_bits(0x75), Ok(attrs));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeafAttributes {
    /// Access rights (bits 0, 1, 2 and 10).
    pub permissions: Permissions,
    /// EPT memory type (bits 5:3).
    pub memory_type: MemoryType,
    /// Ignore PAT, verify guest paging, paging-write access, supervisor shadow stack,
    /// suppress #VE.
    pub flags: LeafFlags,
}

impl LeafAttributes {
    /// Attributes with the given permissions and memory type and no optional flags.
    pub const fn new(permissions: Permissions, memory_type: MemoryType) -> Self {
        Self {
            permissions,
            memory_type,
            flags: LeafFlags::empty(),
        }
    }

    /// The same attributes with `flags` added.
    pub const fn with_flags(self, flags: LeafFlags) -> Self {
        Self {
            flags: self.flags.union(flags),
            ..self
        }
    }

    /// The entry bits these attributes occupy (without address, bit 7 and A/D).
    pub const fn to_bits(self) -> u64 {
        self.permissions.to_entry_bits() | (self.memory_type.bits() as u64) << 3 | self.flags.bits()
    }

    /// Reads the attributes of a leaf entry.
    pub const fn from_leaf_bits(bits: u64) -> Result<Self, ReservedMemoryType> {
        match MemoryType::from_bits(((bits & MEMORY_TYPE_MASK) >> 3) as u8) {
            Ok(memory_type) => Ok(Self {
                permissions: Permissions::from_entry_bits(bits),
                memory_type,
                flags: LeafFlags::from_bits_truncate(bits),
            }),
            Err(e) => Err(e),
        }
    }
}

/// Entry bits that are reserved (must be 0 when the entry is present) for an entry at `level`
/// that maps a page (`is_page`) or references a table, given the processor's physical-address
/// width. SDM Vol. 3C §29.3.2 and §29.3.3.1 "EPT Misconfigurations".
///
/// Bit 7 of a PML5E/PML4E is reserved; bit 7 of a PDPTE is reserved when 1-GiB pages are not
/// supported, which this function does not know (the diagnosis checks it separately).
pub const fn reserved_mask(level: Level, is_page: bool, phys_addr_width: u8) -> u64 {
    let width = if phys_addr_width > 52 {
        52
    } else {
        phys_addr_width
    };
    let above_width = ADDRESS_MASK & !((1u64 << width) - 1);
    let low = match (level, is_page) {
        (Level::Pml5 | Level::Pml4, _) => 0xf8,
        (Level::Pdpt, true) => 0x3fff_f000,
        (Level::Pd, true) => 0x001f_f000,
        (Level::Pdpt | Level::Pd, false) => 0x78,
        (Level::Pt, _) => 0,
    };
    above_width | low
}

macro_rules! entry_common {
    ($name:ident, $level:expr) => {
        impl $name {
            /// The level of this entry.
            pub const LEVEL: Level = $level;

            /// The not-present entry (all zero).
            pub const EMPTY: Self = Self(0);

            /// Wraps a raw entry value. Total: every value decodes.
            pub const fn from_bits(bits: u64) -> Self {
                Self(bits)
            }

            /// The raw entry value.
            pub const fn bits(self) -> u64 {
                self.0
            }

            /// Whether any of bits 2:0 is set (SDM: such an entry is present; with mode-based
            /// execute control for EPT, bit 10 also makes an entry present).
            pub const fn is_present(self) -> bool {
                self.0 & 7 != 0
            }

            /// The access rights (bits 0, 1, 2 and 10).
            pub const fn permissions(self) -> Permissions {
                Permissions::from_entry_bits(self.0)
            }

            /// The single-bit fields.
            pub const fn flags(self) -> EntryFlags {
                EntryFlags::from_bits_retain(self.0)
            }

            /// Bit 8: accessed.
            pub const fn accessed(self) -> bool {
                self.0 & EntryFlags::ACCESSED.bits() != 0
            }

            /// Bits 51:12 as an address (of the next table, or of the page for a leaf).
            pub const fn address(self) -> HostPhysAddr {
                HostPhysAddr::new_truncate(self.0 & ADDRESS_MASK)
            }

            /// Bits of this entry that are reserved, given the physical-address width.
            pub const fn reserved_bits(self, phys_addr_width: u8) -> u64 {
                let is_page = matches!(Self::LEVEL, Level::Pt)
                    || (matches!(Self::LEVEL, Level::Pd | Level::Pdpt)
                        && self.0 & EntryFlags::PAGE_SIZE.bits() != 0);
                self.0 & reserved_mask(Self::LEVEL, is_page, phys_addr_width)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#018x})"), self.0)
            }
        }

        impl From<$name> for u64 {
            fn from(e: $name) -> u64 {
                e.0
            }
        }
    };
}

/// The large-page half of a PDPTE or PDE: bit 7 (page size) selects between a reference to
/// the next table and a leaf mapping a page of `$size`, whose address drops the bits below it.
macro_rules! large_page {
    ($constructor:ident, $name:literal, $size:expr) => {
        #[doc = concat!("An entry mapping the ", $name, " page at `page` (aligned to its size; lower bits are dropped).")]
        pub const fn $constructor(page: HostPhysAddr, attributes: LeafAttributes) -> Self {
            Self(
                (page.as_u64() & ADDRESS_MASK & !($size.bytes() - 1))
                    | attributes.to_bits()
                    | EntryFlags::PAGE_SIZE.bits(),
            )
        }

        #[doc = concat!("Bit 7: the entry maps a ", $name, " page.")]
        pub const fn is_page(self) -> bool {
            self.0 & EntryFlags::PAGE_SIZE.bits() != 0
        }

        /// What the entry holds.
        pub const fn kind(self) -> EntryKind {
            if !self.is_present() {
                EntryKind::NotPresent
            } else if self.is_page() {
                EntryKind::Page(
                    HostPhysAddr::new_truncate(self.0 & ADDRESS_MASK & !($size.bytes() - 1)),
                    $size,
                )
            } else {
                EntryKind::Table(self.address())
            }
        }
    };
}

macro_rules! leaf_accessors {
    () => {
        /// Bits 5:3: the EPT memory type of the page, or the reserved value.
        pub const fn memory_type(self) -> Result<MemoryType, ReservedMemoryType> {
            MemoryType::from_bits(((self.0 & MEMORY_TYPE_MASK) >> 3) as u8)
        }

        /// Bit 6: ignore PAT memory type.
        pub const fn ignore_pat(self) -> bool {
            self.0 & EntryFlags::IGNORE_PAT.bits() != 0
        }

        /// Bit 9: dirty.
        pub const fn dirty(self) -> bool {
            self.0 & EntryFlags::DIRTY.bits() != 0
        }

        /// Bit 57: verify guest paging.
        pub const fn verify_guest_paging(self) -> bool {
            self.0 & EntryFlags::VERIFY_GUEST_PAGING.bits() != 0
        }

        /// Bit 58: paging-write access.
        pub const fn paging_write_access(self) -> bool {
            self.0 & EntryFlags::PAGING_WRITE_ACCESS.bits() != 0
        }

        /// Bit 60: supervisor shadow stack.
        pub const fn supervisor_shadow_stack(self) -> bool {
            self.0 & EntryFlags::SUPERVISOR_SHADOW_STACK.bits() != 0
        }

        /// Bit 63: suppress #VE.
        pub const fn suppress_ve(self) -> bool {
            self.0 & EntryFlags::SUPPRESS_VE.bits() != 0
        }

        /// The permissions, memory type and leaf flags of the page.
        pub const fn leaf_attributes(self) -> Result<LeafAttributes, ReservedMemoryType> {
            LeafAttributes::from_leaf_bits(self.0)
        }
    };
}

macro_rules! table_constructor {
    () => {
        /// An entry referencing the next-level table at `table` (4-KiB aligned; low bits are
        /// dropped) with the given access rights.
        pub const fn table(table: HostPhysAddr, permissions: Permissions) -> Self {
            Self((table.as_u64() & ADDRESS_MASK) | permissions.to_entry_bits())
        }
    };
}

/// What an EPT PDPTE or PDE holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EntryKind {
    /// Bits 2:0 are 0: the entry is not present.
    NotPresent,
    /// The entry references a next-level table at this address.
    Table(HostPhysAddr),
    /// The entry maps a page of this size at this address.
    Page(HostPhysAddr, PageSize),
}

/// An EPT PML5 entry (5-level EPT): references an EPT PML4 table. Bits 7:3 are reserved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct Pml5Entry(u64);
entry_common!(Pml5Entry, Level::Pml5);
impl Pml5Entry {
    table_constructor!();
}

/// An EPT PML4 entry: references an EPT page-directory-pointer table. Bits 7:3 are reserved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct Pml4Entry(u64);
entry_common!(Pml4Entry, Level::Pml4);
impl Pml4Entry {
    table_constructor!();
}

/// An EPT page-directory-pointer-table entry: references an EPT page directory (bit 7 = 0) or
/// maps a 1-GByte page (bit 7 = 1, address in bits 51:30, bits 29:12 reserved).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct PdptEntry(u64);
entry_common!(PdptEntry, Level::Pdpt);
impl PdptEntry {
    table_constructor!();
    leaf_accessors!();

    large_page!(page_1g, "1-GByte", PageSize::Size1G);
}

/// An EPT page-directory entry: references an EPT page table (bit 7 = 0) or maps a 2-MByte
/// page (bit 7 = 1, address in bits 51:21, bits 20:12 reserved).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct PdEntry(u64);
entry_common!(PdEntry, Level::Pd);
impl PdEntry {
    table_constructor!();
    leaf_accessors!();

    large_page!(page_2m, "2-MByte", PageSize::Size2M);
}

/// An EPT page-table entry: maps a 4-KByte page. Bit 7 is ignored; bit 61 enables sub-page
/// write permissions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct PtEntry(u64);
entry_common!(PtEntry, Level::Pt);
impl PtEntry {
    leaf_accessors!();

    /// An entry mapping the 4-KByte page at `page` (4-KiB aligned; low bits are dropped).
    pub const fn page_4k(page: HostPhysAddr, attributes: LeafAttributes) -> Self {
        Self((page.as_u64() & ADDRESS_MASK) | attributes.to_bits())
    }

    /// Bit 61: sub-page write permissions for the page.
    pub const fn sub_page_write(self) -> bool {
        self.0 & EntryFlags::SUB_PAGE_WRITE.bits() != 0
    }

    /// The same entry with bit 61 (sub-page write permissions) set or cleared.
    pub const fn with_sub_page_write(self, on: bool) -> Self {
        if on {
            Self(self.0 | EntryFlags::SUB_PAGE_WRITE.bits())
        } else {
            Self(self.0 & !EntryFlags::SUB_PAGE_WRITE.bits())
        }
    }

    /// What the entry holds.
    pub const fn kind(self) -> EntryKind {
        if self.is_present() {
            EntryKind::Page(self.address(), PageSize::Size4K)
        } else {
            EntryKind::NotPresent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(a: u64) -> HostPhysAddr {
        HostPhysAddr::new(a).unwrap()
    }

    /// Each single-bit field at the position the SDM's entry-format tables give it.
    #[test]
    fn flag_positions_match_the_sdm() {
        let table: &[(EntryFlags, u32)] = &[
            (EntryFlags::READ, 0),
            (EntryFlags::WRITE, 1),
            (EntryFlags::EXECUTE, 2),
            (EntryFlags::IGNORE_PAT, 6),
            (EntryFlags::PAGE_SIZE, 7),
            (EntryFlags::ACCESSED, 8),
            (EntryFlags::DIRTY, 9),
            (EntryFlags::USER_EXECUTE, 10),
            (EntryFlags::VERIFY_GUEST_PAGING, 57),
            (EntryFlags::PAGING_WRITE_ACCESS, 58),
            (EntryFlags::SUPERVISOR_SHADOW_STACK, 60),
            (EntryFlags::SUB_PAGE_WRITE, 61),
            (EntryFlags::SUPPRESS_VE, 63),
        ];
        for &(flag, bit) in table {
            assert_eq!(flag.bits(), 1u64 << bit, "{flag:?}");
        }
        for (flag, bit) in [
            (LeafFlags::IGNORE_PAT, 6),
            (LeafFlags::VERIFY_GUEST_PAGING, 57),
            (LeafFlags::PAGING_WRITE_ACCESS, 58),
            (LeafFlags::SUPERVISOR_SHADOW_STACK, 60),
            (LeafFlags::SUPPRESS_VE, 63),
        ] {
            assert_eq!(flag.bits(), 1u64 << bit, "{flag:?}");
        }
    }

    #[test]
    fn pte_layout_table() {
        // (raw, present, perms, memory type, ipat, A, D, VGP, PWA, SSS, SPP, SVE, address)
        type Row = (
            u64,
            Permissions,
            Result<MemoryType, ReservedMemoryType>,
            [bool; 8],
            u64,
        );
        let rows: &[Row] = &[
            (
                0,
                Permissions::empty(),
                Ok(MemoryType::Uncacheable),
                [false; 8],
                0,
            ),
            (
                0x1234_5037,
                Permissions::RWX,
                Ok(MemoryType::WriteBack),
                [false; 8],
                0x1234_5000,
            ),
            (
                0x1000_0071,
                Permissions::READ,
                Ok(MemoryType::WriteBack),
                [true, false, false, false, false, false, false, false],
                0x1000_0000,
            ),
            (
                0x0000_0000_0000_0701,
                Permissions::READ.union(Permissions::USER_EXECUTE),
                Ok(MemoryType::Uncacheable),
                [false, true, true, false, false, false, false, false],
                0,
            ),
            (
                0x0000_0000_0000_0014,
                Permissions::EXECUTE,
                Err(ReservedMemoryType(2)),
                [false; 8],
                0,
            ),
            (
                0xb600_0000_0000_1003,
                Permissions::RW,
                Ok(MemoryType::Uncacheable),
                [false, false, false, true, true, true, true, true],
                0x1000,
            ),
            (
                0x000f_ffff_ffff_f03f,
                Permissions::RWX,
                Err(ReservedMemoryType(7)),
                [false; 8],
                0x000f_ffff_ffff_f000,
            ),
        ];
        for &(raw, perms, mt, [ipat, a, d, vgp, pwa, sss, spp, sve], addr) in rows {
            let e = PtEntry::from_bits(raw);
            assert_eq!(e.bits(), raw);
            assert_eq!(e.is_present(), raw & 7 != 0, "{raw:#x}");
            assert_eq!(e.permissions(), perms, "{raw:#x}");
            assert_eq!(e.memory_type(), mt, "{raw:#x}");
            assert_eq!(e.ignore_pat(), ipat, "{raw:#x}");
            assert_eq!(e.accessed(), a, "{raw:#x}");
            assert_eq!(e.dirty(), d, "{raw:#x}");
            assert_eq!(e.verify_guest_paging(), vgp, "{raw:#x}");
            assert_eq!(e.paging_write_access(), pwa, "{raw:#x}");
            assert_eq!(e.supervisor_shadow_stack(), sss, "{raw:#x}");
            assert_eq!(e.sub_page_write(), spp, "{raw:#x}");
            assert_eq!(e.suppress_ve(), sve, "{raw:#x}");
            assert_eq!(e.address().as_u64(), addr, "{raw:#x}");
        }
    }

    #[test]
    fn large_page_and_table_layouts() {
        let attrs = LeafAttributes::new(Permissions::RW, MemoryType::WriteBack)
            .with_flags(LeafFlags::IGNORE_PAT);
        // 1 GiB: bit 7, memory type 6 in bits 5:3, IPAT bit 6, address in 51:30.
        let e = PdptEntry::page_1g(hpa(0x40_0000_0000), attrs);
        assert_eq!(e.bits(), 0x40_0000_0000 | 0x80 | 0x40 | 0x30 | 0x3);
        assert_eq!(
            e.kind(),
            EntryKind::Page(hpa(0x40_0000_0000), PageSize::Size1G)
        );
        assert_eq!(e.leaf_attributes(), Ok(attrs));
        // 2 MiB: address in 51:21.
        let e = PdEntry::page_2m(hpa(0x20_0000), attrs);
        assert_eq!(e.bits(), 0x20_0000 | 0xf3);
        assert_eq!(e.kind(), EntryKind::Page(hpa(0x20_0000), PageSize::Size2M));
        // Tables: bit 7 clear, address in 51:12.
        let t = PdEntry::table(hpa(0x5000), Permissions::ALL);
        assert_eq!(t.bits(), 0x5407);
        assert_eq!(t.kind(), EntryKind::Table(hpa(0x5000)));
        assert_eq!(
            PdptEntry::table(hpa(0x6000), Permissions::RWX).kind(),
            EntryKind::Table(hpa(0x6000))
        );
        assert_eq!(
            Pml4Entry::table(hpa(0x7000), Permissions::RWX).bits(),
            0x7007
        );
        assert_eq!(
            Pml5Entry::table(hpa(0x8000), Permissions::READ).bits(),
            0x8001
        );
        assert_eq!(PdEntry::EMPTY.kind(), EntryKind::NotPresent);
        assert_eq!(
            PtEntry::page_4k(hpa(0x9000), attrs).kind(),
            EntryKind::Page(hpa(0x9000), PageSize::Size4K)
        );
        assert!(PtEntry::EMPTY.with_sub_page_write(true).sub_page_write());
    }

    #[test]
    fn reserved_masks_per_level() {
        // (level, is_page, width, mask)
        let rows: &[(Level, bool, u8, u64)] = &[
            (Level::Pml5, false, 52, 0xf8),
            (Level::Pml4, false, 52, 0xf8),
            (Level::Pml4, false, 46, 0x000f_c000_0000_0000 | 0xf8),
            (Level::Pdpt, false, 52, 0x78),
            (Level::Pdpt, true, 52, 0x3fff_f000),
            (Level::Pd, false, 52, 0x78),
            (Level::Pd, true, 39, 0x000f_ff80_0000_0000 | 0x1f_f000),
            (Level::Pt, false, 52, 0),
            (Level::Pt, true, 36, 0x000f_fff0_0000_0000),
        ];
        for &(level, is_page, width, mask) in rows {
            assert_eq!(
                reserved_mask(level, is_page, width),
                mask,
                "{level:?} page={is_page} width={width}"
            );
        }
        assert_eq!(Pml4Entry::from_bits(0x1087).reserved_bits(52), 0x80);
        assert_eq!(PdEntry::from_bits(0x1087).reserved_bits(52), 0x1000);
        assert_eq!(PdEntry::from_bits(0x1007).reserved_bits(52), 0);
    }
}
