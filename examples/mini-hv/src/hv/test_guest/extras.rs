//! The structures behind the test guest's checks of the VMCS-referenced memory structures
//! (`vmcs::structures`): the virtual-APIC and APIC-access pages (APIC virtualization and
//! virtual-interrupt delivery), the EPTP list with a second EPT view (VMFUNC 0), the
//! virtualization-exception information area and the page-modification log. Each is set up only
//! when its controls were negotiated; the guest learns which through [`abi::HC_FEATURES`] and
//! reports the others as skipped, which [`model_lacks`] checks against the capability MSRs.

use ept::{EptMapper, LeafAttributes, MemoryType, OffsetPhysToVirt, Permissions};
use vmcs::structures::{
    ApicAccessPage, ApicRegister, EptpList, GuestInterruptStatus, InFrame, PmlLog,
    VeInformationArea, VectorSet, VirtualApicPage, write_eoi_exit_bitmap,
};
use vmcs::{VmcsWrite, fields};

use super::Vmcs;
use vmx_caps::{
    ControlRequest, ControlSet, PinBasedControls, PrimaryControls, SecondaryControls,
    VmFuncControls, VmxCapabilities,
};
use vmx_core::VmFail;

use super::{KernelFrames, SetupError, identity};
use crate::guest::abi;

/// The EPT of the test guest.
type Ept = EptMapper<OffsetPhysToVirt, KernelFrames>;

/// The controls these checks use, all optional.
const PIN: PinBasedControls = PinBasedControls::EXTERNAL_INTERRUPT_EXITING;
const PROC: PrimaryControls = PrimaryControls::USE_TPR_SHADOW;
const APIC_PROC2: SecondaryControls = SecondaryControls::VIRTUALIZE_APIC_ACCESSES
    .union(SecondaryControls::APIC_REGISTER_VIRTUALIZATION);
const PROC2: SecondaryControls = APIC_PROC2
    .union(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
    .union(SecondaryControls::ENABLE_VM_FUNCTIONS)
    .union(SecondaryControls::EPT_VIOLATION_VE)
    .union(SecondaryControls::ENABLE_PML);
const VMFUNC: VmFuncControls = VmFuncControls::EPTP_SWITCHING;

/// Adds the controls of these checks to `request`, as optional.
pub fn prefer(request: ControlRequest) -> ControlRequest {
    request
        .prefer(PIN)
        .prefer(PROC)
        .prefer(PROC2)
        .prefer(VMFUNC)
}

/// `controls` without the controls of these checks (for the entry-diff mode, which sets such
/// controls itself).
pub fn without(mut controls: ControlSet) -> ControlSet {
    controls.pin.remove(PIN);
    controls.proc.remove(PROC);
    controls.proc2.remove(PROC2);
    controls.vmfunc.remove(VMFUNC);
    controls
}

/// Whether the model lacks what guest check `name` needs, from its capability MSRs: `None` for a
/// check that needs nothing optional (it may never be skipped).
pub fn model_lacks(name: &str, caps: &VmxCapabilities) -> Option<bool> {
    let apic = caps.proc.allows(PROC) && caps.proc2.allows(APIC_PROC2);
    let has = match name {
        "apic-virtualization" => apic,
        "virtual-interrupt-delivery" => {
            apic && caps.pin.allows(PIN)
                && caps
                    .proc2
                    .allows(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
        }
        "vmfunc-eptp-switch" => {
            caps.proc2.allows(SecondaryControls::ENABLE_VM_FUNCTIONS)
                && caps.vmfunc.contains(VMFUNC)
        }
        "virtualization-exception" => caps.proc2.allows(SecondaryControls::EPT_VIOLATION_VE),
        "pml-log" => {
            caps.proc2.allows(SecondaryControls::ENABLE_PML) && caps.ept_vpid.accessed_dirty()
        }
        _ => return None,
    };
    Some(!has)
}

/// Whether PML can be on: negotiated, and the EPT's accessed and dirty flags with it.
pub fn wants_accessed_dirty(controls: &ControlSet, caps: &VmxCapabilities) -> bool {
    controls.proc2.contains(SecondaryControls::ENABLE_PML) && caps.ept_vpid.accessed_dirty()
}

/// The virtual APIC of the guest.
struct Apic {
    page: &'static VirtualApicPage,
    /// Virtual-interrupt delivery can be turned on.
    vid: bool,
}

/// What was set up.
pub struct Extras {
    apic: Option<Apic>,
    /// The second EPT view and the EPTP list, kept for the whole run.
    eptp_switching: Option<(Ept, &'static EptpList)>,
    ve: Option<&'static VeInformationArea>,
    pml: Option<&'static PmlLog>,
}

/// A frame from the kernel allocator, or [`SetupError::OutOfMemory`].
fn frame() -> Result<u64, SetupError> {
    crate::mem::alloc_frame().ok_or(SetupError::OutOfMemory)
}

/// Maps the 4-KiB host frame `hpa` at `gpa` in `ept` and flushes.
fn map_page(
    ept: &mut Ept,
    root: &super::Root,
    gpa: u64,
    hpa: u64,
    permissions: Permissions,
) -> Result<(), SetupError> {
    let attributes = LeafAttributes::new(permissions, MemoryType::WriteBack);
    super::ept_map(ept, root, gpa, hpa, 4096, attributes)
}

impl Extras {
    /// Sets up the structures of the negotiated `controls` and writes their fields: every
    /// control but virtual-interrupt delivery and external-interrupt exiting is on from the first
    /// VM entry (those two only while the `virtual-interrupt-delivery` check asks for them).
    pub fn setup(
        vmcs: &mut Vmcs<'_>,
        controls: &ControlSet,
        caps: &VmxCapabilities,
        ept: &mut Ept,
        ram_host: u64,
    ) -> Result<Extras, SetupError> {
        let mut extras = Extras {
            apic: None,
            eptp_switching: None,
            ve: None,
            pml: None,
        };
        if controls.proc.contains(PROC) && controls.proc2.contains(APIC_PROC2) {
            // SAFETY: fresh identity-mapped frames, used only as these pages for the rest of the run.
            let (page, access) = unsafe {
                (
                    VirtualApicPage::from_frame(frame()? as *mut u8)?,
                    ApicAccessPage::from_frame(frame()? as *mut u8)?,
                )
            };
            page.write(ApicRegister::VERSION, abi::APIC_VERSION_VALUE);
            page.write(ApicRegister::TPR, abi::APIC_INITIAL_TPR);
            page.write_to(vmcs, &identity, abi::APIC_TPR_THRESHOLD)?;
            access.write_to(vmcs, &identity)?;
            let phys = access.phys_addr(&identity)?;
            map_page(ept, vmcs.root(), abi::APIC_GPA, phys, Permissions::RW)?;
            let vid = controls
                .proc2
                .contains(SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY)
                && controls.pin.contains(PIN);
            if vid {
                // External-interrupt exiting comes with virtual-interrupt delivery: mask the
                // legacy PICs, whose timer request the host (running with interrupts off) never
                // acknowledges and which would otherwise exit at every VM entry.
                // SAFETY: the host uses no interrupt; masking every line of both 8259s only
                // keeps them from raising INTR.
                unsafe { crate::hv::lapic::mask_8259s() };
                write_eoi_exit_bitmap(vmcs, VectorSet::new())?;
                GuestInterruptStatus::default().write(vmcs)?;
            }
            extras.apic = Some(Apic { page, vid });
        }
        if controls
            .proc2
            .contains(SecondaryControls::ENABLE_VM_FUNCTIONS)
            && controls.vmfunc.contains(VMFUNC)
        {
            extras.eptp_switching = Some(eptp_views(vmcs, ept, ram_host)?);
            vmcs.write(fields::VM_FUNCTION_CONTROLS, VMFUNC)?;
        }
        if controls.proc2.contains(SecondaryControls::EPT_VIOLATION_VE) {
            // SAFETY: a fresh identity-mapped frame, used only as this area for the rest of the run.
            let area = unsafe { VeInformationArea::from_frame(frame()? as *mut u8)? };
            // Disarmed: EPT violations exit (the MMIO device needs them) until the guest arms it.
            area.disarm();
            area.write_to(vmcs, &identity)?;
            let phys = area.phys_addr(&identity)?;
            map_page(ept, vmcs.root(), abi::VE_AREA_GPA, phys, Permissions::RW)?;
            extras.ve = Some(area);
        }
        if wants_accessed_dirty(controls, caps) {
            // SAFETY: a fresh identity-mapped frame, used only as this log for the rest of the run.
            let log = unsafe { PmlLog::from_frame(frame()? as *mut u8)? };
            log.write_to(vmcs, &identity)?;
            extras.pml = Some(log);
        }
        // Off until the guest asks for virtual-interrupt delivery.
        vmcs.modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |c| c - SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY,
        )?;
        vmcs.modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |c| c - PIN)?;
        Ok(extras)
    }

    /// The [`abi::HC_FEATURES`] flags of what was set up.
    pub fn features(&self) -> u64 {
        let mut flags = 0;
        if let Some(apic) = &self.apic {
            flags |= abi::FEATURE_APIC_VIRTUALIZATION;
            if apic.vid {
                flags |= abi::FEATURE_VIRTUAL_INTERRUPT_DELIVERY;
            }
        }
        if self.eptp_switching.is_some() {
            flags |= abi::FEATURE_EPTP_SWITCHING;
        }
        if self.ve.is_some() {
            flags |= abi::FEATURE_VIRTUALIZATION_EXCEPTION;
        }
        if self.pml.is_some() {
            flags |= abi::FEATURE_PML;
        }
        flags
    }

    /// The hypercalls of these checks: `None` for another function number (or a feature that
    /// was not set up), else the value for RAX.
    pub fn hypercall(
        &mut self,
        nr: u64,
        a0: u64,
        a1: u64,
        vmcs: &mut Vmcs<'_>,
    ) -> Option<Result<u64, VmFail>> {
        match nr {
            abi::HC_APIC_STATE => {
                let apic = self.apic.as_ref()?;
                Some(GuestInterruptStatus::read(vmcs).map(|status| {
                    u64::from(apic.page.vtpr())
                        | u64::from(status.rvi) << 8
                        | u64::from(status.svi) << 16
                }))
            }
            abi::HC_VID_REQUEST => {
                let apic = self.apic.as_ref().filter(|a| a.vid)?;
                Some(request_virtual_interrupt(apic.page, a0, vmcs))
            }
            abi::HC_PML => {
                let log = self.pml?;
                Some(pml_request(log, a0, a1, vmcs))
            }
            _ => None,
        }
    }

    /// A TPR-below-threshold VM exit (trap-like: the guest's write is done): lowers the
    /// threshold to 0, as VM entry requires it not to exceed VTPR\[7:4\].
    pub fn tpr_below_threshold(&self, vmcs: &mut Vmcs<'_>) -> Result<(), VmFail> {
        vmcs.write(fields::TPR_THRESHOLD, 0)
    }

    /// A page-modification-log-full VM exit: empties the log, so the write is logged when the
    /// guest retries it.
    pub fn pml_full(&self, vmcs: &mut Vmcs<'_>) -> Result<bool, VmFail> {
        match self.pml {
            Some(_) => PmlLog::reset_index(vmcs).map(|()| true),
            None => Ok(false),
        }
    }
}

/// The second EPT view (guest RAM as in `ept`, but for [`abi::EPTP_VIEW_PAGE`], which is a
/// fresh frame holding [`abi::EPTP_VIEW_MARKER`]) and the EPTP list {0: `ept`, 1: the view},
/// written with EPTP index 0.
fn eptp_views(
    vmcs: &mut Vmcs<'_>,
    ept: &mut Ept,
    ram_host: u64,
) -> Result<(Ept, &'static EptpList), SetupError> {
    // SAFETY: the host identity-maps every frame the kernel allocator hands out.
    let p2v = unsafe { OffsetPhysToVirt::identity() };
    let mut view =
        EptMapper::new(*ept.config(), p2v, KernelFrames).map_err(|_| SetupError::OutOfMemory)?;
    let alternate = frame()?;
    // SAFETY: a fresh identity-mapped frame, only the view's page.
    unsafe { (alternate as *mut u64).write(abi::EPTP_VIEW_MARKER) };
    let attrs = LeafAttributes::new(Permissions::RWX, MemoryType::WriteBack);
    let page = abi::EPTP_VIEW_PAGE;
    let ranges = [
        (0, ram_host, page),
        (page, alternate, 4096),
        (
            page + 4096,
            ram_host + page + 4096,
            abi::RAM_SIZE - page - 4096,
        ),
    ];
    for (gpa, hpa, len) in ranges {
        super::ept_map(&mut view, vmcs.root(), gpa, hpa, len, attrs)?;
    }
    // SAFETY: a fresh identity-mapped frame, used only as this list for the rest of the run.
    let list = unsafe { EptpList::from_frame(frame()? as *mut u8)? };
    list.set(0, ept.eptp())?;
    list.set(1, view.eptp())?;
    list.write_to(vmcs, &identity, 0)?;
    Ok((view, list))
}

/// [`abi::HC_VID_REQUEST`].
fn request_virtual_interrupt(
    page: &VirtualApicPage,
    vector: u64,
    vmcs: &mut Vmcs<'_>,
) -> Result<u64, VmFail> {
    let Ok(vector @ 32..=255) = u8::try_from(vector) else {
        if vector != 0 {
            return Ok(abi::HC_BAD_ARGUMENT);
        }
        // Off again; with "virtual-interrupt delivery" 0, VM entry wants the TPR threshold at
        // most VTPR[7:4].
        vmcs.modify(
            fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            |c| c - SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY,
        )?;
        vmcs.modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |c| c - PIN)?;
        vmcs.write(fields::TPR_THRESHOLD, u32::from(page.vtpr() >> 4))?;
        return Ok(abi::HC_OK);
    };
    vmcs.modify(fields::PIN_BASED_VM_EXECUTION_CONTROLS, |c| c | PIN)?;
    vmcs.modify(
        fields::SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
        |c| c | SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY,
    )?;
    page.set_vtpr(0);
    page.set_vppr(0);
    page.set_visr(VectorSet::new());
    page.set_virr([vector].into_iter().collect());
    write_eoi_exit_bitmap(vmcs, VectorSet::new())?;
    GuestInterruptStatus {
        rvi: vector,
        svi: 0,
    }
    .write(vmcs)?;
    Ok(abi::HC_OK)
}

/// [`abi::HC_PML`].
fn pml_request(log: &PmlLog, request: u64, gpa: u64, vmcs: &mut Vmcs<'_>) -> Result<u64, VmFail> {
    let index = PmlLog::read_index(vmcs)?;
    Ok(match request {
        abi::PML_RESET => {
            PmlLog::reset_index(vmcs)?;
            abi::HC_OK
        }
        abi::PML_COUNT => match PmlLog::logged_count(index) {
            Ok(n) => n as u64,
            Err(_) => abi::HC_BAD_ARGUMENT,
        },
        abi::PML_CONTAINS => match log.logged(index) {
            // The SDM has the processor clear bits 11:0 of each entry; Bochs 2.7 logs the
            // whole address: compare pages.
            Ok(mut pages) => u64::from(pages.any(|logged| logged & !0xfff == gpa & !0xfff)),
            Err(_) => abi::HC_BAD_ARGUMENT,
        },
        abi::PML_LAST_ENTRY => log.entry(0).unwrap_or(abi::HC_BAD_ARGUMENT),
        abi::PML_ONE_LEFT => {
            vmcs.write(fields::PML_INDEX, 0)?;
            abi::HC_OK
        }
        _ => abi::HC_BAD_ARGUMENT,
    })
}
