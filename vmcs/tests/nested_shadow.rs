//! VMCS shadowing for L1 (`shadow_bitmaps`, `sync_to_shadow`, `sync_from_shadow`) under the
//! capabilities of Bochs `tigerlake` (which has VMCS shadowing and IA32_VMX_MISC\[29\]) and
//! the virtual ones L0 shows L1.

use vmcs::nested::{SHADOWED_FIELDS, shadow_bitmaps, sync_from_shadow, sync_to_shadow};
use vmcs::structures::ShadowBitmap;
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::virt::{MISC_FLAGS, VirtualPolicy};
use vmx_caps::{MsrSnapshot, VmxCapabilities};

fn real() -> VmxCapabilities {
    let mut msrs =
        MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap()
}

fn bitmaps(l1: &VmxCapabilities) -> (Box<ShadowBitmap>, Box<ShadowBitmap>) {
    let mut r = Box::new(ShadowBitmap::pass_all());
    let mut w = Box::new(ShadowBitmap::pass_all());
    shadow_bitmaps(&SHADOWED_FIELDS, l1, &real(), &mut r, &mut w);
    (r, w)
}

#[test]
fn shadowed_fields_pass_and_everything_else_exits() {
    let real = real();
    assert!(real.misc.vmwrite_any_field());
    let l1 = VirtualPolicy::everything(1).virtualize(&real).unwrap().caps;
    let (r, w) = bitmaps(&l1);
    assert!(!r.exits(fields::GUEST_RIP) && !w.exits(fields::GUEST_RIP));
    // A 64-bit field: its high half too.
    assert!(!r.exits(fields::GUEST_PHYSICAL_ADDRESS));
    assert!(!r.exits(fields::GUEST_PHYSICAL_ADDRESS.high()));
    // Read-only fields: VMWRITE passes only where L1 may VMWRITE them (MISC[29] here).
    assert!(!r.exits(fields::EXIT_REASON) && !w.exits(fields::EXIT_REASON));
    // Not shadowed: exits.
    assert!(r.exits(fields::EPT_POINTER) && w.exits(fields::EPT_POINTER));
    assert!(r.exits(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS));

    // L1 without "VMWRITE to any field": VMWRITE of a read-only field must fail with error 13,
    // which only L0's emulation gives, so it exits.
    let mut policy = VirtualPolicy::everything(1);
    policy.misc_flags = MISC_FLAGS & !(1 << 29);
    let strict = policy.virtualize(&real).unwrap().caps;
    let (r, w) = bitmaps(&strict);
    assert!(!r.exits(fields::EXIT_REASON) && w.exits(fields::EXIT_REASON));
    assert!(!w.exits(fields::GUEST_RIP));

    // A VMCS12 format with fewer fields: those above its highest index exit.
    let mut policy = VirtualPolicy::everything(1);
    policy.vmcs_highest_index = 0x10;
    let small = policy.virtualize(&real).unwrap().caps;
    let (r, _) = bitmaps(&small);
    // Index = encoding bits 9:1: GUEST_INTERRUPTIBILITY_STATE (4824H) is 12H, GUEST_RIP
    // (681EH) 0FH.
    assert!(r.exits(fields::GUEST_INTERRUPTIBILITY_STATE));
    assert!(!r.exits(fields::GUEST_RIP));
}

#[test]
fn vmcs12_and_the_shadow_stay_consistent_across_both_syncs() {
    let real = real();
    let mut policy = VirtualPolicy::everything(1);
    policy.misc_flags = MISC_FLAGS & !(1 << 29);
    let l1 = policy.virtualize(&real).unwrap().caps;
    let (r, w) = bitmaps(&l1);
    let mut vmcs12 = SoftVmcs::new(&l1);
    vmcs12.write(fields::GUEST_RIP, 0x40_1000).unwrap();
    vmcs12.store(fields::EXIT_REASON.encoding(), 10).unwrap();
    vmcs12.write(fields::EPT_POINTER.high(), 0).unwrap();
    let mut shadow = SoftVmcs::new(&real);
    sync_to_shadow(&vmcs12, &mut shadow, &SHADOWED_FIELDS, &r).unwrap();
    // L1 reads through the shadow what L0 wrote into VMCS12.
    assert_eq!(shadow.read(fields::GUEST_RIP).unwrap(), 0x40_1000);
    assert_eq!(shadow.read(fields::EXIT_REASON).unwrap(), 10);
    // L1 advances RIP through the shadow (no exit) and then executes VMRESUME: L0 syncs back.
    shadow.write(fields::GUEST_RIP, 0x40_1002).unwrap();
    // A read-only field changed in the shadow (only L0 could) is not taken back, as L1 cannot
    // VMWRITE it.
    shadow.store(fields::EXIT_REASON.encoding(), 99).unwrap();
    sync_from_shadow(&shadow, &mut vmcs12, &SHADOWED_FIELDS, &w).unwrap();
    assert_eq!(vmcs12.read(fields::GUEST_RIP).unwrap(), 0x40_1002);
    assert_eq!(vmcs12.read(fields::EXIT_REASON).unwrap(), 10);
}
