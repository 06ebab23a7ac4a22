//! Checks on the guest-state area (G*, H*, I*, J*, K*, L*): VM-entry failure, exit reason 33.

use super::controls::Controls;
use super::engine::{CheckError, Ctx, beyond, bits::*, enc};
use super::host::{S_CET_RESERVED, S_CET_SUPPRESS_TRACKER, cr3_reserved};
use super::input::{CpuFeatures, PhysMemory};
use super::report::{Expected, Outcome, ViolationSink};
use super::rule::Rule;
use crate::{
    InterruptibilityState as Intr, InterruptionInfo, InterruptionType, PendingDebugExceptions,
    SegmentAccessRights as Ar, VmcsRead,
};
use vmx_caps::arch::{Cr0, Cr4, DebugCtl, Dr7, Efer, Rflags};
use vmx_caps::{CrFixedBits, CrUse};

/// Segment registers in encoding order.
const ES: usize = 0;
const CS: usize = 1;
const SS: usize = 2;
const DS: usize = 3;
const FS: usize = 4;
const GS: usize = 5;
const LDTR: usize = 6;
const TR: usize = 7;

/// Selector, base, limit and access-rights encodings of each segment register.
const SEGMENT_FIELDS: [[u32; 4]; 8] = [
    [
        enc!(GUEST_ES_SELECTOR),
        enc!(GUEST_ES_BASE),
        enc!(GUEST_ES_LIMIT),
        enc!(GUEST_ES_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_CS_SELECTOR),
        enc!(GUEST_CS_BASE),
        enc!(GUEST_CS_LIMIT),
        enc!(GUEST_CS_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_SS_SELECTOR),
        enc!(GUEST_SS_BASE),
        enc!(GUEST_SS_LIMIT),
        enc!(GUEST_SS_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_DS_SELECTOR),
        enc!(GUEST_DS_BASE),
        enc!(GUEST_DS_LIMIT),
        enc!(GUEST_DS_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_FS_SELECTOR),
        enc!(GUEST_FS_BASE),
        enc!(GUEST_FS_LIMIT),
        enc!(GUEST_FS_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_GS_SELECTOR),
        enc!(GUEST_GS_BASE),
        enc!(GUEST_GS_LIMIT),
        enc!(GUEST_GS_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_LDTR_SELECTOR),
        enc!(GUEST_LDTR_BASE),
        enc!(GUEST_LDTR_LIMIT),
        enc!(GUEST_LDTR_ACCESS_RIGHTS),
    ],
    [
        enc!(GUEST_TR_SELECTOR),
        enc!(GUEST_TR_BASE),
        enc!(GUEST_TR_LIMIT),
        enc!(GUEST_TR_ACCESS_RIGHTS),
    ],
];

const TYPE: u64 = Ar::TYPE_MASK as u64;
const S: u64 = Ar::S as u64;
const P: u64 = Ar::P as u64;
const L: u64 = Ar::L as u64;
const DB: u64 = Ar::DB as u64;
const G: u64 = Ar::G as u64;
const UNUSABLE: u64 = Ar::UNUSABLE as u64;
/// Access-rights bits 11:8 and 31:17 (reserved).
const AR_RESERVED_11_8: u64 = 0xf00;
const AR_RESERVED_31_17: u64 = 0xfffe_0000;

const STI: u64 = Intr::BLOCKING_BY_STI.bits() as u64;
const MOV_SS: u64 = Intr::BLOCKING_BY_MOV_SS.bits() as u64;
const SMI: u64 = Intr::BLOCKING_BY_SMI.bits() as u64;
const NMI_BLOCKING: u64 = Intr::BLOCKING_BY_NMI.bits() as u64;
const ENCLAVE: u64 = Intr::ENCLAVE_INTERRUPTION.bits() as u64;

/// Activity states.
const ACTIVE: u64 = 0;
const HLT: u64 = 1;
const SHUTDOWN: u64 = 2;
const WAIT_FOR_SIPI: u64 = 3;

#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    selector: u64,
    base: u64,
    limit: u64,
    ar: u64,
}

impl Segment {
    fn usable(&self) -> bool {
        self.ar & UNUSABLE == 0
    }
    fn kind(&self) -> u64 {
        self.ar & TYPE
    }
    fn dpl(&self) -> u64 {
        (self.ar >> 5) & 3
    }
    fn rpl(&self) -> u64 {
        self.selector & 3
    }
}

/// The guest state the checks share.
struct Guest {
    cr0: u64,
    cr4: u64,
    rflags: u64,
    seg: [Segment; 8],
    ia32e: bool,
    unrestricted: bool,
    v86: bool,
    injected: Option<(InterruptionType, u64)>,
}

pub(super) fn guest_state<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    c: &Controls,
) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let mut seg = [Segment::default(); 8];
    for (s, [sel, base, limit, ar]) in seg.iter_mut().zip(SEGMENT_FIELDS) {
        *s = Segment {
            selector: cx.read(sel)?,
            base: cx.read(base)?,
            limit: cx.read(limit)?,
            ar: cx.read(ar)?,
        };
    }
    let rflags = cx.read(enc!(GUEST_RFLAGS))?;
    let g = Guest {
        cr0: cx.read(enc!(GUEST_CR0))?,
        cr4: cx.read(enc!(GUEST_CR4))?,
        rflags,
        seg,
        ia32e: c.ia32e_guest(),
        unrestricted: c.unrestricted(),
        v86: rflags & Rflags::VM.bits() != 0,
        injected: c.injected(),
    };
    control_registers(cx, c, &g)?;
    segments(cx, &g);
    descriptor_tables(cx)?;
    rip_rflags(cx, &g)?;
    non_register(cx, c, &g)?;
    pdptes(cx, c, &g)?;
    Ok(())
}

/// G1-G31.
fn control_registers<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    c: &Controls,
    g: &Guest,
) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let caps = *cx.caps;
    let cpu = *cx.cpu;
    let (cr0_f, cr3_f, cr4_f) = (enc!(GUEST_CR0), enc!(GUEST_CR3), enc!(GUEST_CR4));
    let entry_f = enc!(VM_ENTRY_CONTROLS);
    let (cr0, cr4) = (g.cr0, g.cr4);

    // NW and CD are never checked, PE and PG not with unrestricted guest.
    let cr0_fixed = CrFixedBits::<Cr0>::cr0(
        &caps.cr0_fixed,
        CrUse::Guest {
            unrestricted_guest: g.unrestricted,
        },
    );
    let cr4_fixed = CrFixedBits::<Cr4>::cr4(&caps.cr4_fixed);
    cx.set(Rule::G1, &[cr0_f], cr0, cr0_fixed.must_be_one.bits());
    cx.clear(Rule::G2, &[cr0_f], cr0, cr0_fixed.must_be_zero.bits());
    if cr0 & Cr0::PG.bits() != 0 {
        cx.set(Rule::G3, &[cr0_f], cr0, Cr0::PE.bits());
    }
    cx.set(Rule::G4, &[cr4_f], cr4, cr4_fixed.must_be_one.bits());
    cx.clear(Rule::G5, &[cr4_f], cr4, cr4_fixed.must_be_zero.bits());
    if cr4 & Cr4::CET.bits() != 0 {
        cx.set(Rule::G6, &[cr0_f, cr4_f], cr0, Cr0::WP.bits());
    }
    if c.entry(ENTRY_DEBUG) {
        let debugctl_f = enc!(GUEST_IA32_DEBUGCTL);
        match cpu.debugctl_reserved {
            Some(reserved) => {
                let debugctl = cx.read(debugctl_f)?;
                cx.clear(Rule::G7, &[debugctl_f], debugctl, reserved);
            }
            None => cx.unchecked(&[Rule::G7]),
        }
        let dr7_f = enc!(GUEST_DR7);
        let dr7 = cx.read(dr7_f)?;
        cx.clear(Rule::G8, &[dr7_f], dr7, Dr7::RESERVED_HIGH.bits());
    }
    if g.ia32e {
        cx.set(Rule::G9, &[cr0_f, entry_f], cr0, Cr0::PG.bits());
        cx.set(Rule::G10, &[cr4_f, entry_f], cr4, Cr4::PAE.bits());
    } else {
        cx.clear(Rule::G11, &[cr4_f, entry_f], cr4, Cr4::PCIDE.bits());
        cx.clear(Rule::G12, &[cr4_f, entry_f], cr4, Cr4::FRED.bits());
    }
    let cr3 = cx.read(cr3_f)?;
    cx.clear(
        Rule::G13,
        &[cr3_f],
        cr3,
        cr3_reserved(cpu.maxphyaddr, cpu.features),
    );
    if cpu.features.contains(CpuFeatures::INTEL64) {
        for (rule, field) in [
            (Rule::G14, enc!(GUEST_IA32_SYSENTER_ESP)),
            (Rule::G15, enc!(GUEST_IA32_SYSENTER_EIP)),
        ] {
            let value = cx.read(field)?;
            cx.canonical(rule, &[field], value);
        }
    }
    if c.entry(ENTRY_PERF) {
        let reserved = cpu.perf_global_ctrl_reserved;
        cx.model_reserved_msr(Rule::G16, enc!(GUEST_IA32_PERF_GLOBAL_CTRL), reserved);
    }
    if c.entry(ENTRY_PAT) {
        cx.pat_msr(Rule::G17, enc!(GUEST_IA32_PAT));
    }
    if c.entry(ENTRY_EFER) {
        let field = enc!(GUEST_IA32_EFER);
        if let Some(efer) = cx.read_opt(field, &[Rule::G18, Rule::G19, Rule::G20]) {
            cx.clear(Rule::G18, &[field], efer, cpu.efer_reserved());
            let lma = if g.ia32e {
                Expected::BitsSet(Efer::LMA.bits())
            } else {
                Expected::BitsClear(Efer::LMA.bits())
            };
            cx.expect(Rule::G19, &[field, entry_f], efer, lma);
            if cr0 & Cr0::PG.bits() != 0
                && (efer & Efer::LMA.bits() != 0) != (efer & Efer::LME.bits() != 0)
            {
                let lme = if efer & Efer::LMA.bits() != 0 {
                    Expected::BitsSet(Efer::LME.bits())
                } else {
                    Expected::BitsClear(Efer::LME.bits())
                };
                cx.fail(Rule::G20, &[field, cr0_f], efer, lme);
            }
        }
    }
    if c.entry(ENTRY_BNDCFGS) {
        let field = enc!(GUEST_IA32_BNDCFGS);
        if let Some(bndcfgs) = cx.read_opt(field, &[Rule::G21, Rule::G22]) {
            cx.clear(Rule::G21, &[field], bndcfgs, 0xffc);
            cx.canonical(Rule::G22, &[field], bndcfgs & !0xfff);
        }
    }
    if c.entry(ENTRY_RTIT) {
        let field = enc!(GUEST_IA32_RTIT_CTL);
        match (cpu.rtit_ctl_reserved, cx.read_opt(field, &[Rule::G23])) {
            (Some(reserved), Some(value)) => cx.clear(Rule::G23, &[field], value, reserved),
            (None, _) => cx.unchecked(&[Rule::G23]),
            (_, None) => {}
        }
    }
    if c.entry(ENTRY_CET) {
        let s_cet_f = enc!(GUEST_IA32_S_CET);
        if let Some(s_cet) = cx.read_opt(s_cet_f, &[Rule::G24]) {
            cx.clear(Rule::G24, &[s_cet_f], s_cet, S_CET_RESERVED);
            cx.expect(
                Rule::G24,
                &[s_cet_f],
                s_cet & S_CET_SUPPRESS_TRACKER,
                Expected::NotEqual(S_CET_SUPPRESS_TRACKER),
            );
        }
        let ssp_f = enc!(GUEST_SSP);
        if let Some(ssp) = cx.read_opt(ssp_f, &[Rule::G26, Rule::G27]) {
            cx.clear(Rule::G26, &[ssp_f], ssp, 3);
            // SDM "Checks on Guest RIP, RFLAGS, and SSP": bits 63:N identical, with no
            // dependence on "IA-32e mode guest" (unlike RIP, and unlike the host's SSP).
            cx.high_identical(Rule::G27, &[ssp_f], ssp);
        }
        let isst_f = enc!(GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR);
        if let Some(isst) = cx.read_opt(isst_f, &[Rule::G28]) {
            cx.canonical(Rule::G28, &[isst_f], isst);
        }
    }
    if c.entry(ENTRY_PKRS) {
        let field = enc!(GUEST_IA32_PKRS);
        if let Some(pkrs) = cx.read_opt(field, &[Rule::G29]) {
            cx.clear(Rule::G29, &[field], pkrs, !0xffff_ffff);
        }
    }
    if c.entry(ENTRY_UINV) {
        let field = enc!(GUEST_UINV);
        if let Some(uinv) = cx.read_opt(field, &[Rule::G30]) {
            cx.clear(Rule::G30, &[field], uinv, 0xff00);
        }
    }
    if c.entry(ENTRY_LBR) {
        let field = enc!(GUEST_IA32_LBR_CTL);
        match (cpu.lbr_ctl_reserved, cx.read_opt(field, &[Rule::G31])) {
            (Some(reserved), Some(value)) => cx.clear(Rule::G31, &[field], value, reserved),
            (None, _) => cx.unchecked(&[Rule::G31]),
            (_, None) => {}
        }
    }
    Ok(())
}

/// Limit and granularity agree: limit\[11:0\] not all 1 needs G = 0; limit\[31:20\] not all 0
/// needs G = 1.
fn granularity_ok(s: &Segment) -> bool {
    let g = s.ar & G != 0;
    (s.limit & 0xfff == 0xfff || !g) && (s.limit & 0xfff0_0000 == 0 || g)
}

/// H1-H39.
fn segments<V, M, S>(cx: &mut Ctx<'_, V, M, S>, g: &Guest)
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let seg = &g.seg;
    let f = &SEGMENT_FIELDS;
    let (sel, base, limit, ar) = (0, 1, 2, 3);
    let data = [ES, DS, FS, GS];
    let rflags_f = enc!(GUEST_RFLAGS);
    let cr0_f = enc!(GUEST_CR0);

    // Virtual-8086 guests: H1-H3.
    if g.v86 {
        for i in [CS, SS, DS, ES, FS, GS] {
            let s = seg[i];
            cx.expect(
                Rule::H1,
                &[f[i][base], f[i][sel], rflags_f],
                s.base,
                Expected::Equal(s.selector << 4),
            );
            cx.expect(
                Rule::H2,
                &[f[i][limit], rflags_f],
                s.limit,
                Expected::Equal(0xffff),
            );
            cx.expect(Rule::H3, &[f[i][ar], rflags_f], s.ar, Expected::Equal(0xf3));
        }
    }

    // Selectors: H4-H6.
    cx.clear(Rule::H4, &[f[TR][sel]], seg[TR].selector, 1 << 2);
    if seg[LDTR].usable() {
        cx.clear(
            Rule::H5,
            &[f[LDTR][sel], f[LDTR][ar]],
            seg[LDTR].selector,
            1 << 2,
        );
    }
    if !g.v86 && !g.unrestricted {
        cx.expect(
            Rule::H6,
            &[f[SS][sel], f[CS][sel]],
            seg[SS].rpl(),
            Expected::Equal(seg[CS].rpl()),
        );
    }

    // Bases: H7-H12.
    cx.canonical(Rule::H7, &[f[TR][base]], seg[TR].base);
    cx.canonical(Rule::H8, &[f[FS][base]], seg[FS].base);
    cx.canonical(Rule::H9, &[f[GS][base]], seg[GS].base);
    if seg[LDTR].usable() {
        cx.canonical(Rule::H10, &[f[LDTR][base], f[LDTR][ar]], seg[LDTR].base);
    }
    cx.clear(Rule::H11, &[f[CS][base]], seg[CS].base, !0xffff_ffff);
    for i in [SS, DS, ES] {
        if seg[i].usable() {
            cx.clear(
                Rule::H12,
                &[f[i][base], f[i][ar]],
                seg[i].base,
                !0xffff_ffff,
            );
        }
    }

    // Access rights outside virtual-8086 mode: H13-H28.
    if !g.v86 {
        let cs = seg[CS];
        let ss = seg[SS];
        let cs_ok: &'static [u64] = if g.unrestricted {
            &[3, 9, 11, 13, 15]
        } else {
            &[9, 11, 13, 15]
        };
        cx.expect(Rule::H13, &[f[CS][ar]], cs.kind(), Expected::OneOf(cs_ok));
        if ss.usable() {
            cx.expect(Rule::H14, &[f[SS][ar]], ss.kind(), Expected::OneOf(&[3, 7]));
        }
        for i in data {
            let s = seg[i];
            if !s.usable() {
                continue;
            }
            cx.set(Rule::H15, &[f[i][ar]], s.ar, 1);
            if s.ar & 8 != 0 {
                cx.set(Rule::H16, &[f[i][ar]], s.ar, 2);
            }
            if !g.unrestricted && s.kind() <= 11 {
                cx.expect(
                    Rule::H23,
                    &[f[i][ar], f[i][sel]],
                    s.dpl(),
                    Expected::InRange {
                        min: s.rpl(),
                        max: 3,
                    },
                );
            }
        }
        match cs.kind() {
            3 => cx.expect(Rule::H18, &[f[CS][ar]], cs.dpl(), Expected::Equal(0)),
            9 | 11 => cx.expect(
                Rule::H19,
                &[f[CS][ar], f[SS][ar]],
                cs.dpl(),
                Expected::Equal(ss.dpl()),
            ),
            13 | 15 => cx.expect(
                Rule::H20,
                &[f[CS][ar], f[SS][ar]],
                cs.dpl(),
                Expected::AtMost(ss.dpl()),
            ),
            _ => {}
        }
        if !g.unrestricted {
            cx.expect(
                Rule::H21,
                &[f[SS][ar], f[SS][sel]],
                ss.dpl(),
                Expected::Equal(ss.rpl()),
            );
        }
        if cs.kind() == 3 || g.cr0 & Cr0::PE.bits() == 0 {
            cx.expect(
                Rule::H22,
                &[f[SS][ar], f[CS][ar], cr0_f],
                ss.dpl(),
                Expected::Equal(0),
            );
        }
        for i in [CS, SS, DS, ES, FS, GS] {
            let s = seg[i];
            if i != CS && !s.usable() {
                continue;
            }
            cx.set(Rule::H17, &[f[i][ar]], s.ar, S);
            cx.set(Rule::H24, &[f[i][ar]], s.ar, P);
            cx.clear(Rule::H25, &[f[i][ar]], s.ar, AR_RESERVED_11_8);
            if !granularity_ok(&s) {
                cx.fail(
                    Rule::H27,
                    &[f[i][ar], f[i][limit]],
                    s.ar,
                    granularity_expected(&s),
                );
            }
            cx.clear(Rule::H28, &[f[i][ar]], s.ar, AR_RESERVED_31_17);
        }
        if g.ia32e && cs.ar & L != 0 {
            cx.clear(Rule::H26, &[f[CS][ar]], cs.ar, DB);
        }
    }

    // TR: H29-H34 (H29-H33 shared in shape with LDTR's H35-H39).
    let tr_types: &'static [u64] = if g.ia32e { &[11] } else { &[3, 11] };
    let tr_rules = [Rule::H29, Rule::H30, Rule::H31, Rule::H32, Rule::H33];
    system_segment(cx, &seg[TR], &f[TR], Expected::OneOf(tr_types), tr_rules);
    cx.clear(Rule::H34, &[f[TR][ar]], seg[TR].ar, UNUSABLE);

    // LDTR: H35-H39, only when usable.
    if seg[LDTR].usable() {
        let ldtr_rules = [Rule::H35, Rule::H36, Rule::H37, Rule::H38, Rule::H39];
        system_segment(cx, &seg[LDTR], &f[LDTR], Expected::Equal(2), ldtr_rules);
    }
}

/// The checks TR and LDTR share, in the order of `rules`: the type is what `kind` accepts, S = 0,
/// P = 1, the reserved access-rights bits are 0, and G agrees with the limit.
fn system_segment<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    s: &Segment,
    fields: &[u32; 4],
    kind: Expected,
    [type_rule, s_rule, p_rule, reserved_rule, granularity_rule]: [Rule; 5],
) where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let (limit, ar) = (2, 3);
    let ar_f = &[fields[ar]];
    cx.expect(type_rule, ar_f, s.kind(), kind);
    cx.clear(s_rule, ar_f, s.ar, S);
    cx.set(p_rule, ar_f, s.ar, P);
    cx.clear(
        reserved_rule,
        ar_f,
        s.ar,
        AR_RESERVED_11_8 | AR_RESERVED_31_17,
    );
    if !granularity_ok(s) {
        cx.fail(
            granularity_rule,
            &[fields[ar], fields[limit]],
            s.ar,
            granularity_expected(s),
        );
    }
}

/// The G bit a segment's limit needs, given that the pair is inconsistent: with G = 1 the limit's
/// bits 11:0 are not all 1 (so G must be 0); with G = 0 bits 31:20 are not all 0 (so G must be 1).
fn granularity_expected(s: &Segment) -> Expected {
    if s.ar & G != 0 {
        Expected::BitsClear(G)
    } else {
        Expected::BitsSet(G)
    }
}

/// I1-I4.
fn descriptor_tables<V, M, S>(cx: &mut Ctx<'_, V, M, S>) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    for (rule, field) in [
        (Rule::I1, enc!(GUEST_GDTR_BASE)),
        (Rule::I2, enc!(GUEST_IDTR_BASE)),
    ] {
        let base = cx.read(field)?;
        cx.canonical(rule, &[field], base);
    }
    for (rule, field) in [
        (Rule::I3, enc!(GUEST_GDTR_LIMIT)),
        (Rule::I4, enc!(GUEST_IDTR_LIMIT)),
    ] {
        let limit = cx.read(field)?;
        cx.clear(rule, &[field], limit, 0xffff_0000);
    }
    Ok(())
}

/// J1-J6.
fn rip_rflags<V, M, S>(cx: &mut Ctx<'_, V, M, S>, g: &Guest) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let rip_f = enc!(GUEST_RIP);
    let rflags_f = enc!(GUEST_RFLAGS);
    let cs_ar_f = enc!(GUEST_CS_ACCESS_RIGHTS);
    let rip = cx.read(rip_f)?;
    if g.ia32e && g.seg[CS].ar & L != 0 {
        cx.high_identical(Rule::J2, &[rip_f, cs_ar_f], rip);
    } else {
        cx.clear(Rule::J1, &[rip_f, cs_ar_f], rip, !0xffff_ffff);
    }
    cx.clear(Rule::J3, &[rflags_f], g.rflags, Rflags::RESERVED.bits());
    cx.set(Rule::J4, &[rflags_f], g.rflags, Rflags::RESERVED_1.bits());
    if g.ia32e || g.cr0 & Cr0::PE.bits() == 0 {
        cx.clear(
            Rule::J5,
            &[rflags_f, enc!(GUEST_CR0)],
            g.rflags,
            Rflags::VM.bits(),
        );
    }
    if let Some((InterruptionType::ExternalInterrupt, _)) = g.injected {
        cx.set(
            Rule::J6,
            &[rflags_f, enc!(VM_ENTRY_INTERRUPTION_INFORMATION)],
            g.rflags,
            Rflags::IF.bits(),
        );
    }
    Ok(())
}

/// Supported activity states per IA32_VMX_MISC bits 6 (HLT), 7 (shutdown), 8 (wait-for-SIPI).
const ACTIVITY_SETS: [&[u64]; 8] = [
    &[ACTIVE],
    &[ACTIVE, HLT],
    &[ACTIVE, SHUTDOWN],
    &[ACTIVE, HLT, SHUTDOWN],
    &[ACTIVE, WAIT_FOR_SIPI],
    &[ACTIVE, HLT, WAIT_FOR_SIPI],
    &[ACTIVE, SHUTDOWN, WAIT_FOR_SIPI],
    &[ACTIVE, HLT, SHUTDOWN, WAIT_FOR_SIPI],
];

/// K1-K25.
fn non_register<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    c: &Controls,
    g: &Guest,
) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    use InterruptionType as T;
    let caps = *cx.caps;
    let cpu = *cx.cpu;
    let launch = *cx.launch;
    let act_f = enc!(GUEST_ACTIVITY_STATE);
    let int_f = enc!(GUEST_INTERRUPTIBILITY_STATE);
    let info_f = enc!(VM_ENTRY_INTERRUPTION_INFORMATION);
    let entry_f = enc!(VM_ENTRY_CONTROLS);
    let rflags_f = enc!(GUEST_RFLAGS);
    let activity = cx.read(act_f)?;
    let intr = cx.read(int_f)?;

    // Activity state: K1-K7.
    let set = usize::from(caps.activity_hlt)
        | usize::from(caps.activity_shutdown) << 1
        | usize::from(caps.activity_wait_for_sipi) << 2;
    cx.expect(
        Rule::K1,
        &[act_f],
        activity,
        Expected::OneOf(ACTIVITY_SETS[set]),
    );
    if activity == HLT {
        cx.expect(
            Rule::K2,
            &[act_f, enc!(GUEST_SS_ACCESS_RIGHTS)],
            g.seg[SS].dpl(),
            Expected::Equal(0),
        );
    }
    if activity != ACTIVE {
        cx.clear(Rule::K3, &[int_f, act_f], intr, STI | MOV_SS);
    }
    if let Some((kind, vector)) = g.injected {
        let info = c.injection;
        match activity {
            HLT => {
                let allowed = matches!(
                    (kind, vector),
                    (T::ExternalInterrupt | T::Nmi, _)
                        | (T::HardwareException, 1 | 18)
                        | (T::OtherEvent, 0)
                );
                if !allowed {
                    cx.fail(
                        Rule::K4,
                        &[info_f, act_f],
                        info,
                        Expected::BitsClear(InterruptionInfo::VALID.into()),
                    );
                }
            }
            SHUTDOWN if !matches!((kind, vector), (T::Nmi, _) | (T::HardwareException, 18)) => cx
                .fail(
                    Rule::K5,
                    &[info_f, act_f],
                    info,
                    Expected::BitsClear(InterruptionInfo::VALID.into()),
                ),
            WAIT_FOR_SIPI => cx.fail(
                Rule::K6,
                &[info_f, act_f],
                info,
                Expected::BitsClear(InterruptionInfo::VALID.into()),
            ),
            _ => {}
        }
    }
    if c.entry(ENTRY_SMM) {
        cx.expect(
            Rule::K7,
            &[act_f, entry_f],
            activity,
            Expected::NotEqual(WAIT_FOR_SIPI),
        );
    }

    // Interruptibility state: K8-K16.
    let reserved = if cpu.features.contains(CpuFeatures::SGX) {
        !0x1f
    } else {
        !0xf
    };
    cx.clear(Rule::K8, &[int_f], intr, reserved & 0xffff_ffff);
    if intr & (STI | MOV_SS) == STI | MOV_SS {
        cx.fail(
            Rule::K9,
            &[int_f],
            intr & (STI | MOV_SS),
            Expected::NotEqual(STI | MOV_SS),
        );
    }
    if g.rflags & Rflags::IF.bits() == 0 {
        cx.clear(Rule::K10, &[int_f, rflags_f], intr, STI);
    }
    match g.injected {
        Some((T::ExternalInterrupt, _)) => {
            cx.clear(Rule::K11, &[int_f, info_f], intr, STI | MOV_SS)
        }
        Some((T::Nmi, _)) => {
            cx.clear(Rule::K12, &[int_f, info_f], intr, MOV_SS);
            if cpu.nmi_injection_checks_sti && intr & STI != 0 {
                let outcome =
                    Outcome::from_class(super::rule::FailureClass::InvalidGuestState(3), 0);
                if let Some(outcome) = outcome {
                    cx.fail_with(
                        Rule::K12,
                        &[int_f, info_f],
                        intr,
                        Expected::BitsClear(STI),
                        outcome,
                    );
                }
            }
            if c.pin & PIN_VIRTUAL_NMIS != 0 {
                cx.clear(Rule::K15, &[int_f, info_f], intr, NMI_BLOCKING);
            }
        }
        _ => {}
    }
    if !launch.in_smm {
        cx.clear(Rule::K13, &[int_f], intr, SMI);
    }
    if c.entry(ENTRY_SMM) {
        cx.set(Rule::K14, &[int_f, entry_f], intr, SMI);
    }
    if intr & ENCLAVE != 0 {
        cx.clear(Rule::K16, &[int_f], intr, MOV_SS);
    }

    // Pending debug exceptions: K18-K21.
    let pde_f = enc!(GUEST_PENDING_DEBUG_EXCEPTIONS);
    let pde = cx.read(pde_f)?;
    cx.clear(
        Rule::K18,
        &[pde_f],
        pde,
        PendingDebugExceptions::RESERVED_MASK,
    );
    const BS: u64 = PendingDebugExceptions::BS.bits();
    const RTM: u64 = PendingDebugExceptions::RTM.bits();
    if intr & (STI | MOV_SS) != 0 || activity == HLT {
        let debugctl_f = enc!(GUEST_IA32_DEBUGCTL);
        let btf = cx.read(debugctl_f)? & DebugCtl::BTF.bits() != 0;
        let fields = [pde_f, rflags_f, debugctl_f, int_f];
        if g.rflags & Rflags::TF.bits() != 0 && !btf {
            cx.set(Rule::K19, &fields, pde, BS);
        } else {
            cx.clear(Rule::K20, &fields, pde, BS);
        }
    }
    if pde & RTM != 0 {
        cx.clear(Rule::K21, &[pde_f], pde, 0xfff | BS);
        cx.set(
            Rule::K21,
            &[pde_f],
            pde,
            PendingDebugExceptions::ENABLED_BREAKPOINT.bits(),
        );
        if !cpu.features.contains(CpuFeatures::RTM) {
            cx.clear(Rule::K21, &[pde_f], pde, RTM);
        }
        cx.clear(Rule::K21, &[int_f, pde_f], intr, MOV_SS);
    }

    // VMCS link pointer: K22-K25.
    let link_f = enc!(VMCS_LINK_POINTER);
    let link = cx.read(link_f)?;
    if link != u64::MAX {
        cx.phys(Rule::K22, &[link_f], link, 4096);
        let mut header = [0u8; 4];
        match cx.mem.read(link, &mut header) {
            Ok(()) => {
                let header = u64::from(u32::from_le_bytes(header));
                let mut expected = u64::from(caps.revision_id);
                if c.proc2(P2_SHADOWING) {
                    expected |= 1 << 31;
                }
                cx.expect(Rule::K23, &[link_f], header, Expected::Equal(expected));
            }
            Err(_) => cx.unchecked(&[Rule::K23]),
        }
        if !launch.in_smm || c.entry(ENTRY_SMM) {
            if let Some(current) = launch.current_vmcs {
                cx.expect(Rule::K24, &[link_f], link, Expected::NotEqual(current));
            }
        } else {
            // SDM "Checks on Guest Non-Register State": in SMM with "entry to SMM" = 0 (a VM
            // entry that returns from SMM under the dual-monitor treatment) the link pointer
            // must differ from the executive-VMCS pointer field of the current VMCS (not from
            // the VMXON pointer, which that field holds only when the return stays in VMX root
            // operation).
            let exec_f = enc!(EXECUTIVE_VMCS_POINTER);
            if let Some(executive) = cx.read_opt(exec_f, &[Rule::K25]) {
                cx.expect(
                    Rule::K25,
                    &[link_f, exec_f],
                    link,
                    Expected::NotEqual(executive),
                );
            }
        }
    }
    Ok(())
}

/// L1-L2: the PDPTEs of a PAE-paging guest.
fn pdptes<V, M, S>(cx: &mut Ctx<'_, V, M, S>, c: &Controls, g: &Guest) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    if g.cr0 & Cr0::PG.bits() == 0 || g.cr4 & Cr4::PAE.bits() == 0 || g.ia32e {
        return Ok(());
    }
    // Present PDPTEs: bits 2:1 and 8:5 and those beyond MAXPHYADDR are reserved.
    let reserved = 0x1e6 | beyond(cx.cpu.maxphyaddr);
    const FIELDS: [u32; 4] = [
        enc!(GUEST_PDPTE0),
        enc!(GUEST_PDPTE1),
        enc!(GUEST_PDPTE2),
        enc!(GUEST_PDPTE3),
    ];
    if c.proc2(P2_EPT) {
        for field in FIELDS {
            if let Some(pdpte) = cx.read_opt(field, &[Rule::L1])
                && pdpte & 1 != 0
            {
                cx.clear(Rule::L1, &[field], pdpte, reserved);
            }
        }
    } else {
        let cr3_f = enc!(GUEST_CR3);
        let table = cx.read(cr3_f)? & 0xffff_ffe0;
        for i in 0..4u64 {
            match cx.mem.read_u64(table + 8 * i) {
                Ok(pdpte) if pdpte & 1 != 0 => cx.clear(Rule::L2, &[cr3_f], pdpte, reserved),
                Ok(_) => {}
                Err(_) => {
                    cx.unchecked(&[Rule::L2]);
                    break;
                }
            }
        }
    }
    Ok(())
}
