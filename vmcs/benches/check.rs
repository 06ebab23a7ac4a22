//! Times one full VM-entry check of a realistic VMCS (the tests' known-good 64-bit guest and host
//! on Bochs' `tigerlake` capabilities, plus an 8-entry VM-entry MSR-load area read from memory).
//!
//! Run with `cargo bench -p vmcs --bench check`. Target: at most 5 µs per check.

use std::hint::black_box;

#[path = "measure/mod.rs"]
mod measure;
use measure::measure;

/// Calls per timed batch.
const BATCH: u32 = 1000;

#[path = "../tests/check_common/mod.rs"]
mod check_common;
use check_common::*;
use vmcs::check::{FlatMemory, Outcome, Report, Violation};

fn main() {
    let mut env = Env::tigerlake();
    // A realistic MSR-load area: 8 entries the checker has to read and classify, each an MSR
    // whose WRMSR rule is architectural (so M6 is decided, not left unchecked).
    let mut area = vec![0u8; 8 * 16];
    let msrs: [(u32, u64); 8] = [
        (0x174, 0x10),                        // IA32_SYSENTER_CS
        (0x175, 0xffff_8000_0000_2000),       // IA32_SYSENTER_ESP
        (0x176, 0xffff_8000_0000_3000),       // IA32_SYSENTER_EIP
        (0xc000_0081, 0x0023_0010_0000_0000), // IA32_STAR
        (0xc000_0082, 0xffff_8000_0000_4000), // IA32_LSTAR
        (0xc000_0083, 0xffff_8000_0000_5000), // IA32_CSTAR
        (0x277, 0x0007_0406_0007_0406),       // IA32_PAT (power-on default)
        (0xc000_0102, 0xffff_8000_0010_0000), // IA32_KERNEL_GS_BASE
    ];
    for (i, (index, value)) in msrs.iter().enumerate() {
        area[i * 16..i * 16 + 8].copy_from_slice(&u64::from(*index).to_le_bytes());
        area[i * 16 + 8..i * 16 + 16].copy_from_slice(&value.to_le_bytes());
    }
    env.w(e!(VM_ENTRY_MSR_LOAD_COUNT), msrs.len() as u64);
    env.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA);
    let checker = env.checker();
    let vmcs = env.vmcs.clone();

    let run = || {
        let mut memory = FlatMemory {
            base: MSR_LOAD_AREA,
            bytes: &area,
        };
        let mut count = 0usize;
        let summary = checker
            .check(black_box(&vmcs), &mut memory, &mut |_: &Violation| {
                count += 1
            })
            .expect("check runs");
        black_box((summary, count))
    };
    let (summary, count) = run();
    assert_eq!(summary.outcome, Outcome::Success);
    assert_eq!(count, 0);
    assert!(summary.unchecked.is_empty(), "{:?}", summary.unchecked);

    // Also time a report of a broken VMCS (every violation recorded).
    let broken = {
        let mut e = env.clone();
        e.w(e!(GUEST_CS_ACCESS_RIGHTS), 0x1_0000);
        e.w(e!(HOST_CR0), 0);
        e.vmcs
    };
    let report_run = || {
        let mut memory = FlatMemory {
            base: MSR_LOAD_AREA,
            bytes: &area,
        };
        let report: Report<64> = checker
            .report(black_box(&broken), &mut memory)
            .expect("check runs");
        black_box(report.summary.violations)
    };
    assert!(report_run() > 0);

    measure("full check, valid VMCS", BATCH, || {
        run();
    });
    measure("full check into Report<64>, broken VMCS", BATCH, || {
        report_run();
    });
}
