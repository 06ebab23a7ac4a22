//! The EPTP list for EPTP switching, VM function 0 (SDM Vol. 3C, 25.6.14 "VM-Function
//! Controls"; Vol. 2B, "VMFUNC—Invoke VM function", "EPTP Switching").

use vmcs_fields::EptPointer;
use vmx_core::PhysTranslate;

use super::{StructureError, in_frame, phys_of, vmcs_err};
use crate::{VmcsWrite, fields};

/// Entries in an EPTP list.
pub const EPTP_LIST_ENTRIES: usize = 512;

/// The EPTP list: 4 KiB, 4-KiB aligned, 512 EPT pointers (8 bytes each). With "enable VM
/// functions" and the EPTP-switching VM function, VMFUNC with EAX = 0 and ECX = *i* (< 512) loads
/// entry *i* into the EPT pointer and *i* into the EPTP index, without a VM exit, if the entry is
/// a valid EPTP; otherwise (or for ECX ≥ 512) it exits.
///
/// ```
/// use ept::EptPointer;
/// use vmcs::structures::EptpList;
///
/// let mut list = Box::new(EptpList::new());
/// list.set(1, EptPointer::from_bits(0x5000 | 0x1e))?;
/// assert_eq!(list.get(1), Some(EptPointer::from_bits(0x501e)));
/// assert!(list.set(512, EptPointer::from_bits(0x501e)).is_err());
/// # Ok::<(), vmcs::structures::StructureError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct EptpList {
    entries: [EptPointer; EPTP_LIST_ENTRIES],
}

const _: () = assert!(core::mem::size_of::<EptPointer>() == 8);
const _: () = assert!(core::mem::size_of::<EptpList>() == 4096);
const _: () = assert!(core::mem::align_of::<EptpList>() == 4096);
in_frame!(EptpList, "EPTP list", 4096);

impl EptpList {
    /// A list of zeros (no entry is a valid EPTP: VMFUNC 0 with any index exits).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [EptPointer::from_bits(0); EPTP_LIST_ENTRIES],
        }
    }

    fn index_error(index: u16) -> StructureError {
        StructureError::InvalidValue {
            structure: "EPTP list",
            what: "EPTP index",
            value: u64::from(index),
        }
    }

    /// Sets entry `index`.
    ///
    /// # Errors
    ///
    /// [`StructureError::InvalidValue`] for an index of 512 or more.
    pub fn set(&mut self, index: u16, eptp: EptPointer) -> Result<(), StructureError> {
        let slot = self
            .entries
            .get_mut(usize::from(index))
            .ok_or(Self::index_error(index))?;
        *slot = eptp;
        Ok(())
    }

    /// Entry `index` (`None` for an index of 512 or more).
    #[must_use]
    pub fn get(&self, index: u16) -> Option<EptPointer> {
        self.entries.get(usize::from(index)).copied()
    }

    /// Zeroes entry `index` (VMFUNC to it then exits).
    ///
    /// # Errors
    ///
    /// As [`EptpList::set`].
    pub fn clear(&mut self, index: u16) -> Result<(), StructureError> {
        self.set(index, EptPointer::from_bits(0))
    }

    /// Writes the list's physical address into `EPTP_LIST_ADDRESS` (4-KiB aligned), the
    /// current EPTP index into `EPTP_INDEX` and entry `current` into `EPT_POINTER`, so that
    /// the EPT pointer and the index agree as VMFUNC leaves them.
    ///
    /// # Errors
    ///
    /// [`StructureError::InvalidValue`] for an index of 512 or more, or an unmapped or
    /// misaligned list or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
        current: u16,
    ) -> Result<(), StructureError> {
        let eptp = self.get(current).ok_or(Self::index_error(current))?;
        let phys = phys_of(self, translate)?;
        vmcs.write(fields::EPTP_LIST_ADDRESS, phys)
            .and_then(|()| vmcs.write(fields::EPTP_INDEX, current))
            .and_then(|()| vmcs.write(fields::EPT_POINTER, eptp))
            .map_err(vmcs_err::<Self>)
    }
}

impl Default for EptpList {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for EptpList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map()
            .entries(
                self.entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.bits() != 0)
                    .map(|(i, e)| (i, super::Hex(e.bits()))),
            )
            .finish()
    }
}
