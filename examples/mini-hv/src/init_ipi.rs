//! Where an INIT IPI that a guest writes to its xAPIC's interrupt command register goes (SDM Vol.
//! 3A §11.6.1 "Interrupt Command Register (ICR)", Figure 11-12): the Linux guest with 2 vCPUs
//! emulates INIT IPIs instead of sending them (`hv::linux_guest`), and this says to whom. An INIT to
//! the sender puts the sender into the INIT state; an INIT to an APIC ID that no processor has
//! reaches nobody; "INIT level de-assert" is no INIT on processors since the Pentium 4.

/// ICR bits 10:8, delivery mode: INIT.
const DELIVERY_INIT: u32 = 0b101;
/// ICR bit 11: destination mode (0 physical, 1 logical).
const LOGICAL: u32 = 1 << 11;
/// ICR bit 14: level (0 de-assert, 1 assert).
const LEVEL_ASSERT: u32 = 1 << 14;
/// ICR bit 15: trigger mode (0 edge, 1 level).
const TRIGGER_LEVEL: u32 = 1 << 15;
/// The physical destination that addresses every xAPIC.
const BROADCAST: u32 = 0xff;

/// The processors an INIT IPI reaches, among `0..ids.len()` (their local APIC IDs in `ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitTargets {
    /// The sending processor itself.
    pub to_self: bool,
    /// The other processors reached, by index into `ids` (bit `n`: processor `n`).
    pub others: u32,
}

impl InitTargets {
    /// It reaches no processor (a destination no APIC ID matches).
    pub fn to_nobody(&self) -> bool {
        !self.to_self && self.others == 0
    }
}

/// What a write of `low` to ICR bits 31:0, with ICR bits 63:32 holding `high`, sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcrWrite {
    /// Not an INIT (a fixed, NMI, SIPI, … IPI): sent as written.
    NotInit,
    /// An INIT level de-assert: no INIT at all.
    InitDeassert,
    /// An INIT in logical destination mode: its targets depend on the other APICs' logical
    /// destination registers, which the sender cannot read.
    InitLogical,
    /// An INIT in physical destination mode, or by shorthand.
    Init(InitTargets),
}

/// Classifies a write of `low` to the ICR of the processor with APIC ID `ids[me]`, `high` being
/// ICR bits 63:32 (destination in bits 63:56), on a machine whose processors have the APIC IDs
/// `ids` (at most 32).
pub fn classify(low: u32, high: u32, me: usize, ids: &[u32]) -> IcrWrite {
    if (low >> 8) & 0b111 != DELIVERY_INIT {
        return IcrWrite::NotInit;
    }
    if low & LEVEL_ASSERT == 0 && low & TRIGGER_LEVEL != 0 {
        return IcrWrite::InitDeassert;
    }
    let others_all = ids
        .iter()
        .enumerate()
        .take(32)
        .filter(|&(n, _)| n != me)
        .fold(0u32, |set, (n, _)| set | 1 << n);
    let targets = match (low >> 18) & 0b11 {
        // No shorthand: the destination field.
        0b00 => {
            if low & LOGICAL != 0 {
                return IcrWrite::InitLogical;
            }
            let dest = high >> 24;
            let own = ids.get(me).copied();
            let others = ids
                .iter()
                .enumerate()
                .take(32)
                .filter(|&(n, &id)| n != me && (dest == BROADCAST || id == dest))
                .fold(0u32, |set, (n, _)| set | 1 << n);
            InitTargets {
                to_self: dest == BROADCAST || own == Some(dest),
                others,
            }
        }
        0b01 => InitTargets {
            to_self: true,
            others: 0,
        },
        0b10 => InitTargets {
            to_self: true,
            others: others_all,
        },
        _ => InitTargets {
            to_self: false,
            others: others_all,
        },
    };
    IcrWrite::Init(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// INIT, level assert, edge (what Linux and mini-hv send).
    const INIT: u32 = 0b101 << 8 | LEVEL_ASSERT;
    const IDS: [u32; 2] = [0, 1];

    fn init(low: u32, dest: u32, me: usize) -> InitTargets {
        match classify(low, dest << 24, me, &IDS) {
            IcrWrite::Init(t) => t,
            other => panic!("not an INIT: {other:?}"),
        }
    }

    #[test]
    fn physical_destinations() {
        assert_eq!(
            init(INIT, 1, 0),
            InitTargets {
                to_self: false,
                others: 0b10
            }
        );
        assert_eq!(
            init(INIT, 0, 1),
            InitTargets {
                to_self: false,
                others: 0b01
            }
        );
        // To itself.
        assert_eq!(
            init(INIT, 0, 0),
            InitTargets {
                to_self: true,
                others: 0
            }
        );
        // To an APIC ID nobody has: nothing.
        let nobody = init(INIT, 5, 0);
        assert!(nobody.to_nobody());
        // Broadcast: everyone, the sender too.
        assert_eq!(
            init(INIT, 0xff, 0),
            InitTargets {
                to_self: true,
                others: 0b10
            }
        );
    }

    #[test]
    fn shorthands() {
        assert_eq!(
            init(INIT | 0b01 << 18, 7, 1),
            InitTargets {
                to_self: true,
                others: 0
            }
        );
        assert_eq!(
            init(INIT | 0b10 << 18, 7, 1),
            InitTargets {
                to_self: true,
                others: 0b01
            }
        );
        assert_eq!(
            init(INIT | 0b11 << 18, 7, 0),
            InitTargets {
                to_self: false,
                others: 0b10
            }
        );
        // All excluding self on a one-processor machine: nobody.
        let alone = classify(INIT | 0b11 << 18, 0, 0, &[0]);
        assert_eq!(
            alone,
            IcrWrite::Init(InitTargets {
                to_self: false,
                others: 0
            })
        );
    }

    #[test]
    fn not_an_init() {
        // SIPI with vector 0x99, fixed IPI, NMI.
        assert_eq!(
            classify(0b110 << 8 | LEVEL_ASSERT | 0x99, 1 << 24, 0, &IDS),
            IcrWrite::NotInit
        );
        assert_eq!(classify(0x30, 1 << 24, 0, &IDS), IcrWrite::NotInit);
        assert_eq!(classify(0b100 << 8, 1 << 24, 0, &IDS), IcrWrite::NotInit);
        // INIT level de-assert (level 0, trigger level).
        assert_eq!(
            classify(0b101 << 8 | TRIGGER_LEVEL, 1 << 24, 0, &IDS),
            IcrWrite::InitDeassert
        );
        // Level assert with level trigger is an INIT.
        assert!(matches!(
            classify(INIT | TRIGGER_LEVEL, 1 << 24, 0, &IDS),
            IcrWrite::Init(_)
        ));
        assert_eq!(
            classify(INIT | LOGICAL, 1 << 24, 0, &IDS),
            IcrWrite::InitLogical
        );
    }
}
