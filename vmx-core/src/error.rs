//! VMfail and the VM-instruction error numbers.
//!
//! SDM Vol. 3C, §31.2 "Conventions": a VMX instruction ends in VMsucceed (CF = ZF = 0), VMfailInvalid
//! (CF = 1: there is no current VMCS to record an error) or VMfailValid (ZF = 1: the error number is
//! stored in the current VMCS's VM-instruction error field, encoding 0x4400). §31.4 "VM Instruction
//! Error Numbers" lists the numbers decoded by [`VmInstructionError`].

use core::fmt;

/// Declares [`VmInstructionError`] once: variant, SDM number and SDM description.
macro_rules! vm_instruction_errors {
    ($( $(#[$doc:meta])* $variant:ident = $number:literal => $message:literal, )*) => {
        /// A VM-instruction error number (SDM Vol. 3C, §31.4 "VM Instruction Error Numbers"), as read
        /// from the VM-instruction error field after a VMfailValid.
        ///
        /// Decoding is total: every number the SDM assigns has its own variant and every other number
        /// is kept in [`VmInstructionError::Unknown`]. `Display` prints the number and the SDM's
        /// description.
        ///
        /// ```
        /// use vmx_core::VmInstructionError;
        ///
        /// let e = VmInstructionError::from_raw(12);
        /// assert_eq!(e, VmInstructionError::UnsupportedVmcsComponent);
        /// assert_eq!(e.number(), 12);
        /// assert_eq!(
        ///     e.to_string(),
        ///     "VM-instruction error 12: VMREAD/VMWRITE from/to unsupported VMCS component"
        /// );
        /// assert_eq!(VmInstructionError::from_raw(14), VmInstructionError::Unknown(14));
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(from = "u32", into = "u32"))]
        pub enum VmInstructionError {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\nSDM error number ", stringify!($number), ": \"", $message, "\".")]
                $variant,
            )*
            /// A number the SDM does not assign (0, 14, 21, 27 or above 28 at the time of writing).
            /// [`VmInstructionError::from_raw`] never puts an assigned number here.
            Unknown(u32),
        }

        impl VmInstructionError {
            /// Every error the SDM assigns, in increasing number order.
            pub const ALL: &'static [VmInstructionError] = &[$(VmInstructionError::$variant,)*];

            /// Decodes a raw VM-instruction error number; total (unassigned numbers become
            /// [`VmInstructionError::Unknown`]).
            #[must_use]
            pub const fn from_raw(number: u32) -> Self {
                match number {
                    $($number => VmInstructionError::$variant,)*
                    other => VmInstructionError::Unknown(other),
                }
            }

            /// The SDM error number.
            #[must_use]
            pub const fn number(self) -> u32 {
                match self {
                    $(VmInstructionError::$variant => $number,)*
                    VmInstructionError::Unknown(number) => number,
                }
            }

            /// The SDM's description of the error, or `None` for an unassigned number.
            #[must_use]
            pub const fn description(self) -> Option<&'static str> {
                match self {
                    $(VmInstructionError::$variant => Some($message),)*
                    VmInstructionError::Unknown(_) => None,
                }
            }
        }
    };
}

vm_instruction_errors! {
    /// VMCALL in VMX root operation (without the dual-monitor treatment of SMIs and SMM).
    VmcallInVmxRoot = 1 => "VMCALL executed in VMX root operation",
    /// VMCLEAR whose operand is not 4-KiB aligned or exceeds the physical-address width.
    VmclearInvalidAddress = 2 => "VMCLEAR with invalid physical address",
    /// VMCLEAR whose operand is the VMXON pointer.
    VmclearVmxonPointer = 3 => "VMCLEAR with VMXON pointer",
    /// VMLAUNCH of a VMCS whose launch state is not clear (use VMRESUME).
    VmlaunchNonClearVmcs = 4 => "VMLAUNCH with non-clear VMCS",
    /// VMRESUME of a VMCS whose launch state is not launched (use VMLAUNCH).
    VmresumeNonLaunchedVmcs = 5 => "VMRESUME with non-launched VMCS",
    /// VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME).
    VmresumeAfterVmxoff = 6 => "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)",
    /// A VM-entry check on the VM-execution, VM-exit or VM-entry control fields failed (SDM §27.2.1).
    EntryInvalidControlFields = 7 => "VM entry with invalid control field(s)",
    /// A VM-entry check on the host-state area failed (SDM §27.2.2, §27.2.3).
    EntryInvalidHostStateFields = 8 => "VM entry with invalid host-state field(s)",
    /// VMPTRLD whose operand is not 4-KiB aligned or exceeds the physical-address width.
    VmptrldInvalidAddress = 9 => "VMPTRLD with invalid physical address",
    /// VMPTRLD whose operand is the VMXON pointer.
    VmptrldVmxonPointer = 10 => "VMPTRLD with VMXON pointer",
    /// VMPTRLD of a region whose revision identifier differs from IA32_VMX_BASIC\[30:0\] (or whose
    /// shadow-VMCS indicator is set without VMCS-shadowing support).
    VmptrldIncorrectRevision = 11 => "VMPTRLD with incorrect VMCS revision identifier",
    /// VMREAD or VMWRITE of a field encoding the processor does not support.
    UnsupportedVmcsComponent = 12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
    /// VMWRITE to a read-only field without IA32_VMX_MISC\[29\] ("VMWRITE to any field").
    VmwriteReadOnlyComponent = 13 => "VMWRITE to read-only VMCS component",
    /// VMXON in VMX root operation.
    VmxonInVmxRoot = 15 => "VMXON executed in VMX root operation",
    /// VM entry whose executive-VMCS pointer is invalid (dual-monitor treatment).
    EntryInvalidExecutiveVmcsPointer = 16 => "VM entry with invalid executive-VMCS pointer",
    /// VM entry whose executive VMCS is not launched (dual-monitor treatment).
    EntryNonLaunchedExecutiveVmcs = 17 => "VM entry with non-launched executive VMCS",
    /// VM entry whose executive-VMCS pointer is not the VMXON pointer, when attempting to
    /// deactivate the dual-monitor treatment of SMIs and SMM.
    EntryExecutiveVmcsNotVmxonPointer = 18 => "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the dual-monitor treatment of SMIs and SMM)",
    /// VMCALL with a non-clear VMCS, when attempting to activate the dual-monitor treatment.
    VmcallNonClearVmcs = 19 => "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    /// VMCALL with invalid VM-exit control fields (dual-monitor treatment).
    VmcallInvalidExitControls = 20 => "VMCALL with invalid VM-exit control fields",
    /// VMCALL with an incorrect MSEG revision identifier, when attempting to activate the
    /// dual-monitor treatment.
    VmcallIncorrectMsegRevision = 22 => "VMCALL with incorrect MSEG revision identifier (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    /// VMXOFF while the dual-monitor treatment of SMIs and SMM is active.
    VmxoffUnderDualMonitor = 23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
    /// VMCALL with invalid SMM-monitor features, when attempting to activate the dual-monitor
    /// treatment.
    VmcallInvalidSmmMonitorFeatures = 24 => "VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor treatment of SMIs and SMM)",
    /// VM entry with invalid VM-execution control fields in the executive VMCS, when attempting to
    /// return from SMM.
    EntryInvalidExecutiveControls = 25 => "VM entry with invalid VM-execution control fields in executive VMCS (when attempting to return from SMM)",
    /// VM entry while events are blocked by MOV SS (guest interruptibility state).
    EntryEventsBlockedByMovSs = 26 => "VM entry with events blocked by MOV SS",
    /// INVEPT or INVVPID with an unsupported type, a reserved descriptor bit set, an invalid EPTP,
    /// VPID 0 or a non-canonical linear address.
    InvalidInveptInvvpidOperand = 28 => "Invalid operand to INVEPT/INVVPID",
}

impl From<u32> for VmInstructionError {
    fn from(number: u32) -> Self {
        Self::from_raw(number)
    }
}

impl From<VmInstructionError> for u32 {
    fn from(error: VmInstructionError) -> Self {
        error.number()
    }
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(message) => write!(f, "VM-instruction error {}: {message}", self.number()),
            None => write!(
                f,
                "VM-instruction error {}: number not assigned by the SDM",
                self.number()
            ),
        }
    }
}

impl core::error::Error for VmInstructionError {}

/// The failure of a VMX instruction (SDM Vol. 3C, §31.2 "Conventions").
///
/// ```
/// use vmx_core::{VmFail, VmInstructionError};
///
/// let fail = VmFail::Valid(VmInstructionError::VmlaunchNonClearVmcs);
/// assert_eq!(
///     fail.to_string(),
///     "VMfailValid: VM-instruction error 4: VMLAUNCH with non-clear VMCS"
/// );
/// assert_eq!(fail.error(), Some(VmInstructionError::VmlaunchNonClearVmcs));
/// assert_eq!(VmFail::Invalid.error(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum VmFail {
    /// VMfailInvalid (RFLAGS.CF = 1): the instruction failed and there is no current VMCS (or, in
    /// VMX non-root operation, no valid VMCS link pointer) in which to record an error number.
    #[error(
        "VMfailInvalid: the instruction failed and there is no current VMCS to hold an error number"
    )]
    Invalid,
    /// VMfailValid (RFLAGS.ZF = 1): the instruction failed and the VM-instruction error field of
    /// the current VMCS says why.
    ///
    /// If that field itself cannot be read back (the SDM rules this out: VMfailValid implies a
    /// current VMCS), the error is [`VmInstructionError::Unknown`]`(0)`; the SDM assigns no 0.
    #[error("VMfailValid: {0}")]
    Valid(VmInstructionError),
}

impl VmFail {
    /// The decoded VM-instruction error of a VMfailValid, `None` for VMfailInvalid.
    #[must_use]
    pub const fn error(self) -> Option<VmInstructionError> {
        match self {
            VmFail::Invalid => None,
            VmFail::Valid(error) => Some(error),
        }
    }
}
