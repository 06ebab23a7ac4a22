//! Ending the run: one routine for both emulators.
//!
//! - QEMU: `isa-debug-exit` at port 0xF4 exits with status `(v << 1) | 1`: 0x10 pass (33), 0x11 fail (35),
//!   0x12 unsupported (37). Bochs ignores the port.
//! - Bochs: the byte `'D'` to port 0x8900 breaks into the debugger, whose next rc-file command (`quit`) ends
//!   Bochs with status 0 for every outcome; the runner judges Bochs by the serial `RESULT` line. QEMU ignores
//!   the port.
//! - Anywhere else (real hardware): the CPU halts with interrupts off.

use crate::arch::outb;
use crate::hv::Outcome;
use mini_hv_logic::l1_kernel::Reported;

/// The `isa-debug-exit` I/O port (QEMU `-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const QEMU_EXIT_PORT: u16 = 0xF4;
/// Bochs' debugger port.
pub const BOCHS_DEBUG_PORT: u16 = 0x8900;

/// The byte written to [`QEMU_EXIT_PORT`] for an outcome.
pub fn qemu_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Pass => Reported::Pass,
        Outcome::Fail => Reported::Fail,
        Outcome::Unsupported => Reported::Unsupported,
    }
    .exit_code()
}

/// Ends the emulator run with `outcome`'s status. Callers print the `mini-hv: RESULT ...` line first.
pub fn exit(outcome: Outcome) -> ! {
    crate::serial::flush();
    // SAFETY: both ports belong to emulator debug devices (or nothing); writing them has no memory effect.
    unsafe {
        outb(QEMU_EXIT_PORT, qemu_code(outcome));
        outb(BOCHS_DEBUG_PORT, b'D');
    }
    crate::println!("mini-hv: no emulator exit device answered; halting");
    loop {
        // SAFETY: halting with interrupts off stops this CPU for good, which is the intent.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
