//! One execution of a source line reports once, on both engines. A line can map to several
//! code addresses (a loop head split in two, an overflow check's panic path); a thread that
//! leaves the line's first run at a lower address and comes back at a higher one, in the same
//! frame (CFA) and scope, is still running the same execution of the line.

use std::collections::HashMap;

/// A thread's last hit of a probe.
#[derive(Clone, Copy)]
struct LastHit {
    site_addr: u64,
    cfa: u64,
    scope: gimli::UnitOffset,
    /// Whether that hit was reported (a repeat is not, and the next one is judged afresh).
    reported: bool,
}

/// The last hit of each (thread, probe).
#[derive(Default)]
pub(crate) struct Repeats {
    last: HashMap<(i32, usize), LastHit>,
}

impl Repeats {
    /// Whether this hit of probe `pi` at `addr` (in `scope`, frame `cfa`) continues an
    /// execution already reported on thread `tid`. Probes with one site never repeat.
    pub(crate) fn is_repeat(
        &mut self,
        tid: i32,
        pi: usize,
        sites: usize,
        scope: gimli::UnitOffset,
        addr: u64,
        cfa: Option<u64>,
    ) -> bool {
        if sites < 2 {
            return false;
        }
        let cfa = cfa.unwrap_or(0);
        let now = LastHit {
            site_addr: addr,
            cfa,
            scope,
            reported: true,
        };
        let prev = self.last.insert((tid, pi), now);
        let repeat = prev
            .is_some_and(|p| p.reported && p.cfa == cfa && p.scope == scope && addr > p.site_addr);
        if repeat {
            if let Some(h) = self.last.get_mut(&(tid, pi)) {
                h.reported = false;
            }
        }
        repeat
    }

    /// Forgets a probe taken out.
    pub(crate) fn forget(&mut self, pi: usize) {
        self.last.retain(|(_, p), _| *p != pi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_address_in_the_same_frame_and_scope_is_the_same_execution() {
        let scope = gimli::UnitOffset(10);
        let mut r = Repeats::default();
        assert!(!r.is_repeat(1, 0, 2, scope, 0x100, Some(0x7000)));
        assert!(r.is_repeat(1, 0, 2, scope, 0x120, Some(0x7000)));
        // The next run of the line starts at the low address again: reported.
        assert!(!r.is_repeat(1, 0, 2, scope, 0x100, Some(0x7000)));
        // Another frame (a recursive call) or another thread is another execution.
        assert!(!r.is_repeat(1, 0, 2, scope, 0x120, Some(0x6f00)));
        assert!(!r.is_repeat(2, 0, 2, scope, 0x120, Some(0x7000)));
        // One site: never a repeat.
        assert!(!r.is_repeat(1, 1, 1, scope, 0x100, None));
        assert!(!r.is_repeat(1, 1, 1, scope, 0x100, None));
    }
}
