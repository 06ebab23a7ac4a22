//! The VMREAD and VMWRITE bitmaps of VMCS shadowing (SDM Vol. 3C, 25.6.15 "VMCS Shadowing
//! Bitmap Addresses"; 26.1.3, VMREAD and VMWRITE).

use vmx_core::PhysTranslate;

use super::bitmap::{BitPage, PAGE_BITS};
use super::{StructureError, in_frame, write_address};
use crate::field::VmcsField;
use crate::{VmcsWrite, fields};

/// Why a raw encoding cannot be addressed in a VMREAD/VMWRITE bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ShadowBitmapError {
    /// Bits 63:15 of the encoding are not all zero: VMREAD/VMWRITE of it always exits in VMX
    /// non-root operation, no bitmap bit exists for it.
    #[error(
        "VMCS field encoding {0:#x} has bits set above bit 14: it has no VMREAD/VMWRITE bitmap bit"
    )]
    EncodingTooWide(u64),
}

/// A VMREAD bitmap or a VMWRITE bitmap, 4 KiB (SDM Vol. 3C, 25.6.15). With "VMCS shadowing" 1,
/// VMREAD (VMWRITE) in VMX non-root operation exits if bits 63:15 of the field encoding in its
/// register operand are not all zero, or if bit `x` of the VMREAD (VMWRITE) bitmap is set, where
/// `x` is bits 14:0 of the encoding; otherwise it accesses the shadow VMCS.
///
/// ```
/// use vmcs::fields;
/// use vmcs::structures::ShadowBitmap;
///
/// let mut reads = Box::new(ShadowBitmap::intercept_all());
/// reads.pass_through(fields::GUEST_RIP); // encoding 0x681e: byte 0x681e / 8, bit 6
/// assert_eq!(ShadowBitmap::bit_position(fields::GUEST_RIP), (0xd03, 6));
/// assert!(!reads.exits(fields::GUEST_RIP));
/// assert!(reads.exits_raw(0x1_681e)); // bit 16 set: always exits
/// ```
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct ShadowBitmap {
    page: BitPage,
}

const _: () = assert!(core::mem::size_of::<ShadowBitmap>() == 4096);
const _: () = assert!(core::mem::align_of::<ShadowBitmap>() == 4096);
// Bits 14:0 of an encoding index 32768 bits: exactly one page.
const _: () = assert!(PAGE_BITS == 1 << 15);
in_frame!(ShadowBitmap, "VMREAD/VMWRITE bitmap", 4096);

impl ShadowBitmap {
    /// A bitmap in which every field exits.
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self {
            page: BitPage::filled(true),
        }
    }

    /// A bitmap in which every field is accessed in the shadow VMCS without an exit.
    #[must_use]
    pub const fn pass_all() -> Self {
        Self {
            page: BitPage::filled(false),
        }
    }

    /// Sets every bit to `intercept`.
    pub fn fill(&mut self, intercept: bool) {
        self.page.fill(intercept);
    }

    /// Byte offset and bit number of `field`'s bit (its encoding's bits 14:0).
    #[must_use]
    pub fn bit_position(field: impl VmcsField) -> (usize, u8) {
        let x = field.encoding() & 0x7fff;
        ((x / 8) as usize, (x % 8) as u8)
    }

    /// Sets `field`'s bit (a typed field; a 64-bit field's high half is the separate field
    /// [`Field::high`](crate::Field::high)).
    pub fn set(&mut self, field: impl VmcsField, intercept: bool) {
        self.page.set(field.encoding() & 0x7fff, intercept);
    }

    /// Makes VMREAD/VMWRITE of `field` exit.
    pub fn intercept(&mut self, field: impl VmcsField) {
        self.set(field, true);
    }

    /// Lets VMREAD/VMWRITE of `field` access the shadow VMCS.
    pub fn pass_through(&mut self, field: impl VmcsField) {
        self.set(field, false);
    }

    /// Sets the bit of a raw encoding (as a guest puts it in the register operand).
    ///
    /// # Errors
    ///
    /// [`ShadowBitmapError::EncodingTooWide`] when bits 63:15 are not zero.
    pub fn set_raw(&mut self, encoding: u64, intercept: bool) -> Result<(), ShadowBitmapError> {
        if encoding >> 15 != 0 {
            return Err(ShadowBitmapError::EncodingTooWide(encoding));
        }
        self.page.set(encoding as u32, intercept);
        Ok(())
    }

    /// Whether VMREAD/VMWRITE of `field` exits with this bitmap.
    #[must_use]
    pub fn exits(&self, field: impl VmcsField) -> bool {
        self.page.get(field.encoding() & 0x7fff)
    }

    /// Whether VMREAD/VMWRITE with raw register operand `encoding` exits: always when bits 63:15
    /// are not zero, else its bit.
    #[must_use]
    pub fn exits_raw(&self, encoding: u64) -> bool {
        encoding >> 15 != 0 || self.page.get(encoding as u32)
    }

    /// Writes this bitmap's physical address into `VMREAD_BITMAP_ADDRESS` (4-KiB aligned).
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned page or a failed VMWRITE.
    pub fn write_as_vmread_bitmap(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        write_address(self, vmcs, translate, fields::VMREAD_BITMAP_ADDRESS)
    }

    /// Writes this bitmap's physical address into `VMWRITE_BITMAP_ADDRESS` (4-KiB aligned).
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned page or a failed VMWRITE.
    pub fn write_as_vmwrite_bitmap(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        write_address(self, vmcs, translate, fields::VMWRITE_BITMAP_ADDRESS)
    }

    /// The raw page, as the processor reads it.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 4096] {
        &self.page.0
    }
}

impl core::fmt::Debug for ShadowBitmap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "ShadowBitmap {{ {} of 32768 bits set }}",
            self.page.count_ones()
        )
    }
}

impl Default for ShadowBitmap {
    fn default() -> Self {
        Self::pass_all()
    }
}
