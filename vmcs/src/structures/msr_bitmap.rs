//! The MSR bitmaps (SDM Vol. 3C, 25.6.9 "MSR-Bitmap Address"; 26.1.3 "Instructions That Cause VM
//! Exits Conditionally", RDMSR and WRMSR).

use core::ops::RangeInclusive;

use vmx_core::PhysTranslate;

use super::bitmap::BitPage;
use super::{StructureError, in_frame, write_address};
use crate::{VmcsWrite, fields};

/// The direction of an MSR access: RDMSR or WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrAccess {
    /// RDMSR (the read bitmaps).
    Read,
    /// WRMSR (the write bitmaps).
    Write,
}

/// Why an MSR cannot be addressed in the MSR bitmaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MsrBitmapError {
    /// The MSR lies in neither range the bitmaps cover (00000000H–00001FFFH and
    /// C0000000H–C0001FFFH): RDMSR and WRMSR of it always exit.
    #[error(
        "MSR {0:#x} is outside the MSR bitmaps' ranges (0..=0x1fff, 0xc0000000..=0xc0001fff): its accesses always exit"
    )]
    OutOfRange(u32),
    /// A range whose two ends lie in different halves of the bitmaps, or runs backwards.
    #[error(
        "MSR range {first:#x}..={last:#x} is not inside one of the bitmaps' ranges (0..=0x1fff, 0xc0000000..=0xc0001fff)"
    )]
    BadRange {
        /// First MSR of the range.
        first: u32,
        /// Last MSR of the range.
        last: u32,
    },
}

/// First MSR of the high range.
const HIGH_BASE: u32 = 0xc000_0000;
/// MSRs per range.
const RANGE_LEN: u32 = 0x2000;

/// The four MSR bitmaps, one 4-KiB page (SDM Vol. 3C, 25.6.9): read bitmap for low MSRs
/// (00000000H–00001FFFH) at byte 0, read bitmap for high MSRs (C0000000H–C0001FFFH) at byte 1024,
/// write bitmap for low MSRs at 2048, write bitmap for high MSRs at 3072. A set bit makes RDMSR
/// (or WRMSR) of that MSR exit, when the "use MSR bitmaps" control is 1.
///
/// ```
/// use vmcs::structures::{MsrAccess, MsrBitmap};
///
/// // WRMSR to IA32_EFER (C0000080H): write-high quarter, byte 3072 + 0x80 / 8 = 3088, bit 0.
/// assert_eq!(MsrBitmap::bit_position(0xc000_0080, MsrAccess::Write)?, (3088, 0));
/// # Ok::<(), vmcs::structures::MsrBitmapError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct MsrBitmap {
    page: BitPage,
}

const _: () = assert!(core::mem::size_of::<MsrBitmap>() == 4096);
const _: () = assert!(core::mem::align_of::<MsrBitmap>() == 4096);
in_frame!(MsrBitmap, "MSR bitmap", 4096);

impl MsrBitmap {
    /// Byte offset of the read bitmap for low MSRs.
    pub const READ_LOW: usize = 0;
    /// Byte offset of the read bitmap for high MSRs.
    pub const READ_HIGH: usize = 1024;
    /// Byte offset of the write bitmap for low MSRs.
    pub const WRITE_LOW: usize = 2048;
    /// Byte offset of the write bitmap for high MSRs.
    pub const WRITE_HIGH: usize = 3072;

    /// Bitmaps in which every covered MSR exits on read and write.
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self {
            page: BitPage::filled(true),
        }
    }

    /// Bitmaps in which no covered MSR exits (MSRs outside the ranges still do).
    #[must_use]
    pub const fn pass_all() -> Self {
        Self {
            page: BitPage::filled(false),
        }
    }

    /// Sets every covered bit to `intercept`.
    pub fn fill(&mut self, intercept: bool) {
        self.page.fill(intercept);
    }

    /// Byte offset and bit number of the bit that controls `access` to `msr`.
    ///
    /// # Errors
    ///
    /// [`MsrBitmapError::OutOfRange`] for an MSR in neither range.
    pub const fn bit_position(msr: u32, access: MsrAccess) -> Result<(usize, u8), MsrBitmapError> {
        match Self::bit_index(msr, access) {
            Ok(n) => Ok(((n / 8) as usize, (n % 8) as u8)),
            Err(e) => Err(e),
        }
    }

    /// Bit number (from bit 0 of byte 0) of the bit for `access` to `msr`.
    const fn bit_index(msr: u32, access: MsrAccess) -> Result<u32, MsrBitmapError> {
        let (quarter, index) = match msr {
            0..=0x1fff => (0, msr),
            HIGH_BASE..=0xc000_1fff => (1, msr - HIGH_BASE),
            _ => return Err(MsrBitmapError::OutOfRange(msr)),
        };
        let quarter = match access {
            MsrAccess::Read => quarter,
            MsrAccess::Write => quarter + 2,
        };
        Ok(quarter * RANGE_LEN + index)
    }

    /// Makes `access` to `msr` exit (`intercept`) or not.
    ///
    /// # Errors
    ///
    /// [`MsrBitmapError::OutOfRange`]; nothing changes then.
    pub fn set(
        &mut self,
        msr: u32,
        access: MsrAccess,
        intercept: bool,
    ) -> Result<(), MsrBitmapError> {
        let n = Self::bit_index(msr, access)?;
        self.page.set(n, intercept);
        Ok(())
    }

    /// Makes `access` to `msr` exit.
    ///
    /// # Errors
    ///
    /// As [`MsrBitmap::set`].
    pub fn intercept(&mut self, msr: u32, access: MsrAccess) -> Result<(), MsrBitmapError> {
        self.set(msr, access, true)
    }

    /// Lets `access` to `msr` run without an exit.
    ///
    /// # Errors
    ///
    /// As [`MsrBitmap::set`].
    pub fn pass_through(&mut self, msr: u32, access: MsrAccess) -> Result<(), MsrBitmapError> {
        self.set(msr, access, false)
    }

    /// Sets the bits of every MSR in `msrs` (inside one of the two ranges) for `access`.
    ///
    /// # Errors
    ///
    /// [`MsrBitmapError::BadRange`] for an empty range or one not inside a single covered range;
    /// nothing changes then.
    pub fn set_range(
        &mut self,
        msrs: RangeInclusive<u32>,
        access: MsrAccess,
        intercept: bool,
    ) -> Result<(), MsrBitmapError> {
        let (first, last) = (*msrs.start(), *msrs.end());
        let bad = MsrBitmapError::BadRange { first, last };
        if first > last || (first < HIGH_BASE) != (last < HIGH_BASE) {
            return Err(bad);
        }
        let a = Self::bit_index(first, access).map_err(|_| bad)?;
        let b = Self::bit_index(last, access).map_err(|_| bad)?;
        self.page.set_range(a, b, intercept);
        Ok(())
    }

    /// Whether `access` to `msr` makes RDMSR/WRMSR exit with these bitmaps: the bit, or always
    /// for an MSR outside both ranges (SDM 26.1.3).
    #[must_use]
    pub fn exits(&self, msr: u32, access: MsrAccess) -> bool {
        match Self::bit_index(msr, access) {
            Ok(n) => self.page.get(n),
            Err(_) => true,
        }
    }

    /// Writes the bitmaps' physical address into `ADDRESS_OF_MSR_BITMAPS` (4-KiB aligned).
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned page or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        write_address(self, vmcs, translate, fields::ADDRESS_OF_MSR_BITMAPS)
    }

    /// Sets every bit that is set in `page` (a raw MSR-bitmap page, as the processor reads
    /// one): the union of two sets of intercepts.
    pub fn union_bytes(&mut self, page: &[u8; 4096]) {
        for (mine, theirs) in self.page.0.iter_mut().zip(page) {
            *mine |= theirs;
        }
    }

    /// The raw page, as the processor reads it.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 4096] {
        &self.page.0
    }

    /// The page of bits.
    pub(crate) fn page(&self) -> &BitPage {
        &self.page
    }

    /// The page of bits, to change.
    pub(crate) fn page_mut(&mut self) -> &mut BitPage {
        &mut self.page
    }
}

impl core::fmt::Debug for MsrBitmap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "MsrBitmap {{ {} of 32768 bits set }}",
            self.page.count_ones()
        )
    }
}

impl Default for MsrBitmap {
    fn default() -> Self {
        Self::pass_all()
    }
}
