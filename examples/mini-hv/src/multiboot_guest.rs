//! A Multiboot (version 1) kernel as a guest: its image read from the header's address fields
//! (the "a.out kludge", header flag 16, which mini-hv's own image uses), and the boot information
//! a Multiboot loader hands it (memory sizes, command line, memory map), laid out in the guest's
//! low memory. The step of issue 16's demonstration where L0 runs a second mini-hv as L1 (see
//! `docs/nested-l1-kernel.md`): L0 copies [`Image::load`] to [`Image::load_address`], zeroes the
//! `.bss` range, writes [`BootInfo::write`]'s bytes at [`BootInfo::ADDRESS`] and enters the guest in
//! 32-bit protected mode with paging off at [`Image::entry`], EAX = [`BOOTLOADER_MAGIC`] and EBX =
//! [`BootInfo::ADDRESS`] (Multiboot Specification 0.6.96, section 3.2 "Machine state").

use core::fmt;

/// The Multiboot header's magic (`magic` field).
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The value EAX holds when the loader enters the kernel.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie, 4-byte aligned, within this many bytes from the image's start.
pub const HEADER_SEARCH: usize = 8192;
/// Header flag 16: the address fields (`header_addr` .. `entry_addr`) are valid.
const FLAG_ADDRESSES: u32 = 1 << 16;
/// Header flags bits 15:0 that a loader must understand (bit 0: page-aligned modules, bit 1:
/// memory information, bit 2: video mode); an unknown one in 15:3 makes the loader refuse.
const FLAGS_REQUIRED_KNOWN: u32 = 0x0000_0007;

/// Why an image is not a Multiboot kernel this loader can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// No header (magic with a valid checksum, 4-byte aligned) in the first 8 KiB.
    NoHeader,
    /// The header asks for a feature in flags 15:0 this loader does not know.
    UnknownRequiredFlags(u32),
    /// Flag 16 is clear: the kernel's format (ELF) would have to be read, which this loader does
    /// not do.
    NoAddressFields,
    /// The address fields are inconsistent: `header_addr` below `load_addr`, the load range not
    /// inside the file, `bss_end_addr` below `load_end_addr`, or the entry outside the image.
    BadAddresses,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoHeader => write!(f, "no Multiboot header in the first 8 KiB"),
            Self::UnknownRequiredFlags(flags) => {
                write!(
                    f,
                    "the Multiboot header requires unknown features {flags:#x}"
                )
            }
            Self::NoAddressFields => write!(
                f,
                "the Multiboot header has no address fields (flag 16): an ELF loader is needed"
            ),
            Self::BadAddresses => {
                write!(f, "the Multiboot header's address fields are inconsistent")
            }
        }
    }
}

/// A Multiboot kernel image as its header's address fields describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image<'a> {
    /// The bytes to copy to [`Image::load_address`].
    pub load: &'a [u8],
    /// The physical address of the first byte of [`Image::load`] (`load_addr`).
    pub load_address: u32,
    /// The physical address range to zero after the loaded bytes (`.bss`: `load_end_addr` to
    /// `bss_end_addr`).
    pub bss: (u32, u32),
    /// The physical address the loader jumps to (`entry_addr`).
    pub entry: u32,
    /// Header flag 1: the kernel wants the memory fields of the boot information.
    pub wants_memory_info: bool,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> Image<'a> {
    /// Finds the header in `file` (the kernel's file, as a Multiboot module holds it) and reads
    /// the image from its address fields (Multiboot Specification, 3.1 "OS image format").
    ///
    /// # Errors
    ///
    /// [`ImageError`] for a file without a valid header, with unknown required flags, without
    /// address fields, or with address fields that do not fit the file.
    pub fn parse(file: &'a [u8]) -> Result<Self, ImageError> {
        let search = file.len().min(HEADER_SEARCH);
        let offset = (0..search.saturating_sub(11))
            .step_by(4)
            .find(|&at| {
                let (Some(magic), Some(flags), Some(checksum)) =
                    (u32_at(file, at), u32_at(file, at + 4), u32_at(file, at + 8))
                else {
                    return false;
                };
                magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(checksum) == 0
            })
            .ok_or(ImageError::NoHeader)?;
        let field = |i: usize| u32_at(file, offset + 4 * i).ok_or(ImageError::BadAddresses);
        let flags = field(1)?;
        let unknown = flags & 0xffff & !FLAGS_REQUIRED_KNOWN;
        if unknown != 0 {
            return Err(ImageError::UnknownRequiredFlags(unknown));
        }
        if flags & FLAG_ADDRESSES == 0 {
            return Err(ImageError::NoAddressFields);
        }
        let (header_addr, load_addr, load_end, bss_end, entry) =
            (field(3)?, field(4)?, field(5)?, field(6)?, field(7)?);
        let bad = ImageError::BadAddresses;
        // The file offset of load_addr: the header's own offset, less its distance from it.
        let start = (offset as u64)
            .checked_sub(u64::from(header_addr.checked_sub(load_addr).ok_or(bad)?))
            .ok_or(bad)?;
        let start = usize::try_from(start).map_err(|_| bad)?;
        // load_end_addr 0: the image extends to the end of the file.
        let len = if load_end == 0 {
            file.len().checked_sub(start).ok_or(bad)?
        } else {
            usize::try_from(load_end.checked_sub(load_addr).ok_or(bad)?).map_err(|_| bad)?
        };
        let load = file
            .get(start..start.checked_add(len).ok_or(bad)?)
            .ok_or(bad)?;
        let load_end = load_addr
            .checked_add(u32::try_from(len).map_err(|_| bad)?)
            .ok_or(bad)?;
        // bss_end_addr 0: no .bss.
        let bss_end = if bss_end == 0 { load_end } else { bss_end };
        if bss_end < load_end || !(load_addr..bss_end).contains(&entry) {
            return Err(bad);
        }
        Ok(Self {
            load,
            load_address: load_addr,
            bss: (load_end, bss_end),
            entry,
            wants_memory_info: flags & 2 != 0,
        })
    }

    /// The physical address just past the image and its `.bss`.
    pub const fn end(&self) -> u32 {
        self.bss.1
    }
}

/// The boot information a Multiboot loader gives the kernel (Multiboot Specification, 3.3
/// "Boot information format"): memory sizes (flag 0), the command line (flag 2) and a memory map
/// (flag 6) of a guest with RAM `[0, ram)` but the legacy hole `[640 KiB, 1 MiB)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo<'a> {
    /// The guest's RAM size in bytes (at least 1 MiB).
    pub ram: u64,
    /// The kernel's command line.
    pub cmdline: &'a str,
}

/// Why the boot information cannot be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// The RAM is smaller than 1 MiB or does not fit the 32-bit memory map fields' sizes.
    Ram(u64),
    /// The command line does not fit the page with the information (or has a NUL byte).
    Cmdline(usize),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ram(ram) => write!(f, "guest RAM of {ram:#x} bytes cannot be described"),
            Self::Cmdline(len) => write!(f, "a command line of {len} bytes does not fit"),
        }
    }
}

/// The bytes of the information page ([`BootInfo::SIZE`]).
pub const BOOT_INFO_SIZE: usize = 4096;
/// Offsets in the information page.
const MMAP_OFFSET: usize = 0x80;
const MMAP_ENTRY: usize = 24;
const CMDLINE_OFFSET: usize = 0x100;
/// Flags: mem_lower/mem_upper (0), cmdline (2), mmap (6).
const INFO_FLAGS: u32 = (1 << 0) | (1 << 2) | (1 << 6);
/// The conventional memory below the legacy hole.
const LOW_RAM: u64 = 640 << 10;

impl BootInfo<'_> {
    /// The guest-physical address of the information page (below the image, in conventional
    /// memory, as loaders place it).
    pub const ADDRESS: u32 = 0x9000;
    /// The bytes of the information page.
    pub const SIZE: usize = BOOT_INFO_SIZE;

    /// Writes the information structure, its memory map and the command line into `page`, to be
    /// placed at [`BootInfo::ADDRESS`].
    ///
    /// # Errors
    ///
    /// [`BootInfoError`] for RAM below 1 MiB or beyond 4 GiB, or a command line that does not fit.
    pub fn write(&self, page: &mut [u8; BOOT_INFO_SIZE]) -> Result<(), BootInfoError> {
        if self.ram < 1 << 20 || self.ram > 1 << 32 {
            return Err(BootInfoError::Ram(self.ram));
        }
        let cmdline = self.cmdline.as_bytes();
        if cmdline.len() >= Self::SIZE - CMDLINE_OFFSET || cmdline.contains(&0) {
            return Err(BootInfoError::Cmdline(cmdline.len()));
        }
        page.fill(0);
        let put = |page: &mut [u8; BOOT_INFO_SIZE], at: usize, v: u32| {
            page[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        let base = Self::ADDRESS;
        put(page, 0, INFO_FLAGS);
        put(page, 4, (LOW_RAM >> 10) as u32);
        put(page, 8, ((self.ram - (1 << 20)) >> 10) as u32);
        put(page, 16, base + CMDLINE_OFFSET as u32);
        // Each entry: size (20, not counting itself), base, length, type (1: RAM).
        let entries: [(u64, u64); 2] = [(0, LOW_RAM), (1 << 20, self.ram - (1 << 20))];
        for (i, (start, len)) in entries.into_iter().enumerate() {
            let at = MMAP_OFFSET + MMAP_ENTRY * i;
            put(page, at, 20);
            page[at + 4..at + 12].copy_from_slice(&start.to_le_bytes());
            page[at + 12..at + 20].copy_from_slice(&len.to_le_bytes());
            put(page, at + 20, 1);
        }
        put(page, 44, (MMAP_ENTRY * entries.len()) as u32);
        put(page, 48, base + MMAP_OFFSET as u32);
        page[CMDLINE_OFFSET..CMDLINE_OFFSET + cmdline.len()].copy_from_slice(cmdline);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a header at `at` (flags as mini-hv's own header: page-aligned modules, memory
    /// information and address fields) describing a load of
    /// the whole file at 1 MiB with the header `at` bytes in, `bss` bytes of `.bss` and the entry
    /// 0x40 bytes in.
    fn file(at: usize, len: usize, bss: u32) -> Vec<u8> {
        let mut f = vec![0x90u8; len];
        let flags = 0x0001_0003;
        let load = 0x10_0000u32;
        let words = [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
            load + at as u32,
            load,
            load + len as u32,
            load + len as u32 + bss,
            load + 0x40,
        ];
        for (i, w) in words.iter().enumerate() {
            f[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        f
    }

    #[test]
    fn the_address_fields_give_the_load_bss_and_entry() {
        let f = file(0x1000, 0x3000, 0x2000);
        let image = Image::parse(&f).unwrap();
        assert_eq!(image.load_address, 0x10_0000);
        assert_eq!(image.load.len(), 0x3000);
        assert_eq!(image.load.as_ptr(), f.as_ptr());
        assert_eq!(image.bss, (0x10_3000, 0x10_5000));
        assert_eq!(image.entry, 0x10_0040);
        assert_eq!(image.end(), 0x10_5000);
        assert!(image.wants_memory_info);
    }

    #[test]
    fn a_load_starting_inside_the_file_and_load_end_zero() {
        // The file has 0x200 bytes before load_addr's byte; load_end_addr 0: to the end.
        let mut f = vec![0u8; 0x200];
        f.extend(file(0x100, 0x1000, 0));
        let at = 0x200 + 0x100;
        f[at + 20..at + 24].copy_from_slice(&0u32.to_le_bytes());
        let image = Image::parse(&f).unwrap();
        assert_eq!(image.load.len(), 0x1000);
        assert_eq!(image.load.as_ptr(), f[0x200..].as_ptr());
        assert_eq!(image.bss, (0x10_1000, 0x10_1000));
    }

    #[test]
    fn images_a_loader_must_refuse() {
        // No header within 8 KiB.
        let far = {
            let mut f = vec![0u8; 0x2000];
            f.extend(file(0, 0x1000, 0));
            f
        };
        assert_eq!(Image::parse(&far), Err(ImageError::NoHeader));
        // A wrong checksum.
        let mut f = file(0, 0x1000, 0);
        f[8] ^= 1;
        assert_eq!(Image::parse(&f), Err(ImageError::NoHeader));
        // A misaligned header is not found.
        let mut f = vec![0u8; 2];
        f.extend(file(0, 0x1000, 0));
        assert_eq!(Image::parse(&f), Err(ImageError::NoHeader));
        // A required feature this loader does not know (bit 3), and no address fields.
        for (flags, err) in [
            (
                FLAG_ADDRESSES | 1 << 3,
                ImageError::UnknownRequiredFlags(1 << 3),
            ),
            (2, ImageError::NoAddressFields),
        ] {
            let mut f = file(0, 0x1000, 0);
            f[4..8].copy_from_slice(&flags.to_le_bytes());
            let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
            f[8..12].copy_from_slice(&checksum.to_le_bytes());
            assert_eq!(Image::parse(&f), Err(err));
        }
        // A load beyond the file, header_addr below load_addr, an entry outside the image.
        for (field, value) in [(5, 0x10_2000u32), (3, 0xf_0000), (7, 0x20_0000)] {
            let mut f = file(0, 0x1000, 0);
            f[4 * field..4 * field + 4].copy_from_slice(&value.to_le_bytes());
            assert_eq!(
                Image::parse(&f),
                Err(ImageError::BadAddresses),
                "field {field}"
            );
        }
        // Truncated inside the header: before the checksum, no header; inside the address
        // fields, addresses that are not there.
        assert_eq!(
            Image::parse(&file(0, 0x1000, 0)[..8]),
            Err(ImageError::NoHeader)
        );
        assert_eq!(
            Image::parse(&file(0, 0x1000, 0)[..20]),
            Err(ImageError::BadAddresses)
        );
        assert_eq!(Image::parse(&[]), Err(ImageError::NoHeader));
    }

    #[test]
    fn the_boot_information_as_the_specification_lays_it_out() {
        let info = BootInfo {
            ram: 64 << 20,
            cmdline: "l1 mini-hv.l1=1",
        };
        let mut page = [0xffu8; BootInfo::SIZE];
        info.write(&mut page).unwrap();
        let u32_ = |at: usize| u32_at(&page, at).unwrap();
        let u64_ = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
        assert_eq!(u32_(0), 0x45);
        assert_eq!((u32_(4), u32_(8)), (640, (63 << 20) >> 10));
        let cmdline = u32_(16) - BootInfo::ADDRESS;
        assert_eq!(
            &page[cmdline as usize..cmdline as usize + 16],
            b"l1 mini-hv.l1=1\0"
        );
        let (len, addr) = (u32_(44), u32_(48) - BootInfo::ADDRESS);
        assert_eq!(len, 48);
        let ranges: Vec<(u32, u64, u64, u32)> = (0..2)
            .map(|i| {
                let at = addr as usize + 24 * i;
                (u32_(at), u64_(at + 4), u64_(at + 12), u32_(at + 20))
            })
            .collect();
        assert_eq!(ranges, [(20, 0, 640 << 10, 1), (20, 1 << 20, 63 << 20, 1)]);
        // Flags 1 (boot device), 3 (modules) and the rest: their fields stay zero.
        assert_eq!(&page[20..44], &[0; 24]);
    }

    #[test]
    fn boot_information_that_cannot_be_written() {
        let mut page = [0u8; BootInfo::SIZE];
        let small = BootInfo {
            ram: 512 << 10,
            cmdline: "",
        };
        assert_eq!(small.write(&mut page), Err(BootInfoError::Ram(512 << 10)));
        let big = BootInfo {
            ram: 8 << 30,
            cmdline: "",
        };
        assert_eq!(big.write(&mut page), Err(BootInfoError::Ram(8 << 30)));
        let long = "x".repeat(BootInfo::SIZE);
        let info = BootInfo {
            ram: 64 << 20,
            cmdline: &long,
        };
        assert_eq!(
            info.write(&mut page),
            Err(BootInfoError::Cmdline(long.len()))
        );
        let nul = BootInfo {
            ram: 64 << 20,
            cmdline: "a\0b",
        };
        assert_eq!(nul.write(&mut page), Err(BootInfoError::Cmdline(3)));
    }
}
