//! Basic VM-entry checks (P*) and the checks on VMX controls (A*, B*, C*).

use super::engine::{CheckError, Ctx, bits::*, enc};
use super::input::{EntryInstruction, LaunchState, PhysMemory};
use super::report::{Expected, ViolationSink};
use super::rule::Rule;
use crate::{InterruptionInfo, InterruptionType, VmcsRead};

/// The control fields every later group depends on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Controls {
    pub pin: u64,
    pub proc: u64,
    /// Effective secondary controls: 0 unless "activate secondary controls" is 1.
    pub proc2: u64,
    pub exit: u64,
    pub entry: u64,
    /// The VM-entry interruption-information field.
    pub injection: u64,
}

impl Controls {
    pub fn proc2(&self, mask: u64) -> bool {
        self.proc2 & mask != 0
    }
    pub fn entry(&self, mask: u64) -> bool {
        self.entry & mask != 0
    }
    pub fn exit(&self, mask: u64) -> bool {
        self.exit & mask != 0
    }
    pub fn ia32e_guest(&self) -> bool {
        self.entry(ENTRY_IA32E)
    }
    pub fn host_64(&self) -> bool {
        self.exit(EXIT_HOST_64)
    }
    pub fn unrestricted(&self) -> bool {
        self.proc2(P2_UNRESTRICTED)
    }
    /// The injected event, if the valid bit (31) is set: (interruption type, vector).
    pub fn injected(&self) -> Option<(InterruptionType, u64)> {
        let info = InterruptionInfo::from_bits(self.injection as u32);
        info.valid()
            .then_some((info.interruption_type(), u64::from(info.vector())))
    }
}

pub(super) fn basic<V, M, S>(cx: &mut Ctx<'_, V, M, S>)
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let launch = *cx.launch;
    if launch.current_vmcs.is_none() {
        cx.fail(Rule::P4, &[], u64::MAX, Expected::NotEqual(u64::MAX));
    }
    if launch.current_vmcs_is_shadow {
        cx.fail(Rule::P5, &[], 1, Expected::Equal(0));
    }
    if launch.blocked_by_mov_ss {
        cx.fail(Rule::P6, &[], 1, Expected::Equal(0));
    }
    let launched = u64::from(launch.launch_state == LaunchState::Launched);
    match launch.instruction {
        EntryInstruction::Vmlaunch if launched == 1 => {
            cx.fail(Rule::P7, &[], launched, Expected::Equal(0))
        }
        EntryInstruction::Vmresume if launched == 0 => {
            cx.fail(Rule::P8, &[], launched, Expected::Equal(1))
        }
        _ => {}
    }
}

/// Checks an allowed-0/allowed-1 pair on a control field of `width` bits.
fn allowed<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    rules: (Rule, Rule),
    field: u32,
    value: u64,
    (allowed0, allowed1): (u64, u64),
    width_mask: u64,
) where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    cx.set(rules.0, &[field], value, allowed0);
    cx.clear(rules.1, &[field], value, !allowed1 & width_mask);
}

pub(super) fn vmx_controls<V, M, S>(cx: &mut Ctx<'_, V, M, S>) -> Result<Controls, CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    const DWORD: u64 = 0xffff_ffff;
    let caps = *cx.caps;
    let pin = cx.read(enc!(PIN_BASED_VM_EXECUTION_CONTROLS))?;
    let proc = cx.read(enc!(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS))?;
    let exit = cx.read(enc!(PRIMARY_VM_EXIT_CONTROLS))?;
    let entry = cx.read(enc!(VM_ENTRY_CONTROLS))?;
    let injection = cx.read(enc!(VM_ENTRY_INTERRUPTION_INFORMATION))?;

    // A1-A6: the control fields against the capability MSRs.
    allowed(
        cx,
        (Rule::A1, Rule::A2),
        enc!(PIN_BASED_VM_EXECUTION_CONTROLS),
        pin,
        caps.pin,
        DWORD,
    );
    let proc_field = enc!(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS);
    allowed(cx, (Rule::A3, Rule::A4), proc_field, proc, caps.proc, DWORD);
    let proc2_field = enc!(SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS);
    let mut proc2 = 0;
    // A control that activates another field counts only where the processor supports its
    // 1-setting; otherwise the field is neither checked nor used (SDM "VM-Execution Control Fields").
    if proc & PROC_SECONDARY & caps.proc.1 != 0 {
        // Every rule that looks at a secondary control depends on this field.
        if let Some(value) = cx.read_opt(proc2_field, &[Rule::A5]) {
            proc2 = value;
            allowed(
                cx,
                (Rule::A5, Rule::A5),
                proc2_field,
                proc2,
                caps.proc2,
                DWORD,
            );
        }
    }
    if proc & PROC_TERTIARY & caps.proc.1 != 0 {
        let field = enc!(TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS);
        if let Some(proc3) = cx.read_opt(field, &[Rule::A6]) {
            cx.clear(Rule::A6, &[field], proc3, !caps.proc3_allowed1);
        }
    }
    let c = Controls {
        pin,
        proc,
        proc2,
        exit,
        entry,
        injection,
    };

    execution(cx, &c, proc_field, proc2_field)?;
    exit_controls(cx, &c)?;
    entry_controls(cx, &c)?;
    Ok(c)
}

fn execution<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    c: &Controls,
    proc_field: u32,
    proc2_field: u32,
) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    const PAGE: u64 = 4096;
    let pin_field = enc!(PIN_BASED_VM_EXECUTION_CONTROLS);
    let (pin, proc, proc2) = (c.pin, c.proc, c.proc2);

    // A7: CR3-target count.
    let count = cx.read(enc!(CR3_TARGET_COUNT))?;
    cx.expect(
        Rule::A7,
        &[enc!(CR3_TARGET_COUNT)],
        count,
        Expected::AtMost(u64::from(cx.caps.cr3_target_count)),
    );

    // A8-A10: I/O and MSR bitmaps.
    if proc & PROC_IO_BITMAPS != 0 {
        for (rule, field) in [
            (Rule::A8, enc!(ADDRESS_OF_IO_BITMAP_A)),
            (Rule::A9, enc!(ADDRESS_OF_IO_BITMAP_B)),
        ] {
            let address = cx.read(field)?;
            cx.phys(rule, &[field], address, PAGE);
        }
    }
    if proc & PROC_MSR_BITMAPS != 0 {
        let field = enc!(ADDRESS_OF_MSR_BITMAPS);
        let address = cx.read(field)?;
        cx.phys(Rule::A10, &[field], address, PAGE);
    }

    // A11-A16: TPR shadow and the APIC-virtualization controls that need it.
    let tpr_field = enc!(TPR_THRESHOLD);
    let vapic_field = enc!(VIRTUAL_APIC_ADDRESS);
    if proc & PROC_TPR_SHADOW != 0 {
        let vapic = cx.read_opt(vapic_field, &[Rule::A11, Rule::A13]);
        if let Some(vapic) = vapic {
            cx.phys(Rule::A11, &[vapic_field], vapic, PAGE);
        }
        let threshold = cx.read_opt(tpr_field, &[Rule::A12, Rule::A13]);
        if let Some(threshold) = threshold
            && proc2 & P2_VID == 0
        {
            cx.clear(Rule::A12, &[tpr_field], threshold, 0xffff_fff0);
            if proc2 & P2_VIRTUALIZE_APIC == 0
                && let Some(vapic) = vapic
            {
                // A13: needs VTPR, byte 80H of the virtual-APIC page.
                let mut vtpr = [0u8];
                match cx.mem.read(vapic.wrapping_add(0x80), &mut vtpr) {
                    Ok(()) => cx.expect(
                        Rule::A13,
                        &[tpr_field, vapic_field],
                        threshold & 0xf,
                        Expected::AtMost(u64::from(vtpr[0] >> 4)),
                    ),
                    Err(_) => cx.unchecked(&[Rule::A13]),
                }
            }
        }
    } else {
        cx.clear(Rule::A14, &[proc_field, proc2_field], proc2, P2_X2APIC);
        cx.clear(
            Rule::A15,
            &[proc_field, proc2_field],
            proc2,
            P2_APIC_REGISTER,
        );
        cx.clear(Rule::A16, &[proc_field, proc2_field], proc2, P2_VID);
    }

    // A17-A18: NMI controls.
    if pin & PIN_NMI_EXITING == 0 {
        cx.clear(Rule::A17, &[pin_field], pin, PIN_VIRTUAL_NMIS);
    }
    if pin & PIN_VIRTUAL_NMIS == 0 {
        cx.clear(Rule::A18, &[proc_field, pin_field], proc, PROC_NMI_WINDOW);
    }

    // A19-A21: APIC virtualization.
    if proc2 & P2_VIRTUALIZE_APIC != 0 {
        let field = enc!(APIC_ACCESS_ADDRESS);
        if let Some(address) = cx.read_opt(field, &[Rule::A19]) {
            cx.phys(Rule::A19, &[field], address, PAGE);
        }
    }
    if proc2 & P2_X2APIC != 0 {
        cx.clear(Rule::A20, &[proc2_field], proc2, P2_VIRTUALIZE_APIC);
    }
    if proc2 & P2_VID != 0 {
        cx.set(
            Rule::A21,
            &[pin_field, proc2_field],
            pin,
            PIN_EXTERNAL_INTERRUPT_EXITING,
        );
    }

    // A22-A26: posted interrupts.
    if pin & PIN_POSTED_INTERRUPTS != 0 {
        cx.set(Rule::A22, &[proc2_field, pin_field], proc2, P2_VID);
        let exit_field = enc!(PRIMARY_VM_EXIT_CONTROLS);
        cx.set(Rule::A23, &[exit_field, pin_field], c.exit, EXIT_ACK);
        let vector_field = enc!(POSTED_INTERRUPT_NOTIFICATION_VECTOR);
        if let Some(vector) = cx.read_opt(vector_field, &[Rule::A24]) {
            cx.clear(Rule::A24, &[vector_field], vector, 0xff00);
        }
        let desc_field = enc!(POSTED_INTERRUPT_DESCRIPTOR_ADDRESS);
        if let Some(desc) = cx.read_opt(desc_field, &[Rule::A25, Rule::A26]) {
            cx.clear(Rule::A25, &[desc_field], desc, 0x3f);
            let beyond = cx.beyond_phys();
            cx.clear(Rule::A26, &[desc_field], desc, beyond);
        }
    }

    // A27: VPID.
    if proc2 & P2_VPID != 0 {
        let field = enc!(VIRTUAL_PROCESSOR_IDENTIFIER);
        if let Some(vpid) = cx.read_opt(field, &[Rule::A27]) {
            cx.expect(Rule::A27, &[field], vpid, Expected::NotEqual(0));
        }
    }

    // A28-A34: EPT.
    if proc2 & P2_EPT != 0 {
        ept_pointer(cx);
    } else {
        cx.clear(Rule::A33, &[proc2_field], proc2, P2_UNRESTRICTED);
        cx.clear(Rule::A34, &[proc2_field], proc2, P2_MBEC);
    }

    // A35-A38: PML and sub-page permissions.
    if proc2 & P2_PML != 0 {
        cx.set(Rule::A35, &[proc2_field], proc2, P2_EPT);
        let field = enc!(PML_ADDRESS);
        if let Some(address) = cx.read_opt(field, &[Rule::A36]) {
            cx.phys(Rule::A36, &[field], address, PAGE);
        }
    }
    if proc2 & P2_SPP != 0 {
        cx.set(Rule::A37, &[proc2_field], proc2, P2_EPT);
        let field = enc!(SUB_PAGE_PERMISSION_TABLE_POINTER);
        if let Some(address) = cx.read_opt(field, &[Rule::A38]) {
            cx.phys(Rule::A38, &[field], address, PAGE);
        }
    }

    // A39-A41: VM functions.
    if proc2 & P2_VMFUNC != 0 {
        let field = enc!(VM_FUNCTION_CONTROLS);
        if let Some(vmfunc) = cx.read_opt(field, &[Rule::A39, Rule::A40, Rule::A41]) {
            cx.clear(Rule::A39, &[field], vmfunc, !cx.caps.vmfunc_allowed1);
            if vmfunc & VMFUNC_EPTP_SWITCHING != 0 {
                cx.set(Rule::A40, &[proc2_field, field], proc2, P2_EPT);
                let list = enc!(EPTP_LIST_ADDRESS);
                if let Some(address) = cx.read_opt(list, &[Rule::A41]) {
                    cx.phys(Rule::A41, &[list], address, PAGE);
                }
            }
        }
    }

    // A42-A44: VMCS shadowing and #VE.
    if proc2 & P2_SHADOWING != 0 {
        for (rule, field) in [
            (Rule::A42, enc!(VMREAD_BITMAP_ADDRESS)),
            (Rule::A43, enc!(VMWRITE_BITMAP_ADDRESS)),
        ] {
            if let Some(address) = cx.read_opt(field, &[rule]) {
                cx.phys(rule, &[field], address, PAGE);
            }
        }
    }
    if proc2 & P2_VE != 0 {
        let field = enc!(VIRTUALIZATION_EXCEPTION_INFORMATION_ADDRESS);
        if let Some(address) = cx.read_opt(field, &[Rule::A44]) {
            cx.phys(Rule::A44, &[field], address, PAGE);
        }
    }

    // A45: Intel PT using guest-physical addresses needs EPT and the RTIT_CTL load/clear controls.
    if proc2 & P2_PT_GPA != 0 {
        cx.set(Rule::A45, &[proc2_field], proc2, P2_EPT);
        cx.set(
            Rule::A45,
            &[enc!(VM_ENTRY_CONTROLS), proc2_field],
            c.entry,
            ENTRY_RTIT,
        );
        cx.set(
            Rule::A45,
            &[enc!(PRIMARY_VM_EXIT_CONTROLS), proc2_field],
            c.exit,
            EXIT_CLEAR_RTIT,
        );
    }
    Ok(())
}

/// A28-A32: the EPT pointer.
fn ept_pointer<V, M, S>(cx: &mut Ctx<'_, V, M, S>)
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let field = enc!(EPT_POINTER);
    let Some(eptp) = cx.read_opt(
        field,
        &[Rule::A28, Rule::A29, Rule::A30, Rule::A31, Rule::A32],
    ) else {
        return;
    };
    let caps = *cx.caps;
    const UC: u64 = 0;
    const WB: u64 = 6;
    let memory_types: &'static [u64] = match (caps.ept_uc, caps.ept_wb) {
        (true, true) => &[UC, WB],
        (true, false) => &[UC],
        (false, true) => &[WB],
        (false, false) => &[],
    };
    cx.expect(Rule::A28, &[field], eptp & 7, Expected::OneOf(memory_types));
    // Bits 5:3 hold the page-walk length minus 1.
    let walks: &'static [u64] = match (caps.ept_walk4, caps.ept_walk5) {
        (true, true) => &[3, 4],
        (true, false) => &[3],
        (false, true) => &[4],
        (false, false) => &[],
    };
    cx.expect(Rule::A29, &[field], (eptp >> 3) & 7, Expected::OneOf(walks));
    if !caps.ept_ad {
        cx.clear(Rule::A30, &[field], eptp, 1 << 6);
    }
    if !caps.ept_sss {
        cx.clear(Rule::A31, &[field], eptp, 1 << 7);
    }
    let beyond = super::engine::beyond(cx.cpu.maxphyaddr);
    cx.clear(Rule::A32, &[field], eptp, 0xf00 | beyond);
}

/// B1-B8.
fn exit_controls<V, M, S>(cx: &mut Ctx<'_, V, M, S>, c: &Controls) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let field = enc!(PRIMARY_VM_EXIT_CONTROLS);
    let caps = *cx.caps;
    allowed(
        cx,
        (Rule::B1, Rule::B2),
        field,
        c.exit,
        caps.exit,
        0xffff_ffff,
    );
    if c.exit & EXIT_SECONDARY & caps.exit.1 != 0 {
        let field2 = enc!(SECONDARY_VM_EXIT_CONTROLS);
        if let Some(exit2) = cx.read_opt(field2, &[Rule::B3]) {
            cx.clear(Rule::B3, &[field2], exit2, !caps.exit2_allowed1);
        }
    }
    if c.pin & PIN_PREEMPTION_TIMER == 0 {
        cx.clear(
            Rule::B4,
            &[field, enc!(PIN_BASED_VM_EXECUTION_CONTROLS)],
            c.exit,
            EXIT_SAVE_TIMER,
        );
    }
    msr_area(
        cx,
        (Rule::B5, Rule::B6),
        enc!(VM_EXIT_MSR_STORE_COUNT),
        enc!(VM_EXIT_MSR_STORE_ADDRESS),
    )?;
    msr_area(
        cx,
        (Rule::B7, Rule::B8),
        enc!(VM_EXIT_MSR_LOAD_COUNT),
        enc!(VM_EXIT_MSR_LOAD_ADDRESS),
    )
}

/// An MSR area of `count` 16-byte entries: 16-byte aligned, and its first and last bytes within
/// the physical-address width.
fn msr_area<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    rules: (Rule, Rule),
    count_field: u32,
    address_field: u32,
) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let count = cx.read(count_field)?;
    if count == 0 {
        return Ok(());
    }
    let address = cx.read(address_field)?;
    cx.phys(rules.0, &[address_field], address, 16);
    // The count is a 32-bit field, so the sum cannot overflow 128 bits; compute it wider than
    // MAXPHYADDR as the SDM requires.
    let last = u128::from(address) + u128::from(count) * 16 - 1;
    let beyond = cx.beyond_phys();
    let last_fits = last <= u128::from(u64::MAX) && (last as u64) & beyond == 0;
    if !last_fits {
        let actual = u64::try_from(last).unwrap_or(u64::MAX);
        cx.fail(
            rules.1,
            &[address_field, count_field],
            actual,
            Expected::BitsClear(beyond),
        );
    }
    Ok(())
}

/// The hardware exceptions whose injection must deliver an error code when IA32_VMX_BASIC\[56\]
/// is 0: #DF (8), #TS (10), #NP (11), #SS (12), #GP (13), #PF (14) and #AC (17). The SDM's list
/// does not name #CP (21): it falls in the must-not-deliver range 18-31, and processors with CET
/// report BASIC[56] = 1.
const fn delivers_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// C1-C16.
fn entry_controls<V, M, S>(cx: &mut Ctx<'_, V, M, S>, c: &Controls) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    use InterruptionType as T;
    let field = enc!(VM_ENTRY_CONTROLS);
    let caps = *cx.caps;
    allowed(
        cx,
        (Rule::C1, Rule::C2),
        field,
        c.entry,
        caps.entry,
        0xffff_ffff,
    );
    if !cx.launch.in_smm {
        cx.clear(Rule::C3, &[field], c.entry, ENTRY_SMM);
        cx.clear(Rule::C4, &[field], c.entry, ENTRY_DEACTIVATE_DUAL);
    }
    let both = ENTRY_SMM | ENTRY_DEACTIVATE_DUAL;
    if c.entry & both == both {
        cx.fail(Rule::C5, &[field], c.entry & both, Expected::NotEqual(both));
    }

    let info_field = enc!(VM_ENTRY_INTERRUPTION_INFORMATION);
    let info = c.injection;
    if let Some((kind, vector)) = c.injected() {
        if kind == T::Reserved || (kind == T::OtherEvent && !caps.mtf) {
            // Actual: the interruption type (bits 10:8), a reserved value here.
            let raw = u64::from(kind.raw());
            cx.fail(Rule::C6, &[info_field], raw, Expected::NotEqual(raw));
        }
        if kind == T::Nmi {
            cx.expect(Rule::C7, &[info_field], vector, Expected::Equal(2));
        }
        if kind == T::HardwareException {
            cx.expect(Rule::C8, &[info_field], vector, Expected::AtMost(31));
        }
        if kind == T::OtherEvent {
            cx.expect(Rule::C9, &[info_field], vector, Expected::Equal(0));
        }
        let deliver = InterruptionInfo::from_bits(info as u32).error_code();
        // C10, SDM "Checks on VM-Entry Control Fields": deliver-error-code must be 0 if the type
        // is not hardware exception, or guest CR0.PE is 0, or IA32_VMX_BASIC[56] is 0 and the
        // vector is 0-7, 9, 15, 16 or 18-31; it must be 1 for a hardware exception 8, 10-14 or
        // 17 with CR0.PE = 1 and BASIC[56] = 0. BASIC[56] = 1 lifts only the vector parts. CR0.PE
        // counts as 1 without "unrestricted guest", as the SDM's earlier wording ("unrestricted
        // guest" is 0 or CR0.PE is 1) and processors have it (a PE = 0 guest there fails G1 too).
        let cr0_field = enc!(GUEST_CR0);
        let protected = !c.unrestricted() || cx.read(cr0_field)? & 1 != 0;
        let should = if kind != T::HardwareException || !protected {
            Some(false)
        } else if caps.no_error_code_check || vector > 31 {
            // Vectors above 31 are C8's.
            None
        } else {
            Some(delivers_error_code(vector))
        };
        if let Some(should) = should
            && deliver != should
        {
            let expected = if should {
                Expected::BitsSet(InterruptionInfo::ERROR_CODE.into())
            } else {
                Expected::BitsClear(InterruptionInfo::ERROR_CODE.into())
            };
            cx.fail(Rule::C10, &[info_field, cr0_field], info, expected);
        }
        // C11: bits 30:14 and 12 are reserved; bit 13 ("nested exception") may be 1 only on a
        // processor with VMX nested-exception support (IA32_VMX_BASIC[58]) injecting a hardware
        // exception (SDM Vol. 3C, "Checks on VM-Entry Control Fields").
        let nested_allowed = caps.nested_exception && kind == T::HardwareException;
        let reserved = InterruptionInfo::RESERVED_MASK
            | if nested_allowed {
                0
            } else {
                InterruptionInfo::NESTED_EXCEPTION
            };
        cx.clear(Rule::C11, &[info_field], info, reserved.into());
        if deliver {
            let code_field = enc!(VM_ENTRY_EXCEPTION_ERROR_CODE);
            let code = cx.read(code_field)?;
            cx.clear(Rule::C12, &[code_field], code, 0xffff_0000);
        }
        if matches!(
            kind,
            T::SoftwareInterrupt | T::PrivilegedSoftwareException | T::SoftwareException
        ) {
            let len_field = enc!(VM_ENTRY_INSTRUCTION_LENGTH);
            let len = cx.read(len_field)?;
            if len == 0 {
                if !caps.zero_length_injection {
                    cx.fail(
                        Rule::C14,
                        &[len_field],
                        len,
                        Expected::InRange { min: 1, max: 15 },
                    );
                }
            } else {
                cx.expect(Rule::C13, &[len_field], len, Expected::AtMost(15));
            }
        }
    }
    msr_area(
        cx,
        (Rule::C15, Rule::C16),
        enc!(VM_ENTRY_MSR_LOAD_COUNT),
        enc!(VM_ENTRY_MSR_LOAD_ADDRESS),
    )
}
