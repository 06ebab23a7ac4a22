//! The current VMCS: a [`VmcsRegion`] loaded with VMPTRLD, and its launch state.

use crate::error::VmFail;
use crate::lifecycle::VmxRoot;
use crate::processor::VmxInstructions;
use crate::region::{PhysTranslate, RegionError, VmcsRegion, region_phys};
use crate::trampoline::{GuestRegisters, HostStateCache};
use vmcs_fields::fields;

/// Bit 31 of the exit-reason field: "VM-entry failure" (SDM "Basic VM-Exit Information").
const EXIT_REASON_ENTRY_FAILURE: u64 = 1 << 31;

/// Why a VMCS region could not be made current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The region's revision identifier is not the processor's (IA32_VMX_BASIC\[30:0\]); initialise
    /// it with [`VmcsRegion::init`].
    #[error(
        "the VMCS region carries revision identifier {region:#x}, the processor wants {processor:#x}"
    )]
    RevisionMismatch {
        /// The region's revision identifier.
        region: u32,
        /// IA32_VMX_BASIC\[30:0\].
        processor: u32,
    },
    /// The region cannot be used (unmapped, misaligned, above 4 GiB).
    #[error("VMCS region: {0}")]
    Region(#[from] RegionError),
    /// VMCLEAR (which makes the launch state clear before the load) failed.
    #[error("VMCLEAR failed: {0}")]
    Vmclear(VmFail),
    /// VMPTRLD failed.
    #[error("VMPTRLD failed: {0}")]
    Vmptrld(VmFail),
}

/// Why [`CurrentVmcs::run`] returned without a VM exit to handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// VMLAUNCH or VMRESUME (or the trampoline's VMWRITE of HOST_RSP/HOST_RIP before it) failed
    /// with VMfail: no VM entry was attempted, the guest did not run, the launch state is
    /// unchanged.
    #[error("VM entry failed: {0}")]
    Entry(VmFail),
    /// VMLAUNCH did not fail (the guest was entered, or the entry failed while loading guest
    /// state, and a VM exit followed), but the VMREAD of the exit reason that tells the two apart
    /// failed. The VMCS is taken as launched (the next run uses VMRESUME; if the entry had in fact
    /// failed, VMRESUME reports VMfailValid 5, "VMRESUME with non-launched VMCS"), and the VM
    /// exit is not handled.
    #[error("VMLAUNCH completed, but reading its exit reason failed: {0}")]
    ExitReasonRead(VmFail),
}

impl VmcsRegion {
    /// Makes this region the current VMCS (SDM Vol. 3C, §25.11.3 "Initializing a VMCS"): checks its
    /// revision identifier against the processor's, translates its address with `translate`, then
    /// VMCLEAR (launch state clear) and VMPTRLD. The region's contents (fields written while it
    /// was current before) are kept.
    ///
    /// The region is taken for `'static`, because the processor may use its memory for as long as
    /// the VMCS is active: [`CurrentVmcs::clear`] hands it back after VMCLEAR, and an
    /// [`CurrentVmcs`] that is leaked keeps it forever. On error the region is not handed back (a
    /// region in a `static` can be borrowed again). The returned [`CurrentVmcs`] borrows `root`
    /// mutably, so no other VMCS can be made current while it lives.
    pub fn load<'a, P: VmxInstructions>(
        &'static mut self,
        root: &'a mut VmxRoot<P>,
        translate: &impl PhysTranslate,
    ) -> Result<CurrentVmcs<'a, P>, LoadError> {
        let basic = root.basic();
        if self.revision_id() != basic.revision_id() {
            return Err(LoadError::RevisionMismatch {
                region: self.revision_id(),
                processor: basic.revision_id(),
            });
        }
        let phys = region_phys(
            core::ptr::from_ref(self).cast(),
            translate,
            basic.physical_address_width_32(),
        )?;
        let header = self.header();
        let region = core::ptr::from_mut(self);
        // SAFETY: `root` proves VMX root operation at CPL 0; the region is exclusively ours for
        // 'static, 4-KiB aligned at `phys` (checked) and not current (no other `CurrentVmcs`
        // exists while `root` is borrowed here).
        unsafe { root.processor_mut().vmclear(phys) }.map_err(LoadError::Vmclear)?;
        // SAFETY: as above; from here on the region is only reached through `CurrentVmcs`'s raw
        // pointer, never through a reference, until VMCLEAR.
        unsafe { root.processor_mut().vmptrld(phys) }.map_err(LoadError::Vmptrld)?;
        Ok(CurrentVmcs {
            region,
            header,
            root,
            phys,
            launched: false,
            host_cache: HostStateCache::new(),
        })
    }
}

/// The current VMCS (SDM Vol. 3C, §25.1 "Overview"), borrowing its [`VmcsRegion`] and the
/// [`VmxRoot`] token while loaded, and tracking its launch state (clear after the load, launched
/// after the first successful VM entry).
///
/// The name is the invariant it holds: as long as the value lives, its region is the processor's
/// *current* VMCS, the one VMPTRLD made current and that VMREAD, VMWRITE, VMLAUNCH and VMRESUME act
/// on. The SDM distinguishes that from *active*: a VMCS stays active after VMPTRLD of another one
/// made that other current ("active but not current") until VMCLEAR. This type never is in that
/// state: it holds the [`VmxRoot`] borrow, so no other VMCS can be loaded while it exists, and
/// dropping or [clearing](Self::clear) it executes VMCLEAR.
///
/// Reads and writes go to this VMCS with VMREAD/VMWRITE of the processor `P` (the running one,
/// [`LivePlatform`](crate::LivePlatform), or a software one, [`SoftVmx`](crate::SoftVmx));
/// the `vmcs` crate implements its typed field-access traits for it. Dropping it executes VMCLEAR
/// (errors ignored) and keeps the region; [`CurrentVmcs::clear`] reports errors and hands the
/// region back.
///
/// While loaded, the region is held as a raw pointer (the processor may read and write its memory),
/// which also makes `CurrentVmcs` `!Send` and `!Sync`.
///
/// ```
/// use vmx_caps::{MsrSnapshot, VmxCapabilities};
/// use vmx_core::{SoftVmx, VmcsRegion, VmxonRegion};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A software processor (SoftVmx) shaped by Bochs' tigerlake capability MSRs; on hardware the
/// // processor is `LivePlatform` and `VmxRoot::enable` is called at CPL 0.
/// let dump = std::fs::read_to_string(concat!(
///     env!("CARGO_MANIFEST_DIR"),
///     "/../vmx-caps/testdata/tigerlake.msr"
/// ))?;
/// let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(&dump)?)?;
/// let vmxon = Box::leak(Box::new(VmxonRegion::zeroed()));
/// let mut root = SoftVmx::new(&caps).enable(&caps, vmxon).map_err(|(_, e)| e)?;
/// let region = Box::leak(Box::new(VmcsRegion::zeroed()));
/// region.init(caps.basic.revision_id(), false)?;
/// // VMPTRLD: from here until `clear`, this is the processor's current VMCS.
/// let mut vmcs = region.load(&mut root, &|p: *const u8| Some(p as u64))?;
/// let guest_rip = vmcs_fields::fields::GUEST_RIP.encoding();
/// vmcs.write_raw(guest_rip, 0x7c00)?;
/// assert_eq!(vmcs.read_raw(guest_rip)?, 0x7c00);
/// assert!(!vmcs.is_launched());
/// // VMCLEAR: the region comes back, with the data the processor wrote into it.
/// let region = vmcs.clear().map_err(|(_, e)| e)?;
/// let vmcs = region.load(&mut root, &|p: *const u8| Some(p as u64))?;
/// assert_eq!(vmcs.read_raw(guest_rip)?, 0x7c00);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CurrentVmcs<'a, P: VmxInstructions> {
    /// The region, exclusively owned ('static) and only touched by the processor while loaded.
    region: *mut VmcsRegion,
    /// The region's first word at load time (revision identifier and shadow bit).
    header: u32,
    root: &'a mut VmxRoot<P>,
    phys: u64,
    launched: bool,
    /// HOST_RSP/HOST_RIP as the trampoline last wrote them into this VMCS (empty after the load).
    host_cache: HostStateCache,
}

impl<'a, P: VmxInstructions> CurrentVmcs<'a, P> {
    /// VMREAD of the field `encoding`.
    #[inline(always)]
    pub fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        // SAFETY: the borrowed root token proves VMX root operation; this VMCS is current.
        unsafe { self.root.processor().vmread(encoding) }
    }

    /// VMWRITE of `value` to the field `encoding`. Writing is safe; entering the guest with the
    /// result is what [`CurrentVmcs::run`] makes the caller vouch for.
    ///
    /// A write to HOST_RSP or HOST_RIP (which the trampoline owns) empties the
    /// [`HostStateCache`], so the next [`run`](CurrentVmcs::run) writes both again.
    #[inline(always)]
    pub fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        if encoding == fields::HOST_RSP.encoding() || encoding == fields::HOST_RIP.encoding() {
            self.host_cache.reset();
        }
        // SAFETY: the borrowed root token proves VMX root operation; this VMCS is current. The
        // value takes effect only at the next VM entry/exit, whose safety `run` requires.
        unsafe { self.root.processor_mut().vmwrite(encoding, value) }
    }

    /// The physical address of the VMCS region (the current-VMCS pointer).
    #[must_use]
    pub fn phys_addr(&self) -> u64 {
        self.phys
    }

    /// Whether the VMCS is launched (the next [`run`](CurrentVmcs::run) uses VMRESUME).
    #[must_use]
    pub fn is_launched(&self) -> bool {
        self.launched
    }

    /// What the trampoline last wrote to HOST_RSP/HOST_RIP of this VMCS, and how often it had to
    /// (once for a vCPU loop that always enters from the same stack depth).
    #[must_use]
    pub fn host_state_cache(&self) -> &HostStateCache {
        &self.host_cache
    }

    /// Empties the [`HostStateCache`]: the next [`run`](CurrentVmcs::run) writes HOST_RSP and
    /// HOST_RIP again. Required after code other than [`CurrentVmcs::write_raw`] (and the `vmcs`
    /// crate's access traits implemented on `CurrentVmcs`, which call it) wrote either field, e.g.
    /// a raw VMWRITE.
    pub fn reset_host_state_cache(&mut self) {
        self.host_cache.reset();
    }

    /// The VMX root token, for INVEPT/INVVPID while this VMCS is current.
    pub fn root(&self) -> &VmxRoot<P> {
        self.root
    }

    /// The processor, mutably, for its own safe methods (e.g. a [`SoftVmx`](crate::SoftVmx)'s
    /// next VM exit); its `unsafe` methods stay the caller's responsibility.
    pub fn processor_mut(&mut self) -> &mut P {
        self.root.processor_mut()
    }

    /// The VMCS revision identifier the region carried when loaded.
    #[must_use]
    pub fn revision_id(&self) -> u32 {
        self.header & 0x7fff_ffff
    }

    /// Whether the region is a shadow VMCS (bit 31 of its first word).
    #[must_use]
    pub fn is_shadow(&self) -> bool {
        self.header & (1 << 31) != 0
    }

    /// Enters the guest (VMLAUNCH while the launch state is clear, VMRESUME once launched) and
    /// returns at the next VM exit with `regs` holding the guest's registers; see [`vm_run`].
    ///
    /// The launch state becomes launched once VMLAUNCH did not VMfail and the exit reason shows
    /// no VM-entry failure: a VM entry that fails while loading guest state (a VM exit with bit 31
    /// of the exit reason set) leaves it clear, as the SDM specifies (§27.8 "VM-Entry Failures
    /// During or After Loading Guest State"). If that exit reason cannot be read, the VMCS is taken
    /// as launched and [`RunError::ExitReasonRead`] is returned.
    ///
    /// # Errors
    ///
    /// [`RunError::Entry`] when VMLAUNCH/VMRESUME failed (VMfail: nothing ran);
    /// [`RunError::ExitReasonRead`] as above.
    ///
    /// # Safety
    ///
    /// The obligations of [`vm_run`] on the processor's state and the VMCS contents: the
    /// host-state area describes this host and the guest configuration keeps the guest away from
    /// memory the host relies on; CR4.OSFXSR = 1, CR0.TS = 0 and CR0.EM = 0; interrupts stay
    /// disabled. HOST_RSP and HOST_RIP belong to the trampoline: if anything but
    /// [`CurrentVmcs::write_raw`] wrote them since the last run, call
    /// [`reset_host_state_cache`](CurrentVmcs::reset_host_state_cache) first.
    ///
    /// [`vm_run`]: crate::vm_run
    #[inline(always)]
    pub unsafe fn run(&mut self, regs: &mut GuestRegisters) -> Result<(), RunError> {
        // SAFETY: VMX root operation and the current VMCS come from `self`; the launch state and
        // the host-state cache (created empty at the load, so it only ever describes this VMCS)
        // are tracked by `self`; the VMCS contents and foreign HOST_RSP/HOST_RIP writes are the
        // caller's obligation.
        unsafe {
            self.root
                .processor_mut()
                .vm_entry(regs, &mut self.host_cache, self.launched)
        }
        .map_err(RunError::Entry)?;
        if !self.launched {
            match self.read_raw(fields::EXIT_REASON.encoding()) {
                Ok(reason) => self.launched = reason & EXIT_REASON_ENTRY_FAILURE == 0,
                Err(fail) => {
                    self.launched = true;
                    return Err(RunError::ExitReasonRead(fail));
                }
            }
        }
        Ok(())
    }

    /// VMCLEAR: writes the VMCS back to its region, sets its launch state to clear and makes it
    /// not current, handing the region back (and ending the borrow of the root token). On
    /// failure the VMCS stays current and comes back with the error.
    pub fn clear(self) -> Result<&'static mut VmcsRegion, (Self, VmFail)> {
        let phys = self.phys;
        // SAFETY: the root token proves VMX root operation; the region is this VMCS's, owned by
        // `self`.
        match unsafe { self.root.processor_mut().vmclear(phys) } {
            Ok(()) => {
                let region = self.region;
                core::mem::forget(self);
                // SAFETY: the pointer came from a `&'static mut VmcsRegion` given to `load`;
                // after VMCLEAR the processor no longer uses the region, and `self` (its only
                // other holder) is gone without running `drop`.
                Ok(unsafe { &mut *region })
            }
            Err(fail) => Err((self, fail)),
        }
    }
}

impl<P: VmxInstructions> Drop for CurrentVmcs<'_, P> {
    fn drop(&mut self) {
        let phys = self.phys;
        // SAFETY: the root token proves VMX root operation; the region is this VMCS's. VMCLEAR
        // writes the cached VMCS back; the region itself stays borrowed for 'static (not handed
        // back). A failure cannot be reported from `drop`; `clear` reports it.
        let _ = unsafe { self.root.processor_mut().vmclear(phys) };
    }
}
