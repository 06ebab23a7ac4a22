//! Virtual VMX capabilities for nested virtualization: the capability MSR values an outer
//! hypervisor (L0) shows its guest hypervisor (L1), computed from the processor's capabilities
//! and what L0 is willing to emulate.
//!
//! The result is a set of capability MSRs that obeys every rule of SDM Vol. 3D, Appendix A
//! ("VMX Capability Reporting Facility") on its own, and that never offers L1 a setting L0 could
//! not give the processor when it builds the VMCS that really runs L1's guest:
//!
//! - each control field's allowed-1 settings are a subset of the processor's, restricted to what
//!   the policy [offers](VirtualPolicy::offer); its allowed-0 settings (the bits that must be 1)
//!   are a superset of the processor's, with what the policy [requires](VirtualPolicy::require);
//! - the TRUE MSRs exist only where the processor has them and the policy wants them
//!   (`IA32_VMX_BASIC[55]`); the plain MSRs report the default1 class as must-be-1 (A.2
//!   "Reserved Controls and Default Settings");
//! - a control whose dependency is not offered is not offered either (e.g. "unrestricted guest"
//!   without "enable EPT", [`DEPENDENCIES`]); an activating control ("activate
//!   secondary controls", "activate tertiary controls", the VM-exit "activate secondary
//!   controls", "enable VM functions") is offered exactly when its field offers something;
//! - `IA32_VMX_EPT_VPID_CAP` reports EPT capabilities only when "enable EPT" is offered and VPID
//!   capabilities only when "enable VPID" is; the INVEPT/INVVPID types only with the instruction;
//! - `IA32_VMX_VMFUNC`, `IA32_VMX_MISC`, `IA32_VMX_VMCS_ENUM` and the CR0/CR4 fixed bits are the
//!   processor's, restricted by the policy.
//!
//! ```
//! use vmx_caps::virt::VirtualPolicy;
//! use vmx_caps::{MsrSnapshot, SecondaryControls, VmxCapabilities};
//!
//! let mut msrs = MsrSnapshot::parse(include_str!("../testdata/tigerlake.msr"))?;
//! let real = VmxCapabilities::read(&mut msrs)?;
//! // L0 emulates everything the processor has but VMCS shadowing and PML.
//! let policy = VirtualPolicy::everything(0x1234)
//!     .without(SecondaryControls::VMCS_SHADOWING | SecondaryControls::ENABLE_PML);
//! let virt = policy.virtualize(&real)?;
//! // What L1 reads with RDMSR decodes like any processor's capabilities.
//! let seen = VmxCapabilities::read(&mut virt.msrs.clone())?;
//! assert_eq!(seen, virt.caps);
//! assert_eq!(seen.basic.revision_id(), 0x1234);
//! assert!(!seen.proc2.allows(SecondaryControls::VMCS_SHADOWING));
//! assert!(seen.proc2.allows(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::arch::Cr4;
use crate::caps::{CapsError, FeatureControl, VmxCapabilities};
use crate::controls::{
    ControlBit, ControlGroup, Controls, EntryControls, ExitControls, PinBasedControls,
    PrimaryControls, SecondaryControls, SecondaryExitControls, TertiaryControls, VmFuncControls,
};
use crate::msr;
use crate::negotiate::{ControlSet, DEPENDENCIES};
use crate::source::{MsrSnapshot, SnapshotFull};

/// `IA32_VMX_MISC` flag bits a policy may pass through (SDM Vol. 3D, A.6): 5 (LMA stored on VM
/// exit), 6-8 (HLT, shutdown, wait-for-SIPI activity states), 14 (Intel PT in VMX operation),
/// 15 (RDMSR of IA32_SMBASE in SMM), 28 (IA32_SMM_MONITOR_CTL bit 2), 29 (VMWRITE to any
/// field), 30 (zero-length event injection).
pub const MISC_FLAGS: u64 =
    (1 << 5) | (0b111 << 6) | (1 << 14) | (1 << 15) | (1 << 28) | (1 << 29) | (1 << 30);

/// The `IA32_VMX_EPT_VPID_CAP` bits that describe EPT (bits 31:0: execute-only, page-walk
/// lengths, memory types, large pages, INVEPT and its types, accessed/dirty flags, advanced
/// exit information, supervisor shadow stacks).
pub const EPT_CAP_BITS: u64 = 0xffff_ffff;
/// The `IA32_VMX_EPT_VPID_CAP` bits that describe VPID (bits 47:32: INVVPID and its types).
pub const VPID_CAP_BITS: u64 = 0xffff << 32;
/// The `IA32_VMX_EPT_VPID_CAP` bits of the HLAT prefix size (bits 53:48), meaningful only with
/// the "enable HLAT" tertiary control.
pub const HLAT_CAP_BITS: u64 = 0x3f << 48;
/// EPT capability bits that make EPT usable at all and are passed through whenever "enable EPT"
/// is offered: page-walk lengths 4 and 5 (bits 6, 7) and the UC and WB paging-structure memory
/// types (bits 8, 14).
const EPT_ESSENTIAL: u64 = (1 << 6) | (1 << 7) | (1 << 8) | (1 << 14);
/// INVEPT (bit 20) and its single-context and all-context types (bits 25, 26).
const INVEPT: u64 = 1 << 20;
const INVEPT_TYPES: u64 = (1 << 25) | (1 << 26);
/// INVVPID (bit 32) and its four types (bits 43:40).
const INVVPID: u64 = 1 << 32;
const INVVPID_TYPES: u64 = 0xf << 40;

/// What L0 is willing to emulate for L1, and what it insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VirtualPolicy {
    /// The VMCS revision identifier of L0's VMCS12 format (`IA32_VMX_BASIC[30:0]`); L1 writes it
    /// into its VMXON region and each VMCS. Bit 31 must be 0.
    pub revision_id: u32,
    /// The size of L1's VMXON region and VMCS in bytes (`IA32_VMX_BASIC[44:32]`), 1 to 4096.
    pub vmcs_size: u32,
    /// Show the TRUE capability MSRs (`IA32_VMX_BASIC[55]`), where the processor has them: L1
    /// may then clear the default1 controls the processor lets L0 clear.
    pub true_controls: bool,
    /// The controls L1 may set to 1, if the processor allows them too. Controls the processor
    /// forces to 1, and the default1 class, are shown as allowed whatever this says.
    pub offer: ControlSet,
    /// The controls L1 must set to 1 (shown as allowed-0 = 1); each must be allowed by the
    /// processor and offered.
    pub require: ControlSet,
    /// The `IA32_VMX_EPT_VPID_CAP` bits L0 emulates (the processor's bits are masked with it).
    /// The page-walk lengths and paging-structure memory types are kept whenever EPT is
    /// offered.
    pub ept_vpid: u64,
    /// The [`MISC_FLAGS`] bits of `IA32_VMX_MISC` L0 emulates.
    pub misc_flags: u64,
    /// The largest number of CR3-target values shown (`IA32_VMX_MISC[24:16]`).
    pub cr3_targets: u32,
    /// Whether VM entry may deliver a hardware exception with or without an error code
    /// regardless of the vector (`IA32_VMX_BASIC[56]`), where the processor allows it.
    pub no_error_code_check: bool,
    /// The CR4 bits L1 may set in VMX operation (masks `IA32_VMX_CR4_FIXED1`).
    pub cr4_may_be_one: Cr4,
    /// The highest index of a VMCS field encoding L0's VMCS12 supports
    /// (`IA32_VMX_VMCS_ENUM[9:1]`, at most the processor's).
    pub vmcs_highest_index: u16,
}

impl VirtualPolicy {
    /// Everything the processor offers, with the TRUE MSRs, a 4096-byte VMCS and the given
    /// revision identifier; no control required. Narrow it with [`without`](Self::without).
    pub const fn everything(revision_id: u32) -> Self {
        let all = ControlSet {
            pin: PinBasedControls::from_bits_retain(u32::MAX),
            proc: PrimaryControls::from_bits_retain(u32::MAX),
            proc2: SecondaryControls::from_bits_retain(u32::MAX),
            proc3: TertiaryControls::from_bits_retain(u64::MAX),
            exit: ExitControls::from_bits_retain(u32::MAX),
            exit2: SecondaryExitControls::from_bits_retain(u64::MAX),
            entry: EntryControls::from_bits_retain(u32::MAX),
            vmfunc: VmFuncControls::from_bits_retain(u64::MAX),
        };
        Self {
            revision_id,
            vmcs_size: 4096,
            true_controls: true,
            offer: all,
            require: ControlSet::EMPTY,
            ept_vpid: u64::MAX,
            misc_flags: MISC_FLAGS,
            cr3_targets: 0x1ff,
            no_error_code_check: true,
            cr4_may_be_one: Cr4::all(),
            vmcs_highest_index: 0x1ff,
        }
    }

    /// The policy with `flags` no longer offered.
    #[must_use]
    pub fn without(mut self, flags: impl Into<ControlSet>) -> Self {
        self.offer = self.offer.difference(&flags.into());
        self
    }

    /// The policy with `flags` required of L1.
    #[must_use]
    pub fn requiring(mut self, flags: impl Into<ControlSet>) -> Self {
        self.require = self.require.union(&flags.into());
        self
    }

    /// Computes the capability MSRs to show L1 from the processor's capabilities `real`.
    ///
    /// # Errors
    ///
    /// [`VirtualCapsError`] when the policy itself is invalid: a revision identifier with bit 31
    /// set, a VMCS size of 0 or above 4096, or a required control the processor does not allow
    /// or the policy does not offer.
    pub fn virtualize(
        &self,
        real: &VmxCapabilities,
    ) -> Result<VirtualCapabilities, VirtualCapsError> {
        if self.revision_id & (1 << 31) != 0 {
            return Err(VirtualCapsError::RevisionId(self.revision_id));
        }
        if self.vmcs_size == 0 || self.vmcs_size > 4096 {
            return Err(VirtualCapsError::VmcsSize(self.vmcs_size));
        }
        let true_controls = self.true_controls && real.basic.true_controls();

        let mut allowed0 = ControlSet::EMPTY;
        let mut allowed1 = ControlSet::EMPTY;
        for group in ControlGroup::ALL {
            let (a0, a1) = real.allowed(group);
            let required = self.require.get(group);
            let refused = required & !(a1 & self.offer.get(group));
            if refused != 0 {
                let bit = ControlBit::new(group, refused.trailing_zeros() as u8);
                return Err(VirtualCapsError::RequiredNotAllowed(bit));
            }
            let must = a0 | required;
            allowed0.set(group, must);
            allowed1.set(
                group,
                (a1 & self.offer.get(group)) | must | (group.default1() & a1),
            );
        }
        remove_unusable(&mut allowed1, &allowed0);
        if !true_controls {
            // Without TRUE MSRs the default1 class is reported (and treated) as must-be-1.
            for group in ControlGroup::ALL {
                let d1 = group.default1() & allowed1.get(group);
                allowed0.set(group, allowed0.get(group) | d1);
            }
        }

        let ept = allowed1.proc2.contains(SecondaryControls::ENABLE_EPT);
        let vpid = allowed1.proc2.contains(SecondaryControls::ENABLE_VPID);
        let hlat = allowed1.proc3.contains(TertiaryControls::ENABLE_HLAT);
        let mut ept_vpid = real.ept_vpid.0 & (self.ept_vpid | EPT_ESSENTIAL);
        if !ept {
            ept_vpid &= !EPT_CAP_BITS;
        }
        if !vpid {
            ept_vpid &= !VPID_CAP_BITS;
        }
        if !hlat {
            ept_vpid &= !HLAT_CAP_BITS;
        }
        if ept_vpid & INVEPT == 0 {
            ept_vpid &= !INVEPT_TYPES;
        }
        if ept_vpid & INVVPID == 0 {
            ept_vpid &= !INVVPID_TYPES;
        }

        let real_misc = real.misc.0;
        let cr3_targets = real
            .misc
            .cr3_target_count()
            .min(self.cr3_targets.min(0x1ff));
        let misc = (real_misc & 0x1f)
            | (real_misc & MISC_FLAGS & self.misc_flags)
            | (u64::from(cr3_targets) << 16)
            | (real_misc & (0b111 << 25));

        let basic = u64::from(self.revision_id)
            | (u64::from(self.vmcs_size) << 32)
            | (real.basic.0 & (1 << 48))
            | (real.basic.0 & (0xf << 50))
            | (real.basic.0 & (1 << 54))
            | (u64::from(true_controls) << 55)
            | (real.basic.0 & (u64::from(self.no_error_code_check) << 56));

        let cr4_fixed1 =
            (real.cr4_fixed.fixed1 & self.cr4_may_be_one.bits()) | real.cr4_fixed.fixed0;
        let highest = real
            .vmcs_enum
            .highest_index()
            .min(self.vmcs_highest_index & 0x1ff);

        let split = |group: ControlGroup, legacy: bool| {
            let mut a0 = allowed0.get(group);
            let a1 = allowed1.get(group);
            if legacy {
                a0 |= group.default1() & a1;
            }
            (a1 << 32) | a0
        };
        let entries = [
            (
                msr::IA32_FEATURE_CONTROL,
                (FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX).bits(),
            ),
            (msr::IA32_VMX_BASIC, basic),
            (msr::IA32_VMX_PINBASED_CTLS, split(ControlGroup::Pin, true)),
            (
                msr::IA32_VMX_PROCBASED_CTLS,
                split(ControlGroup::Primary, true),
            ),
            (msr::IA32_VMX_EXIT_CTLS, split(ControlGroup::Exit, true)),
            (msr::IA32_VMX_ENTRY_CTLS, split(ControlGroup::Entry, true)),
            (msr::IA32_VMX_MISC, misc),
            (msr::IA32_VMX_CR0_FIXED0, real.cr0_fixed.fixed0),
            (msr::IA32_VMX_CR0_FIXED1, real.cr0_fixed.fixed1),
            (msr::IA32_VMX_CR4_FIXED0, real.cr4_fixed.fixed0),
            (msr::IA32_VMX_CR4_FIXED1, cr4_fixed1),
            (msr::IA32_VMX_VMCS_ENUM, u64::from(highest) << 1),
            (
                msr::IA32_VMX_PROCBASED_CTLS2,
                split(ControlGroup::Secondary, false),
            ),
            (msr::IA32_VMX_EPT_VPID_CAP, ept_vpid),
            (
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                split(ControlGroup::Pin, false),
            ),
            (
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                split(ControlGroup::Primary, false),
            ),
            (
                msr::IA32_VMX_TRUE_EXIT_CTLS,
                split(ControlGroup::Exit, false),
            ),
            (
                msr::IA32_VMX_TRUE_ENTRY_CTLS,
                split(ControlGroup::Entry, false),
            ),
            (msr::IA32_VMX_VMFUNC, allowed1.vmfunc.to_raw()),
            (msr::IA32_VMX_PROCBASED_CTLS3, allowed1.proc3.to_raw()),
            (msr::IA32_VMX_EXIT_CTLS2, allowed1.exit2.to_raw()),
        ];
        let presence = msr::Presence {
            basic,
            procbased: split(ControlGroup::Primary, true),
            exit: split(ControlGroup::Exit, true),
            procbased2: split(ControlGroup::Secondary, false),
        };
        let mut msrs = MsrSnapshot::new();
        for (address, value) in entries {
            if presence.exists(address) {
                msrs.insert(address, value)
                    .map_err(|SnapshotFull| VirtualCapsError::SnapshotFull)?;
            }
        }
        let caps = VmxCapabilities::read(&mut msrs.clone()).map_err(VirtualCapsError::Decode)?;
        Ok(VirtualCapabilities { msrs, caps })
    }
}

/// Removes from `allowed1` what cannot be used: a control whose dependency
/// ([`DEPENDENCIES`]) may not be 1, a field whose activating control may not be 1, and an
/// activating control whose field allows nothing. Bits the processor forces (`allowed0`) stay.
fn remove_unusable(allowed1: &mut ControlSet, allowed0: &ControlSet) {
    // Each pass only clears bits, so this ends; the chains are at most three deep.
    loop {
        let before = *allowed1;
        for &(control, requires) in DEPENDENCIES {
            if !allowed1.contains(requires) && !allowed0.contains(control) {
                allowed1.set(control.group, allowed1.get(control.group) & !control.mask());
            }
        }
        for group in ControlGroup::ALL {
            let Some(activator) = group.activated_by() else {
                continue;
            };
            if !allowed1.contains(activator) {
                allowed1.set(group, 0);
            } else if allowed1.get(group) == 0 && !allowed0.contains(activator) {
                allowed1.set(
                    activator.group,
                    allowed1.get(activator.group) & !activator.mask(),
                );
            }
        }
        if *allowed1 == before {
            return;
        }
    }
}

/// The capability MSRs shown to L1 ([`VirtualPolicy::virtualize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualCapabilities {
    /// The value of every capability MSR that exists for L1 (by the SDM's rules of
    /// [`msr::Presence::exists`]), and only those: what L0 returns for L1's RDMSR. A read of
    /// any other address gives [`MsrError::Missing`](crate::MsrError::Missing), which L0 turns
    /// into the #GP the processor would raise.
    pub msrs: MsrSnapshot,
    /// The same MSRs decoded ([`VmxCapabilities::read`] of `msrs`): what L0 checks L1's VMCS12
    /// against.
    pub caps: VmxCapabilities,
}

/// Why a [`VirtualPolicy`] cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VirtualCapsError {
    /// The VMCS revision identifier has bit 31 set (`IA32_VMX_BASIC[31]` is always 0).
    #[error("VMCS revision identifier {0:#x} has bit 31 set")]
    RevisionId(u32),
    /// The VMCS size is 0 or above 4096 bytes (`IA32_VMX_BASIC[44:32]`).
    #[error("VMCS size {0} is not between 1 and 4096 bytes")]
    VmcsSize(u32),
    /// A control the policy requires of L1 is not allowed by the processor or not offered.
    #[error("required control {0} is not allowed by the processor or not offered")]
    RequiredNotAllowed(ControlBit),
    /// The MSR set did not fit a snapshot (it holds every capability MSR, so this means a
    /// defect).
    #[error("the virtual capability MSRs do not fit a snapshot")]
    SnapshotFull,
    /// The MSR set did not decode.
    #[error("the virtual capability MSRs do not decode: {0}")]
    Decode(CapsError),
}
