//! What the example hypervisor (mini-hv with its test guest) needs from VMX, as data in one
//! place, and the verdict for any capability set: whether the example runs there, with which
//! fallbacks, and every requirement that is missing.
//!
//! mini-hv negotiates with exactly this data (`request`, `Verdict::evaluate`); `vmxtool caps
//! --example` includes this file by `#[path]` to print the verdict for a dump. It uses only
//! `core` and `vmx_caps`, so it builds in the freestanding kernel and in the std tool alike.

use core::fmt;

use vmx_caps::{
    ControlBit, ControlGroup, ControlRequest, ControlSet, EntryControls, ExitControls,
    NegotiatedControls, NegotiationError, PinBasedControls, PrimaryControls, SecondaryControls,
    VmxCapabilities,
};

/// One capability the example uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// A VM-execution, VM-exit or VM-entry control that may be 1: its field and its bit mask.
    Control(ControlGroup, u64),
    /// `IA32_VMX_MISC[6]`: the HLT activity state (SDM Vol. 3D, A.6).
    ActivityHlt,
    /// `IA32_VMX_EPT_VPID_CAP[6]`: an EPT page-walk length of 4 (SDM Vol. 3D, A.10).
    EptPageWalk4,
    /// `IA32_VMX_EPT_VPID_CAP[14]`: write-back EPT paging structures (SDM Vol. 3D, A.10).
    EptWriteBack,
    /// "CR3-load exiting", "CR3-store exiting" and "INVLPG exiting" may be 0 (their allowed-0
    /// settings are 0, which needs the TRUE capability MSRs: they are in the default1 class).
    Cr3InvlpgExitingClearable,
}

/// The CR3 and INVLPG exiting controls the example does not emulate.
const CR3_INVLPG_EXITING: PrimaryControls = PrimaryControls::CR3_LOAD_EXITING
    .union(PrimaryControls::CR3_STORE_EXITING)
    .union(PrimaryControls::INVLPG_EXITING);

impl Capability {
    /// Whether `caps` offers it.
    pub fn offered_by(self, caps: &VmxCapabilities) -> bool {
        match self {
            Self::Control(group, mask) => caps.allowed(group).1 & mask == mask,
            Self::ActivityHlt => caps.misc.activity_hlt(),
            Self::EptPageWalk4 => caps.ept_vpid.page_walk_4(),
            Self::EptWriteBack => caps.ept_vpid.memory_type_wb(),
            Self::Cr3InvlpgExitingClearable => {
                caps.proc.allowed0.bits() & CR3_INVLPG_EXITING.bits() == 0
            }
        }
    }
}

impl Capability {
    /// Whether a control capability is set in `value` (other capabilities are not controls:
    /// false).
    pub fn chosen_in(self, value: &ControlSet) -> bool {
        match self {
            Self::Control(group, mask) => value.get(group) & mask == mask,
            _ => false,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Control(group, mask) => {
                write!(f, "{}", ControlBit::new(group, mask.trailing_zeros() as u8))
            }
            Self::ActivityHlt => f.write_str("the HLT activity state (IA32_VMX_MISC[6])"),
            Self::EptPageWalk4 => f.write_str("EPT page-walk length 4 (IA32_VMX_EPT_VPID_CAP[6])"),
            Self::EptWriteBack => {
                f.write_str("write-back EPT paging structures (IA32_VMX_EPT_VPID_CAP[14])")
            }
            Self::Cr3InvlpgExitingClearable => f.write_str(
                "CR3-load/-store and INVLPG exiting that may be 0 (TRUE capability MSRs)",
            ),
        }
    }
}

/// A capability without which the example does not run, and what it is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The capability.
    pub capability: Capability,
    /// What the example uses it for.
    pub used_for: &'static str,
}

/// A control the example uses where it exists, and what it does where it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Optional {
    /// The control.
    pub capability: Capability,
    /// What the example does without it.
    pub fallback: &'static str,
    /// The controls the fallback needs: required where the control is absent.
    pub fallback_needs: &'static [Capability],
}

/// The controls the local-APIC-timer fallback of the VMX-preemption timer needs: the host's timer
/// interrupt exits ("external-interrupt exiting") and is acknowledged by the exit, its vector in
/// the exit interruption information ("acknowledge interrupt on exit"), so the host, which runs
/// with interrupts off, only writes the EOI.
const APIC_TIMER_NEEDS: [Capability; 2] = [
    control(
        ControlGroup::Pin,
        PinBasedControls::EXTERNAL_INTERRUPT_EXITING.bits(),
    ),
    control(
        ControlGroup::Exit,
        ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT.bits(),
    ),
];

const fn control(group: ControlGroup, bits: u32) -> Capability {
    Capability::Control(group, bits as u64)
}

/// Every requirement of the example.
pub const REQUIRED: [Requirement; 14] = [
    Requirement {
        capability: control(ControlGroup::Primary, PrimaryControls::HLT_EXITING.bits()),
        used_for: "HLT is emulated with the HLT activity state",
    },
    Requirement {
        capability: control(
            ControlGroup::Primary,
            PrimaryControls::USE_IO_BITMAPS.bits(),
        ),
        used_for: "port I/O exits only for the emulated devices",
    },
    Requirement {
        capability: control(
            ControlGroup::Primary,
            PrimaryControls::USE_MSR_BITMAPS.bits(),
        ),
        used_for: "RDMSR/WRMSR exit only for the emulated MSRs",
    },
    Requirement {
        capability: control(
            ControlGroup::Primary,
            PrimaryControls::CR8_LOAD_EXITING.bits(),
        ),
        used_for: "the guest's TPR (CR8) is emulated",
    },
    Requirement {
        capability: control(
            ControlGroup::Primary,
            PrimaryControls::CR8_STORE_EXITING.bits(),
        ),
        used_for: "the guest's TPR (CR8) is emulated",
    },
    Requirement {
        capability: control(
            ControlGroup::Secondary,
            SecondaryControls::ENABLE_EPT.bits(),
        ),
        used_for: "guest memory is confined by EPT",
    },
    Requirement {
        capability: control(
            ControlGroup::Secondary,
            SecondaryControls::UNRESTRICTED_GUEST.bits(),
        ),
        used_for: "the guest starts in real mode and switches modes itself",
    },
    Requirement {
        capability: control(
            ControlGroup::Exit,
            ExitControls::HOST_ADDRESS_SPACE_SIZE.bits(),
        ),
        used_for: "the host runs in 64-bit mode",
    },
    Requirement {
        capability: control(ControlGroup::Exit, ExitControls::SAVE_IA32_EFER.bits()),
        used_for: "the guest's IA32_EFER is switched at VM exit",
    },
    Requirement {
        capability: control(ControlGroup::Exit, ExitControls::LOAD_IA32_EFER.bits()),
        used_for: "the guest's IA32_EFER is switched at VM exit",
    },
    Requirement {
        capability: control(ControlGroup::Entry, EntryControls::LOAD_IA32_EFER.bits()),
        used_for: "the guest's IA32_EFER is switched at VM entry",
    },
    Requirement {
        capability: Capability::ActivityHlt,
        used_for: "a halted guest waits in the HLT activity state",
    },
    Requirement {
        capability: Capability::EptPageWalk4,
        used_for: "the EPT tables have 4 levels",
    },
    Requirement {
        capability: Capability::EptWriteBack,
        used_for: "the EPT tables are write-back memory",
    },
];

/// The requirement checked after negotiation: the negotiated value must leave these exits off.
pub const CR3_INVLPG: Requirement = Requirement {
    capability: Capability::Cr3InvlpgExitingClearable,
    used_for: "guest CR3 accesses and INVLPG run without exits (they are not emulated)",
};

/// The optional VMX-preemption timer (the first entry of [`OPTIONAL`]).
pub const PREEMPTION_TIMER: Capability = control(
    ControlGroup::Pin,
    PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER.bits(),
);

/// Every optional control of the example, with its fallback.
pub const OPTIONAL: [Optional; 4] = [
    Optional {
        capability: PREEMPTION_TIMER,
        fallback: "the host's local APIC timer, with external-interrupt exiting, drives the \
                   watchdog (a guest running without VM exits is stopped) and wakes a halted guest",
        fallback_needs: &APIC_TIMER_NEEDS,
    },
    Optional {
        capability: control(ControlGroup::Pin, PinBasedControls::NMI_EXITING.bits()),
        fallback: "NMIs that arrive while the guest runs are delivered to the guest",
        fallback_needs: &[],
    },
    Optional {
        capability: control(
            ControlGroup::Secondary,
            SecondaryControls::ENABLE_VPID.bits(),
        ),
        fallback: "no tagged TLB: every VM entry and exit flushes the guest's linear mappings",
        fallback_needs: &[],
    },
    Optional {
        capability: control(
            ControlGroup::Secondary,
            SecondaryControls::WBINVD_EXITING.bits(),
        ),
        fallback: "the guest's WBINVD runs without a VM exit (its check is skipped)",
        fallback_needs: &[],
    },
];

/// The controls of [`REQUIRED`] (required) and [`OPTIONAL`] (preferred), as a request.
pub fn request() -> ControlRequest {
    let mut request = ControlRequest::new();
    for requirement in &REQUIRED {
        if let Capability::Control(group, mask) = requirement.capability {
            request
                .required
                .set(group, request.required.get(group) | mask);
        }
    }
    for optional in &OPTIONAL {
        if let Capability::Control(group, mask) = optional.capability {
            request
                .optional
                .set(group, request.optional.get(group) | mask);
        }
    }
    request
}

/// Whether the example runs on a capability set, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// For each entry of [`REQUIRED`]: whether it is missing.
    pub missing: [bool; REQUIRED.len()],
    /// Whether [`CR3_INVLPG`] is missing (only judged where the rest negotiates).
    pub cr3_invlpg_missing: bool,
    /// For each entry of [`OPTIONAL`]: whether it is absent, so that its fallback is used.
    pub fallbacks: [bool; OPTIONAL.len()],
    /// The controls that the fallbacks of absent optional controls need, and that are absent too.
    pub fallback_needs_missing: ControlSet,
    /// The negotiation of [`request`] (or of the caller's extension of it).
    pub negotiated: Result<NegotiatedControls, NegotiationError>,
}

impl Verdict {
    /// The verdict for `caps` with the example's own [`request`].
    pub fn of(caps: &VmxCapabilities) -> Self {
        Self::evaluate(caps, &request())
    }

    /// The verdict for `caps` with `request`, which must contain [`request`] (a caller may add
    /// optional controls of its own).
    pub fn evaluate(caps: &VmxCapabilities, request: &ControlRequest) -> Self {
        let mut request = *request;
        let first = caps.negotiate(&request);
        // An absent optional control whose fallback needs controls: those become required, and
        // the request is negotiated again (also where it failed, so that the error names them).
        let mut fallback_needs_missing = ControlSet::EMPTY;
        let mut again = false;
        for o in &OPTIONAL {
            let absent = match &first {
                Ok(n) => !o.capability.chosen_in(&n.value),
                Err(_) => !o.capability.offered_by(caps),
            };
            if !absent {
                continue;
            }
            for need in o.fallback_needs {
                if let Capability::Control(group, mask) = *need {
                    request
                        .required
                        .set(group, request.required.get(group) | mask);
                    again = true;
                    if !need.offered_by(caps) {
                        fallback_needs_missing.set(group, fallback_needs_missing.get(group) | mask);
                    }
                }
            }
        }
        let negotiated = if again {
            caps.negotiate(&request)
        } else {
            first
        };
        let missing = REQUIRED.map(|r| !r.capability.offered_by(caps));
        let cr3_invlpg_missing = match &negotiated {
            Ok(n) => n.value.proc.intersects(CR3_INVLPG_EXITING),
            Err(_) => !CR3_INVLPG.capability.offered_by(caps),
        };
        let fallbacks = OPTIONAL.map(|o| match &negotiated {
            Ok(n) => !o.capability.chosen_in(&n.value),
            Err(_) => !o.capability.offered_by(caps),
        });
        Self {
            missing,
            cr3_invlpg_missing,
            fallbacks,
            fallback_needs_missing,
            negotiated,
        }
    }

    /// Whether the example runs (with or without fallbacks).
    pub fn runs(&self) -> bool {
        self.negotiated.is_ok()
            && !self.missing.contains(&true)
            && !self.cr3_invlpg_missing
            && self.fallback_needs_missing.is_empty()
    }

    /// Every missing requirement.
    pub fn missing_requirements(&self) -> impl Iterator<Item = &'static Requirement> + '_ {
        REQUIRED
            .iter()
            .zip(self.missing)
            .filter(|(_, missing)| *missing)
            .map(|(r, _)| r)
            .chain(self.cr3_invlpg_missing.then_some(&CR3_INVLPG))
    }

    /// Every optional control absent, whose fallback is used.
    pub fn fallbacks_used(&self) -> impl Iterator<Item = &'static Optional> + '_ {
        OPTIONAL
            .iter()
            .zip(self.fallbacks)
            .filter(|(_, absent)| *absent)
            .map(|(o, _)| o)
    }
}

/// The verdict, one line a finding: "runs", "runs with fallbacks" and each fallback, or "does
/// not run" and each missing requirement (then the negotiation error, if it says more).
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runs() {
            if self.fallbacks.contains(&true) {
                writeln!(f, "the example runs here, with fallbacks:")?;
            } else {
                writeln!(f, "the example runs here")?;
            }
        } else {
            writeln!(f, "the example does not run here; missing:")?;
            for r in self.missing_requirements() {
                writeln!(f, "  missing {}: {}", r.capability, r.used_for)?;
            }
            for o in &OPTIONAL {
                for need in o.fallback_needs {
                    if need.chosen_in(&self.fallback_needs_missing) {
                        writeln!(
                            f,
                            "  missing {need}: the fallback for {} needs it",
                            o.capability
                        )?;
                    }
                }
            }
            if let Err(e) = &self.negotiated
                && !e.problems.is_empty()
            {
                writeln!(f, "  negotiation: {e}")?;
            }
        }
        for o in self.fallbacks_used() {
            writeln!(f, "  fallback for {}: {}", o.capability, o.fallback)?;
        }
        Ok(())
    }
}
