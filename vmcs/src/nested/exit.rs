//! A VM exit of L2 reflected to L1: what the processor L1 believes it runs on does at a VM exit
//! (SDM Vol. 3C, chapter 28 "VM Exits"), carried out by L0 on VMCS12, L1's memory and the VMCS
//! that runs L1 (VMCS01).

use vmx_caps::{EntryControls, ExitControls, PinBasedControls};

use super::vmcs02::{GuestMsrs, Vmcs02};
use super::{GuestMemory, L1VmxState};
use crate::field::FieldType;
use crate::{VmcsRead, VmcsWrite, fields};

/// Offset of the VMX-abort indicator in a VMCS region (bytes 7:4).
const ABORT_OFFSET: u64 = 4;

/// A VMX abort (SDM 28.7 "VMX Aborts"): the exit could not be completed; the indicator has been
/// written into bytes 7:4 of VMCS12's region and L1's processor is in the shutdown state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmxAbort {
    /// 1: a failure in saving guest MSRs (an MSR-store entry could not be read or written).
    SavingGuestMsrs = 1,
    /// 2: host checking of the PDPTEs failed.
    HostPdptes = 2,
    /// 4: a failure in loading host MSRs.
    LoadingHostMsrs = 4,
    /// 6: the processor was in IA-32e mode before the exit and "host address-space size" is 0.
    HostAddressSpaceSize = 6,
}

/// How a reflected exit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reflected {
    /// L1 resumes at VMCS12's host RIP: VMCS01's guest state is VMCS12's host state as the
    /// processor loads it.
    Resume,
    /// A VMX abort; L0 puts L1 into the shutdown state.
    Abort(VmxAbort),
}

/// The first half of a reflected exit ([`L1VmxState::save_exit`]): L2's state saved into
/// VMCS12, and what [`L1VmxState::complete_exit`] needs of the processor's registers at the
/// exit (or the VMX abort saving ended in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedExit(Saved);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saved {
    Registers(CurrentRegs),
    Abort(VmxAbort),
}

/// Why an exit could not be reflected (not an outcome L1 can see: L0's own fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReflectError {
    /// There is no current VMCS (VMCS12) to reflect into.
    #[error("L1 has no current VMCS")]
    NoCurrentVmcs,
    /// A field VMCS02, VMCS12 or VMCS01 must have could not be read or written.
    #[error("access to field {encoding:#06x} failed: {error:?}")]
    Vmcs {
        /// Encoding of the field.
        encoding: u32,
        /// How it failed.
        error: vmx_core::VmFail,
    },
}

fn rd(v: &(impl VmcsRead + ?Sized), encoding: u32) -> Result<u64, ReflectError> {
    v.read_raw(encoding)
        .map_err(|error| ReflectError::Vmcs { encoding, error })
}

fn wr(v: &mut (impl VmcsWrite + ?Sized), encoding: u32, value: u64) -> Result<(), ReflectError> {
    v.write_raw(encoding, value)
        .map_err(|error| ReflectError::Vmcs { encoding, error })
}

/// CR0 bits a VM exit does not modify (SDM 28.5.1): ET (4), CD (30), NW (29), 63:32, 28:19, 17
/// and 15:6.
const CR0_KEPT: u64 =
    !0xffff_ffff | (1 << 4) | (1 << 29) | (1 << 30) | 0x1ff8_0000 | (1 << 17) | 0xffc0;
/// IA32_SMBASE (9EH), readable only in SMM.
const IA32_SMBASE: u32 = 0x9e;
/// IA32_EFER.LME and LMA.
const EFER_LME_LMA: u64 = (1 << 8) | (1 << 10);
/// CR4.PAE and CR4.PCIDE.
const CR4_PAE: u64 = 1 << 5;
const CR4_PCIDE: u64 = 1 << 17;

/// The processor's registers at the moment of the exit that a VM exit partly keeps (SDM 28.5.1):
/// CR0 and CR4 (the bits not loaded), IA32_EFER, IA32_PAT and IA32_PERF_GLOBAL_CTRL (kept
/// without their "load" control) and IA-32e mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CurrentRegs {
    cr0: u64,
    cr4: u64,
    ia32e: bool,
    efer: Option<u64>,
    pat: Option<u64>,
    perf_global_ctrl: Option<u64>,
}

impl CurrentRegs {
    /// From the guest state of `v` (VMCS02 after an exit of L2, VMCS01 for a failed entry).
    fn read(v: &(impl VmcsRead + ?Sized)) -> Result<Self, ReflectError> {
        let entry =
            EntryControls::from_bits_retain(rd(v, fields::VM_ENTRY_CONTROLS.encoding())? as u32);
        Ok(Self {
            cr0: rd(v, fields::GUEST_CR0.encoding())?,
            cr4: rd(v, fields::GUEST_CR4.encoding())?,
            ia32e: entry.contains(EntryControls::IA32E_MODE_GUEST),
            efer: v.read_raw(fields::GUEST_IA32_EFER.encoding()).ok(),
            pat: v.read_raw(fields::GUEST_IA32_PAT.encoding()).ok(),
            perf_global_ctrl: v
                .read_raw(fields::GUEST_IA32_PERF_GLOBAL_CTRL.encoding())
                .ok(),
        })
    }
}

impl L1VmxState {
    /// Reflects a VM exit of L2 to L1, in the order of SDM chapter 28: the exit information
    /// fields of `info` (VMCS02 for an exit of the processor, or a VMCS L0 filled for an exit it
    /// makes up, e.g. from EPT12) are recorded in VMCS12 (28.2; the VM-instruction error field
    /// is left alone, the valid bit of the VM-entry interruption information is cleared); L2's
    /// guest state is saved from `vmcs02` (28.3: CR0 and CR4 with the bits only L0 owns taken
    /// from VMCS02's read shadows, where L2's values of them are; IA32_EFER, IA32_PAT,
    /// DR7/IA32_DEBUGCTL and the VMX-preemption timer only under VMCS12's "save" controls;
    /// "IA-32e mode guest" set to
    /// L2's IA32_EFER.LMA); L2's MSRs are stored into VMCS12's VM-exit MSR-store area (28.4,
    /// read from `msrs`); VMCS12's host state is loaded into VMCS01's guest state (28.5: the
    /// control registers with the bits the exit keeps, DR7 = 400H, IA32_DEBUGCTL = 0, the
    /// segment registers as the SDM defines them, GDTR/IDTR limits FFFFH, RFLAGS = 2, the
    /// PDPTEs from L1's memory for a PAE host); and the VM-exit MSR-load area is loaded into
    /// `msrs` (28.6). `built` describes VMCS02 (for the preemption timer).
    ///
    /// A failure the SDM makes a VMX abort (28.7) writes the indicator into VMCS12's region and
    /// returns [`Reflected::Abort`]. An MSR-store or MSR-load count above the recommended
    /// maximum L1 is shown (`IA32_VMX_MISC[27:25]`, 512 × (N + 1); the SDM leaves the outcome
    /// undefined) is the abort of a failed store (1) or load (4), before any entry.
    ///
    /// # Errors
    ///
    /// [`ReflectError`] without a current VMCS or for a field every VMCS has that fails.
    pub fn reflect_exit<I, V02, V01, M, G>(
        &mut self,
        info: &I,
        vmcs02: &V02,
        built: &Vmcs02,
        vmcs01: &mut V01,
        mem: &mut M,
        msrs: &mut G,
    ) -> Result<Reflected, ReflectError>
    where
        I: VmcsRead + ?Sized,
        V02: VmcsRead + ?Sized,
        V01: VmcsWrite + ?Sized,
        M: GuestMemory + ?Sized,
        G: GuestMsrs + ?Sized,
    {
        let saved = self.save_exit(info, vmcs02, built, mem, msrs)?;
        self.complete_exit(saved, vmcs01, mem, msrs)
    }

    /// The first half of [`L1VmxState::reflect_exit`], which needs only VMCS02 (and VMCS12):
    /// the exit information, L2's guest state and the VM-exit MSR-store area (SDM 28.2 to 28.4).
    /// L0 calls it while VMCS02 is still the current VMCS, then [`L1VmxState::complete_exit`]
    /// with VMCS01, without a copy of either.
    ///
    /// # Errors
    ///
    /// As [`L1VmxState::reflect_exit`].
    pub fn save_exit<I, V02, M, G>(
        &mut self,
        info: &I,
        vmcs02: &V02,
        built: &Vmcs02,
        mem: &mut M,
        msrs: &mut G,
    ) -> Result<SavedExit, ReflectError>
    where
        I: VmcsRead + ?Sized,
        V02: VmcsRead + ?Sized,
        M: GuestMemory + ?Sized,
        G: GuestMsrs + ?Sized,
    {
        let Some(current) = self.current.as_mut() else {
            return Err(ReflectError::NoCurrentVmcs);
        };
        let pointer = current.pointer;
        let vmcs12 = &mut current.vmcs;

        // 28.2: exit information.
        for &e in fields::encodings_of(FieldType::ExitInformation) {
            if e != fields::VM_INSTRUCTION_ERROR.encoding()
                && vmcs12.supports(e)
                && let Ok(v) = info.read_raw(e)
            {
                vmcs12
                    .store(e, v)
                    .map_err(|error| ReflectError::Vmcs { encoding: e, error })?;
            }
        }
        let entry_info = fields::VM_ENTRY_INTERRUPTION_INFORMATION.encoding();
        let injected = rd(vmcs12, entry_info)?;
        wr(vmcs12, entry_info, injected & !(1 << 31))?;

        // 28.3: guest state.
        let exit12 = ExitControls::from_bits_retain(rd(
            vmcs12,
            fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
        )? as u32);
        let saved_only_if = |encoding: u32| -> Option<ExitControls> {
            match encoding {
                e if e == fields::GUEST_IA32_EFER.encoding() => Some(ExitControls::SAVE_IA32_EFER),
                e if e == fields::GUEST_IA32_PAT.encoding() => Some(ExitControls::SAVE_IA32_PAT),
                e if e == fields::GUEST_DR7.encoding()
                    || e == fields::GUEST_IA32_DEBUGCTL.encoding() =>
                {
                    Some(ExitControls::SAVE_DEBUG_CONTROLS)
                }
                _ => None,
            }
        };
        for &e in fields::encodings_of(FieldType::GuestState) {
            if e == fields::VMCS_LINK_POINTER.encoding()
                || e == fields::VMX_PREEMPTION_TIMER_VALUE.encoding()
                || saved_only_if(e).is_some_and(|c| !exit12.contains(c))
            {
                continue;
            }
            if !vmcs12.supports(e) {
                continue;
            }
            if let Ok(v) = vmcs02.read_raw(e) {
                // CR0 and CR4: L2's value of the bits only L0 owns is in VMCS02's read shadow.
                let l0_only = match e {
                    e if e == fields::GUEST_CR0.encoding() => {
                        Some((built.cr0_l0_only, fields::CR0_READ_SHADOW.encoding()))
                    }
                    e if e == fields::GUEST_CR4.encoding() => {
                        Some((built.cr4_l0_only, fields::CR4_READ_SHADOW.encoding()))
                    }
                    _ => None,
                };
                let v = match l0_only {
                    Some((bits, shadow)) if bits != 0 => (v & !bits) | (rd(vmcs02, shadow)? & bits),
                    _ => v,
                };
                wr(vmcs12, e, v)?;
            }
        }
        let entry_f = fields::VM_ENTRY_CONTROLS.encoding();
        let l2_ia32e = EntryControls::from_bits_retain(rd(vmcs02, entry_f)? as u32)
            .contains(EntryControls::IA32E_MODE_GUEST);
        let mut entry12 = EntryControls::from_bits_retain(rd(vmcs12, entry_f)? as u32);
        entry12.set(EntryControls::IA32E_MODE_GUEST, l2_ia32e);
        wr(vmcs12, entry_f, entry12.bits().into())?;
        if exit12.contains(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE) {
            let timer = fields::VMX_PREEMPTION_TIMER_VALUE.encoding();
            let pin12 = PinBasedControls::from_bits_retain(rd(
                vmcs12,
                fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
            )? as u32);
            let value = if !pin12.contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER) {
                0
            } else if built.timer_is_l1s {
                rd(vmcs02, timer)?
            } else {
                // VMCS02 counted L0's shorter timer: L1's counts down by as much.
                let now = rd(vmcs02, timer)?;
                let elapsed = u64::from(built.timer_start).saturating_sub(now);
                u64::from(built.timer_l1).saturating_sub(elapsed)
            };
            wr(vmcs12, timer, value)?;
        }

        // 28.4: L2's MSRs into the VM-exit MSR-store area.
        let store_count = rd(vmcs12, fields::VM_EXIT_MSR_STORE_COUNT.encoding())?;
        let store_area = rd(vmcs12, fields::VM_EXIT_MSR_STORE_ADDRESS.encoding())?;
        // Beyond the recommended maximum the SDM leaves the outcome undefined (Vol. 3D, A.6:
        // "undefined processor behavior may result"): L0 makes it the abort of a failed store.
        if store_count > u64::from(self.caps.misc.max_msr_list_entries()) {
            Self::abort(mem, pointer, VmxAbort::SavingGuestMsrs);
            return Ok(SavedExit(Saved::Abort(VmxAbort::SavingGuestMsrs)));
        }
        for i in 0..store_count {
            let entry = store_area.wrapping_add(16 * i);
            let mut head = [0u8; 8];
            let stored = mem.read(entry, &mut head).is_ok() && {
                let head = u64::from_le_bytes(head);
                let msr = head as u32;
                head >> 32 == 0
                    && msr >> 8 != 0x8
                    && msr != IA32_SMBASE
                    && msrs.read(msr).is_some_and(|v| {
                        // Wraps like the entry's address: an area at the top of the
                        // address space is not a panic but an unbacked write (abort).
                        mem.write(entry.wrapping_add(8), &v.to_le_bytes()).is_ok()
                    })
            };
            if !stored {
                Self::abort(mem, pointer, VmxAbort::SavingGuestMsrs);
                return Ok(SavedExit(Saved::Abort(VmxAbort::SavingGuestMsrs)));
            }
        }
        // L2's registers at the exit are the current ones for 28.5 and 28.6.
        Ok(SavedExit(Saved::Registers(CurrentRegs::read(vmcs02)?)))
    }

    /// The second half of [`L1VmxState::reflect_exit`] after [`L1VmxState::save_exit`]:
    /// VMCS12's host state into VMCS01 and the VM-exit MSR-load area (SDM 28.5, 28.6), or the
    /// VMX abort saving ended in.
    ///
    /// # Errors
    ///
    /// As [`L1VmxState::reflect_exit`].
    pub fn complete_exit<V01, M, G>(
        &mut self,
        saved: SavedExit,
        vmcs01: &mut V01,
        mem: &mut M,
        msrs: &mut G,
    ) -> Result<Reflected, ReflectError>
    where
        V01: VmcsWrite + ?Sized,
        M: GuestMemory + ?Sized,
        G: GuestMsrs + ?Sized,
    {
        match saved.0 {
            Saved::Registers(regs) => self.load_host_state(&regs, vmcs01, mem, msrs),
            Saved::Abort(abort) => Ok(Reflected::Abort(abort)),
        }
    }

    /// A VM-entry failure of L1's VMLAUNCH or VMRESUME (after [`L1VmxState::enter_l2`] returned
    /// [`super::L2Entry::EntryFailure`], which wrote the exit reason and qualification): as SDM
    /// 27.8 says, the processor then loads VMCS12's host state (28.5) and the VM-exit MSR-load
    /// area (28.6), with L1's registers (VMCS01's guest state, read first) as the current ones;
    /// no guest state is saved.
    ///
    /// # Errors
    ///
    /// As [`L1VmxState::reflect_exit`].
    pub fn exit_after_failed_entry<V01, M, G>(
        &mut self,
        vmcs01: &mut V01,
        mem: &mut M,
        msrs: &mut G,
    ) -> Result<Reflected, ReflectError>
    where
        V01: VmcsWrite + ?Sized,
        M: GuestMemory + ?Sized,
        G: GuestMsrs + ?Sized,
    {
        let regs = CurrentRegs::read(vmcs01)?;
        self.load_host_state(&regs, vmcs01, mem, msrs)
    }

    /// SDM 28.5 "Loading Host State" and 28.6 "Loading MSRs" for the current VMCS12, with
    /// `current` the processor's registers before (the bits the exit keeps).
    fn load_host_state<V01, M, G>(
        &mut self,
        current: &CurrentRegs,
        vmcs01: &mut V01,
        mem: &mut M,
        msrs: &mut G,
    ) -> Result<Reflected, ReflectError>
    where
        V01: VmcsWrite + ?Sized,
        M: GuestMemory + ?Sized,
        G: GuestMsrs + ?Sized,
    {
        let phys_width = self.phys_width;
        let fixed0 = self.caps.cr0_fixed_bits(vmx_caps::CrUse::Vmx);
        let fixed4 = self.caps.cr4_fixed_bits();
        let (cr0_fixed, cr4_fixed) = (
            fixed0.must_be_one.bits() | fixed0.must_be_zero.bits(),
            fixed4.must_be_one.bits() | fixed4.must_be_zero.bits(),
        );
        let (cr0_ones, cr4_ones) = (fixed0.must_be_one.bits(), fixed4.must_be_one.bits());
        let Some(c) = self.current.as_ref() else {
            return Err(ReflectError::NoCurrentVmcs);
        };
        let pointer = c.pointer;
        let vmcs12 = &c.vmcs;
        let exit12 = ExitControls::from_bits_retain(rd(
            vmcs12,
            fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
        )? as u32);
        let entry_f = fields::VM_ENTRY_CONTROLS.encoding();
        let l2_ia32e = current.ia32e;
        // 28.5: host state into L1's state.
        let host64 = exit12.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE);
        if l2_ia32e && !host64 {
            return Ok(Self::abort(mem, pointer, VmxAbort::HostAddressSpaceSize));
        }
        // The bits fixed in VMX operation are not loaded: they keep their fixed values, which
        // the processor is back in (VMX root operation); L2 may have had PE and PG clear under
        // "unrestricted guest", L1 has them set again.
        let cr0 = (rd(vmcs12, fields::HOST_CR0.encoding())? & !(CR0_KEPT | cr0_fixed))
            | (current.cr0 & CR0_KEPT)
            | cr0_ones;
        let mut cr4 = (rd(vmcs12, fields::HOST_CR4.encoding())? & !cr4_fixed) | cr4_ones;
        if host64 {
            cr4 |= CR4_PAE;
        } else {
            cr4 &= !CR4_PCIDE;
        }
        let cr3 = rd(vmcs12, fields::HOST_CR3.encoding())?;
        for (f, v) in [
            (fields::GUEST_CR0.encoding(), cr0),
            (fields::CR0_READ_SHADOW.encoding(), cr0),
            (fields::GUEST_CR3.encoding(), cr3),
            (fields::GUEST_CR4.encoding(), cr4),
            (fields::CR4_READ_SHADOW.encoding(), cr4),
            (fields::GUEST_DR7.encoding(), 0x400),
            (fields::GUEST_IA32_DEBUGCTL.encoding(), 0),
            (fields::GUEST_RFLAGS.encoding(), 2),
            (fields::GUEST_INTERRUPTIBILITY_STATE.encoding(), 0),
            (fields::GUEST_ACTIVITY_STATE.encoding(), 0),
            (fields::GUEST_PENDING_DEBUG_EXCEPTIONS.encoding(), 0),
        ] {
            wr(vmcs01, f, v)?;
        }
        let narrow = |v: u64| if host64 { v } else { v & 0xffff_ffff };
        for (from, to) in [
            (fields::HOST_RIP.encoding(), fields::GUEST_RIP.encoding()),
            (fields::HOST_RSP.encoding(), fields::GUEST_RSP.encoding()),
            (
                fields::HOST_IA32_SYSENTER_ESP.encoding(),
                fields::GUEST_IA32_SYSENTER_ESP.encoding(),
            ),
            (
                fields::HOST_IA32_SYSENTER_EIP.encoding(),
                fields::GUEST_IA32_SYSENTER_EIP.encoding(),
            ),
            (
                fields::HOST_IA32_SYSENTER_CS.encoding(),
                fields::GUEST_IA32_SYSENTER_CS.encoding(),
            ),
        ] {
            wr(vmcs01, to, narrow(rd(vmcs12, from)?))?;
        }
        self.load_host_segments(vmcs01, host64)?;
        self.load_host_msr_fields(current, vmcs01, exit12, host64)?;
        // The VM-entry control of VMCS01 that says whether L1 is in IA-32e mode.
        let mut entry01 = EntryControls::from_bits_retain(rd(vmcs01, entry_f)? as u32);
        entry01.set(EntryControls::IA32E_MODE_GUEST, host64);
        wr(vmcs01, entry_f, entry01.bits().into())?;
        if cr4 & CR4_PAE != 0
            && !host64
            && cr0 & (1 << 31) != 0
            && let Some(abort) = Self::load_pdptes(vmcs01, mem, cr3, phys_width)?
        {
            return Ok(Self::abort(mem, pointer, abort));
        }

        // 28.6: host MSRs.
        let Some(current) = self.current.as_ref() else {
            return Err(ReflectError::NoCurrentVmcs);
        };
        let load_count = rd(&current.vmcs, fields::VM_EXIT_MSR_LOAD_COUNT.encoding())?;
        let load_area = rd(&current.vmcs, fields::VM_EXIT_MSR_LOAD_ADDRESS.encoding())?;
        // Beyond the recommended maximum (see the VM-exit MSR-store area above): the abort of a
        // failed load.
        if load_count > u64::from(self.caps.misc.max_msr_list_entries()) {
            return Ok(Self::abort(mem, pointer, VmxAbort::LoadingHostMsrs));
        }
        for i in 0..load_count {
            let entry = load_area.wrapping_add(16 * i);
            let mut bytes = [0u8; 16];
            let loaded = mem.read(entry, &mut bytes).is_ok() && {
                let (head, data) = bytes.split_at(8);
                let head = u64::from_le_bytes(head.try_into().unwrap_or([0xff; 8]));
                let data = u64::from_le_bytes(data.try_into().unwrap_or([0; 8]));
                let msr = head as u32;
                head >> 32 == 0
                    && !matches!(
                        msr,
                        vmx_caps::msr::IA32_FS_BASE | vmx_caps::msr::IA32_GS_BASE
                    )
                    && msr >> 8 != 0x8
                    && msr != vmx_caps::msr::IA32_SMM_MONITOR_CTL
                    && msrs.write(msr, data)
            };
            if !loaded {
                return Ok(Self::abort(mem, pointer, VmxAbort::LoadingHostMsrs));
            }
        }
        Ok(Reflected::Resume)
    }

    /// Writes the VMX-abort indicator into the region of VMCS12 (dropped outside L1's memory).
    fn abort(mem: &mut (impl GuestMemory + ?Sized), pointer: u64, abort: VmxAbort) -> Reflected {
        // A current-VMCS pointer is below 2^52 (`valid_pointer`): no overflow.
        let _ = mem.write(pointer + ABORT_OFFSET, &(abort as u32).to_le_bytes());
        Reflected::Abort(abort)
    }

    /// The segment registers, GDTR and IDTR after a VM exit (SDM 28.5.2).
    fn load_host_segments(
        &self,
        vmcs01: &mut (impl VmcsWrite + ?Sized),
        host64: bool,
    ) -> Result<(), ReflectError> {
        let Some(current) = self.current.as_ref() else {
            return Err(ReflectError::NoCurrentVmcs);
        };
        let v12 = &current.vmcs;
        const UNUSABLE: u64 = 1 << 16;
        // CS: type 11, S, P, G; L = host address-space size, D/B its opposite.
        let cs_ar = 0x809b | if host64 { 1 << 13 } else { 1 << 14 };
        // Data segments: type 3, S, P, D/B, G; unusable with a null selector.
        let data_ar = |selector: u64| {
            if selector & !0x7 == 0 {
                UNUSABLE | 0xc093
            } else {
                0xc093
            }
        };
        let cs = rd(v12, fields::HOST_CS_SELECTOR.encoding())?;
        for (f, v) in [
            (fields::GUEST_CS_SELECTOR.encoding(), cs),
            (fields::GUEST_CS_BASE.encoding(), 0),
            (fields::GUEST_CS_LIMIT.encoding(), 0xffff_ffff),
            (fields::GUEST_CS_ACCESS_RIGHTS.encoding(), cs_ar),
        ] {
            wr(vmcs01, f, v)?;
        }
        let fs_base = rd(v12, fields::HOST_FS_BASE.encoding())?;
        let gs_base = rd(v12, fields::HOST_GS_BASE.encoding())?;
        for (sel_host, sel, base_f, limit_f, ar_f, base) in [
            (
                fields::HOST_SS_SELECTOR.encoding(),
                fields::GUEST_SS_SELECTOR.encoding(),
                fields::GUEST_SS_BASE.encoding(),
                fields::GUEST_SS_LIMIT.encoding(),
                fields::GUEST_SS_ACCESS_RIGHTS.encoding(),
                0,
            ),
            (
                fields::HOST_DS_SELECTOR.encoding(),
                fields::GUEST_DS_SELECTOR.encoding(),
                fields::GUEST_DS_BASE.encoding(),
                fields::GUEST_DS_LIMIT.encoding(),
                fields::GUEST_DS_ACCESS_RIGHTS.encoding(),
                0,
            ),
            (
                fields::HOST_ES_SELECTOR.encoding(),
                fields::GUEST_ES_SELECTOR.encoding(),
                fields::GUEST_ES_BASE.encoding(),
                fields::GUEST_ES_LIMIT.encoding(),
                fields::GUEST_ES_ACCESS_RIGHTS.encoding(),
                0,
            ),
            (
                fields::HOST_FS_SELECTOR.encoding(),
                fields::GUEST_FS_SELECTOR.encoding(),
                fields::GUEST_FS_BASE.encoding(),
                fields::GUEST_FS_LIMIT.encoding(),
                fields::GUEST_FS_ACCESS_RIGHTS.encoding(),
                fs_base,
            ),
            (
                fields::HOST_GS_SELECTOR.encoding(),
                fields::GUEST_GS_SELECTOR.encoding(),
                fields::GUEST_GS_BASE.encoding(),
                fields::GUEST_GS_LIMIT.encoding(),
                fields::GUEST_GS_ACCESS_RIGHTS.encoding(),
                gs_base,
            ),
        ] {
            let selector = rd(v12, sel_host)?;
            for (f, v) in [
                (sel, selector),
                (base_f, base),
                (limit_f, 0xffff_ffff),
                (ar_f, data_ar(selector)),
            ] {
                wr(vmcs01, f, v)?;
            }
        }
        // TR: busy TSS (type 11), P; limit 67H. LDTR: unusable.
        let tr = rd(v12, fields::HOST_TR_SELECTOR.encoding())?;
        let tr_base = rd(v12, fields::HOST_TR_BASE.encoding())?;
        let gdtr = rd(v12, fields::HOST_GDTR_BASE.encoding())?;
        let idtr = rd(v12, fields::HOST_IDTR_BASE.encoding())?;
        for (f, v) in [
            (fields::GUEST_TR_SELECTOR.encoding(), tr),
            (fields::GUEST_TR_BASE.encoding(), tr_base),
            (fields::GUEST_TR_LIMIT.encoding(), 0x67),
            (fields::GUEST_TR_ACCESS_RIGHTS.encoding(), 0x8b),
            (fields::GUEST_LDTR_SELECTOR.encoding(), 0),
            (fields::GUEST_LDTR_ACCESS_RIGHTS.encoding(), UNUSABLE),
            (fields::GUEST_GDTR_BASE.encoding(), gdtr),
            (fields::GUEST_GDTR_LIMIT.encoding(), 0xffff),
            (fields::GUEST_IDTR_BASE.encoding(), idtr),
            (fields::GUEST_IDTR_LIMIT.encoding(), 0xffff),
        ] {
            wr(vmcs01, f, v)?;
        }
        Ok(())
    }

    /// IA32_EFER, IA32_PAT and IA32_PERF_GLOBAL_CTRL after a VM exit (SDM 28.5.1): loaded from
    /// the host fields under the "load" controls, else the current values (`current`); without
    /// "load IA32_EFER", LME and LMA follow "host address-space size".
    fn load_host_msr_fields(
        &self,
        current: &CurrentRegs,
        vmcs01: &mut (impl VmcsWrite + ?Sized),
        exit12: ExitControls,
        host64: bool,
    ) -> Result<(), ReflectError> {
        let Some(c) = self.current.as_ref() else {
            return Err(ReflectError::NoCurrentVmcs);
        };
        let v12 = &c.vmcs;
        // Without a "load" control the register keeps its current value.
        for (load, host_f, guest_f) in [
            (
                ExitControls::LOAD_IA32_EFER,
                fields::HOST_IA32_EFER.encoding(),
                fields::GUEST_IA32_EFER.encoding(),
            ),
            (
                ExitControls::LOAD_IA32_PAT,
                fields::HOST_IA32_PAT.encoding(),
                fields::GUEST_IA32_PAT.encoding(),
            ),
            (
                ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL,
                fields::HOST_IA32_PERF_GLOBAL_CTRL.encoding(),
                fields::GUEST_IA32_PERF_GLOBAL_CTRL.encoding(),
            ),
        ] {
            let kept = match guest_f {
                f if f == fields::GUEST_IA32_EFER.encoding() => current.efer,
                f if f == fields::GUEST_IA32_PAT.encoding() => current.pat,
                _ => current.perf_global_ctrl,
            };
            let value = if exit12.contains(load) {
                rd(v12, host_f)?
            } else {
                match kept {
                    Some(v) => v,
                    // A register this processor does not have: nothing to carry.
                    None => continue,
                }
            };
            let value = if guest_f == fields::GUEST_IA32_EFER.encoding()
                && !exit12.contains(ExitControls::LOAD_IA32_EFER)
            {
                (value & !EFER_LME_LMA) | if host64 { EFER_LME_LMA } else { 0 }
            } else {
                value
            };
            match vmcs01.write_raw(guest_f, value) {
                Err(error) if exit12.contains(load) => {
                    return Err(ReflectError::Vmcs {
                        encoding: guest_f,
                        error,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The PDPTEs of a PAE host, read from L1's memory at CR3 (SDM 28.5.4): `Some(abort 2)`
    /// when they cannot be read or a present one has reserved bits set.
    fn load_pdptes(
        vmcs01: &mut (impl VmcsWrite + ?Sized),
        mem: &mut (impl GuestMemory + ?Sized),
        cr3: u64,
        phys_width: u8,
    ) -> Result<Option<VmxAbort>, ReflectError> {
        let mut table = [0u8; 32];
        if mem.read(cr3 & 0xffff_ffe0, &mut table).is_err() {
            return Ok(Some(VmxAbort::HostPdptes));
        }
        // `L1VmxState::new` keeps the width within 32..=52: the shift is in range.
        let beyond = !((1u64 << phys_width) - 1);
        for (i, f) in [
            fields::GUEST_PDPTE0.encoding(),
            fields::GUEST_PDPTE1.encoding(),
            fields::GUEST_PDPTE2.encoding(),
            fields::GUEST_PDPTE3.encoding(),
        ]
        .into_iter()
        .enumerate()
        {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&table[8 * i..8 * i + 8]);
            let pdpte = u64::from_le_bytes(bytes);
            // Bits 2:1, 8:5 and those beyond the physical-address width are reserved.
            if pdpte & 1 != 0 && pdpte & (0x1e6 | beyond) != 0 {
                return Ok(Some(VmxAbort::HostPdptes));
            }
            wr(vmcs01, f, pdpte)?;
        }
        Ok(None)
    }
}
