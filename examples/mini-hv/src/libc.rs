//! The libc symbols compiled Rust code expects on the linux-gnu target: `memcpy`, `memmove`, `memset`,
//! `memcmp`, `bcmp`, and `rust_eh_personality` (referenced by the precompiled `core`; never called with
//! `panic = "abort"`).
//!
//! The copies and fills use `rep movsb`/`rep stosb` in inline assembly, so LLVM cannot turn their bodies back
//! into calls to themselves.

use core::arch::asm;

/// `memcpy(3)`.
///
/// # Safety
/// `src` and `dest` valid for `n` bytes and not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; DF is clear (the ABI guarantees it on function entry).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// `memmove(3)`: copies backwards when `dest` overlaps the tail of `src`.
///
/// # Safety
/// `src` and `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest before src, or no overlap: a forward copy is safe.
        // SAFETY: as for `memcpy`; a forward copy reads each source byte before overwriting it.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // dest inside (src, src + n): copy from the last byte down, with DF set for the copy only.
        // SAFETY: the caller guarantees both ranges; the pointers address the last byte of each; DF is
        // restored before the block ends.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
                 options(nostack));
        }
    }
    dest
}

/// `memset(3)`.
///
/// # Safety
/// `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; DF is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// `memcmp(3)`.
///
/// # Safety
/// `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees n readable bytes at each pointer; volatile keeps LLVM from
        // recognising the loop as a `memcmp` call.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// `bcmp(3)`: zero when equal.
///
/// # Safety
/// `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}

/// The unwinding personality routine `core` refers to; with `panic = "abort"` nothing unwinds, so it is
/// never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
