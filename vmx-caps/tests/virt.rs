//! Virtual VMX capabilities (`vmx_caps::virt`) computed from every Bochs 2.7 dump in
//! `testdata/` (and the Hyper-V nested profile): they decode, are consistent by the SDM's rules
//! (Vol. 3D, Appendix A), offer nothing the processor refuses, and negotiation over them never
//! yields a control value the processor would reject.

use proptest::prelude::*;
use vmx_caps::arch::Cr4;
use vmx_caps::msr::{self, Presence};
use vmx_caps::virt::{VirtualCapsError, VirtualPolicy};
use vmx_caps::{
    ControlBit, ControlGroup, ControlRequest, ControlSet, DEPENDENCIES, DependencyPolicy,
    EntryControls, EptVpidCap, ExitControls, MsrSnapshot, MsrSource, PinBasedControls,
    PrimaryControls, SecondaryControls, VmFuncControls, VmxCapabilities,
};

/// Every dump in `testdata/` and `testdata/nested/`, by path without `.msr`, sorted.
fn dumps() -> Vec<String> {
    let root = format!("{}/testdata", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["", "nested/"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".msr") {
                out.push(format!("{dir}{stem}"));
            }
        }
    }
    out.sort();
    out
}

fn real(dump: &str) -> VmxCapabilities {
    let path = format!("{}/testdata/{dump}.msr", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    // The Hyper-V profile lacks a few MSRs (IA32_FEATURE_CONTROL, the TRUE entry controls,
    // IA32_VMX_VMFUNC): its partial decode is the conservative reading.
    VmxCapabilities::read_partial(&mut MsrSnapshot::parse(&text).unwrap())
        .unwrap()
        .caps
}

/// Policies a nested L0 plausibly uses: everything, everything without the TRUE MSRs, no EPT,
/// no VPID, no secondary controls at all, no VMCS shadowing/VM functions/PML.
fn policies() -> Vec<(&'static str, VirtualPolicy)> {
    let all = VirtualPolicy::everything(0x11e5_7ed0);
    vec![
        ("everything", all),
        (
            "legacy",
            VirtualPolicy {
                true_controls: false,
                ..all
            },
        ),
        ("no EPT", all.without(SecondaryControls::ENABLE_EPT)),
        ("no VPID", all.without(SecondaryControls::ENABLE_VPID)),
        (
            "no secondary",
            all.without(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS),
        ),
        (
            "kvm-like",
            all.without(
                SecondaryControls::VMCS_SHADOWING
                    | SecondaryControls::ENABLE_PML
                    | SecondaryControls::ENABLE_VM_FUNCTIONS,
            ),
        ),
    ]
}

/// Every rule of Appendix A that relates one capability MSR to another.
fn assert_consistent(
    label: &str,
    real: &VmxCapabilities,
    virt: &VmxCapabilities,
    msrs: &MsrSnapshot,
) {
    for group in ControlGroup::ALL {
        let (r0, r1) = real.allowed(group);
        let (v0, v1) = virt.allowed(group);
        assert_eq!(
            v1 & !r1,
            0,
            "{label}: {group}: allowed-1 beyond the processor's"
        );
        assert_eq!(
            r0 & !v0,
            0,
            "{label}: {group}: a forced control shown as optional"
        );
        assert_eq!(
            v0 & !v1,
            0,
            "{label}: {group}: a control both forced and refused"
        );
        if !virt.basic.true_controls() {
            // A.2: without TRUE MSRs the default1 class is reported as allowed-0 = 1.
            let d1 = group.default1();
            assert_eq!(
                d1 & !v0,
                0,
                "{label}: {group}: default1 class not forced (legacy)"
            );
        }
    }
    // Activating controls are offered exactly where their field offers something.
    for group in ControlGroup::ALL {
        if let Some(activator) = group.activated_by() {
            let field = virt.allowed(group).1;
            let act = virt.allowed(activator.group).1 & activator.mask() != 0;
            assert_eq!(act, field != 0, "{label}: activator of {group}");
        }
    }
    // No offered control lacks its dependency.
    for &(control, requires) in DEPENDENCIES {
        let offered = |b: ControlBit| virt.allowed(b.group).1 & b.mask() != 0;
        if offered(control) {
            assert!(
                offered(requires),
                "{label}: {control} offered without {requires}"
            );
        }
    }
    // EPT/VPID capabilities only with the controls (A.10), and a subset of the processor's.
    let ept = virt.proc2.allows(SecondaryControls::ENABLE_EPT);
    let vpid = virt.proc2.allows(SecondaryControls::ENABLE_VPID);
    assert_eq!(
        virt.ept_vpid.0 & !real.ept_vpid.0,
        0,
        "{label}: EPT/VPID caps beyond the processor's"
    );
    assert_eq!(
        virt.ept_vpid.0 & 0xffff_ffff != 0,
        ept,
        "{label}: EPT caps iff EPT"
    );
    assert_eq!(
        virt.ept_vpid.0 & (0xffff << 32) != 0,
        vpid,
        "{label}: VPID caps iff VPID"
    );
    if ept {
        assert!(
            virt.ept_vpid.page_walk_4() && virt.ept_vpid.memory_type_wb(),
            "{label}"
        );
    }
    if !virt.ept_vpid.invept() {
        assert!(!virt.ept_vpid.invept_single_context() && !virt.ept_vpid.invept_all_context());
    }
    assert_eq!(
        virt.vmfunc.bits() & !real.vmfunc.bits(),
        0,
        "{label}: VMFUNC"
    );
    // MISC: no more CR3 targets or activity states than the processor; no dual-monitor MSEG.
    assert!(virt.misc.cr3_target_count() <= real.misc.cr3_target_count());
    assert!(!virt.misc.activity_hlt() || real.misc.activity_hlt());
    assert_eq!(
        virt.misc.0 & !real.misc.0 & !(0x1ff << 16),
        0,
        "{label}: MISC"
    );
    assert_eq!(virt.misc.mseg_revision_id(), 0);
    assert!(!virt.basic.dual_monitor());
    assert_eq!(virt.basic.memory_type(), real.basic.memory_type());
    assert!(virt.vmcs_enum.highest_index() <= real.vmcs_enum.highest_index());
    // CR0/CR4: every bit fixed for the processor is fixed the same way for L1.
    assert_eq!(virt.cr0_fixed, real.cr0_fixed);
    assert_eq!(virt.cr4_fixed.fixed0, real.cr4_fixed.fixed0);
    assert_eq!(virt.cr4_fixed.fixed1 & !real.cr4_fixed.fixed1, 0);
    assert!(virt.feature_control.vmxon_allowed_outside_smx());
    // The snapshot holds exactly the MSRs that exist by the SDM's rules.
    let presence = Presence {
        basic: msrs.get(msr::IA32_VMX_BASIC).unwrap(),
        procbased: msrs.get(msr::IA32_VMX_PROCBASED_CTLS).unwrap(),
        exit: msrs.get(msr::IA32_VMX_EXIT_CTLS).unwrap(),
        procbased2: msrs.get(msr::IA32_VMX_PROCBASED_CTLS2).unwrap_or(0),
    };
    for (address, name) in msr::ALL {
        assert_eq!(
            msrs.get(address).is_some(),
            presence.exists(address),
            "{label}: {name}"
        );
    }
    // A TRUE MSR and its plain form agree on allowed-1; the plain one forces the default1 class.
    if virt.basic.true_controls() {
        for (plain, true_msr, group) in [
            (
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                ControlGroup::Pin,
            ),
            (
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                ControlGroup::Primary,
            ),
            (
                msr::IA32_VMX_EXIT_CTLS,
                msr::IA32_VMX_TRUE_EXIT_CTLS,
                ControlGroup::Exit,
            ),
            (
                msr::IA32_VMX_ENTRY_CTLS,
                msr::IA32_VMX_TRUE_ENTRY_CTLS,
                ControlGroup::Entry,
            ),
        ] {
            let p = msrs.get(plain).unwrap();
            let t = msrs.get(true_msr).unwrap();
            assert_eq!(p >> 32, t >> 32, "{label}: {group}");
            assert_eq!(
                p & 0xffff_ffff,
                (t & 0xffff_ffff) | group.default1(),
                "{label}: {group}"
            );
        }
    }
}

#[test]
fn every_dump_and_policy_gives_consistent_capabilities() {
    let dumps = dumps();
    assert_eq!(dumps.len(), 12, "{dumps:?}");
    for dump in &dumps {
        let real = real(dump);
        for (name, policy) in policies() {
            let label = format!("{dump}/{name}");
            let virt = policy.virtualize(&real).unwrap();
            let decoded = VmxCapabilities::read(&mut virt.msrs.clone()).unwrap();
            assert_eq!(decoded, virt.caps, "{label}");
            let partial = VmxCapabilities::read_partial(&mut virt.msrs.clone()).unwrap();
            assert!(partial.is_complete(), "{label}");
            assert_eq!(virt.caps.basic.revision_id(), 0x11e5_7ed0);
            assert_eq!(virt.caps.basic.vmcs_region_size(), 4096);
            assert_consistent(&label, &real, &virt.caps, &virt.msrs);
        }
    }
}

#[test]
fn everything_offers_what_the_processor_offers() {
    let dumps = dumps();
    assert_eq!(dumps.len(), 12, "{dumps:?}");
    for dump in &dumps {
        let real = real(dump);
        let virt = VirtualPolicy::everything(1).virtualize(&real).unwrap().caps;
        // Nothing is withheld from the plain controls, and the EPT/VPID capabilities pass.
        for group in [
            ControlGroup::Pin,
            ControlGroup::Primary,
            ControlGroup::Exit,
            ControlGroup::Entry,
        ] {
            assert_eq!(virt.allowed(group), real.allowed(group), "{dump}: {group}");
        }
        assert_eq!(virt.proc2, real.proc2, "{dump}");
        assert_eq!(virt.ept_vpid, real.ept_vpid, "{dump}");
        assert_eq!(
            virt.basic.true_controls(),
            real.basic.true_controls(),
            "{dump}"
        );
        assert_eq!(virt.misc, real.misc, "{dump}");
    }
}

#[test]
fn without_ept_hides_its_dependents_and_capabilities() {
    let real = real("tigerlake");
    assert!(real.vmfunc.contains(VmFuncControls::EPTP_SWITCHING));
    let virt = VirtualPolicy::everything(1)
        .without(SecondaryControls::ENABLE_EPT)
        .virtualize(&real)
        .unwrap();
    let caps = virt.caps;
    for control in [
        SecondaryControls::ENABLE_EPT,
        SecondaryControls::UNRESTRICTED_GUEST,
        SecondaryControls::ENABLE_PML,
        SecondaryControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT,
        SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT,
        // EPTP switching was the only VM function, so "enable VM functions" goes too.
        SecondaryControls::ENABLE_VM_FUNCTIONS,
    ] {
        assert!(!caps.proc2.allows(control), "{control:?}");
    }
    assert!(caps.proc2.allows(SecondaryControls::ENABLE_VPID));
    assert_eq!(caps.ept_vpid.0 & 0xffff_ffff, 0);
    assert!(caps.ept_vpid.invvpid() && caps.ept_vpid.invvpid_single_context());
    assert_eq!(virt.msrs.get(msr::IA32_VMX_VMFUNC), None);
    // Without VPID as well, IA32_VMX_EPT_VPID_CAP does not exist.
    let none = VirtualPolicy::everything(1)
        .without(SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID)
        .virtualize(&real)
        .unwrap();
    assert_eq!(none.msrs.get(msr::IA32_VMX_EPT_VPID_CAP), None);
    assert_eq!(none.caps.ept_vpid, EptVpidCap(0));
}

#[test]
fn without_secondary_controls_none_exist() {
    let real = real("corei7_skylake_x");
    let virt = VirtualPolicy::everything(1)
        .without(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
        .virtualize(&real)
        .unwrap();
    assert_eq!(virt.msrs.get(msr::IA32_VMX_PROCBASED_CTLS2), None);
    assert_eq!(virt.msrs.get(msr::IA32_VMX_EPT_VPID_CAP), None);
    assert_eq!(virt.msrs.get(msr::IA32_VMX_VMFUNC), None);
    assert!(virt.caps.proc2.allowed1.is_empty());
    // And the reverse: a secondary field with nothing offered drops its activating control.
    let empty = VirtualPolicy::everything(1)
        .without(SecondaryControls::all())
        .virtualize(&real)
        .unwrap();
    assert!(
        !empty
            .caps
            .proc
            .allows(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    );
}

#[test]
fn legacy_msrs_force_the_default1_class() {
    let real = real("tigerlake");
    // Tigerlake's TRUE MSRs let "CR3-load exiting" and "CR3-store exiting" be 0.
    assert!(!real.proc.requires(PrimaryControls::CR3_LOAD_EXITING));
    let policy = VirtualPolicy {
        true_controls: false,
        ..VirtualPolicy::everything(1)
    };
    let virt = policy.virtualize(&real).unwrap();
    assert!(!virt.caps.basic.true_controls());
    assert_eq!(virt.msrs.get(msr::IA32_VMX_TRUE_PROCBASED_CTLS), None);
    assert!(
        virt.caps
            .proc
            .requires(PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::CR3_STORE_EXITING)
    );
    assert!(virt.caps.exit.requires(ExitControls::SAVE_DEBUG_CONTROLS));
    assert!(virt.caps.entry.requires(EntryControls::LOAD_DEBUG_CONTROLS));
    // With TRUE MSRs, the plain MSR still reports them as must-be-1 while the TRUE one lets
    // them be 0.
    let with_true = VirtualPolicy::everything(1).virtualize(&real).unwrap();
    let plain = with_true.msrs.get(msr::IA32_VMX_PROCBASED_CTLS).unwrap();
    assert_ne!(plain & PrimaryControls::CR3_LOAD_EXITING.bits() as u64, 0);
    assert!(
        !with_true
            .caps
            .proc
            .requires(PrimaryControls::CR3_LOAD_EXITING)
    );
}

#[test]
fn required_controls_are_forced_for_l1() {
    let real = real("tigerlake");
    let virt = VirtualPolicy::everything(1)
        .requiring(PinBasedControls::NMI_EXITING)
        .virtualize(&real)
        .unwrap();
    assert!(virt.caps.pin.requires(PinBasedControls::NMI_EXITING));
    assert!(!real.pin.requires(PinBasedControls::NMI_EXITING));
}

#[test]
fn policy_restricts_misc_cr4_vmcs_enum_and_basic() {
    let real = real("tigerlake");
    let policy = VirtualPolicy {
        vmcs_size: 0x1000,
        misc_flags: 0,
        cr3_targets: 1,
        cr4_may_be_one: Cr4::all() - Cr4::PKE,
        vmcs_highest_index: 0x10,
        no_error_code_check: false,
        ..VirtualPolicy::everything(0x42)
    };
    let caps = policy.virtualize(&real).unwrap().caps;
    assert!(real.misc.activity_hlt() && !caps.misc.activity_hlt());
    assert!(real.misc.vmwrite_any_field() && !caps.misc.vmwrite_any_field());
    assert_eq!(caps.misc.cr3_target_count(), 1);
    assert_eq!(
        caps.misc.preemption_timer_tsc_shift(),
        real.misc.preemption_timer_tsc_shift()
    );
    assert_ne!(real.cr4_fixed.fixed1 & Cr4::PKE.bits(), 0);
    assert_eq!(caps.cr4_fixed.fixed1 & Cr4::PKE.bits(), 0);
    assert_eq!(caps.vmcs_enum.highest_index(), 0x10);
    assert!(real.basic.no_error_code_check() && !caps.basic.no_error_code_check());
    assert_eq!(caps.basic.revision_id(), 0x42);
}

#[test]
fn invalid_policies_are_refused() {
    let real = real("corei7_skylake_x");
    let base = VirtualPolicy::everything(1);
    assert_eq!(
        VirtualPolicy {
            revision_id: 1 << 31,
            ..base
        }
        .virtualize(&real),
        Err(VirtualCapsError::RevisionId(1 << 31))
    );
    for size in [0, 4097] {
        assert_eq!(
            VirtualPolicy {
                vmcs_size: size,
                ..base
            }
            .virtualize(&real),
            Err(VirtualCapsError::VmcsSize(size))
        );
    }
    // Skylake-X has no "monitor trap flag"; requiring it is refused, naming the bit.
    assert!(!real.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG));
    assert_eq!(
        base.requiring(PrimaryControls::MONITOR_TRAP_FLAG)
            .virtualize(&real),
        Err(VirtualCapsError::RequiredNotAllowed(ControlBit::new(
            ControlGroup::Primary,
            27
        )))
    );
    // Required but not offered.
    assert_eq!(
        base.without(SecondaryControls::ENABLE_EPT)
            .requiring(SecondaryControls::ENABLE_EPT)
            .virtualize(&real),
        Err(VirtualCapsError::RequiredNotAllowed(ControlBit::new(
            ControlGroup::Secondary,
            1
        )))
    );
}

#[test]
fn an_unknown_msr_reads_as_missing() {
    let virt = VirtualPolicy::everything(1)
        .virtualize(&real("tigerlake"))
        .unwrap();
    let mut msrs = virt.msrs.clone();
    assert!(msrs.read_msr(msr::IA32_VMX_PROCBASED_CTLS3).is_err());
    assert!(msrs.read_msr(msr::IA32_EFER).is_err());
}

/// Whether the processor accepts `value` in every field in use.
fn hardware_accepts(real: &VmxCapabilities, value: &ControlSet) -> Result<(), ControlGroup> {
    for group in ControlGroup::ALL {
        if !value.is_active(group) {
            continue;
        }
        let (a0, a1) = real.allowed(group);
        let v = value.get(group);
        if v & a0 != a0 || v & !a1 != 0 {
            return Err(group);
        }
    }
    Ok(())
}

fn control_set() -> impl Strategy<Value = ControlSet> {
    proptest::collection::vec(any::<u64>(), 8).prop_map(|raw| {
        let mut set = ControlSet::EMPTY;
        for (group, bits) in ControlGroup::ALL.into_iter().zip(raw) {
            set.set(group, bits);
        }
        set
    })
}

proptest! {
    /// Whatever L1 asks for over its virtual capabilities and whatever the policy withholds,
    /// what negotiation gives L1 is a value the processor accepts.
    #[test]
    fn negotiation_over_virtual_caps_is_accepted_by_the_processor(
        dump in 0..12usize,
        withheld in control_set(),
        wanted in control_set(),
        true_controls in any::<bool>(),
    ) {
        let dump = &dumps()[dump];
        let real = real(dump);
        let policy = VirtualPolicy { true_controls, ..VirtualPolicy::everything(7) }.without(withheld);
        let virt = policy.virtualize(&real).unwrap();
        assert_consistent(dump, &real, &virt.caps, &virt.msrs);
        let request = ControlRequest {
            optional: wanted,
            ..ControlRequest::new().with_dependencies(DependencyPolicy::DropOptional)
        };
        if let Ok(negotiated) = virt.caps.negotiate(&request) {
            prop_assert_eq!(hardware_accepts(&real, &negotiated.value), Ok(()));
            // Forced and default1 controls are shown whatever the policy withholds.
            let exempt = forced_or_default1(&real);
            prop_assert!(!negotiated.value.intersects(&withheld.difference(&exempt)));
        }
    }
}

fn forced_or_default1(real: &VmxCapabilities) -> ControlSet {
    let mut set = ControlSet::EMPTY;
    for group in ControlGroup::ALL {
        set.set(group, real.allowed(group).0 | group.default1());
    }
    set
}
