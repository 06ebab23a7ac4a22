//! The machinery shared by the rule groups: the capability view, the VMCS reader and the
//! violation reporter.

use vmx_caps::{
    EntryControls, ExitControls, FixedBits, PinBasedControls, PrimaryControls, SecondaryControls,
    VmxCapabilities,
};
use vmx_core::VmFail;

use super::input::{CpuFacts, LaunchContext, PhysMemory};
use super::report::{
    Expected, FieldList, Outcome, Summary, Violation, ViolationSink, is_canonical,
};
use super::rule::Rule;
use crate::VmcsRead;

/// The encoding of a field of [`crate::fields`].
macro_rules! enc {
    ($name:ident) => {
        $crate::fields::$name.encoding()
    };
}
pub(super) use enc;

/// A VMCS field could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("VMREAD of field {encoding:#06x} failed: {error:?}")]
pub struct CheckError {
    /// Encoding of the field.
    pub encoding: u32,
    /// How the read failed.
    pub error: VmFail,
}

/// The capability facts the rules use, extracted once from [`VmxCapabilities`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CapsView {
    pub pin: (u64, u64),
    pub proc: (u64, u64),
    pub proc2: (u64, u64),
    pub proc3_allowed1: u64,
    pub exit: (u64, u64),
    pub exit2_allowed1: u64,
    pub entry: (u64, u64),
    pub vmfunc_allowed1: u64,
    pub cr0_fixed: FixedBits,
    pub cr4_fixed: FixedBits,
    pub revision_id: u32,
    pub address_width_32: bool,
    pub no_error_code_check: bool,
    pub nested_exception: bool,
    pub cr3_target_count: u32,
    pub activity_hlt: bool,
    pub activity_shutdown: bool,
    pub activity_wait_for_sipi: bool,
    pub zero_length_injection: bool,
    pub max_msr_list_entries: u32,
    pub ept_uc: bool,
    pub ept_wb: bool,
    pub ept_walk4: bool,
    pub ept_walk5: bool,
    pub ept_ad: bool,
    pub ept_sss: bool,
    pub mtf: bool,
}

impl CapsView {
    pub(super) fn new(caps: &VmxCapabilities) -> Self {
        Self {
            pin: caps.pin.raw(),
            proc: caps.proc.raw(),
            proc2: caps.proc2.raw(),
            proc3_allowed1: caps.proc3.raw().1,
            exit: caps.exit.raw(),
            exit2_allowed1: caps.exit2.raw().1,
            entry: caps.entry.raw(),
            vmfunc_allowed1: caps.vmfunc.bits(),
            cr0_fixed: caps.cr0_fixed,
            cr4_fixed: caps.cr4_fixed,
            revision_id: caps.basic.revision_id(),
            address_width_32: caps.basic.physical_address_width_32(),
            no_error_code_check: caps.basic.no_error_code_check(),
            nested_exception: caps.basic.nested_exception(),
            cr3_target_count: caps.misc.cr3_target_count(),
            activity_hlt: caps.misc.activity_hlt(),
            activity_shutdown: caps.misc.activity_shutdown(),
            activity_wait_for_sipi: caps.misc.activity_wait_for_sipi(),
            zero_length_injection: caps.misc.zero_length_injection(),
            max_msr_list_entries: caps.misc.max_msr_list_entries(),
            ept_uc: caps.ept_vpid.memory_type_uc(),
            ept_wb: caps.ept_vpid.memory_type_wb(),
            ept_walk4: caps.ept_vpid.page_walk_4(),
            ept_walk5: caps.ept_vpid.page_walk_5(),
            ept_ad: caps.ept_vpid.accessed_dirty(),
            ept_sss: caps.ept_vpid.supervisor_shadow_stack(),
            mtf: caps.proc.allows(PrimaryControls::MONITOR_TRAP_FLAG),
        }
    }
}

/// Control bits as raw masks, from the `vmx_caps` flag types.
pub(super) mod bits {
    use super::*;

    macro_rules! masks {
        ($($name:ident = $ty:ident::$flag:ident;)*) => {
            $(pub const $name: u64 = $ty::$flag.bits() as u64;)*
        };
    }

    masks! {
        PIN_EXTERNAL_INTERRUPT_EXITING = PinBasedControls::EXTERNAL_INTERRUPT_EXITING;
        PIN_NMI_EXITING = PinBasedControls::NMI_EXITING;
        PIN_VIRTUAL_NMIS = PinBasedControls::VIRTUAL_NMIS;
        PIN_PREEMPTION_TIMER = PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER;
        PIN_POSTED_INTERRUPTS = PinBasedControls::PROCESS_POSTED_INTERRUPTS;
        PROC_TERTIARY = PrimaryControls::ACTIVATE_TERTIARY_CONTROLS;
        PROC_TPR_SHADOW = PrimaryControls::USE_TPR_SHADOW;
        PROC_NMI_WINDOW = PrimaryControls::NMI_WINDOW_EXITING;
        PROC_IO_BITMAPS = PrimaryControls::USE_IO_BITMAPS;
        PROC_MSR_BITMAPS = PrimaryControls::USE_MSR_BITMAPS;
        PROC_SECONDARY = PrimaryControls::ACTIVATE_SECONDARY_CONTROLS;
        P2_VIRTUALIZE_APIC = SecondaryControls::VIRTUALIZE_APIC_ACCESSES;
        P2_EPT = SecondaryControls::ENABLE_EPT;
        P2_X2APIC = SecondaryControls::VIRTUALIZE_X2APIC_MODE;
        P2_VPID = SecondaryControls::ENABLE_VPID;
        P2_UNRESTRICTED = SecondaryControls::UNRESTRICTED_GUEST;
        P2_APIC_REGISTER = SecondaryControls::APIC_REGISTER_VIRTUALIZATION;
        P2_VID = SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY;
        P2_VMFUNC = SecondaryControls::ENABLE_VM_FUNCTIONS;
        P2_SHADOWING = SecondaryControls::VMCS_SHADOWING;
        P2_PML = SecondaryControls::ENABLE_PML;
        P2_VE = SecondaryControls::EPT_VIOLATION_VE;
        P2_MBEC = SecondaryControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT;
        P2_SPP = SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT;
        P2_PT_GPA = SecondaryControls::INTEL_PT_USES_GUEST_PHYSICAL_ADDRESSES;
        EXIT_HOST_64 = ExitControls::HOST_ADDRESS_SPACE_SIZE;
        EXIT_PERF = ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL;
        EXIT_ACK = ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT;
        EXIT_PAT = ExitControls::LOAD_IA32_PAT;
        EXIT_EFER = ExitControls::LOAD_IA32_EFER;
        EXIT_SAVE_TIMER = ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE;
        EXIT_CLEAR_RTIT = ExitControls::CLEAR_IA32_RTIT_CTL;
        EXIT_CET = ExitControls::LOAD_CET_STATE;
        EXIT_PKRS = ExitControls::LOAD_PKRS;
        EXIT_SECONDARY = ExitControls::ACTIVATE_SECONDARY_CONTROLS;
        ENTRY_DEBUG = EntryControls::LOAD_DEBUG_CONTROLS;
        ENTRY_IA32E = EntryControls::IA32E_MODE_GUEST;
        ENTRY_SMM = EntryControls::ENTRY_TO_SMM;
        ENTRY_DEACTIVATE_DUAL = EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT;
        ENTRY_PERF = EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL;
        ENTRY_PAT = EntryControls::LOAD_IA32_PAT;
        ENTRY_EFER = EntryControls::LOAD_IA32_EFER;
        ENTRY_BNDCFGS = EntryControls::LOAD_IA32_BNDCFGS;
        ENTRY_RTIT = EntryControls::LOAD_IA32_RTIT_CTL;
        ENTRY_UINV = EntryControls::LOAD_UINV;
        ENTRY_CET = EntryControls::LOAD_CET_STATE;
        ENTRY_LBR = EntryControls::LOAD_GUEST_IA32_LBR_CTL;
        ENTRY_PKRS = EntryControls::LOAD_PKRS;
        VMFUNC_EPTP_SWITCHING = VmFuncControls::EPTP_SWITCHING;
    }
    use vmx_caps::VmFuncControls;
}

/// One run of the checker: the inputs, the reporter and the running summary.
pub(super) struct Ctx<'a, V: ?Sized, M: ?Sized, S: ?Sized> {
    pub vmcs: &'a V,
    pub mem: &'a mut M,
    sink: &'a mut S,
    pub caps: &'a CapsView,
    pub cpu: &'a CpuFacts,
    pub launch: &'a LaunchContext,
    pub summary: Summary,
    best: u64,
}

impl<'a, V: VmcsRead + ?Sized, M: PhysMemory + ?Sized, S: ViolationSink + ?Sized> Ctx<'a, V, M, S> {
    pub(super) fn new(
        vmcs: &'a V,
        mem: &'a mut M,
        sink: &'a mut S,
        caps: &'a CapsView,
        cpu: &'a CpuFacts,
        launch: &'a LaunchContext,
    ) -> Self {
        Self {
            vmcs,
            mem,
            sink,
            caps,
            cpu,
            launch,
            summary: Summary {
                outcome: Outcome::Success,
                violations: 0,
                violated: super::rule::RuleSet::new(),
                unchecked: super::rule::RuleSet::new(),
            },
            best: u64::MAX,
        }
    }

    /// Reads a field that exists on every processor with VMX.
    pub(super) fn read(&self, encoding: u32) -> Result<u64, CheckError> {
        self.vmcs
            .read_raw(encoding)
            .map_err(|error| CheckError { encoding, error })
    }

    /// Reads a field that only some processors have; a failure leaves `rules` unchecked.
    pub(super) fn read_opt(&mut self, encoding: u32, rules: &[Rule]) -> Option<u64> {
        match self.vmcs.read_raw(encoding) {
            Ok(value) => Some(value),
            Err(_) => {
                self.unchecked(rules);
                None
            }
        }
    }

    /// An optional MSR field (`encoding`, read only if present) whose reserved bits are the
    /// model-specific `reserved` mask of [`CpuFacts`]: a set reserved bit violates `rule`; an
    /// unknown mask leaves `rule` unchecked (never passed).
    pub(super) fn model_reserved_msr(&mut self, rule: Rule, encoding: u32, reserved: Option<u64>) {
        match reserved {
            None => self.unchecked(&[rule]),
            Some(mask) => {
                if let Some(value) = self.read_opt(encoding, &[rule]) {
                    self.clear(rule, &[encoding], value, mask);
                }
            }
        }
    }

    /// An optional IA32_PAT field: every byte must hold a valid PAT memory type.
    pub(super) fn pat_msr(&mut self, rule: Rule, encoding: u32) {
        if let Some(pat) = self.read_opt(encoding, &[rule]) {
            self.expect(rule, &[encoding], pat, Expected::PatMemoryTypes);
        }
    }

    /// Marks `rules` as not evaluated.
    pub(super) fn unchecked(&mut self, rules: &[Rule]) {
        for rule in rules {
            self.summary.unchecked.insert(*rule);
        }
    }

    /// Reports a violation of `rule` with the outcome its class gives.
    pub(super) fn fail(&mut self, rule: Rule, fields: &[u32], actual: u64, expected: Expected) {
        if let Some(outcome) = Outcome::from_class(rule.class(), 0) {
            self.fail_with(rule, fields, actual, expected, outcome);
        }
    }

    /// Reports a violation of `rule` with an explicit outcome (MSR-load index, qualification 3).
    pub(super) fn fail_with(
        &mut self,
        rule: Rule,
        fields: &[u32],
        actual: u64,
        expected: Expected,
        outcome: Outcome,
    ) {
        let violation = Violation {
            rule,
            fields: FieldList::new(fields),
            actual,
            expected,
            outcome,
        };
        self.summary.violations += 1;
        self.summary.violated.insert(rule);
        let rank = outcome.rank();
        if rank < self.best {
            self.best = rank;
            self.summary.outcome = outcome;
        }
        self.sink.violation(&violation);
    }

    /// `expected` must accept `actual`.
    pub(super) fn expect(&mut self, rule: Rule, fields: &[u32], actual: u64, expected: Expected) {
        if !expected.accepts(actual) {
            self.fail(rule, fields, actual, expected);
        }
    }

    /// The bits `mask` of `actual` must be 0.
    pub(super) fn clear(&mut self, rule: Rule, fields: &[u32], actual: u64, mask: u64) {
        if actual & mask != 0 {
            self.fail(rule, fields, actual, Expected::BitsClear(mask));
        }
    }

    /// The bits `mask` of `actual` must be 1.
    pub(super) fn set(&mut self, rule: Rule, fields: &[u32], actual: u64, mask: u64) {
        if actual & mask != mask {
            self.fail(rule, fields, actual, Expected::BitsSet(mask));
        }
    }

    /// `actual` must be canonical for the processor's linear-address width.
    pub(super) fn canonical(&mut self, rule: Rule, fields: &[u32], actual: u64) {
        let width = self.cpu.linear_address_width;
        if !is_canonical(actual, width) {
            self.fail(rule, fields, actual, Expected::Canonical { width });
        }
    }

    /// Bits 63:N of `actual` must be identical, N being the linear-address width.
    pub(super) fn high_identical(&mut self, rule: Rule, fields: &[u32], actual: u64) {
        let bit = self.cpu.linear_address_width;
        self.expect(rule, fields, actual, Expected::HighBitsIdentical { bit });
    }

    /// The bits at and above the physical-address width of VMCS-referenced structures:
    /// MAXPHYADDR, or 32 if IA32_VMX_BASIC\[48\] limits them to 32 bits.
    pub(super) fn beyond_phys(&self) -> u64 {
        let width = if self.caps.address_width_32 {
            32.min(self.cpu.maxphyaddr)
        } else {
            self.cpu.maxphyaddr
        };
        beyond(width)
    }

    /// A physical address aligned to `align` bytes and within the physical-address width.
    pub(super) fn phys(&mut self, rule: Rule, fields: &[u32], address: u64, align: u64) {
        let mask = (align - 1) | self.beyond_phys();
        self.clear(rule, fields, address, mask);
    }
}

/// The bits at and above bit `width`.
pub(super) const fn beyond(width: u8) -> u64 {
    if width >= 64 { 0 } else { !0u64 << width }
}
