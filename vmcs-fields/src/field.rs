//! The building blocks of the field table: VMCS component encodings, typed field handles and the
//! metadata every field carries.
//!
//! SDM Vol. 3, "VMCS Component Encoding": a 32-bit encoding whose
//! - bit 0 is the access type (0 = full, 1 = high: bits 63:32 of a 64-bit field),
//! - bits 9:1 are the index,
//! - bits 11:10 are the type (0 = control, 1 = VM-exit information, 2 = guest state, 3 = host state),
//! - bit 12 is reserved (0),
//! - bits 14:13 are the width (0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural width),
//! - bits 31:15 are reserved (0).

use core::fmt;
use core::marker::PhantomData;

use crate::value::FieldValue;

/// Width of a VMCS field, from bits 14:13 of its encoding (SDM "VMCS Component Encoding").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FieldWidth {
    /// 16-bit field (width 0).
    Bits16,
    /// 64-bit field (width 1), with a high half reachable through `encoding | 1`.
    Bits64,
    /// 32-bit field (width 2).
    Bits32,
    /// Natural-width field (width 3): 64 bits on processors that support Intel 64.
    Natural,
}

impl FieldWidth {
    /// Decodes bits 14:13 of an encoding.
    #[must_use]
    pub const fn from_encoding(encoding: u32) -> FieldWidth {
        match (encoding >> 13) & 3 {
            0 => FieldWidth::Bits16,
            1 => FieldWidth::Bits64,
            2 => FieldWidth::Bits32,
            _ => FieldWidth::Natural,
        }
    }

    /// The value of bits 14:13 that encodes this width.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            FieldWidth::Bits16 => 0,
            FieldWidth::Bits64 => 1,
            FieldWidth::Bits32 => 2,
            FieldWidth::Natural => 3,
        }
    }

    /// Number of bits a full access of the field transfers on a 64-bit processor (natural width is 64).
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            FieldWidth::Bits16 => 16,
            FieldWidth::Bits32 => 32,
            FieldWidth::Bits64 | FieldWidth::Natural => 64,
        }
    }

    /// Mask of the bits a full access keeps (VMWRITE ignores, VMREAD zero-fills the rest).
    #[must_use]
    pub const fn mask(self) -> u64 {
        match self {
            FieldWidth::Bits16 => 0xffff,
            FieldWidth::Bits32 => 0xffff_ffff,
            FieldWidth::Bits64 | FieldWidth::Natural => u64::MAX,
        }
    }

    /// Short name as `vmxtool fields` prints it: `16`, `32`, `64` or `natural`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            FieldWidth::Bits16 => "16",
            FieldWidth::Bits32 => "32",
            FieldWidth::Bits64 => "64",
            FieldWidth::Natural => "natural",
        }
    }
}

impl fmt::Display for FieldWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldWidth::Natural => f.write_str("natural-width"),
            other => write!(f, "{}-bit", other.name()),
        }
    }
}

/// Type of a VMCS field, from bits 11:10 of its encoding (SDM "VMCS Component Encoding").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FieldType {
    /// Control field (type 0): VM-execution, VM-exit and VM-entry controls.
    #[cfg_attr(feature = "serde", serde(rename = "control"))]
    Control,
    /// VM-exit information field (type 1), the SDM's "read-only data" fields.
    #[cfg_attr(feature = "serde", serde(rename = "exit_info"))]
    ExitInformation,
    /// Guest-state field (type 2).
    #[cfg_attr(feature = "serde", serde(rename = "guest"))]
    GuestState,
    /// Host-state field (type 3).
    #[cfg_attr(feature = "serde", serde(rename = "host"))]
    HostState,
}

impl FieldType {
    /// Every type, in the order of the type bits.
    pub const ALL: [FieldType; 4] = [
        FieldType::Control,
        FieldType::ExitInformation,
        FieldType::GuestState,
        FieldType::HostState,
    ];

    /// Decodes bits 11:10 of an encoding.
    #[must_use]
    pub const fn from_encoding(encoding: u32) -> FieldType {
        match (encoding >> 10) & 3 {
            0 => FieldType::Control,
            1 => FieldType::ExitInformation,
            2 => FieldType::GuestState,
            _ => FieldType::HostState,
        }
    }

    /// The value of bits 11:10 that encodes this type.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            FieldType::Control => 0,
            FieldType::ExitInformation => 1,
            FieldType::GuestState => 2,
            FieldType::HostState => 3,
        }
    }

    /// Short name as `vmxtool fields --json` prints it: `control`, `exit_info`, `guest` or `host`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            FieldType::Control => "control",
            FieldType::ExitInformation => "exit_info",
            FieldType::GuestState => "guest",
            FieldType::HostState => "host",
        }
    }

    /// The SDM's heading for the group ("Guest-State Area", ...).
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            FieldType::Control => "Control fields",
            FieldType::ExitInformation => "VM-exit information fields",
            FieldType::GuestState => "Guest-state fields",
            FieldType::HostState => "Host-state fields",
        }
    }

    /// Whether fields of this type are read-only: VM-exit information fields can be written only
    /// when IA32_VMX_MISC\[29\] ("VMWRITE to any supported field") is set.
    #[must_use]
    pub const fn read_only(self) -> bool {
        matches!(self, FieldType::ExitInformation)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bit 0 of an encoding: access type "high" (bits 63:32 of a 64-bit field).
pub const HIGH_ACCESS: u32 = 1;

/// Bits of an encoding that must be zero (bit 12 and bits 31:15).
pub const RESERVED_ENCODING_BITS: u32 = !0x6fff;

/// Index of a field (bits 9:1 of its encoding), the quantity IA32_VMX_VMCS_ENUM\[9:1\] bounds.
#[must_use]
pub const fn encoding_index(encoding: u32) -> u16 {
    ((encoding >> 1) & 0x1ff) as u16
}

/// Builds an encoding from its parts (access type full).
#[must_use]
pub const fn make_encoding(width: FieldWidth, ty: FieldType, index: u16) -> u32 {
    (width.code() << 13) | (ty.code() << 10) | (((index & 0x1ff) as u32) << 1)
}

mod sealed {
    pub trait Sealed {}
}

/// Access marker of a typed field handle: [`ReadWrite`] or [`ReadOnly`].
pub trait Access: sealed::Sealed + Copy + fmt::Debug {
    /// Whether fields with this marker are read-only (VM-exit information fields).
    const READ_ONLY: bool;
}

/// Marker of fields that `vmcs::VmcsWrite::write` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadWrite;
/// Marker of read-only fields (VM-exit information): the typed write does not accept them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadOnly;

impl sealed::Sealed for ReadWrite {}
impl sealed::Sealed for ReadOnly {}
impl Access for ReadWrite {
    const READ_ONLY: bool = false;
}
impl Access for ReadOnly {
    const READ_ONLY: bool = true;
}

/// Width marker of a typed field handle.
pub trait Width: sealed::Sealed + Copy + fmt::Debug {
    /// The width the encoding of a field with this marker has.
    const WIDTH: FieldWidth;
    /// Whether the handle names the high half (bits 63:32) of a 64-bit field.
    const HIGH: bool;
}

macro_rules! width_marker {
    ($(#[$m:meta])* $name:ident, $width:expr, $high:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name;
        impl sealed::Sealed for $name {}
        impl Width for $name {
            const WIDTH: FieldWidth = $width;
            const HIGH: bool = $high;
        }
    };
}

width_marker!(
    /// Marker of 16-bit fields.
    Width16, FieldWidth::Bits16, false
);
width_marker!(
    /// Marker of 32-bit fields.
    Width32, FieldWidth::Bits32, false
);
width_marker!(
    /// Marker of 64-bit fields (full access).
    Width64, FieldWidth::Bits64, false
);
width_marker!(
    /// Marker of natural-width fields.
    WidthNatural, FieldWidth::Natural, false
);
width_marker!(
    /// Marker of the high half (bits 63:32, access type high) of a 64-bit field.
    HighHalf, FieldWidth::Bits64, true
);

/// Variance-neutral carrier of a field handle's type parameters.
type Markers<V, A, W> = fn() -> (V, A, W);

/// A typed handle on one VMCS field: its encoding, the type its value reads and writes as (`V`),
/// whether the typed write accepts it (`A`) and its width (`W`).
///
/// Every field of the SDM's Appendix B is a constant of this type in [`crate::fields`], declared
/// with [`Field::declare`], which checks the declaration against the encoding at compile time
/// (a post-monomorphization check: each call is checked where it is compiled):
///
/// ```
/// use vmcs_fields::field::{Field, ReadWrite, Width32};
/// // 0x4000 (pin-based VM-execution controls) is a 32-bit control field.
/// let pin: Field<u32, ReadWrite, Width32> = Field::declare::<0x4000>();
/// assert_eq!(pin.encoding(), 0x4000);
/// ```
///
/// ```compile_fail
/// use vmcs_fields::field::{Field, ReadWrite, Width16};
/// // 0x4000 is a 32-bit field: declaring it 16-bit does not compile.
/// let pin: Field<u16, ReadWrite, Width16> = Field::declare::<0x4000>();
/// # let _ = pin;
/// ```
///
/// ```compile_fail
/// use vmcs_fields::field::{Field, ReadWrite, Width32};
/// // 0x4402 (exit reason) is a VM-exit information field: it cannot be declared writable.
/// let reason: Field<u32, ReadWrite, Width32> = Field::declare::<0x4402>();
/// # let _ = reason;
/// ```
pub struct Field<V, A, W> {
    encoding: u32,
    _marker: PhantomData<Markers<V, A, W>>,
}

impl<V, A, W> Clone for Field<V, A, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V, A, W> Copy for Field<V, A, W> {}
impl<V, A, W> PartialEq for Field<V, A, W> {
    fn eq(&self, other: &Self) -> bool {
        self.encoding == other.encoding
    }
}
impl<V, A, W> Eq for Field<V, A, W> {}

impl<V, A, W> fmt::Debug for Field<V, A, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = self.encoding & !HIGH_ACCESS;
        match crate::fields::by_encoding(full) {
            Some(info) if self.encoding & HIGH_ACCESS != 0 => {
                write!(f, "{}_HIGH({:#06x})", info.name, self.encoding)
            }
            Some(info) => write!(f, "{}({:#06x})", info.name, self.encoding),
            None => write!(f, "Field({:#06x})", self.encoding),
        }
    }
}

impl<V, A, W> Field<V, A, W> {
    /// The field's encoding (the VMREAD/VMWRITE operand).
    #[must_use]
    pub const fn encoding(&self) -> u32 {
        self.encoding
    }

    /// The field's width, from its encoding.
    #[must_use]
    pub const fn width(&self) -> FieldWidth {
        FieldWidth::from_encoding(self.encoding)
    }

    /// The field's type, from its encoding.
    #[must_use]
    pub const fn field_type(&self) -> FieldType {
        FieldType::from_encoding(self.encoding)
    }

    /// Whether the field is read-only (a VM-exit information field), from its encoding.
    #[must_use]
    pub const fn read_only(&self) -> bool {
        self.field_type().read_only()
    }

    /// The field's index (bits 9:1 of the encoding).
    #[must_use]
    pub const fn index(&self) -> u16 {
        encoding_index(self.encoding)
    }
}

impl<V: FieldValue, A: Access, W: Width> Field<V, A, W> {
    /// Declares the field with encoding `ENCODING`. The declaration is checked at compile time:
    /// it does not build when the encoding's reserved bits are set, its width, type or access bits
    /// disagree with `W` and `A`, or the value type's width disagrees with the encoding's. There
    /// is no run-time check and nothing can fail at run time.
    #[must_use]
    pub const fn declare<const ENCODING: u32>() -> Self {
        const { Self::check(ENCODING) };
        Field {
            encoding: ENCODING,
            _marker: PhantomData,
        }
    }

    /// The compile-time check of [`Field::declare`]; only ever evaluated in a `const` block.
    const fn check(encoding: u32) {
        assert!(
            encoding & RESERVED_ENCODING_BITS == 0,
            "reserved encoding bits set"
        );
        assert!(
            (encoding >> 13) & 3 == W::WIDTH.code(),
            "encoding width disagrees with the width marker"
        );
        assert!(
            (encoding & HIGH_ACCESS != 0) == W::HIGH,
            "encoding access type disagrees with the width marker"
        );
        assert!(
            FieldType::from_encoding(encoding).read_only() == A::READ_ONLY,
            "read-only marker disagrees with the encoding's type"
        );
        let bits = if W::HIGH { 32 } else { W::WIDTH.bits() };
        assert!(
            V::BITS == bits,
            "value type width disagrees with the encoding"
        );
    }
}

impl<V, A> Field<V, A, Width64> {
    /// The high half of this 64-bit field (its encoding with access type high, bit 0 set): bits
    /// 63:32 as a `u32`, the way 32-bit software accesses 64-bit fields.
    #[must_use]
    pub const fn high(&self) -> Field<u32, A, HighHalf> {
        Field {
            encoding: self.encoding | HIGH_ACCESS,
            _marker: PhantomData,
        }
    }
}

/// A field handle the typed `vmcs::VmcsRead::read` accepts.
pub trait VmcsField: Copy {
    /// What reading the field returns.
    type Value: FieldValue;
    /// The field's encoding.
    fn encoding(&self) -> u32;
}

/// A field handle the typed `vmcs::VmcsWrite::write` accepts: every field but the read-only
/// VM-exit information fields.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a writable VMCS field",
    label = "read-only (VM-exit information) field",
    note = "VM-exit information fields are written by the processor; use `write_raw` if IA32_VMX_MISC[29] allows VMWRITE to them"
)]
pub trait WritableField: VmcsField {}

impl<V: FieldValue, A: Access, W: Width> VmcsField for Field<V, A, W> {
    type Value = V;
    fn encoding(&self) -> u32 {
        self.encoding
    }
}

impl<V: FieldValue, W: Width> WritableField for Field<V, ReadWrite, W> {}

/// Metadata of one VMCS field, generated from the same table as the typed constants.
///
/// ```
/// use vmcs_fields::{FieldType, FieldWidth, fields};
///
/// // The metadata of IA32_EFER's guest field: 64-bit, guest state, with a high half.
/// let info = fields::by_name("GUEST_IA32_EFER").unwrap();
/// assert_eq!(info.encoding, 0x2806);
/// assert_eq!((info.width(), info.field_type()), (FieldWidth::Bits64, FieldType::GuestState));
/// assert_eq!(info.high_encoding(), Some(0x2807));
/// assert!(!info.read_only());
/// assert_eq!(info.value_type, "Efer");
/// assert_eq!(info.display_value(0xd01).to_string(), "0xd01 (SCE | LME | LMA | NXE)");
/// ```
#[derive(Clone, Copy)]
pub struct FieldInfo {
    /// Constant name: the SDM's Appendix B name in SCREAMING_SNAKE_CASE (e.g. `GUEST_RIP`).
    pub name: &'static str,
    /// Full encoding.
    pub encoding: u32,
    /// The SDM's name of the field, as Appendix B spells it.
    pub sdm_name: &'static str,
    /// Rust name of the value type reads return (e.g. `u64`, `SegmentAccessRights`).
    pub value_type: &'static str,
    pub(crate) value_bits: u32,
    pub(crate) format: fn(u64, &mut fmt::Formatter<'_>) -> fmt::Result,
}

impl FieldInfo {
    /// Width, from the encoding.
    #[must_use]
    pub const fn width(&self) -> FieldWidth {
        FieldWidth::from_encoding(self.encoding)
    }

    /// Type, from the encoding.
    #[must_use]
    pub const fn field_type(&self) -> FieldType {
        FieldType::from_encoding(self.encoding)
    }

    /// Whether the field is read-only (a VM-exit information field), from the encoding.
    #[must_use]
    pub const fn read_only(&self) -> bool {
        self.field_type().read_only()
    }

    /// Index (bits 9:1 of the encoding).
    #[must_use]
    pub const fn index(&self) -> u16 {
        encoding_index(self.encoding)
    }

    /// Encoding of the high half for 64-bit fields, `None` for other widths.
    #[must_use]
    pub const fn high_encoding(&self) -> Option<u32> {
        match self.width() {
            FieldWidth::Bits64 => Some(self.encoding | HIGH_ACCESS),
            _ => None,
        }
    }

    /// Width in bits of the declared value type (equal to the encoding's width; tested).
    #[must_use]
    pub const fn value_bits(&self) -> u32 {
        self.value_bits
    }

    /// A [`fmt::Display`] of a raw value of this field, decoded through its value type.
    #[must_use]
    pub fn display_value(&self, raw: u64) -> DisplayValue {
        DisplayValue {
            format: self.format,
            raw,
        }
    }
}

impl fmt::Debug for FieldInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldInfo")
            .field("name", &self.name)
            .field("encoding", &format_args!("{:#06x}", self.encoding))
            .field("width", &self.width())
            .field("type", &self.field_type())
            .field("read_only", &self.read_only())
            .field("value_type", &self.value_type)
            .finish()
    }
}

/// A raw field value shown through the field's value type; see [`FieldInfo::display_value`].
#[derive(Clone, Copy)]
pub struct DisplayValue {
    format: fn(u64, &mut fmt::Formatter<'_>) -> fmt::Result,
    raw: u64,
}

impl fmt::Display for DisplayValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.format)(self.raw, f)
    }
}
