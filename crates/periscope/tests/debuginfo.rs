//! Separate debug info, found as gdb finds it: `.gnu_debuglink` next to the binary and in its
//! `.debug/`, under a `--debug-dir` (and `PERISCOPE_DEBUG_DIR`) tree by path and by build id,
//! the CRC checked; glibc's own from Debian's libc6-dbg; and a debuginfod server, then its cache.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn relay_line() -> String {
    format!("relay.c:{}", probe_line("relay.c", "forward-body"))
}

/// Three hits of `forward`'s body: its parameters read from the separate debug file.
fn assert_reads_forward(pid: u32, extra: &[&str], envs: &[(&str, &Path)]) {
    let pid = pid.to_string();
    let line = relay_line();
    let mut args = vec![
        "log",
        &pid,
        &line,
        "{id} {size}",
        "--max-hits",
        "3",
        "--json",
        "--for",
        "60s",
    ];
    args.extend_from_slice(extra);
    let out = periscope()
        .args(&args)
        .envs(envs.iter().copied())
        .output()
        .expect("run periscope");
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 3, "{}", stderr(&out));
    for h in &hits {
        let size = int(h, "size");
        assert!((100..=106).contains(&size), "size from the debug file: {h}");
        assert!(int(h, "id") >= 0, "{h}");
    }
}

/// `periscope lines BINARY relay.c` with `args` before it: its output.
fn lines(binary: &Path, args: &[&str], envs: &[(&str, &Path)]) -> std::process::Output {
    periscope()
        .args(args)
        .arg("lines")
        .arg(binary)
        .arg("relay.c")
        .envs(envs.iter().copied())
        .output()
        .expect("run periscope")
}

fn assert_no_dwarf(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(
        stderr(out).contains("no DWARF debug info"),
        "{}",
        stderr(out)
    );
}

#[test]
fn a_split_binary_is_read_through_its_debuglink_next_to_it_and_under_a_debug_dir() {
    let dir = scratch("debuglink");
    // In `.debug/` beside the binary, as Fedora and Yocto install them.
    let beside = dir.join("a/relay");
    split_debug(
        &relay_o2(),
        &beside,
        &dir.join("a/.debug/relay.debug"),
        true,
    );
    let out = lines(&beside, &[], &[]);
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("forwarded += size"));
    let mut t = Target::start(&beside, &["1000000", "1000"]);
    assert_reads_forward(t.pid, &[], &[]);
    t.assert_untouched();
    drop(t);

    // Under a debug directory, at the binary's own path: found with --debug-dir or
    // PERISCOPE_DEBUG_DIR only.
    let bin = dir.join("b/relay");
    split_debug(&relay_o2(), &bin, &dir.join("b/relay.debug"), true);
    let tree = dir.join("debug-tree");
    let b_dir = dir.join("b");
    let under = tree.join(b_dir.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(&under).expect("mkdir");
    std::fs::rename(dir.join("b/relay.debug"), under.join("relay.debug")).expect("move");
    assert_no_dwarf(&lines(&bin, &[], &[]));
    let flag = ["--debug-dir", tree.to_str().expect("utf-8")];
    assert_success(&lines(&bin, &flag, &[]));
    assert_success(&lines(&bin, &[], &[("PERISCOPE_DEBUG_DIR", &tree)]));
    let mut t = Target::start(&bin, &["1000000", "1000"]);
    assert_reads_forward(t.pid, &flag, &[]);
    t.assert_untouched();

    // A --debug-dir that does not exist is a mistake, said as one.
    let out = lines(&bin, &["--debug-dir", "/no/such/dir"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--debug-dir /no/such/dir: no such directory"));
}

#[test]
fn a_debug_file_is_found_by_build_id_under_a_debug_dir() {
    let dir = scratch("buildid");
    let bin = dir.join("bin/relay");
    let tree = dir.join("debug");
    let id = build_id(&relay_o2());
    let debug = tree
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    // No debuglink: the build id is the only way to the debug file.
    split_debug(&relay_o2(), &bin, &debug, false);
    assert_no_dwarf(&lines(&bin, &[], &[]));
    let flag = ["--debug-dir", tree.to_str().expect("utf-8")];
    assert_success(&lines(&bin, &flag, &[]));
    let mut t = Target::start(&bin, &["1000000", "1000"]);
    assert_reads_forward(t.pid, &flag, &[]);
    t.assert_untouched();
}

#[test]
fn a_debug_file_of_another_build_is_refused_by_its_crc() {
    let dir = scratch("crc");
    let bin = dir.join("relay");
    split_debug(&relay_o2(), &bin, &dir.join("relay.debug"), true);
    // The debuglink's name, but another build's debug info.
    run_ok(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(relay_o1())
            .arg(dir.join("relay.debug")),
    );
    let out = lines(&bin, &[], &[]);
    assert_no_dwarf(&out);
    let err = stderr(&out);
    assert!(
        err.contains("CRC-32") && err.contains("another build") && err.contains("relay.debug"),
        "{err}"
    );
    let t = Target::start(&bin, &["1000000", "1000"]);
    let pid = t.pid.to_string();
    let out = run_periscope(&["log", &pid, &relay_line(), "x", "--for", "20s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("CRC-32"), "{}", stderr(&out));
}

#[test]
fn glibc_write_reads_its_parameters_from_libc6_dbg() {
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").expect("libc");
    let id = build_id(&libc);
    let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
    assert!(
        Path::new(&debug).exists(),
        "{debug} is missing: install Debian's libc6-dbg (.ci/run does)"
    );
    let mut t = Target::start(&relay_o2(), &["1000000", "1000"]);
    let pid = t.pid.to_string();
    // `write` is an alias of glibc's `__libc_write`: found by its symbol, read by its DWARF.
    let out = run_periscope(&[
        "log",
        &pid,
        "write",
        "{fd} {nbytes}",
        "--if",
        "nbytes == 18",
        "--max-hits",
        "3",
        "--json",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 3, "{}", stderr(&out));
    for h in &hits {
        // relay opens /dev/null first thing: descriptor 3, after stdin, stdout and stderr.
        assert_eq!(int(h, "fd"), 3, "{h}");
        assert_eq!(int(h, "nbytes"), 18, "{h}");
    }
    t.assert_untouched();
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A debuginfod server on 127.0.0.1 serving `dir`; killed when dropped.
struct Debuginfod {
    child: Child,
    url: String,
}

impl Debuginfod {
    fn start(dir: &Path, db: &Path, id: &str) -> Debuginfod {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("debuginfod")
            .arg("-F")
            .arg(dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-d")
            .arg(db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start debuginfod (Debian's debuginfod package; .ci/run installs it)");
        let server = Debuginfod {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready once its scan has indexed the debug file: the build id answers 200 (GET:
        // debuginfod answers HEAD with 400).
        let probe = format!("{}/buildid/{id}/debuginfo", server.url);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = agent.get(&probe).call() {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "debuginfod never served {probe}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn debuginfod_serves_the_debug_file_then_its_cache_does() {
    let dir = scratch("debuginfod");
    let bin = dir.join("bin/relay");
    split_debug(&relay_o2(), &bin, &dir.join("served/relay.debug"), false);
    // Another build, whose debug info the server does not have.
    let other = dir.join("other/relay");
    split_debug(
        &relay_o1(),
        &other,
        &dir.join("elsewhere/relay.debug"),
        false,
    );
    let id = build_id(&bin);
    let cache = dir.join("cache");
    let mut server = Debuginfod::start(&dir.join("served"), &dir.join("db.sqlite"), &id);
    let url = server.url.clone();
    let env: Vec<(&str, &Path)> = vec![
        ("DEBUGINFOD_URLS", Path::new(&url)),
        ("DEBUGINFOD_CACHE_PATH", &cache),
    ];

    let mut t = Target::start(&bin, &["1000000", "1000"]);
    assert_reads_forward(t.pid, &[], &env);
    let cached = cache.join(&id).join("debuginfo");
    assert!(
        std::fs::metadata(&cached).is_ok_and(|m| m.len() > 0),
        "downloaded into elfutils' cache layout: {}",
        cached.display()
    );
    let out = lines(&other, &[], &env);
    assert_no_dwarf(&out);
    let other_id = build_id(&other);
    assert!(
        stderr(&out).contains(&format!("has no debug info for build {other_id}")),
        "{}",
        stderr(&out)
    );

    // The server gone: the cache serves the build it fetched, and remembers the one it lacked.
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert_reads_forward(t.pid, &[], &env);
    let out = lines(&other, &[], &env);
    assert_no_dwarf(&out);
    assert!(
        stderr(&out).contains("had no debug info for build"),
        "{}",
        stderr(&out)
    );
    t.assert_untouched();
}

#[test]
fn the_agent_reads_a_split_binary_through_its_debug_dir() {
    use common::fleet::*;
    use periscope_core::api::{NewProbe, ProbeKind};
    let dir = scratch("agent");
    let bin = dir.join("bin/relay");
    let tree = dir.join("debug");
    let id = build_id(&relay_o2());
    let debug = tree
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    split_debug(&relay_o2(), &bin, &debug, false);
    let server = Server::start(&test_dir("debuginfo-agent"), 0);
    let token = server.token("agent", "agent");
    let mut t = Target::start(&bin, &["1000000", "1000"]);
    let pid = t.pid.to_string();
    let mut agent = Agent::start(
        &server,
        &token,
        &[
            "--pid",
            &pid,
            "--tag",
            "service=relay",
            "--debug-dir",
            tree.to_str().expect("utf-8"),
        ],
    );
    instance_of(&server, t.pid);
    let admin = server.admin();
    let probe = admin
        .add_probe(&NewProbe {
            template: Some("{size}".into()),
            ..NewProbe::new(ProbeKind::Log, "service=relay", &relay_line())
        })
        .expect("add probe");
    let events = admin
        .wait_for_events(&probe.id, None, 3, Duration::from_secs(60))
        .map(json_list)
        .expect("events");
    assert!(events.len() >= 3, "{events:?}");
    for e in &events {
        let size = e["values"]["size"]["value"].as_i64().unwrap_or(-1);
        assert!((100..=106).contains(&size), "{e}");
    }
    agent.stop();
    t.assert_untouched();
}
