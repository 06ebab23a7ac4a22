//! The hardware backend: VMREAD and VMWRITE of the processor's current VMCS.

use core::fmt;
use core::marker::PhantomData;

use vmx_core::instructions;
use vmx_core::{ActiveVmcs, HOST_RIP_ENCODING, HOST_RSP_ENCODING, VmFail};

use crate::access::{VmcsRead, VmcsWrite};

/// The current VMCS of this logical processor, accessed with VMREAD and VMWRITE through
/// [`vmx_core::instructions`].
///
/// Made by [`HardwareVmcs::from_active`], it borrows vmx-core's [`ActiveVmcs`] (the VMCS that
/// VMPTRLD made current): the handle cannot outlive the loaded VMCS, no other VMCS can be made
/// current while it lives (the `ActiveVmcs` holds the VMX root token mutably), and writes to
/// HOST_RSP or HOST_RIP empty the `ActiveVmcs`'s [`HostStateCache`](vmx_core::HostStateCache),
/// as [`ActiveVmcs::write`] does, so the next [`ActiveVmcs::run`] writes both fields again.
/// [`HardwareVmcs::new`] is the unchecked handle for code that manages the current VMCS itself.
///
/// Neither `Send` nor `Sync`: the current VMCS is a property of one logical processor.
///
/// ```no_run
/// use vmcs::{HardwareVmcs, VmcsRead, VmcsWrite, fields};
/// use vmx_core::{ActiveVmcs, VmFail};
///
/// /// Skips the instruction that caused the VM exit (e.g. CPUID after emulating it).
/// fn skip_instruction(active: &mut ActiveVmcs<'_>) -> Result<(), VmFail> {
///     let mut vmcs = HardwareVmcs::from_active(active);
///     let rip = vmcs.read(fields::GUEST_RIP)?;
///     let length = vmcs.read(fields::VM_EXIT_INSTRUCTION_LENGTH)?;
///     vmcs.write(fields::GUEST_RIP, rip + u64::from(length))
/// }
/// ```
///
/// While the handle lives, the `ActiveVmcs` cannot be used (so it cannot enter the guest); make
/// a handle per VM exit, it costs nothing:
///
/// ```compile_fail
/// use vmcs::{HardwareVmcs, VmcsRead, fields};
/// use vmx_core::ActiveVmcs;
///
/// fn misuse(active: &mut ActiveVmcs<'_>) {
///     let vmcs = HardwareVmcs::from_active(active);
///     let _ = active.read(fields::GUEST_RIP.encoding()); // error: `*active` is borrowed mutably
///     let _ = vmcs.read(fields::GUEST_RIP);
/// }
/// ```
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<vmcs::HardwareVmcs<'static>>(); // error: the current VMCS belongs to one processor
/// ```
pub struct HardwareVmcs<'a> {
    /// The loaded VMCS this handle borrows; `None` for a handle made by [`HardwareVmcs::new`].
    active: Option<&'a mut dyn HostStateOwner>,
    _not_send: PhantomData<*mut ()>,
}

/// What the handle needs of the borrowed [`ActiveVmcs`]: emptying its host-state cache. A trait
/// object, so that the handle keeps its one lifetime whatever the `ActiveVmcs`'s own is.
trait HostStateOwner {
    fn reset_host_state_cache(&mut self);
}

impl HostStateOwner for ActiveVmcs<'_> {
    fn reset_host_state_cache(&mut self) {
        ActiveVmcs::reset_host_state_cache(self);
    }
}

/// Whether `encoding` is HOST_RSP or HOST_RIP, the host-state fields the vmx-core trampoline
/// writes itself and caches.
const fn trampoline_field(encoding: u32) -> bool {
    encoding == HOST_RSP_ENCODING || encoding == HOST_RIP_ENCODING
}

impl<'a> HardwareVmcs<'a> {
    /// A handle on `active`, the current VMCS, for as long as it is borrowed.
    ///
    /// Safe, as [`ActiveVmcs::write`] is: the `ActiveVmcs` proves VMX root operation and that its
    /// VMCS is current, and the state written is vouched for when entering the guest
    /// ([`ActiveVmcs::run`] is `unsafe`). Writes to HOST_RSP or HOST_RIP reset the
    /// `ActiveVmcs`'s host-state cache.
    #[must_use]
    pub fn from_active(active: &'a mut ActiveVmcs<'_>) -> Self {
        HardwareVmcs {
            active: Some(active),
            _not_send: PhantomData,
        }
    }

    /// A handle on whatever VMCS is current when it is used, tied to no [`ActiveVmcs`];
    /// [`HardwareVmcs::from_active`] is the checked form.
    ///
    /// # Safety
    ///
    /// For the whole lifetime of the handle, the caller must run in VMX root operation at CPL 0 on
    /// one logical processor (the handle must not migrate), and the VMCS that is current when the
    /// handle is used must be the one the caller means: every write becomes guest, host or control
    /// state of the next VM entry, so host-state fields must describe the host and the controls
    /// must keep the guest away from host memory. Without a current VMCS, accesses fail with
    /// [`VmFail::Invalid`]. The handle does not know the [`ActiveVmcs`]: after writing HOST_RSP or
    /// HOST_RIP through it, call [`ActiveVmcs::reset_host_state_cache`] before the next
    /// [`ActiveVmcs::run`].
    #[must_use]
    pub unsafe fn new() -> Self {
        HardwareVmcs {
            active: None,
            _not_send: PhantomData,
        }
    }

    /// Whether the handle borrows an [`ActiveVmcs`] (made by [`HardwareVmcs::from_active`]).
    #[must_use]
    pub fn is_tied_to_active(&self) -> bool {
        self.active.is_some()
    }
}

impl fmt::Debug for HardwareVmcs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardwareVmcs")
            .field("tied_to_active", &self.is_tied_to_active())
            .finish()
    }
}

impl VmcsRead for HardwareVmcs<'_> {
    #[inline]
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: VMX root operation at CPL 0 on this processor, with the intended VMCS current:
        // proven by the borrowed `ActiveVmcs` (`from_active`) or vouched for by the caller (`new`).
        unsafe { instructions::vmread(encoding) }
    }
}

impl VmcsWrite for HardwareVmcs<'_> {
    #[inline]
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        if trampoline_field(encoding)
            && let Some(active) = self.active.as_deref_mut()
        {
            active.reset_host_state_cache();
        }
        // SAFETY: VMX root operation at CPL 0 with the intended VMCS current, as for `read_raw`;
        // the written state takes effect at the next VM entry, which `ActiveVmcs::run` (unsafe)
        // or the caller of `new` answers for. HOST_RSP/HOST_RIP writes emptied the borrowed
        // `ActiveVmcs`'s cache above; for `new` handles that is the caller's obligation.
        unsafe { instructions::vmwrite(encoding, value) }
    }
}

#[cfg(test)]
mod tests {
    use super::trampoline_field;
    use crate::fields;

    #[test]
    fn trampoline_fields_are_host_rsp_and_host_rip() {
        // Of every field in the table, exactly HOST_RSP and HOST_RIP (vmx-core's constants agree
        // with the table's encodings).
        let mut hits = fields::ALL
            .iter()
            .filter(|info| trampoline_field(info.encoding))
            .map(|info| info.name);
        assert_eq!(hits.next(), Some("HOST_RSP"));
        assert_eq!(hits.next(), Some("HOST_RIP"));
        assert_eq!(hits.next(), None);
        assert!(trampoline_field(fields::HOST_RSP.encoding()));
        assert!(trampoline_field(fields::HOST_RIP.encoding()));
    }
}
