//! The in-kernel engine (`--engine bpf`, and `auto`'s choice): eBPF uprobes with capture plans.
//! Values read in the kernel are checked against the relations the targets guarantee and
//! against the ptrace engine's reading of the same expressions; conditions and limits are
//! applied in the kernel; durations and gauges against what the target does; and a periscope
//! killed with SIGKILL leaves no uprobe behind and the code as it was.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;

const MEMOS: [&str; 3] = ["rent", "coffee", "books"];
const ORDER_TEMPLATE: &str = "id={o->id} qty={o->qty} price={o->price} code={o->code} note={o->note} state={o->state} flag={o->flag} delta={o->delta} worker={worker} o={*o}";

fn log(pid: u32, loc: &str, template: &str, engine: &str, extra: &[&str]) -> Vec<Value> {
    let pid = pid.to_string();
    let mut args = vec![
        "log", &pid, loc, template, "--json", "--engine", engine, "--for", "60s",
    ];
    args.extend_from_slice(extra);
    let out = run_periscope(&args);
    assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains(&format!("engine: {engine}")), "{err}");
    let json = stdout_json(&out);
    for h in &json {
        assert_eq!(h["engine"], engine, "{h}");
    }
    json
}

/// The type and kind of every value of a hit: what must read the same on both engines.
fn shapes(h: &Value) -> Vec<(String, String, String)> {
    h["values"]
        .as_object()
        .expect("values")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v["kind"].as_str().unwrap_or("").to_string(),
                v["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn check_orders(hits: &[Value]) -> HashSet<u64> {
    let mut tids = HashSet::new();
    for h in hits {
        let n = int(h, "o->id");
        assert_eq!(int(h, "o->qty"), n % 7, "{h}");
        assert_eq!(
            h["values"]["o->price"]["value"].as_f64(),
            Some(n as f64 * 0.5)
        );
        assert_eq!(string(h, "o->code"), format!("C{}", n % 10));
        assert_eq!(string(h, "o->note"), format!("note-{}", n % 3));
        let state = ["NEW", "PAID", "SHIPPED"][(n % 3) as usize];
        assert_eq!(h["values"]["o->state"]["variant"], state, "{h}");
        assert_eq!(int(h, "o->flag"), n % 2);
        assert_eq!(int(h, "o->delta"), -(n % 100));
        // The whole struct, its string member read through its pointer.
        let o = &h["values"]["*o"]["fields"];
        assert_eq!(o["id"]["value"].as_i64(), Some(n), "{h}");
        assert_eq!(o["note"]["value"], format!("note-{}", n % 3), "{h}");
        assert_eq!(o["code"]["value"], format!("C{}", n % 10), "{h}");
        tids.insert(h["tid"].as_u64().unwrap());
    }
    tids
}

fn orders_in_kernel_and_ptrace(exe: &std::path::Path) {
    let t = Target::start(exe, &["500"]);
    let loc = format!("orders.c:{}", probe_line("orders.c", "orders-handle"));
    let bpf = log(t.pid, &loc, ORDER_TEMPLATE, "bpf", &["--max-hits", "60"]);
    assert_eq!(bpf.len(), 60);
    // Each batch runs on a thread started after the probe went in.
    let tids = check_orders(&bpf);
    assert!(tids.len() >= 2, "hits came from one thread only: {tids:?}");
    let ptrace = log(t.pid, &loc, ORDER_TEMPLATE, "ptrace", &["--max-hits", "5"]);
    check_orders(&ptrace);
    assert_eq!(shapes(&bpf[0]), shapes(&ptrace[0]));
    let mut t = t;
    t.assert_untouched();
}

#[test]
fn c_o0_values_read_in_the_kernel_match_the_target_and_ptrace() {
    orders_in_kernel_and_ptrace(&orders_o0_alone());
}

#[test]
fn c_o2_values_read_in_the_kernel_match_the_target_and_ptrace() {
    orders_in_kernel_and_ptrace(&orders_o2_alone());
}

const LEDGER_TEMPLATE: &str = "seq={t.seq} amount={t.amount_cents} fee={fee} memo={t.memo} worker={t.worker} sum={t.amount_cents + fee} owner={t.from.owner} note={t.note} n={ledger.len()} token={t.from.api_token}";

fn check_ledger(h: &Value) {
    let seq = int(h, "t.seq");
    let worker = int(h, "t.worker");
    let amount = int(h, "t.amount_cents");
    assert_eq!(amount, seq * 100 + worker, "{h}");
    assert_eq!(int(h, "fee"), amount / 10, "{h}");
    assert_eq!(int(h, "t.amount_cents + fee"), amount + amount / 10);
    assert_eq!(string(h, "t.memo"), MEMOS[(seq % 3) as usize]);
    assert_eq!(string(h, "t.from.owner"), format!("owner-{worker}"));
    assert_eq!(
        h["values"]["t.note"]["variant"],
        if seq % 2 == 0 { "Some" } else { "None" }
    );
    assert!(int(h, "ledger.len()") <= 64, "{h}");
    // The secret is never read, in the kernel either.
    assert!(h["values"]["t.from.api_token"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("redacted")));
}

#[test]
fn rust_debug_values_read_in_the_kernel_match_the_target_and_ptrace() {
    let mut t = Target::start(&ledger_debug(), &["500", "2"]);
    let loc = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total"));
    let bpf = log(t.pid, &loc, LEDGER_TEMPLATE, "bpf", &["--max-hits", "40"]);
    assert_eq!(bpf.len(), 40);
    bpf.iter().for_each(check_ledger);
    let tids: HashSet<u64> = bpf.iter().map(|h| h["tid"].as_u64().unwrap()).collect();
    assert!(tids.len() >= 2, "{tids:?}");
    let ptrace = log(t.pid, &loc, LEDGER_TEMPLATE, "ptrace", &["--max-hits", "4"]);
    ptrace.iter().for_each(check_ledger);
    assert_eq!(shapes(&bpf[0]), shapes(&ptrace[0]));
    let out = String::from_utf8_lossy(
        &run_periscope(&[
            "log",
            &t.pid.to_string(),
            &loc,
            "{t.from}",
            "--engine",
            "bpf",
            "--max-hits",
            "3",
            "--for",
            "60s",
        ])
        .stdout,
    )
    .into_owned();
    assert!(!out.contains("tok-"), "a secret's bytes were shown: {out}");
    t.assert_untouched();
}

#[test]
fn rust_release_values_read_in_the_kernel_match_ptrace() {
    let mut t = Target::start(&ledger_release(), &["500", "2"]);
    let loc = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total"));
    let template = "fee={fee} seq={t.seq} n={ledger.len()}";
    let bpf = log(t.pid, &loc, template, "bpf", &["--max-hits", "20"]);
    let ptrace = log(t.pid, &loc, template, "ptrace", &["--max-hits", "4"]);
    for h in bpf.iter().chain(&ptrace) {
        assert_eq!(int(h, "fee") % 10, 0, "{h}");
        // rustc drops `t` here at opt-level 3: both engines say so rather than guess.
        assert_eq!(h["values"]["t.seq"]["reason"], "optimized out", "{h}");
    }
    assert_eq!(shapes(&bpf[0]), shapes(&ptrace[0]));
    t.assert_untouched();
}

#[test]
fn conditions_rate_and_hit_limits_apply_in_the_kernel() {
    let t = Target::start(&orders_o2(), &["200"]);
    let loc = format!("orders.c:{}", probe_line("orders.c", "orders-handle"));
    let hits = log(
        t.pid,
        &loc,
        "id={o->id}",
        "bpf",
        &[
            "--if",
            "o->price > 10.5 && o->state == PAID && o->delta < -20 && worker % 2 == 1",
            "--max-hits",
            "7",
        ],
    );
    assert_eq!(hits.len(), 7, "the hit limit is exact");
    for h in &hits {
        let n = int(h, "o->id");
        assert!(n as f64 * 0.5 > 10.5 && n % 3 == 1 && n % 100 > 20, "{h}");
    }
    // 2 per second for 2.5 s: at most 3 windows' worth, and at least one.
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "id={o->id}",
        "--json",
        "--engine",
        "bpf",
        "--rate",
        "2",
        "--for",
        "2500ms",
    ]);
    assert_success(&out);
    let n = stdout_json(&out).len();
    assert!((1..=6).contains(&n), "{n} hits logged at 2/s in 2.5 s");
}

#[test]
fn durations_and_gauges_match_what_the_target_does() {
    let t = Target::start(&orders_o0(), &["200"]);
    let pid = t.pid.to_string();
    // timed(ms) busy-waits ms milliseconds: 1 for even orders, 3 for odd ones.
    let out = run_periscope(&[
        "duration", &pid, "timed", "--by", "ms", "--json", "--for", "3s", "--every", "1s",
    ]);
    assert_success(&out);
    let lines = stdout_json(&out);
    let total = lines.last().expect("a total line");
    assert_eq!(total["kind"], "total", "{total}");
    assert_eq!(total["engine"], "bpf");
    let g = &total["groups"];
    for (ms, key) in [(1u64, "1"), (3, "3")] {
        let m = &g[key];
        let calls = m["calls"].as_u64().unwrap_or(0);
        assert!(calls > 0, "no calls of timed({ms}): {total}");
        assert!(m["min_ns"].as_u64().unwrap() >= ms * 1_000_000, "{m}");
        assert!(m["mean_ns"].as_u64().unwrap() >= ms * 1_000_000, "{m}");
    }
    assert!(
        g["3"]["mean_ns"].as_u64() > g["1"]["mean_ns"].as_u64(),
        "{g}"
    );
    let calls: u64 = total["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(calls, total["calls"].as_u64().unwrap());
    // A gauge of the price (n * 0.5) grouped by state: every sample is a half-integer, and
    // a state's prices are n * 0.5 with n % 3 fixed.
    let loc = format!("orders.c:{}", probe_line("orders.c", "orders-handle"));
    let out = run_periscope(&[
        "gauge", &pid, &loc, "o->price", "--by", "o->state", "--json", "--for", "2s",
    ]);
    assert_success(&out);
    let total = stdout_json(&out).pop().expect("a total line");
    for (state, rem) in [("NEW", 0), ("PAID", 1), ("SHIPPED", 2)] {
        let m = &total["groups"][state];
        assert!(m["samples"].as_u64().unwrap() > 0, "{total}");
        for f in ["last", "min", "max"] {
            let n = (m[f].as_f64().unwrap() * 2.0) as i64;
            assert_eq!(n % 3, rem, "{state} {f}: {m}");
        }
        assert!(m["min"].as_f64() <= m["mean"].as_f64() && m["mean"].as_f64() <= m["max"].as_f64());
    }
}

/// The ids of the BPF links a process holds (its fds' `link_id` in /proc/PID/fdinfo).
fn links_of(pid: u32) -> HashSet<u64> {
    let mut ids = HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in info.lines() {
            if let Some(id) = l.strip_prefix("link_id:") {
                ids.extend(id.trim().parse::<u64>().ok());
            }
        }
    }
    ids
}

/// Every BPF link in the system, as bpftool lists them.
fn system_links() -> HashSet<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "link", "list"])
        .output()
        .expect("run bpftool (apt-get install bpftool)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

/// SIGKILLs a live periscope and checks that the kernel took every link it held away.
fn kill_and_check(mut p: std::process::Child, what: &str) {
    let held = links_of(p.id());
    assert!(!held.is_empty(), "{what}: no uprobe link while probing");
    assert!(
        held.is_subset(&system_links()),
        "{what}: bpftool does not list our links"
    );
    p.kill().expect("SIGKILL periscope");
    p.wait().expect("reap periscope");
    let left: Vec<u64> = held.intersection(&system_links()).copied().collect();
    assert!(
        left.is_empty(),
        "{what}: uprobe links {left:?} left after kill -9"
    );
}

#[test]
fn kill_9_during_hits_leaves_no_uprobe_and_the_code_as_it_was() {
    let mut t = Target::start(&orders_o2(), &["0"]);
    let loc = format!("orders.c:{}", probe_line("orders.c", "orders-handle"));
    let pid = t.pid.to_string();
    for round in 0..3 {
        let p = start_live(&[
            "log",
            &pid,
            &loc,
            "id={o->id} note={o->note}",
            "--engine",
            "bpf",
            "--for",
            "60s",
        ]);
        std::thread::sleep(std::time::Duration::from_millis(50 * round));
        // The kernel closes a dead process's fds; its links go with them (now, not later).
        kill_and_check(p, &format!("log, round {round}"));
        t.assert_untouched();
    }
    // `count` and `duration` too.
    for args in [
        vec![
            "count",
            pid.as_str(),
            "handle",
            "--engine",
            "bpf",
            "--for",
            "60s",
        ],
        vec!["duration", pid.as_str(), "timed", "--for", "60s"],
    ] {
        let p = start_live(&args);
        kill_and_check(p, args[0]);
        t.assert_untouched();
    }
}

#[test]
fn bpf_refuses_what_cannot_run_in_the_kernel_and_auto_falls_back() {
    let mut t = Target::start(&service(), &["2000"]);
    let loc = format!("service.rs:{}", probe_line("service.rs", "handle-cost"));
    let pid = t.pid.to_string();
    let template = "host={req.headers[\"host\"]}";
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        template,
        "--engine",
        "bpf",
        "--for",
        "10s",
        "--max-hits",
        "1",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot run in the kernel") && err.contains("indexing"),
        "{err}"
    );
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        template,
        "--json",
        "--for",
        "30s",
        "--max-hits",
        "2",
    ]);
    assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains("engine: ptrace (indexing"), "{err}");
    for h in stdout_json(&out) {
        assert_eq!(h["engine"], "ptrace");
        assert_eq!(string(&h, "req.headers[\"host\"]"), "example.com");
    }
    // What compiles runs in the kernel by default.
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "id={req.id} path={req.path}",
        "--json",
        "--for",
        "30s",
        "--max-hits",
        "2",
    ]);
    assert_success(&out);
    assert!(stderr(&out).contains("engine: bpf"), "{}", stderr(&out));
    for h in stdout_json(&out) {
        assert_eq!(
            string(&h, "req.path"),
            format!("/item/{}", int(&h, "req.id") % 10)
        );
    }
    // A duration cannot run on ptrace.
    let out = run_periscope(&[
        "duration", &pid, "handle", "--engine", "ptrace", "--for", "1s",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only in the kernel"),
        "{}",
        stderr(&out)
    );
    t.assert_untouched();
}

/// A loop head has several addresses (gcc -O0: the initialisation, and the test the loop jumps
/// back to): one pass through it is one hit on both engines, as it is one execution of the line.
/// Without that, each pass would be reported twice. Also: a kernel-only session ends when the
/// target exits even while its parent has not reaped it yet (a zombie).
#[test]
fn one_execution_of_a_line_with_several_addresses_is_one_hit_on_both_engines() {
    let n = 50;
    let line = probe_line("hot.c", "loop-head");
    let mut seen = Vec::new();
    for engine in ["bpf", "ptrace"] {
        let mut t = Target::start(&hot(), &[&n.to_string(), "0", "wait"]);
        let pid = t.pid.to_string();
        let loc = format!("hot.c:{line}");
        let mut p = periscope()
            .args(["log", &pid, &loc, "i={i}", "--json", "--engine", engine])
            .args(["--for", "120s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(p.stderr.take().unwrap());
        let mut banner = String::new();
        std::io::BufRead::read_line(&mut err, &mut banner).unwrap();
        assert!(banner.contains("probing"), "{banner}");
        t.go();
        let out = p.wait_with_output().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        let hits = stdout_json(&out);
        // The test target is not reaped before this: the command saw the exit of a zombie
        // (not the end of --for).
        assert!(rest.contains("target exited"), "{engine}: {rest}");
        // Once at the initialisation (i not set yet), then once per test of `i < n` but the
        // first, which continues the initialisation's execution of the line.
        assert_eq!(hits.len(), n, "{engine}: {hits:?}");
        let values: Vec<i64> = hits.iter().skip(1).map(|h| int(h, "i")).collect();
        assert_eq!(values, (1..n as i64).collect::<Vec<_>>(), "{engine}");
        seen.push(values);
        let (status, _) = t.wait_output();
        assert!(status.success());
    }
    assert_eq!(seen[0], seen[1], "both engines report the same executions");

    // The kernel's hit limit counts executions too: 5 hits are the first 5 passes.
    let mut t = Target::start(&hot(), &[&n.to_string(), "0", "wait"]);
    let pid = t.pid.to_string();
    let loc = format!("hot.c:{line}");
    let p = start_live(&[
        "log",
        &pid,
        &loc,
        "i={i}",
        "--json",
        "--engine",
        "bpf",
        "--max-hits",
        "5",
        "--for",
        "120s",
    ]);
    t.go();
    let hits = stdout_json(&p.wait_with_output().unwrap());
    let values: Vec<i64> = hits.iter().skip(1).map(|h| int(h, "i")).collect();
    assert_eq!(values, [1, 2, 3, 4], "{hits:?}");
    let (status, _) = t.wait_output();
    assert!(status.success());
}

/// The kind and type tree of a value, without its numbers, text and addresses: what both
/// engines must show alike.
fn skeleton(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["kind", "type", "truncated"] {
        if let Some(x) = v.get(key) {
            out.insert(key.into(), x.clone());
        }
    }
    if let Some(t) = v.get("target") {
        out.insert("target".into(), skeleton(t));
    }
    if let Some(Value::Object(fields)) = v.get("fields") {
        let f = fields.iter().map(|(k, x)| (k.clone(), skeleton(x)));
        out.insert("fields".into(), Value::Object(f.collect()));
    }
    Value::Object(out)
}

/// A pointer is no depth level on either engine: `{j}` shows the job, the job its `next`
/// points at, and that one's null `next` (`"0x0"`), the kernel having copied every byte of it.
#[test]
fn structs_behind_pointers_are_shown_as_deep_by_both_engines() {
    let mut t = Target::start(&jobs_pie(), &["2000"]);
    let loc = format!("jobs.c:{}", probe_line("jobs.c", "process-cost"));
    let null = serde_json::json!({"kind": "pointer", "type": "struct job *", "address": "0x0"});
    let mut chains = Vec::new();
    for (engine, hits) in [("bpf", "20"), ("ptrace", "6")] {
        let mut chain = None;
        for h in log(t.pid, &loc, "{j}", engine, &["--max-hits", hits]) {
            let j = &h["values"]["j"];
            let job = &j["target"]["fields"];
            let id = job["id"]["value"]
                .as_i64()
                .unwrap_or_else(|| panic!("{engine}: {h}"));
            if id % 2 == 1 {
                assert_eq!(job["next"], null, "{engine}: {h}");
            } else if (id % 1_000_000) / 2 > 0 {
                // The second job of the pair still holds the previous round's.
                let second = &job["next"]["target"]["fields"];
                assert_eq!(
                    second["id"]["value"].as_i64(),
                    Some(id - 1),
                    "{engine}: {h}"
                );
                assert_eq!(second["name"]["value"], format!("job-{}", id - 1));
                assert_eq!(second["owner"]["value"], "bob", "{engine}: {h}");
                assert_eq!(second["next"], null, "{engine}: {h}");
                chain.get_or_insert_with(|| skeleton(j));
            }
        }
        chains.push(chain.unwrap_or_else(|| panic!("{engine}: no first job of a pair")));
    }
    assert_eq!(chains[0], chains[1], "the engines show different shapes");
    t.assert_untouched();
}

/// The kernel copies what the reader's bounds show, no more: a chain of ten pointers is
/// followed eight deep, a ring of nodes to the depth limit, alike on both engines.
#[test]
fn pointer_chains_and_cycles_are_bounded_alike_on_both_engines() {
    let mut t = Target::start(&chain(), &[]);
    let loc = format!("chain.c:{}", probe_line("chain.c", "chain-walk"));
    let mut seen = Vec::new();
    for engine in ["bpf", "ptrace"] {
        let hits = log(t.pid, &loc, "{p10} {ring}", engine, &["--max-hits", "3"]);
        for h in &hits {
            let mut v = &h["values"]["p10"];
            let mut hops = 0;
            while !v["target"].is_null() {
                v = &v["target"];
                hops += 1;
            }
            assert_eq!(hops, 8, "{engine}: {h}");
            assert_eq!(v["type"], "int * *", "{engine}: {h}");
            let mut node = &h["values"]["ring"];
            for id in [1, 2, 1, 2] {
                assert_eq!(node["target"]["fields"]["id"]["value"], id, "{engine}: {h}");
                node = &node["target"]["fields"]["next"];
            }
            assert!(node["target"].is_null(), "{engine}: {h}");
        }
        seen.push((
            skeleton(&hits[0]["values"]["p10"]),
            skeleton(&hits[0]["values"]["ring"]),
        ));
    }
    assert_eq!(seen[0], seen[1], "the engines show different shapes");
    t.assert_untouched();
}
