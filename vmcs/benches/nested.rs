//! Times the pieces of L0's part of a nested round trip on the host, over software VMCSs: the
//! VM-entry checks of L1's VMRESUME (`L1VmxState::enter_l2`), the exit reflected to L1
//! (`L1VmxState::reflect_exit`: exit information and guest state saved into VMCS12, VMCS12's host
//! state loaded as L1's), VMCS02 built from scratch (`build_vmcs02`), and VMCS02's bitmaps merged
//! with L1's: kept merged (`MergedMsrBitmap`/`MergedIoBitmaps`, the words L0 leaves to L1) and
//! from scratch (`merge_msr_bitmap`/`merge_io_bitmaps`). L0's bitmaps are a typical hypervisor's,
//! as mini-hv's: every MSR intercepted but 7, every port intercepted.
//!
//! Run with `cargo bench -p vmcs --bench nested`.

use std::hint::black_box;

#[path = "measure/mod.rs"]
mod measure;
use measure::measure;

/// Calls per timed batch.
const BATCH: u32 = 200;

#[path = "../tests/check_common/mod.rs"]
mod check_common;
#[path = "../tests/nested_common/mod.rs"]
mod nested_common;

use check_common::{Env, baseline};
use nested_common::{Msrs, l0_part, l1_with_current_vmcs, virtual_caps};
use vmcs::check::CpuFacts;
use vmcs::check::EntryInstruction::{Vmlaunch, Vmresume};
use vmcs::nested::{
    FlatGuestMemory, L1Context, L2Entry, MergedIoBitmaps, MergedMsrBitmap, build_vmcs02,
    merge_io_bitmaps, merge_msr_bitmap,
};
use vmcs::structures::{IoBitmaps, MsrAccess, MsrBitmap};
use vmcs::{SoftVmcs, VmcsWrite, fields};
use vmx_caps::PrimaryControls;

const REVISION: u32 = 0x4e53_5431;
const VMXON: u64 = 0x1000;
const VMCS12: u64 = 0x4000;
const MSR_BITMAP12: u64 = 0x8000;
const IO_BITMAPS12: (u64, u64) = (0x9000, 0xa000);
const CX: L1Context = L1Context::long_mode_cpl0();

fn main() {
    let env = Env::tigerlake();
    let caps = virtual_caps(&env.caps, REVISION);
    let mut memory = vec![0u8; 0x40_0000];
    // L1's bitmaps: it intercepts a few MSRs and ports.
    memory[MSR_BITMAP12 as usize + 0x174 / 8] |= 1 << (0x174 % 8);
    memory[IO_BITMAPS12.0 as usize + 0x3f8 / 8] |= 1 << (0x3f8 % 8);
    let mut l1 = l1_with_current_vmcs(&caps, &mut memory, VMXON, VMCS12);
    let mut msrs = Msrs::default();
    let mut cpu = CpuFacts::new(39);
    cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));
    {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut memory,
        };
        let v12 = l1.current_vmcs_mut().expect("current VMCS12");
        baseline(v12);
        v12.write(fields::HOST_RIP, 0x1234_5000).expect("host RIP");
        v12.write(fields::GUEST_RIP, 0x7000_1000)
            .expect("guest RIP");
        v12.modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
            p | PrimaryControls::USE_MSR_BITMAPS | PrimaryControls::USE_IO_BITMAPS
        })
        .expect("controls");
        v12.write(fields::ADDRESS_OF_MSR_BITMAPS, MSR_BITMAP12)
            .expect("MSR bitmap");
        v12.write(fields::ADDRESS_OF_IO_BITMAP_A, IO_BITMAPS12.0)
            .expect("I/O bitmap A");
        v12.write(fields::ADDRESS_OF_IO_BITMAP_B, IO_BITMAPS12.1)
            .expect("I/O bitmap B");
        let entry = l1
            .enter_l2(
                &CX,
                Vmlaunch,
                cpu,
                &mut mem,
                &mut |_: &vmcs::check::Violation| {},
                &mut msrs,
            )
            .expect("VMCS12 checked");
        assert_eq!(entry, L2Entry::Enter);
    }
    let l0 = l0_part();
    let mut vmcs02 = SoftVmcs::new(&env.caps);
    let built = build_vmcs02(
        l1.current_vmcs().expect("current VMCS12"),
        &env.vmcs,
        &l0,
        &env.caps,
        &mut vmcs02,
    )
    .expect("VMCS02 built");
    // The processor's exit: CPUID, 2 bytes.
    for (f, v) in [
        (fields::EXIT_REASON.encoding(), 10),
        (fields::VM_EXIT_INSTRUCTION_LENGTH.encoding(), 2),
        (fields::GUEST_RIP.encoding(), 0x7000_2000),
    ] {
        vmcs02.store(f, v).expect("exit field");
    }

    // L1's VMRESUME: VMCS12 checked as the processor checks a VMCS (and passing).
    {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut memory,
        };
        let entry = l1.enter_l2(
            &CX,
            Vmresume,
            cpu,
            &mut mem,
            &mut |_: &vmcs::check::Violation| {},
            &mut msrs,
        );
        assert_eq!(entry.expect("VMCS12 checked"), L2Entry::Enter);
    }
    measure(
        "enter_l2 (VMRESUME: VMCS12's VM-entry checks)",
        BATCH,
        || {
            let mut mem = FlatGuestMemory {
                base: 0,
                bytes: &mut memory,
            };
            let entry = l1.enter_l2(
                &CX,
                Vmresume,
                cpu,
                &mut mem,
                &mut |_: &vmcs::check::Violation| {},
                &mut msrs,
            );
            black_box(entry).expect("VMCS12 checked");
        },
    );
    // L2's exit reflected: saved into VMCS12, L1's state from VMCS12's host state.
    let mut vmcs01 = env.vmcs.clone();
    measure(
        "reflect_exit (exit saved into VMCS12, L1's host state)",
        BATCH,
        || {
            let mut mem = FlatGuestMemory {
                base: 0,
                bytes: &mut memory,
            };
            let r = l1.reflect_exit(&vmcs02, &vmcs02, &built, &mut vmcs01, &mut mem, &mut msrs);
            black_box(r).expect("reflected");
        },
    );
    measure("build_vmcs02 (from scratch)", BATCH, || {
        let mut out = SoftVmcs::new(&env.caps);
        let b = build_vmcs02(
            l1.current_vmcs().expect("current VMCS12"),
            &env.vmcs,
            &l0,
            &env.caps,
            &mut out,
        );
        black_box(b).expect("built");
    });

    // VMCS02's bitmaps: a typical L0 intercepts every MSR but 7 and every port.
    let mut l0_msr = MsrBitmap::intercept_all();
    for msr in [
        0x174,
        0x175,
        0x176,
        0x10,
        0xc000_0100,
        0xc000_0101,
        0xc000_0102,
    ] {
        l0_msr.pass_through(msr, MsrAccess::Read).expect("in range");
    }
    for msr in [0x174, 0x175, 0x176, 0xc000_0100, 0xc000_0101, 0xc000_0102] {
        l0_msr
            .pass_through(msr, MsrAccess::Write)
            .expect("in range");
    }
    let l0_io = IoBitmaps::intercept_all();
    let (mut msr_out, mut io_out) = (MsrBitmap::pass_all(), IoBitmaps::pass_all());
    let vmcs12 = l1.current_vmcs().expect("current VMCS12").clone();
    {
        let mut msr_kept = MergedMsrBitmap::new(&l0_msr, &mut msr_out);
        let mut io_kept = MergedIoBitmaps::new(&l0_io, &mut io_out);
        println!(
            "L0's bitmaps leave {} MSR-bitmap and {} I/O-bitmap words to L1",
            msr_kept.open_words(),
            io_kept.open_words()
        );
        measure(
            "bitmaps kept merged (MergedMsrBitmap + MergedIoBitmaps)",
            BATCH,
            || {
                let mut mem = FlatGuestMemory {
                    base: 0,
                    bytes: &mut memory,
                };
                msr_kept.merge(&vmcs12, &mut mem).expect("merged");
                io_kept.merge(&vmcs12, &mut mem).expect("merged");
                black_box((msr_kept.bitmap(), io_kept.bitmap()));
            },
        );
    }
    measure(
        "bitmaps merged from scratch (merge_msr_bitmap + merge_io_bitmaps)",
        BATCH,
        || {
            let mut mem = FlatGuestMemory {
                base: 0,
                bytes: &mut memory,
            };
            merge_msr_bitmap(&vmcs12, &mut mem, &l0_msr, &mut msr_out).expect("merged");
            merge_io_bitmaps(&vmcs12, &mut mem, &l0_io, &mut io_out).expect("merged");
            black_box((&msr_out, &io_out));
        },
    );
}
