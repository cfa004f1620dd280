//! The events of the API: a probe's stored events (`GET /api/v1/probes/{id}/events`), waiting
//! for more (`.../wait`), and the live stream of every event (`GET /api/v1/events/stream`,
//! server-sent events, resumable with `Last-Event-ID`).

use crate::openapi::{EventList, EventsGone};
use crate::request::{ApiError, ApiQuery, ApiResult, Request};
use crate::routes::{answer, find_probe, ProbeId};
use crate::store::{self, StoreError, StoredEvent};
use crate::{db, AppState};
use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use periscope_core::api::{Probe, ProbeLifecycle, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This module's part of the API.
pub(crate) fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(probe_events))
        .routes(routes!(wait_events))
        .routes(routes!(stream_events))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// RFC 3339 time
    #[param(format = DateTime)]
    since: Option<String>,
    /// cursor: the seq of the last event seen
    after: Option<i64>,
    /// at most this many (default 100)
    limit: Option<usize>,
}

/// A `since` query parameter as milliseconds since the epoch.
pub(crate) fn since_param(since: Option<&str>) -> Result<Option<i64>, ApiError> {
    since
        .map(|s| {
            store::parse_rfc3339_ms(s).ok_or_else(|| {
                ApiError::bad(
                    "since",
                    format!("`{s}` is not an RFC 3339 time such as 2026-11-22T10:00:00Z"),
                )
            })
        })
        .transpose()
}

fn raw_events(events: &[StoredEvent]) -> Result<Vec<Value>, ApiError> {
    events
        .iter()
        .map(|e| {
            serde_json::from_str(&e.body)
                .map(with_text)
                .map_err(|e| ApiError::from(StoreError::Json(e)))
        })
        .collect()
}

/// The event as stored, with `text` added: the one text form every surface shows
/// (`periscope_core::render::event_text`), so the console need not format events itself.
fn with_text(mut v: Value) -> Value {
    let text = serde_json::from_value::<periscope_core::event::Event>(v.clone())
        .map(|e| periscope_core::render::event_text(&e));
    if let (Ok(text), Some(o)) = (text, v.as_object_mut()) {
        o.insert("text".into(), Value::String(text));
    }
    v
}

/// Stored events of a probe, oldest first. `after` is the `seq` of the last event already
/// seen (a cursor); `since` an RFC 3339 time.
pub async fn probe_events_page(
    state: &Arc<AppState>,
    id: &str,
    since: Option<&str>,
    after: Option<i64>,
    limit: Option<usize>,
) -> Result<(Probe, Vec<Value>), ApiError> {
    let probe = find_probe(state, id).await?;
    let since_ms = since_param(since)?;
    let limit = limit.unwrap_or(100).clamp(1, 10_000);
    let id = id.to_string();
    let events = db(state, move |s| {
        s.events(Some(&id), after.unwrap_or(0), since_ms, limit)
    })
    .await?;
    Ok((probe, raw_events(&events)?))
}

/// Stored events of a probe, oldest first
#[utoipa::path(get, path = "/api/v1/probes/{id}/events", description = "Needs a token of role viewer.",
    params(ProbeId, EventsQuery),
    responses(
        (status = 200, description = "OK", body = EventList),
        (status = 404, description = "No such probe, or the probe was removed: then `events` still holds what it gathered",
            body = EventsGone),
    ))]
async fn probe_events(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "event.list").await?;
    let (probe, events) =
        probe_events_page(r.state(), &id, q.since.as_deref(), q.after, q.limit).await?;
    answer(
        &id,
        probe.state == ProbeLifecycle::Removed,
        json!({ "events": events }),
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// cursor
    after: Option<i64>,
    /// how many events to wait for (at most 1000); 0: what is stored now, without waiting
    count: Option<usize>,
    /// longest wait in milliseconds (default 5000, at most 600000)
    timeout_ms: Option<u64>,
}

/// Waits until `count` events of probe `id` after `after` are stored, or `timeout` passes.
pub async fn wait_for(
    state: &Arc<AppState>,
    id: &str,
    after: Option<i64>,
    count: usize,
    timeout: Duration,
) -> Result<(Probe, Vec<Value>), ApiError> {
    let probe = find_probe(state, id).await?;
    // `count=0`: what is stored now, without waiting.
    let (count, timeout) = match count {
        0 => (1000, Duration::ZERO),
        n => (n.min(1000), timeout),
    };
    // Subscribe before reading what is stored, so nothing falls between the two.
    let mut live = state.events.subscribe();
    let after = after.unwrap_or(0);
    let id2 = id.to_string();
    let mut events = db(state, move |s| s.events(Some(&id2), after, None, count)).await?;
    let mut last = events.last().map(|e| e.seq).unwrap_or(after);
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < count {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, live.recv()) => next,
            _ = state.stopped() => break,
        };
        match next {
            Err(_) => break,
            Ok(Ok(e)) => {
                if e.probe == id && e.seq > last {
                    last = e.seq;
                    events.push((*e).clone());
                }
            }
            Ok(Err(RecvError::Lagged(_))) => {
                // Fell behind the live feed: catch up from the store.
                let id2 = id.to_string();
                let more = count - events.len();
                let extra = db(state, move |s| s.events(Some(&id2), last, None, more)).await?;
                if let Some(e) = extra.last() {
                    last = e.seq;
                }
                events.extend(extra);
            }
            Ok(Err(RecvError::Closed)) => break,
        }
    }
    Ok((probe, raw_events(&events)?))
}

/// Wait until `count` events after `after` are stored or the timeout passes
#[utoipa::path(get, path = "/api/v1/probes/{id}/wait", description = "Needs a token of role viewer.",
    params(ProbeId, WaitQuery),
    responses(
        (status = 200, description = "OK", body = EventList),
        (status = 404, description = "No such probe, or the probe was removed: then `events` still holds what it gathered",
            body = EventsGone),
    ))]
async fn wait_events(
    r: Request,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult {
    r.caller(Role::Viewer, "event.wait").await?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(5_000).min(600_000));
    let (probe, events) = wait_for(r.state(), &id, q.after, q.count.unwrap_or(1), timeout).await?;
    answer(
        &id,
        probe.state == ProbeLifecycle::Removed,
        json!({ "events": events }),
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// only this probe's events
    probe: Option<String>,
}

/// Live events as server-sent events; `id` is the event seq; send Last-Event-ID to resume
///
/// A client that reconnects with `Last-Event-ID` first gets what it missed from the store.
#[utoipa::path(get, path = "/api/v1/events/stream", params(StreamQuery),
    responses(
        (status = 200, description = "text/event-stream: each event's `data` is an Event with its `text` (EventWithText)", content_type = "text/event-stream", body = String),
        (status = 404, response = crate::openapi::NotFound),
    ))]
async fn stream_events(r: Request, ApiQuery(q): ApiQuery<StreamQuery>) -> ApiResult {
    let last_id: Option<i64> = r
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    r.caller(Role::Viewer, "event.stream").await?;
    if let Some(p) = &q.probe {
        find_probe(r.state(), p).await?;
    }
    let state = r.state().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(1024);
    let mut live = state.events.subscribe();
    tokio::spawn(async move {
        let probe = q.probe;
        let mut last = match last_id {
            Some(id) => id,
            None => db(&state, |s| s.event_totals().map(|t| t.0))
                .await
                .unwrap_or(0),
        };
        // Replay what the client missed, then follow the live feed.
        if !send_stored(&state, probe.as_deref(), &mut last, &tx).await {
            return;
        }
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                // A stopping server ends the stream, so the client sees the end at once.
                _ = state.stopped() => return,
            };
            match next {
                Ok(e) => {
                    if e.seq <= last || probe.as_ref().is_some_and(|p| p != &e.probe) {
                        continue;
                    }
                    last = e.seq;
                    if tx.send(Ok(sse_event(&e))).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the live feed: catch up from the store.
                    if !send_stored(&state, probe.as_deref(), &mut last, &tx).await {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn sse_event(e: &StoredEvent) -> Event {
    let data = serde_json::from_str::<Value>(&e.body)
        .map(|v| with_text(v).to_string())
        .unwrap_or_else(|_| e.body.clone());
    Event::default().id(e.seq.to_string()).data(data)
}

/// Sends the stored events after `*last` (of `probe`, or all), page by page, moving `*last`.
/// False when the client has gone.
async fn send_stored(
    state: &Arc<AppState>,
    probe: Option<&str>,
    last: &mut i64,
    tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
) -> bool {
    loop {
        let (p, after) = (probe.map(str::to_string), *last);
        let page = db(state, move |s| s.events(p.as_deref(), after, None, 1000))
            .await
            .unwrap_or_default();
        for e in &page {
            if tx.send(Ok(sse_event(e))).await.is_err() {
                return false;
            }
            *last = e.seq;
        }
        if page.len() < 1000 {
            return true;
        }
    }
}
