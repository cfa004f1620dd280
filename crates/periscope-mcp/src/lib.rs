//! Periscope for AI agents, over the Model Context Protocol (with the `rmcp` SDK).
//!
//! Every tool goes through the server's HTTP API with the caller's own token, so roles, the
//! MCP limits (short TTL, a cap on probes held) and the audit log (`via: mcp`) apply exactly as
//! for people. Over stdio the token is the one `periscope mcp` was started with; over
//! streamable HTTP (`/mcp` on the server) it is each request's bearer token.
//!
//! `find_functions`, `find_message` and `read_source` read the instance's code through the runtime
//! seam on this machine (the live process when it is local, else its executable), since the API
//! carries no binaries.

use periscope_client::{Client, EventQuery};
use periscope_core::api::{InstallState, NewProbe, ProbeKind};
use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData, RoleServer};
use serde_json::json;
use std::time::Duration;

mod args;
mod failure;
mod prompt;
mod serve;
pub use args::*;
use failure::{bad_args, events_result, explain, parse_cursor, tool_error, tool_ok, Failure};
pub use prompt::InvestigateArgs;
pub use serve::{http_service, serve_stdio};

/// Where the API calls go and with whose token.
#[derive(Clone)]
pub enum Backend {
    /// One client for the whole session (stdio).
    Fixed(Client),
    /// The server's own API, with each HTTP request's bearer token (`/mcp`); `ca` is the
    /// server's own certificate when it serves HTTPS.
    PerRequest { base: String, ca: Option<Vec<u8>> },
}

#[derive(Clone)]
pub struct Periscope {
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
    backend: Backend,
}

impl Periscope {
    pub fn new(backend: Backend) -> Periscope {
        Periscope {
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
            backend,
        }
    }

    /// The API client for this request.
    fn client(&self, ctx: &RequestContext<RoleServer>) -> Result<Client, Failure> {
        match &self.backend {
            Backend::Fixed(c) => Ok(c.clone()),
            Backend::PerRequest { base, ca } => {
                let parts = ctx.extensions.get::<http::request::Parts>();
                let token = parts
                    .and_then(|p| p.headers.get("authorization"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_string());
                match token {
                    Some(t) => Client::with_ca(base, Some(t), "mcp", ca.as_deref())
                        .map_err(|e| tool_error(e.to_string())),
                    None => Err(tool_error(
                        "no bearer token on this request: configure the MCP client with `Authorization: Bearer TOKEN`",
                    )),
                }
            }
        }
    }

    /// Runs blocking API work off the async workers.
    async fn call<T: Send + 'static>(
        &self,
        ctx: &RequestContext<RoleServer>,
        f: impl FnOnce(Client) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let client = self.client(ctx)?;
        tokio::task::spawn_blocking(move || f(client))
            .await
            .unwrap_or_else(|e| Err(tool_error(format!("internal error: {e}"))))
    }

    async fn place(
        &self,
        ctx: &RequestContext<RoleServer>,
        spec: NewProbe,
    ) -> Result<CallToolResult, ErrorData> {
        let r = self
            .call(ctx, move |c| {
                let p = c.add_probe(&spec).map_err(|e| explain(e, "placing the probe"))?;
                // The agents install it within moments; answer with the outcome.
                let p = c.settled_probe(&p.id, Duration::from_secs(10)).unwrap_or(p);
                let failed: Vec<String> = p
                    .instances
                    .iter()
                    .filter(|i| i.state == InstallState::Error)
                    .map(|i| format!("{}: {}", i.instance, i.last_error.as_deref().unwrap_or("error")))
                    .collect();
                if p.instances.is_empty() {
                    let _ = c.remove_probe(&p.id);
                    return Err(tool_error(format!(
                        "no instance matches target `{}`, so the probe was removed; list_instances shows the instances with their ids and tags",
                        p.spec.target
                    )));
                }
                if failed.len() == p.instances.len() {
                    // Nowhere to run: take it back so it does not count against the cap.
                    let _ = c.remove_probe(&p.id);
                    return Err(tool_error(format!(
                        "the probe could not be placed on any instance, so it was removed. {}. Use read_source to find instrumentable lines, or find_functions for a function name.",
                        failed.join("; ")
                    )));
                }
                Ok(p)
            })
            .await;
        Ok(match r {
            Ok(p) => {
                let summary = format!(
                    "probe {} placed at {} on {} ({} instance(s): {}); expires {}. Call wait_for_events with probe_id {} next.",
                    p.id,
                    p.spec.location,
                    p.spec.target,
                    p.instances.len(),
                    p.instances
                        .iter()
                        .map(|i| format!("{} {}", i.instance, i.state.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    p.expires_at,
                    p.id
                );
                tool_ok(json!({ "probe": p }), summary)
            }
            Err(e) => e.result(),
        })
    }
}

#[tool_router]
impl Periscope {
    #[tool(
        description = "List the running instances (processes) Periscope can probe, with their tags (e.g. service), host, pid, executable, language and build id. Start here: the `id` and tags are what the other tools take as `instance` and `target`."
    )]
    async fn list_instances(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<NoArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(e) = args.0 {
            return Ok(bad_args("list_instances", e));
        }
        let r = self
            .call(&ctx, |c| {
                c.instances().map_err(|e| explain(e, "listing instances"))
            })
            .await;
        Ok(match r {
            Ok(list) => {
                let summary = if list.is_empty() {
                    "no instances: no agent reports any process yet".to_string()
                } else {
                    list.iter()
                        .map(|i| {
                            let tags: Vec<String> =
                                i.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            format!(
                                "{} pid {} {} [{}] {}",
                                i.id,
                                i.pid,
                                i.executable,
                                tags.join(","),
                                i.state
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                tool_ok(json!({ "instances": list }), summary)
            }
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Find functions whose qualified name contains `pattern` in an instance's binary, with the file and line where each is defined. Use it to locate code before read_source."
    )]
    async fn find_functions(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<FindFunctionsArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("find_functions", e)),
        };
        let r = self
            .call(&ctx, move |c| {
                c.functions(&a.instance, &a.pattern)
                    .map_err(|e| explain(e, "finding functions"))
            })
            .await;
        Ok(match r {
            Ok(found) => {
                let list = &found[..found.len().min(200)];
                let summary = if list.is_empty() {
                    "no function matches; try a shorter part of the name".to_string()
                } else {
                    found
                        .iter()
                        .take(50)
                        .map(|f| f.text())
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                tool_ok(json!({ "functions": list }), summary)
            }
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Find the code that can produce a message someone saw (a log line, an error text): the string constants and format strings in the instance's binary that match it, each with the function, file, line and source line that uses it, exact matches first. Go from a symptom straight to a location for add_snapshot or add_log."
    )]
    async fn find_message(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<FindMessageArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("find_message", e)),
        };
        if a.message.trim().is_empty() {
            return Ok(bad_args(
                "find_message",
                "`message` is empty; give the text as seen, e.g. \"no route to shard 12\"".into(),
            ));
        }
        let message = a.message.clone();
        let r = self
            .call(&ctx, move |c| {
                c.messages(&a.instance, &a.message)
                    .map_err(|e| explain(e, "finding the message"))
            })
            .await;
        Ok(match r {
            Ok(found) => {
                let list = &found[..found.len().min(50)];
                let summary = if list.is_empty() {
                    format!("no constant in the program's code produces {message:?}; try a shorter, distinctive part of it (the words, not the numbers)")
                } else {
                    list.iter()
                        .take(10)
                        .map(|m| {
                            format!(
                                "{}:{} in {} ({}): {}",
                                m.file.as_deref().unwrap_or("?"),
                                m.line.map(|l| l.to_string()).unwrap_or_default(),
                                m.function,
                                if m.exact { "exact" } else { "partial" },
                                m.source.as_deref().unwrap_or(&m.text)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                tool_ok(json!({ "matches": list }), summary)
            }
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Read lines of a source file as the instance's debug info knows it. Each line says whether it is instrumentable (a probe can go there). Pick a `location` for add_log/add_snapshot/add_counter from the instrumentable lines."
    )]
    async fn read_source(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<ReadSourceArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("read_source", e)),
        };
        let r = self
            .call(&ctx, move |c| {
                c.source(&a.instance, &a.file, a.from_line, a.to_line)
                    .map_err(|e| explain(e, "reading the source"))
            })
            .await;
        Ok(match r {
            Ok(listing) => tool_ok(json!(listing), listing.text()),
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Add a log probe: each time the location runs on a matching instance, the template is rendered with live values (expressions in braces). Returns the probe id and its install state per instance. Probes expire (default 15 minutes)."
    )]
    async fn add_log(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<AddLogArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("add_log", e)),
        };
        let spec = NewProbe {
            template: Some(a.template),
            condition: a.condition,
            ttl_seconds: a.ttl_seconds,
            max_hits: a.max_hits,
            engine: a.engine,
            ..NewProbe::new(ProbeKind::Log, &a.target, &a.location)
        };
        self.place(&ctx, spec).await
    }

    #[tool(
        description = "Add a snapshot probe: when the location runs, capture the call stack with arguments and local variables as typed values (plus any `watch` expressions). Default: one snapshot per instance. Then call wait_for_events."
    )]
    async fn add_snapshot(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<AddSnapshotArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("add_snapshot", e)),
        };
        let spec = NewProbe {
            condition: a.condition,
            watch: a.watch,
            ttl_seconds: a.ttl_seconds,
            max_hits: Some(a.max_hits.unwrap_or(1)),
            ..NewProbe::new(ProbeKind::Snapshot, &a.target, &a.location)
        };
        self.place(&ctx, spec).await
    }

    #[tool(
        description = "Add a counter: count how often the location runs on each matching instance, optionally grouped by an expression. Counts arrive as events every few seconds."
    )]
    async fn add_counter(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<AddCounterArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("add_counter", e)),
        };
        let spec = NewProbe {
            condition: a.condition,
            by: a.by,
            ttl_seconds: a.ttl_seconds,
            max_hits: a.max_hits,
            engine: a.engine,
            ..NewProbe::new(ProbeKind::Count, &a.target, &a.location)
        };
        self.place(&ctx, spec).await
    }

    #[tool(
        description = "Add a metric: `duration` times each call of a function from entry to return (count, sum, min, max and a histogram, in nanoseconds); `gauge` samples a numeric expression (`value`) at a location (count, last, min, max). Both run in the kernel when they can, optionally grouped by an expression, and arrive as `metric` events every few seconds, one per interval with calls or samples."
    )]
    async fn add_metric(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<AddMetricArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("add_metric", e)),
        };
        let kind = match a.metric {
            MetricArg::Duration => ProbeKind::Duration,
            MetricArg::Gauge => ProbeKind::Gauge,
        };
        let spec = NewProbe {
            value: a.value,
            condition: a.condition,
            by: a.by,
            ttl_seconds: a.ttl_seconds,
            engine: a.engine,
            ..NewProbe::new(kind, &a.target, &a.location)
        };
        self.place(&ctx, spec).await
    }

    #[tool(
        description = "Get stored events of a probe, oldest first, one page at a time: log lines with their values, snapshots with the stack and variables as typed value trees, counts, and probe errors. Pass next_cursor back as `cursor` for the next page."
    )]
    async fn get_events(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<GetEventsArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("get_events", e)),
        };
        let after = match parse_cursor(a.cursor.as_deref()) {
            Ok(c) => c,
            Err(e) => return Ok(e.result()),
        };
        let limit = a.limit.unwrap_or(20).clamp(1, 1000);
        let id = a.probe_id.clone();
        let r = self
            .call(&ctx, move |c| {
                c.events(
                    &id,
                    &EventQuery {
                        since: None,
                        after,
                        limit: Some(limit),
                    },
                )
                .map_err(|e| explain(e, "reading events"))
            })
            .await;
        Ok(match r {
            Ok(events) => events_result(&a.probe_id, events, after),
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Wait until `count` events of a probe arrive (or `timeout_seconds` pass) and return them. Use this instead of polling get_events."
    )]
    async fn wait_for_events(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<WaitArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("wait_for_events", e)),
        };
        let after = match parse_cursor(a.cursor.as_deref()) {
            Ok(c) => c,
            Err(e) => return Ok(e.result()),
        };
        let count = a.count.unwrap_or(1).clamp(1, 1000);
        let timeout = Duration::from_secs(a.timeout_seconds.unwrap_or(30).min(300));
        let id = a.probe_id.clone();
        let r = self
            .call(&ctx, move |c| {
                c.wait_for_events(&id, after, count, timeout)
                    .map_err(|e| explain(e, "waiting for events"))
            })
            .await;
        Ok(match r {
            Ok(events) => events_result(&a.probe_id, events, after),
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Arm failure capture on matching instances for a while: a Rust panic (before unwinding) or a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) is captured with the stack and the variables of the failing frames, as a snapshot event with a `failure` field. The program then fails as it would have anyway. Wait for the events with wait_for_events."
    )]
    async fn watch_failures(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<WatchFailuresArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("watch_failures", e)),
        };
        let spec = NewProbe {
            ttl_seconds: a.duration_seconds,
            ..NewProbe::new(ProbeKind::Failures, &a.target, "panics and fatal signals")
        };
        self.place(&ctx, spec).await
    }

    #[tool(
        description = "List the active probes with their kind, target, location, hits and expiry."
    )]
    async fn list_probes(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<NoArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(e) = args.0 {
            return Ok(bad_args("list_probes", e));
        }
        let r = self
            .call(&ctx, |c| {
                c.probes(false).map_err(|e| explain(e, "listing probes"))
            })
            .await;
        Ok(match r {
            Ok(probes) => {
                let summary = if probes.is_empty() {
                    "no active probes".to_string()
                } else {
                    probes
                        .iter()
                        .map(|p| {
                            let paused = p
                                .paused_reason
                                .as_ref()
                                .map(|why| format!(" (paused {why}; resume_probe puts it back)"))
                                .unwrap_or_default();
                            format!(
                                "{} {} at {} on {}: {}{paused}, {} hits, expires {}",
                                p.id,
                                p.spec.kind.as_str(),
                                p.spec.location,
                                p.spec.target,
                                p.state.as_str(),
                                p.hits,
                                p.expires_at
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                tool_ok(json!({ "probes": probes }), summary)
            }
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Resume a probe its overhead budget paused (list_probes shows state `paused` and why). Optionally give a larger budget_ms: milliseconds of the target's time the probe may use per 10 s (default 100, 1% of a core)."
    )]
    async fn resume_probe(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<ResumeArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("resume_probe", e)),
        };
        let r = self
            .call(&ctx, move |c| {
                c.resume_probe(&a.probe_id, a.budget_ms)
                    .map_err(|e| explain(e, "resuming the probe"))
            })
            .await;
        Ok(match r {
            Ok(p) => {
                let s = format!("probe {} resumed; it is {}", p.id, p.state.as_str());
                tool_ok(json!({ "probe": p }), s)
            }
            Err(e) => e.result(),
        })
    }

    #[tool(
        description = "Verify candidate fixes on live traffic before they ship, read-only: at each hit of `location`, the `failure` condition and the results to keep are evaluated on the real state and on the state each candidate's assignments would produce (shadow mode); or, with `replay: \"FROM..UNTIL\"`, a copy of the process runs from FROM with the candidate applied and the outcome is compared at UNTIL with the original's own (replay mode). Returns per candidate: failing hits `fixed`/`not_fixed`, passing hits `unchanged`/`changed`/`broken`, `inconclusive`, up to 3 examples per cell, and a verdict with a 95% bound. The process is never changed. Waits up to timeout_seconds (default 30) and removes its probe."
    )]
    async fn verify_fix(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<VerifyFixArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("verify_fix", e)),
        };
        if a.candidates.is_empty() {
            return Ok(bad_args(
                "verify_fix",
                "give at least one candidate: {\"name\": \"capped\", \"fix\": \"refund = min(refund, limit)\"}".into(),
            ));
        }
        let wait = Duration::from_secs(a.timeout_seconds.unwrap_or(30).clamp(1, 300));
        let spec = NewProbe {
            failure: Some(a.failure.clone()),
            fixes: a
                .candidates
                .iter()
                .map(|c| format!("{}: {}", c.name, c.fix))
                .collect(),
            keep: a.keep.clone(),
            replay: a.replay.clone(),
            rate_limit: a.rate,
            budget_ms: a.budget_ms,
            max_hits: a.max_hits,
            ..NewProbe::new(ProbeKind::Verify, &a.target, &a.location)
        };
        let r = self
            .call(&ctx, move |c| {
                let p = c
                    .add_probe(&spec)
                    .map_err(|e| explain(e, "placing the verify probe"))?;
                let p = c.settled_probe(&p.id, Duration::from_secs(10)).unwrap_or(p);
                let failed: Vec<String> = p
                    .instances
                    .iter()
                    .filter(|i| i.state == InstallState::Error)
                    .map(|i| {
                        format!(
                            "{}: {}",
                            i.instance,
                            i.last_error.as_deref().unwrap_or("error")
                        )
                    })
                    .collect();
                if p.instances.is_empty() || failed.len() == p.instances.len() {
                    let _ = c.remove_probe(&p.id);
                    return Err(tool_error(if p.instances.is_empty() {
                        format!("no instance matches target `{}`", p.spec.target)
                    } else {
                        format!(
                            "the verify probe could not be placed: {}",
                            failed.join("; ")
                        )
                    }));
                }
                // Until the time is up, or every instance reached its hit limit.
                let deadline = std::time::Instant::now() + wait;
                while std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(500));
                    let done = c.probe(&p.id).ok().is_some_and(|q| {
                        !q.instances.is_empty()
                            && q.instances
                                .iter()
                                .all(|i| i.state == InstallState::HitLimit)
                    });
                    if done {
                        break;
                    }
                }
                // What the agents counted, by their own reports; their counts since the last
                // interval come with the removal, so read the verdict once it covers them.
                let counted: u64 = c.probe(&p.id).map(|q| q.hits).unwrap_or(0);
                let _ = c.remove_probe(&p.id);
                let until = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let result = c
                        .verify_result(&p.id)
                        .map_err(|e| explain(e, "reading the verdict"))?;
                    if result.hits >= counted || std::time::Instant::now() >= until {
                        return Ok(result);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .await;
        Ok(match r {
            Ok(result) => {
                let summary = result
                    .candidates
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.verdict))
                    .collect::<Vec<_>>()
                    .join("\n");
                let hits = result.hits;
                tool_ok(json!(result), format!("{hits} hits\n{summary}"))
            }
            Err(e) => e.result(),
        })
    }

    #[tool(description = "Remove a probe everywhere. Its stored events stay readable.")]
    async fn remove_probe(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<Args<ProbeIdArgs>>,
    ) -> Result<CallToolResult, ErrorData> {
        let a = match args.0 {
            Ok(a) => a,
            Err(e) => return Ok(bad_args("remove_probe", e)),
        };
        let r = self
            .call(&ctx, move |c| {
                c.remove_probe(&a.probe_id)
                    .map_err(|e| explain(e, "removing the probe"))
            })
            .await;
        Ok(match r {
            Ok(p) => {
                let s = format!("probe {} is {}", p.id, p.state.as_str());
                tool_ok(json!({ "probe": p }), s)
            }
            Err(e) => e.result(),
        })
    }
}
