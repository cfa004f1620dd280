//! The control plane end to end: a real server (SQLite file), real agents attached to real
//! targets with ptrace, and the CLI and HTTP API as users drive them.

mod common;

use common::fleet::*;
use common::*;
use periscope_client::EventQuery;
use periscope_core::api::{InstallState, NewProbe, ProbeKind, ProbeLifecycle};
use std::collections::HashSet;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn settle_line() -> String {
    // The line after `let total = …`: `total` is in scope there.
    format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total") + 1)
}

fn log_probe(target: &str, template: &str) -> NewProbe {
    NewProbe {
        template: Some(template.into()),
        ..NewProbe::new(ProbeKind::Log, target, &settle_line())
    }
}

fn values_int(e: &serde_json::Value, expr: &str) -> i64 {
    e["values"][expr]["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("{expr} in {e}"))
}

#[test]
fn a_probe_reaches_exactly_the_matching_instances_and_tail_shows_it_live() {
    let dir = test_dir("placement");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agents");
    let mut t1 = Target::start(&ledger_debug(), &["2000", "2"]);
    let mut t2 = Target::start(&ledger_debug(), &["2000", "2"]);
    let mut t3 = Target::start(&ledger_debug(), &["2000", "2"]);
    let (p1, p2, p3) = (t1.pid.to_string(), t2.pid.to_string(), t3.pid.to_string());
    let _a = Agent::start(
        &server,
        &agent_token,
        &[
            "--pid",
            &p1,
            "--pid",
            &p2,
            "--tag",
            "service=ledger",
            "--tag",
            "zone=a",
            "--host",
            "host-a",
        ],
    );
    let _b = Agent::start(
        &server,
        &agent_token,
        &[
            "--pid",
            &p3,
            "--tag",
            "service=ledger",
            "--tag",
            "zone=b",
            "--host",
            "host-b",
        ],
    );
    let (i1, i2, i3) = (
        instance_of(&server, t1.pid),
        instance_of(&server, t2.pid),
        instance_of(&server, t3.pid),
    );

    // `instances --json`: identity and tags as the agents report them.
    let listed = json_out(&server.cli(&server.admin, &["instances", "--json"]));
    let inst = listed["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["id"] == i3.as_str())
        .expect("third instance listed")
        .clone();
    assert_eq!(inst["host"], "host-b");
    assert_eq!(inst["pid"], t3.pid);
    assert_eq!(inst["tags"]["service"], "ledger");
    assert_eq!(inst["tags"]["zone"], "b");
    assert_eq!(inst["language"], "rust");
    assert!(inst["executable"].as_str().unwrap().ends_with("/ledger"));
    assert!(inst["build_id"].as_str().is_some_and(|b| b.len() > 8));

    // A live tail of everything, started before the probe exists.
    let mut tail = periscope()
        .args([
            "tail",
            "--json",
            "--server",
            &server.url,
            "--token",
            &server.admin,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    let tail_out = std::io::BufReader::new(tail.stdout.take().expect("stdout"));
    let (tail_tx, tail_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in tail_out.lines().map_while(Result::ok) {
            if tail_tx.send(line).is_err() {
                return;
            }
        }
    });

    let added = json_out(&server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "log",
            "zone=a",
            &settle_line(),
            "total={total} fee={fee}",
            "--json",
        ],
    ));
    let id = added["id"].as_str().expect("probe id").to_string();
    assert_eq!(added["state"], "active");

    // Events arrive from both zone=a instances, none from zone=b, each carrying its identity.
    let admin = server.admin();
    let mut seen: HashSet<String> = HashSet::new();
    let mut after = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "events from both instances");
        let events = admin
            .wait_for_events(&id, after, 10, Duration::from_secs(10))
            .map(json_list)
            .expect("wait");
        for e in &events {
            after = e["seq"].as_i64();
            let inst = e["instance"].as_str().expect("instance").to_string();
            assert!(inst == i1 || inst == i2, "event from {inst}, not in zone=a");
            let pid = e["pid"].as_u64().unwrap() as u32;
            assert_eq!(pid, if inst == i1 { t1.pid } else { t2.pid });
            assert_eq!(e["kind"], "log");
            assert_eq!(e["probe"], id.as_str());
            let (total, fee) = (values_int(e, "total"), values_int(e, "fee"));
            assert_eq!(fee, (total - fee) / 10, "fee is a tenth of the amount: {e}");
            seen.insert(inst);
        }
    }
    // `tail` showed them live.
    let line = loop {
        let l = tail_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tail printed an event");
        if l.contains(&format!("\"probe\":\"{id}\"")) {
            break l;
        }
    };
    let ev: serde_json::Value = serde_json::from_str(&line).expect("tail --json line");
    assert!(ev["seq"].as_i64().is_some() && ev["instance"].is_string());

    // `probe show`: installed on both zone=a instances, the zone=b one is not involved.
    let shown = eventually("both installed", || {
        let p = admin.probe(&id).ok()?;
        (p.instances.len() == 2
            && p.instances
                .iter()
                .all(|s| s.state == InstallState::Installed && s.hits > 0))
        .then_some(p)
    });
    assert!(shown.instances.iter().all(|s| s.instance != i3));
    assert_eq!(
        t3.status_field("TracerPid:"),
        "0",
        "zone=b was never attached"
    );

    // Removed: it comes out everywhere and the processes are as before.
    let out = server.cli(&server.admin, &["probe", "rm", &id]);
    assert_success(&out);
    eventually("detached after removal", || {
        (t1.status_field("TracerPid:") == "0" && t2.status_field("TracerPid:") == "0").then_some(())
    });
    t1.assert_untouched();
    t2.assert_untouched();
    t3.assert_untouched();
    let after_rm = admin.probe(&id).expect("show");
    assert_eq!(after_rm.state, ProbeLifecycle::Removed);
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn a_server_restart_loses_no_probe_and_no_event_and_agents_resume() {
    let dir = test_dir("restart");
    let mut server = Server::start(&dir, 0);
    let port = server.port();
    let agent_token = server.token("agent", "agent");
    let mut t = Target::start(&ledger_debug(), &["5000", "1"]);
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=ledger"],
    );
    instance_of(&server, t.pid);
    let probe = server
        .admin()
        .add_probe(&log_probe("service=ledger", "total={total}"))
        .expect("add");
    let before = server
        .admin()
        .wait_for_events(&probe.id, None, 5, Duration::from_secs(30))
        .map(json_list)
        .expect("events before the restart");
    assert_eq!(before.len(), 5);

    server.kill(); // SIGKILL: no goodbye
    let (stored_before, stored_last) = {
        // Read the file directly once the server is gone: what it acknowledged is there.
        let s = Server::start(&dir, port);
        let stored = s
            .admin()
            .events(
                &probe.id,
                &EventQuery {
                    limit: Some(10_000),
                    ..Default::default()
                },
            )
            .map(json_list)
            .expect("events");
        drop(s);
        // The agent may have reported more to that server while it was up: "after the
        // restart" is after the last event stored by then.
        let last = stored.iter().filter_map(|e| e["seq"].as_i64()).max();
        (stored.len(), last)
    };
    assert!(stored_before >= 5);
    let restarted = Server::start(&dir, port);
    let admin = restarted.admin();
    let probes = admin.probes(false).expect("probes");
    assert!(
        probes
            .iter()
            .any(|p| p.id == probe.id && p.state == ProbeLifecycle::Active),
        "the probe survived the restart"
    );
    // The agent reconnects by itself; new events follow the old ones.
    let resumed = admin
        .wait_for_events(&probe.id, stored_last, 5, Duration::from_secs(60))
        .map(json_list)
        .expect("events after the restart");
    assert_eq!(resumed.len(), 5, "events resume after the restart");
    let all = admin
        .events(
            &probe.id,
            &EventQuery {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .map(json_list)
        .expect("events");
    let seqs: Vec<i64> = all.iter().filter_map(|e| e["seq"].as_i64()).collect();
    let unique: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no event stored twice");
    assert!(all.len() >= stored_before + 5);
    for e in &before {
        assert!(
            unique.contains(&e["seq"].as_i64().unwrap()),
            "old event kept"
        );
    }
    drop(_agent);
    t.assert_untouched();
}

#[test]
fn ttl_hit_limit_rate_limit_and_overhead_budget_each_end_or_thin_a_probe() {
    let dir = test_dir("limits");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    // Fast: about 2 x 5,000 transfers a second.
    let mut t = Target::start(&ledger_debug(), &["200", "2"]);
    let mut agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=fast"],
    );
    let inst = instance_of(&server, t.pid);
    let admin = server.admin();
    let state_of = |id: &str| {
        admin
            .probe(id)
            .ok()
            .and_then(|p| p.instances.into_iter().find(|s| s.instance == inst))
    };

    // Hit limit: exactly 3 events, then the probe is out on that instance.
    let mut p = log_probe("service=fast", "total={total}");
    p.max_hits = Some(3);
    let limited = admin.add_probe(&p).expect("add");
    let last = std::cell::RefCell::new(None);
    let s = eventually_or(
        "hit_limit",
        || {
            let seen = state_of(&limited.id);
            *last.borrow_mut() = seen.clone();
            seen.filter(|s| s.state == InstallState::HitLimit)
        },
        || format!("{:?}", last.borrow()),
    );
    assert_eq!(s.hits, 3);
    let events = admin
        .events(&limited.id, &EventQuery::default())
        .map(json_list)
        .expect("events");
    assert_eq!(events.len(), 3, "exactly max_hits events");

    // Rate limit: hits beyond 5 a second are counted as dropped, not captured, and not hits.
    let mut p = log_probe("service=fast", "total={total}");
    p.rate_limit = Some(5.0);
    let started = Instant::now();
    let rated = admin.add_probe(&p).expect("add");
    let s = eventually("dropped hits counted", || {
        state_of(&rated.id).filter(|s| s.dropped > 100 && s.hits >= 2)
    });
    let events = admin
        .events(
            &rated.id,
            &EventQuery {
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .map(json_list)
        .expect("events");
    let seconds = started.elapsed().as_secs() + 2;
    assert!(
        (events.len() as u64) <= 5 * seconds,
        "{} events in about {seconds} s with a limit of 5/s",
        events.len()
    );
    assert!(
        s.dropped > s.hits && s.hits <= 5 * seconds,
        "a rate-limited hit is not a hit: {s:?}"
    );
    admin.remove_probe(&rated.id).expect("rm");
    // Nothing of either kernel probe is left in the code before a breakpoint goes in.
    t.assert_untouched();

    // A hit limit counts captured events, not hits the rate limit dropped: a snapshot probe
    // (1 a second by default) on a line hit thousands of times a second with --max-hits 3
    // stores exactly 3 snapshots before it reports hit_limit.
    let mut p = log_probe("service=fast", "");
    p.kind = ProbeKind::Snapshot;
    p.template = None;
    p.max_hits = Some(3);
    // A line no other test of this file probes: the kernel takes out a breakpoint at an
    // address where any process of the same binary has a uprobe (README, risks), and the
    // tests beside this one put theirs, in the kernel, on the settle line.
    p.location = format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total"));
    // Every dropped hit still costs a stop: lift the overhead budget so only the limit acts.
    p.budget_ms = Some(10_000);
    let snaps = admin.add_probe(&p).expect("add");
    let s = eventually_or(
        "snapshot hit_limit",
        || state_of(&snaps.id).filter(|s| s.state == InstallState::HitLimit),
        || format!("{:?}", admin.probe(&snaps.id)),
    );
    assert_eq!(s.hits, 3, "{s:?}");
    assert!(s.dropped > 0, "{s:?}");
    let events = admin
        .events(&snaps.id, &EventQuery::default())
        .map(json_list)
        .expect("events");
    assert_eq!(events.len(), 3, "exactly max_hits snapshots: {events:?}");

    // Overhead budget: 1 ms per 10 s on a line hit thousands of times a second pauses it.
    let mut p = log_probe("service=fast", "total={total}");
    p.budget_ms = Some(1);
    // On ptrace the budget counts the time threads are held for a hit (the kernel's own
    // count, of its program's time, is tested in fleet_truth.rs).
    p.engine = Some(periscope_core::api::Engine::Ptrace);
    let costly = admin.add_probe(&p).expect("add");
    let s = eventually("paused for overhead", || {
        state_of(&costly.id).filter(|s| s.state == InstallState::Paused)
    });
    let reason = s.last_error.expect("reason");
    assert!(reason.contains("overhead budget"), "{reason}");

    // TTL: expired on the server and on the instance; nothing stays attached.
    let mut p = log_probe("service=fast", "total={total}");
    p.ttl_seconds = Some(2);
    p.budget_ms = Some(10_000); // not paused for overhead before its time is up
    let short = admin.add_probe(&p).expect("add");
    eventually("installed", || {
        state_of(&short.id).filter(|s| s.state == InstallState::Installed)
    });
    let expired = eventually("expired", || {
        admin
            .probe(&short.id)
            .ok()
            .filter(|p| p.state == ProbeLifecycle::Expired)
    });
    assert!(
        expired
            .instances
            .iter()
            .all(|s| matches!(s.state, InstallState::Expired | InstallState::Removed)),
        "{:?}",
        expired.instances
    );
    let audit = admin.audit(None).expect("audit");
    assert!(audit
        .iter()
        .any(|e| e.action == "probe.expire" && e.target == short.id));
    eventually("detached", || {
        (t.status_field("TracerPid:") == "0").then_some(())
    });
    agent.stop();
    t.assert_untouched();
}

#[test]
fn requests_without_a_valid_token_or_role_are_refused_and_audited() {
    let dir = test_dir("auth");
    let server = Server::start(&dir, 0);
    // The admin token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("admin.token"))
        .expect("admin.token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let viewer = server.token("viewer", "vera");
    let anonymous = server.client(None).probes(false).unwrap_err();
    assert_eq!(anonymous.status(), Some(401));
    let wrong = server.client(Some("psk_nope")).probes(false).unwrap_err();
    assert_eq!(wrong.status(), Some(401));
    let denied = server
        .client(Some(&viewer))
        .add_probe(&log_probe("service=x", "a={a}"))
        .unwrap_err();
    assert_eq!(denied.status(), Some(403), "{denied}");
    assert!(denied.to_string().contains("operator"), "{denied}");
    // A viewer reads fine.
    server
        .client(Some(&viewer))
        .probes(false)
        .expect("viewer reads");
    // Agents only report.
    let agent = server.token("agent", "agent-1");
    assert_eq!(
        server
            .client(Some(&agent))
            .probes(false)
            .unwrap_err()
            .status(),
        Some(403)
    );

    let audit = server.admin().audit(None).expect("audit");
    let denied_entries: Vec<_> = audit.iter().filter(|e| e.outcome == "denied").collect();
    assert!(denied_entries
        .iter()
        .any(|e| e.actor == "anonymous" && e.action == "probe.list"));
    assert!(denied_entries.iter().any(|e| e.actor == "vera"
        && e.action == "probe.add"
        && e.remote.starts_with("127.0.0.1")));
    assert!(audit
        .iter()
        .any(|e| e.action == "token.create" && e.target == "vera" && e.actor == "admin"));

    // The CLI says the same, with exit code 1.
    let out = server.cli(
        &viewer,
        &["probe", "add", "log", "service=x", "main.rs:1", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));

    // Revoked tokens stop working.
    assert_success(&server.cli(&server.admin, &["token", "revoke", "vera"]));
    assert_eq!(
        server
            .client(Some(&viewer))
            .probes(false)
            .unwrap_err()
            .status(),
        Some(401)
    );
}

#[test]
fn bad_input_gets_400_naming_the_field_and_unknown_ids_404() {
    let dir = test_dir("badinput");
    let server = Server::start(&dir, 0);
    let admin = server.admin();
    let mut p = log_probe("service=x", "a={a}");
    p.condition = Some("a >".into());
    let e = admin.add_probe(&p).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(
        e.to_string().contains("condition") && e.to_string().contains("column"),
        "{e}"
    );
    let mut p = log_probe("service=", "a={a}");
    p.target = "service=".into();
    let e = admin.add_probe(&p).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("KEY=VALUE"), "{e}");
    let mut p = log_probe("service=x", "a={a}");
    p.template = None;
    let e = admin.add_probe(&p).unwrap_err();
    assert!(e.to_string().contains("template"), "{e}");
    // Neither tags nor an instance id; a location with a control character.
    let e = admin
        .add_probe(&log_probe("\u{ed}\u{6b675} \u{c9}", "a={a}"))
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("neither tags"), "{e}");
    let mut p = log_probe("service=x", "a={a}");
    p.location = "main.rs\u{7}:3".into();
    let e = admin.add_probe(&p).unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("control character U+0007"), "{e}");
    // A query parameter of the wrong type: a JSON error naming it, like every other.
    let r = ureq::get(&format!("{}/api/v1/probes/p1/events?limit=-3", server.url))
        .header("Authorization", &format!("Bearer {}", server.admin))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.into_body().read_json().expect("a JSON error");
    assert_eq!(body["field"], "query", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|m| m.contains("limit")),
        "{body}"
    );
    assert_eq!(admin.probe("p999").unwrap_err().status(), Some(404));
    assert_eq!(admin.remove_probe("p999").unwrap_err().status(), Some(404));
    let out = server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "log",
            "service=x",
            "main.rs:1",
            "{a",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("template"), "{}", stderr(&out));
    // A location that does not resolve shows the engine's message per instance.
    let mut t = Target::start(&ledger_debug(), &["2000", "1"]);
    let agent_token = server.token("agent", "agent");
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=bad"],
    );
    let inst = instance_of(&server, t.pid);
    let mut p = log_probe("service=bad", "x");
    p.location = "ledger.rs:9999".into();
    let probe = admin.add_probe(&p).expect("add");
    let s = eventually("engine error reported", || {
        admin
            .probe(&probe.id)
            .ok()?
            .instances
            .into_iter()
            .find(|s| s.instance == inst && s.state == InstallState::Error)
    });
    let msg = s.last_error.expect("message");
    assert!(msg.contains("nearest lines with code"), "{msg}");
    t.assert_untouched();
}

#[test]
fn an_exe_agent_follows_processes_that_start_and_exit() {
    let dir = test_dir("exe");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    let name = format!("ldg{}", std::process::id() % 100_000);
    let exe = unique_copy(&ledger_debug(), &dir, &name);
    let mut first = Target::start(&exe, &["2000", "1"]);
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--exe", &name, "--tag", "service=byname"],
    );
    let i1 = instance_of(&server, first.pid);
    let probe = server
        .admin()
        .add_probe(&log_probe("service=byname", "total={total}"))
        .expect("add");
    // A process started after the agent gets the probe too.
    let second = Target::start(&exe, &["2000", "1"]);
    let i2 = instance_of(&server, second.pid);
    assert_ne!(i1, i2);
    let admin = server.admin();
    let mut from: HashSet<String> = HashSet::new();
    let mut after = None;
    while !from.contains(&i2) {
        let evs = admin
            .wait_for_events(&probe.id, after, 5, Duration::from_secs(30))
            .map(json_list)
            .expect("wait");
        assert!(!evs.is_empty(), "events from the later process");
        for e in evs {
            after = e["seq"].as_i64();
            from.insert(e["instance"].as_str().unwrap_or("").to_string());
        }
    }
    // The first exits: its instance is dropped from the live list.
    let _ = first.child.kill();
    let _ = first.child.wait();
    eventually("exited instance dropped", || {
        let list = admin.instances().ok()?;
        (!list.iter().any(|i| i.id == i1)).then_some(())
    });
    drop(second);
}

#[test]
fn a_failures_probe_captures_a_panic_on_an_instance_and_the_program_still_fails() {
    let dir = test_dir("failures");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    let mut t = Target::start(&panicker(), &[]);
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=panicky"],
    );
    let inst = instance_of(&server, t.pid);
    let admin = server.admin();
    let probe = admin
        .add_probe(&NewProbe {
            ttl_seconds: Some(120),
            frames: Some(2),
            ..NewProbe::new(ProbeKind::Failures, &inst, "")
        })
        .expect("add");
    let settled = admin
        .settled_probe(&probe.id, Duration::from_secs(30))
        .expect("show");
    assert_eq!(settled.instances[0].state, InstallState::Installed);
    if let Some(s) = t.stdin.as_mut() {
        use std::io::Write;
        writeln!(s, "50").expect("send");
    }
    let (status, _) = t.wait_output();
    assert_eq!(
        status.code(),
        Some(101),
        "the panic goes on as without Periscope"
    );
    let events = admin
        .wait_for_events(&probe.id, None, 1, Duration::from_secs(30))
        .map(json_list)
        .expect("wait");
    let e = &events[0];
    assert_eq!(e["kind"], "snapshot");
    assert_eq!(e["instance"], inst.as_str());
    assert_eq!(e["failure"]["kind"], "panic");
    assert_eq!(e["failure"]["message"], "index 50 beyond limit 6");
    let check = e["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .find(|f| f["function"] == "panicker::check")
        .expect("the panicking frame");
    assert_eq!(check["variables"]["i"]["value"], 50);
    assert_eq!(check["variables"]["limit"]["value"], 6);
}

/// A private CA and a certificate for 127.0.0.1 signed by it (openssl CLI); returns the paths
/// of (CA certificate, server certificate, server key).
fn make_certificates(dir: &std::path::Path) -> (String, String, String) {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=periscope test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("server.pem"),
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
    ]);
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

#[test]
fn the_server_speaks_https_with_a_certificate_and_key() {
    let dir = test_dir("tls");
    let (ca, cert, key) = make_certificates(&dir);
    let server = Server::start_with(&dir, 0, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let ca_pem = std::fs::read(&ca).unwrap();
    let trusted = periscope_client::Client::with_ca(
        &server.url,
        Some(server.admin.clone()),
        "cli",
        Some(&ca_pem),
    )
    .expect("client");
    trusted.probes(false).expect("HTTPS with the private CA");
    // Without the CA the certificate is not trusted.
    let e = server.admin().probes(false).unwrap_err();
    assert!(e.status().is_none(), "{e}");
    // The CLI and an agent take --ca-cert.
    let out = periscope()
        .args([
            "instances",
            "--json",
            "--server",
            &server.url,
            "--token",
            &server.admin,
            "--ca-cert",
            &ca,
        ])
        .env("PERISCOPE_CONFIG", dir.join("none.toml"))
        .output()
        .expect("run");
    assert_success(&out);
    let agent_token = server.token_with_ca("agent", "agent", &ca);
    let mut t = Target::start(&ledger_debug(), &["2000", "1"]);
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--ca-cert", &ca],
    );
    let found = eventually("instance over HTTPS", || {
        trusted
            .instances()
            .ok()?
            .into_iter()
            .find(|i| i.pid == t.pid)
    });
    assert_eq!(found.state, "online");
    drop(_agent);
    t.assert_untouched();
}

#[test]
fn a_bad_certificate_file_is_a_clear_startup_error() {
    let dir = test_dir("tls-bad");
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    let out = periscope()
        .args(["server", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("p.db"))
        .args(["--tls-cert"])
        .arg(dir.join("bad.pem"))
        .args(["--tls-key"])
        .arg(dir.join("bad.pem"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.pem") && err.contains("certificate"),
        "{err}"
    );
}

#[test]
fn probes_come_and_go_while_the_target_spawns_threads_nonstop() {
    // The leader starts two threads every few milliseconds: stopping it to map a scratch page
    // often lands inside clone(), whose event stop answers the interrupt (regression: the
    // engine could wait forever for a second stop; this churn makes that window likely).
    let dir = test_dir("churn");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    let mut t = Target::start(&ledger_debug(), &["20", "2"]);
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=churn"],
    );
    instance_of(&server, t.pid);
    let admin = server.admin();
    for round in 0..30 {
        let p = admin
            .add_probe(&log_probe("service=churn", "total={total}"))
            .expect("add");
        let settled = admin
            .settled_probe(&p.id, Duration::from_secs(30))
            .expect("show");
        assert_eq!(
            settled.instances[0].state,
            InstallState::Installed,
            "round {round}: {settled:?}"
        );
        let hits = admin
            .wait_for_events(&p.id, None, 1, Duration::from_secs(30))
            .map(json_list)
            .expect("events");
        // Regression: a wake-up consumed while the probe was put in (the leader stopped for
        // its scratch page) left the engine asleep with the target's threads stopped at it.
        assert!(!hits.is_empty(), "round {round}: no hit within 30 s");
        admin.remove_probe(&p.id).expect("rm");
        eventually("detached", || {
            (t.status_field("TracerPid:") == "0").then_some(())
        });
    }
    t.assert_untouched();
}

#[test]
fn a_restarted_agent_reinstalls_its_probes() {
    let dir = test_dir("agent-restart");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    let mut t = Target::start(&ledger_debug(), &["2000", "2"]);
    let pid = t.pid.to_string();
    let args = ["--pid", pid.as_str(), "--tag", "service=phoenix"];
    let mut first = Agent::start(&server, &agent_token, &args);
    instance_of(&server, t.pid);
    let admin = server.admin();
    let mut spec = log_probe("service=phoenix", "total={total}");
    spec.budget_ms = Some(10_000); // not paused for overhead on this busy line
    let p = admin.add_probe(&spec).expect("add");
    let before = admin
        .wait_for_events(&p.id, None, 3, Duration::from_secs(30))
        .map(json_list)
        .expect("events");
    first.stop(); // SIGTERM: the agent takes its probes out and goes
    eventually("detached", || {
        (t.status_field("TracerPid:") == "0").then_some(())
    });
    let _second = Agent::start(&server, &agent_token, &args);
    let last = before.last().and_then(|e| e["seq"].as_i64());
    let resumed = admin
        .wait_for_events(&p.id, last, 3, Duration::from_secs(60))
        .map(json_list)
        .expect("events from the new agent");
    assert_eq!(resumed.len(), 3, "the probe was installed again");
    admin.remove_probe(&p.id).expect("rm");
    eventually("detached", || {
        (t.status_field("TracerPid:") == "0").then_some(())
    });
    t.assert_untouched();
}

#[test]
fn conflicts_are_409s_and_a_zero_count_wait_does_not_wait() {
    let dir = test_dir("conflicts");
    let server = Server::start(&dir, 0);
    let admin = server.admin();
    let call = |method: &str, path: &str| {
        let url = format!("{}{path}", server.url);
        let auth = format!("Bearer {}", server.admin);
        let r = match method {
            "DELETE" => ureq::delete(&url)
                .header("Authorization", &auth)
                .config()
                .http_status_as_error(false)
                .build()
                .call(),
            _ => ureq::get(&url)
                .header("Authorization", &auth)
                .config()
                .http_status_as_error(false)
                // A wait that did wait would outlast this and fail the test.
                .timeout_global(Some(std::time::Duration::from_secs(60)))
                .build()
                .call(),
        }
        .expect("request");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.into_body().read_json().expect("JSON");
        (status, body)
    };
    // The token making the request cannot revoke itself: a server whose only admin did would be
    // left without one.
    let (status, body) = call("DELETE", "/api/v1/tokens/admin");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("another admin token")),
        "{body}"
    );
    assert!(admin.probes(false).is_ok(), "the admin token still works");
    // Verdicts of a probe that is not a verify probe: it exists, but has none.
    let p = admin
        .add_probe(&log_probe("service=x", "a={a}"))
        .expect("a log probe");
    let (status, body) = call("GET", &format!("/api/v1/probes/{}/verify", p.id));
    assert_eq!(status, 409, "{body}");
    // `count=0` answers with what is stored, without waiting out its (10 minute) timeout.
    let (status, body) = call(
        "GET",
        &format!("/api/v1/probes/{}/wait?count=0&timeout_ms=600000", p.id),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], serde_json::json!([]), "{body}");
}
