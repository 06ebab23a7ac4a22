//! The host's local APIC timer (xAPIC mode; SDM Vol. 3A, 11.5.4 "APIC Timer"): the time source of
//! the watchdog and of the HLT wake-up where the VMX-preemption timer is absent (e.g. nested under
//! Hyper-V). With "external-interrupt exiting" its interrupt ends the guest's run, and with
//! "acknowledge interrupt on exit" the processor acknowledges it during the VM exit (its vector in
//! the VM-exit interruption information), so the host, which runs with interrupts off, only
//! writes the EOI.

/// `IA32_APIC_BASE`: bit 11 global enable, bit 10 x2APIC mode, bits 51:12 the xAPIC page.
const IA32_APIC_BASE: u32 = 0x1b;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
const APIC_X2APIC: u64 = 1 << 10;

/// xAPIC register offsets (SDM Vol. 3A, Table 11-1).
const EOI: u64 = 0xb0;
const SPURIOUS_VECTOR: u64 = 0xf0;
const LVT_TIMER: u64 = 0x320;
const INITIAL_COUNT: u64 = 0x380;
const CURRENT_COUNT: u64 = 0x390;
const DIVIDE_CONFIGURATION: u64 = 0x3e0;

/// Spurious-interrupt vector register: bit 8 software-enables the APIC; vector 0xFF.
const SVR_ENABLE: u32 = 1 << 8 | 0xff;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration 1011b: divide by 1.
const DIVIDE_BY_1: u32 = 0b1011;

/// The vector of the timer interrupt.
pub const TIMER_VECTOR: u8 = 0xf0;

/// The master and slave 8259 PICs' interrupt-mask registers.
const PIC1_DATA: u16 = 0x21;
const PIC2_DATA: u16 = 0xa1;

/// Masks every line of both 8259 PICs. The host takes no interrupt (it runs with interrupts
/// off), so a request of theirs, the PIT's timer above all, would stay pending for ever and end
/// every run of a guest with external-interrupt exiting and RFLAGS.IF = 1 at once.
///
/// # Safety
/// Ring 0; nothing uses the 8259s' interrupts.
pub unsafe fn mask_8259s() {
    // SAFETY: the caller's contract; writing the interrupt-mask registers only keeps the PICs
    // from raising INTR.
    unsafe {
        crate::arch::outb(PIC1_DATA, 0xff);
        crate::arch::outb(PIC2_DATA, 0xff);
    }
}

/// The host's local APIC, in xAPIC mode, with its timer one-shot on [`TIMER_VECTOR`].
pub struct ApicTimer {
    base: u64,
}

impl ApicTimer {
    /// Sets the timer up (masked until [`start`](Self::start)), and masks both 8259 PICs, whose
    /// interrupts would exit too (external-interrupt exiting applies to every external
    /// interrupt). `None` (with the reason printed) where the APIC is disabled, in x2APIC mode,
    /// or above the identity-mapped 4 GiB.
    ///
    /// # Safety
    /// Ring 0 with interrupts off, one processor; nothing else uses the local APIC's timer or
    /// the 8259s.
    pub unsafe fn init() -> Option<Self> {
        // SAFETY: IA32_APIC_BASE exists on every processor with a local APIC (any with VMX); ring 0.
        let apic_base = unsafe { crate::arch::rdmsr(IA32_APIC_BASE) };
        let base = apic_base & 0x000f_ffff_ffff_f000;
        if apic_base & APIC_GLOBAL_ENABLE == 0 || apic_base & APIC_X2APIC != 0 || base >= 1 << 32 {
            crate::println!(
                "mini-hv: the local APIC cannot serve as the timer (IA32_APIC_BASE {apic_base:#x})"
            );
            return None;
        }
        let apic = Self { base };
        // SAFETY: the xAPIC page is identity-mapped (below 4 GiB); these registers only configure
        // the timer and enable the APIC. Masking the 8259s only keeps them from raising INTR.
        unsafe {
            mask_8259s();
            apic.write(SPURIOUS_VECTOR, SVR_ENABLE);
            apic.write(DIVIDE_CONFIGURATION, DIVIDE_BY_1);
            apic.write(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        }
        Some(apic)
    }

    /// # Safety
    /// `offset` is an xAPIC register whose write has no effect beyond the timer and the EOI.
    unsafe fn write(&self, offset: u64, value: u32) {
        // SAFETY: the caller's contract; the page is identity-mapped MMIO, 4-byte aligned registers.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) };
    }

    /// (Re)starts the one-shot countdown from `count` (at least 1) ticks of the APIC timer clock.
    pub fn start(&self, count: u32) {
        // SAFETY: unmasking the timer LVT and writing the initial count only start the countdown.
        unsafe {
            self.write(LVT_TIMER, u32::from(TIMER_VECTOR));
            self.write(INITIAL_COUNT, count.max(1));
        }
    }

    /// Whether the countdown has reached 0 (its interrupt then is pending, or was delivered).
    pub fn expired(&self) -> bool {
        // SAFETY: the current-count register; reading it has no side effect.
        let current =
            unsafe { core::ptr::read_volatile((self.base + CURRENT_COUNT) as *const u32) };
        current == 0
    }

    /// Stops the countdown and masks the timer.
    pub fn stop(&self) {
        // SAFETY: an initial count of 0 stops the timer; the mask keeps it quiet.
        unsafe {
            self.write(INITIAL_COUNT, 0);
            self.write(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        }
    }

    /// Signals the end of the timer interrupt the VM exit acknowledged.
    pub fn eoi(&self) {
        // SAFETY: the EOI register; the interrupt in service is the acknowledged timer interrupt.
        unsafe { self.write(EOI, 0) };
    }
}
