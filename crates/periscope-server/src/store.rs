//! The server's SQLite store: probes, instances, per-instance probe states, events, tokens and
//! the audit trail. One connection, used from blocking tasks; the schema is migrated on open
//! (`PRAGMA user_version` counts the migrations applied).

use periscope_core::api::{
    AuditEntry, InstallState, Instance, NewProbe, Probe, ProbeInstance, ProbeLifecycle, Role,
    StatusReport, TokenInfo,
};
use periscope_core::event::Event;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored data is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store task failed: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Schema changes, applied in order; never edit one that has shipped, add another.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE probes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    body TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    exited INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE statuses (
    probe TEXT NOT NULL,
    instance TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (probe, instance)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    probe TEXT NOT NULL,
    instance TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_by_probe ON events (probe, seq);
CREATE INDEX events_by_time ON events (ts_ms);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    remote TEXT NOT NULL,
    via TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
    // Resuming a paused probe; hit counts that survive agent restarts (`reporter` is the agent
    // whose run the counts in `body` continue, `base_*` what earlier runs counted); instances
    // whose agent said it stopped.
    r#"
ALTER TABLE probes ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE statuses ADD COLUMN reporter TEXT NOT NULL DEFAULT '';
ALTER TABLE statuses ADD COLUMN base_hits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE statuses ADD COLUMN base_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE statuses ADD COLUMN base_errors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN agent_stopped INTEGER NOT NULL DEFAULT 0;
"#,
];

/// An `events` row read as `seq, probe, body`.
fn stored_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        probe: r.get(1)?,
        body: r.get(2)?,
    })
}

/// A `probes` row as read, before its statuses are folded in.
struct ProbeRow {
    id: String,
    spec: String,
    state: String,
    created_at: String,
    expires_at: String,
    created_by: String,
    via: String,
    resumes: i64,
}

pub struct Store {
    conn: Connection,
    next_seq: i64,
    /// Bytes of event bodies stored, kept up to date so retention needs no full scan.
    event_bytes: i64,
}

/// An event as stored: its sequence number, probe and JSON text (which includes `seq`).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub probe: String,
    pub body: String,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        // WAL: readers do not block the writer; NORMAL: a committed transaction survives a
        // crash of the server process (not necessarily of the machine).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store {
            conn,
            next_seq: 1,
            event_bytes: 0,
        };
        store.migrate()?;
        store.next_seq =
            store
                .conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM events", [], |r| {
                    r.get(0)
                })?;
        store.event_bytes = store.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events",
            [],
            |r| r.get(0),
        )?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let applied: usize =
            self.conn
                .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ---- tokens ---------------------------------------------------------------------------

    pub fn token_count(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?)
    }

    /// False when a token of that name exists already.
    pub fn insert_token(&self, name: &str, role: Role, hash: &str, now: &str) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), hash, now],
        )?;
        Ok(n == 1)
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut st = self
            .conn
            .prepare("SELECT name, role, created_at, revoked_at FROM tokens ORDER BY created_at")?;
        let rows = st.query_map([], |r| {
            Ok(TokenInfo {
                name: r.get(0)?,
                role: r.get::<_, String>(1)?.parse().unwrap_or(Role::Viewer),
                created_at: r.get(2)?,
                revoked_at: r.get(3)?,
                token: None,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every token with its hash, for the server's in-memory lookup table.
    pub fn token_hashes(&self) -> Result<Vec<(String, TokenInfo)>> {
        let mut st = self
            .conn
            .prepare("SELECT hash, name, role, created_at, revoked_at FROM tokens")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                TokenInfo {
                    name: r.get(1)?,
                    role: r.get::<_, String>(2)?.parse().unwrap_or(Role::Viewer),
                    created_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                    token: None,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn revoke_token(&self, name: &str, now: &str) -> Result<Option<TokenInfo>> {
        self.conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, now],
        )?;
        Ok(self.tokens()?.into_iter().find(|t| t.name == name))
    }

    // ---- probes ---------------------------------------------------------------------------

    pub fn insert_probe(
        &self,
        spec: &NewProbe,
        created_by: &str,
        via: &str,
        now: time::OffsetDateTime,
        ttl_seconds: u64,
    ) -> Result<Probe> {
        let expires = now + time::Duration::seconds(ttl_seconds.min(i64::MAX as u64) as i64);
        let (created_at, expires_at) = (rfc3339(now), rfc3339(expires));
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO probes (id, spec, state, created_at, expires_at, expires_ms, created_by, via)
             VALUES ('', ?1, 'active', ?2, ?3, ?4, ?5, ?6)",
            params![
                serde_json::to_string(spec)?,
                created_at,
                expires_at,
                unix_ms(expires),
                created_by,
                via
            ],
        )?;
        let seq = tx.last_insert_rowid();
        let id = format!("p{seq}");
        tx.execute("UPDATE probes SET id = ?1 WHERE seq = ?2", params![id, seq])?;
        tx.commit()?;
        self.probe(&id)?
            .ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))
    }

    fn probe_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProbeRow> {
        Ok(ProbeRow {
            id: r.get(0)?,
            spec: r.get(1)?,
            state: r.get(2)?,
            created_at: r.get(3)?,
            expires_at: r.get(4)?,
            created_by: r.get(5)?,
            via: r.get(6)?,
            resumes: r.get(7)?,
        })
    }

    fn build_probe(&self, row: ProbeRow) -> Result<Probe> {
        let statuses = self.statuses(&row.id)?;
        let hits = statuses.iter().map(|s| s.hits).sum();
        let paused: Vec<&ProbeInstance> = statuses
            .iter()
            .filter(|s| s.state == InstallState::Paused)
            .collect();
        let mut state = match row.state.as_str() {
            "removed" => ProbeLifecycle::Removed,
            "expired" => ProbeLifecycle::Expired,
            _ => ProbeLifecycle::Active,
        };
        // A live probe paused anywhere says so: a probe that quietly stopped reporting on
        // some instances is the one state a user must not mistake for "nothing happens".
        let paused_reason = match paused.first() {
            Some(first) if state == ProbeLifecycle::Active => {
                state = ProbeLifecycle::Paused;
                let why = first
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "paused".to_string());
                Some(format!(
                    "on {} of {} instances: {why}",
                    paused.len(),
                    statuses.len()
                ))
            }
            _ => None,
        };
        Ok(Probe {
            spec: serde_json::from_str(&row.spec)?,
            state,
            id: row.id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            created_by: row.created_by,
            via: row.via,
            hits,
            paused_reason,
            resumes: row.resumes.max(0) as u64,
            instances: Vec::new(),
        })
    }

    const PROBE_COLUMNS: &'static str =
        "id, spec, state, created_at, expires_at, created_by, via, resumes";

    pub fn probe(&self, id: &str) -> Result<Option<Probe>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {} FROM probes WHERE id = ?1", Self::PROBE_COLUMNS),
                [id],
                Self::probe_from_row,
            )
            .optional()?;
        row.map(|r| self.build_probe(r)).transpose()
    }

    pub fn probes(&self, all: bool) -> Result<Vec<Probe>> {
        let sql = format!(
            "SELECT {} FROM probes {} ORDER BY seq",
            Self::PROBE_COLUMNS,
            if all { "" } else { "WHERE state = 'active'" }
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows: Vec<_> = st
            .query_map([], Self::probe_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(|r| self.build_probe(r)).collect()
    }

    /// Moves an active probe to `state`; false when it was not active.
    pub fn end_probe(&self, id: &str, state: ProbeLifecycle) -> Result<bool> {
        let name = match state {
            ProbeLifecycle::Removed => "removed",
            ProbeLifecycle::Expired => "expired",
            ProbeLifecycle::Active | ProbeLifecycle::Paused => "active",
        };
        let n = self.conn.execute(
            "UPDATE probes SET state = ?2 WHERE id = ?1 AND state = 'active'",
            params![id, name],
        )?;
        Ok(n == 1)
    }

    /// Active probes whose time is up.
    pub fn due_expiries(&self, now_ms: i64) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM probes WHERE state = 'active' AND expires_ms <= ?1")?;
        let rows = st.query_map([now_ms], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn next_expiry_ms(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN(expires_ms) FROM probes WHERE state = 'active'",
            [],
            |r| r.get(0),
        )?)
    }

    // ---- instances and states -------------------------------------------------------------

    /// Records an agent's instances (all it has now); the agent's others are marked exited.
    /// Returns whether the set of live instances changed.
    /// Records an agent's instances. `stopping`: the agent's last report, after which its
    /// instances are `offline` at once (their processes still run; nothing watches them).
    pub fn record_instances(
        &self,
        agent: &str,
        instances: &[Instance],
        now_ms: i64,
        stopping: bool,
    ) -> Result<bool> {
        let tx = self.conn.unchecked_transaction()?;
        let before: Vec<String> = {
            let mut st =
                tx.prepare("SELECT id FROM instances WHERE agent = ?1 AND exited = 0 ORDER BY id")?;
            let rows = st.query_map([agent], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute("UPDATE instances SET exited = 1 WHERE agent = ?1", [agent])?;
        for i in instances {
            tx.execute(
                "INSERT INTO instances (id, agent, body, last_seen_ms, exited, agent_stopped)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)
                 ON CONFLICT(id) DO UPDATE SET agent = ?2, body = ?3, last_seen_ms = ?4, exited = 0,
                    agent_stopped = ?5",
                params![i.id, agent, serde_json::to_string(i)?, now_ms, stopping],
            )?;
        }
        tx.commit()?;
        let mut after: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        after.sort();
        Ok(before != after)
    }

    /// Instances, newest first, with `state` from their agent's last report: `online`,
    /// `offline` (not heard from within `offline_after_ms`) or `exited`.
    pub fn instances(
        &self,
        now_ms: i64,
        offline_after_ms: i64,
        with_exited: bool,
    ) -> Result<Vec<Instance>> {
        let mut st = self.conn.prepare(
            "SELECT body, last_seen_ms, exited, agent_stopped FROM instances
             ORDER BY last_seen_ms DESC, id",
        )?;
        let rows: Vec<(String, i64, bool, bool)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for (body, seen, exited, agent_stopped) in rows {
            if exited && !with_exited {
                continue;
            }
            let mut i: Instance = serde_json::from_str(&body)?;
            i.state = if exited {
                "exited"
            } else if agent_stopped || now_ms - seen > offline_after_ms {
                "offline"
            } else {
                "online"
            }
            .into();
            i.last_seen = rfc3339_ms(seen);
            out.push(i);
        }
        Ok(out)
    }

    /// Stores the probe states an agent reported. Its counts run from when its session
    /// started; a report from another agent than the last one (the agent restarted, or another
    /// took over) starts a new run, and what the earlier runs counted is kept as a base, so
    /// the hits shown never go back.
    pub fn record_statuses(&self, agent: &str, statuses: &[StatusReport]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for s in statuses {
            let before: Option<(String, String, [i64; 3])> = tx
                .query_row(
                    "SELECT body, reporter, base_hits, base_dropped, base_errors FROM statuses
                     WHERE probe = ?1 AND instance = ?2",
                    params![s.probe, s.status.instance],
                    |r| Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?, r.get(4)?])),
                )
                .optional()?;
            let base = match before {
                Some((_, reporter, base)) if reporter == agent => base,
                Some((body, _, _)) => {
                    // The stored body holds the previous run's totals, base included.
                    let last: ProbeInstance = serde_json::from_str(&body)?;
                    [last.hits as i64, last.dropped as i64, last.errors as i64]
                }
                None => [0; 3],
            };
            let mut status = s.status.clone();
            status.hits += base[0].max(0) as u64;
            status.dropped += base[1].max(0) as u64;
            status.errors += base[2].max(0) as u64;
            tx.execute(
                "INSERT INTO statuses (probe, instance, body, reporter, base_hits, base_dropped, base_errors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(probe, instance) DO UPDATE SET body = ?3, reporter = ?4,
                    base_hits = ?5, base_dropped = ?6, base_errors = ?7",
                params![
                    s.probe,
                    s.status.instance,
                    serde_json::to_string(&status)?,
                    agent,
                    base[0],
                    base[1],
                    base[2]
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Resumes a live probe: `resumes` goes up (agents reinstall it where it is paused), with a
    /// new overhead budget when given. False when the probe is not live.
    pub fn resume_probe(&self, id: &str, budget_ms: Option<u64>) -> Result<bool> {
        let tx = self.conn.unchecked_transaction()?;
        let spec: Option<String> = tx
            .query_row(
                "SELECT spec FROM probes WHERE id = ?1 AND state = 'active'",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(spec) = spec else {
            return Ok(false);
        };
        let mut spec: NewProbe = serde_json::from_str(&spec)?;
        if budget_ms.is_some() {
            spec.budget_ms = budget_ms;
        }
        tx.execute(
            "UPDATE probes SET spec = ?2, resumes = resumes + 1 WHERE id = ?1",
            params![id, serde_json::to_string(&spec)?],
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn statuses(&self, probe: &str) -> Result<Vec<ProbeInstance>> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM statuses WHERE probe = ?1 ORDER BY instance")?;
        let rows: Vec<String> = st
            .query_map([probe], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        rows.iter().map(|b| Ok(serde_json::from_str(b)?)).collect()
    }

    // ---- events ---------------------------------------------------------------------------

    /// Stores a batch of events in one transaction. Each gets the next sequence number, also
    /// written into its JSON as `seq`.
    pub fn insert_events(&mut self, events: Vec<Event>) -> Result<Vec<StoredEvent>> {
        let tx = self.conn.transaction()?;
        let mut stored = Vec::with_capacity(events.len());
        let mut seq = self.next_seq;
        let mut bytes = 0i64;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO events (seq, probe, instance, ts_ms, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for mut e in events {
                e.seq = Some(seq);
                let probe = e.probe().to_string();
                let ts_ms = parse_rfc3339_ms(e.ts()).unwrap_or_else(now_ms);
                let body = serde_json::to_string(&e)?;
                st.execute(params![seq, probe, e.instance, ts_ms, e.kind(), body])?;
                bytes += body.len() as i64;
                stored.push(StoredEvent { seq, probe, body });
                seq += 1;
            }
        }
        tx.commit()?;
        self.next_seq = seq;
        self.event_bytes += bytes;
        Ok(stored)
    }

    /// Stored events, oldest first: of one probe (or all), after sequence `after`, at or after
    /// `since_ms`.
    pub fn events(
        &self,
        probe: Option<&str>,
        after: i64,
        since_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, probe, body FROM events
             WHERE (?1 IS NULL OR probe = ?1) AND seq > ?2 AND ts_ms >= ?3
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = st.query_map(
            params![probe, after, since_ms.unwrap_or(i64::MIN), limit as i64],
            stored_event,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest counter report of a probe from each instance (a report carries totals).
    pub fn latest_counts(&self, probe: &str) -> Result<Vec<StoredEvent>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, probe, body FROM events WHERE seq IN
               (SELECT MAX(seq) FROM events WHERE probe = ?1 AND kind = 'count' GROUP BY instance)
             ORDER BY seq",
        )?;
        let rows = st.query_map([probe], stored_event)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A probe's first `limit` events of `kind`.
    pub fn first_events(&self, probe: &str, kind: &str, limit: usize) -> Result<Vec<StoredEvent>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, probe, body FROM events WHERE probe = ?1 AND kind = ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = st.query_map(params![probe, kind, limit as i64], stored_event)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn event_totals(&self) -> (i64, i64) {
        (self.next_seq - 1, self.event_bytes)
    }

    /// Retention: drops events older than `before_ms`, then the oldest until the bodies take at
    /// most `max_bytes`. Returns how many were dropped.
    pub fn prune_events(&mut self, before_ms: i64, max_bytes: i64) -> Result<usize> {
        let mut dropped = self
            .conn
            .execute("DELETE FROM events WHERE ts_ms < ?1", [before_ms])?;
        self.event_bytes = self.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events",
            [],
            |r| r.get(0),
        )?;
        while self.event_bytes > max_bytes {
            // Remove the oldest tenth (at least 1,000 events) of what is over, in one statement.
            let over = self.event_bytes - max_bytes;
            let avg: i64 = self.conn.query_row(
                "SELECT COALESCE(AVG(LENGTH(body)), 1) FROM events",
                [],
                |r| r.get::<_, f64>(0).map(|f| f.max(1.0) as i64),
            )?;
            let n = (over / avg + 1).max(1000);
            let gone = self.conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1)",
                [n],
            )?;
            dropped += gone;
            self.event_bytes = self.conn.query_row(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events",
                [],
                |r| r.get(0),
            )?;
            if gone == 0 {
                break;
            }
        }
        Ok(dropped)
    }

    // ---- audit ----------------------------------------------------------------------------

    pub fn audit(&self, e: &AuditEntry) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit (ts, ts_ms, actor, action, target, outcome, remote, via, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                e.ts,
                parse_rfc3339_ms(&e.ts).unwrap_or_else(now_ms),
                e.actor,
                e.action,
                e.target,
                e.outcome,
                e.remote,
                e.via,
                e.detail.to_string()
            ],
        )?;
        Ok(())
    }

    pub fn audit_since(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut st = self.conn.prepare(
            "SELECT id, ts, actor, action, target, outcome, remote, via, detail FROM audit
             WHERE ts_ms >= ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![since_ms.unwrap_or(i64::MIN), limit as i64], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                ts: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
                remote: r.get(6)?,
                via: r.get(7)?,
                detail: serde_json::from_str(&r.get::<_, String>(8)?)
                    .unwrap_or(serde_json::Value::Null),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(rfc3339)
        .unwrap_or_default()
}

pub fn unix_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn now_ms() -> i64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(unix_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_store(name: &str) -> Store {
        let dir =
            std::env::temp_dir().join(format!("periscope-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Store::open(&dir.join("p.db")).unwrap()
    }

    fn event(ts: &str, n: usize) -> Event {
        serde_json::from_value(
            json!({"kind": "log", "probe": "p1", "instance": "i", "ts": ts,
            "pid": 1, "tid": 1, "location": "a.rs:1", "message": "x".repeat(n), "values": {}}),
        )
        .unwrap()
    }

    #[test]
    fn retention_drops_old_events_then_the_oldest_beyond_the_size_limit() {
        let mut s = temp_store("retention");
        let old = event("2020-01-01T00:00:00Z", 10);
        let now = periscope_core::event::now_rfc3339();
        let mut batch = vec![old.clone(), old];
        batch.extend((0..3000).map(|_| event(&now, 100)));
        s.insert_events(batch).unwrap();
        let cutoff = parse_rfc3339_ms("2021-01-01T00:00:00Z").unwrap();
        let dropped = s.prune_events(cutoff, i64::MAX).unwrap();
        assert_eq!(dropped, 2, "the two old events go by age");
        let (_, bytes) = s.event_totals();
        let limit = bytes / 2;
        s.prune_events(cutoff, limit).unwrap();
        let (_, left) = s.event_totals();
        assert!(left <= limit, "{left} > {limit}");
        // The newest are kept: the last sequence number is still there.
        let last = s.events(Some("p1"), 3001, None, 10).unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].seq, 3002);
    }

    #[test]
    fn the_audit_log_refuses_changes_and_deletions() {
        let s = temp_store("audit");
        s.audit(&AuditEntry {
            id: 0,
            ts: periscope_core::event::now_rfc3339(),
            actor: "admin".into(),
            action: "probe.add".into(),
            target: "p1".into(),
            outcome: "ok".into(),
            remote: "127.0.0.1:1".into(),
            via: "cli".into(),
            detail: serde_json::Value::Null,
        })
        .unwrap();
        let upd = s.conn.execute("UPDATE audit SET actor = 'mallory'", []);
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = s.conn.execute("DELETE FROM audit", []);
        assert!(del.unwrap_err().to_string().contains("append-only"));
        assert_eq!(s.audit_since(None, 10).unwrap()[0].actor, "admin");
    }
}
