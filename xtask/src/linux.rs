//! A Linux guest for the example: Debian's cloud kernel and `busybox-static`, fetched with `apt-get download`
//! into a cache (no system-wide install), and an initramfs (cpio `newc`, gzip) whose `/init` prints markers,
//! checks the CPU flags, runs a short workload and powers off.
//!
//! `cargo xtask fetch-linux` fills the cache; `cargo xtask linux-baseline` boots the kernel under plain
//! Bochs (no hypervisor) from a GRUB ISO and measures the wall time to the end marker: the reference the
//! hypervisor's Linux boot is compared with. `cargo xtask run --guest linux` boots them as mini-hv's guest:
//! under Bochs from a GRUB ISO whose `module` lines carry them, or under QEMU (KVM with nested VMX; TCG only
//! proves the module passing and ends in UNSUPPORTED) as the same Multiboot modules through `-initrd`.

use crate::emu::{self, Platform, RunSpec};
use crate::{deps, kernel};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The meta-package whose dependency names the current cloud kernel package.
const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";
/// The statically linked busybox.
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Printed by `/init` first.
pub const START_MARKER: &str = "mini-hv-linux: START";
/// Printed by `/init` last, before powering off.
pub const END_MARKER: &str = "mini-hv-linux: END";

/// Kernel command line: serial console; skip the crypto self-tests (about 10 s under Bochs); fewer messages; no
/// CPU-vulnerability mitigations (page-table isolation switches CR3 twice per system call, and every TLB refill
/// after it costs a two-dimensional walk under EPT: with them the workload phase under mini-hv took 44% longer
/// than under plain Bochs, without them 1% to 28% over three pairs of runs on the shared 2-core machine); a
/// panic reboots at once (mini-hv traps the reset: a clean failure, not a hang). The same line for
/// `linux-baseline` and the run under mini-hv.
pub const KERNEL_CMDLINE: &str =
    "console=ttyS0,115200 cryptomgr.notests=1 quiet mitigations=off panic=-1";

/// The serial lines whose wall-clock arrival `linux-baseline` reports: start, then each workload phase, end.
const PHASES: [&str; 5] = [
    START_MARKER,
    "s: md5 done",
    "s: forks done",
    "s: fork+exec done",
    END_MARKER,
];

/// md5 of 4 MiB of zeros: the workload's expected checksum.
const ZEROS_4M_MD5: &str = "b5cfa9d6c8febd618f91ac2843d50a1c";

/// How many forks (a subshell each) the workload does.
const FORKS: u32 = 2000;
/// How many fork+exec rounds (of the 2 MB static busybox) the workload does: under Bochs each costs far more
/// than a fork alone (about 0.2 s wall each, measured on a loaded machine), so they are few.
const EXECS: u32 = 100;

/// The guest's `/init` (run by busybox `sh`).
fn init_script() -> String {
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "{START_MARKER}"
echo "mini-hv-linux: kernel $(uname -r)"
grep -m1 'model name' /proc/cpuinfo | sed 's/^/mini-hv-linux: /'
flags=$(grep -m1 '^flags' /proc/cpuinfo)
echo "mini-hv-linux: $flags"
case " $flags " in *" hypervisor "*) hv=present;; *) hv=absent;; esac
case " $flags " in *" vmx "*) vmx=present;; *) vmx=absent;; esac
echo "mini-hv-linux: CPU flags: hypervisor $hv, vmx $vmx"
n=$(grep -c ^processor /proc/cpuinfo)
echo "mini-hv-linux: online CPUs: $n"
echo "mini-hv-linux: online CPU list: $(cat /sys/devices/system/cpu/online)"
for w in $(cat /proc/cmdline); do
  case $w in mini-hv-linux.touch=*)
    p=${{w#*=}}
    echo "mini-hv-linux: reading physical page $p through /dev/mem"
    dd if=/dev/mem of=/dev/null bs=4096 skip=$p count=1
    echo "mini-hv-linux: read physical page $p";;
  esac
done
echo "mini-hv-linux: uptime $(cut -d' ' -f1 /proc/uptime) s: workload starts"
# Each phase runs on every CPU at once, one job pinned to each (the forks and execs split
# between them); each job says where it ran (field 39 of /proc/self/stat).
mkdir -p /tmp
on_each() {{
  c=0
  while [ $c -lt $n ]; do
    taskset -c $c sh -c "$1" > /tmp/$2.$c &
    c=$((c+1))
  done
  wait
  cat /tmp/$2.*
}}
where='echo "mini-hv-linux: $0 on CPU $(cut -d" " -f39 /proc/self/stat)" >&2'
sum=$(on_each "s=\$(dd if=/dev/zero bs=64k count=64 2>/dev/null | md5sum); echo \${{s%% *}}; sh -c '$where' md5" md5 | sort -u)
echo "mini-hv-linux: uptime $(cut -d' ' -f1 /proc/uptime) s: md5 done"
per=$(({FORKS} / n))
i=$(on_each "i=0; while [ \$i -lt $per ]; do (:); i=\$((i+1)); done; echo \$i; sh -c '$where' forks" forks | awk '{{s += $1}} END {{print s}}')
echo "mini-hv-linux: uptime $(cut -d' ' -f1 /proc/uptime) s: forks done"
per=$(({EXECS} / n))
j=$(on_each "j=0; while [ \$j -lt $per ]; do /bin/true; j=\$((j+1)); done; echo \$j; sh -c '$where' fork+exec" execs | awk '{{s += $1}} END {{print s}}')
echo "mini-hv-linux: uptime $(cut -d' ' -f1 /proc/uptime) s: fork+exec done"
if [ "$sum" = "{ZEROS_4M_MD5}" ] && [ $i -eq {FORKS} ] && [ $j -eq {EXECS} ]; then
  echo "mini-hv-linux: workload ok (md5 of 4 MiB, {FORKS} forks, {EXECS} fork+exec)"
  ok=yes
else
  echo "mini-hv-linux: workload FAILED (md5 $sum, $i forks, $j fork+exec)"
fi
echo "{END_MARKER}"
# The verdict is the way out: power-off (ACPI S5) passes, a reset fails; mini-hv traps both.
if [ "$ok" = yes ]; then poweroff -f; else reboot -f; fi
"#
    )
}

/// A cpio `newc` archive writer (the format the kernel's initramfs unpacker reads: "070701", 13 eight-digit
/// hexadecimal fields, the NUL-terminated name and the data, each padded to 4 bytes; ends with `TRAILER!!!`).
pub struct Cpio {
    out: Vec<u8>,
    next_inode: u32,
}

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Cpio {
            out: Vec::new(),
            next_inode: 1,
        }
    }

    fn pad4(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad4();
        self.out.extend_from_slice(data);
        self.pad4();
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | (perm & 0o7777), (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | (perm & 0o7777), (major, minor), &[]);
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads archives in 512-byte blocks happily without this, but `cpio` expects it.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// The fetched and prepared guest files.
pub struct LinuxGuest {
    /// The kernel image (`vmlinuz`, bzImage).
    pub kernel: PathBuf,
    /// The gzip-compressed initramfs.
    pub initramfs: PathBuf,
    /// The kernel package's version string (from its file name).
    pub kernel_package: String,
}

/// The cache directory: `<target>/linux-cache`.
pub fn cache_dir() -> PathBuf {
    crate::target_dir().join("linux-cache")
}

fn run_quiet(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} {:?} failed ({}): {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The versioned kernel package the meta-package depends on (e.g. `linux-image-6.1.0-56-cloud-amd64`).
fn kernel_package_name() -> Result<String, String> {
    let query = || -> Result<Option<String>, String> {
        let out = run_quiet(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))?;
        Ok(out.lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends:")?.trim();
            dep.starts_with("linux-image-").then(|| dep.to_string())
        }))
    };
    if let Ok(Some(name)) = query() {
        return Ok(name);
    }
    // Package lists missing or stale (a fresh machine): refresh once.
    eprintln!("xtask: apt-get update (to find {KERNEL_META_PACKAGE})");
    run_quiet(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive")).map_err(|e| {
        format!("{e}\n  (finding {KERNEL_META_PACKAGE} needs current package lists: run `sudo apt-get update`)")
    })?;
    query()?
        .ok_or_else(|| format!("apt-cache knows no kernel package behind {KERNEL_META_PACKAGE}"))
}

/// The `.deb` in `dir` whose name starts with `prefix_` (apt names files `<package>_<version>_<arch>.deb`).
fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads `package` into `dir` unless a `.deb` of it is already there.
fn fetch_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    if let Some(deb) = find_deb(dir, package) {
        return Ok(deb);
    }
    eprintln!("xtask: apt-get download {package}");
    run_quiet(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(dir),
    )?;
    find_deb(dir, package).ok_or_else(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

/// Unpacks `deb` into `into` (fresh) with `dpkg-deb -x`.
fn unpack(deb: &Path, into: &Path) -> Result<(), String> {
    if into.exists() {
        std::fs::remove_dir_all(into)
            .map_err(|e| format!("cannot clear {}: {e}", into.display()))?;
    }
    std::fs::create_dir_all(into).map_err(|e| format!("cannot create {}: {e}", into.display()))?;
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into)).map(|_| ())
}

/// Fetches (or reuses) the kernel and busybox packages and builds the initramfs.
pub fn fetch() -> Result<LinuxGuest, String> {
    let cache = cache_dir();
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("cannot create {}: {e}", debs.display()))?;

    let kernel_deb = match std::fs::read_dir(&debs).ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("linux-image-") && n.contains("-cloud-amd64_") && n.ends_with(".deb")
            })
        })
    }) {
        Some(deb) => deb,
        None => fetch_deb(&debs, &kernel_package_name()?)?,
    };
    let busybox_deb = fetch_deb(&debs, BUSYBOX_PACKAGE)?;

    let kernel_tree = cache.join("kernel-pkg");
    let kernel = cache.join("vmlinuz");
    if !kernel.is_file() {
        unpack(&kernel_deb, &kernel_tree)?;
        let boot = kernel_tree.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .map_err(|e| format!("{}: {e}", boot.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .ok_or_else(|| format!("no boot/vmlinuz-* in {}", kernel_deb.display()))?;
        std::fs::copy(&vmlinuz, &kernel)
            .map_err(|e| format!("cannot copy {}: {e}", vmlinuz.display()))?;
        std::fs::remove_dir_all(&kernel_tree)
            .map_err(|e| format!("cannot remove {}: {e}", kernel_tree.display()))?;
    }

    let busybox_tree = cache.join("busybox-pkg");
    unpack(&busybox_deb, &busybox_tree)?;
    let busybox_path = busybox_tree.join("bin/busybox");
    let busybox = std::fs::read(&busybox_path)
        .map_err(|e| format!("cannot read {}: {e}", busybox_path.display()))?;

    let mut cpio = Cpio::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.char_device("dev/null", 0o666, 1, 3);
    cpio.char_device("dev/zero", 0o666, 1, 5);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, init_script().as_bytes());
    let archive = cpio.finish();

    let initramfs = cache.join("initramfs.cpio.gz");
    let mut gzip = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(std::fs::File::create(&initramfs).map_err(
            |e| format!("cannot create {}: {e}", initramfs.display()),
        )?))
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = gzip.stdin.take().ok_or("gzip has no stdin")?;
        stdin
            .write_all(&archive)
            .map_err(|e| format!("writing to gzip: {e}"))?;
    }
    let status = gzip.wait().map_err(|e| format!("waiting for gzip: {e}"))?;
    if !status.success() {
        return Err(format!("gzip failed ({status})"));
    }
    let kernel_package = kernel_deb
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    Ok(LinuxGuest {
        kernel,
        initramfs,
        kernel_package,
    })
}

fn size_mib(path: &Path) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

/// `cargo xtask fetch-linux`.
pub fn fetch_command() -> Result<(), String> {
    let guest = fetch()?;
    eprintln!("xtask: {}", guest.kernel_package);
    eprintln!(
        "xtask: kernel    {} ({:.1} MiB)",
        guest.kernel.display(),
        size_mib(&guest.kernel)
    );
    eprintln!(
        "xtask: initramfs {} ({:.1} MiB)",
        guest.initramfs.display(),
        size_mib(&guest.initramfs)
    );
    Ok(())
}

/// `cargo xtask linux-baseline [--model NAME] [--timeout SECS]`: plain Bochs boots the kernel and initramfs
/// from a GRUB ISO; prints the wall time to the end marker.
pub fn baseline_command(args: &[String]) -> Result<(), String> {
    let mut model = "corei7_skylake_x".to_string();
    let mut timeout = 600u64;
    let mut cpus = 1u32;
    let mut args = crate::args::Options::new(args);
    while let Some(flag) = args.next_flag() {
        match flag {
            "--model" => model = args.value()?,
            "--cpus" => cpus = args.cpus()?,
            "--timeout" => timeout = args.number("seconds")?,
            other => {
                return Err(format!(
                    "unknown option {other:?} (linux-baseline [--model NAME] [--cpus N] [--timeout SECS])"
                ));
            }
        }
    }
    deps::ensure(&deps::BOCHS.iter().collect::<Vec<_>>())?;
    let guest = fetch()?;
    let dir = crate::target_dir().join("mini-hv").join("linux-baseline");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let entry = format!("  linux /boot/vmlinuz {KERNEL_CMDLINE}\n  initrd /boot/initramfs.gz\n");
    let iso = kernel::make_grub_iso(
        &dir,
        "linux.iso",
        &[
            (guest.kernel.as_path(), "vmlinuz"),
            (guest.initramfs.as_path(), "initramfs.gz"),
        ],
        &entry,
        &["linux"],
    )?;
    let spec = RunSpec {
        platform: Platform::Bochs {
            model: model.clone(),
        },
        dir: dir.join("files"),
        kernel: &guest.kernel,
        iso: Some(&iso),
        cmdline: "",
        qemu_modules: &[],
        memory_mib: 256,
        cpus,
        bochs_ips: 20_000_000,
        bochs_ignore_bad_msrs: true,
        timeout: Duration::from_secs(timeout),
        echo: true,
        markers: &PHASES,
    };
    eprintln!(
        "xtask: plain Bochs ({model}) boots {} without a hypervisor",
        guest.kernel_package
    );
    let cpu_before = crate::proc::children_cpu_time();
    let report = emu::run(&spec)?;
    let cpu = crate::proc::children_cpu_time().saturating_sub(cpu_before);
    eprintln!(
        "xtask: {} ({:.1} s)",
        report.status_text,
        report.elapsed.as_secs_f64()
    );
    let (Some(start), Some(end)) = (report.markers_at[0], report.markers_at[PHASES.len() - 1])
    else {
        return Err(format!(
            "no {} marker ({}); last lines of {}:\n{}",
            if report.markers_at[0].is_none() {
                "start"
            } else {
                "end"
            },
            report.status_text,
            report.emulator_log.display(),
            report.emulator_log_tail(15)
        ));
    };
    for (phase, at) in PHASES.iter().zip(&report.markers_at) {
        if let Some(at) = at {
            eprintln!("xtask:   {:>7.1} s  {phase}", at.as_secs_f64());
        }
    }
    if !report.serial.contains("mini-hv-linux: workload ok") {
        return Err("the end marker appeared, but the workload check did not pass".into());
    }
    eprintln!(
        "xtask: baseline: plain Bochs ({model}): {START_MARKER:?} after {:.1} s, {END_MARKER:?} after {:.1} s wall \
         (workload {:.1} s; whole run {:.1} s wall, {:.1} s of Bochs CPU time)",
        start.as_secs_f64(),
        end.as_secs_f64(),
        (end - start).as_secs_f64(),
        report.elapsed.as_secs_f64(),
        cpu.as_secs_f64()
    );
    Ok(())
}

/// Bochs' emulated instructions per second for the Linux runs (as `linux-baseline`).
const BOCHS_IPS: u32 = 20_000_000;

/// Mini-hv's command line that selects the Linux guest.
pub const HV_CMDLINE: &str = "mini-hv.guest=linux";

/// Mini-hv's command line for the Linux guest, with the capabilities restricted to profile `mask`
/// (`mini-hv.mask-caps=NAME`, as `cargo xtask run --mask-caps NAME`) if one is given.
pub fn hv_cmdline(mask: Option<&str>) -> String {
    match mask {
        None => HV_CMDLINE.to_string(),
        Some(name) => format!("{HV_CMDLINE} mini-hv.mask-caps={name}"),
    }
}

/// What a run of Linux under mini-hv measured.
pub struct HvRun {
    /// Wall time from the emulator's start to the end marker.
    pub end_marker: Duration,
    /// VM exits of the whole run.
    pub exits: u64,
    /// Seconds of emulated (guest) time from VMLAUNCH to the power-off: TSC ticks / instructions per second
    /// (the Bochs TSC counts emulated instructions). Linux's own uptime is no measure: on some models it
    /// calibrates the TSC from CPUID leaf 0x15 values that do not match Bochs' clock.
    pub guest_seconds: f64,
    /// The serial console.
    pub serial: String,
}

/// The checks on a Linux run's serial console under mini-hv; returns (total exits, TSC ticks the guest ran).
pub fn check_hv_serial(serial: &str) -> Result<(u64, u64), String> {
    for needle in [
        START_MARKER,
        "mini-hv-linux: CPU flags: hypervisor present, vmx absent",
        "mini-hv-linux: workload ok",
        END_MARKER,
        "mini-hv: the Linux guest powered off",
        "mini-hv: RESULT PASS",
    ] {
        if !serial.contains(needle) {
            return Err(format!("the serial console lacks {needle:?}"));
        }
    }
    let exits = serial
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("mini-hv:")?
                .trim()
                .strip_suffix("total")
        })
        .filter_map(|n| n.trim().parse::<u64>().ok())
        // One total per vCPU.
        .fold(None, |sum: Option<u64>, n| Some(sum.unwrap_or(0) + n))
        .ok_or("no exit statistics (`mini-hv: N total`)")?;
    let ticks = serial
        .lines()
        .filter_map(|l| {
            l.strip_prefix("mini-hv: the guest ran ")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .next_back()
        .ok_or("no guest run time (`mini-hv: the guest ran N TSC ticks`)")?;
    Ok((exits, ticks))
}

/// The host's mean TSC ticks per VM exit outside the trampoline, from mini-hv's
/// `mini-hv: host: N TSC ticks per VM exit ...` line.
fn host_ticks_per_exit(serial: &str) -> Option<u64> {
    serial
        .lines()
        .filter_map(|l| {
            l.strip_prefix("mini-hv: host: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .next_back()
}

/// Builds mini-hv and a GRUB ISO with `modules` (file, name, arguments), and boots it under Bochs with
/// `memory_mib` of RAM and `cpus` processors, mini-hv command line `cmdline` (with `cpus=N` added
/// for more than one); `name` is the run's directory under `target/mini-hv/linux/`.
#[allow(clippy::too_many_arguments)]
fn boot_hv(
    name: &str,
    model: &str,
    cmdline: &str,
    modules: &[(&Path, &str, &str)],
    memory_mib: u32,
    cpus: u32,
    timeout: Duration,
    echo: bool,
) -> Result<emu::RunReport, String> {
    let elf = kernel::build()?;
    let dir = crate::target_dir().join("mini-hv").join("linux").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let modules: Vec<kernel::IsoModule<'_>> = modules
        .iter()
        .map(|&(file, name, args)| kernel::IsoModule { file, name, args })
        .collect();
    let cmdline = kernel::with_cpus(cmdline, cpus);
    let iso = kernel::make_iso(&dir, &elf, &cmdline, &modules)?;
    let spec = RunSpec {
        platform: Platform::Bochs {
            model: model.to_string(),
        },
        dir: dir.join("files"),
        kernel: &elf,
        iso: Some(&iso),
        cmdline: &cmdline,
        qemu_modules: &[],
        memory_mib,
        cpus,
        bochs_ips: BOCHS_IPS,
        bochs_ignore_bad_msrs: true,
        timeout,
        echo,
        markers: &PHASES,
    };
    emu::run(&spec)
}

/// Runs Linux under mini-hv on Bochs (the machine `linux-baseline` uses: 256 MiB, 20 M ips) with `cpus`
/// processors, with the capabilities restricted to profile `mask` if given, checks the markers and prints
/// the measures.
pub fn run_hv(
    model: &str,
    mask: Option<&str>,
    cpus: u32,
    timeout: Duration,
    echo: bool,
) -> Result<HvRun, String> {
    deps::ensure(&deps::BOCHS.iter().collect::<Vec<_>>())?;
    let guest = fetch()?;
    let kernel_args = format!("kernel {KERNEL_CMDLINE}");
    eprintln!(
        "xtask: Bochs ({model}) boots mini-hv with {} as its guest",
        guest.kernel_package
    );
    let cpu_before = crate::proc::children_cpu_time();
    let report = boot_hv(
        if mask.is_some() {
            "boot-masked"
        } else {
            "boot"
        },
        model,
        &hv_cmdline(mask),
        &[
            (&guest.kernel, "vmlinuz", &kernel_args),
            (&guest.initramfs, "initramfs.gz", "initrd"),
        ],
        256,
        cpus,
        timeout,
        echo,
    )?;
    let cpu = crate::proc::children_cpu_time().saturating_sub(cpu_before);
    let (exits, ticks) = check_hv_serial(&report.serial).map_err(|why| {
        format!(
            "{why} ({}, {:.1} s); serial log in {}",
            report.status_text,
            report.elapsed.as_secs_f64(),
            report.dir.display()
        )
    })?;
    let online = format!("mini-hv-linux: online CPUs: {cpus}");
    let started = "mini-hv: CPU 1's vCPU was started by the guest's SIPI";
    if !report.serial.contains(&online) || (cpus > 1 && !report.serial.contains(started)) {
        return Err(format!(
            "the serial console lacks {online:?} or, with more CPUs, {started:?}; serial log in {}",
            report.dir.display()
        ));
    }
    let end_marker = report.markers_at[PHASES.len() - 1].ok_or("no end marker time")?;
    let guest_seconds = ticks as f64 / f64::from(BOCHS_IPS);
    for (phase, at) in PHASES.iter().zip(&report.markers_at) {
        if let Some(at) = at {
            eprintln!("xtask:   {:>7.1} s  {phase}", at.as_secs_f64());
        }
    }
    eprintln!(
        "xtask: Linux under mini-hv ({model}, {cpus} CPU{}{}): {END_MARKER:?} after {:.1} s wall; {exits} VM exits, {:.0} per \
         second of guest time ({guest_seconds:.1} s of emulated time); whole run {:.1} s wall, {:.1} s of Bochs CPU time",
        if cpus == 1 { "" } else { "s" },
        mask.map(|m| format!(", capabilities masked to {m}"))
            .unwrap_or_default(),
        end_marker.as_secs_f64(),
        exits as f64 / guest_seconds.max(0.001),
        report.elapsed.as_secs_f64(),
        cpu.as_secs_f64()
    );
    if let Some(per_exit) = host_ticks_per_exit(&report.serial) {
        eprintln!(
            "xtask: host instructions per VM exit, mean over the boot: {per_exit} from the trampoline's \
             return to its next call (Bochs TSC ticks with clock sync=none), plus the trampoline's own"
        );
    }
    Ok(HvRun {
        end_marker,
        exits,
        guest_seconds,
        serial: report.serial,
    })
}

/// RAM for the Linux guest under QEMU: room for mini-hv, the two modules (about 15 MiB), the kernel's
/// in-place decompression and the unpacked initramfs.
pub const QEMU_MEMORY_MIB: u32 = 512;

/// The Multiboot modules that carry the Linux guest to mini-hv under QEMU (`-initrd`), tagged as the GRUB
/// ISO's `module` lines tag them: the kernel `kernel <Linux command line>`, the initramfs `initrd`.
pub fn qemu_modules(guest: &LinuxGuest) -> Vec<(PathBuf, String)> {
    vec![
        (guest.kernel.clone(), format!("kernel {KERNEL_CMDLINE}")),
        (guest.initramfs.clone(), "initrd".to_string()),
    ]
}

/// Options of `cargo xtask run --guest linux`.
#[derive(Debug, Default, PartialEq)]
struct RunOptions {
    /// `bochs` or `qemu`; `None`: QEMU with KVM when the host gives nested VMX, else Bochs.
    platform: Option<String>,
    /// Bochs CPU model or QEMU `-cpu` model.
    model: Option<String>,
    timeout_secs: Option<u64>,
    bad_inputs: bool,
    /// `--mask-caps NAME`: a capability profile ([`crate::MASK_PROFILES`]).
    mask: Option<String>,
    /// Logical processors (Bochs `cpu: count=N`, mini-hv `cpus=N`); `None`: 1.
    cpus: Option<u32>,
}

fn parse_run_options(args: &[String]) -> Result<RunOptions, String> {
    let mut options = RunOptions::default();
    let mut args = crate::args::Options::new(args);
    while let Some(flag) = args.next_flag() {
        match flag {
            "--guest" => {
                let g = args.value()?;
                if g != "linux" {
                    return Err(format!("--guest {g}: only `linux` is known"));
                }
            }
            "--platform" => options.platform = Some(args.platform()?),
            "--model" => options.model = Some(args.value()?),
            "--timeout" => options.timeout_secs = Some(args.number("seconds")?),
            "--cpus" => options.cpus = Some(args.cpus()?),
            "--bad-inputs" if !args.has_inline_value() => options.bad_inputs = true,
            "--mask-caps" => options.mask = Some(crate::mask_profile(args.value()?)?),
            other => {
                return Err(format!(
                    "unknown option {other:?} (run --guest linux [--platform bochs|qemu] [--model NAME] \
                     [--cpus N] [--timeout SECS] [--mask-caps hyperv] [--bad-inputs])"
                ));
            }
        }
    }
    if options.bad_inputs && options.platform.as_deref() == Some("qemu") {
        return Err("--bad-inputs runs under Bochs only".into());
    }
    Ok(options)
}

/// `cargo xtask run --guest linux [--platform bochs|qemu] [--model NAME] [--cpus N] [--timeout SECS] [--bad-inputs]`:
/// QEMU with KVM when the host gives nested VMX (or `--platform qemu`: TCG otherwise, which ends in the clean
/// no-VMX UNSUPPORTED), else Bochs (`corei7_skylake_x`). `--bad-inputs`: the [`BAD_INPUTS`] runs (Bochs)
/// instead of the boot. Exit status as `cargo xtask run`: 0 PASS, 2 UNSUPPORTED, 1 otherwise.
pub fn run_command(args: &[String]) -> Result<ExitCode, String> {
    let options = parse_run_options(args)?;
    let timeout = Duration::from_secs(options.timeout_secs.unwrap_or(300));
    // `--bad-inputs` runs under Bochs (the parser refused it with `--platform qemu`).
    let qemu_kvm = if options.bad_inputs {
        None
    } else {
        emu::choose_qemu_kvm(options.platform.as_deref())
    };
    if let Some(kvm) = qemu_kvm {
        if options.cpus.is_some_and(|n| n > 1) {
            return Err("--cpus with the Linux guest runs under Bochs (--platform bochs)".into());
        }
        return run_qemu(kvm, options.model, options.mask.as_deref(), timeout);
    }
    let model = options
        .model
        .unwrap_or_else(|| "corei7_skylake_x".to_string());
    if options.bad_inputs {
        bad_input_checks(&model)?;
    } else {
        run_hv(
            &model,
            options.mask.as_deref(),
            options.cpus.unwrap_or(1),
            timeout,
            true,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Boots mini-hv under QEMU (`-kernel`) with the Linux guest as Multiboot modules (`-initrd`) and
/// [`QEMU_MEMORY_MIB`] of RAM, streams the serial console and judges the run.
fn run_qemu(
    kvm: bool,
    cpu: Option<String>,
    mask: Option<&str>,
    timeout: Duration,
) -> Result<ExitCode, String> {
    deps::ensure(&deps::QEMU.iter().collect::<Vec<_>>())?;
    let guest = fetch()?;
    let elf = kernel::build()?;
    let modules = qemu_modules(&guest);
    let platform = Platform::Qemu { kvm, cpu };
    eprintln!(
        "xtask: {platform} boots mini-hv with {} as its guest; serial console follows",
        guest.kernel_package
    );
    let spec = RunSpec {
        platform: platform.clone(),
        dir: crate::target_dir()
            .join("mini-hv")
            .join("linux")
            .join("qemu"),
        kernel: &elf,
        iso: None,
        cmdline: &hv_cmdline(mask),
        qemu_modules: &modules,
        memory_mib: QEMU_MEMORY_MIB,
        cpus: 1,
        bochs_ips: BOCHS_IPS,
        bochs_ignore_bad_msrs: true,
        timeout,
        echo: true,
        markers: &PHASES,
    };
    let report = emu::run(&spec)?;
    emu::run_exit_code(
        &report,
        "mini-hv",
        "`cargo xtask run --guest linux --platform bochs` boots Linux under mini-hv on Bochs",
        || {
            let (exits, _) = check_hv_serial(&report.serial)?;
            let end = report.markers_at[PHASES.len() - 1].ok_or("no end marker time")?;
            eprintln!(
                "xtask: Linux under mini-hv ({platform}): {END_MARKER:?} after {:.1} s wall; {exits} VM exits",
                end.as_secs_f64()
            );
            Ok(())
        },
    )
}

/// A bad-input run: name, modules as (is the initramfs, tag and arguments), RAM in MiB, the expected message.
type BadInput = (
    &'static str,
    &'static [(bool, &'static str)],
    u32,
    &'static str,
);

/// Bad guest inputs, each of which must end the run with a clear message and `RESULT FAIL`: (name, modules as
/// (is the initramfs, tag and arguments), RAM in MiB, the expected message).
const BAD_INPUTS: [BadInput; 5] = [
    (
        "not-a-kernel",
        &[(true, "kernel console=ttyS0"), (true, "initrd")],
        256,
        "mini-hv: cannot load Linux: the kernel module is not a Linux bzImage",
    ),
    (
        "no-initrd",
        &[(false, "kernel console=ttyS0")],
        256,
        "mini-hv: cannot load Linux: no Multiboot module tagged `initrd`",
    ),
    (
        // The guest reads the page at 0x10000 through /dev/mem (allowed below 1 MiB for a non-RAM page):
        // GRUB put the Multiboot information there, so it is the hypervisor's, reserved and unmapped.
        "touch-hv-memory",
        &[
            (false, "kernel {cmdline} mini-hv-linux.touch=16"),
            (true, "initrd"),
        ],
        256,
        "EPT violation: guest-physical 0x10000 is not the guest's",
    ),
    (
        // No init: the kernel panics, `panic=-1` reboots, mini-hv traps the reset.
        "guest-panic",
        &[
            (false, "kernel {cmdline} rdinit=/none root=/dev/none"),
            (true, "initrd"),
        ],
        256,
        "mini-hv: the Linux guest reset the machine",
    ),
    (
        "too-little-memory",
        &[(false, "kernel console=ttyS0"), (true, "initrd")],
        64,
        "mini-hv: cannot load Linux: too little memory",
    ),
];

/// Runs [`BAD_INPUTS`] and checks each ends as expected.
pub fn bad_input_checks(model: &str) -> Result<(), String> {
    let guest = fetch()?;
    for (name, modules, memory, expected) in BAD_INPUTS {
        let modules: Vec<(bool, String)> = modules
            .iter()
            .map(|&(initrd, args)| (initrd, args.replace("{cmdline}", KERNEL_CMDLINE)))
            .collect();
        let modules: Vec<(&Path, &str, &str)> = modules
            .iter()
            .map(|(initrd, args)| {
                let (initrd, args) = (*initrd, args.as_str());
                let file = if initrd {
                    guest.initramfs.as_path()
                } else {
                    guest.kernel.as_path()
                };
                // Named by role: each file on the ISO once.
                let name = if args.starts_with("kernel") {
                    "vmlinuz"
                } else {
                    "initramfs.gz"
                };
                (file, name, args)
            })
            .collect();
        let report = boot_hv(
            name,
            model,
            HV_CMDLINE,
            &modules,
            memory,
            1,
            Duration::from_secs(120),
            false,
        )?;
        if !report.serial.contains(expected) || !report.serial.contains("mini-hv: RESULT FAIL") {
            return Err(format!(
                "bad input {name}: expected {expected:?} and RESULT FAIL ({}); serial log in {}",
                report.status_text,
                report.dir.display()
            ));
        }
        eprintln!(
            "xtask: bad input {name:<18} ends cleanly in {:.1} s: {expected}",
            report.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// What the masked Linux run's serial console must show: the Hyper-V profile's forced controls,
/// each handled.
const MASKED_MARKERS: [&str; 3] = [
    "mini-hv: capabilities restricted to the hyperv profile:",
    "mini-hv: HLT exiting is forced: HLT is completed in the HLT activity state",
    "mini-hv: MONITOR/MWAIT exiting is forced: MONITOR completes as a no-op, MWAIT as a NOP",
];

/// The step of `cargo xtask test`: Linux under mini-hv on one Bochs model, again with the
/// capabilities masked to the Hyper-V profile (about 30 s), then the bad inputs.
pub fn test_step() -> Result<(), String> {
    let start = std::time::Instant::now();
    let timeout = Duration::from_secs(240);
    let run = run_hv("corei7_skylake_x", None, 1, timeout, false)?;
    let masked = run_hv("corei7_skylake_x", Some("hyperv"), 1, timeout, false)?;
    if let Some(missing) = MASKED_MARKERS.iter().find(|m| !masked.serial.contains(*m)) {
        return Err(format!(
            "Linux masked to hyperv passed, but its serial console lacks {missing:?}"
        ));
    }
    bad_input_checks("corei7_skylake_x")?;
    for (name, run) in [
        ("linux-under-mini-hv", &run),
        ("linux-masked-hyperv", &masked),
    ] {
        eprintln!(
            "xtask test: ok   {name:<24} end marker at {:.1} s, {} exits in {:.1} s of guest time",
            run.end_marker.as_secs_f64(),
            run.exits,
            run.guest_seconds,
        );
    }
    eprintln!(
        "xtask test: linux step {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Two CPUs (issue 15): CPU 1's vCPU started by the guest's own INIT-SIPI-SIPI; the workload
    // on both. About 65 s.
    let start = std::time::Instant::now();
    let run = run_hv("corei7_skylake_x", None, 2, Duration::from_secs(240), false)?;
    eprintln!(
        "xtask test: ok   linux-2cpu-under-mini-hv end marker at {:.1} s, {} exits in {:.1} s of guest time \
         (step {:.1} s)",
        run.end_marker.as_secs_f64(),
        run.exits,
        run.guest_seconds,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::owned as args;

    #[test]
    fn cpio_newc_layout() {
        let mut cpio = Cpio::new();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let archive = cpio.finish();
        // Header: magic, then 13 fields of 8 hex digits.
        assert_eq!(&archive[..6], b"070701");
        let field = |i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&archive[6 + 8 * i..14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        assert_eq!(field(1), 0o100755); // mode
        assert_eq!(field(6), 10); // file size
        assert_eq!(field(11), 5); // name size with NUL
        // Name at 110, padded to 116; data at 116, padded to 128; then the trailer.
        assert_eq!(&archive[110..115], b"init\0");
        assert_eq!(&archive[116..126], b"#!/bin/sh\n");
        assert_eq!(&archive[128..134], b"070701");
        assert_eq!(&archive[128 + 110..128 + 120], b"TRAILER!!!");
        assert_eq!(archive.len() % 512, 0);
    }

    #[test]
    fn hv_serial_checks() {
        let good = "mini-hv-linux: START\nmini-hv-linux: CPU flags: hypervisor present, vmx absent\n\
                    mini-hv-linux: uptime 3.25 s: fork+exec done\nmini-hv-linux: workload ok (x)\n\
                    mini-hv-linux: END\nmini-hv: the guest ran 5000 TSC ticks for 1234 VM exits\n\
                    mini-hv:       12  CPUID\nmini-hv:     1234  total\n\
                    mini-hv: the Linux guest powered off (ACPI S5)\nmini-hv: RESULT PASS\n";
        assert_eq!(check_hv_serial(good), Ok((1234, 5000)));
        let vmx = good.replace("vmx absent", "vmx present");
        assert!(check_hv_serial(&vmx).unwrap_err().contains("vmx absent"));
        let failed = good.replace("RESULT PASS", "RESULT FAIL");
        assert!(check_hv_serial(&failed).is_err());
        assert!(check_hv_serial(&good.replace("1234  total", "")).is_err());
        assert_eq!(host_ticks_per_exit(good), None);
        let host = format!("{good}mini-hv: host: 321 TSC ticks per VM exit from the trampoline\n");
        assert_eq!(host_ticks_per_exit(&host), Some(321));
    }

    #[test]
    fn run_options_parse() {
        let o = parse_run_options(&args(&[
            "--guest",
            "linux",
            "--platform=qemu",
            "--model",
            "host",
            "--timeout",
            "60",
            "--cpus",
            "2",
        ]))
        .unwrap();
        assert_eq!(
            o,
            RunOptions {
                platform: Some("qemu".into()),
                model: Some("host".into()),
                timeout_secs: Some(60),
                bad_inputs: false,
                mask: None,
                cpus: Some(2),
            }
        );
        assert!(parse_run_options(&args(&["--cpus", "9"])).is_err());
        let masked = parse_run_options(&args(&["--guest", "linux", "--mask-caps", "hyperv"]));
        assert_eq!(masked.unwrap().mask.as_deref(), Some("hyperv"));
        assert_eq!(
            hv_cmdline(Some("hyperv")),
            "mini-hv.guest=linux mini-hv.mask-caps=hyperv"
        );
        assert_eq!(hv_cmdline(None), HV_CMDLINE);
        assert!(parse_run_options(&args(&["--mask-caps", "vmware"])).is_err());
        assert_eq!(
            parse_run_options(&args(&["--guest=linux"])).unwrap(),
            RunOptions::default()
        );
        assert!(parse_run_options(&args(&["--guest", "windows"])).is_err());
        assert!(parse_run_options(&args(&["--platform", "vbox"])).is_err());
        assert!(parse_run_options(&args(&["--bad-inputs", "--platform", "qemu"])).is_err());
        assert!(
            parse_run_options(&args(&["--bad-inputs"]))
                .unwrap()
                .bad_inputs
        );
        assert!(parse_run_options(&args(&["--timeout", "soon"])).is_err());
        assert!(parse_run_options(&args(&["--memory", "512"])).is_err());
    }

    #[test]
    fn qemu_modules_carry_the_tags_and_the_escaped_command_line() {
        let guest = LinuxGuest {
            kernel: PathBuf::from("/c/vmlinuz"),
            initramfs: PathBuf::from("/c/initramfs.cpio.gz"),
            kernel_package: String::new(),
        };
        let modules = qemu_modules(&guest);
        assert_eq!(modules[0].1, format!("kernel {KERNEL_CMDLINE}"));
        assert_eq!(modules[1].1, "initrd");
        // The console option's comma is doubled, so QEMU does not read it as a module separator.
        let arg = emu::qemu_initrd_arg(&modules).unwrap();
        assert!(
            arg.starts_with("/c/vmlinuz kernel console=ttyS0,,115200 "),
            "{arg}"
        );
        assert!(arg.ends_with(",/c/initramfs.cpio.gz initrd"), "{arg}");
        assert_eq!(
            arg.matches(",,").count(),
            KERNEL_CMDLINE.matches(',').count()
        );
    }

    #[test]
    fn init_script_has_the_markers_and_checks() {
        let s = init_script();
        assert!(s.starts_with("#!/bin/sh\n"));
        for needle in [
            START_MARKER,
            END_MARKER,
            ZEROS_4M_MD5,
            "poweroff -f",
            "reboot -f",
            "hypervisor",
            "vmx",
        ] {
            assert!(s.contains(needle), "{needle}");
        }
    }
}
