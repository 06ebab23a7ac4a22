//! The guest's checks: each exercises one VM-exit path and verifies both what the guest sees and, through
//! [`abi::HC_EXIT_COUNT`], that the expected exits (and no others of that kind) happened.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc};

use vmx_caps::arch::{Cr0, Cr4, Efer, Xcr0};
use vmx_caps::msr::{
    IA32_EFER, IA32_FEATURE_CONTROL, IA32_MISC_ENABLE, IA32_SYSENTER_CS, IA32_SYSENTER_ESP,
    IA32_TIME_STAMP_COUNTER, IA32_VMX_BASIC, IA32_VMX_PROCBASED_CTLS2,
    IA32_VMX_TRUE_PROCBASED_CTLS,
};

use super::abi::{self, reason};
use super::{Fault, GP, IRQ_VECTOR, UD, exit_count, gprintln, guarded, hypercall, inb, outb};

pub(super) type Check = Result<(), &'static str>;

pub(super) fn ensure(condition: bool, why: &'static str) -> Check {
    if condition { Ok(()) } else { Err(why) }
}

fn expect_fault(fault: Option<Fault>, vector: u8, why: &'static str) -> Check {
    match fault {
        Some(f) if f.vector == vector && (vector != GP || f.error == 0) => Ok(()),
        _ => Err(why),
    }
}

/// The error of a test that needs a feature this CPU lacks: reported as [`abi::REPORT_SKIPPED`].
pub(super) const NOT_SUPPORTED: &str = "not supported by this CPU";

/// The tests, in the order of [`abi::TESTS`].
const TESTS: [fn() -> Check; 24] = [
    cpuid_hypervisor_leaf,
    msr_passthrough,
    msr_emulated,
    msr_forbidden_gp,
    io_uart,
    io_unclaimed_ports,
    hlt_preemption_timer,
    vmcall,
    mmio_device,
    xsetbv,
    invd_wbinvd,
    cr_access,
    vmx_instructions_ud,
    unbacked_memory,
    cpuid_timing,
    register_preservation,
    msr_areas,
    apic_virtualization,
    virtual_interrupt_delivery,
    vmfunc_eptp_switch,
    virtualization_exception,
    pml_log,
    monitor_mwait,
    super::nested::nested_vmx,
];
const _: () = assert!(TESTS.len() == abi::TESTS.len());

/// Runs every test, printing and reporting each result.
pub fn run_all() {
    for (index, test) in TESTS.iter().enumerate() {
        let name = abi::TESTS[index];
        let report = match test() {
            Ok(()) => {
                gprintln!("test {index:2} {name}: ok");
                abi::REPORT_PASS
            }
            Err(NOT_SUPPORTED) => {
                gprintln!("test {index:2} {name}: skipped ({NOT_SUPPORTED})");
                abi::REPORT_SKIPPED
            }
            Err(why) => {
                gprintln!("test {index:2} {name}: FAILED: {why}");
                abi::REPORT_FAIL
            }
        };
        hypercall(abi::HC_REPORT, index as u64, report, 0);
    }
}

fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    // CPUID is always available; in the guest it exits to the hypervisor.
    let r = __cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

fn rdmsr(msr: u32) -> Result<u64, Fault> {
    let (lo, hi): (u32, u32);
    match guarded!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) {
        None => Ok(u64::from(hi) << 32 | u64::from(lo)),
        Some(f) => Err(f),
    }
}

fn wrmsr(msr: u32, value: u64) -> Option<Fault> {
    guarded!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32)
}

pub(super) fn rdtsc() -> u64 {
    // SAFETY: RDTSC is enabled at CPL 0 (CR4.TSD only restricts CPL > 0).
    unsafe { _rdtsc() }
}

fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 at CPL 0.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 at CPL 0.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn cpuid_hypervisor_leaf() -> Check {
    let before = exit_count(reason::CPUID);
    let (max, b, c, d) = cpuid(0x4000_0000, 0);
    ensure(
        max == abi::CPUID_HV_MAX_LEAF,
        "leaf 0x40000000 EAX is not the highest hypervisor leaf",
    )?;
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&b.to_le_bytes());
    signature[4..8].copy_from_slice(&c.to_le_bytes());
    signature[8..12].copy_from_slice(&d.to_le_bytes());
    ensure(
        signature == abi::CPUID_HV_SIGNATURE,
        "wrong hypervisor vendor signature",
    )?;
    let (version, ..) = cpuid(0x4000_0001, 0);
    ensure(
        version == abi::HC_ABI_VERSION,
        "leaf 0x40000001 EAX is not the ABI version",
    )?;
    let (_, _, ecx, _) = cpuid(1, 0);
    ensure(
        ecx & (1 << 31) != 0,
        "CPUID.1:ECX.hypervisor (bit 31) is clear",
    )?;
    // VMX is visible exactly when the hypervisor offers it (nested VMX).
    let nested = features() & abi::FEATURE_NESTED_VMX != 0;
    ensure(
        (ecx & (1 << 5) != 0) == nested,
        "CPUID.1:ECX.VMX (bit 5) does not match whether VMX is offered",
    )?;
    let exits = exit_count(reason::CPUID) - before;
    ensure(exits == 3, "expected exactly 3 CPUID exits")
}

fn msr_exits() -> (u64, u64) {
    (exit_count(reason::RDMSR), exit_count(reason::WRMSR))
}

fn msr_passthrough() -> Check {
    let before = msr_exits();
    let esp = 0xffff_8000_1234_5000;
    ensure(
        wrmsr(IA32_SYSENTER_ESP, esp).is_none(),
        "WRMSR IA32_SYSENTER_ESP faulted",
    )?;
    ensure(
        rdmsr(IA32_SYSENTER_ESP) == Ok(esp),
        "IA32_SYSENTER_ESP did not read back",
    )?;
    ensure(
        wrmsr(IA32_SYSENTER_CS, 0x10).is_none(),
        "WRMSR IA32_SYSENTER_CS faulted",
    )?;
    ensure(
        rdmsr(IA32_SYSENTER_CS) == Ok(0x10),
        "IA32_SYSENTER_CS did not read back",
    )?;
    let t0 = rdmsr(IA32_TIME_STAMP_COUNTER).map_err(|_| "RDMSR IA32_TIME_STAMP_COUNTER faulted")?;
    let t1 = rdmsr(IA32_TIME_STAMP_COUNTER).map_err(|_| "RDMSR IA32_TIME_STAMP_COUNTER faulted")?;
    ensure(t1 > t0, "the TSC did not advance")?;
    ensure(
        msr_exits() == before,
        "a pass-through MSR access caused a VM exit",
    )
}

fn msr_emulated() -> Check {
    let before = msr_exits();
    let efer = rdmsr(IA32_EFER).map_err(|_| "RDMSR IA32_EFER faulted")?;
    ensure(
        efer & (Efer::LME.bits() | Efer::LMA.bits()) == Efer::LME.bits() | Efer::LMA.bits(),
        "EFER.LME/LMA clear in long mode",
    )?;
    ensure(
        wrmsr(IA32_EFER, efer | Efer::NXE.bits()).is_none(),
        "WRMSR IA32_EFER (NXE) faulted",
    )?;
    let efer2 = rdmsr(IA32_EFER).map_err(|_| "RDMSR IA32_EFER faulted")?;
    ensure(
        efer2 == efer | Efer::NXE.bits(),
        "EFER.NXE did not stick (or LMA changed)",
    )?;
    let pattern = 0x0123_4567_89ab_cdef;
    ensure(
        wrmsr(abi::MSR_SCRATCH, pattern).is_none(),
        "WRMSR scratch MSR faulted",
    )?;
    ensure(
        rdmsr(abi::MSR_SCRATCH) == Ok(pattern),
        "scratch MSR did not read back",
    )?;
    let feature_control = if features() & abi::FEATURE_NESTED_VMX != 0 {
        abi::FEATURE_CONTROL_NESTED_VALUE
    } else {
        abi::FEATURE_CONTROL_VALUE
    };
    ensure(
        rdmsr(IA32_FEATURE_CONTROL) == Ok(feature_control),
        "IA32_FEATURE_CONTROL does not read as locked with VMX off (or on, when offered)",
    )?;
    ensure(
        rdmsr(IA32_MISC_ENABLE) == Ok(abi::MISC_ENABLE_VALUE),
        "IA32_MISC_ENABLE is not the emulated value",
    )?;
    let after = msr_exits();
    ensure(after.0 - before.0 == 5, "expected exactly 5 RDMSR exits")?;
    ensure(after.1 - before.1 == 2, "expected exactly 2 WRMSR exits")
}

fn msr_forbidden_gp() -> Check {
    let before = msr_exits();
    expect_fault(
        wrmsr(IA32_FEATURE_CONTROL, 5),
        GP,
        "WRMSR IA32_FEATURE_CONTROL did not #GP",
    )?;
    if features() & abi::FEATURE_NESTED_VMX != 0 {
        // VMX offered: the capability MSRs read (the virtual ones), the VMX-basic revision is
        // the hypervisor's VMCS12 format.
        let basic = rdmsr(IA32_VMX_BASIC).map_err(|_| "RDMSR IA32_VMX_BASIC faulted")?;
        ensure(
            basic & 0x7fff_ffff == u64::from(abi::NESTED_VMCS_REVISION),
            "IA32_VMX_BASIC does not carry the nested VMCS revision",
        )?;
        ensure(
            rdmsr(IA32_VMX_PROCBASED_CTLS2).is_ok(),
            "RDMSR IA32_VMX_PROCBASED_CTLS2 faulted",
        )?;
        ensure(
            rdmsr(IA32_VMX_TRUE_PROCBASED_CTLS).is_ok(),
            "RDMSR IA32_VMX_TRUE_PROCBASED_CTLS faulted",
        )?;
    } else {
        expect_fault(
            rdmsr(IA32_VMX_BASIC).err(),
            GP,
            "RDMSR IA32_VMX_BASIC did not #GP",
        )?;
        expect_fault(
            rdmsr(IA32_VMX_PROCBASED_CTLS2).err(),
            GP,
            "RDMSR IA32_VMX_PROCBASED_CTLS2 did not #GP",
        )?;
        expect_fault(
            rdmsr(IA32_VMX_TRUE_PROCBASED_CTLS).err(),
            GP,
            "RDMSR IA32_VMX_TRUE_PROCBASED_CTLS did not #GP",
        )?;
    }
    expect_fault(
        rdmsr(0x1234).err(),
        GP,
        "RDMSR of unknown MSR 0x1234 did not #GP",
    )?;
    expect_fault(
        rdmsr(abi::MSR_SCRATCH + 1).err(),
        GP,
        "RDMSR of unknown MSR did not #GP",
    )?;
    let efer = rdmsr(IA32_EFER).map_err(|_| "RDMSR IA32_EFER faulted")?;
    expect_fault(
        wrmsr(IA32_EFER, efer | 1 << 1),
        GP,
        "EFER reserved bit 1 did not #GP",
    )?;
    expect_fault(
        wrmsr(IA32_EFER, efer & !Efer::LME.bits()),
        GP,
        "clearing EFER.LME with paging on did not #GP",
    )?;
    let after = msr_exits();
    ensure(
        after.0 - before.0 == 6 && after.1 - before.1 == 3,
        "wrong number of MSR exits",
    )
}

fn io_uart() -> Check {
    use abi::uart::*;
    let before = exit_count(reason::IO);
    outb(BASE + SCR, 0x5a);
    let scr1 = inb(BASE + SCR);
    outb(BASE + SCR, 0xa5);
    let scr2 = inb(BASE + SCR);
    let lsr = inb(BASE + LSR);
    let iir = inb(BASE + IIR);
    outb(BASE + LCR, LCR_DLAB | 0x03);
    outb(BASE + THR, 0x0c);
    outb(BASE + IER, 0x00);
    let dll = inb(BASE + THR);
    outb(BASE + LCR, 0x03);
    let lcr = inb(BASE + LCR);
    let exits = exit_count(reason::IO) - before;
    ensure(
        scr1 == 0x5a && scr2 == 0xa5,
        "the scratch register did not read back",
    )?;
    ensure(
        lsr & LSR_THRE_TEMT == LSR_THRE_TEMT,
        "LSR does not say the transmitter is empty",
    )?;
    ensure(
        iir & 0x0f == IIR_NONE,
        "IIR does not say no interrupt is pending",
    )?;
    ensure(dll == 0x0c, "the divisor latch did not read back")?;
    ensure(lcr == 0x03, "LCR did not read back")?;
    ensure(exits == 12, "expected exactly 12 I/O exits")
}

fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: port I/O in the guest only reaches the hypervisor's emulation.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as in `inw`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

fn io_unclaimed_ports() -> Check {
    let before = exit_count(reason::IO);
    let b = inb(0x510);
    let w = inw(0x510);
    let l = inl(0x510);
    outb(0x80, 0x42);
    let exits = exit_count(reason::IO) - before;
    ensure(
        b == 0xff && w == 0xffff && l == 0xffff_ffff,
        "an unclaimed port did not read all ones",
    )?;
    ensure(exits == 4, "expected exactly 4 I/O exits")
}

fn hlt_preemption_timer() -> Check {
    // The VMX-preemption timer wakes the guest, or, where it is absent, the host's local APIC
    // timer through an external-interrupt exit.
    let (wake, why) = if features() & abi::FEATURE_APIC_TIMER != 0 {
        (
            reason::EXTERNAL_INTERRUPT,
            "expected exactly 1 external-interrupt exit (the APIC-timer wake-up)",
        )
    } else {
        (
            reason::PREEMPTION_TIMER,
            "expected exactly 1 preemption-timer exit (the wake-up)",
        )
    };
    let hlt0 = exit_count(reason::HLT);
    let wake0 = exit_count(wake);
    let t0 = rdtsc();
    // SAFETY: HLT at CPL 0 with interrupts off; the hypervisor wakes the guest with its timer.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
    let t1 = rdtsc();
    ensure(
        exit_count(reason::HLT) - hlt0 == 1,
        "expected exactly 1 HLT exit",
    )?;
    ensure(exit_count(wake) - wake0 == 1, why)?;
    ensure(t1 > t0, "the TSC did not advance across HLT")
}

fn vmcall() -> Check {
    let before = exit_count(reason::VMCALL);
    ensure(
        hypercall(0x7777, 0, 0, 0) == abi::HC_UNKNOWN,
        "unknown hypercall did not fail",
    )?;
    ensure(
        hypercall(abi::HC_PRINT, abi::UNBACKED, 8, 0) == abi::HC_BAD_ARGUMENT,
        "HC_PRINT of unbacked memory was accepted",
    )?;
    let text = "vmcall test";
    ensure(
        hypercall(
            abi::HC_PRINT,
            text.as_ptr() as u64,
            abi::HC_PRINT_MAX + 1,
            0,
        ) == abi::HC_BAD_ARGUMENT,
        "HC_PRINT longer than HC_PRINT_MAX was accepted",
    )?;
    ensure(
        hypercall(abi::HC_PRINT, text.as_ptr() as u64, text.len() as u64, 0) == abi::HC_OK,
        "HC_PRINT failed",
    )?;
    ensure(
        hypercall(abi::HC_REPORT, 999, 1, 0) == abi::HC_BAD_ARGUMENT,
        "HC_REPORT of an unknown test was accepted",
    )?;
    ensure(
        exit_count(reason::VMCALL) - before == 6,
        "expected exactly 6 VMCALL exits",
    )
}

fn mmio_device() -> Check {
    use abi::mmio::*;
    let before = exit_count(reason::EPT_VIOLATION);
    let base = abi::MMIO_BASE;
    let (id32, id8, r64, r64b, id_after, c1, c2, writes): (u32, u8, u64, u64, u32, u32, u32, u64);
    // SAFETY: every access targets the emulated device page, which the hypervisor emulates; the
    // instruction forms are the plain MOVs its decoder handles.
    unsafe {
        asm!("mov eax, dword ptr [rdi + {i}]", in("rdi") base, i = const ID, out("eax") id32, options(nostack));
        asm!("mov cl, byte ptr [rdi + {i}]", in("rdi") base, i = const ID, out("cl") id8, options(nostack));
        asm!("mov qword ptr [rdi + {s}], rsi", in("rdi") base, s = const SCRATCH, in("rsi") 0x1122_3344_5566_7788u64,
             options(nostack));
        asm!("mov r9, qword ptr [rdi + {s}]", in("rdi") base, s = const SCRATCH, out("r9") r64, options(nostack));
        asm!("mov dword ptr [rdi + {s}], 0xcafebabe", in("rdi") base, s = const SCRATCH, options(nostack));
        asm!("mov r10, qword ptr [r11 + {s}]", in("r11") base, s = const SCRATCH, out("r10") r64b, options(nostack));
        asm!("mov word ptr [rdi + {i}], 0x1234", in("rdi") base, i = const ID, options(nostack));
        asm!("mov edx, dword ptr [rdi + {i}]", in("rdi") base, i = const ID, out("edx") id_after, options(nostack));
        asm!("mov eax, dword ptr [rdi + {c}]", in("rdi") base, c = const COUNTER, out("eax") c1, options(nostack));
        asm!("mov eax, dword ptr [rdi + {c}]", in("rdi") base, c = const COUNTER, out("eax") c2, options(nostack));
        asm!("mov rax, qword ptr [rdi + {w}]", in("rdi") base, w = const WRITES, out("rax") writes, options(nostack));
    }
    let exits = exit_count(reason::EPT_VIOLATION) - before;
    ensure(id32 == ID_VALUE, "32-bit read of ID is wrong")?;
    ensure(id8 == ID_VALUE as u8, "8-bit read of ID is wrong")?;
    ensure(
        r64 == 0x1122_3344_5566_7788,
        "64-bit scratch did not read back",
    )?;
    ensure(
        r64b == 0x1122_3344_cafe_babe,
        "32-bit immediate store to scratch is wrong",
    )?;
    ensure(id_after == ID_VALUE, "a write changed the read-only ID")?;
    ensure(c2 == c1.wrapping_add(1), "the counter did not count")?;
    ensure(
        writes == 2,
        "the device did not count exactly 2 accepted writes",
    )?;
    ensure(exits == 11, "expected exactly 11 EPT-violation exits")
}

fn xsetbv_guarded(index: u32, value: u64) -> Option<Fault> {
    guarded!("xsetbv", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32)
}

fn xgetbv(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set by the caller; XCR0 always exists.
    unsafe {
        asm!("xgetbv", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

fn xsetbv() -> Check {
    const OSXSAVE: u64 = Cr4::OSXSAVE.bits();
    let (_, _, ecx, _) = cpuid(1, 0);
    let cr4 = read_cr4();
    if ecx & (1 << 26) == 0 {
        // No XSAVE: CR4.OSXSAVE is reserved (#GP) and XSETBV undefined (#UD, before any VM exit).
        let before = exit_count(reason::XSETBV);
        let fault = guarded!("mov cr4, {v}", v = in(reg) cr4 | OSXSAVE);
        expect_fault(fault, GP, "setting CR4.OSXSAVE without XSAVE did not #GP")?;
        expect_fault(
            xsetbv_guarded(0, (Xcr0::X87 | Xcr0::SSE).bits()),
            UD,
            "XSETBV without XSAVE did not #UD",
        )?;
        return ensure(
            exit_count(reason::XSETBV) == before,
            "XSETBV without XSAVE exited",
        );
    }
    // SAFETY: XSAVE is supported, so CR4.OSXSAVE may be set.
    unsafe { asm!("mov cr4, {}", in(reg) cr4 | OSXSAVE, options(nomem, nostack)) };
    let (_, _, ecx, _) = cpuid(1, 0);
    ensure(
        ecx & (1 << 27) != 0,
        "CPUID.1:ECX.OSXSAVE does not follow the guest's CR4",
    )?;
    let before = exit_count(reason::XSETBV);
    ensure(
        xsetbv_guarded(0, (Xcr0::X87 | Xcr0::SSE).bits()).is_none(),
        "XSETBV XCR0 = x87|SSE faulted",
    )?;
    ensure(
        xgetbv(0) == (Xcr0::X87 | Xcr0::SSE).bits(),
        "XCR0 did not read back",
    )?;
    expect_fault(
        xsetbv_guarded(0, Xcr0::SSE.bits()),
        GP,
        "XCR0 without x87 did not #GP",
    )?;
    expect_fault(
        xsetbv_guarded(1, Xcr0::X87.bits()),
        GP,
        "XSETBV of XCR1 did not #GP",
    )?;
    expect_fault(
        xsetbv_guarded(0, (Xcr0::X87 | Xcr0::AVX).bits()),
        GP,
        "XCR0 with AVX but no SSE did not #GP",
    )?;
    ensure(
        exit_count(reason::XSETBV) - before == 4,
        "expected exactly 4 XSETBV exits",
    )
}

fn invd_wbinvd() -> Check {
    let features = hypercall(abi::HC_FEATURES, 0, 0, 0);
    let invd0 = exit_count(reason::INVD);
    let wbinvd0 = exit_count(reason::WBINVD);
    // SAFETY: INVD exits unconditionally (the hypervisor never lets it discard the caches); WBINVD only
    // writes back and invalidates caches.
    unsafe {
        asm!("invd", options(nostack));
        asm!("wbinvd", options(nostack));
    }
    ensure(
        exit_count(reason::INVD) - invd0 == 1,
        "expected exactly 1 INVD exit",
    )?;
    let expected = u64::from(features & abi::FEATURE_WBINVD_EXITING != 0);
    ensure(
        exit_count(reason::WBINVD) - wbinvd0 == expected,
        "wrong number of WBINVD exits",
    )
}

fn cr_access() -> Check {
    const PE: u64 = Cr0::PE.bits();
    const CD: u64 = Cr0::CD.bits();
    const NW: u64 = Cr0::NW.bits();
    const PG: u64 = Cr0::PG.bits();
    const VMXE: u64 = Cr4::VMXE.bits();
    let before = exit_count(reason::CR_ACCESS);
    let cr0 = read_cr0();
    ensure(cr0 & (PE | PG) == PE | PG, "CR0.PE/PG not set in long mode")?;
    ensure(
        cr0 & (CD | NW) == 0,
        "CR0.CD/NW read back set after the guest cleared them",
    )?;
    // SAFETY: setting CR0.CD only changes caching (and the hypervisor keeps the real CD clear).
    unsafe { asm!("mov cr0, {}", in(reg) cr0 | CD, options(nomem, nostack)) };
    let with_cd = read_cr0();
    // SAFETY: restores the previous CR0.
    unsafe { asm!("mov cr0, {}", in(reg) cr0, options(nomem, nostack)) };
    ensure(
        with_cd == cr0 | CD,
        "CR0.CD does not read back from the read shadow",
    )?;
    ensure(read_cr0() == cr0, "CR0 did not return to its old value")?;
    let cr4 = read_cr4();
    ensure(cr4 & VMXE == 0, "CR4.VMXE is visible to the guest")?;
    let fault = guarded!("mov cr4, {v}", v = in(reg) cr4 | VMXE);
    // With VMX offered (nested VMX) CR4.VMXE is the guest's: set, read back, cleared (one more
    // CR-access exit); otherwise it is reserved.
    let nested = features() & abi::FEATURE_NESTED_VMX != 0;
    if nested {
        ensure(fault.is_none(), "setting CR4.VMXE faulted with VMX offered")?;
        ensure(read_cr4() == cr4 | VMXE, "CR4.VMXE did not read back")?;
        let fault = guarded!("mov cr4, {v}", v = in(reg) cr4);
        ensure(fault.is_none(), "clearing CR4.VMXE faulted")?;
    } else {
        expect_fault(fault, GP, "setting CR4.VMXE did not #GP")?;
    }
    ensure(read_cr4() == cr4, "CR4 changed")?;
    let tpr: u64;
    // SAFETY: CR8 (TPR) writes and reads exit and are emulated by the hypervisor.
    unsafe {
        asm!("mov cr8, {}", in(reg) 5u64, options(nomem, nostack));
        asm!("mov {}, cr8", out(reg) tpr, options(nomem, nostack));
        asm!("mov cr8, {}", in(reg) 0u64, options(nomem, nostack));
    }
    ensure(tpr == 5, "CR8 did not read back")?;
    ensure(
        exit_count(reason::CR_ACCESS) - before == 6 + u64::from(nested),
        "expected exactly 6 CR-access exits (7 with VMX offered)",
    )
}

fn vmx_instructions_ud() -> Check {
    let region = [0u64; 2];
    let p = region.as_ptr();
    let counts = |r: &[u64; 9]| r.map(exit_count);
    let reasons = [
        reason::VMXON,
        reason::VMXOFF,
        reason::VMCLEAR,
        reason::VMPTRLD,
        reason::VMREAD,
        reason::VMWRITE,
        reason::VMLAUNCH,
        reason::VMRESUME,
        reason::INVEPT,
    ];
    let before = counts(&reasons);
    expect_fault(
        guarded!("vmxon [{p}]", p = in(reg) p),
        UD,
        "VMXON did not #UD",
    )?;
    expect_fault(guarded!("vmxoff"), UD, "VMXOFF did not #UD")?;
    expect_fault(
        guarded!("vmclear [{p}]", p = in(reg) p),
        UD,
        "VMCLEAR did not #UD",
    )?;
    expect_fault(
        guarded!("vmptrld [{p}]", p = in(reg) p),
        UD,
        "VMPTRLD did not #UD",
    )?;
    expect_fault(
        guarded!("vmread rax, rcx", in("rcx") 0x681eu64, out("rax") _),
        UD,
        "VMREAD did not #UD",
    )?;
    expect_fault(
        guarded!("vmwrite rcx, rax", in("rcx") 0x681eu64, in("rax") 0u64),
        UD,
        "VMWRITE did not #UD",
    )?;
    expect_fault(guarded!("vmlaunch"), UD, "VMLAUNCH did not #UD")?;
    expect_fault(guarded!("vmresume"), UD, "VMRESUME did not #UD")?;
    expect_fault(
        guarded!("invept rax, [{p}]", p = in(reg) p, in("rax") 2u64),
        UD,
        "INVEPT did not #UD",
    )?;
    let invvpid0 = exit_count(reason::INVVPID);
    expect_fault(
        guarded!("invvpid rax, [{p}]", p = in(reg) p, in("rax") 2u64),
        UD,
        "INVVPID did not #UD",
    )?;
    ensure(
        exit_count(reason::INVVPID) - invvpid0 == 1,
        "expected exactly 1 INVVPID exit",
    )?;
    let after = counts(&reasons);
    for (b, a) in before.iter().zip(after.iter()) {
        ensure(
            a - b == 1,
            "a VMX instruction did not cause exactly 1 VM exit",
        )?;
    }
    Ok(())
}

fn unbacked_memory() -> Check {
    let before = exit_count(reason::EPT_VIOLATION);
    let read = guarded!("mov rax, qword ptr [{a}]", a = in(reg) abi::UNBACKED, out("rax") _);
    expect_fault(
        read,
        GP,
        "reading unbacked guest-physical memory did not #GP",
    )?;
    let write =
        guarded!("mov qword ptr [{a}], rax", a = in(reg) abi::UNBACKED + 0x40, in("rax") 1u64);
    expect_fault(
        write,
        GP,
        "writing unbacked guest-physical memory did not #GP",
    )?;
    ensure(
        exit_count(reason::EPT_VIOLATION) - before == 2,
        "expected exactly 2 EPT-violation exits",
    )
}

/// Number of timed CPUID round trips.
const SAMPLES: usize = 1000;

fn cpuid_timing() -> Check {
    let mut samples = [0u64; SAMPLES];
    for sample in samples.iter_mut() {
        let t0 = rdtsc();
        // CPUID is serializing: the second RDTSC cannot start before the VM exit and entry complete.
        let _ = cpuid(0, 0);
        let t1 = rdtsc();
        *sample = t1.wrapping_sub(t0);
    }
    samples.sort_unstable();
    let median = (samples[SAMPLES / 2 - 1] + samples[SAMPLES / 2]) / 2;
    let min = samples[0];
    gprintln!("{SAMPLES} CPUID round trips: median {median} TSC ticks, minimum {min}");
    ensure(
        hypercall(abi::HC_TIMING, median, SAMPLES as u64, min) == abi::HC_OK,
        "HC_TIMING failed",
    )?;
    ensure(min > 0, "a CPUID round trip took no time")?;
    cpuid_breakdown()
}

/// CPUID round trips measured by the hypervisor's probe ([`abi::HC_BREAKDOWN`]).
const BREAKDOWN_SAMPLES: u64 = 200;

/// The samples of the round-trip breakdown: each is RDTSC (t0, in R8), CPUID leaf 0, RDTSC (t1,
/// in R9 for the next CPUID), so that the hypervisor sees when the guest left and came back. The
/// guest's stamp cost (RDTSC to CPUID) is measured first with the same instructions around no
/// exit.
fn cpuid_breakdown() -> Check {
    let cost: u64;
    // SAFETY: RDTSC and register moves only.
    unsafe {
        asm!(
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r8, rax",
            "xor eax, eax",
            "xor ecx, ecx",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "sub rax, r8",
            out("rax") cost, out("rcx") _, out("rdx") _, out("r8") _,
            options(nomem, nostack),
        );
    }
    ensure(
        hypercall(abi::HC_BREAKDOWN, 1, cost, 0) == abi::HC_OK,
        "HC_BREAKDOWN (on) failed",
    )?;
    // SAFETY: CPUID exits to the hypervisor, which emulates it (RAX, RBX, RCX, RDX); RBX is kept
    // in a scratch register around it.
    unsafe {
        asm!(
            "mov {saved_rbx}, rbx",
            "xor r9d, r9d",
            "2:",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r8, rax",
            "xor eax, eax",
            "xor ecx, ecx",
            "cpuid",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov r9, rax",
            "dec {n}",
            "jnz 2b",
            "mov rbx, {saved_rbx}",
            saved_rbx = out(reg) _,
            n = inout(reg) BREAKDOWN_SAMPLES => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("r8") _, out("r9") _,
            options(nomem, nostack),
        );
    }
    ensure(
        hypercall(abi::HC_BREAKDOWN, 0, 0, 0) == abi::HC_OK,
        "HC_BREAKDOWN (off) failed",
    )
}

/// Loop iterations of `register-preservation`: each makes three VM exits (INVD, WRMSR, OUT).
const PRESERVATION_ROUNDS: u64 = 334;

/// The values `register-preservation` loads, by SDM register number (RSP, 4, is the stack's own).
/// RCX holds the scratch MSR in bits 31:0 (WRMSR), DX port 0x80 (OUT); bit 63 stays clear so each
/// fits a signed immediate.
const GPR_PATTERN: [u64; 16] = [
    0x0a0a_1111_0000_0a0a,
    0x1c1c_1c1c_0000_0000 | abi::MSR_SCRATCH as u64,
    0x2d2d_2d2d_2d2d_0080,
    0x3b3b_3333_0303_3b3b,
    0,
    0x5b5b_5555_0505_5b5b,
    0x6565_6666_0606_6565,
    0x7d7d_7777_0707_7d7d,
    0x0808_8888_0808_0808,
    0x0909_9999_0909_0909,
    0x1010_aaaa_1010_1010,
    0x1111_bbbb_1111_1111,
    0x1212_cccc_1212_1212,
    0x1313_dddd_1313_1313,
    0x1414_eeee_1414_1414,
    0x1515_ffff_1515_1515,
];
/// The MXCSR `register-preservation` loads: rounding toward +infinity, PE set, all exceptions masked.
const MXCSR_PATTERN: u32 = 0x5fa0;
/// The CR2 `register-preservation` loads.
const CR2_PATTERN: u64 = 0x0000_7e57_c2c2_0000;

/// XMM0-15 as loaded: register n holds (n + 1) * 0x0101...01 in its low half, its complement high.
static XMM_IN: [[u64; 2]; 16] = {
    let mut v = [[0u64; 2]; 16];
    let mut n = 0;
    while n < 16 {
        v[n] = [
            (n as u64 + 1) * 0x0101_0101_0101_0101,
            !((n as u64 + 1) * 0x0101_0101_0101_0101),
        ];
        n += 1;
    }
    v
};
static mut XMM_OUT: [[u64; 2]; 16] = [[0; 2]; 16];
static mut GPR_OUT: [u64; 16] = [0; 16];
static mut MXCSR_OUT: u32 = 0;
static mut MXCSR_SAVED: u32 = 0;
static MXCSR_IN: u32 = MXCSR_PATTERN;
static mut CR2_OUT: u64 = 0;
static mut RSP_SAVED: u64 = 0;
static mut ROUNDS_LEFT: u64 = 0;

/// Loads every GPR, XMM0-15, MXCSR and CR2 with the patterns, runs [`PRESERVATION_ROUNDS`] rounds
/// of INVD, WRMSR (of the scratch MSR) and OUT (to port 0x80), each a VM exit that leaves the
/// registers alone, then stores what the registers hold into the `*_OUT` statics and returns with
/// the callee-saved registers and MXCSR restored.
#[unsafe(naked)]
extern "C" fn preservation_run() {
    core::arch::naked_asm!(
        "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
        "mov [rip + {rsp_saved}], rsp",
        "stmxcsr [rip + {mxcsr_saved}]",
        "ldmxcsr [rip + {mxcsr_in}]",
        "movdqu xmm0, [rip + {xmm_in}]",
        "movdqu xmm1, [rip + {xmm_in} + 16]",
        "movdqu xmm2, [rip + {xmm_in} + 32]",
        "movdqu xmm3, [rip + {xmm_in} + 48]",
        "movdqu xmm4, [rip + {xmm_in} + 64]",
        "movdqu xmm5, [rip + {xmm_in} + 80]",
        "movdqu xmm6, [rip + {xmm_in} + 96]",
        "movdqu xmm7, [rip + {xmm_in} + 112]",
        "movdqu xmm8, [rip + {xmm_in} + 128]",
        "movdqu xmm9, [rip + {xmm_in} + 144]",
        "movdqu xmm10, [rip + {xmm_in} + 160]",
        "movdqu xmm11, [rip + {xmm_in} + 176]",
        "movdqu xmm12, [rip + {xmm_in} + 192]",
        "movdqu xmm13, [rip + {xmm_in} + 208]",
        "movdqu xmm14, [rip + {xmm_in} + 224]",
        "movdqu xmm15, [rip + {xmm_in} + 240]",
        "mov rax, {cr2}",
        "mov cr2, rax",
        "mov qword ptr [rip + {rounds}], {n}",
        "mov rax, {p0}",
        "mov rcx, {p1}",
        "mov rdx, {p2}",
        "mov rbx, {p3}",
        "mov rbp, {p5}",
        "mov rsi, {p6}",
        "mov rdi, {p7}",
        "mov r8, {p8}",
        "mov r9, {p9}",
        "mov r10, {p10}",
        "mov r11, {p11}",
        "mov r12, {p12}",
        "mov r13, {p13}",
        "mov r14, {p14}",
        "mov r15, {p15}",
        "2:",
        "invd",
        "wrmsr",
        "out dx, al",
        "dec qword ptr [rip + {rounds}]",
        "jnz 2b",
        "mov [rip + {gpr_out}], rax",
        "mov [rip + {gpr_out} + 8], rcx",
        "mov [rip + {gpr_out} + 16], rdx",
        "mov [rip + {gpr_out} + 24], rbx",
        "mov [rip + {gpr_out} + 32], rsp",
        "mov [rip + {gpr_out} + 40], rbp",
        "mov [rip + {gpr_out} + 48], rsi",
        "mov [rip + {gpr_out} + 56], rdi",
        "mov [rip + {gpr_out} + 64], r8",
        "mov [rip + {gpr_out} + 72], r9",
        "mov [rip + {gpr_out} + 80], r10",
        "mov [rip + {gpr_out} + 88], r11",
        "mov [rip + {gpr_out} + 96], r12",
        "mov [rip + {gpr_out} + 104], r13",
        "mov [rip + {gpr_out} + 112], r14",
        "mov [rip + {gpr_out} + 120], r15",
        "movdqu [rip + {xmm_out}], xmm0",
        "movdqu [rip + {xmm_out} + 16], xmm1",
        "movdqu [rip + {xmm_out} + 32], xmm2",
        "movdqu [rip + {xmm_out} + 48], xmm3",
        "movdqu [rip + {xmm_out} + 64], xmm4",
        "movdqu [rip + {xmm_out} + 80], xmm5",
        "movdqu [rip + {xmm_out} + 96], xmm6",
        "movdqu [rip + {xmm_out} + 112], xmm7",
        "movdqu [rip + {xmm_out} + 128], xmm8",
        "movdqu [rip + {xmm_out} + 144], xmm9",
        "movdqu [rip + {xmm_out} + 160], xmm10",
        "movdqu [rip + {xmm_out} + 176], xmm11",
        "movdqu [rip + {xmm_out} + 192], xmm12",
        "movdqu [rip + {xmm_out} + 208], xmm13",
        "movdqu [rip + {xmm_out} + 224], xmm14",
        "movdqu [rip + {xmm_out} + 240], xmm15",
        "stmxcsr [rip + {mxcsr_out}]",
        "mov rax, cr2",
        "mov [rip + {cr2_out}], rax",
        "ldmxcsr [rip + {mxcsr_saved}]",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
        "ret",
        rsp_saved = sym RSP_SAVED,
        mxcsr_saved = sym MXCSR_SAVED,
        mxcsr_in = sym MXCSR_IN,
        mxcsr_out = sym MXCSR_OUT,
        xmm_in = sym XMM_IN,
        xmm_out = sym XMM_OUT,
        gpr_out = sym GPR_OUT,
        cr2_out = sym CR2_OUT,
        rounds = sym ROUNDS_LEFT,
        n = const PRESERVATION_ROUNDS,
        cr2 = const CR2_PATTERN,
        p0 = const GPR_PATTERN[0],
        p1 = const GPR_PATTERN[1],
        p2 = const GPR_PATTERN[2],
        p3 = const GPR_PATTERN[3],
        p5 = const GPR_PATTERN[5],
        p6 = const GPR_PATTERN[6],
        p7 = const GPR_PATTERN[7],
        p8 = const GPR_PATTERN[8],
        p9 = const GPR_PATTERN[9],
        p10 = const GPR_PATTERN[10],
        p11 = const GPR_PATTERN[11],
        p12 = const GPR_PATTERN[12],
        p13 = const GPR_PATTERN[13],
        p14 = const GPR_PATTERN[14],
        p15 = const GPR_PATTERN[15],
    )
}

fn register_preservation() -> Check {
    let reasons = [reason::INVD, reason::WRMSR, reason::IO];
    let before = reasons.map(exit_count);
    preservation_run();
    let after = reasons.map(exit_count);
    for (b, a) in before.iter().zip(after) {
        ensure(
            a - b == PRESERVATION_ROUNDS,
            "an INVD, WRMSR or OUT of the loop did not exit exactly once",
        )?;
    }
    // SAFETY: the statics were written by `preservation_run` above; one CPU, nothing else runs.
    let (gprs, xmms, mxcsr, cr2, rsp) = unsafe {
        (
            (&raw const GPR_OUT).read_volatile(),
            (&raw const XMM_OUT).read_volatile(),
            (&raw const MXCSR_OUT).read_volatile(),
            (&raw const CR2_OUT).read_volatile(),
            (&raw const RSP_SAVED).read_volatile(),
        )
    };
    for (n, (&got, &want)) in gprs.iter().zip(GPR_PATTERN.iter()).enumerate() {
        if n == 4 {
            ensure(got == rsp, "RSP changed across the VM exits")?;
        } else if got != want {
            gprintln!("register {n}: {got:#x}, loaded {want:#x}");
            return Err("a general-purpose register changed across the VM exits");
        }
    }
    for (n, (got, want)) in xmms.iter().zip(XMM_IN.iter()).enumerate() {
        if got != want {
            gprintln!("XMM{n}: {got:x?}, loaded {want:x?}");
            return Err("an XMM register changed across the VM exits");
        }
    }
    ensure(mxcsr == MXCSR_PATTERN, "MXCSR changed across the VM exits")?;
    ensure(cr2 == CR2_PATTERN, "CR2 changed across the VM exits")?;
    let scratch = rdmsr(abi::MSR_SCRATCH).map_err(|_| "RDMSR of the scratch MSR faulted")?;
    ensure(
        scratch == GPR_PATTERN[2] << 32 | (GPR_PATTERN[0] & 0xffff_ffff),
        "the WRMSRs did not write EDX:EAX to the scratch MSR",
    )
}

fn msr_areas() -> Check {
    let (rd0, wr0) = msr_exits();
    let initial =
        rdmsr(abi::IA32_KERNEL_GS_BASE).map_err(|_| "RDMSR of IA32_KERNEL_GS_BASE faulted")?;
    ensure(
        initial == abi::MSR_AREA_GUEST_INITIAL,
        "IA32_KERNEL_GS_BASE is not the value the VM-entry MSR-load area loads",
    )?;
    let mine = 0x0000_1234_abcd_e000u64;
    ensure(
        wrmsr(abi::IA32_KERNEL_GS_BASE, mine).is_none(),
        "WRMSR of IA32_KERNEL_GS_BASE faulted",
    )?;
    ensure(
        msr_exits() == (rd0, wr0),
        "RDMSR/WRMSR of IA32_KERNEL_GS_BASE exited (it is passed through)",
    )?;
    let seen = hypercall(abi::HC_MSR_AREAS, mine, 0, 0);
    ensure(
        seen & abi::MSR_AREAS_STORED != 0,
        "the VM-exit MSR-store area does not hold the guest's IA32_KERNEL_GS_BASE",
    )?;
    ensure(
        seen & abi::MSR_AREAS_HOST_RESTORED != 0,
        "the VM-exit MSR-load area did not restore the host's IA32_KERNEL_GS_BASE",
    )?;
    let again =
        rdmsr(abi::IA32_KERNEL_GS_BASE).map_err(|_| "RDMSR of IA32_KERNEL_GS_BASE faulted")?;
    ensure(
        again == mine,
        "the VM-entry MSR-load area did not load the stored guest value back",
    )
}

/// The hypervisor's [`abi::HC_FEATURES`] flags.
pub(super) fn features() -> u64 {
    hypercall(abi::HC_FEATURES, 0, 0, 0)
}

/// Reads the 32-bit register at `offset` of the (virtualized) local APIC.
fn apic_read(offset: u64) -> u32 {
    // SAFETY: the APIC-access page is mapped at APIC_GPA (FEATURE_APIC_VIRTUALIZATION, checked by
    // the callers) inside the identity-mapped first 4 GiB; reads of it are virtualized or exit.
    unsafe { core::ptr::read_volatile((abi::APIC_GPA + offset) as *const u32) }
}

/// Writes the 32-bit register at `offset` of the (virtualized) local APIC.
fn apic_write(offset: u64, value: u32) {
    // SAFETY: as in `apic_read`.
    unsafe { core::ptr::write_volatile((abi::APIC_GPA + offset) as *mut u32, value) };
}

/// VM exits the virtualized APIC accesses must not cause.
const APIC_QUIET: [u64; 3] = [
    reason::APIC_ACCESS,
    reason::APIC_WRITE,
    reason::EPT_VIOLATION,
];

fn apic_virtualization() -> Check {
    if features() & abi::FEATURE_APIC_VIRTUALIZATION == 0 {
        return Err(NOT_SUPPORTED);
    }
    let quiet = APIC_QUIET.map(exit_count);
    let tpr_exits = exit_count(reason::TPR_BELOW_THRESHOLD);
    ensure(
        apic_read(0x30) == abi::APIC_VERSION_VALUE,
        "the APIC version register did not read from the virtual-APIC page",
    )?;
    ensure(
        apic_read(0x80) == abi::APIC_INITIAL_TPR,
        "the TPR did not read as VTPR",
    )?;
    // Class 5, not below the threshold (2): virtualized, no VM exit.
    apic_write(0x80, 0x50);
    ensure(apic_read(0x80) == 0x50, "a TPR write did not reach VTPR")?;
    ensure(
        hypercall(abi::HC_APIC_STATE, 0, 0, 0) & 0xff == 0x50,
        "the hypervisor does not see the TPR write in the virtual-APIC page",
    )?;
    ensure(
        exit_count(reason::TPR_BELOW_THRESHOLD) == tpr_exits,
        "a TPR write above the threshold caused a TPR-below-threshold VM exit",
    )?;
    // Class 1, below the threshold: a TPR-below-threshold VM exit after the write.
    apic_write(0x80, 0x10);
    ensure(
        exit_count(reason::TPR_BELOW_THRESHOLD) - tpr_exits == 1,
        "lowering the TPR below the threshold did not cause one TPR-below-threshold VM exit",
    )?;
    ensure(
        apic_read(0x80) == 0x10,
        "the TPR write before the exit was lost",
    )?;
    ensure(
        APIC_QUIET.map(exit_count) == quiet,
        "a virtualized APIC access caused an APIC-access, APIC-write or EPT-violation VM exit",
    )
}

fn virtual_interrupt_delivery() -> Check {
    if features() & abi::FEATURE_VIRTUAL_INTERRUPT_DELIVERY == 0 {
        return Err(NOT_SUPPORTED);
    }
    let vector = u64::from(IRQ_VECTOR);
    ensure(
        hypercall(abi::HC_VID_REQUEST, vector, 0, 0) == abi::HC_OK,
        "the hypervisor refused to request a virtual interrupt",
    )?;
    let state = hypercall(abi::HC_APIC_STATE, 0, 0, 0);
    ensure(
        (state >> 8) & 0xff == vector && (state >> 16) & 0xff == 0,
        "RVI/SVI are not (vector, 0) after the request",
    )?;
    let quiet = [
        reason::EXTERNAL_INTERRUPT,
        reason::INTERRUPT_WINDOW,
        reason::APIC_ACCESS,
        reason::VIRTUALIZED_EOI,
        reason::APIC_WRITE,
    ];
    let before = quiet.map(exit_count);
    // Delivered right after the instruction that follows STI (blocking by STI), through IDT
    // vector 0x30, whose stub returns to the recovery point with IF set.
    let taken = guarded!("sti\n nop\n cli");
    // SAFETY: clearing IF again; the guest handles no other interrupt.
    unsafe { asm!("cli", options(nomem, nostack)) };
    match taken {
        Some(Fault { vector: v, .. }) if u64::from(v) == vector => {}
        Some(_) => return Err("another event than the virtual interrupt arrived"),
        None => return Err("the virtual interrupt was not delivered when RFLAGS.IF became 1"),
    }
    ensure(
        apic_read(0x110) == 1 << (vector - 32),
        "VISR does not hold the delivered vector",
    )?;
    let state = hypercall(abi::HC_APIC_STATE, 0, 0, 0);
    ensure(
        (state >> 8) & 0xff == 0 && (state >> 16) & 0xff == vector,
        "RVI/SVI are not (0, vector) after the delivery",
    )?;
    // Virtual EOI: the EOI-exit bitmap is empty, so no VM exit; VISR and SVI clear.
    apic_write(0xb0, 0);
    ensure(
        apic_read(0x110) == 0,
        "the virtual EOI left the vector in VISR",
    )?;
    let state = hypercall(abi::HC_APIC_STATE, 0, 0, 0);
    ensure(
        (state >> 16) & 0xff == 0,
        "the virtual EOI did not update SVI",
    )?;
    ensure(
        quiet.map(exit_count) == before,
        "the delivery or the EOI caused a VM exit",
    )?;
    ensure(
        hypercall(abi::HC_VID_REQUEST, 0, 0, 0) == abi::HC_OK,
        "the hypervisor refused to turn virtual-interrupt delivery off",
    )
}

fn vmfunc_eptp_switch() -> Check {
    if features() & abi::FEATURE_EPTP_SWITCHING == 0 {
        return Err(NOT_SUPPORTED);
    }
    let page = abi::EPTP_VIEW_PAGE as *mut u64;
    let mine = 0x2130_2d57_4549_5630u64;
    // SAFETY: a page of guest RAM nothing else uses.
    unsafe { page.write_volatile(mine) };
    let quiet = [reason::VMFUNC, reason::EPT_VIOLATION];
    let before = quiet.map(exit_count);
    let (in_view1, in_view0): (u64, u64);
    // SAFETY: VMFUNC 0 switches between two EPT views that map the guest's code, data and stack
    // alike; only the page read here differs.
    unsafe {
        asm!(
            "xor eax, eax",
            "mov ecx, 1",
            "vmfunc",
            "mov {one}, qword ptr [{page}]",
            "xor eax, eax",
            "xor ecx, ecx",
            "vmfunc",
            "mov {zero}, qword ptr [{page}]",
            page = in(reg) page,
            one = out(reg) in_view1,
            zero = out(reg) in_view0,
            out("eax") _,
            out("ecx") _,
            options(nostack),
        )
    };
    ensure(quiet.map(exit_count) == before, "VMFUNC caused a VM exit")?;
    ensure(
        in_view1 == abi::EPTP_VIEW_MARKER,
        "EPT view 1 does not show its own page",
    )?;
    ensure(
        in_view0 == mine,
        "back in EPT view 0, the page is not the guest's own",
    )
}

fn virtualization_exception() -> Check {
    const VE: u8 = 20;
    if features() & abi::FEATURE_VIRTUALIZATION_EXCEPTION == 0 {
        return Err(NOT_SUPPORTED);
    }
    let area = |offset: u64| (abi::VE_AREA_GPA + offset) as *mut u32;
    // SAFETY: the information area is mapped at VE_AREA_GPA (FEATURE_VIRTUALIZATION_EXCEPTION).
    let read32 = |offset| unsafe { area(offset).read_volatile() };
    // SAFETY: as above; 8-byte fields are 8-byte aligned.
    let read64 = |offset| unsafe { area(offset).cast::<u64>().read_volatile() };
    ensure(
        read32(4) != 0,
        "the #VE information area was armed before the guest armed it",
    )?;
    // SAFETY: as above.
    unsafe { area(4).write_volatile(0) };
    let target = abi::UNBACKED + 0x2040;
    let before = exit_count(reason::EPT_VIOLATION);
    let fault = guarded!("mov rax, qword ptr [{a}]", a = in(reg) target, out("rax") _);
    expect_fault(fault, VE, "the EPT violation was not delivered as #VE")?;
    ensure(
        exit_count(reason::EPT_VIOLATION) == before,
        "the convertible EPT violation caused a VM exit",
    )?;
    ensure(
        read32(0) == 48,
        "the #VE exit reason is not 48 (EPT violation)",
    )?;
    ensure(
        read32(4) == 0xffff_ffff,
        "the processor did not mark the area busy",
    )?;
    let qualification = read64(8);
    ensure(
        qualification & 1 != 0 && qualification & 2 == 0,
        "the #VE exit qualification does not say data read",
    )?;
    ensure(
        read64(16) == target,
        "the #VE guest-linear address is wrong",
    )?;
    ensure(
        read64(24) == target,
        "the #VE guest-physical address is wrong",
    )?;
    // SAFETY: as above (the 16-bit EPTP index at byte 32).
    let index = unsafe { area(32).cast::<u16>().read_volatile() };
    ensure(index == 0, "the #VE EPTP index is not 0")?;
    // Busy: the next EPT violation exits (and the hypervisor refuses it with #GP).
    let fault = guarded!("mov rax, qword ptr [{a}]", a = in(reg) target, out("rax") _);
    expect_fault(
        fault,
        GP,
        "with the area busy, the EPT violation was not a VM exit",
    )?;
    ensure(
        exit_count(reason::EPT_VIOLATION) - before == 1,
        "with the area busy, the EPT violation did not exit once",
    )
}

fn pml_log() -> Check {
    if features() & abi::FEATURE_PML == 0 {
        return Err(NOT_SUPPORTED);
    }
    let pml = |request, gpa| hypercall(abi::HC_PML, request, gpa, 0);
    // SAFETY: the regions are guest RAM that nothing else uses.
    let touch = |gpa: u64| unsafe { (gpa as *mut u8).write_volatile(1) };
    let [r0, r1, r2, r3] = abi::PML_FRESH_REGIONS;
    ensure(pml(abi::PML_RESET, 0) == abi::HC_OK, "HC_PML reset failed")?;
    touch(r1 + 0x1123);
    touch(r2 + 0x456);
    ensure(
        pml(abi::PML_COUNT, 0) == 2,
        "two first writes did not log two pages",
    )?;
    ensure(
        pml(abi::PML_CONTAINS, r1 + 0x1123) == 1 && pml(abi::PML_CONTAINS, r2 + 0x456) == 1,
        "the log lacks a written page",
    )?;
    ensure(
        pml(abi::PML_CONTAINS, r3) == 0,
        "the log holds a page never written",
    )?;
    let full = exit_count(reason::PML_FULL);
    ensure(
        pml(abi::PML_ONE_LEFT, 0) == abi::HC_OK,
        "HC_PML one-left failed",
    )?;
    touch(r3 + 0x10); // logged in entry 0: the index wraps to FFFFH
    ensure(
        exit_count(reason::PML_FULL) == full,
        "the write into the last free entry caused a PML-full VM exit",
    )?;
    // The index is now FFFFH (the SDM; Bochs 2.7's VMREAD returns 1FFH, yet it treats the log as
    // full): look at the entry itself.
    ensure(
        pml(abi::PML_LAST_ENTRY, 0) & !0xfff == (r3 + 0x10) & !0xfff,
        "the write into the last free entry was not logged in entry 0",
    )?;
    touch(r0 + 0x20); // the log is full: VM exit, the hypervisor empties it, the write is logged
    ensure(
        exit_count(reason::PML_FULL) - full == 1,
        "a write with the log full did not cause one PML-full VM exit",
    )?;
    ensure(
        pml(abi::PML_COUNT, 0) == 1 && pml(abi::PML_CONTAINS, r0 + 0x20) == 1,
        "after the PML-full exit the retried write was not logged",
    )
}

/// MONITOR (`0F 01 C8`, after an FS segment-override prefix with `fs_override`) of `address` with
/// extensions `ecx`; the fault it raised, if any.
fn monitor(address: u64, ecx: u64, fs_override: bool) -> Option<Fault> {
    if fs_override {
        guarded!(".byte 0x64, 0x0f, 0x01, 0xc8", in("rax") address, in("rcx") ecx, in("rdx") 0u64)
    } else {
        guarded!(".byte 0x0f, 0x01, 0xc8", in("rax") address, in("rcx") ecx, in("rdx") 0u64)
    }
}

/// MWAIT (`0F 01 C9`) with hint 0 and extensions `ecx`; the fault it raised, if any.
fn mwait(ecx: u64) -> Option<Fault> {
    guarded!(".byte 0x0f, 0x01, 0xc9", in("rax") 0u64, in("rcx") ecx)
}

fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 at CPL 0.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// A canonical address beyond the guest's page tables, which map the first 4 GiB.
const NOT_MAPPED: u64 = 0x1_0000_0000;
/// #PF.
const PF: u8 = 14;

fn monitor_mwait() -> Check {
    if features() & abi::FEATURE_MONITOR_MWAIT_EXITING == 0 {
        return Err(NOT_SUPPORTED);
    }
    let line = [0u64; 8];
    let line = line.as_ptr() as u64;
    let (monitor0, mwait0) = (exit_count(reason::MONITOR), exit_count(reason::MWAIT));
    ensure(
        monitor(line, 0, false).is_none(),
        "MONITOR of a mapped line faulted",
    )?;
    // With interrupts off and no armed monitor, MWAIT returns at once.
    ensure(mwait(0).is_none(), "MWAIT faulted")?;
    ensure(
        monitor(line, 0, true).is_none(),
        "MONITOR with an FS override faulted",
    )?;
    expect_fault(
        monitor(line, 1, false),
        GP,
        "MONITOR with ECX = 1 (no extensions exist) did not #GP(0)",
    )?;
    expect_fault(
        monitor(0x0000_8000_0000_0000, 0, false),
        GP,
        "MONITOR of a non-canonical address did not #GP(0)",
    )?;
    match monitor(NOT_MAPPED, 0, false) {
        Some(f) if f.vector == PF && f.error == 0 => {
            ensure(read_cr2() == NOT_MAPPED, "MONITOR's #PF left the wrong CR2")?
        }
        _ => return Err("MONITOR of an unmapped address did not #PF(0)"),
    }
    expect_fault(
        monitor(abi::UNBACKED, 0, false),
        GP,
        "MONITOR of unbacked guest-physical memory did not #GP(0)",
    )?;
    expect_fault(
        mwait(2),
        GP,
        "MWAIT with ECX = 2 (reserved bit) did not #GP(0)",
    )?;
    ensure(
        exit_count(reason::MONITOR) - monitor0 == 6,
        "expected exactly 6 MONITOR exits",
    )?;
    ensure(
        exit_count(reason::MWAIT) - mwait0 == 2,
        "expected exactly 2 MWAIT exits",
    )
}
