//! VMCS shadowing for L1: with "VMCS shadowing" in the VMCS that runs L1 (VMCS01), L1's VMREAD
//! and VMWRITE of the fields the VMREAD/VMWRITE bitmaps pass go to a shadow VMCS without a VM
//! exit (SDM Vol. 3C, 26.1.3 and 25.10 "VMCS Types: Ordinary and Shadow"). L0 keeps VMCS12 and
//! the shadow VMCS consistent: [`sync_to_shadow`] after L0 changed VMCS12 (L1's VMPTRLD, an
//! exit reflected to L1, a VM-entry failure written) and before L1 runs; [`sync_from_shadow`]
//! before L0 reads VMCS12 on L1's behalf (VMLAUNCH, VMRESUME, VMCLEAR, VMPTRLD, VMXOFF).

use vmx_caps::VmxCapabilities;
use vmx_core::VmFail;

use crate::field::{FieldInfo, FieldWidth};
use crate::structures::ShadowBitmap;
use crate::{SoftVmcs, VmcsRead, VmcsWrite, fields};

/// The fields a guest hypervisor reads or writes around nearly every exit of its guest, which
/// L0 shadows by default: the exit information, the guest's RIP, RSP, RFLAGS, interruptibility
/// and control registers, the CR0/CR4 read shadows and the event-injection fields.
pub const SHADOWED_FIELDS: [u32; 24] = [
    fields::EXIT_REASON.encoding(),
    fields::EXIT_QUALIFICATION.encoding(),
    fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(),
    fields::VM_EXIT_INSTRUCTION_INFORMATION.encoding(),
    fields::VM_EXIT_INTERRUPTION_INFORMATION.encoding(),
    fields::VM_EXIT_INTERRUPTION_ERROR_CODE.encoding(),
    fields::IDT_VECTORING_INFORMATION.encoding(),
    fields::IDT_VECTORING_ERROR_CODE.encoding(),
    fields::GUEST_PHYSICAL_ADDRESS.encoding(),
    fields::GUEST_LINEAR_ADDRESS.encoding(),
    fields::VM_INSTRUCTION_ERROR.encoding(),
    fields::GUEST_RIP.encoding(),
    fields::GUEST_RSP.encoding(),
    fields::GUEST_RFLAGS.encoding(),
    fields::GUEST_INTERRUPTIBILITY_STATE.encoding(),
    fields::GUEST_CR0.encoding(),
    fields::GUEST_CR3.encoding(),
    fields::GUEST_CR4.encoding(),
    fields::CR0_READ_SHADOW.encoding(),
    fields::CR4_READ_SHADOW.encoding(),
    fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
    fields::VM_ENTRY_EXCEPTION_ERROR_CODE.encoding(),
    fields::VM_ENTRY_INSTRUCTION_LENGTH.encoding(),
    fields::TSC_OFFSET.encoding(),
];

fn info(encoding: u32) -> Option<&'static FieldInfo> {
    fields::ALL.iter().find(|f| f.encoding == encoding)
}

/// Fills the VMREAD and VMWRITE bitmaps of VMCS01 for `shadowed` (full encodings of
/// [`fields::ALL`]): everything exits but the shadowed fields both L1's VMCS12 (capabilities
/// `l1`) and the processor's shadow VMCS (capabilities `real`) have. VMREAD of a shadowed field
/// passes (with the high half of a 64-bit one) when L0 can write it into the shadow VMCS: every
/// field, or a read-only one only with `IA32_VMX_MISC[29]` on the processor. VMWRITE passes
/// for a writable field, and for a read-only one only when L1's capabilities and the
/// processor's both have `IA32_VMX_MISC[29]` (otherwise L1 must see VMfail(13), which only L0's
/// emulation gives).
pub fn shadow_bitmaps(
    shadowed: &[u32],
    l1: &VmxCapabilities,
    real: &VmxCapabilities,
    vmread: &mut ShadowBitmap,
    vmwrite: &mut ShadowBitmap,
) {
    vmread.fill(true);
    vmwrite.fill(true);
    let highest = l1
        .vmcs_enum
        .highest_index()
        .min(real.vmcs_enum.highest_index());
    let real_any = real.misc.vmwrite_any_field();
    let l1_any = l1.misc.vmwrite_any_field();
    for &encoding in shadowed {
        let Some(f) = info(encoding) else { continue };
        if f.index() > highest {
            continue;
        }
        let high = f.high_encoding();
        let pass = |bitmap: &mut ShadowBitmap| {
            // Encodings of the field table fit in 15 bits.
            let _ = bitmap.set_raw(u64::from(encoding), false);
            if let Some(h) = high {
                let _ = bitmap.set_raw(u64::from(h), false);
            }
        };
        if !f.read_only() || real_any {
            pass(vmread);
        }
        if !f.read_only() || (real_any && l1_any) {
            pass(vmwrite);
        }
    }
}

/// Copies every shadowed field L1 can read without an exit (`vmread` passes it) from VMCS12 to
/// the shadow VMCS (a field VMCS12 does not have is skipped). L0 calls it after it changed
/// VMCS12 (L1's VMPTRLD, an exit reflected to L1, a VM-entry failure or VMfailValid written)
/// and before L1 runs again.
///
/// # Errors
///
/// The [`VmFail`] of a VMWRITE into the shadow VMCS.
pub fn sync_to_shadow(
    vmcs12: &(impl VmcsRead + ?Sized),
    shadow: &mut (impl VmcsWrite + ?Sized),
    shadowed: &[u32],
    vmread: &ShadowBitmap,
) -> Result<(), VmFail> {
    for &encoding in shadowed {
        if vmread.exits_raw(u64::from(encoding)) {
            continue;
        }
        if let Ok(value) = vmcs12.read_raw(encoding) {
            shadow.write_raw(encoding, value)?;
        }
    }
    Ok(())
}

/// Copies every shadowed field L1 can write without an exit (`vmwrite` passes it) from the
/// shadow VMCS back into VMCS12. L0 calls it before it reads VMCS12 on L1's behalf (at L1's
/// VMLAUNCH, VMRESUME, VMCLEAR, VMPTRLD and VMXOFF, and at an intercepted VMREAD or VMWRITE).
///
/// # Errors
///
/// The [`VmFail`] of a VMREAD of the shadow VMCS or of a store into VMCS12.
pub fn sync_from_shadow(
    shadow: &(impl VmcsRead + ?Sized),
    vmcs12: &mut SoftVmcs,
    shadowed: &[u32],
    vmwrite: &ShadowBitmap,
) -> Result<(), VmFail> {
    sync_from_shadow_with(shadow, vmcs12, shadowed, vmwrite, |_| {})
}

/// [`sync_from_shadow`], calling `changed` with the encoding of each field whose value it
/// changed in VMCS12.
pub(super) fn sync_from_shadow_with(
    shadow: &(impl VmcsRead + ?Sized),
    vmcs12: &mut SoftVmcs,
    shadowed: &[u32],
    vmwrite: &ShadowBitmap,
    mut changed: impl FnMut(u32),
) -> Result<(), VmFail> {
    for &encoding in shadowed {
        if vmwrite.exits_raw(u64::from(encoding)) {
            continue;
        }
        let value = shadow.read_raw(encoding)? & FieldWidth::from_encoding(encoding).mask();
        if vmcs12.read_raw(encoding) != Ok(value) {
            vmcs12.store(encoding, value)?;
            changed(encoding);
        }
    }
    Ok(())
}
