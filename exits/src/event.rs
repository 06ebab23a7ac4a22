//! VM-exit interruption information, IDT-vectoring information, and the VM-entry values that
//! re-inject an event whose delivery a VM exit interrupted (SDM Vol. 3C, "Information for VM Exits
//! Due to Vectored Events", "Information for VM Exits During Event Delivery", and "Event Injection").

use core::fmt;

pub use vmcs::{InterruptionInfo, InterruptionType};
use vmcs::{VmcsRead, VmcsWrite, fields};
use vmx_core::VmFail;

use crate::exit::{ExitReadError, idt_vectoring, read_field};
use crate::instruction::InstructionLength;

/// Whether an event of this type came from an instruction (INT n, INT1, INT3, INTO), so that
/// re-injecting it needs the instruction length.
///
/// ```
/// use exits::InterruptionType;
/// use exits::event::is_software_event;
///
/// // INT3 (a software exception) needs its instruction length to be re-injected; #PF does not.
/// assert!(is_software_event(InterruptionType::SoftwareException));
/// assert!(!is_software_event(InterruptionType::HardwareException));
/// ```
pub const fn is_software_event(kind: InterruptionType) -> bool {
    matches!(
        kind,
        InterruptionType::SoftwareInterrupt
            | InterruptionType::PrivilegedSoftwareException
            | InterruptionType::SoftwareException
    )
}

/// Names the exception vectors 0–31 (#DE …) for display.
pub(crate) fn exception_mnemonic(vector: u8) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS", "#NP", "#SS",
        "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "", "", "", "", "", "", "#HV",
        "#VC", "#SX", "",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .filter(|name| !name.is_empty())
}

fn write_event(
    f: &mut fmt::Formatter<'_>,
    vector: u8,
    kind: InterruptionType,
    error_code: Option<u32>,
) -> fmt::Result {
    write!(f, "{kind}, vector {vector}")?;
    let is_exception = matches!(
        kind,
        InterruptionType::HardwareException
            | InterruptionType::SoftwareException
            | InterruptionType::PrivilegedSoftwareException
    );
    if let Some(name) = exception_mnemonic(vector).filter(|_| is_exception) {
        write!(f, " ({name})")?;
    }
    if let Some(code) = error_code {
        write!(f, ", error code {code:#x}")?;
    }
    Ok(())
}

/// The VM-exit interruption-information field (VMCS encoding 4404H) when valid (bit 31 set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ExitInterruptionInfo {
    /// Bits 7:0: vector of the interrupt or exception.
    pub vector: u8,
    /// Bits 10:8: interruption type.
    pub kind: InterruptionType,
    /// Bit 11: the VM-exit interruption error code is valid.
    pub error_code_valid: bool,
    /// Bit 12: NMI unblocking due to IRET (the guest must be put back into blocking by NMI
    /// before it is resumed at the faulting IRET, if virtual NMIs are used).
    pub nmi_unblocking: bool,
}

impl ExitInterruptionInfo {
    /// Bits 12:0 and 31. Bit 13, "nested exception" (processors with VMX nested-exception
    /// support, `IA32_VMX_BASIC[58]`; SDM Vol. 3C 25.9.2), is not kept in this decoded form,
    /// which stays four bytes wide: every VM exit's decoding carries it, and a fifth byte
    /// lengthened the example hypervisor's CPUID round trip under Bochs from 187 to 222
    /// instructions. [`vmcs::InterruptionInfo::nested_exception`] reads it from the raw field
    /// (`VmExit::read` leaves the field in the VMCS).
    pub const DEFINED_BITS: u32 = 0x1fff | 1 << 31;

    /// Decodes the field: `None` if the valid bit (31) is clear; reserved bits are ignored.
    ///
    /// ```
    /// use exits::{ExitInterruptionInfo, InterruptionType};
    ///
    /// // #PF with an error code (vector 14, type 3, bit 11, valid).
    /// let info = ExitInterruptionInfo::from_raw(0x8000_0b0e).unwrap();
    /// assert_eq!((info.vector, info.kind), (14, InterruptionType::HardwareException));
    /// assert!(info.error_code_valid && !info.nmi_unblocking);
    /// assert_eq!(info.to_raw(), 0x8000_0b0e);
    /// assert_eq!(info.to_string(), "hardware exception, vector 14 (#PF), error code valid");
    /// assert_eq!(ExitInterruptionInfo::from_raw(0x0b0e), None); // valid bit clear
    /// ```
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Self::from_info(InterruptionInfo::from_bits(raw))
    }

    /// The decoded form of the field's value type (`None` if its valid bit is clear).
    pub const fn from_info(info: InterruptionInfo) -> Option<Self> {
        if !info.valid() {
            return None;
        }
        Some(Self {
            vector: info.vector(),
            kind: info.interruption_type(),
            error_code_valid: info.error_code(),
            nmi_unblocking: info.nmi_unblocking(),
        })
    }

    /// The field's value, with the valid bit set.
    pub const fn to_info(self) -> InterruptionInfo {
        InterruptionInfo::new(self.vector, self.kind, self.error_code_valid)
            .with_nmi_unblocking(self.nmi_unblocking)
    }

    /// Encodes the field, with the valid bit set.
    pub const fn to_raw(self) -> u32 {
        self.to_info().bits()
    }
}

impl fmt::Display for ExitInterruptionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_event(f, self.vector, self.kind, None)?;
        if self.error_code_valid {
            f.write_str(", error code valid")?;
        }
        if self.nmi_unblocking {
            f.write_str(", NMI unblocking due to IRET")?;
        }
        Ok(())
    }
}

/// The IDT-vectoring information field (VMCS encoding 4408H) when valid (bit 31 set): the event
/// whose delivery through the IDT the VM exit interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdtVectoringInfo {
    /// Bits 7:0: vector of the interrupt or exception.
    pub vector: u8,
    /// Bits 10:8: interruption type.
    pub kind: InterruptionType,
    /// Bit 11: the IDT-vectoring error code is valid.
    pub error_code_valid: bool,
    /// Bit 13: nested exception, the interrupted event was itself an exception raised during
    /// the delivery of another event (only on processors with VMX nested-exception support,
    /// `IA32_VMX_BASIC[58]`; SDM Vol. 3C 25.9.3 "Information for VM Exits That Occur During
    /// Event Delivery"). Carried into the VM-entry interruption information when the event is
    /// injected again.
    pub nested_exception: bool,
}

impl IdtVectoringInfo {
    /// Bits 11:0, 13 and 31 (bit 12 is undefined).
    pub const DEFINED_BITS: u32 = 0xfff | 1 << 13 | 1 << 31;

    /// Decodes the field: `None` if the valid bit (31) is clear; other bits are ignored.
    ///
    /// ```
    /// use exits::{IdtVectoringInfo, InterruptionType};
    ///
    /// // The delivery of INT 0x80 was interrupted (vector 0x80, type 4, valid).
    /// let info = IdtVectoringInfo::from_raw(0x8000_0480).unwrap();
    /// assert_eq!((info.vector, info.kind), (0x80, InterruptionType::SoftwareInterrupt));
    /// assert!(!info.error_code_valid);
    /// assert_eq!(info.to_raw(), 0x8000_0480);
    /// assert_eq!(info.to_string(), "software interrupt, vector 128");
    /// ```
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Self::from_info(InterruptionInfo::from_bits(raw))
    }

    /// The decoded form of the field's value type (`None` if its valid bit is clear; bit 12,
    /// undefined here, is ignored).
    pub const fn from_info(info: InterruptionInfo) -> Option<Self> {
        if !info.valid() {
            return None;
        }
        Some(Self {
            vector: info.vector(),
            kind: info.interruption_type(),
            error_code_valid: info.error_code(),
            nested_exception: info.nested_exception(),
        })
    }

    /// The field's value, with the valid bit set.
    pub const fn to_info(self) -> InterruptionInfo {
        InterruptionInfo::new(self.vector, self.kind, self.error_code_valid)
            .with_nested_exception(self.nested_exception)
    }

    /// Encodes the field, with the valid bit set.
    pub const fn to_raw(self) -> u32 {
        self.to_info().bits()
    }
}

impl fmt::Display for IdtVectoringInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_event(f, self.vector, self.kind, None)?;
        if self.nested_exception {
            f.write_str(", nested exception")?;
        }
        Ok(())
    }
}

/// An event whose delivery was interrupted by the VM exit: the IDT-vectoring information with the
/// IDT-vectoring error code (VMCS 440AH) and, for software events, the VM-exit instruction length.
///
/// ```
/// use exits::{InterruptionType, RawExitInfo, VmExit};
///
/// // An EPT violation (reason 48) while the guest's IDT delivered INT 0x80 (2-byte instruction).
/// let exit = VmExit::from_raw(&RawExitInfo {
///     reason: 48,
///     qualification: 0x182,
///     idt_vectoring_info: 0x8000_0480,
///     instruction_length: 2,
///     ..RawExitInfo::default()
/// });
/// let event = exit.idt_vectoring().unwrap();
/// assert_eq!((event.info.vector, event.info.kind), (0x80, InterruptionType::SoftwareInterrupt));
/// assert_eq!(event.instruction_length.map(|l| l.get()), Some(2));
/// assert_eq!(event.error_code, None);
/// assert_eq!(event.to_string(), "software interrupt, vector 128, instruction length 2 bytes");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdtVectoring {
    /// The IDT-vectoring information.
    pub info: IdtVectoringInfo,
    /// The IDT-vectoring error code, present if `info.error_code_valid`.
    pub error_code: Option<u32>,
    /// The VM-exit instruction length, present for software interrupts and software exceptions
    /// (the length of the INT n, INT1, INT3 or INTO instruction).
    pub instruction_length: Option<InstructionLength>,
}

impl IdtVectoring {
    /// Reads the event whose delivery the current VM exit interrupted, if any: the IDT-vectoring
    /// information field (4408H) and, when its valid bit is set, the IDT-vectoring error code
    /// (440AH) if flagged valid and, for a software interrupt or exception, the VM-exit
    /// instruction length (440CH) unless `known_length` already holds it. Useful for exits whose
    /// decoded form does not carry it (the [`crate::VmExit`] variants of the reasons that can
    /// occur during event delivery do: [`crate::VmExit::idt_vectoring`]).
    ///
    /// ```
    /// use exits::{IdtVectoring, InterruptionType, inject};
    /// use vmcs::{SoftVmcs, VmcsRead, fields};
    ///
    /// // An EPT violation while the guest's IDT delivered #PF with error code 2.
    /// let mut vmcs = SoftVmcs::all_fields();
    /// vmcs.store(fields::IDT_VECTORING_INFORMATION.encoding(), 0x8000_0b0e)?;
    /// vmcs.store(fields::IDT_VECTORING_ERROR_CODE.encoding(), 2)?;
    /// let event = IdtVectoring::read(&vmcs, None)?.expect("valid");
    /// assert_eq!((event.info.vector, event.info.kind), (14, InterruptionType::HardwareException));
    /// inject::reinject(&mut vmcs, &event)?;
    /// assert_eq!(vmcs.read(fields::VM_ENTRY_INTERRUPTION_INFORMATION)?.bits(), 0x8000_0b0e);
    /// assert_eq!(vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE)?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ExitReadError`] naming the first field whose VMREAD failed.
    pub fn read(
        vmcs: &impl VmcsRead,
        known_length: Option<InstructionLength>,
    ) -> Result<Option<Self>, ExitReadError> {
        idt_vectoring(&mut |field| read_field(vmcs, field), known_length)
    }

    /// The VM-entry values that deliver this event again on the next VM entry (SDM "Information for
    /// VM Exits During Event Delivery": the VMM re-injects the event by copying the IDT-vectoring
    /// fields into the VM-entry event-injection fields).
    pub const fn reinjection(&self) -> EventInjection {
        EventInjection {
            vector: self.info.vector,
            kind: self.info.kind,
            error_code: if self.info.error_code_valid {
                self.error_code
            } else {
                None
            },
            instruction_length: if is_software_event(self.info.kind) {
                self.instruction_length
            } else {
                None
            },
        }
    }
}

impl fmt::Display for IdtVectoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_event(f, self.info.vector, self.info.kind, self.error_code)?;
        if let Some(length) = self.instruction_length {
            write!(f, ", instruction length {length}")?;
        }
        Ok(())
    }
}

/// An event to inject on VM entry: the values of the VM-entry interruption-information field
/// (`VM_ENTRY_INTERRUPTION_INFORMATION`, 4016H), the VM-entry exception error code
/// (`VM_ENTRY_EXCEPTION_ERROR_CODE`, 4018H) and the VM-entry instruction length
/// (`VM_ENTRY_INSTRUCTION_LENGTH`, 401AH).
///
/// ```
/// use exits::{EventInjection, InterruptionType, instruction::InstructionLength};
/// use vmcs::{SoftVmcs, VmcsRead, fields};
///
/// // INT 0x80 delivered again on the next VM entry, with its 2-byte length.
/// let event = EventInjection {
///     vector: 0x80,
///     kind: InterruptionType::SoftwareInterrupt,
///     error_code: None,
///     instruction_length: Some(InstructionLength(2)),
/// };
/// assert_eq!(event.interruption_info().bits(), 0x8000_0480);
/// let mut vmcs = SoftVmcs::all_fields();
/// event.write(&mut vmcs)?;
/// assert_eq!(vmcs.read(fields::VM_ENTRY_INTERRUPTION_INFORMATION)?.bits(), 0x8000_0480);
/// assert_eq!(vmcs.read(fields::VM_ENTRY_INSTRUCTION_LENGTH)?, 2);
/// assert_eq!(event.to_string(), "inject software interrupt, vector 128, instruction length 2 bytes");
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EventInjection {
    /// Vector of the interrupt or exception.
    pub vector: u8,
    /// Interruption type.
    pub kind: InterruptionType,
    /// Error code to deliver; `Some` sets "deliver error code" (bit 11).
    pub error_code: Option<u32>,
    /// VM-entry instruction length, needed for software interrupts and exceptions.
    pub instruction_length: Option<InstructionLength>,
}

impl EventInjection {
    /// The value of the VM-entry interruption-information field: vector, type, "deliver error
    /// code" and the valid bit (31).
    pub const fn interruption_info(&self) -> InterruptionInfo {
        InterruptionInfo::new(self.vector, self.kind, self.error_code.is_some())
    }

    /// Writes the event into the VM-entry event-injection fields of `vmcs`: the interruption
    /// information always, the exception error code and the instruction length when present.
    ///
    /// # Errors
    ///
    /// The [`VmFail`] of the first VMWRITE that fails.
    pub fn write(&self, vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
        vmcs.write(
            fields::VM_ENTRY_INTERRUPTION_INFORMATION,
            self.interruption_info(),
        )?;
        if let Some(code) = self.error_code {
            vmcs.write(fields::VM_ENTRY_EXCEPTION_ERROR_CODE, code)?;
        }
        if let Some(length) = self.instruction_length {
            vmcs.write(fields::VM_ENTRY_INSTRUCTION_LENGTH, length.get())?;
        }
        Ok(())
    }
}

impl fmt::Display for EventInjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inject ")?;
        write_event(f, self.vector, self.kind, self.error_code)?;
        if let Some(length) = self.instruction_length {
            write!(f, ", instruction length {length}")?;
        }
        Ok(())
    }
}
