//! The decoded VM exit: one enum whose variants carry what applies to their exit reason.

use core::fmt;

use thiserror::Error;
use vmcs::{VmcsRead, fields};
use vmx_core::VmFail;

use crate::InterruptionType;
use crate::event::{ExitInterruptionInfo, IdtVectoring, IdtVectoringInfo, is_software_event};
use crate::instruction::{
    DescriptorTableInfo, InsOutsInfo, InstructionLength, InvalidationInfo, LdtrTrInfo,
    LoadiwkeyInfo, MemoryInfo, MsrImmediateInfo, RegisterInfo, VmreadVmwriteInfo,
};
use crate::qualification::{
    ApicAccessQualification, CrAccessQualification, CrAccessType, DebugQualification,
    EntryFailureQualification, EptViolationQualification, IoQualification, LmswOperandType,
    MovDrQualification, MwaitQualification, NotifyQualification, PmlFullQualification,
    SppQualification, TaskSwitchQualification,
};
use crate::reason::{BasicExitReason, ExitReason};

/// One of the VM-exit information fields (SDM Vol. 3C, "VM-Exit Information Fields") that
/// [`VmExit`] reads.
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

impl ExitReason {
    /// Reads the exit-reason field from a VMCS.
    ///
    /// # Errors
    ///
    /// [`ExitReadError`] naming the field if the VMREAD fails.
    #[inline(always)]
    pub fn read(vmcs: &impl VmcsRead) -> Result<Self, ExitReadError> {
        read_field(vmcs, ExitField::ExitReason).map(|raw| Self::from_raw(raw as u32))
    }
}

#[inline(always)]
pub(crate) fn read_field(vmcs: &impl VmcsRead, field: ExitField) -> Result<u64, ExitReadError> {
    vmcs.read_raw(field.encoding())
        .map_err(|error| ExitReadError { field, error })
}

impl VmExit {
    /// Reads and decodes the current VM exit from a VMCS: the exit reason, then only the fields
    /// that reason needs.
    ///
    /// # Errors
    ///
    /// [`ExitReadError`] naming the first field whose VMREAD failed.
    #[inline]
    pub fn read(vmcs: &impl VmcsRead) -> Result<Self, ExitReadError> {
        let reason = ExitReason::read(vmcs)?;
        Self::read_for(reason, vmcs)
    }

    /// Decodes the VM exit for an exit reason already read (for instance to look at its flags
    /// first), reading only the other fields that reason needs.
    ///
    /// # Errors
    ///
    /// [`ExitReadError`] naming the first field whose VMREAD failed.
    #[inline]
    pub fn read_for(reason: ExitReason, vmcs: &impl VmcsRead) -> Result<Self, ExitReadError> {
        Self::decode(reason, &mut |field| read_field(vmcs, field))
    }

    /// Decodes the exit from raw field values (no VMCS needed).
    pub fn from_raw(raw: &RawExitInfo) -> Self {
        let reason = ExitReason::from_raw(raw.reason);
        match Self::decode(reason, &mut |field| {
            Ok::<u64, core::convert::Infallible>(raw.get(field))
        }) {
            Ok(exit) => exit,
            Err(never) => match never {},
        }
    }

    /// Decodes the exit for `reason`, reading the other fields it needs through `read`. This is
    /// the single decoder behind [`VmExit::read`] and [`VmExit::from_raw`]; `read` is called once
    /// per field the reason needs and never for the exit reason.
    #[inline(always)]
    pub fn decode<E>(
        reason: ExitReason,
        read: &mut impl FnMut(ExitField) -> Result<u64, E>,
    ) -> Result<Self, E> {
        use BasicExitReason as R;
        // Plain generic helpers (no `dyn`): with the caller's reader known, each arm compiles to
        // its VMREADs and the construction of its own variant.
        fn length<E>(
            read: &mut impl FnMut(ExitField) -> Result<u64, E>,
        ) -> Result<InstructionLength, E> {
            read(ExitField::InstructionLength).map(|raw| InstructionLength(raw as u32))
        }
        fn info<E>(read: &mut impl FnMut(ExitField) -> Result<u64, E>) -> Result<u32, E> {
            read(ExitField::InstructionInformation).map(|raw| raw as u32)
        }
        fn q<E>(read: &mut impl FnMut(ExitField) -> Result<u64, E>) -> Result<u64, E> {
            read(ExitField::ExitQualification)
        }

        match reason.basic {
            R::ExceptionOrNmi => Ok({
                let raw_info = read(ExitField::InterruptionInformation)? as u32;
                match ExitInterruptionInfo::from_raw(raw_info) {
                    None => Self::ExceptionOrNmi {
                        info: None,
                        error_code: None,
                        qualification: ExceptionQualification::None,
                        length: None,
                        idt_vectoring: None,
                    },
                    Some(info) => {
                        let error_code = if info.error_code_valid {
                            Some(read(ExitField::InterruptionErrorCode)? as u32)
                        } else {
                            None
                        };
                        let exception = matches!(
                            info.kind,
                            InterruptionType::HardwareException
                                | InterruptionType::PrivilegedSoftwareException
                        );
                        let qualification = match info.vector {
                            14 if exception => ExceptionQualification::PageFault {
                                linear_address: q(read)?,
                            },
                            1 if exception => ExceptionQualification::Debug(
                                DebugQualification::from_raw(q(read)?),
                            ),
                            _ => ExceptionQualification::None,
                        };
                        let length = if is_software_event(info.kind) {
                            Some(length(read)?)
                        } else {
                            None
                        };
                        Self::ExceptionOrNmi {
                            info: Some(info),
                            error_code,
                            qualification,
                            length,
                            idt_vectoring: idt_vectoring(read, length)?,
                        }
                    }
                }
            }),
            R::ExternalInterrupt => Ok(Self::ExternalInterrupt {
                info: ExitInterruptionInfo::from_raw(
                    read(ExitField::InterruptionInformation)? as u32
                ),
            }),
            R::TripleFault => Ok(Self::TripleFault),
            R::InitSignal => Ok(Self::InitSignal),
            R::StartupIpi => Ok(Self::StartupIpi {
                vector: q(read)? as u8,
            }),
            R::IoSmi => Ok({
                let qualification = IoQualification::from_raw(q(read)?);
                let guest_linear_address = if qualification.string {
                    Some(read(ExitField::GuestLinearAddress)?)
                } else {
                    None
                };
                Self::IoSmi {
                    qualification,
                    guest_linear_address,
                }
            }),
            R::OtherSmi => Ok(Self::OtherSmi),
            R::InterruptWindow => Ok(Self::InterruptWindow),
            R::NmiWindow => Ok(Self::NmiWindow),
            R::TaskSwitch => Ok({
                let qualification = TaskSwitchQualification::from_raw(q(read)?);
                let length = match qualification.source {
                    crate::TaskSwitchSource::TaskGate => None,
                    _ => Some(length(read)?),
                };
                Self::TaskSwitch {
                    qualification,
                    length,
                    idt_vectoring: idt_vectoring(read, length)?,
                }
            }),
            R::Cpuid => Ok(Self::Cpuid {
                length: length(read)?,
            }),
            R::Getsec => Ok(Self::Getsec {
                length: length(read)?,
            }),
            R::Hlt => Ok(Self::Hlt {
                length: length(read)?,
            }),
            R::Invd => Ok(Self::Invd {
                length: length(read)?,
            }),
            R::Invlpg => Ok(Self::Invlpg {
                linear_address: q(read)?,
                length: length(read)?,
            }),
            R::Rdpmc => Ok(Self::Rdpmc {
                length: length(read)?,
            }),
            R::Rdtsc => Ok(Self::Rdtsc {
                length: length(read)?,
            }),
            R::Rsm => Ok(Self::Rsm {
                length: length(read)?,
            }),
            R::Vmcall => Ok(Self::Vmcall {
                length: length(read)?,
            }),
            R::Vmclear => Ok(Self::Vmclear {
                displacement: q(read)?,
                info: MemoryInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Vmlaunch => Ok(Self::Vmlaunch {
                length: length(read)?,
            }),
            R::Vmptrld => Ok(Self::Vmptrld {
                displacement: q(read)?,
                info: MemoryInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Vmptrst => Ok(Self::Vmptrst {
                displacement: q(read)?,
                info: MemoryInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Vmread => Ok(Self::Vmread {
                displacement: q(read)?,
                info: VmreadVmwriteInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Vmresume => Ok(Self::Vmresume {
                length: length(read)?,
            }),
            R::Vmwrite => Ok(Self::Vmwrite {
                displacement: q(read)?,
                info: VmreadVmwriteInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Vmxoff => Ok(Self::Vmxoff {
                length: length(read)?,
            }),
            R::Vmxon => Ok(Self::Vmxon {
                displacement: q(read)?,
                info: MemoryInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::ControlRegisterAccess => Ok({
                let qualification = CrAccessQualification::from_raw(q(read)?);
                let lmsw_memory = qualification.access_type == CrAccessType::Lmsw
                    && qualification.lmsw_operand == LmswOperandType::Memory;
                let guest_linear_address = if lmsw_memory {
                    Some(read(ExitField::GuestLinearAddress)?)
                } else {
                    None
                };
                Self::ControlRegisterAccess {
                    qualification,
                    guest_linear_address,
                    length: length(read)?,
                }
            }),
            R::MovDr => Ok(Self::MovDr {
                qualification: MovDrQualification::from_raw(q(read)?),
                length: length(read)?,
            }),
            R::IoInstruction => Ok({
                let qualification = IoQualification::from_raw(q(read)?);
                let string = if qualification.string {
                    Some(StringIo {
                        guest_linear_address: read(ExitField::GuestLinearAddress)?,
                        info: InsOutsInfo::from_raw(info(read)?),
                    })
                } else {
                    None
                };
                Self::IoInstruction {
                    qualification,
                    string,
                    length: length(read)?,
                }
            }),
            R::Rdmsr => Ok(Self::Rdmsr {
                length: length(read)?,
            }),
            R::Wrmsr => Ok(Self::Wrmsr {
                length: length(read)?,
            }),
            R::EntryFailureInvalidGuestState => Ok(Self::EntryFailureInvalidGuestState {
                qualification: EntryFailureQualification::from_raw(q(read)?),
            }),
            R::EntryFailureMsrLoading => Ok(Self::EntryFailureMsrLoading { entry: q(read)? }),
            R::Mwait => Ok(Self::Mwait {
                qualification: MwaitQualification::from_raw(q(read)?),
                length: length(read)?,
            }),
            R::MonitorTrapFlag => Ok(Self::MonitorTrapFlag),
            R::Monitor => Ok(Self::Monitor {
                length: length(read)?,
            }),
            R::Pause => Ok(Self::Pause {
                length: length(read)?,
            }),
            R::EntryFailureMachineCheck => Ok(Self::EntryFailureMachineCheck),
            R::TprBelowThreshold => Ok(Self::TprBelowThreshold),
            R::ApicAccess => Ok(Self::ApicAccess {
                qualification: ApicAccessQualification::from_raw(q(read)?),
                idt_vectoring: idt_vectoring(read, None)?,
            }),
            R::VirtualizedEoi => Ok(Self::VirtualizedEoi {
                vector: q(read)? as u8,
            }),
            R::GdtrIdtrAccess => Ok(Self::GdtrIdtrAccess {
                displacement: q(read)?,
                info: DescriptorTableInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::LdtrTrAccess => Ok(Self::LdtrTrAccess {
                displacement: q(read)?,
                info: LdtrTrInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::EptViolation => Ok({
                let qualification = EptViolationQualification::from_raw(q(read)?);
                let guest_physical = read(ExitField::GuestPhysicalAddress)?;
                let guest_linear = if qualification.guest_linear_valid {
                    Some(read(ExitField::GuestLinearAddress)?)
                } else {
                    None
                };
                Self::EptViolation {
                    qualification,
                    guest_physical,
                    guest_linear,
                    idt_vectoring: idt_vectoring(read, None)?,
                }
            }),
            R::EptMisconfiguration => Ok(Self::EptMisconfiguration {
                guest_physical: read(ExitField::GuestPhysicalAddress)?,
                idt_vectoring: idt_vectoring(read, None)?,
            }),
            R::Invept => Ok(Self::Invept {
                displacement: q(read)?,
                info: InvalidationInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Rdtscp => Ok(Self::Rdtscp {
                length: length(read)?,
            }),
            R::PreemptionTimerExpired => Ok(Self::PreemptionTimerExpired),
            R::Invvpid => Ok(Self::Invvpid {
                displacement: q(read)?,
                info: InvalidationInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Wbinvd => Ok(Self::Wbinvd {
                length: length(read)?,
            }),
            R::Xsetbv => Ok(Self::Xsetbv {
                length: length(read)?,
            }),
            R::ApicWrite => Ok(Self::ApicWrite {
                offset: (q(read)? & 0xfff) as u16,
            }),
            R::Rdrand => Ok(Self::Rdrand {
                info: RegisterInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Invpcid => Ok(Self::Invpcid {
                displacement: q(read)?,
                info: InvalidationInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Vmfunc => Ok(Self::Vmfunc {
                length: length(read)?,
            }),
            R::Encls => Ok(Self::Encls {
                length: length(read)?,
            }),
            R::Rdseed => Ok(Self::Rdseed {
                info: RegisterInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::PageModificationLogFull => Ok(Self::PageModificationLogFull {
                qualification: PmlFullQualification::from_raw(q(read)?),
                idt_vectoring: idt_vectoring(read, None)?,
            }),
            R::Xsaves => Ok(Self::Xsaves {
                displacement: q(read)?,
                info: MemoryInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Xrstors => Ok(Self::Xrstors {
                displacement: q(read)?,
                info: MemoryInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Pconfig => Ok(Self::Pconfig {
                length: length(read)?,
            }),
            R::SppEvent => Ok(Self::SppEvent {
                qualification: SppQualification::from_raw(q(read)?),
                guest_physical: read(ExitField::GuestPhysicalAddress)?,
                idt_vectoring: idt_vectoring(read, None)?,
            }),
            R::Umwait => Ok(Self::Umwait {
                info: RegisterInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Tpause => Ok(Self::Tpause {
                info: RegisterInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Loadiwkey => Ok(Self::Loadiwkey {
                info: LoadiwkeyInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Enclv => Ok(Self::Enclv {
                length: length(read)?,
            }),
            R::EnqcmdPasidTranslationFailure => Ok(Self::EnqcmdPasidTranslationFailure {
                length: length(read)?,
            }),
            R::EnqcmdsPasidTranslationFailure => Ok(Self::EnqcmdsPasidTranslationFailure {
                length: length(read)?,
            }),
            R::BusLock => Ok(Self::BusLock),
            R::InstructionTimeout => Ok(Self::InstructionTimeout {
                qualification: NotifyQualification::from_raw(q(read)?),
            }),
            R::Seamcall => Ok(Self::Seamcall {
                length: length(read)?,
            }),
            R::Tdcall => Ok(Self::Tdcall {
                length: length(read)?,
            }),
            R::Rdmsrlist => Ok(Self::Rdmsrlist {
                length: length(read)?,
            }),
            R::Wrmsrlist => Ok(Self::Wrmsrlist {
                length: length(read)?,
            }),
            R::Urdmsr => Ok(Self::Urdmsr {
                length: length(read)?,
            }),
            R::Uwrmsr => Ok(Self::Uwrmsr {
                length: length(read)?,
            }),
            R::RdmsrImmediate => Ok(Self::RdmsrImmediate {
                msr: q(read)? as u32,
                info: MsrImmediateInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::WrmsrnsImmediate => Ok(Self::WrmsrnsImmediate {
                msr: q(read)? as u32,
                info: MsrImmediateInfo::from_raw(info(read)?),
                length: length(read)?,
            }),
            R::Unknown(number) => Ok(Self::Unknown { reason: number }),
        }
    }

    /// The basic exit reason this variant stands for.
    pub const fn basic_reason(&self) -> BasicExitReason {
        use BasicExitReason as R;
        match self {
            Self::ExceptionOrNmi { .. } => R::ExceptionOrNmi,
            Self::ExternalInterrupt { .. } => R::ExternalInterrupt,
            Self::TripleFault => R::TripleFault,
            Self::InitSignal => R::InitSignal,
            Self::StartupIpi { .. } => R::StartupIpi,
            Self::IoSmi { .. } => R::IoSmi,
            Self::OtherSmi => R::OtherSmi,
            Self::InterruptWindow => R::InterruptWindow,
            Self::NmiWindow => R::NmiWindow,
            Self::TaskSwitch { .. } => R::TaskSwitch,
            Self::Cpuid { .. } => R::Cpuid,
            Self::Getsec { .. } => R::Getsec,
            Self::Hlt { .. } => R::Hlt,
            Self::Invd { .. } => R::Invd,
            Self::Invlpg { .. } => R::Invlpg,
            Self::Rdpmc { .. } => R::Rdpmc,
            Self::Rdtsc { .. } => R::Rdtsc,
            Self::Rsm { .. } => R::Rsm,
            Self::Vmcall { .. } => R::Vmcall,
            Self::Vmclear { .. } => R::Vmclear,
            Self::Vmlaunch { .. } => R::Vmlaunch,
            Self::Vmptrld { .. } => R::Vmptrld,
            Self::Vmptrst { .. } => R::Vmptrst,
            Self::Vmread { .. } => R::Vmread,
            Self::Vmresume { .. } => R::Vmresume,
            Self::Vmwrite { .. } => R::Vmwrite,
            Self::Vmxoff { .. } => R::Vmxoff,
            Self::Vmxon { .. } => R::Vmxon,
            Self::ControlRegisterAccess { .. } => R::ControlRegisterAccess,
            Self::MovDr { .. } => R::MovDr,
            Self::IoInstruction { .. } => R::IoInstruction,
            Self::Rdmsr { .. } => R::Rdmsr,
            Self::Wrmsr { .. } => R::Wrmsr,
            Self::EntryFailureInvalidGuestState { .. } => R::EntryFailureInvalidGuestState,
            Self::EntryFailureMsrLoading { .. } => R::EntryFailureMsrLoading,
            Self::Mwait { .. } => R::Mwait,
            Self::MonitorTrapFlag => R::MonitorTrapFlag,
            Self::Monitor { .. } => R::Monitor,
            Self::Pause { .. } => R::Pause,
            Self::EntryFailureMachineCheck => R::EntryFailureMachineCheck,
            Self::TprBelowThreshold => R::TprBelowThreshold,
            Self::ApicAccess { .. } => R::ApicAccess,
            Self::VirtualizedEoi { .. } => R::VirtualizedEoi,
            Self::GdtrIdtrAccess { .. } => R::GdtrIdtrAccess,
            Self::LdtrTrAccess { .. } => R::LdtrTrAccess,
            Self::EptViolation { .. } => R::EptViolation,
            Self::EptMisconfiguration { .. } => R::EptMisconfiguration,
            Self::Invept { .. } => R::Invept,
            Self::Rdtscp { .. } => R::Rdtscp,
            Self::PreemptionTimerExpired => R::PreemptionTimerExpired,
            Self::Invvpid { .. } => R::Invvpid,
            Self::Wbinvd { .. } => R::Wbinvd,
            Self::Xsetbv { .. } => R::Xsetbv,
            Self::ApicWrite { .. } => R::ApicWrite,
            Self::Rdrand { .. } => R::Rdrand,
            Self::Invpcid { .. } => R::Invpcid,
            Self::Vmfunc { .. } => R::Vmfunc,
            Self::Encls { .. } => R::Encls,
            Self::Rdseed { .. } => R::Rdseed,
            Self::PageModificationLogFull { .. } => R::PageModificationLogFull,
            Self::Xsaves { .. } => R::Xsaves,
            Self::Xrstors { .. } => R::Xrstors,
            Self::Pconfig { .. } => R::Pconfig,
            Self::SppEvent { .. } => R::SppEvent,
            Self::Umwait { .. } => R::Umwait,
            Self::Tpause { .. } => R::Tpause,
            Self::Loadiwkey { .. } => R::Loadiwkey,
            Self::Enclv { .. } => R::Enclv,
            Self::EnqcmdPasidTranslationFailure { .. } => R::EnqcmdPasidTranslationFailure,
            Self::EnqcmdsPasidTranslationFailure { .. } => R::EnqcmdsPasidTranslationFailure,
            Self::BusLock => R::BusLock,
            Self::InstructionTimeout { .. } => R::InstructionTimeout,
            Self::Seamcall { .. } => R::Seamcall,
            Self::Tdcall { .. } => R::Tdcall,
            Self::Rdmsrlist { .. } => R::Rdmsrlist,
            Self::Wrmsrlist { .. } => R::Wrmsrlist,
            Self::Urdmsr { .. } => R::Urdmsr,
            Self::Uwrmsr { .. } => R::Uwrmsr,
            Self::RdmsrImmediate { .. } => R::RdmsrImmediate,
            Self::WrmsrnsImmediate { .. } => R::WrmsrnsImmediate,
            Self::Unknown { reason } => R::Unknown(*reason),
        }
    }

    /// The VM-exit instruction length, for exits caused by an instruction (to advance RIP past
    /// it), or `None`.
    pub const fn instruction_length(&self) -> Option<InstructionLength> {
        match self {
            Self::ExceptionOrNmi { length, .. } | Self::TaskSwitch { length, .. } => *length,
            Self::Cpuid { length }
            | Self::Getsec { length }
            | Self::Hlt { length }
            | Self::Invd { length }
            | Self::Invlpg { length, .. }
            | Self::Rdpmc { length }
            | Self::Rdtsc { length }
            | Self::Rsm { length }
            | Self::Vmcall { length }
            | Self::Vmclear { length, .. }
            | Self::Vmlaunch { length }
            | Self::Vmptrld { length, .. }
            | Self::Vmptrst { length, .. }
            | Self::Vmread { length, .. }
            | Self::Vmresume { length }
            | Self::Vmwrite { length, .. }
            | Self::Vmxoff { length }
            | Self::Vmxon { length, .. }
            | Self::ControlRegisterAccess { length, .. }
            | Self::MovDr { length, .. }
            | Self::IoInstruction { length, .. }
            | Self::Rdmsr { length }
            | Self::Wrmsr { length }
            | Self::Mwait { length, .. }
            | Self::Monitor { length }
            | Self::Pause { length }
            | Self::GdtrIdtrAccess { length, .. }
            | Self::LdtrTrAccess { length, .. }
            | Self::Invept { length, .. }
            | Self::Rdtscp { length }
            | Self::Invvpid { length, .. }
            | Self::Wbinvd { length }
            | Self::Xsetbv { length }
            | Self::Rdrand { length, .. }
            | Self::Invpcid { length, .. }
            | Self::Vmfunc { length }
            | Self::Encls { length }
            | Self::Rdseed { length, .. }
            | Self::Xsaves { length, .. }
            | Self::Xrstors { length, .. }
            | Self::Pconfig { length }
            | Self::Umwait { length, .. }
            | Self::Tpause { length, .. }
            | Self::Loadiwkey { length, .. }
            | Self::Enclv { length }
            | Self::EnqcmdPasidTranslationFailure { length }
            | Self::EnqcmdsPasidTranslationFailure { length }
            | Self::Seamcall { length }
            | Self::Tdcall { length }
            | Self::Rdmsrlist { length }
            | Self::Wrmsrlist { length }
            | Self::Urdmsr { length }
            | Self::Uwrmsr { length }
            | Self::RdmsrImmediate { length, .. }
            | Self::WrmsrnsImmediate { length, .. } => Some(*length),
            _ => None,
        }
    }

    /// The event whose delivery the exit interrupted, for the reasons that can occur during event
    /// delivery (exception, task switch, APIC access, EPT violation and misconfiguration, PML full,
    /// SPP event), or `None`.
    pub const fn idt_vectoring(&self) -> Option<IdtVectoring> {
        match self {
            Self::ExceptionOrNmi { idt_vectoring, .. }
            | Self::TaskSwitch { idt_vectoring, .. }
            | Self::ApicAccess { idt_vectoring, .. }
            | Self::EptViolation { idt_vectoring, .. }
            | Self::EptMisconfiguration { idt_vectoring, .. }
            | Self::PageModificationLogFull { idt_vectoring, .. }
            | Self::SppEvent { idt_vectoring, .. } => *idt_vectoring,
            _ => None,
        }
    }
}

/// Reads the IDT-vectoring information and, if it is valid, its error code and (for software
/// events) the instruction length.
///
/// `known_length` is the instruction length if the caller has already read it, so that no field
/// is read twice.
pub(crate) fn idt_vectoring<E>(
    read: &mut impl FnMut(ExitField) -> Result<u64, E>,
    known_length: Option<InstructionLength>,
) -> Result<Option<IdtVectoring>, E> {
    let Some(info) = IdtVectoringInfo::from_raw(read(ExitField::IdtVectoringInformation)? as u32)
    else {
        return Ok(None);
    };
    let error_code = if info.error_code_valid {
        Some(read(ExitField::IdtVectoringErrorCode)? as u32)
    } else {
        None
    };
    let instruction_length = match known_length {
        _ if !is_software_event(info.kind) => None,
        Some(length) => Some(length),
        None => Some(InstructionLength(read(ExitField::InstructionLength)? as u32)),
    };
    Ok(Some(IdtVectoring {
        info,
        error_code,
        instruction_length,
    }))
}

fn write_opt<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    value: Option<T>,
) -> fmt::Result {
    match value {
        Some(value) => write!(f, ", {label} {value}"),
        None => Ok(()),
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.basic_reason();
        match reason.sdm_name() {
            Some(name) => f.write_str(name)?,
            None => write!(f, "undefined exit reason {}", reason.number())?,
        }
        match self {
            Self::ExceptionOrNmi {
                info,
                error_code,
                qualification,
                ..
            } => {
                match info {
                    Some(info) => write!(f, ": {info}")?,
                    None => f.write_str(": interruption information not valid")?,
                }
                write_opt(f, "error code", error_code.map(HexU32))?;
                if *qualification != ExceptionQualification::None {
                    write!(f, ", {qualification}")?;
                }
            }
            Self::ExternalInterrupt { info } => match info {
                Some(info) => write!(f, ": {info}")?,
                None => f.write_str(": not acknowledged")?,
            },
            Self::StartupIpi { vector } | Self::VirtualizedEoi { vector } => {
                write!(f, ": vector {vector:#04x}")?
            }
            Self::IoSmi {
                qualification,
                guest_linear_address,
            } => {
                write!(f, ": after {qualification}")?;
                write_opt(
                    f,
                    "operand at linear address",
                    guest_linear_address.map(HexU64),
                )?;
            }
            Self::TaskSwitch { qualification, .. } => write!(f, ": {qualification}")?,
            Self::Invlpg { linear_address, .. } => {
                write!(f, ": linear address {linear_address:#x}")?
            }
            Self::Vmclear {
                displacement, info, ..
            }
            | Self::Vmptrld {
                displacement, info, ..
            }
            | Self::Vmptrst {
                displacement, info, ..
            }
            | Self::Vmxon {
                displacement, info, ..
            }
            | Self::Xsaves {
                displacement, info, ..
            }
            | Self::Xrstors {
                displacement, info, ..
            } => write!(f, ": operand {info}, displacement {displacement:#x}")?,
            Self::Vmread {
                displacement, info, ..
            }
            | Self::Vmwrite {
                displacement, info, ..
            } => write!(f, ": {info}, displacement {displacement:#x}")?,
            Self::ControlRegisterAccess {
                qualification,
                guest_linear_address,
                ..
            } => {
                write!(f, ": {qualification}")?;
                write_opt(
                    f,
                    "operand at linear address",
                    guest_linear_address.map(HexU64),
                )?;
            }
            Self::MovDr { qualification, .. } => write!(f, ": {qualification}")?,
            Self::IoInstruction {
                qualification,
                string,
                ..
            } => {
                write!(f, ": {qualification}")?;
                if let Some(string) = string {
                    write!(f, ", {string}")?;
                }
            }
            Self::EntryFailureInvalidGuestState { qualification } => {
                write!(f, ": {qualification}")?
            }
            Self::EntryFailureMsrLoading { entry } => write!(f, ": MSR-load entry {entry}")?,
            Self::Mwait { qualification, .. } => write!(f, ": {qualification}")?,
            Self::ApicAccess { qualification, .. } => write!(f, ": {qualification}")?,
            Self::GdtrIdtrAccess {
                displacement, info, ..
            } => write!(f, ": {info}, displacement {displacement:#x}")?,
            Self::LdtrTrAccess {
                displacement, info, ..
            } => write!(f, ": {info}, displacement {displacement:#x}")?,
            Self::EptViolation {
                qualification,
                guest_physical,
                guest_linear,
                ..
            } => {
                write!(f, ": guest-physical {guest_physical:#x}")?;
                write_opt(f, "guest-linear", guest_linear.map(HexU64))?;
                write!(f, ", {qualification}")?;
            }
            Self::EptMisconfiguration { guest_physical, .. } => {
                write!(f, ": guest-physical {guest_physical:#x}")?
            }
            Self::Invept {
                displacement, info, ..
            }
            | Self::Invvpid {
                displacement, info, ..
            }
            | Self::Invpcid {
                displacement, info, ..
            } => write!(f, ": {info}, displacement {displacement:#x}")?,
            Self::ApicWrite { offset } => write!(f, ": offset {offset:#05x}")?,
            Self::Rdrand { info, .. }
            | Self::Rdseed { info, .. }
            | Self::Umwait { info, .. }
            | Self::Tpause { info, .. } => write!(f, ": {info}")?,
            Self::PageModificationLogFull { qualification, .. } => write!(f, ": {qualification}")?,
            Self::SppEvent {
                qualification,
                guest_physical,
                ..
            } => write!(f, ": {qualification}, guest-physical {guest_physical:#x}")?,
            Self::Loadiwkey { info, .. } => write!(f, ": {info}")?,
            Self::InstructionTimeout { qualification } => write!(f, ": {qualification}")?,
            Self::RdmsrImmediate { msr, info, .. } | Self::WrmsrnsImmediate { msr, info, .. } => {
                write!(f, ": MSR {msr:#x}, {info}")?
            }
            _ => {}
        }
        write_opt(f, "instruction length", self.instruction_length())?;
        if let Some(event) = self.idt_vectoring() {
            write!(f, "; during delivery of {event}")?;
        }
        Ok(())
    }
}

struct HexU32(u32);
impl fmt::Display for HexU32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

struct HexU64(u64);
impl fmt::Display for HexU64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
