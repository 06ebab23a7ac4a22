//! INVEPT/INVVPID types and descriptors: layouts (SDM Vol. 3C, Figures 31-1 and 31-2) and the
//! capability checks against the MSR dumps of real (Bochs) CPU models.

mod common;

use core::mem::{align_of, size_of};

use common::caps;
use proptest::prelude::*;
use vmx_caps::EptVpidCap;
use vmx_core::{InvalidationError, InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};

/// The bytes of a descriptor as the processor reads them from memory.
fn bytes<T: Copy>(value: &T) -> Vec<u8> {
    let mut out = vec![0u8; size_of::<T>()];
    // SAFETY: `value` is a live `T` of `size_of::<T>()` bytes without padding (both descriptor
    // types are two u64-sized halves), copied into a buffer of the same size.
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::from_ref(value).cast::<u8>(),
            out.as_mut_ptr(),
            size_of::<T>(),
        );
    }
    out
}

#[test]
fn invept_descriptor_layout() {
    assert_eq!(size_of::<InveptDescriptor>(), 16);
    assert_eq!(align_of::<InveptDescriptor>(), 16);
    let d = InveptDescriptor::new(0x0123_4567_89ab_c01e);
    let mut expected = 0x0123_4567_89ab_c01e_u64.to_le_bytes().to_vec();
    expected.extend_from_slice(&[0; 8]);
    assert_eq!(bytes(&d), expected);
    assert_eq!(d.to_bits(), 0x0123_4567_89ab_c01e);
}

#[test]
fn invvpid_descriptor_layout() {
    assert_eq!(size_of::<InvvpidDescriptor>(), 16);
    assert_eq!(align_of::<InvvpidDescriptor>(), 16);
    let d = InvvpidDescriptor::new(
        InvvpidType::IndividualAddress,
        0xbeef,
        0xffff_8000_dead_b000,
    )
    .unwrap();
    let mut expected = vec![0xef, 0xbe, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(&0xffff_8000_dead_b000_u64.to_le_bytes());
    assert_eq!(bytes(&d), expected);
    assert_eq!(d.to_bits(), 0xffff_8000_dead_b000_u128 << 64 | 0xbeef);
}

#[test]
fn type_numbers_are_the_sdm_ones() {
    assert_eq!(InveptType::SingleContext.number(), 1);
    assert_eq!(InveptType::AllContext.number(), 2);
    assert_eq!(InvvpidType::IndividualAddress.number(), 0);
    assert_eq!(InvvpidType::SingleContext.number(), 1);
    assert_eq!(InvvpidType::AllContext.number(), 2);
    assert_eq!(InvvpidType::SingleContextRetainingGlobals.number(), 3);
    for n in 0..8 {
        assert_eq!(
            InveptType::from_number(n).map(InveptType::number),
            (1..=2).contains(&n).then_some(n)
        );
        assert_eq!(
            InvvpidType::from_number(n).map(InvvpidType::number),
            (n <= 3).then_some(n)
        );
    }
}

#[test]
fn penryn_has_neither_invept_nor_invvpid() {
    let cap = caps("core2_penryn_t9600").ept_vpid;
    assert_eq!(cap, EptVpidCap(0));
    assert_eq!(InveptType::best_for(&cap), None);
    for kind in InveptType::ALL {
        assert!(!kind.supported_by(&cap));
        assert_eq!(kind.check(&cap), Err(InvalidationError::InveptUnsupported));
    }
    for kind in InvvpidType::ALL {
        assert!(!kind.supported_by(&cap));
        assert_eq!(kind.check(&cap), Err(InvalidationError::InvvpidUnsupported));
    }
}

#[test]
fn ept_models_support_every_type() {
    // IA32_VMX_EPT_VPID_CAP of these models has bits 20, 25, 26, 32 and 40-43 set.
    for model in ["corei5_lynnfield_750", "corei7_skylake_x", "tigerlake"] {
        let cap = caps(model).ept_vpid;
        assert_eq!(
            cap.0 & 0x0000_0f01_0610_0000,
            0x0000_0f01_0610_0000,
            "{model}"
        );
        assert_eq!(
            InveptType::best_for(&cap),
            Some(InveptType::SingleContext),
            "{model}"
        );
        for kind in InveptType::ALL {
            assert_eq!(kind.check(&cap), Ok(()), "{model} {kind}");
        }
        for kind in InvvpidType::ALL {
            assert_eq!(kind.check(&cap), Ok(()), "{model} {kind}");
        }
    }
}

#[test]
fn a_missing_type_bit_is_a_typed_error_never_a_fallback() {
    let full = caps("corei7_skylake_x").ept_vpid.0;
    let no_single = EptVpidCap(full & !(1 << 25));
    assert_eq!(
        InveptType::SingleContext.check(&no_single),
        Err(InvalidationError::InveptTypeUnsupported(
            InveptType::SingleContext
        ))
    );
    assert_eq!(InveptType::AllContext.check(&no_single), Ok(()));
    // best_for picks the wider type only when asked to choose.
    assert_eq!(
        InveptType::best_for(&no_single),
        Some(InveptType::AllContext)
    );
    let no_types = EptVpidCap(full & !(1 << 25 | 1 << 26));
    assert_eq!(InveptType::best_for(&no_types), None);

    for kind in InvvpidType::ALL {
        let cap = EptVpidCap(full & !(1 << kind.capability_bit()));
        assert_eq!(
            kind.check(&cap),
            Err(InvalidationError::InvvpidTypeUnsupported(kind))
        );
        let others_ok = InvvpidType::ALL
            .iter()
            .filter(|&&other| other != kind)
            .all(|other| other.supported_by(&cap));
        assert!(others_ok);
    }
    let no_invvpid = EptVpidCap(full & !(1 << 32));
    assert_eq!(
        InvvpidType::AllContext.check(&no_invvpid),
        Err(InvalidationError::InvvpidUnsupported)
    );
}

#[test]
fn error_messages_name_the_capability_bit() {
    assert_eq!(
        InvalidationError::InveptTypeUnsupported(InveptType::AllContext).to_string(),
        "INVEPT all-context invalidation is not supported: IA32_VMX_EPT_VPID_CAP[26] is 0"
    );
    assert_eq!(
        InvalidationError::InvvpidTypeUnsupported(InvvpidType::SingleContextRetainingGlobals)
            .to_string(),
        "INVVPID single-context-retaining-globals invalidation is not supported: IA32_VMX_EPT_VPID_CAP[43] is 0"
    );
}

#[test]
fn vpid_zero_is_refused_where_the_sdm_forbids_it() {
    for kind in InvvpidType::ALL {
        let result = InvvpidDescriptor::new(kind, 0, 0);
        if kind == InvvpidType::AllContext {
            assert!(result.is_ok());
        } else {
            assert_eq!(result, Err(InvalidationError::ZeroVpid(kind)));
        }
    }
}

#[test]
fn non_canonical_addresses_are_refused_for_individual_address_only() {
    let bad = 0x0100_0000_0000_0000; // bit 56 clear, bit 56+ not a sign extension
    assert_eq!(
        InvvpidDescriptor::new(InvvpidType::IndividualAddress, 1, bad),
        Err(InvalidationError::NonCanonicalAddress(bad))
    );
    assert!(InvvpidDescriptor::new(InvvpidType::SingleContext, 1, bad).is_ok());
    for good in [
        0,
        0x00ff_ffff_ffff_ffff,
        0xff00_0000_0000_0000,
        0xffff_8000_0000_0000,
    ] {
        assert!(InvvpidDescriptor::new(InvvpidType::IndividualAddress, 1, good).is_ok());
    }
}

proptest! {
    #[test]
    fn invvpid_descriptor_rules(kind in 0u32..4, vpid in any::<u16>(), address in any::<u64>()) {
        let kind = InvvpidType::from_number(kind).unwrap();
        let canonical = (address >> 56) == 0 && address & (1 << 56) == 0
            || (address >> 56) == 0xff && address & (1 << 56) != 0;
        let result = InvvpidDescriptor::new(kind, vpid, address);
        if vpid == 0 && kind != InvvpidType::AllContext {
            prop_assert_eq!(result, Err(InvalidationError::ZeroVpid(kind)));
        } else if kind == InvvpidType::IndividualAddress && !canonical {
            prop_assert_eq!(result, Err(InvalidationError::NonCanonicalAddress(address)));
        } else {
            let d = result.unwrap();
            prop_assert_eq!((d.vpid(), d.linear_address()), (vpid, address));
            prop_assert_eq!(d.to_bits(), u128::from(address) << 64 | u128::from(vpid));
        }
    }

    #[test]
    fn support_is_the_and_of_instruction_and_type_bits(bits in any::<u64>()) {
        let cap = EptVpidCap(bits);
        for kind in InveptType::ALL {
            let expected = bits & (1 << 20) != 0 && bits & (1 << kind.capability_bit()) != 0;
            prop_assert_eq!(kind.supported_by(&cap), expected);
            prop_assert_eq!(kind.check(&cap).is_ok(), expected);
        }
        for kind in InvvpidType::ALL {
            let expected = bits & (1 << 32) != 0 && bits & (1 << kind.capability_bit()) != 0;
            prop_assert_eq!(kind.supported_by(&cap), expected);
            prop_assert_eq!(kind.check(&cap).is_ok(), expected);
        }
        if let Some(best) = InveptType::best_for(&cap) {
            prop_assert!(best.supported_by(&cap));
            if InveptType::SingleContext.supported_by(&cap) {
                prop_assert_eq!(best, InveptType::SingleContext);
            }
        } else {
            prop_assert!(InveptType::ALL.iter().all(|k| !k.supported_by(&cap)));
        }
    }
}
