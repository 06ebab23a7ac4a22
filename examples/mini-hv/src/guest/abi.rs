//! The contract between the hypervisor and the test guest: the guest-physical memory layout, the hypercall
//! ABI, the emulated devices' registers and the test list. Both sides are compiled from this one file.
//!
//! # Hypercall ABI
//! The guest executes `VMCALL` at CPL 0 with the function number in RAX and up to three arguments in RDI,
//! RSI and RDX; the hypervisor returns a value in RAX ([`HC_OK`] or a function result, [`HC_UNKNOWN`] for an
//! unknown function, [`HC_BAD_ARGUMENT`] for an argument it refused) and advances RIP past the `VMCALL`.
//! Pointers are guest-virtual addresses, translated through the guest's own page tables.

/// Size of the guest's RAM, guest-physical `[0, RAM_SIZE)`.
pub const RAM_SIZE: u64 = 32 << 20;

/// Guest-physical address of the six pages the guest builds its page tables in (PML4, PDPT, 4 PDs mapping
/// the first 4 GiB with 2 MiB pages).
pub const PAGE_TABLES: u64 = 0x1_0000;

/// Initial RSP of the guest's 64-bit code (the stack grows down to the page tables' end, 0x16000).
pub const STACK_TOP: u64 = 0x9_f000;

/// Guest-physical page of the emulated MMIO device (not backed by RAM: every access is an EPT violation).
pub const MMIO_BASE: u64 = 0xd000_0000;

/// A guest-physical address that is neither RAM nor a device: accesses are contained by the hypervisor,
/// which injects #GP(0).
pub const UNBACKED: u64 = 0xc000_0000;

/// CPUID leaf 0x4000_0000 EAX: the highest hypervisor leaf.
pub const CPUID_HV_MAX_LEAF: u32 = 0x4000_0001;

/// CPUID leaf 0x4000_0000 EBX, ECX, EDX: the vendor signature.
pub const CPUID_HV_SIGNATURE: [u8; 12] = *b"MiniHv-VmxRs";

/// CPUID leaf 0x4000_0001 EAX: the hypercall ABI version.
pub const HC_ABI_VERSION: u32 = 1;

/// A synthetic MSR that the hypervisor emulates as a 64-bit scratch register.
pub const MSR_SCRATCH: u32 = 0x4d48_0000;

/// The value the hypervisor returns for RDMSR of IA32_MISC_ENABLE (bit 0: fast-strings enable).
pub const MISC_ENABLE_VALUE: u64 = 1;

/// The value the guest reads from IA32_FEATURE_CONTROL: locked, VMX disabled (VMX is hidden).
pub const FEATURE_CONTROL_VALUE: u64 = 1;

/// Hypercall: print the string at guest-virtual RDI of RSI bytes (at most [`HC_PRINT_MAX`]).
pub const HC_PRINT: u64 = 1;
/// Hypercall: report the result of test RDI (an index into [`TESTS`]): RSI = [`REPORT_PASS`],
/// [`REPORT_FAIL`] or [`REPORT_SKIPPED`].
pub const HC_REPORT: u64 = 2;
/// Hypercall: stop the guest with status RDI (0 = success); does not return.
pub const HC_EXIT: u64 = 3;
/// Hypercall: report the CPUID round-trip timing: RDI = median TSC ticks, RSI = sample count, RDX = minimum.
pub const HC_TIMING: u64 = 4;
/// Hypercall: return how many VM exits with basic exit reason RDI the hypervisor has handled so far.
pub const HC_EXIT_COUNT: u64 = 5;
/// Hypercall: return the hypervisor's feature flags ([`FEATURE_WBINVD_EXITING`]).
pub const HC_FEATURES: u64 = 6;

/// Hypercall: check the MSR areas after the guest wrote RDI to [`IA32_KERNEL_GS_BASE`]: returns
/// [`MSR_AREAS_STORED`] if the VM-exit MSR-store area holds RDI, plus [`MSR_AREAS_HOST_RESTORED`] if the
/// VM-exit MSR-load area gave the host its own value back.
pub const HC_MSR_AREAS: u64 = 7;

/// Hypercall: the virtual APIC as the hypervisor sees it: VTPR from the virtual-APIC page in bits
/// 7:0, RVI in bits 15:8 and SVI in bits 23:16 from the guest interrupt status.
pub const HC_APIC_STATE: u64 = 8;
/// Hypercall: with RDI a vector (32-255), turn on virtual-interrupt delivery and request that vector
/// (VIRR and RVI, VTPR and VPPR 0, an empty EOI-exit bitmap); with RDI = 0 turn it off again.
pub const HC_VID_REQUEST: u64 = 9;
/// Hypercall: the page-modification log. RDI = [`PML_RESET`]: empty it (PML index 511);
/// [`PML_COUNT`]: return the entries logged since; [`PML_CONTAINS`]: return 1 if the log holds the
/// page of guest-physical RSI, else 0; [`PML_ONE_LEFT`]: set the PML index to 0 (one free entry);
/// [`PML_LAST_ENTRY`]: return entry 0.
pub const HC_PML: u64 = 10;
/// Hypercall: the CPUID round-trip breakdown. RDI = 1 starts it, with RSI the guest's stamp cost
/// (the TSC ticks from its RDTSC to its CPUID); the guest's CPUIDs then carry its RDTSC before the
/// CPUID in R8 and its RDTSC after the previous one in R9. RDI = 0 ends it.
pub const HC_BREAKDOWN: u64 = 11;
/// [`HC_PML`] request: empty the log.
pub const PML_RESET: u64 = 0;
/// [`HC_PML`] request: count the logged entries.
pub const PML_COUNT: u64 = 1;
/// [`HC_PML`] request: look for a page in the log.
pub const PML_CONTAINS: u64 = 2;
/// [`HC_PML`] request: leave one free entry.
pub const PML_ONE_LEFT: u64 = 3;
/// [`HC_PML`] request: return entry 0 of the log (the last one the processor fills).
pub const PML_LAST_ENTRY: u64 = 4;

/// [`HC_FEATURES`] flag: TPR shadow, APIC-access virtualization and APIC-register virtualization
/// are on, the APIC-access page at [`APIC_GPA`].
pub const FEATURE_APIC_VIRTUALIZATION: u64 = 1 << 1;
/// [`HC_FEATURES`] flag: [`HC_VID_REQUEST`] can turn on virtual-interrupt delivery.
pub const FEATURE_VIRTUAL_INTERRUPT_DELIVERY: u64 = 1 << 2;
/// [`HC_FEATURES`] flag: VMFUNC 0 switches between EPTP 0 (the normal view) and EPTP 1, where the
/// page at [`EPTP_VIEW_PAGE`] is another host page holding [`EPTP_VIEW_MARKER`].
pub const FEATURE_EPTP_SWITCHING: u64 = 1 << 3;
/// [`HC_FEATURES`] flag: "EPT-violation #VE" is on, the information area at [`VE_AREA_GPA`] (its
/// bytes 4-7 non-zero until the guest arms it).
pub const FEATURE_VIRTUALIZATION_EXCEPTION: u64 = 1 << 4;
/// [`HC_FEATURES`] flag: page-modification logging is on ([`HC_PML`]).
pub const FEATURE_PML: u64 = 1 << 5;
/// [`HC_FEATURES`] flag: the host's local APIC timer (external-interrupt exiting) stands in for
/// the absent VMX-preemption timer, so a halted guest is woken by an external-interrupt exit.
pub const FEATURE_APIC_TIMER: u64 = 1 << 6;

/// [`HC_FEATURES`] flag: MONITOR and MWAIT exist (CPUID.01H:ECX.MONITOR) and exit ("MONITOR
/// exiting" and "MWAIT exiting" are 1, as Hyper-V forces them): the hypervisor completes them,
/// MONITOR as a no-op and MWAIT as a NOP after their checks.
pub const FEATURE_MONITOR_MWAIT_EXITING: u64 = 1 << 7;
/// [`HC_FEATURES`] flag: the hypervisor offers the guest VMX (`mini-hv.nested=1`): CPUID.1:ECX.VMX,
/// IA32_FEATURE_CONTROL = [`FEATURE_CONTROL_NESTED_VALUE`], the virtual capability MSRs with
/// revision [`NESTED_VMCS_REVISION`], and every VMX instruction emulated.
pub const FEATURE_NESTED_VMX: u64 = 1 << 8;
/// IA32_FEATURE_CONTROL with VMX offered: locked, VMXON allowed outside SMX.
pub const FEATURE_CONTROL_NESTED_VALUE: u64 = 5;
/// The VMCS revision identifier of the hypervisor's VMCS12 format (IA32_VMX_BASIC\[30:0\] as the
/// guest reads it with VMX offered).
pub const NESTED_VMCS_REVISION: u32 = mini_hv_logic::nested_policy::NESTED_VMCS_REVISION;

/// Guest-physical address of the APIC-access page (the xAPIC default base).
pub const APIC_GPA: u64 = 0xfee0_0000;
/// The value the hypervisor puts in the virtual APIC's version register (offset 30H).
pub const APIC_VERSION_VALUE: u32 = 0x0005_0014;
/// VTPR at the first VM entry (priority class 3).
pub const APIC_INITIAL_TPR: u32 = 0x30;
/// The TPR threshold: a guest TPR write below class 2 makes a TPR-below-threshold VM exit.
pub const APIC_TPR_THRESHOLD: u8 = 2;
/// Guest-physical address of the virtualization-exception information area.
pub const VE_AREA_GPA: u64 = 0xe000_0000;
/// The page that differs between the two EPT views.
pub const EPTP_VIEW_PAGE: u64 = 0x1f0_0000;
/// What the page at [`EPTP_VIEW_PAGE`] holds in EPT view 1.
pub const EPTP_VIEW_MARKER: u64 = 0x2121_312d_5745_4956;
/// Four 2-MiB regions of guest RAM that nothing touches before the `pml-log` check, so that its
/// first write to each sets a clear EPT dirty flag (and is logged).
pub const PML_FRESH_REGIONS: [u64; 4] = [0x160_0000, 0x180_0000, 0x1a0_0000, 0x1c0_0000];

/// [`HC_REPORT`] result: the test passed.
pub const REPORT_PASS: u64 = 1;
/// [`HC_REPORT`] result: the test failed.
pub const REPORT_FAIL: u64 = 0;
/// [`HC_REPORT`] result: the test needs a feature this CPU lacks (the hypervisor checks that claim).
pub const REPORT_SKIPPED: u64 = 2;

/// IA32_KERNEL_GS_BASE, the MSR the `msr-areas` test switches through the MSR areas.
pub use vmx_caps::msr::IA32_KERNEL_GS_BASE;
/// The guest's IA32_KERNEL_GS_BASE, loaded by the VM-entry MSR-load area at the first VM entry.
pub const MSR_AREA_GUEST_INITIAL: u64 = 0x0000_5a5a_1234_5000;
/// [`HC_MSR_AREAS`] flag: the VM-exit MSR-store area holds the guest's value.
pub const MSR_AREAS_STORED: u64 = 1 << 0;
/// [`HC_MSR_AREAS`] flag: the host's value was restored at the VM exit.
pub const MSR_AREAS_HOST_RESTORED: u64 = 1 << 1;

/// Longest string [`HC_PRINT`] accepts.
pub const HC_PRINT_MAX: u64 = 256;

/// Hypercall result: success.
pub const HC_OK: u64 = 0;
/// Hypercall result: unknown function number.
pub const HC_UNKNOWN: u64 = u64::MAX;
/// Hypercall result: an argument was refused (bad pointer, length, test index).
pub const HC_BAD_ARGUMENT: u64 = u64::MAX - 1;

/// [`HC_FEATURES`] flag: WBINVD causes a VM exit ("WBINVD exiting" was negotiated).
pub const FEATURE_WBINVD_EXITING: u64 = 1 << 0;

/// Register offsets of the emulated MMIO device at [`MMIO_BASE`].
pub mod mmio {
    /// Read-only identification register (32 bits): [`ID_VALUE`].
    pub const ID: u64 = 0x00;
    /// Read/write 64-bit scratch register.
    pub const SCRATCH: u64 = 0x08;
    /// Read-only counter: each read returns the previous value plus one (starts at 1).
    pub const COUNTER: u64 = 0x10;
    /// Read-only count of the writes the device accepted.
    pub const WRITES: u64 = 0x18;
    /// The value of [`ID`].
    pub const ID_VALUE: u32 = 0x4f49_4d4d;
}

/// The emulated 16550 UART (the guest's console) and its registers.
pub mod uart {
    /// Base I/O port (COM1).
    pub const BASE: u16 = 0x3f8;
    /// Receive/transmit holding register (divisor latch low with LCR.DLAB).
    pub const THR: u16 = 0;
    /// Interrupt enable register (divisor latch high with LCR.DLAB).
    pub const IER: u16 = 1;
    /// Interrupt identification register (read).
    pub const IIR: u16 = 2;
    /// Line control register.
    pub const LCR: u16 = 3;
    /// Modem control register.
    pub const MCR: u16 = 4;
    /// Line status register.
    pub const LSR: u16 = 5;
    /// Modem status register.
    pub const MSR: u16 = 6;
    /// Scratch register.
    pub const SCR: u16 = 7;
    /// LCR bit 7: divisor latch access.
    pub const LCR_DLAB: u8 = 0x80;
    /// LSR: transmit holding register empty and transmitter empty.
    pub const LSR_THRE_TEMT: u8 = 0x60;
    /// IIR: no interrupt pending.
    pub const IIR_NONE: u8 = 0x01;
}

/// Basic exit reasons the guest asks [`HC_EXIT_COUNT`] about (SDM Vol. 3D, Appendix C "VMX Basic Exit
/// Reasons").
pub mod reason {
    use exits::BasicExitReason as R;

    /// CPUID.
    pub const CPUID: u64 = R::Cpuid.number() as u64;
    /// HLT.
    pub const HLT: u64 = R::Hlt.number() as u64;
    /// INVD.
    pub const INVD: u64 = R::Invd.number() as u64;
    /// VMCALL.
    pub const VMCALL: u64 = R::Vmcall.number() as u64;
    /// VMCLEAR.
    pub const VMCLEAR: u64 = R::Vmclear.number() as u64;
    /// VMLAUNCH.
    pub const VMLAUNCH: u64 = R::Vmlaunch.number() as u64;
    /// VMPTRLD.
    pub const VMPTRLD: u64 = R::Vmptrld.number() as u64;
    /// VMREAD.
    pub const VMREAD: u64 = R::Vmread.number() as u64;
    /// VMRESUME.
    pub const VMRESUME: u64 = R::Vmresume.number() as u64;
    /// VMWRITE.
    pub const VMWRITE: u64 = R::Vmwrite.number() as u64;
    /// VMXOFF.
    pub const VMXOFF: u64 = R::Vmxoff.number() as u64;
    /// VMXON.
    pub const VMXON: u64 = R::Vmxon.number() as u64;
    /// Control-register accesses.
    pub const CR_ACCESS: u64 = R::ControlRegisterAccess.number() as u64;
    /// I/O instruction.
    pub const IO: u64 = R::IoInstruction.number() as u64;
    /// RDMSR.
    pub const RDMSR: u64 = R::Rdmsr.number() as u64;
    /// WRMSR.
    pub const WRMSR: u64 = R::Wrmsr.number() as u64;
    /// EPT violation.
    pub const EPT_VIOLATION: u64 = R::EptViolation.number() as u64;
    /// INVEPT.
    pub const INVEPT: u64 = R::Invept.number() as u64;
    /// VMX-preemption timer expired.
    pub const PREEMPTION_TIMER: u64 = R::PreemptionTimerExpired.number() as u64;
    /// INVVPID.
    pub const INVVPID: u64 = R::Invvpid.number() as u64;
    /// WBINVD.
    pub const WBINVD: u64 = R::Wbinvd.number() as u64;
    /// XSETBV.
    pub const XSETBV: u64 = R::Xsetbv.number() as u64;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u64 = R::ExternalInterrupt.number() as u64;
    /// Interrupt window.
    pub const INTERRUPT_WINDOW: u64 = R::InterruptWindow.number() as u64;
    /// TPR below threshold.
    pub const TPR_BELOW_THRESHOLD: u64 = R::TprBelowThreshold.number() as u64;
    /// APIC access.
    pub const APIC_ACCESS: u64 = R::ApicAccess.number() as u64;
    /// Virtualized EOI.
    pub const VIRTUALIZED_EOI: u64 = R::VirtualizedEoi.number() as u64;
    /// APIC write.
    pub const APIC_WRITE: u64 = R::ApicWrite.number() as u64;
    /// VMFUNC.
    pub const VMFUNC: u64 = R::Vmfunc.number() as u64;
    /// Page-modification log full.
    pub const PML_FULL: u64 = R::PageModificationLogFull.number() as u64;
    /// MWAIT.
    pub const MWAIT: u64 = R::Mwait.number() as u64;
    /// MONITOR.
    pub const MONITOR: u64 = R::Monitor.number() as u64;
}

/// The guest's tests, in the order it runs them; [`HC_REPORT`] names a test by its index here. After the
/// last one the guest ends with a deliberate triple fault.
pub const TESTS: &[&str] = &[
    "cpuid-hypervisor-leaf",
    "msr-passthrough",
    "msr-emulated",
    "msr-forbidden-gp",
    "io-uart",
    "io-unclaimed-ports",
    "hlt-preemption-timer",
    "vmcall",
    "mmio-device",
    "xsetbv",
    "invd-wbinvd",
    "cr-access",
    "vmx-instructions-ud",
    "unbacked-memory",
    "cpuid-timing",
    "register-preservation",
    "msr-areas",
    "apic-virtualization",
    "virtual-interrupt-delivery",
    "vmfunc-eptp-switch",
    "virtualization-exception",
    "pml-log",
    MONITOR_MWAIT_TEST,
    "nested-vmx",
];

/// The check of the MONITOR and MWAIT exits: it runs where [`FEATURE_MONITOR_MWAIT_EXITING`] is
/// set and is skipped elsewhere.
pub const MONITOR_MWAIT_TEST: &str = "monitor-mwait";
