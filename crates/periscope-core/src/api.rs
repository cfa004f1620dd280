//! The control plane's vocabulary: probes as the server keeps them, instances, each probe's
//! state on each instance, tokens, the audit trail, and what agents and the server say to each
//! other. Server, agent, client, CLI and MCP all use these, so every JSON shape has one
//! definition (see ARCHITECTURE.md: fields may be added, never renamed).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use utoipa::ToSchema;

// The API's document (utoipa) and MCP's tool schemas (schemars) both read this one enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Log,
    Snapshot,
    Count,
    /// Panics and fatal signals, captured as snapshots with a `failure`; no location.
    Failures,
    /// Verify candidate fixes on live traffic, read-only (`failure`, `fixes`, `keep`).
    Verify,
    /// Time each call of the function at the location, entry to return (in the kernel).
    Duration,
    /// Sample a numeric expression (`value`) at each hit.
    Gauge,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Log => "log",
            ProbeKind::Snapshot => "snapshot",
            ProbeKind::Count => "count",
            ProbeKind::Failures => "failures",
            ProbeKind::Verify => "verify",
            ProbeKind::Duration => "duration",
            ProbeKind::Gauge => "gauge",
        }
    }

    /// Captured hits per second per instance when the probe does not say (counters, durations
    /// and gauges are not captured one by one: the agent aggregates them, so they have no
    /// limit).
    pub fn default_rate_limit(self) -> Option<f64> {
        match self {
            ProbeKind::Log => Some(1000.0),
            ProbeKind::Snapshot => Some(1.0),
            ProbeKind::Count
            | ProbeKind::Failures
            | ProbeKind::Verify
            | ProbeKind::Duration
            | ProbeKind::Gauge => None,
        }
    }
}

impl std::str::FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" => Ok(ProbeKind::Log),
            "snapshot" => Ok(ProbeKind::Snapshot),
            "count" | "counter" => Ok(ProbeKind::Count),
            "failures" => Ok(ProbeKind::Failures),
            "verify" => Ok(ProbeKind::Verify),
            "duration" => Ok(ProbeKind::Duration),
            "gauge" => Ok(ProbeKind::Gauge),
            _ => Err(format!(
                "unknown probe kind `{s}`: expected log, snapshot, count, duration, gauge, failures or verify"
            )),
        }
    }
}

/// Default time to live of a probe: nothing stays forever.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;

/// A probe as a client asks for it (`POST /api/v1/probes`). Its schema is every field any
/// kind takes (`ProbeFields`); the request body's schema, one shape per kind, is built from it
/// in [`crate::schema`]. The formats name Periscope's own text syntaxes (the contract test
/// samples each); the bounds are those [`crate::compile`] checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProbeFields)]
pub struct NewProbe {
    pub kind: ProbeKind,
    /// Which instances: tags (`service=ledger`, several separated by commas or spaces, all
    /// must match) or an instance id.
    #[schema(format = "periscope-selector")]
    pub target: String,
    /// `FILE:LINE` or a function name.
    #[schema(format = "periscope-location")]
    pub location: String,
    /// Log message with `{expr}` holes (log probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "periscope-template")]
    pub template: Option<String>,
    /// Only hits where this holds are captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "periscope-expression")]
    pub condition: Option<String>,
    /// Extra expressions captured with a snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(format = "periscope-expression")]
    pub watch: Vec<String>,
    /// Group a counter, a duration or a gauge by the value of this expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "periscope-expression")]
    pub by: Option<String>,
    /// Gauge: the numeric expression sampled at each hit (`queue.len()`, `total_cents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "periscope-expression")]
    pub value: Option<String>,
    /// Seconds until the probe is removed (default 3600, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub ttl_seconds: Option<u64>,
    /// Hits per instance after which the probe is removed from that instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_hits: Option<u64>,
    /// Captured hits per second per instance; beyond it hits are counted, not captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub rate_limit: Option<f64>,
    /// Snapshot: frames whose variables are captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 64)]
    pub frames: Option<usize>,
    /// Overhead budget: milliseconds of the target's time per 10 s window (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub budget_ms: Option<u64>,
    /// Verify: the symptom, as a condition at the location (`refund > charge.amount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "periscope-expression")]
    pub failure: Option<String>,
    /// Verify: candidate fixes, each `NAME: VAR = EXPR[; VAR = EXPR]` (no two alike).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(format = "periscope-fix", min_items = 1)]
    pub fixes: Vec<String>,
    /// Verify: results that must not change where nothing failed (default: every variable a
    /// fix assigns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(format = "periscope-expression")]
    pub keep: Vec<String>,
    /// Verify, replay mode: `FROM..UNTIL`, two locations. At a hit of FROM a copy of the
    /// process runs the computation with a candidate's assignments applied at the location,
    /// until UNTIL, where the failure and the kept results are read in the copy and in the
    /// original. Without it, shadow mode: both evaluated side by side at the location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "periscope-replay")]
    pub replay: Option<String>,
    /// Where the probe runs on each instance: `auto` (the default: in the kernel when what
    /// it reads compiles to a capture plan and BPF is there, else ptrace), `bpf` or `ptrace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
}

/// Which engine runs a probe (`--engine`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// eBPF uprobes when everything the probe reads compiles to a capture plan and BPF is
    /// available; ptrace otherwise (the instance's status says why).
    #[default]
    Auto,
    Bpf,
    Ptrace,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Engine::Auto),
            "bpf" | "ebpf" | "kernel" => Ok(Engine::Bpf),
            "ptrace" => Ok(Engine::Ptrace),
            _ => Err(format!(
                "unknown engine `{s}`: expected auto, bpf or ptrace"
            )),
        }
    }
}

impl NewProbe {
    /// A probe of `kind` at `location` on `target`, everything else left to the defaults.
    pub fn new(kind: ProbeKind, target: &str, location: &str) -> NewProbe {
        NewProbe {
            kind,
            target: target.to_string(),
            location: location.to_string(),
            template: None,
            condition: None,
            watch: Vec::new(),
            by: None,
            value: None,
            ttl_seconds: None,
            max_hits: None,
            rate_limit: None,
            frames: None,
            budget_ms: None,
            failure: None,
            fixes: Vec::new(),
            keep: Vec::new(),
            replay: None,
            engine: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeLifecycle {
    Active,
    /// Active, but paused on at least one instance (its overhead budget ran out there):
    /// `paused_reason` says why, and `probe resume` puts it back.
    Paused,
    Removed,
    Expired,
}

impl ProbeLifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeLifecycle::Active => "active",
            ProbeLifecycle::Paused => "paused",
            ProbeLifecycle::Removed => "removed",
            ProbeLifecycle::Expired => "expired",
        }
    }

    /// Placed and not ended: active, or paused somewhere.
    pub fn is_live(self) -> bool {
        matches!(self, ProbeLifecycle::Active | ProbeLifecycle::Paused)
    }
}

/// A probe as the server keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    pub id: String,
    #[serde(flatten)]
    pub spec: NewProbe,
    pub state: ProbeLifecycle,
    pub created_at: String,
    pub expires_at: String,
    pub created_by: String,
    /// `cli`, `api` or `mcp`: the surface the probe was placed through.
    pub via: String,
    /// Hits over all instances, since the probe was placed (across agent restarts).
    #[serde(default)]
    pub hits: u64,
    /// With state `paused`: why, and on how many instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// How many times the probe was resumed; agents reinstall a paused probe when it changes.
    #[serde(default)]
    pub resumes: u64,
    /// Each instance the probe applies to, with its state there (filled by `probe show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<ProbeInstance>,
}

/// A probe's state on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstallState {
    Pending,
    Installed,
    Error,
    /// Paused for overhead: its hits took more of the target's time than its budget.
    Paused,
    HitLimit,
    Expired,
    Removed,
}

impl InstallState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallState::Pending => "pending",
            InstallState::Installed => "installed",
            InstallState::Error => "error",
            InstallState::Paused => "paused",
            InstallState::HitLimit => "hit_limit",
            InstallState::Expired => "expired",
            InstallState::Removed => "removed",
        }
    }
}

/// A probe's state on one instance. Ids may not hold a NUL (PostgreSQL cannot store one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProbeInstance {
    #[schema(pattern = "^[^\\u0000]*$")]
    pub instance: String,
    pub state: InstallState,
    #[serde(default)]
    pub hits: u64,
    /// Hits counted but not captured: beyond the rate limit, or lost on the way.
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub errors: u64,
    /// The engine's message for `error`, the reason for `paused`; for `pending`, why it is
    /// not placed yet and when it will be (a probe on a library not loaded yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Code addresses the probe covers on this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<usize>,
    /// The engine it runs on there: `bpf`, `ptrace`, or `ptrace (why not bpf)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default)]
    pub updated_at: String,
}

/// A process an agent watches. As an agent reports it, `state` and `last_seen` are the
/// server's to set (what the agent sends there is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    #[schema(pattern = "^[^\\u0000]*$")]
    pub id: String,
    pub agent: String,
    pub host: String,
    /// The host's pid (as every event's `pid`).
    pub pid: u32,
    /// The pid in the process's own pid namespace (a container's), when that is not the
    /// agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// The executable's path as the process sees it (inside its container, if in one).
    pub executable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// `rust`, `c`, `c++` or `go`, from the main program's debug info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The same as `language`, under its short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `online`, `offline` (its agent stopped reporting) or `exited`.
    #[serde(default = "online")]
    pub state: String,
    #[serde(default)]
    pub last_seen: String,
}

fn online() -> String {
    "online".into()
}

/// Which instances a probe applies to: every `key=value` must match, or one instance id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Tags(Vec<(String, String)>),
    Instance(String),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "empty target: give tags such as `service=ledger` or an instance id".into(),
            );
        }
        if !text.contains('=') {
            // Instance ids are `HOST-PID-SUFFIX`: host names are ASCII.
            let id_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if !text.chars().all(id_char) {
                return Err(format!(
                    "`{}` is neither tags (KEY=VALUE, e.g. service=ledger) nor an instance id (letters, digits, `-`, `_`, `.`; `periscope instances` lists them)",
                    text.escape_debug()
                ));
            }
            return Ok(Selector::Instance(text.to_string()));
        }
        let mut pairs = Vec::new();
        let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
        for part in text.split([',', ' ']).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((k, v))
                    if !k.is_empty()
                        && !v.is_empty()
                        && k.chars().all(key_char)
                        && !v.chars().any(|c| c.is_control() || c.is_whitespace()) =>
                {
                    pairs.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return Err(format!(
                        "bad target part `{}`: expected KEY=VALUE (e.g. service=ledger; keys are letters, digits, `-_./`), several separated by commas",
                        part.escape_debug()
                    ))
                }
            }
        }
        Ok(Selector::Tags(pairs))
    }

    /// Tags match an instance's own tags, or its `host`, `pid`, `executable`, `agent`, `id`.
    pub fn matches(&self, instance: &Instance) -> bool {
        match self {
            Selector::Instance(id) => &instance.id == id,
            Selector::Tags(pairs) => pairs.iter().all(|(k, v)| {
                let builtin = match k.as_str() {
                    "host" => Some(instance.host.clone()),
                    "pid" => Some(instance.pid.to_string()),
                    "executable" | "exe" => Some(instance.executable.clone()),
                    "agent" => Some(instance.agent.clone()),
                    "id" | "instance" => Some(instance.id.clone()),
                    _ => None,
                };
                instance.tags.get(k) == Some(v) || builtin.as_ref() == Some(v)
            }),
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers instances and reports events; nothing else.
    Agent,
    /// Reads probes, events, instances.
    Viewer,
    /// Viewer, plus adds and removes probes.
    Operator,
    /// Operator, plus tokens, settings and the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may (agents only what agents do).
    pub fn allows(self, needed: Role) -> bool {
        match (self, needed) {
            (Role::Agent, n) => n == Role::Agent,
            (_, Role::Agent) => self == Role::Admin,
            (r, n) => r >= n,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "agent" => Ok(Role::Agent),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role `{s}`: expected viewer, operator, admin or agent"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1-64 letters, digits, `-` `_` `.` `@`.
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Only in the answer to a create: the secret itself, never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: String,
    /// The token's name, or `anonymous` / `unknown token` for denied requests.
    pub actor: String,
    pub action: String,
    #[serde(default)]
    pub target: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// The client's address.
    #[serde(default)]
    pub remote: String,
    /// `api`, `cli` or `mcp`.
    #[serde(default)]
    pub via: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Who the agent is (sent with every report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentInfo {
    #[schema(pattern = "^[^\\u0000]*$")]
    pub id: String,
    pub host: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// What the agent answers besides reports: `code` (the code requests in its desired
    /// state, which the server's code views need). An agent from before them sends none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// The feature an agent names when it answers code requests.
pub const FEATURE_CODE: &str = "code";

/// A probe's state on one instance, as an agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusReport {
    #[schema(pattern = "^[^\\u0000]*$")]
    pub probe: String,
    #[serde(flatten)]
    pub status: ProbeInstance,
}

/// What an agent sends (`POST /api/v1/agent/report`): its instances (all of them, each time),
/// state changes, and a batch of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentReport {
    pub agent: AgentInfo,
    /// This agent process's run id (random per start). With it, each event's `key` numbers
    /// the event in the run, and a report sent again stores nothing twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\u0000]*$")]
    pub run: Option<String>,
    pub instances: Vec<Instance>,
    #[serde(default)]
    pub statuses: Vec<StatusReport>,
    #[serde(default)]
    pub events: Vec<crate::event::Event>,
    /// Events the agent dropped since its last report (its buffer was full).
    #[serde(default)]
    pub dropped_events: u64,
    /// The agent's last report: it is stopping, and its instances go offline at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

/// `POST /api/v1/probes/{id}/resume`: puts a paused probe back, optionally with a new overhead
/// budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResumeProbe {
    /// New overhead budget: milliseconds of the target's time per 10 s window, 1 to 10000
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub budget_ms: Option<u64>,
}

/// The probes an agent must have, per instance (`GET /api/v1/agent/desired`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Desired {
    /// Changes whenever probes or instances change; the agent asks again with it to wait for
    /// the next change.
    pub version: u64,
    pub assignments: Vec<Assignment>,
    /// Questions about the agent's instances' code, each handed out once: the agent answers
    /// them on `POST /api/v1/agent/code/{id}`. The poll returns as soon as one arrives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_requests: Vec<crate::code::CodeRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub probe: Probe,
    pub instances: Vec<String>,
}

/// An API error body: `{"error": "..."}` with the field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /api/v1/status`: the server's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Status)]
pub struct ServerStatus {
    /// Bumped whenever probes or instances change.
    pub version: u64,
    pub events_ingested: u64,
    /// Events agents reported dropping (their buffers were full while the server was away).
    pub agent_dropped_events: u64,
    pub agent_reports: u64,
    pub last_event_seq: i64,
    pub stored_event_bytes: i64,
    pub retention_seconds: u64,
    pub max_event_bytes: u64,
    /// With OTLP export: what went out and what failed.
    pub otlp: Option<OtlpStatus>,
    /// With JSON-lines export: the `seq` of the last event written.
    pub jsonl_last_seq: Option<i64>,
}

/// What the OTLP exporter sent and what failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OtlpStatus {
    pub exported_logs: u64,
    pub exported_metric_points: u64,
    pub dropped: u64,
    pub failed_exports: u64,
    pub last_error: Option<String>,
}

/// `GET /api/v1/probes/{id}/verify`: a verify probe's result, summed across instances.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub hits: u64,
    pub candidates: Vec<crate::verify::CandidateResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> Instance {
        Instance {
            id: "web-3-100".into(),
            agent: "a1".into(),
            host: "web-3".into(),
            pid: 100,
            ns_pid: None,
            executable: "ledger".into(),
            build_id: None,
            language: None,
            lang: None,
            tags: [("service".to_string(), "ledger".to_string())].into(),
            state: "online".into(),
            last_seen: String::new(),
        }
    }

    #[test]
    fn selectors_match_tags_builtins_and_ids() {
        let i = instance();
        assert!(Selector::parse("service=ledger").unwrap().matches(&i));
        assert!(Selector::parse("service=ledger,host=web-3")
            .unwrap()
            .matches(&i));
        assert!(!Selector::parse("service=ledger host=web-4")
            .unwrap()
            .matches(&i));
        assert!(Selector::parse("web-3-100").unwrap().matches(&i));
        assert!(Selector::parse("pid=100").unwrap().matches(&i));
        assert!(Selector::parse("service=").is_err());
    }

    #[test]
    fn roles_nest_except_agents() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Agent.allows(Role::Viewer));
        assert!(Role::Agent.allows(Role::Agent));
        assert!(!Role::Operator.allows(Role::Agent));
    }

    #[test]
    fn probe_json_is_flat() {
        let p = NewProbe {
            template: Some("x={x}".into()),
            ..NewProbe::new(ProbeKind::Log, "service=ledger", "main.rs:3")
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["kind"], "log");
        let stored = Probe {
            id: "p1".into(),
            spec: p,
            state: ProbeLifecycle::Active,
            created_at: "t".into(),
            expires_at: "t".into(),
            created_by: "me".into(),
            via: "cli".into(),
            hits: 3,
            paused_reason: None,
            resumes: 0,
            instances: vec![],
        };
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(serde_json::from_str::<Probe>(&text).unwrap(), stored);
        assert!(serde_json::from_str::<NewProbe>(
            r#"{"kind":"log","target":"a","location":"b","tmpl":"x"}"#
        )
        .is_err());
    }
}
