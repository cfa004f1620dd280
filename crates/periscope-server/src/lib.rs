//! Periscope's control plane. It keeps the desired probes, tells each agent which of them
//! apply to its instances, stores the events agents send, streams them live, and guards all
//! of it with bearer tokens and an append-only audit log.
//!
//! Layout: [`store`] (SQLite or PostgreSQL), [`auth`] (tokens, roles, the audit helper),
//! [`routes`] (the HTTP API), [`peers`] (replicas sharing one PostgreSQL database). The store
//! is reached only through blocking tasks, never from async workers.

pub mod agents;
pub mod auth;
pub mod code;
pub mod console;
pub mod events;
mod kinds;
pub mod openapi;
pub mod peers;
pub mod request;
pub mod routes;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod verdicts;

use auth::TokenTable;
use periscope_core::api::AuditEntry;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use store::{Database, DbLocation, Store, StoreError, StoredEvent};
use tokio::sync::{broadcast, watch, Notify};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The SQLite file or the PostgreSQL database.
    pub db: DbLocation,
    /// Where the first start writes the admin token: by default `admin.token` beside the
    /// SQLite file, or in the working directory with PostgreSQL.
    pub admin_token_file: Option<PathBuf>,
    /// The first admin token, given (from a Kubernetes Secret, say) rather than made: used
    /// when the database has no token yet; no file is written then.
    pub admin_token: Option<String>,
    /// Events older than this are deleted.
    pub retention: Duration,
    /// Event bodies beyond this many bytes are deleted, oldest first.
    pub max_event_bytes: u64,
    /// An instance whose agent has not reported for this long is shown `offline` (agents
    /// report at least every 5 s; one that stops says so and its instances go offline at once).
    pub offline_after: Duration,
    /// Probes placed over MCP: default time to live, and how many one token may hold.
    pub mcp_ttl: Duration,
    pub mcp_max_probes: usize,
    /// HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Export every event over OTLP.
    pub otlp: Option<periscope_export::otlp::OtlpConfig>,
    /// Export every event to a JSON-lines file: path, rotation size, rotated files kept.
    pub jsonl: Option<(PathBuf, u64, usize)>,
    /// How long a code view waits for the instance's agent to answer (indexing a large
    /// binary takes seconds).
    pub code_wait: Duration,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, db: impl Into<DbLocation>) -> ServerConfig {
        ServerConfig {
            listen,
            db: db.into(),
            admin_token_file: None,
            admin_token: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_event_bytes: 1 << 30,
            offline_after: Duration::from_secs(15),
            mcp_ttl: Duration::from_secs(15 * 60),
            mcp_max_probes: 10,
            tls: None,
            otlp: None,
            jsonl: None,
            code_wait: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    // `error`, not `source`: the message already says it, and a source would be said twice.
    #[error("cannot open the database {db}: {error}")]
    Open { db: String, error: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Jsonl(#[from] periscope_export::jsonl::JsonlError),
}

/// Counters shown by `/api/v1/status`.
#[derive(Default)]
pub struct Stats {
    pub events_ingested: AtomicU64,
    /// Events agents reported dropping (their buffers were full while the server was away).
    pub agent_dropped: AtomicU64,
    pub reports: AtomicU64,
}

pub struct AppState {
    pub store: Database,
    /// Set with PostgreSQL: the other replicas sharing the database.
    pub peers: OnceLock<peers::Peers>,
    pub tokens: TokenTable,
    /// Bumped whenever probes or instances change; agents wait on it for their next desired
    /// state.
    pub version: watch::Sender<u64>,
    pub events: broadcast::Sender<Arc<StoredEvent>>,
    /// Woken when a probe is added, so the expiry task recomputes its next deadline.
    pub expiry_changed: Notify,
    /// Woken when agents report probe states (for callers waiting for a probe to settle).
    pub status_changed: Notify,
    /// Bumped when a code request is stored (here or on another replica): agents' polls
    /// look for theirs.
    pub code_requested: watch::Sender<u64>,
    /// Bumped when an agent answers a code request: the code views waiting look for theirs.
    pub code_answered: watch::Sender<u64>,
    pub config: ServerConfig,
    pub stats: Stats,
    pub exports: Exports,
    /// Set once the server is asked to stop: open streams and long polls end on it, so no
    /// client can hold a stopping server up.
    pub stopping: watch::Sender<bool>,
}

/// Where events go besides the store.
pub struct Exports {
    pub otlp: Mutex<Option<periscope_export::otlp::OtlpExporter>>,
    pub otlp_stats: Option<Arc<periscope_export::otlp::ExportStats>>,
    /// Written under the store's lock, in `seq` order (see [`ingest`]).
    pub jsonl: Option<Mutex<periscope_export::jsonl::JsonlWriter>>,
    /// The instances agents reported, for the OTLP resource of their events.
    pub instances: Mutex<std::collections::HashMap<String, periscope_core::api::Instance>>,
}

impl AppState {
    pub fn bump_version(&self) {
        self.version.send_modify(|v| *v += 1);
        self.announce(peers::Change::Version);
    }

    /// Tells the other replicas (if any) what this one changed.
    pub fn announce(&self, change: peers::Change) {
        if let Some(p) = self.peers.get() {
            p.announce(change);
        }
    }

    /// Completes once the server is stopping.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// How long a stopping server lets requests in flight finish before it closes their
/// connections anyway (a request blocked on the store still ends on its own).
const STOP_GRACE: Duration = Duration::from_millis(500);

/// What the server did on start, for the caller to print.
pub struct Started {
    pub addr: SocketAddr,
    /// Set on the first start: where the admin token was written.
    pub admin_token_file: Option<PathBuf>,
}

/// Opens the store (creating the first admin token if there is none) and binds the listener.
/// `serve` then runs until the future `shutdown` completes.
pub async fn start(
    config: ServerConfig,
) -> Result<(Arc<AppState>, tokio::net::TcpListener, Started), ServerError> {
    if let Some((cert, key)) = &config.tls {
        tls::acceptor(cert, key).map_err(ServerError::Tls)?;
    }
    // Opening the database (connecting, migrating, the first token, catching up the export
    // file) is blocking work: off the async workers.
    let opening = config.clone();
    let (store, tokens, admin_token_file, jsonl) =
        tokio::task::spawn_blocking(move || open_store(&opening))
            .await
            .map_err(|e| ServerError::Store(StoreError::Task(e.to_string())))??;
    let otlp = config
        .otlp
        .clone()
        .map(periscope_export::otlp::OtlpExporter::start);
    let exports = Exports {
        otlp_stats: otlp.as_ref().map(|o| o.stats.clone()),
        otlp: Mutex::new(otlp),
        jsonl,
        instances: Mutex::new(Default::default()),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let (version, _) = watch::channel(1u64);
    let (events, _) = broadcast::channel(16 * 1024);
    let postgres = store.postgres_url().map(str::to_string);
    let state = Arc::new(AppState {
        store,
        peers: OnceLock::new(),
        tokens,
        version,
        events,
        expiry_changed: Notify::new(),
        status_changed: Notify::new(),
        code_requested: watch::channel(0).0,
        code_answered: watch::channel(0).0,
        config,
        stats: Stats::default(),
        exports,
        stopping: watch::channel(false).0,
    });
    if let Some(url) = postgres {
        let replica = auth::new_token()
            .map(|t| t[4..12].to_string())
            .unwrap_or_else(|_| std::process::id().to_string());
        peers::Peers::start(&state, &url, replica).map_err(ServerError::Serve)?;
    }
    Ok((
        state,
        listener,
        Started {
            addr,
            admin_token_file,
        },
    ))
}

/// Serves the API and runs the background tasks (expiry, retention) until `shutdown`. With a
/// certificate and key in the config, over HTTPS.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    tokio::spawn(expire_probes(state.clone()));
    tokio::spawn(retain_events(state.clone()));
    let app = router.into_make_service_with_connect_info::<tls::Peer>();
    let signal = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.stopping.send_replace(true);
        }
    };
    let serving: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match &state.config.tls {
            Some((cert, key)) => {
                let acceptor = tls::acceptor(cert, key).map_err(ServerError::Tls)?;
                let listener =
                    tls::TlsListener::new(listener, acceptor).map_err(ServerError::Serve)?;
                Box::pin(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
            None => Box::pin(
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .into_future(),
            ),
        };
    // Graceful shutdown waits for every connection to close, and an idle keep-alive
    // connection or a client that never reads would hold it for ever: past the grace period
    // the remaining connections are dropped with the serve future.
    tokio::select! {
        r = serving => r.map_err(ServerError::Serve),
        _ = async {
            state.stopped().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => Ok(()),
    }
}

type Opened = (
    Database,
    TokenTable,
    Option<PathBuf>,
    Option<Mutex<periscope_export::jsonl::JsonlWriter>>,
);

/// Opens the store, makes the first admin token if there is none, loads the token table, and
/// opens the JSON-lines export (writing what was stored but not yet exported).
fn open_store(config: &ServerConfig) -> Result<Opened, ServerError> {
    let store = Database::open(&config.db).map_err(|error| ServerError::Open {
        db: config.db.shown(),
        error,
    })?;
    let token_file = admin_token_path(config);
    let given = config.admin_token.as_deref();
    let admin_token_file = store.with(|s| Ok(auth::bootstrap_admin(s, &token_file, given)))??;
    let tokens = store.with(TokenTable::load)?;
    let jsonl = match &config.jsonl {
        Some((path, max, keep)) => {
            let mut w = periscope_export::jsonl::JsonlWriter::open(path, *max, *keep)?;
            // Events stored but not yet written (the server died in between) go out now.
            loop {
                let after = w.last_seq();
                let page = store.with(|s| s.events(None, after, None, 10_000))?;
                for e in &page {
                    w.append(e.seq, &e.body)?;
                }
                if page.len() < 10_000 {
                    break;
                }
            }
            Some(Mutex::new(w))
        }
        None => None,
    };
    Ok((store, tokens, admin_token_file, jsonl))
}

/// Where the first start writes the admin token.
fn admin_token_path(config: &ServerConfig) -> PathBuf {
    if let Some(p) = &config.admin_token_file {
        return p.clone();
    }
    match &config.db {
        DbLocation::File(db) => db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join("admin.token"),
        DbLocation::Postgres(_) => PathBuf::from("admin.token"),
    }
}

/// Runs a store operation on the blocking pool.
pub async fn db<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.store.with(f))
        .await
        .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())))
}

/// Marks probes expired when their time is up. Sleeps until the next deadline, or until a
/// probe is added (which may bring the deadline closer).
async fn expire_probes(state: Arc<AppState>) {
    loop {
        let now = store::now_ms();
        let due = db(&state, move |s| s.expire_due(now))
            .await
            .unwrap_or_default();
        for id in due {
            auth::record(
                &state,
                AuditEntry {
                    id: 0,
                    ts: periscope_core::event::now_rfc3339(),
                    actor: "system".into(),
                    action: "probe.expire".into(),
                    target: id,
                    outcome: "ok".into(),
                    remote: String::new(),
                    via: "server".into(),
                    detail: serde_json::json!({"reason": "ttl"}),
                },
            )
            .await;
            state.bump_version();
        }
        let next = db(&state, |s| s.next_expiry_ms()).await.ok().flatten();
        // A deadline already past is another replica's to handle right now (it holds the
        // expiry lock): look again shortly rather than spin.
        let wait = next
            .map(|t| Duration::from_millis((t - store::now_ms()).clamp(50, 3_600_000) as u64))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.expiry_changed.notified() => {}
        }
    }
}

/// Applies event retention (age and size) once a minute.
async fn retain_events(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let before = store::now_ms() - state.config.retention.as_millis() as i64;
        let max = state.config.max_event_bytes.min(i64::MAX as u64) as i64;
        let _ = db(&state, move |s| s.prune_events(before, max)).await;
    }
}

/// Stores a batch of events, writes them to the JSON-lines export (under the store's lock, so
/// the file is in `seq` order), queues them for OTLP, and publishes them to live subscribers.
pub async fn ingest(
    state: &Arc<AppState>,
    run: Option<String>,
    events: Vec<periscope_core::event::Event>,
) -> Result<usize, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let st = state.clone();
    // The file is written inside the store task, under its lock: in `seq` order.
    let stored = db(state, move |store| {
        let stored = store.insert_events(run.as_deref(), events)?.stored;
        if let Some(j) = &st.exports.jsonl {
            let mut j = j.lock().unwrap_or_else(|p| p.into_inner());
            for e in &stored {
                if let Err(err) = j.append(e.seq, &e.body) {
                    eprintln!("periscope server: {err}");
                    break;
                }
            }
        }
        Ok(stored)
    })
    .await?;
    // Exported as stored: an event an agent sent twice goes out once.
    let otlp_copy = state.exports.otlp_stats.is_some().then(|| {
        stored
            .iter()
            .filter_map(|e| serde_json::from_str::<periscope_core::event::Event>(&e.body).ok())
            .collect::<Vec<_>>()
    });
    if let Some(copies) = otlp_copy {
        let otlp = state.exports.otlp.lock().unwrap_or_else(|p| p.into_inner());
        let instances = state
            .exports
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(o) = otlp.as_ref() {
            for e in &copies {
                if let Some(i) = instances.get(&e.instance) {
                    o.submit(i, e);
                }
            }
        }
    }
    let n = stored.len();
    state
        .stats
        .events_ingested
        .fetch_add(n as u64, Ordering::Relaxed);
    match state.peers.get() {
        // In `seq` order with the other replicas' events: see `peers`.
        Some(peers) => peers.stored(stored),
        None => {
            for e in stored {
                let _ = state.events.send(Arc::new(e));
            }
        }
    }
    Ok(n)
}

/// Flushes the exporters (OTLP gets up to `wait`); call when the server stops.
pub fn flush_exports(state: &AppState, wait: Duration) {
    let otlp = state
        .exports
        .otlp
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(o) = otlp {
        o.shutdown(wait);
    }
}
