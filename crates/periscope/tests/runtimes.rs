//! The runtime seam as a user meets it: the dispatcher picks a process's runtime from what it
//! runs, `--runtime` overrides it, and a runtime this build lacks is named, never tried late.

mod common;

use common::*;
use std::path::Path;

#[test]
fn runtime_overrides_are_checked_and_native_code_is_the_default() {
    let mut t = Target::start(&ledger_debug(), &["2000", "1"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&["functions", &pid, "settle", "--runtime", "native"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ledger::settle"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let detected = run_periscope(&["functions", &pid, "settle"]);
    assert!(detected.status.success(), "{}", stderr(&detected));
    assert_eq!(
        String::from_utf8_lossy(&detected.stdout),
        String::from_utf8_lossy(&out.stdout),
        "native is what the dispatcher picks"
    );
    assert!(
        !stderr(&detected).contains("runtime"),
        "{}",
        stderr(&detected)
    );

    let jvm = run_periscope(&["functions", &pid, "settle", "--runtime", "jvm"]);
    assert_eq!(jvm.status.code(), Some(1), "{}", stderr(&jvm));
    assert!(
        stderr(&jvm).contains(
            "the jvm runtime is not available in this build of Periscope (runtimes: native)"
        ),
        "{}",
        stderr(&jvm)
    );
    let line = probe_line("ledger.rs", "settle-total");
    let log = run_periscope(&[
        "log",
        &pid,
        &format!("ledger.rs:{line}"),
        "x",
        "--runtime",
        "python",
        "--for",
        "5s",
    ]);
    assert_eq!(log.status.code(), Some(1), "{}", stderr(&log));
    assert!(
        stderr(&log).contains("the python runtime is not available"),
        "{}",
        stderr(&log)
    );
    let bad = run_periscope(&["functions", &pid, "settle", "--runtime", "ruby"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("unknown runtime `ruby`; runtimes: native, jvm, python, node"),
        "{}",
        stderr(&bad)
    );
    t.assert_untouched();
}

#[test]
fn a_python_interpreter_is_told_apart_from_native_code() {
    let script = "import time; print('ready', flush=True); time.sleep(120)";
    let t = Target::start(Path::new("python3"), &["-c", script]);
    let pid = t.pid.to_string();
    let out = run_periscope(&["functions", &pid, "Py_Initialize"]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "pid {pid} runs Python, whose runtime is not in this build; probing its native code"
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
