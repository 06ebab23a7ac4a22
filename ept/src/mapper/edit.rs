//! Unmapping and changing the rights of a range: one walk shared by both edits.

use super::*;

impl<P: PhysToVirt, A: FrameAllocator> EptMapper<P, A> {
    /// Removes every mapping in `len` bytes at `gpa`; the whole range must be mapped. Large
    /// pages that straddle an end of the range are split first; tables that become empty are
    /// freed once the returned flush has run.
    pub fn unmap(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<EptFlush, MapError> {
        let s = gpa.as_u64();
        let e = self.check_range(s, len)?;
        let needed = self.plan_edit(self.root, self.root_level(), s, e)?;
        let mut r = self.reserve(needed)?;
        self.apply_edit(self.root, self.root_level(), s, e, Edit::Unmap, &mut r);
        self.release(r);
        Ok(self.new_flush())
    }

    /// Changes permissions, memory type and leaf flags of every page in `len` bytes at `gpa`;
    /// the whole range must be mapped. Large pages that straddle an end of the range are split
    /// first, so that pages outside keep their attributes.
    pub fn protect(
        &mut self,
        gpa: GuestPhysAddr,
        len: u64,
        attrs: LeafAttributes,
    ) -> Result<EptFlush, MapError> {
        let s = gpa.as_u64();
        let e = self.check_range(s, len)?;
        self.check_attributes(&attrs)?;
        let needed = self.plan_edit(self.root, self.root_level(), s, e)?;
        let mut r = self.reserve(needed)?;
        let bits = attrs.to_bits();
        self.apply_edit(
            self.root,
            self.root_level(),
            s,
            e,
            Edit::Protect(bits),
            &mut r,
        );
        self.release(r);
        Ok(self.new_flush())
    }

    /// Checks that [s, e) is wholly mapped and counts the tables that splitting its edges needs.
    fn plan_edit(&self, frame: u64, level: Level, s: u64, e: u64) -> Result<usize, MapError> {
        let span = level.span();
        let mut needed = 0;
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let pe = (es + span).min(e);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, level.index_of(cur)) };
            if entry & ACCESS_BITS == 0 {
                return Err(MapError::NotMapped {
                    gpa: GuestPhysAddr::new_truncate(cur),
                });
            }
            if is_leaf(entry, level) {
                if cur != es || pe != es + span {
                    needed += self.split_cost(level, cur, pe);
                }
            } else {
                needed += self.plan_edit(entry & ADDRESS_MASK, level_below(level), cur, pe)?;
            }
            cur = pe;
        }
        Ok(needed)
    }

    /// Tables needed to split a large leaf at `level` so that [s, e) (inside it) is covered by
    /// whole leaves.
    fn split_cost(&self, level: Level, s: u64, e: u64) -> usize {
        let below = level_below(level);
        if below == Level::Pt || !self.page_allowed(below) {
            return self.split_tables(level);
        }
        let span = below.span();
        let mut n = 1;
        if s & (span - 1) != 0 {
            n += 1;
        }
        if e & (span - 1) != 0 && (s & !(span - 1) != (e - 1) & !(span - 1) || s & (span - 1) == 0)
        {
            n += 1;
        }
        n
    }

    /// Tables that splitting one large leaf at `level` takes: one, or for a 1-GiB page where
    /// 2-MiB pages are not allowed, a page directory and its 512 page tables.
    pub(super) fn split_tables(&self, level: Level) -> usize {
        let below = level_below(level);
        if below != Level::Pt && !self.page_allowed(below) {
            513
        } else {
            1
        }
    }

    /// Replaces the large leaf `entry` at `level` with a table of next-lower leaves, or, for a
    /// 1-GiB page where 2-MiB pages are not allowed, with a page directory of 512 page tables of
    /// 4-KiB leaves.
    pub(super) fn split_entry(&mut self, entry: u64, level: Level, r: &mut Reserve) -> u64 {
        let below = level_below(level);
        if below != Level::Pt && !self.page_allowed(below) {
            let child = self.take_table(r);
            let base = entry & ADDRESS_MASK & !(level.span() - 1);
            for i in 0..512u64 {
                // A 2-MiB leaf with this one's attributes, split in turn into a page table.
                let leaf = (entry & !ADDRESS_MASK) | (base + i * below.span());
                let pt = self.split_entry(leaf, below, r);
                // SAFETY: the reserved frame `child` is ours and unlinked.
                unsafe { self.write(child, i as usize, pt | TABLE_BITS) };
            }
            return child;
        }
        let child = self.take_table(r);
        let step = below.span();
        let keep = if below == Level::Pt {
            entry & !(ADDRESS_MASK | PS | SPP)
        } else {
            entry & !(ADDRESS_MASK | SPP)
        };
        let base = entry & ADDRESS_MASK & !(level.span() - 1);
        // SAFETY: the reserved frame is ours and unlinked.
        let t = unsafe { core::slice::from_raw_parts_mut(self.table(child), 512) };
        for (i, slot) in t.iter_mut().enumerate() {
            *slot = keep | (base + i as u64 * step);
        }
        child
    }

    fn apply_edit(
        &mut self,
        frame: u64,
        level: Level,
        s: u64,
        e: u64,
        edit: Edit,
        r: &mut Reserve,
    ) {
        let span = level.span();
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let pe = (es + span).min(e);
            let whole = cur == es && pe == es + span;
            let idx = level.index_of(cur);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, idx) };
            if is_leaf(entry, level) && whole {
                let new = match edit {
                    Edit::Unmap => 0,
                    Edit::Protect(bits) => (entry & !LEAF_ATTR_MASK) | bits,
                };
                // SAFETY: `frame` is a table of ours.
                unsafe { self.write(frame, idx, new) };
            } else if whole && matches!(edit, Edit::Unmap) {
                // SAFETY: `frame` is a table of ours; the subtree is unlinked before it is freed.
                unsafe { self.write(frame, idx, 0) };
                self.free_subtree(entry & ADDRESS_MASK, level_below(level));
            } else {
                let child = if is_leaf(entry, level) {
                    let child = self.split_entry(entry, level, r);
                    // SAFETY: `frame` is a table of ours; the child is complete.
                    unsafe { self.write(frame, idx, child | TABLE_BITS) };
                    child
                } else {
                    entry & ADDRESS_MASK
                };
                self.apply_edit(child, level_below(level), cur, pe, edit, r);
                if matches!(edit, Edit::Unmap) && self.is_empty(child) {
                    // SAFETY: `frame` is a table of ours; the child is unlinked, then freed.
                    unsafe {
                        self.write(frame, idx, 0);
                        self.defer_free(child);
                    }
                }
            }
            cur = pe;
        }
    }

    fn is_empty(&self, frame: u64) -> bool {
        // SAFETY: `frame` is a table of ours.
        (0..512).all(|i| unsafe { self.read(frame, i) } & ACCESS_BITS == 0)
    }

    pub(super) fn free_subtree(&mut self, frame: u64, level: Level) {
        if level != Level::Pt {
            for idx in 0..512 {
                // SAFETY: `frame` is a table of ours.
                let e = unsafe { self.read(frame, idx) };
                if e & ACCESS_BITS != 0 && !is_leaf(e, level) {
                    self.free_subtree(e & ADDRESS_MASK, level_below(level));
                }
            }
        }
        // SAFETY: the subtree was unlinked by the caller.
        unsafe { self.defer_free(frame) };
    }
}

#[derive(Clone, Copy)]
enum Edit {
    Unmap,
    Protect(u64),
}
