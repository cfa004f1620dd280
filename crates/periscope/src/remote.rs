//! Remote mode: commands that talk to a Periscope server (probes across a fleet, live and
//! stored events, instances, tokens, the audit log) and where the server is (`Remote`).

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
    pub(crate) server: Option<String>,
    /// API token (`periscope token create` makes one).
    #[arg(long, env = "PERISCOPE_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM certificate(s) to trust for an HTTPS server with a private CA or self-signed
    /// certificate.
    #[arg(long, env = "PERISCOPE_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
}

impl Remote {
    /// The server URL(s) as given: flag, environment, or config file.
    pub(crate) fn server(&self) -> Result<String> {
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

    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>> {
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
pub(crate) struct ConfigFile {
    pub(crate) server: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) ca_cert: Option<PathBuf>,
}

pub(crate) fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PERISCOPE_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("periscope").join("config.toml")
}

pub(crate) fn config_file() -> Option<ConfigFile> {
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
                crate::verify::print_table(
                    &mut std::io::stdout().lock(),
                    result.hits,
                    &result.candidates,
                )?;
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

/// A stored event as text: its time, instance, probe and location, then what it says.
fn print_event(e: &periscope_core::event::Event, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", render::event_text(e))
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
    println!("events ingested:       {}", s.events_ingested);
    println!("last event seq:        {}", s.last_event_seq);
    println!("stored event bytes:    {}", s.stored_event_bytes);
    println!("dropped by agents:     {}", s.agent_dropped_events);
    match &s.otlp {
        Some(o) => {
            println!(
                "OTLP: exported {} log records and {} metric points; dropped {}; failed exports {}{}",
                o.exported_logs,
                o.exported_metric_points,
                o.dropped,
                o.failed_exports,
                o.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        None => println!("OTLP: not configured"),
    }
    if let Some(seq) = s.jsonl_last_seq {
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
