//! The memory structures a VMCS points to, each with its SDM layout and the VMCS fields it goes
//! into (SDM Vol. 3C, chapter 25 "Virtual Machine Control Structures" and chapter 30 "APIC
//! Virtualization and Virtual Interrupts").
//!
//! | structure | SDM name | VMCS fields |
//! |---|---|---|
//! | [`MsrBitmap`] | MSR bitmaps (25.6.9) | `ADDRESS_OF_MSR_BITMAPS` |
//! | [`IoBitmaps`] | I/O bitmaps A and B (25.6.4) | `ADDRESS_OF_IO_BITMAP_A`, `_B` |
//! | [`ShadowBitmap`] | VMREAD and VMWRITE bitmaps (25.6.15) | `VMREAD_BITMAP_ADDRESS`, `VMWRITE_BITMAP_ADDRESS` |
//! | [`MsrArea`] | VM-entry MSR-load, VM-exit MSR-store and MSR-load areas (25.7.2, 25.8.2) | the three count/address pairs |
//! | [`VirtualApicPage`], [`ApicAccessPage`], [`GuestInterruptStatus`], [`VectorSet`] | virtual-APIC page, APIC-access page, RVI/SVI, EOI-exit bitmap (25.6.8, chapter 30) | `VIRTUAL_APIC_ADDRESS`, `TPR_THRESHOLD`, `APIC_ACCESS_ADDRESS`, `GUEST_INTERRUPT_STATUS`, `EOI_EXIT_BITMAP_0..3` |
//! | [`PostedInterruptDescriptor`] | posted-interrupt descriptor (30.6) | `POSTED_INTERRUPT_DESCRIPTOR_ADDRESS`, `POSTED_INTERRUPT_NOTIFICATION_VECTOR` |
//! | [`VeInformationArea`] | virtualization-exception information area (26.5.7.2) | `VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS` |
//! | [`EptpList`] | EPTP list for EPTP switching (25.6.14, VMFUNC leaf 0) | `EPTP_LIST_ADDRESS`, `EPTP_INDEX` |
//! | [`PmlLog`] | page-modification log (29.3.6) | `PML_ADDRESS`, `PML_INDEX` |
//! | [`SppTable`], [`SppVector`] | sub-page permission table ("Sub-Page Write Permissions") | `SUB_PAGE_PERMISSION_TABLE_POINTER` |
//!
//! Each structure is one `#[repr(C)]` declaration whose size, alignment and field offsets are
//! asserted at compile time. Physical addresses come from the caller's
//! [`PhysTranslate`], as for the VMXON and VMCS regions, and are checked
//! against the alignment the SDM requires; every `write_*` method writes its fields through the
//! typed field API ([`crate::fields`], [`VmcsWrite`](crate::VmcsWrite)).
//!
//! ```
//! use vmcs::structures::{IoBitmaps, MsrAccess, MsrBitmap};
//! use vmcs::{fields, SoftVmcs, VmcsRead};
//!
//! let mut msrs = Box::new(MsrBitmap::intercept_all());
//! msrs.pass_through(0xc000_0080, MsrAccess::Read)?; // RDMSR of IA32_EFER does not exit
//! assert!(!msrs.exits(0xc000_0080, MsrAccess::Read));
//! assert!(msrs.exits(0xc000_0080, MsrAccess::Write));
//! assert!(msrs.exits(0x4000_0000, MsrAccess::Read)); // outside both ranges: always exits
//!
//! let mut ports = Box::new(IoBitmaps::pass_all());
//! ports.intercept(0x8000);
//! assert!(ports.exits(0x7fff, 2)?); // a 2-byte access at 0x7fff touches 0x8000 (bitmap B bit 0)
//!
//! let mut vmcs = SoftVmcs::all_fields();
//! let identity = |p: *const u8| Some(p as u64);
//! msrs.write_to(&mut vmcs, &identity)?;
//! assert_eq!(vmcs.read(fields::ADDRESS_OF_MSR_BITMAPS)?, &*msrs as *const MsrBitmap as u64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apic;
pub(crate) mod bitmap;
mod eptp_list;
mod io_bitmap;
mod msr_area;
mod msr_bitmap;
mod pml;
mod posted;
mod shadow;
mod spp;
mod ve;
mod vectors;

pub use apic::{
    ApicAccessPage, ApicRegister, GuestInterruptStatus, VirtualApicPage, read_eoi_exit_bitmap,
    write_eoi_exit_bitmap,
};
pub use eptp_list::{EPTP_LIST_ENTRIES, EptpList};
pub use io_bitmap::{IoBitmapError, IoBitmaps};
pub use msr_area::{MsrArea, MsrAreaError, MsrAreaKind, MsrEntry, write_msr_areas};
pub use msr_bitmap::{MsrAccess, MsrBitmap, MsrBitmapError};
pub use pml::{PML_ENTRIES, PmlLog};
pub use posted::{PostOutcome, PostedInterruptDescriptor};
pub use shadow::{ShadowBitmap, ShadowBitmapError};
pub use spp::{SUBPAGE_SIZE, SUBPAGES, SppError, SppTable, SppVector, SppWalkError};
pub use ve::{VeInformation, VeInformationArea};
pub use vectors::VectorSet;

use vmx_core::{PhysTranslate, VmFail};

/// Why a structure could not be placed in a frame or written into a VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum StructureError {
    /// The caller's [`PhysTranslate`] does not map the structure.
    #[error("the {structure} at virtual address {virt:#x} has no physical address")]
    Unmapped {
        /// The SDM name of the structure.
        structure: &'static str,
        /// Its virtual address.
        virt: u64,
    },
    /// The physical address lacks the alignment the SDM requires of this structure.
    #[error("the {structure}'s physical address {phys:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The SDM name of the structure.
        structure: &'static str,
        /// The physical address the translation returned.
        phys: u64,
        /// The alignment the SDM requires (bytes).
        align: u64,
    },
    /// A frame handed to [`InFrame::from_frame`] is null.
    #[error("the frame pointer for the {structure} is null")]
    NullFrame {
        /// The SDM name of the structure.
        structure: &'static str,
    },
    /// A frame handed to [`InFrame::from_frame`] lacks the structure's alignment.
    #[error(
        "the frame at virtual address {virt:#x} is not {align}-byte aligned for the {structure}"
    )]
    FrameMisaligned {
        /// The SDM name of the structure.
        structure: &'static str,
        /// The frame's virtual address.
        virt: u64,
        /// The alignment the structure needs (bytes).
        align: u64,
    },
    /// A value the structure's VMCS fields cannot hold.
    #[error("{what} {value:#x} is out of range for the {structure}")]
    InvalidValue {
        /// The SDM name of the structure.
        structure: &'static str,
        /// What the value is (its SDM name).
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A VMWRITE of one of the structure's fields failed.
    #[error("writing the {structure}'s VMCS fields failed: {fail}")]
    Vmcs {
        /// The SDM name of the structure.
        structure: &'static str,
        /// The failure.
        fail: VmFail,
    },
}

mod sealed {
    pub trait Sealed {}
}

/// A structure of this module: its SDM name and the alignment of its physical address, and a
/// constructor in a caller-supplied frame.
///
/// Every structure is valid when all its bytes are zero (the state [`InFrame::from_frame`]
/// leaves it in): bitmaps that intercept nothing, empty lists and logs, a virtual-APIC page of
/// zeros.
pub trait InFrame: sealed::Sealed + Sized {
    /// The SDM's name of the structure, for error messages.
    const NAME: &'static str;
    /// The alignment the SDM requires of the structure's physical address (bytes).
    const PHYS_ALIGN: u64;

    /// The structure in memory the caller's allocator handed out, zeroed, without a cast at the
    /// call site.
    ///
    /// The pointer is checked (non-null, aligned to `align_of::<Self>()`:
    /// [`StructureError::NullFrame`], [`StructureError::FrameMisaligned`]) before anything is
    /// written. Its physical address is checked when the structure is written into a VMCS.
    ///
    /// # Errors
    ///
    /// As above; nothing is written then.
    ///
    /// # Safety
    ///
    /// When the checks pass, `frame` is valid for reads and writes of `size_of::<Self>()` bytes
    /// for `'a`, and nothing else accesses that memory during `'a` except through the returned
    /// reference (and the processor, as the VMCS that points to it directs).
    unsafe fn from_frame<'a>(frame: *mut u8) -> Result<&'a mut Self, StructureError> {
        if frame.is_null() {
            return Err(StructureError::NullFrame {
                structure: Self::NAME,
            });
        }
        let align = core::mem::align_of::<Self>();
        if !frame.addr().is_multiple_of(align) {
            return Err(StructureError::FrameMisaligned {
                structure: Self::NAME,
                virt: frame.addr() as u64,
                align: align as u64,
            });
        }
        // SAFETY: the caller guarantees size_of::<Self>() bytes at `frame`, exclusively ours for
        // 'a; the alignment was checked; every structure of this module is valid all-zero (its
        // fields are integers, atomics and arrays of them).
        unsafe {
            core::ptr::write_bytes(frame, 0, core::mem::size_of::<Self>());
            Ok(&mut *frame.cast::<Self>())
        }
    }

    /// The structure's physical address through `translate`, checked against
    /// [`InFrame::PHYS_ALIGN`].
    ///
    /// # Errors
    ///
    /// [`StructureError::Unmapped`] or [`StructureError::Misaligned`].
    fn phys_addr(&self, translate: &impl PhysTranslate) -> Result<u64, StructureError> {
        phys_of(self, translate)
    }
}

/// The physical address of `value` through `translate`, checked against `T::PHYS_ALIGN`.
fn phys_of<T: InFrame>(value: &T, translate: &impl PhysTranslate) -> Result<u64, StructureError> {
    let virt = core::ptr::from_ref(value).cast::<u8>();
    let phys = translate.translate(virt).ok_or(StructureError::Unmapped {
        structure: T::NAME,
        virt: virt.addr() as u64,
    })?;
    if !phys.is_multiple_of(T::PHYS_ALIGN) {
        return Err(StructureError::Misaligned {
            structure: T::NAME,
            phys,
            align: T::PHYS_ALIGN,
        });
    }
    Ok(phys)
}

/// Writes the physical address of `value` (checked as [`phys_of`] does) into `field`.
fn write_address<T: InFrame>(
    value: &T,
    vmcs: &mut impl crate::VmcsWrite,
    translate: &impl PhysTranslate,
    field: crate::Field<u64, crate::field::ReadWrite, crate::field::Width64>,
) -> Result<(), StructureError> {
    let phys = phys_of(value, translate)?;
    vmcs.write(field, phys).map_err(vmcs_err::<T>)
}

/// Maps a VMWRITE failure to [`StructureError::Vmcs`] naming structure `T`.
fn vmcs_err<T: InFrame>(fail: VmFail) -> StructureError {
    StructureError::Vmcs {
        structure: T::NAME,
        fail,
    }
}

/// A number that debug-prints in hexadecimal.
struct Hex(u64);

impl core::fmt::Debug for Hex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Declares that `$ty` is an [`InFrame`] structure named `$name`, with physical alignment `$align`.
macro_rules! in_frame {
    ($ty:ty, $name:literal, $align:expr) => {
        impl $crate::structures::sealed::Sealed for $ty {}
        impl $crate::structures::InFrame for $ty {
            const NAME: &'static str = $name;
            const PHYS_ALIGN: u64 = $align;
        }
        const _: () = assert!(core::mem::align_of::<$ty>() as u64 >= $align);
    };
}
use in_frame;
