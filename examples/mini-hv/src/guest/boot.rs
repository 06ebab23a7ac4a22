//! The guest's way from a reset-like real-mode state to 64-bit Rust, and its exception entry stubs.
//!
//! The hypervisor starts the guest in real mode (unrestricted guest) with CS.base at
//! [`entry16`]'s linked address and IP 0: the code runs at its linked addresses because the guest has a copy
//! of the kernel image at the same guest-physical addresses. The 16-bit code reaches its data CS-relative
//! (offsets are label differences), loads a flat GDT, sets CR0.PE (clearing CR0.CD/NW, which the hypervisor
//! owns: that write exits and is emulated), and jumps to 32-bit code, which identity-maps the first 4 GiB
//! with 2 MiB pages, enables PAE and SSE, sets EFER.LME (an intercepted WRMSR), enables paging (not
//! intercepted: the processor enters IA-32e mode itself) and jumps to 64-bit code that calls
//! [`super::guest_main`] on the guest's stack.

use core::arch::global_asm;

use super::abi;

global_asm!(
    concat!(
    r#"
    .pushsection .text.mini_hv_guest16, "ax", @progbits
    .balign 16
    .code16
    .global mini_hv_guest_entry16
mini_hv_guest_entry16:
    cli
    cld
    lgdtl %cs:(mini_hv_guest_gdt_ptr - mini_hv_guest_entry16)
    movl %cr0, %eax
    andl $0x9fffffff, %eax
    orl $0x1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $mini_hv_guest_entry32

    .balign 8
mini_hv_guest_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0x00af9b000000ffff
mini_hv_guest_gdt_end:
    .balign 4
    .word 0
mini_hv_guest_gdt_ptr:
    .word mini_hv_guest_gdt_end - mini_hv_guest_gdt - 1
    .long mini_hv_guest_gdt

    .code32
mini_hv_guest_entry32:
"#,
    crate::arch::load_data_segments!("0x10"),
    r#"    movl ${pt}, %edi
    movl $(6 * 1024), %ecx
    xorl %eax, %eax
    rep stosl
    movl $({pt} + 0x1003), {pt}
    movl $({pt} + 0x2003), {pt} + 0x1000
    movl $({pt} + 0x3003), {pt} + 0x1008
    movl $({pt} + 0x4003), {pt} + 0x1010
    movl $({pt} + 0x5003), {pt} + 0x1018
    movl $({pt} + 0x2000), %edi
    movl $0x83, %eax
    movl $2048, %ecx
mini_hv_guest_fill_pd:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    decl %ecx
    jnz mini_hv_guest_fill_pd
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl ${pt}, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000002, %eax
    andl $0xfffffffb, %eax
    movl %eax, %cr0
    ljmp $0x18, $mini_hv_guest_entry64

    .code64
mini_hv_guest_entry64:
"#,
    crate::arch::load_data_segments!("0x10"),
    r#"    movq ${stack}, %rsp
    xorl %ebp, %ebp
    call {main}
    ud2
    .popsection
    "#
    ),
    pt = const abi::PAGE_TABLES,
    stack = const abi::STACK_TOP,
    main = sym super::guest_main,
    options(att_syntax)
);

// The exception entry stubs: each pushes a zero error code when the CPU pushes none, then the vector, and
// joins the common path. With a recovery point armed ([`super::RECOVERY_RIP`] nonzero) the common path
// records the vector and error code and returns to the recovery point; otherwise it calls
// [`super::unexpected_exception`].
global_asm!(
    r#"
    .pushsection .text.mini_hv_guest_exc, "ax", @progbits
    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
mini_hv_guest_exc_\v:
    pushq $0
    pushq $\v
    jmp mini_hv_guest_exc_common
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
mini_hv_guest_exc_\v:
    pushq $\v
    jmp mini_hv_guest_exc_common
    .endr
    .global mini_hv_guest_irq_0x30
mini_hv_guest_irq_0x30:
    pushq $0
    pushq $0x30
    jmp mini_hv_guest_exc_common
mini_hv_guest_exc_common:
    pushq %rax
    movq {recovery}(%rip), %rax
    testq %rax, %rax
    jz mini_hv_guest_exc_fatal
    movq %rax, 24(%rsp)
    movq $0, {recovery}(%rip)
    movq 8(%rsp), %rax
    movq %rax, {vector}(%rip)
    movq 16(%rsp), %rax
    movq %rax, {error}(%rip)
    popq %rax
    addq $16, %rsp
    iretq
mini_hv_guest_exc_fatal:
    movq 8(%rsp), %rdi
    movq 16(%rsp), %rsi
    movq 24(%rsp), %rdx
    call {fatal}
    ud2
    .popsection

    .pushsection .rodata.mini_hv_guest_exc, "a", @progbits
    .balign 8
    .global mini_hv_guest_exc_table
mini_hv_guest_exc_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad mini_hv_guest_exc_\v
    .endr
    .popsection
    "#,
    recovery = sym super::RECOVERY_RIP,
    vector = sym super::EXC_VECTOR,
    error = sym super::EXC_ERROR,
    fatal = sym super::unexpected_exception,
    options(att_syntax)
);

unsafe extern "C" {
    /// The guest's first instruction (real mode).
    static mini_hv_guest_entry16: u8;
    /// The linked addresses of the 32 exception entry stubs, by vector.
    static mini_hv_guest_exc_table: [u64; 32];
    /// The entry stub of interrupt vector 0x30 (joins the exception path).
    static mini_hv_guest_irq_0x30: u8;
}

/// The entry stub of interrupt vector [`super::IRQ_VECTOR`]: like an exception without error
/// code, it stops at a recovery point or is fatal.
pub fn irq_stub() -> u64 {
    core::ptr::addr_of!(mini_hv_guest_irq_0x30) as u64
}

/// The linked (== guest-physical) address of the guest's first instruction.
pub fn entry16() -> u64 {
    core::ptr::addr_of!(mini_hv_guest_entry16) as u64
}

/// The exception entry stub for `vector` (0..32).
pub fn exception_stub(vector: usize) -> u64 {
    // SAFETY: the table is immutable data defined above with 32 entries; the caller's index is checked.
    unsafe { (*core::ptr::addr_of!(mini_hv_guest_exc_table))[vector] }
}
