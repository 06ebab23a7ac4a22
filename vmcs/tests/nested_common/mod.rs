//! What the nested-VMX tests share: L0's part of VMCS02, the capabilities L0 shows L1 and L0's
//! model of the MSRs L1 and L2 share.
#![allow(dead_code)]

use std::collections::HashMap;

use vmcs::ExceptionBitmap;
use vmcs::nested::{
    ApicPages02, FlatGuestMemory, GuestMsrs, L0Part, L1Context, L1VmxState, PointerOperand,
    VMCS02_CONTROLS, VmxOutcome,
};
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{ControlSet, ExitControls, PinBasedControls, SecondaryControls, VmxCapabilities};

/// The EPT pointer of EPT02 in [`l0_part`] (WB, 4-level walk).
pub const EPTP02: u64 = 0x50_0000 | 6 | 3 << 3;

/// The capabilities L0 shows L1 with VMCS revision `revision`: what VMCS02 can carry, on top of
/// `real`.
pub fn virtual_caps(real: &VmxCapabilities, revision: u32) -> VmxCapabilities {
    let mut policy = VirtualPolicy::everything(revision);
    policy.offer = VMCS02_CONTROLS;
    policy.virtualize(real).unwrap().caps
}

/// L0's own part: its interrupts, its EPT and VPID, #MC, CR4.VMXE.
pub fn l0_part() -> L0Part {
    let mut controls = ControlSet::EMPTY;
    controls.insert(PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING);
    controls.insert(SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID);
    controls.insert(
        ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
            | ExitControls::LOAD_IA32_PAT
            | ExitControls::LOAD_IA32_EFER,
    );
    L0Part {
        controls,
        exceptions: ExceptionBitmap::MACHINE_CHECK,
        cr0_mask: 0,
        cr4_mask: 1 << 13,
        eptp: EPTP02,
        vpid: 2,
        msr_bitmap: 0x60_0000,
        io_bitmaps: (0x61_0000, 0x62_0000),
        preemption_timer: 0,
        apic_pages: ApicPages02::default(),
    }
}

/// The MSRs L1 and L2 share, as L0 keeps them: every WRMSR succeeds.
#[derive(Default)]
pub struct Msrs(pub HashMap<u32, u64>);

impl GuestMsrs for Msrs {
    fn read(&mut self, msr: u32) -> Option<u64> {
        self.0.get(&msr).copied()
    }
    fn write(&mut self, msr: u32, value: u64) -> bool {
        self.0.insert(msr, value);
        true
    }
}

/// L1 with capabilities `caps` in VMX operation with a current VMCS12: the revision identifier
/// written at the head of the VMXON region (`vmxon`) and of VMCS12 (`vmcs12`) in `memory`
/// (L1-physical 0 up), then VMXON and VMPTRLD at CPL 0 in 64-bit mode (both must succeed).
pub fn l1_with_current_vmcs(
    caps: &VmxCapabilities,
    memory: &mut [u8],
    vmxon: u64,
    vmcs12: u64,
) -> L1VmxState {
    let revision = caps.basic.revision_id();
    for region in [vmxon, vmcs12] {
        let at = region as usize;
        memory[at..at + 4].copy_from_slice(&revision.to_le_bytes());
    }
    let mut l1 = L1VmxState::new(caps, 39).unwrap();
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: memory,
    };
    let cx = L1Context::long_mode_cpl0();
    let m = PointerOperand::Memory;
    assert_eq!(l1.vmxon(&cx, m(vmxon), &mut mem), VmxOutcome::Succeed(()));
    assert_eq!(
        l1.vmptrld(&cx, m(vmcs12), &mut mem),
        VmxOutcome::Succeed(())
    );
    l1
}
