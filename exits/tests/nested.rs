//! `exits::nested::exit_owner`: for exits of L2, whether VMCS12 causes them (SDM Vol. 3C, 26.1
//! and 26.2), one or more cases per rule, each with the setting that flips the answer.

use exits::nested::{ExitOwner, L2Registers, exit_owner};
use exits::{RawExitInfo, VmExit};
use vmcs::check::{MemoryError, PhysMemory};
use vmcs::{SoftVmcs, VmcsWrite, fields};
use vmx_caps::{PinBasedControls, PrimaryControls, SecondaryControls};
use vmx_core::{GpReg, GuestRegisters};

use ExitOwner::{Ept12, L0, L1};

const MSR_BITMAP: u64 = 0x1000;
const IO_A: u64 = 0x2000;
const IO_B: u64 = 0x3000;

/// L1's memory: 16 KiB at 0, nothing beyond.
struct Memory(Vec<u8>);

impl PhysMemory for Memory {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let start = address as usize;
        let end = start + buf.len();
        if end > self.0.len() {
            return Err(MemoryError::OutOfRange {
                address,
                len: buf.len(),
            });
        }
        buf.copy_from_slice(&self.0[start..end]);
        Ok(())
    }
}

struct Case {
    vmcs12: SoftVmcs,
    mem: Memory,
    frame: GuestRegisters,
    xss: u64,
    l1_timer: bool,
}

fn case() -> Case {
    let mut vmcs12 = SoftVmcs::all_fields();
    vmcs12
        .write(
            fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
        )
        .unwrap();
    vmcs12
        .write(fields::ADDRESS_OF_MSR_BITMAPS, MSR_BITMAP)
        .unwrap();
    vmcs12.write(fields::ADDRESS_OF_IO_BITMAP_A, IO_A).unwrap();
    vmcs12.write(fields::ADDRESS_OF_IO_BITMAP_B, IO_B).unwrap();
    Case {
        vmcs12,
        mem: Memory(vec![0; 0x4000]),
        frame: GuestRegisters::new(),
        xss: 0,
        l1_timer: false,
    }
}

impl Case {
    fn owner(&mut self, raw: RawExitInfo) -> ExitOwner {
        let regs = L2Registers {
            frame: &self.frame,
            rsp: 0x7777,
            ia32_xss: self.xss,
        };
        exit_owner(
            &VmExit::from_raw(&raw),
            &self.vmcs12,
            &mut self.mem,
            &regs,
            self.l1_timer,
        )
        .unwrap()
    }
    fn proc(&mut self, c: PrimaryControls) {
        self.vmcs12
            .modify(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, |p| {
                p | c
            })
            .unwrap();
    }
    fn proc2(&mut self, c: SecondaryControls) {
        self.vmcs12
            .modify(
                fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                |p| p | c,
            )
            .unwrap();
    }
    fn w(&mut self, encoding: u32, value: u64) {
        self.vmcs12.write_raw(encoding, value).unwrap();
    }
}

fn exit(reason: u32) -> RawExitInfo {
    RawExitInfo {
        reason,
        instruction_length: 2,
        ..Default::default()
    }
}

fn exit_q(reason: u32, qualification: u64) -> RawExitInfo {
    RawExitInfo {
        qualification,
        ..exit(reason)
    }
}

#[test]
fn unconditional_exits_are_l1s_and_hardware_events_l0s() {
    let mut c = case();
    // Triple fault, task switch, CPUID, GETSEC, INVD, VMCALL..VMXON, INVEPT, INVVPID, XSETBV.
    for reason in [
        2, 9, 10, 11, 13, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53, 55,
    ] {
        assert_eq!(c.owner(exit(reason)), L1, "reason {reason}");
    }
    // External interrupt, INIT, SIPI, SMIs, failed entries of VMCS02, APIC access.
    for reason in [1, 3, 4, 5, 6, 0x8000_0021, 0x8000_0022, 44] {
        assert_eq!(c.owner(exit(reason)), L0, "reason {reason}");
    }
}

#[test]
fn instruction_exits_follow_their_vmcs12_control() {
    let primary = [
        (12, PrimaryControls::HLT_EXITING),
        (14, PrimaryControls::INVLPG_EXITING),
        (15, PrimaryControls::RDPMC_EXITING),
        (16, PrimaryControls::RDTSC_EXITING),
        (36, PrimaryControls::MWAIT_EXITING),
        (39, PrimaryControls::MONITOR_EXITING),
        (40, PrimaryControls::PAUSE_EXITING),
        (29, PrimaryControls::MOV_DR_EXITING),
        (7, PrimaryControls::INTERRUPT_WINDOW_EXITING),
        (8, PrimaryControls::NMI_WINDOW_EXITING),
        (37, PrimaryControls::MONITOR_TRAP_FLAG),
        (43, PrimaryControls::USE_TPR_SHADOW),
    ];
    for (reason, control) in primary {
        let mut c = case();
        assert_eq!(
            c.owner(exit(reason)),
            L0,
            "reason {reason} without {control:?}"
        );
        c.proc(control);
        assert_eq!(
            c.owner(exit(reason)),
            L1,
            "reason {reason} with {control:?}"
        );
    }
    let secondary = [
        (54, SecondaryControls::WBINVD_EXITING),
        (57, SecondaryControls::RDRAND_EXITING),
        (61, SecondaryControls::RDSEED_EXITING),
        (46, SecondaryControls::DESCRIPTOR_TABLE_EXITING),
        (47, SecondaryControls::DESCRIPTOR_TABLE_EXITING),
        (40, SecondaryControls::PAUSE_LOOP_EXITING),
        (44, SecondaryControls::VIRTUALIZE_APIC_ACCESSES),
        (45, SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
        // APIC write: after a write virtualized by any of these.
        (56, SecondaryControls::VIRTUALIZE_APIC_ACCESSES),
        (56, SecondaryControls::VIRTUALIZE_X2APIC_MODE),
        (56, SecondaryControls::APIC_REGISTER_VIRTUALIZATION),
        (56, SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
    ];
    for (reason, control) in secondary {
        let mut c = case();
        assert_eq!(
            c.owner(exit(reason)),
            L0,
            "reason {reason} without {control:?}"
        );
        c.proc2(control);
        assert_eq!(
            c.owner(exit(reason)),
            L1,
            "reason {reason} with {control:?}"
        );
    }
    // INVPCID needs both "INVLPG exiting" and "enable INVPCID".
    let mut c = case();
    c.proc(PrimaryControls::INVLPG_EXITING);
    assert_eq!(c.owner(exit(58)), L0);
    c.proc2(SecondaryControls::ENABLE_INVPCID);
    assert_eq!(c.owner(exit(58)), L1);
}

/// SDM Vol. 3C 26.1.3, RDTSCP: "causes a VM exit if the 'RDTSC exiting' and 'enable RDTSCP'
/// VM-execution controls are both 1"; with "enable RDTSCP" 0 it raises #UD, so an RDTSCP exit of
/// L2 is not L1's when VMCS12 has only "RDTSC exiting".
#[test]
fn rdtscp_needs_rdtsc_exiting_and_enable_rdtscp() {
    let mut c = case();
    c.proc(PrimaryControls::RDTSC_EXITING);
    assert_eq!(c.owner(exit(51)), L0, "RDTSC exiting alone");
    c.proc2(SecondaryControls::ENABLE_RDTSCP);
    assert_eq!(c.owner(exit(51)), L1, "both controls");
    let mut c = case();
    c.proc2(SecondaryControls::ENABLE_RDTSCP);
    assert_eq!(c.owner(exit(51)), L0, "enable RDTSCP alone");
}

#[test]
fn exceptions_follow_the_bitmap_and_page_faults_the_error_code_filter() {
    let mut c = case();
    let ud = RawExitInfo {
        interruption_info: 0x8000_0306,
        ..exit(0)
    };
    assert_eq!(c.owner(ud), L0);
    c.w(fields::EXCEPTION_BITMAP.encoding(), 1 << 6);
    assert_eq!(c.owner(ud), L1);
    // #PF with error code 3 (present, write).
    let pf = |code| RawExitInfo {
        interruption_info: 0x8000_0b0e,
        interruption_error_code: code,
        ..exit(0)
    };
    c.w(fields::EXCEPTION_BITMAP.encoding(), 1 << 14);
    assert_eq!(c.owner(pf(3)), L1);
    // Mask = match = 1 (present faults only): a not-present fault inverts bit 14.
    c.w(fields::PAGE_FAULT_ERROR_CODE_MASK.encoding(), 1);
    c.w(fields::PAGE_FAULT_ERROR_CODE_MATCH.encoding(), 1);
    assert_eq!(c.owner(pf(3)), L1);
    assert_eq!(c.owner(pf(2)), L0);
    // Bit 14 clear with a non-matching filter: only the non-matching faults exit.
    c.w(fields::EXCEPTION_BITMAP.encoding(), 0);
    assert_eq!(c.owner(pf(3)), L0);
    assert_eq!(c.owner(pf(2)), L1);
    // INT3 (software exception, vector 3) follows the bitmap too.
    let bp = RawExitInfo {
        interruption_info: 0x8000_0603,
        ..exit(0)
    };
    assert_eq!(c.owner(bp), L0);
    c.w(fields::EXCEPTION_BITMAP.encoding(), 1 << 3);
    assert_eq!(c.owner(bp), L1);
    // An NMI follows "NMI exiting", not the bitmap.
    let nmi = RawExitInfo {
        interruption_info: 0x8000_0202,
        ..exit(0)
    };
    c.w(fields::EXCEPTION_BITMAP.encoding(), 1 << 2);
    assert_eq!(c.owner(nmi), L0);
    c.vmcs12
        .write(
            fields::PIN_BASED_VM_EXECUTION_CONTROLS,
            PinBasedControls::NMI_EXITING,
        )
        .unwrap();
    assert_eq!(c.owner(nmi), L1);
}

#[test]
fn mov_to_cr0_and_cr4_exit_where_an_owned_bit_differs_from_the_shadow() {
    let mut c = case();
    // MOV CR0, RBX (qualification: CR 0, MOV to, register 3).
    let mov_cr0 = exit_q(28, 3 << 8);
    c.frame.set_gpr(GpReg::Rbx, 0x8000_0031).unwrap();
    c.w(fields::CR0_GUEST_HOST_MASK.encoding(), 0x20); // NE
    c.w(fields::CR0_READ_SHADOW.encoding(), 0x20);
    assert_eq!(c.owner(mov_cr0), L0);
    c.frame.set_gpr(GpReg::Rbx, 0x8000_0011).unwrap();
    assert_eq!(c.owner(mov_cr0), L1);
    // MOV CR4, RSP: the value is VMCS02's GUEST_RSP (7777H here, with bit 13, VMXE, set).
    let mov_cr4_rsp = exit_q(28, 4 | 4 << 8);
    c.w(fields::CR4_GUEST_HOST_MASK.encoding(), 1 << 13);
    c.w(fields::CR4_READ_SHADOW.encoding(), 0);
    assert_eq!(c.owner(mov_cr4_rsp), L1);
    c.w(fields::CR4_READ_SHADOW.encoding(), 1 << 13);
    assert_eq!(c.owner(mov_cr4_rsp), L0);
    // MOV from CR0 never exits for L1.
    assert_eq!(c.owner(exit_q(28, 1 << 4)), L0);
}

#[test]
fn mov_to_cr3_exits_unless_the_value_is_one_of_the_counted_targets() {
    let mut c = case();
    let mov_cr3 = exit_q(28, 3 | 1 << 8); // MOV CR3, RCX
    c.frame.set_gpr(GpReg::Rcx, 0x5000).unwrap();
    assert_eq!(c.owner(mov_cr3), L0);
    c.proc(PrimaryControls::CR3_LOAD_EXITING);
    assert_eq!(c.owner(mov_cr3), L1);
    c.w(fields::CR3_TARGET_VALUE_1.encoding(), 0x5000);
    c.w(fields::CR3_TARGET_COUNT.encoding(), 1); // only target 0 counts
    assert_eq!(c.owner(mov_cr3), L1);
    c.w(fields::CR3_TARGET_COUNT.encoding(), 2);
    assert_eq!(c.owner(mov_cr3), L0);
    // MOV from CR3 and CR8 accesses follow their controls.
    let from_cr3 = exit_q(28, 3 | 1 << 4);
    assert_eq!(c.owner(from_cr3), L0);
    c.proc(PrimaryControls::CR3_STORE_EXITING);
    assert_eq!(c.owner(from_cr3), L1);
    assert_eq!(c.owner(exit_q(28, 8)), L0);
    c.proc(PrimaryControls::CR8_LOAD_EXITING);
    assert_eq!(c.owner(exit_q(28, 8)), L1);
}

#[test]
fn clts_and_lmsw_follow_the_cr0_mask_and_shadow() {
    let mut c = case();
    let clts = exit_q(28, 2 << 4);
    c.w(fields::CR0_GUEST_HOST_MASK.encoding(), 1 << 3);
    assert_eq!(c.owner(clts), L0); // shadow TS = 0
    c.w(fields::CR0_READ_SHADOW.encoding(), 1 << 3);
    assert_eq!(c.owner(clts), L1);
    // LMSW with source 0009H (PE, TS): TS owned and equal to the shadow → no exit.
    let lmsw = |source: u64| exit_q(28, 3 << 4 | source << 16);
    assert_eq!(c.owner(lmsw(0x9)), L0);
    assert_eq!(c.owner(lmsw(0x1)), L1); // clears the owned TS
    // PE owned with shadow 0: LMSW setting PE exits; LMSW cannot clear PE.
    c.w(fields::CR0_GUEST_HOST_MASK.encoding(), 1);
    c.w(fields::CR0_READ_SHADOW.encoding(), 0);
    assert_eq!(c.owner(lmsw(0x1)), L1);
    assert_eq!(c.owner(lmsw(0x0)), L0);
    c.w(fields::CR0_READ_SHADOW.encoding(), 1);
    assert_eq!(c.owner(lmsw(0x0)), L0);
}

#[test]
fn io_follows_l1s_bitmaps_in_its_memory_or_unconditional_exiting() {
    let mut c = case();
    // OUT DX, AL to 80H; IN EAX, DX from 7FFEH (straddles A and B).
    let out80 = exit_q(30, 0x80 << 16);
    let in7ffe = exit_q(30, 3 | 1 << 3 | 0x7ffe << 16);
    assert_eq!(c.owner(out80), L0);
    c.proc(PrimaryControls::UNCONDITIONAL_IO_EXITING);
    assert_eq!(c.owner(out80), L1);
    c.proc(PrimaryControls::USE_IO_BITMAPS); // bitmaps take precedence
    assert_eq!(c.owner(out80), L0);
    c.mem.0[IO_A as usize + 0x10] = 1; // port 80H
    assert_eq!(c.owner(out80), L1);
    assert_eq!(c.owner(in7ffe), L0);
    c.mem.0[IO_B as usize] = 1; // port 8000H, the last byte of the access
    assert_eq!(c.owner(in7ffe), L1);
    // A word access at FFFFH wraps: always exits.
    assert_eq!(c.owner(exit_q(30, 1 | 0xffff << 16)), L1);
    // Bitmap B outside L1's memory reads as all ones.
    c.w(fields::ADDRESS_OF_IO_BITMAP_B.encoding(), 0x10_0000);
    assert_eq!(c.owner(exit_q(30, 0x9000 << 16)), L1);
}

#[test]
fn msr_accesses_follow_l1s_msr_bitmap() {
    let mut c = case();
    c.frame.set_gpr(GpReg::Rcx, 0xc000_0080).unwrap();
    // Without MSR bitmaps, every RDMSR/WRMSR exits.
    assert_eq!(c.owner(exit(31)), L1);
    c.proc(PrimaryControls::USE_MSR_BITMAPS);
    assert_eq!(c.owner(exit(31)), L0);
    assert_eq!(c.owner(exit(32)), L0);
    // Write-high bitmap (byte 3072 + 80H / 8): WRMSR of IA32_EFER.
    c.mem.0[MSR_BITMAP as usize + 3072 + 0x10] = 1;
    assert_eq!(c.owner(exit(31)), L0);
    assert_eq!(c.owner(exit(32)), L1);
    // An MSR outside both ranges always exits.
    c.frame.set_gpr(GpReg::Rcx, 0x4000_0000).unwrap();
    assert_eq!(c.owner(exit(31)), L1);
}

/// SDM Vol. 3C 26.1.3, RDMSR and WRMSRNS: the immediate forms (exit reasons 84 and 85) follow the
/// MSR bitmaps as RDMSR and WRMSR do, for the MSR index of the immediate operand (the exit
/// qualification), not ECX.
#[test]
fn immediate_msr_accesses_follow_l1s_msr_bitmap_for_the_immediate_index() {
    let mut c = case();
    // ECX names an MSR outside the bitmap ranges: only the immediate index must count.
    c.frame.set_gpr(GpReg::Rcx, 0x4000_0000).unwrap();
    // Without MSR bitmaps, every access exits to L1.
    assert_eq!(c.owner(exit_q(84, 0xc000_0080)), L1);
    assert_eq!(c.owner(exit_q(85, 0xc000_0080)), L1);
    c.proc(PrimaryControls::USE_MSR_BITMAPS);
    assert_eq!(c.owner(exit_q(84, 0xc000_0080)), L0);
    assert_eq!(c.owner(exit_q(85, 0xc000_0080)), L0);
    // Write-high bitmap (byte 3072 + 80H / 8): the write of IA32_EFER is L1's, the read is not.
    c.mem.0[MSR_BITMAP as usize + 3072 + 0x10] = 1;
    assert_eq!(c.owner(exit_q(84, 0xc000_0080)), L0);
    assert_eq!(c.owner(exit_q(85, 0xc000_0080)), L1);
    // Read-low bitmap (byte 10H / 8): reading MSR 10H (IA32_TIME_STAMP_COUNTER).
    c.mem.0[MSR_BITMAP as usize + 2] = 1;
    assert_eq!(c.owner(exit_q(84, 0x10)), L1);
    assert_eq!(c.owner(exit_q(85, 0x10)), L0);
    // An immediate index outside both ranges always exits.
    assert_eq!(c.owner(exit_q(84, 0x4000_0000)), L1);
}

#[test]
fn xsaves_exits_on_edx_eax_and_xss_and_the_xss_exiting_bitmap() {
    let mut c = case();
    c.proc2(SecondaryControls::ENABLE_XSAVES_XRSTORS);
    c.frame.set_gpr(GpReg::Rax, 1 << 8).unwrap();
    c.xss = 1 << 8;
    assert_eq!(c.owner(exit(63)), L0);
    c.w(fields::XSS_EXITING_BITMAP.encoding(), 1 << 8);
    assert_eq!(c.owner(exit(63)), L1);
    assert_eq!(c.owner(exit(64)), L1);
    c.xss = 0;
    assert_eq!(c.owner(exit(63)), L0);
}

#[test]
fn the_preemption_timer_and_ept_exits() {
    let mut c = case();
    assert_eq!(c.owner(exit(52)), L0);
    c.vmcs12
        .write(
            fields::PIN_BASED_VM_EXECUTION_CONTROLS,
            PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER,
        )
        .unwrap();
    assert_eq!(c.owner(exit(52)), L0); // L0's shorter timer expired
    c.l1_timer = true;
    assert_eq!(c.owner(exit(52)), L1);
    // EPT violation / misconfiguration: EPT01's without L1's EPT, else a walk of EPT12.
    assert_eq!(c.owner(exit(48)), L0);
    assert_eq!(c.owner(exit(49)), L0);
    c.proc2(SecondaryControls::ENABLE_EPT);
    assert_eq!(c.owner(exit(48)), Ept12);
    assert_eq!(c.owner(exit(49)), Ept12);
}
