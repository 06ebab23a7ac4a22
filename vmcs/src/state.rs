//! Whole register states as values: the host-state area ([`HostState`], SDM Vol. 3C, 25.5
//! "Host-State Area") and the guest-state area's register state ([`GuestState`], 25.4
//! "Guest-State Area"), each written to the VMCS in one call, and the guest-state templates
//! every hypervisor writes by hand: the state after RESET, flat 32-bit protected mode and 64-bit
//! long mode.
//!
//! ```
//! use vmcs::{GuestState, HostState, SoftVmcs, VmcsRead, VmcsWrite, fields};
//! use vmx_caps::{ControlRequest, EntryControls, ExitControls, MsrSnapshot, SecondaryControls, VmxCapabilities};
//!
//! let mut msrs = MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
//! let caps = VmxCapabilities::read(&mut msrs).unwrap();
//! let request = ControlRequest::new()
//!     .require(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST)
//!     .require(ExitControls::HOST_ADDRESS_SPACE_SIZE)
//!     .require(EntryControls::LOAD_IA32_EFER);
//! let controls = caps.negotiate(&request).unwrap().value;
//! let mut vmcs = SoftVmcs::new(&caps);
//! vmcs.write_controls(&controls).unwrap();
//!
//! // The guest starts as after RESET: real mode at F000:FFF0 (an unrestricted guest).
//! GuestState::reset().write(&mut vmcs, &caps)?;
//! assert_eq!(vmcs.read(fields::GUEST_RIP)?, 0xfff0);
//! assert_eq!(vmcs.read(fields::GUEST_CS_BASE)?, 0xffff_0000);
//! // CR0.NE is fixed to 1 in VMX operation: the guest runs with it, but reads the reset value.
//! assert_eq!(vmcs.read(fields::CR0_READ_SHADOW)?.bits(), 0x6000_0010);
//! assert_eq!(vmcs.read(fields::GUEST_CR0)?.bits(), 0x6000_0030);
//! # Ok::<(), vmcs::GuestStateError>(())
//! ```

use vmx_caps::arch::{Cr0, Cr4, DebugCtl, Dr7, Efer, Rflags};
use vmx_caps::{
    CrUse, EntryControls, ExitControls, PrimaryControls, SecondaryControls, VmxCapabilities,
};
use vmx_core::VmFail;

use crate::access::{VmcsRead, VmcsWrite};
use crate::fields;
use crate::segment::{DescriptorTable, GuestDescriptorTable, GuestSegment, Segment};
use crate::{ActivityState, InterruptibilityState, PendingDebugExceptions, SegmentAccessRights};

/// The values of the host-state area but HOST_RSP and HOST_RIP, which the entry/exit trampoline
/// writes (SDM Vol. 3C, 25.5 "Host-State Area"): what the processor loads on every VM exit.
///
/// A plain value: build it by hand, read it back from a VMCS, or [`capture`](Self::capture) the
/// running host (x86_64 only). [`write`](Self::write) puts it into the VMCS.
///
/// ```
/// use vmcs::{HostState, SoftVmcs, VmcsRead, fields};
/// use vmx_caps::ExitControls;
/// use vmx_caps::arch::Cr0;
///
/// // On x86_64 `HostState::capture` reads the running host's values at CPL 0; here a host-state
/// // area is filled by hand, written in one call and read back. (HOST_RSP and HOST_RIP are the
/// // entry trampoline's to write.)
/// let mut vmcs = SoftVmcs::all_fields();
/// let mut host = HostState::read(&vmcs, ExitControls::empty())?;
/// host.cr0 = Cr0::PE | Cr0::NE | Cr0::PG;
/// host.cs = 0x08;
/// host.tr = 0x28;
/// host.tr_base = 0xffff_8000_0010_0000;
/// host.write(&mut vmcs)?;
/// assert_eq!(vmcs.read(fields::HOST_CS_SELECTOR)?, 0x08);
/// assert_eq!(vmcs.read(fields::HOST_TR_BASE)?, 0xffff_8000_0010_0000);
/// assert_eq!(HostState::read(&vmcs, ExitControls::empty())?, host);
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HostState {
    /// CR0.
    pub cr0: Cr0,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: Cr4,
    /// ES selector (RPL and TI must be 0).
    pub es: u16,
    /// CS selector (not 0).
    pub cs: u16,
    /// SS selector.
    pub ss: u16,
    /// DS selector.
    pub ds: u16,
    /// FS selector.
    pub fs: u16,
    /// GS selector.
    pub gs: u16,
    /// TR selector (not 0).
    pub tr: u16,
    /// FS base (`IA32_FS_BASE`).
    pub fs_base: u64,
    /// GS base (`IA32_GS_BASE`).
    pub gs_base: u64,
    /// TR base: the TSS's linear address.
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// `IA32_SYSENTER_CS`.
    pub sysenter_cs: u32,
    /// `IA32_SYSENTER_ESP`.
    pub sysenter_esp: u64,
    /// `IA32_SYSENTER_EIP`.
    pub sysenter_eip: u64,
    /// `IA32_EFER`, written to HOST_IA32_EFER when present: the "load IA32_EFER" exit control
    /// must be 1 then (the field may not exist otherwise).
    pub efer: Option<Efer>,
    /// `IA32_PAT`, written to HOST_IA32_PAT when present ("load IA32_PAT" exit control).
    pub pat: Option<u64>,
}

impl HostState {
    /// Captures the running processor's state: CR0, CR3, CR4, the segment selectors, GDTR and
    /// IDTR bases, the TR base (from TR's descriptor in the GDT), FS/GS bases and the SYSENTER
    /// MSRs; and IA32_EFER and IA32_PAT when `exit` loads them ("load IA32_EFER", "load
    /// IA32_PAT"), `None` otherwise.
    ///
    /// # Safety
    ///
    /// The caller runs at CPL 0 in 64-bit mode (MOV from CR and RDMSR fault elsewhere), the
    /// GDT's TR descriptor (16 bytes at GDTR.base + TR selector) is mapped readable at its linear
    /// address, and the processor has IA32_PAT when `exit` contains "load IA32_PAT". The value
    /// describes the processor it was captured on, at the time of capture.
    #[cfg(target_arch = "x86_64")]
    #[must_use]
    pub unsafe fn capture(exit: ExitControls) -> Self {
        use core::arch::asm;
        use vmx_caps::msr;
        let (cr0, cr3, cr4): (u64, u64, u64);
        let (es, cs, ss, ds, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
        let mut gdtr = [0u8; 10];
        let mut idtr = [0u8; 10];
        // SAFETY: CPL 0 (the caller's contract): reading control registers, segment selectors
        // and the descriptor-table registers has no side effect; SGDT and SIDT store 10 bytes
        // into the local arrays passed by address.
        unsafe {
            asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
            asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
            asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
            asm!("mov {:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
            asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags));
            asm!("mov {:x}, ss", out(reg) ss, options(nomem, nostack, preserves_flags));
            asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
            asm!("mov {:x}, fs", out(reg) fs, options(nomem, nostack, preserves_flags));
            asm!("mov {:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags));
            asm!("str {:x}", out(reg) tr, options(nomem, nostack, preserves_flags));
            asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack, preserves_flags));
            asm!("sidt [{}]", in(reg) idtr.as_mut_ptr(), options(nostack, preserves_flags));
        }
        let table_base = |bytes: [u8; 10]| {
            let mut base = [0u8; 8];
            base.copy_from_slice(&bytes[2..10]);
            u64::from_le_bytes(base)
        };
        let (gdtr_base, idtr_base) = (table_base(gdtr), table_base(idtr));
        let descriptor = gdtr_base.wrapping_add(u64::from(tr & !7)) as *const [u64; 2];
        // SAFETY: the caller guarantees the TR descriptor is mapped readable; it is 8-byte
        // aligned only if the GDT is, hence the unaligned read.
        let [low, high] = unsafe { descriptor.read_unaligned() };
        let rdmsr = |index: u32| -> u64 {
            let (lo, hi): (u32, u32);
            // SAFETY: CPL 0; every MSR read here exists on a processor with long mode (FS/GS
            // base, SYSENTER, EFER) or, for IA32_PAT, by the caller's contract.
            unsafe {
                asm!("rdmsr", in("ecx") index, out("eax") lo, out("edx") hi,
                     options(nomem, nostack, preserves_flags));
            }
            u64::from(hi) << 32 | u64::from(lo)
        };
        Self {
            cr0: Cr0::from_bits_retain(cr0),
            cr3,
            cr4: Cr4::from_bits_retain(cr4),
            es,
            cs,
            ss,
            ds,
            fs,
            gs,
            tr,
            fs_base: rdmsr(msr::IA32_FS_BASE),
            gs_base: rdmsr(msr::IA32_GS_BASE),
            tr_base: system_descriptor_base(low, high),
            gdtr_base,
            idtr_base,
            // Bits 31:0 are the MSR: the upper half is reserved.
            sysenter_cs: rdmsr(msr::IA32_SYSENTER_CS) as u32,
            sysenter_esp: rdmsr(msr::IA32_SYSENTER_ESP),
            sysenter_eip: rdmsr(msr::IA32_SYSENTER_EIP),
            efer: exit
                .contains(ExitControls::LOAD_IA32_EFER)
                .then(|| Efer::from_bits_retain(rdmsr(msr::IA32_EFER))),
            pat: exit
                .contains(ExitControls::LOAD_IA32_PAT)
                .then(|| rdmsr(msr::IA32_PAT)),
        }
    }

    /// Writes every field to the host-state area (HOST_IA32_EFER and HOST_IA32_PAT only when
    /// present); HOST_RSP and HOST_RIP are left to the trampoline.
    ///
    /// # Errors
    ///
    /// The first VMWRITE that fails.
    pub fn write<V: VmcsWrite + ?Sized>(&self, vmcs: &mut V) -> Result<(), VmFail> {
        vmcs.write(fields::HOST_CR0, self.cr0)?;
        vmcs.write(fields::HOST_CR3, self.cr3)?;
        vmcs.write(fields::HOST_CR4, self.cr4)?;
        vmcs.write(fields::HOST_ES_SELECTOR, self.es)?;
        vmcs.write(fields::HOST_CS_SELECTOR, self.cs)?;
        vmcs.write(fields::HOST_SS_SELECTOR, self.ss)?;
        vmcs.write(fields::HOST_DS_SELECTOR, self.ds)?;
        vmcs.write(fields::HOST_FS_SELECTOR, self.fs)?;
        vmcs.write(fields::HOST_GS_SELECTOR, self.gs)?;
        vmcs.write(fields::HOST_TR_SELECTOR, self.tr)?;
        vmcs.write(fields::HOST_FS_BASE, self.fs_base)?;
        vmcs.write(fields::HOST_GS_BASE, self.gs_base)?;
        vmcs.write(fields::HOST_TR_BASE, self.tr_base)?;
        vmcs.write(fields::HOST_GDTR_BASE, self.gdtr_base)?;
        vmcs.write(fields::HOST_IDTR_BASE, self.idtr_base)?;
        vmcs.write(fields::HOST_IA32_SYSENTER_CS, self.sysenter_cs)?;
        vmcs.write(fields::HOST_IA32_SYSENTER_ESP, self.sysenter_esp)?;
        vmcs.write(fields::HOST_IA32_SYSENTER_EIP, self.sysenter_eip)?;
        if let Some(efer) = self.efer {
            vmcs.write(fields::HOST_IA32_EFER, efer)?;
        }
        if let Some(pat) = self.pat {
            vmcs.write(fields::HOST_IA32_PAT, pat)?;
        }
        Ok(())
    }

    /// Reads the host-state area back; IA32_EFER and IA32_PAT only when `exit` loads them.
    ///
    /// # Errors
    ///
    /// The first VMREAD that fails.
    pub fn read<V: VmcsRead + ?Sized>(vmcs: &V, exit: ExitControls) -> Result<Self, VmFail> {
        Ok(Self {
            cr0: vmcs.read(fields::HOST_CR0)?,
            cr3: vmcs.read(fields::HOST_CR3)?,
            cr4: vmcs.read(fields::HOST_CR4)?,
            es: vmcs.read(fields::HOST_ES_SELECTOR)?,
            cs: vmcs.read(fields::HOST_CS_SELECTOR)?,
            ss: vmcs.read(fields::HOST_SS_SELECTOR)?,
            ds: vmcs.read(fields::HOST_DS_SELECTOR)?,
            fs: vmcs.read(fields::HOST_FS_SELECTOR)?,
            gs: vmcs.read(fields::HOST_GS_SELECTOR)?,
            tr: vmcs.read(fields::HOST_TR_SELECTOR)?,
            fs_base: vmcs.read(fields::HOST_FS_BASE)?,
            gs_base: vmcs.read(fields::HOST_GS_BASE)?,
            tr_base: vmcs.read(fields::HOST_TR_BASE)?,
            gdtr_base: vmcs.read(fields::HOST_GDTR_BASE)?,
            idtr_base: vmcs.read(fields::HOST_IDTR_BASE)?,
            sysenter_cs: vmcs.read(fields::HOST_IA32_SYSENTER_CS)?,
            sysenter_esp: vmcs.read(fields::HOST_IA32_SYSENTER_ESP)?,
            sysenter_eip: vmcs.read(fields::HOST_IA32_SYSENTER_EIP)?,
            efer: if exit.contains(ExitControls::LOAD_IA32_EFER) {
                Some(vmcs.read(fields::HOST_IA32_EFER)?)
            } else {
                None
            },
            pat: if exit.contains(ExitControls::LOAD_IA32_PAT) {
                Some(vmcs.read(fields::HOST_IA32_PAT)?)
            } else {
                None
            },
        })
    }
}

/// The base address of a 16-byte system-segment descriptor in IA-32e mode (an LDT or TSS
/// descriptor; SDM Vol. 3A, 8.2.3 "TSS Descriptor in 64-bit mode", Figure 8-4): bits 15:0 of the
/// base in bits 31:16 of the low quadword, bits 23:16 in bits 39:32, bits 31:24 in bits 63:56,
/// bits 63:32 in the low half of the high quadword.
#[must_use]
pub const fn system_descriptor_base(low: u64, high: u64) -> u64 {
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}

/// The register state of the guest-state area (SDM Vol. 3C, 25.4.1 "Guest Register State") and
/// the non-register state a fresh guest starts with (25.4.2): everything a VM entry loads into
/// the processor, as one value.
///
/// CR0 and CR4 hold the values the guest should see. [`write`](Self::write) puts them into the
/// read shadows and runs the guest with the VMX-fixed bits applied
/// ([`VmxCapabilities::cr0_fixed_bits`], [`VmxCapabilities::cr4_fixed_bits`]); a hypervisor that
/// wants the guest to read its own values owns the forced bits in the guest/host masks.
///
/// ```
/// use vmcs::{GuestState, SegmentAccessRights, SoftVmcs, VmcsRead, fields};
/// use vmx_caps::arch::{Cr0, Efer};
/// use vmx_caps::{MsrSnapshot, VmxCapabilities};
///
/// let dump = include_str!("../../vmx-caps/testdata/tigerlake.msr");
/// let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(dump)?)?;
/// // A 64-bit guest starting at 0x10_0000 with its page tables at 0x1000.
/// let state = GuestState::long_mode_64(0x10_0000, 0x1000);
/// assert!(state.cr0.contains(Cr0::PE | Cr0::PG) && state.efer.contains(Efer::LMA | Efer::LME));
/// assert_eq!(state.cs.access_rights, SegmentAccessRights::CODE_64);
/// let mut vmcs = SoftVmcs::new(&caps);
/// state.write(&mut vmcs, &caps)?;
/// assert_eq!(vmcs.read(fields::GUEST_RIP)?, 0x10_0000);
/// assert_eq!(vmcs.read(fields::CR0_READ_SHADOW)?, state.cr0);
/// // The guest runs with the VMX-fixed CR0 bits applied (NE among them).
/// assert!(vmcs.read(fields::GUEST_CR0)?.contains(Cr0::NE));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GuestState {
    /// CR0 as the guest sees it.
    pub cr0: Cr0,
    /// CR3.
    pub cr3: u64,
    /// CR4 as the guest sees it.
    pub cr4: Cr4,
    /// DR7.
    pub dr7: Dr7,
    /// RSP.
    pub rsp: u64,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: Rflags,
    /// ES.
    pub es: Segment,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// LDTR.
    pub ldtr: Segment,
    /// TR.
    pub tr: Segment,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// IA32_EFER; LMA and LME must match IA-32e mode (CR0.PG with LME). Written when the
    /// "load IA32_EFER" entry control is 1; otherwise VM entry derives LMA and LME from the
    /// "IA-32e mode guest" control, which [`write`](Self::write) sets from LMA.
    pub efer: Efer,
    /// IA32_DEBUGCTL.
    pub debugctl: DebugCtl,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// Interruptibility state.
    pub interruptibility: InterruptibilityState,
    /// Activity state.
    pub activity: ActivityState,
    /// Pending debug exceptions.
    pub pending_debug_exceptions: PendingDebugExceptions,
}

/// Why [`GuestState::write`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestStateError {
    /// The state has CR0.PE = 0 or CR0.PG = 0, which VM entry accepts only with the
    /// "unrestricted guest" control (SDM Vol. 3C, 27.3.1.1), and that control is 0.
    #[error(
        "CR0 {cr0:#x} has PE or PG clear: the \"unrestricted guest\" control must be 1 (SDM 27.3.1.1)"
    )]
    UnrestrictedGuestRequired {
        /// The CR0 value.
        cr0: u64,
    },
    /// A VMREAD or VMWRITE failed.
    #[error(transparent)]
    Vmcs(#[from] VmFail),
}

/// A segment with a zero base.
const fn segment(selector: u16, limit: u32, access_rights: SegmentAccessRights) -> Segment {
    Segment {
        selector,
        base: 0,
        limit,
        access_rights,
    }
}

/// The LDTR of every template: unusable.
const UNUSABLE: Segment = segment(0, 0, SegmentAccessRights::UNUSABLE_SEGMENT);

/// The state every template starts from: the reset values of the registers (CR0, CR4, IA32_EFER,
/// RFLAGS, DR7, IA32_DEBUGCTL, SYSENTER MSRs, RIP 0), no blocking, active, nothing pending, with
/// these segments (`data` in every data segment register) and descriptor tables.
const fn template(
    code: Segment,
    data: Segment,
    tr: Segment,
    tables: DescriptorTable,
) -> GuestState {
    GuestState {
        cr0: Cr0::RESET,
        cr3: 0,
        cr4: Cr4::RESET,
        dr7: Dr7::RESET,
        rsp: 0,
        rip: 0,
        rflags: Rflags::RESET,
        es: data,
        cs: code,
        ss: data,
        ds: data,
        fs: data,
        gs: data,
        ldtr: UNUSABLE,
        tr,
        gdtr: tables,
        idtr: tables,
        efer: Efer::RESET,
        debugctl: DebugCtl::empty(),
        sysenter_cs: 0,
        sysenter_esp: 0,
        sysenter_eip: 0,
        interruptibility: InterruptibilityState::empty(),
        activity: ActivityState::Active,
        pending_debug_exceptions: PendingDebugExceptions::empty(),
    }
}

impl GuestState {
    /// The state after RESET (SDM Vol. 3A, 10.1.1 "Processor State After Reset", Table 10-1):
    /// real mode, CR0 60000010H, CS selector F000H with base FFFF0000H, RIP FFF0H, every other
    /// segment selector and base 0, every limit FFFFH, GDTR/IDTR base 0 limit FFFFH, RFLAGS 2,
    /// DR7 400H, IA32_EFER 0.
    ///
    /// The unrestricted-guest freedoms it needs and takes: CR0.PE = CR0.PG = 0 (the "unrestricted
    /// guest" control), and segments whose access rights are those of a 16-bit real-mode segment
    /// rather than the virtual-8086 ones (SDM Vol. 3C, 27.3.1.2). LDTR is an LDT and TR a busy
    /// 32-bit TSS, the types VM entry requires of them (Table 10-1 only says "present, R/W";
    /// neither is used in real mode).
    #[must_use]
    pub const fn reset() -> Self {
        let mut state = template(
            Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                limit: 0xffff,
                access_rights: SegmentAccessRights::CODE_16,
            },
            segment(0, 0xffff, SegmentAccessRights::DATA_16),
            segment(0, 0xffff, SegmentAccessRights::TSS_BUSY),
            DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
        );
        state.ldtr = segment(0, 0xffff, SegmentAccessRights::LDT);
        state.rip = 0xfff0;
        state
    }

    /// Flat 32-bit protected mode without paging, as a boot loader leaves it (e.g. the Linux
    /// 32-bit boot protocol): CR0 PE|ET, code selector 08H and data selector 10H over the whole 4
    /// GiB ([`SegmentAccessRights::CODE_32`], [`SegmentAccessRights::DATA_32`]), TR selector 18H
    /// a busy 32-bit TSS of 68H bytes at 0, GDTR/IDTR empty, interrupts off, at `rip`. Paging off
    /// needs the "unrestricted guest" control.
    #[must_use]
    pub const fn protected_mode_32(rip: u64) -> Self {
        let mut state = template(
            segment(0x08, 0xffff_ffff, SegmentAccessRights::CODE_32),
            segment(0x10, 0xffff_ffff, SegmentAccessRights::DATA_32),
            segment(0x18, 0x67, SegmentAccessRights::TSS_BUSY),
            DescriptorTable { base: 0, limit: 0 },
        );
        state.cr0 = Cr0::from_bits_retain(Cr0::PE.bits() | Cr0::ET.bits());
        state.rip = rip;
        state
    }

    /// 64-bit long mode with 4-level paging rooted at `cr3`: CR0 PE|ET|NE|WP|PG, CR4 PAE,
    /// IA32_EFER LME|LMA, code selector 08H 64-bit ([`SegmentAccessRights::CODE_64`]), data
    /// selector 10H flat, TR selector 18H a busy 64-bit TSS of 68H bytes at 0, GDTR/IDTR empty,
    /// interrupts off, at `rip`.
    #[must_use]
    pub const fn long_mode_64(rip: u64, cr3: u64) -> Self {
        let mut state = template(
            segment(0x08, 0xffff_ffff, SegmentAccessRights::CODE_64),
            segment(0x10, 0xffff_ffff, SegmentAccessRights::DATA_32),
            segment(0x18, 0x67, SegmentAccessRights::TSS_BUSY),
            DescriptorTable { base: 0, limit: 0 },
        );
        state.cr0 = Cr0::from_bits_retain(
            Cr0::PE.bits() | Cr0::ET.bits() | Cr0::NE.bits() | Cr0::WP.bits() | Cr0::PG.bits(),
        );
        state.cr3 = cr3;
        state.cr4 = Cr4::PAE;
        state.efer = Efer::from_bits_retain(Efer::LME.bits() | Efer::LMA.bits());
        state.rip = rip;
        state
    }

    /// Writes the state to the guest-state area in one call: every register field, CR0 and CR4
    /// with the VMX-fixed bits of `caps` applied (the values given go to CR0_READ_SHADOW and
    /// CR4_READ_SHADOW), the "IA-32e mode guest" entry control from IA32_EFER.LMA, IA32_EFER when
    /// "load IA32_EFER" is 1, and the VMCS link pointer FFFFFFFF_FFFFFFFFH (no shadow VMCS). Reads the controls from the VMCS, so write
    /// them first.
    ///
    /// # Errors
    ///
    /// [`GuestStateError::UnrestrictedGuestRequired`] for a state with CR0.PE or CR0.PG clear
    /// when "unrestricted guest" is 0 (nothing is written then); the first VMREAD or VMWRITE that
    /// fails.
    pub fn write<V: VmcsWrite + ?Sized>(
        &self,
        vmcs: &mut V,
        caps: &VmxCapabilities,
    ) -> Result<(), GuestStateError> {
        let proc = vmcs.read(fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?;
        let unrestricted_guest = proc.contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
            && vmcs
                .read(fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS)?
                .contains(SecondaryControls::UNRESTRICTED_GUEST);
        if !unrestricted_guest && !self.cr0.contains(Cr0::PE | Cr0::PG) {
            return Err(GuestStateError::UnrestrictedGuestRequired {
                cr0: self.cr0.bits(),
            });
        }
        let cr0 = caps
            .cr0_fixed_bits(CrUse::Guest { unrestricted_guest })
            .apply(self.cr0);
        let cr4 = caps.cr4_fixed_bits().apply(self.cr4);
        vmcs.write(fields::GUEST_CR0, cr0)?;
        vmcs.write(fields::CR0_READ_SHADOW, self.cr0)?;
        vmcs.write(fields::GUEST_CR3, self.cr3)?;
        vmcs.write(fields::GUEST_CR4, cr4)?;
        vmcs.write(fields::CR4_READ_SHADOW, self.cr4)?;
        vmcs.write(fields::GUEST_DR7, self.dr7)?;
        vmcs.write(fields::GUEST_RSP, self.rsp)?;
        vmcs.write(fields::GUEST_RIP, self.rip)?;
        vmcs.write(fields::GUEST_RFLAGS, self.rflags)?;
        for (seg, value) in [
            (GuestSegment::Es, self.es),
            (GuestSegment::Cs, self.cs),
            (GuestSegment::Ss, self.ss),
            (GuestSegment::Ds, self.ds),
            (GuestSegment::Fs, self.fs),
            (GuestSegment::Gs, self.gs),
            (GuestSegment::Ldtr, self.ldtr),
            (GuestSegment::Tr, self.tr),
        ] {
            vmcs.write_guest_segment(seg, value)?;
        }
        vmcs.write_guest_descriptor_table(GuestDescriptorTable::Gdtr, self.gdtr)?;
        vmcs.write_guest_descriptor_table(GuestDescriptorTable::Idtr, self.idtr)?;
        vmcs.write(fields::GUEST_IA32_SYSENTER_CS, self.sysenter_cs)?;
        vmcs.write(fields::GUEST_IA32_SYSENTER_ESP, self.sysenter_esp)?;
        vmcs.write(fields::GUEST_IA32_SYSENTER_EIP, self.sysenter_eip)?;
        let entry = vmcs.read(fields::VM_ENTRY_CONTROLS)?;
        let mut new_entry = entry;
        new_entry.set(
            EntryControls::IA32E_MODE_GUEST,
            self.efer.contains(Efer::LMA),
        );
        if new_entry != entry {
            vmcs.write(fields::VM_ENTRY_CONTROLS, new_entry)?;
        }
        if entry.contains(EntryControls::LOAD_IA32_EFER) {
            vmcs.write(fields::GUEST_IA32_EFER, self.efer)?;
        }
        vmcs.write(fields::GUEST_IA32_DEBUGCTL, self.debugctl)?;
        vmcs.write(fields::GUEST_INTERRUPTIBILITY_STATE, self.interruptibility)?;
        vmcs.write(fields::GUEST_ACTIVITY_STATE, self.activity)?;
        vmcs.write(
            fields::GUEST_PENDING_DEBUG_EXCEPTIONS,
            self.pending_debug_exceptions,
        )?;
        vmcs.write(fields::VMCS_LINK_POINTER, u64::MAX)?;
        Ok(())
    }
}
