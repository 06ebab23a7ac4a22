//! Entering and leaving VMX operation (SDM Vol. 3C, §24.7 "Enabling and Entering VMX Operation",
//! §24.8 "Restrictions on VMX Operation"), with the checks split into pure steps over a
//! [`VmxPlatform`] so that they run on the host against fakes.

use core::arch::asm;
use core::marker::PhantomData;

use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::{CrFixedBits, CrUse, EptVpidCap, FeatureControl, VmxBasic, VmxCapabilities, msr};

use crate::error::VmFail;
use crate::instructions;
use crate::invalidation::{
    InvalidationError, InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType,
};
use crate::region::{PhysTranslate, REGION_SIZE, RegionError, VmxonRegion, region_phys};

/// The processor state that entering VMX operation reads and changes: CPUID, MSRs and control
/// registers. [`LivePlatform`] is the processor itself; tests substitute a fake.
pub trait VmxPlatform {
    /// CPUID.1:ECX.VMX\[bit 5\].
    fn cpu_has_vmx(&mut self) -> bool;
    /// RDMSR of an MSR that exists on this processor.
    fn read_msr(&mut self, msr: u32) -> u64;
    /// WRMSR of an MSR that exists on this processor.
    fn write_msr(&mut self, msr: u32, value: u64);
    /// MOV from CR0.
    fn read_cr0(&mut self) -> Cr0;
    /// MOV to CR0.
    fn write_cr0(&mut self, value: Cr0);
    /// MOV from CR4.
    fn read_cr4(&mut self) -> Cr4;
    /// MOV to CR4.
    fn write_cr4(&mut self, value: Cr4);
}

/// The running processor as a [`VmxPlatform`] (CPUID, RDMSR/WRMSR, MOV to/from CR0/CR4). `!Send`:
/// it stands for the logical processor it was created on.
#[derive(Debug)]
pub struct LivePlatform {
    _not_send: PhantomData<*mut ()>,
}

impl LivePlatform {
    /// The processor this code runs on.
    ///
    /// # Safety
    ///
    /// CPL 0 (RDMSR, WRMSR and MOV CR fault elsewhere); the caller stays on this logical processor
    /// while using it and accepts that [`VmxRoot::enable`] sets and locks IA32_FEATURE_CONTROL and
    /// changes CR0/CR4 as documented there.
    #[must_use]
    pub unsafe fn new() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

impl VmxPlatform for LivePlatform {
    fn cpu_has_vmx(&mut self) -> bool {
        vmx_caps::cpu_has_vmx()
    }

    fn read_msr(&mut self, msr: u32) -> u64 {
        // SAFETY: `new`'s contract puts us at CPL 0; the trait requires an existing MSR.
        unsafe { x86::msr::rdmsr(msr) }
    }

    fn write_msr(&mut self, msr: u32, value: u64) {
        // SAFETY: as `read_msr`; the values written by this crate are the SDM's.
        unsafe { x86::msr::wrmsr(msr, value) }
    }

    fn read_cr0(&mut self) -> Cr0 {
        let value: u64;
        // SAFETY: CPL 0 by `new`'s contract; reading CR0 has no side effect.
        unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
        Cr0::from_bits_retain(value)
    }

    fn write_cr0(&mut self, value: Cr0) {
        // SAFETY: CPL 0 by `new`'s contract; the caller of `VmxRoot::enable` accepted the CR0
        // changes it documents (setting IA32_VMX_CR0_FIXED0 bits, which a 64-bit host has set).
        unsafe { asm!("mov cr0, {}", in(reg) value.bits(), options(nostack, preserves_flags)) };
    }

    fn read_cr4(&mut self) -> Cr4 {
        let value: u64;
        // SAFETY: CPL 0 by `new`'s contract; reading CR4 has no side effect.
        unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
        Cr4::from_bits_retain(value)
    }

    fn write_cr4(&mut self, value: Cr4) {
        // SAFETY: CPL 0 by `new`'s contract; the caller accepted the CR4 changes documented by
        // `VmxRoot::enable` (CR4.VMXE and the IA32_VMX_CR4_FIXED0 bits).
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
pub fn prepare(
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
    let feature_control =
        FeatureControl::from_bits_retain(platform.read_msr(msr::IA32_FEATURE_CONTROL));
    let update = feature_control_update(feature_control)?;
    let (new_cr0, new_cr4) = vmx_control_registers(
        cr0,
        cr4,
        caps.cr0_fixed_bits(CrUse::Vmx),
        caps.cr4_fixed_bits(),
    )?;
    if let Some(value) = update {
        platform.write_msr(msr::IA32_FEATURE_CONTROL, value.bits());
    }
    if new_cr0 != cr0 {
        platform.write_cr0(new_cr0);
    }
    platform.write_cr4(new_cr4);
    Ok(PriorState {
        cr0,
        cr4,
        feature_control_written: update,
    })
}

/// Token proving that this logical processor is in VMX root operation (SDM Vol. 3C, §24.7). Created
/// by [`VmxRoot::enable`] (VMXON), consumed by [`VmxRoot::disable`] (VMXOFF).
///
/// It owns the VMXON region for as long as VMX operation lasts, and is `!Send` and `!Sync`: VMX
/// operation belongs to one logical processor. A VMCS is made current through it
/// ([`VmcsRegion::load`](crate::VmcsRegion::load)), which borrows it mutably so that only one
/// [`ActiveVmcs`](crate::ActiveVmcs) exists at a time.
///
/// Dropping the token without [`disable`](VmxRoot::disable) leaves the processor in VMX operation
/// with the VMXON region in use (sound: the `'static` region is never handed back).
#[derive(Debug)]
#[must_use = "dropping the token leaves the processor in VMX operation; call `disable`"]
pub struct VmxRoot {
    region: &'static mut VmxonRegion,
    region_phys: u64,
    basic: VmxBasic,
    ept_vpid: EptVpidCap,
    prior: PriorState,
    _not_send: PhantomData<*mut ()>,
}

impl VmxRoot {
    /// Enters VMX root operation: [`prepare`] (CPUID, IA32_FEATURE_CONTROL, CR0/CR4), then writes
    /// the revision identifier of IA32_VMX_BASIC into `region`, translates its address with
    /// `translate` and executes VMXON. If VMXON fails, CR0 and CR4 are restored (a lock written to
    /// IA32_FEATURE_CONTROL cannot be undone).
    ///
    /// # Safety
    ///
    /// - `platform` and `caps` describe the logical processor this runs on (CPL 0), which stays
    ///   the same until [`disable`](VmxRoot::disable); `caps` was read from it.
    /// - `translate` gives the true physical address of `region`.
    /// - No other code on this processor uses VMX or changes CR4.VMXE meanwhile.
    pub unsafe fn enable(
        platform: &mut impl VmxPlatform,
        caps: &VmxCapabilities,
        region: &'static mut VmxonRegion,
        translate: &impl PhysTranslate,
    ) -> Result<VmxRoot, EnableError> {
        let size = caps.basic.vmcs_region_size();
        if size as usize > REGION_SIZE {
            return Err(RegionError::RegionTooLarge(size).into());
        }
        region.init(caps.basic.revision_id())?;
        let region_phys = region_phys(
            core::ptr::from_ref(region).cast(),
            translate,
            caps.basic.physical_address_width_32(),
        )?;
        let prior = prepare(platform, caps)?;
        // SAFETY: `prepare` enabled VMX in IA32_FEATURE_CONTROL and set CR4.VMXE and the fixed
        // bits; the region carries the revision identifier, is 4-KiB aligned at `region_phys`
        // (checked) and is owned by the returned token until VMXOFF.
        match unsafe { instructions::vmxon(region_phys) } {
            Ok(()) => Ok(VmxRoot {
                region,
                region_phys,
                basic: caps.basic,
                ept_vpid: caps.ept_vpid,
                prior,
                _not_send: PhantomData,
            }),
            Err(fail) => {
                platform.write_cr4(prior.cr4);
                platform.write_cr0(prior.cr0);
                Err(EnableError::Vmxon(fail))
            }
        }
    }

    /// Leaves VMX operation: VMXOFF, then clears CR4.VMXE (nothing else: CR0 and CR4 bits that
    /// `enable` set for the fixed-bit rules stay set, and changes the host made since are kept).
    /// Returns the VMXON region. If VMXOFF fails (VMfailValid 23 under the dual-monitor
    /// treatment of SMIs and SMM), the processor stays in VMX root operation and the token comes
    /// back with the error.
    pub fn disable(
        self,
        platform: &mut impl VmxPlatform,
    ) -> Result<&'static mut VmxonRegion, (VmxRoot, VmFail)> {
        // SAFETY: the token proves VMX root operation at CPL 0. Every VMCS made current through
        // it was cleared by its `ActiveVmcs`, or that `ActiveVmcs` was leaked together with its
        // 'static region, which nothing can then reach.
        match unsafe { instructions::vmxoff() } {
            Ok(()) => {
                let cr4 = platform.read_cr4();
                platform.write_cr4(cr4 - Cr4::VMXE);
                Ok(self.region)
            }
            Err(fail) => Err((self, fail)),
        }
    }

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

    /// INVEPT of type `invalidation` for the EPTP `eptp`, checked against IA32_VMX_EPT_VPID_CAP
    /// first: an unsupported type is an error, never replaced by another.
    /// [`InveptType::best_for`] picks a supported one.
    pub fn invept(&self, invalidation: InveptType, eptp: u64) -> Result<(), InvalidationError> {
        invalidation.check(&self.ept_vpid)?;
        let descriptor = InveptDescriptor::new(eptp);
        // SAFETY: the token proves VMX root operation at CPL 0 and `check` proved INVEPT and the
        // type supported; INVEPT only drops cached translations.
        unsafe { instructions::invept(invalidation, &descriptor) }?;
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
        unsafe { instructions::invvpid(invalidation, &descriptor) }?;
        Ok(())
    }
}
