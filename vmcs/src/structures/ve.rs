//! The virtualization-exception information area (SDM Vol. 3C, 26.5.7 "Virtualization
//! Exceptions", 26.5.7.2 "Delivery of Virtualization Exceptions").

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use vmx_core::PhysTranslate;

use super::{StructureError, in_frame, write_address};
use crate::{VmcsWrite, fields};

/// What the processor saved in the information area when it delivered a #VE (a copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VeInformation {
    /// The exit reason a VM exit would have saved (48, EPT violation).
    pub exit_reason: u32,
    /// The exit qualification an EPT-violation VM exit would have saved.
    pub exit_qualification: u64,
    /// The guest-linear address (when the exit qualification says it is valid).
    pub guest_linear_address: u64,
    /// The guest-physical address of the access.
    pub guest_physical_address: u64,
    /// The EPTP index VM-execution control when the #VE was delivered.
    pub eptp_index: u16,
}

/// The virtualization-exception information area (SDM Vol. 3C, Table 26-1 "Format of the
/// Virtualization-Exception Information Area"): 4 KiB, 4-KiB aligned. Bytes 0–3 hold the exit
/// reason, 4–7 the value FFFFFFFFH the processor writes on delivery (a #VE is delivered only while
/// these bytes are 0), 8–15 the exit qualification, 16–23 the guest-linear address, 24–31 the
/// guest-physical address, 32–33 the EPTP index. The processor and the guest write it, so every
/// field is accessed atomically.
///
/// ```
/// use vmcs::structures::VeInformationArea;
///
/// let area = Box::new(VeInformationArea::new());
/// assert!(area.is_armed()); // bytes 4..8 are 0: the next convertible EPT violation is a #VE
/// area.disarm();
/// assert!(area.is_delivered() && !area.is_armed());
/// area.arm(); // what the guest's #VE handler does when done
/// assert!(area.is_armed());
/// ```
#[repr(C, align(4096))]
pub struct VeInformationArea {
    exit_reason: AtomicU32,
    busy: AtomicU32,
    exit_qualification: AtomicU64,
    guest_linear_address: AtomicU64,
    guest_physical_address: AtomicU64,
    eptp_index: AtomicU16,
    reserved: [u8; 4096 - 34],
}

const _: () = assert!(core::mem::size_of::<VeInformationArea>() == 4096);
const _: () = assert!(core::mem::align_of::<VeInformationArea>() == 4096);
const _: () = assert!(core::mem::offset_of!(VeInformationArea, exit_reason) == 0);
const _: () = assert!(core::mem::offset_of!(VeInformationArea, busy) == 4);
const _: () = assert!(core::mem::offset_of!(VeInformationArea, exit_qualification) == 8);
const _: () = assert!(core::mem::offset_of!(VeInformationArea, guest_linear_address) == 16);
const _: () = assert!(core::mem::offset_of!(VeInformationArea, guest_physical_address) == 24);
const _: () = assert!(core::mem::offset_of!(VeInformationArea, eptp_index) == 32);
in_frame!(
    VeInformationArea,
    "virtualization-exception information area",
    4096
);

/// The value the processor writes at bytes 4–7 when it delivers a #VE.
const DELIVERED: u32 = 0xffff_ffff;

impl VeInformationArea {
    /// An area of zeros (armed: bytes 4–7 are 0).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            exit_reason: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            exit_qualification: AtomicU64::new(0),
            guest_linear_address: AtomicU64::new(0),
            guest_physical_address: AtomicU64::new(0),
            eptp_index: AtomicU16::new(0),
            reserved: [0; 4096 - 34],
        }
    }

    /// Whether bytes 4–7 are 0, so that the next convertible EPT violation is delivered as a #VE
    /// (otherwise it causes a VM exit).
    #[must_use]
    pub fn is_armed(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }

    /// Whether bytes 4–7 hold FFFFFFFFH, the processor's mark of a delivered #VE.
    #[must_use]
    pub fn is_delivered(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == DELIVERED
    }

    /// Clears bytes 4–7 (what a guest's #VE handler does when it is done with the information).
    pub fn arm(&self) {
        self.busy.store(0, Ordering::SeqCst);
    }

    /// Marks the area in use (bytes 4–7 FFFFFFFFH): EPT violations cause VM exits.
    pub fn disarm(&self) {
        self.busy.store(DELIVERED, Ordering::SeqCst);
    }

    /// The information saved in the area.
    #[must_use]
    pub fn information(&self) -> VeInformation {
        VeInformation {
            exit_reason: self.exit_reason.load(Ordering::SeqCst),
            exit_qualification: self.exit_qualification.load(Ordering::SeqCst),
            guest_linear_address: self.guest_linear_address.load(Ordering::SeqCst),
            guest_physical_address: self.guest_physical_address.load(Ordering::SeqCst),
            eptp_index: self.eptp_index.load(Ordering::SeqCst),
        }
    }

    /// Writes the area's physical address into
    /// `VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS` (4-KiB aligned), for the "EPT-violation
    /// #VE" control.
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned area or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        write_address(
            self,
            vmcs,
            translate,
            fields::VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS,
        )
    }
}

impl Default for VeInformationArea {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for VeInformationArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VeInformationArea")
            .field(
                "busy",
                &format_args!("{:#x}", self.busy.load(Ordering::SeqCst)),
            )
            .field("information", &self.information())
            .finish()
    }
}
