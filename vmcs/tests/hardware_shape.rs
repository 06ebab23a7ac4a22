//! The current VMCS behind the access traits: vmx-core's `CurrentVmcs` implements `VmcsRead` and
//! `VmcsWrite` for any processor, so handler code written against the traits runs on the
//! software processor here exactly as on the hardware, and writes of HOST_RSP/HOST_RIP through the
//! typed API empty the trampoline's host-state cache.

use vmcs::{VmcsRead, VmcsWrite, fields};
use vmx_caps::{MsrSnapshot, VmxCapabilities};
use vmx_core::{CurrentVmcs, GuestRegisters, SoftExit, SoftVmx, VmFail, VmcsRegion, VmxonRegion};

/// Code written against the access traits takes the current VMCS unchanged.
fn advance_rip<V: VmcsRead + VmcsWrite>(vmcs: &mut V) -> Result<(), VmFail> {
    let rip = vmcs.read(fields::GUEST_RIP)?;
    let length = vmcs.read(fields::VM_EXIT_INSTRUCTION_LENGTH)?;
    vmcs.write(fields::GUEST_RIP, rip + u64::from(length))
}

fn caps() -> VmxCapabilities {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../vmx-caps/testdata/tigerlake.msr"
    );
    let text = std::fs::read_to_string(path).unwrap();
    VmxCapabilities::read(&mut MsrSnapshot::parse(&text).unwrap()).unwrap()
}

fn run(vmcs: &mut CurrentVmcs<'_, SoftVmx>, regs: &mut GuestRegisters) {
    // SAFETY: a software processor: no host state is at stake.
    unsafe { vmcs.run(regs) }.unwrap();
}

#[test]
fn active_vmcs_is_a_typed_vmcs() {
    let caps = caps();
    let vmxon = Box::leak(Box::new(VmxonRegion::zeroed()));
    let mut root = SoftVmx::new(&caps)
        .enable(&caps, vmxon)
        .map_err(|(_, e)| e)
        .unwrap();
    let region = Box::leak(Box::new(VmcsRegion::zeroed()));
    region.init(caps.basic.revision_id(), false).unwrap();
    let mut vmcs = region
        .load(&mut root, &|p: *const u8| Some(p as u64))
        .unwrap();
    vmcs.write(fields::GUEST_RIP, 0x7c00).unwrap();
    vmcs.processor_mut().set_exit(SoftExit::CPUID);
    let mut regs = GuestRegisters::new();
    run(&mut vmcs, &mut regs);
    advance_rip(&mut vmcs).unwrap();
    assert_eq!(vmcs.read(fields::GUEST_RIP), Ok(0x7c02));
    assert_eq!(vmcs.host_state_cache().writes(), 1);
    // HOST_RSP through the typed API: the next entry writes the trampoline's values again.
    vmcs.write(fields::HOST_RSP, 0x1000).unwrap();
    assert_eq!(vmcs.host_state_cache().host_rsp(), None);
    run(&mut vmcs, &mut regs);
    assert_eq!(vmcs.host_state_cache().writes(), 2);
    assert_eq!(
        vmcs.read(fields::HOST_RSP),
        Ok(SoftVmx::DEFAULT_HOST_RSP.get())
    );
}
