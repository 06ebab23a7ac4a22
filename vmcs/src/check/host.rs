//! Checks on the host-state area (D*, E*, F*): all VMfailValid 8.

use super::controls::Controls;
use super::engine::{CheckError, Ctx, beyond, bits::*, enc};
use super::input::{CpuFeatures, PhysMemory};
use super::report::{Expected, ViolationSink};
use super::rule::Rule;
use crate::VmcsRead;
use vmx_caps::arch::{Cr0, Cr4, Efer};
use vmx_caps::{CrFixedBits, CrUse};

/// IA32_S_CET reserved bits 9:6, SUPPRESS (bit 10) and TRACKER (bit 11).
pub(super) const S_CET_RESERVED: u64 = 0x3c0;
pub(super) const S_CET_SUPPRESS_TRACKER: u64 = 0xc00;
/// The CR3 bits that must be 0: above MAXPHYADDR, except bits 62:61 with LAM.
pub(super) fn cr3_reserved(maxphyaddr: u8, features: CpuFeatures) -> u64 {
    let mut mask = beyond(maxphyaddr);
    if features.contains(CpuFeatures::LAM) {
        mask &= !(3 << 61);
    }
    mask
}

pub(super) fn host_state<V, M, S>(cx: &mut Ctx<'_, V, M, S>, c: &Controls) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let caps = *cx.caps;
    let cpu = *cx.cpu;
    let host_64 = c.host_64();
    let (cr0_f, cr3_f, cr4_f) = (enc!(HOST_CR0), enc!(HOST_CR3), enc!(HOST_CR4));
    let cr0 = cx.read(cr0_f)?;
    let cr3 = cx.read(cr3_f)?;
    let cr4 = cx.read(cr4_f)?;
    let exit_f = enc!(PRIMARY_VM_EXIT_CONTROLS);

    // D1-D8: control registers and SYSENTER MSRs.
    let cr0_fixed = CrFixedBits::<Cr0>::cr0(&caps.cr0_fixed, CrUse::Vmx);
    let cr4_fixed = CrFixedBits::<Cr4>::cr4(&caps.cr4_fixed);
    cx.set(Rule::D1, &[cr0_f], cr0, cr0_fixed.must_be_one.bits());
    cx.clear(Rule::D2, &[cr0_f], cr0, cr0_fixed.must_be_zero.bits());
    cx.set(Rule::D3, &[cr4_f], cr4, cr4_fixed.must_be_one.bits());
    cx.clear(Rule::D4, &[cr4_f], cr4, cr4_fixed.must_be_zero.bits());
    cx.clear(
        Rule::D5,
        &[cr3_f],
        cr3,
        cr3_reserved(cpu.maxphyaddr, cpu.features),
    );
    if cr4 & Cr4::CET.bits() != 0 {
        cx.set(Rule::D6, &[cr0_f, cr4_f], cr0, Cr0::WP.bits());
    }
    if cpu.features.contains(CpuFeatures::INTEL64) {
        for (rule, field) in [
            (Rule::D7, enc!(HOST_IA32_SYSENTER_ESP)),
            (Rule::D8, enc!(HOST_IA32_SYSENTER_EIP)),
        ] {
            let value = cx.read(field)?;
            cx.canonical(rule, &[field], value);
        }
    }

    // D9-D13: CET state.
    if c.exit(EXIT_CET) {
        let s_cet_f = enc!(HOST_IA32_S_CET);
        if let Some(s_cet) = cx.read_opt(s_cet_f, &[Rule::D9, Rule::D10]) {
            cx.clear(Rule::D9, &[s_cet_f], s_cet, S_CET_RESERVED);
            if s_cet & S_CET_SUPPRESS_TRACKER == S_CET_SUPPRESS_TRACKER {
                cx.fail(
                    Rule::D9,
                    &[s_cet_f],
                    s_cet & S_CET_SUPPRESS_TRACKER,
                    Expected::NotEqual(S_CET_SUPPRESS_TRACKER),
                );
            }
            address_for_mode(cx, Rule::D10, s_cet_f, s_cet, host_64);
        }
        let ssp_f = enc!(HOST_SSP);
        if let Some(ssp) = cx.read_opt(ssp_f, &[Rule::D11, Rule::D12]) {
            cx.clear(Rule::D11, &[ssp_f], ssp, 3);
            address_for_mode(cx, Rule::D12, ssp_f, ssp, host_64);
        }
        let isst_f = enc!(HOST_IA32_INTERRUPT_SSP_TABLE_ADDR);
        if let Some(isst) = cx.read_opt(isst_f, &[Rule::D13]) {
            cx.canonical(Rule::D13, &[isst_f], isst);
        }
    }

    // D14-D19: MSRs loaded on VM exit.
    if c.exit(EXIT_PERF) {
        let reserved = cpu.perf_global_ctrl_reserved;
        cx.model_reserved_msr(Rule::D14, enc!(HOST_IA32_PERF_GLOBAL_CTRL), reserved);
    }
    if c.exit(EXIT_PAT) {
        cx.pat_msr(Rule::D15, enc!(HOST_IA32_PAT));
    }
    if c.exit(EXIT_EFER) {
        let field = enc!(HOST_IA32_EFER);
        if let Some(efer) = cx.read_opt(field, &[Rule::D16, Rule::D17, Rule::D18]) {
            cx.clear(Rule::D16, &[field], efer, cpu.efer_reserved());
            let want = |bit: u64| {
                if host_64 {
                    Expected::BitsSet(bit)
                } else {
                    Expected::BitsClear(bit)
                }
            };
            cx.expect(Rule::D17, &[field, exit_f], efer, want(Efer::LMA.bits()));
            cx.expect(Rule::D18, &[field, exit_f], efer, want(Efer::LME.bits()));
        }
    }
    if c.exit(EXIT_PKRS) {
        let field = enc!(HOST_IA32_PKRS);
        if let Some(pkrs) = cx.read_opt(field, &[Rule::D19]) {
            cx.clear(Rule::D19, &[field], pkrs, !0xffff_ffff);
        }
    }

    // E1-E10: selectors.
    let selectors = [
        (Rule::E1, enc!(HOST_ES_SELECTOR)),
        (Rule::E2, enc!(HOST_CS_SELECTOR)),
        (Rule::E3, enc!(HOST_SS_SELECTOR)),
        (Rule::E4, enc!(HOST_DS_SELECTOR)),
        (Rule::E5, enc!(HOST_FS_SELECTOR)),
        (Rule::E6, enc!(HOST_GS_SELECTOR)),
        (Rule::E7, enc!(HOST_TR_SELECTOR)),
    ];
    let mut values = [0u64; 7];
    for ((rule, field), value) in selectors.into_iter().zip(values.iter_mut()) {
        *value = cx.read(field)?;
        cx.clear(rule, &[field], *value, 7);
    }
    let [_, cs, ss, _, _, _, tr] = values;
    cx.expect(
        Rule::E8,
        &[enc!(HOST_CS_SELECTOR)],
        cs,
        Expected::NotEqual(0),
    );
    cx.expect(
        Rule::E9,
        &[enc!(HOST_TR_SELECTOR)],
        tr,
        Expected::NotEqual(0),
    );
    if !host_64 {
        cx.expect(
            Rule::E10,
            &[enc!(HOST_SS_SELECTOR), exit_f],
            ss,
            Expected::NotEqual(0),
        );
    }

    // E11-E15: base addresses.
    if cpu.features.contains(CpuFeatures::INTEL64) {
        for (rule, field) in [
            (Rule::E11, enc!(HOST_FS_BASE)),
            (Rule::E12, enc!(HOST_GS_BASE)),
            (Rule::E13, enc!(HOST_GDTR_BASE)),
            (Rule::E14, enc!(HOST_IDTR_BASE)),
            (Rule::E15, enc!(HOST_TR_BASE)),
        ] {
            let base = cx.read(field)?;
            cx.canonical(rule, &[field], base);
        }
    }

    // F1-F8: address-space size.
    let entry_f = enc!(VM_ENTRY_CONTROLS);
    let rip_f = enc!(HOST_RIP);
    let rip = cx.read(rip_f)?;
    if !cx.launch.efer_lma {
        cx.clear(Rule::F1, &[exit_f], c.exit, EXIT_HOST_64);
    } else {
        cx.set(Rule::F3, &[exit_f], c.exit, EXIT_HOST_64);
    }
    if !host_64 || !cx.launch.efer_lma {
        cx.clear(Rule::F2, &[entry_f, exit_f], c.entry, ENTRY_IA32E);
    }
    if host_64 {
        cx.set(Rule::F6, &[cr4_f, exit_f], cr4, Cr4::PAE.bits());
        cx.canonical(Rule::F7, &[rip_f, exit_f], rip);
    } else {
        cx.clear(Rule::F4, &[cr4_f, exit_f], cr4, Cr4::PCIDE.bits());
        cx.clear(Rule::F5, &[rip_f, exit_f], rip, !0xffff_ffff);
    }
    if !cpu.features.contains(CpuFeatures::INTEL64) {
        cx.clear(Rule::F8, &[exit_f], c.exit, EXIT_HOST_64);
        cx.clear(Rule::F8, &[entry_f], c.entry, ENTRY_IA32E);
    }
    Ok(())
}

/// An address that must be canonical in a 64-bit context, and have bits 63:32 clear otherwise.
pub(super) fn address_for_mode<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    rule: Rule,
    field: u32,
    value: u64,
    long_mode: bool,
) where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    if long_mode {
        cx.canonical(rule, &[field], value);
    } else {
        cx.clear(rule, &[field], value, !0xffff_ffff);
    }
}
