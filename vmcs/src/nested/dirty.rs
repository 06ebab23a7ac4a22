//! Which fields of VMCS12 L1 changed since L0 last took them: what L0 must carry into a VMCS02
//! it keeps across L1's VMRESUMEs instead of building it again.

use crate::FieldInfo;
use crate::field::HIGH_ACCESS;
use crate::fields;

const WORDS: usize = fields::COUNT.div_ceil(64);

/// A set of VMCS12 fields L1 changed ([`super::L1VmxState::take_dirty`]): by VMWRITE, through
/// the shadow VMCS ([`super::L1VmxState::sync_from_shadow`]), or every field at once when the
/// VMCS became current (VMPTRLD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyFields {
    words: [u64; WORDS],
    all: bool,
}

impl Default for DirtyFields {
    fn default() -> Self {
        Self::none()
    }
}

impl DirtyFields {
    /// No field changed.
    pub const fn none() -> Self {
        Self {
            words: [0; WORDS],
            all: false,
        }
    }

    /// Every field counts as changed.
    pub const fn all() -> Self {
        Self {
            words: [0; WORDS],
            all: true,
        }
    }

    /// Whether every field counts as changed.
    pub const fn is_all(&self) -> bool {
        self.all
    }

    /// Whether no field changed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.words.iter().all(|&w| w == 0)
    }

    /// Marks the field with encoding `encoding` (a high-half encoding marks its field); an
    /// encoding that names no field is ignored.
    pub fn mark(&mut self, encoding: u32) {
        if let Some(i) = fields::position(encoding & !HIGH_ACCESS) {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    /// Whether the field with encoding `encoding` (or its high half) changed.
    pub fn contains(&self, encoding: u32) -> bool {
        self.all
            || fields::position(encoding & !HIGH_ACCESS)
                .is_some_and(|i| self.words[i / 64] & (1 << (i % 64)) != 0)
    }

    /// The changed fields, in the order of [`fields::ALL`] (every field for [`Self::all`]).
    pub fn iter(&self) -> impl Iterator<Item = &'static FieldInfo> + '_ {
        (0..WORDS)
            .flat_map(move |w| {
                let mut bits = if self.all { u64::MAX } else { self.words[w] };
                core::iter::from_fn(move || {
                    if bits == 0 {
                        return None;
                    }
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    Some(64 * w + bit)
                })
            })
            .filter_map(|i| fields::ALL.get(i))
    }
}
