//! A VMX processor in software: the state the lifecycle reads and writes (CPUID, CR0, CR4,
//! IA32_FEATURE_CONTROL) and the VMX instructions, modelled after the SDM, so that code built on
//! [`VmxRoot`] and [`CurrentVmcs`](crate::CurrentVmcs) is tested on any host.

use core::cell::Cell;
use core::num::NonZeroU64;

use vmx_caps::arch::{Cr0, Cr4};
use vmx_caps::{FeatureControl, VmxCapabilities, msr};

use crate::error::{VmFail, VmInstructionError};
use crate::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use crate::lifecycle::{EnableError, VmxPlatform, VmxRoot};
use crate::processor::VmxInstructions;
use crate::region::VmxonRegion;
use crate::trampoline::{GuestRegisters, HostStateCache};
use vmcs_fields::fields;

/// VMCS regions a [`SoftVmx`] keeps track of at once.
const SLOTS: usize = 8;
/// Fields a [`SoftVmx`] stores per VMCS (at least every field of the SDM's table).
const FIELDS: usize = 256;
const _: () = assert!(FIELDS >= fields::COUNT);

const VM_INSTRUCTION_ERROR: u32 = fields::VM_INSTRUCTION_ERROR.encoding();
const EXIT_REASON: u32 = fields::EXIT_REASON.encoding();
const VM_EXIT_INSTRUCTION_LENGTH: u32 = fields::VM_EXIT_INSTRUCTION_LENGTH.encoding();
const EXIT_QUALIFICATION: u32 = fields::EXIT_QUALIFICATION.encoding();
/// The fields the model itself writes, present in every VMCS it tracks.
const RESERVED: [u32; 4] = [
    VM_INSTRUCTION_ERROR,
    EXIT_REASON,
    VM_EXIT_INSTRUCTION_LENGTH,
    EXIT_QUALIFICATION,
];

/// The VM exit a [`SoftVmx`] makes the guest take at every VM entry: what it stores in the
/// exit-information fields before returning from the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftExit {
    /// The exit-reason field: basic reason in bits 15:0, bit 31 set for a VM-entry failure (SDM
    /// Vol. 3C, §28.2.1 "Basic VM-Exit Information"). With bit 31 set the launch state stays as
    /// it was, as for a real VM entry that fails while loading guest state.
    pub reason: u32,
    /// The exit qualification.
    pub qualification: u64,
    /// The VM-exit instruction length.
    pub instruction_length: u32,
}

impl SoftExit {
    /// A VM exit for CPUID (basic reason 10) by a 2-byte instruction.
    pub const CPUID: SoftExit = SoftExit {
        reason: 10,
        qualification: 0,
        instruction_length: 2,
    };
}

/// How often each instruction was executed by a [`SoftVmx`] (failed executions included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftVmxCounters {
    /// VMXON.
    pub vmxon: u64,
    /// VMXOFF.
    pub vmxoff: u64,
    /// VMCLEAR.
    pub vmclear: u64,
    /// VMPTRLD.
    pub vmptrld: u64,
    /// VMREAD.
    pub vmread: u64,
    /// VMWRITE (the trampoline's writes of HOST_RSP/HOST_RIP included).
    pub vmwrite: u64,
    /// VMLAUNCH.
    pub vmlaunch: u64,
    /// VMRESUME.
    pub vmresume: u64,
    /// INVEPT.
    pub invept: u64,
    /// INVVPID.
    pub invvpid: u64,
}

/// One VMCS region the model knows: its address, launch state and the fields written to it.
#[derive(Debug)]
struct Slot {
    phys: Cell<Option<u64>>,
    launched: Cell<bool>,
    fields: [Cell<(u32, u64)>; FIELDS],
    len: Cell<usize>,
}

impl Slot {
    const fn empty() -> Slot {
        Slot {
            phys: Cell::new(None),
            launched: Cell::new(false),
            fields: [const { Cell::new((0, 0)) }; FIELDS],
            len: Cell::new(0),
        }
    }

    /// Takes the slot for the region at `phys`, launch state clear, holding only the fields the
    /// model writes itself (all 0), so that a VMfailValid or a VM exit can always be recorded.
    fn claim(&self, phys: u64) {
        self.phys.set(Some(phys));
        self.launched.set(false);
        for (cell, encoding) in self.fields.iter().zip(RESERVED) {
            cell.set((encoding, 0));
        }
        self.len.set(RESERVED.len());
    }

    /// Sets one of the [`RESERVED`] fields, which every claimed slot holds.
    fn set_reserved(&self, full: u32, value: u64) {
        let stored = self.set(full, value);
        debug_assert!(stored, "reserved field {full:#x} missing");
    }

    fn get(&self, full: u32) -> u64 {
        self.fields[..self.len.get()]
            .iter()
            .map(Cell::get)
            .find(|&(encoding, _)| encoding == full)
            .map_or(0, |(_, value)| value)
    }

    /// Stores `value` for the full encoding `full`; `false` when the slot is full.
    fn set(&self, full: u32, value: u64) -> bool {
        let len = self.len.get();
        if let Some(cell) = self.fields[..len].iter().find(|c| c.get().0 == full) {
            cell.set((full, value));
            return true;
        }
        match self.fields.get(len) {
            Some(cell) => {
                cell.set((full, value));
                self.len.set(len + 1);
                true
            }
            None => false,
        }
    }
}

/// Field width from bits 14:13 of an encoding (SDM Vol. 3D, Appendix B).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    Bits16,
    Bits64,
    Bits32,
    Natural,
}

/// The parts of a well-formed field encoding (SDM Vol. 3C, §25.11.2 "VMREAD, VMWRITE, and
/// Encodings of VMCS Fields"): reserved bits 31:15 and 12 clear, high access (bit 0) only for a
/// 64-bit field.
fn decode(encoding: u32) -> Option<(u32, Width, bool)> {
    if encoding & 0xffff_8000 != 0 || encoding & (1 << 12) != 0 {
        return None;
    }
    let width = match (encoding >> 13) & 3 {
        0 => Width::Bits16,
        1 => Width::Bits64,
        2 => Width::Bits32,
        _ => Width::Natural,
    };
    let high = encoding & 1 != 0;
    if high && width != Width::Bits64 {
        return None;
    }
    Some((encoding & !1, width, high))
}

/// A VMX processor in software, behaving as the SDM describes the instructions (SDM Vol. 3C,
/// Chapter 31 "VMX Instruction Reference") as far as their effect on VMX state goes: a
/// [`VmxPlatform`] and [`VmxInstructions`] for [`VmxRoot`] and [`CurrentVmcs`](crate::CurrentVmcs), to test code
/// built on them (launch-state tracking, the host-state cache, an exit handler) on any host.
///
/// What it models:
///
/// - VMXON/VMXOFF: VMX operation; VMXON in VMX operation is VMfail 15, a misaligned VMXON pointer
///   VMfailInvalid.
/// - VMCLEAR/VMPTRLD: the current-VMCS pointer and each region's launch state and fields, keyed by
///   the region's physical address (up to 8 regions; VMPTRLD of a ninth address is VMfail 9).
///   VMCLEAR of the VMXON pointer is VMfail 3, of a misaligned address VMfail 2; VMPTRLD of the
///   VMXON pointer is VMfail 10, of a misaligned address VMfail 9. Region memory is never read
///   (the revision identifier is [`VmcsRegion::load`](crate::VmcsRegion::load)'s to check).
/// - VMREAD/VMWRITE: VMfailInvalid without a current VMCS; VMfail 12 for a malformed encoding (a
///   reserved bit set, high access to a field that is not 64 bits wide) or when the VMCS holds
///   256 fields already; VMfail 13 for a write to a VM-exit information field unless
///   IA32_VMX_MISC\[29\] allows it. Values are truncated to the field's width; a field never
///   written reads 0.
/// - The trampoline's VM entry ([`VmxInstructions::vm_entry`]): HOST_RSP and HOST_RIP are written
///   when the [`HostStateCache`] does not hold this entry's stack pointer
///   ([`SoftVmx::set_host_rsp`]; HOST_RIP becomes [`SoftVmx::EXIT_LABEL`]), as the real trampoline
///   does; VMLAUNCH of a launched VMCS is VMfail 4, VMRESUME of a clear one VMfail 5; then the
///   guest "runs" and takes the VM exit set with [`SoftVmx::set_exit`] (stored in EXIT_REASON,
///   EXIT_QUALIFICATION and VM_EXIT_INSTRUCTION_LENGTH); a VM exit without bit 31 makes the VMCS
///   launched. The guest's registers are left as they are.
/// - Every VMfailValid stores its number in the VM-instruction error field (0x4400) of the current
///   VMCS.
///
/// # Panics
///
/// Where a processor raises an exception instead (VMX instructions outside VMX operation: #UD;
/// VMXON with CR4.VMXE clear: #UD; an MSR other than IA32_FEATURE_CONTROL, a write to it while
/// locked, clearing CR4.VMXE in VMX operation: #GP), the model panics naming the exception: only a
/// caller that broke the safety contract of an `unsafe` method gets there.
///
/// ```
/// use vmx_caps::{MsrSnapshot, VmxCapabilities};
/// use vmx_core::{GuestRegisters, SoftExit, SoftVmx, VmcsRegion, VmxonRegion};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dump = std::fs::read_to_string(concat!(
///     env!("CARGO_MANIFEST_DIR"),
///     "/../vmx-caps/testdata/tigerlake.msr"
/// ))?;
/// let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(&dump)?)?;
/// let vmxon = Box::leak(Box::new(VmxonRegion::zeroed()));
/// let mut root = SoftVmx::new(&caps).enable(&caps, vmxon).map_err(|(_, e)| e)?;
/// let region = Box::leak(Box::new(VmcsRegion::zeroed()));
/// region.init(caps.basic.revision_id(), false)?;
/// let mut vmcs = region.load(&mut root, &|p: *const u8| Some(p as u64))?;
/// vmcs.processor_mut().set_exit(SoftExit::CPUID);
/// let mut regs = GuestRegisters::new();
/// // SAFETY: a software processor: no host state is at stake.
/// unsafe { vmcs.run(&mut regs)? };
/// assert!(vmcs.is_launched());
/// assert_eq!(vmcs.read_raw(vmcs_fields::fields::EXIT_REASON.encoding())?, 10); // CPUID
/// unsafe { vmcs.run(&mut regs)? }; // VMRESUME now
/// assert_eq!(vmcs.host_state_cache().writes(), 1); // HOST_RSP/HOST_RIP written once
/// let counters = vmcs.root().processor().counters();
/// assert_eq!((counters.vmlaunch, counters.vmresume), (1, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SoftVmx {
    vmx: bool,
    cr0: Cr0,
    cr4: Cr4,
    feature_control: u64,
    vmwrite_any_field: bool,
    /// The VMXON pointer while in VMX operation.
    vmxon: Option<u64>,
    /// The slot of the current VMCS.
    current: Cell<Option<usize>>,
    slots: [Slot; SLOTS],
    host_rsp: NonZeroU64,
    exit: SoftExit,
    fail_next_vmread: Cell<Option<VmFail>>,
    counters: Cell<SoftVmxCounters>,
}

impl SoftVmx {
    /// What the model writes to HOST_RIP: the address of its trampoline's exit label.
    pub const EXIT_LABEL: u64 = 0xffff_ffff_8000_1000;
    /// The stack pointer the model's trampoline enters from until [`SoftVmx::set_host_rsp`].
    pub const DEFAULT_HOST_RSP: NonZeroU64 = NonZeroU64::new(0xffff_ffff_8010_0f00).unwrap();
    /// CR0 of a 64-bit host (PG, AM, WP, NE, ET, MP, PE), the model's CR0 at creation.
    pub const HOST_CR0: Cr0 = Cr0::from_bits_retain(0x8005_0033);
    /// CR4 of a 64-bit host (PAE, PGE, OSFXSR, OSXMMEXCPT), the model's CR4 at creation.
    pub const HOST_CR4: Cr4 = Cr4::from_bits_retain(0x6a0);

    /// A processor with VMX, outside VMX operation, with the IA32_FEATURE_CONTROL and
    /// IA32_VMX_MISC of `caps`, CR0 = [`SoftVmx::HOST_CR0`], CR4 = [`SoftVmx::HOST_CR4`], and
    /// [`SoftExit::CPUID`] as the VM exit of every entry.
    #[must_use]
    pub fn new(caps: &VmxCapabilities) -> Self {
        SoftVmx {
            vmx: true,
            cr0: Self::HOST_CR0,
            cr4: Self::HOST_CR4,
            feature_control: caps.feature_control.bits(),
            vmwrite_any_field: caps.misc.vmwrite_any_field(),
            vmxon: None,
            current: Cell::new(None),
            slots: [const { Slot::empty() }; SLOTS],
            host_rsp: Self::DEFAULT_HOST_RSP,
            exit: SoftExit::CPUID,
            fail_next_vmread: Cell::new(None),
            counters: Cell::new(SoftVmxCounters::default()),
        }
    }

    /// Enters VMX root operation on this software processor: [`VmxRoot::enable`] with the
    /// identity as the address translation. Safe, because nothing here touches the host.
    ///
    /// # Errors
    ///
    /// As [`VmxRoot::enable`], with the processor handed back.
    #[expect(
        clippy::result_large_err,
        reason = "the processor comes back by value, as from `VmxRoot::enable`; a test model"
    )]
    pub fn enable(
        self,
        caps: &VmxCapabilities,
        region: &'static mut VmxonRegion,
    ) -> Result<VmxRoot<SoftVmx>, (SoftVmx, EnableError)> {
        // SAFETY: a software processor describes itself, touches no memory through the addresses
        // it is given and changes no state of the host; nothing else uses it.
        unsafe { VmxRoot::enable(self, caps, region, &|p: *const u8| Some(p as u64)) }
    }

    /// Sets CPUID.1:ECX.VMX (set at creation).
    #[must_use]
    pub fn with_vmx(mut self, vmx: bool) -> Self {
        self.vmx = vmx;
        self
    }

    /// Sets CR0 and CR4.
    #[must_use]
    pub fn with_control_registers(mut self, cr0: Cr0, cr4: Cr4) -> Self {
        self.cr0 = cr0;
        self.cr4 = cr4;
        self
    }

    /// Sets IA32_FEATURE_CONTROL.
    #[must_use]
    pub fn with_feature_control(mut self, value: u64) -> Self {
        self.feature_control = value;
        self
    }

    /// The stack pointer of the next VM entries (a trampoline called from another depth).
    pub fn set_host_rsp(&mut self, rsp: NonZeroU64) {
        self.host_rsp = rsp;
    }

    /// The VM exit the next VM entries end in.
    pub fn set_exit(&mut self, exit: SoftExit) {
        self.exit = exit;
    }

    /// Makes the next VMREAD fail with `fail` (once), as no processor does after a successful
    /// VM entry: for testing error paths.
    pub fn fail_next_vmread(&mut self, fail: VmFail) {
        self.fail_next_vmread.set(Some(fail));
    }

    /// Writes any field of the current VMCS, read-only ones included, as the processor does at a
    /// VM exit.
    ///
    /// # Errors
    ///
    /// [`VmFail::Invalid`] without a current VMCS (nothing happens then), VMfail 12 for a
    /// malformed encoding or a full VMCS.
    pub fn store(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        self.write_field(encoding, value, true)
    }

    /// The execution counters.
    #[must_use]
    pub fn counters(&self) -> SoftVmxCounters {
        self.counters.get()
    }

    /// CR0.
    #[must_use]
    pub fn cr0(&self) -> Cr0 {
        self.cr0
    }

    /// CR4.
    #[must_use]
    pub fn cr4(&self) -> Cr4 {
        self.cr4
    }

    /// IA32_FEATURE_CONTROL.
    #[must_use]
    pub fn feature_control(&self) -> u64 {
        self.feature_control
    }

    /// Whether the processor is in VMX operation.
    #[must_use]
    pub fn in_vmx_operation(&self) -> bool {
        self.vmxon.is_some()
    }

    /// The current-VMCS pointer (what VMPTRST stores), `None` when there is no current VMCS.
    #[must_use]
    pub fn current_vmcs(&self) -> Option<u64> {
        self.current
            .get()
            .and_then(|slot| self.slots[slot].phys.get())
    }

    /// The launch state of the VMCS at `vmcs_phys`: `Some(true)` launched, `Some(false)` clear,
    /// `None` for an address no VMCLEAR or VMPTRLD named.
    #[must_use]
    pub fn launched(&self, vmcs_phys: u64) -> Option<bool> {
        self.slot_of(vmcs_phys)
            .map(|slot| self.slots[slot].launched.get())
    }

    fn count(&self, bump: impl FnOnce(&mut SoftVmxCounters)) {
        let mut counters = self.counters.get();
        bump(&mut counters);
        self.counters.set(counters);
    }

    fn require_vmx_operation(&self, instruction: &str) {
        assert!(
            self.vmxon.is_some(),
            "#UD: {instruction} outside VMX operation"
        );
    }

    fn slot_of(&self, phys: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.phys.get() == Some(phys))
    }

    /// VMfail(`error`): VMfailValid with the number stored in the current VMCS, VMfailInvalid
    /// without one (SDM Vol. 3C, §31.2 "Conventions").
    fn fail(&self, error: VmInstructionError) -> VmFail {
        match self.current.get() {
            Some(slot) => {
                self.slots[slot].set_reserved(VM_INSTRUCTION_ERROR, u64::from(error.number()));
                VmFail::Valid(error)
            }
            None => VmFail::Invalid,
        }
    }

    fn read_field(&self, encoding: u32) -> Result<u64, VmFail> {
        let slot = self.current.get().ok_or(VmFail::Invalid)?;
        let (full, width, high) = decode(encoding)
            .ok_or_else(|| self.fail(VmInstructionError::UnsupportedVmcsComponent))?;
        let value = self.slots[slot].get(full);
        Ok(match (width, high) {
            (_, true) => value >> 32,
            (Width::Bits16, false) => value & 0xffff,
            (Width::Bits32, false) => value & 0xffff_ffff,
            (Width::Bits64 | Width::Natural, false) => value,
        })
    }

    fn write_field(&self, encoding: u32, value: u64, any_field: bool) -> Result<(), VmFail> {
        let slot = self.current.get().ok_or(VmFail::Invalid)?;
        let (full, width, high) = decode(encoding)
            .ok_or_else(|| self.fail(VmInstructionError::UnsupportedVmcsComponent))?;
        // Type bits 11:10 = 1: VM-exit information (read-only without IA32_VMX_MISC[29]).
        if (encoding >> 10) & 3 == 1 && !any_field && !self.vmwrite_any_field {
            return Err(self.fail(VmInstructionError::VmwriteReadOnlyComponent));
        }
        let slot = &self.slots[slot];
        let stored = match (width, high) {
            (_, true) => (slot.get(full) & 0xffff_ffff) | (value << 32),
            (Width::Bits16, false) => value & 0xffff,
            (Width::Bits32, false) => value & 0xffff_ffff,
            (Width::Bits64 | Width::Natural, false) => value,
        };
        if !slot.set(full, stored) {
            return Err(self.fail(VmInstructionError::UnsupportedVmcsComponent));
        }
        Ok(())
    }
}

impl VmxPlatform for SoftVmx {
    fn cpu_has_vmx(&mut self) -> bool {
        self.vmx
    }

    unsafe fn read_msr(&mut self, msr: u32) -> u64 {
        assert_eq!(
            msr,
            msr::IA32_FEATURE_CONTROL,
            "#GP: RDMSR of MSR {msr:#x}, which the software processor does not have"
        );
        self.feature_control
    }

    unsafe fn write_msr(&mut self, msr: u32, value: u64) {
        assert_eq!(
            msr,
            msr::IA32_FEATURE_CONTROL,
            "#GP: WRMSR of MSR {msr:#x}, which the software processor does not have"
        );
        assert!(
            !FeatureControl::from_bits_retain(self.feature_control).contains(FeatureControl::LOCK),
            "#GP: WRMSR of IA32_FEATURE_CONTROL while it is locked"
        );
        self.feature_control = value;
    }

    fn read_cr0(&mut self) -> Cr0 {
        self.cr0
    }

    unsafe fn write_cr0(&mut self, value: Cr0) {
        self.cr0 = value;
    }

    fn read_cr4(&mut self) -> Cr4 {
        self.cr4
    }

    unsafe fn write_cr4(&mut self, value: Cr4) {
        assert!(
            self.vmxon.is_none() || value.contains(Cr4::VMXE),
            "#GP: MOV to CR4 clearing CR4.VMXE in VMX operation"
        );
        self.cr4 = value;
    }
}

// SAFETY: the model touches no memory through the addresses it is given, and `vm_entry` only
// `cache` (and not even `regs`).
unsafe impl VmxInstructions for SoftVmx {
    unsafe fn vmxon(&mut self, vmxon_region_phys: u64) -> Result<(), VmFail> {
        self.count(|c| c.vmxon += 1);
        assert!(
            self.cr4.contains(Cr4::VMXE),
            "#UD: VMXON with CR4.VMXE clear"
        );
        if self.vmxon.is_some() {
            return Err(self.fail(VmInstructionError::VmxonInVmxRoot));
        }
        let control = FeatureControl::from_bits_retain(self.feature_control);
        assert!(
            control.contains(FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX),
            "#GP: VMXON with IA32_FEATURE_CONTROL {:#x} (not locked with VMX outside SMX)",
            self.feature_control
        );
        if !vmxon_region_phys.is_multiple_of(4096) {
            return Err(VmFail::Invalid);
        }
        self.vmxon = Some(vmxon_region_phys);
        self.current.set(None);
        Ok(())
    }

    unsafe fn vmxoff(&mut self) -> Result<(), VmFail> {
        self.count(|c| c.vmxoff += 1);
        self.require_vmx_operation("VMXOFF");
        self.vmxon = None;
        self.current.set(None);
        Ok(())
    }

    unsafe fn vmclear(&mut self, vmcs_phys: u64) -> Result<(), VmFail> {
        self.count(|c| c.vmclear += 1);
        self.require_vmx_operation("VMCLEAR");
        if !vmcs_phys.is_multiple_of(4096) {
            return Err(self.fail(VmInstructionError::VmclearInvalidAddress));
        }
        if self.vmxon == Some(vmcs_phys) {
            return Err(self.fail(VmInstructionError::VmclearVmxonPointer));
        }
        if let Some(slot) = self.slot_of(vmcs_phys) {
            self.slots[slot].launched.set(false);
            if self.current.get() == Some(slot) {
                self.current.set(None);
            }
        }
        Ok(())
    }

    unsafe fn vmptrld(&mut self, vmcs_phys: u64) -> Result<(), VmFail> {
        self.count(|c| c.vmptrld += 1);
        self.require_vmx_operation("VMPTRLD");
        if !vmcs_phys.is_multiple_of(4096) {
            return Err(self.fail(VmInstructionError::VmptrldInvalidAddress));
        }
        if self.vmxon == Some(vmcs_phys) {
            return Err(self.fail(VmInstructionError::VmptrldVmxonPointer));
        }
        let slot = match self.slot_of(vmcs_phys) {
            Some(slot) => slot,
            None => {
                let Some(free) = self.slots.iter().position(|s| s.phys.get().is_none()) else {
                    // The model's capacity: more regions than it tracks.
                    return Err(self.fail(VmInstructionError::VmptrldInvalidAddress));
                };
                self.slots[free].claim(vmcs_phys);
                free
            }
        };
        self.current.set(Some(slot));
        Ok(())
    }

    unsafe fn vmread(&self, encoding: u32) -> Result<u64, VmFail> {
        self.count(|c| c.vmread += 1);
        self.require_vmx_operation("VMREAD");
        if let Some(fail) = self.fail_next_vmread.take() {
            return Err(match fail {
                VmFail::Valid(error) => self.fail(error),
                VmFail::Invalid => VmFail::Invalid,
            });
        }
        self.read_field(encoding)
    }

    unsafe fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        self.count(|c| c.vmwrite += 1);
        self.require_vmx_operation("VMWRITE");
        self.write_field(encoding, value, false)
    }

    unsafe fn vm_entry(
        &mut self,
        _regs: &mut GuestRegisters,
        cache: &mut HostStateCache,
        launched: bool,
    ) -> Result<(), VmFail> {
        let rsp = self.host_rsp.get();
        if cache.host_rsp() != Some(rsp) {
            // SAFETY: the model's own VMWRITE; the caller's obligations cover it.
            unsafe {
                self.vmwrite(fields::HOST_RSP.encoding(), rsp)?;
                self.vmwrite(fields::HOST_RIP.encoding(), Self::EXIT_LABEL)?;
            }
            cache.record_write(rsp);
        }
        if launched {
            self.count(|c| c.vmresume += 1);
        } else {
            self.count(|c| c.vmlaunch += 1);
        }
        self.require_vmx_operation(if launched { "VMRESUME" } else { "VMLAUNCH" });
        let slot = self.current.get().ok_or(VmFail::Invalid)?;
        let is_launched = self.slots[slot].launched.get();
        if !launched && is_launched {
            return Err(self.fail(VmInstructionError::VmlaunchNonClearVmcs));
        }
        if launched && !is_launched {
            return Err(self.fail(VmInstructionError::VmresumeNonLaunchedVmcs));
        }
        let exit = self.exit;
        let slot = &self.slots[slot];
        slot.set_reserved(EXIT_REASON, u64::from(exit.reason));
        slot.set_reserved(EXIT_QUALIFICATION, exit.qualification);
        slot.set_reserved(
            VM_EXIT_INSTRUCTION_LENGTH,
            u64::from(exit.instruction_length),
        );
        if exit.reason & (1 << 31) == 0 {
            slot.launched.set(true);
        }
        Ok(())
    }

    unsafe fn invept(
        &self,
        _invalidation: InveptType,
        _descriptor: &InveptDescriptor,
    ) -> Result<(), VmFail> {
        self.count(|c| c.invept += 1);
        self.require_vmx_operation("INVEPT");
        Ok(())
    }

    unsafe fn invvpid(
        &self,
        _invalidation: InvvpidType,
        _descriptor: &InvvpidDescriptor,
    ) -> Result<(), VmFail> {
        self.count(|c| c.invvpid += 1);
        self.require_vmx_operation("INVVPID");
        Ok(())
    }
}
