//! Guest-physical and host-physical addresses with checked constructors.

use core::fmt;

/// The architectural maximum physical-address width (MAXPHYADDR ≤ 52, SDM Vol. 3A §4.1.4
/// "Enumeration of Paging Features by CPUID").
pub const MAX_PHYS_ADDR_WIDTH: u8 = 52;

/// Why an address could not be constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AddrError {
    /// The address has bits set at or above the architectural physical-address width.
    #[error(
        "physical address {addr:#x} has bits set at or above bit {width} (the architectural MAXPHYADDR limit)"
    )]
    BeyondWidth {
        /// The rejected value.
        addr: u64,
        /// The width that was exceeded.
        width: u8,
    },
    /// The address is not aligned to the required boundary.
    #[error("physical address {addr:#x} is not aligned to {align:#x} bytes")]
    Unaligned {
        /// The rejected value.
        addr: u64,
        /// The required alignment in bytes.
        align: u64,
    },
}

macro_rules! phys_addr {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        // Deserialized through `new`: a number at or above bit 52 is an error, not an address.
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(try_from = "u64", into = "u64"))]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The zero address.
            pub const ZERO: Self = Self(0);

            /// Checks that `addr` fits in the architectural physical-address width (52 bits).
            pub const fn new(addr: u64) -> Result<Self, AddrError> {
                if addr >> MAX_PHYS_ADDR_WIDTH != 0 {
                    return Err(AddrError::BeyondWidth { addr, width: MAX_PHYS_ADDR_WIDTH });
                }
                Ok(Self(addr))
            }

            /// Checks that `addr` fits in `width` bits (e.g. the processor's MAXPHYADDR), capped at 52.
            pub const fn new_with_width(addr: u64, width: u8) -> Result<Self, AddrError> {
                let width = if width > MAX_PHYS_ADDR_WIDTH { MAX_PHYS_ADDR_WIDTH } else { width };
                if addr >> width != 0 {
                    return Err(AddrError::BeyondWidth { addr, width });
                }
                Ok(Self(addr))
            }

            /// Like [`Self::new`], and also checks that `addr` is a multiple of `align` (a power of two).
            pub const fn new_aligned(addr: u64, align: u64) -> Result<Self, AddrError> {
                match Self::new(addr) {
                    Ok(a) if addr & align.wrapping_sub(1) == 0 => Ok(a),
                    Ok(_) => Err(AddrError::Unaligned { addr, align }),
                    Err(e) => Err(e),
                }
            }

            /// Keeps bits 51:0 of `addr` and drops the rest.
            pub const fn new_truncate(addr: u64) -> Self {
                Self(addr & ((1 << MAX_PHYS_ADDR_WIDTH) - 1))
            }

            /// The address as an integer.
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & align.wrapping_sub(1) == 0
            }

            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !align.wrapping_sub(1))
            }

            /// Adds `offset`, failing if the result leaves the 52-bit address space.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) if v >> MAX_PHYS_ADDR_WIDTH == 0 => Some(Self(v)),
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = AddrError;
            fn try_from(addr: u64) -> Result<Self, AddrError> {
                Self::new(addr)
            }
        }

        impl From<$name> for u64 {
            fn from(a: $name) -> u64 {
                a.0
            }
        }
    };
}

phys_addr!(
    /// A guest-physical address: the input of the EPT translation (SDM Vol. 3C §29.3 "The
    /// Extended Page Table Mechanism (EPT)"), at most 52 bits wide.
    GuestPhysAddr
);
phys_addr!(
    /// A host-physical address: the output of the EPT translation and the address of every EPT
    /// paging structure, at most 52 bits wide (MAXPHYADDR).
    HostPhysAddr
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_width_and_alignment() {
        assert_eq!(
            GuestPhysAddr::new(0x000f_ffff_ffff_ffff).map(|a| a.as_u64()),
            Ok((1 << 52) - 1)
        );
        assert_eq!(
            GuestPhysAddr::new(1 << 52),
            Err(AddrError::BeyondWidth {
                addr: 1 << 52,
                width: 52
            })
        );
        assert_eq!(
            HostPhysAddr::new_with_width(1 << 39, 39),
            Err(AddrError::BeyondWidth {
                addr: 1 << 39,
                width: 39
            })
        );
        assert!(HostPhysAddr::new_with_width((1 << 39) - 1, 39).is_ok());
        assert_eq!(
            HostPhysAddr::new_aligned(0x1001, 0x1000),
            Err(AddrError::Unaligned {
                addr: 0x1001,
                align: 0x1000
            })
        );
        assert_eq!(HostPhysAddr::new_truncate(u64::MAX).as_u64(), (1 << 52) - 1);
        assert_eq!(
            HostPhysAddr::new(0x1234)
                .unwrap()
                .align_down(0x1000)
                .as_u64(),
            0x1000
        );
        assert_eq!(
            GuestPhysAddr::new((1 << 52) - 1).unwrap().checked_add(1),
            None
        );
    }
}
