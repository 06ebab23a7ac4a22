//! A snapshot of every readable field of a VMCS, and its human-readable dump.

use core::fmt;

use vmx_core::{VmFail, VmInstructionError};

use crate::FieldValue;
use crate::access::VmcsRead;
use crate::field::{FieldInfo, FieldType, VmcsField};
use crate::fields;

/// The values of a VMCS's readable fields, keyed by encoding (no allocation: one slot per field
/// of [`fields::ALL`]).
///
/// [`VmcsSnapshot::capture`] reads every field of the table from any [`VmcsRead`] (hardware or
/// software) and leaves out those the VMCS does not support; [`crate::SoftVmcs::load`] loads it
/// back. With the `serde` feature a snapshot serializes as a map from encoding to value; keys are
/// read back as integers, as decimal or `0x` hexadecimal strings, or as field names.
///
/// ```
/// use vmcs::{fields, SoftVmcs, VmcsRead, VmcsSnapshot, VmcsWrite};
///
/// let mut vmcs = SoftVmcs::all_fields();
/// vmcs.write(fields::GUEST_RIP, 0xfff0)?;
/// vmcs.store(fields::EXIT_REASON.encoding(), 12)?; // as a VM exit for HLT would
///
/// let snapshot = VmcsSnapshot::capture(&vmcs)?;
/// assert_eq!(snapshot.get(fields::GUEST_RIP), Some(0xfff0));
/// assert_eq!(snapshot.get_raw(0x4402), Some(12));
///
/// let mut copy = SoftVmcs::all_fields();
/// copy.load(&snapshot).unwrap();
/// assert_eq!(copy.read(fields::EXIT_REASON)?, 12);
/// assert!(snapshot.dump().to_string().contains("GUEST_RIP"));
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct VmcsSnapshot {
    values: [Option<u64>; fields::COUNT],
}

/// An encoding that names no field of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:#x} is not the full encoding of a VMCS field")]
pub struct UnknownField(pub u32);

impl VmcsSnapshot {
    /// A snapshot without any field.
    #[must_use]
    pub const fn new() -> Self {
        VmcsSnapshot {
            values: [None; fields::COUNT],
        }
    }

    /// Reads every field of [`fields::ALL`] from `vmcs`. Fields it does not support (VMREAD fails
    /// with error 12) are left out.
    ///
    /// # Errors
    ///
    /// Any other VMREAD failure (e.g. [`VmFail::Invalid`]: no current VMCS).
    pub fn capture<R: VmcsRead + ?Sized>(vmcs: &R) -> Result<Self, VmFail> {
        let mut snapshot = Self::new();
        for (slot, info) in snapshot.values.iter_mut().zip(fields::ALL.iter()) {
            match vmcs.read_raw(info.encoding) {
                Ok(value) => *slot = Some(value),
                Err(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(snapshot)
    }

    /// The raw value of the field with full encoding `encoding`, if the snapshot holds it.
    #[must_use]
    pub fn get_raw(&self, encoding: u32) -> Option<u64> {
        fields::position(encoding).and_then(|i| self.values[i])
    }

    /// The value of `field`, decoded as its value type, if the snapshot holds it (a high-half
    /// handle yields bits 63:32 of its field).
    #[must_use]
    pub fn get<F: VmcsField>(&self, field: F) -> Option<F::Value> {
        let encoding = field.encoding();
        let raw = self.get_raw(encoding & !crate::field::HIGH_ACCESS)?;
        let raw = if encoding & crate::field::HIGH_ACCESS != 0 {
            raw >> 32
        } else {
            raw
        };
        Some(F::Value::from_raw(raw))
    }

    /// Sets the field with full encoding `encoding` (truncated to the field's width), returning
    /// the previous value.
    ///
    /// # Errors
    ///
    /// [`UnknownField`] when `encoding` is not the full encoding of a field of the table.
    pub fn insert(&mut self, encoding: u32, value: u64) -> Result<Option<u64>, UnknownField> {
        let i = fields::position(encoding).ok_or(UnknownField(encoding))?;
        let mask = fields::ALL[i].width().mask();
        Ok(self.values[i].replace(value & mask))
    }

    /// Removes the field with full encoding `encoding`, returning its value.
    pub fn remove(&mut self, encoding: u32) -> Option<u64> {
        fields::position(encoding).and_then(|i| self.values[i].take())
    }

    /// The fields the snapshot holds, with their values, in [`fields::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static FieldInfo, u64)> + '_ {
        fields::ALL
            .iter()
            .zip(self.values.iter())
            .filter_map(|(info, value)| value.map(|v| (info, v)))
    }

    /// Number of fields held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    /// Whether no field is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// A human-readable dump: the fields grouped as the SDM groups them (guest state, host state,
    /// controls, VM-exit information), one line per field with its name, encoding, raw value and
    /// decoded value.
    #[must_use]
    pub fn dump(&self) -> Dump<'_> {
        Dump { snapshot: self }
    }
}

/// A snapshot reads like the VMCS it was taken from: VMREAD of a field it does not hold (or of an
/// encoding that names no field) fails with error 12, high halves read bits 63:32.
impl VmcsRead for VmcsSnapshot {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        let unsupported = VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent);
        let full = encoding & !crate::field::HIGH_ACCESS;
        let info = fields::by_encoding(full).ok_or(unsupported)?;
        let value = self.get_raw(full).ok_or(unsupported)?;
        if encoding & crate::field::HIGH_ACCESS == 0 {
            Ok(value)
        } else if info.width() == crate::field::FieldWidth::Bits64 {
            Ok(value >> 32)
        } else {
            Err(unsupported)
        }
    }
}

impl Default for VmcsSnapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for VmcsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(info, value)| (info.name, value)))
            .finish()
    }
}

/// The human-readable dump of a [`VmcsSnapshot`]; see [`VmcsSnapshot::dump`].
#[derive(Clone, Copy)]
pub struct Dump<'a> {
    snapshot: &'a VmcsSnapshot,
}

impl fmt::Display for Dump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ORDER: [FieldType; 4] = [
            FieldType::GuestState,
            FieldType::HostState,
            FieldType::Control,
            FieldType::ExitInformation,
        ];
        let name_width = self
            .snapshot
            .iter()
            .map(|(info, _)| info.name.len())
            .fold(0, usize::max);
        for (n, ty) in ORDER.into_iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{}:", ty.title())?;
            let mut any = false;
            for (info, value) in self.snapshot.iter().filter(|(i, _)| i.field_type() == ty) {
                any = true;
                writeln!(
                    f,
                    "  {:<name_width$} {:#06x}  {}",
                    info.name,
                    info.encoding,
                    info.display_value(value),
                )?;
            }
            if !any {
                writeln!(f, "  (none)")?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use core::fmt;

    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::VmcsSnapshot;
    use crate::fields;
    use vmx_caps::number::{self, Radix};

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for VmcsSnapshot {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.len()))?;
            for (info, value) in self.iter() {
                map.serialize_entry(&info.encoding, &value)?;
            }
            map.end()
        }
    }

    /// A map key: an encoding as an integer, a decimal or `0x` string, or a field name.
    struct Key(u32);

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(KeyVisitor)
        }
    }

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = Key;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a VMCS field encoding or name")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
            u32::try_from(v)
                .map(Key)
                .map_err(|_| E::custom(format_args!("encoding {v:#x} does not fit 32 bits")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format_args!("negative encoding {v}")))
                .and_then(|v| self.visit_u64(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
            // A key that starts like a number is one, by the workspace's one number syntax
            // (`vmx_caps::number`, decimal without a prefix); field names start with a letter.
            if v.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-') {
                return number::parse_u32(v, Radix::Decimal).map(Key).map_err(|e| {
                    E::custom(format_args!("{v:?} is not a VMCS field encoding: {e}"))
                });
            }
            fields::by_name(v)
                .map(|info| Key(info.encoding))
                .ok_or_else(|| {
                    E::custom(format_args!(
                        "{v:?} is neither an encoding nor a VMCS field name"
                    ))
                })
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl<'de> Deserialize<'de> for VmcsSnapshot {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(SnapshotVisitor)
        }
    }

    struct SnapshotVisitor;

    impl<'de> Visitor<'de> for SnapshotVisitor {
        type Value = VmcsSnapshot;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from VMCS field encoding to value")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<VmcsSnapshot, M::Error> {
            let mut snapshot = VmcsSnapshot::new();
            while let Some(Key(encoding)) = map.next_key()? {
                let value: u64 = map.next_value()?;
                let info = fields::by_encoding(encoding).ok_or_else(|| {
                    de::Error::custom(format_args!(
                        "{encoding:#x} is not the full encoding of a VMCS field"
                    ))
                })?;
                if value & !info.width().mask() != 0 {
                    return Err(de::Error::custom(format_args!(
                        "{} is a {} field; {value:#x} does not fit",
                        info.name,
                        info.width()
                    )));
                }
                if snapshot
                    .insert(encoding, value)
                    .map_err(de::Error::custom)?
                    .is_some()
                {
                    return Err(de::Error::custom(format_args!(
                        "{} appears twice",
                        info.name
                    )));
                }
            }
            Ok(snapshot)
        }
    }
}
