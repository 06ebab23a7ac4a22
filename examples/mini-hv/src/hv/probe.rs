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
//! `clock: sync=none` each TSC tick is one emulated instruction: the corrections are instruction
//! counts, the same at every sample. The arithmetic is `mini_hv_logic::breakdown`, tested on the host.

#[cfg(doc)]
use crate::guest::abi;
pub use mini_hv_logic::breakdown::{At, Breakdown};
use mini_hv_logic::breakdown::{Costs, Record};

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

/// The host's part of every round trip, summed over a run: from the trampoline's return
/// (`exited`) to its next call (`entering`), the two RDTSCs' own cost left out (the Linux guest's
/// figure of host instructions per VM exit under Bochs).
pub struct HostTicks {
    /// The cost of the two RDTSCs that bracket the host's work.
    stamps: u64,
    /// The TSC at the last VM exit.
    exited: Option<u64>,
    /// TSC ticks of host work so far.
    pub total: u64,
}

impl HostTicks {
    /// A probe with no ticks yet; measures the cost of its stamps.
    pub fn new() -> Self {
        let a = rdtsc();
        Self {
            stamps: rdtsc().wrapping_sub(a),
            exited: None,
            total: 0,
        }
    }
}

impl Probe for HostTicks {
    const ON: bool = false;
    #[inline(always)]
    fn stamp(&mut self, _: At) {}
    #[inline(always)]
    fn exited(&mut self, _: u64, _: u64) {
        self.exited = Some(rdtsc());
    }
    #[inline(always)]
    fn cpuid(&mut self) {}
    #[inline(always)]
    fn entering(&mut self) {
        let entering = rdtsc();
        if let Some(exited) = self.exited {
            self.total += entering.wrapping_sub(exited).saturating_sub(self.stamps);
        }
    }
}

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effect (CR4.TSD is clear in the host).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Records the probe keeps: the guest's samples and the few other exits of a session (its
/// hypercalls); later exits overwrite the last record.
const RECORDS: usize = 256;

/// The measuring probe.
pub struct Tsc {
    /// This exit's record.
    cur: *mut Record,
    first: *mut Record,
    last: *mut Record,
    /// The measurement's own costs (the guest's from its [`abi::HC_BREAKDOWN`] call).
    costs: Costs,
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
            costs: Costs {
                guest_stamp: guest_stamp_cost,
                ..Costs::default()
            },
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
            let g = unsafe { (*before).t[At::Entering as usize] };
            extra[2] = extra[2].min(t(&probe, 0) - g);
        }
        probe.costs.stamp = k;
        probe.costs.extra = extra.map(|e| e.saturating_sub(k));
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
            stamp_into(&raw mut (*self.cur).t[At::Entering as usize]);
            if self.cur != self.last {
                self.cur = self.cur.add(1);
            }
        }
    }

    /// The breakdown of the samples recorded so far.
    pub fn result(&self) -> Option<Breakdown> {
        // SAFETY: the records from `first` to `cur` are the probe's own and initialized.
        let records = unsafe {
            let count = self.cur.offset_from(self.first) as usize + 1;
            core::slice::from_raw_parts(self.first, count)
        };
        Breakdown::of(records, self.costs)
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
