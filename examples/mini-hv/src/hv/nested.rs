//! Nested VMX (`mini-hv.nested=1`): the hypervisor (L0) offers VMX to its guest (L1), emulates
//! L1's VMX instructions with `vmcs::nested::L1VmxState` over VMCS12 in L1's memory, and runs
//! L1's guest (L2) on the processor with VMCS02 (`vmcs::nested::build_vmcs02`); each exit of L2
//! goes to L1 (`exits::nested::exit_owner`, `L1VmxState::reflect_exit`) or stays with L0.
//!
//! What L1 is offered ([`policy`]): the controls VMCS02 can carry, EPT among them (L2 then runs
//! on EPT02, EPT12 composed with L1's RAM and filled page by page from L2's EPT violations,
//! emptied at L1's INVEPT; `vmcs::nested::resolve_ept_violation`), without VPID and unrestricted
//! guest (without VPID every VM entry and exit of L2 flushes the TLB), and without VMCS
//! shadowing for L1's own guests. L0 itself uses
//! VMCS shadowing where the processor has it (`mini-hv.nested=1`; `mini-hv.nested=noshadow`
//! turns it off): L1's VMREAD and VMWRITE of [`SHADOWED_FIELDS`] go to a shadow VMCS without an
//! exit, and L0 synchronizes it with VMCS12 around every VMX instruction of L1 it emulates
//! (`vmcs::nested::sync_from_shadow` before, `sync_to_shadow` after). L0 keeps no MSR lists for L1: an entry in a VM-entry or VM-exit MSR-load area of
//! VMCS12 fails (VM-entry failure 34, VMX abort 4), a VM-exit MSR-store entry is a VMX abort 1.

use ept::{EptConfig, EptMapper, MemoryType, OffsetPhysToVirt, Permissions};
use exits::nested::{ExitOwner, L2Registers, exit_owner};
use exits::{ExitReason, MemoryOperand, Operand, VmExit};
use vmcs::check::{self, CpuFacts, EntryInstruction};
use vmcs::nested::{Ept01, Ept02Resolution, L1Page, clear_ept02, resolve_ept_violation};
use vmcs::nested::{
    GuestMemory as L1Memory, GuestMsrs, L0Part, L1Context, L1VmxState, L2Entry, PointerOperand,
    Reflected, SHADOWED_FIELDS, VMCS02_CONTROLS, VmxFault, VmxOutcome, build_vmcs02,
    merge_io_bitmaps, merge_msr_bitmap, shadow_bitmaps, sync_from_shadow, sync_to_shadow,
};
use vmcs::structures::{InFrame, IoBitmaps, MsrBitmap, ShadowBitmap};
use vmcs::{GuestSegment, HardwareVmcs, SoftVmcs, VmcsRead, VmcsSnapshot, VmcsWrite, fields};
use vmx_caps::arch::{Cr4, Efer, Rflags};
use vmx_caps::virt::VirtualPolicy;
use vmx_caps::{ControlSet, MsrSnapshot, PinBasedControls, SecondaryControls, VmxCapabilities};
use vmx_core::{
    GpReg, GuestRegisters, HostStateCache, InveptDescriptor, InveptType, VmFail, VmxInstructions,
};

use super::Vmcs;
use super::memory::{GuestMemory, Paging};
use crate::guest::abi;
use crate::println;
use mini_hv_logic::guest_state::CrPolicy;

/// Whether the command line asks for nested VMX: `Some(true)` with VMCS shadowing where the
/// processor has it (`mini-hv.nested=1`), `Some(false)` without (`mini-hv.nested=noshadow`).
pub fn requested() -> Option<bool> {
    crate::boot::cmdline()
        .split_ascii_whitespace()
        .find_map(|w| match w {
            "mini-hv.nested=1" => Some(true),
            "mini-hv.nested=noshadow" => Some(false),
            _ => None,
        })
}

/// L0's VMCS shadowing for L1: the shadow VMCS and the VMREAD/VMWRITE bitmaps of VMCS01.
struct Shadow {
    phys: u64,
    vmread: &'static mut ShadowBitmap,
    vmwrite: &'static mut ShadowBitmap,
    /// VMCS01's link pointer points at the shadow VMCS (L1 has a current VMCS).
    linked: bool,
    /// "VMCS shadowing" is on in VMCS01: only while L1 is in VMX operation, since outside it
    /// L1's VMREAD and VMWRITE must #UD, which only L0's emulation gives.
    enabled: bool,
    /// L1's VMREAD/VMWRITE that went to the shadow VMCS are not counted by anyone; the syncs are.
    syncs: u64,
}

/// What L0 offers L1: VMCS02's controls but unrestricted guest and VPID.
pub fn policy() -> VirtualPolicy {
    let mut policy = VirtualPolicy::everything(abi::NESTED_VMCS_REVISION);
    policy.offer = VMCS02_CONTROLS;
    policy.without(SecondaryControls::UNRESTRICTED_GUEST | SecondaryControls::ENABLE_VPID)
}

/// Exits and reflections of the nested run.
pub struct Stats {
    /// L1's VMX instructions emulated.
    pub l1_instructions: u64,
    /// VM entries of L2 (VMCS02 launched or resumed).
    pub l2_entries: u64,
    /// Exits of L2 by basic exit reason.
    pub l2_exits: [u64; 96],
    /// Exits of L2 reflected to L1.
    pub reflected: u64,
    /// L1's VM entries that failed the SDM's checks (VMfail or entry failure), L1's own doing.
    pub l1_entry_refused: u64,
    /// Pages EPT02 got from L2's EPT violations.
    pub ept02_fills: u64,
    /// EPT violations and misconfigurations EPT12 caused, reflected to L1.
    pub ept12_exits: u64,
    /// Times EPT02 was emptied (L1's INVEPT, a new EPTP12).
    pub ept02_clears: u64,
}

/// What the exit handler does after a VMX instruction of L1.
pub enum Action {
    /// The instruction completed (RFLAGS set): skip it.
    Skip,
    /// Inject #UD.
    InvalidOpcode,
    /// Inject #GP(0).
    GeneralProtection,
    /// Inject #PF with this error code at this linear address (a memory operand not mapped).
    PageFault(u32, u64),
    /// Resume L1 where its state now says (after an exit of L2 or a failed entry).
    Resume,
    /// Stop the guest (the reason was printed).
    Stop,
}

/// L0's nested-VMX state for its one guest.
pub struct Nested {
    l1: L1VmxState,
    msrs: MsrSnapshot,
    real: VmxCapabilities,
    vmcs01_phys: u64,
    vmcs02_phys: u64,
    l0_msr: &'static MsrBitmap,
    l0_io: &'static IoBitmaps,
    msr02: &'static mut MsrBitmap,
    io02: &'static mut IoBitmaps,
    shadow: Option<Shadow>,
    /// EPT02, the tables that run L2 when L1 uses EPT.
    ept02: EptMapper<OffsetPhysToVirt, super::KernelFrames>,
    /// The EPTP12 whose translations EPT02 holds.
    ept02_for: Option<u64>,
    /// Exits and reflections.
    pub stats: Stats,
}

/// L0's EPT of L1 (EPT01) as the EPT02 composition consults it: L1's RAM, read/write/execute,
/// write-back, at `GuestMemory::host_base` plus the L1-physical address.
struct L1Ram<'a>(&'a GuestMemory);

impl Ept01 for L1Ram<'_> {
    fn translate_l1(&self, address: u64) -> Option<L1Page> {
        let page = address & !0xfff;
        self.0.contains(page, 4096).then(|| L1Page {
            host_physical: self.0.host_base() + page,
            permissions: Permissions::RWX,
            memory_type: MemoryType::WriteBack,
        })
    }
}

/// L1's memory for the emulation: guest RAM.
struct Ram<'a>(&'a GuestMemory);

impl check::PhysMemory for Ram<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), check::MemoryError> {
        self.0
            .read(address, buf)
            .map_err(|_| check::MemoryError::OutOfRange {
                address,
                len: buf.len(),
            })
    }
}

impl L1Memory for Ram<'_> {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), check::MemoryError> {
        self.0
            .write(address, bytes)
            .map_err(|_| check::MemoryError::OutOfRange {
                address,
                len: bytes.len(),
            })
    }
}

/// The MSRs of L1's MSR lists: L0 keeps none (see the module documentation).
struct NoMsrLists;

impl GuestMsrs for NoMsrLists {
    fn read(&mut self, msr: u32) -> Option<u64> {
        println!(
            "mini-hv: nested: L1's VM-exit MSR-store area names MSR {msr:#x}; L0 keeps no MSR lists"
        );
        None
    }
    fn write(&mut self, msr: u32, _value: u64) -> bool {
        println!("mini-hv: nested: L1's MSR-load area names MSR {msr:#x}; L0 keeps no MSR lists");
        false
    }
}

fn read_u64(mem: &GuestMemory, gpa: u64) -> Option<u64> {
    let mut bytes = [0u8; 8];
    mem.read(gpa, &mut bytes).ok()?;
    Some(u64::from_le_bytes(bytes))
}

impl Nested {
    /// The state for a guest of a processor with capabilities `real`, whose VMCS (VMCS01) is at
    /// `vmcs01_phys` with the bitmaps `l0_msr` and `l0_io`; `None` (printed) when the policy
    /// cannot be applied or memory is short.
    pub fn new(
        real: &VmxCapabilities,
        vmcs01_phys: u64,
        l0_msr: &'static MsrBitmap,
        l0_io: &'static IoBitmaps,
        shadowing: bool,
    ) -> Option<Self> {
        let virt = match policy().virtualize(real) {
            Ok(v) => v,
            Err(e) => {
                println!("mini-hv: nested: cannot make L1's capabilities: {e}");
                return None;
            }
        };
        let l1 = match L1VmxState::new(&virt.caps, super::phys_addr_width()) {
            Ok(l1) => l1,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return None;
            }
        };
        let (Some(vmcs02), Some(msr_frame), Some(io_frames)) = (
            crate::mem::alloc_frame(),
            crate::mem::alloc_frame(),
            crate::mem::alloc_frames(2),
        ) else {
            println!("mini-hv: nested: out of memory for VMCS02 and its bitmaps");
            return None;
        };
        // SAFETY: a fresh identity-mapped frame, used only as VMCS02 from here on.
        unsafe { (vmcs02 as *mut u32).write(real.basic.revision_id()) };
        // SAFETY: fresh identity-mapped frames, used only as VMCS02's bitmaps.
        let (msr02, io02) = unsafe { super::bitmaps_in(msr_frame, io_frames) }?;
        // SAFETY: the kernel's frame allocator hands out identity-mapped frames.
        let p2v = unsafe { OffsetPhysToVirt::identity() };
        let config = EptConfig::new(real.ept_vpid, super::phys_addr_width());
        let ept02 = match EptMapper::new(config, p2v, super::KernelFrames) {
            Ok(ept) => ept,
            Err(e) => {
                println!("mini-hv: nested: cannot create EPT02: {}", e.error);
                return None;
            }
        };
        let shadow = if shadowing && real.proc2.allows(SecondaryControls::VMCS_SHADOWING) {
            Some(Self::shadow(real, &virt.caps)?)
        } else {
            None
        };
        println!(
            "mini-hv: nested: VMX offered to the guest (VMCS revision {:#x}, VMCS02 at {vmcs02:#x}, \
             VMCS shadowing {})",
            abi::NESTED_VMCS_REVISION,
            if shadow.is_some() { "on" } else { "off" }
        );
        Some(Self {
            l1,
            msrs: virt.msrs,
            real: *real,
            vmcs01_phys,
            vmcs02_phys: vmcs02,
            l0_msr,
            l0_io,
            msr02,
            io02,
            shadow,
            ept02,
            ept02_for: None,
            stats: Stats {
                l1_instructions: 0,
                l2_entries: 0,
                l2_exits: [0; 96],
                reflected: 0,
                l1_entry_refused: 0,
                ept02_fills: 0,
                ept12_exits: 0,
                ept02_clears: 0,
            },
        })
    }

    /// The shadow VMCS (cleared, its header with the shadow-VMCS indicator) and the bitmaps for
    /// [`SHADOWED_FIELDS`] under L1's capabilities `l1`.
    fn shadow(real: &VmxCapabilities, l1: &VmxCapabilities) -> Option<Shadow> {
        let (Some(frame), Some(read_frame), Some(write_frame)) = (
            crate::mem::alloc_frame(),
            crate::mem::alloc_frame(),
            crate::mem::alloc_frame(),
        ) else {
            println!("mini-hv: nested: out of memory for the shadow VMCS");
            return None;
        };
        // SAFETY: a fresh identity-mapped frame, used only as the shadow VMCS from here on.
        unsafe { (frame as *mut u32).write(real.basic.revision_id() | 1 << 31) };
        // SAFETY: the frame is the shadow VMCS's (not current, never launched).
        if let Err(fail) = unsafe { vmx_core::instructions::vmclear(frame) } {
            println!("mini-hv: nested: VMCLEAR of the shadow VMCS failed: {fail}");
            return None;
        }
        // SAFETY: fresh identity-mapped frames, used only as these bitmaps.
        let bitmaps = unsafe {
            ShadowBitmap::from_frame(read_frame as *mut u8)
                .and_then(|r| Ok((r, ShadowBitmap::from_frame(write_frame as *mut u8)?)))
        };
        let (vmread, vmwrite) = match bitmaps {
            Ok(b) => b,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return None;
            }
        };
        shadow_bitmaps(&SHADOWED_FIELDS, l1, real, vmread, vmwrite);
        Some(Shadow {
            phys: frame,
            vmread,
            vmwrite,
            linked: false,
            enabled: false,
            syncs: 0,
        })
    }

    /// Prepares VMCS shadowing in VMCS01 (after L0 wrote it): the VMREAD/VMWRITE bitmaps and
    /// the link pointer FFFFFFFF_FFFFFFFFH; the control itself follows L1's VMXON and VMXOFF.
    pub fn attach(&mut self, vmcs: &mut Vmcs<'_>) -> Result<(), VmFail> {
        let Some(shadow) = &self.shadow else {
            return Ok(());
        };
        let read = super::identity(core::ptr::from_ref(&*shadow.vmread).cast()).unwrap_or(0);
        let write = super::identity(core::ptr::from_ref(&*shadow.vmwrite).cast()).unwrap_or(0);
        vmcs.write(fields::VMREAD_BITMAP_ADDRESS, read)?;
        vmcs.write(fields::VMWRITE_BITMAP_ADDRESS, write)?;
        vmcs.write(fields::VMCS_LINK_POINTER, u64::MAX)
    }

    /// Runs `f` with the shadow VMCS current, then makes VMCS01 current again.
    fn with_shadow<T>(
        phys: u64,
        vmcs01: u64,
        f: impl FnOnce(&mut HardwareVmcs) -> T,
    ) -> Result<T, VmFail> {
        // SAFETY: the shadow VMCS is this state's own cleared region; VMCS01 (the active VMCS of
        // the caller's handle) is current again before returning.
        unsafe { vmx_core::instructions::vmptrld(phys)? };
        // SAFETY: the shadow VMCS is current until the VMPTRLD below.
        let mut hw = unsafe { HardwareVmcs::new() };
        let result = f(&mut hw);
        // SAFETY: as above.
        unsafe { vmx_core::instructions::vmptrld(vmcs01)? };
        Ok(result)
    }

    /// Before L0 reads VMCS12 for L1: what L1 wrote through the shadow VMCS goes to VMCS12.
    fn shadow_to_vmcs12(&mut self) -> Result<(), VmFail> {
        let Some(shadow) = &mut self.shadow else {
            return Ok(());
        };
        let Some(vmcs12) = self.l1.current_vmcs_mut() else {
            return Ok(());
        };
        if !shadow.linked {
            return Ok(());
        }
        shadow.syncs += 1;
        let vmwrite = &*shadow.vmwrite;
        Self::with_shadow(shadow.phys, self.vmcs01_phys, |hw| {
            sync_from_shadow(hw, vmcs12, &SHADOWED_FIELDS, vmwrite)
        })?
    }

    /// After L0 emulated a VMX instruction of L1: "VMCS shadowing" follows L1's VMX operation,
    /// VMCS01's link pointer L1's current VMCS, and the shadow VMCS gets VMCS12's fields (`full`)
    /// or, after an instruction that can change no shadowed field but the VM-instruction error,
    /// that field alone.
    fn vmcs12_to_shadow(&mut self, vmcs: &mut Vmcs<'_>, full: bool) -> Result<(), VmFail> {
        let Some(shadow) = &mut self.shadow else {
            return Ok(());
        };
        let in_vmx = self.l1.in_vmx_operation();
        if in_vmx != shadow.enabled {
            vmcs.modify(
                fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                |c| {
                    if in_vmx {
                        c | SecondaryControls::VMCS_SHADOWING
                    } else {
                        c - SecondaryControls::VMCS_SHADOWING
                    }
                },
            )?;
            shadow.enabled = in_vmx;
        }
        let current = self.l1.current_vmcs();
        let link = current.is_some();
        if link != shadow.linked {
            vmcs.write(
                fields::VMCS_LINK_POINTER,
                if link { shadow.phys } else { u64::MAX },
            )?;
            shadow.linked = link;
        }
        let Some(vmcs12) = current else {
            return Ok(());
        };
        shadow.syncs += 1;
        let vmread = &*shadow.vmread;
        let error = [fields::VM_INSTRUCTION_ERROR.encoding()];
        let list: &[u32] = if full { &SHADOWED_FIELDS } else { &error };
        Self::with_shadow(shadow.phys, self.vmcs01_phys, |hw| {
            sync_to_shadow(vmcs12, hw, list, vmread)
        })?
    }

    /// INVEPT of EPT02's translations on this processor (the only one that runs L2).
    fn invept02(&self) -> Result<(), VmFail> {
        let kind = InveptType::best_for(&self.real.ept_vpid).unwrap_or(InveptType::AllContext);
        let descriptor = InveptDescriptor::new(self.ept02.eptp().bits());
        // SAFETY: VMX root operation, INVEPT supported (EPT02 exists only with EPT).
        unsafe { vmx_core::instructions::invept(kind, &descriptor) }
    }

    /// Empties EPT02 (L1's INVEPT, or another EPTP12) and invalidates what was derived from it.
    fn clear_ept02(&mut self) -> Result<(), VmFail> {
        match clear_ept02(&mut self.ept02) {
            Ok(Some(flush)) => {
                self.stats.ept02_clears += 1;
                self.invept02()?;
                // SAFETY: `invept02` invalidated EPT02's translations on this, the only processor
                // that uses EPT02.
                unsafe { self.ept02.assume_flushed(flush) };
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                // Unmapping 4-KiB pages needs no frame; should the mapper refuse, the next
                // EPTP12 check empties it again.
                println!("mini-hv: nested: emptying EPT02 failed: {e}");
                self.ept02_for = None;
                Ok(())
            }
        }
    }

    /// RDMSR of a VMX capability MSR as L1 reads it (`None`: not a capability MSR L1 has).
    pub fn rdmsr(&self, msr: u32) -> Option<u64> {
        (0x480..=0x493).contains(&msr).then(|| self.msrs.get(msr))?
    }

    /// Whether L1 is in VMX operation (CR4.VMXE cannot be cleared then).
    pub fn in_vmx_operation(&self) -> bool {
        self.l1.in_vmx_operation()
    }

    /// Prints the run's nested statistics.
    pub fn print_stats(&self) {
        let s = &self.stats;
        println!(
            "mini-hv: nested: {} VMX instructions of L1 emulated, {} VM entries of L2, {} exits of \
             L2 reflected to L1, {} of L1's VMLAUNCH/VMRESUME ended in L1 (fault, VMfail or VM-entry failure)",
            s.l1_instructions, s.l2_entries, s.reflected, s.l1_entry_refused
        );
        println!(
            "mini-hv: nested: EPT02: {} pages filled from L2's EPT violations, {} exits EPT12 \
             caused reflected to L1, emptied {} times",
            s.ept02_fills, s.ept12_exits, s.ept02_clears
        );
        if let Some(shadow) = &self.shadow {
            println!(
                "mini-hv: nested: VMCS shadowing on: {} shadow-VMCS synchronizations",
                shadow.syncs
            );
        }
        for (reason, &count) in s.l2_exits.iter().enumerate() {
            if count != 0 {
                println!("mini-hv: nested: L2 exit reason {reason:2}: {count}");
            }
        }
    }

    /// L1's processor state as its VMX instructions test it.
    fn context(vmcs: &Vmcs<'_>, cr: CrPolicy) -> Result<L1Context, VmFail> {
        let ss = vmcs.read(fields::GUEST_SS_ACCESS_RIGHTS)?;
        let cs = vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?;
        Ok(L1Context {
            cpl: ss.dpl(),
            cr0: cr.guest_cr0(vmcs)?,
            cr4: cr.guest_cr4(vmcs)?,
            rflags_vm: vmcs.read(fields::GUEST_RFLAGS)?.contains(Rflags::VM),
            efer_lma: vmcs.read(fields::GUEST_IA32_EFER)?.contains(Efer::LMA),
            cs_l: cs.long_mode(),
            blocked_by_mov_ss: vmcs.read(fields::GUEST_INTERRUPTIBILITY_STATE)?.bits() & 2 != 0,
        })
    }

    /// The guest-physical address of a memory operand (`Err`: the action for an unmapped one).
    fn operand(
        m: &MemoryOperand,
        displacement: u64,
        vmcs: &Vmcs<'_>,
        regs: &GuestRegisters,
        mem: &GuestMemory,
        write: bool,
    ) -> Result<Result<u64, Action>, VmFail> {
        let Ok(segment) = m.segment else {
            return Ok(Err(Action::InvalidOpcode));
        };
        let efer = vmcs.read(fields::GUEST_IA32_EFER)?;
        let long = efer.contains(Efer::LMA);
        let base = if long && !matches!(segment, GuestSegment::Fs | GuestSegment::Gs) {
            0
        } else {
            vmcs.read(segment.base_field())?
        };
        let rsp = vmcs.read(fields::GUEST_RSP)?;
        let Ok(linear) = m.linear_address_in(displacement, base, regs, rsp) else {
            return Ok(Err(Action::InvalidOpcode));
        };
        let paging = Paging::of(vmcs)?;
        Ok(match mem.translate(paging, linear) {
            Ok(gpa) => Ok(gpa),
            Err(_) => Err(Action::PageFault(if write { 2 } else { 0 }, linear)),
        })
    }

    /// Writes the outcome's arithmetic flags into L1's RFLAGS (SDM 31.2): the action to take.
    fn finish<T>(vmcs: &mut Vmcs<'_>, outcome: &VmxOutcome<T>) -> Result<Action, VmFail> {
        let Some((cf, zf)) = outcome.cf_zf() else {
            return Ok(match outcome {
                VmxOutcome::Fault(VmxFault::GeneralProtection) => Action::GeneralProtection,
                _ => Action::InvalidOpcode,
            });
        };
        let arithmetic =
            Rflags::CF | Rflags::PF | Rflags::AF | Rflags::ZF | Rflags::SF | Rflags::OF;
        let mut rflags = vmcs.read(fields::GUEST_RFLAGS)? - arithmetic;
        rflags.set(Rflags::CF, cf);
        rflags.set(Rflags::ZF, zf);
        vmcs.write(fields::GUEST_RFLAGS, rflags)?;
        Ok(Action::Skip)
    }

    /// Handles a VMX instruction exit of L1 (VMCALL excepted: the hypercall), with the shadow
    /// VMCS synchronized around it.
    pub fn instruction(
        &mut self,
        exit: &VmExit,
        vmcs: &mut Vmcs<'_>,
        regs: &mut GuestRegisters,
        mem: &GuestMemory,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        self.stats.l1_instructions += 1;
        // VMREAD, VMWRITE, VMPTRST, INVEPT and INVVPID read no field L1 may have written through
        // the shadow VMCS and change none it shows but the VM-instruction error.
        let full = !matches!(
            exit,
            VmExit::Vmread { .. }
                | VmExit::Vmwrite { .. }
                | VmExit::Vmptrst { .. }
                | VmExit::Invept { .. }
                | VmExit::Invvpid { .. }
        );
        if full {
            self.shadow_to_vmcs12()?;
        }
        let action = self.emulate(exit, vmcs, regs, mem, cr)?;
        self.vmcs12_to_shadow(vmcs, full)?;
        Ok(action)
    }

    /// The emulation of one VMX instruction of L1.
    fn emulate(
        &mut self,
        exit: &VmExit,
        vmcs: &mut Vmcs<'_>,
        regs: &mut GuestRegisters,
        mem: &GuestMemory,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        let cx = Self::context(vmcs, cr)?;
        let reg = |r: GpReg, vmcs: &Vmcs<'_>| -> Result<u64, VmFail> {
            match regs.gpr(r) {
                Some(v) => Ok(v),
                None => vmcs.read(fields::GUEST_RSP),
            }
        };
        macro_rules! address {
            ($m:expr, $d:expr, $write:expr) => {
                match Self::operand($m, $d, vmcs, regs, mem, $write)? {
                    Ok(gpa) => gpa,
                    Err(action) => return Ok(action),
                }
            };
        }
        macro_rules! pointer {
            ($m:expr, $d:expr) => {{
                let gpa = address!($m, $d, false);
                match read_u64(mem, gpa) {
                    Some(p) => PointerOperand::Memory(p),
                    None => return Ok(Action::GeneralProtection),
                }
            }};
        }
        let mut ram = Ram(mem);
        match exit {
            VmExit::Vmxon {
                displacement, info, ..
            } => {
                let p = pointer!(&info.0, *displacement);
                let o = self.l1.vmxon(&cx, p, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmxoff { .. } => {
                let o = self.l1.vmxoff(&cx, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmclear {
                displacement, info, ..
            } => {
                let p = pointer!(&info.0, *displacement);
                let o = self.l1.vmclear(&cx, p, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmptrld {
                displacement, info, ..
            } => {
                let p = pointer!(&info.0, *displacement);
                let o = self.l1.vmptrld(&cx, p, &mut ram);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmptrst {
                displacement, info, ..
            } => {
                let o = self.l1.vmptrst(&cx);
                if let VmxOutcome::Succeed(p) = o {
                    let gpa = address!(&info.0, *displacement, true);
                    if mem.write(gpa, &p.to_le_bytes()).is_err() {
                        return Ok(Action::GeneralProtection);
                    }
                }
                Self::finish(vmcs, &o)
            }
            VmExit::Vmread {
                displacement, info, ..
            } => {
                let field = reg(info.field_register, vmcs)?;
                let o = self.l1.vmread(&cx, field);
                if let VmxOutcome::Succeed(value) = o {
                    match info.operand {
                        Operand::Register(r) => match regs.set_gpr(r, value) {
                            Ok(()) => {}
                            Err(_) => vmcs.write(fields::GUEST_RSP, value)?,
                        },
                        Operand::Memory(m) => {
                            let gpa = address!(&m, *displacement, true);
                            if mem.write(gpa, &value.to_le_bytes()).is_err() {
                                return Ok(Action::GeneralProtection);
                            }
                        }
                    }
                }
                Self::finish(vmcs, &o)
            }
            VmExit::Vmwrite {
                displacement, info, ..
            } => {
                let field = reg(info.field_register, vmcs)?;
                let value = match info.operand {
                    Operand::Register(r) => reg(r, vmcs)?,
                    Operand::Memory(m) => {
                        let gpa = address!(&m, *displacement, false);
                        match read_u64(mem, gpa) {
                            Some(v) => v,
                            None => return Ok(Action::GeneralProtection),
                        }
                    }
                };
                let o = self.l1.vmwrite(&cx, field, value);
                Self::finish(vmcs, &o)
            }
            VmExit::Invept {
                displacement, info, ..
            } => {
                let kind = reg(info.register, vmcs)?;
                let descriptor = Self::descriptor(&info.memory, *displacement, vmcs, regs, mem)?;
                let descriptor = match descriptor {
                    Ok(d) => d,
                    Err(action) => return Ok(action),
                };
                let o = self.l1.invept(&cx, kind, descriptor);
                if let VmxOutcome::Succeed(_) = o {
                    // EPT02 holds only translations of L1's current EPTP12: any INVEPT type
                    // covers them.
                    self.clear_ept02()?;
                }
                Self::finish(vmcs, &o)
            }
            VmExit::Invvpid {
                displacement, info, ..
            } => {
                let kind = reg(info.register, vmcs)?;
                let descriptor = Self::descriptor(&info.memory, *displacement, vmcs, regs, mem)?;
                let descriptor = match descriptor {
                    Ok(d) => d,
                    Err(action) => return Ok(action),
                };
                let o = self.l1.invvpid(&cx, kind, descriptor, 48);
                Self::finish(vmcs, &o)
            }
            VmExit::Vmlaunch { .. } => {
                self.enter(&cx, EntryInstruction::Vmlaunch, vmcs, regs, mem, cr)
            }
            VmExit::Vmresume { .. } => {
                self.enter(&cx, EntryInstruction::Vmresume, vmcs, regs, mem, cr)
            }
            // VMFUNC: L1 is offered no VM functions.
            _ => Ok(Action::InvalidOpcode),
        }
    }

    /// The 128-bit INVEPT/INVVPID descriptor at a memory operand.
    fn descriptor(
        m: &MemoryOperand,
        displacement: u64,
        vmcs: &Vmcs<'_>,
        regs: &GuestRegisters,
        mem: &GuestMemory,
    ) -> Result<Result<u128, Action>, VmFail> {
        let gpa = match Self::operand(m, displacement, vmcs, regs, mem, false)? {
            Ok(gpa) => gpa,
            Err(action) => return Ok(Err(action)),
        };
        let mut bytes = [0u8; 16];
        Ok(match mem.read(gpa, &mut bytes) {
            Ok(()) => Ok(u128::from_le_bytes(bytes)),
            Err(_) => Err(Action::GeneralProtection),
        })
    }

    /// Applies L0's CR0/CR4 policy to the L1 state a VM exit of L2 (or a failed entry) wrote
    /// into VMCS01: the guest-visible values go to the read shadows, the real registers get the
    /// bits L0 fixes.
    fn apply_cr_policy(vmcs: &mut Vmcs<'_>, cr: CrPolicy) -> Result<(), VmFail> {
        let cr0 = vmcs.read(fields::CR0_READ_SHADOW)?;
        let cr4 = vmcs.read(fields::CR4_READ_SHADOW)?;
        vmcs.write(fields::GUEST_CR0, cr.real_cr0(cr0))?;
        vmcs.write(fields::GUEST_CR4, cr.real_cr4(cr4))?;
        Ok(())
    }

    /// L1's VMLAUNCH or VMRESUME.
    fn enter(
        &mut self,
        cx: &L1Context,
        instruction: EntryInstruction,
        vmcs: &mut Vmcs<'_>,
        regs: &mut GuestRegisters,
        mem: &GuestMemory,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        let mut ram = Ram(mem);
        let entry = self.l1.enter_l2(
            cx,
            instruction,
            CpuFacts::from_cpuid(),
            &mut ram,
            &mut |_: &check::Violation| {},
            &mut NoMsrLists,
        );
        match entry {
            Err(e) => {
                println!("mini-hv: nested: VMCS12 cannot be checked: {e}");
                Ok(Action::Stop)
            }
            Ok(L2Entry::Instruction(o)) => {
                self.stats.l1_entry_refused += 1;
                Self::finish(vmcs, &o)
            }
            Ok(L2Entry::EntryFailure { .. }) => {
                self.stats.l1_entry_refused += 1;
                match self
                    .l1
                    .exit_after_failed_entry(vmcs, &mut ram, &mut NoMsrLists)
                {
                    Ok(Reflected::Resume) => {
                        Self::apply_cr_policy(vmcs, cr)?;
                        Ok(Action::Resume)
                    }
                    Ok(Reflected::Abort(abort)) => {
                        println!("mini-hv: nested: VMX abort {abort:?} of L1 (shutdown)");
                        Ok(Action::Stop)
                    }
                    Err(e) => {
                        println!("mini-hv: nested: {e}");
                        Ok(Action::Stop)
                    }
                }
            }
            Ok(L2Entry::Enter) => self.run_l2(vmcs, regs, mem, cr),
        }
    }

    /// Makes VMCS01 current again.
    fn back_to_vmcs01(&self) -> Result<(), VmFail> {
        // SAFETY: VMCS01 is the active VMCS of this processor's `Vmcs` handle, which the caller
        // holds; it was current before `run_l2` made VMCS02 current.
        unsafe { vmx_core::instructions::vmptrld(self.vmcs01_phys) }
    }

    /// Runs L2 with VMCS02 until an exit that belongs to L1, then reflects it.
    fn run_l2(
        &mut self,
        vmcs: &mut Vmcs<'_>,
        regs: &mut GuestRegisters,
        mem: &GuestMemory,
        cr: CrPolicy,
    ) -> Result<Action, VmFail> {
        // VMCS01 (current) as software: L0's host state, L1's registers.
        let vmcs01 = match SoftVmcs::from_snapshot(&self.real, &VmcsSnapshot::capture(vmcs)?) {
            Ok(v) => v,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return Ok(Action::Stop);
            }
        };
        // EPTP12, when L1 uses EPT; EPT02 must hold only its translations.
        let eptp12 = match self.l1.current_vmcs() {
            Some(v12) => v12
                .read_controls()?
                .proc2
                .contains(SecondaryControls::ENABLE_EPT)
                .then(|| v12.read_raw(fields::EPT_POINTER.encoding()))
                .transpose()?,
            None => return Ok(Action::Stop),
        };
        if eptp12.is_some() && self.ept02_for != eptp12 {
            self.clear_ept02()?;
            self.ept02_for = eptp12;
        }
        let Some(vmcs12) = self.l1.current_vmcs() else {
            return Ok(Action::Stop);
        };
        let mut ram = Ram(mem);
        let merged = merge_msr_bitmap(vmcs12, &mut ram, self.l0_msr, self.msr02)
            .and_then(|()| merge_io_bitmaps(vmcs12, &mut ram, self.l0_io, self.io02));
        if let Err(e) = merged {
            println!("mini-hv: nested: {e}");
            return Ok(Action::Stop);
        }
        let c01 = vmcs.read_controls()?;
        let mut own = ControlSet::EMPTY;
        own.pin = c01.pin
            & (PinBasedControls::EXTERNAL_INTERRUPT_EXITING
                | PinBasedControls::NMI_EXITING
                | PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
        own.exit = c01.exit;
        let io02 = super::identity(core::ptr::from_ref(&*self.io02).cast()).unwrap_or(0);
        let part = L0Part {
            controls: own,
            exceptions: vmcs::ExceptionBitmap::empty(),
            cr0_mask: cr.cr0_mask().bits(),
            cr4_mask: cr.cr4_mask().bits(),
            eptp: vmcs.read_raw(fields::EPT_POINTER.encoding())?,
            vpid: 0,
            msr_bitmap: super::identity(core::ptr::from_ref(&*self.msr02).cast()).unwrap_or(0),
            io_bitmaps: (io02, io02 + 4096),
            preemption_timer: vmcs01
                .read(fields::VMX_PREEMPTION_TIMER_VALUE)
                .unwrap_or(u32::MAX),
        };
        // VMCS02 runs on EPT: EPT02 (EPT12 composed with L0's EPT of L1's RAM) where L1 uses
        // EPT, else L0's EPT for L1 itself.
        let mut part = part;
        part.controls.proc2 = SecondaryControls::ENABLE_EPT;
        if eptp12.is_some() {
            part.eptp = self.ept02.eptp().bits();
        }
        // SAFETY: VMCS02's region is this state's own frame with the processor's revision; VMCLEAR
        // and VMPTRLD make it current (VMCS01 stays active and becomes current again below).
        unsafe {
            vmx_core::instructions::vmclear(self.vmcs02_phys)?;
            vmx_core::instructions::vmptrld(self.vmcs02_phys)?;
        }
        // SAFETY: VMCS02 is current until `back_to_vmcs01`.
        let mut hw = unsafe { HardwareVmcs::new() };
        let built = match build_vmcs02(vmcs12, &vmcs01, &part, &self.real, &mut hw) {
            Ok(built) => built,
            Err(e) => {
                self.back_to_vmcs01()?;
                println!("mini-hv: nested: cannot build VMCS02: {e}");
                return Ok(Action::Stop);
            }
        };
        // VMCS02 was cleared: VMLAUNCH, then VMRESUME after each exit L0 resolves itself (an
        // EPT violation EPT02 lacked a page for) until an exit that is L1's.
        let mut cache = HostStateCache::new();
        let mut launched = false;
        let ept12_exit = loop {
            self.stats.l2_entries += 1;
            // SAFETY: VMCS02 is current; its host state is VMCS01's (this host) with HOST_RSP
            // and HOST_RIP the trampoline's (written through `cache`); it runs L2 on EPT02 or
            // L0's EPT of L1's memory; CR4.OSFXSR set, CR0.TS/EM clear (boot code).
            let entered = unsafe { vmcs.processor_mut().vm_entry(regs, &mut cache, launched) };
            if let Err(fail) = entered {
                self.back_to_vmcs01()?;
                println!("mini-hv: nested: VM entry of VMCS02 failed: {fail}");
                return Ok(Action::Stop);
            }
            let reason = match ExitReason::read(&hw) {
                Ok(reason) => reason,
                Err(e) => {
                    self.back_to_vmcs01()?;
                    println!("mini-hv: nested: cannot read L2's exit reason: {e}");
                    return Ok(Action::Stop);
                }
            };
            if reason.entry_failure {
                let q = hw.read_raw(fields::EXIT_QUALIFICATION.encoding())?;
                self.back_to_vmcs01()?;
                println!("mini-hv: nested: VMCS02 failed VM entry: {reason}, qualification {q}");
                return Ok(Action::Stop);
            }
            launched = true;
            if let Some(count) = self
                .stats
                .l2_exits
                .get_mut(usize::from(reason.basic.number()))
            {
                *count += 1;
            }
            let exit = match VmExit::read_for(reason, &hw) {
                Ok(exit) => exit,
                Err(e) => {
                    self.back_to_vmcs01()?;
                    println!("mini-hv: nested: cannot read L2's exit: {e}");
                    return Ok(Action::Stop);
                }
            };
            let l2 = L2Registers {
                frame: regs,
                rsp: hw.read_raw(fields::GUEST_RSP.encoding())?,
                ia32_xss: 0,
            };
            let owner = exit_owner(&exit, vmcs12, &mut ram, &l2, built.timer_is_l1s)?;
            let rip = hw.read_raw(fields::GUEST_RIP.encoding())?;
            match (owner, exit, eptp12) {
                (ExitOwner::L1, ..) => break None,
                (ExitOwner::Ept12, VmExit::EptViolation { guest_physical, .. }, Some(eptp12)) => {
                    let qualification = hw.read_raw(fields::EXIT_QUALIFICATION.encoding())?;
                    let resolved = resolve_ept_violation(
                        eptp12,
                        self.l1.caps().ept_vpid,
                        super::phys_addr_width(),
                        guest_physical,
                        qualification,
                        &mut ram,
                        &L1Ram(mem),
                        &mut self.ept02,
                    );
                    match resolved {
                        Ok(Ept02Resolution::Mapped { flush, .. }) => {
                            self.stats.ept02_fills += 1;
                            self.invept02()?;
                            // SAFETY: `invept02` invalidated EPT02's translations on this, the
                            // only processor that uses EPT02.
                            unsafe { self.ept02.assume_flushed(flush) };
                        }
                        Ok(Ept02Resolution::Reflect(e)) => {
                            self.stats.ept12_exits += 1;
                            break Some(e);
                        }
                        Ok(Ept02Resolution::L1Access { l1_physical }) => {
                            self.back_to_vmcs01()?;
                            println!(
                                "mini-hv: nested: L2 at RIP {rip:#x} reaches L1-physical \
                                 {l1_physical:#x}, which is not L1's RAM; stopping"
                            );
                            return Ok(Action::Stop);
                        }
                        Err(e) => {
                            self.back_to_vmcs01()?;
                            println!("mini-hv: nested: EPT02: {e}; stopping");
                            return Ok(Action::Stop);
                        }
                    }
                }
                (_, exit, _) => {
                    self.back_to_vmcs01()?;
                    match exit {
                        VmExit::PreemptionTimerExpired => println!(
                            "mini-hv: nested: watchdog: L2 ran without a VM exit (RIP {rip:#x}); \
                             stopping"
                        ),
                        other => println!(
                            "mini-hv: nested: L2's exit at RIP {rip:#x} is L0's ({other}), which \
                             emulates nothing else for L2; stopping"
                        ),
                    }
                    return Ok(Action::Stop);
                }
            }
        };
        // An exit EPT12 causes carries EPT12's reason and qualification.
        let info = ept12_exit.map(|e| e.exit_info(&hw));
        // L2's state as the processor left it, then L1's.
        let vmcs02 = SoftVmcs::from_snapshot(&self.real, &VmcsSnapshot::capture(&hw)?);
        self.back_to_vmcs01()?;
        let vmcs02 = match vmcs02 {
            Ok(v) => v,
            Err(e) => {
                println!("mini-hv: nested: {e}");
                return Ok(Action::Stop);
            }
        };
        self.stats.reflected += 1;
        let info = info.as_ref().unwrap_or(&vmcs02);
        match self
            .l1
            .reflect_exit(info, &vmcs02, &built, vmcs, &mut ram, &mut NoMsrLists)
        {
            Ok(Reflected::Resume) => {
                Self::apply_cr_policy(vmcs, cr)?;
                Ok(Action::Resume)
            }
            Ok(Reflected::Abort(abort)) => {
                println!("mini-hv: nested: VMX abort {abort:?} of L1 (shutdown)");
                Ok(Action::Stop)
            }
            Err(e) => {
                println!("mini-hv: nested: reflecting L2's exit failed: {e}");
                Ok(Action::Stop)
            }
        }
    }
}

/// CR4 value helper for the exit handler: whether a MOV to CR4 of `value` would clear VMXE
/// while L1 is in VMX operation (#GP(0), SDM "MOV—Move to/from Control Registers").
pub fn clears_vmxe_in_vmx_operation(nested: Option<&Nested>, value: u64) -> bool {
    nested.is_some_and(|n| n.in_vmx_operation()) && value & Cr4::VMXE.bits() == 0
}
