//! Every serializable type of the crate through serde_json and back (feature `serde`).
//! `VmInstructionError` and `VmFail` also have their own tests (`tests/errors.rs`).
#![cfg(feature = "serde")]

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vmx_caps::EptVpidCap;
use vmx_core::{
    GpReg, InvalidationError, InveptType, InvvpidDescriptor, InvvpidType, RegionError, RspInVmcs,
    UnknownGpReg, VmFail, VmInstructionError,
};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> serde_json::Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value, "{json}");
    json
}

#[test]
fn every_type_round_trips() {
    for reg in GpReg::ALL {
        round_trip(&reg);
    }
    let unknown = GpReg::try_from(16u64).unwrap_err();
    assert_eq!(round_trip(&unknown), 16);
    let _: UnknownGpReg = unknown;
    let mut regs = vmx_core::GuestRegisters::new();
    let rsp: RspInVmcs = regs.set_gpr(GpReg::Rsp, 0).unwrap_err();
    round_trip(&rsp);

    for kind in InveptType::ALL {
        round_trip(&kind);
    }
    for kind in InvvpidType::ALL {
        round_trip(&kind);
    }
    // Errors as the capability checks produce them: no INVEPT at all, VPID 0.
    let no_invept = InveptType::AllContext.check(&EptVpidCap(0)).unwrap_err();
    round_trip(&no_invept);
    let zero_vpid = InvvpidDescriptor::new(InvvpidType::SingleContext, 0, 0).unwrap_err();
    round_trip(&zero_vpid);
    for error in [
        InvalidationError::InveptTypeUnsupported(InveptType::SingleContext),
        InvalidationError::InvvpidUnsupported,
        InvalidationError::InvvpidTypeUnsupported(InvvpidType::SingleContextRetainingGlobals),
        InvalidationError::NonCanonicalAddress(0x8000_0000_0000),
        InvalidationError::Failed(VmFail::Valid(VmInstructionError::from_raw(28))),
        InvalidationError::Failed(VmFail::Invalid),
    ] {
        round_trip(&error);
    }
    for error in [
        RegionError::RevisionIdTooWide(0x8000_0000),
        RegionError::RegionTooLarge(8192),
        RegionError::Unmapped(0x1000),
    ] {
        round_trip(&error);
    }
}
