//! A guest hypervisor kernel (L1) that L0 runs: a second copy of mini-hv, handed to L0 as a
//! Multiboot module (issue 16's demonstration, `docs/nested-l1-kernel.md`). What L0 reads from
//! it: which boot module is L1 and L1's own command line ([`l1_command_line`]), and the lines of
//! L1's console L0 reports on — L1's verdict ([`reported_result`]) and the CPUID round trip L1
//! measured of its own guest, which for L0 is the nested round trip ([`reported_round_trip`]).

/// The word after a boot module's path that makes the module L1's kernel.
pub const L1_MODULE_WORD: &str = "l1";

/// L1's kernel command line, if `module_cmdline` (a Multiboot module's string) marks the module as
/// L1's kernel: the word [`L1_MODULE_WORD`] first (GRUB 2's `module <file> l1 ...` passes only
/// the arguments) or after the module's path (QEMU's `-initrd "<file> l1 ..."` passes the path
/// too), then L1's command line (possibly empty), returned trimmed.
pub fn l1_command_line(module_cmdline: &str) -> Option<&str> {
    /// The first word of `s` (trimmed at the start) and what follows it.
    fn word(s: &str) -> (&str, &str) {
        let s = s.trim_start();
        let end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
        s.split_at(end)
    }
    let (first, rest) = word(module_cmdline);
    if first == L1_MODULE_WORD {
        return Some(rest.trim());
    }
    let (second, rest) = word(rest);
    (!first.is_empty() && second == L1_MODULE_WORD).then(|| rest.trim())
}

/// The kind on a `mini-hv: RESULT <kind>` line of L1's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// `PASS`.
    Pass,
    /// `FAIL`.
    Fail,
    /// `UNSUPPORTED`.
    Unsupported,
}

/// The line mini-hv ends its run with, up to its kind.
const RESULT_LINE: &[u8] = b"mini-hv: RESULT ";
/// The line with the CPUID round trip mini-hv measured of its guest, up to its median.
const ROUND_TRIP_LINE: &[u8] =
    b"mini-hv: CPUID round trip (VM exit + emulation + VM entry): median ";

/// The result a console line reports, if it is a `mini-hv: RESULT <kind>[ why]` line.
pub fn reported_result(line: &[u8]) -> Option<Reported> {
    let rest = line.strip_prefix(RESULT_LINE)?;
    match rest.split(|&b| b == b' ').next()? {
        b"PASS" => Some(Reported::Pass),
        b"FAIL" => Some(Reported::Fail),
        b"UNSUPPORTED" => Some(Reported::Unsupported),
        _ => None,
    }
}

/// The median a console line reports, if it is a `mini-hv: CPUID round trip (VM exit + emulation
/// + VM entry): median <n> ...` line with a number that fits 64 bits.
pub fn reported_round_trip(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(ROUND_TRIP_LINE)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    rest[..digits].iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_after_its_path_says_l1() {
        assert_eq!(l1_command_line("/boot/mini-hv l1"), Some(""));
        assert_eq!(
            l1_command_line("/boot/mini-hv l1 mini-hv.nested=1  cpus=1 "),
            Some("mini-hv.nested=1  cpus=1")
        );
        assert_eq!(l1_command_line("  mini-hv\tl1\tx"), Some("x"));
        // GRUB 2 passes the arguments alone.
        assert_eq!(l1_command_line("l1"), Some(""));
        assert_eq!(l1_command_line("l1 cpus=1"), Some("cpus=1"));
        // The word must be first or follow the path, whole.
        assert_eq!(l1_command_line("/boot/mini-hv"), None);
        assert_eq!(l1_command_line("a b l1"), None);
        assert_eq!(l1_command_line("/boot/bzImage console=ttyS0 l1"), None);
        assert_eq!(l1_command_line("/boot/mini-hv l1x"), None);
        assert_eq!(l1_command_line("/boot/mini-hv L1"), None);
        assert_eq!(l1_command_line(""), None);
    }

    #[test]
    fn result_lines_are_read_by_their_kind() {
        assert_eq!(
            reported_result(b"mini-hv: RESULT PASS"),
            Some(Reported::Pass)
        );
        assert_eq!(
            reported_result(b"mini-hv: RESULT FAIL (panic)"),
            Some(Reported::Fail)
        );
        assert_eq!(
            reported_result(b"mini-hv: RESULT UNSUPPORTED"),
            Some(Reported::Unsupported)
        );
        assert_eq!(reported_result(b"mini-hv: RESULT PASSED"), None);
        assert_eq!(reported_result(b"guest: mini-hv: RESULT PASS"), None);
        assert_eq!(reported_result(b"mini-hv: RESULT "), None);
        assert_eq!(reported_result(b""), None);
    }

    #[test]
    fn round_trip_lines_give_their_median() {
        let line = b"mini-hv: CPUID round trip (VM exit + emulation + VM entry): median 24710 TSC \
                     ticks over 1000 samples (minimum 24500)";
        assert_eq!(reported_round_trip(line), Some(24710));
        assert_eq!(
            reported_round_trip(
                b"mini-hv: CPUID round trip (VM exit + emulation + VM entry): median x"
            ),
            None
        );
        assert_eq!(
            reported_round_trip(
                b"mini-hv: CPUID round trip (VM exit + emulation + VM entry): median \
                  99999999999999999999999 TSC ticks"
            ),
            None
        );
        assert_eq!(reported_round_trip(b"guest: median 5"), None);
    }
}
