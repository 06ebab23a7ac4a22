//! VMCS02 built from VMCS12 and L0's part (`vmcs::nested::build_vmcs02`): the result passes the
//! software VM-entry checker under the real capabilities of Bochs `tigerlake`, and each merge
//! rule (controls, exception bitmap with the page-fault filter, CR0/CR4 masks and shadows, TSC
//! offset, L1's IA32_EFER/IA32_PAT where VMCS12 loads none, preemption timer, MSR and I/O
//! bitmaps) gives the SDM's behaviour for L2.

mod check_common;
mod nested_common;
use check_common::{Env, baseline};
use ept::{MemoryType, Permissions};
use nested_common::{EPTP02, l0_part, virtual_caps};
use vmcs::nested::{
    ApicPages02, Ept01, FlatGuestMemory, L0Part, L1Page, Vmcs02Error, build_vmcs02,
    merge_io_bitmaps, merge_msr_bitmap, vmcs02_preemption_timer,
};
use vmcs::structures::{IoBitmaps, MsrAccess, MsrBitmap};
use vmcs::{ExceptionBitmap, SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    VmFuncControls,
};

const REVISION: u32 = 0x11e5_7ed0;

fn enc<F: vmcs::VmcsField>(f: F) -> u32 {
    f.encoding()
}

struct Setup {
    /// VMCS01 is `env.vmcs`; `env` checks VMCS02 under the real capabilities.
    env: Env,
    vmcs12: SoftVmcs,
    l0: L0Part,
}

fn setup() -> Setup {
    let env = Env::tigerlake();
    let mut vmcs12 = SoftVmcs::new(&virtual_caps(&env.caps, REVISION));
    baseline(&mut vmcs12);
    // L1's guest differs from L0's guest where it matters for the tests.
    vmcs12.write(fields::GUEST_RIP, 0x7000_1000).unwrap();
    vmcs12.write(fields::HOST_RIP, 0x1234_5000).unwrap();
    Setup {
        env,
        vmcs12,
        l0: l0_part(),
    }
}

impl Setup {
    fn build(&self) -> Result<(SoftVmcs, vmcs::nested::Vmcs02), Vmcs02Error> {
        let mut vmcs02 = SoftVmcs::new(&self.env.caps);
        let built = build_vmcs02(
            &self.vmcs12,
            &self.env.vmcs,
            &self.l0,
            &self.env.caps,
            &mut vmcs02,
        )?;
        Ok((vmcs02, built))
    }

    fn w12(&mut self, encoding: u32, value: u64) {
        self.vmcs12.write_raw(encoding, value).unwrap();
    }
}

#[test]
fn vmcs02_of_a_valid_vmcs12_passes_the_real_vm_entry_checks() {
    let s = setup();
    let (vmcs02, built) = s.build().unwrap();
    let mut env = s.env.clone();
    env.vmcs = vmcs02.clone();
    env.assert_enters();
    // Guest state is L1's request, host state L0's, the structures L0's.
    assert_eq!(vmcs02.read(fields::GUEST_RIP).unwrap(), 0x7000_1000);
    assert_eq!(
        vmcs02.read(fields::HOST_RIP).unwrap(),
        s.env.vmcs.read(fields::HOST_RIP).unwrap()
    );
    assert_eq!(vmcs02.read_raw(enc(fields::EPT_POINTER)).unwrap(), EPTP02);
    assert_eq!(
        vmcs02.read(fields::VIRTUAL_PROCESSOR_IDENTIFIER).unwrap(),
        2
    );
    assert_eq!(vmcs02.read(fields::VMCS_LINK_POINTER).unwrap(), u64::MAX);
    assert_eq!(
        vmcs02.read(fields::ADDRESS_OF_MSR_BITMAPS).unwrap(),
        0x60_0000
    );
    assert_eq!(
        vmcs02.read(fields::ADDRESS_OF_IO_BITMAP_B).unwrap(),
        0x62_0000
    );
    // L1's HLT exiting and L0's external-interrupt exiting; I/O and MSR bitmaps always.
    assert!(built.controls.proc.contains(
        PrimaryControls::HLT_EXITING
            | PrimaryControls::USE_IO_BITMAPS
            | PrimaryControls::USE_MSR_BITMAPS
    ));
    assert!(
        built
            .controls
            .pin
            .contains(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
    );
    // The exit controls are L0's plus the saves L0 needs to report L2's state.
    assert!(built.controls.exit.contains(
        ExitControls::SAVE_IA32_EFER | ExitControls::SAVE_IA32_PAT | ExitControls::LOAD_IA32_EFER
    ));
}

#[test]
fn exceptions_either_intercepts_exit_and_the_page_fault_filter_is_l1s_unless_l0_takes_all() {
    let mut s = setup();
    s.w12(enc(fields::EXCEPTION_BITMAP), (1 << 6) | (1 << 14));
    s.w12(enc(fields::PAGE_FAULT_ERROR_CODE_MASK), 2);
    s.w12(enc(fields::PAGE_FAULT_ERROR_CODE_MATCH), 2);
    let (vmcs02, _) = s.build().unwrap();
    assert_eq!(
        vmcs02.read_raw(enc(fields::EXCEPTION_BITMAP)).unwrap(),
        (1 << 6) | (1 << 14) | (1 << 18)
    );
    assert_eq!(vmcs02.read(fields::PAGE_FAULT_ERROR_CODE_MASK).unwrap(), 2);
    assert_eq!(vmcs02.read(fields::PAGE_FAULT_ERROR_CODE_MATCH).unwrap(), 2);
    // L0 intercepting #PF for itself: every page fault exits.
    s.l0.exceptions |= ExceptionBitmap::PAGE_FAULT;
    let (vmcs02, _) = s.build().unwrap();
    assert_eq!(vmcs02.read(fields::PAGE_FAULT_ERROR_CODE_MASK).unwrap(), 0);
    assert_eq!(vmcs02.read(fields::PAGE_FAULT_ERROR_CODE_MATCH).unwrap(), 0);
}

#[test]
fn cr_masks_are_united_and_l2_reads_l1s_shadow_or_its_own_value() {
    let mut s = setup();
    // L1 owns CR0.TS with shadow TS = 1 while L2 really has TS = 0.
    s.w12(enc(fields::CR0_GUEST_HOST_MASK), 1 << 3);
    s.w12(enc(fields::CR0_READ_SHADOW), 1 << 3);
    s.w12(enc(fields::GUEST_CR0), 0x8005_0033 & !(1 << 3));
    // L1 owns CR4.PGE (bit 7) with shadow 0; L0 owns CR4.VMXE (bit 13), which L1 did not mask:
    // L2 must read its real VMXE there (L1's view), 1 in VMCS12's guest CR4.
    s.w12(enc(fields::CR4_GUEST_HOST_MASK), 1 << 7);
    s.w12(enc(fields::CR4_READ_SHADOW), 0);
    let guest_cr4 = s.vmcs12.read_raw(enc(fields::GUEST_CR4)).unwrap();
    assert_ne!(guest_cr4 & (1 << 13), 0);
    let (vmcs02, _) = s.build().unwrap();
    assert_eq!(
        vmcs02.read_raw(enc(fields::CR0_GUEST_HOST_MASK)).unwrap(),
        1 << 3
    );
    assert_eq!(
        vmcs02.read_raw(enc(fields::CR0_READ_SHADOW)).unwrap(),
        1 << 3
    );
    assert_eq!(
        vmcs02.read_raw(enc(fields::CR4_GUEST_HOST_MASK)).unwrap(),
        (1 << 7) | (1 << 13)
    );
    let shadow4 = vmcs02.read_raw(enc(fields::CR4_READ_SHADOW)).unwrap();
    assert_eq!(shadow4 & (1 << 7), 0);
    assert_eq!(shadow4 & (1 << 13), 1 << 13);
}

#[test]
fn l2s_tsc_offset_is_l1s_plus_vmcs12s() {
    let mut s = setup();
    s.env.set(
        enc(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS),
        1 << 3,
    );
    s.env.w(enc(fields::TSC_OFFSET), 1000u64.wrapping_neg());
    s.vmcs12
        .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
            p | PrimaryControls::USE_TSC_OFFSETTING
        })
        .unwrap();
    s.w12(enc(fields::TSC_OFFSET), 5000);
    let (vmcs02, built) = s.build().unwrap();
    assert!(
        built
            .controls
            .proc
            .contains(PrimaryControls::USE_TSC_OFFSETTING)
    );
    assert_eq!(vmcs02.read(fields::TSC_OFFSET).unwrap(), 4000);
    // VMCS12 without offsetting: L2 sees L1's TSC.
    s.vmcs12
        .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
            p - PrimaryControls::USE_TSC_OFFSETTING
        })
        .unwrap();
    let (vmcs02, _) = s.build().unwrap();
    assert_eq!(
        vmcs02.read(fields::TSC_OFFSET).unwrap(),
        1000u64.wrapping_neg()
    );
}

#[test]
fn where_vmcs12_loads_no_efer_or_pat_l2_starts_with_l1s() {
    let mut s = setup();
    s.vmcs12
        .modify(fields::VM_ENTRY_CONTROLS, |e| {
            e - (EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT)
        })
        .unwrap();
    // L1 currently has SCE and NXE without LME/LMA; its L2 is an IA-32e guest.
    s.env.w(enc(fields::GUEST_IA32_EFER), 0x801);
    s.env.w(enc(fields::GUEST_IA32_PAT), 0x0606_0606_0606_0606);
    let (vmcs02, built) = s.build().unwrap();
    assert!(built.controls.entry.contains(EntryControls::LOAD_IA32_EFER));
    assert_eq!(
        vmcs02.read_raw(enc(fields::GUEST_IA32_EFER)).unwrap(),
        0xd01
    );
    assert_eq!(
        vmcs02.read_raw(enc(fields::GUEST_IA32_PAT)).unwrap(),
        0x0606_0606_0606_0606
    );
    // Where VMCS12 loads them, VMCS12's values.
    let s = setup();
    let (vmcs02, _) = s.build().unwrap();
    assert_eq!(
        vmcs02.read_raw(enc(fields::GUEST_IA32_PAT)).unwrap(),
        0x0007_0406_0007_0406
    );
}

#[test]
fn the_preemption_timer_is_the_earlier_of_l1s_and_l0s() {
    let mut s = setup();
    s.vmcs12
        .modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |p| {
            p | PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER
        })
        .unwrap();
    s.w12(enc(fields::VMX_PREEMPTION_TIMER_VALUE), 500);
    s.l0.controls
        .insert(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
    s.l0.preemption_timer = 200;
    let (vmcs02, built) = s.build().unwrap();
    assert_eq!(
        vmcs02.read(fields::VMX_PREEMPTION_TIMER_VALUE).unwrap(),
        200
    );
    assert!(!built.timer_is_l1s);
    s.w12(enc(fields::VMX_PREEMPTION_TIMER_VALUE), 100);
    let (vmcs02, built) = s.build().unwrap();
    assert_eq!(
        vmcs02.read(fields::VMX_PREEMPTION_TIMER_VALUE).unwrap(),
        100
    );
    assert!(built.timer_is_l1s);
}

#[test]
fn the_timer_a_kept_vmcs02_gets_is_the_one_a_build_writes() {
    assert_eq!(vmcs02_preemption_timer(None, None), None);
    assert_eq!(vmcs02_preemption_timer(Some(7), None), Some((7, true)));
    assert_eq!(vmcs02_preemption_timer(None, Some(9)), Some((9, false)));
    // A tie is L1's: its expiry is the exit L1 asked for.
    assert_eq!(vmcs02_preemption_timer(Some(5), Some(5)), Some((5, true)));
    // Every combination a build can meet gives what the build wrote.
    let mut s = setup();
    for (l1, l0) in [
        (None, None),
        (Some(0), None),
        (None, Some(0)),
        (Some(300), Some(200)),
        (Some(200), Some(300)),
        (Some(u32::MAX), Some(u32::MAX)),
    ] {
        let activate = PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER;
        s.vmcs12
            .modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |p| {
                if l1.is_some() {
                    p | activate
                } else {
                    p - activate
                }
            })
            .unwrap();
        s.w12(
            enc(fields::VMX_PREEMPTION_TIMER_VALUE),
            u64::from(l1.unwrap_or(77)),
        );
        s.l0.controls.pin.set(activate, l0.is_some());
        s.l0.preemption_timer = l0.unwrap_or(88);
        let (vmcs02, built) = s.build().unwrap();
        let expected = vmcs02_preemption_timer(l1, l0);
        let pin02 = vmcs02
            .read(fields::PIN_BASED_VM_EXECUTION_CONTROLS)
            .unwrap();
        assert_eq!(
            pin02.contains(activate),
            expected.is_some(),
            "{l1:?} {l0:?}"
        );
        if let Some((value, is_l1s)) = expected {
            assert_eq!(
                vmcs02.read(fields::VMX_PREEMPTION_TIMER_VALUE).unwrap(),
                value
            );
            assert_eq!(built.timer_start, value);
            assert_eq!(built.timer_is_l1s, is_l1s, "{l1:?} {l0:?}");
            assert_eq!(built.timer_l1, l1.unwrap_or(0));
        }
    }
}

/// VMCS12 with "enable VM functions" (EPTP switching) and "EPT-violation #VE": VMCS02 enables
/// VM functions with VM-function controls 0 (every VMFUNC of L2 exits to L0) and has no
/// "EPT-violation #VE" (L0 emulates it); it passes the real VM-entry checks.
#[test]
fn vm_functions_and_ve_are_l0s_to_emulate() {
    let mut s = setup();
    s.vmcs12
        .modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |c| c | SecondaryControls::ENABLE_VM_FUNCTIONS | SecondaryControls::EPT_VIOLATION_VE,
        )
        .unwrap();
    s.vmcs12
        .write(fields::VM_FUNCTION_CONTROLS, VmFuncControls::EPTP_SWITCHING)
        .unwrap();
    s.vmcs12.write(fields::EPTP_LIST_ADDRESS, 0x3000).unwrap();
    s.vmcs12
        .write(fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS, 0x4000)
        .unwrap();
    let (vmcs02, built) = s.build().unwrap();
    assert!(
        built
            .controls
            .proc2
            .contains(SecondaryControls::ENABLE_VM_FUNCTIONS)
    );
    assert!(
        !built
            .controls
            .proc2
            .contains(SecondaryControls::EPT_VIOLATION_VE)
    );
    assert!(built.controls.vmfunc.is_empty());
    assert_eq!(
        vmcs02.read_raw(enc(fields::VM_FUNCTION_CONTROLS)).unwrap(),
        0
    );
    let mut env = s.env.clone();
    env.vmcs = vmcs02;
    env.assert_enters();
    // Without them in VMCS12, VMCS02 has no VM functions either (L2's VMFUNC is #UD).
    let s = setup();
    let (_, built) = s.build().unwrap();
    assert!(
        !built
            .controls
            .proc2
            .contains(SecondaryControls::ENABLE_VM_FUNCTIONS)
    );
}

/// VMCS12 with "enable PML": VMCS02 has no PML (L0 sets EPT12's dirty flags and logs them,
/// `vmcs::nested::Pml12`), but carries VMCS12's PML index, the live one while L2 runs; it
/// passes the real VM-entry checks.
#[test]
fn pml_is_l0s_to_emulate_with_the_index_in_vmcs02() {
    let mut s = setup();
    s.vmcs12
        .modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |c| c | SecondaryControls::ENABLE_PML,
        )
        .unwrap();
    s.vmcs12.write(fields::PML_ADDRESS, 0x5000).unwrap();
    s.vmcs12.write(fields::PML_INDEX, 0x1a5).unwrap();
    let (vmcs02, built) = s.build().unwrap();
    assert!(!built.controls.proc2.contains(SecondaryControls::ENABLE_PML));
    assert!(built.controls.proc2.contains(SecondaryControls::ENABLE_EPT));
    assert_eq!(vmcs02.read(fields::PML_INDEX).unwrap(), 0x1a5);
    let mut env = s.env.clone();
    env.vmcs = vmcs02;
    env.assert_enters();
}

#[test]
fn a_vmcs12_with_a_control_vmcs02_cannot_carry_is_refused() {
    let mut s = setup();
    s.vmcs12
        .modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |p| p | SecondaryControls::VIRTUALIZE_X2APIC_MODE,
        )
        .unwrap();
    let Err(Vmcs02Error::Unsupported(set)) = s.build() else {
        panic!("x2APIC-mode virtualization accepted")
    };
    assert_eq!(set.proc2, SecondaryControls::VIRTUALIZE_X2APIC_MODE);
    assert!(set.proc.is_empty() && set.pin.is_empty());
}

/// EPT01 of the APIC tests: L1's RAM is L1-physical 0 to 16 MiB at host-physical 0x4000_0000, the
/// page at 1 MiB read-only.
struct L1At1G;

const L1_HOST_BASE: u64 = 0x4000_0000;
const READ_ONLY_PAGE: u64 = 0x10_0000;
const SCRATCH: u64 = 0x7_7000;

impl Ept01 for L1At1G {
    fn translate_l1(&self, address: u64) -> Option<L1Page> {
        (address < 16 << 20).then(|| L1Page {
            host_physical: L1_HOST_BASE + (address & !0xfff),
            permissions: if address & !0xfff == READ_ONLY_PAGE {
                Permissions::READ | Permissions::EXECUTE
            } else {
                Permissions::RWX
            },
            memory_type: MemoryType::WriteBack,
        })
    }
}

/// VMCS12 with TPR shadow, APIC-access and APIC-register virtualization and virtual-interrupt
/// delivery, its virtual-APIC page at `vapic` and APIC-access page at `access` (L1-physical).
fn with_apic_virtualization(s: &mut Setup, vapic: u64, access: u64) {
    s.vmcs12
        .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
            p | PrimaryControls::USE_TPR_SHADOW
        })
        .unwrap();
    s.vmcs12
        .modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |p| {
                p | SecondaryControls::VIRTUALIZE_APIC_ACCESSES
                    | SecondaryControls::APIC_REGISTER_VIRTUALIZATION
                    | SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY
            },
        )
        .unwrap();
    s.w12(enc(fields::VIRTUAL_APIC_ADDRESS), vapic);
    s.w12(enc(fields::APIC_ACCESS_ADDRESS), access);
    s.w12(enc(fields::TPR_THRESHOLD), 0);
    s.w12(enc(fields::EOI_EXIT_BITMAP_0), 0x8000_0000_0000_0001);
    s.w12(enc(fields::EOI_EXIT_BITMAP_3), 1 << 63);
    s.w12(enc(fields::GUEST_INTERRUPT_STATUS), 0x3031);
}

#[test]
fn apic_virtualization_runs_l2_on_l1s_pages_at_their_host_physical_addresses() {
    let mut s = setup();
    with_apic_virtualization(&mut s, 0x20_3000, 0xfe_e000);
    s.l0.apic_pages = ApicPages02::of(&s.vmcs12, &L1At1G, SCRATCH).unwrap();
    assert_eq!(
        s.l0.apic_pages,
        ApicPages02 {
            virtual_apic: L1_HOST_BASE + 0x20_3000,
            apic_access: L1_HOST_BASE + 0xfe_e000,
        }
    );
    let (vmcs02, built) = s.build().unwrap();
    assert!(
        built
            .controls
            .proc
            .contains(PrimaryControls::USE_TPR_SHADOW)
    );
    assert!(built.controls.proc2.contains(
        SecondaryControls::VIRTUALIZE_APIC_ACCESSES
            | SecondaryControls::APIC_REGISTER_VIRTUALIZATION
            | SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY
    ));
    let r = |e: u32| vmcs02.read_raw(e).unwrap();
    assert_eq!(
        r(enc(fields::VIRTUAL_APIC_ADDRESS)),
        L1_HOST_BASE + 0x20_3000
    );
    assert_eq!(
        r(enc(fields::APIC_ACCESS_ADDRESS)),
        L1_HOST_BASE + 0xfe_e000
    );
    assert_eq!(r(enc(fields::EOI_EXIT_BITMAP_0)), 0x8000_0000_0000_0001);
    assert_eq!(r(enc(fields::EOI_EXIT_BITMAP_1)), 0);
    assert_eq!(r(enc(fields::EOI_EXIT_BITMAP_3)), 1 << 63);
    // RVI and SVI travel with the guest state.
    assert_eq!(r(enc(fields::GUEST_INTERRUPT_STATUS)), 0x3031);
    // The processor's own VM-entry checks accept it (virtual-interrupt delivery needs
    // external-interrupt exiting, which VMCS12 has and L0 adds anyway).
    let mut env = s.env.clone();
    env.vmcs = vmcs02;
    env.assert_enters();
}

#[test]
fn apic_pages_outside_l1s_writable_ram_are_l0s_scratch_page() {
    let mut s = setup();
    // Beyond L1's RAM.
    with_apic_virtualization(&mut s, 0x8000_0000, 0xfee0_0000);
    assert_eq!(
        ApicPages02::of(&s.vmcs12, &L1At1G, SCRATCH).unwrap(),
        ApicPages02 {
            virtual_apic: SCRATCH,
            apic_access: SCRATCH,
        }
    );
    // The processor writes the virtual-APIC page: not on a page EPT01 lets L1 only read. The
    // APIC-access page is never accessed as memory: read-only is fine.
    with_apic_virtualization(&mut s, READ_ONLY_PAGE, READ_ONLY_PAGE);
    assert_eq!(
        ApicPages02::of(&s.vmcs12, &L1At1G, SCRATCH).unwrap(),
        ApicPages02 {
            virtual_apic: SCRATCH,
            apic_access: L1_HOST_BASE + READ_ONLY_PAGE,
        }
    );
    // Without the controls, no pages.
    let plain = setup();
    assert_eq!(
        ApicPages02::of(&plain.vmcs12, &L1At1G, SCRATCH).unwrap(),
        ApicPages02::default()
    );
    let (vmcs02, _) = plain.build().unwrap();
    assert_eq!(vmcs02.read(fields::VIRTUAL_APIC_ADDRESS).unwrap(), 0);
}

#[test]
fn l0_controls_the_processor_lacks_are_refused() {
    let mut s = setup();
    // Bochs tigerlake has no tertiary controls.
    s.l0.controls
        .insert(vmx_caps::TertiaryControls::LOADIWKEY_EXITING);
    assert!(matches!(s.build(), Err(Vmcs02Error::NotAllowed(set)) if !set.proc3.is_empty()));
}

#[test]
fn msr_bitmaps_merge_l0s_and_l1s_intercepts() {
    let s = setup();
    let mut memory = vec![0u8; 0x40_0000];
    // L1 (baseline bitmap at 0x20_0000) intercepts WRMSR of IA32_SYSENTER_CS (174H).
    memory[0x20_0000 + 2048 + 0x174 / 8] |= 1 << (0x174 % 8);
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut memory,
    };
    let mut own = MsrBitmap::pass_all();
    own.intercept(0xc000_0080, MsrAccess::Read).unwrap();
    let mut merged = MsrBitmap::pass_all();
    merge_msr_bitmap(&s.vmcs12, &mut mem, &own, &mut merged).unwrap();
    assert!(merged.exits(0x174, MsrAccess::Write));
    assert!(!merged.exits(0x174, MsrAccess::Read));
    assert!(merged.exits(0xc000_0080, MsrAccess::Read));
    assert!(!merged.exits(0xc000_0080, MsrAccess::Write));
    assert!(!merged.exits(0x10, MsrAccess::Read));

    // A bitmap outside L1's memory reads as all ones: everything exits.
    let mut v12 = s.vmcs12.clone();
    v12.write(fields::ADDRESS_OF_MSR_BITMAPS, 0x80_0000)
        .unwrap();
    merge_msr_bitmap(&v12, &mut mem, &own, &mut merged).unwrap();
    assert_eq!(merged, MsrBitmap::intercept_all());
    // Without "use MSR bitmaps", every RDMSR/WRMSR of L2 exits to L1.
    v12.modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
        p - PrimaryControls::USE_MSR_BITMAPS
    })
    .unwrap();
    merged = MsrBitmap::pass_all();
    merge_msr_bitmap(&v12, &mut mem, &own, &mut merged).unwrap();
    assert_eq!(merged, MsrBitmap::intercept_all());
}

#[test]
fn io_bitmaps_merge_l0s_and_l1s_intercepts() {
    let mut s = setup();
    let mut memory = vec![0u8; 0x40_0000];
    memory[0x30_0000 + 0x80 / 8] |= 1 << (0x80 % 8);
    memory[0x30_1000] |= 1; // port 8000H in bitmap B
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut memory,
    };
    let mut own = IoBitmaps::pass_all();
    own.intercept(0x3f8);
    let mut merged = IoBitmaps::pass_all();
    // Neither: L0's alone.
    merge_io_bitmaps(&s.vmcs12, &mut mem, &own, &mut merged).unwrap();
    assert_eq!(merged, own);
    // L1's bitmaps.
    s.vmcs12
        .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
            p | PrimaryControls::USE_IO_BITMAPS
        })
        .unwrap();
    s.w12(enc(fields::ADDRESS_OF_IO_BITMAP_A), 0x30_0000);
    s.w12(enc(fields::ADDRESS_OF_IO_BITMAP_B), 0x30_1000);
    merge_io_bitmaps(&s.vmcs12, &mut mem, &own, &mut merged).unwrap();
    for (port, exits) in [
        (0x80, true),
        (0x8000, true),
        (0x3f8, true),
        (0x81, false),
        (0x60, false),
    ] {
        assert_eq!(merged.exits(port, 1).unwrap(), exits, "port {port:#x}");
    }
    // Unconditional I/O exiting alone: every port.
    s.vmcs12
        .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
            (p - PrimaryControls::USE_IO_BITMAPS) | PrimaryControls::UNCONDITIONAL_IO_EXITING
        })
        .unwrap();
    merge_io_bitmaps(&s.vmcs12, &mut mem, &own, &mut merged).unwrap();
    assert_eq!(merged, IoBitmaps::intercept_all());
}

/// A bitmap page of random words, most of them all ones or all zeros (as real bitmaps are).
fn page_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u64>> {
    use proptest::prelude::*;
    proptest::collection::vec(prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()], 512)
}

fn page_bytes(words: &[u64]) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    for (bytes, word) in page.chunks_exact_mut(8).zip(words) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    page
}

proptest::proptest! {
    /// The merges read only the words L0 does not set whole; the result is still exactly the
    /// union of L0's bitmaps and L1's pages (`union_bytes` over whole pages), whatever the
    /// merged bitmaps held before.
    #[test]
    fn merged_bitmaps_are_exactly_the_unions(
        l0_msr in page_strategy(),
        l1_msr in page_strategy(),
        l0_a in page_strategy(),
        l0_b in page_strategy(),
        l1_a in page_strategy(),
        l1_b in page_strategy(),
        stale in proptest::prelude::any::<bool>(),
    ) {
        let mut s = setup();
        s.vmcs12
            .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
                p | PrimaryControls::USE_IO_BITMAPS | PrimaryControls::USE_MSR_BITMAPS
            })
            .unwrap();
        s.w12(enc(fields::ADDRESS_OF_MSR_BITMAPS), 0x20_0000);
        s.w12(enc(fields::ADDRESS_OF_IO_BITMAP_A), 0x30_0000);
        s.w12(enc(fields::ADDRESS_OF_IO_BITMAP_B), 0x30_1000);
        let mut memory = vec![0u8; 0x40_0000];
        memory[0x20_0000..0x20_1000].copy_from_slice(&page_bytes(&l1_msr));
        memory[0x30_0000..0x30_1000].copy_from_slice(&page_bytes(&l1_a));
        memory[0x30_1000..0x30_2000].copy_from_slice(&page_bytes(&l1_b));
        let mut mem = FlatGuestMemory { base: 0, bytes: &mut memory };

        let mut l0 = MsrBitmap::pass_all();
        l0.union_bytes(&page_bytes(&l0_msr));
        let mut expected = l0.clone();
        expected.union_bytes(&page_bytes(&l1_msr));
        let mut merged = if stale { MsrBitmap::intercept_all() } else { MsrBitmap::pass_all() };
        merge_msr_bitmap(&s.vmcs12, &mut mem, &l0, &mut merged).unwrap();
        proptest::prop_assert_eq!(&merged, &expected);

        let mut l0 = IoBitmaps::pass_all();
        l0.union_bytes(&page_bytes(&l0_a), &page_bytes(&l0_b));
        let mut expected = l0.clone();
        expected.union_bytes(&page_bytes(&l1_a), &page_bytes(&l1_b));
        let mut merged = if stale { IoBitmaps::intercept_all() } else { IoBitmaps::pass_all() };
        merge_io_bitmaps(&s.vmcs12, &mut mem, &l0, &mut merged).unwrap();
        proptest::prop_assert_eq!(&merged, &expected);
    }
}

/// L1's side of one merge: VMCS12's bitmap controls, where its bitmaps are, and a write L1 makes
/// to its memory before the entry.
#[derive(Debug, Clone)]
struct L1Round {
    use_msr: bool,
    use_io: bool,
    unconditional_io: bool,
    /// MSR bitmap, I/O bitmap A, I/O bitmap B: in memory, at its end (partly outside), or far
    /// outside (near the top of the address space).
    addresses: [u64; 3],
    /// A byte L1 changes in its memory before the entry (offset, value).
    poke: (usize, u8),
}

const ROUND_MEMORY: usize = 0x4000;

fn round_strategy() -> impl proptest::strategy::Strategy<Value = L1Round> {
    use proptest::prelude::*;
    let address = prop_oneof![
        (0u64..4).prop_map(|page| page * 0x1000),
        Just(ROUND_MEMORY as u64 - 0x800),
        Just(u64::MAX - 0xfff),
        Just(u64::MAX - 3),
        any::<u64>(),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        [address.clone(), address.clone(), address],
        (0..ROUND_MEMORY, any::<u8>()),
    )
        .prop_map(
            |(use_msr, use_io, unconditional_io, addresses, poke)| L1Round {
                use_msr,
                use_io,
                unconditional_io,
                addresses,
                poke,
            },
        )
}

/// The oracle: the 4-KiB page at `address` of `memory` as the processor reads it, a byte at a
/// time, 8-byte words outside memory reading as all ones.
fn page_as_read(memory: &[u8], address: u64) -> [u8; 4096] {
    let mut page = [0xffu8; 4096];
    for word in 0..512u64 {
        let Some(at) = address.checked_add(word * 8) else {
            continue;
        };
        let Ok(at) = usize::try_from(at) else {
            continue;
        };
        if let Some(bytes) = at.checked_add(8).and_then(|end| memory.get(at..end)) {
            page[word as usize * 8..word as usize * 8 + 8].copy_from_slice(bytes);
        }
    }
    page
}

proptest::proptest! {
    /// Merged bitmaps kept across entries (`MergedMsrBitmap`, `MergedIoBitmaps`) follow every
    /// change L1 makes between entries — its controls, its bitmaps' addresses (also partly or wholly
    /// outside its memory, up to the top of the address space) and the bitmaps' contents — and
    /// equal at every entry the union computed from scratch, a byte at a time.
    #[test]
    fn kept_merges_follow_every_change_of_l1(
        l0_msr in page_strategy(),
        l0_a in page_strategy(),
        l0_b in page_strategy(),
        initial in proptest::collection::vec(proptest::prelude::any::<u8>(), ROUND_MEMORY),
        rounds in proptest::collection::vec(round_strategy(), 1..6),
    ) {
        use vmcs::nested::{MergedIoBitmaps, MergedMsrBitmap};
        let mut s = setup();
        let mut memory = initial;
        let mut l0m = MsrBitmap::pass_all();
        l0m.union_bytes(&page_bytes(&l0_msr));
        let mut l0io = IoBitmaps::pass_all();
        l0io.union_bytes(&page_bytes(&l0_a), &page_bytes(&l0_b));
        let (mut msr_out, mut io_out) = (MsrBitmap::pass_all(), IoBitmaps::pass_all());
        let mut msr = MergedMsrBitmap::new(&l0m, &mut msr_out);
        let mut io = MergedIoBitmaps::new(&l0io, &mut io_out);
        for round in rounds {
            memory[round.poke.0] = round.poke.1;
            s.vmcs12
                .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
                    let mut p = p
                        - PrimaryControls::USE_MSR_BITMAPS
                        - PrimaryControls::USE_IO_BITMAPS
                        - PrimaryControls::UNCONDITIONAL_IO_EXITING;
                    p.set(PrimaryControls::USE_MSR_BITMAPS, round.use_msr);
                    p.set(PrimaryControls::USE_IO_BITMAPS, round.use_io);
                    p.set(PrimaryControls::UNCONDITIONAL_IO_EXITING, round.unconditional_io);
                    p
                })
                .unwrap();
            s.w12(enc(fields::ADDRESS_OF_MSR_BITMAPS), round.addresses[0]);
            s.w12(enc(fields::ADDRESS_OF_IO_BITMAP_A), round.addresses[1]);
            s.w12(enc(fields::ADDRESS_OF_IO_BITMAP_B), round.addresses[2]);
            let mut mem = FlatGuestMemory { base: 0, bytes: &mut memory };
            msr.merge(&s.vmcs12, &mut mem).unwrap();
            io.merge(&s.vmcs12, &mut mem).unwrap();

            let mut expected = l0m.clone();
            if round.use_msr {
                expected.union_bytes(&page_as_read(&memory, round.addresses[0]));
            } else {
                expected.fill(true);
            }
            proptest::prop_assert_eq!(msr.bitmap(), &expected);
            let mut expected = l0io.clone();
            if round.use_io {
                expected.union_bytes(
                    &page_as_read(&memory, round.addresses[1]),
                    &page_as_read(&memory, round.addresses[2]),
                );
            } else if round.unconditional_io {
                expected.fill(true);
            }
            proptest::prop_assert_eq!(io.bitmap(), &expected);
        }
    }
}
