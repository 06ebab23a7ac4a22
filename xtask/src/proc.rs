//! Running an emulator: its own process group, a timeout, the serial console file streamed while it runs,
//! and a clean kill of every process it started (by walking `/proc`) on timeout or Ctrl-C.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT/SIGTERM; the wait loops notice it and kill their emulators.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    /// `signal(2)` from the C library std already links.
    fn signal(signum: i32, handler: usize) -> usize;
    /// `getrusage(2)`; `usage` points to a `struct rusage` (144 bytes on x86_64 Linux: two `timeval`s, then
    /// fourteen `long`s).
    fn getrusage(who: i32, usage: *mut [i64; 18]) -> i32;
}

/// User plus system CPU time of every terminated and waited-for descendant of this process (the emulator under
/// `script` included: `script` waits for it). The difference across one run is that run's CPU time,
/// independent of how loaded the machine is.
pub fn children_cpu_time() -> Duration {
    const RUSAGE_CHILDREN: i32 = -1;
    let mut usage = [0i64; 18];
    // SAFETY: `usage` is a writable buffer of the size of `struct rusage` on x86_64 Linux.
    if unsafe { getrusage(RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |sec: i64, usec: i64| {
        Duration::from_secs(sec.max(0) as u64) + Duration::from_micros(usec.max(0) as u64)
    };
    micros(usage[0], usage[1]) + micros(usage[2], usage[3])
}

extern "C" fn on_signal(_signum: i32) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM so that an interrupted run still kills its emulators (which run in their own
/// process groups and so do not receive the terminal's Ctrl-C).
pub fn install_signal_handlers() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    for sig in [SIGINT, SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(i32)` that only stores to an atomic, which is
        // async-signal-safe; replacing the default disposition of these two signals affects only this process.
        unsafe {
            signal(sig, on_signal as extern "C" fn(i32) as usize);
        }
    }
}

/// Whether SIGINT/SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How a supervised process ended.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// It exited on its own.
    Exited(ExitStatus),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// The user interrupted xtask; it was killed.
    Interrupted,
}

/// Every descendant of `root` (children first found by scanning `/proc/*/stat`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so split after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == p)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILLs `pid`'s process group and every descendant of `pid` (some, like the emulator under `script`,
/// live in sessions of their own).
fn kill_tree(pid: u32) {
    let mut targets: Vec<String> = descendants(pid).iter().map(u32::to_string).collect();
    targets.push(format!("-{pid}"));
    // `kill` from procps/util-linux; status ignored: some processes may already be gone.
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(&targets)
        .status();
}

/// Follows a growing file, handing each new chunk to a sink.
pub struct Follower<'a> {
    path: &'a Path,
    offset: u64,
    /// Everything read so far.
    pub text: String,
}

impl<'a> Follower<'a> {
    /// Follows `path` (which may not exist yet).
    pub fn new(path: &'a Path) -> Self {
        Follower {
            path,
            offset: 0,
            text: String::new(),
        }
    }

    /// Reads what was appended since the last call; echoes it to stdout when `echo`.
    pub fn poll(&mut self, echo: bool) {
        let Ok(mut file) = File::open(self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() || bytes.is_empty() {
            return;
        }
        self.offset += bytes.len() as u64;
        let chunk = String::from_utf8_lossy(&bytes);
        if echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(chunk.as_bytes());
            let _ = out.flush();
        }
        self.text.push_str(&chunk);
    }
}

/// What [`supervise`] observed.
pub struct Supervised {
    /// How the process ended.
    pub ending: Ending,
    /// The whole serial text.
    pub serial: String,
    /// Wall time from start to end.
    pub elapsed: Duration,
    /// For each marker, the wall time from start until it first appeared on the serial console (polled
    /// every 20 ms).
    pub markers_at: Vec<Option<Duration>>,
}

/// Runs `command` in its own process group until it exits, `timeout` passes, or xtask is interrupted;
/// meanwhile follows `serial` (echoing it when `echo`) and notes when each of `markers` first appears.
pub fn supervise(
    mut command: Command,
    timeout: Duration,
    serial: &Path,
    echo: bool,
    markers: &[&str],
) -> Result<Supervised, String> {
    command.process_group(0);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let pid = child.id();
    let mut follower = Follower::new(serial);
    let mut markers_at = vec![None; markers.len()];
    let note_markers = |text: &str, markers_at: &mut [Option<Duration>]| {
        for (at, marker) in markers_at.iter_mut().zip(markers) {
            if at.is_none() && text.contains(marker) {
                *at = Some(start.elapsed());
            }
        }
    };
    let ending = loop {
        follower.poll(echo);
        note_markers(&follower.text, &mut markers_at);
        match child.try_wait() {
            Ok(Some(status)) => break Ending::Exited(status),
            Ok(None) => {}
            Err(e) => {
                kill_tree(pid);
                let _ = child.wait();
                return Err(format!("cannot wait for {:?}: {e}", command.get_program()));
            }
        }
        if interrupted() {
            kill_tree(pid);
            let _ = child.wait();
            break Ending::Interrupted;
        }
        if start.elapsed() > timeout {
            kill_tree(pid);
            let _ = child.wait();
            break Ending::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever the emulator flushed on its way out.
    follower.poll(echo);
    note_markers(&follower.text, &mut markers_at);
    Ok(Supervised {
        ending,
        serial: follower.text,
        elapsed: start.elapsed(),
        markers_at,
    })
}

/// `status` as "exit status N" or "killed by signal N".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("{status}"),
    }
}

/// Quotes `s` for a POSIX shell (for the command line `script -c` runs).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_quotes_and_spaces() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("a b'c\"d $x")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b'c\"d $x");
    }

    #[test]
    fn timeout_kills_the_whole_tree() {
        let dir = std::env::temp_dir().join(format!("xtask-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let serial = dir.join("serial.log");
        let pidfile = dir.join("grandchild.pid");
        // A grandchild in a new session (like Bochs under `script`) must die too.
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "echo hello > {s}; setsid sleep 30 & echo $! > {p}; sleep 30",
            s = shell_quote(serial.to_str().unwrap()),
            p = shell_quote(pidfile.to_str().unwrap())
        ));
        let Supervised {
            ending,
            serial: text,
            elapsed,
            markers_at,
        } = supervise(
            command,
            Duration::from_millis(500),
            &serial,
            false,
            &["hello", "absent"],
        )
        .unwrap();
        assert!(markers_at[0].is_some_and(|t| t <= elapsed));
        assert_eq!(markers_at[1], None);
        assert!(matches!(ending, Ending::TimedOut), "{ending:?}");
        assert_eq!(text, "hello\n");
        assert!(elapsed < Duration::from_secs(10));
        let grandchild = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        std::thread::sleep(Duration::from_millis(200));
        // Gone, or a zombie waiting for init to reap it.
        let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        let alive = state
            .rfind(')')
            .is_some_and(|i| !state[i + 1..].trim_start().starts_with('Z'));
        assert!(!alive, "grandchild {grandchild} survived: {state}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn children_cpu_time_counts_a_busy_child() {
        let before = children_cpu_time();
        let status = Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
            .status()
            .unwrap();
        assert!(status.success());
        assert!(children_cpu_time() > before);
    }

    #[test]
    fn exit_status_is_reported() {
        let serial = std::env::temp_dir().join("xtask-proc-none.log");
        let mut command = Command::new("sh");
        command.arg("-c").arg("exit 3");
        let Supervised {
            ending,
            serial: text,
            markers_at,
            ..
        } = supervise(command, Duration::from_secs(10), &serial, false, &["hello"]).unwrap();
        assert_eq!(markers_at, vec![None]);
        match ending {
            Ending::Exited(status) => assert_eq!(status.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        assert!(text.is_empty());
    }
}
