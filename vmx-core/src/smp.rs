//! VMX operation on every logical processor: one VMXON region and one [`VmxRoot`] per processor
//! (SDM Vol. 3C §24.7 "Enabling and Entering VMX Operation" is per logical processor), entered on
//! each through the caller's "run this on CPU n" primitive ([`RunOnCpu`]), left on all, with the
//! processors already entered rolled back when one fails.
//!
//! The crate knows no operating system: the caller numbers its logical processors `0..n` and
//! says how to run a closure on one of them (an IPI with wait, a per-CPU work queue, a
//! freestanding kernel's mailbox), as it says how to translate addresses ([`PhysTranslate`]).
//!
//! ```
//! use core::cell::RefCell;
//! use vmx_core::{CpuVmxOps, PerCpuVmx, RunOnCpu};
//!
//! // A fake platform of 4 CPUs whose CPU 2 cannot enter VMX operation.
//! struct Cpus;
//! // SAFETY (of this example): host code, no VMX; "CPU n" is a number passed along.
//! unsafe impl RunOnCpu for Cpus {
//!     type Error = core::convert::Infallible;
//!     fn cpu_count(&self) -> usize { 4 }
//!     fn run_on(&mut self, _cpu: usize, f: &mut dyn FnMut()) -> Result<(), Self::Error> {
//!         f();
//!         Ok(())
//!     }
//! }
//! struct Ops<'l>(&'l RefCell<Vec<String>>);
//! impl CpuVmxOps for Ops<'_> {
//!     type Root = usize;
//!     type Error = &'static str;
//!     fn enter(&mut self, cpu: usize) -> Result<usize, &'static str> {
//!         self.0.borrow_mut().push(format!("enter {cpu}"));
//!         if cpu == 2 { Err("no VMX") } else { Ok(cpu) }
//!     }
//!     fn leave(&mut self, cpu: usize, root: usize) -> Result<(), (usize, &'static str)> {
//!         self.0.borrow_mut().push(format!("leave {cpu}"));
//!         Ok(())
//!     }
//! }
//! let log = RefCell::new(Vec::new());
//! let mut slots = [None; 4];
//! let err = PerCpuVmx::enter_all(&mut Cpus, &mut Ops(&log), &mut slots).unwrap_err();
//! assert_eq!(err.cpu, 2);
//! assert_eq!(err.to_string(), "CPU 2 could not enter VMX operation: no VMX (CPUs 0..2 left it again)");
//! assert_eq!(*log.borrow(), ["enter 0", "enter 1", "enter 2", "leave 1", "leave 0"]);
//! ```
//!
//! # Moving a vCPU between processors
//!
//! A VMCS may be active on one logical processor at a time, and its launch state and cached
//! contents live in that processor (SDM Vol. 3C §25.1 "Overview", §25.11.1 "Software Use of
//! Virtual-Machine Control Structures"). Moving it is: VMCLEAR on the old processor (the
//! processor writes its cached state to the region and sets the launch state to clear), then
//! VMPTRLD on the new one and VMLAUNCH (VMRESUME would fail: the launch state is clear), with
//! the host-state area rewritten for the new processor. The ownership types already force this
//! order:
//!
//! - A region is loaded by value (`&'static mut VmcsRegion`) and owned by the [`CurrentVmcs`]
//!   while current; the only way back to the region is [`CurrentVmcs::clear`], VMCLEAR on the
//!   processor where it is current. (Dropping the [`CurrentVmcs`] executes VMCLEAR and keeps the
//!   region forever.)
//! - An [`CurrentVmcs`] cannot leave its processor: it is `!Send`, and it borrows that
//!   processor's `!Send` [`VmxRoot`]. The cleared region (`&'static mut VmcsRegion`) is `Send`:
//!   that is what travels, e.g. through [`RunOnCpu`].
//! - [`VmcsRegion::load`] on the new processor makes the launch state clear and starts with an
//!   empty [`HostStateCache`](crate::HostStateCache), so the first [`CurrentVmcs::run`] is a
//!   VMLAUNCH and writes HOST_RSP and HOST_RIP for the new stack.
//! - What the types cannot know is the rest of the host-state area: HOST_GS_BASE, HOST_TR_BASE,
//!   HOST_GDTR_BASE, HOST_IDTR_BASE, HOST_TR_SELECTOR (and any other per-processor value) still
//!   describe the old processor. [`CurrentVmcs::run`]'s safety contract requires them to describe
//!   the current one: write them after the load, before the first run.
//!
//! ```
//! # use vmx_core::{CurrentVmcs, VmcsRegion};
//! fn assert_send<T: Send>() {}
//! // The cleared region travels between processors.
//! assert_send::<&'static mut VmcsRegion>();
//! ```
//!
//! ```compile_fail,E0277
//! # use vmx_core::{CurrentVmcs, SoftVmx};
//! fn assert_send<T: Send>() {}
//! // A current VMCS cannot: it must be cleared where it is current.
//! assert_send::<CurrentVmcs<'static, SoftVmx>>();
//! ```
//!
//! ```compile_fail,E0382
//! # use vmx_core::{PhysTranslate, SoftVmx, VmcsRegion, VmxRoot};
//! // Loading a region that is current (on this or another processor) does not compile: the
//! // region moved into the first `CurrentVmcs`.
//! type Root = VmxRoot<SoftVmx>;
//! fn twice(region: &'static mut VmcsRegion, a: &mut Root, b: &mut Root, t: &impl PhysTranslate) {
//!     let _on_a = region.load(a, t);
//!     let _on_b = region.load(b, t);
//! }
//! ```

use core::fmt;

use crate::lifecycle::VmxRoot;
use crate::processor::VmxInstructions;
#[cfg(doc)]
use crate::{CurrentVmcs, PhysTranslate, VmcsRegion};
use crate::{InvalidationError, InveptType, InvvpidType};
#[cfg(target_arch = "x86_64")]
pub use live::{LiveVmxError, LiveVmxOn};

/// The most logical processors a [`CpuSet`] (and so a [`PerCpuVmx`]) covers.
pub const MAX_CPUS: usize = 256;

/// A set of logical processors, numbered `0..MAX_CPUS` as the caller's [`RunOnCpu`] numbers
/// them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CpuSet([u64; MAX_CPUS / 64]);

impl CpuSet {
    /// The empty set.
    pub const EMPTY: CpuSet = CpuSet([0; MAX_CPUS / 64]);

    /// The processors `0..count` (`count` capped at [`MAX_CPUS`]).
    #[must_use]
    pub fn first(count: usize) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        for cpu in 0..count.min(MAX_CPUS) {
            set.insert(cpu);
        }
        set
    }

    /// Adds `cpu`; `false` if it is beyond [`MAX_CPUS`] (the set is unchanged).
    pub fn insert(&mut self, cpu: usize) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        self.0[cpu / 64] |= 1 << (cpu % 64);
        true
    }

    /// Removes `cpu`.
    pub fn remove(&mut self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.0[cpu / 64] &= !(1 << (cpu % 64));
        }
    }

    /// Whether `cpu` is in the set.
    #[must_use]
    pub fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    /// The number of processors in the set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Whether every processor of `other` is in this set.
    #[must_use]
    pub fn is_superset(&self, other: &CpuSet) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| b & !a == 0)
    }

    /// The processors in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_CPUS).filter(|&cpu| self.contains(cpu))
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The caller's primitive to run code on one logical processor: an IPI that waits for the
/// handler, a per-CPU work queue, a mailbox the application processors poll.
///
/// # Safety
///
/// When [`RunOnCpu::run_on`] returns `Ok(())`, `f` has run to completion exactly once, on the
/// logical processor numbered `cpu` (at CPL 0, without migrating while it ran), and the caller
/// of `run_on` waited for it, so `f` may use everything the caller borrows (no other code
/// touches that data meanwhile; the caller's writes before the call are visible to `f`, and
/// `f`'s writes to the caller after it returns, as with a lock handed over and back). When it returns an error, `f` has not run at all. Processors
/// are numbered `0..cpu_count()`, each number standing for one logical processor for the life
/// of the implementor, and the numbers cover every logical processor of the machine that runs
/// the caller's code (cross-processor invalidations that cover `0..cpu_count()` rely on it).
pub unsafe trait RunOnCpu {
    /// Why a processor could not run the closure (offline, not answering).
    type Error: fmt::Debug + fmt::Display;

    /// The number of logical processors, at most [`MAX_CPUS`].
    fn cpu_count(&self) -> usize;

    /// Runs `f` on logical processor `cpu` and waits for it.
    fn run_on(&mut self, cpu: usize, f: &mut dyn FnMut()) -> Result<(), Self::Error>;
}

/// Entering and leaving VMX root operation on the logical processor the methods run on:
/// [`LiveVmxOn`] with VMXON/VMXOFF; host tests use fakes. [`PerCpuVmx`] calls each method on
/// the processor `cpu` through a [`RunOnCpu`].
pub trait CpuVmxOps {
    /// The per-processor token ([`VmxRoot`] for [`LiveVmxOn`]).
    type Root;
    /// Why entering or leaving failed.
    type Error: fmt::Debug + fmt::Display;

    /// Enters VMX root operation on the current processor, numbered `cpu`.
    fn enter(&mut self, cpu: usize) -> Result<Self::Root, Self::Error>;

    /// Leaves VMX root operation on the current processor, numbered `cpu`; on failure the
    /// token comes back.
    fn leave(&mut self, cpu: usize, root: Self::Root) -> Result<(), (Self::Root, Self::Error)>;
}

/// Why one processor failed: its own VMX operation, or the [`RunOnCpu`] primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuFailure<E, R> {
    /// The processor ran the step and it failed.
    Vmx(E),
    /// The closure could not be run on the processor.
    Unreachable(R),
    /// The processor is not in VMX operation under this [`PerCpuVmx`].
    NotInVmx,
}

impl<E: fmt::Display, R: fmt::Display> fmt::Display for CpuFailure<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vmx(e) => e.fmt(f),
            Self::Unreachable(e) => write!(f, "the processor did not run the request: {e}"),
            Self::NotInVmx => f.write_str("the processor is not in VMX operation"),
        }
    }
}

/// [`PerCpuVmx::enter_all`] failed on processor `cpu`; the processors entered before it were
/// rolled back (left again), except those in `still_in_vmx`, whose tokens are back in the
/// slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnterAllError<E, R> {
    /// The first processor that failed to enter (or `usize::MAX` for a setup error).
    pub cpu: usize,
    /// Why.
    pub failure: EnterAllFailure<E, R>,
    /// Processors entered before `cpu` that then failed to leave during the rollback.
    pub still_in_vmx: CpuSet,
}

/// The cause inside an [`EnterAllError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnterAllFailure<E, R> {
    /// The processor failed.
    Cpu(CpuFailure<E, R>),
    /// The slot storage has fewer slots than processors, or a slot already holds a token, or
    /// the platform reports more than [`MAX_CPUS`] processors.
    Storage {
        /// Processors the platform reports.
        cpus: usize,
        /// Slots given.
        slots: usize,
    },
}

impl<E: fmt::Display, R: fmt::Display> fmt::Display for EnterAllError<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            EnterAllFailure::Storage { cpus, slots } => {
                return write!(
                    f,
                    "{cpus} processors need {cpus} empty slots (at most {MAX_CPUS}), {slots} given"
                );
            }
            EnterAllFailure::Cpu(c) => {
                write!(f, "CPU {} could not enter VMX operation: {c}", self.cpu)?;
            }
        }
        if self.cpu > 0 {
            if self.still_in_vmx.is_empty() {
                write!(f, " (CPUs 0..{} left it again)", self.cpu)?;
            } else {
                write!(
                    f,
                    " (CPUs {:?} could not leave it again and stay in VMX operation)",
                    self.still_in_vmx
                )?;
            }
        }
        Ok(())
    }
}

impl<E: fmt::Debug + fmt::Display, R: fmt::Debug + fmt::Display> core::error::Error
    for EnterAllError<E, R>
{
}

/// [`PerCpuVmx::leave_all`] left every processor it could; these could not leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaveAllError<E, R> {
    /// The processors still in VMX operation (their tokens are still in the [`PerCpuVmx`]).
    pub still_in_vmx: CpuSet,
    /// The first failure, with its processor.
    pub first: (usize, CpuFailure<E, R>),
}

impl<E: fmt::Display, R: fmt::Display> fmt::Display for LeaveAllError<E, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPUs {:?} could not leave VMX operation; CPU {}: {}",
            self.still_in_vmx, self.first.0, self.first.1
        )
    }
}

impl<E: fmt::Debug + fmt::Display, R: fmt::Debug + fmt::Display> core::error::Error
    for LeaveAllError<E, R>
{
}

/// VMX root operation on every logical processor: one token per processor, in slots the caller
/// provides (no allocation), each touched only on its own processor through the caller's
/// [`RunOnCpu`].
///
/// Created by [`PerCpuVmx::enter_all`]; ended by [`PerCpuVmx::leave_all`]. Dropping it leaves
/// the processors in VMX operation (as dropping a [`VmxRoot`] does).
#[derive(Debug)]
#[must_use = "dropping it leaves every processor in VMX operation; call `leave_all`"]
pub struct PerCpuVmx<'s, R> {
    slots: &'s mut [Option<R>],
    cpus: usize,
}

/// Runs `f` with the token of `cpu` on that processor.
fn run_with<Run: RunOnCpu, R, T, E>(
    runner: &mut Run,
    slot: &mut Option<R>,
    cpu: usize,
    f: &mut dyn FnMut(&mut R) -> Result<T, E>,
) -> Result<T, CpuFailure<E, Run::Error>> {
    let Some(root) = slot.as_mut() else {
        return Err(CpuFailure::NotInVmx);
    };
    let mut out = None;
    runner
        .run_on(cpu, &mut || out = Some(f(root)))
        .map_err(CpuFailure::Unreachable)?;
    // `RunOnCpu` promises that `Ok` means the closure ran.
    match out {
        Some(r) => r.map_err(CpuFailure::Vmx),
        None => Err(CpuFailure::NotInVmx),
    }
}

impl<'s, R> PerCpuVmx<'s, R> {
    /// Enters VMX root operation on processors `0..runner.cpu_count()` in order, each through
    /// `ops.enter` run on that processor, keeping each token in `slots[cpu]` (which must be
    /// empty and at least that many). If processor `k` fails, processors `k-1` down to 0 leave
    /// VMX operation again (`ops.leave` on each), and the error names `k` and why.
    pub fn enter_all<Run, Ops>(
        runner: &mut Run,
        ops: &mut Ops,
        slots: &'s mut [Option<R>],
    ) -> Result<Self, EnterAllError<Ops::Error, Run::Error>>
    where
        Run: RunOnCpu,
        Ops: CpuVmxOps<Root = R>,
    {
        let cpus = runner.cpu_count();
        if cpus > MAX_CPUS || slots.len() < cpus || slots[..cpus].iter().any(Option::is_some) {
            return Err(EnterAllError {
                cpu: usize::MAX,
                failure: EnterAllFailure::Storage {
                    cpus,
                    slots: slots.len(),
                },
                still_in_vmx: CpuSet::EMPTY,
            });
        }
        for cpu in 0..cpus {
            let mut out = None;
            let ran = runner.run_on(cpu, &mut || out = Some(ops.enter(cpu)));
            let failure = match (ran, out) {
                (Ok(()), Some(Ok(root))) => {
                    slots[cpu] = Some(root);
                    continue;
                }
                (Ok(()), Some(Err(e))) => CpuFailure::Vmx(e),
                (Err(e), _) => CpuFailure::Unreachable(e),
                // `RunOnCpu` promises that `Ok` means the closure ran.
                (Ok(()), None) => CpuFailure::NotInVmx,
            };
            let mut this = Self { slots, cpus: cpu };
            let still_in_vmx = this
                .leave_range(runner, ops, cpu)
                .map_or(CpuSet::EMPTY, |e| e.0);
            return Err(EnterAllError {
                cpu,
                failure: EnterAllFailure::Cpu(failure),
                still_in_vmx,
            });
        }
        Ok(Self { slots, cpus })
    }

    /// Leaves VMX operation on processors `end-1` down to 0; the set and first failure of those
    /// that could not.
    #[allow(clippy::type_complexity)]
    fn leave_range<Run, Ops>(
        &mut self,
        runner: &mut Run,
        ops: &mut Ops,
        end: usize,
    ) -> Option<(CpuSet, (usize, CpuFailure<Ops::Error, Run::Error>))>
    where
        Run: RunOnCpu,
        Ops: CpuVmxOps<Root = R>,
    {
        let mut failed = CpuSet::EMPTY;
        let mut first = None;
        for cpu in (0..end).rev() {
            let Some(root) = self.slots[cpu].take() else {
                continue;
            };
            let mut root = Some(root);
            let mut out = None;
            let ran = runner.run_on(cpu, &mut || {
                if let Some(r) = root.take() {
                    out = Some(ops.leave(cpu, r));
                }
            });
            let failure = match (ran, out) {
                (Ok(()), Some(Ok(()))) => continue,
                (Ok(()), Some(Err((r, e)))) => {
                    self.slots[cpu] = Some(r);
                    CpuFailure::Vmx(e)
                }
                (Err(e), _) => {
                    self.slots[cpu] = root.take();
                    CpuFailure::Unreachable(e)
                }
                (Ok(()), None) => {
                    self.slots[cpu] = root.take();
                    CpuFailure::NotInVmx
                }
            };
            failed.insert(cpu);
            first.get_or_insert((cpu, failure));
        }
        first.map(|f| (failed, f))
    }

    /// Leaves VMX operation on every processor (highest number first), each through
    /// `ops.leave` run on it, and hands the slots back. Processors that cannot leave keep
    /// their tokens, and `self` comes back with the error.
    #[allow(clippy::type_complexity)]
    pub fn leave_all<Run, Ops>(
        mut self,
        runner: &mut Run,
        ops: &mut Ops,
    ) -> Result<&'s mut [Option<R>], (Self, LeaveAllError<Ops::Error, Run::Error>)>
    where
        Run: RunOnCpu,
        Ops: CpuVmxOps<Root = R>,
    {
        match self.leave_range(runner, ops, self.cpus) {
            None => Ok(self.slots),
            Some((still_in_vmx, first)) => Err((
                self,
                LeaveAllError {
                    still_in_vmx,
                    first,
                },
            )),
        }
    }

    /// The number of processors (`0..count`).
    #[must_use]
    pub fn cpu_count(&self) -> usize {
        self.cpus
    }

    /// The processors in VMX operation under this value.
    #[must_use]
    pub fn cpus_in_vmx(&self) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        for (cpu, slot) in self.slots[..self.cpus].iter().enumerate() {
            if slot.is_some() {
                set.insert(cpu);
            }
        }
        set
    }

    /// Runs `f` with the token of processor `cpu`, on that processor.
    pub fn on_cpu<Run: RunOnCpu, T, E>(
        &mut self,
        runner: &mut Run,
        cpu: usize,
        mut f: impl FnMut(&mut R) -> Result<T, E>,
    ) -> Result<T, CpuFailure<E, Run::Error>> {
        match self.slots[..self.cpus].get_mut(cpu) {
            Some(slot) => run_with(runner, slot, cpu, &mut f),
            None => Err(CpuFailure::NotInVmx),
        }
    }

    /// Runs `f` on every processor of `cpus`, ascending, each with its token, and stops at the
    /// first failure (returned with its processor). A processor of `cpus` not in VMX
    /// operation under this value is a failure ([`CpuFailure::NotInVmx`]).
    pub fn on_each<Run: RunOnCpu, E>(
        &mut self,
        runner: &mut Run,
        cpus: &CpuSet,
        mut f: impl FnMut(usize, &mut R) -> Result<(), E>,
    ) -> Result<(), (usize, CpuFailure<E, Run::Error>)> {
        for cpu in cpus.iter() {
            let Some(slot) = self.slots[..self.cpus].get_mut(cpu) else {
                return Err((cpu, CpuFailure::NotInVmx));
            };
            run_with(runner, slot, cpu, &mut |r: &mut R| f(cpu, r)).map_err(|e| (cpu, e))?;
        }
        Ok(())
    }

    /// The token of processor `cpu`, for code that already runs there (e.g. the processor's own
    /// vCPU loop).
    ///
    /// # Safety
    ///
    /// The caller runs on logical processor `cpu` (as its [`RunOnCpu`] numbers them) and stays
    /// there while it uses the token.
    pub unsafe fn this_cpu(&mut self, cpu: usize) -> Option<&mut R> {
        self.slots[..self.cpus].get_mut(cpu)?.as_mut()
    }
}

/// INVEPT and INVVPID on the logical processor a token stands for: [`VmxRoot`]'s checked
/// wrappers; host tests implement it with fakes.
///
/// # Safety
///
/// When a method returns `Ok(())`, the invalidation it names has been executed on the logical
/// processor the method ran on (cross-processor shootdowns build on this promise).
pub unsafe trait CpuInvalidate {
    /// INVEPT of type `kind` for `eptp` on this processor.
    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), InvalidationError>;

    /// INVVPID of type `kind` for `vpid` (and `linear_address` for individual-address) on this
    /// processor.
    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid: u16,
        linear_address: u64,
    ) -> Result<(), InvalidationError>;
}

// SAFETY: `VmxRoot` is `!Send`: it is used on the processor in VMX operation, where its
// wrappers execute INVEPT/INVVPID or return an error.
unsafe impl<P: VmxInstructions> CpuInvalidate for VmxRoot<P> {
    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), InvalidationError> {
        VmxRoot::invept(self, kind, eptp)
    }

    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid: u16,
        linear_address: u64,
    ) -> Result<(), InvalidationError> {
        VmxRoot::invvpid(self, kind, vpid, linear_address)
    }
}

impl<R: CpuInvalidate> PerCpuVmx<'_, R> {
    /// INVVPID on every processor in VMX operation: after a change to guest paging structures
    /// or a VPID reuse that any processor may have cached translations for (SDM Vol. 3C
    /// §29.4.3.1). Stops at the first failure, naming its processor.
    pub fn invvpid_everywhere<Run: RunOnCpu>(
        &mut self,
        runner: &mut Run,
        kind: InvvpidType,
        vpid: u16,
        linear_address: u64,
    ) -> Result<(), (usize, CpuFailure<InvalidationError, Run::Error>)> {
        let cpus = self.cpus_in_vmx();
        self.on_each(runner, &cpus, |_, root| {
            root.invvpid(kind, vpid, linear_address)
        })
    }
}

/// The processors themselves (x86-64 only: CPUID, RDMSR and VMX instructions).
#[cfg(target_arch = "x86_64")]
mod live {
    use vmx_caps::{CapsError, LiveMsrs, VmxCapabilities};

    use super::CpuVmxOps;
    #[cfg(doc)]
    use super::{PerCpuVmx, RunOnCpu};
    use crate::lifecycle::{EnableError, LivePlatform, VmxRoot};
    use crate::region::{PhysTranslate, VmxonRegion};
    use crate::{InvalidationError, InveptType, VmFail};

    /// Why [`LiveVmxOn`] could not enter or leave VMX operation on a processor.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum LiveVmxError {
        /// No VMXON region was given for this processor (or it was lost in an earlier failed
        /// VMXON).
        #[error("no VMXON region for this processor")]
        NoRegion,
        /// The processor's capability MSRs could not be read.
        #[error("reading the VMX capabilities: {0}")]
        Caps(#[from] CapsError),
        /// VMXON or a check before it failed.
        #[error(transparent)]
        Enable(#[from] EnableError),
        /// The all-context INVEPT after VMXON failed (VMX operation was left again).
        #[error("INVEPT all-context after VMXON failed: {0}")]
        Invept(InvalidationError),
        /// VMXOFF failed (VMfailValid 23 under the dual-monitor treatment of SMIs and SMM).
        #[error("VMXOFF failed: {0}")]
        Vmxoff(VmFail),
    }

    /// [`CpuVmxOps`] on the processors themselves: reads each processor's capabilities, then
    /// [`VmxRoot::enable`] with the processor's own VMXON region followed by an all-context INVEPT
    /// where supported (the SDM's guideline after VMXON); [`VmxRoot::disable`] gives the region back
    /// to its slot.
    #[derive(Debug)]
    pub struct LiveVmxOn<'r, T: PhysTranslate> {
        regions: &'r mut [Option<&'static mut VmxonRegion>],
        translate: T,
    }

    impl<'r, T: PhysTranslate> LiveVmxOn<'r, T> {
        /// VMXON regions `regions[cpu]`, one per processor, at physical addresses `translate` gives.
        ///
        /// # Safety
        ///
        /// Used only through [`PerCpuVmx`] with a [`RunOnCpu`] (so each call runs on its
        /// processor, at CPL 0); `translate` gives the true physical address of every region; no
        /// other code uses VMX or changes CR4.VMXE on these processors meanwhile; the caller
        /// accepts the IA32_FEATURE_CONTROL, CR0 and CR4 changes [`VmxRoot::enable`] documents,
        /// on every processor.
        pub unsafe fn new(
            regions: &'r mut [Option<&'static mut VmxonRegion>],
            translate: T,
        ) -> Self {
            Self { regions, translate }
        }
    }

    impl<T: PhysTranslate> CpuVmxOps for LiveVmxOn<'_, T> {
        type Root = VmxRoot<LivePlatform>;
        type Error = LiveVmxError;

        fn enter(&mut self, cpu: usize) -> Result<VmxRoot<LivePlatform>, LiveVmxError> {
            let region = self
                .regions
                .get_mut(cpu)
                .and_then(Option::take)
                .ok_or(LiveVmxError::NoRegion)?;
            // SAFETY: `new`'s contract: this runs on processor `cpu` at CPL 0.
            let caps = VmxCapabilities::read(&mut unsafe { LiveMsrs::new() });
            let caps = match caps {
                Ok(caps) => caps,
                Err(e) => {
                    self.regions[cpu] = Some(region);
                    return Err(e.into());
                }
            };
            // SAFETY: `new`'s contract: CPL 0 on processor `cpu`, which the token stays on (it is
            // `!Send` and kept in this processor's slot); `caps` were just read there; `translate`
            // is true for the region; nothing else uses VMX here.
            let platform = unsafe { LivePlatform::new() };
            // SAFETY: as above.
            let root = unsafe { VmxRoot::enable(platform, &caps, region, &self.translate) }
                .map_err(|(_, e)| e)?;
            // SDM Vol. 3C §29.4.3.3 "Guidelines for Use of the INVEPT Instruction": an all-context
            // INVEPT right after VMXON drops EPT-derived information cached in an earlier period of
            // VMX operation, so that only processors in VMX operation now can hold any.
            let all_context = InveptType::AllContext;
            match root.invept(all_context, 0) {
                Err(e) if all_context.supported_by(&caps.ept_vpid) => {
                    let region = root
                        .disable()
                        .map(|(_, region)| region)
                        .map_err(|(_, fail)| LiveVmxError::Vmxoff(fail));
                    Err(match region {
                        Ok(region) => {
                            self.regions[cpu] = Some(region);
                            LiveVmxError::Invept(e)
                        }
                        Err(e) => e,
                    })
                }
                // Without all-context INVEPT (`invept` checked the capability and did nothing) no
                // such invalidation exists; with it, done.
                _ => Ok(root),
            }
        }

        fn leave(
            &mut self,
            cpu: usize,
            root: VmxRoot<LivePlatform>,
        ) -> Result<(), (VmxRoot<LivePlatform>, LiveVmxError)> {
            // The token owns its processor: VMXOFF runs on processor `cpu`, where it was entered.
            match root.disable() {
                Ok((_, region)) => {
                    if let Some(slot) = self.regions.get_mut(cpu) {
                        *slot = Some(region);
                    }
                    Ok(())
                }
                Err((root, fail)) => Err((root, LiveVmxError::Vmxoff(fail))),
            }
        }
    }
}
