//! What the checker reports: violations, the predicted outcome, and a fixed-capacity report.

use core::fmt;

use vmx_core::{VmFail, VmInstructionError};

use super::rule::{FailureClass, Rule, RuleSet};

/// Basic exit reason 33, "VM-entry failure due to invalid guest state".
pub const EXIT_REASON_INVALID_GUEST_STATE: u32 = 33;
/// Basic exit reason 34, "VM-entry failure due to MSR loading".
pub const EXIT_REASON_MSR_LOADING: u32 = 34;
/// Bit 31 of the exit reason, "VM-entry failure".
pub const EXIT_REASON_ENTRY_FAILURE: u32 = 1 << 31;

/// The architectural outcome of VMLAUNCH/VMRESUME (SDM "VM Entries", "VM-Entry Failures During or
/// After Loading Guest State").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome {
    /// The VM entry succeeds.
    Success,
    /// VMfailInvalid (CF = 1): no valid current VMCS.
    VmFailInvalid,
    /// VMfailValid (ZF = 1) with this VM-instruction error (4, 5, 7, 8, 26, …).
    VmFailValid(VmInstructionError),
    /// A VM-entry failure reported as a VM exit.
    EntryFailure {
        /// Full exit reason: bit 31 set, basic reason 33 or 34.
        exit_reason: u32,
        /// Exit qualification: 0/2/3/4 for reason 33, the 1-based MSR-load index for 34.
        qualification: u64,
    },
}

impl Outcome {
    /// The outcome a violation of `class` produces (`msr_index` is the 1-based failing MSR-load
    /// entry, used for [`FailureClass::MsrLoading`]). `None` for [`FailureClass::Fault`].
    pub const fn from_class(class: FailureClass, msr_index: u64) -> Option<Outcome> {
        Some(match class {
            FailureClass::Fault => return None,
            FailureClass::VmFailInvalid => Outcome::VmFailInvalid,
            FailureClass::VmFailValid(error) => {
                Outcome::VmFailValid(VmInstructionError::from_raw(error))
            }
            FailureClass::InvalidGuestState(qualification) => Outcome::EntryFailure {
                exit_reason: EXIT_REASON_ENTRY_FAILURE | EXIT_REASON_INVALID_GUEST_STATE,
                qualification,
            },
            FailureClass::MsrLoading => Outcome::EntryFailure {
                exit_reason: EXIT_REASON_ENTRY_FAILURE | EXIT_REASON_MSR_LOADING,
                qualification: msr_index,
            },
        })
    }

    /// The outcome observed after a real VMLAUNCH/VMRESUME, to compare with a prediction:
    /// `result` is the instruction's status; `exit_reason` and `qualification` are the values read
    /// after the VM exit that followed a VMsucceed (ignored otherwise). A VM exit that is not a
    /// VM-entry failure (bit 31 of the exit reason clear) counts as success.
    pub const fn observed(
        result: Result<(), VmFail>,
        exit_reason: u32,
        qualification: u64,
    ) -> Self {
        match result {
            Err(VmFail::Invalid) => Outcome::VmFailInvalid,
            Err(VmFail::Valid(error)) => Outcome::VmFailValid(error),
            Ok(()) if exit_reason & EXIT_REASON_ENTRY_FAILURE != 0 => Outcome::EntryFailure {
                exit_reason,
                qualification,
            },
            Ok(()) => Outcome::Success,
        }
    }

    /// Rank in the SDM's order of evaluation: a lower rank is detected first (VMfailInvalid, then
    /// VMfailValid 26, 4/5, 7, 8, then VM-entry failures with qualification 0, 3, 4, 2, then MSR
    /// loading by index, success last). The prediction is the lowest-ranked violation's outcome.
    pub const fn rank(self) -> u64 {
        match self {
            Outcome::VmFailInvalid => 0,
            Outcome::VmFailValid(error) => match error.number() {
                26 => 1,
                7 => 3,
                8 => 4,
                _ => 2,
            },
            Outcome::EntryFailure {
                exit_reason,
                qualification,
            } => {
                if exit_reason & 0xffff == EXIT_REASON_MSR_LOADING {
                    // Entries are processed in order: the lowest index fails first.
                    (1 << 32) | qualification
                } else {
                    match qualification {
                        0 => 5,
                        3 => 6,
                        4 => 7,
                        _ => 8,
                    }
                }
            }
            Outcome::Success => u64::MAX,
        }
    }

    /// Short lower-case name: `success`, `vmfail_invalid`, `vmfail_valid` or `entry_failure`.
    pub const fn kind(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::VmFailInvalid => "vmfail_invalid",
            Outcome::VmFailValid(_) => "vmfail_valid",
            Outcome::EntryFailure { .. } => "entry_failure",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("VM entry succeeds"),
            Outcome::VmFailInvalid => f.write_str("VMfailInvalid"),
            Outcome::VmFailValid(error) => write!(f, "VMfailValid, {error}"),
            Outcome::EntryFailure {
                exit_reason,
                qualification,
            } => write!(
                f,
                "VM-entry failure, exit reason {exit_reason:#x} (basic {}), exit qualification {qualification}",
                exit_reason & 0xffff
            ),
        }
    }
}

/// The value a rule expected, to compare with [`Violation::actual`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Expected {
    /// Exactly this value.
    Equal(u64),
    /// Anything but this value.
    NotEqual(u64),
    /// These bits 1.
    BitsSet(u64),
    /// These bits 0.
    BitsClear(u64),
    /// At most this value.
    AtMost(u64),
    /// Within `min..=max`.
    InRange {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A canonical address for this linear-address width (bits 63:width-1 identical).
    Canonical {
        /// Linear-address width (48 or 57).
        width: u8,
    },
    /// Bits 63:`bit` all equal (the SDM's "bits 63:N must be identical", N being the
    /// linear-address width; weaker than canonicality, which also includes bit N-1).
    HighBitsIdentical {
        /// The lowest bit of the range (N).
        bit: u8,
    },
    /// One of these values.
    OneOf(&'static [u64]),
    /// Every byte a valid PAT memory type (0, 1, 4, 5, 6 or 7).
    PatMemoryTypes,
}

impl Expected {
    /// Whether `actual` satisfies the expectation.
    pub fn accepts(&self, actual: u64) -> bool {
        match *self {
            Expected::Equal(v) => actual == v,
            Expected::NotEqual(v) => actual != v,
            Expected::BitsSet(m) => actual & m == m,
            Expected::BitsClear(m) => actual & m == 0,
            Expected::AtMost(v) => actual <= v,
            Expected::InRange { min, max } => (min..=max).contains(&actual),
            Expected::Canonical { width } => is_canonical(actual, width),
            Expected::HighBitsIdentical { bit } => is_canonical(actual, bit.saturating_add(1)),
            Expected::OneOf(values) => values.contains(&actual),
            Expected::PatMemoryTypes => actual
                .to_le_bytes()
                .iter()
                .all(|b| matches!(b, 0 | 1 | 4..=7)),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Equal(v) => write!(f, "= {v:#x}"),
            Expected::NotEqual(v) => write!(f, "!= {v:#x}"),
            Expected::BitsSet(m) => write!(f, "bits {m:#x} set"),
            Expected::BitsClear(m) => write!(f, "bits {m:#x} clear"),
            Expected::AtMost(v) => write!(f, "<= {v:#x}"),
            Expected::InRange { min, max } => write!(f, "in {min:#x}..={max:#x}"),
            Expected::Canonical { width } => write!(f, "canonical ({width}-bit)"),
            Expected::HighBitsIdentical { bit } => write!(f, "bits 63:{bit} identical"),
            Expected::OneOf(values) => {
                f.write_str("one of")?;
                for v in *values {
                    write!(f, " {v:#x}")?;
                }
                Ok(())
            }
            Expected::PatMemoryTypes => f.write_str("PAT memory types (0, 1, 4-7) in every byte"),
        }
    }
}

/// Whether `value` is canonical for a `width`-bit linear address (bits 63:width-1 all equal).
pub const fn is_canonical(value: u64, width: u8) -> bool {
    if width == 0 || width >= 64 {
        return true;
    }
    let shift = 64 - width as u32;
    (((value << shift) as i64) >> shift) as u64 == value
}

/// The VMCS fields a violation involves, by encoding (at most [`FieldList::CAPACITY`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldList {
    encodings: [u32; FieldList::CAPACITY],
    len: u8,
}

impl FieldList {
    /// Most fields a violation names.
    pub const CAPACITY: usize = 4;

    /// The list of the first [`Self::CAPACITY`] encodings of `encodings`.
    pub fn new(encodings: &[u32]) -> Self {
        let mut list = Self {
            encodings: [0; Self::CAPACITY],
            len: 0,
        };
        for (slot, e) in list.encodings.iter_mut().zip(encodings) {
            *slot = *e;
            list.len += 1;
        }
        list
    }

    /// The encodings.
    pub fn as_slice(&self) -> &[u32] {
        &self.encodings[..usize::from(self.len)]
    }
}

impl fmt::Debug for FieldList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.as_slice().iter().map(|e| HexEncoding(*e)))
            .finish()
    }
}

struct HexEncoding(u32);
impl fmt::Debug for HexEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl serde::Serialize for FieldList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

/// One violated rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The VMCS fields involved (encodings); the first holds [`Self::actual`] unless the value
    /// comes from memory or the launch context.
    pub fields: FieldList,
    /// The value found.
    pub actual: u64,
    /// What the rule expected of it.
    pub expected: Expected,
    /// The outcome this violation alone would produce.
    pub outcome: Outcome,
}

impl fmt::Display for Violation {
    /// One line: rule, SDM section, summary, fields by name, actual and expected values, and the
    /// outcome this violation alone causes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}",
            self.rule,
            self.rule.section_title(),
            self.rule.summary()
        )?;
        for (i, encoding) in self.fields.as_slice().iter().enumerate() {
            let sep = if i == 0 { " fields: " } else { ", " };
            match crate::fields::by_encoding(*encoding) {
                Some(info) => write!(f, "{sep}{}", info.name)?,
                None => write!(f, "{sep}{encoding:#06x}")?,
            }
        }
        write!(
            f,
            "; actual {:#x}, expected {} -> {}",
            self.actual, self.expected, self.outcome
        )
    }
}

/// Receives each violation as the checker finds it (no allocation needed).
pub trait ViolationSink {
    /// Called once per violation.
    fn violation(&mut self, violation: &Violation);
}

impl<F: FnMut(&Violation)> ViolationSink for F {
    fn violation(&mut self, violation: &Violation) {
        self(violation)
    }
}

/// The summary of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The predicted outcome: the earliest failing class in SDM order, or success.
    pub outcome: Outcome,
    /// Number of violations found.
    pub violations: usize,
    /// The violated rules.
    pub violated: RuleSet,
    /// Covered rules that could not be evaluated (no memory reader, an unreadable memory range or
    /// VMCS field, or an unknown CPU fact).
    pub unchecked: RuleSet,
}

/// A fixed-capacity report: the first `N` violations plus the [`Summary`].
#[derive(Clone, Debug)]
pub struct Report<const N: usize> {
    violations: [Option<Violation>; N],
    len: usize,
    /// The summary (counts every violation, also those beyond capacity).
    pub summary: Summary,
}

impl<const N: usize> Report<N> {
    pub(crate) fn new() -> Self {
        Self {
            violations: [None; N],
            len: 0,
            summary: Summary {
                outcome: Outcome::Success,
                violations: 0,
                violated: RuleSet::new(),
                unchecked: RuleSet::new(),
            },
        }
    }

    /// The recorded violations, in the order found.
    pub fn violations(&self) -> impl Iterator<Item = &Violation> + '_ {
        self.violations[..self.len].iter().flatten()
    }

    /// Number of violations found but not recorded for lack of capacity.
    pub fn dropped(&self) -> usize {
        self.summary.violations - self.len
    }

    /// The predicted outcome.
    pub fn outcome(&self) -> Outcome {
        self.summary.outcome
    }

    /// Whether `rule` was violated.
    pub fn violates(&self, rule: Rule) -> bool {
        self.summary.violated.contains(rule)
    }
}

impl<const N: usize> ViolationSink for Report<N> {
    fn violation(&mut self, violation: &Violation) {
        if let Some(slot) = self.violations.get_mut(self.len) {
            *slot = Some(*violation);
            self.len += 1;
        }
    }
}
