//! Hostile-input campaign for the EPT walker (`EptWalker`, the misconfiguration and violation
//! diagnosis): arbitrary EPT pointers, capabilities from the Bochs dumps in
//! `vmx-caps/testdata` with bits flipped, arbitrary physical-address widths, guest-physical
//! addresses and accesses, and paging structures of arbitrary entries (some pointing back into
//! the structures, some reads failing). Besides the absence of panics (debug build: overflow
//! checks on): a walk reads at most one entry per level, from the root down, each inside the
//! table it names; it translates only where every entry read is present, and the translation
//! lies within 52 bits; the diagnosis agrees with the walk (a misconfiguration exactly when the
//! walk found one, a violation for a present translation only when an entry lacks a right the
//! access needs).

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;

use std::collections::HashMap;

use ept::diagnose::WalkOutcome;
use ept::{Access, EptPointer, EptWalker, GuestPhysAddr, HostPhysAddr, Permissions};
use hostile_cases::cases;
use proptest::prelude::*;
use vmx_caps::{MsrSnapshot, VmxCapabilities};

const DUMPS: [&str; 3] = [
    include_str!("../../vmx-caps/testdata/tigerlake.msr"),
    include_str!("../../vmx-caps/testdata/corei7_skylake_x.msr"),
    include_str!("../../vmx-caps/testdata/corei5_lynnfield_750.msr"),
];

fn caps(dump: usize) -> vmx_caps::EptVpidCap {
    let mut msrs = MsrSnapshot::parse(DUMPS[dump]).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap().ept_vpid
}

/// An entry: arbitrary, or pointing at one of 8 tables at 0x1000..0x9000 with arbitrary low
/// bits (rights, memory type, large page, accessed/dirty).
fn entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (1..9u64, 0..0x1000u64).prop_map(|(t, low)| t << 12 | low),
        (1..9u64, 0..8u64, 0..8u64).prop_map(|(t, mt, rwx)| t << 12 | mt << 3 | rwx),
        Just(0u64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(8192), ..ProptestConfig::default() })]

    #[test]
    fn walks_of_garbage_tables(
        dump in 0..DUMPS.len(),
        flips in prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
        eptp in prop_oneof![any::<u64>(), (1..9u64, 0..0x100u64).prop_map(|(t, low)| t << 12 | low)],
        width in prop_oneof![Just(39u8), Just(46u8), any::<u8>()],
        entries in proptest::collection::vec((0..0x9000u64, entry()), 0..48),
        unreadable in proptest::collection::vec(0..0x9000u64, 0..4),
        gpa in prop_oneof![any::<u64>(), 0..0x100_0000u64],
        access in 0..8u32,
        user in any::<bool>(),
    ) {
        let caps = vmx_caps::EptVpidCap(caps(dump).0 ^ flips);
        let Ok(walker) = EptWalker::new(EptPointer::from_bits(eptp), caps, width) else {
            return Ok(());
        };
        let mut memory = HashMap::new();
        for &(at, e) in &entries {
            memory.insert(at & !7, e);
        }
        let read = |a: HostPhysAddr| {
            let a = a.as_u64();
            if unreadable.contains(&(a & !7)) { None } else { Some(*memory.get(&a).unwrap_or(&0)) }
        };
        let gpa = GuestPhysAddr::new_truncate(gpa);
        let walk = walker.walk(gpa, read);
        let steps: Vec<_> = walk.steps().copied().collect();
        prop_assert!(steps.len() <= 5);
        for pair in steps.windows(2) {
            prop_assert!(pair[0].level > pair[1].level, "levels not descending: {:?}", steps);
            let table = pair[0].entry & 0x000f_ffff_ffff_f000;
            prop_assert_eq!(pair[1].entry_address.as_u64() & !0xfff, table);
        }
        if let Some(first) = steps.first() {
            prop_assert_eq!(first.entry_address.as_u64() & !0xfff, eptp & 0x000f_ffff_ffff_f000);
        }
        match walk.outcome {
            WalkOutcome::Translated { hpa, .. } => {
                prop_assert!(hpa.as_u64() >> 52 == 0);
                prop_assert!(!steps.is_empty());
                for s in &steps {
                    prop_assert!(s.entry & 7 != 0 || Permissions::from_entry_bits(s.entry).contains(Permissions::USER_EXECUTE),
                        "a translation through a non-present entry {:?}", s);
                }
            }
            WalkOutcome::NotPresent { .. } | WalkOutcome::Misconfigured(_) | WalkOutcome::Unreadable { .. } => {}
        }
        let misconfig = walker.explain_misconfiguration(gpa, read);
        prop_assert_eq!(misconfig.is_some(), matches!(walk.outcome, WalkOutcome::Misconfigured(_)));
        let access = Access::from_bits_truncate(access as u8);
        if let Some(v) = walker.explain_violation(gpa, access, user, read) {
            let translated = matches!(walk.outcome, WalkOutcome::Translated { .. });
            let not_present = matches!(walk.outcome, WalkOutcome::NotPresent { .. });
            prop_assert!(translated || not_present);
            prop_assert!(steps.iter().any(|s| s.entry_address == v.entry_address));
        }
    }
}
