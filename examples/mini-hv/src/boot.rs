//! Boot: the Multiboot v1 header, the 32-bit entry that switches to long mode, and the Multiboot
//! information (memory map, modules, command line).
//!
//! The header uses the a.out kludge (flags bit 16) so that one ELF64 image boots from QEMU `-kernel` (which
//! refuses ELF64 Multiboot images without it) and from GRUB's `multiboot` command. The entry code:
//! 1. saves the Multiboot magic (EAX) and information address (EBX), zeroes `.bss`;
//! 2. checks CPUID.80000001H:EDX.LM (bit 29), else reports on COM1 and ends the run with a failure;
//! 3. builds page tables that identity-map 0–4 GiB with 2 MiB pages (PML4 → PDPT → 4 page directories),
//!    except the 4 KiB guard page below the kernel stack, left unmapped (its 2 MiB page is split into 4 KiB
//!    pages);
//! 4. sets CR4.PAE/OSFXSR/OSXMMEXCPT, IA32_EFER.LME, CR0.PG/PE/MP/NE/WP (EM and TS clear: SSE usable)
//!    (the application processors share this step: `long_mode_common32`, see `crate::smp`);
//! 5. far-jumps into 64-bit code, loads the data segments and the stack, calls `kmain(magic, info)`.

use core::arch::global_asm;

/// Multiboot v1 header magic.
const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The value a Multiboot v1 loader leaves in EAX.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// Size of the boot/kernel stack.
pub const STACK_SIZE: usize = 128 * 1024;

global_asm!(
    concat!(
    r#"
    .pushsection .multiboot, "a"
    .balign 4
multiboot_header:
    .long {magic}
    .long {flags}
    .long -({magic} + {flags})
    .long multiboot_header
    .long __image_start
    .long __load_end
    .long __kernel_end
    .long _start32
    .popsection

    .pushsection .data.boot, "aw"
    .balign 8
mb_saved_magic:
    .long 0
mb_saved_info:
    .long 0
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
no_lm_message:
    .asciz "mini-hv: this CPU has no long mode (CPUID.80000001H:EDX.LM = 0)\nmini-hv: RESULT FAIL (no long mode)\n"
    .popsection

    .pushsection .bss.boot_pages, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_pt:
    .skip 4096
    .popsection

    .pushsection .kstack, "aw", @nobits
    .balign 4096
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    .popsection

    .pushsection .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    movl %eax, mb_saved_magic
    movl %ebx, mb_saved_info

    /* Zero .bss (the loader should have done it; do not rely on that). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl $boot_stack_top, %esp

    /* Long mode available? */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx
    jnc no_long_mode

    /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    xorl %ecx, %ecx
2:
    movl %eax, boot_pdpt(,%ecx,8)
    addl $4096, %eax
    incl %ecx
    cmpl $4, %ecx
    jne 2b

    /* 2048 PDEs: present, writable, PS (2 MiB), identity. */
    movl $0x83, %eax
    xorl %ecx, %ecx
3:
    movl %eax, boot_pd(,%ecx,8)
    addl $0x200000, %eax
    incl %ecx
    cmpl $2048, %ecx
    jne 3b

    /* The 2 MiB page holding the stack guard becomes a page table of 4 KiB pages without the guard page,
       so that a kernel stack overflow faults (#PF, then #DF on IST1 with a crash report). */
    movl $boot_stack_guard, %eax
    movl %eax, %ebx
    andl $0xFFE00000, %ebx
    movl %ebx, %edx
    orl $3, %edx
    xorl %ecx, %ecx
7:
    movl %edx, boot_pt(,%ecx,8)
    addl $4096, %edx
    incl %ecx
    cmpl $512, %ecx
    jne 7b
    movl %eax, %ecx
    subl %ebx, %ecx
    shrl $12, %ecx
    movl $0, boot_pt(,%ecx,8)
    shrl $21, %ebx
    movl $boot_pt, %edx
    orl $3, %edx
    movl %edx, boot_pd(,%ebx,8)

    /* ESI = 0: the bootstrap processor (the application processors enter below with ESI = 1,
       from `ap_start32` in smp.rs). */
    xorl %esi, %esi
    .global long_mode_common32
long_mode_common32:
    movl $boot_pml4, %eax
    movl %eax, %cr3

    /* CR4: PAE (5), OSFXSR (9), OSXMMEXCPT (10). */
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4

    /* IA32_EFER.LME (bit 8). */
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr

    /* CR0: clear EM (2), TS (3), NW (29), CD (30); set PE (0), MP (1), NE (5), WP (16), PG (31). */
    movl %cr0, %eax
    andl $0x9FFFFFF3, %eax
    orl $0x80010023, %eax
    movl %eax, %cr0

    testl %esi, %esi
    jnz 8f
    lgdt boot_gdt_ptr
    ljmp $0x08, $start64
8:
    /* An application processor: its trampoline's GDT has the 64-bit code segment at 0x08 too. */
    ljmp $0x08, $ap_start64

no_long_mode:
    movl $no_lm_message, %esi
    movw $0x3F8, %dx
4:
    movb (%esi), %al
    testb %al, %al
    jz 5f
    outb %al, %dx
    incl %esi
    jmp 4b
5:
    movw $0xF4, %dx
    movb $0x11, %al
    outb %al, %dx
    movw $0x8900, %dx
    movb $0x44, %al
    outb %al, %dx
6:
    hlt
    jmp 6b

    .code64
start64:
"#,
    crate::arch::load_data_segments!("0x10"),
    r#"    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl mb_saved_magic(%rip), %edi
    movl mb_saved_info(%rip), %esi
    call kmain
    ud2
    .popsection
"#
    ),
    magic = const MULTIBOOT_HEADER_MAGIC,
    // Bit 0: page-align modules; bit 1: memory information; bit 16: the address fields are valid.
    flags = const 0x0001_0003u32,
    stack_size = const STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static __kernel_end: u8;
}

/// The physical range `[start, end)` of the kernel image: code, data and `.bss` (with the boot page tables and
/// the exception stack), all mapped. The kernel stack and its guard page follow it (see [`kernel_range`]).
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}

/// Everything the kernel occupies: the image plus the kernel stack and its guard page.
pub fn kernel_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    )
}

/// Where the Multiboot information structure said each boot fact is; filled once by [`init`].
#[derive(Clone, Copy)]
struct BootInfo {
    /// Physical address of the Multiboot information structure.
    info: u64,
    /// The `flags` word of the structure.
    flags: u32,
}

/// Single-core, written once before anything reads it.
struct BootCell(core::cell::UnsafeCell<Option<BootInfo>>);

// SAFETY: the kernel runs on one CPU with interrupts off; the cell is written once by `init` before any reader.
unsafe impl Sync for BootCell {}

static BOOT: BootCell = BootCell(core::cell::UnsafeCell::new(None));

fn boot_info() -> Option<BootInfo> {
    // SAFETY: see `BootCell`: no write can overlap this read.
    unsafe { *BOOT.0.get() }
}

/// Why the boot information could not be used.
#[derive(Debug, Clone, Copy)]
pub enum BootError {
    /// EAX did not hold the Multiboot v1 bootloader magic.
    BadMagic(u32),
    /// The information structure lies above 4 GiB or at address 0.
    BadInfoAddress(u32),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::BadMagic(m) => write!(
                f,
                "bootloader magic {m:#010x} is not the Multiboot v1 magic {MULTIBOOT_BOOTLOADER_MAGIC:#010x}"
            ),
            BootError::BadInfoAddress(a) => {
                write!(f, "Multiboot information address {a:#x} is unusable")
            }
        }
    }
}

/// Records the Multiboot information handed over in EAX/EBX.
pub fn init(magic: u32, info: u32) -> Result<(), BootError> {
    if magic != MULTIBOOT_BOOTLOADER_MAGIC {
        return Err(BootError::BadMagic(magic));
    }
    if info == 0 {
        return Err(BootError::BadInfoAddress(info));
    }
    let base = info as u64;
    // SAFETY: the loader placed the structure at `info`, identity-mapped; `flags` is its first field.
    let flags = unsafe { read_u32(base) };
    // SAFETY: single write before any reader (see `BootCell`).
    unsafe { *BOOT.0.get() = Some(BootInfo { info: base, flags }) };
    Ok(())
}

/// Reads a `u32` at a physical (identity-mapped) address.
///
/// # Safety
/// `addr` must be readable memory.
unsafe fn read_u32(addr: u64) -> u32 {
    // SAFETY: guaranteed by the caller; unaligned reads are fine on x86.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

/// Reads a `u64` at a physical (identity-mapped) address.
///
/// # Safety
/// `addr` must be readable memory.
unsafe fn read_u64(addr: u64) -> u64 {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::read_unaligned(addr as *const u64) }
}

/// A NUL-terminated string at a physical address, as `&str` (invalid UTF-8 is cut at the first bad byte).
///
/// # Safety
/// `addr` must point to a NUL-terminated string that stays valid and unchanged for `'static`.
unsafe fn c_str(addr: u64) -> &'static str {
    if addr == 0 {
        return "";
    }
    let mut len = 0usize;
    // SAFETY: the caller guarantees a NUL terminator; we stop at it (and at 4 KiB, defensively).
    while len < 4096 && unsafe { *((addr as usize + len) as *const u8) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just scanned are readable and live for 'static per the caller.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        // `valid_up_to` is a char boundary, so the prefix is valid UTF-8.
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// Multiboot information flag bits (Multiboot Specification 0.6.96, section 3.3).
mod flag {
    pub const MEM: u32 = 1 << 0;
    pub const CMDLINE: u32 = 1 << 2;
    pub const MODS: u32 = 1 << 3;
    pub const MMAP: u32 = 1 << 6;
    pub const LOADER_NAME: u32 = 1 << 9;
}

/// The kernel command line given by the loader (empty when none).
pub fn cmdline() -> &'static str {
    match boot_info() {
        // SAFETY: flag bit 2 says `cmdline` (offset 16) is the address of a NUL-terminated string; the memory
        // holding it is kept out of the frame allocator (see `reserved_ranges`).
        Some(b) if b.flags & flag::CMDLINE != 0 => unsafe { c_str(read_u32(b.info + 16) as u64) },
        _ => "",
    }
}

/// The boot loader's name (empty when not given).
pub fn loader_name() -> &'static str {
    match boot_info() {
        // SAFETY: flag bit 9 says `boot_loader_name` (offset 64) is the address of a NUL-terminated string.
        Some(b) if b.flags & flag::LOADER_NAME != 0 => unsafe {
            c_str(read_u32(b.info + 64) as u64)
        },
        _ => "",
    }
}

/// `mem_lower`/`mem_upper` in KiB, when given.
pub fn basic_memory() -> Option<(u32, u32)> {
    match boot_info() {
        // SAFETY: flag bit 0 says offsets 4 and 8 are valid.
        Some(b) if b.flags & flag::MEM != 0 => unsafe {
            Some((read_u32(b.info + 4), read_u32(b.info + 8)))
        },
        _ => None,
    }
}

/// The type of a memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Type 1: RAM free for use.
    Available,
    /// Type 3: ACPI tables, reclaimable once read.
    AcpiReclaimable,
    /// Type 4: ACPI NVS, preserved across hibernation.
    AcpiNvs,
    /// Type 5: defective RAM.
    Defective,
    /// Type 2 and any other value: reserved.
    Reserved(u32),
}

impl RegionKind {
    fn from_raw(kind: u32) -> Self {
        match kind {
            1 => RegionKind::Available,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Defective,
            other => RegionKind::Reserved(other),
        }
    }
}

impl core::fmt::Display for RegionKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegionKind::Available => f.write_str("available"),
            RegionKind::AcpiReclaimable => f.write_str("ACPI reclaimable"),
            RegionKind::AcpiNvs => f.write_str("ACPI NVS"),
            RegionKind::Defective => f.write_str("defective"),
            RegionKind::Reserved(t) => write!(f, "reserved (type {t})"),
        }
    }
}

/// One entry of the Multiboot memory map.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the firmware says the range is.
    pub kind: RegionKind,
}

/// Iterator over the Multiboot memory map (empty when the loader gave none).
pub struct MemoryMap {
    cursor: u64,
    end: u64,
}

impl Iterator for MemoryMap {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        // Each entry: u32 size (not counting itself), u64 base_addr, u64 length, u32 type.
        if self.cursor + 24 > self.end {
            return None;
        }
        // SAFETY: the entry lies inside [mmap_addr, mmap_addr + mmap_length), which the loader provided.
        let (size, base, len, kind) = unsafe {
            (
                read_u32(self.cursor),
                read_u64(self.cursor + 4),
                read_u64(self.cursor + 12),
                read_u32(self.cursor + 20),
            )
        };
        // A `size` below 20 would not even hold the fields: stop rather than loop on garbage.
        if size < 20 {
            self.cursor = self.end;
            return None;
        }
        self.cursor += size as u64 + 4;
        Some(Region {
            base,
            len,
            kind: RegionKind::from_raw(kind),
        })
    }
}

/// The memory map's physical range `[addr, addr + length)`, when given.
fn memory_map_range() -> Option<(u64, u64)> {
    match boot_info() {
        // SAFETY: flag bit 6 says offsets 44 (mmap_length) and 48 (mmap_addr) are valid.
        Some(b) if b.flags & flag::MMAP != 0 => unsafe {
            let len = read_u32(b.info + 44) as u64;
            let addr = read_u32(b.info + 48) as u64;
            Some((addr, addr + len))
        },
        _ => None,
    }
}

/// The Multiboot memory map.
pub fn memory_map() -> MemoryMap {
    let (cursor, end) = memory_map_range().unwrap_or((0, 0));
    MemoryMap { cursor, end }
}

/// A boot module loaded by the boot loader (GRUB `module`, QEMU `-initrd`).
#[derive(Debug, Clone, Copy)]
pub struct Module {
    /// Physical address of the first byte.
    pub start: u64,
    /// Physical address one past the last byte.
    pub end: u64,
    /// The module's command line (its path and arguments as written in the loader's configuration).
    pub cmdline: &'static str,
}

/// The module list's physical address and count.
fn module_list() -> Option<(u64, u32)> {
    match boot_info() {
        // SAFETY: flag bit 3 says offsets 20 (mods_count) and 24 (mods_addr) are valid.
        Some(b) if b.flags & flag::MODS != 0 => unsafe {
            Some((read_u32(b.info + 24) as u64, read_u32(b.info + 20)))
        },
        _ => None,
    }
}

/// The boot modules, in the order the loader lists them.
pub fn modules() -> impl Iterator<Item = Module> {
    let (addr, count) = module_list().unwrap_or((0, 0));
    (0..count as u64).map(move |i| {
        let entry = addr + 16 * i;
        // SAFETY: entry `i < mods_count` of the module list (16 bytes each: mod_start, mod_end, string, reserved);
        // the strings are kept out of the frame allocator.
        unsafe {
            Module {
                start: read_u32(entry) as u64,
                end: read_u32(entry + 4) as u64,
                cmdline: c_str(read_u32(entry + 8) as u64),
            }
        }
    })
}

/// Physical ranges the frame allocator must never hand out: the kernel (image and stack), the Multiboot information,
/// the memory map, the module list, every module and every string the loader passed. Ranges are rounded out
/// to 4 KiB. Calls `f` once per range.
pub fn reserved_ranges(mut f: impl FnMut(u64, u64)) {
    let page = |start: u64, end: u64| (start & !0xFFF, (end + 0xFFF) & !0xFFF);
    let (s, e) = kernel_range();
    let (s, e) = page(s, e);
    f(s, e);
    let Some(b) = boot_info() else { return };
    // The information structure itself: 120 bytes at most in v0.6.96 (up to the framebuffer fields).
    let (s, e) = page(b.info, b.info + 120);
    f(s, e);
    if let Some((s, e)) = memory_map_range() {
        let (s, e) = page(s, e);
        f(s, e);
    }
    let string_page = |addr: u64| page(addr, addr + 4096);
    if b.flags & flag::CMDLINE != 0 {
        // SAFETY: flag bit 2 makes offset 16 valid.
        let (s, e) = string_page(unsafe { read_u32(b.info + 16) } as u64);
        f(s, e);
    }
    if b.flags & flag::LOADER_NAME != 0 {
        // SAFETY: flag bit 9 makes offset 64 valid.
        let (s, e) = string_page(unsafe { read_u32(b.info + 64) } as u64);
        f(s, e);
    }
    if let Some((addr, count)) = module_list() {
        let (s, e) = page(addr, addr + 16 * count as u64);
        f(s, e);
        for i in 0..count as u64 {
            // SAFETY: entry `i < mods_count` of the module list.
            let (start, end, string) = unsafe {
                (
                    read_u32(addr + 16 * i),
                    read_u32(addr + 16 * i + 4),
                    read_u32(addr + 16 * i + 8),
                )
            };
            let (s, e) = page(start as u64, end as u64);
            f(s, e);
            let (s, e) = string_page(string as u64);
            f(s, e);
        }
    }
}

unsafe extern "C" {
    static boot_stack_guard: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

/// The unmapped 4 KiB guard page below the kernel stack.
pub fn stack_guard() -> u64 {
    core::ptr::addr_of!(boot_stack_guard) as u64
}

/// The kernel stack `[bottom, top)` set up by the entry code.
pub fn stack_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(boot_stack_bottom) as u64,
        core::ptr::addr_of!(boot_stack_top) as u64,
    )
}
