//! Every Intel VMX exit decoded into types (SDM Vol. 3C, "VM Exits" and Appendix C, "VMX Basic
//! Exit Reasons").
//!
//! ```
//! use exits::{ExitReason, IoDirection, RawExitInfo, VmExit};
//!
//! // An `OUT DX, AL` to the COM1 data port caused the exit (basic reason 30): the exit
//! // qualification says 1 byte, OUT, not string, port in DX, port 0x3f8.
//! let raw = RawExitInfo {
//!     reason: 30,
//!     qualification: 0x03f8_0000,
//!     instruction_length: 1,
//!     ..RawExitInfo::default()
//! };
//! let mut output = Vec::new();
//! let advance = match VmExit::from_raw(&raw) {
//!     VmExit::IoInstruction { qualification, string: None, length }
//!         if qualification.direction == IoDirection::Out =>
//!     {
//!         output.push(qualification.port);
//!         length.get()
//!     }
//!     VmExit::Cpuid { length } | VmExit::Hlt { length } => length.get(),
//!     other => panic!("unexpected exit: {other}"),
//! };
//! assert_eq!((output, advance), (vec![0x3f8], 1));
//! assert_eq!(
//!     VmExit::from_raw(&raw).to_string(),
//!     "I/O instruction: OUT DX, AL, port 0x3f8, 1 byte, instruction length 1 byte"
//! );
//! assert_eq!(ExitReason::from_raw(0x8000_0021).to_string(),
//!     "VM-entry failure due to invalid guest state (33), VM-entry failure");
//! ```
//!
//! The layers, each usable alone:
//! - [`ExitReason`] and [`BasicExitReason`]: the 32-bit exit-reason field, every basic reason the
//!   SDM defines (0–85), undefined numbers kept in [`BasicExitReason::Unknown`].
//! - [`qualification`]: one type per exit-qualification format.
//! - [`event`]: VM-exit interruption information, IDT-vectoring information and the VM-entry values
//!   that re-inject an interrupted event ([`IdtVectoring::reinjection`]).
//! - [`instruction`]: the VM-exit instruction length and every format of the VM-exit instruction
//!   information, with [`MemoryOperand::linear_address`] to find a memory operand.
//! - [`VmExit`]: the decoded exit, read from any [`vmcs::VmcsRead`] backend or decoded from
//!   [`RawExitInfo`]; it reads only the fields its reason needs.
//!
//! Every decoder is total: any raw value decodes, without panicking, to a typed value, with
//! undefined encodings kept in `Reserved`/`Unknown` forms. Every type implements `Display`; with
//! the `serde` feature, `Serialize` and `Deserialize` too.
#![no_std]

pub mod event;
mod exit;
pub mod instruction;
pub mod qualification;
mod reason;

pub use event::{
    EntryInterruptionInfo, EventInjection, ExitInterruptionInfo, IdtVectoring, IdtVectoringInfo,
    InterruptionType,
};
pub use exit::{ExceptionQualification, ExitField, ExitReadError, RawExitInfo, StringIo, VmExit};
pub use instruction::{
    AddressSize, Gpr, InstructionLength, MemoryOperand, Operand, OperandError, Scale,
    SegmentRegister,
};
pub use qualification::{
    ApicAccessQualification, ApicAccessType, CrAccessQualification, CrAccessType,
    DebugQualification, EntryFailureQualification, EptViolationQualification, IoDirection,
    IoOperandEncoding, IoQualification, IoSize, LmswOperandType, MovDrDirection,
    MovDrQualification, MwaitQualification, NotifyQualification, PmlFullQualification,
    SppEventKind, SppQualification, TaskSwitchQualification, TaskSwitchSource,
};
pub use reason::{BasicExitReason, ExitReason};
