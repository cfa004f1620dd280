//! Sample target for Periscope's tests and demo: a small "ledger" that settles transfers on
//! several threads, starting a fresh worker thread for every batch (so threads appear after a
//! tracer attaches). Every value a test reads obeys a relation it can check on each hit:
//! `amount_cents == seq * 100 + worker`, `fee == amount_cents / 10`, `total == amount_cents + fee`.
//!
//! Usage: ledger [SLEEP_MICROS] [WORKERS]   (defaults: 2000 µs between transfers, 2 workers)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub static SETTLED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct Account {
    pub owner: String,
    pub balance: i64,
    pub id: u32,
    /// A secret: Periscope must never show it (tests look for its bytes in all output).
    pub api_token: String,
}

#[derive(Debug)]
pub struct Transfer {
    pub seq: u64,
    pub worker: u32,
    pub amount_cents: i64,
    pub memo: &'static str,
    pub note: Option<u32>,
    pub from: Account,
}

const MEMOS: [&str; 3] = ["rent", "coffee", "books"];

#[inline(never)]
fn settle(t: &Transfer, fee: i64, ledger: &mut Vec<i64>) -> i64 {
    let total = t.amount_cents + fee; // PROBE: settle-total
    ledger.push(total);
    let above = ledger.iter().filter(|v| **v >= fee).count(); // PROBE: closure-line
    assert!(above > 0);
    if ledger.len() > 64 {
        ledger.clear(); // PROBE: never-hit (batches are 50 long)
    }
    SETTLED.fetch_add(1, Ordering::Relaxed);
    total
}

#[inline(never)]
fn run_batch(worker: u32, first_seq: u64, count: u64, sleep: Duration) -> i64 {
    let mut ledger = Vec::new();
    let mut sum = 0;
    for seq in first_seq..first_seq + count {
        let amount_cents = (seq * 100 + worker as u64) as i64;
        let fee = amount_cents / 10;
        let owner = format!("owner-{worker}");
        let t = Transfer {
            seq,
            worker,
            amount_cents,
            memo: MEMOS[(seq % 3) as usize],
            note: if seq % 2 == 0 { Some(seq as u32) } else { None },
            from: Account {
                owner,
                balance: amount_cents * 2,
                id: worker,
                api_token: format!("tok-{worker}-s3cr3t"),
            },
        };
        sum += settle(&t, fee, &mut ledger);
        std::thread::sleep(sleep);
    }
    sum
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sleep_us: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let workers: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let sleep = Duration::from_micros(sleep_us);
    println!("ledger ready pid={}", std::process::id());
    let mut seq = 0u64;
    loop {
        // Each round starts fresh threads: a tracer sees threads created after it attached.
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let first = seq;
                std::thread::spawn(move || run_batch(w, first, 50, sleep))
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        seq += 50;
    }
}
