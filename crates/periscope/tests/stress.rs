//! The engine never holds a live process hostage: 50 rounds against a target whose threads are
//! created and exit nonstop, with both cores held by busy loops. Each round: a SIGKILL of
//! periscope at a random moment (indexing, attach, injected calls, hits), a hit-limited probe
//! that must end by itself (and removes what the killed one left), a SIGTERM at a random
//! moment. After every round the target is alive, untraced, and its code is byte-identical to
//! the file with no scratch mapping left. No timing thresholds: the bounds are only there so a
//! hang fails the test instead of stalling it.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 50;
/// A hung periscope is one that is still running after this (normal runs take about 2 s).
const HANG: Duration = Duration::from_secs(60);

/// Two busy loops, one per core, for the whole test.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start() -> BusyLoops {
        BusyLoops(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// xorshift64*: a seeded sequence, printed so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Waits for a child with a bound; kills it and returns None if it is still running then.
fn wait_bounded(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts periscope with its stderr in a file, to quote when a round fails.
fn spawn(args: &[&str]) -> (Child, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("stress-{n}.err"));
    let err = std::fs::File::create(&path).expect("stderr file");
    let child = periscope()
        .args(args)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn periscope");
    (child, path)
}

fn said(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a signal to a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[test]
fn fifty_rounds_of_limits_sigterm_and_sigkill_under_load_leave_the_target_untouched() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("stress seed {seed}");
    let mut rng = Rng(seed);
    let mut target = Target::start(&churn(), &["4", "200"]);
    let pid = target.pid.to_string();
    let line = format!("churn.rs:{}", probe_line("churn.rs", "churn-handle"));
    let _busy = BusyLoops::start();
    let (mut hangs, mut limited_ok) = (0, 0);
    // How long a run takes to attach (indexing dominates); the kills aim around it.
    let mut attach_ms = 1500u64;
    for round in 0..ROUNDS {
        // Rounds alternate between the engines: breakpoints, and the kernel's uprobes.
        let engine = if round % 2 == 0 { "ptrace" } else { "bpf" };
        // 1. SIGKILL at a random moment, from indexing through attach and hits.
        let (mut killed, _) = spawn(&[
            "log", &pid, "handle", "{req.a}", "--json", "--engine", engine,
        ]);
        let delay = attach_ms / 2 + rng.below(attach_ms / 2 + 400);
        std::thread::sleep(Duration::from_millis(delay));
        signal(&killed, libc::SIGKILL);
        let _ = killed.wait();
        assert!(
            target.is_running(),
            "round {round}: target died after SIGKILL at {delay} ms: {:?}",
            target.child.try_wait()
        );

        // 2. A hit-limited probe must end by itself; it also removes what (1) left behind.
        let started = Instant::now();
        let limited_err = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stress-limited-{round}.err"));
        let mut limited = periscope()
            .args([
                "log",
                &pid,
                "handle",
                "{req.a} {req.b.c}",
                "--max-hits",
                "200",
                "--json",
                "--engine",
                engine,
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&limited_err).expect("stderr file"))
            .spawn()
            .expect("spawn");
        let stdout = limited.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout).lines().count()
        });
        match wait_bounded(&mut limited, HANG) {
            None => hangs += 1,
            Some(status) => {
                assert!(
                    status.success(),
                    "round {round}: hit-limited run failed: {status}: {}",
                    said(&limited_err)
                );
                let lines = reader.join().unwrap_or(0);
                assert_eq!(lines, 200, "round {round}: exactly --max-hits events");
                limited_ok += 1;
                attach_ms = (started.elapsed().as_millis() as u64).clamp(200, 5000);
            }
        }
        assert!(
            target.is_running(),
            "round {round}: target died after the hit limit"
        );
        target.assert_untouched();

        // 3. SIGTERM at a random moment: periscope ends by itself, cleaning up.
        let (mut termed, err) =
            spawn(&["log", &pid, &line, "{req.a}", "--json", "--engine", engine]);
        std::thread::sleep(Duration::from_millis(rng.below(attach_ms + 500)));
        signal(&termed, libc::SIGTERM);
        match wait_bounded(&mut termed, HANG) {
            None => hangs += 1,
            // Ends cleanly; or, if the signal came before `main` blocked it (the first
            // milliseconds, nothing attached, nothing said), by SIGTERM's default action.
            Some(status) => {
                use std::os::unix::process::ExitStatusExt;
                let before_main = status.signal() == Some(libc::SIGTERM) && said(&err).is_empty();
                assert!(
                    status.success() || before_main,
                    "round {round}: after SIGTERM: {status}: {}",
                    said(&err)
                )
            }
        }
        assert!(
            target.is_running(),
            "round {round}: target died after SIGTERM"
        );
        target.assert_untouched();
    }
    eprintln!("stress: {ROUNDS} rounds, {hangs} hangs, 0 target deaths, {limited_ok} hit-limited runs ended by themselves");
    assert_eq!(hangs, 0, "periscope hung");
}

/// The last resort: an engine that stops making progress while it holds a thread of the target
/// (simulated by a test hook that stalls at the first hit) is ended by its watchdog, which puts
/// the original code back first; the kernel then lets the target go, and it keeps running.
#[test]
fn a_stalled_engine_is_ended_by_its_watchdog_and_the_target_runs_on() {
    let mut target = Target::start(&churn(), &["2", "200"]);
    let pid = target.pid.to_string();
    let err = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("watchdog.err");
    let mut stalled = periscope()
        .args(["log", &pid, "handle", "{req.a}", "--engine", "ptrace"])
        .env("PERISCOPE_TEST_STALL_HITS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut stalled, HANG).expect("the watchdog ended periscope");
    let said = said(&err);
    assert_eq!(status.code(), Some(70), "{said}");
    assert!(said.contains("watchdog"), "{said}");
    assert!(target.is_running(), "the target died: {said}");
    assert_eq!(target.status_field("TracerPid:"), "0");
    // No thread of it is left in a tracing stop.
    for tid in target.threads() {
        let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        assert_ne!(state, Some('t'), "thread {tid} is still stopped");
    }
    // The scratch area stays until the next attach, which removes it.
    let out = run_periscope(&[
        "log",
        &pid,
        "handle",
        "{req.a}",
        "--max-hits",
        "3",
        "--engine",
        "ptrace",
    ]);
    assert_success(&out);
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));
    target.assert_untouched();
}
