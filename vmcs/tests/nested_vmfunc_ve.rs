//! L2's VMFUNC (EPTP switching, `vmcs::nested::L1VmxState::vmfunc`) and EPT-violation #VE
//! (`vmcs::nested::deliver_ve`) as L0 emulates them for L1's processor (SDM Vol. 3C, 26.5.6.3
//! "EPTP Switching", 26.5.7 "Virtualization Exceptions"), under the capabilities L0 shows L1 on
//! Bochs `tigerlake`.

mod nested_common;
use nested_common::{l1_with_current_vmcs, virtual_caps};
use vmcs::nested::{
    Ept12Exit, FlatGuestMemory, L1VmxState, VeDelivery, Vmcs02, VmfuncOutcome, deliver_ve,
};
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{
    ControlSet, EptVpidCap, MsrSnapshot, PrimaryControls, SecondaryControls, VmFuncControls,
    VmxCapabilities,
};

const REVISION: u32 = 0x11e5_7ed0;
const VMXON: u64 = 0x1000;
const VMCS12: u64 = 0x2000;
const EPTP_LIST: u64 = 0x3000;
const VE_AREA: u64 = 0x4000;
/// Two valid EPTPs (WB, 4-level walk) and an invalid one of each kind.
const EPTP_A: u64 = 0x5000 | 6 | 3 << 3;
const EPTP_B: u64 = 0x6000 | 6 | 3 << 3;
const INVALID: [(u16, u64); 6] = [
    (2, 0x7000 | 1 | 3 << 3),           // memory type 1 (WC)
    (3, 0x7000 | 6 | 1 << 3),           // page-walk length 2
    (4, 0x7000 | 6 | 3 << 3 | 1 << 8),  // reserved bit 8
    (5, 1 << 40 | 6 | 3 << 3),          // beyond a 39-bit physical-address width
    (6, 0),                             // an empty entry
    (7, 0x7000 | 6 | 3 << 3 | 1 << 52), // reserved bit 52
];
/// EPTP_A with accessed and dirty flags enabled.
const EPTP_AD: u64 = EPTP_A | 1 << 6;

fn real() -> VmxCapabilities {
    let mut msrs =
        MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap()
}

struct L1 {
    state: L1VmxState,
    memory: Vec<u8>,
}

impl L1 {
    /// L1 with capabilities `caps`, VMCS12 current with EPT (EPTP_A), VM functions (EPTP
    /// switching) and the EPTP list {0: A, 1: B, 8: A with A/D, the invalid ones}.
    fn new(caps: &VmxCapabilities) -> Self {
        let mut memory = vec![0u8; 0x10000];
        let mut state = l1_with_current_vmcs(caps, &mut memory, VMXON, VMCS12);
        let v = state.current_vmcs_mut().unwrap();
        v.write(
            fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
        )
        .unwrap();
        v.write(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VM_FUNCTIONS,
        )
        .unwrap();
        v.write(fields::VM_FUNCTION_CONTROLS, VmFuncControls::EPTP_SWITCHING)
            .unwrap();
        v.write(fields::EPTP_LIST_ADDRESS, EPTP_LIST).unwrap();
        v.write_raw(fields::EPT_POINTER.encoding(), EPTP_A).unwrap();
        let mut l1 = Self { state, memory };
        l1.entry(0, EPTP_A);
        l1.entry(1, EPTP_B);
        l1.entry(8, EPTP_AD);
        for (i, eptp) in INVALID {
            l1.entry(i, eptp);
        }
        let _ = l1.state.take_dirty();
        l1
    }

    fn entry(&mut self, index: u16, eptp: u64) {
        let at = (EPTP_LIST + 8 * u64::from(index)) as usize;
        self.memory[at..at + 8].copy_from_slice(&eptp.to_le_bytes());
    }

    fn vmfunc(&mut self, eax: u64, ecx: u64) -> VmfuncOutcome {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut self.memory,
        };
        self.state.vmfunc(eax, ecx, &mut mem).unwrap()
    }

    fn read12(&self, encoding: u32) -> u64 {
        self.state
            .current_vmcs()
            .unwrap()
            .read_raw(encoding)
            .unwrap()
    }

    fn eptp(&self) -> u64 {
        self.read12(fields::EPT_POINTER.encoding())
    }

    fn index(&self) -> u64 {
        self.read12(fields::EPTP_INDEX.encoding())
    }
}

fn l1() -> L1 {
    L1::new(&virtual_caps(&real(), REVISION))
}

#[test]
fn eptp_switching_loads_a_valid_entry_and_its_index_without_an_exit() {
    let mut l1 = l1();
    assert_eq!(
        l1.vmfunc(0, 1),
        VmfuncOutcome::Switched {
            eptp: EPTP_B,
            index: 1,
            changed: true
        }
    );
    assert_eq!((l1.eptp(), l1.index()), (EPTP_B, 1));
    // Again: the same EPTP, nothing changes.
    assert_eq!(
        l1.vmfunc(0, 1),
        VmfuncOutcome::Switched {
            eptp: EPTP_B,
            index: 1,
            changed: false
        }
    );
    // Only EAX and ECX count (bits 63:32 of RAX and RCX are ignored).
    assert_eq!(
        l1.vmfunc(0xffff_ffff_0000_0000, 0x1_0000_0000),
        VmfuncOutcome::Switched {
            eptp: EPTP_A,
            index: 0,
            changed: true
        }
    );
    assert_eq!((l1.eptp(), l1.index()), (EPTP_A, 0));
    // L0's change on L2's behalf is not one of L1's: nothing for a kept VMCS02.
    assert!(l1.state.take_dirty().is_empty());
}

#[test]
fn accessed_and_dirty_flags_only_where_l1s_processor_has_them() {
    let mut l1 = l1();
    assert!(l1.state.caps().ept_vpid.accessed_dirty());
    assert!(matches!(
        l1.vmfunc(0, 8),
        VmfuncOutcome::Switched { eptp: EPTP_AD, .. }
    ));
    let mut no_ad = virtual_caps(&real(), REVISION);
    no_ad.ept_vpid = EptVpidCap(no_ad.ept_vpid.0 & !(1 << 21));
    let mut l1 = L1::new(&no_ad);
    assert_eq!(l1.vmfunc(0, 8), VmfuncOutcome::Exit);
    assert_eq!(l1.eptp(), EPTP_A);
}

#[test]
fn an_invalid_entry_or_index_exits_and_changes_nothing() {
    let mut l1 = l1();
    for (i, eptp) in INVALID {
        assert_eq!(l1.vmfunc(0, i.into()), VmfuncOutcome::Exit, "{eptp:#x}");
    }
    for ecx in [512, 0x8000_0001, 0xffff_ffff] {
        assert_eq!(l1.vmfunc(0, ecx), VmfuncOutcome::Exit, "ECX {ecx:#x}");
    }
    assert_eq!((l1.eptp(), l1.index()), (EPTP_A, 0));
    // An EPTP list outside L1's memory reads as all ones: no valid EPTP.
    l1.state
        .current_vmcs_mut()
        .unwrap()
        .write(fields::EPTP_LIST_ADDRESS, 0x100_0000)
        .unwrap();
    assert_eq!(l1.vmfunc(0, 1), VmfuncOutcome::Exit);
    assert_eq!(l1.eptp(), EPTP_A);
}

#[test]
fn a_function_vmcs12_does_not_enable_exits() {
    let mut l1 = l1();
    for eax in [1, 2, 63, 64, 0xffff_ffff] {
        assert_eq!(l1.vmfunc(eax, 1), VmfuncOutcome::Exit, "EAX {eax}");
    }
    // VM-function controls 0: function 0 exits too.
    let v = l1.state.current_vmcs_mut().unwrap();
    v.write(fields::VM_FUNCTION_CONTROLS, VmFuncControls::empty())
        .unwrap();
    assert_eq!(l1.vmfunc(0, 1), VmfuncOutcome::Exit);
    // Without "enable VM functions" the controls field is not in use.
    let v = l1.state.current_vmcs_mut().unwrap();
    v.write(fields::VM_FUNCTION_CONTROLS, VmFuncControls::EPTP_SWITCHING)
        .unwrap();
    v.modify(
        fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
        |c| c - SecondaryControls::ENABLE_VM_FUNCTIONS,
    )
    .unwrap();
    assert_eq!(l1.vmfunc(0, 1), VmfuncOutcome::Exit);
    assert_eq!(l1.eptp(), EPTP_A);
}

#[test]
fn the_eptp_index_is_written_only_where_l1s_processor_has_ve() {
    let mut policy = VirtualPolicy::everything(REVISION);
    policy.offer = vmcs::nested::VMCS02_CONTROLS;
    let caps = policy
        .without(SecondaryControls::EPT_VIOLATION_VE)
        .virtualize(&real())
        .unwrap()
        .caps;
    assert!(!caps.proc2.allows(SecondaryControls::EPT_VIOLATION_VE));
    let mut l1 = L1::new(&caps);
    assert!(matches!(l1.vmfunc(0, 1), VmfuncOutcome::Switched { .. }));
    assert_eq!((l1.eptp(), l1.index()), (EPTP_B, 0));
}

// --- EPT-violation #VE ---

const READ: u64 = 1;
/// Qualification bits 7 and 8: guest-linear address valid, access to the translation.
const LINEAR: u64 = 0x180;
const GPA: u64 = 0xc000_2040;
const GLA: u64 = 0x7fff_2040;
const CR0_PE_PG: u64 = 1 | 1 << 31;

struct Ve {
    vmcs12: SoftVmcs,
    vmcs02: SoftVmcs,
    built: Vmcs02,
    memory: Vec<u8>,
}

/// VMCS12 with EPT and "EPT-violation #VE" (area at VE_AREA, armed; EPTP index 3); VMCS02 as an
/// EPT violation of L2 in protected mode left it.
fn ve() -> Ve {
    let mut vmcs12 = SoftVmcs::all_fields();
    vmcs12
        .write(
            fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
        )
        .unwrap();
    vmcs12
        .write(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            SecondaryControls::ENABLE_EPT | SecondaryControls::EPT_VIOLATION_VE,
        )
        .unwrap();
    vmcs12
        .write(
            fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS,
            VE_AREA,
        )
        .unwrap();
    vmcs12.write(fields::EPTP_INDEX, 3).unwrap();
    let mut vmcs02 = SoftVmcs::all_fields();
    vmcs02
        .write_raw(fields::GUEST_CR0.encoding(), CR0_PE_PG)
        .unwrap();
    vmcs02
        .store(fields::GUEST_LINEAR_ADDRESS.encoding(), GLA)
        .unwrap();
    let mut memory = vec![0u8; 0x8000];
    // Stale contents the delivery must overwrite.
    memory[VE_AREA as usize..VE_AREA as usize + 40].fill(0xaa);
    memory[VE_AREA as usize + 4..VE_AREA as usize + 8].fill(0);
    Ve {
        vmcs12,
        vmcs02,
        built: Vmcs02 {
            controls: ControlSet::EMPTY,
            timer_is_l1s: false,
            timer_start: 0,
            timer_l1: 0,
            cr0_l0_only: 0,
            cr4_l0_only: 0,
        },
        memory,
    }
}

fn violation(qualification: u64, suppress_ve: bool) -> Ept12Exit {
    Ept12Exit {
        reason: 48,
        qualification,
        guest_physical: GPA,
        suppress_ve,
    }
}

impl Ve {
    fn deliver(&mut self, exit: &Ept12Exit) -> VeDelivery {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut self.memory,
        };
        deliver_ve(exit, &self.vmcs12, &mut self.vmcs02, &self.built, &mut mem).unwrap()
    }

    fn area32(&self, offset: usize) -> u32 {
        let at = VE_AREA as usize + offset;
        u32::from_le_bytes(self.memory[at..at + 4].try_into().unwrap())
    }

    fn area64(&self, offset: usize) -> u64 {
        let at = VE_AREA as usize + offset;
        u64::from_le_bytes(self.memory[at..at + 8].try_into().unwrap())
    }

    fn injected(&self) -> u64 {
        self.vmcs02
            .read_raw(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding())
            .unwrap()
    }

    /// Not converted: no injection, the area as it was.
    fn assert_exit(&mut self, exit: &Ept12Exit, what: &str) {
        let before = self.memory.clone();
        assert_eq!(self.deliver(exit), VeDelivery::Exit, "{what}");
        assert_eq!(self.injected() & 1 << 31, 0, "{what}: injected");
        assert!(self.memory == before, "{what}: the area was written");
    }
}

#[test]
fn a_convertible_violation_fills_the_area_and_injects_ve() {
    let mut s = ve();
    assert_eq!(
        s.deliver(&violation(READ | LINEAR, false)),
        VeDelivery::Delivered
    );
    assert_eq!(s.area32(0), 48);
    assert_eq!(s.area32(4), 0xffff_ffff);
    assert_eq!(s.area64(8), READ | LINEAR);
    assert_eq!(s.area64(16), GLA);
    assert_eq!(s.area64(24), GPA);
    assert_eq!(s.area32(32) & 0xffff, 3);
    // Bytes past the EPTP index are not the processor's to write.
    assert_eq!(s.area32(34) & 0xffff, 0xaaaa);
    // Valid, hardware exception, vector 20, no error code.
    assert_eq!(s.injected(), 0x8000_0314);
    // Busy now: the next violation exits.
    s.vmcs02
        .write_raw(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(), 0)
        .unwrap();
    s.assert_exit(&violation(READ | LINEAR, false), "busy area");
}

#[test]
fn without_a_valid_linear_address_the_area_gets_zero_there() {
    let mut s = ve();
    assert_eq!(s.deliver(&violation(READ, false)), VeDelivery::Delivered);
    assert_eq!(s.area64(16), 0);
    assert_eq!(s.area64(8), READ);
}

#[test]
fn what_is_not_convertible_exits() {
    let mut s = ve();
    s.assert_exit(&violation(READ | LINEAR, true), "suppress #VE set");
    let mut misconfiguration = violation(0, false);
    misconfiguration.reason = 49;
    s.assert_exit(&misconfiguration, "EPT misconfiguration");
    // Any nonzero value at offset 4 keeps the area busy.
    let mut s = ve();
    s.memory[VE_AREA as usize + 4] = 1;
    s.assert_exit(&violation(READ, false), "offset 4 not 0");
    // During event delivery through the IDT.
    let mut s = ve();
    s.vmcs02
        .store(fields::IDT_VECTORING_INFORMATION.encoding(), 0x8000_030e)
        .unwrap();
    s.assert_exit(&violation(READ, false), "during event delivery");
    // L2 with CR0.PE = 0.
    let mut s = ve();
    s.vmcs02.write_raw(fields::GUEST_CR0.encoding(), 0).unwrap();
    s.assert_exit(&violation(READ, false), "CR0.PE 0");
    // VMCS12 without "EPT-violation #VE".
    let mut s = ve();
    s.vmcs12
        .modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |c| c - SecondaryControls::EPT_VIOLATION_VE,
        )
        .unwrap();
    s.assert_exit(&violation(READ, false), "no #VE control");
    // An area outside L1's memory reads as all ones.
    let mut s = ve();
    s.vmcs12
        .write(
            fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS,
            0x100_0000,
        )
        .unwrap();
    s.assert_exit(&violation(READ, false), "area outside memory");
}

#[test]
fn l2s_cr0_pe_is_the_read_shadows_where_only_l0_owns_it() {
    let mut s = ve();
    s.built.cr0_l0_only = 1;
    s.vmcs02.write_raw(fields::GUEST_CR0.encoding(), 0).unwrap();
    s.vmcs02
        .write_raw(fields::CR0_READ_SHADOW.encoding(), 1)
        .unwrap();
    assert_eq!(s.deliver(&violation(READ, false)), VeDelivery::Delivered);
    let mut s = ve();
    s.built.cr0_l0_only = 1;
    s.vmcs02
        .write_raw(fields::CR0_READ_SHADOW.encoding(), 0)
        .unwrap();
    s.assert_exit(&violation(READ, false), "L2's CR0.PE 0 in the shadow");
}

#[test]
fn an_iret_that_unblocked_nmis_has_them_blocked_again() {
    let mut s = ve();
    assert_eq!(
        s.deliver(&violation(READ | 1 << 12, false)),
        VeDelivery::Delivered
    );
    let state = s
        .vmcs02
        .read_raw(fields::GUEST_INTERRUPTIBILITY_STATE.encoding())
        .unwrap();
    assert_eq!(state & 1 << 3, 1 << 3);
    let mut s = ve();
    assert_eq!(s.deliver(&violation(READ, false)), VeDelivery::Delivered);
    let state = s
        .vmcs02
        .read_raw(fields::GUEST_INTERRUPTIBILITY_STATE.encoding())
        .unwrap();
    assert_eq!(state & 1 << 3, 0);
}
