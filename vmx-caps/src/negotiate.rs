//! Negotiation of the control fields: from what the caller requires and what it would like, to
//! the value of every control field, following the SDM's algorithm (Vol. 3D, A.2 "Reserved
//! Controls and Default Settings", and 32.5.1 "Algorithms for Determining VMX Capabilities").

use core::fmt;

use crate::caps::VmxCapabilities;
use crate::controls::{
    ControlBit, ControlGroup, Controls, EntryControls, ExitControls, PinBasedControls,
    PrimaryControls, SecondaryControls, SecondaryExitControls, TertiaryControls, VmFuncControls,
};

/// One value for each control field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ControlSet {
    /// Pin-based VM-execution controls.
    pub pin: PinBasedControls,
    /// Primary processor-based VM-execution controls.
    pub proc: PrimaryControls,
    /// Secondary processor-based VM-execution controls.
    pub proc2: SecondaryControls,
    /// Tertiary processor-based VM-execution controls.
    pub proc3: TertiaryControls,
    /// Primary VM-exit controls.
    pub exit: ExitControls,
    /// Secondary VM-exit controls.
    pub exit2: SecondaryExitControls,
    /// VM-entry controls.
    pub entry: EntryControls,
    /// VM-function controls.
    pub vmfunc: VmFuncControls,
}

impl ControlSet {
    /// Every field empty.
    pub const EMPTY: Self = Self {
        pin: PinBasedControls::empty(),
        proc: PrimaryControls::empty(),
        proc2: SecondaryControls::empty(),
        proc3: TertiaryControls::empty(),
        exit: ExitControls::empty(),
        exit2: SecondaryExitControls::empty(),
        entry: EntryControls::empty(),
        vmfunc: VmFuncControls::empty(),
    };

    /// The raw bits of `group`.
    pub fn get(&self, group: ControlGroup) -> u64 {
        match group {
            ControlGroup::Pin => self.pin.to_raw(),
            ControlGroup::Primary => self.proc.to_raw(),
            ControlGroup::Secondary => self.proc2.to_raw(),
            ControlGroup::Tertiary => self.proc3.to_raw(),
            ControlGroup::Exit => self.exit.to_raw(),
            ControlGroup::SecondaryExit => self.exit2.to_raw(),
            ControlGroup::Entry => self.entry.to_raw(),
            ControlGroup::VmFunc => self.vmfunc.to_raw(),
        }
    }

    /// Sets the raw bits of `group` (bits above the field's width are dropped).
    pub fn set(&mut self, group: ControlGroup, raw: u64) {
        match group {
            ControlGroup::Pin => self.pin = Controls::from_raw(raw),
            ControlGroup::Primary => self.proc = Controls::from_raw(raw),
            ControlGroup::Secondary => self.proc2 = Controls::from_raw(raw),
            ControlGroup::Tertiary => self.proc3 = Controls::from_raw(raw),
            ControlGroup::Exit => self.exit = Controls::from_raw(raw),
            ControlGroup::SecondaryExit => self.exit2 = Controls::from_raw(raw),
            ControlGroup::Entry => self.entry = Controls::from_raw(raw),
            ControlGroup::VmFunc => self.vmfunc = Controls::from_raw(raw),
        }
    }

    /// Adds `flags` to their field.
    pub fn insert<F: Controls>(&mut self, flags: F) {
        self.set(F::GROUP, self.get(F::GROUP) | flags.to_raw());
    }

    /// Whether `bit` is set.
    pub fn contains(&self, bit: ControlBit) -> bool {
        self.get(bit.group) & bit.mask() != 0
    }

    /// Whether no bit of any field is set.
    pub fn is_empty(&self) -> bool {
        ControlGroup::ALL.iter().all(|&g| self.get(g) == 0)
    }

    /// Every set bit, field by field.
    pub fn iter(&self) -> impl Iterator<Item = ControlBit> + '_ {
        ControlGroup::ALL.into_iter().flat_map(move |group| {
            let raw = self.get(group);
            (0..group.width())
                .filter(move |bit| raw & (1u64 << bit) != 0)
                .map(move |bit| ControlBit::new(group, bit as u8))
        })
    }

    /// The controls set in `self` or in `other`.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        self.map2(other, |a, b| a | b)
    }

    /// The controls set in both `self` and `other`.
    #[must_use]
    pub fn intersection(&self, other: &Self) -> Self {
        self.map2(other, |a, b| a & b)
    }

    /// The controls set in `self` and not in `other`.
    #[must_use]
    pub fn difference(&self, other: &Self) -> Self {
        self.map2(other, |a, b| a & !b)
    }

    /// Whether every control set in `other` is set in `self` (true for an empty `other`).
    pub fn contains_all(&self, other: &Self) -> bool {
        other.difference(self).is_empty()
    }

    /// Whether some control is set in both `self` and `other`.
    pub fn intersects(&self, other: &Self) -> bool {
        !self.intersection(other).is_empty()
    }

    /// The bits set in fields that are not in use because their activating control is 0
    /// ([`ControlGroup::activated_by`], followed up the chain: the VM-function controls need
    /// "enable VM functions", which needs "activate secondary controls"). A processor treats
    /// such a field as 0 (SDM Vol. 3C, 25.6.2 "Processor-Based VM-Execution Controls"), so
    /// these bits would have no effect.
    #[must_use]
    pub fn inactive(&self) -> Self {
        let mut out = Self::EMPTY;
        for group in ControlGroup::ALL {
            if !self.is_active(group) {
                out.set(group, self.get(group));
            }
        }
        out
    }

    /// Whether `group`'s field is in use: it has no activating control, or its activating
    /// control is 1 and in use itself.
    pub fn is_active(&self, group: ControlGroup) -> bool {
        let mut group = group;
        while let Some(act) = group.activated_by() {
            if !self.contains(act) {
                return false;
            }
            group = act.group;
        }
        true
    }

    fn map2(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        let mut out = Self::EMPTY;
        for g in ControlGroup::ALL {
            out.set(g, f(self.get(g), other.get(g)));
        }
        out
    }
}

impl<F: Controls> From<F> for ControlSet {
    /// The set holding `flags` in their field and nothing else.
    fn from(flags: F) -> Self {
        let mut set = Self::EMPTY;
        set.insert(flags);
        set
    }
}

impl From<ControlBit> for ControlSet {
    /// The set holding this one bit (empty for a bit beyond the field's width).
    fn from(bit: ControlBit) -> Self {
        let mut set = Self::EMPTY;
        set.set(bit.group, bit.mask());
        set
    }
}

macro_rules! set_operator {
    ($trait:ident, $method:ident, $assign:ident, $assign_method:ident, $function:ident) => {
        impl<T: Into<ControlSet>> core::ops::$trait<T> for ControlSet {
            type Output = ControlSet;
            fn $method(self, other: T) -> ControlSet {
                ControlSet::$function(&self, &other.into())
            }
        }

        impl<T: Into<ControlSet>> core::ops::$assign<T> for ControlSet {
            fn $assign_method(&mut self, other: T) {
                *self = ControlSet::$function(self, &other.into());
            }
        }
    };
}

set_operator!(BitOr, bitor, BitOrAssign, bitor_assign, union);
set_operator!(BitAnd, bitand, BitAndAssign, bitand_assign, intersection);
set_operator!(Sub, sub, SubAssign, sub_assign, difference);

impl fmt::Display for ControlSet {
    /// Every set bit, field by field in the SDM's order, e.g. `primary processor-based
    /// VM-execution controls: "HLT exiting" (bit 7), "activate secondary controls" (bit 31);
    /// secondary processor-based VM-execution controls: "enable EPT" (bit 1)`; `none` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first_group = true;
        for group in ControlGroup::ALL {
            let raw = self.get(group);
            if raw == 0 {
                continue;
            }
            if !first_group {
                f.write_str("; ")?;
            }
            first_group = false;
            write!(f, "{group}: ")?;
            let mut first_bit = true;
            for bit in (0..group.width()).filter(|b| raw & (1u64 << b) != 0) {
                if !first_bit {
                    f.write_str(", ")?;
                }
                first_bit = false;
                match group.bit_name(bit) {
                    Some(name) => write!(f, "\"{name}\" (bit {bit})")?,
                    None => write!(f, "reserved bit {bit}")?,
                }
            }
        }
        Ok(())
    }
}

/// What to do with an unrequested control of the default1 class (a reserved bit that is 1 by
/// default and may be 0 only where the TRUE capability MSRs say so, e.g. "CR3-load exiting").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Default1Policy {
    /// The request lists every control the caller wants; an unrequested default1 control is 0
    /// wherever the allowed-0 setting permits (the SDM's "software knows how it wants to set
    /// the control").
    #[default]
    Clear,
    /// An unrequested default1 control stays 1 (the SDM's recommendation for software that does
    /// not know the control).
    Keep,
}

/// What to do with an optional control whose dependency ([`DEPENDENCIES`]) was not requested at
/// all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DependencyPolicy {
    /// The request is inconsistent: negotiation fails, naming every such pair.
    #[default]
    Reject,
    /// The optional control is dropped (unless its dependency ends up 1 anyway, e.g. fixed to 1
    /// by the allowed-0 setting) and [`NegotiatedControls::drops`] says why. A *required*
    /// control whose dependency is not required still fails.
    DropOptional,
}

/// The controls a caller requires and those it would like (any field). Built with
/// [`require`](Self::require) and [`prefer`](Self::prefer):
///
/// ```
/// use vmx_caps::{ControlRequest, PinBasedControls, PrimaryControls, SecondaryControls};
/// let request = ControlRequest::new()
///     .require(PrimaryControls::HLT_EXITING | PrimaryControls::USE_MSR_BITMAPS)
///     .require(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST)
///     .prefer(SecondaryControls::ENABLE_VPID);
/// assert!(request.required.proc2.contains(SecondaryControls::ENABLE_EPT));
/// ```
///
/// The activating controls ("activate secondary controls", "activate tertiary controls",
/// "activate secondary controls" of the VM-exit controls, "enable VM functions") need not be
/// requested: they follow from the bits requested in the field they activate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ControlRequest {
    /// Controls that must be 1; negotiation fails if any is not allowed.
    pub required: ControlSet,
    /// Controls that are 1 if allowed and otherwise dropped (and reported).
    pub optional: ControlSet,
    /// What happens to unrequested default1 controls.
    pub default1: Default1Policy,
    /// What happens to an optional control whose dependency was not requested.
    pub dependencies: DependencyPolicy,
}

impl ControlRequest {
    /// Nothing required, nothing optional, [`Default1Policy::Clear`],
    /// [`DependencyPolicy::Reject`].
    pub const fn new() -> Self {
        Self {
            required: ControlSet::EMPTY,
            optional: ControlSet::EMPTY,
            default1: Default1Policy::Clear,
            dependencies: DependencyPolicy::Reject,
        }
    }

    /// Adds `flags` to the required controls.
    pub fn require<F: Controls>(mut self, flags: F) -> Self {
        self.required.insert(flags);
        self
    }

    /// Adds `flags` to the optional controls.
    pub fn prefer<F: Controls>(mut self, flags: F) -> Self {
        self.optional.insert(flags);
        self
    }

    /// Sets the default1 policy.
    pub fn with_default1(mut self, policy: Default1Policy) -> Self {
        self.default1 = policy;
        self
    }

    /// Sets the policy for optional controls whose dependency was not requested.
    pub fn with_dependencies(mut self, policy: DependencyPolicy) -> Self {
        self.dependencies = policy;
        self
    }
}

/// The result of a successful negotiation.
///
/// ```
/// use vmx_caps::{ControlRequest, MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};
///
/// let dump = include_str!("../testdata/corei7_skylake_x.msr");
/// let caps = VmxCapabilities::read(&mut MsrSnapshot::parse(dump)?)?;
/// // HLT exiting required; EPT preferred; a control the model lacks preferred too.
/// let request = ControlRequest::new()
///     .require(PrimaryControls::HLT_EXITING)
///     .prefer(SecondaryControls::ENABLE_EPT | SecondaryControls::from_bits_retain(1 << 31));
/// let negotiated = caps.negotiate(&request)?;
/// assert!(negotiated.value.proc.contains(PrimaryControls::HLT_EXITING));
/// assert!(negotiated.value.proc2.contains(SecondaryControls::ENABLE_EPT));
/// // EPT needs "activate secondary controls", which negotiation set without being asked.
/// assert!(negotiated.forced.proc.contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS));
/// // The unsupported preference is dropped, with its reason.
/// assert_eq!(negotiated.dropped.proc2.bits(), 1 << 31);
/// assert_eq!(negotiated.drops().count(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NegotiatedControls {
    /// The value to write to each control field.
    pub value: ControlSet,
    /// Optional controls that are 0 in `value`: not allowed by the processor, dependent on a
    /// control that is 0, or in conflict with another control. [`drops`](Self::drops) says
    /// which reason applies to each.
    pub dropped: ControlSet,
    /// Controls that are 1 in `value` without having been requested: fixed to 1 by the
    /// allowed-0 settings, kept by [`Default1Policy::Keep`], or activating controls.
    pub forced: ControlSet,
    /// The dropped optional controls whose allowed-1 setting is 0 (or whose field's activating
    /// control may not be 1).
    pub unsupported: ControlSet,
}

impl NegotiatedControls {
    /// The controls the request named (required or optional).
    pub fn requested(&self) -> ControlSet {
        self.value.difference(&self.forced).union(&self.dropped)
    }

    /// Every dropped optional control with the reason it was dropped, field by field.
    pub fn drops(&self) -> impl Iterator<Item = DroppedControl> + '_ {
        let requested = self.requested();
        self.dropped.iter().map(move |control| {
            let reason = if self.unsupported.contains(control) {
                DropReason::Unsupported
            } else if let Some(&(_, requires)) = DEPENDENCIES
                .iter()
                .find(|&&(c, r)| c == control && !self.value.contains(r))
            {
                DropReason::Dependency {
                    requires,
                    requested: requested.contains(requires),
                }
            } else {
                // Allowed, with its dependencies 1: only a conflict drops such a control, so
                // it is in a pair of CONFLICTS (a hand-made value that is in none names itself).
                let with = CONFLICTS
                    .iter()
                    .find_map(|&(a, b)| match () {
                        _ if a == control => Some(b),
                        _ if b == control => Some(a),
                        _ => None,
                    })
                    .unwrap_or(control);
                DropReason::Conflict { with }
            };
            DroppedControl { control, reason }
        })
    }
}

/// Why an optional control was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DropReason {
    /// The processor does not allow it to be 1 (its allowed-1 setting, or that of its field's
    /// activating control, is 0).
    Unsupported,
    /// It depends on `requires` ([`DEPENDENCIES`]), which is 0.
    Dependency {
        /// The control it depends on.
        requires: ControlBit,
        /// Whether `requires` was requested (then it was dropped itself); if not, the request
        /// used [`DependencyPolicy::DropOptional`].
        requested: bool,
    },
    /// It cannot be 1 together with `with` ([`CONFLICTS`]), which was kept.
    Conflict {
        /// The control that was kept.
        with: ControlBit,
    },
}

/// An optional control that negotiation dropped, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DroppedControl {
    /// The control.
    pub control: ControlBit,
    /// Why it is 0.
    pub reason: DropReason,
}

impl fmt::Display for DroppedControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.control)?;
        match self.reason {
            DropReason::Unsupported => f.write_str("not supported by the processor"),
            DropReason::Dependency {
                requires,
                requested: true,
            } => write!(f, "requires {requires}, which was dropped"),
            DropReason::Dependency {
                requires,
                requested: false,
            } => write!(f, "requires {requires}, which was not requested"),
            DropReason::Conflict { with } => write!(f, "cannot be 1 together with {with}"),
        }
    }
}

/// One inconsistency of a [`ControlRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RequestProblem {
    /// A requested control depends on another that is not requested as strongly (a required
    /// control needs its dependency required too; an optional one needs it at least optional,
    /// unless the request uses [`DependencyPolicy::DropOptional`]).
    MissingDependency {
        /// The control that was requested.
        control: ControlBit,
        /// The control it depends on.
        requires: ControlBit,
        /// Whether `control` was required (then `requires` must be required too).
        required: bool,
    },
    /// Two required controls that cannot both be 1 ([`CONFLICTS`]).
    Conflict {
        /// One control.
        first: ControlBit,
        /// The other.
        second: ControlBit,
    },
}

impl fmt::Display for RequestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::MissingDependency {
                control,
                requires,
                required,
            } => write!(
                f,
                "{control} requires {requires}, which is not {}",
                if required { "required" } else { "requested" }
            ),
            Self::Conflict { first, second } => write!(f, "{first} and {second} cannot both be 1"),
        }
    }
}

/// Every inconsistency of a request, in the order of [`DEPENDENCIES`] then [`CONFLICTS`] (no
/// allocation: one bit per pair of those tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RequestProblems {
    /// Bit i: `DEPENDENCIES[i]` is missing for a required control.
    missing_required: u32,
    /// Bit i: `DEPENDENCIES[i]` is missing for an optional control.
    missing_optional: u32,
    /// Bit i: both controls of `CONFLICTS[i]` are required.
    conflicts: u32,
}

const _: () = assert!(DEPENDENCIES.len() <= 32 && CONFLICTS.len() <= 32);

impl RequestProblems {
    /// Every problem.
    pub fn iter(&self) -> impl Iterator<Item = RequestProblem> + '_ {
        let dependencies =
            DEPENDENCIES
                .iter()
                .enumerate()
                .filter_map(|(i, &(control, requires))| {
                    let required = self.missing_required & 1 << i != 0;
                    (required || self.missing_optional & 1 << i != 0).then_some(
                        RequestProblem::MissingDependency {
                            control,
                            requires,
                            required,
                        },
                    )
                });
        let conflicts = CONFLICTS
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.conflicts & 1 << i != 0)
            .map(|(_, &(first, second))| RequestProblem::Conflict { first, second });
        dependencies.chain(conflicts)
    }

    /// How many problems there are.
    pub const fn len(&self) -> usize {
        (self.missing_required.count_ones()
            + self.missing_optional.count_ones()
            + self.conflicts.count_ones()) as usize
    }

    /// Whether there is none.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for RequestProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Why a request cannot be met: every problem found, at once. At least one of the three parts is
/// non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationError {
    /// Required controls whose allowed-1 setting is 0 (including activating controls that the
    /// required controls imply), every one of them.
    pub unsupported: ControlSet,
    /// Every inconsistency of the request itself (missing dependencies, conflicts).
    pub problems: RequestProblems,
    /// Controls whose allowed-0 setting says they must be 1 while their allowed-1 setting says
    /// they may not be: the capability MSRs contradict themselves, and no value of the field is
    /// valid.
    pub contradictory: ControlSet,
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if !self.unsupported.is_empty() {
            write!(
                f,
                "required controls not supported by the processor: {}",
                self.unsupported
            )?;
            sep = "; ";
        }
        if !self.problems.is_empty() {
            write!(f, "{sep}inconsistent request: {}", self.problems)?;
            sep = "; ";
        }
        if !self.contradictory.is_empty() {
            write!(
                f,
                "{sep}the capability MSRs say these controls must be 1 and must be 0: {}",
                self.contradictory
            )?;
        }
        Ok(())
    }
}

impl core::error::Error for NegotiationError {}

macro_rules! bit {
    ($group:ident, $ty:ident :: $flag:ident) => {
        ControlBit::new(
            ControlGroup::$group,
            ($ty::$flag.bits() as u64).trailing_zeros() as u8,
        )
    };
}

/// Pairs (A, B): control A may be 1 only if control B is 1 (SDM Vol. 3C, 27.2.1.1 "VM-Execution
/// Control Fields" and 27.2.1.2 "VM-Exit Control Fields").
pub const DEPENDENCIES: &[(ControlBit, ControlBit)] = &[
    (
        bit!(Secondary, SecondaryControls::UNRESTRICTED_GUEST),
        bit!(Secondary, SecondaryControls::ENABLE_EPT),
    ),
    (
        bit!(Secondary, SecondaryControls::ENABLE_PML),
        bit!(Secondary, SecondaryControls::ENABLE_EPT),
    ),
    (
        bit!(
            Secondary,
            SecondaryControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT
        ),
        bit!(Secondary, SecondaryControls::ENABLE_EPT),
    ),
    (
        bit!(
            Secondary,
            SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT
        ),
        bit!(Secondary, SecondaryControls::ENABLE_EPT),
    ),
    (
        bit!(VmFunc, VmFuncControls::EPTP_SWITCHING),
        bit!(Secondary, SecondaryControls::ENABLE_EPT),
    ),
    (
        bit!(Pin, PinBasedControls::VIRTUAL_NMIS),
        bit!(Pin, PinBasedControls::NMI_EXITING),
    ),
    (
        bit!(Primary, PrimaryControls::NMI_WINDOW_EXITING),
        bit!(Pin, PinBasedControls::VIRTUAL_NMIS),
    ),
    (
        bit!(Secondary, SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
        bit!(Pin, PinBasedControls::EXTERNAL_INTERRUPT_EXITING),
    ),
    (
        bit!(Secondary, SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
        bit!(Primary, PrimaryControls::USE_TPR_SHADOW),
    ),
    (
        bit!(Secondary, SecondaryControls::VIRTUALIZE_X2APIC_MODE),
        bit!(Primary, PrimaryControls::USE_TPR_SHADOW),
    ),
    (
        bit!(Secondary, SecondaryControls::APIC_REGISTER_VIRTUALIZATION),
        bit!(Primary, PrimaryControls::USE_TPR_SHADOW),
    ),
    (
        bit!(Tertiary, TertiaryControls::IPI_VIRTUALIZATION),
        bit!(Primary, PrimaryControls::USE_TPR_SHADOW),
    ),
    (
        bit!(Pin, PinBasedControls::PROCESS_POSTED_INTERRUPTS),
        bit!(Secondary, SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY),
    ),
    (
        bit!(Pin, PinBasedControls::PROCESS_POSTED_INTERRUPTS),
        bit!(Exit, ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT),
    ),
    (
        bit!(Exit, ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE),
        bit!(Pin, PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER),
    ),
];

/// Pairs of controls that cannot both be 1 (SDM Vol. 3C, 27.2.1.1: "If the 'virtualize x2APIC
/// mode' VM-execution control is 1, the 'virtualize APIC accesses' VM-execution control must
/// be 0"). When both are requested and one is optional, the optional one is dropped; when both
/// are optional, the first is kept.
pub const CONFLICTS: &[(ControlBit, ControlBit)] = &[(
    bit!(Secondary, SecondaryControls::VIRTUALIZE_APIC_ACCESSES),
    bit!(Secondary, SecondaryControls::VIRTUALIZE_X2APIC_MODE),
)];

/// The fields activated by another control, in the order activation propagates (VM functions
/// activate a secondary control, which in turn needs "activate secondary controls").
const ACTIVATED: [ControlGroup; 4] = [
    ControlGroup::VmFunc,
    ControlGroup::Secondary,
    ControlGroup::Tertiary,
    ControlGroup::SecondaryExit,
];

fn clear(set: &mut ControlSet, bit: ControlBit) {
    set.set(bit.group, set.get(bit.group) & !bit.mask());
}

fn insert(set: &mut ControlSet, bit: ControlBit) {
    set.set(bit.group, set.get(bit.group) | bit.mask());
}

impl VmxCapabilities {
    /// Negotiates the control fields for `request`.
    ///
    /// For each control (SDM 32.5.1, algorithm 3, with the TRUE MSRs where they exist): a
    /// control whose allowed-0 setting is 1 is 1; a requested control is 1 if its allowed-1
    /// setting is 1; an unrequested default1 control follows [`ControlRequest::default1`];
    /// every other control is 0. Then optional controls whose dependencies are 0 are dropped,
    /// and the activating controls are set exactly where the field they activate is non-zero
    /// (or they were requested). A field whose activating control is 0 is 0.
    ///
    /// Fails with a [`NegotiationError`] that names every problem at once: every required
    /// control that is not allowed, every inconsistency of the request itself (a missing
    /// dependency, two conflicting required controls) and every control the capability MSRs
    /// contradict themselves on. With [`DependencyPolicy::DropOptional`], an optional control
    /// whose dependency was not requested is dropped instead, and
    /// [`NegotiatedControls::drops`] names it with the dependency.
    ///
    /// ```
    /// use vmx_caps::{ControlRequest, MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};
    /// let mut snap = MsrSnapshot::parse(include_str!("../testdata/core2_penryn_t9600.msr"))?;
    /// let caps = VmxCapabilities::read(&mut snap)?;
    /// let request = ControlRequest::new()
    ///     .require(PrimaryControls::HLT_EXITING)
    ///     .require(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST);
    /// let err = caps.negotiate(&request).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "required controls not supported by the processor: \
    ///      secondary processor-based VM-execution controls: \
    ///      \"enable EPT\" (bit 1), \"unrestricted guest\" (bit 7)"
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn negotiate(
        &self,
        request: &ControlRequest,
    ) -> Result<NegotiatedControls, NegotiationError> {
        let explicit_required = request.required;
        let explicit_optional = request.optional.difference(&explicit_required);
        let explicit = explicit_required.union(&explicit_optional);

        // The request itself must be consistent: every problem is collected.
        let mut problems = RequestProblems::default();
        for (i, &(control, requires)) in DEPENDENCIES.iter().enumerate() {
            if explicit_required.contains(control) && !explicit_required.contains(requires) {
                problems.missing_required |= 1 << i;
            } else if explicit_optional.contains(control)
                && !explicit.contains(requires)
                && request.dependencies == DependencyPolicy::Reject
            {
                problems.missing_optional |= 1 << i;
            }
        }
        for (i, &(first, second)) in CONFLICTS.iter().enumerate() {
            if explicit_required.contains(first) && explicit_required.contains(second) {
                problems.conflicts |= 1 << i;
            }
        }

        // Activating controls follow from the fields they activate.
        let mut required = explicit_required;
        let mut optional = explicit_optional;
        for group in ACTIVATED {
            let Some(act) = group.activated_by() else {
                continue;
            };
            if required.get(group) != 0 {
                insert(&mut required, act);
                clear(&mut optional, act);
            } else if optional.get(group) != 0 && !required.contains(act) {
                insert(&mut optional, act);
            }
        }

        // Effective allowed settings: a field whose activating control may not be 1 allows
        // nothing (its capability MSR does not exist).
        let mut allowed0 = ControlSet::EMPTY;
        let mut allowed1 = ControlSet::EMPTY;
        for group in ControlGroup::ALL {
            let (a0, a1) = self.allowed(group);
            allowed0.set(group, a0);
            allowed1.set(group, a1);
        }
        for group in ACTIVATED.into_iter().rev() {
            if let Some(act) = group.activated_by()
                && !allowed1.contains(act)
            {
                allowed0.set(group, 0);
                allowed1.set(group, 0);
            }
        }

        let contradictory = allowed0.difference(&allowed1);
        let unsupported = required.difference(&allowed1);
        if !(contradictory.is_empty() && unsupported.is_empty() && problems.is_empty()) {
            return Err(NegotiationError {
                unsupported,
                problems,
                contradictory,
            });
        }

        let mut value = ControlSet::EMPTY;
        for group in ControlGroup::ALL {
            let a1 = allowed1.get(group);
            let requested = required.get(group) | optional.get(group);
            let mut v = allowed0.get(group) | (requested & a1);
            if request.default1 == Default1Policy::Keep {
                v |= group.default1() & a1;
            }
            value.set(group, v);
        }

        // Conflicts: drop the optional side.
        for &(first, second) in CONFLICTS {
            if value.contains(first) && value.contains(second) {
                let droppable =
                    |bit: ControlBit| !required.contains(bit) && !allowed0.contains(bit);
                if droppable(second) {
                    clear(&mut value, second);
                } else if droppable(first) {
                    clear(&mut value, first);
                }
            }
        }

        // Dependencies: an optional control whose dependency is 0 is dropped, until nothing
        // changes (chains such as posted interrupts -> virtual-interrupt delivery -> TPR shadow).
        loop {
            let mut changed = false;
            for &(control, requires) in DEPENDENCIES {
                if value.contains(control)
                    && !value.contains(requires)
                    && !required.contains(control)
                    && !allowed0.contains(control)
                {
                    clear(&mut value, control);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }

        // Activating controls: 1 exactly where the activated field is used.
        for group in ACTIVATED {
            let Some(act) = group.activated_by() else {
                continue;
            };
            let wanted = value.get(group) != 0 || explicit.contains(act) || allowed0.contains(act);
            if wanted && allowed1.contains(act) {
                insert(&mut value, act);
            } else {
                clear(&mut value, act);
            }
        }
        for group in ACTIVATED.into_iter().rev() {
            if let Some(act) = group.activated_by()
                && !value.contains(act)
            {
                value.set(group, 0);
            }
        }

        let dropped = explicit_optional.difference(&value);
        let forced = value.difference(&explicit);
        Ok(NegotiatedControls {
            value,
            dropped,
            forced,
            unsupported: dropped.difference(&allowed1),
        })
    }
}
