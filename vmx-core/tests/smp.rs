//! VMX operation on every processor, against a fake platform: a runner that tracks which "CPU"
//! a closure runs on and can refuse CPUs, and per-CPU operations that record what ran where and
//! fail on chosen CPUs.

use std::cell::{Cell, RefCell};

use vmx_core::{
    CpuFailure, CpuInvalidate, CpuSet, CpuVmxOps, EnterAllFailure, InvalidationError, InveptType,
    InvvpidType, PerCpuVmx, RunOnCpu,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Enter(usize),
    Leave(usize),
    Invvpid(usize, u16),
}

/// The shared state of the fake machine.
#[derive(Default)]
struct Machine {
    /// The CPU the running closure is on (`None`: the requesting code).
    current: Cell<Option<usize>>,
    log: RefCell<Vec<Event>>,
}

struct Runner<'m> {
    machine: &'m Machine,
    cpus: usize,
    /// CPUs that never answer.
    offline: CpuSet,
}

// SAFETY: host fake: "running on CPU n" is simulated by setting `current` around the call,
// which is what the tests check.
unsafe impl RunOnCpu for Runner<'_> {
    type Error = &'static str;

    fn cpu_count(&self) -> usize {
        self.cpus
    }

    fn run_on(&mut self, cpu: usize, f: &mut dyn FnMut()) -> Result<(), &'static str> {
        if cpu >= self.cpus || self.offline.contains(cpu) {
            return Err("no answer");
        }
        assert_eq!(self.machine.current.get(), None, "nested run_on");
        self.machine.current.set(Some(cpu));
        f();
        self.machine.current.set(None);
        Ok(())
    }
}

/// A token that remembers its CPU.
#[derive(Debug, PartialEq, Eq)]
struct Root(usize);

struct Ops<'m> {
    machine: &'m Machine,
    fail_enter: CpuSet,
    fail_leave: CpuSet,
}

impl Ops<'_> {
    fn here(&self, cpu: usize) {
        assert_eq!(
            self.machine.current.get(),
            Some(cpu),
            "ran on the wrong CPU"
        );
    }
}

impl CpuVmxOps for Ops<'_> {
    type Root = Root;
    type Error = String;

    fn enter(&mut self, cpu: usize) -> Result<Root, String> {
        self.here(cpu);
        self.machine.log.borrow_mut().push(Event::Enter(cpu));
        if self.fail_enter.contains(cpu) {
            Err(format!("CPU {cpu} lacks VMX"))
        } else {
            Ok(Root(cpu))
        }
    }

    fn leave(&mut self, cpu: usize, root: Root) -> Result<(), (Root, String)> {
        self.here(cpu);
        assert_eq!(root, Root(cpu), "another CPU's token");
        self.machine.log.borrow_mut().push(Event::Leave(cpu));
        if self.fail_leave.contains(cpu) {
            Err((root, "VMXOFF failed".into()))
        } else {
            Ok(())
        }
    }
}

// SAFETY: host fake; records where it "executed".
unsafe impl CpuInvalidate for Root {
    fn invept(&mut self, _: InveptType, _: u64) -> Result<(), InvalidationError> {
        Ok(())
    }

    fn invvpid(&mut self, _: InvvpidType, vpid: u16, _: u64) -> Result<(), InvalidationError> {
        MACHINE.with(|m| {
            if let Some(m) = m.get() {
                // SAFETY: the pointer is set for the duration of the test that uses it.
                let m = unsafe { &*m };
                assert_eq!(m.current.get(), Some(self.0), "INVVPID on the wrong CPU");
                m.log.borrow_mut().push(Event::Invvpid(self.0, vpid));
            }
        });
        Ok(())
    }
}

thread_local! {
    static MACHINE: Cell<Option<*const Machine>> = const { Cell::new(None) };
}

/// A fake machine of `cpus` processors that all answer and all succeed.
fn fake(m: &Machine, cpus: usize) -> (Runner<'_>, Ops<'_>) {
    let runner = Runner {
        machine: m,
        cpus,
        offline: CpuSet::EMPTY,
    };
    let ops = Ops {
        machine: m,
        fail_enter: CpuSet::EMPTY,
        fail_leave: CpuSet::EMPTY,
    };
    (runner, ops)
}

fn set(cpus: &[usize]) -> CpuSet {
    let mut s = CpuSet::EMPTY;
    for &c in cpus {
        s.insert(c);
    }
    s
}

#[test]
fn enters_every_cpu_in_order_and_leaves_all() {
    let m = Machine::default();
    let (mut runner, mut ops) = fake(&m, 4);
    let mut slots: [Option<Root>; 6] = Default::default();
    let mut all = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut slots).unwrap();
    assert_eq!(all.cpus_in_vmx(), CpuSet::first(4));
    assert_eq!(
        all.on_cpu(&mut runner, 2, |r| Ok::<_, ()>(r.0 * 10)),
        Ok(20)
    );
    assert_eq!(
        all.on_cpu(&mut runner, 4, |r| Ok::<_, ()>(r.0)),
        Err(CpuFailure::NotInVmx)
    );
    let slots = all
        .leave_all(&mut runner, &mut ops)
        .map_err(|e| e.1)
        .unwrap();
    assert!(slots.iter().all(Option::is_none));
    use Event::{Enter, Leave};
    assert_eq!(
        *m.log.borrow(),
        [
            Enter(0),
            Enter(1),
            Enter(2),
            Enter(3),
            Leave(3),
            Leave(2),
            Leave(1),
            Leave(0)
        ]
    );
}

/// A failure on CPU k, for every k: CPUs k-1 .. 0 leave again (in that order), CPUs after k
/// are never touched, every slot ends empty, and the error names k.
#[test]
fn failure_on_cpu_k_rolls_back_the_cpus_before_it() {
    for k in 0..5 {
        for unreachable in [false, true] {
            let m = Machine::default();
            let mut runner = Runner {
                machine: &m,
                cpus: 5,
                offline: if unreachable {
                    set(&[k])
                } else {
                    CpuSet::EMPTY
                },
            };
            let mut ops = Ops {
                machine: &m,
                fail_enter: if unreachable {
                    CpuSet::EMPTY
                } else {
                    set(&[k])
                },
                fail_leave: CpuSet::EMPTY,
            };
            let mut slots: [Option<Root>; 5] = Default::default();
            let err = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut slots).unwrap_err();
            assert_eq!(err.cpu, k);
            assert!(err.still_in_vmx.is_empty());
            match err.failure {
                EnterAllFailure::Cpu(CpuFailure::Unreachable("no answer")) if unreachable => {}
                EnterAllFailure::Cpu(CpuFailure::Vmx(ref e)) if !unreachable => {
                    assert_eq!(e, &format!("CPU {k} lacks VMX"));
                }
                ref other => panic!("k={k}: {other:?}"),
            }
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("CPU {k} could not enter")),
                "{text}"
            );
            let mut want: Vec<Event> = (0..k).map(Event::Enter).collect();
            if !unreachable {
                want.push(Event::Enter(k));
            }
            want.extend((0..k).rev().map(Event::Leave));
            assert_eq!(*m.log.borrow(), want, "k={k}");
            assert!(slots.iter().all(Option::is_none));
        }
    }
}

#[test]
fn a_cpu_that_cannot_leave_during_rollback_is_reported_and_keeps_its_token() {
    let m = Machine::default();
    let (mut runner, mut ops) = fake(&m, 4);
    ops.fail_enter = set(&[3]);
    ops.fail_leave = set(&[1]);
    let mut slots: [Option<Root>; 4] = Default::default();
    let err = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut slots).unwrap_err();
    assert_eq!((err.cpu, err.still_in_vmx), (3, set(&[1])));
    assert!(
        err.to_string().contains("could not leave it again"),
        "{err}"
    );
    assert_eq!(slots[1], Some(Root(1)));
    assert!(slots[0].is_none() && slots[2].is_none() && slots[3].is_none());
}

#[test]
fn leave_all_failure_hands_the_remaining_tokens_back() {
    let m = Machine::default();
    let (mut runner, mut ops) = fake(&m, 3);
    ops.fail_leave = set(&[0, 2]);
    let mut slots: [Option<Root>; 3] = Default::default();
    let all = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut slots).unwrap();
    let (all, err) = all.leave_all(&mut runner, &mut ops).unwrap_err();
    assert_eq!(err.still_in_vmx, set(&[0, 2]));
    assert_eq!(err.first, (2, CpuFailure::Vmx("VMXOFF failed".to_string())));
    assert_eq!(all.cpus_in_vmx(), set(&[0, 2]));
    ops.fail_leave = CpuSet::EMPTY;
    let slots = all
        .leave_all(&mut runner, &mut ops)
        .map_err(|e| e.1)
        .unwrap();
    assert!(slots.iter().all(Option::is_none));
}

#[test]
fn storage_must_fit_and_be_empty() {
    let m = Machine::default();
    let (mut runner, mut ops) = fake(&m, 3);
    let mut short: [Option<Root>; 2] = Default::default();
    let err = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut short).unwrap_err();
    assert_eq!(err.failure, EnterAllFailure::Storage { cpus: 3, slots: 2 });
    let mut used: [Option<Root>; 3] = [None, Some(Root(7)), None];
    assert!(PerCpuVmx::enter_all(&mut runner, &mut ops, &mut used).is_err());
    assert!(m.log.borrow().is_empty());
}

#[test]
fn invvpid_runs_on_every_cpu_in_vmx_and_names_an_unreachable_one() {
    let m = Machine::default();
    MACHINE.with(|c| c.set(Some(&m as *const Machine)));
    let (mut runner, mut ops) = fake(&m, 3);
    let mut slots: [Option<Root>; 3] = Default::default();
    let mut all = PerCpuVmx::enter_all(&mut runner, &mut ops, &mut slots).unwrap();
    m.log.borrow_mut().clear();
    all.invvpid_everywhere(&mut runner, InvvpidType::SingleContext, 5, 0)
        .unwrap();
    assert_eq!(
        *m.log.borrow(),
        [
            Event::Invvpid(0, 5),
            Event::Invvpid(1, 5),
            Event::Invvpid(2, 5)
        ]
    );
    runner.offline = set(&[1]);
    m.log.borrow_mut().clear();
    let err = all
        .invvpid_everywhere(&mut runner, InvvpidType::SingleContext, 6, 0)
        .unwrap_err();
    assert_eq!(err, (1, CpuFailure::Unreachable("no answer")));
    assert_eq!(*m.log.borrow(), [Event::Invvpid(0, 6)]);
    runner.offline = CpuSet::EMPTY;
    MACHINE.with(|c| c.set(None));
    let _ = all
        .leave_all(&mut runner, &mut ops)
        .map_err(|e| e.1)
        .unwrap();
}

#[test]
fn cpu_set_operations() {
    let mut s = CpuSet::EMPTY;
    assert!(s.is_empty());
    assert!(s.insert(0) && s.insert(63) && s.insert(64) && s.insert(255));
    assert!(!s.insert(256));
    assert_eq!(s.len(), 4);
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 63, 64, 255]);
    s.remove(63);
    assert!(!s.contains(63) && s.contains(64));
    assert!(CpuSet::first(256).is_superset(&s));
    assert!(!set(&[0]).is_superset(&s));
    assert_eq!(format!("{:?}", set(&[1, 2])), "{1, 2}");
}
