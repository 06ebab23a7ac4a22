//! The extended-page-table pointer (EPTP), SDM Vol. 3C §25.6.11 "Extended-Page-Table Pointer
//! (EPTP)".

use core::fmt;

use vmx_caps::EptVpidCap;

use crate::addr::HostPhysAddr;

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

    /// The number of guest-physical address bits the walk translates (48 or 57).
    pub const fn gpa_width(self) -> u8 {
        12 + 9 * self.levels()
    }
}

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
/// [`EptPointer::builder`] only builds what the processor's capabilities allow.
///
/// ```
/// use vmcs_fields::{EptPointer, EptpError, HostPhysAddr, MemoryType, WalkLength};
/// use vmx_caps::EptVpidCap;
///
/// let caps = EptVpidCap(0x0000_0f01_0633_4141); // Bochs' corei7_skylake_x: WB, 4 levels, A/D
/// let root = HostPhysAddr::new(0x12_3000)?;
/// let eptp = EptPointer::builder(root).accessed_dirty(true).build(&caps)?;
/// assert_eq!(eptp.bits(), 0x12_305e); // WB (6), 4-level walk (3 << 3), A/D (bit 6)
/// assert_eq!(eptp.memory_type(), Ok(MemoryType::WriteBack));
/// assert_eq!(eptp.walk_length(), Ok(WalkLength::Four));
/// assert_eq!(eptp.pml4_address(), root);
/// // A 5-level walk is not offered by this model.
/// assert_eq!(
///     EptPointer::builder(root).walk_length(WalkLength::Five).build(&caps),
///     Err(EptpError::WalkLengthNotSupported(WalkLength::Five))
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

    /// Assembles an EPTP without consulting capabilities (see [`EptPointer::builder`] for the
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

/// Why [`EptpBuilder::build`] refused an EPTP: a setting the processor does not support
/// (IA32_VMX_EPT_VPID_CAP, SDM Vol. 3D §A.10 "VPID and EPT Capabilities") or a malformed root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EptpError {
    /// The root table address is not 4-KiB aligned.
    #[error("EPT root table address {0:?} is not 4-KiB aligned")]
    UnalignedRoot(HostPhysAddr),
    /// The paging-structure memory type is not UC or WB, or the processor does not allow it
    /// (IA32_VMX_EPT_VPID_CAP bit 8 for UC, bit 14 for WB).
    #[error(
        "EPT paging-structure memory type {0} is not allowed (EPTP allows UC if IA32_VMX_EPT_VPID_CAP[8], WB if [14])"
    )]
    MemoryTypeNotSupported(MemoryType),
    /// The page-walk length is not supported (IA32_VMX_EPT_VPID_CAP bit 6 for 4, bit 7 for 5).
    #[error("EPT page-walk length {} is not supported (IA32_VMX_EPT_VPID_CAP[{}] is 0)", .0.levels(), if matches!(.0, WalkLength::Four) { 6 } else { 7 })]
    WalkLengthNotSupported(WalkLength),
    /// Accessed and dirty flags were requested but IA32_VMX_EPT_VPID_CAP bit 21 is 0.
    #[error("EPT accessed and dirty flags are not supported (IA32_VMX_EPT_VPID_CAP[21] is 0)")]
    AccessedDirtyNotSupported,
    /// Supervisor shadow-stack enforcement was requested but IA32_VMX_EPT_VPID_CAP bit 23 is 0.
    #[error(
        "EPT supervisor shadow-stack control is not supported (IA32_VMX_EPT_VPID_CAP[23] is 0)"
    )]
    SupervisorShadowStackNotSupported,
}

/// Builds an [`EptPointer`] from settings checked against the processor's EPT capabilities.
///
/// Defaults: write-back paging structures, 4-level walk, no accessed/dirty flags, no
/// supervisor shadow-stack enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptpBuilder {
    root: HostPhysAddr,
    memory_type: MemoryType,
    walk: WalkLength,
    accessed_dirty: bool,
    supervisor_shadow_stack: bool,
}

impl EptPointer {
    /// Starts an EPTP whose root table (PML4, or PML5 with a 5-level walk) is at `root`.
    pub const fn builder(root: HostPhysAddr) -> EptpBuilder {
        EptpBuilder {
            root,
            memory_type: MemoryType::WriteBack,
            walk: WalkLength::Four,
            accessed_dirty: false,
            supervisor_shadow_stack: false,
        }
    }
}

impl EptpBuilder {
    /// Sets the EPT paging-structure memory type (bits 2:0; UC or WB).
    pub const fn memory_type(self, memory_type: MemoryType) -> Self {
        Self {
            memory_type,
            ..self
        }
    }

    /// Sets the page-walk length (bits 5:3).
    pub const fn walk_length(self, walk: WalkLength) -> Self {
        Self { walk, ..self }
    }

    /// Enables or disables accessed and dirty flags for EPT (bit 6).
    pub const fn accessed_dirty(self, on: bool) -> Self {
        Self {
            accessed_dirty: on,
            ..self
        }
    }

    /// Enables or disables enforcement of access rights for supervisor shadow-stack pages (bit 7).
    pub const fn supervisor_shadow_stack(self, on: bool) -> Self {
        Self {
            supervisor_shadow_stack: on,
            ..self
        }
    }

    /// Checks every setting against `caps` and assembles the EPTP.
    pub fn build(self, caps: &EptVpidCap) -> Result<EptPointer, EptpError> {
        if !self.root.is_aligned(0x1000) {
            return Err(EptpError::UnalignedRoot(self.root));
        }
        let memory_type_ok = match self.memory_type {
            MemoryType::Uncacheable => caps.memory_type_uc(),
            MemoryType::WriteBack => caps.memory_type_wb(),
            _ => false,
        };
        if !memory_type_ok {
            return Err(EptpError::MemoryTypeNotSupported(self.memory_type));
        }
        let walk_ok = match self.walk {
            WalkLength::Four => caps.page_walk_4(),
            WalkLength::Five => caps.page_walk_5(),
        };
        if !walk_ok {
            return Err(EptpError::WalkLengthNotSupported(self.walk));
        }
        if self.accessed_dirty && !caps.accessed_dirty() {
            return Err(EptpError::AccessedDirtyNotSupported);
        }
        if self.supervisor_shadow_stack && !caps.supervisor_shadow_stack() {
            return Err(EptpError::SupervisorShadowStackNotSupported);
        }
        Ok(EptPointer::from_parts(
            self.root,
            self.memory_type,
            self.walk,
            self.accessed_dirty,
            self.supervisor_shadow_stack,
        ))
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

    /// IA32_VMX_EPT_VPID_CAP values captured under Bochs (the dumps in vmx-caps/testdata).
    const LYNNFIELD: EptVpidCap = EptVpidCap(0x0000_0f01_0611_4141);
    const SKYLAKE_X: EptVpidCap = EptVpidCap(0x0000_0f01_0633_4141);
    const TIGERLAKE: EptVpidCap = EptVpidCap(0x0000_0f01_06b3_4141);

    #[test]
    fn builder_checks_capabilities() {
        let root = HostPhysAddr::new(0x10_0000).unwrap();
        let wb = EptPointer::builder(root).build(&LYNNFIELD).unwrap();
        assert_eq!(wb.bits(), 0x10_001e);
        assert_eq!(
            EptPointer::builder(root)
                .accessed_dirty(true)
                .build(&LYNNFIELD),
            Err(EptpError::AccessedDirtyNotSupported)
        );
        assert_eq!(
            EptPointer::builder(root)
                .accessed_dirty(true)
                .build(&SKYLAKE_X)
                .map(EptPointer::bits),
            Ok(0x10_005e)
        );
        assert_eq!(
            EptPointer::builder(root)
                .memory_type(MemoryType::WriteThrough)
                .build(&SKYLAKE_X),
            Err(EptpError::MemoryTypeNotSupported(MemoryType::WriteThrough))
        );
        assert_eq!(
            EptPointer::builder(root)
                .walk_length(WalkLength::Five)
                .build(&SKYLAKE_X),
            Err(EptpError::WalkLengthNotSupported(WalkLength::Five))
        );
        assert_eq!(
            EptPointer::builder(root)
                .supervisor_shadow_stack(true)
                .build(&SKYLAKE_X),
            Err(EptpError::SupervisorShadowStackNotSupported)
        );
        assert_eq!(
            EptPointer::builder(root)
                .supervisor_shadow_stack(true)
                .build(&TIGERLAKE)
                .map(EptPointer::bits),
            Ok(0x10_009e)
        );
        assert_eq!(
            EptPointer::builder(HostPhysAddr::new(0x10_0800).unwrap()).build(&SKYLAKE_X),
            Err(EptpError::UnalignedRoot(
                HostPhysAddr::new(0x10_0800).unwrap()
            ))
        );
        assert_eq!(
            EptPointer::builder(root).build(&EptVpidCap(0)),
            Err(EptpError::MemoryTypeNotSupported(MemoryType::WriteBack))
        );
        let uc5 = EptVpidCap((1 << 7) | (1 << 8) | (1 << 23));
        let e = EptPointer::builder(root)
            .memory_type(MemoryType::Uncacheable)
            .walk_length(WalkLength::Five)
            .supervisor_shadow_stack(true)
            .build(&uc5)
            .unwrap();
        assert_eq!(e.bits(), 0x10_00a0);
        assert_eq!(e.walk_length(), Ok(WalkLength::Five));
    }

    #[test]
    fn from_parts_round_trips() {
        let root = HostPhysAddr::new(0x7654_3000).unwrap();
        let e = EptPointer::from_parts(root, MemoryType::WriteBack, WalkLength::Four, true, false);
        assert_eq!(e.bits(), 0x7654_305e);
        assert_eq!(EptPointer::from_bits(e.bits()), e);
    }
}
