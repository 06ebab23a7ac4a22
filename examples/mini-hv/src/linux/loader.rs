//! Loading the Linux guest into memory: the Multiboot modules tagged `kernel` and `initrd`, the
//! firmware's memory map turned into the guest's e820 map, and the pieces [`Layout::plan`] placed,
//! copied into guest RAM. The boot protocol itself is [`mini_hv_logic::boot_protocol`]'s.

use mini_hv_logic::boot_protocol::{E820, E820_MAX, E820_RAM, Layout, LoadError, ZERO_PAGE_SIZE};

/// The bytes of the Multiboot module tagged `tag`, and its arguments after the tag.
fn module_bytes(tag: &'static str) -> Result<(&'static [u8], &'static str), LoadError> {
    for m in crate::boot::modules() {
        let Some(args) = mini_hv_logic::boot_protocol::module_args(m.cmdline, tag) else {
            continue;
        };
        if m.start == 0 || m.end <= m.start {
            return Err(LoadError::EmptyModule(tag));
        }
        let len = (m.end - m.start) as usize;
        // SAFETY: the loader placed the module at [start, end), below 4 GiB (identity-mapped); the frame
        // allocator never hands it out, and nothing writes it.
        let bytes = unsafe { core::slice::from_raw_parts(m.start as *const u8, len) };
        return Ok((bytes, args));
    }
    Err(LoadError::MissingModule(tag))
}

/// Checks the modules, lays the guest out above `hv_end` ([`Layout::plan`]) and writes it into
/// memory. `holes` are the hypervisor's ranges (reserved in the e820 map); `[1 MiB, hv_end)` must be
/// one of them.
pub fn load(hv_end: u64, holes: &[(u64, u64)]) -> Result<Layout<'static>, LoadError> {
    let (kernel, cmdline) = module_bytes("kernel")?;
    let (initrd, _) = module_bytes("initrd")?;

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
    let layout = Layout::plan(kernel, cmdline, initrd, e820, hv_end)?;
    let pm = layout.protected_mode(kernel);

    // SAFETY: every destination lies in [hv_end, end of the RAM entry starting at hv_end), as
    // `Layout::plan` placed it: RAM of the firmware's map that the frame allocator never handed out
    // (hv_end is above every allocation and module) and that no host data lives in; the sources
    // (modules) lie below hv_end. The host identity-maps the first 4 GiB.
    unsafe {
        let zero_page = &mut *(layout.boot_params as *mut [u8; ZERO_PAGE_SIZE]);
        layout.write_zero_page(kernel, zero_page);
        let cl = layout.cmdline_at as *mut u8;
        core::ptr::copy_nonoverlapping(cmdline.as_ptr(), cl, cmdline.len());
        cl.add(cmdline.len()).write(0);
        core::ptr::copy_nonoverlapping(pm.as_ptr(), layout.entry32 as *mut u8, pm.len());
        core::ptr::copy_nonoverlapping(initrd.as_ptr(), layout.initrd as *mut u8, initrd.len());
    }
    Ok(layout)
}

/// A little-endian `u32` at `at` in `b`.
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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
