//! Builds the in-kernel probe program (`bpf/periscope.bpf.c`) with clang; the object is
//! embedded in the library. clang and the libbpf headers come from Debian's `clang` and
//! `libbpf-dev` packages (the README's set-up command installs them).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/periscope.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("periscope.bpf.o");
    let clang = std::env::var("PERISCOPE_CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args([
            "-target", "bpf", "-O2", "-g", "-mcpu=v3", "-Wall", "-Werror",
        ])
        // `asm/ptrace.h` (struct pt_regs) lives under the multiarch include directory.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to build {src} ({s})"),
        Err(e) => panic!(
            "cannot run {clang} to build the BPF program ({e}): install Debian's clang and libbpf-dev (apt-get install clang libbpf-dev)"
        ),
    }
}
