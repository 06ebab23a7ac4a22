//! Differential testing of the software VM-entry checker (`vmcs::check`) against the processor.
//!
//! Selected with `mini-hv.entry-diff=<cases>` on the kernel command line (seed:
//! `mini-hv.entry-diff-seed=<seed>`, default 1). Starting from the known-good VMCS the hypervisor
//! builds for its guest — with the guest parked on a VMCALL and the VMX-preemption timer at 0, so
//! that a VM entry that succeeds exits again before the guest executes anything — each case:
//! 1. rewrites the known-good VMCS (every writable field) and the MSR areas,
//! 2. applies one to three seeded random mutations aimed at the VM-entry rules (bit flips and
//!    boundary values in the controls, host and guest fields, event injection, the VM-entry
//!    MSR-load list), or, every fourth case, the next combination of the event-injection grid
//!    (interruption type × vector × deliver-error-code × guest mode: CR0.PE = 0 and 1, with and
//!    without "unrestricted guest"; IA32_VMX_BASIC\[56\] is the model's),
//! 3. asks the checker for its prediction ([`check::Outcome`]),
//! 4. executes the real VMLAUNCH and records what happened ([`check::Outcome::observed`]),
//! 5. recovers: after a VM entry that succeeded (the VMCS is now launched) VMCLEAR and VMPTRLD
//!    make it clear again.
//!
//! Each case is also launched the way a guest hypervisor's VMLAUNCH reaches an outer one (nested
//! VMX): the mutated VMCS, as L1's VMCS12 under the processor's own capabilities, goes through
//! [`vmcs::nested::L1VmxState`] (VMXON, VMPTRLD, `enter_l2`) and must give the checker's
//! prediction, so that L0's emulation agrees with the processor wherever the checker does.
//!
//! Each disagreement is printed on one line (the mutation, the prediction with its rules, the
//! actual outcome); a disagreement that a known deviation of Bochs from the SDM explains
//! ([`BOCHS_DEVIATIONS`]) is counted as excused. The run ends with
//! `entry-diff: <N> cases, <A> agree, <D> disagree, <E> excused` and passes only with `D = 0`.
//!
//! Host-state mutations are restricted to values the SDM makes VM entry reject (fixed CR bits,
//! non-canonical bases, selector RPL/TI bits, reserved EFER bits): a host-state value that VM
//! entry accepted would be loaded at the next VM exit, and this host has to survive it.

use vmcs::check::{self, Outcome};
use vmcs::structures::{InFrame, IoBitmaps, MsrArea, MsrBitmap, MsrEntry};
use vmcs::{VmcsSnapshot, VmcsWrite, fields};
use vmx_caps::msr::IA32_SYSENTER_CS;
use vmx_caps::{CrUse, VmxCapabilities};
use vmx_core::{GuestRegisters, RunError, VmFail, VmcsRegion};

use crate::hv::test_guest::{self, TestMachine};
use crate::hv::{self, Vmcs, extras, vcpu};
use crate::{print, println};

mod deviations;
mod mutations;
mod nested;

use deviations::{BOCHS_DEVIATIONS, bochs_excuses, deviation, same_guest_failure};
use mutations::{Env, GRID_SIZE, Mutation, Rng, grid_combination, inject_grid, mutate};
use nested::l1_launch;

/// The parameters of a run, from the kernel command line.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Number of cases.
    pub cases: u32,
    /// PRNG seed.
    pub seed: u64,
    /// Execute only this case (the others are generated but neither checked nor launched), to
    /// find a disagreement's trace in the emulator's log.
    pub only: Option<u32>,
    /// Print each case's mutation before its VM entry (`mini-hv.entry-diff-trace`).
    pub trace: bool,
}

/// The differential mode's parameters, if the command line asks for it.
pub fn requested() -> Option<Params> {
    let mut cases = None;
    let mut seed = 1;
    let mut only = None;
    let mut trace = false;
    for word in crate::boot::cmdline().split_ascii_whitespace() {
        if word == "mini-hv.entry-diff-trace" {
            trace = true;
        } else if let Some(v) = word.strip_prefix("mini-hv.entry-diff=") {
            match v.parse() {
                Ok(n) => cases = Some(n),
                Err(_) => println!("mini-hv: ignoring mini-hv.entry-diff={v} (not a number)"),
            }
        } else if let Some(v) = word.strip_prefix("mini-hv.entry-diff-only=") {
            only = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("mini-hv.entry-diff-seed=") {
            match v.parse() {
                Ok(s) => seed = s,
                Err(_) => println!("mini-hv: ignoring mini-hv.entry-diff-seed={v} (not a number)"),
            }
        }
    }
    cases.map(|cases| Params {
        cases,
        seed,
        only,
        trace,
    })
}

/// Guest-physical address of the VMCALL the guest is parked on.
const STUB_GPA: u64 = 0x7000;
/// VMCALL; HLT; JMP $.
const STUB: [u8; 6] = [0x0f, 0x01, 0xc1, 0xf4, 0xeb, 0xfe];

/// Entries of the VM-entry MSR-load area (past the recommended maximum of 512).
const ENTRY_AREA_ENTRIES: usize = 1024;
/// The VM-entry MSR-load area.
type EntryArea = MsrArea<ENTRY_AREA_ENTRIES>;
/// Each VM-exit MSR area.
type ExitArea = MsrArea<256>;

/// Identity-mapped physical memory below 4 GiB, for the checker's memory rules.
struct IdentityMemory;

impl check::PhysMemory for IdentityMemory {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), check::MemoryError> {
        let out = check::MemoryError::OutOfRange {
            address,
            len: buf.len(),
        };
        let end = address.checked_add(buf.len() as u64).ok_or(out)?;
        if end > 1 << 32 {
            return Err(out);
        }
        // SAFETY: the boot code identity-maps the first 4 GiB; plain physical reads (RAM, or what
        // the platform answers for unbacked addresses), as VM entry itself makes.
        unsafe {
            core::ptr::copy_nonoverlapping(address as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }
}

/// Runs the differential test on the test guest's machine ([`TestMachine`], without the
/// controls of its extra checks); `Pass` when no disagreement is left unexcused.
pub fn run(params: Params) -> hv::Outcome {
    if !hv::vmx_present() {
        return hv::Outcome::Unsupported;
    }
    let mut machine = match TestMachine::prepare() {
        Ok(machine) => machine,
        Err(outcome) => return outcome,
    };
    // The known-good VMCS has no PML: the EPT needs no dirty flags.
    let ept = hv::guest_ram_ept(
        &machine.root,
        machine.ept_config.accessed_dirty(false),
        &machine.mem,
    );
    let outcome = match (
        ept,
        test_guest::bitmaps(),
        hv::new_vmcs_region(&machine.caps),
    ) {
        (Some(ept), Some((msr_bitmap, io_bitmaps)), Some(region)) => {
            let setup = Setup {
                root: &mut machine.root,
                region,
                caps: &machine.caps,
                controls: &extras::without(machine.negotiated.value),
                eptp: ept.eptp(),
                msr_bitmap,
                io_bitmaps,
                vpid: machine.vpid,
                ram_base: machine.mem.host_base(),
            };
            differ(params, setup)
        }
        _ => hv::Outcome::Fail,
    };
    machine.xsave.restore();
    match hv::leave_vmx(machine.root) {
        hv::Outcome::Pass => outcome,
        failed => failed,
    }
}

/// What the cases start from: the test guest's machine.
struct Setup<'a> {
    /// VMX root operation.
    root: &'a mut hv::Root,
    /// The VMCS region (initialised, not current).
    region: &'static mut VmcsRegion,
    /// The capabilities.
    caps: &'a VmxCapabilities,
    /// The negotiated controls.
    controls: &'a vmx_caps::ControlSet,
    /// The EPT pointer of guest RAM.
    eptp: ept::EptPointer,
    /// The MSR bitmap.
    msr_bitmap: &'a MsrBitmap,
    /// The I/O bitmaps.
    io_bitmaps: &'a IoBitmaps,
    /// "enable VPID" negotiated.
    vpid: bool,
    /// Host address of guest-physical 0.
    ram_base: u64,
}

/// The cases, from the known-good VMCS in `setup`.
fn differ(params: Params, setup: Setup<'_>) -> hv::Outcome {
    let Setup {
        root,
        region,
        caps,
        controls,
        eptp,
        msr_bitmap,
        io_bitmaps,
        vpid,
        ram_base,
    } = setup;
    let frames = |bytes: usize| crate::mem::alloc_frames(bytes.div_ceil(4096));
    let (Some(entry_frames), Some(store_frames), Some(load_frames)) = (
        frames(size_of::<EntryArea>()),
        frames(size_of::<ExitArea>()),
        frames(size_of::<ExitArea>()),
    ) else {
        println!("mini-hv: entry-diff: out of memory for the MSR areas");
        return hv::Outcome::Fail;
    };
    // SAFETY: fresh identity-mapped frame runs of the areas' sizes, used only as these areas for
    // the rest of the run.
    let areas = unsafe {
        EntryArea::from_frame(entry_frames as *mut u8).and_then(|entry| {
            Ok((
                entry,
                ExitArea::from_frame(store_frames as *mut u8)?,
                ExitArea::from_frame(load_frames as *mut u8)?,
            ))
        })
    };
    let (entry_area, exit_store, exit_load) = match areas {
        Ok(areas) => areas,
        Err(e) => {
            println!("mini-hv: entry-diff: cannot place the MSR areas: {e}");
            return hv::Outcome::Fail;
        }
    };
    // SAFETY: guest RAM is host memory owned by the hypervisor, identity-mapped; the stub lies
    // in its low, otherwise unused part.
    unsafe {
        core::ptr::copy_nonoverlapping(STUB.as_ptr(), (ram_base + STUB_GPA) as *mut u8, STUB.len())
    };
    // The VM-exit MSR-load list only ever holds IA32_SYSENTER_CS = 0 (harmless for this host,
    // whatever the count), so that no mutation turns a VM exit into a VMX abort.
    fill_msr_area(exit_load);
    fill_msr_area(entry_area);
    let entry_area: &'static EntryArea = entry_area;
    let Some(feature_frames) = crate::mem::alloc_frames(4) else {
        println!("mini-hv: entry-diff: out of memory for the feature frames");
        return hv::Outcome::Fail;
    };
    let mut active = match region.load(root, &hv::identity) {
        Ok(active) => active,
        Err(e) => {
            println!("mini-hv: entry-diff: cannot load the VMCS: {e}");
            return hv::Outcome::Fail;
        }
    };
    // The known-good VMCS loads and stores no MSR (counts 0); the mutations raise the counts.
    let mut known_good = || -> Result<VmcsSnapshot, hv::SetupError> {
        hv::write_vmcs(&mut active, controls, eptp, msr_bitmap, io_bitmaps, vpid)?;
        vcpu::write_reset_state(&mut active, hv::cr_policy(caps), caps, STUB_GPA)?;
        active.write(fields::VMX_PREEMPTION_TIMER_VALUE, 0)?;
        active.write(
            fields::VM_ENTRY_MSR_LOAD_ADDRESS,
            entry_area.phys_addr(&hv::identity)?,
        )?;
        active.write(
            fields::VM_EXIT_MSR_STORE_ADDRESS,
            exit_store.phys_addr(&hv::identity)?,
        )?;
        active.write(
            fields::VM_EXIT_MSR_LOAD_ADDRESS,
            exit_load.phys_addr(&hv::identity)?,
        )?;
        Ok(VmcsSnapshot::capture(&active)?)
    };
    let baseline = known_good();
    let baseline = match baseline {
        Ok(snapshot) => snapshot,
        Err(fail) => {
            println!("mini-hv: entry-diff: writing the known-good VMCS failed: {fail}");
            return hv::Outcome::Fail;
        }
    };
    let cpu = check::CpuFacts::from_cpuid();
    let vmxon = active.root().vmxon_region_phys();
    let env = Env {
        maxphyaddr: hv::phys_addr_width(),
        cr0_fixed: caps.cr0_fixed_bits(CrUse::Vmx),
        cr4_fixed: caps.cr4_fixed_bits(),
        entry_area_phys: match entry_area.phys_addr(&hv::identity) {
            Ok(phys) => phys,
            Err(e) => {
                println!("mini-hv: entry-diff: {e}");
                return hv::Outcome::Fail;
            }
        },
        entry_area,
        msr_list_max: caps.misc.max_msr_list_entries(),
        frames: core::array::from_fn(|i| feature_frames + 4096 * i as u64),
        revision: caps.basic.revision_id(),
        vmcs_phys: active.phys_addr(),
        vmxon_phys: vmxon,
        mtf: caps
            .proc
            .allows(vmx_caps::PrimaryControls::MONITOR_TRAP_FLAG),
    };
    println!(
        "mini-hv: entry-diff: start: {} cases, seed {}, MAXPHYADDR {}",
        params.cases, params.seed, env.maxphyaddr
    );

    for d in BOCHS_DEVIATIONS {
        println!(
            "mini-hv: entry-diff: excusable {}: Bochs {} ({})",
            d.id, d.bochs, d.sdm
        );
    }
    let mut rng = Rng(params.seed);
    let mut regs = GuestRegisters::new();
    let (mut agree, mut disagree, mut excused) = (0u32, 0u32, 0u32);
    let (mut nested_agree, mut nested_disagree) = (0u32, 0u32);
    let mut by_outcome = [0u32; 6];
    let mut agree_in_other_order = 0u32;
    let (mut grid_cases, mut grid_failed) = (0u32, 0u32);
    for case in 0..params.cases {
        if let Err(fail) = restore(&mut active, &baseline) {
            println!("mini-hv: entry-diff: case {case}: restoring the VMCS failed: {fail}");
            return hv::Outcome::Fail;
        }
        reset_msr_area(entry_area);
        let mut mutation = Mutation::new();
        let grid = grid_combination(case);
        let mutated = match grid {
            Some(index) => inject_grid(&env, &mut active, &mut mutation, index),
            None => mutate(&mut rng, &env, &mut active, &mut mutation),
        };
        if let Err(fail) = mutated {
            println!("mini-hv: entry-diff: case {case}: VMWRITE failed: {fail} ({mutation})");
            return hv::Outcome::Fail;
        }
        if params.only.is_some_and(|only| only != case) {
            continue;
        }
        let launch =
            check::LaunchContext::new(check::EntryInstruction::Vmlaunch, active.phys_addr(), vmxon);
        let checker = check::Checker::new(caps, cpu, launch);
        let report: check::Report<32> = match checker.report(&active, &mut IdentityMemory) {
            Ok(report) => report,
            Err(e) => {
                println!("mini-hv: entry-diff: case {case}: the checker failed: {e} ({mutation})");
                return hv::Outcome::Fail;
            }
        };
        let predicted = report.outcome();
        match l1_launch(caps, cpu, &active, vmxon, env.maxphyaddr) {
            Ok(nested) if nested == predicted => nested_agree += 1,
            Ok(nested) => {
                nested_disagree += 1;
                println!(
                    "mini-hv: entry-diff: NESTED-DISAGREE case {case}: mutation: {mutation}; \
                     checker: {predicted}; L1's VMLAUNCH through L0's emulation: {nested}"
                );
            }
            Err(why) => {
                println!("mini-hv: entry-diff: case {case}: nested launch: {why} ({mutation})");
                return hv::Outcome::Fail;
            }
        }
        if params.trace {
            println!("mini-hv: entry-diff: case {case}: {mutation}; predicted: {predicted}");
        }
        active.reset_host_state_cache();
        // SAFETY: the host-state area is this host's (host mutations are limited to values VM
        // entry must reject); EPT maps guest RAM only; the guest exits before its first
        // instruction (preemption timer 0) or at the VMCALL it is parked on; CR4.OSFXSR set,
        // CR0.TS/EM clear (boot code); the NMI handler only reports and stops.
        let status = unsafe { active.run(&mut regs) };
        let observed = match status {
            Ok(()) => {
                let reason = active.read_raw(fields::EXIT_REASON.encoding());
                let qualification = active.read_raw(fields::EXIT_QUALIFICATION.encoding());
                match (reason, qualification) {
                    (Ok(r), Ok(q)) => Outcome::observed(Ok(()), r as u32, q),
                    (Err(fail), _) | (_, Err(fail)) => {
                        println!("mini-hv: entry-diff: case {case}: cannot read the exit: {fail}");
                        return hv::Outcome::Fail;
                    }
                }
            }
            Err(RunError::Entry(fail)) => Outcome::observed(Err(fail), 0, 0),
            Err(e @ RunError::ExitReasonRead(_)) => {
                println!("mini-hv: entry-diff: case {case}: {e}");
                return hv::Outcome::Fail;
            }
        };
        by_outcome[match observed {
            Outcome::Success => 0,
            Outcome::VmFailInvalid => 1,
            Outcome::VmFailValid(e) if e.number() == 7 => 2,
            Outcome::VmFailValid(_) => 3,
            Outcome::EntryFailure { exit_reason, .. } if exit_reason & 0xffff == 33 => 4,
            Outcome::EntryFailure { .. } => 5,
        }] += 1;
        if active.is_launched() {
            // The entry succeeded: make the launch state clear again (VMCLEAR, VMPTRLD).
            let region = match active.clear() {
                Ok(region) => region,
                Err((_, fail)) => {
                    println!("mini-hv: entry-diff: case {case}: VMCLEAR failed: {fail}");
                    return hv::Outcome::Fail;
                }
            };
            active = match region.load(root, &hv::identity) {
                Ok(active) => active,
                Err(e) => {
                    println!("mini-hv: entry-diff: case {case}: cannot reload the VMCS: {e}");
                    return hv::Outcome::Fail;
                }
            };
        }
        if grid.is_some() {
            grid_cases += 1;
            if observed != Outcome::Success {
                grid_failed += 1;
            }
        }
        if predicted == observed {
            agree += 1;
            continue;
        }
        if same_guest_failure(&report, observed) {
            agree += 1;
            agree_in_other_order += 1;
            continue;
        }
        let verdict = if bochs_excuses(&report, &active, caps, observed) {
            excused += 1;
            "excused"
        } else {
            disagree += 1;
            "DISAGREE"
        };
        println!("mini-hv: entry-diff: {verdict} case {case}: mutation: {mutation}");
        print!("mini-hv: entry-diff:   predicted: {predicted} (rules:");
        for violation in report.violations() {
            print!(" {}", violation.rule.id());
            if deviation(violation.rule).is_some() {
                print!("[bochs-deviation]");
            }
        }
        println!("); actual: {observed}");
    }
    println!(
        "mini-hv: entry-diff: observed outcomes: {} success, {} VMfailInvalid, {} VMfailValid(7), \
         {} other VMfailValid, {} exit 33, {} exit 34",
        by_outcome[0], by_outcome[1], by_outcome[2], by_outcome[3], by_outcome[4], by_outcome[5]
    );
    println!(
        "mini-hv: entry-diff: {agree_in_other_order} of the agreements are exit-33 failures that \
         report another violated guest-state rule's qualification (the SDM does not order them)"
    );
    println!(
        "mini-hv: entry-diff: event-injection grid: {grid_cases} cases over {GRID_SIZE} \
         combinations (type x vector x deliver-error-code x guest mode), {grid_failed} of them \
         failed VM entry; IA32_VMX_BASIC[56] = {}",
        u8::from(caps.basic.no_error_code_check())
    );
    println!(
        "mini-hv: entry-diff: nested: L1's VMLAUNCH through L0's emulation gave the checker's \
         outcome in {nested_agree} of {} cases ({nested_disagree} differ)",
        nested_agree + nested_disagree
    );
    println!(
        "entry-diff: {} cases, {agree} agree, {disagree} disagree, {excused} excused",
        agree + disagree + excused
    );
    if let Err((_, fail)) = active.clear() {
        println!("mini-hv: entry-diff: VMCLEAR failed: {fail}");
        return hv::Outcome::Fail;
    }
    if disagree == 0 && nested_disagree == 0 {
        hv::Outcome::Pass
    } else {
        hv::Outcome::Fail
    }
}

/// Writes every writable field of `baseline` (but HOST_RSP/HOST_RIP, which the trampoline owns).
fn restore(active: &mut Vmcs<'_>, baseline: &VmcsSnapshot) -> Result<(), VmFail> {
    for (info, value) in baseline.iter() {
        if info.read_only()
            || info.encoding == fields::HOST_RSP.encoding()
            || info.encoding == fields::HOST_RIP.encoding()
        {
            continue;
        }
        active.write_raw(info.encoding, value)?;
    }
    Ok(())
}

/// Fills an MSR area with `entries` entries loading IA32_SYSENTER_CS with 0.
/// The filler entry: IA32_SYSENTER_CS = 0 (harmless to load for this host).
const FILLER: MsrEntry = MsrEntry {
    index: IA32_SYSENTER_CS,
    data: 0,
};

/// Puts every entry of `area` in use, each [`FILLER`].
fn fill_msr_area<const N: usize>(area: &mut MsrArea<N>) {
    area.clear();
    while area.push(FILLER).is_ok() {}
}

/// Resets every entry in use of `area` to [`FILLER`].
fn reset_msr_area<const N: usize>(area: &MsrArea<N>) {
    for i in 0..area.len() {
        area.set(i, FILLER);
    }
}
