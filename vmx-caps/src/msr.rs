//! Addresses of the VMX capability MSRs (SDM Vol. 3D, Appendix A, "VMX Capability Reporting
//! Facility", and Vol. 4, "Model-Specific Registers") and the rules that say which of them exist;
//! and the addresses of the architectural MSRs a hypervisor saves, loads or intercepts around the
//! VMCS (SDM Vol. 4, Table 2-2 "IA-32 Architectural MSRs").

/// `IA32_FEATURE_CONTROL` (0x3A): lock bit and VMXON enables inside/outside SMX.
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
/// `IA32_VMX_BASIC` (0x480): basic VMX information (Appendix A.1).
pub const IA32_VMX_BASIC: u32 = 0x480;
/// `IA32_VMX_PINBASED_CTLS` (0x481): allowed settings of the pin-based VM-execution controls (A.3.1).
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// `IA32_VMX_PROCBASED_CTLS` (0x482): allowed settings of the primary processor-based
/// VM-execution controls (A.3.2).
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// `IA32_VMX_EXIT_CTLS` (0x483): allowed settings of the primary VM-exit controls (A.4.1).
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// `IA32_VMX_ENTRY_CTLS` (0x484): allowed settings of the VM-entry controls (A.5).
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// `IA32_VMX_MISC` (0x485): miscellaneous VMX data (A.6).
pub const IA32_VMX_MISC: u32 = 0x485;
/// `IA32_VMX_CR0_FIXED0` (0x486): CR0 bits fixed to 1 in VMX operation (A.7).
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// `IA32_VMX_CR0_FIXED1` (0x487): CR0 bits that may be 1 in VMX operation (A.7).
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// `IA32_VMX_CR4_FIXED0` (0x488): CR4 bits fixed to 1 in VMX operation (A.8).
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// `IA32_VMX_CR4_FIXED1` (0x489): CR4 bits that may be 1 in VMX operation (A.8).
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// `IA32_VMX_VMCS_ENUM` (0x48A): highest index used in VMCS field encodings (A.9).
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
/// `IA32_VMX_PROCBASED_CTLS2` (0x48B): allowed settings of the secondary processor-based
/// VM-execution controls (A.3.3).
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
/// `IA32_VMX_EPT_VPID_CAP` (0x48C): EPT and VPID capabilities (A.10).
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
/// `IA32_VMX_TRUE_PINBASED_CTLS` (0x48D): pin-based controls, default1 class included (A.3.1).
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
/// `IA32_VMX_TRUE_PROCBASED_CTLS` (0x48E): primary processor-based controls, default1 class
/// included (A.3.2).
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
/// `IA32_VMX_TRUE_EXIT_CTLS` (0x48F): primary VM-exit controls, default1 class included (A.4.1).
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
/// `IA32_VMX_TRUE_ENTRY_CTLS` (0x490): VM-entry controls, default1 class included (A.5).
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// `IA32_VMX_VMFUNC` (0x491): allowed-1 settings of the VM-function controls (A.11).
pub const IA32_VMX_VMFUNC: u32 = 0x491;
/// `IA32_VMX_PROCBASED_CTLS3` (0x492): allowed-1 settings of the tertiary processor-based
/// VM-execution controls (A.3.4).
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
/// `IA32_VMX_EXIT_CTLS2` (0x493): allowed-1 settings of the secondary VM-exit controls (A.4.2).
pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;

/// `IA32_TIME_STAMP_COUNTER` (10H): the time-stamp counter.
pub const IA32_TIME_STAMP_COUNTER: u32 = 0x10;
/// `IA32_APIC_BASE` (1BH): local APIC base address and enables.
pub const IA32_APIC_BASE: u32 = 0x1b;
/// `IA32_TSC_ADJUST` (3BH): adjustment added to the time-stamp counter.
pub const IA32_TSC_ADJUST: u32 = 0x3b;
/// `IA32_SPEC_CTRL` (48H): speculation control.
pub const IA32_SPEC_CTRL: u32 = 0x48;
/// `IA32_BIOS_UPDT_TRIG` (79H): microcode update trigger.
pub const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
/// `IA32_BIOS_SIGN_ID` (8BH): microcode update signature.
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
/// `IA32_SMM_MONITOR_CTL` (9BH): SMM monitor configuration (dual-monitor treatment).
pub const IA32_SMM_MONITOR_CTL: u32 = 0x9b;
/// `IA32_MTRRCAP` (FEH): MTRR capabilities.
pub const IA32_MTRRCAP: u32 = 0xfe;
/// `IA32_SYSENTER_CS` (174H): SYSENTER target code segment.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP` (175H): SYSENTER target stack pointer.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP` (176H): SYSENTER target instruction pointer.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// `IA32_MISC_ENABLE` (1A0H): miscellaneous processor feature enables.
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
/// `IA32_DEBUGCTL` (1D9H): debug control (LBR, BTF, ...).
pub const IA32_DEBUGCTL: u32 = 0x1d9;
/// `IA32_PAT` (277H): page attribute table.
pub const IA32_PAT: u32 = 0x277;
/// `IA32_MTRR_DEF_TYPE` (2FFH): default memory type and MTRR enables.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
/// `IA32_PERF_GLOBAL_CTRL` (38FH): global enables of the performance counters.
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38f;
/// `IA32_RTIT_CTL` (570H): Intel Processor Trace control.
pub const IA32_RTIT_CTL: u32 = 0x570;
/// `IA32_S_CET` (6A2H): supervisor-mode CET configuration.
pub const IA32_S_CET: u32 = 0x6a2;
/// `IA32_INTERRUPT_SSP_TABLE_ADDR` (6A8H): linear address of the interrupt shadow-stack table.
pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6a8;
/// `IA32_TSC_DEADLINE` (6E0H): TSC-deadline mode of the local APIC timer.
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// `IA32_PKRS` (6E1H): protection keys for supervisor-mode pages.
pub const IA32_PKRS: u32 = 0x6e1;
/// First x2APIC MSR (800H): `IA32_X2APIC_*` occupy 800H to 8FFH.
pub const IA32_X2APIC_FIRST: u32 = 0x800;
/// `IA32_X2APIC_TPR` (808H): the x2APIC task-priority register.
pub const IA32_X2APIC_TPR: u32 = 0x808;
/// Last x2APIC MSR (8FFH).
pub const IA32_X2APIC_LAST: u32 = 0x8ff;
/// `IA32_BNDCFGS` (D90H): supervisor MPX configuration.
pub const IA32_BNDCFGS: u32 = 0xd90;
/// `IA32_XSS` (DA0H): supervisor state components enabled for XSAVES.
pub const IA32_XSS: u32 = 0xda0;
/// `IA32_EFER` (C0000080H): extended feature enables ([`crate::arch::Efer`]).
pub const IA32_EFER: u32 = 0xc000_0080;
/// `IA32_STAR` (C0000081H): SYSCALL/SYSRET segment selectors.
pub const IA32_STAR: u32 = 0xc000_0081;
/// `IA32_LSTAR` (C0000082H): SYSCALL target RIP in 64-bit mode.
pub const IA32_LSTAR: u32 = 0xc000_0082;
/// `IA32_CSTAR` (C0000083H): SYSCALL target RIP in compatibility mode (not used by Intel
/// processors).
pub const IA32_CSTAR: u32 = 0xc000_0083;
/// `IA32_FMASK` (C0000084H): RFLAGS mask of SYSCALL.
pub const IA32_FMASK: u32 = 0xc000_0084;
/// `IA32_FS_BASE` (C0000100H): FS base address.
pub const IA32_FS_BASE: u32 = 0xc000_0100;
/// `IA32_GS_BASE` (C0000101H): GS base address.
pub const IA32_GS_BASE: u32 = 0xc000_0101;
/// `IA32_KERNEL_GS_BASE` (C0000102H): the GS base SWAPGS exchanges.
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// `IA32_TSC_AUX` (C0000103H): the value RDTSCP and RDPID return.
pub const IA32_TSC_AUX: u32 = 0xc000_0103;

/// Every VMX capability MSR, in address order, with its SDM name.
pub const ALL: [(u32, &str); 21] = [
    (IA32_FEATURE_CONTROL, "IA32_FEATURE_CONTROL"),
    (IA32_VMX_BASIC, "IA32_VMX_BASIC"),
    (IA32_VMX_PINBASED_CTLS, "IA32_VMX_PINBASED_CTLS"),
    (IA32_VMX_PROCBASED_CTLS, "IA32_VMX_PROCBASED_CTLS"),
    (IA32_VMX_EXIT_CTLS, "IA32_VMX_EXIT_CTLS"),
    (IA32_VMX_ENTRY_CTLS, "IA32_VMX_ENTRY_CTLS"),
    (IA32_VMX_MISC, "IA32_VMX_MISC"),
    (IA32_VMX_CR0_FIXED0, "IA32_VMX_CR0_FIXED0"),
    (IA32_VMX_CR0_FIXED1, "IA32_VMX_CR0_FIXED1"),
    (IA32_VMX_CR4_FIXED0, "IA32_VMX_CR4_FIXED0"),
    (IA32_VMX_CR4_FIXED1, "IA32_VMX_CR4_FIXED1"),
    (IA32_VMX_VMCS_ENUM, "IA32_VMX_VMCS_ENUM"),
    (IA32_VMX_PROCBASED_CTLS2, "IA32_VMX_PROCBASED_CTLS2"),
    (IA32_VMX_EPT_VPID_CAP, "IA32_VMX_EPT_VPID_CAP"),
    (IA32_VMX_TRUE_PINBASED_CTLS, "IA32_VMX_TRUE_PINBASED_CTLS"),
    (IA32_VMX_TRUE_PROCBASED_CTLS, "IA32_VMX_TRUE_PROCBASED_CTLS"),
    (IA32_VMX_TRUE_EXIT_CTLS, "IA32_VMX_TRUE_EXIT_CTLS"),
    (IA32_VMX_TRUE_ENTRY_CTLS, "IA32_VMX_TRUE_ENTRY_CTLS"),
    (IA32_VMX_VMFUNC, "IA32_VMX_VMFUNC"),
    (IA32_VMX_PROCBASED_CTLS3, "IA32_VMX_PROCBASED_CTLS3"),
    (IA32_VMX_EXIT_CTLS2, "IA32_VMX_EXIT_CTLS2"),
];

/// The SDM name of a VMX capability MSR, or `None` for any other address.
pub fn name(msr: u32) -> Option<&'static str> {
    ALL.iter().find(|(m, _)| *m == msr).map(|(_, n)| *n)
}

/// The values of the always-present capability MSRs that decide whether the others exist
/// (SDM Vol. 3D, Appendix A: each MSR section states the condition under which it exists).
///
/// Only meaningful on a processor with CPUID.1:ECX.VMX\[bit 5\] = 1, where `IA32_FEATURE_CONTROL`
/// and `IA32_VMX_BASIC` through `IA32_VMX_VMCS_ENUM` always exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Presence {
    /// Raw `IA32_VMX_BASIC`.
    pub basic: u64,
    /// Raw `IA32_VMX_PROCBASED_CTLS` (the non-TRUE MSR: its allowed-1 half equals the TRUE one).
    pub procbased: u64,
    /// Raw `IA32_VMX_EXIT_CTLS`.
    pub exit: u64,
    /// Raw `IA32_VMX_PROCBASED_CTLS2`, or 0 where that MSR does not exist.
    pub procbased2: u64,
}

impl Presence {
    /// Whether `IA32_VMX_PROCBASED_CTLS2` exists: the 1-setting of "activate secondary controls"
    /// (bit 63 of `IA32_VMX_PROCBASED_CTLS`) is allowed.
    pub const fn has_procbased2(&self) -> bool {
        self.procbased & (1 << 63) != 0
    }

    /// Whether `msr` exists on this processor. Addresses that are not VMX capability MSRs give
    /// `false`.
    ///
    /// - `IA32_FEATURE_CONTROL` and 0x480..=0x48A: always.
    /// - `PROCBASED_CTLS2`: "activate secondary controls" may be 1.
    /// - `EPT_VPID_CAP`: secondary controls exist and "enable EPT" (bit 33) or "enable VPID"
    ///   (bit 37) of `PROCBASED_CTLS2` may be 1.
    /// - The four TRUE MSRs: `IA32_VMX_BASIC[55]`.
    /// - `VMFUNC`: "enable VM functions" (bit 45 of `PROCBASED_CTLS2`) may be 1.
    /// - `PROCBASED_CTLS3`: "activate tertiary controls" (bit 49 of `PROCBASED_CTLS`) may be 1.
    /// - `EXIT_CTLS2`: "activate secondary controls" (bit 63 of `EXIT_CTLS`) may be 1.
    pub const fn exists(&self, msr: u32) -> bool {
        let proc2 = if self.has_procbased2() {
            self.procbased2
        } else {
            0
        };
        match msr {
            IA32_FEATURE_CONTROL | IA32_VMX_BASIC..=IA32_VMX_VMCS_ENUM => true,
            IA32_VMX_PROCBASED_CTLS2 => self.has_procbased2(),
            IA32_VMX_EPT_VPID_CAP => proc2 & ((1 << 33) | (1 << 37)) != 0,
            IA32_VMX_TRUE_PINBASED_CTLS..=IA32_VMX_TRUE_ENTRY_CTLS => self.basic & (1 << 55) != 0,
            IA32_VMX_VMFUNC => proc2 & (1 << 45) != 0,
            IA32_VMX_PROCBASED_CTLS3 => self.procbased & (1 << 49) != 0,
            IA32_VMX_EXIT_CTLS2 => self.exit & (1 << 63) != 0,
            _ => false,
        }
    }
}

/// A set of VMX capability MSRs (those of [`ALL`]), e.g. the ones a dump lacks
/// ([`PartialCapabilities::missing`](crate::PartialCapabilities::missing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MsrSet(u32);

/// Deserialized from the number it serializes to; a bit beyond the [`ALL`] MSRs names no
/// capability MSR and is an error (the set would be non-empty without a member).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for MsrSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bits = <u32 as serde::Deserialize>::deserialize(deserializer)?;
        // ALL has fewer than 32 entries (asserted below), so the shift is in range.
        if bits >> ALL.len() != 0 {
            return Err(serde::de::Error::custom(format_args!(
                "MSR set {bits:#x} has bits beyond the {} VMX capability MSRs",
                ALL.len()
            )));
        }
        Ok(Self(bits))
    }
}

const _: () = assert!(
    ALL.len() < 32,
    "an MsrSet holds one bit per MSR of ALL in a u32"
);

impl MsrSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    fn index(msr: u32) -> Option<usize> {
        ALL.iter().position(|(m, _)| *m == msr)
    }

    /// Adds `msr`; returns `false` (and adds nothing) when it is not a VMX capability MSR.
    pub fn insert(&mut self, msr: u32) -> bool {
        match Self::index(msr) {
            Some(i) => {
                self.0 |= 1 << i;
                true
            }
            None => false,
        }
    }

    /// Whether `msr` is in the set.
    pub fn contains(self, msr: u32) -> bool {
        Self::index(msr).is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members as (address, SDM name), in address order.
    pub fn iter(self) -> impl Iterator<Item = (u32, &'static str)> {
        ALL.iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, entry)| *entry)
    }
}
