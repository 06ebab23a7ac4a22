//! EPT02 = EPT12 ∘ EPT01 (`vmcs::nested::resolve_ept_violation`, `clear_ept02`): EPT12 tables
//! written into L1's memory, EPT01 and EPT02 built with the `ept` mapper under Bochs
//! `tigerlake`'s EPT capabilities; each outcome of a walk (a page mapped with the rights both
//! allow, EPT12's violation with its rights in the qualification, EPT12's misconfiguration,
//! memory EPT01 does not map), the accessed/dirty flags, and L1's page-modification log (SDM Vol.
//! 3C, 29.3.6) kept by L0 as it sets EPT12's dirty flags.

use ept::{
    EptConfig, EptMapper, GuestPhysAddr, HeapFrameAllocator, HostPhysAddr, LeafAttributes,
    MemoryType, OffsetPhysToVirt, Permissions,
};
use vmcs::nested::{
    Ept02Resolution, Ept12Exit, FlatGuestMemory, Pml12, clear_ept02, resolve_ept_violation,
};
use vmcs::{SoftVmcs, VmcsRead, fields};
use vmx_caps::{EptVpidCap, MsrSnapshot, VmxCapabilities};

type Mapper = EptMapper<OffsetPhysToVirt, HeapFrameAllocator>;

const PML4: u64 = 0x10_0000;
const PDPT: u64 = 0x10_1000;
const PD: u64 = 0x10_2000;
const PT: u64 = 0x10_3000;
const EPTP12: u64 = PML4 | 6 | 3 << 3;
/// Where EPT01 puts L1's memory in host-physical memory.
const L1_HOST_BASE: u64 = 0x1_0000_0000;
const WB: u64 = 6 << 3;

fn caps() -> EptVpidCap {
    let mut msrs =
        MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
    VmxCapabilities::read(&mut msrs).unwrap().ept_vpid
}

fn mapper() -> Mapper {
    // SAFETY: heap frames are reachable at their "physical" (= heap) address.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    EptMapper::new(EptConfig::new(caps(), 48), p2v, HeapFrameAllocator::new()).unwrap()
}

struct Setup {
    memory: Vec<u8>,
    ept01: Mapper,
    ept02: Mapper,
}

fn put(memory: &mut [u8], at: u64, value: u64) {
    memory[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes());
}

fn entry(memory: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(memory[at as usize..at as usize + 8].try_into().unwrap())
}

/// L1: 4 MiB of memory, all mapped RWX WB by EPT01 at 1_0000_0000H. EPT12: L2 page 5 → L1
/// 20_0000H RW, page 6 → 20_1000H read-only, page 7 write-only (misconfigured), page 8 not
/// present, page 9 → L1 50_0000H (beyond L1's memory, unmapped in EPT01), page 10 → 20_2000H
/// RW uncacheable; the second PD entry points outside L1's memory.
fn setup() -> Setup {
    let mut memory = vec![0u8; 0x40_0000];
    put(&mut memory, PML4, PDPT | 7);
    put(&mut memory, PDPT, PD | 7);
    put(&mut memory, PD, PT | 7);
    put(&mut memory, PD + 8, 0x80_0000 | 7);
    put(&mut memory, PT + 5 * 8, 0x20_0000 | WB | 3);
    put(&mut memory, PT + 6 * 8, 0x20_1000 | WB | 1);
    put(&mut memory, PT + 7 * 8, 0x20_2000 | WB | 2);
    put(&mut memory, PT + 9 * 8, 0x50_0000 | WB | 7);
    put(&mut memory, PT + 10 * 8, 0x20_2000 | 3);
    let mut ept01 = mapper();
    let flush = ept01
        .map(
            GuestPhysAddr::new(0).unwrap(),
            HostPhysAddr::new(L1_HOST_BASE).unwrap(),
            0x40_0000,
            LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack),
        )
        .unwrap();
    // SAFETY: no processor uses these tables.
    unsafe { ept01.assume_flushed(flush) };
    Setup {
        memory,
        ept01,
        ept02: mapper(),
    }
}

impl Setup {
    fn resolve(&mut self, eptp: u64, gpa: u64, qualification: u64) -> Ept02Resolution {
        self.resolve_pml(eptp, gpa, qualification, None)
    }

    /// [`Setup::resolve`] with L1's page-modification log `pml`.
    fn resolve_pml(
        &mut self,
        eptp: u64,
        gpa: u64,
        qualification: u64,
        pml: Option<&mut Pml12>,
    ) -> Ept02Resolution {
        let mut mem = FlatGuestMemory {
            base: 0,
            bytes: &mut self.memory,
        };
        resolve_ept_violation(
            eptp,
            caps(),
            39,
            gpa,
            qualification,
            &mut mem,
            &self.ept01,
            &mut self.ept02,
            pml,
        )
        .unwrap()
    }

    /// Resolves and expects a mapping; discharges its flush.
    fn mapped(&mut self, eptp: u64, gpa: u64, qualification: u64) -> (u64, u64, Permissions) {
        match self.resolve(eptp, gpa, qualification) {
            Ept02Resolution::Mapped {
                flush,
                l1_physical,
                host_physical,
                permissions,
            } => {
                // SAFETY: no processor uses EPT02 here.
                unsafe { self.ept02.assume_flushed(flush) };
                (l1_physical, host_physical, permissions)
            }
            other => panic!("not mapped: {other:?}"),
        }
    }

    fn ept02_leaf(&self, gpa: u64) -> Option<ept::Translation> {
        self.ept02.translate(GuestPhysAddr::new(gpa).unwrap())
    }
}

const READ: u64 = 1;
const WRITE: u64 = 2;

#[test]
fn a_page_both_epts_allow_is_mapped_in_ept02_with_the_common_rights() {
    let mut s = setup();
    let (l1, host, rights) = s.mapped(EPTP12, 0x5123, READ);
    assert_eq!(l1, 0x20_0123);
    assert_eq!(host, L1_HOST_BASE + 0x20_0123);
    assert_eq!(rights, Permissions::RW);
    let t = s.ept02_leaf(0x5123).unwrap();
    assert_eq!(t.hpa.as_u64(), L1_HOST_BASE + 0x20_0123);
    assert_eq!(t.permissions() & Permissions::RWX, Permissions::RW);
    assert_eq!(t.memory_type(), Ok(MemoryType::WriteBack));
    // UC in EPT12 makes the EPT02 page UC.
    s.mapped(EPTP12, 0xa000, READ);
    assert_eq!(
        s.ept02_leaf(0xa000).unwrap().memory_type(),
        Ok(MemoryType::Uncacheable)
    );
}

#[test]
fn a_write_to_a_read_only_ept12_page_is_l1s_violation_with_ept12s_rights() {
    let mut s = setup();
    // Qualification: data write, guest-linear address valid and translated (bits 7, 8).
    let r = s.resolve(EPTP12, 0x6010, WRITE | 0x180);
    assert_eq!(
        r,
        Ept02Resolution::Reflect(Ept12Exit {
            reason: 48,
            qualification: WRITE | 1 << 3 | 0x180,
            guest_physical: 0x6010,
            suppress_ve: false,
        })
    );
    assert!(s.ept02_leaf(0x6010).is_none());
    // Not present: no rights in bits 5:3.
    let r = s.resolve(EPTP12, 0x8000, READ);
    assert_eq!(
        r,
        Ept02Resolution::Reflect(Ept12Exit {
            reason: 48,
            qualification: READ,
            guest_physical: 0x8000,
            suppress_ve: false,
        })
    );
}

/// The suppress-#VE bit (63) of the entry that decides (SDM 26.5.7.1): the leaf that maps the
/// page for a rights violation, the entry that is not present otherwise; a paging-structure
/// entry's bit 63 above a leaf does not count.
#[test]
fn the_violation_carries_the_deciding_entrys_suppress_ve_bit() {
    let suppress = |r: Ept02Resolution| match r {
        Ept02Resolution::Reflect(e) => e.suppress_ve,
        other => panic!("not reflected: {other:?}"),
    };
    let mut s = setup();
    // Leaf of page 6 (read-only) with bit 63: a write is a violation that is not convertible.
    put(&mut s.memory, PT + 6 * 8, 0x20_1000 | WB | 1 | 1 << 63);
    assert!(suppress(s.resolve(EPTP12, 0x6010, WRITE)));
    // A not-present entry with bit 63 (page 8).
    put(&mut s.memory, PT + 8 * 8, 1 << 63);
    assert!(suppress(s.resolve(EPTP12, 0x8000, READ)));
    // Bit 63 in the PD entry above page 6's table does not decide; the leaf's (clear) does.
    put(&mut s.memory, PT + 6 * 8, 0x20_1000 | WB | 1);
    put(&mut s.memory, PD, PT | 7 | 1 << 63);
    assert!(!suppress(s.resolve(EPTP12, 0x6010, WRITE)));
}

#[test]
fn ept12_misconfigurations_are_l1s_even_outside_its_memory() {
    let mut s = setup();
    let misconfigured = |gpa| {
        Ept02Resolution::Reflect(Ept12Exit {
            reason: 49,
            qualification: 0,
            guest_physical: gpa,
            suppress_ve: true,
        })
    };
    // Write-only leaf.
    assert_eq!(s.resolve(EPTP12, 0x7000, READ), misconfigured(0x7000));
    // A table outside L1's memory reads as all ones: reserved bits.
    assert_eq!(s.resolve(EPTP12, 0x20_0000, READ), misconfigured(0x20_0000));
    // An EPTP12 outside L1's memory likewise.
    assert_eq!(
        s.resolve(0x80_0000 | 6 | 3 << 3, 0x5000, READ),
        misconfigured(0x5000)
    );
}

#[test]
fn memory_ept01_does_not_map_is_l1s_own_access_for_l0() {
    let mut s = setup();
    assert_eq!(
        s.resolve(EPTP12, 0x9008, READ),
        Ept02Resolution::L1Access {
            l1_physical: 0x50_0008
        }
    );
}

#[test]
fn accessed_and_dirty_flags_are_set_in_ept12_and_clean_pages_stay_read_only() {
    let mut s = setup();
    let eptp = EPTP12 | 1 << 6;
    let (_, _, rights) = s.mapped(eptp, 0x5000, READ);
    assert_eq!(rights, Permissions::READ);
    for at in [PML4, PDPT, PD] {
        assert_ne!(entry(&s.memory, at) & 1 << 8, 0, "accessed at {at:#x}");
    }
    let leaf = entry(&s.memory, PT + 5 * 8);
    assert_eq!(leaf & (3 << 8), 1 << 8);
    // The first write faults on the read-only EPT02 page: dirty set, now writable.
    let (_, _, rights) = s.mapped(eptp, 0x5000, WRITE);
    assert_eq!(rights, Permissions::RW);
    assert_ne!(entry(&s.memory, PT + 5 * 8) & 1 << 9, 0);
    assert_eq!(
        s.ept02_leaf(0x5000).unwrap().permissions() & Permissions::RWX,
        Permissions::RW
    );
}

#[test]
fn l1s_invept_empties_ept02() {
    let mut s = setup();
    s.mapped(EPTP12, 0x5000, READ);
    s.mapped(EPTP12, 0x6000, READ);
    let flush = clear_ept02(&mut s.ept02).unwrap().expect("a pending flush");
    // SAFETY: no processor uses EPT02 here.
    unsafe { s.ept02.assume_flushed(flush) };
    assert!(s.ept02_leaf(0x5000).is_none() && s.ept02_leaf(0x6000).is_none());
    assert!(clear_ept02(&mut s.ept02).unwrap().is_none());
}

#[test]
fn the_reflected_exit_information_is_vmcs02s_with_ept12s_reason_and_qualification() {
    let mut vmcs02 = SoftVmcs::all_fields();
    vmcs02.store(fields::EXIT_REASON.encoding(), 48).unwrap();
    vmcs02
        .store(fields::GUEST_LINEAR_ADDRESS.encoding(), 0x7fff_1000)
        .unwrap();
    let exit = Ept12Exit {
        reason: 49,
        qualification: 0,
        guest_physical: 0x7000,
        suppress_ve: true,
    };
    let info = exit.exit_info(&vmcs02);
    assert_eq!(info.read_raw(fields::EXIT_REASON.encoding()).unwrap(), 49);
    assert_eq!(
        info.read_raw(fields::GUEST_PHYSICAL_ADDRESS.encoding())
            .unwrap(),
        0x7000
    );
    assert_eq!(
        info.read_raw(fields::GUEST_LINEAR_ADDRESS.encoding())
            .unwrap(),
        0x7fff_1000
    );
}

/// Where the tests put L1's page-modification log (L1-physical, inside its 4 MiB).
const LOG: u64 = 0x30_0000;
/// EPTP12 with accessed and dirty flags enabled.
const EPTP12_AD: u64 = EPTP12 | 1 << 6;
/// An exit qualification's NMI-unblocking (12) and linear-address (7, 8) bits.
const IRET_LINEAR: u64 = 1 << 12 | 1 << 8 | 1 << 7;

impl Setup {
    /// Resolves with the log at [`LOG`] and index `index`, expects a mapping (flush discharged);
    /// the index after and the rights EPT02 grants.
    fn mapped_pml(
        &mut self,
        eptp: u64,
        gpa: u64,
        qualification: u64,
        index: u16,
    ) -> (u16, Permissions) {
        let mut pml = Pml12 {
            address: LOG,
            index,
        };
        match self.resolve_pml(eptp, gpa, qualification, Some(&mut pml)) {
            Ept02Resolution::Mapped {
                flush, permissions, ..
            } => {
                // SAFETY: no processor uses EPT02 here.
                unsafe { self.ept02.assume_flushed(flush) };
                (pml.index, permissions)
            }
            other => panic!("not mapped: {other:?}"),
        }
    }

    fn log_entry(&self, index: u16) -> u64 {
        entry(&self.memory, LOG + 8 * u64::from(index))
    }

    fn log_is_empty(&self) -> bool {
        (0..512).all(|i| self.log_entry(i) == 0)
    }
}

#[test]
fn first_writes_are_logged_from_entry_511_down_with_page_addresses() {
    let mut s = setup();
    let (index, rights) = s.mapped_pml(EPTP12_AD, 0x5123, WRITE, 511);
    assert_eq!(index, 510);
    assert_eq!(rights, Permissions::RW);
    assert_eq!(s.log_entry(511), 0x5000, "bits 11:0 cleared");
    assert_ne!(entry(&s.memory, PT + 5 * 8) & 1 << 9, 0, "dirty flag set");
    // Page 10 next: the entry below, in order.
    let (index, _) = s.mapped_pml(EPTP12_AD, 0xafff, WRITE | READ, index);
    assert_eq!(index, 509);
    assert_eq!(s.log_entry(510), 0xa000);
    assert_eq!(s.log_entry(509), 0);
    assert_eq!(
        s.ept02_leaf(0x5000).unwrap().permissions() & Permissions::RWX,
        Permissions::RW
    );
}

#[test]
fn a_read_sets_accessed_flags_but_logs_nothing_until_the_first_write() {
    let mut s = setup();
    let (index, rights) = s.mapped_pml(EPTP12_AD, 0x5000, READ, 511);
    assert_eq!((index, rights), (511, Permissions::READ));
    assert!(s.log_is_empty());
    assert_eq!(entry(&s.memory, PT + 5 * 8) & (3 << 8), 1 << 8);
    // The write to the clean page comes back (EPT02 read-only): now it is logged.
    let (index, rights) = s.mapped_pml(EPTP12_AD, 0x5008, WRITE, index);
    assert_eq!((index, rights), (510, Permissions::RW));
    assert_eq!(s.log_entry(511), 0x5000);
}

#[test]
fn the_last_entry_is_0_and_the_index_wraps_to_ffffh() {
    let mut s = setup();
    let (index, _) = s.mapped_pml(EPTP12_AD, 0x5010, WRITE, 0);
    assert_eq!(index, 0xffff);
    assert_eq!(s.log_entry(0), 0x5000);
    assert_eq!(s.log_entry(1), 0);
}

#[test]
fn a_full_log_is_a_pml_full_exit_with_no_flag_set_and_nothing_mapped() {
    for index in [0xffff, 512, 0x8000] {
        let mut s = setup();
        let before = s.memory.clone();
        let mut pml = Pml12 {
            address: LOG,
            index,
        };
        let r = s.resolve_pml(EPTP12_AD, 0x5123, WRITE | IRET_LINEAR, Some(&mut pml));
        assert_eq!(
            r,
            Ept02Resolution::PmlFull(Ept12Exit {
                reason: 62,
                qualification: 1 << 12,
                guest_physical: 0x5123,
                suppress_ve: true,
            }),
            "index {index:#x}"
        );
        assert_eq!(pml.index, index, "the index is left alone");
        assert!(
            s.memory == before,
            "no accessed/dirty flag set, nothing logged"
        );
        assert!(s.ept02_leaf(0x5000).is_none(), "the access does not happen");
    }
    // Setting only accessed flags examines the index too (SDM 29.3.6): a read with every
    // accessed flag clear and the log full is also a log-full event.
    let mut s = setup();
    let mut pml = Pml12 {
        address: LOG,
        index: 0xffff,
    };
    let r = s.resolve_pml(EPTP12_AD, 0x5000, READ, Some(&mut pml));
    assert!(
        matches!(
            r,
            Ept02Resolution::PmlFull(Ept12Exit {
                reason: 62,
                qualification: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(entry(&s.memory, PML4) & 1 << 8, 0);
}

#[test]
fn with_every_flag_already_set_a_full_log_does_not_stop_the_access() {
    let mut s = setup();
    for at in [PML4, PDPT, PD] {
        let e = entry(&s.memory, at);
        put(&mut s.memory, at, e | 1 << 8);
    }
    put(&mut s.memory, PT + 5 * 8, 0x20_0000 | WB | 3 | 3 << 8);
    let (index, rights) = s.mapped_pml(EPTP12_AD, 0x5000, WRITE, 0xffff);
    assert_eq!((index, rights), (0xffff, Permissions::RW));
    assert!(s.log_is_empty());
}

#[test]
fn a_page_already_dirty_is_not_logged_again() {
    let mut s = setup();
    // Dirty (and accessed) leaf, upper accessed flags clear: they are set, nothing logged.
    put(&mut s.memory, PT + 5 * 8, 0x20_0000 | WB | 3 | 3 << 8);
    let (index, rights) = s.mapped_pml(EPTP12_AD, 0x5000, WRITE, 511);
    assert_eq!((index, rights), (511, Permissions::RW));
    assert!(s.log_is_empty());
    assert_ne!(entry(&s.memory, PML4) & 1 << 8, 0);
    // A page logged once is not logged at its next write (its dirty flag stays set).
    let (index, _) = s.mapped_pml(EPTP12_AD, 0xa000, WRITE, index);
    assert_eq!(index, 510);
    let (index, _) = s.mapped_pml(EPTP12_AD, 0xa800, WRITE, index);
    assert_eq!(index, 510);
    assert_eq!(s.log_entry(510), 0);
}

#[test]
fn no_log_without_pml_or_without_accessed_and_dirty_flags() {
    // PML off: the dirty flag is set, the log untouched.
    let mut s = setup();
    let r = s.resolve(EPTP12_AD, 0x5000, WRITE);
    assert!(matches!(r, Ept02Resolution::Mapped { .. }), "{r:?}");
    assert_ne!(entry(&s.memory, PT + 5 * 8) & 1 << 9, 0);
    assert!(s.log_is_empty());
    // A/D off in EPTP12: no flag is ever set, so nothing is logged and the log is never full.
    let mut s = setup();
    let (index, rights) = s.mapped_pml(EPTP12, 0x5000, WRITE, 0xffff);
    assert_eq!((index, rights), (0xffff, Permissions::RW));
    let (index, _) = s.mapped_pml(EPTP12, 0xa000, WRITE, 511);
    assert_eq!(index, 511);
    assert!(s.log_is_empty());
    assert_eq!(entry(&s.memory, PT + 5 * 8) & (3 << 8), 0);
}

#[test]
fn an_ept12_violation_logs_nothing() {
    let mut s = setup();
    let mut pml = Pml12 {
        address: LOG,
        index: 511,
    };
    // Page 6 is read-only in EPT12: L1's EPT violation, no flag set, nothing logged.
    let r = s.resolve_pml(EPTP12_AD, 0x6000, WRITE, Some(&mut pml));
    assert!(
        matches!(r, Ept02Resolution::Reflect(Ept12Exit { reason: 48, .. })),
        "{r:?}"
    );
    assert_eq!(pml.index, 511);
    assert!(s.log_is_empty());
}

#[test]
fn a_log_outside_l1s_memory_drops_the_entry_as_unbacked_memory_does() {
    let mut s = setup();
    let mut pml = Pml12 {
        address: 0x4000_0000,
        index: 511,
    };
    let before = s.memory.clone();
    let r = s.resolve_pml(EPTP12_AD, 0x5000, WRITE, Some(&mut pml));
    assert!(matches!(r, Ept02Resolution::Mapped { .. }), "{r:?}");
    // The processor's write to non-existent memory goes nowhere; the index still counts down
    // and the dirty flag is set.
    assert_eq!(pml.index, 510);
    assert_ne!(entry(&s.memory, PT + 5 * 8) & 1 << 9, 0);
    let changed: Vec<usize> = (0..s.memory.len() / 8)
        .filter(|i| s.memory[i * 8..i * 8 + 8] != before[i * 8..i * 8 + 8])
        .map(|i| i * 8)
        .collect();
    assert_eq!(
        changed,
        [PML4, PDPT, PD, PT + 5 * 8].map(|a| a as usize),
        "only EPT12's entries changed"
    );
}
