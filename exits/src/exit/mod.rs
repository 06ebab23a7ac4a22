//! The decoded VM exit: one enum whose variants carry what applies to their exit reason.

use core::fmt;

use thiserror::Error;
use vmcs::fields;
use vmx_core::VmFail;

use crate::event::{ExitInterruptionInfo, IdtVectoring};
use crate::instruction::{
    DescriptorTableInfo, InsOutsInfo, InstructionLength, InvalidationInfo, LdtrTrInfo,
    LoadiwkeyInfo, MemoryInfo, MsrImmediateInfo, RegisterInfo, VmreadVmwriteInfo,
};
use crate::qualification::{
    ApicAccessQualification, CrAccessQualification, DebugQualification, EntryFailureQualification,
    EptViolationQualification, IoQualification, MovDrQualification, MwaitQualification,
    NotifyQualification, PmlFullQualification, SppQualification, TaskSwitchQualification,
};

/// One of the VM-exit information fields (SDM Vol. 3C, "VM-Exit Information Fields") that
/// [`VmExit`] reads.
///
/// ```
/// use exits::ExitField;
/// use vmcs::fields;
///
/// // Each field is the field table's: its encoding comes from vmcs::fields.
/// assert_eq!(ExitField::ExitQualification.encoding(), fields::EXIT_QUALIFICATION.encoding());
/// assert_eq!(ExitField::InstructionLength.encoding(), 0x440c);
/// assert_eq!(ExitField::ALL[0], ExitField::ExitReason);
/// assert_eq!(ExitField::GuestPhysicalAddress.to_string(), "guest-physical address (0x2400)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExitField {
    /// Exit reason (4402H).
    ExitReason,
    /// Exit qualification (6400H).
    ExitQualification,
    /// Guest-linear address (640AH).
    GuestLinearAddress,
    /// Guest-physical address (2400H).
    GuestPhysicalAddress,
    /// VM-exit interruption information (4404H).
    InterruptionInformation,
    /// VM-exit interruption error code (4406H).
    InterruptionErrorCode,
    /// IDT-vectoring information (4408H).
    IdtVectoringInformation,
    /// IDT-vectoring error code (440AH).
    IdtVectoringErrorCode,
    /// VM-exit instruction length (440CH).
    InstructionLength,
    /// VM-exit instruction information (440EH).
    InstructionInformation,
}

impl ExitField {
    /// Every field, in the order of this enum.
    pub const ALL: [ExitField; 10] = [
        ExitField::ExitReason,
        ExitField::ExitQualification,
        ExitField::GuestLinearAddress,
        ExitField::GuestPhysicalAddress,
        ExitField::InterruptionInformation,
        ExitField::InterruptionErrorCode,
        ExitField::IdtVectoringInformation,
        ExitField::IdtVectoringErrorCode,
        ExitField::InstructionLength,
        ExitField::InstructionInformation,
    ];

    /// The field's VMCS encoding, from [`vmcs::fields`].
    pub const fn encoding(self) -> u32 {
        match self {
            Self::ExitReason => fields::EXIT_REASON.encoding(),
            Self::ExitQualification => fields::EXIT_QUALIFICATION.encoding(),
            Self::GuestLinearAddress => fields::GUEST_LINEAR_ADDRESS.encoding(),
            Self::GuestPhysicalAddress => fields::GUEST_PHYSICAL_ADDRESS.encoding(),
            Self::InterruptionInformation => fields::VM_EXIT_INTERRUPTION_INFORMATION.encoding(),
            Self::InterruptionErrorCode => fields::VM_EXIT_INTERRUPTION_ERROR_CODE.encoding(),
            Self::IdtVectoringInformation => fields::IDT_VECTORING_INFORMATION.encoding(),
            Self::IdtVectoringErrorCode => fields::IDT_VECTORING_ERROR_CODE.encoding(),
            Self::InstructionLength => fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(),
            Self::InstructionInformation => fields::VM_EXIT_INSTRUCTION_INFORMATION.encoding(),
        }
    }

    /// The SDM's name of the field.
    pub const fn sdm_name(self) -> &'static str {
        match self {
            Self::ExitReason => "exit reason",
            Self::ExitQualification => "exit qualification",
            Self::GuestLinearAddress => "guest-linear address",
            Self::GuestPhysicalAddress => "guest-physical address",
            Self::InterruptionInformation => "VM-exit interruption information",
            Self::InterruptionErrorCode => "VM-exit interruption error code",
            Self::IdtVectoringInformation => "IDT-vectoring information",
            Self::IdtVectoringErrorCode => "IDT-vectoring error code",
            Self::InstructionLength => "VM-exit instruction length",
            Self::InstructionInformation => "VM-exit instruction information",
        }
    }
}

impl fmt::Display for ExitField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#06x})", self.sdm_name(), self.encoding())
    }
}

/// Reading a VM-exit information field failed.
///
/// ```
/// use exits::{ExitField, VmExit};
/// use vmcs::SoftVmcs;
/// use vmx_core::{VmFail, VmInstructionError};
///
/// // A software VMCS without the exit-reason field: the first VMREAD fails with error 12
/// // ("VMREAD/VMWRITE from/to unsupported VMCS component") and the error names the field.
/// let vmcs = SoftVmcs::with_limits(0, false);
/// let error = VmExit::read(&vmcs).unwrap_err();
/// assert_eq!(error.field, ExitField::ExitReason);
/// assert_eq!(error.error, VmFail::Valid(VmInstructionError::from_raw(12)));
/// assert_eq!(error.to_string(), "reading the exit reason (0x4402) failed: VMfailValid: VM-instruction error 12: VMREAD/VMWRITE from/to unsupported VMCS component");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("reading the {field} failed: {error}")]
pub struct ExitReadError {
    /// The field that could not be read.
    pub field: ExitField,
    /// Why the VMREAD (or the software backend) failed.
    #[source]
    pub error: VmFail,
}

/// The raw values of the VM-exit information fields, for decoding without a VMCS (a log, a test,
/// the command line). Fields a reason does not use are ignored.
///
/// ```
/// use exits::{ExitField, RawExitInfo, VmExit};
///
/// // A CPUID exit (reason 10) with a 2-byte instruction, as a log would hold it.
/// let raw = RawExitInfo { reason: 10, instruction_length: 2, ..RawExitInfo::default() };
/// assert_eq!(raw.get(ExitField::InstructionLength), 2);
/// assert!(matches!(VmExit::from_raw(&raw), VmExit::Cpuid { length } if length.get() == 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RawExitInfo {
    /// Exit reason.
    pub reason: u32,
    /// Exit qualification.
    pub qualification: u64,
    /// Guest-linear address.
    pub guest_linear_address: u64,
    /// Guest-physical address.
    pub guest_physical_address: u64,
    /// VM-exit interruption information.
    pub interruption_info: u32,
    /// VM-exit interruption error code.
    pub interruption_error_code: u32,
    /// IDT-vectoring information.
    pub idt_vectoring_info: u32,
    /// IDT-vectoring error code.
    pub idt_vectoring_error_code: u32,
    /// VM-exit instruction length.
    pub instruction_length: u32,
    /// VM-exit instruction information.
    pub instruction_info: u32,
}

impl RawExitInfo {
    /// The raw value of one field.
    pub const fn get(&self, field: ExitField) -> u64 {
        match field {
            ExitField::ExitReason => self.reason as u64,
            ExitField::ExitQualification => self.qualification,
            ExitField::GuestLinearAddress => self.guest_linear_address,
            ExitField::GuestPhysicalAddress => self.guest_physical_address,
            ExitField::InterruptionInformation => self.interruption_info as u64,
            ExitField::InterruptionErrorCode => self.interruption_error_code as u64,
            ExitField::IdtVectoringInformation => self.idt_vectoring_info as u64,
            ExitField::IdtVectoringErrorCode => self.idt_vectoring_error_code as u64,
            ExitField::InstructionLength => self.instruction_length as u64,
            ExitField::InstructionInformation => self.instruction_info as u64,
        }
    }
}

impl fmt::Display for RawExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit reason {:#x}", self.reason)?;
        for field in &ExitField::ALL[1..] {
            write!(f, ", {} {:#x}", field.sdm_name(), self.get(*field))?;
        }
        Ok(())
    }
}

/// What the exit qualification of an exception or NMI exit says.
///
/// ```
/// use exits::{ExceptionQualification, RawExitInfo, VmExit};
///
/// // A #PF exit (reason 0; hardware exception 14 with an error code) at linear address 0xdead000:
/// // the exit qualification holds the address.
/// let raw = RawExitInfo {
///     reason: 0,
///     interruption_info: 0x8000_0b0e,
///     interruption_error_code: 2,
///     qualification: 0xdead000,
///     ..RawExitInfo::default()
/// };
/// let VmExit::ExceptionOrNmi { qualification, error_code, .. } = VmExit::from_raw(&raw) else {
///     unreachable!()
/// };
/// assert_eq!(qualification, ExceptionQualification::PageFault { linear_address: 0xdead000 });
/// assert_eq!(error_code, Some(2));
/// assert_eq!(qualification.to_string(), "linear address 0xdead000");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExceptionQualification {
    /// Page fault (#PF): the linear address that caused it.
    PageFault {
        /// The faulting linear address.
        linear_address: u64,
    },
    /// Debug exception (#DB).
    Debug(DebugQualification),
    /// Any other event: the SDM defines no qualification (not read).
    None,
}

impl fmt::Display for ExceptionQualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PageFault { linear_address } => write!(f, "linear address {linear_address:#x}"),
            Self::Debug(debug) => write!(f, "conditions {debug}"),
            Self::None => f.write_str("none"),
        }
    }
}

/// A string I/O instruction's extra information.
///
/// ```
/// use exits::{RawExitInfo, StringIo, VmExit};
/// use vmcs::GuestSegment;
///
/// // REP OUTSB to port 0x3F8 (reason 30) from linear address 0x5000, DS, 64-bit addressing.
/// let raw = RawExitInfo {
///     reason: 30,
///     qualification: 0x3f8_0030,
///     guest_linear_address: 0x5000,
///     instruction_info: 2 << 7 | 3 << 15,
///     instruction_length: 2,
///     ..RawExitInfo::default()
/// };
/// let VmExit::IoInstruction { string: Some(string), .. } = VmExit::from_raw(&raw) else {
///     unreachable!()
/// };
/// assert_eq!(string.guest_linear_address, 0x5000);
/// assert_eq!(string.info.segment, Ok(GuestSegment::Ds));
/// assert_eq!(string.to_string(), "string at linear address 0x5000 (segment DS, 64-bit address)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StringIo {
    /// Guest-linear address of the memory operand (the first byte accessed).
    pub guest_linear_address: u64,
    /// The instruction information; meaningful only if IA32_VMX_BASIC bit 54 ("VM exits due to
    /// INS and OUTS save instruction information") is 1.
    pub info: InsOutsInfo,
}

impl fmt::Display for StringIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "string at linear address {:#x} ({})",
            self.guest_linear_address, self.info
        )
    }
}

/// A decoded VM exit (or VM-entry failure): one variant per basic exit reason, carrying the
/// decoded exit qualification and exit information that the SDM defines for that reason, so that a
/// `match` is the whole dispatcher.
///
/// Variants of instructions that cause exits carry `length`, the VM-exit instruction length, to
/// advance the guest RIP. Instructions with a memory operand carry `displacement` (the exit
/// qualification: the operand's displacement, sign-extended) and their instruction information,
/// from which [`MemoryOperand::linear_address`](crate::MemoryOperand::linear_address) finds the
/// operand. Exits that can happen while an event is delivered carry `idt_vectoring`, the event to
/// re-inject.
///
/// [`VmExit::read`] reads exactly the fields the reason needs; [`VmExit::from_raw`] decodes the same
/// from raw values.
///
/// ```
/// use exits::{GpReg, RawExitInfo, VmExit};
///
/// // A WRMSR exit (reason 32) and a MOV to CR3 exit (reason 28), decoded from raw values; on a live
/// // VMCS `VmExit::read(&vmcs)` reads the same fields.
/// assert!(matches!(
///     VmExit::from_raw(&RawExitInfo { reason: 32, instruction_length: 2, ..Default::default() }),
///     VmExit::Wrmsr { length } if length.get() == 2
/// ));
/// let exit = VmExit::from_raw(&RawExitInfo {
///     reason: 28,
///     qualification: 0x303, // MOV CR3, RBX
///     instruction_length: 3,
///     ..Default::default()
/// });
/// let VmExit::ControlRegisterAccess { qualification, .. } = exit else { unreachable!() };
/// assert_eq!((qualification.cr, qualification.gpr), (3, GpReg::Rbx));
/// assert_eq!(exit.basic_reason().number(), 28);
/// assert_eq!(exit.instruction_length().map(|l| l.get()), Some(3));
/// assert_eq!(exit.to_string(), "Control-register accesses: MOV CR3, RBX, instruction length 3 bytes");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum VmExit {
    /// 0: exception or NMI.
    ExceptionOrNmi {
        /// VM-exit interruption information; `None` if its valid bit was clear (which the SDM
        /// rules out for this reason; nothing else is read then).
        info: Option<ExitInterruptionInfo>,
        /// VM-exit interruption error code, if the information says it is valid.
        error_code: Option<u32>,
        /// Exit qualification for #PF and #DB.
        qualification: ExceptionQualification,
        /// Instruction length for software exceptions (INT3, INTO, INT1).
        length: Option<InstructionLength>,
        /// The event whose delivery caused this exception, if any.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 1: external interrupt. `info` is present if "acknowledge interrupt on exit" was 1.
    ExternalInterrupt {
        /// VM-exit interruption information (the vector of the acknowledged interrupt).
        info: Option<ExitInterruptionInfo>,
    },
    /// 2: triple fault.
    TripleFault,
    /// 3: INIT signal.
    InitSignal,
    /// 4: start-up IPI, with its vector (exit qualification bits 7:0).
    StartupIpi {
        /// Exit qualification bits 7:0: the vector.
        vector: u8,
    },
    /// 5: I/O SMI (an SMM VM exit): the qualification describes the I/O instruction that retired
    /// just before the SMI; `guest_linear_address` is its memory operand's linear address for INS
    /// and OUTS.
    IoSmi {
        /// Exit qualification.
        qualification: IoQualification,
        /// Guest-linear address.
        guest_linear_address: Option<u64>,
    },
    /// 6: other SMI.
    OtherSmi,
    /// 7: interrupt window.
    InterruptWindow,
    /// 8: NMI window.
    NmiWindow,
    /// 9: task switch. `length` is present for switches by CALL, IRET and JMP.
    TaskSwitch {
        /// Exit qualification.
        qualification: TaskSwitchQualification,
        /// VM-exit instruction length.
        length: Option<InstructionLength>,
        /// IDT-vectoring information and error code: the event whose delivery caused this exit.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 10: CPUID.
    Cpuid {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 11: GETSEC.
    Getsec {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 12: HLT.
    Hlt {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 13: INVD.
    Invd {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 14: INVLPG, with its linear-address operand (the exit qualification).
    Invlpg {
        /// Exit qualification: the linear-address operand.
        linear_address: u64,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 15: RDPMC.
    Rdpmc {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 16: RDTSC.
    Rdtsc {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 17: RSM.
    Rsm {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 18: VMCALL.
    Vmcall {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 19: VMCLEAR.
    Vmclear {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: MemoryInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 20: VMLAUNCH.
    Vmlaunch {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 21: VMPTRLD.
    Vmptrld {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: MemoryInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 22: VMPTRST.
    Vmptrst {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: MemoryInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 23: VMREAD (`displacement` is meaningful for a memory operand only).
    Vmread {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: VmreadVmwriteInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 24: VMRESUME.
    Vmresume {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 25: VMWRITE (`displacement` is meaningful for a memory operand only).
    Vmwrite {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: VmreadVmwriteInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 26: VMXOFF.
    Vmxoff {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 27: VMXON.
    Vmxon {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: MemoryInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 28: control-register access. `guest_linear_address` is the LMSW memory operand's address.
    ControlRegisterAccess {
        /// Exit qualification.
        qualification: CrAccessQualification,
        /// Guest-linear address.
        guest_linear_address: Option<u64>,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 29: MOV DR.
    MovDr {
        /// Exit qualification.
        qualification: MovDrQualification,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 30: I/O instruction; `string` is present for INS and OUTS.
    IoInstruction {
        /// Exit qualification.
        qualification: IoQualification,
        /// For INS and OUTS: the guest-linear address and the instruction information.
        string: Option<StringIo>,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 31: RDMSR (the MSR index is in the guest's RCX).
    Rdmsr {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 32: WRMSR (the MSR index is in the guest's RCX).
    Wrmsr {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 33: VM-entry failure due to invalid guest state.
    EntryFailureInvalidGuestState {
        /// Exit qualification.
        qualification: EntryFailureQualification,
    },
    /// 34: VM-entry failure due to MSR loading; `entry` is the 1-based index of the MSR-load
    /// entry that failed (the exit qualification).
    EntryFailureMsrLoading {
        /// Exit qualification: the 1-based index of the failing MSR-load entry.
        entry: u64,
    },
    /// 36: MWAIT.
    Mwait {
        /// Exit qualification.
        qualification: MwaitQualification,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 37: monitor trap flag.
    MonitorTrapFlag,
    /// 39: MONITOR.
    Monitor {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 40: PAUSE.
    Pause {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 41: VM-entry failure due to machine-check event.
    EntryFailureMachineCheck,
    /// 43: TPR below threshold.
    TprBelowThreshold,
    /// 44: APIC access.
    ApicAccess {
        /// Exit qualification.
        qualification: ApicAccessQualification,
        /// IDT-vectoring information and error code: the event whose delivery caused this exit.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 45: virtualized EOI, with the vector (exit qualification bits 7:0).
    VirtualizedEoi {
        /// Exit qualification bits 7:0: the vector.
        vector: u8,
    },
    /// 46: LGDT, LIDT, SGDT or SIDT.
    GdtrIdtrAccess {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: DescriptorTableInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 47: LLDT, LTR, SLDT or STR (`displacement` is meaningful for a memory operand only).
    LdtrTrAccess {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: LdtrTrInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 48: EPT violation. `guest_linear` is present when the qualification says it is valid.
    EptViolation {
        /// Exit qualification.
        qualification: EptViolationQualification,
        /// Guest-physical address.
        guest_physical: u64,
        /// Guest-linear address.
        guest_linear: Option<u64>,
        /// IDT-vectoring information and error code: the event whose delivery caused this exit.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 49: EPT misconfiguration.
    EptMisconfiguration {
        /// Guest-physical address.
        guest_physical: u64,
        /// IDT-vectoring information and error code: the event whose delivery caused this exit.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 50: INVEPT.
    Invept {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: InvalidationInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 51: RDTSCP.
    Rdtscp {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 52: VMX-preemption timer expired.
    PreemptionTimerExpired,
    /// 53: INVVPID.
    Invvpid {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: InvalidationInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 54: WBINVD or WBNOINVD.
    Wbinvd {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 55: XSETBV.
    Xsetbv {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 56: APIC write, with the offset of the write on the virtual-APIC page (bits 11:0).
    ApicWrite {
        /// Exit qualification bits 11:0: the offset on the virtual-APIC page.
        offset: u16,
    },
    /// 57: RDRAND.
    Rdrand {
        /// VM-exit instruction information.
        info: RegisterInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 58: INVPCID.
    Invpcid {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: InvalidationInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 59: VMFUNC.
    Vmfunc {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 60: ENCLS.
    Encls {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 61: RDSEED.
    Rdseed {
        /// VM-exit instruction information.
        info: RegisterInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 62: page-modification log full.
    PageModificationLogFull {
        /// Exit qualification.
        qualification: PmlFullQualification,
        /// IDT-vectoring information and error code: the event whose delivery caused this exit.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 63: XSAVES.
    Xsaves {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: MemoryInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 64: XRSTORS.
    Xrstors {
        /// Exit qualification: the displacement of the memory operand, sign-extended to 64 bits.
        displacement: u64,
        /// VM-exit instruction information.
        info: MemoryInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 65: PCONFIG.
    Pconfig {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 66: SPP-related event.
    SppEvent {
        /// Exit qualification.
        qualification: SppQualification,
        /// Guest-physical address.
        guest_physical: u64,
        /// IDT-vectoring information and error code: the event whose delivery caused this exit.
        idt_vectoring: Option<IdtVectoring>,
    },
    /// 67: UMWAIT.
    Umwait {
        /// VM-exit instruction information.
        info: RegisterInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 68: TPAUSE.
    Tpause {
        /// VM-exit instruction information.
        info: RegisterInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 69: LOADIWKEY.
    Loadiwkey {
        /// VM-exit instruction information.
        info: LoadiwkeyInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 70: ENCLV.
    Enclv {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 72: ENQCMD PASID translation failure.
    EnqcmdPasidTranslationFailure {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 73: ENQCMDS PASID translation failure.
    EnqcmdsPasidTranslationFailure {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 74: bus lock (trap-like: the instruction has completed).
    BusLock,
    /// 75: instruction timeout ("notify VM exit").
    InstructionTimeout {
        /// Exit qualification.
        qualification: NotifyQualification,
    },
    /// 76: SEAMCALL.
    Seamcall {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 77: TDCALL.
    Tdcall {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 78: RDMSRLIST.
    Rdmsrlist {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 79: WRMSRLIST.
    Wrmsrlist {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 80: URDMSR.
    Urdmsr {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 81: UWRMSR.
    Uwrmsr {
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 84: RDMSR with an immediate MSR index (the exit qualification).
    RdmsrImmediate {
        /// Exit qualification: the MSR index (the immediate operand).
        msr: u32,
        /// VM-exit instruction information.
        info: MsrImmediateInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// 85: WRMSRNS with an immediate MSR index (the exit qualification).
    WrmsrnsImmediate {
        /// Exit qualification: the MSR index (the immediate operand).
        msr: u32,
        /// VM-exit instruction information.
        info: MsrImmediateInfo,
        /// VM-exit instruction length.
        length: InstructionLength,
    },
    /// A basic exit reason the SDM does not define (nothing else is read).
    Unknown {
        /// The basic exit-reason number.
        reason: u16,
    },
}

mod decode;
mod display;

pub(crate) use decode::{idt_vectoring, read_field};
