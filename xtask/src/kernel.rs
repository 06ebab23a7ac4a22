//! Building the `mini-hv` kernel and the slim GRUB ISO that boots it under Bochs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel's target: stable Rust has no freestanding x86_64 target, so the kernel is a `#![no_std]`
/// `#![no_main]` binary for the linux-gnu target with its own linker script (see `examples/mini-hv/build.rs`).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Codegen flags for the kernel. With `--target`, `RUSTFLAGS` does not reach build scripts or proc macros.
pub const KERNEL_RUSTFLAGS: &str =
    "-C relocation-model=static -C code-model=small -C no-redzone=y -C force-unwind-tables=no";

/// GRUB modules the ISO needs (everything else is left out: a 0.8 MB ISO that Bochs boots faster).
const GRUB_MODULES: &str = "multiboot normal configfile iso9660 biosdisk";

/// The soft-float target: the kernel's code uses no x87/SSE registers, so `vmx-core`'s trampoline
/// switches no x87/SSE state (`vmx_core::FPU_SWITCH` is `None`) and the guest's stays in the
/// registers. `cargo xtask run --soft-float` builds for it; `cargo xtask test` runs it once.
pub const SOFT_FLOAT_TARGET: &str = "x86_64-unknown-none";

/// Builds the kernel in release mode for [`TARGET`]; returns the ELF's path.
pub fn build() -> Result<PathBuf, String> {
    build_for(TARGET)
}

/// Builds the kernel in release mode for `target` ([`TARGET`] or [`SOFT_FLOAT_TARGET`], added
/// with `rustup target add` when missing); returns the ELF's path.
pub fn build_for(target: &str) -> Result<PathBuf, String> {
    if target != TARGET {
        crate::targets::ensure_installed(&[target])?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = ["build", "-p", "mini-hv", "--release", "--target", target];
    eprintln!(
        "xtask: RUSTFLAGS=\"{KERNEL_RUSTFLAGS}\" cargo {}",
        args.join(" ")
    );
    let status = Command::new(&cargo)
        .args(args)
        .env("RUSTFLAGS", KERNEL_RUSTFLAGS)
        // An outer RUSTFLAGS-like variable would silently win over ours.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(crate::workspace_root())
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the kernel failed ({status})"));
    }
    let elf = crate::target_dir()
        .join(target)
        .join("release")
        .join("mini-hv");
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!(
            "the build succeeded but {} is missing",
            elf.display()
        ))
    }
}

/// mini-hv's command line for a machine of `cpus` processors: `cmdline`, plus `cpus=N` when there
/// is more than one (mini-hv then starts that many: the application processors through
/// INIT-SIPI-SIPI).
pub fn with_cpus(cmdline: &str, cpus: u32) -> String {
    match cpus {
        0 | 1 => cmdline.to_string(),
        n if cmdline.is_empty() => format!("cpus={n}"),
        n => format!("{cmdline} cpus={n}"),
    }
}

/// The first word of a boot module's arguments when mini-hv (L0) is to run that module, a second
/// copy of its own ELF, as its guest hypervisor L1 (issue 16; L0 does so under `mini-hv.nested=`).
/// The words after it are L1's own kernel command line. The module's Multiboot command line is
/// these arguments alone under GRUB 2 (its `module` command leaves the path out: mini-hv's banner
/// shows `... (4623 KiB) l1`), and the path followed by them under QEMU's `-initrd`.
pub const L1_MODULE_WORD: &str = "l1";

/// The name on the GRUB ISO (under `/boot/`) of the kernel's own ELF booted as L1's module (the
/// kernel itself is `/boot/mini-hv`).
pub const L1_MODULE_NAME: &str = "mini-hv-l1";

/// The machine's RAM in MiB when L0 runs L1 (of which L0 gives L1 64 MiB): the default of
/// `cargo xtask run --nested` and of the test cases that boot L1.
pub const L1_MACHINE_MEMORY_MIB: u32 = 256;

/// The arguments after the path of L1's module: [`L1_MODULE_WORD`], then `l1_cmdline` (L1's
/// kernel command line) when there is one.
pub fn l1_module_args(l1_cmdline: &str) -> String {
    let l1_cmdline = l1_cmdline.trim();
    if l1_cmdline.is_empty() {
        L1_MODULE_WORD.to_string()
    } else {
        format!("{L1_MODULE_WORD} {l1_cmdline}")
    }
}

/// A Multiboot module for GRUB's `module` command.
pub struct IsoModule<'a> {
    /// The file to put on the ISO.
    pub file: &'a Path,
    /// Its name on the ISO (under `/boot/`).
    pub name: &'a str,
    /// The module's command line after its path.
    pub args: &'a str,
}

/// Writes `<dir>/mini-hv.iso`: GRUB (BIOS) loading `kernel` with `cmdline` through `multiboot`, plus
/// `modules`. Returns the ISO's path.
pub fn make_iso(
    dir: &Path,
    kernel: &Path,
    cmdline: &str,
    modules: &[IsoModule<'_>],
) -> Result<PathBuf, String> {
    let mut files = vec![(kernel, "mini-hv")];
    let mut entry = format!("  multiboot /boot/mini-hv {cmdline}\n");
    for m in modules {
        files.push((m.file, m.name));
        entry += &format!("  module /boot/{} {}\n", m.name, m.args);
    }
    make_grub_iso(dir, "mini-hv.iso", &files, &entry, &[])
}

/// Writes `<dir>/<name>`: a BIOS GRUB ISO with `files` (source, name under `/boot/`) and one menu entry whose
/// body is `entry`, booted at once. `extra_modules` are GRUB modules beyond the multiboot set (e.g. `linux`).
pub fn make_grub_iso(
    dir: &Path,
    name: &str,
    files: &[(&Path, &str)],
    entry: &str,
    extra_modules: &[&str],
) -> Result<PathBuf, String> {
    // A second file of the same name would be copied over the first: a hard link of the source, so
    // the copy would truncate the source itself.
    for (i, (_, file_name)) in files.iter().enumerate() {
        if files[..i].iter().any(|(_, earlier)| earlier == file_name) {
            return Err(format!(
                "{name}: two files named /boot/{file_name} on the ISO"
            ));
        }
    }
    let root = dir.join(format!("{name}-root"));
    let boot = root.join("boot");
    let grub = boot.join("grub");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| format!("cannot clear {}: {e}", root.display()))?;
    }
    std::fs::create_dir_all(&grub).map_err(|e| format!("cannot create {}: {e}", grub.display()))?;
    for (file, name) in files {
        place(file, &boot.join(name))?;
    }
    let cfg = format!("set timeout=0\nset default=0\nmenuentry \"boot\" {{\n{entry}  boot\n}}\n");
    std::fs::write(grub.join("grub.cfg"), cfg)
        .map_err(|e| format!("cannot write grub.cfg: {e}"))?;

    let iso = dir.join(name);
    let mut modules = GRUB_MODULES.to_string();
    for m in extra_modules {
        modules += " ";
        modules += m;
    }
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(format!("--install-modules={modules}"))
        .args(["--fonts=", "--locales=", "--themes="])
        .arg(&root)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(iso)
}

/// Hard-links `from` to `to` (big Linux images), copying when linking is impossible.
fn place(from: &Path, to: &Path) -> Result<(), String> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_module_args_start_with_the_l1_word() {
        assert_eq!(l1_module_args(""), "l1");
        assert_eq!(l1_module_args("  "), "l1");
        assert_eq!(
            l1_module_args("mini-hv.mask-caps=hyperv fault=ud"),
            "l1 mini-hv.mask-caps=hyperv fault=ud"
        );
        // As mini-hv reads a module's command line from QEMU: the word right after the path.
        let line = format!("/boot/{L1_MODULE_NAME} {}", l1_module_args("x=1"));
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        assert_eq!(words, ["/boot/mini-hv-l1", "l1", "x=1"]);
    }
}
