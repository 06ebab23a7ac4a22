//! Decoding the capability MSRs read on four Bochs 2.7 CPU models (`testdata/*.msr`), and
//! negotiating the example hypervisor's controls against each.

use vmx_caps::{
    ControlGroup, ControlRequest, ControlState, Default1Policy, EntryControls, ExitControls,
    FeatureControl, MsrSnapshot, NegotiationError, PinBasedControls, PrimaryControls,
    SecondaryControls, VmFuncControls, VmcsMemoryType, VmxCapabilities, msr,
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

#[test]
fn common_to_all_models() {
    for model in [
        "core2_penryn_t9600",
        "corei5_lynnfield_750",
        "corei7_skylake_x",
        "tigerlake",
    ] {
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
    let NegotiationError::Unsupported(missing) = err else {
        panic!("{err:?}")
    };
    assert_eq!(missing.iter().count(), 3);
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
    assert_eq!(c.cr0_for_vmx(0x10), 0x8000_0031);
    assert_eq!(c.cr4_for_vmx(0x20), 0x2020);
    assert!(c.check_cr0(0x8000_0031, false).is_ok());
    // Real mode: PE = PG = 0 is allowed only for an unrestricted guest.
    let err = c.check_cr0(0x30, false).unwrap_err();
    assert_eq!(err.missing, 0x8000_0001);
    assert_eq!(
        err.to_string(),
        "CR0 value 0x30 is not allowed in VMX operation: bits 0x80000001 must be 1, bits 0x0 must be 0"
    );
    assert!(c.check_cr0(0x30, true).is_ok());
    // NE stays required even for an unrestricted guest.
    assert_eq!(c.check_cr0(0x10, true).unwrap_err().missing, 0x20);
    assert_eq!(c.cr0_for_guest(0x10, true), 0x30);
    assert_eq!(c.cr0_for_guest(0x10, false), 0x8000_0031);
    // CR4 bits beyond FIXED1 (here bit 22, PKS... not in 0x3727ff) must be 0.
    let err = c.check_cr4(0x2000 | (1 << 23)).unwrap_err();
    assert_eq!(err.forbidden, 1 << 23);
    assert!(c.check_cr4(0).is_err());
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
