//! A guest hypervisor kernel as L0's guest (issue 16's demonstration): a second copy of mini-hv,
//! handed over as a Multiboot module whose string says `l1` after its path
//! ([`mini_hv_logic::l1_kernel::L1_MODULE_WORD`]), runs as L1 on the test guest's vCPU with VMX
//! offered ([`super::super::nested`]): it boots, prints its (virtual) capability report, runs its
//! own test guest as L2 and ends the way mini-hv ends an emulator's run, which ends L1's run here.
//!
//! L0 plays L1's Multiboot loader ([`mini_hv_logic::multiboot_guest`]): L1's RAM is
//! [`RAM_SIZE`] bytes at L1-physical 0 (2 MiB aligned in host memory, so that EPT01 maps it with
//! large pages), the image copied to its load address and its `.bss` zeroed, the boot information
//! (memory sizes, memory map, command line) at [`BootInfo::ADDRESS`], and the vCPU entered in
//! 32-bit protected mode with paging off at the image's entry with EAX = [`BOOTLOADER_MAGIC`] and
//! EBX = the information's address (Multiboot Specification 0.6.96, 3.2 "Machine state").

use mini_hv_logic::boot_protocol::module_args;
use mini_hv_logic::l1_kernel::L1_MODULE_WORD;
use mini_hv_logic::multiboot_guest::{BOOTLOADER_MAGIC, BootInfo, Image};
use vmcs::{GuestStateError, VmcsWrite};
use vmx_caps::VmxCapabilities;
use vmx_core::GuestRegisters;

use super::super::{LARGE_PAGE, memory};
use crate::boot::Module;
use crate::println;
use mini_hv_logic::guest_state::CrPolicy;

/// L1's RAM: its image (about 2.5 MiB with stack), its test guest's 32 MiB and the frames it
/// allocates for VMX (VMXON region, VMCS, bitmaps, EPT tables, the round-trip probe's records).
pub const RAM_SIZE: u64 = 64 << 20;

/// L1's kernel: the boot module and L1's command line.
#[derive(Clone, Copy)]
pub struct L1Kernel {
    /// The module holding the kernel's file.
    pub module: Module,
    /// L1's kernel command line (the module's words after `l1`).
    pub cmdline: &'static str,
}

/// The boot module that is L1's kernel, if the loader passed one.
pub fn requested() -> Option<L1Kernel> {
    crate::boot::modules().find_map(|module| {
        module_args(module.cmdline, L1_MODULE_WORD).map(|cmdline| L1Kernel { module, cmdline })
    })
}

/// L1's RAM loaded as a Multiboot loader leaves it, and the entry point.
pub struct Loaded {
    /// L1's RAM.
    pub mem: memory::GuestMemory,
    /// The image's entry point (L1-physical).
    pub entry: u32,
}

impl L1Kernel {
    /// Allocates L1's RAM and loads the kernel and its boot information into it; prints why not.
    pub fn load(&self) -> Option<Loaded> {
        let Module { start, end, .. } = self.module;
        let Some(len) = end
            .checked_sub(start)
            .filter(|_| end <= 1 << 32)
            .and_then(|len| usize::try_from(len).ok())
        else {
            println!("mini-hv: L1's kernel module {start:#x}..{end:#x} is not a memory range");
            return None;
        };
        // SAFETY: the loader placed the module at [start, end), below 4 GiB (checked), which the
        // kernel identity-maps; the frame allocator never hands it out, and nothing writes it.
        let file = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
        let image = match Image::parse(file) {
            Ok(image) => image,
            Err(e) => {
                println!("mini-hv: L1's kernel (module at {start:#x}) cannot be loaded: {e}");
                return None;
            }
        };
        let info_end = u64::from(BootInfo::ADDRESS) + BootInfo::SIZE as u64;
        if u64::from(image.load_address) < info_end || u64::from(image.end()) > RAM_SIZE {
            println!(
                "mini-hv: L1's kernel wants {:#x}..{:#x}, outside L1's RAM {info_end:#x}..{RAM_SIZE:#x}",
                image.load_address,
                image.end()
            );
            return None;
        }
        let mut info = [0u8; BootInfo::SIZE];
        let boot_info = BootInfo {
            ram: RAM_SIZE,
            cmdline: self.cmdline,
        };
        if let Err(e) = boot_info.write(&mut info) {
            println!("mini-hv: L1's boot information: {e}");
            return None;
        }
        let pages = ((RAM_SIZE + LARGE_PAGE - 4096) / 4096) as usize;
        let Some(allocation) = crate::mem::alloc_frames(pages) else {
            println!(
                "mini-hv: cannot allocate L1's {} MiB of RAM",
                RAM_SIZE >> 20
            );
            return None;
        };
        // SAFETY: the 2 MiB-aligned RAM_SIZE bytes lie inside the fresh allocation (one large
        // page of slack), identity-mapped, owned by L1 alone from here on.
        let mem =
            unsafe { memory::GuestMemory::new(allocation.next_multiple_of(LARGE_PAGE), RAM_SIZE) };
        let bss_len = (image.bss.1 - image.bss.0) as usize;
        let loaded = mem
            .write(u64::from(image.load_address), image.load)
            .and_then(|()| zero(&mem, u64::from(image.bss.0), bss_len as u64))
            .and_then(|()| mem.write(u64::from(BootInfo::ADDRESS), &info));
        if let Err(e) = loaded {
            println!("mini-hv: loading L1's kernel failed: {e}");
            return None;
        }
        println!(
            "mini-hv: L1's kernel: {} KiB at L1-physical {:#x}, .bss {:#x}..{:#x}, entry {:#x}; \
             L1's RAM {} MiB at host {:#x}; command line \"{}\"",
            image.load.len() / 1024,
            image.load_address,
            image.bss.0,
            image.bss.1,
            image.entry,
            RAM_SIZE >> 20,
            mem.host_base(),
            self.cmdline
        );
        Some(Loaded {
            mem,
            entry: image.entry,
        })
    }
}

/// A page of zeroes to write `.bss` with.
static ZEROES: [u8; 4096] = [0; 4096];

/// Zeroes `[gpa, gpa + len)` of guest RAM.
fn zero(mem: &memory::GuestMemory, gpa: u64, len: u64) -> Result<(), memory::MemError> {
    let mut at = 0;
    while at < len {
        let n = (len - at).min(ZEROES.len() as u64);
        mem.write(gpa + at, &ZEROES[..n as usize])?;
        at += n;
    }
    Ok(())
}

/// Writes the Multiboot machine state: 32-bit protected mode with paging off, flat 4 GiB code
/// (selector 08H) and data (10H) segments, interrupts off, at `entry`; EAX and EBX as the
/// specification says.
pub fn write_entry_state(
    vmcs: &mut impl VmcsWrite,
    regs: &mut GuestRegisters,
    cr: CrPolicy,
    caps: &VmxCapabilities,
    entry: u32,
) -> Result<(), GuestStateError> {
    let state = super::super::flat_protected_mode(u64::from(entry), 0x08, 0x10, None);
    cr.write_initial_state(vmcs, &state, caps)?;
    regs.rax = u64::from(BOOTLOADER_MAGIC);
    regs.rbx = u64::from(BootInfo::ADDRESS);
    Ok(())
}
