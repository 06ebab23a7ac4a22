//! The VMX control fields as bitflags, one named flag per SDM bit (SDM Vol. 3C, 25.6 "VM-Execution
//! Control Fields", 25.7.1 "VM-Exit Controls", 25.8.1 "VM-Entry Controls", and 25.6.14
//! "VM-Function Controls").
//!
//! Every type keeps bits it has no name for (`const _ = !0`): a value read from a newer processor
//! survives a round trip through these types unchanged.

use core::fmt;

/// Declares one control field: the bitflags type, and its table of SDM names.
macro_rules! controls {
    (
        $(#[doc = $outer:literal])*
        pub struct $name:ident: $ty:ty, $group:expr, default1 = $default1:expr;
        $(
            $(#[doc = $inner:literal])*
            $flag:ident = $bit:literal, $sdm:literal;
        )*
    ) => {
        bitflags::bitflags! {
            $(#[doc = $outer])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
            pub struct $name: $ty {
                $(
                    $(#[doc = $inner])*
                    const $flag = 1 << $bit;
                )*
                const _ = !0;
            }
        }

        impl $name {
            /// Every named bit: (bit position, SDM name).
            pub const NAMES: &'static [(u8, &'static str)] = &[$(($bit, $sdm)),*];
            /// The default1 class of this field: reserved bits that are 1 unless the TRUE
            /// capability MSR allows 0 (SDM Vol. 3D, A.2 "Reserved Controls and Default
            /// Settings"). Empty for the fields that have no default1 class.
            pub const DEFAULT1: Self = Self::from_bits_retain($default1);
        }

        impl Controls for $name {
            const GROUP: ControlGroup = $group;
            fn to_raw(self) -> u64 {
                self.bits() as u64
            }
            fn from_raw(raw: u64) -> Self {
                // Truncation to the field width is the point: the bits above it do not exist.
                Self::from_bits_retain(raw as $ty)
            }
        }

        crate::serde_as_bits!($name);
    };
}

/// A VMX control field type: one of the bitflags of this module.
pub trait Controls: Copy + bitflags::Flags {
    /// Which control field this type models.
    const GROUP: ControlGroup;
    /// The bits, zero-extended to 64 bits.
    fn to_raw(self) -> u64;
    /// The value with these bits; bits above the field's width are dropped.
    fn from_raw(raw: u64) -> Self;
}

/// The VMX control fields, as groups of named bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ControlGroup {
    /// Pin-based VM-execution controls (32 bits).
    Pin,
    /// Primary processor-based VM-execution controls (32 bits).
    Primary,
    /// Secondary processor-based VM-execution controls (32 bits).
    Secondary,
    /// Tertiary processor-based VM-execution controls (64 bits).
    Tertiary,
    /// Primary VM-exit controls (32 bits).
    Exit,
    /// Secondary VM-exit controls (64 bits).
    SecondaryExit,
    /// VM-entry controls (32 bits).
    Entry,
    /// VM-function controls (64 bits).
    VmFunc,
}

impl ControlGroup {
    /// Every group, in the order of the SDM's chapter.
    pub const ALL: [ControlGroup; 8] = [
        Self::Pin,
        Self::Primary,
        Self::Secondary,
        Self::Tertiary,
        Self::Exit,
        Self::SecondaryExit,
        Self::Entry,
        Self::VmFunc,
    ];

    /// Position in [`ControlGroup::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The SDM name of the field.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pin => "pin-based VM-execution controls",
            Self::Primary => "primary processor-based VM-execution controls",
            Self::Secondary => "secondary processor-based VM-execution controls",
            Self::Tertiary => "tertiary processor-based VM-execution controls",
            Self::Exit => "primary VM-exit controls",
            Self::SecondaryExit => "secondary VM-exit controls",
            Self::Entry => "VM-entry controls",
            Self::VmFunc => "VM-function controls",
        }
    }

    /// Width of the field in bits (32 or 64).
    pub const fn width(self) -> u32 {
        match self {
            Self::Tertiary | Self::SecondaryExit | Self::VmFunc => 64,
            _ => 32,
        }
    }

    /// Mask of the bits the field has.
    pub const fn mask(self) -> u64 {
        if self.width() == 64 {
            u64::MAX
        } else {
            u32::MAX as u64
        }
    }

    /// The named bits of the field: (bit position, SDM name).
    pub const fn names(self) -> &'static [(u8, &'static str)] {
        match self {
            Self::Pin => PinBasedControls::NAMES,
            Self::Primary => PrimaryControls::NAMES,
            Self::Secondary => SecondaryControls::NAMES,
            Self::Tertiary => TertiaryControls::NAMES,
            Self::Exit => ExitControls::NAMES,
            Self::SecondaryExit => SecondaryExitControls::NAMES,
            Self::Entry => EntryControls::NAMES,
            Self::VmFunc => VmFuncControls::NAMES,
        }
    }

    /// The default1 class of the field (zero for the fields that have none).
    pub const fn default1(self) -> u64 {
        match self {
            Self::Pin => PinBasedControls::DEFAULT1.bits() as u64,
            Self::Primary => PrimaryControls::DEFAULT1.bits() as u64,
            Self::Exit => ExitControls::DEFAULT1.bits() as u64,
            Self::Entry => EntryControls::DEFAULT1.bits() as u64,
            Self::Secondary | Self::Tertiary | Self::SecondaryExit | Self::VmFunc => 0,
        }
    }

    /// The SDM name of bit `bit`, or `None` for a reserved or unknown bit.
    pub fn bit_name(self, bit: u32) -> Option<&'static str> {
        self.names()
            .iter()
            .find(|(b, _)| u32::from(*b) == bit)
            .map(|(_, n)| *n)
    }

    /// The control that must be 1 for this field to be used at all, or `None` for the
    /// always-used fields (pin, primary, exit, entry).
    pub const fn activated_by(self) -> Option<ControlBit> {
        match self {
            Self::Secondary => Some(ControlBit::new(Self::Primary, 31)),
            Self::Tertiary => Some(ControlBit::new(Self::Primary, 17)),
            Self::SecondaryExit => Some(ControlBit::new(Self::Exit, 31)),
            Self::VmFunc => Some(ControlBit::new(Self::Secondary, 13)),
            Self::Pin | Self::Primary | Self::Exit | Self::Entry => None,
        }
    }
}

impl fmt::Display for ControlGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One bit of one control field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ControlBit {
    /// The field.
    pub group: ControlGroup,
    /// The bit position (below the field's width).
    pub bit: u8,
}

impl ControlBit {
    /// The bit `bit` of `group`.
    pub const fn new(group: ControlGroup, bit: u8) -> Self {
        Self { group, bit }
    }

    /// The bit of a single flag, e.g. `ControlBit::of(SecondaryControls::ENABLE_EPT)`; `None`
    /// unless exactly one bit is set.
    pub fn of<F: Controls>(flag: F) -> Option<Self> {
        let raw = flag.to_raw();
        if raw.count_ones() != 1 {
            return None;
        }
        // A u64 with one bit set has it below position 64.
        Some(Self::new(F::GROUP, raw.trailing_zeros() as u8))
    }

    /// The mask of this bit in its field; 0 for a bit beyond 63, which no field has.
    pub const fn mask(self) -> u64 {
        match 1u64.checked_shl(self.bit as u32) {
            Some(mask) => mask,
            None => 0,
        }
    }

    /// The SDM name, or `None` for a reserved or unknown bit.
    pub fn name(self) -> Option<&'static str> {
        self.group.bit_name(u32::from(self.bit))
    }
}

impl fmt::Display for ControlBit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "\"{name}\" ({} bit {})", self.group, self.bit),
            None => write!(f, "reserved bit {} of the {}", self.bit, self.group),
        }
    }
}

controls! {
    /// Pin-based VM-execution controls (SDM Vol. 3C, 25.6.1, Table 25-5); their allowed settings
    /// are in `IA32_VMX_[TRUE_]PINBASED_CTLS`.
    pub struct PinBasedControls: u32, ControlGroup::Pin, default1 = 0x0000_0016;
    /// External-interrupt exiting: external interrupts cause VM exits; otherwise they are
    /// delivered through the guest IDT.
    EXTERNAL_INTERRUPT_EXITING = 0, "external-interrupt exiting";
    /// NMI exiting: non-maskable interrupts cause VM exits.
    NMI_EXITING = 3, "NMI exiting";
    /// Virtual NMIs: NMIs are never blocked and virtual-NMI blocking is tracked instead
    /// (requires NMI exiting).
    VIRTUAL_NMIS = 5, "virtual NMIs";
    /// Activate VMX-preemption timer: the timer counts down in VMX non-root operation and
    /// causes a VM exit at zero.
    ACTIVATE_VMX_PREEMPTION_TIMER = 6, "activate VMX-preemption timer";
    /// Process posted interrupts: the notification vector posts interrupts from the
    /// posted-interrupt descriptor into the virtual-APIC page.
    PROCESS_POSTED_INTERRUPTS = 7, "process posted interrupts";
}

controls! {
    /// Primary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2, Table 25-6); their
    /// allowed settings are in `IA32_VMX_[TRUE_]PROCBASED_CTLS`.
    pub struct PrimaryControls: u32, ControlGroup::Primary, default1 = 0x0401_e172;
    /// Interrupt-window exiting: VM exit at the start of any instruction with RFLAGS.IF = 1 and
    /// no interrupt blocking.
    INTERRUPT_WINDOW_EXITING = 2, "interrupt-window exiting";
    /// Use TSC offsetting: RDTSC, RDTSCP and reads of IA32_TSC return the TSC plus the TSC offset.
    USE_TSC_OFFSETTING = 3, "use TSC offsetting";
    /// HLT exiting: HLT causes a VM exit.
    HLT_EXITING = 7, "HLT exiting";
    /// INVLPG exiting: INVLPG causes a VM exit.
    INVLPG_EXITING = 9, "INVLPG exiting";
    /// MWAIT exiting: MWAIT causes a VM exit.
    MWAIT_EXITING = 10, "MWAIT exiting";
    /// RDPMC exiting: RDPMC causes a VM exit.
    RDPMC_EXITING = 11, "RDPMC exiting";
    /// RDTSC exiting: RDTSC and RDTSCP cause VM exits.
    RDTSC_EXITING = 12, "RDTSC exiting";
    /// CR3-load exiting: MOV to CR3 causes a VM exit unless the value is a CR3-target value
    /// (default1 class).
    CR3_LOAD_EXITING = 15, "CR3-load exiting";
    /// CR3-store exiting: MOV from CR3 causes a VM exit (default1 class).
    CR3_STORE_EXITING = 16, "CR3-store exiting";
    /// Activate tertiary controls: the tertiary processor-based VM-execution controls are used.
    ACTIVATE_TERTIARY_CONTROLS = 17, "activate tertiary controls";
    /// CR8-load exiting: MOV to CR8 causes a VM exit.
    CR8_LOAD_EXITING = 19, "CR8-load exiting";
    /// CR8-store exiting: MOV from CR8 causes a VM exit.
    CR8_STORE_EXITING = 20, "CR8-store exiting";
    /// Use TPR shadow: TPR virtualization and other APIC-virtualization features through the
    /// virtual-APIC page.
    USE_TPR_SHADOW = 21, "use TPR shadow";
    /// NMI-window exiting: VM exit at the start of any instruction without virtual-NMI blocking
    /// (requires virtual NMIs).
    NMI_WINDOW_EXITING = 22, "NMI-window exiting";
    /// MOV-DR exiting: MOV to or from a debug register causes a VM exit.
    MOV_DR_EXITING = 23, "MOV-DR exiting";
    /// Unconditional I/O exiting: every I/O instruction causes a VM exit (ignored when I/O
    /// bitmaps are used).
    UNCONDITIONAL_IO_EXITING = 24, "unconditional I/O exiting";
    /// Use I/O bitmaps: the I/O bitmaps A and B decide which I/O ports cause VM exits.
    USE_IO_BITMAPS = 25, "use I/O bitmaps";
    /// Monitor trap flag: a VM exit after the next guest instruction (single-stepping).
    MONITOR_TRAP_FLAG = 27, "monitor trap flag";
    /// Use MSR bitmaps: the MSR bitmaps decide which RDMSR/WRMSR cause VM exits.
    USE_MSR_BITMAPS = 28, "use MSR bitmaps";
    /// MONITOR exiting: MONITOR causes a VM exit.
    MONITOR_EXITING = 29, "MONITOR exiting";
    /// PAUSE exiting: PAUSE causes a VM exit.
    PAUSE_EXITING = 30, "PAUSE exiting";
    /// Activate secondary controls: the secondary processor-based VM-execution controls are used.
    ACTIVATE_SECONDARY_CONTROLS = 31, "activate secondary controls";
}

controls! {
    /// Secondary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2, Table 25-7); their
    /// allowed settings are in `IA32_VMX_PROCBASED_CTLS2`.
    pub struct SecondaryControls: u32, ControlGroup::Secondary, default1 = 0;
    /// Virtualize APIC accesses: accesses to the APIC-access page are virtualized or cause VM
    /// exits.
    VIRTUALIZE_APIC_ACCESSES = 0, "virtualize APIC accesses";
    /// Enable EPT: extended page tables translate guest-physical addresses.
    ENABLE_EPT = 1, "enable EPT";
    /// Descriptor-table exiting: LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR cause VM exits.
    DESCRIPTOR_TABLE_EXITING = 2, "descriptor-table exiting";
    /// Enable RDTSCP: RDTSCP does not cause #UD.
    ENABLE_RDTSCP = 3, "enable RDTSCP";
    /// Virtualize x2APIC mode: RDMSR/WRMSR of the x2APIC MSRs are virtualized.
    VIRTUALIZE_X2APIC_MODE = 4, "virtualize x2APIC mode";
    /// Enable VPID: cached translations are tagged with the virtual-processor identifier.
    ENABLE_VPID = 5, "enable VPID";
    /// WBINVD exiting: WBINVD and WBNOINVD cause VM exits.
    WBINVD_EXITING = 6, "WBINVD exiting";
    /// Unrestricted guest: the guest may run in unpaged protected mode or real-address mode
    /// (requires enable EPT).
    UNRESTRICTED_GUEST = 7, "unrestricted guest";
    /// APIC-register virtualization: reads of APIC registers are satisfied from the
    /// virtual-APIC page.
    APIC_REGISTER_VIRTUALIZATION = 8, "APIC-register virtualization";
    /// Virtual-interrupt delivery: evaluation and delivery of pending virtual interrupts.
    VIRTUAL_INTERRUPT_DELIVERY = 9, "virtual-interrupt delivery";
    /// PAUSE-loop exiting: a series of PAUSE executions in a loop causes a VM exit.
    PAUSE_LOOP_EXITING = 10, "PAUSE-loop exiting";
    /// RDRAND exiting: RDRAND causes a VM exit.
    RDRAND_EXITING = 11, "RDRAND exiting";
    /// Enable INVPCID: INVPCID does not cause #UD.
    ENABLE_INVPCID = 12, "enable INVPCID";
    /// Enable VM functions: VMFUNC is enabled in VMX non-root operation.
    ENABLE_VM_FUNCTIONS = 13, "enable VM functions";
    /// VMCS shadowing: VMREAD/VMWRITE in the guest may access a shadow VMCS.
    VMCS_SHADOWING = 14, "VMCS shadowing";
    /// Enable ENCLS exiting: ENCLS leaves selected by the ENCLS-exiting bitmap cause VM exits.
    ENABLE_ENCLS_EXITING = 15, "enable ENCLS exiting";
    /// RDSEED exiting: RDSEED causes a VM exit.
    RDSEED_EXITING = 16, "RDSEED exiting";
    /// Enable PML: accesses setting EPT dirty flags are logged in the page-modification log
    /// (requires enable EPT).
    ENABLE_PML = 17, "enable PML";
    /// EPT-violation #VE: some EPT violations cause virtualization exceptions instead of VM
    /// exits.
    EPT_VIOLATION_VE = 18, "EPT-violation #VE";
    /// Conceal VMX from PT: Intel Processor Trace suppresses the data that would reveal VMX
    /// non-root operation.
    CONCEAL_VMX_FROM_PT = 19, "conceal VMX from PT";
    /// Enable XSAVES/XRSTORS: XSAVES and XRSTORS do not cause #UD.
    ENABLE_XSAVES_XRSTORS = 20, "enable XSAVES/XRSTORS";
    /// PASID translation: ENQCMD and ENQCMDS translate PASIDs through the PASID-translation
    /// tables.
    PASID_TRANSLATION = 21, "PASID translation";
    /// Mode-based execute control for EPT: EPT execute permission separately for
    /// supervisor-mode and user-mode linear addresses (requires enable EPT).
    MODE_BASED_EXECUTE_CONTROL_FOR_EPT = 22, "mode-based execute control for EPT";
    /// Sub-page write permissions for EPT: write permission at 128-byte granularity (requires
    /// enable EPT).
    SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT = 23, "sub-page write permissions for EPT";
    /// Intel PT uses guest physical addresses: Processor Trace output addresses are
    /// guest-physical and translated through EPT.
    INTEL_PT_USES_GUEST_PHYSICAL_ADDRESSES = 24, "Intel PT uses guest physical addresses";
    /// Use TSC scaling: RDTSC, RDTSCP and reads of IA32_TSC return the TSC multiplied by the
    /// TSC multiplier.
    USE_TSC_SCALING = 25, "use TSC scaling";
    /// Enable user wait and pause: TPAUSE, UMONITOR and UMWAIT do not cause #UD.
    ENABLE_USER_WAIT_AND_PAUSE = 26, "enable user wait and pause";
    /// Enable PCONFIG: PCONFIG does not cause #UD.
    ENABLE_PCONFIG = 27, "enable PCONFIG";
    /// Enable ENCLV exiting: ENCLV leaves selected by the ENCLV-exiting bitmap cause VM exits.
    ENABLE_ENCLV_EXITING = 28, "enable ENCLV exiting";
    /// VMM bus-lock detection: an assertion of a bus lock causes a VM exit.
    VMM_BUS_LOCK_DETECTION = 30, "VMM bus-lock detection";
    /// Instruction timeout: a VM exit when no event window opens within the notify window.
    INSTRUCTION_TIMEOUT = 31, "instruction timeout";
}

controls! {
    /// Tertiary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2, Table 25-8), a
    /// 64-bit field; their allowed-1 settings are in `IA32_VMX_PROCBASED_CTLS3`.
    pub struct TertiaryControls: u64, ControlGroup::Tertiary, default1 = 0;
    /// LOADIWKEY exiting: LOADIWKEY causes a VM exit.
    LOADIWKEY_EXITING = 0, "LOADIWKEY exiting";
    /// Enable HLAT: hypervisor-managed linear-address translation.
    ENABLE_HLAT = 1, "enable HLAT";
    /// EPT paging-write control: EPT paging-write permission for guest paging-structure
    /// updates.
    EPT_PAGING_WRITE_CONTROL = 2, "EPT paging-write control";
    /// Guest-paging verification: EPT verifies guest paging structures.
    GUEST_PAGING_VERIFICATION = 3, "guest-paging verification";
    /// IPI virtualization: ICR writes that send IPIs are virtualized through the PID-pointer
    /// table.
    IPI_VIRTUALIZATION = 4, "IPI virtualization";
    /// Enable MSR-list instructions: RDMSRLIST and WRMSRLIST do not cause #UD.
    ENABLE_MSR_LIST_INSTRUCTIONS = 6, "enable MSR-list instructions";
    /// Virtualize IA32_SPEC_CTRL: guest accesses to IA32_SPEC_CTRL go through a mask and a
    /// shadow.
    VIRTUALIZE_IA32_SPEC_CTRL = 7, "virtualize IA32_SPEC_CTRL";
}

controls! {
    /// Primary VM-exit controls (SDM Vol. 3C, 25.7.1, Table 25-13); their allowed settings are in
    /// `IA32_VMX_[TRUE_]EXIT_CTLS`.
    pub struct ExitControls: u32, ControlGroup::Exit, default1 = 0x0003_6dff;
    /// Save debug controls: DR7 and IA32_DEBUGCTL are saved on VM exit (default1 class).
    SAVE_DEBUG_CONTROLS = 2, "save debug controls";
    /// Host address-space size: the host runs in 64-bit mode after VM exit.
    HOST_ADDRESS_SPACE_SIZE = 9, "host address-space size";
    /// Load IA32_PERF_GLOBAL_CTRL: the host value is loaded on VM exit.
    LOAD_IA32_PERF_GLOBAL_CTRL = 12, "load IA32_PERF_GLOBAL_CTRL";
    /// Acknowledge interrupt on exit: the interrupt controller is acknowledged on an
    /// external-interrupt VM exit and the vector stored.
    ACKNOWLEDGE_INTERRUPT_ON_EXIT = 15, "acknowledge interrupt on exit";
    /// Save IA32_PAT: the guest IA32_PAT is saved on VM exit.
    SAVE_IA32_PAT = 18, "save IA32_PAT";
    /// Load IA32_PAT: the host IA32_PAT is loaded on VM exit.
    LOAD_IA32_PAT = 19, "load IA32_PAT";
    /// Save IA32_EFER: the guest IA32_EFER is saved on VM exit.
    SAVE_IA32_EFER = 20, "save IA32_EFER";
    /// Load IA32_EFER: the host IA32_EFER is loaded on VM exit.
    LOAD_IA32_EFER = 21, "load IA32_EFER";
    /// Save VMX-preemption timer value: the timer value is saved on VM exit (requires
    /// activate VMX-preemption timer).
    SAVE_VMX_PREEMPTION_TIMER_VALUE = 22, "save VMX-preemption timer value";
    /// Clear IA32_BNDCFGS: IA32_BNDCFGS is cleared on VM exit.
    CLEAR_IA32_BNDCFGS = 23, "clear IA32_BNDCFGS";
    /// Conceal VMX from PT: Intel PT does not produce a paging information packet on VM exit.
    CONCEAL_VMX_FROM_PT = 24, "conceal VMX from PT";
    /// Clear IA32_RTIT_CTL: IA32_RTIT_CTL is cleared on VM exit.
    CLEAR_IA32_RTIT_CTL = 25, "clear IA32_RTIT_CTL";
    /// Clear IA32_LBR_CTL: IA32_LBR_CTL is cleared on VM exit.
    CLEAR_IA32_LBR_CTL = 26, "clear IA32_LBR_CTL";
    /// Clear UINV: the user-interrupt notification vector is cleared on VM exit.
    CLEAR_UINV = 27, "clear UINV";
    /// Load CET state: the host CET state (S_CET, SSP, interrupt SSP table) is loaded on VM exit.
    LOAD_CET_STATE = 28, "load CET state";
    /// Load PKRS: the host IA32_PKRS is loaded on VM exit.
    LOAD_PKRS = 29, "load PKRS";
    /// Save IA32_PERF_GLOBAL_CTL: the guest IA32_PERF_GLOBAL_CTL is saved on VM exit.
    SAVE_IA32_PERF_GLOBAL_CTL = 30, "save IA32_PERF_GLOBAL_CTL";
    /// Activate secondary controls: the secondary VM-exit controls are used.
    ACTIVATE_SECONDARY_CONTROLS = 31, "activate secondary controls";
}

controls! {
    /// Secondary VM-exit controls (SDM Vol. 3C, 25.7.1, Table 25-14), a 64-bit field; their
    /// allowed-1 settings are in `IA32_VMX_EXIT_CTLS2`.
    pub struct SecondaryExitControls: u64, ControlGroup::SecondaryExit, default1 = 0;
    /// Save FRED: the guest FRED MSRs are saved on VM exit.
    SAVE_FRED = 0, "save FRED";
    /// Load FRED: the host FRED MSRs are loaded on VM exit.
    LOAD_FRED = 1, "load FRED";
    /// Load IA32_SPEC_CTRL: the host IA32_SPEC_CTRL is loaded on VM exit.
    LOAD_IA32_SPEC_CTRL = 2, "load IA32_SPEC_CTRL";
    /// Prematurely busy shadow stack: a VM exit that makes a guest shadow stack prematurely
    /// busy says so and saves extra information.
    PREMATURELY_BUSY_SHADOW_STACK = 3, "prematurely busy shadow stack";
}

controls! {
    /// VM-entry controls (SDM Vol. 3C, 25.8.1, Table 25-15); their allowed settings are in
    /// `IA32_VMX_[TRUE_]ENTRY_CTLS`.
    pub struct EntryControls: u32, ControlGroup::Entry, default1 = 0x0000_11ff;
    /// Load debug controls: DR7 and IA32_DEBUGCTL are loaded on VM entry (default1 class).
    LOAD_DEBUG_CONTROLS = 2, "load debug controls";
    /// IA-32e mode guest: the guest is in IA-32e mode after VM entry.
    IA32E_MODE_GUEST = 9, "IA-32e mode guest";
    /// Entry to SMM: VM entry into system-management mode (dual-monitor treatment only).
    ENTRY_TO_SMM = 10, "entry to SMM";
    /// Deactivate dual-monitor treatment: the default treatment of SMIs and SMM is in effect
    /// after VM entry.
    DEACTIVATE_DUAL_MONITOR_TREATMENT = 11, "deactivate dual-monitor treatment";
    /// Load IA32_PERF_GLOBAL_CTRL: the guest value is loaded on VM entry.
    LOAD_IA32_PERF_GLOBAL_CTRL = 13, "load IA32_PERF_GLOBAL_CTRL";
    /// Load IA32_PAT: the guest IA32_PAT is loaded on VM entry.
    LOAD_IA32_PAT = 14, "load IA32_PAT";
    /// Load IA32_EFER: the guest IA32_EFER is loaded on VM entry.
    LOAD_IA32_EFER = 15, "load IA32_EFER";
    /// Load IA32_BNDCFGS: the guest IA32_BNDCFGS is loaded on VM entry.
    LOAD_IA32_BNDCFGS = 16, "load IA32_BNDCFGS";
    /// Conceal VMX from PT: Intel PT does not produce a paging information packet on VM entry.
    CONCEAL_VMX_FROM_PT = 17, "conceal VMX from PT";
    /// Load IA32_RTIT_CTL: the guest IA32_RTIT_CTL is loaded on VM entry.
    LOAD_IA32_RTIT_CTL = 18, "load IA32_RTIT_CTL";
    /// Load UINV: the guest user-interrupt notification vector is loaded on VM entry.
    LOAD_UINV = 19, "load UINV";
    /// Load CET state: the guest CET state is loaded on VM entry.
    LOAD_CET_STATE = 20, "load CET state";
    /// Load guest IA32_LBR_CTL: the guest IA32_LBR_CTL is loaded on VM entry.
    LOAD_GUEST_IA32_LBR_CTL = 21, "load guest IA32_LBR_CTL";
    /// Load PKRS: the guest IA32_PKRS is loaded on VM entry.
    LOAD_PKRS = 22, "load PKRS";
    /// Load FRED: the guest FRED MSRs are loaded on VM entry.
    LOAD_FRED = 23, "load FRED";
    /// Load IA32_SPEC_CTRL: the guest IA32_SPEC_CTRL is loaded on VM entry from the
    /// guest-state field `GUEST_IA32_SPEC_CTRL`; the counterpart of the "load IA32_SPEC_CTRL"
    /// secondary VM-exit control (bit 2).
    LOAD_IA32_SPEC_CTRL = 24, "load IA32_SPEC_CTRL";
}

controls! {
    /// VM-function controls (SDM Vol. 3C, 25.6.14, Table 25-10), a 64-bit field; their allowed-1
    /// settings are in `IA32_VMX_VMFUNC`.
    pub struct VmFuncControls: u64, ControlGroup::VmFunc, default1 = 0;
    /// EPTP switching: VM function 0 loads the EPT pointer from the EPTP list (requires enable
    /// EPT).
    EPTP_SWITCHING = 0, "EPTP switching";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_flags() {
        for group in ControlGroup::ALL {
            for &(bit, name) in group.names() {
                assert!(u32::from(bit) < group.width(), "{group}: {name}");
                assert!(!name.is_empty());
                // No bit is named twice.
                assert_eq!(group.names().iter().filter(|(b, _)| *b == bit).count(), 1);
            }
        }
        assert_eq!(
            ControlBit::of(SecondaryControls::UNRESTRICTED_GUEST).and_then(ControlBit::name),
            Some("unrestricted guest")
        );
        assert_eq!(
            ControlBit::of(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS),
            Some(ControlBit::new(ControlGroup::Primary, 31))
        );
        assert_eq!(ControlBit::of(PrimaryControls::empty()), None);
        assert_eq!(
            ControlBit::of(PrimaryControls::HLT_EXITING | PrimaryControls::RDTSC_EXITING),
            None
        );
        assert_eq!(PrimaryControls::HLT_EXITING.bits(), 0x80);
        assert_eq!(
            PinBasedControls::from_raw(0xffff_ffff_0000_0080).bits(),
            0x80
        );
    }

    #[test]
    fn unknown_bits_are_kept() {
        let v = SecondaryControls::from_bits_retain(1 << 29);
        assert_eq!(v.bits(), 1 << 29);
        assert_eq!(ControlGroup::Secondary.bit_name(29), None);
    }
}
