//! The exit-reason field (SDM Vol. 3C, "Basic VM-Exit Information", and Appendix C, "VMX Basic Exit
//! Reasons").

use core::fmt;

macro_rules! basic_exit_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $number:literal => $name:literal, )*) => {
        /// The basic exit reason: bits 15:0 of the exit-reason field (SDM Appendix C, "VMX Basic Exit
        /// Reasons").
        ///
        /// Every number the SDM defines has its own variant; the numbers it leaves undefined (35, 38, 42,
        /// 71, 82, 83 and everything above 85) decode to [`BasicExitReason::Unknown`], which carries the
        /// number. Decoding is total: [`BasicExitReason::from_number`] accepts every `u16`.
        ///
        /// ```
        /// use exits::BasicExitReason;
        ///
        /// assert_eq!(BasicExitReason::from_number(48), BasicExitReason::EptViolation);
        /// assert_eq!(BasicExitReason::EptViolation.number(), 48);
        /// assert_eq!(BasicExitReason::EptViolation.sdm_name(), Some("EPT violation"));
        /// assert_eq!(BasicExitReason::from_number(35), BasicExitReason::Unknown(35));
        /// assert_eq!(BasicExitReason::Unknown(35).sdm_name(), None);
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        pub enum BasicExitReason {
            $( $(#[doc = $doc])* $variant, )*
            /// A basic exit reason the SDM does not define, with its number. [`BasicExitReason::from_number`]
            /// only produces it for numbers that no other variant has.
            Unknown(u16),
        }

        impl BasicExitReason {
            /// Every basic exit reason the SDM defines, in numeric order.
            pub const ALL: &'static [BasicExitReason] = &[$(BasicExitReason::$variant,)*];

            /// Decodes a basic exit-reason number; undefined numbers give [`BasicExitReason::Unknown`].
            #[inline(always)]
            pub const fn from_number(number: u16) -> Self {
                match number {
                    $($number => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }

            /// The basic exit-reason number, as stored in bits 15:0 of the exit-reason field.
            #[inline(always)]
            pub const fn number(self) -> u16 {
                match self {
                    $(Self::$variant => $number,)*
                    Self::Unknown(number) => number,
                }
            }

            /// The SDM's name for this exit reason (Appendix C), or `None` for an undefined number.
            pub const fn sdm_name(self) -> Option<&'static str> {
                match self {
                    $(Self::$variant => Some($name),)*
                    Self::Unknown(_) => None,
                }
            }
        }
    };
}

basic_exit_reasons! {
    /// 0: Exception or non-maskable interrupt (NMI).
    ExceptionOrNmi = 0 => "Exception or non-maskable interrupt (NMI)",
    /// 1: External interrupt.
    ExternalInterrupt = 1 => "External interrupt",
    /// 2: Triple fault.
    TripleFault = 2 => "Triple fault",
    /// 3: INIT signal.
    InitSignal = 3 => "INIT signal",
    /// 4: Start-up IPI (SIPI).
    StartupIpi = 4 => "Start-up IPI (SIPI)",
    /// 5: I/O system-management interrupt (SMI).
    IoSmi = 5 => "I/O system-management interrupt (SMI)",
    /// 6: Other SMI.
    OtherSmi = 6 => "Other SMI",
    /// 7: Interrupt window.
    InterruptWindow = 7 => "Interrupt window",
    /// 8: NMI window.
    NmiWindow = 8 => "NMI window",
    /// 9: Task switch.
    TaskSwitch = 9 => "Task switch",
    /// 10: CPUID.
    Cpuid = 10 => "CPUID",
    /// 11: GETSEC.
    Getsec = 11 => "GETSEC",
    /// 12: HLT.
    Hlt = 12 => "HLT",
    /// 13: INVD.
    Invd = 13 => "INVD",
    /// 14: INVLPG.
    Invlpg = 14 => "INVLPG",
    /// 15: RDPMC.
    Rdpmc = 15 => "RDPMC",
    /// 16: RDTSC.
    Rdtsc = 16 => "RDTSC",
    /// 17: RSM.
    Rsm = 17 => "RSM",
    /// 18: VMCALL.
    Vmcall = 18 => "VMCALL",
    /// 19: VMCLEAR.
    Vmclear = 19 => "VMCLEAR",
    /// 20: VMLAUNCH.
    Vmlaunch = 20 => "VMLAUNCH",
    /// 21: VMPTRLD.
    Vmptrld = 21 => "VMPTRLD",
    /// 22: VMPTRST.
    Vmptrst = 22 => "VMPTRST",
    /// 23: VMREAD.
    Vmread = 23 => "VMREAD",
    /// 24: VMRESUME.
    Vmresume = 24 => "VMRESUME",
    /// 25: VMWRITE.
    Vmwrite = 25 => "VMWRITE",
    /// 26: VMXOFF.
    Vmxoff = 26 => "VMXOFF",
    /// 27: VMXON.
    Vmxon = 27 => "VMXON",
    /// 28: Control-register accesses.
    ControlRegisterAccess = 28 => "Control-register accesses",
    /// 29: MOV DR.
    MovDr = 29 => "MOV DR",
    /// 30: I/O instruction.
    IoInstruction = 30 => "I/O instruction",
    /// 31: RDMSR.
    Rdmsr = 31 => "RDMSR",
    /// 32: WRMSR.
    Wrmsr = 32 => "WRMSR",
    /// 33: VM-entry failure due to invalid guest state.
    EntryFailureInvalidGuestState = 33 => "VM-entry failure due to invalid guest state",
    /// 34: VM-entry failure due to MSR loading.
    EntryFailureMsrLoading = 34 => "VM-entry failure due to MSR loading",
    /// 36: MWAIT.
    Mwait = 36 => "MWAIT",
    /// 37: Monitor trap flag.
    MonitorTrapFlag = 37 => "Monitor trap flag",
    /// 39: MONITOR.
    Monitor = 39 => "MONITOR",
    /// 40: PAUSE.
    Pause = 40 => "PAUSE",
    /// 41: VM-entry failure due to machine-check event.
    EntryFailureMachineCheck = 41 => "VM-entry failure due to machine-check event",
    /// 43: TPR below threshold.
    TprBelowThreshold = 43 => "TPR below threshold",
    /// 44: APIC access.
    ApicAccess = 44 => "APIC access",
    /// 45: Virtualized EOI.
    VirtualizedEoi = 45 => "Virtualized EOI",
    /// 46: Access to GDTR or IDTR.
    GdtrIdtrAccess = 46 => "Access to GDTR or IDTR",
    /// 47: Access to LDTR or TR.
    LdtrTrAccess = 47 => "Access to LDTR or TR",
    /// 48: EPT violation.
    EptViolation = 48 => "EPT violation",
    /// 49: EPT misconfiguration.
    EptMisconfiguration = 49 => "EPT misconfiguration",
    /// 50: INVEPT.
    Invept = 50 => "INVEPT",
    /// 51: RDTSCP.
    Rdtscp = 51 => "RDTSCP",
    /// 52: VMX-preemption timer expired.
    PreemptionTimerExpired = 52 => "VMX-preemption timer expired",
    /// 53: INVVPID.
    Invvpid = 53 => "INVVPID",
    /// 54: WBINVD or WBNOINVD.
    Wbinvd = 54 => "WBINVD or WBNOINVD",
    /// 55: XSETBV.
    Xsetbv = 55 => "XSETBV",
    /// 56: APIC write.
    ApicWrite = 56 => "APIC write",
    /// 57: RDRAND.
    Rdrand = 57 => "RDRAND",
    /// 58: INVPCID.
    Invpcid = 58 => "INVPCID",
    /// 59: VMFUNC.
    Vmfunc = 59 => "VMFUNC",
    /// 60: ENCLS.
    Encls = 60 => "ENCLS",
    /// 61: RDSEED.
    Rdseed = 61 => "RDSEED",
    /// 62: Page-modification log full.
    PageModificationLogFull = 62 => "Page-modification log full",
    /// 63: XSAVES.
    Xsaves = 63 => "XSAVES",
    /// 64: XRSTORS.
    Xrstors = 64 => "XRSTORS",
    /// 65: PCONFIG.
    Pconfig = 65 => "PCONFIG",
    /// 66: SPP-related event.
    SppEvent = 66 => "SPP-related event",
    /// 67: UMWAIT.
    Umwait = 67 => "UMWAIT",
    /// 68: TPAUSE.
    Tpause = 68 => "TPAUSE",
    /// 69: LOADIWKEY.
    Loadiwkey = 69 => "LOADIWKEY",
    /// 70: ENCLV.
    Enclv = 70 => "ENCLV",
    /// 72: ENQCMD PASID translation failure.
    EnqcmdPasidTranslationFailure = 72 => "ENQCMD PASID translation failure",
    /// 73: ENQCMDS PASID translation failure.
    EnqcmdsPasidTranslationFailure = 73 => "ENQCMDS PASID translation failure",
    /// 74: Bus lock.
    BusLock = 74 => "Bus lock",
    /// 75: Instruction timeout (the "notify VM exit").
    InstructionTimeout = 75 => "Instruction timeout",
    /// 76: SEAMCALL.
    Seamcall = 76 => "SEAMCALL",
    /// 77: TDCALL.
    Tdcall = 77 => "TDCALL",
    /// 78: RDMSRLIST.
    Rdmsrlist = 78 => "RDMSRLIST",
    /// 79: WRMSRLIST.
    Wrmsrlist = 79 => "WRMSRLIST",
    /// 80: URDMSR.
    Urdmsr = 80 => "URDMSR",
    /// 81: UWRMSR.
    Uwrmsr = 81 => "UWRMSR",
    /// 84: RDMSR with an immediate operand.
    RdmsrImmediate = 84 => "RDMSR with immediate operand",
    /// 85: WRMSRNS with an immediate operand.
    WrmsrnsImmediate = 85 => "WRMSRNS with immediate operand",
}

impl fmt::Display for BasicExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sdm_name() {
            Some(name) => write!(f, "{name} ({})", self.number()),
            None => write!(f, "undefined exit reason {}", self.number()),
        }
    }
}

/// The 32-bit exit-reason field (VMCS encoding 4402H; SDM "Basic VM-Exit Information",
/// table "Format of Exit Reason").
///
/// Every bit is kept: the flags the SDM defines get their own field, and the bits it reserves
/// (16–25 and 30) are retained in [`ExitReason::reserved_bits`], so that
/// `ExitReason::from_raw(x).to_raw() == x` for every `x`.
///
/// ```
/// use exits::{BasicExitReason, ExitReason};
///
/// // A VM-entry failure due to invalid guest state: basic reason 33 with bit 31 set.
/// let reason = ExitReason::from_raw(0x8000_0021);
/// assert_eq!(reason.basic, BasicExitReason::EntryFailureInvalidGuestState);
/// assert!(reason.entry_failure && reason.reserved_bits == 0);
/// assert_eq!(reason.to_raw(), 0x8000_0021);
/// assert_eq!(reason.to_string(), "VM-entry failure due to invalid guest state (33), VM-entry failure");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ExitReason {
    /// Bits 15:0: the basic exit reason.
    pub basic: BasicExitReason,
    /// Bit 26: a bus lock was asserted while the instruction that caused the exit executed
    /// ("bus-lock detection" VM-execution control).
    pub bus_lock_detected: bool,
    /// Bit 27: the VM exit was incident to enclave mode.
    pub enclave_mode: bool,
    /// Bit 28: pending MTF VM exit (SMM VM exits under the dual-monitor treatment).
    pub pending_mtf: bool,
    /// Bit 29: VM exit from VMX root operation (SMM VM exits under the dual-monitor treatment).
    pub from_vmx_root: bool,
    /// Bit 31: VM-entry failure (0 = true VM exit, 1 = VM-entry failure).
    pub entry_failure: bool,
    /// Bits the SDM reserves (16–25 and 30), exactly as they were read; 0 on every current processor.
    pub reserved_bits: u32,
}

impl ExitReason {
    /// Bits 16–25 and 30: reserved.
    pub const RESERVED_MASK: u32 = 0x03ff_0000 | 1 << 30;

    /// Decodes the raw exit-reason field. Total: every `u32` decodes.
    #[inline(always)]
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            basic: BasicExitReason::from_number(raw as u16),
            bus_lock_detected: raw & 1 << 26 != 0,
            enclave_mode: raw & 1 << 27 != 0,
            pending_mtf: raw & 1 << 28 != 0,
            from_vmx_root: raw & 1 << 29 != 0,
            entry_failure: raw & 1 << 31 != 0,
            reserved_bits: raw & Self::RESERVED_MASK,
        }
    }

    /// Encodes the field back to its raw 32-bit form.
    pub const fn to_raw(self) -> u32 {
        self.basic.number() as u32
            | (self.bus_lock_detected as u32) << 26
            | (self.enclave_mode as u32) << 27
            | (self.pending_mtf as u32) << 28
            | (self.from_vmx_root as u32) << 29
            | (self.entry_failure as u32) << 31
            | (self.reserved_bits & Self::RESERVED_MASK)
    }
}

impl From<BasicExitReason> for ExitReason {
    /// A plain VM exit with this basic reason and no flag set.
    fn from(basic: BasicExitReason) -> Self {
        Self::from_raw(basic.number() as u32)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.basic)?;
        let flags = [
            (self.entry_failure, "VM-entry failure"),
            (self.enclave_mode, "enclave mode"),
            (self.pending_mtf, "pending MTF VM exit"),
            (self.from_vmx_root, "from VMX root operation"),
            (self.bus_lock_detected, "bus lock detected"),
        ];
        for (set, name) in flags {
            if set {
                write!(f, ", {name}")?;
            }
        }
        if self.reserved_bits != 0 {
            write!(f, ", reserved bits {:#x}", self.reserved_bits)?;
        }
        Ok(())
    }
}
