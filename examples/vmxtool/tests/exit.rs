//! `vmxtool exit`: decoding raw exit values from the command line, as text and as JSON.

use std::process::{Command, Output};

fn vmxtool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmxtool"))
        .arg("exit")
        .args(args)
        .output()
        .expect("vmxtool runs")
}

fn stdout(args: &[&str]) -> String {
    let output = vmxtool(args);
    assert!(
        output.status.success(),
        "vmxtool exit {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&stdout(&all)).expect("valid JSON")
}

#[test]
fn out_dx_al_to_com1_as_text() {
    assert_eq!(
        stdout(&["30", "0x3f80000", "--length", "1"]),
        "exit reason: I/O instruction (30)\n\
         exit:        I/O instruction: OUT DX, AL, port 0x3f8, 1 byte, instruction length 1 byte\n"
    );
}

#[test]
fn out_dx_al_to_com1_as_json() {
    let value = json(&["30", "66584576", "--length", "1"]);
    assert_eq!(value["reason"]["basic"], "IoInstruction");
    let io = &value["exit"]["IoInstruction"];
    assert_eq!(io["qualification"]["port"], 0x3f8);
    assert_eq!(io["qualification"]["direction"], "Out");
    assert_eq!(io["qualification"]["size"], "Byte");
    assert_eq!(io["qualification"]["operand_encoding"], "Dx");
    assert_eq!(io["string"], serde_json::Value::Null);
    assert_eq!(io["length"], 1);
    assert_eq!(value["reinjection"], serde_json::Value::Null);
}

#[test]
fn mov_cr0_and_lmsw() {
    let text = stdout(&["28", "0", "--length", "3"]);
    assert!(
        text.contains("Control-register accesses: MOV CR0, RAX"),
        "{text}"
    );
    let value = json(&["28", "0x10070", "--guest-linear", "0x8000"]);
    let cr = &value["exit"]["ControlRegisterAccess"];
    assert_eq!(cr["qualification"]["access_type"], "Lmsw");
    assert_eq!(cr["qualification"]["lmsw_operand"], "Memory");
    assert_eq!(cr["qualification"]["lmsw_source"], 1);
    assert_eq!(cr["guest_linear_address"], 0x8000);
}

#[test]
fn ept_violation_with_reinjection() {
    let args = [
        "48",
        "0x18a",
        "--guest-physical",
        "0xfee00000",
        "--guest-linear",
        "0x1000",
        "--idt-vectoring",
        "0x80000b0e",
        "--idt-error-code",
        "2",
    ];
    let text = stdout(&args);
    assert!(text.contains("access write; EPT permissions R"), "{text}");
    assert!(text.contains("re-inject:   inject hardware exception, vector 14 (#PF), error code 0x2 (VM-entry interruption information 0x80000b0e)"), "{text}");
    let value = json(&args);
    let ept = &value["exit"]["EptViolation"];
    assert_eq!(ept["qualification"]["write"], true);
    assert_eq!(ept["qualification"]["readable"], true);
    assert_eq!(ept["qualification"]["writable"], false);
    assert_eq!(ept["guest_physical"], 0xfee0_0000u64);
    assert_eq!(value["reinjection"]["vector"], 14);
    assert_eq!(value["reinjection"]["error_code"], 2);
}

#[test]
fn exception_with_interruption_info() {
    let text = stdout(&[
        "0",
        "0xdeadb000",
        "--interruption-info",
        "0x80000b0e",
        "--error-code",
        "6",
    ]);
    assert!(text.contains("vector 14 (#PF)"), "{text}");
    assert!(text.contains("linear address 0xdeadb000"), "{text}");
}

#[test]
fn instruction_information() {
    let value = json(&[
        "53",
        "0x10",
        "--instruction-info",
        "0x11198103",
        "--length",
        "4",
    ]);
    let info = &value["exit"]["Invvpid"]["info"];
    assert_eq!(info["register"], "Rcx");
    assert_eq!(info["memory"]["base"], "Rdx");
    assert_eq!(info["memory"]["index"], "Rsi");
    assert_eq!(info["memory"]["scale"], "X8");
}

#[test]
fn entry_failure_and_flags() {
    let text = stdout(&["0x80000021", "4"]);
    assert_eq!(
        text,
        "exit reason: VM-entry failure due to invalid guest state (33), VM-entry failure\n\
         exit:        VM-entry failure due to invalid guest state: invalid VMCS link pointer\n"
    );
    let value = json(&["0x8000002"]);
    assert_eq!(value["reason"]["basic"], "TripleFault");
    assert_eq!(value["reason"]["entry_failure"], false);
}

#[test]
fn unknown_reasons_decode() {
    let text = stdout(&["99"]);
    assert!(text.contains("undefined exit reason 99"), "{text}");
    assert_eq!(json(&["65535"])["exit"]["Unknown"]["reason"], 65535);
}

#[test]
fn unused_options_are_noted() {
    let output = vmxtool(&["10", "--instruction-info", "5"]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--instruction-info (VM-exit instruction information) is not used"),
        "{stderr}"
    );
}

#[test]
fn bad_numbers_are_errors() {
    for args in [
        &["zz"][..],
        &["0x1ffffffff"],
        &["30", "0xg"],
        &["0", "--interruption-info", "0x100000000"],
    ] {
        let output = vmxtool(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("cannot read") || stderr.contains("does not fit in 32 bits"),
            "{stderr}"
        );
    }
}
