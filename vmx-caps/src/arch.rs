//! The architectural registers a VMCS holds for the guest and the host, as bitflags: CR0, CR4,
//! IA32_EFER, RFLAGS, DR7, IA32_DEBUGCTL and XCR0 (SDM Vol. 3A, 2.5 "Control Registers", 2.2.1
//! "Extended Feature Enable Register", 2.3 "System Flags and Fields in the EFLAGS Register";
//! Vol. 3B, 19.2.4 "Debug Control Register (DR7)" and "IA32_DEBUGCTL MSR"; Vol. 1, 13.3
//! "Enabling the XSAVE Feature Set and XSAVE-Enabled Features").
//!
//! Every type keeps bits it has no name for (`const _ = !0`), so that a value read from a newer
//! processor survives a round trip unchanged. Each flag is named after the SDM's mnemonic for the
//! bit; the doc gives the bit position. These are the only declarations of these bits in the
//! workspace: the `vmcs` crate uses them as the value types of the CR0, CR4, IA32_EFER, RFLAGS,
//! DR7 and IA32_DEBUGCTL fields, and [`VmxCapabilities`](crate::VmxCapabilities) computes the
//! VMX-fixed bits of CR0 and CR4 with them.
//!
//! ```
//! use vmx_caps::arch::{Cr0, Efer, Rflags};
//!
//! let cr0 = Cr0::PE | Cr0::NE | Cr0::PG;
//! assert_eq!(cr0.bits(), 0x8000_0021);
//! assert_eq!(cr0.to_string(), "0x80000021 (PE | NE | PG)");
//! assert!(Efer::from_bits_retain(0xd01).contains(Efer::LMA | Efer::LME | Efer::SCE));
//! assert_eq!(Rflags::RESET.bits(), 0x2);
//! ```

use core::fmt;

/// Declares one register: the bitflags type, its `Display` (hex value, then the names of the set
/// flags) and, with the `serde` feature, serialization as the plain integer, like the control
/// types of [`crate::controls`].
macro_rules! register {
    (
        $(#[doc = $outer:literal])*
        pub struct $name:ident: $ty:ty {
            $(
                $(#[doc = $inner:literal])*
                const $flag:ident = $value:expr;
            )*
        }
    ) => {
        bitflags::bitflags! {
            $(#[doc = $outer])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
            pub struct $name: $ty {
                $(
                    $(#[doc = $inner])*
                    const $flag = $value;
                )*
                const _ = !0;
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.bits())?;
                if !self.is_empty() {
                    f.write_str(" (")?;
                    bitflags::parser::to_writer(self, FmtWriter(f))?;
                    f.write_str(")")?;
                }
                Ok(())
            }
        }

        crate::serde_as_bits!($name);
    };
}

/// Adapts a formatter to `fmt::Write` for `bitflags::parser::to_writer`.
struct FmtWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for FmtWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_str(s)
    }
}

register! {
    /// Control register CR0 (SDM Vol. 3A, 2.5 "Control Registers", Figure 2-7): system control
    /// flags of the operating mode and the processor's state. Bits 63:32 are reserved (MOV to CR0
    /// with any of them set raises #GP); the VMX-fixed bits come from `IA32_VMX_CR0_FIXED0/1`
    /// ([`VmxCapabilities::cr0_fixed_bits`](crate::VmxCapabilities::cr0_fixed_bits)).
    pub struct Cr0: u64 {
        /// Bit 0, PE: protection enable (protected mode).
        const PE = 1 << 0;
        /// Bit 1, MP: monitor coprocessor (WAIT/FWAIT honour TS).
        const MP = 1 << 1;
        /// Bit 2, EM: emulation (no x87 FPU; x87 and SSE instructions raise #NM/#UD).
        const EM = 1 << 2;
        /// Bit 3, TS: task switched (the next x87/SSE instruction raises #NM).
        const TS = 1 << 3;
        /// Bit 4, ET: extension type (reserved, fixed to 1 on P6 family and later).
        const ET = 1 << 4;
        /// Bit 5, NE: numeric error (native x87 error reporting through #MF).
        const NE = 1 << 5;
        /// Bit 16, WP: write protect (supervisor writes honour read-only pages).
        const WP = 1 << 16;
        /// Bit 18, AM: alignment mask (with RFLAGS.AC, alignment checking at CPL 3).
        const AM = 1 << 18;
        /// Bit 29, NW: not write-through.
        const NW = 1 << 29;
        /// Bit 30, CD: cache disable.
        const CD = 1 << 30;
        /// Bit 31, PG: paging.
        const PG = 1 << 31;
    }
}

impl Cr0 {
    /// The value after RESET or INIT: ET, CD and NW set (SDM Vol. 3A, 10.1.1 "Processor State
    /// After Reset", Table 10-1: 60000010H).
    pub const RESET: Self = Self::from_bits_retain(0x6000_0010);
    /// Bits 63:32, reserved: MOV to CR0 that sets any of them raises #GP(0) (SDM Vol. 3A, 2.5).
    pub const RESERVED_HIGH: Self = Self::from_bits_retain(0xffff_ffff_0000_0000);
}

register! {
    /// Control register CR4 (SDM Vol. 3A, 2.5 "Control Registers", Figure 2-7): architectural
    /// extensions. Which bits a processor supports depends on CPUID; the VMX-fixed bits come
    /// from `IA32_VMX_CR4_FIXED0/1`
    /// ([`VmxCapabilities::cr4_fixed_bits`](crate::VmxCapabilities::cr4_fixed_bits)).
    pub struct Cr4: u64 {
        /// Bit 0, VME: virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Bit 1, PVI: protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// Bit 2, TSD: time stamp disable (RDTSC at CPL > 0 faults).
        const TSD = 1 << 2;
        /// Bit 3, DE: debugging extensions.
        const DE = 1 << 3;
        /// Bit 4, PSE: page size extensions (4-MByte pages with 32-bit paging).
        const PSE = 1 << 4;
        /// Bit 5, PAE: physical address extension (required for IA-32e mode).
        const PAE = 1 << 5;
        /// Bit 6, MCE: machine-check enable.
        const MCE = 1 << 6;
        /// Bit 7, PGE: page global enable.
        const PGE = 1 << 7;
        /// Bit 8, PCE: performance-monitoring counter enable (RDPMC at any CPL).
        const PCE = 1 << 8;
        /// Bit 9, OSFXSR: operating-system support for FXSAVE and FXRSTOR (SSE enabled).
        const OSFXSR = 1 << 9;
        /// Bit 10, OSXMMEXCPT: operating-system support for unmasked SIMD floating-point
        /// exceptions.
        const OSXMMEXCPT = 1 << 10;
        /// Bit 11, UMIP: user-mode instruction prevention.
        const UMIP = 1 << 11;
        /// Bit 12, LA57: 57-bit linear addresses (5-level paging).
        const LA57 = 1 << 12;
        /// Bit 13, VMXE: VMX enable.
        const VMXE = 1 << 13;
        /// Bit 14, SMXE: SMX enable.
        const SMXE = 1 << 14;
        /// Bit 16, FSGSBASE: enables RDFSBASE, RDGSBASE, WRFSBASE and WRGSBASE.
        const FSGSBASE = 1 << 16;
        /// Bit 17, PCIDE: process-context identifiers.
        const PCIDE = 1 << 17;
        /// Bit 18, OSXSAVE: XSAVE and processor extended states enable (XGETBV/XSETBV usable).
        const OSXSAVE = 1 << 18;
        /// Bit 19, KL: Key Locker enable.
        const KL = 1 << 19;
        /// Bit 20, SMEP: supervisor-mode execution prevention.
        const SMEP = 1 << 20;
        /// Bit 21, SMAP: supervisor-mode access prevention.
        const SMAP = 1 << 21;
        /// Bit 22, PKE: protection keys for user-mode pages.
        const PKE = 1 << 22;
        /// Bit 23, CET: control-flow enforcement technology.
        const CET = 1 << 23;
        /// Bit 24, PKS: protection keys for supervisor-mode pages.
        const PKS = 1 << 24;
        /// Bit 25, UINTR: user interrupts enable.
        const UINTR = 1 << 25;
        /// Bit 27, LASS: linear-address-space separation.
        const LASS = 1 << 27;
        /// Bit 28, LAM_SUP: linear-address masking for supervisor pointers.
        const LAM_SUP = 1 << 28;
        /// Bit 32, FRED: flexible return and event delivery.
        const FRED = 1 << 32;
    }
}

impl Cr4 {
    /// The value after RESET or INIT: 0 (SDM Vol. 3A, Table 10-1).
    pub const RESET: Self = Self::empty();
}

register! {
    /// `IA32_EFER` (MSR C0000080H), the extended feature enable register (SDM Vol. 3A, 2.2.1,
    /// Figure 2-4; Vol. 4, Table 2-2). Bits not named here are reserved on Intel processors.
    pub struct Efer: u64 {
        /// Bit 0, SCE: SYSCALL enable (SYSCALL/SYSRET in 64-bit mode).
        const SCE = 1 << 0;
        /// Bit 8, LME: IA-32e mode enable.
        const LME = 1 << 8;
        /// Bit 10, LMA: IA-32e mode active (read-only to software; the processor sets it from LME
        /// and CR0.PG).
        const LMA = 1 << 10;
        /// Bit 11, NXE: execute-disable bit enable.
        const NXE = 1 << 11;
    }
}

impl Efer {
    /// The value after RESET or INIT: 0 (SDM Vol. 3A, Table 10-1).
    pub const RESET: Self = Self::empty();
}

register! {
    /// RFLAGS (SDM Vol. 3A, 2.3 "System Flags and Fields in the EFLAGS Register", Figure 2-5; the
    /// status flags: Vol. 1, 3.4.3). `IOPL` is a two-bit field: [`Rflags::iopl`] reads it.
    pub struct Rflags: u64 {
        /// Bit 0, CF: carry flag.
        const CF = 1 << 0;
        /// Bit 1: reserved, always 1 (VM entry requires it: SDM Vol. 3C, 27.3.1.4).
        const RESERVED_1 = 1 << 1;
        /// Bit 2, PF: parity flag.
        const PF = 1 << 2;
        /// Bit 4, AF: auxiliary carry flag.
        const AF = 1 << 4;
        /// Bit 6, ZF: zero flag.
        const ZF = 1 << 6;
        /// Bit 7, SF: sign flag.
        const SF = 1 << 7;
        /// Bit 8, TF: trap flag (single-step).
        const TF = 1 << 8;
        /// Bit 9, IF: interrupt enable flag.
        const IF = 1 << 9;
        /// Bit 10, DF: direction flag.
        const DF = 1 << 10;
        /// Bit 11, OF: overflow flag.
        const OF = 1 << 11;
        /// Bits 13:12, IOPL: I/O privilege level (a two-bit field).
        const IOPL = 3 << 12;
        /// Bit 14, NT: nested task.
        const NT = 1 << 14;
        /// Bit 16, RF: resume flag.
        const RF = 1 << 16;
        /// Bit 17, VM: virtual-8086 mode.
        const VM = 1 << 17;
        /// Bit 18, AC: alignment check / access control.
        const AC = 1 << 18;
        /// Bit 19, VIF: virtual interrupt flag.
        const VIF = 1 << 19;
        /// Bit 20, VIP: virtual interrupt pending.
        const VIP = 1 << 20;
        /// Bit 21, ID: identification (CPUID available when software can toggle it).
        const ID = 1 << 21;
    }
}

impl Rflags {
    /// The value after RESET or INIT: 00000002H, only the always-1 bit (SDM Vol. 3A, Table 10-1).
    pub const RESET: Self = Self::RESERVED_1;
    /// The reserved bits that must be 0: 63:22, 15, 5 and 3 (SDM Vol. 3C, 27.3.1.4 "Checks on
    /// Guest RIP, RFLAGS, and SSP").
    pub const RESERVED: Self = Self::from_bits_retain(!0x3f_ffff | (1 << 15) | (1 << 5) | (1 << 3));

    /// The I/O privilege level, bits 13:12.
    #[must_use]
    pub const fn iopl(self) -> u8 {
        // Two bits after the shift: fits in u8.
        ((self.bits() & Self::IOPL.bits()) >> 12) as u8
    }
}

register! {
    /// Debug control register DR7 (SDM Vol. 3B, 19.2.4 "Debug Control Register (DR7)", Figure
    /// 19-1). The R/W and LEN fields of each breakpoint are two-bit fields:
    /// [`Dr7::condition`] and [`Dr7::length`] read them. Bit 10 is reserved and reads as 1; bits
    /// 63:32 are reserved and must be 0 (VM entry checks them with "load debug controls").
    pub struct Dr7: u64 {
        /// Bit 0, L0: local enable of breakpoint 0.
        const L0 = 1 << 0;
        /// Bit 1, G0: global enable of breakpoint 0.
        const G0 = 1 << 1;
        /// Bit 2, L1: local enable of breakpoint 1.
        const L1 = 1 << 2;
        /// Bit 3, G1: global enable of breakpoint 1.
        const G1 = 1 << 3;
        /// Bit 4, L2: local enable of breakpoint 2.
        const L2 = 1 << 4;
        /// Bit 5, G2: global enable of breakpoint 2.
        const G2 = 1 << 5;
        /// Bit 6, L3: local enable of breakpoint 3.
        const L3 = 1 << 6;
        /// Bit 7, G3: global enable of breakpoint 3.
        const G3 = 1 << 7;
        /// Bit 8, LE: local exact breakpoint enable.
        const LE = 1 << 8;
        /// Bit 9, GE: global exact breakpoint enable.
        const GE = 1 << 9;
        /// Bit 10: reserved, reads as 1.
        const RESERVED_1 = 1 << 10;
        /// Bit 11, RTM: restricted transactional memory debugging.
        const RTM = 1 << 11;
        /// Bit 13, GD: general detect enable (MOV DR raises #DB).
        const GD = 1 << 13;
        /// Bits 17:16, R/W0: breakpoint 0 condition (a two-bit field).
        const RW0 = 3 << 16;
        /// Bits 19:18, LEN0: breakpoint 0 length (a two-bit field).
        const LEN0 = 3 << 18;
        /// Bits 21:20, R/W1: breakpoint 1 condition.
        const RW1 = 3 << 20;
        /// Bits 23:22, LEN1: breakpoint 1 length.
        const LEN1 = 3 << 22;
        /// Bits 25:24, R/W2: breakpoint 2 condition.
        const RW2 = 3 << 24;
        /// Bits 27:26, LEN2: breakpoint 2 length.
        const LEN2 = 3 << 26;
        /// Bits 29:28, R/W3: breakpoint 3 condition.
        const RW3 = 3 << 28;
        /// Bits 31:30, LEN3: breakpoint 3 length.
        const LEN3 = 3 << 30;
    }
}

impl Dr7 {
    /// The value after RESET or INIT: 00000400H (SDM Vol. 3A, Table 10-1).
    pub const RESET: Self = Self::RESERVED_1;
    /// Bits 63:32, reserved: must be 0 (SDM Vol. 3C, 27.3.1.1, with "load debug controls").
    pub const RESERVED_HIGH: Self = Self::from_bits_retain(0xffff_ffff_0000_0000);

    /// The R/W field (breakpoint condition, 0 to 3) of breakpoint `n` (0 to 3; taken modulo 4).
    #[must_use]
    pub const fn condition(self, n: u8) -> u8 {
        // Two bits after the shift: fits in u8.
        ((self.bits() >> (16 + 4 * (n as u32 % 4))) & 3) as u8
    }

    /// The LEN field (breakpoint length, 0 to 3) of breakpoint `n` (0 to 3; taken modulo 4).
    #[must_use]
    pub const fn length(self, n: u8) -> u8 {
        // Two bits after the shift: fits in u8.
        ((self.bits() >> (18 + 4 * (n as u32 % 4))) & 3) as u8
    }
}

register! {
    /// XCR0, the extended control register that enables XSAVE-managed state components (SDM Vol.
    /// 1, 13.3, and Table 13-1 "XSAVE-Managed State"; read with XGETBV, written with XSETBV at
    /// CPL 0). Only user state components are enabled here; supervisor components (PT, CET,
    /// HDC, ...) are enabled in `IA32_XSS`.
    pub struct Xcr0: u64 {
        /// Bit 0, x87 state (always 1).
        const X87 = 1 << 0;
        /// Bit 1, SSE state (XMM registers and MXCSR).
        const SSE = 1 << 1;
        /// Bit 2, AVX state (the upper halves of YMM0-YMM15).
        const AVX = 1 << 2;
        /// Bit 3, BNDREGS: MPX bound registers.
        const BNDREGS = 1 << 3;
        /// Bit 4, BNDCSR: MPX BNDCFGU and BNDSTATUS.
        const BNDCSR = 1 << 4;
        /// Bit 5, opmask state: AVX-512 k0-k7.
        const OPMASK = 1 << 5;
        /// Bit 6, ZMM_Hi256 state: the upper halves of ZMM0-ZMM15.
        const ZMM_HI256 = 1 << 6;
        /// Bit 7, Hi16_ZMM state: ZMM16-ZMM31.
        const HI16_ZMM = 1 << 7;
        /// Bit 9, PKRU state.
        const PKRU = 1 << 9;
        /// Bit 17, TILECFG: AMX tile configuration.
        const TILECFG = 1 << 17;
        /// Bit 18, TILEDATA: AMX tile data.
        const TILEDATA = 1 << 18;
        /// Bit 19, APX: the extended general-purpose registers R16-R31.
        const APX = 1 << 19;
    }
}

impl Xcr0 {
    /// The value after RESET or INIT: only x87 state enabled (SDM Vol. 1, 13.3).
    pub const RESET: Self = Self::X87;

    /// Whether XSETBV would accept this value as far as the architecture's own rules go (SDM Vol.
    /// 1, 13.3): bit 0 set; AVX only with SSE; BNDREGS and BNDCSR together; the three AVX-512
    /// bits together and only with AVX; TILECFG and TILEDATA together. Bits the processor does not
    /// support (CPUID.(EAX=0DH,ECX=0)) must also be 0, which only the caller knows.
    #[must_use]
    pub const fn is_architecturally_valid(self) -> bool {
        let avx512 = Self::OPMASK.bits() | Self::ZMM_HI256.bits() | Self::HI16_ZMM.bits();
        let mpx = Self::BNDREGS.bits() | Self::BNDCSR.bits();
        let amx = Self::TILECFG.bits() | Self::TILEDATA.bits();
        let bits = self.bits();
        bits & Self::X87.bits() != 0
            && (bits & Self::AVX.bits() == 0 || bits & Self::SSE.bits() != 0)
            && all_or_none(bits, mpx)
            && all_or_none(bits, avx512)
            && (bits & avx512 == 0 || bits & Self::AVX.bits() != 0)
            && all_or_none(bits, amx)
    }

    /// Whether XSETBV of XCR0 accepts this value on a processor whose supported state
    /// components (CPUID.(EAX=0DH,ECX=0):EDX:EAX) are `supported`: architecturally valid
    /// ([`is_architecturally_valid`](Self::is_architecturally_valid)) and no unsupported bit set.
    /// XSETBV raises #GP(0) otherwise.
    #[must_use]
    pub const fn is_valid_for(self, supported: Self) -> bool {
        self.bits() & !supported.bits() == 0 && self.is_architecturally_valid()
    }
}

register! {
    /// IA32_DEBUGCTL (MSR 1D9H; SDM Vol. 3B, "IA32_DEBUGCTL MSR", and Vol. 4, the architectural
    /// MSRs): last-branch recording, single-step on branches and branch-trace-store controls.
    /// Which of the bits a processor implements is model-specific (CPUID and the processor's
    /// family); writing a bit it does not implement raises #GP.
    pub struct DebugCtl: u64 {
        /// Bit 0, LBR: record last branches.
        const LBR = 1 << 0;
        /// Bit 1, BTF: single-step on branches (with RFLAGS.TF, a #DB after taken branches,
        /// interrupts and exceptions instead of after every instruction).
        const BTF = 1 << 1;
        /// Bit 2: bus-lock detection (#DB after an instruction that took a bus lock).
        const BUS_LOCK_DETECT = 1 << 2;
        /// Bit 6, TR: send branch trace messages.
        const TR = 1 << 6;
        /// Bit 7, BTS: log branch trace messages to the BTS buffer.
        const BTS = 1 << 7;
        /// Bit 8, BTINT: interrupt when the BTS buffer is full.
        const BTINT = 1 << 8;
        /// Bit 9, BTS_OFF_OS: no BTS records at CPL 0.
        const BTS_OFF_OS = 1 << 9;
        /// Bit 10, BTS_OFF_USR: no BTS records at CPL above 0.
        const BTS_OFF_USR = 1 << 10;
        /// Bit 11: freeze the LBR stack on a performance-monitoring interrupt.
        const FREEZE_LBRS_ON_PMI = 1 << 11;
        /// Bit 12: freeze the performance counters on a performance-monitoring interrupt.
        const FREEZE_PERFMON_ON_PMI = 1 << 12;
        /// Bit 13: enable uncore counters to interrupt this processor.
        const ENABLE_UNCORE_PMI = 1 << 13;
        /// Bit 14: freeze the performance counters and LBRs while in SMM.
        const FREEZE_WHILE_SMM = 1 << 14;
        /// Bit 15: enable advanced debugging of RTM regions.
        const RTM_DEBUG = 1 << 15;
    }
}

/// Whether `bits` has all of `mask` or none of it.
const fn all_or_none(bits: u64, mask: u64) -> bool {
    bits & mask == 0 || bits & mask == mask
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit positions from the SDM's figures, written out independently of the declarations.
    #[test]
    fn bit_positions_match_the_sdm() {
        assert_eq!(Cr0::PG.bits(), 0x8000_0000);
        assert_eq!(Cr0::WP.bits(), 0x1_0000);
        assert_eq!(Cr4::VMXE.bits(), 0x2000);
        assert_eq!(Cr4::OSXSAVE.bits(), 0x4_0000);
        assert_eq!(Cr4::FRED.bits(), 0x1_0000_0000);
        assert_eq!(Efer::LMA.bits(), 0x400);
        assert_eq!(Rflags::VM.bits(), 0x2_0000);
        assert_eq!(Dr7::GD.bits(), 0x2000);
        assert_eq!(Xcr0::PKRU.bits(), 0x200);
        // Linux's long-mode EFER (SCE | LME | LMA | NXE).
        assert_eq!(
            (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits(),
            0xd01
        );
    }

    #[test]
    fn unknown_bits_survive() {
        let raw = 0xdead_beef_0000_0001;
        assert_eq!(Cr0::from_bits_retain(raw).bits(), raw);
        assert_eq!(Cr4::from_bits_retain(raw).bits(), raw);
        assert_eq!(Rflags::from_bits_retain(raw).bits(), raw);
    }

    #[test]
    fn rflags_reserved_and_iopl() {
        // Every defined flag is outside the reserved mask; bit 1 too.
        let defined = Rflags::CF
            | Rflags::RESERVED_1
            | Rflags::PF
            | Rflags::AF
            | Rflags::ZF
            | Rflags::SF
            | Rflags::TF
            | Rflags::IF
            | Rflags::DF
            | Rflags::OF
            | Rflags::IOPL
            | Rflags::NT
            | Rflags::RF
            | Rflags::VM
            | Rflags::AC
            | Rflags::VIF
            | Rflags::VIP
            | Rflags::ID;
        assert_eq!(defined.bits(), 0x3f_7fd7);
        assert_eq!(defined.bits() & Rflags::RESERVED.bits(), 0);
        assert_eq!((defined | Rflags::RESERVED).bits(), u64::MAX);
        assert_eq!(Rflags::from_bits_retain(0x3202).iopl(), 3);
        assert_eq!(Rflags::from_bits_retain(0x1202).iopl(), 1);
    }

    #[test]
    fn dr7_fields() {
        // Breakpoint 2: R/W = 01 (writes), LEN = 11 (4 bytes).
        let dr7 = Dr7::from_bits_retain(0x0d00_0410);
        assert_eq!(dr7.condition(2), 1);
        assert_eq!(dr7.length(2), 3);
        assert_eq!(dr7.condition(0), 0);
        assert!(dr7.contains(Dr7::L2 | Dr7::RESERVED_1));
    }

    #[test]
    fn xcr0_rules() {
        assert!(Xcr0::RESET.is_architecturally_valid());
        assert!((Xcr0::X87 | Xcr0::SSE | Xcr0::AVX).is_architecturally_valid());
        assert!(!Xcr0::SSE.is_architecturally_valid());
        assert!(!(Xcr0::X87 | Xcr0::AVX).is_architecturally_valid());
        assert!(!(Xcr0::X87 | Xcr0::BNDREGS).is_architecturally_valid());
        assert!(
            !(Xcr0::X87 | Xcr0::SSE | Xcr0::OPMASK | Xcr0::ZMM_HI256 | Xcr0::HI16_ZMM)
                .is_architecturally_valid()
        );
        assert!(
            (Xcr0::X87 | Xcr0::SSE | Xcr0::AVX | Xcr0::OPMASK | Xcr0::ZMM_HI256 | Xcr0::HI16_ZMM)
                .is_architecturally_valid()
        );
        assert!(!(Xcr0::X87 | Xcr0::TILECFG).is_architecturally_valid());
        let supported = Xcr0::X87 | Xcr0::SSE | Xcr0::AVX;
        assert!((Xcr0::X87 | Xcr0::SSE).is_valid_for(supported));
        assert!(!(Xcr0::X87 | Xcr0::SSE | Xcr0::PKRU).is_valid_for(supported));
    }

    #[test]
    fn display_names_the_flags() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Cr4::RESET.to_string(), "0x0");
        assert_eq!((Cr4::PAE | Cr4::VMXE).to_string(), "0x2020 (PAE | VMXE)");
        assert_eq!(
            Efer::from_bits_retain(0x1_0500).to_string(),
            "0x10500 (LME | LMA | 0x10000)"
        );
    }
}
