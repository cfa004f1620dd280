//! Periscope's vocabulary, shared by every layer: where probes go ([`Location`]), what they
//! evaluate ([`expr`], [`template`]), and what comes back ([`Value`], [`event`]).
//! Pure data and parsing: no OS code lives here.

pub mod api;
pub mod code;
pub mod compile;
pub mod event;
pub mod expr;
pub mod interval;
pub mod location;
pub mod redact;
pub mod render;
pub mod schema;
pub mod template;
pub mod value;
pub mod verify;

pub use location::Location;
pub use value::Value;
