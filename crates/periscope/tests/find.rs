//! `periscope find --message`: from a message as someone saw it to the code that produces it,
//! on Rust (debug and release) and C, literal and formatted messages, a process or a binary.

mod common;

use common::{
    jobs_pie, jobs_release, periscope, run_periscope, service, service_release, stderr, Target,
};
use serde_json::Value;

fn find(target: &str, message: &str) -> Vec<Value> {
    let out = run_periscope(&["find", target, "--message", message, "--json"]);
    common::assert_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["matches"].as_array().cloned().unwrap_or_default()
}

/// The best match is at `file_suffix`, on the line whose source contains `source_has`.
fn best_is(matches: &[Value], file_suffix: &str, source_has: &str, exact: bool) {
    let m = matches
        .first()
        .unwrap_or_else(|| panic!("no match for {file_suffix} / {source_has}"));
    assert!(
        m["file"].as_str().is_some_and(|f| f.ends_with(file_suffix)),
        "{matches:#?}"
    );
    assert!(
        m["source"].as_str().is_some_and(|s| s.contains(source_has)),
        "{matches:#?}"
    );
    assert!(m["line"].as_u64().is_some() && m["function"].is_string() && m["text"].is_string());
    assert_eq!(m["exact"], exact, "{matches:#?}");
}

#[test]
fn rust_messages_lead_to_their_lines_in_debug_and_release() {
    for exe in [service(), service_release()] {
        let t = Target::start(&exe, &["5000"]);
        let pid = t.pid.to_string();
        // A formatted message: `format!("/item/{}", n % 10)`.
        best_is(
            &find(&pid, "/item/7"),
            "service.rs",
            "format!(\"/item/{}\"",
            true,
        );
        // A literal.
        best_is(
            &find(&pid, "example.com"),
            "service.rs",
            "\"example.com\"",
            true,
        );
        // The binary alone works too, without a process.
        best_is(
            &find(exe.to_str().expect("path"), "/item/3"),
            "service.rs",
            "/item/",
            true,
        );
    }
}

#[test]
fn c_format_strings_lead_to_their_lines() {
    for exe in [jobs_pie(), jobs_release()] {
        let t = Target::start(&exe, &["2000"]);
        let pid = t.pid.to_string();
        // snprintf(j->name, …, "job-%d", j->id)
        best_is(&find(&pid, "job-17"), "jobs.c", "\"job-%d\"", true);
        // printf("jobs ready pid=%d\n", getpid())
        best_is(
            &find(&pid, "jobs ready pid=4242"),
            "jobs.c",
            "jobs ready pid=%d",
            true,
        );
    }
}

#[test]
fn the_human_listing_and_no_match() {
    let t = Target::start(&service(), &["5000"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&["find", &pid, "--message", "/item/4"]);
    common::assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("service.rs:")
            && first.contains("service::build")
            && first.contains("(exact)"),
        "{text}"
    );
    let out = periscope()
        .args(["find", &pid, "--message", "qqqq zzzz wwww"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no constant"), "{}", stderr(&out));
}
