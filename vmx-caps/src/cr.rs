//! CR0 and CR4 in VMX operation: the fixed bits (SDM Vol. 3D, A.7 "VMX-Fixed Bits in CR0" and
//! A.8 "VMX-Fixed Bits in CR4"), and the exemptions VM entry makes for the guest (SDM Vol. 3C,
//! 27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and MSRs").
//!
//! This is the one place where the workspace computes which CR0/CR4 bits are fixed: VMXON
//! (`vmx-core`), the VM-entry checker (`vmcs::check`) and a hypervisor's CR ownership all use
//! [`CrFixedBits`].

use crate::arch::{Cr0, Cr4};
use crate::caps::{FixedBits, VmxCapabilities};

/// A control register with VMX-fixed bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What a CR0 value is used for, which decides the fixed bits it must obey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CrUse {
    /// The processor's own CR0 in VMX operation: at VMXON (SDM Vol. 3C, 24.8 "Restrictions on
    /// VMX Operation") and in the host-state area (27.2.2 "Checks on Host Control Registers,
    /// MSRs, and SSP"). Every fixed bit applies.
    Vmx,
    /// The guest-state area (27.3.1.1): CR0.NW and CR0.CD are never checked ("the values of
    /// these bits are not changed by VM entry"), and with the "unrestricted guest" control
    /// CR0.PE and CR0.PG are not checked either.
    Guest {
        /// The "unrestricted guest" VM-execution control is 1.
        unrestricted_guest: bool,
    },
}

/// The fixed bits of one control register for one use: bits that must be 1 and bits that must be
/// 0. Every other bit is the software's choice.
///
/// ```
/// use vmx_caps::arch::Cr0;
/// use vmx_caps::{CrUse, MsrSnapshot, VmxCapabilities};
///
/// let mut msrs = MsrSnapshot::parse(include_str!("../testdata/tigerlake.msr"))?;
/// let caps = VmxCapabilities::read(&mut msrs)?;
/// // An unrestricted guest may run in real mode, but CR0.NE stays fixed to 1.
/// let guest = caps.cr0_fixed_bits(CrUse::Guest { unrestricted_guest: true });
/// assert_eq!(guest.must_be_one, Cr0::NE);
/// assert_eq!(guest.apply(Cr0::RESET), Cr0::RESET | Cr0::NE);
/// assert!(caps.cr0_fixed_bits(CrUse::Vmx).check(Cr0::RESET).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrFixedBits<T> {
    /// The register.
    pub register: ControlRegister,
    /// Bits that must be 1.
    pub must_be_one: T,
    /// Bits that must be 0.
    pub must_be_zero: T,
}

impl CrFixedBits<Cr0> {
    /// The CR0 fixed bits of `IA32_VMX_CR0_FIXED0/1` for `usage`.
    #[must_use]
    pub const fn cr0(fixed: &FixedBits, usage: CrUse) -> Self {
        let exempt = match usage {
            CrUse::Vmx => 0,
            CrUse::Guest {
                unrestricted_guest: false,
            } => Cr0::NW.bits() | Cr0::CD.bits(),
            CrUse::Guest {
                unrestricted_guest: true,
            } => Cr0::NW.bits() | Cr0::CD.bits() | Cr0::PE.bits() | Cr0::PG.bits(),
        };
        Self {
            register: ControlRegister::Cr0,
            must_be_one: Cr0::from_bits_retain(fixed.must_be_one() & !exempt),
            must_be_zero: Cr0::from_bits_retain(fixed.must_be_zero() & !exempt),
        }
    }
}

impl CrFixedBits<Cr4> {
    /// The CR4 fixed bits of `IA32_VMX_CR4_FIXED0/1` (the same for every use).
    #[must_use]
    pub const fn cr4(fixed: &FixedBits) -> Self {
        Self {
            register: ControlRegister::Cr4,
            must_be_one: Cr4::from_bits_retain(fixed.must_be_one()),
            must_be_zero: Cr4::from_bits_retain(fixed.must_be_zero()),
        }
    }
}

impl<T: bitflags::Flags<Bits = u64> + Copy> CrFixedBits<T> {
    /// Every bit whose value the fixed bits decide (must be 1 or must be 0): the bits a
    /// hypervisor owns in the guest/host mask if it wants guest writes to them to exit.
    #[must_use]
    pub fn fixed(self) -> T {
        T::from_bits_retain(self.must_be_one.bits() | self.must_be_zero.bits())
    }

    /// `value` with the must-be-one bits set and the must-be-zero bits cleared.
    #[must_use]
    pub fn apply(self, value: T) -> T {
        T::from_bits_retain((value.bits() | self.must_be_one.bits()) & !self.must_be_zero.bits())
    }

    /// Checks `value` against the fixed bits.
    ///
    /// # Errors
    ///
    /// [`FixedBitsError`] naming every bit that is 0 but must be 1 and every bit that is 1 but
    /// must be 0.
    pub fn check(self, value: T) -> Result<(), FixedBitsError> {
        let value = value.bits();
        let missing = self.must_be_one.bits() & !value;
        let forbidden = self.must_be_zero.bits() & value;
        if missing == 0 && forbidden == 0 {
            Ok(())
        } else {
            Err(FixedBitsError {
                register: self.register,
                value,
                missing,
                forbidden,
            })
        }
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
    /// The CR0 fixed bits for `usage` ([`CrFixedBits::cr0`] of `cr0_fixed`).
    #[must_use]
    pub const fn cr0_fixed_bits(&self, usage: CrUse) -> CrFixedBits<Cr0> {
        CrFixedBits::<Cr0>::cr0(&self.cr0_fixed, usage)
    }

    /// The CR4 fixed bits ([`CrFixedBits::cr4`] of `cr4_fixed`).
    #[must_use]
    pub const fn cr4_fixed_bits(&self) -> CrFixedBits<Cr4> {
        CrFixedBits::<Cr4>::cr4(&self.cr4_fixed)
    }
}
