//! The breakdown of a CPUID round trip: host-side timestamps (RDTSC) at the phase boundaries of the
//! run loop, taken only while the guest asks for them ([`abi::HC_BREAKDOWN`]).
//!
//! The loop is compiled twice, with [`Off`] (every hook empty: the loop the plain round-trip figure
//! measures) and with [`Tsc`]; the guest's hypercall switches between the two, so the plain loop
//! pays nothing for the probe.
//!
//! # What is measured, and how the measurement's own cost is taken out
//!
//! The guest runs its breakdown samples as `RDTSC` (t0, passed in R8), `CPUID`, `RDTSC` (t1,
//! passed in R9 at its next CPUID). The host stamps, in order: after the trampoline returns (A),
//! after reading the exit reason (R), after the statistics (K), after decoding the exit (D), at the
//! start of the CPUID handler (H), before completing the instruction (S), after it (C), and right
//! before entering the guest again (G). Each stamp only stores the TSC into this exit's record;
//! the phases are computed after the samples: trampoline exit half t0 → A, read and decode
//! (A → R) + (K → D), bookkeeping R → K, dispatch D → H, handler H → S, completion S → C, back
//! to the loop's entry C → G, trampoline entry half G → t1.
//!
//! Every interval also contains the instructions of the stamp that opens it (those after its
//! RDTSC) and of the one that closes it (those before its RDTSC). That cost, `k`, is measured when
//! the probe starts as the difference of two stamps taken back to back, and subtracted from every
//! interval. Three stamps do a little more after their RDTSC (A copies the guest's R8 and R9, H
//! marks the sample, G moves to the next record); that extra is measured the same way (the stamp,
//! then a plain one) and subtracted from the interval it opens. The guest measures its own stamp
//! (RDTSC to CPUID, the same instructions around no exit) and passes it with
//! [`abi::HC_BREAKDOWN`]; it is subtracted from the exit half. Under Bochs with
//! `clock: sync=none` each TSC tick is one emulated instruction, so these corrections are exact.

#[cfg(doc)]
use crate::guest::abi;

/// A phase boundary of the run loop (see the module documentation).
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
}

/// The hooks the run loop calls. Every method of [`Off`] is empty.
pub trait Probe {
    /// Whether this is the measuring probe.
    const ON: bool;
    /// A timestamp at `at`.
    fn stamp(&mut self, at: At);
    /// A, right after the VM exit; `r8`/`r9` are the guest's R8 and R9.
    fn exited(&mut self, r8: u64, r9: u64);
    /// The CPUID handler starts (H): this exit is a sample.
    fn cpuid(&mut self);
    /// Right before the VM entry (G).
    fn entering(&mut self);
}

/// No probe: the loop as every exit runs it.
pub struct Off;

impl Probe for Off {
    const ON: bool = false;
    #[inline(always)]
    fn stamp(&mut self, _: At) {}
    #[inline(always)]
    fn exited(&mut self, _: u64, _: u64) {}
    #[inline(always)]
    fn cpuid(&mut self) {}
    #[inline(always)]
    fn entering(&mut self) {}
}

/// Phases of the breakdown, in the order they are printed.
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

/// One exit's stamps, by [`At`] and then G; the guest's R8 and R9 at the exit; whether the exit is
/// a CPUID sample.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Record {
    t: [u64; 8],
    r8: u64,
    r9: u64,
    sample: u64,
}

/// Index of G in [`Record::t`].
const ENTERING: usize = 7;

/// Records the probe keeps: the guest's samples and the few other exits of a session (its
/// hypercalls); later exits overwrite the last record.
const RECORDS: usize = 256;

/// The measuring probe.
pub struct Tsc {
    /// This exit's record.
    cur: *mut Record,
    first: *mut Record,
    last: *mut Record,
    /// `k`: a stamp's own cost.
    stamp_cost: u64,
    /// The extra of the A, H and G stamps over `k`.
    extra: [u64; 3],
    /// The guest's stamp cost, from its [`abi::HC_BREAKDOWN`] call.
    guest_stamp_cost: u64,
}

/// Stores the TSC at `slot`: RDTSC, then the store, in one `asm!` so that the compiler moves no
/// other work across it.
#[inline(always)]
fn stamp_into(slot: *mut u64) {
    // SAFETY: RDTSC is enabled at CPL 0; `slot` is a live record's field.
    unsafe {
        core::arch::asm!(
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov [{slot}], rax",
            slot = in(reg) slot,
            out("rax") _,
            out("rdx") _,
            options(nostack),
        );
    }
}

impl Tsc {
    /// A probe with its records in fresh frames and its costs measured here, on this processor;
    /// `None` without memory for the records.
    pub fn calibrated(guest_stamp_cost: u64) -> Option<Self> {
        let bytes = RECORDS * core::mem::size_of::<Record>();
        let first = crate::mem::alloc_frames(bytes.div_ceil(4096))? as *mut Record;
        // SAFETY: fresh, identity-mapped frames for RECORDS records, used by this probe alone.
        let last = unsafe { first.add(RECORDS - 1) };
        let mut probe = Tsc {
            cur: first,
            first,
            last,
            stamp_cost: 0,
            extra: [0; 3],
            guest_stamp_cost,
        };
        // The smallest of a few tries each (against an interrupt in between).
        let mut k = u64::MAX;
        let mut extra = [u64::MAX; 3];
        for _ in 0..8 {
            let t = |probe: &Tsc, at: usize| {
                // SAFETY: `cur` is a live record.
                unsafe { (*probe.cur).t[at] }
            };
            probe.stamp(At::Exited);
            probe.stamp(At::ReasonRead);
            k = k.min(t(&probe, 1) - t(&probe, 0));
            probe.exited(0, 0);
            probe.stamp(At::ReasonRead);
            extra[0] = extra[0].min(t(&probe, 1) - t(&probe, 0));
            probe.cpuid();
            probe.stamp(At::Handled);
            extra[1] = extra[1].min(t(&probe, 5) - t(&probe, 4));
            let before = probe.cur;
            probe.entering_stamp();
            probe.stamp(At::Exited);
            // SAFETY: `before` is a live record.
            let g = unsafe { (*before).t[ENTERING] };
            extra[2] = extra[2].min(t(&probe, 0) - g);
        }
        probe.stamp_cost = k;
        probe.extra = extra.map(|e| e.saturating_sub(k));
        probe.cur = first;
        // SAFETY: the records are the probe's own.
        unsafe { core::ptr::write_bytes(first, 0, RECORDS) };
        Some(probe)
    }

    /// A (with the guest's R8 and R9 copied into the record after it).
    #[inline(always)]
    fn exited(&mut self, r8: u64, r9: u64) {
        self.stamp(At::Exited);
        // SAFETY: `cur` is a live record.
        unsafe {
            (*self.cur).r8 = r8;
            (*self.cur).r9 = r9;
        }
    }

    /// G, then on to the next record (the last one is reused when they run out).
    #[inline(always)]
    fn entering_stamp(&mut self) {
        // SAFETY: `cur` is a live record; the next one is within the records unless `cur` is the
        // last.
        unsafe {
            stamp_into(&raw mut (*self.cur).t[ENTERING]);
            if self.cur != self.last {
                self.cur = self.cur.add(1);
            }
        }
    }

    /// The phases of every sample, mean over the samples: see the module documentation.
    pub fn result(&self) -> Option<Breakdown> {
        // SAFETY: the records from `first` to `cur` are the probe's own and initialized.
        let count = unsafe { self.cur.offset_from(self.first) } as usize + 1;
        // SAFETY: as above.
        let records = unsafe { core::slice::from_raw_parts(self.first, count) };
        let k = self.stamp_cost;
        let [extra_a, extra_h, extra_g] = self.extra;
        let mut sums = [0u64; 8];
        let (mut samples, mut entries) = (0u64, 0u64);
        for (i, r) in records.iter().enumerate() {
            if r.sample == 0 {
                continue;
            }
            let d = |from: usize, to: usize| (r.t[to].wrapping_sub(r.t[from])).saturating_sub(k);
            let phases = [
                r.t[0]
                    .wrapping_sub(r.r8)
                    .saturating_sub(self.guest_stamp_cost),
                d(0, 1).saturating_sub(extra_a) + d(2, 3),
                d(1, 2),
                d(3, 4),
                d(4, 5).saturating_sub(extra_h),
                d(5, 6),
                d(6, ENTERING),
            ];
            for (sum, phase) in sums.iter_mut().zip(phases) {
                *sum += phase;
            }
            samples += 1;
            // The entry half: this G to the t1 the next sample brings in R9.
            if let Some(next) = records.get(i + 1).filter(|n| n.sample != 0) {
                sums[7] += next
                    .r9
                    .wrapping_sub(r.t[ENTERING])
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
            stamp_cost: k,
            extra: self.extra,
            guest_stamp_cost: self.guest_stamp_cost,
        })
    }
}

impl Probe for Tsc {
    const ON: bool = true;
    #[inline(always)]
    fn stamp(&mut self, at: At) {
        // SAFETY: `cur` is a live record.
        stamp_into(unsafe { &raw mut (*self.cur).t[at as usize] });
    }
    #[inline(always)]
    fn exited(&mut self, r8: u64, r9: u64) {
        Tsc::exited(self, r8, r9);
    }
    #[inline(always)]
    fn cpuid(&mut self) {
        self.stamp(At::Dispatched);
        // SAFETY: `cur` is a live record.
        unsafe { (*self.cur).sample = 1 };
    }
    #[inline(always)]
    fn entering(&mut self) {
        self.entering_stamp();
    }
}

/// The measured breakdown of a CPUID round trip.
#[derive(Clone, Copy, Debug)]
pub struct Breakdown {
    /// The mean of each phase of [`PHASES`], in TSC ticks, corrections applied.
    pub mean: [u64; 8],
    /// CPUID exits measured.
    pub samples: u64,
    /// A stamp's own cost (subtracted from every interval).
    pub stamp_cost: u64,
    /// The extra of the A, H and G stamps (subtracted from the interval each opens).
    pub extra: [u64; 3],
    /// The guest's stamp cost (subtracted from the exit half).
    pub guest_stamp_cost: u64,
}

impl Breakdown {
    /// The phases' sum.
    pub fn total(&self) -> u64 {
        self.mean.iter().sum()
    }

    /// Prints the breakdown as lines of the exit statistics.
    pub fn print(&self) {
        crate::println!(
            "mini-hv: CPUID round trip breakdown (host RDTSC at each phase boundary, mean of {} \
             samples; subtracted: {} ticks of stamp per interval, {}/{}/{} more after the \
             A/H/G stamps, the guest's {}-tick stamp from the exit half):",
            self.samples,
            self.stamp_cost,
            self.extra[0],
            self.extra[1],
            self.extra[2],
            self.guest_stamp_cost
        );
        for (name, mean) in PHASES.iter().zip(self.mean) {
            crate::println!("mini-hv:   {mean:>5}  {name}");
        }
        crate::println!("mini-hv:   {:>5}  total", self.total());
    }
}
