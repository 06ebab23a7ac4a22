//! A 4-KiB page of bits, the shape shared by the MSR, I/O, VMREAD and VMWRITE bitmaps: bit `n`
//! is bit `n % 8` of byte `n / 8` (SDM Vol. 3C, 25.6.4, 25.6.9, 25.6.15).

/// Bits in one 4-KiB bitmap page.
pub(crate) const PAGE_BITS: u32 = 4096 * 8;

/// One 4-KiB page of bits.
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub(crate) struct BitPage(pub(crate) [u8; 4096]);

const _: () = assert!(core::mem::size_of::<BitPage>() == 4096);
const _: () = assert!(core::mem::align_of::<BitPage>() == 4096);

impl BitPage {
    /// Every bit `value`.
    pub(crate) const fn filled(value: bool) -> Self {
        Self([if value { 0xff } else { 0 }; 4096])
    }

    /// The little-endian 8-byte word at byte `offset` (a multiple of 8 below 4096; any other
    /// offset reads as all ones, which no caller passes).
    pub(crate) fn word(&self, offset: usize) -> u64 {
        let (words, _) = self.0.as_chunks::<8>();
        words
            .get(offset / 8)
            .map_or(u64::MAX, |bytes| u64::from_le_bytes(*bytes))
    }

    /// Sets the 8-byte word at byte `offset` (a multiple of 8 below 4096; others are ignored).
    pub(crate) fn set_word(&mut self, offset: usize, value: u64) {
        let (words, _) = self.0.as_chunks_mut::<8>();
        if let Some(bytes) = words.get_mut(offset / 8) {
            *bytes = value.to_le_bytes();
        }
    }

    /// The byte offsets of the 8-byte words not all ones, in order.
    pub(crate) fn open_words(&self) -> impl Iterator<Item = usize> + '_ {
        let (words, _) = self.0.as_chunks::<8>();
        words
            .iter()
            .enumerate()
            .filter(|(_, bytes)| **bytes != [0xff; 8])
            .map(|(i, _)| i * 8)
    }

    /// Bit `n` (`n < PAGE_BITS`, guaranteed by the callers' range checks).
    pub(crate) fn get(&self, n: u32) -> bool {
        self.0[(n / 8) as usize] & (1 << (n % 8)) != 0
    }

    /// Sets bit `n` to `value`.
    pub(crate) fn set(&mut self, n: u32, value: bool) {
        let byte = &mut self.0[(n / 8) as usize];
        if value {
            *byte |= 1 << (n % 8);
        } else {
            *byte &= !(1 << (n % 8));
        }
    }

    /// Sets bits `first..=last` to `value`, a byte at a time where it can.
    pub(crate) fn set_range(&mut self, first: u32, last: u32, value: bool) {
        let mut n = first;
        while n <= last {
            if n.is_multiple_of(8) && last - n >= 7 {
                self.0[(n / 8) as usize] = if value { 0xff } else { 0 };
                n += 8;
            } else {
                self.set(n, value);
                n += 1;
            }
        }
    }

    /// Number of set bits.
    pub(crate) fn count_ones(&self) -> u32 {
        self.0.iter().map(|b| b.count_ones()).sum()
    }

    /// Fills every bit with `value`.
    pub(crate) fn fill(&mut self, value: bool) {
        self.0.fill(if value { 0xff } else { 0 });
    }
}
