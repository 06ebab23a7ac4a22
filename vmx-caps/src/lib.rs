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
