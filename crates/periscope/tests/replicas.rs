//! Server replicas on one PostgreSQL database: a throwaway cluster (initdb/pg_ctl on a free
//! port), two `periscope server` processes sharing it, real agents on real targets.

mod common;

use common::fleet::*;
use common::postgres::PgCluster;
use common::*;
use periscope_core::api::{NewProbe, ProbeKind, ProbeLifecycle};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn settle_line() -> String {
    format!("ledger.rs:{}", probe_line("ledger.rs", "settle-total") + 1)
}

/// Two replicas on one new database; the first makes the admin token, in `dir`.
fn two_replicas(cluster: &PgCluster, name: &str) -> (Server, Server) {
    let dir = test_dir(name);
    let url = cluster.database(name);
    let a = Server::start_on(&dir, 0, &url, &[]);
    let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin token");
    let b = Server::start_on(&dir, 0, &url, &[]);
    assert_eq!(
        std::fs::read_to_string(dir.join("admin.token")).expect("admin token"),
        token,
        "the second replica keeps the first one's admin token"
    );
    (a, b)
}

#[test]
fn replicas_share_tokens_probes_and_live_events_and_an_agent_moves_when_its_replica_dies() {
    let cluster = PgCluster::start();
    let (mut a, b) = two_replicas(&cluster, "replicas");
    assert_eq!(
        b.admin().tokens().expect("tokens").len(),
        1,
        "one admin token"
    );

    // A token made on A works on B at once.
    let agent_token = a.token("agent", "agents");
    let viewer = a.token("viewer", "viewer");
    b.client(Some(&viewer))
        .probes(false)
        .expect("the viewer token works on B");

    let mut t = Target::start(&ledger_debug(), &["2000", "1"]);
    let servers = format!("{},{}", a.url, b.url);
    let mut agent = Agent::start_on(
        &servers,
        &a.dir,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=ledger"],
    );
    instance_of(&b, t.pid);

    // A live tail on B, started before the probe exists, sees events the agent sends to A.
    let mut tail = periscope()
        .args(["tail", "--json", "--server", &b.url, "--token", &viewer])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    let lines = std::io::BufReader::new(tail.stdout.take().expect("stdout"));
    let (tail_tx, tail_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if tail_tx.send(line).is_err() {
                return;
            }
        }
    });

    // Added on B; the agent (on A) installs it; its events are read on both.
    let probe = b
        .admin()
        .add_probe(&NewProbe {
            template: Some("total={total}".into()),
            ..NewProbe::new(ProbeKind::Log, "service=ledger", &settle_line())
        })
        .expect("add on B");
    let on_a = a
        .admin()
        .wait_for_events(&probe.id, None, 5, Duration::from_secs(30))
        .map(json_list)
        .expect("wait on A");
    let on_b = b
        .admin()
        .wait_for_events(&probe.id, None, 5, Duration::from_secs(30))
        .map(json_list)
        .expect("wait on B");
    assert!(on_a.len() >= 5 && on_b.len() >= 5, "{on_a:?} {on_b:?}");
    assert_eq!(on_a[..5], on_b[..5], "both replicas read the same events");
    let streamed = loop {
        let l = tail_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("B's tail printed an event");
        if l.contains(&format!("\"probe\":\"{}\"", probe.id)) {
            break l;
        }
    };
    assert!(streamed.contains("\"seq\":"), "{streamed}");

    // SIGKILL of A: the agent moves to B and events go on.
    let before_kill = b
        .admin()
        .events(&probe.id, &Default::default())
        .map(json_list)
        .expect("events")
        .last()
        .and_then(|e| e["seq"].as_i64())
        .expect("a seq");
    a.kill();
    let after = b
        .admin()
        .wait_for_events(
            &probe.id,
            Some(before_kill + 50),
            20,
            Duration::from_secs(60),
        )
        .map(json_list)
        .expect("wait on B after A died");
    assert!(after.len() >= 20, "events go on through B: {after:?}");

    // Every event the agent sent is stored exactly once: its keys run 1, 2, … with no gap
    // and no repeat, even around the report A took but never answered.
    agent.stop();
    let mut keys: BTreeMap<u64, usize> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = b
            .admin()
            .events(
                &probe.id,
                &periscope_client::EventQuery {
                    after: cursor,
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .map(json_list)
            .expect("page");
        for e in &page {
            let key = e["key"].as_u64().unwrap_or_else(|| panic!("a key: {e}"));
            *keys.entry(key).or_default() += 1;
            cursor = e["seq"].as_i64();
        }
        if page.len() < 1000 {
            break;
        }
    }
    let repeated: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "stored twice: {repeated:?}");
    let (first, last) = (keys.keys().next().copied(), keys.keys().last().copied());
    assert_eq!(first, Some(1));
    assert_eq!(
        keys.len() as u64,
        last.unwrap_or(0),
        "no event lost between keys 1 and {last:?}"
    );
    let _ = tail.kill();
    let _ = tail.wait();
    t.assert_untouched();
}

#[test]
fn a_probe_expires_once_across_replicas_and_the_audit_log_is_append_only() {
    let cluster = PgCluster::start();
    let (a, b) = two_replicas(&cluster, "expiry");
    let probe = a
        .admin()
        .add_probe(&NewProbe {
            template: Some("x".into()),
            ttl_seconds: Some(1),
            ..NewProbe::new(ProbeKind::Log, "service=nothing", &settle_line())
        })
        .expect("add");
    for server in [&a, &b] {
        eventually("expired", || {
            (server.admin().probe(&probe.id).ok()?.state == ProbeLifecycle::Expired).then_some(())
        });
    }
    // Both replicas' expiry tasks ran past the deadline; one expired it.
    std::thread::sleep(Duration::from_millis(200));
    let expiries = b
        .admin()
        .audit(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "probe.expire" && e.target == probe.id)
        .count();
    assert_eq!(expiries, 1, "expired once");

    // The database itself refuses to change or delete audit entries.
    for sql in [
        "UPDATE audit SET actor = 'mallory'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let out = cluster.psql("expiry", sql);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("append-only"),
            "{sql}: {err}"
        );
    }
    assert!(b
        .admin()
        .audit(None)
        .expect("audit")
        .iter()
        .all(|e| e.actor != "mallory"));
}

#[test]
fn replicas_starting_together_on_an_empty_database_make_one_admin_token() {
    let cluster = PgCluster::start();
    let url = cluster.database("bootstrap");
    let (d1, d2) = (test_dir("bootstrap-1"), test_dir("bootstrap-2"));
    let start = |dir: std::path::PathBuf| {
        let url = url.clone();
        std::thread::spawn(move || {
            periscope()
                .args(["server", "--listen", "127.0.0.1:0", "--db", &url])
                .arg("--admin-token-file")
                .arg(dir.join("admin.token"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("server")
        })
    };
    let (h1, h2) = (start(d1.clone()), start(d2.clone()));
    let mut children = vec![h1.join().expect("start"), h2.join().expect("start")];
    // Each says it listens once migrations and the bootstrap are done.
    for c in &mut children {
        let mut err = std::io::BufReader::new(c.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap_or(0) > 0, "server ended");
            if line.contains("listening on") || Instant::now() > deadline {
                break;
            }
        }
    }
    let files = [&d1, &d2]
        .iter()
        .filter(|d| d.join("admin.token").exists())
        .count();
    assert_eq!(files, 1, "exactly one replica wrote an admin token");
    let count = cluster.psql("bootstrap", "SELECT COUNT(*) FROM tokens");
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1");
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn retention_on_postgres_drops_old_events_and_a_report_sent_twice_is_stored_once() {
    use periscope_core::api::{AgentInfo, AgentReport};
    let cluster = PgCluster::start();
    let (a, _b) = two_replicas(&cluster, "retention");
    let agent = a.token("agent", "agents");
    let probe = a
        .admin()
        .add_probe(&NewProbe {
            template: Some("x".into()),
            ..NewProbe::new(ProbeKind::Log, "service=nothing", &settle_line())
        })
        .expect("add");
    let event = |ts: &str, key: u64| -> periscope_core::event::Event {
        serde_json::from_value(serde_json::json!({
            "kind": "log", "probe": probe.id, "instance": "i-1", "ts": ts, "key": key,
            "pid": 1, "tid": 1, "location": "a.rs:1", "message": "m", "values": {}
        }))
        .expect("event")
    };
    let report = AgentReport {
        agent: AgentInfo {
            id: "agent-1".into(),
            host: "h".into(),
            tags: Default::default(),
            features: Vec::new(),
        },
        run: Some("run-1".into()),
        instances: vec![],
        statuses: vec![],
        events: vec![
            event("2020-01-01T00:00:00Z", 1),
            event("2020-01-01T00:00:01Z", 2),
            event(&periscope_core::event::now_rfc3339(), 3),
        ],
        dropped_events: 0,
        stopping: false,
    };
    let client = a.client(Some(&agent));
    client.report(&report).expect("report");
    // The same report again (its answer was lost, say): nothing stored twice.
    client.report(&report).expect("report again");
    let stored = a
        .admin()
        .events(&probe.id, &Default::default())
        .map(json_list)
        .expect("events");
    assert_eq!(stored.len(), 3, "{stored:?}");

    // A third replica starting now applies retention (7 days) at once: the 2020 events go.
    let c = Server::start_on(&a.dir, 0, &cluster.url("retention"), &[]);
    let left = eventually("old events pruned", || {
        let left = c
            .admin()
            .events(&probe.id, &Default::default())
            .map(json_list)
            .ok()?;
        (left.len() == 1).then_some(left)
    });
    assert_eq!(left[0]["key"], 3);
}

#[test]
fn a_code_view_on_one_replica_is_answered_by_an_agent_polling_the_other() {
    let cluster = PgCluster::start();
    let dir = test_dir("replicas_code");
    let url = cluster.database("replicas_code");
    let a = Server::start_on(&dir, 0, &url, &[]);
    // B waits less than the agent's poll lasts (20 s): only the wake-up through A reaches the
    // agent in time.
    let b = Server::start_on(&dir, 0, &url, &["--code-timeout", "5s"]);
    let agent_token = a.token("agent", "agents");
    let t = Target::start(&ledger_debug(), &["2000", "1"]);
    // The agent knows replica A only: its desired-state poll is held there.
    let _agent = Agent::start_on(
        &a.url,
        &a.dir,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=ledger"],
    );
    let instance = instance_of(&b, t.pid);
    let line = probe_line("ledger.rs", "settle-total") + 1;
    // Asked on B: the request is stored, B's NOTIFY wakes A's poll, the agent answers on A,
    // A's NOTIFY wakes B's wait.
    let listing = b
        .admin()
        .source(&instance, "ledger.rs", Some(line), Some(line))
        .expect("a listing asked on the replica the agent does not poll");
    assert_eq!(listing.lines.len(), 1, "{listing:?}");
    assert!(listing.lines[0].instrumentable, "{listing:?}");
    let checked = b
        .admin()
        .check_probe(&NewProbe {
            template: Some("total={total}".into()),
            ..NewProbe::new(ProbeKind::Log, "service=ledger", &settle_line())
        })
        .expect("a probe check asked on B");
    assert_eq!(checked.checked_on.as_deref(), Some(instance.as_str()));
    assert!(checked.sites.is_some_and(|n| n >= 1), "{checked:?}");
}
