//! Event injection and instruction completion on a software VMCS, judged by the software VM-entry
//! checker (vmcs::check) on the known-good `tigerlake` VMCS of the checker's own tests.

#[path = "../../vmcs/tests/check_common/mod.rs"]
mod check_common;

use std::cell::RefCell;

use check_common::Env;
use exits::complete::{CompleteError, skip_instruction};
use exits::inject::{
    Blocking, Delivery, Exception, InjectError, SoftwareEvent, Window, close_fired_window,
    close_interrupt_window, close_nmi_window, deliver_external_interrupt, deliver_nmi,
    inject_exception, inject_external_interrupt, inject_nmi, inject_software_event, reinject,
    request_nmi_window,
};
use exits::{IdtVectoring, IdtVectoringInfo, InstructionLength, InterruptionType, VmExit};
use proptest::prelude::*;
use vmcs::check::{Outcome, Rule};
use vmcs::{
    ActivityState, DebugCtl, InterruptibilityState, PendingDebugExceptions, SoftVmcs, VmcsRead,
    VmcsWrite, fields,
};
use vmx_caps::{MsrSnapshot, PinBasedControls, PrimaryControls};
use vmx_core::VmFail;

/// The VM-entry checks on event injection (SDM "Checks on VMX Controls" and "Checks on Guest
/// Non-Register State"): the rules an injection can break.
const INJECTION_RULES: [Rule; 16] = [
    Rule::C6,
    Rule::C7,
    Rule::C8,
    Rule::C9,
    Rule::C10,
    Rule::C11,
    Rule::C12,
    Rule::C13,
    Rule::C14,
    Rule::J6,
    Rule::K4,
    Rule::K5,
    Rule::K6,
    Rule::K11,
    Rule::K12,
    Rule::K15,
];

/// The injection rules the checker says are violated.
fn injection_violations(env: &Env) -> Vec<Rule> {
    let report = env.check();
    INJECTION_RULES
        .into_iter()
        .filter(|&rule| report.violates(rule))
        .collect()
}

/// The baseline on `tigerlake`, with interrupts enabled in the guest.
fn env() -> Env {
    with_interrupts(Env::tigerlake())
}

/// The baseline on `corei7_skylake_x`: IA32_VMX_BASIC\[56\] is 0 there (it is 1 on
/// `tigerlake`), so VM entry checks "deliver error code" against the vector (rule C10).
fn skylake_env() -> Env {
    let msrs = MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/corei7_skylake_x.msr"));
    let env = with_interrupts(Env::with_msrs(msrs.unwrap()));
    assert!(!env.caps.basic.no_error_code_check());
    env
}

fn with_interrupts(mut env: Env) -> Env {
    env.vmcs
        .write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(0x202))
        .unwrap();
    assert_eq!(env.check().outcome(), Outcome::Success);
    env
}

/// The skylake_x baseline switched to real mode under unrestricted guest (only the injection
/// rules are judged there: the rest of the state stays 64-bit).
fn real_mode_env() -> Env {
    let mut env = skylake_env();
    env.set(e!(SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS), 1 << 7);
    env.clear(e!(GUEST_CR0), 0x8000_0001);
    env
}

fn entry_info(env: &Env) -> u32 {
    env.vmcs
        .read(fields::VM_ENTRY_INTERRUPTION_INFORMATION)
        .unwrap()
        .bits()
}

#[test]
fn every_exception_passes_the_entry_checks_in_protected_mode() {
    for (vector, model) in (0..32)
        .filter(|&v| v != 2)
        .flat_map(|v| [(v, "tigerlake"), (v, "skylake_x")])
    {
        let exception = Exception::new(vector).unwrap();
        let mut env = if model == "tigerlake" {
            env()
        } else {
            skylake_env()
        };
        let code = exception.has_error_code().then_some(0x1234);
        inject_exception(&mut env.vmcs, exception, code).unwrap();
        if vector == 21 && model == "skylake_x" {
            // #CP pushes an error code, but the VM-entry check's must-deliver list predates
            // CET: without IA32_VMX_BASIC[56] (no CET processor lacks it) VM entry refuses it.
            assert_eq!(injection_violations(&env), [Rule::C10]);
            continue;
        }
        assert_eq!(
            env.check().outcome(),
            Outcome::Success,
            "{exception} on {model}"
        );
        // Valid, hardware exception (3), deliver error code exactly for 8, 10-14, 17, 21 (the
        // SDM's list, not the function's).
        let pushes = matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21);
        let expected = 1 << 31 | u32::from(pushes) << 11 | 3 << 8 | u32::from(vector);
        assert_eq!(entry_info(&env), expected, "{exception}");
        if pushes {
            assert_eq!(
                env.vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE),
                Ok(0x1234)
            );
        }
    }
}

#[test]
fn real_mode_exceptions_deliver_no_error_code() {
    for exception in [Exception::GP, Exception::DF, Exception::UD, Exception::PF] {
        let mut env = real_mode_env();
        let code = exception.has_error_code().then_some(0);
        inject_exception(&mut env.vmcs, exception, code).unwrap();
        assert_eq!(entry_info(&env) & 1 << 11, 0, "{exception}");
        assert_eq!(injection_violations(&env), [], "{exception}");
    }
    // The checker does judge real mode: the protected-mode encoding of #GP(0) fails C10 there.
    let mut env = real_mode_env();
    env.w(e!(VM_ENTRY_INTERRUPTION_INFORMATION), 0x8000_0b0d);
    assert_eq!(injection_violations(&env), [Rule::C10]);
}

#[test]
fn exception_inputs_vmentry_would_refuse_are_errors() {
    assert_eq!(Exception::new(2), Err(InjectError::NotAnException(2)));
    assert_eq!(Exception::new(32), Err(InjectError::NotAnException(32)));
    let mut vmcs = SoftVmcs::all_fields();
    let cases = [
        (
            Exception::UD,
            Some(0),
            InjectError::UnexpectedErrorCode(Exception::UD),
        ),
        (
            Exception::GP,
            None,
            InjectError::MissingErrorCode(Exception::GP),
        ),
        (
            Exception::PF,
            Some(0x1_0002),
            InjectError::ErrorCodeTooWide(0x1_0002),
        ),
    ];
    for (exception, code, error) in cases {
        assert_eq!(inject_exception(&mut vmcs, exception, code), Err(error));
        assert_eq!(
            vmcs.read(fields::VM_ENTRY_INTERRUPTION_INFORMATION)
                .unwrap()
                .bits(),
            0
        );
    }
    assert_eq!(
        InjectError::MissingErrorCode(Exception::GP).to_string(),
        "#GP (vector 13) pushes an error code, and none was given"
    );
    // What the errors protect from: #UD with an error code fails C10, #PF with bit 16 C12.
    let mut env = skylake_env();
    env.w(e!(VM_ENTRY_INTERRUPTION_INFORMATION), 0x8000_0b06);
    assert_eq!(injection_violations(&env), [Rule::C10]);
    env.w(e!(VM_ENTRY_INTERRUPTION_INFORMATION), 0x8000_0b0e);
    env.w(e!(VM_ENTRY_EXCEPTION_ERROR_CODE), 0x1_0002);
    assert_eq!(injection_violations(&env), [Rule::C12]);
}

#[test]
fn nmi_and_external_interrupt() {
    let mut env = env();
    inject_nmi(&mut env.vmcs).unwrap();
    assert_eq!(entry_info(&env), 0x8000_0202);
    assert_eq!(env.check().outcome(), Outcome::Success);

    let mut env = self::env();
    inject_external_interrupt(&mut env.vmcs, 0x30).unwrap();
    assert_eq!(entry_info(&env), 0x8000_0030);
    assert_eq!(env.check().outcome(), Outcome::Success);

    // A guest in the HLT state takes both (an interrupt ends the HLT).
    let mut env = self::env();
    env.vmcs
        .write(fields::GUEST_ACTIVITY_STATE, ActivityState::Hlt)
        .unwrap();
    inject_external_interrupt(&mut env.vmcs, 0x30).unwrap();
    assert_eq!(env.check().outcome(), Outcome::Success);
}

#[test]
fn blocked_events_are_refused_and_the_checker_agrees() {
    let sti = InterruptibilityState::BLOCKING_BY_STI;
    let mov_ss = InterruptibilityState::BLOCKING_BY_MOV_SS;
    let nmi = InterruptibilityState::BLOCKING_BY_NMI;
    for (state, rflags) in [
        (sti, 0x202),
        (mov_ss, 0x202),
        (InterruptibilityState::empty(), 0x2),
    ] {
        let mut env = env();
        env.vmcs
            .write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(rflags))
            .unwrap();
        env.vmcs
            .write(fields::GUEST_INTERRUPTIBILITY_STATE, state)
            .unwrap();
        assert_eq!(
            inject_external_interrupt(&mut env.vmcs, 0x30),
            Err(InjectError::InterruptsBlocked(Blocking {
                interruptibility: state,
                interrupts_enabled: rflags & 0x200 != 0,
            }))
        );
        assert_eq!(entry_info(&env), 0);
        // The entry the error avoided fails (J6 for IF = 0, K11 for the shadows).
        env.w(e!(VM_ENTRY_INTERRUPTION_INFORMATION), 0x8000_0030);
        let expected = if rflags == 0x2 { Rule::J6 } else { Rule::K11 };
        assert_eq!(injection_violations(&env), [expected], "{state}");
    }
    for state in [mov_ss, sti, nmi] {
        let mut env = env();
        env.vmcs
            .write(fields::GUEST_INTERRUPTIBILITY_STATE, state)
            .unwrap();
        assert!(matches!(
            inject_nmi(&mut env.vmcs),
            Err(InjectError::NmiBlocked(b)) if b.interruptibility == state
        ));
        assert_eq!(entry_info(&env), 0);
    }
}

#[test]
fn windows() {
    // Interrupts disabled: the interrupt waits for the window, and the checker accepts the
    // window control on tigerlake.
    let mut env = env();
    env.vmcs
        .write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(0x2))
        .unwrap();
    assert_eq!(
        deliver_external_interrupt(&mut env.vmcs, 0x30),
        Ok(Delivery::WindowRequested)
    );
    let proc = |env: &Env| {
        env.vmcs
            .read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)
            .unwrap()
    };
    assert!(proc(&env).contains(PrimaryControls::INTERRUPT_WINDOW_EXITING));
    assert_eq!(entry_info(&env), 0);
    assert_eq!(env.check().outcome(), Outcome::Success);
    // The window exit: the guest enabled interrupts. Close the window and deliver.
    env.vmcs
        .write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(0x202))
        .unwrap();
    assert_eq!(
        close_fired_window(&mut env.vmcs, &VmExit::InterruptWindow),
        Ok(Some(Window::Interrupt))
    );
    close_interrupt_window(&mut env.vmcs).unwrap(); // closing again changes nothing
    assert!(!proc(&env).contains(PrimaryControls::INTERRUPT_WINDOW_EXITING));
    assert_eq!(
        deliver_external_interrupt(&mut env.vmcs, 0x30),
        Ok(Delivery::Injected)
    );
    assert_eq!(env.check().outcome(), Outcome::Success);

    // NMI window: needs virtual NMIs (the baseline has NMI exiting only).
    let mut env = self::env();
    env.vmcs
        .write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            InterruptibilityState::BLOCKING_BY_NMI,
        )
        .unwrap();
    assert_eq!(deliver_nmi(&mut env.vmcs), Err(InjectError::VirtualNmisOff));
    assert_eq!(
        request_nmi_window(&mut env.vmcs),
        Err(InjectError::VirtualNmisOff)
    );
    assert!(!proc(&env).contains(PrimaryControls::NMI_WINDOW_EXITING));
    // What that error avoids: NMI-window exiting without virtual NMIs fails VM entry.
    let mut bad = env.clone();
    bad.set(
        e!(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS),
        PrimaryControls::NMI_WINDOW_EXITING.bits().into(),
    );
    assert_ne!(bad.check().outcome(), Outcome::Success);
    env.set(
        e!(PIN_BASED_VM_EXECUTION_CONTROLS),
        PinBasedControls::VIRTUAL_NMIS.bits().into(),
    );
    assert_eq!(deliver_nmi(&mut env.vmcs), Ok(Delivery::WindowRequested));
    assert!(proc(&env).contains(PrimaryControls::NMI_WINDOW_EXITING));
    assert_eq!(env.check().outcome(), Outcome::Success);
    env.vmcs
        .write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            InterruptibilityState::empty(),
        )
        .unwrap();
    // Not a window exit: nothing closed.
    assert_eq!(
        close_fired_window(&mut env.vmcs, &VmExit::TripleFault),
        Ok(None)
    );
    assert!(proc(&env).contains(PrimaryControls::NMI_WINDOW_EXITING));
    assert_eq!(
        close_fired_window(&mut env.vmcs, &VmExit::NmiWindow),
        Ok(Some(Window::Nmi))
    );
    close_nmi_window(&mut env.vmcs).unwrap();
    assert_eq!(deliver_nmi(&mut env.vmcs), Ok(Delivery::Injected));
    assert!(!proc(&env).contains(PrimaryControls::NMI_WINDOW_EXITING));
    assert_eq!(env.check().outcome(), Outcome::Success);
}

#[test]
fn software_events() {
    for (event, info) in [
        (SoftwareEvent::Interrupt(0x80), 0x8000_0480),
        (SoftwareEvent::Int1, 0x8000_0501),
        (SoftwareEvent::Int3, 0x8000_0603),
        (SoftwareEvent::Into, 0x8000_0604),
    ] {
        let mut env = env();
        let length = if event == SoftwareEvent::Interrupt(0x80) {
            2
        } else {
            1
        };
        inject_software_event(&mut env.vmcs, event, InstructionLength(length)).unwrap();
        assert_eq!(entry_info(&env), info, "{event:?}");
        assert_eq!(
            env.vmcs.read(fields::VM_ENTRY_INSTRUCTION_LENGTH),
            Ok(length)
        );
        assert_eq!(env.check().outcome(), Outcome::Success, "{event:?}");
    }
    let mut env = env();
    for length in [0, 16] {
        assert_eq!(
            inject_software_event(
                &mut env.vmcs,
                SoftwareEvent::Int3,
                InstructionLength(length)
            ),
            Err(InjectError::InstructionLength(InstructionLength(length)))
        );
    }
    assert_eq!(entry_info(&env), 0);
    // Length 16 is what VM entry refuses (C13).
    env.w(e!(VM_ENTRY_INTERRUPTION_INFORMATION), 0x8000_0603);
    env.w(e!(VM_ENTRY_INSTRUCTION_LENGTH), 16);
    assert_eq!(injection_violations(&env), [Rule::C13]);
}

/// An IDT-vectoring event as the processor would store it.
fn stored(env: &mut Env, info: u32, code: u32, length: u32) -> IdtVectoring {
    for (field, value) in [
        (fields::IDT_VECTORING_INFORMATION.encoding(), info),
        (fields::IDT_VECTORING_ERROR_CODE.encoding(), code),
        (fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), length),
    ] {
        env.vmcs.store(field, u64::from(value)).unwrap();
    }
    IdtVectoring::read(&env.vmcs, None).unwrap().unwrap()
}

#[test]
fn reinjection_of_every_kind_passes_the_checks() {
    for (info, code, length) in [
        (0x8000_0b0e, 0x6, 3), // #PF, error code 6
        (0x8000_0306, 0, 3),   // #UD
        (0x8000_0202, 0, 3),   // NMI
        (0x8000_0041, 0, 3),   // external interrupt 0x41
        (0x8000_0480, 0, 2),   // INT 0x80, 2 bytes
        (0x8000_0603, 0, 1),   // INT3
        (0x8000_0501, 0, 1),   // INT1
        (0x8000_0b08, 0, 5),   // #DF(0)
    ] {
        let mut env = env();
        let event = stored(&mut env, info, code, length);
        reinject(&mut env.vmcs, &event).unwrap();
        assert_eq!(entry_info(&env), info, "{event}");
        assert_eq!(env.check().outcome(), Outcome::Success, "{event}");
        if event.info.error_code_valid {
            assert_eq!(
                env.vmcs.read(fields::VM_ENTRY_EXCEPTION_ERROR_CODE),
                Ok(code)
            );
        }
        if exits::event::is_software_event(event.info.kind) {
            assert_eq!(
                env.vmcs.read(fields::VM_ENTRY_INSTRUCTION_LENGTH),
                Ok(length)
            );
        }
    }
    // With virtual NMIs, a VM exit during delivery of an injected NMI leaves virtual-NMI
    // blocking set (SDM "Resuming Guest Software after Handling an Exception"): re-injecting
    // clears it, else VM entry fails (K15).
    let mut env = self::env();
    env.set(
        e!(PIN_BASED_VM_EXECUTION_CONTROLS),
        PinBasedControls::VIRTUAL_NMIS.bits().into(),
    );
    env.vmcs
        .write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            InterruptibilityState::BLOCKING_BY_NMI,
        )
        .unwrap();
    let event = stored(&mut env, 0x8000_0202, 0, 0);
    let mut copied = env.clone();
    copied.w(e!(VM_ENTRY_INTERRUPTION_INFORMATION), 0x8000_0202);
    assert_eq!(injection_violations(&copied), [Rule::K15]);
    reinject(&mut env.vmcs, &event).unwrap();
    assert_eq!(
        env.vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE),
        Ok(InterruptibilityState::empty())
    );
    assert_eq!(env.check().outcome(), Outcome::Success);

    // Nothing valid: nothing to read.
    let mut env = self::env();
    env.vmcs
        .store(fields::IDT_VECTORING_INFORMATION.encoding(), 0x0000_0b0e)
        .unwrap();
    assert_eq!(IdtVectoring::read(&env.vmcs, None).unwrap(), None);
    // Types the IDT-vectoring field never holds are refused.
    let other = IdtVectoring {
        info: IdtVectoringInfo::from_raw(0x8000_0700).unwrap(),
        error_code: None,
        instruction_length: None,
    };
    assert_eq!(
        reinject(&mut env.vmcs, &other),
        Err(InjectError::NotReinjectable(InterruptionType::OtherEvent))
    );
    let no_length = IdtVectoring {
        info: IdtVectoringInfo::from_raw(0x8000_0603).unwrap(),
        error_code: None,
        instruction_length: None,
    };
    assert_eq!(
        reinject(&mut env.vmcs, &no_length),
        Err(InjectError::InstructionLength(InstructionLength(0)))
    );
}

/// A software VMCS that counts VMREADs and VMWRITEs.
struct Counting {
    vmcs: SoftVmcs,
    reads: RefCell<Vec<u32>>,
    writes: Vec<u32>,
}

impl VmcsRead for Counting {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        self.reads.borrow_mut().push(encoding);
        self.vmcs.read_raw(encoding)
    }
}

impl VmcsWrite for Counting {
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        self.writes.push(encoding);
        self.vmcs.write_raw(encoding, value)
    }
}

impl Counting {
    fn new(env: &Env) -> Self {
        Self {
            vmcs: env.vmcs.clone(),
            reads: RefCell::default(),
            writes: Vec::new(),
        }
    }
}

#[test]
fn the_common_paths_read_only_what_they_need() {
    let env = env();
    let mut v = Counting::new(&env);
    skip_instruction(&mut v, InstructionLength(2)).unwrap();
    assert_eq!(
        *v.reads.borrow(),
        [
            e!(GUEST_RIP),
            e!(GUEST_INTERRUPTIBILITY_STATE),
            e!(GUEST_RFLAGS)
        ]
    );
    assert_eq!(v.writes, [e!(GUEST_RIP)]);

    let mut v = Counting::new(&env);
    inject_exception(&mut v, Exception::UD, None).unwrap();
    assert!(v.reads.borrow().is_empty());
    assert_eq!(v.writes, [e!(VM_ENTRY_INTERRUPTION_INFORMATION)]);

    let mut v = Counting::new(&env);
    inject_exception(&mut v, Exception::GP, Some(0)).unwrap();
    assert_eq!(*v.reads.borrow(), [e!(GUEST_CR0)]);
    assert_eq!(
        v.writes,
        [
            e!(VM_ENTRY_INTERRUPTION_INFORMATION),
            e!(VM_ENTRY_EXCEPTION_ERROR_CODE)
        ]
    );
}

#[test]
fn skip_advances_rip_and_ends_the_shadows() {
    for shadow in [
        InterruptibilityState::BLOCKING_BY_STI,
        InterruptibilityState::BLOCKING_BY_MOV_SS,
    ] {
        let mut env = env();
        env.vmcs
            .write(
                fields::GUEST_INTERRUPTIBILITY_STATE,
                shadow | InterruptibilityState::BLOCKING_BY_NMI,
            )
            .unwrap();
        let done = skip_instruction(&mut env.vmcs, InstructionLength(3)).unwrap();
        assert_eq!(done.rip, 0x40_1003);
        assert_eq!(env.vmcs.read(fields::GUEST_RIP), Ok(0x40_1003));
        // Blocking by NMI is not an instruction shadow: it stays.
        assert_eq!(
            env.vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE),
            Ok(InterruptibilityState::BLOCKING_BY_NMI)
        );
        // With the shadow gone, an interrupt can be injected right away.
        inject_external_interrupt(&mut env.vmcs, 0x30).unwrap();
        assert_eq!(env.check().outcome(), Outcome::Success);
    }
}

#[test]
fn skip_with_tf_makes_a_single_step_trap_pending() {
    let mut env = env();
    env.vmcs
        .write(
            fields::GUEST_RFLAGS,
            vmcs::Rflags::from_bits_retain(0x1_0302),
        )
        .unwrap(); // TF, IF, RF
    env.vmcs
        .write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            InterruptibilityState::BLOCKING_BY_STI,
        )
        .unwrap();
    let done = skip_instruction(&mut env.vmcs, InstructionLength(2)).unwrap();
    assert!(done.single_step);
    assert_eq!(
        env.vmcs.read(fields::GUEST_PENDING_DEBUG_EXCEPTIONS),
        Ok(PendingDebugExceptions::BS)
    );
    assert_eq!(
        env.vmcs.read(fields::GUEST_RFLAGS),
        Ok(vmcs::Rflags::from_bits_retain(0x302))
    ); // RF cleared
    assert_eq!(env.check().outcome(), Outcome::Success);

    // IA32_DEBUGCTL.BTF: single-step on branches only; nothing pending.
    let mut env = self::env();
    env.vmcs
        .write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(0x302))
        .unwrap();
    env.vmcs
        .write(fields::GUEST_IA32_DEBUGCTL, DebugCtl::BTF)
        .unwrap();
    let done = skip_instruction(&mut env.vmcs, InstructionLength(2)).unwrap();
    assert!(!done.single_step);
    assert_eq!(
        env.vmcs.read(fields::GUEST_PENDING_DEBUG_EXCEPTIONS),
        Ok(PendingDebugExceptions::empty())
    );

    // The checker's K19 is what the STI shadow would have demanded: with the shadow kept and TF
    // set, BS must be 1. skip_instruction ends the shadow, so either way the entry is valid.
    let mut env = self::env();
    env.vmcs
        .write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(0x302))
        .unwrap();
    env.vmcs
        .write(
            fields::GUEST_INTERRUPTIBILITY_STATE,
            InterruptibilityState::BLOCKING_BY_STI,
        )
        .unwrap();
    assert!(env.check().violates(Rule::K19));
}

#[test]
fn skip_wraps_eip_outside_64bit_mode() {
    // (RIP, CS access rights, IA-32e mode guest, length) -> next RIP.
    let long = 0xa09b; // L = 1
    let compat = 0xc09b; // L = 0, D = 1: compatibility mode in an IA-32e guest
    let real16 = 0x93; // D = 0
    for (rip, cs, ia32e, length, next) in [
        (0xffff_fffe_u64, long, true, 3, 0x1_0000_0001_u64),
        (0xffff_ffff_ffff_fffe, long, true, 3, 0x1),
        (0xffff_fffe, compat, true, 3, 0x1),
        (0xffff_fffe, compat, false, 3, 0x1),
        (0xffff_fffe, long, false, 3, 0x1), // CS.L without IA-32e mode is not 64-bit mode
        // 16-bit code: EIP is still 32 bits wide; past 0xFFFF the fetch faults on the limit.
        (0xfffe, real16, false, 3, 0x1_0001),
    ] {
        let mut env = env();
        env.vmcs.write(fields::GUEST_RIP, rip).unwrap();
        env.w(e!(GUEST_CS_ACCESS_RIGHTS), cs);
        if !ia32e {
            env.clear(e!(VM_ENTRY_CONTROLS), 1 << 9);
        }
        let done = skip_instruction(&mut env.vmcs, InstructionLength(length)).unwrap();
        assert_eq!(done.rip, next, "{rip:#x} + {length}");
        assert_eq!(env.vmcs.read(fields::GUEST_RIP), Ok(next));
    }
}

#[test]
fn skip_refuses_impossible_lengths() {
    let mut env = env();
    for length in [0, 16, u32::MAX] {
        assert_eq!(
            skip_instruction(&mut env.vmcs, InstructionLength(length)),
            Err(CompleteError::Length(InstructionLength(length)))
        );
    }
    assert_eq!(env.vmcs.read(fields::GUEST_RIP), Ok(0x40_1000));
}

proptest! {
    /// Whatever the shadows, TF, RF and BTF at the exit, the state after skip_instruction passes
    /// every VM-entry check (K19/K20 on BS included), and RIP moves by the length in 64-bit mode.
    #[test]
    fn skip_keeps_a_valid_state_valid(
        length in 1u32..=15,
        tf in any::<bool>(),
        rf in any::<bool>(),
        btf in any::<bool>(),
        shadow in 0u32..3,
        rip_low in any::<u32>(),
    ) {
        let mut env = env();
        let rflags = 0x202 | u64::from(tf) << 8 | u64::from(rf) << 16;
        env.vmcs.write(fields::GUEST_RFLAGS, vmcs::Rflags::from_bits_retain(rflags)).unwrap();
        let debugctl = if btf { DebugCtl::BTF } else { DebugCtl::empty() };
        env.vmcs.write(fields::GUEST_IA32_DEBUGCTL, debugctl).unwrap();
        let rip = 0x40_0000_0000 | u64::from(rip_low);
        env.vmcs.write(fields::GUEST_RIP, rip).unwrap();
        let state = match shadow {
            0 => InterruptibilityState::empty(),
            1 => InterruptibilityState::BLOCKING_BY_STI,
            _ => InterruptibilityState::BLOCKING_BY_MOV_SS,
        };
        env.vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, state).unwrap();
        let done = skip_instruction(&mut env.vmcs, InstructionLength(length)).unwrap();
        prop_assert_eq!(done.rip, rip + u64::from(length));
        prop_assert_eq!(done.single_step, tf && !btf);
        let report = env.check();
        prop_assert_eq!(report.outcome(), Outcome::Success, "{:?}", report.violations().collect::<Vec<_>>());
    }
}
