//! The Debian packages the runner needs, found with `dpkg-query` and installed with `apt-get` when running as
//! root; otherwise the exact command is printed and the run stops.

use std::process::{Command, Stdio};

/// What a platform needs from the system.
pub struct Requirement {
    /// Debian package name.
    pub package: &'static str,
    /// A file the package provides that the runner uses (checked when `dpkg-query` is unavailable).
    pub provides: &'static str,
}

/// Bochs with the terminal display, its BIOS images, and the tools behind `grub-mkrescue`.
pub const BOCHS: &[Requirement] = &[
    Requirement {
        package: "bochs",
        provides: "/usr/bin/bochs",
    },
    // `display_library: term`: without it Bochs has only its X/wx (needs a display) and VNC displays.
    Requirement {
        package: "bochs-term",
        provides: "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so",
    },
    Requirement {
        package: "bochsbios",
        provides: "/usr/share/bochs/BIOS-bochs-latest",
    },
    Requirement {
        package: "vgabios",
        provides: "/usr/share/vgabios/vgabios.bin",
    },
    Requirement {
        package: "grub-pc-bin",
        provides: "/usr/lib/grub/i386-pc/multiboot.mod",
    },
    Requirement {
        package: "xorriso",
        provides: "/usr/bin/xorriso",
    },
    Requirement {
        package: "mtools",
        provides: "/usr/bin/mformat",
    },
    // `script` (util-linux) gives Bochs' terminal display a pseudo-terminal; essential on Debian.
    Requirement {
        package: "bsdutils",
        provides: "/usr/bin/script",
    },
];

/// QEMU for x86_64.
pub const QEMU: &[Requirement] = &[Requirement {
    package: "qemu-system-x86",
    provides: "/usr/bin/qemu-system-x86_64",
}];

/// Whether `package` is installed, by `dpkg-query`; `None` when `dpkg-query` cannot run (not Debian).
fn dpkg_installed(package: &str) -> Option<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    // "ii " = desired install, status installed, no error. Unknown packages make dpkg-query fail.
    Some(out.status.success() && out.stdout.starts_with(b"ii"))
}

fn missing(requirements: &[&Requirement]) -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = Vec::new();
    for r in requirements {
        let installed = match dpkg_installed(r.package) {
            Some(installed) => installed,
            None => std::path::Path::new(r.provides).exists(),
        };
        if !installed && !missing.contains(&r.package) {
            missing.push(r.package);
        }
    }
    missing
}

/// Whether this process runs as root (effective UID 0, from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    eprintln!("xtask: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`apt-get {}` failed ({status})", args.join(" ")))
    }
}

/// The `apt-get` arguments that install `missing` when running as root; otherwise the error telling the user
/// the exact command.
fn install_args<'a>(missing: &[&'a str], root: bool) -> Result<Vec<&'a str>, String> {
    let list = missing.join(" ");
    if !root {
        return Err(format!(
            "missing Debian packages: {list}\n  install them with:\n    sudo apt-get install -y --no-install-recommends {list}"
        ));
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    Ok(args)
}

/// Makes sure every package of `requirements` is installed: installs the missing ones when running as root
/// (running `apt-get update` and retrying once if the first install fails), else returns an error that
/// gives the exact command to run.
pub fn ensure(requirements: &[&Requirement]) -> Result<(), String> {
    let missing = missing(requirements);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let args = install_args(&missing, is_root())?;
    eprintln!("xtask: installing missing Debian packages: {list}");
    if apt_get(&args).is_err() {
        // A fresh machine's package lists may be missing or stale.
        apt_get(&["update"])?;
        apt_get(&args)?;
    }
    let still = self::missing(requirements);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "apt-get ran, but these packages are still missing: {}",
            still.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_gets_the_exact_command() {
        let e = install_args(&["bochs", "bochs-term"], false).unwrap_err();
        assert!(
            e.contains("sudo apt-get install -y --no-install-recommends bochs bochs-term"),
            "{e}"
        );
    }

    #[test]
    fn root_installs_noninteractively() {
        let args = install_args(&["xorriso"], true).unwrap();
        assert_eq!(
            args,
            ["install", "-y", "--no-install-recommends", "xorriso"]
        );
    }

    #[test]
    fn installed_essential_package_is_not_missing() {
        // bsdutils is Essential on Debian; a machine without dpkg falls back to the file check.
        let bsdutils = BOCHS.iter().find(|r| r.package == "bsdutils").unwrap();
        assert!(missing(&[bsdutils]).is_empty());
        let absent = Requirement {
            package: "xtask-no-such-package",
            provides: "/nonexistent/xtask",
        };
        assert_eq!(missing(&[&absent]), ["xtask-no-such-package"]);
    }
}
