//! Nested VMX: for a VM exit of L2 (the guest of a guest hypervisor L1), whether L1 asked for
//! it, decided from VMCS12's controls as SDM Vol. 3C, chapter 26 ("VMX Non-Root Operation")
//! says the processor decides whether an instruction or event causes a VM exit.
//!
//! The VMCS that really ran L2 (VMCS02, `vmcs::nested::build_vmcs02`) has every exit condition
//! that L1 or L0 wanted. [`exit_owner`] tells which of them this exit was: [`ExitOwner::L1`]
//! when VMCS12 would have caused it on a real processor (L0 then reflects it with
//! `vmcs::nested::L1VmxState::reflect_exit`), [`ExitOwner::L0`] when only L0 wanted it (L0
//! handles it for L2 as it would for L1, whose MSRs, ports and interrupts L2 shares), and
//! [`ExitOwner::Ept12`] for an EPT violation or misconfiguration while L1 uses EPT, which only a
//! walk of L1's EPT tables (EPT12) can attribute.
//!
//! The structures VMCS12 points to (MSR and I/O bitmaps) are read from L1's memory; a bitmap
//! outside it reads as all ones, as unbacked physical memory does, so the access exits to L1.
//!
//! ```
//! use exits::nested::{ExitOwner, L2Registers, exit_owner};
//! use exits::{RawExitInfo, VmExit};
//! use vmcs::check::NoMemory;
//! use vmcs::{SoftVmcs, VmcsWrite, fields};
//! use vmx_caps::PrimaryControls;
//! use vmx_core::GuestRegisters;
//!
//! // VMCS12: HLT exiting, nothing else.
//! let mut vmcs12 = SoftVmcs::all_fields();
//! vmcs12.write(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, PrimaryControls::HLT_EXITING)?;
//! let frame = GuestRegisters::new();
//! let regs = L2Registers { frame: &frame, rsp: 0, ia32_xss: 0 };
//! let exit = |reason| VmExit::from_raw(&RawExitInfo { reason, instruction_length: 1, ..Default::default() });
//! // HLT (12) is L1's; RDTSC (16) was L0's own intercept; CPUID (10) always exits to L1.
//! assert_eq!(exit_owner(&exit(12), &vmcs12, &mut NoMemory, &regs, false)?, ExitOwner::L1);
//! assert_eq!(exit_owner(&exit(16), &vmcs12, &mut NoMemory, &regs, false)?, ExitOwner::L0);
//! assert_eq!(exit_owner(&exit(10), &vmcs12, &mut NoMemory, &regs, false)?, ExitOwner::L1);
//! # Ok::<(), vmx_core::VmFail>(())
//! ```

use vmcs::check::PhysMemory;
use vmcs::structures::{MsrAccess, MsrBitmap};
use vmcs::{InterruptionType, VmcsRead, fields};
use vmx_caps::{PinBasedControls, PrimaryControls, SecondaryControls};
use vmx_core::{GpReg, GuestRegisters, VmFail};

use crate::exit::VmExit;
use crate::qualification::{CrAccessQualification, CrAccessType};

/// Who an exit of L2 belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ExitOwner {
    /// VMCS12 causes this exit: it is reflected to L1.
    L1,
    /// Only L0 wanted this exit (or it concerns L0's hardware: physical interrupts, SMIs,
    /// INIT/SIPI, a failed entry of VMCS02): L0 handles it and resumes L2.
    L0,
    /// An EPT violation or misconfiguration while L1 uses EPT: L0 walks EPT12 for the
    /// guest-physical address; a fault there is L1's (reflected as the matching exit),
    /// otherwise EPT02 lacked a translation L0 fills.
    Ept12,
}

/// The registers of L2 some decisions need.
#[derive(Debug, Clone, Copy)]
pub struct L2Registers<'a> {
    /// L2's general-purpose registers as the trampoline saved them (RCX for RDMSR/WRMSR, the
    /// source of MOV to CR, EDX:EAX for XSAVES/XRSTORS).
    pub frame: &'a GuestRegisters,
    /// L2's RSP (VMCS02's GUEST_RSP), for MOV to CR from RSP.
    pub rsp: u64,
    /// L2's IA32_XSS, for XSAVES/XRSTORS.
    pub ia32_xss: u64,
}

impl L2Registers<'_> {
    fn gpr(&self, reg: GpReg) -> u64 {
        self.frame.gpr(reg).unwrap_or(self.rsp)
    }
}

/// The VMCS12 fields the decisions read.
struct Vmcs12View {
    pin: PinBasedControls,
    proc: PrimaryControls,
    proc2: SecondaryControls,
}

impl Vmcs12View {
    fn read(v: &(impl VmcsRead + ?Sized)) -> Result<Self, VmFail> {
        let c = v.read_controls()?;
        Ok(Self {
            pin: c.pin,
            proc: c.proc,
            proc2: c.proc2,
        })
    }
}

/// Reads one byte of L1's memory; outside it, all ones.
fn byte(mem: &mut (impl PhysMemory + ?Sized), address: u64) -> u8 {
    let mut b = [0xffu8];
    if mem.read(address, &mut b).is_err() {
        0xff
    } else {
        b[0]
    }
}

/// Whether the exit of L2 described by `exit` is one VMCS12 (`vmcs12`, L1's current VMCS)
/// causes, reading VMCS12's bitmaps from L1's memory `mem` and the operands from `regs`.
/// `l1_timer` says whether the VMX-preemption timer that expired was L1's
/// (`vmcs::nested::Vmcs02::timer_is_l1s`).
///
/// The rules, by exit (SDM 26.1 and 26.2):
/// - exceptions: the exception bitmap, #PF filtered by the page-fault error-code mask and match
///   (bit 14 decides when `error code AND mask = match`, its inverse otherwise); NMIs: "NMI
///   exiting"; physical external interrupts, SMIs, INIT and SIPI: L0's;
/// - unconditional exits (triple fault, task switch, CPUID, GETSEC, INVD, XSETBV, RSM, every VMX
///   instruction): L1's;
/// - HLT, INVLPG, RDPMC, RDTSC, MWAIT, MONITOR, PAUSE (with PAUSE-loop exiting), WBINVD,
///   RDRAND, RDSEED, descriptor-table instructions, MOV DR, the interrupt and NMI windows, the
///   monitor trap flag: their VMCS12 control; RDTSCP: "RDTSC exiting" with "enable RDTSCP";
///   INVPCID: "INVLPG exiting" with "enable INVPCID";
///   XSAVES/XRSTORS: EDX:EAX AND IA32_XSS AND the XSS-exiting bitmap not 0;
/// - MOV to CR0/CR4: a bit set in the guest/host mask whose source bit differs from the read
///   shadow; CLTS: CR0.TS owned and shadowed 1; LMSW: PE owned, shadowed 0 and set by the
///   source, or one of MP, EM, TS owned and different from the shadow; MOV to CR3: "CR3-load
///   exiting" unless the value is one of the first CR3-target-count target values; MOV from
///   CR3, to/from CR8: their controls;
/// - I/O: "use I/O bitmaps" (any bit of the accessed ports, or a wrap past FFFFH), else
///   "unconditional I/O exiting"; RDMSR/WRMSR and the immediate forms of RDMSR/WRMSRNS
///   (reasons 84 and 85, MSR index in the exit qualification): without "use MSR bitmaps"
///   always, else an MSR outside the bitmap ranges or its bit;
/// - EPT violations and misconfigurations: [`ExitOwner::Ept12`] when VMCS12 enables EPT;
/// - everything VMCS12 cannot enable under `vmcs::nested::VMCS02_CONTROLS` (APIC
///   virtualization, PML, ENCLS, ...) and failed entries of VMCS02: L0's.
///
/// # Errors
///
/// [`VmFail`] when a VMCS12 field the decision needs cannot be read.
pub fn exit_owner(
    exit: &VmExit,
    vmcs12: &(impl VmcsRead + ?Sized),
    mem: &mut (impl PhysMemory + ?Sized),
    regs: &L2Registers<'_>,
    l1_timer: bool,
) -> Result<ExitOwner, VmFail> {
    use ExitOwner::{L0, L1};
    let v = Vmcs12View::read(vmcs12)?;
    let proc = |c: PrimaryControls| if v.proc.contains(c) { L1 } else { L0 };
    let proc2 = |c: SecondaryControls| if v.proc2.contains(c) { L1 } else { L0 };
    Ok(match exit {
        VmExit::ExceptionOrNmi {
            info: Some(info),
            error_code,
            ..
        } => match info.kind {
            InterruptionType::Nmi => {
                if v.pin.contains(PinBasedControls::NMI_EXITING) {
                    L1
                } else {
                    L0
                }
            }
            InterruptionType::HardwareException
            | InterruptionType::SoftwareException
            | InterruptionType::PrivilegedSoftwareException => {
                exception_owner(vmcs12, info.vector, error_code.unwrap_or(0))?
            }
            _ => L0,
        },
        VmExit::ExceptionOrNmi { info: None, .. } => L0,
        VmExit::ExternalInterrupt { .. }
        | VmExit::InitSignal
        | VmExit::StartupIpi { .. }
        | VmExit::IoSmi { .. }
        | VmExit::OtherSmi => L0,
        VmExit::TripleFault
        | VmExit::TaskSwitch { .. }
        | VmExit::Cpuid { .. }
        | VmExit::Getsec { .. }
        | VmExit::Invd { .. }
        | VmExit::Rsm { .. }
        | VmExit::Xsetbv { .. }
        | VmExit::Vmcall { .. }
        | VmExit::Vmclear { .. }
        | VmExit::Vmlaunch { .. }
        | VmExit::Vmptrld { .. }
        | VmExit::Vmptrst { .. }
        | VmExit::Vmread { .. }
        | VmExit::Vmresume { .. }
        | VmExit::Vmwrite { .. }
        | VmExit::Vmxoff { .. }
        | VmExit::Vmxon { .. }
        | VmExit::Invept { .. }
        | VmExit::Invvpid { .. }
        | VmExit::Vmfunc { .. } => L1,
        VmExit::InterruptWindow => proc(PrimaryControls::INTERRUPT_WINDOW_EXITING),
        VmExit::NmiWindow => proc(PrimaryControls::NMI_WINDOW_EXITING),
        VmExit::Hlt { .. } => proc(PrimaryControls::HLT_EXITING),
        VmExit::Invlpg { .. } => proc(PrimaryControls::INVLPG_EXITING),
        VmExit::Rdpmc { .. } => proc(PrimaryControls::RDPMC_EXITING),
        VmExit::Rdtsc { .. } => proc(PrimaryControls::RDTSC_EXITING),
        // SDM 26.1.3: RDTSCP exits only if "RDTSC exiting" and "enable RDTSCP" are both 1 (with
        // "enable RDTSCP" 0 it raises #UD instead).
        VmExit::Rdtscp { .. } => {
            if v.proc.contains(PrimaryControls::RDTSC_EXITING)
                && v.proc2.contains(SecondaryControls::ENABLE_RDTSCP)
            {
                L1
            } else {
                L0
            }
        }
        VmExit::Mwait { .. } => proc(PrimaryControls::MWAIT_EXITING),
        VmExit::Monitor { .. } => proc(PrimaryControls::MONITOR_EXITING),
        VmExit::MonitorTrapFlag => proc(PrimaryControls::MONITOR_TRAP_FLAG),
        VmExit::MovDr { .. } => proc(PrimaryControls::MOV_DR_EXITING),
        VmExit::Pause { .. } => {
            if v.proc.contains(PrimaryControls::PAUSE_EXITING)
                || v.proc2.contains(SecondaryControls::PAUSE_LOOP_EXITING)
            {
                L1
            } else {
                L0
            }
        }
        // APIC virtualization (SDM Vol. 3C, 30.1.2, 30.4.3, 30.5): only VMCS12's controls enable
        // it in VMCS02, so these exits are L1's wherever its controls allow them.
        VmExit::TprBelowThreshold => proc(PrimaryControls::USE_TPR_SHADOW),
        VmExit::ApicAccess { .. } => proc2(SecondaryControls::VIRTUALIZE_APIC_ACCESSES),
        VmExit::VirtualizedEoi { .. } => proc2(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
        VmExit::ApicWrite { .. } => {
            if v.proc2.intersects(
                SecondaryControls::VIRTUALIZE_APIC_ACCESSES
                    | SecondaryControls::VIRTUALIZE_X2APIC_MODE
                    | SecondaryControls::APIC_REGISTER_VIRTUALIZATION
                    | SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY,
            ) {
                L1
            } else {
                L0
            }
        }
        VmExit::Wbinvd { .. } => proc2(SecondaryControls::WBINVD_EXITING),
        VmExit::Rdrand { .. } => proc2(SecondaryControls::RDRAND_EXITING),
        VmExit::Rdseed { .. } => proc2(SecondaryControls::RDSEED_EXITING),
        VmExit::GdtrIdtrAccess { .. } | VmExit::LdtrTrAccess { .. } => {
            proc2(SecondaryControls::DESCRIPTOR_TABLE_EXITING)
        }
        VmExit::Invpcid { .. } => {
            if v.proc.contains(PrimaryControls::INVLPG_EXITING)
                && v.proc2.contains(SecondaryControls::ENABLE_INVPCID)
            {
                L1
            } else {
                L0
            }
        }
        VmExit::Xsaves { .. } | VmExit::Xrstors { .. } => {
            let requested = (regs.gpr(GpReg::Rdx) << 32) | (regs.gpr(GpReg::Rax) & 0xffff_ffff);
            if v.proc2.contains(SecondaryControls::ENABLE_XSAVES_XRSTORS)
                && requested
                    & regs.ia32_xss
                    & vmcs12.read_raw(fields::XSS_EXITING_BITMAP.encoding())?
                    != 0
            {
                L1
            } else {
                L0
            }
        }
        VmExit::ControlRegisterAccess { qualification, .. } => {
            cr_owner(vmcs12, &v, qualification, regs)?
        }
        VmExit::IoInstruction { qualification, .. } => {
            let size = qualification.size.bytes().unwrap_or(4);
            io_owner(vmcs12, &v, mem, qualification.port, size)?
        }
        VmExit::Rdmsr { .. } => msr_owner(
            vmcs12,
            &v,
            mem,
            regs.gpr(GpReg::Rcx) as u32,
            MsrAccess::Read,
        )?,
        VmExit::Wrmsr { .. } => msr_owner(
            vmcs12,
            &v,
            mem,
            regs.gpr(GpReg::Rcx) as u32,
            MsrAccess::Write,
        )?,
        // SDM 26.1.3: the immediate forms of RDMSR and WRMSRNS (exit reasons 84 and 85) consult
        // the MSR bitmaps as RDMSR and WRMSR do, for the MSR index of the immediate operand (the
        // exit qualification) instead of ECX.
        VmExit::RdmsrImmediate { msr, .. } => msr_owner(vmcs12, &v, mem, *msr, MsrAccess::Read)?,
        VmExit::WrmsrnsImmediate { msr, .. } => msr_owner(vmcs12, &v, mem, *msr, MsrAccess::Write)?,
        VmExit::PreemptionTimerExpired => {
            if l1_timer
                && v.pin
                    .contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
            {
                L1
            } else {
                L0
            }
        }
        VmExit::EptViolation { .. } | VmExit::EptMisconfiguration { .. } => {
            if v.proc2.contains(SecondaryControls::ENABLE_EPT) {
                ExitOwner::Ept12
            } else {
                L0
            }
        }
        _ => L0,
    })
}

/// An exception with `vector` and `error_code` (SDM 26.2 "Other Causes of VM Exits").
fn exception_owner(
    vmcs12: &(impl VmcsRead + ?Sized),
    vector: u8,
    error_code: u32,
) -> Result<ExitOwner, VmFail> {
    let bitmap = vmcs12.read(fields::EXCEPTION_BITMAP)?;
    let mut exits = bitmap.intercepts(vector);
    if vector == 14 {
        let mask = vmcs12.read(fields::PAGE_FAULT_ERROR_CODE_MASK)?;
        let matching = vmcs12.read(fields::PAGE_FAULT_ERROR_CODE_MATCH)?;
        if error_code & mask != matching {
            exits = !exits;
        }
    }
    Ok(if exits { ExitOwner::L1 } else { ExitOwner::L0 })
}

/// A control-register access (SDM 26.1.3).
fn cr_owner(
    vmcs12: &(impl VmcsRead + ?Sized),
    v: &Vmcs12View,
    q: &CrAccessQualification,
    regs: &L2Registers<'_>,
) -> Result<ExitOwner, VmFail> {
    let raw = |f: u32| vmcs12.read_raw(f);
    let exits = match (q.access_type, q.cr) {
        (CrAccessType::MovToCr, 0) => {
            let mask = raw(fields::CR0_GUEST_HOST_MASK.encoding())?;
            let shadow = raw(fields::CR0_READ_SHADOW.encoding())?;
            (regs.gpr(q.gpr) ^ shadow) & mask != 0
        }
        (CrAccessType::MovToCr, 4) => {
            let mask = raw(fields::CR4_GUEST_HOST_MASK.encoding())?;
            let shadow = raw(fields::CR4_READ_SHADOW.encoding())?;
            (regs.gpr(q.gpr) ^ shadow) & mask != 0
        }
        (CrAccessType::MovToCr, 3) => {
            v.proc.contains(PrimaryControls::CR3_LOAD_EXITING) && {
                let value = regs.gpr(q.gpr);
                let count = raw(fields::CR3_TARGET_COUNT.encoding())?;
                let targets = [
                    fields::CR3_TARGET_VALUE_0.encoding(),
                    fields::CR3_TARGET_VALUE_1.encoding(),
                    fields::CR3_TARGET_VALUE_2.encoding(),
                    fields::CR3_TARGET_VALUE_3.encoding(),
                ];
                let mut hit = false;
                for f in targets.iter().take(count.min(4) as usize) {
                    hit |= raw(*f)? == value;
                }
                !hit
            }
        }
        (CrAccessType::MovFromCr, 3) => v.proc.contains(PrimaryControls::CR3_STORE_EXITING),
        (CrAccessType::MovToCr, 8) => v.proc.contains(PrimaryControls::CR8_LOAD_EXITING),
        (CrAccessType::MovFromCr, 8) => v.proc.contains(PrimaryControls::CR8_STORE_EXITING),
        (CrAccessType::Clts, _) => {
            const TS: u64 = 1 << 3;
            raw(fields::CR0_GUEST_HOST_MASK.encoding())? & TS != 0
                && raw(fields::CR0_READ_SHADOW.encoding())? & TS != 0
        }
        (CrAccessType::Lmsw, _) => {
            let mask = raw(fields::CR0_GUEST_HOST_MASK.encoding())?;
            let shadow = raw(fields::CR0_READ_SHADOW.encoding())?;
            let source = u64::from(q.lmsw_source);
            (mask & 1 != 0 && shadow & 1 == 0 && source & 1 != 0)
                || mask & 0xe & (source ^ shadow) != 0
        }
        _ => false,
    };
    Ok(if exits { ExitOwner::L1 } else { ExitOwner::L0 })
}

/// An I/O instruction of `size` bytes at `port` (SDM 26.1.3).
fn io_owner(
    vmcs12: &(impl VmcsRead + ?Sized),
    v: &Vmcs12View,
    mem: &mut (impl PhysMemory + ?Sized),
    port: u16,
    size: u8,
) -> Result<ExitOwner, VmFail> {
    let exits = if v.proc.contains(PrimaryControls::USE_IO_BITMAPS) {
        let last = u32::from(port) + u32::from(size.max(1)) - 1;
        if last > 0xffff {
            true
        } else {
            let a = vmcs12.read_raw(fields::ADDRESS_OF_IO_BITMAP_A.encoding())?;
            let b = vmcs12.read_raw(fields::ADDRESS_OF_IO_BITMAP_B.encoding())?;
            (u32::from(port)..=last).any(|p| {
                let base = if p >= 0x8000 { b } else { a };
                let n = u64::from(p & 0x7fff);
                byte(mem, base.wrapping_add(n / 8)) & (1 << (n % 8)) != 0
            })
        }
    } else {
        v.proc.contains(PrimaryControls::UNCONDITIONAL_IO_EXITING)
    };
    Ok(if exits { ExitOwner::L1 } else { ExitOwner::L0 })
}

/// An MSR read or write of MSR `index` (ECX for RDMSR/WRMSR, the immediate operand for the
/// immediate forms; SDM 26.1.3).
fn msr_owner(
    vmcs12: &(impl VmcsRead + ?Sized),
    v: &Vmcs12View,
    mem: &mut (impl PhysMemory + ?Sized),
    index: u32,
    access: MsrAccess,
) -> Result<ExitOwner, VmFail> {
    let exits = if v.proc.contains(PrimaryControls::USE_MSR_BITMAPS) {
        match MsrBitmap::bit_position(index, access) {
            Ok((offset, bit)) => {
                let base = vmcs12.read_raw(fields::ADDRESS_OF_MSR_BITMAPS.encoding())?;
                byte(mem, base.wrapping_add(offset as u64)) & (1 << bit) != 0
            }
            Err(_) => true,
        }
    } else {
        true
    };
    Ok(if exits { ExitOwner::L1 } else { ExitOwner::L0 })
}
