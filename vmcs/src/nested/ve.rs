//! Virtualization exceptions for L2, emulated by L0: an EPT violation EPT12 causes becomes a
//! #VE in L2 instead of an exit to L1 where L1's processor would convert it (SDM Vol. 3C, 26.5.7
//! "Virtualization Exceptions": 26.5.7.1 "Convertible EPT Violations", 26.5.7.2
//! "Virtualization-Exception Information", 26.5.7.3 "Delivery of Virtualization Exceptions").
//!
//! VMCS02 never has "EPT-violation #VE" (the information area's address in VMCS12 is
//! L1-physical, and EPT02's violations are mostly L0's fills): every EPT violation of L2 exits
//! to L0, which walks EPT12 ([`super::resolve_ept_violation`]); one that EPT12 causes is offered
//! to [`deliver_ve`] before it is reflected.

use vmx_caps::SecondaryControls;
use vmx_core::VmFail;

use super::{Ept12Exit, GuestMemory, Vmcs02};
use crate::{VmcsRead, VmcsWrite, fields};

/// Basic exit reason 48, EPT violation.
const EPT_VIOLATION: u32 = 48;
/// Vector 20, #VE.
const VE_VECTOR: u64 = 20;
/// VM-entry interruption information: valid (bit 31), type 3 (hardware exception, bits 10:8),
/// no error code (bit 11 clear).
const VALID_HARDWARE_EXCEPTION: u64 = (1 << 31) | (3 << 8);
/// What a delivery writes at offset 4 of the information area (and what makes it busy).
const BUSY: u32 = 0xffff_ffff;
/// Exit-qualification bit 7: the guest-linear address field is valid.
const LINEAR_VALID: u64 = 1 << 7;
/// Exit-qualification bit 12: NMI unblocking due to IRET.
const NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;
/// Guest interruptibility state bit 3: blocking by NMI.
const BLOCKING_BY_NMI: u64 = 1 << 3;
/// IDT-vectoring information bit 31: the exit happened during event delivery.
const IDT_VECTORING_VALID: u64 = 1 << 31;
/// CR0.PE.
const CR0_PE: u64 = 1;

/// What [`deliver_ve`] did with an EPT violation of EPT12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VeDelivery {
    /// Converted: the information area in L1's memory holds the violation and is busy, and
    /// VMCS02's VM-entry interruption information injects #VE (vector 20, hardware exception,
    /// no error code). L0 resumes L2 (or, where VMCS12's exception bitmap intercepts #VE, turns
    /// the injection into L1's exit, SDM 26.5.7.3).
    Delivered,
    /// Not convertible, or not converted: the violation goes to L1 as a VM exit.
    Exit,
}

/// Whether the EPT violation `exit` (EPT12's, from [`super::resolve_ept_violation`]) of L2 is a
/// #VE on L1's processor, and if so delivers it: writes the virtualization-exception
/// information area in L1's memory `mem` and injects #VE through `vmcs02` (the VMCS that ran
/// L2, current, holding the exit; `built` is what [`super::build_vmcs02`] made of it).
///
/// A violation is converted when (SDM 26.5.7.1) VMCS12 has "EPT-violation #VE", the EPT12 entry
/// that decides has suppress #VE (bit 63) clear ([`Ept12Exit::suppress_ve`]), L2's CR0.PE is 1,
/// the violation did not happen while an event was delivered through the IDT (VMCS02's
/// IDT-vectoring information not valid), and the 32 bits at offset 4 of the information area
/// (VMCS12's "virtualization-exception information address", L1-physical) are 0; an area
/// outside L1's memory reads as all ones, so it is never converted. Misconfigurations are never
/// converted.
///
/// The area gets (26.5.7.2, Table 26-1 "Format of the Virtualization-Exception Information
/// Area"): the exit reason 48 at byte 0, FFFFFFFFH at 4 (busy until L2 clears it), the exit
/// qualification L1 would have seen at 8, the guest-linear address at 16 (where the
/// qualification says it is valid, else 0), the guest-physical address at 24 and VMCS12's EPTP
/// index at 32 (16 bits). Where the violating instruction was an IRET that unblocked NMIs
/// (qualification bit 12), L2's blocking by NMI is set again in VMCS02, as the instruction did
/// not complete.
///
/// # Errors
///
/// [`VmFail`] when a field of VMCS12 or VMCS02 cannot be read or written.
pub fn deliver_ve<V12, V02, M>(
    exit: &Ept12Exit,
    vmcs12: &V12,
    vmcs02: &mut V02,
    built: &Vmcs02,
    mem: &mut M,
) -> Result<VeDelivery, VmFail>
where
    V12: VmcsRead + ?Sized,
    V02: VmcsRead + VmcsWrite + ?Sized,
    M: GuestMemory + ?Sized,
{
    if exit.reason != EPT_VIOLATION || exit.suppress_ve {
        return Ok(VeDelivery::Exit);
    }
    let proc2 = vmcs12.read_controls()?.proc2;
    if !proc2.contains(SecondaryControls::EPT_VIOLATION_VE) {
        return Ok(VeDelivery::Exit);
    }
    // L2's CR0: VMCS02's, but for the bits only L0 owns, whose L2 value is the read shadow's.
    let cr0 = vmcs02.read_raw(fields::GUEST_CR0.encoding())?;
    let pe = if built.cr0_l0_only & CR0_PE != 0 {
        vmcs02.read_raw(fields::CR0_READ_SHADOW.encoding())? & CR0_PE
    } else {
        cr0 & CR0_PE
    };
    if pe == 0 {
        return Ok(VeDelivery::Exit);
    }
    if vmcs02.read_raw(fields::IDT_VECTORING_INFORMATION.encoding())? & IDT_VECTORING_VALID != 0 {
        return Ok(VeDelivery::Exit);
    }
    let area = vmcs12.read_raw(fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS.encoding())?;
    let mut busy = [0xffu8; 4];
    if mem.read(area.wrapping_add(4), &mut busy).is_err() || u32::from_le_bytes(busy) != 0 {
        return Ok(VeDelivery::Exit);
    }

    let linear = if exit.qualification & LINEAR_VALID != 0 {
        vmcs02.read_raw(fields::GUEST_LINEAR_ADDRESS.encoding())?
    } else {
        0
    };
    let index = vmcs12.read_raw(fields::EPTP_INDEX.encoding())? as u16;
    let mut info = [0u8; 34];
    info[0..4].copy_from_slice(&EPT_VIOLATION.to_le_bytes());
    info[4..8].copy_from_slice(&BUSY.to_le_bytes());
    info[8..16].copy_from_slice(&exit.qualification.to_le_bytes());
    info[16..24].copy_from_slice(&linear.to_le_bytes());
    info[24..32].copy_from_slice(&exit.guest_physical.to_le_bytes());
    info[32..34].copy_from_slice(&index.to_le_bytes());
    // The area was readable, so it is L1's memory; a refused write is dropped as to unbacked
    // memory.
    let _ = mem.write(area, &info);

    vmcs02.write_raw(
        fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding(),
        VALID_HARDWARE_EXCEPTION | VE_VECTOR,
    )?;
    if exit.qualification & NMI_UNBLOCKED_BY_IRET != 0 {
        let state = fields::GUEST_INTERRUPTIBILITY_STATE.encoding();
        let value = vmcs02.read_raw(state)?;
        vmcs02.write_raw(state, value | BLOCKING_BY_NMI)?;
    }
    Ok(VeDelivery::Delivered)
}
