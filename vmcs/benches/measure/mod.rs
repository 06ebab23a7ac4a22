//! The timing loop of the `vmcs` benches.

use std::time::{Duration, Instant};

/// Runs `f` in batches of `batch` calls for about a second and prints the best and median time
/// per call.
pub fn measure(name: &str, batch: u32, mut f: impl FnMut()) {
    for _ in 0..batch {
        f(); // warm-up
    }
    let mut per_call = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        per_call.push(t.elapsed() / batch);
    }
    per_call.sort();
    let median = per_call[per_call.len() / 2];
    println!(
        "{name}: median {:.3} µs, best {:.3} µs per call ({} batches of {batch})",
        median.as_secs_f64() * 1e6,
        per_call[0].as_secs_f64() * 1e6,
        per_call.len()
    );
}
