//! The serde form of every bitflags type of the workspace: its raw number.
//!
//! A flag set serializes as the integer the SDM, an MSR dump or a VMCS dump shows (`128` for
//! `PrimaryControls::HLT_EXITING`, never `"HLT_EXITING"`), in every serde format, and
//! deserializes from an integer of its width. The number form is lossless: the types that keep
//! bits they have no name for (`const _ = !0`, e.g. the control fields and the architectural
//! registers) get every bit back, which flag names could not express. A type that keeps only its
//! named bits (e.g. `ept::Permissions`) refuses a number with other bits set, with an error
//! naming the type and the value, instead of dropping them.
//!
//! [`serde_as_bits!`](crate::serde_as_bits) implements `Serialize` and `Deserialize` this way;
//! every crate of the workspace uses it for its bitflags types.
//!
//! ```
//! use vmx_caps::{PrimaryControls, arch::Cr0};
//!
//! let controls = PrimaryControls::HLT_EXITING | PrimaryControls::from_bits_retain(1 << 0);
//! assert_eq!(serde_json::to_string(&controls).unwrap(), "129"); // bit 0 has no name: kept
//! assert_eq!(serde_json::from_str::<PrimaryControls>("129").unwrap(), controls);
//! assert_eq!(serde_json::to_string(&(Cr0::PE | Cr0::PG)).unwrap(), "2147483649");
//! ```

use core::fmt;

use bitflags::Flags;
use serde::de::Error as _;
pub use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes `flags` as its raw number (`Flags::bits`).
pub fn serialize<F, S>(flags: &F, serializer: S) -> Result<S::Ok, S::Error>
where
    F: Flags,
    F::Bits: Serialize,
    S: Serializer,
{
    flags.bits().serialize(serializer)
}

/// Deserializes a raw number into `F`: every bit `F` knows (all of them for a type with
/// `const _ = !0`), or an error naming `F` and the value.
pub fn deserialize<'de, F, D>(deserializer: D) -> Result<F, D::Error>
where
    F: Flags,
    F::Bits: Deserialize<'de> + fmt::LowerHex,
    D: Deserializer<'de>,
{
    let raw = F::Bits::deserialize(deserializer)?;
    F::from_bits(raw).ok_or_else(|| {
        D::Error::custom(format_args!(
            "{raw:#x} has bits {} does not define",
            core::any::type_name::<F>()
        ))
    })
}
