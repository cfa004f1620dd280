//! Where a probe goes, as a new user names it: functions that exist only inlined (a release
//! build's small helpers), ambiguous names told apart by origin, a file without a line, a
//! misspelled function, names not in scope.

mod common;

use common::fleet::json_list;

use common::fleet::{instance_of, json_out, test_dir, Agent, Server};
use common::{
    assert_success, periscope, probe_line, run_periscope, service, service_release, stderr,
    stdout_json, Target,
};

fn fails_with(args: &[&str]) -> String {
    let out = periscope().args(args).output().expect("run periscope");
    assert!(!out.status.success(), "{args:?} succeeded");
    stderr(&out)
}

#[test]
fn an_inlined_only_function_is_listed_and_probed_at_every_copy() {
    let mut t = Target::start(&service_release(), &["500"]);
    let pid = t.pid.to_string();

    let out = run_periscope(&["functions", &pid, "make_request", "--json"]);
    assert_success(&out);
    let listed = &stdout_json(&out)[0]["functions"];
    let own = listed
        .as_array()
        .and_then(|l| l.iter().find(|f| f["name"] == "service::make_request"))
        .unwrap_or_else(|| panic!("service::make_request not listed: {listed}"));
    assert_eq!(own["inlined"], true, "{own}");
    assert!(
        own["inlined_into"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "service::handle")),
        "{own}"
    );
    assert_eq!(
        own["line"].as_u64(),
        Some(probe_line("service.rs", "make-request") as u64 - 1)
    );
    // The program's own functions come first.
    let out = run_periscope(&["functions", &pid, "make_request"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("service::make_request  "), "{text}");
    assert!(text.contains("[inlined into service::handle"), "{text}");

    // Probed inside `handle`, with its own parameters in scope: n's parity is the worker's.
    let out = run_periscope(&[
        "log",
        &pid,
        "service::make_request",
        "n={n} w={worker}",
        "--json",
        "--max-hits",
        "6",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for h in stdout_json(&out) {
        let n = h["values"]["n"]["value"].as_u64().expect("n");
        let w = h["values"]["worker"]["value"].as_u64().expect("worker");
        assert_eq!(n % 2, w, "{h}");
        assert!(
            h["location"]
                .as_str()
                .is_some_and(|l| l.starts_with("service.rs:")),
            "{h}"
        );
    }
    t.assert_untouched();
}

#[test]
fn an_ambiguous_name_lists_each_candidate_with_its_origin() {
    let t = Target::start(&service_release(), &["5000"]);
    let pid = t.pid.to_string();
    // glibc has a static `make_request` of its own (check_pf.c).
    let err = fails_with(&["log", &pid, "make_request", "x"]);
    if err.contains("is ambiguous") {
        let candidates: Vec<&str> = err.lines().skip(1).collect();
        assert!(candidates.len() >= 2, "{err}");
        for c in &candidates {
            assert!(
                c.trim_end().ends_with(')') && c.contains("  ("),
                "a candidate without its origin: {c:?}"
            );
        }
        assert!(
            candidates
                .iter()
                .any(|c| c.contains("service::make_request") && c.contains("service.rs:")),
            "{err}"
        );
    }
}

#[test]
fn location_mistakes_get_what_was_meant() {
    let t = Target::start(&service(), &["5000"]);
    let pid = t.pid.to_string();
    let err = fails_with(&["log", &pid, "service.rs", "x"]);
    assert!(err.contains("`service.rs:LINE`"), "{err}");
    let err = fails_with(&["log", &pid, "handel", "x"]);
    assert!(err.contains("did you mean `service::handle`"), "{err}");
    let line = format!("service.rs:{}", probe_line("service.rs", "handle-cost"));
    let err = fails_with(&["log", &pid, &line, "{n}"]);
    assert!(err.contains("`n` is not in scope"), "{err}");
    let err = fails_with(&["log", &pid, &line, "{n} {wrker}"]);
    assert!(err.contains("`n`, `wrker` are not in scope"), "{err}");
}

#[test]
fn fleet_snapshots_keep_declaration_order() {
    let dir = test_dir("locations-order");
    let server = Server::start(&dir, 0);
    let target = Target::start(&service(), &["2000"]);
    let token = server.token("agent", "a1");
    let _agent = Agent::start(&server, &token, &["--pid", &target.pid.to_string()]);
    let instance = instance_of(&server, target.pid);
    let line = format!("service.rs:{}", probe_line("service.rs", "handle-cost"));
    let added = json_out(&server.cli(
        &server.admin,
        &["probe", "add", "snapshot", &instance, &line, "--json"],
    ));
    let id = added["id"].as_str().expect("id").to_string();
    let c = server.admin();
    let events = c
        .wait_for_events(&id, None, 1, std::time::Duration::from_secs(60))
        .map(json_list)
        .expect("wait");
    assert!(!events.is_empty());
    // Through the CLI, as a user reads them.
    let out = server.cli(&server.admin, &["events", &id, "--json"]);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().expect("an event");
    let at = |key: &str| {
        first
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {first}"))
    };
    // `Request` declares id, path, method, user, tags, headers, zone.
    let order = ["id", "path", "method", "user", "tags", "headers", "zone"].map(at);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "fields out of declaration order: {first}"
    );
}
