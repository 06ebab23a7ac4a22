//! `vmxtool check` run as a process on snapshots of the checker tests' known-good VMCS.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use vmcs::VmcsSnapshot;

#[path = "../../../vmcs/tests/check_common/mod.rs"]
mod check_common;
use check_common::*;

fn caps_file() -> String {
    format!(
        "{}/../../vmx-caps/testdata/tigerlake.msr",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Writes `env`'s VMCS as a JSON snapshot into a file named after the test.
fn snapshot_file(env: &Env, name: &str) -> PathBuf {
    let snapshot = VmcsSnapshot::capture(&env.vmcs).unwrap();
    let path =
        std::env::temp_dir().join(format!("vmxtool-check-{}-{name}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&snapshot).unwrap()).unwrap();
    path
}

fn vmxtool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmxtool"))
        .args(args)
        .output()
        .unwrap()
}

fn check_json(env: &Env, name: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let path = snapshot_file(env, name);
    let caps = caps_file();
    let mut args = vec![
        "check",
        "--vmcs",
        path.to_str().unwrap(),
        "--caps",
        &caps,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = vmxtool(&args);
    std::fs::remove_file(&path).unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), json)
}

fn rules(json: &Value) -> Vec<&str> {
    json["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_str().unwrap())
        .collect()
}

#[test]
fn valid_vmcs_succeeds() {
    let (code, json) = check_json(&Env::tigerlake(), "valid", &[]);
    assert_eq!(code, Some(0));
    assert_eq!(json["outcome"], "success");
    assert_eq!(json["violations"].as_array().unwrap().len(), 0);
    assert!(json.get("vm_instruction_error").is_none());
    let (code, json) = check_json(&Env::tigerlake(), "resume", &["--vmresume"]);
    assert_eq!((code, &json["outcome"]), (Some(0), &Value::from("success")));
}

#[test]
fn host_state_error_is_vmfail_valid_8() {
    let mut env = Env::tigerlake();
    env.w(e!(HOST_CR0), 0x8005_0013); // NE clear
    env.w(e!(GUEST_TR_ACCESS_RIGHTS), 0x1_008b); // unusable TR: guest state too
    let (code, json) = check_json(&env, "host", &[]);
    assert_eq!(code, Some(2));
    assert_eq!(json["outcome"], "vmfail_valid");
    assert_eq!(json["vm_instruction_error"], 8);
    let found = rules(&json);
    assert!(found.contains(&"D1") && found.contains(&"H34"), "{found:?}");
    let d1 = &json["violations"][found.iter().position(|r| *r == "D1").unwrap()];
    assert_eq!(d1["fields"][0], "HOST_CR0");
    assert_eq!(d1["actual"], "0x80050013");
    assert_eq!(d1["outcome"]["vm_instruction_error"], 8);
}

#[test]
fn guest_state_error_is_exit_33() {
    let mut env = Env::tigerlake();
    env.w(e!(GUEST_RIP), 1 << 48);
    let (code, json) = check_json(&env, "guest", &[]);
    assert_eq!(code, Some(2));
    assert_eq!(json["outcome"], "entry_failure");
    assert_eq!(json["exit_reason"], 0x8000_0021u32);
    assert_eq!(json["exit_qualification"], 0);
    assert_eq!(rules(&json), ["J2"]);
    // With 5-level paging the same RIP is canonical.
    let (code, json) = check_json(&env, "guest57", &["--linear-width", "57"]);
    assert_eq!((code, &json["outcome"]), (Some(0), &Value::from("success")));
}

#[test]
fn memory_rules_are_listed_as_unchecked() {
    let mut env = Env::tigerlake();
    env.w(e!(VMCS_LINK_POINTER), LINK_VMCS);
    let (code, json) = check_json(&env, "link", &[]);
    assert_eq!(code, Some(0));
    let unchecked: Vec<&str> = json["unchecked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(unchecked, ["K23", "K24"]);
    let (_, json) = check_json(&env, "link-cur", &["--current-vmcs", "0x3000"]);
    assert_eq!(json["outcome"], "entry_failure");
    assert_eq!(json["exit_qualification"], 4);
    assert_eq!(rules(&json), ["K24"]);
}

#[test]
fn maxphyaddr_changes_the_address_checks() {
    let mut env = Env::tigerlake();
    env.w(e!(ADDRESS_OF_MSR_BITMAPS), 1 << 40);
    let (_, json) = check_json(&env, "phys39", &[]);
    assert_eq!(rules(&json), ["A10"]);
    assert_eq!(json["vm_instruction_error"], 7);
    let (code, _) = check_json(&env, "phys46", &["--maxphyaddr", "46"]);
    assert_eq!(code, Some(0));
}

#[test]
fn text_report_and_errors() {
    let mut env = Env::tigerlake();
    env.w(e!(VIRTUAL_PROCESSOR_IDENTIFIER), 0);
    let path = snapshot_file(&env, "text");
    let caps = caps_file();
    let out = vmxtool(&["check", "--vmcs", path.to_str().unwrap(), "--caps", &caps]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("predicted outcome: VMfailValid"), "{text}");
    assert!(
        text.contains("A27") && text.contains("VIRTUAL_PROCESSOR_IDENTIFIER"),
        "{text}"
    );

    // A snapshot without a field every VMCS has is an error, not a guess.
    let path =
        std::env::temp_dir().join(format!("vmxtool-check-{}-empty.json", std::process::id()));
    std::fs::write(&path, "{}").unwrap();
    let out = vmxtool(&["check", "--vmcs", path.to_str().unwrap(), "--caps", &caps]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing from the snapshot"));
}

#[test]
fn memory_images_enable_the_memory_rules() {
    let mut env = Env::tigerlake();
    env.w(e!(VMCS_LINK_POINTER), LINK_VMCS);
    env.w(e!(VM_ENTRY_MSR_LOAD_COUNT), 2);
    env.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA);
    let dir = std::env::temp_dir();
    let link = dir.join(format!("vmxtool-check-{}-link.bin", std::process::id()));
    let msrs = dir.join(format!("vmxtool-check-{}-msrs.bin", std::process::id()));
    std::fs::write(&link, 5u32.to_le_bytes()).unwrap(); // wrong revision id (tigerlake: 4)
    let mut area = Vec::new();
    for (index, value) in [(0x174u64, 0x10u64), (0xc000_0101, 0)] {
        area.extend_from_slice(&index.to_le_bytes());
        area.extend_from_slice(&value.to_le_bytes());
    }
    std::fs::write(&msrs, area).unwrap();
    let link_arg = format!("{LINK_VMCS:#x}={}", link.display());
    let msrs_arg = format!("{MSR_LOAD_AREA}={}", msrs.display());
    let (code, json) = check_json(
        &env,
        "memory",
        &[
            "--memory",
            &link_arg,
            "--memory",
            &msrs_arg,
            "--current-vmcs",
            "0x1000",
        ],
    );
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&msrs).unwrap();
    assert_eq!(code, Some(2));
    assert_eq!(rules(&json), ["K23", "M2"]);
    assert_eq!(json["exit_qualification"], 4);
    assert_eq!(
        json["violations"][1]["outcome"]["exit_reason"],
        0x8000_0022u32
    );
    assert_eq!(json["violations"][1]["outcome"]["exit_qualification"], 2);
    assert_eq!(json["unchecked"].as_array().unwrap().len(), 0);
}

/// Standard output full (`>/dev/full`): an error, not an abort; closed (`| head -1`): a quiet
/// end with the check's own status. Standard input stands in for the snapshot file.
#[test]
fn output_failures_are_reported_not_aborts() {
    let snapshot = VmcsSnapshot::capture(&Env::tigerlake().vmcs).unwrap();
    let json = serde_json::to_string(&snapshot).unwrap();
    let caps = caps_file();
    for extra in [&[][..], &["--json"][..]] {
        for full in [true, false] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_vmxtool"));
            command
                .args(["check", "--vmcs", "-", "--caps", &caps])
                .args(extra)
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            if full {
                command.stdout(
                    std::fs::File::options()
                        .write(true)
                        .open("/dev/full")
                        .unwrap(),
                );
            } else {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                command.stdout(writer);
            }
            let mut child = command.spawn().unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), json.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if full {
                assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
                assert!(err.contains("cannot write to standard output"), "{err}");
            } else {
                assert_eq!(out.status.code(), Some(0), "{extra:?}: {err}");
                assert_eq!(err, "");
            }
        }
    }
}
