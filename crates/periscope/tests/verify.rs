//! `periscope verify` in shadow mode: two candidate fixes for a planted bug, on the live
//! process's own traffic. The right one fixes every failing hit and changes nothing else; the
//! wrong one also ends the failures but changes correct results. The process is never changed:
//! it goes on failing as before, and is untouched afterwards.

mod common;

use common::{periscope, probe_line, refunds, run_periscope, stderr, stdout_json, Target};
use serde_json::Value;

const FAILURE: &str = "refund > charge.amount - charge.refunded";
const CAPPED: &str = "capped: refund = min(refund, charge.amount - charge.refunded)";
const HALVED: &str = "halved: refund = refund / 2";

fn location() -> String {
    format!("refunds.rs:{}", probe_line("refunds.rs", "refund-apply"))
}

fn candidate<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no candidate {name} in {result}"))
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

#[test]
fn the_right_fix_fixes_and_keeps_the_wrong_one_changes_results() {
    let mut t = Target::start(&refunds(), &["500"]);
    let out = run_periscope(&[
        "verify",
        &t.pid.to_string(),
        &location(),
        "--failure",
        FAILURE,
        "--fix",
        CAPPED,
        "--fix",
        HALVED,
        "--max-hits",
        "400",
        "--for",
        "120s",
        "--json",
    ]);
    common::assert_success(&out);
    let result = stdout_json(&out).pop().expect("a result");
    assert_eq!(n(&result, "hits"), 400, "{result}");

    let capped = candidate(&result, "capped");
    // About one request in ten overruns (the target's arithmetic): some fail, most pass.
    assert!(
        n(capped, "failing") > 10 && n(capped, "passing") > 100,
        "{capped}"
    );
    assert_eq!(n(capped, "fixed"), n(capped, "failing"), "{capped}");
    assert_eq!(n(capped, "not_fixed"), 0);
    assert_eq!(n(capped, "unchanged"), n(capped, "passing"), "{capped}");
    assert_eq!(
        n(capped, "changed") + n(capped, "broken") + n(capped, "inconclusive"),
        0
    );
    let verdict = capped["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.starts_with(&format!("fixed {0}/{0} failing hits", n(capped, "failing")))
            && verdict.contains("0 broken")
            && verdict.contains("95% upper bound"),
        "{verdict}"
    );
    // The examples carry the values that decided them: a fixed hit's refund is capped at what
    // was left, and the failure no longer holds with it.
    let ex = &capped["examples"]["fixed"][0];
    let real = ex["refund"]["value"].as_u64().expect("refund");
    let fixed = ex["refund (fixed)"]["value"]
        .as_u64()
        .expect("refund (fixed)");
    assert!(fixed < real, "{ex}");
    assert!(capped["examples"]["fixed"]
        .as_array()
        .is_some_and(|e| e.len() <= 3));

    let halved = candidate(&result, "halved");
    assert_eq!(
        n(halved, "failing"),
        n(capped, "failing"),
        "same hits: {result}"
    );
    assert_eq!(
        n(halved, "not_fixed") + n(halved, "fixed"),
        n(halved, "failing")
    );
    assert!(
        n(halved, "changed") > 0,
        "halving changes correct refunds: {halved}"
    );
    // Only a refund of 0 halves to itself.
    assert!(
        n(halved, "changed") > 10 * n(halved, "unchanged"),
        "{halved}"
    );

    // Read-only: the process still overruns refunds in reality, exactly as before.
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &location(),
        "refund={refund} left={charge.amount - charge.refunded}",
        "--if",
        FAILURE,
        "--max-hits",
        "3",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    assert_eq!(
        stdout_json(&out).len(),
        3,
        "the failure still happens after verify"
    );
    t.assert_untouched();
}

#[test]
fn the_human_table_and_mistakes_before_anything_starts() {
    let mut t = Target::start(&refunds(), &["500"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&[
        "verify",
        &pid,
        &location(),
        "--failure",
        FAILURE,
        "--fix",
        CAPPED,
        "--max-hits",
        "100",
        "--for",
        "120s",
    ]);
    common::assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("100 hits\nCANDIDATE"), "{text}");
    assert!(text.contains("capped: fixed "), "{text}");

    // Mistakes are refused before anything starts, each saying what was wrong.
    let refused = |failure: &str, fix: &str, extra: &[&str], says: &str| {
        let out = periscope()
            .args([
                "verify",
                &pid,
                &location(),
                "--failure",
                failure,
                "--fix",
                fix,
            ])
            .args(extra)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{failure} / {fix} was accepted");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    };
    // A fix naming something not in scope.
    refused(FAILURE, "x: refnd = 1", &[], "`refnd` is not in scope");
    // Not a fix at all.
    refused(FAILURE, "refund = 1", &[], "NAME: VAR = EXPR");
    // A failure that does not parse points at the column.
    refused("refund >", CAPPED, &[], "column");
    t.assert_untouched();
}

#[test]
fn fix_expressions_have_if_min_max_and_abs() {
    // The expression language's additions for fixes, checked on real values: amount is
    // 1000 + (id % 5) * 100.
    let mut t = Target::start(&refunds(), &["500"]);
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &location(),
        "a={charge.amount} b={if charge.amount > 1200 { 1 } else { 0 }} c={max(charge.amount, 1150)} d={min(charge.amount, 1150)} e={abs(0 - 5)}",
        "--max-hits",
        "10",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    for h in stdout_json(&out) {
        let v = &h["values"];
        let a = v["charge.amount"]["value"].as_i64().expect("amount");
        let get = |k: &str| v[k]["value"].as_i64().unwrap_or_else(|| panic!("{k}: {h}"));
        assert_eq!(
            get("if charge.amount > 1200 { 1 } else { 0 }"),
            i64::from(a > 1200)
        );
        assert_eq!(get("max(charge.amount, 1150)"), a.max(1150));
        assert_eq!(get("min(charge.amount, 1150)"), a.min(1150));
        assert_eq!(get("abs(0 - 5)"), 5);
    }
    t.assert_untouched();
}

#[test]
fn list_folds_read_every_element() {
    // `tags` holds t0, t1, … (n % 3 of them).
    let mut t = Target::start(&common::service(), &["500"]);
    let line = format!("service.rs:{}", probe_line("service.rs", "handle-cost"));
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &line,
        "n={req.tags.len()} c={count(req.tags, |t| t.starts_with(\"t\"))} any={any(req.tags, |t| t == \"t1\")} all={all(req.tags, |t| t.len() == 2)} s={sum(req.tags, |t| t.len())}",
        "--max-hits",
        "12",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    for h in stdout_json(&out) {
        let v = &h["values"];
        let len = v["req.tags.len()"]["value"].as_i64().expect("len");
        let get = |k: &str| v[k]["value"].clone();
        assert_eq!(get("count(req.tags, |t| t.starts_with(\"t\"))"), len, "{h}");
        assert_eq!(get("any(req.tags, |t| t == \"t1\")"), len >= 2, "{h}");
        assert_eq!(get("all(req.tags, |t| t.len() == 2)"), true, "{h}");
        assert_eq!(get("sum(req.tags, |t| t.len())"), 2 * len, "{h}");
    }
    t.assert_untouched();
}
