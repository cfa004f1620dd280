// Stress target: worker threads serve "requests" in a loop while a spawner starts short-lived
// threads all the time (as servers do), so a tracer always meets threads being created and
// exiting. Usage: churn [WORKERS] [SLEEP_US]
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Inner {
    pub c: u64,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub a: u64,
    pub b: Inner,
    pub tags: Vec<u32>,
}

static SERVED: AtomicU64 = AtomicU64::new(0);

#[inline(never)]
fn handle(req: &Request) -> u64 {
    let score = req.a * 3 + req.b.c; // PROBE: churn-handle
    SERVED.fetch_add(1, Ordering::Relaxed);
    black_box(score + req.tags.len() as u64)
}

fn worker(id: u64, sleep: Duration) {
    let mut n = 0u64;
    loop {
        let req = Request {
            a: id * 1_000_000 + n,
            b: Inner {
                c: n % 97,
                label: format!("w{id}-{n}"),
            },
            tags: vec![1, 2, 3],
        };
        black_box(handle(&req));
        n += 1;
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workers: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let sleep_us: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let sleep = Duration::from_micros(sleep_us);
    for id in 0..workers {
        std::thread::spawn(move || worker(id, sleep));
    }
    // Short-lived threads, nonstop.
    std::thread::spawn(|| loop {
        let h = std::thread::spawn(|| black_box((0..200u64).sum::<u64>()));
        let _ = h.join();
    });
    println!("churn ready pid={}", std::process::id());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
