//! The extended-page-table pointer (EPTP), SDM Vol. 3C §25.6.11 "Extended-Page-Table Pointer
//! (EPTP)".

use core::fmt;

use crate::addr::HostPhysAddr;
use crate::types::{MemoryType, ReservedMemoryType, ReservedWalkLength, WalkLength};

/// The EPTP VM-execution control field (VMCS encoding 0x201A).
///
/// | bits  | meaning |
/// |-------|---------|
/// | 2:0   | EPT paging-structure memory type (0 = UC, 6 = WB) |
/// | 5:3   | EPT page-walk length minus one (3 = 4 levels, 4 = 5 levels) |
/// | 6     | enable accessed and dirty flags for EPT |
/// | 7     | enable enforcement of access rights for supervisor shadow-stack pages |
/// | 11:8  | reserved |
/// | N-1:12| physical address of the EPT PML4 (or PML5) table |
/// | 63:N  | reserved |
///
/// [`EptPointer::from_bits`] accepts any value (so a VMREAD result can always be decoded);
/// the builder only builds what the processor's capabilities allow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct EptPointer(u64);

impl EptPointer {
    /// Bits 2:0: EPT paging-structure memory type.
    pub const MEMORY_TYPE_MASK: u64 = 0x7;
    /// Bits 5:3: EPT page-walk length minus one.
    pub const WALK_LENGTH_MASK: u64 = 0x7 << 3;
    /// Bit 6: enable accessed and dirty flags for EPT.
    pub const ACCESSED_DIRTY: u64 = 1 << 6;
    /// Bit 7: enable enforcement of access rights for supervisor shadow-stack pages.
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 7;
    /// Bits 11:8: reserved.
    pub const RESERVED_LOW_MASK: u64 = 0xf << 8;
    /// Bits 51:12: physical address of the root table (its upper bits are reserved beyond
    /// the processor's physical-address width).
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Wraps a raw EPTP value, as read from the VMCS. Total: every value decodes.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw EPTP value, as written to the VMCS.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Assembles an EPTP without consulting capabilities (see the builder for the
    /// checked way). `root` must be 4-KiB aligned; its low 12 bits are dropped.
    pub const fn from_parts(
        root: HostPhysAddr,
        memory_type: MemoryType,
        walk: WalkLength,
        accessed_dirty: bool,
        supervisor_shadow_stack: bool,
    ) -> Self {
        let mut bits = (root.as_u64() & Self::ADDRESS_MASK)
            | memory_type.bits() as u64
            | ((walk.levels() as u64 - 1) << 3);
        if accessed_dirty {
            bits |= Self::ACCESSED_DIRTY;
        }
        if supervisor_shadow_stack {
            bits |= Self::SUPERVISOR_SHADOW_STACK;
        }
        Self(bits)
    }

    /// Bits 2:0: the EPT paging-structure memory type; only UC and WB are valid in an EPTP.
    pub const fn memory_type(self) -> Result<MemoryType, ReservedMemoryType> {
        MemoryType::from_bits((self.0 & Self::MEMORY_TYPE_MASK) as u8)
    }

    /// Bits 5:3 plus one: the raw page-walk length (1 to 8).
    pub const fn walk_length_raw(self) -> u8 {
        ((self.0 & Self::WALK_LENGTH_MASK) >> 3) as u8 + 1
    }

    /// The page-walk length (4 or 5), or the reserved value found.
    pub const fn walk_length(self) -> Result<WalkLength, ReservedWalkLength> {
        WalkLength::from_levels(self.walk_length_raw())
    }

    /// Bit 6: accessed and dirty flags for EPT enabled.
    pub const fn accessed_dirty_enabled(self) -> bool {
        self.0 & Self::ACCESSED_DIRTY != 0
    }

    /// Bit 7: enforcement of access rights for supervisor shadow-stack pages enabled.
    pub const fn supervisor_shadow_stack_enabled(self) -> bool {
        self.0 & Self::SUPERVISOR_SHADOW_STACK != 0
    }

    /// Bits 51:12: the physical address of the EPT PML4 table (PML5 table with 5-level EPT).
    pub const fn pml4_address(self) -> HostPhysAddr {
        HostPhysAddr::new_truncate(self.0 & Self::ADDRESS_MASK)
    }

    /// The bits set in the reserved ranges: 11:8 and 63:`phys_addr_width`.
    pub const fn reserved_bits(self, phys_addr_width: u8) -> u64 {
        let width = if phys_addr_width > 52 {
            52
        } else {
            phys_addr_width
        };
        self.0 & (Self::RESERVED_LOW_MASK | !((1u64 << width) - 1))
    }
}

impl fmt::Debug for EptPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("EptPointer");
        d.field("bits", &format_args!("{:#x}", self.0));
        match self.memory_type() {
            Ok(mt) => d.field("memory_type", &mt),
            Err(e) => d.field("memory_type", &e),
        };
        d.field("walk_length", &self.walk_length_raw())
            .field("accessed_dirty", &self.accessed_dirty_enabled())
            .field(
                "supervisor_shadow_stack",
                &self.supervisor_shadow_stack_enabled(),
            )
            .field("pml4_address", &self.pml4_address())
            .finish()
    }
}

impl From<EptPointer> for u64 {
    fn from(e: EptPointer) -> u64 {
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eptp_layout_table() {
        // (raw, memory type, walk length, A/D, SSS, root)
        type Row = (
            u64,
            Result<MemoryType, ReservedMemoryType>,
            u8,
            bool,
            bool,
            u64,
        );
        let table: &[Row] = &[
            (
                0x0000_0000_0012_301e,
                Ok(MemoryType::WriteBack),
                4,
                false,
                false,
                0x12_3000,
            ),
            (
                0x0000_0000_0012_305e,
                Ok(MemoryType::WriteBack),
                4,
                true,
                false,
                0x12_3000,
            ),
            (
                0x0000_0000_0000_10de,
                Ok(MemoryType::WriteBack),
                4,
                true,
                true,
                0x1000,
            ),
            (
                0x0000_0000_0000_2020,
                Ok(MemoryType::Uncacheable),
                5,
                false,
                false,
                0x2000,
            ),
            (
                0x000f_ffff_ffff_f01a,
                Err(ReservedMemoryType(2)),
                4,
                false,
                false,
                0x000f_ffff_ffff_f000,
            ),
            (
                0xfff0_0000_0000_0f38,
                Ok(MemoryType::Uncacheable),
                8,
                false,
                false,
                0,
            ),
        ];
        for &(raw, mt, walk, ad, sss, root) in table {
            let e = EptPointer::from_bits(raw);
            assert_eq!(e.bits(), raw);
            assert_eq!(e.memory_type(), mt, "{raw:#x}");
            assert_eq!(e.walk_length_raw(), walk, "{raw:#x}");
            assert_eq!(e.accessed_dirty_enabled(), ad, "{raw:#x}");
            assert_eq!(e.supervisor_shadow_stack_enabled(), sss, "{raw:#x}");
            assert_eq!(e.pml4_address().as_u64(), root, "{raw:#x}");
        }
        assert_eq!(
            EptPointer::from_bits(0xfff0_0000_0000_0f38).reserved_bits(52),
            0xfff0_0000_0000_0f00
        );
        assert_eq!(EptPointer::from_bits(1 << 40).reserved_bits(39), 1 << 40);
        assert_eq!(
            EptPointer::from_bits(0x2020).walk_length(),
            Ok(WalkLength::Five)
        );
        assert_eq!(
            EptPointer::from_bits(0x0).walk_length(),
            Err(ReservedWalkLength(1))
        );
    }

    #[test]
    fn from_parts_round_trips() {
        let root = HostPhysAddr::new(0x7654_3000).unwrap();
        let e = EptPointer::from_parts(root, MemoryType::WriteBack, WalkLength::Four, true, false);
        assert_eq!(e.bits(), 0x7654_305e);
        assert_eq!(EptPointer::from_bits(e.bits()), e);
    }
}
