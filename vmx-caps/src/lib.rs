//! Every Intel VMX capability MSR, decoded; and negotiation of the VM-execution, VM-exit and
//! VM-entry controls against them (Intel SDM Vol. 3D, Appendix A, "VMX Capability Reporting
//! Facility").
//!
//! ```
//! use vmx_caps::{MsrSnapshot, SecondaryControls, VmxCapabilities};
//!
//! // A snapshot of the capability MSRs of Bochs' `corei7_skylake_x` model.
//! let text = include_str!("../testdata/corei7_skylake_x.msr");
//! let mut snapshot = MsrSnapshot::parse(text)?;
//! let caps = VmxCapabilities::read(&mut snapshot)?;
//!
//! assert_eq!(caps.basic.revision_id(), 0x2b);
//! assert!(caps.basic.true_controls());
//! assert!(caps.proc2.allows(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST));
//! assert!(caps.ept_vpid.pdpte_1gb());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Feature `serde`: the decoded capabilities and negotiation results serialize; every flag set
//! (control fields, `FeatureControl`, the registers of [`arch`]) as its raw number, unknown bits
//! kept. The module `serde_bits` (with the feature) says why, and gives the other crates of the
//! workspace the same form.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod arch;
mod caps;
pub mod controls;
mod cr;
pub mod msr;
mod negotiate;
pub mod number;
mod report;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod serde_bits;
mod source;
pub mod virt;

pub use caps::{
    AllowedControls, CapsError, ControlState, EptVpidCap, FeatureControl, FixedBits,
    GroupKnowledge, PartialCapabilities, VmcsEnum, VmcsMemoryType, VmxBasic, VmxCapabilities,
    VmxMisc,
};
pub use controls::{
    ControlBit, ControlGroup, Controls, EntryControls, ExitControls, PinBasedControls,
    PrimaryControls, SecondaryControls, SecondaryExitControls, TertiaryControls, VmFuncControls,
};
pub use cr::{ControlRegister, CrFixedBits, CrUse, FixedBitsError};
pub use negotiate::{
    CONFLICTS, ControlRequest, ControlSet, DEPENDENCIES, Default1Policy, DependencyPolicy,
    DropReason, DroppedControl, NegotiatedControls, NegotiationError, RequestProblem,
    RequestProblems,
};
#[cfg(target_arch = "x86_64")]
pub use source::{LiveMsrs, cpu_has_vmx};
pub use source::{
    MsrError, MsrSnapshot, MsrSource, SNAPSHOT_CAPACITY, SnapshotError, SnapshotErrorKind,
    SnapshotFull,
};

/// Implements `Serialize` and `Deserialize` for bitflags types as their raw number (see
/// the module `serde_bits`), when the invoking crate's `serde` feature is on (which
/// must enable `vmx-caps/serde`).
///
/// ```
/// bitflags::bitflags! {
///     /// An example flag set.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub struct Example: u8 {
///         /// Bit 0.
///         const A = 1 << 0;
///     }
/// }
/// vmx_caps::serde_as_bits!(Example);
/// ```
#[macro_export]
macro_rules! serde_as_bits {
    ($($name:ty),+ $(,)?) => {$(
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        impl $crate::serde_bits::Serialize for $name {
            fn serialize<S: $crate::serde_bits::Serializer>(
                &self,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::serde_bits::serialize(self, serializer)
            }
        }

        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        impl<'de> $crate::serde_bits::Deserialize<'de> for $name {
            fn deserialize<D: $crate::serde_bits::Deserializer<'de>>(
                deserializer: D,
            ) -> ::core::result::Result<Self, D::Error> {
                $crate::serde_bits::deserialize(deserializer)
            }
        }
    )+};
}
