//! Expressions reach inside Options and enums the way a Rust (or C) user writes them:
//! `x == Some("a")`, `x.unwrap()`, `x.0`, `method == Method::Get`, `matches(method, Put)`,
//! `ev.Payment.amount`, C enumerators by name; `count --by` groups enums by variant. A condition
//! the types rule out is refused before attaching; one that fails at every hit stops the probe
//! with its full message.

mod common;

use common::{
    assert_success, jobs_pie, periscope, probe_line, run_periscope, service, stderr, stdout_json,
    Target,
};
use serde_json::Value;

fn handle_line() -> String {
    format!("service.rs:{}", probe_line("service.rs", "handle-cost"))
}

/// Log hits of `handle` in the service sample where `cond` holds: (id, user, method, event) as
/// rendered, for `n` hits.
fn hits_where(target: &Target, cond: &str, n: usize) -> Vec<Value> {
    let out = run_periscope(&[
        "log",
        &target.pid.to_string(),
        &handle_line(),
        "id={req.id} user={req.user} m={req.method} ev={ev}",
        "--if",
        cond,
        "--json",
        "--max-hits",
        &n.to_string(),
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let json = stdout_json(&out);
    assert_eq!(json.len(), n, "{cond}: {}", stderr(&out));
    json
}

fn id(h: &Value) -> u64 {
    h["values"]["req.id"]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("no req.id in {h}"))
}

#[test]
fn conditions_compare_options_and_enum_variants() {
    let mut t = Target::start(&service(), &["500"]);
    // `user` is Some("user{n % 5}") for even n, None for odd.
    for h in hits_where(&t, r#"req.user == Some("user2")"#, 5) {
        let n = id(&h);
        assert!(n.is_multiple_of(2) && n % 5 == 2, "{h}");
        assert_eq!(h["values"]["req.user"]["variant"], "Some", "{h}");
    }
    for h in hits_where(
        &t,
        r#"req.user.is_some() && req.user.unwrap() == "user4""#,
        5,
    ) {
        assert!(id(&h).is_multiple_of(2) && id(&h) % 5 == 4, "{h}");
    }
    for h in hits_where(&t, "req.user == None", 5) {
        assert_eq!(id(&h) % 2, 1, "{h}");
    }
    for h in hits_where(&t, r#"req.user != None && req.user != Some("user0")"#, 5) {
        assert!(id(&h).is_multiple_of(2) && !id(&h).is_multiple_of(5), "{h}");
    }
    // `method`: Get (n % 4 == 0), Post, Put(n), Delete { soft: true }.
    for h in hits_where(&t, "req.method == Method::Get", 5) {
        assert_eq!(id(&h) % 4, 0, "{h}");
        assert_eq!(h["values"]["req.method"]["variant"], "Get");
    }
    for h in hits_where(&t, "matches(req.method, Put)", 5) {
        assert_eq!(id(&h) % 4, 2, "{h}");
    }
    for h in hits_where(
        &t,
        "matches(req.method, Method::Delete) && req.method.soft",
        5,
    ) {
        assert_eq!(id(&h) % 4, 3, "{h}");
    }
    for h in hits_where(&t, "matches(req.method, Put) && req.method.0 % 8 == 6", 5) {
        assert_eq!(id(&h) % 8, 6, "{h}");
    }
    // A payload written out: Put(n) with n == id.
    for h in hits_where(&t, "req.method == Method::Put(req.id)", 3) {
        assert_eq!(id(&h) % 4, 2, "{h}");
    }
    // Into a payload: `ev` is Payment(Money { amount: n * 10 }) for even n, else Ping.
    for h in hits_where(
        &t,
        "matches(ev, Payment) && ev.Payment.amount % 40 == 20",
        5,
    ) {
        assert_eq!(id(&h) % 4, 2, "{h}");
    }
    for h in hits_where(&t, "ev != Event::Ping && ev.0.amount == req.id * 10", 3) {
        assert_eq!(id(&h) % 2, 0, "{h}");
    }
    t.assert_untouched();
}

#[test]
fn templates_read_inside_options_and_payloads() {
    let mut t = Target::start(&service(), &["500"]);
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &handle_line(),
        "id={req.id} user={req.user.unwrap()} amount={ev.Payment.amount} put={req.method.0}",
        "--if",
        "matches(req.method, Put)",
        "--json",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for h in stdout_json(&out) {
        let n = id(&h);
        let v = &h["values"];
        assert_eq!(
            v["req.user.unwrap()"]["value"],
            format!("user{}", n % 5),
            "{h}"
        );
        assert_eq!(
            v["ev.Payment.amount"]["value"].as_u64(),
            Some(n * 10),
            "{h}"
        );
        assert_eq!(v["req.method.0"]["value"].as_u64(), Some(n), "{h}");
    }
    t.assert_untouched();
}

#[test]
fn c_enumerators_compare_by_name() {
    let mut t = Target::start(&jobs_pie(), &["2000"]);
    let line = probe_line("jobs.c", "process-done");
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &format!("jobs.c:{line}"),
        "id={j->id} kind={j->kind}",
        "--if",
        "j->kind == KIND_URGENT",
        "--json",
        "--max-hits",
        "5",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    for h in stdout_json(&out) {
        assert_eq!(
            h["values"]["j->id"]["value"].as_i64().map(|i| i % 3),
            Some(2)
        );
        assert_eq!(h["values"]["j->kind"]["variant"], "KIND_URGENT");
    }
    t.assert_untouched();
}

#[test]
fn count_by_an_enum_groups_by_variant_name() {
    let mut t = Target::start(&service(), &["500"]);
    let out = run_periscope(&[
        "count",
        &t.pid.to_string(),
        &handle_line(),
        "--by",
        "req.method",
        "--json",
        "--for",
        "2s",
    ]);
    assert_success(&out);
    let last = stdout_json(&out).pop().expect("a count report");
    let groups = last["groups"]
        .as_object()
        .unwrap_or_else(|| panic!("no groups: {last}"));
    let mut names: Vec<&str> = groups.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["Delete", "Get", "Post", "Put"], "{last}");
    t.assert_untouched();
}

#[test]
fn a_condition_the_types_rule_out_is_refused_before_attaching() {
    let mut t = Target::start(&service(), &["2000"]);
    let out = periscope()
        .args([
            "log",
            &t.pid.to_string(),
            &handle_line(),
            "x",
            "--if",
            r#"req.user.contains("user3")"#,
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`req.user` is an core::option::Option<alloc::string::String>")
            || err.contains("`req.user` is an Option"),
        "{err}"
    );
    assert!(
        err.contains(r#"req.user.is_some() && req.user.unwrap().contains"#),
        "{err}"
    );
    assert!(
        !err.contains("probing pid"),
        "refused before attaching: {err}"
    );
    let out = periscope()
        .args([
            "log",
            &t.pid.to_string(),
            &handle_line(),
            "x",
            "--if",
            "req.id.is_some()",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not an Option or Result"),
        "{}",
        stderr(&out)
    );
    t.assert_untouched();
}

#[test]
fn a_condition_failing_on_every_hit_stops_with_its_full_message() {
    let mut t = Target::start(&service(), &["500"]);
    // `tags` has at most 2 items: every hit fails to evaluate this.
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &handle_line(),
        "id={req.id}",
        "--if",
        r#"req.tags[5] == "x""#,
        "--max-hits",
        "2",
        "--for",
        "120s",
    ]);
    assert!(!out.status.success(), "a stopped probe is a failure");
    let err = stderr(&out);
    assert!(
        err.contains("could not be evaluated: index 5 out of range for len")
            && err.contains("the probe stopped after 20 hits in a row failed"),
        "{err}"
    );
    t.assert_untouched();
}
