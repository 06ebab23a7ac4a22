//! The hypervisor: called by `main` once the host is up.

/// How the hypervisor's run ended; `main` prints the matching `mini-hv: RESULT ...` line and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code, reason = "Pass is produced once a guest runs")]
pub enum Outcome {
    /// Every check passed.
    Pass,
    /// Something failed (the reason was printed).
    Fail,
    /// The CPU lacks VMX or a required VMX feature (the missing features were printed).
    Unsupported,
}

/// CPUID.1:ECX bit 5: VMX (SDM Vol. 3C, 24.6 "Discovering Support for VMX").
const CPUID_1_ECX_VMX: u32 = 1 << 5;

/// Runs the hypervisor.
pub fn run() -> Outcome {
    let ecx = crate::arch::cpuid(1, 0).ecx;
    if ecx & CPUID_1_ECX_VMX == 0 {
        crate::println!("mini-hv: VMX not supported by this CPU (CPUID.1:ECX.VMX = 0)");
        return Outcome::Unsupported;
    }
    crate::println!(
        "mini-hv: VMX supported (CPUID.1:ECX.VMX = 1), but this build has no hypervisor to run"
    );
    Outcome::Unsupported
}
