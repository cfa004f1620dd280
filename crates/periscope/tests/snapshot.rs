//! `periscope snapshot`: the stack and every frame's variables, checked against what the
//! target computed; redaction never lets a secret's bytes out.

mod common;

use common::*;
use serde_json::Value as J;

fn var<'a>(frame: &'a J, name: &str) -> &'a J {
    let v = &frame["variables"][name];
    assert!(!v.is_null(), "no variable {name} in {frame}");
    v
}

/// Follows pointers to the value they point at.
fn deref(v: &J) -> &J {
    let mut v = v;
    while v["kind"] == "pointer" {
        v = &v["target"];
    }
    v
}

fn ival(v: &J) -> i64 {
    let v = deref(v);
    assert_eq!(v["kind"], "int", "{v}");
    v["value"].as_i64().unwrap()
}

#[test]
fn rust_snapshot_shows_the_stack_and_each_frames_variables() {
    let mut t = Target::start(&ledger_debug(), &["2000", "2"]);
    let pid = t.pid.to_string();
    let loc = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total"));
    let out = run_periscope(&[
        "snapshot",
        &pid,
        &loc,
        "--json",
        "--frames",
        "2",
        "--max-hits",
        "3",
        "--watch",
        "t.amount_cents + fee",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(!raw.contains("s3cr3t"), "a redacted value leaked");
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 3);
    for s in &snaps {
        let frames = s["frames"].as_array().unwrap();
        let top = &frames[0];
        assert_eq!(top["function"], "ledger::settle");
        assert!(top["file"].as_str().unwrap().ends_with("ledger.rs"));
        let t = deref(var(top, "t"));
        assert_eq!(t["kind"], "struct");
        let seq = t["fields"]["seq"]["value"].as_i64().unwrap();
        let worker = t["fields"]["worker"]["value"].as_i64().unwrap();
        let amount = t["fields"]["amount_cents"]["value"].as_i64().unwrap();
        assert_eq!(amount, seq * 100 + worker);
        assert_eq!(ival(var(top, "fee")), amount / 10);
        let from = &t["fields"]["from"]["fields"];
        assert_eq!(from["owner"]["value"], format!("owner-{worker}"));
        assert_eq!(from["api_token"]["kind"], "redacted");
        // Arguments in declaration order.
        let names: Vec<&String> = top["variables"].as_object().unwrap().keys().collect();
        assert_eq!(names[..3], ["t", "fee", "ledger"]);
        // The caller's locals agree with the callee's arguments.
        let caller = &frames[1];
        assert_eq!(caller["function"], "ledger::run_batch");
        assert_eq!(ival(var(caller, "seq")), seq);
        assert_eq!(ival(var(caller, "worker")), worker);
        assert_eq!(ival(var(caller, "amount_cents")), amount);
        assert_eq!(var(caller, "owner")["value"], format!("owner-{worker}"));
        // Frames below the asked-for ones carry no variables, and the stack reaches the
        // thread's start in libc, through code without frame pointers.
        assert!(frames[2]["variables"].is_null());
        assert!(frames.len() >= 5, "{frames:?}");
        assert!(
            frames
                .iter()
                .any(|f| f["function"].as_str().unwrap().contains("start_thread")
                    || f["function"].as_str().unwrap().contains("clone")),
            "{frames:?}"
        );
        assert_eq!(
            ival(&s["watches"]["t.amount_cents + fee"]),
            amount + amount / 10
        );
    }
    // Human output: an indented tree.
    let out = run_periscope(&["snapshot", &pid, &loc, "--for", "60s"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("  #0  ledger::settle  at "), "{text}");
    assert!(text.contains("  #1  ledger::run_batch  at "), "{text}");
    assert!(text.contains("api_token: <redacted>"), "{text}");
    assert!(!text.contains("s3cr3t"));
    t.assert_untouched();
}

#[test]
fn redaction_covers_expressions_and_user_patterns() {
    let mut t = Target::start(&ledger_debug(), &["2000", "2"]);
    let pid = t.pid.to_string();
    let loc = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total"));
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "tok={t.from.api_token} len={t.from.api_token.len()} all={t.from}",
        "--json",
        "--max-hits",
        "2",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(!raw.contains("s3cr3t") && !raw.contains("tok-"), "{raw}");
    for h in stdout_json(&out) {
        assert!(h["values"]["t.from.api_token"]["reason"]
            .as_str()
            .unwrap()
            .contains("redacted"));
        assert!(h["values"]["t.from.api_token.len()"]["reason"]
            .as_str()
            .unwrap()
            .contains("redacted"));
    }
    let out = run_periscope(&[
        "snapshot", &pid, &loc, "--json", "--redact", "^owner$", "--for", "60s",
    ]);
    assert_success(&out);
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        !raw.contains("owner-0") && !raw.contains("owner-1"),
        "{raw}"
    );
    let out = run_periscope(&["snapshot", &pid, &loc, "--redact", "(", "--for", "60s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad --redact pattern"));
    t.assert_untouched();
}

#[test]
fn c_snapshot_unwinds_through_a_shared_library() {
    let mut t = Target::start(&jobs_pie(), &["2000"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "snapshot",
        &pid,
        "score_job",
        "--json",
        "--frames",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let s = &stdout_json(&out)[0];
    let frames = s["frames"].as_array().unwrap();
    assert_eq!(frames[0]["function"], "score_job");
    assert!(frames[0]["file"].as_str().unwrap().ends_with("score.c"));
    let j = deref(var(&frames[0], "j"));
    let id = j["fields"]["id"]["value"].as_i64().unwrap();
    assert_eq!(j["fields"]["name"]["value"], format!("job-{id}"));
    assert_eq!(frames[1]["function"], "process_job");
    let round = ival(var(&frames[1], "round"));
    assert_eq!(ival(var(&frames[1], "cost")), id * 3 + round);
    assert_eq!(frames[2]["function"], "worker");
    assert_eq!(ival(var(&frames[2], "round")), round);
    t.assert_untouched();
}

#[test]
fn release_snapshot_marks_what_the_optimizer_dropped() {
    let mut t = Target::start(&ledger_release(), &["2000", "2"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "snapshot",
        &pid,
        "settle",
        "--json",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for s in stdout_json(&out) {
        let top = &s["frames"][0];
        assert_eq!(top["function"], "ledger::settle");
        let fee = ival(var(top, "fee"));
        assert_eq!(fee % 10, 0);
        let tv = var(top, "t");
        if tv["kind"] == "unavailable" {
            assert_eq!(tv["reason"], "optimized out");
        }
    }
    t.assert_untouched();
}

#[test]
fn rust_std_types_render_as_users_think_of_them() {
    let mut t = Target::start(&kinds(), &[]);
    let pid = t.pid.to_string();
    let loc = format!("kinds.rs:{}", probe_line("kinds.rs", "kinds-total"));
    let out = run_periscope(&[
        "snapshot", &pid, &loc, "--json", "--frames", "1", "--for", "60s",
    ]);
    assert_success(&out);
    let s = &stdout_json(&out)[0];
    let top = &s["frames"][0];
    let n = ival(var(top, "n"));
    let n_u = n as u64;
    // Box, Rc, Arc: see-through.
    assert_eq!(ival(var(top, "bx")), n * 2);
    assert_eq!(var(top, "rc")["value"], format!("rc-{n}"));
    assert_eq!(ival(var(top, "arc")), n + 1);
    // Cells and locks show their contents.
    assert_eq!(ival(var(top, "cell")), n + 3);
    let refcell = var(top, "refcell");
    assert_eq!(refcell["kind"], "list");
    assert_eq!(refcell["items"][1]["value"].as_i64(), Some(n + 1));
    assert_eq!(ival(var(top, "mutex")), n + 4);
    // HashMap: a map, in any order.
    let map = var(top, "map");
    assert_eq!(map["kind"], "map");
    assert_eq!(map["len"], 2);
    let mut pairs: Vec<(i64, String)> = map["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"]["value"].as_i64().unwrap(),
                e["value"]["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(pairs, [(1, "one".to_string()), (2, "two".to_string())]);
    // BTreeMap: a map in key order.
    let bt = var(top, "bt");
    assert_eq!(bt["kind"], "map");
    let bt_pairs: Vec<(i64, i64)> = bt["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"]["value"].as_i64().unwrap(),
                e["value"]["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(bt_pairs, (0..5).map(|i| (i, n + i)).collect::<Vec<_>>());
    // VecDeque in logical order, though its ring buffer wrapped.
    let dq: Vec<i64> = var(top, "dq")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_i64().unwrap())
        .collect();
    assert_eq!(dq, [6, 7, 8]);
    let mut set: Vec<i64> = var(top, "set")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_i64().unwrap())
        .collect();
    set.sort();
    assert_eq!(set, [3, 4]);
    let bset: Vec<i64> = var(top, "bset")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_i64().unwrap())
        .collect();
    assert_eq!(bset, [9, 10]);
    // Tuples, arrays, Option<Box<T>>, Result, u128.
    let tup = var(top, "tup");
    assert_eq!(tup["fields"]["0"]["value"].as_i64(), Some(n));
    assert_eq!(tup["fields"]["1"]["value"], "x");
    assert_eq!(tup["fields"]["2"]["value"], "c");
    assert_eq!(var(top, "arr")["len"], 3);
    let opt = var(top, "opt_box");
    assert_eq!(opt["variant"], "Some");
    assert_eq!(ival(&opt["fields"]["0"]), 5);
    let res = var(top, "res");
    assert_eq!(res["variant"], "Err");
    assert_eq!(res["fields"]["0"]["value"], "bad");
    assert_eq!(
        var(top, "big")["value"],
        (u128::MAX - n_u as u128).to_string()
    );
    t.assert_untouched();
}

#[test]
fn cpp_strings_vectors_and_function_pointers() {
    let mut t = Target::start(&shapes(), &[]);
    let pid = t.pid.to_string();
    let loc = format!("shapes.cpp:{}", probe_line("shapes.cpp", "cpp-measure"));
    let out = run_periscope(&[
        "snapshot",
        &pid,
        &loc,
        "--json",
        "--frames",
        "1",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for snap in stdout_json(&out) {
        let top = &snap["frames"][0];
        assert_eq!(top["function"], "measure");
        let round = ival(var(top, "round"));
        let s = &deref(var(top, "s"))["fields"];
        assert_eq!(s["name"]["kind"], "string");
        assert_eq!(s["name"]["value"], format!("shape-{round}"));
        let sides = &s["sides"];
        assert_eq!(sides["kind"], "list");
        assert_eq!(sides["len"].as_i64(), Some(round % 5 + 1));
        assert!(sides["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["value"].as_i64() == Some(round)));
        assert_eq!(s["area"]["value"].as_f64(), Some(round as f64 * 1.5));
        assert_eq!(s["scale"]["kind"], "function");
        assert!(
            s["scale"]["symbol"].as_str().unwrap().contains("twice"),
            "{}",
            s["scale"]
        );
    }
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "{s.name} {s.sides.len()} {s.sides[0]} {round}",
        "--json",
        "--max-hits",
        "2",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for h in stdout_json(&out) {
        let round = int(&h, "round");
        assert_eq!(string(&h, "s.name"), format!("shape-{round}"));
        assert_eq!(int(&h, "s.sides.len()"), round % 5 + 1);
        assert_eq!(int(&h, "s.sides[0]"), round);
    }
    t.assert_untouched();
}

/// In an optimized build, what DWARF still describes must be right and the rest marked
/// `optimized out`: each variable is checked against `n` whenever it is available.
#[test]
fn release_build_std_types_are_right_or_marked() {
    let mut t = Target::start(&kinds_release(), &[]);
    let pid = t.pid.to_string();
    // A function probe reads the arguments even where optimized code put inlined callees first.
    let out = run_periscope(&[
        "log",
        &pid,
        "look",
        "{n}",
        "--json",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let ns: Vec<i64> = stdout_json(&out).iter().map(|h| int(h, "n")).collect();
    assert_eq!(ns.len(), 3);
    assert!(
        ns.windows(2).all(|w| w[1] == w[0] + 1),
        "look(n) is called with n, n+1, …: {ns:?}"
    );

    let loc = format!("kinds.rs:{}", probe_line("kinds.rs", "kinds-total"));
    let out = run_periscope(&[
        "snapshot", &pid, &loc, "--json", "--frames", "1", "--for", "60s",
    ]);
    assert_success(&out);
    let s = &stdout_json(&out)[0];
    let top = &s["frames"][0];
    let n = ival(var(top, "n"));
    let mut checked = 0;
    let vars = top["variables"].as_object().unwrap();
    for (name, v) in vars {
        if v["kind"] == "unavailable" {
            assert_eq!(v["reason"], "optimized out", "{name}: {v}");
            continue;
        }
        checked += 1;
        match name.as_str() {
            "n" => {}
            "bx" => assert_eq!(ival(v), n * 2),
            "rc" => assert_eq!(v["value"], format!("rc-{n}")),
            "arc" => assert_eq!(ival(v), n + 1),
            "cell" => assert_eq!(ival(v), n + 3),
            "mutex" => assert_eq!(ival(v), n + 4),
            "map" => assert_eq!(v["len"], 2),
            "bt" => assert_eq!(v["entries"][4]["value"]["value"].as_i64(), Some(n + 4)),
            "set" | "bset" => assert_eq!(v["len"], 2),
            "arr" => assert_eq!(v["len"], 3),
            "long" => assert_eq!(v["len"].as_i64(), Some(300 + n % 2)),
            "many" => assert_eq!(v["items"][0]["value"].as_i64(), Some(n)),
            "dq" => assert_eq!(v["len"], 3),
            "big" => assert_eq!(v["value"], (u128::MAX - n as u128).to_string()),
            "dangling" => assert_eq!(v["address"], "0x10"),
            _ => {}
        }
    }
    assert!(
        checked >= 8,
        "too little survived optimization to check: {vars:?}"
    );
    t.assert_untouched();
}

/// C at -O2: every value DWARF still has obeys the target's relations; the rest is marked.
#[test]
fn c_release_build_values_are_right_or_marked() {
    let mut t = Target::start(&jobs_release(), &["2000"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "snapshot",
        &pid,
        "process_job",
        "--json",
        "--frames",
        "2",
        "--max-hits",
        "4",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let mut checked = 0;
    for s in stdout_json(&out) {
        let top = &s["frames"][0];
        assert_eq!(top["function"], "process_job");
        let j = var(top, "j");
        if j["kind"] == "unavailable" {
            assert_eq!(j["reason"], "optimized out");
            continue;
        }
        let fields = &deref(j)["fields"];
        let id = fields["id"]["value"].as_i64().unwrap();
        assert_eq!(fields["name"]["value"], format!("job-{id}"));
        assert_eq!(
            fields["owner"]["value"],
            if id % 2 == 0 { "alice" } else { "bob" }
        );
        assert_eq!(fields["weight"]["value"].as_f64(), Some(id as f64 / 2.0));
        let kind = ["KIND_SMALL", "KIND_LARGE", "KIND_URGENT"][(id % 3) as usize];
        assert_eq!(fields["kind"]["variant"], kind);
        checked += 1;
        let round = var(top, "round");
        if round["kind"] == "int" {
            let round = round["value"].as_i64().unwrap();
            assert!(round >= 0);
            // worker's ids: base + round * 2 + k, base a multiple of 1000000.
            assert!(
                matches!((id % 1_000_000) - round * 2, 0 | 1),
                "id {id} round {round}"
            );
        }
    }
    assert!(checked > 0, "j was optimized out at every hit");
    t.assert_untouched();
}
