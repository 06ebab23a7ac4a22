//! A negotiated control set written into, and read back from, a software VMCS shaped like each
//! Bochs model whose capability MSRs are in `vmx-caps/testdata`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use proptest::prelude::*;
use vmcs::{ControlsError, SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::{
    ControlGroup, ControlRequest, ControlSet, DependencyPolicy, ExitControls, MsrSnapshot,
    PrimaryControls, SecondaryExitControls, TertiaryControls, VmxCapabilities,
};
use vmx_core::{VmFail, VmInstructionError};

/// Every model of `vmx-caps/testdata`, and whether it offers VM functions (PLATFORM.md: from
/// Haswell on). None offers tertiary controls or secondary VM-exit controls.
const MODELS: [(&str, bool); 11] = [
    ("core2_penryn_t9600", false),
    ("corei5_lynnfield_750", false),
    ("corei5_arrandale_m520", false),
    ("corei7_sandy_bridge_2600k", false),
    ("corei7_ivy_bridge_3770k", false),
    ("corei7_haswell_4770", true),
    ("broadwell_ult", true),
    ("corei7_skylake_x", true),
    ("corei3_cnl", true),
    ("corei7_icelake_u", true),
    ("tigerlake", true),
];

fn caps(name: &str) -> VmxCapabilities {
    let path = format!(
        "{}/../vmx-caps/testdata/{name}.msr",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    VmxCapabilities::read(&mut MsrSnapshot::parse(&text).unwrap()).unwrap()
}

/// A software VMCS that records the encoding of every VMREAD and VMWRITE.
struct Recorder {
    vmcs: SoftVmcs,
    reads: RefCell<BTreeSet<u32>>,
    writes: BTreeSet<u32>,
}

impl Recorder {
    fn new(caps: &VmxCapabilities) -> Self {
        Self {
            vmcs: SoftVmcs::new(caps),
            reads: RefCell::default(),
            writes: BTreeSet::new(),
        }
    }
}

impl VmcsRead for Recorder {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        self.reads.borrow_mut().insert(encoding);
        self.vmcs.read_raw(encoding)
    }
}

impl VmcsWrite for Recorder {
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        self.writes.insert(encoding);
        self.vmcs.write_raw(encoding, value)
    }
}

/// Every named control of every field, optional; dependencies not requested are dropped.
fn everything() -> ControlRequest {
    let mut optional = ControlSet::EMPTY;
    for group in ControlGroup::ALL {
        let mask = group.names().iter().fold(0u64, |m, &(bit, _)| m | 1 << bit);
        optional.set(group, mask);
    }
    ControlRequest {
        optional,
        ..ControlRequest::new()
    }
    .with_dependencies(DependencyPolicy::DropOptional)
}

const ALWAYS: [u32; 4] = [
    fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
    fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
    fields::VM_ENTRY_CONTROLS.encoding(),
];

#[test]
fn negotiated_sets_write_only_the_fields_each_model_has() {
    for (model, vmfunc) in MODELS {
        let caps = caps(model);
        let controls = caps.negotiate(&everything()).unwrap().value;
        let mut vmcs = Recorder::new(&caps);
        vmcs.write_controls(&controls)
            .unwrap_or_else(|e| panic!("{model}: {e}"));

        // Every model has secondary controls; VM functions from Haswell on; nothing more.
        let mut expected: BTreeSet<u32> = ALWAYS.into();
        expected.insert(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding());
        if vmfunc {
            expected.insert(fields::VM_FUNCTION_CONTROLS.encoding());
        }
        assert_eq!(vmcs.writes, expected, "{model}");

        // Read back: the same set, through the same fields only.
        assert_eq!(vmcs.read_controls().unwrap(), controls, "{model}");
        assert_eq!(*vmcs.reads.borrow(), expected, "{model}");
    }
}

#[test]
fn a_set_without_secondary_controls_writes_the_four_fields() {
    let caps = caps("tigerlake");
    let request = ControlRequest::new().require(PrimaryControls::HLT_EXITING);
    let controls = caps.negotiate(&request).unwrap().value;
    let mut vmcs = Recorder::new(&caps);
    vmcs.write_controls(&controls).unwrap();
    assert_eq!(vmcs.writes, ALWAYS.into());
    let raw = vmcs
        .vmcs
        .read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)
        .unwrap();
    assert_eq!(raw, controls.proc);
    assert!(raw.contains(PrimaryControls::HLT_EXITING));
}

#[test]
fn inactive_fields_are_refused_before_any_write() {
    let caps = caps("tigerlake");
    let mut controls = caps.negotiate(&everything()).unwrap().value;
    controls.proc3 = TertiaryControls::IPI_VIRTUALIZATION;
    let mut vmcs = Recorder::new(&caps);
    let err = vmcs.write_controls(&controls).unwrap_err();
    assert_eq!(
        err,
        ControlsError::Inactive(ControlSet::from(TertiaryControls::IPI_VIRTUALIZATION))
    );
    assert!(vmcs.writes.is_empty());
    assert_eq!(
        err.to_string(),
        "controls set in fields that are not activated: tertiary processor-based VM-execution \
         controls: \"IPI virtualization\" (bit 4)"
    );
}

#[test]
fn an_activated_field_the_processor_lacks_fails_its_vmwrite() {
    // Tigerlake's VMCS ends at index 0x1a: the secondary VM-exit controls (2044H, index 0x22)
    // do not exist. Forcing their activation makes that VMWRITE fail with error 12, named.
    let caps = caps("tigerlake");
    let mut controls = caps.negotiate(&everything()).unwrap().value;
    controls.exit |= ExitControls::ACTIVATE_SECONDARY_CONTROLS;
    controls.exit2 = SecondaryExitControls::LOAD_FRED;
    let mut vmcs = Recorder::new(&caps);
    assert_eq!(
        vmcs.write_controls(&controls),
        Err(ControlsError::Vmcs {
            group: ControlGroup::SecondaryExit,
            fail: VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent),
        })
    );
}

/// A control set from raw per-group values.
fn arb_set() -> impl Strategy<Value = ControlSet> {
    proptest::collection::vec(any::<u64>(), 8).prop_map(|raw| {
        let mut s = ControlSet::EMPTY;
        for (g, r) in ControlGroup::ALL.into_iter().zip(raw) {
            s.set(g, r);
        }
        s
    })
}

proptest! {
    /// Any set: refused exactly when it has inactive bits; otherwise it reads back unchanged
    /// from a VMCS that has every field.
    #[test]
    fn any_set_round_trips_or_is_refused(set in arb_set()) {
        let mut vmcs = SoftVmcs::all_fields();
        match vmcs.write_controls(&set) {
            Ok(()) => {
                prop_assert!(set.inactive().is_empty());
                prop_assert_eq!(vmcs.read_controls().unwrap(), set);
            }
            Err(ControlsError::Inactive(bits)) => {
                prop_assert_eq!(bits, set.inactive());
                prop_assert!(!bits.is_empty());
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
        // Without the inactive bits it is always written.
        let active = set - set.inactive();
        vmcs.write_controls(&active).unwrap();
        prop_assert_eq!(vmcs.read_controls().unwrap(), active);
    }
}
