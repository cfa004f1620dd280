//! Sample target with a planted bug, for `periscope verify`: a refund is applied in full even
//! when it exceeds what is left of the charge (the failure: `refund > charge.amount -
//! charge.refunded`). A right fix caps the refund at what is left; a wrong one halves every
//! refund, which also ends the failures but changes correct refunds.
//!
//! Request n: a charge of `1000 + (n % 5) * 100` with `(n * 13) % 600` already refunded, and a
//! refund of `(n * 37) % 900` asked for. Usage: refunds [SLEEP_MICROS]   (default 2000)

use std::time::Duration;

#[derive(Debug)]
pub struct Charge {
    pub id: u64,
    pub amount: u64,
    pub refunded: u64,
}

/// Refunds overrun so far: the program's own count, which verification never changes.
pub static mut OVERRUNS: u64 = 0;

#[inline(never)]
fn refund(charge: &mut Charge, requested: u64) -> u64 {
    let refund = requested; // the bug: no cap at what is left
    charge.refunded += refund; // PROBE: refund-apply
    if charge.refunded > charge.amount { // PROBE: refund-check
        // SAFETY: one thread writes it.
        unsafe { OVERRUNS += 1 };
    }
    refund
}

fn main() {
    let micros = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    println!("refunds ready pid={}", std::process::id());
    let mut n: u64 = 0;
    loop {
        n += 1; // PROBE: next-request
        let amount = 1000 + (n % 5) * 100;
        let mut charge = Charge {
            id: n,
            amount,
            refunded: (n * 13) % 600,
        };
        std::hint::black_box(refund(&mut charge, (n * 37) % 900));
        std::thread::sleep(Duration::from_micros(micros));
    }
}
