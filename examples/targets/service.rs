//! Sample target shaped like a small web service a new user would write: two worker threads
//! handle requests (~200/s each) carrying a String, a Vec, a HashMap, an Option and enums with
//! and without payloads. Every value is a function of the request number `n`, so tests can
//! check what they read:
//! - `req.id == n`, `req.path == "/item/{n % 10}"`, `req.tags.len() == n % 3`;
//! - `req.user == Some("user{n % 5}")` when `n % 2 == 0`, else `None`;
//! - `req.method` is `Get` (n % 4 == 0), `Post` (1), `Put(n)` (2), `Delete { soft: true }` (3);
//! - `ev` is `Event::Payment(Money { amount: n * 10 })` for even `n`, else `Event::Ping`.
//!
//! Usage: service [SLEEP_MICROS]   (default 5000 µs between requests on each thread)

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Get,
    Post,
    Put(u64),
    Delete { soft: bool },
}

#[derive(Debug, Clone, Copy)]
pub struct Money {
    pub amount: u64,
}

#[derive(Debug)]
pub enum Event {
    Ping,
    Payment(Money),
}

#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub path: String,
    pub method: Method,
    pub user: Option<String>,
    pub tags: Vec<String>,
    pub headers: HashMap<String, String>,
    pub zone: u8,
}

fn build(n: u64) -> Request {
    let method = match n % 4 {
        0 => Method::Get,
        1 => Method::Post,
        2 => Method::Put(n),
        _ => Method::Delete { soft: true },
    };
    let mut headers = HashMap::new();
    headers.insert("host".to_string(), "example.com".to_string());
    Request {
        id: n,
        path: format!("/item/{}", n % 10),
        method,
        user: (n % 2 == 0).then(|| format!("user{}", n % 5)),
        tags: (0..n % 3).map(|i| format!("t{i}")).collect(),
        headers,
        zone: (n % 7) as u8,
    }
}

/// Small enough that an optimized build inlines it into `handle` (it then exists only inlined).
#[inline]
fn make_request(n: u64, worker: u32) -> u64 {
    let weight = n * 3 + worker as u64; // PROBE: make-request
    std::hint::black_box(weight)
}

#[inline(never)]
fn handle(req: &Request, ev: &Event, worker: u32) -> u64 {
    let cost = req.path.len() as u64 + req.tags.len() as u64; // PROBE: handle-cost
    let paid = match ev {
        Event::Payment(m) => m.amount,
        Event::Ping => 0,
    };
    cost + paid + make_request(req.id, worker)
}

fn worker(w: u32, sleep: Duration) {
    let mut n = w as u64;
    loop {
        let req = build(n);
        let ev = if n % 2 == 0 {
            Event::Payment(Money { amount: n * 10 })
        } else {
            Event::Ping
        };
        std::hint::black_box(handle(&req, &ev, w));
        n += 2;
        std::thread::sleep(sleep);
    }
}

fn main() {
    let micros = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let sleep = Duration::from_micros(micros);
    println!("service ready pid={}", std::process::id());
    let other = std::thread::spawn(move || worker(1, sleep));
    worker(0, sleep);
    let _ = other.join();
}
