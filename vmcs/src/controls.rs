//! The VMX control fields as one value: a [`ControlSet`] (vmx-caps' negotiation result) written to
//! and read from the VM-execution, VM-exit and VM-entry control fields in one call (SDM Vol. 3C,
//! 25.6 "VM-Execution Control Fields", 25.7.1 "VM-Exit Controls", 25.8.1 "VM-Entry Controls").

use vmx_caps::{ControlGroup, ControlSet, PrimaryControls};
use vmx_core::VmFail;

use crate::access::{VmcsRead, VmcsWrite};
use crate::fields;

/// Why [`VmcsWrite::write_controls`] did not write a control set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlsError {
    /// Bits set in fields whose activating control is 0 ([`ControlSet::inactive`]): the
    /// processor would ignore them, so the set is not what its author meant. Nothing was
    /// written.
    #[error("controls set in fields that are not activated: {0}")]
    Inactive(ControlSet),
    /// A VMWRITE failed (the fields before it were written).
    #[error("VMWRITE of the {group} failed: {fail}")]
    Vmcs {
        /// The field being written.
        group: ControlGroup,
        /// The failure.
        fail: VmFail,
    },
}

/// The VMCS field of `group`, as its encoding.
const fn encoding(group: ControlGroup) -> u32 {
    match group {
        ControlGroup::Pin => fields::PIN_BASED_VM_EXECUTION_CONTROLS.encoding(),
        ControlGroup::Primary => fields::PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
        ControlGroup::Secondary => {
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding()
        }
        ControlGroup::Tertiary => fields::TERTIARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.encoding(),
        ControlGroup::Exit => fields::PRIMARY_VM_EXIT_CONTROLS.encoding(),
        ControlGroup::SecondaryExit => fields::SECONDARY_VM_EXIT_CONTROLS.encoding(),
        ControlGroup::Entry => fields::VM_ENTRY_CONTROLS.encoding(),
        ControlGroup::VmFunc => fields::VM_FUNCTION_CONTROLS.encoding(),
    }
}

/// Writes every field of `controls` that is in use ([`ControlSet::is_active`]), in the order of
/// [`ControlGroup::ALL`].
pub(crate) fn write<V: VmcsWrite + ?Sized>(
    vmcs: &mut V,
    controls: &ControlSet,
) -> Result<(), ControlsError> {
    let inactive = controls.inactive();
    if !inactive.is_empty() {
        return Err(ControlsError::Inactive(inactive));
    }
    for group in ControlGroup::ALL {
        if controls.is_active(group) {
            vmcs.write_raw(encoding(group), controls.get(group))
                .map_err(|fail| ControlsError::Vmcs { group, fail })?;
        }
    }
    Ok(())
}

/// Reads the fields in use: the four that always are, then each activated one (an inactive field
/// reads as 0 in the result, as the processor treats it).
pub(crate) fn read<V: VmcsRead + ?Sized>(vmcs: &V) -> Result<ControlSet, VmFail> {
    let mut set = ControlSet::EMPTY;
    for group in [
        ControlGroup::Pin,
        ControlGroup::Primary,
        ControlGroup::Exit,
        ControlGroup::Entry,
    ] {
        set.set(group, vmcs.read_raw(encoding(group))?);
    }
    if set
        .proc
        .contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS)
    {
        set.set(
            ControlGroup::Secondary,
            vmcs.read_raw(encoding(ControlGroup::Secondary))?,
        );
    }
    // Activation order: tertiary and secondary exit hang off always-used fields, VM functions
    // off the secondary controls just read.
    for group in [
        ControlGroup::Tertiary,
        ControlGroup::SecondaryExit,
        ControlGroup::VmFunc,
    ] {
        if set.is_active(group) {
            set.set(group, vmcs.read_raw(encoding(group))?);
        }
    }
    Ok(set)
}
