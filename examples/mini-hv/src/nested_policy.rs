//! What mini-hv, as L0, offers a guest hypervisor (L1): the capability MSRs L1 reads, made from
//! the processor's by `vmx_caps::virt` with this policy. Shared by the kernel (`hv/nested.rs`) and
//! `vmxtool caps --nested`, which prints them for any processor or dump.

use vmcs::nested::VMCS02_CONTROLS;
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{EptVpidCap, SecondaryControls, VmxCapabilities};
use vmx_core::InvvpidType;

/// The VMCS revision identifier of L0's VMCS12 format (`IA32_VMX_BASIC[30:0]` as L1 reads it).
pub const NESTED_VMCS_REVISION: u32 = 0x4e53_5431;

/// The INVVPID type that invalidates every translation of one VPID on a processor with `cap`:
/// single-context (`IA32_VMX_EPT_VPID_CAP[41]`), else all-context (`[42]`, which flushes more);
/// `None` without either. L0 flushes VPID02, the VPID L2 runs with, with it.
pub fn vpid_flush_type(cap: &EptVpidCap) -> Option<InvvpidType> {
    [InvvpidType::SingleContext, InvvpidType::AllContext]
        .into_iter()
        .find(|kind| kind.supported_by(cap))
}

/// Whether the processor can invalidate every translation of one VPID ([`vpid_flush_type`]):
/// what L0 needs to give L2 its own VPID02 and flush it when L1's VPID12 changes or L1 executes
/// INVVPID.
pub fn vpid_flushable(cap: &EptVpidCap) -> bool {
    vpid_flush_type(cap).is_some()
}

/// What L0 offers L1 on a processor with capabilities `real`: every control VMCS02 can carry
/// ([`VMCS02_CONTROLS`]), "enable VPID" only where [`vpid_flushable`], "enable PML" only with
/// the EPT accessed and dirty flags (`IA32_VMX_EPT_VPID_CAP[21]`, which L1 is offered where the
/// processor has it: L0 logs the dirty flags of EPT12 it sets, SDM Vol. 3C 29.3.6), at revision
/// [`NESTED_VMCS_REVISION`]; `vmx_caps::virt` keeps it to what the processor allows.
pub fn policy(real: &VmxCapabilities) -> VirtualPolicy {
    let mut policy = VirtualPolicy::everything(NESTED_VMCS_REVISION);
    policy.offer = VMCS02_CONTROLS;
    if !real.ept_vpid.accessed_dirty() {
        policy = policy.without(SecondaryControls::ENABLE_PML);
    }
    if vpid_flushable(&real.ept_vpid) {
        policy
    } else {
        policy.without(SecondaryControls::ENABLE_VPID)
    }
}

/// Whether mini-hv can run a guest hypervisor's kernel (mini-hv as L1) on a processor with
/// capabilities `real`: L1's time source must be the VMX-preemption timer L0 passes on, since L0
/// models no local APIC (timer) for L1.
pub fn l1_has_time_source(real: &VmxCapabilities) -> bool {
    crate::requirements::PREEMPTION_TIMER.offered_by(real)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirements::Verdict;
    use vmx_caps::MsrSnapshot;

    /// A dump's capabilities (a partial dump's missing MSRs offering nothing).
    fn caps(dump: &str) -> VmxCapabilities {
        let mut msrs = MsrSnapshot::parse(dump).unwrap();
        VmxCapabilities::read_partial(&mut msrs).unwrap().caps
    }

    /// On the Bochs models L0 runs on, what it offers L1 is enough for mini-hv itself (the
    /// demonstration of issue 16: mini-hv as L1), with VPID and unrestricted guest, at L0's
    /// revision; the offer holds nothing the processor lacks.
    #[test]
    fn mini_hv_runs_as_l1_on_what_l0_offers() {
        for dump in [
            include_str!("../../../vmx-caps/testdata/tigerlake.msr"),
            include_str!("../../../vmx-caps/testdata/corei7_skylake_x.msr"),
        ] {
            let real = caps(dump);
            let virt = policy(&real).virtualize(&real).unwrap();
            assert_eq!(virt.caps.basic.revision_id(), NESTED_VMCS_REVISION);
            let verdict = Verdict::of(&virt.caps);
            assert!(verdict.runs(), "{verdict}");
            let proc2 = virt.caps.allowed(vmx_caps::ControlGroup::Secondary).1;
            let real2 = real.allowed(vmx_caps::ControlGroup::Secondary).1;
            assert!(virt.caps.proc2.allows(SecondaryControls::ENABLE_VPID));
            assert!(
                virt.caps
                    .proc2
                    .allows(SecondaryControls::UNRESTRICTED_GUEST)
            );
            assert_eq!(proc2 & !real2, 0, "offered what the processor lacks");
            // What L0 emulates in software: VMFUNC's EPTP switching and EPT-violation #VE.
            assert!(
                virt.caps
                    .proc2
                    .allows(SecondaryControls::ENABLE_VM_FUNCTIONS)
            );
            assert_eq!(virt.caps.vmfunc, vmx_caps::VmFuncControls::EPTP_SWITCHING);
            assert!(virt.caps.proc2.allows(SecondaryControls::EPT_VIOLATION_VE));
            // APIC virtualization on L1's own pages (`vmcs::nested::ApicPages02`).
            assert!(
                virt.caps
                    .proc
                    .allows(vmx_caps::PrimaryControls::USE_TPR_SHADOW)
            );
            assert!(virt.caps.proc2.allows(
                SecondaryControls::VIRTUALIZE_APIC_ACCESSES
                    | SecondaryControls::APIC_REGISTER_VIRTUALIZATION
                    | SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY
            ));
            // Page-modification logging of the EPT12 dirty flags L0 sets, with those flags.
            assert!(virt.caps.proc2.allows(SecondaryControls::ENABLE_PML));
            assert!(virt.caps.ept_vpid.accessed_dirty());
            // Not offered: what VMCS02 cannot carry.
            assert!(!virt.caps.proc2.allows(SecondaryControls::VMCS_SHADOWING));
            assert!(
                !virt
                    .caps
                    .proc2
                    .allows(SecondaryControls::VIRTUALIZE_X2APIC_MODE)
            );
            assert!(
                !virt
                    .caps
                    .pin
                    .allows(vmx_caps::PinBasedControls::PROCESS_POSTED_INTERRUPTS)
            );
        }
    }

    #[test]
    fn l1_needs_the_preemption_timer() {
        let tigerlake = caps(include_str!("../../../vmx-caps/testdata/tigerlake.msr"));
        assert!(l1_has_time_source(&tigerlake));
        let hyperv = caps(include_str!(
            "../../../vmx-caps/testdata/nested/hyperv_nested_raptorlake.msr"
        ));
        assert!(!l1_has_time_source(&hyperv));
    }

    /// PML is offered with the EPT accessed and dirty flags, whose setting in EPT12 L0 logs;
    /// a processor without those flags (or without PML) gets L1 no PML.
    #[test]
    fn pml_needs_the_ept_accessed_and_dirty_flags() {
        let real = caps(include_str!("../../../vmx-caps/testdata/tigerlake.msr"));
        let virt = policy(&real).virtualize(&real).unwrap();
        assert!(virt.caps.proc2.allows(SecondaryControls::ENABLE_PML));
        let mut no_ad = real;
        no_ad.ept_vpid = EptVpidCap(real.ept_vpid.0 & !(1 << 21));
        assert!(!no_ad.ept_vpid.accessed_dirty());
        let virt = policy(&no_ad).virtualize(&no_ad).unwrap();
        assert!(!virt.caps.proc2.allows(SecondaryControls::ENABLE_PML));
        assert!(!virt.caps.ept_vpid.accessed_dirty());
        // Cannon Lake has the flags but not PML: none offered.
        let cnl = caps(include_str!("../../../vmx-caps/testdata/corei3_cnl.msr"));
        assert!(cnl.ept_vpid.accessed_dirty());
        let virt = policy(&cnl).virtualize(&cnl).unwrap();
        assert!(!virt.caps.proc2.allows(SecondaryControls::ENABLE_PML));
    }

    #[test]
    fn vpid_needs_an_invvpid_that_flushes_a_whole_vpid() {
        let real = caps(include_str!("../../../vmx-caps/testdata/tigerlake.msr"));
        assert!(vpid_flushable(&real.ept_vpid));
        // INVVPID with only the individual-address type: VPID02 could not be flushed whole.
        let mut only_individual = real;
        only_individual.ept_vpid = EptVpidCap((real.ept_vpid.0 & !(0xf << 40)) | 1 << 40);
        assert!(!vpid_flushable(&only_individual.ept_vpid));
        let virt = policy(&only_individual)
            .virtualize(&only_individual)
            .unwrap();
        assert!(!virt.caps.proc2.allows(SecondaryControls::ENABLE_VPID));
        // Without INVVPID at all, likewise.
        let mut none = real;
        none.ept_vpid = EptVpidCap(real.ept_vpid.0 & !(1 << 32));
        assert!(!vpid_flushable(&none.ept_vpid));
    }
}
