//! Table tests: for every covered rule, a passing case (the rule's condition active and satisfied,
//! and the whole VMCS still valid) and a failing case (the same plus one mutation that breaks the
//! rule), both built from the known-good baseline.

mod check_common;
use check_common::*;
use vmcs::check::{
    Coverage, CpuFeatures, EntryInstruction, FailureClass, LaunchState, Outcome, Rule,
};
use vmx_caps::msr;

const PIN: u32 = e!(PIN_BASED_VM_EXECUTION_CONTROLS);
const PROC: u32 = e!(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS);
const PROC2: u32 = e!(SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS);
const EXIT: u32 = e!(PRIMARY_VM_EXIT_CONTROLS);
const ENTRY: u32 = e!(VM_ENTRY_CONTROLS);
const INFO: u32 = e!(VM_ENTRY_INTERRUPTION_INFORMATION);
const INTR: u32 = e!(GUEST_INTERRUPTIBILITY_STATE);
const ACT: u32 = e!(GUEST_ACTIVITY_STATE);
const RFLAGS: u32 = e!(GUEST_RFLAGS);
const PDE: u32 = e!(GUEST_PENDING_DEBUG_EXCEPTIONS);
const LINK: u32 = e!(VMCS_LINK_POINTER);
const CS_AR: u32 = e!(GUEST_CS_ACCESS_RIGHTS);
const SS_AR: u32 = e!(GUEST_SS_ACCESS_RIGHTS);
const DS_AR: u32 = e!(GUEST_DS_ACCESS_RIGHTS);
const TR_AR: u32 = e!(GUEST_TR_ACCESS_RIGHTS);
const LDTR_AR: u32 = e!(GUEST_LDTR_ACCESS_RIGHTS);
const GCR0: u32 = e!(GUEST_CR0);
const GCR4: u32 = e!(GUEST_CR4);
const HCR0: u32 = e!(HOST_CR0);
const HCR4: u32 = e!(HOST_CR4);
const NONCANON: u64 = 1 << 47;

/// Replaces the environment with one built on `tigerlake` (or the permissive variant) with one
/// capability MSR changed.
fn rebuild(env: &mut Env, permissive: bool, msr: u32, value: u64) {
    let mut m = if permissive {
        permissive_msrs()
    } else {
        tigerlake_msrs()
    };
    m.insert(msr, value).unwrap();
    *env = Env::with_msrs(m);
}

fn permissive(env: &mut Env) {
    *env = Env::permissive();
}

fn inject(env: &mut Env, info: u64) {
    env.w(INFO, info);
}
/// Injects external interrupt 0x20 with RFLAGS.IF = 1.
fn ext_int(env: &mut Env) {
    inject(env, 0x8000_0020);
    env.set(RFLAGS, 1 << 9);
}
fn nmi(env: &mut Env) {
    inject(env, 0x8000_0202);
}
/// A 32-bit guest with PAE paging (EPT supplies the PDPTEs, all not present).
fn guest32(env: &mut Env) {
    env.clear(ENTRY, 1 << 9);
    env.w(e!(GUEST_IA32_EFER), 0);
    env.w(CS_AR, 0xc09b);
}
/// A 32-bit host, executed outside IA-32e mode.
fn host32(env: &mut Env) {
    guest32(env);
    env.launch.efer_lma = false;
    env.clear(EXIT, 1 << 9);
    env.w(e!(HOST_RIP), 0x0010_1000);
    env.w(e!(HOST_IA32_EFER), 0);
}
/// A virtual-8086 guest.
fn v86(env: &mut Env) {
    guest32(env);
    env.set(RFLAGS, 1 << 17);
    for seg in ["CS", "SS", "DS", "ES", "FS", "GS"] {
        let find = |what: &str| {
            vmcs::fields::by_name(&format!("GUEST_{seg}_{what}"))
                .unwrap()
                .encoding
        };
        env.w(find("SELECTOR"), 0x1000);
        env.w(find("BASE"), 0x10000);
        env.w(find("LIMIT"), 0xffff);
        env.w(find("ACCESS_RIGHTS"), 0xf3);
    }
}
fn tpr_shadow(env: &mut Env) {
    env.set(PROC, 1 << 21);
    env.w(e!(VIRTUAL_APIC_ADDRESS), VIRTUAL_APIC);
    env.w(e!(TPR_THRESHOLD), 0);
}
fn ldtr(env: &mut Env) {
    env.w(e!(GUEST_LDTR_SELECTOR), 0x20);
    env.w(e!(GUEST_LDTR_BASE), 0x9000);
    env.w(e!(GUEST_LDTR_LIMIT), 0xff);
    env.w(LDTR_AR, 0x82);
}
fn unrestricted(env: &mut Env) {
    env.set(PROC2, 1 << 7);
}
/// A real-mode guest (CR0.PE = 0, so "unrestricted guest").
fn real_mode(env: &mut Env) {
    unrestricted(env);
    guest32(env);
    env.clear(GCR0, 1 << 31 | 1);
}
/// `tigerlake` with IA32_VMX_BASIC[56] = 0 (the value of the models without CET).
fn no_basic56(env: &mut Env) {
    rebuild(env, false, msr::IA32_VMX_BASIC, 0x00d8_1000_0000_0004);
}
/// Tigerlake with VMX nested-exception support (IA32_VMX_BASIC[58], the FRED processors' bit).
fn basic58(env: &mut Env) {
    rebuild(
        env,
        false,
        msr::IA32_VMX_BASIC,
        0x01d8_1000_0000_0004 | 1 << 58,
    );
}
fn posted(env: &mut Env) {
    permissive(env);
    tpr_shadow(env);
    env.set(PROC2, 1 << 9);
    env.set(PIN, 1 << 7);
    env.w(e!(POSTED_INTERRUPT_NOTIFICATION_VECTOR), 0xf2);
    env.w(e!(POSTED_INTERRUPT_DESCRIPTOR_ADDRESS), 0xb000);
}
fn vmfunc(env: &mut Env) {
    env.set(PROC2, 1 << 13);
    env.w(e!(VM_FUNCTION_CONTROLS), 1);
    env.w(e!(EPTP_LIST_ADDRESS), 0xe000);
}
fn shadowing(env: &mut Env) {
    env.set(PROC2, 1 << 14);
    env.w(e!(VMREAD_BITMAP_ADDRESS), 0xf000);
    env.w(e!(VMWRITE_BITMAP_ADDRESS), 0x1_0000);
}
fn msr_area(env: &mut Env, count: u32, address: u32, n: u64, at: u64) {
    env.w(count, n);
    env.w(address, at);
}
fn host_cet(env: &mut Env) {
    env.set(EXIT, 1 << 28);
    env.w(e!(HOST_SSP), 0x8000);
}
fn guest_cet(env: &mut Env) {
    env.set(ENTRY, 1 << 20);
    env.w(e!(GUEST_SSP), 0x8000);
}
fn smm_entry(env: &mut Env) {
    env.launch.in_smm = true;
    env.set(ENTRY, 1 << 10);
    env.w(INTR, 1 << 2);
}
fn msr_entry(env: &mut Env, index: u64, value: u64) {
    env.w(e!(VM_ENTRY_MSR_LOAD_COUNT), 1);
    env.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA);
    env.mem.write_u64(MSR_LOAD_AREA, index);
    env.mem.write_u64(MSR_LOAD_AREA + 8, value);
}
fn pae_no_ept(env: &mut Env) {
    guest32(env);
    env.clear(PROC2, 1 << 1);
    env.w(e!(GUEST_CR3), PAE_PDPT);
    env.mem.write_u64(PAE_PDPT, 0x5001);
}

struct Case {
    rule: Rule,
    pass: fn(&mut Env),
    fail: fn(&mut Env),
}

macro_rules! cases {
    ($($rule:ident: |$p:ident| $pass:expr, |$f:ident| $fail:expr;)*) => {
        vec![$(Case {
            rule: Rule::$rule,
            pass: |$p: &mut Env| { let () = $pass; },
            fail: |$f: &mut Env| { let () = $fail; },
        },)*]
    };
}

fn cases() -> Vec<Case> {
    cases! {
        P4: |_e| (), |e| e.launch.current_vmcs = None;
        P5: |_e| (), |e| e.launch.current_vmcs_is_shadow = true;
        P6: |_e| (), |e| e.launch.blocked_by_mov_ss = true;
        P7: |_e| (), |e| e.launch.launch_state = LaunchState::Launched;
        P8: |e| { e.launch.instruction = EntryInstruction::Vmresume; e.launch.launch_state = LaunchState::Launched },
            |e| e.launch.launch_state = LaunchState::Clear;
        A1: |_e| (), |e| e.clear(PIN, 1 << 1);
        A2: |_e| (), |e| e.set(PIN, 1 << 10);
        A3: |_e| (), |e| e.clear(PROC, 1 << 1);
        A4: |_e| (), |e| e.set(PROC, 1 << 17);
        A5: |_e| (), |e| e.set(PROC2, 1 << 15);
        A6: |e| { rebuild(e, true, msr::IA32_VMX_PROCBASED_CTLS3, 1); e.set(PROC, 1 << 17); e.w(e!(TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS), 1) },
            |e| e.w(e!(TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS), 2);
        A7: |e| e.w(e!(CR3_TARGET_COUNT), 4), |e| e.w(e!(CR3_TARGET_COUNT), 5);
        A8: |e| { e.set(PROC, 1 << 25); e.w(e!(ADDRESS_OF_IO_BITMAP_A), 0x2_1000); e.w(e!(ADDRESS_OF_IO_BITMAP_B), 0x2_2000) },
            |e| e.w(e!(ADDRESS_OF_IO_BITMAP_A), 0x2_1001);
        A9: |e| { e.set(PROC, 1 << 25); e.w(e!(ADDRESS_OF_IO_BITMAP_A), 0x2_1000); e.w(e!(ADDRESS_OF_IO_BITMAP_B), 0x2_2000) },
            |e| e.w(e!(ADDRESS_OF_IO_BITMAP_B), 1 << 39);
        A10: |_e| (), |e| e.w(e!(ADDRESS_OF_MSR_BITMAPS), MSR_BITMAP | 0x800);
        A11: |e| tpr_shadow(e), |e| e.w(e!(VIRTUAL_APIC_ADDRESS), VIRTUAL_APIC | 0x10);
        A12: |e| tpr_shadow(e), |e| e.w(e!(TPR_THRESHOLD), 0x10);
        A13: |e| { tpr_shadow(e); e.mem.write(VIRTUAL_APIC + 0x80, &[0x20]); e.w(e!(TPR_THRESHOLD), 2) },
             |e| e.w(e!(TPR_THRESHOLD), 3);
        A14: |_e| (), |e| e.set(PROC2, 1 << 4);
        A15: |_e| (), |e| e.set(PROC2, 1 << 8);
        A16: |_e| (), |e| e.set(PROC2, 1 << 9);
        A17: |e| e.clear(PIN, 1 << 3), |e| e.set(PIN, 1 << 5);
        A18: |_e| (), |e| e.set(PROC, 1 << 22);
        A19: |e| { e.set(PROC2, 1); e.w(e!(APIC_ACCESS_ADDRESS), 0xfee0_0000) }, |e| e.w(e!(APIC_ACCESS_ADDRESS), 0xfee0_0004);
        A20: |e| { tpr_shadow(e); e.set(PROC2, 1 << 4) }, |e| { e.set(PROC2, 1); e.w(e!(APIC_ACCESS_ADDRESS), 0xfee0_0000) };
        A21: |e| { tpr_shadow(e); e.set(PROC2, 1 << 9) }, |e| e.clear(PIN, 1);
        A22: |e| posted(e), |e| e.clear(PROC2, 1 << 9);
        A23: |e| posted(e), |e| e.clear(EXIT, 1 << 15);
        A24: |e| posted(e), |e| e.w(e!(POSTED_INTERRUPT_NOTIFICATION_VECTOR), 0x1f2);
        A25: |e| posted(e), |e| e.w(e!(POSTED_INTERRUPT_DESCRIPTOR_ADDRESS), 0xb008);
        A26: |e| posted(e), |e| e.w(e!(POSTED_INTERRUPT_DESCRIPTOR_ADDRESS), 1 << 40);
        A27: |_e| (), |e| e.w(e!(VIRTUAL_PROCESSOR_IDENTIFIER), 0);
        A28: |e| e.w(e!(EPT_POINTER), EPT_PML4 | 3 << 3), |e| e.w(e!(EPT_POINTER), EPT_PML4 | 1 | 3 << 3);
        A29: |_e| (), |e| e.w(e!(EPT_POINTER), EPT_PML4 | 6 | 4 << 3);
        A30: |e| e.set(e!(EPT_POINTER), 1 << 6),
             |e| { let cap = e.caps.ept_vpid.0 & !(1 << 21); rebuild(e, false, msr::IA32_VMX_EPT_VPID_CAP, cap); e.set(e!(EPT_POINTER), 1 << 6) };
        A31: |e| e.set(e!(EPT_POINTER), 1 << 7),
             |e| { let cap = e.caps.ept_vpid.0 & !(1 << 23); rebuild(e, false, msr::IA32_VMX_EPT_VPID_CAP, cap); e.set(e!(EPT_POINTER), 1 << 7) };
        A32: |_e| (), |e| e.set(e!(EPT_POINTER), 1 << 8);
        A33: |e| e.clear(PROC2, 1 << 1), |e| e.set(PROC2, 1 << 7);
        A34: |e| { permissive(e); e.clear(PROC2, 1 << 1) }, |e| e.set(PROC2, 1 << 22);
        A35: |e| { e.set(PROC2, 1 << 17); e.w(e!(PML_ADDRESS), 0xc000) }, |e| e.clear(PROC2, 1 << 1);
        A36: |e| { e.set(PROC2, 1 << 17); e.w(e!(PML_ADDRESS), 0xc000) }, |e| e.w(e!(PML_ADDRESS), 0xc800);
        A37: |e| { e.set(PROC2, 1 << 23); e.w(e!(SUB_PAGE_PERMISSION_TABLE_POINTER), 0xd000) }, |e| e.clear(PROC2, 1 << 1);
        A38: |e| { e.set(PROC2, 1 << 23); e.w(e!(SUB_PAGE_PERMISSION_TABLE_POINTER), 0xd000) },
             |e| e.w(e!(SUB_PAGE_PERMISSION_TABLE_POINTER), 0xd001);
        A39: |e| vmfunc(e), |e| e.w(e!(VM_FUNCTION_CONTROLS), 3);
        A40: |e| vmfunc(e), |e| e.clear(PROC2, 1 << 1);
        A41: |e| vmfunc(e), |e| e.w(e!(EPTP_LIST_ADDRESS), 0xe010);
        A42: |e| shadowing(e), |e| e.w(e!(VMREAD_BITMAP_ADDRESS), 0xf004);
        A43: |e| shadowing(e), |e| e.w(e!(VMWRITE_BITMAP_ADDRESS), 1 << 45);
        A44: |e| { e.set(PROC2, 1 << 18); e.w(e!(VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS), 0x1_1000) },
             |e| e.w(e!(VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS), 0x1_1800);
        A45: |e| { permissive(e); e.set(PROC2, 1 << 24); e.set(ENTRY, 1 << 18); e.set(EXIT, 1 << 25) }, |e| e.clear(ENTRY, 1 << 18);
        A45: |e| { permissive(e); e.set(PROC2, 1 << 24); e.set(ENTRY, 1 << 18); e.set(EXIT, 1 << 25) }, |e| e.clear(EXIT, 1 << 25);
        A45: |e| { permissive(e); e.set(PROC2, 1 << 24); e.set(ENTRY, 1 << 18); e.set(EXIT, 1 << 25) }, |e| e.clear(PROC2, 1 << 1);
        B1: |_e| (), |e| e.clear(EXIT, 1);
        B2: |_e| (), |e| e.set(EXIT, 1 << 30);
        B3: |e| { rebuild(e, true, msr::IA32_VMX_EXIT_CTLS2, 1); e.set(EXIT, 1 << 31); e.w(e!(SECONDARY_VM_EXIT_CONTROLS), 1) },
            |e| e.w(e!(SECONDARY_VM_EXIT_CONTROLS), 4);
        B4: |e| { e.set(PIN, 1 << 6); e.set(EXIT, 1 << 22) }, |e| e.clear(PIN, 1 << 6);
        B5: |e| msr_area(e, e!(VM_EXIT_MSR_STORE_COUNT), e!(VM_EXIT_MSR_STORE_ADDRESS), 2, 0x1_2000),
            |e| e.w(e!(VM_EXIT_MSR_STORE_ADDRESS), 0x1_2008);
        B6: |e| msr_area(e, e!(VM_EXIT_MSR_STORE_COUNT), e!(VM_EXIT_MSR_STORE_ADDRESS), 2, (1 << 39) - 32),
            |e| e.w(e!(VM_EXIT_MSR_STORE_ADDRESS), (1 << 39) - 16);
        B7: |e| msr_area(e, e!(VM_EXIT_MSR_LOAD_COUNT), e!(VM_EXIT_MSR_LOAD_ADDRESS), 2, 0x1_2000),
            |e| e.w(e!(VM_EXIT_MSR_LOAD_ADDRESS), 0x1_2004);
        B8: |e| msr_area(e, e!(VM_EXIT_MSR_LOAD_COUNT), e!(VM_EXIT_MSR_LOAD_ADDRESS), 2, (1 << 39) - 32),
            |e| e.w(e!(VM_EXIT_MSR_LOAD_COUNT), 3);
        C1: |_e| (), |e| e.clear(ENTRY, 1);
        C2: |_e| (), |e| e.set(ENTRY, 1 << 24);
        C3: |_e| (), |e| e.set(ENTRY, 1 << 10);
        C4: |_e| (), |e| e.set(ENTRY, 1 << 11);
        C5: |e| e.launch.in_smm = true, |e| e.set(ENTRY, 3 << 10);
        C6: |e| ext_int(e), |e| inject(e, 0x8000_0120);
        C7: |e| nmi(e), |e| inject(e, 0x8000_0203);
        C8: |e| inject(e, 0x8000_0306), |e| inject(e, 0x8000_0320);
        C9: |e| inject(e, 0x8000_0700), |e| inject(e, 0x8000_0701);
        // C10 from the SDM ("Checks on VM-Entry Control Fields"), without IA32_VMX_BASIC[56]:
        // #GP, #PF, #AC, #DF deliver an error code; #UD and #CP (21, not in the SDM's list) must not.
        C10: |e| { no_basic56(e); inject(e, 0x8000_0b0d) }, |e| inject(e, 0x8000_0b06);
        C10: |e| { no_basic56(e); inject(e, 0x8000_0b0e) }, |e| inject(e, 0x8000_030e);
        C10: |e| { no_basic56(e); inject(e, 0x8000_0b11) }, |e| inject(e, 0x8000_0308);
        C10: |e| { no_basic56(e); inject(e, 0x8000_0315) }, |e| inject(e, 0x8000_0b15);
        C10: |e| { no_basic56(e); inject(e, 0x8000_0309) }, |e| inject(e, 0x8000_0b09);
        // ... other types and CR0.PE = 0 never deliver one.
        C10: |e| { no_basic56(e); nmi(e) }, |e| inject(e, 0x8000_0a02);
        C10: |e| { no_basic56(e); real_mode(e); inject(e, 0x8000_030d) }, |e| inject(e, 0x8000_0b0d);
        // With IA32_VMX_BASIC[56] (tigerlake) the vector no longer matters ...
        C10: |e| inject(e, 0x8000_0b06), |e| { e.w(e!(VM_ENTRY_INSTRUCTION_LENGTH), 1); inject(e, 0x8000_0e03) };
        // ... but the type and CR0.PE still do.
        C10: |e| inject(e, 0x8000_0308), |e| { ext_int(e); inject(e, 0x8000_0820) };
        C10: |e| inject(e, 0x8000_0b15), |e| inject(e, 0x8000_0a02);
        C10: |e| { real_mode(e); inject(e, 0x8000_030e) }, |e| inject(e, 0x8000_0b0e);
        C11: |e| ext_int(e), |e| inject(e, 0x8000_1020);
        // Bit 13 (nested exception) is reserved without IA32_VMX_BASIC[58] ...
        C11: |e| inject(e, 0x8000_0b0d), |e| inject(e, 0x8000_2b0d);
        // ... and with it, for any type but hardware exception (SDM Vol. 3C, "Checks on
        // VM-Entry Control Fields"); bits 30:14 stay reserved.
        C11: |e| { basic58(e); ext_int(e) }, |e| inject(e, 0x8000_2020);
        C11: |e| { basic58(e); inject(e, 0x8000_2b0d) }, |e| inject(e, 0x8000_6b0d);
        C12: |e| inject(e, 0x8000_0b0d), |e| e.w(e!(VM_ENTRY_EXCEPTION_ERROR_CODE), 0x1_0000);
        C13: |e| { inject(e, 0x8000_0480); e.w(e!(VM_ENTRY_INSTRUCTION_LENGTH), 2) }, |e| e.w(e!(VM_ENTRY_INSTRUCTION_LENGTH), 16);
        C14: |e| { rebuild(e, false, msr::IA32_VMX_MISC, 0x2004_01e0); inject(e, 0x8000_0603); e.w(e!(VM_ENTRY_INSTRUCTION_LENGTH), 1) },
             |e| e.w(e!(VM_ENTRY_INSTRUCTION_LENGTH), 0);
        C15: |e| msr_area(e, e!(VM_ENTRY_MSR_LOAD_COUNT), e!(VM_ENTRY_MSR_LOAD_ADDRESS), 1, MSR_LOAD_AREA),
             |e| e.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), MSR_LOAD_AREA + 8);
        C16: |e| msr_area(e, e!(VM_ENTRY_MSR_LOAD_COUNT), e!(VM_ENTRY_MSR_LOAD_ADDRESS), 2, (1 << 39) - 32),
             |e| e.w(e!(VM_ENTRY_MSR_LOAD_ADDRESS), (1 << 39) - 16);
        D1: |_e| (), |e| e.clear(HCR0, 1 << 5);
        D2: |_e| (), |e| e.set(HCR0, 1 << 32);
        D3: |_e| (), |e| e.clear(HCR4, 1 << 13);
        D4: |_e| (), |e| e.set(HCR4, 1 << 15);
        D5: |_e| (), |e| e.set(e!(HOST_CR3), 1 << 40);
        D6: |e| e.set(HCR4, 1 << 23), |e| e.clear(HCR0, 1 << 16);
        D7: |_e| (), |e| e.w(e!(HOST_IA32_SYSENTER_ESP), NONCANON);
        D8: |_e| (), |e| e.w(e!(HOST_IA32_SYSENTER_EIP), NONCANON);
        D9: |e| host_cet(e), |e| e.w(e!(HOST_IA32_S_CET), 1 << 6);
        D9: |e| { host_cet(e); e.w(e!(HOST_IA32_S_CET), 0x401) }, |e| e.w(e!(HOST_IA32_S_CET), 0xc01);
        D10: |e| { host_cet(e); e.w(e!(HOST_IA32_S_CET), 0xffff_8000_0000_1000) }, |e| e.w(e!(HOST_IA32_S_CET), 0x0000_8000_0000_1000);
        D11: |e| host_cet(e), |e| e.w(e!(HOST_SSP), 0x8002);
        D12: |e| host_cet(e), |e| e.w(e!(HOST_SSP), NONCANON);
        D13: |e| host_cet(e), |e| e.w(e!(HOST_IA32_INTERRUPT_SSP_TABLE_ADDR), NONCANON);
        D14: |e| { e.set(EXIT, 1 << 12); e.w(e!(HOST_IA32_PERF_GLOBAL_CTRL), 0x7_0000_000f) },
             |e| e.w(e!(HOST_IA32_PERF_GLOBAL_CTRL), 1 << 4);
        D15: |_e| (), |e| e.w(e!(HOST_IA32_PAT), 0x0007_0406_0007_0402);
        D16: |_e| (), |e| e.set(e!(HOST_IA32_EFER), 1 << 1);
        D17: |_e| (), |e| e.clear(e!(HOST_IA32_EFER), 1 << 10);
        D18: |_e| (), |e| e.clear(e!(HOST_IA32_EFER), 1 << 8);
        D19: |e| { permissive(e); e.set(EXIT, 1 << 29); e.w(e!(HOST_IA32_PKRS), 0x5555) }, |e| e.w(e!(HOST_IA32_PKRS), 1 << 32);
        E1: |_e| (), |e| e.w(e!(HOST_ES_SELECTOR), 0x11);
        E2: |_e| (), |e| e.w(e!(HOST_CS_SELECTOR), 0x0c);
        E3: |_e| (), |e| e.w(e!(HOST_SS_SELECTOR), 0x13);
        E4: |_e| (), |e| e.w(e!(HOST_DS_SELECTOR), 0x14);
        E5: |_e| (), |e| e.w(e!(HOST_FS_SELECTOR), 0x3);
        E6: |_e| (), |e| e.w(e!(HOST_GS_SELECTOR), 0x4);
        E7: |_e| (), |e| e.w(e!(HOST_TR_SELECTOR), 0x1c);
        E8: |_e| (), |e| e.w(e!(HOST_CS_SELECTOR), 0);
        E9: |_e| (), |e| e.w(e!(HOST_TR_SELECTOR), 0);
        E10: |e| host32(e), |e| e.w(e!(HOST_SS_SELECTOR), 0);
        E11: |_e| (), |e| e.w(e!(HOST_FS_BASE), NONCANON);
        E12: |_e| (), |e| e.w(e!(HOST_GS_BASE), NONCANON);
        E13: |_e| (), |e| e.w(e!(HOST_GDTR_BASE), NONCANON);
        E14: |_e| (), |e| e.w(e!(HOST_IDTR_BASE), NONCANON);
        E15: |_e| (), |e| e.w(e!(HOST_TR_BASE), NONCANON);
        F1: |e| host32(e), |e| e.set(EXIT, 1 << 9);
        F2: |e| host32(e), |e| e.set(ENTRY, 1 << 9);
        F3: |_e| (), |e| e.clear(EXIT, 1 << 9);
        F4: |e| host32(e), |e| e.set(HCR4, 1 << 17);
        F5: |e| host32(e), |e| e.w(e!(HOST_RIP), 1 << 32);
        F6: |_e| (), |e| e.clear(HCR4, 1 << 5);
        F7: |_e| (), |e| e.w(e!(HOST_RIP), NONCANON);
        F8: |e| { host32(e); e.cpu.features.remove(CpuFeatures::INTEL64) }, |e| e.set(EXIT, 1 << 9);
        G1: |_e| (), |e| e.clear(GCR0, 1 << 5);
        G1: |e| { unrestricted(e); guest32(e); e.clear(GCR0, 1 << 31 | 1) }, |e| e.clear(GCR0, 1 << 5);
        G2: |_e| (), |e| e.set(GCR0, 1 << 32);
        G2: |e| { rebuild(e, false, msr::IA32_VMX_CR0_FIXED1, 0x9fff_ffff); e.set(GCR0, 3 << 29) }, |e| e.set(GCR0, 1 << 33);
        G3: |e| unrestricted(e), |e| e.clear(GCR0, 1);
        G4: |_e| (), |e| e.clear(GCR4, 1 << 13);
        G5: |_e| (), |e| e.set(GCR4, 1 << 15);
        G6: |e| e.set(GCR4, 1 << 23), |e| e.clear(GCR0, 1 << 16);
        G7: |e| { e.set(ENTRY, 1 << 2); e.w(e!(GUEST_IA32_DEBUGCTL), 1) }, |e| e.w(e!(GUEST_IA32_DEBUGCTL), 1 << 3);
        G8: |e| e.set(ENTRY, 1 << 2), |e| e.set(e!(GUEST_DR7), 1 << 32);
        G9: |e| unrestricted(e), |e| e.clear(GCR0, 1 << 31);
        G10: |_e| (), |e| e.clear(GCR4, 1 << 5);
        G11: |e| guest32(e), |e| e.set(GCR4, 1 << 17);
        G12: |e| guest32(e), |e| e.set(GCR4, 1 << 32);
        G13: |_e| (), |e| e.set(e!(GUEST_CR3), 1 << 40);
        G14: |_e| (), |e| e.w(e!(GUEST_IA32_SYSENTER_ESP), NONCANON);
        G15: |_e| (), |e| e.w(e!(GUEST_IA32_SYSENTER_EIP), NONCANON);
        G16: |e| { e.set(ENTRY, 1 << 13); e.w(e!(GUEST_IA32_PERF_GLOBAL_CTRL), 0x7_0000_000f) },
             |e| e.w(e!(GUEST_IA32_PERF_GLOBAL_CTRL), 1 << 8);
        G17: |_e| (), |e| e.w(e!(GUEST_IA32_PAT), 0x0007_0406_0307_0406);
        G18: |_e| (), |e| e.set(e!(GUEST_IA32_EFER), 1 << 1);
        G19: |_e| (), |e| e.clear(e!(GUEST_IA32_EFER), 1 << 10);
        G20: |e| guest32(e), |e| e.w(e!(GUEST_IA32_EFER), 1 << 8);
        G21: |e| { permissive(e); e.set(ENTRY, 1 << 16); e.w(e!(GUEST_IA32_BNDCFGS), 0x1003) }, |e| e.w(e!(GUEST_IA32_BNDCFGS), 0x1007);
        G22: |e| { permissive(e); e.set(ENTRY, 1 << 16); e.w(e!(GUEST_IA32_BNDCFGS), 0xffff_8000_0000_1001) },
             |e| e.w(e!(GUEST_IA32_BNDCFGS), NONCANON | 1);
        G23: |e| { permissive(e); e.set(ENTRY, 1 << 18); e.w(e!(GUEST_IA32_RTIT_CTL), 1) }, |e| e.w(e!(GUEST_IA32_RTIT_CTL), 1 << 18);
        G24: |e| guest_cet(e), |e| e.w(e!(GUEST_IA32_S_CET), 1 << 6);
        G24: |e| { guest_cet(e); e.w(e!(GUEST_IA32_S_CET), 0x800) }, |e| e.w(e!(GUEST_IA32_S_CET), 0xc00);
        G26: |e| guest_cet(e), |e| e.w(e!(GUEST_SSP), 0x8001);
        G27: |e| { guest_cet(e); e.w(e!(GUEST_SSP), 0xffff_0000_0000_8000) }, |e| e.w(e!(GUEST_SSP), 1 << 48);
        // Outside IA-32e mode too the rule is only "bits 63:N identical" (no 63:32 = 0).
        G27: |e| { guest32(e); guest_cet(e); e.w(e!(GUEST_SSP), 1 << 32) }, |e| e.w(e!(GUEST_SSP), 1 << 48);
        G28: |e| guest_cet(e), |e| e.w(e!(GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR), NONCANON);
        G29: |e| { permissive(e); e.set(ENTRY, 1 << 22); e.w(e!(GUEST_IA32_PKRS), 5) }, |e| e.w(e!(GUEST_IA32_PKRS), 1 << 32);
        G30: |e| { permissive(e); e.set(ENTRY, 1 << 19); e.w(e!(GUEST_UINV), 0xf0) }, |e| e.w(e!(GUEST_UINV), 0x1f0);
        G31: |e| { permissive(e); e.set(ENTRY, 1 << 21); e.w(e!(GUEST_IA32_LBR_CTL), 1) }, |e| e.w(e!(GUEST_IA32_LBR_CTL), 1 << 4);
        H1: |e| v86(e), |e| e.w(e!(GUEST_CS_BASE), 0x1_0010);
        H2: |e| v86(e), |e| e.w(e!(GUEST_DS_LIMIT), 0xf_ffff);
        H3: |e| v86(e), |e| e.w(e!(GUEST_ES_ACCESS_RIGHTS), 0xf1);
        H4: |_e| (), |e| e.w(e!(GUEST_TR_SELECTOR), 0x1c);
        H5: |e| ldtr(e), |e| e.w(e!(GUEST_LDTR_SELECTOR), 0x24);
        H6: |_e| (), |e| e.w(e!(GUEST_SS_SELECTOR), 0x13);
        H7: |_e| (), |e| e.w(e!(GUEST_TR_BASE), NONCANON);
        H8: |_e| (), |e| e.w(e!(GUEST_FS_BASE), NONCANON);
        H9: |_e| (), |e| e.w(e!(GUEST_GS_BASE), NONCANON);
        H10: |e| ldtr(e), |e| e.w(e!(GUEST_LDTR_BASE), NONCANON);
        H11: |_e| (), |e| e.w(e!(GUEST_CS_BASE), 1 << 32);
        H12: |_e| (), |e| e.w(e!(GUEST_DS_BASE), 1 << 32);
        H13: |_e| (), |e| e.w(CS_AR, 0xa093);
        H14: |_e| (), |e| e.w(SS_AR, 0xc091);
        H15: |_e| (), |e| e.w(DS_AR, 0xc092);
        H16: |e| e.w(DS_AR, 0xc09b), |e| e.w(DS_AR, 0xc099);
        H17: |_e| (), |e| e.w(DS_AR, 0xc083);
        H18: |e| { unrestricted(e); e.w(CS_AR, 0xa093) }, |e| e.w(CS_AR, 0xa0f3);
        H19: |_e| (), |e| e.w(CS_AR, 0xa0bb);
        H20: |e| e.w(CS_AR, 0xa09f), |e| e.w(CS_AR, 0xa0ff);
        H21: |_e| (), |e| e.w(SS_AR, 0xc0f3);
        H22: |e| { unrestricted(e); e.w(CS_AR, 0xa093) }, |e| e.w(SS_AR, 0xc0f3);
        H23: |e| { e.w(e!(GUEST_DS_SELECTOR), 0x13); e.w(DS_AR, 0xc0f3) }, |e| e.w(DS_AR, 0xc093);
        H24: |_e| (), |e| e.w(DS_AR, 0xc013);
        H25: |_e| (), |e| e.w(DS_AR, 0xc193);
        H26: |_e| (), |e| e.w(CS_AR, 0xe09b);
        H27: |_e| (), |e| e.w(e!(GUEST_DS_LIMIT), 0xf_fff0);
        H27: |e| { e.w(e!(GUEST_DS_LIMIT), 0xf_ffff); e.w(DS_AR, 0x4093) }, |e| e.w(e!(GUEST_DS_LIMIT), 0x10_0fff);
        // H27/H28 hold for CS even with its unusable bit set; for an unusable DS they do not apply.
        H27: |e| e.w(DS_AR, 0x1_4093), |e| e.w(CS_AR, 0x1_209b);
        H28: |_e| (), |e| e.w(DS_AR, 0x2_c093);
        H28: |e| e.w(DS_AR, 0x3_c093), |e| e.w(CS_AR, 0x3_a09b);
        H29: |_e| (), |e| e.w(TR_AR, 0x83);
        H29: |e| { guest32(e); e.w(TR_AR, 0x83) }, |e| e.w(TR_AR, 0x89);
        H30: |_e| (), |e| e.w(TR_AR, 0x9b);
        H31: |_e| (), |e| e.w(TR_AR, 0x0b);
        H32: |_e| (), |e| e.w(TR_AR, 0x18b);
        H33: |_e| (), |e| e.w(e!(GUEST_TR_LIMIT), 0x10_0067);
        H34: |_e| (), |e| e.w(TR_AR, 0x1_008b);
        H35: |e| ldtr(e), |e| e.w(LDTR_AR, 0x83);
        H36: |e| ldtr(e), |e| e.w(LDTR_AR, 0x92);
        H37: |e| ldtr(e), |e| e.w(LDTR_AR, 0x02);
        H38: |e| ldtr(e), |e| e.w(LDTR_AR, 0x182);
        H39: |e| ldtr(e), |e| e.w(e!(GUEST_LDTR_LIMIT), 0x10_0000);
        I1: |_e| (), |e| e.w(e!(GUEST_GDTR_BASE), NONCANON);
        I2: |_e| (), |e| e.w(e!(GUEST_IDTR_BASE), NONCANON);
        I3: |_e| (), |e| e.w(e!(GUEST_GDTR_LIMIT), 0x1_0000);
        I4: |_e| (), |e| e.w(e!(GUEST_IDTR_LIMIT), 0x1_0000);
        J1: |e| guest32(e), |e| e.w(e!(GUEST_RIP), 1 << 32);
        // J2 is "bits 63:N identical", one bit looser than canonical: bit N-1 may differ.
        J2: |e| e.w(e!(GUEST_RIP), NONCANON), |e| e.w(e!(GUEST_RIP), 1 << 48);
        J2: |e| e.w(e!(GUEST_RIP), 0xffff_0000_0000_1000), |e| e.w(e!(GUEST_RIP), 0xfffe_0000_0000_1000);
        J2: |e| { e.cpu.linear_address_width = 57; e.w(e!(GUEST_RIP), 1 << 56) }, |e| e.w(e!(GUEST_RIP), 1 << 57);
        J3: |_e| (), |e| e.set(RFLAGS, 1 << 3);
        J4: |_e| (), |e| e.w(RFLAGS, 0);
        J5: |_e| (), |e| e.set(RFLAGS, 1 << 17);
        J6: |e| ext_int(e), |e| e.clear(RFLAGS, 1 << 9);
        K1: |e| e.w(ACT, 1), |e| e.w(ACT, 4);
        K1: |e| { rebuild(e, false, msr::IA32_VMX_MISC, 0x6004_01a0); e.w(ACT, 2) }, |e| e.w(ACT, 1);
        K2: |e| e.w(ACT, 1), |e| { e.w(SS_AR, 0xc0f3); e.w(e!(GUEST_SS_SELECTOR), 0x13) };
        K3: |e| { e.w(ACT, 1); e.set(RFLAGS, 1 << 9) }, |e| e.w(INTR, 1);
        K4: |e| { e.w(ACT, 1); ext_int(e) }, |e| inject(e, 0x8000_0306);
        K5: |e| { e.w(ACT, 2); nmi(e) }, |e| ext_int(e);
        K6: |e| e.w(ACT, 3), |e| nmi(e);
        K7: |e| smm_entry(e), |e| e.w(ACT, 3);
        K8: |_e| (), |e| e.w(INTR, 1 << 5);
        K8: |e| { e.cpu.features.insert(CpuFeatures::SGX); e.w(INTR, 1 << 4) }, |e| e.cpu.features.remove(CpuFeatures::SGX);
        K9: |e| { e.set(RFLAGS, 1 << 9); e.w(INTR, 1) }, |e| e.w(INTR, 3);
        K10: |e| { e.set(RFLAGS, 1 << 9); e.w(INTR, 1) }, |e| e.clear(RFLAGS, 1 << 9);
        K11: |e| ext_int(e), |e| e.w(INTR, 2);
        K12: |e| nmi(e), |e| e.w(INTR, 2);
        K12: |e| { nmi(e); e.set(RFLAGS, 1 << 9) }, |e| e.w(INTR, 1);
        K13: |e| { e.launch.in_smm = true; e.w(INTR, 1 << 2) }, |e| e.launch.in_smm = false;
        K14: |e| smm_entry(e), |e| e.w(INTR, 0);
        K15: |e| { e.set(PIN, 1 << 5); nmi(e) }, |e| e.w(INTR, 1 << 3);
        K16: |e| { e.cpu.features.insert(CpuFeatures::SGX); e.w(INTR, 1 << 4) }, |e| e.w(INTR, 1 << 4 | 2);
        K18: |_e| (), |e| e.w(PDE, 1 << 4);
        K19: |e| { e.set(RFLAGS, 1 << 9 | 1 << 8); e.w(INTR, 1); e.w(PDE, 1 << 14) }, |e| e.w(PDE, 0);
        K20: |e| { e.set(RFLAGS, 1 << 9); e.w(INTR, 1) }, |e| e.w(PDE, 1 << 14);
        K20: |e| { e.set(RFLAGS, 1 << 9 | 1 << 8); e.w(INTR, 1); e.w(e!(GUEST_IA32_DEBUGCTL), 2) }, |e| e.w(PDE, 1 << 14);
        K21: |e| { e.cpu.features.insert(CpuFeatures::RTM); e.w(PDE, 1 << 16 | 1 << 12) }, |e| e.w(PDE, 1 << 16 | 1 << 12 | 1);
        K21: |e| { e.cpu.features.insert(CpuFeatures::RTM); e.w(PDE, 1 << 16 | 1 << 12) }, |e| e.cpu.features.remove(CpuFeatures::RTM);
        K22: |e| e.w(LINK, LINK_VMCS), |e| e.w(LINK, LINK_VMCS + 8);
        K23: |e| e.w(LINK, LINK_VMCS), |e| { let id = e.caps.basic.revision_id(); e.mem.write(LINK_VMCS, &(id + 1).to_le_bytes()) };
        K23: |e| { shadowing(e); e.w(LINK, LINK_VMCS); let id = e.caps.basic.revision_id() | 1 << 31; e.mem.write(LINK_VMCS, &id.to_le_bytes()) },
             |e| e.clear(PROC2, 1 << 14);
        K24: |e| e.w(LINK, LINK_VMCS), |e| { let id = e.caps.basic.revision_id(); e.mem.write(CURRENT_VMCS, &id.to_le_bytes()); e.w(LINK, CURRENT_VMCS) };
        // SDM "Checks on Guest Non-Register State": in SMM with "entry to SMM" = 0 the link
        // pointer must differ from the executive-VMCS pointer field.
        K25: |e| { e.launch.in_smm = true; e.w(LINK, LINK_VMCS); e.w(e!(EXECUTIVE_VMCS_POINTER), CURRENT_VMCS) },
             |e| e.w(e!(EXECUTIVE_VMCS_POINTER), LINK_VMCS);
        L1: |e| { guest32(e); e.w(e!(GUEST_PDPTE0), 0x5001) }, |e| e.w(e!(GUEST_PDPTE0), 0x5003);
        L2: |e| pae_no_ept(e), |e| e.mem.write_u64(PAE_PDPT + 24, 0x5001 | 1 << 5);
        M1: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0x174 | 1 << 32);
        M2: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0xc000_0100);
        // M3 is unconditional (the guest need not use x2APIC mode): the whole range 800H-8FFH.
        M3: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0x808);
        M3: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0x800);
        M3: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0x8ff);
        M4: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0x9b);
        M4: |e| { e.launch.in_smm = true; msr_entry(e, 0x9b, 0) }, |e| e.launch.in_smm = false;
        M5: |e| msr_entry(e, 0x174, 0x10), |e| e.mem.write_u64(MSR_LOAD_AREA, 0x79);
        M6: |e| msr_entry(e, 0xc000_0080, 0xd01), |e| e.mem.write_u64(MSR_LOAD_AREA + 8, 0xd03);
        M6: |e| msr_entry(e, 0x277, 0x0007_0406_0007_0406), |e| e.mem.write_u64(MSR_LOAD_AREA + 8, 0x0007_0406_0007_0408);
        M6: |e| msr_entry(e, 0xc000_0082, 0xffff_8000_0000_0000), |e| e.mem.write_u64(MSR_LOAD_AREA + 8, NONCANON);
        M7: |e| msr_area(e, e!(VM_ENTRY_MSR_LOAD_COUNT), e!(VM_ENTRY_MSR_LOAD_ADDRESS), 512, MSR_LOAD_AREA),
            |e| e.w(e!(VM_ENTRY_MSR_LOAD_COUNT), 513);
    }
}

/// The spec's "Fail" column (`vm-entry-checks.md`, section 3), transcribed by hand: rule IDs
/// `letter first..=last` and the failure class the spec gives them. Independent of the checker's
/// own rule table, which the test compares against it.
const SPEC_FAIL_COLUMN: &[(char, u32, u32, &str)] = &[
    ('P', 1, 3, "fault"),
    ('P', 4, 5, "FI"),
    ('P', 6, 6, "F26"),
    ('P', 7, 7, "F4"),
    ('P', 8, 8, "F5"),
    ('P', 9, 9, "F16"),
    ('A', 1, 49, "F7"),
    ('B', 1, 8, "F7"),
    ('C', 1, 16, "F7"),
    ('D', 1, 23, "F8"),
    ('E', 1, 15, "F8"),
    ('F', 1, 8, "F8"),
    ('G', 1, 33, "X33"),
    ('H', 1, 40, "X33"),
    ('I', 1, 4, "X33"),
    ('J', 1, 6, "X33"),
    ('K', 1, 21, "X33"),
    ('K', 22, 25, "X33/q4"),
    ('L', 1, 2, "X33/q2"),
    ('M', 1, 7, "X34"),
];

/// The spec's failure class of the rule with ID `id`.
fn spec_class(id: &str) -> &'static str {
    let letter = id.chars().next().unwrap();
    let number: u32 = id[1..].parse().unwrap();
    SPEC_FAIL_COLUMN
        .iter()
        .find(|(l, first, last, _)| *l == letter && (*first..=*last).contains(&number))
        .map(|(.., class)| *class)
        .unwrap_or_else(|| panic!("{id} is not in the spec's table"))
}

/// Whether `outcome` is what the spec's class for `rule` says a violation causes.
fn class_matches(rule: Rule, outcome: Outcome) -> bool {
    let guest = |q: u64| Outcome::EntryFailure {
        exit_reason: 0x8000_0021,
        qualification: q,
    };
    match (spec_class(rule.id()), outcome) {
        ("FI", Outcome::VmFailInvalid) => true,
        ("F26" | "F4" | "F5" | "F7" | "F8" | "F16", Outcome::VmFailValid(e)) => {
            spec_class(rule.id())[1..].parse() == Ok(e.number())
        }
        // K12: "STI = 1 fails on some processors with X33/q3".
        ("X33", o) => o == guest(0) || (rule == Rule::K12 && o == guest(3)),
        ("X33/q4", o) => o == guest(4),
        ("X33/q2", o) => o == guest(2),
        (
            "X34",
            Outcome::EntryFailure {
                exit_reason,
                qualification,
            },
        ) => exit_reason == 0x8000_0022 && qualification >= 1,
        _ => false,
    }
}

#[test]
fn the_spec_fail_column_covers_every_rule() {
    for rule in Rule::ALL {
        let class = spec_class(rule.id());
        // The checker's own table agrees with the spec for the classes that name an outcome.
        let own = match rule.class() {
            FailureClass::Fault => "fault",
            FailureClass::VmFailInvalid => "FI",
            FailureClass::VmFailValid(n) => match n {
                4 => "F4",
                5 => "F5",
                7 => "F7",
                8 => "F8",
                16 => "F16",
                26 => "F26",
                _ => "other",
            },
            FailureClass::InvalidGuestState(0) => "X33",
            FailureClass::InvalidGuestState(2) => "X33/q2",
            FailureClass::InvalidGuestState(4) => "X33/q4",
            FailureClass::InvalidGuestState(_) => "other",
            FailureClass::MsrLoading => "X34",
        };
        assert_eq!(own, class, "{rule}");
    }
    assert_eq!(
        SPEC_FAIL_COLUMN
            .iter()
            .map(|(_, a, b, _)| b - a + 1)
            .sum::<u32>() as usize,
        Rule::COUNT
    );
}

#[test]
fn every_rule_passes_and_fails() {
    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let rule = case.rule;
        let mut env = Env::tigerlake();
        (case.pass)(&mut env);
        let report = env.check();
        let found: Vec<String> = report.violations().map(|v| v.to_string()).collect();
        if !found.is_empty() || report.outcome() != Outcome::Success {
            failures.push(format!(
                "{rule} (case {i}) pass state is not valid: {found:#?}"
            ));
        }
        if report.summary.unchecked.contains(rule) {
            failures.push(format!(
                "{rule} (case {i}) pass state left the rule unchecked"
            ));
        }
        (case.fail)(&mut env);
        let report = env.check();
        if !report.violates(rule) {
            let found: Vec<String> = report.violations().map(|v| v.to_string()).collect();
            failures.push(format!(
                "{rule} (case {i}) fail state does not violate it: {found:#?}"
            ));
            continue;
        }
        for v in report.violations().filter(|v| v.rule == rule) {
            if !class_matches(rule, v.outcome) {
                failures.push(format!(
                    "{rule} (case {i}): outcome {:?} does not match its class",
                    v.outcome
                ));
            }
            if v.expected.accepts(v.actual) {
                failures.push(format!(
                    "{rule} (case {i}): expected {} accepts actual {:#x}",
                    v.expected, v.actual
                ));
            }
        }
        // The prediction is the earliest violated class: never later than this rule's.
        if report.violations().all(|v| v.rule == rule) {
            let first = report.violations().next().unwrap().outcome;
            if !matches!(
                first,
                Outcome::EntryFailure {
                    exit_reason: 0x8000_0022,
                    ..
                }
            ) {
                assert_eq!(report.outcome(), first, "{rule} (case {i})");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_exactly_the_covered_rules() {
    let cases = cases();
    for rule in Rule::ALL {
        let tested = cases.iter().any(|c| c.rule == rule);
        match rule.coverage() {
            Coverage::Covered => assert!(tested, "{rule} is covered but has no table case"),
            Coverage::NotCovered(why) => {
                assert!(!tested, "{rule} is not covered ({why}) but has a case");
                assert!(!why.is_empty());
            }
        }
    }
}

/// SDM "Checks on Guest Non-Register State" (VMCS link pointer): a VM entry that returns from
/// SMM ("entry to SMM" = 0) compares the link pointer with the executive-VMCS pointer field, not
/// with the VMXON pointer. A link pointer equal to the VMXON pointer is fine when the executive
/// VMCS is another one (the return enters VMX non-root operation), and one equal to the
/// executive-VMCS pointer fails with qualification 4 even though it is not the VMXON pointer.
#[test]
fn k25_compares_the_link_pointer_with_the_executive_vmcs_pointer() {
    let mut env = Env::tigerlake();
    env.launch.in_smm = true;
    let id = env.caps.basic.revision_id();
    env.mem.write(VMXON, &id.to_le_bytes());
    env.w(LINK, VMXON);
    env.w(e!(EXECUTIVE_VMCS_POINTER), CURRENT_VMCS);
    let report = env.check();
    assert!(!report.violates(Rule::K25), "{:?}", report.summary);
    env.assert_enters();

    env.w(LINK, LINK_VMCS);
    env.w(e!(EXECUTIVE_VMCS_POINTER), LINK_VMCS);
    let report = env.check();
    assert!(report.violates(Rule::K25));
    assert_eq!(
        report.outcome(),
        Outcome::EntryFailure {
            exit_reason: 0x8000_0021,
            qualification: 4
        }
    );
}

/// SDM "Checks on Guest RIP, RFLAGS, and SSP": with "load CET state" the SSP field needs bits 1:0
/// clear and bits 63:N identical (N = linear-address width), whatever "IA-32e mode guest" says;
/// unlike RIP (J1) and unlike the host's SSP (D12, which follows "host address-space size"),
/// there is no "bits 63:32 are 0" rule for a guest outside IA-32e mode (KVM's nested checks,
/// written from the same SDM text, agree; Bochs requires it).
#[test]
fn g27_has_no_high_dword_rule_outside_ia32e_mode() {
    let mut env = Env::tigerlake();
    guest32(&mut env);
    guest_cet(&mut env);
    env.w(e!(GUEST_SSP), 0x0000_7fff_0000_1000);
    let report = env.check();
    assert!(!report.violates(Rule::G27), "{:?}", report.summary);
    env.assert_enters();
    env.w(e!(GUEST_SSP), 0x0001_0000_0000_1000);
    assert!(env.check().violates(Rule::G27));
}
