//! VMCS02's MSR and I/O bitmaps: L0's intercepts united with L1's (SDM Vol. 3C, 26.1.3 for
//! what each bit means), kept merged across L1's VM entries of L2.
//!
//! Where L0's bitmaps set a whole 8-byte word, the merged word is all ones whatever L1's
//! bitmaps hold; only the other words ("open" words) depend on L1. A hypervisor typically
//! intercepts almost everything for its guest, so these are a handful: the merged bitmaps keep
//! the list of them, made once from L0's bitmaps (which stay the same while they are in use), and
//! each merge reads and writes those words alone.

use vmx_caps::PrimaryControls;

use super::vmcs02::{Vmcs02Error, controls_of, rd};
use crate::VmcsRead;
use crate::check::PhysMemory;
use crate::fields;
use crate::structures::bitmap::BitPage;
use crate::structures::{IoBitmaps, MsrBitmap};

/// The 8-byte word at `offset` in L1's page at `address`; a word outside L1's memory reads as all
/// ones, as unbacked physical memory does.
fn read_word(mem: &mut (impl PhysMemory + ?Sized), address: u64, offset: usize) -> u64 {
    let mut word = [0u8; 8];
    match address.checked_add(offset as u64) {
        Some(at) if mem.read(at, &mut word).is_ok() => u64::from_le_bytes(word),
        _ => u64::MAX,
    }
}

/// The byte offsets of the open words of up to `N / 512` bitmap pages (offset within the page,
/// plus 4096 times the page's index).
#[derive(Clone)]
struct OpenWords<const N: usize> {
    offsets: [u16; N],
    len: usize,
}

impl<const N: usize> OpenWords<N> {
    fn of(pages: &[&BitPage]) -> Self {
        let mut open = Self {
            offsets: [0; N],
            len: 0,
        };
        for (index, page) in pages.iter().enumerate() {
            for offset in page.open_words() {
                if let Some(slot) = open.offsets.get_mut(open.len) {
                    *slot = (index * 4096 + offset) as u16;
                    open.len += 1;
                }
            }
        }
        open
    }

    /// The open words: (page index, byte offset in the page).
    fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.offsets
            .iter()
            .take(self.len)
            .map(|&o| (usize::from(o) / 4096, usize::from(o) % 4096))
    }
}

/// VMCS02's MSR bitmaps, kept merged: every RDMSR/WRMSR L0 intercepts (`l0`) or L1 does, from
/// VMCS12's MSR bitmaps in L1's memory when it uses them; without "use MSR bitmaps" in VMCS12
/// every RDMSR and WRMSR of L2 exits to L1 (SDM 26.1.3), so every bit is set.
///
/// ```
/// use vmcs::nested::MergedMsrBitmap;
/// use vmcs::structures::{MsrAccess, MsrBitmap};
///
/// let mut l0 = MsrBitmap::intercept_all();
/// l0.pass_through(0xc000_0100, MsrAccess::Read)?; // IA32_FS_BASE
/// let mut out = MsrBitmap::pass_all();
/// let merged = MergedMsrBitmap::new(&l0, &mut out);
/// // One word of the page is not L0's whole: the only one a merge reads from L1.
/// assert_eq!(merged.open_words(), 1);
/// assert!(!merged.bitmap().exits(0xc000_0100, MsrAccess::Read));
/// # Ok::<(), vmcs::structures::MsrBitmapError>(())
/// ```
pub struct MergedMsrBitmap<'a> {
    l0: &'a MsrBitmap,
    out: &'a mut MsrBitmap,
    open: OpenWords<512>,
}

impl<'a> MergedMsrBitmap<'a> {
    /// VMCS02's MSR bitmaps in `out`, starting as L0's `l0` (which must not change while this
    /// lives: it is borrowed).
    pub fn new(l0: &'a MsrBitmap, out: &'a mut MsrBitmap) -> Self {
        out.clone_from(l0);
        Self {
            open: OpenWords::of(&[l0.page()]),
            l0,
            out,
        }
    }

    /// Merges VMCS12's MSR bitmaps (read from `mem`) with L0's, for L2's next VM entry.
    ///
    /// # Errors
    ///
    /// [`Vmcs02Error::Vmcs`] when VMCS12's controls or bitmap address cannot be read.
    pub fn merge(
        &mut self,
        vmcs12: &(impl VmcsRead + ?Sized),
        mem: &mut (impl PhysMemory + ?Sized),
    ) -> Result<(), Vmcs02Error> {
        let c12 = controls_of(vmcs12)?;
        let address = if c12.proc.contains(PrimaryControls::USE_MSR_BITMAPS) {
            Some(rd(vmcs12, fields::ADDRESS_OF_MSR_BITMAPS.encoding())?)
        } else {
            None
        };
        let (l0, out) = (self.l0.page(), self.out.page_mut());
        for (_, offset) in self.open.iter() {
            let l1 = address.map_or(u64::MAX, |address| read_word(mem, address, offset));
            out.set_word(offset, l0.word(offset) | l1);
        }
        Ok(())
    }

    /// The merged bitmaps.
    pub fn bitmap(&self) -> &MsrBitmap {
        self.out
    }

    /// How many 8-byte words of L0's bitmaps are not all ones (the words a merge reads).
    pub fn open_words(&self) -> usize {
        self.open.len
    }
}

/// VMCS02's I/O bitmaps, kept merged: every port L0 intercepts (`l0`) or L1 does: from VMCS12's
/// I/O bitmaps in L1's memory with "use I/O bitmaps", every port with "unconditional I/O exiting"
/// alone, none of L1's without either (SDM 26.1.3).
pub struct MergedIoBitmaps<'a> {
    l0: &'a IoBitmaps,
    out: &'a mut IoBitmaps,
    open: OpenWords<1024>,
}

impl<'a> MergedIoBitmaps<'a> {
    /// VMCS02's I/O bitmaps in `out`, starting as L0's `l0` (which must not change while this
    /// lives: it is borrowed).
    pub fn new(l0: &'a IoBitmaps, out: &'a mut IoBitmaps) -> Self {
        out.clone_from(l0);
        Self {
            open: OpenWords::of(&[l0.half(false), l0.half(true)]),
            l0,
            out,
        }
    }

    /// Merges VMCS12's I/O bitmaps (read from `mem`) with L0's, for L2's next VM entry.
    ///
    /// # Errors
    ///
    /// [`Vmcs02Error::Vmcs`] when VMCS12's controls or bitmap addresses cannot be read.
    pub fn merge(
        &mut self,
        vmcs12: &(impl VmcsRead + ?Sized),
        mem: &mut (impl PhysMemory + ?Sized),
    ) -> Result<(), Vmcs02Error> {
        let c12 = controls_of(vmcs12)?;
        /// Where L1's bit comes from.
        enum L1 {
            Pages([u64; 2]),
            Every,
            None,
        }
        let l1 = if c12.proc.contains(PrimaryControls::USE_IO_BITMAPS) {
            L1::Pages([
                rd(vmcs12, fields::ADDRESS_OF_IO_BITMAP_A.encoding())?,
                rd(vmcs12, fields::ADDRESS_OF_IO_BITMAP_B.encoding())?,
            ])
        } else if c12.proc.contains(PrimaryControls::UNCONDITIONAL_IO_EXITING) {
            L1::Every
        } else {
            L1::None
        };
        for (page, offset) in self.open.iter() {
            let b = page == 1;
            let l1 = match &l1 {
                L1::Pages([a, bb]) => read_word(mem, if b { *bb } else { *a }, offset),
                L1::Every => u64::MAX,
                L1::None => 0,
            };
            let l0 = self.l0.half(b).word(offset);
            self.out.half_mut(b).set_word(offset, l0 | l1);
        }
        Ok(())
    }

    /// The merged bitmaps.
    pub fn bitmap(&self) -> &IoBitmaps {
        self.out
    }

    /// How many 8-byte words of L0's bitmaps are not all ones (the words a merge reads).
    pub fn open_words(&self) -> usize {
        self.open.len
    }
}
