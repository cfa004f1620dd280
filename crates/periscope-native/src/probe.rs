//! The probe model lives at the runtime seam ([`periscope_runtime::probe`]); this module
//! re-exports it under the paths the engine uses, and keeps the rules only the native engines
//! apply: the rate window and how a session ends when every probe has.

pub use periscope_runtime::probe::*;

/// A rate limit as both engines apply it: so many hits per fixed window, never more than the
/// rate. From one hit a second up, whole hits per second (2.5/s: 2 per second); below it the
/// window grows instead (0.5/s: one hit per 2 s).
pub(crate) fn rate_window(limit: f64) -> (u64, std::time::Duration) {
    if limit >= 1.0 {
        (limit.floor() as u64, std::time::Duration::from_secs(1))
    } else {
        (1, std::time::Duration::from_secs_f64(1.0 / limit.max(1e-6)))
    }
}

/// Why a session ends when every probe has: the first one's failure (said as the session's
/// error), else their hit limits.
pub(crate) fn all_ended(tallies: &Tallies) -> EndReason {
    let failed = tallies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find_map(|t| match &t.state {
            ProbeState::Failed(m) => Some(m.clone()),
            _ => None,
        });
    failed.map_or(EndReason::HitLimit, EndReason::Error)
}

#[cfg(test)]
mod tests {
    use super::rate_window;
    use std::time::Duration;

    #[test]
    fn a_rate_window_never_admits_more_than_the_rate() {
        assert_eq!(rate_window(5.0), (5, Duration::from_secs(1)));
        assert_eq!(rate_window(2.5), (2, Duration::from_secs(1)));
        assert_eq!(rate_window(0.5), (1, Duration::from_secs(2)));
        let (n, w) = rate_window(0.25);
        assert_eq!((n, w), (1, Duration::from_secs(4)));
    }
}
