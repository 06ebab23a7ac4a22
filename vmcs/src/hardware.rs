//! The hardware backend: VMREAD and VMWRITE of the processor's current VMCS.

use core::marker::PhantomData;

use vmx_core::VmFail;
use vmx_core::instructions;

use crate::access::{VmcsRead, VmcsWrite};

/// The current VMCS of this logical processor, accessed with VMREAD and VMWRITE through
/// [`vmx_core::instructions`].
///
/// Neither `Send` nor `Sync`: the current VMCS is a property of one logical processor.
#[derive(Debug)]
pub struct HardwareVmcs<'a> {
    _not_send: PhantomData<*mut ()>,
    _current: PhantomData<&'a mut ()>,
}

impl HardwareVmcs<'_> {
    /// A handle on the current VMCS.
    ///
    /// # Safety
    ///
    /// For the whole lifetime of the handle, the caller must run in VMX root operation at CPL 0 on
    /// one logical processor (the handle must not migrate), and the VMCS that is current when the
    /// handle is used must be the one the caller means: every write becomes guest, host or control
    /// state of the next VM entry, so host-state fields must describe the host and the controls
    /// must keep the guest away from host memory. Without a current VMCS, accesses fail with
    /// [`VmFail::Invalid`].
    #[must_use]
    pub unsafe fn new() -> Self {
        HardwareVmcs {
            _not_send: PhantomData,
            _current: PhantomData,
        }
    }
}

impl VmcsRead for HardwareVmcs<'_> {
    #[inline]
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: `HardwareVmcs::new`'s contract: VMX root operation at CPL 0 on this processor.
        unsafe { instructions::vmread(encoding) }
    }
}

impl VmcsWrite for HardwareVmcs<'_> {
    #[inline]
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        // SAFETY: `HardwareVmcs::new`'s contract: VMX root operation at CPL 0, and the caller
        // answers for the state it writes into the current VMCS.
        unsafe { instructions::vmwrite(encoding, value) }
    }
}
