//! The test guest's virtual CPU: its reset state in the VMCS, the run loop, and its personality
//! for the shared exit dispatcher ([`super::dispatch`]: `impl Guest for Vcpu`), with the emulation
//! behind each of its own exits (hypercalls, the UART and MMIO device, the timers, CR8).

use core::fmt;
use core::ops::ControlFlow;

use exits::inject::Exception;
use exits::{CrAccessQualification, CrAccessType, IoDirection, IoQualification, VmExit};
use vmcs::fields;
use vmcs::structures::MsrArea;
use vmcs::{
    ActivityState, GuestState, GuestStateError, InterruptionType, Segment, VmcsRead, VmcsWrite,
};
use vmx_caps::VmxCapabilities;
use vmx_core::{GpReg, GuestRegisters, VmFail};

use super::Vmcs;
use super::dispatch::{self, Flow, Guest, Stopped, inject, skip};
use super::probe::{self, Probe};

use super::devices::{self, MmioDevice, Uart};
use super::memory::{GuestMemory, Paging};
use super::monitor::{self, Completion};
use crate::guest::abi::{self, reason};
use mini_hv_logic::decode::{self, MovAccess, Operation, Reg};
use mini_hv_logic::guest_state::{self, CrPolicy};
use mini_hv_logic::l1_kernel::Reported;
use vmx_caps::arch::{Cr0, Cr4, Efer, Rflags, Xcr0};
use vmx_caps::msr::{
    IA32_APIC_BASE, IA32_EFER, IA32_FEATURE_CONTROL, IA32_FS_BASE, IA32_GS_BASE, IA32_MISC_ENABLE,
    IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_SYSENTER_ESP, IA32_TIME_STAMP_COUNTER,
};

/// Exceptions the hypervisor injects.
const UD: Exception = Exception::UD;
const GP: Exception = Exception::GP;

/// VMX-preemption timer value while the guest runs: a watchdog, reloaded at every VM entry, so it
/// only fires if the guest runs this many timer ticks without a VM exit.
const WATCHDOG_TSC_TICKS: u64 = 200_000_000;
/// TSC ticks after which a halted guest is woken by the VMX-preemption timer.
const HLT_WAKE_TSC_TICKS: u64 = 100_000;
/// Exits after which the run is stopped as a runaway.
const MAX_EXITS: u64 = 1_000_000;

/// How the guest's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The guest triple-faulted (the planned end of the test guest).
    TripleFault { rip: u64 },
    /// The guest asked to stop with [`abi::HC_EXIT`].
    GuestExit { status: u64 },
    /// The hypervisor stopped the guest (the reason was printed).
    Stopped,
    /// VM entry failed (the reason and a VMCS dump were printed).
    EntryFailed,
    /// A guest hypervisor (L1, [`Config::l1_kernel`]) ended its run the way mini-hv ends an
    /// emulator's: the byte `'D'` to Bochs' debugger port, after `code` (if any) to QEMU's
    /// `isa-debug-exit` port.
    L1Ended {
        /// The last byte L1 wrote to the `isa-debug-exit` port.
        code: Option<u8>,
    },
}

/// APIC-timer ticks (divide by 1) of the watchdog where the local APIC timer stands in for the
/// VMX-preemption timer: the longest count, so only a guest that runs that long without a VM exit
/// is stopped.
const APIC_WATCHDOG_TICKS: u32 = u32::MAX;
/// APIC-timer ticks after which a halted guest is woken by the local APIC timer.
const APIC_HLT_WAKE_TICKS: u32 = 100_000;

/// What ends a guest's run that makes no VM exit (the watchdog) and wakes a halted guest.
pub enum TimeSource {
    /// The VMX-preemption timer; it counts every 2^`shift` TSC ticks (IA32_VMX_MISC\[4:0\]).
    PreemptionTimer {
        /// IA32_VMX_MISC\[4:0\].
        shift: u32,
    },
    /// The host's local APIC timer, with external-interrupt exiting and "acknowledge interrupt on
    /// exit" (the fallback where the preemption timer is absent), re-armed before every VM entry.
    ApicTimer(super::lapic::ApicTimer),
}

/// What the hypervisor configured, needed by the exit handlers.
pub struct Config {
    /// The processor's VMX capabilities (the CR0/CR4 fixed bits among them).
    pub caps: VmxCapabilities,
    /// The time source of the watchdog and the HLT wake-up.
    pub timer: TimeSource,
    /// "WBINVD exiting" was negotiated.
    pub wbinvd_exiting: bool,
    /// XCR0 bits the processor supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX).
    pub xcr0_supported: Xcr0,
    /// MONITOR and MWAIT exist and exit ([`super::monitor::exiting`]).
    pub monitor_mwait_exiting: bool,
    /// The guest is a hypervisor kernel (L1, [`super::l1_kernel`]), not the test guest: its
    /// console lines are prefixed `L1: ` and its writes to the emulators' exit ports end its run.
    pub l1_kernel: bool,
}

/// The guest-visible state the hypervisor emulates, and the run's bookkeeping.
pub struct Vcpu {
    /// The guest's general-purpose registers (but RSP), CR2 and x87/SSE state.
    pub regs: GuestRegisters,
    mem: GuestMemory,
    config: Config,
    uart: Uart,
    /// The last byte a guest hypervisor wrote to the `isa-debug-exit` port.
    exit_code: Option<u8>,
    mmio: MmioDevice,
    scratch_msr: u64,
    tpr: u64,
    halted: bool,
    /// The guest's RFLAGS.IF while it is entered with IF = 1 for an APIC-timer wake-up.
    wake_saved_if: Option<Rflags>,
    /// VM exits by basic exit reason.
    pub exit_counts: [u64; 96],
    /// Each test's reported result.
    pub reports: [Option<Verdict>; abi::TESTS.len()],
    /// The guest's MSR area (VM-entry MSR-load and VM-exit MSR-store), for [`abi::HC_MSR_AREAS`].
    pub guest_msrs: Option<&'static MsrArea<1>>,
    /// The structures of the optional checks.
    pub extras: Option<super::extras::Extras>,
    /// VM exits of every reason.
    pub total_exits: u64,
    /// Reports of tests that had already reported.
    pub duplicate_reports: u64,
    /// The CPUID timing the guest reported: (median, samples, minimum).
    pub timing: Option<(u64, u64, u64)>,
    /// The CPUID round-trip breakdown the probe measured.
    pub breakdown: Option<probe::Breakdown>,
    /// How often the guest turned the probe on or off.
    pub probe_switches: u64,
    /// The guest's stamp cost for the breakdown ([`abi::HC_BREAKDOWN`]).
    guest_stamp_cost: u64,
    /// Nested VMX: VMX offered to the guest (`mini-hv.nested=1`).
    pub nested: Option<&'static mut super::nested::Nested>,
}

/// A test's result as the guest reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// [`abi::REPORT_PASS`].
    Pass,
    /// [`abi::REPORT_FAIL`].
    Fail,
    /// [`abi::REPORT_SKIPPED`]: the guest found the feature missing.
    Skipped,
}

/// IA32_APIC_BASE as a guest hypervisor (L1) reads it: the default base FEE00000H, the bootstrap
/// processor (bit 8), the local APIC globally disabled (bit 11 clear; SDM Vol. 3A, 11.4.3), since
/// L0 models no local APIC for it.
const L1_APIC_BASE: u64 = 0xfee0_0000 | 1 << 8;

/// The host's IA32_KERNEL_GS_BASE while the test guest runs, restored at every VM exit by the
/// VM-exit MSR-load area.
pub const HOST_KERNEL_GS_BASE: u64 = 0xffff_8000_4d48_0000;

/// Writes the guest's reset state ([`GuestState::reset`], SDM Vol. 3A, 10.1.1) with the
/// unrestricted guest's freedom of a CS base that is not selector × 16: CS.base is `entry16` (the
/// test guest's trampoline, at its linked address), IP 0.
pub fn write_reset_state(
    vmcs: &mut impl VmcsWrite,
    cr: CrPolicy,
    caps: &VmxCapabilities,
    entry16: u64,
) -> Result<(), GuestStateError> {
    let reset = GuestState::reset();
    let state = GuestState {
        cs: Segment {
            base: entry16,
            ..reset.cs
        },
        rip: 0,
        ..reset
    };
    cr.write_initial_state(vmcs, &state, caps)
}

/// Why [`Vcpu::run_with`] returns.
pub enum Leave {
    /// The guest's run ended.
    End(End),
    /// The guest turned the round-trip probe on (`true`) or off.
    Probe(bool),
}

impl From<Stopped> for Leave {
    fn from(Stopped: Stopped) -> Self {
        Leave::End(End::Stopped)
    }
}

/// The VMX-preemption timer value that expires after about `tsc_ticks` TSC ticks (the timer counts
/// every 2^`shift` ticks), at least 1.
pub(crate) fn timer_value(tsc_ticks: u64, shift: u32) -> u64 {
    (tsc_ticks >> shift).clamp(1, u64::from(u32::MAX))
}

impl Vcpu {
    /// A vCPU for guest RAM `mem`.
    pub fn new(mem: GuestMemory, config: Config) -> Self {
        let prefix = if config.l1_kernel { "L1: " } else { "guest: " };
        Self {
            regs: GuestRegisters::new(),
            mem,
            config,
            uart: Uart::new(prefix),
            exit_code: None,
            mmio: MmioDevice::new(),
            scratch_msr: 0,
            tpr: 0,
            halted: false,
            wake_saved_if: None,
            exit_counts: [0; 96],
            total_exits: 0,
            reports: [None; abi::TESTS.len()],
            guest_msrs: None,
            extras: None,
            duplicate_reports: 0,
            timing: None,
            breakdown: None,
            probe_switches: 0,
            guest_stamp_cost: 0,
            nested: None,
        }
    }

    /// The CR0/CR4 ownership policy of this processor.
    fn cr(&self) -> CrPolicy {
        CrPolicy {
            vmx_exposed: self.nested.is_some(),
            ..super::cr_policy(&self.config.caps)
        }
    }

    /// Writes the guest's reset state ([`write_reset_state`]) and arms the watchdog.
    pub fn write_reset_state(
        &self,
        vmcs: &mut impl VmcsWrite,
        entry16: u64,
    ) -> Result<(), GuestStateError> {
        write_reset_state(vmcs, self.cr(), &self.config.caps, entry16)?;
        self.arm_watchdog(vmcs)?;
        Ok(())
    }

    /// Writes the Multiboot entry state of L1's kernel at `entry`
    /// ([`super::l1_kernel::write_entry_state`]) and arms the watchdog.
    pub fn write_l1_entry_state(
        &mut self,
        vmcs: &mut impl VmcsWrite,
        entry: u32,
    ) -> Result<(), GuestStateError> {
        let (cr, caps) = (self.cr(), self.config.caps);
        super::l1_kernel::write_entry_state(vmcs, &mut self.regs, cr, &caps, entry)?;
        self.arm_watchdog(vmcs)?;
        Ok(())
    }

    /// Arms the watchdog where the VMX-preemption timer is the time source.
    fn arm_watchdog(&self, vmcs: &mut impl VmcsWrite) -> Result<(), VmFail> {
        if let TimeSource::PreemptionTimer { shift } = self.config.timer {
            vmcs.write(
                fields::VMX_PREEMPTION_TIMER_VALUE,
                timer_value(WATCHDOG_TSC_TICKS, shift) as u32,
            )?;
        }
        Ok(())
    }

    /// Runs the guest until it ends; every exit is counted and dispatched. The loop runs without
    /// the probe but while the guest asks for the round-trip breakdown ([`abi::HC_BREAKDOWN`]).
    pub fn run(&mut self, vmcs: &mut Vmcs<'_>) -> End {
        loop {
            match self.run_with(vmcs, &mut probe::Off) {
                Leave::End(end) => return end,
                Leave::Probe(_) => {}
            }
            self.probe_switches += 1;
            let left = match probe::Tsc::calibrated(self.guest_stamp_cost) {
                Some(mut tsc) => {
                    let left = self.run_with(vmcs, &mut tsc);
                    self.breakdown = tsc.result();
                    left
                }
                None => {
                    crate::println!("mini-hv: no memory for the round-trip probe's records");
                    self.run_with(vmcs, &mut probe::Off)
                }
            };
            match left {
                Leave::End(end) => return end,
                Leave::Probe(_) => self.probe_switches += 1,
            }
        }
    }

    /// The run loop ([`dispatch::run`]), with the probe `P` ([`probe::Off`] for every exit but
    /// the breakdown's).
    fn run_with<P: Probe>(&mut self, vmcs: &mut Vmcs<'_>, probe: &mut P) -> Leave {
        dispatch::run(self, vmcs, probe)
    }

    fn vmcs_error(&self, what: &str, fail: VmFail) -> End {
        crate::println!("mini-hv: VMCS access failed while {what}: {fail}");
        End::Stopped
    }

    /// The watchdog or the HLT wake-up timer expired: wake a halted guest, stop a running one.
    fn timer_expired(&mut self, vmcs: &mut Vmcs<'_>) -> Flow<Leave> {
        if !self.halted {
            let rip = vmcs.read(fields::GUEST_RIP)?;
            match self.config.timer {
                TimeSource::PreemptionTimer { .. } => crate::println!(
                    "mini-hv: watchdog: the guest ran {WATCHDOG_TSC_TICKS} TSC ticks without a VM \
                     exit (RIP {rip:#x}); stopping it"
                ),
                TimeSource::ApicTimer(_) => crate::println!(
                    "mini-hv: watchdog: the guest ran {APIC_WATCHDOG_TICKS} APIC-timer ticks \
                     without a VM exit (RIP {rip:#x}); stopping it"
                ),
            }
            return Ok(ControlFlow::Break(Leave::End(End::Stopped)));
        }
        self.halted = false;
        if let Some(saved) = self.wake_saved_if.take() {
            let rflags = vmcs.read(fields::GUEST_RFLAGS)?;
            vmcs.write(fields::GUEST_RFLAGS, (rflags - Rflags::IF) | saved)?;
        }
        if let TimeSource::PreemptionTimer { shift } = self.config.timer {
            vmcs.write(fields::GUEST_ACTIVITY_STATE, ActivityState::Active)?;
            vmcs.write(
                fields::VMX_PREEMPTION_TIMER_VALUE,
                timer_value(WATCHDOG_TSC_TICKS, shift) as u32,
            )?;
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The exit reason that wakes a halted guest.
    pub fn wake_exit(&self) -> u64 {
        match self.config.timer {
            TimeSource::PreemptionTimer { .. } => reason::PREEMPTION_TIMER,
            TimeSource::ApicTimer(_) => reason::EXTERNAL_INTERRUPT,
        }
    }

    /// Whether the test guest may skip check `name`: `Some(true)` where what it needs is absent,
    /// `Some(false)` where it is present, `None` for the checks the vCPU does not judge (those of
    /// the optional VMCS structures: [`super::extras::model_lacks`]).
    pub fn lacks(&self, name: &str) -> Option<bool> {
        (name == abi::MONITOR_MWAIT_TEST).then_some(!self.config.monitor_mwait_exiting)
    }

    /// Stops the APIC timer, if it is the time source (after the guest's run).
    pub fn stop_timer(&self) {
        if let TimeSource::ApicTimer(apic) = &self.config.timer {
            apic.stop();
        }
    }

    fn uart_flush(&mut self) {
        if self.uart.has_partial_line() {
            self.uart.flush();
        }
    }

    /// The UART's last `mini-hv: RESULT` verdict and CPUID round trip (of a guest hypervisor).
    pub fn console_reports(&self) -> (Option<Reported>, Option<u64>) {
        (self.uart.result, self.uart.round_trip)
    }

    fn hypercall(&mut self, vmcs: &mut Vmcs<'_>) -> Flow<Leave> {
        let (nr, a0, a1, a2) = (self.regs.rax, self.regs.rdi, self.regs.rsi, self.regs.rdx);
        let mut next = ControlFlow::Continue(());
        let ret = match nr {
            abi::HC_PRINT => {
                if a1 > abi::HC_PRINT_MAX {
                    abi::HC_BAD_ARGUMENT
                } else {
                    let mut buf = [0u8; abi::HC_PRINT_MAX as usize];
                    let text = &mut buf[..a1 as usize];
                    match self.mem.read_virt(self.paging(vmcs)?, a0, text) {
                        Ok(()) => {
                            crate::print!("guest: ");
                            devices::print_sanitized(text);
                            crate::println!();
                            abi::HC_OK
                        }
                        Err(e) => {
                            crate::println!("mini-hv: HC_PRINT refused: {e}");
                            abi::HC_BAD_ARGUMENT
                        }
                    }
                }
            }
            abi::HC_REPORT => match self.reports.get_mut(a0 as usize) {
                Some(slot) => {
                    if slot.is_some() {
                        self.duplicate_reports += 1;
                    }
                    let verdict = match a1 {
                        abi::REPORT_PASS => Some(Verdict::Pass),
                        abi::REPORT_FAIL => Some(Verdict::Fail),
                        abi::REPORT_SKIPPED => Some(Verdict::Skipped),
                        _ => None,
                    };
                    match verdict {
                        Some(v) => {
                            *slot = Some(v);
                            abi::HC_OK
                        }
                        None => abi::HC_BAD_ARGUMENT,
                    }
                }
                None => abi::HC_BAD_ARGUMENT,
            },
            abi::HC_EXIT => {
                self.uart_flush();
                next = ControlFlow::Break(Leave::End(End::GuestExit { status: a0 }));
                abi::HC_OK
            }
            abi::HC_TIMING => {
                self.timing = Some((a0, a1, a2));
                abi::HC_OK
            }
            abi::HC_BREAKDOWN if a0 <= 1 => {
                self.guest_stamp_cost = a1;
                next = ControlFlow::Break(Leave::Probe(a0 == 1));
                abi::HC_OK
            }
            abi::HC_EXIT_COUNT => match self.exit_counts.get(a0 as usize) {
                Some(&count) => count,
                None => abi::HC_BAD_ARGUMENT,
            },
            abi::HC_FEATURES => {
                let mut features = self.extras.as_ref().map_or(0, |e| e.features());
                if self.config.wbinvd_exiting {
                    features |= abi::FEATURE_WBINVD_EXITING;
                }
                if let TimeSource::ApicTimer(_) = self.config.timer {
                    features |= abi::FEATURE_APIC_TIMER;
                }
                if self.config.monitor_mwait_exiting {
                    features |= abi::FEATURE_MONITOR_MWAIT_EXITING;
                }
                if self.nested.is_some() {
                    features |= abi::FEATURE_NESTED_VMX;
                }
                features
            }
            abi::HC_MSR_AREAS => match self.guest_msrs {
                Some(area) => {
                    let stored = area.data_of(abi::IA32_KERNEL_GS_BASE) == Some(a0);
                    // SAFETY: IA32_KERNEL_GS_BASE exists on every processor with long mode; reading
                    // it has no side effect.
                    let host = unsafe { crate::arch::rdmsr(abi::IA32_KERNEL_GS_BASE) };
                    let mut flags = 0;
                    if stored {
                        flags |= abi::MSR_AREAS_STORED;
                    }
                    if host == HOST_KERNEL_GS_BASE {
                        flags |= abi::MSR_AREAS_HOST_RESTORED;
                    }
                    flags
                }
                None => abi::HC_UNKNOWN,
            },
            _ => match self
                .extras
                .as_mut()
                .and_then(|e| e.hypercall(nr, a0, a1, vmcs))
            {
                Some(ret) => ret?,
                None => abi::HC_UNKNOWN,
            },
        };
        self.regs.rax = ret;
        Ok(next)
    }

    fn paging(&self, vmcs: &Vmcs<'_>) -> Result<Paging, VmFail> {
        Paging::of(vmcs)
    }

    fn mmio(&mut self, gpa: u64, rip: u64, vmcs: &mut Vmcs<'_>) -> Flow<Leave> {
        let paging = self.paging(vmcs)?;
        let cs_base = vmcs.read(fields::GUEST_CS_BASE)?;
        let linear = cs_base.wrapping_add(rip);
        let mut bytes = [0u8; 15];
        let in_page = (0x1000 - (linear & 0xfff)) as usize;
        let fetched = if self.mem.read_virt(paging, linear, &mut bytes).is_ok() {
            15
        } else if self
            .mem
            .read_virt(paging, linear, &mut bytes[..in_page.min(15)])
            .is_ok()
        {
            in_page.min(15)
        } else {
            crate::println!(
                "mini-hv: cannot fetch the instruction at RIP {rip:#x}; injecting #GP(0)"
            );
            return inject(vmcs, GP, Some(0));
        };
        let access = match decode::decode_mov(&bytes[..fetched]) {
            Ok(access) => access,
            Err(e) => {
                crate::println!(
                    "mini-hv: MMIO access at {gpa:#x} by an instruction the emulator does not handle \
                     ({e}, RIP {rip:#x}); injecting #GP(0)"
                );
                return inject(vmcs, GP, Some(0));
            }
        };
        let MovAccess {
            length,
            size,
            operation,
        } = access;
        let offset = gpa - abi::MMIO_BASE;
        let result = match operation {
            Operation::Load(reg) => match self.mmio.read(offset, size) {
                Ok(value) => {
                    self.set_reg(reg, size, value, vmcs)?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Operation::Store(reg) => {
                let value = self.get_reg(reg, vmcs)?;
                self.mmio.write(offset, size, value)
            }
            Operation::StoreImmediate(value) => self.mmio.write(offset, size, value),
        };
        match result {
            Ok(()) => skip(vmcs, u32::from(length)),
            Err(e) => {
                crate::println!(
                    "mini-hv: MMIO access of {} bytes at device offset {:#x} is not supported; \
                     injecting #GP(0)",
                    e.size,
                    e.offset
                );
                inject(vmcs, GP, Some(0))
            }
        }
    }

    /// The guest's register `reg` ([`dispatch::read_gpr`]).
    fn read_gpr(&mut self, reg: GpReg, vmcs: &Vmcs<'_>) -> Result<u64, VmFail> {
        dispatch::read_gpr(&self.regs, reg, vmcs)
    }

    /// Writes the guest's register `reg` ([`dispatch::write_gpr`]).
    fn write_gpr(&mut self, reg: GpReg, value: u64, vmcs: &mut Vmcs<'_>) -> Result<(), VmFail> {
        dispatch::write_gpr(&mut self.regs, reg, value, vmcs)
    }

    fn get_reg(&mut self, reg: Reg, vmcs: &Vmcs<'_>) -> Result<u64, VmFail> {
        let full = self.read_gpr(GpReg::from_field(reg.index.into()), vmcs)?;
        Ok(if reg.high_byte {
            (full >> 8) & 0xff
        } else {
            full
        })
    }

    /// Writes a loaded value to a register with MOV's merge rules: 8- and 16-bit loads keep the
    /// other bits, 32-bit loads zero-extend.
    fn set_reg(
        &mut self,
        reg: Reg,
        size: u8,
        value: u64,
        vmcs: &mut Vmcs<'_>,
    ) -> Result<(), VmFail> {
        let old = self.read_gpr(GpReg::from_field(reg.index.into()), vmcs)?;
        let new = match (size, reg.high_byte) {
            (1, true) => (old & !0xff00) | (value & 0xff) << 8,
            (1, false) => (old & !0xff) | (value & 0xff),
            (2, _) => (old & !0xffff) | (value & 0xffff),
            (4, _) => value & 0xffff_ffff,
            _ => value,
        };
        self.write_gpr(GpReg::from_field(reg.index.into()), new, vmcs)
    }

    /// MOV to and from CR8 (the TPR); MOV to CR0/CR4 is the shared dispatcher's.
    fn cr_access(
        &mut self,
        q: CrAccessQualification,
        length: u32,
        vmcs: &mut Vmcs<'_>,
    ) -> Flow<Leave> {
        let gpr = q.gpr;
        match (q.access_type, q.cr) {
            (CrAccessType::MovToCr, 8) => {
                let value = self.read_gpr(gpr, vmcs)?;
                if value > 15 {
                    return inject(vmcs, GP, Some(0));
                }
                self.tpr = value;
                skip(vmcs, length)
            }
            (CrAccessType::MovFromCr, 8) => {
                let tpr = self.tpr;
                self.write_gpr(gpr, tpr, vmcs)?;
                skip(vmcs, length)
            }
            _ => {
                let rip = vmcs.read(fields::GUEST_RIP)?;
                crate::println!(
                    "mini-hv: unexpected control-register access {q} at RIP {rip:#x}; stopping the guest"
                );
                Ok(ControlFlow::Break(Leave::End(End::Stopped)))
            }
        }
    }
}

/// The test guest's personality: the hypervisor interface of [`abi`] (CPUID leaves, hypercalls,
/// emulated MSRs), the UART and the MMIO device, #GP(0) for memory that is not its own, the
/// timers' HLT wake-up and watchdog, and the structures of the extra checks.
impl Guest for Vcpu {
    type Stop = Leave;

    #[inline(always)]
    fn regs(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }

    fn cr(&self) -> CrPolicy {
        Vcpu::cr(self)
    }

    fn xcr0_supported(&self) -> Xcr0 {
        self.config.xcr0_supported
    }

    #[inline(always)]
    fn cpuid(&self, leaf: u32, subleaf: u32, guest_cr4: Cr4) -> [u32; 4] {
        match leaf {
            0x4000_0000 => {
                let s = abi::CPUID_HV_SIGNATURE;
                let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
                [abi::CPUID_HV_MAX_LEAF, word(0), word(4), word(8)]
            }
            0x4000_0001 => [abi::HC_ABI_VERSION, 0, 0, 0],
            0x4000_0002..=0x4fff_ffff => [0; 4],
            _ => {
                let r = crate::arch::cpuid(leaf, subleaf);
                let (a, mut b, mut c, mut d) = (r.eax, r.ebx, r.ecx, r.edx);
                match leaf {
                    1 => {
                        c = guest_state::cpuid_leaf1_ecx(c, guest_cr4);
                        if self.nested.is_some() {
                            c |= 1 << 5; // VMX
                        }
                        if self.config.l1_kernel {
                            // L0 models no local APIC for a guest hypervisor: its IA32_APIC_BASE
                            // says globally disabled, and CPUID then reports no APIC (EDX 9).
                            d &= !(1 << 9);
                        }
                    }
                    7 if subleaf == 0 => {
                        // INVPCID (EBX 10) is not enabled for the guest; RDPID (ECX 22) needs
                        // "enable RDTSCP"; WAITPKG (ECX 5) needs "enable user wait and pause".
                        b &= !(1 << 10);
                        c &= !((1 << 22) | (1 << 5));
                    }
                    0x8000_0001 => d &= !(1 << 27), // RDTSCP is not enabled for the guest
                    _ => {}
                }
                [a, b, c, d]
            }
        }
    }

    /// RDMSR emulation: `None` means #GP.
    fn rdmsr(&mut self, msr: u32, vmcs: &mut Vmcs<'_>) -> Result<Option<u64>, VmFail> {
        Ok(match msr {
            IA32_EFER => Some(vmcs.read(fields::GUEST_IA32_EFER)?.bits()),
            IA32_FEATURE_CONTROL if self.nested.is_some() => {
                Some(abi::FEATURE_CONTROL_NESTED_VALUE)
            }
            IA32_FEATURE_CONTROL => Some(abi::FEATURE_CONTROL_VALUE),
            0x480..=0x493 => self.nested.as_ref().and_then(|n| n.rdmsr(msr)),
            IA32_MISC_ENABLE => Some(abi::MISC_ENABLE_VALUE),
            abi::MSR_SCRATCH => Some(self.scratch_msr),
            IA32_APIC_BASE if self.config.l1_kernel => Some(L1_APIC_BASE),
            _ => None,
        })
    }

    /// WRMSR emulation: `false` means #GP.
    fn wrmsr(&mut self, msr: u32, value: u64, vmcs: &mut Vmcs<'_>) -> Result<bool, VmFail> {
        Ok(match msr {
            IA32_EFER => {
                let old = vmcs.read(fields::GUEST_IA32_EFER)?;
                let cr0 = vmcs.read(fields::GUEST_CR0)?;
                let value = Efer::from_bits_retain(value);
                let writable = Efer::SCE | Efer::LME | Efer::NXE;
                if !(writable | Efer::LMA).contains(value)
                    || (cr0.contains(Cr0::PG) && (value ^ old).contains(Efer::LME))
                {
                    false
                } else {
                    vmcs.write(
                        fields::GUEST_IA32_EFER,
                        (value & writable) | (old & Efer::LMA),
                    )?;
                    true
                }
            }
            abi::MSR_SCRATCH => {
                self.scratch_msr = value;
                true
            }
            // The local APIC stays disabled (enabling it needs an APIC L0 does not model).
            IA32_APIC_BASE if self.config.l1_kernel => value == L1_APIC_BASE,
            _ => false,
        })
    }

    /// Emulates a non-string IN or OUT of `size` bytes: the UART's ports, the others read as all
    /// ones and ignore writes.
    fn io(&mut self, q: IoQualification, size: u16) -> ControlFlow<Leave> {
        match q.direction {
            IoDirection::Out => {
                for i in 0..size {
                    let port = q.port.wrapping_add(i);
                    let byte = (self.regs.rax >> (8 * i)) as u8;
                    if Uart::claims(port) {
                        self.uart.write(port, byte);
                    } else if self.config.l1_kernel {
                        match port {
                            crate::exit::QEMU_EXIT_PORT => self.exit_code = Some(byte),
                            crate::exit::BOCHS_DEBUG_PORT if byte == b'D' => {
                                self.uart_flush();
                                return ControlFlow::Break(Leave::End(End::L1Ended {
                                    code: self.exit_code,
                                }));
                            }
                            _ => {}
                        }
                    }
                }
            }
            IoDirection::In => {
                let mut value = 0u64;
                for i in 0..size {
                    let port = q.port.wrapping_add(i);
                    let byte = if Uart::claims(port) {
                        self.uart.read(port)
                    } else {
                        0xff
                    };
                    value |= u64::from(byte) << (8 * i);
                }
                self.regs.rax = match size {
                    1 => (self.regs.rax & !0xff) | value,
                    2 => (self.regs.rax & !0xffff) | value,
                    _ => value, // a 32-bit destination zero-extends
                };
            }
        }
        ControlFlow::Continue(())
    }

    fn read_ram(&self, gpa: u64) -> Option<u64> {
        let mut bytes = [0; 8];
        self.mem
            .read(gpa, &mut bytes)
            .ok()
            .map(|()| u64::from_le_bytes(bytes))
    }

    fn refuses_cr4(&self, value: u64) -> bool {
        super::nested::clears_vmxe_in_vmx_operation(self.nested.as_deref(), value)
    }

    /// #GP(0): what this hypervisor answers an EPT violation of unbacked guest-physical memory
    /// with.
    fn unbacked(&mut self, vmcs: &mut Vmcs<'_>, what: fmt::Arguments<'_>) -> Flow<Leave> {
        crate::println!("mini-hv: {what}; injecting #GP(0)");
        inject(vmcs, GP, Some(0))
    }

    fn monitor(&mut self, vmcs: &mut Vmcs<'_>, length: u32) -> Result<Completion, VmFail> {
        let mem = &self.mem;
        monitor::monitor(vmcs, &mut self.regs, length, mem, |gpa| {
            mem.contains(gpa, 1)
        })
    }

    /// With the VMX-preemption timer, the HLT activity state until the timer's wake-up; with the
    /// APIC timer, the run loop waits for the wake-up before the next VM entry, and the guest
    /// stays active.
    fn halted(&mut self, vmcs: &mut Vmcs<'_>) -> Flow<Leave> {
        if let TimeSource::PreemptionTimer { shift } = self.config.timer {
            vmcs.write(fields::GUEST_ACTIVITY_STATE, ActivityState::Hlt)?;
            vmcs.write(
                fields::VMX_PREEMPTION_TIMER_VALUE,
                timer_value(HLT_WAKE_TSC_TICKS, shift) as u32,
            )?;
        }
        self.halted = true;
        Ok(ControlFlow::Continue(()))
    }

    /// #UD, or L0's emulation where VMX is offered to the guest (`mini-hv.nested=1`).
    fn vmx_instruction(&mut self, vmx: &VmExit, vmcs: &mut Vmcs<'_>) -> Flow<Leave> {
        let cr = Vcpu::cr(self);
        // Out of `self` while it runs: L0 handles L2's exits with the rest of the vCPU.
        let Some(nested) = self.nested.take() else {
            return inject(vmcs, UD, None);
        };
        use super::nested::Action;
        let action = nested.instruction(vmx, vmcs, self, cr);
        self.nested = Some(nested);
        match action? {
            Action::Skip => skip(vmcs, vmx_length(vmx)),
            Action::InvalidOpcode => inject(vmcs, UD, None),
            Action::GeneralProtection => inject(vmcs, GP, Some(0)),
            Action::PageFault(code, linear) => {
                self.regs.cr2 = linear;
                inject(vmcs, Exception::PF, Some(code))
            }
            Action::Resume => Ok(ControlFlow::Continue(())),
            Action::Stop => Ok(ControlFlow::Break(Leave::End(End::Stopped))),
        }
    }

    /// The test guest's own exits: hypercalls, the timers, the MMIO device and unbacked memory
    /// (EPT violations), MOV to and from CR8, host NMIs, the extra checks' exits and the final
    /// triple fault.
    const MAX_EXITS: u64 = MAX_EXITS;

    #[inline(always)]
    fn count_exit(&mut self, number: u16) -> u64 {
        if let Some(count) = self.exit_counts.get_mut(usize::from(number)) {
            *count += 1;
        }
        self.total_exits += 1;
        self.total_exits
    }

    fn entry_failed(&mut self, counted: bool) -> Leave {
        // A VM-entry failure is not a VM exit of the guest.
        if counted {
            self.total_exits -= 1;
        }
        Leave::End(End::EntryFailed)
    }

    /// With the APIC timer: waits out a halted guest's wake-up, or arms the watchdog.
    #[inline(always)]
    fn before_entry(&mut self, vmcs: &mut Vmcs<'_>) -> ControlFlow<Leave> {
        if let TimeSource::ApicTimer(apic) = &self.config.timer {
            if self.halted {
                // The halted guest stays out of the processor until its wake-up: the host
                // waits for the timer, and the guest, entered active, exits at once on the
                // pending interrupt (before any instruction), which wakes it. (Bochs 2.7 does
                // not end the HLT activity state for an external interrupt while the guest's
                // RFLAGS.IF is 0, although external-interrupt exiting makes IF irrelevant.)
                apic.start(APIC_HLT_WAKE_TICKS);
                while !apic.expired() {
                    core::hint::spin_loop();
                }
                // Bochs 2.7 recomputes which interrupts are blocked only when RFLAGS.IF
                // changes, not at VM entry, so with the host's and the guest's IF both 0 it
                // keeps the pending interrupt blocked although external-interrupt exiting
                // makes IF irrelevant. The guest is entered with IF = 1 for the wake-up
                // (it exits before its first instruction, and IF is restored then).
                let entered = vmcs.read(fields::GUEST_RFLAGS).and_then(|rflags| {
                    vmcs.write(fields::GUEST_RFLAGS, rflags | Rflags::IF)?;
                    Ok(rflags & Rflags::IF)
                });
                match entered {
                    Ok(saved) => self.wake_saved_if = Some(saved),
                    Err(fail) => {
                        return ControlFlow::Break(Leave::End(
                            self.vmcs_error("waking the guest", fail),
                        ));
                    }
                }
            } else {
                apic.start(APIC_WATCHDOG_TICKS);
            }
        }
        ControlFlow::Continue(())
    }

    /// A switch to the probe already running: nothing to switch.
    fn goes_on<P: Probe>(&self, stop: &Leave) -> bool {
        matches!(stop, Leave::Probe(on) if *on == P::ON)
    }

    // Inlined into the run loop like the shared arms: a call here would take the decoded exit
    // whole, in memory, on the CPUID path too (measured: about 30 ticks of its round trip).
    #[inline(always)]
    fn other(&mut self, exit: VmExit, vmcs: &mut Vmcs<'_>) -> Flow<Leave> {
        match exit {
            VmExit::PreemptionTimerExpired => self.timer_expired(vmcs),
            VmExit::ExternalInterrupt { info: Some(info) }
                if info.vector == super::lapic::TIMER_VECTOR =>
            {
                let TimeSource::ApicTimer(apic) = &self.config.timer else {
                    crate::println!(
                        "mini-hv: external interrupt {info} without the APIC-timer fallback; \
                         stopping the guest"
                    );
                    return Ok(ControlFlow::Break(Leave::End(End::Stopped)));
                };
                apic.eoi();
                self.timer_expired(vmcs)
            }
            VmExit::Vmcall { length } => {
                let next = self.hypercall(vmcs)?;
                let completed = skip(vmcs, length.get())?;
                Ok(if next.is_break() { next } else { completed })
            }
            VmExit::EptViolation {
                qualification,
                guest_physical,
                idt_vectoring,
                ..
            } => {
                let rip = vmcs.read(fields::GUEST_RIP)?;
                if let Some(event) = idt_vectoring {
                    crate::println!(
                        "mini-hv: EPT violation at guest-physical {guest_physical:#x} while delivering \
                         {event} (RIP {rip:#x}); stopping the guest"
                    );
                    return Ok(ControlFlow::Break(Leave::End(End::Stopped)));
                }
                if MmioDevice::claims(guest_physical) && !qualification.fetch {
                    return self.mmio(guest_physical, rip, vmcs);
                }
                let kind = if qualification.write {
                    "write"
                } else if qualification.fetch {
                    "instruction fetch"
                } else {
                    "read"
                };
                self.unbacked(
                    vmcs,
                    format_args!(
                        "guest {kind} of unbacked guest-physical {guest_physical:#x} at RIP \
                         {rip:#x} (EPT violation)"
                    ),
                )
            }
            VmExit::ControlRegisterAccess {
                qualification,
                length,
                ..
            } => self.cr_access(qualification, length.get(), vmcs),
            VmExit::ExceptionOrNmi {
                info: Some(info), ..
            } if info.kind == InterruptionType::Nmi => {
                // "NMI exiting": a host NMI. This host has no NMI sources to serve; note it and
                // resume (the guest never saw it).
                let rip = vmcs.read(fields::GUEST_RIP)?;
                crate::println!(
                    "mini-hv: host NMI while the guest ran (guest RIP {rip:#x}); resuming"
                );
                Ok(ControlFlow::Continue(()))
            }
            VmExit::TprBelowThreshold if self.extras.is_some() => {
                if let Some(extras) = &self.extras {
                    extras.tpr_below_threshold(vmcs)?;
                }
                Ok(ControlFlow::Continue(()))
            }
            VmExit::PageModificationLogFull { .. }
                if match &self.extras {
                    Some(extras) => extras.pml_full(vmcs)?,
                    None => false,
                } =>
            {
                Ok(ControlFlow::Continue(()))
            }
            VmExit::TripleFault => {
                let rip = vmcs.read(fields::GUEST_RIP)?;
                self.uart_flush();
                crate::println!("mini-hv: the guest triple-faulted at RIP {rip:#x}; guest stopped");
                Ok(ControlFlow::Break(Leave::End(End::TripleFault { rip })))
            }
            other => {
                let rip = vmcs.read(fields::GUEST_RIP)?;
                crate::println!(
                    "mini-hv: unexpected VM exit at RIP {rip:#x}: {other}; stopping the guest"
                );
                Ok(ControlFlow::Break(Leave::End(End::Stopped)))
            }
        }
    }
}

/// The instruction length of a VMX instruction's exit.
fn vmx_length(exit: &VmExit) -> u32 {
    match exit {
        VmExit::Vmxon { length, .. }
        | VmExit::Vmxoff { length }
        | VmExit::Vmclear { length, .. }
        | VmExit::Vmptrld { length, .. }
        | VmExit::Vmptrst { length, .. }
        | VmExit::Vmread { length, .. }
        | VmExit::Vmwrite { length, .. }
        | VmExit::Vmlaunch { length }
        | VmExit::Vmresume { length }
        | VmExit::Invept { length, .. }
        | VmExit::Invvpid { length, .. }
        | VmExit::Vmfunc { length } => length.get(),
        _ => 0,
    }
}

/// MSRs the guest reads and writes without VM exits: architecturally harmless, because VM entry
/// and exit switch them (SYSENTER_*, FS/GS base; KERNEL_GS_BASE through the MSR areas) or reading
/// them is (the TSC).
pub const PASSTHROUGH_READ: &[u32] = &[
    abi::IA32_KERNEL_GS_BASE,
    IA32_TIME_STAMP_COUNTER,
    IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP,
    IA32_SYSENTER_EIP,
    IA32_FS_BASE,
    IA32_GS_BASE,
];
/// MSRs the guest writes without VM exits (see [`PASSTHROUGH_READ`]).
pub const PASSTHROUGH_WRITE: &[u32] = &[
    abi::IA32_KERNEL_GS_BASE,
    IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP,
    IA32_SYSENTER_EIP,
    IA32_FS_BASE,
    IA32_GS_BASE,
];

/// The guest's basic exit reasons the run must have seen (plus WBINVD and XSETBV when the
/// processor has them, and the wake-up's: VMX-preemption timer or external interrupt).
pub const EXPECTED_EXITS: &[u64] = &[
    reason::CPUID,
    reason::HLT,
    reason::INVD,
    reason::VMCALL,
    reason::VMXON,
    reason::CR_ACCESS,
    reason::IO,
    reason::RDMSR,
    reason::WRMSR,
    reason::EPT_VIOLATION,
];

/// L1's virtual processor as the nested emulation uses it: L2's exits that L1 does not intercept
/// go through the shared dispatcher with this vCPU's policy (its MSRs, ports, MMIO device, HLT
/// wake-up and watchdog), on VMCS02.
impl super::nested::L1Host for Vcpu {
    fn parts(&mut self) -> (&mut GuestRegisters, &GuestMemory) {
        (&mut self.regs, &self.mem)
    }

    fn scratch_msr(&mut self) -> &mut u64 {
        &mut self.scratch_msr
    }

    fn kernel_gs_base_area(&self) -> Option<&'static MsrArea<1>> {
        self.guest_msrs
    }

    fn l2_exit(&mut self, exit: VmExit, vmcs: &mut Vmcs<'_>) -> Result<ControlFlow<()>, VmFail> {
        dispatch::dispatch(self, exit, vmcs, &mut probe::Off).map(|f| f.map_break(|_| ()))
    }
}
