//! The VMX instructions emulated for L1 (`vmcs::nested`), one case per outcome of each
//! instruction's "Operation" pseudocode in SDM Vol. 3C, chapter 31, over the capabilities L0
//! shows L1 (`vmx_caps::virt`) computed from Bochs `tigerlake`'s capability MSRs.

use vmcs::check::EntryInstruction::{Vmlaunch, Vmresume};
use vmcs::check::LaunchState;
use vmcs::nested::{
    FlatGuestMemory, INVALID_POINTER, L1Context, L1StateError, L1VmxState, PointerOperand,
    VmxFault, VmxOutcome,
};
use vmcs::{Cr0, Cr4, VmcsRead, fields};
use vmx_caps::virt::{MISC_FLAGS, VirtualPolicy};
use vmx_caps::{MsrSnapshot, SecondaryControls, VmxCapabilities};
use vmx_core::{InveptType, InvvpidType, VmInstructionError as E};

const REVISION: u32 = 0x11e5_7ed0;
const VMXON: u64 = 0x1000;
const A: u64 = 0x2000;
const B: u64 = 0x3000;
const MEMORY: usize = 0x10000;

use PointerOperand::Memory as M;
use VmxOutcome::{Fault, Succeed, VmFailInvalid, VmFailValid};

fn real() -> VmxCapabilities {
    let text = include_str!("../../vmx-caps/testdata/tigerlake.msr");
    VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap()
}

fn virt(policy: VirtualPolicy) -> VmxCapabilities {
    policy.virtualize(&real()).unwrap().caps
}

fn caps() -> VmxCapabilities {
    virt(VirtualPolicy::everything(REVISION))
}

/// L1's memory with the revision identifier in the VMXON region and regions A and B.
fn memory() -> Vec<u8> {
    let mut bytes = vec![0u8; MEMORY];
    for region in [VMXON, A, B] {
        let at = region as usize;
        bytes[at..at + 4].copy_from_slice(&REVISION.to_le_bytes());
    }
    bytes
}

const CX: L1Context = L1Context::long_mode_cpl0();

/// In VMX operation, with `A` VMCLEARed and current.
fn with_current(caps: &VmxCapabilities, bytes: &mut [u8]) -> L1VmxState {
    let mut mem = FlatGuestMemory { base: 0, bytes };
    let mut l1 = L1VmxState::new(caps, 39).unwrap();
    assert_eq!(l1.vmxon(&CX, M(VMXON), &mut mem), Succeed(()));
    assert_eq!(l1.vmclear(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    l1
}

fn error_field(l1: &L1VmxState) -> u64 {
    l1.current_vmcs()
        .unwrap()
        .read(fields::VM_INSTRUCTION_ERROR)
        .unwrap()
        .into()
}

#[test]
fn vmxon_faults() {
    let caps = caps();
    let mut bytes = memory();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    let ud = Fault(VmxFault::InvalidOpcode);
    let gp = Fault(VmxFault::GeneralProtection);
    // #UD: register operand, CR0.PE = 0, CR4.VMXE = 0, virtual-8086 mode, compatibility mode.
    assert_eq!(l1.vmxon(&CX, PointerOperand::Register, &mut mem), ud);
    let no_pe = L1Context {
        cr0: CX.cr0 - Cr0::PE - Cr0::PG,
        ..CX
    };
    assert_eq!(l1.vmxon(&no_pe, M(VMXON), &mut mem), ud);
    let no_vmxe = L1Context {
        cr4: CX.cr4 - Cr4::VMXE,
        ..CX
    };
    assert_eq!(l1.vmxon(&no_vmxe, M(VMXON), &mut mem), ud);
    let v86 = L1Context {
        rflags_vm: true,
        ..CX
    };
    assert_eq!(l1.vmxon(&v86, M(VMXON), &mut mem), ud);
    let compat = L1Context { cs_l: false, ..CX };
    assert_eq!(l1.vmxon(&compat, M(VMXON), &mut mem), ud);
    // #GP(0): CPL > 0, CR0.NE = 0 (IA32_VMX_CR0_FIXED0 has NE), IA32_FEATURE_CONTROL unlocked.
    assert_eq!(
        l1.vmxon(&L1Context { cpl: 3, ..CX }, M(VMXON), &mut mem),
        gp
    );
    let no_ne = L1Context {
        cr0: CX.cr0 - Cr0::NE,
        ..CX
    };
    assert_eq!(l1.vmxon(&no_ne, M(VMXON), &mut mem), gp);
    let unlocked = VmxCapabilities {
        feature_control: vmx_caps::FeatureControl::VMX_OUTSIDE_SMX,
        ..caps
    };
    let mut l1_unlocked = L1VmxState::new(&unlocked, 39).unwrap();
    assert_eq!(l1_unlocked.vmxon(&CX, M(VMXON), &mut mem), gp);
    assert!(!l1.in_vmx_operation());
}

#[test]
fn vmxon_region_checks() {
    let caps = caps();
    let mut bytes = memory();
    bytes[0x5000..0x5004].copy_from_slice(&(REVISION + 1).to_le_bytes());
    bytes[0x6000..0x6004].copy_from_slice(&(REVISION | 1 << 31).to_le_bytes());
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    // VMfailInvalid: not 4-KiB aligned, beyond the 39-bit width, wrong revision, bit 31 set,
    // a region outside L1's memory (reads as all ones).
    for addr in [VMXON + 8, 1 << 39, 0x5000, 0x6000, 0x10_0000] {
        assert_eq!(l1.vmxon(&CX, M(addr), &mut mem), VmFailInvalid, "{addr:#x}");
    }
    assert!(!l1.in_vmx_operation());
    assert_eq!(l1.vmxon(&CX, M(VMXON), &mut mem), Succeed(()));
    assert_eq!(l1.vmxon_pointer(), Some(VMXON));
    assert_eq!(l1.current_pointer(), None);
    // In VMX root operation: VMfail(15), invalid without a current VMCS; #GP(0) at CPL > 0.
    assert_eq!(l1.vmxon(&CX, M(VMXON), &mut mem), VmFailInvalid);
    assert_eq!(
        l1.vmxon(&L1Context { cpl: 1, ..CX }, M(VMXON), &mut mem),
        Fault(VmxFault::GeneralProtection)
    );
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(
        l1.vmxon(&CX, M(VMXON), &mut mem),
        VmFailValid(E::VmxonInVmxRoot)
    );
    assert_eq!(error_field(&l1), 15);
}

#[test]
fn vmxon_with_32_bit_physical_addresses() {
    // IA32_VMX_BASIC[48] = 1 limits VMXON, VMCLEAR and VMPTRLD pointers to 32 bits.
    let mut caps = caps();
    caps.basic.0 |= 1 << 48;
    let mut bytes = memory();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    assert_eq!(l1.vmxon(&CX, M(1 << 32), &mut mem), VmFailInvalid);
    assert_eq!(l1.vmxon(&CX, M(VMXON), &mut mem), Succeed(()));
    assert_eq!(l1.vmclear(&CX, M(1 << 32), &mut mem), VmFailInvalid);
}

#[test]
fn state_refuses_unusable_capabilities() {
    let small = virt(VirtualPolicy {
        vmcs_size: 1024,
        ..VirtualPolicy::everything(REVISION)
    });
    assert_eq!(
        L1VmxState::new(&small, 39).unwrap_err(),
        L1StateError::RegionTooSmall { size: 1024 }
    );
    assert_eq!(
        L1VmxState::new(&caps(), 64).unwrap_err(),
        L1StateError::PhysicalAddressWidth(64)
    );
}

#[test]
fn vmxoff() {
    let caps = caps();
    let mut bytes = memory();
    let mut l1 = with_current(&caps, &mut bytes);
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    assert_eq!(
        l1.vmxoff(&L1Context { cpl: 3, ..CX }, &mut mem),
        Fault(VmxFault::GeneralProtection)
    );
    assert_eq!(l1.vmxoff(&CX, &mut mem), Succeed(()));
    assert!(!l1.in_vmx_operation());
    // Outside VMX operation every VMX instruction but VMXON is #UD.
    let ud = Fault(VmxFault::InvalidOpcode);
    assert_eq!(l1.vmxoff(&CX, &mut mem), ud);
    assert_eq!(l1.vmread(&CX, 0x681e), Fault(VmxFault::InvalidOpcode));
    assert_eq!(l1.vmptrst(&CX), Fault(VmxFault::InvalidOpcode));
    assert_eq!(l1.vmclear(&CX, M(A), &mut mem), ud);
    assert_eq!(l1.vm_entry(&CX, Vmlaunch), ud);
}

#[test]
fn vmclear_errors_and_effects() {
    let caps = caps();
    let mut bytes = memory();
    let mut l1 = with_current(&caps, &mut bytes);
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    assert_eq!(
        l1.vmclear(&CX, PointerOperand::Register, &mut mem),
        Fault(VmxFault::InvalidOpcode)
    );
    assert_eq!(
        l1.vmclear(&CX, M(A | 0x800), &mut mem),
        VmFailValid(E::VmclearInvalidAddress)
    );
    assert_eq!(error_field(&l1), 2);
    assert_eq!(
        l1.vmclear(&CX, M(1 << 39), &mut mem),
        VmFailValid(E::VmclearInvalidAddress)
    );
    assert_eq!(
        l1.vmclear(&CX, M(VMXON), &mut mem),
        VmFailValid(E::VmclearVmxonPointer)
    );
    assert_eq!(error_field(&l1), 3);
    // VMCLEAR of another VMCS leaves the current one; of the current one invalidates the pointer.
    assert_eq!(l1.vmclear(&CX, M(B), &mut mem), Succeed(()));
    assert_eq!(l1.current_pointer(), Some(A));
    assert_eq!(l1.vmclear(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.current_pointer(), None);
    assert_eq!(l1.vmptrst(&CX), Succeed(INVALID_POINTER));
    // Without a current VMCS a failing VMCLEAR is VMfailInvalid.
    assert_eq!(l1.vmclear(&CX, M(VMXON), &mut mem), VmFailInvalid);
    // VMCLEAR does not check the revision identifier.
    assert_eq!(l1.vmclear(&CX, M(0x7000), &mut mem), Succeed(()));
}

#[test]
fn vmptrld_errors() {
    let caps = caps();
    let mut bytes = memory();
    bytes[0x5000..0x5004].copy_from_slice(&(REVISION ^ 1).to_le_bytes());
    bytes[0x6000..0x6004].copy_from_slice(&(REVISION | 1 << 31).to_le_bytes());
    let mut l1 = with_current(&caps, &mut bytes);
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    assert_eq!(
        l1.vmptrld(&CX, M(B + 4), &mut mem),
        VmFailValid(E::VmptrldInvalidAddress)
    );
    assert_eq!(error_field(&l1), 9);
    assert_eq!(
        l1.vmptrld(&CX, M(1 << 40), &mut mem),
        VmFailValid(E::VmptrldInvalidAddress)
    );
    assert_eq!(
        l1.vmptrld(&CX, M(VMXON), &mut mem),
        VmFailValid(E::VmptrldVmxonPointer)
    );
    assert_eq!(error_field(&l1), 10);
    assert_eq!(
        l1.vmptrld(&CX, M(0x5000), &mut mem),
        VmFailValid(E::VmptrldIncorrectRevision)
    );
    assert_eq!(error_field(&l1), 11);
    // Outside L1's memory the revision reads as all ones.
    assert_eq!(
        l1.vmptrld(&CX, M(0x20_0000), &mut mem),
        VmFailValid(E::VmptrldIncorrectRevision)
    );
    assert_eq!(l1.current_pointer(), Some(A));
    // A shadow VMCS (bit 31) loads where "VMCS shadowing" is offered, but cannot be entered.
    assert_eq!(l1.vmptrld(&CX, M(0x6000), &mut mem), Succeed(()));
    assert_eq!(l1.vm_entry(&CX, Vmlaunch), VmFailInvalid);
}

#[test]
fn vmptrld_of_a_shadow_vmcs_without_shadowing() {
    let caps = virt(VirtualPolicy::everything(REVISION).without(SecondaryControls::VMCS_SHADOWING));
    let mut bytes = memory();
    bytes[0x6000..0x6004].copy_from_slice(&(REVISION | 1 << 31).to_le_bytes());
    let mut l1 = with_current(&caps, &mut bytes);
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    assert_eq!(
        l1.vmptrld(&CX, M(0x6000), &mut mem),
        VmFailValid(E::VmptrldIncorrectRevision)
    );
}

#[test]
fn vmptrst_and_vmcs_contents_live_in_l1_memory() {
    let caps = caps();
    let mut bytes = memory();
    let mut l1 = with_current(&caps, &mut bytes);
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    assert_eq!(l1.vmptrst(&CX), Succeed(A));
    assert_eq!(l1.vmwrite(&CX, 0x681e, 0xdead_b000), Succeed(())); // GUEST_RIP
    assert_eq!(l1.vmclear(&CX, M(B), &mut mem), Succeed(()));
    assert_eq!(l1.vmptrld(&CX, M(B), &mut mem), Succeed(()));
    assert_eq!(l1.vmptrst(&CX), Succeed(B));
    assert_eq!(l1.vmread(&CX, 0x681e), Succeed(0));
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.vmread(&CX, 0x681e), Succeed(0xdead_b000));
    // A fresh state reading the same memory (L0 restarted) finds the written-back value.
    assert_eq!(l1.vmxoff(&CX, &mut mem), Succeed(()));
    let mut again = L1VmxState::new(&caps, 39).unwrap();
    assert_eq!(again.vmxon(&CX, M(VMXON), &mut mem), Succeed(()));
    assert_eq!(again.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(again.vmread(&CX, 0x681e), Succeed(0xdead_b000));
}

#[test]
fn vmread_vmwrite_errors() {
    // Without IA32_VMX_MISC[29], VMWRITE to a VM-exit information field is error 13.
    let strict = virt(VirtualPolicy {
        misc_flags: MISC_FLAGS & !(1 << 29),
        ..VirtualPolicy::everything(REVISION)
    });
    let mut bytes = memory();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    let mut l1 = L1VmxState::new(&strict, 39).unwrap();
    assert_eq!(l1.vmxon(&CX, M(VMXON), &mut mem), Succeed(()));
    // No current VMCS: VMfailInvalid.
    assert_eq!(l1.vmread(&CX, 0x681e), VmFailInvalid);
    assert_eq!(l1.vmwrite(&CX, 0x681e, 1), VmFailInvalid);
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(
        l1.vmread(&CX, 0x7777),
        VmFailValid(E::UnsupportedVmcsComponent)
    );
    assert_eq!(error_field(&l1), 12);
    assert_eq!(
        l1.vmread(&CX, 1 << 32 | 0x681e),
        VmFailValid(E::UnsupportedVmcsComponent)
    );
    assert_eq!(
        l1.vmwrite(&CX, 0x7777, 0),
        VmFailValid(E::UnsupportedVmcsComponent)
    );
    assert_eq!(
        l1.vmwrite(&CX, 0x4402, 0),
        VmFailValid(E::VmwriteReadOnlyComponent)
    );
    assert_eq!(error_field(&l1), 13);
    // VMREAD of the error field reports the last error.
    assert_eq!(l1.vmread(&CX, 0x4400), Succeed(13));
    // CPL > 0: #GP(0).
    assert_eq!(
        l1.vmwrite(&L1Context { cpl: 3, ..CX }, 0x681e, 0),
        Fault(VmxFault::GeneralProtection)
    );
    // With MISC[29] (tigerlake's), the same VMWRITE succeeds.
    let caps = caps();
    let mut bytes = memory();
    let mut l1 = with_current(&caps, &mut bytes);
    assert_eq!(l1.vmwrite(&CX, 0x4402, 12), Succeed(()));
    assert_eq!(l1.vmread(&CX, 0x4402), Succeed(12));
}

#[test]
fn vmlaunch_vmresume_state_checks() {
    let caps = caps();
    let mut bytes = memory();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: &mut bytes,
    };
    let mut l1 = L1VmxState::new(&caps, 39).unwrap();
    assert_eq!(l1.vmxon(&CX, M(VMXON), &mut mem), Succeed(()));
    assert_eq!(l1.vm_entry(&CX, Vmlaunch), VmFailInvalid);
    assert_eq!(l1.vmclear(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    let mov_ss = L1Context {
        blocked_by_mov_ss: true,
        ..CX
    };
    assert_eq!(
        l1.vm_entry(&mov_ss, Vmlaunch),
        VmFailValid(E::EntryEventsBlockedByMovSs)
    );
    assert_eq!(error_field(&l1), 26);
    assert_eq!(
        l1.vm_entry(&CX, Vmresume),
        VmFailValid(E::VmresumeNonLaunchedVmcs)
    );
    assert_eq!(error_field(&l1), 5);
    assert_eq!(l1.vm_entry(&CX, Vmlaunch), Succeed(()));
    l1.mark_launched();
    assert_eq!(
        l1.vm_entry(&CX, Vmlaunch),
        VmFailValid(E::VmlaunchNonClearVmcs)
    );
    assert_eq!(error_field(&l1), 4);
    assert_eq!(l1.vm_entry(&CX, Vmresume), Succeed(()));
    // The launch state lives with the VMCS: it survives a switch, and VMCLEAR clears it.
    assert_eq!(l1.vmclear(&CX, M(B), &mut mem), Succeed(()));
    assert_eq!(l1.vmptrld(&CX, M(B), &mut mem), Succeed(()));
    assert_eq!(l1.launch_state(), Some(LaunchState::Clear));
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.launch_state(), Some(LaunchState::Launched));
    assert_eq!(l1.vmclear(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.vmptrld(&CX, M(A), &mut mem), Succeed(()));
    assert_eq!(l1.vm_entry(&CX, Vmlaunch), Succeed(()));
    assert_eq!(
        l1.vm_entry(&L1Context { cpl: 3, ..CX }, Vmlaunch),
        Fault(VmxFault::GeneralProtection)
    );
}

#[test]
fn invept_operands() {
    let caps = caps();
    let mut bytes = memory();
    let mut l1 = with_current(&caps, &mut bytes);
    let good = 0x5000 | 3 << 3 | 6; // WB, 4-level
    assert_eq!(l1.invept(&CX, 1, good), Succeed(InveptType::SingleContext));
    assert_eq!(l1.invept(&CX, 2, 0), Succeed(InveptType::AllContext));
    for kind in [0, 3, 1 << 32 | 1] {
        assert_eq!(
            l1.invept(&CX, kind, good),
            VmFailValid(E::InvalidInveptInvvpidOperand)
        );
        assert_eq!(error_field(&l1), 28);
    }
    // Single-context with an EPTP that VM entry would refuse: memory type 1, walk length 3,
    // reserved bit 8, an address beyond 39 bits.
    for eptp in [
        0x5000 | 3 << 3 | 1,
        0x5000 | 2 << 3 | 6,
        good | 1 << 8,
        good | 1 << 45,
    ] {
        assert_eq!(
            l1.invept(&CX, 1, eptp),
            VmFailValid(E::InvalidInveptInvvpidOperand),
            "{eptp:#x}"
        );
    }
    // A type the capabilities do not offer (single-context masked off by the policy).
    let all_only = virt(VirtualPolicy {
        ept_vpid: !(1 << 25),
        ..VirtualPolicy::everything(REVISION)
    });
    let mut bytes = memory();
    let mut l1 = with_current(&all_only, &mut bytes);
    assert_eq!(
        l1.invept(&CX, 1, good),
        VmFailValid(E::InvalidInveptInvvpidOperand)
    );
    assert_eq!(l1.invept(&CX, 2, 0), Succeed(InveptType::AllContext));
    // Without EPT, INVEPT is #UD.
    let no_ept = virt(VirtualPolicy::everything(REVISION).without(SecondaryControls::ENABLE_EPT));
    let mut bytes = memory();
    let mut l1 = with_current(&no_ept, &mut bytes);
    assert_eq!(l1.invept(&CX, 2, 0), Fault(VmxFault::InvalidOpcode));
}

#[test]
fn invvpid_operands() {
    let caps = caps();
    let mut bytes = memory();
    let mut l1 = with_current(&caps, &mut bytes);
    let desc = |vpid: u128, address: u128| address << 64 | vpid;
    assert_eq!(
        l1.invvpid(&CX, 0, desc(1, 0xffff_8000_0000_0000), 48),
        Succeed(InvvpidType::IndividualAddress)
    );
    assert_eq!(
        l1.invvpid(&CX, 2, desc(0, 0), 48),
        Succeed(InvvpidType::AllContext)
    );
    let bad = VmFailValid(E::InvalidInveptInvvpidOperand);
    assert_eq!(l1.invvpid(&CX, 4, desc(1, 0), 48), bad);
    assert_eq!(error_field(&l1), 28);
    // Descriptor bits 63:16 reserved.
    assert_eq!(l1.invvpid(&CX, 2, desc(1 << 16, 0), 48), bad);
    // VPID 0 with individual-address, single-context, single-context-retaining-globals.
    for kind in [0, 1, 3] {
        assert_eq!(l1.invvpid(&CX, kind, desc(0, 0), 48), bad, "type {kind}");
    }
    // A non-canonical address with individual-address (canonical with 57 bits).
    assert_eq!(l1.invvpid(&CX, 0, desc(1, 0x0080_0000_0000_0000), 48), bad);
    assert_eq!(
        l1.invvpid(&CX, 0, desc(1, 0x0080_0000_0000_0000), 57),
        Succeed(InvvpidType::IndividualAddress)
    );
    let no_vpid = virt(VirtualPolicy::everything(REVISION).without(SecondaryControls::ENABLE_VPID));
    let mut bytes = memory();
    let mut l1 = with_current(&no_vpid, &mut bytes);
    assert_eq!(l1.invvpid(&CX, 2, 0, 48), Fault(VmxFault::InvalidOpcode));
}
