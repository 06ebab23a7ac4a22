//! The Intel VMCS field encodings, once: the SDM's Appendix B ("Field Encoding in VMCS") as one
//! typed table, and the value types the fields hold.
//!
//! This is the base the other crates of the workspace share. `vmx-core` takes the encodings it
//! needs for its own VMREADs and VMWRITEs from here (the exit reason after VMLAUNCH, the
//! VM-instruction error after VMfailValid, HOST_RSP and HOST_RIP in its entry trampoline), `ept`
//! the EPT pointer of the field `EPT_POINTER` and the physical addresses, and `vmcs` builds its
//! access traits, backends, snapshots and checker on the table and re-exports all of it at the
//! same paths (`vmcs::fields`, `vmcs::field`, `vmcs::SegmentAccessRights`, ...). Use `vmcs`; depend
//! on this crate directly only to name fields without the rest.
//!
//! ```
//! use vmcs_fields::{EptPointer, FieldType, FieldWidth, fields};
//!
//! // Width, type and read-only-ness come from the encoding (SDM "VMCS Component Encoding").
//! assert_eq!(fields::HOST_RSP.encoding(), 0x6c14);
//! assert_eq!(fields::EXIT_REASON.encoding(), 0x4402);
//! assert!(fields::EXIT_REASON.read_only());
//! let info = fields::by_encoding(0x201a).unwrap();
//! assert_eq!((info.name, info.width(), info.field_type()), ("EPT_POINTER", FieldWidth::Bits64, FieldType::Control));
//! // The field's value type decodes a raw value: a write-back, 4-level EPTP rooted at 0x12_3000.
//! let eptp = EptPointer::from_bits(0x12_301e);
//! assert_eq!(eptp.pml4_address().as_u64(), 0x12_3000);
//! assert_eq!(
//!     info.display_value(eptp.bits()).to_string(),
//!     "0x12301e (root 0x123000, WB, 4-level walk)"
//! );
//! ```
//!
//! Feature `serde`: the value types serialize; the flag sets ([`InterruptibilityState`],
//! [`PendingDebugExceptions`], [`ExceptionBitmap`]) as their raw number, unknown bits kept, like
//! every flag set of the workspace (`vmx_caps::serde_bits` says why).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod addr;
mod eptp;
pub mod field;
pub mod fields;
mod value;

pub use addr::{AddrError, GuestPhysAddr, HostPhysAddr, MAX_PHYS_ADDR_WIDTH};
pub use eptp::{
    EptPointer, EptpBuilder, EptpError, MemoryType, ReservedMemoryType, ReservedWalkLength,
    WalkLength,
};
pub use field::{DisplayValue, Field, FieldInfo, FieldType, FieldWidth, VmcsField, WritableField};
pub use value::{
    ActivityState, ExceptionBitmap, FieldValue, InterruptibilityState, InterruptionInfo,
    InterruptionType, PendingDebugExceptions, SegmentAccessRights, SystemSegmentType,
};
