//! The VM-entry MSR-load area, the VM-exit MSR-store area and the VM-exit MSR-load area (SDM
//! Vol. 3C, 25.7.2 "VM-Exit Controls for MSRs", 25.8.2 "VM-Entry Controls for MSRs", 28.4 "Loading
//! MSRs", 29.4 "Saving MSRs", 29.6 "Loading MSRs" at VM exit).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use vmx_caps::VmxMisc;
use vmx_core::PhysTranslate;

use super::{InFrame, StructureError, phys_of, vmcs_err};
use crate::{VmcsWrite, fields};

/// One entry of an MSR area as a value: the MSR index (bits 31:0) and its data (bits 127:64);
/// bits 63:32 are reserved and written as zero (SDM Vol. 3C, Table 25-15 "Format of an MSR Entry").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MsrEntry {
    /// MSR index (bits 31:0).
    pub index: u32,
    /// MSR data (bits 127:64): loaded into the MSR, or where the processor stores it.
    pub data: u64,
}

impl MsrEntry {
    /// Bytes per entry.
    pub const SIZE: u64 = 16;

    /// Physical address of entry `i` of an area at `area` (its bytes are at
    /// `area + 16 * i`), wrapping as the processor's address arithmetic does.
    #[must_use]
    pub const fn address_in(area: u64, i: u64) -> u64 {
        area.wrapping_add(Self::SIZE.wrapping_mul(i))
    }

    /// Decodes the 16 bytes of an entry (little-endian): the entry and its reserved bits 63:32,
    /// which VM entry requires to be zero.
    #[must_use]
    pub fn from_le_bytes(bytes: [u8; 16]) -> (MsrEntry, u32) {
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let data = u64::from(word(8)) | u64::from(word(12)) << 32;
        (
            MsrEntry {
                index: word(0),
                data,
            },
            word(4),
        )
    }
}

/// An entry in memory: 16 bytes, written by the processor in an MSR-store area (hence atomics).
#[repr(C, align(16))]
struct RawEntry {
    index: AtomicU32,
    reserved: AtomicU32,
    data: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<RawEntry>() == 16);
const _: () = assert!(core::mem::align_of::<RawEntry>() == 16);
const _: () = assert!(core::mem::offset_of!(RawEntry, index) == 0);
const _: () = assert!(core::mem::offset_of!(RawEntry, reserved) == 4);
const _: () = assert!(core::mem::offset_of!(RawEntry, data) == 8);

impl RawEntry {
    const fn zero() -> RawEntry {
        RawEntry {
            index: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
            data: AtomicU64::new(0),
        }
    }
}

/// Which of the three MSR areas, and so which VMCS count and address fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrAreaKind {
    /// VM-entry MSR-load area: `VM_ENTRY_MSR_LOAD_COUNT`, `VM_ENTRY_MSR_LOAD_ADDRESS`.
    EntryLoad,
    /// VM-exit MSR-store area: `VM_EXIT_MSR_STORE_COUNT`, `VM_EXIT_MSR_STORE_ADDRESS`.
    ExitStore,
    /// VM-exit MSR-load area: `VM_EXIT_MSR_LOAD_COUNT`, `VM_EXIT_MSR_LOAD_ADDRESS`.
    ExitLoad,
}

impl MsrAreaKind {
    /// The SDM's name of the area.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            MsrAreaKind::EntryLoad => "VM-entry MSR-load area",
            MsrAreaKind::ExitStore => "VM-exit MSR-store area",
            MsrAreaKind::ExitLoad => "VM-exit MSR-load area",
        }
    }
}

/// Why an MSR area could not be changed or written into a VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MsrAreaError {
    /// The area's storage is full.
    #[error("the MSR area holds at most {capacity} entries")]
    Full {
        /// The area's capacity.
        capacity: usize,
    },
    /// More entries than IA32_VMX_MISC\[27:25\] allows (512 × (N + 1)).
    #[error(
        "{count} entries in the {area}, more than the {limit} IA32_VMX_MISC[27:25] allows (512 * (N + 1))",
        area = kind.name()
    )]
    TooManyEntries {
        /// The area.
        kind: MsrAreaKind,
        /// Entries in it.
        count: usize,
        /// The processor's limit.
        limit: u32,
    },
    /// The area's address or the VMWRITE failed.
    #[error(transparent)]
    Structure(#[from] StructureError),
}

/// An MSR area of up to `N` entries, 16-byte aligned, followed in memory by its entry count
/// (the count goes into the VMCS, not into the area). The processor reads (MSR-load) or writes
/// (MSR-store) the first `len()` 16-byte entries at the area's physical address.
///
/// `N` is at most 4096, the largest limit IA32_VMX_MISC\[27:25\] can report; the processor's own
/// limit is checked when the area is written into a VMCS.
///
/// ```
/// use vmcs::structures::{MsrArea, MsrEntry};
///
/// let mut area = MsrArea::<8>::new();
/// area.push(MsrEntry { index: 0xc000_0081, data: 0x0023_0010_0000_0000 })?; // IA32_STAR
/// assert_eq!(area.len(), 1);
/// assert_eq!(area.data_of(0xc000_0081), Some(0x0023_0010_0000_0000));
/// // Bytes 0..4 hold the index, 8..16 the data, as the SDM lays out an entry.
/// assert_eq!(&area.entry_bytes(0).unwrap()[..4], &0xc000_0081u32.to_le_bytes());
/// # Ok::<(), vmcs::structures::MsrAreaError>(())
/// ```
#[repr(C, align(16))]
pub struct MsrArea<const N: usize> {
    entries: [RawEntry; N],
    len: usize,
}

impl<const N: usize> super::sealed::Sealed for MsrArea<N> {}
impl<const N: usize> InFrame for MsrArea<N> {
    const NAME: &'static str = "MSR area";
    const PHYS_ALIGN: u64 = 16;
}

impl<const N: usize> MsrArea<N> {
    const CAPACITY_OK: () = assert!(N > 0 && N <= 4096, "an MSR area holds 1 to 4096 entries");

    /// An empty area.
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::CAPACITY_OK;
        Self {
            entries: [const { RawEntry::zero() }; N],
            len: 0,
        }
    }

    /// Entries in use (the count written into the VMCS).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is in use.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries the area can hold.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Empties the area.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `entry` (reserved bits zero) and returns its position.
    ///
    /// # Errors
    ///
    /// [`MsrAreaError::Full`] when `N` entries are in use.
    pub fn push(&mut self, entry: MsrEntry) -> Result<usize, MsrAreaError> {
        let slot = self
            .entries
            .get(self.len)
            .ok_or(MsrAreaError::Full { capacity: N })?;
        slot.index.store(entry.index, Ordering::Relaxed);
        slot.reserved.store(0, Ordering::Relaxed);
        slot.data.store(entry.data, Ordering::Relaxed);
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Entry `i`, as it is in memory now (after a VM exit, what the processor stored).
    #[must_use]
    pub fn get(&self, i: usize) -> Option<MsrEntry> {
        let raw = self.entries[..self.len].get(i)?;
        Some(MsrEntry {
            index: raw.index.load(Ordering::Relaxed),
            data: raw.data.load(Ordering::Relaxed),
        })
    }

    /// Replaces entry `i` (reserved bits zero); `false` when there is no entry `i`.
    pub fn set(&self, i: usize, entry: MsrEntry) -> bool {
        self.set_with_reserved(i, entry, 0)
    }

    /// Replaces entry `i` with bits 63:32 set to `reserved`, an entry VM entry refuses unless
    /// `reserved` is 0 (for tests of the VM-entry checks); `false` when there is no entry `i`.
    pub fn set_with_reserved(&self, i: usize, entry: MsrEntry, reserved: u32) -> bool {
        match self.entries[..self.len].get(i) {
            Some(raw) => {
                raw.index.store(entry.index, Ordering::Relaxed);
                raw.reserved.store(reserved, Ordering::Relaxed);
                raw.data.store(entry.data, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Sets the data of entry `i`; `false` when there is no entry `i`.
    pub fn set_data(&self, i: usize, data: u64) -> bool {
        match self.entries[..self.len].get(i) {
            Some(raw) => {
                raw.data.store(data, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The data of the first entry for MSR `index`.
    #[must_use]
    pub fn data_of(&self, index: u32) -> Option<u64> {
        self.iter().find(|e| e.index == index).map(|e| e.data)
    }

    /// The entries in use, in order.
    pub fn iter(&self) -> impl Iterator<Item = MsrEntry> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }

    /// The 16 bytes of entry `i` as the processor sees them (little-endian).
    #[must_use]
    pub fn entry_bytes(&self, i: usize) -> Option<[u8; 16]> {
        let raw = self.entries[..self.len].get(i)?;
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&raw.index.load(Ordering::Relaxed).to_le_bytes());
        bytes[4..8].copy_from_slice(&raw.reserved.load(Ordering::Relaxed).to_le_bytes());
        bytes[8..].copy_from_slice(&raw.data.load(Ordering::Relaxed).to_le_bytes());
        Some(bytes)
    }

    /// Writes this area's count and 16-byte-aligned physical address into the count and
    /// address fields of `kind`, after checking the count against IA32_VMX_MISC\[27:25\].
    ///
    /// # Errors
    ///
    /// [`MsrAreaError::TooManyEntries`], or [`MsrAreaError::Structure`] for an unmapped or
    /// misaligned area or a failed VMWRITE.
    pub fn write_as(
        &self,
        kind: MsrAreaKind,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
        misc: VmxMisc,
    ) -> Result<(), MsrAreaError> {
        let limit = misc.max_msr_list_entries();
        if self.len > limit as usize {
            return Err(MsrAreaError::TooManyEntries {
                kind,
                count: self.len,
                limit,
            });
        }
        let phys = phys_of(self, translate)?;
        let count = self.len as u32;
        let (count_field, address_field) = match kind {
            MsrAreaKind::EntryLoad => (
                fields::VM_ENTRY_MSR_LOAD_COUNT,
                fields::VM_ENTRY_MSR_LOAD_ADDRESS,
            ),
            MsrAreaKind::ExitStore => (
                fields::VM_EXIT_MSR_STORE_COUNT,
                fields::VM_EXIT_MSR_STORE_ADDRESS,
            ),
            MsrAreaKind::ExitLoad => (
                fields::VM_EXIT_MSR_LOAD_COUNT,
                fields::VM_EXIT_MSR_LOAD_ADDRESS,
            ),
        };
        vmcs.write(address_field, phys)
            .and_then(|()| vmcs.write(count_field, count))
            .map_err(|fail| MsrAreaError::Structure(vmcs_err::<Self>(fail)))
    }
}

impl<const N: usize> Default for MsrArea<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for MsrArea<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Writes the three MSR areas' count and address fields together: `entry_load` into the
/// VM-entry MSR-load fields, `exit_store` into the VM-exit MSR-store fields, `exit_load` into the
/// VM-exit MSR-load fields (an empty area writes count 0). The same area may serve as VM-exit
/// MSR-store and VM-entry MSR-load area, the usual way to keep guest MSRs across exits. Every
/// count is checked before anything is written.
///
/// # Errors
///
/// As [`MsrArea::write_as`]; on a count error nothing is written.
pub fn write_msr_areas<const A: usize, const B: usize, const C: usize>(
    vmcs: &mut impl VmcsWrite,
    translate: &impl PhysTranslate,
    misc: VmxMisc,
    entry_load: &MsrArea<A>,
    exit_store: &MsrArea<B>,
    exit_load: &MsrArea<C>,
) -> Result<(), MsrAreaError> {
    let limit = misc.max_msr_list_entries();
    for (kind, count) in [
        (MsrAreaKind::EntryLoad, entry_load.len()),
        (MsrAreaKind::ExitStore, exit_store.len()),
        (MsrAreaKind::ExitLoad, exit_load.len()),
    ] {
        if count > limit as usize {
            return Err(MsrAreaError::TooManyEntries { kind, count, limit });
        }
    }
    entry_load.write_as(MsrAreaKind::EntryLoad, vmcs, translate, misc)?;
    exit_store.write_as(MsrAreaKind::ExitStore, vmcs, translate, misc)?;
    exit_load.write_as(MsrAreaKind::ExitLoad, vmcs, translate, misc)
}
