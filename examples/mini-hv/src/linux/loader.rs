//! The Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 32-bit entry: finds the kernel and
//! initramfs among the Multiboot modules, checks the bzImage's setup header, builds the "zero page"
//! (`struct boot_params`) with an e820 map, the command line and the initrd's address and size, and
//! copies everything into guest RAM.
//!
//! Guest-physical == host-physical (the guest's memory is identity-mapped by EPT). The hypervisor's
//! memory — `[1 MiB, hv_end)` plus any Multiboot structure below 1 MiB — is marked reserved in the
//! e820 map; the guest's RAM above 1 MiB starts at `hv_end`. The module tagged `kernel` (its GRUB
//! `module` line: `module /boot/vmlinuz kernel <linux command line>`; the path, if the loader passes it, is
//! skipped) is the kernel, the module tagged
//! `initrd` the initramfs.

use core::fmt;

/// Entries the zero page's e820 table holds (`E820_MAX_ENTRIES_ZEROPAGE`).
pub const E820_MAX: usize = 128;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

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
    Truncated { need: u64, have: u64 },
    /// The boot sector's 0xAA55 signature is missing.
    BadBootFlag(u16),
    /// The setup header's "HdrS" magic is missing.
    BadMagic(u32),
    /// The boot protocol is older than 2.10.
    OldProtocol(u16),
    /// Not a bzImage (`loadflags.LOADED_HIGH` clear).
    NotBzImage,
    /// A kernel that must run at a fixed address inside the hypervisor's memory.
    NotRelocatable { address: u64 },
    /// The initramfs starts with no known archive or compression magic.
    NotInitramfs([u8; 4]),
    /// The command line is longer than the kernel accepts.
    CmdlineTooLong { len: usize, max: u32 },
    /// Guest RAM is too small for the kernel, its decompression and the initramfs.
    TooLittleMemory { need: u64, have: u64 },
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

/// Where the loader put the guest's pieces (all guest-physical == host-physical).
pub struct Loaded {
    /// The zero page.
    pub boot_params: u64,
    /// The 32-bit entry point (`code32_start`, the protected-mode kernel's load address).
    pub entry32: u64,
    /// The protected-mode kernel's bytes and the memory it needs to decompress (`init_size`).
    pub kernel_size: u64,
    /// `init_size`.
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
    pub cmdline: &'static str,
}

fn module_bytes(tag: &'static str) -> Result<(&'static [u8], &'static str), LoadError> {
    for m in crate::boot::modules() {
        // GRUB passes the arguments after the path; other loaders include the path first.
        let args = match m.cmdline.split_once(' ') {
            Some((first, rest)) if first.starts_with('/') => rest,
            None if m.cmdline.starts_with('/') => "",
            _ => m.cmdline,
        };
        let mut words = args.trim_start().splitn(2, ' ');
        if words.next() == Some(tag) {
            if m.start == 0 || m.end <= m.start {
                return Err(LoadError::EmptyModule(tag));
            }
            let len = (m.end - m.start) as usize;
            // SAFETY: the loader placed the module at [start, end), below 4 GiB (identity-mapped); the frame
            // allocator never hands it out, and nothing writes it.
            let bytes = unsafe { core::slice::from_raw_parts(m.start as *const u8, len) };
            return Ok((bytes, words.next().unwrap_or("").trim()));
        }
    }
    Err(LoadError::MissingModule(tag))
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

/// Checks the modules, lays the guest out above `hv_end` and writes it into memory. `holes` are the
/// hypervisor's ranges (reserved in the e820 map); `[1 MiB, hv_end)` must be one of them.
pub fn load(hv_end: u64, holes: &[(u64, u64)]) -> Result<Loaded, LoadError> {
    let (kernel, cmdline) = module_bytes("kernel")?;
    let (initrd, _) = module_bytes("initrd")?;

    // The setup header (boot.rst, "The Real-Mode Kernel Header").
    let have = kernel.len() as u64;
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
    let pm = &kernel[setup_size as usize..];
    let pm_size = pm.len() as u64;
    let relocatable = kernel[off::RELOCATABLE_KERNEL] != 0;
    let align = u64::from(le32(kernel, off::KERNEL_ALIGNMENT)).max(PAGE);
    let pref = le64(kernel, off::PREF_ADDRESS);
    let init_size = u64::from(le32(kernel, off::INIT_SIZE)).max(pm_size);
    let cmdline_max = le32(kernel, off::CMDLINE_SIZE);
    let initrd_max = u64::from(le32(kernel, off::INITRD_ADDR_MAX));
    if cmdline.len() >= cmdline_max as usize {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max: cmdline_max.saturating_sub(1),
        });
    }
    if !is_initramfs(initrd) {
        let mut m = [0u8; 4];
        for (d, s) in m.iter_mut().zip(initrd) {
            *d = *s;
        }
        return Err(LoadError::NotInitramfs(m));
    }

    // The guest's memory map, and the RAM above the hypervisor.
    let mut table = [(0u64, 0u64, 0u32); E820_MAX];
    let mut n = 0;
    for r in crate::boot::memory_map() {
        let kind = match r.kind {
            crate::boot::RegionKind::Available => E820_RAM,
            crate::boot::RegionKind::AcpiReclaimable => 3,
            crate::boot::RegionKind::AcpiNvs => 4,
            crate::boot::RegionKind::Defective => 5,
            crate::boot::RegionKind::Reserved(k) => k.max(2),
        };
        *table.get_mut(n).ok_or(LoadError::E820Overflow)? = (r.base, r.len, kind);
        n += 1;
    }
    if n == 0 {
        return Err(LoadError::NoRam);
    }
    let e820 = E820::build(table[..n].iter().copied(), holes)?;
    let ram = e820
        .entries()
        .iter()
        .find(|e| e.kind == E820_RAM && e.addr == hv_end)
        .ok_or(LoadError::NoRam)?;
    let ram_end = ram.addr + ram.size;

    // Layout: zero page and command line at the bottom, the kernel at its preferred (or the next
    // aligned) address, the initramfs at the top, below initrd_addr_max.
    let boot_params = hv_end;
    let cmdline_at = hv_end + PAGE;
    let entry32 = if relocatable {
        (hv_end + 2 * PAGE).max(pref).next_multiple_of(align)
    } else {
        if 0x10_0000 < hv_end {
            return Err(LoadError::NotRelocatable { address: 0x10_0000 });
        }
        0x10_0000
    };
    let initrd_size = initrd.len() as u64;
    let top = ram_end.min(initrd_max.saturating_add(1)) & !(PAGE - 1);
    let need = entry32 + init_size + initrd_size.next_multiple_of(PAGE);
    if top < need {
        return Err(LoadError::TooLittleMemory {
            need: need - hv_end,
            have: ram_end - hv_end,
        });
    }
    let initrd_at = (top - initrd_size) & !(PAGE - 1);

    // SAFETY: every destination lies in [hv_end, ram_end): RAM of the firmware's map that the frame
    // allocator never handed out (hv_end is above every allocation and module) and that no host data lives
    // in; the sources (modules) lie below hv_end. The host identity-maps the first 4 GiB.
    unsafe {
        let bp = boot_params as *mut u8;
        core::ptr::write_bytes(bp, 0, PAGE as usize);
        let hdr_end = (off::JUMP + 2 + kernel[off::JUMP + 1] as usize).min(0x1000);
        core::ptr::copy_nonoverlapping(
            kernel[off::SETUP_SECTS..hdr_end].as_ptr(),
            bp.add(off::SETUP_SECTS),
            hdr_end - off::SETUP_SECTS,
        );
        let put32 = |at: usize, v: u32| (bp.add(at) as *mut u32).write_unaligned(v);
        bp.add(off::TYPE_OF_LOADER).write(0xff);
        put32(off::CODE32_START, entry32 as u32);
        put32(off::RAMDISK_IMAGE, initrd_at as u32);
        put32(off::RAMDISK_SIZE, initrd_size as u32);
        put32(off::CMD_LINE_PTR, cmdline_at as u32);
        bp.add(off::E820_ENTRIES).write(e820.count as u8);
        for (i, e) in e820.entries().iter().enumerate() {
            let at = bp.add(off::E820_TABLE + 20 * i);
            (at as *mut u64).write_unaligned(e.addr);
            (at.add(8) as *mut u64).write_unaligned(e.size);
            (at.add(16) as *mut u32).write_unaligned(e.kind);
        }
        let cl = cmdline_at as *mut u8;
        core::ptr::copy_nonoverlapping(cmdline.as_ptr(), cl, cmdline.len());
        cl.add(cmdline.len()).write(0);
        core::ptr::copy_nonoverlapping(pm.as_ptr(), entry32 as *mut u8, pm.len());
        core::ptr::copy_nonoverlapping(initrd.as_ptr(), initrd_at as *mut u8, initrd.len());
    }
    Ok(Loaded {
        boot_params,
        entry32,
        kernel_size: pm_size,
        init_size,
        initrd: initrd_at,
        initrd_size,
        protocol,
        relocatable,
        e820,
        cmdline,
    })
}

/// The ACPI PM1a control port from the FADT (RSDP in the BIOS area 0xE0000–0xFFFFF, then the RSDT), if
/// the firmware has one.
pub fn pm1a_control_port() -> Option<u16> {
    let read = |addr: u64, len: usize| {
        // SAFETY: the BIOS area and the ACPI tables are RAM or ROM below 4 GiB, identity-mapped and only
        // read.
        unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
    };
    let rsdp = (0xe_0000u64..0x10_0000)
        .step_by(16)
        .find(|&a| read(a, 8) == b"RSD PTR ")?;
    let rsdt = u64::from(le32(read(rsdp, 20), 16));
    if rsdt == 0 || rsdt >= 1 << 32 {
        return None;
    }
    let header = read(rsdt, 36);
    if &header[..4] != b"RSDT" {
        return None;
    }
    let len = le32(header, 4) as usize;
    let entries = (len.saturating_sub(36) / 4).min(64);
    let table = read(rsdt, 36 + 4 * entries);
    (0..entries)
        .find_map(|i| {
            let t = u64::from(le32(table, 36 + 4 * i));
            let fadt = read(t, 68);
            (&fadt[..4] == b"FACP").then(|| le32(fadt, 64) as u16)
        })
        .filter(|&p| p != 0)
}
