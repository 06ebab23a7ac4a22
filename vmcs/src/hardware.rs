//! The current VMCS behind the field-access traits: vmx-core's [`CurrentVmcs`] (checked, on the
//! processor it was loaded on, or on the software processor [`vmx_core::SoftVmx`]), and
//! [`HardwareVmcs`], the unchecked handle on whatever VMCS is current.

#[cfg(target_arch = "x86_64")]
use core::fmt;
#[cfg(target_arch = "x86_64")]
use core::marker::PhantomData;

use vmx_core::{CurrentVmcs, VmFail, VmxInstructions};

use crate::access::{VmcsRead, VmcsWrite};

/// The loaded VMCS is read with VMREAD of its processor: the safe route to the current VMCS.
///
/// ```no_run
/// use vmcs::{VmcsRead, VmcsWrite, fields};
/// use vmx_core::{CurrentVmcs, LivePlatform, VmFail};
///
/// /// Skips the instruction that caused the VM exit (e.g. CPUID after emulating it).
/// fn skip_instruction(vmcs: &mut CurrentVmcs<'_, LivePlatform>) -> Result<(), VmFail> {
///     let rip = vmcs.read(fields::GUEST_RIP)?;
///     let length = vmcs.read(fields::VM_EXIT_INSTRUCTION_LENGTH)?;
///     vmcs.write(fields::GUEST_RIP, rip + u64::from(length))
/// }
/// ```
impl<P: VmxInstructions> VmcsRead for CurrentVmcs<'_, P> {
    #[inline(always)]
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        CurrentVmcs::read_raw(self, encoding)
    }
}

/// VMWRITE to the loaded VMCS; a write of HOST_RSP or HOST_RIP empties the `CurrentVmcs`'s
/// [`HostStateCache`](vmx_core::HostStateCache) (as [`CurrentVmcs::write_raw`] does), so the next
/// [`CurrentVmcs::run`] writes both again. Safe, as [`CurrentVmcs::write_raw`] is: the written state
/// is vouched for when entering the guest ([`CurrentVmcs::run`] is `unsafe`).
impl<P: VmxInstructions> VmcsWrite for CurrentVmcs<'_, P> {
    #[inline(always)]
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        CurrentVmcs::write_raw(self, encoding, value)
    }
}

/// Whatever VMCS is current on this logical processor, accessed with VMREAD and VMWRITE of
/// [`vmx_core::instructions`], tied to no [`CurrentVmcs`]: for code that manages the current VMCS
/// itself. [`CurrentVmcs`] implements the same traits and is the checked route. Only on `x86_64`
/// targets.
///
/// Neither `Send` nor `Sync`: the current VMCS is a property of one logical processor.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<vmcs::HardwareVmcs>(); // error: the current VMCS belongs to one processor
/// ```
#[cfg(target_arch = "x86_64")]
pub struct HardwareVmcs {
    _not_send: PhantomData<*mut ()>,
}

#[cfg(target_arch = "x86_64")]
impl HardwareVmcs {
    /// A handle on whatever VMCS is current when it is used.
    ///
    /// # Safety
    ///
    /// For the whole lifetime of the handle, the caller must run in VMX root operation at CPL 0 on
    /// one logical processor (the handle must not migrate), and the VMCS that is current when the
    /// handle is used must be the one the caller means: every write becomes guest, host or control
    /// state of the next VM entry, so host-state fields must describe the host and the controls
    /// must keep the guest away from host memory. Without a current VMCS, accesses fail with
    /// [`VmFail::Invalid`]. The handle does not know the [`CurrentVmcs`]: after writing HOST_RSP or
    /// HOST_RIP through it, call [`CurrentVmcs::reset_host_state_cache`] before the next
    /// [`CurrentVmcs::run`].
    #[must_use]
    pub unsafe fn new() -> Self {
        HardwareVmcs {
            _not_send: PhantomData,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl fmt::Debug for HardwareVmcs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardwareVmcs").finish()
    }
}

#[cfg(target_arch = "x86_64")]
impl VmcsRead for HardwareVmcs {
    #[inline]
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: VMX root operation at CPL 0 on this processor, with the intended VMCS current,
        // as the caller of `new` vouched.
        unsafe { vmx_core::instructions::vmread(encoding) }
    }
}

#[cfg(target_arch = "x86_64")]
impl VmcsWrite for HardwareVmcs {
    #[inline]
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        // SAFETY: VMX root operation at CPL 0 with the intended VMCS current, as for `read_raw`;
        // the written state and the host-state cache after HOST_RSP/HOST_RIP writes are the
        // caller's of `new` to answer for.
        unsafe { vmx_core::instructions::vmwrite(encoding, value) }
    }
}
