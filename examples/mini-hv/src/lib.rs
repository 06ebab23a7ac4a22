//! The parts of `mini-hv` that are plain logic: no instruction, port or memory access of their own,
//! only values and the `vmcs` crate's access traits. The kernel (`src/main.rs`) is built on them, and
//! `cargo test -p mini-hv --lib` unit-tests them on the host (`cargo xtask test` runs it), where the
//! software VMCS (`vmcs::SoftVmcs`) stands in for the processor's.
//!
//! - [`breakdown`]: the CPUID round-trip breakdown computed from the run loop's timestamps.
//! - [`decode`]: the MOV forms a guest uses on MMIO, decoded for emulation.
//! - [`guest_state`]: the CR0/CR4 ownership policy and MOV to CR0/CR4 emulation, XCR0 validation,
//!   the guest-state fields both guests start with, and the exit-handling steps both share.
//! - [`boot_protocol`]: the Linux x86 boot protocol (setup header, memory layout, zero page, e820
//!   map).
//! - [`init_ipi`]: where an INIT IPI a guest writes to its local APIC goes (the Linux guest with 2
//!   vCPUs emulates them).
//! - [`linux_requirements`]: what the Linux guest needs from VMX, as data, and the verdict for any
//!   capability set.
//! - [`multiboot_guest`]: a Multiboot kernel (mini-hv's own image) as a guest: its image from the
//!   header's address fields, the boot information a loader hands it.
//! - [`mwait`]: the checks of MONITOR and MWAIT, which exit where a processor forces "MONITOR
//!   exiting" and "MWAIT exiting" (Hyper-V), before both guests complete them.
//! - [`profiles`]: capability profiles of other platforms (Hyper-V) and the restriction of the
//!   processor's capabilities to one (`mini-hv.mask-caps=NAME`).
//! - [`requirements`]: what the example needs from VMX, as data, and the verdict for any capability
//!   set (shared with `vmxtool caps --example`).

#![cfg_attr(not(test), no_std)]

pub mod boot_protocol;
pub mod breakdown;
pub mod decode;
pub mod guest_state;
pub mod init_ipi;
pub mod l1_kernel;
pub mod linux_requirements;
pub mod multiboot_guest;
pub mod mwait;
pub mod nested_policy;
pub mod profiles;
pub mod requirements;
