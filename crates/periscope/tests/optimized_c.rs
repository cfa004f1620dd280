//! Optimized C read as gdb reads it: gcc -O2 turns `rank(const struct task *t, int pass)` into
//! `rank.isra.0`, which receives `t->id` instead of `t` (DW_OP_GNU_parameter_ref: the pointer
//! is only known where the caller passed it), and `scaled(v, 10)` into `scaled.constprop.0`
//! (`scale` is a DW_AT_const_value), and an inlined `total(&q)` whose `p` is a
//! DW_OP_implicit_pointer. Probes go to the clones under their source names.

mod common;
use common::*;

/// `periscope log PID LOCATION TEMPLATE --max-hits N --json`, run to its end: the hits.
fn log_hits(pid: &str, location: &str, template: &str, n: u32) -> Vec<serde_json::Value> {
    let n = n.to_string();
    let out = run_periscope(&["log", pid, location, template, "--max-hits", &n, "--json"]);
    assert_success(&out);
    stdout_json(&out)
}

#[test]
fn ipa_clones_are_found_by_source_name_and_their_parameters_read_at_the_call_site() {
    let exe = tasks_o2();
    let syms = std::process::Command::new("nm")
        .arg(&exe)
        .output()
        .expect("nm");
    let syms = String::from_utf8_lossy(&syms.stdout);
    assert!(
        syms.contains("rank.isra")
            && syms.contains("scaled.constprop")
            && syms.contains("check.cold"),
        "gcc no longer makes these clones; the test needs new shapes:\n{syms}"
    );
    let mut t = Target::start(&exe, &["200"]);
    let pid = t.pid.to_string();

    let hits = log_hits(&pid, "rank", "id={t->id} pass={pass}", 8);
    assert_eq!(hits.len(), 8);
    for h in &hits {
        let id = int(h, "t->id");
        assert!(
            (157..=160).contains(&id),
            "t->id read at the call site: {h}"
        );
        assert!(int(h, "pass") >= 0);
    }
    // Inside the body, after instructions ran: still read, since none of them wrote the
    // register the caller's call value uses.
    let body = format!("tasks.c:{}", probe_line("tasks.c", "rank-body"));
    for h in log_hits(&pid, &body, "{t->id}", 4) {
        assert!((157..=160).contains(&int(&h, "t->id")), "{h}");
    }

    for h in log_hits(&pid, "scaled", "v={v} scale={scale}", 3) {
        assert_eq!(
            int(&h, "scale"),
            10,
            "the constant-propagated parameter: {h}"
        );
    }

    // A line in `check.cold` (a separate range of `check`): probed, and its frame goes by the
    // source name.
    let cold = format!("tasks.c:{}", probe_line("tasks.c", "cold-path"));
    let out = run_periscope(&["snapshot", &pid, &cold, "--json"]);
    assert_success(&out);
    let snap = &stdout_json(&out)[0];
    assert_eq!(snap["frames"][0]["function"], "check", "{snap}");
    let v = snap["frames"][0]["variables"]["v"]["value"].as_i64();
    assert_eq!(v.map(|v| v % 50), Some(49), "{snap}");

    // `total(&q)` inlined: `p` is an implicit pointer to `q`, which lives in registers.
    let implicit = format!("tasks.c:{}", probe_line("tasks.c", "implicit"));
    for h in log_hits(&pid, &implicit, "{p->a} {p->b} {p}", 3) {
        assert_eq!(
            int(&h, "p->b"),
            2 * int(&h, "p->a"),
            "read through the pointer: {h}"
        );
        let p = &h["values"]["p"];
        assert_eq!(p["kind"], "pointer", "{h}");
        assert_eq!(
            p["target"]["fields"]["a"]["value"],
            h["values"]["p->a"]["value"]
        );
    }
    t.assert_untouched();
}
