//! Which VMCS12 fields L1 changed since L0 last took them (`L1VmxState::take_dirty`): what a
//! VMCS02 kept across L1's VMRESUMEs must be given. Under the virtual capabilities of Bochs
//! `tigerlake`.

use vmcs::nested::{
    DirtyFields, FlatGuestMemory, L1Context, L1VmxState, PointerOperand, SHADOWED_FIELDS,
    VmxOutcome, shadow_bitmaps, sync_to_shadow,
};
use vmcs::structures::ShadowBitmap;
use vmcs::{SoftVmcs, VmcsWrite, fields};
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{MsrSnapshot, VmxCapabilities};

const CX: L1Context = L1Context::long_mode_cpl0();

fn real() -> VmxCapabilities {
    let mut msrs =
        MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap()
}

/// L1 (the virtual capabilities of `tigerlake`) in VMX operation with a current VMCS at 2000H
/// (whose VMPTRLD made every field dirty), and L1's memory.
fn l1_with_vmcs() -> (L1VmxState, Vec<u8>) {
    let caps = VirtualPolicy::everything(1)
        .virtualize(&real())
        .unwrap()
        .caps;
    let mut memory = vec![0u8; 0x4000];
    let l1 = l1_in_vmx_operation(&caps, &mut memory);
    (l1, memory)
}

/// L1 with capabilities `caps` in VMX operation with a current VMCS at 2000H of `memory`.
fn l1_in_vmx_operation(caps: &VmxCapabilities, memory: &mut [u8]) -> L1VmxState {
    for at in [0x1000, 0x2000] {
        memory[at..at + 4].copy_from_slice(&caps.basic.revision_id().to_le_bytes());
    }
    let mut mem = FlatGuestMemory {
        base: 0,
        bytes: memory,
    };
    let mut l1 = L1VmxState::new(caps, 39).unwrap();
    let m = PointerOperand::Memory;
    assert_eq!(l1.vmxon(&CX, m(0x1000), &mut mem), VmxOutcome::Succeed(()));
    assert_eq!(
        l1.vmclear(&CX, m(0x2000), &mut mem),
        VmxOutcome::Succeed(())
    );
    assert_eq!(
        l1.vmptrld(&CX, m(0x2000), &mut mem),
        VmxOutcome::Succeed(())
    );
    l1
}

fn names(d: &DirtyFields) -> Vec<&'static str> {
    d.iter().map(|f| f.name).collect()
}

#[test]
fn vmptrld_makes_everything_dirty_and_taking_clears_it() {
    let (mut l1, _memory) = l1_with_vmcs();
    let all = l1.take_dirty();
    assert!(all.is_all() && !all.is_empty());
    assert!(all.contains(fields::EPT_POINTER.encoding()));
    assert_eq!(all.iter().count(), fields::COUNT);
    let none = l1.take_dirty();
    assert!(none.is_empty() && !none.is_all());
    assert_eq!(none.iter().count(), 0);
}

#[test]
fn vmwrite_marks_its_field_and_a_failed_one_marks_nothing() {
    let (mut l1, _memory) = l1_with_vmcs();
    let _ = l1.take_dirty();
    let rip = u64::from(fields::GUEST_RIP.encoding());
    assert_eq!(l1.vmwrite(&CX, rip, 0x40_1002), VmxOutcome::Succeed(()));
    // The high half of a 64-bit field marks the field.
    let link_high = u64::from(fields::VMCS_LINK_POINTER.high().encoding());
    assert_eq!(l1.vmwrite(&CX, link_high, 0), VmxOutcome::Succeed(()));
    // No such field: VMfail(12), nothing marked.
    assert!(matches!(
        l1.vmwrite(&CX, 0x7777, 1),
        VmxOutcome::VmFailValid(_)
    ));
    let dirty = l1.take_dirty();
    assert_eq!(names(&dirty), ["VMCS_LINK_POINTER", "GUEST_RIP"]);
    assert!(dirty.contains(fields::VMCS_LINK_POINTER.high().encoding()));
    assert!(!dirty.contains(fields::GUEST_RSP.encoding()));
    // L0's own change on L1's behalf.
    l1.mark_dirty(fields::EXCEPTION_BITMAP.encoding());
    assert_eq!(names(&l1.take_dirty()), ["EXCEPTION_BITMAP"]);
}

#[test]
fn the_shadow_sync_marks_only_the_fields_l1_changed_through_it() {
    let real = real();
    let caps = VirtualPolicy::everything(1).virtualize(&real).unwrap().caps;
    let mut memory = vec![0u8; 0x4000];
    let mut l1 = l1_in_vmx_operation(&caps, &mut memory);
    let mut r = Box::new(ShadowBitmap::pass_all());
    let mut w = Box::new(ShadowBitmap::pass_all());
    shadow_bitmaps(&SHADOWED_FIELDS, &caps, &real, &mut r, &mut w);
    l1.current_vmcs_mut()
        .unwrap()
        .write(fields::GUEST_RIP, 0x40_1000)
        .unwrap();
    let mut shadow = SoftVmcs::new(&real);
    sync_to_shadow(
        l1.current_vmcs().unwrap(),
        &mut shadow,
        &SHADOWED_FIELDS,
        &r,
    )
    .unwrap();
    let _ = l1.take_dirty();
    // Unchanged shadow: nothing is dirty.
    l1.sync_from_shadow(&shadow, &SHADOWED_FIELDS, &w).unwrap();
    assert!(l1.take_dirty().is_empty());
    // L1 advances RIP and rewrites RSP with its old value through the shadow (no exits).
    shadow.write(fields::GUEST_RIP, 0x40_1002).unwrap();
    shadow.write(fields::GUEST_RSP, 0).unwrap();
    l1.sync_from_shadow(&shadow, &SHADOWED_FIELDS, &w).unwrap();
    assert_eq!(names(&l1.take_dirty()), ["GUEST_RIP"]);
    assert_eq!(
        vmcs::VmcsRead::read(l1.current_vmcs().unwrap(), fields::GUEST_RIP).unwrap(),
        0x40_1002
    );
}
