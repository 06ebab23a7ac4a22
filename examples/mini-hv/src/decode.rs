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
    let mut rex = 0u8;
    // Legacy prefixes (operand size; address size and segment overrides, which do not change the
    // access size) and REX. A REX counts only immediately before the opcode (SDM Vol. 2, 2.2.1
    // "REX Prefixes": other placements are ignored).
    let op = loop {
        match c.next()? {
            0x66 => {
                operand16 = true;
                rex = 0;
            }
            0x67 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => rex = 0,
            b @ 0x40..=0x4f => rex = b,
            b => break b,
        }
    };
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

#[cfg(test)]
mod tests {
    //! Expected values from the SDM's encodings (Vol. 2, "MOV—Move"; 2.1 "Instruction Format":
    //! Table 2-2 for ModR/M, Table 2-3 for SIB; 2.2.1 "REX Prefixes"), not from the decoder.

    use super::*;

    const RAX: u8 = 0;
    const RCX: u8 = 1;

    fn reg(index: u8) -> Reg {
        Reg {
            index,
            high_byte: false,
        }
    }

    fn high(index: u8) -> Reg {
        Reg {
            index,
            high_byte: true,
        }
    }

    fn mov(length: u8, size: u8, operation: Operation) -> Result<MovAccess, DecodeError> {
        Ok(MovAccess {
            length,
            size,
            operation,
        })
    }

    #[test]
    fn stores_and_loads_by_operand_size() {
        // mov [rax], ecx / mov [rax], rcx / mov [rax], cx / mov [rax], cl
        assert_eq!(
            decode_mov(&[0x89, 0x08]),
            mov(2, 4, Operation::Store(reg(RCX)))
        );
        assert_eq!(
            decode_mov(&[0x48, 0x89, 0x08]),
            mov(3, 8, Operation::Store(reg(RCX)))
        );
        assert_eq!(
            decode_mov(&[0x66, 0x89, 0x08]),
            mov(3, 2, Operation::Store(reg(RCX)))
        );
        assert_eq!(
            decode_mov(&[0x88, 0x08]),
            mov(2, 1, Operation::Store(reg(RCX)))
        );
        // mov eax, [rcx] / mov al, [rcx] / mov rax, [rcx]
        assert_eq!(
            decode_mov(&[0x8b, 0x01]),
            mov(2, 4, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x8a, 0x01]),
            mov(2, 1, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x48, 0x8b, 0x01]),
            mov(3, 8, Operation::Load(reg(RAX)))
        );
    }

    #[test]
    fn rex_w_wins_over_the_operand_size_prefix() {
        // 2.2.1.2: with REX.W = 1 the operand size is 64 bits and 66H is ignored.
        assert_eq!(
            decode_mov(&[0x66, 0x48, 0x89, 0x08]),
            mov(4, 8, Operation::Store(reg(RCX)))
        );
    }

    #[test]
    fn rex_counts_only_right_before_the_opcode() {
        // REX.W then 66H: the REX is ignored, the access is 16-bit.
        assert_eq!(
            decode_mov(&[0x48, 0x66, 0x89, 0x08]),
            mov(4, 2, Operation::Store(reg(RCX)))
        );
        // REX.R then a segment override: ignored, ECX not R9D.
        assert_eq!(
            decode_mov(&[0x44, 0x64, 0x89, 0x08]),
            mov(4, 4, Operation::Store(reg(RCX)))
        );
        // Two REX prefixes: the second one counts (REX.R, not REX.W).
        assert_eq!(
            decode_mov(&[0x48, 0x44, 0x89, 0x08]),
            mov(4, 4, Operation::Store(reg(9)))
        );
    }

    #[test]
    fn byte_registers_with_and_without_rex() {
        // Without REX, reg 4..7 of an 8-bit operand are AH, CH, DH, BH.
        assert_eq!(
            decode_mov(&[0x88, 0x20]),
            mov(2, 1, Operation::Store(high(0)))
        );
        assert_eq!(
            decode_mov(&[0x8a, 0x3e]),
            mov(2, 1, Operation::Load(high(3)))
        );
        // With any REX they are SPL, BPL, SIL, DIL.
        assert_eq!(
            decode_mov(&[0x40, 0x88, 0x20]),
            mov(3, 1, Operation::Store(reg(4)))
        );
        assert_eq!(
            decode_mov(&[0x40, 0x8a, 0x3e]),
            mov(3, 1, Operation::Load(reg(7)))
        );
        // REX.R: R12B; REX.B and REX.X do not touch the register operand.
        assert_eq!(
            decode_mov(&[0x44, 0x88, 0x20]),
            mov(3, 1, Operation::Store(reg(12)))
        );
        assert_eq!(
            decode_mov(&[0x43, 0x88, 0x20]),
            mov(3, 1, Operation::Store(reg(4)))
        );
        // 16- and 32-bit operands never name a high byte register: reg 4 is SP/ESP.
        assert_eq!(
            decode_mov(&[0x89, 0x20]),
            mov(2, 4, Operation::Store(reg(4)))
        );
    }

    #[test]
    fn rex_r_extends_the_register_operand() {
        // mov [rax], r8d / mov r15, [rax]
        assert_eq!(
            decode_mov(&[0x44, 0x89, 0x00]),
            mov(3, 4, Operation::Store(reg(8)))
        );
        assert_eq!(
            decode_mov(&[0x4c, 0x8b, 0x38]),
            mov(3, 8, Operation::Load(reg(15)))
        );
        // mov [r8], eax: REX.B extends the base, not the register operand.
        assert_eq!(
            decode_mov(&[0x41, 0x89, 0x00]),
            mov(3, 4, Operation::Store(reg(RAX)))
        );
    }

    #[test]
    fn modrm_displacements() {
        // mod 01: disp8 (mov eax, [rcx+8]); mod 10: disp32 (mov eax, [rcx+0x1000]).
        assert_eq!(
            decode_mov(&[0x8b, 0x41, 0x08]),
            mov(3, 4, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x8b, 0x81, 0x00, 0x10, 0x00, 0x00]),
            mov(6, 4, Operation::Load(reg(RAX)))
        );
        // mod 00, r/m 101: RIP-relative disp32 in 64-bit mode, with REX.B too (r/m 101 is not R13 here).
        assert_eq!(
            decode_mov(&[0x8b, 0x05, 0x78, 0x56, 0x34, 0x12]),
            mov(6, 4, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x41, 0x8b, 0x05, 0x78, 0x56, 0x34, 0x12]),
            mov(7, 4, Operation::Load(reg(RAX)))
        );
        // [r13] needs mod 01 with disp8 = 0.
        assert_eq!(
            decode_mov(&[0x41, 0x8b, 0x45, 0x00]),
            mov(4, 4, Operation::Load(reg(RAX)))
        );
    }

    #[test]
    fn sib_forms() {
        // mov eax, [rsp] (r/m 100: SIB with base RSP, no index).
        assert_eq!(
            decode_mov(&[0x8b, 0x04, 0x24]),
            mov(3, 4, Operation::Load(reg(RAX)))
        );
        // mov eax, [r12]: REX.B does not remove the SIB byte.
        assert_eq!(
            decode_mov(&[0x41, 0x8b, 0x04, 0x24]),
            mov(4, 4, Operation::Load(reg(RAX)))
        );
        // mov eax, [rsp+8] / mov eax, [rsp+0x100]
        assert_eq!(
            decode_mov(&[0x8b, 0x44, 0x24, 0x08]),
            mov(4, 4, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x8b, 0x84, 0x24, 0x00, 0x01, 0x00, 0x00]),
            mov(7, 4, Operation::Load(reg(RAX)))
        );
        // mov eax, [0xfee00020]: mod 00, SIB base 101: disp32 and no base, also with REX.B.
        let absolute = [0x8b, 0x04, 0x25, 0x20, 0x00, 0xe0, 0xfe];
        assert_eq!(decode_mov(&absolute), mov(7, 4, Operation::Load(reg(RAX))));
        assert_eq!(
            decode_mov(&[0x41, 0x8b, 0x04, 0x25, 0x20, 0x00, 0xe0, 0xfe]),
            mov(8, 4, Operation::Load(reg(RAX)))
        );
        // mod 01, SIB base 101: [rbp + index*scale + disp8], no disp32.
        assert_eq!(
            decode_mov(&[0x8b, 0x44, 0x8d, 0x10]),
            mov(4, 4, Operation::Load(reg(RAX)))
        );
    }

    #[test]
    fn immediates_by_operand_size() {
        // mov byte [rax], 0xab
        assert_eq!(
            decode_mov(&[0xc6, 0x00, 0xab]),
            mov(3, 1, Operation::StoreImmediate(0xab))
        );
        // mov word [rax], 0x1234 (imm16)
        assert_eq!(
            decode_mov(&[0x66, 0xc7, 0x00, 0x34, 0x12]),
            mov(5, 2, Operation::StoreImmediate(0x1234))
        );
        // mov dword [rax], 0x87654321 (imm32, not extended)
        assert_eq!(
            decode_mov(&[0xc7, 0x00, 0x21, 0x43, 0x65, 0x87]),
            mov(6, 4, Operation::StoreImmediate(0x8765_4321))
        );
        // mov qword [rax], -1 / 0x7fffffff: imm32 sign-extended to 64 bits.
        assert_eq!(
            decode_mov(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]),
            mov(7, 8, Operation::StoreImmediate(u64::MAX))
        );
        assert_eq!(
            decode_mov(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0x7f]),
            mov(7, 8, Operation::StoreImmediate(0x7fff_ffff))
        );
        // 66H and REX.W: still imm32 (REX.W wins).
        assert_eq!(
            decode_mov(&[0x66, 0x48, 0xc7, 0x00, 0x00, 0x00, 0x00, 0x80]),
            mov(8, 8, Operation::StoreImmediate(0xffff_ffff_8000_0000))
        );
        // The immediate follows the displacement: mov dword [rax+0x10], 5
        assert_eq!(
            decode_mov(&[0xc7, 0x40, 0x10, 0x05, 0x00, 0x00, 0x00]),
            mov(7, 4, Operation::StoreImmediate(5))
        );
    }

    #[test]
    fn segment_and_address_size_prefixes_keep_the_size() {
        // mov eax, fs:[rcx] / mov eax, [ecx] (67H: 32-bit addressing, same ModR/M layout)
        assert_eq!(
            decode_mov(&[0x64, 0x8b, 0x01]),
            mov(3, 4, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x67, 0x8b, 0x01]),
            mov(3, 4, Operation::Load(reg(RAX)))
        );
        assert_eq!(
            decode_mov(&[0x2e, 0x36, 0x3e, 0x26, 0x65, 0x89, 0x08]),
            mov(7, 4, Operation::Store(reg(RCX)))
        );
    }

    #[test]
    fn what_is_not_an_emulated_mov() {
        // Register operands (mod 11): mov ecx, eax.
        assert_eq!(decode_mov(&[0x89, 0xc1]), Err(DecodeError::RegisterOperand));
        assert_eq!(
            decode_mov(&[0xc7, 0xc0, 0, 0, 0, 0]),
            Err(DecodeError::RegisterOperand)
        );
        // C6/C7 with reg != 0 are not MOV (C7 /1 does not exist as MOV).
        assert_eq!(
            decode_mov(&[0xc7, 0x08, 0, 0, 0, 0]),
            Err(DecodeError::Unsupported(0xc7))
        );
        // Other opcodes: ADD [rax], ecx; MOVS; 0F escapes; LOCK.
        assert_eq!(
            decode_mov(&[0x01, 0x08]),
            Err(DecodeError::Unsupported(0x01))
        );
        assert_eq!(decode_mov(&[0xa5]), Err(DecodeError::Unsupported(0xa5)));
        assert_eq!(
            decode_mov(&[0x0f, 0xb7, 0x01]),
            Err(DecodeError::Unsupported(0x0f))
        );
        assert_eq!(
            decode_mov(&[0xf0, 0x89, 0x08]),
            Err(DecodeError::Unsupported(0xf0))
        );
    }

    #[test]
    fn truncation_and_the_15_byte_limit() {
        assert_eq!(decode_mov(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode_mov(&[0x48]), Err(DecodeError::Truncated));
        assert_eq!(decode_mov(&[0x8b, 0x04]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_mov(&[0x8b, 0x05, 0, 0, 0]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_mov(&[0xc7, 0x00, 0, 0, 0]),
            Err(DecodeError::Truncated)
        );
        // 14 segment prefixes + 89 08 = 16 bytes: longer than any instruction (2.3.11).
        let mut long = [0x3e; 16];
        long[14..].copy_from_slice(&[0x89, 0x08]);
        assert_eq!(decode_mov(&long), Err(DecodeError::Truncated));
        // 13 prefixes + 89 08 = 15 bytes: allowed.
        assert_eq!(
            decode_mov(&long[1..]),
            mov(15, 4, Operation::Store(reg(RCX)))
        );
    }

    /// xorshift64: reproducible random inputs for the property tests. (Not proptest: as a
    /// dev-dependency it turns on `std` features in crates the kernel shares with it whenever the
    /// kernel and its tests are checked together, as `cargo clippy --all-targets` does.)
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }

        fn below(&mut self, n: u8) -> u8 {
            (self.next() % u64::from(n)) as u8
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.byte()).collect()
        }
    }

    /// One of the addressing forms of Tables 2-2 and 2-3: its ModR/M byte (reg field 0), SIB and
    /// displacement bytes.
    fn memory_operand(rng: &mut Rng) -> Vec<u8> {
        // A base register for mod 01/10 without SIB: any but r/m 100.
        let base = [0, 1, 2, 3, 5, 6, 7][usize::from(rng.below(7))];
        match rng.below(8) {
            // [base], base not 100 (SIB) or 101 (RIP-relative).
            0 => vec![[0, 1, 2, 3, 6, 7][usize::from(rng.below(6))]],
            // [base + disp8] / [base + disp32]
            1 => vec![0x40 | base, rng.byte()],
            2 => [vec![0x80 | base], rng.bytes(4)].concat(),
            // [rip + disp32]
            3 => [vec![0x05], rng.bytes(4)].concat(),
            // SIB with a base (not 101) / SIB base 101 under mod 00: disp32, no base
            4 => vec![
                0x04,
                rng.byte() & !7 | [0, 1, 2, 3, 4, 6, 7][usize::from(rng.below(7))],
            ],
            5 => [vec![0x04, rng.byte() & !7 | 5], rng.bytes(4)].concat(),
            // SIB + disp8 / SIB + disp32 (any base)
            6 => vec![0x44, rng.byte(), rng.byte()],
            _ => [vec![0x84, rng.byte()], rng.bytes(4)].concat(),
        }
    }

    #[test]
    fn never_panics_and_stays_inside_the_input() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let len = usize::from(rng.below(20));
            // Bytes biased toward the ones the decoder looks at.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => [0x66, 0x67, 0x48, 0x44, 0x41, 0x40, 0x64][usize::from(rng.below(7))],
                    1 => [0x88, 0x89, 0x8a, 0x8b, 0xc6, 0xc7][usize::from(rng.below(6))],
                    _ => rng.byte(),
                })
                .collect();
            if let Ok(access) = decode_mov(&bytes) {
                assert!(
                    usize::from(access.length) <= bytes.len().min(15),
                    "{bytes:02x?}"
                );
                assert!(matches!(access.size, 1 | 2 | 4 | 8), "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn length_size_and_register_follow_the_encoding() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for _ in 0..50_000 {
            let operand16 = rng.below(2) == 1;
            let rex = (rng.below(2) == 1).then(|| 0x40 | rng.below(16));
            let opcode = 0x88 + rng.below(4);
            let reg_field = rng.below(8);
            let memory = memory_operand(&mut rng);
            let mut bytes = Vec::new();
            if operand16 {
                bytes.push(0x66);
            }
            bytes.extend(rex);
            bytes.push(opcode);
            bytes.push(memory[0] | reg_field << 3);
            bytes.extend(&memory[1..]);
            let length = bytes.len();
            let trailing = usize::from(rng.below(4));
            bytes.extend(rng.bytes(trailing));
            let rex = rex.unwrap_or(0);
            let size = if opcode & 1 == 0 {
                1
            } else if rex & 8 != 0 {
                8
            } else if operand16 {
                2
            } else {
                4
            };
            let register = if size == 1 && rex == 0 && reg_field >= 4 {
                high(reg_field - 4)
            } else {
                reg(reg_field | (rex & 4) << 1)
            };
            let operation = if opcode & 2 == 0 {
                Operation::Store(register)
            } else {
                Operation::Load(register)
            };
            assert_eq!(
                decode_mov(&bytes),
                mov(length as u8, size, operation),
                "{bytes:02x?}"
            );
            for cut in 0..length {
                assert_eq!(
                    decode_mov(&bytes[..cut]),
                    Err(DecodeError::Truncated),
                    "{bytes:02x?}"
                );
            }
        }
    }
}
