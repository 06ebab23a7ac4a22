//! Emulation of the VMX instructions for a guest hypervisor (L1) over a software VMCS, for an
//! outer hypervisor (L0) that gets a VM exit for each of L1's VMX instructions.
//!
//! Each instruction follows the "Operation" pseudocode of its page in SDM Vol. 3C, chapter 31
//! ("VMX Instruction Reference"), from the point of view of a processor that L1 believes it runs
//! on: the #UD and #GP(0) checks that precede everything, then VMfailInvalid, VMfailValid with
//! an error number written into the current VMCS's VM-instruction error field, or VMsucceed
//! ([`VmxOutcome`]). The capabilities are the ones L0 shows L1 (see `vmx_caps::virt`).
//!
//! The VMCS of L1 (VMCS12) lives where a processor keeps it: in L1's memory, in the region L1
//! gave VMPTRLD ([`GuestMemory`]). The current VMCS is cached in a [`SoftVmcs`] and written back
//! to its region on VMCLEAR, on a VMPTRLD of another region and on VMXOFF. The region's layout
//! (implementation-specific, as the SDM leaves it) is: bytes 3:0 the revision identifier (bit 31
//! the shadow-VMCS indicator), 7:4 the VMX-abort indicator, 11:8 the launch state (0 clear,
//! 1 launched), then every field of [`fields::ALL`] as 8 little-endian bytes, in that order.
//!
//! The pieces of nested VMX over this emulation:
//! - [`L1VmxState::enter_l2`]: L1's VMLAUNCH/VMRESUME, VMCS12 checked as the processor checks a
//!   VMCS, the VM-entry MSR-load area loaded into L0's model of the shared MSRs ([`GuestMsrs`]);
//! - [`build_vmcs02`]: the VMCS that runs L2, from VMCS12 and L0's part ([`L0Part`]), with the
//!   merged bitmaps ([`merge_msr_bitmap`], [`merge_io_bitmaps`]; [`MergedMsrBitmap`] and
//!   [`MergedIoBitmaps`] keep them merged across entries, visiting only the words L1 decides);
//! - `exits::nested::exit_owner`: whether an exit of L2 is L1's;
//! - [`L1VmxState::reflect_exit`]: the exit carried out for L1 as SDM chapter 28 describes;
//! - [`resolve_ept_violation`] and [`clear_ept02`]: EPT02 = EPT12 ∘ EPT01, filled on demand and
//!   emptied at L1's INVEPT; EPT12's faults become L1's exits ([`Ept12Exit`]); with "enable
//!   PML" in VMCS12, L0 keeps L1's page-modification log there ([`Pml12`]);
//! - [`shadow_bitmaps`], [`sync_to_shadow`], [`sync_from_shadow`]: VMCS shadowing, L1's VMREAD
//!   and VMWRITE of the common fields ([`SHADOWED_FIELDS`]) without an exit;
//! - [`L1VmxState::vmfunc`]: L2's VMFUNC (EPTP switching) carried out by L0 as L1's processor
//!   would, or left an exit to L1 ([`VmfuncOutcome`]);
//! - [`deliver_ve`]: an EPT violation EPT12 causes delivered to L2 as a virtualization
//!   exception where L1's processor would convert it ([`VeDelivery`]).
//!
//! ```
//! use vmcs::nested::{L1Context, L1VmxState, PointerOperand, VmxFault, VmxOutcome};
//! use vmcs::check::FlatMemory;
//! use vmx_caps::{MsrSnapshot, VmxCapabilities};
//! use vmx_core::VmInstructionError;
//!
//! # let mut msrs = MsrSnapshot::parse(include_str!("../../../vmx-caps/testdata/tigerlake.msr")).unwrap();
//! let caps = VmxCapabilities::read(&mut msrs)?; // the capabilities L1 sees
//! let mut l1_memory = vec![0u8; 0x10000];
//! l1_memory[0x1000..0x1004].copy_from_slice(&caps.basic.revision_id().to_le_bytes());
//! l1_memory[0x2000..0x2004].copy_from_slice(&caps.basic.revision_id().to_le_bytes());
//! let mut mem = vmcs::nested::FlatGuestMemory { base: 0, bytes: &mut l1_memory };
//!
//! let mut l1 = L1VmxState::new(&caps, 39)?;
//! let cx = L1Context::long_mode_cpl0();
//! assert_eq!(l1.vmxon(&cx, PointerOperand::Memory(0x1000), &mut mem), VmxOutcome::Succeed(()));
//! // VMPTRLD of the VMXON region itself: VMfailValid is impossible without a current VMCS.
//! assert_eq!(l1.vmptrld(&cx, PointerOperand::Memory(0x1000), &mut mem), VmxOutcome::VmFailInvalid);
//! assert_eq!(l1.vmclear(&cx, PointerOperand::Memory(0x2000), &mut mem), VmxOutcome::Succeed(()));
//! assert_eq!(l1.vmptrld(&cx, PointerOperand::Memory(0x2000), &mut mem), VmxOutcome::Succeed(()));
//! assert_eq!(
//!     l1.vmread(&cx, 0x7777),
//!     VmxOutcome::VmFailValid(VmInstructionError::UnsupportedVmcsComponent)
//! );
//! // At CPL 3 every VMX instruction faults.
//! let user = L1Context { cpl: 3, ..cx };
//! assert_eq!(l1.vmptrst(&user), VmxOutcome::Fault(VmxFault::GeneralProtection));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::{CrUse, EptVpidCap, SecondaryControls, VmxCapabilities};
use vmx_core::{InveptType, InvvpidType, VmFail, VmInstructionError};

use crate::access::{VmcsRead, VmcsWrite};
use crate::check::{EntryInstruction, LaunchState, MemoryError, PhysMemory};
use crate::fields;
use crate::soft::SoftVmcs;

mod bitmaps;
mod dirty;
mod entry;
mod ept02;
mod exit;
mod shadow;
mod ve;
mod vmcs02;
mod vmfunc;
pub use bitmaps::{MergedIoBitmaps, MergedMsrBitmap};
pub use dirty::DirtyFields;
pub use entry::L2Entry;
pub use ept02::{
    Ept01, Ept02Resolution, Ept12Exit, L1Page, Pml12, clear_ept02, resolve_ept_violation,
};
pub use exit::{ReflectError, Reflected, SavedExit, VmxAbort};
pub use shadow::{SHADOWED_FIELDS, shadow_bitmaps, sync_from_shadow, sync_to_shadow};
pub use ve::{VeDelivery, deliver_ve};
pub use vmcs02::{
    ApicPages02, GuestMsrs, L0Part, VMCS02_CONTROLS, Vmcs02, Vmcs02Error, build_vmcs02,
    load_entry_msrs, merge_io_bitmaps, merge_msr_bitmap, vmcs02_preemption_timer,
};
pub use vmfunc::VmfuncOutcome;

/// Offset of the launch state in a VMCS12 region.
const LAUNCH_STATE_OFFSET: u64 = 8;
/// Offset of the first field value in a VMCS12 region.
const FIELDS_OFFSET: u64 = 16;
/// Bytes of a VMCS12 region this layout uses.
pub const VMCS12_LAYOUT_SIZE: u32 = FIELDS_OFFSET as u32 + 8 * fields::COUNT as u32;
const _: () = assert!(VMCS12_LAYOUT_SIZE <= 4096);

/// The value of an invalid current-VMCS pointer (SDM: "FFFFFFFF_FFFFFFFFH").
pub const INVALID_POINTER: u64 = u64::MAX;

/// Read and write access to L1's physical memory (guest-physical addresses of L1).
pub trait GuestMemory: PhysMemory {
    /// Writes `bytes` at L1-physical address `address`.
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError>;
}

impl<T: GuestMemory + ?Sized> GuestMemory for &mut T {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        (**self).write(address, bytes)
    }
}

/// L1's memory as one mutable byte slice starting at L1-physical address `base`.
#[derive(Debug)]
pub struct FlatGuestMemory<'a> {
    /// L1-physical address of `bytes[0]`.
    pub base: u64,
    /// The memory.
    pub bytes: &'a mut [u8],
}

impl FlatGuestMemory<'_> {
    fn range(&self, address: u64, len: usize) -> Result<core::ops::Range<usize>, MemoryError> {
        let out = MemoryError::OutOfRange { address, len };
        let start = usize::try_from(address.checked_sub(self.base).ok_or(out)?).map_err(|_| out)?;
        let end = start.checked_add(len).ok_or(out)?;
        if end > self.bytes.len() {
            return Err(out);
        }
        Ok(start..end)
    }
}

impl PhysMemory for FlatGuestMemory<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let range = self.range(address, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }
}

impl GuestMemory for FlatGuestMemory<'_> {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let range = self.range(address, bytes.len())?;
        self.bytes[range].copy_from_slice(bytes);
        Ok(())
    }
}

/// The fault a VMX instruction raises instead of completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmxFault {
    /// #UD: invalid opcode (outside VMX operation, outside protected mode, in virtual-8086 mode,
    /// in compatibility mode, a register operand where memory is required, an instruction the
    /// capabilities do not offer).
    InvalidOpcode,
    /// #GP(0): CPL > 0, or for VMXON CR0/CR4 values not allowed in VMX operation or
    /// IA32_FEATURE_CONTROL not allowing VMXON.
    GeneralProtection,
}

/// How a VMX instruction ends (SDM Vol. 3C, 31.2 "Conventions"), with the instruction's result
/// `T` on success (the VMREAD value, the VMPTRST pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmxOutcome<T = ()> {
    /// VMsucceed: CF, PF, AF, ZF, SF and OF cleared.
    Succeed(T),
    /// VMfailInvalid: CF set, other arithmetic flags cleared.
    VmFailInvalid,
    /// VMfailValid: ZF set, other arithmetic flags cleared; the error number has been written
    /// into the current VMCS's VM-instruction error field.
    VmFailValid(VmInstructionError),
    /// The instruction faults; nothing else happened.
    Fault(VmxFault),
}

impl<T> VmxOutcome<T> {
    /// The RFLAGS arithmetic flags after the instruction, as `(CF, ZF)`; the other arithmetic
    /// flags (PF, AF, SF, OF) are cleared in every case. `None` for a fault.
    pub const fn cf_zf(&self) -> Option<(bool, bool)> {
        match self {
            Self::Succeed(_) => Some((false, false)),
            Self::VmFailInvalid => Some((true, false)),
            Self::VmFailValid(_) => Some((false, true)),
            Self::Fault(_) => None,
        }
    }
}

/// The memory operand of VMXON, VMCLEAR and VMPTRLD, or the register form, which is #UD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointerOperand {
    /// The 64-bit physical address read from the instruction's memory operand.
    Memory(u64),
    /// The instruction was encoded with a register operand.
    Register,
}

/// L1's processor state at the VMX instruction, as the instruction pages test it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Context {
    /// The current privilege level.
    pub cpl: u8,
    /// L1's CR0 (as L1 sees it).
    pub cr0: Cr0,
    /// L1's CR4 (as L1 sees it).
    pub cr4: Cr4,
    /// RFLAGS.VM (virtual-8086 mode).
    pub rflags_vm: bool,
    /// IA32_EFER.LMA.
    pub efer_lma: bool,
    /// CS.L (64-bit code segment).
    pub cs_l: bool,
    /// Events are blocked by MOV SS (guest interruptibility state bit 1).
    pub blocked_by_mov_ss: bool,
}

impl L1Context {
    /// 64-bit mode at CPL 0 with CR0.PE, PG, NE and CR4.PAE, VMXE set.
    pub const fn long_mode_cpl0() -> Self {
        Self {
            cpl: 0,
            cr0: Cr0::from_bits_retain(
                Cr0::PE.bits() | Cr0::NE.bits() | Cr0::PG.bits() | Cr0::ET.bits(),
            ),
            cr4: Cr4::from_bits_retain(Cr4::PAE.bits() | Cr4::VMXE.bits()),
            rflags_vm: false,
            efer_lma: true,
            cs_l: true,
            blocked_by_mov_ss: false,
        }
    }

    /// The mode checks every VMX instruction starts with: CR0.PE = 0, RFLAGS.VM = 1, or
    /// IA32_EFER.LMA = 1 with CS.L = 0 (compatibility mode) are #UD.
    fn mode_faults(&self) -> bool {
        !self.cr0.contains(Cr0::PE) || self.rflags_vm || (self.efer_lma && !self.cs_l)
    }
}

/// Why an [`L1VmxState`] cannot be made for some capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum L1StateError {
    /// `IA32_VMX_BASIC[44:32]` is smaller than the VMCS12 layout needs.
    #[error(
        "VMCS region size {size} is below the {VMCS12_LAYOUT_SIZE} bytes the VMCS12 layout needs"
    )]
    RegionTooSmall {
        /// The region size of the capabilities.
        size: u32,
    },
    /// The physical-address width is not between 32 and 52.
    #[error("physical-address width {0} is not between 32 and 52")]
    PhysicalAddressWidth(u8),
}

/// The current VMCS: its pointer, its cached contents and its launch state.
#[derive(Debug, Clone)]
struct Current {
    pointer: u64,
    vmcs: SoftVmcs,
    launch: LaunchState,
    shadow: bool,
    /// Fields L1 changed since L0 last took them.
    dirty: DirtyFields,
}

/// L1's VMX state as its (virtual) processor holds it: in VMX operation or not, the VMXON
/// pointer, the current VMCS (cached) with its launch state.
#[derive(Debug, Clone)]
pub struct L1VmxState {
    caps: VmxCapabilities,
    phys_width: u8,
    vmxon: Option<u64>,
    current: Option<Current>,
}

impl L1VmxState {
    /// The state of a processor outside VMX operation with L1's capabilities `caps` and
    /// physical-address width `maxphyaddr` (CPUID.80000008H:EAX\[7:0\] as L1 sees it;
    /// `IA32_VMX_BASIC[48]` limits it to 32 for the VMX pointers).
    ///
    /// # Errors
    ///
    /// [`L1StateError`] when the VMCS region is smaller than the VMCS12 layout or the width is
    /// out of range.
    pub fn new(caps: &VmxCapabilities, maxphyaddr: u8) -> Result<Self, L1StateError> {
        if caps.basic.vmcs_region_size() < VMCS12_LAYOUT_SIZE {
            return Err(L1StateError::RegionTooSmall {
                size: caps.basic.vmcs_region_size(),
            });
        }
        if !(32..=52).contains(&maxphyaddr) {
            return Err(L1StateError::PhysicalAddressWidth(maxphyaddr));
        }
        let phys_width = if caps.basic.physical_address_width_32() {
            32
        } else {
            maxphyaddr
        };
        Ok(Self {
            caps: *caps,
            phys_width,
            vmxon: None,
            current: None,
        })
    }

    /// Whether L1 is in VMX operation (after VMXON, before VMXOFF).
    pub const fn in_vmx_operation(&self) -> bool {
        self.vmxon.is_some()
    }

    /// The VMXON pointer, while in VMX operation.
    pub const fn vmxon_pointer(&self) -> Option<u64> {
        self.vmxon
    }

    /// The current-VMCS pointer, `None` where it is invalid (FFFFFFFF_FFFFFFFFh).
    pub fn current_pointer(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.pointer)
    }

    /// The current VMCS (VMCS12), if any.
    pub fn current_vmcs(&self) -> Option<&SoftVmcs> {
        self.current.as_ref().map(|c| &c.vmcs)
    }

    /// The current VMCS (VMCS12) for writing, if any: for L0 to store VM-exit information.
    pub fn current_vmcs_mut(&mut self) -> Option<&mut SoftVmcs> {
        self.current.as_mut().map(|c| &mut c.vmcs)
    }

    /// The fields of the current VMCS L1 changed since the last call (by VMWRITE, through
    /// [`L1VmxState::sync_from_shadow`] or [`L1VmxState::mark_dirty`]; every field after the
    /// VMPTRLD that made it current), and from now none: what L0 must carry into a VMCS02 it
    /// keeps. Without a current VMCS, every field.
    pub fn take_dirty(&mut self) -> DirtyFields {
        match self.current.as_mut() {
            Some(c) => core::mem::take(&mut c.dirty),
            None => DirtyFields::all(),
        }
    }

    /// Marks a field of the current VMCS changed (L0 changed it through
    /// [`L1VmxState::current_vmcs_mut`] on L1's behalf).
    pub fn mark_dirty(&mut self, encoding: u32) {
        if let Some(c) = self.current.as_mut() {
            c.dirty.mark(encoding);
        }
    }

    /// [`sync_from_shadow`] into the current VMCS, marking the fields whose value changed (L1's
    /// VMWRITEs that went to the shadow VMCS without an exit). Nothing without a current VMCS.
    ///
    /// # Errors
    ///
    /// As [`sync_from_shadow`].
    pub fn sync_from_shadow(
        &mut self,
        shadow: &(impl VmcsRead + ?Sized),
        shadowed: &[u32],
        vmwrite: &crate::structures::ShadowBitmap,
    ) -> Result<(), VmFail> {
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        let dirty = &mut c.dirty;
        shadow::sync_from_shadow_with(shadow, &mut c.vmcs, shadowed, vmwrite, |encoding| {
            dirty.mark(encoding);
        })
    }

    /// The launch state of the current VMCS, if any.
    pub fn launch_state(&self) -> Option<LaunchState> {
        self.current.as_ref().map(|c| c.launch)
    }

    /// Marks the current VMCS launched: L0 calls this when a VMLAUNCH of L1 has entered L2
    /// (SDM "VM Entries": a VM entry by VMLAUNCH that succeeds sets the launch state of the
    /// current VMCS to "launched").
    pub fn mark_launched(&mut self) {
        if let Some(c) = self.current.as_mut() {
            c.launch = LaunchState::Launched;
        }
    }

    /// The capabilities L1 sees.
    pub const fn caps(&self) -> &VmxCapabilities {
        &self.caps
    }

    /// The checks common to every instruction but VMXON: #UD outside VMX operation or in the
    /// wrong mode, #GP(0) at CPL > 0.
    fn common<T>(&self, cx: &L1Context) -> Result<u64, VmxOutcome<T>> {
        let Some(vmxon) = self.vmxon else {
            return Err(VmxOutcome::Fault(VmxFault::InvalidOpcode));
        };
        if cx.mode_faults() {
            return Err(VmxOutcome::Fault(VmxFault::InvalidOpcode));
        }
        if cx.cpl > 0 {
            return Err(VmxOutcome::Fault(VmxFault::GeneralProtection));
        }
        Ok(vmxon)
    }

    /// The SDM's VMfail(ErrorNumber): VMfailValid with the number written into the current
    /// VMCS's VM-instruction error field when there is a current VMCS, VMfailInvalid otherwise.
    fn fail<T>(&mut self, error: VmInstructionError) -> VmxOutcome<T> {
        match self.current.as_mut() {
            Some(c) => {
                // The VM-instruction error field exists in every VMCS (index 0).
                match c.vmcs.store(
                    fields::VM_INSTRUCTION_ERROR.encoding(),
                    u64::from(error.number()),
                ) {
                    Ok(()) => VmxOutcome::VmFailValid(error),
                    Err(_) => VmxOutcome::VmFailInvalid,
                }
            }
            None => VmxOutcome::VmFailInvalid,
        }
    }

    /// Whether `addr` is 4-KiB aligned and within the physical-address width (32 to 52, as
    /// [`L1VmxState::new`] checks, so the shift is in range). Every pointer kept (VMXON, current
    /// VMCS) passed this check, so adding a region offset to one cannot overflow.
    fn valid_pointer(&self, addr: u64) -> bool {
        addr & 0xfff == 0 && addr >> self.phys_width == 0
    }

    /// The 32 bits at `addr`; a region outside L1's memory reads as all ones, as a read of
    /// physical memory that nothing backs does on PC platforms.
    fn read_u32(mem: &mut impl GuestMemory, addr: u64) -> u32 {
        let mut bytes = [0xff; 4];
        match mem.read(addr, &mut bytes) {
            Ok(()) => u32::from_le_bytes(bytes),
            Err(_) => u32::MAX,
        }
    }

    /// Writes the current VMCS back to its region (a write outside L1's memory is dropped, as a
    /// write to unbacked physical memory is).
    fn write_back(mem: &mut impl GuestMemory, c: &Current) {
        let launch: u32 = match c.launch {
            LaunchState::Clear => 0,
            LaunchState::Launched => 1,
        };
        let mut image = [0u8; VMCS12_LAYOUT_SIZE as usize - LAUNCH_STATE_OFFSET as usize];
        image[..4].copy_from_slice(&launch.to_le_bytes());
        for (i, info) in fields::ALL.iter().enumerate() {
            let value = c.vmcs.read_raw(info.encoding).unwrap_or_default();
            let at = (FIELDS_OFFSET - LAUNCH_STATE_OFFSET) as usize + 8 * i;
            image[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        // Dropped when outside L1's memory, like a write to unbacked physical memory.
        let _ = mem.write(c.pointer + LAUNCH_STATE_OFFSET, &image);
    }

    /// Reads the VMCS at `pointer` from its region.
    fn load(&self, mem: &mut impl GuestMemory, pointer: u64, shadow: bool) -> Current {
        let mut image = [0xffu8; VMCS12_LAYOUT_SIZE as usize - LAUNCH_STATE_OFFSET as usize];
        if mem.read(pointer + LAUNCH_STATE_OFFSET, &mut image).is_err() {
            image.fill(0xff);
        }
        let mut vmcs = SoftVmcs::new(&self.caps);
        for (i, info) in fields::ALL.iter().enumerate() {
            let at = (FIELDS_OFFSET - LAUNCH_STATE_OFFSET) as usize + 8 * i;
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&image[at..at + 8]);
            // Fields above the highest index are not part of this VMCS.
            let _ = vmcs.store(info.encoding, u64::from_le_bytes(bytes));
        }
        let launch = if image[..4] == 1u32.to_le_bytes() {
            LaunchState::Launched
        } else {
            LaunchState::Clear
        };
        Current {
            pointer,
            vmcs,
            launch,
            shadow,
            dirty: DirtyFields::all(),
        }
    }

    /// VMXON (SDM Vol. 3C, 31.3 "VMXON—Enter VMX Operation").
    ///
    /// #UD for a register operand, CR0.PE = 0, CR4.VMXE = 0, RFLAGS.VM = 1 or compatibility
    /// mode. Outside VMX operation: #GP(0) at CPL > 0, for CR0/CR4 values not allowed in VMX
    /// operation (`IA32_VMX_CR0/CR4_FIXED0/1`), or when IA32_FEATURE_CONTROL is unlocked or
    /// disables VMX outside SMX; VMfailInvalid for a pointer not 4-KiB aligned or beyond the
    /// physical-address width, or a region whose revision identifier differs or has bit 31
    /// set; else VMsucceed, with an invalid current-VMCS pointer. In VMX operation: #GP(0) at
    /// CPL > 0, else VMfail(15).
    pub fn vmxon(
        &mut self,
        cx: &L1Context,
        operand: PointerOperand,
        mem: &mut impl GuestMemory,
    ) -> VmxOutcome {
        let PointerOperand::Memory(addr) = operand else {
            return VmxOutcome::Fault(VmxFault::InvalidOpcode);
        };
        if cx.mode_faults() || !cx.cr4.contains(Cr4::VMXE) {
            return VmxOutcome::Fault(VmxFault::InvalidOpcode);
        }
        if self.vmxon.is_some() {
            if cx.cpl > 0 {
                return VmxOutcome::Fault(VmxFault::GeneralProtection);
            }
            return self.fail(VmInstructionError::VmxonInVmxRoot);
        }
        if cx.cpl > 0
            || self.caps.cr0_fixed_bits(CrUse::Vmx).check(cx.cr0).is_err()
            || self.caps.cr4_fixed_bits().check(cx.cr4).is_err()
            || !self.caps.feature_control.vmxon_allowed_outside_smx()
        {
            return VmxOutcome::Fault(VmxFault::GeneralProtection);
        }
        if !self.valid_pointer(addr) {
            return VmxOutcome::VmFailInvalid;
        }
        let rev = Self::read_u32(mem, addr);
        if rev != self.caps.basic.revision_id() {
            return VmxOutcome::VmFailInvalid;
        }
        self.vmxon = Some(addr);
        self.current = None;
        VmxOutcome::Succeed(())
    }

    /// VMXOFF (31.3 "VMXOFF—Leave VMX Operation"): #UD outside VMX operation or in the wrong
    /// mode, #GP(0) at CPL > 0, else VMsucceed (the current VMCS is written back to its region
    /// first). The dual-monitor treatment, whose VMfail(23) VMXOFF reports, is never active
    /// for L1 (its capabilities have `IA32_VMX_BASIC[49]` = 0 under `vmx_caps::virt`).
    pub fn vmxoff(&mut self, cx: &L1Context, mem: &mut impl GuestMemory) -> VmxOutcome {
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        if let Some(c) = self.current.take() {
            Self::write_back(mem, &c);
        }
        self.vmxon = None;
        VmxOutcome::Succeed(())
    }

    /// The operand checks VMCLEAR and VMPTRLD share: #UD for the register form (before any
    /// other check), the common checks, then VMfail(`invalid`) for a pointer not 4-KiB aligned
    /// or beyond the physical-address width and VMfail(`is_vmxon`) for the VMXON pointer.
    fn vmcs_pointer(
        &mut self,
        cx: &L1Context,
        operand: PointerOperand,
        invalid: VmInstructionError,
        is_vmxon: VmInstructionError,
    ) -> Result<u64, VmxOutcome> {
        let PointerOperand::Memory(addr) = operand else {
            return Err(VmxOutcome::Fault(VmxFault::InvalidOpcode));
        };
        let vmxon = self.common(cx)?;
        if !self.valid_pointer(addr) {
            return Err(self.fail(invalid));
        }
        if addr == vmxon {
            return Err(self.fail(is_vmxon));
        }
        Ok(addr)
    }

    /// VMCLEAR (31.3 "VMCLEAR—Clear Virtual-Machine Control Structure"): VMfail(2) for a
    /// pointer not 4-KiB aligned or beyond the physical-address width, VMfail(3) for the VMXON
    /// pointer; else the VMCS's data is written to its region with launch state "clear", and
    /// the current-VMCS pointer becomes invalid if it pointed there. The revision identifier is
    /// not checked.
    pub fn vmclear(
        &mut self,
        cx: &L1Context,
        operand: PointerOperand,
        mem: &mut impl GuestMemory,
    ) -> VmxOutcome {
        let addr = match self.vmcs_pointer(
            cx,
            operand,
            VmInstructionError::VmclearInvalidAddress,
            VmInstructionError::VmclearVmxonPointer,
        ) {
            Ok(addr) => addr,
            Err(outcome) => return outcome,
        };
        if self.current.as_ref().is_some_and(|c| c.pointer == addr) {
            if let Some(mut c) = self.current.take() {
                c.launch = LaunchState::Clear;
                Self::write_back(mem, &c);
            }
        } else {
            // Dropped when outside L1's memory, like a write to unbacked physical memory.
            let _ = mem.write(addr + LAUNCH_STATE_OFFSET, &0u32.to_le_bytes());
        }
        VmxOutcome::Succeed(())
    }

    /// VMPTRLD (31.3 "VMPTRLD—Load Pointer to Virtual-Machine Control Structure"): VMfail(9)
    /// for a pointer not 4-KiB aligned or beyond the physical-address width, VMfail(10) for
    /// the VMXON pointer, VMfail(11) when the region's revision identifier (bits 30:0) differs,
    /// or bit 31 (shadow-VMCS indicator) is set without "VMCS shadowing" in the capabilities;
    /// else it becomes the current VMCS (the previous one is written back).
    pub fn vmptrld(
        &mut self,
        cx: &L1Context,
        operand: PointerOperand,
        mem: &mut impl GuestMemory,
    ) -> VmxOutcome {
        let addr = match self.vmcs_pointer(
            cx,
            operand,
            VmInstructionError::VmptrldInvalidAddress,
            VmInstructionError::VmptrldVmxonPointer,
        ) {
            Ok(addr) => addr,
            Err(outcome) => return outcome,
        };
        let rev = Self::read_u32(mem, addr);
        let shadow = rev & (1 << 31) != 0;
        if rev & !(1 << 31) != self.caps.basic.revision_id()
            || (shadow && !self.caps.proc2.allows(SecondaryControls::VMCS_SHADOWING))
        {
            return self.fail(VmInstructionError::VmptrldIncorrectRevision);
        }
        if self.current.as_ref().is_some_and(|c| c.pointer == addr) {
            return VmxOutcome::Succeed(());
        }
        if let Some(c) = self.current.take() {
            Self::write_back(mem, &c);
        }
        self.current = Some(self.load(mem, addr, shadow));
        VmxOutcome::Succeed(())
    }

    /// VMPTRST (31.3 "VMPTRST—Store Pointer to Virtual-Machine Control Structure"): the
    /// current-VMCS pointer (FFFFFFFF_FFFFFFFFh when invalid) for the caller to store into the
    /// memory operand; always VMsucceed after the common checks.
    pub fn vmptrst(&self, cx: &L1Context) -> VmxOutcome<u64> {
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        VmxOutcome::Succeed(self.current_pointer().unwrap_or(INVALID_POINTER))
    }

    /// The encoding operand of VMREAD/VMWRITE as a 32-bit encoding: bits 63:32 set name no
    /// field.
    fn encoding(raw: u64) -> Option<u32> {
        u32::try_from(raw).ok()
    }

    /// VMREAD (31.3 "VMREAD—Read Field from Virtual-Machine Control Structure"), executed by
    /// L1 in (virtual) VMX root operation: VMfailInvalid without a current VMCS, VMfail(12)
    /// for an encoding that names no supported field, else the field's value.
    pub fn vmread(&mut self, cx: &L1Context, encoding: u64) -> VmxOutcome<u64> {
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        let Some(c) = self.current.as_ref() else {
            return VmxOutcome::VmFailInvalid;
        };
        match Self::encoding(encoding).map(|e| c.vmcs.read_raw(e)) {
            Some(Ok(value)) => VmxOutcome::Succeed(value),
            _ => self.fail(VmInstructionError::UnsupportedVmcsComponent),
        }
    }

    /// VMWRITE (31.3 "VMWRITE—Write Field to Virtual-Machine Control Structure"):
    /// VMfailInvalid without a current VMCS, VMfail(12) for an encoding that names no supported
    /// field, VMfail(13) for a VM-exit information field unless `IA32_VMX_MISC[29]`, else the
    /// field is written.
    pub fn vmwrite(&mut self, cx: &L1Context, encoding: u64, value: u64) -> VmxOutcome {
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        let Some(c) = self.current.as_mut() else {
            return VmxOutcome::VmFailInvalid;
        };
        let Some(encoding) = Self::encoding(encoding) else {
            return self.fail(VmInstructionError::UnsupportedVmcsComponent);
        };
        match c.vmcs.write_raw(encoding, value) {
            Ok(()) => {
                c.dirty.mark(encoding);
                VmxOutcome::Succeed(())
            }
            Err(VmFail::Valid(error)) => self.fail(error),
            Err(VmFail::Invalid) => VmxOutcome::VmFailInvalid,
        }
    }

    /// The checks of VMLAUNCH and VMRESUME that come before the VM-entry checks (31.3
    /// "VMLAUNCH/VMRESUME—Launch/Resume Virtual Machine"): VMfailInvalid without a current
    /// VMCS, VMfail(26) with events blocked by MOV SS, VMfail(4) for VMLAUNCH of a VMCS that is
    /// not clear, VMfail(5) for VMRESUME of one that is not launched. `Succeed` means: go on to
    /// check the VMCS's settings (SDM 27.2, 27.3) and enter L2.
    pub fn vm_entry(&mut self, cx: &L1Context, instruction: EntryInstruction) -> VmxOutcome {
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        let Some(c) = self.current.as_ref() else {
            return VmxOutcome::VmFailInvalid;
        };
        if c.shadow {
            // A shadow VMCS cannot be entered: the SDM lists this under VMfailInvalid.
            return VmxOutcome::VmFailInvalid;
        }
        let launch = c.launch;
        if cx.blocked_by_mov_ss {
            return self.fail(VmInstructionError::EntryEventsBlockedByMovSs);
        }
        match (instruction, launch) {
            (EntryInstruction::Vmlaunch, LaunchState::Launched) => {
                self.fail(VmInstructionError::VmlaunchNonClearVmcs)
            }
            (EntryInstruction::Vmresume, LaunchState::Clear) => {
                self.fail(VmInstructionError::VmresumeNonLaunchedVmcs)
            }
            _ => VmxOutcome::Succeed(()),
        }
    }

    /// INVEPT (31.3 "INVEPT—Invalidate Translations Derived from EPT"): #UD unless the
    /// capabilities offer "enable EPT" and INVEPT (`IA32_VMX_EPT_VPID_CAP[20]`); VMfail(28) for
    /// a type they do not support, or for single-context with an EPTP that VM entry would
    /// refuse (memory type, page-walk length, accessed/dirty and shadow-stack bits, reserved
    /// bits). `Succeed` carries the type for L0 to invalidate what it derived from L1's EPT.
    pub fn invept(
        &mut self,
        cx: &L1Context,
        kind: u64,
        descriptor: u128,
    ) -> VmxOutcome<InveptType> {
        if !self.caps.proc2.allows(SecondaryControls::ENABLE_EPT) || !self.caps.ept_vpid.invept() {
            return VmxOutcome::Fault(VmxFault::InvalidOpcode);
        }
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        let cap = self.caps.ept_vpid;
        let Some(kind) = u32::try_from(kind).ok().and_then(InveptType::from_number) else {
            return self.fail(VmInstructionError::InvalidInveptInvvpidOperand);
        };
        if !kind.supported_by(&cap) {
            return self.fail(VmInstructionError::InvalidInveptInvvpidOperand);
        }
        if kind == InveptType::SingleContext
            && !eptp_valid(descriptor as u64, &cap, self.phys_width)
        {
            return self.fail(VmInstructionError::InvalidInveptInvvpidOperand);
        }
        VmxOutcome::Succeed(kind)
    }

    /// INVVPID (31.3 "INVVPID—Invalidate Translations Based on VPID"): #UD unless the
    /// capabilities offer "enable VPID" and INVVPID (`IA32_VMX_EPT_VPID_CAP[32]`); VMfail(28)
    /// for a type they do not support, descriptor bits 63:16 not zero, VPID 0 with any type but
    /// all-context, or a non-canonical address with individual-address (`linear_width`, 48 or
    /// 57, is L1's linear-address width).
    pub fn invvpid(
        &mut self,
        cx: &L1Context,
        kind: u64,
        descriptor: u128,
        linear_width: u8,
    ) -> VmxOutcome<InvvpidType> {
        if !self.caps.proc2.allows(SecondaryControls::ENABLE_VPID) || !self.caps.ept_vpid.invvpid()
        {
            return VmxOutcome::Fault(VmxFault::InvalidOpcode);
        }
        if let Err(outcome) = self.common(cx) {
            return outcome;
        }
        let Some(kind) = u32::try_from(kind).ok().and_then(InvvpidType::from_number) else {
            return self.fail(VmInstructionError::InvalidInveptInvvpidOperand);
        };
        if !kind.supported_by(&self.caps.ept_vpid) {
            return self.fail(VmInstructionError::InvalidInveptInvvpidOperand);
        }
        let low = descriptor as u64;
        let vpid = low & 0xffff;
        let address = (descriptor >> 64) as u64;
        let bad = low >> 16 != 0
            || (vpid == 0 && kind.requires_nonzero_vpid())
            || (kind == InvvpidType::IndividualAddress && !canonical(address, linear_width));
        if bad {
            return self.fail(VmInstructionError::InvalidInveptInvvpidOperand);
        }
        VmxOutcome::Succeed(kind)
    }
}

/// Whether `address` is canonical for a linear-address width of `width` bits (48 or 57).
fn canonical(address: u64, width: u8) -> bool {
    let shift = 64 - u32::from(width.clamp(32, 64));
    (((address << shift) as i64) >> shift) as u64 == address
}

/// Whether `eptp` is an EPTP that VM entry accepts (SDM 27.2.1.1): UC or WB memory type allowed
/// by the capabilities, a supported page-walk length, the accessed/dirty and supervisor
/// shadow-stack bits only where supported, bits 11:8 and those beyond the physical-address
/// width zero.
fn eptp_valid(eptp: u64, cap: &EptVpidCap, phys_width: u8) -> bool {
    let memory_type_ok = match eptp & 7 {
        0 => cap.memory_type_uc(),
        6 => cap.memory_type_wb(),
        _ => false,
    };
    let walk_ok = match (eptp >> 3) & 7 {
        3 => cap.page_walk_4(),
        4 => cap.page_walk_5(),
        _ => false,
    };
    let beyond = if phys_width >= 64 {
        0
    } else {
        !((1u64 << phys_width) - 1)
    };
    memory_type_ok
        && walk_ok
        && (eptp & (1 << 6) == 0 || cap.accessed_dirty())
        && (eptp & (1 << 7) == 0 || cap.supervisor_shadow_stack())
        && eptp & (0xf00 | beyond) == 0
}
