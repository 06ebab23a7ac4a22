//! General-purpose registers by their SDM number, as exit qualifications and the VM-exit
//! instruction-information field name them.

use core::fmt;

/// A 64-bit general-purpose register, numbered as the SDM numbers it in VM-exit information
/// (SDM Vol. 3C, §28.2.1 "Basic VM-Exit Information", Table 28-3 "Exit Qualification for
/// Control-Register Accesses" bits 11:8, and §28.2.5 "Information for VM Exits Due to
/// Instruction Execution", the Reg1/Reg2/Base/Index fields): 0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX,
/// 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8–15 = R8–R15 (the order of the ModR/M `reg` field
/// extended by REX.R).
///
/// RSP (4) is special for a hypervisor: the guest's RSP is the VMCS guest-state field GUEST_RSP,
/// not part of the trampoline's [`GuestRegisters`](crate::GuestRegisters) frame, so
/// [`GuestRegisters::gpr`](crate::GuestRegisters::gpr) answers `None` for it.
///
/// ```
/// use vmx_core::{GpReg, GuestRegisters};
///
/// // MOV CR0, RDX: exit qualification 0x0200 (bits 11:8 = 2).
/// let qualification: u64 = 0x0200;
/// let reg = GpReg::from_field(qualification >> 8);
/// assert_eq!(reg, GpReg::Rdx);
/// let mut regs = GuestRegisters::new();
/// regs.rdx = 0x8000_0031;
/// assert_eq!(regs.gpr(reg), Some(0x8000_0031));
/// assert_eq!(regs.gpr(GpReg::Rsp), None); // GUEST_RSP is in the VMCS
/// assert_eq!(GpReg::from_index(16), None); // total: no panic on a bad number
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum GpReg {
    /// RAX (0).
    Rax = 0,
    /// RCX (1).
    Rcx = 1,
    /// RDX (2).
    Rdx = 2,
    /// RBX (3).
    Rbx = 3,
    /// RSP (4): the guest's is the VMCS field GUEST_RSP.
    Rsp = 4,
    /// RBP (5).
    Rbp = 5,
    /// RSI (6).
    Rsi = 6,
    /// RDI (7).
    Rdi = 7,
    /// R8 (8).
    R8 = 8,
    /// R9 (9).
    R9 = 9,
    /// R10 (10).
    R10 = 10,
    /// R11 (11).
    R11 = 11,
    /// R12 (12).
    R12 = 12,
    /// R13 (13).
    R13 = 13,
    /// R14 (14).
    R14 = 14,
    /// R15 (15).
    R15 = 15,
}

impl GpReg {
    /// Every register, in SDM number order (`ALL[n]` has number `n`).
    pub const ALL: [GpReg; 16] = [
        GpReg::Rax,
        GpReg::Rcx,
        GpReg::Rdx,
        GpReg::Rbx,
        GpReg::Rsp,
        GpReg::Rbp,
        GpReg::Rsi,
        GpReg::Rdi,
        GpReg::R8,
        GpReg::R9,
        GpReg::R10,
        GpReg::R11,
        GpReg::R12,
        GpReg::R13,
        GpReg::R14,
        GpReg::R15,
    ];

    const NAMES: [&'static str; 16] = [
        "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15",
    ];

    /// The register with SDM number `index` (0 = RAX … 15 = R15), `None` for any other number.
    #[must_use]
    pub const fn from_index(index: u64) -> Option<Self> {
        match index {
            0..=15 => Some(Self::ALL[index as usize]),
            _ => None,
        }
    }

    /// The register named by a 4-bit register field of VM-exit information, given with the field
    /// in bits 3:0 of `bits` (e.g. `qualification >> 8` for a control-register access,
    /// `info >> 3` for Reg1 of the instruction-information field); the bits above the field
    /// belong to other fields and are ignored. Every 4-bit value names a register, so this never
    /// fails.
    #[must_use]
    pub const fn from_field(bits: u64) -> Self {
        Self::ALL[(bits & 0xf) as usize]
    }

    /// The register's SDM number (0–15).
    #[must_use]
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The register's 64-bit assembler name (`"RAX"` … `"R15"`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether the guest's value lives in the VMCS (GUEST_RSP) rather than in the
    /// [`GuestRegisters`](crate::GuestRegisters) frame: true for RSP only.
    #[must_use]
    pub const fn in_vmcs(self) -> bool {
        matches!(self, GpReg::Rsp)
    }
}

impl fmt::Display for GpReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A number that names no general-purpose register (SDM numbers are 0–15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[error("register number {0} names no general-purpose register (0 = RAX ... 15 = R15)")]
pub struct UnknownGpReg(pub u64);

impl TryFrom<u64> for GpReg {
    type Error = UnknownGpReg;

    fn try_from(index: u64) -> Result<Self, Self::Error> {
        Self::from_index(index).ok_or(UnknownGpReg(index))
    }
}

impl TryFrom<u32> for GpReg {
    type Error = UnknownGpReg;

    fn try_from(index: u32) -> Result<Self, Self::Error> {
        Self::try_from(u64::from(index))
    }
}

impl TryFrom<u8> for GpReg {
    type Error = UnknownGpReg;

    fn try_from(index: u8) -> Result<Self, Self::Error> {
        Self::try_from(u64::from(index))
    }
}

impl From<GpReg> for u8 {
    fn from(reg: GpReg) -> u8 {
        reg.index()
    }
}

/// RSP was addressed in the [`GuestRegisters`](crate::GuestRegisters) frame, which does not hold
/// it: the guest's RSP is the VMCS guest-state field GUEST_RSP (encoding 0x681C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[error("the guest's RSP is not in the register frame: it is the VMCS field GUEST_RSP")]
pub struct RspInVmcs;
