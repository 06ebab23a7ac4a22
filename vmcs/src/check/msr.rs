//! Loading MSRs (M*): VM-entry failure, exit reason 34, qualification = 1-based entry index.

use super::controls::Controls;
use super::engine::{CheckError, Ctx, enc};
use super::input::PhysMemory;
use super::report::{Expected, Outcome, ViolationSink};
use super::rule::{FailureClass, Rule};
use crate::VmcsRead;
use vmx_caps::msr::{
    IA32_BIOS_SIGN_ID, IA32_BIOS_UPDT_TRIG, IA32_CSTAR, IA32_DEBUGCTL, IA32_EFER, IA32_FS_BASE,
    IA32_GS_BASE, IA32_KERNEL_GS_BASE, IA32_LSTAR, IA32_PAT, IA32_PERF_GLOBAL_CTRL,
    IA32_SMM_MONITOR_CTL, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_SYSENTER_ESP,
    IA32_TIME_STAMP_COUNTER, IA32_X2APIC_FIRST, IA32_X2APIC_LAST,
};

/// Checks the VM-entry MSR-load area entry by entry, in the order the processor loads them.
pub(super) fn msr_load<V, M, S>(cx: &mut Ctx<'_, V, M, S>, _c: &Controls) -> Result<(), CheckError>
where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    let count_f = enc!(VM_ENTRY_MSR_LOAD_COUNT);
    let address_f = enc!(VM_ENTRY_MSR_LOAD_ADDRESS);
    let count = cx.read(count_f)?;
    if count == 0 {
        return Ok(());
    }
    let address = cx.read(address_f)?;
    let max = u64::from(cx.caps.max_msr_list_entries);
    if count > max {
        // The processor may fail once it reaches the entry past the recommended maximum.
        fail_at(
            cx,
            Rule::M7,
            &[count_f],
            count,
            Expected::AtMost(max),
            max + 1,
        );
    }
    let cpu = *cx.cpu;
    let in_smm = cx.launch.in_smm;
    let fields = [address_f, count_f];
    for i in 0..count.min(max) {
        let qualification = i + 1;
        let entry = address.wrapping_add(16 * i);
        let (Ok(head), Ok(value)) = (
            cx.mem.read_u64(entry),
            cx.mem.read_u64(entry.wrapping_add(8)),
        ) else {
            cx.unchecked(&[Rule::M1, Rule::M2, Rule::M3, Rule::M4, Rule::M5, Rule::M6]);
            return Ok(());
        };
        let index = head & 0xffff_ffff;
        // Bits 31:0 of the entry's first quadword: the MSR address.
        let msr = index as u32;
        if head >> 32 != 0 {
            fail_at(
                cx,
                Rule::M1,
                &fields,
                head,
                Expected::BitsClear(!0xffff_ffff),
                qualification,
            );
        }
        match msr {
            IA32_FS_BASE | IA32_GS_BASE => fail_at(
                cx,
                Rule::M2,
                &fields,
                index,
                Expected::NotEqual(index),
                qualification,
            ),
            IA32_X2APIC_FIRST..=IA32_X2APIC_LAST => fail_at(
                cx,
                Rule::M3,
                &fields,
                index,
                Expected::NotEqual(index),
                qualification,
            ),
            // Writable only in SMM: fails when the VM entry does not commence in SMM.
            IA32_SMM_MONITOR_CTL if !in_smm => fail_at(
                cx,
                Rule::M4,
                &fields,
                index,
                Expected::NotEqual(index),
                qualification,
            ),
            IA32_BIOS_UPDT_TRIG | IA32_BIOS_SIGN_ID => fail_at(
                cx,
                Rule::M5,
                &fields,
                index,
                Expected::NotEqual(index),
                qualification,
            ),
            _ => {
                // M6: the value WRMSR would refuse, for the MSRs whose rules are architectural.
                let expected = match msr {
                    IA32_EFER => Some(Expected::BitsClear(cpu.efer_reserved())),
                    IA32_PAT => Some(Expected::PatMemoryTypes),
                    IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_LSTAR | IA32_CSTAR
                    | IA32_KERNEL_GS_BASE => Some(Expected::Canonical {
                        width: cpu.linear_address_width,
                    }),
                    IA32_DEBUGCTL => cpu.debugctl_reserved.map(Expected::BitsClear),
                    IA32_PERF_GLOBAL_CTRL => cpu.perf_global_ctrl_reserved.map(Expected::BitsClear),
                    _ => None,
                };
                match expected {
                    Some(expected) if !expected.accepts(value) => {
                        fail_at(cx, Rule::M6, &fields, value, expected, qualification);
                    }
                    Some(_) => {}
                    // WRMSR takes any value of these.
                    None if matches!(
                        msr,
                        IA32_TIME_STAMP_COUNTER | IA32_SYSENTER_CS | IA32_STAR
                    ) => {}
                    // Whether WRMSR of an MSR without an architectural rule faults (it may not
                    // even exist on this model) is unknown: M6 is not claimed to pass.
                    None => cx.unchecked(&[Rule::M6]),
                }
            }
        }
    }
    Ok(())
}

fn fail_at<V, M, S>(
    cx: &mut Ctx<'_, V, M, S>,
    rule: Rule,
    fields: &[u32],
    actual: u64,
    expected: Expected,
    qualification: u64,
) where
    V: VmcsRead + ?Sized,
    M: PhysMemory + ?Sized,
    S: ViolationSink + ?Sized,
{
    if let Some(outcome) = Outcome::from_class(FailureClass::MsrLoading, qualification) {
        cx.fail_with(rule, fields, actual, expected, outcome);
    }
}
