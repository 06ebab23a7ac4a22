//! VM-exit instruction information: property tests for every format and table tests from the SDM,
//! and memory-operand address computation.

use exits::instruction::*;
use exits::{AddressSize, GpReg, MemoryOperand, Operand, OperandError, Scale};
use proptest::prelude::*;
use vmx_core::GuestRegisters;

/// Decoding never panics, re-encoding then decoding gives the same value, and `Display` works.
macro_rules! stable {
    ($name:ident, $ty:ty) => {
        proptest! {
            #[test]
            fn $name(raw in any::<u32>()) {
                let decoded = <$ty>::from_raw(raw);
                prop_assert_eq!(<$ty>::from_raw(decoded.to_raw()), decoded);
                prop_assert!(!decoded.to_string().is_empty());
            }
        }
    };
}

stable!(memory_operand_is_stable, MemoryOperand);
stable!(ins_outs_is_stable, InsOutsInfo);
stable!(invalidation_is_stable, InvalidationInfo);
stable!(descriptor_table_is_stable, DescriptorTableInfo);
stable!(ldtr_tr_is_stable, LdtrTrInfo);
stable!(register_is_stable, RegisterInfo);
stable!(memory_info_is_stable, MemoryInfo);
stable!(vmread_vmwrite_is_stable, VmreadVmwriteInfo);
stable!(loadiwkey_is_stable, LoadiwkeyInfo);
stable!(msr_immediate_is_stable, MsrImmediateInfo);

proptest! {
    // Formats where every defined bit is kept: exact round trip on the defined bits.
    #[test]
    fn bit_exact_formats(raw in any::<u32>()) {
        prop_assert_eq!(InsOutsInfo::from_raw(raw).to_raw(), raw & InsOutsInfo::DEFINED_BITS);
        prop_assert_eq!(RegisterInfo::from_raw(raw).to_raw(), raw & RegisterInfo::DEFINED_BITS);
        prop_assert_eq!(LoadiwkeyInfo::from_raw(raw).to_raw(), raw & LoadiwkeyInfo::DEFINED_BITS);
        prop_assert_eq!(MsrImmediateInfo::from_raw(raw).to_raw(), raw & MsrImmediateInfo::DEFINED_BITS);
        // With both registers valid, the memory operand keeps every defined bit.
        let valid = raw & !(1 << 22 | 1 << 27);
        prop_assert_eq!(MemoryOperand::from_raw(valid).to_raw(), valid & MemoryOperand::DEFINED_BITS);
    }

    #[test]
    fn effective_address_never_panics(
        raw in any::<u32>(),
        displacement in any::<u64>(),
        segment_base in any::<u64>(),
        registers in any::<[u64; 16]>(),
    ) {
        let operand = MemoryOperand::from_raw(raw);
        let read = |reg: GpReg| registers[usize::from(reg.index())];
        match operand.linear_address(displacement, segment_base, read) {
            Ok(linear) => {
                let offset = operand.effective_address(displacement, read).unwrap();
                prop_assert!(offset <= operand.address_size.mask().unwrap());
                if operand.address_size != AddressSize::Bits64 {
                    prop_assert!(linear <= u32::MAX as u64);
                }
            }
            Err(OperandError::ReservedAddressSize(size)) => prop_assert!(size >= 3),
        }
    }

    #[test]
    fn frame_addresses_agree_with_the_register_closure(
        raw in any::<u32>(),
        displacement in any::<u64>(),
        segment_base in any::<u64>(),
        registers in any::<[u64; 16]>(),
    ) {
        // The frame holds every register but RSP, which is passed as GUEST_RSP.
        let mut frame = GuestRegisters::new();
        for reg in GpReg::ALL.into_iter().filter(|reg| !reg.in_vmcs()) {
            frame.set_gpr(reg, registers[usize::from(reg.index())]).unwrap();
        }
        let guest_rsp = registers[usize::from(GpReg::Rsp.index())];
        let operand = MemoryOperand::from_raw(raw);
        let read = |reg: GpReg| registers[usize::from(reg.index())];
        prop_assert_eq!(
            operand.effective_address_in(displacement, &frame, guest_rsp),
            operand.effective_address(displacement, read)
        );
        prop_assert_eq!(
            operand.linear_address_in(displacement, segment_base, &frame, guest_rsp),
            operand.linear_address(displacement, segment_base, read)
        );
    }
}

#[test]
fn register_fields_use_the_sdm_numbering() {
    // Every 4-bit value of Reg1 (bits 6:3), Reg2 (31:28), index (21:18) and base (26:23) names the
    // vmx-core register with that SDM number.
    for n in 0..16u32 {
        let reg = GpReg::from_index(u64::from(n)).unwrap();
        assert_eq!(u32::from(reg.index()), n);
        assert_eq!(RegisterInfo::from_raw(n << 3).register, reg);
        assert_eq!(VmreadVmwriteInfo::from_raw(n << 28).field_register, reg);
        let memory = MemoryOperand::from_raw(n << 18 | n << 23);
        assert_eq!((memory.index, memory.base), (Some(reg), Some(reg)));
    }
    assert_eq!(RegisterInfo::from_raw(4 << 3).register.to_string(), "RSP");
    assert_eq!(MsrImmediateInfo::from_raw(15 << 3).register, GpReg::R15);
}

#[test]
fn addresses_from_the_guest_register_frame() {
    // INVVPID RAX, [RSP + R9*4 - 8] in 64-bit mode: RSP comes from GUEST_RSP, R9 from the frame.
    let raw = 2 | 2 << 7 | 2 << 15 | 9 << 18 | 4 << 23;
    let memory = InvalidationInfo::from_raw(raw).memory;
    let mut regs = GuestRegisters::new();
    regs.r9 = 0x10;
    regs.rax = 0xdead; // not an operand
    let guest_rsp = 0x8000;
    assert_eq!(
        memory.effective_address_in((-8i64) as u64, &regs, guest_rsp),
        Ok(0x8038)
    );
    assert_eq!(
        memory.linear_address_in((-8i64) as u64, 0x1_0000, &regs, guest_rsp),
        Ok(0x1_8038)
    );
    // A reserved address size is reported, not guessed.
    let reserved = MemoryOperand::from_raw(raw & !(7 << 7) | 5 << 7);
    assert_eq!(
        reserved.effective_address_in(0, &regs, guest_rsp),
        Err(OperandError::ReservedAddressSize(5))
    );
}

#[test]
fn vmptrld_rax_in_64_bit_mode() {
    // VMPTRLD [RAX]: scaling 0, 64-bit address size (2 << 7), DS (3 << 15), no index (bit 22),
    // base RAX (0 << 23).
    let info = MemoryInfo::from_raw(0x0041_8100);
    assert_eq!(
        info.0,
        MemoryOperand {
            scale: Scale::X1,
            address_size: AddressSize::Bits64,
            segment: Ok(vmcs::GuestSegment::Ds),
            index: None,
            base: Some(GpReg::Rax),
        }
    );
    assert_eq!(info.to_raw(), 0x0041_8100);
    assert_eq!(info.to_string(), "DS:[RAX+disp] (64-bit address)");
    let address = info
        .0
        .linear_address(0, 0, |reg| if reg == GpReg::Rax { 0x5000 } else { 0 });
    assert_eq!(address, Ok(0x5000));
}

#[test]
fn invept_with_scaled_index() {
    // INVEPT RCX, [RDX + RSI*8 + 0x10]: scaling 3, 64-bit, DS, index RSI (6 << 18),
    // base RDX (2 << 23), Reg2 RCX (1 << 28).
    let raw = 0x3 | 2 << 7 | 3 << 15 | 6 << 18 | 2 << 23 | 1 << 28;
    assert_eq!(raw, 0x1119_8103);
    let info = InvalidationInfo::from_raw(raw);
    assert_eq!(info.register, GpReg::Rcx);
    assert_eq!(info.memory.index, Some(GpReg::Rsi));
    assert_eq!(info.memory.base, Some(GpReg::Rdx));
    assert_eq!(info.memory.scale, Scale::X8);
    assert_eq!(info.to_raw(), raw);
    let registers = |reg: GpReg| match reg {
        GpReg::Rdx => 0x1000,
        GpReg::Rsi => 2,
        _ => 0xdead,
    };
    assert_eq!(info.memory.effective_address(0x10, registers), Ok(0x1020));
    assert_eq!(
        info.to_string(),
        "type in RCX, descriptor at DS:[RDX+RSI*8+disp] (64-bit address)"
    );
}

#[test]
fn addresses_wrap_at_the_address_size() {
    // 16-bit: [BX + SI + 2] with BX = 0xFFFF wraps to 0x0001 (+SI = 0).
    let operand = MemoryOperand {
        scale: Scale::X1,
        address_size: AddressSize::Bits16,
        segment: Ok(vmcs::GuestSegment::Ss),
        index: Some(GpReg::Rsi),
        base: Some(GpReg::Rbx),
    };
    let regs = |reg: GpReg| if reg == GpReg::Rbx { 0xffff } else { 0 };
    assert_eq!(operand.effective_address(2, regs), Ok(1));
    assert_eq!(operand.linear_address(2, 0x2_0000, regs), Ok(0x2_0001));
    // A negative displacement, sign-extended by the processor: [RSP - 8].
    let operand = MemoryOperand {
        address_size: AddressSize::Bits64,
        index: None,
        base: Some(GpReg::Rsp),
        ..operand
    };
    let regs = |reg: GpReg| if reg == GpReg::Rsp { 0x1000 } else { 0 };
    assert_eq!(operand.effective_address((-8i64) as u64, regs), Ok(0xff8));
    // 32-bit: the linear address wraps at 4 GiB.
    let operand = MemoryOperand {
        address_size: AddressSize::Bits32,
        ..operand
    };
    let regs = |_| 0xffff_fff0;
    assert_eq!(operand.linear_address(0, 0x20, regs), Ok(0x10));
    // No base and no index: the displacement alone.
    let operand = MemoryOperand {
        base: None,
        ..operand
    };
    assert_eq!(operand.effective_address(0x1234, regs), Ok(0x1234));
    // A reserved address size is an error, not a guess.
    let operand = MemoryOperand {
        address_size: AddressSize::Reserved(5),
        ..operand
    };
    assert_eq!(
        operand.effective_address(0, regs),
        Err(OperandError::ReservedAddressSize(5))
    );
}

#[test]
fn descriptor_table_instructions() {
    // LGDT [RAX] in 64-bit mode: identity 2 in bits 29:28.
    let info = DescriptorTableInfo::from_raw(0x2041_8100);
    assert_eq!(info.instruction, DescriptorTableInstruction::Lgdt);
    assert_eq!(info.memory.base, Some(GpReg::Rax));
    assert_eq!(
        info.to_string(),
        "LGDT DS:[RAX+disp] (64-bit address) (16-bit operand size)"
    );
    assert_eq!(
        DescriptorTableInfo::from_raw(0).instruction,
        DescriptorTableInstruction::Sgdt
    );
    assert_eq!(
        DescriptorTableInfo::from_raw(1 << 28).instruction,
        DescriptorTableInstruction::Sidt
    );
    let lidt = DescriptorTableInfo::from_raw(3 << 28 | 1 << 11);
    assert_eq!(lidt.instruction, DescriptorTableInstruction::Lidt);
    assert!(lidt.operand_size_32);
}

#[test]
fn ldtr_tr_instructions() {
    // LTR AX: register form (bit 10), Reg1 = RAX, identity 3.
    let info = LdtrTrInfo::from_raw(0x3000_0400);
    assert_eq!(
        (info.operand, info.instruction),
        (Operand::Register(GpReg::Rax), LdtrTrInstruction::Ltr)
    );
    assert_eq!(info.to_string(), "LTR RAX");
    // SLDT [RBX] (memory form), identity 0.
    let info = LdtrTrInfo::from_raw(0x0041_8000 | 3 << 23 | 2 << 7);
    assert_eq!(info.instruction, LdtrTrInstruction::Sldt);
    assert!(matches!(info.operand, Operand::Memory(m) if m.base == Some(GpReg::Rbx)));
    assert_eq!(
        LdtrTrInfo::from_raw(1 << 28).instruction,
        LdtrTrInstruction::Str
    );
    assert_eq!(
        LdtrTrInfo::from_raw(2 << 28).instruction,
        LdtrTrInstruction::Lldt
    );
}

#[test]
fn register_instructions() {
    // RDRAND EAX: register 0, operand size 1 (32-bit).
    let info = RegisterInfo::from_raw(0x800);
    assert_eq!(
        (info.register, info.operand_size),
        (GpReg::Rax, OperandSize::Bits32)
    );
    // RDSEED R9: register 9, 64-bit.
    let info = RegisterInfo::from_raw(0x1048);
    assert_eq!(
        (info.register, info.operand_size),
        (GpReg::R9, OperandSize::Bits64)
    );
    assert_eq!(info.to_string(), "register R9 (64-bit operand)");
    assert_eq!(
        RegisterInfo::from_raw(3 << 11).operand_size,
        OperandSize::Reserved
    );
}

#[test]
fn vmread_vmwrite_forms() {
    // VMREAD RAX, RBX: register destination RAX (bit 10), field encoding in RBX (Reg2 = 3).
    let info = VmreadVmwriteInfo::from_raw(0x3000_0400);
    assert_eq!(
        (info.operand, info.field_register),
        (Operand::Register(GpReg::Rax), GpReg::Rbx)
    );
    assert_eq!(info.to_string(), "operand RAX, field encoding in RBX");
    // VMWRITE RDX, [RDI]: memory source with base RDI (7 << 23), field in RDX (2 << 28).
    let info = VmreadVmwriteInfo::from_raw(2 << 28 | 7 << 23 | 1 << 22 | 3 << 15 | 2 << 7);
    assert_eq!(info.field_register, GpReg::Rdx);
    assert!(
        matches!(info.operand, Operand::Memory(m) if m.base == Some(GpReg::Rdi) && m.index.is_none())
    );
}

#[test]
fn outs_loadiwkey_and_msr_immediate() {
    // OUTSB with a 32-bit address size and an FS override.
    let info = InsOutsInfo::from_raw(0x2_0080);
    assert_eq!(
        (info.address_size, info.segment),
        (AddressSize::Bits32, Ok(vmcs::GuestSegment::Fs))
    );
    assert_eq!(info.to_string(), "segment FS, 32-bit address");
    assert_eq!(
        InsOutsInfo::from_raw(7 << 15).segment,
        Err(exits::ReservedSegment(7))
    );
    // LOADIWKEY XMM1, XMM2.
    let info = LoadiwkeyInfo::from_raw(0x2000_0008);
    assert_eq!((info.xmm1, info.xmm2), (1, 2));
    assert_eq!(info.to_string(), "XMM1, XMM2");
    // RDMSR R12, imm32.
    assert_eq!(MsrImmediateInfo::from_raw(0x60).register, GpReg::R12);
}

#[test]
fn instruction_length() {
    assert!(InstructionLength(1).is_architectural());
    assert!(InstructionLength(15).is_architectural());
    assert!(!InstructionLength(0).is_architectural());
    assert!(!InstructionLength(16).is_architectural());
    assert_eq!(InstructionLength(3).to_string(), "3 bytes");
}
