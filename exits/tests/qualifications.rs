//! Exit qualifications: property tests over every bit, and table tests written from the SDM's
//! tables.

use exits::GpReg;
use exits::qualification::*;
use proptest::prelude::*;

/// For a format with `from_raw`, `to_raw` and `DEFINED_BITS`: re-encoding keeps exactly the defined
/// bits, decoding the re-encoding gives the same value, and `Display` works.
macro_rules! round_trip {
    ($name:ident, $ty:ty) => {
        proptest! {
            #[test]
            fn $name(raw in any::<u64>()) {
                let decoded = <$ty>::from_raw(raw);
                prop_assert_eq!(decoded.to_raw(), raw & <$ty>::DEFINED_BITS);
                prop_assert_eq!(<$ty>::from_raw(decoded.to_raw()), decoded);
                prop_assert!(!decoded.to_string().is_empty());
            }
        }
    };
}

round_trip!(debug_round_trips, DebugQualification);
round_trip!(task_switch_round_trips, TaskSwitchQualification);
round_trip!(cr_access_round_trips, CrAccessQualification);
round_trip!(mov_dr_round_trips, MovDrQualification);
round_trip!(io_round_trips, IoQualification);
round_trip!(mwait_round_trips, MwaitQualification);
round_trip!(apic_access_round_trips, ApicAccessQualification);
round_trip!(ept_violation_round_trips, EptViolationQualification);
round_trip!(pml_full_round_trips, PmlFullQualification);
round_trip!(spp_round_trips, SppQualification);
round_trip!(notify_round_trips, NotifyQualification);

proptest! {
    #[test]
    fn entry_failure_qualification_is_bijective(raw in any::<u64>()) {
        let decoded = EntryFailureQualification::from_raw(raw);
        prop_assert_eq!(decoded.to_raw(), raw);
        prop_assert!(!decoded.to_string().is_empty());
    }
}

#[test]
fn every_ept_violation_bit_has_its_own_field() {
    for n in 0..17 {
        let one = EptViolationQualification::from_raw(1 << n);
        assert_eq!(one.to_raw(), 1 << n, "bit {n}");
        assert_ne!(one, EptViolationQualification::default(), "bit {n}");
    }
    assert_eq!(
        EptViolationQualification::from_raw(1 << 17),
        EptViolationQualification::default()
    );
}

#[test]
fn io_out_dx_al_to_com1() {
    // OUT DX, AL with DX = 0x3F8: size 0 (1 byte), direction 0 (OUT), not string, not REP,
    // operand encoding 0 (DX), port in bits 31:16.
    let q = IoQualification::from_raw(0x03f8_0000);
    assert_eq!(
        q,
        IoQualification {
            size: IoSize::Byte,
            direction: IoDirection::Out,
            string: false,
            rep: false,
            operand_encoding: IoOperandEncoding::Dx,
            port: 0x3f8,
        }
    );
    assert_eq!(q.to_string(), "OUT DX, AL, port 0x3f8, 1 byte");
}

#[test]
fn io_other_encodings() {
    // IN AL, 60h: direction bit 3, immediate bit 6.
    let q = IoQualification::from_raw(0x0060_0048);
    assert_eq!(
        (q.direction, q.operand_encoding, q.port),
        (IoDirection::In, IoOperandEncoding::Immediate, 0x60)
    );
    assert_eq!(q.to_string(), "IN AL, imm8, port 0x60, 1 byte");
    // IN EAX, DX with DX = 0xCFC: size 3 = 4 bytes.
    let q = IoQualification::from_raw(0x0cfc_000b);
    assert_eq!((q.size, q.size.bytes()), (IoSize::Dword, Some(4)));
    assert_eq!(q.to_string(), "IN EAX, DX, port 0xcfc, 4 bytes");
    // REP OUTSW to DX = 0x1F0: size 1, string bit 4, REP bit 5.
    let q = IoQualification::from_raw(0x01f0_0031);
    assert!(q.string && q.rep);
    assert_eq!(q.size, IoSize::Word);
    assert_eq!(q.to_string(), "REP OUTS (DX), port 0x1f0, 2 bytes");
    // Size 2 is not defined.
    assert_eq!(IoQualification::from_raw(2).size, IoSize::Reserved(2));
}

#[test]
fn cr_access_encodings() {
    // MOV CR0, RAX: CR 0, access type 0, GPR 0.
    let q = CrAccessQualification::from_raw(0);
    assert_eq!(
        (q.cr, q.access_type, q.gpr),
        (0, CrAccessType::MovToCr, GpReg::Rax)
    );
    assert_eq!(q.to_string(), "MOV CR0, RAX");
    // MOV CR4, RBX.
    assert_eq!(
        CrAccessQualification::from_raw(0x304).to_string(),
        "MOV CR4, RBX"
    );
    // MOV R15, CR8: access type 1 (bit 4), GPR 15 in bits 11:8.
    let q = CrAccessQualification::from_raw(0xf18);
    assert_eq!(
        (q.cr, q.access_type, q.gpr),
        (8, CrAccessType::MovFromCr, GpReg::R15)
    );
    assert_eq!(q.to_string(), "MOV R15, CR8");
    // CLTS: access type 2.
    assert_eq!(
        CrAccessQualification::from_raw(0x20).access_type,
        CrAccessType::Clts
    );
    // LMSW with a memory operand whose value is 0x0001: access type 3, bit 6, source in 31:16.
    let q = CrAccessQualification::from_raw(0x0001_0070);
    assert_eq!(
        (q.access_type, q.lmsw_operand, q.lmsw_source),
        (CrAccessType::Lmsw, LmswOperandType::Memory, 1)
    );
    assert_eq!(q.to_string(), "LMSW 0x0001 (memory operand)");
    // LMSW AX with AX = 0xfff1 (register operand).
    let q = CrAccessQualification::from_raw(0xfff1_0030);
    assert_eq!(
        (q.lmsw_operand, q.lmsw_source),
        (LmswOperandType::Register, 0xfff1)
    );
}

#[test]
fn mov_dr_encodings() {
    // MOV DR7, RAX.
    let q = MovDrQualification::from_raw(7);
    assert_eq!(
        (q.dr, q.direction, q.gpr),
        (7, MovDrDirection::ToDr, GpReg::Rax)
    );
    assert_eq!(q.to_string(), "MOV DR7, RAX");
    // MOV RSI, DR6: direction bit 4, GPR 6.
    let q = MovDrQualification::from_raw(0x616);
    assert_eq!(
        (q.dr, q.direction, q.gpr),
        (6, MovDrDirection::FromDr, GpReg::Rsi)
    );
    assert_eq!(q.to_string(), "MOV RSI, DR6");
}

#[test]
fn ept_violation_write_to_present_read_only_page() {
    // A data write (bit 1) to a page that is readable (bit 3) but neither writable nor
    // executable, with a valid guest-linear address (bit 7) that it is the translation of (bit 8).
    let q = EptViolationQualification::from_raw(0x18a);
    assert!(q.write && !q.read && !q.fetch);
    assert!(q.readable && !q.writable && !q.executable);
    assert!(q.guest_linear_valid && q.translated_access);
    assert!(q.present());
    assert_eq!(
        q.to_string(),
        "access write; EPT permissions R; to the translation of a guest-linear address"
    );
}

#[test]
fn ept_violation_other_encodings() {
    // Instruction fetch from a not-present page during a guest page walk (bit 8 clear).
    let q = EptViolationQualification::from_raw(0x84);
    assert!(q.fetch && !q.present() && q.guest_linear_valid && !q.translated_access);
    assert_eq!(
        q.to_string(),
        "access fetch; EPT permissions none; to a guest paging-structure entry"
    );
    // Advanced information: user-mode (9), writable (10), execute-disable (11) linear address,
    // NMI unblocking (12), shadow-stack access (13).
    let q = EptViolationQualification::from_raw(0x3f82);
    assert!(q.user_mode_linear && q.writable_linear && q.execute_disable_linear);
    assert!(q.nmi_unblocking && q.shadow_stack_access);
    assert!(!q.supervisor_shadow_stack && !q.guest_paging_verification && !q.asynchronous);
    let q = EptViolationQualification::from_raw(0x1_c000);
    assert!(q.supervisor_shadow_stack && q.guest_paging_verification && q.asynchronous);
    // Mode-based execute control: executable for supervisor (5) but not user (6).
    let q = EptViolationQualification::from_raw(0x2c);
    assert!(q.executable && !q.user_executable && q.fetch);
}

#[test]
fn debug_encodings() {
    let q = DebugQualification::from_raw(0x4000);
    assert!(q.single_step && q.breakpoints == 0);
    assert_eq!(q.to_string(), "BS (single step)");
    let q = DebugQualification::from_raw(0x2005);
    assert!(q.breakpoint(0) && !q.breakpoint(1) && q.breakpoint(2) && q.debug_register_access);
    assert!(!q.breakpoint(4));
    assert_eq!(
        DebugQualification::from_raw(0x1_0800),
        DebugQualification {
            bus_lock: true,
            rtm: true,
            ..DebugQualification::default()
        }
    );
}

#[test]
fn task_switch_encodings() {
    // JMP to the TSS with selector 0x28: source 2 in bits 31:30.
    let q = TaskSwitchQualification::from_raw(0x8000_0028);
    assert_eq!((q.selector, q.source), (0x28, TaskSwitchSource::Jmp));
    assert_eq!(q.to_string(), "to TSS selector 0x0028 by JMP");
    assert_eq!(
        TaskSwitchQualification::from_raw(0xc000_0050).source,
        TaskSwitchSource::TaskGate
    );
    assert_eq!(
        TaskSwitchQualification::from_raw(0x4000_0008).source,
        TaskSwitchSource::Iret
    );
    assert_eq!(
        TaskSwitchQualification::from_raw(0x10).source,
        TaskSwitchSource::Call
    );
}

#[test]
fn apic_access_encodings() {
    // Linear write to the EOI register (offset 0xB0): access type 1.
    let q = ApicAccessQualification::from_raw(0x10b0);
    assert_eq!(
        (q.access_type, q.offset()),
        (ApicAccessType::LinearWrite, Some(0xb0))
    );
    assert_eq!(q.to_string(), "linear write at offset 0x0b0");
    // Guest-physical access during event delivery (type 10): no offset.
    let q = ApicAccessQualification::from_raw(0xa000);
    assert_eq!(
        (q.access_type, q.offset()),
        (ApicAccessType::GuestPhysicalEventDelivery, None)
    );
    // Guest-physical access for an instruction (type 15), asynchronous (bit 16).
    let q = ApicAccessQualification::from_raw(0x1_f000);
    assert_eq!(q.access_type, ApicAccessType::GuestPhysicalInstruction);
    assert!(q.asynchronous);
    assert_eq!(
        ApicAccessQualification::from_raw(0x5000).access_type,
        ApicAccessType::Reserved(5)
    );
}

#[test]
fn small_formats() {
    assert!(MwaitQualification::from_raw(1).monitor_armed);
    assert!(PmlFullQualification::from_raw(0x1000).nmi_unblocking);
    assert!(!PmlFullQualification::from_raw(0x0fff).nmi_unblocking);
    let spp = SppQualification::from_raw(0x800);
    assert_eq!((spp.kind, spp.nmi_unblocking), (SppEventKind::Miss, false));
    assert_eq!(
        SppQualification::from_raw(0x1000).kind,
        SppEventKind::Misconfiguration
    );
    let notify = NotifyQualification::from_raw(1);
    assert!(notify.context_invalid && !notify.nmi_unblocking);
    assert_eq!(
        EntryFailureQualification::from_raw(2),
        EntryFailureQualification::PdpteLoading
    );
    assert_eq!(
        EntryFailureQualification::from_raw(4),
        EntryFailureQualification::InvalidVmcsLinkPointer
    );
    assert_eq!(
        EntryFailureQualification::from_raw(1),
        EntryFailureQualification::Unknown(1)
    );
}

/// Spreads the bits of `n` over the set bits of `mask` (lowest first).
fn deposit(mut n: u64, mask: u64) -> u64 {
    let mut out = 0;
    let mut m = mask;
    while m != 0 {
        let low = m & m.wrapping_neg();
        if n & 1 != 0 {
            out |= low;
        }
        n >>= 1;
        m &= m - 1;
    }
    out
}

/// Every combination of the defined bits, for the formats with at most 18 of them.
macro_rules! exhaustive {
    ($($ty:ty),*) => {{
        $(
            let mask = <$ty>::DEFINED_BITS;
            assert!(mask.count_ones() <= 18);
            let mut seen = std::collections::HashSet::new();
            for n in 0..1u64 << mask.count_ones() {
                let raw = deposit(n, mask);
                let decoded = <$ty>::from_raw(raw);
                assert_eq!(decoded.to_raw(), raw, "{} {raw:#x}", stringify!($ty));
                assert!(seen.insert(decoded), "{} {raw:#x} decodes like another value", stringify!($ty));
            }
        )*
    }};
}

#[test]
fn every_combination_of_defined_bits_is_distinct_and_round_trips() {
    exhaustive!(
        DebugQualification,
        TaskSwitchQualification,
        MovDrQualification,
        MwaitQualification,
        ApicAccessQualification,
        EptViolationQualification,
        PmlFullQualification,
        SppQualification,
        NotifyQualification
    );
}

#[test]
fn field_enums_display() {
    assert_eq!(IoSize::Byte.to_string(), "1 byte");
    assert_eq!(IoSize::Dword.to_string(), "4 bytes");
    assert_eq!(IoSize::Reserved(2).to_string(), "reserved size 2");
    assert_eq!(IoDirection::In.to_string(), "IN");
    assert_eq!(IoOperandEncoding::Immediate.to_string(), "immediate port");
    assert_eq!(CrAccessType::MovFromCr.to_string(), "MOV from CR");
    assert_eq!(LmswOperandType::Memory.to_string(), "memory");
    assert_eq!(MovDrDirection::ToDr.to_string(), "MOV to DR");
    assert_eq!(SppEventKind::Miss.to_string(), "SPPT miss");
    assert_eq!(
        ApicAccessType::Reserved(7).to_string(),
        "reserved access type 7"
    );
    assert_eq!(
        EntryFailureQualification::Unknown(9).to_string(),
        "undefined qualification 0x9"
    );
}
