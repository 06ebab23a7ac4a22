//! The checker's API: rule table, unchecked rules, outcome prediction order, reports, errors,
//! and a property test over random VMCS mutations.

mod check_common;
use check_common::*;
use proptest::prelude::*;
use vmcs::check::{
    Checker, Coverage, Expected, FlatMemory, MemoryError, NoMemory, Outcome, PhysMemory, Report,
    Rule, RuleGroup, RuleSet, Violation,
};
use vmcs::{VmcsRead, fields};
use vmx_core::{VmFail, VmInstructionError};

fn fail_valid(n: u32) -> Outcome {
    Outcome::VmFailValid(VmInstructionError::from_raw(n))
}
fn exit(reason: u32, qualification: u64) -> Outcome {
    Outcome::EntryFailure {
        exit_reason: 0x8000_0000 | reason,
        qualification,
    }
}

#[test]
fn rule_table() {
    assert_eq!(Rule::COUNT, 245);
    let mut seen = std::collections::HashSet::new();
    for rule in Rule::ALL {
        assert!(seen.insert(rule.id()), "{rule} twice");
        assert_eq!(Rule::from_id(rule.id()), Some(rule));
        assert!(rule.summary().ends_with('.'), "{rule}");
        assert!(!rule.section_title().is_empty());
    }
    assert_eq!(Rule::from_id("Z9"), None);
    assert_eq!(Rule::K23.group(), RuleGroup::GuestNonRegisterState);
    assert_eq!(Rule::M7.section_title(), "Loading MSRs");
    let not_covered: Vec<Rule> = Rule::ALL
        .into_iter()
        .filter(|r| matches!(r.coverage(), Coverage::NotCovered(_)))
        .collect();
    assert_eq!(RuleSet::covered().len() + not_covered.len(), Rule::COUNT);
    // The list the module docs give.
    let ids: Vec<&str> = not_covered.iter().map(|r| r.id()).collect();
    assert_eq!(
        ids,
        [
            "P1", "P2", "P3", "P9", "A46", "A47", "A48", "A49", "D20", "D21", "D22", "D23", "G25",
            "G32", "G33", "H40", "K17"
        ]
    );
}

#[test]
fn memory_rules_without_memory_are_unchecked_not_passed() {
    let mut env = Env::tigerlake();
    env.set(e!(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS), 1 << 21);
    env.w(e!(VIRTUAL_APIC_ADDRESS), VIRTUAL_APIC);
    env.w(e!(VMCS_LINK_POINTER), LINK_VMCS);
    env.w(e!(VM_ENTRY_MSR_LOAD_COUNT), 2);
    env.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA);
    // Two entries loading IA32_SYSENTER_CS (any value is valid), so that with memory every rule
    // is decided.
    env.mem.write_u64(MSR_LOAD_AREA, 0x174);
    env.mem.write_u64(MSR_LOAD_AREA + 16, 0x174);
    let summary = env
        .checker()
        .check(&env.vmcs, &mut NoMemory, &mut |_: &Violation| {})
        .unwrap();
    assert_eq!(summary.outcome, Outcome::Success);
    let unchecked: Vec<Rule> = summary.unchecked.iter().collect();
    assert_eq!(
        unchecked,
        [
            Rule::A13,
            Rule::K23,
            Rule::M1,
            Rule::M2,
            Rule::M3,
            Rule::M4,
            Rule::M5,
            Rule::M6
        ]
    );
    // With memory they are checked.
    let report = env.check();
    assert!(report.summary.unchecked.is_empty());
    // Unknown model-specific masks leave their rules unchecked.
    env.cpu.perf_global_ctrl_reserved = None;
    env.set(e!(VM_ENTRY_CONTROLS), 1 << 13);
    assert!(env.check().summary.unchecked.contains(Rule::G16));
}

#[test]
fn prediction_follows_sdm_order() {
    let base = Env::tigerlake();
    let outcome = |f: &dyn Fn(&mut Env)| {
        let mut env = base.clone();
        f(&mut env);
        env.check().outcome()
    };
    let bad_controls = |e: &mut Env| e.clear(e!(PIN_BASED_VM_EXECUTION_CONTROLS), 2);
    let bad_host = |e: &mut Env| e.w(e!(HOST_CS_SELECTOR), 0);
    let bad_guest = |e: &mut Env| e.w(e!(GUEST_RFLAGS), 0);
    let bad_link = |e: &mut Env| e.w(e!(VMCS_LINK_POINTER), 0x3008);
    let bad_pdpte = |e: &mut Env| {
        e.clear(e!(VM_ENTRY_CONTROLS), 1 << 9);
        e.w(e!(GUEST_IA32_EFER), 0);
        e.w(e!(GUEST_CS_ACCESS_RIGHTS), 0xc09b);
        e.w(e!(GUEST_PDPTE2), 0x5007);
    };
    let bad_msrs = |e: &mut Env| {
        e.w(e!(VM_ENTRY_MSR_LOAD_COUNT), 4);
        e.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA);
        e.mem.write_u64(MSR_LOAD_AREA + 16 * 3, 0xc000_0100); // entry 4: FS base
        e.mem.write_u64(MSR_LOAD_AREA + 16 * 2, 0x808); // entry 3: x2APIC
    };
    assert_eq!(
        outcome(&|e| {
            e.launch.current_vmcs = None;
            bad_controls(e)
        }),
        Outcome::VmFailInvalid
    );
    assert_eq!(
        outcome(&|e| {
            e.launch.blocked_by_mov_ss = true;
            e.launch.launch_state = vmcs::check::LaunchState::Launched
        }),
        fail_valid(26)
    );
    assert_eq!(
        outcome(&|e| {
            e.launch.launch_state = vmcs::check::LaunchState::Launched;
            bad_controls(e)
        }),
        fail_valid(4)
    );
    assert_eq!(
        outcome(&|e| {
            bad_controls(e);
            bad_host(e);
            bad_guest(e)
        }),
        fail_valid(7)
    );
    assert_eq!(
        outcome(&|e| {
            bad_host(e);
            bad_guest(e);
            bad_msrs(e)
        }),
        fail_valid(8)
    );
    assert_eq!(
        outcome(&|e| {
            bad_guest(e);
            bad_link(e)
        }),
        exit(33, 0)
    );
    assert_eq!(
        outcome(&|e| {
            bad_link(e);
            bad_pdpte(e)
        }),
        exit(33, 4)
    );
    assert_eq!(
        outcome(&|e| {
            bad_pdpte(e);
            bad_msrs(e)
        }),
        exit(33, 2)
    );
    assert_eq!(outcome(&|e| bad_msrs(e)), exit(34, 3));
    assert_eq!(outcome(&|_| ()), Outcome::Success);
}

#[test]
fn reports_keep_count_beyond_capacity() {
    let mut env = Env::tigerlake();
    for field in [
        e!(HOST_CS_SELECTOR),
        e!(HOST_TR_SELECTOR),
        e!(GUEST_RFLAGS),
        e!(GUEST_GDTR_LIMIT),
    ] {
        env.w(
            field,
            if field == e!(GUEST_GDTR_LIMIT) {
                0x1_0000
            } else {
                0
            },
        );
    }
    let mut mem = env.mem.clone();
    let small: Report<2> = env.checker().report(&env.vmcs, &mut mem).unwrap();
    assert_eq!(small.violations().count(), 2);
    assert_eq!(small.summary.violations, 4);
    assert_eq!(small.dropped(), 2);
    let mut all = Vec::new();
    let summary = env
        .checker()
        .check(&env.vmcs, &mut mem, &mut |v: &Violation| all.push(*v))
        .unwrap();
    assert_eq!(summary, small.summary);
    let rules: Vec<&str> = all.iter().map(|v| v.rule.id()).collect();
    assert_eq!(rules, ["E8", "E9", "I3", "J4"]);
    assert_eq!(
        small.violations().map(|v| v.rule).collect::<Vec<_>>(),
        [Rule::E8, Rule::E9]
    );
    let e8 = all.iter().find(|v| v.rule == Rule::E8).unwrap();
    assert_eq!(e8.fields.as_slice(), [fields::HOST_CS_SELECTOR.encoding()]);
    assert_eq!((e8.actual, e8.expected), (0, Expected::NotEqual(0)));
    assert_eq!(e8.outcome, fail_valid(8));
    assert_eq!(
        e8.to_string(),
        "E8 [Checks on Host Segment and Descriptor-Table Registers] Host CS selector is not 0000H. \
         fields: HOST_CS_SELECTOR; actual 0x0, expected != 0x0 -> VMfailValid, VM-instruction \
         error 8: VM entry with invalid host-state field(s)"
    );
}

#[test]
fn observed_outcomes_compare_with_predictions() {
    assert_eq!(
        Outcome::observed(Err(VmFail::Invalid), 0, 0),
        Outcome::VmFailInvalid
    );
    let seven = VmFail::Valid(VmInstructionError::from_raw(7));
    assert_eq!(Outcome::observed(Err(seven), 0, 0), fail_valid(7));
    assert_eq!(Outcome::observed(Ok(()), 0x8000_0021, 4), exit(33, 4));
    assert_eq!(Outcome::observed(Ok(()), 12, 0), Outcome::Success); // a HLT exit
    assert_eq!(exit(34, 2).kind(), "entry_failure");
}

#[test]
fn flat_memory_bounds() {
    let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
    let mut m = FlatMemory {
        base: 0x1000,
        bytes: &bytes,
    };
    assert_eq!(
        m.read_u64(0x1001),
        Ok(u64::from_le_bytes([2, 3, 4, 5, 6, 7, 8, 9]))
    );
    assert_eq!(
        m.read_u64(0x1002),
        Err(MemoryError::OutOfRange {
            address: 0x1002,
            len: 8
        })
    );
    assert!(m.read_u64(0xfff).is_err());
    assert!(m.read_u64(u64::MAX).is_err());
    assert_eq!(NoMemory.read_u64(0), Err(MemoryError::Unavailable));
}

/// A backend that has lost one field.
struct Missing<'a>(&'a vmcs::SoftVmcs, u32);
impl VmcsRead for Missing<'_> {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        if encoding == self.1 {
            Err(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent))
        } else {
            self.0.read_raw(encoding)
        }
    }
}

#[test]
fn unreadable_fields() {
    let env = Env::tigerlake();
    let checker = env.checker();
    let mut mem = env.mem.clone();
    // A field every VMX processor has: an error naming it.
    let err = checker
        .report::<8, _, _>(&Missing(&env.vmcs, e!(GUEST_CR0)), &mut mem)
        .unwrap_err();
    assert_eq!(err.encoding, e!(GUEST_CR0));
    // An optional field: its rules are unchecked.
    let report = checker
        .report::<8, _, _>(&Missing(&env.vmcs, e!(EPT_POINTER)), &mut mem)
        .unwrap();
    assert!(report.summary.unchecked.contains(Rule::A28));
    assert_eq!(report.outcome(), Outcome::Success);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any mutation of the baseline: the check runs, the sink sees what the summary counts,
    /// every violation's expectation rejects its actual value, and success means no violation.
    #[test]
    fn random_mutations(writes in prop::collection::vec((0..fields::COUNT, any::<u64>(), 0u8..4), 1..6)) {
        let mut env = Env::permissive();
        for (index, value, shape) in writes {
            let info = &fields::ALL[index];
            // Mostly single-bit flips, sometimes arbitrary values.
            let old = env.vmcs.read_raw(info.encoding).unwrap();
            let new = match shape {
                0 => value,
                _ => old ^ (1 << (value % 64)),
            };
            env.vmcs.store(info.encoding, new).unwrap();
        }
        let mut seen: Vec<Violation> = Vec::new();
        let mut mem = env.mem.clone();
        let checker: Checker = env.checker();
        let summary = checker.check(&env.vmcs, &mut mem, &mut |v: &Violation| seen.push(*v)).unwrap();
        prop_assert_eq!(summary.violations, seen.len());
        prop_assert_eq!(summary.outcome == Outcome::Success, seen.is_empty());
        for v in &seen {
            prop_assert!(summary.violated.contains(v.rule));
            prop_assert!(!v.expected.accepts(v.actual), "{}", v);
            prop_assert_eq!(v.rule.coverage(), Coverage::Covered);
        }
    }
}

#[test]
fn cpu_facts_from_this_processor() {
    let facts = vmcs::check::CpuFacts::from_cpuid();
    assert!((32..=52).contains(&facts.maxphyaddr), "{facts:?}");
    assert!(matches!(facts.linear_address_width, 48 | 57), "{facts:?}");
    assert!(facts.features.contains(vmcs::check::CpuFeatures::INTEL64));
    assert_eq!(
        vmcs::check::CpuFacts::perf_global_ctrl_mask(4, 3),
        !0x7_0000_000f
    );
    assert_eq!(vmcs::check::CpuFacts::perf_global_ctrl_mask(64, 64), 0);
}
