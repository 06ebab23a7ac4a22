//! The page-modification log (SDM Vol. 3C, 29.3.6 "Page-Modification Logging").

use core::sync::atomic::{AtomicU64, Ordering};

use vmx_core::{PhysTranslate, VmFail};

use super::{StructureError, in_frame, vmcs_err, write_address};
use crate::{VmcsRead, VmcsWrite, fields};

/// Entries in the page-modification log.
pub const PML_ENTRIES: usize = 512;

/// The page-modification log: 4 KiB, 4-KiB aligned, 512 64-bit guest-physical addresses.
///
/// With "enable PML" (and EPT A/D flags), before an access sets a dirty flag in the EPT the
/// processor checks the 16-bit PML index: if it is not in 0–511, a PML-full VM exit occurs
/// and nothing is logged; otherwise the processor writes the guest-physical address (bits 11:0
/// cleared) to entry *index* and decrements the index. The index therefore starts at 511 and
/// counts down; after 512 logged pages it wraps to FFFFH.
///
/// ```
/// use vmcs::structures::PmlLog;
///
/// let log = Box::new(PmlLog::new());
/// // The processor logged two pages: entries 511 and 510, index now 509.
/// log.store(511, 0x7000);
/// log.store(510, 0x3000);
/// assert_eq!(log.logged(509)?.collect::<Vec<_>>(), [0x7000, 0x3000]);
/// assert_eq!(PmlLog::logged_count(0xffff)?, 512); // full
/// # Ok::<(), vmcs::structures::StructureError>(())
/// ```
#[repr(C, align(4096))]
pub struct PmlLog {
    entries: [AtomicU64; PML_ENTRIES],
}

const _: () = assert!(core::mem::size_of::<PmlLog>() == 4096);
const _: () = assert!(core::mem::align_of::<PmlLog>() == 4096);
in_frame!(PmlLog, "page-modification log", 4096);

impl PmlLog {
    /// The PML index of an empty log: the first page is logged in entry 511.
    pub const INITIAL_INDEX: u16 = 511;
    /// The PML index after the log filled (511 decremented 512 times, wrapping).
    pub const FULL_INDEX: u16 = 0xffff;

    /// A log of zeros.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [const { AtomicU64::new(0) }; PML_ENTRIES],
        }
    }

    /// How many entries are logged when the PML index is `index`: `511 - index` for 0–511,
    /// 512 for FFFFH.
    ///
    /// # Errors
    ///
    /// [`StructureError::InvalidValue`] for 512–FFFEH, values the processor never leaves.
    pub fn logged_count(index: u16) -> Result<usize, StructureError> {
        match index {
            0..=511 => Ok(usize::from(Self::INITIAL_INDEX - index)),
            Self::FULL_INDEX => Ok(PML_ENTRIES),
            _ => Err(StructureError::InvalidValue {
                structure: "page-modification log",
                what: "PML index",
                value: u64::from(index),
            }),
        }
    }

    /// The logged guest-physical addresses, oldest first (entry 511 down to entry `index + 1`).
    ///
    /// # Errors
    ///
    /// As [`PmlLog::logged_count`].
    pub fn logged(&self, index: u16) -> Result<impl Iterator<Item = u64> + '_, StructureError> {
        let count = Self::logged_count(index)?;
        Ok((PML_ENTRIES - count..PML_ENTRIES)
            .rev()
            .map(|i| self.entries[i].load(Ordering::SeqCst)))
    }

    /// Entry `i` (`None` for 512 or more).
    #[must_use]
    pub fn entry(&self, i: usize) -> Option<u64> {
        self.entries.get(i).map(|e| e.load(Ordering::SeqCst))
    }

    /// Stores `gpa` in entry `i` as the processor would (for software logging and tests);
    /// `false` for 512 or more.
    pub fn store(&self, i: usize, gpa: u64) -> bool {
        match self.entries.get(i) {
            Some(e) => {
                e.store(gpa, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Reads `PML_INDEX`.
    ///
    /// # Errors
    ///
    /// The VMREAD's failure.
    pub fn read_index(vmcs: &impl VmcsRead) -> Result<u16, VmFail> {
        vmcs.read(fields::PML_INDEX)
    }

    /// Empties the log: writes 511 into `PML_INDEX`.
    ///
    /// # Errors
    ///
    /// The VMWRITE's failure.
    pub fn reset_index(vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
        vmcs.write(fields::PML_INDEX, Self::INITIAL_INDEX)
    }

    /// Writes the log's physical address into `PML_ADDRESS` (4-KiB aligned) and 511 into
    /// `PML_INDEX`.
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned log or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        write_address(self, vmcs, translate, fields::PML_ADDRESS)?;
        Self::reset_index(vmcs).map_err(vmcs_err::<Self>)
    }
}

impl Default for PmlLog {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PmlLog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let used = self
            .entries
            .iter()
            .filter(|e| e.load(Ordering::SeqCst) != 0)
            .count();
        write!(f, "PmlLog {{ {used} non-zero entries }}")
    }
}
