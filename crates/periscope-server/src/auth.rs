//! Bearer tokens, roles and the audit trail.
//!
//! Tokens are random (`psk_` + 40 hex digits) and stored only as SHA-256 hashes; the server
//! keeps the table in memory too, so checking a request costs no database read. Every denied
//! request is audited with who tried, what and from where.

use crate::store::{Store, StoreError};
use crate::{db, AppState, ServerError};
use axum::http::{HeaderMap, StatusCode};
use periscope_core::api::{AuditEntry, Role, TokenInfo};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes)?;
    Ok(format!("psk_{}", hex::encode(bytes)))
}

/// hash → token, for every token ever created (revoked ones keep `revoked_at`).
pub struct TokenTable(RwLock<HashMap<String, TokenInfo>>);

impl TokenTable {
    pub fn load(store: &mut Store) -> Result<TokenTable, StoreError> {
        Ok(TokenTable(RwLock::new(
            store.token_hashes()?.into_iter().collect(),
        )))
    }

    /// Replaces the table with the database's (another replica changed a token).
    pub fn replace(&self, all: Vec<(String, TokenInfo)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = all.into_iter().collect();
    }

    fn lookup(&self, token: &str) -> Option<TokenInfo> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(&hash_token(token)).cloned()
    }

    pub fn insert(&self, hash: String, info: TokenInfo) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(hash, info);
    }

    pub fn revoke(&self, name: &str, at: &str) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        for t in map.values_mut().filter(|t| t.name == name) {
            t.revoked_at.get_or_insert_with(|| at.to_string());
        }
    }
}

/// Whether a token has the shape `new_token` gives (`psk_` and 40 hex digits).
pub fn well_formed(token: &str) -> bool {
    token
        .strip_prefix("psk_")
        .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// On the first start (no token at all), creates the `admin` token and writes it to `path`,
/// readable by the owner only. Returns that path. Replicas starting together on one empty
/// database make one token between them: the one whose insert wins writes the file. With a
/// `given` token (from a Secret), that one is stored and no file is written.
pub fn bootstrap_admin(
    store: &mut Store,
    path: &Path,
    given: Option<&str>,
) -> Result<Option<PathBuf>, ServerError> {
    if store.token_count()? > 0 {
        return Ok(None);
    }
    if let Some(token) = given {
        let now = periscope_core::event::now_rfc3339();
        store.insert_first_admin(&hash_token(token), &now)?;
        return Ok(None);
    }
    let token = new_token().map_err(|e| ServerError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("no randomness for a token: {e}")),
    })?;
    // Written aside first: a token stored but never written would lock everyone out.
    let aside = PathBuf::from(format!("{}.{}.new", path.display(), std::process::id()));
    let write_err = |source| ServerError::Write {
        path: path.to_path_buf(),
        source,
    };
    write_private(&aside, &format!("{token}\n")).map_err(write_err)?;
    let now = periscope_core::event::now_rfc3339();
    match store.insert_first_admin(&hash_token(&token), &now) {
        Ok(true) => {
            std::fs::rename(&aside, path).map_err(write_err)?;
            Ok(Some(path.to_path_buf()))
        }
        other => {
            let _ = std::fs::remove_file(&aside);
            other?;
            Ok(None)
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Who is calling: the token's name and role, their address, and the surface they use.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub remote: String,
    pub via: String,
}

/// A refused request: status and message (the JSON body says what to do).
#[derive(Debug)]
pub struct Denied {
    pub status: StatusCode,
    pub message: String,
}

/// Checks the bearer token for a request that needs `needed`; audits refusals.
pub async fn authorize(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    remote: std::net::SocketAddr,
    needed: Role,
    action: &str,
) -> Result<Caller, Denied> {
    let via = headers
        .get("x-periscope-via")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 16)
        .unwrap_or("api")
        .to_string();
    authorize_token(
        state,
        bearer(headers),
        remote.to_string(),
        via,
        needed,
        action,
    )
    .await
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
}

/// Like [`authorize`], for a token already taken from the request (the MCP surface).
pub async fn authorize_token(
    state: &Arc<AppState>,
    token: Option<String>,
    remote: String,
    via: String,
    needed: Role,
    action: &str,
) -> Result<Caller, Denied> {
    let mut found = token.as_deref().and_then(|t| state.tokens.lookup(t));
    if let (Some(t), None, Some(_)) = (&token, &found, state.peers.get()) {
        // Made on another replica a moment ago, before its announcement arrived here.
        let hash = hash_token(t);
        let h2 = hash.clone();
        if let Ok(Some(info)) = db(state, move |s| s.token_by_hash(&h2)).await {
            state.tokens.insert(hash, info.clone());
            found = Some(info);
        }
    }
    let (actor, refusal) = match (&token, &found) {
        (None, _) => (
            "anonymous".to_string(),
            Some((
                StatusCode::UNAUTHORIZED,
                "authentication required: send `Authorization: Bearer TOKEN` (periscope token create makes one)".to_string(),
            )),
        ),
        (Some(_), None) => (
            "unknown token".to_string(),
            Some((
                StatusCode::UNAUTHORIZED,
                "the token is not valid for this server".to_string(),
            )),
        ),
        (Some(_), Some(t)) if t.revoked_at.is_some() => (
            t.name.clone(),
            Some((
                StatusCode::UNAUTHORIZED,
                format!("the token `{}` was revoked", t.name),
            )),
        ),
        (Some(_), Some(t)) if !t.role.allows(needed) => (
            t.name.clone(),
            Some((
                StatusCode::FORBIDDEN,
                format!(
                    "the token `{}` has role {}; {action} needs {}",
                    t.name,
                    t.role,
                    match needed {
                        Role::Agent => "an agent token".to_string(),
                        r => format!("{r} or above"),
                    }
                ),
            )),
        ),
        (Some(_), Some(t)) => (t.name.clone(), None),
    };
    if let Some((status, message)) = refusal {
        record(
            state,
            AuditEntry {
                id: 0,
                ts: periscope_core::event::now_rfc3339(),
                actor,
                action: action.to_string(),
                target: String::new(),
                outcome: "denied".into(),
                remote,
                via,
                detail: serde_json::json!({"status": status.as_u16(), "reason": message}),
            },
        )
        .await;
        return Err(Denied { status, message });
    }
    let t = found.ok_or(Denied {
        status: StatusCode::UNAUTHORIZED,
        message: "authentication required".into(),
    })?;
    Ok(Caller {
        name: t.name,
        role: t.role,
        remote,
        via,
    })
}

/// Appends to the audit log. A failure to write it is logged to stderr: the trail must not
/// silently lose entries, but a full disk should not take the API down either.
pub async fn record(state: &Arc<AppState>, entry: AuditEntry) {
    if let Err(e) = db(state, move |s| s.audit(&entry)).await {
        eprintln!("periscope server: cannot write the audit log: {e}");
    }
}

impl Caller {
    /// An audit entry for something this caller did.
    pub fn audit(&self, action: &str, target: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            id: 0,
            ts: periscope_core::event::now_rfc3339(),
            actor: self.name.clone(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: "ok".into(),
            remote: self.remote.clone(),
            via: self.via.clone(),
            detail,
        }
    }
}
