//! Processes in containers: each target runs under `unshare --pid --mount --fork --mount-proc`,
//! its binary (and its debug files) on a tmpfs mounted inside the container's mount namespace
//! only, so the host has no file at the paths `/proc/PID/maps` names: every read of the
//! target's files has to go through `/proc/PID/root`. The target is pid 1 there, as a
//! container's main process is. Events carry the host pid (`pid`) and the container's
//! (`ns_pid`, `ns_tid`); the agent on the host finds the process by its executable.

mod common;

use common::fleet::{instance_of, test_dir, Agent, Server};
use common::*;
use periscope_core::api::{NewProbe, ProbeKind};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// A file put into the container: copied onto its private tmpfs, or bind-mounted there (the
/// host then reaches the same file by its own path).
enum Put<'a> {
    Copy(&'a Path, &'a str),
    Bind(&'a Path, &'a str),
    /// Into the container's own `/usr/lib/debug` (a tmpfs over the host's, in the container
    /// only).
    SystemDebug(&'a Path, &'a str),
}

/// A target in a pid and mount namespace of its own.
struct Container {
    unshare: Child,
    /// The host's pid of the target.
    pid: u32,
    /// The executable's path inside the container (the host has nothing there).
    exe: String,
    /// The directory the container's tmpfs is mounted on (empty on the host).
    mnt: PathBuf,
    _stdin: Option<ChildStdin>,
    ready: String,
}

fn quoted(p: &str) -> String {
    assert!(!p.contains('\''), "a test path with a quote: {p}");
    format!("'{p}'")
}

impl Container {
    /// Starts `exe` (a path relative to the tmpfs) with `args`, after putting `files` in place.
    fn start(dir: &Path, files: &[Put], exe: &str, args: &[&str]) -> Container {
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).expect("mount point");
        let m = mnt.to_string_lossy().into_owned();
        let mut script = vec![
            "set -e".to_string(),
            format!("mount -t tmpfs periscope-test {}", quoted(&m)),
        ];
        let mut system_debug = false;
        for f in files {
            let (src, to) = match f {
                Put::Copy(s, r) | Put::Bind(s, r) => (s, format!("{m}/{r}")),
                Put::SystemDebug(s, r) => {
                    if !system_debug {
                        script.push("mount -t tmpfs periscope-debug /usr/lib/debug".into());
                        system_debug = true;
                    }
                    (s, format!("/usr/lib/debug/{r}"))
                }
            };
            let parent = Path::new(&to).parent().expect("parent");
            script.push(format!("mkdir -p {}", quoted(&parent.to_string_lossy())));
            let src = quoted(&src.to_string_lossy());
            match f {
                Put::Bind(..) => {
                    script.push(format!("touch {}", quoted(&to)));
                    script.push(format!("mount --bind {src} {}", quoted(&to)));
                }
                _ => script.push(format!("cp {src} {}", quoted(&to))),
            }
        }
        let exe_in = format!("{m}/{exe}");
        let mut run = format!("exec {}", quoted(&exe_in));
        for a in args {
            run.push(' ');
            run.push_str(&quoted(a));
        }
        script.push(run);
        let mut unshare = Command::new("unshare")
            .args(["--pid", "--mount", "--fork", "--mount-proc", "--kill-child"])
            .args(["sh", "-c", &script.join("\n")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare (util-linux)");
        let mut out = BufReader::new(unshare.stdout.take().expect("stdout"));
        let mut ready = String::new();
        out.read_line(&mut ready).expect("ready line");
        if !ready.contains("ready") {
            let mut err = String::new();
            let _ = unshare
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut err));
            panic!("the container's target did not start: {ready:?} {err}");
        }
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        // unshare's one child is the container's pid 1: the shell, which exec'd the target.
        let me = unshare.id();
        let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
            .expect("unshare's children");
        let pid: u32 = children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no child of unshare: {children:?}"));
        assert!(
            !Path::new(&exe_in).exists(),
            "{exe_in} must exist in the container only"
        );
        Container {
            _stdin: unshare.stdin.take(),
            unshare,
            pid,
            exe: exe_in,
            mnt,
            ready,
        }
    }

    fn pid(&self) -> String {
        self.pid.to_string()
    }

    /// The process is running, not traced, and its code as in its files (read through its
    /// root), once our uprobes and breakpoints are gone.
    fn assert_untouched(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.untouched() {
                Ok(()) => return,
                Err(why) if std::time::Instant::now() >= deadline => panic!("{why}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn untouched(&self) -> Result<(), String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|e| panic!("the container's target is gone: {e}"));
        assert!(!status.contains("State:\tZ"), "the target died: {status}");
        if !status.contains("TracerPid:\t0\n") {
            return Err("the target is still traced".into());
        }
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).expect("maps");
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).expect("mem");
        let mut checked = 0;
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') || f[5] != self.exe {
                continue;
            }
            let (lo, hi) = f[0].split_once('-').expect("range");
            let lo = u64::from_str_radix(lo, 16).expect("lo");
            let hi = u64::from_str_radix(hi, 16).expect("hi");
            let off = u64::from_str_radix(f[2], 16).expect("off") as usize;
            let file = std::fs::read(format!("/proc/{}/root{}", self.pid, f[5])).expect("file");
            let len = ((hi - lo) as usize).min(file.len().saturating_sub(off));
            let mut buf = vec![0u8; len];
            use std::os::unix::fs::FileExt;
            mem.read_exact_at(&mut buf, lo).expect("read code");
            if buf != file[off..off + len] {
                return Err(format!("the code of {} differs from its file", f[5]));
            }
            checked += 1;
        }
        assert!(checked > 0, "no code of {} mapped", self.exe);
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGKILL from the host ends a namespace's pid 1 (and with it the namespace).
        // SAFETY: a signal to the target this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn handle_line() -> String {
    format!("orders.c:{}", probe_line("orders.c", "orders-handle"))
}

/// orders.c in a container, one order every `sleep_us` (each batch's thread lives 20 orders).
fn orders_container(name: &str, put: &[Put], sleep_us: &str) -> Container {
    let c = Container::start(&scratch(name), put, "app/orders", &[sleep_us]);
    assert!(c.ready.contains("pid=1"), "{}", c.ready);
    c
}

/// `log` at orders' `handle`: `n` hits, checked for the target's values and both pids.
fn log_orders(c: &Container, engine: &str, n: usize, extra: &[&str]) -> Vec<Value> {
    let (pid, line, max) = (c.pid(), handle_line(), n.to_string());
    let mut args = vec![
        "log",
        &pid,
        &line,
        "id={o->id} qty={o->qty} worker={worker}",
        "--engine",
        engine,
        "--max-hits",
        &max,
        "--json",
        "--for",
        "60s",
    ];
    args.extend_from_slice(extra);
    let out = run_periscope(&args);
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("probing pid {} (pid 1 in its namespace)", c.pid)),
        "{err}"
    );
    assert!(err.contains(&format!("engine: {engine}")), "{err}");
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), n, "{err}");
    let mut offset = None;
    for h in &hits {
        assert_eq!(int(h, "o->qty"), int(h, "o->id") % 7, "{h}");
        assert_eq!(h["pid"], c.pid, "the host's pid: {h}");
        assert_eq!(h["ns_pid"], 1, "the container's pid: {h}");
        // Each batch runs on a fresh thread, made one after the other in the container's
        // namespace, which numbers them in turn: its id there is the batch's number plus a
        // constant, and not the host's.
        let tid = h["tid"].as_i64().expect("tid");
        let ns_tid = h["ns_tid"]
            .as_i64()
            .unwrap_or_else(|| panic!("ns_tid: {h}"));
        assert_ne!(ns_tid, tid, "{h}");
        let d = ns_tid - int(h, "worker");
        assert_eq!(*offset.get_or_insert(d), d, "{hits:?}");
    }
    hits
}

#[test]
fn log_reads_a_binary_that_exists_in_the_container_only_and_events_carry_both_pids() {
    let c = orders_container("ns-log", &[Put::Copy(&orders_o0(), "app/orders")], "20000");
    log_orders(&c, "ptrace", 5, &[]);
    c.assert_untouched();
    // Again: a second session finds it as the first left it.
    log_orders(&c, "ptrace", 3, &[]);
    c.assert_untouched();
}

#[test]
fn the_kernel_engine_attaches_to_the_container_file_and_filters_by_the_host_pid() {
    let c = orders_container("ns-bpf", &[Put::Copy(&orders_o0(), "app/orders")], "20000");
    log_orders(&c, "bpf", 5, &[]);
    c.assert_untouched();
    // A duration in the kernel: a uprobe and a uretprobe on the container's file.
    let out = run_periscope(&[
        "duration",
        &c.pid(),
        "timed",
        "--engine",
        "bpf",
        "--for",
        "2s",
        "--json",
    ]);
    assert_success(&out);
    let lines = stdout_json(&out);
    let total = lines.last().expect("a total line");
    assert_eq!(total["kind"], "total", "{total}");
    assert!(total["calls"].as_u64() > Some(0), "{total}");
    c.assert_untouched();
}

#[test]
fn every_local_command_reads_the_containers_process() {
    let c = orders_container(
        "ns-commands",
        &[Put::Copy(&orders_o0(), "app/orders")],
        "2000",
    );
    let pid = c.pid();
    let line = handle_line();

    let out = run_periscope(&[
        "snapshot", &pid, &line, "--engine", "ptrace", "--json", "--for", "60s",
    ]);
    assert_success(&out);
    let snap = stdout_json(&out).pop().expect("a snapshot");
    assert_eq!(
        (snap["pid"].as_u64(), snap["ns_pid"].as_u64()),
        (Some(c.pid.into()), Some(1))
    );
    assert!(snap["ns_tid"].as_u64().is_some(), "{snap}");
    assert_eq!(snap["frames"][0]["function"], "handle", "{snap}");

    for engine in ["ptrace", "bpf"] {
        let out = run_periscope(&[
            "count", &pid, "handle", "--engine", engine, "--for", "1s", "--json",
        ]);
        assert_success(&out);
        let total = stdout_json(&out).pop().expect("a total");
        assert!(total["total"].as_u64() > Some(0), "{engine}: {total}");
        let out = run_periscope(&[
            "gauge", &pid, &line, "o->qty", "--engine", engine, "--for", "1s", "--json",
        ]);
        assert_success(&out);
        let total = stdout_json(&out).pop().expect("a total");
        assert!(total["max"].as_f64() <= Some(6.0), "{engine}: {total}");
        assert!(total["samples"].as_u64() > Some(0), "{engine}: {total}");
    }

    let out = run_periscope(&["functions", &pid, "handle"]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("orders.c"),
        "{out:?}"
    );
    let out = run_periscope(&["lines", &pid, "orders.c"]);
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("o->qty * 100 + o->id"),
        "{out:?}"
    );
    c.assert_untouched();
}

#[test]
fn split_debug_info_is_found_inside_the_container() {
    let dir = scratch("ns-split");
    let stripped = dir.join("orders");
    let debug = dir.join("orders.debug");
    split_debug(&orders_o0(), &stripped, &debug, true);
    // By .gnu_debuglink, beside the binary in the container.
    let c = orders_container(
        "ns-split-link",
        &[
            Put::Copy(&stripped, "app/orders"),
            Put::Copy(&debug, "app/orders.debug"),
        ],
        "20000",
    );
    log_orders(&c, "ptrace", 3, &[]);
    c.assert_untouched();
    drop(c);

    // By build id: in the container's /usr/lib/debug, and (another container) in a
    // --debug-dir that exists in the container only.
    let dir2 = scratch("ns-split-id");
    let unlinked = dir2.join("orders");
    split_debug(&orders_o0(), &unlinked, &dir2.join("orders.debug"), false);
    let id = build_id(&unlinked);
    let by_id = format!(".build-id/{}/{}.debug", &id[..2], &id[2..]);
    assert!(
        !Path::new("/usr/lib/debug").join(&by_id).exists(),
        "the host must not have it"
    );
    let c = orders_container(
        "ns-split-system",
        &[
            Put::Copy(&unlinked, "app/orders"),
            Put::SystemDebug(&dir2.join("orders.debug"), &by_id),
        ],
        "20000",
    );
    log_orders(&c, "ptrace", 3, &[]);
    drop(c);
    let c = orders_container(
        "ns-split-dir",
        &[
            Put::Copy(&unlinked, "app/orders"),
            Put::Copy(&dir2.join("orders.debug"), &format!("dbg/{by_id}")),
        ],
        "20000",
    );
    let debug_dir = c.mnt.join("dbg").to_string_lossy().into_owned();
    assert!(!Path::new(&debug_dir).exists(), "in the container only");
    log_orders(&c, "ptrace", 3, &["--debug-dir", &debug_dir]);
    // Without it, the binary has no DWARF, and the error says so.
    let out = run_periscope(&["log", &c.pid(), &handle_line(), "x", "--for", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no DWARF"), "{}", stderr(&out));
}

#[test]
fn verify_replay_forks_its_copies_inside_the_container_and_reaps_them() {
    let c = Container::start(
        &scratch("ns-replay"),
        &[Put::Copy(&refunds(), "app/refunds")],
        "app/refunds",
        &["500"],
    );
    let at = |tag: &str| format!("refunds.rs:{}", probe_line("refunds.rs", tag));
    let out = run_periscope(&[
        "verify",
        &c.pid(),
        &at("refund-apply"),
        "--failure",
        "charge.refunded > charge.amount",
        "--fix",
        "capped: refund = min(refund, charge.amount - charge.refunded)",
        "--replay",
        &format!("refund..{}", at("refund-check")),
        "--rate",
        "1000",
        "--max-hits",
        "40",
        "--for",
        "120s",
        "--json",
    ]);
    assert_success(&out);
    let result = stdout_json(&out).pop().expect("a result");
    let capped = result["candidates"][0].clone();
    assert_eq!(capped["name"], "capped", "{result}");
    assert_eq!(capped["inconclusive"], 0, "{result}");
    assert!(capped["passing"].as_u64() > Some(0), "{result}");
    assert_eq!(capped["fixed"], capped["failing"], "{result}");
    // No copy left, running or unreaped: the target's children are none.
    let task = std::fs::read_dir(format!("/proc/{}/task", c.pid)).expect("tasks");
    for t in task {
        let children = std::fs::read_to_string(t.expect("task").path().join("children"));
        assert_eq!(children.unwrap_or_default().trim(), "", "a copy was left");
    }
    c.assert_untouched();
}

#[test]
fn the_agent_on_the_host_finds_the_container_process_and_its_events_carry_ns_pid() {
    use periscope_agent::discover::Selection;
    let dir = test_dir("ns-agent");
    // Bind-mounted: the host reaches the container's executable by the staged copy's path.
    let staged = dir.join(format!("ords{}", std::process::id() % 100_000));
    std::fs::copy(orders_o0(), &staged).expect("stage");
    let c = orders_container("ns-agent", &[Put::Bind(&staged, "app/orders")], "20000");
    // /proc/PID/exe reads the container's path; both it and the host's path select it.
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", c.pid)).expect("exe"),
        PathBuf::from(&c.exe)
    );
    for wanted in [c.exe.clone(), staged.to_string_lossy().into_owned()] {
        let found = Selection {
            pids: Vec::new(),
            exes: vec![wanted.clone()],
        }
        .scan();
        let f = found.iter().find(|f| f.pid == c.pid);
        let f = f.unwrap_or_else(|| panic!("--exe {wanted} did not find {}: {found:?}", c.pid));
        assert_eq!((f.ns_pid, f.executable.as_str()), (Some(1), c.exe.as_str()));
    }

    let server = Server::start(&dir, 0);
    let token = server.token("agent", "agent");
    let staged_s = staged.to_string_lossy().into_owned();
    let _agent = Agent::start(
        &server,
        &token,
        &["--exe", &staged_s, "--tag", "service=boxed"],
    );
    let id = instance_of(&server, c.pid);
    let admin = server.admin();
    let inst = admin
        .instances()
        .expect("instances")
        .into_iter()
        .find(|i| i.id == id)
        .expect("the instance");
    assert_eq!(
        (inst.ns_pid, inst.executable.as_str()),
        (Some(1), c.exe.as_str())
    );
    let probe = admin
        .add_probe(&NewProbe {
            template: Some("id={o->id} worker={worker}".into()),
            ..NewProbe::new(ProbeKind::Log, "service=boxed", &handle_line())
        })
        .expect("add");
    let events = admin
        .wait_for_events(&probe.id, None, 3, Duration::from_secs(60))
        .expect("events");
    assert!(events.len() >= 3, "{events:?}");
    for e in &events {
        let periscope_core::event::Body::Log(log) = &e.body else {
            panic!("a log event, not {e:?}");
        };
        assert_eq!(log.pid, c.pid, "{e:?}");
        assert_eq!(log.ns_pid, Some(1), "{e:?}");
        assert!(log.ns_tid.is_some(), "{e:?}");
        assert_eq!(e.instance, id, "{e:?}");
    }
    // Removing the probe detaches; the container's process runs on as it was.
    admin.remove_probe(&probe.id).expect("remove");
    c.assert_untouched();
}
