//! Mapping a range: planning the tables and frames it needs, then writing the leaves.

use super::*;

impl<P: PhysToVirt, A: FrameAllocator> EptMapper<P, A> {
    /// Maps `len` bytes of guest-physical memory at `gpa` to host-physical memory at `hpa`,
    /// with the largest pages that the alignment of both addresses, the length and the
    /// configuration allow.
    pub fn map(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len: u64,
        attrs: LeafAttributes,
    ) -> Result<EptFlush, MapError> {
        self.map_with_max_page(gpa, hpa, len, attrs, PageSize::Size1G)
    }

    /// Like [`EptMapper::map`], with pages no larger than `max_page`.
    pub fn map_with_max_page(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        len: u64,
        attrs: LeafAttributes,
        max_page: PageSize,
    ) -> Result<EptFlush, MapError> {
        let (s, hs) = (gpa.as_u64(), hpa.as_u64());
        let e = self.check_range(s, len)?;
        if !hs.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned {
                what: RangePart::HostPhysAddr,
                value: hs,
            });
        }
        // `EptMapper::new` refuses a width outside 12..=52: the shift is in range.
        let width = self.config.phys_addr_width;
        match hs.checked_add(len) {
            Some(he) if he <= 1 << width => {}
            _ => {
                return Err(MapError::BeyondWidth {
                    what: RangePart::HostPhysAddr,
                    end: hs.wrapping_add(len),
                    width,
                });
            }
        }
        self.check_attributes(&attrs)?;
        let op = MapOp {
            delta: hs.wrapping_sub(s),
            bits: attrs.to_bits(),
            max_level: match max_page.min(self.config.largest_page) {
                PageSize::Size4K => Level::Pt,
                PageSize::Size2M => Level::Pd,
                PageSize::Size1G => Level::Pdpt,
            },
        };
        let needed = self.plan_map(Some(self.root), self.root_level(), s, e, &op)?;
        let mut r = self.reserve(needed)?;
        self.apply_map(self.root, self.root_level(), s, e, &op, &mut r, false);
        self.release(r);
        Ok(self.new_flush())
    }

    #[inline(always)]
    fn leaf_here(&self, level: Level, op: &MapOp, es: u64, ee: u64, s: u64, e: u64) -> bool {
        level <= op.max_level
            && self.page_allowed(level)
            && s <= es
            && ee <= e
            && es.wrapping_add(op.delta) & (level.span() - 1) == 0
    }

    /// Checks for overlaps and counts new tables. `frame` is `None` for a table that does not
    /// exist yet.
    fn plan_map(
        &self,
        frame: Option<u64>,
        level: Level,
        s: u64,
        e: u64,
        op: &MapOp,
    ) -> Result<usize, MapError> {
        if level == Level::Pt {
            if let Some(frame) = frame {
                for idx in Level::Pt.index_of(s)..=Level::Pt.index_of(e - 1) {
                    // SAFETY: `frame` is a table of ours.
                    if unsafe { self.read(frame, idx) } & ACCESS_BITS != 0 {
                        let gpa = (s & !(Level::Pd.span() - 1)) | ((idx as u64) << 12);
                        return Err(MapError::AlreadyMapped {
                            gpa: GuestPhysAddr::new_truncate(gpa),
                            level,
                        });
                    }
                }
            }
            return Ok(0);
        }
        let span = level.span();
        let mut needed = 0;
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let ee = es + span;
            let pe = ee.min(e);
            let entry = match frame {
                // SAFETY: `frame` is a table of ours.
                Some(f) => unsafe { self.read(f, level.index_of(cur)) },
                None => 0,
            };
            if entry & ACCESS_BITS != 0 {
                if is_leaf(entry, level) {
                    return Err(MapError::AlreadyMapped {
                        gpa: GuestPhysAddr::new_truncate(cur),
                        level,
                    });
                }
                needed +=
                    self.plan_map(Some(entry & ADDRESS_MASK), level_below(level), cur, pe, op)?;
            } else if !self.leaf_here(level, op, es, ee, cur, e) {
                needed += 1 + self.plan_map(None, level_below(level), cur, pe, op)?;
            }
            cur = pe;
        }
        Ok(needed)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_map(
        &mut self,
        frame: u64,
        level: Level,
        s: u64,
        e: u64,
        op: &MapOp,
        r: &mut Reserve,
        fresh: bool,
    ) {
        if level == Level::Pt {
            let lo = Level::Pt.index_of(s);
            let hi = Level::Pt.index_of(e - 1) + 1;
            let first = (s.wrapping_add(op.delta) & ADDRESS_MASK) | op.bits;
            if fresh {
                // SAFETY: a fresh table is ours alone and not yet linked: plain writes.
                let t = unsafe { core::slice::from_raw_parts_mut(self.table(frame), 512) };
                for (i, slot) in t[lo..hi].iter_mut().enumerate() {
                    *slot = first + ((i as u64) << 12);
                }
            } else {
                for (i, idx) in (lo..hi).enumerate() {
                    // SAFETY: `frame` is a table of ours.
                    unsafe { self.write(frame, idx, first + ((i as u64) << 12)) };
                }
            }
            return;
        }
        let span = level.span();
        let mut cur = s;
        while cur < e {
            let es = cur & !(span - 1);
            let ee = es + span;
            let pe = ee.min(e);
            let idx = level.index_of(cur);
            let entry = if fresh {
                0
            } else {
                // SAFETY: `frame` is a table of ours.
                unsafe { self.read(frame, idx) }
            };
            if entry & ACCESS_BITS != 0 {
                self.apply_map(
                    entry & ADDRESS_MASK,
                    level_below(level),
                    cur,
                    pe,
                    op,
                    r,
                    false,
                );
            } else if self.leaf_here(level, op, es, ee, cur, e) {
                let leaf = (es.wrapping_add(op.delta) & ADDRESS_MASK) | op.bits | PS;
                // SAFETY: `frame` is a table of ours.
                unsafe { self.write(frame, idx, leaf) };
            } else {
                let child = self.take_table(r);
                let below = level_below(level);
                let whole_pt = below == Level::Pt && cur == es && pe == ee;
                if !whole_pt {
                    // SAFETY: the reserved frame is ours and unlinked.
                    unsafe { self.zero(child) };
                }
                self.apply_map(child, below, cur, pe, op, r, true);
                // SAFETY: `frame` is a table of ours; the child is complete before it is linked.
                unsafe { self.write(frame, idx, child | TABLE_BITS) };
            }
            cur = pe;
        }
    }
}

#[derive(Clone, Copy)]
struct MapOp {
    /// hpa - gpa (wrapping).
    delta: u64,
    /// Leaf attribute bits.
    bits: u64,
    /// The largest level at which a leaf may be written.
    max_level: Level,
}
