//! Inside async Rust: in an `async fn` on tokio, the locals that live across an `.await` are
//! fields of the future's state machine, and in a release build DWARF says they are optimized
//! out at the lines after the await (gdb prints `<optimized out>`). Periscope reads them from
//! the variant of the state the body resumed from, as if they were plain locals: in `log`
//! templates, `--if` conditions and `snapshot` locals, in debug and in release (`debug =
//! true`) builds, on both engines. Every value is checked against what the program itself
//! printed for that order (`subtotal == n * 3 + 7`, `total == subtotal * (n % 5 + 1)`).

mod common;

use common::{
    assert_success, asyncshop_debug, asyncshop_release, int, probe_line, run_periscope, stderr,
    stdout_json, Target,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SOURCE: &str = "asyncshop/src/main.rs";

/// A copy of `exe` for one test: uprobes act on a file's offset in every process of that
/// file, so a test whose probe runs in the kernel must not share the file with one whose
/// breakpoints are ptrace's (see `orders_o0_alone` in common).
fn own_copy(exe: &Path, test: &str) -> PathBuf {
    let copy = exe.with_file_name(format!(
        "{}-{test}",
        exe.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("asyncshop")
    ));
    let tmp = copy.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::copy(exe, &tmp).expect("copy target");
    std::fs::rename(&tmp, &copy).expect("rename target copy");
    copy
}

fn at(tag: &str) -> String {
    format!("main.rs:{}", probe_line(SOURCE, tag))
}

/// What the program printed for order `n`.
fn order(
    program: &HashMap<i64, (i64, i64, i64)>,
    n: i64,
    hit: &serde_json::Value,
) -> (i64, i64, i64) {
    program
        .get(&n)
        .copied()
        .unwrap_or_else(|| panic!("the program printed no order {n} (hit: {hit})"))
}

/// What the program printed: order number → (subtotal, total, off).
fn printed(t: &mut Target) -> HashMap<i64, (i64, i64, i64)> {
    t.go(); // ends the program after the order in progress
    let (status, out) = t.wait_output();
    assert!(status.success(), "asyncshop exited with {status}: {out}");
    out.lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("order ")?.split(' ');
            let n = words.next()?.parse().ok()?;
            let field = |w: Option<&str>, k: &str| w?.strip_prefix(k)?.parse().ok();
            let subtotal = field(words.next(), "subtotal=")?;
            let total = field(words.next(), "total=")?;
            let off = field(words.next(), "off=")?;
            Some((n, (subtotal, total, off)))
        })
        .collect()
}

fn log(t: &Target, location: &str, template: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let pid = t.pid.to_string();
    let mut args = vec!["log", &pid, location, template, "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--max-hits", "5", "--for", "60s"]);
    let out = run_periscope(&args);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 5, "{}", stderr(&out));
    hits
}

/// `log` after the second await reads `subtotal` (saved across both awaits) and `total`
/// (saved across the second), equal to what the program printed for the same order.
fn log_after_await(exe: &Path) {
    let mut t = Target::start(&own_copy(exe, "log"), &["2000"]);
    let hits = log(
        &t,
        &at("after-recv"),
        "n={n} subtotal={subtotal} total={total}",
        &[],
    );
    let program = printed(&mut t);
    for h in &hits {
        let n = int(h, "n");
        let (subtotal, total, _) = order(&program, n, h);
        assert_eq!(int(h, "subtotal"), subtotal, "{h}");
        assert_eq!(int(h, "total"), total, "{h}");
        assert_eq!(subtotal, n * 3 + 7, "{h}");
    }
}

#[test]
fn log_reads_locals_saved_across_await_debug() {
    log_after_await(&asyncshop_debug());
}

#[test]
fn log_reads_locals_saved_across_await_release() {
    log_after_await(&asyncshop_release());
}

/// An async fn awaited by another (`discount`, inlined into `handle` in the release build):
/// its own saved local `rate`, in a template and in a condition.
fn nested_async_fn(exe: &Path) {
    let mut t = Target::start(&own_copy(exe, "nested"), &["2000"]);
    let hits = log(
        &t,
        &at("discount"),
        "n={n} rate={rate}",
        &["--if", "rate > 2"],
    );
    let program = printed(&mut t);
    for h in &hits {
        let (n, rate) = (int(h, "n"), int(h, "rate"));
        assert!(rate > 2, "{h}");
        assert_eq!(
            rate * 2,
            order(&program, n, h).2,
            "the program's off for order {n}: {h}"
        );
    }
}

#[test]
fn nested_async_fn_locals_debug() {
    nested_async_fn(&asyncshop_debug());
}

#[test]
fn nested_async_fn_locals_release() {
    nested_async_fn(&asyncshop_release());
}

/// A condition on saved locals after the first await filters hits (`count` is saved across
/// the sleep too): every hit has them as the program computed them.
fn condition_after_await(exe: &Path) {
    let mut t = Target::start(&own_copy(exe, "condition"), &["2000"]);
    let hits = log(
        &t,
        &at("after-sleep"),
        "n={n} subtotal={subtotal} count={count}",
        &["--if", "subtotal > 300 && count == 3"],
    );
    let program = printed(&mut t);
    for h in &hits {
        let n = int(h, "n");
        assert_eq!(n % 5, 2, "count == 3 is n % 5 == 2: {h}");
        assert!(n * 3 + 7 > 300, "{h}");
        assert_eq!(int(h, "subtotal"), order(&program, n, h).0, "{h}");
        assert_eq!(int(h, "count"), 3, "{h}");
    }
}

#[test]
fn condition_on_saved_locals_debug() {
    condition_after_await(&asyncshop_debug());
}

#[test]
fn condition_on_saved_locals_release() {
    condition_after_await(&asyncshop_release());
}

/// A snapshot lists the saved locals among the frame's locals, with their values.
fn snapshot_after_await(exe: &Path) {
    let mut t = Target::start(&own_copy(exe, "snapshot"), &["2000"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "snapshot",
        &pid,
        &at("after-recv"),
        "--json",
        "--max-hits",
        "1",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 1, "{}", stderr(&out));
    let program = printed(&mut t);
    let vars = &snaps[0]["frames"][0]["variables"];
    let n = vars["n"]["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("no n in {vars}"));
    assert_eq!(vars["subtotal"]["kind"], "int", "{vars}");
    let (subtotal, total, _) = order(&program, n, vars);
    assert_eq!(vars["subtotal"]["value"].as_i64(), Some(subtotal), "{vars}");
    assert_eq!(vars["total"]["value"].as_i64(), Some(total), "{vars}");
}

#[test]
fn snapshot_lists_saved_locals_debug() {
    snapshot_after_await(&asyncshop_debug());
}

#[test]
fn snapshot_lists_saved_locals_release() {
    snapshot_after_await(&asyncshop_release());
}

/// In the release build the in-kernel engine copies the state machine's `__state` and every
/// slot a state saves `subtotal` at, and user space picks the one the state names; a condition
/// on it needs its one place in the kernel, so that probe runs on ptrace and says why. A name
/// that is neither a local nor saved is refused, listing the saved ones as in scope.
#[test]
fn release_engines_and_misspelled_names() {
    let mut t = Target::start(&own_copy(&asyncshop_release(), "engines"), &["2000"]);
    let pid = t.pid.to_string();
    let line = at("after-recv");
    let run = |extra: &[&str]| {
        let mut args = vec!["log", &pid, &line, "n={n} subtotal={subtotal}", "--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--max-hits", "3", "--for", "60s"]);
        let out = run_periscope(&args);
        assert_success(&out);
        let hits = stdout_json(&out);
        assert_eq!(hits.len(), 3, "{}", stderr(&out));
        for h in &hits {
            assert_eq!(int(h, "subtotal"), int(h, "n") * 3 + 7, "{h}");
        }
        stderr(&out)
    };
    let err = run(&[]);
    assert!(err.contains("engine: bpf"), "{err}");
    let err = run(&["--if", "subtotal > 10"]);
    assert!(
        err.contains("engine: ptrace") && err.contains("saved in the async fn's state machine"),
        "{err}"
    );
    let out = run_periscope(&["log", &pid, &line, "{subtotl}", "--for", "60s"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`subtotl` is not in scope") && err.contains("subtotal"),
        "{err}"
    );
    t.assert_untouched();
    printed(&mut t);
}

/// The point: at the same line of the same release build, gdb has only the DWARF,
/// which says `subtotal` and `total` are gone; the tests above read them.
#[test]
fn gdb_prints_optimized_out_at_the_same_line() {
    let exe = own_copy(&asyncshop_release(), "gdb");
    let line = probe_line(SOURCE, "after-recv");
    let mut gdb = Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "set pagination off"])
        .args(["-ex", &format!("break main.rs:{line}")])
        .args(["-ex", "run 2000 > /dev/null"])
        .args(["-ex", "print subtotal", "-ex", "print total", "-ex", "kill"])
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gdb");
    // The program runs while its stdin is open (gdb's, which it inherits).
    let _stdin = gdb.stdin.take();
    let out = gdb.wait_with_output().expect("gdb output");
    let text = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = text.lines().filter(|l| l.starts_with('$')).collect();
    assert_eq!(
        printed,
        ["$1 = <optimized out>", "$2 = <optimized out>"],
        "gdb printed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
