//! The tools' arguments: their JSON schemas are what a model sees, and each field's doc is its
//! description there. Fields a probe request has too take its types (the engine, the metric)
//! and its bounds, so a tool's schema and the API's document say the same (a test compares
//! them).

use periscope_core::api::Engine;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// Tool arguments that never fail to parse at the protocol level: a mistake (a wrong type, a
/// missing field) becomes a tool error the model can read and correct, with the schema of the
/// real arguments still published.
pub struct Args<T>(pub(crate) Result<T, String>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Args<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        // The path names the argument at fault (`count: invalid type: string "many", …`).
        Ok(Args(serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("`{path}`: {}", e.into_inner())
            }
        })))
    }
}

impl<T: JsonSchema> JsonSchema for Args<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FindFunctionsArgs {
    /// Instance id, as list_instances gives it.
    pub instance: String,
    /// Part of the function's qualified name (case-insensitive), e.g. `settle` or `cart::total`.
    pub pattern: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// A short name for the candidate, e.g. `capped`.
    pub name: String,
    /// What the fixed code would compute, as assignments: `refund = min(refund, charge.amount - charge.refunded)`; several separated by `;`.
    pub fix: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyFixArgs {
    /// Which instances: tags such as `service=ledger` or an instance id.
    pub target: String,
    /// `FILE:LINE` or a function where the failure shows and the fix applies.
    pub location: String,
    /// The failure as a condition at the location, e.g. `refund > charge.amount - charge.refunded`.
    pub failure: String,
    /// Candidate fixes to compare.
    pub candidates: Vec<Candidate>,
    /// Results that must not change where nothing failed (default: every variable a fix assigns).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Replay mode `FROM..UNTIL`: at each hit of FROM (a function or line that starts the computation) a copy of the process runs with a candidate applied at `location`, and the failure and kept results are read at UNTIL (a later line of the same thread) in the copy and in the original. The copy may not make system calls other than memory management (such a replay is `inconclusive`). Leave out for shadow mode (both evaluated side by side at `location`).
    pub replay: Option<String>,
    /// Replay: copies per second (default 1); shadow mode: hits evaluated per second.
    pub rate: Option<f64>,
    /// Overhead budget: milliseconds of the process's time per 10 s (default 100); beyond it
    /// the verification pauses (a fork for a replay holds a thread for about a millisecond).
    #[schemars(range(min = 1, max = periscope_core::compile::MAX_BUDGET_MS))]
    pub budget_ms: Option<u64>,
    /// Stop after this many hits per instance.
    #[schemars(range(min = 1))]
    pub max_hits: Option<u64>,
    /// How long to verify, in seconds (default 30, at most 300).
    pub timeout_seconds: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FindMessageArgs {
    /// Instance id, as list_instances gives it.
    pub instance: String,
    /// The message as someone saw it, e.g. `no route to shard 12` or `refund 3911 exceeds the charge`.
    pub message: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadSourceArgs {
    /// Instance id, as list_instances gives it.
    pub instance: String,
    /// Source file, matched by path suffix: `main.rs`, `src/cart.rs`.
    pub file: String,
    /// First line to show (default: 1).
    pub from_line: Option<u32>,
    /// Last line to show (default: the end of the file).
    pub to_line: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLogArgs {
    /// Which instances: tags such as `service=ledger` (comma-separated, all must match) or an
    /// instance id.
    pub target: String,
    /// `FILE:LINE` (a line read_source marks instrumentable) or a function name.
    pub location: String,
    /// Message with expressions in braces: `"total={total} user={user.name}"`.
    pub template: String,
    /// Only hits where this expression is true, e.g. `amount > 1000`.
    pub condition: Option<String>,
    /// Seconds until the probe is removed (default 900).
    #[schemars(range(min = 1, max = periscope_core::compile::MAX_TTL_SECONDS))]
    pub ttl_seconds: Option<u64>,
    /// Hits per instance after which the probe is removed there.
    #[schemars(range(min = 1))]
    pub max_hits: Option<u64>,
    /// Where it runs: `auto` (default: in the kernel as eBPF uprobes when everything it reads
    /// can be read there, else ptrace breakpoints), `bpf` or `ptrace`. The probe's status
    /// says which, and why not bpf.
    pub engine: Option<Engine>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSnapshotArgs {
    /// Which instances: tags such as `service=ledger` or an instance id.
    pub target: String,
    /// `FILE:LINE` or a function name.
    pub location: String,
    /// Extra expressions to capture besides the stack's arguments and locals.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Only hits where this expression is true.
    pub condition: Option<String>,
    /// Seconds until the probe is removed (default 900).
    #[schemars(range(min = 1, max = periscope_core::compile::MAX_TTL_SECONDS))]
    pub ttl_seconds: Option<u64>,
    /// Snapshots per instance (default 1).
    #[schemars(range(min = 1))]
    pub max_hits: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCounterArgs {
    /// Which instances: tags such as `service=ledger` or an instance id.
    pub target: String,
    /// `FILE:LINE` or a function name.
    pub location: String,
    /// Group counts by the value of this expression.
    pub by: Option<String>,
    /// Only hits where this expression is true.
    pub condition: Option<String>,
    /// Seconds until the probe is removed (default 900).
    #[schemars(range(min = 1, max = periscope_core::compile::MAX_TTL_SECONDS))]
    pub ttl_seconds: Option<u64>,
    /// Hits per instance after which the counter stops.
    #[schemars(range(min = 1))]
    pub max_hits: Option<u64>,
    /// Where it runs: `auto` (default: in the kernel as eBPF uprobes when everything it reads
    /// can be read there, else ptrace breakpoints), `bpf` or `ptrace`. The probe's status
    /// says which, and why not bpf.
    pub engine: Option<Engine>,
}

/// A numeric series (`duration` or `gauge`): the API's metric kind.
pub use periscope_core::event::MetricKind as MetricArg;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMetricArgs {
    /// Which instances: tags such as `service=ledger` or an instance id.
    pub target: String,
    /// `duration` or `gauge`.
    pub metric: MetricArg,
    /// A duration: the function's name (find_functions lists them). A gauge: `FILE:LINE` or a
    /// function name.
    pub location: String,
    /// A gauge: the numeric expression to sample, e.g. `queue.len()` or `total_cents`.
    pub value: Option<String>,
    /// Group calls or samples by the value of this expression (a duration reads it at entry).
    pub by: Option<String>,
    /// Only calls or samples where this expression is true.
    pub condition: Option<String>,
    /// Seconds until the probe is removed (default 900).
    #[schemars(range(min = 1, max = periscope_core::compile::MAX_TTL_SECONDS))]
    pub ttl_seconds: Option<u64>,
    /// Where it runs: `auto` (default: in the kernel as eBPF uprobes when everything it reads
    /// can be read there, else ptrace breakpoints), `bpf` or `ptrace`. The probe's status
    /// says which, and why not bpf.
    pub engine: Option<Engine>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetEventsArgs {
    /// The probe's id (from add_log, add_snapshot, add_counter or list_probes).
    pub probe_id: String,
    /// At most this many events (default 20).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page, to get the events after it.
    pub cursor: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The probe's id.
    pub probe_id: String,
    /// How many events to wait for (default 1).
    pub count: Option<usize>,
    /// Longest wait in seconds (default 30, at most 300).
    pub timeout_seconds: Option<u64>,
    /// Only events after this cursor (`next_cursor` of an earlier answer).
    pub cursor: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeArgs {
    /// The probe's id.
    pub probe_id: String,
    /// A new overhead budget: milliseconds of the target's time per 10 s (default 100).
    #[schemars(range(min = 1, max = periscope_core::compile::MAX_BUDGET_MS))]
    pub budget_ms: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchFailuresArgs {
    /// Which instances: tags such as `service=ledger` or an instance id.
    pub target: String,
    /// How long to watch, in seconds (default 900).
    pub duration_seconds: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeIdArgs {
    /// The probe's id.
    pub probe_id: String,
}

#[cfg(test)]
mod tests {
    //! The tools' schemas against the API's document for what they share: a tool that places
    //! a probe takes the probe request's fields under the same names, with the same types,
    //! bounds and enum values, and requires what that kind's request requires.
    use super::*;
    use periscope_core::api::{NewProbe, ProbeKind, ResumeProbe};
    use periscope_core::schema::shapes;
    use serde_json::Value;
    use utoipa::PartialSchema;

    fn tool<T: JsonSchema>() -> Value {
        serde_json::to_value(schemars::schema_for!(T)).unwrap()
    }

    fn api<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    /// A property's schema with references (`$defs` in a tool's, components in the API's
    /// document, which [`enum_values`] reads from the types themselves) and null left out.
    fn base<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
        if let Some(r) = s["$ref"].as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
            return &root["$defs"][r];
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = s[key].as_array() {
                let rest: Vec<&Value> = alts.iter().filter(|a| a["type"] != "null").collect();
                if let [one] = rest.as_slice() {
                    return base(root, one);
                }
            }
        }
        s
    }

    fn enum_values(s: &Value) -> Vec<String> {
        let mut v: Vec<String> = match (s["enum"].as_array(), s["oneOf"].as_array()) {
            (Some(e), _) => e
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            // schemars writes a variant with a doc as `const`, the others as one `enum`.
            (None, Some(alts)) => alts
                .iter()
                .flat_map(|a| {
                    let listed = a["enum"].as_array().cloned().unwrap_or_default();
                    listed.into_iter().chain(a.get("const").cloned())
                })
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        v.sort();
        v
    }

    fn non_null_type(s: &Value) -> Value {
        match &s["type"] {
            Value::Array(types) => {
                let rest: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                match rest.as_slice() {
                    [one] => (*one).clone(),
                    _ => Value::Null,
                }
            }
            t => t.clone(),
        }
    }

    fn required(s: &Value) -> Vec<String> {
        let mut r: Vec<String> = s["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        r.sort();
        r
    }

    /// A tool's name, its arguments' schema, the kinds it places, its renamed arguments.
    type ProbeTool = (
        &'static str,
        Value,
        Vec<ProbeKind>,
        &'static [(&'static str, &'static str)],
    );

    /// Each probe-placing tool, its kinds, and its arguments named otherwise than the fields
    /// they become (tool-only arguments, such as `metric` or `rate`, have no field).
    fn probe_tools() -> Vec<ProbeTool> {
        vec![
            ("add_log", tool::<AddLogArgs>(), vec![ProbeKind::Log], &[]),
            (
                "add_snapshot",
                tool::<AddSnapshotArgs>(),
                vec![ProbeKind::Snapshot],
                &[],
            ),
            (
                "add_counter",
                tool::<AddCounterArgs>(),
                vec![ProbeKind::Count],
                &[],
            ),
            (
                "add_metric",
                tool::<AddMetricArgs>(),
                vec![ProbeKind::Duration, ProbeKind::Gauge],
                &[],
            ),
            (
                "verify_fix",
                tool::<VerifyFixArgs>(),
                vec![ProbeKind::Verify],
                &[("candidates", "fixes")],
            ),
        ]
    }

    #[test]
    fn shared_fields_have_the_api_types_bounds_and_enum_values() {
        let fields = api::<NewProbe>();
        let engine = enum_values(&api::<periscope_core::api::Engine>());
        assert_eq!(engine, ["auto", "bpf", "ptrace"]);
        let mut compared = 0;
        for (name, schema, _, renamed) in probe_tools() {
            for (arg, s) in schema["properties"].as_object().unwrap() {
                let field = renamed
                    .iter()
                    .find(|(a, _)| a == arg)
                    .map_or(arg.as_str(), |(_, f)| *f);
                let Some(f) = fields["properties"].get(field) else {
                    continue;
                };
                compared += 1;
                let s = base(&schema, s);
                if field == "engine" {
                    assert_eq!(enum_values(s), engine, "{name}.{arg}");
                    continue;
                }
                if field == "fixes" {
                    continue; // candidates are objects, joined into fix texts
                }
                assert_eq!(non_null_type(s), non_null_type(f), "{name}.{arg} type");
                for bound in ["minimum", "maximum"] {
                    assert_eq!(
                        s[bound].as_f64(),
                        f[bound].as_f64(),
                        "{name}.{arg} {bound}: the tool says {}, the API {}",
                        s[bound],
                        f[bound]
                    );
                }
            }
        }
        assert!(compared >= 25, "only {compared} shared arguments");
        // The metric is a probe kind; resume's budget has the API's bounds.
        let kinds = enum_values(&api::<ProbeKind>());
        let metric = tool::<AddMetricArgs>();
        for m in enum_values(base(&metric, &metric["properties"]["metric"])) {
            assert!(
                kinds.contains(&m),
                "metric `{m}` is no probe kind: {kinds:?}"
            );
        }
        let resume = tool::<ResumeArgs>();
        let budget = base(&resume, &resume["properties"]["budget_ms"]);
        let api_budget = &api::<ResumeProbe>()["properties"]["budget_ms"];
        for bound in ["minimum", "maximum"] {
            assert_eq!(
                budget[bound].as_f64(),
                api_budget[bound].as_f64(),
                "resume {bound}"
            );
        }
    }

    #[test]
    fn each_tool_requires_what_its_kinds_requests_require() {
        for (name, schema, kinds, renamed) in probe_tools() {
            let fields = api::<NewProbe>();
            let mut tool_required: Vec<String> = required(&schema)
                .into_iter()
                .map(|a| {
                    renamed
                        .iter()
                        .find(|(r, _)| *r == a)
                        .map_or(a.clone(), |(_, f)| f.to_string())
                })
                .filter(|f| fields["properties"].get(f).is_some())
                .collect();
            tool_required.sort();
            // What every request of these kinds requires (a gauge's value is the tool's to
            // check: it is optional for a duration).
            let mut common: Option<Vec<String>> = None;
            for kind in &kinds {
                for shape in shapes(*kind) {
                    let mut r: Vec<String> = ["target", "location"]
                        .iter()
                        .chain(shape.required)
                        .map(|s| s.to_string())
                        .collect();
                    r.sort();
                    common = Some(match common {
                        None => r,
                        Some(c) => c.into_iter().filter(|f| r.contains(f)).collect(),
                    });
                }
            }
            assert_eq!(tool_required, common.unwrap(), "{name}");
        }
    }
}
