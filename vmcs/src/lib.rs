//! Every Intel VMCS field of the SDM's Appendix B, typed by width and value.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod field;
pub mod fields;
mod value;

pub use field::{Field, FieldInfo, FieldType, FieldWidth, VmcsField, WritableField};
pub use value::{
    ActivityState, EntryInterruptionInfo, ExceptionBitmap, FieldValue, InterruptibilityState,
    InterruptionType, SegmentAccessRights,
};
