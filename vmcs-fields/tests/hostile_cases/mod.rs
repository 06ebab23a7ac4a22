//! The case count the crates' hostile-input campaigns share (included by path).

/// The number of cases of a campaign: `default`, or `PROPTEST_CASES` for longer runs.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
