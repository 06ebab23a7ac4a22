//! How a decoded [`VmExit`] prints: one line naming the exit and its decoded information.

use core::fmt;

use super::{ExceptionQualification, VmExit};

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
