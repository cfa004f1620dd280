//! Every long-running command ends promptly when asked (SIGTERM, or an MCP server's stdin
//! closing), whatever is connected to it, and leaves its targets as they were. A service manager
//! or an MCP client escalates to SIGKILL after a few seconds, the one exit we must never need.
//!
//! The bound each test allows (10 s) is far above what the commands take (well under 1 s, see
//! the README) and far below the hangs these tests were written against (20 s to forever).

mod common;

use common::fleet::json_list;

use common::fleet::{instance_of, test_dir, Agent, Server};
use common::{assert_success, periscope, probe_line, service, spinwait, Target};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(10);

fn term(child: &Child) {
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits up to [`BOUND`] for `child` to exit; panics naming `what` if it does not.
fn ends_within_bound(child: &mut Child, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return start.elapsed();
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            panic!("{what} was still running {BOUND:?} after it was asked to stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A hand-driven MCP client over a child's stdio (newline-delimited JSON-RPC).
struct Mcp {
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Mcp {
    fn start(child: &mut Child) -> Mcp {
        let mut m = Mcp {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().expect("stdout")),
            next_id: 1,
        };
        m.request(
            "initialize",
            json!({
                "protocolVersion": "2025-03-26",
                "capabilities": {},
                "clientInfo": {"name": "shutdown-test", "version": "1"}
            }),
        );
        m.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        m
    }

    fn send(&mut self, msg: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").expect("write to mcp");
        stdin.flush().expect("flush");
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).expect("read mcp") > 0,
                "mcp closed stdout while {method} was pending"
            );
            let v: Value = serde_json::from_str(&line).expect("mcp sends JSON lines");
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    fn tool(&mut self, name: &str, args: Value) -> Value {
        let r = self.request("tools/call", json!({"name": name, "arguments": args}));
        let result = &r["result"];
        assert_ne!(result["isError"], json!(true), "{name} failed: {r}");
        result["structuredContent"].clone()
    }
}

fn mcp_local(pid: u32) -> Child {
    periscope()
        .args(["mcp", "--pid", &pid.to_string()])
        .env("PERISCOPE_CONFIG", "/nonexistent/periscope.toml")
        .env_remove("PERISCOPE_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn periscope mcp")
}

/// Places a log probe through MCP and waits for its first event: the target is attached.
fn place_probe(mcp: &mut Mcp) {
    let listed = mcp.tool("list_instances", json!({}));
    let instance = listed["instances"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no instance listed: {listed}"))
        .to_string();
    let line = probe_line("service.rs", "handle-cost");
    let added = mcp.tool(
        "add_log",
        json!({"target": instance, "location": format!("service.rs:{line}"), "template": "id={req.id}"}),
    );
    let probe = added["probe"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no probe id in {added}"))
        .to_string();
    let events = mcp.tool(
        "wait_for_events",
        json!({"probe_id": probe, "count": 1, "timeout_seconds": 60}),
    );
    assert!(
        events["events"].as_array().is_some_and(|e| !e.is_empty()),
        "no event from the probe: {events}"
    );
}

#[test]
fn mcp_local_mode_ends_on_sigterm_with_a_probe_attached() {
    let mut target = Target::start(&service(), &["2000"]);
    let mut child = mcp_local(target.pid);
    let mut mcp = Mcp::start(&mut child);
    place_probe(&mut mcp);
    term(&child);
    let took = ends_within_bound(&mut child, "periscope mcp (local mode) after SIGTERM");
    eprintln!("mcp local mode ended {took:?} after SIGTERM");
    target.assert_untouched();
}

#[test]
fn mcp_local_mode_ends_when_its_client_closes_stdin() {
    let mut target = Target::start(&service(), &["2000"]);
    let mut child = mcp_local(target.pid);
    let mut mcp = Mcp::start(&mut child);
    place_probe(&mut mcp);
    drop(mcp.stdin.take());
    let took = ends_within_bound(&mut child, "periscope mcp (local mode) after stdin closed");
    eprintln!("mcp local mode ended {took:?} after stdin closed");
    target.assert_untouched();
}

#[test]
fn mcp_local_mode_without_a_client_ends_at_once_on_eof() {
    let target = Target::start(&service(), &["2000"]);
    let mut child = periscope()
        .args(["mcp", "--pid", &target.pid.to_string()])
        .env("PERISCOPE_CONFIG", "/nonexistent/periscope.toml")
        .env_remove("PERISCOPE_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let took = ends_within_bound(&mut child, "periscope mcp with stdin at EOF");
    eprintln!("mcp local mode with no client ended after {took:?}");
}

/// A server, an agent on a fresh service target, and a log probe on it with its first event
/// stored: everything connected and busy.
struct Busy {
    dir: std::path::PathBuf,
    server: Server,
    target: Target,
    agent: Agent,
}

fn busy_fleet(name: &str) -> Busy {
    let dir = test_dir(name);
    let server = Server::start(&dir, 0);
    let target = Target::start(&service(), &["2000"]);
    let agent_token = server.token("agent", "a1");
    let agent = Agent::start(&server, &agent_token, &["--pid", &target.pid.to_string()]);
    let instance = instance_of(&server, target.pid);
    let line = probe_line("service.rs", "handle-cost");
    let out = server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "log",
            &instance,
            &format!("service.rs:{line}"),
            "id={req.id}",
            "--json",
        ],
    );
    let probe = common::fleet::json_out(&out)["id"]
        .as_str()
        .expect("probe id")
        .to_string();
    let c = server.admin();
    common::fleet::eventually("the probe's first event", || {
        c.wait_for_events(&probe, None, 1, Duration::from_secs(5))
            .map(json_list)
            .ok()
            .filter(|e| !e.is_empty())
    });
    Busy {
        dir,
        server,
        target,
        agent,
    }
}

#[test]
fn server_ends_on_sigterm_while_a_tail_and_an_agent_are_connected() {
    let Busy {
        dir,
        mut server,
        mut target,
        mut agent,
    } = busy_fleet("shutdown-server");
    let mut tail = periscope()
        .arg("tail")
        .env("PERISCOPE_SERVER", &server.url)
        .env("PERISCOPE_TOKEN", &server.admin)
        .env("PERISCOPE_CONFIG", dir.join("no-config.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    // The tail is connected once it prints an event.
    let mut tail_out = BufReader::new(tail.stdout.take().expect("tail stdout"));
    let mut first = String::new();
    tail_out.read_line(&mut first).expect("tail prints");
    assert!(first.contains("id="), "tail printed {first:?}");
    std::thread::spawn(move || for _ in tail_out.lines() {});

    term(&server.child);
    let took = ends_within_bound(&mut server.child, "periscope server after SIGTERM");
    eprintln!("server ended {took:?} after SIGTERM with a tail connected");
    // The tail's stream ended with the server; it is a client and may reconnect, so stop it.
    term(&tail);
    ends_within_bound(&mut tail, "periscope tail after SIGTERM");
    term(&agent.child);
    let took = ends_within_bound(&mut agent.child, "periscope agent after SIGTERM");
    eprintln!("agent ended {took:?} after SIGTERM (server gone)");
    agent.stop();
    target.assert_untouched();
}

#[test]
fn agent_ends_on_sigterm_with_a_probe_attached() {
    // The server stays bound (and up) until the end of the test.
    let Busy {
        server: _server,
        mut target,
        mut agent,
        ..
    } = busy_fleet("shutdown-agent");
    term(&agent.child);
    let took = ends_within_bound(&mut agent.child, "periscope agent after SIGTERM");
    eprintln!("agent ended {took:?} after SIGTERM with a probe attached");
    target.assert_untouched();
}

#[test]
fn local_log_ends_on_sigterm() {
    let mut target = Target::start(&service(), &["2000"]);
    let line = probe_line("service.rs", "handle-cost");
    let mut log = periscope()
        .args([
            "log",
            &target.pid.to_string(),
            &format!("service.rs:{line}"),
            "id={req.id}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn log");
    let mut out = BufReader::new(log.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("log prints");
    assert!(first.contains("id="), "log printed {first:?}");
    std::thread::spawn(move || for _ in out.lines() {});
    term(&log);
    let took = ends_within_bound(&mut log, "periscope log after SIGTERM");
    eprintln!("log ended {took:?} after SIGTERM");
    target.assert_untouched();
}

#[test]
fn mcp_with_a_server_ends_on_sigterm_and_on_eof() {
    let dir = test_dir("shutdown-mcp-server");
    let server = Server::start(&dir, 0);
    let start = || {
        periscope()
            .args(["mcp", "--server", &server.url, "--token", &server.admin])
            .env("PERISCOPE_CONFIG", dir.join("no-config.toml"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn periscope mcp --server")
    };
    let mut child = start();
    let mut mcp = Mcp::start(&mut child);
    mcp.tool("list_probes", json!({}));
    term(&child);
    let took = ends_within_bound(&mut child, "periscope mcp --server after SIGTERM");
    eprintln!("mcp with a server ended {took:?} after SIGTERM");

    let mut child = start();
    let mut mcp = Mcp::start(&mut child);
    mcp.tool("list_probes", json!({}));
    drop(mcp.stdin.take());
    let took = ends_within_bound(&mut child, "periscope mcp --server after stdin closed");
    eprintln!("mcp with a server ended {took:?} after stdin closed");
}

/// A periscope killed between mapping a scratch area and writing its header (the test hook
/// aborts right there, as a SIGKILL would) leaves a blank executable mapping; the next attach
/// recognizes it from the address it noted beforehand and removes it.
#[test]
fn a_kill_between_mapping_scratch_and_marking_it_leaves_nothing_after_the_next_attach() {
    let mut t = Target::start(&spinwait(), &[]);
    let pid = t.pid.to_string();
    let at = format!("spinwait.c:{}", probe_line("spinwait.c", "job-done"));
    let died = periscope()
        .args(["log", &pid, &at, "hit", "--json", "--engine", "ptrace"])
        .env("PERISCOPE_TEST_DIE_AFTER_SCRATCH_MMAP", "1")
        .output()
        .expect("periscope");
    assert!(!died.status.success(), "the hook aborts periscope");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(
        maps.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 5 && f[1] == "r-xp"
        }),
        "the hook left an unmarked scratch mapping:\n{maps}"
    );
    assert!(t.is_running());
    let out = periscope()
        .args([
            "log",
            &pid,
            &at,
            "hit",
            "--max-hits",
            "1",
            "--json",
            "--engine",
            "ptrace",
        ])
        .output()
        .expect("periscope");
    assert_success(&out);
    t.assert_untouched();
}
