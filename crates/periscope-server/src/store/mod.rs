//! The server's store: probes, instances, per-instance probe states, events, tokens and the
//! audit trail, in SQLite (one file, one connection: the default) or PostgreSQL (a pool of
//! connections, shared by any number of server replicas). The queries are written once, in
//! SQL both accept ([`sql`]); the schema is migrated on open ([`schema`]). The store is used
//! only from blocking tasks.

pub mod code;
mod events;
pub mod schema;
pub mod sql;

use periscope_core::api::{
    AuditEntry, InstallState, Instance, NewProbe, Probe, ProbeInstance, ProbeLifecycle, Role,
    StatusReport, TokenInfo,
};
use sql::{args, transaction, Conn, Dialect, PgConn, Row, SqliteConn};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Not a `source`: the message already holds the whole chain, said once.
    #[error("PostgreSQL: {}", pg_message(.0))]
    Postgres(postgres::Error),
    #[error("no database connection free: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("unexpected stored value: {0}")]
    Column(String),
    /// PostgreSQL's text cannot hold it, so neither store takes it.
    #[error("a name or id contains a NUL character")]
    Nul,
    #[error("stored data is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store task failed: {0}")]
    Task(String),
}

type Result<T> = std::result::Result<T, StoreError>;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// The server's own message for a database error (the error's Display says only "db error"),
/// or the error with its causes (`error connecting to server: Connection refused`).
fn pg_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

/// Where the data lives: a SQLite file, or a PostgreSQL database (`postgres://…` URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    File(PathBuf),
    Postgres(String),
}

impl DbLocation {
    pub fn parse(s: &str) -> DbLocation {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            DbLocation::Postgres(s.to_string())
        } else {
            DbLocation::File(PathBuf::from(s))
        }
    }

    /// For messages: the file, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            DbLocation::File(p) => p.display().to_string(),
            DbLocation::Postgres(url) => redact_password(url),
        }
    }
}

impl From<PathBuf> for DbLocation {
    fn from(p: PathBuf) -> Self {
        DbLocation::parse(&p.to_string_lossy())
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The opened database.
pub enum Database {
    /// SQLite allows one writer: one connection, taken in turn.
    Sqlite(Mutex<Store>),
    Postgres {
        pool: r2d2::Pool<PgManager>,
        url: String,
    },
}

/// How long a request waits for a free PostgreSQL connection before it fails.
const POOL_WAIT: Duration = Duration::from_secs(5);
const POOL_SIZE: u32 = 8;

impl Database {
    pub fn open(location: &DbLocation) -> Result<Database> {
        match location {
            DbLocation::File(path) => Ok(Database::Sqlite(Mutex::new(Store::open_sqlite(path)?))),
            DbLocation::Postgres(url) => {
                // Connected directly first: a wrong URL is said at once and plainly (the pool
                // would retry for its whole wait and then say only that it timed out).
                let mut first = Store::new(Box::new(PgConn::connect(url)?));
                schema::migrate(first.conn.as_mut())?;
                let pool = r2d2::Pool::builder()
                    .max_size(POOL_SIZE)
                    .min_idle(Some(1))
                    .connection_timeout(POOL_WAIT)
                    .build(PgManager { url: url.clone() })?;
                Ok(Database::Postgres {
                    pool,
                    url: url.clone(),
                })
            }
        }
    }

    /// Runs `f` with a connection (blocking: call from a blocking task).
    pub fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        match self {
            Database::Sqlite(store) => f(&mut store.lock().unwrap_or_else(|p| p.into_inner())),
            Database::Postgres { pool, .. } => f(&mut *pool.get()?),
        }
    }

    /// The PostgreSQL URL, for connections outside the pool (LISTEN).
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            Database::Sqlite(_) => None,
            Database::Postgres { url, .. } => Some(url),
        }
    }
}

/// Opens pooled PostgreSQL connections as [`Store`]s.
pub struct PgManager {
    url: String,
}

impl r2d2::ManageConnection for PgManager {
    type Connection = Store;
    type Error = StoreError;

    fn connect(&self) -> Result<Store> {
        Ok(Store::new(Box::new(PgConn::connect(&self.url)?)))
    }

    fn is_valid(&self, store: &mut Store) -> Result<()> {
        store.conn.batch("")
    }

    fn has_broken(&self, store: &mut Store) -> bool {
        store.conn.is_broken()
    }
}

fn token_info(r: &Row, at: usize) -> Result<TokenInfo> {
    Ok(TokenInfo {
        name: r.text(at)?,
        role: r.text(at + 1)?.parse().unwrap_or(Role::Viewer),
        created_at: r.text(at + 2)?,
        revoked_at: r.opt_text(at + 3)?,
        token: None,
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

/// A connection to the store, with the store's operations.
pub struct Store {
    conn: Box<dyn Conn>,
}

/// An event as stored: its sequence number, probe and JSON text (which includes `seq`).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub probe: String,
    pub body: String,
}

/// What a batch of events stored: the events, and how many were already stored before (sent
/// again by an agent whose earlier answer was lost).
#[derive(Debug, Default)]
pub struct Ingested {
    pub stored: Vec<StoredEvent>,
    pub duplicates: usize,
}

/// The channel PostgreSQL replicas announce changes on (see `peers`).
pub const CHANNEL: &str = "periscope";

/// The advisory lock that lets one replica at a time expire probes (retention has its own).
const EXPIRY_LOCK: i64 = 0x7065_7201;

impl Store {
    fn new(conn: Box<dyn Conn>) -> Store {
        Store { conn }
    }

    fn open_sqlite(path: &Path) -> Result<Store> {
        let conn = rusqlite::Connection::open(path)?;
        // WAL: readers do not block the writer; NORMAL: a committed transaction survives a
        // crash of the server process (not necessarily of the machine).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(64);
        let mut store = Store::new(Box::new(SqliteConn(conn)));
        schema::migrate(store.conn.as_mut())?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    fn c(&mut self) -> &mut dyn Conn {
        self.conn.as_mut()
    }

    /// Takes a transaction-scoped advisory lock if no other replica holds it (PostgreSQL);
    /// SQLite has one server, which always may.
    fn try_lock(conn: &mut dyn Conn, key: i64) -> Result<bool> {
        if conn.dialect() == Dialect::Sqlite {
            return Ok(true);
        }
        let rows = conn.query(
            "SELECT CASE WHEN pg_try_advisory_xact_lock(?1) THEN 1 ELSE 0 END",
            args![key],
        )?;
        Ok(rows.first().map(|r| r.int(0)).transpose()? == Some(1))
    }

    /// Tells the other replicas (PostgreSQL) what changed, when this transaction commits.
    fn announce(conn: &mut dyn Conn, payload: &str) -> Result<()> {
        if conn.dialect() == Dialect::Postgres {
            conn.query("SELECT pg_notify(?1, ?2)", args![CHANNEL, payload])?;
        }
        Ok(())
    }

    /// Tells the other replicas `payload` now (PostgreSQL; nothing to tell with SQLite).
    pub fn notify(&mut self, payload: &str) -> Result<()> {
        Self::announce(self.c(), payload)
    }

    // ---- tokens ---------------------------------------------------------------------------

    pub fn token_count(&mut self) -> Result<i64> {
        let rows = self.c().query("SELECT COUNT(*) FROM tokens", &[])?;
        rows.first().map_or(Ok(0), |r| r.int(0))
    }

    /// False when a token of that name exists already.
    pub fn insert_token(&mut self, name: &str, role: Role, hash: &str, now: &str) -> Result<bool> {
        let n = self.c().execute(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            args![name, role.as_str(), hash, now],
        )?;
        Ok(n == 1)
    }

    /// Stores the first token, `admin`, unless there is a token already (another replica may
    /// have made it a moment ago). True when this call made it.
    pub fn insert_first_admin(&mut self, hash: &str, now: &str) -> Result<bool> {
        let n = self.c().execute(
            "INSERT INTO tokens (name, role, hash, created_at)
             SELECT 'admin', 'admin', ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM tokens)
             ON CONFLICT DO NOTHING",
            args![hash, now],
        )?;
        Ok(n == 1)
    }

    pub fn tokens(&mut self) -> Result<Vec<TokenInfo>> {
        let rows = self.c().query(
            "SELECT name, role, created_at, revoked_at FROM tokens ORDER BY created_at, name",
            &[],
        )?;
        rows.iter().map(|r| token_info(r, 0)).collect()
    }

    /// Every token with its hash, for the server's in-memory lookup table.
    pub fn token_hashes(&mut self) -> Result<Vec<(String, TokenInfo)>> {
        let rows = self.c().query(
            "SELECT hash, name, role, created_at, revoked_at FROM tokens",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, token_info(r, 1)?)))
            .collect()
    }

    pub fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenInfo>> {
        let rows = self.c().query(
            "SELECT name, role, created_at, revoked_at FROM tokens WHERE hash = ?1",
            args![hash],
        )?;
        rows.first().map(|r| token_info(r, 0)).transpose()
    }

    pub fn revoke_token(&mut self, name: &str, now: &str) -> Result<Option<TokenInfo>> {
        self.c().execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            args![name, now],
        )?;
        Ok(self.tokens()?.into_iter().find(|t| t.name == name))
    }

    // ---- probes ---------------------------------------------------------------------------

    pub fn insert_probe(
        &mut self,
        spec: &NewProbe,
        created_by: &str,
        via: &str,
        now: time::OffsetDateTime,
        ttl_seconds: u64,
    ) -> Result<Probe> {
        let expires = now + time::Duration::seconds(ttl_seconds.min(i64::MAX as u64) as i64);
        let (created_at, expires_at) = (rfc3339(now), rfc3339(expires));
        let spec = serde_json::to_string(spec)?;
        let id = transaction(self.c(), |c| {
            let rows = c.query(
                "INSERT INTO probes (id, spec, state, created_at, expires_at, expires_ms, created_by, via)
                 VALUES ('', ?1, 'active', ?2, ?3, ?4, ?5, ?6) RETURNING seq",
                args![&spec, &created_at, &expires_at, unix_ms(expires), created_by, via],
            )?;
            let seq = rows
                .first()
                .ok_or_else(|| StoreError::Column("no probe number".into()))?
                .int(0)?;
            let id = format!("p{seq}");
            c.execute("UPDATE probes SET id = ?1 WHERE seq = ?2", args![&id, seq])?;
            Ok(id)
        })?;
        self.probe(&id)?
            .ok_or_else(|| StoreError::Column(format!("probe {id} vanished")))
    }

    fn probe_row(r: &Row) -> Result<ProbeRow> {
        Ok(ProbeRow {
            id: r.text(0)?,
            spec: r.text(1)?,
            state: r.text(2)?,
            created_at: r.text(3)?,
            expires_at: r.text(4)?,
            created_by: r.text(5)?,
            via: r.text(6)?,
            resumes: r.int(7)?,
        })
    }

    fn build_probe(&mut self, row: ProbeRow) -> Result<Probe> {
        let statuses = self.statuses(&row.id)?;
        let hits = statuses.iter().fold(0u64, |n, s| n.saturating_add(s.hits));
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

    pub fn probe(&mut self, id: &str) -> Result<Option<Probe>> {
        let sql = format!("SELECT {} FROM probes WHERE id = ?1", Self::PROBE_COLUMNS);
        let rows = self.c().query(&sql, args![id])?;
        match rows.first() {
            Some(r) => {
                let row = Self::probe_row(r)?;
                self.build_probe(row).map(Some)
            }
            None => Ok(None),
        }
    }

    pub fn probes(&mut self, all: bool) -> Result<Vec<Probe>> {
        let sql = format!(
            "SELECT {} FROM probes {} ORDER BY seq",
            Self::PROBE_COLUMNS,
            if all { "" } else { "WHERE state = 'active'" }
        );
        let rows = self.c().query(&sql, &[])?;
        let rows: Vec<ProbeRow> = rows.iter().map(Self::probe_row).collect::<Result<_>>()?;
        rows.into_iter().map(|r| self.build_probe(r)).collect()
    }

    /// Moves an active probe to `state`; false when it was not active.
    pub fn end_probe(&mut self, id: &str, state: ProbeLifecycle) -> Result<bool> {
        let name = match state {
            ProbeLifecycle::Removed => "removed",
            ProbeLifecycle::Expired => "expired",
            ProbeLifecycle::Active | ProbeLifecycle::Paused => "active",
        };
        let n = self.c().execute(
            "UPDATE probes SET state = ?2 WHERE id = ?1 AND state = 'active'",
            args![id, name],
        )?;
        Ok(n == 1)
    }

    /// Marks expired the active probes whose time is up, and returns them. One replica at a
    /// time does this (the others get an empty list and try again at their next deadline).
    pub fn expire_due(&mut self, now_ms: i64) -> Result<Vec<String>> {
        transaction(self.c(), |c| {
            if !Self::try_lock(c, EXPIRY_LOCK)? {
                return Ok(Vec::new());
            }
            let rows = c.query(
                "UPDATE probes SET state = 'expired' WHERE state = 'active' AND expires_ms <= ?1
                 RETURNING id",
                args![now_ms],
            )?;
            rows.iter().map(|r| r.text(0)).collect()
        })
    }

    pub fn next_expiry_ms(&mut self) -> Result<Option<i64>> {
        let rows = self.c().query(
            "SELECT MIN(expires_ms) FROM probes WHERE state = 'active'",
            &[],
        )?;
        Ok(rows.first().map(|r| r.opt_int(0)).transpose()?.flatten())
    }

    // ---- instances and states -------------------------------------------------------------

    /// Records an agent's instances (all it has now); the agent's others are marked exited.
    /// Returns whether the set of live instances changed. `stopping`: the agent's last
    /// report, after which its instances are `offline` at once (their processes still run;
    /// nothing watches them).
    pub fn record_instances(
        &mut self,
        agent: &str,
        instances: &[Instance],
        now_ms: i64,
        stopping: bool,
    ) -> Result<bool> {
        let bodies: Vec<String> = instances
            .iter()
            .map(serde_json::to_string)
            .collect::<std::result::Result<_, _>>()?;
        let before = transaction(self.c(), |c| {
            let before = c.query(
                "SELECT id FROM instances WHERE agent = ?1 AND exited = 0 ORDER BY id",
                args![agent],
            )?;
            let before: Vec<String> = before.iter().map(|r| r.text(0)).collect::<Result<_>>()?;
            c.execute(
                "UPDATE instances SET exited = 1 WHERE agent = ?1",
                args![agent],
            )?;
            for (i, body) in instances.iter().zip(&bodies) {
                c.execute(
                    "INSERT INTO instances (id, agent, body, last_seen_ms, exited, agent_stopped)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5)
                     ON CONFLICT(id) DO UPDATE SET agent = ?2, body = ?3, last_seen_ms = ?4,
                        exited = 0, agent_stopped = ?5",
                    args![&i.id, agent, body, now_ms, stopping],
                )?;
            }
            Ok(before)
        })?;
        let mut after: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        after.sort();
        Ok(before != after)
    }

    /// Instances, newest first, with `state` from their agent's last report: `online`,
    /// `offline` (not heard from within `offline_after_ms`) or `exited`.
    pub fn instances(
        &mut self,
        now_ms: i64,
        offline_after_ms: i64,
        with_exited: bool,
    ) -> Result<Vec<Instance>> {
        let rows = self.c().query(
            "SELECT body, last_seen_ms, exited, agent_stopped FROM instances
             ORDER BY last_seen_ms DESC, id",
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let (seen, exited, agent_stopped) = (r.int(1)?, r.int(2)? != 0, r.int(3)? != 0);
            if exited && !with_exited {
                continue;
            }
            let mut i: Instance = serde_json::from_str(&r.text(0)?)?;
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
    pub fn record_statuses(&mut self, agent: &str, statuses: &[StatusReport]) -> Result<()> {
        transaction(self.c(), |c| {
            for s in statuses {
                let before = c.query(
                    "SELECT body, reporter, base_hits, base_dropped, base_errors FROM statuses
                     WHERE probe = ?1 AND instance = ?2",
                    args![&s.probe, &s.status.instance],
                )?;
                let base = match before.first() {
                    Some(r) if r.text(1)? == agent => [r.int(2)?, r.int(3)?, r.int(4)?],
                    Some(r) => {
                        // The stored body holds the previous run's totals, base included.
                        let last: ProbeInstance = serde_json::from_str(&r.text(0)?)?;
                        [last.hits, last.dropped, last.errors]
                            .map(|n| n.min(i64::MAX as u64) as i64)
                    }
                    None => [0; 3],
                };
                let mut status = s.status.clone();
                // Saturating: the counts come from an agent, and a wrapped count is worse.
                status.hits = status.hits.saturating_add(base[0].max(0) as u64);
                status.dropped = status.dropped.saturating_add(base[1].max(0) as u64);
                status.errors = status.errors.saturating_add(base[2].max(0) as u64);
                c.execute(
                    "INSERT INTO statuses (probe, instance, body, reporter, base_hits, base_dropped, base_errors)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(probe, instance) DO UPDATE SET body = ?3, reporter = ?4,
                        base_hits = ?5, base_dropped = ?6, base_errors = ?7",
                    args![
                        &s.probe,
                        &s.status.instance,
                        &serde_json::to_string(&status)?,
                        agent,
                        base[0],
                        base[1],
                        base[2]
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Resumes a live probe: `resumes` goes up (agents reinstall it where it is paused), with a
    /// new overhead budget when given. False when the probe is not live.
    pub fn resume_probe(&mut self, id: &str, budget_ms: Option<u64>) -> Result<bool> {
        transaction(self.c(), |c| {
            let rows = c.query(
                "SELECT spec FROM probes WHERE id = ?1 AND state = 'active'",
                args![id],
            )?;
            let Some(spec) = rows.first() else {
                return Ok(false);
            };
            let mut spec: NewProbe = serde_json::from_str(&spec.text(0)?)?;
            if budget_ms.is_some() {
                spec.budget_ms = budget_ms;
            }
            c.execute(
                "UPDATE probes SET spec = ?2, resumes = resumes + 1 WHERE id = ?1",
                args![id, &serde_json::to_string(&spec)?],
            )?;
            Ok(true)
        })
    }

    pub fn statuses(&mut self, probe: &str) -> Result<Vec<ProbeInstance>> {
        let rows = self.c().query(
            "SELECT body FROM statuses WHERE probe = ?1 ORDER BY instance",
            args![probe],
        )?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.text(0)?)?))
            .collect()
    }

    // ---- audit ----------------------------------------------------------------------------

    pub fn audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.c().execute(
            "INSERT INTO audit (ts, ts_ms, actor, action, target, outcome, remote, via, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                &e.ts,
                parse_rfc3339_ms(&e.ts).unwrap_or_else(now_ms),
                &e.actor,
                &e.action,
                &e.target,
                &e.outcome,
                &e.remote,
                &e.via,
                &e.detail.to_string()
            ],
        )?;
        Ok(())
    }

    pub fn audit_since(&mut self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows = self.c().query(
            "SELECT id, ts, actor, action, target, outcome, remote, via, detail FROM audit
             WHERE ts_ms >= ?1 ORDER BY id LIMIT ?2",
            args![since_ms.unwrap_or(i64::MIN), limit as i64],
        )?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.int(0)?,
                    ts: r.text(1)?,
                    actor: r.text(2)?,
                    action: r.text(3)?,
                    target: r.text(4)?,
                    outcome: r.text(5)?,
                    remote: r.text(6)?,
                    via: r.text(7)?,
                    detail: serde_json::from_str(&r.text(8)?).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
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
    use periscope_core::event::Event;
    use serde_json::json;

    fn temp_store(name: &str) -> Store {
        let dir =
            std::env::temp_dir().join(format!("periscope-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Store::open_sqlite(&dir.join("p.db")).unwrap()
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
        s.insert_events(None, batch).unwrap();
        let cutoff = parse_rfc3339_ms("2021-01-01T00:00:00Z").unwrap();
        let dropped = s.prune_events(cutoff, i64::MAX).unwrap();
        assert_eq!(dropped, 2, "the two old events go by age");
        let (_, bytes) = s.event_totals().unwrap();
        let limit = bytes / 2;
        s.prune_events(cutoff, limit).unwrap();
        let (_, left) = s.event_totals().unwrap();
        assert!(left <= limit, "{left} > {limit}");
        // The newest are kept: the last sequence number is still there.
        let last = s.events(Some("p1"), 3001, None, 10).unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].seq, 3002);
    }

    #[test]
    fn the_audit_log_refuses_changes_and_deletions() {
        let mut s = temp_store("audit");
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
        let upd = s.conn.execute("UPDATE audit SET actor = 'mallory'", &[]);
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = s.conn.execute("DELETE FROM audit", &[]);
        assert!(del.unwrap_err().to_string().contains("append-only"));
        assert_eq!(s.audit_since(None, 10).unwrap()[0].actor, "admin");
    }
}
