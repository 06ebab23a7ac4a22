//! The VMXON region and VMCS regions, and the caller-supplied virtual-to-physical translation.

use core::fmt;

/// Size of a VMXON or VMCS region allocated by this crate: 4 KiB, the maximum IA32_VMX_BASIC\[44:32\]
/// may report (SDM Vol. 3D, Appendix A.1 "Basic VMX Information").
pub const REGION_SIZE: usize = 4096;

/// Translation from the host's virtual addresses to physical addresses, supplied by the caller.
///
/// VMXON, VMPTRLD and VMCLEAR take physical addresses; this crate never assumes that a virtual
/// address equals its physical address. Any `Fn(*const u8) -> Option<u64>` is a `PhysTranslate`,
/// so an identity-mapped kernel can pass `|p: *const u8| Some(p as u64)`.
///
/// ```
/// use vmx_core::PhysTranslate;
///
/// // A kernel whose direct map starts at 0xffff_8000_0000_0000.
/// let translate = |p: *const u8| (p as u64).checked_sub(0xffff_8000_0000_0000);
/// assert_eq!(translate.translate(0xffff_8000_0010_0000 as *const u8), Some(0x10_0000));
/// ```
pub trait PhysTranslate {
    /// The physical address of the byte at `virt`, or `None` when it is not mapped.
    fn translate(&self, virt: *const u8) -> Option<u64>;
}

impl<F: Fn(*const u8) -> Option<u64>> PhysTranslate for F {
    fn translate(&self, virt: *const u8) -> Option<u64> {
        self(virt)
    }
}

/// Why a region could not be prepared or used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RegionError {
    /// The revision identifier has bit 31 set; IA32_VMX_BASIC\[30:0\] never does (bit 31 of a VMCS
    /// region's first word is the shadow-VMCS indicator).
    #[error("VMCS revision identifier {0:#x} does not fit in 31 bits (IA32_VMX_BASIC[30:0])")]
    RevisionIdTooWide(u32),
    /// IA32_VMX_BASIC\[44:32\] reports a region larger than the 4 KiB this crate allocates.
    #[error("the processor wants {0}-byte VMXON/VMCS regions, more than the 4096 bytes allocated")]
    RegionTooLarge(u32),
    /// The caller's [`PhysTranslate`] does not map the region.
    #[error("the region at virtual address {0:#x} has no physical address")]
    Unmapped(u64),
    /// The caller's [`PhysTranslate`] returned a physical address that is not 4-KiB aligned.
    #[error("the region's physical address {0:#x} is not 4-KiB aligned")]
    Misaligned(u64),
    /// A frame handed to `from_frame` is the null pointer.
    #[error("the frame pointer is null")]
    NullFrame,
    /// A frame handed to `from_frame` does not start on a 4-KiB boundary (the region types are
    /// `align(4096)`).
    #[error("the frame at virtual address {0:#x} is not 4-KiB aligned")]
    FrameMisaligned(u64),
    /// The physical address does not fit in 32 bits while IA32_VMX_BASIC\[48\] limits VMX structures
    /// to the low 4 GiB.
    #[error(
        "the region's physical address {0:#x} is above 4 GiB, but IA32_VMX_BASIC[48] limits VMX regions to 32-bit addresses"
    )]
    AboveFourGib(u64),
}

/// The physical address of a region through the caller's translation, checked for alignment and,
/// when `addresses_32bit` (IA32_VMX_BASIC\[48\]), for the 4-GiB limit.
pub(crate) fn region_phys(
    virt: *const u8,
    translate: &impl PhysTranslate,
    addresses_32bit: bool,
) -> Result<u64, RegionError> {
    let phys = translate
        .translate(virt)
        .ok_or(RegionError::Unmapped(virt as u64))?;
    if !phys.is_multiple_of(REGION_SIZE as u64) {
        return Err(RegionError::Misaligned(phys));
    }
    if addresses_32bit && phys > u64::from(u32::MAX) {
        return Err(RegionError::AboveFourGib(phys));
    }
    Ok(phys)
}

/// Checks that `virt` can hold a region (non-null, 4-KiB aligned) and zeroes its 4 KiB, for the
/// `from_frame` constructors.
///
/// # Safety
///
/// As `VmxonRegion::from_frame`: when the checks pass, `virt` is valid for writes of
/// [`REGION_SIZE`] bytes that nothing else uses.
unsafe fn zero_frame(virt: *mut u8) -> Result<(), RegionError> {
    if virt.is_null() {
        return Err(RegionError::NullFrame);
    }
    let addr = virt.addr() as u64;
    if !addr.is_multiple_of(REGION_SIZE as u64) {
        return Err(RegionError::FrameMisaligned(addr));
    }
    // SAFETY: the caller guarantees REGION_SIZE writable bytes at `virt`, used by nothing else.
    unsafe { core::ptr::write_bytes(virt, 0, REGION_SIZE) };
    Ok(())
}

const REVISION_MASK: u32 = 0x7fff_ffff;
const SHADOW_BIT: u32 = 1 << 31;

/// The VMXON region (SDM Vol. 3C, §25.11.5 "VMXON Region"): 4 KiB, 4-KiB aligned, whose first 31
/// bits carry the VMCS revision identifier of IA32_VMX_BASIC\[30:0\].
///
/// ```
/// use vmx_core::VmxonRegion;
///
/// let region = VmxonRegion::new(0x2b)?;
/// assert_eq!(region.revision_id(), 0x2b);
/// assert_eq!(core::mem::align_of::<VmxonRegion>(), 4096);
/// # Ok::<(), vmx_core::RegionError>(())
/// ```
#[repr(C, align(4096))]
pub struct VmxonRegion {
    header: u32,
    data: [u8; REGION_SIZE - 4],
}

impl VmxonRegion {
    /// A zeroed region (revision identifier 0), suitable for a `static`; [`VmxRoot::enable`]
    /// writes the processor's revision identifier into it.
    ///
    /// [`VmxRoot::enable`]: crate::VmxRoot::enable
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            header: 0,
            data: [0; REGION_SIZE - 4],
        }
    }

    /// The region in a 4-KiB frame that the caller's allocator handed out, zeroed (revision
    /// identifier 0, as [`VmxonRegion::zeroed`]), without a cast at the call site. [`VmxRoot::enable`](crate::VmxRoot::enable) writes the revision identifier.
    ///
    /// The pointer is checked (non-null, 4-KiB aligned: [`RegionError::NullFrame`],
    /// [`RegionError::FrameMisaligned`]) before anything is written; its physical address is
    /// checked later, when the region is used, through the caller's [`PhysTranslate`].
    ///
    /// ```
    /// use vmx_core::{RegionError, VmxonRegion};
    ///
    /// // A 4-KiB frame from an allocator (here the host's heap, leaked for 'static).
    /// let layout = std::alloc::Layout::from_size_align(4096, 4096)?;
    /// // SAFETY (of this example): the layout's size is not zero.
    /// let frame = unsafe { std::alloc::alloc(layout) };
    /// // SAFETY (of this example): a fresh frame that nothing else uses.
    /// let region = unsafe { VmxonRegion::from_frame(frame) }?;
    /// assert_eq!(region.revision_id(), 0);
    /// // Misaligned: refused before anything is written.
    /// let odd = frame.wrapping_add(8);
    /// assert_eq!(unsafe { VmxonRegion::from_frame(odd) }.err(), Some(RegionError::FrameMisaligned(odd as u64)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Safety
    ///
    /// `virt` is the virtual address of [`REGION_SIZE`] bytes of writable memory that nothing
    /// else reads, writes or frees from now on (the region is handed out for `'static`, and the
    /// processor may use the memory while it is in VMX operation with it). Its previous
    /// contents do not matter (the frame is zeroed first).
    pub unsafe fn from_frame(virt: *mut u8) -> Result<&'static mut Self, RegionError> {
        // SAFETY: forwarded from the caller.
        unsafe { zero_frame(virt) }?;
        // SAFETY: `virt` is non-null, 4-KiB aligned (checked) and REGION_SIZE = size_of::<Self>()
        // bytes long, exclusively the caller's for 'static; all zeros is a valid `VmxonRegion` (an
        // integer header and bytes), and the frame was just zeroed.
        Ok(unsafe { &mut *virt.cast::<Self>() })
    }

    /// A zeroed region carrying `revision_id`.
    pub const fn new(revision_id: u32) -> Result<Self, RegionError> {
        let mut region = Self::zeroed();
        match region.init(revision_id) {
            Ok(()) => Ok(region),
            Err(error) => Err(error),
        }
    }

    /// Zeroes the region and writes `revision_id` into its first 31 bits (bit 31 is 0).
    pub const fn init(&mut self, revision_id: u32) -> Result<(), RegionError> {
        if revision_id & !REVISION_MASK != 0 {
            return Err(RegionError::RevisionIdTooWide(revision_id));
        }
        self.header = revision_id;
        self.data = [0; REGION_SIZE - 4];
        Ok(())
    }

    /// The revision identifier in the region's first 31 bits.
    #[must_use]
    pub const fn revision_id(&self) -> u32 {
        self.header & REVISION_MASK
    }

    /// The region's first 32-bit word, as the processor reads it.
    #[must_use]
    pub const fn header(&self) -> u32 {
        self.header
    }
}

impl fmt::Debug for VmxonRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmxonRegion")
            .field("revision_id", &self.revision_id())
            .finish_non_exhaustive()
    }
}

/// A VMCS region (SDM Vol. 3C, §25.2 "Format of the VMCS Region"): 4 KiB, 4-KiB aligned; bits 30:0
/// of the first word hold the VMCS revision identifier, bit 31 the shadow-VMCS indicator, the second
/// word the VMX-abort indicator; the rest is the processor's, in an implementation-specific format.
///
/// A `&'static mut` region becomes the current VMCS through [`VmcsRegion::load`], which returns
/// an [`CurrentVmcs`](crate::CurrentVmcs) owning it; [`CurrentVmcs::clear`](crate::CurrentVmcs::clear)
/// gives it back. While it is not loaded, the region is clear (VMCLEAR has written it back), so it
/// may be reloaded later.
///
/// ```
/// use vmx_core::VmcsRegion;
///
/// let shadow = VmcsRegion::new(0x2b, true)?;
/// assert_eq!((shadow.revision_id(), shadow.is_shadow()), (0x2b, true));
/// assert_eq!(shadow.header(), 0x8000_002b);
/// # Ok::<(), vmx_core::RegionError>(())
/// ```
#[repr(C, align(4096))]
pub struct VmcsRegion {
    header: u32,
    abort_indicator: u32,
    data: [u8; REGION_SIZE - 8],
}

impl VmcsRegion {
    /// A zeroed region (revision identifier 0, ordinary VMCS), suitable for a `static`;
    /// [`VmcsRegion::init`] or [`VmcsRegion::load`] writes the processor's revision identifier.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            header: 0,
            abort_indicator: 0,
            data: [0; REGION_SIZE - 8],
        }
    }

    /// The region in a 4-KiB frame that the caller's allocator handed out, zeroed (revision
    /// identifier 0, as [`VmcsRegion::zeroed`]), without a cast at the call site. [`VmcsRegion::init`] writes the revision identifier.
    ///
    /// The pointer is checked (non-null, 4-KiB aligned: [`RegionError::NullFrame`],
    /// [`RegionError::FrameMisaligned`]) before anything is written; its physical address is
    /// checked later, when the region is used, through the caller's [`PhysTranslate`].
    ///
    /// ```
    /// use vmx_core::VmcsRegion;
    ///
    /// let layout = std::alloc::Layout::from_size_align(4096, 4096)?;
    /// // SAFETY (of this example): the layout's size is not zero.
    /// let frame = unsafe { std::alloc::alloc(layout) };
    /// // SAFETY (of this example): a fresh frame that nothing else uses.
    /// let region = unsafe { VmcsRegion::from_frame(frame) }?;
    /// region.init(0x2b, false)?;
    /// assert_eq!(region.header(), 0x2b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Safety
    ///
    /// `virt` is the virtual address of [`REGION_SIZE`] bytes of writable memory that nothing
    /// else reads, writes or frees from now on (the region is handed out for `'static`, and the
    /// processor may use the memory while it is in VMX operation with it). Its previous
    /// contents do not matter (the frame is zeroed first).
    pub unsafe fn from_frame(virt: *mut u8) -> Result<&'static mut Self, RegionError> {
        // SAFETY: forwarded from the caller.
        unsafe { zero_frame(virt) }?;
        // SAFETY: `virt` is non-null, 4-KiB aligned (checked) and REGION_SIZE = size_of::<Self>()
        // bytes long, exclusively the caller's for 'static; all zeros is a valid `VmcsRegion` (an
        // integer header and bytes), and the frame was just zeroed.
        Ok(unsafe { &mut *virt.cast::<Self>() })
    }

    /// A zeroed region carrying `revision_id`, a shadow VMCS when `shadow` (SDM §25.10 "VMCS Types:
    /// Ordinary and Shadow").
    pub const fn new(revision_id: u32, shadow: bool) -> Result<Self, RegionError> {
        let mut region = Self::zeroed();
        match region.init(revision_id, shadow) {
            Ok(()) => Ok(region),
            Err(error) => Err(error),
        }
    }

    /// Zeroes the region and writes its header: `revision_id` in bits 30:0, `shadow` in bit 31.
    pub const fn init(&mut self, revision_id: u32, shadow: bool) -> Result<(), RegionError> {
        if revision_id & !REVISION_MASK != 0 {
            return Err(RegionError::RevisionIdTooWide(revision_id));
        }
        self.header = if shadow {
            revision_id | SHADOW_BIT
        } else {
            revision_id
        };
        self.abort_indicator = 0;
        self.data = [0; REGION_SIZE - 8];
        Ok(())
    }

    /// The VMCS revision identifier (bits 30:0 of the first word).
    #[must_use]
    pub const fn revision_id(&self) -> u32 {
        self.header & REVISION_MASK
    }

    /// The shadow-VMCS indicator (bit 31 of the first word).
    #[must_use]
    pub const fn is_shadow(&self) -> bool {
        self.header & SHADOW_BIT != 0
    }

    /// The region's first 32-bit word, as the processor reads it.
    #[must_use]
    pub const fn header(&self) -> u32 {
        self.header
    }

    /// The VMX-abort indicator (second word): nonzero after a VMX abort, holding the abort
    /// reason (SDM §28.7 "VMX Aborts").
    #[must_use]
    pub const fn abort_indicator(&self) -> u32 {
        self.abort_indicator
    }
}

impl fmt::Debug for VmcsRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmcsRegion")
            .field("revision_id", &self.revision_id())
            .field("shadow", &self.is_shadow())
            .field("abort_indicator", &self.abort_indicator)
            .finish_non_exhaustive()
    }
}
