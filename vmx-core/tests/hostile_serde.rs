//! Hostile JSON for the serde forms of the crate's types (feature `serde`), through the
//! campaign shared with the other crates (`vmcs-fields/tests/serde_campaign`): an error or a
//! value that round-trips again, never a panic; a deserialized register names a register of
//! the instruction-information encoding, a deserialized VM-instruction error keeps its number.
#![cfg(feature = "serde")]

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;
#[path = "../../vmcs-fields/tests/serde_campaign/mod.rs"]
mod serde_campaign;

use hostile_cases::cases;
use proptest::prelude::*;
use serde_campaign::Campaign;
use vmx_core::{
    GpReg, InvalidationError, InveptType, InvvpidType, RegionError, VmFail, VmInstructionError,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn hostile_json(c in Campaign::strategy()) {
        c.run(&[GpReg::Rax, GpReg::R15], |r| GpReg::from_index(u64::from(r.index())) == Some(*r))?;
        c.run(&[VmFail::Invalid, VmFail::Valid(VmInstructionError::from_raw(7))], |f| match f {
            VmFail::Valid(e) => VmInstructionError::from_raw(e.number()) == *e,
            VmFail::Invalid => true,
        })?;
        c.run(&[VmInstructionError::from_raw(12), VmInstructionError::from_raw(99)], |e| {
            VmInstructionError::from_raw(e.number()) == *e
        })?;
        c.run(&[InveptType::SingleContext], |t| InveptType::from_number(t.number()) == Some(*t))?;
        c.run(&[InvvpidType::IndividualAddress], |t| InvvpidType::from_number(t.number()) == Some(*t))?;
        c.run(&[RegionError::RevisionIdTooWide(1 << 31)], |_| true)?;
        c.run(&[InvalidationError::InveptUnsupported], |_| true)?;
    }
}
