//! Binaries with symbols but no DWARF, as they ship by default: `cargo build --release` (debug
//! info stripped, symbols kept) and `strip --strip-debug` C. Functions are found by their
//! demangled names, counted, timed, and their arguments logged by position (`{arg0}`: the
//! System V integer argument registers at the entry); FILE:LINE is refused with how to get
//! line tables.

mod common;
use common::*;
use std::path::Path;

fn assert_has_no_dwarf(exe: &Path) {
    let sections = section_headers(exe);
    assert!(
        !sections.contains(".debug_info") && sections.contains(".symtab"),
        "{} should have symbols and no DWARF:\n{sections}",
        exe.display()
    );
}

/// A FILE:LINE probe and a listing are refused, saying there are no line tables and how to
/// get them.
fn assert_line_refused(pid: &str, exe: &Path, location: &str) {
    let file = location.split(':').next().expect("file");
    for args in [
        vec!["log", pid, location, "x", "--for", "20s"],
        vec!["lines", exe.to_str().expect("utf-8"), file],
    ] {
        let out = run_periscope(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no line tables")
                && err.contains("debug = \"line-tables-only\"")
                && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

fn log_args(pid: &str, function: &str, template: &str) -> Vec<serde_json::Value> {
    let out = run_periscope(&[
        "log",
        pid,
        function,
        template,
        "--max-hits",
        "5",
        "--json",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 5, "{}", stderr(&out));
    hits
}

#[test]
fn a_default_cargo_release_build_is_probed_by_its_symbols() {
    let exe = tally_release();
    assert_has_no_dwarf(&exe);
    let out = run_periscope(&["functions", exe.to_str().expect("utf-8"), "settle"]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tally::settle"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut t = Target::start(&exe, &["100000000", "200"]);
    let pid = t.pid.to_string();
    for h in log_args(&pid, "tally::settle", "account={arg0} cents={arg1}") {
        assert!((7000..=7004).contains(&int(&h, "arg0")), "{h}");
        assert_eq!(int(&h, "arg1"), 250, "{h}");
    }

    let out = run_periscope(&["count", &pid, "settle", "--max-hits", "20", "--json"]);
    assert_success(&out);
    let last = stdout_json(&out).pop().expect("a count line");
    assert_eq!(last["total"], 20, "{last}");

    let out = run_periscope(&["duration", &pid, "settle", "--for", "3s", "--json"]);
    assert_success(&out);
    let total = stdout_json(&out)
        .into_iter()
        .find(|m| m["kind"] == "total")
        .expect("a total line");
    let calls = total["calls"].as_u64().unwrap_or(0);
    let (min, max) = (total["min_ns"].as_u64(), total["max_ns"].as_u64());
    assert!(calls > 0 && min.is_some() && min <= max, "{total}");

    assert_line_refused(&pid, &exe, "main.rs:10");
    t.assert_untouched();
}

#[test]
fn strip_debug_c_is_probed_by_its_symbols() {
    let dir = scratch("strip-debug");
    let exe = dir.join("relay");
    // No debuglink, and no debug file anywhere: symbols only.
    split_debug(&relay_o2(), &exe, &dir.join("gone/relay.debug"), false);
    std::fs::remove_dir_all(dir.join("gone")).expect("remove debug file");
    assert_has_no_dwarf(&exe);
    let out = run_periscope(&["functions", exe.to_str().expect("utf-8"), "forward"]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("forward"));

    let mut t = Target::start(&exe, &["100000000", "200"]);
    let pid = t.pid.to_string();
    for h in log_args(&pid, "forward", "{arg0} {arg1}") {
        assert!((100..=106).contains(&int(&h, "arg1")), "{h}");
    }
    // A name the symbol table cannot give is refused with what can be read.
    let out = run_periscope(&["log", &pid, "forward", "{size}", "--for", "20s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("{arg0}"), "{}", stderr(&out));

    let line = format!("relay.c:{}", probe_line("relay.c", "forward-body"));
    assert_line_refused(&pid, &exe, &line);
    t.assert_untouched();
}
