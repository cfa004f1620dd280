//! The breakpoints of a session: which addresses hold our `int3`, which probe sites each one
//! serves, and the ones taken out while the session runs.

use super::Engine;
use crate::error::NativeError;
use crate::trap::{self, Breakpoint, Displaced};
use crate::unwind::{cfa_rule, CfaRule};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One probe site at a breakpoint address.
pub(crate) struct SiteRuntime {
    pub(crate) probe: usize,
    pub(crate) site: usize,
    pub(crate) cfa: Option<CfaRule>,
}

/// Address → original byte of every `int3` in place, shared with the watchdog so it can put
/// the code back even if the tracer thread is stuck.
pub(crate) type Originals = Arc<Mutex<HashMap<u64, u8>>>;

#[derive(Default)]
pub(crate) struct Breakpoints {
    live: HashMap<u64, Breakpoint>,
    /// Breakpoints removed while the session runs. A thread may have hit one just before
    /// (its SIGTRAP still to be reported): it is rewound to the original instruction.
    retired: HashMap<u64, Breakpoint>,
    /// Breakpoint address → the probe sites there.
    sites: HashMap<u64, Vec<SiteRuntime>>,
    originals: Originals,
}

impl Breakpoints {
    /// Whether any breakpoint is or was in place (a SIGTRAP may be ours).
    pub(crate) fn any(&self) -> bool {
        !self.live.is_empty() || !self.retired.is_empty()
    }

    /// The map the watchdog restores from.
    pub(crate) fn originals(&self) -> Originals {
        self.originals.clone()
    }

    pub(crate) fn is_live(&self, addr: u64) -> bool {
        self.live.contains_key(&addr)
    }

    pub(crate) fn is_retired(&self, addr: u64) -> bool {
        self.retired.contains_key(&addr)
    }

    /// Whether `addr` holds, or held during this session, one of our breakpoints.
    pub(crate) fn is_ours(&self, addr: u64) -> bool {
        self.is_live(addr) || self.is_retired(addr)
    }

    pub(crate) fn get(&self, addr: u64) -> Option<&Breakpoint> {
        self.live.get(&addr)
    }

    /// The original first byte of a breakpoint removed during the session.
    pub(crate) fn retired_original(&self, addr: u64) -> Option<u8> {
        self.retired
            .get(&addr)
            .and_then(|b| b.original.first().copied())
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = &Breakpoint> {
        self.live.values()
    }

    pub(crate) fn sites_at(&self, addr: u64) -> Vec<(usize, usize, Option<CfaRule>)> {
        self.sites
            .get(&addr)
            .map(|v| v.iter().map(|s| (s.probe, s.site, s.cfa)).collect())
            .unwrap_or_default()
    }

    /// The breakpoint whose out-of-line copy starts at `rip`.
    pub(crate) fn original_for_slot(&self, rip: u64) -> Option<u64> {
        self.all().find_map(|bp| match bp.displaced {
            Displaced::OutOfLine { slot, .. } if rip == slot => Some(bp.address),
            _ => None,
        })
    }

    /// Where in the program a thread at `rip` inside an out-of-line copy is, as far as the
    /// program can tell: before the displaced instruction (the copy's start: the original
    /// address) or after it (at the jump back: the next original instruction). `None` when
    /// `rip` is in no copy, or inside a multi-instruction relocation (where only running on
    /// gets it out).
    pub(crate) fn program_pc_for(&self, rip: u64) -> Option<u64> {
        self.all().find_map(|bp| match bp.displaced {
            Displaced::OutOfLine { slot, .. } if rip == slot => Some(bp.address),
            Displaced::OutOfLine { back, .. } if rip == back => {
                Some(bp.address + bp.original.len() as u64)
            }
            _ => None,
        })
    }

    fn all(&self) -> impl Iterator<Item = &Breakpoint> {
        self.live.values().chain(self.retired.values())
    }

    fn insert(&mut self, bp: Breakpoint) {
        self.originals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(bp.address, bp.original[0]);
        self.live.insert(bp.address, bp);
    }

    fn add_site(&mut self, addr: u64, site: SiteRuntime) {
        self.sites.entry(addr).or_default().push(site);
    }

    /// Drops probe `pi`'s sites at `addr`; true when no probe is left there.
    fn remove_site(&mut self, addr: u64, pi: usize) -> bool {
        let Some(list) = self.sites.get_mut(&addr) else {
            return false;
        };
        list.retain(|s| s.probe != pi);
        if !list.is_empty() {
            return false;
        }
        self.sites.remove(&addr);
        true
    }

    /// Puts a retired breakpoint back in service (its out-of-line slot is still in place).
    /// False when there is none at `addr`.
    fn revive(&mut self, addr: u64) -> bool {
        match self.retired.remove(&addr) {
            Some(bp) => {
                self.insert(bp);
                true
            }
            None => false,
        }
    }

    /// Takes a live breakpoint out of service; it is kept as retired (a thread that trapped on
    /// it is still rewound). Returns it, for its original bytes.
    fn retire(&mut self, addr: u64) -> Option<&Breakpoint> {
        let bp = self.live.remove(&addr)?;
        self.originals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
        Some(self.retired.entry(addr).or_insert(bp))
    }

    /// Forgets every breakpoint in `[lo, hi)`, live or retired, and the probe sites there,
    /// writing nothing: the code there was unmapped (`dlclose`). Returns their addresses.
    pub(crate) fn forget_range(&mut self, lo: u64, hi: u64) -> Vec<u64> {
        let inside = |a: &u64| *a >= lo && *a < hi;
        let mut gone: Vec<u64> = self.live.keys().copied().filter(inside).collect();
        gone.extend(self.retired.keys().copied().filter(inside));
        let mut originals = self.originals.lock().unwrap_or_else(|p| p.into_inner());
        for a in &gone {
            self.live.remove(a);
            self.retired.remove(a);
            originals.remove(a);
        }
        self.sites.retain(|a, _| !inside(a));
        gone
    }

    /// Drops probe `pi`'s sites at `addr`, leaving the breakpoint in place even when no probe
    /// is left there (it is re-armed at once).
    pub(crate) fn drop_site(&mut self, addr: u64, pi: usize) {
        self.remove_site(addr, pi);
    }

    /// Forgets every breakpoint (after the bytes were written back).
    pub(crate) fn clear(&mut self) {
        self.live.clear();
        self.originals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl Engine {
    /// Puts in the breakpoints of probe `pi` (several probes may share one breakpoint).
    pub(crate) fn arm(&mut self, pi: usize) -> Result<(), NativeError> {
        let missing: Vec<usize> = self.probes[pi]
            .sites
            .iter()
            .map(|s| s.object)
            .filter(|o| !self.scratch.has(*o))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            self.with_stopped_leader(|engine, tid| {
                for &o in &missing {
                    engine.allocate_scratch(tid, o)?;
                }
                Ok(())
            })?;
        }
        for si in 0..self.probes[pi].sites.len() {
            let site = &self.probes[pi].sites[si];
            let (addr, object, file_pc) = (site.address, site.object, site.file_address);
            let cfa = cfa_rule(&self.target.objects[object].index, file_pc);
            self.breakpoints.add_site(
                addr,
                SiteRuntime {
                    probe: pi,
                    site: si,
                    cfa,
                },
            );
            self.place(addr, object)?;
        }
        Ok(())
    }

    /// Puts our `int3` at `addr` in `object` (its scratch area mapped), unless one is there:
    /// a retired one is put back in service, else the displaced instruction is planned.
    pub(crate) fn place(&mut self, addr: u64, object: usize) -> Result<(), NativeError> {
        if self.breakpoints.is_live(addr) {
            return Ok(());
        }
        if self.breakpoints.revive(addr) {
            return self.mem.write(addr, &[0xcc]);
        }
        let mut code = [0u8; 16];
        self.mem
            .read(addr, &mut code)
            .map_err(|e| NativeError::Breakpoint {
                address: addr,
                reason: e.to_string(),
            })?;
        let slot = self.scratch.next_slot(object, addr)?;
        let (bp, slot_code) = trap::plan(addr, &code, slot)?;
        if let Some(c) = slot_code {
            self.mem.write(slot, &c)?;
            self.scratch.use_slot(object);
        }
        self.register_failsafe(addr, bp.original[0])?;
        self.mem.write(addr, &[0xcc])?;
        self.breakpoints.insert(bp);
        Ok(())
    }

    /// Takes out the breakpoints of probe `pi` that no other probe uses. Threads keep running:
    /// one byte is written back, and a thread that trapped on it meanwhile is rewound when its
    /// stop is reported (see `on_trap`).
    pub(crate) fn disarm(&mut self, pi: usize) {
        let addrs: Vec<u64> = self.probes[pi].sites.iter().map(|s| s.address).collect();
        for addr in addrs {
            if self.breakpoints.remove_site(addr, pi) && !self.is_loader_breakpoint(addr) {
                self.unpatch(addr);
            }
        }
        self.repeats.forget(pi);
    }

    /// Writes every original byte back (breakpoints stay known as retired, so a thread that
    /// trapped on one is still rewound).
    pub(crate) fn restore_code(&mut self) {
        let live: Vec<u64> = self.breakpoints.live().map(|bp| bp.address).collect();
        for addr in live {
            self.unpatch(addr);
        }
    }

    /// The original byte back at `addr`, the breakpoint retired.
    fn unpatch(&mut self, addr: u64) {
        if let Some(bp) = self.breakpoints.retire(addr) {
            let _ = self.mem.write(addr, &bp.original[..1]);
        }
    }
}
