//! Memory types, page-walk lengths, permissions and page sizes.

use core::fmt;

/// An EPT memory type (SDM Vol. 3C §29.3.7 "EPT and Memory Typing"; encodings of Vol. 3A §12.3
/// "Methods of Caching Available"). Values 2, 3 and 7 are reserved and decode to
/// [`ReservedMemoryType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum MemoryType {
    /// Uncacheable (UC), encoding 0.
    Uncacheable = 0,
    /// Write combining (WC), encoding 1.
    WriteCombining = 1,
    /// Write-through (WT), encoding 4.
    WriteThrough = 4,
    /// Write-protected (WP), encoding 5.
    WriteProtected = 5,
    /// Write-back (WB), encoding 6.
    WriteBack = 6,
}

/// A reserved memory-type encoding (2, 3 or 7); in an EPT leaf it causes an EPT misconfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[error("memory type encoding {0} is reserved (valid: 0 UC, 1 WC, 4 WT, 5 WP, 6 WB)")]
pub struct ReservedMemoryType(pub u8);

impl MemoryType {
    /// Decodes a 3-bit memory-type field (only bits 2:0 of `bits` are used).
    pub const fn from_bits(bits: u8) -> Result<Self, ReservedMemoryType> {
        match bits & 7 {
            0 => Ok(Self::Uncacheable),
            1 => Ok(Self::WriteCombining),
            4 => Ok(Self::WriteThrough),
            5 => Ok(Self::WriteProtected),
            6 => Ok(Self::WriteBack),
            other => Err(ReservedMemoryType(other)),
        }
    }

    /// The 3-bit encoding.
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// The SDM's abbreviation (UC, WC, WT, WP, WB).
    pub const fn abbreviation(self) -> &'static str {
        match self {
            Self::Uncacheable => "UC",
            Self::WriteCombining => "WC",
            Self::WriteThrough => "WT",
            Self::WriteProtected => "WP",
            Self::WriteBack => "WB",
        }
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.abbreviation())
    }
}

/// The EPT page-walk length (EPTP bits 5:3 hold this value minus one; SDM Vol. 3C §25.6.11
/// "Extended-Page-Table Pointer (EPTP)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WalkLength {
    /// 4-level EPT (PML4 root), translating 48-bit guest-physical addresses.
    Four,
    /// 5-level EPT (PML5 root), translating 57-bit guest-physical addresses.
    Five,
}

/// A page-walk length other than 4 or 5 (EPTP bits 5:3 other than 3 or 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[error("EPT page-walk length {0} is reserved (valid: 4 or 5)")]
pub struct ReservedWalkLength(pub u8);

impl WalkLength {
    /// The number of levels (4 or 5).
    pub const fn levels(self) -> u8 {
        match self {
            Self::Four => 4,
            Self::Five => 5,
        }
    }

    /// Decodes a number of levels.
    pub const fn from_levels(levels: u8) -> Result<Self, ReservedWalkLength> {
        match levels {
            4 => Ok(Self::Four),
            5 => Ok(Self::Five),
            other => Err(ReservedWalkLength(other)),
        }
    }

    /// The top level of the walk (the root table's level).
    pub const fn root_level(self) -> Level {
        match self {
            Self::Four => Level::Pml4,
            Self::Five => Level::Pml5,
        }
    }

    /// The number of guest-physical address bits the walk translates (48 or 57).
    pub const fn gpa_width(self) -> u8 {
        12 + 9 * self.levels()
    }
}

bitflags::bitflags! {
    /// Access rights of an EPT entry (SDM Vol. 3C §29.3.2 "EPT Translation Mechanism"):
    /// read (bit 0), write (bit 1), execute (bit 2; for supervisor-mode linear addresses when
    /// mode-based execute control for EPT is 1) and user-mode execute (entry bit 10).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Permissions: u8 {
        /// Read access (entry bit 0).
        const READ = 1 << 0;
        /// Write access (entry bit 1).
        const WRITE = 1 << 1;
        /// Execute access (entry bit 2); for supervisor-mode linear addresses under mode-based
        /// execute control.
        const EXECUTE = 1 << 2;
        /// Execute access for user-mode linear addresses (entry bit 10), used only when the
        /// "mode-based execute control for EPT" VM-execution control is 1.
        const USER_EXECUTE = 1 << 3;
        /// Read and write.
        const RW = Self::READ.bits() | Self::WRITE.bits();
        /// Read and execute.
        const RX = Self::READ.bits() | Self::EXECUTE.bits();
        /// Read, write and execute.
        const RWX = Self::READ.bits() | Self::WRITE.bits() | Self::EXECUTE.bits();
        /// Everything, including user-mode execute.
        const ALL = Self::RWX.bits() | Self::USER_EXECUTE.bits();
    }
}

vmx_caps::serde_as_bits!(Permissions);

impl Permissions {
    /// The entry bits (0, 1, 2 and 10) these permissions occupy.
    pub const fn to_entry_bits(self) -> u64 {
        (self.bits() & 7) as u64 | (((self.bits() >> 3) & 1) as u64) << 10
    }

    /// The permissions held in an entry's bits 0, 1, 2 and 10.
    pub const fn from_entry_bits(entry: u64) -> Self {
        Self::from_bits_truncate((entry & 7) as u8 | (((entry >> 10) & 1) as u8) << 3)
    }
}

/// The level of an EPT paging structure, named after the SDM's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Level {
    /// EPT page table (entries: EPT PTEs, each maps a 4-KByte page).
    Pt = 1,
    /// EPT page directory (EPT PDEs: a page table or a 2-MByte page).
    Pd = 2,
    /// EPT page-directory-pointer table (EPT PDPTEs: a page directory or a 1-GByte page).
    Pdpt = 3,
    /// EPT PML4 table (EPT PML4Es).
    Pml4 = 4,
    /// EPT PML5 table (EPT PML5Es), for 5-level EPT.
    Pml5 = 5,
}

impl Level {
    /// The SDM's name of an entry at this level.
    pub const fn entry_name(self) -> &'static str {
        match self {
            Self::Pt => "EPT PTE",
            Self::Pd => "EPT PDE",
            Self::Pdpt => "EPT PDPTE",
            Self::Pml4 => "EPT PML4E",
            Self::Pml5 => "EPT PML5E",
        }
    }

    /// The level below, if any.
    pub const fn next_lower(self) -> Option<Self> {
        match self {
            Self::Pt => None,
            Self::Pd => Some(Self::Pt),
            Self::Pdpt => Some(Self::Pd),
            Self::Pml4 => Some(Self::Pdpt),
            Self::Pml5 => Some(Self::Pml4),
        }
    }

    /// The bit position of the lowest guest-physical address bit that indexes this level.
    pub const fn shift(self) -> u32 {
        12 + 9 * (self as u32 - 1)
    }

    /// The index of `gpa` into a table of this level (bits shift+8:shift).
    pub const fn index_of(self, gpa: u64) -> usize {
        ((gpa >> self.shift()) & 0x1ff) as usize
    }

    /// The page size an entry at this level maps, if it can map a page at all.
    pub const fn page_size(self) -> Option<PageSize> {
        match self {
            Self::Pt => Some(PageSize::Size4K),
            Self::Pd => Some(PageSize::Size2M),
            Self::Pdpt => Some(PageSize::Size1G),
            _ => None,
        }
    }

    /// The span of guest-physical memory one entry at this level covers.
    pub const fn span(self) -> u64 {
        1 << self.shift()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.entry_name())
    }
}

/// The size of a page an EPT leaf maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PageSize {
    /// 4 KiB, mapped by an EPT PTE.
    Size4K,
    /// 2 MiB, mapped by an EPT PDE with bit 7 set.
    Size2M,
    /// 1 GiB, mapped by an EPT PDPTE with bit 7 set.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The level whose entries map pages of this size.
    pub const fn level(self) -> Level {
        match self {
            Self::Size4K => Level::Pt,
            Self::Size2M => Level::Pd,
            Self::Size1G => Level::Pdpt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_type_decoding_is_total() {
        let expected = [
            Ok(MemoryType::Uncacheable),
            Ok(MemoryType::WriteCombining),
            Err(ReservedMemoryType(2)),
            Err(ReservedMemoryType(3)),
            Ok(MemoryType::WriteThrough),
            Ok(MemoryType::WriteProtected),
            Ok(MemoryType::WriteBack),
            Err(ReservedMemoryType(7)),
        ];
        for (bits, want) in expected.iter().enumerate() {
            assert_eq!(MemoryType::from_bits(bits as u8), *want);
            if let Ok(mt) = want {
                assert_eq!(mt.bits(), bits as u8);
            }
        }
    }

    #[test]
    fn permissions_map_to_entry_bits() {
        assert_eq!(Permissions::READ.to_entry_bits(), 1);
        assert_eq!(Permissions::RWX.to_entry_bits(), 7);
        assert_eq!(Permissions::USER_EXECUTE.to_entry_bits(), 1 << 10);
        for raw in 0..16u8 {
            let p = Permissions::from_bits_truncate(raw);
            assert_eq!(Permissions::from_entry_bits(p.to_entry_bits()), p);
        }
    }

    #[test]
    fn levels_index_guest_physical_addresses() {
        let gpa = 0x0123_4567_89ab_c000u64 & ((1 << 57) - 1);
        assert_eq!(Level::Pt.index_of(gpa), ((gpa >> 12) & 0x1ff) as usize);
        assert_eq!(Level::Pml5.index_of(gpa), ((gpa >> 48) & 0x1ff) as usize);
        assert_eq!(WalkLength::Four.gpa_width(), 48);
        assert_eq!(WalkLength::Five.gpa_width(), 57);
        assert_eq!(Level::Pdpt.span(), PageSize::Size1G.bytes());
    }
}
