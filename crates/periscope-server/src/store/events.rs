//! Events: stored in batches with numbers taken in commit order, read back by probe and
//! cursor, and pruned by age and size (one replica at a time).

use super::sql::{args, transaction, Arg, Conn, Dialect};
use super::{now_ms, parse_rfc3339_ms, Ingested, Result, Store, StoreError, StoredEvent};
use periscope_core::event::Event;

/// The advisory lock that lets one replica at a time apply retention.
const RETENTION_LOCK: i64 = 0x7065_7202;

/// An `events` row read as `seq, probe, body`.
fn stored_event(r: &super::sql::Row) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.int(0)?,
        probe: r.text(1)?,
        body: r.text(2)?,
    })
}

fn stored_events(rows: Vec<super::sql::Row>) -> Result<Vec<StoredEvent>> {
    rows.iter().map(stored_event).collect()
}

impl Store {
    /// Stores a batch of events in one transaction. Each gets the next sequence number, also
    /// written into its JSON as `seq`. With `run` (an agent's run id), events whose `key` that
    /// run already stored are skipped: an agent sends a report again when it did not hear the
    /// answer, perhaps to another replica, and nothing is stored twice.
    pub fn insert_events(&mut self, run: Option<&str>, events: Vec<Event>) -> Result<Ingested> {
        transaction(self.c(), |c| {
            let mut events = events;
            let mut duplicates = 0;
            if let Some(run) = run {
                let lock = if c.dialect() == Dialect::Postgres {
                    " FOR UPDATE"
                } else {
                    ""
                };
                let rows = c.query(
                    &format!("SELECT last_key FROM agent_runs WHERE run = ?1{lock}"),
                    args![run],
                )?;
                let last = rows.first().map(|r| r.int(0)).transpose()?;
                if let Some(last) = last {
                    let before = events.len();
                    events.retain(|e| e.key.is_none_or(|k| k as i64 > last));
                    duplicates = before - events.len();
                }
                let newest = events.iter().filter_map(|e| e.key).max();
                if let Some(newest) = newest {
                    c.execute(
                        "INSERT INTO agent_runs (run, last_key, seen_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT(run) DO UPDATE SET last_key = ?2, seen_ms = ?3",
                        args![run, newest as i64, now_ms()],
                    )?;
                }
            }
            if events.is_empty() {
                return Ok(Ingested {
                    stored: Vec::new(),
                    duplicates,
                });
            }
            // Taking the numbers locks the totals row until commit: batches commit in the
            // order of their numbers, so a reader never sees a later number before an earlier.
            let rows = c.query(
                "UPDATE event_totals SET last_seq = last_seq + ?1 WHERE id = 1 RETURNING last_seq",
                args![events.len() as i64],
            )?;
            let last = rows
                .first()
                .ok_or_else(|| StoreError::Column("no event_totals row".into()))?
                .int(0)?;
            let first = last - events.len() as i64 + 1;
            let mut stored = Vec::with_capacity(events.len());
            let mut rows = Vec::with_capacity(events.len());
            let mut bytes = 0i64;
            for (seq, mut e) in (first..).zip(events) {
                e.seq = Some(seq);
                let probe = e.probe().to_string();
                let ts_ms = parse_rfc3339_ms(e.ts()).unwrap_or_else(now_ms);
                let body = serde_json::to_string(&e)?;
                bytes += body.len() as i64;
                let kind = e.kind();
                rows.push((seq, ts_ms, e.instance, kind));
                stored.push(StoredEvent { seq, probe, body });
            }
            let args: Vec<Vec<Arg<'_>>> = rows
                .iter()
                .zip(&stored)
                .map(|((seq, ts, instance, kind), s)| {
                    vec![
                        Arg::from(*seq),
                        Arg::from(&s.probe),
                        Arg::from(instance),
                        Arg::from(*ts),
                        Arg::from(*kind),
                        Arg::from(&s.body),
                    ]
                })
                .collect();
            c.insert_rows(
                "events",
                &["seq", "probe", "instance", "ts_ms", "kind", "body"],
                &args,
            )?;
            c.execute(
                "UPDATE event_totals SET bytes = bytes + ?1 WHERE id = 1",
                args![bytes],
            )?;
            Self::announce(c, &format!("events {first} {last}"))?;
            Ok(Ingested { stored, duplicates })
        })
    }

    /// Stored events, oldest first: of one probe (or all), after sequence `after`, at or after
    /// `since_ms`.
    pub fn events(
        &mut self,
        probe: Option<&str>,
        after: i64,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let rows = self.c().query(
            "SELECT seq, probe, body FROM events
             WHERE (CAST(?1 AS TEXT) IS NULL OR probe = ?1) AND seq > ?2 AND ts_ms >= ?3
             ORDER BY seq LIMIT ?4",
            args![probe, after, since_ms.unwrap_or(i64::MIN), limit as i64],
        )?;
        stored_events(rows)
    }

    /// The newest counter report of a probe from each instance (a report carries totals).
    pub fn latest_counts(&mut self, probe: &str) -> Result<Vec<StoredEvent>> {
        let rows = self.c().query(
            "SELECT seq, probe, body FROM events WHERE seq IN
               (SELECT MAX(seq) FROM events WHERE probe = ?1 AND kind = 'count' GROUP BY instance)
             ORDER BY seq",
            args![probe],
        )?;
        stored_events(rows)
    }

    /// A probe's first `limit` events of `kind`.
    pub fn first_events(
        &mut self,
        probe: &str,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let rows = self.c().query(
            "SELECT seq, probe, body FROM events WHERE probe = ?1 AND kind = ?2 ORDER BY seq LIMIT ?3",
            args![probe, kind, limit as i64],
        )?;
        stored_events(rows)
    }

    /// The last sequence number given, and the bytes of event bodies stored.
    pub fn event_totals(&mut self) -> Result<(i64, i64)> {
        let rows = self
            .c()
            .query("SELECT last_seq, bytes FROM event_totals WHERE id = 1", &[])?;
        match rows.first() {
            Some(r) => Ok((r.int(0)?, r.int(1)?)),
            None => Ok((0, 0)),
        }
    }

    /// Retention: drops events older than `before_ms`, then the oldest until the bodies take at
    /// most `max_bytes`; forgets agent runs not heard from since `before_ms`. One replica at a
    /// time. Returns how many events were dropped.
    pub fn prune_events(&mut self, before_ms: i64, max_bytes: i64) -> Result<usize> {
        transaction(self.c(), |c| {
            if !Self::try_lock(c, RETENTION_LOCK)? {
                return Ok(0);
            }
            c.execute(
                "DELETE FROM agent_runs WHERE seen_ms < ?1",
                args![before_ms],
            )?;
            let mut dropped = c.execute("DELETE FROM events WHERE ts_ms < ?1", args![before_ms])?;
            let mut bytes = Self::body_bytes(c)?;
            while bytes > max_bytes {
                // Remove the oldest tenth (at least 1,000 events) of what is over, in one
                // statement.
                let over = bytes - max_bytes;
                let avg = c.query(
                    "SELECT CAST(COALESCE(AVG(LENGTH(body)), 1) AS DOUBLE PRECISION) FROM events",
                    &[],
                )?;
                let avg = avg.first().map_or(Ok(1.0), |r| r.float(0))?.max(1.0) as i64;
                let n = (over / avg + 1).max(1000);
                let gone = c.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1)",
                    args![n],
                )?;
                dropped += gone;
                bytes = Self::body_bytes(c)?;
                if gone == 0 {
                    break;
                }
            }
            c.execute(
                "UPDATE event_totals SET bytes = ?1 WHERE id = 1",
                args![bytes],
            )?;
            Ok(dropped as usize)
        })
    }

    fn body_bytes(c: &mut dyn Conn) -> Result<i64> {
        let rows = c.query(
            "SELECT CAST(COALESCE(SUM(LENGTH(body)), 0) AS BIGINT) FROM events",
            &[],
        )?;
        rows.first().map_or(Ok(0), |r| r.int(0))
    }
}
