//! The rule table: every VM-entry check of the spec, declared once.
//!
//! Each rule has the spec's ID (`P1` … `M7`), the SDM section whose text it models (by title, as the
//! SDM renumbers its chapters), the failure class it produces, and a one-line summary. Everything else
//! (the list of rule IDs in the docs, the coverage table, the `RuleSet` capacity) derives from this table.

use core::fmt;

/// The SDM subsection of "VM Entries" that states a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RuleGroup {
    /// "Basic VM-Entry Checks" (spec rules `P*`).
    Basic,
    /// "VM-Execution Control Fields" under "Checks on VMX Controls" (rules `A*`).
    ExecutionControls,
    /// "VM-Exit Control Fields" under "Checks on VMX Controls" (rules `B*`).
    ExitControls,
    /// "VM-Entry Control Fields" under "Checks on VMX Controls" (rules `C*`).
    EntryControls,
    /// "Checks on Host Control Registers, MSRs, and SSP" (rules `D*`).
    HostControlRegisters,
    /// "Checks on Host Segment and Descriptor-Table Registers" (rules `E*`).
    HostSegments,
    /// "Checks Related to Address-Space Size" (rules `F*`).
    AddressSpaceSize,
    /// "Checks on Guest Control Registers, Debug Registers, and MSRs" (rules `G*`).
    GuestControlRegisters,
    /// "Checks on Guest Segment Registers" (rules `H*`).
    GuestSegments,
    /// "Checks on Guest Descriptor-Table Registers" (rules `I*`).
    GuestDescriptorTables,
    /// "Checks on Guest RIP, RFLAGS, and SSP" (rules `J*`).
    GuestRipRflags,
    /// "Checks on Guest Non-Register State" (rules `K*`).
    GuestNonRegisterState,
    /// "Checks on Guest Page-Directory-Pointer-Table Entries" (rules `L*`).
    GuestPdptes,
    /// "Loading MSRs" (rules `M*`).
    MsrLoading,
}

impl RuleGroup {
    /// The SDM section title (stable across SDM editions, unlike the section number).
    pub const fn section_title(self) -> &'static str {
        match self {
            Self::Basic => "Basic VM-Entry Checks",
            Self::ExecutionControls => "Checks on VMX Controls: VM-Execution Control Fields",
            Self::ExitControls => "Checks on VMX Controls: VM-Exit Control Fields",
            Self::EntryControls => "Checks on VMX Controls: VM-Entry Control Fields",
            Self::HostControlRegisters => "Checks on Host Control Registers, MSRs, and SSP",
            Self::HostSegments => "Checks on Host Segment and Descriptor-Table Registers",
            Self::AddressSpaceSize => "Checks Related to Address-Space Size",
            Self::GuestControlRegisters => {
                "Checks on Guest Control Registers, Debug Registers, and MSRs"
            }
            Self::GuestSegments => "Checks on Guest Segment Registers",
            Self::GuestDescriptorTables => "Checks on Guest Descriptor-Table Registers",
            Self::GuestRipRflags => "Checks on Guest RIP, RFLAGS, and SSP",
            Self::GuestNonRegisterState => "Checks on Guest Non-Register State",
            Self::GuestPdptes => "Checks on Guest Page-Directory-Pointer-Table Entries",
            Self::MsrLoading => "Loading MSRs",
        }
    }
}

/// How a violated rule makes VMLAUNCH/VMRESUME fail (the spec's "Fail" column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FailureClass {
    /// A fault (#UD, #GP) or a VM exit to the outer VMM before any VMCS check: not a VM-entry outcome.
    Fault,
    /// VMfailInvalid: there is no valid current VMCS.
    VmFailInvalid,
    /// VMfailValid with this VM-instruction error number (4, 5, 7, 8, 16, 26, …).
    VmFailValid(u32),
    /// VM-entry failure, basic exit reason 33 "VM-entry failure due to invalid guest state", with this
    /// exit qualification (0, 2 PDPTEs, 3 NMI while STI-blocked, 4 VMCS link pointer).
    InvalidGuestState(u64),
    /// VM-entry failure, basic exit reason 34 "VM-entry failure due to MSR loading"; the qualification
    /// is the 1-based index of the failing VM-entry MSR-load entry.
    MsrLoading,
}

/// Whether this crate's checker evaluates a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// The checker evaluates the rule.
    Covered,
    /// The checker does not evaluate the rule, for the reason given.
    NotCovered(&'static str),
}

macro_rules! rules {
    ($($id:ident => $class:expr, $summary:literal;)*) => {
        /// A VM-entry check, named by its ID in the spec `vm-entry-checks.md`.
        ///
        /// The variant docs summarise the check; [`Rule::group`] gives its SDM section.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[repr(u8)]
        pub enum Rule {
            $(#[doc = $summary] $id,)*
        }

        impl Rule {
            /// Every rule of the spec, in spec order.
            pub const ALL: [Rule; Rule::COUNT] = [$(Rule::$id,)*];
            /// Number of rules in the spec.
            pub const COUNT: usize = [$(stringify!($id),)*].len();

            /// The spec ID, e.g. `"A13"`.
            pub const fn id(self) -> &'static str {
                match self { $(Rule::$id => stringify!($id),)* }
            }

            /// One-line summary of the check.
            pub const fn summary(self) -> &'static str {
                match self { $(Rule::$id => $summary,)* }
            }

            /// How a violation makes the VM entry fail.
            pub const fn class(self) -> FailureClass {
                match self { $(Rule::$id => $class,)* }
            }
        }
    };
}

use FailureClass::{Fault, InvalidGuestState, MsrLoading, VmFailInvalid, VmFailValid};
const F7: FailureClass = VmFailValid(7);
const F8: FailureClass = VmFailValid(8);
const X33: FailureClass = InvalidGuestState(0);

rules! {
    P1 => Fault, "Executed in VMX non-root operation: VM exit to the outer VMM instead.";
    P2 => Fault, "Real mode, virtual-8086 mode or compatibility mode: #UD.";
    P3 => Fault, "CPL > 0: #GP(0).";
    P4 => VmFailInvalid, "There is no current VMCS (current-VMCS pointer is FFFFFFFF_FFFFFFFFh).";
    P5 => VmFailInvalid, "The current VMCS is a shadow VMCS (shadow-VMCS indicator, header bit 31).";
    P6 => VmFailValid(26), "Events are blocked by MOV SS in the executing context.";
    P7 => VmFailValid(4), "VMLAUNCH with a launch state other than clear.";
    P8 => VmFailValid(5), "VMRESUME with a launch state other than launched.";
    P9 => VmFailValid(16), "Dual-monitor treatment in SMM: executive-VMCS pointer checks.";
    A1 => F7, "Pin-based VM-execution controls: every allowed-0 bit is 1.";
    A2 => F7, "Pin-based VM-execution controls: no bit outside allowed-1 is 1.";
    A3 => F7, "Primary processor-based VM-execution controls: every allowed-0 bit is 1.";
    A4 => F7, "Primary processor-based VM-execution controls: no bit outside allowed-1 is 1.";
    A5 => F7, "Secondary processor-based VM-execution controls within IA32_VMX_PROCBASED_CTLS2 (if activated).";
    A6 => F7, "Tertiary processor-based VM-execution controls within IA32_VMX_PROCBASED_CTLS3 (if activated).";
    A7 => F7, "CR3-target count does not exceed IA32_VMX_MISC bits 24:16.";
    A8 => F7, "Use I/O bitmaps: I/O-bitmap A address 4-KByte aligned and within MAXPHYADDR.";
    A9 => F7, "Use I/O bitmaps: I/O-bitmap B address 4-KByte aligned and within MAXPHYADDR.";
    A10 => F7, "Use MSR bitmaps: MSR-bitmap address 4-KByte aligned and within MAXPHYADDR.";
    A11 => F7, "Use TPR shadow: virtual-APIC address 4-KByte aligned and within MAXPHYADDR.";
    A12 => F7, "Use TPR shadow without virtual-interrupt delivery: TPR threshold bits 31:4 are 0.";
    A13 => F7, "Use TPR shadow without VID and APIC-access virtualization: TPR threshold bits 3:0 <= VTPR bits 7:4.";
    A14 => F7, "Use TPR shadow = 0: virtualize x2APIC mode = 0.";
    A15 => F7, "Use TPR shadow = 0: APIC-register virtualization = 0.";
    A16 => F7, "Use TPR shadow = 0: virtual-interrupt delivery = 0.";
    A17 => F7, "NMI exiting = 0: virtual NMIs = 0.";
    A18 => F7, "Virtual NMIs = 0: NMI-window exiting = 0.";
    A19 => F7, "Virtualize APIC accesses: APIC-access address 4-KByte aligned and within MAXPHYADDR.";
    A20 => F7, "Virtualize x2APIC mode = 1: virtualize APIC accesses = 0.";
    A21 => F7, "Virtual-interrupt delivery = 1: external-interrupt exiting = 1.";
    A22 => F7, "Process posted interrupts = 1: virtual-interrupt delivery = 1.";
    A23 => F7, "Process posted interrupts = 1: acknowledge interrupt on exit = 1.";
    A24 => F7, "Process posted interrupts = 1: posted-interrupt notification vector bits 15:8 are 0.";
    A25 => F7, "Process posted interrupts = 1: posted-interrupt descriptor address bits 5:0 are 0.";
    A26 => F7, "Process posted interrupts = 1: posted-interrupt descriptor address within MAXPHYADDR.";
    A27 => F7, "Enable VPID = 1: VPID is not 0000H.";
    A28 => F7, "Enable EPT: EPTP memory type is supported (UC per EPT_VPID_CAP bit 8, WB per bit 14).";
    A29 => F7, "Enable EPT: EPTP page-walk length is 4, or 5 if 5-level walks are supported.";
    A30 => F7, "Enable EPT: EPTP accessed/dirty enable only if EPT_VPID_CAP bit 21.";
    A31 => F7, "Enable EPT: EPTP supervisor shadow-stack enable only if supported.";
    A32 => F7, "Enable EPT: EPTP reserved bits 11:8 and 63:MAXPHYADDR are 0.";
    A33 => F7, "Enable EPT = 0: unrestricted guest = 0.";
    A34 => F7, "Enable EPT = 0: mode-based execute control for EPT = 0.";
    A35 => F7, "Enable PML = 1: enable EPT = 1.";
    A36 => F7, "Enable PML: PML address 4-KByte aligned and within MAXPHYADDR.";
    A37 => F7, "Sub-page write permissions for EPT = 1: enable EPT = 1.";
    A38 => F7, "Sub-page write permissions: SPPTP 4-KByte aligned and within MAXPHYADDR.";
    A39 => F7, "Enable VM functions: VM-function controls within IA32_VMX_VMFUNC.";
    A40 => F7, "EPTP switching = 1: enable EPT = 1.";
    A41 => F7, "EPTP switching: EPTP-list address 4-KByte aligned and within MAXPHYADDR.";
    A42 => F7, "VMCS shadowing: VMREAD-bitmap address 4-KByte aligned and within MAXPHYADDR.";
    A43 => F7, "VMCS shadowing: VMWRITE-bitmap address 4-KByte aligned and within MAXPHYADDR.";
    A44 => F7, "EPT-violation #VE: virtualization-exception information address 4-KByte aligned and within MAXPHYADDR.";
    A45 => F7, "Intel PT uses guest physical addresses = 1: enable EPT, load IA32_RTIT_CTL and clear IA32_RTIT_CTL = 1.";
    A46 => F7, "IPI virtualization: PID-pointer table address and last PID-pointer index checks.";
    A47 => F7, "HLAT, EPT paging-write control, guest-paging verification: EPT = 1 and HLATP checks.";
    A48 => F7, "Use TSC scaling = 1: TSC multiplier is not 0 (Bochs only).";
    A49 => F7, "APIC-access address differs from the virtual-APIC address (VirtualBox restriction).";
    B1 => F7, "Primary VM-exit controls: every allowed-0 bit is 1.";
    B2 => F7, "Primary VM-exit controls: no bit outside allowed-1 is 1.";
    B3 => F7, "Secondary VM-exit controls within IA32_VMX_EXIT_CTLS2 (if activated).";
    B4 => F7, "Activate VMX-preemption timer = 0: save VMX-preemption timer value = 0.";
    B5 => F7, "VM-exit MSR-store count > 0: address bits 3:0 are 0 and within MAXPHYADDR.";
    B6 => F7, "VM-exit MSR-store count > 0: the area's last byte is within MAXPHYADDR.";
    B7 => F7, "VM-exit MSR-load count > 0: address bits 3:0 are 0 and within MAXPHYADDR.";
    B8 => F7, "VM-exit MSR-load count > 0: the area's last byte is within MAXPHYADDR.";
    C1 => F7, "VM-entry controls: every allowed-0 bit is 1.";
    C2 => F7, "VM-entry controls: no bit outside allowed-1 is 1.";
    C3 => F7, "Outside SMM: entry to SMM = 0.";
    C4 => F7, "Outside SMM: deactivate dual-monitor treatment = 0.";
    C5 => F7, "Entry to SMM and deactivate dual-monitor treatment are not both 1.";
    C6 => F7, "Event injection: interruption type is not 1 (reserved); type 7 only with monitor trap flag support.";
    C7 => F7, "Event injection: an NMI has vector 2.";
    C8 => F7, "Event injection: a hardware exception has a vector <= 31.";
    C9 => F7, "Event injection: an other event (pending MTF VM exit) has vector 0.";
    C10 => F7, "Event injection: deliver-error-code is 0 unless a hardware exception is injected with CR0.PE = 1; with IA32_VMX_BASIC bit 56 = 0 it is 1 exactly for vectors 8, 10-14 and 17.";
    C11 => F7, "Event injection: interruption-information bits 30:14 and 12 are 0; bit 13 (nested exception) is 0 unless IA32_VMX_BASIC bit 58 is 1 and a hardware exception is injected.";
    C12 => F7, "Event injection with error code: VM-entry exception error code bits 31:16 are 0.";
    C13 => F7, "Injecting a software interrupt or exception: VM-entry instruction length is 1 to 15.";
    C14 => F7, "Injecting a software interrupt or exception: length 0 only if IA32_VMX_MISC bit 30.";
    C15 => F7, "VM-entry MSR-load count > 0: address bits 3:0 are 0 and within MAXPHYADDR.";
    C16 => F7, "VM-entry MSR-load count > 0: the area's last byte is within MAXPHYADDR.";
    D1 => F8, "Host CR0: every bit set in IA32_VMX_CR0_FIXED0 is 1.";
    D2 => F8, "Host CR0: every bit clear in IA32_VMX_CR0_FIXED1 is 0.";
    D3 => F8, "Host CR4: every bit set in IA32_VMX_CR4_FIXED0 is 1.";
    D4 => F8, "Host CR4: every bit clear in IA32_VMX_CR4_FIXED1 is 0.";
    D5 => F8, "Host CR3: no bits beyond MAXPHYADDR (LAM bits 62:61 exempt with LAM).";
    D6 => F8, "Host CR4.CET = 1: host CR0.WP = 1.";
    D7 => F8, "Host IA32_SYSENTER_ESP is canonical.";
    D8 => F8, "Host IA32_SYSENTER_EIP is canonical.";
    D9 => F8, "Load CET state (exit): host IA32_S_CET reserved bits 0, SUPPRESS and TRACKER not both 1.";
    D10 => F8, "Load CET state (exit): host IA32_S_CET canonical.";
    D11 => F8, "Load CET state (exit): host SSP bits 1:0 are 0.";
    D12 => F8, "Load CET state (exit): host SSP canonical (bits 63:32 = 0 without host address-space size).";
    D13 => F8, "Load CET state (exit): host IA32_INTERRUPT_SSP_TABLE_ADDR canonical.";
    D14 => F8, "Load IA32_PERF_GLOBAL_CTRL (exit): reserved bits are 0.";
    D15 => F8, "Load IA32_PAT (exit): every PAT entry is 0, 1, 4, 5, 6 or 7.";
    D16 => F8, "Load IA32_EFER (exit): EFER reserved bits are 0.";
    D17 => F8, "Load IA32_EFER (exit): EFER.LMA equals host address-space size.";
    D18 => F8, "Load IA32_EFER (exit): EFER.LME equals host address-space size.";
    D19 => F8, "Load PKRS (exit): host IA32_PKRS bits 63:32 are 0.";
    D20 => F8, "Load host IA32_SPEC_CTRL (secondary exit): value valid.";
    D21 => F8, "Load FRED (secondary exit): host IA32_FRED_CONFIG reserved bits are 0.";
    D22 => F8, "Load FRED (secondary exit): host IA32_FRED_RSP1-3 canonical and 64-byte aligned.";
    D23 => F8, "Load FRED (secondary exit): host IA32_FRED_SSP1-3 canonical and 8-byte aligned.";
    E1 => F8, "Host ES selector: RPL = 0 and TI = 0.";
    E2 => F8, "Host CS selector: RPL = 0 and TI = 0.";
    E3 => F8, "Host SS selector: RPL = 0 and TI = 0.";
    E4 => F8, "Host DS selector: RPL = 0 and TI = 0.";
    E5 => F8, "Host FS selector: RPL = 0 and TI = 0.";
    E6 => F8, "Host GS selector: RPL = 0 and TI = 0.";
    E7 => F8, "Host TR selector: RPL = 0 and TI = 0.";
    E8 => F8, "Host CS selector is not 0000H.";
    E9 => F8, "Host TR selector is not 0000H.";
    E10 => F8, "Host SS selector is not 0000H when host address-space size = 0.";
    E11 => F8, "Host FS base is canonical.";
    E12 => F8, "Host GS base is canonical.";
    E13 => F8, "Host GDTR base is canonical.";
    E14 => F8, "Host IDTR base is canonical.";
    E15 => F8, "Host TR base is canonical.";
    F1 => F8, "Outside IA-32e mode (EFER.LMA = 0): host address-space size = 0.";
    F2 => F8, "Host address-space size = 0: IA-32e mode guest = 0.";
    F3 => F8, "In IA-32e mode (EFER.LMA = 1): host address-space size = 1.";
    F4 => F8, "Host address-space size = 0: host CR4.PCIDE = 0.";
    F5 => F8, "Host address-space size = 0: host RIP bits 63:32 are 0.";
    F6 => F8, "Host address-space size = 1: host CR4.PAE = 1.";
    F7 => F8, "Host address-space size = 1: host RIP is canonical.";
    F8 => F8, "Processor without Intel 64: host address-space size and IA-32e mode guest are 0.";
    G1 => X33, "Guest CR0: every bit set in IA32_VMX_CR0_FIXED0 is 1 (PE, PG exempt with unrestricted guest; NW, CD never checked).";
    G2 => X33, "Guest CR0: every bit clear in IA32_VMX_CR0_FIXED1 is 0 (NW, CD never checked).";
    G3 => X33, "Guest CR0.PG = 1: CR0.PE = 1.";
    G4 => X33, "Guest CR4: every bit set in IA32_VMX_CR4_FIXED0 is 1.";
    G5 => X33, "Guest CR4: every bit clear in IA32_VMX_CR4_FIXED1 is 0.";
    G6 => X33, "Guest CR4.CET = 1: CR0.WP = 1.";
    G7 => X33, "Load debug controls: guest IA32_DEBUGCTL reserved bits are 0.";
    G8 => X33, "Load debug controls: guest DR7 bits 63:32 are 0.";
    G9 => X33, "IA-32e mode guest = 1: CR0.PG = 1.";
    G10 => X33, "IA-32e mode guest = 1: CR4.PAE = 1.";
    G11 => X33, "IA-32e mode guest = 0: CR4.PCIDE = 0.";
    G12 => X33, "IA-32e mode guest = 0: CR4.FRED = 0.";
    G13 => X33, "Guest CR3: no bits beyond MAXPHYADDR (LAM bits 62:61 exempt with LAM).";
    G14 => X33, "Guest IA32_SYSENTER_ESP is canonical.";
    G15 => X33, "Guest IA32_SYSENTER_EIP is canonical.";
    G16 => X33, "Load IA32_PERF_GLOBAL_CTRL (entry): reserved bits are 0.";
    G17 => X33, "Load IA32_PAT (entry): every PAT entry is 0, 1, 4, 5, 6 or 7.";
    G18 => X33, "Load IA32_EFER (entry): EFER reserved bits are 0.";
    G19 => X33, "Load IA32_EFER (entry): EFER.LMA equals IA-32e mode guest.";
    G20 => X33, "Load IA32_EFER (entry) and CR0.PG = 1: EFER.LME equals EFER.LMA.";
    G21 => X33, "Load IA32_BNDCFGS: reserved bits 11:2 are 0.";
    G22 => X33, "Load IA32_BNDCFGS: bits 63:12 form a canonical address.";
    G23 => X33, "Load IA32_RTIT_CTL: reserved bits are 0.";
    G24 => X33, "Load CET state (entry): guest IA32_S_CET reserved bits 0, SUPPRESS and TRACKER not both 1.";
    G25 => X33, "Load CET state (entry): guest IA32_S_CET canonicality (not required by the SDM).";
    G26 => X33, "Load CET state (entry): guest SSP bits 1:0 are 0.";
    G27 => X33, "Load CET state (entry): guest SSP bits 63:N identical (N = linear-address width).";
    G28 => X33, "Load CET state (entry): guest IA32_INTERRUPT_SSP_TABLE_ADDR canonical.";
    G29 => X33, "Load PKRS (entry): guest IA32_PKRS bits 63:32 are 0.";
    G30 => X33, "Load UINV: guest UINV bits 15:8 are 0.";
    G31 => X33, "Load IA32_LBR_CTL (entry): reserved bits are 0.";
    G32 => X33, "Load FRED (entry): IA32_FRED_CONFIG, RSP1-3 and SSP1-3 checks.";
    G33 => X33, "Load guest IA32_SPEC_CTRL: value valid.";
    H1 => X33, "Virtual-8086 guest: CS/SS/DS/ES/FS/GS base equals selector * 16.";
    H2 => X33, "Virtual-8086 guest: every segment limit is 0000FFFFH.";
    H3 => X33, "Virtual-8086 guest: every segment access-rights field is 000000F3H.";
    H4 => X33, "Guest TR selector: TI = 0.";
    H5 => X33, "Guest LDTR usable: selector TI = 0.";
    H6 => X33, "Not virtual-8086 and no unrestricted guest: SS.RPL = CS.RPL.";
    H7 => X33, "Guest TR base is canonical.";
    H8 => X33, "Guest FS base is canonical.";
    H9 => X33, "Guest GS base is canonical.";
    H10 => X33, "Guest LDTR base is canonical if LDTR is usable.";
    H11 => X33, "Guest CS base bits 63:32 are 0.";
    H12 => X33, "Guest SS/DS/ES base bits 63:32 are 0 if usable.";
    H13 => X33, "Guest CS type is 9, 11, 13 or 15 (or 3 with unrestricted guest).";
    H14 => X33, "Guest SS usable: type is 3 or 7.";
    H15 => X33, "Guest DS/ES/FS/GS usable: accessed bit is 1.";
    H16 => X33, "Guest DS/ES/FS/GS usable and code: readable bit is 1.";
    H17 => X33, "Guest CS, and usable SS/DS/ES/FS/GS: S (descriptor type) = 1.";
    H18 => X33, "Guest CS type 3: CS.DPL = 0.";
    H19 => X33, "Guest CS non-conforming code (type 9, 11): CS.DPL = SS.DPL.";
    H20 => X33, "Guest CS conforming code (type 13, 15): CS.DPL <= SS.DPL.";
    H21 => X33, "No unrestricted guest: SS.DPL = SS.RPL.";
    H22 => X33, "Guest CS type 3 or CR0.PE = 0: SS.DPL = 0.";
    H23 => X33, "Guest DS/ES/FS/GS usable, no unrestricted guest, type 0-11: DPL >= RPL.";
    H24 => X33, "Guest CS, and usable SS/DS/ES/FS/GS: P = 1.";
    H25 => X33, "Guest CS, and usable SS/DS/ES/FS/GS: access-rights bits 11:8 are 0.";
    H26 => X33, "IA-32e mode guest with CS.L = 1: CS.D/B = 0.";
    H27 => X33, "Guest CS, and usable SS/DS/ES/FS/GS: limit and granularity are consistent.";
    H28 => X33, "Guest CS, and usable SS/DS/ES/FS/GS: access-rights bits 31:17 are 0.";
    H29 => X33, "Guest TR type is 11 (busy 32/64-bit TSS), or 3 (busy 16-bit TSS) outside IA-32e mode.";
    H30 => X33, "Guest TR: S = 0.";
    H31 => X33, "Guest TR: P = 1.";
    H32 => X33, "Guest TR: access-rights bits 11:8 and 31:17 are 0.";
    H33 => X33, "Guest TR: limit and granularity are consistent.";
    H34 => X33, "Guest TR is usable.";
    H35 => X33, "Guest LDTR usable: type is 2.";
    H36 => X33, "Guest LDTR usable: S = 0.";
    H37 => X33, "Guest LDTR usable: P = 1.";
    H38 => X33, "Guest LDTR usable: access-rights bits 11:8 and 31:17 are 0.";
    H39 => X33, "Guest LDTR usable: limit and granularity are consistent.";
    H40 => X33, "Guest CR4.FRED = 1: SS.DPL is 0 or 3 with CS.L and IOPL consequences.";
    I1 => X33, "Guest GDTR base is canonical.";
    I2 => X33, "Guest IDTR base is canonical.";
    I3 => X33, "Guest GDTR limit bits 31:16 are 0.";
    I4 => X33, "Guest IDTR limit bits 31:16 are 0.";
    J1 => X33, "Guest RIP bits 63:32 are 0 unless IA-32e mode guest with CS.L = 1.";
    J2 => X33, "IA-32e mode guest with CS.L = 1: RIP bits 63:N identical (N = linear-address width).";
    J3 => X33, "Guest RFLAGS reserved bits 63:22, 15, 5 and 3 are 0.";
    J4 => X33, "Guest RFLAGS bit 1 is 1.";
    J5 => X33, "Guest RFLAGS.VM = 0 in an IA-32e mode guest or with CR0.PE = 0.";
    J6 => X33, "Injecting an external interrupt: guest RFLAGS.IF = 1.";
    K1 => X33, "Guest activity state is 0-3 and supported per IA32_VMX_MISC bits 8:6.";
    K2 => X33, "HLT activity state: SS.DPL = 0.";
    K3 => X33, "Activity state not active: blocking by STI and by MOV SS are 0.";
    K4 => X33, "Injecting in HLT state: only external interrupt, NMI, #DB, #MC or pending MTF.";
    K5 => X33, "Injecting in shutdown state: only NMI or #MC.";
    K6 => X33, "Wait-for-SIPI state: no event injection.";
    K7 => X33, "Entry to SMM = 1: activity state is not wait-for-SIPI.";
    K8 => X33, "Interruptibility state: reserved bits 31:5 are 0 (bit 4 only with SGX).";
    K9 => X33, "Interruptibility state: blocking by STI and by MOV SS not both 1.";
    K10 => X33, "Guest RFLAGS.IF = 0: blocking by STI = 0.";
    K11 => X33, "Injecting an external interrupt: blocking by STI and by MOV SS are 0.";
    K12 => X33, "Injecting an NMI: blocking by MOV SS = 0 (blocking by STI fails with qualification 3 on some CPUs).";
    K13 => X33, "Blocking by SMI = 1 only in SMM.";
    K14 => X33, "Entry to SMM = 1: blocking by SMI = 1.";
    K15 => X33, "Virtual NMIs = 1 and injecting an NMI: blocking by NMI = 0.";
    K16 => X33, "Enclave interruption = 1: blocking by MOV SS = 0 and SGX supported.";
    K17 => X33, "Guest CR4.FRED = 1 and SS.DPL = 3: blocking by STI = 0.";
    K18 => X33, "Pending debug exceptions: reserved bits (all but 3:0, 12, 14, 16) are 0.";
    K19 => X33, "STI/MOV-SS blocking or HLT, RFLAGS.TF = 1, DEBUGCTL.BTF = 0: pending BS = 1.";
    K20 => X33, "STI/MOV-SS blocking or HLT, RFLAGS.TF = 0 or DEBUGCTL.BTF = 1: pending BS = 0.";
    K21 => X33, "Pending RTM = 1: bits 11:0 and 14 are 0, bit 12 is 1, RTM supported, no MOV-SS blocking.";
    K22 => InvalidGuestState(4), "VMCS link pointer not FFFFFFFF_FFFFFFFFh: bits 11:0 are 0 and within MAXPHYADDR.";
    K23 => InvalidGuestState(4), "VMCS link pointer: referenced VMCS revision id matches and bit 31 equals VMCS shadowing.";
    K24 => InvalidGuestState(4), "VMCS link pointer: not the current-VMCS pointer (outside SMM or entry to SMM).";
    K25 => InvalidGuestState(4), "VMCS link pointer: not the executive-VMCS pointer (in SMM with entry to SMM = 0).";
    L1 => InvalidGuestState(2), "PAE paging with EPT: present guest PDPTE fields have no reserved bits set.";
    L2 => InvalidGuestState(2), "PAE paging without EPT: present PDPTEs at guest CR3 have no reserved bits set.";
    M1 => MsrLoading, "VM-entry MSR-load entry: bits 63:32 of the first quadword are 0.";
    M2 => MsrLoading, "VM-entry MSR-load entry: index is not IA32_FS_BASE or IA32_GS_BASE.";
    M3 => MsrLoading, "VM-entry MSR-load entry: index is not an x2APIC MSR (800H-8FFH).";
    M4 => MsrLoading, "VM-entry MSR-load entry outside SMM: index is not IA32_SMM_MONITOR_CTL.";
    M5 => MsrLoading, "VM-entry MSR-load entry: index is not IA32_BIOS_UPDT_TRIG or IA32_BIOS_SIGN_ID.";
    M6 => MsrLoading, "VM-entry MSR-load entry: WRMSR of the value would not fault.";
    M7 => MsrLoading, "VM-entry MSR-load count does not exceed 512 * (IA32_VMX_MISC bits 27:25 + 1).";
}

impl Rule {
    /// The SDM section group of the rule, derived from the first letter of its ID.
    pub const fn group(self) -> RuleGroup {
        match self.id().as_bytes()[0] {
            b'P' => RuleGroup::Basic,
            b'A' => RuleGroup::ExecutionControls,
            b'B' => RuleGroup::ExitControls,
            b'C' => RuleGroup::EntryControls,
            b'D' => RuleGroup::HostControlRegisters,
            b'E' => RuleGroup::HostSegments,
            b'F' => RuleGroup::AddressSpaceSize,
            b'G' => RuleGroup::GuestControlRegisters,
            b'H' => RuleGroup::GuestSegments,
            b'I' => RuleGroup::GuestDescriptorTables,
            b'J' => RuleGroup::GuestRipRflags,
            b'K' => RuleGroup::GuestNonRegisterState,
            b'L' => RuleGroup::GuestPdptes,
            _ => RuleGroup::MsrLoading,
        }
    }

    /// The SDM section title of the rule (see [`RuleGroup::section_title`]).
    pub const fn section_title(self) -> &'static str {
        self.group().section_title()
    }

    /// The rule whose spec ID is `id` (e.g. `"K23"`), if any.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }

    /// Whether the checker evaluates this rule, and if not, why.
    pub const fn coverage(self) -> Coverage {
        use Coverage::NotCovered;
        match self {
            Rule::P1 | Rule::P2 | Rule::P3 => NotCovered(
                "a fault or VM exit before any VMCS check; the checker models an instruction executed \
                 in VMX root operation at CPL 0 in protected or 64-bit mode",
            ),
            Rule::P9 => NotCovered(
                "dual-monitor treatment of SMIs and SMM (the executive-VMCS pointer) is not modelled by \
                 the capability model or the launch context",
            ),
            Rule::A46 | Rule::A47 => NotCovered(
                "tertiary-control entry checks (IPI virtualization, HLAT) could not be verified against \
                 a current SDM in this release, and no Bochs model offers tertiary controls to test them",
            ),
            Rule::A48 => NotCovered("not an SDM requirement (only Bochs checks it)"),
            Rule::A49 => {
                NotCovered("not an Intel requirement (a VirtualBox implementation restriction)")
            }
            Rule::D20 | Rule::G33 => NotCovered(
                "the SDM defines no separate validity rule for a loaded IA32_SPEC_CTRL value that \
                 could be verified (the fields are GUEST_IA32_SPEC_CTRL and HOST_IA32_SPEC_CTRL)",
            ),
            Rule::D21 | Rule::D22 | Rule::D23 | Rule::G32 | Rule::H40 | Rule::K17 => NotCovered(
                "FRED VM-entry checks need the FRED VMCS fields and a verified SDM text; neither is \
                 available in this release (CR4.FRED itself is checked by G12)",
            ),
            Rule::G25 => NotCovered(
                "the SDM does not require guest IA32_S_CET to be canonical; only Bochs does (spec §5)",
            ),
            _ => Coverage::Covered,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A set of rules, as a fixed-size bitset (no allocation).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RuleSet([u64; RuleSet::WORDS]);

impl RuleSet {
    const WORDS: usize = Rule::COUNT.div_ceil(64);

    /// The empty set.
    pub const fn new() -> Self {
        Self([0; Self::WORDS])
    }

    /// Every rule the checker evaluates ([`Coverage::Covered`]).
    pub fn covered() -> Self {
        let mut set = Self::new();
        for rule in Rule::ALL {
            if rule.coverage() == Coverage::Covered {
                set.insert(rule);
            }
        }
        set
    }

    /// Adds `rule`.
    pub fn insert(&mut self, rule: Rule) {
        let i = rule as usize;
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Whether `rule` is in the set.
    pub const fn contains(&self, rule: Rule) -> bool {
        let i = rule as usize;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Number of rules in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The rules in the set, in spec order.
    pub fn iter(&self) -> impl Iterator<Item = Rule> + '_ {
        Rule::ALL.into_iter().filter(|r| self.contains(*r))
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
