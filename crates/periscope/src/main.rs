//! `periscope`: the command line. Argument parsing and the dispatch of each command to its
//! mode: [`local`] (a probing command on one process, through the runtime seam), [`remote`]
//! (commands against a server) and [`daemons`] (`server`, `agent`, `mcp`).

/// mimalloc: see the note in Cargo.toml (measured, not assumed).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use local::{code, local_probe, metrics, run_count, run_log, run_watch, verify, WatchCapture};
use periscope_core::api::{NewProbe, ProbeKind};
use periscope_runtime::{Limits, RuntimeKind};
use std::path::PathBuf;
use std::time::Duration;

mod daemons;
mod local;
mod remote;

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
        /// Show nested structs and collections this deep (pointers, references and smart
        /// pointers are no level of their own).
        #[arg(long, default_value_t = Limits::default().depth)]
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
        /// Show nested structs and collections this deep (pointers, references and smart
        /// pointers are no level of their own).
        #[arg(long, default_value_t = Limits::default().depth)]
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
        /// The process's runtime, when not the one detected (native, jvm, python, node).
        #[arg(long, value_name = "native|jvm|python|node")]
        runtime: Option<RuntimeKind>,
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
        /// The process's runtime, when not the one detected (native, jvm, python, node).
        #[arg(long, value_name = "native|jvm|python|node")]
        runtime: Option<RuntimeKind>,
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
        /// The process's runtime, when not the one detected (native, jvm, python, node).
        #[arg(long, value_name = "native|jvm|python|node")]
        runtime: Option<RuntimeKind>,
    },
    /// Run the control plane: HTTP API, live event stream, store, tokens, audit log.
    Server(daemons::ServerArgs),
    /// Serve MCP over stdio for AI agents (with --server/--token, or local mode on --pid/--exe).
    Mcp {
        #[command(flatten)]
        args: daemons::McpArgs,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Run a host agent: attach to processes and apply the server's probes to them.
    Agent {
        #[command(flatten)]
        args: daemons::AgentArgs,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Place, list, show and remove probes across instances (against a server).
    Probe {
        #[command(subcommand)]
        command: remote::ProbeCommand,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Live events as they arrive (of one probe, or all).
    Tail {
        /// Probe id.
        id: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: remote::Remote,
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
        remote: remote::Remote,
    },
    /// The server's counters: events ingested and stored, agent drops, export progress and drops.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Processes the agents watch.
    Instances {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Create, list and revoke API tokens (admin).
    Token {
        #[command(subcommand)]
        command: remote::TokenCommand,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// The audit log: probe and token changes, denied requests (admin).
    Audit {
        /// A time (2026-11-22T10:00:00Z) or a duration ago (10m).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: remote::Remote,
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
    engine: periscope_runtime::EngineChoice,
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
    /// The process's runtime, when not the one detected from its executable and libraries:
    /// native (Rust, C, C++, Go), jvm, python or node.
    #[arg(long, value_name = "native|jvm|python|node")]
    runtime: Option<RuntimeKind>,
    #[command(flatten)]
    otlp: daemons::OtlpArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write durations like 500ms, 10s, 5m, 1h"))
}

fn main() {
    // Before any thread exists: the tracer thread reads these through a signalfd.
    periscope_runtimes::block_signals();
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
        Err(e)
            if e.downcast_ref::<periscope_runtime::RuntimeError>()
                .is_some_and(|e| e.is_interrupted()) =>
        {
            eprintln!("periscope: {e:#}");
        }
        Err(e) => {
            eprintln!("periscope: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The process a local command probes or reads, if one.
fn command_pid(c: &Command) -> Option<u32> {
    match c {
        Command::Log { pid, .. }
        | Command::Snapshot { pid, .. }
        | Command::Watch { pid, .. }
        | Command::Count { pid, .. }
        | Command::Duration { pid, .. }
        | Command::Gauge { pid, .. } => Some(*pid),
        Command::Verify(v) => Some(v.pid),
        Command::Lines { target, .. }
        | Command::Functions { target, .. }
        | Command::Find { target, .. } => target.parse().ok(),
        _ => None,
    }
}

fn run(cli: Cli) -> Result<()> {
    // A debug directory may be the container's own, when the process is in one: it is looked
    // for inside the process's root first (see README, "Debug info").
    let root = command_pid(&cli.command).map(|p| PathBuf::from(format!("/proc/{p}/root")));
    let in_root = |d: &std::path::Path| {
        root.as_ref()
            .is_some_and(|r| d.is_absolute() && r.join(d.strip_prefix("/").unwrap_or(d)).is_dir())
    };
    for d in &cli.debug_dirs {
        if !d.is_dir() && !in_root(d) {
            anyhow::bail!(
                "--debug-dir {}: no such directory (give a directory of debug files, like /usr/lib/debug)",
                d.display()
            );
        }
    }
    periscope_runtimes::configure_debug_info(
        cli.debug_dirs.clone(),
        Some(std::sync::Arc::new(|text: &str| local::note(text))),
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
        Command::Lines {
            target,
            file,
            json,
            runtime,
        } => code::run_lines(&target, &file, json, runtime),
        Command::Functions {
            target,
            pattern,
            json,
            runtime,
        } => code::run_functions(&target, &pattern, json, runtime),
        Command::Find {
            target,
            message,
            json,
            runtime,
        } => code::run_find(&target, &message, json, runtime),
        Command::Verify(args) => verify::run(args),
        Command::Server(args) => daemons::server(args),
        Command::Agent { args, remote } => daemons::agent(&remote, args),
        Command::Mcp { args, remote } => daemons::mcp(&remote, args),
        Command::Probe { command, remote } => remote::probe(&remote, command),
        Command::Tail { id, json, remote } => remote::tail(&remote, id.as_deref(), json),
        Command::Events {
            id,
            since,
            limit,
            json,
            remote,
        } => remote::events(&remote, &id, since.as_deref(), limit, json),
        Command::Instances { json, remote } => remote::instances(&remote, json),
        Command::Status { json, remote } => remote::status(&remote, json),
        Command::Token { command, remote } => remote::token(&remote, command),
        Command::Audit {
            since,
            json,
            remote,
        } => remote::audit(&remote, since.as_deref(), json),
    }
}
