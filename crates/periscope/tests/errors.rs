//! Bad input gets a clear error that says what would be right, and leaves the target untouched.

mod common;

use common::*;

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = run_periscope(args);
    // 1: the request failed; 2: the command line itself was malformed (clap).
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{args:?}: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected {n:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_explained_and_the_target_left_alone() {
    let mut t = Target::start(&ledger_debug(), &["2000", "1"]);
    let pid = t.pid.to_string();
    let line = probe_line("ledger.rs", "settle-total");
    let good = format!("ledger.rs:{line}");
    fails_with(
        &["log", "999999999", &good, "x"],
        &["no process with pid 999999999"],
    );
    fails_with(
        &["log", &pid, "ledgr.rs:10", "x"],
        &["no source file matching `ledgr.rs`"],
    );
    // The `#[inline(never)]` line above `fn settle` has no code; the fn line and body do.
    let attr = format!("ledger.rs:{}", line - 2);
    let near = format!("nearest lines with code: {}, {}", line - 1, line);
    fails_with(
        &["log", &pid, &attr, "x"],
        &[&format!("no code at {attr}"), &near],
    );
    fails_with(
        &["log", &pid, "ledger.rs:x", "x"],
        &["bad location", "FILE:LINE"],
    );
    fails_with(
        &["log", &pid, "fmt", "x"],
        &["`fmt` is ambiguous", "candidates"],
    );
    // A name spelled close to a loaded function is a typo of it (a name like no other is
    // pending instead: a library loaded later may have it, see tests/plugins.rs).
    fails_with(
        &["log", &pid, "settel", "x"],
        &["no function named `settel`", "did you mean"],
    );
    fails_with(
        &["log", &pid, &good, "a={t.seq +}"],
        &["column 11", "expected a value"],
    );
    fails_with(
        &["log", &pid, &good, "x", "--if", "t.seq >> 2"],
        &["bad condition", "column 8", "(--if)"],
    );
    // The probe compiler the server uses names the flag at fault here.
    fails_with(
        &["log", &pid, &good, "x", "--max-hits", "0"],
        &["must be at least 1", "(--max-hits)"],
    );
    fails_with(
        &["count", &pid, &good, "--by", "t.seq +"],
        &["bad grouping expression", "(--by)"],
    );
    fails_with(
        &["log", &pid, &good, "{bogus}"],
        &[
            "`bogus` is not in scope",
            "names in scope there: fee, ledger, t",
        ],
    );
    fails_with(&["log", &pid, &good, "x", "--for", "soon"], &["500ms, 10s"]);
    fails_with(
        &["log", &pid, &good, "{t.from.ownr}"],
        &[
            "`t.from` (ledger::Account) has no field `ownr`",
            "its fields: owner, balance, id",
        ],
    );
    fails_with(
        &["log", &pid, &good, "x", "--if", "t.sq > 1"],
        &["has no field `sq`", "seq"],
    );
    fails_with(
        &["lines", "/no/such/binary", "x.rs"],
        &["neither a running process id nor an existing file"],
    );
    t.assert_untouched();
}

#[test]
fn a_binary_without_debug_info_says_how_to_build_one() {
    let t = Target::start(&hot_nodebug(), &["100000000", "1000"]);
    let pid = t.pid.to_string();
    fails_with(
        &["log", &pid, "hot.c:13", "x"],
        &["has no DWARF debug info", "-g"],
    );
    fails_with(
        &["lines", &hot_nodebug().display().to_string(), "hot.c"],
        &["no DWARF debug info"],
    );
}

#[test]
fn a_traced_process_is_refused_with_the_reason() {
    let t = Target::start(&ledger_debug(), &["2000", "1"]);
    let pid = t.pid.to_string();
    let line = probe_line("ledger.rs", "settle-total");
    let mut first = start_live(&[
        "log",
        &pid,
        &format!("ledger.rs:{line}"),
        "x",
        "--engine",
        "ptrace",
        "--for",
        "60s",
    ]);
    fails_with(
        &["log", &pid, "settle", "x", "--engine", "ptrace"],
        &["already traced by pid"],
    );
    // The kernel's uprobes need no tracer: a second periscope probes it in the kernel.
    let out = run_periscope(&[
        "log",
        &pid,
        "settle",
        "fee={fee}",
        "--engine",
        "bpf",
        "--max-hits",
        "1",
        "--for",
        "30s",
    ]);
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{}",
        stderr(&out)
    );
    std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(first.wait().unwrap().success());
}
