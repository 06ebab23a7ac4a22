//! The host CPU: port I/O, CPUID, MSRs, control registers, and the host's own GDT (with a 64-bit TSS) and
//! IDT, whose handlers print a crash report and end the run with a failure, never hang.
//!
//! Host GDT layout (Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors", 8.2.3 "TSS Descriptor in 64-bit mode"):
//! `0x00` null, `0x08` 64-bit code (DPL 0), `0x10` data (DPL 0), `0x18` 64-bit TSS (16 bytes).

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::mem::size_of;

use vmx_caps::arch::{Cr0, Cr4};

/// Host code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Host data/stack segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// Host task register selector.
pub const KERNEL_TR: u16 = 0x18;

/// Writes a byte to an I/O port.
///
/// # Safety
/// Writing the port must not break memory safety (e.g. by reprogramming a DMA engine).
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Reading the port must have no side effect that breaks memory safety.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The four registers CPUID returns.
#[allow(
    dead_code,
    reason = "host API for the hypervisor (src/hv), which may not use all of it"
)]
#[derive(Debug, Clone, Copy)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// CPUID with leaf `leaf` and sub-leaf `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU (otherwise RDMSR raises #GP, which ends the run with a crash report).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (hi as u64) << 32 | lo as u64
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be valid and must not break memory safety.
#[allow(
    dead_code,
    reason = "host API for the hypervisor (src/hv), which may not use all of it"
)]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

macro_rules! read_cr {
    ($(#[$doc:meta])* $name:ident, $reg:literal, $ty:ty, $wrap:expr) => {
        $(#[$doc])*
        pub fn $name() -> $ty {
            let value: u64;
            // SAFETY: reading a control register has no side effect; the kernel runs at CPL 0.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
            $wrap(value)
        }
    };
}

read_cr!(
    /// CR0.
    cr0, "cr0", Cr0, Cr0::from_bits_retain
);
read_cr!(
    /// CR2 (the last page-fault linear address).
    cr2, "cr2", u64, u64::from
);
read_cr!(
    /// CR3.
    cr3, "cr3", u64, u64::from
);
read_cr!(
    /// CR4.
    cr4, "cr4", Cr4, Cr4::from_bits_retain
);

/// Writes CR4.
///
/// # Safety
/// The new value must be valid for the CPU (else #GP) and keep paging, PAE and SSE state the kernel relies on.
#[allow(
    dead_code,
    reason = "host API for the hypervisor (src/hv), which may not use all of it"
)]
pub unsafe fn write_cr4(value: Cr4) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr4, {}", in(reg) value.bits(), options(nostack, preserves_flags)) };
}

/// Writes CR0.
///
/// # Safety
/// The new value must be valid for the CPU (else #GP) and keep PE, PG and the SSE settings.
#[allow(
    dead_code,
    reason = "host API for the hypervisor (src/hv), which may not use all of it"
)]
pub unsafe fn write_cr0(value: Cr0) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr0, {}", in(reg) value.bits(), options(nostack, preserves_flags)) };
}

/// A cell for the host's descriptor tables: one CPU, written during `init` only.
struct Tables<T>(UnsafeCell<T>);

// SAFETY: one CPU, interrupts off; the contents are written only by `init`, before anything else runs.
unsafe impl<T> Sync for Tables<T> {}

/// The 64-bit Task-State Segment (SDM Vol. 3A, 8.7 "Task Management in 64-bit Mode", Figure 8-11).
#[repr(C, packed(4))]
struct Tss64 {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const IST_STACK_SIZE: usize = 16 * 1024;

/// The stack for #DF, NMI and #MC (IST1), so that a kernel stack overflow still gets a crash report.
#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static IST1_STACK: Tables<IstStack> = Tables(UnsafeCell::new(IstStack([0; IST_STACK_SIZE])));

impl Tss64 {
    /// No stacks yet, and no I/O permission bitmap (the base points past the segment limit).
    const EMPTY: Tss64 = Tss64 {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        iomap_base: size_of::<Tss64>() as u16,
    };
}

static TSS: Tables<Tss64> = Tables(UnsafeCell::new(Tss64::EMPTY));

static GDT: Tables<[u64; 5]> = Tables(UnsafeCell::new([
    0,
    0x00AF_9A00_0000_FFFF, // 0x08: code, present, DPL 0, L=1
    0x00CF_9200_0000_FFFF, // 0x10: data, present, DPL 0, writable
    0,                     // 0x18: TSS low half (filled by `init`)
    0,                     // 0x20: TSS high half
]));

/// The assembly lines that load the flat data selector `$selector` into DS, ES, SS, FS and GS: the
/// segment reload after a far jump into protected or long mode (host boot, application processors and
/// the test guest's own boot), written once and spliced into their `global_asm!` with `concat!`.
macro_rules! load_data_segments {
    ($selector:literal) => {
        concat!(
            "    movw $",
            $selector,
            ", %ax\n    movw %ax, %ds\n    movw %ax, %es\n    movw %ax, %ss\n",
            "    movw %ax, %fs\n    movw %ax, %gs\n"
        )
    };
}
pub(crate) use load_data_segments;

/// An IDT gate descriptor (SDM Vol. 3A, 6.14.1 "64-Bit Mode IDT").
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    /// A not-present gate.
    pub(crate) const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (type 0xE, DPL 0) to `selector:handler` on stack table entry
    /// `ist` (0: none).
    pub(crate) const fn interrupt(selector: u16, handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist,
            type_attr: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Tables<Idt> = Tables(UnsafeCell::new(Idt([Gate::MISSING; 256])));

/// The operand of LGDT/LIDT and the result of SGDT/SIDT.
#[repr(C, packed)]
pub(crate) struct DescriptorTablePointer {
    /// The table's limit (its size in bytes minus 1).
    pub(crate) limit: u16,
    /// The table's linear base address.
    pub(crate) base: u64,
}

/// Bytes per interrupt stub in `isr_stubs` (each is padded to this size).
const STUB_SIZE: u64 = 16;

/// Vectors for which the CPU pushes an error code (SDM Vol. 3A, Table 6-1).
const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

// 256 stubs, 16 bytes apart: push a zero error code when the CPU pushed none, push the vector, jump to the
// common path, which saves every GPR and calls `exception_handler(&ExceptionFrame)` (which never returns).
global_asm!(
    r#"
    .pushsection .text.isr, "ax"
    .balign 16
    .global isr_stubs
isr_stubs:
    .set isr_vector, 0
    .rept 256
    .balign 16
    .if (isr_vector == 8) || (isr_vector == 10) || (isr_vector == 11) || (isr_vector == 12) || (isr_vector == 13) || (isr_vector == 14) || (isr_vector == 17) || (isr_vector == 21) || (isr_vector == 29) || (isr_vector == 30)
    .else
    pushq $0
    .endif
    pushq $isr_vector
    jmp isr_common
    .set isr_vector, isr_vector + 1
    .endr
    .balign 16
    .global isr_stubs_end
isr_stubs_end:

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    andq $-16, %rsp
    cld
    call {handler}
    ud2
    .popsection
"#,
    handler = sym exception_handler,
    options(att_syntax)
);

unsafe extern "C" {
    static isr_stubs: u8;
    static isr_stubs_end: u8;
}

/// What the interrupt stubs save: the GPRs (pushed by `isr_common`), the vector and error code (pushed by
/// the stub, zero when the CPU pushes none), and the CPU's interrupt frame.
#[repr(C)]
pub struct ExceptionFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// The SDM's mnemonic for an exception vector.
fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR BOUND range exceeded",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        9 => "coprocessor segment overrun",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack-segment fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating-point error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating-point exception",
        20 => "#VE virtualization exception",
        21 => "#CP control protection",
        28 => "#HV hypervisor injection",
        29 => "#VC VMM communication",
        30 => "#SX security exception",
        15 | 22..=27 | 31 => "reserved exception",
        _ => "unexpected external interrupt",
    }
}

/// Set while a crash report is being printed, so that a fault inside the report does not recurse.
static IN_EXCEPTION: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Prints the crash report for a host exception and ends the run with RESULT FAIL.
extern "C" fn exception_handler(frame: &ExceptionFrame) -> ! {
    use core::sync::atomic::Ordering;
    if IN_EXCEPTION.swap(true, Ordering::Relaxed) {
        crate::println!(
            "\nmini-hv: nested host exception {} while printing a crash report",
            frame.vector
        );
        crate::println!("mini-hv: RESULT FAIL (host exception)");
        crate::exit::exit(crate::hv::Outcome::Fail);
    }
    let f = frame;
    crate::println!();
    crate::println!(
        "mini-hv: HOST EXCEPTION vector {} ({})",
        f.vector,
        vector_name(f.vector)
    );
    if has_error_code(f.vector as u8) {
        crate::println!("  error code {:#x}", f.error_code);
    }
    crate::println!(
        "  RIP {:#018x}  CS {:#06x}  RFLAGS {:#018x}",
        f.rip,
        f.cs,
        f.rflags
    );
    crate::println!("  RSP {:#018x}  SS {:#06x}", f.rsp, f.ss);
    crate::println!(
        "  CR0 {:#018x}  CR2 {:#018x}  CR3 {:#018x}  CR4 {:#018x}",
        cr0().bits(),
        cr2(),
        cr3(),
        cr4().bits()
    );
    crate::println!(
        "  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}  RDX {:#018x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx
    );
    crate::println!(
        "  RSI {:#018x}  RDI {:#018x}  RBP {:#018x}",
        f.rsi,
        f.rdi,
        f.rbp
    );
    crate::println!(
        "  R8  {:#018x}  R9  {:#018x}  R10 {:#018x}  R11 {:#018x}",
        f.r8,
        f.r9,
        f.r10,
        f.r11
    );
    crate::println!(
        "  R12 {:#018x}  R13 {:#018x}  R14 {:#018x}  R15 {:#018x}",
        f.r12,
        f.r13,
        f.r14,
        f.r15
    );
    let guard = crate::boot::stack_guard();
    if (guard..guard + 4096).contains(&cr2()) {
        let (bottom, top) = crate::boot::stack_range();
        crate::println!(
            "  kernel stack overflow: CR2 is in the guard page below the stack {bottom:#x}..{top:#x}"
        );
    }
    crate::println!("mini-hv: RESULT FAIL (host exception)");
    crate::exit::exit(crate::hv::Outcome::Fail)
}

/// Loads the host GDT (with the TSS), reloads every segment register, loads TR and the IDT.
pub fn init() {
    let stubs = core::ptr::addr_of!(isr_stubs) as u64;
    let stubs_end = core::ptr::addr_of!(isr_stubs_end) as u64;
    assert_eq!(
        stubs_end - stubs,
        256 * STUB_SIZE,
        "interrupt stubs are not {STUB_SIZE} bytes apart"
    );

    // SAFETY: `init` runs once, first thing after boot, before any reader of these tables exists.
    unsafe {
        let idt = &mut *IDT.0.get();
        for (vector, gate) in idt.0.iter_mut().enumerate() {
            // #DF, NMI and #MC run on IST1.
            let ist = if matches!(vector, 2 | 8 | 18) { 1 } else { 0 };
            *gate = Gate::interrupt(KERNEL_CS, stubs + vector as u64 * STUB_SIZE, ist);
        }
        load_tables(
            &mut *GDT.0.get(),
            &mut *TSS.0.get(),
            IST1_STACK.0.get() as u64 + IST_STACK_SIZE as u64,
            crate::boot::stack_range().1,
        );
    }
}

/// One application processor's GDT, TSS and IST1 stack (the IDT is shared: it is never written
/// after [`init`]).
#[repr(C, align(16))]
pub struct CpuTables {
    ist: IstStack,
    gdt: [u64; 5],
    tss: Tss64,
}

impl CpuTables {
    /// Empty tables (filled by [`init_ap`]).
    pub const fn new() -> Self {
        CpuTables {
            ist: IstStack([0; IST_STACK_SIZE]),
            gdt: [0; 5],
            tss: Tss64::EMPTY,
        }
    }
}

/// Loads an application processor's own GDT (the bootstrap processor's layout, its own TSS) and
/// the shared IDT, and reloads every segment register and TR.
///
/// # Safety
/// Runs once on the application processor that owns `tables` (used by no other processor), after
/// [`init`] on the bootstrap processor; `stack_top` is this processor's stack.
pub unsafe fn init_ap(tables: &'static mut CpuTables, stack_top: u64) {
    let ist_top = tables.ist.0.as_ptr() as u64 + IST_STACK_SIZE as u64;
    // SAFETY: the tables are this processor's, static, and not loaded anywhere yet.
    unsafe { load_tables(&mut tables.gdt, &mut tables.tss, ist_top, stack_top) };
}

/// Fills `tss` (IST1 `ist_top`, RSP0 `rsp0`) and `gdt` (code 0x08, data 0x10, TSS 0x18), loads them
/// and the IDT, reloads every segment register and TR.
///
/// # Safety
/// `gdt` and `tss` live forever and are used by this processor alone; the IDT is initialized.
unsafe fn load_tables(
    gdt: &'static mut [u64; 5],
    tss: &'static mut Tss64,
    ist_top: u64,
    rsp0: u64,
) {
    tss.ist[0] = ist_top;
    tss.rsp[0] = rsp0;
    let tss_base = core::ptr::from_mut(tss) as u64;
    let limit = (size_of::<Tss64>() - 1) as u64;
    gdt[0] = 0;
    gdt[1] = 0x00AF_9A00_0000_FFFF;
    gdt[2] = 0x00CF_9200_0000_FFFF;
    // Available 64-bit TSS (type 9), present, DPL 0 (SDM Vol. 3A, Figure 8-4).
    gdt[3] = (limit & 0xFFFF)
        | (tss_base & 0xFF_FFFF) << 16
        | 0x89 << 40
        | ((limit >> 16) & 0xF) << 48
        | ((tss_base >> 24) & 0xFF) << 56;
    gdt[4] = tss_base >> 32;

    let gdtr = DescriptorTablePointer {
        limit: (size_of::<[u64; 5]>() - 1) as u16,
        base: gdt.as_ptr() as u64,
    };
    let idtr = DescriptorTablePointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the GDT lives forever (caller) and the IDT is a static; the selectors name the
    // descriptors set up above; CS is reloaded with a far return to the next instruction; LTR marks
    // this processor's TSS busy once, here.
    unsafe {
        asm!(
            "lgdt [{gdtr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "mov fs, {ds:x}",
            "mov gs, {ds:x}",
            "ltr {tr:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            cs = const KERNEL_CS as u64,
            ds = in(reg) KERNEL_DS as u64,
            tr = in(reg) KERNEL_TR as u64,
            tmp = out(reg) _,
        );
    }
}
