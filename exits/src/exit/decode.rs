//! Decoding: the exit reason, then only the fields that reason needs, into a [`VmExit`].

use vmcs::VmcsRead;

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

use super::{ExceptionQualification, ExitField, ExitReadError, RawExitInfo, StringIo, VmExit};

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
    #[inline(always)]
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
    #[inline(always)]
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
