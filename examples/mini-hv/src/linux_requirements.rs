//! What the Linux guest needs from VMX, as data: the control request ([`request`]) and the checks
//! its negotiated controls must pass ([`negotiate`]), with the verdict for any capability set
//! (the test guest's are in [`crate::requirements`]).
//!
//! The Linux guest runs unmodified with its devices passed through: I/O and MSR bitmaps, EPT with
//! an unrestricted guest, EFER switched by VM entry and exit; VPID, WBINVD exiting, RDTSCP,
//! INVPCID, XSAVES/XRSTORS and PAT switching where the processor has them. Controls a processor
//! forces to 1 are handled where the hypervisor can: HLT exiting (HLT waits in the HLT activity
//! state), MONITOR and MWAIT exiting (completed after their checks), "load debug controls" (with
//! "save debug controls" preferred, so that the guest's DR7 and IA32_DEBUGCTL survive VM exits);
//! CR3-load, CR3-store and INVLPG exiting cannot be (paging is the guest's alone).

use core::fmt;

use vmx_caps::{
    ControlRequest, EntryControls, ExitControls, NegotiatedControls, NegotiationError,
    PrimaryControls, SecondaryControls, VmxCapabilities,
};

/// The exiting controls the Linux guest's hypervisor does not emulate.
const CR3_INVLPG_EXITING: PrimaryControls = PrimaryControls::CR3_LOAD_EXITING
    .union(PrimaryControls::CR3_STORE_EXITING)
    .union(PrimaryControls::INVLPG_EXITING);

/// The controls the Linux guest asks for.
pub fn request() -> ControlRequest {
    ControlRequest::new()
        .require(PrimaryControls::USE_IO_BITMAPS | PrimaryControls::USE_MSR_BITMAPS)
        .require(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST)
        .prefer(
            SecondaryControls::ENABLE_VPID
                | SecondaryControls::WBINVD_EXITING
                | SecondaryControls::ENABLE_RDTSCP
                | SecondaryControls::ENABLE_INVPCID
                | SecondaryControls::ENABLE_XSAVES_XRSTORS,
        )
        .require(
            ExitControls::HOST_ADDRESS_SPACE_SIZE
                | ExitControls::LOAD_IA32_EFER
                | ExitControls::SAVE_IA32_EFER,
        )
        .prefer(ExitControls::SAVE_IA32_PAT | ExitControls::LOAD_IA32_PAT)
        .require(EntryControls::LOAD_IA32_EFER)
        .prefer(EntryControls::LOAD_IA32_PAT)
        // The guest's DR7 and IA32_DEBUGCTL survive VM exits (which load 400H and 0): saved at
        // exit, loaded at entry. A processor may force "load debug controls" (Hyper-V does); then
        // without "save debug controls" every entry would load stale values.
        .prefer(ExitControls::SAVE_DEBUG_CONTROLS)
        .prefer(EntryControls::LOAD_DEBUG_CONTROLS)
}

/// The Linux guest's controls on a processor where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxControls {
    /// The negotiation of [`request`].
    pub negotiated: NegotiatedControls,
    /// The processor forces HLT exiting: HLT is completed in the HLT activity state.
    pub hlt_exiting: bool,
    /// The processor forces MONITOR or MWAIT exiting: they complete after their checks.
    pub monitor_mwait_exiting: bool,
    /// IA32_PAT is saved and loaded at VM exit and loaded at VM entry.
    pub pat: bool,
}

/// Why the Linux guest cannot run on a processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsupported {
    /// [`request`] does not negotiate.
    Negotiation(NegotiationError),
    /// CR3-load, CR3-store or INVLPG exiting cannot be 0.
    Cr3InvlpgExiting,
    /// HLT exiting cannot be 0 and the HLT activity state (IA32_VMX_MISC\[6\]) is absent.
    HltExitingWithoutActivityHlt,
    /// EPT lacks 4-level walks or write-back paging structures (IA32_VMX_EPT_VPID_CAP\[6\],
    /// \[14\]).
    Ept,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Negotiation(e) => e.fmt(f),
            Self::Cr3InvlpgExiting => f.write_str("CR3/INVLPG exiting cannot be cleared"),
            Self::HltExitingWithoutActivityHlt => f.write_str(
                "HLT exiting cannot be cleared and there is no HLT activity state \
                 (IA32_VMX_MISC[6])",
            ),
            Self::Ept => f.write_str("EPT needs 4-level walks and write-back paging structures"),
        }
    }
}

/// Negotiates [`request`] on `caps` and checks the result against what the Linux guest's
/// hypervisor handles.
pub fn negotiate(caps: &VmxCapabilities) -> Result<LinuxControls, Unsupported> {
    let negotiated = caps
        .negotiate(&request())
        .map_err(Unsupported::Negotiation)?;
    let controls = negotiated.value;
    if controls.proc.intersects(CR3_INVLPG_EXITING) {
        return Err(Unsupported::Cr3InvlpgExiting);
    }
    let hlt_exiting = controls.proc.contains(PrimaryControls::HLT_EXITING);
    if hlt_exiting && !caps.misc.activity_hlt() {
        return Err(Unsupported::HltExitingWithoutActivityHlt);
    }
    if !(caps.ept_vpid.page_walk_4() && caps.ept_vpid.memory_type_wb()) {
        return Err(Unsupported::Ept);
    }
    Ok(LinuxControls {
        negotiated,
        hlt_exiting,
        monitor_mwait_exiting: controls
            .proc
            .intersects(PrimaryControls::MONITOR_EXITING | PrimaryControls::MWAIT_EXITING),
        pat: controls.entry.contains(EntryControls::LOAD_IA32_PAT)
            && controls
                .exit
                .contains(ExitControls::SAVE_IA32_PAT | ExitControls::LOAD_IA32_PAT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles;
    use vmx_caps::MsrSnapshot;

    fn caps(text: &str) -> VmxCapabilities {
        VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap()
    }

    fn tigerlake() -> VmxCapabilities {
        caps(include_str!("../../../vmx-caps/testdata/tigerlake.msr"))
    }

    #[test]
    fn runs_on_the_bochs_models_it_is_run_on_with_nothing_forced() {
        for text in [
            include_str!("../../../vmx-caps/testdata/corei7_skylake_x.msr"),
            include_str!("../../../vmx-caps/testdata/tigerlake.msr"),
        ] {
            let linux = negotiate(&caps(text)).unwrap();
            let controls = linux.negotiated.value;
            assert!(!linux.hlt_exiting);
            assert!(!linux.monitor_mwait_exiting);
            assert!(linux.pat);
            assert!(!controls.proc.intersects(CR3_INVLPG_EXITING));
            assert!(controls.proc2.contains(
                SecondaryControls::ENABLE_EPT
                    | SecondaryControls::UNRESTRICTED_GUEST
                    | SecondaryControls::ENABLE_VPID
            ));
            assert!(controls.entry.contains(EntryControls::LOAD_DEBUG_CONTROLS));
            assert!(controls.exit.contains(ExitControls::SAVE_DEBUG_CONTROLS));
        }
    }

    #[test]
    fn the_hyperv_profile_forces_hlt_and_monitor_mwait_exiting_which_are_handled() {
        let profile = profiles::profile("hyperv").unwrap();
        let masked = profiles::restrict(&tigerlake(), &profile);
        let linux = negotiate(&masked).unwrap();
        assert!(linux.hlt_exiting);
        assert!(linux.monitor_mwait_exiting);
        assert!(
            linux
                .negotiated
                .value
                .exit
                .contains(ExitControls::SAVE_DEBUG_CONTROLS)
        );
    }

    #[test]
    fn models_without_an_unrestricted_guest_or_ept_are_refused_by_the_negotiation() {
        for text in [
            include_str!("../../../vmx-caps/testdata/corei5_lynnfield_750.msr"),
            include_str!("../../../vmx-caps/testdata/core2_penryn_t9600.msr"),
        ] {
            let refused = negotiate(&caps(text)).unwrap_err();
            assert!(matches!(refused, Unsupported::Negotiation(_)), "{refused}");
        }
    }

    #[test]
    fn forced_hlt_exiting_needs_the_hlt_activity_state() {
        let mut caps = tigerlake();
        caps.proc.allowed0 |= PrimaryControls::HLT_EXITING;
        assert!(negotiate(&caps).unwrap().hlt_exiting);
        caps.misc = vmx_caps::VmxMisc(caps.misc.0 & !(1 << 6));
        assert_eq!(
            negotiate(&caps).unwrap_err(),
            Unsupported::HltExitingWithoutActivityHlt
        );
    }

    #[test]
    fn forced_cr3_or_invlpg_exiting_is_refused() {
        for forced in [
            PrimaryControls::CR3_LOAD_EXITING,
            PrimaryControls::CR3_STORE_EXITING,
            PrimaryControls::INVLPG_EXITING,
        ] {
            let mut caps = tigerlake();
            caps.proc.allowed0 |= forced;
            assert_eq!(negotiate(&caps).unwrap_err(), Unsupported::Cr3InvlpgExiting);
        }
    }
}
