//! What the checker needs besides the VMCS: CPU facts, the launch context and guest/host memory.

use bitflags::bitflags;
use vmx_caps::arch::Efer;

bitflags! {
    /// CPUID-enumerated features that change what VM entry accepts (reserved-bit masks of loaded
    /// MSRs, canonicality, the LAM exemption of CR3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct CpuFeatures: u32 {
        /// Intel 64 architecture (CPUID.80000001H:EDX.LM[bit 29]).
        const INTEL64 = 1 << 0;
        /// Execute-disable (CPUID.80000001H:EDX.NX[bit 20]): makes IA32_EFER.NXE writable.
        const NX = 1 << 1;
        /// Linear-address masking (CPUID.(EAX=07H,ECX=1):EAX.LAM[bit 26]): CR3 bits 62:61 are not
        /// reserved.
        const LAM = 1 << 2;
        /// Intel SGX (CPUID.(EAX=07H,ECX=0):EBX.SGX[bit 2]): interruptibility bit 4 (enclave
        /// interruption) is defined.
        const SGX = 1 << 3;
        /// Restricted transactional memory (CPUID.(EAX=07H,ECX=0):EBX.RTM[bit 11]): pending-debug
        /// bit 16 is defined.
        const RTM = 1 << 4;
    }
}

vmx_caps::serde_as_bits!(CpuFeatures);

/// Facts about the processor that VM entry depends on beyond the VMX capability MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CpuFacts {
    /// MAXPHYADDR, the physical-address width (CPUID.80000008H:EAX\[7:0\]).
    pub maxphyaddr: u8,
    /// The linear-address width used for canonicality checks: 48, or 57 with 5-level paging
    /// (CPUID.80000008H:EAX\[15:8\]).
    pub linear_address_width: u8,
    /// CPUID feature bits that change reserved-bit masks.
    pub features: CpuFeatures,
    /// Reserved bits of IA32_DEBUGCTL (model-specific). `None` leaves rule G7 unchecked.
    pub debugctl_reserved: Option<u64>,
    /// Reserved bits of IA32_PERF_GLOBAL_CTRL (depends on the counters CPUID leaf 0AH enumerates).
    /// `None` leaves rules D14 and G16 unchecked.
    pub perf_global_ctrl_reserved: Option<u64>,
    /// Reserved bits of IA32_RTIT_CTL (depends on CPUID leaf 14H). `None` leaves G23 unchecked.
    pub rtit_ctl_reserved: Option<u64>,
    /// Reserved bits of IA32_LBR_CTL (depends on CPUID leaf 1CH). `None` leaves G31 unchecked.
    pub lbr_ctl_reserved: Option<u64>,
    /// Whether injecting an NMI while blocking by STI is 1 fails (exit qualification 3). The SDM
    /// calls this implementation-specific; Bochs and most processors fail it.
    pub nmi_injection_checks_sti: bool,
}

impl CpuFacts {
    /// Conservative facts for a 64-bit Intel processor with `maxphyaddr` physical-address bits,
    /// 4-level paging (48-bit linear addresses), NX, and the architectural IA32_DEBUGCTL bits
    /// (0-2 and 6-15) as the only non-reserved ones. The other model-specific masks are unknown.
    pub const fn new(maxphyaddr: u8) -> Self {
        Self {
            maxphyaddr,
            linear_address_width: 48,
            features: CpuFeatures::INTEL64.union(CpuFeatures::NX),
            debugctl_reserved: Some(!0xffc7),
            perf_global_ctrl_reserved: None,
            rtit_ctl_reserved: None,
            lbr_ctl_reserved: None,
            nmi_injection_checks_sti: true,
        }
    }

    /// The facts of the processor this code runs on, from CPUID: MAXPHYADDR and the linear-address
    /// width (leaf 80000008H), Intel 64 and NX (80000001H), SGX and RTM (leaf 07H), LAM (07H
    /// subleaf 1) and the IA32_PERF_GLOBAL_CTRL counters (leaf 0AH). The other model-specific
    /// masks stay as in [`CpuFacts::new`]. Only on x86_64 targets.
    #[cfg(target_arch = "x86_64")]
    pub fn from_cpuid() -> Self {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        let max_basic = __cpuid(0).eax;
        let max_extended = __cpuid(0x8000_0000).eax;
        let mut facts = Self::new(36);
        facts.features = CpuFeatures::empty();
        if max_extended >= 0x8000_0008 {
            let widths = __cpuid(0x8000_0008).eax;
            facts.maxphyaddr = (widths & 0xff) as u8;
            facts.linear_address_width = ((widths >> 8) & 0xff) as u8;
        }
        if max_extended >= 0x8000_0001 {
            let edx = __cpuid(0x8000_0001).edx;
            facts
                .features
                .set(CpuFeatures::INTEL64, edx & (1 << 29) != 0);
            facts.features.set(CpuFeatures::NX, edx & (1 << 20) != 0);
        }
        if max_basic >= 7 {
            let leaf7 = __cpuid_count(7, 0);
            facts
                .features
                .set(CpuFeatures::SGX, leaf7.ebx & (1 << 2) != 0);
            facts
                .features
                .set(CpuFeatures::RTM, leaf7.ebx & (1 << 11) != 0);
            if leaf7.eax >= 1 {
                let lam = __cpuid_count(7, 1).eax & (1 << 26) != 0;
                facts.features.set(CpuFeatures::LAM, lam);
            }
        }
        if max_basic >= 0xa {
            let pmu = __cpuid(0xa);
            let version = pmu.eax & 0xff;
            if version >= 2 {
                let general = ((pmu.eax >> 8) & 0xff) as u8;
                let fixed = (pmu.edx & 0x1f) as u8;
                facts.perf_global_ctrl_reserved = Some(Self::perf_global_ctrl_mask(general, fixed));
            }
        }
        facts
    }

    /// The reserved bits of IA32_PERF_GLOBAL_CTRL for `general` general-purpose and `fixed`
    /// fixed-function counters (SDM "Architectural Performance Monitoring").
    pub const fn perf_global_ctrl_mask(general: u8, fixed: u8) -> u64 {
        let general = if general >= 32 {
            u32::MAX as u64
        } else {
            (1u64 << general) - 1
        };
        let fixed = if fixed >= 32 {
            u32::MAX as u64
        } else {
            (1u64 << fixed) - 1
        };
        !(general | (fixed << 32))
    }

    /// The reserved bits of IA32_EFER: everything but SCE (0), LME (8), LMA (10) and, with NX, NXE (11).
    pub const fn efer_reserved(&self) -> u64 {
        let mut valid = Efer::SCE.bits() | Efer::LME.bits() | Efer::LMA.bits();
        if self.features.contains(CpuFeatures::NX) {
            valid |= Efer::NXE.bits();
        }
        !valid
    }
}

/// The instruction whose outcome is predicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EntryInstruction {
    /// VMLAUNCH: requires the launch state "clear".
    Vmlaunch,
    /// VMRESUME: requires the launch state "launched".
    Vmresume,
}

/// The launch state of the current VMCS (SDM "VMCS Data Organization").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LaunchState {
    /// Clear: after VMCLEAR.
    Clear,
    /// Launched: after a successful VMLAUNCH.
    Launched,
}

/// The processor context in which VMLAUNCH/VMRESUME executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LaunchContext {
    /// VMLAUNCH or VMRESUME.
    pub instruction: EntryInstruction,
    /// The launch state of the current VMCS.
    pub launch_state: LaunchState,
    /// The current-VMCS pointer, `None` if there is none (FFFFFFFF_FFFFFFFFh).
    pub current_vmcs: Option<u64>,
    /// Whether the current VMCS is a shadow VMCS (bit 31 of its header).
    pub current_vmcs_is_shadow: bool,
    /// The VMXON pointer.
    pub vmxon_pointer: u64,
    /// The current IA32_EFER.LMA (the VMM runs in IA-32e mode).
    pub efer_lma: bool,
    /// Whether the processor is in SMM.
    pub in_smm: bool,
    /// Whether events are blocked by MOV SS at the VMLAUNCH/VMRESUME.
    pub blocked_by_mov_ss: bool,
}

impl LaunchContext {
    /// The usual context: a 64-bit VMM outside SMM executing `instruction` on the current VMCS at
    /// `current_vmcs`, whose launch state is the one `instruction` needs.
    pub const fn new(instruction: EntryInstruction, current_vmcs: u64, vmxon_pointer: u64) -> Self {
        Self {
            instruction,
            launch_state: match instruction {
                EntryInstruction::Vmlaunch => LaunchState::Clear,
                EntryInstruction::Vmresume => LaunchState::Launched,
            },
            current_vmcs: Some(current_vmcs),
            current_vmcs_is_shadow: false,
            vmxon_pointer,
            efer_lma: true,
            in_smm: false,
            blocked_by_mov_ss: false,
        }
    }
}

/// Why a physical-memory read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// No memory reader is available: the rules needing memory are reported as unchecked.
    #[error("physical memory is not available to the checker")]
    Unavailable,
    /// The range is not backed by readable memory.
    #[error("physical range {address:#x}+{len:#x} is not readable")]
    OutOfRange {
        /// First physical address of the read.
        address: u64,
        /// Length of the read in bytes.
        len: usize,
    },
}

/// Read access to physical memory, for the rules that look at memory referenced by the VMCS: the
/// virtual-APIC page's VTPR (A13), the VMCS link pointer's header (K23), the PDPTEs at guest CR3
/// without EPT (L2) and the VM-entry MSR-load area (M1-M7).
pub trait PhysMemory {
    /// Fills `buf` with the bytes at physical address `address`.
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Reads the little-endian quadword at `address`.
    fn read_u64(&mut self, address: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0; 8];
        self.read(address, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl<T: PhysMemory + ?Sized> PhysMemory for &mut T {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(address, buf)
    }
}

/// No memory: the rules that need memory are reported as unchecked.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMemory;

impl PhysMemory for NoMemory {
    fn read(&mut self, _address: u64, _buf: &mut [u8]) -> Result<(), MemoryError> {
        Err(MemoryError::Unavailable)
    }
}

/// A contiguous range of physical memory held in a byte slice starting at physical address `base`
/// (a host-side image, or an identity-mapped region in a hypervisor).
#[derive(Clone, Copy, Debug)]
pub struct FlatMemory<'a> {
    /// Physical address of `bytes\[0\]`.
    pub base: u64,
    /// The memory contents.
    pub bytes: &'a [u8],
}

impl PhysMemory for FlatMemory<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let out = MemoryError::OutOfRange {
            address,
            len: buf.len(),
        };
        let start = address.checked_sub(self.base).ok_or(out)?;
        let start = usize::try_from(start).map_err(|_| out)?;
        let end = start.checked_add(buf.len()).ok_or(out)?;
        let src = self.bytes.get(start..end).ok_or(out)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
