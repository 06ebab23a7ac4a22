//! Changing page sizes: splitting a large page (with or without break-before-make) and merging
//! tables back into large pages.

use super::*;

impl<P: PhysToVirt, A: FrameAllocator> EptMapper<P, A> {
    /// Splits the large page that maps `gpa` into pages of the next smaller size with the same
    /// attributes (1 GiB into 2 MiB, 2 MiB into 4 KiB; 1 GiB into 4 KiB where the processor
    /// allows 1-GiB but not 2-MiB pages).
    pub fn split(&mut self, gpa: GuestPhysAddr) -> Result<EptFlush, MapError> {
        let g = gpa.as_u64();
        self.check_range(g & !(PAGE - 1), PAGE)?;
        let mut frame = self.root;
        let mut level = self.root_level();
        loop {
            let idx = level.index_of(g);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, idx) };
            if entry & ACCESS_BITS == 0 {
                return Err(MapError::NotMapped { gpa });
            }
            if is_leaf(entry, level) {
                if level == Level::Pt {
                    return Err(MapError::NotLargePage { gpa });
                }
                let mut r = self.reserve(self.split_tables(level))?;
                let child = self.split_entry(entry, level, &mut r);
                // SAFETY: `frame` is a table of ours; the child is complete.
                unsafe { self.write(frame, idx, child | TABLE_BITS) };
                self.release(r);
                return Ok(self.new_flush());
            }
            frame = entry & ADDRESS_MASK;
            level = level_below(level);
        }
    }

    /// [`EptMapper::split`] for a page the guest may be executing from on other processors, in
    /// break-before-make order (see [`crate::shootdown`]): takes execute access (bits 2 and 10)
    /// away from the large page and invalidates through `invalidate`, splits and invalidates,
    /// then gives execute access back and invalidates. No processor can hold instruction-TLB
    /// entries of both sizes for the page (the iTLB-multihit erratum). A page without execute
    /// access is simply split (and invalidated). If the split fails (out of frames), execute
    /// access is restored before the error is returned.
    pub fn split_break_before_make<I: EptInvalidate>(
        &mut self,
        gpa: GuestPhysAddr,
        invalidate: &mut I,
    ) -> Result<(), BreakBeforeMakeError<I::Error>> {
        let t = self.translate(gpa).ok_or(MapError::NotMapped { gpa })?;
        if t.page_size == PageSize::Size4K {
            return Err(MapError::NotLargePage { gpa }.into());
        }
        let base = GuestPhysAddr::new_truncate(gpa.as_u64() & !(t.page_size.bytes() - 1));
        let len = t.page_size.bytes();
        let attrs =
            LeafAttributes::from_leaf_bits(t.leaf).map_err(|_| MapError::NotMapped { gpa })?;
        let execute = Permissions::EXECUTE | Permissions::USER_EXECUTE;
        let executable = attrs.permissions.intersects(execute);
        if executable {
            if !attrs.permissions.contains(Permissions::READ) {
                return Err(BreakBeforeMakeError::ExecuteOnly(attrs.permissions));
            }
            let no_exec = LeafAttributes {
                permissions: attrs.permissions - execute,
                ..attrs
            };
            let f = self.protect(base, len, no_exec)?;
            self.flush(f, invalidate)?;
        }
        match self.split(gpa) {
            Ok(f) => self.flush(f, invalidate)?,
            Err(e) => {
                if executable {
                    let f = self.protect(base, len, attrs)?;
                    self.flush(f, invalidate)?;
                }
                return Err(e.into());
            }
        }
        if executable {
            let f = self.protect(base, len, attrs)?;
            self.flush(f, invalidate)?;
        }
        Ok(())
    }

    /// Replaces every table that lies wholly within `len` bytes at `gpa` and whose 512 leaves
    /// map one contiguous, suitably aligned host range with identical attributes by one large
    /// leaf, where the configuration allows that page size; repeats upwards (4 KiB → 2 MiB →
    /// 1 GiB). Accessed and dirty flags of the merged leaves are combined. Leaves with sub-page
    /// write permissions are never merged. Returns the number of merges with the flush.
    pub fn merge(&mut self, gpa: GuestPhysAddr, len: u64) -> Result<(EptFlush, usize), MapError> {
        let s = gpa.as_u64();
        let e = self.check_range(s, len)?;
        let merged = self.apply_merge(self.root, self.root_level(), s, e);
        Ok((self.new_flush(), merged))
    }

    fn apply_merge(&mut self, frame: u64, level: Level, s: u64, e: u64) -> usize {
        if level == Level::Pt {
            return 0;
        }
        let span = level.span();
        let mut merged = 0;
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let pe = (es + span).min(e);
            let idx = level.index_of(cur);
            // SAFETY: `frame` is a table of ours.
            let entry = unsafe { self.read(frame, idx) };
            if entry & ACCESS_BITS != 0 && !is_leaf(entry, level) {
                let child = entry & ADDRESS_MASK;
                merged += self.apply_merge(child, level_below(level), cur, pe);
                let whole = cur == es && pe == es + span;
                if let Some(leaf) = self
                    .mergeable(child, level)
                    .filter(|_| whole && self.page_allowed(level))
                {
                    // SAFETY: `frame` is a table of ours; the child is unlinked, then freed.
                    unsafe {
                        self.write(frame, idx, leaf);
                        self.defer_free(child);
                    }
                    merged += 1;
                }
            }
            cur = pe;
        }
        merged
    }

    /// The large leaf at `level` equivalent to the table `child`, if there is one.
    fn mergeable(&self, child: u64, level: Level) -> Option<u64> {
        let below = level_below(level);
        // SAFETY: `child` is a table of ours.
        let first = unsafe { self.read(child, 0) };
        if first & ACCESS_BITS == 0 || !is_leaf(first, below) {
            return None;
        }
        let base = first & ADDRESS_MASK;
        if base & (level.span() - 1) != 0 {
            return None;
        }
        let attrs = first & LEAF_ATTR_MASK;
        let mut ad = 0;
        for i in 0..512u64 {
            // SAFETY: `child` is a table of ours.
            let x = unsafe { self.read(child, i as usize) };
            let ok = x & ACCESS_BITS != 0
                && is_leaf(x, below)
                && x & LEAF_ATTR_MASK == attrs
                && x & ADDRESS_MASK == base + i * below.span()
                && (below != Level::Pt || x & SPP == 0);
            if !ok {
                return None;
            }
            ad |= x & AD;
        }
        Some(base | attrs | ad | PS)
    }
}
