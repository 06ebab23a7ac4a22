//! VM-exit instruction length and VM-exit instruction information (SDM Vol. 3C, "Information for
//! VM Exits Due to Instruction Execution").
//!
//! The instruction-information field has one format per instruction group; each format is a type
//! here. Memory operands share one layout, [`MemoryOperand`], whose
//! [`effective_address`](MemoryOperand::effective_address) and
//! [`linear_address`](MemoryOperand::linear_address) compute where the operand is from the guest
//! registers and the displacement the processor saved in the exit qualification.

use core::fmt;

use thiserror::Error;
use vmcs::GuestSegment;
use vmx_core::{GpReg, GuestRegisters};

const fn bits(raw: u32, low: u32, width: u32) -> u32 {
    (raw >> low) & ((1 << width) - 1)
}

/// The VM-exit instruction-length field (VMCS encoding 440CH): the length in bytes of the
/// instruction whose execution caused the VM exit.
///
/// The field is 32 bits wide; the processor stores 1–15. Any value decodes, and
/// [`InstructionLength::is_architectural`] says whether it is in that range.
///
/// ```
/// use exits::InstructionLength;
///
/// // The VM-exit instruction length of a 3-byte VMCALL (0F 01 C1).
/// let length = InstructionLength(3);
/// assert_eq!(length.get(), 3);
/// assert!(length.is_architectural() && !InstructionLength(16).is_architectural());
/// assert_eq!(length.to_string(), "3 bytes");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct InstructionLength(pub u32);

impl InstructionLength {
    /// The length in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether the value is a possible x86 instruction length (1–15).
    pub const fn is_architectural(self) -> bool {
        matches!(self.0, 1..=15)
    }
}

impl fmt::Display for InstructionLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} byte{}", self.0, if self.0 == 1 { "" } else { "s" })
    }
}

/// A segment register as encoded in instruction information (bits 17:15): the register (0 = ES …
/// 5 = GS, decoded by [`GuestSegment::from_instruction_encoding`]) or an encoding the SDM does not
/// use (6 or 7).
///
/// ```
/// use exits::{ReservedSegment, SegmentRegister, instruction::InsOutsInfo};
/// use vmcs::GuestSegment;
///
/// // OUTS with an FS override: bits 17:15 = 4.
/// let segment: SegmentRegister = InsOutsInfo::from_raw(4 << 15).segment;
/// assert_eq!(segment, Ok(GuestSegment::Fs));
/// // 6 and 7 name no segment register.
/// assert_eq!(InsOutsInfo::from_raw(6 << 15).segment, Err(ReservedSegment(6)));
/// ```
pub type SegmentRegister = Result<GuestSegment, ReservedSegment>;

/// A segment-register encoding of instruction information that the SDM does not use (6 or 7).
///
/// ```
/// use exits::{ReservedSegment, instruction::InsOutsInfo};
///
/// assert_eq!(InsOutsInfo::from_raw(7 << 15).segment, Err(ReservedSegment(7)));
/// assert_eq!(ReservedSegment(7).to_string(), "reserved segment 7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[error("reserved segment {0}")]
pub struct ReservedSegment(pub u8);

/// Decodes bits 2:0 of `raw` as a [`SegmentRegister`].
pub(crate) const fn segment_from_raw(raw: u8) -> SegmentRegister {
    match GuestSegment::from_instruction_encoding(raw) {
        Some(segment) => Ok(segment),
        None => Err(ReservedSegment(raw & 7)),
    }
}

/// The 3-bit encoding of a [`SegmentRegister`] (LDTR and TR, which instruction information never
/// names, encode as their numbers 6 and 7).
pub(crate) const fn segment_to_raw(segment: SegmentRegister) -> u8 {
    match segment {
        Ok(segment) => segment.number(),
        Err(ReservedSegment(raw)) => raw & 7,
    }
}

/// Shows a [`SegmentRegister`]: its SDM name, or "reserved segment *n*".
pub(crate) struct DisplaySegment(pub SegmentRegister);

impl fmt::Display for DisplaySegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(segment) => f.write_str(segment.name()),
            Err(reserved) => write!(f, "{reserved}"),
        }
    }
}

/// The address size of a memory operand (instruction information bits 9:7).
///
/// ```
/// use exits::AddressSize;
///
/// // Bits 9:7 of instruction information: 0, 1 and 2 are 16, 32 and 64 bits.
/// assert_eq!(AddressSize::from_raw(1), AddressSize::Bits32);
/// assert_eq!(AddressSize::Bits32.mask(), Some(0xffff_ffff));
/// assert_eq!(AddressSize::from_raw(5), AddressSize::Reserved(5));
/// assert_eq!(AddressSize::Reserved(5).mask(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AddressSize {
    /// 0: 16-bit.
    Bits16,
    /// 1: 32-bit.
    Bits32,
    /// 2: 64-bit.
    Bits64,
    /// 3–7: not used by the SDM.
    Reserved(u8),
}

impl AddressSize {
    /// Decodes the 3-bit field; only the low 3 bits of `raw` are used.
    pub const fn from_raw(raw: u8) -> Self {
        match raw & 7 {
            0 => Self::Bits16,
            1 => Self::Bits32,
            2 => Self::Bits64,
            other => Self::Reserved(other),
        }
    }

    /// The 3-bit encoding.
    pub const fn to_raw(self) -> u8 {
        match self {
            Self::Bits16 => 0,
            Self::Bits32 => 1,
            Self::Bits64 => 2,
            Self::Reserved(raw) => raw & 7,
        }
    }

    /// The mask that truncates an address to this size, or `None` for a reserved encoding.
    pub const fn mask(self) -> Option<u64> {
        match self {
            Self::Bits16 => Some(0xffff),
            Self::Bits32 => Some(0xffff_ffff),
            Self::Bits64 => Some(u64::MAX),
            Self::Reserved(_) => None,
        }
    }
}

impl fmt::Display for AddressSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bits16 => f.write_str("16-bit"),
            Self::Bits32 => f.write_str("32-bit"),
            Self::Bits64 => f.write_str("64-bit"),
            Self::Reserved(raw) => write!(f, "reserved address size {raw}"),
        }
    }
}

/// The scaling of a memory operand's index register (instruction information bits 1:0).
///
/// ```
/// use exits::Scale;
///
/// // Bits 1:0 of instruction information: the index is multiplied by 1, 2, 4 or 8.
/// assert_eq!(Scale::from_raw(3), Scale::X8);
/// assert_eq!(Scale::X8.factor(), 8);
/// assert_eq!(Scale::X4.to_raw(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Scale {
    /// 0: no scaling.
    X1,
    /// 1: scale by 2.
    X2,
    /// 2: scale by 4.
    X4,
    /// 3: scale by 8.
    X8,
}

impl Scale {
    /// Decodes the 2-bit field; only the low 2 bits of `raw` are used.
    pub const fn from_raw(raw: u8) -> Self {
        match raw & 3 {
            0 => Self::X1,
            1 => Self::X2,
            2 => Self::X4,
            _ => Self::X8,
        }
    }

    /// The 2-bit encoding, which is also the shift count applied to the index.
    pub const fn to_raw(self) -> u8 {
        self as u8
    }

    /// The factor (1, 2, 4 or 8).
    pub const fn factor(self) -> u64 {
        1 << self as u8
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "*{}", self.factor())
    }
}

/// Why a memory operand's address could not be computed.
///
/// ```
/// use exits::{MemoryOperand, OperandError};
///
/// // An address size of 3 (bits 9:7) is not one the SDM defines: no address is computed.
/// let operand = MemoryOperand::from_raw(3 << 7 | 1 << 22 | 1 << 27);
/// assert_eq!(operand.effective_address(0x10, |_| 0), Err(OperandError::ReservedAddressSize(3)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum OperandError {
    /// The address-size field holds an encoding the SDM does not define, so the width of the
    /// address is unknown.
    #[error("the memory operand's address-size field holds the undefined encoding {0}")]
    ReservedAddressSize(u8),
}

/// The memory-operand part shared by most instruction-information formats: scaling (bits 1:0),
/// address size (9:7), segment register (17:15), index register (21:18, invalid if bit 22) and base
/// register (26:23, invalid if bit 27).
///
/// ```
/// use exits::{AddressSize, GpReg, MemoryOperand, Scale};
/// use vmcs::GuestSegment;
///
/// // [RBX + RSI*4 + 0x20] with a 64-bit address size and the DS segment: scale 2 (bits 1:0),
/// // address size 2 (bits 9:7), DS = 3 (bits 17:15), index RSI = 6 (bits 21:18), base RBX = 3
/// // (bits 26:23).
/// let raw = 2 | 2 << 7 | 3 << 15 | 6 << 18 | 3 << 23;
/// let m = MemoryOperand::from_raw(raw);
/// assert_eq!((m.scale, m.address_size, m.segment), (Scale::X4, AddressSize::Bits64, Ok(GuestSegment::Ds)));
/// assert_eq!((m.base, m.index), (Some(GpReg::Rbx), Some(GpReg::Rsi)));
/// assert_eq!(m.to_raw(), raw);
/// // The displacement is the exit qualification; the registers are the guest's.
/// let regs = |reg| match reg { GpReg::Rbx => 0x1000, GpReg::Rsi => 3, _ => 0 };
/// assert_eq!(m.effective_address(0x20, regs), Ok(0x102c));
/// assert_eq!(m.to_string(), "DS:[RBX+RSI*4+disp] (64-bit address)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MemoryOperand {
    /// Bits 1:0: scaling of the index register.
    pub scale: Scale,
    /// Bits 9:7: address size.
    pub address_size: AddressSize,
    /// Bits 17:15: segment register.
    pub segment: SegmentRegister,
    /// Bits 21:18: the index register, `None` if bit 22 ("IndexReg invalid") is set.
    pub index: Option<GpReg>,
    /// Bits 26:23: the base register, `None` if bit 27 ("BaseReg invalid") is set.
    pub base: Option<GpReg>,
}

impl MemoryOperand {
    /// The bits this part of the format defines.
    pub const DEFINED_BITS: u32 = 0x3 | 0x7 << 7 | 0x7 << 15 | 0x3ff << 18;

    /// Decodes the memory-operand bits of an instruction-information value.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            scale: Scale::from_raw(raw as u8),
            address_size: AddressSize::from_raw((raw >> 7) as u8),
            segment: segment_from_raw((raw >> 15) as u8),
            index: if raw & 1 << 22 != 0 {
                None
            } else {
                Some(GpReg::from_field((raw >> 18) as u64))
            },
            base: if raw & 1 << 27 != 0 {
                None
            } else {
                Some(GpReg::from_field((raw >> 23) as u64))
            },
        }
    }

    /// Encodes the memory-operand bits (an absent register is encoded as register 0 with the
    /// "invalid" bit set).
    pub const fn to_raw(self) -> u32 {
        let index = match self.index {
            Some(reg) => (reg as u32) << 18,
            None => 1 << 22,
        };
        let base = match self.base {
            Some(reg) => (reg as u32) << 23,
            None => 1 << 27,
        };
        self.scale as u32
            | (self.address_size.to_raw() as u32) << 7
            | (segment_to_raw(self.segment) as u32) << 15
            | index
            | base
    }

    /// The operand's effective address (its offset within the segment): base + index × scale +
    /// displacement, truncated to the address size.
    ///
    /// `displacement` is the exit qualification of the VM exit, which holds the instruction's
    /// displacement sign-extended to 64 bits. `register` returns a guest register's value (RSP comes
    /// from the guest-state area, the others from wherever the VM-exit handler saved them);
    /// [`effective_address_in`](Self::effective_address_in) takes them from vmx-core's
    /// [`GuestRegisters`] frame.
    pub fn effective_address(
        &self,
        displacement: u64,
        register: impl Fn(GpReg) -> u64,
    ) -> Result<u64, OperandError> {
        let mask = match self.address_size {
            AddressSize::Reserved(raw) => return Err(OperandError::ReservedAddressSize(raw)),
            size => size.mask().unwrap_or(u64::MAX),
        };
        let base = self.base.map_or(0, &register);
        let index = self.index.map_or(0, &register);
        let address = base
            .wrapping_add(index.wrapping_mul(self.scale.factor()))
            .wrapping_add(displacement);
        Ok(address & mask)
    }

    /// The operand's linear address: `segment_base` + the effective address. With a 64-bit
    /// address size the sum wraps at 64 bits; otherwise the linear address is truncated to 32 bits,
    /// as outside 64-bit mode. The caller supplies the base of [`MemoryOperand::segment`] (from
    /// the guest segment-base fields; in 64-bit mode it is 0 except for FS and GS).
    pub fn linear_address(
        &self,
        displacement: u64,
        segment_base: u64,
        register: impl Fn(GpReg) -> u64,
    ) -> Result<u64, OperandError> {
        let offset = self.effective_address(displacement, register)?;
        let linear = segment_base.wrapping_add(offset);
        Ok(match self.address_size {
            AddressSize::Bits64 => linear,
            _ => linear & 0xffff_ffff,
        })
    }

    /// [`effective_address`](Self::effective_address) with the registers taken from the
    /// trampoline's [`GuestRegisters`] frame and RSP from `guest_rsp`, the value of the VMCS
    /// guest-state field GUEST_RSP (the frame does not hold RSP).
    ///
    /// ```
    /// use exits::instruction::MemoryInfo;
    /// use vmx_core::GuestRegisters;
    ///
    /// // VMPTRLD [RSP + RSI*8 + 0x10], 64-bit addressing: base RSP (4), index RSI (6), scale 8.
    /// let info = MemoryInfo::from_raw(3 | 2 << 7 | 6 << 18 | 4 << 23);
    /// let mut regs = GuestRegisters::new();
    /// regs.rsi = 2;
    /// let guest_rsp = 0x7000; // read from GUEST_RSP
    /// assert_eq!(info.0.effective_address_in(0x10, &regs, guest_rsp), Ok(0x7020));
    /// ```
    pub fn effective_address_in(
        &self,
        displacement: u64,
        registers: &GuestRegisters,
        guest_rsp: u64,
    ) -> Result<u64, OperandError> {
        self.effective_address(displacement, |reg| frame_or_rsp(registers, reg, guest_rsp))
    }

    /// [`linear_address`](Self::linear_address) with the registers taken from the trampoline's
    /// [`GuestRegisters`] frame and RSP from `guest_rsp`, the value of the VMCS guest-state field
    /// GUEST_RSP (the frame does not hold RSP).
    pub fn linear_address_in(
        &self,
        displacement: u64,
        segment_base: u64,
        registers: &GuestRegisters,
        guest_rsp: u64,
    ) -> Result<u64, OperandError> {
        self.linear_address(displacement, segment_base, |reg| {
            frame_or_rsp(registers, reg, guest_rsp)
        })
    }
}

/// The guest's value of `reg`: from the frame, or `guest_rsp` for RSP, the one register the frame
/// does not hold.
fn frame_or_rsp(registers: &GuestRegisters, reg: GpReg, guest_rsp: u64) -> u64 {
    match registers.gpr(reg) {
        Some(value) => value,
        None => guest_rsp,
    }
}

impl fmt::Display for MemoryOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:[", DisplaySegment(self.segment))?;
        let mut empty = true;
        if let Some(base) = self.base {
            write!(f, "{base}")?;
            empty = false;
        }
        if let Some(index) = self.index {
            if !empty {
                f.write_str("+")?;
            }
            write!(f, "{index}*{}", self.scale.factor())?;
            empty = false;
        }
        if !empty {
            f.write_str("+")?;
        }
        write!(f, "disp] ({} address)", self.address_size)
    }
}

/// An operand that is either a register or memory (instruction information bit 10: 0 = memory,
/// 1 = register; the register in bits 6:3).
///
/// ```
/// use exits::instruction::VmreadVmwriteInfo;
/// use exits::{GpReg, Operand};
///
/// // In the VMREAD/VMWRITE information, bit 10 = 1: a register operand, its number in bits 6:3
/// // (RDX = 2).
/// let info = VmreadVmwriteInfo::from_raw(1 << 10 | 2 << 3);
/// assert_eq!(info.operand, Operand::Register(GpReg::Rdx));
/// // Bit 10 = 0: a memory operand (here [RAX], 64-bit addressing, no index).
/// let info = VmreadVmwriteInfo::from_raw(2 << 7 | 1 << 22);
/// assert!(matches!(info.operand, Operand::Memory(m) if m.base == Some(GpReg::Rax)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Operand {
    /// Bit 10 = 1: a register operand (bits 6:3).
    Register(GpReg),
    /// Bit 10 = 0: a memory operand.
    Memory(MemoryOperand),
}

impl Operand {
    const fn from_raw(raw: u32) -> Self {
        if raw & 1 << 10 != 0 {
            Self::Register(GpReg::from_field((raw >> 3) as u64))
        } else {
            Self::Memory(MemoryOperand::from_raw(raw))
        }
    }

    const fn to_raw(self) -> u32 {
        match self {
            Self::Register(reg) => (reg as u32) << 3 | 1 << 10,
            Self::Memory(memory) => memory.to_raw(),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Register(reg) => write!(f, "{reg}"),
            Self::Memory(memory) => write!(f, "{memory}"),
        }
    }
}

/// Instruction information for INS and OUTS (SDM table "Format of the VM-Exit Instruction-Information
/// Field as Used for INS and OUTS"). Saved only if IA32_VMX_BASIC bit 54 is 1.
///
/// ```
/// use exits::AddressSize;
/// use exits::instruction::InsOutsInfo;
/// use vmcs::GuestSegment;
///
/// // OUTSB with a 32-bit address size and an ES override.
/// let info = InsOutsInfo::from_raw(1 << 7);
/// assert_eq!((info.address_size, info.segment), (AddressSize::Bits32, Ok(GuestSegment::Es)));
/// assert_eq!(info.to_raw(), 0x80);
/// assert_eq!(info.to_string(), "segment ES, 32-bit address");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InsOutsInfo {
    /// Bits 9:7: address size.
    pub address_size: AddressSize,
    /// Bits 17:15: segment register (undefined for INS, which always uses ES).
    pub segment: SegmentRegister,
}

impl InsOutsInfo {
    /// The bits this format defines.
    pub const DEFINED_BITS: u32 = 0x7 << 7 | 0x7 << 15;

    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            address_size: AddressSize::from_raw((raw >> 7) as u8),
            segment: segment_from_raw((raw >> 15) as u8),
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        (self.address_size.to_raw() as u32) << 7 | (segment_to_raw(self.segment) as u32) << 15
    }
}

impl fmt::Display for InsOutsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {}, {} address",
            DisplaySegment(self.segment),
            self.address_size
        )
    }
}

/// Instruction information for INVEPT, INVPCID and INVVPID: a memory operand (the descriptor) and a
/// register operand (Reg2, bits 31:28, the invalidation type).
///
/// ```
/// use exits::GpReg;
/// use exits::instruction::InvalidationInfo;
///
/// // INVEPT RCX, [RAX]: the type in RCX (Reg2, bits 31:28 = 1), the descriptor at [RAX].
/// let info = InvalidationInfo::from_raw(1 << 28 | 2 << 7 | 3 << 15 | 1 << 22);
/// assert_eq!(info.register, GpReg::Rcx);
/// assert_eq!(info.memory.base, Some(GpReg::Rax));
/// assert_eq!(info.memory.index, None);
/// assert_eq!(info.to_raw(), 0x1001_8100 | 1 << 22);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InvalidationInfo {
    /// The memory operand (the INVEPT/INVPCID/INVVPID descriptor).
    pub memory: MemoryOperand,
    /// Bits 31:28 (Reg2): the register holding the invalidation type.
    pub register: GpReg,
}

impl InvalidationInfo {
    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            memory: MemoryOperand::from_raw(raw),
            register: GpReg::from_field((raw >> 28) as u64),
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        self.memory.to_raw() | (self.register as u32) << 28
    }
}

impl fmt::Display for InvalidationInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type in {}, descriptor at {}",
            self.register, self.memory
        )
    }
}

/// Which of LGDT, LIDT, SGDT, SIDT caused the exit (bits 29:28 of their instruction information).
///
/// ```
/// use exits::instruction::{DescriptorTableInfo, DescriptorTableInstruction};
///
/// // Bits 29:28: 0 SGDT, 1 SIDT, 2 LGDT, 3 LIDT.
/// assert_eq!(DescriptorTableInfo::from_raw(3 << 28).instruction, DescriptorTableInstruction::Lidt);
/// assert_eq!(DescriptorTableInfo::from_raw(0).instruction, DescriptorTableInstruction::Sgdt);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DescriptorTableInstruction {
    /// 0: SGDT.
    Sgdt,
    /// 1: SIDT.
    Sidt,
    /// 2: LGDT.
    Lgdt,
    /// 3: LIDT.
    Lidt,
}

impl fmt::Display for DescriptorTableInstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sgdt => "SGDT",
            Self::Sidt => "SIDT",
            Self::Lgdt => "LGDT",
            Self::Lidt => "LIDT",
        })
    }
}

/// Instruction information for LIDT, LGDT, SIDT and SGDT.
///
/// ```
/// use exits::GpReg;
/// use exits::instruction::{DescriptorTableInfo, DescriptorTableInstruction};
///
/// // LGDT [RDI] with a 64-bit address size.
/// let info = DescriptorTableInfo::from_raw(2 << 28 | 7 << 23 | 1 << 22 | 3 << 15 | 2 << 7);
/// assert_eq!(info.instruction, DescriptorTableInstruction::Lgdt);
/// assert_eq!(info.memory.base, Some(GpReg::Rdi));
/// assert_eq!(info.to_string(), "LGDT DS:[RDI+disp] (64-bit address) (16-bit operand size)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DescriptorTableInfo {
    /// The memory operand.
    pub memory: MemoryOperand,
    /// Bit 11: operand size; `false` = 16-bit, `true` = 32-bit (undefined in 64-bit mode).
    pub operand_size_32: bool,
    /// Bits 29:28: instruction identity.
    pub instruction: DescriptorTableInstruction,
}

impl DescriptorTableInfo {
    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            memory: MemoryOperand::from_raw(raw),
            operand_size_32: raw & 1 << 11 != 0,
            instruction: match (raw >> 28) & 3 {
                0 => DescriptorTableInstruction::Sgdt,
                1 => DescriptorTableInstruction::Sidt,
                2 => DescriptorTableInstruction::Lgdt,
                _ => DescriptorTableInstruction::Lidt,
            },
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        self.memory.to_raw() | (self.operand_size_32 as u32) << 11 | (self.instruction as u32) << 28
    }
}

impl fmt::Display for DescriptorTableInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}-bit operand size)",
            self.instruction,
            self.memory,
            if self.operand_size_32 { 32 } else { 16 }
        )
    }
}

/// Which of LLDT, LTR, SLDT, STR caused the exit (bits 29:28 of their instruction information).
///
/// ```
/// use exits::instruction::{LdtrTrInfo, LdtrTrInstruction};
///
/// // Bits 29:28: 0 SLDT, 1 STR, 2 LLDT, 3 LTR.
/// assert_eq!(LdtrTrInfo::from_raw(3 << 28 | 1 << 10).instruction, LdtrTrInstruction::Ltr);
/// assert_eq!(LdtrTrInfo::from_raw(1 << 28 | 1 << 10).instruction, LdtrTrInstruction::Str);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LdtrTrInstruction {
    /// 0: SLDT.
    Sldt,
    /// 1: STR.
    Str,
    /// 2: LLDT.
    Lldt,
    /// 3: LTR.
    Ltr,
}

impl fmt::Display for LdtrTrInstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sldt => "SLDT",
            Self::Str => "STR",
            Self::Lldt => "LLDT",
            Self::Ltr => "LTR",
        })
    }
}

/// Instruction information for LLDT, LTR, SLDT and STR.
///
/// ```
/// use exits::instruction::{LdtrTrInfo, LdtrTrInstruction};
/// use exits::{GpReg, Operand};
///
/// // LTR AX: a register operand (bit 10) RAX (bits 6:3 = 0), instruction LTR (bits 29:28 = 3).
/// let info = LdtrTrInfo::from_raw(3 << 28 | 1 << 10);
/// assert_eq!((info.instruction, info.operand), (LdtrTrInstruction::Ltr, Operand::Register(GpReg::Rax)));
/// assert_eq!(info.to_raw(), 0x3000_0400);
/// assert_eq!(info.to_string(), "LTR RAX");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LdtrTrInfo {
    /// The operand: register (bits 6:3) or memory, per bit 10.
    pub operand: Operand,
    /// Bits 29:28: instruction identity.
    pub instruction: LdtrTrInstruction,
}

impl LdtrTrInfo {
    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            operand: Operand::from_raw(raw),
            instruction: match (raw >> 28) & 3 {
                0 => LdtrTrInstruction::Sldt,
                1 => LdtrTrInstruction::Str,
                2 => LdtrTrInstruction::Lldt,
                _ => LdtrTrInstruction::Ltr,
            },
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        self.operand.to_raw() | (self.instruction as u32) << 28
    }
}

impl fmt::Display for LdtrTrInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.instruction, self.operand)
    }
}

/// The operand size of RDRAND and RDSEED (bits 12:11 of their instruction information).
///
/// ```
/// use exits::instruction::{OperandSize, RegisterInfo};
///
/// // Bits 12:11 of the RDRAND/RDSEED information: 0, 1, 2 are 16, 32, 64 bits.
/// assert_eq!(RegisterInfo::from_raw(2 << 11).operand_size, OperandSize::Bits64);
/// assert_eq!(RegisterInfo::from_raw(3 << 11).operand_size, OperandSize::Reserved);
/// assert_eq!(OperandSize::Bits32.to_string(), "32-bit");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum OperandSize {
    /// 0: 16-bit.
    Bits16,
    /// 1: 32-bit.
    Bits32,
    /// 2: 64-bit.
    Bits64,
    /// 3: not used by the SDM.
    Reserved,
}

impl fmt::Display for OperandSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bits16 => "16-bit",
            Self::Bits32 => "32-bit",
            Self::Bits64 => "64-bit",
            Self::Reserved => "reserved operand size 3",
        })
    }
}

/// Instruction information for RDRAND, RDSEED, TPAUSE and UMWAIT.
///
/// ```
/// use exits::GpReg;
/// use exits::instruction::{OperandSize, RegisterInfo};
///
/// // RDRAND R9 with a 64-bit operand: register 9 in bits 6:3, operand size 2 in bits 12:11.
/// let info = RegisterInfo::from_raw(9 << 3 | 2 << 11);
/// assert_eq!((info.register, info.operand_size), (GpReg::R9, OperandSize::Bits64));
/// assert_eq!(info.to_raw(), 0x1048);
/// assert_eq!(info.to_string(), "register R9 (64-bit operand)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegisterInfo {
    /// Bits 6:3: the destination register (RDRAND, RDSEED) or the source register (TPAUSE, UMWAIT).
    pub register: GpReg,
    /// Bits 12:11: the operand size (RDRAND, RDSEED; undefined for TPAUSE and UMWAIT).
    pub operand_size: OperandSize,
}

impl RegisterInfo {
    /// The bits this format defines.
    pub const DEFINED_BITS: u32 = 0xf << 3 | 0x3 << 11;

    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            register: GpReg::from_field((raw >> 3) as u64),
            operand_size: match (raw >> 11) & 3 {
                0 => OperandSize::Bits16,
                1 => OperandSize::Bits32,
                2 => OperandSize::Bits64,
                _ => OperandSize::Reserved,
            },
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        (self.register as u32) << 3 | (self.operand_size as u32) << 11
    }
}

impl fmt::Display for RegisterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "register {} ({} operand)",
            self.register, self.operand_size
        )
    }
}

/// Instruction information for VMCLEAR, VMPTRLD, VMPTRST, VMXON, XRSTORS and XSAVES: a memory
/// operand only.
///
/// ```
/// use exits::GpReg;
/// use exits::instruction::MemoryInfo;
///
/// // VMPTRLD [RAX] (also VMCLEAR, VMPTRST, VMXON, XRSTORS, XSAVES, ...): the memory operand alone.
/// let info = MemoryInfo::from_raw(2 << 7 | 3 << 15 | 1 << 22);
/// assert_eq!((info.0.base, info.0.index), (Some(GpReg::Rax), None));
/// assert_eq!(info.to_raw(), 0x41_8100);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct MemoryInfo(pub MemoryOperand);

impl MemoryInfo {
    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self(MemoryOperand::from_raw(raw))
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        self.0.to_raw()
    }
}

impl fmt::Display for MemoryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Instruction information for VMREAD and VMWRITE.
///
/// ```
/// use exits::instruction::VmreadVmwriteInfo;
/// use exits::{GpReg, Operand};
///
/// // VMREAD RBX, RDX: the field encoding in RDX (Reg2, bits 31:28 = 2), the destination register RBX
/// // (bit 10 = register, bits 6:3 = 3).
/// let info = VmreadVmwriteInfo::from_raw(2 << 28 | 1 << 10 | 3 << 3);
/// assert_eq!((info.field_register, info.operand), (GpReg::Rdx, Operand::Register(GpReg::Rbx)));
/// assert_eq!(info.to_string(), "operand RBX, field encoding in RDX");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmreadVmwriteInfo {
    /// Reg1 (bits 6:3) or memory, per bit 10: the destination of VMREAD, the source of VMWRITE.
    pub operand: Operand,
    /// Bits 31:28 (Reg2): the register holding the VMCS-field encoding.
    pub field_register: GpReg,
}

impl VmreadVmwriteInfo {
    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            operand: Operand::from_raw(raw),
            field_register: GpReg::from_field((raw >> 28) as u64),
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        self.operand.to_raw() | (self.field_register as u32) << 28
    }
}

impl fmt::Display for VmreadVmwriteInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "operand {}, field encoding in {}",
            self.operand, self.field_register
        )
    }
}

/// Instruction information for LOADIWKEY: two XMM registers.
///
/// ```
/// use exits::instruction::LoadiwkeyInfo;
///
/// // LOADIWKEY XMM1, XMM2: XMM1 in bits 6:3, XMM2 in bits 31:28.
/// let info = LoadiwkeyInfo::from_raw(2 << 28 | 1 << 3);
/// assert_eq!((info.xmm1, info.xmm2), (1, 2));
/// assert_eq!(info.to_raw(), 0x2000_0008);
/// assert_eq!(info.to_string(), "XMM1, XMM2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LoadiwkeyInfo {
    /// Bits 6:3 (Reg1): the number of the first XMM register operand.
    pub xmm1: u8,
    /// Bits 31:28 (Reg2): the number of the second XMM register operand.
    pub xmm2: u8,
}

impl LoadiwkeyInfo {
    /// The bits this format defines.
    pub const DEFINED_BITS: u32 = 0xf << 3 | 0xf << 28;

    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            xmm1: ((raw >> 3) & 0xf) as u8,
            xmm2: ((raw >> 28) & 0xf) as u8,
        }
    }

    /// Encodes the field (undefined bits 0; register numbers above 15 are truncated to 4 bits).
    pub const fn to_raw(self) -> u32 {
        ((self.xmm1 & 0xf) as u32) << 3 | ((self.xmm2 & 0xf) as u32) << 28
    }
}

impl fmt::Display for LoadiwkeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "XMM{}, XMM{}", self.xmm1, self.xmm2)
    }
}

/// Instruction information for the immediate forms of RDMSR and WRMSRNS (exit reasons 84 and 85):
/// the register operand in bits 6:3. The MSR index is the exit qualification.
///
/// ```
/// use exits::GpReg;
/// use exits::instruction::MsrImmediateInfo;
///
/// // RDMSR R12, imm32 (the MSR index is in the exit qualification): the register in bits 6:3.
/// let info = MsrImmediateInfo::from_raw(12 << 3);
/// assert_eq!(info.register, GpReg::R12);
/// assert_eq!(info.to_raw(), 0x60);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MsrImmediateInfo {
    /// Bits 6:3: the destination (RDMSR) or source (WRMSRNS) register.
    pub register: GpReg,
}

impl MsrImmediateInfo {
    /// The bits this format defines.
    pub const DEFINED_BITS: u32 = 0xf << 3;

    /// Decodes the field; undefined bits are ignored.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            register: GpReg::from_field(bits(raw, 3, 4) as u64),
        }
    }

    /// Encodes the field (undefined bits 0).
    pub const fn to_raw(self) -> u32 {
        (self.register as u32) << 3
    }
}

impl fmt::Display for MsrImmediateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "register {}", self.register)
    }
}
