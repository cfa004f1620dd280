//! Sample target: a typical request object, passed by reference as services pass them, for the
//! default capture limits to show whole. Every value is a function of the order's number `n`:
//!   order.id == n; order.customer.name == "cust-<n % 5>";
//!   order.customer.address == Address { street: "<n> Main St", city: "city-<n % 3>" };
//!   order.items has n % 3 + 2 items, item i: sku "sku-<i>", qty n * 10 + i,
//!   price Money { cents: 100 * (i + 1) }; order.counts maps each sku to its qty;
//!   order.previous is a null `*const Order`.
//! Usage: checkout   (prints "checkout ready pid=N", then handles order 1, 2, … every 5 ms)

use std::collections::HashMap;

pub struct Money {
    pub cents: u64,
}

pub struct Address {
    pub street: String,
    pub city: String,
}

pub struct Customer {
    pub name: String,
    pub address: Address,
}

pub struct LineItem {
    pub sku: String,
    pub qty: u32,
    pub price: Money,
}

pub struct Order {
    pub id: u64,
    pub customer: Customer,
    pub items: Vec<LineItem>,
    pub counts: HashMap<String, u32>,
    pub previous: *const Order,
}

fn order(n: u64) -> Order {
    let items: Vec<LineItem> = (0..n % 3 + 2)
        .map(|i| LineItem {
            sku: format!("sku-{i}"),
            qty: (n * 10 + i) as u32,
            price: Money { cents: 100 * (i + 1) },
        })
        .collect();
    let counts = items.iter().map(|it| (it.sku.clone(), it.qty)).collect();
    Order {
        id: n,
        customer: Customer {
            name: format!("cust-{}", n % 5),
            address: Address {
                street: format!("{n} Main St"),
                city: format!("city-{}", n % 3),
            },
        },
        items,
        counts,
        previous: std::ptr::null(),
    }
}

#[inline(never)]
fn handle(order: &Order) -> u64 {
    let total: u64 = order.items.iter().map(|i| i.qty as u64 * i.price.cents).sum();
    total + order.counts.len() as u64 + order.previous as u64 + order.customer.name.len() as u64 // PROBE: checkout-total
}

fn main() {
    println!("checkout ready pid={}", std::process::id());
    let mut n = 0;
    loop {
        n += 1;
        let o = order(n);
        std::hint::black_box(handle(&o));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
