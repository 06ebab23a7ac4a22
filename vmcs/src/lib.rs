//! Every Intel VMCS field of the SDM's Appendix B, typed by width and value, behind access
//! traits with a hardware backend (VMREAD/VMWRITE of the current VMCS) and a software one
//! (a VMCS in plain memory that fails the way a processor does).
//!
//! ```
//! use vmcs::{fields, InterruptibilityState, SoftVmcs, VmcsRead, VmcsSnapshot, VmcsWrite};
//! use vmx_caps::{MsrSnapshot, PrimaryControls, VmxCapabilities};
//! use vmx_core::{VmFail, VmInstructionError};
//!
//! // A software VMCS shaped like Bochs' `corei7_skylake_x` model (capability MSRs read there).
//! let mut msrs = MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/corei7_skylake_x.msr")).unwrap();
//! let caps = VmxCapabilities::read(&mut msrs).unwrap();
//! let mut vmcs = SoftVmcs::new(&caps);
//!
//! // Typed access: each field reads as its width or its value type.
//! vmcs.write(fields::GUEST_RIP, 0x7c00)?;
//! vmcs.write(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, PrimaryControls::HLT_EXITING)?;
//! vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, InterruptibilityState::BLOCKING_BY_STI)?;
//! let proc: PrimaryControls = vmcs.read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?;
//! assert!(proc.contains(PrimaryControls::HLT_EXITING));
//!
//! // 64-bit fields have a high half for 32-bit users.
//! vmcs.write(fields::VMCS_LINK_POINTER, u64::MAX)?;
//! assert_eq!(vmcs.read(fields::VMCS_LINK_POINTER.high())?, 0xffff_ffff);
//!
//! // Failures are the processor's. This model sets IA32_VMX_MISC[29], so even VM-exit
//! // information fields take a raw VMWRITE; without it that fails with error 13. (The typed
//! // `write` does not compile for read-only fields at all.)
//! assert!(caps.misc.vmwrite_any_field());
//! vmcs.write_raw(fields::EXIT_REASON.encoding(), 12)?;
//! let mut strict = SoftVmcs::with_limits(caps.vmcs_enum.highest_index(), false);
//! assert_eq!(
//!     strict.write_raw(fields::EXIT_REASON.encoding(), 12),
//!     Err(VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent)),
//! );
//!
//! // Snapshot and dump.
//! let snapshot = VmcsSnapshot::capture(&vmcs)?;
//! let dump = snapshot.dump().to_string();
//! assert!(dump.contains("GUEST_RIP"));
//! assert!(dump.contains("HLT_EXITING"));
//! # Ok::<(), VmFail>(())
//! ```
//!
//! The structures a VMCS points to (MSR, I/O, VMREAD and VMWRITE bitmaps, MSR areas, the
//! virtual-APIC page, the posted-interrupt descriptor, the #VE information area, the EPTP list,
//! the page-modification log) are in [`structures`], each with its SDM layout and the fields it
//! is written into.
//!
//! The field table ([`fields`]) declares each field once; its width, type and read-only-ness come
//! from the encoding (SDM "VMCS Component Encoding") and are checked at compile time.
//!
//! Feature `serde`: the value types, the checker's inputs and verdicts and [`VmcsSnapshot`] serialize;
//! the flag sets ([`InterruptibilityState`], [`PendingDebugExceptions`], [`ExceptionBitmap`], `check::CpuFeatures`) as their raw
//! number, unknown bits kept, like every flag set of the workspace (`vmx_caps::serde_bits` says why).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod access;
pub mod check;
mod controls;
#[cfg(target_arch = "x86_64")]
mod hardware;
pub mod init;
pub mod nested;
mod segment;
mod snapshot;
mod soft;
mod state;
pub mod structures;

pub use access::{VmcsRead, VmcsWrite};
pub use controls::ControlsError;
#[cfg(target_arch = "x86_64")]
pub use hardware::HardwareVmcs;
pub use segment::{
    AccessRightsField, BaseField, DescriptorTable, GuestDescriptorTable, GuestSegment, LimitField,
    Segment, SelectorField,
};
pub use snapshot::{Dump, UnknownField, VmcsSnapshot};
pub use soft::{LoadError, SoftVmcs};
pub use state::{GuestState, GuestStateError, HostState, system_descriptor_base};
pub use vmcs_fields::{
    ActivityState, ExceptionBitmap, FieldValue, InterruptibilityState, InterruptionInfo,
    InterruptionType, PendingDebugExceptions, SegmentAccessRights, SystemSegmentType,
};
pub use vmcs_fields::{Field, FieldInfo, FieldType, FieldWidth, VmcsField, WritableField};
/// The field table and its building blocks, declared once in `vmcs-fields` (where `vmx-core` and
/// `ept` use them too) and re-exported here.
pub use vmcs_fields::{field, fields};
/// The architectural register types of the CR0, CR4, IA32_EFER, RFLAGS, DR7 and IA32_DEBUGCTL
/// fields (declared in [`vmx_caps::arch`]).
pub use vmx_caps::arch::{Cr0, Cr4, DebugCtl, Dr7, Efer, Rflags, Xcr0};
