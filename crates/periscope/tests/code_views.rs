//! The server's code views (source listing, probe check, function and message lookups) are
//! answered by the instance's agent: the server never opens a binary. Real server, agent and
//! target; the server runs in PID and mount namespaces of its own (`unshare`), so it cannot see
//! the target's process at all, and the target's executable is deleted after it starts: only
//! the agent, through /proc/PID/exe, can read the code.

mod common;

use common::fleet::*;
use common::*;
use periscope_core::api::{NewProbe, ProbeKind};
use std::time::Instant;

/// The server in namespaces of its own: its /proc shows none of the test's processes.
const ISOLATED: &[&str] = &[
    "unshare",
    "--user",
    "--map-root-user",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
];

fn settle_line() -> u32 {
    probe_line("ledger.rs", "settle-total") + 1
}

#[test]
fn code_views_are_read_by_the_agent_when_the_server_cannot_see_the_binary() {
    let dir = test_dir("code-views");
    let exe = unique_copy(&ledger_debug(), &dir, "ledger-code-views");
    let mut t = Target::start(&exe, &["2000", "1"]);
    // The binary is gone from the file system: the process keeps it, reachable through
    // /proc/PID/exe on the agent's side only.
    std::fs::remove_file(&exe).expect("delete the target's executable");
    let server = Server::start_wrapped(&dir, ISOLATED, &[]);
    let agent_token = server.token("agent", "agent");
    let _agent = Agent::start(
        &server,
        &agent_token,
        &["--pid", &t.pid.to_string(), "--tag", "service=ledger"],
    );
    let instance = instance_of(&server, t.pid);
    let c = server.admin();
    let line = settle_line();

    let started = Instant::now();
    let listing = c
        .source(&instance, "ledger.rs", Some(line - 2), Some(line + 2))
        .expect("the source listing, through the agent");
    let first = started.elapsed();
    assert!(listing.file.ends_with("ledger.rs"), "{:?}", listing.file);
    let at = listing
        .lines
        .iter()
        .find(|l| l.line == line)
        .unwrap_or_else(|| panic!("line {line} in {listing:?}"));
    assert!(at.instrumentable, "{at:?}");
    assert!(
        at.text
            .as_deref()
            .unwrap_or("")
            .contains("ledger.push(total)"),
        "{at:?}"
    );
    let started = Instant::now();
    c.source(&instance, "ledger.rs", None, None)
        .expect("the whole file");
    eprintln!(
        "source listing through the agent: first {first:?} (indexing), then {:?}",
        started.elapsed()
    );

    let functions = c.functions(&instance, "settle").expect("functions");
    assert!(
        functions
            .iter()
            .any(|f| f.name == "ledger::settle" && f.file.ends_with("ledger.rs")),
        "{functions:?}"
    );
    let matches = c.messages(&instance, "owner-1").expect("messages");
    assert!(
        matches.first().is_some_and(|m| m.exact
            && m.file.as_deref().is_some_and(|f| f.ends_with("ledger.rs"))),
        "{matches:?}"
    );

    // A probe check resolves on the agent: a good one gives its sites, a bad name is a 400
    // naming the field, a file not in the debug info a 400 on `file`.
    let good = NewProbe {
        template: Some("total={total}".into()),
        ..NewProbe::new(ProbeKind::Log, &instance, &format!("ledger.rs:{line}"))
    };
    let checked = c.check_probe(&good).expect("check");
    assert!(checked.ok, "{checked:?}");
    assert_eq!(checked.checked_on.as_deref(), Some(instance.as_str()));
    assert!(checked.sites.is_some_and(|n| n >= 1), "{checked:?}");
    let bad = NewProbe {
        template: Some("x={nosuch}".into()),
        ..good.clone()
    };
    let e = c.check_probe(&bad).expect_err("a name not in scope");
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("nosuch"), "{e}");
    let e = c
        .source(&instance, "nowhere.rs", None, None)
        .expect_err("no such file");
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("nowhere.rs"), "{e}");
    // Nothing was placed: the code views only read. (Its code cannot be compared with the
    // file, which is gone.)
    assert!(t.is_running(), "the target runs on");
}

#[test]
fn a_code_view_says_when_the_agent_is_stuck_or_stopped() {
    let dir = test_dir("code-views-agent");
    let server = Server::start_with(&dir, 0, &["--code-timeout", "2s"]);
    let t = Target::start(&ledger_debug(), &["2000", "1"]);
    let agent_token = server.token("agent", "agent");
    let mut agent = Agent::start(&server, &agent_token, &["--pid", &t.pid.to_string()]);
    let instance = instance_of(&server, t.pid);
    let c = server.admin();
    let agent_id = c
        .instances()
        .expect("instances")
        .into_iter()
        .find(|i| i.id == instance)
        .expect("the instance")
        .agent;
    // The first view indexes the binary, which may take longer than this server's short
    // bound on a busy machine; the agent keeps what it indexed, so a later view answers.
    eventually("a listing while the agent runs", || {
        c.source(&instance, "ledger.rs", Some(1), Some(3)).ok()
    });

    // Frozen (it still counts as online for a while): the server stops waiting at its bound
    // and says whom it waited for.
    // SAFETY: signals to a child this test started.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGSTOP) };
    let e = c
        .source(&instance, "ledger.rs", Some(1), Some(3))
        .expect_err("no answer from a frozen agent");
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGCONT) };
    assert_eq!(e.status(), Some(504), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&agent_id) && text.contains(&instance) && text.contains("--code-timeout"),
        "{text}"
    );
    // Running again, it answers again (after the request it took while frozen).
    eventually("a listing once the agent runs again", || {
        c.source(&instance, "ledger.rs", Some(1), Some(3)).ok()
    });

    // Stopped: its instances are offline at once, and a code view says so without waiting.
    agent.stop();
    let e = eventually("a code view refused for the stopped agent", || {
        c.source(&instance, "ledger.rs", Some(1), Some(3)).err()
    });
    assert_eq!(e.status(), Some(409), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&agent_id) && text.contains("offline"),
        "{text}"
    );
}
