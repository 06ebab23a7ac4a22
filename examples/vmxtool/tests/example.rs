//! `vmxtool caps --example` on every dump in the repository, against the verdicts written down in
//! `vmx-caps/testdata/example-verdicts.txt`.

use std::collections::BTreeMap;
use std::process::Command;

/// One dump's expected verdict.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    runs: bool,
    missing: Vec<String>,
    fallbacks: Vec<String>,
}

fn testdata() -> String {
    format!("{}/../../vmx-caps/testdata", env!("CARGO_MANIFEST_DIR"))
}

fn expectations() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(format!("{}/example-verdicts.txt", testdata())).unwrap();
    let mut all = BTreeMap::new();
    let mut current: Option<(String, Expected)> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            all.extend(current.take());
            current = Some((name.to_owned(), Expected::default()));
            continue;
        }
        let (_, expected) = current.as_mut().expect("a line before the first [dump]");
        if line == "runs" {
            expected.runs = true;
        } else if line == "does not run" {
            expected.runs = false;
        } else if let Some(name) = line.strip_prefix("missing ") {
            expected.missing.push(name.to_owned());
        } else if let Some(name) = line.strip_prefix("fallback ") {
            expected.fallbacks.push(name.to_owned());
        } else {
            panic!("unreadable line {line:?}");
        }
    }
    all.extend(current);
    all
}

/// Every `.msr` file under `testdata/` (one level of subdirectories), by path without `.msr`.
fn dumps() -> Vec<String> {
    let root = testdata();
    let mut found = Vec::new();
    for dir in ["", "nested/"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".msr") {
                found.push(format!("{dir}{stem}"));
            }
        }
    }
    found.sort();
    found
}

/// The name of a capability as the verdict prints it: a control's quoted SDM name, or the text
/// before its parenthesized MSR bit.
fn capability_name(text: &str) -> String {
    let described = text.split(": ").next().unwrap();
    match described.strip_prefix('"') {
        Some(rest) => rest.split('"').next().unwrap().to_owned(),
        None => described.split(" (").next().unwrap().to_owned(),
    }
}

#[test]
fn every_dump_has_the_verdict_written_beside_it() {
    let expected = expectations();
    let dumps = dumps();
    assert_eq!(
        dumps,
        expected.keys().cloned().collect::<Vec<_>>(),
        "every dump needs its verdict in example-verdicts.txt, and no other"
    );
    assert!(dumps.len() >= 12, "{dumps:?}");
    for dump in dumps {
        let path = format!("{}/{dump}.msr", testdata());
        let out = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
            .args(["caps", "--example", "--msr-file", &path])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut got = Expected::default();
        for line in text.lines() {
            if line.starts_with("the example runs here") {
                got.runs = true;
            } else if let Some(rest) = line.strip_prefix("  missing ") {
                got.missing.push(capability_name(rest));
            } else if let Some(rest) = line.strip_prefix("  fallback for ") {
                got.fallbacks.push(capability_name(rest));
            }
        }
        assert_eq!(&got, &expected[&dump], "{dump}:\n{text}");
        let code = if got.runs { 0 } else { 2 };
        assert_eq!(out.status.code(), Some(code), "{dump}");
    }
}

/// The verdict names every missing requirement, whatever is taken away: the Skylake-X dump with
/// unrestricted guest and EPT write-back removed from its MSRs, and the preemption timer together
/// with external-interrupt exiting, which its fallback needs.
#[test]
fn each_missing_requirement_is_named() {
    let text = std::fs::read_to_string(format!("{}/corei7_skylake_x.msr", testdata())).unwrap();
    let mut edited = String::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let value = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap();
        let edit = match fields.first().copied() {
            // Pin-based allowed-1 bits 6 and 0 (plain and TRUE MSRs).
            Some("0x481") | Some("0x48d") => Some(value(fields[1]) & !(0x41 << 32)),
            // Secondary allowed-1 bit 7, unrestricted guest.
            Some("0x48b") => Some(value(fields[1]) & !(1 << (32 + 7))),
            // EPT write-back, bit 14.
            Some("0x48c") => Some(value(fields[1]) & !(1 << 14)),
            _ => None,
        };
        match edit {
            Some(v) => edited.push_str(&format!("{} {v:#x}\n", fields[0])),
            None => edited.push_str(&format!("{line}\n")),
        }
    }
    let path = std::env::temp_dir().join(format!("vmxtool-example-{}.msr", std::process::id()));
    std::fs::write(&path, edited).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
        .args(["caps", "--example", "--msr-file", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let missing: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  missing "))
        .map(capability_name)
        .collect();
    assert_eq!(
        missing,
        [
            "unrestricted guest",
            "write-back EPT paging structures",
            "external-interrupt exiting"
        ],
        "{text}"
    );
}

/// `vmxtool caps --nested`: for every dump, the capability MSRs mini-hv (L0) would show a guest
/// hypervisor, as a dump `--msr-file` reads again; mini-hv runs as that L1 exactly where the
/// plain dump lets it run with the VMX-preemption timer (L0 passes that timer on and models no
/// local APIC), and the `--nested --example` verdict says so.
#[test]
fn the_nested_offer_reads_back_and_runs_mini_hv_where_it_has_a_timer() {
    let dir = std::env::temp_dir().join(format!("vmxtool-nested-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut runs_as_l1 = Vec::new();
    for dump in dumps() {
        let path = format!("{}/{dump}.msr", testdata());
        let out = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
            .args(["caps", "--nested", "--msr-file", &path])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{dump}");
        let offer = dir.join(format!("{}.msr", dump.replace('/', "_")));
        std::fs::write(&offer, &out.stdout).unwrap();
        let again = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
            .args(["caps", "--example", "--msr-file"])
            .arg(&offer)
            .output()
            .unwrap();
        let nested = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
            .args(["caps", "--nested", "--example", "--msr-file", &path])
            .output()
            .unwrap();
        let plain = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
            .args(["caps", "--example", "--msr-file", &path])
            .output()
            .unwrap();
        let plain_text = String::from_utf8(plain.stdout).unwrap();
        let has_timer = !plain_text.contains("fallback for \"activate VMX-preemption timer\"")
            && plain.status.code() == Some(0);
        let nested_text = String::from_utf8(nested.stdout).unwrap();
        if has_timer {
            // The offer (read back) lets mini-hv run, as the nested verdict says.
            assert_eq!(again.status.code(), Some(0), "{dump}: offer read back");
            assert_eq!(nested.status.code(), Some(0), "{dump}:\n{nested_text}");
            runs_as_l1.push(dump);
        } else {
            assert_eq!(nested.status.code(), Some(2), "{dump}:\n{nested_text}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // The two Bochs models L0 runs the demonstration on are among them.
    for model in ["tigerlake", "corei7_skylake_x"] {
        assert!(runs_as_l1.iter().any(|d| d == model), "{runs_as_l1:?}");
    }
}
