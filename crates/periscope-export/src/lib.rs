//! Exporters: every event to the user's own stack. [`otlp`] sends OTLP logs and metrics to an
//! OpenTelemetry collector (gRPC or HTTP); [`jsonl`] writes rotated JSON-lines files.

pub mod jsonl;
pub mod otlp;
mod points;
pub mod records;
