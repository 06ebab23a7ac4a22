//! INIT and SIPI emulation: the post-INIT state matches the SDM's table (Vol. 3A Table 10-1,
//! values written out here, not taken from the code), and the VM-entry checker accepts the
//! resulting VMCS on Bochs' tigerlake capabilities, waiting for SIPI and after the SIPI.

mod check_common;
use check_common::*;
use vmcs::init::{InitError, ProcessorRole, SipiOutcome, apply_init, apply_sipi};
use vmcs::{ActivityState, GuestSegment, VmcsRead, fields};
use vmx_core::{GpReg, GuestRegisters};

const SECONDARY: u32 = 0x401e;
const UNRESTRICTED_GUEST: u64 = 1 << 7;
const CR0_GUEST_HOST_MASK: u32 = 0x6000;
const CR4_GUEST_HOST_MASK: u32 = 0x6002;
/// Family 6, model 0x8c (Tiger Lake), stepping 1.
const SIGNATURE: u32 = 0x806c1;

/// The baseline (a 64-bit guest), unrestricted guest on, the hypervisor owning CR0 and CR4.
fn env() -> Env {
    let mut env = Env::tigerlake();
    env.set(SECONDARY, UNRESTRICTED_GUEST);
    env.w(CR0_GUEST_HOST_MASK, !0);
    env.w(CR4_GUEST_HOST_MASK, !0);
    env
}

fn violations(env: &Env) -> Vec<String> {
    env.check().violations().map(|v| v.to_string()).collect()
}

#[test]
fn init_puts_an_application_processor_in_the_sdm_post_init_state() {
    let mut env = env();
    let mut regs = GuestRegisters::new();
    for reg in GpReg::ALL {
        if let Some(r) = regs.gpr_mut(reg) {
            *r = 0x1111;
        }
    }
    regs.cr2 = 0xdead_0000;
    let caps = env.caps;
    let state = apply_init(
        &mut env.vmcs,
        &mut regs,
        &caps,
        ProcessorRole::Application,
        SIGNATURE,
    )
    .unwrap();
    assert_eq!(state, ActivityState::WaitForSipi);
    let v = &env.vmcs;
    // SDM Table 10-1, INIT column.
    assert_eq!(v.read(fields::CR0_READ_SHADOW).unwrap().bits(), 0x10); // ET; CD/NW were 0
    assert_eq!(v.read(fields::CR4_READ_SHADOW).unwrap().bits(), 0);
    assert_eq!(v.read(fields::GUEST_CR3).unwrap(), 0);
    assert_eq!(v.read(fields::GUEST_RIP).unwrap(), 0xfff0);
    assert_eq!(v.read(fields::GUEST_RFLAGS).unwrap().bits(), 0x2);
    assert_eq!(v.read(fields::GUEST_DR7).unwrap().bits(), 0x400);
    assert_eq!(v.read(fields::GUEST_RSP).unwrap(), 0);
    assert_eq!(v.read(fields::GUEST_IA32_EFER).unwrap().bits(), 0);
    let cs = v.read_guest_segment(GuestSegment::Cs).unwrap();
    assert_eq!(
        (cs.selector, cs.base, cs.limit),
        (0xf000, 0xffff_0000, 0xffff)
    );
    for seg in [
        GuestSegment::Ss,
        GuestSegment::Ds,
        GuestSegment::Es,
        GuestSegment::Fs,
        GuestSegment::Gs,
        GuestSegment::Ldtr,
        GuestSegment::Tr,
    ] {
        let s = v.read_guest_segment(seg).unwrap();
        assert_eq!((s.selector, s.base, s.limit), (0, 0, 0xffff), "{seg}");
        assert!(s.access_rights.bits() & 0x80 != 0, "{seg} present");
    }
    assert_eq!(v.read(fields::GUEST_GDTR_LIMIT).unwrap(), 0xffff);
    assert_eq!(v.read(fields::GUEST_IDTR_BASE).unwrap(), 0);
    assert_eq!(
        v.read(fields::GUEST_ACTIVITY_STATE).unwrap(),
        ActivityState::WaitForSipi
    );
    // VMX keeps CR0.NE and CR4.VMXE set underneath (tigerlake's FIXED0), PE/PG clear.
    assert_eq!(
        v.read(fields::GUEST_CR0).unwrap().bits() & 0x8000_0021,
        0x20
    );
    assert_eq!(
        v.read(fields::GUEST_CR4).unwrap().bits() & (1 << 13),
        1 << 13
    );
    // EDX holds the processor signature; every other GPR and CR2 are 0.
    for reg in GpReg::ALL {
        let want = if reg == GpReg::Rdx {
            Some(u64::from(SIGNATURE))
        } else if reg == GpReg::Rsp {
            None
        } else {
            Some(0)
        };
        assert_eq!(regs.gpr(reg), want, "{}", reg.name());
    }
    assert_eq!(regs.cr2, 0);
    assert_eq!(violations(&env), Vec::<String>::new());

    // SIPI vector 0x9a: CS 9A00h, base 9A000h, IP 0, active; still a valid entry.
    assert_eq!(
        apply_sipi(&mut env.vmcs, 0x9a).unwrap(),
        SipiOutcome::Started
    );
    let cs = env.vmcs.read_guest_segment(GuestSegment::Cs).unwrap();
    assert_eq!((cs.selector, cs.base, cs.limit), (0x9a00, 0x9a000, 0xffff));
    assert_eq!(env.vmcs.read(fields::GUEST_RIP).unwrap(), 0);
    assert_eq!(
        env.vmcs.read(fields::GUEST_ACTIVITY_STATE).unwrap(),
        ActivityState::Active
    );
    assert_eq!(violations(&env), Vec::<String>::new());
    // The second SIPI of INIT-SIPI-SIPI changes nothing.
    assert_eq!(
        apply_sipi(&mut env.vmcs, 0x10).unwrap(),
        SipiOutcome::Ignored
    );
    let again = env.vmcs.read_guest_segment(GuestSegment::Cs).unwrap();
    assert_eq!(again, cs);
}

#[test]
fn init_of_the_bootstrap_processor_runs_from_the_reset_vector_and_keeps_cd_nw() {
    let mut env = env();
    // The guest sees CR0.CD and CR0.NW set (through the read shadow).
    env.w(0x6004, (1 << 30) | (1 << 29) | 0x11);
    let mut regs = GuestRegisters::new();
    let caps = env.caps;
    let state = apply_init(
        &mut env.vmcs,
        &mut regs,
        &caps,
        ProcessorRole::Bootstrap,
        SIGNATURE,
    )
    .unwrap();
    assert_eq!(state, ActivityState::Active);
    assert_eq!(
        env.vmcs.read(fields::CR0_READ_SHADOW).unwrap().bits(),
        0x6000_0010
    );
    assert_eq!(
        apply_sipi(&mut env.vmcs, 0x9a).unwrap(),
        SipiOutcome::Ignored
    );
    assert_eq!(violations(&env), Vec::<String>::new());
}

#[test]
fn init_refuses_what_vm_entry_or_the_guest_would_see_wrong() {
    let caps = env().caps;
    let mut regs = GuestRegisters::new();
    let mut without = env();
    without.clear(SECONDARY, UNRESTRICTED_GUEST);
    assert_eq!(
        apply_init(
            &mut without.vmcs,
            &mut regs,
            &caps,
            ProcessorRole::Application,
            0
        ),
        Err(InitError::UnrestrictedGuestOff)
    );
    // CR0.NE is forced by VMX; a mask without it would show the guest NE = 1.
    let mut narrow = env();
    narrow.w(CR0_GUEST_HOST_MASK, !0x20);
    assert_eq!(
        apply_init(
            &mut narrow.vmcs,
            &mut regs,
            &caps,
            ProcessorRole::Application,
            0
        ),
        Err(InitError::MaskMissing {
            register: "CR0",
            bits: 0x20
        })
    );
}
