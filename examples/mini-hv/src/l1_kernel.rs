//! A guest hypervisor kernel (L1) that L0 runs: a second copy of mini-hv, handed to L0 as a
//! Multiboot module (issue 16's demonstration, `docs/nested-l1-kernel.md`). What L0 reads from
//! it: which boot module is L1 (tagged [`L1_MODULE_WORD`], read with
//! [`crate::boot_protocol::module_args`]), and the lines of
//! L1's console L0 reports on — L1's verdict ([`reported_result`]) and the CPUID round trip L1
//! measured of its own guest, which for L0 is the nested round trip ([`reported_round_trip`]).

/// The tag of the boot module that is L1's kernel (its first word after the path, if the
/// loader passes the path); the words after it are L1's command line.
pub const L1_MODULE_WORD: &str = "l1";

/// The kind on a `mini-hv: RESULT KIND` line of L1's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// `PASS`.
    Pass,
    /// `FAIL`.
    Fail,
    /// `UNSUPPORTED`.
    Unsupported,
}

impl Reported {
    /// The byte mini-hv writes to QEMU's `isa-debug-exit` port for this result (QEMU then exits
    /// with status `(byte << 1) | 1`: 33, 35, 37).
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Pass => 0x10,
            Self::Fail => 0x11,
            Self::Unsupported => 0x12,
        }
    }

    /// The result an `isa-debug-exit` byte stands for.
    pub fn from_exit_code(code: u8) -> Option<Self> {
        [Self::Pass, Self::Fail, Self::Unsupported]
            .into_iter()
            .find(|r| r.exit_code() == code)
    }
}

/// L1's result where the byte it wrote last to the `isa-debug-exit` port and the last `RESULT`
/// line of its console agree; `None` (a failure of L1's run) where either is missing or they
/// differ.
pub fn l1_result(code: Option<u8>, console: Option<Reported>) -> Option<Reported> {
    let from_code = code.and_then(Reported::from_exit_code)?;
    (console == Some(from_code)).then_some(from_code)
}

/// The line mini-hv ends its run with, up to its kind.
const RESULT_LINE: &[u8] = b"mini-hv: RESULT ";
/// The line with the CPUID round trip mini-hv measured of its guest, up to its median.
const ROUND_TRIP_LINE: &[u8] =
    b"mini-hv: CPUID round trip (VM exit + emulation + VM entry): median ";

/// The result a console line reports, if it is a `mini-hv: RESULT KIND [why]` line.
pub fn reported_result(line: &[u8]) -> Option<Reported> {
    let rest = line.strip_prefix(RESULT_LINE)?;
    match rest.split(|&b| b == b' ').next()? {
        b"PASS" => Some(Reported::Pass),
        b"FAIL" => Some(Reported::Fail),
        b"UNSUPPORTED" => Some(Reported::Unsupported),
        _ => None,
    }
}

/// The median a console line reports, if it is a `mini-hv: CPUID round trip (VM exit +
/// emulation + VM entry): median N ...` line with a number N that fits 64 bits.
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
    fn l1s_result_needs_its_exit_code_and_console_to_agree() {
        for r in [Reported::Pass, Reported::Fail, Reported::Unsupported] {
            assert_eq!(Reported::from_exit_code(r.exit_code()), Some(r));
        }
        assert_eq!(Reported::Pass.exit_code(), 0x10);
        assert_eq!(Reported::from_exit_code(0x13), None);
        assert_eq!(
            l1_result(Some(0x10), Some(Reported::Pass)),
            Some(Reported::Pass)
        );
        assert_eq!(
            l1_result(Some(0x12), Some(Reported::Unsupported)),
            Some(Reported::Unsupported)
        );
        assert_eq!(
            l1_result(Some(0x11), Some(Reported::Fail)),
            Some(Reported::Fail)
        );
        assert_eq!(l1_result(Some(0x11), Some(Reported::Pass)), None);
        assert_eq!(l1_result(Some(0x10), Some(Reported::Fail)), None);
        assert_eq!(l1_result(None, Some(Reported::Pass)), None);
        assert_eq!(l1_result(Some(0x10), None), None);
        assert_eq!(l1_result(Some(0x00), Some(Reported::Pass)), None);
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
