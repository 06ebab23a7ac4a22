//! `vmxtool fields` end to end: the binary's output against the `vmcs` field table and the SDM's
//! encoding rules.

use std::process::Command;

fn vmxtool(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_vmxtool"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn json_lists_every_field_with_its_metadata() {
    let out = vmxtool(&["fields", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), vmcs::fields::COUNT);
    for item in &list {
        let object = item.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["encoding", "name", "read_only", "type", "width"]);
        let encoding = item["encoding"].as_u64().unwrap();
        // Width and type straight from the encoding bits (SDM "VMCS Component Encoding").
        let width = match (encoding >> 13) & 3 {
            0 => serde_json::json!(16),
            1 => serde_json::json!(64),
            2 => serde_json::json!(32),
            _ => serde_json::json!("natural"),
        };
        assert_eq!(item["width"], width, "{item}");
        let ty = ["control", "exit_info", "guest", "host"][((encoding >> 10) & 3) as usize];
        assert_eq!(item["type"], ty, "{item}");
        assert_eq!(item["read_only"], ty == "exit_info", "{item}");
        assert!(
            item["name"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        );
    }
    let rip = list.iter().find(|i| i["name"] == "GUEST_RIP").unwrap();
    assert_eq!(rip["encoding"], 0x681e);
    assert_eq!(rip["width"], "natural");
    assert_eq!(rip["type"], "guest");
    assert_eq!(rip["read_only"], false);
    let reason = list.iter().find(|i| i["name"] == "EXIT_REASON").unwrap();
    assert_eq!(reason["encoding"], 0x4402);
    assert_eq!(reason["width"], 32);
    assert_eq!(reason["read_only"], true);
}

#[test]
fn table_names_every_field_once() {
    let out = vmxtool(&["fields"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"));
    assert_eq!(lines.len(), vmcs::fields::COUNT + 2);
    for info in &vmcs::fields::ALL {
        let matching: Vec<&&str> = lines
            .iter()
            .filter(|l| l.split_whitespace().next() == Some(info.name))
            .collect();
        assert_eq!(matching.len(), 1, "{}", info.name);
        assert!(matching[0].contains(info.sdm_name), "{}", matching[0]);
    }
    assert!(
        out.contains("0x2806/7"),
        "GUEST_IA32_EFER and its high half"
    );
}
