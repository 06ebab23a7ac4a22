//! An exit of L2 reflected to L1 (`L1VmxState::reflect_exit`), against SDM Vol. 3C chapter 28:
//! exit information recorded, guest state saved under VMCS12's "save" controls, MSR-store and
//! MSR-load areas processed, VMCS12's host state loaded as L1's state (which then passes the
//! real VM-entry checks of Bochs `tigerlake` as VMCS01's guest state), and each VMX abort.

mod check_common;
mod nested_common;

use check_common::{Env, baseline};
use nested_common::{Msrs, l0_part, virtual_caps};
use vmcs::check::CpuFacts;
use vmcs::check::EntryInstruction::Vmlaunch;
use vmcs::nested::{
    FlatGuestMemory, L0Part, L1Context, L1VmxState, L2Entry, PointerOperand, Reflected, Vmcs02,
    VmxAbort, VmxOutcome, build_vmcs02,
};
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::{EntryControls, ExitControls, PinBasedControls};

const REVISION: u32 = 0x11e5_7ed0;
const VMXON: u64 = 0x1000;
const VMCS12: u64 = 0x4000;
const STORE_AREA: u64 = 0xb000;
const LOAD_AREA: u64 = 0xc000;
const CX: L1Context = L1Context::long_mode_cpl0();

struct Setup {
    l1: L1VmxState,
    memory: Vec<u8>,
    /// VMCS01 is `env.vmcs`.
    env: Env,
    vmcs02: SoftVmcs,
    built: Vmcs02,
    msrs: Msrs,
    l0: L0Part,
}

/// L1 in VMX operation with a launched VMCS12 (the checker's baseline, host RIP 1234_5000H),
/// VMCS02 built, and an exit of L2 in VMCS02: CPUID (reason 10) at RIP 7000_2000H.
fn setup_with(edit: impl FnOnce(&mut SoftVmcs), l0: L0Part) -> Setup {
    let env = Env::tigerlake();
    let caps = virtual_caps(&env.caps, REVISION);
    let mut memory = vec![0u8; 0x40_0000];
    for region in [VMXON, VMCS12] {
        let at = region as usize;
        memory[at..at + 4].copy_from_slice(&REVISION.to_le_bytes());
    }
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    let mut msrs = Msrs::default();
    {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut memory,
        };
        let m = PointerOperand::Memory;
        assert_eq!(l1.vmxon(&CX, m(VMXON), &mut mem), VmxOutcome::Succeed(()));
        assert_eq!(
            l1.vmptrld(&CX, m(VMCS12), &mut mem),
            VmxOutcome::Succeed(())
        );
        let v12 = l1.current_vmcs_mut().unwrap();
        baseline(v12);
        v12.write(fields::HOST_RIP, 0x1234_5000).unwrap();
        v12.write(fields::GUEST_RIP, 0x7000_1000).unwrap();
        edit(v12);
        let mut cpu = CpuFacts::new(39);
        cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));
        let mut seen = Vec::new();
        let entry = l1
            .enter_l2(
                &CX,
                Vmlaunch,
                cpu,
                &mut mem,
                &mut |v: &vmcs::check::Violation| seen.push(v.rule.id()),
                &mut msrs,
            )
            .unwrap();
        assert_eq!(entry, L2Entry::Enter, "{seen:?}");
    }
    let mut vmcs02 = SoftVmcs::new(&env.caps);
    let built = build_vmcs02(
        l1.current_vmcs().unwrap(),
        &env.vmcs,
        &l0,
        &env.caps,
        &mut vmcs02,
    )
    .unwrap();
    // The processor's exit: CPUID, 2 bytes, L2 moved on to 7000_2000H.
    for (f, v) in [
        (fields::EXIT_REASON.encoding(), 10),
        (fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), 2),
        (fields::EXIT_QUALIFICATION.encoding(), 0),
        (fields::GUEST_RIP.encoding(), 0x7000_2000),
        (fields::GUEST_IA32_EFER.encoding(), 0xd01),
    ] {
        vmcs02.store(f, v).unwrap();
    }
    Setup {
        l1,
        memory,
        env,
        vmcs02,
        built,
        msrs,
        l0,
    }
}

fn setup() -> Setup {
    setup_with(|_| {}, l0_part())
}

impl Setup {
    fn reflect(&mut self) -> Reflected {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut self.memory,
        };
        self.l1
            .reflect_exit(
                &self.vmcs02,
                &self.vmcs02,
                &self.built,
                &mut self.env.vmcs,
                &mut mem,
                &mut self.msrs,
            )
            .unwrap()
    }
    fn r12(&self, encoding: u32) -> u64 {
        self.l1.current_vmcs().unwrap().read_raw(encoding).unwrap()
    }
    fn r01(&self, encoding: u32) -> u64 {
        self.env.vmcs.read_raw(encoding).unwrap()
    }
    fn abort_indicator(&self) -> u32 {
        let at = VMCS12 as usize + 4;
        u32::from_le_bytes(self.memory[at..at + 4].try_into().unwrap())
    }
}

#[test]
fn exit_information_and_guest_state_land_in_vmcs12() {
    let mut s = setup_with(
        |v| {
            // A #UD L1 injected (valid): the exit clears the valid bit.
            v.write_raw(
                fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
                0x8000_0306,
            )
            .unwrap();
        },
        l0_part(),
    );
    s.vmcs02
        .store(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(), 0)
        .unwrap();
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(s.r12(fields::EXIT_REASON.encoding()), 10);
    assert_eq!(s.r12(fields::VM_EXIT_INSTRUCTION_LENGTH.encoding()), 2);
    assert_eq!(s.r12(fields::GUEST_RIP.encoding()), 0x7000_2000);
    assert_eq!(s.r12(fields::VM_INSTRUCTION_ERROR.encoding()), 0);
    assert_eq!(
        s.r12(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding()),
        0x306
    );
    // VMCS12's own link pointer stays (VMCS02's is all ones).
    assert_eq!(s.r12(fields::VMCS_LINK_POINTER.encoding()), u64::MAX);
    // "IA-32e mode guest" reflects L2's IA32_EFER.LMA.
    assert_ne!(
        s.r12(fields::VM_ENTRY_CONTROLS.encoding())
            & u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        0
    );
}

#[test]
fn l1s_state_is_vmcs12s_host_state_and_passes_the_real_entry_checks() {
    let mut s = setup();
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(s.r01(fields::GUEST_RIP.encoding()), 0x1234_5000);
    assert_eq!(s.r01(fields::GUEST_RSP.encoding()), 0xffff_ffff_8020_0000);
    assert_eq!(s.r01(fields::GUEST_CR3.encoding()), 0x30_0000);
    assert_eq!(s.r01(fields::GUEST_RFLAGS.encoding()), 2);
    assert_eq!(s.r01(fields::GUEST_DR7.encoding()), 0x400);
    assert_eq!(s.r01(fields::GUEST_CS_SELECTOR.encoding()), 8);
    assert_eq!(s.r01(fields::GUEST_CS_ACCESS_RIGHTS.encoding()), 0xa09b);
    assert_eq!(s.r01(fields::GUEST_TR_ACCESS_RIGHTS.encoding()), 0x8b);
    assert_eq!(s.r01(fields::GUEST_TR_LIMIT.encoding()), 0x67);
    assert_eq!(s.r01(fields::GUEST_GDTR_LIMIT.encoding()), 0xffff);
    assert_eq!(
        s.r01(fields::GUEST_GDTR_BASE.encoding()),
        0xffff_ffff_8010_1000
    );
    assert_eq!(s.r01(fields::GUEST_IA32_EFER.encoding()), 0xd01);
    s.env.assert_enters();
}

#[test]
fn guest_efer_is_saved_only_under_save_ia32_efer() {
    let mut s = setup_with(
        |v| {
            v.modify(fields::PRIMARY_VM_EXIT_CONTROLS, |e| {
                e - ExitControls::SAVE_IA32_EFER
            })
            .unwrap();
        },
        l0_part(),
    );
    s.vmcs02
        .store(fields::GUEST_IA32_EFER.encoding(), 0x501)
        .unwrap();
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(s.r12(fields::GUEST_IA32_EFER.encoding()), 0xd01);
    // PAT is still saved.
    s.vmcs02
        .store(fields::GUEST_IA32_PAT.encoding(), 0x0606_0606_0606_0606)
        .unwrap();
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(
        s.r12(fields::GUEST_IA32_PAT.encoding()),
        0x0606_0606_0606_0606
    );
}

#[test]
fn msr_store_and_load_areas_are_processed() {
    let mut s = setup_with(
        |v| {
            v.write(fields::VM_EXIT_MSR_STORE_ADDRESS, STORE_AREA)
                .unwrap();
            v.write(fields::VM_EXIT_MSR_STORE_COUNT, 1).unwrap();
            v.write(fields::VM_EXIT_MSR_LOAD_ADDRESS, LOAD_AREA)
                .unwrap();
            v.write(fields::VM_EXIT_MSR_LOAD_COUNT, 1).unwrap();
        },
        l0_part(),
    );
    let (store, load) = (STORE_AREA as usize, LOAD_AREA as usize);
    s.memory[store..store + 4].copy_from_slice(&0xc000_0081u32.to_le_bytes());
    s.memory[load..load + 4].copy_from_slice(&0xc000_0082u32.to_le_bytes());
    s.memory[load + 8..load + 16].copy_from_slice(&0xffff_8000_0000_1000u64.to_le_bytes());
    s.msrs.0.insert(0xc000_0081, 0x0023_0010_0000_0000);
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(
        u64::from_le_bytes(s.memory[store + 8..store + 16].try_into().unwrap()),
        0x0023_0010_0000_0000
    );
    assert_eq!(s.msrs.0.get(&0xc000_0082), Some(&0xffff_8000_0000_1000));
    assert_eq!(s.abort_indicator(), 0);
}

#[test]
fn an_unreadable_msr_to_store_is_vmx_abort_1() {
    let mut s = setup_with(
        |v| {
            v.write(fields::VM_EXIT_MSR_STORE_ADDRESS, STORE_AREA)
                .unwrap();
            v.write(fields::VM_EXIT_MSR_STORE_COUNT, 1).unwrap();
        },
        l0_part(),
    );
    let store = STORE_AREA as usize;
    s.memory[store..store + 4].copy_from_slice(&0x1234u32.to_le_bytes());
    assert_eq!(s.reflect(), Reflected::Abort(VmxAbort::SavingGuestMsrs));
    assert_eq!(s.abort_indicator(), 1);
}

#[test]
fn loading_fs_base_from_the_exit_msr_load_area_is_vmx_abort_4() {
    let mut s = setup_with(
        |v| {
            v.write(fields::VM_EXIT_MSR_LOAD_ADDRESS, LOAD_AREA)
                .unwrap();
            v.write(fields::VM_EXIT_MSR_LOAD_COUNT, 2).unwrap();
        },
        l0_part(),
    );
    let load = LOAD_AREA as usize;
    s.memory[load..load + 4].copy_from_slice(&0x174u32.to_le_bytes());
    s.memory[load + 16..load + 20].copy_from_slice(&0xc000_0100u32.to_le_bytes());
    assert_eq!(s.reflect(), Reflected::Abort(VmxAbort::LoadingHostMsrs));
    assert_eq!(s.abort_indicator(), 4);
    // The entry before it was loaded.
    assert_eq!(s.msrs.0.get(&0x174), Some(&0));
}

#[test]
fn an_ia32e_l2_with_a_32_bit_host_is_vmx_abort_6() {
    let mut s = setup();
    s.l1.current_vmcs_mut()
        .unwrap()
        .modify(fields::PRIMARY_VM_EXIT_CONTROLS, |e| {
            e - ExitControls::HOST_ADDRESS_SPACE_SIZE
        })
        .unwrap();
    assert_eq!(
        s.reflect(),
        Reflected::Abort(VmxAbort::HostAddressSpaceSize)
    );
    assert_eq!(s.abort_indicator(), 6);
}

#[test]
fn a_pae_host_loads_its_pdptes_and_a_reserved_bit_is_vmx_abort_2() {
    let mut s = setup();
    // L2 left IA-32e mode (as far as this test goes) and L1's host is 32-bit PAE at CR3 8000H.
    s.vmcs02
        .modify(fields::VM_ENTRY_CONTROLS, |e| {
            e - EntryControls::IA32E_MODE_GUEST
        })
        .unwrap();
    let v12 = s.l1.current_vmcs_mut().unwrap();
    v12.modify(fields::PRIMARY_VM_EXIT_CONTROLS, |e| {
        e - ExitControls::HOST_ADDRESS_SPACE_SIZE
    })
    .unwrap();
    v12.write_raw(fields::HOST_CR3.encoding(), 0x8000).unwrap();
    v12.write_raw(fields::HOST_CR4.encoding(), 0x2020).unwrap();
    s.memory[0x8000..0x8008].copy_from_slice(&0x9001u64.to_le_bytes());
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(s.r01(fields::GUEST_PDPTE0.encoding()), 0x9001);
    assert_eq!(s.r01(fields::GUEST_CS_ACCESS_RIGHTS.encoding()), 0xc09b);
    // Bit 1 of a present PDPTE is reserved.
    s.memory[0x8008..0x8010].copy_from_slice(&0xa003u64.to_le_bytes());
    assert_eq!(s.reflect(), Reflected::Abort(VmxAbort::HostPdptes));
    assert_eq!(s.abort_indicator(), 2);
}

#[test]
fn l1s_preemption_timer_counts_down_while_l0s_shorter_one_ran() {
    let mut l0 = l0_part();
    l0.controls
        .insert(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
    l0.preemption_timer = 300;
    let mut s = setup_with(
        |v| {
            v.modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |p| {
                p | PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER
            })
            .unwrap();
            v.modify(fields::PRIMARY_VM_EXIT_CONTROLS, |e| {
                e | ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE
            })
            .unwrap();
            v.write(fields::VMX_PREEMPTION_TIMER_VALUE, 1000).unwrap();
        },
        l0,
    );
    assert!(!s.built.timer_is_l1s);
    // VMCS02 counted from 300 to 0 (L0's timer expired): L1's went from 1000 to 700.
    s.vmcs02
        .store(fields::VMX_PREEMPTION_TIMER_VALUE.encoding(), 0)
        .unwrap();
    assert_eq!(s.reflect(), Reflected::Resume);
    assert_eq!(s.r12(fields::VMX_PREEMPTION_TIMER_VALUE.encoding()), 700);
    let _ = s.l0;
}

#[test]
fn a_failed_vmresume_loads_vmcs12s_host_state_without_saving_guest_state() {
    let mut s = setup();
    let v12 = s.l1.current_vmcs_mut().unwrap();
    v12.write_raw(fields::GUEST_RFLAGS.encoding(), 0).unwrap(); // bit 1 must be 1
    let guest_rip = v12.read_raw(fields::GUEST_RIP.encoding()).unwrap();
    let mut cpu = CpuFacts::new(39);
    cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut s.memory,
    };
    let entry =
        s.l1.enter_l2(
            &CX,
            vmcs::check::EntryInstruction::Vmresume,
            cpu,
            &mut mem,
            &mut |_: &vmcs::check::Violation| {},
            &mut s.msrs,
        )
        .unwrap();
    assert_eq!(
        entry,
        L2Entry::EntryFailure {
            exit_reason: 0x8000_0021,
            qualification: 0
        }
    );
    let reflected =
        s.l1.exit_after_failed_entry(&mut s.env.vmcs, &mut mem, &mut s.msrs)
            .unwrap();
    assert_eq!(reflected, Reflected::Resume);
    assert_eq!(s.r01(fields::GUEST_RIP.encoding()), 0x1234_5000);
    assert_eq!(s.r12(fields::GUEST_RIP.encoding()), guest_rip);
    assert_eq!(s.r12(fields::GUEST_RFLAGS.encoding()), 0);
    s.env.assert_enters();
}

/// The recommended maximum of IA32_VMX_MISC\[27:25\] as L1 sees it: 512 × (N + 1) entries.
fn list_limit(s: &Setup) -> u64 {
    u64::from(s.l1.caps().misc.max_msr_list_entries())
}

#[test]
fn an_msr_store_area_beyond_the_misc_limit_is_vmx_abort_1_with_nothing_stored() {
    let mut s = setup();
    let limit = list_limit(&s);
    assert!(limit >= 512);
    {
        let v12 = s.l1.current_vmcs_mut().unwrap();
        v12.write(fields::VM_EXIT_MSR_STORE_ADDRESS, STORE_AREA)
            .unwrap();
        v12.write(fields::VM_EXIT_MSR_STORE_COUNT, limit as u32 + 1)
            .unwrap();
    }
    let store = STORE_AREA as usize;
    s.memory[store..store + 4].copy_from_slice(&0xc000_0081u32.to_le_bytes());
    s.msrs.0.insert(0xc000_0081, 0x55);
    assert_eq!(s.reflect(), Reflected::Abort(VmxAbort::SavingGuestMsrs));
    assert_eq!(s.abort_indicator(), 1);
    assert_eq!(
        u64::from_le_bytes(s.memory[store + 8..store + 16].try_into().unwrap()),
        0,
        "no entry is stored past a count beyond the limit"
    );
}

#[test]
fn msr_lists_at_the_misc_limit_are_processed_and_one_more_load_is_vmx_abort_4() {
    for (count, expected) in [
        (0, Reflected::Resume),
        (1, Reflected::Abort(VmxAbort::LoadingHostMsrs)),
    ] {
        let mut s = setup();
        let limit = list_limit(&s) + count;
        {
            let v12 = s.l1.current_vmcs_mut().unwrap();
            v12.write(fields::VM_EXIT_MSR_LOAD_ADDRESS, LOAD_AREA)
                .unwrap();
            v12.write(fields::VM_EXIT_MSR_LOAD_COUNT, limit as u32)
                .unwrap();
        }
        // Every entry loads IA32_SYSENTER_CS with its index.
        for i in 0..limit as usize {
            let at = LOAD_AREA as usize + 16 * i;
            s.memory[at..at + 4].copy_from_slice(&0x174u32.to_le_bytes());
            s.memory[at + 8..at + 16].copy_from_slice(&(i as u64).to_le_bytes());
        }
        assert_eq!(s.reflect(), expected, "count limit + {count}");
        let last = s.msrs.0.get(&0x174).copied();
        match expected {
            Reflected::Resume => assert_eq!(last, Some(limit - 1)),
            _ => assert_eq!(
                last, None,
                "nothing is loaded past a count beyond the limit"
            ),
        }
    }
}

#[test]
fn after_an_unpaged_real_mode_l2_l1_has_the_fixed_cr0_and_cr4_bits_again() {
    let mut s = setup();
    // L2 under "unrestricted guest" with CR0.PE and PG clear at the exit (NE, ET and CD set),
    // CR4 with VMXE only.
    let l2_cr0 = 0x6000_0030;
    s.vmcs02
        .store(fields::GUEST_CR0.encoding(), l2_cr0)
        .unwrap();
    s.vmcs02
        .store(fields::GUEST_CR4.encoding(), 0x2000)
        .unwrap();
    assert_eq!(s.reflect(), Reflected::Resume);
    let host_cr0 = s.r12(fields::HOST_CR0.encoding());
    let cr0 = s.r01(fields::GUEST_CR0.encoding());
    // PE, PG and NE: fixed to 1 in VMX operation, so 1 again (not L2's 0); CD and NW: kept
    // from L2 (SDM 28.5.1); the rest from the host CR0 field.
    assert_eq!(cr0 & 0x8000_0021, 0x8000_0021);
    assert_eq!(cr0 & 0x6000_0000, 0x6000_0000);
    assert_eq!(cr0 & 0x8000_0001, host_cr0 & 0x8000_0001);
    let cr4 = s.r01(fields::GUEST_CR4.encoding());
    assert_eq!(cr4, s.r12(fields::HOST_CR4.encoding()) | 0x2020);
    // L1's state is a state the real checks accept.
    s.env.assert_enters();
}

#[test]
fn l2s_cr0_and_cr4_bits_only_l0_owns_come_from_vmcs02s_read_shadows() {
    // L0 owns CR0.CD and NW (it runs L2 with both clear whatever L2 wrote) and CR4.VMXE; L1
    // owns CR0.TS (VMCS12's CR0 guest/host mask).
    let mut l0 = l0_part();
    l0.cr0_mask = 0x6000_0000;
    let mut s = setup_with(
        |v| {
            v.write_raw(fields::CR0_GUEST_HOST_MASK.encoding(), 0x8)
                .unwrap();
        },
        l0,
    );
    assert_eq!(s.built.cr0_l0_only, 0x6000_0000);
    assert_eq!(s.built.cr4_l0_only, 0x2000);
    let real_cr0 = s.vmcs02.read_raw(fields::GUEST_CR0.encoding()).unwrap() & !0x6000_0000;
    s.vmcs02
        .store(fields::GUEST_CR0.encoding(), real_cr0 | 0x8)
        .unwrap();
    // L2 wrote CD (L0's exit): the read shadow has it, the real CR0 not.
    s.vmcs02
        .store(fields::CR0_READ_SHADOW.encoding(), 0x4000_0000)
        .unwrap();
    let real_cr4 = s.vmcs02.read_raw(fields::GUEST_CR4.encoding()).unwrap();
    s.vmcs02
        .store(fields::CR4_READ_SHADOW.encoding(), 0)
        .unwrap();
    assert_eq!(s.reflect(), Reflected::Resume);
    // CD from the shadow, TS (L1's bit) and the rest from the real CR0.
    assert_eq!(
        s.r12(fields::GUEST_CR0.encoding()),
        real_cr0 | 0x8 | 0x4000_0000
    );
    // VMXE: L2 reads it clear through the shadow.
    assert_eq!(s.r12(fields::GUEST_CR4.encoding()), real_cr4 & !0x2000);
}
