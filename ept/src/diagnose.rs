//! Explaining EPT-induced VM exits: which entry of the walk for a guest-physical address causes
//! an EPT misconfiguration and by which rule (SDM Vol. 3C §29.3.3.1 "EPT Misconfigurations"),
//! or which access right was missing at which level for an EPT violation (§29.3.3.2 "EPT
//! Violations").
//!
//! The walker reads entries through a closure, so it works on any tables: the mapper's, a
//! guest's nested tables, or a memory dump.

use core::fmt;

use vmx_caps::EptVpidCap;

use crate::EptPointer;
use crate::entry::{ADDRESS_MASK, EntryFlags, reserved_mask};
use crate::{GuestPhysAddr, HostPhysAddr};
use crate::{Level, MemoryType, PageSize, Permissions, ReservedWalkLength};

bitflags::bitflags! {
    /// The kind of access that met the EPT, as in bits 2:0 of the exit qualification for EPT
    /// violations (SDM Vol. 3C Table 28-7 "Exit Qualification for EPT Violations").
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Access: u8 {
        /// Bit 0: a data read (reads of guest paging structures included).
        const DATA_READ = 1 << 0;
        /// Bit 1: a data write (A/D updates of guest paging structures included).
        const DATA_WRITE = 1 << 1;
        /// Bit 2: an instruction fetch.
        const INSTRUCTION_FETCH = 1 << 2;
    }
}

vmx_caps::serde_as_bits!(Access);

impl Access {
    /// The access bits (2:0) of an EPT-violation exit qualification; the other bits are
    /// ignored.
    pub const fn from_exit_qualification(qualification: u64) -> Self {
        Self::from_bits_truncate((qualification & 7) as u8)
    }
}

/// The rule of SDM §29.3.3.1 an entry breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MisconfigRule {
    /// Bits 2:0 are 010b (write-only) or 110b (write/execute): write without read.
    WriteWithoutRead,
    /// Bits 2:0 are 100b (execute-only), which the processor does not support
    /// (IA32_VMX_EPT_VPID_CAP bit 0 is 0).
    ExecuteOnlyNotSupported,
    /// Under mode-based execute control for EPT, bit 0 (read) is clear and bit 10 (execute
    /// access for user-mode linear addresses) is set: a user-execute-only translation, which
    /// the processor does not support (IA32_VMX_EPT_VPID_CAP bit 0 is 0).
    UserExecuteOnlyNotSupported,
    /// Bit 7 is set in an entry at a level that cannot map a page on this processor: always
    /// for PML5Es and PML4Es, for PDPTEs without 1-GByte page support (IA32_VMX_EPT_VPID_CAP
    /// bit 17), for PDEs without 2-MByte page support (bit 16).
    LargePageNotAllowed,
    /// Reserved bits are set (the mask), including address bits at or above the
    /// physical-address width.
    ReservedBits(u64),
    /// The last entry of the walk has memory type 2, 3 or 7 in bits 5:3.
    ReservedMemoryType(u8),
}

impl fmt::Display for MisconfigRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WriteWithoutRead => {
                f.write_str("bits 2:0 allow write without read (010b or 110b)")
            }
            Self::ExecuteOnlyNotSupported => f.write_str(
                "bits 2:0 are 100b (execute-only), unsupported (IA32_VMX_EPT_VPID_CAP[0] = 0)",
            ),
            Self::UserExecuteOnlyNotSupported => f.write_str(
                "bit 0 (read) is clear and bit 10 (user-mode execute) set under mode-based \
                 execute control: execute-only, unsupported (IA32_VMX_EPT_VPID_CAP[0] = 0)",
            ),
            Self::LargePageNotAllowed => {
                f.write_str("bit 7 (page size) is set where this processor cannot map a page")
            }
            Self::ReservedBits(m) => write!(f, "reserved bits {m:#x} are set"),
            Self::ReservedMemoryType(t) => write!(f, "memory type {t} in bits 5:3 is reserved"),
        }
    }
}

/// An entry that causes an EPT misconfiguration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Misconfiguration {
    /// The level of the entry.
    pub level: Level,
    /// The host-physical address of the entry.
    pub entry_address: HostPhysAddr,
    /// The entry's value.
    pub entry: u64,
    /// The rule it breaks.
    pub rule: MisconfigRule,
}

impl fmt::Display for Misconfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EPT misconfiguration: {} at {:#x} = {:#018x}: {}",
            self.level,
            self.entry_address.as_u64(),
            self.entry,
            self.rule
        )
    }
}

/// Why an access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ViolationReason {
    /// The entry is not present (bits 2:0 are 000b, and bit 10 is 0 under mode-based execute
    /// control).
    NotPresent,
    /// The entry lacks these access rights for the access.
    Missing(Permissions),
}

/// The entry that causes an EPT violation: the first one of the walk that refuses the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Violation {
    /// The level of the entry.
    pub level: Level,
    /// The host-physical address of the entry.
    pub entry_address: HostPhysAddr,
    /// The entry's value.
    pub entry: u64,
    /// What it lacks.
    pub reason: ViolationReason,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EPT violation: {} at {:#x} = {:#018x}: ",
            self.level,
            self.entry_address.as_u64(),
            self.entry
        )?;
        match self.reason {
            ViolationReason::NotPresent => f.write_str("not present"),
            ViolationReason::Missing(p) => write!(f, "missing {p:?}"),
        }
    }
}

/// Where a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WalkOutcome {
    /// The address translates.
    Translated {
        /// The host-physical address.
        hpa: HostPhysAddr,
        /// The page size.
        page_size: PageSize,
        /// The access rights granted: the intersection over every entry of the walk.
        permissions: Permissions,
        /// The leaf's EPT memory type.
        memory_type: MemoryType,
    },
    /// An entry is not present: every access causes an EPT violation.
    NotPresent {
        /// The level of the not-present entry.
        level: Level,
        /// Its host-physical address.
        entry_address: HostPhysAddr,
        /// Its value.
        entry: u64,
    },
    /// An entry causes an EPT misconfiguration.
    Misconfigured(Misconfiguration),
    /// The read callback could not read the entry at this address.
    Unreadable {
        /// The level of the entry.
        level: Level,
        /// Its host-physical address.
        entry_address: HostPhysAddr,
    },
}

/// One step of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct WalkStep {
    /// The level.
    pub level: Level,
    /// The host-physical address of the entry.
    pub entry_address: HostPhysAddr,
    /// The entry's value.
    pub entry: u64,
}

/// A walk: the entries read, root first, and where it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Walk {
    steps: [Option<WalkStep>; 5],
    /// Where the walk ended.
    pub outcome: WalkOutcome,
}

impl Walk {
    /// The entries read, root first.
    pub fn steps(&self) -> impl Iterator<Item = &WalkStep> {
        self.steps.iter().flatten()
    }
}

/// Walks EPT paging structures the way the processor does, checking each entry against the
/// misconfiguration rules of the processor described by its capabilities.
///
/// ```
/// use ept::{Access, EptPointer, EptWalker, GuestPhysAddr, Level, MisconfigRule, Permissions, ViolationReason};
/// use vmx_caps::EptVpidCap;
///
/// // A 4-level hierarchy in a "memory dump": PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000.
/// let mut pd_entry = 0x0020_0000 | 0x80 | (6 << 3) | 0b001; // 2-MiB page, WB, read-only
/// let read = |pd_entry: u64| move |a: ept::HostPhysAddr| match a.as_u64() {
///     0x1000 => Some(0x2007),
///     0x2000 => Some(0x3007),
///     0x3008 => Some(pd_entry),
///     _ => Some(0),
/// };
/// let caps = EptVpidCap(0x0000_0f01_0611_4141); // Bochs corei5_lynnfield_750
/// let walker = EptWalker::new(EptPointer::from_bits(0x101e), caps, 39)?;
/// let gpa = GuestPhysAddr::new(0x0020_1000)?;
///
/// let v = walker.explain_violation(gpa, Access::DATA_WRITE, false, read(pd_entry)).unwrap();
/// assert_eq!((v.level, v.reason), (Level::Pd, ViolationReason::Missing(Permissions::WRITE)));
///
/// pd_entry = (pd_entry & !0b111) | 0b010; // write without read
/// let m = walker.explain_misconfiguration(gpa, read(pd_entry)).unwrap();
/// assert_eq!((m.level, m.rule), (Level::Pd, MisconfigRule::WriteWithoutRead));
/// assert_eq!(m.entry_address.as_u64(), 0x3008);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptWalker {
    eptp: EptPointer,
    root_level: Level,
    caps: EptVpidCap,
    phys_addr_width: u8,
    mode_based_execute: bool,
}

impl EptWalker {
    /// A walker for the tables of `eptp` on a processor with capabilities `caps` and
    /// physical-address width `phys_addr_width`. Fails if the EPTP's page-walk length is
    /// reserved.
    pub fn new(
        eptp: EptPointer,
        caps: EptVpidCap,
        phys_addr_width: u8,
    ) -> Result<Self, ReservedWalkLength> {
        Ok(Self {
            eptp,
            root_level: Level::root(eptp.walk_length()?),
            caps,
            phys_addr_width,
            mode_based_execute: false,
        })
    }

    pub(crate) fn from_parts(
        eptp: EptPointer,
        root_level: Level,
        caps: EptVpidCap,
        phys_addr_width: u8,
    ) -> Self {
        Self {
            eptp,
            root_level,
            caps,
            phys_addr_width,
            mode_based_execute: false,
        }
    }

    /// Whether the "mode-based execute control for EPT" VM-execution control is 1: bit 10
    /// grants execute access for user-mode linear addresses and makes an entry present.
    pub fn mode_based_execute(self, on: bool) -> Self {
        Self {
            mode_based_execute: on,
            ..self
        }
    }

    fn present(&self, e: u64) -> bool {
        e & 7 != 0 || (self.mode_based_execute && e & EntryFlags::USER_EXECUTE.bits() != 0)
    }

    /// The rules of SDM Vol. 3C §29.3.3.1 "EPT Misconfigurations" for a present entry, in the
    /// SDM's order: write without read; execute-only without support (bit 2, and bit 10 under
    /// mode-based execute control); then reserved bits (bit 7 where the level cannot map a page
    /// on this processor, the level's reserved bits, address bits beyond the physical-address
    /// width) and a reserved memory type in the last entry of the walk.
    fn check(&self, level: Level, e: u64) -> Option<MisconfigRule> {
        if e & EntryFlags::READ.bits() == 0 {
            if e & EntryFlags::WRITE.bits() != 0 {
                return Some(MisconfigRule::WriteWithoutRead);
            }
            if !self.caps.execute_only() {
                if e & EntryFlags::EXECUTE.bits() != 0 {
                    return Some(MisconfigRule::ExecuteOnlyNotSupported);
                }
                if self.mode_based_execute && e & EntryFlags::USER_EXECUTE.bits() != 0 {
                    return Some(MisconfigRule::UserExecuteOnlyNotSupported);
                }
            }
        }
        let ps = e & EntryFlags::PAGE_SIZE.bits() != 0;
        let page_allowed = match level {
            Level::Pdpt => self.caps.pdpte_1gb(),
            Level::Pd => self.caps.pde_2mb(),
            _ => false,
        };
        if ps && level != Level::Pt && !page_allowed {
            return Some(MisconfigRule::LargePageNotAllowed);
        }
        let is_page = level == Level::Pt || ps;
        let reserved = e & reserved_mask(level, is_page, self.phys_addr_width);
        if reserved != 0 {
            return Some(MisconfigRule::ReservedBits(reserved));
        }
        if is_page {
            let mt = ((e >> 3) & 7) as u8;
            if MemoryType::from_bits(mt).is_err() {
                return Some(MisconfigRule::ReservedMemoryType(mt));
            }
        }
        None
    }

    /// Walks the tables for `gpa`. `read` returns the 8-byte entry at a host-physical address,
    /// or `None` if it cannot be read.
    pub fn walk(
        &self,
        gpa: GuestPhysAddr,
        mut read: impl FnMut(HostPhysAddr) -> Option<u64>,
    ) -> Walk {
        let g = gpa.as_u64();
        let mut steps = [None; 5];
        let mut table = self.eptp.pml4_address().as_u64();
        let mut level = self.root_level;
        let mut permissions = Permissions::ALL;
        for step in steps.iter_mut() {
            let entry_address = HostPhysAddr::new_truncate(table + 8 * level.index_of(g) as u64);
            let Some(e) = read(entry_address) else {
                return Walk {
                    steps,
                    outcome: WalkOutcome::Unreadable {
                        level,
                        entry_address,
                    },
                };
            };
            *step = Some(WalkStep {
                level,
                entry_address,
                entry: e,
            });
            if !self.present(e) {
                return Walk {
                    steps,
                    outcome: WalkOutcome::NotPresent {
                        level,
                        entry_address,
                        entry: e,
                    },
                };
            }
            if let Some(rule) = self.check(level, e) {
                let m = Misconfiguration {
                    level,
                    entry_address,
                    entry: e,
                    rule,
                };
                return Walk {
                    steps,
                    outcome: WalkOutcome::Misconfigured(m),
                };
            }
            permissions &= Permissions::from_entry_bits(e);
            if level == Level::Pt || e & EntryFlags::PAGE_SIZE.bits() != 0 {
                let size = level.span();
                let page_size = level.page_size().unwrap_or(PageSize::Size4K);
                let hpa =
                    HostPhysAddr::new_truncate((e & ADDRESS_MASK & !(size - 1)) | (g & (size - 1)));
                let outcome = match MemoryType::from_bits(((e >> 3) & 7) as u8) {
                    Ok(memory_type) => WalkOutcome::Translated {
                        hpa,
                        page_size,
                        permissions,
                        memory_type,
                    },
                    Err(r) => WalkOutcome::Misconfigured(Misconfiguration {
                        level,
                        entry_address,
                        entry: e,
                        rule: MisconfigRule::ReservedMemoryType(r.0),
                    }),
                };
                return Walk { steps, outcome };
            }
            table = e & ADDRESS_MASK;
            level = match level.next_lower() {
                Some(l) => l,
                None => break,
            };
        }
        // Unreachable for well-formed levels: a PT entry always ends the walk above.
        let entry_address = HostPhysAddr::new_truncate(table);
        Walk {
            steps,
            outcome: WalkOutcome::Unreadable {
                level,
                entry_address,
            },
        }
    }

    /// The entry that makes an access to `gpa` cause an EPT misconfiguration, if any.
    pub fn explain_misconfiguration(
        &self,
        gpa: GuestPhysAddr,
        read: impl FnMut(HostPhysAddr) -> Option<u64>,
    ) -> Option<Misconfiguration> {
        match self.walk(gpa, read).outcome {
            WalkOutcome::Misconfigured(m) => Some(m),
            _ => None,
        }
    }

    /// The first entry that makes `access` to `gpa` cause an EPT violation, if any (`None` if
    /// the access is allowed, misconfigured or unreadable; see [`EptWalker::walk`] for those).
    /// `user_mode_linear` tells, under mode-based execute control, whether an instruction
    /// fetch was from a user-mode linear address (which needs bit 10 instead of bit 2).
    pub fn explain_violation(
        &self,
        gpa: GuestPhysAddr,
        access: Access,
        user_mode_linear: bool,
        read: impl FnMut(HostPhysAddr) -> Option<u64>,
    ) -> Option<Violation> {
        let walk = self.walk(gpa, read);
        if let WalkOutcome::NotPresent {
            level,
            entry_address,
            entry,
        } = walk.outcome
        {
            return Some(Violation {
                level,
                entry_address,
                entry,
                reason: ViolationReason::NotPresent,
            });
        }
        if !matches!(walk.outcome, WalkOutcome::Translated { .. }) {
            return None;
        }
        let mut needed = Permissions::empty();
        if access.contains(Access::DATA_READ) {
            needed |= Permissions::READ;
        }
        if access.contains(Access::DATA_WRITE) {
            needed |= Permissions::WRITE;
        }
        if access.contains(Access::INSTRUCTION_FETCH) {
            needed |= if self.mode_based_execute && user_mode_linear {
                Permissions::USER_EXECUTE
            } else {
                Permissions::EXECUTE
            };
        }
        walk.steps().find_map(|s| {
            let missing = needed - Permissions::from_entry_bits(s.entry);
            (!missing.is_empty()).then_some(Violation {
                level: s.level,
                entry_address: s.entry_address,
                entry: s.entry,
                reason: ViolationReason::Missing(missing),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    /// IA32_VMX_EPT_VPID_CAP of Bochs' corei5_lynnfield_750 (execute-only, 2-MiB pages).
    const LYNNFIELD: EptVpidCap = EptVpidCap(0x0000_0f01_0611_4141);
    /// The same without execute-only and 2-MiB page support.
    const NO_EXEC_ONLY_NO_2M: EptVpidCap = EptVpidCap(0x0000_0f01_0610_4140);

    /// Hand-built tables: root at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000; the walk
    /// for GPA 0x0020_3000 uses PML4E 0, PDPTE 0, PDE 1, PTE 3.
    struct Tables(std::collections::BTreeMap<u64, u64>);

    impl Tables {
        fn new(pde: u64, pte: u64) -> Self {
            let mut m = std::collections::BTreeMap::new();
            m.insert(0x1000, 0x2407);
            m.insert(0x2000, 0x3407);
            m.insert(0x3008, pde);
            m.insert(0x4018, pte);
            Self(m)
        }
        fn reader(&self) -> impl FnMut(HostPhysAddr) -> Option<u64> + '_ {
            |a| Some(self.0.get(&a.as_u64()).copied().unwrap_or(0))
        }
    }

    fn walker(caps: EptVpidCap) -> EptWalker {
        EptWalker::new(EptPointer::from_bits(0x101e), caps, 39).unwrap()
    }

    const GPA: GuestPhysAddr = GuestPhysAddr::new_truncate(0x0020_3abc);

    #[test]
    fn translates_and_reports_effective_permissions() {
        let t = Tables::new(0x4007, 0x0000_0012_3456_7000 | 0x33);
        let w = walker(LYNNFIELD).walk(GPA, t.reader());
        assert_eq!(
            w.outcome,
            WalkOutcome::Translated {
                hpa: HostPhysAddr::new_truncate(0x12_3456_7abc),
                page_size: PageSize::Size4K,
                permissions: Permissions::RW,
                memory_type: MemoryType::WriteBack,
            }
        );
        let levels: std::vec::Vec<Level> = w.steps().map(|s| s.level).collect();
        assert_eq!(levels, [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt]);
    }

    /// One row per misconfiguration rule: (PDE, PTE, caps, level, rule).
    #[test]
    fn misconfiguration_table() {
        let rows: &[(u64, u64, EptVpidCap, Level, MisconfigRule)] = &[
            (
                0x4002,
                0x5037,
                LYNNFIELD,
                Level::Pd,
                MisconfigRule::WriteWithoutRead,
            ),
            (
                0x4007,
                0x5036,
                LYNNFIELD,
                Level::Pt,
                MisconfigRule::WriteWithoutRead,
            ),
            (
                0x4004,
                0x5037,
                NO_EXEC_ONLY_NO_2M,
                Level::Pd,
                MisconfigRule::ExecuteOnlyNotSupported,
            ),
            (
                0x0020_0087,
                0,
                NO_EXEC_ONLY_NO_2M,
                Level::Pd,
                MisconfigRule::LargePageNotAllowed,
            ),
            (
                0x4007 | 0x10,
                0x5037,
                LYNNFIELD,
                Level::Pd,
                MisconfigRule::ReservedBits(0x10),
            ),
            (
                0x4007,
                0x5037 | (1 << 40),
                LYNNFIELD,
                Level::Pt,
                MisconfigRule::ReservedBits(1 << 40),
            ),
            (
                0x0020_1087 | 0x30,
                0,
                LYNNFIELD,
                Level::Pd,
                MisconfigRule::ReservedBits(0x1000),
            ),
            (
                0x4007,
                0x5017,
                LYNNFIELD,
                Level::Pt,
                MisconfigRule::ReservedMemoryType(2),
            ),
            (
                0x0020_0087 | 0x18,
                0,
                LYNNFIELD,
                Level::Pd,
                MisconfigRule::ReservedMemoryType(3),
            ),
            (
                0x4007,
                0x503f,
                LYNNFIELD,
                Level::Pt,
                MisconfigRule::ReservedMemoryType(7),
            ),
        ];
        for &(pde, pte, caps, level, rule) in rows {
            let t = Tables::new(pde, pte);
            let m = walker(caps).explain_misconfiguration(GPA, t.reader());
            let m =
                m.unwrap_or_else(|| panic!("no misconfiguration for PDE {pde:#x} PTE {pte:#x}"));
            assert_eq!(
                (m.level, m.rule),
                (level, rule),
                "PDE {pde:#x} PTE {pte:#x}"
            );
            let entry_address = if level == Level::Pd { 0x3008 } else { 0x4018 };
            assert_eq!(m.entry_address.as_u64(), entry_address);
        }
        // Execute-only is fine where supported; a 2-MiB page where supported.
        assert_eq!(
            walker(LYNNFIELD).explain_misconfiguration(GPA, Tables::new(0x4004, 0x5034).reader()),
            None
        );
        assert_eq!(
            walker(LYNNFIELD).explain_misconfiguration(GPA, Tables::new(0x0020_00b7, 0).reader()),
            None
        );
        // A not-present entry is never misconfigured, whatever its other bits.
        assert_eq!(
            walker(LYNNFIELD).explain_misconfiguration(GPA, Tables::new(0xffff_fff8, 0).reader()),
            None
        );
    }

    #[test]
    fn large_page_in_pml4e_is_reserved() {
        let mut t = Tables::new(0x4007, 0x5037);
        t.0.insert(0x1000, 0x2087);
        let m = walker(LYNNFIELD)
            .explain_misconfiguration(GPA, t.reader())
            .unwrap();
        assert_eq!(
            (m.level, m.rule),
            (Level::Pml4, MisconfigRule::LargePageNotAllowed)
        );
        assert!(m.to_string().contains("EPT PML4E at 0x1000"), "{m}");
    }

    #[test]
    fn violation_table() {
        use ViolationReason::{Missing, NotPresent};
        // (PDE, PTE, access, level, reason)
        let rows: &[(u64, u64, Access, Level, ViolationReason)] = &[
            (0, 0, Access::DATA_READ, Level::Pd, NotPresent),
            (0x4007, 0, Access::INSTRUCTION_FETCH, Level::Pt, NotPresent),
            (
                0x4007,
                0x5031,
                Access::DATA_WRITE,
                Level::Pt,
                Missing(Permissions::WRITE),
            ),
            (
                0x4003,
                0x5037,
                Access::INSTRUCTION_FETCH,
                Level::Pd,
                Missing(Permissions::EXECUTE),
            ),
            (
                0x4001,
                0x5033,
                Access::DATA_WRITE.union(Access::DATA_READ),
                Level::Pd,
                Missing(Permissions::WRITE),
            ),
            (
                0x4007,
                0x5034,
                Access::DATA_READ,
                Level::Pt,
                Missing(Permissions::READ),
            ),
        ];
        for &(pde, pte, access, level, reason) in rows {
            let t = Tables::new(pde, pte);
            let v = walker(LYNNFIELD).explain_violation(GPA, access, false, t.reader());
            let v = v
                .unwrap_or_else(|| panic!("no violation for PDE {pde:#x} PTE {pte:#x} {access:?}"));
            assert_eq!(
                (v.level, v.reason),
                (level, reason),
                "PDE {pde:#x} PTE {pte:#x} {access:?}"
            );
        }
        let t = Tables::new(0x4007, 0x5037);
        assert_eq!(
            walker(LYNNFIELD).explain_violation(GPA, Access::all(), false, t.reader()),
            None
        );
    }

    #[test]
    fn access_from_exit_qualification() {
        assert_eq!(
            Access::from_exit_qualification(0x183),
            Access::DATA_READ | Access::DATA_WRITE
        );
        assert_eq!(
            Access::from_exit_qualification(0x4),
            Access::INSTRUCTION_FETCH
        );
        assert_eq!(Access::from_exit_qualification(u64::MAX), Access::all());
    }

    #[test]
    fn mode_based_execute_uses_bit_10_for_user_fetches() {
        let t = Tables::new(0x4407, 0x5035);
        let w = walker(LYNNFIELD).mode_based_execute(true);
        let v = w
            .explain_violation(GPA, Access::INSTRUCTION_FETCH, true, t.reader())
            .unwrap();
        assert_eq!(
            (v.level, v.reason),
            (
                Level::Pt,
                ViolationReason::Missing(Permissions::USER_EXECUTE)
            )
        );
        assert_eq!(
            w.explain_violation(GPA, Access::INSTRUCTION_FETCH, false, t.reader()),
            None
        );
        // Under MBEC, bit 10 alone makes an entry present (user-execute-only).
        let t = Tables::new(0x4407, 0x5430);
        assert_eq!(w.explain_misconfiguration(GPA, t.reader()), None);
        let v = w
            .explain_violation(GPA, Access::DATA_READ, false, t.reader())
            .unwrap();
        assert_eq!(
            (v.level, v.reason),
            (Level::Pt, ViolationReason::Missing(Permissions::READ))
        );
    }

    /// SDM §29.3.3.1: under mode-based execute control, an entry with bit 0 clear and bit 10
    /// set is execute-only (for user-mode addresses), a misconfiguration without execute-only
    /// support; without the control bit 10 is ignored and such an entry is not present.
    #[test]
    fn user_execute_only_without_execute_only_support() {
        let caps = NO_EXEC_ONLY_NO_2M;
        let mbec = walker(caps).mode_based_execute(true);
        // (PDE, PTE, level) with bit 10 set and bit 0 clear at that level.
        let rows: &[(u64, u64, Level)] = &[
            (0x4407, 0x5430, Level::Pt),
            (0x4400, 0x5437, Level::Pd),
            (0x4407, 0x5434, Level::Pt),
        ];
        for &(pde, pte, level) in rows {
            let t = Tables::new(pde, pte);
            let m = mbec.explain_misconfiguration(GPA, t.reader());
            let m = m.unwrap_or_else(|| panic!("no misconfiguration for {pde:#x}/{pte:#x}"));
            let rule = if pte & 4 != 0 && level == Level::Pt {
                MisconfigRule::ExecuteOnlyNotSupported
            } else {
                MisconfigRule::UserExecuteOnlyNotSupported
            };
            assert_eq!((m.level, m.rule), (level, rule), "{pde:#x}/{pte:#x}");
        }
        // Readable entries with bit 10 are fine; so is bit 10 alone where execute-only is
        // supported, and without mode-based execute control the entry is simply not present.
        let t = Tables::new(0x4407, 0x5431);
        assert_eq!(mbec.explain_misconfiguration(GPA, t.reader()), None);
        let t = Tables::new(0x4407, 0x5430);
        let lynnfield = walker(LYNNFIELD).mode_based_execute(true);
        assert_eq!(lynnfield.explain_misconfiguration(GPA, t.reader()), None);
        assert!(matches!(
            walker(caps).walk(GPA, t.reader()).outcome,
            WalkOutcome::NotPresent {
                level: Level::Pt,
                ..
            }
        ));
        assert!(
            MisconfigRule::UserExecuteOnlyNotSupported
                .to_string()
                .contains("bit 10")
        );
    }

    #[test]
    fn unreadable_and_reserved_walk_length() {
        let w = walker(LYNNFIELD).walk(GPA, |_| None);
        assert_eq!(
            w.outcome,
            WalkOutcome::Unreadable {
                level: Level::Pml4,
                entry_address: HostPhysAddr::new_truncate(0x1000)
            }
        );
        assert_eq!(
            EptWalker::new(EptPointer::from_bits(0x1006), LYNNFIELD, 39),
            Err(ReservedWalkLength(1))
        );
    }
}
