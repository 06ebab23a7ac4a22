//! `vmxtool` run as a process on hostile input and hostile output: a full or closed standard
//! output, unbounded or blocking files, malformed text, and numbers out of the one syntax.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmxtool"))
}

fn testdata(name: &str) -> String {
    format!(
        "{}/../../vmx-caps/testdata/{name}.msr",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmxtool-hostile-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every subcommand whose output does not need a VMCS snapshot, with arguments that succeed.
fn commands() -> Vec<Vec<String>> {
    let tiger = testdata("tigerlake");
    [
        vec!["caps", "--msr-file", &tiger],
        vec!["caps", "--msr-file", &tiger, "--json"],
        vec!["fields"],
        vec!["fields", "--json"],
        vec!["exit", "30", "0x1e0008"],
        vec!["exit", "30", "0x1e0008", "--json"],
        vec!["--help"],
        vec!["caps", "--help"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_owned).collect())
    .collect()
}

#[test]
fn full_standard_output_is_an_error_not_an_abort() {
    for args in commands() {
        let out = bin()
            .args(&args)
            .stdout(File::options().write(true).open("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("No space left on device"), "{args:?}: {err}");
    }
}

#[test]
fn closed_pipe_ends_quietly() {
    for args in commands() {
        // The reading end is closed before the child starts, so every write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin()
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

fn caps_file(path: &Path) -> Output {
    bin()
        .args(["caps", "--msr-file", path.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn only_regular_files_and_standard_input_are_read() {
    let dir = scratch("kinds");
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (path, kind) in [
        (Path::new("/dev/zero"), "a character device"),
        (Path::new("/dev/urandom"), "a character device"),
        (fifo.as_path(), "a FIFO"),
        (dir.as_path(), "a directory"),
    ] {
        let out = caps_file(path);
        assert_eq!(out.status.code(), Some(1), "{path:?}");
        assert!(
            stderr(&out).contains(&format!("not a regular file ({kind})")),
            "{path:?}: {}",
            stderr(&out)
        );
    }
    // A regular file larger than the bound.
    let big = dir.join("big.msr");
    File::create(&big).unwrap().set_len(5 << 20).unwrap();
    let out = caps_file(&big);
    assert!(
        stderr(&out).contains("larger than 4 MiB"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Standard input: read, and bounded too (`< /dev/zero`).
    let out = bin()
        .args(["caps", "--msr-file", "-"])
        .stdin(File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("standard input: larger than 4 MiB"),
        "{}",
        stderr(&out)
    );
    let out = bin()
        .args(["caps", "--msr-file", "-"])
        .stdin(File::open(testdata("tigerlake")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revision identifier"));
}

/// `text` as an MSR-dump file, decoded by `vmxtool caps`.
fn caps_text(test: &str, text: &[u8]) -> Output {
    let dir = scratch(test);
    let path = dir.join("dump.msr");
    File::create(&path).unwrap().write_all(text).unwrap();
    let out = caps_file(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

#[test]
fn text_problems_are_located_or_accepted() {
    let tiger = std::fs::read_to_string(testdata("tigerlake")).unwrap();
    let lf = bin()
        .args(["caps", "--msr-file", &testdata("tigerlake")])
        .output()
        .unwrap();
    assert!(lf.status.success());

    // Non-UTF-8: line, column and byte offset of the bad byte.
    let mut bad = b"# dump\n0x3a 0x5 # caf".to_vec();
    bad.push(0xe9);
    bad.extend_from_slice(b"\n");
    let out = caps_text("utf8", &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not UTF-8 text: byte 0xe9 at line 2, column 15 (byte offset 21)"),
        "{}",
        stderr(&out)
    );

    // CR-only and CR LF line ends, and a byte-order mark: the same report as the LF file.
    for (name, text) in [
        ("cr", tiger.replace('\n', "\r")),
        ("crlf", tiger.replace('\n', "\r\n")),
        ("bom", format!("\u{feff}{tiger}")),
    ] {
        let out = caps_text(name, text.as_bytes());
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(out.stdout, lf.stdout, "{name}");
    }
    // Line numbers count CR-only lines.
    let out = caps_text("crline", b"# a\r# b\r0x480 zz\r");
    assert!(
        stderr(&out).contains("line 3: the MSR value is not a 64-bit hexadecimal number"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn one_number_syntax_everywhere() {
    let sign = "a sign (`+` or `-`) is not part of a number";
    // The MSR dump.
    let out = caps_text("sign", b"0x480 +0x1\n");
    assert!(stderr(&out).contains(sign), "{}", stderr(&out));
    // Command-line numbers of `exit` and `check`.
    for args in [
        vec!["exit", "+30"],
        vec!["exit", "30", "+0x1e0008"],
        vec!["exit", "30", "--length", "+2"],
        vec![
            "check",
            "--vmcs",
            "x.json",
            "--caps",
            "x.msr",
            "--current-vmcs",
            "+4096",
        ],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(sign), "{args:?}: {}", stderr(&out));
    }
    // Separators and both prefixes are accepted alike.
    let a = bin().args(["exit", "30", "0x1e_0008"]).output().unwrap();
    let b = bin().args(["exit", "30", "1966088"]).output().unwrap();
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn partial_dumps_decode_and_only_basic_is_indispensable() {
    // The Hyper-V profile: no IA32_FEATURE_CONTROL, no IA32_VMX_TRUE_ENTRY_CTLS.
    let hyperv = testdata("nested/hyperv_nested_raptorlake");
    let out = bin()
        .args(["caps", "--msr-file", &hyperv])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(
        "MSRs not in the dump: IA32_FEATURE_CONTROL (0x3a) IA32_VMX_TRUE_ENTRY_CTLS (0x490)\n"
    ));
    assert!(text.contains("Feature control (IA32_FEATURE_CONTROL): not in the dump\n"));

    // Tigerlake without its EPT/VPID capabilities and VM functions: those features unknown.
    let tiger = std::fs::read_to_string(testdata("tigerlake")).unwrap();
    let cut: String = tiger
        .lines()
        .filter(|l| !l.starts_with("0x48c ") && !l.starts_with("0x491 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = scratch("partial");
    let path = dir.join("cut.msr");
    std::fs::write(&path, &cut).unwrap();
    let out = bin()
        .args(["caps", "--json", "--msr-file", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["missing_msrs"],
        serde_json::json!([
            { "msr": 0x48c, "name": "IA32_VMX_EPT_VPID_CAP" },
            { "msr": 0x491, "name": "IA32_VMX_VMFUNC" },
        ])
    );
    assert_eq!(v["features"]["ept"], true);
    assert_eq!(v["features"]["invept"], serde_json::Value::Null);
    assert_eq!(v["features"]["ept_1g_pages"], serde_json::Value::Null);

    // Without IA32_VMX_BASIC nothing can be decoded: refused, naming it.
    let no_basic: String = tiger
        .lines()
        .filter(|l| !l.starts_with("0x480 "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, &no_basic).unwrap();
    let out = caps_file(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("reading IA32_VMX_BASIC (0x480): MSR 0x480 is not in the source"),
        "{}",
        stderr(&out)
    );
}
