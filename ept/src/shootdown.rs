//! Cross-processor EPT invalidation: INVEPT on every logical processor that may cache an EPT,
//! through the caller's "run this on CPU n" primitive, before the mapper reuses table frames.
//!
//! # When to invalidate, and on which side of the change
//!
//! Every logical processor that has had a VMCS with the EPTP current may hold translations and
//! paging-structure-cache entries derived from the EPT (SDM Vol. 3C §29.4 "Caching
//! Translation Information"); INVEPT on one processor invalidates them on that processor only.
//!
//! - **After the change** — removing or restricting a mapping ([`EptMapper::unmap`],
//!   [`EptMapper::protect`] with fewer rights or another memory type), and every change that
//!   frees tables: write the change, then invalidate on every processor
//!   ([`EptMapper::flush`] with an [`EptShootdown`]). Until that returns, other processors may
//!   still use the old translation, and the mapper holds the unlinked table frames back from
//!   the allocator. Adding a mapping or rights needs no invalidation for correctness (a
//!   processor may at worst take an EPT violation on a stale, smaller translation, and the
//!   flush token is cheap to discharge anyway).
//! - **Before the change (break-before-make)** — changing the page size of an *executable*
//!   mapping while the guest runs on other processors: splitting a large page
//!   ([`EptMapper::split`], or a [`EptMapper::protect`]/[`EptMapper::unmap`] that straddles one)
//!   or merging pages into one ([`EptMapper::merge`]). Processors affected by the "machine check
//!   error on page size change" erratum (iTLB multihit, CVE-2018-12207) can raise a machine
//!   check when instruction-TLB entries of both sizes exist for one address. Take execute
//!   access away and invalidate everywhere first, change the size, invalidate, then give
//!   execute access back: [`EptMapper::split_break_before_make`] does exactly this for a split.
//!   Non-executable mappings can change size in place.

use core::fmt;

use vmx_core::{
    CpuFailure, CpuInvalidate, CpuSet, InvalidationError, InveptType, MAX_CPUS, PerCpuVmx, RunOnCpu,
};

use crate::flush::EptInvalidate;
#[cfg(doc)]
use crate::mapper::EptMapper;

/// INVEPT on a set of logical processors, each through its own VMX token of a [`PerCpuVmx`] and
/// the caller's [`RunOnCpu`]: the [`EptInvalidate`] for EPTs used on several processors.
///
/// [`EptShootdown::new`] covers every logical processor the runner numbers (the whole machine,
/// by [`RunOnCpu`]'s contract), so it is safe; a processor that is not in VMX operation under
/// the [`PerCpuVmx`], or that does not answer, fails the invalidation (naming it), and the
/// mapper keeps the frames.
pub struct EptShootdown<'a, 's, Run: RunOnCpu, R: CpuInvalidate> {
    runner: &'a mut Run,
    cpus: &'a mut PerCpuVmx<'s, R>,
    targets: CpuSet,
    /// Made by `new`: the targets must still be every processor the runner numbers.
    all: bool,
    invalidations: u64,
}

impl<Run: RunOnCpu, R: CpuInvalidate> fmt::Debug for EptShootdown<'_, '_, Run, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EptShootdown")
            .field("targets", &self.targets)
            .field("invalidations", &self.invalidations)
            .finish_non_exhaustive()
    }
}

impl<'a, 's, Run: RunOnCpu, R: CpuInvalidate> EptShootdown<'a, 's, Run, R> {
    /// Invalidation on every logical processor `0..runner.cpu_count()`.
    pub fn new(runner: &'a mut Run, cpus: &'a mut PerCpuVmx<'s, R>) -> Self {
        let targets = CpuSet::first(runner.cpu_count());
        Self {
            runner,
            cpus,
            targets,
            all: true,
            invalidations: 0,
        }
    }

    /// Invalidation on the processors of `targets` only.
    ///
    /// # Safety
    ///
    /// Every logical processor that has had a VMCS holding any EPTP invalidated through the
    /// result current, since that EPT was created, is in `targets`.
    pub unsafe fn only(
        runner: &'a mut Run,
        cpus: &'a mut PerCpuVmx<'s, R>,
        targets: CpuSet,
    ) -> Self {
        Self {
            runner,
            cpus,
            targets,
            all: false,
            invalidations: 0,
        }
    }

    /// The processors each invalidation runs on.
    pub fn targets(&self) -> CpuSet {
        self.targets
    }

    /// The INVEPTs executed so far (one per processor per invalidation).
    pub fn invalidations(&self) -> u64 {
        self.invalidations
    }
}

/// A shootdown failed on processor `cpu` (the processors before it in ascending order did
/// invalidate); the mapper keeps the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShootdownError<E> {
    /// The processor.
    pub cpu: usize,
    /// Why.
    pub failure: CpuFailure<InvalidationError, E>,
}

impl<E: fmt::Display> fmt::Display for ShootdownError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INVEPT on CPU {}: {}", self.cpu, self.failure)
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for ShootdownError<E> {}

// SAFETY: `new` targets every processor of the machine (`RunOnCpu`'s contract) and `only` makes
// its caller vouch for the subset; `on_each` runs the closure on each target through the
// runner (which promises the processor) with that processor's token, whose `CpuInvalidate`
// promises the INVEPT; any failure or unreachable processor is an error.
unsafe impl<Run: RunOnCpu, R: CpuInvalidate> EptInvalidate for EptShootdown<'_, '_, Run, R> {
    type Error = ShootdownError<Run::Error>;

    fn invalidate(&mut self, kind: InveptType, eptp: u64) -> Result<(), Self::Error> {
        if self.all && self.runner.cpu_count() > MAX_CPUS {
            // Processors past MAX_CPUS have no slot: they cannot be reached.
            return Err(ShootdownError {
                cpu: MAX_CPUS,
                failure: CpuFailure::NotInVmx,
            });
        }
        let mut done = 0;
        let result = self
            .cpus
            .on_each(self.runner, &self.targets, |_, root| {
                root.invept(kind, eptp)?;
                done += 1;
                Ok(())
            })
            .map_err(|(cpu, failure)| ShootdownError { cpu, failure });
        self.invalidations += done;
        result
    }
}
