//! Link arguments for the freestanding kernel (see `linker.ld`).
//!
//! They live here rather than in `.cargo/config.toml` because any `RUSTFLAGS` in the environment replaces the
//! config's rustflags; link arguments given by a build script always apply.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,--build-id=none",
        "-Wl,--gc-sections",
        "-Wl,-n",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
