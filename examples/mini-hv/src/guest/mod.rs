//! The test guest: code in the kernel image that the hypervisor runs in VMX non-root operation.
//!
//! The guest gets a copy of the kernel image at the image's own guest-physical addresses, so the functions
//! here run at their linked addresses inside the guest, on the guest's own copy of every static (the host
//! never touches the guest-only statics below, so the copy holds their initial values). The guest starts in
//! real mode ([`boot`]), reaches [`guest_main`] in 64-bit mode, installs its IDT, runs the checks of [`tests`]
//! (each reported through a hypercall, see [`abi`]) and ends with a deliberate triple fault.
//!
//! Nothing here may be called by the host: it expects to run as the guest.

pub mod abi;
mod boot;
mod nested;
mod tests;

use core::arch::asm;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{DescriptorTablePointer, Gate};

pub use boot::entry16;

/// The recovery point for the next exception (0: none armed, an exception is fatal).
static RECOVERY_RIP: AtomicU64 = AtomicU64::new(0);
/// The vector of the last exception caught at a recovery point ([`NO_EXCEPTION`] when none).
static EXC_VECTOR: AtomicU64 = AtomicU64::new(NO_EXCEPTION);
/// The error code of the last exception caught at a recovery point (0 for vectors without one).
static EXC_ERROR: AtomicU64 = AtomicU64::new(0);

const NO_EXCEPTION: u64 = u64::MAX;

/// Vector numbers the guest expects (SDM Vol. 3A, 6.3.1 "Exception and Interrupt Vectors").
const UD: u8 = 6;
const GP: u8 = 13;

/// An exception caught at a recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    vector: u8,
    error: u64,
}

/// Runs one instruction sequence with a recovery point armed right after it: an exception inside it resumes
/// execution after the sequence. Evaluates to `Option<Fault>`: the exception taken, if any. The operands
/// are those of `asm!`; the sequence must leave the stack as it found it.
macro_rules! guarded {
    ($insn:literal $(, $($ops:tt)*)?) => {{
        $crate::guest::arm();
        // SAFETY: the caller's sequence is one the guest is allowed to attempt; the recovery point makes an
        // exception resume after it with every register but the declared outputs preserved.
        unsafe {
            core::arch::asm!(
                "lea {guard_tmp}, [rip + 3f]",
                "mov qword ptr [{guard_slot}], {guard_tmp}",
                $insn,
                "3:",
                "mov qword ptr [{guard_slot}], 0",
                guard_slot = in(reg) $crate::guest::recovery_slot(),
                guard_tmp = out(reg) _,
                $($($ops)*)?
            );
        }
        $crate::guest::taken()
    }};
}
use guarded;

fn arm() {
    EXC_VECTOR.store(NO_EXCEPTION, Ordering::SeqCst);
    EXC_ERROR.store(0, Ordering::SeqCst);
}

fn recovery_slot() -> *mut u64 {
    RECOVERY_RIP.as_ptr()
}

fn taken() -> Option<Fault> {
    match EXC_VECTOR.load(Ordering::SeqCst) {
        NO_EXCEPTION => None,
        v => Some(Fault {
            vector: v as u8,
            error: EXC_ERROR.load(Ordering::SeqCst),
        }),
    }
}

/// VMCALL with function `nr` and arguments in RDI, RSI, RDX; returns RAX.
fn hypercall(nr: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let ret: u64;
    // SAFETY: VMCALL exits to the hypervisor, which reads guest memory only through the pointers passed and
    // changes only RAX.
    unsafe {
        asm!("vmcall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             options(nostack))
    };
    ret
}

/// How many VM exits with basic reason `reason` the hypervisor has handled.
fn exit_count(reason: u64) -> u64 {
    hypercall(abi::HC_EXIT_COUNT, reason, 0, 0)
}

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O in the guest only reaches the hypervisor's emulation.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The guest's console: a 16550 driver for COM1, which the hypervisor emulates.
struct Console;

impl Console {
    fn init() {
        use abi::uart::*;
        outb(BASE + IER, 0);
        outb(BASE + LCR, LCR_DLAB);
        outb(BASE + THR, 1); // divisor 1: 115200 baud
        outb(BASE + IER, 0);
        outb(BASE + LCR, 0x03); // 8N1
        outb(BASE + MCR, 0x03);
    }

    fn put(byte: u8) {
        use abi::uart::*;
        while inb(BASE + LSR) & 0x20 == 0 {}
        outb(BASE + THR, byte);
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Console::put(b'\r');
            }
            Console::put(b);
        }
        Ok(())
    }
}

fn print(args: fmt::Arguments<'_>) {
    // Console::write_str never fails.
    let _ = Console.write_fmt(args);
}

macro_rules! gprintln {
    ($($arg:tt)*) => { $crate::guest::print(format_args!("{}\n", format_args!($($arg)*))) };
}
use gprintln;

/// The one interrupt vector the guest handles (the `virtual-interrupt-delivery` check's).
const IRQ_VECTOR: u8 = 0x30;

/// IDT entries: the 32 exception vectors, then not-present gates up to [`IRQ_VECTOR`].
const IDT_ENTRIES: usize = IRQ_VECTOR as usize + 1;

/// The guest's IDT: the 32 exception vectors and [`IRQ_VECTOR`].
static mut IDT: [Gate; IDT_ENTRIES] = [Gate::MISSING; IDT_ENTRIES];

/// The guest's 64-bit code segment selector (see the GDT in [`boot`]).
const GUEST_CS: u16 = 0x18;

fn lidt(base: u64, limit: u16) {
    let ptr = DescriptorTablePointer { limit, base };
    // SAFETY: the table at `base` holds valid gates (or `limit` makes it empty on purpose).
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}

fn install_idt() {
    let idt = &raw mut IDT;
    for vector in (0..32).chain([usize::from(IRQ_VECTOR)]) {
        let handler = if vector < 32 {
            boot::exception_stub(vector)
        } else {
            boot::irq_stub()
        };
        // Present, DPL 0, 64-bit interrupt gate.
        let gate = Gate::interrupt(GUEST_CS, handler, 0);
        // SAFETY: one CPU; the IDT is written before it is loaded, only here.
        unsafe { (*idt)[vector] = gate };
    }
    lidt(idt as u64, (IDT_ENTRIES * 16 - 1) as u16);
}

/// The guest's 64-bit entry, called by [`boot`] on the guest's stack. Never returns: the run ends with a
/// triple fault (or an [`abi::HC_EXIT`] on an unexpected exception).
extern "C" fn guest_main() -> ! {
    Console::init();
    install_idt();
    gprintln!("hello from 64-bit mode; running {} tests", abi::TESTS.len());
    let banner = "hypercall print works";
    hypercall(
        abi::HC_PRINT,
        banner.as_ptr() as u64,
        banner.len() as u64,
        0,
    );
    tests::run_all();
    gprintln!("all tests done; ending with a triple fault (empty IDT, then UD2)");
    lidt(0, 0);
    // SAFETY: deliberately faults with an empty IDT: #UD cannot be delivered, nor #GP, nor #DF: the
    // processor shuts down, which VMX turns into a triple-fault VM exit.
    unsafe { asm!("ud2", options(nomem, nostack, noreturn)) }
}

/// Called by the exception stubs when no recovery point is armed: reports and stops the guest.
extern "C" fn unexpected_exception(vector: u64, error: u64, rip: u64) -> ! {
    gprintln!("unexpected exception {vector} (error code {error:#x}) at RIP {rip:#x}");
    hypercall(abi::HC_EXIT, 0x100 + vector, 0, 0);
    loop {
        // SAFETY: HLT waits; the hypervisor has already stopped the guest.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
