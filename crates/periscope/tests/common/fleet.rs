//! Test support for the control plane: a real `periscope server` on a free port with its own
//! SQLite file, real `periscope agent` processes, and API access through the client crate.
#![allow(dead_code)]

use periscope_client::Client;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory for one test's database and files.
pub fn test_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fleet")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create test dir");
    d
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub admin: String,
}

impl Server {
    /// Starts a server with its database in `dir`, on `port` (0: any free port).
    pub fn start(dir: &Path, port: u16) -> Server {
        Self::start_with(dir, port, &[])
    }

    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Server {
        Self::start_on(dir, port, &Self::database_for(dir), extra)
    }

    /// Starts a server as `start_with` does, run by `wrapper` (a command and its arguments
    /// that runs the rest of the command line: `unshare …`, say).
    pub fn start_wrapped(dir: &Path, wrapper: &[&str], extra: &[&str]) -> Server {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(env!("CARGO_BIN_EXE_periscope"));
        Self::start_cmd(cmd, dir, 0, &Self::database_for(dir), extra)
    }

    /// The test's database: a SQLite file in `dir`, or one PostgreSQL database per `dir`.
    fn database_for(dir: &Path) -> String {
        if super::postgres::fleet_on_postgres() {
            // One database per test directory, so a restarted server finds its data again.
            let name = dir
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                })
                .unwrap_or_default();
            super::postgres::shared().database(&format!("t_{name}"))
        } else {
            dir.join("periscope.db").to_string_lossy().into_owned()
        }
    }

    /// Starts a server on the database `db` (a file or a PostgreSQL URL), writing or reading
    /// the admin token in `dir`.
    pub fn start_on(dir: &Path, port: u16, db: &str, extra: &[&str]) -> Server {
        Self::start_cmd(super::periscope(), dir, port, db, extra)
    }

    fn start_cmd(mut cmd: Command, dir: &Path, port: u16, db: &str, extra: &[&str]) -> Server {
        let mut child = cmd
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                db,
            ])
            .arg("--admin-token-file")
            .arg(dir.join("admin.token"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut url = None;
        let mut said = String::new();
        for _ in 0..4 {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            said.push_str(&line);
            if let Some(u) = line.trim().strip_prefix("periscope server: listening on ") {
                url = Some(u.to_string());
                break;
            }
        }
        let url = url.unwrap_or_else(|| panic!("server did not start: {said}"));
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
        });
        let admin = std::fs::read_to_string(dir.join("admin.token"))
            .expect("admin.token beside the database")
            .trim()
            .to_string();
        Server {
            child,
            url,
            dir: dir.to_path_buf(),
            admin,
        }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, token.map(str::to_string), "cli")
    }

    pub fn admin(&self) -> Client {
        self.client(Some(&self.admin))
    }

    /// Runs a periscope client command against this server with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> Output {
        super::periscope()
            .args(args)
            .env("PERISCOPE_SERVER", &self.url)
            .env("PERISCOPE_TOKEN", token)
            .env("PERISCOPE_CONFIG", self.dir.join("no-config.toml"))
            .output()
            .expect("run periscope")
    }

    /// A new token of `role`, made with `periscope token create`.
    pub fn token(&self, role: &str, name: &str) -> String {
        self.token_with(role, name, &[])
    }

    /// Like [`Server::token`], against an HTTPS server with a private CA.
    pub fn token_with_ca(&self, role: &str, name: &str, ca: &str) -> String {
        self.token_with(role, name, &["--ca-cert", ca])
    }

    fn token_with(&self, role: &str, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--role", role, "--name", name];
        args.extend_from_slice(extra);
        let out = self.cli(&self.admin, &args);
        super::assert_success(&out);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "token create prints the token alone: {text:?}"
        );
        assert!(lines[0].starts_with("psk_"), "{text}");
        lines[0].to_string()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Agent {
    pub child: Child,
}

impl Agent {
    /// Starts `periscope agent` with `args` (selection, tags) and returns once it runs.
    pub fn start(server: &Server, token: &str, args: &[&str]) -> Agent {
        Self::start_on(&server.url, &server.dir, token, args)
    }

    /// Starts an agent on `servers` (one URL, or replicas' URLs separated by commas).
    pub fn start_on(servers: &str, dir: &Path, token: &str, args: &[&str]) -> Agent {
        let mut child = super::periscope()
            .arg("agent")
            .args(args)
            .args(["--server", servers, "--token", token])
            .args(["--count-interval", "1s", "--scan-interval", "200ms"])
            .env("PERISCOPE_CONFIG", dir.join("no-config.toml"))
            .env_remove("PERISCOPE_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        err.read_line(&mut line).expect("agent banner");
        assert!(line.contains("reporting to"), "agent did not start: {line}");
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
        });
        Agent { child }
    }

    /// SIGTERM, then waits: the agent removes its probes and detaches on the way out.
    pub fn stop(&mut self) {
        let _ = nix_kill(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nix_kill(pid: u32, sig: i32) -> i32 {
    // SAFETY: sending a signal to a child we started.
    unsafe { libc::kill(pid as i32, sig) }
}

/// Waits until `f` gives a value, checking every 50 ms; panics after 60 s with `what`.
/// Used for states that have no push API (probe states, instance lists); events are waited
/// for with the server's own wait endpoint.
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_or(what, f, String::new)
}

/// [`eventually`], saying `last()` (what was seen last) when it times out.
pub fn eventually_or<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    last: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last seen: {}", last());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The instance id the agents gave `pid`, once it is online.
pub fn instance_of(server: &Server, pid: u32) -> String {
    let c = server.admin();
    eventually(&format!("instance for pid {pid}"), || {
        c.instances()
            .ok()?
            .into_iter()
            .find(|i| i.pid == pid && i.state == "online")
            .map(|i| i.id)
    })
}

pub fn json_out(out: &Output) -> serde_json::Value {
    super::assert_success(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A copy of `exe` under a name no other test uses, for `--exe` selection.
pub fn unique_copy(exe: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(exe, &to).expect("copy target");
    to
}

pub fn ledger_args() -> Vec<String> {
    vec!["2000".into(), "2".into()]
}

pub fn run_cmd(cmd: &mut Command) -> Output {
    cmd.output().expect("run")
}

/// Typed API answers as JSON, for tests that read them by field name (as a user's script reads
/// the CLI's `--json`).
pub fn json_list<T: serde::Serialize>(v: Vec<T>) -> Vec<serde_json::Value> {
    v.iter().map(json_value).collect()
}

pub fn json_value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("an API answer as JSON")
}
