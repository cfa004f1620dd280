//! Default limits show a typical request object whole: pointers, references and smart pointers
//! are no depth level of their own. And null is one shape in every language:
//! `{"kind":"pointer","type":…,"address":"0x0"}`, nothing else (Go's nil: see go.rs).

mod common;

use common::*;
use serde_json::{json, Value as J};

fn var<'a>(frame: &'a J, name: &str) -> &'a J {
    let v = &frame["variables"][name];
    assert!(!v.is_null(), "no variable {name} in {frame}");
    v
}

/// Nothing below `v` was cut by a capture limit.
fn assert_whole(v: &J, root: &J) {
    match v {
        J::Object(m) => {
            assert_ne!(
                m.get("truncated"),
                Some(&json!(true)),
                "cut: {v}\nin {root}"
            );
            m.values().for_each(|x| assert_whole(x, root));
        }
        J::Array(a) => a.iter().for_each(|x| assert_whole(x, root)),
        _ => {}
    }
}

fn null(ty: &str) -> J {
    json!({"kind": "pointer", "type": ty, "address": "0x0"})
}

/// An `&checkout::Order` checked completely against the order's number (see checkout.rs).
fn check_order(order: &J) {
    assert_whole(order, order);
    assert_eq!(order["kind"], "pointer", "{order}");
    assert_eq!(order["type"], "&checkout::Order", "{order}");
    let o = &order["target"]["fields"];
    let n = o["id"]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("{order}"));
    let customer = &o["customer"]["fields"];
    assert_eq!(customer["name"]["value"], format!("cust-{}", n % 5));
    let address = &customer["address"]["fields"];
    assert_eq!(
        address["street"]["value"],
        format!("{n} Main St"),
        "{order}"
    );
    assert_eq!(address["city"]["value"], format!("city-{}", n % 3));
    let items = &o["items"];
    assert_eq!(items["len"].as_u64(), Some(n % 3 + 2), "{order}");
    let items = items["items"].as_array().expect("items");
    assert_eq!(items.len() as u64, n % 3 + 2, "{order}");
    for (i, item) in items.iter().enumerate() {
        let f = &item["fields"];
        assert_eq!(f["sku"]["value"], format!("sku-{i}"), "{item}");
        assert_eq!(
            f["qty"]["value"].as_u64(),
            Some(n * 10 + i as u64),
            "{item}"
        );
        assert_eq!(
            f["price"]["fields"]["cents"]["value"].as_u64(),
            Some(100 * (i as u64 + 1)),
            "{item}"
        );
    }
    let counts = &o["counts"];
    assert_eq!(counts["len"].as_u64(), Some(n % 3 + 2), "{counts}");
    let mut entries: Vec<(String, u64)> = counts["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let k = e["key"]["value"].as_str().expect("a sku").to_string();
            (k, e["value"]["value"].as_u64().expect("a qty"))
        })
        .collect();
    entries.sort();
    let want: Vec<(String, u64)> = (0..n % 3 + 2)
        .map(|i| (format!("sku-{i}"), n * 10 + i))
        .collect();
    assert_eq!(entries, want);
    // Rust's null: a raw pointer.
    assert_eq!(o["previous"], null("*const checkout::Order"), "{order}");
}

#[test]
fn a_request_object_by_reference_is_whole_at_default_limits() {
    let mut t = Target::start(&checkout(), &[]);
    let pid = t.pid.to_string();
    let loc = format!(
        "checkout.rs:{}",
        probe_line("checkout.rs", "checkout-total")
    );
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
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 3);
    for s in &snaps {
        check_order(var(&s["frames"][0], "order"));
    }
    // A log of the whole object reads the same, and its text shows every quantity.
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "{order}",
        "--json",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 3);
    for h in &hits {
        let order = &h["values"]["order"];
        check_order(order);
        let n = order["target"]["fields"]["id"]["value"].as_u64().unwrap();
        let message = h["message"].as_str().expect("message");
        for i in 0..n % 3 + 2 {
            assert!(
                message.contains(&format!("qty: {}", n * 10 + i)),
                "{message}"
            );
        }
    }
    t.assert_untouched();
}

#[test]
fn c_struct_chains_through_pointers_are_whole_and_null_is_0x0() {
    let mut t = Target::start(&jobs_pie(), &["2000"]);
    let pid = t.pid.to_string();
    let loc = format!("jobs.c:{}", probe_line("jobs.c", "process-cost"));
    let out = run_periscope(&[
        "snapshot",
        &pid,
        &loc,
        "--json",
        "--frames",
        "1",
        "--max-hits",
        "6",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 6);
    let mut firsts = 0;
    for s in &snaps {
        let j = var(&s["frames"][0], "j");
        assert_whole(j, j);
        let job = &j["target"]["fields"];
        let id = job["id"]["value"].as_i64().unwrap_or_else(|| panic!("{j}"));
        let round = (id % 1_000_000) / 2;
        if id % 2 == 1 {
            // The second job of a pair ends the chain.
            assert_eq!(job["next"], null("struct job *"), "{j}");
        } else if round > 0 {
            // The first points at the second (still the previous round's job), whose next is
            // null: two structs and two pointers below `j`, all shown.
            firsts += 1;
            let second = &job["next"]["target"]["fields"];
            assert_eq!(second["id"]["value"].as_i64(), Some(id - 1), "{j}");
            assert_eq!(second["name"]["value"], format!("job-{}", id - 1), "{j}");
            assert_eq!(second["next"], null("struct job *"), "{j}");
        }
    }
    assert!(firsts > 0, "no hit on the first job of a pair: {snaps:?}");
    t.assert_untouched();
}

#[test]
fn cpp_smart_pointers_are_seen_through_and_null_is_0x0() {
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
        let round = top["variables"]["round"]["value"].as_i64().expect("round");
        let s = var(top, "s");
        assert_whole(s, s);
        let f = &s["target"]["fields"];
        let id = &f["id"];
        assert_eq!(id["kind"], "pointer", "{id}");
        assert!(id["type"]
            .as_str()
            .unwrap()
            .starts_with("std::unique_ptr<int"));
        assert_eq!(id["target"]["value"].as_i64(), Some(round), "{id}");
        let label = &f["label"];
        assert_eq!(label["kind"], "pointer", "{label}");
        assert!(label["type"]
            .as_str()
            .unwrap()
            .starts_with("std::shared_ptr<"));
        assert_eq!(
            label["target"]["value"],
            format!("label-{round}"),
            "{label}"
        );
        // An empty unique_ptr is null as a raw pointer is.
        let child = &f["child"];
        let ty = child["type"].as_str().expect("a type");
        assert!(ty.starts_with("std::unique_ptr<Shape"), "{child}");
        assert_eq!(child, &null(ty));
        assert_eq!(f["parent"], null("Shape *"), "{s}");
    }
    t.assert_untouched();
}

/// Pointers followed in a row from `v`, and the value where they stop.
fn follow(v: &J) -> (usize, &J) {
    let mut v = v;
    let mut n = 0;
    while v["kind"] == "pointer" && !v["target"].is_null() {
        v = &v["target"];
        n += 1;
    }
    (n, v)
}

/// Since pointers cost no depth, chains are bounded on their own: 8 pointers in a row at most,
/// and a cyclic list stops at the depth limit, four nodes down.
#[test]
fn pointer_chains_and_cycles_stay_bounded() {
    let mut t = Target::start(&chain(), &[]);
    let pid = t.pid.to_string();
    let loc = format!("chain.c:{}", probe_line("chain.c", "chain-walk"));
    let out = run_periscope(&[
        "snapshot", &pid, &loc, "--json", "--frames", "1", "--for", "60s",
    ]);
    assert_success(&out);
    let top = &stdout_json(&out)[0]["frames"][0];
    let p10 = var(top, "p10");
    let (n, end) = follow(p10);
    assert_eq!(n, 8, "{p10}");
    // p2, shown by its address: the ninth pointer in a row is not followed.
    assert_eq!(end["type"], "int * *", "{p10}");
    assert_ne!(end["address"], "0x0", "{p10}");
    // a → b → a → b, then b's next by address only (the depth limit, 4).
    let mut node = var(top, "ring");
    for id in [1, 2, 1, 2] {
        let fields = &node["target"]["fields"];
        assert_eq!(fields["id"]["value"], id, "{}", var(top, "ring"));
        node = &fields["next"];
    }
    assert_eq!(node["kind"], "pointer");
    assert!(node["target"].is_null(), "{node}");
    t.assert_untouched();
}
