//! The access traits: VMREAD and VMWRITE by encoding, and typed by field.

use vmx_core::VmFail;

use crate::FieldValue;
use crate::controls::{self, ControlsError};
use crate::field::{VmcsField, WritableField};
use crate::segment::{self, DescriptorTable, GuestDescriptorTable, GuestSegment, Segment};

/// Reading a VMCS: VMREAD (SDM Vol. 3C, "VMREAD—Read Field from Virtual-Machine Control
/// Structure"), implemented by [`vmx_core::CurrentVmcs`] (the loaded VMCS of a processor),
/// [`crate::SoftVmcs`] (a VMCS in plain memory) and `HardwareVmcs` (unchecked: whatever VMCS is
/// current).
///
/// ```
/// use vmcs::{fields, SegmentAccessRights, SoftVmcs, VmcsRead, VmcsWrite};
///
/// let mut vmcs = SoftVmcs::all_fields();
/// vmcs.write(fields::GUEST_CS_ACCESS_RIGHTS, SegmentAccessRights::from_bits(0xa09b))?;
/// let cs = vmcs.read(fields::GUEST_CS_ACCESS_RIGHTS)?; // a `SegmentAccessRights`
/// assert!(cs.long_mode() && cs.present() && cs.code_or_data());
/// let limit: u32 = vmcs.read(fields::GUEST_CS_LIMIT)?; // 32-bit field, `u32`
/// assert_eq!(limit, 0);
/// assert_eq!(vmcs.read_raw(0x4816)?, 0xa09b);
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
pub trait VmcsRead {
    /// VMREAD of the field `encoding`: its value zero-extended to 64 bits (for a high-half
    /// encoding, bits 63:32 of the 64-bit field in bits 31:0).
    ///
    /// # Errors
    ///
    /// [`VmFail::Valid`] with error 12 ("VMREAD/VMWRITE from/to unsupported VMCS component") for
    /// an encoding the VMCS does not support; [`VmFail::Invalid`] when there is no current VMCS.
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail>;

    /// Reads a field as its value type (`u16`, `u32`, `u64` or the field's own type).
    ///
    /// # Errors
    ///
    /// As [`VmcsRead::read_raw`].
    fn read<F: VmcsField>(&self, field: F) -> Result<F::Value, VmFail> {
        self.read_raw(field.encoding()).map(F::Value::from_raw)
    }

    /// Reads guest segment register `seg` (its selector, base, limit and access-rights fields,
    /// SDM Vol. 3C, 25.4.1 "Guest Register State").
    ///
    /// # Errors
    ///
    /// As [`VmcsRead::read_raw`], for the first field that fails.
    fn read_guest_segment(&self, seg: GuestSegment) -> Result<Segment, VmFail> {
        segment::read_segment(self, seg)
    }

    /// Reads guest descriptor-table register `table` (GDTR or IDTR: base and limit fields).
    ///
    /// # Errors
    ///
    /// As [`VmcsRead::read_raw`], for the first field that fails.
    fn read_guest_descriptor_table(
        &self,
        table: GuestDescriptorTable,
    ) -> Result<DescriptorTable, VmFail> {
        segment::read_table(self, table)
    }

    /// Reads the VMX control fields in use into a [`vmx_caps::ControlSet`]: the pin-based,
    /// primary processor-based, primary VM-exit and VM-entry controls always; the secondary
    /// processor-based controls when "activate secondary controls" is 1; the tertiary ones when
    /// "activate tertiary controls" is 1; the secondary VM-exit controls when "activate
    /// secondary controls" (VM-exit control bit 31) is 1; the VM-function controls when the
    /// secondary controls are in use and "enable VM functions" is 1. A field that is not in use
    /// is not read (it may not exist) and is 0 in the result, as the processor treats it.
    ///
    /// # Errors
    ///
    /// As [`VmcsRead::read_raw`], for the first field that fails.
    fn read_controls(&self) -> Result<vmx_caps::ControlSet, VmFail> {
        controls::read(self)
    }
}

/// Writing a VMCS: VMWRITE (SDM Vol. 3C, "VMWRITE—Write Field to Virtual-Machine Control
/// Structure").
///
/// The typed [`VmcsWrite::write`] accepts only writable fields: writing a VM-exit information
/// field does not compile.
///
/// ```compile_fail
/// use vmcs::{fields, SoftVmcs, VmcsWrite};
///
/// let mut vmcs = SoftVmcs::all_fields();
/// vmcs.write(fields::EXIT_REASON, 0)?; // read-only: no `WritableField` impl
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
///
/// ```
/// use vmcs::{fields, SoftVmcs, VmcsWrite};
///
/// let mut vmcs = SoftVmcs::all_fields();
/// vmcs.write(fields::GUEST_RIP, 0x1000)?;
/// # Ok::<(), vmx_core::VmFail>(())
/// ```
pub trait VmcsWrite: VmcsRead {
    /// VMWRITE of `value` to the field `encoding`. Bits beyond the field's width are ignored (for
    /// a high-half encoding, bits 31:0 of `value` become bits 63:32 of the field).
    ///
    /// # Errors
    ///
    /// [`VmFail::Valid`] with error 12 for an unsupported encoding, error 13 ("VMWRITE to read-only
    /// VMCS component") for a VM-exit information field unless IA32_VMX_MISC\[29\] allows it;
    /// [`VmFail::Invalid`] when there is no current VMCS.
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail>;

    /// Writes a writable field from its value type.
    ///
    /// # Errors
    ///
    /// As [`VmcsWrite::write_raw`].
    fn write<F: WritableField>(&mut self, field: F, value: F::Value) -> Result<(), VmFail> {
        self.write_raw(field.encoding(), value.into_raw())
    }

    /// Reads a writable field, applies `change` and writes the result back.
    ///
    /// # Errors
    ///
    /// As [`VmcsRead::read_raw`] and [`VmcsWrite::write_raw`].
    fn modify<F: WritableField>(
        &mut self,
        field: F,
        change: impl FnOnce(F::Value) -> F::Value,
    ) -> Result<(), VmFail> {
        let value = self.read(field)?;
        self.write(field, change(value))
    }

    /// Writes guest segment register `seg`: its selector, base, limit and access-rights fields
    /// (SDM Vol. 3C, 25.4.1 "Guest Register State"), in that order.
    ///
    /// # Errors
    ///
    /// As [`VmcsWrite::write_raw`], for the first field that fails (the fields before it are
    /// written).
    fn write_guest_segment(&mut self, seg: GuestSegment, value: Segment) -> Result<(), VmFail> {
        segment::write_segment(self, seg, value)
    }

    /// Writes guest descriptor-table register `table` (GDTR or IDTR): its base, then its limit.
    ///
    /// # Errors
    ///
    /// As [`VmcsWrite::write_raw`], for the first field that fails.
    fn write_guest_descriptor_table(
        &mut self,
        table: GuestDescriptorTable,
        value: DescriptorTable,
    ) -> Result<(), VmFail> {
        segment::write_table(self, table, value)
    }

    /// Writes a [`vmx_caps::ControlSet`] (e.g. [`vmx_caps::NegotiatedControls::value`]) into the
    /// VMX control fields in one call: the pin-based, primary processor-based, primary VM-exit and
    /// VM-entry controls always, and each activated field only when its activating control is 1
    /// in `controls` (as [`VmcsRead::read_controls`] reads them), so that no VMWRITE touches a
    /// field the processor may not have.
    ///
    /// ```
    /// use vmcs::{SoftVmcs, VmcsRead, VmcsWrite};
    /// use vmx_caps::{ControlRequest, MsrSnapshot, PrimaryControls, SecondaryControls, VmxCapabilities};
    ///
    /// let mut msrs = MsrSnapshot::parse(include_str!("../../vmx-caps/testdata/tigerlake.msr")).unwrap();
    /// let caps = VmxCapabilities::read(&mut msrs).unwrap();
    /// let request = ControlRequest::new()
    ///     .require(PrimaryControls::HLT_EXITING)
    ///     .require(SecondaryControls::ENABLE_EPT);
    /// let controls = caps.negotiate(&request).unwrap().value;
    /// let mut vmcs = SoftVmcs::new(&caps);
    /// vmcs.write_controls(&controls)?;
    /// assert_eq!(vmcs.read_controls()?, controls);
    ///
    /// // Secondary controls without "activate secondary controls" would be ignored: refused.
    /// let mut inert = controls;
    /// inert.proc.remove(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS);
    /// assert!(vmcs.write_controls(&inert).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ControlsError::Inactive`] (before any write) when `controls` has bits in a field whose
    /// activating control is 0; [`ControlsError::Vmcs`] naming the field whose VMWRITE failed.
    fn write_controls(&mut self, controls: &vmx_caps::ControlSet) -> Result<(), ControlsError> {
        controls::write(self, controls)
    }
}

impl<T: VmcsRead + ?Sized> VmcsRead for &T {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        (**self).read_raw(encoding)
    }
}

impl<T: VmcsRead + ?Sized> VmcsRead for &mut T {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        (**self).read_raw(encoding)
    }
}

impl<T: VmcsWrite + ?Sized> VmcsWrite for &mut T {
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        (**self).write_raw(encoding, value)
    }
}
