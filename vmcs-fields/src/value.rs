//! Value types of VMCS fields: what a typed read returns and a typed write takes.
//!
//! Each decoder is total: every raw value decodes, reserved bits are kept (and reported), so that a
//! value read from a VMCS and written back is unchanged.

use core::fmt;

use bitflags::bitflags;

/// A type a VMCS field's value reads and writes as.
///
/// `from_raw` is total (never fails, never panics): VMREAD zero-extends a field to 64 bits, and
/// `from_raw` keeps the low [`FieldValue::BITS`] bits. `into_raw(from_raw(x)) == x` for every `x`
/// that fits in `BITS` bits.
pub trait FieldValue: Copy {
    /// Width in bits of the value (16, 32 or 64; natural-width fields are 64-bit).
    const BITS: u32;
    /// Decodes a raw value as VMREAD returns it.
    fn from_raw(raw: u64) -> Self;
    /// Encodes the value as VMWRITE takes it.
    fn into_raw(self) -> u64;
    /// Writes a raw value decoded through this type, for dumps.
    ///
    /// # Errors
    ///
    /// Only the formatter's.
    fn format_raw(raw: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

macro_rules! integer_value {
    ($ty:ty, $bits:expr) => {
        impl FieldValue for $ty {
            const BITS: u32 = $bits;
            fn from_raw(raw: u64) -> Self {
                // Truncation is the point: the field is this wide.
                raw as $ty
            }
            fn into_raw(self) -> u64 {
                u64::from(self)
            }
            fn format_raw(raw: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", <Self as FieldValue>::from_raw(raw))
            }
        }
    };
}

integer_value!(u16, 16);
integer_value!(u32, 32);
integer_value!(u64, 64);

/// Writes `0x<hex> (FLAG | FLAG | 0x<unknown>)` for a bitflags value.
fn format_flags<B>(f: &mut fmt::Formatter<'_>, flags: &B) -> fmt::Result
where
    B: bitflags::Flags,
    B::Bits: fmt::LowerHex + bitflags::parser::WriteHex,
{
    write!(f, "{:#x}", flags.bits())?;
    if !flags.is_empty() {
        f.write_str(" (")?;
        bitflags::parser::to_writer(flags, FmtWriter(f))?;
        f.write_str(")")?;
    }
    Ok(())
}

/// The names of the set flags (`A | B`, unknown bits in hex), or `none`.
fn format_names<B>(f: &mut fmt::Formatter<'_>, flags: &B) -> fmt::Result
where
    B: bitflags::Flags,
    B::Bits: bitflags::parser::WriteHex,
{
    if flags.is_empty() {
        return f.write_str("none");
    }
    bitflags::parser::to_writer(flags, FmtWriter(f))
}

struct FmtWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for FmtWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s)
    }
}

macro_rules! flags_value {
    ($ty:ty, $raw:ty, $bits:expr) => {
        impl FieldValue for $ty {
            const BITS: u32 = $bits;
            fn from_raw(raw: u64) -> Self {
                // Truncation is the point: the field is this wide.
                <$ty>::from_bits_retain(raw as $raw)
            }
            fn into_raw(self) -> u64 {
                u64::from(self.bits())
            }
            fn format_raw(raw: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                format_flags(f, &<Self as FieldValue>::from_raw(raw))
            }
        }
    };
}

macro_rules! display_value {
    ($ty:ty, $raw:ty, $bits:expr, $from:expr, $into:expr) => {
        impl FieldValue for $ty {
            const BITS: u32 = $bits;
            fn from_raw(raw: u64) -> Self {
                // Truncation is the point: the field is this wide.
                ($from)(raw as $raw)
            }
            fn into_raw(self) -> u64 {
                u64::from(($into)(self))
            }
            fn format_raw(raw: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x} ({})", raw, <Self as FieldValue>::from_raw(raw))
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Segment access rights
// ---------------------------------------------------------------------------------------------

/// Guest segment access rights (SDM Vol. 3, "Guest Register State", table "Format of Access
/// Rights"): the fields `GUEST_ES_ACCESS_RIGHTS` … `GUEST_TR_ACCESS_RIGHTS`.
///
/// | bits  | meaning |
/// |-------|---------|
/// | 3:0   | segment type |
/// | 4     | S — descriptor type (0 = system, 1 = code or data) |
/// | 6:5   | DPL — descriptor privilege level |
/// | 7     | P — segment present |
/// | 11:8  | reserved |
/// | 12    | AVL — available for use by system software |
/// | 13    | L — 64-bit mode active (CS only) |
/// | 14    | D/B — default operation size (0 = 16-bit, 1 = 32-bit) |
/// | 15    | G — granularity |
/// | 16    | segment unusable (0 = usable, 1 = unusable) |
/// | 31:17 | reserved |
///
/// ```
/// use vmcs_fields::SegmentAccessRights;
///
/// // A 64-bit code segment: type 0xB (execute/read, accessed), S, present, L, G.
/// let cs = SegmentAccessRights::CODE_64;
/// assert_eq!(cs.bits(), 0xa09b);
/// assert_eq!((cs.segment_type(), cs.dpl()), (0xb, 0));
/// assert!(cs.present() && cs.long_mode() && !cs.default_big() && cs.granularity());
/// // Ring 3 data: the builder sets one field at a time.
/// let user_data = SegmentAccessRights::DATA_32.with_dpl(3);
/// assert_eq!(user_data.dpl(), 3);
/// assert!(SegmentAccessRights::UNUSABLE_SEGMENT.unusable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SegmentAccessRights(u32);

impl SegmentAccessRights {
    /// Bits 3:0: segment type.
    pub const TYPE_MASK: u32 = 0xf;
    /// Bit 4: S, descriptor type (1 = code or data).
    pub const S: u32 = 1 << 4;
    /// Bits 6:5: DPL.
    pub const DPL_MASK: u32 = 3 << 5;
    /// Bit 7: P, segment present.
    pub const P: u32 = 1 << 7;
    /// Bit 12: AVL.
    pub const AVL: u32 = 1 << 12;
    /// Bit 13: L, 64-bit mode active.
    pub const L: u32 = 1 << 13;
    /// Bit 14: D/B, default operation size.
    pub const DB: u32 = 1 << 14;
    /// Bit 15: G, granularity.
    pub const G: u32 = 1 << 15;
    /// Bit 16: segment unusable.
    pub const UNUSABLE: u32 = 1 << 16;
    /// Reserved bits (11:8 and 31:17); VM entry requires them to be zero for usable segments.
    pub const RESERVED_MASK: u32 = 0xfffe_0f00;

    /// The value VM entry takes for an unusable segment: only bit 16 set.
    pub const UNUSABLE_SEGMENT: Self = Self(Self::UNUSABLE);

    /// Wraps a raw value (total).
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw value.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// A 64-bit code segment (IA-32e mode's CS): execute/read, accessed (type 11), S, DPL 0, P,
    /// L, G; `0xa09b`.
    pub const CODE_64: Self = Self::code().with_long_mode(true).with_granularity(true);
    /// A flat 32-bit code segment: execute/read, accessed (type 11), S, DPL 0, P, D/B, G;
    /// `0xc09b`.
    pub const CODE_32: Self = Self::code().with_default_big(true).with_granularity(true);
    /// A flat 32-bit data or stack segment: read/write, accessed (type 3), S, DPL 0, P, D/B, G;
    /// `0xc093`.
    pub const DATA_32: Self = Self::data().with_default_big(true).with_granularity(true);
    /// A 16-bit (real-mode) code segment, as after RESET: execute/read, accessed (type 11), S,
    /// P; `0x9b` (SDM Vol. 3A, 10.1.1, Table 10-1).
    pub const CODE_16: Self = Self::code();
    /// A 16-bit (real-mode) data or stack segment, as after RESET: read/write, accessed (type
    /// 3), S, P; `0x93`.
    pub const DATA_16: Self = Self::data();
    /// A busy TSS (system type 11, P; `0x8b`): the busy 64-bit TSS in IA-32e mode, the busy
    /// 32-bit TSS outside it. VM entry requires TR to be one of these (or, outside IA-32e mode,
    /// a busy 16-bit TSS) (SDM Vol. 3C, 27.3.1.2 "Checks on Guest Segment Registers").
    pub const TSS_BUSY: Self = Self::system(SystemSegmentType::TSS_BUSY);
    /// An LDT (system type 2, P; `0x82`).
    pub const LDT: Self = Self::system(SystemSegmentType::LDT);

    /// A present DPL-0 code segment, execute/read, accessed (type 11, S, P; `0x9b`), the start of
    /// a builder: `with_long_mode`, `with_default_big`, `with_granularity`, `with_dpl`, ...
    #[must_use]
    pub const fn code() -> Self {
        Self(0xb | Self::S | Self::P)
    }

    /// A present DPL-0 data segment, read/write, accessed (type 3, S, P; `0x93`).
    #[must_use]
    pub const fn data() -> Self {
        Self(0x3 | Self::S | Self::P)
    }

    /// A present DPL-0 system segment (S = 0) of type `kind`.
    #[must_use]
    pub const fn system(kind: SystemSegmentType) -> Self {
        Self((kind.0 as u32 & Self::TYPE_MASK) | Self::P)
    }

    /// The same value with segment type `segment_type` (bits 3:0; higher bits of the argument
    /// are dropped).
    #[must_use]
    pub const fn with_type(self, segment_type: u8) -> Self {
        Self((self.0 & !Self::TYPE_MASK) | (segment_type as u32 & Self::TYPE_MASK))
    }

    /// The same value with DPL `dpl` (bits 1:0 of the argument).
    #[must_use]
    pub const fn with_dpl(self, dpl: u8) -> Self {
        Self((self.0 & !Self::DPL_MASK) | ((dpl as u32 & 3) << 5))
    }

    /// The same value with S (code or data) set or clear.
    #[must_use]
    pub const fn with_code_or_data(self, code_or_data: bool) -> Self {
        self.with_bit(Self::S, code_or_data)
    }

    /// The same value with P set or clear.
    #[must_use]
    pub const fn with_present(self, present: bool) -> Self {
        self.with_bit(Self::P, present)
    }

    /// The same value with AVL set or clear.
    #[must_use]
    pub const fn with_available(self, available: bool) -> Self {
        self.with_bit(Self::AVL, available)
    }

    /// The same value with L (64-bit code) set or clear.
    #[must_use]
    pub const fn with_long_mode(self, long_mode: bool) -> Self {
        self.with_bit(Self::L, long_mode)
    }

    /// The same value with D/B (32-bit default operation size) set or clear.
    #[must_use]
    pub const fn with_default_big(self, default_big: bool) -> Self {
        self.with_bit(Self::DB, default_big)
    }

    /// The same value with G (4-KByte limit granularity) set or clear.
    #[must_use]
    pub const fn with_granularity(self, granularity: bool) -> Self {
        self.with_bit(Self::G, granularity)
    }

    const fn with_bit(self, bit: u32, set: bool) -> Self {
        if set {
            Self(self.0 | bit)
        } else {
            Self(self.0 & !bit)
        }
    }

    /// Bits 3:0: segment type.
    #[must_use]
    pub const fn segment_type(self) -> u8 {
        (self.0 & Self::TYPE_MASK) as u8
    }

    /// Bit 4: S (true for code or data segments, false for system segments).
    #[must_use]
    pub const fn code_or_data(self) -> bool {
        self.0 & Self::S != 0
    }

    /// Bits 6:5: DPL.
    #[must_use]
    pub const fn dpl(self) -> u8 {
        ((self.0 & Self::DPL_MASK) >> 5) as u8
    }

    /// Bit 7: P.
    #[must_use]
    pub const fn present(self) -> bool {
        self.0 & Self::P != 0
    }

    /// Bit 12: AVL.
    #[must_use]
    pub const fn available(self) -> bool {
        self.0 & Self::AVL != 0
    }

    /// Bit 13: L.
    #[must_use]
    pub const fn long_mode(self) -> bool {
        self.0 & Self::L != 0
    }

    /// Bit 14: D/B.
    #[must_use]
    pub const fn default_big(self) -> bool {
        self.0 & Self::DB != 0
    }

    /// Bit 15: G.
    #[must_use]
    pub const fn granularity(self) -> bool {
        self.0 & Self::G != 0
    }

    /// Bit 16: segment unusable.
    #[must_use]
    pub const fn unusable(self) -> bool {
        self.0 & Self::UNUSABLE != 0
    }

    /// The reserved bits that are set (bits 11:8 and 31:17).
    #[must_use]
    pub const fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED_MASK
    }

    /// The same value with the unusable bit set or clear.
    #[must_use]
    pub const fn with_unusable(self, unusable: bool) -> Self {
        self.with_bit(Self::UNUSABLE, unusable)
    }
}

/// The type of a system segment (S = 0) in IA-32e mode and outside it (SDM Vol. 3A, 3.5 "System
/// Descriptor Types", Table 3-2): the values [`SegmentAccessRights::system`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SystemSegmentType(pub u8);

impl SystemSegmentType {
    /// 1: available 16-bit TSS (reserved in IA-32e mode).
    pub const TSS16_AVAILABLE: Self = Self(1);
    /// 2: LDT.
    pub const LDT: Self = Self(2);
    /// 3: busy 16-bit TSS (reserved in IA-32e mode).
    pub const TSS16_BUSY: Self = Self(3);
    /// 9: available 32-bit TSS, or available 64-bit TSS in IA-32e mode.
    pub const TSS_AVAILABLE: Self = Self(9);
    /// 11: busy 32-bit TSS, or busy 64-bit TSS in IA-32e mode.
    pub const TSS_BUSY: Self = Self(11);
}

impl fmt::Debug for SegmentAccessRights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentAccessRights({:#x}: {})", self.0, self)
    }
}

impl fmt::Display for SegmentAccessRights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unusable() {
            f.write_str("unusable")?;
            if self.0 == Self::UNUSABLE {
                return Ok(());
            }
            f.write_str(", ")?;
        }
        write!(
            f,
            "type={:#x} {} dpl={}",
            self.segment_type(),
            if self.code_or_data() {
                "code/data"
            } else {
                "system"
            },
            self.dpl()
        )?;
        for (set, name) in [
            (self.present(), " P"),
            (self.available(), " AVL"),
            (self.long_mode(), " L"),
            (self.default_big(), " D/B"),
            (self.granularity(), " G"),
        ] {
            if set {
                f.write_str(name)?;
            }
        }
        if self.reserved_bits() != 0 {
            write!(f, " reserved={:#x}", self.reserved_bits())?;
        }
        Ok(())
    }
}

display_value!(
    SegmentAccessRights,
    u32,
    32,
    SegmentAccessRights::from_bits,
    SegmentAccessRights::bits
);

// ---------------------------------------------------------------------------------------------
// Interruptibility state
// ---------------------------------------------------------------------------------------------

bitflags! {
    /// Guest interruptibility state (SDM Vol. 3, "Guest Non-Register State", table "Format of
    /// Interruptibility State"): the field `GUEST_INTERRUPTIBILITY_STATE`. Bits 31:5 are reserved
    /// and kept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct InterruptibilityState: u32 {
        /// Bit 0: blocking by STI.
        const BLOCKING_BY_STI = 1 << 0;
        /// Bit 1: blocking by MOV SS (or POP SS).
        const BLOCKING_BY_MOV_SS = 1 << 1;
        /// Bit 2: blocking by SMI.
        const BLOCKING_BY_SMI = 1 << 2;
        /// Bit 3: blocking by NMI.
        const BLOCKING_BY_NMI = 1 << 3;
        /// Bit 4: enclave interruption.
        const ENCLAVE_INTERRUPTION = 1 << 4;
        const _ = !0;
    }
}

vmx_caps::serde_as_bits!(InterruptibilityState);

impl InterruptibilityState {
    /// Reserved bits (31:5); VM entry requires them to be zero.
    pub const RESERVED_MASK: u32 = !0x1f;
}

impl fmt::Display for InterruptibilityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_names(f, self)
    }
}

flags_value!(InterruptibilityState, u32, 32);

bitflags! {
    /// Guest pending debug exceptions (SDM Vol. 3, "Guest Non-Register State", table "Format of
    /// Pending-Debug-Exceptions"): the field `GUEST_PENDING_DEBUG_EXCEPTIONS`, debug exceptions
    /// recognized but not yet delivered, which VM entry makes pending again (SDM "Delivery of
    /// Pending Debug Exceptions after VM Entry"). Reserved bits are kept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PendingDebugExceptions: u64 {
        /// Bit 0, B0: breakpoint condition 0 met (enabled in DR7 or not).
        const B0 = 1 << 0;
        /// Bit 1, B1: breakpoint condition 1 met.
        const B1 = 1 << 1;
        /// Bit 2, B2: breakpoint condition 2 met.
        const B2 = 1 << 2;
        /// Bit 3, B3: breakpoint condition 3 met.
        const B3 = 1 << 3;
        /// Bit 12: enabled breakpoint (at least one data or I/O breakpoint enabled in DR7 met
        /// its condition).
        const ENABLED_BREAKPOINT = 1 << 12;
        /// Bit 14, BS: a single-step trap is pending (RFLAGS.TF, or a taken branch with
        /// IA32_DEBUGCTL.BTF).
        const BS = 1 << 14;
        /// Bit 16, RTM: a debug exception (or breakpoint) occurred inside an RTM region.
        const RTM = 1 << 16;
        const _ = !0;
    }
}

vmx_caps::serde_as_bits!(PendingDebugExceptions);

impl PendingDebugExceptions {
    /// Reserved bits (11:4, 13, 15, 63:17); VM entry requires them to be zero.
    pub const RESERVED_MASK: u64 = !0x1_ffff | 0xff0 | (1 << 13) | (1 << 15);
}

impl fmt::Display for PendingDebugExceptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_names(f, self)
    }
}

flags_value!(PendingDebugExceptions, u64, 64);

// ---------------------------------------------------------------------------------------------
// Activity state
// ---------------------------------------------------------------------------------------------

/// Guest activity state (SDM Vol. 3, "Guest Non-Register State"): the field
/// `GUEST_ACTIVITY_STATE`. IA32_VMX_MISC bits 8:6 say which of HLT, shutdown and wait-for-SIPI a
/// processor supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ActivityState {
    /// 0: Active.
    #[default]
    Active,
    /// 1: HLT.
    Hlt,
    /// 2: Shutdown.
    Shutdown,
    /// 3: Wait-for-SIPI.
    WaitForSipi,
    /// Any other value (reserved by the SDM; VM entry fails with it).
    Unknown(u32),
}

impl ActivityState {
    /// Decodes a raw value (total).
    #[must_use]
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            0 => ActivityState::Active,
            1 => ActivityState::Hlt,
            2 => ActivityState::Shutdown,
            3 => ActivityState::WaitForSipi,
            other => ActivityState::Unknown(other),
        }
    }

    /// The raw value.
    #[must_use]
    pub const fn raw(self) -> u32 {
        match self {
            ActivityState::Active => 0,
            ActivityState::Hlt => 1,
            ActivityState::Shutdown => 2,
            ActivityState::WaitForSipi => 3,
            ActivityState::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for ActivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivityState::Active => f.write_str("active"),
            ActivityState::Hlt => f.write_str("HLT"),
            ActivityState::Shutdown => f.write_str("shutdown"),
            ActivityState::WaitForSipi => f.write_str("wait-for-SIPI"),
            ActivityState::Unknown(raw) => write!(f, "reserved ({raw})"),
        }
    }
}

display_value!(
    ActivityState,
    u32,
    32,
    ActivityState::from_raw,
    ActivityState::raw
);

// ---------------------------------------------------------------------------------------------
// Interruption information (VM-exit, IDT-vectoring, VM-entry)
// ---------------------------------------------------------------------------------------------

/// Interruption type, bits 10:8 of the interruption-information format ([`InterruptionInfo`]):
/// the same encoding in the VM-exit interruption information, the IDT-vectoring information and
/// the VM-entry interruption information (SDM Vol. 3, "VM-Entry Controls for Event Injection").
/// Every 3-bit value has a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum InterruptionType {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 1: reserved.
    Reserved,
    /// 2: non-maskable interrupt (NMI).
    Nmi,
    /// 3: hardware exception (e.g. #PF).
    HardwareException,
    /// 4: software interrupt (INT n).
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3 or INTO).
    SoftwareException,
    /// 7: other event (e.g. MTF; with FRED, SYSCALL/SYSENTER).
    OtherEvent,
}

impl InterruptionType {
    /// Decodes the low three bits of `raw` (total).
    #[must_use]
    pub const fn from_raw(raw: u8) -> Self {
        match raw & 7 {
            0 => InterruptionType::ExternalInterrupt,
            1 => InterruptionType::Reserved,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            _ => InterruptionType::OtherEvent,
        }
    }

    /// The 3-bit code.
    #[must_use]
    pub const fn raw(self) -> u8 {
        match self {
            InterruptionType::ExternalInterrupt => 0,
            InterruptionType::Reserved => 1,
            InterruptionType::Nmi => 2,
            InterruptionType::HardwareException => 3,
            InterruptionType::SoftwareInterrupt => 4,
            InterruptionType::PrivilegedSoftwareException => 5,
            InterruptionType::SoftwareException => 6,
            InterruptionType::OtherEvent => 7,
        }
    }
}

impl fmt::Display for InterruptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InterruptionType::ExternalInterrupt => "external interrupt",
            InterruptionType::Reserved => "reserved type 1",
            InterruptionType::Nmi => "NMI",
            InterruptionType::HardwareException => "hardware exception",
            InterruptionType::SoftwareInterrupt => "software interrupt",
            InterruptionType::PrivilegedSoftwareException => "privileged software exception",
            InterruptionType::SoftwareException => "software exception",
            InterruptionType::OtherEvent => "other event",
        })
    }
}

/// The interruption-information format, one type for the three fields that share it (SDM Vol. 3,
/// tables "Format of the VM-Exit Interruption-Information Field", "Format of the IDT-Vectoring
/// Information Field" and "Format of the VM-Entry Interruption-Information Field"): the fields
/// `VM_EXIT_INTERRUPTION_INFORMATION`, `IDT_VECTORING_INFORMATION` and
/// `VM_ENTRY_INTERRUPTION_INFORMATION`.
///
/// | bits  | meaning |
/// |-------|---------|
/// | 7:0   | vector of interrupt or exception |
/// | 10:8  | interruption type ([`InterruptionType`]) |
/// | 11    | error code valid (VM exit, IDT vectoring); deliver error code (VM entry) |
/// | 12    | NMI unblocking due to IRET (VM exit); undefined (IDT vectoring); reserved (VM entry) |
/// | 13    | nested exception (FRED event delivery; on processors with VMX nested-exception support, IA32_VMX_BASIC\[58\]); in the VM-entry field only for a hardware exception |
/// | 30:14 | reserved |
/// | 31    | valid |
///
/// ```
/// use vmcs_fields::{InterruptionInfo, InterruptionType};
///
/// // #GP with an error code, as VM entry injects it.
/// let gp = InterruptionInfo::new(13, InterruptionType::HardwareException, true);
/// assert_eq!(gp.bits(), 0x8000_0b0d);
/// // A VM exit on an NMI whose delivery unblocked NMIs through IRET (bit 12).
/// let exit = InterruptionInfo::from_bits(0x8000_1202);
/// assert_eq!((exit.vector(), exit.interruption_type()), (2, InterruptionType::Nmi));
/// assert!(exit.valid() && exit.nmi_unblocking() && !exit.error_code());
/// assert_eq!(InterruptionInfo::new(2, InterruptionType::Nmi, false).with_nmi_unblocking(true), exit);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct InterruptionInfo(u32);

impl InterruptionInfo {
    /// Bit 11: error code valid (VM exit, IDT vectoring) or deliver error code (VM entry).
    pub const ERROR_CODE: u32 = 1 << 11;
    /// Bit 12: NMI unblocking due to IRET (VM-exit interruption information only).
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    /// Bit 13: nested exception, the event was an exception encountered while delivering
    /// another event with FRED (VM-exit interruption information and IDT-vectoring information),
    /// or an exception VM entry injects as such (VM-entry interruption information). Defined on
    /// processors with VMX nested-exception support (IA32_VMX_BASIC\[58\]); reserved otherwise,
    /// and VM entry allows it only when injecting a hardware exception (SDM Vol. 3C, "Checks on
    /// VM-Entry Control Fields").
    pub const NESTED_EXCEPTION: u32 = 1 << 13;
    /// Bit 31: valid.
    pub const VALID: u32 = 1 << 31;
    /// Bits 30:14 and 12, reserved in the VM-entry field whatever the processor (VM entry
    /// requires them 0); bit 12 has a meaning in the VM-exit field ([`Self::NMI_UNBLOCKING`]).
    /// Bit 13 ([`Self::NESTED_EXCEPTION`]) is reserved only without VMX nested-exception
    /// support or for other types than hardware exception, so it is not in this mask.
    pub const RESERVED_MASK: u32 = 0x7fff_d000;

    /// Nothing to inject (valid bit clear).
    pub const NONE: Self = Self(0);

    /// Wraps a raw value (total).
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw value.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// A valid event to inject: vector, type and whether to deliver an error code (the code goes
    /// in `VM_ENTRY_EXCEPTION_ERROR_CODE`).
    #[must_use]
    pub const fn new(vector: u8, kind: InterruptionType, deliver_error_code: bool) -> Self {
        let mut bits = Self::VALID | ((kind.raw() as u32) << 8) | vector as u32;
        if deliver_error_code {
            bits |= Self::ERROR_CODE;
        }
        Self(bits)
    }

    /// The same value with bit 12 (NMI unblocking due to IRET, VM-exit interruption
    /// information only) set to `on`.
    #[must_use]
    pub const fn with_nmi_unblocking(self, on: bool) -> Self {
        if on {
            Self(self.0 | Self::NMI_UNBLOCKING)
        } else {
            Self(self.0 & !Self::NMI_UNBLOCKING)
        }
    }

    /// Bits 7:0: vector.
    #[must_use]
    pub const fn vector(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// Bits 10:8: interruption type.
    #[must_use]
    pub const fn interruption_type(self) -> InterruptionType {
        InterruptionType::from_raw(((self.0 >> 8) & 7) as u8)
    }

    /// Bit 11: error code valid (VM exit, IDT vectoring) or deliver error code (VM entry).
    #[must_use]
    pub const fn error_code(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }

    /// Bit 12: NMI unblocking due to IRET (meaningful in the VM-exit interruption information
    /// only: the exit happened while an IRET's delivery had unblocked NMIs).
    #[must_use]
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }

    /// Bit 13: nested exception (see [`Self::NESTED_EXCEPTION`]).
    #[must_use]
    pub const fn nested_exception(self) -> bool {
        self.0 & Self::NESTED_EXCEPTION != 0
    }

    /// The same value with bit 13 (nested exception) set to `on`.
    #[must_use]
    pub const fn with_nested_exception(self, on: bool) -> Self {
        if on {
            Self(self.0 | Self::NESTED_EXCEPTION)
        } else {
            Self(self.0 & !Self::NESTED_EXCEPTION)
        }
    }

    /// Bit 31: valid.
    #[must_use]
    pub const fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// The bits of [`Self::RESERVED_MASK`] that are set (30:14 and 12, the VM-entry field's
    /// reserved bits on every processor).
    #[must_use]
    pub const fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED_MASK
    }
}

impl fmt::Debug for InterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InterruptionInfo({:#x}: {})", self.0, self)
    }
}

impl fmt::Display for InterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.valid() {
            f.write_str("invalid")?;
            if self.0 == 0 {
                return Ok(());
            }
            f.write_str(": ")?;
        }
        write!(f, "{} vector {}", self.interruption_type(), self.vector())?;
        if self.error_code() {
            f.write_str(" with error code")?;
        }
        if self.nested_exception() {
            f.write_str(" (nested exception)")?;
        }
        if self.reserved_bits() != 0 {
            write!(f, " reserved={:#x}", self.reserved_bits())?;
        }
        Ok(())
    }
}

display_value!(
    InterruptionInfo,
    u32,
    32,
    InterruptionInfo::from_bits,
    InterruptionInfo::bits
);

// ---------------------------------------------------------------------------------------------
// Exception bitmap
// ---------------------------------------------------------------------------------------------

bitflags! {
    /// The exception bitmap (SDM Vol. 3, "Exception Bitmap"): the field `EXCEPTION_BITMAP`. Bit
    /// *n* set makes exception vector *n* cause a VM exit. Flag names are the SDM's exception
    /// names; bits without a named exception are kept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ExceptionBitmap: u32 {
        /// Vector 0: #DE, divide error.
        const DIVIDE_ERROR = 1 << 0;
        /// Vector 1: #DB, debug exception.
        const DEBUG = 1 << 1;
        /// Vector 2: NMI (never delivered through the bitmap; NMIs are controlled by "NMI exiting").
        const NMI = 1 << 2;
        /// Vector 3: #BP, breakpoint.
        const BREAKPOINT = 1 << 3;
        /// Vector 4: #OF, overflow.
        const OVERFLOW = 1 << 4;
        /// Vector 5: #BR, BOUND range exceeded.
        const BOUND_RANGE_EXCEEDED = 1 << 5;
        /// Vector 6: #UD, invalid opcode.
        const INVALID_OPCODE = 1 << 6;
        /// Vector 7: #NM, device not available.
        const DEVICE_NOT_AVAILABLE = 1 << 7;
        /// Vector 8: #DF, double fault.
        const DOUBLE_FAULT = 1 << 8;
        /// Vector 9: coprocessor segment overrun (reserved on current processors).
        const COPROCESSOR_SEGMENT_OVERRUN = 1 << 9;
        /// Vector 10: #TS, invalid TSS.
        const INVALID_TSS = 1 << 10;
        /// Vector 11: #NP, segment not present.
        const SEGMENT_NOT_PRESENT = 1 << 11;
        /// Vector 12: #SS, stack-segment fault.
        const STACK_SEGMENT_FAULT = 1 << 12;
        /// Vector 13: #GP, general protection.
        const GENERAL_PROTECTION = 1 << 13;
        /// Vector 14: #PF, page fault (filtered by the page-fault error-code mask and match).
        const PAGE_FAULT = 1 << 14;
        /// Vector 16: #MF, x87 FPU floating-point error.
        const X87_FLOATING_POINT = 1 << 16;
        /// Vector 17: #AC, alignment check.
        const ALIGNMENT_CHECK = 1 << 17;
        /// Vector 18: #MC, machine check.
        const MACHINE_CHECK = 1 << 18;
        /// Vector 19: #XM, SIMD floating-point exception.
        const SIMD_FLOATING_POINT = 1 << 19;
        /// Vector 20: #VE, virtualization exception.
        const VIRTUALIZATION_EXCEPTION = 1 << 20;
        /// Vector 21: #CP, control protection exception.
        const CONTROL_PROTECTION = 1 << 21;
        const _ = !0;
    }
}

vmx_caps::serde_as_bits!(ExceptionBitmap);

impl ExceptionBitmap {
    /// The bit of exception vector `vector` (0 to 31); `None` for vectors above 31, which the
    /// bitmap cannot name.
    #[must_use]
    pub const fn vector(vector: u8) -> Option<Self> {
        if vector < 32 {
            Some(Self::from_bits_retain(1 << vector))
        } else {
            None
        }
    }

    /// Whether exception vector `vector` causes a VM exit (false for vectors above 31).
    #[must_use]
    pub const fn intercepts(self, vector: u8) -> bool {
        vector < 32 && self.bits() & (1 << vector) != 0
    }
}

impl fmt::Display for ExceptionBitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        bitflags::parser::to_writer(self, FmtWriter(f))
    }
}

flags_value!(ExceptionBitmap, u32, 32);

// ---------------------------------------------------------------------------------------------
// Control fields (the bitflags of `vmx_caps`)
// ---------------------------------------------------------------------------------------------

flags_value!(vmx_caps::PinBasedControls, u32, 32);
flags_value!(vmx_caps::PrimaryControls, u32, 32);
flags_value!(vmx_caps::SecondaryControls, u32, 32);
flags_value!(vmx_caps::TertiaryControls, u64, 64);
flags_value!(vmx_caps::ExitControls, u32, 32);
flags_value!(vmx_caps::SecondaryExitControls, u64, 64);
flags_value!(vmx_caps::EntryControls, u32, 32);
flags_value!(vmx_caps::VmFuncControls, u64, 64);
flags_value!(vmx_caps::arch::Cr0, u64, 64);
flags_value!(vmx_caps::arch::Cr4, u64, 64);
flags_value!(vmx_caps::arch::Efer, u64, 64);
flags_value!(vmx_caps::arch::Rflags, u64, 64);
flags_value!(vmx_caps::arch::Dr7, u64, 64);
flags_value!(vmx_caps::arch::DebugCtl, u64, 64);

// ---------------------------------------------------------------------------------------------
// EPT pointer
// ---------------------------------------------------------------------------------------------

impl FieldValue for crate::EptPointer {
    const BITS: u32 = 64;
    fn from_raw(raw: u64) -> Self {
        crate::EptPointer::from_bits(raw)
    }
    fn into_raw(self) -> u64 {
        self.bits()
    }
    fn format_raw(raw: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let eptp = crate::EptPointer::from_bits(raw);
        write!(f, "{raw:#x} (root {:#x}, ", eptp.pml4_address().as_u64())?;
        match eptp.memory_type() {
            Ok(memory_type) => write!(f, "{memory_type}")?,
            Err(_) => write!(f, "reserved memory type {}", raw & 7)?,
        }
        write!(f, ", {}-level walk", eptp.walk_length_raw())?;
        if eptp.accessed_dirty_enabled() {
            f.write_str(", A/D")?;
        }
        if eptp.supervisor_shadow_stack_enabled() {
            f.write_str(", SSS")?;
        }
        f.write_str(")")
    }
}
