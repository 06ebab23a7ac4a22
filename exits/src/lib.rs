//! Every Intel VMX exit decoded into types (SDM Vol. 3C, "VM Exits" and Appendix C, "VMX Basic
//! Exit Reasons").
//!
//! ```
//! use exits::{IoDirection, VmExit};
//! use vmcs::{SoftVmcs, fields};
//!
//! // A VM exit modelled on a software VMCS: the guest executed `OUT DX, AL` with DX = 0x3F8
//! // (basic exit reason 30; qualification: 1 byte, OUT, port in DX, port 0x3F8 in bits 31:16).
//! let mut vmcs = SoftVmcs::all_fields();
//! vmcs.store(fields::EXIT_REASON.encoding(), 30)?;
//! vmcs.store(fields::EXIT_QUALIFICATION.encoding(), 0x03f8_0000)?;
//! vmcs.store(fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), 1)?;
//!
//! let (mut rip, guest_al, mut serial) = (0x1000u64, b'A', Vec::new());
//! // The dispatcher: one match.
//! match VmExit::read(&vmcs)? {
//!     VmExit::IoInstruction { qualification, string: None, length }
//!         if qualification.direction == IoDirection::Out && qualification.port == 0x3f8 =>
//!     {
//!         serial.push(guest_al);
//!         rip += u64::from(length.get());
//!     }
//!     VmExit::Cpuid { length } | VmExit::Hlt { length } => rip += u64::from(length.get()),
//!     VmExit::EptViolation { qualification, guest_physical, .. } => {
//!         panic!("EPT violation at {guest_physical:#x}: {qualification}")
//!     }
//!     VmExit::EntryFailureInvalidGuestState { qualification } => {
//!         panic!("invalid guest state: {qualification}")
//!     }
//!     other => panic!("unhandled exit: {other}"),
//! }
//! assert_eq!((serial, rip), (b"A".to_vec(), 0x1001));
//!
//! // Every exit also prints: the same exit, decoded from raw values.
//! let raw = exits::RawExitInfo {
//!     reason: 30,
//!     qualification: 0x03f8_0000,
//!     instruction_length: 1,
//!     ..Default::default()
//! };
//! assert_eq!(
//!     VmExit::from_raw(&raw).to_string(),
//!     "I/O instruction: OUT DX, AL, port 0x3f8, 1 byte, instruction length 1 byte"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The layers, each usable alone:
//! - [`ExitReason`] and [`BasicExitReason`]: the 32-bit exit-reason field, every basic reason the
//!   SDM defines (0–85), undefined numbers kept in [`BasicExitReason::Unknown`].
//! - [`qualification`]: one type per exit-qualification format.
//! - [`event`]: VM-exit interruption information, IDT-vectoring information and the VM-entry values
//!   that re-inject an interrupted event ([`IdtVectoring::reinjection`], written into any
//!   [`vmcs::VmcsWrite`] by [`EventInjection::write`]).
//! - [`inject`]: event injection checked against what VM entry accepts — hardware exceptions with
//!   or without their error code, NMIs, external interrupts, software interrupts and exceptions,
//!   re-injection of an interrupted event — and the interrupt-window and NMI-window helpers.
//! - [`complete`]: [`complete::skip_instruction`] completes an emulated instruction (RIP, the STI
//!   and MOV SS shadows, RFLAGS.RF, a pending single-step trap).
//! - [`instruction`]: the VM-exit instruction length and every format of the VM-exit instruction
//!   information, with [`MemoryOperand::linear_address`] to find a memory operand
//!   ([`MemoryOperand::linear_address_in`] reads the registers from vmx-core's
//!   [`GuestRegisters`](vmx_core::GuestRegisters) frame). Registers are [`GpReg`], vmx-core's
//!   numbering, re-exported here.
//! - [`VmExit`]: the decoded exit, read from any [`vmcs::VmcsRead`] backend or decoded from
//!   [`RawExitInfo`]; it reads only the fields its reason needs.
//!
//! Every decoder is total: any raw value decodes, without panicking, to a typed value, with
//! undefined encodings kept in `Reserved`/`Unknown` forms. Every type implements `Display`; with
//! the `serde` feature, `Serialize` and `Deserialize` too.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod complete;
pub mod event;
mod exit;
pub mod inject;
pub mod instruction;
pub mod nested;
pub mod qualification;
mod reason;

pub use event::{
    EventInjection, ExitInterruptionInfo, IdtVectoring, IdtVectoringInfo, InterruptionInfo,
    InterruptionType,
};
pub use exit::{ExceptionQualification, ExitField, ExitReadError, RawExitInfo, StringIo, VmExit};
pub use instruction::{
    AddressSize, InstructionLength, MemoryOperand, Operand, OperandError, ReservedSegment, Scale,
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
/// General-purpose registers by SDM number, as the exit qualifications and the instruction
/// information name them: vmx-core's type, re-exported so that one import serves.
pub use vmx_core::GpReg;
