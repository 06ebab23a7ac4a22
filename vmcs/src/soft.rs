//! The software backend: a VMCS in plain memory that answers VMREAD and VMWRITE the way a
//! processor does.

use core::fmt;

use vmx_caps::VmxCapabilities;
use vmx_core::{VmFail, VmInstructionError};

use crate::access::{VmcsRead, VmcsWrite};
use crate::field::{FieldInfo, FieldWidth, HIGH_ACCESS, RESERVED_ENCODING_BITS};
use crate::fields;
use crate::snapshot::VmcsSnapshot;

/// A VMCS in plain memory (no allocation), behind the same traits as the hardware one.
///
/// It behaves like a processor where software can tell:
/// - VMREAD/VMWRITE of an encoding the SDM does not define, with reserved encoding bits set, of a
///   high half of a field that is not 64-bit, or of a field whose index is above the
///   IA32_VMX_VMCS_ENUM highest index fails with error 12 ("unsupported VMCS component");
/// - VMWRITE to a VM-exit information field fails with error 13 ("VMWRITE to read-only VMCS
///   component") unless IA32_VMX_MISC\[29\] ("VMWRITE to any supported field") is set;
/// - 16-bit and 32-bit fields keep only their width (VMWRITE ignores the upper bits, VMREAD
///   zero-extends); the high-half encoding of a 64-bit field reads and writes bits 63:32.
///
/// It does not record errors in its own VM-instruction error field (the error comes back in the
/// [`VmFail`]), and a new one holds zero in every field.
///
/// ```
/// use vmcs::{fields, SoftVmcs, VmcsRead, VmcsWrite};
/// use vmx_core::{VmFail, VmInstructionError};
///
/// // A processor whose IA32_VMX_VMCS_ENUM highest index is 0x17 and without MISC[29].
/// let mut vmcs = SoftVmcs::with_limits(0x17, false);
/// vmcs.write(fields::GUEST_CS_SELECTOR, 0x10)?;
/// vmcs.write_raw(fields::GUEST_CS_LIMIT.encoding(), 0x1_ffff_ffff)?; // 32-bit: truncated
/// assert_eq!(vmcs.read(fields::GUEST_CS_LIMIT)?, 0xffff_ffff);
/// assert_eq!(
///     vmcs.write_raw(fields::EXIT_REASON.encoding(), 1),
///     Err(VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent))
/// );
/// // TSC multiplier has index 0x19, above this processor's highest index.
/// assert_eq!(
///     vmcs.read(fields::TSC_MULTIPLIER),
///     Err(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent))
/// );
/// # Ok::<(), VmFail>(())
/// ```
#[derive(Clone)]
pub struct SoftVmcs {
    values: [u64; fields::COUNT],
    highest_index: u16,
    vmwrite_any_field: bool,
}

const UNSUPPORTED: VmFail = VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent);
const READ_ONLY: VmFail = VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent);

/// Where an encoding lands in a [`SoftVmcs`].
#[derive(Clone, Copy)]
struct Slot {
    position: usize,
    high: bool,
    info: &'static FieldInfo,
}

impl SoftVmcs {
    /// A software VMCS that supports what the processor described by `caps` supports: fields up
    /// to its IA32_VMX_VMCS_ENUM highest index, writes to read-only fields when its IA32_VMX_MISC
    /// bit 29 is set.
    #[must_use]
    pub fn new(caps: &VmxCapabilities) -> Self {
        Self::with_limits(
            caps.vmcs_enum.highest_index(),
            caps.misc.vmwrite_any_field(),
        )
    }

    /// A software VMCS that supports fields whose index (encoding bits 9:1) is at most
    /// `highest_index`, and writes to VM-exit information fields when `vmwrite_any_field`.
    #[must_use]
    pub const fn with_limits(highest_index: u16, vmwrite_any_field: bool) -> Self {
        SoftVmcs {
            values: [0; fields::COUNT],
            highest_index,
            vmwrite_any_field,
        }
    }

    /// A software VMCS that supports every field of [`fields::ALL`]; VM-exit information fields
    /// stay read-only to VMWRITE (use [`SoftVmcs::store`] to fill them as a VM exit would).
    #[must_use]
    pub const fn all_fields() -> Self {
        Self::with_limits(fields::MAX_INDEX, false)
    }

    /// The IA32_VMX_VMCS_ENUM highest index this VMCS models.
    #[must_use]
    pub const fn highest_index(&self) -> u16 {
        self.highest_index
    }

    /// Whether VMWRITE may write VM-exit information fields (IA32_VMX_MISC\[29\]).
    #[must_use]
    pub const fn vmwrite_any_field(&self) -> bool {
        self.vmwrite_any_field
    }

    /// Whether VMREAD/VMWRITE of `encoding` would find a field (full or high-half encoding).
    #[must_use]
    pub fn supports(&self, encoding: u32) -> bool {
        self.slot(encoding).is_ok()
    }

    #[inline]
    fn slot(&self, encoding: u32) -> Result<Slot, VmFail> {
        if encoding & RESERVED_ENCODING_BITS != 0 {
            return Err(UNSUPPORTED);
        }
        let high = encoding & HIGH_ACCESS != 0;
        let position = fields::position(encoding & !HIGH_ACCESS).ok_or(UNSUPPORTED)?;
        let info = &fields::ALL[position];
        if high && info.width() != FieldWidth::Bits64 {
            return Err(UNSUPPORTED);
        }
        if info.index() > self.highest_index {
            return Err(UNSUPPORTED);
        }
        Ok(Slot {
            position,
            high,
            info,
        })
    }

    #[inline]
    fn put(&mut self, slot: Slot, value: u64) {
        let stored = &mut self.values[slot.position];
        if slot.high {
            *stored = (*stored & 0xffff_ffff) | (value << 32);
        } else {
            *stored = value & slot.info.width().mask();
        }
    }

    /// Writes any supported field, read-only ones included, as the processor does when it saves
    /// VM-exit information: the way to model a VM exit in tests.
    ///
    /// # Errors
    ///
    /// Error 12 (as [`VmcsWrite::write_raw`]) for an encoding this VMCS does not support.
    pub fn store(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        let slot = self.slot(encoding)?;
        self.put(slot, value);
        Ok(())
    }

    /// Loads every field of `snapshot` (read-only ones included), leaving the others unchanged.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the first field of the snapshot this VMCS does not support; fields
    /// before it in [`fields::ALL`] order are loaded.
    pub fn load(&mut self, snapshot: &VmcsSnapshot) -> Result<(), LoadError> {
        for (info, value) in snapshot.iter() {
            self.store(info.encoding, value).map_err(|_| LoadError {
                field: info.name,
                encoding: info.encoding,
                highest_index: self.highest_index,
            })?;
        }
        Ok(())
    }

    /// A software VMCS for `caps` holding the fields of `snapshot` (every other field zero).
    ///
    /// # Errors
    ///
    /// As [`SoftVmcs::load`].
    pub fn from_snapshot(
        caps: &VmxCapabilities,
        snapshot: &VmcsSnapshot,
    ) -> Result<Self, LoadError> {
        let mut vmcs = Self::new(caps);
        vmcs.load(snapshot)?;
        Ok(vmcs)
    }

    /// Every supported field with its value, in [`fields::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static FieldInfo, u64)> + '_ {
        fields::ALL
            .iter()
            .zip(self.values.iter())
            .filter(|(info, _)| info.index() <= self.highest_index)
            .map(|(info, value)| (info, *value))
    }
}

impl Default for SoftVmcs {
    fn default() -> Self {
        Self::all_fields()
    }
}

impl fmt::Debug for SoftVmcs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftVmcs")
            .field("highest_index", &self.highest_index)
            .field("vmwrite_any_field", &self.vmwrite_any_field)
            .field(
                "nonzero_fields",
                &self.iter().filter(|(_, v)| *v != 0).count(),
            )
            .finish()
    }
}

impl VmcsRead for SoftVmcs {
    #[inline]
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        let slot = self.slot(encoding)?;
        let value = self.values[slot.position];
        Ok(if slot.high { value >> 32 } else { value })
    }
}

impl VmcsWrite for SoftVmcs {
    #[inline]
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        let slot = self.slot(encoding)?;
        if slot.info.read_only() && !self.vmwrite_any_field {
            return Err(READ_ONLY);
        }
        self.put(slot, value);
        Ok(())
    }
}

/// A snapshot holds a field the software VMCS does not support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the snapshot holds {field} ({encoding:#06x}), which a VMCS with highest index {highest_index:#x} does not support"
)]
pub struct LoadError {
    /// Name of the field.
    pub field: &'static str,
    /// Its encoding.
    pub encoding: u32,
    /// The highest index of the VMCS it was loaded into.
    pub highest_index: u16,
}
