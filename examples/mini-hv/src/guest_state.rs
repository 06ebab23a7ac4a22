//! What the two guests (the kernel's test guest and its Linux guest) share: the CR0/CR4 ownership
//! policy, the guest-state fields both start with, and the exit-handling steps that are the same for
//! both (advancing RIP, injecting an exception, MOV to CR0/CR4, XSETBV validation).

use exits::VmExit;
use vmcs::{
    ActivityState, EntryInterruptionInfo, GuestSegment, InterruptibilityState, InterruptionType,
    Segment, VmcsWrite, fields,
};
use vmx_caps::{EntryControls, FixedBits};
use vmx_core::{GuestRegisters, VmFail};

/// CR0.PE (protection enable).
pub const CR0_PE: u64 = 1 << 0;
/// CR0.NW (not write-through).
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD (cache disable).
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG (paging).
pub const CR0_PG: u64 = 1 << 31;
/// CR4.VMXE (VMX enable).
pub const CR4_VMXE: u64 = 1 << 13;
const CR4_OSXSAVE: u64 = 1 << 18;
/// IA32_EFER.LME (IA-32e mode enable).
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA (IA-32e mode active).
pub const EFER_LMA: u64 = 1 << 10;

/// The CR0 and CR4 fixed bits (IA32_VMX_CR0_FIXED0/1, IA32_VMX_CR4_FIXED0/1) that decide which
/// control-register bits the host owns.
#[derive(Clone, Copy)]
pub struct CrPolicy {
    /// IA32_VMX_CR0_FIXED0 and IA32_VMX_CR0_FIXED1.
    pub cr0_fixed: FixedBits,
    /// IA32_VMX_CR4_FIXED0 and IA32_VMX_CR4_FIXED1.
    pub cr4_fixed: FixedBits,
}

impl CrPolicy {
    /// The mask of CR0 bits the host owns: CD and NW (the host keeps caching on) and the bits
    /// IA32_VMX_CR0_FIXED0/1 fix, except PE and PG, which unrestricted guest frees.
    pub fn cr0_mask(self) -> u64 {
        let f = self.cr0_fixed;
        ((f.must_be_one() | (f.must_be_zero() & 0xffff_ffff)) & !(CR0_PE | CR0_PG))
            | CR0_CD
            | CR0_NW
    }

    /// The mask of CR4 bits the host owns: VMXE and every bit IA32_VMX_CR4_FIXED0/1 fix.
    pub fn cr4_mask(self) -> u64 {
        let f = self.cr4_fixed;
        f.must_be_one() | (f.must_be_zero() & 0xffff_ffff) | CR4_VMXE
    }

    /// The CR0 the processor runs the guest with, for the CR0 value the guest believes it has.
    pub fn real_cr0(self, guest: u64) -> u64 {
        let f = self.cr0_fixed;
        let must_be_one = f.must_be_one() & !(CR0_PE | CR0_PG);
        ((guest | must_be_one) & f.fixed1) & !(CR0_CD | CR0_NW)
    }

    /// Writes the guest-state fields both guests start with: CR0 (`cr0` as the guest sees it) and
    /// CR4 (0 as the guest sees it) with their masks and shadows, CR3 0, DR7 0x400, RSP 0, RIP
    /// `rip`, RFLAGS 0x2, IA32_EFER/DEBUGCTL/SYSENTER_* 0, no pending debug exceptions, no
    /// blocking, no VMCS link, active.
    pub fn write_initial_state(
        self,
        vmcs: &mut impl VmcsWrite,
        cr0: u64,
        rip: u64,
    ) -> Result<(), VmFail> {
        vmcs.write(fields::CR0_GUEST_HOST_MASK, self.cr0_mask())?;
        vmcs.write(fields::CR0_READ_SHADOW, cr0)?;
        vmcs.write(fields::GUEST_CR0, self.real_cr0(cr0))?;
        vmcs.write(fields::CR4_GUEST_HOST_MASK, self.cr4_mask())?;
        vmcs.write(fields::CR4_READ_SHADOW, 0)?;
        vmcs.write(fields::GUEST_CR4, self.cr4_fixed.must_be_one())?;
        vmcs.write(fields::GUEST_CR3, 0)?;
        vmcs.write(fields::GUEST_DR7, 0x400)?;
        vmcs.write(fields::GUEST_RSP, 0)?;
        vmcs.write(fields::GUEST_RIP, rip)?;
        vmcs.write(fields::GUEST_RFLAGS, 0x2)?;
        vmcs.write(fields::GUEST_IA32_EFER, 0)?;
        vmcs.write(fields::GUEST_IA32_DEBUGCTL, 0)?;
        vmcs.write(fields::GUEST_IA32_SYSENTER_CS, 0)?;
        vmcs.write(fields::GUEST_IA32_SYSENTER_ESP, 0)?;
        vmcs.write(fields::GUEST_IA32_SYSENTER_EIP, 0)?;
        vmcs.write(fields::GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
        vmcs.write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            InterruptibilityState::empty(),
        )?;
        vmcs.write(fields::VMCS_LINK_POINTER, u64::MAX)?;
        vmcs.write(fields::GUEST_ACTIVITY_STATE, ActivityState::Active)
    }

    /// MOV to CR0 of `value`: `false` when it must raise #GP (bits 63:32 set, PG without PE, NW
    /// without CD). Otherwise updates the shadow and the real CR0, and when PG changes,
    /// IA32_EFER.LMA and the "IA-32e mode guest" entry control follow CR0.PG if EFER.LME is set
    /// (SDM Vol. 3A, 11.8.5).
    pub fn mov_to_cr0(self, vmcs: &mut impl VmcsWrite, value: u64) -> Result<bool, VmFail> {
        if value >> 32 != 0
            || (value & CR0_PG != 0 && value & CR0_PE == 0)
            || (value & CR0_NW != 0 && value & CR0_CD == 0)
        {
            return Ok(false);
        }
        let old = vmcs.read(fields::GUEST_CR0)?;
        if (old ^ value) & CR0_PG != 0 {
            let efer = vmcs.read(fields::GUEST_IA32_EFER)?;
            let lma = value & CR0_PG != 0 && efer & EFER_LME != 0;
            let efer = if lma {
                efer | EFER_LMA
            } else {
                efer & !EFER_LMA
            };
            vmcs.write(fields::GUEST_IA32_EFER, efer)?;
            vmcs.modify(fields::VM_ENTRY_CONTROLS, |c| {
                if lma {
                    c | EntryControls::IA32E_MODE_GUEST
                } else {
                    c - EntryControls::IA32E_MODE_GUEST
                }
            })?;
        }
        vmcs.write(fields::CR0_READ_SHADOW, value)?;
        vmcs.write(fields::GUEST_CR0, self.real_cr0(value))?;
        Ok(true)
    }

    /// MOV to CR4 of `value`: `false` when it must raise #GP (VMXE, or a bit IA32_VMX_CR4_FIXED1
    /// does not allow); otherwise updates the shadow and the real CR4.
    pub fn mov_to_cr4(self, vmcs: &mut impl VmcsWrite, value: u64) -> Result<bool, VmFail> {
        let f = self.cr4_fixed;
        if value & CR4_VMXE != 0 || value & f.must_be_zero() != 0 {
            return Ok(false);
        }
        vmcs.write(fields::CR4_READ_SHADOW, value)?;
        vmcs.write(fields::GUEST_CR4, value | f.must_be_one())?;
        Ok(true)
    }
}

/// Writes the data segments ES, SS, DS, FS and GS, all as `data`.
pub fn write_data_segments(vmcs: &mut impl VmcsWrite, data: Segment) -> Result<(), VmFail> {
    for seg in [
        GuestSegment::Es,
        GuestSegment::Ss,
        GuestSegment::Ds,
        GuestSegment::Fs,
        GuestSegment::Gs,
    ] {
        vmcs.write_guest_segment(seg, data)?;
    }
    Ok(())
}

/// XCR0 validity (SDM Vol. 1, 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled
/// Features"): x87 set, only `supported` bits, AVX needs SSE, AVX-512 all three together and
/// with AVX, MPX both or neither.
pub fn xcr0_valid(supported: u64, v: u64) -> bool {
    let avx512 = 0xe0;
    v & 1 != 0
        && v & !supported == 0
        && (v & 4 == 0 || v & 2 != 0)
        && (v & avx512 == 0 || (v & avx512 == avx512 && v & 4 != 0))
        && (v & 0x18 == 0 || v & 0x18 == 0x18)
}

/// XSETBV (SDM Vol. 2, "XSETBV—Set Extended Control Register"): the value EDX:EAX it loads into
/// XCR0, or `None` when it raises #GP: ECX does not name XCR0 (only ECX = 0 exists), or the value is
/// not a valid XCR0 for a processor supporting `xcr0_supported` ([`xcr0_valid`]).
pub fn xsetbv_value(regs: &GuestRegisters, xcr0_supported: u64) -> Option<u64> {
    let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
    (regs.rcx as u32 == 0 && xcr0_valid(xcr0_supported, value)).then_some(value)
}

/// CPUID.1:ECX as both guests see it: VMX (bit 5) and SMX (6) hidden, "hypervisor present" (31)
/// set, OSXSAVE (27) from the guest's CR4 (`guest_cr4`) rather than the host's.
pub fn cpuid_leaf1_ecx(ecx: u32, guest_cr4: u64) -> u32 {
    let mut c = ecx & !((1 << 5) | (1 << 6) | (1 << 27));
    c |= 1 << 31;
    if guest_cr4 & CR4_OSXSAVE != 0 {
        c |= 1 << 27;
    }
    c
}

/// Whether `exit` is a VMX instruction's (VMCALL, VMXON, VMXOFF, VMCLEAR, VMPTRLD, VMPTRST,
/// VMREAD, VMWRITE, VMLAUNCH, VMRESUME, INVEPT, INVVPID, VMFUNC): neither guest is offered VMX,
/// so each raises #UD (a guest that uses VMCALL as a hypercall handles it before asking).
pub fn is_vmx_instruction(exit: &VmExit) -> bool {
    matches!(
        exit,
        VmExit::Vmcall { .. }
            | VmExit::Vmxon { .. }
            | VmExit::Vmxoff { .. }
            | VmExit::Vmclear { .. }
            | VmExit::Vmptrld { .. }
            | VmExit::Vmptrst { .. }
            | VmExit::Vmread { .. }
            | VmExit::Vmwrite { .. }
            | VmExit::Vmlaunch { .. }
            | VmExit::Vmresume { .. }
            | VmExit::Invept { .. }
            | VmExit::Invvpid { .. }
            | VmExit::Vmfunc { .. }
    )
}

/// Advances the guest's RIP past the exiting instruction (and drops blocking by STI/MOV SS, which
/// the instruction ended).
pub fn skip_instruction(vmcs: &mut impl VmcsWrite, length: u32) -> Result<(), VmFail> {
    vmcs.modify(fields::GUEST_RIP, |rip| rip.wrapping_add(u64::from(length)))?;
    let ended = InterruptibilityState::BLOCKING_BY_STI | InterruptibilityState::BLOCKING_BY_MOV_SS;
    let state = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
    if state.intersects(ended) {
        vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, state - ended)?;
    }
    Ok(())
}

/// Injects hardware exception `vector` on the next VM entry; RIP stays at the faulting instruction.
pub fn inject_exception(
    vmcs: &mut impl VmcsWrite,
    vector: u8,
    error: Option<u32>,
) -> Result<(), VmFail> {
    if let Some(code) = error {
        vmcs.write(fields::VM_ENTRY_EXCEPTION_ERROR_CODE, code)?;
    }
    vmcs.write(
        fields::VM_ENTRY_INTERRUPTION_INFORMATION,
        EntryInterruptionInfo::new(vector, InterruptionType::HardwareException, error.is_some()),
    )
}
