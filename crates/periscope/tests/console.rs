//! The web console, in real Chromium (Debian's `chromium`, driven by `playwright-core` from
//! tests/web), against a real server, agent and target: sign in, find the instance, open a
//! file, click a line, see a bad template refused inline, add log, snapshot and count probes and
//! see their events, read a snapshot variable, a viewer unable to change anything, remove the
//! probes, find the changes audited `via: web`. Screenshots of each step are kept under the
//! test's temporary directory (`console-shots/`).

mod common;

use common::fleet::{instance_of, test_dir, Agent, Server};
use common::{probe_line, repo, service, Target};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn web_dir() -> PathBuf {
    repo().join("crates/periscope/tests/web")
}

/// playwright-core, installed from the lock file if it is not yet (`.ci/run` installs it first).
fn ensure_driver() {
    if web_dir().join("node_modules/playwright-core").exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(web_dir())
        .output()
        .expect("run npm (Node.js is needed for the console test)");
    assert!(
        out.status.success(),
        "npm ci in tests/web failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_person_probes_a_line_from_the_console() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium package (.ci/run does)"
    );
    ensure_driver();
    let dir = test_dir("console");
    let server = Server::start(&dir, 0);
    let mut target = Target::start(&service(), &["5000"]);
    let agent_token = server.token("agent", "console-agent");
    let viewer = server.token("viewer", "console-viewer");
    let _agent = Agent::start(
        &server,
        &agent_token,
        &[
            "--pid",
            &target.pid.to_string(),
            "--tag",
            "service=console-test",
        ],
    );
    let instance = instance_of(&server, target.pid);
    let line = probe_line("service.rs", "handle-cost");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-shots");
    let mut driver = Command::new("node")
        .arg(web_dir().join("console.mjs"))
        .env("URL", &server.url)
        .env("ADMIN", &server.admin)
        .env("VIEWER", &viewer)
        .env("INSTANCE", &instance)
        .env("FILE", "service.rs")
        .env("LINE", line.to_string())
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // The driver asks for a server restart mid-way (a line `RESTART`), then prints its result.
    let mut to_driver = driver.stdin.take().expect("stdin");
    let from_driver = BufReader::new(driver.stdout.take().expect("stdout"));
    let port = server.port();
    let mut server = server;
    let mut result = String::new();
    for line in from_driver.lines().map_while(Result::ok) {
        if line == "RESTART" {
            server.kill();
            server = Server::start(&dir, port);
            writeln!(to_driver, "DONE").expect("answer the driver");
        } else {
            result = line;
        }
    }
    let out = driver.wait_with_output().expect("wait for node");
    let seen: Value = serde_json::from_str(&result).unwrap_or_else(|e| {
        panic!(
            "the driver printed no result ({e}):\n{result}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("console test screenshots: {}", shots.display());
    assert_eq!(seen["ok"], true, "{seen:#}");
    assert!(seen.get("page_errors").is_none(), "script errors: {seen:#}");
    let text = |k: &str| seen[k].as_str().unwrap_or_default().to_string();

    assert!(text("wrong_token").contains("not valid"), "{seen:#}");
    assert_eq!(
        seen["nav_shown_signed_out"], false,
        "no navigation before signing in"
    );
    assert!(text("instance_row").contains(&target.pid.to_string()));
    assert!(text("instance_row").contains("service=console-test"));
    assert_eq!(seen["filtered_rows"], 1);
    assert_eq!(seen["filtered_out_rows"], 0);
    assert!(seen["instrumentable_lines"].as_u64() > Some(5), "{seen:#}");
    // Refused inline, with the names in scope, before anything was placed.
    assert!(
        text("template_error").contains("`nope` is not in scope")
            && text("template_error").contains("req"),
        "{seen:#}"
    );
    assert!(text("condition_error").contains("column"), "{seen:#}");
    assert_eq!(seen["probes_before_add"], 0);

    // The log events carry the values the service computes: path == "/item/{id % 10}".
    let messages = seen["log_messages"].as_array().expect("log messages");
    assert!(!messages.is_empty());
    for m in messages {
        // The one text form of an event: instance, probe, time, thread, location, then the
        // message after two spaces.
        let text = m.as_str().unwrap_or_default();
        assert!(text.starts_with(&instance), "{text}");
        let m = text
            .split_once("  ")
            .map(|(_, msg)| msg)
            .unwrap_or_else(|| panic!("log text {text:?}"));
        let id: u64 = m
            .strip_prefix("id=")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("log message {m:?}"));
        assert!(
            m.ends_with(&format!("path=\"/item/{}\"", id % 10))
                || m.ends_with(&format!("path=/item/{}", id % 10)),
            "{m}"
        );
    }
    // The snapshot's variable, read in the tree.
    let id_text = text("snapshot_id_text");
    let snap_id: u64 = id_text
        .trim()
        .strip_prefix("id: ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("snapshot id shown as {id_text:?}"));
    assert!(
        text("snapshot_path_text").contains(&format!("/item/{}", snap_id % 10)),
        "{seen:#}"
    );
    assert!(text("count_text").contains("hits"), "{seen:#}");
    // The stream resumed across a server restart, after the last event shown, nothing twice.
    assert_eq!(seen["resumed_after_restart"], true, "{seen:#}");
    assert_eq!(seen["duplicate_events"], 0, "{seen:#}");
    assert!(text("stream_state").contains("live"), "{seen:#}");

    // The verify probe's table, from the server's tallies: every failing hit fixed.
    assert!(seen["verify_failing"].as_u64() > Some(0), "{seen:#}");
    assert_eq!(seen["verify_fixed"], seen["verify_failing"], "{seen:#}");
    assert!(
        seen["replay_error"]
            .as_str()
            .is_some_and(|e| e.contains("FROM..UNTIL")),
        "{seen:#}"
    );
    // A paused probe shows it, with the reason, and was resumed from the page.
    assert!(
        text("paused_row").contains("paused") && text("paused_row").contains("budget"),
        "{seen:#}"
    );
    assert_eq!(seen["resumed"], 1, "{seen:#}");
    // The viewer: no audit link, no way to add or remove.
    assert_eq!(seen["viewer_audit_link"], 0);
    assert_eq!(seen["viewer_add_disabled"], true);
    assert!(text("viewer_add_title").contains("viewer"), "{seen:#}");
    assert_eq!(seen["viewer_remove_disabled"], true);
    assert!(text("log_probe_row").contains("removed"), "{seen:#}");

    // Every change audited via the web, by the admin.
    let audit = server.admin().audit(None).expect("audit");
    for (action, probe) in [
        ("probe.add", text("log_probe")),
        ("probe.add", text("snapshot_probe")),
        ("probe.remove", text("log_probe")),
    ] {
        assert!(
            audit
                .iter()
                .any(|a| a.action == action && a.target == probe && a.via == "web"),
            "no {action} of {probe} via web in the audit"
        );
    }
    // Nothing the browser asked for on its own (a favicon) reads as a denied MCP connect.
    assert!(
        !audit.iter().any(|a| a.action == "mcp.connect"),
        "stray requests audited as MCP: {:?}",
        audit.iter().filter(|a| a.action == "mcp.connect").count()
    );
    let rows = seen["audit_rows"].as_array().expect("audit rows");
    assert!(
        rows.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("probe.remove") && r.contains("web"))),
        "{seen:#}"
    );
    target.assert_untouched();
}
