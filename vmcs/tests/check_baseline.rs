//! The baseline VMCS is valid; the summary and the outcome prediction behave.

mod check_common;
use check_common::*;
use vmcs::check::Outcome;

#[test]
fn baseline_is_valid_on_tigerlake() {
    let env = Env::tigerlake();
    let report = env.check();
    let v: Vec<String> = report.violations().map(|v| v.to_string()).collect();
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(report.outcome(), Outcome::Success);
    assert!(
        report.summary.unchecked.is_empty(),
        "{:?}",
        report.summary.unchecked
    );
}

#[test]
fn baseline_is_valid_on_permissive() {
    let env = Env::permissive();
    let report = env.check();
    let v: Vec<String> = report.violations().map(|v| v.to_string()).collect();
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(report.outcome(), Outcome::Success);
}
