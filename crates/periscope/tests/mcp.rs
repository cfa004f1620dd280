//! MCP end to end with a third-party client: the official Python SDK (`mcp` on PyPI) drives an
//! investigation of a running target over stdio and over streamable HTTP
//! (tests/mcp_investigate.py checks the values the target computed).

mod common;

use common::fleet::*;
use common::*;
use std::process::Command;

fn settle_line() -> u32 {
    probe_line("ledger.rs", "settle-total") + 1
}

/// Runs the Python investigation with `config`; returns what it printed.
fn python(config: serde_json::Value) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_investigate.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(config.to_string())
        .output()
        .expect("python3 (with `pip install mcp`)");
    assert!(
        out.status.success(),
        "the Python MCP client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("result JSON")
}

fn fleet(name: &str) -> (Server, Agent, Target) {
    let dir = test_dir(name);
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    let target = Target::start(&ledger_debug(), &["3000", "2"]);
    let agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &target.pid.to_string(), "--tag", "service=ledger"],
    );
    instance_of(&server, target.pid);
    (server, agent, target)
}

fn assert_audited_via_mcp(server: &Server, actor: &str, probe: &str) {
    let audit = server.admin().audit(None).expect("audit");
    for action in ["probe.add", "probe.remove"] {
        assert!(
            audit.iter().any(|e| e.action == action
                && e.target == probe
                && e.via == "mcp"
                && e.actor == actor),
            "{action} of {probe} audited via mcp by {actor}: {audit:?}"
        );
    }
    // MCP probes get the short TTL: 15 minutes.
    let p = server.admin().probe(probe).expect("probe");
    assert_eq!(p.spec.ttl_seconds, Some(900));
    assert_eq!(p.via, "mcp");
}

#[test]
fn python_sdk_investigates_over_stdio() {
    let (server, _agent, mut target) = fleet("mcp-stdio");
    let token = server.token("operator", "claude-stdio");
    let result = python(serde_json::json!({
        "transport": "stdio",
        "command": [env!("CARGO_BIN_EXE_periscope"), "mcp", "--server", server.url, "--token", token],
        "pid": target.pid,
        "line": settle_line(),
    }));
    let probe = result["probe"].as_str().expect("probe id");
    assert_audited_via_mcp(&server, "claude-stdio", probe);
    drop(_agent);
    target.assert_untouched();
}

#[test]
fn python_sdk_investigates_over_streamable_http_with_roles() {
    let (server, _agent, mut target) = fleet("mcp-http");
    let token = server.token("operator", "claude-http");
    let url = format!("{}/mcp", server.url);
    let result = python(serde_json::json!({
        "transport": "http", "url": url, "token": token,
        "pid": target.pid, "line": settle_line(),
    }));
    let probe = result["probe"].as_str().expect("probe id");
    assert_audited_via_mcp(&server, "claude-http", probe);

    // A viewer can list and read, not place probes.
    let viewer = server.token("viewer", "reader");
    let denied = python(serde_json::json!({
        "transport": "http", "url": url, "token": viewer, "viewer": true,
        "pid": target.pid, "line": settle_line(),
    }));
    assert!(denied["viewer_denied"].as_str().unwrap().contains("403"));

    // Without a token the endpoint refuses outright (and the refusal is audited).
    let out = Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_investigate.py"))
        .arg(
            serde_json::json!({"transport": "http", "url": url, "token": "psk_wrong",
                               "pid": target.pid, "line": settle_line()})
            .to_string(),
        )
        .output()
        .expect("python3");
    assert!(!out.status.success());
    let audit = server.admin().audit(None).expect("audit");
    assert!(audit
        .iter()
        .any(|e| e.action == "mcp.connect" && e.outcome == "denied"));
    drop(_agent);
    target.assert_untouched();
}

#[test]
fn mcp_probes_are_capped_per_token() {
    let (server, _agent, mut target) = fleet("mcp-cap");
    let token = server.token("operator", "greedy");
    let client = periscope_client::Client::new(&server.url, Some(token), "mcp");
    let spec = periscope_core::api::NewProbe::new(
        periscope_core::api::ProbeKind::Count,
        "service=ledger",
        &format!("ledger.rs:{}", settle_line()),
    );
    for _ in 0..10 {
        client.add_probe(&spec).expect("within the cap");
    }
    let e = client.add_probe(&spec).unwrap_err();
    assert_eq!(e.status(), Some(429), "{e}");
    assert!(e.to_string().contains("remove_probe"), "{e}");
    for p in client.probes(false).expect("probes") {
        client.remove_probe(&p.id).expect("rm");
    }
    eventually("detached", || {
        (target.status_field("TracerPid:") == "0").then_some(())
    });
    drop(_agent);
    target.assert_untouched();
}

#[test]
fn local_mode_serves_mcp_on_pids_without_a_server() {
    let mut target = Target::start(&ledger_debug(), &["3000", "2"]);
    let result = python(serde_json::json!({
        "transport": "stdio",
        "command": [env!("CARGO_BIN_EXE_periscope"), "mcp", "--pid", target.pid.to_string(),
                    "--tag", "service=ledger"],
        "env": {"PATH": std::env::var("PATH").unwrap_or_default(),
                "PERISCOPE_CONFIG": "/nonexistent/periscope.toml"},
        "pid": target.pid,
        "line": settle_line(),
    }));
    assert!(result["total"].as_i64().unwrap() > 0);
    eventually("detached after the session", || {
        (target.status_field("TracerPid:") == "0").then_some(())
    });
    target.assert_untouched();
}

#[test]
fn python_sdk_verifies_candidate_fixes() {
    let dir = test_dir("mcp-verify");
    let server = Server::start(&dir, 0);
    let agent_token = server.token("agent", "agent");
    let mut target = Target::start(&refunds(), &["500"]);
    let _agent = Agent::start(&server, &agent_token, &["--pid", &target.pid.to_string()]);
    instance_of(&server, target.pid);
    let token = server.token("operator", "claude-verify");
    let result = python(serde_json::json!({
        "transport": "stdio",
        "command": [env!("CARGO_BIN_EXE_periscope"), "mcp", "--server", server.url, "--token", token],
        "pid": target.pid,
        "location": format!("refunds.rs:{}", probe_line("refunds.rs", "refund-apply")),
        "failure": "refund > charge.amount - charge.refunded",
        "capped": "refund = min(refund, charge.amount - charge.refunded)",
        "halved": "refund = refund / 2",
        "replay": format!("refund..refunds.rs:{}", probe_line("refunds.rs", "refund-check")),
        "replay_failure": "charge.refunded > charge.amount",
    }));
    let v = &result["verify"];
    let cand = |name: &str| {
        v["candidates"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {v}"))
    };
    let n = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}: {c}"));
    let capped = cand("capped");
    assert!(
        n(&capped, "failing") > 0 && n(&capped, "passing") > 0,
        "{v}"
    );
    assert_eq!(n(&capped, "fixed"), n(&capped, "failing"), "{v}");
    assert_eq!(n(&capped, "unchanged"), n(&capped, "passing"), "{v}");
    let halved = cand("halved");
    assert!(n(&halved, "changed") > 0, "{v}");
    assert!(n(v, "hits") >= 300, "{v}");
    // Replay mode through MCP: copies ran the right fix and it fixed every failing hit.
    let r = &result["replay"];
    let capped = &r["candidates"][0];
    assert!(n(r, "hits") >= 150, "{r}");
    assert!(n(capped, "failing") > 0, "{r}");
    assert_eq!(n(capped, "fixed"), n(capped, "failing"), "{r}");
    assert_eq!(n(capped, "unchanged"), n(capped, "passing"), "{r}");
    target.assert_untouched();
}
