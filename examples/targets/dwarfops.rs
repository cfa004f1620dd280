//! Target of the DWARF location sweep, Rust side (built with `rustc -O -g`): dead locals LLVM
//! describes with DWARF expressions instead of keeping them, a struct split into pieces and
//! values through inlined calls. Every probed value obeys a relation a test checks, `x` being
//! the function's argument:
//!   squares: sq == x * x, twice == x + x
//!   mixes:   sum == a + b, diff == a - b, shifted == a << 3, masked == (b & 0xff) ^ 0x5a,
//!            high == b >> 4, neg == -a, inv == !b
//!   pieces:  p.lo == x, p.hi == 2 * x + 1
//!   inlined: scaled == v * 3 + 7
//! Each function is called with the iteration number n (1, 2, …), x being n % 40000.
//! Usage: dwarfops_rs [SLEEP_US]   (default 2000 µs between iterations)

use std::hint::black_box;

#[derive(Clone, Copy)]
struct Pair {
    lo: i32,
    hi: i32,
}

#[inline(never)]
fn consume(v: i64) {
    black_box(v);
}

#[inline(never)]
fn squares(x: i32) -> i32 {
    let sq = x * x;
    let twice = x + x;
    consume(x as i64); // PROBE: rs-squares
    consume(3); // PROBE: rs-squares-after
    black_box(0)
}

#[inline(never)]
fn mixes(a: i64, b: i64) -> i64 {
    let sum = a + b;
    let diff = a - b;
    let shifted = a << 3;
    let masked = (b & 0xff) ^ 0x5a;
    let high = b >> 4;
    let neg = -a;
    let inv = !b;
    consume(a); // PROBE: rs-mixes
    consume(5); // PROBE: rs-mixes-after
    black_box(0)
}

#[inline(never)]
fn pieces(x: i32) -> i64 {
    let p = Pair { lo: x, hi: 2 * x + 1 };
    consume(p.lo as i64); // PROBE: rs-pieces
    consume(p.hi as i64); // PROBE: rs-pieces-after
    black_box(0)
}

#[inline(always)]
fn scale(v: i32) -> i32 {
    let scaled = v * 3 + 7;
    consume(v as i64); // PROBE: rs-inlined
    v
}

#[inline(never)]
fn inlined(x: i32) -> i32 {
    scale(x) + 1
}

fn main() {
    let sleep_us: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    println!("dwarfops_rs ready pid={}", std::process::id());
    let mut n: i64 = 1;
    loop {
        let x = (n % 40000) as i32;
        black_box(squares(black_box(x)));
        black_box(mixes(black_box(n), black_box(n * 5 + 3)));
        black_box(pieces(black_box(x)));
        black_box(inlined(black_box(x)));
        std::thread::sleep(std::time::Duration::from_micros(sleep_us));
        n += 1;
    }
}
