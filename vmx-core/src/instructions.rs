//! The VMX instructions, one `unsafe fn` each, with the status captured in the same `asm!` block.
//!
//! Every wrapper that can fail branches on RFLAGS inside its own `asm!` block, right after the
//! instruction: `jbe` (CF = 1 or ZF = 1) leaves the straight-line path for a stub in the section
//! `.text.unlikely.vmx_core`, which tells VMfailInvalid (CF = 1) from VMfailValid (ZF = 1) and
//! jumps back into the function's own failure blocks. The success path of [`vmread`] and
//! [`vmwrite`], inlined, is therefore the instruction and one not-taken branch. On VMfailValid the
//! VM-instruction error field (encoding 0x4400) is read in a separate `#[cold]` function.
//!
//! The stub's section is switched to with `.pushsection .text.unlikely.vmx_core,"ax"`, a form that
//! both object formats accept: ELF reads it as an allocated, executable `PROGBITS` section, COFF
//! (PE/UEFI targets) as a read-only code section (the ELF-only `@progbits` is what COFF rejects).
//! A freestanding kernel's linker script must collect `.text.*` input sections (rustc already puts
//! each function in its own `.text.<symbol>` section, so any working script does).
//!
//! # Common safety obligations
//!
//! Unless a function says otherwise, calling it requires: the processor supports VMX, the caller
//! runs at CPL 0 and in VMX operation (VMX root operation, or VMX non-root operation where the
//! instruction causes a VM exit the hypervisor handles), else the instruction raises #UD or #GP.
//! Breaking the rules of the VMX architecture (a VMCS region reused while current, host-state fields
//! that do not describe the host, …) corrupts memory or the host state: these are not checked.
//! The safe, checked layer is [`crate::VmxRoot`] and [`crate::CurrentVmcs`].

use core::arch::asm;
use core::mem::MaybeUninit;

use crate::error::{VmFail, VmInstructionError};
use crate::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use crate::trampoline::GuestRegisters;

/// Runs one VMX instruction (the leading string literals) followed by the status branch described
/// in the module docs; on failure, returns `Err(VmFail)` from the enclosing function.
macro_rules! vmx_asm_status {
    (@options($($option:ident),*); $($insn:literal),+ ; $($operand:tt)*) => {
        asm!(
            $($insn,)+
            "jbe 3f",
            ".pushsection .text.unlikely.vmx_core,\"ax\"",
            "3:",
            "jc {invalid}",
            "jmp {valid}",
            ".popsection",
            $($operand)*
            invalid = label { return Err(VmFail::Invalid) },
            // SAFETY: this block is reached only from the VMfailValid branch of a VMX instruction
            // that just executed, so the processor is in VMX operation with a current VMCS.
            valid = label { return Err(unsafe { fail_valid() }) },
            options($($option),*),
        )
    };
    ($($insn:literal),+ ; $($operand:tt)*) => {
        vmx_asm_status!(@options(nostack); $($insn),+ ; $($operand)*)
    }
}

/// VMREAD of the VM-instruction error field of the current VMCS: the error, or `Err` with
/// VMfailInvalid (CF = 1: no current VMCS) or VMfailValid of an unknown error 0 (ZF = 1: the field
/// could not be read, which no processor does).
///
/// # Safety
///
/// VMX operation at CPL 0.
unsafe fn read_instruction_error() -> Result<VmInstructionError, VmFail> {
    let value: u64;
    let (invalid, valid): (u8, u8);
    // SAFETY: the caller guarantees VMX operation at CPL 0; VMREAD only reads the current VMCS
    // and writes the register outputs.
    unsafe {
        asm!(
            "vmread {value}, {encoding}",
            "setc {invalid}",
            "setz {valid}",
            value = lateout(reg) value,
            invalid = lateout(reg_byte) invalid,
            valid = lateout(reg_byte) valid,
            encoding = in(reg) u64::from(vmcs_fields::fields::VM_INSTRUCTION_ERROR.encoding()),
            options(nostack, nomem),
        );
    }
    if invalid != 0 {
        Err(VmFail::Invalid)
    } else if valid != 0 {
        Err(VmFail::Valid(VmInstructionError::Unknown(0)))
    } else {
        // The field is 32 bits wide: VMREAD zero-extends it, so the truncation loses nothing.
        Ok(VmInstructionError::from_raw(value as u32))
    }
}

/// Builds the [`VmFail::Valid`] of the instruction that just failed by reading the
/// VM-instruction error field of the current VMCS.
///
/// # Safety
///
/// Call only right after a VMX instruction reported VMfailValid (the processor is then in VMX
/// operation at CPL 0 with a current VMCS).
#[cold]
#[inline(never)]
pub(crate) unsafe fn fail_valid() -> VmFail {
    // SAFETY: VMX operation at CPL 0, as the caller guarantees.
    match unsafe { read_instruction_error() } {
        Ok(error) => VmFail::Valid(error),
        // The instruction reported VMfailValid: an unreadable error field is an unknown error.
        Err(_) => VmFail::Valid(VmInstructionError::Unknown(0)),
    }
}

/// Runs VMREAD or VMWRITE (the string literal) and branches to one failure block on CF = 1 or
/// ZF = 1, which asks [`failed_in_vmx_operation`] what the failure was.
///
/// One failure label instead of two keeps the success path free of the failure's values: with two
/// labels the compiler merges `Err(VmFail::Invalid)` and `Err(fail_valid())` into one value and, as
/// an `asm goto` edge cannot be split, materializes their operands before the instruction, on the
/// success path.
macro_rules! vmx_asm_in_vmx_operation {
    (@options($($option:ident),*); $insn:literal ; $($operand:tt)*) => {
        asm!(
            $insn,
            "jbe {failed}",
            $($operand)*
            // SAFETY: reached only right after VMREAD or VMWRITE failed, which they do only in
            // VMX operation (outside it they raise #UD).
            failed = label { return Err(unsafe { failed_in_vmx_operation() }) },
            options($($option),*),
        )
    };
}

/// What made the VMREAD or VMWRITE that just executed fail: VMfailInvalid when there is no current
/// VMCS, else VMfailValid with the VM-instruction error field.
///
/// The SDM's VMfail (Vol. 3C, §31.2 "Conventions") is VMfailValid when the current-VMCS pointer is
/// valid and VMfailInvalid otherwise, and VMREAD/VMWRITE fail with VMfailInvalid only when it is
/// not (§31.3): so a VMREAD of the VM-instruction error field, which needs exactly a current
/// VMCS, fails (CF = 1) exactly when the instruction before it failed with VMfailInvalid.
///
/// # Safety
///
/// Call only right after a VMREAD or VMWRITE failed (the processor is in VMX operation at CPL 0).
#[cold]
#[inline(never)]
pub(crate) unsafe fn failed_in_vmx_operation() -> VmFail {
    // SAFETY: VMX operation at CPL 0, as the caller guarantees.
    match unsafe { read_instruction_error() } {
        Ok(error) => VmFail::Valid(error),
        Err(fail) => fail,
    }
}

/// VMXON: enters VMX root operation with the VMXON region at physical address
/// `vmxon_region_phys` (SDM Vol. 3C, §31.3 "VMXON—Enter VMX Operation").
///
/// # Safety
///
/// The processor supports VMX and runs at CPL 0 with CR4.VMXE = 1, CR0/CR4 satisfying the
/// IA32_VMX_CR0/CR4_FIXED MSRs and IA32_FEATURE_CONTROL allowing VMX (else #GP or #UD). The region
/// is 4-KiB aligned, carries the revision identifier of IA32_VMX_BASIC and stays allocated and
/// untouched by software until VMXOFF.
pub unsafe fn vmxon(vmxon_region_phys: u64) -> Result<(), VmFail> {
    let operand = vmxon_region_phys;
    // SAFETY: the caller upholds the VMXON preconditions; `operand` is a live u64 the instruction
    // only reads.
    unsafe {
        vmx_asm_status!("vmxon qword ptr [{operand}]"; operand = in(reg) &raw const operand,);
    }
    Ok(())
}

/// VMXOFF: leaves VMX operation (SDM Vol. 3C, §31.3 "VMXOFF—Leave VMX Operation").
///
/// # Safety
///
/// The processor is in VMX root operation at CPL 0. Every VMCS that must be kept has been cleared
/// with VMCLEAR first (VMXOFF does not write cached VMCS data back to memory).
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX root operation at CPL 0.
    unsafe {
        vmx_asm_status!("vmxoff";);
    }
    Ok(())
}

/// VMCLEAR: writes the VMCS at `vmcs_phys` back to memory, sets its launch state to clear and
/// makes it not current (SDM Vol. 3C, §31.3 "VMCLEAR—Clear Virtual-Machine Control Structure").
///
/// # Safety
///
/// VMX root operation at CPL 0; `vmcs_phys` is the physical address of a 4-KiB VMCS region owned by
/// the caller (VMCLEAR writes to it).
pub unsafe fn vmclear(vmcs_phys: u64) -> Result<(), VmFail> {
    let operand = vmcs_phys;
    // SAFETY: the caller upholds VMX root operation and owns the region; `operand` is a live u64.
    unsafe {
        vmx_asm_status!("vmclear qword ptr [{operand}]"; operand = in(reg) &raw const operand,);
    }
    Ok(())
}

/// VMPTRLD: makes the VMCS at `vmcs_phys` the current VMCS (SDM Vol. 3C, §31.3 "VMPTRLD—Load
/// Pointer to Virtual-Machine Control Structure").
///
/// # Safety
///
/// VMX root operation at CPL 0; `vmcs_phys` is the physical address of a 4-KiB VMCS region owned by
/// the caller that stays allocated and untouched by software while current (and until a VMCLEAR).
pub unsafe fn vmptrld(vmcs_phys: u64) -> Result<(), VmFail> {
    let operand = vmcs_phys;
    // SAFETY: the caller upholds VMX root operation and owns the region; `operand` is a live u64.
    unsafe {
        vmx_asm_status!("vmptrld qword ptr [{operand}]"; operand = in(reg) &raw const operand,);
    }
    Ok(())
}

/// VMPTRST: the physical address of the current VMCS, or `0xFFFF_FFFF_FFFF_FFFF` when there is
/// none (SDM Vol. 3C, §31.3 "VMPTRST—Store Pointer to Virtual-Machine Control Structure").
///
/// # Safety
///
/// VMX root operation at CPL 0.
pub unsafe fn vmptrst() -> Result<u64, VmFail> {
    let mut pointer = MaybeUninit::<u64>::uninit();
    // SAFETY: the caller guarantees VMX root operation; VMPTRST writes exactly the 8 bytes of
    // `pointer`.
    unsafe {
        vmx_asm_status!("vmptrst qword ptr [{pointer}]"; pointer = in(reg) pointer.as_mut_ptr(),);
    }
    // SAFETY: VMPTRST succeeded, so it stored the 64-bit pointer.
    Ok(unsafe { pointer.assume_init() })
}

/// VMREAD: reads the field `encoding` of the current VMCS (SDM Vol. 3C, §31.3 "VMREAD—Read Field
/// from Virtual-Machine Control Structure"). Fields narrower than 64 bits are zero-extended.
///
/// Inlined, the success path is the VMREAD and one not-taken branch (the value is stored by VMREAD
/// into a stack slot and loaded from there).
///
/// # Safety
///
/// VMX operation at CPL 0 (VMX non-root operation only with VMCS shadowing).
#[inline(always)]
pub unsafe fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let mut value = MaybeUninit::<u64>::uninit();
    // SAFETY: the caller guarantees VMX operation; VMREAD with a 64-bit memory destination writes
    // exactly the 8 bytes of `value`.
    unsafe {
        vmx_asm_in_vmx_operation!(
            @options(nostack);
            "vmread qword ptr [{value}], {encoding}";
            value = in(reg) value.as_mut_ptr(),
            encoding = in(reg) u64::from(encoding),
        );
    }
    // SAFETY: VMREAD succeeded, so it stored the field's value (zero-extended to 64 bits).
    Ok(unsafe { value.assume_init() })
}

/// VMWRITE: writes `value` to the field `encoding` of the current VMCS (SDM Vol. 3C, §31.3
/// "VMWRITE—Write Field to Virtual-Machine Control Structure"). Bits beyond the field's width are
/// ignored by the processor.
///
/// Inlined, the success path is the VMWRITE and one not-taken branch.
///
/// # Safety
///
/// VMX operation at CPL 0 (VMX non-root operation only with VMCS shadowing). The written value
/// becomes part of the state loaded by the next VM entry or VM exit: host-state fields must
/// describe the host and guest-state/control fields must not let the guest reach host memory.
#[inline(always)]
pub unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX operation and takes responsibility for the value.
    unsafe {
        // `nomem`: VMWRITE reads only its register operands. Memory the field refers to (bitmaps,
        // EPT, MSR areas) is read at VM entry, by `vm_run`, which clobbers memory.
        vmx_asm_in_vmx_operation!(
            @options(nostack, nomem);
            "vmwrite {encoding}, {value}";
            encoding = in(reg) u64::from(encoding),
            value = in(reg) value,
        );
    }
    Ok(())
}

/// INVEPT: invalidates cached EPT translations (SDM Vol. 3C, §31.3 "INVEPT—Invalidate Translations
/// Derived from EPT"). The checked wrapper is [`crate::VmxRoot::invept`].
///
/// # Safety
///
/// VMX root operation at CPL 0 on a processor that supports INVEPT (else #UD).
pub unsafe fn invept(
    invalidation: InveptType,
    descriptor: &InveptDescriptor,
) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX root operation and INVEPT support; the descriptor is a
    // live 16-byte value the instruction only reads.
    unsafe {
        vmx_asm_status!(
            "invept {kind}, xmmword ptr [{descriptor}]";
            kind = in(reg) invalidation as u64,
            descriptor = in(reg) core::ptr::from_ref(descriptor),
        );
    }
    Ok(())
}

/// INVVPID: invalidates cached translations tagged with a VPID (SDM Vol. 3C, §31.3
/// "INVVPID—Invalidate Translations Based on VPID"). The checked wrapper is
/// [`crate::VmxRoot::invvpid`].
///
/// # Safety
///
/// VMX root operation at CPL 0 on a processor that supports INVVPID (else #UD).
pub unsafe fn invvpid(
    invalidation: InvvpidType,
    descriptor: &InvvpidDescriptor,
) -> Result<(), VmFail> {
    // SAFETY: the caller guarantees VMX root operation and INVVPID support; the descriptor is a
    // live 16-byte value the instruction only reads.
    unsafe {
        vmx_asm_status!(
            "invvpid {kind}, xmmword ptr [{descriptor}]";
            kind = in(reg) invalidation as u64,
            descriptor = in(reg) core::ptr::from_ref(descriptor),
        );
    }
    Ok(())
}

/// VMCALL: calls the VMM (SDM Vol. 3C, §31.3 "VMCALL—Call to VM Monitor"). RAX, RBX, RCX, RDX,
/// RSI and RDI of `registers` are loaded before the instruction and hold the registers' values
/// after it; its other fields are left as they are.
///
/// VMCALL itself defines no calling convention: which registers carry the hypercall number,
/// arguments and results is the hypervisor's choice, and these six cover the common ones (KVM's
/// uses RAX, RBX, RCX, RDX and RSI). The caller's side of the call uses the same type as the
/// VMM's: the VMM finds these values in the [`GuestRegisters`] of its VM exit.
///
/// In VMX non-root operation (the usual case) VMCALL causes a VM exit and the values and RFLAGS
/// seen afterwards are the hypervisor's: a hypervisor that returns with CF or ZF set makes this
/// report a [`VmFail`], and under ZF the VM-instruction error is read by VMREAD, which a guest can
/// only do with VMCS shadowing. In VMX root operation VMCALL fails: VMfailValid with error 1
/// ([`VmInstructionError::VmcallInVmxRoot`]) or, without a current VMCS, VMfailInvalid.
///
/// # Safety
///
/// CPL 0 in VMX operation (else #UD or #GP); the hypervisor's handling of the call is the caller's
/// responsibility.
pub unsafe fn vmcall(registers: &mut GuestRegisters) -> Result<(), VmFail> {
    let carry: u8;
    let zero: u8;
    // SAFETY: the caller guarantees VMX operation at CPL 0. RBX cannot be an operand, so it is
    // swapped with a scratch register around the instruction and restored.
    unsafe {
        asm!(
            "xchg {rbx}, rbx",
            "vmcall",
            "setc {carry}",
            "setz {zero}",
            "xchg {rbx}, rbx",
            rbx = inout(reg) registers.rbx,
            carry = lateout(reg_byte) carry,
            zero = lateout(reg_byte) zero,
            inout("rax") registers.rax,
            inout("rcx") registers.rcx,
            inout("rdx") registers.rdx,
            inout("rsi") registers.rsi,
            inout("rdi") registers.rdi,
        );
    }
    if carry != 0 {
        Err(VmFail::Invalid)
    } else if zero != 0 {
        // SAFETY: VMCALL reported VMfailValid, so there is a VMCS holding the error number.
        Err(unsafe { fail_valid() })
    } else {
        Ok(())
    }
}

/// VMFUNC: invokes VM function `function` (EAX) with argument `argument` (ECX) from VMX non-root
/// operation (SDM Vol. 3C, §31.3 "VMFUNC—Invoke VM function"); function 0 is EPTP switching, whose
/// argument is the index into the EPTP list.
///
/// VMFUNC reports no status in RFLAGS: it either performs the function, causes a VM exit (function
/// not enabled or invalid argument) or raises #UD (outside VMX non-root operation or with
/// "enable VM functions" clear). Hence no `Result`.
///
/// # Safety
///
/// VMX non-root operation with VM functions enabled, else #UD. The function changes the guest's
/// environment (EPTP switching replaces the guest-physical address space under the running code).
pub unsafe fn vmfunc(function: u32, argument: u32) {
    // SAFETY: the caller guarantees VMX non-root operation and the effect of the function.
    unsafe {
        asm!("vmfunc", in("eax") function, in("ecx") argument, options(nostack));
    }
}
