//! `periscope`: the command line. Parses arguments, wires them to the engine, prints results.

/// mimalloc: see the note in Cargo.toml (measured, not assumed).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand};
use periscope_core::api::{NewProbe, ProbeKind};
use periscope_core::event::{Body, Event};
use periscope_core::redact::Redactor;
use periscope_core::render;
use periscope_native::probe::{EngineProbe, Tallies};
use periscope_native::values::Limits;
use periscope_native::{
    EndReason, EngineEvent, NativeError, ProbeSpec, Session, SessionOptions, Target,
};
use std::io::Write;

mod code;
mod fleet;
mod metrics;
mod verify;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "periscope",
    version,
    about = "See inside running native processes: dynamic logs and counters at any source line, no restart",
    after_help = "Locations are FILE:LINE (the file matched by path suffix, e.g. main.rs:42 or src/cart.rs:88) or a function name (cart::total, or total if unique)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A directory of separate debug files, searched before /usr/lib/debug as gdb searches its
    /// debug-file-directory (DIR/.build-id/xx/rest.debug, DIR/BINARY_DIR/DEBUGLINK_NAME);
    /// repeatable. PERISCOPE_DEBUG_DIR adds more (colon-separated); DEBUGINFOD_URLS names
    /// debuginfod servers.
    #[arg(long = "debug-dir", value_name = "DIR", global = true)]
    debug_dirs: Vec<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a log line each time a source line or function runs.
    Log {
        /// Process id of the target.
        pid: u32,
        /// FILE:LINE or function name.
        location: String,
        /// Message with expressions in braces: "amount={t.amount_cents} fee={fee}".
        template: String,
        #[command(flatten)]
        common: Common,
        /// Stop after this many hits.
        #[arg(long)]
        max_hits: Option<u64>,
        /// Log at most this many hits per second (the others are counted, not shown).
        #[arg(long, value_name = "HITS_PER_SEC")]
        rate: Option<f64>,
    },
    /// Capture the stack with arguments and locals at a source line or function.
    Snapshot {
        pid: u32,
        location: String,
        #[command(flatten)]
        common: Common,
        /// Stop after this many snapshots.
        #[arg(long, default_value_t = 1)]
        max_hits: u64,
        /// Capture arguments and locals of this many frames from the top.
        #[arg(long, default_value_t = 5)]
        frames: usize,
        /// Follow pointers and nested values this deep.
        #[arg(long, default_value_t = 3)]
        depth: u32,
        /// An extra expression to capture with the snapshot (repeatable).
        #[arg(long = "watch", value_name = "EXPR")]
        watches: Vec<String>,
    },
    /// Capture a snapshot at the point of failure: a Rust panic (before unwinding) or a fatal
    /// signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT); the process then does what it would
    /// have done anyway.
    Watch {
        pid: u32,
        /// Capture panics (default: panics and signals).
        #[arg(long)]
        panics: bool,
        /// Capture fatal signals (default: panics and signals).
        #[arg(long)]
        signals: bool,
        /// Capture arguments and locals of this many frames of the program's code.
        #[arg(long, default_value_t = 5)]
        frames: usize,
        /// Follow pointers and nested values this deep.
        #[arg(long, default_value_t = 3)]
        depth: u32,
        /// Also capture the variables of library frames (libc's, std's); by default those
        /// show their function and location only.
        #[arg(long)]
        library_frames: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Count how often a source line or function runs.
    Count {
        pid: u32,
        location: String,
        #[command(flatten)]
        common: Common,
        /// Group counts by the value of this expression.
        #[arg(long)]
        by: Option<String>,
        /// Print the counts at this interval (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        every: Duration,
        /// Break counts down by thread.
        #[arg(long)]
        per_thread: bool,
        /// Stop after this many hits.
        #[arg(long)]
        max_hits: Option<u64>,
    },
    /// Time each call of a function, from entry to return, and report count, mean, min, max
    /// and a histogram per interval (in the kernel: a uprobe and a uretprobe).
    Duration {
        pid: u32,
        /// The function's name.
        function: String,
        #[command(flatten)]
        common: Common,
        /// Report at this interval (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        every: Duration,
        /// Group calls by the value of this expression, read at entry.
        #[arg(long)]
        by: Option<String>,
    },
    /// Sample a numeric expression at a source line or function; report last, min, max and
    /// mean per interval.
    Gauge {
        pid: u32,
        location: String,
        /// The value to sample: `queue.len()`, `total_cents`, `retries * 2`.
        expr: String,
        #[command(flatten)]
        common: Common,
        /// Report at this interval (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        every: Duration,
        /// Group samples by the value of this expression.
        #[arg(long)]
        by: Option<String>,
    },
    /// Show a source file with the lines that can take a probe marked.
    Lines {
        /// A process id or the path of a binary.
        target: String,
        /// FILE or FILE:FROM-TO.
        file: String,
        /// `{"file":…,"lines":[{"line":N,"text":"…","instrumentable":true},…]}`.
        #[arg(long)]
        json: bool,
    },
    /// List functions matching a pattern, with their file:line.
    Functions {
        /// A process id or the path of a binary.
        target: String,
        /// Substring of the qualified name (case-insensitive); `*` matches anything.
        pattern: String,
        /// `{"functions":[{"name":…,"file":…,"line":N},…]}`.
        #[arg(long)]
        json: bool,
    },
    /// Verify candidate fixes on the live process's own traffic, read-only: at each hit of
    /// LOCATION, the failure and the kept results with and without each fix.
    Verify(verify::VerifyArgs),
    /// Find the code that can produce a message (a log line, an error text someone saw).
    Find {
        /// A process id or the path of a binary.
        target: String,
        /// The message as seen, e.g. "no route to shard 12".
        #[arg(long)]
        message: String,
        /// `{"matches":[{"text","function","file","line","source","exact"},…]}`.
        #[arg(long)]
        json: bool,
    },
    /// Run the control plane: HTTP API, live event stream, store, tokens, audit log.
    Server(fleet::ServerArgs),
    /// Serve MCP over stdio for AI agents (with --server/--token, or local mode on --pid/--exe).
    Mcp {
        #[command(flatten)]
        args: fleet::McpArgs,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// Run a host agent: attach to processes and apply the server's probes to them.
    Agent {
        #[command(flatten)]
        args: fleet::AgentArgs,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// Place, list, show and remove probes across instances (against a server).
    Probe {
        #[command(subcommand)]
        command: fleet::ProbeCommand,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// Live events as they arrive (of one probe, or all).
    Tail {
        /// Probe id.
        id: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// Stored events of a probe.
    Events {
        id: String,
        /// A time (2026-11-22T10:00:00Z) or a duration ago (10m).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// The server's counters: events ingested and stored, agent drops, export progress and drops.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// Processes the agents watch.
    Instances {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// Create, list and revoke API tokens (admin).
    Token {
        #[command(subcommand)]
        command: fleet::TokenCommand,
        #[command(flatten)]
        remote: fleet::Remote,
    },
    /// The audit log: probe and token changes, denied requests (admin).
    Audit {
        /// A time (2026-11-22T10:00:00Z) or a duration ago (10m).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: fleet::Remote,
    },
}

#[derive(Args)]
struct Common {
    /// Only hits where this condition holds: --if 'amount > 1000 && user.name == "bob"'.
    #[arg(long = "if", value_name = "EXPR")]
    condition: Option<String>,
    /// Where the probe runs: `bpf` (in-kernel uprobes: no stop per hit, nothing left in the
    /// code if periscope dies), `ptrace` (breakpoints), or `auto`: bpf when everything the
    /// probe reads compiles to a capture plan and BPF is available, else ptrace (saying why).
    #[arg(long, default_value = "auto", value_name = "auto|bpf|ptrace")]
    engine: periscope_native::EngineChoice,
    #[command(flatten)]
    output: Output,
}

/// How long a command runs and what it prints: shared by every probing command and `watch`.
#[derive(Args)]
struct Output {
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Also redact variables and fields whose name matches this regular expression
    /// (repeatable; names like password, token, secret, session are always redacted).
    #[arg(long = "redact", value_name = "REGEX")]
    redact: Vec<String>,
    #[command(flatten)]
    otlp: fleet::OtlpArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write durations like 500ms, 10s, 5m, 1h"))
}

fn main() {
    // Before any thread exists: the tracer thread reads these through a signalfd.
    periscope_native::block_signals();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Probe { .. }
            | Command::Tail { .. }
            | Command::Events { .. }
            | Command::Instances { .. }
            | Command::Status { .. }
            | Command::Token { .. }
            | Command::Audit { .. }
            | Command::Lines { .. }
            | Command::Functions { .. }
            | Command::Find { .. }
    ) {
        // Commands that attach to nothing end on Ctrl-C the ordinary way. No thread exists
        // yet, so unblocking here covers the whole process.
        let mut set = nix::sys::signal::SigSet::empty();
        for s in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGHUP,
        ] {
            set.add(s);
        }
        let _ = set.thread_unblock();
    }
    match run(cli) {
        Ok(()) => {}
        // Asked to stop while attaching: the target was left as it was; a normal way to end.
        Err(e) if matches!(e.downcast_ref(), Some(NativeError::Interrupted { .. })) => {
            eprintln!("periscope: {e:#}");
        }
        Err(e) => {
            eprintln!("periscope: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    for d in &cli.debug_dirs {
        if !d.is_dir() {
            bail!(
                "--debug-dir {}: no such directory (give a directory of debug files, like /usr/lib/debug)",
                d.display()
            );
        }
    }
    periscope_native::index::debugfile::configure(
        cli.debug_dirs.clone(),
        Some(std::sync::Arc::new(|text: &str| note(text))),
    );
    match cli.command {
        Command::Log {
            pid,
            location,
            template,
            common,
            max_hits,
            rate,
        } => {
            let mut p = NewProbe::new(ProbeKind::Log, "", &location);
            p.template = Some(template);
            p.max_hits = max_hits;
            p.rate_limit = rate;
            let spec = local_probe(p, &common, Limits::default())?;
            run_log(pid, spec, &common)
        }
        Command::Snapshot {
            pid,
            location,
            common,
            max_hits,
            frames,
            depth,
            watches,
        } => {
            let mut p = NewProbe::new(ProbeKind::Snapshot, "", &location);
            p.watch = watches;
            p.frames = Some(frames);
            p.max_hits = Some(max_hits);
            let limits = Limits {
                depth,
                ..Limits::default()
            };
            let spec = local_probe(p, &common, limits)?;
            run_log(pid, spec, &common)
        }
        Command::Count {
            pid,
            location,
            common,
            by,
            every,
            per_thread,
            max_hits,
        } => {
            let mut p = NewProbe::new(ProbeKind::Count, "", &location);
            p.by = by;
            p.max_hits = max_hits;
            let spec = local_probe(p, &common, Limits::default())?;
            run_count(pid, spec, &common, every, per_thread)
        }
        Command::Duration {
            pid,
            function,
            common,
            every,
            by,
        } => {
            metrics::check_every(every)?;
            let spec = metrics::metric_probe(&function, None, by.as_deref(), &common)?;
            metrics::run_metric(pid, spec, &common, every, metrics::Series::Duration)
        }
        Command::Gauge {
            pid,
            location,
            expr,
            common,
            every,
            by,
        } => {
            metrics::check_every(every)?;
            let spec = metrics::metric_probe(&location, Some(&expr), by.as_deref(), &common)?;
            metrics::run_metric(pid, spec, &common, every, metrics::Series::Gauge)
        }
        Command::Watch {
            pid,
            panics,
            signals,
            frames,
            depth,
            library_frames,
            output,
        } => {
            let (panics, signals) = if panics || signals {
                (panics, signals)
            } else {
                (true, true)
            };
            let capture = WatchCapture {
                frames,
                depth,
                library_frames,
            };
            run_watch(pid, panics, signals, capture, &output)
        }
        Command::Lines { target, file, json } => code::run_lines(&target, &file, json),
        Command::Functions {
            target,
            pattern,
            json,
        } => code::run_functions(&target, &pattern, json),
        Command::Find {
            target,
            message,
            json,
        } => code::run_find(&target, &message, json),
        Command::Verify(args) => verify::run(args),
        Command::Server(args) => fleet::server(args),
        Command::Agent { args, remote } => fleet::agent(&remote, args),
        Command::Mcp { args, remote } => fleet::mcp(&remote, args),
        Command::Probe { command, remote } => fleet::probe(&remote, command),
        Command::Tail { id, json, remote } => fleet::tail(&remote, id.as_deref(), json),
        Command::Events {
            id,
            since,
            limit,
            json,
            remote,
        } => fleet::events(&remote, &id, since.as_deref(), limit, json),
        Command::Instances { json, remote } => fleet::instances(&remote, json),
        Command::Status { json, remote } => fleet::status(&remote, json),
        Command::Token { command, remote } => fleet::token(&remote, command),
        Command::Audit {
            since,
            json,
            remote,
        } => fleet::audit(&remote, since.as_deref(), json),
    }
}

/// The probe compiler's output for a local command's probe, with its flags' names in errors.
fn compile(p: &NewProbe) -> Result<periscope_core::compile::CompiledProbe> {
    periscope_core::compile::compile(p).map_err(|e| {
        let flag = match e.field {
            "template" => "TEMPLATE",
            "location" => "LOCATION",
            "condition" => "--if",
            "watch" => "--watch",
            "by" => "--by",
            "max_hits" => "--max-hits",
            "frames" => "--frames",
            other => other,
        };
        anyhow!("{e} ({flag})")
    })
}

/// A local command's probe: no overhead budget (the user watches it live); a rate limit only if asked.
fn local_probe(mut p: NewProbe, common: &Common, limits: Limits) -> Result<ProbeSpec> {
    p.condition = common.condition.clone();
    let redactor = Redactor::new(&common.output.redact)?;
    match EngineProbe::new("1", compile(&p)?, limits, redactor) {
        EngineProbe::Breakpoint(mut spec) => {
            spec.engine = common.engine;
            Ok(spec)
        }
        EngineProbe::Failures { .. } => bail!("a failures probe is `periscope watch`"),
    }
}

/// Reads the debug info of a process's binaries (seconds for a large one). SIGINT, SIGTERM or
/// SIGHUP meanwhile end periscope at once: nothing is attached yet, so nothing is to undo. A
/// signal that comes after is left pending for the session, which reads it from then on.
fn index_process(pid: u32) -> Result<Target> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let done = std::sync::Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?);
    let done2 = done.clone();
    let watcher = std::thread::spawn(move || {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            mask.add(s);
        }
        let Ok(sfd) = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        else {
            return;
        };
        let mut fds = [
            nix::poll::PollFd::new(sfd.as_fd(), nix::poll::PollFlags::POLLIN),
            nix::poll::PollFd::new(done2.as_fd(), nix::poll::PollFlags::POLLIN),
        ];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
        let signalled = fds[0]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN));
        if signalled {
            if let Ok(Some(info)) = sfd.read_signal() {
                let name = Signal::try_from(info.ssi_signo as i32)
                    .map(|s| s.as_str())
                    .unwrap_or("a signal");
                note(&format!(
                    "periscope: interrupted by {name} while reading debug info; nothing was attached"
                ));
                std::process::exit(0);
            }
        }
    });
    let target = Target::attach_view(pid);
    let _ = done.write(1);
    let _ = watcher.join();
    Ok(target?)
}

fn start(pid: u32, spec: ProbeSpec) -> Result<Session> {
    let location = spec.location.to_string();
    let target = index_process(pid)?;
    let probe = periscope_native::resolve::resolve(&target, spec)?;
    let session = Session::start_resolved(target, vec![probe], SessionOptions::default())?;
    let sites = session.site_counts.first().copied().unwrap_or(0);
    let engine = session
        .engines
        .first()
        .map(|e| e.describe())
        .unwrap_or_default();
    if session.recovered > 0 {
        note(&format!(
            "periscope: removed what an earlier periscope that was killed left in pid {pid} (breakpoints, call stubs, ended replay copies)"
        ));
    }
    note(&format!(
        "periscope: probing pid {pid} at {location} ({sites} code address{}, engine: {engine}); Ctrl-C to stop",
        if sites == 1 { "" } else { "es" }
    ));
    Ok(session)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A line on stderr; a closed stderr is not worth failing (or panicking) over.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn end_note(reason: &EndReason) -> Option<String> {
    match reason {
        EndReason::TargetExited { code: Some(c), .. } => {
            Some(format!("target exited with code {c}"))
        }
        EndReason::TargetExited {
            signal: Some(s), ..
        } => Some(format!("target was killed by signal {s}")),
        EndReason::TargetExited { .. } => Some("target exited".into()),
        EndReason::TargetExec => Some("target executed a new program; probes removed".into()),
        EndReason::HitLimit => Some("hit limit reached".into()),
        // Said once, as the command's error (exit status 1).
        EndReason::Error(_) | EndReason::Requested | EndReason::Signal(_) => None,
    }
}

/// Receives events until the session ends or the deadline passes; `on_tick` runs at each
/// `tick` (for counters). Returns why it ended.
fn pump(
    session: &Session,
    deadline: Option<Instant>,
    tick: Option<Duration>,
    mut on_event: impl FnMut(EngineEvent) -> Result<()>,
    mut on_tick: impl FnMut() -> Result<()>,
) -> Result<Option<EndReason>> {
    let mut next_tick = tick.map(|t| Instant::now() + t);
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(None);
        }
        if let (Some(t), Some(n)) = (tick, next_tick) {
            if now >= n {
                if let Err(e) = on_tick() {
                    if is_broken_pipe(&e) {
                        return Ok(Some(EndReason::Requested));
                    }
                    return Err(e);
                }
                next_tick = Some(n + t);
            }
        }
        let wake = [deadline, next_tick].into_iter().flatten().min();
        let ev = match wake {
            Some(w) => match session
                .events
                .recv_timeout(w.saturating_duration_since(now))
            {
                Ok(e) => e,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            },
            None => match session.events.recv() {
                Ok(e) => e,
                Err(_) => return Ok(None),
            },
        };
        if let EngineEvent::Ended(reason) = ev {
            return Ok(Some(reason));
        }
        if let Err(e) = on_event(ev) {
            // The reader went away (`periscope log … | head`): a normal way to end.
            if is_broken_pipe(&e) {
                return Ok(Some(EndReason::Requested));
            }
            return Err(e);
        }
    }
}

/// Local mode's OTLP export: the process itself is the resource.
fn local_exporter(
    pid: u32,
    output: &Output,
) -> Result<
    Option<(
        periscope_export::otlp::OtlpExporter,
        periscope_core::api::Instance,
    )>,
> {
    let Some(config) = output.otlp.config()? else {
        return Ok(None);
    };
    let host = periscope_agent::discover::hostname();
    let executable = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let service = std::path::Path::new(&executable)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let instance = periscope_core::api::Instance {
        id: format!("{host}-{pid}"),
        agent: "local".into(),
        host,
        pid,
        executable,
        build_id: None,
        language: None,
        lang: None,
        tags: [("service".to_string(), service)].into(),
        state: "online".into(),
        last_seen: String::new(),
    };
    Ok(Some((
        periscope_export::otlp::OtlpExporter::start(config),
        instance,
    )))
}

/// Local mode's OTLP export of one event, the process itself as the instance.
fn export_local(
    exporter: &Option<(
        periscope_export::otlp::OtlpExporter,
        periscope_core::api::Instance,
    )>,
    body: &Body,
) {
    if let Some((e, instance)) = exporter {
        e.submit(instance, &Event::new(instance.id.clone(), body.clone()));
    }
}

/// One event on stdout (probe errors on stderr), as a line of JSON (the body alone, as local
/// mode has always printed it) or as text.
fn print_body(json: bool, body: &Body, out: &mut impl Write) -> Result<()> {
    match body {
        Body::Error(e) => return print_probe_error(json, e, out),
        Body::Log(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Snapshot(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Count(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Metric(e) if json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Body::Log(e) => writeln!(out, "{}", render::log_line(e))?,
        Body::Snapshot(e) => print_snapshot(e, out)?,
        Body::Count(e) => writeln!(out, "{}  +{} hits (total {})", e.location, e.hits, e.total)?,
        Body::Metric(e) => writeln!(out, "{}", render::metric_line(e))?,
    }
    Ok(())
}

fn run_log(pid: u32, spec: ProbeSpec, common: &Common) -> Result<()> {
    let exporter = local_exporter(pid, &common.output)?;
    let session = start(pid, spec)?;
    let deadline = common.output.duration.map(|d| Instant::now() + d);
    let json = common.output.json;
    let stdout = std::io::stdout();
    let reason = pump(
        &session,
        deadline,
        None,
        |ev| {
            if let EngineEvent::Event(body) = &ev {
                export_local(&exporter, body);
                let mut out = stdout.lock();
                print_body(json, body, &mut out)?;
                out.flush()?;
            }
            Ok(())
        },
        || Ok(()),
    );
    let result = finish(session, reason);
    if let Some((e, _)) = exporter {
        e.shutdown(Duration::from_secs(5));
    }
    result
}

/// A snapshot as an indented tree (see [`render::snapshot_tree`]).
fn print_snapshot(e: &periscope_core::event::SnapshotEvent, out: &mut impl Write) -> Result<()> {
    out.write_all(render::snapshot_tree(e).as_bytes())?;
    Ok(())
}

/// What `watch` captures at a failure.
struct WatchCapture {
    frames: usize,
    depth: u32,
    library_frames: bool,
}

fn run_watch(
    pid: u32,
    panics: bool,
    signals: bool,
    capture: WatchCapture,
    output: &Output,
) -> Result<()> {
    let mut request = NewProbe::new(ProbeKind::Failures, "", "");
    request.frames = Some(capture.frames);
    let limits = Limits {
        depth: capture.depth,
        ..Limits::default()
    };
    let redactor = Redactor::new(&output.redact)?;
    let EngineProbe::Failures {
        panic,
        signals: mut watch,
    } = EngineProbe::new("watch", compile(&request)?, limits, redactor)
    else {
        bail!("a failures probe compiles to a panic probe and a signal watch");
    };
    watch.library_frames = capture.library_frames;
    let target = index_process(pid)?;
    let mut probes = Vec::new();
    if panics {
        match periscope_native::resolve::resolve(&target, panic) {
            Ok(p) => probes.push(p),
            Err(_) => note("periscope: no Rust panic runtime in this process (not Rust, or no debug info for it); watching signals only"),
        }
    }
    let options = SessionOptions {
        watch_signals: signals.then_some(watch),
        ..SessionOptions::default()
    };
    let session = Session::start_resolved(target, probes, options)?;
    let what = match (panics, signals) {
        (true, true) => "panics and fatal signals",
        (true, false) => "panics",
        _ => "fatal signals",
    };
    note(&format!(
        "periscope: watching pid {pid} for {what}; Ctrl-C to stop"
    ));
    let deadline = output.duration.map(|d| Instant::now() + d);
    let json = output.json;
    let reason = pump(
        &session,
        deadline,
        None,
        |ev| {
            if let EngineEvent::Event(body) = &ev {
                let mut out = std::io::stdout().lock();
                print_body(json, body, &mut out)?;
                out.flush()?;
            }
            Ok(())
        },
        || Ok(()),
    );
    finish(session, reason)
}

fn print_probe_error(
    json: bool,
    e: &periscope_core::event::ProbeError,
    out: &mut impl Write,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    } else {
        note(&render::error_line(e));
    }
    Ok(())
}

/// What the session's summary says a user should know: events lost, anything left behind.
fn report(summary: &periscope_native::probe::Summary) {
    if summary.dropped_events > 0 {
        note(&format!(
            "periscope: {} events dropped because output could not keep up",
            summary.dropped_events
        ));
    }
    if let Some(text) = summary.left_behind_note() {
        note(&format!("periscope: {text}"));
    }
}

/// Ends the session (removing every breakpoint) and reports why it ended.
fn finish(session: Session, reason: Result<Option<EndReason>>) -> Result<()> {
    // Stop first, whatever happened while printing (a closed pipe must not leave breakpoints).
    let summary = session.stop();
    report(&summary);
    end_with(reason)
}

/// How a probing command ends: a note for why (the target exited, the hit limit), or the
/// session's error as the command's (exit status 1).
fn end_with(reason: Result<Option<EndReason>>) -> Result<()> {
    let reason = reason?;
    if let Some(text) = reason.as_ref().and_then(end_note) {
        note(&format!("periscope: {text}"));
    }
    if let Some(EndReason::Error(e)) = reason {
        bail!(e);
    }
    Ok(())
}

fn run_count(
    pid: u32,
    spec: ProbeSpec,
    common: &Common,
    every: Duration,
    per_thread: bool,
) -> Result<()> {
    let location = spec.location.to_string();
    let session = start(pid, spec)?;
    let tallies = session.tallies.clone();
    let deadline = common.output.duration.map(|d| Instant::now() + d);
    let json = common.output.json;
    let mut last_total = 0u64;
    let started = Instant::now();
    let mut print = |final_line: bool| -> Result<()> {
        let line = count_line(
            &tallies,
            &location,
            &mut last_total,
            started,
            per_thread,
            json,
            final_line,
        );
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    let reason = pump(
        &session,
        deadline,
        Some(every.max(Duration::from_millis(10))),
        |ev| {
            if let EngineEvent::Event(Body::Error(e)) = ev {
                print_probe_error(json, &e, &mut std::io::stdout().lock())?;
            }
            Ok(())
        },
        || print(false),
    );
    let summary = session.stop();
    print(true)?;
    report(&summary);
    end_with(reason)
}

fn count_line(
    tallies: &Tallies,
    location: &str,
    last_total: &mut u64,
    started: Instant,
    per_thread: bool,
    json: bool,
    final_line: bool,
) -> String {
    let t = tallies.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = t.first() else {
        return String::new();
    };
    let total = t.hits;
    let delta = total - *last_total;
    *last_total = total;
    let mut by_thread: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut groups: std::collections::BTreeMap<String, u64> = Default::default();
    for ((tid, key), n) in &t.counts {
        *by_thread.entry(*tid).or_default() += n;
        if let Some(k) = key {
            *groups.entry(k.clone()).or_default() += n;
        }
    }
    let ts = periscope_core::event::now_rfc3339();
    if json {
        let mut obj = serde_json::json!({
            "ts": ts,
            "location": location,
            "kind": if final_line { "total" } else { "interval" },
            "hits": delta,
            "total": total,
            "elapsed_s": started.elapsed().as_secs_f64(),
            "filtered": t.filtered,
            "errors": t.errors,
        });
        if per_thread {
            obj["threads"] = serde_json::json!(by_thread
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<std::collections::BTreeMap<String, u64>>(
            ));
        }
        if !groups.is_empty() {
            obj["groups"] = serde_json::json!(groups);
        }
        return obj.to_string();
    }
    let mut line = if final_line {
        format!(
            "{}  total {location}: {total} hits in {:.1}s",
            render::short_time(&ts),
            started.elapsed().as_secs_f64()
        )
    } else {
        format!(
            "{}  {location}: {delta} hits (total {total})",
            render::short_time(&ts)
        )
    };
    if per_thread {
        let parts: Vec<String> = by_thread
            .iter()
            .map(|(k, v)| format!("tid {k}: {v}"))
            .collect();
        line.push_str(&format!("  [{}]", parts.join(", ")));
    }
    if !groups.is_empty() {
        let parts: Vec<String> = groups.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        line.push_str(&format!("  {{{}}}", parts.join(", ")));
    }
    line
}
