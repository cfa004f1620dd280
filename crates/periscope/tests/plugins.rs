//! Probes on libraries loaded later: a location in a plugin the process has not loaded yet is
//! pending (and says so), arms when the process dlopen()s it, is pending again after dlclose(),
//! and arms again when it is reopened. Detaching (or being killed) leaves the process running
//! with its code as on disk. The host and plugin are real C programs built with default flags.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a step may take before the test gives up rather than hang: far above what it takes
/// (the plugin is indexed in milliseconds), never a measure of it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A periscope whose stdout and stderr are read line by line as it runs.
struct Live {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Every stderr line seen so far, for messages.
    said: Vec<String>,
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

impl Live {
    fn start(args: &[&str]) -> Live {
        let mut child = periscope()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn periscope");
        let out = lines_of(child.stdout.take().expect("stdout"));
        let err = lines_of(child.stderr.take().expect("stderr"));
        Live {
            child,
            out,
            err,
            said: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn said(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .err
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.said.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("periscope never said {needle:?}; it said: {:#?}", self.said)
                }
            }
        }
    }

    /// The next `n` events (JSON lines on stdout).
    fn hits(&mut self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + PATIENCE;
        let mut hits = Vec::new();
        while hits.len() < n {
            match self
                .out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => hits.push(
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")),
                ),
                Err(_) => panic!("{} of {n} hits came; stderr: {:#?}", hits.len(), self.said),
            }
        }
        hits
    }

    /// Drops what is on stdout now (hits between steps of a test).
    fn drain(&mut self) {
        while self.out.try_recv().is_ok() {}
    }

    /// SIGTERM, then waits for it to end; returns whether it exited successfully.
    fn terminate(mut self) -> bool {
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait periscope").success()
    }
}

/// Tells the host to `open`, `close` or `quit`.
fn tell(t: &mut Target, command: &str) {
    let stdin = t.stdin.as_mut().expect("host stdin");
    // One write: the host may act on (and, for `quit`, exit at) what one read gives it.
    if let Err(e) = stdin.write_all(format!("{command}\n").as_bytes()) {
        panic!(
            "write {command:?} to the host: {e}; host: {:?}",
            t.child.try_wait()
        );
    }
    stdin.flush().expect("flush host stdin");
}

/// What the host printed: call number → the plugin's result.
fn computed(output: &str) -> HashMap<i64, i64> {
    output
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("computed ")?.split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

fn host() -> Target {
    let plugin = libplugin();
    Target::start(&dlhost(), &[plugin.to_str().expect("utf-8 path")])
}

#[test]
fn a_line_in_a_plugin_not_loaded_yet_arms_on_dlopen_and_again_after_dlclose() {
    let mut t = host();
    let pid = t.pid.to_string();
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let mut p = Live::start(&["log", &pid, &line, "n={n} x={x}", "--json"]);
    let banner = p.said("pending");
    assert!(
        banner.contains("arms when a library with source file `plugin.c` is loaded"),
        "{banner}"
    );
    tell(&mut t, "open");
    let armed = p.said("armed");
    assert!(armed.contains("in libplugin.so at 0x"), "{armed}");
    let mut hits = p.hits(5);
    tell(&mut t, "close");
    let again = p.said("pending again");
    assert!(again.contains("libplugin.so was unloaded"), "{again}");
    p.drain();
    tell(&mut t, "open");
    p.said("armed");
    hits.extend(p.hits(5));
    assert!(p.terminate(), "periscope did not end cleanly on SIGTERM");
    // Detached: running, untraced, every code mapping (the plugin's too) as the file has it.
    t.assert_untouched();
    assert!(t.is_running());
    tell(&mut t, "quit");
    let (status, output) = t.wait_output();
    assert!(status.success(), "host ended with {status}");
    // Every hit read what the plugin computed at that call: total = x + 7.
    let printed = computed(&output);
    for h in &hits {
        let (n, x) = (int(h, "n"), int(h, "x"));
        assert_eq!(x, n * 3 + 1, "{h}");
        assert_eq!(printed.get(&n), Some(&(x + 7)), "call {n}: {h}");
    }
}

#[test]
fn a_library_function_given_before_the_library_is_loaded_arms_when_it_is() {
    let mut t = host();
    let pid = t.pid.to_string();
    let mut p = Live::start(&[
        "log",
        &pid,
        "libplugin.so:plugin_compute",
        "n={n}",
        "--json",
    ]);
    let banner = p.said("pending");
    assert!(
        banner.contains("arms when `libplugin.so` is loaded"),
        "{banner}"
    );
    tell(&mut t, "open");
    p.said("armed");
    let hits = p.hits(3);
    tell(&mut t, "close");
    p.said("pending again");
    assert!(p.terminate());
    t.assert_untouched();
    tell(&mut t, "quit");
    let (status, output) = t.wait_output();
    assert!(status.success());
    let printed = computed(&output);
    for h in &hits {
        let n = int(h, "n");
        assert_eq!(printed.get(&n), Some(&(n * 3 + 8)), "call {n}: {h}");
    }
}

#[test]
fn a_missing_variable_in_the_loaded_plugin_is_an_error_then() {
    let mut t = host();
    let pid = t.pid.to_string();
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let mut p = Live::start(&["log", &pid, &line, "{nope}", "--for", "120s"]);
    p.said("pending");
    tell(&mut t, "open");
    let error = p.said("cannot go there");
    assert!(error.contains("`nope` is not in scope"), "{error}");
    let status = p.child.wait().expect("wait periscope");
    assert_eq!(status.code(), Some(1), "its only probe failed: an error");
    t.assert_untouched();
}

#[test]
fn a_file_that_never_loads_stays_pending_until_the_session_ends() {
    let mut t = host();
    let pid = t.pid.to_string();
    // Ended by --for.
    let out = run_periscope(&["log", &pid, "plugn_typo.c:3", "x", "--for", "1s"]);
    assert_success(&out);
    assert!(stderr(&out).contains("is pending"), "{}", stderr(&out));
    t.assert_untouched();
    // Ended by SIGTERM.
    let mut p = Live::start(&["count", &pid, "no_such_plugin_fn"]);
    p.said("pending");
    assert!(p.terminate(), "periscope did not end cleanly on SIGTERM");
    t.assert_untouched();
    assert!(t.is_running());
}

#[test]
fn kill_9_while_armed_leaves_the_host_running_and_the_next_attach_cleans_up() {
    let mut t = host();
    let pid = t.pid.to_string();
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let mut p = Live::start(&["log", &pid, &line, "n={n}", "--json"]);
    p.said("pending");
    tell(&mut t, "open");
    p.said("armed");
    p.hits(2);
    p.child.kill().expect("SIGKILL periscope");
    p.child.wait().expect("wait periscope");
    // The plugin's breakpoint and the loader's are left; the fail-safe handler takes each out
    // as it is hit: the host unloads and reloads the plugin, and goes on computing.
    tell(&mut t, "close");
    tell(&mut t, "open");
    let out = run_periscope(&[
        "log",
        &pid,
        &line,
        "n={n}",
        "--json",
        "--max-hits",
        "2",
        "--for",
        "60s",
        // The ptrace engine's attach is what removes a killed one's leftovers.
        "--engine",
        "ptrace",
    ]);
    assert_success(&out);
    assert!(
        stderr(&out).contains("removed what an earlier periscope that was killed left"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout_json(&out).len(), 2);
    t.assert_untouched();
    tell(&mut t, "quit");
    let (status, output) = t.wait_output();
    assert!(status.success(), "host ended with {status}");
    let after = output
        .rsplit("opened")
        .next()
        .expect("output after the reopen");
    assert!(
        !computed(after).is_empty(),
        "the host computed nothing after the reopen:\n{output}"
    );
}

/// In the fleet the probe's state on the instance says it: `pending` (with when it arms),
/// `installed` once the plugin is loaded, `pending` again after dlclose, `installed` again.
#[test]
fn the_fleet_shows_a_plugin_probe_pending_then_installed() {
    use common::fleet::{eventually_or, instance_of, json_out, test_dir, Agent, Server};
    let dir = test_dir("plugins-fleet");
    let server = Server::start(&dir, 0);
    let mut t = host();
    let token = server.token("agent", "a1");
    let _agent = Agent::start(&server, &token, &["--pid", &t.pid.to_string()]);
    let instance = instance_of(&server, t.pid);
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let added = server.cli(
        &server.admin,
        &["probe", "add", "log", &instance, &line, "n={n}", "--json"],
    );
    let id = json_out(&added)["id"]
        .as_str()
        .expect("probe id")
        .to_string();
    let show = || json_out(&server.cli(&server.admin, &["probe", "show", &id, "--json"]));
    let state_is = |state: &str, message: &str| {
        eventually_or(
            &format!("the probe {state} ({message})"),
            || {
                let p = show();
                let i = &p["instances"][0];
                let said = i["last_error"].as_str().unwrap_or_default();
                (i["state"] == state && said.contains(message)).then_some(p)
            },
            || show().to_string(),
        )
    };
    state_is(
        "pending",
        "arms when a library with source file `plugin.c` is loaded",
    );
    tell(&mut t, "open");
    state_is("installed", "");
    let hits = |p: &serde_json::Value| p["hits"].as_u64().unwrap_or(0);
    let first = eventually_or(
        "hits of the armed probe",
        || Some(show()).filter(|p| hits(p) > 0),
        || show().to_string(),
    );
    tell(&mut t, "close");
    state_is("pending", "libplugin.so was unloaded");
    tell(&mut t, "open");
    state_is("installed", "");
    eventually_or(
        "hits after the reopen",
        || Some(show()).filter(|p| hits(p) > hits(&first)),
        || show().to_string(),
    );
}

impl Live {
    /// Reads JSON lines on stdout until one satisfies `pred`; returns it.
    fn line_where(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    let v: serde_json::Value =
                        serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}"));
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no line with {what} came; stderr: {:#?}", self.said),
            }
        }
    }

    /// SIGTERM, then everything it printed on stdout until it ended (its total line last).
    fn terminate_with_output(mut self) -> (bool, Vec<serde_json::Value>) {
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let ok = self.child.wait().expect("wait periscope").success();
        let rest = self
            .out
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect();
        (ok, rest)
    }
}

fn calls(v: &serde_json::Value) -> u64 {
    v["calls"].as_u64().unwrap_or(0)
}

/// A duration runs only in the kernel (a uprobe and a uretprobe). Given before the plugin is
/// loaded it is pending; the tracer watches the loader and hands its sites to the kernel
/// engine at dlopen; at dlclose the uprobes come out and it is pending again; a reopen times
/// calls again.
#[test]
fn a_duration_on_a_plugin_not_loaded_yet_runs_in_the_kernel_once_it_is() {
    let mut t = host();
    let pid = t.pid.to_string();
    // A line of the plugin is no function to time: said at once, not pending.
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let out = run_periscope(&["duration", &pid, &line, "--for", "60s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a duration times calls of a function"),
        "{}",
        stderr(&out)
    );
    let mut p = Live::start(&[
        "duration",
        &pid,
        "libplugin.so:plugin_compute",
        "--json",
        "--every",
        "200ms",
    ]);
    let banner = p.said("pending");
    assert!(
        banner.contains("arms when `libplugin.so` is loaded")
            && banner.contains("runs in the kernel (a duration)"),
        "{banner}"
    );
    tell(&mut t, "open");
    let armed = p.said("armed");
    assert!(armed.contains("in libplugin.so at 0x"), "{armed}");
    let first = p.line_where("calls", |v| v["kind"] == "interval" && calls(v) > 0);
    assert_eq!(first["engine"], "bpf", "{first}");
    assert!(first["min_ns"].as_u64().unwrap_or(0) > 0, "{first}");
    tell(&mut t, "close");
    let again = p.said("pending again");
    assert!(again.contains("libplugin.so was unloaded"), "{again}");
    // Unloaded: no call is timed (an interval with none comes).
    p.line_where("an interval with no call", |v| {
        v["kind"] == "interval" && calls(v) == 0
    });
    tell(&mut t, "open");
    p.said("armed");
    p.line_where("calls after the reopen", |v| {
        v["kind"] == "interval" && calls(v) > 0
    });
    let (ok, rest) = p.terminate_with_output();
    assert!(ok, "periscope did not end cleanly on SIGTERM");
    let total = rest.last().expect("a total line");
    assert_eq!(total["kind"], "total", "{total}");
    // Detached: running, untraced, every code mapping (the plugin's too) as the file has it.
    t.assert_untouched();
    assert!(t.is_running());
    tell(&mut t, "quit");
    let (status, output) = t.wait_output();
    assert!(status.success(), "host ended with {status}");
    // Every call timed is one the host made (it prints each).
    let made = computed(&output).len() as u64;
    assert!(
        calls(total) > 0 && calls(total) <= made,
        "{} calls timed, {made} made: {total}",
        calls(total)
    );
}

/// `log --engine bpf` at a line of the plugin, before it is loaded: pending, then logged from
/// the kernel with what the plugin computed, pending again after dlclose, again after reopen.
#[test]
fn a_kernel_log_on_a_plugin_line_arms_on_dlopen_and_again_after_dlclose() {
    let mut t = host();
    let pid = t.pid.to_string();
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let mut p = Live::start(&[
        "log",
        &pid,
        &line,
        "n={n} x={x}",
        "--json",
        "--engine",
        "bpf",
    ]);
    let banner = p.said("pending");
    assert!(
        banner.contains("arms when a library with source file `plugin.c` is loaded")
            && banner.contains("runs in the kernel (--engine bpf)"),
        "{banner}"
    );
    tell(&mut t, "open");
    p.said("armed");
    let mut hits = p.hits(5);
    tell(&mut t, "close");
    p.said("pending again");
    p.drain();
    tell(&mut t, "open");
    p.said("armed");
    hits.extend(p.hits(5));
    assert!(p.terminate(), "periscope did not end cleanly on SIGTERM");
    t.assert_untouched();
    assert!(t.is_running());
    tell(&mut t, "quit");
    let (status, output) = t.wait_output();
    assert!(status.success(), "host ended with {status}");
    let printed = computed(&output);
    for h in &hits {
        assert_eq!(h["engine"], "bpf", "{h}");
        let (n, x) = (int(h, "n"), int(h, "x"));
        assert_eq!(x, n * 3 + 1, "{h}");
        assert_eq!(printed.get(&n), Some(&(x + 7)), "call {n}: {h}");
    }
}

/// Two probes of one session at the same line of the plugin, both given before it loads: the
/// breakpoint of the one on ptrace arms first, and the one that must run in the kernel is not
/// put there (a uprobe would take the breakpoint's traps): it ends saying why, and the other
/// goes on taking hits.
#[test]
fn a_kernel_probe_is_not_put_where_a_pending_breakpoint_armed() {
    use common::fleet::{eventually_or, instance_of, json_out, test_dir, Agent, Server};
    let dir = test_dir("plugins-steer");
    let server = Server::start(&dir, 0);
    let mut t = host();
    let token = server.token("agent", "a1");
    let mut agent = Agent::start(&server, &token, &["--pid", &t.pid.to_string()]);
    let instance = instance_of(&server, t.pid);
    let line = format!("plugin.c:{}", probe_line("plugin.c", "plugin-total"));
    let add = |engine: &str| {
        let added = server.cli(
            &server.admin,
            &[
                "probe", "add", "log", &instance, &line, "n={n}", "--engine", engine, "--json",
            ],
        );
        json_out(&added)["id"]
            .as_str()
            .expect("probe id")
            .to_string()
    };
    let show = |id: &str| json_out(&server.cli(&server.admin, &["probe", "show", id, "--json"]));
    let state_is = |id: &str, state: &str, message: &str| {
        eventually_or(
            &format!("probe {id} {state} ({message})"),
            || {
                let p = show(id);
                let i = &p["instances"][0];
                let said = i["last_error"].as_str().unwrap_or_default();
                (i["state"] == state && said.contains(message)).then_some(p)
            },
            || show(id).to_string(),
        )
    };
    // One after the other, so the session has them in this order.
    let ptrace = add("ptrace");
    state_is(&ptrace, "pending", "arms when");
    let bpf = add("bpf");
    state_is(&bpf, "pending", "runs in the kernel (--engine bpf)");
    tell(&mut t, "open");
    state_is(&ptrace, "installed", "");
    state_is(&bpf, "error", "a breakpoint of this session is at 0x");
    eventually_or(
        "hits of the breakpoint",
        || Some(show(&ptrace)).filter(|p| p["hits"].as_u64().unwrap_or(0) > 0),
        || show(&ptrace).to_string(),
    );
    // The agent gone, the host runs on with its code (the plugin's too) as on disk.
    agent.stop();
    t.assert_untouched();
    assert!(t.is_running());
}
