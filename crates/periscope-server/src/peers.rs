//! Server replicas sharing one PostgreSQL database hear of each other's changes through
//! LISTEN/NOTIFY on one channel, so a live stream on one replica shows what arrived through
//! another at once, with no polling loop.
//!
//! Messages on the channel:
//! - `events FIRST LAST`: sent by the store inside the transaction that stored events
//!   FIRST..=LAST. PostgreSQL delivers notifications in commit order, and event numbers are
//!   taken under a row lock held to commit, so they arrive in number order: every replica's
//!   live feed is in `seq` order. A replica's own events also reach its feed this way (from
//!   memory, not read back), which is what keeps its feed in order with the others'.
//! - `REPLICA version|status|tokens|expiry|code|answer`: something changed that the replica REPLICA
//!   already applied locally; the others follow (agents' long polls wake, waiters re-check,
//!   the token table is reloaded, the expiry task recomputes its deadline, agents' polls look
//!   for their code requests, code views look for their answers).

use crate::store::{StoredEvent, CHANNEL};
use crate::AppState;
use postgres::fallible_iterator::FallibleIterator;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a replica tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Probes or instances changed: agents' desired state.
    Version,
    /// Probe states reported.
    Status,
    /// A token was made or revoked.
    Tokens,
    /// A probe was added: the expiry deadline may be nearer.
    Expiry,
    /// A code request was stored: agents' polls look for theirs.
    Code,
    /// A code request was answered: the code views waiting look for theirs.
    Answer,
}

impl Change {
    fn word(self) -> &'static str {
        match self {
            Change::Version => "version",
            Change::Status => "status",
            Change::Tokens => "tokens",
            Change::Expiry => "expiry",
            Change::Code => "code",
            Change::Answer => "answer",
        }
    }

    fn parse(word: &str) -> Option<Change> {
        Some(match word {
            "version" => Change::Version,
            "status" => Change::Status,
            "tokens" => Change::Tokens,
            "expiry" => Change::Expiry,
            "code" => Change::Code,
            "answer" => Change::Answer,
            _ => return None,
        })
    }
}

/// This replica's side of the channel.
pub struct Peers {
    /// Random per process: tells our own announcements from the others'.
    pub replica: String,
    outgoing: Mutex<Sender<Change>>,
    /// Our stored batches by first number, until the listener publishes them in order.
    own: Mutex<BTreeMap<i64, Vec<StoredEvent>>>,
}

/// How many of our batches wait for their notification at most (past that the listener
/// reads them back from the database instead).
const OWN_BATCHES: usize = 256;

impl Peers {
    /// Starts the listener and the announcer; both end when the server stops.
    pub fn start(state: &Arc<AppState>, url: &str, replica: String) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let peers = Peers {
            replica,
            outgoing: Mutex::new(tx),
            own: Mutex::new(BTreeMap::new()),
        };
        if state.peers.set(peers).is_err() {
            return Ok(()); // started already
        }
        let st = state.clone();
        std::thread::Builder::new()
            .name("periscope-announce".into())
            .spawn(move || announce(&st, rx))?;
        let (st, url) = (state.clone(), url.to_string());
        std::thread::Builder::new()
            .name("periscope-listen".into())
            .spawn(move || listen(&st, &url))?;
        Ok(())
    }

    pub fn announce(&self, change: Change) {
        let _ = self
            .outgoing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(change);
    }

    /// Keeps a batch this replica stored until the listener publishes it.
    pub fn stored(&self, batch: Vec<StoredEvent>) {
        let Some(first) = batch.first().map(|e| e.seq) else {
            return;
        };
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.insert(first, batch);
        while own.len() > OWN_BATCHES {
            own.pop_first();
        }
    }

    fn take_own(&self, first: i64, published: i64) -> Option<Vec<StoredEvent>> {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        // Batches at or before what is published are stale (the listener read them back).
        while own.first_key_value().is_some_and(|(k, _)| *k <= published) {
            own.pop_first();
        }
        own.remove(&first)
    }
}

fn stopping(state: &AppState) -> bool {
    *state.stopping.borrow()
}

/// Sends this replica's announcements, coalescing a burst of the same change into one.
fn announce(state: &Arc<AppState>, rx: Receiver<Change>) {
    let Some(peers) = state.peers.get() else {
        return;
    };
    while !stopping(state) {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut changes = vec![first];
        while let Ok(c) = rx.try_recv() {
            if !changes.contains(&c) {
                changes.push(c);
            }
        }
        for c in changes {
            let payload = format!("{} {}", peers.replica, c.word());
            if let Err(e) = state.store.with(|s| s.notify(&payload)) {
                eprintln!("periscope server: cannot tell the other replicas ({e})");
            }
        }
    }
}

/// Listens on the channel until the server stops, reconnecting when the connection drops
/// (and then catching up: events missed meanwhile are read back, and everything else is
/// treated as changed).
fn listen(state: &Arc<AppState>, url: &str) {
    let mut published = state
        .store
        .with(|s| s.event_totals())
        .map(|t| t.0)
        .unwrap_or(0);
    let mut backoff = Duration::from_millis(100);
    let mut first_connection = true;
    while !stopping(state) {
        let mut client = match postgres::Client::connect(url, postgres::NoTls)
            .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).map(|_| c))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("periscope server: cannot listen for the other replicas ({e}); retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if !first_connection {
            let last = state
                .store
                .with(|s| s.event_totals())
                .map(|t| t.0)
                .unwrap_or(published);
            publish(state, &mut published, last, last);
            for c in [
                Change::Version,
                Change::Status,
                Change::Tokens,
                Change::Expiry,
                Change::Code,
                Change::Answer,
            ] {
                apply(state, c);
            }
        }
        first_connection = false;
        while !stopping(state) && !client.is_closed() {
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(Duration::from_secs(1));
            let failed = loop {
                match iter.next() {
                    Ok(None) => break None,
                    Ok(Some(n)) => on_message(state, &mut published, n.payload()),
                    Err(e) => break Some(e),
                }
            };
            if let Some(e) = failed {
                eprintln!("periscope server: lost the replicas' channel ({e}); reconnecting");
                break;
            }
        }
    }
}

fn on_message(state: &Arc<AppState>, published: &mut i64, payload: &str) {
    let mut words = payload.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("events"), Some(first), Some(last)) => {
            if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                publish(state, published, first, last);
            }
        }
        (Some(replica), Some(word), None) => {
            let ours = state.peers.get().is_some_and(|p| p.replica == replica);
            if let (false, Some(change)) = (ours, Change::parse(word)) {
                apply(state, change);
            }
        }
        _ => {}
    }
}

/// Follows a change another replica made.
fn apply(state: &Arc<AppState>, change: Change) {
    match change {
        Change::Version => state.version.send_modify(|v| *v += 1),
        Change::Status => state.status_changed.notify_waiters(),
        Change::Expiry => state.expiry_changed.notify_one(),
        Change::Code => state.code_requested.send_modify(|v| *v += 1),
        Change::Answer => state.code_answered.send_modify(|v| *v += 1),
        Change::Tokens => match state.store.with(|s| s.token_hashes()) {
            Ok(all) => state.tokens.replace(all),
            Err(e) => eprintln!("periscope server: cannot reload tokens ({e})"),
        },
    }
}

/// Publishes events up to `last` to this replica's live feed, in number order: our own
/// batch `first..=last` from memory when it is the next one, anything else read back.
fn publish(state: &Arc<AppState>, published: &mut i64, first: i64, last: i64) {
    while *published < last {
        let own = state
            .peers
            .get()
            .and_then(|p| p.take_own(*published + 1, *published));
        let batch = match own {
            Some(b) => b,
            None => {
                let after = *published;
                let want = (last.max(first) - after).clamp(1, 10_000) as usize;
                match state.store.with(|s| s.events(None, after, None, want)) {
                    Ok(b) if !b.is_empty() => b,
                    // Gone already (retention) or never stored: nothing to show.
                    Ok(_) => {
                        *published = last;
                        return;
                    }
                    Err(e) => {
                        eprintln!("periscope server: cannot read events for the live feed ({e})");
                        return;
                    }
                }
            }
        };
        for e in batch {
            if e.seq > *published {
                *published = e.seq;
                let _ = state.events.send(Arc::new(e));
            }
        }
    }
}
