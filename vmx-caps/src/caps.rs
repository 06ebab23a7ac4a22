//! The decoded capability MSRs.

use bit_field::BitField;

use crate::controls::{
    ControlGroup, Controls, EntryControls, ExitControls, PinBasedControls, PrimaryControls,
    SecondaryControls, SecondaryExitControls, TertiaryControls, VmFuncControls,
};
use crate::msr::{self, MsrSet};
use crate::source::{MsrError, MsrSource};

/// Reads capability MSRs for [`VmxCapabilities::read`] (every read error fails) and
/// [`VmxCapabilities::read_partial`] (an MSR the source lacks is recorded instead).
struct Reader<'a, S: MsrSource> {
    source: &'a mut S,
    tolerate_missing: bool,
    missing: MsrSet,
}

impl<S: MsrSource> Reader<'_, S> {
    fn error(msr: u32, source: MsrError) -> CapsError {
        CapsError {
            msr,
            name: msr::name(msr).unwrap_or("MSR"),
            source,
        }
    }

    /// `IA32_VMX_BASIC`, which nothing can be decoded without.
    fn basic(&mut self) -> Result<u64, CapsError> {
        self.source
            .read_msr(msr::IA32_VMX_BASIC)
            .map_err(|e| Self::error(msr::IA32_VMX_BASIC, e))
    }

    /// An MSR that exists: its value, or `None` when a partial read finds it missing.
    fn get(&mut self, msr: u32) -> Result<Option<u64>, CapsError> {
        match self.source.read_msr(msr) {
            Ok(value) => Ok(Some(value)),
            Err(MsrError::Missing { .. }) if self.tolerate_missing => {
                self.missing.insert(msr);
                Ok(None)
            }
            Err(e) => Err(Self::error(msr, e)),
        }
    }

    /// An MSR whose existence `exists` decides: not read where it does not exist; read where
    /// it does, or where that is unknown (`None`, only in a partial read).
    fn get_if(&mut self, exists: Option<bool>, msr: u32) -> Result<Option<u64>, CapsError> {
        match exists {
            Some(false) => Ok(None),
            Some(true) | None => self.get(msr),
        }
    }
}

/// A capability MSR could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reading {name} ({msr:#x}): {source}")]
pub struct CapsError {
    /// The MSR address.
    pub msr: u32,
    /// Its SDM name.
    pub name: &'static str,
    /// Why the read failed.
    pub source: MsrError,
}

bitflags::bitflags! {
    /// `IA32_FEATURE_CONTROL` (MSR 0x3A, SDM Vol. 3C, 24.7 "Enabling and Entering VMX
    /// Operation"). Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FeatureControl: u64 {
        /// Lock bit: the MSR is locked until reset; VMXON faults while this is 0.
        const LOCK = 1 << 0;
        /// Enable VMX inside SMX operation.
        const VMX_INSIDE_SMX = 1 << 1;
        /// Enable VMX outside SMX operation.
        const VMX_OUTSIDE_SMX = 1 << 2;
        /// SENTER local function enables (bits 14:8).
        const SENTER_LOCAL_FUNCTION_ENABLES = 0x7f << 8;
        /// SENTER global enable.
        const SENTER_GLOBAL_ENABLE = 1 << 15;
        /// SGX launch control enable.
        const SGX_LAUNCH_CONTROL_ENABLE = 1 << 17;
        /// SGX global enable.
        const SGX_GLOBAL_ENABLE = 1 << 18;
        /// LMCE on (local machine-check exceptions).
        const LMCE_ON = 1 << 20;
        const _ = !0;
    }
}

impl FeatureControl {
    /// Whether VMXON outside SMX will succeed as far as this MSR is concerned: locked, with
    /// VMX outside SMX enabled.
    pub const fn vmxon_allowed_outside_smx(self) -> bool {
        self.contains(Self::LOCK) && self.contains(Self::VMX_OUTSIDE_SMX)
    }
}

crate::serde_as_bits!(FeatureControl);

/// Memory type for the VMCS and other structures, `IA32_VMX_BASIC[53:50]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum VmcsMemoryType {
    /// Uncacheable (0).
    Uncacheable,
    /// Write-back (6).
    WriteBack,
    /// A value the SDM does not define (reserved).
    Reserved(u8),
}

/// `IA32_VMX_BASIC` (SDM Vol. 3D, A.1 "Basic VMX Information").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// VMCS revision identifier (bits 30:0), to be written to the first 4 bytes of the VMXON
    /// region and of each VMCS.
    pub fn revision_id(self) -> u32 {
        self.0.get_bits(0..31) as u32
    }
    /// Number of bytes to allocate for the VMXON region and each VMCS (bits 44:32, at most 4096).
    pub fn vmcs_region_size(self) -> u32 {
        self.0.get_bits(32..45) as u32
    }
    /// Bit 48: the physical addresses of the VMXON region, VMCS and structures they reference
    /// are limited to 32 bits.
    pub fn physical_address_width_32(self) -> bool {
        self.0.get_bit(48)
    }
    /// Bit 49: dual-monitor treatment of SMIs and SMM is supported.
    pub fn dual_monitor(self) -> bool {
        self.0.get_bit(49)
    }
    /// Bits 53:50: memory type the processor uses for the VMCS and referenced structures.
    pub fn memory_type(self) -> VmcsMemoryType {
        match self.0.get_bits(50..54) as u8 {
            0 => VmcsMemoryType::Uncacheable,
            6 => VmcsMemoryType::WriteBack,
            other => VmcsMemoryType::Reserved(other),
        }
    }
    /// Bit 54: VM exits due to INS/OUTS report the VM-exit instruction-information field.
    pub fn ins_outs_info(self) -> bool {
        self.0.get_bit(54)
    }
    /// Bit 55: the TRUE capability MSRs (0x48D-0x490) exist and the default1 controls may be 0.
    pub fn true_controls(self) -> bool {
        self.0.get_bit(55)
    }
    /// Bit 56: VM entry may deliver a hardware exception with or without an error code,
    /// regardless of the vector.
    pub fn no_error_code_check(self) -> bool {
        self.0.get_bit(56)
    }
    /// Bit 58: VMX nested-exception support: VM exits report, and VM entry may inject, events
    /// marked as nested exceptions (bit 13 of the VM-exit interruption-information, IDT-vectoring
    /// information and VM-entry interruption-information fields), as FRED event delivery
    /// uses them. Bit 57 and bits 63:59 are reserved (read as 0).
    pub fn nested_exception(self) -> bool {
        self.0.get_bit(58)
    }
}

/// `IA32_VMX_MISC` (SDM Vol. 3D, A.6 "Miscellaneous Data").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmxMisc(pub u64);

impl VmxMisc {
    /// Bits 4:0: the VMX-preemption timer counts down by 1 each time bit X of the TSC changes,
    /// X being this value.
    pub fn preemption_timer_tsc_shift(self) -> u32 {
        self.0.get_bits(0..5) as u32
    }
    /// Bit 5: VM exits store IA32_EFER.LMA into the "IA-32e mode guest" VM-entry control.
    pub fn stores_lma_on_exit(self) -> bool {
        self.0.get_bit(5)
    }
    /// Bit 6: the HLT activity state is supported.
    pub fn activity_hlt(self) -> bool {
        self.0.get_bit(6)
    }
    /// Bit 7: the shutdown activity state is supported.
    pub fn activity_shutdown(self) -> bool {
        self.0.get_bit(7)
    }
    /// Bit 8: the wait-for-SIPI activity state is supported.
    pub fn activity_wait_for_sipi(self) -> bool {
        self.0.get_bit(8)
    }
    /// Bit 14: Intel PT may be used in VMX operation.
    pub fn intel_pt_in_vmx(self) -> bool {
        self.0.get_bit(14)
    }
    /// Bit 15: RDMSR can read IA32_SMBASE in SMM.
    pub fn rdmsr_smbase_in_smm(self) -> bool {
        self.0.get_bit(15)
    }
    /// Bits 24:16: number of CR3-target values supported.
    pub fn cr3_target_count(self) -> u32 {
        self.0.get_bits(16..25) as u32
    }
    /// Bits 27:25 (N): the recommended maximum number of MSRs in each VM-exit/entry MSR list,
    /// 512 × (N + 1).
    pub fn max_msr_list_entries(self) -> u32 {
        512 * (self.0.get_bits(25..28) as u32 + 1)
    }
    /// Bit 28: bit 2 of IA32_SMM_MONITOR_CTL can be set (VMXOFF unblocks SMIs).
    pub fn smm_monitor_ctl_bit2(self) -> bool {
        self.0.get_bit(28)
    }
    /// Bit 29: VMWRITE may write any VMCS field, including the VM-exit information fields.
    pub fn vmwrite_any_field(self) -> bool {
        self.0.get_bit(29)
    }
    /// Bit 30: VM entry may inject a software interrupt, software exception or privileged
    /// software exception with an instruction length of 0.
    pub fn zero_length_injection(self) -> bool {
        self.0.get_bit(30)
    }
    /// Bits 63:32: MSEG revision identifier used by the processor.
    pub fn mseg_revision_id(self) -> u32 {
        self.0.get_bits(32..64) as u32
    }
}

/// A control register's fixed bits in VMX operation: `IA32_VMX_CRn_FIXED0/FIXED1` (SDM Vol. 3D,
/// A.7 and A.8). A bit that is 1 in FIXED0 must be 1; a bit that is 0 in FIXED1 must be 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FixedBits {
    /// `IA32_VMX_CRn_FIXED0`.
    pub fixed0: u64,
    /// `IA32_VMX_CRn_FIXED1`.
    pub fixed1: u64,
}

impl FixedBits {
    /// Bits that must be 1.
    pub const fn must_be_one(&self) -> u64 {
        self.fixed0
    }
    /// Bits that must be 0.
    pub const fn must_be_zero(&self) -> u64 {
        !self.fixed1
    }
}

/// `IA32_VMX_VMCS_ENUM` (SDM Vol. 3D, A.9 "VMCS Enumeration").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmcsEnum(pub u64);

impl VmcsEnum {
    /// Bits 9:1: the highest index value used in any VMCS field encoding.
    pub fn highest_index(self) -> u16 {
        self.0.get_bits(1..10) as u16
    }
}

/// `IA32_VMX_EPT_VPID_CAP` (SDM Vol. 3D, A.10 "VPID and EPT Capabilities"); all zero where the
/// MSR does not exist (neither EPT nor VPID may be enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EptVpidCap(pub u64);

macro_rules! cap_bits {
    ($($(#[$doc:meta])* $name:ident = $bit:literal, $label:literal;)*) => {
        impl EptVpidCap {
            $(
                $(#[$doc])*
                pub fn $name(self) -> bool {
                    self.0.get_bit($bit)
                }
            )*
            /// Every defined bit: (bit position, SDM description).
            pub const NAMES: &'static [(u8, &'static str)] = &[$(($bit, $label)),*];
        }
    };
}

cap_bits! {
    /// Bit 0: EPT paging-structure entries may allow execute-only translations.
    execute_only = 0, "execute-only translations";
    /// Bit 6: a page-walk length of 4 is supported.
    page_walk_4 = 6, "page-walk length 4";
    /// Bit 7: a page-walk length of 5 is supported.
    page_walk_5 = 7, "page-walk length 5";
    /// Bit 8: the EPT paging structures may be uncacheable (UC).
    memory_type_uc = 8, "uncacheable (UC) paging structures";
    /// Bit 14: the EPT paging structures may be write-back (WB).
    memory_type_wb = 14, "write-back (WB) paging structures";
    /// Bit 16: an EPT PDE may map a 2-Mbyte page.
    pde_2mb = 16, "2-Mbyte pages (PDE)";
    /// Bit 17: an EPT PDPTE may map a 1-Gbyte page.
    pdpte_1gb = 17, "1-Gbyte pages (PDPTE)";
    /// Bit 20: INVEPT is supported.
    invept = 20, "INVEPT";
    /// Bit 21: accessed and dirty flags for EPT are supported.
    accessed_dirty = 21, "accessed and dirty flags";
    /// Bit 22: EPT violations report advanced VM-exit information.
    advanced_exit_info = 22, "advanced exit information for EPT violations";
    /// Bit 23: supervisor shadow-stack control is supported.
    supervisor_shadow_stack = 23, "supervisor shadow-stack control";
    /// Bit 25: the single-context INVEPT type is supported.
    invept_single_context = 25, "single-context INVEPT";
    /// Bit 26: the all-context INVEPT type is supported.
    invept_all_context = 26, "all-context INVEPT";
    /// Bit 32: INVVPID is supported.
    invvpid = 32, "INVVPID";
    /// Bit 40: the individual-address INVVPID type is supported.
    invvpid_individual_address = 40, "individual-address INVVPID";
    /// Bit 41: the single-context INVVPID type is supported.
    invvpid_single_context = 41, "single-context INVVPID";
    /// Bit 42: the all-context INVVPID type is supported.
    invvpid_all_context = 42, "all-context INVVPID";
    /// Bit 43: the single-context-retaining-globals INVVPID type is supported.
    invvpid_single_context_retaining_globals = 43, "single-context-retaining-globals INVVPID";
}

impl EptVpidCap {
    /// Bits 53:48: maximum HLAT prefix size.
    pub fn max_hlat_prefix_size(self) -> u32 {
        self.0.get_bits(48..54) as u32
    }
}

/// The allowed settings of one control field (SDM Vol. 3D, A.3-A.5 and A.11): a bit that is 1
/// in `allowed0` must be 1; a bit that is 0 in `allowed1` must be 0.
///
/// For the fields whose capability MSR reports allowed-1 settings only (tertiary controls,
/// secondary exit controls, VM functions), `allowed0` is empty. Where the MSR does not exist,
/// both are empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AllowedControls<F> {
    /// Bits that must be 1 (the allowed-0 settings are 0 only where these are 0).
    pub allowed0: F,
    /// Bits that may be 1.
    pub allowed1: F,
}

impl<F: Controls> AllowedControls<F> {
    /// The pair from a 32-bit-field capability MSR: allowed-0 in bits 31:0, allowed-1 in 63:32.
    pub fn from_split_msr(raw: u64) -> Self {
        Self {
            allowed0: F::from_raw(raw & 0xffff_ffff),
            allowed1: F::from_raw(raw >> 32),
        }
    }

    /// The pair from an allowed-1-only capability MSR (64-bit fields).
    pub fn from_allowed1(raw: u64) -> Self {
        Self {
            allowed0: F::from_raw(0),
            allowed1: F::from_raw(raw),
        }
    }

    /// Neither bit may be 1: the field's MSR does not exist.
    pub fn none() -> Self {
        Self::from_allowed1(0)
    }

    /// Whether every bit of `flags` may be 1.
    pub fn allows(&self, flags: F) -> bool {
        flags.to_raw() & !self.allowed1.to_raw() == 0
    }

    /// Whether every bit of `flags` must be 1.
    pub fn requires(&self, flags: F) -> bool {
        flags.to_raw() & !self.allowed0.to_raw() == 0
    }

    /// `(allowed0, allowed1)` as raw bits.
    pub fn raw(&self) -> (u64, u64) {
        (self.allowed0.to_raw(), self.allowed1.to_raw())
    }

    /// Whether `value` respects both the allowed-0 and the allowed-1 settings.
    pub fn permits(&self, value: F) -> bool {
        let (a0, a1) = self.raw();
        let v = value.to_raw();
        v & a0 == a0 && v & !a1 == 0
    }
}

/// Every VMX capability MSR, decoded (SDM Vol. 3D, Appendix A).
///
/// The control pairs are the effective ones: from the TRUE MSRs where `IA32_VMX_BASIC[55]` is 1,
/// from the others otherwise.
///
/// ```
/// use vmx_caps::{MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};
///
/// // The capability MSRs of Bochs' tigerlake model, as `vmxtool caps` dumps them.
/// let dump = include_str!("../testdata/tigerlake.msr");
/// let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(dump)?)?;
/// assert!(caps.basic.true_controls());
/// assert!(caps.proc.allows(PrimaryControls::HLT_EXITING));
/// assert!(caps.proc2.allows(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST));
/// assert!(caps.ept_vpid.page_walk_4() && caps.ept_vpid.invept());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmxCapabilities {
    /// `IA32_FEATURE_CONTROL`.
    pub feature_control: FeatureControl,
    /// `IA32_VMX_BASIC`.
    pub basic: VmxBasic,
    /// Pin-based VM-execution controls (`IA32_VMX_[TRUE_]PINBASED_CTLS`).
    pub pin: AllowedControls<PinBasedControls>,
    /// Primary processor-based VM-execution controls (`IA32_VMX_[TRUE_]PROCBASED_CTLS`).
    pub proc: AllowedControls<PrimaryControls>,
    /// Secondary processor-based VM-execution controls (`IA32_VMX_PROCBASED_CTLS2`).
    pub proc2: AllowedControls<SecondaryControls>,
    /// Tertiary processor-based VM-execution controls (`IA32_VMX_PROCBASED_CTLS3`).
    pub proc3: AllowedControls<TertiaryControls>,
    /// Primary VM-exit controls (`IA32_VMX_[TRUE_]EXIT_CTLS`).
    pub exit: AllowedControls<ExitControls>,
    /// Secondary VM-exit controls (`IA32_VMX_EXIT_CTLS2`).
    pub exit2: AllowedControls<SecondaryExitControls>,
    /// VM-entry controls (`IA32_VMX_[TRUE_]ENTRY_CTLS`).
    pub entry: AllowedControls<EntryControls>,
    /// `IA32_VMX_MISC`.
    pub misc: VmxMisc,
    /// `IA32_VMX_CR0_FIXED0/1`.
    pub cr0_fixed: FixedBits,
    /// `IA32_VMX_CR4_FIXED0/1`.
    pub cr4_fixed: FixedBits,
    /// `IA32_VMX_VMCS_ENUM`.
    pub vmcs_enum: VmcsEnum,
    /// `IA32_VMX_EPT_VPID_CAP` (zero where it does not exist).
    pub ept_vpid: EptVpidCap,
    /// `IA32_VMX_VMFUNC`: the VM functions that may be enabled (empty where it does not exist).
    pub vmfunc: VmFuncControls,
}

impl VmxCapabilities {
    /// Reads and decodes every capability MSR that exists on the source's processor, following
    /// the SDM's rules for which MSRs exist (see [`msr::Presence::exists`]); nothing else is
    /// read, so reading live MSRs never faults. Any MSR the source lacks is an error: see
    /// [`VmxCapabilities::read_partial`] for dumps that may be incomplete.
    pub fn read(source: &mut impl MsrSource) -> Result<Self, CapsError> {
        let mut reader = Reader {
            source,
            tolerate_missing: false,
            missing: MsrSet::EMPTY,
        };
        Self::decode(&mut reader)
    }

    /// Decodes whatever part of the capability MSRs the source holds, e.g. a dump taken on a
    /// real machine by a tool that skips `IA32_FEATURE_CONTROL` or `IA32_VMX_VMFUNC`.
    ///
    /// Only `IA32_VMX_BASIC` is indispensable (without it nothing can be decoded, and the
    /// error names it). Every other MSR that the SDM's rules say exists but that the source
    /// reports [`MsrError::Missing`] goes into [`PartialCapabilities::missing`] and decodes as
    /// follows (other read errors still fail):
    ///
    /// - a TRUE MSR (`IA32_VMX_BASIC[55]` = 1) without its plain counterpart, or the reverse:
    ///   the counterpart stands in. The allowed-1 settings of the two agree (SDM Vol. 3D, A.2);
    ///   the plain MSR reports the default1 controls as allowed-0 = 1, so substituting it is
    ///   conservative (those controls appear forced);
    /// - any other missing MSR: all zero, i.e. no control may be 1, no EPT/VPID capability,
    ///   no fixed bits known. [`PartialCapabilities::is_known`] says what this applies to.
    ///
    /// Where the MSR that decides whether another exists is missing (e.g. both
    /// `IA32_VMX_PROCBASED_CTLS` and its TRUE form), the dependent MSR is taken if the source
    /// has it and counted missing if not.
    pub fn read_partial(source: &mut impl MsrSource) -> Result<PartialCapabilities, CapsError> {
        let mut reader = Reader {
            source,
            tolerate_missing: true,
            missing: MsrSet::EMPTY,
        };
        let caps = Self::decode(&mut reader)?;
        Ok(PartialCapabilities {
            caps,
            missing: reader.missing,
        })
    }

    fn decode<S: MsrSource>(r: &mut Reader<'_, S>) -> Result<Self, CapsError> {
        // An MSR that does not exist on this processor reports no capability: every bit 0 (no
        // control may be 1, no EPT/VPID feature, ...). The same reading applies to an MSR a
        // partial source lacks (recorded in `missing`). Read errors propagate through `?`.
        let absent_is_zero = |value: Option<u64>| value.unwrap_or_default();
        // `Some(true/false)`: the SDM's rule decides; `None`: the deciding MSR is missing.
        let bit = |value: Option<u64>, bit: usize| value.map(|v| v.get_bit(bit));

        let feature_control =
            FeatureControl::from_bits_retain(absent_is_zero(r.get(msr::IA32_FEATURE_CONTROL)?));
        let basic = r.basic()?;
        let has_true = basic.get_bit(55);
        let procbased = r.get(msr::IA32_VMX_PROCBASED_CTLS)?;
        let exit = r.get(msr::IA32_VMX_EXIT_CTLS)?;
        let true_proc = r.get_if(Some(has_true), msr::IA32_VMX_TRUE_PROCBASED_CTLS)?;
        let true_exit = r.get_if(Some(has_true), msr::IA32_VMX_TRUE_EXIT_CTLS)?;
        // The allowed-1 halves (which decide what exists) agree between a TRUE MSR and its plain
        // counterpart, so either answers.
        let proc_any = procbased.or(true_proc);
        let exit_any = exit.or(true_exit);
        let procbased2 = r.get_if(bit(proc_any, 63), msr::IA32_VMX_PROCBASED_CTLS2)?;
        let proc2_any = match bit(proc_any, 63) {
            Some(false) => Some(0),
            _ => procbased2,
        };
        let ept_vpid_exists = proc2_any.map(|p| p.get_bit(33) || p.get_bit(37));

        let pin = r.get(msr::IA32_VMX_PINBASED_CTLS)?;
        let entry = r.get(msr::IA32_VMX_ENTRY_CTLS)?;
        let misc = absent_is_zero(r.get(msr::IA32_VMX_MISC)?);
        let cr0_fixed0 = absent_is_zero(r.get(msr::IA32_VMX_CR0_FIXED0)?);
        let cr0_fixed1 = absent_is_zero(r.get(msr::IA32_VMX_CR0_FIXED1)?);
        let cr4_fixed0 = absent_is_zero(r.get(msr::IA32_VMX_CR4_FIXED0)?);
        let cr4_fixed1 = absent_is_zero(r.get(msr::IA32_VMX_CR4_FIXED1)?);
        let vmcs_enum = absent_is_zero(r.get(msr::IA32_VMX_VMCS_ENUM)?);
        let ept_vpid = absent_is_zero(r.get_if(ept_vpid_exists, msr::IA32_VMX_EPT_VPID_CAP)?);
        let true_pin = r.get_if(Some(has_true), msr::IA32_VMX_TRUE_PINBASED_CTLS)?;
        let true_entry = r.get_if(Some(has_true), msr::IA32_VMX_TRUE_ENTRY_CTLS)?;
        let vmfunc = absent_is_zero(r.get_if(bit(proc2_any, 45), msr::IA32_VMX_VMFUNC)?);
        let proc3 = absent_is_zero(r.get_if(bit(proc_any, 49), msr::IA32_VMX_PROCBASED_CTLS3)?);
        let exit2 = absent_is_zero(r.get_if(bit(exit_any, 63), msr::IA32_VMX_EXIT_CTLS2)?);
        // The effective pair: the TRUE MSR where it exists, the plain one standing in for a
        // missing TRUE MSR (and the reverse), zero when both are missing.
        let effective = |plain: Option<u64>, true_msr: Option<u64>| {
            absent_is_zero(if has_true { true_msr.or(plain) } else { plain })
        };

        Ok(Self {
            feature_control,
            basic: VmxBasic(basic),
            pin: AllowedControls::from_split_msr(effective(pin, true_pin)),
            proc: AllowedControls::from_split_msr(effective(procbased, true_proc)),
            proc2: AllowedControls::from_split_msr(absent_is_zero(procbased2)),
            proc3: AllowedControls::from_allowed1(proc3),
            exit: AllowedControls::from_split_msr(effective(exit, true_exit)),
            exit2: AllowedControls::from_allowed1(exit2),
            entry: AllowedControls::from_split_msr(effective(entry, true_entry)),
            misc: VmxMisc(misc),
            cr0_fixed: FixedBits {
                fixed0: cr0_fixed0,
                fixed1: cr0_fixed1,
            },
            cr4_fixed: FixedBits {
                fixed0: cr4_fixed0,
                fixed1: cr4_fixed1,
            },
            vmcs_enum: VmcsEnum(vmcs_enum),
            ept_vpid: EptVpidCap(ept_vpid),
            vmfunc: VmFuncControls::from_bits_retain(vmfunc),
        })
    }

    /// The allowed settings of `group` as raw `(allowed0, allowed1)`.
    pub fn allowed(&self, group: ControlGroup) -> (u64, u64) {
        match group {
            ControlGroup::Pin => self.pin.raw(),
            ControlGroup::Primary => self.proc.raw(),
            ControlGroup::Secondary => self.proc2.raw(),
            ControlGroup::Tertiary => self.proc3.raw(),
            ControlGroup::Exit => self.exit.raw(),
            ControlGroup::SecondaryExit => self.exit2.raw(),
            ControlGroup::Entry => self.entry.raw(),
            ControlGroup::VmFunc => (0, self.vmfunc.to_raw()),
        }
    }

    /// How bit `bit` of `group` may be set (see [`ControlState`]).
    pub fn control_state(&self, group: ControlGroup, bit: u32) -> ControlState {
        let (a0, a1) = self.allowed(group);
        let mask = 1u64.checked_shl(bit).unwrap_or(0);
        if a1 & mask == 0 {
            ControlState::No
        } else if a0 & mask != 0 {
            ControlState::Forced
        } else if group.default1() & mask != 0 {
            ControlState::Default1
        } else {
            ControlState::Yes
        }
    }
}

/// How one control bit may be set, as the report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ControlState {
    /// Must be 0 (allowed-1 setting is 0).
    No,
    /// May be 0 or 1.
    Yes,
    /// Must be 1 (allowed-0 setting is 1).
    Forced,
    /// May be 0 or 1, and is in the default1 class: 1 on processors without TRUE MSRs and for
    /// software that does not know the control.
    Default1,
}

impl ControlState {
    /// `"yes"`, `"no"`, `"forced"` or `"default1"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Yes => "yes",
            Self::Forced => "forced",
            Self::Default1 => "default1",
        }
    }
}

/// Capabilities decoded from a source that may lack some MSRs
/// ([`VmxCapabilities::read_partial`]), with the MSRs it lacked.
///
/// Its `Display` is the report of [`VmxCapabilities`] with every MSR of [`missing`](Self::missing)
/// shown as "not in the dump" and what depends on it as "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PartialCapabilities {
    /// The decoded capabilities; a missing MSR decodes as the rule of
    /// [`VmxCapabilities::read_partial`] says.
    pub caps: VmxCapabilities,
    /// The MSRs that exist by the SDM's rules (or might, where the MSR deciding it is missing)
    /// but that the source did not hold.
    pub missing: MsrSet,
}

/// How much of a control group's allowed settings a [`PartialCapabilities`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GroupKnowledge {
    /// Both halves were read from the MSR that reports them (or the field has no MSR on this
    /// processor, so nothing may be 1).
    Exact,
    /// The TRUE MSR is missing and its plain counterpart stands in: the allowed-1 settings are
    /// exact, but a default1 control that appears forced may in fact be allowed 0.
    Default1Unknown,
    /// The reporting MSR is missing: nothing is known, and the decoded pair is empty.
    Unknown,
}

impl PartialCapabilities {
    /// Whether nothing was missing (the decode equals [`VmxCapabilities::read`]'s).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Whether `msr` is known: read from the source, or known not to exist.
    pub fn is_known(&self, msr: u32) -> bool {
        !self.missing.contains(msr)
    }

    /// How much of `group`'s allowed settings is known.
    pub fn group_knowledge(&self, group: ControlGroup) -> GroupKnowledge {
        let (plain, true_msr) = match group {
            ControlGroup::Pin => (
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
            ),
            ControlGroup::Primary => (
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            ),
            ControlGroup::Exit => (msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS),
            ControlGroup::Entry => (msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS),
            ControlGroup::Secondary
            | ControlGroup::Tertiary
            | ControlGroup::SecondaryExit
            | ControlGroup::VmFunc => {
                let msr = self.caps.group_msr(group);
                return if self.is_known(msr) {
                    GroupKnowledge::Exact
                } else {
                    GroupKnowledge::Unknown
                };
            }
        };
        let has_true = self.caps.basic.true_controls();
        match (self.is_known(plain), has_true && self.is_known(true_msr)) {
            (_, true) => GroupKnowledge::Exact,
            (true, false) if has_true => GroupKnowledge::Default1Unknown,
            (true, false) => GroupKnowledge::Exact,
            (false, false) => GroupKnowledge::Unknown,
        }
    }
}
