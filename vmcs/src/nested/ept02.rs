//! EPT for L2 when L1 uses EPT: EPT02 = EPT12 ∘ EPT01, filled page by page from the EPT
//! violations of L2.
//!
//! L2's guest-physical addresses go through L1's EPT (EPT12, tables in L1's memory, read as the
//! processor would read them) to L1-physical addresses, and those through L0's EPT for L1
//! (EPT01) to host-physical ones. EPT02 (the tables VMCS02 really uses, L0's) starts empty; at
//! each EPT violation of L2, [`resolve_ept_violation`] walks EPT12 for the address
//! ([`ept::EptWalker`], with L1's EPT capabilities): a page EPT12 refuses is L1's exit (an EPT
//! violation with EPT12's rights in the qualification, or an EPT misconfiguration,
//! [`Ept12Exit`]); otherwise EPT02 gets the 4-KiB page with the rights both allow. With
//! accessed and dirty flags enabled in EPTP12 (bit 6), the walk sets them in EPT12 as the
//! processor would (SDM 29.3.5), and a page whose dirty flag is clear is mapped without write
//! access so that the first write comes back to set it. With "enable PML" in VMCS12 as well,
//! L0 keeps L1's page-modification log ([`Pml12`], SDM 29.3.6): VMCS02 never enables PML, the
//! dirty flags of EPT12 are set only here, so this is where the log is written or a
//! page-modification log-full event becomes L1's exit ([`Ept02Resolution::PmlFull`]).
//!
//! L1's INVEPT invalidates what EPT02 derived from EPT12 ([`clear_ept02`]); so must any change
//! of EPT01 that concerns L1 memory L2 reaches.

use ept::diagnose::WalkOutcome;
use ept::{
    Access, EptFlush, EptMapper, EptPointer, EptWalker, FrameAllocator, GuestPhysAddr,
    HostPhysAddr, LeafAttributes, MapError, MemoryType, PageSize, Permissions, PhysToVirt,
};
use vmx_caps::EptVpidCap;

use super::GuestMemory;
use crate::{SoftVmcs, VmcsRead, fields};

/// Basic exit reason 48, EPT violation.
const EPT_VIOLATION: u32 = 48;
/// Basic exit reason 49, EPT misconfiguration.
const EPT_MISCONFIGURATION: u32 = 49;
/// EPT entry bit 8: accessed.
const ACCESSED: u64 = 1 << 8;
/// EPT entry bit 9: dirty (leaf entries).
const DIRTY: u64 = 1 << 9;
/// EPT entry bit 63: suppress #VE (with "EPT-violation #VE", SDM 26.5.7.1).
const SUPPRESS_VE: u64 = 1 << 63;
/// Bits of an EPT-violation qualification that describe the linear address and NMI unblocking
/// (7, 8, 9-11 advanced information, 12) and carry over from L2's exit to L1's.
const CARRIED_QUALIFICATION: u64 = 0x1f80;
/// Exit-qualification bit 12: NMI unblocking due to IRET, the only bit a page-modification
/// log-full exit defines (SDM Vol. 3C, 28.2.1 "Basic VM-Exit Information").
const NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;
/// Basic exit reason 62, page-modification log full.
const PML_FULL: u32 = 62;
/// Entries of a page-modification log: 512 of 8 bytes, one 4-KiB page.
const PML_ENTRIES: u16 = 512;

/// L1's page-modification log, as VMCS12 describes it when it has "enable PML" (SDM Vol. 3C,
/// 29.3.6 "Page-Modification Logging"): the log's L1-physical address and the PML index, the
/// entry the next logged address goes to. [`resolve_ept_violation`] logs into it and counts the
/// index down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pml12 {
    /// The "PML address" VM-execution control field (64 bits, encoding 200EH): the L1-physical
    /// address of the 4-KiB log, 512 entries of 8 bytes.
    pub address: u64,
    /// The "PML index" guest-state field (16 bits, encoding 0812H): the entry the next
    /// guest-physical address is written to; 0–511, anything else means the log is full.
    pub index: u16,
}

/// An exit EPT12 causes, for L0 to reflect to L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ept12Exit {
    /// The basic exit reason: 48 (EPT violation), 49 (EPT misconfiguration) or 62
    /// (page-modification log full).
    pub reason: u32,
    /// The exit qualification (0 for a misconfiguration): bits 2:0 the access, 5:3 the rights
    /// EPT12's walk granted (0 when an entry is not present), the linear-address bits (7-11)
    /// and NMI unblocking (12) from L2's exit. For a page-modification log-full event
    /// ([`Ept02Resolution::PmlFull`], reason 62) only bit 12, NMI unblocking due to IRET.
    pub qualification: u64,
    /// The guest-physical address (L2's) of the access. A page-modification log-full exit
    /// leaves the field undefined (SDM 28.2.1); L0 gives the address of the access there too.
    pub guest_physical: u64,
    /// Bit 63 ("suppress #VE") of the EPT12 entry that decides whether an EPT violation is
    /// convertible (SDM Vol. 3C, 26.5.7.1 "Convertible EPT Violations"): the entry that is not
    /// present, or the one that maps the page. Always true for a misconfiguration, which is
    /// never convertible.
    pub suppress_ve: bool,
}

impl Ept12Exit {
    /// The VM-exit information for [`super::L1VmxState::reflect_exit`]: `vmcs02`'s exit
    /// information fields with this exit's reason, qualification and guest-physical address.
    pub fn exit_info(&self, vmcs02: &(impl VmcsRead + ?Sized)) -> SoftVmcs {
        let mut info = SoftVmcs::all_fields();
        for &e in fields::encodings_of(crate::FieldType::ExitInformation) {
            if let Ok(v) = vmcs02.read_raw(e) {
                // Every field exists in `all_fields`.
                let _ = info.store(e, v);
            }
        }
        for (f, v) in [
            (fields::EXIT_REASON.encoding(), u64::from(self.reason)),
            (fields::EXIT_QUALIFICATION.encoding(), self.qualification),
            (
                fields::GUEST_PHYSICAL_ADDRESS.encoding(),
                self.guest_physical,
            ),
        ] {
            let _ = info.store(f, v);
        }
        info
    }
}

/// Where EPT01 (L0's translation of L1-physical addresses) takes a 4-KiB page of L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L1Page {
    /// The host-physical address of the page.
    pub host_physical: u64,
    /// The rights EPT01 grants.
    pub permissions: Permissions,
    /// EPT01's memory type for it.
    pub memory_type: MemoryType,
}

/// EPT01: L0's translation of L1-physical addresses, as [`resolve_ept_violation`] consults it;
/// implemented by an [`EptMapper`] (its software walk), or by an L0 that keeps L1's memory in
/// another form.
pub trait Ept01 {
    /// The page holding L1-physical `address`, `None` where EPT01 maps nothing.
    fn translate_l1(&self, address: u64) -> Option<L1Page>;
}

impl<P: PhysToVirt, A: FrameAllocator> Ept01 for EptMapper<P, A> {
    fn translate_l1(&self, address: u64) -> Option<L1Page> {
        let t = self.translate(GuestPhysAddr::new(address).ok()?)?;
        Some(L1Page {
            host_physical: t.hpa.as_u64() & !0xfff,
            permissions: t.permissions(),
            memory_type: t.memory_type().ok()?,
        })
    }
}

/// What an EPT violation of L2 comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Ept02Resolution {
    /// EPT02 now maps the 4-KiB page of the address: discharge `flush` with INVEPT on EPT02
    /// (an earlier mapping of the page may be cached) and resume L2.
    Mapped {
        /// The pending invalidation of EPT02.
        flush: EptFlush,
        /// The L1-physical address EPT12 gave.
        l1_physical: u64,
        /// The host-physical address EPT01 gave.
        host_physical: u64,
        /// The rights EPT02 grants for the page.
        permissions: Permissions,
    },
    /// EPT12 refuses the access: reflect this exit to L1.
    Reflect(Ept12Exit),
    /// A page-modification log-full event (SDM 29.3.6): VMCS12 has "enable PML", the access
    /// needs an accessed or dirty flag of EPT12 set and the PML index is not in 0–511. No flag
    /// was set, nothing was logged or mapped and the access did not happen: reflect this exit
    /// (reason 62, the qualification's bit 12 from L2's exit) to L1.
    PmlFull(Ept12Exit),
    /// EPT12 allows the access but EPT01 does not (no mapping, or fewer rights, e.g. memory
    /// L0 emulates for L1): L0 handles it as L1's own access to `l1_physical`.
    L1Access {
        /// The L1-physical address.
        l1_physical: u64,
    },
}

/// The rights an access needs.
fn needed(access: Access) -> Permissions {
    let mut p = Permissions::empty();
    if access.contains(Access::DATA_READ) {
        p |= Permissions::READ;
    }
    if access.contains(Access::DATA_WRITE) {
        p |= Permissions::WRITE;
    }
    if access.contains(Access::INSTRUCTION_FETCH) {
        p |= Permissions::EXECUTE;
    }
    p
}

/// Resolves an EPT violation of L2 at L2-physical `l2_physical` with exit qualification
/// `qualification` (VMCS02's), when VMCS12 enables EPT with `eptp12`: walks EPT12 in L1's
/// memory `l1_memory` under L1's EPT capabilities `l1_ept` and physical-address width
/// `l1_width` (an entry outside L1's memory reads as all ones, which is a misconfiguration),
/// then EPT01 (`ept01`), and maps the page in `ept02`. The memory type of the EPT02 page is UC
/// when either EPT says UC, else EPT01's. With accessed and dirty flags enabled in EPTP12 (bit
/// 6), the walk sets them in EPT12 as the processor would (SDM 29.3.5), and a page whose dirty
/// flag is clear is mapped without write access so that the first write comes back to set it.
///
/// `pml` is L1's page-modification log when VMCS12 has "enable PML" (`None` without), with the
/// live PML index (while L2 runs, VMCS02's copy of the field). It matters only with accessed
/// and dirty flags enabled in EPTP12, and follows SDM 29.3.6 "Page-Modification Logging":
/// - when the access needs an accessed or dirty flag set in EPT12 and the index is not in
///   0–511, the result is a page-modification log-full event ([`Ept02Resolution::PmlFull`]):
///   no flag is set, nothing is logged or mapped;
/// - otherwise the flags are set and, where a dirty flag went from 0 to 1, the guest-physical
///   address of the access with bits 11:0 cleared is written to entry `index` of the log (8
///   bytes at `address + 8 * index` in L1's memory) and the index decremented (0 wraps to
///   FFFFH, a full log). A log entry outside L1's memory is written as a processor writes
///   physical memory nothing backs: the write is dropped, and the index still counts down and
///   the dirty flag is still set (the SDM gives the log no check beyond VM entry's, which
///   requires a 4-KiB aligned address within the physical-address width, 27.2.1.1).
///
/// # Errors
///
/// [`MapError`] when EPT02 cannot take the mapping (no table frames left).
#[allow(clippy::too_many_arguments)]
pub fn resolve_ept_violation<E, P2, A2, M>(
    eptp12: u64,
    l1_ept: EptVpidCap,
    l1_width: u8,
    l2_physical: u64,
    qualification: u64,
    l1_memory: &mut M,
    ept01: &E,
    ept02: &mut EptMapper<P2, A2>,
    pml: Option<&mut Pml12>,
) -> Result<Ept02Resolution, MapError>
where
    E: Ept01 + ?Sized,
    P2: PhysToVirt,
    A2: FrameAllocator,
    M: GuestMemory + ?Sized,
{
    let access = Access::from_exit_qualification(qualification);
    let misconfiguration = Ept02Resolution::Reflect(Ept12Exit {
        reason: EPT_MISCONFIGURATION,
        qualification: 0,
        guest_physical: l2_physical,
        suppress_ve: true,
    });
    let violation = |granted: Permissions, entry: u64| {
        Ept02Resolution::Reflect(Ept12Exit {
            reason: EPT_VIOLATION,
            qualification: u64::from(access.bits())
                | (granted.to_entry_bits() & 7) << 3
                | (qualification & CARRIED_QUALIFICATION),
            guest_physical: l2_physical,
            suppress_ve: entry & SUPPRESS_VE != 0,
        })
    };
    let eptp = EptPointer::from_bits(eptp12);
    let (Ok(walker), Ok(gpa)) = (
        EptWalker::new(eptp, l1_ept, l1_width),
        GuestPhysAddr::new(l2_physical),
    ) else {
        return Ok(misconfiguration);
    };
    let read = |at: HostPhysAddr, mem: &mut M| {
        let mut bytes = [0xffu8; 8];
        if mem.read(at.as_u64(), &mut bytes).is_err() {
            bytes = [0xff; 8];
        }
        Some(u64::from_le_bytes(bytes))
    };
    let walk = walker.walk(gpa, |at| read(at, l1_memory));
    let (l1_physical, granted, memory_type12) = match walk.outcome {
        WalkOutcome::Translated {
            hpa,
            permissions,
            memory_type,
            ..
        } => (hpa.as_u64(), permissions, memory_type),
        WalkOutcome::NotPresent { entry, .. } => {
            return Ok(violation(Permissions::empty(), entry));
        }
        WalkOutcome::Misconfigured(_) | WalkOutcome::Unreadable { .. } => {
            return Ok(misconfiguration);
        }
    };
    if !granted.contains(needed(access)) {
        // The entry that maps the page: the walk's last.
        let leaf = walk.steps().last().map_or(SUPPRESS_VE, |step| step.entry);
        return Ok(violation(granted, leaf));
    }

    // Accessed and dirty flags of EPT12 (SDM 29.3.5), and the page-modification log (29.3.6).
    let mut writable = granted.contains(Permissions::WRITE);
    if eptp.bits() & (1 << 6) != 0 {
        // Each entry of the walk with the flags this access sets: (address, before, after).
        let mut updates = [(0u64, 0u64, 0u64); 5];
        let mut count = 0;
        for (slot, step) in updates.iter_mut().zip(walk.steps()) {
            *slot = (
                step.entry_address.as_u64(),
                step.entry,
                step.entry | ACCESSED,
            );
            count += 1;
        }
        let updates = &mut updates[..count];
        let mut dirtied = false;
        if let Some((_, before, after)) = updates.last_mut() {
            if access.contains(Access::DATA_WRITE) {
                *after |= DIRTY;
                dirtied = *before & DIRTY == 0;
            }
            if *after & DIRTY == 0 {
                writable = false;
            }
        }
        // Before a flag is set, the PML index is examined: outside 0–511 the log is full.
        let sets_a_flag = updates.iter().any(|(_, before, after)| before != after);
        if sets_a_flag
            && let Some(pml) = &pml
            && pml.index >= PML_ENTRIES
        {
            return Ok(Ept02Resolution::PmlFull(Ept12Exit {
                reason: PML_FULL,
                qualification: qualification & NMI_UNBLOCKED_BY_IRET,
                guest_physical: l2_physical,
                suppress_ve: true,
            }));
        }
        for (at, before, after) in updates.iter() {
            if before != after {
                // A write outside L1's memory is dropped, as to unbacked memory.
                let _ = l1_memory.write(*at, &after.to_le_bytes());
            }
        }
        // A dirty flag set (0 to 1): the page is logged, the index counts down.
        if dirtied && let Some(pml) = pml {
            let entry = pml.address.wrapping_add(8 * u64::from(pml.index));
            // Outside L1's memory the entry is dropped, as a write to unbacked memory.
            let _ = l1_memory.write(entry, &(l2_physical & !0xfff).to_le_bytes());
            pml.index = pml.index.wrapping_sub(1);
        }
    }

    // EPT01 for the L1-physical page.
    let l1_page = l1_physical & !0xfff;
    let Some(t01) = ept01.translate_l1(l1_page) else {
        return Ok(Ept02Resolution::L1Access { l1_physical });
    };
    if !t01.permissions.contains(needed(access)) {
        return Ok(Ept02Resolution::L1Access { l1_physical });
    }
    let mut permissions = granted & t01.permissions & Permissions::RWX;
    if !writable {
        permissions -= Permissions::WRITE;
    }
    let memory_type = match (memory_type12, t01.memory_type) {
        (MemoryType::Uncacheable, _) | (_, MemoryType::Uncacheable) => MemoryType::Uncacheable,
        (_, mt) => mt,
    };
    let page = GuestPhysAddr::new_truncate(l2_physical & !0xfff);
    let host_page = t01.host_physical & !0xfff;
    let mut pending: Option<EptFlush> = None;
    if ept02.translate(page).is_some() {
        pending = Some(ept02.unmap(page, PageSize::Size4K.bytes())?);
    }
    let flush = ept02.map_with_max_page(
        page,
        HostPhysAddr::new_truncate(host_page),
        PageSize::Size4K.bytes(),
        LeafAttributes::new(permissions, memory_type),
        PageSize::Size4K,
    )?;
    let flush = match pending {
        // Tokens of one mapper always combine.
        Some(earlier) => earlier.combine(flush).unwrap_or_else(|(a, _)| a),
        None => flush,
    };
    Ok(Ept02Resolution::Mapped {
        flush,
        l1_physical,
        host_physical: host_page | (l2_physical & 0xfff),
        permissions,
    })
}

/// Removes every mapping of EPT02, as L1's INVEPT (of any type: EPT02 holds only the
/// translations of L1's current EPTP12) requires; `None` when EPT02 was already empty, else the
/// invalidation to discharge before L2 runs again.
///
/// # Errors
///
/// [`MapError`] from the mapper (a split of a large page that needs a table frame; EPT02 holds
/// only 4-KiB pages from [`resolve_ept_violation`], so none).
pub fn clear_ept02<P, A>(ept02: &mut EptMapper<P, A>) -> Result<Option<EptFlush>, MapError>
where
    P: PhysToVirt,
    A: FrameAllocator,
{
    let mut pending: Option<EptFlush> = None;
    loop {
        let mut batch = [None; 64];
        let mut n = 0;
        ept02.for_each_mapping(|m| {
            if n < batch.len() {
                batch[n] = Some((m.gpa, m.page_size.bytes()));
                n += 1;
            }
        });
        if n == 0 {
            return Ok(pending);
        }
        for (gpa, len) in batch.iter().flatten() {
            let flush = ept02.unmap(*gpa, *len)?;
            pending = Some(match pending {
                Some(p) => p.combine(flush).unwrap_or_else(|(a, _)| a),
                None => flush,
            });
        }
    }
}
