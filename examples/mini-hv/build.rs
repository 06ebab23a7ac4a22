//! Link arguments for the freestanding kernel (see `linker.ld`).
//!
//! They live here rather than in `.cargo/config.toml` because any `RUSTFLAGS` in the environment replaces the
//! config's rustflags; link arguments given by a build script always apply.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    // The soft-float target links with rust-lld directly (no C compiler driver in between).
    if std::env::var("TARGET").is_ok_and(|target| target.ends_with("-none")) {
        for arg in [
            "-nostdlib",
            "-static",
            "--no-pie",
            "-zmax-page-size=0x1000",
            "--build-id=none",
            "--gc-sections",
            "-n",
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rerun-if-changed=linker.ld");
        println!("cargo:rerun-if-changed=build.rs");
        return;
    }
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
