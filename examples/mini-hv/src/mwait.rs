//! MONITOR and MWAIT under "MONITOR exiting" and "MWAIT exiting" (SDM Vol. 3C, 26.1.3
//! "Instructions That Cause VM Exits Conditionally"), which a processor may force to 1 — Hyper-V
//! does for its nested guests — so both of the example's guests must be able to complete them.
//!
//! The VM exit comes before the instructions' own checks (SDM Vol. 3C, 26.1.1: only #UD,
//! privilege-level faults and operand-fetch faults have priority over it; processors and Bochs
//! check ECX and the address after deciding to exit), so the emulation makes those checks:
//!
//! - MONITOR (SDM Vol. 2B, "MONITOR—Set Up Monitor Address"): #GP(0) if RCX (ECX outside 64-bit
//!   mode) is not 0; the address DS:RAX (segment override and address-size prefixes honoured) is
//!   checked as a 1-byte read — canonical form in 64-bit mode, segment usability, readability and
//!   limit outside it — raising #GP(0), or #SS(0) for SS; its translation through the guest's paging
//!   structures is the caller's ([`MonitorCheck::Translate`]), a missing one raising #PF. Then it
//!   completes **without arming** address-range monitoring: the armed range only says which store
//!   would end a later MWAIT, and the hypervisor keeps no such state.
//! - MWAIT (SDM Vol. 2B, "MWAIT—Monitor Wait"): #GP(0) if RCX\[63:1\] (ECX\[31:1\]) is not 0, or
//!   if ECX\[0\] ("treat interrupts as break events even if masked") is 1 where CPUID.05H:ECX\[1\]
//!   does not enumerate it. Then it completes as a **NOP**: the SDM says that an MWAIT without a
//!   successfully armed monitor "will not enter the implementation-dependent-optimized state" and
//!   resumes at the next instruction — exactly the situation the no-op MONITOR leaves. A HLT-like
//!   wait would be allowed too (MWAIT may wait until any break event), but it would need a wake-up
//!   source, and it would stall a guest that MWAITs with interrupts masked and ECX\[0\] = 0,
//!   which on the processor ends at once when no monitor is armed. Software must re-check its
//!   condition after MWAIT anyway (it may return for implementation-specific reasons).

use exits::inject::Exception;
use vmcs::{GuestSegment, Segment, VmcsRead, fields};
use vmx_caps::arch::{Cr0, Cr4, Efer, Rflags};
use vmx_core::{GuestRegisters, VmFail};

/// The bytes of MONITOR without prefixes (`0F 01 C8`).
pub const MONITOR_OPCODE_LENGTH: u32 = 3;

/// What the checks of MONITOR decided before the translation of its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorCheck {
    /// The instruction raises this exception with error code 0 (#GP or #SS).
    Fault(Exception),
    /// The checks passed so far: the linear address must still translate (as a supervisor read) in
    /// the guest's paging structures, else #PF with that address in CR2 ([`MONITOR_PF_ERROR_CODE`]).
    Translate {
        /// The linear address to monitor.
        linear: u64,
    },
}

/// The #PF error code of MONITOR's not-present translation: a read (W/R = 0) at CPL 0 (U/S = 0;
/// MONITOR raises #UD at CPL > 0 before any VM exit), of a not-present page (P = 0).
pub const MONITOR_PF_ERROR_CODE: u32 = 0;

/// Whether the guest runs 64-bit code: IA32_EFER.LMA with CS.L = 1.
///
/// # Errors
/// A failing VMREAD.
pub fn in_64_bit_mode(vmcs: &impl VmcsRead) -> Result<bool, VmFail> {
    Ok(vmcs.read(fields::GUEST_IA32_EFER)?.contains(Efer::LMA)
        && vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?.long_mode())
}

/// The address size of an instruction in bits.
fn address_size(long_mode: bool, cs_db: bool, override_67: bool) -> u32 {
    match (long_mode, cs_db ^ override_67) {
        (true, _) if override_67 => 32,
        (true, _) => 64,
        (false, true) => 32,
        (false, false) => 16,
    }
}

/// The segment a legacy segment-override prefix names.
fn override_segment(prefix: u8) -> Option<GuestSegment> {
    Some(match prefix {
        0x26 => GuestSegment::Es,
        0x2e => GuestSegment::Cs,
        0x36 => GuestSegment::Ss,
        0x3e => GuestSegment::Ds,
        0x64 => GuestSegment::Fs,
        0x65 => GuestSegment::Gs,
        _ => return None,
    })
}

/// Whether a 1-byte read at offset `ea` of `segment` passes the protected-mode segment checks
/// (SDM Vol. 3A, 6.3 "Limit Checking" and 6.4 "Type Checking"): usable, readable (not an
/// execute-only code segment), within the limit (expand-down: above it, up to 0xFFFF or
/// 0xFFFF_FFFF by the B flag).
fn protected_mode_readable(segment: &Segment, ea: u64) -> bool {
    let ar = segment.access_rights;
    if ar.unusable() {
        return false;
    }
    let kind = ar.segment_type();
    let code = kind & 0b1000 != 0;
    if code && kind & 0b0010 == 0 {
        return false;
    }
    let limit = u64::from(segment.limit);
    if !code && kind & 0b0100 != 0 {
        let top = if ar.default_big() {
            0xffff_ffff
        } else {
            0xffff
        };
        ea > limit && ea <= top
    } else {
        ea <= limit
    }
}

/// MONITOR's checks for the guest state in `vmcs` and registers `regs`; `prefixes` are the bytes
/// of the instruction before its opcode (the exit's instruction length minus
/// [`MONITOR_OPCODE_LENGTH`]).
///
/// # Errors
/// A failing VMREAD.
pub fn check_monitor(
    vmcs: &impl VmcsRead,
    regs: &GuestRegisters,
    prefixes: &[u8],
) -> Result<MonitorCheck, VmFail> {
    let long_mode = in_64_bit_mode(vmcs)?;
    let extensions = if long_mode {
        regs.rcx
    } else {
        regs.rcx & 0xffff_ffff
    };
    if extensions != 0 {
        return Ok(MonitorCheck::Fault(Exception::GP));
    }
    let override_67 = prefixes.contains(&0x67);
    let segment = prefixes
        .iter()
        .rev()
        .find_map(|&p| override_segment(p))
        .unwrap_or(GuestSegment::Ds);
    let cs_db = vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?.default_big();
    let bits = address_size(long_mode, cs_db, override_67);
    let ea = if bits == 64 {
        regs.rax
    } else {
        regs.rax & ((1u64 << bits) - 1)
    };
    let fault = segment_fault(segment);
    if long_mode {
        // Only FS and GS have a base in 64-bit mode; there are no limit or type checks.
        let base = match segment {
            GuestSegment::Fs | GuestSegment::Gs => vmcs.read_guest_segment(segment)?.base,
            _ => 0,
        };
        let linear = base.wrapping_add(ea);
        let la57 = vmcs.read(fields::GUEST_CR4)?.contains(Cr4::LA57);
        let width = if la57 { 57 } else { 48 };
        let canonical = (((linear << (64 - width)) as i64) >> (64 - width)) as u64 == linear;
        return Ok(if canonical {
            MonitorCheck::Translate { linear }
        } else {
            MonitorCheck::Fault(fault)
        });
    }
    let seg = vmcs.read_guest_segment(segment)?;
    let protected = vmcs.read(fields::GUEST_CR0)?.contains(Cr0::PE)
        && !vmcs.read(fields::GUEST_RFLAGS)?.contains(Rflags::VM);
    let passes = if protected {
        protected_mode_readable(&seg, ea)
    } else {
        // Real-address and virtual-8086 mode: the limit alone.
        ea <= u64::from(seg.limit)
    };
    Ok(if passes {
        MonitorCheck::Translate {
            linear: seg.base.wrapping_add(ea) & 0xffff_ffff,
        }
    } else {
        MonitorCheck::Fault(fault)
    })
}

/// The fault of a segment check on `segment`: #SS(0) for SS, #GP(0) for the others.
fn segment_fault(segment: GuestSegment) -> Exception {
    if segment == GuestSegment::Ss {
        Exception::SS
    } else {
        Exception::GP
    }
}

/// MWAIT's checks: `None` if it completes (as a NOP), else the exception it raises (#GP(0)).
/// `interrupt_break_events` is CPUID.05H:ECX\[1\] as the guest sees it.
///
/// # Errors
/// A failing VMREAD.
pub fn check_mwait(
    vmcs: &impl VmcsRead,
    regs: &GuestRegisters,
    interrupt_break_events: bool,
) -> Result<Option<Exception>, VmFail> {
    let long_mode = in_64_bit_mode(vmcs)?;
    let extensions = if long_mode {
        regs.rcx
    } else {
        regs.rcx & 0xffff_ffff
    };
    let reserved = extensions & !1 != 0;
    let unsupported = extensions & 1 != 0 && !interrupt_break_events;
    Ok((reserved || unsupported).then_some(Exception::GP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmcs::{SegmentAccessRights, SoftVmcs, VmcsWrite};

    /// A guest in 64-bit mode (flat, FS base `fs_base`) or, with `long_mode` false, in 32-bit
    /// protected mode with flat segments but DS, whose limit is 0xfff.
    fn guest(long_mode: bool, fs_base: u64) -> SoftVmcs {
        let text = include_str!("../../../vmx-caps/testdata/tigerlake.msr");
        let caps =
            vmx_caps::VmxCapabilities::read(&mut vmx_caps::MsrSnapshot::parse(text).unwrap())
                .unwrap();
        let mut vmcs = SoftVmcs::new(&caps);
        let data = Segment {
            selector: 0x18,
            base: 0,
            limit: 0xffff_ffff,
            access_rights: SegmentAccessRights::DATA_32,
        };
        let cs = Segment {
            selector: 0x10,
            access_rights: if long_mode {
                SegmentAccessRights::CODE_64
            } else {
                SegmentAccessRights::CODE_32
            },
            ..data
        };
        vmcs.write_guest_segment(GuestSegment::Cs, cs).unwrap();
        for seg in [GuestSegment::Es, GuestSegment::Ss, GuestSegment::Gs] {
            vmcs.write_guest_segment(seg, data).unwrap();
        }
        let ds = if long_mode {
            data
        } else {
            Segment {
                limit: 0xfff,
                access_rights: SegmentAccessRights::DATA_32.with_granularity(false),
                ..data
            }
        };
        vmcs.write_guest_segment(GuestSegment::Ds, ds).unwrap();
        vmcs.write_guest_segment(
            GuestSegment::Fs,
            Segment {
                base: fs_base,
                ..data
            },
        )
        .unwrap();
        let efer = if long_mode {
            Efer::LME | Efer::LMA
        } else {
            Efer::empty()
        };
        vmcs.write(fields::GUEST_IA32_EFER, efer).unwrap();
        vmcs.write(fields::GUEST_CR0, Cr0::PE | Cr0::PG | Cr0::NE)
            .unwrap();
        vmcs.write(fields::GUEST_CR4, Cr4::PAE).unwrap();
        vmcs.write(fields::GUEST_RFLAGS, Rflags::from_bits_retain(2))
            .unwrap();
        vmcs
    }

    fn regs(rax: u64, rcx: u64) -> GuestRegisters {
        let mut r = GuestRegisters::new();
        r.rax = rax;
        r.rcx = rcx;
        r
    }

    fn at(linear: u64) -> MonitorCheck {
        MonitorCheck::Translate { linear }
    }

    #[test]
    fn monitor_in_64_bit_mode() {
        let vmcs = guest(true, 0x7000_0000);
        let check = |rax, rcx, prefixes: &[u8]| check_monitor(&vmcs, &regs(rax, rcx), prefixes);
        assert_eq!(check(0x1000, 0, &[]), Ok(at(0x1000)));
        // RCX names extensions; none exist.
        assert_eq!(
            check(0x1000, 1, &[]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        assert_eq!(
            check(0x1000, 1 << 32, &[]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        // Canonical form: #GP, or #SS through SS.
        assert_eq!(
            check(0x0000_8000_0000_0000, 0, &[]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        assert_eq!(
            check(0x0000_8000_0000_0000, 0, &[0x36]),
            Ok(MonitorCheck::Fault(Exception::SS))
        );
        assert_eq!(
            check(0xffff_8000_0000_0000, 0, &[]),
            Ok(at(0xffff_8000_0000_0000))
        );
        // FS adds its base, CS/ES overrides do not; the last override counts; 67 truncates RAX.
        assert_eq!(check(0x10, 0, &[0x64]), Ok(at(0x7000_0010)));
        assert_eq!(check(0x10, 0, &[0x64, 0x2e]), Ok(at(0x10)));
        assert_eq!(check(0x10, 0, &[0x2e, 0x64]), Ok(at(0x7000_0010)));
        assert_eq!(
            check(0xffff_ffff_0000_0010, 0, &[0x67]),
            Ok(at(0x0000_0010))
        );
    }

    #[test]
    fn monitor_outside_64_bit_mode() {
        let mut vmcs = guest(false, 0x7000_0000);
        let check = |vmcs: &SoftVmcs, rax, rcx, prefixes: &[u8]| {
            check_monitor(vmcs, &regs(rax, rcx), prefixes)
        };
        // Only ECX counts outside 64-bit mode.
        assert_eq!(check(&vmcs, 0xffc, 1 << 32, &[]), Ok(at(0xffc)));
        assert_eq!(
            check(&vmcs, 0xffc, 1, &[]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        // DS's limit is 0xfff.
        assert_eq!(
            check(&vmcs, 0x1000, 0, &[]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        // FS is flat with base 0x7000_0000; the sum wraps at 4 GiB.
        assert_eq!(check(&vmcs, 0x1000, 0, &[0x64]), Ok(at(0x7000_1000)));
        assert_eq!(check(&vmcs, 0x9000_0010, 0, &[0x64]), Ok(at(0x0000_0010)));
        // Address size 16 (prefix 67 on 32-bit code): RAX is truncated to 16 bits.
        assert_eq!(check(&vmcs, 0x1_0ffc, 0, &[0x67]), Ok(at(0xffc)));
        // An execute-only code segment through CS is not readable.
        let cs = vmcs.read_guest_segment(GuestSegment::Cs).unwrap();
        let execute_only = Segment {
            access_rights: cs.access_rights.with_type(0b1001),
            ..cs
        };
        vmcs.write_guest_segment(GuestSegment::Cs, execute_only)
            .unwrap();
        assert_eq!(
            check(&vmcs, 0x10, 0, &[0x2e]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        // An unusable ES faults; through SS a limit violation is #SS.
        vmcs.write_guest_segment(GuestSegment::Es, Segment::UNUSABLE)
            .unwrap();
        assert_eq!(
            check(&vmcs, 0x10, 0, &[0x26]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
        let ss = vmcs.read_guest_segment(GuestSegment::Ss).unwrap();
        vmcs.write_guest_segment(GuestSegment::Ss, Segment { limit: 0xff, ..ss })
            .unwrap();
        assert_eq!(
            check(&vmcs, 0x100, 0, &[0x36]),
            Ok(MonitorCheck::Fault(Exception::SS))
        );
        // Expand-down (type 7): only offsets above the limit are valid, up to 0xffff_ffff (B).
        vmcs.write_guest_segment(
            GuestSegment::Ss,
            Segment {
                limit: 0xff,
                access_rights: ss.access_rights.with_type(0b0111),
                ..ss
            },
        )
        .unwrap();
        assert_eq!(
            check(&vmcs, 0x80, 0, &[0x36]),
            Ok(MonitorCheck::Fault(Exception::SS))
        );
        assert_eq!(check(&vmcs, 0x100, 0, &[0x36]), Ok(at(0x100)));
    }

    #[test]
    fn monitor_in_real_mode() {
        let mut vmcs = guest(false, 0);
        vmcs.write(fields::GUEST_CR0, Cr0::NE).unwrap();
        let ds = Segment {
            selector: 0x1234,
            base: 0x12340,
            limit: 0xffff,
            access_rights: SegmentAccessRights::DATA_16,
        };
        let cs = Segment {
            access_rights: SegmentAccessRights::CODE_16,
            ..ds
        };
        vmcs.write_guest_segment(GuestSegment::Ds, ds).unwrap();
        vmcs.write_guest_segment(GuestSegment::Cs, cs).unwrap();
        let check = |rax| check_monitor(&vmcs, &regs(rax, 0), &[]);
        // 16-bit addresses: RAX is truncated to AX, which the 64-KiB limit always admits.
        assert_eq!(check(0xabcd_0010), Ok(at(0x12350)));
        // Prefix 67 makes the address 32 bits wide: beyond the limit.
        assert_eq!(
            check_monitor(&vmcs, &regs(0x1_0000, 0), &[0x67]),
            Ok(MonitorCheck::Fault(Exception::GP))
        );
    }

    #[test]
    fn mwait_extensions() {
        let vmcs = guest(true, 0);
        let check = |rcx, supported| check_mwait(&vmcs, &regs(0, rcx), supported);
        assert_eq!(check(0, false), Ok(None));
        assert_eq!(check(1, true), Ok(None));
        assert_eq!(check(1, false), Ok(Some(Exception::GP)));
        assert_eq!(check(2, true), Ok(Some(Exception::GP)));
        assert_eq!(check(1 << 32, true), Ok(Some(Exception::GP)));
        // Outside 64-bit mode only ECX counts.
        let vmcs = guest(false, 0);
        assert_eq!(check_mwait(&vmcs, &regs(0, 1 << 32), false), Ok(None));
    }
}
