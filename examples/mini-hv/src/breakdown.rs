//! The CPUID round-trip breakdown computed from the run loop's timestamps: the phases of each
//! sample, the measurement's own cost taken out, averaged over the samples. The kernel's probe
//! (`hv/probe.rs`) takes the timestamps; this is the arithmetic, tested on the host.

use core::fmt;

/// A phase boundary of the run loop, the index of its stamp in [`Record::t`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// A: the trampoline returned (VM exit).
    Exited = 0,
    /// R: the exit reason is read.
    ReasonRead = 1,
    /// K: the statistics are kept.
    Booked = 2,
    /// D: the exit is decoded.
    Decoded = 3,
    /// H: the CPUID handler starts.
    Dispatched = 4,
    /// S: the handler's emulation is done; completing the instruction starts.
    Handled = 5,
    /// C: the instruction is completed.
    Completed = 6,
    /// G: right before the next VM entry.
    Entering = 7,
}

/// One VM exit's timestamps (TSC), by [`At`]; the guest's R8 and R9 at the exit (for a sample: its
/// TSC before this CPUID, and after the previous one); whether the exit is a CPUID sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Record {
    /// The stamps, indexed by [`At`].
    pub t: [u64; 8],
    /// The guest's R8: its TSC right before this sample's CPUID.
    pub r8: u64,
    /// The guest's R9: its TSC right after the previous sample's CPUID.
    pub r9: u64,
    /// Nonzero for a CPUID sample.
    pub sample: u64,
}

/// The measurement's own costs, in TSC ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    /// A stamp: the difference of two stamps taken back to back; in every interval.
    pub stamp: u64,
    /// What the A, H and G stamps do beyond a plain stamp (copying R8/R9, marking the sample,
    /// moving to the next record), in the interval each opens.
    pub extra: [u64; 3],
    /// The guest's stamp: its RDTSC to its CPUID, measured around no exit; in the exit half.
    pub guest_stamp: u64,
}

/// Phases of the breakdown, in the order of [`Breakdown::mean`].
pub const PHASES: [&str; 8] = [
    "trampoline, exit half (VM exit to the return of CurrentVmcs::run)",
    "reading and decoding the exit",
    "bookkeeping (statistics, runaway watchdog)",
    "dispatch (match on the decoded exit)",
    "handler (CPUID emulation)",
    "completing the instruction (RIP, interruptibility, RFLAGS)",
    "back to the loop's VM entry",
    "trampoline, entry half (the call of CurrentVmcs::run to VM entry)",
];

/// The measured breakdown of a CPUID round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breakdown {
    /// The mean of each phase of [`PHASES`], in TSC ticks, costs taken out.
    pub mean: [u64; 8],
    /// CPUID exits measured.
    pub samples: u64,
    /// The costs taken out.
    pub costs: Costs,
}

impl Breakdown {
    /// The phases' sum.
    pub fn total(&self) -> u64 {
        self.mean.iter().sum()
    }

    /// The phases of the samples in `records` (exits in order), mean over the samples: trampoline
    /// exit half t0 → A (t0 in R8), read and decode (A → R) + (K → D), bookkeeping R → K,
    /// dispatch D → H, handler H → S, completion S → C, back to the loop C → G, and the entry half
    /// G → t1, where t1 comes in R9 with the next record, which must be a sample too. `None`
    /// without a sample that has both halves.
    pub fn of(records: &[Record], costs: Costs) -> Option<Breakdown> {
        let k = costs.stamp;
        let [extra_a, extra_h, extra_g] = costs.extra;
        let mut sums = [0u64; 8];
        let (mut samples, mut entries) = (0u64, 0u64);
        for (i, r) in records.iter().enumerate() {
            if r.sample == 0 {
                continue;
            }
            let d = |from: At, to: At| {
                r.t[to as usize]
                    .wrapping_sub(r.t[from as usize])
                    .saturating_sub(k)
            };
            let phases = [
                r.t[At::Exited as usize]
                    .wrapping_sub(r.r8)
                    .saturating_sub(costs.guest_stamp),
                d(At::Exited, At::ReasonRead).saturating_sub(extra_a) + d(At::Booked, At::Decoded),
                d(At::ReasonRead, At::Booked),
                d(At::Decoded, At::Dispatched),
                d(At::Dispatched, At::Handled).saturating_sub(extra_h),
                d(At::Handled, At::Completed),
                d(At::Completed, At::Entering),
            ];
            for (sum, phase) in sums.iter_mut().zip(phases) {
                *sum += phase;
            }
            samples += 1;
            if let Some(next) = records.get(i + 1).filter(|n| n.sample != 0) {
                sums[7] += next
                    .r9
                    .wrapping_sub(r.t[At::Entering as usize])
                    .saturating_sub(k)
                    .saturating_sub(extra_g);
                entries += 1;
            }
        }
        if samples == 0 || entries == 0 {
            return None;
        }
        let mut mean = [0u64; 8];
        for (i, m) in mean.iter_mut().enumerate() {
            let n = if i == 7 { entries } else { samples };
            *m = (sums[i] + n / 2) / n;
        }
        Some(Breakdown {
            mean,
            samples,
            costs,
        })
    }
}

impl fmt::Display for Breakdown {
    /// The lines mini-hv prints with its exit statistics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.costs;
        writeln!(
            f,
            "mini-hv: CPUID round trip breakdown (host RDTSC at each phase boundary, mean of {} \
             samples; subtracted: {} ticks of stamp per interval, {}/{}/{} more after the A/H/G \
             stamps, the guest's {}-tick stamp from the exit half):",
            self.samples, c.stamp, c.extra[0], c.extra[1], c.extra[2], c.guest_stamp
        )?;
        for (name, mean) in PHASES.iter().zip(self.mean) {
            writeln!(f, "mini-hv:   {mean:>5}  {name}")?;
        }
        write!(f, "mini-hv:   {:>5}  total", self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COSTS: Costs = Costs {
        stamp: 6,
        extra: [2, 1, 3],
        guest_stamp: 5,
    };

    /// A sample whose raw intervals are `phases` (t0 → A, A → R, R → K, K → D, D → H, H → S,
    /// S → C, C → G), starting at `t0`, the previous sample having come back to the guest at
    /// `t1_prev`.
    fn sample(t0: u64, t1_prev: u64, phases: [u64; 8]) -> Record {
        let mut t = [0u64; 8];
        let mut now = t0;
        for (i, phase) in phases.iter().enumerate() {
            now += phase;
            t[i] = now;
        }
        Record {
            t,
            r8: t0,
            r9: t1_prev,
            sample: 1,
        }
    }

    #[test]
    fn phases_with_the_costs_taken_out() {
        // Raw intervals: exit half 40, A→R 20, R→K 16, K→D 12, D→H 10, H→S 40, S→C 36, C→G 14.
        let raw = [40, 20, 16, 12, 10, 40, 36, 14];
        let first = sample(1000, 0, raw);
        // Entry half: G of the first to t1 = 43 raw; the second sample starts 9 ticks later.
        let g = first.t[At::Entering as usize];
        let second = sample(g + 43 + 9, g + 43, raw);
        let b = Breakdown::of(&[first, second], COSTS).unwrap();
        assert_eq!(b.samples, 2);
        assert_eq!(
            b.mean,
            [
                40 - 5,
                (20 - 6 - 2) + (12 - 6),
                16 - 6,
                10 - 6,
                40 - 6 - 1,
                36 - 6,
                14 - 6,
                43 - 6 - 3,
            ]
        );
        assert_eq!(b.total(), b.mean.iter().sum::<u64>());
    }

    #[test]
    fn exits_between_samples_break_the_entry_half() {
        let s = sample(1000, 0, [40, 20, 16, 12, 10, 40, 36, 14]);
        let other = Record::default();
        // A sample followed by another exit has no entry half; one sample alone has none at all.
        assert_eq!(Breakdown::of(&[s, other, s], COSTS), None);
        assert_eq!(Breakdown::of(&[s], COSTS), None);
        assert_eq!(Breakdown::of(&[], COSTS), None);
        // Only the non-samples: nothing.
        assert_eq!(Breakdown::of(&[other, other], COSTS), None);
    }

    #[test]
    fn costs_larger_than_an_interval_give_zero_not_a_wrap() {
        let tiny = sample(1000, 0, [1, 1, 1, 1, 1, 1, 1, 1]);
        let g = tiny.t[At::Entering as usize];
        let next = sample(g + 2, g + 1, [1, 1, 1, 1, 1, 1, 1, 1]);
        let b = Breakdown::of(&[tiny, next], COSTS).unwrap();
        assert_eq!(b.mean, [0; 8]);
    }

    #[test]
    fn printed_as_the_exit_statistics_lines() {
        let s = sample(1000, 0, [40, 20, 16, 12, 10, 40, 36, 14]);
        let g = s.t[At::Entering as usize];
        let n = sample(g + 50, g + 43, [40, 20, 16, 12, 10, 40, 36, 14]);
        let text = Breakdown::of(&[s, n], COSTS).unwrap().to_string();
        assert_eq!(text.lines().count(), 10);
        assert!(text.starts_with("mini-hv: CPUID round trip breakdown (host RDTSC"));
        assert!(text.contains("6 ticks of stamp per interval, 2/1/3 more"));
        assert!(text.ends_with("total"));
    }
}
