//! The lifecycle's logic before VMXON, regions and the trampoline frame, on the host: a fake
//! platform stands in for CPUID/RDMSR/WRMSR/MOV CR and records every write, capabilities come from
//! the MSR dumps of Bochs' CPU models. No test here reaches VMXON: each fails a check before it.

mod common;

use core::mem::{align_of, offset_of, size_of};

use common::caps;
use proptest::prelude::*;
use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::msr::IA32_FEATURE_CONTROL;
use vmx_caps::{CrFixedBits, CrUse, FeatureControl, FixedBits, VmxBasic, VmxCapabilities};
use vmx_core::{
    EnableError, FxsaveArea, GuestRegisters, PriorState, REGION_SIZE, RegionError, SoftVmx,
    SoftVmxCounters, VmcsRegion, VmxPlatform, VmxRoot, VmxonRegion, feature_control_update,
    prepare, vmx_control_registers,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Msr(u32, u64),
    Cr0(Cr0),
    Cr4(Cr4),
}

/// A processor made of fields; every write is recorded.
#[derive(Debug)]
struct FakePlatform {
    vmx: bool,
    feature_control: u64,
    cr0: Cr0,
    cr4: Cr4,
    writes: Vec<Write>,
}

/// CR0 of a 64-bit host: PG, AM, WP, NE, ET, MP, PE.
const HOST_CR0: Cr0 = Cr0::from_bits_retain(0x8005_0033);
/// CR4 of a 64-bit host: PAE, PGE, OSFXSR, OSXMMEXCPT.
const HOST_CR4: Cr4 = Cr4::from_bits_retain(0x6a0);

impl FakePlatform {
    fn new(feature_control: u64) -> Self {
        Self {
            vmx: true,
            feature_control,
            cr0: HOST_CR0,
            cr4: HOST_CR4,
            writes: Vec::new(),
        }
    }
}

impl VmxPlatform for FakePlatform {
    fn cpu_has_vmx(&mut self) -> bool {
        self.vmx
    }
    unsafe fn read_msr(&mut self, msr: u32) -> u64 {
        assert_eq!(
            msr, IA32_FEATURE_CONTROL,
            "only IA32_FEATURE_CONTROL is read"
        );
        self.feature_control
    }
    unsafe fn write_msr(&mut self, msr: u32, value: u64) {
        assert_eq!(
            msr, IA32_FEATURE_CONTROL,
            "only IA32_FEATURE_CONTROL is written"
        );
        self.feature_control = value;
        self.writes.push(Write::Msr(msr, value));
    }
    fn read_cr0(&mut self) -> Cr0 {
        self.cr0
    }
    unsafe fn write_cr0(&mut self, value: Cr0) {
        self.cr0 = value;
        self.writes.push(Write::Cr0(value));
    }
    fn read_cr4(&mut self) -> Cr4 {
        self.cr4
    }
    unsafe fn write_cr4(&mut self, value: Cr4) {
        self.cr4 = value;
        self.writes.push(Write::Cr4(value));
    }
}

#[test]
fn prepare_on_bochs_reset_state_only_sets_cr4_vmxe() {
    for model in [
        "core2_penryn_t9600",
        "corei5_lynnfield_750",
        "corei7_skylake_x",
        "tigerlake",
    ] {
        let caps = caps(model);
        let mut fake = FakePlatform::new(caps.feature_control.bits());
        // SAFETY: a fake platform; nothing touches the host.
        let prior = unsafe { prepare(&mut fake, &caps) }.unwrap();
        assert_eq!(
            prior,
            PriorState {
                cr0: HOST_CR0,
                cr4: HOST_CR4,
                feature_control_written: None
            },
            "{model}"
        );
        assert_eq!(fake.writes, [Write::Cr4(HOST_CR4 | Cr4::VMXE)], "{model}");
    }
}

#[test]
fn prepare_cases() {
    let skylake = caps("corei7_skylake_x");
    let penryn = caps("core2_penryn_t9600");
    let tigerlake = caps("tigerlake");
    struct Case {
        name: &'static str,
        caps: VmxCapabilities,
        vmx: bool,
        feature_control: u64,
        cr0: Cr0,
        cr4: Cr4,
        expected: Result<Vec<Write>, EnableError>,
    }
    let base = |name, caps| Case {
        name,
        caps,
        vmx: true,
        feature_control: 0x5,
        cr0: HOST_CR0,
        cr4: HOST_CR4,
        expected: Ok(vec![Write::Cr4(HOST_CR4 | Cr4::VMXE)]),
    };
    let cases = [
        Case {
            vmx: false,
            expected: Err(EnableError::VmxUnsupported),
            ..base("no VMX in CPUID", skylake)
        },
        Case {
            feature_control: 0,
            expected: Ok(vec![
                Write::Msr(IA32_FEATURE_CONTROL, 0x5),
                Write::Cr4(HOST_CR4 | Cr4::VMXE),
            ]),
            ..base("unlocked: set and lock", skylake)
        },
        Case {
            feature_control: 1 << 18 | 1 << 1,
            expected: Ok(vec![
                Write::Msr(IA32_FEATURE_CONTROL, 1 << 18 | 0x7),
                Write::Cr4(HOST_CR4 | Cr4::VMXE),
            ]),
            ..base("unlocked: other enables kept", skylake)
        },
        Case {
            feature_control: 0x1,
            expected: Err(EnableError::VmxDisabledByFirmware(0x1)),
            ..base("locked with VMX off", skylake)
        },
        Case {
            feature_control: 0x3,
            expected: Err(EnableError::VmxDisabledByFirmware(0x3)),
            ..base("locked with VMX only inside SMX", skylake)
        },
        Case {
            cr4: HOST_CR4 | Cr4::VMXE,
            expected: Err(EnableError::AlreadyEnabled),
            ..base("CR4.VMXE already set", skylake)
        },
        Case {
            cr0: HOST_CR0 - Cr0::NE,
            expected: Ok(vec![Write::Cr0(HOST_CR0), Write::Cr4(HOST_CR4 | Cr4::VMXE)]),
            ..base("CR0.NE clear: set by CR0_FIXED0", skylake)
        },
        Case {
            // CR4.FSGSBASE (bit 16) is 0 in penryn's IA32_VMX_CR4_FIXED1 (0x467ff).
            feature_control: 0,
            cr4: HOST_CR4 | Cr4::FSGSBASE,
            expected: Err(EnableError::Cr4MustBeZero(1 << 16)),
            ..base(
                "CR4 bit outside FIXED1: nothing written, not even the lock",
                penryn,
            )
        },
        Case {
            cr4: HOST_CR4 | Cr4::FSGSBASE,
            expected: Ok(vec![Write::Cr4(HOST_CR4 | Cr4::FSGSBASE | Cr4::VMXE)]),
            ..base(
                "CR4.FSGSBASE allowed by tigerlake's FIXED1 (0xf72fff)",
                tigerlake,
            )
        },
    ];
    for case in cases {
        let mut fake = FakePlatform {
            vmx: case.vmx,
            feature_control: case.feature_control,
            cr0: case.cr0,
            cr4: case.cr4,
            writes: Vec::new(),
        };
        // SAFETY: a fake platform; nothing touches the host.
        let result = unsafe { prepare(&mut fake, &case.caps) };
        match case.expected {
            Ok(writes) => {
                let prior = result.unwrap_or_else(|e| panic!("{}: {e}", case.name));
                assert_eq!(
                    (prior.cr0, prior.cr4),
                    (case.cr0, case.cr4),
                    "{}",
                    case.name
                );
                assert_eq!(fake.writes, writes, "{}", case.name);
            }
            Err(error) => {
                assert_eq!(result, Err(error), "{}", case.name);
                assert!(fake.writes.is_empty(), "{}: {:?}", case.name, fake.writes);
            }
        }
    }
}

#[test]
fn error_messages_say_what_to_do() {
    assert_eq!(
        EnableError::VmxDisabledByFirmware(1).to_string(),
        "IA32_FEATURE_CONTROL (0x1) is locked with VMX outside SMX disabled (bit 2 clear); enable VT-x in the firmware setup"
    );
    assert_eq!(
        EnableError::Cr4MustBeZero(0x10000).to_string(),
        "CR4 bits 0x10000 are set but must be 0 in VMX operation (IA32_VMX_CR4_FIXED1)"
    );
}

fn leaked_region() -> &'static mut VmxonRegion {
    Box::leak(Box::new(VmxonRegion::zeroed()))
}

/// The software processor's state is what it was at creation: nothing was written.
fn untouched(soft: &SoftVmx, feature_control: u64) {
    assert_eq!(
        (soft.cr0(), soft.cr4(), soft.feature_control()),
        (SoftVmx::HOST_CR0, SoftVmx::HOST_CR4, feature_control)
    );
    assert_eq!(soft.counters(), SoftVmxCounters::default());
}

/// [`VmxRoot::enable`] on a software processor.
#[expect(
    clippy::result_large_err,
    reason = "the software processor comes back by value"
)]
fn enable(
    soft: SoftVmx,
    caps: &VmxCapabilities,
    region: &'static mut VmxonRegion,
    translate: &impl vmx_core::PhysTranslate,
) -> Result<VmxRoot<SoftVmx>, (SoftVmx, EnableError)> {
    // SAFETY: a software processor describes itself and touches neither the host nor memory.
    unsafe { VmxRoot::enable(soft, caps, region, translate) }
}

#[test]
fn enable_checks_the_region_before_touching_the_processor() {
    let caps = caps("corei7_skylake_x");
    let region = leaked_region();
    let virt = core::ptr::from_ref(region) as u64;
    let (soft, error) = enable(SoftVmx::new(&caps), &caps, region, &|_: *const u8| {
        None::<u64>
    })
    .unwrap_err();
    assert_eq!(error, EnableError::Region(RegionError::Unmapped(virt)));
    untouched(&soft, 0x5);

    let (soft, error) =
        enable(soft, &caps, leaked_region(), &|_: *const u8| Some(0x1234)).unwrap_err();
    assert_eq!(error, EnableError::Region(RegionError::Misaligned(0x1234)));
    untouched(&soft, 0x5);

    let mut limited = caps;
    limited.basic = VmxBasic(caps.basic.0 | 1 << 48);
    let high = |_: *const u8| Some(0x1_0000_0000_u64);
    let (soft, error) = enable(soft, &limited, leaked_region(), &high).unwrap_err();
    assert_eq!(
        error,
        EnableError::Region(RegionError::AboveFourGib(0x1_0000_0000))
    );
    untouched(&soft, 0x5);

    let mut large = caps;
    large.basic = VmxBasic(caps.basic.0 & !(0x1fff << 32) | 4097 << 32);
    let (soft, error) = enable(soft, &large, leaked_region(), &high).unwrap_err();
    assert_eq!(
        error,
        EnableError::Region(RegionError::RegionTooLarge(4097))
    );
    untouched(&soft, 0x5);

    let locked_off = SoftVmx::new(&caps).with_feature_control(0x1);
    let (soft, error) = enable(locked_off, &caps, leaked_region(), &|_: *const u8| {
        Some(0x1000)
    })
    .unwrap_err();
    assert_eq!(error, EnableError::VmxDisabledByFirmware(0x1));
    untouched(&soft, 0x1);
}

/// The bytes of a region as the processor reads them.
fn region_bytes<T>(region: &T) -> &[u8] {
    assert_eq!(size_of::<T>(), REGION_SIZE);
    // SAFETY: `region` is a live, initialised 4096-byte region without padding; the slice borrows
    // it for its own lifetime.
    unsafe { core::slice::from_raw_parts(core::ptr::from_ref(region).cast::<u8>(), REGION_SIZE) }
}

#[test]
fn regions_are_4k_with_the_revision_id_first() {
    assert_eq!(
        (size_of::<VmxonRegion>(), align_of::<VmxonRegion>()),
        (4096, 4096)
    );
    assert_eq!(
        (size_of::<VmcsRegion>(), align_of::<VmcsRegion>()),
        (4096, 4096)
    );

    let vmxon = VmxonRegion::new(0x2b).unwrap();
    assert_eq!(vmxon.revision_id(), 0x2b);
    assert_eq!(&region_bytes(&vmxon)[..4], &[0x2b, 0, 0, 0]);
    assert!(region_bytes(&vmxon)[4..].iter().all(|&b| b == 0));

    let ordinary = VmcsRegion::new(0x4, false).unwrap();
    assert_eq!((ordinary.revision_id(), ordinary.is_shadow()), (4, false));
    assert_eq!(&region_bytes(&ordinary)[..8], &[4, 0, 0, 0, 0, 0, 0, 0]);
    let shadow = VmcsRegion::new(0x4, true).unwrap();
    assert_eq!((shadow.revision_id(), shadow.is_shadow()), (4, true));
    assert_eq!(&region_bytes(&shadow)[..4], &[4, 0, 0, 0x80]);
    assert_eq!(shadow.abort_indicator(), 0);

    assert_eq!(
        VmxonRegion::new(0x8000_002b).unwrap_err(),
        RegionError::RevisionIdTooWide(0x8000_002b)
    );
    assert_eq!(
        VmcsRegion::new(0x8000_0000, false).unwrap_err(),
        RegionError::RevisionIdTooWide(0x8000_0000)
    );
}

#[test]
fn init_rewrites_the_whole_region() {
    let mut region = Box::new(VmcsRegion::zeroed());
    // SAFETY: the box owns 4096 writable bytes; any byte pattern is a valid VmcsRegion.
    unsafe {
        core::ptr::write_bytes(
            core::ptr::from_mut(&mut *region).cast::<u8>(),
            0xa5,
            REGION_SIZE,
        )
    };
    assert_eq!(region.header(), 0xa5a5_a5a5);
    region.init(0x2b, false).unwrap();
    assert_eq!(region.header(), 0x2b);
    assert!(region_bytes(&*region)[4..].iter().all(|&b| b == 0));
    // A failed init leaves the region untouched.
    assert!(region.init(u32::MAX, true).is_err());
    assert_eq!(region.header(), 0x2b);
}

#[test]
fn guest_register_frame_layout() {
    let offsets = [
        offset_of!(GuestRegisters, rax),
        offset_of!(GuestRegisters, rbx),
        offset_of!(GuestRegisters, rcx),
        offset_of!(GuestRegisters, rdx),
        offset_of!(GuestRegisters, rsi),
        offset_of!(GuestRegisters, rdi),
        offset_of!(GuestRegisters, rbp),
        offset_of!(GuestRegisters, r8),
        offset_of!(GuestRegisters, r9),
        offset_of!(GuestRegisters, r10),
        offset_of!(GuestRegisters, r11),
        offset_of!(GuestRegisters, r12),
        offset_of!(GuestRegisters, r13),
        offset_of!(GuestRegisters, r14),
        offset_of!(GuestRegisters, r15),
        offset_of!(GuestRegisters, cr2),
    ];
    let expected: Vec<usize> = (0..16).map(|i| 8 * i).collect();
    assert_eq!(offsets.to_vec(), expected);

    let regs = GuestRegisters::new();
    let base = core::ptr::from_ref(&regs) as usize;
    let fx = core::ptr::from_ref(regs.fxsave_area()) as usize;
    assert_eq!(fx - base, 128, "FXSAVE area right after CR2");
    assert_eq!(fx % 16, 0, "FXSAVE64 needs 16-byte alignment");
    assert_eq!(size_of::<GuestRegisters>(), 128 + 512);
    assert_eq!(align_of::<GuestRegisters>(), 16);
    assert_eq!(
        (size_of::<FxsaveArea>(), align_of::<FxsaveArea>()),
        (512, 16)
    );
}

#[test]
fn initial_fpu_state() {
    let regs = GuestRegisters::default();
    let fx = regs.fxsave_area();
    assert_eq!(fx.fcw(), 0x037f);
    assert_eq!(fx.mxcsr(), 0x1f80);
    assert_eq!(&fx.as_bytes()[..2], &[0x7f, 0x03]);
    assert_eq!(&fx.as_bytes()[24..28], &[0x80, 0x1f, 0, 0]);
    assert_eq!(fx.xmm(0), Some(0));
    assert_eq!(fx.xmm(15), Some(0));
    assert_eq!(fx.xmm(16), None);
    assert_eq!(fx.xmm(usize::MAX), None);
    assert_eq!((regs.rax, regs.r15, regs.cr2), (0, 0, 0));
}

proptest! {
    #[test]
    fn region_headers(revision in any::<u32>(), shadow in any::<bool>()) {
        let mut vmcs = Box::new(VmcsRegion::zeroed());
        let mut vmxon = Box::new(VmxonRegion::zeroed());
        let vmcs_result = vmcs.init(revision, shadow);
        let vmxon_result = vmxon.init(revision);
        if revision < 1 << 31 {
            prop_assert_eq!(vmcs_result, Ok(()));
            prop_assert_eq!(vmxon_result, Ok(()));
            prop_assert_eq!(vmcs.header(), revision | u32::from(shadow) << 31);
            prop_assert_eq!((vmcs.revision_id(), vmcs.is_shadow()), (revision, shadow));
            prop_assert_eq!(vmxon.header(), revision);
            prop_assert_eq!(&region_bytes(&*vmcs)[..4], &vmcs.header().to_le_bytes());
        } else {
            prop_assert_eq!(vmcs_result, Err(RegionError::RevisionIdTooWide(revision)));
            prop_assert_eq!(vmxon_result, Err(RegionError::RevisionIdTooWide(revision)));
            prop_assert_eq!((vmcs.header(), vmxon.header()), (0, 0));
        }
    }

    #[test]
    fn feature_control_decision(bits in any::<u64>()) {
        let current = FeatureControl::from_bits_retain(bits);
        let locked = bits & 1 != 0;
        let outside = bits & 4 != 0;
        match feature_control_update(current) {
            Ok(None) => prop_assert!(locked && outside),
            Ok(Some(new)) => {
                prop_assert!(!locked);
                prop_assert_eq!(new.bits(), bits | 0x5);
            }
            Err(error) => {
                prop_assert!(locked && !outside);
                prop_assert_eq!(error, EnableError::VmxDisabledByFirmware(bits));
            }
        }
    }

    #[test]
    fn control_registers_satisfy_the_fixed_bits(
        cr0 in any::<u64>(), cr4 in any::<u64>(),
        fixed0_0 in any::<u64>(), fixed1_0 in any::<u64>(),
        fixed0_4 in any::<u64>(), fixed1_4 in any::<u64>(),
    ) {
        let f0 = FixedBits { fixed0: fixed0_0, fixed1: fixed1_0 | fixed0_0 };
        let f4 = FixedBits { fixed0: fixed0_4, fixed1: fixed1_4 | fixed0_4 | Cr4::VMXE.bits() };
        let (cr0, cr4) = (Cr0::from_bits_retain(cr0), Cr4::from_bits_retain(cr4));
        match vmx_control_registers(cr0, cr4, CrFixedBits::<Cr0>::cr0(&f0, CrUse::Vmx), CrFixedBits::<Cr4>::cr4(&f4)) {
            Ok((new0, new4)) => {
                prop_assert_eq!(new0.bits(), cr0.bits() | fixed0_0);
                prop_assert_eq!(new4.bits(), cr4.bits() | fixed0_4 | Cr4::VMXE.bits());
                prop_assert_eq!(new0.bits() & !f0.fixed1, 0);
                prop_assert_eq!(new4.bits() & !f4.fixed1, 0);
            }
            Err(EnableError::Cr0MustBeZero(bad)) => {
                prop_assert_ne!(bad, 0);
                prop_assert_eq!(bad, (cr0.bits() | fixed0_0) & !f0.fixed1);
            }
            Err(EnableError::Cr4MustBeZero(bad)) => {
                prop_assert_eq!((cr0.bits() | fixed0_0) & !f0.fixed1, 0);
                prop_assert_ne!(bad, 0);
                prop_assert_eq!(bad, (cr4.bits() | fixed0_4 | Cr4::VMXE.bits()) & !f4.fixed1);
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }
}

#[test]
fn host_state_cache_starts_empty_and_matches_the_trampoline_layout() {
    use vmx_core::HostStateCache;
    let cache = HostStateCache::new();
    assert_eq!(cache, HostStateCache::default());
    assert_eq!((cache.host_rsp(), cache.writes()), (None, 0));
    // The trampoline addresses the cache as two u64: the last HOST_RSP (0 = empty), the write count.
    assert_eq!(
        (size_of::<HostStateCache>(), align_of::<HostStateCache>()),
        (16, 8)
    );
}

/// A leaked 8-KiB, 4-KiB aligned allocation filled with 0xAA: a frame from "an allocator" and the
/// frame after it (for misaligned pointers that stay inside the allocation).
fn dirty_frames() -> *mut u8 {
    let layout = std::alloc::Layout::from_size_align(2 * REGION_SIZE, REGION_SIZE).unwrap();
    // SAFETY: the layout's size is not zero.
    let frame = unsafe { std::alloc::alloc(layout) };
    assert!(!frame.is_null());
    // SAFETY: the allocation is 2 * REGION_SIZE bytes, ours.
    unsafe { core::ptr::write_bytes(frame, 0xaa, 2 * REGION_SIZE) };
    frame
}

fn bytes_at(frame: *const u8, len: usize) -> Vec<u8> {
    // SAFETY: callers pass a range inside a live `dirty_frames` allocation.
    unsafe { core::slice::from_raw_parts(frame, len) }.to_vec()
}

#[test]
fn regions_from_frames_are_zeroed_and_usable() {
    let frames = dirty_frames();
    // SAFETY: the first frame of a fresh allocation that nothing else uses; leaked ('static).
    let vmxon = unsafe { VmxonRegion::from_frame(frames) }.unwrap();
    assert_eq!(
        core::ptr::from_ref(&*vmxon).cast::<u8>(),
        frames.cast_const()
    );
    assert_eq!(vmxon.header(), 0);
    assert!(region_bytes(&*vmxon).iter().all(|&b| b == 0));
    vmxon.init(0x4).unwrap();
    assert_eq!(vmxon.revision_id(), 0x4);
    // The zeroing stopped at the frame's end.
    assert!(
        bytes_at(frames.wrapping_add(REGION_SIZE), REGION_SIZE)
            .iter()
            .all(|&b| b == 0xaa)
    );

    let frame = frames.wrapping_add(REGION_SIZE);
    // SAFETY: the second frame, used by nothing else.
    let vmcs = unsafe { VmcsRegion::from_frame(frame) }.unwrap();
    assert_eq!((vmcs.header(), vmcs.abort_indicator()), (0, 0));
    assert!(region_bytes(&*vmcs).iter().all(|&b| b == 0));
    vmcs.init(0x2b, true).unwrap();
    assert_eq!(vmcs.header(), 0x8000_002b);
}

#[test]
fn bad_frames_are_refused_before_anything_is_written() {
    // SAFETY: a null pointer is refused before any access.
    let null = unsafe { VmxonRegion::from_frame(core::ptr::null_mut()) };
    assert_eq!(null.err(), Some(RegionError::NullFrame));
    // SAFETY: as above.
    let null = unsafe { VmcsRegion::from_frame(core::ptr::null_mut()) };
    assert_eq!(null.err(), Some(RegionError::NullFrame));
    assert_eq!(
        RegionError::FrameMisaligned(0x1008).to_string(),
        "the frame at virtual address 0x1008 is not 4-KiB aligned"
    );
}

proptest! {
    #[test]
    fn misaligned_frames_are_refused_untouched(offset in 1..REGION_SIZE, vmcs in any::<bool>()) {
        let frames = dirty_frames();
        let ptr = frames.wrapping_add(offset);
        let err = if vmcs {
            // SAFETY: misaligned, so refused before any access (and the memory is ours anyway).
            unsafe { VmcsRegion::from_frame(ptr) }.err()
        } else {
            // SAFETY: as above.
            unsafe { VmxonRegion::from_frame(ptr) }.err()
        };
        prop_assert_eq!(err, Some(RegionError::FrameMisaligned(ptr as u64)));
        prop_assert!(bytes_at(frames, 2 * REGION_SIZE).iter().all(|&b| b == 0xaa));
        // SAFETY: allocated by `dirty_frames` with this layout; no reference into it survives.
        unsafe {
            std::alloc::dealloc(
                frames,
                std::alloc::Layout::from_size_align(2 * REGION_SIZE, REGION_SIZE).unwrap(),
            )
        };
    }
}
