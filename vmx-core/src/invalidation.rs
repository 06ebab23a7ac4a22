//! INVEPT and INVVPID types and descriptors (SDM Vol. 3C, §31.3 "INVEPT" and "INVVPID", and
//! §29.4.3.1 "Operations that Invalidate Cached Mappings").

use core::fmt;

use vmx_caps::EptVpidCap;

use crate::error::VmFail;

/// The INVEPT type, the register operand of INVEPT (SDM Vol. 3C, §31.3 "INVEPT—Invalidate
/// Translations Derived from EPT").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u32)]
pub enum InveptType {
    /// Single-context invalidation (type 1): the mappings derived from the EPTP in the descriptor.
    /// Supported when IA32_VMX_EPT_VPID_CAP\[25\] = 1.
    SingleContext = 1,
    /// All-context invalidation (type 2): the mappings derived from every EPTP. Supported when
    /// IA32_VMX_EPT_VPID_CAP\[26\] = 1.
    AllContext = 2,
}

impl InveptType {
    /// Every INVEPT type.
    pub const ALL: [InveptType; 2] = [InveptType::SingleContext, InveptType::AllContext];

    /// The type number loaded into the register operand.
    #[must_use]
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// Decodes a type number; `None` for numbers the SDM does not define for INVEPT.
    #[must_use]
    pub const fn from_number(number: u32) -> Option<Self> {
        match number {
            1 => Some(InveptType::SingleContext),
            2 => Some(InveptType::AllContext),
            _ => None,
        }
    }

    /// The bit of IA32_VMX_EPT_VPID_CAP that reports support for this type.
    #[must_use]
    pub const fn capability_bit(self) -> u32 {
        match self {
            InveptType::SingleContext => 25,
            InveptType::AllContext => 26,
        }
    }

    /// Whether the processor supports INVEPT with this type: IA32_VMX_EPT_VPID_CAP\[20\] (INVEPT)
    /// and the type's own bit.
    ///
    /// ```
    /// use vmx_caps::EptVpidCap;
    /// use vmx_core::InveptType;
    ///
    /// let cap = EptVpidCap(1 << 20 | 1 << 26); // INVEPT, all-context only
    /// assert!(InveptType::AllContext.supported_by(&cap));
    /// assert!(!InveptType::SingleContext.supported_by(&cap));
    /// ```
    #[must_use]
    pub fn supported_by(self, cap: &EptVpidCap) -> bool {
        cap.invept()
            && match self {
                InveptType::SingleContext => cap.invept_single_context(),
                InveptType::AllContext => cap.invept_all_context(),
            }
    }

    /// `Ok` when the processor supports INVEPT with this type, else the typed reason.
    pub fn check(self, cap: &EptVpidCap) -> Result<(), InvalidationError> {
        if !cap.invept() {
            Err(InvalidationError::InveptUnsupported)
        } else if !self.supported_by(cap) {
            Err(InvalidationError::InveptTypeUnsupported(self))
        } else {
            Ok(())
        }
    }

    /// The narrowest supported type that invalidates the mappings of one EPTP: single-context when
    /// supported, else all-context (which invalidates those mappings and more); `None` when the
    /// processor has no INVEPT or neither type.
    #[must_use]
    pub fn best_for(cap: &EptVpidCap) -> Option<InveptType> {
        Self::ALL.into_iter().find(|kind| kind.supported_by(cap))
    }
}

impl fmt::Display for InveptType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InveptType::SingleContext => "single-context",
            InveptType::AllContext => "all-context",
        })
    }
}

/// The INVVPID type, the register operand of INVVPID (SDM Vol. 3C, §31.3 "INVVPID—Invalidate
/// Translations Based on VPID").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u32)]
pub enum InvvpidType {
    /// Individual-address invalidation (type 0): the mappings of one linear address tagged with
    /// the descriptor's VPID. Supported when IA32_VMX_EPT_VPID_CAP\[40\] = 1.
    IndividualAddress = 0,
    /// Single-context invalidation (type 1): every mapping tagged with the descriptor's VPID.
    /// Supported when IA32_VMX_EPT_VPID_CAP\[41\] = 1.
    SingleContext = 1,
    /// All-context invalidation (type 2): the mappings tagged with every VPID except 0.
    /// Supported when IA32_VMX_EPT_VPID_CAP\[42\] = 1.
    AllContext = 2,
    /// Single-context invalidation, retaining global translations (type 3). Supported when
    /// IA32_VMX_EPT_VPID_CAP\[43\] = 1.
    SingleContextRetainingGlobals = 3,
}

impl InvvpidType {
    /// Every INVVPID type.
    pub const ALL: [InvvpidType; 4] = [
        InvvpidType::IndividualAddress,
        InvvpidType::SingleContext,
        InvvpidType::AllContext,
        InvvpidType::SingleContextRetainingGlobals,
    ];

    /// The type number loaded into the register operand.
    #[must_use]
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// Decodes a type number; `None` for numbers the SDM does not define for INVVPID.
    #[must_use]
    pub const fn from_number(number: u32) -> Option<Self> {
        match number {
            0 => Some(InvvpidType::IndividualAddress),
            1 => Some(InvvpidType::SingleContext),
            2 => Some(InvvpidType::AllContext),
            3 => Some(InvvpidType::SingleContextRetainingGlobals),
            _ => None,
        }
    }

    /// The bit of IA32_VMX_EPT_VPID_CAP that reports support for this type.
    #[must_use]
    pub const fn capability_bit(self) -> u32 {
        40 + self as u32
    }

    /// Whether the SDM requires a nonzero VPID in the descriptor for this type (every type but
    /// all-context: "If the INVVPID type is … and the VPID is 0000H, the instruction fails").
    #[must_use]
    pub const fn requires_nonzero_vpid(self) -> bool {
        !matches!(self, InvvpidType::AllContext)
    }

    /// Whether the processor supports INVVPID with this type: IA32_VMX_EPT_VPID_CAP\[32\] (INVVPID)
    /// and the type's own bit.
    #[must_use]
    pub fn supported_by(self, cap: &EptVpidCap) -> bool {
        cap.invvpid()
            && match self {
                InvvpidType::IndividualAddress => cap.invvpid_individual_address(),
                InvvpidType::SingleContext => cap.invvpid_single_context(),
                InvvpidType::AllContext => cap.invvpid_all_context(),
                InvvpidType::SingleContextRetainingGlobals => {
                    cap.invvpid_single_context_retaining_globals()
                }
            }
    }

    /// `Ok` when the processor supports INVVPID with this type, else the typed reason.
    pub fn check(self, cap: &EptVpidCap) -> Result<(), InvalidationError> {
        if !cap.invvpid() {
            Err(InvalidationError::InvvpidUnsupported)
        } else if !self.supported_by(cap) {
            Err(InvalidationError::InvvpidTypeUnsupported(self))
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for InvvpidType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvvpidType::IndividualAddress => "individual-address",
            InvvpidType::SingleContext => "single-context",
            InvvpidType::AllContext => "all-context",
            InvvpidType::SingleContextRetainingGlobals => "single-context-retaining-globals",
        })
    }
}

/// The INVEPT descriptor (SDM Vol. 3C, Figure 31-1 "INVEPT Descriptor"): bits 63:0 hold the EPTP,
/// bits 127:64 are reserved and must be 0.
///
/// ```
/// use vmx_core::InveptDescriptor;
///
/// let d = InveptDescriptor::new(0x1234_501e);
/// assert_eq!(d.eptp(), 0x1234_501e);
/// assert_eq!(core::mem::size_of::<InveptDescriptor>(), 16);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C, align(16))]
pub struct InveptDescriptor {
    eptp: u64,
    reserved: u64,
}

impl InveptDescriptor {
    /// A descriptor for the EPTP `eptp` (ignored by all-context invalidation); the reserved half is
    /// zero.
    #[must_use]
    pub const fn new(eptp: u64) -> Self {
        Self { eptp, reserved: 0 }
    }

    /// The EPTP (bits 63:0).
    #[must_use]
    pub const fn eptp(&self) -> u64 {
        self.eptp
    }

    /// The descriptor as the 128-bit value the processor reads.
    #[must_use]
    pub const fn to_bits(&self) -> u128 {
        (self.reserved as u128) << 64 | self.eptp as u128
    }
}

/// The INVVPID descriptor (SDM Vol. 3C, Figure 31-2 "INVVPID Descriptor"): bits 15:0 hold the VPID,
/// bits 63:16 are reserved and must be 0, bits 127:64 hold the linear address.
///
/// ```
/// use vmx_core::{InvalidationError, InvvpidDescriptor, InvvpidType};
///
/// let d = InvvpidDescriptor::new(InvvpidType::IndividualAddress, 7, 0xffff_8000_0000_1000)?;
/// assert_eq!((d.vpid(), d.linear_address()), (7, 0xffff_8000_0000_1000));
///
/// // VPID 0 tags the host's own translations: the SDM forbids it for this type.
/// assert_eq!(
///     InvvpidDescriptor::new(InvvpidType::SingleContext, 0, 0),
///     Err(InvalidationError::ZeroVpid(InvvpidType::SingleContext))
/// );
/// # Ok::<(), InvalidationError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C, align(16))]
pub struct InvvpidDescriptor {
    vpid: u16,
    reserved: [u16; 3],
    linear_address: u64,
}

impl InvvpidDescriptor {
    /// A descriptor for an INVVPID of type `invalidation`, checked against the SDM's operand rules:
    /// a nonzero `vpid` for every type but all-context, and for individual-address a
    /// `linear_address` canonical in 57 bits (on a processor with 48-bit linear addresses the
    /// processor's own check rejects the rest with VM-instruction error 28). Fields the type
    /// ignores are stored as given.
    pub fn new(
        invalidation: InvvpidType,
        vpid: u16,
        linear_address: u64,
    ) -> Result<Self, InvalidationError> {
        if vpid == 0 && invalidation.requires_nonzero_vpid() {
            return Err(InvalidationError::ZeroVpid(invalidation));
        }
        if invalidation == InvvpidType::IndividualAddress && !is_canonical_57(linear_address) {
            return Err(InvalidationError::NonCanonicalAddress(linear_address));
        }
        Ok(Self {
            vpid,
            reserved: [0; 3],
            linear_address,
        })
    }

    /// The VPID (bits 15:0).
    #[must_use]
    pub const fn vpid(&self) -> u16 {
        self.vpid
    }

    /// The linear address (bits 127:64).
    #[must_use]
    pub const fn linear_address(&self) -> u64 {
        self.linear_address
    }

    /// The descriptor as the 128-bit value the processor reads.
    #[must_use]
    pub const fn to_bits(&self) -> u128 {
        (self.linear_address as u128) << 64
            | (self.reserved[2] as u128) << 48
            | (self.reserved[1] as u128) << 32
            | (self.reserved[0] as u128) << 16
            | self.vpid as u128
    }
}

/// Whether `address` is canonical with 57-bit linear addresses (bits 63:56 copies of bit 56).
const fn is_canonical_57(address: u64) -> bool {
    let sign_extended = ((address << 7) as i64 >> 7) as u64;
    sign_extended == address
}

/// Why an INVEPT or INVVPID was refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum InvalidationError {
    /// The processor does not support INVEPT (IA32_VMX_EPT_VPID_CAP\[20\] = 0).
    #[error("INVEPT is not supported: IA32_VMX_EPT_VPID_CAP[20] is 0")]
    InveptUnsupported,
    /// The processor supports INVEPT but not this type.
    #[error("INVEPT {0} invalidation is not supported: IA32_VMX_EPT_VPID_CAP[{bit}] is 0", bit = .0.capability_bit())]
    InveptTypeUnsupported(InveptType),
    /// The processor does not support INVVPID (IA32_VMX_EPT_VPID_CAP\[32\] = 0).
    #[error("INVVPID is not supported: IA32_VMX_EPT_VPID_CAP[32] is 0")]
    InvvpidUnsupported,
    /// The processor supports INVVPID but not this type.
    #[error("INVVPID {0} invalidation is not supported: IA32_VMX_EPT_VPID_CAP[{bit}] is 0", bit = .0.capability_bit())]
    InvvpidTypeUnsupported(InvvpidType),
    /// VPID 0 with an INVVPID type that requires a nonzero VPID (VPID 0 tags the host's own
    /// translations).
    #[error("INVVPID {0} invalidation needs a nonzero VPID: VPID 0 tags VMX root operation")]
    ZeroVpid(InvvpidType),
    /// An individual-address INVVPID with a non-canonical linear address.
    #[error("INVVPID individual-address invalidation of non-canonical linear address {0:#x}")]
    NonCanonicalAddress(u64),
    /// The instruction ran and failed.
    #[error("the invalidation instruction failed: {0}")]
    Failed(VmFail),
}

impl From<VmFail> for InvalidationError {
    fn from(fail: VmFail) -> Self {
        InvalidationError::Failed(fail)
    }
}
