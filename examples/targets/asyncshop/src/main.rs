//! A tokio service whose request handler keeps locals across `.await`s: `subtotal` is computed
//! before a sleep and used after it, so at the probe lines it lives in the future's state
//! machine, not on the stack. Every value is a function of the order number `n`:
//! - `subtotal == n * 3 + 7`, `count == n % 5 + 1`, `total == subtotal * count`;
//! - in `discount`, `rate == n % 7` and `off == rate * 2`.
//!
//! Prints `asyncshop ready pid=N`, then `order n subtotal=S total=T off=O` per order; ends after the
//! order in progress when a line arrives on stdin (or stdin closes).
//! Usage: asyncshop [SLEEP_MICROS]   (default 2000 µs between orders)

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

#[inline(never)]
fn price(n: u64) -> u64 {
    std::hint::black_box(n * 3 + 7)
}

/// Awaited inside `handle`: in a release build its body is inlined into `handle`'s.
async fn discount(n: u64, pause: Duration) -> u64 {
    let rate = n % 7;
    tokio::time::sleep(pause).await;
    let off = rate * 2; // PROBE: discount
    // `n` stays live across the await too (a dead one is in a stale stack slot of the first
    // poll, where rustc's debug info still points).
    std::hint::black_box((off, n)).0
}

async fn handle(n: u64, pause: Duration) -> u64 {
    let subtotal = price(n);
    let count = n % 5 + 1;
    tokio::time::sleep(pause).await;
    let total = subtotal * count; // PROBE: after-sleep
    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
    tokio::spawn(async move {
        let _ = tx.send(total);
    });
    let echoed = rx.await.unwrap_or(0);
    let off = discount(n, pause).await;
    println!("order {n} subtotal={subtotal} total={echoed} off={off}"); // PROBE: after-recv
    let _ = std::io::stdout().flush();
    total
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let pause = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .map(Duration::from_micros)
        .unwrap_or(Duration::from_micros(2000));
    println!("asyncshop ready pid={}", std::process::id());
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        STOP.store(true, Ordering::Relaxed);
    });
    let mut n = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        let _ = tokio::spawn(handle(n, pause)).await;
        n += 1;
    }
}
