//! Entering and leaving VMX operation (SDM Vol. 3C, §24.7 "Enabling and Entering VMX Operation",
//! §24.8 "Restrictions on VMX Operation"), with the checks split into pure steps over a
//! [`VmxPlatform`] so that they run on the host against fakes.

#[cfg(target_arch = "x86_64")]
use core::arch::asm;
use core::marker::PhantomData;

use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::{CrFixedBits, CrUse, EptVpidCap, FeatureControl, VmxBasic, VmxCapabilities, msr};

use crate::error::VmFail;
use crate::invalidation::{
    InvalidationError, InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType,
};
use crate::processor::VmxInstructions;
use crate::region::{PhysTranslate, REGION_SIZE, RegionError, VmxonRegion, region_phys};

/// The processor state that entering VMX operation reads and changes: CPUID, MSRs and control
/// registers. [`LivePlatform`] is the processor itself, [`SoftVmx`](crate::SoftVmx) a software
/// one; tests may substitute their own fake.
///
/// The methods that write processor state, and RDMSR (which raises #GP for an MSR the processor
/// does not have), are `unsafe`: a value written to CR0, CR4 or an MSR (EFER, PAT, …) changes how
/// the host runs, so the obligation appears at every call, as with `x86_64`'s `Cr0::write`.
///
/// ```compile_fail
/// use vmx_core::VmxPlatform;
///
/// fn clear_paging(platform: &mut impl VmxPlatform) {
///     let cr0 = platform.read_cr0();
///     platform.write_cr0(cr0 & !(1 << 31)); // error: call to unsafe function
/// }
/// ```
pub trait VmxPlatform {
    /// CPUID.1:ECX.VMX\[bit 5\].
    fn cpu_has_vmx(&mut self) -> bool;
    /// RDMSR of `msr`.
    ///
    /// # Safety
    ///
    /// `msr` exists on this processor (RDMSR of any other raises #GP).
    unsafe fn read_msr(&mut self, msr: u32) -> u64;
    /// WRMSR of `value` to `msr`.
    ///
    /// # Safety
    ///
    /// `msr` exists on this processor and `value` sets no reserved bit of it (else #GP), and the
    /// whole system is prepared for the change (an MSR such as IA32_EFER or IA32_PAT changes how
    /// the running code and its memory accesses behave).
    unsafe fn write_msr(&mut self, msr: u32, value: u64);
    /// MOV from CR0.
    fn read_cr0(&mut self) -> Cr0;
    /// MOV to CR0.
    ///
    /// # Safety
    ///
    /// `value` is a valid CR0 (no reserved bit, no invalid combination such as PG = 1 with
    /// PE = 0: else #GP) under which the running code keeps working (paging, write protection and
    /// caching stay as the host relies on them).
    unsafe fn write_cr0(&mut self, value: Cr0);
    /// MOV from CR4.
    fn read_cr4(&mut self) -> Cr4;
    /// MOV to CR4.
    ///
    /// # Safety
    ///
    /// As [`VmxPlatform::write_cr0`], for CR4: no reserved bit, no bit the processor lacks, nothing
    /// the running code relies on changed (PAE in IA-32e mode, OSFXSR while SSE is in use), and
    /// CR4.VMXE not cleared in VMX operation (else #GP).
    unsafe fn write_cr4(&mut self, value: Cr4);
}

/// The running processor as a [`VmxPlatform`] (CPUID, RDMSR/WRMSR, MOV to/from CR0/CR4) and as
/// [`VmxInstructions`](crate::VmxInstructions) (the VMX instructions and the trampoline of
/// [`instructions`](crate::instructions) and [`vm_run`](crate::vm_run)). A zero-sized token: using it costs nothing.
/// `!Send`: it stands for the logical processor it was created on. Only on `x86_64` targets.
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub struct LivePlatform {
    _not_send: PhantomData<*mut ()>,
}

#[cfg(target_arch = "x86_64")]
impl LivePlatform {
    /// The processor this code runs on.
    ///
    /// # Safety
    ///
    /// CPL 0 (CPUID aside, every instruction behind it faults elsewhere); the caller stays on this
    /// logical processor while using it and accepts that [`VmxRoot::enable`] sets and locks
    /// IA32_FEATURE_CONTROL and changes CR0/CR4 as documented there.
    #[must_use]
    pub unsafe fn new() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl VmxPlatform for LivePlatform {
    fn cpu_has_vmx(&mut self) -> bool {
        vmx_caps::cpu_has_vmx()
    }

    unsafe fn read_msr(&mut self, msr: u32) -> u64 {
        // SAFETY: `new`'s contract puts us at CPL 0; the caller guarantees that `msr` exists.
        unsafe { x86::msr::rdmsr(msr) }
    }

    unsafe fn write_msr(&mut self, msr: u32, value: u64) {
        // SAFETY: CPL 0 by `new`'s contract; the caller guarantees a valid MSR and value and
        // answers for the change.
        unsafe { x86::msr::wrmsr(msr, value) }
    }

    fn read_cr0(&mut self) -> Cr0 {
        let value: u64;
        // SAFETY: CPL 0 by `new`'s contract; reading CR0 has no side effect.
        unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
        Cr0::from_bits_retain(value)
    }

    unsafe fn write_cr0(&mut self, value: Cr0) {
        // SAFETY: CPL 0 by `new`'s contract; the caller guarantees a valid CR0 the host keeps
        // running under.
        unsafe { asm!("mov cr0, {}", in(reg) value.bits(), options(nostack, preserves_flags)) };
    }

    fn read_cr4(&mut self) -> Cr4 {
        let value: u64;
        // SAFETY: CPL 0 by `new`'s contract; reading CR4 has no side effect.
        unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
        Cr4::from_bits_retain(value)
    }

    unsafe fn write_cr4(&mut self, value: Cr4) {
        // SAFETY: CPL 0 by `new`'s contract; the caller guarantees a valid CR4 the host keeps
        // running under.
        unsafe { asm!("mov cr4, {}", in(reg) value.bits(), options(nostack, preserves_flags)) };
    }
}

/// Why VMX operation could not be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnableError {
    /// CPUID.1:ECX.VMX\[bit 5\] is 0: the processor has no VMX.
    #[error("the processor does not support VMX (CPUID.1:ECX.VMX[bit 5] is 0)")]
    VmxUnsupported,
    /// IA32_FEATURE_CONTROL is locked with "enable VMX outside SMX" clear: only a reset can change
    /// it (the firmware setup usually calls it "Intel Virtualization Technology").
    #[error(
        "IA32_FEATURE_CONTROL ({0:#x}) is locked with VMX outside SMX disabled (bit 2 clear); enable VT-x in the firmware setup"
    )]
    VmxDisabledByFirmware(u64),
    /// CR0 has bits set that IA32_VMX_CR0_FIXED1 requires clear in VMX operation.
    #[error("CR0 bits {0:#x} are set but must be 0 in VMX operation (IA32_VMX_CR0_FIXED1)")]
    Cr0MustBeZero(u64),
    /// CR4 has bits set that IA32_VMX_CR4_FIXED1 requires clear in VMX operation.
    #[error("CR4 bits {0:#x} are set but must be 0 in VMX operation (IA32_VMX_CR4_FIXED1)")]
    Cr4MustBeZero(u64),
    /// CR4.VMXE is already set: another VMM may be in VMX operation on this processor.
    #[error("CR4.VMXE is already set: another VMM may own VMX operation on this processor")]
    AlreadyEnabled,
    /// The VMXON region cannot be used.
    #[error("VMXON region: {0}")]
    Region(#[from] RegionError),
    /// VMXON failed.
    #[error("VMXON failed: {0}")]
    Vmxon(VmFail),
}

/// What IA32_FEATURE_CONTROL needs before VMXON outside SMX (SDM Vol. 3C, §24.7): nothing when it
/// is locked with "enable VMX outside SMX" set; the value to write (the current bits plus lock and
/// VMX outside SMX) when it is unlocked; an error when it is locked with VMX off.
///
/// Locking also freezes the MSR's other enables (SGX, LMCE, SENTER) as they are.
///
/// ```
/// use vmx_caps::FeatureControl;
/// use vmx_core::{EnableError, feature_control_update};
///
/// // Bochs at reset: locked, VMX outside SMX on.
/// assert_eq!(feature_control_update(FeatureControl::from_bits_retain(0x5)), Ok(None));
/// // Unlocked firmware: lock it with VMX on.
/// assert_eq!(
///     feature_control_update(FeatureControl::empty()),
///     Ok(Some(FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX))
/// );
/// // Locked off by the firmware: only a reset helps.
/// assert_eq!(
///     feature_control_update(FeatureControl::LOCK),
///     Err(EnableError::VmxDisabledByFirmware(0x1))
/// );
/// ```
pub fn feature_control_update(
    current: FeatureControl,
) -> Result<Option<FeatureControl>, EnableError> {
    if current.contains(FeatureControl::LOCK) {
        if current.contains(FeatureControl::VMX_OUTSIDE_SMX) {
            Ok(None)
        } else {
            Err(EnableError::VmxDisabledByFirmware(current.bits()))
        }
    } else {
        Ok(Some(
            current | FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX,
        ))
    }
}

/// CR0 and CR4 for VMX operation (SDM Vol. 3C, §24.8): CR4.VMXE and every must-be-one bit of the
/// fixed bits ([`VmxCapabilities::cr0_fixed_bits`] for [`CrUse::Vmx`],
/// [`VmxCapabilities::cr4_fixed_bits`]) set. A bit that is set but must be 0 is an error rather
/// than silently cleared, since clearing it would change how the host runs.
pub fn vmx_control_registers(
    cr0: Cr0,
    cr4: Cr4,
    cr0_fixed: CrFixedBits<Cr0>,
    cr4_fixed: CrFixedBits<Cr4>,
) -> Result<(Cr0, Cr4), EnableError> {
    let cr0 = cr0 | cr0_fixed.must_be_one;
    let cr4 = cr4 | Cr4::VMXE | cr4_fixed.must_be_one;
    if let Err(error) = cr0_fixed.check(cr0) {
        return Err(EnableError::Cr0MustBeZero(error.forbidden));
    }
    if let Err(error) = cr4_fixed.check(cr4) {
        return Err(EnableError::Cr4MustBeZero(error.forbidden));
    }
    Ok((cr0, cr4))
}

/// The processor state before [`prepare`] changed it, restored if VMXON then fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriorState {
    /// CR0 before.
    pub cr0: Cr0,
    /// CR4 before (CR4.VMXE was clear).
    pub cr4: Cr4,
    /// The value written to IA32_FEATURE_CONTROL, if it was unlocked (it stays locked).
    pub feature_control_written: Option<FeatureControl>,
}

/// Every step before VMXON, on `platform`: checks CPUID for VMX and that CR4.VMXE is clear, sets
/// and locks IA32_FEATURE_CONTROL when it is unlocked ([`feature_control_update`]), checks the
/// control registers against the fixed bits of `caps` and writes CR0 and CR4
/// ([`vmx_control_registers`]). Nothing is written when a check fails.
///
/// # Safety
///
/// `platform` is the logical processor `caps` was read from, IA32_FEATURE_CONTROL exists on it
/// (it does wherever CPUID reports VMX), and the caller accepts the writes listed above: a lock of
/// IA32_FEATURE_CONTROL lasts until reset, and the CR0/CR4 bits set are those VMX operation
/// requires (a 64-bit host has the CR0 ones set already).
pub unsafe fn prepare(
    platform: &mut impl VmxPlatform,
    caps: &VmxCapabilities,
) -> Result<PriorState, EnableError> {
    if !platform.cpu_has_vmx() {
        return Err(EnableError::VmxUnsupported);
    }
    let cr0 = platform.read_cr0();
    let cr4 = platform.read_cr4();
    if cr4.contains(Cr4::VMXE) {
        return Err(EnableError::AlreadyEnabled);
    }
    // SAFETY: the processor reports VMX, so IA32_FEATURE_CONTROL exists (SDM Vol. 3C, §24.7).
    let feature_control =
        FeatureControl::from_bits_retain(unsafe { platform.read_msr(msr::IA32_FEATURE_CONTROL) });
    let update = feature_control_update(feature_control)?;
    let (new_cr0, new_cr4) = vmx_control_registers(
        cr0,
        cr4,
        caps.cr0_fixed_bits(CrUse::Vmx),
        caps.cr4_fixed_bits(),
    )?;
    if let Some(value) = update {
        // SAFETY: the MSR exists; the value keeps every bit the MSR had and adds the lock and
        // "enable VMX outside SMX", which the caller accepted.
        unsafe { platform.write_msr(msr::IA32_FEATURE_CONTROL, value.bits()) };
    }
    if new_cr0 != cr0 {
        // SAFETY: the current CR0 plus the must-be-one bits of IA32_VMX_CR0_FIXED0 (checked
        // against the must-be-zero bits): valid wherever VMX is, accepted by the caller.
        unsafe { platform.write_cr0(new_cr0) };
    }
    // SAFETY: the current CR4 plus CR4.VMXE and the must-be-one bits of IA32_VMX_CR4_FIXED0
    // (checked against the must-be-zero bits), accepted by the caller.
    unsafe { platform.write_cr4(new_cr4) };
    Ok(PriorState {
        cr0,
        cr4,
        feature_control_written: update,
    })
}

/// Token proving that a logical processor is in VMX root operation (SDM Vol. 3C, §24.7), owning
/// that processor `P` ([`LivePlatform`] for the one the code runs on, [`SoftVmx`](crate::SoftVmx)
/// for a software one). Created by [`VmxRoot::enable`] (VMXON), consumed by
/// [`VmxRoot::disable`] (VMXOFF), which gives the processor back.
///
/// It owns the VMXON region for as long as VMX operation lasts, and is `!Send` and `!Sync`: VMX
/// operation belongs to one logical processor. A VMCS is made current through it
/// ([`VmcsRegion::load`](crate::VmcsRegion::load)), which borrows it mutably so that only one
/// [`CurrentVmcs`](crate::CurrentVmcs) exists at a time. Owning `P` means that VMXOFF and the
/// CR4.VMXE change after it always go to the processor VMXON ran on.
///
/// Dropping the token without [`disable`](VmxRoot::disable) leaves the processor in VMX operation
/// with the VMXON region in use (sound: the `'static` region is never handed back).
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
/// assert_eq!(root.basic().revision_id(), caps.basic.revision_id());
/// // The token proves VMX root operation: VMCS regions are loaded through it, INVEPT runs on it.
/// let region = Box::leak(Box::new(VmcsRegion::zeroed()));
/// region.init(caps.basic.revision_id(), false)?;
/// let vmcs = region.load(&mut root, &|p: *const u8| Some(p as u64))?;
/// drop(vmcs); // VMCLEAR
/// // VMXOFF gives the processor and the VMXON region back.
/// let (_processor, _vmxon) = root.disable().map_err(|(_, e)| e)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "dropping the token leaves the processor in VMX operation; call `disable`"]
pub struct VmxRoot<P> {
    processor: P,
    region: &'static mut VmxonRegion,
    region_phys: u64,
    basic: VmxBasic,
    ept_vpid: EptVpidCap,
    prior: PriorState,
    _not_send: PhantomData<*mut ()>,
}

impl<P: VmxPlatform + VmxInstructions> VmxRoot<P> {
    /// Enters VMX root operation on `processor`: [`prepare`] (CPUID, IA32_FEATURE_CONTROL,
    /// CR0/CR4), then writes the revision identifier of IA32_VMX_BASIC into `region`, translates
    /// its address with `translate` and executes VMXON. If VMXON fails, CR0 and CR4 are restored
    /// (a lock written to IA32_FEATURE_CONTROL cannot be undone). On error the processor comes
    /// back with the error.
    ///
    /// # Safety
    ///
    /// - `processor` and `caps` describe the logical processor this runs on (CPL 0), which stays
    ///   the same until [`disable`](VmxRoot::disable); `caps` was read from it. (A software
    ///   processor such as [`SoftVmx`](crate::SoftVmx) describes itself and touches no memory.)
    /// - `translate` gives the true physical address of `region`.
    /// - No other code on this processor uses VMX or changes CR4.VMXE meanwhile.
    /// - The caller accepts the processor-state changes of [`prepare`].
    pub unsafe fn enable(
        mut processor: P,
        caps: &VmxCapabilities,
        region: &'static mut VmxonRegion,
        translate: &impl PhysTranslate,
    ) -> Result<VmxRoot<P>, (P, EnableError)> {
        let size = caps.basic.vmcs_region_size();
        if size as usize > REGION_SIZE {
            return Err((processor, RegionError::RegionTooLarge(size).into()));
        }
        if let Err(e) = region.init(caps.basic.revision_id()) {
            return Err((processor, e.into()));
        }
        let region_phys = match region_phys(
            core::ptr::from_ref(region).cast(),
            translate,
            caps.basic.physical_address_width_32(),
        ) {
            Ok(phys) => phys,
            Err(e) => return Err((processor, e.into())),
        };
        // SAFETY: the caller vouches for the processor, `caps` and the state changes.
        let prior = match unsafe { prepare(&mut processor, caps) } {
            Ok(prior) => prior,
            Err(e) => return Err((processor, e)),
        };
        // SAFETY: `prepare` enabled VMX in IA32_FEATURE_CONTROL and set CR4.VMXE and the fixed
        // bits; the region carries the revision identifier, is 4-KiB aligned at `region_phys`
        // (checked) and is owned by the returned token until VMXOFF.
        match unsafe { processor.vmxon(region_phys) } {
            Ok(()) => Ok(VmxRoot {
                processor,
                region,
                region_phys,
                basic: caps.basic,
                ept_vpid: caps.ept_vpid,
                prior,
                _not_send: PhantomData,
            }),
            Err(fail) => {
                // SAFETY: VMXON failed, so the processor is outside VMX operation: the CR4 and
                // CR0 values it had before `prepare` are valid again.
                unsafe {
                    processor.write_cr4(prior.cr4);
                    processor.write_cr0(prior.cr0);
                }
                Err((processor, EnableError::Vmxon(fail)))
            }
        }
    }

    /// Leaves VMX operation: VMXOFF, then clears CR4.VMXE (nothing else: CR0 and CR4 bits that
    /// `enable` set for the fixed-bit rules stay set, and changes the host made since are kept).
    /// Returns the processor and the VMXON region. If VMXOFF fails (VMfailValid 23 under the
    /// dual-monitor treatment of SMIs and SMM), the processor stays in VMX root operation and the
    /// token comes back with the error.
    #[allow(clippy::type_complexity)]
    pub fn disable(self) -> Result<(P, &'static mut VmxonRegion), (VmxRoot<P>, VmFail)> {
        let mut root = self;
        // SAFETY: the token proves VMX root operation of its processor at CPL 0. Every VMCS made
        // current through it was cleared by its `CurrentVmcs`, or that `CurrentVmcs` was leaked
        // together with its 'static region, which nothing can then reach.
        match unsafe { root.processor.vmxoff() } {
            Ok(()) => {
                let cr4 = root.processor.read_cr4();
                // SAFETY: the processor left VMX operation, where CR4.VMXE may be cleared; no
                // other bit changes.
                unsafe { root.processor.write_cr4(cr4 - Cr4::VMXE) };
                Ok((root.processor, root.region))
            }
            Err(fail) => Err((root, fail)),
        }
    }
}

impl<P: VmxInstructions> VmxRoot<P> {
    /// IA32_VMX_BASIC of the processor (revision identifier, region size, address width).
    #[must_use]
    pub fn basic(&self) -> VmxBasic {
        self.basic
    }

    /// IA32_VMX_EPT_VPID_CAP of the processor, against which INVEPT/INVVPID are checked.
    #[must_use]
    pub fn ept_vpid_cap(&self) -> EptVpidCap {
        self.ept_vpid
    }

    /// The physical address of the VMXON region (the VMXON pointer).
    #[must_use]
    pub fn vmxon_region_phys(&self) -> u64 {
        self.region_phys
    }

    /// The processor state before VMX operation.
    #[must_use]
    pub fn prior_state(&self) -> &PriorState {
        &self.prior
    }

    /// The processor in VMX root operation (e.g. a [`SoftVmx`](crate::SoftVmx)'s counters).
    #[must_use]
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// The processor, mutably, for its own safe methods (e.g. setting up a
    /// [`SoftVmx`](crate::SoftVmx)'s next VM exit). Its `unsafe` methods stay the caller's
    /// responsibility.
    pub fn processor_mut(&mut self) -> &mut P {
        &mut self.processor
    }

    /// INVEPT of type `invalidation` for the EPTP `eptp`, checked against IA32_VMX_EPT_VPID_CAP
    /// first: an unsupported type is an error, never replaced by another.
    /// [`InveptType::best_for`] picks a supported one.
    pub fn invept(&self, invalidation: InveptType, eptp: u64) -> Result<(), InvalidationError> {
        invalidation.check(&self.ept_vpid)?;
        let descriptor = InveptDescriptor::new(eptp);
        // SAFETY: the token proves VMX root operation at CPL 0 and `check` proved INVEPT and the
        // type supported; INVEPT only drops cached translations.
        unsafe { self.processor.invept(invalidation, &descriptor) }?;
        Ok(())
    }

    /// INVVPID of type `invalidation` for `vpid` (and `linear_address`, for individual-address
    /// invalidation), checked against IA32_VMX_EPT_VPID_CAP and the SDM's operand rules first
    /// (VPID 0 is refused for every type but all-context).
    pub fn invvpid(
        &self,
        invalidation: InvvpidType,
        vpid: u16,
        linear_address: u64,
    ) -> Result<(), InvalidationError> {
        invalidation.check(&self.ept_vpid)?;
        let descriptor = InvvpidDescriptor::new(invalidation, vpid, linear_address)?;
        // SAFETY: the token proves VMX root operation at CPL 0 and `check` proved INVVPID and the
        // type supported; INVVPID only drops cached translations.
        unsafe { self.processor.invvpid(invalidation, &descriptor) }?;
        Ok(())
    }
}
