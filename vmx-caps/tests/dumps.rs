//! Decoding the capability MSRs read on every Bochs 2.7 CPU model with VMX (`testdata/*.msr`,
//! eleven models), and negotiating the example hypervisor's controls against each.

use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::{
    ControlGroup, ControlRequest, ControlState, CrUse, Default1Policy, EntryControls, ExitControls,
    FeatureControl, MsrSnapshot, PinBasedControls, PrimaryControls, SecondaryControls,
    VmFuncControls, VmcsMemoryType, VmxCapabilities, msr,
};

fn snapshot(model: &str) -> MsrSnapshot {
    let path = format!("{}/testdata/{model}.msr", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    MsrSnapshot::parse(&text).unwrap()
}

fn caps(model: &str) -> VmxCapabilities {
    VmxCapabilities::read(&mut snapshot(model)).unwrap()
}

/// The example hypervisor's request: EPT, unrestricted guest, MSR and I/O bitmaps, the
/// preemption timer and HLT exiting required; VPID and the rest optional.
fn hypervisor_request() -> ControlRequest {
    ControlRequest::new()
        .require(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
        .require(
            PrimaryControls::HLT_EXITING
                | PrimaryControls::USE_MSR_BITMAPS
                | PrimaryControls::USE_IO_BITMAPS,
        )
        .require(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST)
        .require(ExitControls::HOST_ADDRESS_SPACE_SIZE)
        .prefer(SecondaryControls::ENABLE_VPID | SecondaryControls::ENABLE_RDTSCP)
        .prefer(PrimaryControls::MONITOR_TRAP_FLAG)
        .prefer(ExitControls::SAVE_IA32_EFER | ExitControls::LOAD_IA32_EFER)
        .prefer(EntryControls::LOAD_IA32_EFER)
        .prefer(VmFuncControls::EPTP_SWITCHING)
}

/// Every Bochs 2.7 CPU model with VMX, oldest first; `testdata/` holds one dump per model.
const MODELS: [&str; 11] = [
    "core2_penryn_t9600",
    "corei5_lynnfield_750",
    "corei5_arrandale_m520",
    "corei7_sandy_bridge_2600k",
    "corei7_ivy_bridge_3770k",
    "corei7_haswell_4770",
    "broadwell_ult",
    "corei7_skylake_x",
    "corei3_cnl",
    "corei7_icelake_u",
    "tigerlake",
];

#[test]
fn testdata_holds_one_dump_per_model() {
    let dir = format!("{}/testdata", env!("CARGO_MANIFEST_DIR"));
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".msr").map(str::to_owned))
        .collect();
    found.sort();
    let mut expected: Vec<String> = MODELS.iter().map(|m| (*m).to_owned()).collect();
    expected.sort();
    assert_eq!(found, expected);
    for model in MODELS {
        let text = std::fs::read_to_string(format!("{dir}/{model}.msr")).unwrap();
        let header = text.lines().next().unwrap();
        assert!(
            header.starts_with("# IA32_VMX capability MSRs read by RDMSR on Bochs 2.7")
                && header.ends_with(&format!("cpu: model={model}")),
            "{model}: {header}"
        );
    }
}

/// What a Bochs model offers, as PLATFORM.md ("Bochs CPU models with VMX") describes it; each
/// column is checked against the decoded capability MSRs.
#[derive(Clone, Copy, Debug)]
struct Offers {
    model: &'static str,
    /// IA32_VMX_BASIC[30:0].
    revision: u32,
    /// Secondary control "enable EPT" (with 4-level walks, WB, 2-MiB pages, INVEPT).
    ept: bool,
    /// IA32_VMX_EPT_VPID_CAP[17]: 1-GiB EPT pages.
    ept_1g: bool,
    /// IA32_VMX_EPT_VPID_CAP[21]: accessed and dirty flags for EPT.
    ept_ad: bool,
    /// Secondary control "enable VPID" (with INVVPID).
    vpid: bool,
    /// Secondary control "unrestricted guest".
    unrestricted: bool,
    /// Pin-based control "activate VMX-preemption timer".
    preemption_timer: bool,
    /// Secondary control "enable VM functions" (EPTP switching).
    vmfunc: bool,
    /// Secondary control "VMCS shadowing".
    shadowing: bool,
    /// Secondary control "EPT-violation #VE".
    ve: bool,
    /// Secondary controls "APIC-register virtualization" and "virtual-interrupt delivery".
    apic_virtualization: bool,
    /// Secondary control "enable PML".
    pml: bool,
    /// Secondary controls "enable XSAVES/XRSTORS" and "use TSC scaling".
    xsaves_tsc_scaling: bool,
    /// Primary control "monitor trap flag".
    mtf: bool,
    /// Secondary control "sub-page write permissions for EPT".
    sub_page: bool,
    /// Exit and entry controls "load CET state".
    cet: bool,
}

const NOTHING: Offers = Offers {
    model: "",
    revision: 0x2b,
    ept: false,
    ept_1g: false,
    ept_ad: false,
    vpid: false,
    unrestricted: false,
    preemption_timer: false,
    vmfunc: false,
    shadowing: false,
    ve: false,
    apic_virtualization: false,
    pml: false,
    xsaves_tsc_scaling: false,
    mtf: false,
    sub_page: false,
    cet: false,
};

/// Nehalem/Westmere/Sandy Bridge/Ivy Bridge: EPT (2M), VPID, unrestricted guest, timer.
const WESTMERE: Offers = Offers {
    ept: true,
    vpid: true,
    unrestricted: true,
    preemption_timer: true,
    ..NOTHING
};

/// Haswell/Broadwell: + 1G EPT pages, EPT A/D, VMFUNC, VMCS shadowing, #VE, APIC virtualization.
const HASWELL: Offers = Offers {
    ept_1g: true,
    ept_ad: true,
    vmfunc: true,
    shadowing: true,
    ve: true,
    apic_virtualization: true,
    ..WESTMERE
};

/// Skylake-X: + PML, XSAVES, TSC scaling.
const SKYLAKE_X: Offers = Offers {
    pml: true,
    xsaves_tsc_scaling: true,
    ..HASWELL
};

/// Ice Lake: + monitor trap flag, sub-page write permissions, revision 0x4.
const ICELAKE: Offers = Offers {
    revision: 0x4,
    mtf: true,
    sub_page: true,
    ..SKYLAKE_X
};

const OFFERS: [Offers; 11] = [
    Offers {
        model: "core2_penryn_t9600",
        ..NOTHING
    },
    // Lynnfield: EPT and VPID but no unrestricted guest (the timer is there).
    Offers {
        model: "corei5_lynnfield_750",
        unrestricted: false,
        ..WESTMERE
    },
    Offers {
        model: "corei5_arrandale_m520",
        ..WESTMERE
    },
    Offers {
        model: "corei7_sandy_bridge_2600k",
        ..WESTMERE
    },
    Offers {
        model: "corei7_ivy_bridge_3770k",
        ..WESTMERE
    },
    Offers {
        model: "corei7_haswell_4770",
        ..HASWELL
    },
    Offers {
        model: "broadwell_ult",
        ..HASWELL
    },
    Offers {
        model: "corei7_skylake_x",
        ..SKYLAKE_X
    },
    // Cannon Lake: like Skylake-X without APIC-register virtualization, virtual-interrupt
    // delivery or PML.
    Offers {
        model: "corei3_cnl",
        apic_virtualization: false,
        pml: false,
        ..SKYLAKE_X
    },
    Offers {
        model: "corei7_icelake_u",
        ..ICELAKE
    },
    Offers {
        model: "tigerlake",
        cet: true,
        ..ICELAKE
    },
];

#[test]
fn each_model_offers_what_bochs_documents() {
    assert_eq!(
        OFFERS.map(|o| o.model),
        MODELS,
        "one row per model, in order"
    );
    for o in OFFERS {
        let c = caps(o.model);
        let m = o.model;
        assert_eq!(c.basic.revision_id(), o.revision, "{m}");
        let proc2 = |flag| {
            c.proc.allows(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS) && c.proc2.allows(flag)
        };
        assert_eq!(proc2(SecondaryControls::ENABLE_EPT), o.ept, "{m}: EPT");
        assert_eq!(c.ept_vpid.invept(), o.ept, "{m}: INVEPT");
        assert_eq!(c.ept_vpid.pdpte_1gb(), o.ept_1g, "{m}: 1-GiB EPT pages");
        assert_eq!(c.ept_vpid.accessed_dirty(), o.ept_ad, "{m}: EPT A/D");
        assert_eq!(proc2(SecondaryControls::ENABLE_VPID), o.vpid, "{m}: VPID");
        assert_eq!(c.ept_vpid.invvpid(), o.vpid, "{m}: INVVPID");
        assert_eq!(
            proc2(SecondaryControls::UNRESTRICTED_GUEST),
            o.unrestricted,
            "{m}: unrestricted guest"
        );
        assert_eq!(
            c.pin
                .allows(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER),
            o.preemption_timer,
            "{m}: preemption timer"
        );
        assert_eq!(
            c.exit.allows(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE),
            o.preemption_timer,
            "{m}: save preemption timer"
        );
        assert_eq!(
            proc2(SecondaryControls::ENABLE_VM_FUNCTIONS),
            o.vmfunc,
            "{m}: VMFUNC"
        );
        let vmfunc = if o.vmfunc {
            VmFuncControls::EPTP_SWITCHING
        } else {
            VmFuncControls::empty()
        };
        assert_eq!(c.vmfunc, vmfunc, "{m}: IA32_VMX_VMFUNC");
        assert_eq!(
            proc2(SecondaryControls::VMCS_SHADOWING),
            o.shadowing,
            "{m}: shadowing"
        );
        assert_eq!(
            c.misc.vmwrite_any_field(),
            o.shadowing,
            "{m}: VMWRITE to any field comes with shadowing here"
        );
        assert_eq!(proc2(SecondaryControls::EPT_VIOLATION_VE), o.ve, "{m}: #VE");
        for flag in [
            SecondaryControls::APIC_REGISTER_VIRTUALIZATION,
            SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY,
        ] {
            assert_eq!(proc2(flag), o.apic_virtualization, "{m}: {flag:?}");
        }
        assert_eq!(proc2(SecondaryControls::ENABLE_PML), o.pml, "{m}: PML");
        for flag in [
            SecondaryControls::ENABLE_XSAVES_XRSTORS,
            SecondaryControls::USE_TSC_SCALING,
        ] {
            assert_eq!(proc2(flag), o.xsaves_tsc_scaling, "{m}: {flag:?}");
        }
        assert_eq!(
            c.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG),
            o.mtf,
            "{m}: MTF"
        );
        assert_eq!(
            proc2(SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT),
            o.sub_page,
            "{m}: sub-page write permissions"
        );
        assert_eq!(
            c.exit.allows(ExitControls::LOAD_CET_STATE),
            o.cet,
            "{m}: CET (exit)"
        );
        assert_eq!(
            c.entry.allows(EntryControls::LOAD_CET_STATE),
            o.cet,
            "{m}: CET (entry)"
        );
        assert_eq!(
            c.ept_vpid.supervisor_shadow_stack(),
            o.cet,
            "{m}: EPT shadow-stack control"
        );

        // Where EPT and VPID exist, Bochs offers the whole set around them.
        let e = c.ept_vpid;
        if o.ept {
            assert!(e.execute_only() && e.page_walk_4() && e.pde_2mb(), "{m}");
            assert!(e.memory_type_uc() && e.memory_type_wb(), "{m}");
            assert!(e.invept_single_context() && e.invept_all_context(), "{m}");
            assert!(!e.page_walk_5(), "{m}");
        }
        if o.vpid {
            assert!(
                e.invvpid_individual_address() && e.invvpid_single_context(),
                "{m}"
            );
            assert!(
                e.invvpid_all_context() && e.invvpid_single_context_retaining_globals(),
                "{m}"
            );
        }
        assert_eq!(
            snapshot(m).get(msr::IA32_VMX_EPT_VPID_CAP).is_some(),
            o.ept || o.vpid,
            "{m}: IA32_VMX_EPT_VPID_CAP exists iff EPT or VPID does"
        );

        // The example hypervisor needs EPT, unrestricted guest and the timer: it runs on every
        // model from Arrandale on, and is told exactly what is missing on the two before.
        match c.negotiate(&hypervisor_request()) {
            Ok(n) => {
                assert!(o.ept && o.unrestricted && o.preemption_timer, "{m}");
                assert_eq!(
                    n.value.proc.contains(PrimaryControls::MONITOR_TRAP_FLAG),
                    o.mtf,
                    "{m}"
                );
                assert_eq!(
                    n.value.proc2.contains(SecondaryControls::ENABLE_VPID),
                    o.vpid,
                    "{m}"
                );
                assert_eq!(
                    n.value.vmfunc.contains(VmFuncControls::EPTP_SWITCHING),
                    o.vmfunc,
                    "{m}"
                );
            }
            Err(e) => {
                assert!(!(o.ept && o.unrestricted && o.preemption_timer), "{m}");
                assert!(
                    e.problems.is_empty() && e.contradictory.is_empty(),
                    "{m}: {e}"
                );
                let expected = usize::from(!o.ept)
                    + usize::from(!o.unrestricted)
                    + usize::from(!o.preemption_timer);
                assert_eq!(e.unsupported.iter().count(), expected, "{m}");
            }
        }
    }
}

#[test]
fn common_to_all_models() {
    for model in MODELS {
        let c = caps(model);
        assert_eq!(
            c.feature_control,
            FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX
        );
        assert!(c.feature_control.vmxon_allowed_outside_smx());
        assert!(c.basic.true_controls(), "{model}");
        assert_eq!(c.basic.vmcs_region_size(), 4096);
        assert_eq!(c.basic.memory_type(), VmcsMemoryType::WriteBack);
        assert!(c.basic.ins_outs_info());
        assert!(!c.basic.physical_address_width_32());
        assert!(!c.basic.dual_monitor());
        // TRUE MSRs: the default1 class may be cleared, e.g. CR3-load exiting.
        assert_eq!(
            c.control_state(ControlGroup::Primary, 15),
            ControlState::Default1
        );
        assert_eq!(c.pin.allowed0.bits(), 0x16);
        assert_eq!(c.proc.allowed0.bits(), 0x0400_6172);
        assert_eq!(c.exit.allowed0.bits(), 0x0003_6dfb);
        assert_eq!(c.entry.allowed0.bits(), 0x11fb);
        // Nothing has tertiary controls, secondary exit controls or posted interrupts.
        assert!(!c.proc.allows(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS));
        assert_eq!(c.proc3.allowed1.bits(), 0);
        assert!(!c.exit.allows(ExitControls::ACTIVATE_SECONDARY_CONTROLS));
        assert_eq!(c.exit2.allowed1.bits(), 0);
        assert!(!c.pin.allows(PinBasedControls::PROCESS_POSTED_INTERRUPTS));
        assert!(!c.ept_vpid.page_walk_5());
        // CR0: PE, NE, PG fixed to 1; CR4: VMXE fixed to 1.
        assert_eq!(c.cr0_fixed.must_be_one(), 0x8000_0021);
        assert_eq!(c.cr4_fixed.must_be_one(), 0x2000);
        assert_eq!(c.vmcs_enum.highest_index(), 0x1a);
        assert_eq!(c.misc.cr3_target_count(), 4);
        assert_eq!(c.misc.max_msr_list_entries(), 512);
        assert!(c.misc.activity_hlt() && c.misc.activity_shutdown());
        assert!(c.misc.activity_wait_for_sipi() && c.misc.stores_lma_on_exit());
        // The snapshot holds exactly the MSRs that exist: capture reads the same set.
        let snap = snapshot(model);
        assert_eq!(
            MsrSnapshot::capture(&mut snap.clone()).unwrap(),
            snap,
            "{model}"
        );
    }
}

#[test]
fn core2_penryn() {
    let c = caps("core2_penryn_t9600");
    assert_eq!(c.basic.revision_id(), 0x2b);
    assert!(!c.proc2.allows(SecondaryControls::ENABLE_EPT));
    assert!(!c.proc2.allows(SecondaryControls::ENABLE_VPID));
    assert!(!c.proc2.allows(SecondaryControls::UNRESTRICTED_GUEST));
    assert!(
        !c.pin
            .allows(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
    );
    assert!(!c.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG));
    assert_eq!(
        c.proc2.allowed1,
        SecondaryControls::VIRTUALIZE_APIC_ACCESSES | SecondaryControls::WBINVD_EXITING
    );
    // EPT_VPID_CAP does not exist (neither EPT nor VPID): not read, decoded as zero.
    assert_eq!(c.ept_vpid.0, 0);
    assert!(
        snapshot("core2_penryn_t9600")
            .get(msr::IA32_VMX_EPT_VPID_CAP)
            .is_none()
    );
    assert!(!c.ept_vpid.invept() && !c.ept_vpid.invvpid());
    assert!(!c.misc.vmwrite_any_field());

    let err = c.negotiate(&hypervisor_request()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "required controls not supported by the processor: \
         pin-based VM-execution controls: \"activate VMX-preemption timer\" (bit 6); \
         secondary processor-based VM-execution controls: \"enable EPT\" (bit 1), \
         \"unrestricted guest\" (bit 7)"
    );
    assert!(err.problems.is_empty() && err.contradictory.is_empty());
    assert_eq!(err.unsupported.iter().count(), 3);
}

#[test]
fn corei5_lynnfield() {
    let c = caps("corei5_lynnfield_750");
    assert_eq!(c.basic.revision_id(), 0x2b);
    assert!(
        c.proc2
            .allows(SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID)
    );
    assert!(!c.proc2.allows(SecondaryControls::UNRESTRICTED_GUEST));
    let e = c.ept_vpid;
    assert!(e.execute_only() && e.page_walk_4() && e.memory_type_uc() && e.memory_type_wb());
    assert!(e.pde_2mb() && !e.pdpte_1gb() && !e.accessed_dirty());
    assert!(e.invept() && e.invept_single_context() && e.invept_all_context());
    assert!(e.invvpid() && e.invvpid_individual_address() && e.invvpid_single_context());
    assert!(e.invvpid_all_context() && e.invvpid_single_context_retaining_globals());
    assert!(!c.proc2.allows(SecondaryControls::ENABLE_VM_FUNCTIONS));
    assert_eq!(c.vmfunc.bits(), 0);

    let err = c.negotiate(&hypervisor_request()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "required controls not supported by the processor: \
         secondary processor-based VM-execution controls: \"unrestricted guest\" (bit 7)"
    );
}

#[test]
fn corei7_skylake_x() {
    let c = caps("corei7_skylake_x");
    assert_eq!(c.basic.revision_id(), 0x2b);
    assert!(!c.basic.no_error_code_check());
    for flag in [
        SecondaryControls::ENABLE_EPT,
        SecondaryControls::ENABLE_VPID,
        SecondaryControls::UNRESTRICTED_GUEST,
        SecondaryControls::ENABLE_VM_FUNCTIONS,
        SecondaryControls::VMCS_SHADOWING,
        SecondaryControls::EPT_VIOLATION_VE,
        SecondaryControls::APIC_REGISTER_VIRTUALIZATION,
        SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY,
        SecondaryControls::ENABLE_PML,
        SecondaryControls::ENABLE_XSAVES_XRSTORS,
        SecondaryControls::USE_TSC_SCALING,
    ] {
        assert!(c.proc2.allows(flag), "{flag:?}");
    }
    assert!(
        !c.proc2
            .allows(SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT)
    );
    assert!(!c.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG));
    assert!(
        c.pin
            .allows(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
    );
    assert!(c.ept_vpid.pdpte_1gb() && c.ept_vpid.accessed_dirty());
    assert!(!c.ept_vpid.supervisor_shadow_stack());
    assert_eq!(c.vmfunc, VmFuncControls::EPTP_SWITCHING);
    assert!(c.misc.vmwrite_any_field() && c.misc.zero_length_injection());

    let n = c.negotiate(&hypervisor_request()).unwrap();
    let v = n.value;
    assert!(
        v.pin
            .contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
    );
    assert_eq!(
        v.proc,
        PrimaryControls::from_bits_retain(0x0400_6172)
            | PrimaryControls::HLT_EXITING
            | PrimaryControls::USE_MSR_BITMAPS
            | PrimaryControls::USE_IO_BITMAPS
            | PrimaryControls::ACTIVATE_SECONDARY_CONTROLS
    );
    assert_eq!(
        v.proc2,
        SecondaryControls::ENABLE_EPT
            | SecondaryControls::UNRESTRICTED_GUEST
            | SecondaryControls::ENABLE_VPID
            | SecondaryControls::ENABLE_RDTSCP
            | SecondaryControls::ENABLE_VM_FUNCTIONS
    );
    assert_eq!(v.vmfunc, VmFuncControls::EPTP_SWITCHING);
    assert_eq!(n.dropped.proc, PrimaryControls::MONITOR_TRAP_FLAG);
    assert!(
        n.forced
            .proc
            .contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    );
    assert!(!v.proc.contains(PrimaryControls::CR3_LOAD_EXITING));
    assert_eq!(v.exit2.bits(), 0);
    assert!(!v.exit.contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS));
    assert!(
        v.exit
            .contains(ExitControls::LOAD_IA32_EFER | ExitControls::HOST_ADDRESS_SPACE_SIZE)
    );

    // The SDM's default for software that does not know a default1 control: keep it 1.
    let kept = c
        .negotiate(&hypervisor_request().with_default1(Default1Policy::Keep))
        .unwrap();
    assert!(
        kept.value
            .proc
            .contains(PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::CR3_STORE_EXITING)
    );
    assert!(kept.value.exit.contains(ExitControls::SAVE_DEBUG_CONTROLS));
    assert!(
        kept.value
            .entry
            .contains(EntryControls::LOAD_DEBUG_CONTROLS)
    );
}

#[test]
fn tigerlake() {
    let c = caps("tigerlake");
    assert_eq!(c.basic.revision_id(), 0x4);
    assert!(c.basic.no_error_code_check());
    assert!(c.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG));
    assert!(
        c.proc2
            .allows(SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT)
    );
    assert!(c.exit.allows(ExitControls::LOAD_CET_STATE));
    assert!(c.entry.allows(EntryControls::LOAD_CET_STATE));
    assert!(c.ept_vpid.supervisor_shadow_stack());
    assert!(
        c.cr4_fixed.must_be_zero() & (1 << 23) == 0,
        "CR4.CET may be set"
    );

    let n = c.negotiate(&hypervisor_request()).unwrap();
    assert!(n.value.proc.contains(PrimaryControls::MONITOR_TRAP_FLAG));
    assert!(n.dropped.is_empty());
}

#[test]
fn without_true_msrs_the_default1_class_is_fixed() {
    // The same processor, but IA32_VMX_BASIC[55] = 0: the TRUE MSRs must not be read.
    let mut snap = MsrSnapshot::new();
    for (m, v) in snapshot("corei7_skylake_x").iter() {
        match m {
            msr::IA32_VMX_BASIC => {
                snap.insert(m, v & !(1 << 55)).unwrap();
            }
            msr::IA32_VMX_TRUE_PINBASED_CTLS..=msr::IA32_VMX_TRUE_ENTRY_CTLS => {}
            _ => {
                snap.insert(m, v).unwrap();
            }
        }
    }
    let c = VmxCapabilities::read(&mut snap).unwrap();
    assert!(!c.basic.true_controls());
    assert_eq!(c.proc.allowed0.bits(), 0x0401_e172);
    assert_eq!(
        c.control_state(ControlGroup::Primary, 15),
        ControlState::Forced
    );
    let n = c.negotiate(&hypervisor_request()).unwrap();
    assert!(n.value.proc.contains(PrimaryControls::CR3_LOAD_EXITING));
    assert!(n.forced.proc.contains(PrimaryControls::CR3_LOAD_EXITING));
}

#[test]
fn missing_msr_is_named() {
    let mut snap = MsrSnapshot::new();
    for (m, v) in snapshot("corei7_skylake_x").iter() {
        if m != msr::IA32_VMX_PROCBASED_CTLS2 {
            snap.insert(m, v).unwrap();
        }
    }
    let err = VmxCapabilities::read(&mut snap).unwrap_err();
    assert_eq!(err.msr, msr::IA32_VMX_PROCBASED_CTLS2);
    assert_eq!(
        err.to_string(),
        "reading IA32_VMX_PROCBASED_CTLS2 (0x48b): MSR 0x48b is not in the source"
    );
}

#[test]
fn cr_fixed_bits() {
    let c = caps("corei7_skylake_x");
    let vmx = c.cr0_fixed_bits(CrUse::Vmx);
    assert_eq!(vmx.apply(Cr0::ET).bits(), 0x8000_0031);
    assert_eq!(c.cr4_fixed_bits().apply(Cr4::PAE).bits(), 0x2020);
    assert!(vmx.check(Cr0::from_bits_retain(0x8000_0031)).is_ok());
    // Real mode: PE = PG = 0 is allowed only for an unrestricted guest.
    let restricted = c.cr0_fixed_bits(CrUse::Guest {
        unrestricted_guest: false,
    });
    let unrestricted = c.cr0_fixed_bits(CrUse::Guest {
        unrestricted_guest: true,
    });
    let err = restricted.check(Cr0::from_bits_retain(0x30)).unwrap_err();
    assert_eq!(err.missing, 0x8000_0001);
    assert_eq!(
        err.to_string(),
        "CR0 value 0x30 is not allowed in VMX operation: bits 0x80000001 must be 1, bits 0x0 must be 0"
    );
    assert!(unrestricted.check(Cr0::from_bits_retain(0x30)).is_ok());
    // NE stays required even for an unrestricted guest.
    assert_eq!(unrestricted.check(Cr0::ET).unwrap_err().missing, 0x20);
    assert_eq!(unrestricted.apply(Cr0::ET).bits(), 0x30);
    assert_eq!(restricted.apply(Cr0::ET).bits(), 0x8000_0031);
    // CD and NW are never checked for a guest (VM entry does not change them), but are for VMXON
    // when FIXED1 forbids them; the reset value passes as an unrestricted guest's CR0 once NE is
    // set.
    assert!(unrestricted.check(Cr0::RESET | Cr0::NE).is_ok());
    // FIXED1 is 0xffffffff: bits 63:32 are fixed to 0, and NE to 1.
    assert_eq!(unrestricted.fixed().bits(), 0xffff_ffff_0000_0020);
    // CR4 bits beyond FIXED1 (here bit 23, CET, not in 0x3727ff) must be 0.
    let err = c.cr4_fixed_bits().check(Cr4::VMXE | Cr4::CET).unwrap_err();
    assert_eq!(err.forbidden, 1 << 23);
    assert!(c.cr4_fixed_bits().check(Cr4::empty()).is_err());
}

#[test]
fn report_shows_every_msr() {
    let c = caps("tigerlake");
    let report = c.to_string();
    println!("{report}");
    for needle in [
        "IA32_FEATURE_CONTROL",
        "IA32_VMX_BASIC",
        "IA32_VMX_TRUE_PINBASED_CTLS): allowed-0 0x16, allowed-1 0x7f",
        "IA32_VMX_PROCBASED_CTLS3: not present",
        "IA32_VMX_EXIT_CTLS2: not present",
        "IA32_VMX_MISC",
        "CR0 fixed bits (IA32_VMX_CR0_FIXED0 0x80000021, IA32_VMX_CR0_FIXED1 0xffffffff)",
        "CR4 fixed bits",
        "IA32_VMX_VMCS_ENUM",
        "IA32_VMX_EPT_VPID_CAP): 0x00000f0106b34141",
        "IA32_VMX_VMFUNC): allowed-0 0x0, allowed-1 0x1",
    ] {
        assert!(report.contains(needle), "{needle}");
    }
    let line = |label: &str, state: &str| format!("\n    {label:<48}{state}\n");
    assert!(report.contains(&line("HLT exiting", "yes")));
    assert!(report.contains(&line("CR3-load exiting", "default1")));
    assert!(report.contains(&line("activate tertiary controls", "no")));
    assert!(report.contains(&line("reserved bit 1", "forced")));
    assert!(report.contains(&line("load CET state", "yes")));
    assert!(report.contains(&line("highest field index", "0x1a")));
}

/// The capability MSRs Hyper-V offers a nested guest (`testdata/nested/`, see its header): no
/// `IA32_FEATURE_CONTROL` and no `IA32_VMX_TRUE_ENTRY_CTLS` although `IA32_VMX_BASIC[55]` = 1.
fn hyperv() -> MsrSnapshot {
    snapshot("nested/hyperv_nested_raptorlake")
}

#[test]
fn hyperv_dump_decodes_partially() {
    // The strict read names the first missing MSR.
    let err = VmxCapabilities::read(&mut hyperv()).unwrap_err();
    assert_eq!(err.msr, msr::IA32_FEATURE_CONTROL);

    let p = VmxCapabilities::read_partial(&mut hyperv()).unwrap();
    assert_eq!(
        p.missing.iter().collect::<Vec<_>>(),
        [
            (0x3a, "IA32_FEATURE_CONTROL"),
            (0x490, "IA32_VMX_TRUE_ENTRY_CTLS")
        ]
    );
    assert!(!p.is_complete());
    let c = p.caps;
    assert_eq!(c.basic.revision_id(), 1);
    assert!(c.basic.true_controls());
    // The TRUE MSRs that are there give the effective pairs.
    assert_eq!(c.proc.raw(), (0x2400_65f2, 0xf7f9_fffe));
    assert!(
        c.proc
            .requires(PrimaryControls::HLT_EXITING | PrimaryControls::MWAIT_EXITING)
    );
    assert!(
        !c.pin
            .allows(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
    );
    // The plain entry MSR stands in for the missing TRUE one: default1 bits 2 and 8 appear
    // forced, which only the TRUE MSR could relax.
    assert_eq!(c.entry.raw(), (0x11ff, 0x0030_f3ff));
    assert_eq!(
        p.group_knowledge(ControlGroup::Entry),
        vmx_caps::GroupKnowledge::Default1Unknown
    );
    assert_eq!(
        p.group_knowledge(ControlGroup::Primary),
        vmx_caps::GroupKnowledge::Exact
    );
    // No VM functions, tertiary or secondary exit controls: those MSRs do not exist, and are
    // not missing.
    assert!(p.is_known(msr::IA32_VMX_VMFUNC));
    assert!(p.caps.vmfunc.is_empty());
    let report = p.to_string();
    for needle in [
        "MSRs not in the dump: IA32_FEATURE_CONTROL (0x3a) IA32_VMX_TRUE_ENTRY_CTLS (0x490)\n",
        "Feature control (IA32_FEATURE_CONTROL): not in the dump\n",
        "VM-entry controls (IA32_VMX_TRUE_ENTRY_CTLS: not in the dump; from IA32_VMX_ENTRY_CTLS: allowed-0 0x11ff, allowed-1 0x30f3ff)",
        "IA32_VMX_VMFUNC: not present)",
    ] {
        assert!(report.contains(needle), "{needle}\n{report}");
    }
    let line = |label: &str, state: &str| format!("\n    {label:<48}{state}\n");
    assert!(report.contains(&line("lock", "unknown")), "{report}");
    assert!(report.contains(&line("load debug controls", "forced or default1 (unknown)")));
    assert!(report.contains(&line("IA-32e mode guest", "yes")));
    assert!(report.contains(&line("HLT exiting", "forced")));
}

/// The SDM's rules for which MSRs exist, as this test states them independently of
/// `msr::Presence`: the control groups each MSR decides.
fn groups_reported_by(m: u32) -> &'static [ControlGroup] {
    use ControlGroup as G;
    match m {
        msr::IA32_VMX_PINBASED_CTLS | msr::IA32_VMX_TRUE_PINBASED_CTLS => &[G::Pin],
        msr::IA32_VMX_PROCBASED_CTLS | msr::IA32_VMX_TRUE_PROCBASED_CTLS => &[G::Primary],
        msr::IA32_VMX_EXIT_CTLS | msr::IA32_VMX_TRUE_EXIT_CTLS => &[G::Exit],
        msr::IA32_VMX_ENTRY_CTLS | msr::IA32_VMX_TRUE_ENTRY_CTLS => &[G::Entry],
        msr::IA32_VMX_PROCBASED_CTLS2 => &[G::Secondary],
        msr::IA32_VMX_VMFUNC => &[G::VmFunc],
        _ => &[],
    }
}

/// Every model's dump with one line deleted: the rest decodes as in the full dump, the deleted
/// MSR is named missing, and only the groups it reports lose exactness.
#[test]
fn each_deleted_line_is_named_and_the_rest_decodes() {
    for model in MODELS {
        let full_snap = snapshot(model);
        let full = caps(model);
        for (deleted, _) in full_snap.iter() {
            let mut snap = MsrSnapshot::new();
            for (m, v) in full_snap.iter().filter(|(m, _)| *m != deleted) {
                snap.insert(m, v).unwrap();
            }
            if deleted == msr::IA32_VMX_BASIC {
                let err = VmxCapabilities::read_partial(&mut snap).unwrap_err();
                assert_eq!(err.name, "IA32_VMX_BASIC");
                assert_eq!(
                    err.to_string(),
                    "reading IA32_VMX_BASIC (0x480): MSR 0x480 is not in the source"
                );
                continue;
            }
            let p = VmxCapabilities::read_partial(&mut snap).unwrap();
            let ctx = format!("{model} without {deleted:#x}");
            // Without IA32_VMX_PROCBASED_CTLS2, whether EPT_VPID_CAP and VMFUNC exist is
            // unknown: the dump's own lines are used, and their absence is reported too.
            let mut expected = vec![deleted];
            if deleted == msr::IA32_VMX_PROCBASED_CTLS2 {
                for dependent in [msr::IA32_VMX_EPT_VPID_CAP, msr::IA32_VMX_VMFUNC] {
                    if full_snap.get(dependent).is_none() {
                        expected.push(dependent);
                    }
                }
            }
            assert_eq!(
                p.missing.iter().map(|(m, _)| m).collect::<Vec<_>>(),
                expected,
                "{ctx}"
            );
            assert_eq!(p.caps.basic, full.basic, "{ctx}");
            for group in ControlGroup::ALL {
                let knowledge = p.group_knowledge(group);
                let affected = expected
                    .iter()
                    .any(|m| groups_reported_by(*m).contains(&group));
                // A deleted plain MSR whose TRUE form is present loses nothing.
                let true_present = deleted < msr::IA32_VMX_MISC
                    && deleted != msr::IA32_VMX_BASIC
                    && full.basic.true_controls();
                if affected && !true_present {
                    assert_ne!(
                        knowledge,
                        vmx_caps::GroupKnowledge::Exact,
                        "{ctx} {group:?}"
                    );
                    // The allowed-1 settings never claim more than the truth.
                    let (_, a1) = p.caps.allowed(group);
                    assert_eq!(a1 & !full.allowed(group).1, 0, "{ctx} {group:?}");
                } else {
                    assert_eq!(
                        knowledge,
                        vmx_caps::GroupKnowledge::Exact,
                        "{ctx} {group:?}"
                    );
                    assert_eq!(
                        p.caps.allowed(group),
                        full.allowed(group),
                        "{ctx} {group:?}"
                    );
                }
            }
            if deleted != msr::IA32_VMX_MISC {
                assert_eq!(p.caps.misc, full.misc, "{ctx}");
            }
            if !expected.contains(&msr::IA32_VMX_EPT_VPID_CAP) {
                assert_eq!(p.caps.ept_vpid, full.ept_vpid, "{ctx}");
            }
            if deleted != msr::IA32_FEATURE_CONTROL {
                assert_eq!(p.caps.feature_control, full.feature_control, "{ctx}");
            }
            let name = msr::name(deleted).unwrap();
            assert!(
                p.to_string()
                    .starts_with(&format!("MSRs not in the dump: {name} ({deleted:#x})")),
                "{ctx}"
            );
        }
    }
}

#[test]
fn only_basic_decodes_with_everything_else_missing() {
    let mut snap = MsrSnapshot::new();
    snap.insert(
        msr::IA32_VMX_BASIC,
        snapshot("tigerlake").get(0x480).unwrap(),
    )
    .unwrap();
    let p = VmxCapabilities::read_partial(&mut snap).unwrap();
    // Every MSR whose existence is known (0x3a, 0x481..=0x48a, the TRUE MSRs by BASIC[55]) or
    // unknown (those decided by missing MSRs) is missing; nothing else.
    assert_eq!(
        p.missing.iter().map(|(m, _)| m).collect::<Vec<_>>(),
        msr::ALL
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| *m != msr::IA32_VMX_BASIC)
            .collect::<Vec<_>>()
    );
    for group in ControlGroup::ALL {
        assert_eq!(p.group_knowledge(group), vmx_caps::GroupKnowledge::Unknown);
        assert_eq!(p.caps.allowed(group), (0, 0));
    }
    let report = p.to_string();
    assert!(report.contains("Miscellaneous data (IA32_VMX_MISC): not in the dump\n"));
    assert!(report.contains(
        "CR0 fixed bits (IA32_VMX_CR0_FIXED0 not in the dump, IA32_VMX_CR0_FIXED1 not in the dump)"
    ));
    let line = |label: &str, state: &str| format!("\n    {label:<48}{state}\n");
    for label in [
        "HLT exiting",
        "enable EPT",
        "INVEPT",
        "HLT activity state",
        "must be 1",
    ] {
        assert!(
            report.contains(&line(label, "unknown")),
            "{label}\n{report}"
        );
    }
}
