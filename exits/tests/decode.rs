//! The decoded exit: which fields each reason reads, and what it decodes to.

use std::cell::RefCell;

use exits::{
    BasicExitReason, ExceptionQualification, ExitField, ExitReason, GpReg, InstructionLength,
    RawExitInfo, VmExit,
};
use proptest::prelude::*;

/// Decodes `raw` through [`VmExit::decode`], recording the fields read in order.
fn decode_recording(raw: &RawExitInfo) -> (VmExit, Vec<ExitField>) {
    let log = RefCell::new(Vec::new());
    let exit = VmExit::decode(ExitReason::from_raw(raw.reason), &mut |field| {
        log.borrow_mut().push(field);
        Ok::<u64, ()>(raw.get(field))
    })
    .unwrap();
    (exit, log.into_inner())
}

fn raw(reason: u32) -> RawExitInfo {
    RawExitInfo {
        reason,
        ..RawExitInfo::default()
    }
}

use ExitField as F;

#[test]
fn simple_instructions_read_only_the_length() {
    for reason in [10, 12, 18, 31, 32, 40, 54, 55] {
        let (exit, fields) = decode_recording(&RawExitInfo {
            instruction_length: 2,
            ..raw(reason)
        });
        assert_eq!(fields, [F::InstructionLength], "reason {reason}");
        assert_eq!(exit.instruction_length(), Some(exits::InstructionLength(2)));
    }
    let (exit, _) = decode_recording(&RawExitInfo {
        instruction_length: 2,
        ..raw(10)
    });
    assert_eq!(
        exit,
        VmExit::Cpuid {
            length: exits::InstructionLength(2)
        }
    );
    assert_eq!(exit.to_string(), "CPUID, instruction length 2 bytes");
}

#[test]
fn events_without_information_read_nothing() {
    for reason in [2, 3, 6, 7, 8, 37, 41, 43, 52, 74, 35, 86, 0xffff] {
        let (_, fields) = decode_recording(&raw(reason));
        assert_eq!(fields, [], "reason {reason}");
    }
    assert_eq!(decode_recording(&raw(2)).0, VmExit::TripleFault);
    assert_eq!(decode_recording(&raw(35)).0, VmExit::Unknown { reason: 35 });
}

#[test]
fn io_instruction_fields() {
    let out = RawExitInfo {
        qualification: 0x03f8_0000,
        instruction_length: 1,
        ..raw(30)
    };
    let (exit, fields) = decode_recording(&out);
    assert_eq!(fields, [F::ExitQualification, F::InstructionLength]);
    assert!(
        matches!(exit, VmExit::IoInstruction { qualification, string: None, .. } if qualification.port == 0x3f8)
    );
    // REP OUTSB: the string form also reads the guest-linear address and the instruction info.
    let outs = RawExitInfo {
        qualification: 0x03f8_0030,
        guest_linear_address: 0x7000,
        instruction_info: 0x1_8080,
        instruction_length: 2,
        ..raw(30)
    };
    let (exit, fields) = decode_recording(&outs);
    assert_eq!(
        fields,
        [
            F::ExitQualification,
            F::GuestLinearAddress,
            F::InstructionInformation,
            F::InstructionLength
        ]
    );
    let VmExit::IoInstruction {
        string: Some(string),
        ..
    } = exit
    else {
        panic!("{exit:?}")
    };
    assert_eq!(string.guest_linear_address, 0x7000);
    assert_eq!(string.info.segment, Ok(vmcs::GuestSegment::Ds));
}

#[test]
fn ept_violation_fields() {
    let write = RawExitInfo {
        qualification: 0x18a,
        guest_physical_address: 0xfee0_0000,
        guest_linear_address: 0xffff_8000_0000_1000,
        ..raw(48)
    };
    let (exit, fields) = decode_recording(&write);
    assert_eq!(
        fields,
        [
            F::ExitQualification,
            F::GuestPhysicalAddress,
            F::GuestLinearAddress,
            F::IdtVectoringInformation
        ]
    );
    let VmExit::EptViolation {
        qualification,
        guest_physical,
        guest_linear,
        idt_vectoring,
    } = exit
    else {
        panic!("{exit:?}")
    };
    assert!(qualification.write && qualification.readable && !qualification.writable);
    assert_eq!(
        (guest_physical, guest_linear, idt_vectoring),
        (0xfee0_0000, Some(0xffff_8000_0000_1000), None)
    );
    // Without a valid guest-linear address, that field is not read.
    let (exit, fields) = decode_recording(&RawExitInfo {
        qualification: 0x2,
        ..write
    });
    assert_eq!(
        fields,
        [
            F::ExitQualification,
            F::GuestPhysicalAddress,
            F::IdtVectoringInformation
        ]
    );
    assert!(matches!(
        exit,
        VmExit::EptViolation {
            guest_linear: None,
            ..
        }
    ));
    // During delivery of a #PF with error code: the error code is read too.
    let during = RawExitInfo {
        idt_vectoring_info: 0x8000_0b0e,
        idt_vectoring_error_code: 2,
        ..write
    };
    let (exit, fields) = decode_recording(&during);
    assert_eq!(fields.last(), Some(&F::IdtVectoringErrorCode));
    let event = exit.idt_vectoring().unwrap();
    assert_eq!((event.info.vector, event.error_code), (14, Some(2)));
    assert_eq!(event.reinjection().interruption_info().bits(), 0x8000_0b0e);
}

#[test]
fn page_fault_exit() {
    let pf = RawExitInfo {
        interruption_info: 0x8000_0b0e,
        interruption_error_code: 0x6,
        qualification: 0xdead_b000,
        ..raw(0)
    };
    let (exit, fields) = decode_recording(&pf);
    assert_eq!(
        fields,
        [
            F::InterruptionInformation,
            F::InterruptionErrorCode,
            F::ExitQualification,
            F::IdtVectoringInformation
        ]
    );
    let VmExit::ExceptionOrNmi {
        info: Some(info),
        error_code,
        qualification,
        length,
        idt_vectoring,
    } = exit
    else {
        panic!("{exit:?}")
    };
    assert_eq!(info.vector, 14);
    assert_eq!(error_code, Some(6));
    assert_eq!(
        qualification,
        ExceptionQualification::PageFault {
            linear_address: 0xdead_b000
        }
    );
    assert_eq!((length, idt_vectoring), (None, None));
    assert_eq!(
        exit.to_string(),
        "Exception or non-maskable interrupt (NMI): hardware exception, vector 14 (#PF), error code valid, error code 0x6, linear address 0xdeadb000"
    );
}

#[test]
fn int3_and_nmi_exits() {
    let int3 = RawExitInfo {
        interruption_info: 0x8000_0603,
        instruction_length: 1,
        ..raw(0)
    };
    let (exit, fields) = decode_recording(&int3);
    assert_eq!(
        fields,
        [
            F::InterruptionInformation,
            F::InstructionLength,
            F::IdtVectoringInformation
        ]
    );
    assert_eq!(exit.instruction_length(), Some(InstructionLength(1)));
    let nmi = RawExitInfo {
        interruption_info: 0x8000_0202,
        ..raw(0)
    };
    let (_, fields) = decode_recording(&nmi);
    assert_eq!(
        fields,
        [F::InterruptionInformation, F::IdtVectoringInformation]
    );
    // Valid bit clear: nothing else is read.
    let (exit, fields) = decode_recording(&raw(0));
    assert_eq!(fields, [F::InterruptionInformation]);
    assert!(matches!(exit, VmExit::ExceptionOrNmi { info: None, .. }));
}

#[test]
fn control_register_access_fields() {
    // MOV CR0, RAX.
    let (exit, fields) = decode_recording(&RawExitInfo {
        instruction_length: 3,
        ..raw(28)
    });
    assert_eq!(fields, [F::ExitQualification, F::InstructionLength]);
    assert_eq!(
        exit.to_string(),
        "Control-register accesses: MOV CR0, RAX, instruction length 3 bytes"
    );
    // LMSW with a memory operand also reads the guest-linear address of the operand.
    let lmsw = RawExitInfo {
        qualification: 0x0001_0070,
        guest_linear_address: 0x8000,
        ..raw(28)
    };
    let (exit, fields) = decode_recording(&lmsw);
    assert_eq!(
        fields,
        [
            F::ExitQualification,
            F::GuestLinearAddress,
            F::InstructionLength
        ]
    );
    assert!(matches!(
        exit,
        VmExit::ControlRegisterAccess {
            guest_linear_address: Some(0x8000),
            ..
        }
    ));
}

#[test]
fn memory_operand_instructions_read_displacement_and_info() {
    for reason in [19, 21, 22, 23, 25, 27, 46, 47, 50, 53, 58, 63, 64] {
        let (_, fields) = decode_recording(&raw(reason));
        assert_eq!(
            fields,
            [
                F::ExitQualification,
                F::InstructionInformation,
                F::InstructionLength
            ],
            "reason {reason}"
        );
    }
    // INVVPID RCX, [RDX + RSI*8 + 0x10].
    let invvpid = RawExitInfo {
        qualification: 0x10,
        instruction_info: 0x1119_8103,
        instruction_length: 4,
        ..raw(53)
    };
    let VmExit::Invvpid {
        displacement,
        info,
        length,
    } = VmExit::from_raw(&invvpid)
    else {
        panic!()
    };
    let registers = |reg: GpReg| if reg == GpReg::Rdx { 0x1000 } else { 2 };
    assert_eq!(
        info.memory.linear_address(displacement, 0, registers),
        Ok(0x1020)
    );
    assert_eq!((info.register, length), (GpReg::Rcx, InstructionLength(4)));
}

#[test]
fn entry_failures() {
    let (exit, fields) = decode_recording(&RawExitInfo {
        qualification: 4,
        ..raw(0x8000_0021)
    });
    assert_eq!(fields, [F::ExitQualification]);
    assert_eq!(
        exit,
        VmExit::EntryFailureInvalidGuestState {
            qualification: exits::EntryFailureQualification::InvalidVmcsLinkPointer
        }
    );
    let (exit, _) = decode_recording(&RawExitInfo {
        qualification: 3,
        ..raw(0x8000_0022)
    });
    assert_eq!(exit, VmExit::EntryFailureMsrLoading { entry: 3 });
    assert_eq!(
        decode_recording(&raw(0x8000_0029)).0,
        VmExit::EntryFailureMachineCheck
    );
}

#[test]
fn msr_immediate_exits() {
    let rdmsr = RawExitInfo {
        qualification: 0xc000_0080,
        instruction_info: 0x60,
        instruction_length: 9,
        ..raw(84)
    };
    let (exit, fields) = decode_recording(&rdmsr);
    assert_eq!(
        fields,
        [
            F::ExitQualification,
            F::InstructionInformation,
            F::InstructionLength
        ]
    );
    assert!(
        matches!(exit, VmExit::RdmsrImmediate { msr: 0xc000_0080, info, .. } if info.register == GpReg::R12)
    );
}

#[test]
fn variants_name_their_reason() {
    for reason in BasicExitReason::ALL {
        let exit = VmExit::from_raw(&raw(reason.number() as u32));
        assert_eq!(exit.basic_reason(), *reason);
        assert!(exit.to_string().starts_with(reason.sdm_name().unwrap()));
    }
}

proptest! {
    /// Whatever the values, no reason reads a field twice or reads the exit reason itself.
    #[test]
    fn each_field_read_at_most_once(
        reason in 0u32..90,
        qualification in any::<u64>(),
        interruption_info in any::<u32>(),
        idt_vectoring_info in any::<u32>(),
        instruction_info in any::<u32>(),
    ) {
        let raw = RawExitInfo { reason, qualification, interruption_info, idt_vectoring_info, instruction_info, ..RawExitInfo::default() };
        let (_, fields) = decode_recording(&raw);
        for field in ExitField::ALL {
            prop_assert!(fields.iter().filter(|f| **f == field).count() <= 1, "{:?} read twice", field);
        }
        prop_assert!(!fields.contains(&F::ExitReason));
    }
}

#[test]
fn io_smi_after_outs_reads_the_linear_address() {
    let smi = RawExitInfo {
        qualification: 0x03f8_0010,
        guest_linear_address: 0x9000,
        ..raw(5)
    };
    let (exit, fields) = decode_recording(&smi);
    assert_eq!(fields, [F::ExitQualification, F::GuestLinearAddress]);
    assert!(matches!(
        exit,
        VmExit::IoSmi { qualification, guest_linear_address: Some(0x9000) } if qualification.string
    ));
    let (_, fields) = decode_recording(&RawExitInfo {
        qualification: 0x03f8_0000,
        ..smi
    });
    assert_eq!(fields, [F::ExitQualification]);
}

#[test]
fn string_io_and_raw_display() {
    let outs = RawExitInfo {
        qualification: 0x03f8_0030,
        guest_linear_address: 0x7000,
        instruction_info: 0x1_8080,
        instruction_length: 2,
        ..raw(30)
    };
    assert_eq!(
        VmExit::from_raw(&outs).to_string(),
        "I/O instruction: REP OUTS (DX), port 0x3f8, 1 byte, string at linear address 0x7000 \
         (segment DS, 32-bit address), instruction length 2 bytes"
    );
    assert!(
        outs.to_string()
            .starts_with("exit reason 0x1e, exit qualification 0x3f80030, ")
    );
}
