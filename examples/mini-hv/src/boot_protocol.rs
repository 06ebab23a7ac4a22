//! The Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 32-bit entry, as values: which
//! Multiboot module is the kernel and which the initramfs ([`module_args`]), the bzImage's setup header
//! ([`SetupHeader::parse`]), the guest's e820 map ([`E820::build`]), where everything goes
//! ([`Layout::plan`]) and the "zero page" (`struct boot_params`) with the e820 map, the command line's
//! and the initrd's addresses ([`Layout::write_zero_page`]). The kernel's `linux/loader.rs` copies the
//! pieces into guest RAM.
//!
//! Guest-physical == host-physical (the guest's memory is identity-mapped by EPT). The hypervisor's
//! memory — `[1 MiB, hv_end)` plus any Multiboot structure below 1 MiB — is marked reserved in the
//! e820 map; the guest's RAM above 1 MiB starts at `hv_end`. The module tagged `kernel` (its GRUB
//! `module` line: `module /boot/vmlinuz kernel <linux command line>`; the path, if the loader passes it,
//! is skipped) is the kernel, the module tagged `initrd` the initramfs.

use core::fmt;

/// Entries the zero page's e820 table holds (`E820_MAX_ENTRIES_ZEROPAGE`).
pub const E820_MAX: usize = 128;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// The zero page's size.
pub const ZERO_PAGE_SIZE: usize = 4096;

/// Oldest boot protocol accepted: 2.10 (`pref_address`, `init_size`, `kernel_alignment`).
const MIN_PROTOCOL: u16 = 0x020a;
/// `loadflags` bit 0: the protected-mode kernel is loaded at 0x100000 or above (a bzImage).
const LOADED_HIGH: u8 = 1 << 0;
const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

/// Setup-header offsets (in the file and in `boot_params`).
mod off {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
}

/// Why the Linux guest cannot be loaded.
#[derive(Debug, Clone, Copy)]
pub enum LoadError {
    /// No Multiboot module carries the tag.
    MissingModule(&'static str),
    /// The module with the tag is empty (or the loader gave no address).
    EmptyModule(&'static str),
    /// The kernel module is shorter than its own setup header says.
    Truncated {
        /// Bytes the header describes.
        need: u64,
        /// Bytes the module has.
        have: u64,
    },
    /// The boot sector's 0xAA55 signature is missing.
    BadBootFlag(u16),
    /// The setup header's "HdrS" magic is missing.
    BadMagic(u32),
    /// The boot protocol is older than 2.10.
    OldProtocol(u16),
    /// Not a bzImage (`loadflags.LOADED_HIGH` clear).
    NotBzImage,
    /// A kernel that must run at a fixed address inside the hypervisor's memory.
    NotRelocatable {
        /// The fixed load address (1 MiB).
        address: u64,
    },
    /// The initramfs starts with no known archive or compression magic.
    NotInitramfs([u8; 4]),
    /// The command line is longer than the kernel accepts.
    CmdlineTooLong {
        /// The command line's length in bytes.
        len: usize,
        /// The longest the kernel takes (`cmdline_size`).
        max: u32,
    },
    /// Guest RAM is too small for the kernel, its decompression and the initramfs.
    TooLittleMemory {
        /// Bytes needed above the hypervisor.
        need: u64,
        /// Bytes of RAM above the hypervisor.
        have: u64,
    },
    /// The loader gave no memory map, or no RAM above the hypervisor.
    NoRam,
    /// The e820 map would have more than [`E820_MAX`] entries.
    E820Overflow,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MissingModule(tag) => write!(
                f,
                "no Multiboot module tagged `{tag}` (GRUB: `module /boot/FILE {tag} ...`)"
            ),
            Self::EmptyModule(tag) => write!(f, "the `{tag}` module is empty"),
            Self::Truncated { need, have } => write!(
                f,
                "the kernel module is truncated: its header needs {need} bytes, the module has {have}"
            ),
            Self::BadBootFlag(v) => write!(
                f,
                "the kernel module is not a Linux bzImage: boot_flag {v:#06x}, expected 0xaa55"
            ),
            Self::BadMagic(v) => write!(
                f,
                "the kernel module is not a Linux bzImage: setup header magic {v:#010x}, expected \"HdrS\""
            ),
            Self::OldProtocol(v) => write!(
                f,
                "boot protocol {}.{:02} is unsupported (2.10 or newer needed)",
                v >> 8,
                v & 0xff
            ),
            Self::NotBzImage => {
                f.write_str("a zImage (loadflags.LOADED_HIGH clear) is unsupported")
            }
            Self::NotRelocatable { address } => write!(
                f,
                "the kernel is not relocatable and must run at {address:#x}, inside the hypervisor's memory"
            ),
            Self::NotInitramfs(m) => write!(
                f,
                "the initrd module starts with {m:02x?}: neither a cpio archive nor a compressed one"
            ),
            Self::CmdlineTooLong { len, max } => {
                write!(
                    f,
                    "the command line has {len} bytes; the kernel takes at most {max}"
                )
            }
            Self::TooLittleMemory { need, have } => write!(
                f,
                "too little memory: the kernel, its decompression and the initramfs need {} MiB above the \
                 hypervisor, the guest has {} MiB",
                need.div_ceil(MIB),
                have / MIB
            ),
            Self::NoRam => f.write_str("no usable RAM above the hypervisor's memory"),
            Self::E820Overflow => write!(f, "the e820 map needs more than {E820_MAX} entries"),
        }
    }
}

/// One e820 entry (`struct boot_e820_entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// Type (1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 bad).
    pub kind: u32,
}

/// An e820 map under construction.
pub struct E820 {
    /// Entries, sorted, non-overlapping, adjacent equal types merged.
    pub entries: [E820Entry; E820_MAX],
    /// Entries used.
    pub count: usize,
}

impl E820 {
    /// The firmware's `regions` (address, length, type) with every range of `holes` turned reserved.
    /// Elementary intervals between all boundaries each take the type of the hole (reserved) or of the
    /// firmware region (the highest type wins where firmware regions overlap).
    pub fn build(
        regions: impl Iterator<Item = (u64, u64, u32)> + Clone,
        holes: &[(u64, u64)],
    ) -> Result<Self, LoadError> {
        let mut bounds = [0u64; 2 * (E820_MAX + 32)];
        let mut n = 0;
        let mut push = |v: u64| -> Result<(), LoadError> {
            *bounds.get_mut(n).ok_or(LoadError::E820Overflow)? = v;
            n += 1;
            Ok(())
        };
        for (a, l, _) in regions.clone() {
            push(a)?;
            push(a.saturating_add(l))?;
        }
        for &(s, e) in holes {
            push(s)?;
            push(e)?;
        }
        let bounds = &mut bounds[..n];
        bounds.sort_unstable();
        let mut map = E820 {
            entries: [E820Entry::default(); E820_MAX],
            count: 0,
        };
        for w in bounds.windows(2) {
            let (s, e) = (w[0], w[1]);
            if s == e {
                continue;
            }
            let firmware = regions
                .clone()
                .filter(|&(a, l, _)| a <= s && a.saturating_add(l) >= e)
                .map(|(_, _, k)| if k == E820_RAM { 1 } else { k.max(2) })
                .max();
            let Some(mut kind) = firmware else { continue };
            if holes.iter().any(|&(hs, he)| hs <= s && he >= e) {
                kind = E820_RESERVED;
            }
            map.push(s, e, kind)?;
        }
        Ok(map)
    }

    fn push(&mut self, s: u64, e: u64, kind: u32) -> Result<(), LoadError> {
        if let Some(last) = self.count.checked_sub(1).map(|i| &mut self.entries[i])
            && last.kind == kind
            && last.addr + last.size == s
        {
            last.size = e - last.addr;
            return Ok(());
        }
        let slot = self
            .entries
            .get_mut(self.count)
            .ok_or(LoadError::E820Overflow)?;
        *slot = E820Entry {
            addr: s,
            size: e - s,
            kind,
        };
        self.count += 1;
        Ok(())
    }

    /// The entries in use.
    pub fn entries(&self) -> &[E820Entry] {
        &self.entries[..self.count]
    }
}

/// The arguments of a Multiboot module whose command line carries `tag` as its first word (after the
/// module's path, which GRUB leaves out and other loaders put first); `None` if it carries another.
/// `module_args("/boot/vmlinuz kernel quiet", "kernel")` is `Some("quiet")`.
pub fn module_args<'a>(module_cmdline: &'a str, tag: &str) -> Option<&'a str> {
    let args = match module_cmdline.split_once(' ') {
        Some((first, rest)) if first.starts_with('/') => rest,
        None if module_cmdline.starts_with('/') => "",
        _ => module_cmdline,
    };
    let mut words = args.trim_start().splitn(2, ' ');
    (words.next() == Some(tag)).then(|| words.next().unwrap_or("").trim())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

/// Archive and compression magics the kernel's initramfs unpacker accepts.
fn is_initramfs(b: &[u8]) -> bool {
    const MAGICS: [&[u8]; 8] = [
        b"070701",
        b"070702",
        &[0x1f, 0x8b],
        &[0xfd, b'7', b'z', b'X', b'Z'],
        &[0x28, 0xb5, 0x2f, 0xfd],
        &[0x02, 0x21, 0x4c, 0x18],
        b"BZh",
        &[0x5d, 0x00, 0x00],
    ];
    MAGICS.iter().any(|m| b.starts_with(m))
}

/// The fields of a bzImage's setup header ("The Real-Mode Kernel Header") the loader uses, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// The boot protocol version (`version`), 2.10 or newer.
    pub protocol: u16,
    /// Bytes of the real-mode part (`(setup_sects + 1) * 512`, `setup_sects` 0 read as 4): the
    /// protected-mode kernel starts there in the file.
    pub setup_size: usize,
    /// `relocatable_kernel`.
    pub relocatable: bool,
    /// `kernel_alignment`, at least a page.
    pub kernel_alignment: u64,
    /// `pref_address`.
    pub pref_address: u64,
    /// `init_size`, at least the protected-mode kernel's size.
    pub init_size: u64,
    /// `cmdline_size`: the longest command line, without its terminating NUL.
    pub cmdline_size: u32,
    /// `initrd_addr_max`: the highest address the initramfs may occupy.
    pub initrd_addr_max: u64,
    /// End of the header in the file (0x202 plus the byte at 0x201, the jump's offset): the bytes
    /// from `setup_sects` (0x1F1) to here are copied into the zero page.
    pub header_end: usize,
}

impl SetupHeader {
    /// Checks the setup header of the bzImage `kernel`: boot flag 0xAA55, "HdrS", protocol 2.10 or
    /// newer, `loadflags.LOADED_HIGH`, and a file as long as `setup_sects` and `syssize` say.
    pub fn parse(kernel: &[u8]) -> Result<Self, LoadError> {
        let have = kernel.len() as u64;
        // Through `handover_offset` (protocol 2.11), the last field this loader could read.
        if kernel.len() < 0x268 {
            return Err(LoadError::Truncated { need: 0x268, have });
        }
        let flag = le16(kernel, off::BOOT_FLAG);
        if flag != 0xaa55 {
            return Err(LoadError::BadBootFlag(flag));
        }
        let magic = le32(kernel, off::HEADER);
        if magic != u32::from_le_bytes(*b"HdrS") {
            return Err(LoadError::BadMagic(magic));
        }
        let protocol = le16(kernel, off::VERSION);
        if protocol < MIN_PROTOCOL {
            return Err(LoadError::OldProtocol(protocol));
        }
        if kernel[off::LOADFLAGS] & LOADED_HIGH == 0 {
            return Err(LoadError::NotBzImage);
        }
        let setup_sects = match kernel[off::SETUP_SECTS] {
            0 => 4,
            n => u64::from(n),
        };
        let setup_size = (setup_sects + 1) * 512;
        let syssize = u64::from(le32(kernel, off::SYSSIZE)) * 16;
        if setup_size + syssize > have {
            return Err(LoadError::Truncated {
                need: setup_size + syssize,
                have,
            });
        }
        let pm_size = have - setup_size;
        Ok(Self {
            protocol,
            setup_size: setup_size as usize,
            relocatable: kernel[off::RELOCATABLE_KERNEL] != 0,
            kernel_alignment: u64::from(le32(kernel, off::KERNEL_ALIGNMENT)).max(PAGE),
            pref_address: le64(kernel, off::PREF_ADDRESS),
            init_size: u64::from(le32(kernel, off::INIT_SIZE)).max(pm_size),
            cmdline_size: le32(kernel, off::CMDLINE_SIZE),
            initrd_addr_max: u64::from(le32(kernel, off::INITRD_ADDR_MAX)),
            // At most 0x301, inside the real-mode part (at least 2560 bytes, checked above).
            header_end: off::JUMP + 2 + usize::from(kernel[off::JUMP + 1]),
        })
    }
}

/// Where the loader puts the guest's pieces (all guest-physical == host-physical).
pub struct Layout<'a> {
    /// The zero page.
    pub boot_params: u64,
    /// The command line (NUL-terminated).
    pub cmdline_at: u64,
    /// The 32-bit entry point (`code32_start`, the protected-mode kernel's load address).
    pub entry32: u64,
    /// The protected-mode kernel's size in bytes.
    pub kernel_size: u64,
    /// The memory the kernel needs from `entry32` on to decompress (`init_size`).
    pub init_size: u64,
    /// The initramfs.
    pub initrd: u64,
    /// Its size.
    pub initrd_size: u64,
    /// The boot protocol version.
    pub protocol: u16,
    /// Whether the kernel is relocatable.
    pub relocatable: bool,
    /// The guest's e820 map.
    pub e820: E820,
    /// The guest's command line.
    pub cmdline: &'a str,
    /// The kernel's setup header.
    pub header: SetupHeader,
}

impl<'a> Layout<'a> {
    /// Checks the kernel, its command line and the initramfs and lays the guest out in the RAM of
    /// `e820` that starts at `hv_end` (the end of the hypervisor's memory): the zero page at
    /// `hv_end`, the command line one page above, the kernel at its preferred address or the next
    /// address `kernel_alignment` allows above them (a kernel that is not relocatable runs at
    /// 1 MiB, which must be free), and the initramfs at the top of that RAM, below
    /// `initrd_addr_max`.
    pub fn plan(
        kernel: &[u8],
        cmdline: &'a str,
        initrd: &[u8],
        e820: E820,
        hv_end: u64,
    ) -> Result<Self, LoadError> {
        let header = SetupHeader::parse(kernel)?;
        if cmdline.len() >= header.cmdline_size as usize {
            return Err(LoadError::CmdlineTooLong {
                len: cmdline.len(),
                max: header.cmdline_size.saturating_sub(1),
            });
        }
        if !is_initramfs(initrd) {
            let mut m = [0u8; 4];
            for (d, s) in m.iter_mut().zip(initrd) {
                *d = *s;
            }
            return Err(LoadError::NotInitramfs(m));
        }
        let ram = e820
            .entries()
            .iter()
            .find(|e| e.kind == E820_RAM && e.addr == hv_end)
            .ok_or(LoadError::NoRam)?;
        let ram_end = ram.addr + ram.size;

        let boot_params = hv_end;
        let cmdline_at = hv_end + PAGE;
        let entry32 = if header.relocatable {
            (hv_end + 2 * PAGE)
                .max(header.pref_address)
                .next_multiple_of(header.kernel_alignment)
        } else {
            if 0x10_0000 < hv_end {
                return Err(LoadError::NotRelocatable { address: 0x10_0000 });
            }
            0x10_0000
        };
        let initrd_size = initrd.len() as u64;
        let top = ram_end.min(header.initrd_addr_max.saturating_add(1)) & !(PAGE - 1);
        let need = entry32 + header.init_size + initrd_size.next_multiple_of(PAGE);
        if top < need {
            return Err(LoadError::TooLittleMemory {
                need: need - hv_end,
                have: ram_end - hv_end,
            });
        }
        Ok(Self {
            boot_params,
            cmdline_at,
            entry32,
            kernel_size: kernel.len() as u64 - header.setup_size as u64,
            init_size: header.init_size,
            initrd: (top - initrd_size) & !(PAGE - 1),
            initrd_size,
            protocol: header.protocol,
            relocatable: header.relocatable,
            e820,
            cmdline,
            header,
        })
    }

    /// The protected-mode kernel: the bytes of `kernel` (the bzImage [`plan`](Self::plan) checked)
    /// that go to [`entry32`](Self::entry32).
    pub fn protected_mode<'k>(&self, kernel: &'k [u8]) -> &'k [u8] {
        &kernel[self.header.setup_size..]
    }

    /// Fills `page` as the zero page: zeroes, the setup header of `kernel` (the bzImage
    /// [`plan`](Self::plan) checked) at its own offset, then `type_of_loader` 0xFF (undefined),
    /// `code32_start`, `ramdisk_image`, `ramdisk_size`, `cmd_line_ptr` and the e820 table.
    pub fn write_zero_page(&self, kernel: &[u8], page: &mut [u8; ZERO_PAGE_SIZE]) {
        page.fill(0);
        let header = off::SETUP_SECTS..self.header.header_end;
        page[header.clone()].copy_from_slice(&kernel[header]);
        let mut put32 = |at: usize, v: u32| page[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(off::CODE32_START, self.entry32 as u32);
        put32(off::RAMDISK_IMAGE, self.initrd as u32);
        put32(off::RAMDISK_SIZE, self.initrd_size as u32);
        put32(off::CMD_LINE_PTR, self.cmdline_at as u32);
        page[off::TYPE_OF_LOADER] = 0xff;
        page[off::E820_ENTRIES] = self.e820.count as u8;
        for (i, e) in self.e820.entries().iter().enumerate() {
            let at = off::E820_TABLE + 20 * i;
            page[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
            page[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
            page[at + 16..at + 20].copy_from_slice(&e.kind.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    //! Offsets and rules from the kernel's Documentation/arch/x86/boot.rst ("The Real-Mode Kernel
    //! Header", "Details of Header Fields") and zero-page.rst, written out here as numbers.

    use super::*;

    const HV_END: u64 = 0x120_0000;

    fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
        bytes[at..at + value.len()].copy_from_slice(value);
    }

    /// A bzImage: `setup_sects` 4, protocol 2.15, relocatable, 2 MiB alignment, `pref_address`
    /// 16 MiB, `init_size` 32 MiB, `cmdline_size` 2048, `initrd_addr_max` 0x7fffffff, and a
    /// protected-mode part of `pm` bytes. The jump at 0x200 ends the header at 0x268.
    fn bzimage(pm: usize) -> Vec<u8> {
        let mut k = vec![0u8; 5 * 512 + pm];
        k[0x1f1] = 4;
        put(&mut k, 0x1f4, &((pm / 16) as u32).to_le_bytes());
        put(&mut k, 0x1fe, &[0x55, 0xaa]);
        put(&mut k, 0x200, &[0xeb, 0x66]);
        put(&mut k, 0x202, b"HdrS");
        put(&mut k, 0x206, &0x020f_u16.to_le_bytes());
        k[0x211] = 1;
        put(&mut k, 0x22c, &0x7fff_ffff_u32.to_le_bytes());
        put(&mut k, 0x230, &0x20_0000_u32.to_le_bytes());
        k[0x234] = 1;
        put(&mut k, 0x238, &2048_u32.to_le_bytes());
        put(&mut k, 0x258, &0x100_0000_u64.to_le_bytes());
        put(&mut k, 0x260, &0x200_0000_u32.to_le_bytes());
        // Past the header: must not reach the zero page.
        k[0x268] = 0x5a;
        // The first bytes of the protected-mode kernel.
        k[5 * 512] = 0xfc;
        k
    }

    /// A PC's firmware map with 128 MiB of RAM, the hypervisor's `[1 MiB, HV_END)` as a hole.
    fn e820() -> E820 {
        let firmware = [
            (0, 0x9_fc00, 1),
            (0x9_fc00, 0x400, 2),
            (0xf_0000, 0x1_0000, 2),
            (0x10_0000, 0x7ef_0000, 1),
        ];
        E820::build(firmware.into_iter(), &[(0x10_0000, HV_END)]).unwrap()
    }

    fn entry(addr: u64, size: u64, kind: u32) -> E820Entry {
        E820Entry { addr, size, kind }
    }

    #[test]
    fn e820_turns_holes_reserved_and_merges_neighbours() {
        assert_eq!(
            e820().entries(),
            [
                entry(0, 0x9_fc00, E820_RAM),
                entry(0x9_fc00, 0x400, E820_RESERVED),
                // The BIOS area and the hypervisor's hole: adjacent, both reserved.
                entry(0xf_0000, HV_END - 0xf_0000, E820_RESERVED),
                entry(HV_END, 0x7ff_0000 - HV_END, E820_RAM),
            ]
        );
    }

    #[test]
    fn e820_overlaps_take_the_highest_type() {
        // RAM with an ACPI (3) range inside it.
        let map = E820::build([(0, 0x1_0000, 1), (0x8000, 0x1000, 3)].into_iter(), &[]).unwrap();
        assert_eq!(
            map.entries(),
            [
                entry(0, 0x8000, 1),
                entry(0x8000, 0x1000, 3),
                entry(0x9000, 0x7000, 1)
            ]
        );
        // Gaps stay gaps.
        let map = E820::build([(0, 0x1000, 1), (0x3000, 0x1000, 1)].into_iter(), &[]).unwrap();
        assert_eq!(
            map.entries(),
            [entry(0, 0x1000, 1), entry(0x3000, 0x1000, 1)]
        );
    }

    #[test]
    fn e820_overflow_is_an_error() {
        let regions = (0..200u64).map(|i| (i * 0x2000, 0x1000, 1));
        assert!(matches!(
            E820::build(regions, &[]),
            Err(LoadError::E820Overflow)
        ));
    }

    #[test]
    fn module_tags() {
        // GRUB passes the arguments only; QEMU and others the path first.
        assert_eq!(
            module_args("kernel console=ttyS0 quiet", "kernel"),
            Some("console=ttyS0 quiet")
        );
        assert_eq!(
            module_args("/boot/vmlinuz kernel quiet", "kernel"),
            Some("quiet")
        );
        assert_eq!(module_args("/boot/initrd.gz initrd", "initrd"), Some(""));
        assert_eq!(module_args("initrd", "initrd"), Some(""));
        assert_eq!(module_args("/boot/initrd.gz initrd", "kernel"), None);
        assert_eq!(module_args("kernelx quiet", "kernel"), None);
        assert_eq!(module_args("/boot/kernel", "kernel"), None);
        assert_eq!(module_args("", "kernel"), None);
    }

    #[test]
    fn setup_header_fields() {
        let header = SetupHeader::parse(&bzimage(0x1000)).unwrap();
        assert_eq!(
            header,
            SetupHeader {
                protocol: 0x020f,
                setup_size: 2560,
                relocatable: true,
                kernel_alignment: 0x20_0000,
                pref_address: 0x100_0000,
                init_size: 0x200_0000,
                cmdline_size: 2048,
                initrd_addr_max: 0x7fff_ffff,
                header_end: 0x268,
            }
        );
        // setup_sects 0 means 4; init_size never below the kernel's own size; alignment at least
        // a page.
        let mut k = bzimage(0x1000);
        k[0x1f1] = 0;
        put(&mut k, 0x260, &0x10_u32.to_le_bytes());
        put(&mut k, 0x230, &0_u32.to_le_bytes());
        let header = SetupHeader::parse(&k).unwrap();
        assert_eq!(header.setup_size, 2560);
        assert_eq!(header.init_size, 0x1000);
        assert_eq!(header.kernel_alignment, 0x1000);
    }

    #[test]
    fn setup_header_errors() {
        let k = bzimage(0x1000);
        assert!(matches!(
            SetupHeader::parse(&k[..0x267]),
            Err(LoadError::Truncated {
                need: 0x268,
                have: 0x267
            })
        ));
        let mut bad = k.clone();
        bad[0x1fe] = 0;
        assert!(matches!(
            SetupHeader::parse(&bad),
            Err(LoadError::BadBootFlag(0xaa00))
        ));
        let mut bad = k.clone();
        bad[0x205] = b'T';
        assert!(matches!(
            SetupHeader::parse(&bad),
            Err(LoadError::BadMagic(_))
        ));
        let mut bad = k.clone();
        put(&mut bad, 0x206, &0x0209_u16.to_le_bytes());
        assert!(matches!(
            SetupHeader::parse(&bad),
            Err(LoadError::OldProtocol(0x0209))
        ));
        let mut bad = k.clone();
        bad[0x211] = 0;
        assert!(matches!(
            SetupHeader::parse(&bad),
            Err(LoadError::NotBzImage)
        ));
        // syssize (in 16-byte units) says more than the file holds.
        assert!(matches!(
            SetupHeader::parse(&k[..k.len() - 1]),
            Err(LoadError::Truncated { need, .. }) if need == 2560 + 0x1000
        ));
    }

    #[test]
    fn layout_of_a_relocatable_kernel() {
        let kernel = bzimage(0x1000);
        let initrd = b"070701 and the rest of a cpio archive";
        let layout = Layout::plan(&kernel, "console=ttyS0", initrd, e820(), HV_END).unwrap();
        assert_eq!(layout.boot_params, HV_END);
        assert_eq!(layout.cmdline_at, HV_END + 0x1000);
        // pref_address (16 MiB) is below the hypervisor's end: the next 2 MiB boundary above the
        // zero page and the command line.
        assert_eq!(layout.entry32, 0x140_0000);
        assert_eq!(layout.kernel_size, 0x1000);
        assert_eq!(layout.init_size, 0x200_0000);
        // The initramfs in the last page(s) of RAM, page-aligned.
        assert_eq!(layout.initrd, 0x7fe_f000);
        assert_eq!(layout.initrd_size, initrd.len() as u64);
        assert_eq!(layout.protected_mode(&kernel)[0], 0xfc);
        assert_eq!(layout.protected_mode(&kernel).len(), 0x1000);
    }

    #[test]
    fn layout_prefers_pref_address_and_respects_initrd_addr_max() {
        let mut kernel = bzimage(0x1000);
        put(&mut kernel, 0x258, &0x300_0000_u64.to_le_bytes());
        put(&mut kernel, 0x22c, &0x37ff_ffff_u32.to_le_bytes());
        let firmware = [(0, 0x9_fc00, 1), (0x10_0000, 0x7ff0_0000, 1)];
        let map = E820::build(firmware.into_iter(), &[(0x10_0000, HV_END)]).unwrap();
        let initrd = [0x1f, 0x8b, 0, 0, 0, 0];
        let layout = Layout::plan(&kernel, "", &initrd, map, HV_END).unwrap();
        assert_eq!(layout.entry32, 0x300_0000);
        assert_eq!(layout.initrd, 0x3800_0000 - 0x1000);
    }

    #[test]
    fn layout_of_a_kernel_that_is_not_relocatable() {
        let mut kernel = bzimage(0x1000);
        kernel[0x234] = 0;
        let initrd = b"070701";
        assert!(matches!(
            Layout::plan(&kernel, "", initrd, e820(), HV_END),
            Err(LoadError::NotRelocatable { address: 0x10_0000 })
        ));
        // With the hypervisor out of the way, at 1 MiB.
        let map = E820::build([(0x10_0000, 0x400_0000, 1)].into_iter(), &[]).unwrap();
        let layout = Layout::plan(&kernel, "", initrd, map, 0x10_0000).unwrap();
        assert_eq!(layout.entry32, 0x10_0000);
    }

    #[test]
    fn layout_errors() {
        let kernel = bzimage(0x1000);
        let cpio = b"070701";
        // cmdline_size counts the NUL's room: 2047 bytes fit, 2048 do not.
        let long = "x".repeat(2048);
        assert!(Layout::plan(&kernel, &long[..2047], cpio, e820(), HV_END).is_ok());
        assert!(matches!(
            Layout::plan(&kernel, &long, cpio, e820(), HV_END),
            Err(LoadError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(matches!(
            Layout::plan(&kernel, "", b"hello", e820(), HV_END),
            Err(LoadError::NotInitramfs([b'h', b'e', b'l', b'l']))
        ));
        assert!(matches!(
            Layout::plan(&kernel, "", b"", e820(), HV_END),
            Err(LoadError::NotInitramfs([0, 0, 0, 0]))
        ));
        // No RAM entry starting at the hypervisor's end.
        assert!(matches!(
            Layout::plan(&kernel, "", cpio, e820(), HV_END + 0x1000),
            Err(LoadError::NoRam)
        ));
        // 32 MiB of RAM above the hypervisor: the kernel at 20 MiB needs 32 MiB plus the initramfs.
        let map = E820::build([(HV_END, 0x200_0000, 1)].into_iter(), &[]).unwrap();
        assert!(matches!(
            Layout::plan(&kernel, "", cpio, map, HV_END),
            Err(LoadError::TooLittleMemory { need, have: 0x200_0000 })
                if need == 0x140_0000 + 0x200_0000 + 0x1000 - HV_END
        ));
    }

    #[test]
    fn the_zero_page() {
        let kernel = bzimage(0x1000);
        let initrd = b"070701";
        let layout = Layout::plan(&kernel, "quiet", initrd, e820(), HV_END).unwrap();
        let mut page = [0xee; ZERO_PAGE_SIZE];
        layout.write_zero_page(&kernel, &mut page);
        let le32 = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
        let le64 = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
        // The setup header is copied from 0x1f1 to its end (0x202 + the jump's byte, 0x66), but
        // for the fields the loader fills; everything else starts zero.
        for range in [0x1f1..0x210, 0x211..0x214, 0x220..0x228, 0x22c..0x268] {
            assert_eq!(page[range.clone()], kernel[range]);
        }
        assert_eq!(page[0x1f0], 0);
        assert_eq!(page[0x268], 0);
        assert_eq!(page[0xfff], 0);
        // type_of_loader 0xff ("undefined"), code32_start, ramdisk_image/size, cmd_line_ptr.
        assert_eq!(page[0x210], 0xff);
        assert_eq!(le32(0x214), 0x140_0000);
        assert_eq!(le32(0x218), 0x7fe_f000);
        assert_eq!(le32(0x21c), initrd.len() as u32);
        assert_eq!(le32(0x228), (HV_END + 0x1000) as u32);
        // e820_entries at 0x1e8, the table at 0x2d0: 20-byte entries (addr, size, type).
        assert_eq!(page[0x1e8], 4);
        assert_eq!((le64(0x2d0), le64(0x2d8), le32(0x2e0)), (0, 0x9_fc00, 1));
        assert_eq!(
            (le64(0x2d0 + 60), le64(0x2d8 + 60), le32(0x2e0 + 60)),
            (HV_END, 0x7ff_0000 - HV_END, 1)
        );
        assert_eq!(le32(0x2d0 + 80), 0);
    }
}
