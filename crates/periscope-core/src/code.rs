//! A question about an instance's code, asked by the server of the agent that reported the
//! instance (the server never opens a binary: the process and its files are on the agent's
//! machine). The agent finds its pending requests in its desired-state answer and posts each
//! answer back (`POST /api/v1/agent/code/{id}`); the answer's shapes are the runtime seam's
//! (`periscope_runtime::CodeAnswer`).

use crate::api::NewProbe;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One pending code request for an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CodeRequest {
    /// What the answer is posted to: `POST /api/v1/agent/code/{id}`.
    pub id: i64,
    /// The instance whose code is asked about, as the agent reported it.
    pub instance: String,
    pub pid: u32,
    pub executable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub ask: CodeAsk,
}

/// What is asked of the instance's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CodeAsk {
    /// A source file's lines (matched by path suffix), with the lines a probe can take.
    Source {
        file: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u32>,
    },
    /// The functions whose qualified name contains `pattern`.
    Functions { pattern: String },
    /// The constants and format strings that can produce `text`.
    Messages { text: String },
    /// Resolve the probe as placing it would, without placing it.
    Check { probe: Box<NewProbe> },
}

/// A probe check (`POST /api/v1/probes/check`): the probe would be placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checked {
    pub ok: bool,
    /// The instance whose binary it was resolved against (none matches the target yet: null).
    pub checked_on: Option<String>,
    /// Code addresses the probe would cover there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
