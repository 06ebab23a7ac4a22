//! Table tests for the checker fixes that the differential test against Bochs
//! (`cargo xtask entry-diff`) found: each row is a VMCS state, built on the known-good baseline,
//! with the outcome the checker must predict and what it must leave unchecked.

mod check_common;
use check_common::*;
use vmcs::check::{Outcome, Rule};

struct Finding {
    /// What the differential test saw.
    what: &'static str,
    setup: fn(&mut Env),
    outcome: Outcome,
    violated: &'static [Rule],
    unchecked: &'static [Rule],
}

fn msr_list(env: &mut Env, entries: &[(u64, u64)]) {
    env.w(e!(VM_ENTRY_MSR_LOAD_COUNT), entries.len() as u64);
    env.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA);
    for (i, (index, value)) in entries.iter().enumerate() {
        env.mem.write_u64(MSR_LOAD_AREA + 16 * i as u64, *index);
        env.mem.write_u64(MSR_LOAD_AREA + 16 * i as u64 + 8, *value);
    }
}

const FINDINGS: &[Finding] = &[
    Finding {
        what: "an MSR-load entry for an MSR without an architectural WRMSR rule (index 4, which \
               Bochs refuses): M6 is undecided, not passed",
        setup: |env| msr_list(env, &[(4, 0)]),
        outcome: Outcome::Success,
        violated: &[],
        unchecked: &[Rule::M6],
    },
    Finding {
        what: "IA32_SYSENTER_CS, IA32_STAR and IA32_TIME_STAMP_COUNTER take any value: M6 decided",
        setup: |env| msr_list(env, &[(0x174, !0), (0xc000_0081, !0), (0x10, !0)]),
        outcome: Outcome::Success,
        violated: &[],
        unchecked: &[],
    },
    Finding {
        what: "a non-canonical IA32_KERNEL_GS_BASE after an undecided entry still fails at its index",
        setup: |env| msr_list(env, &[(0x8b00, 0), (0xc000_0102, 0x7ff0_0000_0000_0000)]),
        outcome: Outcome::EntryFailure {
            exit_reason: 0x8000_0022,
            qualification: 2,
        },
        violated: &[Rule::M6],
        unchecked: &[Rule::M6],
    },
];

#[test]
fn findings_of_the_differential_test() {
    for f in FINDINGS {
        let mut env = Env::tigerlake();
        (f.setup)(&mut env);
        let report = env.check();
        assert_eq!(report.outcome(), f.outcome, "{}", f.what);
        let violated: Vec<Rule> = report.summary.violated.iter().collect();
        assert_eq!(violated, f.violated, "{}", f.what);
        let unchecked: Vec<Rule> = report.summary.unchecked.iter().collect();
        assert_eq!(unchecked, f.unchecked, "{}", f.what);
    }
}
