//! The application processors: started with INIT-SIPI-SIPI through the local APIC, brought from real
//! mode to long mode by a trampoline below 1 MiB, given their own stack, GDT, TSS and IST stack, then
//! parked in a mailbox loop that runs the bootstrap processor's requests ([`Cpus`] implements
//! vmx-core's [`RunOnCpu`] with it).
//!
//! The number of processors comes from the kernel command line (`cpus=N`, which `cargo xtask run
//! --cpus N` adds next to Bochs' `cpu: count=N`); the application processors are assumed to have the
//! local APIC IDs following the bootstrap processor's (as Bochs and QEMU number them). Each is started
//! on its own and must report within [`START_TIMEOUT_TICKS`]; one that does not is named and the run
//! goes on without it being used (its number is never handed to [`RunOnCpu`]).
//!
//! Start-up (SDM Vol. 3A §9.4.4 "MP Initialization Example", §11.6.1 "Interrupt Command Register"):
//! the bootstrap processor writes the trampoline to [`TRAMPOLINE`], sends INIT, waits, then two
//! Start-up IPIs whose vector is the trampoline's page number. The trampoline (16-bit) loads its own
//! GDT, enters protected mode and jumps into the kernel's 32-bit `ap_start32`, which joins the
//! bootstrap processor's path to long mode (`long_mode_common32` in `crate::boot`: the same identity
//! map, PAE, IA32_EFER.LME, CR0.PG) and comes back in 64-bit `ap_start64`; that loads the stack the
//! bootstrap processor prepared and calls [`ap_main`].

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use vmx_core::RunOnCpu;

use crate::arch::{self, CpuTables};

/// The most processors mini-hv starts (the bootstrap processor included).
pub const MAX_CPUS: usize = 8;

/// Physical address of the real-mode trampoline: page 8 (SIPI vector 0x08), conventional memory
/// below 1 MiB that the BIOS and GRUB leave free.
const TRAMPOLINE: u64 = 0x8000;

/// Stack of each application processor.
const AP_STACK_SIZE: usize = 64 * 1024;

/// TSC ticks an application processor has to report after its Start-up IPIs. Under Bochs with
/// `clock: sync=none` the TSC counts emulated instructions; a processor reports a few hundred ticks
/// after its first Start-up IPI (each run prints the time from INIT, which includes the 10 million
/// ticks of [`INIT_DELAY_TICKS`]).
pub const START_TIMEOUT_TICKS: u64 = 50_000_000;

/// TSC ticks a processor has to pick up a request from its mailbox (it polls all the time).
const PICKUP_TIMEOUT_TICKS: u64 = 200_000_000;

/// TSC ticks between INIT and the first Start-up IPI (the SDM's 10 ms at 1 GHz) and between the two
/// Start-up IPIs (its 200 µs).
const INIT_DELAY_TICKS: u64 = 10_000_000;
const SIPI_DELAY_TICKS: u64 = 200_000;

/// The local APIC's registers (xAPIC, memory-mapped at the default base; identity-mapped).
const LAPIC_BASE: u64 = 0xFEE0_0000;
const LAPIC_ICR_LOW: u64 = 0x300;
const LAPIC_ICR_HIGH: u64 = 0x310;
/// ICR delivery status: send pending.
const ICR_SEND_PENDING: u32 = 1 << 12;
/// ICR: INIT, level assert, edge.
const ICR_INIT_ASSERT: u32 = 0b101 << 8 | 1 << 14;
/// ICR: INIT level de-assert (trigger mode level, level 0): the "INIT de-assert" older processors need.
const ICR_INIT_DEASSERT: u32 = 0b101 << 8 | 1 << 15;
/// ICR: Start-up, level assert; the vector is the page number of the start address.
const ICR_STARTUP: u32 = 0b110 << 8 | 1 << 14;

/// Mailbox states.
const IDLE: u32 = 0;
const POSTED: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;

/// One processor's mailbox: the bootstrap processor posts a closure, the processor runs it.
struct Mailbox {
    state: AtomicU32,
    job: UnsafeCell<Option<*mut (dyn FnMut() + 'static)>>,
}

// SAFETY: `job` is written only by the poster while the state is IDLE (no reader), and read only by
// the processor that moved the state POSTED -> RUNNING (the release/acquire pair orders the accesses).
unsafe impl Sync for Mailbox {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_MAILBOX: Mailbox = Mailbox {
    state: AtomicU32::new(IDLE),
    job: UnsafeCell::new(None),
};

/// The jobs of [`Cpus::alongside`], one per processor.
static MAILBOXES: [Mailbox; MAX_CPUS] = [EMPTY_MAILBOX; MAX_CPUS];
/// The requests of [`RunOnCpu::run_on`], one per processor: served by the idle loop, and by a
/// running job through [`serve_calls`].
static CALLS: [Mailbox; MAX_CPUS] = [EMPTY_MAILBOX; MAX_CPUS];

/// Set by each application processor once it runs its mailbox loop.
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The per-processor tables and stacks of the application processors (index = processor number).
struct ApData(UnsafeCell<[CpuTables; MAX_CPUS]>);

// SAFETY: entry `n` is written by the bootstrap processor before it starts processor `n`, and then
// only used by processor `n` (its own GDT, TSS and IST stack).
unsafe impl Sync for ApData {}

static AP_TABLES: ApData = ApData(UnsafeCell::new([const { CpuTables::new() }; MAX_CPUS]));

/// What the 64-bit entry of the trampoline reads: the stack top and number of the processor being
/// started (one at a time).
#[unsafe(no_mangle)]
static ap_boot_stack: AtomicU64 = AtomicU64::new(0);
#[unsafe(no_mangle)]
static ap_boot_cpu: AtomicU64 = AtomicU64::new(0);

global_asm!(
    concat!(
    r#"
    .pushsection .rodata.ap_trampoline, "a"
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl ap_trampoline_gdt_ptr - ap_trampoline_start
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    /* ljmpl $0x18, $ap_start32 */
    .byte 0x66, 0xEA
    .long ap_start32
    .word 0x18
    .balign 8
    /* 0x08: 64-bit code (as in the boot GDT), 0x10: data, 0x18: 32-bit code. */
ap_trampoline_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00CF9A000000FFFF
ap_trampoline_gdt_ptr:
    .word 31
    .long {trampoline} + (ap_trampoline_gdt - ap_trampoline_start)
    .global ap_trampoline_end
ap_trampoline_end:
    .code64
    .popsection

    .pushsection .text.boot32, "ax"
    .code32
ap_start32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $1, %esi
    jmp long_mode_common32
    .code64
    .global ap_start64
ap_start64:
"#,
    crate::arch::load_data_segments!("0x10"),
    r#"    movq ap_boot_stack(%rip), %rsp
    movq ap_boot_cpu(%rip), %rdi
    xorl %ebp, %ebp
    call {ap_main}
    ud2
    .popsection
"#
    ),
    trampoline = const TRAMPOLINE,
    ap_main = sym ap_main,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The Rust entry of an application processor: its own tables, then the mailbox loop.
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    // SAFETY: entry `cpu` was prepared for this processor alone (see `ApData`) and lives forever.
    let tables = unsafe { &mut (*AP_TABLES.0.get())[cpu] };
    // SAFETY: the stack top is the one `ap_start64` just loaded.
    unsafe { arch::init_ap(tables, ap_boot_stack.load(Ordering::Acquire)) };
    ONLINE[cpu].store(true, Ordering::Release);
    loop {
        serve(&MAILBOXES[cpu]);
        serve(&CALLS[cpu]);
        // Polling (MONITOR/MWAIT would idle cheaper, but Bochs 2.7 was seen to miss the wake-up
        // by the other processor's store, leaving a request unclaimed).
        core::hint::spin_loop();
    }
}

/// Runs the request posted to `mailbox`, if there is one (claiming it first).
fn serve(mailbox: &Mailbox) {
    if mailbox.state.load(Ordering::Acquire) == POSTED
        && mailbox
            .state
            .compare_exchange(POSTED, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        // SAFETY: the poster wrote `job` before POSTED (release) and keeps the closure alive
        // and untouched until it sees DONE (see `Cpus::alongside` and `Cpus::run_on`).
        if let Some(job) = unsafe { *mailbox.job.get() } {
            // SAFETY: as above: a live, exclusively lent closure.
            unsafe { (*job)() };
        }
        mailbox.state.store(DONE, Ordering::Release);
    }
}

/// Runs the [`RunOnCpu::run_on`] request posted to application processor `cpu`, if there is one:
/// for a long job started with [`Cpus::alongside`] (e.g. a vCPU loop, at every VM exit), so that
/// the processor stays reachable while the job runs.
///
/// # Safety
/// The caller runs on processor `cpu` (requests to `cpu` must run there, [`RunOnCpu`]'s promise).
pub unsafe fn serve_calls(cpu: usize) {
    if let Some(calls) = CALLS.get(cpu) {
        serve(calls);
    }
}

/// The processor count asked for on the command line (`cpus=N`), 1 without it.
pub fn requested_cpus(cmdline: &str) -> Result<usize, &'static str> {
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cpus="))
    {
        None => Ok(1),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_CPUS).contains(&n) => Ok(n),
            _ => Err("cpus= takes a processor count from 1 to 8"),
        },
    }
}

/// The TSC.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads the time-stamp counter (CR4.TSD is clear at CPL 0 anyway).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Waits until `done()` or `ticks` TSC ticks have passed; whether `done()` held.
fn wait_until(ticks: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = rdtsc();
    loop {
        if done() {
            return true;
        }
        if rdtsc().wrapping_sub(start) > ticks {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// This processor's initial local APIC ID (CPUID.1:EBX\[31:24\]).
pub fn apic_id() -> u32 {
    arch::cpuid(1, 0).ebx >> 24
}

/// Sends an IPI through the xAPIC's interrupt command register and waits (boundedly) for delivery.
fn send_ipi(apic_id: u32, low: u32) -> Result<(), &'static str> {
    let icr_high = (LAPIC_BASE + LAPIC_ICR_HIGH) as *mut u32;
    let icr_low = (LAPIC_BASE + LAPIC_ICR_LOW) as *mut u32;
    // SAFETY: the local APIC's registers at the default base, identity-mapped; writing ICR high then
    // low sends one IPI (SDM Vol. 3A §11.6.1).
    unsafe {
        core::ptr::write_volatile(icr_high, apic_id << 24);
        core::ptr::write_volatile(icr_low, low);
    }
    // SAFETY: reading ICR low has no side effect.
    let sent = wait_until(PICKUP_TIMEOUT_TICKS, || unsafe {
        core::ptr::read_volatile(icr_low) & ICR_SEND_PENDING == 0
    });
    if sent {
        Ok(())
    } else {
        Err("the local APIC never cleared its send-pending bit")
    }
}

/// Why an application processor did not come up.
#[derive(Debug, Clone, Copy)]
pub enum StartError {
    /// The trampoline's page is reserved (the loader left boot data there).
    TrampolineBusy,
    /// Sending the IPIs failed.
    Ipi(&'static str),
    /// No report within [`START_TIMEOUT_TICKS`] after INIT-SIPI-SIPI.
    NoAnswer,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::TrampolineBusy => write!(
                f,
                "the trampoline page {TRAMPOLINE:#x} holds boot data from the loader"
            ),
            StartError::Ipi(why) => f.write_str(why),
            StartError::NoAnswer => write!(
                f,
                "no answer to INIT-SIPI-SIPI within {START_TIMEOUT_TICKS} TSC ticks"
            ),
        }
    }
}

/// The processors that answered: numbers `0..count` (0 is the bootstrap processor).
pub struct Cpus {
    count: usize,
    /// The bootstrap processor's local APIC ID (processor `n` has `base_id + n`).
    base_id: u32,
    /// TSC ticks from each processor's INIT to its report.
    start_ticks: [u64; MAX_CPUS],
    /// `!Send`: the requests are posted from the bootstrap processor.
    _here: core::marker::PhantomData<*const ()>,
}

/// Starts processors `1..wanted` (local APIC IDs following this one's), one at a time; stops at the
/// first that does not come up and reports it (by number and APIC ID). The processors that came up
/// are the ones [`Cpus`] covers.
/// `withhold_sipi` sends processor 1 its INIT but no Start-up IPI, so that it never answers (the
/// timeout path, on request from the command line).
pub fn start(wanted: usize, withhold_sipi: bool) -> (Cpus, Option<(usize, u32, StartError)>) {
    let wanted = wanted.min(MAX_CPUS);
    let base_id = apic_id();
    let mut cpus = Cpus {
        count: 1,
        base_id,
        start_ticks: [0; MAX_CPUS],
        _here: core::marker::PhantomData,
    };
    if wanted <= 1 {
        return (cpus, None);
    }
    let mut busy = false;
    crate::boot::reserved_ranges(|s, e| busy |= s < TRAMPOLINE + 4096 && e > TRAMPOLINE);
    if busy {
        return (cpus, Some((1, base_id + 1, StartError::TrampolineBusy)));
    }
    let start = core::ptr::addr_of!(ap_trampoline_start);
    let len = core::ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
    // SAFETY: the trampoline page is free conventional memory (checked against the loader's data
    // above), identity-mapped; the source is the trampoline's bytes in the kernel image.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len) };
    for (cpu, online) in ONLINE.iter().enumerate().take(wanted).skip(1) {
        let id = base_id + cpu as u32;
        let stack = crate::mem::alloc_frames(AP_STACK_SIZE / 4096);
        let Some(stack) = stack else {
            return (
                cpus,
                Some((cpu, id, StartError::Ipi("out of memory for its stack"))),
            );
        };
        ap_boot_stack.store(stack + AP_STACK_SIZE as u64, Ordering::Release);
        ap_boot_cpu.store(cpu as u64, Ordering::Release);
        let began = rdtsc();
        let sent = send_ipi(id, ICR_INIT_ASSERT)
            .and_then(|()| send_ipi(id, ICR_INIT_DEASSERT))
            .and_then(|()| {
                wait_until(INIT_DELAY_TICKS, || false);
                if withhold_sipi && cpu == 1 {
                    return Ok(());
                }
                send_ipi(id, ICR_STARTUP | (TRAMPOLINE >> 12) as u32)
            })
            .and_then(|()| {
                if withhold_sipi && cpu == 1 {
                    return Ok(());
                }
                if wait_until(SIPI_DELAY_TICKS, || online.load(Ordering::Acquire)) {
                    return Ok(());
                }
                send_ipi(id, ICR_STARTUP | (TRAMPOLINE >> 12) as u32)
            });
        if let Err(e) = sent {
            return (cpus, Some((cpu, id, StartError::Ipi(e))));
        }
        if !wait_until(START_TIMEOUT_TICKS, || online.load(Ordering::Acquire)) {
            return (cpus, Some((cpu, id, StartError::NoAnswer)));
        }
        cpus.start_ticks[cpu] = rdtsc().wrapping_sub(began);
        cpus.count = cpu + 1;
    }
    (cpus, None)
}

/// Why a request did not run on a processor.
#[derive(Debug, Clone, Copy)]
pub enum RunError {
    /// The processor is not one of [`Cpus`].
    NoSuchCpu(usize),
    /// The processor did not pick the request up within the timeout (it did not run it).
    NoPickup(usize),
    /// A job of [`Cpus::alongside`] is still running on the processor.
    Busy(usize),
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::NoSuchCpu(cpu) => write!(f, "CPU {cpu} was not started"),
            RunError::NoPickup(cpu) => write!(
                f,
                "CPU {cpu} did not pick up the request within {PICKUP_TIMEOUT_TICKS} TSC ticks"
            ),
            RunError::Busy(cpu) => write!(f, "CPU {cpu} still runs a job"),
        }
    }
}

// SAFETY: processor 0 is the bootstrap processor, which is the only caller (`Cpus` is created by
// `start` there and is `!Send`); `f` runs there directly. Any other number is an application
// processor that reported online and polls its call mailbox (its idle loop, or a job through
// `serve_calls`, which only ever runs on that processor): the request is posted, claimed by that
// processor alone (POSTED -> RUNNING), run to completion and the caller waits for DONE before
// returning `Ok`; when the claim times out the caller withdraws it (POSTED -> IDLE), so `f` never
// runs and `Err` is returned. The release/acquire pairs on the state order `f`'s accesses with the
// caller's. The numbers `0..count` cover every processor that runs this kernel's code: the others
// were never started (or did not answer, and so never ran the trampoline's jump into the kernel).
unsafe impl RunOnCpu for Cpus {
    type Error = RunError;

    fn cpu_count(&self) -> usize {
        self.count
    }

    fn run_on(&mut self, cpu: usize, f: &mut dyn FnMut()) -> Result<(), RunError> {
        if cpu >= self.count {
            return Err(RunError::NoSuchCpu(cpu));
        }
        if cpu == 0 {
            f();
            return Ok(());
        }
        let calls = &CALLS[cpu];
        post(cpu, calls, f)?;
        finish(cpu, calls)
    }
}

/// Posts `job` to processor `cpu`'s `mailbox` unless a request is in flight there (a job of
/// [`Cpus::alongside`] whose `here` posts another); the caller then waits for it with [`finish`]
/// before `job`'s borrow ends. Every mailbox has one poster, the bootstrap processor.
fn post(cpu: usize, mailbox: &Mailbox, job: &mut dyn FnMut()) -> Result<(), RunError> {
    if mailbox.state.load(Ordering::Acquire) != IDLE {
        return Err(RunError::Busy(cpu));
    }
    let erased: *mut (dyn FnMut() + '_) = job;
    // SAFETY: only the lifetime is erased; the caller keeps `job` borrowed until `finish` has seen
    // DONE or withdrawn the request.
    let erased: *mut (dyn FnMut() + 'static) = unsafe { core::mem::transmute(erased) };
    // SAFETY: the state is IDLE: the processor does not read `job` now.
    unsafe { *mailbox.job.get() = Some(erased) };
    mailbox.state.store(POSTED, Ordering::Release);
    Ok(())
}

/// Waits for the request posted to `cpu`'s `mailbox`: withdrawn (never run) when not picked up
/// within [`PICKUP_TIMEOUT_TICKS`], else until it is DONE; the mailbox is IDLE again afterwards.
fn finish(cpu: usize, mailbox: &Mailbox) -> Result<(), RunError> {
    let picked = wait_until(PICKUP_TIMEOUT_TICKS, || {
        mailbox.state.load(Ordering::Acquire) != POSTED
    });
    if !picked
        && mailbox
            .state
            .compare_exchange(POSTED, IDLE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        // SAFETY: withdrawn: the processor never read `job`.
        unsafe { *mailbox.job.get() = None };
        return Err(RunError::NoPickup(cpu));
    }
    while mailbox.state.load(Ordering::Acquire) != DONE {
        core::hint::spin_loop();
    }
    // SAFETY: DONE: the processor is finished with `job`.
    unsafe { *mailbox.job.get() = None };
    mailbox.state.store(IDLE, Ordering::Release);
    Ok(())
}

impl Cpus {
    /// Posts `job` to processor `cpu` (an application processor) and runs `here` on this one
    /// meanwhile, then waits for `job`: the two run concurrently. `job` and `here` must not share
    /// data (the borrow checker sees to it). `here` gets the processors back: its
    /// [`RunOnCpu::run_on`] requests reach `cpu` only if `job` serves them ([`serve_calls`]),
    /// else they time out. The error says `job` did not run (not picked up in time, or another
    /// job runs there) or `cpu` is not an application processor that was started; `Ok(true)`
    /// says `job` had started before `here` returned (they overlapped).
    pub fn alongside<T>(
        &mut self,
        cpu: usize,
        job: &mut dyn FnMut(),
        here: impl FnOnce(&mut Self) -> T,
    ) -> (T, Result<bool, RunError>) {
        if cpu == 0 || cpu >= self.count {
            return (here(self), Err(RunError::NoSuchCpu(cpu)));
        }
        let mailbox = &MAILBOXES[cpu];
        if let Err(e) = post(cpu, mailbox, job) {
            return (here(self), Err(e));
        }
        let value = here(self);
        let overlapped = mailbox.state.load(Ordering::Acquire) != POSTED;
        (value, finish(cpu, mailbox).map(|()| overlapped))
    }

    /// Sends application processor `cpu` a Start-up IPI with `vector` through the local APIC
    /// (a processor in the wait-for-SIPI state starts, or takes a SIPI VM exit in VMX non-root
    /// operation; any other discards it: SDM Vol. 3C §26.6.2).
    pub fn send_startup(&self, cpu: usize, vector: u8) -> Result<(), &'static str> {
        if cpu == 0 || cpu >= self.count {
            return Err("not an application processor that was started");
        }
        send_ipi(self.base_id + cpu as u32, ICR_STARTUP | u32::from(vector))
    }

    /// The processors' count (as [`RunOnCpu::cpu_count`]).
    pub fn count(&self) -> usize {
        self.count
    }

    /// TSC ticks from processor `cpu`'s INIT to its report (0 for the bootstrap processor), or
    /// `None` for a processor that is not online.
    pub fn start_ticks(&self, cpu: usize) -> Option<u64> {
        self.start_ticks
            .get(cpu)
            .copied()
            .filter(|_| cpu < self.count)
    }
}
