//! Where MSR values come from: the live CPU, a snapshot, or anything else implementing
//! [`MsrSource`].

use core::fmt;

use crate::msr;
use crate::number::{self, NumberError, Radix};

/// A source of MSR values: the live CPU ([`LiveMsrs`]), a text snapshot ([`MsrSnapshot`]), a
/// Linux `/dev/cpu/N/msr` file, or a test double.
pub trait MsrSource {
    /// Reads the MSR at address `msr` (RDMSR with ECX = `msr`).
    fn read_msr(&mut self, msr: u32) -> Result<u64, MsrError>;
}

impl<T: MsrSource + ?Sized> MsrSource for &mut T {
    fn read_msr(&mut self, msr: u32) -> Result<u64, MsrError> {
        (**self).read_msr(msr)
    }
}

/// Why an MSR could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsrError {
    /// The source has no value for this MSR (e.g. a snapshot without that line).
    #[error("MSR {msr:#x} is not in the source")]
    Missing {
        /// The MSR address.
        msr: u32,
    },
    /// The processor does not implement VMX (CPUID.1:ECX.VMX\[bit 5\] = 0), so the VMX
    /// capability MSRs do not exist.
    #[error("the processor does not support VMX (CPUID.1:ECX.VMX = 0)")]
    VmxUnsupported,
    /// The MSR is not a VMX capability MSR that exists on this processor; reading it could
    /// fault, so the source refused.
    #[error("MSR {msr:#x} is not a VMX capability MSR present on this processor")]
    NotPresent {
        /// The MSR address.
        msr: u32,
    },
    /// The operating system refused the read (e.g. `pread` on `/dev/cpu/N/msr` failed).
    #[error("reading MSR {msr:#x} failed with OS error {os_error}")]
    Os {
        /// The MSR address.
        msr: u32,
        /// The `errno` value.
        os_error: i32,
    },
}

/// How many MSRs a [`MsrSnapshot`] holds: every VMX capability MSR (21) with room to spare.
pub const SNAPSHOT_CAPACITY: usize = 32;

/// A fixed-capacity set of MSR values, with a text form of one `<msr hex> <value hex>` pair a
/// line (`#` starts a comment; `0x` prefixes are optional).
///
/// ```
/// use vmx_caps::MsrSnapshot;
/// let snap = MsrSnapshot::parse("0x480 0x00d810000000002b # IA32_VMX_BASIC\n").unwrap();
/// assert_eq!(snap.get(0x480), Some(0x00d8_1000_0000_002b));
/// let err = MsrSnapshot::parse("0x480 0x1\n0x481 zz\n").unwrap_err();
/// assert_eq!(err.line, 2);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MsrSnapshot {
    entries: [(u32, u64); SNAPSHOT_CAPACITY],
    len: usize,
}

/// The snapshot has no room for another MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the MSR snapshot is full ({SNAPSHOT_CAPACITY} MSRs)")]
pub struct SnapshotFull;

/// A line of a snapshot that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct SnapshotError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: SnapshotErrorKind,
}

/// What is wrong with a snapshot line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotErrorKind {
    /// The line has an MSR address but no value.
    #[error("an MSR address without a value (expected `<msr hex> <value hex>`)")]
    MissingValue,
    /// The MSR address is not a hexadecimal number that fits in 32 bits.
    #[error("the MSR address is not a 32-bit hexadecimal number: {0}")]
    InvalidMsr(NumberError),
    /// The value is not a hexadecimal number that fits in 64 bits.
    #[error("the MSR value is not a 64-bit hexadecimal number: {0}")]
    InvalidValue(NumberError),
    /// Something other than a comment follows the value.
    #[error("unexpected text after the value (comments start with `#`)")]
    TrailingText,
    /// The MSR already appeared on an earlier line.
    #[error("MSR {msr:#x} appears a second time")]
    Duplicate {
        /// The MSR address.
        msr: u32,
    },
    /// More distinct MSRs than [`SNAPSHOT_CAPACITY`].
    #[error("more than {SNAPSHOT_CAPACITY} MSRs")]
    TooMany,
}

/// The lines of `text`, each ended by LF, CR LF or a lone CR (old Mac files), without the end.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    core::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\n', '\r']) {
            Some(end) => {
                let after = &current[end..];
                let skip = if after.starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                (!current.is_empty()).then_some(current)
            }
        }
    })
}

impl MsrSnapshot {
    /// An empty snapshot.
    pub const fn new() -> Self {
        Self {
            entries: [(0, 0); SNAPSHOT_CAPACITY],
            len: 0,
        }
    }

    /// Parses the text form. Blank lines and comments are skipped; the error names the 1-based
    /// line of the first problem. Lines end with LF, CR LF or CR; a leading UTF-8 byte-order
    /// mark is skipped. Numbers follow [`crate::number`], hexadecimal without a prefix.
    pub fn parse(text: &str) -> Result<Self, SnapshotError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut snap = Self::new();
        for (index, raw_line) in lines(text).enumerate() {
            let line = index + 1;
            let err = |kind| SnapshotError { line, kind };
            let content = match raw_line.find('#') {
                Some(pos) => &raw_line[..pos],
                None => raw_line,
            };
            let mut fields = content.split_whitespace();
            let Some(msr_text) = fields.next() else {
                continue;
            };
            let msr = number::parse_u32(msr_text, Radix::Hex)
                .map_err(|e| err(SnapshotErrorKind::InvalidMsr(e)))?;
            let value_text = fields.next().ok_or(err(SnapshotErrorKind::MissingValue))?;
            let value = number::parse_u64(value_text, Radix::Hex)
                .map_err(|e| err(SnapshotErrorKind::InvalidValue(e)))?;
            if fields.next().is_some() {
                return Err(err(SnapshotErrorKind::TrailingText));
            }
            if snap.get(msr).is_some() {
                return Err(err(SnapshotErrorKind::Duplicate { msr }));
            }
            snap.insert(msr, value)
                .map_err(|SnapshotFull| err(SnapshotErrorKind::TooMany))?;
        }
        Ok(snap)
    }

    /// Sets `msr` to `value`, returning the previous value. The entries stay sorted by address.
    pub fn insert(&mut self, msr: u32, value: u64) -> Result<Option<u64>, SnapshotFull> {
        let pos = self.entries[..self.len].partition_point(|(m, _)| *m < msr);
        if let Some(entry) = self.entries[..self.len].get_mut(pos)
            && entry.0 == msr
        {
            let old = entry.1;
            entry.1 = value;
            return Ok(Some(old));
        }
        if self.len == SNAPSHOT_CAPACITY {
            return Err(SnapshotFull);
        }
        self.entries.copy_within(pos..self.len, pos + 1);
        self.entries[pos] = (msr, value);
        self.len += 1;
        Ok(None)
    }

    /// The value of `msr`, if present.
    pub fn get(&self, msr: u32) -> Option<u64> {
        let entries = &self.entries[..self.len];
        entries
            .binary_search_by_key(&msr, |(m, _)| *m)
            .ok()
            .map(|i| entries[i].1)
    }

    /// The (MSR, value) pairs in address order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.entries[..self.len].iter().copied()
    }

    /// Number of MSRs held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no MSR is held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads every VMX capability MSR that exists on the source's processor (the same MSRs
    /// [`VmxCapabilities::read`](crate::VmxCapabilities::read) reads) into a snapshot, e.g. to
    /// record a CPU model's capabilities.
    pub fn capture(source: &mut impl MsrSource) -> Result<Self, crate::CapsError> {
        struct Recorder<'a, S: MsrSource> {
            inner: &'a mut S,
            snap: MsrSnapshot,
        }
        impl<S: MsrSource> MsrSource for Recorder<'_, S> {
            fn read_msr(&mut self, msr: u32) -> Result<u64, MsrError> {
                let value = self.inner.read_msr(msr)?;
                // Capacity exceeds the number of capability MSRs, and each is read once.
                self.snap
                    .insert(msr, value)
                    .map_err(|SnapshotFull| MsrError::NotPresent { msr })?;
                Ok(value)
            }
        }
        let mut recorder = Recorder {
            inner: source,
            snap: MsrSnapshot::new(),
        };
        crate::VmxCapabilities::read(&mut recorder)?;
        Ok(recorder.snap)
    }
}

impl Default for MsrSnapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MsrSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Writes the text form that [`MsrSnapshot::parse`] reads, with the SDM name of each known MSR
/// as a comment.
impl fmt::Display for MsrSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (msr, value) in self.iter() {
            write!(f, "{msr:#x} {value:#018x}")?;
            if let Some(name) = msr::name(msr) {
                write!(f, " # {name}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl MsrSource for MsrSnapshot {
    fn read_msr(&mut self, msr: u32) -> Result<u64, MsrError> {
        self.get(msr).ok_or(MsrError::Missing { msr })
    }
}

/// The VMX capability MSRs of the processor this code runs on, read with RDMSR.
///
/// Only VMX capability MSRs that exist on this processor (by the SDM's rules, see
/// [`msr::Presence::exists`]) are read; any other address gives [`MsrError::NotPresent`]
/// instead of a #GP. Without VMX (CPUID.1:ECX.VMX = 0) every read gives
/// [`MsrError::VmxUnsupported`]. Only on x86_64 targets.
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
pub struct LiveMsrs {
    vmx: bool,
    presence: Option<msr::Presence>,
}

/// Whether the processor this code runs on reports VMX (CPUID.1:ECX.VMX\[bit 5\]). Only on
/// x86_64 targets.
#[cfg(target_arch = "x86_64")]
pub fn cpu_has_vmx() -> bool {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ecx & (1 << 5) != 0
}

#[cfg(target_arch = "x86_64")]
impl LiveMsrs {
    /// A reader of the live capability MSRs.
    ///
    /// # Safety
    ///
    /// The caller runs at CPL 0 (RDMSR faults elsewhere), and stays on one logical processor
    /// while using the reader (the presence of MSRs is decided once, from the first processor).
    pub unsafe fn new() -> Self {
        Self {
            vmx: cpu_has_vmx(),
            presence: None,
        }
    }

    fn rdmsr(msr: u32) -> u64 {
        // SAFETY: `new`'s contract puts us at CPL 0, and every caller passes an MSR that exists
        // on this processor: FEATURE_CONTROL and 0x480..=0x48A exist whenever CPUID reports VMX
        // (checked before any read), the others only after `Presence::exists` said so.
        unsafe { x86::msr::rdmsr(msr) }
    }

    fn presence(&mut self) -> msr::Presence {
        if let Some(p) = self.presence {
            return p;
        }
        let mut p = msr::Presence {
            basic: Self::rdmsr(msr::IA32_VMX_BASIC),
            procbased: Self::rdmsr(msr::IA32_VMX_PROCBASED_CTLS),
            exit: Self::rdmsr(msr::IA32_VMX_EXIT_CTLS),
            procbased2: 0,
        };
        if p.has_procbased2() {
            p.procbased2 = Self::rdmsr(msr::IA32_VMX_PROCBASED_CTLS2);
        }
        self.presence = Some(p);
        p
    }
}

#[cfg(target_arch = "x86_64")]
impl MsrSource for LiveMsrs {
    fn read_msr(&mut self, msr: u32) -> Result<u64, MsrError> {
        if !self.vmx {
            return Err(MsrError::VmxUnsupported);
        }
        if self.presence().exists(msr) {
            Ok(Self::rdmsr(msr))
        } else {
            Err(MsrError::NotPresent { msr })
        }
    }
}
