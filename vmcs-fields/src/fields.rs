//! Every VMCS field of the SDM's Appendix B ("Field Encoding in VMCS"), declared once.
//!
//! Each constant is named after the field's Appendix B name in SCREAMING_SNAKE_CASE and is a
//! typed [`Field`] handle: its encoding, the type a read returns (`u16`, `u32`, `u64` or a
//! value type such as [`SegmentAccessRights`]), whether the typed write accepts it, and its width.
//! The same table generates [`ALL`], the metadata list (name, encoding, width, type, read-only),
//! in Appendix B order, which is ascending encoding order.
//!
//! Width, type and read-only-ness are bits of the encoding (see [`crate::field`]); every
//! declaration is checked against them at compile time (a field whose encoding, markers or value
//! type disagree does not compile), and again by the tests.
//!
//! 64-bit fields are declared by their full encoding; [`Field::high`] gives the high half
//! (`encoding | 1`, bits 63:32) for 32-bit users:
//!
//! ```
//! use vmcs_fields::fields;
//!
//! assert_eq!(fields::GUEST_IA32_EFER.encoding(), 0x2806);
//! assert_eq!(fields::GUEST_IA32_EFER.high().encoding(), 0x2807);
//! assert!(fields::EXIT_REASON.read_only());
//! ```

use crate::EptPointer;
use crate::field::{
    Field, FieldInfo, FieldType, HighHalf, ReadOnly, ReadWrite, Width16, Width32, Width64,
    WidthNatural,
};
use crate::value::{
    ActivityState, ExceptionBitmap, FieldValue, InterruptibilityState, InterruptionInfo,
    PendingDebugExceptions, SegmentAccessRights,
};
use vmx_caps::arch::{Cr0, Cr4, DebugCtl, Dr7, Efer, Rflags};
use vmx_caps::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    SecondaryExitControls, TertiaryControls, VmFuncControls,
};

/// A handle on the high half of a 64-bit field, as [`Field::high`] returns it.
pub type HighField<A> = Field<u32, A, HighHalf>;

macro_rules! vmcs_fields {
    (
        $(
            [$width:ident, $access:ident] {
                $(
                    #[doc = $doc:literal]
                    $name:ident: $ty:ty = $enc:literal;
                )*
            }
        )*
    ) => {
        $($(
            #[doc = $doc]
            #[doc = ""]
            #[doc = concat!("Encoding `", stringify!($enc), "`; reads as `", stringify!($ty), "`.")]
            pub const $name: Field<$ty, $access, $width> = Field::declare::<$enc>();
        )*)*

        /// Number of fields in the table.
        pub const COUNT: usize = [$($(stringify!($name)),*),*].len();

        /// Encodings of [`ALL`], readable in constants.
        const ALL_ENCODINGS: [u32; COUNT] = [$($($enc),*),*];

        /// Every field, in Appendix B order (ascending encoding).
        pub static ALL: [FieldInfo; COUNT] = [
            $($(
                FieldInfo {
                    name: stringify!($name),
                    encoding: $enc,
                    sdm_name: $doc.trim_ascii(),
                    value_type: stringify!($ty),
                    value_bits: <$ty as FieldValue>::BITS,
                    format: <$ty as FieldValue>::format_raw,
                },
            )*)*
        ];
    };
}

/// How many fields of [`ALL`] have type bits `t` (encoding bits 11:10).
const fn count_of_type(t: u32) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < COUNT {
        if (ALL_ENCODINGS[i] >> 10) & 3 == t {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The encodings of [`ALL`] with type bits `t`, ascending; `N` is [`count_of_type`]`(t)`.
const fn encodings_of_type<const N: usize>(t: u32) -> [u32; N] {
    let mut out = [0; N];
    let (mut i, mut n) = (0, 0);
    while i < COUNT && n < N {
        if (ALL_ENCODINGS[i] >> 10) & 3 == t {
            out[n] = ALL_ENCODINGS[i];
            n += 1;
        }
        i += 1;
    }
    out
}

const CONTROL_ENCODINGS: [u32; count_of_type(0)] = encodings_of_type(0);
const EXIT_INFORMATION_ENCODINGS: [u32; count_of_type(1)] = encodings_of_type(1);
const GUEST_STATE_ENCODINGS: [u32; count_of_type(2)] = encodings_of_type(2);
const HOST_STATE_ENCODINGS: [u32; count_of_type(3)] = encodings_of_type(3);

/// The encodings of the fields of [`ALL`] of type `field_type` (encoding bits 11:10), ascending:
/// the list to walk when a whole class of fields is copied (e.g. the guest state saved at a VM
/// exit, SDM Vol. 3C 28.3), computed at compile time from the table.
///
/// ```
/// use vmcs_fields::{FieldType, fields};
///
/// let exit_info = fields::encodings_of(FieldType::ExitInformation);
/// assert!(exit_info.contains(&fields::EXIT_REASON.encoding()));
/// assert!(exit_info.iter().all(|&e| FieldType::from_encoding(e) == FieldType::ExitInformation));
/// let total: usize = FieldType::ALL.iter().map(|&t| fields::encodings_of(t).len()).sum();
/// assert_eq!(total, fields::COUNT);
/// ```
#[must_use]
pub const fn encodings_of(field_type: FieldType) -> &'static [u32] {
    match field_type {
        FieldType::Control => &CONTROL_ENCODINGS,
        FieldType::ExitInformation => &EXIT_INFORMATION_ENCODINGS,
        FieldType::GuestState => &GUEST_STATE_ENCODINGS,
        FieldType::HostState => &HOST_STATE_ENCODINGS,
    }
}

vmcs_fields! {
    // B.1.1 16-Bit Control Fields
    [Width16, ReadWrite] {
        /// Virtual-processor identifier (VPID)
        VIRTUAL_PROCESSOR_IDENTIFIER: u16 = 0x0000;
        /// Posted-interrupt notification vector
        POSTED_INTERRUPT_NOTIFICATION_VECTOR: u16 = 0x0002;
        /// EPTP index
        EPTP_INDEX: u16 = 0x0004;
        /// HLAT prefix size
        HLAT_PREFIX_SIZE: u16 = 0x0006;
        /// Last PID-pointer index
        LAST_PID_POINTER_INDEX: u16 = 0x0008;
        /// Virtual timer vector (APIC-timer virtualization)
        VIRTUAL_TIMER_VECTOR: u16 = 0x000a;
    }
    // B.1.2 16-Bit Guest-State Fields
    [Width16, ReadWrite] {
        /// Guest ES selector
        GUEST_ES_SELECTOR: u16 = 0x0800;
        /// Guest CS selector
        GUEST_CS_SELECTOR: u16 = 0x0802;
        /// Guest SS selector
        GUEST_SS_SELECTOR: u16 = 0x0804;
        /// Guest DS selector
        GUEST_DS_SELECTOR: u16 = 0x0806;
        /// Guest FS selector
        GUEST_FS_SELECTOR: u16 = 0x0808;
        /// Guest GS selector
        GUEST_GS_SELECTOR: u16 = 0x080a;
        /// Guest LDTR selector
        GUEST_LDTR_SELECTOR: u16 = 0x080c;
        /// Guest TR selector
        GUEST_TR_SELECTOR: u16 = 0x080e;
        /// Guest interrupt status (RVI in bits 7:0, SVI in bits 15:8)
        GUEST_INTERRUPT_STATUS: u16 = 0x0810;
        /// PML index
        PML_INDEX: u16 = 0x0812;
        /// Guest UINV (user-interrupt notification vector)
        GUEST_UINV: u16 = 0x0814;
    }
    // B.1.3 16-Bit Host-State Fields
    [Width16, ReadWrite] {
        /// Host ES selector
        HOST_ES_SELECTOR: u16 = 0x0c00;
        /// Host CS selector
        HOST_CS_SELECTOR: u16 = 0x0c02;
        /// Host SS selector
        HOST_SS_SELECTOR: u16 = 0x0c04;
        /// Host DS selector
        HOST_DS_SELECTOR: u16 = 0x0c06;
        /// Host FS selector
        HOST_FS_SELECTOR: u16 = 0x0c08;
        /// Host GS selector
        HOST_GS_SELECTOR: u16 = 0x0c0a;
        /// Host TR selector
        HOST_TR_SELECTOR: u16 = 0x0c0c;
    }
    // B.2.1 64-Bit Control Fields
    [Width64, ReadWrite] {
        /// Address of I/O bitmap A
        ADDRESS_OF_IO_BITMAP_A: u64 = 0x2000;
        /// Address of I/O bitmap B
        ADDRESS_OF_IO_BITMAP_B: u64 = 0x2002;
        /// Address of MSR bitmaps
        ADDRESS_OF_MSR_BITMAPS: u64 = 0x2004;
        /// VM-exit MSR-store address
        VM_EXIT_MSR_STORE_ADDRESS: u64 = 0x2006;
        /// VM-exit MSR-load address
        VM_EXIT_MSR_LOAD_ADDRESS: u64 = 0x2008;
        /// VM-entry MSR-load address
        VM_ENTRY_MSR_LOAD_ADDRESS: u64 = 0x200a;
        /// Executive-VMCS pointer
        EXECUTIVE_VMCS_POINTER: u64 = 0x200c;
        /// PML address
        PML_ADDRESS: u64 = 0x200e;
        /// TSC offset
        TSC_OFFSET: u64 = 0x2010;
        /// Virtual-APIC address
        VIRTUAL_APIC_ADDRESS: u64 = 0x2012;
        /// APIC-access address
        APIC_ACCESS_ADDRESS: u64 = 0x2014;
        /// Posted-interrupt descriptor address
        POSTED_INTERRUPT_DESCRIPTOR_ADDRESS: u64 = 0x2016;
        /// VM-function controls
        VM_FUNCTION_CONTROLS: VmFuncControls = 0x2018;
        /// EPT pointer (EPTP)
        EPT_POINTER: EptPointer = 0x201a;
        /// EOI-exit bitmap 0 (EOI_EXIT0)
        EOI_EXIT_BITMAP_0: u64 = 0x201c;
        /// EOI-exit bitmap 1 (EOI_EXIT1)
        EOI_EXIT_BITMAP_1: u64 = 0x201e;
        /// EOI-exit bitmap 2 (EOI_EXIT2)
        EOI_EXIT_BITMAP_2: u64 = 0x2020;
        /// EOI-exit bitmap 3 (EOI_EXIT3)
        EOI_EXIT_BITMAP_3: u64 = 0x2022;
        /// EPTP-list address
        EPTP_LIST_ADDRESS: u64 = 0x2024;
        /// VMREAD-bitmap address
        VMREAD_BITMAP_ADDRESS: u64 = 0x2026;
        /// VMWRITE-bitmap address
        VMWRITE_BITMAP_ADDRESS: u64 = 0x2028;
        /// Virtualization-exception information address
        VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS: u64 = 0x202a;
        /// XSS-exiting bitmap
        XSS_EXITING_BITMAP: u64 = 0x202c;
        /// ENCLS-exiting bitmap
        ENCLS_EXITING_BITMAP: u64 = 0x202e;
        /// Sub-page-permission-table pointer (SPPTP)
        SUB_PAGE_PERMISSION_TABLE_POINTER: u64 = 0x2030;
        /// TSC multiplier
        TSC_MULTIPLIER: u64 = 0x2032;
        /// Tertiary processor-based VM-execution controls
        TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS: TertiaryControls = 0x2034;
        /// ENCLV-exiting bitmap
        ENCLV_EXITING_BITMAP: u64 = 0x2036;
        /// Low PASID directory address
        LOW_PASID_DIRECTORY_ADDRESS: u64 = 0x2038;
        /// High PASID directory address
        HIGH_PASID_DIRECTORY_ADDRESS: u64 = 0x203a;
        /// Shared EPT pointer (Intel TDX; used by the TDX module, listed by Linux)
        SHARED_EPT_POINTER: u64 = 0x203c;
        /// PCONFIG-exiting bitmap
        PCONFIG_EXITING_BITMAP: u64 = 0x203e;
        /// Hypervisor-managed linear-address translation pointer (HLATP)
        HYPERVISOR_MANAGED_LINEAR_ADDRESS_TRANSLATION_POINTER: u64 = 0x2040;
        /// PID-pointer table address
        PID_POINTER_TABLE_ADDRESS: u64 = 0x2042;
        /// Secondary VM-exit controls
        SECONDARY_VM_EXIT_CONTROLS: SecondaryExitControls = 0x2044;
        /// IA32_SPEC_CTRL mask
        IA32_SPEC_CTRL_MASK: u64 = 0x204a;
        /// IA32_SPEC_CTRL shadow
        IA32_SPEC_CTRL_SHADOW: u64 = 0x204c;
        /// Guest deadline shadow (APIC-timer virtualization)
        GUEST_DEADLINE_SHADOW: u64 = 0x204e;
        /// Injected-event data (FRED)
        INJECTED_EVENT_DATA: u64 = 0x2052;
    }
    // B.2.2 64-Bit Read-Only Data Field
    [Width64, ReadOnly] {
        /// Guest-physical address
        GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
        /// MSR data (VM-exit information for the MSR-list instructions)
        MSR_DATA: u64 = 0x2402;
        /// Original-event data (FRED)
        ORIGINAL_EVENT_DATA: u64 = 0x2404;
    }
    // B.2.3 64-Bit Guest-State Fields
    [Width64, ReadWrite] {
        /// VMCS link pointer
        VMCS_LINK_POINTER: u64 = 0x2800;
        /// Guest IA32_DEBUGCTL
        GUEST_IA32_DEBUGCTL: DebugCtl = 0x2802;
        /// Guest IA32_PAT
        GUEST_IA32_PAT: u64 = 0x2804;
        /// Guest IA32_EFER
        GUEST_IA32_EFER: Efer = 0x2806;
        /// Guest IA32_PERF_GLOBAL_CTRL
        GUEST_IA32_PERF_GLOBAL_CTRL: u64 = 0x2808;
        /// Guest PDPTE0
        GUEST_PDPTE0: u64 = 0x280a;
        /// Guest PDPTE1
        GUEST_PDPTE1: u64 = 0x280c;
        /// Guest PDPTE2
        GUEST_PDPTE2: u64 = 0x280e;
        /// Guest PDPTE3
        GUEST_PDPTE3: u64 = 0x2810;
        /// Guest IA32_BNDCFGS
        GUEST_IA32_BNDCFGS: u64 = 0x2812;
        /// Guest IA32_RTIT_CTL
        GUEST_IA32_RTIT_CTL: u64 = 0x2814;
        /// Guest IA32_LBR_CTL
        GUEST_IA32_LBR_CTL: u64 = 0x2816;
        /// Guest IA32_PKRS
        GUEST_IA32_PKRS: u64 = 0x2818;
        /// Guest IA32_FRED_CONFIG
        GUEST_IA32_FRED_CONFIG: u64 = 0x281a;
        /// Guest IA32_FRED_RSP1
        GUEST_IA32_FRED_RSP1: u64 = 0x281c;
        /// Guest IA32_FRED_RSP2
        GUEST_IA32_FRED_RSP2: u64 = 0x281e;
        /// Guest IA32_FRED_RSP3
        GUEST_IA32_FRED_RSP3: u64 = 0x2820;
        /// Guest IA32_FRED_STKLVLS
        GUEST_IA32_FRED_STKLVLS: u64 = 0x2822;
        /// Guest IA32_FRED_SSP1
        GUEST_IA32_FRED_SSP1: u64 = 0x2824;
        /// Guest IA32_FRED_SSP2
        GUEST_IA32_FRED_SSP2: u64 = 0x2826;
        /// Guest IA32_FRED_SSP3
        GUEST_IA32_FRED_SSP3: u64 = 0x2828;
        /// Guest IA32_SPEC_CTRL (loaded by VM entry with the "load guest IA32_SPEC_CTRL" control)
        GUEST_IA32_SPEC_CTRL: u64 = 0x282e;
        /// Guest deadline (APIC-timer virtualization)
        GUEST_DEADLINE: u64 = 0x2830;
    }
    // B.2.4 64-Bit Host-State Fields
    [Width64, ReadWrite] {
        /// Host IA32_PAT
        HOST_IA32_PAT: u64 = 0x2c00;
        /// Host IA32_EFER
        HOST_IA32_EFER: Efer = 0x2c02;
        /// Host IA32_PERF_GLOBAL_CTRL
        HOST_IA32_PERF_GLOBAL_CTRL: u64 = 0x2c04;
        /// Host IA32_PKRS
        HOST_IA32_PKRS: u64 = 0x2c06;
        /// Host IA32_FRED_CONFIG
        HOST_IA32_FRED_CONFIG: u64 = 0x2c08;
        /// Host IA32_FRED_RSP1
        HOST_IA32_FRED_RSP1: u64 = 0x2c0a;
        /// Host IA32_FRED_RSP2
        HOST_IA32_FRED_RSP2: u64 = 0x2c0c;
        /// Host IA32_FRED_RSP3
        HOST_IA32_FRED_RSP3: u64 = 0x2c0e;
        /// Host IA32_FRED_STKLVLS
        HOST_IA32_FRED_STKLVLS: u64 = 0x2c10;
        /// Host IA32_FRED_SSP1
        HOST_IA32_FRED_SSP1: u64 = 0x2c12;
        /// Host IA32_FRED_SSP2
        HOST_IA32_FRED_SSP2: u64 = 0x2c14;
        /// Host IA32_FRED_SSP3
        HOST_IA32_FRED_SSP3: u64 = 0x2c16;
        /// Host IA32_SPEC_CTRL (loaded at VM exit with the "load host IA32_SPEC_CTRL" control)
        HOST_IA32_SPEC_CTRL: u64 = 0x2c1a;
    }
    // B.3.1 32-Bit Control Fields
    [Width32, ReadWrite] {
        /// Pin-based VM-execution controls
        PIN_BASED_VM_EXECUTION_CONTROLS: PinBasedControls = 0x4000;
        /// Primary processor-based VM-execution controls
        PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS: PrimaryControls = 0x4002;
        /// Exception bitmap
        EXCEPTION_BITMAP: ExceptionBitmap = 0x4004;
        /// Page-fault error-code mask
        PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
        /// Page-fault error-code match
        PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
        /// CR3-target count
        CR3_TARGET_COUNT: u32 = 0x400a;
        /// Primary VM-exit controls
        PRIMARY_VM_EXIT_CONTROLS: ExitControls = 0x400c;
        /// VM-exit MSR-store count
        VM_EXIT_MSR_STORE_COUNT: u32 = 0x400e;
        /// VM-exit MSR-load count
        VM_EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
        /// VM-entry controls
        VM_ENTRY_CONTROLS: EntryControls = 0x4012;
        /// VM-entry MSR-load count
        VM_ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
        /// VM-entry interruption-information field
        VM_ENTRY_INTERRUPTION_INFORMATION: InterruptionInfo = 0x4016;
        /// VM-entry exception error code
        VM_ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
        /// VM-entry instruction length
        VM_ENTRY_INSTRUCTION_LENGTH: u32 = 0x401a;
        /// TPR threshold
        TPR_THRESHOLD: u32 = 0x401c;
        /// Secondary processor-based VM-execution controls
        SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS: SecondaryControls = 0x401e;
        /// PLE_Gap
        PLE_GAP: u32 = 0x4020;
        /// PLE_Window
        PLE_WINDOW: u32 = 0x4022;
        /// Instruction-timeout control (notify window)
        INSTRUCTION_TIMEOUT_CONTROL: u32 = 0x4024;
    }
    // B.3.2 32-Bit Read-Only Data Fields
    [Width32, ReadOnly] {
        /// VM-instruction error
        VM_INSTRUCTION_ERROR: u32 = 0x4400;
        /// Exit reason
        EXIT_REASON: u32 = 0x4402;
        /// VM-exit interruption information
        VM_EXIT_INTERRUPTION_INFORMATION: InterruptionInfo = 0x4404;
        /// VM-exit interruption error code
        VM_EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
        /// IDT-vectoring information field
        IDT_VECTORING_INFORMATION: InterruptionInfo = 0x4408;
        /// IDT-vectoring error code
        IDT_VECTORING_ERROR_CODE: u32 = 0x440a;
        /// VM-exit instruction length
        VM_EXIT_INSTRUCTION_LENGTH: u32 = 0x440c;
        /// VM-exit instruction information
        VM_EXIT_INSTRUCTION_INFORMATION: u32 = 0x440e;
    }
    // B.3.3 32-Bit Guest-State Fields
    [Width32, ReadWrite] {
        /// Guest ES limit
        GUEST_ES_LIMIT: u32 = 0x4800;
        /// Guest CS limit
        GUEST_CS_LIMIT: u32 = 0x4802;
        /// Guest SS limit
        GUEST_SS_LIMIT: u32 = 0x4804;
        /// Guest DS limit
        GUEST_DS_LIMIT: u32 = 0x4806;
        /// Guest FS limit
        GUEST_FS_LIMIT: u32 = 0x4808;
        /// Guest GS limit
        GUEST_GS_LIMIT: u32 = 0x480a;
        /// Guest LDTR limit
        GUEST_LDTR_LIMIT: u32 = 0x480c;
        /// Guest TR limit
        GUEST_TR_LIMIT: u32 = 0x480e;
        /// Guest GDTR limit
        GUEST_GDTR_LIMIT: u32 = 0x4810;
        /// Guest IDTR limit
        GUEST_IDTR_LIMIT: u32 = 0x4812;
        /// Guest ES access rights
        GUEST_ES_ACCESS_RIGHTS: SegmentAccessRights = 0x4814;
        /// Guest CS access rights
        GUEST_CS_ACCESS_RIGHTS: SegmentAccessRights = 0x4816;
        /// Guest SS access rights
        GUEST_SS_ACCESS_RIGHTS: SegmentAccessRights = 0x4818;
        /// Guest DS access rights
        GUEST_DS_ACCESS_RIGHTS: SegmentAccessRights = 0x481a;
        /// Guest FS access rights
        GUEST_FS_ACCESS_RIGHTS: SegmentAccessRights = 0x481c;
        /// Guest GS access rights
        GUEST_GS_ACCESS_RIGHTS: SegmentAccessRights = 0x481e;
        /// Guest LDTR access rights
        GUEST_LDTR_ACCESS_RIGHTS: SegmentAccessRights = 0x4820;
        /// Guest TR access rights
        GUEST_TR_ACCESS_RIGHTS: SegmentAccessRights = 0x4822;
        /// Guest interruptibility state
        GUEST_INTERRUPTIBILITY_STATE: InterruptibilityState = 0x4824;
        /// Guest activity state
        GUEST_ACTIVITY_STATE: ActivityState = 0x4826;
        /// Guest SMBASE
        GUEST_SMBASE: u32 = 0x4828;
        /// Guest IA32_SYSENTER_CS
        GUEST_IA32_SYSENTER_CS: u32 = 0x482a;
        /// VMX-preemption timer value
        VMX_PREEMPTION_TIMER_VALUE: u32 = 0x482e;
    }
    // B.3.4 32-Bit Host-State Field
    [Width32, ReadWrite] {
        /// Host IA32_SYSENTER_CS
        HOST_IA32_SYSENTER_CS: u32 = 0x4c00;
    }
    // B.4.1 Natural-Width Control Fields
    [WidthNatural, ReadWrite] {
        /// CR0 guest/host mask
        CR0_GUEST_HOST_MASK: Cr0 = 0x6000;
        /// CR4 guest/host mask
        CR4_GUEST_HOST_MASK: Cr4 = 0x6002;
        /// CR0 read shadow
        CR0_READ_SHADOW: Cr0 = 0x6004;
        /// CR4 read shadow
        CR4_READ_SHADOW: Cr4 = 0x6006;
        /// CR3-target value 0
        CR3_TARGET_VALUE_0: u64 = 0x6008;
        /// CR3-target value 1
        CR3_TARGET_VALUE_1: u64 = 0x600a;
        /// CR3-target value 2
        CR3_TARGET_VALUE_2: u64 = 0x600c;
        /// CR3-target value 3
        CR3_TARGET_VALUE_3: u64 = 0x600e;
    }
    // B.4.2 Natural-Width Read-Only Data Fields
    [WidthNatural, ReadOnly] {
        /// Exit qualification
        EXIT_QUALIFICATION: u64 = 0x6400;
        /// I/O RCX
        IO_RCX: u64 = 0x6402;
        /// I/O RSI
        IO_RSI: u64 = 0x6404;
        /// I/O RDI
        IO_RDI: u64 = 0x6406;
        /// I/O RIP
        IO_RIP: u64 = 0x6408;
        /// Guest-linear address
        GUEST_LINEAR_ADDRESS: u64 = 0x640a;
    }
    // B.4.3 Natural-Width Guest-State Fields
    [WidthNatural, ReadWrite] {
        /// Guest CR0
        GUEST_CR0: Cr0 = 0x6800;
        /// Guest CR3
        GUEST_CR3: u64 = 0x6802;
        /// Guest CR4
        GUEST_CR4: Cr4 = 0x6804;
        /// Guest ES base
        GUEST_ES_BASE: u64 = 0x6806;
        /// Guest CS base
        GUEST_CS_BASE: u64 = 0x6808;
        /// Guest SS base
        GUEST_SS_BASE: u64 = 0x680a;
        /// Guest DS base
        GUEST_DS_BASE: u64 = 0x680c;
        /// Guest FS base
        GUEST_FS_BASE: u64 = 0x680e;
        /// Guest GS base
        GUEST_GS_BASE: u64 = 0x6810;
        /// Guest LDTR base
        GUEST_LDTR_BASE: u64 = 0x6812;
        /// Guest TR base
        GUEST_TR_BASE: u64 = 0x6814;
        /// Guest GDTR base
        GUEST_GDTR_BASE: u64 = 0x6816;
        /// Guest IDTR base
        GUEST_IDTR_BASE: u64 = 0x6818;
        /// Guest DR7
        GUEST_DR7: Dr7 = 0x681a;
        /// Guest RSP
        GUEST_RSP: u64 = 0x681c;
        /// Guest RIP
        GUEST_RIP: u64 = 0x681e;
        /// Guest RFLAGS
        GUEST_RFLAGS: Rflags = 0x6820;
        /// Guest pending debug exceptions
        GUEST_PENDING_DEBUG_EXCEPTIONS: PendingDebugExceptions = 0x6822;
        /// Guest IA32_SYSENTER_ESP
        GUEST_IA32_SYSENTER_ESP: u64 = 0x6824;
        /// Guest IA32_SYSENTER_EIP
        GUEST_IA32_SYSENTER_EIP: u64 = 0x6826;
        /// Guest IA32_S_CET
        GUEST_IA32_S_CET: u64 = 0x6828;
        /// Guest SSP
        GUEST_SSP: u64 = 0x682a;
        /// Guest IA32_INTERRUPT_SSP_TABLE_ADDR
        GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR: u64 = 0x682c;
    }
    // B.4.4 Natural-Width Host-State Fields
    [WidthNatural, ReadWrite] {
        /// Host CR0
        HOST_CR0: Cr0 = 0x6c00;
        /// Host CR3
        HOST_CR3: u64 = 0x6c02;
        /// Host CR4
        HOST_CR4: Cr4 = 0x6c04;
        /// Host FS base
        HOST_FS_BASE: u64 = 0x6c06;
        /// Host GS base
        HOST_GS_BASE: u64 = 0x6c08;
        /// Host TR base
        HOST_TR_BASE: u64 = 0x6c0a;
        /// Host GDTR base
        HOST_GDTR_BASE: u64 = 0x6c0c;
        /// Host IDTR base
        HOST_IDTR_BASE: u64 = 0x6c0e;
        /// Host IA32_SYSENTER_ESP
        HOST_IA32_SYSENTER_ESP: u64 = 0x6c10;
        /// Host IA32_SYSENTER_EIP
        HOST_IA32_SYSENTER_EIP: u64 = 0x6c12;
        /// Host RSP
        HOST_RSP: u64 = 0x6c14;
        /// Host RIP
        HOST_RIP: u64 = 0x6c16;
        /// Host IA32_S_CET
        HOST_IA32_S_CET: u64 = 0x6c18;
        /// Host SSP
        HOST_SSP: u64 = 0x6c1a;
        /// Host IA32_INTERRUPT_SSP_TABLE_ADDR
        HOST_IA32_INTERRUPT_SSP_TABLE_ADDR: u64 = 0x6c1c;
    }
}

/// Compact index of a full encoding: width, type and index bits side by side (13 bits).
const fn compact(encoding: u32) -> usize {
    ((((encoding >> 13) & 3) << 11) | (((encoding >> 10) & 3) << 9) | ((encoding >> 1) & 0x1ff))
        as usize
}

/// Position in [`ALL`] plus one for every compact index (0: no such field), built at compile time.
static LOOKUP: [u8; 1 << 13] = {
    assert!(COUNT < u8::MAX as usize);
    let mut table = [0u8; 1 << 13];
    let mut i = 0;
    while i < COUNT {
        let slot = compact(ALL_ENCODINGS[i]);
        assert!(table[slot] == 0, "two fields with one encoding");
        table[slot] = (i + 1) as u8;
        i += 1;
    }
    table
};

/// Position of the field with full encoding `encoding` in [`ALL`] (constant time).
#[must_use]
#[inline]
pub fn position(encoding: u32) -> Option<usize> {
    if encoding & (crate::field::RESERVED_ENCODING_BITS | crate::field::HIGH_ACCESS) != 0 {
        return None;
    }
    match LOOKUP[compact(encoding)] {
        0 => None,
        p => Some(usize::from(p) - 1),
    }
}

/// Metadata of the field with full encoding `encoding` (`None` for high-half encodings and
/// encodings the SDM does not define).
#[must_use]
pub fn by_encoding(encoding: u32) -> Option<&'static FieldInfo> {
    position(encoding).map(|i| &ALL[i])
}

/// Metadata of the field whose constant is named `name` (e.g. `"GUEST_RIP"`); ASCII case is
/// ignored.
#[must_use]
pub fn by_name(name: &str) -> Option<&'static FieldInfo> {
    ALL.iter().find(|info| info.name.eq_ignore_ascii_case(name))
}

/// The largest field index (bits 9:1 of an encoding) in the table: the IA32_VMX_VMCS_ENUM
/// highest index of a processor that supports every field.
pub const MAX_INDEX: u16 = {
    let mut max = 0;
    let mut i = 0;
    while i < COUNT {
        let index = crate::field::encoding_index(ALL_ENCODINGS[i]);
        if index > max {
            max = index;
        }
        i += 1;
    }
    max
};
