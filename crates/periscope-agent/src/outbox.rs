//! What the agent has to tell the server, held while the server is away: a bounded queue of
//! events (the oldest dropped first, drops counted and reported), the latest state of each
//! probe on each instance, and the instance list.

use periscope_core::api::{Instance, StatusReport};
use periscope_core::event::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub struct Outbox {
    inner: Mutex<Inner>,
    changed: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Event>,
    /// Dropped since the last report that reached the server.
    dropped: u64,
    dropped_total: u64,
    /// The key of the last event pushed: events are numbered 1, 2, … in the agent's run.
    last_key: u64,
    statuses: HashMap<(String, String), StatusReport>,
    instances: Vec<Instance>,
    instances_dirty: bool,
    closed: bool,
    /// The final report (saying the agent stops) has been taken.
    last_taken: bool,
}

/// One report's worth of content, taken from the outbox; given back if sending fails.
pub struct Batch {
    pub events: Vec<Event>,
    pub statuses: Vec<StatusReport>,
    pub instances: Vec<Instance>,
    pub dropped: u64,
    /// The outbox is closed and this batch empties it: the agent's last report.
    pub last: bool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event, giving it the next key of this run.
    pub fn push_event(&self, mut event: Event) {
        let mut inner = self.lock();
        inner.last_key += 1;
        event.key = Some(inner.last_key);
        if inner.events.len() >= self.capacity {
            inner.events.pop_front();
            inner.dropped += 1;
            inner.dropped_total += 1;
        }
        inner.events.push_back(event);
        drop(inner);
        self.changed.notify_one();
    }

    pub fn set_status(&self, status: StatusReport) {
        let key = (status.probe.clone(), status.status.instance.clone());
        self.lock().statuses.insert(key, status);
        self.changed.notify_one();
    }

    pub fn set_instances(&self, instances: Vec<Instance>) {
        let mut inner = self.lock();
        if inner.instances != instances {
            inner.instances = instances;
            inner.instances_dirty = true;
            drop(inner);
            self.changed.notify_one();
        }
    }

    /// The instance reported under `id`, if the agent watches it now.
    pub fn instance(&self, id: &str) -> Option<Instance> {
        self.lock().instances.iter().find(|i| i.id == id).cloned()
    }

    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Waits until there is something to send (or `heartbeat` passes: the instance list is
    /// sent then anyway, so the server knows the agent is alive), then takes up to `max`
    /// events. None once closed and empty.
    pub fn take(&self, max: usize, heartbeat: Duration) -> Option<Batch> {
        let mut inner = self.lock();
        // A closed outbox still owes one report saying the agent stops.
        let pending = |i: &Inner| {
            !i.events.is_empty()
                || !i.statuses.is_empty()
                || i.instances_dirty
                || (i.closed && !i.last_taken)
        };
        if !pending(&inner) && !inner.closed {
            inner = self
                .changed
                .wait_timeout_while(inner, heartbeat, |i| !pending(i) && !i.closed)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if inner.closed && !pending(&inner) {
            return None;
        }
        let n = inner.events.len().min(max);
        let events = inner.events.drain(..n).collect();
        let statuses = inner.statuses.drain().map(|(_, v)| v).collect();
        inner.instances_dirty = false;
        let last = inner.closed && inner.events.is_empty();
        if last {
            inner.last_taken = true;
        }
        Some(Batch {
            events,
            statuses,
            instances: inner.instances.clone(),
            dropped: std::mem::take(&mut inner.dropped),
            last,
        })
    }

    /// Puts back a batch that could not be sent: its events go first again (within capacity,
    /// dropping the oldest), and statuses not superseded meanwhile are restored.
    pub fn give_back(&self, batch: Batch) {
        let mut inner = self.lock();
        inner.dropped += batch.dropped;
        for e in batch.events.into_iter().rev() {
            if inner.events.len() >= self.capacity {
                inner.dropped += 1;
                inner.dropped_total += 1;
                continue; // the batch's oldest are the ones dropped
            }
            inner.events.push_front(e);
        }
        for s in batch.statuses {
            let key = (s.probe.clone(), s.status.instance.clone());
            inner.statuses.entry(key).or_insert(s);
        }
        inner.instances_dirty = true;
        if batch.last {
            inner.last_taken = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error event numbered `n` (by its probe id), to tell events apart.
    fn ev(n: u32) -> Event {
        Event::new(
            "i",
            periscope_core::event::Body::Error(periscope_core::event::ProbeError {
                ts: String::new(),
                pid: 1,
                ns_pid: None,
                tid: 1,
                ns_tid: None,
                location: String::new(),
                probe: n.to_string(),
                error: String::new(),
            }),
        )
    }

    fn ids(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.probe()).collect()
    }

    #[test]
    fn full_outbox_drops_oldest_and_counts() {
        let o = Outbox::new(3);
        for i in 0..5 {
            o.push_event(ev(i));
        }
        let b = o.take(10, Duration::ZERO).unwrap();
        assert_eq!(ids(&b.events), ["2", "3", "4"]);
        assert_eq!(b.dropped, 2);
        o.push_event(ev(5));
        o.push_event(ev(6));
        o.give_back(b);
        // 5 and 6 stay; of the returned 2,3,4 only the newest fits.
        let b = o.take(10, Duration::ZERO).unwrap();
        assert_eq!(ids(&b.events), ["4", "5", "6"]);
        assert_eq!(b.dropped, 4);
        assert_eq!(o.dropped_total(), 4);
    }
}
