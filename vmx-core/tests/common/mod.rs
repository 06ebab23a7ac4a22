//! Shared by the integration tests: capabilities from the MSR dumps of Bochs' CPU models.

use vmx_caps::{MsrSnapshot, VmxCapabilities};

/// The capabilities read from `vmx-caps/testdata/<name>.msr`.
pub fn caps(name: &str) -> VmxCapabilities {
    let path = format!(
        "{}/../vmx-caps/testdata/{name}.msr",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    VmxCapabilities::read(&mut MsrSnapshot::parse(&text).unwrap()).unwrap()
}
