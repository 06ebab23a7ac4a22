//! Exit qualifications (SDM Vol. 3C, "Basic VM-Exit Information", the tables "Exit Qualification
//! for …").
//!
//! Each format is a type with `from_raw(u64)` (total: every value decodes, undefined and reserved
//! bits are ignored), `to_raw()` (re-encodes; reserved bits 0) and `DEFINED_BITS`, the bits the
//! format gives a meaning to, so that `from_raw(x).to_raw() == x & DEFINED_BITS`.
//!
//! Formats that are a single number have no type of their own: the page-fault linear address, the
//! INVLPG linear address, the displacement of instructions with a memory operand (INVEPT, INVPCID,
//! INVVPID, LGDT …, VMCLEAR …), the SIPI and EOI vectors, the APIC-write offset and the MSR index of
//! the immediate-form MSR instructions are fields of the [`VmExit`](crate::VmExit) variants.
//! Bus-lock VM exits (reason 74) and EPT misconfigurations have no qualification bits; bus locks
//! are also reported by bit 26 of the exit reason ([`ExitReason::bus_lock_detected`](crate::ExitReason)).

use core::fmt;

use vmx_core::GpReg;

const fn bit(raw: u64, n: u32) -> bool {
    raw & 1 << n != 0
}

/// Writes the names of the set flags separated by ", ", or `none` if none is set.
fn write_flags(f: &mut fmt::Formatter<'_>, flags: &[(bool, &str)]) -> fmt::Result {
    let mut first = true;
    for (set, name) in flags {
        if *set {
            if !first {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            first = false;
        }
    }
    if first {
        f.write_str("none")?;
    }
    Ok(())
}

/// Exit qualification for debug exceptions (#DB VM exits; SDM table "Exit Qualification for Debug
/// Exceptions").
///
/// ```
/// use exits::DebugQualification;
///
/// // A single-step trap that also met the condition of breakpoint 1 (B1 and BS).
/// let q = DebugQualification::from_raw(0x4002);
/// assert!(q.breakpoint(1) && q.single_step && !q.breakpoint(0));
/// assert_eq!(q.to_raw(), 0x4002);
/// assert_eq!(q.to_string(), "B1, BS (single step)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DebugQualification {
    /// Bits 3:0 (B3–B0): bit n set = the condition of breakpoint n (DR7) was met.
    pub breakpoints: u8,
    /// Bit 11 (BLD): an OS bus-lock trap (#DB) was detected.
    pub bus_lock: bool,
    /// Bit 13 (BD): debug-register access detected.
    pub debug_register_access: bool,
    /// Bit 14 (BS): single step (RFLAGS.TF or branch trace).
    pub single_step: bool,
    /// Bit 16 (RTM): the debug exception occurred inside an RTM region.
    pub rtm: bool,
}

impl DebugQualification {
    /// Bits 3:0, 11, 13, 14 and 16.
    pub const DEFINED_BITS: u64 = 0xf | 1 << 11 | 1 << 13 | 1 << 14 | 1 << 16;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            breakpoints: (raw & 0xf) as u8,
            bus_lock: bit(raw, 11),
            debug_register_access: bit(raw, 13),
            single_step: bit(raw, 14),
            rtm: bit(raw, 16),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.breakpoints & 0xf) as u64
            | (self.bus_lock as u64) << 11
            | (self.debug_register_access as u64) << 13
            | (self.single_step as u64) << 14
            | (self.rtm as u64) << 16
    }

    /// Whether the condition of breakpoint `n` (0–3) was met.
    pub const fn breakpoint(&self, n: u8) -> bool {
        n < 4 && self.breakpoints & 1 << n != 0
    }
}

impl fmt::Display for DebugQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flags(
            f,
            &[
                (self.breakpoint(0), "B0"),
                (self.breakpoint(1), "B1"),
                (self.breakpoint(2), "B2"),
                (self.breakpoint(3), "B3"),
                (self.bus_lock, "BLD (bus lock)"),
                (self.debug_register_access, "BD (debug-register access)"),
                (self.single_step, "BS (single step)"),
                (self.rtm, "RTM"),
            ],
        )
    }
}

/// The source of a task switch (bits 31:30 of the task-switch exit qualification).
///
/// ```
/// use exits::{TaskSwitchQualification, TaskSwitchSource};
///
/// // Bits 31:30 = 1: an IRET back to the previous task.
/// assert_eq!(TaskSwitchQualification::from_raw(1 << 30 | 0x28).source, TaskSwitchSource::Iret);
/// assert_eq!(TaskSwitchSource::Jmp.to_string(), "JMP");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TaskSwitchSource {
    /// 0: CALL instruction.
    Call,
    /// 1: IRET instruction.
    Iret,
    /// 2: JMP instruction.
    Jmp,
    /// 3: task gate in the IDT.
    TaskGate,
}

impl fmt::Display for TaskSwitchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Call => "CALL",
            Self::Iret => "IRET",
            Self::Jmp => "JMP",
            Self::TaskGate => "task gate in IDT",
        })
    }
}

/// Exit qualification for task switches (SDM table "Exit Qualification for Task Switches").
///
/// ```
/// use exits::{TaskSwitchQualification, TaskSwitchSource};
///
/// // A far JMP to the TSS with selector 0x28.
/// let q = TaskSwitchQualification::from_raw(2 << 30 | 0x28);
/// assert_eq!((q.selector, q.source), (0x28, TaskSwitchSource::Jmp));
/// assert_eq!(q.to_raw(), 0x8000_0028);
/// assert_eq!(q.to_string(), "to TSS selector 0x0028 by JMP");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TaskSwitchQualification {
    /// Bits 15:0: selector of the task-state segment (TSS) to which the guest attempted to switch.
    pub selector: u16,
    /// Bits 31:30: source of the task switch.
    pub source: TaskSwitchSource,
}

impl TaskSwitchQualification {
    /// Bits 15:0 and 31:30.
    pub const DEFINED_BITS: u64 = 0xffff | 3 << 30;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            selector: raw as u16,
            source: match (raw >> 30) & 3 {
                0 => TaskSwitchSource::Call,
                1 => TaskSwitchSource::Iret,
                2 => TaskSwitchSource::Jmp,
                _ => TaskSwitchSource::TaskGate,
            },
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        self.selector as u64 | (self.source as u64) << 30
    }
}

impl fmt::Display for TaskSwitchQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "to TSS selector {:#06x} by {}",
            self.selector, self.source
        )
    }
}

/// The access type of a control-register access (bits 5:4 of its exit qualification).
///
/// ```
/// use exits::{CrAccessQualification, CrAccessType};
///
/// // Bits 5:4 = 2: CLTS.
/// assert_eq!(CrAccessQualification::from_raw(2 << 4).access_type, CrAccessType::Clts);
/// assert_eq!(CrAccessType::MovToCr.to_string(), "MOV to CR");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CrAccessType {
    /// 0: MOV to CR.
    MovToCr,
    /// 1: MOV from CR.
    MovFromCr,
    /// 2: CLTS.
    Clts,
    /// 3: LMSW.
    Lmsw,
}

/// The LMSW operand type (bit 6 of the control-register-access exit qualification).
///
/// ```
/// use exits::{CrAccessQualification, CrAccessType, LmswOperandType};
///
/// // LMSW with a memory operand (bit 6), source data 1 (CR0.PE).
/// let q = CrAccessQualification::from_raw(1 << 16 | 1 << 6 | 3 << 4);
/// assert_eq!((q.access_type, q.lmsw_operand), (CrAccessType::Lmsw, LmswOperandType::Memory));
/// assert_eq!(q.lmsw_source, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LmswOperandType {
    /// 0: register.
    Register,
    /// 1: memory (the guest-linear-address field holds the operand's linear address).
    Memory,
}

/// Exit qualification for control-register accesses (SDM table "Exit Qualification for
/// Control-Register Accesses").
///
/// ```
/// use exits::{CrAccessQualification, CrAccessType, GpReg};
///
/// // MOV CR3, RBX: control register 3 (bits 3:0), MOV to CR (bits 5:4 = 0), RBX (bits 11:8 = 3).
/// let q = CrAccessQualification::from_raw(0x303);
/// assert_eq!((q.cr, q.access_type, q.gpr), (3, CrAccessType::MovToCr, GpReg::Rbx));
/// assert_eq!(q.to_raw(), 0x303);
/// assert_eq!(q.to_string(), "MOV CR3, RBX");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrAccessQualification {
    /// Bits 3:0: number of the control register (0 for CLTS and LMSW).
    pub cr: u8,
    /// Bits 5:4: access type.
    pub access_type: CrAccessType,
    /// Bit 6: LMSW operand type (meaningful for LMSW only; 0 otherwise).
    pub lmsw_operand: LmswOperandType,
    /// Bits 11:8: the general-purpose register of MOV CR (0 for CLTS and LMSW).
    pub gpr: GpReg,
    /// Bits 31:16: the LMSW source data (0 for the other access types).
    pub lmsw_source: u16,
}

impl CrAccessQualification {
    /// Bits 6:0, 11:8 and 31:16.
    pub const DEFINED_BITS: u64 = 0x7f | 0xf << 8 | 0xffff << 16;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            cr: (raw & 0xf) as u8,
            access_type: match (raw >> 4) & 3 {
                0 => CrAccessType::MovToCr,
                1 => CrAccessType::MovFromCr,
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw,
            },
            lmsw_operand: if bit(raw, 6) {
                LmswOperandType::Memory
            } else {
                LmswOperandType::Register
            },
            gpr: GpReg::from_field(raw >> 8),
            lmsw_source: (raw >> 16) as u16,
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.cr & 0xf) as u64
            | (self.access_type as u64) << 4
            | (self.lmsw_operand as u64) << 6
            | (self.gpr as u64) << 8
            | (self.lmsw_source as u64) << 16
    }
}

impl fmt::Display for CrAccessQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access_type {
            CrAccessType::MovToCr => write!(f, "MOV CR{}, {}", self.cr, self.gpr),
            CrAccessType::MovFromCr => write!(f, "MOV {}, CR{}", self.gpr, self.cr),
            CrAccessType::Clts => f.write_str("CLTS"),
            CrAccessType::Lmsw => write!(
                f,
                "LMSW {:#06x} ({} operand)",
                self.lmsw_source, self.lmsw_operand
            ),
        }
    }
}

/// The direction of a MOV DR (bit 4 of its exit qualification).
///
/// ```
/// use exits::{MovDrDirection, MovDrQualification};
///
/// // Bit 4 = 1: MOV from a debug register.
/// assert_eq!(MovDrQualification::from_raw(1 << 4 | 6).direction, MovDrDirection::FromDr);
/// assert_eq!(MovDrQualification::from_raw(6).direction, MovDrDirection::ToDr);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MovDrDirection {
    /// 0: MOV to DR.
    ToDr,
    /// 1: MOV from DR.
    FromDr,
}

/// Exit qualification for MOV DR (SDM table "Exit Qualification for MOV DR").
///
/// ```
/// use exits::{GpReg, MovDrDirection, MovDrQualification};
///
/// // MOV DR7, RCX: DR7 (bits 2:0), to DR (bit 4 = 0), RCX (bits 11:8 = 1).
/// let q = MovDrQualification::from_raw(0x107);
/// assert_eq!((q.dr, q.direction, q.gpr), (7, MovDrDirection::ToDr, GpReg::Rcx));
/// assert_eq!(q.to_raw(), 0x107);
/// assert_eq!(q.to_string(), "MOV DR7, RCX");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MovDrQualification {
    /// Bits 2:0: number of the debug register.
    pub dr: u8,
    /// Bit 4: direction of access.
    pub direction: MovDrDirection,
    /// Bits 11:8: the general-purpose register.
    pub gpr: GpReg,
}

impl MovDrQualification {
    /// Bits 2:0, 4 and 11:8.
    pub const DEFINED_BITS: u64 = 0x7 | 1 << 4 | 0xf << 8;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            dr: (raw & 7) as u8,
            direction: if bit(raw, 4) {
                MovDrDirection::FromDr
            } else {
                MovDrDirection::ToDr
            },
            gpr: GpReg::from_field(raw >> 8),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.dr & 7) as u64 | (self.direction as u64) << 4 | (self.gpr as u64) << 8
    }
}

impl fmt::Display for MovDrQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            MovDrDirection::ToDr => write!(f, "MOV DR{}, {}", self.dr, self.gpr),
            MovDrDirection::FromDr => write!(f, "MOV {}, DR{}", self.gpr, self.dr),
        }
    }
}

/// The size of an I/O access (bits 2:0 of the I/O exit qualification).
///
/// ```
/// use exits::IoSize;
///
/// // Bits 2:0 of the I/O qualification: 0, 1 and 3 are 1, 2 and 4 bytes; 2 is not used.
/// assert_eq!(IoSize::from_raw(3).bytes(), Some(4));
/// assert_eq!(IoSize::from_raw(1), IoSize::Word);
/// assert_eq!(IoSize::from_raw(2), IoSize::Reserved(2));
/// assert_eq!(IoSize::Reserved(2).bytes(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum IoSize {
    /// 0: 1-byte.
    Byte,
    /// 1: 2-byte.
    Word,
    /// 3: 4-byte.
    Dword,
    /// 2 or 4–7: not used by the SDM.
    Reserved(u8),
}

impl IoSize {
    /// Decodes the 3-bit field; only the low 3 bits of `raw` are used.
    pub const fn from_raw(raw: u8) -> Self {
        match raw & 7 {
            0 => Self::Byte,
            1 => Self::Word,
            3 => Self::Dword,
            other => Self::Reserved(other),
        }
    }

    /// The 3-bit encoding.
    pub const fn to_raw(self) -> u8 {
        match self {
            Self::Byte => 0,
            Self::Word => 1,
            Self::Dword => 3,
            Self::Reserved(raw) => raw & 7,
        }
    }

    /// The access size in bytes, or `None` for a reserved encoding.
    pub const fn bytes(self) -> Option<u8> {
        match self {
            Self::Byte => Some(1),
            Self::Word => Some(2),
            Self::Dword => Some(4),
            Self::Reserved(_) => None,
        }
    }
}

/// The direction of an I/O instruction (bit 3 of its exit qualification).
///
/// ```
/// use exits::{IoDirection, IoQualification};
///
/// // Bit 3: 1 = IN, 0 = OUT.
/// assert_eq!(IoQualification::from_raw(1 << 3).direction, IoDirection::In);
/// assert_eq!(IoQualification::from_raw(0).direction, IoDirection::Out);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum IoDirection {
    /// 0: OUT (or OUTS).
    Out,
    /// 1: IN (or INS).
    In,
}

/// How the port of an I/O instruction is given (bit 6 of its exit qualification).
///
/// ```
/// use exits::{IoOperandEncoding, IoQualification};
///
/// // Bit 6: the port came from an immediate (IN AL, 0x60) rather than DX.
/// assert_eq!(IoQualification::from_raw(0x60_0048).operand_encoding, IoOperandEncoding::Immediate);
/// assert_eq!(IoQualification::from_raw(0x3f8_0000).operand_encoding, IoOperandEncoding::Dx);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum IoOperandEncoding {
    /// 0: in DX.
    Dx,
    /// 1: as an immediate.
    Immediate,
}

/// Exit qualification for I/O instructions, also used for I/O SMIs (SDM table "Exit
/// Qualification for I/O Instructions").
///
/// ```
/// use exits::{IoDirection, IoQualification, IoSize};
///
/// // REP OUTSB to port 0x3F8 (DX): 1 byte, OUT, string (bit 4), REP (bit 5), port in bits 31:16.
/// let q = IoQualification::from_raw(0x3f8_0030);
/// assert_eq!((q.size, q.direction, q.port), (IoSize::Byte, IoDirection::Out, 0x3f8));
/// assert!(q.string && q.rep);
/// assert_eq!(q.to_raw(), 0x3f8_0030);
/// assert_eq!(q.to_string(), "REP OUTS (DX), port 0x3f8, 1 byte");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IoQualification {
    /// Bits 2:0: size of access.
    pub size: IoSize,
    /// Bit 3: direction of the attempted access.
    pub direction: IoDirection,
    /// Bit 4: string instruction (INS, OUTS).
    pub string: bool,
    /// Bit 5: REP prefixed.
    pub rep: bool,
    /// Bit 6: operand encoding.
    pub operand_encoding: IoOperandEncoding,
    /// Bits 31:16: port number.
    pub port: u16,
}

impl IoQualification {
    /// Bits 6:0 and 31:16.
    pub const DEFINED_BITS: u64 = 0x7f | 0xffff << 16;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            size: IoSize::from_raw(raw as u8),
            direction: if bit(raw, 3) {
                IoDirection::In
            } else {
                IoDirection::Out
            },
            string: bit(raw, 4),
            rep: bit(raw, 5),
            operand_encoding: if bit(raw, 6) {
                IoOperandEncoding::Immediate
            } else {
                IoOperandEncoding::Dx
            },
            port: (raw >> 16) as u16,
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        self.size.to_raw() as u64
            | (self.direction as u64) << 3
            | (self.string as u64) << 4
            | (self.rep as u64) << 5
            | (self.operand_encoding as u64) << 6
            | (self.port as u64) << 16
    }
}

impl fmt::Display for IoQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rep {
            f.write_str("REP ")?;
        }
        let mnemonic = match (self.direction, self.string) {
            (IoDirection::In, false) => "IN",
            (IoDirection::In, true) => "INS",
            (IoDirection::Out, false) => "OUT",
            (IoDirection::Out, true) => "OUTS",
        };
        f.write_str(mnemonic)?;
        let port = match self.operand_encoding {
            IoOperandEncoding::Dx => "DX",
            IoOperandEncoding::Immediate => "imm8",
        };
        if !self.string {
            let accumulator = match self.size {
                IoSize::Byte => "AL",
                IoSize::Word => "AX",
                IoSize::Dword => "EAX",
                IoSize::Reserved(_) => "?",
            };
            match self.direction {
                IoDirection::In => write!(f, " {accumulator}, {port}")?,
                IoDirection::Out => write!(f, " {port}, {accumulator}")?,
            }
        } else {
            write!(f, " ({port})")?;
        }
        write!(f, ", port {:#x}, {}", self.port, self.size)
    }
}

/// Exit qualification for MWAIT (SDM table "Exit Qualification for MWAIT").
///
/// ```
/// use exits::MwaitQualification;
///
/// // Bit 0: MWAIT executed with the monitoring hardware armed.
/// assert!(MwaitQualification::from_raw(1).monitor_armed);
/// assert!(!MwaitQualification::from_raw(0).monitor_armed);
/// assert_eq!(MwaitQualification::from_raw(1).to_raw(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MwaitQualification {
    /// Bit 0: the monitoring hardware was armed.
    pub monitor_armed: bool,
}

impl MwaitQualification {
    /// Bit 0.
    pub const DEFINED_BITS: u64 = 1;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            monitor_armed: bit(raw, 0),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        self.monitor_armed as u64
    }
}

impl fmt::Display for MwaitQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.monitor_armed {
            "monitoring hardware armed"
        } else {
            "monitoring hardware not armed"
        })
    }
}

/// The access type of an APIC-access VM exit (bits 15:12 of its exit qualification).
///
/// ```
/// use exits::ApicAccessType;
///
/// // Bits 15:12 of the APIC-access qualification: 1 is a linear write, 10 a guest-physical access
/// // during event delivery (no page offset then).
/// assert_eq!(ApicAccessType::from_raw(1), ApicAccessType::LinearWrite);
/// assert!(ApicAccessType::LinearWrite.is_linear());
/// assert!(!ApicAccessType::from_raw(10).is_linear());
/// assert_eq!(ApicAccessType::from_raw(5), ApicAccessType::Reserved(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ApicAccessType {
    /// 0: linear access for a data read during instruction execution.
    LinearRead,
    /// 1: linear access for a data write during instruction execution.
    LinearWrite,
    /// 2: linear access for an instruction fetch.
    LinearFetch,
    /// 3: linear access (read or write) during event delivery.
    LinearEventDelivery,
    /// 10: guest-physical access during event delivery.
    GuestPhysicalEventDelivery,
    /// 15: guest-physical access for an instruction fetch or during instruction execution.
    GuestPhysicalInstruction,
    /// 4–9, 11–14: not used by the SDM.
    Reserved(u8),
}

impl ApicAccessType {
    /// Decodes the 4-bit field; only the low 4 bits of `raw` are used.
    pub const fn from_raw(raw: u8) -> Self {
        match raw & 0xf {
            0 => Self::LinearRead,
            1 => Self::LinearWrite,
            2 => Self::LinearFetch,
            3 => Self::LinearEventDelivery,
            10 => Self::GuestPhysicalEventDelivery,
            15 => Self::GuestPhysicalInstruction,
            other => Self::Reserved(other),
        }
    }

    /// The 4-bit encoding.
    pub const fn to_raw(self) -> u8 {
        match self {
            Self::LinearRead => 0,
            Self::LinearWrite => 1,
            Self::LinearFetch => 2,
            Self::LinearEventDelivery => 3,
            Self::GuestPhysicalEventDelivery => 10,
            Self::GuestPhysicalInstruction => 15,
            Self::Reserved(raw) => raw & 0xf,
        }
    }

    /// Whether this is a linear access (types 0–3), for which the offset is defined.
    pub const fn is_linear(self) -> bool {
        matches!(
            self,
            Self::LinearRead | Self::LinearWrite | Self::LinearFetch | Self::LinearEventDelivery
        )
    }
}

impl fmt::Display for ApicAccessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LinearRead => f.write_str("linear read"),
            Self::LinearWrite => f.write_str("linear write"),
            Self::LinearFetch => f.write_str("linear instruction fetch"),
            Self::LinearEventDelivery => f.write_str("linear access during event delivery"),
            Self::GuestPhysicalEventDelivery => {
                f.write_str("guest-physical access during event delivery")
            }
            Self::GuestPhysicalInstruction => {
                f.write_str("guest-physical access for instruction fetch or execution")
            }
            Self::Reserved(raw) => write!(f, "reserved access type {raw}"),
        }
    }
}

/// Exit qualification for APIC-access VM exits, from linear and from guest-physical accesses (SDM
/// table "Exit Qualification for APIC-Access VM Exits from Linear Accesses and Guest-Physical
/// Accesses").
///
/// ```
/// use exits::{ApicAccessQualification, ApicAccessType};
///
/// // A linear write to offset 0xB0 of the APIC-access page: the EOI register.
/// let q = ApicAccessQualification::from_raw(1 << 12 | 0xb0);
/// assert_eq!((q.access_type, q.offset()), (ApicAccessType::LinearWrite, Some(0xb0)));
/// assert_eq!(q.to_raw(), 0x10b0);
/// assert_eq!(q.to_string(), "linear write at offset 0x0b0");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ApicAccessQualification {
    /// Bits 11:0: offset of the access within the APIC page (undefined for guest-physical
    /// accesses; see [`ApicAccessQualification::offset`]).
    pub raw_offset: u16,
    /// Bits 15:12: access type.
    pub access_type: ApicAccessType,
    /// Bit 16: the access was asynchronous to instruction execution and not part of event
    /// delivery.
    pub asynchronous: bool,
}

impl ApicAccessQualification {
    /// Bits 16:0.
    pub const DEFINED_BITS: u64 = 0x1_ffff;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            raw_offset: (raw & 0xfff) as u16,
            access_type: ApicAccessType::from_raw((raw >> 12) as u8),
            asynchronous: bit(raw, 16),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.raw_offset & 0xfff) as u64
            | (self.access_type.to_raw() as u64) << 12
            | (self.asynchronous as u64) << 16
    }

    /// The offset within the APIC page, defined for linear accesses only.
    pub const fn offset(&self) -> Option<u16> {
        if self.access_type.is_linear() {
            Some(self.raw_offset & 0xfff)
        } else {
            None
        }
    }
}

impl fmt::Display for ApicAccessQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.access_type)?;
        if let Some(offset) = self.offset() {
            write!(f, " at offset {offset:#05x}")?;
        }
        if self.asynchronous {
            f.write_str(", asynchronous")?;
        }
        Ok(())
    }
}

/// Exit qualification for EPT violations (SDM table "Exit Qualification for EPT Violations").
///
/// ```
/// use exits::EptViolationQualification;
///
/// // A data write to a page EPT maps readable and executable but not writable, from a linear
/// // address (bits 1, 3, 5, 7 and 8).
/// let q = EptViolationQualification::from_raw(0x1aa);
/// assert!(q.write && !q.read && !q.fetch);
/// assert!(q.readable && !q.writable && q.executable && q.present());
/// assert!(q.guest_linear_valid && q.translated_access);
/// assert_eq!(q.to_raw(), 0x1aa);
/// assert_eq!(q.to_string(), "access write; EPT permissions R, X; to the translation of a guest-linear address");
/// // The same write to a guest-physical address EPT does not map at all.
/// assert!(!EptViolationQualification::from_raw(0x182).present());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EptViolationQualification {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bit 3: the guest-physical address was readable (AND of bit 0 of the EPT entries used).
    pub readable: bool,
    /// Bit 4: the guest-physical address was writable (AND of bit 1).
    pub writable: bool,
    /// Bit 5: the guest-physical address was executable (AND of bit 2; for supervisor-mode
    /// linear addresses if "mode-based execute control" is 1).
    pub executable: bool,
    /// Bit 6: the guest-physical address was executable for user-mode linear addresses (AND of bit
    /// 10; undefined unless "mode-based execute control" is 1).
    pub user_executable: bool,
    /// Bit 7: the guest-linear-address field is valid.
    pub guest_linear_valid: bool,
    /// Bit 8 (if bit 7 is 1): 1 = the access was to the guest-physical translation of the linear
    /// address; 0 = to a guest paging-structure entry.
    pub translated_access: bool,
    /// Bit 9 (advanced VM-exit information, if bits 7 and 8 are 1): the linear address is a
    /// user-mode address.
    pub user_mode_linear: bool,
    /// Bit 10 (advanced information): the linear address is writable (read/write).
    pub writable_linear: bool,
    /// Bit 11 (advanced information): the linear address is execute-disable.
    pub execute_disable_linear: bool,
    /// Bit 12: NMI unblocking due to IRET (undefined if "NMI exiting" is 1 and "virtual NMIs" is
    /// 0, or if the exit also reports a valid IDT-vectoring event).
    pub nmi_unblocking: bool,
    /// Bit 13: the access was a shadow-stack access.
    pub shadow_stack_access: bool,
    /// Bit 14: the supervisor-shadow-stack bit (60) of the EPT entry mapping the page (if
    /// supervisor shadow-stack control is enabled in the EPTP).
    pub supervisor_shadow_stack: bool,
    /// Bit 15: the access was part of guest-paging verification.
    pub guest_paging_verification: bool,
    /// Bit 16: the access was asynchronous to instruction execution and not part of event
    /// delivery.
    pub asynchronous: bool,
}

impl EptViolationQualification {
    /// Bits 16:0.
    pub const DEFINED_BITS: u64 = 0x1_ffff;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            read: bit(raw, 0),
            write: bit(raw, 1),
            fetch: bit(raw, 2),
            readable: bit(raw, 3),
            writable: bit(raw, 4),
            executable: bit(raw, 5),
            user_executable: bit(raw, 6),
            guest_linear_valid: bit(raw, 7),
            translated_access: bit(raw, 8),
            user_mode_linear: bit(raw, 9),
            writable_linear: bit(raw, 10),
            execute_disable_linear: bit(raw, 11),
            nmi_unblocking: bit(raw, 12),
            shadow_stack_access: bit(raw, 13),
            supervisor_shadow_stack: bit(raw, 14),
            guest_paging_verification: bit(raw, 15),
            asynchronous: bit(raw, 16),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        let flags = [
            self.read,
            self.write,
            self.fetch,
            self.readable,
            self.writable,
            self.executable,
            self.user_executable,
            self.guest_linear_valid,
            self.translated_access,
            self.user_mode_linear,
            self.writable_linear,
            self.execute_disable_linear,
            self.nmi_unblocking,
            self.shadow_stack_access,
            self.supervisor_shadow_stack,
            self.guest_paging_verification,
            self.asynchronous,
        ];
        let mut raw = 0;
        let mut n = 0;
        while n < flags.len() {
            raw |= (flags[n] as u64) << n;
            n += 1;
        }
        raw
    }

    /// Whether the guest-physical address was mapped at all (any of bits 5:3, or bit 6, set).
    pub const fn present(&self) -> bool {
        self.readable || self.writable || self.executable || self.user_executable
    }
}

impl fmt::Display for EptViolationQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("access ")?;
        write_flags(
            f,
            &[
                (self.read, "read"),
                (self.write, "write"),
                (self.fetch, "fetch"),
            ],
        )?;
        f.write_str("; EPT permissions ")?;
        write_flags(
            f,
            &[
                (self.readable, "R"),
                (self.writable, "W"),
                (self.executable, "X"),
                (self.user_executable, "XU"),
            ],
        )?;
        if self.guest_linear_valid {
            f.write_str(if self.translated_access {
                "; to the translation of a guest-linear address"
            } else {
                "; to a guest paging-structure entry"
            })?;
        }
        let extra = [
            (self.user_mode_linear, "user-mode linear address"),
            (self.writable_linear, "writable linear address"),
            (
                self.execute_disable_linear,
                "execute-disable linear address",
            ),
            (self.nmi_unblocking, "NMI unblocking due to IRET"),
            (self.shadow_stack_access, "shadow-stack access"),
            (self.supervisor_shadow_stack, "supervisor shadow-stack page"),
            (self.guest_paging_verification, "guest-paging verification"),
            (self.asynchronous, "asynchronous"),
        ];
        for (set, name) in extra {
            if set {
                write!(f, "; {name}")?;
            }
        }
        Ok(())
    }
}

/// Exit qualification for page-modification-log-full VM exits: only bit 12 is defined.
///
/// ```
/// use exits::PmlFullQualification;
///
/// // Bit 12: the log filled up while an IRET's delivery had unblocked NMIs.
/// assert!(PmlFullQualification::from_raw(1 << 12).nmi_unblocking);
/// assert_eq!(PmlFullQualification::from_raw(0), PmlFullQualification::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PmlFullQualification {
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl PmlFullQualification {
    /// Bit 12.
    pub const DEFINED_BITS: u64 = 1 << 12;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            nmi_unblocking: bit(raw, 12),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.nmi_unblocking as u64) << 12
    }
}

impl fmt::Display for PmlFullQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flags(f, &[(self.nmi_unblocking, "NMI unblocking due to IRET")])
    }
}

/// The kind of SPP-related event (bit 11 of its exit qualification).
///
/// ```
/// use exits::{SppEventKind, SppQualification};
///
/// // Bit 11 of the SPP-related qualification: 1 = SPPT miss, 0 = SPPT misconfiguration.
/// assert_eq!(SppQualification::from_raw(1 << 11).kind, SppEventKind::Miss);
/// assert_eq!(SppQualification::from_raw(0).kind, SppEventKind::Misconfiguration);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SppEventKind {
    /// 0: SPPT misconfiguration.
    Misconfiguration,
    /// 1: SPPT miss.
    Miss,
}

/// Exit qualification for SPP-related events (sub-page write permissions).
///
/// ```
/// use exits::{SppEventKind, SppQualification};
///
/// // An SPPT miss (bit 11) with NMI unblocking due to IRET (bit 12).
/// let q = SppQualification::from_raw(3 << 11);
/// assert_eq!((q.kind, q.nmi_unblocking), (SppEventKind::Miss, true));
/// assert_eq!(q.to_raw(), 0x1800);
/// assert_eq!(q.to_string(), "SPPT miss, NMI unblocking due to IRET");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SppQualification {
    /// Bit 11: the kind of event.
    pub kind: SppEventKind,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl SppQualification {
    /// Bits 11 and 12.
    pub const DEFINED_BITS: u64 = 3 << 11;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            kind: if bit(raw, 11) {
                SppEventKind::Miss
            } else {
                SppEventKind::Misconfiguration
            },
            nmi_unblocking: bit(raw, 12),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.kind as u64) << 11 | (self.nmi_unblocking as u64) << 12
    }
}

impl fmt::Display for SppQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.nmi_unblocking {
            f.write_str(", NMI unblocking due to IRET")?;
        }
        Ok(())
    }
}

/// Exit qualification for instruction-timeout ("notify") VM exits.
///
/// ```
/// use exits::NotifyQualification;
///
/// // Bit 0: the notify window expired and the VM context is no longer valid.
/// let q = NotifyQualification::from_raw(1);
/// assert!(q.context_invalid && !q.nmi_unblocking);
/// assert_eq!(q.to_string(), "VM context invalid");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyQualification {
    /// Bit 0: the VM context is invalid; the guest cannot be resumed safely.
    pub context_invalid: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl NotifyQualification {
    /// Bits 0 and 12.
    pub const DEFINED_BITS: u64 = 1 | 1 << 12;

    /// Decodes the qualification; bits outside [`Self::DEFINED_BITS`] are ignored.
    pub const fn from_raw(raw: u64) -> Self {
        Self {
            context_invalid: bit(raw, 0),
            nmi_unblocking: bit(raw, 12),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        self.context_invalid as u64 | (self.nmi_unblocking as u64) << 12
    }
}

impl fmt::Display for NotifyQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_flags(
            f,
            &[
                (self.context_invalid, "VM context invalid"),
                (self.nmi_unblocking, "NMI unblocking due to IRET"),
            ],
        )
    }
}

/// Exit qualification for a VM-entry failure due to invalid guest state (SDM "VM-Entry Failures
/// During or After Loading Guest State").
///
/// ```
/// use exits::EntryFailureQualification;
///
/// // VM-entry failure due to invalid guest state (exit reason 33), qualification 4.
/// let q = EntryFailureQualification::from_raw(4);
/// assert_eq!(q, EntryFailureQualification::InvalidVmcsLinkPointer);
/// assert_eq!(q.to_string(), "invalid VMCS link pointer");
/// assert_eq!(EntryFailureQualification::from_raw(1), EntryFailureQualification::Unknown(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EntryFailureQualification {
    /// 0: default (no further information).
    Default,
    /// 2: failure loading the PDPTEs.
    PdpteLoading,
    /// 3: attempt to inject an NMI into a guest blocking events through STI blocking.
    NmiInjectionWithStiBlocking,
    /// 4: invalid VMCS link pointer.
    InvalidVmcsLinkPointer,
    /// Any other value (1 is "not used").
    Unknown(u64),
}

impl EntryFailureQualification {
    /// Decodes the qualification.
    pub const fn from_raw(raw: u64) -> Self {
        match raw {
            0 => Self::Default,
            2 => Self::PdpteLoading,
            3 => Self::NmiInjectionWithStiBlocking,
            4 => Self::InvalidVmcsLinkPointer,
            other => Self::Unknown(other),
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        match self {
            Self::Default => 0,
            Self::PdpteLoading => 2,
            Self::NmiInjectionWithStiBlocking => 3,
            Self::InvalidVmcsLinkPointer => 4,
            Self::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for EntryFailureQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("no further information"),
            Self::PdpteLoading => f.write_str("failure loading PDPTEs"),
            Self::NmiInjectionWithStiBlocking => f.write_str("NMI injection while blocking by STI"),
            Self::InvalidVmcsLinkPointer => f.write_str("invalid VMCS link pointer"),
            Self::Unknown(raw) => write!(f, "undefined qualification {raw:#x}"),
        }
    }
}

impl fmt::Display for CrAccessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MovToCr => "MOV to CR",
            Self::MovFromCr => "MOV from CR",
            Self::Clts => "CLTS",
            Self::Lmsw => "LMSW",
        })
    }
}

impl fmt::Display for LmswOperandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Register => "register",
            Self::Memory => "memory",
        })
    }
}

impl fmt::Display for MovDrDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ToDr => "MOV to DR",
            Self::FromDr => "MOV from DR",
        })
    }
}

impl fmt::Display for IoSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bytes() {
            Some(1) => f.write_str("1 byte"),
            Some(bytes) => write!(f, "{bytes} bytes"),
            None => write!(f, "reserved size {}", self.to_raw()),
        }
    }
}

impl fmt::Display for IoDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Out => "OUT",
            Self::In => "IN",
        })
    }
}

impl fmt::Display for IoOperandEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dx => "port in DX",
            Self::Immediate => "immediate port",
        })
    }
}

impl fmt::Display for SppEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Misconfiguration => "SPPT misconfiguration",
            Self::Miss => "SPPT miss",
        })
    }
}
