//! Intel VMX (VT-x) instructions with their failures decoded, the VMXON/VMCS lifecycle as
//! ownership types, and the guest entry/exit trampoline.
//!
//! Everything that does not execute a VMX instruction runs on any host. Decoding a VMfailValid
//! and checking an INVEPT against the capabilities of Bochs' `corei7_skylake_x` model:
//!
//! ```
//! use vmx_caps::EptVpidCap;
//! use vmx_core::{
//!     InvalidationError, InveptType, InvvpidDescriptor, InvvpidType, VmFail, VmInstructionError,
//! };
//!
//! let fail = VmFail::Valid(VmInstructionError::from_raw(7));
//! assert_eq!(
//!     fail.to_string(),
//!     "VMfailValid: VM-instruction error 7: VM entry with invalid control field(s)"
//! );
//!
//! // IA32_VMX_EPT_VPID_CAP as read on Bochs' corei7_skylake_x (vmx-caps/testdata).
//! let cap = EptVpidCap(0x0000_0f01_0633_4141);
//! assert_eq!(InveptType::best_for(&cap), Some(InveptType::SingleContext));
//! assert!(InvvpidType::IndividualAddress.supported_by(&cap));
//! // A processor without INVEPT: a typed error, never a silent fallback.
//! assert_eq!(
//!     InveptType::AllContext.check(&EptVpidCap(0)),
//!     Err(InvalidationError::InveptUnsupported)
//! );
//! // VPID 0 tags VMX root operation: the SDM forbids it for single-context invalidation.
//! assert_eq!(
//!     InvvpidDescriptor::new(InvvpidType::SingleContext, 0, 0),
//!     Err(InvalidationError::ZeroVpid(InvvpidType::SingleContext))
//! );
//! ```
//!
//! The whole lifecycle, in a ring-0 kernel on an Intel processor (here with identity-mapped
//! memory; `translate` is whatever your page tables say):
//!
//! ```no_run
//! use vmx_caps::{LiveMsrs, VmxCapabilities};
//! use vmx_core::{GuestRegisters, LivePlatform, VmcsRegion, VmxRoot, VmxonRegion};
//!
//! static mut VMXON: VmxonRegion = VmxonRegion::zeroed();
//! static mut VMCS: VmcsRegion = VmcsRegion::zeroed();
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let translate = |p: *const u8| Some(p as u64);
//! // SAFETY (of this example): CPL 0, one logical processor, identity-mapped memory.
//! let platform = unsafe { LivePlatform::new() };
//! let caps = VmxCapabilities::read(&mut unsafe { LiveMsrs::new() })?;
//! let mut root = unsafe {
//!     VmxRoot::enable(platform, &caps, &mut *(&raw mut VMXON), &translate).map_err(|(_, e)| e)?
//! };
//! let region = unsafe { &mut *(&raw mut VMCS) };
//! region.init(caps.basic.revision_id(), false)?;
//! let mut vmcs = region.load(&mut root, &translate)?;
//! // ... vmcs.write_raw(...) every control, host-state and guest-state field (or the typed
//! // `vmcs::VmcsWrite::write`, which the `vmcs` crate implements for `CurrentVmcs`) ...
//! let mut regs = GuestRegisters::new();
//! loop {
//!     unsafe { vmcs.run(&mut regs)? }; // VMLAUNCH, then VMRESUME
//!     let reason = vmcs.read_raw(vmcs_fields::fields::EXIT_REASON.encoding())?;
//!     # let _ = reason;
//!     // ... handle the exit, update GUEST_RIP, `break` when done ...
//!     # break;
//! }
//! vmcs.clear().map_err(|(_, fail)| fail)?;
//! let (_platform, _vmxon) = root.disable().map_err(|(_, fail)| fail)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! - [`instructions`] (`x86_64` targets): one `unsafe fn` per VMX instruction, the status branch
//!   inside the same `asm!` block, VMfailValid decoded into [`VmInstructionError`].
//! - [`VmxInstructions`] and [`VmxPlatform`]: the processor the lifecycle runs on, as traits:
//!   [`LivePlatform`] is the running processor (zero-sized; the generic code compiles to the bare
//!   instructions), [`SoftVmx`] a software model of one for tests on any host (launch states,
//!   VMfail numbers, the trampoline's host-state writes, a VM exit of your choice).
//! - [`VmxRoot`] (VMXON … VMXOFF, owning its processor), [`VmcsRegion`] → [`CurrentVmcs`]
//!   (VMPTRLD … VMCLEAR) with the launch state; physical addresses come from the caller's
//!   [`PhysTranslate`]. Regions live in a `static` or in an allocator's 4-KiB frame
//!   ([`VmxonRegion::from_frame`], [`VmcsRegion::from_frame`]). The checks before VMXON are
//!   [`prepare`], [`feature_control_update`] and [`vmx_control_registers`].
//! - [`vm_run`] / [`CurrentVmcs::run`]: the trampoline (HOST_RSP/HOST_RIP written only when the
//!   per-VMCS [`HostStateCache`] misses) and its [`GuestRegisters`] frame, whose registers are also
//!   reachable by SDM number ([`GpReg`]).
//! - [`VmxRoot::invept`] / [`VmxRoot::invvpid`]: invalidations checked against
//!   IA32_VMX_EPT_VPID_CAP.
//! - [`PerCpuVmx`]: VMX operation on every logical processor through the caller's
//!   [`RunOnCpu`], with rollback when one processor fails, and cross-processor invalidation
//!   ([`CpuInvalidate`], [`PerCpuVmx::invvpid_everywhere`]); [`smp`] also explains moving a
//!   vCPU between processors.
//!
//! On targets other than `x86_64` (decoding dumps on another machine) everything but
//! [`instructions`], [`vm_run`] and [`LivePlatform`] builds, [`SoftVmx`] included.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod current;
mod error;
mod gpr;
#[cfg(target_arch = "x86_64")]
pub mod instructions;
mod invalidation;
mod lifecycle;
mod processor;
mod region;
pub mod smp;
mod soft;
mod trampoline;

pub use current::{CurrentVmcs, LoadError, RunError};
pub use error::{VmFail, VmInstructionError};
pub use gpr::{GpReg, RspInVmcs, UnknownGpReg};
pub use invalidation::{
    InvalidationError, InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType,
};
#[cfg(target_arch = "x86_64")]
pub use lifecycle::LivePlatform;
pub use lifecycle::{
    EnableError, PriorState, VmxPlatform, VmxRoot, feature_control_update, prepare,
    vmx_control_registers,
};
pub use processor::VmxInstructions;
pub use region::{PhysTranslate, REGION_SIZE, RegionError, VmcsRegion, VmxonRegion};
pub use smp::{
    CpuFailure, CpuInvalidate, CpuSet, CpuVmxOps, EnterAllError, EnterAllFailure, LeaveAllError,
    MAX_CPUS, PerCpuVmx, RunOnCpu,
};
#[cfg(target_arch = "x86_64")]
pub use smp::{LiveVmxError, LiveVmxOn};
pub use soft::{SoftExit, SoftVmx, SoftVmxCounters};
#[cfg(target_arch = "x86_64")]
pub use trampoline::vm_run;
pub use trampoline::{FPU_SWITCH, FpuSwitch, FxsaveArea, GuestRegisters, HostStateCache};
