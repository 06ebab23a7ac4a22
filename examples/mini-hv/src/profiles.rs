//! Capability profiles of other platforms, presented to the negotiation on top of the processor's
//! own (`mini-hv.mask-caps=NAME` on the kernel command line, `cargo xtask run --mask-caps NAME`):
//! the example then runs with exactly what that platform would offer, as far as the processor
//! it runs on offers it too.

use vmx_caps::{AllowedControls, Controls, MsrSnapshot, VmxCapabilities, VmxMisc};

/// The capability MSRs Hyper-V offers a guest with nested virtualization (see the file's header:
/// no VMX-preemption timer, HLT/MWAIT/MONITOR exiting forced, no WBINVD exiting, ...).
pub const HYPERV: &str =
    include_str!("../../../vmx-caps/testdata/nested/hyperv_nested_raptorlake.msr");

/// The profiles by name.
pub const PROFILES: [(&str, &str); 1] = [("hyperv", HYPERV)];

/// Why a profile cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileError {
    /// No profile has this name.
    Unknown,
    /// The profile's dump does not parse.
    Parse(vmx_caps::SnapshotError),
    /// The profile's dump has no `IA32_VMX_BASIC`.
    Decode(vmx_caps::CapsError),
}

impl core::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unknown => write!(f, "no such profile (known: hyperv)"),
            Self::Parse(e) => write!(f, "the profile does not parse: {e}"),
            Self::Decode(e) => write!(f, "the profile does not decode: {e}"),
        }
    }
}

/// The capabilities of profile `name`, decoded as `vmxtool caps` decodes a partial dump.
pub fn profile(name: &str) -> Result<VmxCapabilities, ProfileError> {
    let (_, text) = PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or(ProfileError::Unknown)?;
    let mut snapshot = MsrSnapshot::parse(text).map_err(ProfileError::Parse)?;
    VmxCapabilities::read_partial(&mut snapshot)
        .map(|p| p.caps)
        .map_err(ProfileError::Decode)
}

/// Both sets' constraints at once: a control may be 1 only where both allow it, and must be 1
/// where either forces it.
fn both<F: Controls>(a: AllowedControls<F>, b: AllowedControls<F>) -> AllowedControls<F> {
    AllowedControls {
        allowed0: F::from_raw(a.allowed0.to_raw() | b.allowed0.to_raw()),
        allowed1: F::from_raw(a.allowed1.to_raw() & b.allowed1.to_raw()),
    }
}

/// The `IA32_VMX_MISC` flags (SDM Vol. 3D, A.6): bits 5-8, 14, 15 and 28-30.
const MISC_FLAGS: u64 = 0x7000_c1e0;
/// `IA32_VMX_MISC[24:16]`, the number of CR3-target values.
const MISC_CR3_TARGETS: u64 = 0x1ff << 16;
/// `IA32_VMX_MISC[27:25]`, the recommended maximum MSR-list size.
const MISC_MSR_LIST: u64 = 0x7 << 25;

/// `real` restricted to what `profile` offers: the control pairs, VM functions, EPT/VPID
/// capabilities and `IA32_VMX_MISC` flags of both; the larger CR fixed-1 demands and smaller
/// fixed-0 freedoms; the smaller CR3-target and MSR-list counts. `IA32_VMX_BASIC` (the VMCS
/// revision and size the processor uses), the preemption-timer rate, the MSEG revision and
/// `IA32_VMX_VMCS_ENUM` stay the processor's, which the VMCS it runs really is.
pub fn restrict(real: &VmxCapabilities, profile: &VmxCapabilities) -> VmxCapabilities {
    let (rm, pm) = (real.misc.0, profile.misc.0);
    let smaller = |mask: u64| (rm & mask).min(pm & mask);
    let misc = (rm & !(MISC_FLAGS | MISC_CR3_TARGETS | MISC_MSR_LIST))
        | (rm & pm & MISC_FLAGS)
        | smaller(MISC_CR3_TARGETS)
        | smaller(MISC_MSR_LIST);
    let mut out = *real;
    out.pin = both(real.pin, profile.pin);
    out.proc = both(real.proc, profile.proc);
    out.proc2 = both(real.proc2, profile.proc2);
    out.proc3 = both(real.proc3, profile.proc3);
    out.exit = both(real.exit, profile.exit);
    out.exit2 = both(real.exit2, profile.exit2);
    out.entry = both(real.entry, profile.entry);
    out.vmfunc = real.vmfunc & profile.vmfunc;
    out.misc = VmxMisc(misc);
    out.ept_vpid.0 = real.ept_vpid.0 & profile.ept_vpid.0;
    out.cr0_fixed.fixed0 = real.cr0_fixed.fixed0 | profile.cr0_fixed.fixed0;
    out.cr0_fixed.fixed1 = real.cr0_fixed.fixed1 & profile.cr0_fixed.fixed1;
    out.cr4_fixed.fixed0 = real.cr4_fixed.fixed0 | profile.cr4_fixed.fixed0;
    out.cr4_fixed.fixed1 = real.cr4_fixed.fixed1 & profile.cr4_fixed.fixed1;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirements::{OPTIONAL, PREEMPTION_TIMER, Verdict};
    use vmx_caps::{PinBasedControls, PrimaryControls, SecondaryControls};

    fn tigerlake() -> VmxCapabilities {
        let text = include_str!("../../../vmx-caps/testdata/tigerlake.msr");
        VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn tigerlake_masked_by_hyperv() {
        let real = tigerlake();
        let hv = profile("hyperv").unwrap();
        let masked = restrict(&real, &hv);
        // Hyper-V's own restrictions (from its dump's raw values).
        assert!(
            !masked
                .pin
                .allows(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
        );
        assert!(masked.proc.requires(
            PrimaryControls::HLT_EXITING
                | PrimaryControls::MWAIT_EXITING
                | PrimaryControls::MONITOR_EXITING
        ));
        assert!(!masked.proc2.allows(SecondaryControls::WBINVD_EXITING));
        assert!(!masked.proc2.allows(SecondaryControls::ENABLE_PML));
        assert!(masked.vmfunc.is_empty());
        assert_eq!(masked.misc.cr3_target_count(), 0);
        assert!(masked.misc.activity_hlt());
        assert!(!masked.misc.activity_shutdown());
        // What both offer stays: EPT, unrestricted guest, VPID.
        assert!(masked.proc2.allows(
            SecondaryControls::ENABLE_EPT
                | SecondaryControls::UNRESTRICTED_GUEST
                | SecondaryControls::ENABLE_VPID
        ));
        assert_eq!(masked.basic, real.basic);
        assert_eq!(masked.pin.raw(), (0x16, 0x3f));
        // The verdict: runs, with the APIC-timer fallback for the preemption timer.
        let verdict = Verdict::of(&masked);
        assert!(verdict.runs(), "{verdict}");
        assert!(verdict.fallbacks[0], "{verdict}");
        assert_eq!(OPTIONAL[0].capability, PREEMPTION_TIMER);
        let controls = verdict.negotiated.unwrap().value;
        assert!(
            controls
                .pin
                .contains(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
        );
        assert!(!PREEMPTION_TIMER.chosen_in(&controls));
        // Unmasked, the preemption timer is used and its fallback's controls are not requested.
        let verdict = Verdict::of(&real);
        assert!(verdict.runs() && !verdict.fallbacks[0], "{verdict}");
        let controls = verdict.negotiated.unwrap().value;
        assert!(
            !controls
                .pin
                .contains(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
        );
    }

    /// Every control with a function that the Hyper-V profile forces to 1 on top of `tigerlake`
    /// (the others it forces are reserved bits of the default1 class). Each must have its
    /// handling in both guests: HLT (the HLT activity state), MWAIT and MONITOR (`crate::mwait`),
    /// host address-space size (the 64-bit host sets it anyway), load debug controls (the test
    /// guest keeps its reset DR7 and IA32_DEBUGCTL; the Linux guest asks for "save debug
    /// controls" with it). A profile that forces anything else fails here.
    #[test]
    fn hyperv_forces_only_handled_controls() {
        use vmx_caps::{EntryControls, ExitControls};
        let masked = restrict(&tigerlake(), &profile("hyperv").unwrap());
        // The named (SDM) controls among the forced ones: the types keep reserved bits unnamed.
        fn named<F: Controls>(forced: F) -> Vec<&'static str> {
            forced.iter_names().map(|(name, _)| name).collect()
        }
        let none: Vec<&str> = Vec::new();
        assert_eq!(named(masked.pin.allowed0), none);
        assert_eq!(
            named(masked.proc.allowed0),
            ["HLT_EXITING", "MWAIT_EXITING", "MONITOR_EXITING"]
        );
        assert_eq!(named(masked.proc2.allowed0), none);
        assert_eq!(named(masked.exit.allowed0), ["HOST_ADDRESS_SPACE_SIZE"]);
        assert_eq!(named(masked.entry.allowed0), ["LOAD_DEBUG_CONTROLS"]);
        // The names are the flags' own.
        assert!(
            masked
                .exit
                .allowed0
                .contains(ExitControls::HOST_ADDRESS_SPACE_SIZE)
        );
        assert!(
            masked
                .entry
                .allowed0
                .contains(EntryControls::LOAD_DEBUG_CONTROLS)
        );
    }

    #[test]
    fn restriction_is_idempotent_and_never_widens() {
        let real = tigerlake();
        let hv = profile("hyperv").unwrap();
        let once = restrict(&real, &hv);
        assert_eq!(restrict(&once, &hv), once);
        for group in vmx_caps::ControlGroup::ALL {
            let (r0, r1) = real.allowed(group);
            let (m0, m1) = once.allowed(group);
            assert_eq!(m1 & !r1, 0, "{group:?}");
            assert_eq!(r0 & !m0, 0, "{group:?}");
        }
        assert_eq!(profile("vmware"), Err(ProfileError::Unknown));
    }
}
