//! `cargo xtask test`: the host checks, then the example kernel on every platform of the matrix below.

use crate::emu::{self, Platform, ResultKind, RunSpec};
use crate::{deps, kernel};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a run must end with.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// `RESULT PASS`.
    #[allow(
        dead_code,
        reason = "the matrix uses it once the hypervisor passes on Bochs (see CASES)"
    )]
    Pass,
    /// `RESULT PASS`, and each named guest check has this verdict on its `mini-hv: <n> <name>
    /// <verdict>` line ([`PASS`], or `skipped (not supported by this CPU)`). A name with a prefix,
    /// `L1: <name>`, is the check of the guest hypervisor L1's own test guest, on the line L0
    /// forwards as `L1: mini-hv: <n> <name> <verdict>` (see [`guest_verdict`]).
    PassChecks(&'static [(&'static str, &'static str)]),
    /// As [`Expect::PassChecks`], and the serial log contains every one of these strings.
    PassChecksAnd(
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    ),
    /// `RESULT UNSUPPORTED`, and the serial log contains every one of these strings.
    Unsupported(&'static [&'static str]),
    /// `RESULT FAIL`, and the serial log contains every one of these strings (deliberate host faults
    /// and VMCS defects).
    Fail(&'static [&'static str]),
}

/// The verdict of a guest check that passed. (One whose feature the CPU model lacks says
/// `skipped (not supported by this CPU)`; both models of the matrix that pass have every feature
/// the checks need.)
pub const PASS: &str = "pass";

/// The guest checks of issue 12 on Bochs `tigerlake` and `corei7_skylake_x`: both models have every
/// feature they need (APIC-register virtualization, virtual-interrupt delivery, VMFUNC EPTP
/// switching, EPT-violation #VE, PML with EPT A/D). MONITOR and MWAIT do not exit there (mini-hv
/// does not ask for those exits; only a processor that forces them makes them).
const ISSUE_12_CHECKS: &[(&str, &str)] = &[
    ("register-preservation", PASS),
    ("msr-areas", PASS),
    ("apic-virtualization", PASS),
    ("virtual-interrupt-delivery", PASS),
    ("vmfunc-eptp-switch", PASS),
    ("virtualization-exception", PASS),
    ("pml-log", PASS),
    ("monitor-mwait", SKIPPED_NO_EXITS),
];

/// The verdict of the `monitor-mwait` check where the negotiated controls leave MONITOR and MWAIT
/// without VM exits (or the processor lacks them).
pub const SKIPPED_NO_EXITS: &str = "skipped (MONITOR/MWAIT do not exit here)";

/// The verdict of a guest check whose feature the (masked) capabilities lack.
pub const SKIPPED_UNSUPPORTED: &str = "skipped (not supported by this CPU)";

/// The guest checks on Bochs `tigerlake` restricted to the Hyper-V profile
/// (`mini-hv.mask-caps=hyperv`): the wake-up from HLT through the local APIC timer (no
/// VMX-preemption timer), MONITOR and MWAIT completed by the hypervisor (their exiting is forced),
/// and the checks of features Hyper-V does not offer skipped.
const HYPERV_CHECKS: &[(&str, &str)] = &[
    ("hlt-preemption-timer", PASS),
    ("monitor-mwait", PASS),
    ("register-preservation", PASS),
    ("msr-areas", PASS),
    ("apic-virtualization", SKIPPED_UNSUPPORTED),
    ("virtual-interrupt-delivery", SKIPPED_UNSUPPORTED),
    ("vmfunc-eptp-switch", SKIPPED_UNSUPPORTED),
    ("virtualization-exception", SKIPPED_UNSUPPORTED),
    ("pml-log", SKIPPED_UNSUPPORTED),
];

/// The checks of L1's test guest (L2) when L0 runs mini-hv as L1 on Bochs `tigerlake`: every
/// check of the single-level suite passes but those whose features L0 does not offer L1
/// (MONITOR/MWAIT exiting is not forced; no VMX for L2). APIC virtualization and virtual-interrupt
/// delivery run on L1's own virtual-APIC and APIC-access pages; VMFUNC's EPTP switching,
/// EPT-violation #VE and PML pass: L0 emulates them for L1's processor.
const L1_CHECKS: &[(&str, &str)] = &[
    ("L1: cpuid-hypervisor-leaf", PASS),
    ("L1: msr-passthrough", PASS),
    ("L1: msr-emulated", PASS),
    ("L1: msr-forbidden-gp", PASS),
    ("L1: io-uart", PASS),
    ("L1: io-unclaimed-ports", PASS),
    ("L1: hlt-preemption-timer", PASS),
    ("L1: vmcall", PASS),
    ("L1: mmio-device", PASS),
    ("L1: xsetbv", PASS),
    ("L1: invd-wbinvd", PASS),
    ("L1: cr-access", PASS),
    ("L1: vmx-instructions-ud", PASS),
    ("L1: unbacked-memory", PASS),
    ("L1: cpuid-timing", PASS),
    ("L1: register-preservation", PASS),
    ("L1: msr-areas", PASS),
    ("L1: apic-virtualization", PASS),
    ("L1: virtual-interrupt-delivery", PASS),
    ("L1: vmfunc-eptp-switch", PASS),
    ("L1: virtualization-exception", PASS),
    ("L1: pml-log", PASS),
    ("L1: monitor-mwait", SKIPPED_NO_EXITS),
    (
        "L1: nested-vmx",
        "skipped (VMX not offered: mini-hv.nested=1)",
    ),
];

/// The verdict on guest check `name`'s result line (`mini-hv: <n> <name> <verdict>`), if any.
///
/// `name` may carry prefix words before the check's own name, as in `L1: msr-areas`: it then
/// names the line with those words before `mini-hv:` (`L1: mini-hv: <n> msr-areas <verdict>`,
/// the guest hypervisor L1's check line as L0 forwards it). A name without them matches only
/// lines that begin with `mini-hv:`.
fn guest_verdict(serial: &str, name: &str) -> Option<String> {
    let mut name_words: Vec<&str> = name.split_whitespace().collect();
    let check = name_words.pop()?;
    let prefix = name_words;
    serial.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if !prefix.iter().all(|&p| words.next() == Some(p)) {
            return None;
        }
        let (Some("mini-hv:"), Some(n), Some(got)) = (words.next(), words.next(), words.next())
        else {
            return None;
        };
        (n.parse::<u32>().is_ok() && got == check).then(|| words.collect::<Vec<_>>().join(" "))
    })
}

/// Where a case runs.
#[derive(Debug, Clone, Copy)]
pub enum On {
    /// Bochs with this CPU model, booting the GRUB ISO.
    Bochs(&'static str),
    /// QEMU without KVM: TCG emulates no VMX, whatever the host.
    QemuTcg,
}

/// A boot module of a case: on QEMU given to `-initrd`, on Bochs put on the case's GRUB ISO with a
/// `module` line.
#[derive(Debug, Clone, Copy)]
pub enum Module {
    /// A file the runner writes (a byte pattern) before the run: name, size in bytes, command-line arguments.
    Pattern(&'static str, usize, &'static str),
    /// The Linux guest's modules (kernel and initramfs from the cache `cargo xtask fetch-linux` fills, tagged
    /// as `cargo xtask run --guest linux --platform qemu` tags them); the case then gets
    /// [`linux::QEMU_MEMORY_MIB`](crate::linux::QEMU_MEMORY_MIB) of RAM.
    LinuxGuest,
    /// The kernel's own ELF (the file the case boots) as the guest hypervisor L1's module: its
    /// arguments are `l1` and then this, L1's own command line ([`kernel::l1_module_args`]), as
    /// `cargo xtask run --nested` boots it. mini-hv (L0) runs it as its guest under
    /// `mini-hv.nested=`; the case then gets
    /// [`kernel::L1_MACHINE_MEMORY_MIB`] of RAM.
    SelfAsL1(&'static str),
}

/// A case's boot module as the run gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootModule {
    /// The file.
    file: PathBuf,
    /// Its name on a Bochs case's GRUB ISO (under `/boot/`).
    iso_name: String,
    /// Its command line after the path.
    args: String,
}

/// The boot modules of `case` and the machine's RAM in MiB (128, or more for modules that need
/// it). `elf` is the kernel the case boots, `dir` where its [`Module::Pattern`] files go (written
/// by [`write_patterns`]), `linux_guest` the fetched Linux guest (needed for
/// [`Module::LinuxGuest`]).
fn boot_modules(
    case: &Case,
    elf: &Path,
    dir: &Path,
    linux_guest: Option<&crate::linux::LinuxGuest>,
) -> Result<(Vec<BootModule>, u32), String> {
    let mut modules = Vec::new();
    let mut memory_mib = 128;
    for module in case.modules {
        match *module {
            Module::Pattern(name, _, args) => modules.push(BootModule {
                file: dir.join(name),
                iso_name: name.to_string(),
                args: args.to_string(),
            }),
            Module::LinuxGuest => {
                let guest = linux_guest.ok_or("the Linux guest was not fetched")?;
                for (file, args) in crate::linux::qemu_modules(guest) {
                    let iso_name = file
                        .file_name()
                        .and_then(|n| n.to_str())
                        .ok_or_else(|| format!("{}: no UTF-8 file name", file.display()))?
                        .to_string();
                    modules.push(BootModule {
                        file,
                        iso_name,
                        args,
                    });
                }
                memory_mib = memory_mib.max(crate::linux::QEMU_MEMORY_MIB);
            }
            Module::SelfAsL1(l1_cmdline) => {
                modules.push(BootModule {
                    file: elf.to_path_buf(),
                    iso_name: kernel::L1_MODULE_NAME.to_string(),
                    args: kernel::l1_module_args(l1_cmdline),
                });
                memory_mib = memory_mib.max(kernel::L1_MACHINE_MEMORY_MIB);
            }
        }
    }
    Ok((modules, memory_mib))
}

/// Writes the [`Module::Pattern`] files of `case` into `dir` (a byte pattern of the given size).
fn write_patterns(case: &Case, dir: &Path) -> Result<(), String> {
    for module in case.modules {
        if let Module::Pattern(name, size, _) = *module {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let file = dir.join(name);
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(&file, bytes)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        }
    }
    Ok(())
}

/// What a Bochs case's GRUB ISO holds besides the kernel: its command line and its modules (GRUB
/// passes both from grub.cfg). Cases with equal keys share one ISO.
fn iso_key(case: &Case, modules: &[BootModule]) -> (String, Vec<BootModule>) {
    (kernel::with_cpus(case.cmdline, case.cpus), modules.to_vec())
}

/// One run of the example.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Short name (also the run's directory).
    pub name: &'static str,
    /// Platform.
    pub on: On,
    /// Kernel command line (`fault=...` injects a host fault).
    pub cmdline: &'static str,
    /// Logical processors (Bochs `cpu: count=N`); more than one adds `cpus=N` to the command line,
    /// as `cargo xtask run --cpus N` does.
    pub cpus: u32,
    /// Boot modules (QEMU `-initrd`; on Bochs `module` lines of the case's GRUB ISO).
    pub modules: &'static [Module],
    /// Expected ending.
    pub expect: Expect,
    /// Timeout in seconds.
    pub timeout_secs: u64,
}

/// The matrix. Adjust the expectations here.
///
/// Timeouts are several times the runs' durations on a loaded 2-core machine, and small enough that even if
/// every run hung, the runs (two at a time) would end within eight minutes.
///
/// The strings of the UNSUPPORTED cases are the feature names the hypervisor's negotiation error prints
/// (the `vmx-caps` names of the missing controls, quoted); a model that gains or loses a feature, or a change
/// in what the hypervisor requires, shows up here.
pub const CASES: &[Case] = &[
    Case {
        name: "bochs-tigerlake",
        on: On::Bochs("tigerlake"),
        cmdline: "",
        cpus: 1,
        modules: &[],
        expect: Expect::PassChecks(ISSUE_12_CHECKS),
        timeout_secs: 90,
    },
    Case {
        // The Hyper-V profile's capabilities on top of Bochs' (issue 17): no VMX-preemption
        // timer (the local APIC timer stands in), HLT/MWAIT/MONITOR exiting forced, no WBINVD
        // exiting, no APIC virtualization, VMFUNC, #VE or PML.
        name: "bochs-tigerlake-hyperv",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.mask-caps=hyperv",
        cpus: 1,
        modules: &[],
        expect: Expect::PassChecks(HYPERV_CHECKS),
        // About 6 s, like the unmasked run.
        timeout_secs: 60,
    },
    Case {
        // Nested VMX (issue 16): VMX offered to the test guest, whose nested-vmx check takes VMX
        // operation through mini-hv's emulation (every SDM answer to a misuse checked), runs its
        // own L2, gets L2's 18 CPUID exits reflected, lets L0 handle the exits it does not
        // intercept (RDMSR, OUT, HLT), has VMCS12's MSR lists processed, runs L2 under
        // EPT12 (EPT02 composed on demand, EPT12's violation reflected, INVEPT) and in real
        // mode under unrestricted guest; L0 uses VMCS shadowing for L1's
        // VMREAD/VMWRITE of the common fields. About 2 s.
        name: "bochs-tigerlake-nested",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=1",
        cpus: 1,
        modules: &[],
        expect: Expect::PassChecksAnd(
            &[
                ("cr-access", PASS),
                ("vmx-instructions-ud", PASS),
                ("nested-vmx", PASS),
            ],
            &[
                "VMCS shadowing on)",
                // L1's VMREAD/VMWRITE of the shadowed fields do not exit (340 without).
                "227 VMX instructions of L1 emulated, 39 VM entries of L2, 24 exits of L2 \
                 reflected to L1, 7 of L1's VMLAUNCH/VMRESUME ended in L1",
                // L2's RDMSR x2, OUT, HLT and its wake-up, MOV to CR0 of CD are L0's (L1 does
                // not intercept them); the #GP L0 raises for L2's last RDMSR is L1's; VMCS12's
                // MSR lists.
                "6 exits of L2 handled by L0 for L2 (L1 does not intercept them), 1 exceptions \
                 L0 raised in L2 reflected to L1 (L1 intercepts them), 8 MSR-list entries of \
                 VMCS12 processed",
                // VMCS02 built at the VMLAUNCH and after the MSR-list, CR0, EPT12, VPID12 (two)
                // and real-mode changes, kept for every other VMRESUME.
                "VMCS02 built 7 times, kept for 17 VMRESUMEs of L1",
                // L2's CPUID exits (their number follows the guest's code, so only their presence).
                "mini-hv: nested: L2 exit reason 10: ",
                // L2 under EPT12: EPT02 filled from L2's violations, EPT12's own reflected,
                // emptied at L1's INVEPT; VPID02 flushed for VPID12 1, L1's INVVPID, VPID12 2.
                "EPT02: 10 pages filled from L2's EPT violations, 1 exits EPT12 caused \
                 reflected to L1, emptied 1 times; VPID02 flushed 3 times",
                "shadow-VMCS synchronizations",
            ],
        ),
        timeout_secs: 15,
    },
    Case {
        // The same without VMCS shadowing: every VMREAD and VMWRITE of L1 exits.
        name: "bochs-tigerlake-nested-noshadow",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=noshadow",
        cpus: 1,
        modules: &[],
        expect: Expect::PassChecksAnd(
            &[("nested-vmx", PASS)],
            &[
                "VMCS shadowing off)",
                "340 VMX instructions of L1 emulated, 39 VM entries of L2, 24 exits of L2 \
                 reflected to L1, 7 of L1's VMLAUNCH/VMRESUME ended in L1",
                "VMCS02 built 7 times, kept for 17 VMRESUMEs of L1",
            ],
        ),
        timeout_secs: 15,
    },
    Case {
        // The nested-vmx check where the processor is restricted to what Hyper-V offers a nested
        // guest: no VMCS shadowing, no VMX-preemption timer (L0's APIC-timer fallback), HLT
        // exiting forced on L1 too (L2's HLT is then L1's, which completes it and resumes L2).
        name: "bochs-tigerlake-nested-hyperv",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.mask-caps=hyperv mini-hv.nested=1",
        cpus: 1,
        modules: &[],
        expect: Expect::PassChecksAnd(
            &[("nested-vmx", PASS), ("hlt-preemption-timer", PASS)],
            &[
                "VMCS shadowing off)",
                "1 exceptions L0 raised in L2 reflected to L1 (L1 intercepts them)",
                "mini-hv: nested: L2 exit reason 12: ",
            ],
        ),
        timeout_secs: 20,
    },
    Case {
        // Nested VMX with a real guest hypervisor (issue 16): L0 runs a second copy of its own ELF
        // (a module tagged `l1`, as `cargo xtask run --nested` boots it) as L1 in 64 MiB of the
        // machine's 256, and L1 runs its own test guest as L2 through L0's emulation of VMX: the
        // whole suite passes at L2 (the checks of features L0 does not offer L1 skipped, as on a
        // processor without them). L0 forwards L1's serial lines prefixed `L1: `; the checks named
        // `L1: ...` are L1's guest's. About 10 s.
        name: "bochs-tigerlake-nested-l1",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=1",
        cpus: 1,
        // L1's own command line is the argument (empty: L1's defaults).
        modules: &[Module::SelfAsL1("")],
        expect: Expect::PassChecksAnd(
            L1_CHECKS,
            &[
                // L1 reads the virtual capabilities L0 shows it (VMCS revision 4E535431H).
                "L1: Basic VMX information (IA32_VMX_BASIC): 0x01d810004e535431",
                "L1: mini-hv: VMX root operation entered",
                "L1: mini-hv: RESULT PASS",
                "mini-hv: nested: VMX offered to the guest (VMCS revision 0x4e535431",
                "VMCS shadowing on)",
                // Every exit of L2 is L1's (L1 intercepts all L0 would), every entry of L1's passes.
                "exits of L2 reflected to L1, 0 of L1's VMLAUNCH/VMRESUME ended in L1",
                "mini-hv: nested: 0 exits of L2 handled by L0 for L2",
                // VMCS02 kept across L1's VMRESUMEs, L1's VMX-preemption timer re-armed in it;
                // built again where L1 changed a control (its APIC checks change the TPR
                // threshold and turn virtual-interrupt delivery on and off).
                "mini-hv: nested: VMCS02 built 9 times, kept for ",
                // The TPR-below-threshold exit of L1's APIC check is L1's.
                "mini-hv: nested: L2 exit reason 43: 1",
                // Its bitmaps merged only where L0's leave a word to L1 (L0 passes 7 MSRs
                // through, intercepts every port).
                "mini-hv: nested: VMCS02's bitmaps: 5 of 512 MSR-bitmap words and 0 of 1024 \
                 I/O-bitmap words follow L1's",
                // L1 runs its guest with VPID: VPID02 flushed once, for L1's one VPID12.
                "VPID02 flushed 1 times",
                // L2's two VMFUNCs (EPTP switching) completed by L0 without an exit to L1, its
                // convertible EPT violation delivered as #VE, the pages L2 first wrote logged in
                // L1's page-modification log and the write with the log full reflected as one
                // page-modification log-full exit.
                "mini-hv: nested: for L1's processor: 2 EPTP switches (VMFUNC 0) of L2 \
                 completed, 1 EPT violations of L2 delivered as #VE, 9 pages logged in L1's \
                 page-modification log, 1 page-modification log-full exits",
                // Where L0's part of the round trip goes.
                "mini-hv: nested: L0's part of a round trip",
                "mini-hv: nested: CPUID round trip L2 measured",
                "mini-hv: nested: L1 ended with RESULT PASS (isa-debug-exit code 0x10)",
            ],
        ),
        timeout_secs: 45,
    },
    Case {
        // The same without VMCS shadowing: every VMREAD and VMWRITE of L1 exits to L0 (the nested
        // round trip without shadowing).
        name: "bochs-tigerlake-nested-l1-noshadow",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=noshadow",
        cpus: 1,
        modules: &[Module::SelfAsL1("")],
        expect: Expect::PassChecksAnd(
            L1_CHECKS,
            &[
                "VMCS shadowing off)",
                "mini-hv: nested: CPUID round trip L2 measured",
                "mini-hv: nested: L1 ended with RESULT PASS (isa-debug-exit code 0x10)",
            ],
        ),
        timeout_secs: 45,
    },
    Case {
        // mini-hv as L1 on the other model with VMCS shadowing, EPT, VPID and unrestricted guest.
        name: "bochs-skylake-x-nested-l1",
        on: On::Bochs("corei7_skylake_x"),
        cmdline: "mini-hv.nested=1",
        cpus: 1,
        modules: &[Module::SelfAsL1("")],
        expect: Expect::PassChecksAnd(
            L1_CHECKS,
            &[
                "VMCS shadowing on)",
                "mini-hv: nested: CPUID round trip L2 measured",
                "mini-hv: nested: L1 ended with RESULT PASS (isa-debug-exit code 0x10)",
            ],
        ),
        timeout_secs: 35,
    },
    Case {
        // Three hypervisors deep: L0 runs mini-hv as L1 with VMX offered to its test guest
        // (L1's command line mini-hv.nested=1), whose nested-vmx check makes it a hypervisor (L2)
        // running its own L3; every VMX instruction of L2 is emulated by L1, whose own are
        // emulated by L0. About 7 s.
        name: "bochs-tigerlake-nested-l1-nested",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=1",
        cpus: 1,
        modules: &[Module::SelfAsL1("mini-hv.nested=1")],
        expect: Expect::PassChecksAnd(
            &[
                ("L1: nested-vmx", PASS),
                ("L1: vmx-instructions-ud", PASS),
                ("L1: register-preservation", PASS),
                ("L1: msr-areas", PASS),
            ],
            &[
                "L1: mini-hv: nested: VMX offered to the guest",
                "L1: guest: nested CPUID round trip (L1 VMRESUME -> L2 CPUID -> L1): median ",
                "L1: mini-hv: RESULT PASS",
                "mini-hv: nested: L1 ended with RESULT PASS (isa-debug-exit code 0x10)",
            ],
        ),
        timeout_secs: 30,
    },
    Case {
        // L1 restricted to the Hyper-V profile (its own command line): without the VMX-preemption
        // timer it falls back to the local APIC timer, but the local APIC L0 shows it is globally
        // disabled (L0 models none), so L1 ends UNSUPPORTED, and that is L0's result.
        name: "bochs-tigerlake-nested-l1-masked",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=1",
        cpus: 1,
        modules: &[Module::SelfAsL1("mini-hv.mask-caps=hyperv")],
        expect: Expect::Unsupported(&[
            "L1: mini-hv: the local APIC cannot serve as the timer (IA32_APIC_BASE 0xfee00100)",
            "mini-hv: nested: L1 ended with RESULT UNSUPPORTED (isa-debug-exit code 0x12)",
        ]),
        timeout_secs: 20,
    },
    Case {
        // A hostile L1: its VMLAUNCH of a VMCS with more CR3-target values than the (virtual)
        // processor supports gets VMfailValid(7) from L0's emulation, as from a processor, and L1's
        // failure is L0's.
        name: "bochs-tigerlake-nested-l1-defect",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.nested=1",
        cpus: 1,
        modules: &[Module::SelfAsL1("mini-hv.defect=control")],
        expect: Expect::Fail(&[
            "L1: mini-hv: VM entry failed: VMfailValid: VM-instruction error 7",
            "mini-hv: nested: L1 ended with RESULT FAIL (isa-debug-exit code 0x11)",
        ]),
        timeout_secs: 20,
    },
    Case {
        // mini-hv as L1 where the processor has no VMX-preemption timer (the Hyper-V profile):
        // L0 models no local APIC timer for L1, so L1 would have no time source; L0 says so
        // before it starts L1.
        name: "bochs-tigerlake-nested-l1-hyperv",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.mask-caps=hyperv mini-hv.nested=1",
        cpus: 1,
        modules: &[Module::SelfAsL1("")],
        expect: Expect::Unsupported(&[
            "mini-hv: unsupported: L1's kernel needs the VMX-preemption timer",
        ]),
        timeout_secs: 20,
    },
    Case {
        // Two processors (issue 15): mini-hv starts CPU 1 with INIT-SIPI-SIPI, enters and leaves
        // VMX operation on both (each its own VMXON region), then runs the suite on CPU 0 while
        // CPU 1 runs its own vCPU, then the ept-shootdown check. About 8 s.
        name: "bochs-tigerlake-2cpu",
        on: On::Bochs("tigerlake"),
        cmdline: "",
        cpus: 2,
        modules: &[],
        expect: Expect::PassChecksAnd(
            ISSUE_12_CHECKS,
            &[
                "mini-hv: VMX root operation entered on CPUs {0, 1}, each with its own VMXON region",
                "mini-hv: VMX root operation left on all 2 CPUs",
                "mini-hv: CPU 1's vCPU started while CPU 0's guest ran",
                "mini-hv: CPU 1 vCPU exits by reason: 10:500 18:1 30:500 31:500 32:500",
                "mini-hv: CPU 1 vCPU (CPUID, MSR, I/O, VMCALL; 500 rounds, own APIC ID seen 500 \
                 times, another 0 times): pass",
                // The ept-shootdown check: one INVEPT per CPU for the one change, no read of the
                // page after the change returned.
                "mini-hv: ept-shootdown: 1 change, INVEPT on CPU 0: 1, CPU 1: 1 (2 through \
                 ept::EptShootdown); reads after it returned: ",
                "(stale: 0); CPU 1's next access: an EPT violation at the page",
            ],
        ),
        timeout_secs: 40,
    },
    Case {
        // The ept-shootdown check with the INVEPT on CPU 0 only: CPU 1 keeps reading the
        // unmapped page through its stale translation until its next VM exit, and the check
        // says so.
        name: "bochs-smp-no-shootdown",
        on: On::Bochs("tigerlake"),
        cmdline: "smp-fault=no-shootdown",
        cpus: 2,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: ept-shootdown: 1 change, INVEPT on CPU 0: 1, CPU 1: 0 (1 through \
             ept::EptShootdown)",
            "after the change returned (stale translation)",
        ]),
        timeout_secs: 40,
    },
    Case {
        // CPU 1 gets INIT but no Start-up IPI: it never answers, and the run says so (no hang).
        name: "bochs-smp-no-answer",
        on: On::Bochs("tigerlake"),
        cmdline: "smp-fault=no-sipi",
        cpus: 2,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: CPU 1 (local APIC ID 1) did not start: no answer to INIT-SIPI-SIPI",
        ]),
        timeout_secs: 20,
    },
    Case {
        // CPU 1 cannot enter VMX operation (no VMXON region): the run stops naming it, after CPU 0
        // has left VMX operation again.
        name: "bochs-smp-vmxon-fails",
        on: On::Bochs("tigerlake"),
        cmdline: "smp-fault=vmxon-cpu1",
        cpus: 2,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: CPU 1 could not enter VMX operation: no VMXON region for this processor \
             (CPUs 0..1 left it again)",
        ]),
        timeout_secs: 15,
    },
    Case {
        name: "bochs-skylake-x",
        on: On::Bochs("corei7_skylake_x"),
        cmdline: "",
        cpus: 1,
        modules: &[],
        expect: Expect::PassChecks(ISSUE_12_CHECKS),
        timeout_secs: 90,
    },
    Case {
        name: "bochs-lynnfield",
        on: On::Bochs("corei5_lynnfield_750"),
        cmdline: "",
        cpus: 1,
        modules: &[],
        // EPT (2M) and VPID, but no unrestricted guest.
        expect: Expect::Unsupported(&["required controls not supported", "\"unrestricted guest\""]),
        timeout_secs: 30,
    },
    Case {
        name: "bochs-penryn",
        on: On::Bochs("core2_penryn_t9600"),
        cmdline: "",
        cpus: 1,
        modules: &[],
        // No EPT, no VPID, no unrestricted guest, no preemption timer (optional: the APIC timer
        // stands in), no EFER load/save.
        expect: Expect::Unsupported(&[
            "required controls not supported",
            "\"enable EPT\"",
            "\"unrestricted guest\"",
            "\"load IA32_EFER\"",
        ]),
        timeout_secs: 30,
    },
    Case {
        // The differential test of the software VM-entry checker against Bochs (`cargo xtask
        // entry-diff`): RESULT PASS only without unexcused disagreements. 5,000 cases: the
        // event-injection grid (every 4th case, 384 combinations) is covered more than three
        // times. About 10 s of cases (2 ms each) plus 5 s of boot.
        name: "bochs-entry-diff",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.entry-diff=5000 mini-hv.entry-diff-seed=1",
        cpus: 1,
        modules: &[],
        expect: Expect::Pass,
        timeout_secs: 50,
    },
    Case {
        // A deliberate guest-state defect (TR not busy): VMLAUNCH fails with exit reason 33, which
        // mini-hv decodes and dumps, and the software checker names the rule before and after.
        // About 5 s.
        name: "bochs-defect-guest-state",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.defect=guest-state",
        cpus: 1,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: breaking the VMCS on purpose: GuestState",
            "mini-hv: software VM-entry check predicts: VM-entry failure, exit reason 0x80000021 (basic 33)",
            "mini-hv: VM entry failed: VM-entry failure due to invalid guest state (33)",
            "--- vmcs dump begin ---",
            "GUEST_TR_ACCESS_RIGHTS",
            "mini-hv: the software VM-entry checker's diagnosis of the failed VM entry:",
            "mini-hv: software VM-entry check: H29 ",
            "mini-hv: HOST_RSP/HOST_RIP written 1 time(s) for 0 VM exits",
            "mini-hv: the guest never ran",
        ]),
        timeout_secs: 20,
    },
    Case {
        // A deliberate control-field defect (more CR3-target values than IA32_VMX_MISC allows):
        // VMLAUNCH fails with VMfailValid, VM-instruction error 7. About 5 s.
        name: "bochs-defect-control",
        on: On::Bochs("tigerlake"),
        cmdline: "mini-hv.defect=control",
        cpus: 1,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: breaking the VMCS on purpose: Control",
            "mini-hv: software VM-entry check predicts: VMfailValid, VM-instruction error 7",
            "mini-hv: VM entry failed: VMfailValid: VM-instruction error 7: VM entry with invalid \
             control field(s)",
            "mini-hv: the software VM-entry checker's diagnosis of the failed VM entry:",
            "mini-hv: software VM-entry check: A7 ",
            "CR3_TARGET_COUNT",
            "mini-hv: HOST_RSP/HOST_RIP written 1 time(s) for 0 VM exits",
            "mini-hv: the guest never ran",
        ]),
        timeout_secs: 20,
    },
    Case {
        name: "qemu-tcg",
        on: On::QemuTcg,
        cmdline: "",
        cpus: 1,
        modules: &[],
        expect: Expect::Unsupported(&["mini-hv: VMX not supported by this CPU (CPUID.1:ECX.VMX"]),
        timeout_secs: 20,
    },
    Case {
        name: "qemu-boot-modules",
        on: On::QemuTcg,
        cmdline: "",
        cpus: 1,
        modules: &[
            Module::Pattern("module-a", 12 * 1024, "alpha beta"),
            Module::Pattern("module-b", 100_000, ""),
        ],
        // The banner lists each module with its size and command line (the boot-module plumbing the Linux
        // guest needs), and the frame allocator keeps out of them (its self-test checks).
        expect: Expect::Unsupported(&["(12 KiB) ", "module-a alpha beta", "(97 KiB) ", "module-b"]),
        timeout_secs: 20,
    },
    Case {
        // `cargo xtask run --guest linux --platform qemu` without VMX: mini-hv lists the kernel and initramfs
        // modules QEMU's Multiboot loader gave it, with the Linux command line whose comma xtask doubled on
        // QEMU's command line, then ends in the clean no-VMX UNSUPPORTED. Under 1 s (with the cached guest).
        name: "qemu-linux-modules",
        on: On::QemuTcg,
        cmdline: crate::linux::HV_CMDLINE,
        cpus: 1,
        modules: &[Module::LinuxGuest],
        expect: Expect::Unsupported(&[
            "linux-cache/vmlinuz kernel console=ttyS0,115200 cryptomgr.notests=1 ",
            "linux-cache/initramfs.cpio.gz initrd",
            "mini-hv: VMX not supported by this CPU (CPUID.1:ECX.VMX",
        ]),
        timeout_secs: 20,
    },
    Case {
        name: "qemu-host-page-fault",
        on: On::QemuTcg,
        cmdline: "fault=pf",
        cpus: 1,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: HOST EXCEPTION vector 14 (#PF page fault)",
            "CR2 0x0000004000000000",
            "RIP 0x",
            "R15 0x",
            "mini-hv: RESULT FAIL (host exception)",
        ]),
        timeout_secs: 20,
    },
    Case {
        name: "qemu-host-stack-overflow",
        on: On::QemuTcg,
        cmdline: "fault=stack",
        cpus: 1,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: HOST EXCEPTION vector 8 (#DF double fault)",
            "kernel stack overflow: CR2 is in the guard page",
            "mini-hv: RESULT FAIL (host exception)",
        ]),
        timeout_secs: 20,
    },
    Case {
        name: "qemu-host-panic",
        on: On::QemuTcg,
        cmdline: "fault=panic",
        cpus: 1,
        modules: &[],
        expect: Expect::Fail(&[
            "mini-hv: PANIC at examples/mini-hv/src/main.rs:",
            "fault injection requested on the command line",
            "mini-hv: RESULT FAIL (panic)",
        ]),
        timeout_secs: 20,
    },
];

/// Runs the host checks (fmt, clippy, the builds for [`crate::targets`], tests with doctests,
/// docs), then every case of [`CASES`].
pub fn run_all() -> Result<(), String> {
    let start = Instant::now();
    // Emulators first: a machine that lacks them should say so before minutes of host checks.
    deps::ensure(&deps::BOCHS.iter().chain(deps::QEMU).collect::<Vec<_>>())?;
    crate::cargo(&["fmt", "--all", "--", "--check"], &[])?;
    // The freestanding kernel is checked on its own: built together with the rest of the workspace, its
    // dependencies would get the features (e.g. `std`) other members enable, and `std`'s panic handler
    // would clash with the kernel's.
    crate::cargo(
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "mini-hv",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    crate::cargo(
        &[
            "clippy",
            "-p",
            "mini-hv",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The library crates for bare metal and UEFI, the tool-side parts for another
    // architecture.
    crate::targets::check_all()?;
    crate::cargo(
        &[
            "test",
            "--workspace",
            "--exclude",
            "mini-hv",
            "--all-features",
        ],
        &[],
    )?;
    // The kernel's pure logic (its `mini_hv_logic` library) on the host; the kernel's link arguments
    // apply to its binary only (`examples/mini-hv/build.rs`).
    crate::cargo(&["test", "-p", "mini-hv", "--lib"], &[])?;
    let rustdoc = [("RUSTDOCFLAGS", "-D warnings")];
    crate::cargo(
        &[
            "doc",
            "--workspace",
            "--exclude",
            "mini-hv",
            "--no-deps",
            "--all-features",
        ],
        &rustdoc,
    )?;
    crate::cargo(&["doc", "-p", "mini-hv", "--no-deps"], &rustdoc)?;
    let host_time = start.elapsed();
    eprintln!(
        "xtask test: host checks passed in {:.1} s",
        host_time.as_secs_f64()
    );

    let examples_start = Instant::now();
    run_cases(CASES)?;
    crate::linux::test_step()?;
    eprintln!(
        "xtask test: all passed (host checks {:.1} s, example runs {:.1} s, total {:.1} s)",
        host_time.as_secs_f64(),
        examples_start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The kernel built for the soft-float target ([`kernel::SOFT_FLOAT_TARGET`]) on Bochs `tigerlake`:
/// its trampoline switches no x87/SSE state (the host's code has none), and the guest's
/// register-preservation check (every GPR, XMM0-15, MXCSR and CR2 across 1,002 VM exits) must pass
/// as with the eager switch of the default build. Run by [`run_cases`] after the matrix, whenever
/// the matrix has Bochs cases.
pub const SOFT_FLOAT_CASE: Case = Case {
    name: "bochs-tigerlake-soft-float",
    on: On::Bochs("tigerlake"),
    cmdline: "",
    cpus: 1,
    modules: &[],
    expect: Expect::PassChecks(ISSUE_12_CHECKS),
    timeout_secs: 90,
};

/// Builds the kernel and the ISOs the cases need, then runs the cases two at a time.
pub fn run_cases(cases: &[Case]) -> Result<(), String> {
    let needs_bochs = cases.iter().any(|c| matches!(c.on, On::Bochs(_)));
    let needs_qemu = cases.iter().any(|c| matches!(c.on, On::QemuTcg));
    let mut requirements: Vec<&deps::Requirement> = Vec::new();
    if needs_bochs {
        requirements.extend(deps::BOCHS);
    }
    if needs_qemu {
        requirements.extend(deps::QEMU);
    }
    deps::ensure(&requirements)?;

    let elf = kernel::build()?;
    // The Linux guest's files, fetched (or taken from the cache) once for every case that boots them.
    let linux_guest = if cases
        .iter()
        .any(|c| c.modules.iter().any(|m| matches!(m, Module::LinuxGuest)))
    {
        Some(crate::linux::fetch()?)
    } else {
        None
    };
    let base = crate::target_dir().join("mini-hv").join("test");
    // Each case's modules (pattern files written) and RAM, before any run.
    let mut prepared = Vec::with_capacity(cases.len());
    for case in cases {
        let dir = base.join(format!("{}-modules", case.name));
        write_patterns(case, &dir)?;
        let (modules, memory_mib) = boot_modules(case, &elf, &dir, linux_guest.as_ref())?;
        prepared.push((case, modules, memory_mib));
    }
    // One ISO per distinct command line and module set.
    let mut isos: Vec<((String, Vec<BootModule>), PathBuf)> = Vec::new();
    for (case, modules, _) in prepared.iter().filter(|p| matches!(p.0.on, On::Bochs(_))) {
        let key = iso_key(case, modules);
        if !isos.iter().any(|(k, _)| *k == key) {
            let dir = base.join(format!("iso-{}", isos.len()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let iso_modules: Vec<kernel::IsoModule<'_>> = modules
                .iter()
                .map(|m| kernel::IsoModule {
                    file: &m.file,
                    name: &m.iso_name,
                    args: &m.args,
                })
                .collect();
            let iso = kernel::make_iso(&dir, &elf, &key.0, &iso_modules)?;
            isos.push((key, iso));
        }
    }

    // Longest first, two at a time (the machines have two cores; runs share nothing).
    let mut order: Vec<&(&Case, Vec<BootModule>, u32)> = prepared.iter().collect();
    order.sort_by_key(|(c, _, _)| std::cmp::Reverse(c.timeout_secs));
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(case, modules, memory_mib)) = order.get(i) else {
                        break;
                    };
                    if crate::proc::interrupted() {
                        break;
                    }
                    let key = iso_key(case, modules);
                    let iso = isos
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, p)| p.as_path());
                    let outcome = run_case(case, &elf, iso, &base, modules, *memory_mib);
                    let mut failures = failures
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    match outcome {
                        Ok(line) => eprintln!("xtask test: ok   {:<24} {line}", case.name),
                        Err(report) => {
                            eprintln!("xtask test: FAIL {:<24} {report}", case.name);
                            failures.push(case.name.to_string());
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if crate::proc::interrupted() {
        return Err("interrupted".into());
    }
    if needs_bochs {
        let case = &SOFT_FLOAT_CASE;
        let outcome = kernel::build_for(kernel::SOFT_FLOAT_TARGET).and_then(|soft| {
            let dir = base.join("iso-soft-float");
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let iso = kernel::make_iso(&dir, &soft, case.cmdline, &[])?;
            run_case(case, &soft, Some(&iso), &base, &[], 128)
        });
        match outcome {
            Ok(line) => eprintln!("xtask test: ok   {:<24} {line}", case.name),
            Err(report) => {
                eprintln!("xtask test: FAIL {:<24} {report}", case.name);
                failures.push(case.name.to_string());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("example runs failed: {}", failures.join(", ")))
    }
}

/// Checks a run's result against the expectation; `Ok` carries the summary.
fn judge(expect: Expect, kind: ResultKind, why: &str, serial: &str) -> Result<String, String> {
    let (wanted, strings): (ResultKind, &[&str]) = match expect {
        Expect::Pass | Expect::PassChecks(_) => (ResultKind::Pass, &[]),
        Expect::PassChecksAnd(_, s) => (ResultKind::Pass, s),
        Expect::Unsupported(s) => (ResultKind::Unsupported, s),
        Expect::Fail(s) => (ResultKind::Fail, s),
    };
    if kind != wanted {
        return Err(format!("expected RESULT {wanted}, got RESULT {kind} {why}"));
    }
    if let Expect::PassChecks(checks) | Expect::PassChecksAnd(checks, _) = expect {
        for &(name, want) in checks {
            match guest_verdict(serial, name) {
                Some(got) if got == want => {}
                Some(got) => {
                    return Err(format!(
                        "RESULT {kind} as expected, but guest check {name} is {got:?}, not {want:?}"
                    ));
                }
                None => {
                    return Err(format!(
                        "RESULT {kind} as expected, but the serial log has no result line for guest check {name}"
                    ));
                }
            }
        }
    }
    let missing: Vec<&&str> = strings.iter().filter(|s| !serial.contains(**s)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "RESULT {kind} as expected, but the serial log lacks {missing:?}"
        ));
    }
    Ok(format!("RESULT {kind}{}", crate::with_space(why)))
}

/// Runs one case with its [`boot_modules`] (`iso`: the Bochs case's GRUB ISO, which holds them);
/// `Ok` carries a one-line summary, `Err` the full failure report (with the serial log).
fn run_case(
    case: &Case,
    elf: &Path,
    iso: Option<&Path>,
    base: &Path,
    modules: &[BootModule],
    memory_mib: u32,
) -> Result<String, String> {
    let platform = match case.on {
        On::Bochs(model) => Platform::Bochs {
            model: model.to_string(),
        },
        On::QemuTcg => Platform::Qemu {
            kvm: false,
            cpu: None,
        },
    };
    // On Bochs the modules are on the ISO already.
    let qemu_modules: Vec<(PathBuf, String)> = match case.on {
        On::QemuTcg => modules
            .iter()
            .map(|m| (m.file.clone(), m.args.clone()))
            .collect(),
        On::Bochs(_) => Vec::new(),
    };
    let spec = RunSpec {
        platform,
        dir: base.join(case.name),
        kernel: elf,
        iso,
        cmdline: &kernel::with_cpus(case.cmdline, case.cpus),
        qemu_modules: &qemu_modules,
        memory_mib,
        cpus: case.cpus,
        bochs_ips: 4_000_000,
        bochs_ignore_bad_msrs: false,
        timeout: Duration::from_secs(case.timeout_secs),
        echo: false,
        markers: &[],
    };
    let report = emu::run(&spec).map_err(|e| format!("could not run: {e}"))?;
    let judged = report
        .verdict()
        .and_then(|(kind, why)| judge(case.expect, kind, &why, &report.serial));
    match judged {
        Ok(summary) => Ok(format!(
            "{summary} ({}, {:.1} s)",
            report.platform,
            report.elapsed.as_secs_f64()
        )),
        Err(why) => Err(format!(
            "on {}: {why}\n  emulator: {}\n  files: {}\n---- serial log ----\n{}\n---- last lines of {} ----\n{}\n----",
            report.platform,
            report.status_text,
            report.dir.display(),
            report.serial.trim_end(),
            report.emulator_log.display(),
            report.emulator_log_tail(15),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIPPED: &str = SKIPPED_UNSUPPORTED;

    #[test]
    fn judge_compares_kind_and_strings() {
        let serial = "mini-hv: missing: unrestricted guest, EPT\nmini-hv: RESULT UNSUPPORTED\n";
        assert!(
            judge(
                Expect::Unsupported(&["unrestricted guest"]),
                ResultKind::Unsupported,
                "",
                serial
            )
            .is_ok()
        );
        let e = judge(
            Expect::Unsupported(&["VPID"]),
            ResultKind::Unsupported,
            "",
            serial,
        )
        .unwrap_err();
        assert!(e.contains("VPID"), "{e}");
        assert!(judge(Expect::Pass, ResultKind::Unsupported, "", serial).is_err());
        assert!(judge(Expect::Pass, ResultKind::Pass, "", "").is_ok());
        assert!(judge(Expect::Fail(&[]), ResultKind::Pass, "", "").is_err());
        let checks = Expect::PassChecks(&[("msr-areas", PASS), ("pml-log", SKIPPED)]);
        let good = "mini-hv:   16 msr-areas                pass\n\
                    mini-hv:   22 pml-log                  skipped (not supported by this CPU)\n";
        assert!(judge(checks, ResultKind::Pass, "", good).is_ok());
        let skipped_wrongly = good.replace(
            "16 msr-areas                pass",
            "16 msr-areas skipped (not supported by this CPU)",
        );
        assert!(judge(checks, ResultKind::Pass, "", &skipped_wrongly).is_err());
        let failed = good.replace("skipped (not supported by this CPU)", "FAIL");
        assert!(judge(checks, ResultKind::Pass, "", &failed).is_err());
        assert!(
            judge(
                checks,
                ResultKind::Pass,
                "",
                "mini-hv:   16 msr-areas pass\n"
            )
            .is_err()
        );
    }

    #[test]
    fn all_runs_hanging_still_end_within_seven_and_a_half_minutes() {
        // The schedule `run_cases` uses: longest first, each run to the first free of two workers.
        let mut timeouts: Vec<u64> = CASES.iter().map(|c| c.timeout_secs).collect();
        timeouts.sort_by_key(|t| std::cmp::Reverse(*t));
        let mut workers = [0u64; 2];
        for t in timeouts {
            let least = if workers[0] <= workers[1] { 0 } else { 1 };
            workers[least] += t;
        }
        // Seven and a half minutes of the 20 the whole `cargo xtask test` may take on a 2-core
        // machine (the host checks take about four, the Linux step about two).
        assert!(workers.iter().all(|&w| w <= 450), "{workers:?}");
    }

    #[test]
    fn the_linux_modules_case_expects_what_xtask_passes() {
        let case = CASES
            .iter()
            .find(|c| c.modules.iter().any(|m| matches!(m, Module::LinuxGuest)))
            .expect("a QEMU case boots the Linux guest's modules");
        let Expect::Unsupported(strings) = case.expect else {
            panic!("{}: TCG has no VMX", case.name);
        };
        assert!(crate::linux::cache_dir().ends_with("linux-cache"));
        let kernel_line = strings[0]
            .strip_prefix("linux-cache/vmlinuz kernel ")
            .expect("the kernel module's line");
        assert!(
            crate::linux::KERNEL_CMDLINE.starts_with(kernel_line),
            "{kernel_line:?}"
        );
        assert!(
            kernel_line.contains(','),
            "the case proves the comma escaping"
        );
        assert_eq!(strings[1], "linux-cache/initramfs.cpio.gz initrd");
    }

    fn case(name: &str) -> &'static Case {
        CASES
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"))
    }

    #[test]
    fn bochs_isos_are_keyed_by_modules_too() {
        let elf = Path::new("/t/release/mini-hv");
        let dir = Path::new("/t/modules");
        let l1 = case("bochs-tigerlake-nested-l1");
        let (modules, memory_mib) = boot_modules(l1, elf, dir, None).unwrap();
        // The booted ELF itself, as `module /boot/mini-hv-l1 l1`, in 256 MiB.
        assert_eq!(
            modules,
            [BootModule {
                file: elf.to_path_buf(),
                iso_name: "mini-hv-l1".into(),
                args: "l1".into(),
            }]
        );
        assert_eq!(memory_mib, 256);
        // The same command line without the module: another ISO.
        let plain = case("bochs-tigerlake-nested");
        assert_eq!(plain.cmdline, l1.cmdline);
        let (plain_modules, plain_memory) = boot_modules(plain, elf, dir, None).unwrap();
        assert!(plain_modules.is_empty());
        assert_eq!(plain_memory, 128);
        assert_ne!(iso_key(l1, &modules), iso_key(plain, &plain_modules));
        // Pattern modules keep their file under the case's directory and their arguments.
        let patterns = case("qemu-boot-modules");
        let (modules, _) = boot_modules(patterns, elf, dir, None).unwrap();
        assert_eq!(modules[0].file, dir.join("module-a"));
        assert_eq!(modules[0].args, "alpha beta");
        assert_eq!(modules[1].iso_name, "module-b");
        // The Linux guest's modules need the fetched guest.
        assert!(boot_modules(case("qemu-linux-modules"), elf, dir, None).is_err());
    }

    #[test]
    fn l1_cases_run_the_l1_check_lines() {
        // Every case that boots L1 offers L1 VMX (L0 runs it only under mini-hv.nested=) and, where
        // L1 runs, checks some of L1's own results.
        for c in CASES
            .iter()
            .filter(|c| c.modules.iter().any(|m| matches!(m, Module::SelfAsL1(_))))
        {
            assert!(
                c.cmdline
                    .split_whitespace()
                    .any(|w| w.starts_with("mini-hv.nested=")),
                "{}",
                c.name
            );
            let (Expect::PassChecks(checks) | Expect::PassChecksAnd(checks, _)) = c.expect else {
                assert!(
                    matches!(c.expect, Expect::Unsupported(_) | Expect::Fail(_)),
                    "{}: L1 runs but its checks are not expected",
                    c.name
                );
                continue;
            };
            assert!(
                checks.iter().any(|(name, _)| name.starts_with("L1: ")),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn guest_verdicts_keep_l0_and_l1_lines_apart() {
        let serial = "mini-hv:    0 cpuid-hypervisor-leaf    pass\n\
                      L1: mini-hv:    0 cpuid-hypervisor-leaf    FAIL (leaf 0x40000000)\n\
                      L1: mini-hv:   16 msr-areas                pass\r\n\
                      L1: mini-hv:   20 nested-vmx               skipped (VMX not offered: mini-hv.nested=1)\n\
                      mini-hv: nested: L1 ended with RESULT PASS\n";
        // Plain names: only unprefixed lines.
        assert_eq!(
            guest_verdict(serial, "cpuid-hypervisor-leaf").as_deref(),
            Some("pass")
        );
        assert_eq!(guest_verdict(serial, "msr-areas"), None);
        // `L1: ` names: only L1's forwarded lines.
        assert_eq!(
            guest_verdict(serial, "L1: cpuid-hypervisor-leaf").as_deref(),
            Some("FAIL (leaf 0x40000000)")
        );
        assert_eq!(
            guest_verdict(serial, "L1: msr-areas").as_deref(),
            Some("pass")
        );
        assert_eq!(
            guest_verdict(serial, "L1: nested-vmx").as_deref(),
            Some("skipped (VMX not offered: mini-hv.nested=1)")
        );
        assert_eq!(guest_verdict(serial, "L1: register-preservation"), None);
        // Not a check line (no number), and a prefix that is not L1's.
        assert_eq!(guest_verdict(serial, "L1: nested:"), None);
        assert_eq!(guest_verdict(serial, "L2: msr-areas"), None);
        assert_eq!(guest_verdict(serial, ""), None);
        // Through judge: L1's failed check fails the case although L0's passed.
        let expect = Expect::PassChecks(&[
            ("cpuid-hypervisor-leaf", PASS),
            ("L1: cpuid-hypervisor-leaf", PASS),
        ]);
        let e = judge(expect, ResultKind::Pass, "", serial).unwrap_err();
        assert!(e.contains("L1: cpuid-hypervisor-leaf"), "{e}");
        let fixed = serial.replace("FAIL (leaf 0x40000000)", "pass");
        assert!(judge(expect, ResultKind::Pass, "", &fixed).is_ok());
    }

    #[test]
    fn case_names_are_unique_and_usable_as_directories() {
        for (i, a) in CASES.iter().enumerate() {
            assert!(
                a.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{}",
                a.name
            );
            assert!(
                CASES[i + 1..].iter().all(|b| b.name != a.name),
                "duplicate {}",
                a.name
            );
        }
    }
}
