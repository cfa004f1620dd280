//! Go programs, built by the Go toolchain's defaults (and PIE, cgo, `-trimpath`): Go's names,
//! values as Go shows them, expressions the Go way, goroutine ids. Every value is checked
//! against relations the sample service guarantees for request n (see its main.go).

mod common;

use common::fleet::json_list;

use common::{probe_line, run_periscope, stdout_json, Target};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn line(file: &str, tag: &str) -> String {
    format!("{file}:{}", probe_line(&format!("go/shop/{file}"), tag))
}

fn text(v: &Value) -> &str {
    v["value"]
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Go's nil is the null pointer of every language: `{"kind":"pointer","type":…,"address":"0x0"}`
/// and nothing else (no target).
fn assert_nil(v: &Value, ty: &str, e: &Value) {
    assert_eq!(
        v,
        &serde_json::json!({"kind": "pointer", "type": ty, "address": "0x0"}),
        "{e}"
    );
}

fn int(v: &Value) -> i64 {
    v["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an int: {v}"))
}

#[test]
fn values_read_as_go_shows_them() {
    check_values(&common::go_shop_default());
}

/// The same with Go 1.22, whose maps are the older bucket maps (Swiss tables came in 1.24).
#[test]
fn values_of_go_1_22_with_bucket_maps() {
    check_values(&common::go_shop_122());
}

fn check_values(bin: &std::path::Path) {
    let mut t = Target::start(bin, &["500"]);
    let template = "id={req.ID} name={req.Name} tags={req.Tags} headers={req.Headers} \
        attrs={req.Attrs} scores={req.Scores} ratio={req.Ratio} ok={req.Ok} err={req.Err} \
        any={req.Any} wait={req.Wait} queue={req.Queue} next={req.Next} h0={req.Headers[0].Name} \
        ntags={len(req.Tags)}";
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &line("main.go", "handle"),
        template,
        "--max-hits",
        "30",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    let events = stdout_json(&out);
    assert_eq!(events.len(), 30);
    let mut goroutines: BTreeMap<i64, BTreeSet<u64>> = BTreeMap::new();
    for e in &events {
        let v = &e["values"];
        let n = int(&v["req.ID"]);
        assert_eq!(text(&v["req.Name"]), format!("user-{}", n % 7), "{e}");
        // Slices: nil when empty, else len and cap and the elements.
        let tags = &v["req.Tags"];
        if n % 4 == 0 {
            assert_nil(tags, "[]string", e);
        } else {
            assert_eq!(tags["kind"], "list", "{e}");
            assert_eq!(tags["len"].as_i64(), Some(n % 4));
            assert!(tags["cap"].as_i64() >= Some(n % 4), "{e}");
            for (i, item) in tags["items"].as_array().expect("items").iter().enumerate() {
                assert_eq!(text(item), format!("t{i}"));
            }
        }
        assert_eq!(int(&v["len(req.Tags)"]), n % 4);
        let headers = v["req.Headers"]["items"].as_array().expect("headers");
        assert_eq!(headers.len() as i64, n % 3 + 1, "{e}");
        assert_eq!(text(&v["req.Headers[0].Name"]), "h0");
        // Maps: Swiss tables, every key with its value.
        let attrs = &v["req.Attrs"];
        assert_eq!(attrs["kind"], "map", "{e}");
        let mut keys: Vec<(String, i64)> = attrs["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|en| (text(&en["key"]).to_string(), int(&en["value"])))
            .collect();
        keys.sort();
        let want: Vec<(String, i64)> = (0..n % 5).map(|i| (format!("k{i}"), i)).collect();
        assert_eq!(keys, want, "{e}");
        let scores: Vec<i64> = v["req.Scores"]["items"]
            .as_array()
            .expect("array")
            .iter()
            .map(int)
            .collect();
        assert_eq!(scores, vec![n, n + 1, n + 2]);
        assert_eq!(v["req.Ratio"]["value"].as_f64(), Some(n as f64 / 4.0));
        assert_eq!(v["req.Ok"]["value"], n % 2 == 0);
        // Interfaces: nil, or the dynamic value with its type.
        let err = &v["req.Err"];
        if n % 3 == 0 {
            assert_eq!(text(err), format!("bad request {n}"), "{e}");
            assert_eq!(err["type"], "*errors.errorString");
        } else {
            assert_nil(err, "error", e);
        }
        let any = &v["req.Any"];
        if n % 2 == 0 {
            assert_eq!(int(any), n, "{e}");
            assert_eq!(any["type"], "int");
        } else {
            assert_eq!(text(any), format!("s-{n}"), "{e}");
        }
        // time.Duration as Go writes it; channels by element type, len and cap.
        let wait = text(&v["req.Wait"]);
        assert!(wait.ends_with('s') && !wait.is_empty(), "{wait}");
        let q = &v["req.Queue"]["fields"];
        assert_eq!(text(&q["elem"]), "int");
        assert_eq!(int(&q["len"]), n % 4);
        assert_eq!(int(&q["cap"]), 8);
        assert_nil(&v["req.Next"], "*main.Request", e);
        let g = e["goroutine"].as_u64().expect("a goroutine id");
        goroutines.entry(n % 2).or_default().insert(g);
    }
    // Worker w handles the requests of parity w, each in its own goroutine: one goroutine per
    // parity, whichever threads ran them.
    assert_eq!(goroutines.len(), 2, "{goroutines:?}");
    let ids: Vec<&BTreeSet<u64>> = goroutines.values().collect();
    assert!(ids.iter().all(|s| s.len() == 1), "{goroutines:?}");
    assert_ne!(ids[0], ids[1]);
    t.assert_untouched();
}

#[test]
fn conditions_and_names_the_go_way() {
    let mut t = Target::start(&common::go_shop_default(), &["500"]);
    let pid = t.pid.to_string();
    // `err != nil`, string comparison, a map read by key, through pointers as Go does.
    let out = run_periscope(&[
        "log",
        &pid,
        &line("main.go", "handle"),
        "id={req.ID} k1={req.Attrs[\"k1\"]}",
        "--if",
        "req.Err != nil && req.Next == nil && len(req.Attrs) >= 2 && req.Name != \"user-0\"",
        "--max-hits",
        "5",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    for e in stdout_json(&out) {
        let n = int(&e["values"]["req.ID"]);
        assert_eq!(n % 3, 0, "{e}");
        assert!(n % 5 >= 2 && n % 7 != 0, "{e}");
        assert_eq!(int(&e["values"]["req.Attrs[\"k1\"]"]), 1);
    }
    // A method with a pointer receiver, by Go's name; a function inlined from another package,
    // unqualified, reading a field promoted from an embedded struct and a time.Time.
    let out = run_periscope(&[
        "log",
        &pid,
        "main.(*Cache).get",
        "id={id} hits={c.hits}",
        "--max-hits",
        "2",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    assert!(stdout_json(&out)
        .iter()
        .all(|e| int(&e["values"]["id"]) < 16));
    let out = run_periscope(&[
        "log",
        &pid,
        "Total",
        "owner={c.Owner} touched={c.Touched} created={c.Created}",
        "--max-hits",
        "1",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    let e = &stdout_json(&out)[0];
    assert_eq!(text(&e["values"]["c.Owner"]), "ann");
    assert!(int(&e["values"]["c.Touched"]) >= 2, "{e}");
    assert_eq!(text(&e["values"]["c.Created"]), "2023-11-14T22:13:20Z");
    t.assert_untouched();
}

#[test]
fn pie_cgo_and_trimpath_builds_and_generic_instances() {
    let bin = common::go_shop_pie_cgo_trimpath();
    let out = run_periscope(&["functions", bin.to_str().expect("path"), "shop/cart"]);
    common::assert_success(&out);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("github.com/acme/shop/cart.(*Cart).Total")
            && listed.contains("github.com/acme/shop/cart.(*Cart).Add"),
        "{listed}"
    );
    let mut t = Target::start(&bin, &["500"]);
    let pid = t.pid.to_string();
    // Both instances of the generic Sum (int and float64) get the probe.
    let out = run_periscope(&[
        "log",
        &pid,
        "main.Sum",
        "s={s}",
        "--max-hits",
        "6",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(2 code addresses"), "{err}");
    let out = run_periscope(&[
        "log",
        &pid,
        &line("main.go", "handle"),
        "id={req.ID} name={req.Name} err={req.Err}",
        "--max-hits",
        "6",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    for e in stdout_json(&out) {
        let n = int(&e["values"]["req.ID"]);
        assert_eq!(text(&e["values"]["req.Name"]), format!("user-{}", n % 7));
        assert!(e["goroutine"].as_u64().is_some(), "{e}");
    }
    t.assert_untouched();
}

/// Starts `periscope ARGS` once its banner (`watching`/`probing`) is out, with its stdout to
/// read.
fn start_periscope(args: &[&str]) -> std::process::Child {
    common::start_live_after(args, &["watching", "probing"], 2)
}

fn json_lines(child: std::process::Child) -> Vec<Value> {
    let out = child.wait_with_output().expect("periscope output");
    stdout_json(&out)
}

#[test]
fn panics_are_caught_before_recovery_and_the_program_goes_on() {
    let mut t = Target::start(&common::go_shop_default(), &["500"]);
    let out = run_periscope(&["watch", &t.pid.to_string(), "--for", "3s", "--json"]);
    common::assert_success(&out);
    let events = stdout_json(&out);
    assert!(!events.is_empty(), "no panic caught in 3 s");
    let panic_line = line("main.go", "recovered-panic");
    for e in &events {
        let f = &e["failure"];
        assert_eq!(f["kind"], "panic", "{e}");
        let message = f["message"].as_str().expect("message");
        let n: i64 = message
            .strip_prefix("request ")
            .and_then(|m| m.strip_suffix(" refused"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{message}"));
        assert_eq!(n % 10, 7, "{e}");
        assert_eq!(e["location"], panic_line.as_str(), "{e}");
        // The panicking frame's locals: the request that panicked.
        let handle = e["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .find(|f| f["function"] == "main.handle")
            .unwrap_or_else(|| panic!("no main.handle frame: {e}"));
        let req = &handle["variables"]["req"]["target"]["fields"];
        assert_eq!(req["ID"]["value"].as_i64(), Some(n), "{handle}");
        assert!(e["goroutine"].as_u64().is_some());
    }
    // It recovered every time and is running.
    t.assert_untouched();
}

/// Runs the shop with `arg` (a way to fail) under `periscope watch` until it exits: its exit
/// code, and the failure event of `kind` that watch printed.
fn watched_failure(arg: &str, kind: &str) -> (Option<i32>, serde_json::Value) {
    let mut t = Target::start(&common::go_shop_default(), &[arg]);
    let watch = start_periscope(&["watch", &t.pid.to_string(), "--json"]);
    t.go();
    let (status, _) = t.wait_output();
    let events = json_lines(watch);
    let e = events
        .iter()
        .find(|e| e["failure"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event: {events:?}"))
        .clone();
    (status.code(), e)
}

#[test]
fn an_unrecovered_panic_is_captured_and_go_exits_with_its_own_status() {
    let (code, e) = watched_failure("crash", "panic");
    assert_eq!(code, Some(2), "Go exits with status 2 on a panic");
    assert_eq!(
        e["failure"]["message"],
        "runtime error: index out of range [7] with length 3"
    );
    assert_eq!(e["location"], line("main.go", "crash").as_str(), "{e}");
}

#[test]
fn kill_9_of_periscope_during_hits_leaves_the_go_program_running() {
    let mut t = Target::start(&common::go_shop_default(), &["200"]);
    let pid = t.pid.to_string();
    for round in 0..4u64 {
        let mut p = start_periscope(&[
            "log",
            &pid,
            &line("main.go", "handle"),
            "id={req.ID}",
            "--for",
            "60s",
        ]);
        // Hits are coming in (about one every 100 µs) when it is killed.
        let mut stdout = std::io::BufReader::new(p.stdout.take().expect("stdout"));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).expect("a hit");
        std::thread::sleep(std::time::Duration::from_millis(10 + 23 * round));
        p.kill().expect("kill -9");
        let _ = p.wait();
        // Every leftover breakpoint is hit many times within this: the fail-safe handler takes
        // them, handing the Go runtime's own SIGTRAP handler nothing.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            t.child.try_wait().expect("status").is_none(),
            "the Go program died after kill -9 of periscope (round {round})"
        );
    }
    // The next periscope removes what was left, and leaves the program as it was.
    let out = run_periscope(&[
        "log",
        &pid,
        &line("main.go", "handle"),
        "id={req.ID}",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    common::assert_success(&out);
    t.assert_untouched();
}

#[test]
fn a_go_service_through_the_fleet() {
    use common::fleet::{eventually_or, instance_of, json_out, test_dir, Agent, Server};
    let dir = test_dir("go-fleet");
    let server = Server::start(&dir, 0);
    let mut t = Target::start(&common::go_shop_default(), &["500"]);
    let token = server.token("agent", "a1");
    let _agent = Agent::start(&server, &token, &["--pid", &t.pid.to_string()]);
    let instance = instance_of(&server, t.pid);
    let listed = json_out(&server.cli(&server.admin, &["instances", "--json"]));
    let me = listed["instances"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["id"] == instance.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(me["lang"], "go", "{me}");
    assert_eq!(me["language"], "go", "{me}");
    let added = json_out(&server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "log",
            &instance,
            &line("main.go", "handle"),
            "id={req.ID} err={req.Err}",
            "--max-hits",
            "5",
            "--json",
        ],
    ));
    let id = added["id"].as_str().expect("id").to_string();
    let c = server.admin();
    let events = eventually_or(
        "5 events from the Go service",
        || {
            let page = c.events(&id, &Default::default()).map(json_list).ok()?;
            (page.len() >= 5).then_some(page)
        },
        || format!("{:?}", c.probe(&id)),
    );
    for e in &events {
        assert!(e["goroutine"].as_u64().is_some(), "{e}");
        assert!(e["values"]["req.ID"]["value"].as_i64().is_some(), "{e}");
    }
    t.assert_untouched();
}

#[test]
fn a_fatal_error_is_captured_and_go_still_stops_the_program() {
    let (code, e) = watched_failure("fatal", "fatal error");
    assert_eq!(code, Some(2), "Go exits with status 2 on a fatal error");
    assert_eq!(e["failure"]["message"], "concurrent map writes", "{e}");
}
