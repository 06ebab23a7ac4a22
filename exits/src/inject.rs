//! Event injection (SDM Vol. 3C, "VM-Entry Controls for Event Injection" and "Event Injection"):
//! hardware exceptions with or without their error code, NMIs, external interrupts, software
//! interrupts and exceptions, re-injection of the event a VM exit interrupted, and the
//! interrupt-window and NMI-window exits that tell when the guest can take an event.
//!
//! Each function checks its input against what VM entry accepts (the event-injection checks of
//! SDM "Checks on VMX Controls" and "Checks on Guest Non-Register State") and fails with an
//! [`InjectError`] instead of writing an event the entry would refuse. It reads only the fields
//! its check needs (listed on each) and writes the event-injection fields.
//!
//! ```
//! use exits::inject::{Delivery, Exception, deliver_external_interrupt, inject_exception};
//! use vmcs::{InterruptibilityState, SoftVmcs, VmcsRead, VmcsWrite, fields};
//! use vmx_caps::PrimaryControls;
//!
//! let mut vmcs = SoftVmcs::all_fields();
//! // Protected mode: #GP pushes its error code.
//! vmcs.write(fields::GUEST_CR0, vmcs::Cr0::PE | vmcs::Cr0::ET | vmcs::Cr0::NE | vmcs::Cr0::PG)?;
//!
//! inject_exception(&mut vmcs, Exception::GP, Some(0))?;
//! let info = vmcs.read(fields::VM_ENTRY_INTERRUPTION_INFORMATION)?;
//! assert_eq!(info.bits(), 0x8000_0b0d); // valid, deliver error code, hardware exception, 13
//!
//! // An interrupt for a guest that has interrupts disabled: wait for the window instead.
//! vmcs.write(fields::GUEST_RFLAGS, vmcs::Rflags::RESET)?; // IF = 0
//! assert_eq!(deliver_external_interrupt(&mut vmcs, 0x20)?, Delivery::WindowRequested);
//! let proc = vmcs.read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?;
//! assert!(proc.contains(PrimaryControls::INTERRUPT_WINDOW_EXITING));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use vmcs::{Cr0, InterruptibilityState, InterruptionType, Rflags, VmcsRead, VmcsWrite, fields};
use vmx_caps::{PinBasedControls, PrimaryControls};
use vmx_core::VmFail;

use crate::VmExit;
use crate::event::{EventInjection, IdtVectoring, exception_mnemonic, is_software_event};
use crate::instruction::InstructionLength;

/// A hardware exception: a vector from 0 to 31 other than 2 (NMI, which has its own interruption
/// type) (SDM Vol. 3A, "Exception and Interrupt Vectors").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "u8", into = "u8"))]
pub struct Exception(u8);

impl TryFrom<u8> for Exception {
    type Error = InjectError;
    fn try_from(vector: u8) -> Result<Self, InjectError> {
        Self::new(vector)
    }
}

impl From<Exception> for u8 {
    fn from(exception: Exception) -> u8 {
        exception.vector()
    }
}

impl Exception {
    /// 0: #DE, divide error.
    pub const DE: Self = Self(0);
    /// 1: #DB, debug exception.
    pub const DB: Self = Self(1);
    /// 3: #BP, breakpoint.
    pub const BP: Self = Self(3);
    /// 4: #OF, overflow.
    pub const OF: Self = Self(4);
    /// 5: #BR, BOUND range exceeded.
    pub const BR: Self = Self(5);
    /// 6: #UD, invalid opcode.
    pub const UD: Self = Self(6);
    /// 7: #NM, device not available.
    pub const NM: Self = Self(7);
    /// 8: #DF, double fault (error code, always 0).
    pub const DF: Self = Self(8);
    /// 10: #TS, invalid TSS (error code).
    pub const TS: Self = Self(10);
    /// 11: #NP, segment not present (error code).
    pub const NP: Self = Self(11);
    /// 12: #SS, stack-segment fault (error code).
    pub const SS: Self = Self(12);
    /// 13: #GP, general protection (error code).
    pub const GP: Self = Self(13);
    /// 14: #PF, page fault (error code; the faulting address goes in the guest's CR2).
    pub const PF: Self = Self(14);
    /// 16: #MF, x87 floating-point error.
    pub const MF: Self = Self(16);
    /// 17: #AC, alignment check (error code, always 0).
    pub const AC: Self = Self(17);
    /// 18: #MC, machine check.
    pub const MC: Self = Self(18);
    /// 19: #XM, SIMD floating-point exception.
    pub const XM: Self = Self(19);
    /// 20: #VE, virtualization exception.
    pub const VE: Self = Self(20);
    /// 21: #CP, control-protection exception (error code). VM entry accepts its error code only
    /// on processors with IA32_VMX_BASIC\[56\] = 1 (every processor with CET, the only ones that
    /// raise #CP); the entry check's list of vectors that deliver one predates CET.
    pub const CP: Self = Self(21);

    /// The exception with this vector.
    ///
    /// # Errors
    ///
    /// [`InjectError::NotAnException`] for vector 2 (NMI: [`inject_nmi`]) and vectors above 31.
    pub const fn new(vector: u8) -> Result<Self, InjectError> {
        match vector {
            2 | 32.. => Err(InjectError::NotAnException(vector)),
            _ => Ok(Self(vector)),
        }
    }

    /// The vector.
    pub const fn vector(self) -> u8 {
        self.0
    }

    /// Whether delivering the exception pushes an error code (outside real mode): #DF, #TS, #NP,
    /// #SS, #GP, #PF, #AC and #CP (SDM Vol. 3A, "Exception and Interrupt Reference"; the
    /// VM-entry check on "deliver error code" uses the same list).
    pub const fn has_error_code(self) -> bool {
        matches!(self.0, 8 | 10..=14 | 17 | 21)
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match exception_mnemonic(self.0) {
            Some(name) => write!(f, "{name} (vector {})", self.0),
            None => write!(f, "exception vector {}", self.0),
        }
    }
}

/// An event caused by an instruction, delivered through the IDT after the instruction: the
/// instruction length becomes the VM-entry instruction length, so that the return address the
/// guest's handler sees is the next instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SoftwareEvent {
    /// INT n: software interrupt (type 4) with vector n.
    Interrupt(u8),
    /// INT1 (ICEBP): privileged software exception (type 5), vector 1.
    Int1,
    /// INT3: software exception (type 6), vector 3.
    Int3,
    /// INTO: software exception (type 6), vector 4.
    Into,
}

impl SoftwareEvent {
    /// The vector and interruption type.
    pub const fn vector_and_type(self) -> (u8, InterruptionType) {
        match self {
            Self::Interrupt(vector) => (vector, InterruptionType::SoftwareInterrupt),
            Self::Int1 => (1, InterruptionType::PrivilegedSoftwareException),
            Self::Int3 => (3, InterruptionType::SoftwareException),
            Self::Into => (4, InterruptionType::SoftwareException),
        }
    }
}

/// Which blocking kept an event out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Blocking {
    /// The guest's interruptibility state.
    pub interruptibility: InterruptibilityState,
    /// RFLAGS.IF, for an external interrupt (`true` for an NMI, which IF does not mask).
    pub interrupts_enabled: bool,
}

impl fmt::Display for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interruptibility state {}", self.interruptibility)?;
        if !self.interrupts_enabled {
            f.write_str(", RFLAGS.IF = 0")?;
        }
        Ok(())
    }
}

/// Why an event was not injected. Nothing was written unless the error is
/// [`InjectError::Vmcs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InjectError {
    /// Not a hardware exception vector (0–31 except 2).
    #[error(
        "vector {0} is not a hardware exception (0 to 31; NMI, vector 2, has its own interruption type)"
    )]
    NotAnException(u8),
    /// The exception pushes an error code and none was given.
    #[error("{0} pushes an error code, and none was given")]
    MissingErrorCode(Exception),
    /// An error code was given for an exception that pushes none (VM entry fails with
    /// "deliver error code" set for it).
    #[error("{0} pushes no error code")]
    UnexpectedErrorCode(Exception),
    /// An error code with bits 31:16 set (VM entry requires them to be 0).
    #[error("error code {0:#x} has bits 31:16 set")]
    ErrorCodeTooWide(u32),
    /// An instruction length outside 1–15 for a software interrupt or exception.
    #[error("instruction length {0} is not 1 to 15 bytes")]
    InstructionLength(InstructionLength),
    /// The guest cannot take an external interrupt now (RFLAGS.IF = 0, or blocking by STI or
    /// MOV SS; VM entry fails with such an injection): request an interrupt window.
    #[error("the guest cannot take an external interrupt now: {0}")]
    InterruptsBlocked(Blocking),
    /// The guest cannot take an NMI now (blocking by NMI, STI or MOV SS): request an NMI
    /// window.
    #[error("the guest cannot take an NMI now: {0}")]
    NmiBlocked(Blocking),
    /// NMI-window exiting is allowed only with the "virtual NMIs" pin-based control (VM entry
    /// fails otherwise).
    #[error("NMI-window exiting needs the \"virtual NMIs\" pin-based control, which is 0")]
    VirtualNmisOff,
    /// An IDT-vectoring event whose type cannot be re-injected (reserved type 1, or type 7),
    /// or whose error code is flagged valid but missing.
    #[error("the IDT-vectoring event ({0}) cannot be re-injected")]
    NotReinjectable(InterruptionType),
    /// A VMREAD or VMWRITE failed.
    #[error("VMCS access failed: {0}")]
    Vmcs(#[from] VmFail),
}

/// Injects hardware exception `exception` on the next VM entry; the guest's RIP stays at the
/// faulting instruction.
///
/// `error_code` must be given exactly for the exceptions that push one
/// ([`Exception::has_error_code`]). In real mode (CR0.PE = 0, possible with unrestricted guest)
/// no exception pushes an error code and VM entry requires "deliver error code" to be 0, so the
/// code is then not delivered. For #PF, the faulting linear address belongs in the guest's CR2
/// (which the VMCS does not hold).
///
/// Reads GUEST_CR0 only for an exception that pushes an error code; writes the VM-entry
/// interruption-information field and, when delivered, the VM-entry exception error code. The
/// activity state is not read: a guest that is not active takes only #DB and #MC in the HLT state
/// and #MC in the shutdown state (VM entry fails otherwise); an instruction exit always leaves
/// the guest active.
///
/// # Errors
///
/// [`InjectError::MissingErrorCode`], [`InjectError::UnexpectedErrorCode`],
/// [`InjectError::ErrorCodeTooWide`] for an error code that does not fit the exception;
/// [`InjectError::Vmcs`] for a failing VMREAD or VMWRITE.
pub fn inject_exception(
    vmcs: &mut impl VmcsWrite,
    exception: Exception,
    error_code: Option<u32>,
) -> Result<(), InjectError> {
    let error_code = match (exception.has_error_code(), error_code) {
        (false, None) => None,
        (false, Some(_)) => return Err(InjectError::UnexpectedErrorCode(exception)),
        (true, None) => return Err(InjectError::MissingErrorCode(exception)),
        (true, Some(code)) if code >> 16 != 0 => return Err(InjectError::ErrorCodeTooWide(code)),
        (true, Some(code)) => vmcs
            .read(fields::GUEST_CR0)?
            .contains(Cr0::PE)
            .then_some(code),
    };
    write(
        vmcs,
        EventInjection {
            vector: exception.vector(),
            kind: InterruptionType::HardwareException,
            error_code,
            instruction_length: None,
        },
    )
}

/// Injects an NMI (vector 2) on the next VM entry.
///
/// Reads GUEST_INTERRUPTIBILITY_STATE; writes the VM-entry interruption-information field. The
/// activity state is not read: VM entry refuses any injection into the wait-for-SIPI state.
///
/// # Errors
///
/// [`InjectError::NmiBlocked`] when blocking by NMI, STI or MOV SS is in effect (an NMI is not
/// delivered then; VM entry fails for MOV SS, for STI on some processors, and for blocking by
/// NMI with virtual NMIs): request an NMI window ([`request_nmi_window`], or
/// [`deliver_nmi`] which does it); [`InjectError::Vmcs`].
pub fn inject_nmi(vmcs: &mut impl VmcsWrite) -> Result<(), InjectError> {
    let interruptibility = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
    if interruptibility.intersects(
        InterruptibilityState::BLOCKING_BY_NMI
            | InterruptibilityState::BLOCKING_BY_STI
            | InterruptibilityState::BLOCKING_BY_MOV_SS,
    ) {
        return Err(InjectError::NmiBlocked(Blocking {
            interruptibility,
            interrupts_enabled: true,
        }));
    }
    write(
        vmcs,
        EventInjection {
            vector: 2,
            kind: InterruptionType::Nmi,
            error_code: None,
            instruction_length: None,
        },
    )
}

/// Injects external interrupt `vector` on the next VM entry (as if the guest's interrupt
/// controller had delivered it).
///
/// Reads GUEST_RFLAGS and GUEST_INTERRUPTIBILITY_STATE; writes the VM-entry
/// interruption-information field. The activity state is not read (an interrupt wakes a guest in
/// the HLT state; VM entry refuses any injection into the wait-for-SIPI state).
///
/// # Errors
///
/// [`InjectError::InterruptsBlocked`] when RFLAGS.IF is 0 or blocking by STI or MOV SS is in
/// effect (VM entry fails with such an injection): request an interrupt window
/// ([`request_interrupt_window`], or [`deliver_external_interrupt`] which does it);
/// [`InjectError::Vmcs`].
pub fn inject_external_interrupt(vmcs: &mut impl VmcsWrite, vector: u8) -> Result<(), InjectError> {
    let blocking = interrupt_blocking(vmcs)?;
    if let Some(blocking) = blocking {
        return Err(InjectError::InterruptsBlocked(blocking));
    }
    write(
        vmcs,
        EventInjection {
            vector,
            kind: InterruptionType::ExternalInterrupt,
            error_code: None,
            instruction_length: None,
        },
    )
}

/// `Some` when an external interrupt is blocked: RFLAGS.IF = 0, or blocking by STI or MOV SS.
fn interrupt_blocking(vmcs: &impl VmcsRead) -> Result<Option<Blocking>, VmFail> {
    let interrupts_enabled = vmcs.read(fields::GUEST_RFLAGS)?.contains(Rflags::IF);
    let interruptibility = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
    let shadow = InterruptibilityState::BLOCKING_BY_STI | InterruptibilityState::BLOCKING_BY_MOV_SS;
    Ok(
        (!interrupts_enabled || interruptibility.intersects(shadow)).then_some(Blocking {
            interruptibility,
            interrupts_enabled,
        }),
    )
}

/// Injects a software interrupt or exception (INT n, INT1, INT3, INTO) that the guest's
/// instruction of `length` bytes raises, e.g. after a VM exit on INT3 through the exception
/// bitmap: the guest's handler returns to RIP + `length`.
///
/// Writes the VM-entry interruption-information field and the VM-entry instruction length (the
/// guest executed the instruction, so it is active).
///
/// # Errors
///
/// [`InjectError::InstructionLength`] for a length outside 1–15 (a length of 0 is accepted by
/// VM entry only where IA32_VMX_MISC\[30\] says so, and no instruction has it);
/// [`InjectError::Vmcs`].
pub fn inject_software_event(
    vmcs: &mut impl VmcsWrite,
    event: SoftwareEvent,
    length: InstructionLength,
) -> Result<(), InjectError> {
    if !length.is_architectural() {
        return Err(InjectError::InstructionLength(length));
    }
    let (vector, kind) = event.vector_and_type();
    write(
        vmcs,
        EventInjection {
            vector,
            kind,
            error_code: None,
            instruction_length: Some(length),
        },
    )
}

/// Re-injects the event whose delivery a VM exit interrupted (the IDT-vectoring information, as
/// [`crate::VmExit::idt_vectoring`] or [`IdtVectoring::read`] give it), so that the guest
/// receives it once the cause of the exit is handled (SDM Vol. 3C, "Information for VM Exits
/// During Event Delivery"): vector, type and error code unchanged; the instruction length of a
/// software interrupt or exception.
///
/// Writes the VM-entry interruption-information field, and the error code and instruction length
/// when the event has them. For an NMI it also clears blocking by NMI in the interruptibility
/// state (one VMREAD, and a VMWRITE when set): with "virtual NMIs", a VM exit during delivery of
/// an injected NMI leaves virtual-NMI blocking set, and VM entry would fail on an NMI injected
/// under it (SDM Vol. 3C, "Resuming Guest Software after Handling an Exception"); without
/// virtual NMIs the delivery sets blocking by NMI again.
///
/// # Errors
///
/// [`InjectError::NotReinjectable`] for an event of type 1 or 7, or one whose error code is
/// flagged valid but absent; [`InjectError::ErrorCodeTooWide`] for an error code with bits 31:16
/// set; [`InjectError::InstructionLength`] for a software event without an
/// instruction length of 1–15; [`InjectError::Vmcs`].
pub fn reinject(vmcs: &mut impl VmcsWrite, event: &IdtVectoring) -> Result<(), InjectError> {
    let kind = event.info.kind;
    if matches!(
        kind,
        InterruptionType::Reserved | InterruptionType::OtherEvent
    ) || (event.info.error_code_valid && event.error_code.is_none())
    {
        return Err(InjectError::NotReinjectable(kind));
    }
    let injection = event.reinjection();
    if let Some(code) = injection.error_code.filter(|code| code >> 16 != 0) {
        return Err(InjectError::ErrorCodeTooWide(code));
    }
    if is_software_event(kind) {
        match injection.instruction_length {
            Some(length) if length.is_architectural() => {}
            other => {
                return Err(InjectError::InstructionLength(
                    other.unwrap_or(InstructionLength(0)),
                ));
            }
        }
    }
    if kind == InterruptionType::Nmi {
        let state = vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?;
        if state.contains(InterruptibilityState::BLOCKING_BY_NMI) {
            vmcs.write(
                fields::GUEST_INTERRUPTIBILITY_STATE,
                state - InterruptibilityState::BLOCKING_BY_NMI,
            )?;
        }
    }
    write(vmcs, injection)
}

/// What [`deliver_external_interrupt`] or [`deliver_nmi`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Delivery {
    /// The event is injected on the next VM entry.
    Injected,
    /// The guest cannot take the event now; the window exit is requested, and the event should
    /// be delivered again when it comes (after closing the window).
    WindowRequested,
}

/// Injects external interrupt `vector` if the guest can take it now, else requests an
/// interrupt-window exit ([`request_interrupt_window`]); on that exit, close the window
/// ([`close_interrupt_window`]) and call this again.
///
/// # Errors
///
/// [`InjectError::Vmcs`].
pub fn deliver_external_interrupt(
    vmcs: &mut impl VmcsWrite,
    vector: u8,
) -> Result<Delivery, InjectError> {
    match inject_external_interrupt(vmcs, vector) {
        Ok(()) => Ok(Delivery::Injected),
        Err(InjectError::InterruptsBlocked(_)) => {
            request_interrupt_window(vmcs)?;
            Ok(Delivery::WindowRequested)
        }
        Err(e) => Err(e),
    }
}

/// Injects an NMI if the guest can take it now, else requests an NMI-window exit
/// ([`request_nmi_window`]); on that exit, close the window ([`close_nmi_window`]) and call this
/// again.
///
/// # Errors
///
/// [`InjectError::VirtualNmisOff`] when the NMI is blocked and NMI-window exiting is not
/// possible; [`InjectError::Vmcs`].
pub fn deliver_nmi(vmcs: &mut impl VmcsWrite) -> Result<Delivery, InjectError> {
    match inject_nmi(vmcs) {
        Ok(()) => Ok(Delivery::Injected),
        Err(InjectError::NmiBlocked(_)) => {
            request_nmi_window(vmcs)?;
            Ok(Delivery::WindowRequested)
        }
        Err(e) => Err(e),
    }
}

/// Sets "interrupt-window exiting": a VM exit (reason 7) happens before the first instruction
/// at which the guest has RFLAGS.IF = 1 and no blocking by STI or MOV SS (SDM Vol. 3C,
/// "Interrupt-Window Exiting and Virtual-Interrupt Delivery").
///
/// # Errors
///
/// The [`VmFail`] of the VMREAD or VMWRITE of the primary processor-based controls.
pub fn request_interrupt_window(vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
    set_primary(vmcs, PrimaryControls::INTERRUPT_WINDOW_EXITING, true)
}

/// Clears "interrupt-window exiting", e.g. on the interrupt-window exit (it would otherwise
/// exit again at once).
///
/// # Errors
///
/// The [`VmFail`] of the VMREAD or VMWRITE of the primary processor-based controls.
pub fn close_interrupt_window(vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
    set_primary(vmcs, PrimaryControls::INTERRUPT_WINDOW_EXITING, false)
}

/// Sets "NMI-window exiting": a VM exit (reason 8) happens before the first instruction at
/// which there is no virtual-NMI blocking (nor blocking by MOV SS, nor by STI where the
/// processor blocks NMIs with it) (SDM Vol. 3C, "NMI-Window Exiting").
///
/// Reads the pin-based controls (the control needs "virtual NMIs").
///
/// # Errors
///
/// [`InjectError::VirtualNmisOff`] when "virtual NMIs" is 0 (VM entry would fail);
/// [`InjectError::Vmcs`].
pub fn request_nmi_window(vmcs: &mut impl VmcsWrite) -> Result<(), InjectError> {
    let pin = vmcs.read(fields::PIN_BASED_VM_EXECUTION_CONTROLS)?;
    if !pin.contains(PinBasedControls::VIRTUAL_NMIS) {
        return Err(InjectError::VirtualNmisOff);
    }
    Ok(set_primary(
        vmcs,
        PrimaryControls::NMI_WINDOW_EXITING,
        true,
    )?)
}

/// Clears "NMI-window exiting", e.g. on the NMI-window exit.
///
/// # Errors
///
/// The [`VmFail`] of the VMREAD or VMWRITE of the primary processor-based controls.
pub fn close_nmi_window(vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
    set_primary(vmcs, PrimaryControls::NMI_WINDOW_EXITING, false)
}

/// A window exit: the guest became able to take the events it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Window {
    /// Interrupt window (exit reason 7): external interrupts can be injected.
    Interrupt,
    /// NMI window (exit reason 8): an NMI can be injected.
    Nmi,
}

/// On an interrupt-window or NMI-window exit, clears the window-exiting control that caused it
/// (the exit would otherwise recur before every guest instruction) and says which window opened,
/// so that the pending event can be delivered now; for any other exit, `None` with nothing read
/// or written.
///
/// ```
/// use exits::VmExit;
/// use exits::inject::{Window, close_fired_window, request_interrupt_window};
/// use vmcs::{SoftVmcs, VmcsRead, fields};
/// use vmx_caps::PrimaryControls;
///
/// let mut vmcs = SoftVmcs::all_fields();
/// request_interrupt_window(&mut vmcs)?;
/// assert_eq!(close_fired_window(&mut vmcs, &VmExit::Hlt { length: exits::InstructionLength(1) })?, None);
/// assert_eq!(close_fired_window(&mut vmcs, &VmExit::InterruptWindow)?, Some(Window::Interrupt));
/// let proc = vmcs.read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?;
/// assert!(!proc.contains(PrimaryControls::INTERRUPT_WINDOW_EXITING));
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
///
/// # Errors
///
/// The [`VmFail`] of the VMREAD or VMWRITE of the primary processor-based controls.
pub fn close_fired_window(
    vmcs: &mut impl VmcsWrite,
    exit: &VmExit,
) -> Result<Option<Window>, VmFail> {
    match exit {
        VmExit::InterruptWindow => {
            close_interrupt_window(vmcs)?;
            Ok(Some(Window::Interrupt))
        }
        VmExit::NmiWindow => {
            close_nmi_window(vmcs)?;
            Ok(Some(Window::Nmi))
        }
        _ => Ok(None),
    }
}

/// Sets or clears `control` in the primary processor-based controls; writes only on a change.
fn set_primary(
    vmcs: &mut impl VmcsWrite,
    control: PrimaryControls,
    on: bool,
) -> Result<(), VmFail> {
    let field = fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS;
    let proc = vmcs.read(field)?;
    if proc.contains(control) != on {
        vmcs.write(field, proc ^ control)?;
    }
    Ok(())
}

fn write(vmcs: &mut impl VmcsWrite, injection: EventInjection) -> Result<(), InjectError> {
    Ok(injection.write(vmcs)?)
}
