//! Tearing the tables down, and checking the structural invariants.

use super::*;

impl<P: PhysToVirt, A: FrameAllocator> EptMapper<P, A> {
    /// Tears the hierarchy down: invalidates the mappings derived from this EPT through
    /// `invalidate`, then gives every table, the root included, back to the allocator, and
    /// returns the allocator. If the invalidation fails, the mapper comes back unchanged.
    ///
    /// # Safety
    ///
    /// No VMCS that will be used for a VM entry holds this EPTP any more (VMCLEAR'ed or given
    /// another EPTP): INVEPT drops cached translations, it cannot stop a later VM entry from
    /// walking the freed tables.
    pub unsafe fn destroy<I: EptInvalidate>(
        mut self,
        invalidate: &mut I,
    ) -> Result<A, (Self, I::Error)> {
        if let Err(e) = invalidate.invalidate(self.invept, self.eptp.bits()) {
            return Err((self, e));
        }
        let root = self.root;
        self.free_subtree(root, self.root_level());
        // SAFETY: every table came from `self.alloc`; no processor holds cached translations
        // of this EPT (the invalidation above) and no VM entry will load it (the caller's
        // promise).
        unsafe { self.pending.release(&self.p2v, &mut self.alloc) };
        Ok(self.alloc)
    }

    /// Checks the invariants the mapper keeps: every entry it wrote is well-formed for its
    /// level (no reserved bit, valid memory type, no write-without-read), large pages only
    /// where configured, no empty table below the root, and the table count. Returns the
    /// first violation as (guest-physical address, level).
    pub fn check_invariants(&self) -> Result<(), (GuestPhysAddr, Level)> {
        let mut count = 0;
        self.check_table(self.root, self.root_level(), 0, &mut count)?;
        if count != self.tables {
            return Err((GuestPhysAddr::ZERO, self.root_level()));
        }
        Ok(())
    }

    fn check_table(
        &self,
        frame: u64,
        level: Level,
        base: u64,
        count: &mut usize,
    ) -> Result<(), (GuestPhysAddr, Level)> {
        *count += 1;
        let mut present = 0;
        for idx in 0..512 {
            // SAFETY: `frame` is a table of ours.
            let e = unsafe { self.read(frame, idx) };
            let gpa = base + ((idx as u64) << level.shift());
            let bad = (GuestPhysAddr::new_truncate(gpa), level);
            if e & ACCESS_BITS == 0 {
                if e != 0 {
                    return Err(bad);
                }
                continue;
            }
            present += 1;
            let leaf = is_leaf(e, level);
            if leaf && !self.page_allowed(level) {
                return Err(bad);
            }
            if e & reserved_mask(level, leaf, self.config.phys_addr_width) != 0 {
                return Err(bad);
            }
            if e & 2 != 0 && e & 1 == 0 {
                return Err(bad);
            }
            if leaf {
                if MemoryType::from_bits(((e >> 3) & 7) as u8).is_err() {
                    return Err(bad);
                }
            } else {
                self.check_table(e & ADDRESS_MASK, level_below(level), gpa, count)?;
            }
        }
        if present == 0 && frame != self.root {
            return Err((GuestPhysAddr::new_truncate(base), level));
        }
        Ok(())
    }
}
