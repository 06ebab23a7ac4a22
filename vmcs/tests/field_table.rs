//! The field table against the encoding rules of the SDM ("VMCS Component Encoding") and against
//! the field lists of other implementations.

use std::collections::BTreeSet;

use vmcs::field::{HIGH_ACCESS, RESERVED_ENCODING_BITS, encoding_index};
use vmcs::{FieldType, FieldWidth, fields};

#[test]
fn every_encoding_agrees_with_its_declared_width_type_and_access() {
    for info in &fields::ALL {
        let e = info.encoding;
        assert_eq!(
            e & RESERVED_ENCODING_BITS,
            0,
            "{}: reserved bits",
            info.name
        );
        assert_eq!(
            e & HIGH_ACCESS,
            0,
            "{}: declared by a high-half encoding",
            info.name
        );
        // Width from bits 14:13, checked against the value type's declared width.
        let width_bits = match (e >> 13) & 3 {
            0 => 16,
            1 => 64,
            2 => 32,
            _ => 64,
        };
        assert_eq!(
            info.value_bits(),
            width_bits,
            "{}: value type {}",
            info.name,
            info.value_type
        );
        let width = info.width();
        assert_eq!(width.code(), (e >> 13) & 3, "{}", info.name);
        // Type from bits 11:10; read-only exactly for VM-exit information.
        let ty = info.field_type();
        assert_eq!(ty.code(), (e >> 10) & 3, "{}", info.name);
        assert_eq!(info.read_only(), (e >> 10) & 3 == 1, "{}", info.name);
        // 64-bit fields (and only they) have a high half.
        assert_eq!(
            info.high_encoding(),
            (width == FieldWidth::Bits64).then_some(e | 1),
            "{}",
            info.name
        );
        assert_eq!(info.index(), ((e >> 1) & 0x1ff) as u16);
        // The SDM names a field after its group: guest and host fields say so.
        match ty {
            FieldType::GuestState => assert!(
                info.name.starts_with("GUEST_")
                    || [
                        "VMCS_LINK_POINTER",
                        "PML_INDEX",
                        "VMX_PREEMPTION_TIMER_VALUE"
                    ]
                    .contains(&info.name),
                "{}",
                info.name
            ),
            FieldType::HostState => assert!(info.name.starts_with("HOST_"), "{}", info.name),
            _ => assert!(!info.name.starts_with("HOST_"), "{}", info.name),
        }
    }
}

#[test]
fn names_and_encodings_are_unique_and_sorted() {
    let names: BTreeSet<_> = fields::ALL.iter().map(|i| i.name).collect();
    assert_eq!(names.len(), fields::ALL.len());
    for pair in fields::ALL.windows(2) {
        assert!(
            pair[0].encoding < pair[1].encoding,
            "{} then {}",
            pair[0].name,
            pair[1].name
        );
    }
    for info in &fields::ALL {
        assert!(
            info.name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        );
        assert!(!info.sdm_name.is_empty() && info.sdm_name.trim() == info.sdm_name);
        assert_eq!(
            fields::by_encoding(info.encoding).map(|i| i.name),
            Some(info.name)
        );
        assert_eq!(
            fields::by_name(info.name).map(|i| i.encoding),
            Some(info.encoding)
        );
    }
    assert!(
        fields::by_encoding(0x681f).is_none(),
        "high halves are not table entries"
    );
    assert!(fields::by_encoding(0x4830).is_none());
}

#[test]
fn typed_constants_carry_the_table_encodings() {
    assert_eq!(fields::GUEST_RIP.encoding(), 0x681e);
    assert_eq!(fields::HOST_RSP.encoding(), 0x6c14);
    assert_eq!(fields::EPT_POINTER.encoding(), 0x201a);
    assert_eq!(fields::EPT_POINTER.high().encoding(), 0x201b);
    assert_eq!(fields::VM_INSTRUCTION_ERROR.encoding(), 0x4400);
    assert!(fields::EXIT_QUALIFICATION.read_only());
    assert!(!fields::GUEST_CR0.read_only());
    assert_eq!(fields::GUEST_CR0.width(), FieldWidth::Natural);
    assert_eq!(fields::GUEST_CS_SELECTOR.width(), FieldWidth::Bits16);
    assert_eq!(fields::TSC_OFFSET.field_type(), FieldType::Control);
    assert_eq!(
        format!("{:?}", fields::GUEST_IA32_PAT.high()),
        "GUEST_IA32_PAT_HIGH(0x2805)"
    );
    assert_eq!(
        fields::MAX_INDEX,
        0x29,
        "INJECTED_EVENT_DATA (0x2052) has the largest index"
    );
    assert_eq!(encoding_index(0x2052), 0x29);
}

/// Encodings Linux's `arch/x86/include/asm/vmx.h` (`enum vmcs_field`, with its FRED, CET, IPI
/// virtualization and TDX additions) names, full encodings only, with Linux's spelling.
const LINUX: &[(&str, u32)] = &[
    ("VIRTUAL_PROCESSOR_ID", 0x0000),
    ("POSTED_INTR_NV", 0x0002),
    ("LAST_PID_POINTER_INDEX", 0x0008),
    ("GUEST_ES_SELECTOR", 0x0800),
    ("GUEST_CS_SELECTOR", 0x0802),
    ("GUEST_SS_SELECTOR", 0x0804),
    ("GUEST_DS_SELECTOR", 0x0806),
    ("GUEST_FS_SELECTOR", 0x0808),
    ("GUEST_GS_SELECTOR", 0x080a),
    ("GUEST_LDTR_SELECTOR", 0x080c),
    ("GUEST_TR_SELECTOR", 0x080e),
    ("GUEST_INTR_STATUS", 0x0810),
    ("GUEST_PML_INDEX", 0x0812),
    ("HOST_ES_SELECTOR", 0x0c00),
    ("HOST_CS_SELECTOR", 0x0c02),
    ("HOST_SS_SELECTOR", 0x0c04),
    ("HOST_DS_SELECTOR", 0x0c06),
    ("HOST_FS_SELECTOR", 0x0c08),
    ("HOST_GS_SELECTOR", 0x0c0a),
    ("HOST_TR_SELECTOR", 0x0c0c),
    ("IO_BITMAP_A", 0x2000),
    ("IO_BITMAP_B", 0x2002),
    ("MSR_BITMAP", 0x2004),
    ("VM_EXIT_MSR_STORE_ADDR", 0x2006),
    ("VM_EXIT_MSR_LOAD_ADDR", 0x2008),
    ("VM_ENTRY_MSR_LOAD_ADDR", 0x200a),
    ("PML_ADDRESS", 0x200e),
    ("TSC_OFFSET", 0x2010),
    ("VIRTUAL_APIC_PAGE_ADDR", 0x2012),
    ("APIC_ACCESS_ADDR", 0x2014),
    ("POSTED_INTR_DESC_ADDR", 0x2016),
    ("VM_FUNCTION_CONTROL", 0x2018),
    ("EPT_POINTER", 0x201a),
    ("EOI_EXIT_BITMAP0", 0x201c),
    ("EOI_EXIT_BITMAP1", 0x201e),
    ("EOI_EXIT_BITMAP2", 0x2020),
    ("EOI_EXIT_BITMAP3", 0x2022),
    ("EPTP_LIST_ADDRESS", 0x2024),
    ("VMREAD_BITMAP", 0x2026),
    ("VMWRITE_BITMAP", 0x2028),
    ("XSS_EXIT_BITMAP", 0x202c),
    ("ENCLS_EXITING_BITMAP", 0x202e),
    ("TSC_MULTIPLIER", 0x2032),
    ("TERTIARY_VM_EXEC_CONTROL", 0x2034),
    ("SHARED_EPT_POINTER", 0x203c),
    ("PID_POINTER_TABLE", 0x2042),
    ("SECONDARY_VM_EXIT_CONTROLS", 0x2044),
    ("INJECTED_EVENT_DATA", 0x2052),
    ("GUEST_PHYSICAL_ADDRESS", 0x2400),
    ("ORIGINAL_EVENT_DATA", 0x2404),
    ("VMCS_LINK_POINTER", 0x2800),
    ("GUEST_IA32_DEBUGCTL", 0x2802),
    ("GUEST_IA32_PAT", 0x2804),
    ("GUEST_IA32_EFER", 0x2806),
    ("GUEST_IA32_PERF_GLOBAL_CTRL", 0x2808),
    ("GUEST_PDPTR0", 0x280a),
    ("GUEST_PDPTR1", 0x280c),
    ("GUEST_PDPTR2", 0x280e),
    ("GUEST_PDPTR3", 0x2810),
    ("GUEST_BNDCFGS", 0x2812),
    ("GUEST_IA32_RTIT_CTL", 0x2814),
    ("GUEST_IA32_FRED_CONFIG", 0x281a),
    ("GUEST_IA32_FRED_RSP1", 0x281c),
    ("GUEST_IA32_FRED_RSP2", 0x281e),
    ("GUEST_IA32_FRED_RSP3", 0x2820),
    ("GUEST_IA32_FRED_STKLVLS", 0x2822),
    ("GUEST_IA32_FRED_SSP1", 0x2824),
    ("GUEST_IA32_FRED_SSP2", 0x2826),
    ("GUEST_IA32_FRED_SSP3", 0x2828),
    ("HOST_IA32_PAT", 0x2c00),
    ("HOST_IA32_EFER", 0x2c02),
    ("HOST_IA32_PERF_GLOBAL_CTRL", 0x2c04),
    ("HOST_IA32_FRED_CONFIG", 0x2c08),
    ("HOST_IA32_FRED_RSP1", 0x2c0a),
    ("HOST_IA32_FRED_RSP2", 0x2c0c),
    ("HOST_IA32_FRED_RSP3", 0x2c0e),
    ("HOST_IA32_FRED_STKLVLS", 0x2c10),
    ("HOST_IA32_FRED_SSP1", 0x2c12),
    ("HOST_IA32_FRED_SSP2", 0x2c14),
    ("HOST_IA32_FRED_SSP3", 0x2c16),
    ("PIN_BASED_VM_EXEC_CONTROL", 0x4000),
    ("CPU_BASED_VM_EXEC_CONTROL", 0x4002),
    ("EXCEPTION_BITMAP", 0x4004),
    ("PAGE_FAULT_ERROR_CODE_MASK", 0x4006),
    ("PAGE_FAULT_ERROR_CODE_MATCH", 0x4008),
    ("CR3_TARGET_COUNT", 0x400a),
    ("VM_EXIT_CONTROLS", 0x400c),
    ("VM_EXIT_MSR_STORE_COUNT", 0x400e),
    ("VM_EXIT_MSR_LOAD_COUNT", 0x4010),
    ("VM_ENTRY_CONTROLS", 0x4012),
    ("VM_ENTRY_MSR_LOAD_COUNT", 0x4014),
    ("VM_ENTRY_INTR_INFO_FIELD", 0x4016),
    ("VM_ENTRY_EXCEPTION_ERROR_CODE", 0x4018),
    ("VM_ENTRY_INSTRUCTION_LEN", 0x401a),
    ("TPR_THRESHOLD", 0x401c),
    ("SECONDARY_VM_EXEC_CONTROL", 0x401e),
    ("PLE_GAP", 0x4020),
    ("PLE_WINDOW", 0x4022),
    ("NOTIFY_WINDOW", 0x4024),
    ("VM_INSTRUCTION_ERROR", 0x4400),
    ("VM_EXIT_REASON", 0x4402),
    ("VM_EXIT_INTR_INFO", 0x4404),
    ("VM_EXIT_INTR_ERROR_CODE", 0x4406),
    ("IDT_VECTORING_INFO_FIELD", 0x4408),
    ("IDT_VECTORING_ERROR_CODE", 0x440a),
    ("VM_EXIT_INSTRUCTION_LEN", 0x440c),
    ("VMX_INSTRUCTION_INFO", 0x440e),
    ("GUEST_ES_LIMIT", 0x4800),
    ("GUEST_CS_LIMIT", 0x4802),
    ("GUEST_SS_LIMIT", 0x4804),
    ("GUEST_DS_LIMIT", 0x4806),
    ("GUEST_FS_LIMIT", 0x4808),
    ("GUEST_GS_LIMIT", 0x480a),
    ("GUEST_LDTR_LIMIT", 0x480c),
    ("GUEST_TR_LIMIT", 0x480e),
    ("GUEST_GDTR_LIMIT", 0x4810),
    ("GUEST_IDTR_LIMIT", 0x4812),
    ("GUEST_ES_AR_BYTES", 0x4814),
    ("GUEST_CS_AR_BYTES", 0x4816),
    ("GUEST_SS_AR_BYTES", 0x4818),
    ("GUEST_DS_AR_BYTES", 0x481a),
    ("GUEST_FS_AR_BYTES", 0x481c),
    ("GUEST_GS_AR_BYTES", 0x481e),
    ("GUEST_LDTR_AR_BYTES", 0x4820),
    ("GUEST_TR_AR_BYTES", 0x4822),
    ("GUEST_INTERRUPTIBILITY_INFO", 0x4824),
    ("GUEST_ACTIVITY_STATE", 0x4826),
    ("GUEST_SYSENTER_CS", 0x482a),
    ("VMX_PREEMPTION_TIMER_VALUE", 0x482e),
    ("HOST_IA32_SYSENTER_CS", 0x4c00),
    ("CR0_GUEST_HOST_MASK", 0x6000),
    ("CR4_GUEST_HOST_MASK", 0x6002),
    ("CR0_READ_SHADOW", 0x6004),
    ("CR4_READ_SHADOW", 0x6006),
    ("CR3_TARGET_VALUE0", 0x6008),
    ("CR3_TARGET_VALUE1", 0x600a),
    ("CR3_TARGET_VALUE2", 0x600c),
    ("CR3_TARGET_VALUE3", 0x600e),
    ("EXIT_QUALIFICATION", 0x6400),
    ("GUEST_LINEAR_ADDRESS", 0x640a),
    ("GUEST_CR0", 0x6800),
    ("GUEST_CR3", 0x6802),
    ("GUEST_CR4", 0x6804),
    ("GUEST_ES_BASE", 0x6806),
    ("GUEST_CS_BASE", 0x6808),
    ("GUEST_SS_BASE", 0x680a),
    ("GUEST_DS_BASE", 0x680c),
    ("GUEST_FS_BASE", 0x680e),
    ("GUEST_GS_BASE", 0x6810),
    ("GUEST_LDTR_BASE", 0x6812),
    ("GUEST_TR_BASE", 0x6814),
    ("GUEST_GDTR_BASE", 0x6816),
    ("GUEST_IDTR_BASE", 0x6818),
    ("GUEST_DR7", 0x681a),
    ("GUEST_RSP", 0x681c),
    ("GUEST_RIP", 0x681e),
    ("GUEST_RFLAGS", 0x6820),
    ("GUEST_PENDING_DBG_EXCEPTIONS", 0x6822),
    ("GUEST_SYSENTER_ESP", 0x6824),
    ("GUEST_SYSENTER_EIP", 0x6826),
    ("GUEST_S_CET", 0x6828),
    ("GUEST_SSP", 0x682a),
    ("GUEST_INTR_SSP_TABLE", 0x682c),
    ("HOST_CR0", 0x6c00),
    ("HOST_CR3", 0x6c02),
    ("HOST_CR4", 0x6c04),
    ("HOST_FS_BASE", 0x6c06),
    ("HOST_GS_BASE", 0x6c08),
    ("HOST_TR_BASE", 0x6c0a),
    ("HOST_GDTR_BASE", 0x6c0c),
    ("HOST_IDTR_BASE", 0x6c0e),
    ("HOST_IA32_SYSENTER_ESP", 0x6c10),
    ("HOST_IA32_SYSENTER_EIP", 0x6c12),
    ("HOST_RSP", 0x6c14),
    ("HOST_RIP", 0x6c16),
    ("HOST_S_CET", 0x6c18),
    ("HOST_SSP", 0x6c1a),
    ("HOST_INTR_SSP_TABLE", 0x6c1c),
];

/// Fields Bochs emulates (`cpu/vmx.h`) that Linux does not name.
const BOCHS_ONLY: &[(&str, u32)] = &[
    ("VMCS_16BIT_CONTROL_EPTP_INDEX", 0x0004),
    ("VMCS_64BIT_CONTROL_EXECUTIVE_VMCS_PTR", 0x200c),
    ("VMCS_64BIT_CONTROL_VE_EXCEPTION_INFO_ADDR", 0x202a),
    ("VMCS_64BIT_CONTROL_SPPTP", 0x2030),
    ("VMCS_64BIT_CONTROL_PCONFIG_EXITING_BITMAP", 0x203e),
    ("VMCS_64BIT_GUEST_IA32_PKRS", 0x2818),
    ("VMCS_64BIT_HOST_IA32_PKRS", 0x2c06),
    ("VMCS_32BIT_GUEST_SMBASE", 0x4828),
    ("VMCS_GUEST_IO_RCX", 0x6402),
    ("VMCS_GUEST_IO_RSI", 0x6404),
    ("VMCS_GUEST_IO_RDI", 0x6406),
    ("VMCS_GUEST_IO_RIP", 0x6408),
    ("VMCS_64BIT_MSR_DATA", 0x2402),
    ("VMCS_64BIT_GUEST_IA32_SPEC_CTRL", 0x282e),
    ("VMCS_64BIT_HOST_IA32_SPEC_CTRL", 0x2c1a),
];

#[test]
fn every_encoding_linux_or_bochs_knows_is_declared() {
    for (name, encoding) in LINUX.iter().chain(BOCHS_ONLY) {
        assert!(
            fields::by_encoding(*encoding).is_some(),
            "{name} ({encoding:#06x}) missing"
        );
    }
    // Counting high halves the way vmx.h does (one `_HIGH` entry per 64-bit field).
    let with_high: usize = fields::ALL
        .iter()
        .map(|i| 1 + usize::from(i.high_encoding().is_some()))
        .sum();
    assert!(with_high >= 195 + 40, "{with_high} encodings");
    const { assert!(fields::COUNT >= 199) };
}

/// The IA32_SPEC_CTRL and MSR-data fields Bochs emulates: 64-bit, full and high access, of the
/// group their encoding's bits 11:10 name (read-only data, guest state, host state).
#[test]
fn spec_ctrl_and_msr_data_fields() {
    for (field, name, ty, high) in [
        (
            fields::MSR_DATA.encoding(),
            "MSR_DATA",
            FieldType::ExitInformation,
            0x2403,
        ),
        (
            fields::GUEST_IA32_SPEC_CTRL.encoding(),
            "GUEST_IA32_SPEC_CTRL",
            FieldType::GuestState,
            0x282f,
        ),
        (
            fields::HOST_IA32_SPEC_CTRL.encoding(),
            "HOST_IA32_SPEC_CTRL",
            FieldType::HostState,
            0x2c1b,
        ),
    ] {
        let info = fields::by_encoding(field).unwrap();
        assert_eq!(info.name, name);
        assert_eq!(info.width(), FieldWidth::Bits64, "{name}");
        assert_eq!(info.field_type(), ty, "{name}");
        assert_eq!(info.read_only(), ty == FieldType::ExitInformation, "{name}");
        assert_eq!(info.high_encoding(), Some(high), "{name}");
        assert_eq!(info.value_type, "u64", "{name}");
    }
    assert!(fields::MSR_DATA.read_only());
    assert_eq!(fields::MSR_DATA.encoding(), 0x2402);
    assert_eq!(fields::GUEST_IA32_SPEC_CTRL.encoding(), 0x282e);
    assert_eq!(fields::HOST_IA32_SPEC_CTRL.encoding(), 0x2c1a);
    assert_eq!(fields::HOST_IA32_SPEC_CTRL.high().encoding(), 0x2c1b);
}

#[test]
fn newer_sdm_fields_are_declared() {
    for (enc, name) in [
        (0x0006, "HLAT_PREFIX_SIZE"),
        (0x0814, "GUEST_UINV"),
        (0x2034, "TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS"),
        (0x2036, "ENCLV_EXITING_BITMAP"),
        (0x2038, "LOW_PASID_DIRECTORY_ADDRESS"),
        (0x203a, "HIGH_PASID_DIRECTORY_ADDRESS"),
        (
            0x2040,
            "HYPERVISOR_MANAGED_LINEAR_ADDRESS_TRANSLATION_POINTER",
        ),
        (0x2042, "PID_POINTER_TABLE_ADDRESS"),
        (0x2044, "SECONDARY_VM_EXIT_CONTROLS"),
        (0x204a, "IA32_SPEC_CTRL_MASK"),
        (0x204c, "IA32_SPEC_CTRL_SHADOW"),
        (0x2816, "GUEST_IA32_LBR_CTL"),
        (0x4024, "INSTRUCTION_TIMEOUT_CONTROL"),
        (0x682c, "GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR"),
    ] {
        assert_eq!(fields::by_encoding(enc).map(|i| i.name), Some(name));
    }
}

/// APIC-timer virtualization (tertiary processor-based control bit 8): the virtual timer vector
/// (16-bit control 000AH), the guest deadline shadow (64-bit control 204EH) and the guest deadline
/// (64-bit guest state 2830H), as Appendix B lists them (Bochs and Linux use the same encodings).
#[test]
fn apic_timer_virtualization_fields() {
    for (enc, name, width, ty) in [
        (
            0x000a,
            "VIRTUAL_TIMER_VECTOR",
            FieldWidth::Bits16,
            FieldType::Control,
        ),
        (
            0x204e,
            "GUEST_DEADLINE_SHADOW",
            FieldWidth::Bits64,
            FieldType::Control,
        ),
        (
            0x2830,
            "GUEST_DEADLINE",
            FieldWidth::Bits64,
            FieldType::GuestState,
        ),
    ] {
        let info = fields::by_encoding(enc).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info.name, name);
        assert_eq!((info.width(), info.field_type()), (width, ty), "{name}");
        assert!(!info.read_only(), "{name}");
    }
    assert_eq!(fields::VIRTUAL_TIMER_VECTOR.encoding(), 0x000a);
    assert_eq!(fields::GUEST_DEADLINE_SHADOW.high().encoding(), 0x204f);
    assert_eq!(fields::GUEST_DEADLINE.high().encoding(), 0x2831);
}
