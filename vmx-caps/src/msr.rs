//! Addresses of the VMX capability MSRs (SDM Vol. 3D, Appendix A, "VMX Capability Reporting
//! Facility", and Vol. 4, "Model-Specific Registers") and the rules that say which of them exist.

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MsrSet(u32);

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
