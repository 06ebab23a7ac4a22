//! A decoder for the MOV forms a guest uses on MMIO (SDM Vol. 2, "MOV—Move"), in 64-bit mode:
//! `88`/`89` (store register), `8A`/`8B` (load register), `C6 /0`/`C7 /0` (store immediate), with the
//! operand-size prefix, segment-override and address-size prefixes, and REX. The memory operand's
//! address is not computed: the EPT violation gives its guest-physical address. What the decoder
//! must get right is the access size, the register or immediate, and the instruction length.

use core::fmt;

/// A general-purpose register operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg {
    /// Register number (0 = RAX … 15 = R15).
    pub index: u8,
    /// AH, CH, DH or BH (an 8-bit operand without REX, numbers 4–7): bits 15:8 of register
    /// `index` (0–3).
    pub high_byte: bool,
}

/// What the instruction does with the memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Memory is loaded into the register.
    Load(Reg),
    /// The register is stored to memory.
    Store(Reg),
    /// The immediate is stored to memory (already sign-extended to the access size).
    StoreImmediate(u64),
}

/// A decoded MOV with a memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovAccess {
    /// Instruction length in bytes.
    pub length: u8,
    /// Size of the memory access in bytes (1, 2, 4 or 8).
    pub size: u8,
    /// What happens to the operand.
    pub operation: Operation,
}

/// Why the bytes are not a MOV the decoder handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The instruction continues past the bytes given (or past 15 bytes).
    Truncated,
    /// Not one of the MOV forms above; carries the opcode byte.
    Unsupported(u8),
    /// A register-to-register form: no memory operand.
    RegisterOperand,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("instruction truncated"),
            Self::Unsupported(op) => write!(f, "opcode {op:#04x} is not an emulated MOV"),
            Self::RegisterOperand => f.write_str("MOV without a memory operand"),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        if self.pos + n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        self.pos += n;
        Ok(())
    }

    fn imm(&mut self, size: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..size {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }
}

/// Decodes the instruction at the start of `bytes` (64-bit mode).
pub fn decode_mov(bytes: &[u8]) -> Result<MovAccess, DecodeError> {
    let bytes = &bytes[..bytes.len().min(15)];
    let mut c = Cursor { bytes, pos: 0 };
    let mut operand16 = false;
    let mut op = c.next()?;
    // Legacy prefixes: operand size, address size, segment overrides (no effect on the size).
    while matches!(op, 0x66 | 0x67 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65) {
        operand16 |= op == 0x66;
        op = c.next()?;
    }
    let mut rex = 0u8;
    if op & 0xf0 == 0x40 {
        rex = op;
        op = c.next()?;
    }
    let rex_w = rex & 8 != 0;
    let wide = if rex_w {
        8
    } else if operand16 {
        2
    } else {
        4
    };
    let size = match op {
        0x88 | 0x8a | 0xc6 => 1,
        0x89 | 0x8b | 0xc7 => wide,
        other => return Err(DecodeError::Unsupported(other)),
    };
    let modrm = c.next()?;
    let md = modrm >> 6;
    let reg_field = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if md == 3 {
        return Err(DecodeError::RegisterOperand);
    }
    if matches!(op, 0xc6 | 0xc7) && reg_field != 0 {
        return Err(DecodeError::Unsupported(op));
    }
    // SIB and displacement.
    if rm == 4 {
        let sib = c.next()?;
        if md == 0 && sib & 7 == 5 {
            c.skip(4)?;
        }
    }
    match md {
        0 if rm == 5 => c.skip(4)?, // RIP-relative disp32
        1 => c.skip(1)?,
        2 => c.skip(4)?,
        _ => {}
    }
    let reg = Reg {
        index: reg_field | if rex & 4 != 0 { 8 } else { 0 },
        high_byte: size == 1 && rex == 0 && reg_field >= 4,
    };
    let reg = if reg.high_byte {
        Reg {
            index: reg.index - 4,
            ..reg
        }
    } else {
        reg
    };
    let operation = match op {
        0x88 | 0x89 => Operation::Store(reg),
        0x8a | 0x8b => Operation::Load(reg),
        _ => {
            // C6: imm8; C7: imm16 with 66, else imm32 sign-extended to 64 bits with REX.W.
            let imm_size = size.min(4);
            let raw = c.imm(imm_size)?;
            let value = if size == 8 {
                raw as u32 as i32 as i64 as u64
            } else {
                raw
            };
            Operation::StoreImmediate(value)
        }
    };
    Ok(MovAccess {
        length: c.pos as u8,
        size,
        operation,
    })
}
