//! General-purpose registers by SDM number: the numbering against the SDM's table, totality of
//! the conversions, and the frame accessors touching exactly one slot.

use proptest::prelude::*;
use vmx_core::{GpReg, GuestRegisters, RspInVmcs, UnknownGpReg};

/// SDM Vol. 3C, Table 28-3 (exit qualification for control-register accesses, bits 11:8).
const SDM_TABLE: [(u64, &str); 16] = [
    (0, "RAX"),
    (1, "RCX"),
    (2, "RDX"),
    (3, "RBX"),
    (4, "RSP"),
    (5, "RBP"),
    (6, "RSI"),
    (7, "RDI"),
    (8, "R8"),
    (9, "R9"),
    (10, "R10"),
    (11, "R11"),
    (12, "R12"),
    (13, "R13"),
    (14, "R14"),
    (15, "R15"),
];

/// The frame's fields in SDM number order, read directly (not through `gpr`).
fn by_field(regs: &GuestRegisters) -> [Option<u64>; 16] {
    [
        Some(regs.rax),
        Some(regs.rcx),
        Some(regs.rdx),
        Some(regs.rbx),
        None,
        Some(regs.rbp),
        Some(regs.rsi),
        Some(regs.rdi),
        Some(regs.r8),
        Some(regs.r9),
        Some(regs.r10),
        Some(regs.r11),
        Some(regs.r12),
        Some(regs.r13),
        Some(regs.r14),
        Some(regs.r15),
    ]
}

#[test]
fn numbering_follows_the_sdm() {
    for (number, name) in SDM_TABLE {
        let reg = GpReg::from_index(number).unwrap();
        assert_eq!(u64::from(reg.index()), number);
        assert_eq!(reg.name(), name);
        assert_eq!(reg.to_string(), name);
        assert_eq!(GpReg::ALL[number as usize], reg);
        assert_eq!(reg.in_vmcs(), name == "RSP");
    }
}

#[test]
fn each_register_reads_its_own_field() {
    let mut regs = GuestRegisters::new();
    regs.rax = 0xa0;
    regs.rcx = 0xa1;
    regs.rdx = 0xa2;
    regs.rbx = 0xa3;
    regs.rbp = 0xa5;
    regs.rsi = 0xa6;
    regs.rdi = 0xa7;
    regs.r8 = 0xa8;
    regs.r9 = 0xa9;
    regs.r10 = 0xaa;
    regs.r11 = 0xab;
    regs.r12 = 0xac;
    regs.r13 = 0xad;
    regs.r14 = 0xae;
    regs.r15 = 0xaf;
    for reg in GpReg::ALL {
        let expected = (reg != GpReg::Rsp).then(|| 0xa0 + u64::from(reg.index()));
        assert_eq!(regs.gpr(reg), expected, "{reg}");
    }
}

#[test]
fn rsp_is_refused_with_a_typed_error() {
    let mut regs = GuestRegisters::new();
    let before = by_field(&regs);
    assert_eq!(regs.set_gpr(GpReg::Rsp, 1), Err(RspInVmcs));
    assert!(regs.gpr_mut(GpReg::Rsp).is_none());
    assert_eq!(by_field(&regs), before);
    assert!(RspInVmcs.to_string().contains("GUEST_RSP"));
    assert_eq!(
        UnknownGpReg(16).to_string(),
        "register number 16 names no general-purpose register (0 = RAX ... 15 = R15)"
    );
}

proptest! {
    #[test]
    fn from_index_is_total(number in any::<u64>()) {
        match GpReg::from_index(number) {
            Some(reg) => prop_assert_eq!(u64::from(reg.index()), number),
            None => prop_assert!(number > 15),
        }
        prop_assert_eq!(GpReg::try_from(number).ok(), GpReg::from_index(number));
        prop_assert_eq!(GpReg::try_from(number), GpReg::from_index(number).ok_or(UnknownGpReg(number)));
        if let Ok(narrow) = u32::try_from(number) {
            prop_assert_eq!(GpReg::try_from(narrow).ok(), GpReg::from_index(number));
        }
        if let Ok(narrow) = u8::try_from(number) {
            prop_assert_eq!(GpReg::try_from(narrow).ok(), GpReg::from_index(number));
        }
    }

    #[test]
    fn from_field_reads_bits_3_0(bits in any::<u64>()) {
        let reg = GpReg::from_field(bits);
        prop_assert_eq!(u64::from(reg.index()), bits & 0xf);
        prop_assert_eq!(GpReg::from_index(bits & 0xf), Some(reg));
    }

    #[test]
    fn set_gpr_touches_exactly_one_slot(
        number in 0u64..16,
        value in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let reg = GpReg::from_index(number).unwrap();
        let mut regs = GuestRegisters::new();
        for (i, other) in GpReg::ALL.into_iter().enumerate() {
            if let Some(slot) = regs.gpr_mut(other) {
                *slot = seed.wrapping_add(i as u64);
            }
        }
        let before = by_field(&regs);
        let result = regs.set_gpr(reg, value);
        let after = by_field(&regs);
        if reg == GpReg::Rsp {
            prop_assert_eq!(result, Err(RspInVmcs));
            prop_assert_eq!(after, before);
        } else {
            prop_assert_eq!(result, Ok(()));
            prop_assert_eq!(regs.gpr(reg), Some(value));
            for i in 0..16 {
                if i != number as usize {
                    prop_assert_eq!(after[i], before[i]);
                }
            }
            prop_assert_eq!(after[number as usize], Some(value));
        }
    }
}
