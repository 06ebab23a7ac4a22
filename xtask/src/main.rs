//! `cargo xtask`: the workspace's runner.
//!
//! - `cargo xtask run [--platform bochs|qemu] [--model NAME] [--cmdline ARGS] [--timeout SECS]`: builds the
//!   example hypervisor `mini-hv`, boots it (QEMU with KVM when the host can give the guest VMX, else Bochs
//!   `tigerlake`), streams its serial console and ends with its result.
//! - `cargo xtask test`: fmt, clippy, every test and doctest, docs, then the example on the Bochs/QEMU matrix.
//!
//! Missing Debian packages are installed with `apt-get` when running as root; otherwise the exact command is
//! printed and the run stops.

mod args;
mod deps;
mod emu;
mod entry_diff;
mod kernel;
mod linux;
mod proc;
mod targets;
mod test;

use emu::{Platform, RunSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const USAGE: &str = "usage:
  cargo xtask run [--platform bochs|qemu] [--model NAME] [--cmdline ARGS] [--memory MIB] [--cpus N]
      [--timeout SECS] [--mask-caps hyperv] [--nested [--l1-cmdline ARGS]] [--soft-float]
      Build and run the example hypervisor. Default platform: QEMU with KVM when /dev/kvm works, the host
      CPU has VMX and kvm_intel allows nesting; else Bochs. --model is the Bochs CPU model (default
      tigerlake) or QEMU's -cpu model. --cmdline is the kernel command line (e.g. fault=pf).
      --memory is the machine's RAM in MiB (default 128, 256 with --nested). --cpus is the number
      of logical processors (default 1, at most 8; Bochs `cpu: count=N`, QEMU -smp N): mini-hv
      starts the others itself and enters VMX operation on each. --mask-caps hyperv restricts the
      capabilities mini-hv negotiates with to those Hyper-V offers a nested guest
      (mini-hv.mask-caps=hyperv). --nested boots a second copy of mini-hv (the same ELF, as a
      Multiboot module tagged `l1`) as the guest hypervisor L1, to which mini-hv (L0) offers VMX
      (mini-hv.nested=1); L1 runs its own test guest as L2 through L0's emulation of VMX, and L0
      forwards L1's serial lines prefixed `L1: `. L0 uses VMCS shadowing for L1 where the CPU has
      it (--nested --cmdline mini-hv.nested=noshadow: without). --l1-cmdline is L1's own kernel
      command line (e.g. mini-hv.defect=control). --soft-float builds the kernel for
      x86_64-unknown-none (no SSE in its code), whose trampoline switches no x87/SSE state.
      Exit status: 0 PASS, 2 UNSUPPORTED, 1 FAIL or no result.
  cargo xtask test [--examples-only]
      fmt, clippy, tests, docs, then the example under Bochs (tigerlake, corei7_skylake_x, tigerlake
      masked to the Hyper-V profile, corei5_lynnfield_750, core2_penryn_t9600) and QEMU TCG (with and
      without injected host faults), then the Linux guest under Bochs (corei7_skylake_x, unmasked and
      masked to the Hyper-V profile) and its bad inputs.
      --examples-only skips the host checks.
  cargo xtask fetch-linux
      Download Debian's cloud kernel and busybox-static (apt-get download, cached in target/linux-cache)
      and build the initramfs.
  cargo xtask run --guest linux [--platform bochs|qemu] [--model NAME] [--cpus N] [--timeout SECS]
      [--mask-caps hyperv] [--bad-inputs]
      Boot that kernel as mini-hv's guest: QEMU with KVM (-cpu host, 512 MiB, the kernel and initramfs as
      Multiboot modules) when the host gives nested VMX, else Bochs (default corei7_skylake_x, 256 MiB, a
      GRUB ISO). --platform qemu without KVM ends in UNSUPPORTED (TCG has no VMX). --mask-caps hyperv:
      as for the test guest. --bad-inputs (Bochs): bad kernels, initramfs and memory sizes, each must end
      in a clear RESULT FAIL. --cpus 2 (Bochs): the guest starts CPU 1's vCPU with its own
      INIT-SIPI-SIPI.
  cargo xtask linux-baseline [--model NAME] [--cpus N] [--timeout SECS]
      Boot that kernel under plain Bochs (no hypervisor; default corei7_skylake_x) and time the end marker.
  cargo xtask entry-diff [--cases N] [--seed S] [--model M] [--timeout SECS] [--cmdline ARGS]
      Differential test of the software VM-entry checker against Bochs (default 1000 cases, seed 1,
      tigerlake): prints each disagreement, `entry-diff: N cases, A agree, D disagree, E excused` and
      the time per case; fails unless D = 0.";

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the current directory, as cargo reads it) or
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()
                    .map(|cwd| cwd.join(&dir))
                    .unwrap_or(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Runs `cargo` with `args` (and extra environment) in the workspace root; an error names the failed command.
pub fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown: String = env.iter().map(|(k, v)| format!("{k}=\"{v}\" ")).collect();
    eprintln!("xtask: {shown}cargo {}", args.join(" "));
    let start = std::time::Instant::now();
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if status.success() {
        eprintln!(
            "xtask: `cargo {}` done in {:.1} s",
            args[0],
            start.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!(
            "`{shown}cargo {}` failed ({status})",
            args.join(" ")
        ))
    }
}

/// Options of `cargo xtask run`.
#[derive(Debug, Default, PartialEq)]
struct RunOptions {
    platform: Option<String>,
    model: Option<String>,
    cmdline: String,
    timeout_secs: Option<u64>,
    memory_mib: Option<u32>,
    cpus: u32,
    /// Build the kernel for the soft-float target ([`kernel::SOFT_FLOAT_TARGET`]).
    soft_float: bool,
    /// Boot the kernel's own ELF as the guest hypervisor L1 too (`--nested`): a Multiboot module
    /// whose arguments are [`kernel::l1_module_args`].
    nested: bool,
    /// L1's own kernel command line (`--l1-cmdline`).
    l1_cmdline: String,
}

impl RunOptions {
    /// The machine's RAM in MiB: `--memory`, else 128, or [`kernel::L1_MACHINE_MEMORY_MIB`] with
    /// `--nested` (L0 gives L1 part of it).
    fn machine_memory_mib(&self) -> u32 {
        self.memory_mib.unwrap_or(if self.nested {
            kernel::L1_MACHINE_MEMORY_MIB
        } else {
            128
        })
    }
}

/// The capability profiles mini-hv knows (`mini_hv_logic::profiles::PROFILES`).
const MASK_PROFILES: [&str; 1] = ["hyperv"];

/// `name` if it is one of [`MASK_PROFILES`] (the value of `--mask-caps`).
fn mask_profile(name: String) -> Result<String, String> {
    if MASK_PROFILES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "--mask-caps {name}: unknown profile (known: {})",
            MASK_PROFILES.join(", ")
        ))
    }
}

fn parse_run_options(args: &[String]) -> Result<RunOptions, String> {
    let mut options = RunOptions {
        cpus: 1,
        ..RunOptions::default()
    };
    let mut mask = None;
    let mut args = args::Options::new(args);
    while let Some(flag) = args.next_flag() {
        match flag {
            "--platform" => options.platform = Some(args.platform()?),
            "--model" => options.model = Some(args.value()?),
            "--cmdline" => options.cmdline = args.value()?,
            "--memory" => {
                let mib: u32 = args.number("MiB")?;
                if !(32..=3072).contains(&mib) {
                    return Err(format!(
                        "--memory {mib}: between 32 and 3072 MiB (the kernel maps the first 4 GiB)"
                    ));
                }
                options.memory_mib = Some(mib);
            }
            "--timeout" => options.timeout_secs = Some(args.number("seconds")?),
            "--cpus" => options.cpus = args.cpus()?,
            "--mask-caps" => mask = Some(mask_profile(args.value()?)?),
            "--nested" => options.nested = true,
            "--l1-cmdline" => options.l1_cmdline = args.value()?,
            "--soft-float" if !args.has_inline_value() => options.soft_float = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if options.nested && options.cpus > 1 {
        return Err("--nested runs L0 and L1 on one processor: leave out --cpus".into());
    }
    if !options.l1_cmdline.is_empty() && !options.nested {
        return Err("--l1-cmdline is L1's command line: it needs --nested".into());
    }
    // `--nested` with `--cmdline mini-hv.nested=noshadow` keeps the user's word.
    let has_nested_word = options
        .cmdline
        .split_ascii_whitespace()
        .any(|word| word.starts_with("mini-hv.nested="));
    let words = mask
        .map(|name| format!("mini-hv.mask-caps={name}"))
        .into_iter()
        .chain((options.nested && !has_nested_word).then(|| "mini-hv.nested=1".to_string()));
    for word in words {
        options.cmdline = if options.cmdline.is_empty() {
            word
        } else {
            format!("{} {word}", options.cmdline)
        };
    }
    Ok(options)
}

/// `cargo xtask run`: returns the process exit code.
fn run(args: &[String]) -> Result<ExitCode, String> {
    let options = parse_run_options(args)?;
    let platform = match emu::choose_qemu_kvm(options.platform.as_deref()) {
        Some(kvm) => Platform::Qemu {
            kvm,
            cpu: options.model.clone(),
        },
        None => Platform::Bochs {
            model: options
                .model
                .clone()
                .unwrap_or(emu::DEFAULT_BOCHS_MODEL.into()),
        },
    };
    let requirements: Vec<&deps::Requirement> = match platform {
        Platform::Bochs { .. } => deps::BOCHS.iter().collect(),
        Platform::Qemu { .. } => deps::QEMU.iter().collect(),
    };
    deps::ensure(&requirements)?;

    let elf = if options.soft_float {
        kernel::build_for(kernel::SOFT_FLOAT_TARGET)?
    } else {
        kernel::build()?
    };
    let dir = target_dir().join("mini-hv").join("run");
    let cmdline = kernel::with_cpus(&options.cmdline, options.cpus);
    // `--nested`: the same ELF again, as L1, with its own command line.
    let l1_args = options
        .nested
        .then(|| kernel::l1_module_args(&options.l1_cmdline));
    let iso = match platform {
        Platform::Bochs { .. } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let modules: Vec<kernel::IsoModule<'_>> = l1_args
                .iter()
                .map(|args| kernel::IsoModule {
                    file: &elf,
                    name: kernel::L1_MODULE_NAME,
                    args,
                })
                .collect();
            Some(kernel::make_iso(&dir, &elf, &cmdline, &modules)?)
        }
        Platform::Qemu { .. } => None,
    };
    let qemu_modules: Vec<(PathBuf, String)> = match platform {
        Platform::Qemu { .. } => l1_args.iter().map(|a| (elf.clone(), a.clone())).collect(),
        Platform::Bochs { .. } => Vec::new(),
    };
    let spec = RunSpec {
        platform: platform.clone(),
        dir: dir.join("files"),
        kernel: &elf,
        iso: iso.as_deref(),
        cmdline: &cmdline,
        qemu_modules: &qemu_modules,
        memory_mib: options.machine_memory_mib(),
        cpus: options.cpus,
        bochs_ips: 4_000_000,
        bochs_ignore_bad_msrs: false,
        timeout: Duration::from_secs(options.timeout_secs.unwrap_or(300)),
        echo: true,
        markers: &[],
    };
    eprintln!("xtask: running on {platform}; serial console follows");
    let report = emu::run(&spec)?;
    if !report.serial.is_empty() && !report.serial.ends_with('\n') {
        println!();
    }
    emu::run_exit_code(
        &report,
        "the example",
        "`cargo xtask run --platform bochs` runs the hypervisor under Bochs",
        || {
            eprintln!("xtask: RESULT PASS: every guest check passed");
            Ok(())
        },
    )
}

/// `" why"`, or nothing when `why` is empty.
pub fn with_space(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(" {why}")
    }
}

fn main() -> ExitCode {
    proc::install_signal_handlers();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") if args.len() == 1 => test::run_all().map(|()| ExitCode::SUCCESS),
        Some("test") if args[1..] == ["--examples-only"] => {
            test::run_cases(test::CASES).map(|()| ExitCode::SUCCESS)
        }
        Some("run")
            if args
                .iter()
                .any(|a| a == "--guest" || a.starts_with("--guest=")) =>
        {
            linux::run_command(&args[1..])
        }
        Some("run") => run(&args[1..]),
        Some("fetch-linux") if args.len() == 1 => {
            linux::fetch_command().map(|()| ExitCode::SUCCESS)
        }
        Some("linux-baseline") => linux::baseline_command(&args[1..]).map(|()| ExitCode::SUCCESS),
        Some("entry-diff") => entry_diff::command(&args[1..]),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use args::owned as args;

    #[test]
    fn run_options_parse() {
        let o = parse_run_options(&args(&[
            "--platform",
            "qemu",
            "--model=Skylake-Server",
            "--timeout",
            "9",
        ]))
        .unwrap();
        assert_eq!(
            o,
            RunOptions {
                platform: Some("qemu".into()),
                model: Some("Skylake-Server".into()),
                cmdline: String::new(),
                timeout_secs: Some(9),
                memory_mib: None,
                cpus: 1,
                soft_float: false,
                nested: false,
                l1_cmdline: String::new(),
            }
        );
        assert!(
            parse_run_options(&args(&["--soft-float"]))
                .unwrap()
                .soft_float
        );
        assert!(parse_run_options(&args(&["--soft-float=yes"])).is_err());
        assert_eq!(
            parse_run_options(&args(&["--cmdline", "fault=pf"]))
                .unwrap()
                .cmdline,
            "fault=pf"
        );
        assert!(parse_run_options(&args(&["--platform", "vbox"])).is_err());
        assert!(parse_run_options(&args(&["--model"])).is_err());
        assert!(parse_run_options(&args(&["--timeout", "soon"])).is_err());
        assert!(parse_run_options(&args(&["--frobnicate"])).is_err());
        assert_eq!(
            parse_run_options(&args(&["--mask-caps", "hyperv", "--cmdline", "fault=ud"]))
                .unwrap()
                .cmdline,
            "fault=ud mini-hv.mask-caps=hyperv"
        );
        assert!(parse_run_options(&args(&["--mask-caps", "vmware"])).is_err());
        let nested = parse_run_options(&args(&["--nested", "--mask-caps", "hyperv"])).unwrap();
        assert_eq!(nested.cmdline, "mini-hv.mask-caps=hyperv mini-hv.nested=1");
        assert!(nested.nested);
        // The user's own mini-hv.nested= word stays the only one.
        let noshadow =
            parse_run_options(&args(&["--cmdline", "mini-hv.nested=noshadow", "--nested"]))
                .unwrap();
        assert_eq!(noshadow.cmdline, "mini-hv.nested=noshadow");
        assert!(noshadow.nested);
        assert_eq!(noshadow.machine_memory_mib(), 256);
        assert_eq!(
            parse_run_options(&args(&["--nested", "--memory", "512"]))
                .unwrap()
                .machine_memory_mib(),
            512
        );
        assert_eq!(
            parse_run_options(&args(&[])).unwrap().machine_memory_mib(),
            128
        );
        let l1 = parse_run_options(&args(&[
            "--nested",
            "--l1-cmdline",
            "mini-hv.defect=control",
        ]))
        .unwrap();
        assert_eq!(l1.l1_cmdline, "mini-hv.defect=control");
        assert_eq!(l1.cmdline, "mini-hv.nested=1");
        assert!(parse_run_options(&args(&["--l1-cmdline", "x=1"])).is_err());
        assert!(parse_run_options(&args(&["--nested", "--cpus", "2"])).is_err());
        // Without --nested no L1 module is booted, whatever the command line says.
        assert!(
            !parse_run_options(&args(&["--cmdline", "mini-hv.nested=1"]))
                .unwrap()
                .nested
        );
        assert_eq!(
            parse_run_options(&args(&["--memory=512"]))
                .unwrap()
                .memory_mib,
            Some(512)
        );
        assert!(parse_run_options(&args(&["--memory", "8192"])).is_err());
        let two = parse_run_options(&args(&["--cpus=2", "--cmdline", "fault=ud"])).unwrap();
        assert_eq!(two.cpus, 2);
        assert_eq!(kernel::with_cpus(&two.cmdline, two.cpus), "fault=ud cpus=2");
        let one = parse_run_options(&args(&[])).unwrap();
        assert_eq!(one.cpus, 1);
        assert_eq!(kernel::with_cpus(&one.cmdline, one.cpus), "");
        assert_eq!(kernel::with_cpus("", 3), "cpus=3");
        assert!(parse_run_options(&args(&["--cpus", "0"])).is_err());
        assert!(parse_run_options(&args(&["--cpus", "9"])).is_err());
    }
}
