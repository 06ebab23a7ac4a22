//! A set of the 256 interrupt vectors, the shape of VISR, VIRR, VTMR, the PIR and the EOI-exit
//! bitmap.

/// A set of interrupt vectors 0–255: bit `v % 64` of word `v / 64`.
///
/// The APIC lays such a set out as eight 32-bit registers 16 bytes apart (register `i` holds
/// vectors `32i..32i+31`, SDM Vol. 3A, 11.8.4 "Interrupt Acceptance for Fixed Interrupts"); the
/// EOI-exit bitmap as four 64-bit VMCS fields (field `i` holds vectors `64i..64i+63`, SDM Vol. 3C,
/// 25.6.8); the posted-interrupt descriptor as 256 contiguous bits.
///
/// ```
/// use vmcs::structures::VectorSet;
///
/// let mut set = VectorSet::new();
/// set.insert(0x31);
/// set.insert(0xec);
/// assert_eq!(set.highest(), Some(0xec));
/// assert_eq!(set.apic_words()[1], 1 << (0x31 - 32)); // VIRR1, bit 17
/// assert_eq!(set.iter().collect::<Vec<_>>(), [0x31, 0xec]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VectorSet([u64; 4]);

impl VectorSet {
    /// The empty set.
    #[must_use]
    pub const fn new() -> Self {
        Self([0; 4])
    }

    /// Every vector.
    #[must_use]
    pub const fn all() -> Self {
        Self([u64::MAX; 4])
    }

    /// The set from its four 64-bit words (word `i` holds vectors `64i..64i+63`).
    #[must_use]
    pub const fn from_words(words: [u64; 4]) -> Self {
        Self(words)
    }

    /// The four 64-bit words (EOI_EXIT0..EOI_EXIT3, PIR bits 63:0..255:192).
    #[must_use]
    pub const fn words(self) -> [u64; 4] {
        self.0
    }

    /// The set from eight 32-bit APIC registers (ISR0..ISR7, TMR0..TMR7, IRR0..IRR7).
    #[must_use]
    pub fn from_apic_words(regs: [u32; 8]) -> Self {
        let mut words = [0u64; 4];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from(regs[2 * i]) | u64::from(regs[2 * i + 1]) << 32;
        }
        Self(words)
    }

    /// The eight 32-bit APIC registers of this set.
    #[must_use]
    pub fn apic_words(self) -> [u32; 8] {
        let mut regs = [0u32; 8];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = (self.0[i / 2] >> (32 * (i % 2))) as u32;
        }
        regs
    }

    /// Adds `vector`; `true` if it was absent.
    pub fn insert(&mut self, vector: u8) -> bool {
        let (w, b) = (usize::from(vector / 64), vector % 64);
        let absent = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        absent
    }

    /// Removes `vector`; `true` if it was present.
    pub fn remove(&mut self, vector: u8) -> bool {
        let (w, b) = (usize::from(vector / 64), vector % 64);
        let present = self.0[w] & (1 << b) != 0;
        self.0[w] &= !(1 << b);
        present
    }

    /// Whether `vector` is in the set.
    #[must_use]
    pub const fn contains(self, vector: u8) -> bool {
        self.0[(vector / 64) as usize] & (1 << (vector % 64)) != 0
    }

    /// The highest vector in the set (what the APIC prioritises), if any.
    #[must_use]
    pub fn highest(self) -> Option<u8> {
        (0..4).rev().find_map(|w| {
            let word = self.0[w];
            (word != 0).then(|| (w * 64 + 63 - word.leading_zeros() as usize) as u8)
        })
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == 0 && self.0[3] == 0
    }

    /// Number of vectors in the set.
    #[must_use]
    pub const fn len(self) -> u32 {
        self.0[0].count_ones()
            + self.0[1].count_ones()
            + self.0[2].count_ones()
            + self.0[3].count_ones()
    }

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self([
            self.0[0] | other.0[0],
            self.0[1] | other.0[1],
            self.0[2] | other.0[2],
            self.0[3] | other.0[3],
        ])
    }

    /// The vectors in ascending order.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..=255u8).filter(move |&v| self.contains(v))
    }
}

impl core::fmt::Debug for VectorSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|v| super::Hex(u64::from(v))))
            .finish()
    }
}

impl FromIterator<u8> for VectorSet {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
        let mut set = Self::new();
        for v in iter {
            set.insert(v);
        }
        set
    }
}
