//! `cargo xtask entry-diff`: differential test of the software VM-entry checker against Bochs.
//!
//! Boots the example hypervisor under Bochs with `mini-hv.entry-diff=<cases>
//! mini-hv.entry-diff-seed=<seed>` on its command line: it mutates its known-good VMCS, asks the
//! checker for a prediction, executes the real VMLAUNCH and compares (see
//! `examples/mini-hv/src/entry_diff/`). This command prints the disagreement lines, the
//! final `entry-diff: ...` line and the time per case, and fails unless every disagreement is
//! excused by a known Bochs deviation.

use crate::emu::{self, Platform, ResultKind, RunSpec};
use crate::{deps, kernel};
use std::process::ExitCode;
use std::time::Duration;

/// Options of `cargo xtask entry-diff`.
#[derive(Debug, PartialEq)]
pub struct Options {
    /// Number of cases.
    pub cases: u32,
    /// PRNG seed.
    pub seed: u64,
    /// Bochs CPU model.
    pub model: String,
    /// Timeout of the whole run, in seconds.
    pub timeout_secs: u64,
    /// Extra kernel command-line words (e.g. `mini-hv.entry-diff-only=17`).
    pub extra: String,
}

/// The serial line that starts the cases.
const START_MARKER: &str = "mini-hv: entry-diff: start:";
/// The final line's prefix.
const FINAL_MARKER: &str = "\nentry-diff: ";

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        cases: 1000,
        seed: 1,
        model: emu::DEFAULT_BOCHS_MODEL.into(),
        timeout_secs: 0,
        extra: String::new(),
    };
    let mut args = crate::args::Options::new(args);
    while let Some(flag) = args.next_flag() {
        match flag {
            "--cases" => options.cases = args.number("a number")?,
            "--seed" => options.seed = args.number("a number")?,
            "--model" => options.model = args.value()?,
            "--timeout" => options.timeout_secs = args.number("a number")?,
            "--cmdline" => options.extra = args.value()?,
            other => return Err(format!("unknown option {other:?}\n{}", crate::USAGE)),
        }
    }
    if options.timeout_secs == 0 {
        // Boot and build margin plus a generous 50 ms per case (about 10 ms measured).
        options.timeout_secs = 120 + u64::from(options.cases) / 20;
    }
    Ok(options)
}

/// Runs the differential test; the exit code is 0 when no disagreement is left unexcused.
pub fn command(args: &[String]) -> Result<ExitCode, String> {
    let options = parse(args)?;
    deps::ensure(&deps::BOCHS.iter().collect::<Vec<_>>())?;
    let elf = kernel::build()?;
    let dir = crate::target_dir().join("mini-hv").join("entry-diff");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cmdline = format!(
        "mini-hv.entry-diff={} mini-hv.entry-diff-seed={} {}",
        options.cases, options.seed, options.extra
    );
    let cmdline = cmdline.trim_end();
    let iso = kernel::make_iso(&dir, &elf, cmdline, &[])?;
    let spec = RunSpec {
        platform: Platform::Bochs {
            model: options.model.clone(),
        },
        dir: dir.join("files"),
        kernel: &elf,
        iso: Some(&iso),
        cmdline,
        qemu_modules: &[],
        memory_mib: 128,
        cpus: 1,
        bochs_ips: 4_000_000,
        bochs_ignore_bad_msrs: false,
        timeout: Duration::from_secs(options.timeout_secs),
        echo: false,
        markers: &[START_MARKER, FINAL_MARKER],
    };
    eprintln!(
        "xtask: entry-diff: {} cases, seed {}, Bochs {} (kernel command line {cmdline:?})",
        options.cases, options.seed, options.model
    );
    let report = emu::run(&spec)?;
    let summary = summarize(&report.serial);
    for line in &summary.lines {
        println!("{line}");
    }
    if let (Some(Some(start)), Some(Some(end))) =
        (report.markers_at.first(), report.markers_at.get(1))
        && let Some(n) = summary.cases.filter(|&n| n != 0)
    {
        let per_case = end.saturating_sub(*start).as_secs_f64() / n as f64;
        println!(
            "xtask: entry-diff: {n} cases in {:.2} s wall ({:.2} ms per case; boot and setup {:.2} s)",
            end.saturating_sub(*start).as_secs_f64(),
            per_case * 1e3,
            start.as_secs_f64()
        );
    }
    eprintln!(
        "xtask: entry-diff: {} ({:.1} s; Bochs log and serial in {})",
        report.status_text,
        report.elapsed.as_secs_f64(),
        report.dir.display()
    );
    match (report.verdict(), summary.disagree) {
        (Ok((ResultKind::Pass, _)), Some(0)) => Ok(ExitCode::SUCCESS),
        (Ok((ResultKind::Unsupported, why)), _) => {
            eprintln!(
                "xtask: entry-diff: the model cannot run the example hypervisor{}",
                crate::with_space(&why)
            );
            Ok(ExitCode::from(2))
        }
        (verdict, _) => {
            if let Err(why) = verdict {
                eprintln!("xtask: entry-diff: the run did not end properly: {why}");
                eprintln!(
                    "xtask: last lines of the serial console:\n{}",
                    tail(&report.serial, 15)
                );
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What the serial console says about the run.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    /// The disagreement (and excused) lines, the outcome statistics and the final line.
    lines: Vec<String>,
    /// N of the final line.
    cases: Option<u64>,
    /// D of the final line.
    disagree: Option<u64>,
}

fn summarize(serial: &str) -> Summary {
    let mut summary = Summary::default();
    for line in serial.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("entry-diff: ") {
            // "<N> cases, <A> agree, <D> disagree, <E> excused"
            let numbers: Vec<u64> = rest
                .split(", ")
                .filter_map(|part| part.split_once(' ')?.0.parse().ok())
                .collect();
            if let [n, _, d, _] = numbers[..] {
                summary.cases = Some(n);
                summary.disagree = Some(d);
            }
            summary.lines.push(line.to_string());
        } else if line.starts_with("mini-hv: entry-diff:") && !line.contains(" excusable ") {
            summary.lines.push(line.to_string());
        }
    }
    summary
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::owned as args;

    #[test]
    fn options_parse() {
        let o = parse(&args(&[
            "--cases",
            "300",
            "--seed=7",
            "--model",
            "corei7_skylake_x",
        ]))
        .unwrap();
        assert_eq!(
            (o.cases, o.seed, o.model.as_str()),
            (300, 7, "corei7_skylake_x")
        );
        assert_eq!(o.timeout_secs, 135);
        let d = parse(&[]).unwrap();
        assert_eq!((d.cases, d.seed, d.model.as_str()), (1000, 1, "tigerlake"));
        assert!(parse(&args(&["--cases", "x"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn summary_reads_the_final_line() {
        let serial = "mini-hv: boot\nmini-hv: entry-diff: start: 3 cases\n\
                      mini-hv: entry-diff: excusable G9: Bochs ...\n\
                      mini-hv: entry-diff: DISAGREE case 1: mutation: GUEST_CR0 0x0->0x1\n\
                      entry-diff: 3 cases, 1 agree, 1 disagree, 1 excused\nmini-hv: RESULT FAIL\n";
        let s = summarize(serial);
        assert_eq!((s.cases, s.disagree), (Some(3), Some(1)));
        assert_eq!(s.lines.len(), 3);
        assert!(s.lines[1].contains("DISAGREE case 1"));
        assert_eq!(summarize("mini-hv: RESULT FAIL\n").disagree, None);
    }
}
