//! The guest entry/exit trampoline: VMLAUNCH or VMRESUME with the guest's registers loaded from a
//! [`GuestRegisters`] frame, and back to Rust on the next VM exit with the frame filled.
//!
//! # What is switched, and what is not
//!
//! - General-purpose registers: all fifteen but RSP, which is a VMCS guest-state field (as are RIP
//!   and RFLAGS). The host's callee-saved registers (RBX, RBP, R12–R15) and RFLAGS are restored
//!   (R12–R15 by the compiler, to which [`vm_run`]'s `asm!` declares them clobbered); the rest
//!   are clobbered, as the System V calling convention allows.
//! - CR2: loaded before entry, saved after the exit (the VMCS has no CR2 field).
//! - x87/MMX/SSE state (XMM0–15, MXCSR, x87): a choice made by how the host is compiled
//!   ([`FpuSwitch`], [`FPU_SWITCH`]). A host compiled with SSE (every x86_64 target but the
//!   soft-float ones) gets the eager switch: FXSAVE64/FXRSTOR64 at entry and at exit, the guest's
//!   state in the frame's 512-byte area, the host's on the trampoline's stack (CR4.OSFXSR = 1
//!   needed). A host compiled without SSE (e.g. `x86_64-unknown-none`) gets none of it: the
//!   guest's state simply stays in the registers, which the host's code never touches. State
//!   beyond FXSAVE (AVX upper halves, AVX-512, AMX, …) is *not* switched: a host that uses such
//!   registers (Rust code does not, unless built with those target features) must switch them
//!   itself, and a guest that uses them shares them with the host.
//! - Debug registers DR0–DR3 and DR6, XCR0, and MSRs not in the VMCS (e.g. IA32_KERNEL_GS_BASE,
//!   IA32_STAR/LSTAR), are not switched: the hypervisor switches them if the guest may use them.
//!   The processor itself sets DR7 to 0x400 and clears IA32_DEBUGCTL at every VM exit (see the
//!   safety section of `vm_run`).
//! - Maskable interrupts are off for the whole trampoline (CLI, and the VM exit clears IF); the
//!   caller's RFLAGS, IF included, is restored on return.

use core::mem::offset_of;

#[cfg(target_arch = "x86_64")]
use crate::error::VmFail;
use crate::gpr::{GpReg, RspInVmcs};
#[cfg(target_arch = "x86_64")]
use crate::instructions::fail_valid;

/// A 512-byte FXSAVE64 image (SDM Vol. 1, §10.5.1 "FXSAVE Area"), 16-byte aligned as FXSAVE and
/// FXRSTOR require.
///
/// Its contents are only ever the initial image [`FxsaveArea::INIT`] or what FXSAVE64 stored, so
/// FXRSTOR64 of it cannot fault on reserved MXCSR bits.
#[derive(Clone)]
#[repr(C, align(16))]
pub struct FxsaveArea([u8; 512]);

impl FxsaveArea {
    const FCW_OFFSET: usize = 0;
    const MXCSR_OFFSET: usize = 24;

    /// The state after FNINIT with MXCSR at its reset value: FCW = 0x037F (all x87 exceptions
    /// masked, extended precision, round to nearest), all registers empty, MXCSR = 0x1F80 (all SSE
    /// exceptions masked), XMM registers zero.
    pub const INIT: FxsaveArea = {
        let mut bytes = [0u8; 512];
        let fcw = 0x037f_u16.to_le_bytes();
        bytes[Self::FCW_OFFSET] = fcw[0];
        bytes[Self::FCW_OFFSET + 1] = fcw[1];
        let mxcsr = 0x1f80_u32.to_le_bytes();
        bytes[Self::MXCSR_OFFSET] = mxcsr[0];
        bytes[Self::MXCSR_OFFSET + 1] = mxcsr[1];
        bytes[Self::MXCSR_OFFSET + 2] = mxcsr[2];
        bytes[Self::MXCSR_OFFSET + 3] = mxcsr[3];
        FxsaveArea(bytes)
    };

    /// The raw image.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 512] {
        &self.0
    }

    /// The x87 FPU control word (bytes 1:0).
    #[must_use]
    pub const fn fcw(&self) -> u16 {
        u16::from_le_bytes([self.0[Self::FCW_OFFSET], self.0[Self::FCW_OFFSET + 1]])
    }

    /// MXCSR (bytes 27:24).
    #[must_use]
    pub const fn mxcsr(&self) -> u32 {
        u32::from_le_bytes([
            self.0[Self::MXCSR_OFFSET],
            self.0[Self::MXCSR_OFFSET + 1],
            self.0[Self::MXCSR_OFFSET + 2],
            self.0[Self::MXCSR_OFFSET + 3],
        ])
    }

    /// XMM register `index` (0–15; bytes 160 + 16·index), `None` for a larger index.
    #[must_use]
    pub fn xmm(&self, index: usize) -> Option<u128> {
        if index >= 16 {
            return None;
        }
        let start = 160 + 16 * index;
        let bytes = self.0.get(start..start + 16)?;
        let mut value = [0u8; 16];
        value.copy_from_slice(bytes);
        Some(u128::from_le_bytes(value))
    }
}

impl Default for FxsaveArea {
    fn default() -> Self {
        Self::INIT
    }
}

impl core::fmt::Debug for FxsaveArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FxsaveArea")
            .field("fcw", &format_args!("{:#06x}", self.fcw()))
            .field("mxcsr", &format_args!("{:#010x}", self.mxcsr()))
            .finish_non_exhaustive()
    }
}

/// The guest's registers that the VMCS does not hold, as the trampoline loads them before VM entry
/// and stores them after VM exit: the general-purpose registers but RSP, CR2 and the FXSAVE state.
///
/// RSP, RIP and RFLAGS are the VMCS fields GUEST_RSP, GUEST_RIP and GUEST_RFLAGS. Registers named
/// by their SDM number (exit qualifications, instruction information) are reached with
/// [`GuestRegisters::gpr`] / [`GuestRegisters::set_gpr`] and a [`GpReg`].
///
/// ```
/// use vmx_core::GuestRegisters;
///
/// let mut regs = GuestRegisters::new();
/// regs.rax = 0x1234;
/// assert_eq!(regs.fxsave_area().mxcsr(), 0x1f80);
/// ```
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub struct GuestRegisters {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
    /// CR2 (the page-fault linear address), which the VMCS does not hold.
    pub cr2: u64,
    fxsave: FxsaveArea,
}

impl GuestRegisters {
    /// All registers zero and the x87/SSE state [`FxsaveArea::INIT`].
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rax: 0,
            rbx: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            rbp: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            cr2: 0,
            fxsave: FxsaveArea::INIT,
        }
    }

    /// The guest's value of `reg`, `None` for [`GpReg::Rsp`] (the VMCS field GUEST_RSP holds it).
    ///
    /// ```
    /// use vmx_core::{GpReg, GuestRegisters};
    ///
    /// let mut regs = GuestRegisters::new();
    /// regs.r9 = 9;
    /// assert_eq!(regs.gpr(GpReg::R9), Some(9));
    /// assert_eq!(regs.gpr(GpReg::Rsp), None);
    /// ```
    #[must_use]
    pub const fn gpr(&self, reg: GpReg) -> Option<u64> {
        Some(match reg {
            GpReg::Rax => self.rax,
            GpReg::Rcx => self.rcx,
            GpReg::Rdx => self.rdx,
            GpReg::Rbx => self.rbx,
            GpReg::Rsp => return None,
            GpReg::Rbp => self.rbp,
            GpReg::Rsi => self.rsi,
            GpReg::Rdi => self.rdi,
            GpReg::R8 => self.r8,
            GpReg::R9 => self.r9,
            GpReg::R10 => self.r10,
            GpReg::R11 => self.r11,
            GpReg::R12 => self.r12,
            GpReg::R13 => self.r13,
            GpReg::R14 => self.r14,
            GpReg::R15 => self.r15,
        })
    }

    /// The frame's slot for `reg`, `None` for [`GpReg::Rsp`] (the VMCS field GUEST_RSP holds it).
    pub const fn gpr_mut(&mut self, reg: GpReg) -> Option<&mut u64> {
        Some(match reg {
            GpReg::Rax => &mut self.rax,
            GpReg::Rcx => &mut self.rcx,
            GpReg::Rdx => &mut self.rdx,
            GpReg::Rbx => &mut self.rbx,
            GpReg::Rsp => return None,
            GpReg::Rbp => &mut self.rbp,
            GpReg::Rsi => &mut self.rsi,
            GpReg::Rdi => &mut self.rdi,
            GpReg::R8 => &mut self.r8,
            GpReg::R9 => &mut self.r9,
            GpReg::R10 => &mut self.r10,
            GpReg::R11 => &mut self.r11,
            GpReg::R12 => &mut self.r12,
            GpReg::R13 => &mut self.r13,
            GpReg::R14 => &mut self.r14,
            GpReg::R15 => &mut self.r15,
        })
    }

    /// Sets the guest's `reg` to `value` (loaded at the next VM entry); [`RspInVmcs`] for
    /// [`GpReg::Rsp`], whose value is written to the VMCS field GUEST_RSP instead.
    pub const fn set_gpr(&mut self, reg: GpReg, value: u64) -> Result<(), RspInVmcs> {
        match self.gpr_mut(reg) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(RspInVmcs),
        }
    }

    /// The guest's x87/MMX/SSE state (as FXSAVE64 stored it at the last VM exit).
    #[must_use]
    pub const fn fxsave_area(&self) -> &FxsaveArea {
        &self.fxsave
    }

    /// Resets the guest's x87/SSE state to [`FxsaveArea::INIT`].
    pub fn reset_fxsave_area(&mut self) {
        self.fxsave = FxsaveArea::INIT;
    }
}

/// How the trampoline treats the x87/MMX/SSE state (the FXSAVE state: x87 registers and control
/// words, MMX, XMM0–15, MXCSR) of guest and host.
///
/// The choice is made by how the host is compiled, once for the whole build
/// ([`FPU_SWITCH`]): a host whose code may use SSE needs the switch, a host compiled without SSE
/// does not, and no run-time flag costs a branch on every VM entry and exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FpuSwitch {
    /// FXSAVE64/FXRSTOR64 twice per round trip: at entry the host's state is saved on the
    /// trampoline's stack and the guest's loaded from [`GuestRegisters`]; at exit the guest's is
    /// saved there and the host's loaded back. Needed by a host whose compiled code uses SSE (the
    /// default on x86_64: every Rust target but the soft-float ones, e.g.
    /// `x86_64-unknown-linux-gnu`, `x86_64-unknown-uefi`), since any of its code may use XMM
    /// registers and MXCSR. Requires CR4.OSFXSR = 1 and CR0.TS = CR0.EM = 0.
    Eager,
    /// Nothing switched: the guest's x87/SSE state stays in the processor's registers while the
    /// host handles an exit, and [`GuestRegisters::fxsave_area`] is neither loaded nor stored
    /// (it keeps [`FxsaveArea::INIT`] or what the host put there). Sound because the host's code
    /// does not touch those registers: it is compiled without SSE (`target_feature = "sse"` off,
    /// e.g. the soft-float `x86_64-unknown-none`, whose floating point is done in software), and
    /// the host's own assembly must not use them either. The guest starts with the registers as
    /// the host left them. No requirement on CR4.OSFXSR, CR0.TS or CR0.EM.
    None,
}

/// The trampoline's x87/SSE choice in this build: [`FpuSwitch::Eager`] when the code is compiled
/// with SSE (`target_feature = "sse"`), [`FpuSwitch::None`] when it is not.
#[cfg(target_feature = "sse")]
pub const FPU_SWITCH: FpuSwitch = FpuSwitch::Eager;
/// The trampoline's x87/SSE choice in this build: [`FpuSwitch::Eager`] when the code is compiled
/// with SSE (`target_feature = "sse"`), [`FpuSwitch::None`] when it is not.
#[cfg(not(target_feature = "sse"))]
pub const FPU_SWITCH: FpuSwitch = FpuSwitch::None;

/// Bytes the trampoline reserves below its saved registers for the host's FXSAVE image (eager
/// switch): 512 plus 8 that bring RSP back to a 16-byte boundary after the return address and the
/// four pushes.
const HOST_FXSAVE_SPACE: usize = match FPU_SWITCH {
    FpuSwitch::Eager => 512 + 8,
    FpuSwitch::None => 0,
};

/// Registers the trampoline pushes before reserving [`HOST_FXSAVE_SPACE`]: RBP, RBX, RFLAGS and
/// the frame pointer. R12–R15 are declared clobbered by the `asm!` that calls the trampoline, so the
/// compiler keeps what it needs of them (in a vCPU loop, usually nothing new to save).
const HOST_PUSHES: usize = 4;

// The caller's RSP is 16-byte aligned before the CALL (an `asm!` without `nostack` guarantees it);
// the return address and the pushes must leave the host FXSAVE image 16-byte aligned, and the
// guest's image must be 16-byte aligned in the frame.
const _: () = assert!(
    matches!(FPU_SWITCH, FpuSwitch::None)
        || (8 + 8 * HOST_PUSHES + HOST_FXSAVE_SPACE).is_multiple_of(16)
);
const _: () = assert!(offset_of!(GuestRegisters, fxsave).is_multiple_of(16));

/// The trampoline's instructions, with the x87/SSE lines of the eager switch (`entry` before the
/// guest's registers are loaded, `save` after they are stored, `restore` in the common epilogue)
/// given by the one caller for this build's [`FPU_SWITCH`].
#[cfg(target_arch = "x86_64")]
macro_rules! trampoline_asm {
    (entry: [$($entry:literal),*], save: [$($save:literal),*], restore: [$($restore:literal),*]) => {
        core::arch::naked_asm!(
            // Host state the VM exit does not restore. R12–R15 are the caller's (clobbered).
            "push rbp",
            "push rbx",
            "pushfq",
            // No maskable interrupt from here to the VM entry (a handler could use SSE or fault and
            // overwrite the guest's XMM registers or CR2) nor after the exit (which leaves RFLAGS =
            // 2): POPFQ gives the caller back its IF on return.
            "cli",
            "push rdi",
            $($entry,)*
            // Guest state that the VMCS does not hold. MOV to CR2 leaves the flags undefined, so it
            // comes before every flag test.
            "mov rax, [rdi + {cr2}]",
            "mov cr2, rax",
            // HOST_RSP/HOST_RIP already hold this stack pointer and the exit label (4)?
            "cmp rsp, [rdx + {cached_rsp}]",
            "jne 8f",
            "9:",
            // ZF = !launched; MOV leaves the flags alone until the branch.
            "test rsi, rsi",
            "mov rax, [rdi + {rax}]",
            "mov rbx, [rdi + {rbx}]",
            "mov rcx, [rdi + {rcx}]",
            "mov rdx, [rdi + {rdx}]",
            "mov rsi, [rdi + {rsi}]",
            "mov rbp, [rdi + {rbp}]",
            "mov r8, [rdi + {r8}]",
            "mov r9, [rdi + {r9}]",
            "mov r10, [rdi + {r10}]",
            "mov r11, [rdi + {r11}]",
            "mov r12, [rdi + {r12}]",
            "mov r13, [rdi + {r13}]",
            "mov r14, [rdi + {r14}]",
            "mov r15, [rdi + {r15}]",
            "mov rdi, [rdi + {rdi}]",
            "jz 2f",
            "vmresume",
            "jmp 5f",
            "2:",
            "vmlaunch",
            // Reached only when VMLAUNCH/VMRESUME/VMWRITE failed: CF = 1 is VMfailInvalid, ZF = 1
            // VMfailValid. RSP is still the host's.
            "5:",
            "mov eax, 2",
            "jnc 6f",
            "mov eax, 1",
            "6:",
            "jmp 7f",
            // VM exit: RSP = HOST_RSP, every other GPR holds the guest's value.
            "4:",
            "push rdi",
            "mov rdi, [rsp + 8 + {host_fxsave_space}]",
            "pop qword ptr [rdi + {rdi}]",
            "mov [rdi + {rax}], rax",
            "mov [rdi + {rbx}], rbx",
            "mov [rdi + {rcx}], rcx",
            "mov [rdi + {rdx}], rdx",
            "mov [rdi + {rsi}], rsi",
            "mov [rdi + {rbp}], rbp",
            "mov [rdi + {r8}], r8",
            "mov [rdi + {r9}], r9",
            "mov [rdi + {r10}], r10",
            "mov [rdi + {r11}], r11",
            "mov [rdi + {r12}], r12",
            "mov [rdi + {r13}], r13",
            "mov [rdi + {r14}], r14",
            "mov [rdi + {r15}], r15",
            "mov rax, cr2",
            "mov [rdi + {cr2}], rax",
            $($save,)*
            "xor eax, eax",
            // Common epilogue: host x87/SSE state (eager switch), the frame pointer dropped,
            // RFLAGS and the two callee-saved registers the caller cannot declare clobbered.
            "7:",
            $($restore,)*
            "add rsp, {host_fxsave_space} + 8",
            "popfq",
            "pop rbx",
            "pop rbp",
            "ret",
            // Out of line: the cache missed (first entry of this VMCS, another stack depth, or the
            // cache was reset). HOST_RSP = this stack pointer, HOST_RIP = the exit label (4); the
            // cache is updated only when both writes succeeded.
            "8:",
            "mov eax, {host_rsp}",
            "vmwrite rax, rsp",
            "jbe 5b",
            "lea rcx, [rip + 4b]",
            "mov eax, {host_rip}",
            "vmwrite rax, rcx",
            "jbe 5b",
            "mov [rdx + {cached_rsp}], rsp",
            "inc qword ptr [rdx + {writes}]",
            "jmp 9b",
            host_fxsave_space = const HOST_FXSAVE_SPACE,
            host_rsp = const vmcs_fields::fields::HOST_RSP.encoding(),
            host_rip = const vmcs_fields::fields::HOST_RIP.encoding(),
            cached_rsp = const offset_of!(HostStateCache, host_rsp),
            writes = const offset_of!(HostStateCache, writes),
            rax = const offset_of!(GuestRegisters, rax),
            rbx = const offset_of!(GuestRegisters, rbx),
            rcx = const offset_of!(GuestRegisters, rcx),
            rdx = const offset_of!(GuestRegisters, rdx),
            rsi = const offset_of!(GuestRegisters, rsi),
            rdi = const offset_of!(GuestRegisters, rdi),
            rbp = const offset_of!(GuestRegisters, rbp),
            r8 = const offset_of!(GuestRegisters, r8),
            r9 = const offset_of!(GuestRegisters, r9),
            r10 = const offset_of!(GuestRegisters, r10),
            r11 = const offset_of!(GuestRegisters, r11),
            r12 = const offset_of!(GuestRegisters, r12),
            r13 = const offset_of!(GuestRegisters, r13),
            r14 = const offset_of!(GuestRegisters, r14),
            r15 = const offset_of!(GuestRegisters, r15),
            cr2 = const offset_of!(GuestRegisters, cr2),
            fxsave = const offset_of!(GuestRegisters, fxsave),
        )
    };
}

/// The trampoline. Returns 0 after a VM exit, 1 on VMfailInvalid and 2 on VMfailValid (of
/// VMLAUNCH, VMRESUME or the VMWRITEs of HOST_RSP/HOST_RIP). Called only from [`vm_run`]'s
/// `asm!`, which declares R12–R15 and every register the System V ABI lets a call clobber as
/// clobbered; RBX and RBP (which an `asm!` cannot name) are saved here.
///
/// Stack layout from HOST_RSP upward: the host's FXSAVE image (eager switch only: 512 bytes + 8 of
/// padding), `regs`, RFLAGS, RBX, RBP, the return address.
///
/// HOST_RSP and HOST_RIP are written (out of line, label 8) only when `cache.host_rsp` differs from
/// this entry's stack pointer; the common path is one compare and one not-taken branch.
///
/// # Safety
///
/// As [`vm_run`], and called as described above.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
unsafe extern "sysv64" fn vmx_core_vm_run(
    regs: *mut GuestRegisters,
    launched: u64,
    cache: *mut HostStateCache,
) -> u64 {
    #[cfg(target_feature = "sse")]
    trampoline_asm!(
        entry: ["sub rsp, {host_fxsave_space}", "fxsave64 [rsp]", "fxrstor64 [rdi + {fxsave}]"],
        save: ["fxsave64 [rdi + {fxsave}]"],
        restore: ["fxrstor64 [rsp]"]
    );
    // No x87/SSE instruction; the operand is named once so that the template uses it.
    #[cfg(not(target_feature = "sse"))]
    trampoline_asm!(entry: ["/* {fxsave} */"], save: [], restore: [])
}

/// What the trampoline last wrote to the host-state fields HOST_RSP and HOST_RIP of one VMCS, so
/// that an entry whose stack pointer matches skips both VMWRITEs.
///
/// # The invariant
///
/// A cache that is not empty ([`HostStateCache::host_rsp`] is `Some(rsp)`) promises that the
/// VMCS it belongs to holds HOST_RSP = `rsp` and HOST_RIP = the trampoline's exit label. It stays
/// true as long as
///
/// - the cache is used with that one VMCS only (a cache per VMCS; [`CurrentVmcs`] owns one per
///   load, so a VMCS cleared and loaded again, or moved to another logical processor, starts with
///   an empty cache), and
/// - nothing else writes HOST_RSP or HOST_RIP of that VMCS. [`CurrentVmcs::write_raw`] of either
///   field empties the cache itself; code that writes them by other means (raw
///   [`instructions::vmwrite`](crate::instructions::vmwrite), the `vmcs` crate's unchecked
///   `HardwareVmcs`) calls [`HostStateCache::reset`] (or [`CurrentVmcs::reset_host_state_cache`]) before
///   the next entry.
///
/// The stack pointer itself is compared on every entry, so running the same VMCS from another
/// stack or another call depth (a vCPU loop moved to another thread's stack, a deeper call chain)
/// is detected and both fields are written again: the cache is never trusted for the *value* of
/// HOST_RSP, only for the fact that the VMCS already holds it.
///
/// ```
/// use vmx_core::HostStateCache;
///
/// let mut cache = HostStateCache::new();
/// assert_eq!((cache.host_rsp(), cache.writes()), (None, 0));
/// cache.reset();
/// assert_eq!(cache.host_rsp(), None);
/// ```
///
/// [`CurrentVmcs`]: crate::CurrentVmcs
/// [`CurrentVmcs::write_raw`]: crate::CurrentVmcs::write_raw
/// [`CurrentVmcs::reset_host_state_cache`]: crate::CurrentVmcs::reset_host_state_cache
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HostStateCache {
    /// HOST_RSP as last written by the trampoline; 0 (never a valid stack pointer at an entry)
    /// when empty.
    host_rsp: u64,
    /// How many times the trampoline wrote HOST_RSP and HOST_RIP through this cache.
    writes: u64,
}

impl HostStateCache {
    /// An empty cache: the next entry writes HOST_RSP and HOST_RIP.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            host_rsp: 0,
            writes: 0,
        }
    }

    /// The HOST_RSP value the trampoline last wrote into the VMCS, `None` when empty.
    #[must_use]
    pub const fn host_rsp(&self) -> Option<u64> {
        if self.host_rsp == 0 {
            None
        } else {
            Some(self.host_rsp)
        }
    }

    /// How many entries found the cache empty or stale and wrote HOST_RSP and HOST_RIP (a vCPU
    /// loop that always enters from the same stack depth writes them once).
    #[must_use]
    pub const fn writes(&self) -> u64 {
        self.writes
    }

    /// Empties the cache, so that the next entry writes HOST_RSP and HOST_RIP again. Needed after
    /// HOST_RSP or HOST_RIP was written by anything but the trampoline.
    pub const fn reset(&mut self) {
        self.host_rsp = 0;
    }

    /// Records that HOST_RSP = `host_rsp` and HOST_RIP were just written, as the trampoline does
    /// (for the software processor, which models it).
    pub(crate) const fn record_write(&mut self, host_rsp: u64) {
        self.host_rsp = host_rsp;
        self.writes += 1;
    }
}

/// Enters the guest of the current VMCS with VMLAUNCH (`launched == false`) or VMRESUME
/// (`launched == true`) and returns at its next VM exit with `regs` holding the guest's registers.
///
/// The trampoline writes HOST_RSP (its own stack pointer, below the host registers it saved) and
/// HOST_RIP (its exit label) itself, but only when `cache` says the VMCS does not hold them already
/// (see [`HostStateCache`]): an entry from the same stack depth as the last one costs no VMWRITE.
/// A failed VMLAUNCH/VMRESUME (VMfail) returns
/// `Err` with the host state intact. A VM entry that fails *after* the checks of the VMCS control
/// and host-state fields (invalid guest state, MSR loading; SDM §27.8) is a VM exit with bit 31 of
/// the exit reason set, and returns `Ok`.
///
/// [`CurrentVmcs::run`](crate::CurrentVmcs::run) wraps this and tracks the launch state.
///
/// # Safety
///
/// - VMX root operation at CPL 0 with a current VMCS whose launch state matches `launched`
///   (otherwise VMfailValid 4 or 5 is returned, which is safe).
/// - `cache` belongs to the current VMCS and its invariant holds (see [`HostStateCache`]): it is
///   empty, or that VMCS's HOST_RSP and HOST_RIP were last written by this trampoline through
///   this very cache. A stale cache would send the next VM exit to a stack that is no longer the
///   trampoline's.
/// - The VMCS host-state area describes the running host (CR0, CR3, CR4, segment selectors, FS/GS/
///   TR/GDTR/IDTR bases, SYSENTER MSRs, and EFER/PAT if the exit controls load them), so that the
///   VM exit resumes this code. On exit the processor sets the GDTR and IDTR limits to 0xFFFF and
///   the TR limit to 0x67; a host that needs others reloads them.
/// - The guest configuration (EPT or the absence of it, MSR/I/O bitmaps, …) keeps the guest from
///   reaching memory the host relies on.
/// - x87/SSE state, with the eager switch of an SSE build ([`FPU_SWITCH`]): CR4.OSFXSR = 1 (else
///   FXSAVE/FXRSTOR skip the XMM registers and MXCSR), CR0.TS = 0 (else FXSAVE/FXRSTOR raise #NM,
///   a lazy-FPU host must restore its state first) and CR0.EM = 0 (else #UD); debug builds assert
///   the three on every call. Without the switch (a build without SSE), the host's code and
///   assembly leave the x87/MMX/SSE registers alone between a VM exit and the next entry: they
///   hold the guest's state.
/// - Interrupts: the trampoline itself keeps maskable interrupts off between loading the guest's
///   XMM registers and CR2 and the VM entry, and between the VM exit and saving them again (CLI
///   after saving RFLAGS; a VM exit clears RFLAGS.IF; POPFQ restores the caller's IF on return).
///   What it cannot mask is the caller's to prevent: an NMI or machine-check handler that runs in
///   that window must leave the x87/SSE registers and CR2 as it found them, and nothing in it may
///   fault (`regs`, `cache` and the stack are mapped and present).
/// - What a VM exit leaves behind (SDM Vol. 3C, §28.5.1 "Loading Host Control Registers, Debug
///   Registers, MSRs"): IA32_DEBUGCTL is cleared to 0 and DR7 is set to 0x400 (all breakpoints
///   off), whatever the host had; the guest's values are saved to the VMCS only with the "save
///   debug controls" exit control. XCR0 is not part of the VMCS and is not switched: after the
///   exit it holds what the guest ran with (whatever the hypervisor loaded for it, since XSETBV
///   always exits). A host that uses DR7, IA32_DEBUGCTL (LBR, BTF) or a different XCR0 restores
///   them after each exit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn vm_run(
    regs: &mut GuestRegisters,
    cache: &mut HostStateCache,
    launched: bool,
) -> Result<(), VmFail> {
    #[cfg(all(debug_assertions, target_feature = "sse"))]
    {
        let (cr0, cr4): (u64, u64);
        // SAFETY: CPL 0 is the caller's obligation; reading CR0 and CR4 has no side effect.
        unsafe {
            core::arch::asm!(
                "mov {cr0}, cr0",
                "mov {cr4}, cr4",
                cr0 = out(reg) cr0,
                cr4 = out(reg) cr4,
                options(nomem, nostack, preserves_flags),
            );
        }
        use vmx_caps::arch::{Cr0, Cr4};
        debug_assert!(
            !Cr0::from_bits_retain(cr0).intersects(Cr0::TS | Cr0::EM),
            "vm_run needs CR0.TS = CR0.EM = 0"
        );
        debug_assert!(
            Cr4::from_bits_retain(cr4).contains(Cr4::OSFXSR),
            "vm_run needs CR4.OSFXSR = 1"
        );
    }
    let status: u64;
    // SAFETY: the caller upholds the VMX, host-state, x87/SSE and cache obligations above; `regs`
    // is a live, exclusively borrowed, 16-byte aligned frame and `cache` a live, exclusively
    // borrowed cache for the duration of the call. The trampoline follows the System V calling
    // convention but for R12–R15, which it loads with the guest's values and does not restore:
    // they are declared clobbered here, as is every register the convention lets a call clobber.
    // Without `nostack`, RSP is 16-byte aligned for the CALL.
    unsafe {
        core::arch::asm!(
            "call {trampoline}",
            trampoline = sym vmx_core_vm_run,
            inout("rdi") core::ptr::from_mut(regs) => _,
            inout("rsi") u64::from(launched) => _,
            inout("rdx") core::ptr::from_mut(cache) => _,
            lateout("rax") status,
            lateout("r12") _,
            lateout("r13") _,
            lateout("r14") _,
            lateout("r15") _,
            clobber_abi("sysv64"),
        );
    }
    match status {
        0 => Ok(()),
        1 => Err(VmFail::Invalid),
        // SAFETY: status 2 is the VMfailValid of a VMX instruction that just executed, with a
        // current VMCS.
        _ => Err(unsafe { fail_valid() }),
    }
}
