//! CR0 and CR4 in VMX operation: the fixed bits (SDM Vol. 3D, A.7 "VMX-Fixed Bits in CR0" and
//! A.8 "VMX-Fixed Bits in CR4").

use crate::caps::VmxCapabilities;

/// CR0.PE (bit 0), protection enable.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG (bit 31), paging.
pub const CR0_PG: u64 = 1 << 31;

/// A control register with VMX-fixed bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ControlRegister {
    /// CR0.
    Cr0,
    /// CR4.
    Cr4,
}

impl core::fmt::Display for ControlRegister {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Cr0 => "CR0",
            Self::Cr4 => "CR4",
        })
    }
}

/// A control-register value that violates the VMX-fixed bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{register} value {value:#x} is not allowed in VMX operation: bits {missing:#x} must be 1, bits {forbidden:#x} must be 0"
)]
pub struct FixedBitsError {
    /// The register.
    pub register: ControlRegister,
    /// The value checked.
    pub value: u64,
    /// Bits that are 0 but must be 1 (set in FIXED0).
    pub missing: u64,
    /// Bits that are 1 but must be 0 (clear in FIXED1).
    pub forbidden: u64,
}

impl VmxCapabilities {
    /// The CR0 bits that must be 1, with the unrestricted-guest exemption: when the
    /// "unrestricted guest" control is 1, a guest's CR0.PE and CR0.PG may be 0 (SDM Vol. 3C,
    /// 27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and MSRs").
    pub const fn cr0_must_be_one(&self, unrestricted_guest: bool) -> u64 {
        if unrestricted_guest {
            self.cr0_fixed.must_be_one() & !(CR0_PE | CR0_PG)
        } else {
            self.cr0_fixed.must_be_one()
        }
    }

    /// `cr0` adjusted for VMX operation (VMXON, or a host CR0): the FIXED0 bits set, the bits
    /// clear in FIXED1 cleared.
    pub const fn cr0_for_vmx(&self, cr0: u64) -> u64 {
        self.cr0_fixed.apply(cr0)
    }

    /// `cr4` adjusted for VMX operation (CR4.VMXE among the FIXED0 bits).
    pub const fn cr4_for_vmx(&self, cr4: u64) -> u64 {
        self.cr4_fixed.apply(cr4)
    }

    /// `cr0` adjusted for a guest: like [`cr0_for_vmx`](Self::cr0_for_vmx), but with an
    /// unrestricted guest PE and PG are left as given.
    pub const fn cr0_for_guest(&self, cr0: u64, unrestricted_guest: bool) -> u64 {
        (cr0 | self.cr0_must_be_one(unrestricted_guest)) & !self.cr0_fixed.must_be_zero()
    }

    /// Checks a CR0 value against the fixed bits; `unrestricted_guest` applies the exemption
    /// for PE and PG (pass `false` for VMXON and host values).
    pub const fn check_cr0(
        &self,
        cr0: u64,
        unrestricted_guest: bool,
    ) -> Result<(), FixedBitsError> {
        check(
            ControlRegister::Cr0,
            cr0,
            self.cr0_must_be_one(unrestricted_guest),
            self.cr0_fixed.must_be_zero(),
        )
    }

    /// Checks a CR4 value against the fixed bits.
    pub const fn check_cr4(&self, cr4: u64) -> Result<(), FixedBitsError> {
        check(
            ControlRegister::Cr4,
            cr4,
            self.cr4_fixed.must_be_one(),
            self.cr4_fixed.must_be_zero(),
        )
    }
}

const fn check(
    register: ControlRegister,
    value: u64,
    must_be_one: u64,
    must_be_zero: u64,
) -> Result<(), FixedBitsError> {
    let missing = must_be_one & !value;
    let forbidden = must_be_zero & value;
    if missing == 0 && forbidden == 0 {
        Ok(())
    } else {
        Err(FixedBitsError {
            register,
            value,
            missing,
            forbidden,
        })
    }
}
