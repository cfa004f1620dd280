//! A release build without debug info: `settle` is found by its symbol, and its two integer
//! arguments by position (`{arg0}`, `{arg1}`).
//! Usage: tally [ROUNDS] [SLEEP_US]  → prints "tally ready pid=N" first.

use std::io::Write;
use std::time::Duration;

#[inline(never)]
fn settle(account: u64, cents: u64) -> u64 {
    std::hint::black_box(account.wrapping_mul(31) ^ cents)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let rounds = arg(1, 1_000_000);
    let sleep_us = arg(2, 1000);
    println!("tally ready pid={}", std::process::id());
    let _ = std::io::stdout().flush();
    let mut total = 0u64;
    for i in 0..rounds {
        let account = std::hint::black_box(7000 + i % 5);
        let cents = std::hint::black_box(250);
        total = total.wrapping_add(settle(account, cents));
        std::thread::sleep(Duration::from_micros(sleep_us));
    }
    println!("total={total}");
}
