//! The `nested-vmx` check: with VMX offered (`mini-hv.nested=1`), the test guest is a guest
//! hypervisor (L1). It takes VMX operation through the hypervisor's emulation, meets the SDM's
//! answer to each misuse (VMfailInvalid, VMfailValid with its error number, #GP) and to a VMCS
//! with each class of VM-entry failure (controls, host state, guest state, MSR loading), then
//! runs its own guest (L2: a CPUID loop in this image, sharing L1's address space) and handles L2's CPUID
//! exits, measuring the nested round trip (L1 → L2 → exit reflected by L0 → L1); then L2's exits
//! L1 does not intercept, which L0 handles on L2's behalf, with VMCS12's MSR lists
//! ([`l0_exits_and_msr_lists`]), L2 under EPT12 ([`ept_for_l2`]) and with VPID
//! ([`vpid_for_l2`]).

use core::arch::{asm, global_asm};

use vmx_caps::msr::{
    IA32_FEATURE_CONTROL, IA32_VMX_BASIC, IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS,
    IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS,
};
use vmx_core::VmInstructionError as E;

use super::abi;
use super::tests::{Check, NOT_SUPPORTED, ensure, features};
use super::{Fault, GP, UD, gprintln, guarded};

/// RFLAGS.CF: VMfailInvalid.
const CF: u64 = 1;
/// RFLAGS.ZF: VMfailValid.
const ZF: u64 = 1 << 6;

/// Rounds of the L2 CPUID round trip.
const ROUNDS: usize = 16;

/// A 4-KiB page (VMXON region, VMCS, L2's stack).
#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut VMXON_REGION: Page = Page([0; 4096]);
static mut VMCS_A: Page = Page([0; 4096]);
static mut L2_STACK: Page = Page([0; 4096]);

global_asm!(
    r#"
    .pushsection .text.mini_hv_l2, "ax", @progbits
    .global mini_hv_l2_entry
mini_hv_l2_entry:
    cpuid
    jmp mini_hv_l2_entry
    .popsection
    "#
);

global_asm!(
    r#"
    .pushsection .text.mini_hv_l2_touch, "ax", @progbits
    .global mini_hv_l2_touch
mini_hv_l2_touch:
    mov rax, qword ptr [{hole}]
    cpuid
    jmp mini_hv_l2_touch
    .popsection
    "#,
    hole = const EPT12_HOLE,
);

global_asm!(
    r#"
    .pushsection .text.mini_hv_l2_l0, "ax", @progbits
    .global mini_hv_l2_l0
mini_hv_l2_l0:
    mov ecx, 0x174
    rdmsr
    mov dword ptr [rip + {seen}], eax
    mov ecx, 0x3a
    rdmsr
    mov dword ptr [rip + {seen} + 8], eax
    mov ecx, 0x175
    mov eax, {esp_low}
    mov edx, {esp_high}
    wrmsr
    mov ecx, 0xc0000102
    rdmsr
    mov dword ptr [rip + {seen} + 24], eax
    mov dword ptr [rip + {seen} + 28], edx
    mov eax, {kgs_low}
    mov edx, {kgs_high}
    wrmsr
    mov dx, 0x3ff
    mov al, 0x5a
    out dx, al
    hlt
    mov byte ptr [rip + {seen} + 16], 1
    mov ecx, 0x1234
    .global mini_hv_l2_l0_gp
mini_hv_l2_l0_gp:
    rdmsr
    cpuid
    jmp mini_hv_l2_l0
    .popsection
    "#,
    seen = sym L2_SEEN,
    esp_low = const L2_SYSENTER_ESP & 0xffff_ffff,
    esp_high = const L2_SYSENTER_ESP >> 32,
    kgs_low = const L2_KERNEL_GS_BASE & 0xffff_ffff,
    kgs_high = const L2_KERNEL_GS_BASE >> 32,
);

global_asm!(
    r#"
    .pushsection .text.mini_hv_l2_cr0, "ax", @progbits
    .global mini_hv_l2_cr0
mini_hv_l2_cr0:
    mov rax, cr0
    bts rax, 30
    mov cr0, rax
    mov rax, cr0
    mov qword ptr [rip + {seen}], rax
    cpuid
    jmp mini_hv_l2_cr0
    .popsection
    "#,
    seen = sym L2_CR0,
);

/// L2's CR0 as it reads it back after setting CR0.CD ([`l0_owned_cr0_bit`]).
static mut L2_CR0: u64 = 0;

/// What L2 saw in [`l0_exits_and_msr_lists`]: IA32_SYSENTER_CS, IA32_FEATURE_CONTROL, 1 once
/// its HLT completed, IA32_KERNEL_GS_BASE.
static mut L2_SEEN: [u64; 4] = [0; 4];
/// The IA32_SYSENTER_ESP and IA32_KERNEL_GS_BASE L2 writes.
const L2_SYSENTER_ESP: u64 = 0xffff_8000_1234_5000;
const L2_KERNEL_GS_BASE: u64 = 0xffff_8000_6b67_0002;

unsafe extern "C" {
    /// L2's code for [`l0_owned_cr0_bit`]: sets CR0.CD, reads CR0 back, CPUID.
    fn mini_hv_l2_cr0();
    /// L2's code for [`l0_exits_and_msr_lists`]: RDMSR, WRMSR, OUT and HLT that L1 does not
    /// intercept, then an RDMSR that faults, which L1 does intercept.
    fn mini_hv_l2_l0();
    /// The faulting RDMSR of [`mini_hv_l2_l0`].
    fn mini_hv_l2_l0_gp();
    /// L2's code: CPUID forever (each one exits to L1).
    fn mini_hv_l2_entry();
    /// L2's code for EPT12: a read of [`EPT12_HOLE`], then CPUID, forever.
    fn mini_hv_l2_touch();
}

/// The 2-MiB region of L1's RAM that EPT12 leaves unmapped until L2 has touched it.
const EPT12_HOLE: u64 = 0x1e0_0000;

/// EPT12: L1's EPT for L2 (PML4, PDPT, PD of 2-MiB pages for the first 32 MiB).
static mut EPT12_PML4: Page = Page([0; 4096]);
static mut EPT12_PDPT: Page = Page([0; 4096]);
static mut EPT12_PD: Page = Page([0; 4096]);

/// The EPT entry of a 2-MiB page: read/write/execute, write-back, page size.
const fn ept_large_page(address: u64) -> u64 {
    address | 1 << 7 | 6 << 3 | 7
}

/// L2 under EPT12 (the EPT02 composition of L0 on a real run): EPT12 identity-maps L1's RAM but
/// [`EPT12_HOLE`]; L2's read there is an EPT violation L1 gets (exit 48 with the address, a
/// read, nothing granted); L1 maps the region, INVEPT (an unsupported type first: VMfail(28)),
/// and L2's read completes (its next exit is CPUID).
fn ept_for_l2() -> Check {
    let allowed1 = rdmsr(vmx_caps::msr::IA32_VMX_PROCBASED_CTLS2)? >> 32;
    ensure(allowed1 & 1 << 1 != 0, "EPT is not offered to L1")?;
    let (pml4, pdpt, pd) = (
        phys(&raw const EPT12_PML4),
        phys(&raw const EPT12_PDPT),
        phys(&raw const EPT12_PD),
    );
    // SAFETY: one CPU; the tables are this check's.
    unsafe {
        (&raw mut EPT12_PML4).cast::<u64>().write(pdpt | 7);
        (&raw mut EPT12_PDPT).cast::<u64>().write(pd | 7);
        let entries = (&raw mut EPT12_PD).cast::<u64>();
        for i in 0..16u64 {
            let address = i << 21;
            let entry = if address == EPT12_HOLE {
                0
            } else {
                ept_large_page(address)
            };
            entries.add(i as usize).write(entry);
        }
    }
    let eptp = pml4 | 3 << 3 | 6;
    write(0x201a, eptp)?;
    write(0x4002, read(0x4002)? | 1 << 31)?;
    write(0x401e, 1 << 1)?;
    write(0x681e, mini_hv_l2_touch as *const () as u64)?;
    ensure(enter_l2(false).is_ok(), "VMRESUME of L2 with EPT failed")?;
    ensure(
        read(0x4402)? == 48,
        "L2's read of the EPT12 hole is not an EPT violation",
    )?;
    ensure(
        read(0x2400)? == EPT12_HOLE && read(0x640a)? == EPT12_HOLE,
        "the EPT violation does not name the hole",
    )?;
    ensure(
        read(0x6400)? & 0x3f == 1,
        "the EPT violation's qualification is not a read with nothing granted",
    )?;
    // SAFETY: as above.
    unsafe {
        let entries = (&raw mut EPT12_PD).cast::<u64>();
        entries
            .add((EPT12_HOLE >> 21) as usize)
            .write(ept_large_page(EPT12_HOLE));
    }
    let descriptor = [eptp, 0u64];
    let invept = |kind: u64| -> Result<Vmx, Fault> {
        let flags: u64;
        match guarded!("invept {t}, [{d}]\npushfq\npop {f}", t = in(reg) kind, d = in(reg) &descriptor, f = out(reg) flags)
        {
            None => Ok(outcome(flags)),
            Some(fault) => Err(fault),
        }
    };
    fail_valid(
        invept(5),
        E::InvalidInveptInvvpidOperand,
        "INVEPT of an unknown type: not VMfail(28)",
    )?;
    ensure(
        invept(1) == Ok(Vmx::Succeed),
        "INVEPT single-context failed",
    )?;
    ensure(
        enter_l2(false).is_ok(),
        "VMRESUME of L2 after INVEPT failed",
    )?;
    ensure(
        read(0x4402)? == 10,
        "L2's read of the mapped region did not complete (next exit not CPUID)",
    )
}

/// L2 with VPID: L1 is offered "enable VPID" and INVVPID; INVVPID single-context of VPID 0 and
/// of an unknown type are VMfail(28) (SDM Vol. 3C, 31.3 "INVVPID"); L2 runs with VPID12 1, L1
/// invalidates it (single-context), and L2 runs with VPID12 2 (L0 flushes its VPID02 for each
/// new VPID12 and at the INVVPID: three flushes, counted in L0's statistics); then VPID is off
/// again.
fn vpid_for_l2() -> Check {
    let allowed1 = rdmsr(vmx_caps::msr::IA32_VMX_PROCBASED_CTLS2)? >> 32;
    ensure(allowed1 & 1 << 5 != 0, "VPID is not offered to L1")?;
    let cap = rdmsr(vmx_caps::msr::IA32_VMX_EPT_VPID_CAP)?;
    ensure(
        cap & 1 << 32 != 0 && cap & 1 << 41 != 0,
        "single-context INVVPID is not offered to L1",
    )?;
    let invvpid = |kind: u64, vpid: u64| -> Result<Vmx, Fault> {
        let descriptor = [vpid, 0u64];
        let flags: u64;
        match guarded!("invvpid {t}, [{d}]\npushfq\npop {f}", t = in(reg) kind, d = in(reg) &descriptor, f = out(reg) flags)
        {
            None => Ok(outcome(flags)),
            Some(fault) => Err(fault),
        }
    };
    fail_valid(
        invvpid(1, 0),
        E::InvalidInveptInvvpidOperand,
        "INVVPID single-context of VPID 0: not VMfail(28)",
    )?;
    fail_valid(
        invvpid(4, 1),
        E::InvalidInveptInvvpidOperand,
        "INVVPID of an unknown type: not VMfail(28)",
    )?;
    write(0x0000, 1)?;
    write(0x401e, read(0x401e)? | 1 << 5)?;
    ensure(enter_l2(false).is_ok(), "VMRESUME of L2 with VPID 1 failed")?;
    ensure(read(0x4402)? == 10, "L2's exit with VPID 1 is not CPUID")?;
    ensure(
        invvpid(1, 1) == Ok(Vmx::Succeed),
        "INVVPID single-context of VPID 1 failed",
    )?;
    write(0x0000, 2)?;
    ensure(enter_l2(false).is_ok(), "VMRESUME of L2 with VPID 2 failed")?;
    ensure(read(0x4402)? == 10, "L2's exit with VPID 2 is not CPUID")?;
    write(0x401e, read(0x401e)? & !(1 << 5))
}

/// L2's code in real mode: CPUID forever (16-bit code; `jmp $-2` back to it).
static REAL_MODE_L2: [u8; 4] = [0x0f, 0xa2, 0xeb, 0xfc];

/// L2 in real mode under "unrestricted guest" (offered with EPT, which [`ept_for_l2`] left on in
/// the VMCS): CR0.PE and PG clear, real-mode segments, CS.base at [`REAL_MODE_L2`] (the freedom
/// of an unrestricted guest: not selector × 16); its CPUID exits to L1 with L2 still in real
/// mode.
fn real_mode_l2() -> Check {
    let allowed1 = rdmsr(vmx_caps::msr::IA32_VMX_PROCBASED_CTLS2)? >> 32;
    ensure(
        allowed1 & 1 << 7 != 0,
        "unrestricted guest is not offered to L1",
    )?;
    write(0x401e, read(0x401e)? | 1 << 7)?;
    write(0x4012, read(0x4012)? & !(1 << 9))?;
    let cr0 = rdmsr(vmx_caps::msr::IA32_VMX_CR0_FIXED0)? & !(1 | 1 << 31);
    let code = phys(REAL_MODE_L2.as_ptr());
    for (field, value) in [
        (0x6800, cr0),
        (0x681e, 0),
        (0x681c, 0x8000),
        (0x6820, 2),
        // CS: the code, 64 KiB, execute/read accessed, 16-bit.
        (0x0802, 0),
        (0x6808, code),
        (0x4802, 0xffff),
        (0x4816, 0x9b),
        // SS, DS, ES, FS, GS: flat 64 KiB data at 0.
        (0x0800, 0),
        (0x6806, 0),
        (0x4800, 0xffff),
        (0x4814, 0x93),
        (0x0804, 0),
        (0x680a, 0),
        (0x4804, 0xffff),
        (0x4818, 0x93),
        (0x0806, 0),
        (0x680c, 0),
        (0x4806, 0xffff),
        (0x481a, 0x93),
        (0x0808, 0),
        (0x680e, 0),
        (0x4808, 0xffff),
        (0x481c, 0x93),
        (0x080a, 0),
        (0x6810, 0),
        (0x480a, 0xffff),
        (0x481e, 0x93),
    ] {
        write(field, value)?;
    }
    ensure(
        enter_l2(false).is_ok(),
        "VMRESUME of L2 in real mode failed",
    )?;
    ensure(read(0x4402)? == 10, "L2's exit in real mode is not CPUID")?;
    ensure(
        read(0x6800)? & 1 == 0 && read(0x681e)? == 0 && read(0x6808)? == code,
        "L2 did not run its CPUID in real mode",
    )
}

/// L2's MOV to CR0 setting CR0.CD, a bit L1 does not own (its CR0 guest/host mask is 0) but L0
/// does: L0 runs the MOV for L2 as L1's processor would, L2 reads CD back set, and at L2's next
/// exit (CPUID) VMCS12 shows L2's CR0 with CD. L1 then clears it again in VMCS12.
fn l0_owned_cr0_bit() -> Check {
    const CD: u64 = 1 << 30;
    ensure(read(0x6000)? == 0, "L1's CR0 guest/host mask is not 0")?;
    write(0x681e, mini_hv_l2_cr0 as *const () as u64)?;
    ensure(enter_l2(false).is_ok(), "VMRESUME of L2 for CR0.CD failed")?;
    ensure(
        read(0x4402)? == 10,
        "L2's exit after MOV to CR0 is not CPUID",
    )?;
    // SAFETY: L2 is not running; the static is this check's.
    let seen = unsafe { (&raw const L2_CR0).read() };
    ensure(seen & CD != 0, "L2 does not read back the CR0.CD it set")?;
    let cr0 = read(0x6800)?;
    ensure(
        cr0 & CD != 0,
        "VMCS12's guest CR0 does not show L2's CR0.CD",
    )?;
    write(0x6800, cr0 & !CD)
}

/// How a VMX instruction ended, from RFLAGS (SDM Vol. 3C, 31.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vmx {
    Succeed,
    FailInvalid,
    FailValid,
}

fn outcome(rflags: u64) -> Vmx {
    if rflags & CF != 0 {
        Vmx::FailInvalid
    } else if rflags & ZF != 0 {
        Vmx::FailValid
    } else {
        Vmx::Succeed
    }
}

/// The physical address of a guest static (the first 4 GiB are identity-mapped).
fn phys<T>(p: *const T) -> u64 {
    p as u64
}

fn vmxon(pa: u64) -> Result<Vmx, Fault> {
    let operand = pa;
    let flags: u64;
    match guarded!("vmxon [{p}]\npushfq\npop {f}", p = in(reg) &operand, f = out(reg) flags) {
        None => Ok(outcome(flags)),
        Some(fault) => Err(fault),
    }
}

fn vmxoff() -> Result<Vmx, Fault> {
    let flags: u64;
    match guarded!("vmxoff\npushfq\npop {f}", f = out(reg) flags) {
        None => Ok(outcome(flags)),
        Some(fault) => Err(fault),
    }
}

fn vmclear(pa: u64) -> Result<Vmx, Fault> {
    let operand = pa;
    let flags: u64;
    match guarded!("vmclear [{p}]\npushfq\npop {f}", p = in(reg) &operand, f = out(reg) flags) {
        None => Ok(outcome(flags)),
        Some(fault) => Err(fault),
    }
}

fn vmptrld(pa: u64) -> Result<Vmx, Fault> {
    let operand = pa;
    let flags: u64;
    match guarded!("vmptrld [{p}]\npushfq\npop {f}", p = in(reg) &operand, f = out(reg) flags) {
        None => Ok(outcome(flags)),
        Some(fault) => Err(fault),
    }
}

fn vmptrst() -> Result<u64, Fault> {
    let mut operand = 0u64;
    match guarded!("vmptrst [{p}]", p = in(reg) &mut operand) {
        None => Ok(operand),
        Some(fault) => Err(fault),
    }
}

fn vmread(field: u64) -> Result<(Vmx, u64), Fault> {
    let flags: u64;
    let value: u64;
    match guarded!("vmread {v}, {e}\npushfq\npop {f}", e = in(reg) field, v = out(reg) value, f = out(reg) flags)
    {
        None => Ok((outcome(flags), value)),
        Some(fault) => Err(fault),
    }
}

fn vmwrite(field: u64, value: u64) -> Result<Vmx, Fault> {
    let flags: u64;
    match guarded!("vmwrite {e}, {v}\npushfq\npop {f}", e = in(reg) field, v = in(reg) value, f = out(reg) flags)
    {
        None => Ok(outcome(flags)),
        Some(fault) => Err(fault),
    }
}

/// VMREAD of a field that must succeed.
fn read(field: u64) -> Result<u64, &'static str> {
    match vmread(field) {
        Ok((Vmx::Succeed, value)) => Ok(value),
        _ => Err("VMREAD failed"),
    }
}

/// VMWRITE of a field that must succeed.
fn write(field: u64, value: u64) -> Check {
    ensure(vmwrite(field, value) == Ok(Vmx::Succeed), "VMWRITE failed")
}

/// The VM-instruction error number of the current VMCS.
fn instruction_error() -> Result<u64, &'static str> {
    read(0x4400)
}

/// Expects VMfailValid with `error`.
fn fail_valid(result: Result<Vmx, Fault>, error: E, why: &'static str) -> Check {
    ensure(result == Ok(Vmx::FailValid), why)?;
    ensure(instruction_error()? == u64::from(error.number()), why)
}

/// RDMSR that must not fault.
fn msr(msr: u32) -> Result<u64, &'static str> {
    let (lo, hi): (u32, u32);
    match guarded!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) {
        None => Ok(u64::from(hi) << 32 | u64::from(lo)),
        Some(_) => Err("RDMSR faulted"),
    }
}

fn rdmsr(msr: u32) -> Result<u64, &'static str> {
    let (lo, hi): (u32, u32);
    match guarded!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi) {
        None => Ok(u64::from(hi) << 32 | u64::from(lo)),
        Some(_) => Err("RDMSR of a VMX capability MSR faulted"),
    }
}

fn write_cr0(value: u64) -> Option<Fault> {
    guarded!("mov cr0, {v}", v = in(reg) value)
}

fn write_cr4(value: u64) -> Option<Fault> {
    guarded!("mov cr4, {v}", v = in(reg) value)
}

fn read_cr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a control register at CPL 0.
    unsafe {
        match n {
            0 => asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)),
        }
    }
    v
}

/// SGDT and SIDT: (GDTR base, GDTR limit, IDTR base, IDTR limit).
fn tables() -> (u64, u64, u64, u64) {
    let mut gdtr = crate::arch::DescriptorTablePointer { limit: 0, base: 0 };
    let mut idtr = crate::arch::DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: SGDT/SIDT store 10 bytes into the pointers' storage.
    unsafe {
        asm!("sgdt [{}]", in(reg) &mut gdtr, options(nostack, preserves_flags));
        asm!("sidt [{}]", in(reg) &mut idtr, options(nostack, preserves_flags));
    }
    (
        gdtr.base,
        u64::from(gdtr.limit),
        idtr.base,
        u64::from(idtr.limit),
    )
}

/// VMLAUNCH (`launch`) or VMRESUME of L2 with HOST_RSP/HOST_RIP set to return here: `Ok(())`
/// after a VM exit from L2, `Err(rflags)` when the instruction failed (VMfail).
fn enter_l2(launch: bool) -> Result<(), u64> {
    let result: u64;
    // SAFETY: HOST_RSP is this frame's stack after the pushes and HOST_RIP the label after the
    // instruction, so a VM exit resumes here with the callee-saved registers on the stack; every
    // other register is clobbered (declared).
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "mov rax, 0x6c14",
            "vmwrite rax, rsp",
            "lea rdx, [rip + 2f]",
            "mov rax, 0x6c16",
            "vmwrite rax, rdx",
            "test rcx, rcx",
            "jz 4f",
            "vmlaunch",
            "jmp 5f",
            "4:",
            "vmresume",
            "5:",
            "pushfq",
            "pop rax",
            "jmp 6f",
            "2:",
            "mov rax, -1",
            "6:",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbp",
            "pop rbx",
            inout("rcx") u64::from(launch) => _,
            out("rax") result,
            clobber_abi("C"),
        );
    }
    if result == u64::MAX {
        Ok(())
    } else {
        Err(result)
    }
}

/// Writes the VMCS for L2: a 64-bit guest in L1's own address space at `mini_hv_l2_entry`,
/// L1's state as the host state, the controls every VMCS must set (the TRUE allowed-0 bits) and
/// IA-32e mode for both.
fn write_l2_vmcs() -> Check {
    let low = |msr| rdmsr(msr).map(|v| v & 0xffff_ffff);
    let (gdt, gdt_limit, idt, idt_limit) = tables();
    let (cr0, cr3, cr4) = (read_cr(0), read_cr(3), read_cr(4));
    let l2_stack = phys(&raw const L2_STACK) + 4096 - 64;
    let fields: [(u64, u64); 45] = [
        (0x4000, low(IA32_VMX_TRUE_PINBASED_CTLS)?),
        (0x4002, low(IA32_VMX_TRUE_PROCBASED_CTLS)?),
        (0x400c, low(IA32_VMX_TRUE_EXIT_CTLS)? | 1 << 9),
        (0x4012, low(IA32_VMX_TRUE_ENTRY_CTLS)? | 1 << 9),
        (0x2800, u64::MAX),
        // Host state: L1's.
        (0x6c00, cr0),
        (0x6c02, cr3),
        (0x6c04, cr4),
        (0x0c00, 0x10),
        (0x0c02, 0x18),
        (0x0c04, 0x10),
        (0x0c06, 0x10),
        (0x0c08, 0x10),
        (0x0c0a, 0x10),
        (0x0c0c, 0x20),
        (0x6c06, 0),
        (0x6c08, 0),
        (0x6c0a, 0),
        (0x6c0c, gdt),
        (0x6c0e, idt),
        // Guest state: L2 in L1's address space.
        (0x6800, cr0),
        (0x6802, cr3),
        (0x6804, cr4),
        (0x681a, 0x400),
        (0x681c, l2_stack),
        (0x681e, mini_hv_l2_entry as *const () as u64),
        (0x6820, 2),
        (0x0802, 0x18),
        (0x4802, 0xffff_ffff),
        (0x4816, 0xa09b),
        (0x0800, 0x10),
        (0x4800, 0xffff_ffff),
        (0x4814, 0xc093),
        (0x0804, 0x10),
        (0x4804, 0xffff_ffff),
        (0x4818, 0xc093),
        (0x0806, 0x10),
        (0x4806, 0xffff_ffff),
        (0x481a, 0xc093),
        (0x4820, 0x1_0000),
        (0x080e, 0x20),
        (0x480e, 0x67),
        (0x4822, 0x8b),
        (0x6816, gdt),
        (0x4810, gdt_limit),
    ];
    for (field, value) in fields {
        write(field, value)?;
    }
    // FS, GS (flat data), IDTR.
    for (field, value) in [
        (0x0808, 0x10),
        (0x4808, 0xffff_ffff),
        (0x481c, 0xc093),
        (0x080a, 0x10),
        (0x480a, 0xffff_ffff),
        (0x481e, 0xc093),
        (0x6818, idt),
        (0x4812, idt_limit),
    ] {
        write(field, value)?;
    }
    Ok(())
}

/// A page for L1's VM-entry MSR-load area (and, in [`l0_exits_and_msr_lists`], the VM-exit
/// MSR-store and MSR-load areas at 100H and 200H).
static mut MSR_LOAD: Page = Page([0; 4096]);
/// L1's MSR bitmaps: all clear, so L2's RDMSR and WRMSR in the bitmaps' ranges do not exit to L1.
static mut MSR_BITMAP: Page = Page([0; 4096]);

/// IA32_SYSENTER_CS as VMCS12's VM-entry MSR-load area sets it for L2.
const ENTRY_SYSENTER_CS: u64 = 0x4242;
/// The scratch MSR as the VM-entry and the VM-exit MSR-load areas set it.
const ENTRY_SCRATCH: u64 = 0xaaaa_0001;
const EXIT_SCRATCH: u64 = 0xbbbb_0002;
/// IA32_KERNEL_GS_BASE as the VM-entry and the VM-exit MSR-load areas set it.
const ENTRY_KERNEL_GS_BASE: u64 = 0x0000_6b67_0001_0000;
const EXIT_KERNEL_GS_BASE: u64 = 0x0000_6b67_0003_0000;

/// L2's exits that L1 does not intercept are L0's, handled on L2's behalf as L1's processor would
/// (SDM 26.1: only the exits VMCS12's controls ask for are L1's), and VMCS12's MSR lists are
/// processed as the SDM's VM entry and VM exit process them (27.4, 28.4, 28.6). L1 passes every
/// MSR of the bitmaps' ranges through and sets no I/O or HLT exiting (but HLT exiting a processor
/// forces: then L2's HLT is L1's, completed as a NOP); its VM-entry MSR-load area
/// loads IA32_SYSENTER_CS, the scratch MSR and IA32_KERNEL_GS_BASE, its VM-exit MSR-store area
/// stores the scratch MSR, IA32_SYSENTER_ESP and IA32_KERNEL_GS_BASE, its VM-exit MSR-load area
/// loads the scratch MSR and IA32_KERNEL_GS_BASE. L2 reads IA32_SYSENTER_CS and
/// IA32_KERNEL_GS_BASE (the loaded values) and IA32_FEATURE_CONTROL (L0's answer), writes
/// IA32_SYSENTER_ESP and IA32_KERNEL_GS_BASE, writes the UART's scratch register (L0's device, where L1 reads it back),
/// halts (L0's wake-up), then reads an MSR L0 refuses: the #GP that raises is L1's exit, since
/// L1 intercepts #GP.
fn l0_exits_and_msr_lists() -> Check {
    let area = phys(&raw const MSR_LOAD);
    // SAFETY: one CPU; the pages are this check's.
    unsafe {
        let e = (&raw mut MSR_LOAD).cast::<u64>();
        for (i, v) in [
            // VM-entry MSR-load.
            (0, 0x174),
            (1, ENTRY_SYSENTER_CS),
            (2, u64::from(abi::MSR_SCRATCH)),
            (3, ENTRY_SCRATCH),
            (4, u64::from(abi::IA32_KERNEL_GS_BASE)),
            (5, ENTRY_KERNEL_GS_BASE),
            // VM-exit MSR-store.
            (0x20, u64::from(abi::MSR_SCRATCH)),
            (0x21, 0),
            (0x22, 0x175),
            (0x23, 0),
            (0x24, u64::from(abi::IA32_KERNEL_GS_BASE)),
            (0x25, 0),
            // VM-exit MSR-load.
            (0x40, u64::from(abi::MSR_SCRATCH)),
            (0x41, EXIT_SCRATCH),
            (0x42, u64::from(abi::IA32_KERNEL_GS_BASE)),
            (0x43, EXIT_KERNEL_GS_BASE),
        ] {
            e.add(i).write(v);
        }
        (&raw mut L2_SEEN).write([0; 4]);
    }
    let kernel_gs_base = msr(abi::IA32_KERNEL_GS_BASE)?;
    write(0x200a, area)?;
    write(0x4014, 3)?;
    write(0x2006, area + 0x100)?;
    write(0x400e, 3)?;
    write(0x2008, area + 0x200)?;
    write(0x4010, 2)?;
    write(0x2004, phys(&raw const MSR_BITMAP))?;
    let proc = read(0x4002)?;
    write(0x4002, proc | 1 << 28)?;
    write(0x4004, 1 << GP)?;
    write(0x681e, mini_hv_l2_l0 as *const () as u64)?;
    ensure(
        enter_l2(false).is_ok(),
        "VMRESUME of L2 with MSR lists failed",
    )?;
    // Where the processor L1 sees forces HLT exiting (IA32_VMX_TRUE_PROCBASED_CTLS allowed-0
    // bit 7, as Hyper-V's does), L2's HLT is L1's exit: L1 completes it as a NOP (no interrupt
    // is pending) and resumes L2 with the MSRs the exit stored as the next entry's loads (as a
    // hypervisor keeps its guest's MSRs across its exits).
    if rdmsr(IA32_VMX_TRUE_PROCBASED_CTLS)? & 1 << 7 != 0 && read(0x4402)? == 12 {
        // SAFETY: L2 is not running; the page is this check's.
        unsafe {
            let e = (&raw mut MSR_LOAD).cast::<u64>();
            e.add(3).write(e.add(0x21).read());
            e.add(5).write(e.add(0x25).read());
        }
        write(0x681e, read(0x681e)? + read(0x440c)?)?;
        ensure(
            enter_l2(false).is_ok(),
            "VMRESUME of L2 after its HLT failed",
        )?;
    }
    ensure(
        read(0x4402)? == 0,
        "L2's exit to L1 is not the exception L1 intercepts",
    )?;
    ensure(
        read(0x4404)? & 0x80000fff == 0x8000_0b00 | u64::from(GP),
        "L2's exception is not a #GP with an error code",
    )?;
    ensure(
        read(0x681e)? == mini_hv_l2_l0_gp as *const () as u64,
        "L2's #GP is not at its faulting RDMSR",
    )?;
    // SAFETY: L2 is not running; the page and the statics are this check's.
    let (seen, scratch_stored, esp_stored, kgs_stored) = unsafe {
        let e = (&raw const MSR_LOAD).cast::<u64>();
        (
            (&raw const L2_SEEN).read(),
            e.add(0x21).read(),
            e.add(0x23).read(),
            e.add(0x25).read(),
        )
    };
    let kgs_loaded = msr(abi::IA32_KERNEL_GS_BASE)?;
    // SAFETY: L1's own IA32_KERNEL_GS_BASE back (canonical; this kernel does not SWAPGS).
    unsafe {
        asm!("wrmsr", in("ecx") abi::IA32_KERNEL_GS_BASE, in("eax") kernel_gs_base as u32,
            in("edx") (kernel_gs_base >> 32) as u32, options(nostack));
    }
    ensure(
        seen[0] == ENTRY_SYSENTER_CS,
        "L2 did not read the IA32_SYSENTER_CS the VM-entry MSR-load area loaded",
    )?;
    ensure(
        seen[1] == abi::FEATURE_CONTROL_NESTED_VALUE,
        "L2's RDMSR of IA32_FEATURE_CONTROL did not get L0's answer",
    )?;
    ensure(seen[2] == 1, "L2's HLT did not complete")?;
    ensure(
        seen[3] == ENTRY_KERNEL_GS_BASE,
        "L2 did not read the IA32_KERNEL_GS_BASE the VM-entry MSR-load area loaded",
    )?;
    ensure(
        scratch_stored == ENTRY_SCRATCH
            && esp_stored == L2_SYSENTER_ESP
            && kgs_stored == L2_KERNEL_GS_BASE,
        "the VM-exit MSR-store area does not hold L2's MSRs",
    )?;
    ensure(
        kgs_loaded == EXIT_KERNEL_GS_BASE,
        "the VM-exit MSR-load area did not load IA32_KERNEL_GS_BASE",
    )?;
    ensure(
        read(0x6824)? == L2_SYSENTER_ESP,
        "VMCS12's guest IA32_SYSENTER_ESP is not L2's",
    )?;
    ensure(
        msr(abi::MSR_SCRATCH)? == EXIT_SCRATCH,
        "the VM-exit MSR-load area did not load the scratch MSR",
    )?;
    let scr: u8;
    // SAFETY: reading the UART's scratch register.
    unsafe { asm!("in al, dx", in("dx") 0x3ffu16, out("al") scr, options(nomem, nostack)) };
    ensure(
        scr == 0x5a,
        "L2's write of the UART scratch register did not reach L0's UART",
    )?;
    for (field, value) in [
        (0x4014, 0),
        (0x400e, 0),
        (0x4010, 0),
        (0x4004, 0),
        (0x4002, proc),
    ] {
        write(field, value)?;
    }
    Ok(())
}

/// A hostile L1's VMCS, one class of VM-entry failure at a time (SDM Vol. 3C, 27.1-27.4), each
/// answered as a processor answers it and then repaired: host state (VMfail 8), guest state (a
/// VM exit to L1's host RIP with exit reason 80000021H), MSR loading (exit reason 80000022H with
/// the failing entry's index). The VMCS stays clear, so VMLAUNCH is right afterwards.
fn entry_failures(vmcs_pa: u64) -> Check {
    let host_cr0 = read(0x6c00)?;
    write(0x6c00, 0)?;
    ensure(
        enter_l2(true).map_err(outcome) == Err(Vmx::FailValid),
        "VMLAUNCH with an invalid host CR0 did not VMfailValid",
    )?;
    ensure(
        instruction_error()? == u64::from(E::EntryInvalidHostStateFields.number()),
        "VMLAUNCH with an invalid host CR0: not VMfail(8)",
    )?;
    write(0x6c00, host_cr0)?;

    // RFLAGS bit 1 is reserved as 1: the entry fails after the checks of the controls and host
    // state, as a VM exit to L1.
    write(0x6820, 0)?;
    ensure(
        enter_l2(true).is_ok(),
        "VMLAUNCH with an invalid guest RFLAGS did not exit to L1",
    )?;
    ensure(
        read(0x4402)? == 0x8000_0021,
        "guest-state failure: exit reason is not 80000021H",
    )?;
    write(0x6820, 2)?;

    // The second entry of the MSR-load list loads IA32_FS_BASE, which VM entry refuses.
    let area = phys(&raw const MSR_LOAD);
    // SAFETY: one CPU; the page is this check's.
    unsafe {
        let entries = (&raw mut MSR_LOAD).cast::<u64>();
        entries.write(0x174); // IA32_SYSENTER_CS
        entries.add(1).write(0);
        entries.add(2).write(0xc000_0100); // IA32_FS_BASE
        entries.add(3).write(0);
    }
    write(0x200a, area)?;
    write(0x4014, 2)?;
    ensure(
        enter_l2(true).is_ok(),
        "VMLAUNCH with a bad MSR-load entry did not exit to L1",
    )?;
    ensure(
        read(0x4402)? == 0x8000_0022 && read(0x6400)? == 2,
        "MSR-loading failure: not exit reason 80000022H with qualification 2",
    )?;
    write(0x4014, 0)?;
    ensure(
        vmptrst() == Ok(vmcs_pa),
        "the current VMCS changed after the failed entries",
    )
}

/// The check (see the module documentation).
pub(super) fn nested_vmx() -> Check {
    if features() & abi::FEATURE_NESTED_VMX == 0 {
        return Err(NOT_SUPPORTED);
    }
    ensure(
        rdmsr(IA32_FEATURE_CONTROL)? == abi::FEATURE_CONTROL_NESTED_VALUE,
        "IA32_FEATURE_CONTROL does not allow VMXON",
    )?;
    let basic = rdmsr(IA32_VMX_BASIC)?;
    let revision = (basic & 0x7fff_ffff) as u32;
    ensure(
        revision == abi::NESTED_VMCS_REVISION,
        "IA32_VMX_BASIC: not the nested revision",
    )?;
    let vmxon_pa = phys(&raw const VMXON_REGION);
    let vmcs_pa = phys(&raw const VMCS_A);
    // SAFETY: one CPU; the pages are this check's.
    unsafe {
        (&raw mut VMXON_REGION).cast::<u32>().write(revision);
        (&raw mut VMCS_A).cast::<u32>().write(revision);
    }

    // VMXON needs CR4.VMXE (#UD without) and CR0.NE (#GP without, IA32_VMX_CR0_FIXED0).
    ensure(
        matches!(vmxon(vmxon_pa), Err(Fault { vector: UD, .. })),
        "VMXON without CR4.VMXE did not #UD",
    )?;
    let (cr0, cr4) = (read_cr(0), read_cr(4));
    ensure(
        write_cr4(cr4 | 1 << 13).is_none(),
        "setting CR4.VMXE faulted",
    )?;
    ensure(write_cr0(cr0 | 1 << 5).is_none(), "setting CR0.NE faulted")?;

    // VMXON: a misaligned region is VMfailInvalid, then success; a second VMXON is VMfail
    // without a current VMCS: VMfailInvalid.
    ensure(
        vmxon(vmxon_pa + 8) == Ok(Vmx::FailInvalid),
        "VMXON of a misaligned region did not VMfailInvalid",
    )?;
    ensure(vmxon(vmxon_pa) == Ok(Vmx::Succeed), "VMXON failed")?;
    ensure(
        vmxon(vmxon_pa) == Ok(Vmx::FailInvalid),
        "VMXON in VMX operation without a current VMCS did not VMfailInvalid",
    )?;
    ensure(
        vmread(0x681e).map(|(r, _)| r) == Ok(Vmx::FailInvalid),
        "VMREAD without a current VMCS did not VMfailInvalid",
    )?;
    ensure(vmclear(vmcs_pa) == Ok(Vmx::Succeed), "VMCLEAR failed")?;
    ensure(vmptrld(vmcs_pa) == Ok(Vmx::Succeed), "VMPTRLD failed")?;
    ensure(
        vmptrst() == Ok(vmcs_pa),
        "VMPTRST did not store the VMCS pointer",
    )?;
    // The SDM's VMfailValid numbers for a hostile L1.
    fail_valid(
        vmptrld(vmcs_pa | 0x800),
        E::VmptrldInvalidAddress,
        "VMPTRLD of a misaligned address: not VMfail(9)",
    )?;
    fail_valid(
        vmptrld(1 << 50),
        E::VmptrldInvalidAddress,
        "VMPTRLD beyond the physical-address width: not VMfail(9)",
    )?;
    fail_valid(
        vmptrld(vmxon_pa),
        E::VmptrldVmxonPointer,
        "VMPTRLD of the VMXON pointer: not VMfail(10)",
    )?;
    fail_valid(
        vmclear(vmxon_pa),
        E::VmclearVmxonPointer,
        "VMCLEAR of the VMXON pointer: not VMfail(3)",
    )?;
    fail_valid(
        vmread(0x7777).map(|(r, _)| r),
        E::UnsupportedVmcsComponent,
        "VMREAD of an unsupported field: not VMfail(12)",
    )?;
    write(0x681e, 0x1234)?;
    ensure(read(0x681e)? == 0x1234, "VMREAD did not return the VMWRITE")?;
    // VMLAUNCH of a VMCS whose controls are all 0 (the default1 bits missing): VMfail(7).
    ensure(
        enter_l2(true).map_err(outcome) == Err(Vmx::FailValid),
        "VMLAUNCH of an empty VMCS did not VMfailValid",
    )?;
    ensure(
        instruction_error()? == u64::from(E::EntryInvalidControlFields.number()),
        "VMLAUNCH of an empty VMCS: not VMfail(7)",
    )?;
    ensure(
        write_cr4(read_cr(4) & !(1 << 13))
            == Some(Fault {
                vector: GP,
                error: 0,
            }),
        "clearing CR4.VMXE in VMX operation did not #GP(0)",
    )?;

    // L2: launch, then a CPUID exit per round, each answered by skipping the instruction.
    write_l2_vmcs()?;
    entry_failures(vmcs_pa)?;
    ensure(enter_l2(true).is_ok(), "VMLAUNCH of L2 failed")?;
    let mut samples = [0u64; ROUNDS];
    for sample in samples.iter_mut() {
        ensure(read(0x4402)? == 10, "L2's exit is not CPUID (reason 10)")?;
        let length = read(0x440c)?;
        let rip = read(0x681e)?;
        write(0x681e, rip + length)?;
        let start = super::tests::rdtsc();
        ensure(enter_l2(false).is_ok(), "VMRESUME of L2 failed")?;
        *sample = super::tests::rdtsc() - start;
    }
    ensure(read(0x4402)? == 10, "L2's last exit is not CPUID")?;
    let relaunch = match enter_l2(true) {
        Ok(()) => Ok(Vmx::Succeed),
        Err(flags) => Ok(outcome(flags)),
    };
    fail_valid(
        relaunch,
        E::VmlaunchNonClearVmcs,
        "VMLAUNCH of a launched VMCS: not VMfail(4)",
    )?;
    l0_exits_and_msr_lists()?;
    l0_owned_cr0_bit()?;
    ept_for_l2()?;
    vpid_for_l2()?;
    real_mode_l2()?;
    samples.sort_unstable();
    gprintln!(
        "nested CPUID round trip (L1 VMRESUME -> L2 CPUID -> L1): median {} TSC ticks, minimum \
         {} over {ROUNDS} rounds",
        samples[ROUNDS / 2],
        samples[0]
    );

    ensure(vmclear(vmcs_pa) == Ok(Vmx::Succeed), "VMCLEAR failed")?;
    ensure(vmxoff() == Ok(Vmx::Succeed), "VMXOFF failed")?;
    ensure(
        matches!(vmread(0x681e), Err(Fault { vector: UD, .. })),
        "VMREAD after VMXOFF did not #UD",
    )?;
    ensure(
        write_cr4(read_cr(4) & !(1 << 13)).is_none(),
        "clearing CR4.VMXE faulted",
    )?;
    Ok(())
}
