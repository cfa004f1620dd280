//! Go binaries as they usually ship, `go build -ldflags='-s -w'` (and `-trimpath`): no symbol
//! table, no DWARF, only the runtime's pclntab. Functions go by their Go names, lines take
//! probes as in the DWARF build, `count` and `log` work with constant templates and
//! arguments by position (Go's register ABI); a variable is refused with how to keep DWARF.
//! On the current Go and on Go 1.22.

mod common;

use common::{
    assert_success, int, probe_line, run_periscope, section_headers, start_live, stderr,
    stdout_json, Target,
};
use std::collections::BTreeSet;
use std::path::Path;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn assert_stripped(exe: &Path) {
    let sections = section_headers(exe);
    assert!(
        !sections.contains(".debug_info")
            && !sections.contains(".symtab")
            && sections.contains(".gopclntab"),
        "{} should have a pclntab and neither symbols nor DWARF:\n{sections}",
        exe.display()
    );
}

/// `periscope functions BIN main.`: the names listed (inlined-only ones marked).
fn main_functions(bin: &Path) -> BTreeSet<String> {
    let out = run_periscope(&["functions", path(bin), "main."]);
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("main."))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or_default();
            let inlined = if l.contains("[inlined into") {
                " (inlined)"
            } else {
                ""
            };
            format!("{name}{inlined}")
        })
        .collect()
}

/// `periscope lines BIN FILE`: the lines a probe can take, with each line's text.
fn probe_lines(bin: &Path, file: &str) -> Vec<(u32, String)> {
    let out = run_periscope(&["lines", path(bin), file]);
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix('*'))
        .filter_map(|l| {
            let l = l.trim_start();
            let (n, text) = l.split_once(char::is_whitespace)?;
            Some((n.parse().ok()?, text.trim().to_string()))
        })
        .collect()
}

fn compare_with_dwarf(stripped: &Path, dwarf: &Path) {
    assert_stripped(stripped);
    // The same functions, by the same Go names, the same ones inlined everywhere. The
    // DWARF build lists the compiler's wrappers (`main.main.gowrap1`) too but without a
    // declaration, which the pclntab gives them: the names are what is compared.
    assert_eq!(main_functions(stripped), main_functions(dwarf));
    for file in ["main.go", "cart.go"] {
        let with_dwarf: BTreeSet<u32> = probe_lines(dwarf, file).iter().map(|l| l.0).collect();
        let without = probe_lines(stripped, file);
        let lines: BTreeSet<u32> = without.iter().map(|l| l.0).collect();
        // Every line the DWARF build takes probes at, the pclntab build takes too. The
        // pclntab may have a line more: one whose code the DWARF build marks as no
        // statement's start (Go's is_stmt, which the pclntab lacks), but always real code,
        // never a comment or a blank line.
        assert!(
            lines.is_superset(&with_dwarf),
            "{file}: missing {:?}",
            with_dwarf.difference(&lines).collect::<Vec<_>>()
        );
        for (n, text) in &without {
            assert!(
                !text.is_empty() && !text.starts_with("//") && text != "}"
                    || with_dwarf.contains(n),
                "{file}:{n} takes a probe but has no code: {text:?}"
            );
        }
        assert!(!lines.is_empty(), "{file}");
    }
}

#[test]
fn functions_and_lines_match_the_dwarf_build() {
    compare_with_dwarf(&common::go_shop_stripped(), &common::go_shop_default());
}

#[test]
fn functions_and_lines_match_the_dwarf_build_on_go_1_22() {
    compare_with_dwarf(&common::go_shop_122_stripped(), &common::go_shop_122());
}

/// Runs the shop's `calls N` mode under `periscope ARGS…` (PID inserted after the command),
/// releasing it once the probe is live: what periscope printed, and the arguments the program
/// says it passed to tick.
fn run_calls(bin: &Path, n: usize, args: &[&str]) -> (Vec<serde_json::Value>, Vec<i64>) {
    let mut t = Target::start(bin, &["calls", &n.to_string()]);
    let pid = t.pid.to_string();
    let mut full = vec![args[0], &pid];
    full.extend(&args[1..]);
    full.extend(["--json", "--for", "120s"]);
    let p = start_live(&full);
    t.go();
    let out = p.wait_with_output().expect("periscope");
    assert_success(&out);
    let (status, printed) = t.wait_output();
    assert!(status.success());
    assert!(printed.contains(&format!("calls={n} ")), "{printed}");
    let ticks = printed
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .map(|v| v.parse().expect("tick N"))
        .collect();
    (stdout_json(&out), ticks)
}

fn probe_by_position(bin: &Path) {
    assert_stripped(bin);
    const N: usize = 300;
    // count at a function: every call, once.
    let (counts, _) = run_calls(bin, N, &["count", "main.tick"]);
    let last = counts.last().expect("a count line");
    assert_eq!(last["total"], N, "{counts:?}");
    // {arg0} at an int-argument function, in both engines: what the program printed.
    for engine in ["bpf", "ptrace"] {
        let (hits, printed) = run_calls(
            bin,
            N,
            &["log", "main.tick", "i={arg0}", "--engine", engine],
        );
        let args: Vec<i64> = hits.iter().map(|h| int(h, "arg0")).collect();
        assert_eq!(args, printed, "{engine}");
        assert_eq!(args.len(), N, "{engine}");
    }
    // A line inside the function: once per execution, at main.go:LINE.
    let line = format!("main.go:{}", probe_line("go/shop/main.go", "tick"));
    let (hits, _) = run_calls(bin, N, &["log", &line, "reached"]);
    assert_eq!(hits.len(), N);
    assert!(
        hits.iter().all(|h| h["location"] == line.as_str()),
        "{hits:?}"
    );

    // A running service: a line of a method-heavy function, and the refusals.
    let mut t = Target::start(bin, &["500"]);
    let pid = t.pid.to_string();
    let handle = format!("main.go:{}", probe_line("go/shop/main.go", "handle"));
    let out = run_periscope(&[
        "log",
        &pid,
        &handle,
        "reached",
        "--max-hits",
        "5",
        "--json",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h["message"] == "reached"), "{hits:?}");
    // A receiver and an int64 argument by position: the cache is asked for id % 16.
    let out = run_periscope(&[
        "log",
        &pid,
        "main.(*Cache).get",
        "id={arg1}",
        "--max-hits",
        "10",
        "--json",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    assert!(stdout_json(&out).iter().all(|h| int(h, "arg1") < 16));
    // A variable, in a template or a condition: refused, saying how to keep DWARF and what
    // can be read.
    for args in [
        vec!["log", &pid, "main.build", "n={n}", "--for", "20s"],
        vec!["count", &pid, "main.build", "--if", "n > 3", "--for", "20s"],
    ] {
        let out = run_periscope(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no DWARF")
                && err.contains("without `-w`")
                && err.contains("{arg0}")
                && err.contains("rax, rbx")
                && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // Durations are refused for Go as with DWARF: its stacks move, which breaks return probes.
    let out = run_periscope(&["duration", &pid, "main.build", "--for", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Go moves goroutine stacks"),
        "{}",
        stderr(&out)
    );
    t.assert_untouched();
}

#[test]
fn a_stripped_build_is_counted_logged_and_read_by_position() {
    probe_by_position(&common::go_shop_stripped());
}

#[test]
fn a_stripped_trimpath_build_is_counted_logged_and_read_by_position() {
    let bin = common::go_shop_stripped_trimpath();
    // -trimpath names files by module path: main.go still finds them.
    let lines = probe_lines(&bin, "main.go");
    assert!(!lines.is_empty());
    let out = run_periscope(&["functions", path(&bin), "Total"]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("github.com/acme/shop/cart.(*Cart).Total"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    probe_by_position(&bin);
}

#[test]
fn a_stripped_go_1_22_build_is_counted_logged_and_read_by_position() {
    probe_by_position(&common::go_shop_122_stripped());
}
