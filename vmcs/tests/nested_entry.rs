//! L1's VMLAUNCH/VMRESUME through `L1VmxState::enter_l2`: one case of each class of result the
//! SDM gives (SDM Vol. 3C, "VM Entries": VMfailValid 7 for the controls, 8 for the host state,
//! VM-entry failure with exit reason 33 for the guest state and 34 for MSR loading, success),
//! starting from the checker's known-good VMCS (tests/check_common) loaded as VMCS12 under the
//! capabilities L0 shows L1 on Bochs `tigerlake`.

mod check_common;
use check_common::{MSR_LOAD_AREA, baseline, tigerlake_msrs};
use std::collections::HashMap;
use vmcs::check::EntryInstruction::{Vmlaunch, Vmresume};
use vmcs::check::{CpuFacts, LaunchState, Violation};
use vmcs::nested::{
    FlatGuestMemory, GuestMsrs, L1Context, L1VmxState, L2Entry, PointerOperand, VmxOutcome,
};
use vmcs::{VmcsRead, VmcsWrite, fields};
use vmx_caps::VmxCapabilities;
use vmx_caps::virt::VirtualPolicy;
use vmx_core::VmInstructionError as E;

const REVISION: u32 = 0x11e5_7ed0;
const VMXON: u64 = 0x1000;
/// VMCS12, away from the structures the baseline references.
const VMCS12: u64 = 0x4000;
const CX: L1Context = L1Context::long_mode_cpl0();

/// L1's and L2's MSRs as L0 would keep them; WRMSR of an MSR in `faulting` faults.
#[derive(Default)]
struct Msrs {
    values: HashMap<u32, u64>,
    faulting: Vec<u32>,
}

impl GuestMsrs for Msrs {
    fn read(&mut self, msr: u32) -> Option<u64> {
        self.values.get(&msr).copied()
    }
    fn write(&mut self, msr: u32, value: u64) -> bool {
        if self.faulting.contains(&msr) {
            return false;
        }
        self.values.insert(msr, value);
        true
    }
}

struct Setup {
    l1: L1VmxState,
    memory: Vec<u8>,
    cpu: CpuFacts,
    msrs: Msrs,
}

fn setup() -> Setup {
    let real = VmxCapabilities::read(&mut tigerlake_msrs()).unwrap();
    let caps = VirtualPolicy::everything(REVISION)
        .virtualize(&real)
        .unwrap()
        .caps;
    let mut memory = vec![0u8; 0x40_0000];
    for region in [VMXON, VMCS12] {
        let at = region as usize;
        memory[at..at + 4].copy_from_slice(&REVISION.to_le_bytes());
    }
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut memory,
    };
    let m = PointerOperand::Memory;
    assert_eq!(l1.vmxon(&CX, m(VMXON), &mut mem), VmxOutcome::Succeed(()));
    assert_eq!(
        l1.vmclear(&CX, m(VMCS12), &mut mem),
        VmxOutcome::Succeed(())
    );
    assert_eq!(
        l1.vmptrld(&CX, m(VMCS12), &mut mem),
        VmxOutcome::Succeed(())
    );
    baseline(l1.current_vmcs_mut().unwrap());
    let mut cpu = CpuFacts::new(39);
    cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));
    Setup {
        l1,
        memory,
        cpu,
        msrs: Msrs::default(),
    }
}

impl Setup {
    fn enter(&mut self, instruction: vmcs::check::EntryInstruction) -> (L2Entry, Vec<String>) {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut self.memory,
        };
        let mut seen = Vec::new();
        let mut sink = |v: &Violation| seen.push(v.rule.id().to_string());
        let entry = self
            .l1
            .enter_l2(
                &CX,
                instruction,
                self.cpu,
                &mut mem,
                &mut sink,
                &mut self.msrs,
            )
            .unwrap();
        (entry, seen)
    }

    fn vmcs12(&mut self) -> &mut vmcs::SoftVmcs {
        self.l1.current_vmcs_mut().unwrap()
    }

    fn read(&mut self, encoding: u32) -> u64 {
        self.vmcs12().read_raw(encoding).unwrap()
    }
}

#[test]
fn a_valid_vmcs12_enters_l2_and_becomes_launched() {
    let mut s = setup();
    let (entry, seen) = s.enter(Vmlaunch);
    assert_eq!(entry, L2Entry::Enter, "{seen:?}");
    assert_eq!(s.l1.launch_state(), Some(LaunchState::Launched));
    // The second VMLAUNCH is refused, VMRESUME enters.
    let (entry, _) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::Instruction(VmxOutcome::VmFailValid(E::VmlaunchNonClearVmcs))
    );
    assert_eq!(s.enter(Vmresume).0, L2Entry::Enter);
}

#[test]
fn a_control_field_failure_is_vmfailvalid_7() {
    let mut s = setup();
    // The pin-based controls without their allowed-0 (default1) bits.
    s.vmcs12()
        .write_raw(fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(), 0)
        .unwrap();
    let (entry, seen) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::Instruction(VmxOutcome::VmFailValid(E::EntryInvalidControlFields))
    );
    assert!(seen.contains(&"A1".to_string()), "{seen:?}");
    assert_eq!(s.read(fields::VM_INSTRUCTION_ERROR.encoding()), 7);
    assert_eq!(s.l1.launch_state(), Some(LaunchState::Clear));
}

#[test]
fn a_host_state_failure_is_vmfailvalid_8() {
    let mut s = setup();
    // HOST_CR0 without PE, NE and PG, which IA32_VMX_CR0_FIXED0 requires.
    s.vmcs12()
        .write_raw(fields::HOST_CR0.encoding(), 0)
        .unwrap();
    let (entry, _) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::Instruction(VmxOutcome::VmFailValid(E::EntryInvalidHostStateFields))
    );
    assert_eq!(s.read(fields::VM_INSTRUCTION_ERROR.encoding()), 8);
}

#[test]
fn a_guest_state_failure_is_exit_reason_33() {
    let mut s = setup();
    // RFLAGS bit 1 is reserved and must be 1.
    s.vmcs12()
        .write_raw(fields::GUEST_RFLAGS.encoding(), 0)
        .unwrap();
    let (entry, _) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::EntryFailure {
            exit_reason: 0x8000_0021,
            qualification: 0
        }
    );
    assert_eq!(s.read(fields::EXIT_REASON.encoding()), 0x8000_0021);
    assert_eq!(s.read(fields::EXIT_QUALIFICATION.encoding()), 0);
    // VM-entry failures leave the VM-instruction error field and the launch state alone.
    assert_eq!(s.read(fields::VM_INSTRUCTION_ERROR.encoding()), 0);
    assert_eq!(s.l1.launch_state(), Some(LaunchState::Clear));
}

#[test]
fn a_link_pointer_equal_to_the_current_vmcs_is_exit_reason_33_qualification_4() {
    let mut s = setup();
    s.vmcs12()
        .write_raw(fields::VMCS_LINK_POINTER.encoding(), VMCS12)
        .unwrap();
    let (entry, _) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::EntryFailure {
            exit_reason: 0x8000_0021,
            qualification: 4
        }
    );
}

#[test]
fn an_msr_load_failure_is_exit_reason_34_with_the_entry_index() {
    let mut s = setup();
    // Entry 1 loads IA32_SYSENTER_CS (allowed); entry 2 IA32_FS_BASE, which VM entry refuses.
    let area = MSR_LOAD_AREA as usize;
    s.memory[area..area + 4].copy_from_slice(&0x174u32.to_le_bytes());
    s.memory[area + 16..area + 20].copy_from_slice(&0xc000_0100u32.to_le_bytes());
    let vmcs = s.vmcs12();
    vmcs.write(fields::VM_ENTRY_MSR_LOAD_ADDRESS, MSR_LOAD_AREA)
        .unwrap();
    vmcs.write(fields::VM_ENTRY_MSR_LOAD_COUNT, 2).unwrap();
    let (entry, seen) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::EntryFailure {
            exit_reason: 0x8000_0022,
            qualification: 2
        },
        "{seen:?}"
    );
    assert_eq!(s.read(fields::EXIT_REASON.encoding()), 0x8000_0022);
    assert_eq!(s.read(fields::EXIT_QUALIFICATION.encoding()), 2);
}

#[test]
fn without_a_current_vmcs_it_is_vmfailinvalid() {
    let mut s = setup();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut s.memory,
    };
    assert_eq!(
        s.l1.vmclear(&CX, PointerOperand::Memory(VMCS12), &mut mem),
        VmxOutcome::Succeed(())
    );
    let (entry, _) = s.enter(Vmlaunch);
    assert_eq!(entry, L2Entry::Instruction(VmxOutcome::VmFailInvalid));
}

/// Writes MSR-load entries (index, data) at `MSR_LOAD_AREA` and points VMCS12's VM-entry
/// MSR-load area at them.
fn msr_load_area(s: &mut Setup, entries: &[(u32, u64)]) {
    let area = MSR_LOAD_AREA as usize;
    for (i, (msr, data)) in entries.iter().enumerate() {
        let at = area + 16 * i;
        s.memory[at..at + 8].copy_from_slice(&u64::from(*msr).to_le_bytes());
        s.memory[at + 8..at + 16].copy_from_slice(&data.to_le_bytes());
    }
    let vmcs = s.vmcs12();
    vmcs.write(fields::VM_ENTRY_MSR_LOAD_ADDRESS, MSR_LOAD_AREA)
        .unwrap();
    vmcs.write(fields::VM_ENTRY_MSR_LOAD_COUNT, entries.len() as u32)
        .unwrap();
}

#[test]
fn the_entry_msr_load_area_is_loaded_into_the_guest_msrs_in_order() {
    let mut s = setup();
    // IA32_SYSENTER_CS twice: the later entry wins, as the processor loads in order.
    msr_load_area(
        &mut s,
        &[
            (0x174, 8),
            (0xc000_0081, 0x23_0010_0000_0000),
            (0x174, 0x10),
        ],
    );
    let (entry, seen) = s.enter(Vmlaunch);
    assert_eq!(entry, L2Entry::Enter, "{seen:?}");
    assert_eq!(s.msrs.values.get(&0x174), Some(&0x10));
    assert_eq!(s.msrs.values.get(&0xc000_0081), Some(&0x23_0010_0000_0000));
}

#[test]
fn an_msr_whose_wrmsr_faults_is_exit_reason_34_and_the_vmcs_stays_clear() {
    let mut s = setup();
    // IA32_STAR loads; entry 2 is an MSR whose WRMSR faults with that value (the checker
    // cannot know it), so entry fails with qualification 2.
    s.msrs.faulting.push(0x1a0);
    msr_load_area(&mut s, &[(0xc000_0081, 0), (0x1a0, 1 << 63)]);
    let (entry, seen) = s.enter(Vmlaunch);
    assert_eq!(
        entry,
        L2Entry::EntryFailure {
            exit_reason: 0x8000_0022,
            qualification: 2
        },
        "{seen:?}"
    );
    assert_eq!(s.read(fields::EXIT_QUALIFICATION.encoding()), 2);
    assert_eq!(s.l1.launch_state(), Some(LaunchState::Clear));
    assert_eq!(s.msrs.values.get(&0xc000_0081), Some(&0));
}
