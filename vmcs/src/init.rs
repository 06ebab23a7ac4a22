//! INIT and SIPI for a vCPU: the guest state the INIT signal leaves (SDM Vol. 3A §10.1.1,
//! Table 10-1 "IA-32 and Intel 64 Processor States Following Power-up, Reset, or INIT"), the
//! wait-for-SIPI activity state an application processor waits in (SDM Vol. 3C §25.4.2 "Guest
//! Non-Register State"), and the start at the SIPI vector's real-mode address (SDM Vol. 3A
//! §10.4.4 "MP Initialization Example": a SIPI with vector `VV` starts the processor at
//! `VV000h`, CS selector `VV00h`, IP 0).
//!
//! In VMX non-root operation INIT and SIPI cause VM exits (basic exit reasons 3 and 4, the SIPI
//! vector in the exit qualification); the hypervisor then emulates them with [`apply_init`] and
//! [`apply_sipi`].
//!
//! ```
//! use vmcs::init::{ProcessorRole, SipiOutcome, apply_init, apply_sipi};
//! use vmcs::{ActivityState, GuestSegment, SoftVmcs, VmcsRead, VmcsWrite, fields};
//! use vmx_caps::{MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};
//! use vmx_core::{GpReg, GuestRegisters};
//!
//! let mut msrs = MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
//! let caps = VmxCapabilities::read(&mut msrs).unwrap();
//! let mut vmcs = SoftVmcs::new(&caps);
//! vmcs.write(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)?;
//! vmcs.write(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, SecondaryControls::UNRESTRICTED_GUEST | SecondaryControls::ENABLE_EPT)?;
//! // The hypervisor owns every CR0/CR4 bit whose guest value differs from what the guest sees.
//! vmcs.write(fields::CR0_GUEST_HOST_MASK, vmcs::Cr0::all())?;
//! vmcs.write(fields::CR4_GUEST_HOST_MASK, vmcs::Cr4::all())?;
//! let mut regs = GuestRegisters::new();
//!
//! // INIT exit on an application processor: post-INIT state, waiting for SIPI.
//! let state = apply_init(&mut vmcs, &mut regs, &caps, ProcessorRole::Application, 0x806c1).unwrap();
//! assert_eq!(state, ActivityState::WaitForSipi);
//! assert_eq!(regs.gpr(GpReg::Rdx), Some(0x806c1));
//! // SIPI exit with vector 0x9a: real mode at 9A000h.
//! assert_eq!(apply_sipi(&mut vmcs, 0x9a)?, SipiOutcome::Started);
//! let cs = vmcs.read_guest_segment(GuestSegment::Cs)?;
//! assert_eq!((cs.selector, cs.base, vmcs.read(fields::GUEST_RIP)?), (0x9a00, 0x9a000, 0));
//! // The second SIPI of INIT-SIPI-SIPI finds the processor running: ignored.
//! assert_eq!(apply_sipi(&mut vmcs, 0x9a)?, SipiOutcome::Ignored);
//! # Ok::<(), vmx_core::VmFail>(())
//! ```

use core::fmt;

use vmx_caps::arch::{Cr0, Cr4, DebugCtl, Dr7, Efer, Rflags};
use vmx_caps::{CrUse, EntryControls, PrimaryControls, SecondaryControls, VmxCapabilities};
use vmx_core::{GpReg, GuestRegisters, VmFail};

use crate::access::{VmcsRead, VmcsWrite};
use crate::fields;
use crate::segment::{DescriptorTable, GuestDescriptorTable, GuestSegment, Segment};
use crate::{
    ActivityState, InterruptibilityState, InterruptionInfo, PendingDebugExceptions,
    SegmentAccessRights,
};

/// RIP after INIT (the reset vector's offset in the CS segment at FFFF0000h).
const RIP_INIT: u64 = 0xfff0;
/// The limit of every segment and of GDTR/IDTR after INIT.
const LIMIT_INIT: u32 = 0xffff;

/// Which processor the INIT reached: after INIT the bootstrap processor starts at the reset
/// vector, an application processor waits for a SIPI (SDM Vol. 3A §10.4 "Multiple-Processor
/// (MP) Initialization").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessorRole {
    /// The bootstrap processor: active, at F000:FFF0.
    Bootstrap,
    /// An application processor: in the wait-for-SIPI activity state.
    Application,
}

/// Why [`apply_init`] refused: the VMCS could not hold the post-INIT state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The post-INIT state is real mode (CR0.PE = CR0.PG = 0): VM entry needs the "unrestricted
    /// guest" VM-execution control for it.
    #[error("the post-INIT state is real mode: the \"unrestricted guest\" control must be 1")]
    UnrestrictedGuestOff,
    /// The processor does not support the wait-for-SIPI activity state (IA32_VMX_MISC bit 8).
    #[error("the wait-for-SIPI activity state is not supported (IA32_VMX_MISC[8] is 0)")]
    WaitForSipiUnsupported,
    /// VMX forces CR0 or CR4 bits that differ from the post-INIT values, and the guest/host mask
    /// does not cover them, so the guest would read the forced values.
    #[error(
        "{register} bits {bits:#x} are forced by VMX but not in the {register} guest/host mask"
    )]
    MaskMissing {
        /// `"CR0"` or `"CR4"`.
        register: &'static str,
        /// The uncovered bits.
        bits: u64,
    },
    /// A VMREAD or VMWRITE failed.
    #[error(transparent)]
    Vmcs(#[from] VmFail),
}

/// What [`apply_sipi`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipiOutcome {
    /// The vCPU was waiting for SIPI and now starts at the vector's address.
    Started,
    /// The vCPU was not waiting for SIPI: the SIPI is discarded, as the processor does.
    Ignored,
}

impl fmt::Display for SipiOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Started => "started",
            Self::Ignored => "ignored (not waiting for SIPI)",
        })
    }
}

/// A real-mode segment with the post-INIT limit.
const fn real_mode(selector: u16, base: u64, access_rights: SegmentAccessRights) -> Segment {
    Segment {
        selector,
        base,
        limit: LIMIT_INIT,
        access_rights,
    }
}

/// Puts the vCPU of the current VMCS into the state the INIT signal leaves: the guest-state
/// area (control, segment and descriptor-table registers, RIP, RSP, RFLAGS, DR7,
/// IA32_DEBUGCTL, IA32_EFER, no event pending or blocking), the "IA-32e mode guest" VM-entry
/// control cleared, the CR0/CR4 read shadows, and `regs` (every GPR 0 but EDX, which holds the
/// processor signature `processor_signature` (CPUID.1:EAX); CR2 = 0). Returns the activity
/// state written: active at F000:FFF0 for the bootstrap processor, wait-for-SIPI for an
/// application processor.
///
/// INIT keeps CR0.CD and CR0.NW (as the guest sees them), the x87/SSE state, IA32_PAT, the
/// MTRRs and XCR0; so does this function. DR0-DR3 and DR6 are not in the VMCS: the caller
/// loads 0 and FFFF0FF0h into them before the next VM entry if it virtualizes them.
///
/// VMX requires some CR0/CR4 bits in the guest (IA32_VMX_CR0_FIXED0/CR4_FIXED0, e.g. CR0.NE
/// and CR4.VMXE): the guest registers get them, the read shadows the post-INIT values, and the
/// guest/host masks must already cover every such bit ([`InitError::MaskMissing`]).
pub fn apply_init<V: VmcsWrite + ?Sized>(
    vmcs: &mut V,
    regs: &mut GuestRegisters,
    caps: &VmxCapabilities,
    role: ProcessorRole,
    processor_signature: u32,
) -> Result<ActivityState, InitError> {
    let primary = vmcs.read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?;
    let unrestricted = primary.contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
        && vmcs
            .read(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?
            .contains(SecondaryControls::UNRESTRICTED_GUEST);
    if !unrestricted {
        return Err(InitError::UnrestrictedGuestOff);
    }
    let activity = match role {
        ProcessorRole::Bootstrap => ActivityState::Active,
        ProcessorRole::Application if caps.misc.activity_wait_for_sipi() => {
            ActivityState::WaitForSipi
        }
        ProcessorRole::Application => return Err(InitError::WaitForSipiUnsupported),
    };

    // CR0 as the guest sees it keeps CD and NW; ET is set; everything else is 0.
    let cr0_mask = vmcs.read(fields::CR0_GUEST_HOST_MASK)?;
    let seen = (vmcs.read(fields::GUEST_CR0)? - cr0_mask)
        | (vmcs.read(fields::CR0_READ_SHADOW)? & cr0_mask);
    let cr0 = (seen & (Cr0::NW | Cr0::CD)) | Cr0::ET;
    let guest_cr0 = caps
        .cr0_fixed_bits(CrUse::Guest {
            unrestricted_guest: true,
        })
        .apply(cr0);
    let guest_cr4 = caps.cr4_fixed_bits().apply(Cr4::RESET);
    let cr4_mask = vmcs.read(fields::CR4_GUEST_HOST_MASK)?;
    for (register, forced, mask) in [
        ("CR0", (guest_cr0 ^ cr0).bits(), cr0_mask.bits()),
        ("CR4", (guest_cr4 ^ Cr4::RESET).bits(), cr4_mask.bits()),
    ] {
        if forced & !mask != 0 {
            return Err(InitError::MaskMissing {
                register,
                bits: forced & !mask,
            });
        }
    }

    vmcs.write(fields::GUEST_CR0, guest_cr0)?;
    vmcs.write(fields::CR0_READ_SHADOW, cr0)?;
    vmcs.write(fields::GUEST_CR4, guest_cr4)?;
    vmcs.write(fields::CR4_READ_SHADOW, Cr4::RESET)?;
    vmcs.write(fields::GUEST_CR3, 0)?;
    vmcs.write(fields::GUEST_DR7, Dr7::RESET)?;
    vmcs.write(fields::GUEST_RSP, 0)?;
    vmcs.write(fields::GUEST_RIP, RIP_INIT)?;
    vmcs.write(fields::GUEST_RFLAGS, Rflags::RESET)?;
    vmcs.write(fields::GUEST_IA32_DEBUGCTL, DebugCtl::empty())?;

    vmcs.write_guest_segment(
        GuestSegment::Cs,
        real_mode(0xf000, 0xffff_0000, SegmentAccessRights::CODE_16),
    )?;
    for seg in [
        GuestSegment::Ss,
        GuestSegment::Ds,
        GuestSegment::Es,
        GuestSegment::Fs,
        GuestSegment::Gs,
    ] {
        vmcs.write_guest_segment(seg, real_mode(0, 0, SegmentAccessRights::DATA_16))?;
    }
    vmcs.write_guest_segment(
        GuestSegment::Ldtr,
        real_mode(0, 0, SegmentAccessRights::LDT),
    )?;
    vmcs.write_guest_segment(
        GuestSegment::Tr,
        real_mode(0, 0, SegmentAccessRights::TSS_BUSY),
    )?;
    for table in GuestDescriptorTable::ALL {
        let value = DescriptorTable {
            base: 0,
            limit: LIMIT_INIT,
        };
        vmcs.write_guest_descriptor_table(table, value)?;
    }

    // IA32_EFER = 0: not in IA-32e mode; through the guest field where VM entry loads it.
    let entry = vmcs.read(fields::VM_ENTRY_CONTROLS)?;
    vmcs.write(
        fields::VM_ENTRY_CONTROLS,
        entry - EntryControls::IA32E_MODE_GUEST,
    )?;
    if entry.contains(EntryControls::LOAD_IA32_EFER) {
        vmcs.write(fields::GUEST_IA32_EFER, Efer::RESET)?;
    }
    vmcs.write(
        fields::GUEST_INTERRUPTIBILITY_STATE,
        InterruptibilityState::empty(),
    )?;
    vmcs.write(
        fields::GUEST_PENDING_DEBUG_EXCEPTIONS,
        PendingDebugExceptions::empty(),
    )?;
    vmcs.write(
        fields::VM_ENTRY_INTERRUPTION_INFORMATION,
        InterruptionInfo::NONE,
    )?;
    vmcs.write(fields::GUEST_ACTIVITY_STATE, activity)?;

    for reg in GpReg::ALL {
        if let Some(r) = regs.gpr_mut(reg) {
            *r = 0;
        }
    }
    if let Some(rdx) = regs.gpr_mut(GpReg::Rdx) {
        *rdx = u64::from(processor_signature);
    }
    regs.cr2 = 0;
    Ok(activity)
}

/// A SIPI with vector `vector` for the vCPU of the current VMCS: if it is in the
/// wait-for-SIPI activity state, it becomes active in real mode at `vector << 12` (CS selector
/// `vector << 8`, CS base `vector << 12`, RIP 0), the rest of the state as INIT left it;
/// otherwise the SIPI is ignored, as the processor ignores a SIPI it is not waiting for (the
/// second SIPI of the INIT-SIPI-SIPI sequence).
pub fn apply_sipi<V: VmcsWrite + ?Sized>(vmcs: &mut V, vector: u8) -> Result<SipiOutcome, VmFail> {
    if vmcs.read(fields::GUEST_ACTIVITY_STATE)? != ActivityState::WaitForSipi {
        return Ok(SipiOutcome::Ignored);
    }
    let v = u64::from(vector);
    let cs = real_mode((v << 8) as u16, v << 12, SegmentAccessRights::CODE_16);
    vmcs.write_guest_segment(GuestSegment::Cs, cs)?;
    vmcs.write(fields::GUEST_RIP, 0)?;
    vmcs.write(fields::GUEST_ACTIVITY_STATE, ActivityState::Active)?;
    Ok(SipiOutcome::Started)
}
