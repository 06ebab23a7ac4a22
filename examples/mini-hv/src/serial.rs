//! The serial console: COM1 (I/O port 0x3F8), 115200 8N1, polled, one processor at a time (a spin lock).
//!
//! [`print!`](crate::print) and [`println!`](crate::println) write here. Bochs copies COM1 into a file
//! (`com1: mode=file`), QEMU into its `-serial` backend; both are what the runner streams and judges.

use crate::arch::{inb, outb};
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// COM1's base I/O port.
pub const COM1: u16 = 0x3F8;

/// Registers relative to the base port (16550 UART).
const DATA: u16 = 0;
const INTERRUPT_ENABLE: u16 = 1;
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;
/// Line status: transmitter holding register empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Line status: transmitter empty (holding and shift registers both empty: the last byte is out).
const LSR_TX_EMPTY: u8 = 1 << 6;
/// How many status polls to wait for the transmitter before writing anyway (no UART must not hang us).
const SPIN_LIMIT: u32 = 100_000;

/// Programs COM1: interrupts off, divisor 1 (115200 baud), 8 data bits, no parity, 1 stop bit, FIFOs on.
pub fn init() {
    // SAFETY: COM1's registers; writing them only changes the UART's configuration.
    unsafe {
        outb(COM1 + INTERRUPT_ENABLE, 0x00);
        outb(COM1 + LINE_CONTROL, 0x80); // DLAB on
        outb(COM1 + DATA, 0x01); // divisor low
        outb(COM1 + INTERRUPT_ENABLE, 0x00); // divisor high
        outb(COM1 + LINE_CONTROL, 0x03); // 8N1, DLAB off
        outb(COM1 + FIFO_CONTROL, 0xC7); // enable and clear FIFOs, 14-byte threshold
        outb(COM1 + MODEM_CONTROL, 0x03); // DTR, RTS
    }
}

/// Writes one byte, waiting (boundedly) for the transmitter.
pub fn write_byte(byte: u8) {
    let mut spins = 0;
    // SAFETY: reading COM1's line status register has no side effect.
    while unsafe { inb(COM1 + LINE_STATUS) } & LSR_THR_EMPTY == 0 && spins < SPIN_LIMIT {
        spins += 1;
        core::hint::spin_loop();
    }
    // SAFETY: writing the data register transmits the byte.
    unsafe { outb(COM1 + DATA, byte) };
}

/// Waits (boundedly) until the UART has sent every byte, so that nothing is lost when the emulator stops
/// right after the last write (Bochs emulates the line's transmit time).
pub fn flush() {
    let mut spins = 0;
    // SAFETY: reading COM1's line status register has no side effect.
    while unsafe { inb(COM1 + LINE_STATUS) } & LSR_TX_EMPTY == 0 && spins < SPIN_LIMIT {
        spins += 1;
        core::hint::spin_loop();
    }
}

/// A [`fmt::Write`] over COM1.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(write_byte);
        Ok(())
    }
}

/// The backend of [`print!`](crate::print); not meant to be called directly.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let _lock = Lock::take();
    // `Serial::write_str` cannot fail; a formatting error comes from a `Display` impl and is not ours to report.
    let _ = fmt::Write::write_fmt(&mut Serial, args);
}

/// No owner of [`OWNER`].
const FREE: u32 = u32::MAX;

/// The local APIC ID of the processor printing, or [`FREE`]: one processor prints at a time, so
/// lines from several processors do not interleave.
static OWNER: AtomicU32 = AtomicU32::new(FREE);

/// Holds [`OWNER`] for one print; re-entered on the same processor (a crash report while printing)
/// it does not wait for itself.
struct Lock {
    taken: bool,
}

impl Lock {
    fn take() -> Lock {
        let me = crate::arch::cpuid(1, 0).ebx >> 24;
        if OWNER.load(Ordering::Relaxed) == me {
            return Lock { taken: false };
        }
        while OWNER
            .compare_exchange_weak(FREE, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        Lock { taken: true }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.taken {
            OWNER.store(FREE, Ordering::Release);
        }
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::serial::_print(format_args!($($arg)*)));
}

/// Prints to the serial console, with a newline.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}
