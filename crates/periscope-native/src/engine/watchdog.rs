//! The last resort. Every wait in the engine is bounded, so the tracer thread cannot block on
//! the target; but if it ever stops making progress for another reason while a thread of the
//! target is held (a bug of ours, a kernel that does not answer), the target must not stay
//! frozen. The watchdog, a thread of its own, then tries to put the original code bytes back
//! and ends this process: the kernel detaches every traced thread when its tracer exits, and a
//! thread caught on a trap, or reaching a breakpoint later, is rewound by the fail-safe handler,
//! which puts that byte back itself. (Kernels since 6.2 let only the tracing thread write
//! read-only code through /proc/PID/mem, so on them the handler does all of it.) The tracer thread itself
//! cannot be unstuck from outside (ptrace ties the tracees to it), so ending the process is the
//! one sure way to let the target go.

use super::Originals;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the engine may make no progress while it holds the target before the watchdog acts.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(5);

/// Exit status of a process ended by the watchdog.
pub const WATCHDOG_EXIT: i32 = 70;

/// The engine's sign of life: the last time it made progress, and whether it is idle (asleep
/// with no thread of the target held, which is never a stall).
pub(crate) struct Heartbeat {
    epoch: Instant,
    last_ms: AtomicU64,
    idle: AtomicBool,
}

impl Heartbeat {
    pub(crate) fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            idle: AtomicBool::new(false),
        })
    }

    pub(crate) fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
    }

    pub(crate) fn idle(&self) {
        self.idle.store(true, Ordering::Relaxed);
    }

    fn stalled_for(&self) -> Option<Duration> {
        if self.idle.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

/// Watches one engine until dropped.
pub(crate) struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn spawn(pid: u32, heartbeat: Arc<Heartbeat>, originals: Originals) -> Watchdog {
    let (done, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("periscope-watchdog".into())
        .spawn(move || loop {
            // Woken at once when the session ends (the sender is dropped); otherwise it looks
            // at the heartbeat a few times a second.
            match rx.recv_timeout(Duration::from_millis(250)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if let Some(stalled) = heartbeat.stalled_for().filter(|d| *d >= STALL_LIMIT) {
                rescue(pid, &originals, stalled);
            }
        })
        .ok();
    Watchdog {
        done: Some(done),
        thread,
    }
}

fn rescue(pid: u32, originals: &Originals, stalled: Duration) -> ! {
    use std::os::unix::fs::FileExt;
    let bytes: Vec<(u64, u8)> = originals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(a, b)| (*a, *b))
        .collect();
    let mut restored = 0;
    if let Ok(mem) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
    {
        for (addr, byte) in &bytes {
            if mem.write_all_at(&[*byte], *addr).is_ok() {
                restored += 1;
            }
        }
    }
    eprintln!(
        "periscope: watchdog: the engine made no progress for {:.1} s while pid {pid} was held; \
         exiting so the kernel detaches every thread. Original code put back at {restored} of {} \
         breakpoint(s) now; the fail-safe handler restores the others as they are reached, and \
         the next periscope that attaches removes what is left",
        stalled.as_secs_f64(),
        bytes.len()
    );
    std::process::exit(WATCHDOG_EXIT)
}
