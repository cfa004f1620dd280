//! A blocking client for the server's HTTP API (`/api/v1`). The CLI, the agent and the MCP
//! server all speak to the server through it, so each endpoint's path and envelope is written
//! once. Blocking on purpose: its users are command-line commands and the agent's own threads.

use periscope_core::api::{
    AgentReport, AuditEntry, Desired, Instance, NewProbe, NewToken, Probe, ServerStatus, TokenInfo,
    Verdict,
};
use periscope_core::event::Event;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::io::BufRead;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error status; `message` is its explanation.
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    #[error("unexpected answer from the server for {what}: {reason}")]
    Decode { what: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One event from the live stream: the server's sequence number and the event.
#[derive(Debug, Clone)]
pub struct StreamedEvent {
    pub id: Option<i64>,
    pub event: Event,
}

/// How long a code view may take: the server waits up to its --code-timeout (30 s by
/// default) for the instance's agent, and answers then.
const CODE_WAIT: Duration = Duration::from_secs(70);

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    via: String,
    http: ureq::Agent,
}

#[derive(Deserialize)]
struct ProbeEnvelope {
    probe: Probe,
}
#[derive(Deserialize)]
struct ProbesEnvelope {
    probes: Vec<Probe>,
}
#[derive(Deserialize)]
struct EventsEnvelope {
    events: Vec<Event>,
}
#[derive(Deserialize)]
struct InstancesEnvelope {
    instances: Vec<Instance>,
}
#[derive(Deserialize)]
struct TokenEnvelope {
    token: TokenInfo,
}
#[derive(Deserialize)]
struct TokensEnvelope {
    tokens: Vec<TokenInfo>,
}
#[derive(Deserialize)]
struct AuditEnvelope {
    entries: Vec<AuditEntry>,
}

/// Which stored events to fetch.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only events after this sequence number (a cursor from an earlier page).
    pub after: Option<i64>,
    pub limit: Option<usize>,
}

impl Client {
    /// `base` is the server's URL (`http://127.0.0.1:7700`); `via` names the surface in the
    /// audit log (`cli`, `mcp`, `agent`).
    pub fn new(base: &str, token: Option<String>, via: &str) -> Client {
        Self::with_ca(base, token, via, None).unwrap_or_else(|_| {
            // Unreachable: without a CA there is nothing to parse.
            Self::with_ca(base, None, via, None).expect("plain client")
        })
    }

    /// Like [`Client::new`], trusting the certificates in `ca_pem` (PEM) for an HTTPS server
    /// with a private CA or a self-signed certificate.
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        via: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)));
        if let Some(pem) = ca_pem {
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| ClientError::Decode {
                    what: "the CA certificate".into(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ClientError::Decode {
                    what: "the CA certificate".into(),
                    reason: "no certificate in it (expected PEM)".into(),
                });
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let http = config.build().into();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            via: via.to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// Adds what every request carries: the surface (for the audit log) and the bearer token.
    fn identify<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header("x-periscope-via", &self.via);
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut response = result.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        // A removed probe answers 404 and still describes itself in the body (its
        // tombstone): what the caller asked for, so it is the answer.
        if status == 404 {
            if let Ok(v) = serde_json::from_str(&text) {
                return Ok(v);
            }
        }
        if status >= 400 {
            return Err(status_error(status, text));
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let mut req = self.identify(self.http.get(self.url(path)));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let req = req
            .config()
            .timeout_global(Some(timeout.unwrap_or(Duration::from_secs(30))))
            .build();
        self.finish(path, req.call())
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ClientError> {
        self.send_within(method, path, body, Duration::from_secs(30))
    }

    fn send_within<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl serde::Serialize>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let result = match method {
            "DELETE" => self
                .identify(self.http.delete(&url))
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            _ => {
                let req = self
                    .identify(self.http.post(&url))
                    .config()
                    .timeout_global(Some(timeout))
                    .build();
                match body {
                    Some(b) => req.send_json(b),
                    None => req.send_empty(),
                }
            }
        };
        self.finish(path, result)
    }

    pub fn add_probe(&self, probe: &NewProbe) -> Result<Probe, ClientError> {
        let e: ProbeEnvelope = self.send("POST", "/probes", Some(probe))?;
        Ok(e.probe)
    }

    /// Active probes; with `all`, removed and expired ones too.
    pub fn probes(&self, all: bool) -> Result<Vec<Probe>, ClientError> {
        let q = if all {
            vec![("all", "true".to_string())]
        } else {
            vec![]
        };
        let e: ProbesEnvelope = self.get("/probes", &q, None)?;
        Ok(e.probes)
    }

    pub fn probe(&self, id: &str) -> Result<Probe, ClientError> {
        let e: ProbeEnvelope = self.get(&format!("/probes/{}", encode(id)), &[], None)?;
        Ok(e.probe)
    }

    /// The probe once every instance it applies to reported installed or an error (or after
    /// `wait`).
    pub fn settled_probe(&self, id: &str, wait: Duration) -> Result<Probe, ClientError> {
        let e: ProbeEnvelope = self.get(
            &format!("/probes/{}", encode(id)),
            &[("settle_ms", wait.as_millis().to_string())],
            Some(wait + Duration::from_secs(10)),
        )?;
        Ok(e.probe)
    }

    /// Puts a paused probe back where its overhead budget paused it; `budget_ms` sets a new
    /// budget (milliseconds of the target's time per 10 s).
    pub fn resume_probe(&self, id: &str, budget_ms: Option<u64>) -> Result<Probe, ClientError> {
        let body = periscope_core::api::ResumeProbe { budget_ms };
        let e: ProbeEnvelope = self.send(
            "POST",
            &format!("/probes/{}/resume", encode(id)),
            Some(&body),
        )?;
        Ok(e.probe)
    }

    /// A verify probe's result, summed across instances.
    pub fn verify_result(&self, id: &str) -> Result<Verdict, ClientError> {
        self.get(&format!("/probes/{}/verify", encode(id)), &[], None)
    }

    pub fn remove_probe(&self, id: &str) -> Result<Probe, ClientError> {
        let e: ProbeEnvelope =
            self.send("DELETE", &format!("/probes/{}", encode(id)), None::<&()>)?;
        Ok(e.probe)
    }

    pub fn events(&self, probe: &str, query: &EventQuery) -> Result<Vec<Event>, ClientError> {
        let mut q = Vec::new();
        if let Some(s) = &query.since {
            q.push(("since", s.clone()));
        }
        if let Some(a) = query.after {
            q.push(("after", a.to_string()));
        }
        if let Some(l) = query.limit {
            q.push(("limit", l.to_string()));
        }
        let e: EventsEnvelope = self.get(&format!("/probes/{}/events", encode(probe)), &q, None)?;
        Ok(e.events)
    }

    /// Blocks until `count` events of the probe after `after` are stored, or `timeout` passes;
    /// returns what there is then.
    pub fn wait_for_events(
        &self,
        probe: &str,
        after: Option<i64>,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Event>, ClientError> {
        let mut q = vec![
            ("count", count.to_string()),
            ("timeout_ms", timeout.as_millis().to_string()),
        ];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        let e: EventsEnvelope = self.get(
            &format!("/probes/{}/wait", encode(probe)),
            &q,
            Some(timeout + Duration::from_secs(10)),
        )?;
        Ok(e.events)
    }

    pub fn instances(&self) -> Result<Vec<Instance>, ClientError> {
        let e: InstancesEnvelope = self.get("/instances", &[], None)?;
        Ok(e.instances)
    }

    pub fn create_token(&self, token: &NewToken) -> Result<TokenInfo, ClientError> {
        let e: TokenEnvelope = self.send("POST", "/tokens", Some(token))?;
        Ok(e.token)
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let e: TokensEnvelope = self.get("/tokens", &[], None)?;
        Ok(e.tokens)
    }

    pub fn revoke_token(&self, name: &str) -> Result<TokenInfo, ClientError> {
        let e: TokenEnvelope =
            self.send("DELETE", &format!("/tokens/{}", encode(name)), None::<&()>)?;
        Ok(e.token)
    }

    pub fn audit(&self, since: Option<&str>) -> Result<Vec<AuditEntry>, ClientError> {
        let q: Vec<(&str, String)> = since
            .map(|s| ("since", s.to_string()))
            .into_iter()
            .collect();
        let e: AuditEnvelope = self.get("/audit", &q, None)?;
        Ok(e.entries)
    }

    pub fn status(&self) -> Result<ServerStatus, ClientError> {
        self.get("/status", &[], None)
    }

    /// Sends an agent's report (instances, states, events).
    pub fn report(&self, report: &AgentReport) -> Result<(), ClientError> {
        let _: serde_json::Value = self.send("POST", "/agent/report", Some(report))?;
        Ok(())
    }

    /// The agent's desired probes; waits up to `wait` for a version newer than `version`.
    pub fn desired(
        &self,
        agent: &str,
        version: Option<u64>,
        wait: Duration,
    ) -> Result<Desired, ClientError> {
        let mut q = vec![
            ("agent", agent.to_string()),
            ("wait_ms", wait.as_millis().to_string()),
        ];
        if let Some(v) = version {
            q.push(("version", v.to_string()));
        }
        self.get("/agent/desired", &q, Some(wait + Duration::from_secs(10)))
    }

    /// Answers a code request handed out with the desired state.
    pub fn code_answer(
        &self,
        id: i64,
        answer: &periscope_runtime::CodeAnswer,
    ) -> Result<(), ClientError> {
        let _: serde_json::Value = self.send("POST", &format!("/agent/code/{id}"), Some(answer))?;
        Ok(())
    }

    /// A source file of an instance's binary, as its agent reads it (`from`..=`to`, or all).
    pub fn source(
        &self,
        instance: &str,
        file: &str,
        from: Option<u32>,
        to: Option<u32>,
    ) -> Result<periscope_runtime::SourceListing, ClientError> {
        let mut q = vec![("file", file.to_string())];
        q.extend(from.map(|f| ("from", f.to_string())));
        q.extend(to.map(|t| ("to", t.to_string())));
        self.get(
            &format!("/instances/{}/source", encode(instance)),
            &q,
            Some(CODE_WAIT),
        )
    }

    /// Checks a probe against the binary of the first instance its target selects, without
    /// placing it.
    pub fn check_probe(
        &self,
        probe: &NewProbe,
    ) -> Result<periscope_core::code::Checked, ClientError> {
        self.send_within("POST", "/probes/check", Some(probe), CODE_WAIT)
    }

    /// The functions of an instance's binary whose qualified name contains `pattern`.
    pub fn functions(
        &self,
        instance: &str,
        pattern: &str,
    ) -> Result<Vec<periscope_runtime::FunctionInfo>, ClientError> {
        #[derive(Deserialize)]
        struct List {
            functions: Vec<periscope_runtime::FunctionInfo>,
        }
        let l: List = self.get(
            &format!("/instances/{}/functions", encode(instance)),
            &[("pattern", pattern.to_string())],
            Some(CODE_WAIT),
        )?;
        Ok(l.functions)
    }

    /// The places in an instance's code that can produce `text`.
    pub fn messages(
        &self,
        instance: &str,
        text: &str,
    ) -> Result<Vec<periscope_runtime::MessageMatch>, ClientError> {
        #[derive(Deserialize)]
        struct List {
            matches: Vec<periscope_runtime::MessageMatch>,
        }
        let l: List = self.get(
            &format!("/instances/{}/messages", encode(instance)),
            &[("text", text.to_string())],
            Some(CODE_WAIT),
        )?;
        Ok(l.matches)
    }

    /// The live event stream (server-sent events), optionally of one probe, resuming after
    /// event `last_id`. The iterator ends when the connection does.
    pub fn stream(
        &self,
        probe: Option<&str>,
        last_id: Option<i64>,
    ) -> Result<impl Iterator<Item = StreamedEvent>, ClientError> {
        let mut req = self
            .identify(self.http.get(self.url("/events/stream")))
            .header("accept", "text/event-stream");
        if let Some(p) = probe {
            req = req.query("probe", p);
        }
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let mut response = req.call().map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(status_error(status, text));
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        Ok(SseEvents {
            lines: reader.lines(),
        })
    }
}

/// An error answer: the server's `{"error": …}` message, or the body as it is.
fn status_error(status: u16, text: String) -> ClientError {
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(text);
    ClientError::Status { status, message }
}

/// Parses `text/event-stream`: `id:` and `data:` lines, an empty line ends an event.
struct SseEvents<R: BufRead> {
    lines: std::io::Lines<R>,
}

impl<R: BufRead> Iterator for SseEvents<R> {
    type Item = StreamedEvent;
    fn next(&mut self) -> Option<StreamedEvent> {
        let mut id = None;
        let mut data = String::new();
        loop {
            let line = self.lines.next()?.ok()?;
            if line.is_empty() {
                if data.is_empty() {
                    continue; // a keep-alive or a comment block
                }
                match serde_json::from_str(&data) {
                    Ok(event) => return Some(StreamedEvent { id, event }),
                    Err(_) => {
                        data.clear();
                        continue;
                    }
                }
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

/// Percent-encodes a path segment (ids and names are plain, but a user may type anything).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
