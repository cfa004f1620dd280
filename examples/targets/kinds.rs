//! Sample target with one of each Rust std type Periscope renders specially. Every value is a
//! function of `n`, so a test can check a snapshot of `look` completely.
//! Usage: kinds   (prints "kinds ready pid=N", then calls look(1), look(2), … every 5 ms)

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

#[inline(never)]
fn look(n: u64) -> u64 {
    let bx: Box<u64> = Box::new(n * 2);
    let rc: Rc<String> = Rc::new(format!("rc-{n}"));
    let arc: Arc<u32> = Arc::new(n as u32 + 1);
    let cell = Cell::new(n + 3);
    let refcell = RefCell::new(vec![n, n + 1]);
    let mutex = Mutex::new(n + 4);
    let mut map: HashMap<u32, String> = HashMap::new();
    map.insert(1, "one".into());
    map.insert(2, "two".into());
    let mut bt: BTreeMap<u32, u64> = BTreeMap::new();
    for i in 0..5 { bt.insert(i, n + i as u64); }
    let mut dq: VecDeque<u32> = VecDeque::with_capacity(4);
    dq.push_back(7); dq.push_back(8); dq.push_front(6);
    let set: HashSet<u32> = [3, 4].into_iter().collect();
    let bset: BTreeSet<u32> = [9, 10].into_iter().collect();
    let tup = (n, "x", 'c');
    let arr = [1u8, 2, 3];
    let opt_box: Option<Box<u64>> = Some(Box::new(5));
    let res: Result<u32, String> = Err("bad".into());
    let big: u128 = u128::MAX - n as u128;
    let long = "x".repeat(300 + (n % 2) as usize);
    let many: Vec<u64> = (0..150).map(|i| i + n).collect();
    let dangling: *const u64 = 0x10 as *const u64;
    let total = *bx + rc.len() as u64 + *arc as u64 + cell.get() + refcell.borrow().len() as u64 + *mutex.lock().unwrap() + map.len() as u64 + bt.len() as u64 + dq.len() as u64 + set.len() as u64 + bset.len() as u64 + tup.0 + arr.len() as u64 + opt_box.map(|b| *b).unwrap_or(0) + res.is_err() as u64 + (big as u64 & 1) + long.len() as u64 + many.len() as u64 + dangling as u64; // PROBE: kinds-total
    total
}

fn main() {
    println!("kinds ready pid={}", std::process::id());
    let mut n = 0;
    loop { n += 1; std::hint::black_box(look(n)); std::thread::sleep(std::time::Duration::from_millis(5)); }
}
