//! The known-good VMCS shared by the checker's tests and benchmark: a 64-bit guest and a 64-bit
//! host, valid against the capability MSRs Bochs' `tigerlake` model reports.
#![allow(dead_code)]

use std::collections::HashMap;

use vmcs::check::{
    Checker, CpuFacts, EntryInstruction, LaunchContext, MemoryError, Outcome, PhysMemory, Report,
};
use vmcs::{SoftVmcs, VmcsRead, VmcsWrite};
use vmx_caps::{MsrSnapshot, VmxCapabilities, msr};

/// The encoding of a field.
#[macro_export]
macro_rules! e {
    ($name:ident) => {
        vmcs::fields::$name.encoding()
    };
}

pub const TIGERLAKE: &str = include_str!("../../../vmx-caps/testdata/tigerlake.msr");

/// Physical addresses of the structures the baseline references.
pub const CURRENT_VMCS: u64 = 0x1000;
pub const VMXON: u64 = 0x2000;
pub const LINK_VMCS: u64 = 0x3000;
pub const VIRTUAL_APIC: u64 = 0x8000;
pub const MSR_LOAD_AREA: u64 = 0x9000;
pub const PAE_PDPT: u64 = 0xa000;
pub const MSR_BITMAP: u64 = 0x20_0000;
pub const EPT_PML4: u64 = 0x10_0000;

/// The capability MSRs of Bochs' `tigerlake`.
pub fn tigerlake_msrs() -> MsrSnapshot {
    MsrSnapshot::parse(TIGERLAKE).expect("tigerlake dump parses")
}

/// `tigerlake` with every control allowed (allowed-1 all ones) and every VMCS field supported,
/// for the rules on controls that this model lacks (posted interrupts, tertiary and secondary
/// exit controls, PKRS, UINV, ...).
pub fn permissive_msrs() -> MsrSnapshot {
    let mut m = tigerlake_msrs();
    for (id, low) in [
        (msr::IA32_VMX_PINBASED_CTLS, 0x16),
        (msr::IA32_VMX_TRUE_PINBASED_CTLS, 0x16),
        (msr::IA32_VMX_PROCBASED_CTLS, 0x0401_e172),
        (msr::IA32_VMX_TRUE_PROCBASED_CTLS, 0x0400_6172),
        (msr::IA32_VMX_EXIT_CTLS, 0x0003_6dff),
        (msr::IA32_VMX_TRUE_EXIT_CTLS, 0x0003_6dfb),
        (msr::IA32_VMX_ENTRY_CTLS, 0x11ff),
        (msr::IA32_VMX_TRUE_ENTRY_CTLS, 0x11fb),
        (msr::IA32_VMX_PROCBASED_CTLS2, 0),
    ] {
        m.insert(id, 0xffff_ffff_0000_0000 | low).unwrap();
    }
    m.insert(msr::IA32_VMX_PROCBASED_CTLS3, u64::MAX).unwrap();
    m.insert(msr::IA32_VMX_EXIT_CTLS2, u64::MAX).unwrap();
    m.insert(msr::IA32_VMX_VMFUNC, u64::MAX).unwrap();
    m.insert(msr::IA32_VMX_VMCS_ENUM, 0x3ff << 1).unwrap();
    m
}

/// Sparse physical memory: unwritten bytes read as 0.
#[derive(Clone, Debug, Default)]
pub struct Memory(pub HashMap<u64, u8>);

impl Memory {
    pub fn write(&mut self, address: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.0.insert(address.wrapping_add(i as u64), *b);
        }
    }
    pub fn write_u64(&mut self, address: u64, value: u64) {
        self.write(address, &value.to_le_bytes());
    }
}

impl PhysMemory for Memory {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self
                .0
                .get(&address.wrapping_add(i as u64))
                .copied()
                .unwrap_or(0);
        }
        Ok(())
    }
}

/// Everything a check needs, starting from the known-good state.
#[derive(Clone)]
pub struct Env {
    pub caps: VmxCapabilities,
    pub vmcs: SoftVmcs,
    pub cpu: CpuFacts,
    pub launch: LaunchContext,
    pub mem: Memory,
}

impl Env {
    /// The baseline on `tigerlake`.
    pub fn tigerlake() -> Self {
        Self::with_msrs(tigerlake_msrs())
    }

    /// The baseline on the permissive `tigerlake` variant.
    pub fn permissive() -> Self {
        Self::with_msrs(permissive_msrs())
    }

    pub fn with_msrs(mut msrs: MsrSnapshot) -> Self {
        let caps = VmxCapabilities::read(&mut msrs).expect("capabilities decode");
        let mut env = Env {
            caps,
            vmcs: SoftVmcs::new(&caps),
            cpu: CpuFacts::new(39),
            launch: LaunchContext::new(EntryInstruction::Vmlaunch, CURRENT_VMCS, VMXON),
            mem: Memory::default(),
        };
        env.cpu.perf_global_ctrl_reserved = Some(CpuFacts::perf_global_ctrl_mask(4, 3));
        env.cpu.rtit_ctl_reserved = Some(0xffff_0000_f084_0000); // 18, 23, 31:28, 63:48
        env.cpu.lbr_ctl_reserved = Some(!0x007f_000f);
        baseline(&mut env.vmcs);
        // The link VMCS header, for tests that enable the link pointer.
        env.mem
            .write(LINK_VMCS, &env.caps.basic.revision_id().to_le_bytes());
        env
    }

    pub fn w(&mut self, encoding: u32, value: u64) {
        self.vmcs
            .write_raw(encoding, value)
            .unwrap_or_else(|e| panic!("write {encoding:#x}: {e}"));
    }
    pub fn r(&self, encoding: u32) -> u64 {
        self.vmcs
            .read_raw(encoding)
            .unwrap_or_else(|e| panic!("read {encoding:#x}: {e}"))
    }
    pub fn set(&mut self, encoding: u32, bits: u64) {
        let v = self.r(encoding);
        self.w(encoding, v | bits);
    }
    pub fn clear(&mut self, encoding: u32, bits: u64) {
        let v = self.r(encoding);
        self.w(encoding, v & !bits);
    }
    pub fn checker(&self) -> Checker {
        Checker::new(&self.caps, self.cpu, self.launch)
    }
    pub fn check(&self) -> Report<512> {
        let mut mem = self.mem.clone();
        self.checker()
            .report(&self.vmcs, &mut mem)
            .expect("check runs")
    }

    /// Asserts that VM entry with this state succeeds, naming every rule it breaks otherwise.
    pub fn assert_enters(&self) {
        let report = self.check();
        assert_eq!(
            report.outcome(),
            Outcome::Success,
            "{:?}",
            report.violations().map(|v| v.rule.id()).collect::<Vec<_>>()
        );
    }
}

/// Writes the known-good state: a 64-bit guest (IA-32e mode, paging, flat segments) with EPT,
/// VPID and MSR bitmaps, and a 64-bit host.
pub fn baseline(v: &mut SoftVmcs) {
    let mut w = |encoding: u32, value: u64| {
        v.write_raw(encoding, value)
            .unwrap_or_else(|e| panic!("write {encoding:#x}: {e}"))
    };
    // Controls (tigerlake TRUE allowed-0 bits plus the usual ones).
    w(e!(PIN_BASED_VM_EXECUTION_CONTROLS), 0x16 | 1 | 8); // + external-interrupt, NMI exiting
    w(
        e!(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS),
        0x0400_6172 | 1 << 7 | 1 << 28 | 1 << 31, // + HLT exiting, MSR bitmaps, secondary
    );
    w(
        e!(SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS),
        1 << 1 | 1 << 3 | 1 << 5,
    ); // EPT, RDTSCP, VPID
    w(
        e!(PRIMARY_VM_EXIT_CONTROLS),
        0x0003_6dfb | 1 << 9 | 1 << 15 | 0xf << 18, // host 64-bit, ack, save/load PAT, EFER
    );
    w(e!(VM_ENTRY_CONTROLS), 0x11fb | 1 << 9 | 1 << 14 | 1 << 15); // IA-32e guest, PAT, EFER
    w(e!(EPT_POINTER), EPT_PML4 | 6 | 3 << 3);
    w(e!(VIRTUAL_PROCESSOR_IDENTIFIER), 1);
    w(e!(ADDRESS_OF_MSR_BITMAPS), MSR_BITMAP);
    w(e!(VMCS_LINK_POINTER), u64::MAX);

    // Host state.
    w(e!(HOST_CR0), 0x8005_0033);
    w(e!(HOST_CR3), 0x30_0000);
    w(e!(HOST_CR4), 0x26a0);
    w(e!(HOST_CS_SELECTOR), 0x08);
    w(e!(HOST_SS_SELECTOR), 0x10);
    w(e!(HOST_DS_SELECTOR), 0x10);
    w(e!(HOST_ES_SELECTOR), 0x10);
    w(e!(HOST_TR_SELECTOR), 0x18);
    w(e!(HOST_TR_BASE), 0xffff_ffff_8010_0000);
    w(e!(HOST_GDTR_BASE), 0xffff_ffff_8010_1000);
    w(e!(HOST_IDTR_BASE), 0xffff_ffff_8010_2000);
    w(e!(HOST_RSP), 0xffff_ffff_8020_0000);
    w(e!(HOST_RIP), 0xffff_ffff_8000_1000);
    w(e!(HOST_IA32_EFER), 0xd01);
    w(e!(HOST_IA32_PAT), 0x0007_0406_0007_0406);

    // Guest state: 64-bit mode, flat segments.
    w(e!(GUEST_CR0), 0x8005_0033);
    w(e!(GUEST_CR3), 0x40_0000);
    w(e!(GUEST_CR4), 0x26a0);
    w(e!(GUEST_DR7), 0x400);
    w(e!(GUEST_RFLAGS), 0x2);
    w(e!(GUEST_RIP), 0x40_1000);
    w(e!(GUEST_RSP), 0x40_8000);
    w(e!(GUEST_CS_SELECTOR), 0x08);
    w(e!(GUEST_CS_LIMIT), 0xffff_ffff);
    w(e!(GUEST_CS_ACCESS_RIGHTS), 0xa09b);
    for (sel, limit, ar) in [
        (
            e!(GUEST_SS_SELECTOR),
            e!(GUEST_SS_LIMIT),
            e!(GUEST_SS_ACCESS_RIGHTS),
        ),
        (
            e!(GUEST_DS_SELECTOR),
            e!(GUEST_DS_LIMIT),
            e!(GUEST_DS_ACCESS_RIGHTS),
        ),
        (
            e!(GUEST_ES_SELECTOR),
            e!(GUEST_ES_LIMIT),
            e!(GUEST_ES_ACCESS_RIGHTS),
        ),
        (
            e!(GUEST_FS_SELECTOR),
            e!(GUEST_FS_LIMIT),
            e!(GUEST_FS_ACCESS_RIGHTS),
        ),
        (
            e!(GUEST_GS_SELECTOR),
            e!(GUEST_GS_LIMIT),
            e!(GUEST_GS_ACCESS_RIGHTS),
        ),
    ] {
        w(sel, 0x10);
        w(limit, 0xffff_ffff);
        w(ar, 0xc093);
    }
    w(e!(GUEST_LDTR_ACCESS_RIGHTS), 0x1_0000);
    w(e!(GUEST_TR_SELECTOR), 0x18);
    w(e!(GUEST_TR_BASE), 0x5000);
    w(e!(GUEST_TR_LIMIT), 0x67);
    w(e!(GUEST_TR_ACCESS_RIGHTS), 0x8b);
    w(e!(GUEST_GDTR_BASE), 0x6000);
    w(e!(GUEST_GDTR_LIMIT), 0x27);
    w(e!(GUEST_IDTR_BASE), 0x7000);
    w(e!(GUEST_IDTR_LIMIT), 0xfff);
    w(e!(GUEST_IA32_EFER), 0xd01);
    w(e!(GUEST_IA32_PAT), 0x0007_0406_0007_0406);
}
