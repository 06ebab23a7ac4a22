//! Cross-processor invalidation against a fake machine: a runner that tracks which "CPU" runs
//! a closure and can leave CPUs unanswered, per-CPU tokens whose INVEPT records the CPU it ran
//! on, and a frame allocator that records when frames come and go — all in one event log, so
//! the tests see that frames are released only after every CPU invalidated.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ept::{
    BreakBeforeMakeError, EptConfig, EptMapper, EptShootdown, FlushError, FrameAllocator,
    GuestPhysAddr, HeapFrameAllocator, HostPhysAddr, LeafAttributes, MapError, MemoryType,
    OffsetPhysToVirt, PageSize, Permissions, ShootdownError,
};
use vmx_caps::EptVpidCap;
use vmx_core::{
    CpuFailure, CpuInvalidate, CpuSet, CpuVmxOps, InvalidationError, InveptType, InvvpidType,
    PerCpuVmx, RunOnCpu,
};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
/// IA32_VMX_EPT_VPID_CAP of Bochs' corei7_skylake_x.
const SKYLAKE_X: EptVpidCap = EptVpidCap(0x0000_0f01_0633_4141);
const CPUS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Invept(usize, InveptType, u64),
    Alloc,
    Free(u64),
}

#[derive(Debug, Default)]
struct Machine {
    current: Cell<Option<usize>>,
    log: RefCell<Vec<Event>>,
}

struct Runner {
    m: Rc<Machine>,
    offline: CpuSet,
    /// The number of CPUs it claims (`CPUS` unless a test says otherwise).
    count: usize,
}

// SAFETY: host fake: "CPU n" is simulated by `current`, which the tokens check.
unsafe impl RunOnCpu for Runner {
    type Error = &'static str;

    fn cpu_count(&self) -> usize {
        self.count
    }

    fn run_on(&mut self, cpu: usize, f: &mut dyn FnMut()) -> Result<(), &'static str> {
        if cpu >= self.count || self.offline.contains(cpu) {
            return Err("no answer");
        }
        self.m.current.set(Some(cpu));
        f();
        self.m.current.set(None);
        Ok(())
    }
}

#[derive(Debug)]
struct Root {
    cpu: usize,
    m: Rc<Machine>,
}

// SAFETY: host fake: no processor ever uses the tests' EPTs; the token records where its INVEPT
// "ran", which is what the tests check.
unsafe impl CpuInvalidate for Root {
    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), InvalidationError> {
        assert_eq!(
            self.m.current.get(),
            Some(self.cpu),
            "INVEPT on the wrong CPU"
        );
        self.m
            .log
            .borrow_mut()
            .push(Event::Invept(self.cpu, kind, eptp));
        Ok(())
    }

    fn invvpid(&mut self, _: InvvpidType, _: u16, _: u64) -> Result<(), InvalidationError> {
        Ok(())
    }
}

/// Per-CPU entry that always works, and leaving that fails on the CPUs of the set.
struct Ops(Rc<Machine>, CpuSet);

impl CpuVmxOps for Ops {
    type Root = Root;
    type Error = &'static str;

    fn enter(&mut self, cpu: usize) -> Result<Root, &'static str> {
        Ok(Root {
            cpu,
            m: self.0.clone(),
        })
    }

    fn leave(&mut self, cpu: usize, root: Root) -> Result<(), (Root, &'static str)> {
        if self.1.contains(cpu) {
            Err((root, "VMXOFF failed"))
        } else {
            Ok(())
        }
    }
}

/// Heap frames, every allocation and release logged.
struct Logged {
    heap: HeapFrameAllocator,
    m: Rc<Machine>,
}

// SAFETY: forwards to `HeapFrameAllocator`.
unsafe impl FrameAllocator for Logged {
    fn allocate_frame(&mut self) -> Option<HostPhysAddr> {
        let f = self.heap.allocate_frame()?;
        self.m.log.borrow_mut().push(Event::Alloc);
        Some(f)
    }

    unsafe fn deallocate_frame(&mut self, frame: HostPhysAddr) {
        self.m.log.borrow_mut().push(Event::Free(frame.as_u64()));
        // SAFETY: forwarded from the caller.
        unsafe { self.heap.deallocate_frame(frame) };
    }
}

type Mapper = EptMapper<OffsetPhysToVirt, Logged>;

fn machine() -> (Rc<Machine>, Runner, Mapper) {
    let m = Rc::new(Machine::default());
    let runner = Runner {
        m: m.clone(),
        offline: CpuSet::EMPTY,
        count: CPUS,
    };
    let alloc = Logged {
        heap: HeapFrameAllocator::new(),
        m: m.clone(),
    };
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let ept = EptMapper::new(EptConfig::new(SKYLAKE_X, 48), p2v, alloc)
        .map_err(|e| e.error)
        .unwrap();
    (m, runner, ept)
}

fn g(a: u64) -> GuestPhysAddr {
    GuestPhysAddr::new(a).unwrap()
}

fn h(a: u64) -> HostPhysAddr {
    HostPhysAddr::new(a).unwrap()
}

fn rwx() -> LeafAttributes {
    LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack)
}

/// The CPUs that invalidated `eptp`, in order, in `events`.
fn inveptd(events: &[Event], eptp: u64) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Invept(cpu, InveptType::SingleContext, p) if p == eptp => Some(cpu),
            _ => None,
        })
        .collect()
}

#[test]
fn frames_are_released_only_after_every_cpu_invalidated() {
    let (m, mut runner, mut ept) = machine();
    let mut slots: [Option<Root>; CPUS] = Default::default();
    let mut cpus =
        PerCpuVmx::enter_all(&mut runner, &mut Ops(m.clone(), CpuSet::EMPTY), &mut slots).unwrap();
    let eptp = ept.eptp().bits();
    let f = ept
        .map_with_max_page(g(0), h(M2), M2, rwx(), PageSize::Size4K)
        .unwrap();
    let mut shootdown = EptShootdown::new(&mut runner, &mut cpus);
    ept.flush(f, &mut shootdown).unwrap();
    m.log.borrow_mut().clear();

    // Unmapping the whole 2 MiB empties the PT, the PD and the PDPT.
    let f = ept.unmap(g(0), M2).unwrap();
    assert_eq!(ept.pending_frames(), 3);
    assert!(
        m.log.borrow().is_empty(),
        "nothing released before the flush"
    );
    ept.flush(f, &mut shootdown).unwrap();
    let log = m.log.borrow().clone();
    assert_eq!(inveptd(&log, eptp), [0, 1, 2, 3]);
    let last_invept = log
        .iter()
        .rposition(|e| matches!(e, Event::Invept(..)))
        .unwrap();
    let frees: Vec<usize> = (0..log.len())
        .filter(|&i| matches!(log[i], Event::Free(_)))
        .collect();
    assert_eq!(frees.len(), 3);
    assert!(frees.iter().all(|&i| i > last_invept), "{log:?}");
    assert_eq!(shootdown.invalidations(), 8);
    assert_eq!(ept.pending_frames(), 0);
}

#[test]
fn an_unanswering_cpu_keeps_the_frames_and_is_named() {
    let (m, mut runner, mut ept) = machine();
    let mut slots: [Option<Root>; CPUS] = Default::default();
    let mut cpus =
        PerCpuVmx::enter_all(&mut runner, &mut Ops(m.clone(), CpuSet::EMPTY), &mut slots).unwrap();
    let eptp = ept.eptp().bits();
    let f = ept.map(g(0), h(0), K4, rwx()).unwrap();
    ept.flush(f, &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap();
    let f = ept.unmap(g(0), K4).unwrap();
    m.log.borrow_mut().clear();
    runner.offline.insert(2);
    let err = ept
        .flush(f, &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap_err();
    let FlushError::Invalidation { error, token } = err else {
        panic!("{err:?}");
    };
    assert_eq!(
        error,
        ShootdownError {
            cpu: 2,
            failure: CpuFailure::Unreachable("no answer")
        }
    );
    assert_eq!(
        error.to_string(),
        "INVEPT on CPU 2: the processor did not run the request: no answer"
    );
    assert_eq!(inveptd(&m.log.borrow(), eptp), [0, 1]);
    assert!(!m.log.borrow().iter().any(|e| matches!(e, Event::Free(_))));
    assert_eq!(ept.pending_frames(), 3);
    // CPU 2 answers again: the same token now releases the frames, after all four INVEPTs.
    runner.offline = CpuSet::EMPTY;
    m.log.borrow_mut().clear();
    ept.flush(token, &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap();
    let log = m.log.borrow().clone();
    assert_eq!(inveptd(&log, eptp), [0, 1, 2, 3]);
    assert!(
        matches!(log[4..], [Event::Free(_), Event::Free(_), Event::Free(_)]),
        "{log:?}"
    );
}

#[test]
fn a_cpu_outside_vmx_fails_the_shootdown_unless_excluded_unsafely() {
    let (m, mut runner, mut ept) = machine();
    let mut slots: [Option<Root>; CPUS] = Default::default();
    let mut ops = Ops(m.clone(), CpuSet::first(3));
    let cpus = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut slots).unwrap();
    // Leaving fails on CPUs 0..3: only CPU 3 leaves VMX operation.
    let (mut cpus, _) = cpus.leave_all(&mut runner, &mut ops).unwrap_err();
    let eptp = ept.eptp().bits();
    let f = ept.map(g(0), h(0), K4, rwx()).unwrap();
    // SAFETY: in this test, only CPUs 0 and 1 ever have this EPT in a current VMCS.
    let mut pinned = unsafe { EptShootdown::only(&mut runner, &mut cpus, CpuSet::first(2)) };
    assert_eq!(pinned.targets(), CpuSet::first(2));
    ept.flush(f, &mut pinned).unwrap();
    assert_eq!(inveptd(&m.log.borrow(), eptp), [0, 1]);
    // The safe shootdown covers every CPU of the machine, and CPU 3 cannot be reached.
    let f = ept.unmap(g(0), K4).unwrap();
    m.log.borrow_mut().clear();
    let err = ept
        .flush(f, &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap_err();
    assert!(
        matches!(
            err,
            FlushError::Invalidation {
                error: ShootdownError {
                    cpu: 3,
                    failure: CpuFailure::NotInVmx
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(inveptd(&m.log.borrow(), eptp), [0, 1, 2]);
    assert_eq!(ept.pending_frames(), 3);
    // A machine with more CPUs than a PerCpuVmx can hold: refused before any INVEPT.
    let token = match err {
        FlushError::Invalidation { token, .. } => token,
        other => panic!("{other:?}"),
    };
    runner.count = 300;
    m.log.borrow_mut().clear();
    let err = ept
        .flush(token, &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap_err();
    assert!(
        matches!(
            err,
            FlushError::Invalidation {
                error: ShootdownError {
                    cpu: 256,
                    failure: CpuFailure::NotInVmx
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(m.log.borrow().is_empty());
}

/// Splitting an executable 2-MiB page in break-before-make order: execute access goes away
/// and every CPU invalidates before the page table is even allocated; then the split is
/// invalidated, then execute access comes back and is invalidated. The result is 512
/// executable 4-KiB pages.
#[test]
fn executable_split_breaks_before_it_makes() {
    let (m, mut runner, mut ept) = machine();
    let mut slots: [Option<Root>; CPUS] = Default::default();
    let mut cpus =
        PerCpuVmx::enter_all(&mut runner, &mut Ops(m.clone(), CpuSet::EMPTY), &mut slots).unwrap();
    let f = ept.map(g(M2), h(4 * M2), M2, rwx()).unwrap();
    let mut shootdown = EptShootdown::new(&mut runner, &mut cpus);
    ept.flush(f, &mut shootdown).unwrap();
    m.log.borrow_mut().clear();
    ept.split_break_before_make(g(M2 + 5 * K4), &mut shootdown)
        .unwrap();
    let log = m.log.borrow().clone();
    let alloc = log.iter().position(|e| *e == Event::Alloc).unwrap();
    assert_eq!(log.iter().filter(|e| **e == Event::Alloc).count(), 1);
    let eptp = ept.eptp().bits();
    assert_eq!(
        inveptd(&log[..alloc], eptp),
        [0, 1, 2, 3],
        "break first: {log:?}"
    );
    assert_eq!(inveptd(&log[alloc..], eptp), [0, 1, 2, 3, 0, 1, 2, 3]);
    let t = ept.translate(g(M2 + 5 * K4 + 8)).unwrap();
    assert_eq!(t.page_size, PageSize::Size4K);
    assert_eq!(t.permissions(), Permissions::RWX);
    assert_eq!(t.hpa.as_u64(), 4 * M2 + 5 * K4 + 8);

    // A non-executable page is split in place: one invalidation.
    let ro = LeafAttributes::new(Permissions::READ, MemoryType::WriteBack);
    let f = ept.map(g(4 * M2), h(8 * M2), M2, ro).unwrap();
    ept.flush(f, &mut shootdown).unwrap();
    m.log.borrow_mut().clear();
    ept.split_break_before_make(g(4 * M2), &mut shootdown)
        .unwrap();
    assert_eq!(inveptd(&m.log.borrow(), eptp), [0, 1, 2, 3]);

    // Out of frames: execute access comes back, the page stays 2 MiB.
    let f = ept.map(g(6 * M2), h(12 * M2), M2, rwx()).unwrap();
    ept.flush(f, &mut shootdown).unwrap();
    ept.allocator()
        .heap
        .set_limit(Some(ept.allocator().heap.live_frames()));
    let err = ept
        .split_break_before_make(g(6 * M2), &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap_err();
    assert!(
        matches!(err, BreakBeforeMakeError::Map(MapError::OutOfFrames { .. })),
        "{err:?}"
    );
    let t = ept.translate(g(6 * M2)).unwrap();
    assert_eq!(
        (t.page_size, t.permissions()),
        (PageSize::Size2M, Permissions::RWX)
    );
    // Execute-only pages cannot lose execute access.
    let xo = LeafAttributes::new(Permissions::EXECUTE, MemoryType::WriteBack);
    let f = ept.map(g(8 * M2), h(16 * M2), M2, xo).unwrap();
    ept.flush(f, &mut EptShootdown::new(&mut runner, &mut cpus))
        .unwrap();
    assert!(matches!(
        ept.split_break_before_make(g(8 * M2), &mut EptShootdown::new(&mut runner, &mut cpus)),
        Err(BreakBeforeMakeError::ExecuteOnly(Permissions::EXECUTE))
    ));
}
