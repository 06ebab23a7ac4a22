//! The posted-interrupt descriptor (SDM Vol. 3C, 30.6 "Posted-Interrupt Processing").

use core::sync::atomic::{AtomicU64, Ordering};

use vmx_core::PhysTranslate;

use super::{StructureError, VectorSet, in_frame, phys_of, vmcs_err};
use crate::{VmcsWrite, fields};

/// What [`PostedInterruptDescriptor::post`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PostOutcome {
    /// The vector was already pending in the PIR: nothing changed, no notification is needed.
    AlreadyPending,
    /// The vector was posted and ON was already 1: a notification is already on its way (or
    /// the processor will see the PIR when it next processes posted interrupts).
    Posted,
    /// The vector was posted and this call set ON from 0 to 1: the caller must send the
    /// notification (an IPI with the posted-interrupt notification vector to the target CPU).
    NotificationNeeded,
}

impl PostOutcome {
    /// Whether the caller must send the notification IPI.
    #[must_use]
    pub const fn needs_notification(self) -> bool {
        matches!(self, PostOutcome::NotificationNeeded)
    }
}

/// The posted-interrupt descriptor (SDM Vol. 3C, Table 30-1 "Format of Posted-Interrupt
/// Descriptor"): 64 bytes, 64-byte aligned; bits 255:0 are the posted-interrupt requests (PIR),
/// one per vector; bit 256 is the outstanding-notification bit (ON); bits 511:257 are free for
/// software and other agents (this type leaves them zero).
///
/// Every access is a locked atomic operation, so a descriptor can be posted to from any CPU
/// while the processor that owns it runs the guest.
///
/// ```
/// use vmcs::structures::{PostOutcome, PostedInterruptDescriptor};
///
/// let pid = PostedInterruptDescriptor::new();
/// assert_eq!(pid.post(0x41), PostOutcome::NotificationNeeded);
/// assert_eq!(pid.post(0x42), PostOutcome::Posted); // ON already set
/// assert_eq!(pid.post(0x41), PostOutcome::AlreadyPending);
/// let taken = pid.take();
/// assert_eq!(taken.iter().collect::<Vec<_>>(), [0x41, 0x42]);
/// assert!(!pid.outstanding_notification());
/// ```
#[repr(C, align(64))]
pub struct PostedInterruptDescriptor {
    pir: [AtomicU64; 4],
    control: AtomicU64,
    software: [AtomicU64; 3],
}

const _: () = assert!(core::mem::size_of::<PostedInterruptDescriptor>() == 64);
const _: () = assert!(core::mem::align_of::<PostedInterruptDescriptor>() == 64);
const _: () = assert!(core::mem::offset_of!(PostedInterruptDescriptor, pir) == 0);
// ON is bit 256: bit 0 of the word at byte 32.
const _: () = assert!(core::mem::offset_of!(PostedInterruptDescriptor, control) == 32);
const _: () = assert!(core::mem::offset_of!(PostedInterruptDescriptor, software) == 40);
in_frame!(PostedInterruptDescriptor, "posted-interrupt descriptor", 64);

/// ON, bit 256 of the descriptor: bit 0 of the control word.
const ON: u64 = 1;

impl PostedInterruptDescriptor {
    /// An empty descriptor (no request, ON clear).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            pir: [const { AtomicU64::new(0) }; 4],
            control: AtomicU64::new(0),
            software: [const { AtomicU64::new(0) }; 3],
        }
    }

    /// Posts `vector`: atomically sets its PIR bit and, if it was clear, then atomically sets
    /// ON, and says whether the caller must send the notification.
    ///
    /// The order is the one the SDM's processing requires of a sender (30.6): the processor,
    /// on a notification, clears ON first and then reads and clears the PIR; a request whose
    /// PIR bit is visible before ON is set is therefore either picked up by a notification
    /// already being processed or announced by this one. Both steps are locked
    /// read-modify-writes (sequentially consistent), so the descriptor may be shared with other
    /// CPUs and with the processor itself.
    pub fn post(&self, vector: u8) -> PostOutcome {
        let bit = 1u64 << (vector % 64);
        let before = self.pir[usize::from(vector / 64)].fetch_or(bit, Ordering::SeqCst);
        if before & bit != 0 {
            return PostOutcome::AlreadyPending;
        }
        if self.control.fetch_or(ON, Ordering::SeqCst) & ON == 0 {
            PostOutcome::NotificationNeeded
        } else {
            PostOutcome::Posted
        }
    }

    /// ON, the outstanding-notification bit.
    #[must_use]
    pub fn outstanding_notification(&self) -> bool {
        self.control.load(Ordering::SeqCst) & ON != 0
    }

    /// The requests now in the PIR (a snapshot; other CPUs may post meanwhile).
    #[must_use]
    pub fn pending(&self) -> VectorSet {
        VectorSet::from_words([
            self.pir[0].load(Ordering::SeqCst),
            self.pir[1].load(Ordering::SeqCst),
            self.pir[2].load(Ordering::SeqCst),
            self.pir[3].load(Ordering::SeqCst),
        ])
    }

    /// Takes the requests as the processor does on a notification (SDM 30.6, steps 3 and 4):
    /// clears ON, then reads and clears each PIR word atomically. For software delivery (a
    /// hypervisor that moves the PIR into VIRR itself) and for tests.
    pub fn take(&self) -> VectorSet {
        self.control.fetch_and(!ON, Ordering::SeqCst);
        VectorSet::from_words([
            self.pir[0].swap(0, Ordering::SeqCst),
            self.pir[1].swap(0, Ordering::SeqCst),
            self.pir[2].swap(0, Ordering::SeqCst),
            self.pir[3].swap(0, Ordering::SeqCst),
        ])
    }

    /// The descriptor's 64 bytes as the processor sees them (little-endian).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut bytes = [0; 64];
        let words = self
            .pir
            .iter()
            .chain(core::iter::once(&self.control))
            .chain(self.software.iter());
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.load(Ordering::SeqCst).to_le_bytes());
        }
        bytes
    }

    /// Writes the descriptor's physical address into `POSTED_INTERRUPT_DESCRIPTOR_ADDRESS`
    /// (64-byte aligned) and `notification_vector` into `POSTED_INTERRUPT_NOTIFICATION_VECTOR`
    /// (used with the "process posted interrupts" pin-based control).
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned descriptor or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
        notification_vector: u8,
    ) -> Result<(), StructureError> {
        let phys = phys_of(self, translate)?;
        vmcs.write(fields::POSTED_INTERRUPT_DESCRIPTOR_ADDRESS, phys)
            .and_then(|()| {
                vmcs.write(
                    fields::POSTED_INTERRUPT_NOTIFICATION_VECTOR,
                    u16::from(notification_vector),
                )
            })
            .map_err(vmcs_err::<Self>)
    }
}

impl Default for PostedInterruptDescriptor {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PostedInterruptDescriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PostedInterruptDescriptor")
            .field("pir", &self.pending())
            .field("on", &self.outstanding_notification())
            .finish()
    }
}
