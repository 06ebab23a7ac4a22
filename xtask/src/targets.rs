//! The targets beyond the host that `cargo xtask test` builds the crates for: where hypervisors
//! built on them run (freestanding and UEFI), and a host of another architecture for the parts a
//! tool needs (decoding a capability dump or a VMCS snapshot taken elsewhere is a normal use).

use std::process::Command;

/// The library crates.
const LIBRARIES: [&str; 6] = [
    "vmx-caps",
    "vmcs-fields",
    "vmx-core",
    "vmcs",
    "exits",
    "ept",
];

/// Targets the library crates are built and linted for: bare metal and UEFI.
pub const FIRMWARE_TARGETS: [&str; 2] = ["x86_64-unknown-none", "x86_64-unknown-uefi"];

/// A host of another architecture, where capability decoding from dumps, the field tables, the
/// software VMCS and its checker, the exit decoders, the EPT mapper and walker, and `vmxtool`
/// must build (checked without linking: no cross linker is needed).
pub const TOOL_TARGET: &str = "aarch64-unknown-linux-gnu";

/// Targets `rustup target list --installed` printed (one per line).
fn installed(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The targets of `wanted` that are not in `listing`.
fn missing<'a>(listing: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    let have = installed(listing);
    wanted
        .iter()
        .copied()
        .filter(|t| !have.contains(t))
        .collect()
}

/// Adds the targets of `wanted` that the toolchain lacks, with `rustup target add`.
pub fn ensure_installed(wanted: &[&str]) -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup (needed to add the targets {wanted:?}): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`rustup target list --installed` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let missing = missing(&listing, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: rustup target add {}", missing.join(" "));
    let status = Command::new("rustup")
        .args(["target", "add"])
        .args(&missing)
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {}` failed ({status})",
            missing.join(" ")
        ))
    }
}

/// `cargo <command> -p <each package> --target <target> <rest>`.
fn cargo_for(command: &str, packages: &[&str], target: &str, rest: &[&str]) -> Result<(), String> {
    let mut args = vec![command];
    for p in packages {
        args.extend(["-p", p]);
    }
    args.extend(["--target", target]);
    args.extend(rest);
    crate::cargo(&args, &[])
}

/// Builds and lints (clippy `-D warnings`) the library crates for [`FIRMWARE_TARGETS`],
/// builds them and checks `vmxtool` for [`TOOL_TARGET`], adding missing targets first.
pub fn check_all() -> Result<(), String> {
    let mut wanted = FIRMWARE_TARGETS.to_vec();
    wanted.push(TOOL_TARGET);
    ensure_installed(&wanted)?;
    for target in FIRMWARE_TARGETS {
        cargo_for("build", &LIBRARIES, target, &[])?;
        cargo_for("clippy", &LIBRARIES, target, &["--", "-D", "warnings"])?;
    }
    cargo_for("build", &LIBRARIES, TOOL_TARGET, &["--lib"])?;
    cargo_for("check", &["vmxtool"], TOOL_TARGET, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_targets_come_from_the_installed_list() {
        let listing = "x86_64-unknown-linux-gnu\nx86_64-unknown-none\n\n";
        assert_eq!(
            missing(
                listing,
                &["x86_64-unknown-none", "x86_64-unknown-uefi", TOOL_TARGET]
            ),
            ["x86_64-unknown-uefi", TOOL_TARGET]
        );
        assert!(missing(listing, &["x86_64-unknown-none"]).is_empty());
        // A target name that is a prefix of an installed one is still missing.
        assert_eq!(
            missing("x86_64-unknown-none-softfloat\n", &["x86_64-unknown-none"]),
            ["x86_64-unknown-none"]
        );
    }
}
