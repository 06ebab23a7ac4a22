//! One nested round trip over software VMCSes with the capabilities of Bochs `tigerlake`, every
//! building block in the order L0 uses them: L1's VMLAUNCH checked (`enter_l2`), VMCS02 built
//! (and accepted by the real VM-entry checks), an exit of L2 attributed (`exit_owner`), an exit
//! of L1's reflected (`reflect_exit`, after which L1's state passes the real checks again), L1's
//! VMRESUME with the instruction skipped, and an exit that stays L0's.

#[path = "../../vmcs/tests/check_common/mod.rs"]
mod check_common;
#[path = "../../vmcs/tests/nested_common/mod.rs"]
mod nested_common;

use check_common::{Env, MSR_BITMAP, baseline};
use exits::VmExit;
use exits::nested::{ExitOwner, L2Registers, exit_owner};
use nested_common::{Msrs, l0_part, virtual_caps};
use vmcs::check::EntryInstruction::{Vmlaunch, Vmresume};
use vmcs::check::{CpuFacts, Outcome, Violation};
use vmcs::nested::{
    FlatGuestMemory, L1Context, L1VmxState, L2Entry, PointerOperand, Reflected, VmxOutcome,
    build_vmcs02,
};
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_core::{GpReg, GuestRegisters};

const REVISION: u32 = 0x4e45_5354;
const VMXON: u64 = 0x1000;
const VMCS12: u64 = 0x4000;
const CX: L1Context = L1Context::long_mode_cpl0();

#[test]
fn l1_launches_l2_gets_its_exit_and_resumes_it() {
    // L0 runs L1 with VMCS01 (the checker's known-good VMCS on tigerlake).
    let mut env = Env::tigerlake();
    let caps = virtual_caps(&env.caps, REVISION);
    let mut memory = vec![0u8; 0x40_0000];
    for region in [VMXON, VMCS12] {
        memory[region as usize..region as usize + 4].copy_from_slice(&REVISION.to_le_bytes());
    }
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut memory,
    };
    let mut msrs = Msrs::default();
    let mut cpu = CpuFacts::new(39);
    cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));

    // L1: VMXON, VMPTRLD, its VMWRITEs (the baseline, HLT exiting, MSR bitmap of zeros: no MSR
    // exits wanted), VMLAUNCH.
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    let m = PointerOperand::Memory;
    assert_eq!(l1.vmxon(&CX, m(VMXON), &mut mem), VmxOutcome::Succeed(()));
    assert_eq!(
        l1.vmptrld(&CX, m(VMCS12), &mut mem),
        VmxOutcome::Succeed(())
    );
    {
        let v12 = l1.current_vmcs_mut().unwrap();
        baseline(v12);
        v12.write(fields::GUEST_RIP, 0x7000_1000).unwrap();
        v12.write(fields::HOST_RIP, 0x1234_5000).unwrap();
    }
    let mut seen = Vec::new();
    let mut sink = |v: &Violation| seen.push(v.rule.id());
    let entry = l1
        .enter_l2(&CX, Vmlaunch, cpu, &mut mem, &mut sink, &mut msrs)
        .unwrap();
    assert_eq!(entry, L2Entry::Enter, "{seen:?}");

    // L0 builds VMCS02; the real checks accept it.
    let l0 = l0_part();
    let mut vmcs02 = SoftVmcs::new(&env.caps);
    let built = build_vmcs02(
        l1.current_vmcs().unwrap(),
        &env.vmcs,
        &l0,
        &env.caps,
        &mut vmcs02,
    )
    .unwrap();
    let mut check02 = env.clone();
    check02.vmcs = vmcs02.clone();
    assert_eq!(check02.check().outcome(), Outcome::Success);

    // L2 runs, executes CPUID: the processor's exit in VMCS02.
    for (f, v) in [
        (fields::EXIT_REASON.encoding(), 10),
        (fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), 2),
    ] {
        vmcs02.store(f, v).unwrap();
    }
    let frame = GuestRegisters::new();
    let regs = L2Registers {
        frame: &frame,
        rsp: 0,
        ia32_xss: 0,
    };
    let exit = VmExit::read(&vmcs02).unwrap();
    assert_eq!(
        exit_owner(&exit, l1.current_vmcs().unwrap(), &mut mem, &regs, false).unwrap(),
        ExitOwner::L1
    );
    let reflected = l1
        .reflect_exit(&vmcs02, &vmcs02, &built, &mut env.vmcs, &mut mem, &mut msrs)
        .unwrap();
    assert_eq!(reflected, Reflected::Resume);
    // L1 resumes at its host RIP in a state the processor accepts.
    assert_eq!(env.vmcs.read(fields::GUEST_RIP).unwrap(), 0x1234_5000);
    assert_eq!(env.check().outcome(), Outcome::Success);

    // L1 handles CPUID: reads the exit, skips the instruction, VMRESUME.
    let len = match l1.vmread(&CX, fields::VM_EXIT_INSTRUCTION_LENGTH.encoding().into()) {
        VmxOutcome::Succeed(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(len, 2);
    assert_eq!(
        l1.vmwrite(&CX, fields::GUEST_RIP.encoding().into(), 0x7000_1002),
        VmxOutcome::Succeed(())
    );
    let mut sink = |_: &Violation| {};
    assert_eq!(
        l1.enter_l2(&CX, Vmresume, cpu, &mut mem, &mut sink, &mut msrs)
            .unwrap(),
        L2Entry::Enter
    );
    let mut vmcs02 = SoftVmcs::new(&env.caps);
    build_vmcs02(
        l1.current_vmcs().unwrap(),
        &env.vmcs,
        &l0,
        &env.caps,
        &mut vmcs02,
    )
    .unwrap();
    assert_eq!(vmcs02.read(fields::GUEST_RIP).unwrap(), 0x7000_1002);

    // L2 reads IA32_SYSENTER_CS: L1's MSR bitmap (zeros at MSR_BITMAP) lets it through, so the
    // exit (L0's own bitmap) stays with L0. HLT is L1's (the baseline sets HLT exiting).
    let mut frame = GuestRegisters::new();
    frame.set_gpr(GpReg::Rcx, 0x174).unwrap();
    let regs = L2Registers {
        frame: &frame,
        rsp: 0,
        ia32_xss: 0,
    };
    assert_eq!(mem.bytes[MSR_BITMAP as usize + 0x174 / 8], 0);
    let v12 = l1.current_vmcs().unwrap();
    for (reason, owner) in [(31, ExitOwner::L0), (12, ExitOwner::L1)] {
        vmcs02
            .store(fields::EXIT_REASON.encoding(), reason)
            .unwrap();
        let exit = VmExit::read(&vmcs02).unwrap();
        assert_eq!(
            exit_owner(&exit, v12, &mut mem, &regs, false).unwrap(),
            owner
        );
    }
}
