//! The I/O bitmaps A and B (SDM Vol. 3C, 25.6.4 "I/O-Bitmap Addresses"; 26.1.3 "Instructions
//! That Cause VM Exits Conditionally", I/O instructions).

use core::ops::RangeInclusive;

use vmx_core::PhysTranslate;

use super::bitmap::BitPage;
use super::{InFrame, StructureError, in_frame, phys_of, vmcs_err};
use crate::{VmcsWrite, fields};

/// Why an I/O-bitmap query or change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum IoBitmapError {
    /// I/O instructions access 1, 2 or 4 bytes.
    #[error("an I/O access is 1, 2 or 4 bytes, not {0}")]
    BadSize(u8),
    /// A port range that runs backwards.
    #[error("port range {first:#x}..={last:#x} is empty")]
    EmptyRange {
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
}

/// I/O bitmap A (ports 0000H–7FFFH) followed by I/O bitmap B (ports 8000H–FFFFH), 4 KiB each
/// (SDM Vol. 3C, 25.6.4). With "use I/O bitmaps" 1, an I/O instruction exits if any bit of a port
/// it accesses is set, and always if the access wraps around the port space (touches FFFFH and
/// 0000H); the "unconditional I/O exiting" control is then ignored.
///
/// ```
/// use vmcs::structures::IoBitmaps;
///
/// // Port 0x8000 is bit 0 of bitmap B.
/// assert_eq!(IoBitmaps::bit_position(0x8000), (1, 0, 0));
/// let mut io = Box::new(IoBitmaps::pass_all());
/// io.intercept(0x8000);
/// assert!(io.exits(0x7ffe, 4)?); // 0x7ffe..=0x8001 straddles A and B
/// assert!(!io.exits(0x7ffc, 4)?);
/// assert!(io.exits(0xffff, 2)?); // wraps past 0xffff: always exits
/// # Ok::<(), vmcs::structures::IoBitmapError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct IoBitmaps {
    a: BitPage,
    b: BitPage,
}

const _: () = assert!(core::mem::size_of::<IoBitmaps>() == 8192);
const _: () = assert!(core::mem::align_of::<IoBitmaps>() == 4096);
const _: () = assert!(core::mem::offset_of!(IoBitmaps, a) == 0);
const _: () = assert!(core::mem::offset_of!(IoBitmaps, b) == 4096);
in_frame!(IoBitmaps, "I/O bitmaps", 4096);

/// First port of bitmap B.
const B_BASE: u16 = 0x8000;

impl IoBitmaps {
    /// Both bitmaps with every port intercepted.
    #[must_use]
    pub const fn intercept_all() -> Self {
        Self {
            a: BitPage::filled(true),
            b: BitPage::filled(true),
        }
    }

    /// Both bitmaps with no port intercepted (wrapping accesses still exit).
    #[must_use]
    pub const fn pass_all() -> Self {
        Self {
            a: BitPage::filled(false),
            b: BitPage::filled(false),
        }
    }

    /// Sets every bit of both bitmaps to `intercept`.
    pub fn fill(&mut self, intercept: bool) {
        self.a.fill(intercept);
        self.b.fill(intercept);
    }

    /// The bitmap (0 = A, 1 = B), byte offset in it and bit number of `port`.
    #[must_use]
    pub const fn bit_position(port: u16) -> (u8, usize, u8) {
        let bitmap = (port >= B_BASE) as u8;
        let n = port & 0x7fff;
        (bitmap, (n / 8) as usize, (n % 8) as u8)
    }

    fn page(&mut self, port: u16) -> &mut BitPage {
        if port >= B_BASE {
            &mut self.b
        } else {
            &mut self.a
        }
    }

    /// Whether the bit of `port` is set.
    #[must_use]
    pub fn is_intercepted(&self, port: u16) -> bool {
        let page = if port >= B_BASE { &self.b } else { &self.a };
        page.get(u32::from(port & 0x7fff))
    }

    /// Sets the bit of `port` to `intercept`.
    pub fn set(&mut self, port: u16, intercept: bool) {
        self.page(port).set(u32::from(port & 0x7fff), intercept);
    }

    /// Makes accesses to `port` exit.
    pub fn intercept(&mut self, port: u16) {
        self.set(port, true);
    }

    /// Lets accesses to `port` run without an exit (unless they touch another intercepted port).
    pub fn pass_through(&mut self, port: u16) {
        self.set(port, false);
    }

    /// Sets the bits of every port in `ports` (which may cross from bitmap A into B).
    ///
    /// # Errors
    ///
    /// [`IoBitmapError::EmptyRange`] for a range that runs backwards; nothing changes then.
    pub fn set_range(
        &mut self,
        ports: RangeInclusive<u16>,
        intercept: bool,
    ) -> Result<(), IoBitmapError> {
        let (first, last) = (*ports.start(), *ports.end());
        if first > last {
            return Err(IoBitmapError::EmptyRange { first, last });
        }
        if first < B_BASE {
            let end = last.min(B_BASE - 1);
            self.a
                .set_range(u32::from(first), u32::from(end), intercept);
        }
        if last >= B_BASE {
            let start = first.max(B_BASE);
            self.b.set_range(
                u32::from(start & 0x7fff),
                u32::from(last & 0x7fff),
                intercept,
            );
        }
        Ok(())
    }

    /// Whether an I/O instruction accessing `size` bytes at `port` exits with these bitmaps
    /// (SDM 26.1.3): when the access wraps around the port space (`port + size - 1 > FFFFH`),
    /// always; otherwise when the bit of any port `port..port + size` is set, in whichever
    /// bitmap it lies (an access at 7FFFH reads bit 7FFFH of A and bit 0 of B).
    ///
    /// # Errors
    ///
    /// [`IoBitmapError::BadSize`] unless `size` is 1, 2 or 4.
    pub fn exits(&self, port: u16, size: u8) -> Result<bool, IoBitmapError> {
        if !matches!(size, 1 | 2 | 4) {
            return Err(IoBitmapError::BadSize(size));
        }
        let last = u32::from(port) + u32::from(size) - 1;
        if last > 0xffff {
            return Ok(true);
        }
        Ok((u32::from(port)..=last).any(|p| self.is_intercepted(p as u16)))
    }

    /// Writes the physical addresses of bitmap A and bitmap B (each 4-KiB aligned, translated
    /// separately) into `ADDRESS_OF_IO_BITMAP_A` and `ADDRESS_OF_IO_BITMAP_B`.
    ///
    /// # Errors
    ///
    /// [`StructureError`] for an unmapped or misaligned page or a failed VMWRITE.
    pub fn write_to(
        &self,
        vmcs: &mut impl VmcsWrite,
        translate: &impl PhysTranslate,
    ) -> Result<(), StructureError> {
        let a = phys_of(self, translate)?;
        let b_virt = core::ptr::from_ref(&self.b).cast::<u8>();
        let b = translate
            .translate(b_virt)
            .ok_or(StructureError::Unmapped {
                structure: Self::NAME,
                virt: b_virt.addr() as u64,
            })?;
        if !b.is_multiple_of(4096) {
            return Err(StructureError::Misaligned {
                structure: Self::NAME,
                phys: b,
                align: 4096,
            });
        }
        vmcs.write(fields::ADDRESS_OF_IO_BITMAP_A, a)
            .and_then(|()| vmcs.write(fields::ADDRESS_OF_IO_BITMAP_B, b))
            .map_err(vmcs_err::<Self>)
    }

    /// Sets every bit that is set in the raw bitmap pages `a` and `b` (as the processor reads
    /// them): the union of two sets of intercepts.
    pub fn union_bytes(&mut self, a: &[u8; 4096], b: &[u8; 4096]) {
        for (page, other) in [(&mut self.a, a), (&mut self.b, b)] {
            for (mine, theirs) in page.0.iter_mut().zip(other) {
                *mine |= theirs;
            }
        }
    }

    /// Bitmap A (`false`) or B (`true`).
    pub(crate) fn half(&self, b: bool) -> &BitPage {
        if b { &self.b } else { &self.a }
    }

    /// Bitmap A (`false`) or B (`true`), to change.
    pub(crate) fn half_mut(&mut self, b: bool) -> &mut BitPage {
        if b { &mut self.b } else { &mut self.a }
    }

    /// Bitmap A (ports 0000H–7FFFH), as the processor reads it.
    #[must_use]
    pub fn bitmap_a(&self) -> &[u8; 4096] {
        &self.a.0
    }

    /// Bitmap B (ports 8000H–FFFFH), as the processor reads it.
    #[must_use]
    pub fn bitmap_b(&self) -> &[u8; 4096] {
        &self.b.0
    }
}

impl core::fmt::Debug for IoBitmaps {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "IoBitmaps {{ A: {} set, B: {} set }}",
            self.a.count_ones(),
            self.b.count_ones()
        )
    }
}

impl Default for IoBitmaps {
    fn default() -> Self {
        Self::pass_all()
    }
}
