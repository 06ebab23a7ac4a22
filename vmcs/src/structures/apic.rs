//! The virtual-APIC page, the APIC-access page, the guest interrupt status (RVI/SVI) and the
//! EOI-exit bitmap (SDM Vol. 3C, chapter 30 "APIC Virtualization and Virtual Interrupts"; 25.6.8
//! "Controls for APIC Virtualization"; 25.4.2 "Guest Non-Register State").

use core::sync::atomic::{AtomicU32, Ordering};

use vmx_core::{PhysTranslate, VmFail};

use super::{InFrame, StructureError, VectorSet, in_frame, phys_of, vmcs_err, write_address};
use crate::{VmcsRead, VmcsWrite, fields};

/// A register of the virtual-APIC page, by its offset (SDM Vol. 3C, 30.1 "Virtual Apic State";
/// the offsets are the local APIC's, SDM Vol. 3A, Table 11-1). Each register is 32 bits at a
/// 16-byte-aligned offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApicRegister(u16);

impl ApicRegister {
    /// Local APIC ID (020H).
    pub const ID: Self = Self(0x20);
    /// Local APIC version (030H).
    pub const VERSION: Self = Self(0x30);
    /// VTPR, virtual task-priority register (080H).
    pub const TPR: Self = Self(0x80);
    /// VPPR, virtual processor-priority register (0A0H).
    pub const PPR: Self = Self(0xa0);
    /// VEOI, virtual end-of-interrupt register (0B0H).
    pub const EOI: Self = Self(0xb0);
    /// Logical destination register (0D0H).
    pub const LDR: Self = Self(0xd0);
    /// Destination format register (0E0H).
    pub const DFR: Self = Self(0xe0);
    /// Spurious-interrupt vector register (0F0H).
    pub const SVR: Self = Self(0xf0);
    /// VISR, in-service register, bits 31:0 (100H; ISR*n* at 100H + 10H·*n*).
    pub const ISR0: Self = Self(0x100);
    /// VTMR, trigger-mode register, bits 31:0 (180H; TMR*n* at 180H + 10H·*n*).
    pub const TMR0: Self = Self(0x180);
    /// VIRR, interrupt-request register, bits 31:0 (200H; IRR*n* at 200H + 10H·*n*).
    pub const IRR0: Self = Self(0x200);
    /// Error status register (280H).
    pub const ESR: Self = Self(0x280);
    /// VICR_LO, interrupt command register bits 31:0 (300H).
    pub const ICR_LOW: Self = Self(0x300);
    /// VICR_HI, interrupt command register bits 63:32 (310H).
    pub const ICR_HIGH: Self = Self(0x310);
    /// LVT timer register (320H).
    pub const LVT_TIMER: Self = Self(0x320);
    /// Timer initial-count register (380H).
    pub const TIMER_INITIAL_COUNT: Self = Self(0x380);
    /// Timer current-count register (390H).
    pub const TIMER_CURRENT_COUNT: Self = Self(0x390);
    /// Timer divide-configuration register (3E0H).
    pub const TIMER_DIVIDE_CONFIGURATION: Self = Self(0x3e0);
    /// Self IPI (3F0H, x2APIC mode only).
    pub const SELF_IPI: Self = Self(0x3f0);

    /// The register at byte `offset` of the page, if `offset` is 16-byte aligned and below 4 KiB.
    #[must_use]
    pub const fn at(offset: u16) -> Option<Self> {
        if offset.is_multiple_of(16) && offset < 4096 {
            Some(Self(offset))
        } else {
            None
        }
    }

    /// Byte offset in the page.
    #[must_use]
    pub const fn offset(self) -> u16 {
        self.0
    }

    /// Register `n` (0–7) of the eight-register group starting at `self` (ISR0, TMR0, IRR0).
    const fn nth(self, n: usize) -> usize {
        self.0 as usize / 4 + 4 * n
    }
}

/// The virtual-APIC page (SDM Vol. 3C, 30.1): 4 KiB, 4-KiB aligned, the guest's view of its
/// local APIC's registers when "use TPR shadow" is 1. The processor reads and writes it while
/// the guest runs, so every register is accessed atomically.
///
/// ```
/// use vmcs::structures::{ApicRegister, VectorSet, VirtualApicPage};
///
/// let page = Box::new(VirtualApicPage::new());
/// page.set_vtpr(0x50);
/// assert_eq!(page.read(ApicRegister::TPR), 0x50);
/// page.set_virr([0x31, 0x80].into_iter().collect());
/// assert_eq!(page.read(ApicRegister::at(0x210).unwrap()), 1 << 17); // IRR1 holds 0x31
/// assert_eq!(page.virr().highest(), Some(0x80));
/// ```
#[repr(C, align(4096))]
pub struct VirtualApicPage {
    words: [AtomicU32; 1024],
}

const _: () = assert!(core::mem::size_of::<VirtualApicPage>() == 4096);
const _: () = assert!(core::mem::align_of::<VirtualApicPage>() == 4096);
in_frame!(VirtualApicPage, "virtual-APIC page", 4096);

impl VirtualApicPage {
    /// A page of zeros.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            words: [const { AtomicU32::new(0) }; 1024],
        }
    }

    /// Reads `reg` (its 32 bits at its offset).
    #[must_use]
    pub fn read(&self, reg: ApicRegister) -> u32 {
        self.words[usize::from(reg.0) / 4].load(Ordering::SeqCst)
    }

    /// Writes `reg`.
    pub fn write(&self, reg: ApicRegister, value: u32) {
        self.words[usize::from(reg.0) / 4].store(value, Ordering::SeqCst);
    }

    fn read_set(&self, first: ApicRegister) -> VectorSet {
        let mut regs = [0u32; 8];
        for (n, r) in regs.iter_mut().enumerate() {
            *r = self.words[first.nth(n)].load(Ordering::SeqCst);
        }
        VectorSet::from_apic_words(regs)
    }

    fn write_set(&self, first: ApicRegister, set: VectorSet) {
        for (n, r) in set.apic_words().into_iter().enumerate() {
            self.words[first.nth(n)].store(r, Ordering::SeqCst);
        }
    }

    /// VTPR, the virtual task priority (bits 7:0 of the register at 080H).
    #[must_use]
    pub fn vtpr(&self) -> u8 {
        self.read(ApicRegister::TPR) as u8
    }

    /// Sets VTPR (bits 31:8 zero).
    pub fn set_vtpr(&self, tpr: u8) {
        self.write(ApicRegister::TPR, u32::from(tpr));
    }

    /// VPPR, the virtual processor priority (bits 7:0 of the register at 0A0H).
    #[must_use]
    pub fn vppr(&self) -> u8 {
        self.read(ApicRegister::PPR) as u8
    }

    /// Sets VPPR.
    pub fn set_vppr(&self, ppr: u8) {
        self.write(ApicRegister::PPR, u32::from(ppr));
    }

    /// VEOI, the last value the guest wrote to the EOI register (0B0H).
    #[must_use]
    pub fn veoi(&self) -> u32 {
        self.read(ApicRegister::EOI)
    }

    /// VISR, the in-service vectors (ISR0–ISR7 at 100H–170H).
    #[must_use]
    pub fn visr(&self) -> VectorSet {
        self.read_set(ApicRegister::ISR0)
    }

    /// Sets VISR.
    pub fn set_visr(&self, set: VectorSet) {
        self.write_set(ApicRegister::ISR0, set);
    }

    /// VTMR, the level-triggered vectors (TMR0–TMR7 at 180H–1F0H).
    #[must_use]
    pub fn vtmr(&self) -> VectorSet {
        self.read_set(ApicRegister::TMR0)
    }

    /// Sets VTMR.
    pub fn set_vtmr(&self, set: VectorSet) {
        self.write_set(ApicRegister::TMR0, set);
    }

    /// VIRR, the requested vectors (IRR0–IRR7 at 200H–270H).
    #[must_use]
    pub fn virr(&self) -> VectorSet {
        self.read_set(ApicRegister::IRR0)
    }

    /// Sets VIRR.
    pub fn set_virr(&self, set: VectorSet) {
        self.write_set(ApicRegister::IRR0, set);
    }

    /// The virtual ICR: VICR_HI (310H) in bits 63:32, VICR_LO (300H) in bits 31:0.
    #[must_use]
    pub fn vicr(&self) -> u64 {
        u64::from(self.read(ApicRegister::ICR_HIGH)) << 32
            | u64::from(self.read(ApicRegister::ICR_LOW))
    }

    /// Sets the virtual ICR (both halves).
    pub fn set_vicr(&self, icr: u64) {
        self.write(ApicRegister::ICR_HIGH, (icr >> 32) as u32);
        self.write(ApicRegister::ICR_LOW, icr as u32);
    }

    /// The LVT timer register (320H).
    #[must_use]
    pub fn lvt_timer(&self) -> u32 {
        self.read(ApicRegister::LVT_TIMER)
    }

    /// The timer initial-count register (380H).
    #[must_use]
    pub fn timer_initial_count(&self) -> u32 {
        self.read(ApicRegister::TIMER_INITIAL_COUNT)
    }

    /// The timer current-count register (390H).
    #[must_use]
    pub fn timer_current_count(&self) -> u32 {
        self.read(ApicRegister::TIMER_CURRENT_COUNT)
    }

    /// The timer divide-configuration register (3E0H).
    #[must_use]
    pub fn timer_divide_configuration(&self) -> u32 {
        self.read(ApicRegister::TIMER_DIVIDE_CONFIGURATION)
    }

    /// Writes the page's physical address into `VIRTUAL_APIC_ADDRESS` (4-KiB aligned) and
    /// `tpr_threshold` into `TPR_THRESHOLD` (bits 3:0; a TPR-below-threshold exit happens when
    /// VTPR\[7:4\] drops below it, SDM 30.1.2).
    ///
    /// # Errors
    ///
    /// [`StructureError::InvalidValue`] for a threshold above 15, or an unmapped or misaligned
    /// page or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
        tpr_threshold: u8,
    ) -> Result<(), StructureError> {
        if tpr_threshold > 15 {
            return Err(StructureError::InvalidValue {
                structure: Self::NAME,
                what: "TPR threshold",
                value: u64::from(tpr_threshold),
            });
        }
        let phys = phys_of(self, translate)?;
        vmcs.write(fields::VIRTUAL_APIC_ADDRESS, phys)
            .and_then(|()| vmcs.write(fields::TPR_THRESHOLD, u32::from(tpr_threshold)))
            .map_err(vmcs_err::<Self>)
    }
}

impl Default for VirtualApicPage {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for VirtualApicPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtualApicPage")
            .field("vtpr", &self.vtpr())
            .field("vppr", &self.vppr())
            .field("visr", &self.visr())
            .field("virr", &self.virr())
            .finish_non_exhaustive()
    }
}

/// The APIC-access page (SDM Vol. 3C, 30.4 "Virtualizing Memory-Mapped APIC Accesses"): the 4-KiB
/// page whose guest-physical address the EPT maps where the guest sees its APIC; with "virtualize
/// APIC accesses" 1 the processor turns accesses to it into APIC-access VM exits or virtualized
/// accesses to the virtual-APIC page. Its contents are never used.
#[repr(C, align(4096))]
pub struct ApicAccessPage([u8; 4096]);

const _: () = assert!(core::mem::size_of::<ApicAccessPage>() == 4096);
in_frame!(ApicAccessPage, "APIC-access page", 4096);

impl ApicAccessPage {
    /// A page of zeros.
    #[must_use]
    pub const fn new() -> Self {
        Self([0; 4096])
    }

    /// Writes the page's physical address into `APIC_ACCESS_ADDRESS` (4-KiB aligned).
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned page or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        write_address(self, vmcs, translate, fields::APIC_ACCESS_ADDRESS)
    }
}

impl Default for ApicAccessPage {
    fn default() -> Self {
        Self::new()
    }
}

/// The guest interrupt status (SDM Vol. 3C, 25.4.2): RVI, the requesting virtual interrupt (the
/// highest vector in VIRR, bits 7:0) and SVI, the servicing virtual interrupt (the highest in
/// VISR, bits 15:8). Used with "virtual-interrupt delivery".
///
/// ```
/// use vmcs::structures::GuestInterruptStatus;
///
/// let status = GuestInterruptStatus { rvi: 0x31, svi: 0x20 };
/// assert_eq!(status.raw(), 0x2031);
/// assert_eq!(GuestInterruptStatus::from_raw(0x2031), status);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GuestInterruptStatus {
    /// Requesting virtual interrupt (bits 7:0).
    pub rvi: u8,
    /// Servicing virtual interrupt (bits 15:8).
    pub svi: u8,
}

impl GuestInterruptStatus {
    /// Decodes the 16-bit field.
    #[must_use]
    pub const fn from_raw(raw: u16) -> Self {
        Self {
            rvi: raw as u8,
            svi: (raw >> 8) as u8,
        }
    }

    /// The 16-bit field value.
    #[must_use]
    pub const fn raw(self) -> u16 {
        (self.svi as u16) << 8 | self.rvi as u16
    }

    /// Reads `GUEST_INTERRUPT_STATUS`.
    ///
    /// # Errors
    ///
    /// The VMREAD's failure.
    pub fn read(vmcs: &impl VmcsRead) -> Result<Self, VmFail> {
        vmcs.read(fields::GUEST_INTERRUPT_STATUS)
            .map(Self::from_raw)
    }

    /// Writes `GUEST_INTERRUPT_STATUS`.
    ///
    /// # Errors
    ///
    /// The VMWRITE's failure.
    pub fn write(self, vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
        vmcs.write(fields::GUEST_INTERRUPT_STATUS, self.raw())
    }
}

/// The four EOI-exit bitmap fields, one per 64 vectors.
const EOI_EXIT_FIELDS: [crate::Field<u64, crate::field::ReadWrite, crate::field::Width64>; 4] = [
    fields::EOI_EXIT_BITMAP_0,
    fields::EOI_EXIT_BITMAP_1,
    fields::EOI_EXIT_BITMAP_2,
    fields::EOI_EXIT_BITMAP_3,
];

/// Writes the EOI-exit bitmap (SDM Vol. 3C, 25.6.8): a guest EOI of a vector in `exiting` causes
/// an EOI-induced VM exit; of any other vector, it is virtualized. `EOI_EXIT_BITMAP_i` holds
/// vectors `64i..64i+63`.
///
/// # Errors
///
/// The first VMWRITE's failure.
pub fn write_eoi_exit_bitmap(vmcs: &mut impl VmcsWrite, exiting: VectorSet) -> Result<(), VmFail> {
    for (field, word) in EOI_EXIT_FIELDS.into_iter().zip(exiting.words()) {
        vmcs.write(field, word)?;
    }
    Ok(())
}

/// Reads the EOI-exit bitmap.
///
/// # Errors
///
/// The first VMREAD's failure.
pub fn read_eoi_exit_bitmap(vmcs: &impl VmcsRead) -> Result<VectorSet, VmFail> {
    let mut words = [0; 4];
    for (field, word) in EOI_EXIT_FIELDS.into_iter().zip(words.iter_mut()) {
        *word = vmcs.read(field)?;
    }
    Ok(VectorSet::from_words(words))
}
