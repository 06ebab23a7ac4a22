//! `vmxtool caps` run as a process on the bundled MSR dumps.

use std::process::{Command, Output};

use serde_json::Value;

fn testdata(model: &str) -> String {
    format!(
        "{}/../../vmx-caps/testdata/{model}.msr",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn vmxtool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmxtool"))
        .args(args)
        .output()
        .unwrap()
}

fn caps_json(model: &str) -> Value {
    let out = vmxtool(&["caps", "--msr-file", &testdata(model), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const FEATURES: [&str; 15] = [
    "ept",
    "vpid",
    "unrestricted_guest",
    "preemption_timer",
    "posted_interrupts",
    "monitor_trap_flag",
    "vmfunc",
    "vmcs_shadowing",
    "pml",
    "ept_2m_pages",
    "ept_1g_pages",
    "ept_accessed_dirty",
    "ept_5_level",
    "invept",
    "invvpid",
];

/// The features each model offers, in the order of `FEATURES`.
fn expected(model: &str) -> [bool; 15] {
    match model {
        "core2_penryn_t9600" => [false; 15],
        "corei5_lynnfield_750" => [
            true, true, false, true, false, false, false, false, false, true, false, false, false,
            true, true,
        ],
        "corei7_skylake_x" => [
            true, true, true, true, false, false, true, true, true, true, true, true, false, true,
            true,
        ],
        "corei5_arrandale_m520" | "corei7_sandy_bridge_2600k" | "corei7_ivy_bridge_3770k" => [
            true, true, true, true, false, false, false, false, false, true, false, false, false,
            true, true,
        ],
        // Haswell and Broadwell; Cannon Lake drops PML (and APIC-register virtualization).
        "corei7_haswell_4770" | "broadwell_ult" | "corei3_cnl" => [
            true, true, true, true, false, false, true, true, false, true, true, true, false, true,
            true,
        ],
        "corei7_icelake_u" | "tigerlake" => [
            true, true, true, true, false, true, true, true, true, true, true, true, false, true,
            true,
        ],
        _ => panic!("no expectations for {model}: add its row"),
    }
}

/// Every bundled dump (`vmx-caps/testdata/*.msr`), by model name, sorted.
fn all_models() -> Vec<String> {
    let dir = format!("{}/../../vmx-caps/testdata", env!("CARGO_MANIFEST_DIR"));
    let mut models: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".msr").map(str::to_owned))
        .collect();
    models.sort();
    models
}

#[test]
fn json_shape_and_features() {
    let models = all_models();
    assert_eq!(
        models.len(),
        11,
        "every Bochs 2.7 model with VMX: {models:?}"
    );
    for model in &models {
        let model = model.as_str();
        let v = caps_json(model);
        let revision = if matches!(model, "tigerlake" | "corei7_icelake_u") {
            4
        } else {
            0x2b
        };
        assert_eq!(v["revision_id"], revision, "{model}");
        assert_eq!(v["true_controls"], true);
        let controls = v["controls"].as_object().unwrap();
        let keys: Vec<_> = controls.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["entry", "exit", "exit2", "pin", "proc", "proc2", "proc3"]
        );
        for (name, pair) in controls {
            let a0 = pair["allowed0"].as_u64().unwrap();
            let a1 = pair["allowed1"].as_u64().unwrap();
            assert_eq!(a0 & !a1, 0, "{model} {name}");
        }
        // Effective values come from the TRUE MSRs; missing MSRs are zeros.
        assert_eq!(v["controls"]["pin"]["allowed0"], 0x16);
        assert_eq!(v["controls"]["proc"]["allowed0"], 0x0400_6172);
        assert_eq!(v["controls"]["proc3"]["allowed1"], 0);
        assert_eq!(v["controls"]["exit2"]["allowed1"], 0);
        let features: Vec<bool> = FEATURES
            .iter()
            .map(|f| v["features"][f].as_bool().unwrap())
            .collect();
        assert_eq!(features, expected(model), "{model}");
        // The full decoded capabilities ride along.
        assert_eq!(
            v["capabilities"]["proc2"]["allowed1"],
            v["controls"]["proc2"]["allowed1"]
        );
    }
    assert_eq!(
        caps_json("core2_penryn_t9600")["controls"]["proc2"]["allowed1"],
        0x41
    );
    assert_eq!(
        caps_json("tigerlake")["controls"]["exit"]["allowed1"],
        0x107f_ffff
    );
}

#[test]
fn text_report() {
    let out = vmxtool(&["caps", "--msr-file", &testdata("corei5_lynnfield_750")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Basic VMX information (IA32_VMX_BASIC): 0x00d810000000002b"));
    assert!(text.contains(&format!("    {:<48}{}\n", "unrestricted guest", "no")));
    assert!(text.contains(&format!("    {:<48}{}\n", "enable EPT", "yes")));
    assert!(text.contains("IA32_VMX_VMFUNC: not present"));
}

#[test]
fn malformed_snapshot_names_the_line() {
    let dir = std::env::temp_dir().join(format!("vmxtool-caps-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.msr");
    std::fs::write(&path, "# header\n0x3a 0x5\n0x480 not-hex\n").unwrap();
    let out = vmxtool(&["caps", "--msr-file", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("line 3: the MSR value is not a 64-bit hexadecimal number"),
        "{err}"
    );
}

#[test]
fn incomplete_snapshot_names_the_missing_msrs() {
    let dir = std::env::temp_dir().join(format!("vmxtool-caps-test2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("short.msr");
    std::fs::write(&path, "0x3a 0x5\n0x480 0x00d810000000002b\n").unwrap();
    let out = vmxtool(&["caps", "--msr-file", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    // IA32_VMX_BASIC is there: what it says is decoded, the rest reported missing.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(
            "MSRs not in the dump: IA32_VMX_PINBASED_CTLS (0x481) IA32_VMX_PROCBASED_CTLS (0x482)"
        ),
        "{first}"
    );
    assert!(!first.contains("IA32_FEATURE_CONTROL"), "{first}");
    assert!(text.contains("Basic VMX information (IA32_VMX_BASIC): 0x00d810000000002b"));
    assert!(text.contains("Primary processor-based VM-execution controls (IA32_VMX_TRUE_PROCBASED_CTLS: not in the dump)"), "{text}");
}

#[test]
fn cpu_without_vmx_is_refused() {
    if vmx_caps::cpu_has_vmx() {
        // On a VMX host the outcome depends on privileges and the msr module; only the no-VMX
        // path is deterministic.
        return;
    }
    let out = vmxtool(&["caps", "--cpu", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("does not support VMX: CPUID.1:ECX.VMX[bit 5] = 0"),
        "{err}"
    );
}
