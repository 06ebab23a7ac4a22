//! Every decoded bit at the position the SDM gives it: the control-field tables of SDM Vol. 3C,
//! 25.6-25.8 (pin-based, primary/secondary/tertiary processor-based, VM-function, primary and
//! secondary VM-exit, VM-entry controls) and the capability-MSR layouts of Vol. 3D, Appendix A
//! (A.1 IA32_VMX_BASIC, A.6 IA32_VMX_MISC, A.9 IA32_VMX_VMCS_ENUM, A.10 IA32_VMX_EPT_VPID_CAP).
//!
//! The tables here are written out from the SDM, not from the crate: each named bit must be
//! exactly the SDM's, and no bit the SDM leaves reserved may carry a name.

use vmx_caps::{ControlGroup, EntryControls, EptVpidCap, VmcsEnum, VmxBasic, VmxMisc};

/// A single-bit accessor and the bit position the SDM gives it.
type BitGetter<T> = (u32, fn(T) -> bool);

/// (group, every named bit with its SDM name) in table order.
const SDM_TABLES: &[(ControlGroup, &[(u8, &str)])] = &[
    // Table "Definitions of Pin-Based VM-Execution Controls".
    (
        ControlGroup::Pin,
        &[
            (0, "external-interrupt exiting"),
            (3, "NMI exiting"),
            (5, "virtual NMIs"),
            (6, "activate VMX-preemption timer"),
            (7, "process posted interrupts"),
        ],
    ),
    // Table "Definitions of Primary Processor-Based VM-Execution Controls".
    (
        ControlGroup::Primary,
        &[
            (2, "interrupt-window exiting"),
            (3, "use TSC offsetting"),
            (7, "HLT exiting"),
            (9, "INVLPG exiting"),
            (10, "MWAIT exiting"),
            (11, "RDPMC exiting"),
            (12, "RDTSC exiting"),
            (15, "CR3-load exiting"),
            (16, "CR3-store exiting"),
            (17, "activate tertiary controls"),
            (19, "CR8-load exiting"),
            (20, "CR8-store exiting"),
            (21, "use TPR shadow"),
            (22, "NMI-window exiting"),
            (23, "MOV-DR exiting"),
            (24, "unconditional I/O exiting"),
            (25, "use I/O bitmaps"),
            (27, "monitor trap flag"),
            (28, "use MSR bitmaps"),
            (29, "MONITOR exiting"),
            (30, "PAUSE exiting"),
            (31, "activate secondary controls"),
        ],
    ),
    // Table "Definitions of Secondary Processor-Based VM-Execution Controls" (bit 29 reserved).
    (
        ControlGroup::Secondary,
        &[
            (0, "virtualize APIC accesses"),
            (1, "enable EPT"),
            (2, "descriptor-table exiting"),
            (3, "enable RDTSCP"),
            (4, "virtualize x2APIC mode"),
            (5, "enable VPID"),
            (6, "WBINVD exiting"),
            (7, "unrestricted guest"),
            (8, "APIC-register virtualization"),
            (9, "virtual-interrupt delivery"),
            (10, "PAUSE-loop exiting"),
            (11, "RDRAND exiting"),
            (12, "enable INVPCID"),
            (13, "enable VM functions"),
            (14, "VMCS shadowing"),
            (15, "enable ENCLS exiting"),
            (16, "RDSEED exiting"),
            (17, "enable PML"),
            (18, "EPT-violation #VE"),
            (19, "conceal VMX from PT"),
            (20, "enable XSAVES/XRSTORS"),
            (21, "PASID translation"),
            (22, "mode-based execute control for EPT"),
            (23, "sub-page write permissions for EPT"),
            (24, "Intel PT uses guest physical addresses"),
            (25, "use TSC scaling"),
            (26, "enable user wait and pause"),
            (27, "enable PCONFIG"),
            (28, "enable ENCLV exiting"),
            (30, "VMM bus-lock detection"),
            (31, "instruction timeout"),
        ],
    ),
    // Table "Definitions of Tertiary Processor-Based VM-Execution Controls" (bit 5 reserved;
    // bits above 7 belong to extensions not yet in the SDM's table).
    (
        ControlGroup::Tertiary,
        &[
            (0, "LOADIWKEY exiting"),
            (1, "enable HLAT"),
            (2, "EPT paging-write control"),
            (3, "guest-paging verification"),
            (4, "IPI virtualization"),
            (6, "enable MSR-list instructions"),
            (7, "virtualize IA32_SPEC_CTRL"),
        ],
    ),
    // Table "Definitions of Primary VM-Exit Controls".
    (
        ControlGroup::Exit,
        &[
            (2, "save debug controls"),
            (9, "host address-space size"),
            (12, "load IA32_PERF_GLOBAL_CTRL"),
            (15, "acknowledge interrupt on exit"),
            (18, "save IA32_PAT"),
            (19, "load IA32_PAT"),
            (20, "save IA32_EFER"),
            (21, "load IA32_EFER"),
            (22, "save VMX-preemption timer value"),
            (23, "clear IA32_BNDCFGS"),
            (24, "conceal VMX from PT"),
            (25, "clear IA32_RTIT_CTL"),
            (26, "clear IA32_LBR_CTL"),
            (27, "clear UINV"),
            (28, "load CET state"),
            (29, "load PKRS"),
            (30, "save IA32_PERF_GLOBAL_CTL"),
            (31, "activate secondary controls"),
        ],
    ),
    // Table "Definitions of Secondary VM-Exit Controls".
    (
        ControlGroup::SecondaryExit,
        &[
            (0, "save FRED"),
            (1, "load FRED"),
            (2, "load IA32_SPEC_CTRL"),
            (3, "prematurely busy shadow stack"),
        ],
    ),
    // Table "Definitions of VM-Entry Controls".
    (
        ControlGroup::Entry,
        &[
            (2, "load debug controls"),
            (9, "IA-32e mode guest"),
            (10, "entry to SMM"),
            (11, "deactivate dual-monitor treatment"),
            (13, "load IA32_PERF_GLOBAL_CTRL"),
            (14, "load IA32_PAT"),
            (15, "load IA32_EFER"),
            (16, "load IA32_BNDCFGS"),
            (17, "conceal VMX from PT"),
            (18, "load IA32_RTIT_CTL"),
            (19, "load UINV"),
            (20, "load CET state"),
            (21, "load guest IA32_LBR_CTL"),
            (22, "load PKRS"),
            (23, "load FRED"),
            (24, "load IA32_SPEC_CTRL"),
        ],
    ),
    // Table "Definitions of VM-Function Controls".
    (ControlGroup::VmFunc, &[(0, "EPTP switching")]),
];

#[test]
fn every_control_name_is_the_sdms_at_its_position() {
    for &(group, table) in SDM_TABLES {
        assert_eq!(group.names(), table, "{group}");
        for bit in 0..group.width() {
            let expected = table
                .iter()
                .find(|(b, _)| u32::from(*b) == bit)
                .map(|(_, n)| *n);
            assert_eq!(group.bit_name(bit), expected, "{group} bit {bit}");
        }
    }
}

/// SDM Vol. 3C 25.8.1, Table "Definitions of VM-Entry Controls": bit 24 is "load
/// IA32_SPEC_CTRL" (guest IA32_SPEC_CTRL loaded from the guest-state area), the entry
/// counterpart of bit 2 of the secondary VM-exit controls.
#[test]
fn entry_control_24_loads_ia32_spec_ctrl() {
    assert_eq!(EntryControls::LOAD_IA32_SPEC_CTRL.bits(), 1 << 24);
    assert_eq!(
        ControlGroup::Entry.bit_name(24),
        Some("load IA32_SPEC_CTRL")
    );
    // Not in the default1 class (bits 0-8 and 12).
    assert!(!EntryControls::DEFAULT1.contains(EntryControls::LOAD_IA32_SPEC_CTRL));
}

/// The default1 classes of SDM Vol. 3D A.3.1, A.3.2, A.4.1 and A.5.
#[test]
fn default1_classes() {
    let bits = |list: &[u32]| list.iter().fold(0u64, |a, b| a | 1 << b);
    assert_eq!(ControlGroup::Pin.default1(), bits(&[1, 2, 4]));
    assert_eq!(
        ControlGroup::Primary.default1(),
        bits(&[1, 4, 5, 6, 8, 13, 14, 15, 16, 26])
    );
    assert_eq!(
        ControlGroup::Exit.default1(),
        bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 14, 16, 17])
    );
    assert_eq!(
        ControlGroup::Entry.default1(),
        bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 12])
    );
    for group in [
        ControlGroup::Secondary,
        ControlGroup::Tertiary,
        ControlGroup::SecondaryExit,
        ControlGroup::VmFunc,
    ] {
        assert_eq!(group.default1(), 0, "{group}");
    }
}

/// SDM Vol. 3D A.1: every field of IA32_VMX_BASIC, one bit at a time.
#[test]
fn vmx_basic_fields() {
    let b = VmxBasic(0x7fff_ffff);
    assert_eq!(b.revision_id(), 0x7fff_ffff);
    // Bit 31 is not part of the revision identifier.
    assert_eq!(VmxBasic(1 << 31).revision_id(), 0);
    assert_eq!(VmxBasic(0x1000 << 32).vmcs_region_size(), 4096);
    assert_eq!(VmxBasic(0x1fff << 32).vmcs_region_size(), 0x1fff);
    assert_eq!(VmxBasic(0x7 << 45).vmcs_region_size(), 0);
    let flags: [BitGetter<VmxBasic>; 6] = [
        (48, VmxBasic::physical_address_width_32),
        (49, VmxBasic::dual_monitor),
        (54, VmxBasic::ins_outs_info),
        (55, VmxBasic::true_controls),
        (56, VmxBasic::no_error_code_check),
        (58, VmxBasic::nested_exception),
    ];
    for (bit, get) in flags {
        for other in 0..64 {
            assert_eq!(
                get(VmxBasic(1 << other)),
                other == bit,
                "bit {bit} vs {other}"
            );
        }
    }
    assert_eq!(
        VmxBasic(6 << 50).memory_type(),
        vmx_caps::VmcsMemoryType::WriteBack
    );
    assert_eq!(
        VmxBasic(0).memory_type(),
        vmx_caps::VmcsMemoryType::Uncacheable
    );
    assert_eq!(
        VmxBasic(0xf << 50).memory_type(),
        vmx_caps::VmcsMemoryType::Reserved(15)
    );
}

/// SDM Vol. 3D A.6: every field of IA32_VMX_MISC.
#[test]
fn vmx_misc_fields() {
    assert_eq!(VmxMisc(0x1f).preemption_timer_tsc_shift(), 31);
    assert_eq!(VmxMisc(0x20).preemption_timer_tsc_shift(), 0);
    let flags: [BitGetter<VmxMisc>; 9] = [
        (5, VmxMisc::stores_lma_on_exit),
        (6, VmxMisc::activity_hlt),
        (7, VmxMisc::activity_shutdown),
        (8, VmxMisc::activity_wait_for_sipi),
        (14, VmxMisc::intel_pt_in_vmx),
        (15, VmxMisc::rdmsr_smbase_in_smm),
        (28, VmxMisc::smm_monitor_ctl_bit2),
        (29, VmxMisc::vmwrite_any_field),
        (30, VmxMisc::zero_length_injection),
    ];
    for (bit, get) in flags {
        for other in 0..64 {
            assert_eq!(
                get(VmxMisc(1 << other)),
                other == bit,
                "bit {bit} vs {other}"
            );
        }
    }
    assert_eq!(VmxMisc(0x1ff << 16).cr3_target_count(), 0x1ff);
    assert_eq!(VmxMisc(1 << 25 | 1 << 15).cr3_target_count(), 0);
    // 512 * (N + 1), N in bits 27:25.
    assert_eq!(VmxMisc(0).max_msr_list_entries(), 512);
    assert_eq!(VmxMisc(7 << 25).max_msr_list_entries(), 4096);
    assert_eq!(VmxMisc(1 << 28).max_msr_list_entries(), 512);
    assert_eq!(
        VmxMisc(0xdead_beef_0000_0000).mseg_revision_id(),
        0xdead_beef
    );
}

/// SDM Vol. 3D A.9: IA32_VMX_VMCS_ENUM bits 9:1.
#[test]
fn vmcs_enum_highest_index() {
    assert_eq!(VmcsEnum(0x3fe).highest_index(), 0x1ff);
    assert_eq!(VmcsEnum(0x401).highest_index(), 0);
    assert_eq!(VmcsEnum(0x2e).highest_index(), 0x17);
}

/// SDM Vol. 3D A.10: every capability bit of IA32_VMX_EPT_VPID_CAP at its position.
#[test]
fn ept_vpid_cap_bits() {
    let expected: &[u8] = &[
        0, 6, 7, 8, 14, 16, 17, 20, 21, 22, 23, 25, 26, 32, 40, 41, 42, 43,
    ];
    let names: Vec<u8> = EptVpidCap::NAMES.iter().map(|(b, _)| *b).collect();
    assert_eq!(names, expected);
    let getters: [BitGetter<EptVpidCap>; 18] = [
        (0, EptVpidCap::execute_only),
        (6, EptVpidCap::page_walk_4),
        (7, EptVpidCap::page_walk_5),
        (8, EptVpidCap::memory_type_uc),
        (14, EptVpidCap::memory_type_wb),
        (16, EptVpidCap::pde_2mb),
        (17, EptVpidCap::pdpte_1gb),
        (20, EptVpidCap::invept),
        (21, EptVpidCap::accessed_dirty),
        (22, EptVpidCap::advanced_exit_info),
        (23, EptVpidCap::supervisor_shadow_stack),
        (25, EptVpidCap::invept_single_context),
        (26, EptVpidCap::invept_all_context),
        (32, EptVpidCap::invvpid),
        (40, EptVpidCap::invvpid_individual_address),
        (41, EptVpidCap::invvpid_single_context),
        (42, EptVpidCap::invvpid_all_context),
        (43, EptVpidCap::invvpid_single_context_retaining_globals),
    ];
    for (bit, get) in getters {
        for other in 0..64 {
            assert_eq!(
                get(EptVpidCap(1 << other)),
                other == bit,
                "bit {bit} vs {other}"
            );
        }
    }
    assert_eq!(EptVpidCap(0x3f << 48).max_hlat_prefix_size(), 0x3f);
    assert_eq!(EptVpidCap(1 << 54 | 1 << 47).max_hlat_prefix_size(), 0);
}
