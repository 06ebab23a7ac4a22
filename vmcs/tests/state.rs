//! The guest-state templates and the host-state value, judged by the software VM-entry checker
//! with the capability MSRs of every Bochs model in `vmx-caps/testdata`.

mod check_common;

use check_common::{CURRENT_VMCS, EPT_PML4, Memory, VMXON};
use vmcs::check::{Checker, CpuFacts, EntryInstruction, LaunchContext, Outcome, Report};
use vmcs::{
    Cr0, Cr4, Efer, GuestSegment, GuestState, GuestStateError, HostState, SoftVmcs, VmcsRead,
    VmcsWrite, fields, system_descriptor_base,
};
use vmx_caps::{
    ControlRequest, EntryControls, ExitControls, MsrSnapshot, SecondaryControls, VmxCapabilities,
};

/// Every dump in `vmx-caps/testdata`, by model name.
fn models() -> Vec<(String, VmxCapabilities)> {
    let dir = format!("{}/../vmx-caps/testdata", env!("CARGO_MANIFEST_DIR"));
    let mut models: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "msr"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(&text).unwrap()).unwrap();
            (path.file_stem().unwrap().to_str().unwrap().to_owned(), caps)
        })
        .collect();
    models.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(models.len(), 11, "every bundled dump");
    models
}

/// A 64-bit host as a kernel sets it up: CR0 PE|MP|ET|NE|WP|AM|PG, CR4 PAE|PGE|OSFXSR|OSXMMEXCPT|
/// VMXE, selectors 08H/10H/18H, canonical bases, IA32_EFER SCE|LME|LMA|NXE and the power-on PAT
/// where the exit controls load them.
fn host(exit: ExitControls) -> HostState {
    HostState {
        cr0: Cr0::from_bits_retain(0x8005_0033),
        cr3: 0x30_0000,
        cr4: Cr4::PAE | Cr4::PGE | Cr4::OSFXSR | Cr4::OSXMMEXCPT | Cr4::VMXE,
        es: 0x10,
        cs: 0x08,
        ss: 0x10,
        ds: 0x10,
        fs: 0,
        gs: 0,
        tr: 0x18,
        fs_base: 0,
        gs_base: 0xffff_8000_0000_0000,
        tr_base: 0xffff_ffff_8010_0000,
        gdtr_base: 0xffff_ffff_8010_1000,
        idtr_base: 0xffff_ffff_8010_2000,
        sysenter_cs: 0x08,
        sysenter_esp: 0xffff_ffff_8020_0000,
        sysenter_eip: 0xffff_ffff_8000_2000,
        efer: exit
            .contains(ExitControls::LOAD_IA32_EFER)
            .then_some(Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE),
        pat: exit
            .contains(ExitControls::LOAD_IA32_PAT)
            .then_some(0x0007_0406_0007_0406),
    }
}

/// A software VMCS of `caps` with negotiated controls (EPT and unrestricted guest where the model
/// has them, a 64-bit host, IA32_EFER and IA32_PAT loaded where it can) and [`host`] written.
fn vmcs_for(caps: &VmxCapabilities) -> SoftVmcs {
    let request = ControlRequest::new()
        .require(ExitControls::HOST_ADDRESS_SPACE_SIZE)
        .prefer(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST)
        .prefer(ExitControls::LOAD_IA32_EFER | ExitControls::LOAD_IA32_PAT)
        .prefer(EntryControls::LOAD_IA32_EFER);
    let controls = caps.negotiate(&request).unwrap().value;
    let mut vmcs = SoftVmcs::new(caps);
    vmcs.write_controls(&controls).unwrap();
    if controls.proc2.contains(SecondaryControls::ENABLE_EPT) {
        // 4-level walk, write-back where the model allows it, uncacheable otherwise.
        let memory_type = if caps.ept_vpid.memory_type_wb() { 6 } else { 0 };
        vmcs.write_raw(
            fields::EPT_POINTER.encoding(),
            EPT_PML4 | 3 << 3 | memory_type,
        )
        .unwrap();
    }
    host(controls.exit).write(&mut vmcs).unwrap();
    vmcs
}

fn check(caps: &VmxCapabilities, vmcs: &SoftVmcs) -> Report<512> {
    let launch = LaunchContext::new(EntryInstruction::Vmlaunch, CURRENT_VMCS, VMXON);
    Checker::new(caps, CpuFacts::new(39), launch)
        .report(vmcs, &mut Memory::default())
        .unwrap()
}

fn unrestricted(vmcs: &SoftVmcs) -> bool {
    vmcs.read(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)
        .is_ok_and(|c| c.contains(SecondaryControls::UNRESTRICTED_GUEST))
}

#[test]
fn every_template_passes_the_entry_checks_on_every_model_that_supports_it() {
    let templates = [
        ("reset", GuestState::reset()),
        ("protected-32", GuestState::protected_mode_32(0x10_0000)),
        ("long-64", GuestState::long_mode_64(0x40_1000, 0x40_0000)),
    ];
    let mut passed = 0;
    for (model, caps) in models() {
        for (name, template) in templates {
            let mut vmcs = vmcs_for(&caps);
            // Real mode and protected mode without paging need "unrestricted guest"; every VMX
            // model can run an IA-32e guest.
            let needs_unrestricted = !template.cr0.contains(Cr0::PE | Cr0::PG);
            if needs_unrestricted && !unrestricted(&vmcs) {
                assert_eq!(
                    template.write(&mut vmcs, &caps),
                    Err(GuestStateError::UnrestrictedGuestRequired {
                        cr0: template.cr0.bits()
                    }),
                    "{name} on {model}"
                );
                continue;
            }
            template.write(&mut vmcs, &caps).unwrap();
            let report = check(&caps, &vmcs);
            assert_eq!(
                report.outcome(),
                Outcome::Success,
                "{name} on {model}: {:?}",
                report.violations().collect::<Vec<_>>()
            );
            passed += 1;
        }
    }
    // Nine models have unrestricted guest (all three templates), two do not (long mode only).
    assert_eq!(passed, 9 * 3 + 2);
}

#[test]
fn templates_hold_the_sdm_values() {
    // SDM Vol. 3A, Table 10-1: the state after RESET.
    let reset = GuestState::reset();
    assert_eq!(reset.cr0.bits(), 0x6000_0010);
    assert_eq!((reset.cs.selector, reset.cs.base), (0xf000, 0xffff_0000));
    assert_eq!(reset.rip, 0xfff0);
    assert_eq!(reset.rflags.bits(), 0x2);
    assert_eq!(reset.dr7.bits(), 0x400);
    assert_eq!((reset.gdtr.base, reset.gdtr.limit), (0, 0xffff));
    for seg in [reset.cs, reset.ss, reset.ds, reset.es, reset.fs, reset.gs] {
        assert_eq!(seg.limit, 0xffff);
        assert!(seg.access_rights.present() && seg.access_rights.code_or_data());
    }
    let long = GuestState::long_mode_64(0x1000, 0x2000);
    assert_eq!(long.efer.bits(), 0x500);
    assert_eq!(long.cs.access_rights.bits(), 0xa09b);
    assert_eq!(long.cr3, 0x2000);
    let flat = GuestState::protected_mode_32(0x10_0000);
    assert_eq!(flat.cr0.bits(), 0x11);
    assert_eq!(flat.cs.access_rights.bits(), 0xc09b);
    assert_eq!(flat.ds.access_rights.bits(), 0xc093);
}

#[test]
fn writing_applies_the_fixed_bits_and_the_ia32e_control() {
    let (_, caps) = models()
        .into_iter()
        .find(|(m, _)| m == "tigerlake")
        .unwrap();
    let mut vmcs = vmcs_for(&caps);
    GuestState::long_mode_64(0x40_1000, 0x40_0000)
        .write(&mut vmcs, &caps)
        .unwrap();
    let entry = vmcs.read(fields::VM_ENTRY_CONTROLS).unwrap();
    assert!(entry.contains(EntryControls::IA32E_MODE_GUEST));
    // CR4.VMXE is fixed to 1: the guest runs with it and reads its own CR4 (PAE only).
    assert_eq!(vmcs.read(fields::GUEST_CR4).unwrap(), Cr4::PAE | Cr4::VMXE);
    assert_eq!(vmcs.read(fields::CR4_READ_SHADOW).unwrap(), Cr4::PAE);
    // Switching to the reset state clears "IA-32e mode guest" again.
    GuestState::reset().write(&mut vmcs, &caps).unwrap();
    let entry = vmcs.read(fields::VM_ENTRY_CONTROLS).unwrap();
    assert!(!entry.contains(EntryControls::IA32E_MODE_GUEST));
    assert_eq!(vmcs.read(fields::GUEST_IA32_EFER).unwrap(), Efer::empty());
    assert_eq!(
        vmcs.read_guest_segment(GuestSegment::Cs).unwrap().base,
        0xffff_0000
    );
    assert_eq!(check(&caps, &vmcs).outcome(), Outcome::Success);
    // The checker judges what was written: the reset state with an unusable TR fails (TR must
    // be usable, SDM Vol. 3C, 27.3.1.2), and so does a 64-bit guest with a 16-bit CS.
    let mut broken = GuestState::reset();
    broken.tr.access_rights = broken.tr.access_rights.with_unusable(true);
    broken.write(&mut vmcs, &caps).unwrap();
    assert_ne!(check(&caps, &vmcs).outcome(), Outcome::Success);
    let mut broken = GuestState::long_mode_64(0x40_1000, 0x40_0000);
    broken.tr = GuestState::reset().tr;
    broken.cs.access_rights = vmcs::SegmentAccessRights::CODE_16.with_default_big(true);
    broken.cs.access_rights = broken.cs.access_rights.with_long_mode(true);
    broken.write(&mut vmcs, &caps).unwrap();
    assert_ne!(check(&caps, &vmcs).outcome(), Outcome::Success);
}

#[test]
fn host_state_round_trips_and_passes_the_host_checks() {
    for (model, caps) in models() {
        let vmcs = vmcs_for(&caps);
        let exit = vmcs.read(fields::PRIMARY_VM_EXIT_CONTROLS).unwrap();
        assert_eq!(HostState::read(&vmcs, exit), Ok(host(exit)), "{model}");
        // The host rules (D*, E*, F*) all hold: only guest-state rules may be violated here.
        let report = check(&caps, &vmcs);
        let host_rules: Vec<_> = report
            .violations()
            .filter(|v| {
                let id = v.rule.id();
                id.starts_with('D') || id.starts_with('E') || id.starts_with('F')
            })
            .collect();
        assert!(host_rules.is_empty(), "{model}: {host_rules:?}");
    }
}

#[test]
fn tss_descriptor_base() {
    // A 64-bit TSS descriptor for base FFFF8000_12345678H, limit 67H, type 9, P (SDM Vol. 3A,
    // Figure 8-4), written out byte by byte.
    let bytes: [u8; 16] = [
        0x67, 0x00, // limit 15:0
        0x78, 0x56, 0x34, // base 23:0
        0x89, // P, type 9
        0x00, // limit 19:16, flags
        0x12, // base 31:24
        0x00, 0x80, 0xff, 0xff, // base 63:32
        0, 0, 0, 0,
    ];
    let low = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let high = u64::from_le_bytes(bytes[8..].try_into().unwrap());
    assert_eq!(system_descriptor_base(low, high), 0xffff_8000_1234_5678);
}
