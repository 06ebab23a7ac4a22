//! Hostile-input campaign for `exits`: `nested::exit_owner` over exits decoded from arbitrary
//! exit information, VMCS12s of arbitrary contents, L1 memory of arbitrary bytes (bitmaps
//! anywhere, inside or outside it) and arbitrary L2 registers; and the serde forms of the
//! crate's types through the campaign shared with the other crates. Besides the absence of
//! panics (debug build: overflow checks on): the exits every VMCS12 causes are L1's (SDM Vol.
//! 3C, 26.1 "Instructions That Cause VM Exits Unconditionally"), the hardware events and failed
//! entries are L0's, only EPT violations and misconfigurations go through EPT12, and without
//! "use I/O bitmaps" and "use MSR bitmaps" L1's memory decides nothing. Event injection,
//! re-injection and instruction completion run over VMCSs of arbitrary contents.

#[cfg(feature = "serde")]
#[path = "../../vmcs-fields/tests/serde_campaign/mod.rs"]
mod serde_campaign;

#[path = "../../vmcs-fields/tests/hostile_cases/mod.rs"]
mod hostile_cases;

use exits::nested::{ExitOwner, L2Registers, exit_owner};
use exits::{RawExitInfo, VmExit};
use hostile_cases::cases;
use proptest::prelude::*;
use vmcs::check::FlatMemory;
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite, fields};
use vmx_caps::{MsrSnapshot, PrimaryControls, VmxCapabilities};
use vmx_core::GuestRegisters;

/// Basic exit reasons every VMCS12 causes: triple fault, task switch, CPUID, GETSEC, INVD,
/// RSM, VMCALL to VMXON, INVEPT, INVVPID, XSETBV, VMFUNC.
const UNCONDITIONAL: [u32; 20] = [
    2, 9, 10, 11, 13, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53, 55, 59,
];
/// Physical external interrupts, INIT, SIPI, I/O SMI, other SMI.
const HARDWARE: [u32; 5] = [1, 3, 4, 5, 6];

/// Bochs' core2_penryn_t9600, whose VMCS lacks the newer fields.
fn penryn() -> VmxCapabilities {
    static CAPS: std::sync::OnceLock<VmxCapabilities> = std::sync::OnceLock::new();
    *CAPS.get_or_init(|| {
        let text = include_str!("../../vmx-caps/testdata/core2_penryn_t9600.msr");
        VmxCapabilities::read(&mut MsrSnapshot::parse(text).unwrap()).unwrap()
    })
}

fn raw_exit() -> impl Strategy<Value = RawExitInfo> {
    (
        prop_oneof![6 => 0..80u32, 1 => any::<u32>(), 1 => (0..80u32).prop_map(|r| r | 1 << 31)],
        any::<u64>(),
        any::<[u32; 6]>(),
        any::<[u64; 2]>(),
    )
        .prop_map(|(reason, qualification, w, a)| RawExitInfo {
            reason,
            qualification,
            guest_linear_address: a[0],
            guest_physical_address: a[1],
            interruption_info: w[0],
            interruption_error_code: w[1],
            idt_vectoring_info: w[2],
            idt_vectoring_error_code: w[3],
            instruction_length: w[4] % 16,
            instruction_info: w[5],
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    #[test]
    fn exit_owner_is_total_and_keeps_the_unconditional_rules(
        raw in raw_exit(),
        values in proptest::collection::vec(
            prop_oneof![any::<u64>(), 0..0x4000u64, Just(0u64), Just(u64::MAX)], 1..24),
        memory in proptest::collection::vec(any::<u8>(), 0..0x4000),
        base in prop_oneof![Just(0u64), any::<u64>()],
        gprs in any::<[u64; 16]>(),
        rsp in any::<u64>(),
        xss in any::<u64>(),
        l1_timer in any::<bool>(),
        restricted in any::<bool>(),
    ) {
        // VMCS12: every field, or penryn's (fields above its highest index missing).
        let mut vmcs12 = if restricted {
            SoftVmcs::new(&penryn())
        } else {
            SoftVmcs::all_fields()
        };
        for (i, f) in fields::ALL.iter().enumerate() {
            let _ = vmcs12.write_raw(f.encoding, values[i % values.len()]);
        }
        let mut frame = GuestRegisters::new();
        for (i, v) in gprs.iter().enumerate() {
            if let Some(reg) = vmx_core::GpReg::from_index(i as u64) {
                let _ = frame.set_gpr(reg, *v);
            }
        }
        let regs = L2Registers { frame: &frame, rsp, ia32_xss: xss };
        let exit = VmExit::from_raw(&raw);
        let mut mem = FlatMemory { base, bytes: &memory };
        let Ok(owner) = exit_owner(&exit, &vmcs12, &mut mem, &regs, l1_timer) else {
            // A typed error only where VMCS12 lacks a field.
            prop_assert!(restricted);
            return Ok(());
        };
        let basic = raw.reason & 0xffff;
        // The VM-entry failures the processor reports (invalid guest state, MSR loading, machine
        // check); bit 31 with another basic reason decodes as that reason.
        let entry_failure = raw.reason >> 31 == 1 && matches!(basic, 33 | 34 | 41);
        if entry_failure || HARDWARE.contains(&basic) {
            prop_assert_eq!(owner, ExitOwner::L0, "{:?}", exit);
        } else if UNCONDITIONAL.contains(&basic) && raw.reason >> 16 == 0 {
            prop_assert_eq!(owner, ExitOwner::L1, "{:?}", exit);
        }
        if owner == ExitOwner::Ept12 {
            let ept = matches!(exit, VmExit::EptViolation { .. } | VmExit::EptMisconfiguration { .. });
            prop_assert!(ept, "EPT12 for {:?}", exit);
        }
        // Without the bitmaps, L1's memory decides nothing.
        let proc = vmcs12.read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS).unwrap();
        if !proc.intersects(PrimaryControls::USE_IO_BITMAPS | PrimaryControls::USE_MSR_BITMAPS) {
            let ones = vec![0xffu8; memory.len()];
            let mut other = FlatMemory { base, bytes: &ones };
            prop_assert_eq!(exit_owner(&exit, &vmcs12, &mut other, &regs, l1_timer), Ok(owner));
        }
    }
}

#[cfg(feature = "serde")]
mod serde_forms {
    use super::cases;
    use super::serde_campaign::Campaign;
    use exits::{ExitReason, RawExitInfo, VmExit};
    use proptest::prelude::*;

    fn samples() -> Vec<VmExit> {
        [
            (0, 0x8000_0b0e, 0x1234),
            (10, 0, 0),
            (28, 0x3, 0),
            (30, 0x0070_0009, 0),
            (31, 0, 0),
            (48, 0x183, 0),
            (2, 0, 0),
        ]
        .into_iter()
        .map(|(reason, info, qualification)| {
            VmExit::from_raw(&RawExitInfo {
                reason,
                interruption_info: info,
                qualification,
                instruction_length: 2,
                ..RawExitInfo::default()
            })
        })
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

        #[test]
        fn hostile_json(c in Campaign::strategy()) {
            c.run(&samples(), |_| true)?;
            c.run(&[RawExitInfo { reason: 48, qualification: 0x183, ..RawExitInfo::default() }], |_| true)?;
            c.run(&[ExitReason::from_raw(0x8000_0021)], |_| true)?;
            c.run(&[exits::inject::Exception::PF, exits::inject::Exception::DE], |e| e.vector() < 32 && e.vector() != 2)?;
        }
    }
}

mod injection {
    use super::cases;
    use exits::inject::{
        Delivery, Exception, deliver_external_interrupt, inject_exception, reinject,
    };
    use exits::{IdtVectoring, InstructionLength, complete::skip_instruction};
    use proptest::prelude::*;
    use vmcs::{SoftVmcs, VmcsRead, fields};

    /// A VMCS with every field holding one of `values` (masked to its width).
    fn vmcs_of(values: &[u64]) -> SoftVmcs {
        let mut vmcs = SoftVmcs::all_fields();
        for (i, f) in fields::ALL.iter().enumerate() {
            vmcs.store(f.encoding, values[i % values.len()] & f.width().mask())
                .unwrap();
        }
        vmcs
    }

    fn entry_info(vmcs: &SoftVmcs) -> u64 {
        vmcs.read_raw(fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding())
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

        /// Event injection and instruction completion over VMCSs of arbitrary contents: an
        /// injected event is what the entry interruption-information field says (valid, its
        /// vector), a re-injected IDT-vectoring event is the one read, a window request leaves
        /// the field alone, and an instruction is skipped by exactly its length when 1 to 15.
        #[test]
        fn events_and_skips_over_any_vmcs(
            values in proptest::collection::vec(any::<u64>(), 1..24),
            vector in any::<u8>(),
            error_code in proptest::option::of(any::<u32>()),
            length in any::<u32>(),
        ) {
            let mut vmcs = vmcs_of(&values);
            if let Ok(exception) = Exception::new(vector) {
                if inject_exception(&mut vmcs, exception, error_code).is_ok() {
                    let info = entry_info(&vmcs);
                    prop_assert_eq!(info >> 31, 1);
                    prop_assert_eq!(info & 0xff, u64::from(vector));
                    prop_assert_eq!(info >> 11 & 1 == 1, exception.has_error_code());
                }
            } else {
                prop_assert!(vector >= 32 || vector == 2);
            }

            let mut vmcs = vmcs_of(&values);
            let before = entry_info(&vmcs);
            match deliver_external_interrupt(&mut vmcs, vector) {
                Ok(Delivery::Injected) => {
                    prop_assert_eq!(entry_info(&vmcs), 0x8000_0000 | u64::from(vector));
                }
                Ok(Delivery::WindowRequested) => prop_assert_eq!(entry_info(&vmcs), before),
                Err(_) => {}
            }

            let mut vmcs = vmcs_of(&values);
            if let Ok(Some(event)) = IdtVectoring::read(&vmcs, None)
                && reinject(&mut vmcs, &event).is_ok()
            {
                let info = entry_info(&vmcs);
                prop_assert_eq!(info & 0xff, u64::from(event.info.vector));
                prop_assert_eq!(info >> 31, 1);
            }

            let mut vmcs = vmcs_of(&values);
            let rip = vmcs.read_raw(fields::GUEST_RIP.encoding()).unwrap();
            match skip_instruction(&mut vmcs, InstructionLength(length)) {
                Ok(skipped) => {
                    prop_assert!((1..=15).contains(&length));
                    let moved = skipped.rip.wrapping_sub(rip) & 0xffff_ffff;
                    prop_assert_eq!(moved, u64::from(length));
                    prop_assert_eq!(vmcs.read_raw(fields::GUEST_RIP.encoding()), Ok(skipped.rip));
                }
                Err(_) => prop_assert!(!(1..=15).contains(&length)),
            }
        }
    }
}
