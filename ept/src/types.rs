//! Permissions, paging-structure levels and page sizes.

use core::fmt;

use crate::WalkLength;

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
    /// The level of the root table of a walk of length `walk`: the PML4 table for a 4-level walk,
    /// the PML5 table for a 5-level one.
    pub const fn root(walk: WalkLength) -> Self {
        match walk {
            WalkLength::Four => Self::Pml4,
            WalkLength::Five => Self::Pml5,
        }
    }

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
        assert_eq!(Level::root(WalkLength::Five), Level::Pml5);
        assert_eq!(WalkLength::Five.gpa_width(), 57);
        assert_eq!(Level::Pdpt.span(), PageSize::Size1G.bytes());
    }
}
