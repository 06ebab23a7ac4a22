//! The guest's RAM as the hypervisor sees it: one contiguous host allocation mapped by EPT at
//! guest-physical 0, and a walker of the guest's own 4-level page tables.

use core::fmt;

use vmcs::{VmcsRead, fields};
use vmx_caps::arch::{Cr0, Cr4, Efer};
use vmx_core::VmFail;

/// Why a guest memory access by the hypervisor failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The guest-physical range is not (entirely) guest RAM.
    NotRam {
        /// The first guest-physical address of the access.
        gpa: u64,
    },
    /// A guest paging-structure entry on the way to `gva` is not present.
    NotMapped {
        /// The guest-virtual address.
        gva: u64,
    },
    /// The guest uses a paging mode the walker does not implement (32-bit or PAE paging).
    UnsupportedPaging,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRam { gpa } => write!(f, "guest-physical {gpa:#x} is not guest RAM"),
            Self::NotMapped { gva } => write!(f, "guest-virtual {gva:#x} is not mapped"),
            Self::UnsupportedPaging => f.write_str("the guest's paging mode is not 4-level paging"),
        }
    }
}

/// The guest's paging state needed to translate its linear addresses.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// Guest CR0.PG.
    pub enabled: bool,
    /// Guest IA32_EFER.LMA.
    pub long_mode: bool,
    /// Guest CR3.
    pub cr3: u64,
    /// Guest CR4.LA57: 5-level paging.
    pub la57: bool,
}

impl Paging {
    /// The guest's paging state from the guest-state area of `vmcs`.
    pub fn of(vmcs: &impl VmcsRead) -> Result<Self, VmFail> {
        Ok(Self {
            enabled: vmcs.read(fields::GUEST_CR0)?.contains(Cr0::PG),
            long_mode: vmcs.read(fields::GUEST_IA32_EFER)?.contains(Efer::LMA),
            cr3: vmcs.read(fields::GUEST_CR3)?,
            la57: vmcs.read(fields::GUEST_CR4)?.contains(Cr4::LA57),
        })
    }
}

/// Guest RAM: guest-physical `[0, size)` is host-physical `[host_base, host_base + size)`, but
/// for an optional hole that is not the guest's.
pub struct GuestMemory {
    host_base: u64,
    size: u64,
    hole: core::ops::Range<u64>,
}

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;

impl GuestMemory {
    /// Guest RAM backed by `size` bytes of host memory at `host_base` (identity-mapped by the host).
    ///
    /// # Safety
    /// `[host_base, host_base + size)` is host RAM owned by the guest and nothing else, accessible at
    /// that virtual address.
    pub unsafe fn new(host_base: u64, size: u64) -> Self {
        Self {
            host_base,
            size,
            hole: 0..0,
        }
    }

    /// Guest RAM identity-mapped (guest-physical = host-physical) at `[0, size)` but `hole`, which
    /// is not the guest's and is never read (the Linux guest: the hypervisor's own memory).
    ///
    /// # Safety
    /// `[0, size)` but `hole` is host RAM owned by the guest, identity-mapped by the host.
    pub unsafe fn identity_with_hole(size: u64, hole: core::ops::Range<u64>) -> Self {
        Self {
            host_base: 0,
            size,
            hole,
        }
    }

    /// Host-physical base of guest RAM.
    pub fn host_base(&self) -> u64 {
        self.host_base
    }

    /// Size of guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `[gpa, gpa + len)` is guest RAM.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len)
            .is_some_and(|end| end <= self.size && (end <= self.hole.start || gpa >= self.hole.end))
    }

    fn host_ptr(&self, gpa: u64, len: u64) -> Result<*mut u8, MemError> {
        if self.contains(gpa, len) {
            Ok((self.host_base + gpa) as *mut u8)
        } else {
            Err(MemError::NotRam { gpa })
        }
    }

    /// Copies guest-physical memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let src = self.host_ptr(gpa, buf.len() as u64)?;
        // SAFETY: the range is inside guest RAM (checked), which `new`'s caller vouched for; the guest is
        // not running while the hypervisor handles an exit.
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `bytes` into guest-physical memory at `gpa`.
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemError> {
        let dst = self.host_ptr(gpa, bytes.len() as u64)?;
        // SAFETY: the range is inside guest RAM (checked), which `new`'s caller vouched for; the
        // guest is not running while the hypervisor handles an exit.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }

    fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Translates the guest-linear address `gva` through the guest's page tables (SDM Vol. 3A, 5.5
    /// "4-Level Paging and 5-Level Paging", five levels with CR4.LA57); without paging, linear ==
    /// physical. Permissions are not
    /// checked: the hypervisor reads on behalf of the guest's own CPL-0 code.
    pub fn translate(&self, paging: Paging, gva: u64) -> Result<u64, MemError> {
        if !paging.enabled {
            return Ok(gva);
        }
        if !paging.long_mode {
            return Err(MemError::UnsupportedPaging);
        }
        let mut table = paging.cr3 & ADDRESS_MASK;
        let levels = if paging.la57 { 5 } else { 4 };
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let index = (gva >> shift) & 0x1ff;
            let entry = self.read_u64(table + index * 8)?;
            if entry & PRESENT == 0 {
                return Err(MemError::NotMapped { gva });
            }
            let frame = entry & ADDRESS_MASK;
            if level == 1 || ((level == 2 || level == 3) && entry & PAGE_SIZE_BIT != 0) {
                let offset_mask = (1u64 << shift) - 1;
                return Ok((frame & !offset_mask) | (gva & offset_mask));
            }
            table = frame;
        }
        Err(MemError::NotMapped { gva })
    }

    /// Copies guest-linear memory at `gva` into `buf`, page by page.
    pub fn read_virt(&self, paging: Paging, gva: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0usize;
        while done < buf.len() {
            let addr = gva.wrapping_add(done as u64);
            let in_page = (0x1000 - (addr & 0xfff)) as usize;
            let chunk = in_page.min(buf.len() - done);
            let gpa = self.translate(paging, addr)?;
            self.read(gpa, &mut buf[done..done + chunk])?;
            done += chunk;
        }
        Ok(())
    }
}
