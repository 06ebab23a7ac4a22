//! Running the kernel under Bochs or QEMU and judging the run by its serial `RESULT` line and the emulator's
//! exit status.

use crate::proc::{self, Ending};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The Bochs CPU model used when none is given: the richest VMX model of Bochs 2.7.
pub const DEFAULT_BOCHS_MODEL: &str = "tigerlake";

/// Where and how to run.
#[derive(Debug, Clone)]
pub enum Platform {
    /// Bochs with a CPU model (`cpu: model=`), booting the GRUB ISO.
    Bochs {
        /// Bochs CPU model name, e.g. `tigerlake`.
        model: String,
    },
    /// QEMU booting the kernel with `-kernel`.
    Qemu {
        /// Hardware virtualization (`-enable-kvm`); the CPU model then defaults to `host`.
        kvm: bool,
        /// `-cpu` model; `None` means `host` with KVM and `max` without.
        cpu: Option<String>,
    },
}

impl Platform {
    fn is_qemu(&self) -> bool {
        matches!(self, Platform::Qemu { .. })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Platform::Bochs { model } => write!(f, "Bochs ({model})"),
            Platform::Qemu { kvm, cpu } => {
                let cpu = cpu.as_deref().unwrap_or(if *kvm { "host" } else { "max" });
                write!(f, "QEMU {} (-cpu {cpu})", if *kvm { "KVM" } else { "TCG" })
            }
        }
    }
}

/// The emulator of a run: `Some(kvm)` for QEMU (with KVM or not), `None` for Bochs. `Some("bochs")` is Bochs;
/// `Some("qemu")` is QEMU with KVM when [`kvm_for_vmx`] allows, else TCG (which ends in a clean no-VMX
/// UNSUPPORTED); no platform is QEMU with KVM when it can, else Bochs. Says on stderr why KVM is not used.
pub fn choose_qemu_kvm(platform: Option<&str>) -> Option<bool> {
    if platform == Some("bochs") {
        return None;
    }
    match kvm_for_vmx() {
        Ok(()) => Some(true),
        Err(why) if platform.is_some() => {
            eprintln!(
                "xtask: QEMU without KVM (TCG emulates no VMX: expect a clean UNSUPPORTED): {why}"
            );
            Some(false)
        }
        Err(why) => {
            eprintln!("xtask: using Bochs: {why}");
            None
        }
    }
}

/// Why KVM cannot be used for a VMX guest here, or `Ok` when it can: `/dev/kvm` opens read-write, the host
/// CPU has VMX (`vmx` in `/proc/cpuinfo`), and `kvm_intel` allows nested VMX.
pub fn kvm_for_vmx() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm is not usable ({e})"))?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("cannot read /proc/cpuinfo: {e}"))?;
    let has_vmx = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|flag| flag == "vmx"));
    if !has_vmx {
        return Err("the host CPU has no VMX (no `vmx` flag in /proc/cpuinfo)".into());
    }
    let nested =
        std::fs::read_to_string("/sys/module/kvm_intel/parameters/nested").unwrap_or_default();
    if !matches!(nested.trim(), "Y" | "1") {
        return Err("kvm_intel does not allow nested VMX (/sys/module/kvm_intel/parameters/nested is not Y; \
                    load it with `modprobe kvm_intel nested=1`)"
            .into());
    }
    Ok(())
}

/// The final verdict the kernel prints: `mini-hv: RESULT <KIND> [why]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// `RESULT PASS`.
    Pass,
    /// `RESULT FAIL`.
    Fail,
    /// `RESULT UNSUPPORTED`.
    Unsupported,
}

impl fmt::Display for ResultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResultKind::Pass => "PASS",
            ResultKind::Fail => "FAIL",
            ResultKind::Unsupported => "UNSUPPORTED",
        })
    }
}

/// The last `mini-hv: RESULT ...` line of `serial`, with the text after the kind. Only a line that
/// begins with `mini-hv: RESULT ` counts: a guest's or the guest hypervisor L1's line that mini-hv
/// forwards with a prefix (`L1: mini-hv: RESULT PASS`) is not the run's verdict.
pub fn result_line(serial: &str) -> Option<(ResultKind, String)> {
    serial.lines().rev().find_map(|line| {
        let rest = line
            .trim_end_matches('\r')
            .strip_prefix("mini-hv: RESULT ")?;
        let (word, why) = rest.split_once(' ').unwrap_or((rest, ""));
        let kind = match word {
            "PASS" => ResultKind::Pass,
            "FAIL" => ResultKind::Fail,
            "UNSUPPORTED" => ResultKind::Unsupported,
            _ => return None,
        };
        Some((kind, why.trim().to_string()))
    })
}

/// The result QEMU's exit status encodes: `isa-debug-exit` exits with `(v << 1) | 1` for the byte `v` the
/// kernel writes (0x10 pass, 0x11 fail, 0x12 unsupported; see `examples/mini-hv/src/exit.rs`).
fn qemu_status_result(code: i32) -> Option<ResultKind> {
    match code {
        33 => Some(ResultKind::Pass),
        35 => Some(ResultKind::Fail),
        37 => Some(ResultKind::Unsupported),
        _ => None,
    }
}

/// What the emulator's exit status means, in words.
fn explain_status(platform: &Platform, ending: Ending, log: &Path) -> String {
    let status = match ending {
        Ending::TimedOut => return "killed by xtask: the run timed out".into(),
        Ending::Interrupted => return "killed by xtask: interrupted".into(),
        Ending::Exited(status) => status,
    };
    let what = proc::describe_status(status);
    match (platform.is_qemu(), status.code()) {
        (true, Some(code)) => match qemu_status_result(code) {
            Some(kind) => format!("QEMU {what}: the kernel reported {kind} through isa-debug-exit"),
            None if code == 0 => format!(
                "QEMU {what}: the guest reset, shut down or triple-faulted (-no-reboot) without reporting"
            ),
            None => format!("QEMU {what}: QEMU itself failed (see {})", log.display()),
        },
        (false, Some(0)) => {
            format!("Bochs {what}: the kernel ended it through port 0x8900 (debugger `quit`)")
        }
        (false, Some(1)) => format!(
            "Bochs {what}: a Bochs panic, a triple fault or a shutdown (see {})",
            log.display()
        ),
        (false, _) => format!("Bochs {what} (see {})", log.display()),
        (true, None) => format!("QEMU {what}"),
    }
}

/// Ends a streamed `cargo xtask run`: prints the emulator's status and the verdict and maps it to the exit
/// status: 0 PASS (once `on_pass` accepts the run), 2 UNSUPPORTED, 1 FAIL or no proper end. `requirer` names
/// what lacks a CPU feature (e.g. `the example`); `tcg_hint` is the advice after an UNSUPPORTED from QEMU
/// without KVM.
pub fn run_exit_code(
    report: &RunReport,
    requirer: &str,
    tcg_hint: &str,
    on_pass: impl FnOnce() -> Result<(), String>,
) -> Result<ExitCode, String> {
    eprintln!(
        "xtask: {} ({:.1} s; files in {})",
        report.status_text,
        report.elapsed.as_secs_f64(),
        report.dir.display()
    );
    match report.verdict() {
        Ok((ResultKind::Pass, _)) => {
            on_pass()?;
            Ok(ExitCode::SUCCESS)
        }
        Ok((ResultKind::Unsupported, why)) => {
            eprintln!(
                "xtask: RESULT UNSUPPORTED{}: this CPU lacks VMX or a feature {requirer} requires (see above)",
                crate::with_space(&why)
            );
            if matches!(report.platform, Platform::Qemu { kvm: false, .. }) {
                eprintln!("xtask: QEMU's TCG has no VMX; {tcg_hint}");
            }
            Ok(ExitCode::from(2))
        }
        Ok((ResultKind::Fail, why)) => {
            eprintln!(
                "xtask: RESULT FAIL{}: see the serial console above",
                crate::with_space(&why)
            );
            Ok(ExitCode::FAILURE)
        }
        Err(why) => {
            eprintln!("xtask: the run did not end properly: {why}");
            eprintln!(
                "xtask: last lines of {}:\n{}",
                report.emulator_log.display(),
                report.emulator_log_tail(15)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One run's evidence.
pub struct RunReport {
    /// Where the run happened.
    pub platform: Platform,
    /// Directory with the run's files (serial log, emulator log, configuration).
    pub dir: PathBuf,
    /// The serial console, as captured.
    pub serial: String,
    /// How the emulator ended.
    pub ending: Ending,
    /// The emulator's status in words.
    pub status_text: String,
    /// Wall time.
    pub elapsed: Duration,
    /// Wall time until each of [`RunSpec::markers`] appeared on the serial console.
    pub markers_at: Vec<Option<Duration>>,
    /// The emulator's own log.
    pub emulator_log: PathBuf,
}

impl RunReport {
    /// The kernel's result, when the run reported one consistently; otherwise why not.
    pub fn verdict(&self) -> Result<(ResultKind, String), String> {
        let status = match self.ending {
            Ending::TimedOut => {
                return Err(format!(
                    "timed out after {:.0} s",
                    self.elapsed.as_secs_f64()
                ));
            }
            Ending::Interrupted => return Err("interrupted".into()),
            Ending::Exited(status) => status,
        };
        let Some((kind, why)) = result_line(&self.serial) else {
            return Err(format!(
                "no `mini-hv: RESULT` line on the serial console; {}",
                self.status_text
            ));
        };
        match self.platform {
            Platform::Qemu { .. } => {
                let by_status = status.code().and_then(qemu_status_result);
                if by_status != Some(kind) {
                    return Err(format!(
                        "the serial console says RESULT {kind} but {}",
                        self.status_text
                    ));
                }
            }
            Platform::Bochs { .. } => {
                if status.code() != Some(0) {
                    return Err(format!(
                        "RESULT {kind} on the serial console, but {}",
                        self.status_text
                    ));
                }
            }
        }
        Ok((kind, why))
    }

    /// The last `n` lines of the emulator's log.
    pub fn emulator_log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.emulator_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// What to boot and how.
pub struct RunSpec<'a> {
    /// The platform.
    pub platform: Platform,
    /// A fresh directory for this run's files.
    pub dir: PathBuf,
    /// The kernel ELF (QEMU `-kernel`).
    pub kernel: &'a Path,
    /// The GRUB ISO (Bochs).
    pub iso: Option<&'a Path>,
    /// Kernel command line (QEMU `-append`; for Bochs it is baked into the ISO's grub.cfg).
    pub cmdline: &'a str,
    /// Multiboot modules for QEMU (`-initrd`): file and its command-line arguments.
    pub qemu_modules: &'a [(PathBuf, String)],
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Logical processors of the machine (Bochs `cpu: count=N`, QEMU `-smp N`).
    pub cpus: u32,
    /// Bochs emulated instructions per second (with `clock: sync=none` this only scales emulated time).
    pub bochs_ips: u32,
    /// Bochs `ignore_bad_msrs`: when false, an access to an MSR the model lacks raises #GP (strict: the
    /// example must not touch one); Linux probes some (e.g. IA32_MISC_ENABLE early in `verify_cpu`).
    pub bochs_ignore_bad_msrs: bool,
    /// Kill the run after this long.
    pub timeout: Duration,
    /// Copy the serial console to stdout while running.
    pub echo: bool,
    /// Serial-console strings whose first appearance is timed.
    pub markers: &'a [&'a str],
}

fn check_path(path: &Path) -> Result<String, String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if s.contains(|c: char| c.is_whitespace() || c == ',' || c == '"') {
        return Err(format!(
            "{s}: Bochs configuration paths cannot contain spaces, commas or quotes (set CARGO_TARGET_DIR)"
        ));
    }
    Ok(s.to_string())
}

/// Runs the spec and collects the evidence.
pub fn run(spec: &RunSpec<'_>) -> Result<RunReport, String> {
    let dir = &spec.dir;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let serial = dir.join("serial.log");
    let (command, emulator_log) = match &spec.platform {
        Platform::Bochs { model } => bochs_command(spec, model, &serial)?,
        Platform::Qemu { kvm, cpu } => qemu_command(spec, *kvm, cpu.as_deref(), &serial)?,
    };
    let run = proc::supervise(command, spec.timeout, &serial, spec.echo, spec.markers)?;
    let status_text = explain_status(&spec.platform, run.ending, &emulator_log);
    Ok(RunReport {
        platform: spec.platform.clone(),
        dir: dir.clone(),
        serial: run.serial,
        ending: run.ending,
        status_text,
        elapsed: run.elapsed,
        markers_at: run.markers_at,
        emulator_log,
    })
}

fn bochs_command(
    spec: &RunSpec<'_>,
    model: &str,
    serial: &Path,
) -> Result<(Command, PathBuf), String> {
    let dir = &spec.dir;
    let iso = spec.iso.ok_or("a Bochs run needs the GRUB ISO")?;
    let log = dir.join("bochs.log");
    let bochsrc = dir.join("bochsrc");
    let rc = dir.join("cont.rc");
    let config = format!(
        "# Written by cargo xtask for one run of mini-hv.\n\
         cpu: model={model}, count={cpus}, ips={ips}, reset_on_triple_fault=0, ignore_bad_msrs={ignore}\n\
         megs: {megs}\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/vgabios/vgabios.bin\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev={serial}\n\
         log: {log}\n\
         panic: action=fatal\n\
         clock: sync=none, time0=local\n\
         mouse: enabled=0\n\
         speaker: enabled=0\n\
         sound: driver=dummy\n\
         display_library: term\n",
        cpus = spec.cpus,
        ips = spec.bochs_ips,
        ignore = u8::from(spec.bochs_ignore_bad_msrs),
        megs = spec.memory_mib,
        iso = check_path(iso)?,
        serial = check_path(serial)?,
        log = check_path(&log)?,
    );
    std::fs::write(&bochsrc, config)
        .map_err(|e| format!("cannot write {}: {e}", bochsrc.display()))?;
    // The debugger compiled into Debian's Bochs stops at t=0: continue, and quit when the kernel writes 'D'
    // to port 0x8900.
    std::fs::write(&rc, "c\nquit\n").map_err(|e| format!("cannot write {}: {e}", rc.display()))?;
    let inner = format!(
        "bochs -q -f {} -rc {}",
        proc::shell_quote(&check_path(&bochsrc)?),
        proc::shell_quote(&check_path(&rc)?)
    );
    // The term display needs a terminal: `script` gives Bochs a pseudo-terminal; the screen goes to a file.
    let screen = std::fs::File::create(dir.join("screen.log"))
        .map_err(|e| format!("cannot create screen.log: {e}"))?;
    let screen_err = screen
        .try_clone()
        .map_err(|e| format!("cannot dup screen.log: {e}"))?;
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .env("TERM", "xterm")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(screen)
        .stderr(screen_err);
    Ok((command, log))
}

/// QEMU's `-initrd` value for Multiboot modules given as (file, command-line arguments): `"file args,file
/// args"`. QEMU splits the list at single commas (a doubled comma stands for one, in paths and arguments
/// alike) and each entry at its first space into the file name and the rest; the module's Multiboot command
/// line is then the whole entry, path included (as GRUB's `module` line gives it). So a comma is written twice
/// and a file name cannot contain white space.
pub fn qemu_initrd_arg(modules: &[(PathBuf, String)]) -> Result<String, String> {
    let mut list = Vec::with_capacity(modules.len());
    for (file, args) in modules {
        let path = file
            .to_str()
            .ok_or_else(|| format!("{}: a QEMU module path must be UTF-8", file.display()))?;
        if path.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!(
                "{path:?}: QEMU takes a Multiboot module's file name up to its first space, so it cannot \
                 contain white space (set CARGO_TARGET_DIR to a path without spaces)"
            ));
        }
        let entry = if args.is_empty() {
            path.to_string()
        } else {
            format!("{path} {args}")
        };
        list.push(entry.replace(',', ",,"));
    }
    Ok(list.join(","))
}

fn qemu_command(
    spec: &RunSpec<'_>,
    kvm: bool,
    cpu: Option<&str>,
    serial: &Path,
) -> Result<(Command, PathBuf), String> {
    let log = spec.dir.join("qemu.log");
    let out =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot dup {}: {e}", log.display()))?;
    let mut command = Command::new("qemu-system-x86_64");
    command.arg("-kernel").arg(spec.kernel);
    if !spec.cmdline.is_empty() {
        command.arg("-append").arg(spec.cmdline);
    }
    if !spec.qemu_modules.is_empty() {
        command
            .arg("-initrd")
            .arg(qemu_initrd_arg(spec.qemu_modules)?);
    }
    command.args(["-display", "none", "-monitor", "none", "-no-reboot"]);
    command
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
    command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    command.arg("-m").arg(spec.memory_mib.to_string());
    command.arg("-smp").arg(spec.cpus.to_string());
    if kvm {
        command.arg("-enable-kvm");
    }
    command
        .arg("-cpu")
        .arg(cpu.unwrap_or(if kvm { "host" } else { "max" }));
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok((command, log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    /// A QEMU TCG run that exited with `code` after printing `serial`.
    fn qemu_report(serial: &str, ending: Ending) -> RunReport {
        RunReport {
            platform: Platform::Qemu {
                kvm: false,
                cpu: None,
            },
            dir: PathBuf::from("/nonexistent"),
            serial: serial.into(),
            ending,
            status_text: String::new(),
            elapsed: Duration::from_secs(1),
            markers_at: Vec::new(),
            emulator_log: PathBuf::from("/nonexistent/qemu.log"),
        }
    }

    #[test]
    fn run_exit_codes_follow_the_verdict() {
        // `isa-debug-exit` codes: (v << 1) | 1, in the exit status's high byte.
        let exited = |code: i32| Ending::Exited(ExitStatus::from_raw(code << 8));
        let ok = || Ok(());
        let code = |serial: &str, ending| run_exit_code(&qemu_report(serial, ending), "x", "y", ok);
        assert_eq!(
            code("mini-hv: RESULT PASS\n", exited(33)),
            Ok(ExitCode::SUCCESS)
        );
        assert_eq!(
            code("mini-hv: RESULT UNSUPPORTED (no VMX)\n", exited(37)),
            Ok(ExitCode::from(2))
        );
        assert_eq!(
            code("mini-hv: RESULT FAIL\n", exited(35)),
            Ok(ExitCode::FAILURE)
        );
        // The serial console and the exit status disagree; no result line; a timeout.
        assert_eq!(
            code("mini-hv: RESULT PASS\n", exited(35)),
            Ok(ExitCode::FAILURE)
        );
        assert_eq!(code("", exited(33)), Ok(ExitCode::FAILURE));
        assert_eq!(
            code("mini-hv: RESULT PASS\n", Ending::TimedOut),
            Ok(ExitCode::FAILURE)
        );
        // A PASS the caller's own check refuses is an error.
        let report = qemu_report("mini-hv: RESULT PASS\n", exited(33));
        assert_eq!(
            run_exit_code(&report, "x", "y", || Err("no end marker".into())),
            Err("no end marker".to_string())
        );
    }

    #[test]
    fn result_line_takes_the_last_result() {
        let serial = "mini-hv: RESULT FAIL early\nguest: mini-hv: RESULT PASS\nmini-hv: RESULT UNSUPPORTED (no EPT)\r\n";
        assert_eq!(
            result_line(serial),
            Some((ResultKind::Unsupported, "(no EPT)".into()))
        );
        assert_eq!(
            result_line("mini-hv: RESULT PASS"),
            Some((ResultKind::Pass, String::new()))
        );
        assert_eq!(result_line("mini-hv: RESULT MAYBE\n"), None);
        assert_eq!(result_line(""), None);
    }

    #[test]
    fn result_line_ignores_the_guest_hypervisors_forwarded_results() {
        // L0 forwards L1's serial lines prefixed `L1: `: L1's verdict is never the run's.
        let serial = "mini-hv: 0 cpuid-hypervisor-leaf pass\n\
                      L1: mini-hv: RESULT PASS\n\
                      mini-hv: RESULT FAIL (L1 ended badly)\n\
                      L1: mini-hv: RESULT PASS\n";
        assert_eq!(
            result_line(serial),
            Some((ResultKind::Fail, "(L1 ended badly)".into()))
        );
        assert_eq!(
            result_line("L1: mini-hv: RESULT PASS\nL1: mini-hv: RESULT FAIL\n"),
            None
        );
        assert_eq!(
            result_line("L1: mini-hv: RESULT FAIL (x)\nmini-hv: RESULT PASS\r\n"),
            Some((ResultKind::Pass, String::new()))
        );
    }

    #[test]
    fn qemu_codes_match_the_kernel_exit_values() {
        // exit.rs writes 0x10/0x11/0x12; QEMU exits with (v << 1) | 1.
        for (v, kind) in [
            (0x10, ResultKind::Pass),
            (0x11, ResultKind::Fail),
            (0x12, ResultKind::Unsupported),
        ] {
            assert_eq!(qemu_status_result((v << 1) | 1), Some(kind));
        }
        assert_eq!(qemu_status_result(0), None);
        assert_eq!(qemu_status_result(1), None);
    }

    #[test]
    fn qemu_initrd_doubles_commas_and_joins_modules() {
        let modules = [
            (
                PathBuf::from("/cache/vmlinuz"),
                "kernel console=ttyS0,115200 quiet".to_string(),
            ),
            (
                PathBuf::from("/cache/initramfs.cpio.gz"),
                "initrd".to_string(),
            ),
            (PathBuf::from("/cache/a,b"), String::new()),
        ];
        assert_eq!(
            qemu_initrd_arg(&modules).unwrap(),
            "/cache/vmlinuz kernel console=ttyS0,,115200 quiet,/cache/initramfs.cpio.gz initrd,/cache/a,,b"
        );
        assert_eq!(qemu_initrd_arg(&[]).unwrap(), "");
        // QEMU's reading: split at single commas, then undouble; each entry is the module's command line.
        let arg = qemu_initrd_arg(&modules).unwrap();
        let mut entries = vec![String::new()];
        let mut chars = arg.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                (',', Some(',')) => {
                    chars.next();
                    entries.last_mut().unwrap().push(',');
                }
                (',', _) => entries.push(String::new()),
                _ => entries.last_mut().unwrap().push(c),
            }
        }
        assert_eq!(
            entries,
            [
                "/cache/vmlinuz kernel console=ttyS0,115200 quiet",
                "/cache/initramfs.cpio.gz initrd",
                "/cache/a,b"
            ]
        );
    }

    #[test]
    fn qemu_module_paths_with_spaces_are_rejected() {
        let modules = [(PathBuf::from("/my cache/vmlinuz"), "kernel".to_string())];
        let e = qemu_initrd_arg(&modules).unwrap_err();
        assert!(e.contains("white space"), "{e}");
    }

    #[test]
    fn paths_bochs_cannot_parse_are_rejected() {
        assert!(check_path(Path::new("/a b/c")).is_err());
        assert!(check_path(Path::new("/a,b")).is_err());
        assert_eq!(
            check_path(Path::new("/work/target/x")).unwrap(),
            "/work/target/x"
        );
    }
}
