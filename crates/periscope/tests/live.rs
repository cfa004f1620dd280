//! End-to-end tests of `periscope log`, `count`, `lines` and `functions` against real sample
//! processes: real ptrace, real breakpoints, values checked against what the target computed.

mod common;

use common::*;
use std::collections::HashSet;

const MEMOS: [&str; 3] = ["rent", "coffee", "books"];

/// Checks every hit of the ledger's settle line against the relations the target guarantees.
fn check_ledger_hits(hits: &[serde_json::Value]) -> HashSet<u64> {
    let mut tids = HashSet::new();
    // One execution of a line is one hit, even where the line has several addresses.
    let mut seen = HashSet::new();
    for h in hits {
        let key = (
            h["tid"].as_u64().unwrap(),
            h["values"]["t.seq"]["value"].as_i64(),
        );
        assert!(
            seen.insert(key),
            "line reported twice for one execution: {h}"
        );
    }
    for h in hits {
        let seq = int(h, "t.seq");
        let worker = int(h, "t.worker");
        let amount = int(h, "t.amount_cents");
        assert_eq!(amount, seq * 100 + worker, "{h}");
        assert_eq!(int(h, "fee"), amount / 10, "{h}");
        assert_eq!(int(h, "t.amount_cents + fee"), amount + amount / 10);
        assert_eq!(string(h, "t.memo"), MEMOS[(seq % 3) as usize]);
        assert_eq!(string(h, "t.from.owner"), format!("owner-{worker}"));
        let note = &h["values"]["t.note"];
        assert_eq!(note["kind"], "enum", "{note}");
        if seq % 2 == 0 {
            assert_eq!(note["variant"], "Some");
            assert_eq!(note["fields"]["0"]["value"].as_i64(), Some(seq));
        } else {
            assert_eq!(note["variant"], "None");
        }
        let note_text = if seq % 2 == 0 {
            format!("Some({seq})")
        } else {
            "None".to_string()
        };
        assert_eq!(
            h["message"].as_str().unwrap(),
            format!(
                "seq={seq} amount={amount} fee={} memo={} worker={worker} sum={} owner=owner-{worker} note={note_text}",
                amount / 10,
                MEMOS[(seq % 3) as usize],
                amount + amount / 10
            )
        );
        assert!(h["location"].as_str().unwrap().starts_with("ledger.rs:"));
        assert!(h["ts"].as_str().unwrap().contains('T'));
        tids.insert(h["tid"].as_u64().unwrap());
    }
    tids
}

const LEDGER_TEMPLATE: &str = "seq={t.seq} amount={t.amount_cents} fee={fee} memo={t.memo} worker={t.worker} sum={t.amount_cents + fee} owner={t.from.owner} note={t.note}";

fn ledger_log(exe: &std::path::Path, hits: u64) {
    let mut t = Target::start(exe, &["2000", "2"]);
    let line = probe_line("ledger.rs", "settle-total");
    let loc = format!("ledger.rs:{line}");
    let pid = t.pid.to_string();
    let max = hits.to_string();
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        LEDGER_TEMPLATE,
        "--json",
        "--max-hits",
        &max,
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let json = stdout_json(&out);
    assert_eq!(json.len() as u64, hits, "{}", stderr(&out));
    let tids = check_ledger_hits(&json);
    assert!(tids.len() >= 2, "hits came from one thread only: {tids:?}");
    t.assert_untouched();
}

#[test]
fn rust_debug_build_logs_values_the_target_computed() {
    ledger_log(&ledger_debug(), 30);
}

#[test]
fn rust_release_build_logs_values_the_target_computed() {
    let mut t = Target::start(&ledger_release(), &["2000", "2"]);
    let pid = t.pid.to_string();
    // At opt-level 3 rustc keeps `fee` and `ledger` but drops `t` from the debug info (gdb shows
    // `t=<optimized out>` too). What DWARF has must be right, the rest marked, never guessed:
    // fee == amount / 10 == seq * 10, and the ledger holds the previous totals, each 110 apart
    // (total == amount + fee == 110 * seq + worker).
    for loc in [
        "settle".to_string(),
        format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total")),
    ] {
        let out = run_periscope(&[
            "log",
            &pid,
            &loc,
            "fee={fee} seq={t.seq} ledger={ledger}",
            "--json",
            "--max-hits",
            "20",
            "--for",
            "60s",
        ]);
        assert_success(&out);
        let json = stdout_json(&out);
        assert_eq!(json.len(), 20, "{}", stderr(&out));
        for h in &json {
            let fee = int(h, "fee");
            assert_eq!(fee % 10, 0, "{h}");
            let seq = &h["values"]["t.seq"];
            match seq["kind"].as_str() {
                Some("int") => assert_eq!(seq["value"].as_i64(), Some(fee / 10)),
                _ => {
                    assert_eq!(seq["reason"], "optimized out", "{seq}");
                    assert!(h["message"]
                        .as_str()
                        .unwrap()
                        .contains("seq=<optimized out>"));
                }
            }
            let list = &h["values"]["ledger"]["target"];
            assert_eq!(list["kind"], "list", "{h}");
            let items: Vec<i64> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["value"].as_i64().unwrap())
                .collect();
            assert_eq!(list["len"].as_u64(), Some(items.len() as u64));
            for w in items.windows(2) {
                assert_eq!(w[1] - w[0], 110, "{items:?}");
            }
            if let Some(last) = items.last() {
                let prev_seq = fee / 10 - 1;
                assert!(
                    (0..10).contains(&(last - 110 * prev_seq)),
                    "last total {last} does not fit fee {fee}"
                );
            }
        }
    }
    t.assert_untouched();
}

#[test]
fn threads_created_after_attaching_are_probed() {
    let mut t = Target::start(&ledger_debug(), &["1000", "2"]);
    let before: HashSet<u64> = t.threads().into_iter().map(u64::from).collect();
    let pid = t.pid.to_string();
    // Each batch thread settles 50 transfers, then a new one starts: 240 hits cross batches.
    let out = run_periscope(&[
        "log",
        &pid,
        "settle",
        "seq={t.seq}",
        "--json",
        "--max-hits",
        "240",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let tids: HashSet<u64> = stdout_json(&out)
        .iter()
        .map(|h| h["tid"].as_u64().unwrap())
        .collect();
    assert!(
        tids.iter().any(|t| !before.contains(t)),
        "no hit from a thread created after attaching: before {before:?}, hits {tids:?}"
    );
    t.assert_untouched();
}

fn jobs_log(exe: &std::path::Path) {
    let mut t = Target::start(exe, &["2000"]);
    let line = probe_line("jobs.c", "process-done");
    let loc = format!("jobs.c:{line}");
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "id={j->id} cost={cost} round={round} name={j->name} owner={j->owner} w={j->weight} kind={j->kind} next={(*j).next}",
        "--json",
        "--max-hits",
        "20",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let json = stdout_json(&out);
    assert_eq!(json.len(), 20, "{}", stderr(&out));
    for h in &json {
        let id = int(h, "j->id");
        let round = int(h, "round");
        assert_eq!(int(h, "cost"), id * 3 + round, "{h}");
        assert_eq!(string(h, "j->name"), format!("job-{id}"));
        assert_eq!(
            string(h, "j->owner"),
            if id % 2 == 0 { "alice" } else { "bob" }
        );
        assert_eq!(
            h["values"]["j->weight"]["value"].as_f64(),
            Some(id as f64 / 2.0)
        );
        let kind = ["KIND_SMALL", "KIND_LARGE", "KIND_URGENT"][(id % 3) as usize];
        assert_eq!(h["values"]["j->kind"]["variant"], kind);
        let next = &h["values"]["(*j).next"];
        assert_eq!(next["kind"], "pointer");
        if id % 2 == 0 {
            // The first job of a pair points at the second, which still holds the previous
            // round's job when the first is processed.
            let target = &next["target"]["fields"];
            if round > 0 {
                assert_eq!(target["id"]["value"].as_i64(), Some(id - 1), "{next}");
                assert_eq!(
                    target["name"]["value"].as_str(),
                    Some(format!("job-{}", id - 1).as_str())
                );
            }
        } else {
            assert_eq!(next["address"], "0x0");
        }
    }
    t.assert_untouched();
}

#[test]
fn c_pie_build_logs_structs_pointers_and_char_arrays() {
    jobs_log(&jobs_pie());
}

#[test]
fn c_non_pie_build_logs_structs_pointers_and_char_arrays() {
    jobs_log(&jobs_nopie());
}

#[test]
fn functions_in_shared_libraries_are_probed() {
    let mut t = Target::start(&jobs_pie(), &["2000"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "log",
        &pid,
        "score_job",
        "id={j->id} w={j->weight} name={j->name}",
        "--json",
        "--max-hits",
        "6",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let json = stdout_json(&out);
    assert_eq!(json.len(), 6);
    for h in &json {
        let id = int(h, "j->id");
        assert_eq!(
            h["values"]["j->weight"]["value"].as_f64(),
            Some(id as f64 / 2.0)
        );
        assert_eq!(string(h, "j->name"), format!("job-{id}"));
        assert!(h["location"].as_str().unwrap().starts_with("score.c:"));
    }
    t.assert_untouched();
}

#[test]
fn conditions_filter_hits() {
    let mut t = Target::start(&ledger_debug(), &["1000", "2"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "log",
        &pid,
        "ledger::settle",
        "{t.seq} {t.memo}",
        "--if",
        "t.seq % 2 == 0 && t.memo == \"rent\" && t.note.is_some() && t.from.owner.len() == 7",
        "--json",
        "--max-hits",
        "5",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let json = stdout_json(&out);
    assert_eq!(json.len(), 5);
    for h in &json {
        let seq = int(h, "t.seq");
        assert_eq!(seq % 6, 0, "seq {seq} does not satisfy the condition");
        assert_eq!(string(h, "t.memo"), "rent");
    }
    t.assert_untouched();
}

#[test]
fn count_reports_intervals_and_a_total() {
    let mut t = Target::start(&ledger_debug(), &["1000", "2"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "count",
        &pid,
        "settle",
        "--every",
        "200ms",
        "--for",
        "1500ms",
        "--json",
        "--per-thread",
        "--by",
        "t.worker",
    ]);
    assert_success(&out);
    let json = stdout_json(&out);
    let (intervals, totals): (Vec<_>, Vec<_>) = json.iter().partition(|l| l["kind"] == "interval");
    assert!(intervals.len() >= 3, "{json:?}");
    assert_eq!(totals.len(), 1);
    let total = totals[0]["total"].as_u64().unwrap();
    let sum: u64 = intervals
        .iter()
        .map(|l| l["hits"].as_u64().unwrap())
        .sum::<u64>()
        + totals[0]["hits"].as_u64().unwrap();
    assert_eq!(sum, total);
    assert!(total > 10, "too few hits: {total}");
    let groups = totals[0]["groups"].as_object().unwrap();
    assert_eq!(groups.keys().cloned().collect::<Vec<_>>(), ["0", "1"]);
    let by_thread: u64 = totals[0]["threads"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_thread, total);
    t.assert_untouched();
}

#[test]
fn lines_and_functions_work_on_pids_and_binaries() {
    let t = Target::start(&ledger_debug(), &["2000", "1"]);
    let line = probe_line("ledger.rs", "settle-total");
    for target in [t.pid.to_string(), ledger_debug().display().to_string()] {
        let out = run_periscope(&[
            "lines",
            &target,
            &format!("ledger.rs:{}-{}", line - 1, line + 1),
        ]);
        assert_success(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        let marked = text
            .lines()
            .find(|l| l.contains("PROBE: settle-total"))
            .expect("probe line shown");
        assert!(marked.starts_with('*'), "{text}");
        let decl = text
            .lines()
            .find(|l| l.contains("fn settle"))
            .expect("fn line shown");
        assert!(decl.contains(&format!("{}", line - 1)));
        let out = run_periscope(&["functions", &target, "settle"]);
        assert_success(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ledger::settle"), "{text}");
        assert!(text.contains(&format!("ledger.rs:{}", line - 1)), "{text}");
    }
    // JSON forms, for scripts and agents.
    let out = run_periscope(&[
        "lines",
        &t.pid.to_string(),
        &format!("ledger.rs:{}-{}", line - 1, line + 1),
        "--json",
    ]);
    assert_success(&out);
    let listing = &stdout_json(&out)[0];
    assert!(listing["file"].as_str().unwrap().ends_with("ledger.rs"));
    let lines = listing["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["line"].as_u64(), Some(line as u64));
    assert_eq!(lines[1]["instrumentable"], true);
    assert!(lines[1]["text"]
        .as_str()
        .unwrap()
        .contains("PROBE: settle-total"));
    let out = run_periscope(&["functions", &t.pid.to_string(), "ledger::*batch", "--json"]);
    assert_success(&out);
    let fs = &stdout_json(&out)[0]["functions"];
    assert_eq!(fs[0]["name"], "ledger::run_batch");
    assert!(fs[0]["line"].as_u64().is_some());
}

#[test]
fn the_target_runs_on_after_sigint_and_sigterm() {
    for sig in ["INT", "TERM"] {
        let mut t = Target::start(&hot(), &["100000000", "100"]);
        let line = probe_line("hot.c", "hot-step");
        let pid = t.pid.to_string();
        let mut p = start_live(&["log", &pid, &format!("hot.c:{line}"), "i={i}", "--json"]);
        // Wait for the first hit.
        let mut out = std::io::BufReader::new(p.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut out, &mut first).unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert!(v["values"]["i"]["value"].as_i64().is_some());
        std::process::Command::new("kill")
            .args([&format!("-{sig}"), &p.id().to_string()])
            .status()
            .unwrap();
        let status = p.wait().unwrap();
        assert!(
            status.success(),
            "periscope exited with {status} on SIG{sig}"
        );
        t.assert_untouched();
    }
}

#[test]
fn periscope_ends_when_the_target_exits() {
    let mut t = Target::start(&hot(), &["300", "1000", "wait"]);
    let line = probe_line("hot.c", "hot-step");
    let pid = t.pid.to_string();
    let loc = format!("hot.c:{line}");
    let p = start_live(&[
        "log",
        &pid,
        &loc,
        "i={i} v={i * 7 + 3}",
        "--json",
        "--for",
        "120s",
    ]);
    t.go();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success());
    let json = stdout_json(&out);
    assert_eq!(json.len(), 300, "every iteration is logged once");
    for (n, h) in json.iter().enumerate() {
        assert_eq!(int(h, "i"), n as i64);
        assert_eq!(int(h, "i * 7 + 3"), n as i64 * 7 + 3);
    }
    let status = t.child.wait().unwrap();
    assert!(status.success(), "target exit status changed: {status}");
}

#[test]
fn kill_9_of_periscope_leaves_the_target_running() {
    // A hot line: the target keeps hitting leftover breakpoints after periscope dies.
    let mut t = Target::start(&hot(), &["4000", "200", "wait"]);
    let line = probe_line("hot.c", "hot-step");
    let pid = t.pid.to_string();
    let mut p = start_live(&["log", &pid, &format!("hot.c:{line}"), "i={i}", "--json"]);
    t.go();
    let mut out = std::io::BufReader::new(p.stdout.take().unwrap());
    for _ in 0..20 {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        assert!(l.contains("\"i\""), "{l}");
    }
    p.kill().unwrap(); // SIGKILL: no cleanup runs in periscope
    p.wait().unwrap();
    // The target finishes every iteration and exits normally: the fail-safe handler put the
    // original byte back on the next hit.
    let status = t.child.wait().unwrap();
    assert!(
        status.success(),
        "target ended with {status} after periscope was killed"
    );
}

#[test]
fn the_next_attach_removes_what_a_killed_periscope_left() {
    let mut t = Target::start(&ledger_debug(), &["2000", "2"]);
    let pid = t.pid.to_string();
    let never = format!("ledger.rs:{}", probe_line("ledger.rs", "never-hit"));
    // The ptrace engine leaves breakpoints and a scratch area when killed; the next ptrace
    // attach removes them (the kernel engine leaves nothing to remove).
    let mut p = start_live(&["log", &pid, &never, "x", "--engine", "ptrace"]);
    p.kill().unwrap();
    p.wait().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        maps.lines()
            .any(|l| l.split_whitespace().count() == 5 && l.contains(" r-xp ")),
        "no leftover area:\n{maps}"
    );
    assert!(t.is_running());
    let out = run_periscope(&[
        "log",
        &pid,
        "settle",
        "seq={t.seq}",
        "--json",
        "--max-hits",
        "2",
        "--for",
        "60s",
        "--engine",
        "ptrace",
    ]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("removed what an earlier periscope that was killed left"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout_json(&out).len(), 2);
    t.assert_untouched();
    let sigcgt = u64::from_str_radix(&t.status_field("SigCgt:"), 16).unwrap();
    assert_eq!(
        sigcgt & (1 << (5 - 1)),
        0,
        "SIGTRAP still caught: {sigcgt:x}"
    );
}

/// Probes on a line that starts with a call (emulated by the tracer) and one that starts with a
/// RIP-relative load (run out of line, re-encoded) must leave the program's results unchanged.
#[test]
fn displaced_calls_and_rip_relative_loads_run_correctly() {
    let n = 400i64;
    let mut t = Target::start(&hot(), &[&n.to_string(), "0", "wait"]);
    let pid = t.pid.to_string();
    let call = format!("hot.c:{}", probe_line("hot.c", "call-first"));
    let riprel = format!("hot.c:{}", probe_line("hot.c", "rip-relative"));
    let p = start_live(&["log", &pid, &call, "v={v} i={i}", "--json", "--for", "120s"]);
    t.go();
    let first = p.wait_with_output().unwrap();
    assert!(first.status.success());
    let hits = stdout_json(&first);
    assert_eq!(hits.len() as i64, n);
    for (k, h) in hits.iter().enumerate() {
        assert_eq!(int(h, "i"), k as i64);
        assert_eq!(int(h, "v"), k as i64 * 7 + 3);
    }
    let (status, out) = t.wait_output();
    assert!(status.success());
    let sink: i64 = (0..n).map(|i| i * 7 + 3).sum();
    assert!(out.contains(&format!("sink={sink} touched={n}")), "{out}");

    // The same with the RIP-relative line.
    let mut t = Target::start(&hot(), &[&n.to_string(), "0", "wait"]);
    let pid = t.pid.to_string();
    let p = start_live(&[
        "log",
        &pid,
        &riprel,
        "touched={touched}",
        "--json",
        "--for",
        "120s",
    ]);
    t.go();
    let out = p.wait_with_output().unwrap();
    let hits = stdout_json(&out);
    assert_eq!(hits.len() as i64, n);
    for (k, h) in hits.iter().enumerate() {
        assert_eq!(
            int(h, "touched"),
            k as i64,
            "the global before this increment"
        );
    }
    let (status, out) = t.wait_output();
    assert!(status.success());
    assert!(out.contains(&format!("sink={sink} touched={n}")), "{out}");
}

#[test]
fn a_line_shared_with_a_closure_probes_where_the_names_are_in_scope() {
    let mut t = Target::start(&ledger_debug(), &["1000", "2"]);
    let pid = t.pid.to_string();
    let loc = format!("ledger.rs:{}", probe_line("ledger.rs", "closure-line"));
    // `fee` and `ledger` live in settle; `v` only inside the closure written on the same line.
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "fee={fee} n={ledger.len()}",
        "--json",
        "--max-hits",
        "6",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for h in stdout_json(&out) {
        assert_eq!(int(&h, "fee") % 10, 0);
        assert!(int(&h, "ledger.len()") >= 1);
    }
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "v={*v}",
        "--json",
        "--max-hits",
        "6",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 6);
    for h in &hits {
        let v = &h["values"]["*v"];
        // *v is `&i64`: a total, 110 * seq + worker.
        let total = v["target"]["value"]
            .as_i64()
            .or_else(|| v["value"].as_i64())
            .unwrap_or_else(|| panic!("{v}"));
        assert!(total >= 0 && (total % 110) < 10, "{total}");
    }
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        // Captured variables are visible inside the closure (rustc describes them); `total`
        // is not, and no site has both.
        "{v} {total}",
        "--max-hits",
        "1",
        "--for",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not in scope"), "{}", stderr(&out));
    t.assert_untouched();
}

#[test]
fn forked_children_of_a_probed_process_are_unharmed() {
    let mut t = Target::start(&forker(), &["1000"]);
    let pid = t.pid.to_string();
    let loc = format!("forker.c:{}", probe_line("forker.c", "fork-work"));
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "i={i}",
        "--json",
        "--max-hits",
        "30",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 30);
    let mut last = -1;
    for h in &hits {
        // Only the parent reports: each child got its original code back before it ran.
        assert_eq!(h["pid"].as_u64(), Some(t.pid as u64));
        let i = int(h, "i");
        assert!(i > last, "{i} after {last}");
        last = i;
    }
    // Every child so far exited with the right status (the parent stops otherwise).
    t.assert_untouched();
}
