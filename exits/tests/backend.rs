//! Reading exits through the `vmcs::VmcsRead` trait: a recording fake backend checks that each
//! reason reads only the fields it needs, and a `SoftVmcs` checks the real backend end to end.

use std::cell::RefCell;
use std::collections::BTreeMap;

use exits::{ExitField, ExitReadError, ExitReason, RawExitInfo, VmExit};
use vmcs::{SoftVmcs, VmcsRead, fields};
use vmx_core::{VmFail, VmInstructionError};

/// A VMCS that answers from a map and records every encoding read.
struct Recording {
    values: BTreeMap<u32, u64>,
    reads: RefCell<Vec<u32>>,
}

impl Recording {
    fn new(raw: &RawExitInfo) -> Self {
        let values = ExitField::ALL
            .iter()
            .map(|f| (f.encoding(), raw.get(*f)))
            .collect();
        Self {
            values,
            reads: RefCell::new(Vec::new()),
        }
    }

    fn reads(&self) -> Vec<u32> {
        self.reads.borrow().clone()
    }
}

impl VmcsRead for Recording {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        self.reads.borrow_mut().push(encoding);
        self.values
            .get(&encoding)
            .copied()
            .ok_or(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent))
    }
}

#[test]
fn cpuid_reads_reason_and_length_only() {
    let vmcs = Recording::new(&RawExitInfo {
        reason: 10,
        instruction_length: 2,
        ..Default::default()
    });
    let exit = VmExit::read(&vmcs).unwrap();
    assert_eq!(
        exit,
        VmExit::Cpuid {
            length: exits::InstructionLength(2)
        }
    );
    assert_eq!(vmcs.reads(), [0x4402, 0x440c]);
}

#[test]
fn ept_violation_reads_its_fields() {
    let vmcs = Recording::new(&RawExitInfo {
        reason: 48,
        qualification: 0x181,
        guest_physical_address: 0x1000,
        guest_linear_address: 0x40_1000,
        ..Default::default()
    });
    let exit = VmExit::read(&vmcs).unwrap();
    assert!(matches!(
        exit,
        VmExit::EptViolation {
            guest_physical: 0x1000,
            guest_linear: Some(0x40_1000),
            ..
        }
    ));
    assert_eq!(
        vmcs.reads(),
        [
            fields::EXIT_REASON.encoding(),
            fields::EXIT_QUALIFICATION.encoding(),
            fields::GUEST_PHYSICAL_ADDRESS.encoding(),
            fields::GUEST_LINEAR_ADDRESS.encoding(),
            fields::IDT_VECTORING_INFORMATION.encoding(),
        ]
    );
}

#[test]
fn triple_fault_reads_only_the_reason() {
    let vmcs = Recording::new(&RawExitInfo {
        reason: 2,
        ..Default::default()
    });
    assert_eq!(VmExit::read(&vmcs).unwrap(), VmExit::TripleFault);
    assert_eq!(vmcs.reads(), [0x4402]);
}

#[test]
fn every_reason_reads_the_same_as_the_raw_decoder() {
    for reason in 0..=90u32 {
        let raw = RawExitInfo {
            reason,
            qualification: 0x1_ffff,
            interruption_info: 0x8000_0b0e,
            idt_vectoring_info: 0x8000_0480,
            instruction_info: 0x1119_8103,
            instruction_length: 3,
            ..Default::default()
        };
        let vmcs = Recording::new(&raw);
        assert_eq!(
            VmExit::read(&vmcs).unwrap(),
            VmExit::from_raw(&raw),
            "reason {reason}"
        );
    }
}

#[test]
fn a_failing_read_names_the_field() {
    // A backend that cannot read the exit qualification.
    let mut vmcs = Recording::new(&RawExitInfo {
        reason: 30,
        ..Default::default()
    });
    vmcs.values.remove(&fields::EXIT_QUALIFICATION.encoding());
    let error = VmExit::read(&vmcs).unwrap_err();
    assert_eq!(
        error,
        ExitReadError {
            field: ExitField::ExitQualification,
            error: VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent),
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("reading the exit qualification (0x6400) failed: ")
    );
}

#[test]
fn soft_vmcs_end_to_end_with_reinjection() {
    // An EPT violation while the guest's IDT delivered INT 0x80 (a 2-byte software interrupt).
    let mut vmcs = SoftVmcs::all_fields();
    let stores = [
        (fields::EXIT_REASON.encoding(), 48),
        (fields::EXIT_QUALIFICATION.encoding(), 0x2),
        (fields::GUEST_PHYSICAL_ADDRESS.encoding(), 0x7_f000),
        (fields::IDT_VECTORING_INFORMATION.encoding(), 0x8000_0480),
        (fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), 2),
    ];
    for (encoding, value) in stores {
        vmcs.store(encoding, value).unwrap();
    }
    let reason = ExitReason::read(&vmcs).unwrap();
    assert!(!reason.entry_failure);
    let exit = VmExit::read_for(reason, &vmcs).unwrap();
    let event = exit.idt_vectoring().expect("event being delivered");
    assert_eq!(event.instruction_length, Some(exits::InstructionLength(2)));
    event.reinjection().write(&mut vmcs).unwrap();
    assert_eq!(
        vmcs.read(fields::VM_ENTRY_INTERRUPTION_INFORMATION)
            .unwrap()
            .bits(),
        0x8000_0480
    );
    assert_eq!(vmcs.read(fields::VM_ENTRY_INSTRUCTION_LENGTH).unwrap(), 2);
    assert_eq!(vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE).unwrap(), 0);
    assert_eq!(
        exit.to_string(),
        "EPT violation: guest-physical 0x7f000, access write; EPT permissions none; during delivery of software interrupt, vector 128, instruction length 2 bytes"
    );
}
