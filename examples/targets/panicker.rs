//! Sample target that panics on request: reads a number i from stdin and indexes a 3-item
//! vector with it; i > 6 panics with a formatted message in `check`, 3..=6 with Rust's own
//! bounds-check panic, "boom" with a literal message.

fn check(v: &[u32], i: usize) -> u32 {
    let limit = v.len() * 2;
    if i > limit {
        panic!("index {} beyond limit {}", i, limit); // PROBE: formatted-panic
    }
    v[i]
}
fn main() {
    println!("panicker ready pid={}", std::process::id());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let v = vec![1, 2, 3];
    if line.trim() == "boom" {
        panic!("boom");
    }
    let i: usize = line.trim().parse().unwrap_or(9);
    println!("{}", check(&v, i));
}
