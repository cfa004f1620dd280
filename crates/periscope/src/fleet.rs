//! Commands that talk to a Periscope server: probes across a fleet, live and stored events,
//! instances, tokens and the audit log; and the two daemons, `server` and `agent`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use periscope_client::{Client, EventQuery};
use periscope_core::api::{NewProbe, NewToken, Probe, ProbeKind, Role};
use periscope_core::render;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server is and which token to use: flags, then `PERISCOPE_SERVER` /
/// `PERISCOPE_TOKEN`, then the config file (`$PERISCOPE_CONFIG`, or
/// `~/.config/periscope/config.toml` with `server = "…"` and `token = "…"`).
#[derive(Args, Clone)]
pub struct Remote {
    /// Server URL, e.g. http://127.0.0.1:7700 (for `agent`: several replicas' URLs,
    /// separated by commas; the agent uses one and moves to the next when it fails).
    #[arg(long, env = "PERISCOPE_SERVER", global = true)]
    server: Option<String>,
    /// API token (`periscope token create` makes one).
    #[arg(long, env = "PERISCOPE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate(s) to trust for an HTTPS server with a private CA or self-signed
    /// certificate.
    #[arg(long, env = "PERISCOPE_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

impl Remote {
    /// The server URL(s) as given: flag, environment, or config file.
    fn server(&self) -> Result<String> {
        self.server
            .clone()
            .or_else(|| config_file().and_then(|f| f.server))
            .ok_or_else(|| {
                anyhow!("no server given: use --server URL, PERISCOPE_SERVER, or `server = \"URL\"` in {}", config_path().display())
            })
    }

    pub fn client(&self, via: &str) -> Result<Client> {
        let server = self.server()?;
        if server.contains(',') {
            bail!("--server takes one URL here (a list of replicas is for `periscope agent`): {server}");
        }
        let token = self
            .token
            .clone()
            .or_else(|| config_file().and_then(|f| f.token));
        let ca = self.ca_pem()?;
        Ok(Client::with_ca(&server, token, via, ca.as_deref())?)
    }

    fn ca_pem(&self) -> Result<Option<Vec<u8>>> {
        let path = self
            .ca_cert
            .clone()
            .or_else(|| config_file().and_then(|f| f.ca_cert));
        path.map(|p| {
            std::fs::read(&p).with_context(|| format!("cannot read --ca-cert {}", p.display()))
        })
        .transpose()
    }
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PERISCOPE_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("periscope").join("config.toml")
}

fn config_file() -> Option<ConfigFile> {
    let text = std::fs::read_to_string(config_path()).ok()?;
    match toml::from_str(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("periscope: ignoring {}: {e}", config_path().display());
            None
        }
    }
}

// Built once per run by clap: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ProbeCommand {
    /// Place a probe on every instance TARGET selects.
    Add {
        /// log, snapshot, count, duration, gauge, failures or verify.
        kind: ProbeKind,
        /// Tags such as service=ledger (several: service=ledger,host=web-3) or an instance id.
        target: String,
        /// FILE:LINE or a function name (a duration: the function).
        location: String,
        /// Log: the message with expressions in braces ("total={total}"); gauge: the numeric
        /// expression to sample ("queue.len()").
        #[arg(value_name = "TEMPLATE|EXPR")]
        text: Option<String>,
        /// Only hits where this condition holds.
        #[arg(long = "if", value_name = "EXPR")]
        condition: Option<String>,
        /// Remove the probe after this long (default 1h).
        #[arg(long, value_parser = super::parse_duration)]
        ttl: Option<Duration>,
        /// Hits per instance, after which the probe comes out there.
        #[arg(long)]
        max_hits: Option<u64>,
        /// Captured hits per second per instance (default: logs 1000, snapshots 1).
        #[arg(long)]
        rate: Option<f64>,
        /// Snapshot: an extra expression to capture (repeatable).
        #[arg(long = "watch", value_name = "EXPR")]
        watch: Vec<String>,
        /// Count, duration, gauge: group by the value of this expression.
        #[arg(long)]
        by: Option<String>,
        /// Snapshot: frames whose variables are captured.
        #[arg(long)]
        frames: Option<usize>,
        /// Overhead budget: milliseconds of the target's time per 10 s (default 100).
        #[arg(long)]
        budget_ms: Option<u64>,
        /// Verify: the failure, as a condition at the location.
        #[arg(long, value_name = "EXPR")]
        failure: Option<String>,
        /// Verify: a candidate fix, `NAME: VAR = EXPR[; VAR = EXPR]` (repeatable).
        #[arg(long = "fix", value_name = "FIX")]
        fixes: Vec<String>,
        /// Verify: a result that must not change where nothing failed (repeatable).
        #[arg(long, value_name = "EXPR")]
        keep: Vec<String>,
        /// Verify, replay mode: FROM..UNTIL (the computation run in a copy of each process).
        #[arg(long, value_name = "FROM..UNTIL")]
        replay: Option<String>,
        /// Where it runs on each instance: auto (the kernel when it can, else ptrace), bpf or
        /// ptrace.
        #[arg(long, value_name = "auto|bpf|ptrace")]
        engine: Option<periscope_core::api::Engine>,
        #[arg(long)]
        json: bool,
    },
    /// List probes (active ones; --all for removed and expired too).
    Ls {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// A probe and its state on each instance.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume a probe where its overhead budget paused it.
    Resume {
        id: String,
        /// A new overhead budget: milliseconds of the target's time per 10 s window (the
        /// default is 100, 1% of one core).
        #[arg(long, value_name = "N")]
        budget_ms: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a probe everywhere.
    Rm {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints the token alone on stdout (it is not shown again).
    Create {
        #[arg(long)]
        role: Role,
        #[arg(long)]
        name: String,
    },
    /// List tokens (names and roles, never the secrets).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(v)?)?;
    Ok(())
}

pub fn probe(remote: &Remote, cmd: ProbeCommand) -> Result<()> {
    let client = remote.client("cli")?;
    match cmd {
        ProbeCommand::Add {
            kind,
            target,
            location,
            text,
            condition,
            ttl,
            max_hits,
            rate,
            watch,
            by,
            frames,
            budget_ms,
            failure,
            fixes,
            keep,
            replay,
            engine,
            json,
        } => {
            // The positional text is a gauge's value, any other kind's template (the server
            // says when a kind takes neither).
            let (template, value) = match kind {
                ProbeKind::Gauge => (None, text),
                _ => (text, None),
            };
            let spec = NewProbe {
                kind,
                target,
                location,
                template,
                condition,
                watch,
                by,
                value,
                ttl_seconds: ttl.map(|d| d.as_secs().max(1)),
                max_hits,
                rate_limit: rate,
                frames,
                budget_ms,
                failure,
                fixes,
                keep,
                replay,
                engine,
            };
            let p = client.add_probe(&spec)?;
            if json {
                return print_json(&p);
            }
            println!(
                "{}: {} probe at {} on {} (expires {})",
                p.id,
                p.spec.kind.as_str(),
                p.spec.location,
                p.spec.target,
                p.expires_at
            );
            if p.instances.is_empty() {
                println!(
                    "  no instance matches {} yet; it applies to matching instances as they appear",
                    p.spec.target
                );
            }
            print_instances_of(&p);
            Ok(())
        }
        ProbeCommand::Ls { all, json } => {
            let probes = client.probes(all)?;
            if json {
                return print_json(&serde_json::json!({ "probes": probes }));
            }
            println!(
                "{:<6} {:<9} {:<24} {:<24} {:<8} {:>8}  EXPIRES",
                "ID", "KIND", "TARGET", "LOCATION", "STATE", "HITS"
            );
            for p in &probes {
                println!(
                    "{:<6} {:<9} {:<24} {:<24} {:<8} {:>8}  {}",
                    p.id,
                    p.spec.kind.as_str(),
                    p.spec.target,
                    p.spec.location,
                    p.state.as_str(),
                    p.hits,
                    p.expires_at
                );
            }
            for p in probes.iter().filter(|p| p.paused_reason.is_some()) {
                println!(
                    "{} is paused {}; `periscope probe resume {}` puts it back",
                    p.id,
                    p.paused_reason.as_deref().unwrap_or_default(),
                    p.id
                );
            }
            Ok(())
        }
        ProbeCommand::Show { id, json } => {
            let p = client.probe(&id)?;
            if json {
                return print_json(&p);
            }
            println!("{}  {} at {}", p.id, p.spec.kind.as_str(), p.spec.location);
            println!("  target:   {}", p.spec.target);
            if let Some(t) = &p.spec.template {
                println!("  template: {t}");
            }
            if let Some(v) = &p.spec.value {
                println!("  value:    {v}");
            }
            if let Some(b) = &p.spec.by {
                println!("  by:       {b}");
            }
            if let Some(c) = &p.spec.condition {
                println!("  if:       {c}");
            }
            println!(
                "  state:    {}  (created {} by {} via {}; expires {})",
                p.state.as_str(),
                p.created_at,
                p.created_by,
                p.via,
                p.expires_at
            );
            if let Some(why) = &p.paused_reason {
                println!(
                    "  paused:   {why}; `periscope probe resume {}` puts it back",
                    p.id
                );
            }
            println!("  hits:     {}", p.hits);
            print_instances_of(&p);
            if p.spec.kind == ProbeKind::Verify {
                let result = client.verify_result(&p.id)?;
                let candidates: Vec<periscope_core::verify::CandidateResult> =
                    serde_json::from_value(result["candidates"].clone())?;
                let hits = result["hits"].as_u64().unwrap_or(0);
                crate::verify::print_table(&mut std::io::stdout().lock(), hits, &candidates)?;
            }
            Ok(())
        }
        ProbeCommand::Resume {
            id,
            budget_ms,
            json,
        } => {
            let p = client.resume_probe(&id, budget_ms)?;
            if json {
                return print_json(&p);
            }
            match budget_ms {
                Some(b) => println!("{}: resumed with a budget of {b} ms per 10 s", p.id),
                None => println!("{}: resumed", p.id),
            }
            print_instances_of(&p);
            Ok(())
        }
        ProbeCommand::Rm { id, json } => {
            let p = client.remove_probe(&id)?;
            if json {
                return print_json(&p);
            }
            println!("{}: {}", p.id, p.state.as_str());
            Ok(())
        }
    }
}

fn print_instances_of(p: &Probe) {
    if p.instances.is_empty() {
        return;
    }
    println!(
        "  {:<28} {:<10} {:>8} {:>8} {:>7}  LAST ERROR",
        "INSTANCE", "STATE", "HITS", "DROPPED", "ERRORS"
    );
    for i in &p.instances {
        println!(
            "  {:<28} {:<10} {:>8} {:>8} {:>7}  {}",
            i.instance,
            i.state.as_str(),
            i.hits,
            i.dropped,
            i.errors,
            i.last_error.as_deref().unwrap_or("")
        );
        if let Some(engine) = &i.engine {
            println!("  {:<28} engine: {engine}", "");
        }
    }
}

/// `--since` as the server wants it: an RFC 3339 time, or a duration meaning that long ago.
fn since_time(since: Option<&str>) -> Result<Option<String>> {
    let Some(s) = since else { return Ok(None) };
    if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok() {
        return Ok(Some(s.to_string()));
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        anyhow!(
            "--since takes a time (2026-11-22T10:00:00Z) or a duration ago (10m, 2h); got `{s}`"
        )
    })?;
    let t = time::OffsetDateTime::now_utc() - d;
    Ok(Some(
        t.format(&time::format_description::well_known::Rfc3339)?,
    ))
}

/// Live events; reconnects (resuming after the last event seen) when the server goes away.
pub fn tail(remote: &Remote, probe: Option<&str>, json: bool) -> Result<()> {
    let client = remote.client("cli")?;
    let mut last: Option<i64> = None;
    let mut backoff = Duration::from_millis(200);
    let mut out = std::io::stdout();
    loop {
        match client.stream(probe, last) {
            Ok(stream) => {
                backoff = Duration::from_millis(200);
                for e in stream {
                    if e.id.is_some() {
                        last = e.id;
                    }
                    let written = if json {
                        writeln!(out, "{}", serde_json::to_string(&e.event)?)
                    } else {
                        print_event(&e.event, &mut out)
                    };
                    if written.and_then(|_| out.flush()).is_err() {
                        return Ok(()); // stdout closed (e.g. `| head`)
                    }
                }
                eprintln!("periscope: the stream ended; reconnecting");
            }
            Err(e) if e.status().is_some() => return Err(e.into()),
            Err(e) => {
                eprintln!("periscope: {e}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A stored event as text: its time, instance, probe and location, then what it says. The
/// API's JSON is read into the typed event here, at the edge.
fn print_event(e: &serde_json::Value, out: &mut impl Write) -> std::io::Result<()> {
    use periscope_core::event::{Body, Event};
    let Ok(event) = serde_json::from_value::<Event>(e.clone()) else {
        return writeln!(out, "{e}");
    };
    let ts = render::short_time(event.ts());
    let head = format!("{ts} {} {}", event.instance, event.probe());
    match &event.body {
        Body::Log(l) => writeln!(out, "{head} {}  {}", l.location, l.message),
        Body::Count(c) => writeln!(
            out,
            "{head} {}  +{} hits (total {}){}",
            c.location,
            c.hits,
            c.total,
            c.groups
                .as_ref()
                .map(|g| format!(" by group: {}", serde_json::json!(g)))
                .unwrap_or_default()
        ),
        Body::Metric(m) => writeln!(
            out,
            "{} {} {}",
            event.instance,
            event.probe(),
            render::metric_line(m)
        ),
        // The agent's notice that a probe paused is carried as an error event starting
        // `paused:`; it reads as a notice.
        Body::Error(p) if p.error.starts_with("paused:") => {
            writeln!(out, "{head} {}  notice: {}", p.location, p.error)
        }
        Body::Error(p) => writeln!(out, "{head} {}  probe error: {}", p.location, p.error),
        Body::Snapshot(snap) => write!(out, "{} {}", event.instance, render::snapshot_tree(snap)),
    }
}

pub fn events(
    remote: &Remote,
    id: &str,
    since: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> Result<()> {
    let client = remote.client("cli")?;
    let query = EventQuery {
        since: since_time(since)?,
        after: None,
        limit,
    };
    let events = client.events(id, &query)?;
    let mut out = std::io::stdout().lock();
    for e in &events {
        if json {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        } else {
            print_event(e, &mut out)?;
        }
    }
    Ok(())
}

pub fn instances(remote: &Remote, json: bool) -> Result<()> {
    let list = remote.client("cli")?.instances()?;
    if json {
        return print_json(&serde_json::json!({ "instances": list }));
    }
    println!(
        "{:<28} {:<12} {:>7} {:<20} {:<5} {:<8} TAGS",
        "ID", "HOST", "PID", "EXECUTABLE", "LANG", "STATE"
    );
    for i in list {
        let exe = std::path::Path::new(&i.executable)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(i.executable.clone());
        let tags: Vec<String> = i.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<28} {:<12} {:>7} {:<20} {:<5} {:<8} {}",
            i.id,
            i.host,
            i.pid,
            exe,
            i.language.as_deref().unwrap_or("-"),
            i.state,
            tags.join(",")
        );
    }
    Ok(())
}

pub fn status(remote: &Remote, json: bool) -> Result<()> {
    let s = remote.client("cli")?.status()?;
    if json {
        return print_json(&s);
    }
    let n = |v: &serde_json::Value| v.as_u64().or(v.as_i64().map(|i| i as u64)).unwrap_or(0);
    println!("events ingested:       {}", n(&s["events_ingested"]));
    println!("last event seq:        {}", n(&s["last_event_seq"]));
    println!("stored event bytes:    {}", n(&s["stored_event_bytes"]));
    println!("dropped by agents:     {}", n(&s["agent_dropped_events"]));
    match s.get("otlp").filter(|o| !o.is_null()) {
        Some(o) => {
            println!(
                "OTLP: exported {} log records and {} metric points; dropped {}; failed exports {}{}",
                n(&o["exported_logs"]),
                n(&o["exported_metric_points"]),
                n(&o["dropped"]),
                n(&o["failed_exports"]),
                o["last_error"]
                    .as_str()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        None => println!("OTLP: not configured"),
    }
    if let Some(seq) = s["jsonl_last_seq"].as_i64() {
        println!("JSON lines: written up to seq {seq}");
    }
    Ok(())
}

pub fn token(remote: &Remote, cmd: TokenCommand) -> Result<()> {
    let client = remote.client("cli")?;
    match cmd {
        TokenCommand::Create { role, name } => {
            let t = client.create_token(&NewToken { name, role })?;
            let secret = t.token.context("the server sent no token")?;
            println!("{secret}");
        }
        TokenCommand::Ls { json } => {
            let tokens = client.tokens()?;
            if json {
                return print_json(&serde_json::json!({ "tokens": tokens }));
            }
            println!("{:<24} {:<9} {:<36} REVOKED", "NAME", "ROLE", "CREATED");
            for t in tokens {
                println!(
                    "{:<24} {:<9} {:<36} {}",
                    t.name,
                    t.role,
                    t.created_at,
                    t.revoked_at.as_deref().unwrap_or("")
                );
            }
        }
        TokenCommand::Revoke { name } => {
            let t = client.revoke_token(&name)?;
            println!(
                "{}: revoked at {}",
                t.name,
                t.revoked_at.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

pub fn audit(remote: &Remote, since: Option<&str>, json: bool) -> Result<()> {
    let since = since_time(since)?;
    let entries = remote.client("cli")?.audit(since.as_deref())?;
    let mut out = std::io::stdout().lock();
    for e in entries {
        if json {
            writeln!(out, "{}", serde_json::to_string(&e)?)?;
        } else {
            writeln!(
                out,
                "{} {:<8} {:<16} {:<16} {:<10} via {:<5} from {} {}",
                e.ts,
                e.outcome,
                e.actor,
                e.action,
                e.target,
                e.via,
                e.remote,
                if e.detail.is_null() {
                    String::new()
                } else {
                    e.detail.to_string()
                }
            )?;
        }
    }
    Ok(())
}

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
