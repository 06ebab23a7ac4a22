//! The compile-time shape of the hardware backend (it cannot run on the host: VMREAD and VMWRITE
//! need VMX root operation). The `compile_fail` doctests of `HardwareVmcs` check the negative
//! side: the borrowed `ActiveVmcs` is unusable while the handle lives, and the handle is not `Send`.

use vmcs::{HardwareVmcs, VmcsRead, VmcsWrite, fields};
use vmx_core::{ActiveVmcs, VmFail};

/// The handle borrows the `ActiveVmcs` for exactly its own lifetime `'a`, whatever the
/// `ActiveVmcs`'s lifetime (that of its VMX root token) is.
fn handle<'a, 'root>(active: &'a mut ActiveVmcs<'root>) -> HardwareVmcs<'a> {
    HardwareVmcs::from_active(active)
}

/// Code written against the access traits takes the hardware handle unchanged.
fn advance_rip<V: VmcsRead + VmcsWrite>(vmcs: &mut V) -> Result<(), VmFail> {
    let rip = vmcs.read(fields::GUEST_RIP)?;
    let length = vmcs.read(fields::VM_EXIT_INSTRUCTION_LENGTH)?;
    vmcs.write(fields::GUEST_RIP, rip + u64::from(length))
}

/// One handle per VM exit, then the `ActiveVmcs` is free again for the next entry.
fn exit_then_entry(active: &mut ActiveVmcs<'_>) -> Result<bool, VmFail> {
    advance_rip(&mut handle(active))?;
    Ok(active.is_launched())
}

#[test]
fn hardware_backend_has_the_borrowing_shape() {
    // Type-check the functions above without calling them (calling would execute VMREAD).
    let _: for<'a, 'r> fn(&'a mut ActiveVmcs<'r>) -> HardwareVmcs<'a> = handle;
    let _: fn(&mut HardwareVmcs<'static>) -> Result<(), VmFail> = advance_rip;
    let _: fn(&mut ActiveVmcs<'_>) -> Result<bool, VmFail> = exit_then_entry;
    // The handle is a reference-sized value: making one per exit is free.
    assert_eq!(
        core::mem::size_of::<HardwareVmcs<'static>>(),
        2 * core::mem::size_of::<usize>()
    );
}
