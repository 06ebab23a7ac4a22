//! The lifecycle types on the software processor: launch-state tracking of `CurrentVmcs`, the
//! host-state cache and its reset on writes of HOST_RSP/HOST_RIP, the error kinds of `run`, and
//! the software processor's own SDM behaviour (VMfail numbers, field widths, read-only fields).
//! Capabilities come from the MSR dumps of Bochs' CPU models.

mod common;

use core::num::NonZeroU64;

use common::caps;
use vmcs_fields::fields::{self, HOST_RIP, HOST_RSP};
use vmx_caps::VmxCapabilities;
use vmx_caps::arch::Cr4;
use vmx_core::{
    CurrentVmcs, GuestRegisters, InveptType, RunError, SoftExit, SoftVmx, VmFail,
    VmInstructionError, VmcsRegion, VmxInstructions, VmxRoot, VmxonRegion,
};

const EXIT_REASON: u32 = fields::EXIT_REASON.encoding();
const VM_INSTRUCTION_ERROR: u32 = fields::VM_INSTRUCTION_ERROR.encoding();
const GUEST_RIP: u32 = fields::GUEST_RIP.encoding();

fn identity(p: *const u8) -> Option<u64> {
    Some(p as u64)
}

fn root(caps: &VmxCapabilities) -> VmxRoot<SoftVmx> {
    let vmxon = Box::leak(Box::new(VmxonRegion::zeroed()));
    SoftVmx::new(caps)
        .enable(caps, vmxon)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn region(caps: &VmxCapabilities) -> &'static mut VmcsRegion {
    let region = Box::leak(Box::new(VmcsRegion::zeroed()));
    region.init(caps.basic.revision_id(), false).unwrap();
    region
}

fn run(vmcs: &mut CurrentVmcs<'_, SoftVmx>, regs: &mut GuestRegisters) -> Result<(), RunError> {
    // SAFETY: a software processor: no host state is at stake.
    unsafe { vmcs.run(regs) }
}

#[test]
fn enable_and_disable_change_cr4_vmxe_only() {
    let caps = caps("tigerlake");
    let root = root(&caps);
    assert!(root.processor().in_vmx_operation());
    assert_eq!(root.processor().cr4(), SoftVmx::HOST_CR4 | Cr4::VMXE);
    assert_eq!(root.prior_state().cr4, SoftVmx::HOST_CR4);
    let (soft, _region) = root.disable().map_err(|(_, e)| e).unwrap();
    assert!(!soft.in_vmx_operation());
    assert_eq!(
        (soft.cr0(), soft.cr4()),
        (SoftVmx::HOST_CR0, SoftVmx::HOST_CR4)
    );
    assert_eq!((soft.counters().vmxon, soft.counters().vmxoff), (1, 1));
}

#[test]
fn launch_state_follows_the_sdm() {
    let caps = caps("tigerlake");
    let mut root = root(&caps);
    let region = region(&caps);
    let mut regs = GuestRegisters::new();
    let mut vmcs = region.load(&mut root, &identity).unwrap();
    let phys = vmcs.phys_addr();
    assert!(!vmcs.is_launched());
    run(&mut vmcs, &mut regs).unwrap();
    assert!(vmcs.is_launched());
    assert_eq!(vmcs.root().processor().launched(phys), Some(true));
    run(&mut vmcs, &mut regs).unwrap();
    run(&mut vmcs, &mut regs).unwrap();
    let counters = vmcs.root().processor().counters();
    assert_eq!((counters.vmlaunch, counters.vmresume), (1, 2));

    // VMCLEAR and VMPTRLD again: clear, so VMLAUNCH again (VMRESUME would be VMfail 5).
    let region = vmcs.clear().map_err(|(_, e)| e).unwrap();
    assert_eq!(root.processor().launched(phys), Some(false));
    assert_eq!(root.processor().current_vmcs(), None);
    let mut vmcs = region.load(&mut root, &identity).unwrap();
    assert!(!vmcs.is_launched());
    run(&mut vmcs, &mut regs).unwrap();
    let counters = vmcs.root().processor().counters();
    assert_eq!((counters.vmlaunch, counters.vmresume), (2, 2));
}

#[test]
fn an_entry_failure_leaves_the_launch_state_clear() {
    let caps = caps("corei7_skylake_x");
    let mut root = root(&caps);
    let mut regs = GuestRegisters::new();
    let mut vmcs = region(&caps).load(&mut root, &identity).unwrap();
    // VM-entry failure due to invalid guest state (basic reason 33, bit 31).
    vmcs.processor_mut().set_exit(SoftExit {
        reason: 0x8000_0021,
        qualification: 0,
        instruction_length: 0,
    });
    run(&mut vmcs, &mut regs).unwrap();
    assert!(!vmcs.is_launched());
    assert_eq!(vmcs.read_raw(EXIT_REASON), Ok(0x8000_0021));
    // The next attempt is VMLAUNCH again, which succeeds once the guest state is fixed.
    vmcs.processor_mut().set_exit(SoftExit::CPUID);
    run(&mut vmcs, &mut regs).unwrap();
    assert!(vmcs.is_launched());
    let counters = vmcs.root().processor().counters();
    assert_eq!((counters.vmlaunch, counters.vmresume), (2, 0));
}

#[test]
fn a_failed_exit_reason_read_after_vmlaunch_is_its_own_error_and_the_vmcs_is_launched() {
    let caps = caps("tigerlake");
    let mut root = root(&caps);
    let mut regs = GuestRegisters::new();
    let mut vmcs = region(&caps).load(&mut root, &identity).unwrap();
    vmcs.processor_mut()
        .fail_next_vmread(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent));
    assert_eq!(
        run(&mut vmcs, &mut regs),
        Err(RunError::ExitReasonRead(VmFail::Valid(
            VmInstructionError::UnsupportedVmcsComponent
        )))
    );
    assert!(vmcs.is_launched());
    assert_eq!(vmcs.read_raw(VM_INSTRUCTION_ERROR), Ok(12));
    // So the next entry is VMRESUME, which the processor accepts (VMLAUNCH would fail with 4).
    run(&mut vmcs, &mut regs).unwrap();
    let counters = vmcs.root().processor().counters();
    assert_eq!((counters.vmlaunch, counters.vmresume), (1, 1));
}

#[test]
fn a_vmfail_of_the_entry_is_reported_as_such_and_changes_nothing() {
    let caps = caps("tigerlake");
    let mut root = root(&caps);
    let mut regs = GuestRegisters::new();
    let mut vmcs = region(&caps).load(&mut root, &identity).unwrap();
    let phys = vmcs.phys_addr();
    run(&mut vmcs, &mut regs).unwrap();
    // VMLAUNCH of a launched VMCS and VMRESUME of a clear one, straight at the processor.
    let mut cache = vmcs.host_state_cache().clone();
    // SAFETY: a software processor.
    let launch = unsafe { vmcs.processor_mut().vm_entry(&mut regs, &mut cache, false) };
    assert_eq!(
        launch,
        Err(VmFail::Valid(VmInstructionError::VmlaunchNonClearVmcs))
    );
    assert_eq!(vmcs.read_raw(VM_INSTRUCTION_ERROR), Ok(4));
    let region = vmcs.clear().map_err(|(_, e)| e).unwrap();
    let mut vmcs = region.load(&mut root, &identity).unwrap();
    assert_eq!(vmcs.phys_addr(), phys);
    let mut cache = vmcs.host_state_cache().clone();
    // SAFETY: a software processor.
    let resume = unsafe { vmcs.processor_mut().vm_entry(&mut regs, &mut cache, true) };
    assert_eq!(
        resume,
        Err(VmFail::Valid(VmInstructionError::VmresumeNonLaunchedVmcs))
    );
    assert!(!vmcs.is_launched());
    assert_eq!(vmcs.read_raw(VM_INSTRUCTION_ERROR), Ok(5));
}

#[test]
fn host_state_cache_writes_once_and_again_after_a_write_of_host_rsp_or_host_rip() {
    let caps = caps("tigerlake");
    let mut root = root(&caps);
    let mut regs = GuestRegisters::new();
    let mut vmcs = region(&caps).load(&mut root, &identity).unwrap();
    assert_eq!(vmcs.host_state_cache().host_rsp(), None);
    run(&mut vmcs, &mut regs).unwrap();
    let rsp = SoftVmx::DEFAULT_HOST_RSP.get();
    assert_eq!(vmcs.host_state_cache().host_rsp(), Some(rsp));
    assert_eq!(vmcs.host_state_cache().writes(), 1);
    assert_eq!(vmcs.read_raw(HOST_RSP.encoding()), Ok(rsp));
    assert_eq!(vmcs.read_raw(HOST_RIP.encoding()), Ok(SoftVmx::EXIT_LABEL));
    let vmwrites = vmcs.root().processor().counters().vmwrite;
    for _ in 0..3 {
        run(&mut vmcs, &mut regs).unwrap();
    }
    assert_eq!(vmcs.root().processor().counters().vmwrite, vmwrites);
    assert_eq!(vmcs.host_state_cache().writes(), 1);

    // Another field: the cache stays.
    vmcs.write_raw(GUEST_RIP, 0x1000).unwrap();
    assert_eq!(vmcs.host_state_cache().host_rsp(), Some(rsp));
    // HOST_RSP written by the user: the cache empties and the next entry puts the trampoline's
    // values back.
    for field in [HOST_RSP.encoding(), HOST_RIP.encoding()] {
        let writes = vmcs.host_state_cache().writes();
        vmcs.write_raw(field, 0xdead_0000).unwrap();
        assert_eq!(vmcs.host_state_cache().host_rsp(), None);
        run(&mut vmcs, &mut regs).unwrap();
        assert_eq!(vmcs.host_state_cache().writes(), writes + 1);
        assert_eq!(vmcs.read_raw(HOST_RSP.encoding()), Ok(rsp));
        assert_eq!(vmcs.read_raw(HOST_RIP.encoding()), Ok(SoftVmx::EXIT_LABEL));
    }

    // An entry from another stack depth: written again, without any reset.
    let deeper = NonZeroU64::new(rsp - 0x100).unwrap();
    vmcs.processor_mut().set_host_rsp(deeper);
    run(&mut vmcs, &mut regs).unwrap();
    assert_eq!(vmcs.host_state_cache().writes(), 4);
    assert_eq!(vmcs.read_raw(HOST_RSP.encoding()), Ok(deeper.get()));

    // A VMCS loaded again starts with an empty cache.
    let region = vmcs.clear().map_err(|(_, e)| e).unwrap();
    let vmcs = region.load(&mut root, &identity).unwrap();
    assert_eq!(vmcs.host_state_cache().host_rsp(), None);
}

#[test]
fn vmread_and_vmwrite_follow_the_sdm() {
    let penryn = caps("core2_penryn_t9600"); // IA32_VMX_MISC[29] clear
    let tigerlake = caps("tigerlake"); // IA32_VMX_MISC[29] set
    assert!(!penryn.misc.vmwrite_any_field() && tigerlake.misc.vmwrite_any_field());

    let mut root = root(&penryn);
    let mut vmcs = region(&penryn).load(&mut root, &identity).unwrap();
    // 16-bit field (VPID 0x0000): truncated; 32-bit (pin-based controls 0x4000): truncated.
    vmcs.write_raw(0x0000, 0x1_2345).unwrap();
    assert_eq!(vmcs.read_raw(0x0000), Ok(0x2345));
    vmcs.write_raw(0x4000, 0x1_0000_0016).unwrap();
    assert_eq!(vmcs.read_raw(0x4000), Ok(0x16));
    // 64-bit field (EPT pointer 0x201a) and its high half (0x201b).
    vmcs.write_raw(0x201a, 0x1111_2222_3333_4444).unwrap();
    assert_eq!(vmcs.read_raw(0x201b), Ok(0x1111_2222));
    vmcs.write_raw(0x201b, 0x5555_6666).unwrap();
    assert_eq!(vmcs.read_raw(0x201a), Ok(0x5555_6666_3333_4444));
    // High access to a 32-bit field, a reserved bit: unsupported component (12).
    let unsupported = VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent);
    assert_eq!(vmcs.read_raw(0x4001), Err(unsupported));
    assert_eq!(vmcs.write_raw(0x1_4000, 0), Err(unsupported));
    assert_eq!(vmcs.read_raw(VM_INSTRUCTION_ERROR), Ok(12));
    // A VM-exit information field is read-only without IA32_VMX_MISC[29] (13).
    assert_eq!(
        vmcs.write_raw(EXIT_REASON, 1),
        Err(VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent))
    );
    drop(vmcs);
    let mut root = self::root(&tigerlake);
    let mut vmcs = region(&tigerlake).load(&mut root, &identity).unwrap();
    vmcs.write_raw(EXIT_REASON, 1).unwrap();
    assert_eq!(vmcs.read_raw(EXIT_REASON), Ok(1));
}

#[test]
fn without_a_current_vmcs_every_access_is_vmfail_invalid() {
    let caps = caps("tigerlake");
    let mut root = root(&caps);
    let region = region(&caps);
    let vmcs = region.load(&mut root, &identity).unwrap();
    let phys = vmcs.phys_addr();
    let region = vmcs.clear().map_err(|(_, e)| e).unwrap();
    let soft = root.processor_mut();
    assert_eq!(soft.current_vmcs(), None);
    // SAFETY: a software processor.
    unsafe {
        assert_eq!(soft.vmread(EXIT_REASON), Err(VmFail::Invalid));
        assert_eq!(soft.vmwrite(GUEST_RIP, 0), Err(VmFail::Invalid));
        let mut regs = GuestRegisters::new();
        let mut cache = vmx_core::HostStateCache::new();
        assert_eq!(
            soft.vm_entry(&mut regs, &mut cache, false),
            Err(VmFail::Invalid)
        );
        // VMPTRLD of the VMXON pointer (10), VMCLEAR of a misaligned address (2).
        let vmxon = root.vmxon_region_phys();
        let soft = root.processor_mut();
        assert_eq!(
            soft.vmptrld(vmxon),
            Err(VmFail::Invalid),
            "no current VMCS to hold error 10"
        );
        soft.vmptrld(phys).unwrap();
        assert_eq!(
            soft.vmptrld(vmxon),
            Err(VmFail::Valid(VmInstructionError::VmptrldVmxonPointer))
        );
        assert_eq!(
            soft.vmclear(phys + 8),
            Err(VmFail::Valid(VmInstructionError::VmclearInvalidAddress))
        );
        assert_eq!(
            soft.vmclear(vmxon),
            Err(VmFail::Valid(VmInstructionError::VmclearVmxonPointer))
        );
        soft.vmclear(phys).unwrap();
    }
    let _ = region;
}

#[test]
fn invalidations_reach_the_processor() {
    let caps = caps("tigerlake");
    let root = root(&caps);
    root.invept(InveptType::SingleContext, 0x1000 | 0x1e)
        .unwrap();
    assert_eq!(root.processor().counters().invept, 1);
}

#[test]
#[should_panic(expected = "#UD: VMREAD outside VMX operation")]
fn an_instruction_outside_vmx_operation_is_ud() {
    let soft = SoftVmx::new(&caps("tigerlake"));
    // SAFETY: a software processor; the broken contract (no VMX operation) panics.
    let _ = unsafe { soft.vmread(EXIT_REASON) };
}
