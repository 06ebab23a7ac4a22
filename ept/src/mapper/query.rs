//! Reading the tables: translation, software walks and iteration over mappings and tables.

use super::*;

impl<P: PhysToVirt, A: FrameAllocator> EptMapper<P, A> {
    /// Walks the tables in software: where `gpa` goes, with which rights and memory type, and
    /// by which page size. `None` if it is not mapped.
    #[inline]
    pub fn translate(&self, gpa: GuestPhysAddr) -> Option<Translation> {
        let gpa = gpa.as_u64();
        let mut frame = self.root;
        let mut shift = self.root_shift;
        loop {
            // SAFETY: `frame` is the root or was read from a present non-leaf entry of ours.
            let e = unsafe {
                self.table(frame)
                    .add(((gpa >> shift) & 0x1ff) as usize)
                    .read_volatile()
            };
            if e & ACCESS_BITS == 0 {
                return None;
            }
            if shift == 12 || e & PS != 0 {
                let size_mask = (1u64 << shift) - 1;
                let page_size = match shift {
                    12 => PageSize::Size4K,
                    21 => PageSize::Size2M,
                    _ => PageSize::Size1G,
                };
                return Some(Translation {
                    hpa: HostPhysAddr::new_truncate(
                        (e & ADDRESS_MASK & !size_mask) | (gpa & size_mask),
                    ),
                    page_size,
                    leaf: e,
                });
            }
            frame = e & ADDRESS_MASK;
            shift -= 9;
        }
    }

    /// A walker over these tables that applies the processor's misconfiguration rules (see
    /// [`crate::diagnose`]); pass [`EptMapper::entry_reader`] as its reader.
    pub fn walker(&self) -> EptWalker {
        EptWalker::from_parts(
            self.eptp,
            self.root_level(),
            self.config.caps,
            self.config.phys_addr_width,
        )
    }

    /// Reads the entry at a host-physical address inside one of this mapper's tables
    /// (`None` for any other address): the reader for [`EptMapper::walker`].
    pub fn entry_reader(&self) -> impl FnMut(HostPhysAddr) -> Option<u64> + '_ {
        move |addr: HostPhysAddr| {
            let frame = addr.as_u64() & !(PAGE - 1);
            let mut found = false;
            self.visit_tables(self.root, self.root_level(), &mut |t, _| {
                found |= t.as_u64() == frame
            });
            // SAFETY: `frame` is one of our tables; the offset is 8-aligned inside it.
            found.then(|| unsafe { self.read(frame, ((addr.as_u64() & (PAGE - 1)) / 8) as usize) })
        }
    }

    /// Calls `f` with every page mapping, in ascending guest-physical order.
    pub fn for_each_mapping(&self, mut f: impl FnMut(Mapping)) {
        self.visit(self.root, self.root_level(), 0, &mut f);
    }

    fn visit(&self, frame: u64, level: Level, base: u64, f: &mut impl FnMut(Mapping)) {
        for idx in 0..512 {
            // SAFETY: `frame` is a table of ours.
            let e = unsafe { self.read(frame, idx) };
            if e & ACCESS_BITS == 0 {
                continue;
            }
            let gpa = base + ((idx as u64) << level.shift());
            if is_leaf(e, level) {
                let page_size = level.page_size().unwrap_or(PageSize::Size4K);
                f(Mapping {
                    gpa: GuestPhysAddr::new_truncate(gpa),
                    hpa: HostPhysAddr::new_truncate(e & ADDRESS_MASK & !(page_size.bytes() - 1)),
                    page_size,
                    leaf: e,
                });
            } else {
                self.visit(e & ADDRESS_MASK, level_below(level), gpa, f);
            }
        }
    }

    /// Calls `f` with the host-physical address and level of every table, the root included.
    pub fn for_each_table(&self, mut f: impl FnMut(HostPhysAddr, Level)) {
        self.visit_tables(self.root, self.root_level(), &mut f);
    }

    fn visit_tables(&self, frame: u64, level: Level, f: &mut impl FnMut(HostPhysAddr, Level)) {
        f(HostPhysAddr::new_truncate(frame), level);
        if level == Level::Pt {
            return;
        }
        for idx in 0..512 {
            // SAFETY: `frame` is a table of ours.
            let e = unsafe { self.read(frame, idx) };
            if e & ACCESS_BITS != 0 && !is_leaf(e, level) {
                self.visit_tables(e & ADDRESS_MASK, level_below(level), f);
            }
        }
    }
}
