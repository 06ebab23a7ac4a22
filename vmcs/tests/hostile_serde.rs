//! Hostile JSON for the serde forms of the crate's types (feature `serde`), through the
//! campaign shared with the other crates (`vmcs-fields/tests/serde_campaign`): an error or a
//! value that round-trips again, never a panic. What deserializes is then used: capabilities,
//! processor facts and launch contexts drive the VM-entry checker over the known-good VMCS, a
//! guest state is written into it and checked, the capabilities make an `L1VmxState` and are
//! virtualized; none of it may panic either.
#![cfg(feature = "serde")]

mod check_common;
#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;
#[path = "../../vmcs-fields/tests/serde_campaign/mod.rs"]
mod serde_campaign;

use check_common::{Env, Memory};
use hostile_cases::cases;
use proptest::prelude::*;
use serde_campaign::Campaign;
use vmcs::check::{CpuFacts, EntryInstruction, LaunchContext, Outcome, Violation};
use vmcs::nested::L1VmxState;
use vmcs::{
    DescriptorTable, GuestState, HostState, Segment, SegmentAccessRights, SoftVmcs, fields,
};
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{ExitControls, VmxCapabilities};
use vmx_core::VmInstructionError;

/// Runs the checker with these inputs over the known-good VMCS (or `vmcs`); `true` (the
/// invariant holds) when it neither panics nor fails to read a field the VMCS has.
fn checks(caps: &VmxCapabilities, cpu: CpuFacts, launch: LaunchContext, vmcs: &SoftVmcs) -> bool {
    let mut mem = Memory::default();
    let mut sink = |_: &Violation| {};
    vmcs::check::Checker::new(caps, cpu, launch)
        .check(vmcs, &mut mem, &mut sink)
        .is_ok()
}

fn env() -> Env {
    Env::tigerlake()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn hostile_json(c in Campaign::strategy()) {
        let e = env();
        c.run(&[e.caps], |caps| {
            let mut all = SoftVmcs::all_fields();
            for (f, v) in e.vmcs.iter() {
                all.store(f.encoding, v).unwrap();
            }
            let _ = L1VmxState::new(caps, 39);
            let _ = VirtualPolicy::everything(1).virtualize(caps);
            checks(caps, e.cpu, e.launch, &all)
        })?;
        c.run(&[e.cpu], |cpu| checks(&e.caps, *cpu, e.launch, &e.vmcs))?;
        c.run(&[e.launch], |launch| checks(&e.caps, e.cpu, *launch, &e.vmcs))?;
        c.run(
            &[GuestState::reset(), GuestState::long_mode_64(0x20_0000, 0x1000)],
            |state| {
                let mut vmcs = e.vmcs.clone();
                let _ = state.write(&mut vmcs, &e.caps);
                checks(&e.caps, e.cpu, e.launch, &vmcs)
            },
        )?;
        c.run(&[HostState::read(&e.vmcs, ExitControls::LOAD_IA32_EFER).unwrap()], |host| {
            let mut vmcs = e.vmcs.clone();
            let _ = host.write(&mut vmcs);
            checks(&e.caps, e.cpu, e.launch, &vmcs)
        })?;
        c.run(&[Segment { selector: 8, base: 0, limit: 0xffff_ffff, access_rights: SegmentAccessRights::CODE_64 }], |_| true)?;
        c.run(&[DescriptorTable { base: 0x1000, limit: 0xfff }], |_| true)?;
        c.run(&[EntryInstruction::Vmresume], |_| true)?;
        c.run(
            &[Outcome::Success, Outcome::VmFailValid(VmInstructionError::from_raw(7)),
              Outcome::EntryFailure { exit_reason: 0x8000_0021, qualification: 0 }],
            |_| true,
        )?;
        c.run(&[fields::GUEST_RIP.width()], |_| true)?;
    }
}
