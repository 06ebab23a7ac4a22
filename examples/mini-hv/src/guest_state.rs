//! What the two guests (the kernel's test guest and its Linux guest) share: the CR0/CR4 ownership
//! policy, the guest-state fields both start with, and the exit-handling steps that are the same for
//! both (MOV to CR0/CR4, XSETBV validation). Advancing RIP and injecting exceptions are the `exits`
//! crate's ([`exits::complete`], [`exits::inject`]).

use exits::VmExit;
use vmcs::{GuestState, GuestStateError, VmcsRead, VmcsWrite, fields};
use vmx_caps::arch::{Cr0, Cr4, Efer, Xcr0};
use vmx_caps::{CrFixedBits, CrUse, EntryControls, FixedBits, VmxCapabilities};
use vmx_core::{GuestRegisters, VmFail};

/// Why a MOV to CR0 or CR4 raises #GP(0): the conditions of the SDM's "MOV—Move to/from Control
/// Registers" (Vol. 2B; Protected Mode, Compatibility Mode and 64-Bit Mode Exceptions) that a
/// guest at CPL 0 can meet (the CPL check comes before the VM exit), with the rules they refer to
/// in Vol. 3A (2.5 "Control Registers", 4.1.2 "Paging-Mode Enabling", 4.4.1 "PDPTE Registers",
/// 4.10.1 "Process-Context Identifiers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrFault {
    /// MOV to CR0 in 64-bit mode with a 1 in bits 63:32 (reserved).
    Cr0HighBits,
    /// CR0.PG = 1 with CR0.PE = 0.
    PagingWithoutProtection,
    /// CR0.NW = 1 with CR0.CD = 0.
    NotWriteThroughWithoutCacheDisable,
    /// Setting CR0.PG while IA32_EFER.LME = 1 and CR4.PAE = 0.
    LongModeWithoutPae,
    /// Clearing CR0.PG in 64-bit mode.
    ClearPagingIn64BitMode,
    /// Clearing CR0.PG while CR4.PCIDE = 1.
    ClearPagingWithPcide,
    /// Clearing CR0.WP while CR4.CET = 1.
    ClearWriteProtectWithCet,
    /// A 1 in a reserved bit of CR4 (bits IA32_VMX_CR4_FIXED1 reports 0, and VMXE and SMXE, which
    /// the guest's CPUID hides); carries those bits.
    Cr4Reserved(Cr4),
    /// Clearing CR4.PAE while IA-32e mode is active (leaving IA-32e mode that way).
    ClearPaeInIa32eMode,
    /// Setting CR4.PCIDE outside IA-32e mode.
    PcideOutsideIa32eMode,
    /// Changing CR4.PCIDE from 0 to 1 while CR3\[11:0\] is not 0.
    PcideWithNonzeroPcid,
    /// Changing CR4.LA57 while IA-32e mode is active.
    La57ChangeInIa32eMode,
    /// Setting CR4.CET while CR0.WP = 0.
    CetWithoutWriteProtect,
    /// The write loads the PDPTEs (PAE paging) and PDPTE `index`, present, has a reserved bit set.
    PdpteReserved {
        /// 0 to 3.
        index: u8,
        /// The entry.
        entry: u64,
    },
}

impl core::fmt::Display for CrFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Cr0HighBits => f.write_str("CR0 bits 63:32 set"),
            Self::PagingWithoutProtection => f.write_str("CR0.PG set without CR0.PE"),
            Self::NotWriteThroughWithoutCacheDisable => f.write_str("CR0.NW set without CR0.CD"),
            Self::LongModeWithoutPae => {
                f.write_str("CR0.PG set with IA32_EFER.LME = 1 and CR4.PAE = 0")
            }
            Self::ClearPagingIn64BitMode => f.write_str("CR0.PG cleared in 64-bit mode"),
            Self::ClearPagingWithPcide => f.write_str("CR0.PG cleared with CR4.PCIDE = 1"),
            Self::ClearWriteProtectWithCet => f.write_str("CR0.WP cleared with CR4.CET = 1"),
            Self::Cr4Reserved(bits) => write!(f, "reserved CR4 bits {:#x} set", bits.bits()),
            Self::ClearPaeInIa32eMode => f.write_str("CR4.PAE cleared in IA-32e mode"),
            Self::PcideOutsideIa32eMode => f.write_str("CR4.PCIDE set outside IA-32e mode"),
            Self::PcideWithNonzeroPcid => f.write_str("CR4.PCIDE set with CR3[11:0] != 0"),
            Self::La57ChangeInIa32eMode => f.write_str("CR4.LA57 changed in IA-32e mode"),
            Self::CetWithoutWriteProtect => f.write_str("CR4.CET set with CR0.WP = 0"),
            Self::PdpteReserved { index, entry } => {
                write!(f, "PDPTE{index} {entry:#x} has reserved bits set")
            }
        }
    }
}

/// Why a MOV to CR0 or CR4 was not completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrWriteError {
    /// The instruction raises #GP(0); nothing was changed.
    Fault(CrFault),
    /// The write loads the PDPTEs (PAE paging) and the page-directory-pointer table at this
    /// guest-physical address is not guest memory the hypervisor can read.
    PdptNotReadable(u64),
    /// A VMREAD or VMWRITE failed.
    Vmcs(VmFail),
}

impl From<VmFail> for CrWriteError {
    fn from(fail: VmFail) -> Self {
        Self::Vmcs(fail)
    }
}

impl From<CrFault> for CrWriteError {
    fn from(fault: CrFault) -> Self {
        Self::Fault(fault)
    }
}

/// The guest's view of the registers the MOV to CR0/CR4 rules depend on.
struct GuestControl {
    cr0: Cr0,
    cr3: u64,
    cr4: Cr4,
    efer: Efer,
    /// IA-32e mode active and CS.L = 1.
    in_64bit_mode: bool,
}

impl GuestControl {
    /// The value a MOV to CR0/CR4 writes from register value `value`: all 64 bits in 64-bit mode,
    /// the low 32 bits elsewhere (the operand size is 32 bits outside 64-bit mode).
    fn operand(&self, value: u64) -> u64 {
        if self.in_64bit_mode {
            value
        } else {
            value & 0xffff_ffff
        }
    }
}

/// The CR0 and CR4 fixed bits (IA32_VMX_CR0_FIXED0/1, IA32_VMX_CR4_FIXED0/1) that decide which
/// control-register bits the host owns, and MAXPHYADDR (for the PDPTEs' reserved bits).
#[derive(Clone, Copy)]
pub struct CrPolicy {
    /// IA32_VMX_CR0_FIXED0 and IA32_VMX_CR0_FIXED1.
    pub cr0_fixed: FixedBits,
    /// IA32_VMX_CR4_FIXED0 and IA32_VMX_CR4_FIXED1.
    pub cr4_fixed: FixedBits,
    /// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\]).
    pub maxphyaddr: u8,
    /// The guest is offered VMX (nested VMX): CR4.VMXE is its to set (the read shadow keeps
    /// its value; the real CR4 has VMXE anyway).
    pub vmx_exposed: bool,
}

impl CrPolicy {
    /// The CR0 fixed bits of an unrestricted guest (PE, PG, NW and CD free).
    fn cr0_fixed(self) -> CrFixedBits<Cr0> {
        CrFixedBits::<Cr0>::cr0(
            &self.cr0_fixed,
            CrUse::Guest {
                unrestricted_guest: true,
            },
        )
    }

    /// The CR4 fixed bits.
    fn cr4_fixed(self) -> CrFixedBits<Cr4> {
        CrFixedBits::<Cr4>::cr4(&self.cr4_fixed)
    }

    /// The mask of CR0 bits the host owns: CD and NW (the host keeps caching on) and the bits
    /// IA32_VMX_CR0_FIXED0/1 fix, except PE and PG, which unrestricted guest frees.
    pub fn cr0_mask(self) -> Cr0 {
        self.cr0_fixed().fixed() | Cr0::CD | Cr0::NW
    }

    /// The mask of CR4 bits the host owns: VMXE and every bit IA32_VMX_CR4_FIXED0/1 fix.
    pub fn cr4_mask(self) -> Cr4 {
        self.cr4_fixed().fixed() | Cr4::VMXE
    }

    /// The CR0 the processor runs the guest with, for the CR0 value the guest believes it has.
    pub fn real_cr0(self, guest: Cr0) -> Cr0 {
        self.cr0_fixed().apply(guest) - (Cr0::CD | Cr0::NW)
    }

    /// Writes the guest state `state` ([`GuestState::write`], with `caps`' VMX-fixed bits) under
    /// this policy: the CR0/CR4 guest/host masks, and the real CR0 with CD and NW clear
    /// ([`real_cr0`](Self::real_cr0)); the guest reads `state`'s CR0 and CR4.
    ///
    /// # Errors
    ///
    /// Those of [`GuestState::write`], and a VMWRITE that fails.
    pub fn write_initial_state(
        self,
        vmcs: &mut impl VmcsWrite,
        state: &GuestState,
        caps: &VmxCapabilities,
    ) -> Result<(), GuestStateError> {
        vmcs.write(fields::CR0_GUEST_HOST_MASK, self.cr0_mask())?;
        vmcs.write(fields::CR4_GUEST_HOST_MASK, self.cr4_mask())?;
        state.write(vmcs, caps)?;
        vmcs.write(fields::GUEST_CR0, self.real_cr0(state.cr0))?;
        Ok(())
    }

    /// The CR4 the processor runs the guest with, for the CR4 value the guest believes it has:
    /// the bits IA32_VMX_CR4_FIXED0/1 fix applied.
    pub fn real_cr4(self, guest: Cr4) -> Cr4 {
        self.cr4_fixed().apply(guest)
    }

    /// The CR0 the guest sees: the read shadow in the bits the host owns, the real CR0 elsewhere.
    pub fn guest_cr0(self, vmcs: &impl VmcsRead) -> Result<Cr0, VmFail> {
        let mask = self.cr0_mask();
        Ok((vmcs.read(fields::GUEST_CR0)? - mask) | (vmcs.read(fields::CR0_READ_SHADOW)? & mask))
    }

    /// The CR4 the guest sees: the read shadow in the bits the host owns, the real CR4 elsewhere.
    pub fn guest_cr4(self, vmcs: &impl VmcsRead) -> Result<Cr4, VmFail> {
        let mask = self.cr4_mask();
        Ok((vmcs.read(fields::GUEST_CR4)? - mask) | (vmcs.read(fields::CR4_READ_SHADOW)? & mask))
    }

    fn guest_control(self, vmcs: &impl VmcsRead) -> Result<GuestControl, VmFail> {
        let efer = vmcs.read(fields::GUEST_IA32_EFER)?;
        let cs_l = vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?.long_mode();
        Ok(GuestControl {
            cr0: self.guest_cr0(vmcs)?,
            cr3: vmcs.read(fields::GUEST_CR3)?,
            cr4: self.guest_cr4(vmcs)?,
            efer,
            in_64bit_mode: efer.contains(Efer::LMA) && cs_l,
        })
    }

    /// MOV to CR0 of `value` (the source register; only its low 32 bits outside 64-bit mode).
    /// Raises none of the SDM's #GP(0) conditions ([`CrFault`]) or changes nothing; otherwise
    /// updates the read shadow and the real CR0, IA32_EFER.LMA and the "IA-32e mode guest" entry
    /// control follow CR0.PG if EFER.LME is set (SDM Vol. 3A, 11.8.5 "Initializing IA-32e Mode"),
    /// and when PAE paging is in use afterwards and CD, NW or PG changed, the PDPTEs are loaded
    /// into the VMCS (SDM Vol. 3A, 4.4.1) from guest-physical memory read with `read_u64`.
    pub fn mov_to_cr0(
        self,
        vmcs: &mut impl VmcsWrite,
        value: Cr0,
        read_u64: impl FnMut(u64) -> Option<u64>,
    ) -> Result<(), CrWriteError> {
        let g = self.guest_control(vmcs)?;
        let value = Cr0::from_bits_retain(g.operand(value.bits()));
        let paging = value.contains(Cr0::PG);
        let was_paging = g.cr0.contains(Cr0::PG);
        if value.intersects(Cr0::RESERVED_HIGH) {
            return Err(CrFault::Cr0HighBits.into());
        }
        if paging && !value.contains(Cr0::PE) {
            return Err(CrFault::PagingWithoutProtection.into());
        }
        if value.contains(Cr0::NW) && !value.contains(Cr0::CD) {
            return Err(CrFault::NotWriteThroughWithoutCacheDisable.into());
        }
        if paging && !was_paging && g.efer.contains(Efer::LME) && !g.cr4.contains(Cr4::PAE) {
            return Err(CrFault::LongModeWithoutPae.into());
        }
        if !paging && g.in_64bit_mode {
            return Err(CrFault::ClearPagingIn64BitMode.into());
        }
        if !paging && g.cr4.contains(Cr4::PCIDE) {
            return Err(CrFault::ClearPagingWithPcide.into());
        }
        if !value.contains(Cr0::WP) && g.cr4.contains(Cr4::CET) {
            return Err(CrFault::ClearWriteProtectWithCet.into());
        }
        let pae_paging = paging && g.cr4.contains(Cr4::PAE) && !g.efer.contains(Efer::LME);
        let pdptes = if pae_paging && (value ^ g.cr0).intersects(Cr0::CD | Cr0::NW | Cr0::PG) {
            Some(self.read_pdptes(g.cr3, read_u64)?)
        } else {
            None
        };
        if paging != was_paging {
            let lma = paging && g.efer.contains(Efer::LME);
            let mut efer = g.efer;
            efer.set(Efer::LMA, lma);
            vmcs.write(fields::GUEST_IA32_EFER, efer)?;
            vmcs.modify(fields::VM_ENTRY_CONTROLS, |c| {
                if lma {
                    c | EntryControls::IA32E_MODE_GUEST
                } else {
                    c - EntryControls::IA32E_MODE_GUEST
                }
            })?;
        }
        if let Some(pdptes) = pdptes {
            write_pdptes(vmcs, pdptes)?;
        }
        vmcs.write(fields::CR0_READ_SHADOW, value)?;
        vmcs.write(fields::GUEST_CR0, self.real_cr0(value))?;
        Ok(())
    }

    /// MOV to CR4 of `value` (the source register; only its low 32 bits outside 64-bit mode).
    /// Raises none of the SDM's #GP(0) conditions ([`CrFault`]) or changes nothing; otherwise
    /// updates the read shadow and the real CR4, and when PAE paging is in use afterwards and PAE,
    /// PGE, PSE or SMEP changed, loads the PDPTEs into the VMCS (SDM Vol. 3A, 4.4.1) from
    /// guest-physical memory read with `read_u64`.
    pub fn mov_to_cr4(
        self,
        vmcs: &mut impl VmcsWrite,
        value: Cr4,
        read_u64: impl FnMut(u64) -> Option<u64>,
    ) -> Result<(), CrWriteError> {
        let g = self.guest_control(vmcs)?;
        let value = Cr4::from_bits_retain(g.operand(value.bits()));
        let f = self.cr4_fixed();
        let hidden = if self.vmx_exposed {
            Cr4::SMXE
        } else {
            Cr4::VMXE | Cr4::SMXE
        };
        let reserved = value & (f.must_be_zero | hidden);
        if !reserved.is_empty() {
            return Err(CrFault::Cr4Reserved(reserved).into());
        }
        let ia32e = g.efer.contains(Efer::LMA);
        if ia32e && !value.contains(Cr4::PAE) {
            return Err(CrFault::ClearPaeInIa32eMode.into());
        }
        if !ia32e && value.contains(Cr4::PCIDE) {
            return Err(CrFault::PcideOutsideIa32eMode.into());
        }
        if (value - g.cr4).contains(Cr4::PCIDE) && g.cr3 & 0xfff != 0 {
            return Err(CrFault::PcideWithNonzeroPcid.into());
        }
        if ia32e && (value ^ g.cr4).contains(Cr4::LA57) {
            return Err(CrFault::La57ChangeInIa32eMode.into());
        }
        if value.contains(Cr4::CET) && !g.cr0.contains(Cr0::WP) {
            return Err(CrFault::CetWithoutWriteProtect.into());
        }
        let pae_paging = g.cr0.contains(Cr0::PG) && value.contains(Cr4::PAE) && !ia32e;
        if pae_paging && (value ^ g.cr4).intersects(Cr4::PAE | Cr4::PGE | Cr4::PSE | Cr4::SMEP) {
            let pdptes = self.read_pdptes(g.cr3, read_u64)?;
            write_pdptes(vmcs, pdptes)?;
        }
        vmcs.write(fields::CR4_READ_SHADOW, value)?;
        vmcs.write(fields::GUEST_CR4, f.apply(value))?;
        Ok(())
    }

    /// The four PDPTEs of PAE paging at CR3\[31:5\], checked: a present entry (bit 0) with a 1 in
    /// bits 2:1, 8:5 or MAXPHYADDR..63 raises #GP (SDM Vol. 3A, 4.4.1, Table 4-8).
    fn read_pdptes(
        self,
        cr3: u64,
        mut read_u64: impl FnMut(u64) -> Option<u64>,
    ) -> Result<[u64; 4], CrWriteError> {
        let above_maxphyaddr = match self.maxphyaddr {
            0..=63 => u64::MAX << self.maxphyaddr,
            _ => 0,
        };
        let reserved = 0x1e6 | above_maxphyaddr;
        let base = cr3 & 0xffff_ffe0;
        let mut pdptes = [0; 4];
        for (index, pdpte) in (0u8..).zip(pdptes.iter_mut()) {
            let gpa = base + 8 * u64::from(index);
            let entry = read_u64(gpa).ok_or(CrWriteError::PdptNotReadable(gpa))?;
            if entry & 1 != 0 && entry & reserved != 0 {
                return Err(CrFault::PdpteReserved { index, entry }.into());
            }
            *pdpte = entry;
        }
        Ok(pdptes)
    }
}

/// Writes the guest PDPTE fields (used by VM entry when PAE paging is in use with EPT).
fn write_pdptes(vmcs: &mut impl VmcsWrite, pdptes: [u64; 4]) -> Result<(), VmFail> {
    let fields = [
        fields::GUEST_PDPTE0,
        fields::GUEST_PDPTE1,
        fields::GUEST_PDPTE2,
        fields::GUEST_PDPTE3,
    ];
    for (field, value) in fields.into_iter().zip(pdptes) {
        vmcs.write(field, value)?;
    }
    Ok(())
}

/// XSETBV (SDM Vol. 2, "XSETBV—Set Extended Control Register"): the value EDX:EAX it loads into
/// XCR0, or `None` when it raises #GP: ECX does not name XCR0 (only ECX = 0 exists), or the value is
/// not a valid XCR0 for a processor supporting `xcr0_supported` ([`Xcr0::is_valid_for`]).
pub fn xsetbv_value(regs: &GuestRegisters, xcr0_supported: Xcr0) -> Option<Xcr0> {
    let value = Xcr0::from_bits_retain((regs.rdx << 32) | (regs.rax & 0xffff_ffff));
    (regs.rcx as u32 == 0 && value.is_valid_for(xcr0_supported)).then_some(value)
}

/// CPUID.1:ECX as both guests see it: VMX (bit 5) and SMX (6) hidden, "hypervisor present" (31)
/// set, OSXSAVE (27) from the guest's CR4 (`guest_cr4`) rather than the host's.
pub fn cpuid_leaf1_ecx(ecx: u32, guest_cr4: Cr4) -> u32 {
    let mut c = ecx & !((1 << 5) | (1 << 6) | (1 << 27));
    c |= 1 << 31;
    if guest_cr4.contains(Cr4::OSXSAVE) {
        c |= 1 << 27;
    }
    c
}

/// Whether `exit` is a VMX instruction's (VMCALL, VMXON, VMXOFF, VMCLEAR, VMPTRLD, VMPTRST,
/// VMREAD, VMWRITE, VMLAUNCH, VMRESUME, INVEPT, INVVPID, VMFUNC): neither guest is offered VMX,
/// so each raises #UD (a guest that uses VMCALL as a hypercall handles it before asking).
pub fn is_vmx_instruction(exit: &VmExit) -> bool {
    matches!(
        exit,
        VmExit::Vmcall { .. }
            | VmExit::Vmxon { .. }
            | VmExit::Vmxoff { .. }
            | VmExit::Vmclear { .. }
            | VmExit::Vmptrld { .. }
            | VmExit::Vmptrst { .. }
            | VmExit::Vmread { .. }
            | VmExit::Vmwrite { .. }
            | VmExit::Vmlaunch { .. }
            | VmExit::Vmresume { .. }
            | VmExit::Invept { .. }
            | VmExit::Invvpid { .. }
            | VmExit::Vmfunc { .. }
    )
}

#[cfg(test)]
mod tests {
    //! The rules' expectations come from the SDM's lists (see [`CrFault`]) and the CR fixed bits
    //! Bochs' `tigerlake` model reports (`vmx-caps/testdata/tigerlake.msr`: CR0_FIXED0
    //! 0x80000021, CR4_FIXED0 0x2000, CR4_FIXED1 0xf72fff), on the `vmcs` crate's software VMCS.

    use super::*;
    use std::collections::HashMap;
    use vmcs::{SegmentAccessRights, SoftVmcs};
    use vmx_caps::{MsrSnapshot, PrimaryControls, SecondaryControls};
    /// CS access rights: 64-bit code (L = 1) and 32-bit code (D = 1).
    const CS_64: SegmentAccessRights = SegmentAccessRights::CODE_64;
    const CS_32: SegmentAccessRights = SegmentAccessRights::CODE_32;

    fn tigerlake() -> (CrPolicy, SoftVmcs) {
        let text = include_str!("../../../vmx-caps/testdata/tigerlake.msr");
        let mut snapshot = MsrSnapshot::parse(text).expect("the dump parses");
        let caps = VmxCapabilities::read(&mut snapshot).expect("the dump decodes");
        let policy = CrPolicy {
            cr0_fixed: caps.cr0_fixed,
            cr4_fixed: caps.cr4_fixed,
            maxphyaddr: 39,
            vmx_exposed: false,
        };
        let mut vmcs = SoftVmcs::new(&caps);
        vmcs.write(
            fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            PrimaryControls::ACTIVATE_SECONDARY_CONTROLS,
        )
        .expect("primary controls");
        vmcs.write(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST,
        )
        .expect("secondary controls");
        // Real mode with CR0 = ET: the state after RESET but CD and NW.
        let state = GuestState {
            cr0: Cr0::ET,
            rip: 0,
            ..GuestState::reset()
        };
        policy
            .write_initial_state(&mut vmcs, &state, &caps)
            .expect("the software VMCS takes the initial state");
        vmcs.write(fields::VM_ENTRY_CONTROLS, EntryControls::LOAD_IA32_EFER)
            .expect("entry controls");
        (policy, vmcs)
    }

    fn no_memory(_: u64) -> Option<u64> {
        None
    }

    /// The guest in protected mode without paging: CR0 = PE|ET, CR4 = `cr4`, EFER = `efer`,
    /// 32-bit code.
    fn protected(cr4: Cr4, efer: Efer) -> (CrPolicy, SoftVmcs) {
        let (policy, mut vmcs) = tigerlake();
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET, no_memory)
            .expect("PE");
        policy.mov_to_cr4(&mut vmcs, cr4, no_memory).expect("CR4");
        vmcs.write(fields::GUEST_IA32_EFER, efer).expect("EFER");
        vmcs.write(fields::GUEST_CS_ACCESS_RIGHTS, CS_32)
            .expect("CS");
        (policy, vmcs)
    }

    /// The guest in IA-32e mode (paging on with LME and PAE), in 64-bit mode when `cs_l`.
    fn ia32e(cs_l: bool, cr4: Cr4) -> (CrPolicy, SoftVmcs) {
        let (policy, mut vmcs) = protected(Cr4::PAE | cr4, Efer::LME);
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG | Cr0::WP, no_memory)
            .expect("paging on");
        let cs = if cs_l { CS_64 } else { CS_32 };
        vmcs.write(fields::GUEST_CS_ACCESS_RIGHTS, cs).expect("CS");
        (policy, vmcs)
    }

    fn values(vmcs: &SoftVmcs) -> Vec<u64> {
        vmcs.iter().map(|(_, value)| value).collect()
    }

    /// `write` fails with `fault` and leaves every field as it was.
    fn faults(
        mut vmcs: SoftVmcs,
        fault: CrFault,
        write: impl FnOnce(&mut SoftVmcs) -> Result<(), CrWriteError>,
    ) {
        let before = values(&vmcs);
        assert_eq!(write(&mut vmcs), Err(CrWriteError::Fault(fault)));
        assert_eq!(values(&vmcs), before, "{fault:?} changed the VMCS");
    }

    #[test]
    fn entering_ia32e_mode_sets_lma_and_the_entry_control() {
        let (policy, mut vmcs) = protected(Cr4::PAE, Efer::LME);
        let value = Cr0::PE | Cr0::ET | Cr0::PG;
        policy.mov_to_cr0(&mut vmcs, value, no_memory).unwrap();
        assert_eq!(
            vmcs.read(fields::GUEST_IA32_EFER).unwrap(),
            Efer::LME | Efer::LMA
        );
        assert!(
            vmcs.read(fields::VM_ENTRY_CONTROLS)
                .unwrap()
                .contains(EntryControls::IA32E_MODE_GUEST)
        );
        assert_eq!(vmcs.read(fields::CR0_READ_SHADOW).unwrap(), value);
        // CR0_FIXED0 0x80000021: NE is forced in the real CR0 (PE and PG are the guest's).
        assert_eq!(vmcs.read(fields::GUEST_CR0).unwrap(), value | Cr0::NE);
        assert_eq!(policy.guest_cr0(&vmcs).unwrap(), value);
    }

    #[test]
    fn paging_with_lme_and_without_pae_is_gp() {
        let (policy, vmcs) = protected(Cr4::empty(), Efer::LME);
        faults(vmcs, CrFault::LongModeWithoutPae, |v| {
            policy.mov_to_cr0(v, Cr0::PE | Cr0::ET | Cr0::PG, no_memory)
        });
    }

    #[test]
    fn pae_cannot_be_cleared_in_ia32e_mode() {
        for cs_l in [true, false] {
            let (policy, vmcs) = ia32e(cs_l, Cr4::empty());
            faults(vmcs, CrFault::ClearPaeInIa32eMode, |v| {
                policy.mov_to_cr4(v, Cr4::empty(), no_memory)
            });
        }
        // Outside IA-32e mode PAE comes and goes.
        let (policy, mut vmcs) = protected(Cr4::PAE, Efer::empty());
        policy
            .mov_to_cr4(&mut vmcs, Cr4::empty(), no_memory)
            .unwrap();
        assert_eq!(policy.guest_cr4(&vmcs).unwrap(), Cr4::empty());
    }

    #[test]
    fn paging_can_be_cleared_in_compatibility_mode_only() {
        let (policy, vmcs) = ia32e(true, Cr4::empty());
        faults(vmcs, CrFault::ClearPagingIn64BitMode, |v| {
            policy.mov_to_cr0(v, Cr0::PE | Cr0::ET | Cr0::WP, no_memory)
        });
        let (policy, mut vmcs) = ia32e(false, Cr4::empty());
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::WP, no_memory)
            .unwrap();
        assert_eq!(vmcs.read(fields::GUEST_IA32_EFER).unwrap(), Efer::LME);
        assert!(
            !vmcs
                .read(fields::VM_ENTRY_CONTROLS)
                .unwrap()
                .contains(EntryControls::IA32E_MODE_GUEST)
        );
    }

    #[test]
    fn invalid_cr0_combinations() {
        let (policy, vmcs) = tigerlake();
        faults(vmcs.clone(), CrFault::PagingWithoutProtection, |v| {
            policy.mov_to_cr0(v, Cr0::PG | Cr0::ET, no_memory)
        });
        faults(vmcs, CrFault::NotWriteThroughWithoutCacheDisable, |v| {
            policy.mov_to_cr0(v, Cr0::NW | Cr0::ET, no_memory)
        });
    }

    #[test]
    fn cr0_high_bits_fault_in_64_bit_mode_and_are_not_operands_elsewhere() {
        let (policy, vmcs) = ia32e(true, Cr4::empty());
        let cr0 = policy.guest_cr0(&vmcs).unwrap();
        faults(vmcs, CrFault::Cr0HighBits, |v| {
            policy.mov_to_cr0(v, cr0 | Cr0::from_bits_retain(1 << 32), no_memory)
        });
        // Outside 64-bit mode the operand is 32 bits: the register's upper half is not written.
        let (policy, mut vmcs) = protected(Cr4::empty(), Efer::empty());
        policy
            .mov_to_cr0(
                &mut vmcs,
                Cr0::from_bits_retain(0xdead_0000_0000_0000) | Cr0::PE | Cr0::ET,
                no_memory,
            )
            .unwrap();
        assert_eq!(policy.guest_cr0(&vmcs).unwrap(), Cr0::PE | Cr0::ET);
    }

    #[test]
    fn reserved_cr4_bits() {
        let (policy, vmcs) = ia32e(true, Cr4::empty());
        let cr4 = policy.guest_cr4(&vmcs).unwrap();
        // VMXE and SMXE: the guest's CPUID has neither VMX nor SMX. LA57 (bit 12) and bit 32:
        // CR4_FIXED1 0xf72fff has them 0.
        for bit in [Cr4::VMXE, Cr4::SMXE, Cr4::LA57, Cr4::FRED] {
            faults(vmcs.clone(), CrFault::Cr4Reserved(bit), |v| {
                policy.mov_to_cr4(v, cr4 | bit, no_memory)
            });
        }
        // Bits FIXED1 allows are written (OSFXSR, SMEP).
        let (policy, mut vmcs) = ia32e(true, Cr4::empty());
        policy
            .mov_to_cr4(&mut vmcs, cr4 | Cr4::OSFXSR | Cr4::SMEP, no_memory)
            .unwrap();
        assert_eq!(
            policy.guest_cr4(&vmcs).unwrap(),
            cr4 | Cr4::OSFXSR | Cr4::SMEP
        );
        // The real CR4 keeps VMXE (CR4_FIXED0); the guest does not see it.
        assert_eq!(
            vmcs.read(fields::GUEST_CR4).unwrap(),
            cr4 | Cr4::OSFXSR | Cr4::SMEP | Cr4::VMXE
        );
    }

    #[test]
    fn pcide_rules() {
        let (policy, vmcs) = protected(Cr4::PAE, Efer::empty());
        faults(vmcs, CrFault::PcideOutsideIa32eMode, |v| {
            policy.mov_to_cr4(v, Cr4::PAE | Cr4::PCIDE, no_memory)
        });
        let (policy, mut vmcs) = ia32e(false, Cr4::empty());
        vmcs.write(fields::GUEST_CR3, 0x5001).unwrap();
        faults(vmcs.clone(), CrFault::PcideWithNonzeroPcid, |v| {
            policy.mov_to_cr4(v, Cr4::PAE | Cr4::PCIDE, no_memory)
        });
        vmcs.write(fields::GUEST_CR3, 0x5000).unwrap();
        policy
            .mov_to_cr4(&mut vmcs, Cr4::PAE | Cr4::PCIDE, no_memory)
            .unwrap();
        // Setting it again (already 1) does not look at CR3.
        vmcs.write(fields::GUEST_CR3, 0x5001).unwrap();
        policy
            .mov_to_cr4(&mut vmcs, Cr4::PAE | Cr4::PCIDE, no_memory)
            .unwrap();
        // With PCIDE = 1, paging cannot be turned off, even in compatibility mode.
        faults(vmcs, CrFault::ClearPagingWithPcide, |v| {
            policy.mov_to_cr0(v, Cr0::PE | Cr0::ET | Cr0::WP, no_memory)
        });
    }

    #[test]
    fn cet_needs_write_protect() {
        let (policy, mut vmcs) = ia32e(true, Cr4::empty());
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG, no_memory)
            .unwrap();
        faults(vmcs.clone(), CrFault::CetWithoutWriteProtect, |v| {
            policy.mov_to_cr4(v, Cr4::PAE | Cr4::CET, no_memory)
        });
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG | Cr0::WP, no_memory)
            .unwrap();
        policy
            .mov_to_cr4(&mut vmcs, Cr4::PAE | Cr4::CET, no_memory)
            .unwrap();
        faults(vmcs, CrFault::ClearWriteProtectWithCet, |v| {
            policy.mov_to_cr0(v, Cr0::PE | Cr0::ET | Cr0::PG, no_memory)
        });
    }

    #[test]
    fn la57_is_fixed_in_ia32e_mode() {
        // A processor with 5-level paging (CR4_FIXED1 with bit 12).
        let (mut policy, mut vmcs) = protected(Cr4::PAE, Efer::LME);
        policy.cr4_fixed.fixed1 |= Cr4::LA57.bits();
        policy
            .mov_to_cr4(&mut vmcs, Cr4::PAE | Cr4::LA57, no_memory)
            .unwrap();
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG, no_memory)
            .unwrap();
        faults(vmcs, CrFault::La57ChangeInIa32eMode, |v| {
            policy.mov_to_cr4(v, Cr4::PAE, no_memory)
        });
    }

    fn pdpt(entries: [u64; 4]) -> HashMap<u64, u64> {
        (0..4)
            .map(|i| (0x3000 + 8 * i, entries[i as usize]))
            .collect()
    }

    fn pdptes(vmcs: &SoftVmcs) -> [u64; 4] {
        [
            fields::GUEST_PDPTE0,
            fields::GUEST_PDPTE1,
            fields::GUEST_PDPTE2,
            fields::GUEST_PDPTE3,
        ]
        .map(|f| vmcs.read(f).unwrap())
    }

    #[test]
    fn pae_paging_loads_the_pdptes() {
        // Present entries with PWT/PCD and bits 11:9 (ignored), and a not-present one with
        // reserved bits (not checked).
        let entries = [0x1_0001, 0x2_0019, 0x1e6, 0x3_0e01];
        let memory = pdpt(entries);
        let (policy, mut vmcs) = protected(Cr4::PAE, Efer::empty());
        // CR3[4:0] are not part of the PDPT's address.
        vmcs.write(fields::GUEST_CR3, 0x3018).unwrap();
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG, |gpa| {
                memory.get(&gpa).copied()
            })
            .unwrap();
        assert_eq!(pdptes(&vmcs), entries);
        // MOV to CR4 that changes PGE reloads them; one that changes OSFXSR does not read memory.
        let changed = pdpt([0x5_0001, 0, 0, 0]);
        policy
            .mov_to_cr4(&mut vmcs, Cr4::PAE | Cr4::PGE, |gpa| {
                changed.get(&gpa).copied()
            })
            .unwrap();
        assert_eq!(pdptes(&vmcs), [0x5_0001, 0, 0, 0]);
        policy
            .mov_to_cr4(&mut vmcs, Cr4::PAE | Cr4::PGE | Cr4::OSFXSR, no_memory)
            .unwrap();
        // MOV to CR0 that changes only WP does not either.
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG | Cr0::WP, no_memory)
            .unwrap();
        assert_eq!(pdptes(&vmcs), [0x5_0001, 0, 0, 0]);
    }

    #[test]
    fn reserved_pdpte_bits_are_gp() {
        // Bits 2:1 and 8:5 are reserved, and bits 63:MAXPHYADDR (39 here).
        for (index, entry) in [
            (1u8, 0x1_0003),
            (2, 0x1_0101),
            (3, 0x1_0021),
            (0, 1 << 39 | 1),
            (3, 1 << 63 | 1),
        ] {
            let mut entries = [0x1_0001; 4];
            entries[usize::from(index)] = entry;
            let memory = pdpt(entries);
            let (policy, mut vmcs) = protected(Cr4::PAE, Efer::empty());
            vmcs.write(fields::GUEST_CR3, 0x3000).unwrap();
            faults(vmcs, CrFault::PdpteReserved { index, entry }, |v| {
                policy.mov_to_cr0(v, Cr0::PE | Cr0::ET | Cr0::PG, |gpa| {
                    memory.get(&gpa).copied()
                })
            });
        }
        // Just below MAXPHYADDR: an address bit.
        let memory = pdpt([1 << 38 | 1, 0, 0, 0]);
        let (policy, mut vmcs) = protected(Cr4::PAE, Efer::empty());
        vmcs.write(fields::GUEST_CR3, 0x3000).unwrap();
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG, |gpa| {
                memory.get(&gpa).copied()
            })
            .unwrap();
    }

    #[test]
    fn an_unreadable_pdpt_is_reported_and_changes_nothing() {
        let (policy, mut vmcs) = protected(Cr4::PAE, Efer::empty());
        vmcs.write(fields::GUEST_CR3, 0x7000).unwrap();
        let before = values(&vmcs);
        assert_eq!(
            policy.mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG, no_memory),
            Err(CrWriteError::PdptNotReadable(0x7000))
        );
        assert_eq!(values(&vmcs), before);
        // IA-32e paging has no PDPTE registers: nothing is read.
        let (policy, mut vmcs) = protected(Cr4::PAE, Efer::LME);
        policy
            .mov_to_cr0(&mut vmcs, Cr0::PE | Cr0::ET | Cr0::PG, no_memory)
            .unwrap();
    }

    /// XSETBV's acceptance of XCR0 value `v` on a processor supporting `supported`.
    fn xcr0_valid(supported: u64, v: u64) -> bool {
        Xcr0::from_bits_retain(v).is_valid_for(Xcr0::from_bits_retain(supported))
    }

    /// [`xsetbv_value`] on raw values.
    fn xsetbv(regs: &GuestRegisters, supported: u64) -> Option<u64> {
        xsetbv_value(regs, Xcr0::from_bits_retain(supported)).map(|x| x.bits())
    }

    #[test]
    fn xcr0_rules() {
        let all = 0x6_02ff;
        // x87 always; AVX needs SSE.
        assert!(!xcr0_valid(all, 0x2));
        assert!(xcr0_valid(all, 0x3));
        assert!(!xcr0_valid(all, 0x5));
        assert!(xcr0_valid(all, 0x7));
        // AVX-512: opmask, ZMM_Hi256, Hi16_ZMM together, and with AVX.
        for partial in [0x27, 0x47, 0x87, 0x67, 0xa7, 0xc7] {
            assert!(!xcr0_valid(all, partial), "{partial:#x}");
        }
        assert!(xcr0_valid(all, 0xe7));
        assert!(!xcr0_valid(all, 0xe3));
        // MPX: BNDREGS and BNDCSR together.
        assert!(!xcr0_valid(all, 0xb));
        assert!(!xcr0_valid(all, 0x13));
        assert!(xcr0_valid(all, 0x1b));
        // AMX: XTILECFG and XTILEDATA together.
        assert!(!xcr0_valid(all, 0x2_0003));
        assert!(!xcr0_valid(all, 0x4_0003));
        assert!(xcr0_valid(all, 0x6_0003));
        // Only supported components (CPUID.(EAX=0DH,ECX=0):EDX:EAX).
        assert!(!xcr0_valid(0x7, 0x207));
        assert!(xcr0_valid(0x207, 0x207));
    }

    #[test]
    fn xsetbv_takes_ecx_and_edx_eax() {
        let mut regs = GuestRegisters::new();
        regs.rax = 0xffff_ffff_0000_0007;
        regs.rdx = 0;
        regs.rcx = 1 << 32; // ECX = 0: the upper half of RCX is not the operand.
        assert_eq!(xsetbv(&regs, 0x7), Some(0x7));
        regs.rcx = 1;
        assert_eq!(xsetbv(&regs, 0x7), None);
        regs.rcx = 0;
        regs.rdx = 0xffff_ffff_0000_0200; // EDX = 0x200: XCR0 bit 41
        assert_eq!(xsetbv(&regs, 0x7), None);
        assert_eq!(xsetbv(&regs, 1 << 41 | 0x7), Some(1 << 41 | 0x7));
        regs.rdx = 0;
        regs.rax = 0x3;
        assert_eq!(xsetbv(&regs, 0x7), Some(0x3));
        regs.rax = 0x2;
        assert_eq!(xsetbv(&regs, 0x7), None);
    }

    #[test]
    fn cpuid_leaf1_hides_vmx_and_smx_and_reports_the_guests_osxsave() {
        let host = 0x7ffa_f3ff_u32 | 1 << 5 | 1 << 6 | 1 << 27;
        let ecx = cpuid_leaf1_ecx(host, Cr4::empty());
        assert_eq!(ecx & (1 << 5 | 1 << 6 | 1 << 27), 0);
        assert_ne!(ecx & 1 << 31, 0);
        assert_eq!(ecx & !(1 << 31), host & !(1 << 5 | 1 << 6 | 1 << 27));
        assert_ne!(cpuid_leaf1_ecx(host, Cr4::OSXSAVE) & 1 << 27, 0);
    }
}
