//! The software VMCS against the processor's VMREAD/VMWRITE rules, for every field and every
//! encoding, with the capability MSRs of real (emulated) processors.

use proptest::prelude::*;
use vmcs::field::RESERVED_ENCODING_BITS;
use vmcs::{
    ActivityState, ExceptionBitmap, FieldValue, FieldWidth, InterruptibilityState,
    InterruptionInfo, SegmentAccessRights, SoftVmcs, VmcsRead, VmcsWrite, WritableField, fields,
};
use vmx_caps::{
    EntryControls, ExitControls, MsrSnapshot, PinBasedControls, PrimaryControls, SecondaryControls,
    SecondaryExitControls, TertiaryControls, VmFuncControls, VmxCapabilities,
};
use vmx_core::{VmFail, VmInstructionError};

const UNSUPPORTED: VmFail = VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent);
const READ_ONLY: VmFail = VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent);

fn caps(name: &str) -> VmxCapabilities {
    let path = format!(
        "{}/../vmx-caps/testdata/{name}.msr",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut msrs = MsrSnapshot::parse(&text).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap()
}

const MODELS: [&str; 4] = [
    "core2_penryn_t9600",
    "corei5_lynnfield_750",
    "corei7_skylake_x",
    "tigerlake",
];

/// A value with every byte distinct, different for each field.
fn pattern(i: usize) -> u64 {
    0x0123_4567_89ab_cdef_u64.rotate_left(8 * (i as u32 % 8)) ^ (i as u64)
}

#[test]
fn every_field_round_trips_at_its_width() {
    let mut vmcs = SoftVmcs::all_fields();
    for (i, info) in fields::ALL.iter().enumerate() {
        vmcs.store(info.encoding, pattern(i)).unwrap();
    }
    for (i, info) in fields::ALL.iter().enumerate() {
        let expected = pattern(i) & info.width().mask();
        assert_eq!(vmcs.read_raw(info.encoding), Ok(expected), "{}", info.name);
        if let Some(high) = info.high_encoding() {
            assert_eq!(
                vmcs.read_raw(high),
                Ok(expected >> 32),
                "{} high",
                info.name
            );
        }
    }
}

#[test]
fn vmwrite_truncates_and_refuses_read_only_fields() {
    let mut strict = SoftVmcs::all_fields();
    let mut lenient = SoftVmcs::with_limits(fields::MAX_INDEX, true);
    for info in &fields::ALL {
        let result = strict.write_raw(info.encoding, u64::MAX);
        if info.read_only() {
            assert_eq!(result, Err(READ_ONLY), "{}", info.name);
            assert_eq!(
                strict.read_raw(info.encoding),
                Ok(0),
                "{} unchanged",
                info.name
            );
        } else {
            assert_eq!(result, Ok(()), "{}", info.name);
            assert_eq!(
                strict.read_raw(info.encoding),
                Ok(info.width().mask()),
                "{}",
                info.name
            );
        }
        assert_eq!(
            lenient.write_raw(info.encoding, u64::MAX),
            Ok(()),
            "{}",
            info.name
        );
        let bits = match info.width() {
            FieldWidth::Bits16 => 16,
            FieldWidth::Bits32 => 32,
            FieldWidth::Bits64 | FieldWidth::Natural => 64,
        };
        assert_eq!(
            lenient.read_raw(info.encoding).unwrap().count_ones(),
            bits,
            "{}",
            info.name
        );
    }
}

#[test]
fn high_halves_read_and_write_bits_63_32() {
    let mut vmcs = SoftVmcs::all_fields();
    for info in fields::ALL
        .iter()
        .filter(|i| i.width() == FieldWidth::Bits64 && !i.read_only())
    {
        let high = info.encoding | 1;
        vmcs.write_raw(info.encoding, 0x1111_2222_3333_4444)
            .unwrap();
        vmcs.write_raw(high, 0xdead_beef_aaaa_bbbb).unwrap(); // upper bits ignored
        assert_eq!(
            vmcs.read_raw(info.encoding),
            Ok(0xaaaa_bbbb_3333_4444),
            "{}",
            info.name
        );
        assert_eq!(vmcs.read_raw(high), Ok(0xaaaa_bbbb), "{}", info.name);
    }
    // Typed high half.
    vmcs.write(fields::TSC_OFFSET.high(), 0xffff_fffe).unwrap();
    assert_eq!(vmcs.read(fields::TSC_OFFSET).unwrap() >> 32, 0xffff_fffe);
    let ro_high = fields::GUEST_PHYSICAL_ADDRESS.high();
    assert_eq!(vmcs.write_raw(ro_high.encoding(), 1), Err(READ_ONLY));
    vmcs.store(fields::GUEST_PHYSICAL_ADDRESS.encoding(), 0x5_0000_1000)
        .unwrap();
    assert_eq!(vmcs.read(ro_high), Ok(5));
}

#[test]
fn every_encoding_is_supported_exactly_when_the_table_defines_it() {
    let vmcs = SoftVmcs::all_fields();
    let mut supported = 0;
    for encoding in 0..0x1_0000_u32 {
        let full = fields::by_encoding(encoding & !1);
        let expected = encoding & RESERVED_ENCODING_BITS == 0
            && full.is_some_and(|i| encoding & 1 == 0 || i.width() == FieldWidth::Bits64);
        assert_eq!(vmcs.supports(encoding), expected, "{encoding:#x}");
        let read = vmcs.read_raw(encoding);
        if expected {
            supported += 1;
            assert!(read.is_ok(), "{encoding:#x}");
        } else {
            assert_eq!(read, Err(UNSUPPORTED), "{encoding:#x}");
            assert_eq!(
                vmcs.clone().write_raw(encoding, 0),
                Err(UNSUPPORTED),
                "{encoding:#x}"
            );
        }
    }
    let highs = fields::ALL
        .iter()
        .filter(|i| i.width() == FieldWidth::Bits64)
        .count();
    assert_eq!(supported, fields::COUNT + highs);
    for encoding in [0x1_681e, 0x8000_681e, 0x1000 | 0x681e] {
        assert_eq!(vmcs.read_raw(encoding), Err(UNSUPPORTED), "{encoding:#x}");
    }
}

#[test]
fn capability_msrs_of_real_models_bound_the_fields() {
    for model in MODELS {
        let caps = caps(model);
        let highest = caps.vmcs_enum.highest_index();
        let mut vmcs = SoftVmcs::new(&caps);
        assert_eq!(vmcs.highest_index(), highest);
        assert_eq!(
            vmcs.vmwrite_any_field(),
            caps.misc.vmwrite_any_field(),
            "{model}"
        );
        let mut beyond = 0;
        for info in &fields::ALL {
            if info.index() > highest {
                beyond += 1;
                assert_eq!(
                    vmcs.read_raw(info.encoding),
                    Err(UNSUPPORTED),
                    "{model} {}",
                    info.name
                );
                assert_eq!(
                    vmcs.write_raw(info.encoding, 0),
                    Err(UNSUPPORTED),
                    "{model} {}",
                    info.name
                );
            } else {
                assert_eq!(vmcs.read_raw(info.encoding), Ok(0), "{model} {}", info.name);
                let write = vmcs.write_raw(info.encoding, 1);
                if info.read_only() && !caps.misc.vmwrite_any_field() {
                    assert_eq!(write, Err(READ_ONLY), "{model} {}", info.name);
                } else {
                    assert_eq!(write, Ok(()), "{model} {}", info.name);
                }
            }
        }
        // The basic fields exist on every VMX processor; the newest ones on none of these models.
        assert!(vmcs.supports(fields::GUEST_RIP.encoding()), "{model}");
        assert!(
            vmcs.supports(fields::VM_EXIT_INSTRUCTION_INFORMATION.encoding()),
            "{model}"
        );
        assert!(
            !vmcs.supports(fields::INJECTED_EVENT_DATA.encoding()),
            "{model}"
        );
        assert!(beyond > 0, "{model}");
    }
}

fn typed_round_trip<F>(field: F, value: F::Value)
where
    F: WritableField,
    F::Value: PartialEq + std::fmt::Debug,
{
    let mut vmcs = SoftVmcs::all_fields();
    vmcs.write(field, value).unwrap();
    assert_eq!(vmcs.read(field).unwrap(), value);
    assert_eq!(vmcs.read_raw(field.encoding()).unwrap(), value.into_raw());
}

proptest! {
    #[test]
    fn every_value_type_round_trips_through_the_software_vmcs(a in any::<u32>(), b in any::<u64>(), c in any::<u16>()) {
        typed_round_trip(fields::PIN_BASED_VM_EXECUTION_CONTROLS, PinBasedControls::from_bits_retain(a));
        typed_round_trip(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, PrimaryControls::from_bits_retain(a));
        typed_round_trip(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, SecondaryControls::from_bits_retain(a));
        typed_round_trip(fields::TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, TertiaryControls::from_bits_retain(b));
        typed_round_trip(fields::PRIMARY_VM_EXIT_CONTROLS, ExitControls::from_bits_retain(a));
        typed_round_trip(fields::SECONDARY_VM_EXIT_CONTROLS, SecondaryExitControls::from_bits_retain(b));
        typed_round_trip(fields::VM_ENTRY_CONTROLS, EntryControls::from_bits_retain(a));
        typed_round_trip(fields::VM_FUNCTION_CONTROLS, VmFuncControls::from_bits_retain(b));
        typed_round_trip(fields::EXCEPTION_BITMAP, ExceptionBitmap::from_bits_retain(a));
        typed_round_trip(fields::GUEST_SS_ACCESS_RIGHTS, SegmentAccessRights::from_bits(a));
        typed_round_trip(fields::GUEST_INTERRUPTIBILITY_STATE, InterruptibilityState::from_bits_retain(a));
        typed_round_trip(fields::GUEST_ACTIVITY_STATE, ActivityState::from_raw(a));
        typed_round_trip(fields::VM_ENTRY_INTERRUPTION_INFORMATION, InterruptionInfo::from_bits(a));
        typed_round_trip(fields::EPT_POINTER, ept::EptPointer::from_bits(b));
        typed_round_trip(fields::GUEST_TR_SELECTOR, c);
        typed_round_trip(fields::GUEST_TR_LIMIT, a);
        typed_round_trip(fields::GUEST_CR3, b);
        typed_round_trip(fields::HOST_IA32_EFER, vmcs::Efer::from_bits_retain(b));
        typed_round_trip(fields::GUEST_CR0, vmcs::Cr0::from_bits_retain(b));
        typed_round_trip(fields::CR4_READ_SHADOW, vmcs::Cr4::from_bits_retain(b));
        typed_round_trip(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(b));
        typed_round_trip(fields::GUEST_DR7, vmcs::Dr7::from_bits_retain(b));
    }

    #[test]
    fn raw_writes_wider_than_the_field_read_back_truncated(i in 0..fields::COUNT, value in any::<u64>()) {
        let info = &fields::ALL[i];
        let mut vmcs = SoftVmcs::with_limits(fields::MAX_INDEX, true);
        vmcs.write_raw(info.encoding, value).unwrap();
        // The width from the encoding as the SDM defines it ("VMCS Component Encoding", bits
        // 14:13: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width, 64 bits on Intel 64), not from the
        // crate's width type.
        let mask = match (info.encoding >> 13) & 3 {
            0 => 0xffff,
            2 => 0xffff_ffff,
            _ => u64::MAX,
        };
        prop_assert_eq!(vmcs.read_raw(info.encoding).unwrap(), value & mask);
    }
}

#[test]
fn raw_writes_truncate_to_the_sdm_widths() {
    let mut vmcs = SoftVmcs::all_fields();
    for (encoding, expected) in [
        (0x080e, 0xcdef),                // Guest TR selector, 16-bit
        (0x480e, 0x90ab_cdef),           // Guest TR limit, 32-bit
        (0x2806, 0x1234_5678_90ab_cdef), // Guest IA32_EFER, 64-bit
        (0x6802, 0x1234_5678_90ab_cdef), // Guest CR3, natural width
    ] {
        vmcs.write_raw(encoding, 0x1234_5678_90ab_cdef).unwrap();
        assert_eq!(vmcs.read_raw(encoding), Ok(expected), "{encoding:#x}");
    }
}

#[test]
fn modify_reads_changes_and_writes() {
    let mut vmcs = SoftVmcs::all_fields();
    vmcs.write(fields::EXCEPTION_BITMAP, ExceptionBitmap::PAGE_FAULT)
        .unwrap();
    vmcs.modify(fields::EXCEPTION_BITMAP, |b| {
        b | ExceptionBitmap::INVALID_OPCODE
    })
    .unwrap();
    assert_eq!(
        vmcs.read_raw(fields::EXCEPTION_BITMAP.encoding()),
        Ok((1 << 14) | (1 << 6))
    );
    let mut small = SoftVmcs::with_limits(0, false);
    assert_eq!(
        small.modify(fields::TSC_MULTIPLIER, |m| m + 1),
        Err(UNSUPPORTED)
    );
}
