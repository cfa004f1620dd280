//! The daemons: `server` (the control plane), `agent` (next to the processes) and `mcp` (for AI
//! agents, on a server or in local mode on a pid), and the flags they share.

use crate::remote::{config_file, Remote};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use periscope_client::Client;
use std::path::PathBuf;
use std::time::Duration;

/// `--tag K=V` flags as a map.
fn parse_tags(tags: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("bad --tag `{t}`: expected KEY=VALUE, e.g. service=ledger"))
        })
        .collect()
}

/// Waits for SIGINT, SIGTERM or SIGHUP (blocked in every thread by `block_signals`).
fn wait_for_signal() -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.wait().ok()
}

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on (only this machine by default).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: std::net::SocketAddr,
    /// The database: a SQLite file (created if missing), or a PostgreSQL URL
    /// (postgres://USER:PASS@HOST:PORT/DB) that any number of server replicas share.
    #[arg(
        long,
        default_value = "periscope.db",
        env = "PERISCOPE_DB",
        hide_env_values = true
    )]
    db: String,
    /// Where the first start writes the admin token (mode 0600); default: admin.token beside
    /// the SQLite file, or in the working directory with PostgreSQL.
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// The first admin token to use instead of making one (psk_ + 40 hex digits), when the
    /// database has none yet: for deployments that keep it in a secret store.
    #[arg(
        long,
        env = "PERISCOPE_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
    /// Delete events older than this.
    #[arg(long, default_value = "7d", value_parser = super::parse_duration)]
    retention: Duration,
    /// Keep at most this many bytes of events (oldest deleted first).
    #[arg(long, default_value_t = 1 << 30)]
    max_event_bytes: u64,
    /// Default time to live of probes placed over MCP.
    #[arg(long, default_value = "15m", value_parser = super::parse_duration)]
    mcp_ttl: Duration,
    /// How many probes one token may hold over MCP.
    #[arg(long, default_value_t = 10)]
    mcp_max_probes: usize,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    otlp: OtlpArgs,
    /// Also write every event to this JSON-lines file (rotated by size).
    #[arg(long, value_name = "PATH")]
    export_jsonl: Option<PathBuf>,
    /// Rotate the JSON-lines file at this size.
    #[arg(long, default_value_t = 100 << 20)]
    export_jsonl_max_bytes: u64,
    /// Rotated JSON-lines files kept (PATH.1 … PATH.N).
    #[arg(long, default_value_t = 10)]
    export_jsonl_keep: usize,
    /// How long a code view (source listing, probe check, function and message lookups)
    /// waits for the instance's agent to read the binary and answer.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    code_timeout: Duration,
}

/// OTLP export, as `OTEL_EXPORTER_OTLP_*` users know it (the variables are honoured too).
#[derive(Args, Clone, Default)]
pub struct OtlpArgs {
    /// Base URL of an OpenTelemetry collector (like OTEL_EXPORTER_OTLP_ENDPOINT; over HTTP
    /// /v1/logs and /v1/metrics are appended).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// grpc or http (http/protobuf); default OTEL_EXPORTER_OTLP_PROTOCOL, else http.
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<periscope_export::otlp::Protocol>,
    /// A header for every export request (repeatable), e.g. --otlp-header api-key=SECRET.
    #[arg(long = "otlp-header", value_name = "K=V")]
    pub otlp_headers: Vec<String>,
}

impl OtlpArgs {
    pub fn config(&self) -> Result<Option<periscope_export::otlp::OtlpConfig>> {
        periscope_export::otlp::OtlpConfig::resolve(
            self.otlp_endpoint.clone(),
            self.otlp_protocol,
            &self.otlp_headers,
        )
        .map_err(|e| anyhow!(e))
    }
}

pub fn server(args: ServerArgs) -> Result<()> {
    let mut config = periscope_server::ServerConfig::new(
        args.listen,
        periscope_server::store::DbLocation::parse(&args.db),
    );
    config.admin_token_file = args.admin_token_file;
    if let Some(t) = &args.admin_token {
        if !periscope_server::auth::well_formed(t) {
            bail!("--admin-token (PERISCOPE_ADMIN_TOKEN) must be psk_ and 40 hex digits, as `echo psk_$(openssl rand -hex 20)` makes; got {} characters", t.len());
        }
    }
    config.admin_token = args.admin_token;
    config.retention = args.retention;
    config.max_event_bytes = args.max_event_bytes;
    config.mcp_ttl = args.mcp_ttl;
    config.mcp_max_probes = args.mcp_max_probes;
    config.code_wait = args.code_timeout;
    let tls_cert = match &args.tls_cert {
        Some(c) => Some(
            std::fs::read(c).with_context(|| format!("cannot read --tls-cert {}", c.display()))?,
        ),
        None => None,
    };
    config.tls = args.tls_cert.zip(args.tls_key);
    config.otlp = args.otlp.config()?;
    config.jsonl = args
        .export_jsonl
        .map(|p| (p, args.export_jsonl_max_bytes, args.export_jsonl_keep));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (state, listener, started) = periscope_server::start(config).await?;
        if let Some(path) = &started.admin_token_file {
            eprintln!(
                "periscope server: first start; the admin token is in {} (mode 0600)",
                path.display()
            );
        }
        let scheme = if tls_cert.is_some() { "https" } else { "http" };
        eprintln!("periscope server: listening on {scheme}://{}", started.addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            wait_for_signal();
            let _ = tx.send(());
        });
        let router = with_mcp(state.clone(), started.addr, tls_cert);
        periscope_server::serve(state.clone(), listener, router, async move {
            let _ = rx.await;
        })
        .await?;
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            periscope_server::flush_exports(&st, Duration::from_secs(5))
        })
        .await;
        eprintln!("periscope server: stopped");
        Ok::<(), anyhow::Error>(())
    })
}

/// The API plus MCP over streamable HTTP at `/mcp` (tools call the API on this same server
/// with each request's token).
fn with_mcp(
    state: std::sync::Arc<periscope_server::AppState>,
    addr: std::net::SocketAddr,
    tls_cert: Option<Vec<u8>>,
) -> axum::Router {
    let loopback = addr.ip().is_loopback();
    let port = addr.port();
    let scheme = if tls_cert.is_some() { "https" } else { "http" };
    let base = if addr.ip().is_unspecified() || loopback {
        format!("{scheme}://127.0.0.1:{port}")
    } else {
        format!("{scheme}://{addr}")
    };
    let mcp = axum::Router::new()
        .nest_service(
            "/mcp",
            periscope_mcp::http_service(base, tls_cert, !loopback),
        )
        // Only on /mcp itself: a layer would also guard the merged router's fallback, and
        // every unknown path (a browser's /favicon.ico) was audited as a denied MCP connect.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            periscope_server::routes::require_token,
        ));
    periscope_server::routes::router(state).merge(mcp)
}

#[derive(Args)]
pub struct McpArgs {
    /// Local mode (no --server): watch this process (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Local mode: watch every process of this executable name (repeatable).
    #[arg(long = "exe", value_name = "NAME")]
    exes: Vec<String>,
    /// Local mode: a tag for the watched processes (repeatable), e.g. service=ledger.
    #[arg(long = "tag", value_name = "K=V")]
    tags: Vec<String>,
}

/// `periscope mcp`: MCP over stdio. With a server, the tools use it with the given token;
/// without one (local mode), an embedded server and agent watch the given processes.
pub fn mcp(remote: &Remote, args: McpArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // MCP clients stop their server with SIGTERM (then SIGKILL): end on it, or on stdin's end.
    let (signalled_tx, signalled) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        wait_for_signal();
        let _ = signalled_tx.send(true);
    });
    let until_signal = |work| until_signalled(work, signalled.clone());
    let has_server = remote.server.is_some() || config_file().is_some_and(|f| f.server.is_some());
    if has_server {
        let client = remote.client("mcp")?;
        let served = runtime.block_on(until_signal(periscope_mcp::serve_stdio(client)));
        // The stdin reader is a blocking read that only input or EOF ends; dropping the
        // runtime would wait for it.
        runtime.shutdown_background();
        return served.map_err(Into::into);
    }
    if args.pids.is_empty() && args.exes.is_empty() {
        bail!("local mode needs processes to watch: --pid PID or --exe NAME (or give --server URL --token TOKEN)");
    }
    let dir = std::env::temp_dir().join(format!("periscope-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = runtime.block_on(async {
        let config = periscope_server::ServerConfig::new(
            "127.0.0.1:0".parse().expect("address"),
            dir.join("periscope.db"),
        );
        let (state, listener, started) = periscope_server::start(config).await?;
        let admin = std::fs::read_to_string(dir.join("admin.token"))?
            .trim()
            .to_string();
        let url = format!("http://{}", started.addr);
        let router = periscope_server::routes::router(state.clone());
        let state_version = state.version.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(periscope_server::serve(state, listener, router, async {
            let _ = stop_rx.await;
        }));
        let mut agent = periscope_agent::AgentConfig::new(
            &url,
            &admin,
            periscope_agent::discover::Selection {
                pids: args.pids,
                exes: args.exes,
            },
        );
        agent.tags = parse_tags(&args.tags)?;
        agent.count_interval = Duration::from_secs(2);
        let (agent_stop, agent_rx) = std::sync::mpsc::channel();
        let mut version = state_version.subscribe();
        let before = *version.borrow();
        let agent_thread = std::thread::spawn(move || periscope_agent::run(agent, agent_rx));
        // Serve once the agent has reported its processes, so the first list_instances sees them.
        let _ = until_signalled(
            async {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    version.wait_for(|v| *v != before),
                )
                .await;
                Ok::<(), ()>(())
            },
            signalled.clone(),
        )
        .await;
        let served = until_signal(periscope_mcp::serve_stdio(Client::new(
            &url,
            Some(admin),
            "mcp",
        )))
        .await;
        let _ = agent_stop.send(());
        let _ = tokio::task::spawn_blocking(move || agent_thread.join()).await;
        let _ = stop_tx.send(());
        let _ = server.await;
        served.map_err(anyhow::Error::from)
    });
    runtime.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs `work` until it ends or the watched flag is set (a stop signal came): then Ok.
async fn until_signalled<E>(
    work: impl std::future::Future<Output = Result<(), E>>,
    mut signalled: tokio::sync::watch::Receiver<bool>,
) -> Result<(), E> {
    tokio::select! {
        r = work => r,
        _ = signalled.wait_for(|s| *s) => Ok(()),
    }
}

#[derive(Args)]
pub struct AgentArgs {
    /// Attach to this process (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Attach to every process running an executable of this name, including later ones
    /// (repeatable).
    #[arg(long = "exe", value_name = "NAME")]
    exes: Vec<String>,
    /// A tag for this agent's instances (repeatable), e.g. --tag service=ledger.
    #[arg(long = "tag", value_name = "K=V")]
    tags: Vec<String>,
    /// Host name to report (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Events kept while the server cannot be reached (the oldest are dropped first).
    #[arg(long, default_value_t = 10_000)]
    buffer: usize,
    /// How often counters are reported.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    count_interval: Duration,
    /// How often new processes are looked for (with --exe).
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    scan_interval: Duration,
    /// Also redact names matching this regular expression (repeatable).
    #[arg(long = "redact", value_name = "REGEX")]
    redact: Vec<String>,
}

pub fn agent(remote: &Remote, args: AgentArgs) -> Result<()> {
    if args.pids.is_empty() && args.exes.is_empty() {
        bail!("say what to watch: --pid PID or --exe NAME (both repeatable)");
    }
    let servers = remote.server()?;
    // --token, then PERISCOPE_TOKEN (clap reads it into the flag), then the config file.
    let token = match remote.token.clone() {
        Some(t) => t,
        None => config_file()
            .and_then(|f| f.token)
            .context("the agent needs a token of role agent: --token TOKEN (periscope token create --role agent --name NAME)")?,
    };
    let mut config = periscope_agent::AgentConfig::new(
        &servers,
        &token,
        periscope_agent::discover::Selection {
            pids: args.pids,
            exes: args.exes,
        },
    );
    config.tags = parse_tags(&args.tags)?;
    if let Some(h) = args.host {
        config.id = format!("{h}-agent-{}", std::process::id());
        config.host = h;
    }
    config.buffer = args.buffer;
    config.count_interval = args.count_interval;
    config.scan_interval = args.scan_interval;
    config.redactor = periscope_core::redact::Redactor::new(&args.redact)?;
    config.ca_cert = remote.ca_pem()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        wait_for_signal();
        let _ = tx.send(());
    });
    eprintln!(
        "periscope agent: {} reporting to {}",
        config.id,
        config.servers.join(", ")
    );
    periscope_agent::run(config, rx)?;
    Ok(())
}
