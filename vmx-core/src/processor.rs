//! The VMX instruction layer as a trait, so that the lifecycle types ([`VmxRoot`],
//! [`CurrentVmcs`]) run on the processor ([`LivePlatform`]) or on a software model
//! ([`SoftVmx`](crate::SoftVmx)) unchanged.
//!
//! [`VmxRoot`]: crate::VmxRoot
//! [`CurrentVmcs`]: crate::CurrentVmcs
//! [`LivePlatform`]: crate::LivePlatform

use crate::error::VmFail;
use crate::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use crate::trampoline::{GuestRegisters, HostStateCache};

/// The VMX instructions of one logical processor (SDM Vol. 3C, Chapter 31 "VMX Instruction
/// Reference"), and the VM entry of the trampoline: what [`VmxRoot`](crate::VmxRoot) and
/// [`CurrentVmcs`](crate::CurrentVmcs) execute.
///
/// [`LivePlatform`](crate::LivePlatform) executes the real instructions (the functions of
/// [`instructions`](crate::instructions) and [`vm_run`](crate::vm_run), inlined: the generic
/// lifecycle costs nothing over calling them directly); [`SoftVmx`](crate::SoftVmx) models them in
/// software, for tests on any host.
///
/// # Safety
///
/// For implementers: the lifecycle types hand memory back to safe code on the strength of these
/// methods, so each must keep the promises of the instruction it is named after as far as memory
/// is concerned. After [`vmclear`](VmxInstructions::vmclear) of an address returns `Ok`, the
/// region there is not accessed again until a later `vmptrld` of it; after
/// [`vmxoff`](VmxInstructions::vmxoff) returns `Ok`, neither the VMXON region nor any VMCS region
/// is; [`vm_entry`](VmxInstructions::vm_entry) returns only after the guest stopped running and
/// touches no memory of the host but `regs` and `cache`. An implementation that never touches
/// memory through the addresses it is given (a software model) keeps them trivially.
///
/// For callers, each method is `unsafe` with the obligations of the instruction's wrapper in
/// [`instructions`](crate::instructions) (VMX operation of this processor at CPL 0, regions
/// owned and aligned, …), read for the processor `self` stands for. The lifecycle types discharge
/// them.
pub unsafe trait VmxInstructions {
    /// VMXON with the VMXON region at `vmxon_region_phys`
    /// ([`instructions::vmxon`](crate::instructions::vmxon)).
    ///
    /// # Safety
    ///
    /// As [`instructions::vmxon`](crate::instructions::vmxon), on this processor.
    unsafe fn vmxon(&mut self, vmxon_region_phys: u64) -> Result<(), VmFail>;

    /// VMXOFF ([`instructions::vmxoff`](crate::instructions::vmxoff)).
    ///
    /// # Safety
    ///
    /// As [`instructions::vmxoff`](crate::instructions::vmxoff), on this processor.
    unsafe fn vmxoff(&mut self) -> Result<(), VmFail>;

    /// VMCLEAR of the VMCS at `vmcs_phys` ([`instructions::vmclear`](crate::instructions::vmclear)).
    ///
    /// # Safety
    ///
    /// As [`instructions::vmclear`](crate::instructions::vmclear), on this processor.
    unsafe fn vmclear(&mut self, vmcs_phys: u64) -> Result<(), VmFail>;

    /// VMPTRLD of the VMCS at `vmcs_phys` ([`instructions::vmptrld`](crate::instructions::vmptrld)).
    ///
    /// # Safety
    ///
    /// As [`instructions::vmptrld`](crate::instructions::vmptrld), on this processor.
    unsafe fn vmptrld(&mut self, vmcs_phys: u64) -> Result<(), VmFail>;

    /// VMREAD of the field `encoding` of the current VMCS
    /// ([`instructions::vmread`](crate::instructions::vmread)).
    ///
    /// # Safety
    ///
    /// As [`instructions::vmread`](crate::instructions::vmread), on this processor.
    unsafe fn vmread(&self, encoding: u32) -> Result<u64, VmFail>;

    /// VMWRITE of `value` to the field `encoding` of the current VMCS
    /// ([`instructions::vmwrite`](crate::instructions::vmwrite)).
    ///
    /// # Safety
    ///
    /// As [`instructions::vmwrite`](crate::instructions::vmwrite), on this processor.
    unsafe fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail>;

    /// The trampoline's VM entry: HOST_RSP/HOST_RIP written when `cache` misses, then VMLAUNCH
    /// (`launched == false`) or VMRESUME, returning at the next VM exit with `regs` holding the
    /// guest's registers ([`vm_run`](crate::vm_run)).
    ///
    /// # Safety
    ///
    /// As [`vm_run`](crate::vm_run), on this processor.
    unsafe fn vm_entry(
        &mut self,
        regs: &mut GuestRegisters,
        cache: &mut HostStateCache,
        launched: bool,
    ) -> Result<(), VmFail>;

    /// INVEPT ([`instructions::invept`](crate::instructions::invept)).
    ///
    /// # Safety
    ///
    /// As [`instructions::invept`](crate::instructions::invept), on this processor.
    unsafe fn invept(
        &self,
        invalidation: InveptType,
        descriptor: &InveptDescriptor,
    ) -> Result<(), VmFail>;

    /// INVVPID ([`instructions::invvpid`](crate::instructions::invvpid)).
    ///
    /// # Safety
    ///
    /// As [`instructions::invvpid`](crate::instructions::invvpid), on this processor.
    unsafe fn invvpid(
        &self,
        invalidation: InvvpidType,
        descriptor: &InvvpidDescriptor,
    ) -> Result<(), VmFail>;
}

// SAFETY: every method is the processor's own instruction, which keeps the SDM's promises; the
// trampoline touches only `regs`, `cache` and its own stack.
#[cfg(target_arch = "x86_64")]
unsafe impl VmxInstructions for crate::LivePlatform {
    #[inline(always)]
    unsafe fn vmxon(&mut self, vmxon_region_phys: u64) -> Result<(), VmFail> {
        // SAFETY: the caller upholds VMXON's obligations on this processor.
        unsafe { crate::instructions::vmxon(vmxon_region_phys) }
    }

    #[inline(always)]
    unsafe fn vmxoff(&mut self) -> Result<(), VmFail> {
        // SAFETY: the caller upholds VMXOFF's obligations on this processor.
        unsafe { crate::instructions::vmxoff() }
    }

    #[inline(always)]
    unsafe fn vmclear(&mut self, vmcs_phys: u64) -> Result<(), VmFail> {
        // SAFETY: the caller upholds VMCLEAR's obligations on this processor.
        unsafe { crate::instructions::vmclear(vmcs_phys) }
    }

    #[inline(always)]
    unsafe fn vmptrld(&mut self, vmcs_phys: u64) -> Result<(), VmFail> {
        // SAFETY: the caller upholds VMPTRLD's obligations on this processor.
        unsafe { crate::instructions::vmptrld(vmcs_phys) }
    }

    #[inline(always)]
    unsafe fn vmread(&self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: the caller upholds VMREAD's obligations on this processor.
        unsafe { crate::instructions::vmread(encoding) }
    }

    #[inline(always)]
    unsafe fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        // SAFETY: the caller upholds VMWRITE's obligations on this processor.
        unsafe { crate::instructions::vmwrite(encoding, value) }
    }

    #[inline(always)]
    unsafe fn vm_entry(
        &mut self,
        regs: &mut GuestRegisters,
        cache: &mut HostStateCache,
        launched: bool,
    ) -> Result<(), VmFail> {
        // SAFETY: the caller upholds `vm_run`'s obligations on this processor.
        unsafe { crate::trampoline::vm_run(regs, cache, launched) }
    }

    #[inline(always)]
    unsafe fn invept(
        &self,
        invalidation: InveptType,
        descriptor: &InveptDescriptor,
    ) -> Result<(), VmFail> {
        // SAFETY: the caller upholds INVEPT's obligations on this processor.
        unsafe { crate::instructions::invept(invalidation, descriptor) }
    }

    #[inline(always)]
    unsafe fn invvpid(
        &self,
        invalidation: InvvpidType,
        descriptor: &InvvpidDescriptor,
    ) -> Result<(), VmFail> {
        // SAFETY: the caller upholds INVVPID's obligations on this processor.
        unsafe { crate::instructions::invvpid(invalidation, descriptor) }
    }
}
