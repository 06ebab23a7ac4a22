//! The guest's segment registers and descriptor-table registers as whole values (SDM Vol. 3C,
//! 25.4.1 "Guest Register State": "the following fields for each of the registers CS, SS, DS, ES,
//! FS, GS, LDTR, and TR: selector (16 bits), base address (64 bits), segment limit (32 bits),
//! access rights (32 bits)"; "the following fields for each of the registers GDTR and IDTR: base
//! address (64 bits), limit (32 bits)").
//!
//! The field handles come from the field table ([`crate::fields`]); nothing here repeats an
//! encoding.

use core::fmt;

use vmx_core::VmFail;

use crate::SegmentAccessRights;
use crate::access::{VmcsRead, VmcsWrite};
use crate::field::{Field, ReadWrite, Width16, Width32, WidthNatural};
use crate::fields;

/// Handle on a guest selector field (16-bit guest-state field).
pub type SelectorField = Field<u16, ReadWrite, Width16>;
/// Handle on a guest base-address field (natural-width guest-state field).
pub type BaseField = Field<u64, ReadWrite, WidthNatural>;
/// Handle on a guest limit field (32-bit guest-state field).
pub type LimitField = Field<u32, ReadWrite, Width32>;
/// Handle on a guest access-rights field (32-bit guest-state field).
pub type AccessRightsField = Field<SegmentAccessRights, ReadWrite, Width32>;

/// A guest segment register of the VMCS guest-state area (SDM Vol. 3C, 25.4.1 "Guest Register
/// State"): each has a selector, base address, segment limit and access-rights field.
///
/// ```
/// use vmcs::{GuestSegment, Segment, SegmentAccessRights, SoftVmcs, VmcsRead, VmcsWrite, fields};
///
/// let mut vmcs = SoftVmcs::all_fields();
/// let cs = Segment {
///     selector: 0x10,
///     base: 0,
///     limit: 0xffff_ffff,
///     access_rights: SegmentAccessRights::from_bits(0xa09b),
/// };
/// vmcs.write_guest_segment(GuestSegment::Cs, cs)?;
/// assert_eq!(vmcs.read(fields::GUEST_CS_SELECTOR)?, 0x10);
/// assert_eq!(vmcs.read_guest_segment(GuestSegment::Cs)?, cs);
/// assert_eq!(GuestSegment::Tr.selector_field().encoding(), 0x080e);
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GuestSegment {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// LDTR, the local-descriptor-table register.
    Ldtr,
    /// TR, the task register.
    Tr,
}

impl GuestSegment {
    /// The register's number in the SDM's segment-register order, ES 0, CS 1, SS 2, DS 3, FS 4,
    /// GS 5, LDTR 6, TR 7: the index of its guest-state fields, and for ES to GS the 3-bit
    /// segment-register encoding of VM-exit instruction information (SDM "VM-Exit Instruction
    /// Information").
    #[must_use]
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// Decodes the 3-bit segment-register encoding of VM-exit instruction information (only bits
    /// 2:0 of `raw` are used): 0 ES … 5 GS; 6 and 7 are not used there and give `None`.
    ///
    /// ```
    /// use vmcs::GuestSegment;
    ///
    /// assert_eq!(GuestSegment::from_instruction_encoding(3), Some(GuestSegment::Ds));
    /// assert_eq!(GuestSegment::from_instruction_encoding(6), None);
    /// assert_eq!(GuestSegment::Ds.number(), 3);
    /// ```
    #[must_use]
    pub const fn from_instruction_encoding(raw: u8) -> Option<Self> {
        match raw & 7 {
            0 => Some(Self::Es),
            1 => Some(Self::Cs),
            2 => Some(Self::Ss),
            3 => Some(Self::Ds),
            4 => Some(Self::Fs),
            5 => Some(Self::Gs),
            _ => None,
        }
    }

    /// Every guest segment register, in encoding order (ES, CS, SS, DS, FS, GS, LDTR, TR).
    pub const ALL: [Self; 8] = [
        Self::Es,
        Self::Cs,
        Self::Ss,
        Self::Ds,
        Self::Fs,
        Self::Gs,
        Self::Ldtr,
        Self::Tr,
    ];

    /// The register's SDM name (`"ES"`, …, `"LDTR"`, `"TR"`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es => "ES",
            Self::Cs => "CS",
            Self::Ss => "SS",
            Self::Ds => "DS",
            Self::Fs => "FS",
            Self::Gs => "GS",
            Self::Ldtr => "LDTR",
            Self::Tr => "TR",
        }
    }

    /// The "Guest *seg* selector" field.
    #[must_use]
    pub const fn selector_field(self) -> SelectorField {
        match self {
            Self::Es => fields::GUEST_ES_SELECTOR,
            Self::Cs => fields::GUEST_CS_SELECTOR,
            Self::Ss => fields::GUEST_SS_SELECTOR,
            Self::Ds => fields::GUEST_DS_SELECTOR,
            Self::Fs => fields::GUEST_FS_SELECTOR,
            Self::Gs => fields::GUEST_GS_SELECTOR,
            Self::Ldtr => fields::GUEST_LDTR_SELECTOR,
            Self::Tr => fields::GUEST_TR_SELECTOR,
        }
    }

    /// The "Guest *seg* base" field.
    #[must_use]
    pub const fn base_field(self) -> BaseField {
        match self {
            Self::Es => fields::GUEST_ES_BASE,
            Self::Cs => fields::GUEST_CS_BASE,
            Self::Ss => fields::GUEST_SS_BASE,
            Self::Ds => fields::GUEST_DS_BASE,
            Self::Fs => fields::GUEST_FS_BASE,
            Self::Gs => fields::GUEST_GS_BASE,
            Self::Ldtr => fields::GUEST_LDTR_BASE,
            Self::Tr => fields::GUEST_TR_BASE,
        }
    }

    /// The "Guest *seg* limit" field.
    #[must_use]
    pub const fn limit_field(self) -> LimitField {
        match self {
            Self::Es => fields::GUEST_ES_LIMIT,
            Self::Cs => fields::GUEST_CS_LIMIT,
            Self::Ss => fields::GUEST_SS_LIMIT,
            Self::Ds => fields::GUEST_DS_LIMIT,
            Self::Fs => fields::GUEST_FS_LIMIT,
            Self::Gs => fields::GUEST_GS_LIMIT,
            Self::Ldtr => fields::GUEST_LDTR_LIMIT,
            Self::Tr => fields::GUEST_TR_LIMIT,
        }
    }

    /// The "Guest *seg* access rights" field.
    #[must_use]
    pub const fn access_rights_field(self) -> AccessRightsField {
        match self {
            Self::Es => fields::GUEST_ES_ACCESS_RIGHTS,
            Self::Cs => fields::GUEST_CS_ACCESS_RIGHTS,
            Self::Ss => fields::GUEST_SS_ACCESS_RIGHTS,
            Self::Ds => fields::GUEST_DS_ACCESS_RIGHTS,
            Self::Fs => fields::GUEST_FS_ACCESS_RIGHTS,
            Self::Gs => fields::GUEST_GS_ACCESS_RIGHTS,
            Self::Ldtr => fields::GUEST_LDTR_ACCESS_RIGHTS,
            Self::Tr => fields::GUEST_TR_ACCESS_RIGHTS,
        }
    }
}

impl fmt::Display for GuestSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A segment register's four guest-state fields as one value: selector, base address, segment
/// limit (in bytes, as the VMCS holds it) and access rights (SDM Vol. 3C, 25.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// The base address.
    pub base: u64,
    /// The segment limit, in bytes (already scaled by the granularity).
    pub limit: u32,
    /// The access rights, with bit 16 for an unusable segment.
    pub access_rights: SegmentAccessRights,
}

impl Segment {
    /// An unusable segment: selector, base and limit 0, access rights with only the "segment
    /// unusable" bit (16) set.
    pub const UNUSABLE: Self = Self {
        selector: 0,
        base: 0,
        limit: 0,
        access_rights: SegmentAccessRights::UNUSABLE_SEGMENT,
    };
}

/// A guest descriptor-table register of the guest-state area (SDM Vol. 3C, 25.4.1): GDTR or
/// IDTR, each a base-address and a limit field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GuestDescriptorTable {
    /// GDTR, the global-descriptor-table register.
    Gdtr,
    /// IDTR, the interrupt-descriptor-table register.
    Idtr,
}

impl GuestDescriptorTable {
    /// Both registers, in encoding order.
    pub const ALL: [Self; 2] = [Self::Gdtr, Self::Idtr];

    /// The register's SDM name (`"GDTR"` or `"IDTR"`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gdtr => "GDTR",
            Self::Idtr => "IDTR",
        }
    }

    /// The "Guest *reg* base" field.
    #[must_use]
    pub const fn base_field(self) -> BaseField {
        match self {
            Self::Gdtr => fields::GUEST_GDTR_BASE,
            Self::Idtr => fields::GUEST_IDTR_BASE,
        }
    }

    /// The "Guest *reg* limit" field.
    #[must_use]
    pub const fn limit_field(self) -> LimitField {
        match self {
            Self::Gdtr => fields::GUEST_GDTR_LIMIT,
            Self::Idtr => fields::GUEST_IDTR_LIMIT,
        }
    }
}

impl fmt::Display for GuestDescriptorTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A descriptor-table register's guest-state fields as one value: base address and limit. (The
/// VMCS field is 32 bits wide; VM entry requires bits 31:16 to be zero.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DescriptorTable {
    /// The base address.
    pub base: u64,
    /// The limit.
    pub limit: u32,
}

/// Reads a whole guest segment register (four VMREADs).
pub(crate) fn read_segment<V: VmcsRead + ?Sized>(
    vmcs: &V,
    seg: GuestSegment,
) -> Result<Segment, VmFail> {
    Ok(Segment {
        selector: vmcs.read(seg.selector_field())?,
        base: vmcs.read(seg.base_field())?,
        limit: vmcs.read(seg.limit_field())?,
        access_rights: vmcs.read(seg.access_rights_field())?,
    })
}

/// Writes a whole guest segment register (four VMWRITEs: selector, base, limit, access rights).
pub(crate) fn write_segment<V: VmcsWrite + ?Sized>(
    vmcs: &mut V,
    seg: GuestSegment,
    value: Segment,
) -> Result<(), VmFail> {
    vmcs.write(seg.selector_field(), value.selector)?;
    vmcs.write(seg.base_field(), value.base)?;
    vmcs.write(seg.limit_field(), value.limit)?;
    vmcs.write(seg.access_rights_field(), value.access_rights)
}

/// Reads a guest descriptor-table register (two VMREADs).
pub(crate) fn read_table<V: VmcsRead + ?Sized>(
    vmcs: &V,
    table: GuestDescriptorTable,
) -> Result<DescriptorTable, VmFail> {
    Ok(DescriptorTable {
        base: vmcs.read(table.base_field())?,
        limit: vmcs.read(table.limit_field())?,
    })
}

/// Writes a guest descriptor-table register (two VMWRITEs: base, limit).
pub(crate) fn write_table<V: VmcsWrite + ?Sized>(
    vmcs: &mut V,
    table: GuestDescriptorTable,
    value: DescriptorTable,
) -> Result<(), VmFail> {
    vmcs.write(table.base_field(), value.base)?;
    vmcs.write(table.limit_field(), value.limit)
}
