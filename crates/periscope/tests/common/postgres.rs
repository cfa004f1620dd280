//! A throwaway PostgreSQL cluster for tests: `initdb` into a fresh directory, `pg_ctl start`
//! on a free port (loopback only, trust authentication), removed again when dropped. As root
//! the server runs as the `postgres` user (PostgreSQL refuses to run as root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// Debian's PostgreSQL binaries (`/usr/lib/postgresql/N/bin`), newest version first; or
/// whatever `pg_ctl` is on PATH.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from("/usr/bin"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `tool args…`, as the postgres user when we are root.
fn run(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!(
            "periscope-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster directory to postgres");
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().to_string();
        let out = run(
            &bin,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A port taken between our probe and the server's bind fails the start: try again.
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
                dir.display()
            );
            let log = dir.join("log").to_string_lossy().to_string();
            let out = run(
                &bin,
                "pg_ctl",
                &[
                    "-D", &data_s, "-l", &log, "-o", &opts, "-w", "-t", "30", "start",
                ],
            );
            if out.status.success() {
                return PgCluster { dir, bin, port };
            }
        }
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        panic!("pg_ctl start failed:\n{log}");
    }

    /// A client tool (createdb, psql) connected to this cluster as `postgres`.
    fn client(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
        all.extend_from_slice(args);
        run(&self.bin, tool, &all)
    }

    /// A new, empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self.client("createdb", &[name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("already exists"),
            "createdb {name}: {err}"
        );
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql; its output.
    pub fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        self.client("psql", &["-d", db, "-Atc", sql])
    }

    fn stop(&self) {
        let data = self.dir.join("data").to_string_lossy().to_string();
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(c) = SHARED.get() {
        c.stop();
    }
}

/// One cluster for the whole test process (statics are never dropped: it is stopped when the
/// process exits).
pub fn shared() -> &'static PgCluster {
    SHARED.get_or_init(|| {
        let c = PgCluster::start();
        // SAFETY: registering a plain function to run at exit.
        unsafe { libc::atexit(stop_shared) };
        c
    })
}

/// Whether this run puts the fleet tests' servers on PostgreSQL
/// (`PERISCOPE_TEST_STORE=postgres`) instead of SQLite files.
pub fn fleet_on_postgres() -> bool {
    std::env::var("PERISCOPE_TEST_STORE").is_ok_and(|v| v == "postgres")
}
