//! Pending probes that run in the kernel (a duration, or one given `--engine bpf`): this engine
//! watches the loader for them as for its own (`loader`), and when one resolves in a library
//! just loaded, its sites and capture plans go to the kernel engine's thread by channel
//! ([`crate::kernel::KernelLink`]) instead of breakpoints here. At `dlclose` of that library
//! its uprobes are taken out and it is pending again; a reopen hands it over again.
//!
//! Why take them out at the unload and not leave them: a uprobe is registered on the file's
//! inode and offset, not on the process's memory. When the library is unmapped, its `int3`
//! goes with the process's copy of the page, and the uprobe stays registered on the inode,
//! inert for this process while nothing maps the file (the file still exists on disk, held by
//! the uprobe's reference). Were the library mapped again, the kernel would put the `int3`
//! back into the new mapping by itself, but the probe's plan was made for the old one (its
//! addresses, the index of that file, which may have been rebuilt since under a new inode). So
//! this engine takes the uprobes out while the thread that called `dlclose` is held at
//! `r_brk` (the loader has unmapped the library and holds its lock: no other thread maps it
//! meanwhile), waiting (bounded) until the kernel thread has detached them, and a reopen
//! resolves the probe afresh.

use super::Engine;
use crate::error::NativeError;
use crate::kernel::{self, Adoption};
use crate::probe::{EngineChoice, EngineEvent, ProbeState};
use crate::resolve::ResolvedProbe;
use crate::target::Site;

impl Engine {
    /// Whether probe `pi` runs only in the kernel: its sites are handed over when it arms.
    pub(crate) fn runs_in_kernel(&self, pi: usize) -> bool {
        let spec = &self.probes[pi].spec;
        spec.engine == EngineChoice::Bpf || kernel::needs_kernel(spec)
    }

    /// Hands pending probe `pi`, resolved against a library just loaded, to the kernel engine.
    /// A failure before its uprobes go in (the kernel cannot read what it reads, a breakpoint
    /// of this session is at one of its addresses) ends it with the reason.
    pub(crate) fn hand_to_kernel(&mut self, pi: usize, mut resolved: ResolvedProbe) {
        let busy = {
            let placed = self
                .handoff
                .placed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            resolved
                .sites
                .iter()
                .find(|s| placed.ptrace.contains(&s.address))
                .map(|s| s.address)
        };
        if let Some(addr) = busy {
            let e = format!("a breakpoint of this session is at {addr:#x}, and a uprobe there would take its traps");
            return self.fail_pending(pi, NativeError::Kernel(e));
        }
        let plans = match kernel::plans_for(&self.target, &mut resolved) {
            Ok(plans) => plans,
            Err(why) => {
                let e = format!("it cannot run in the kernel: {why}");
                return self.fail_pending(pi, NativeError::Kernel(e));
            }
        };
        let link = self
            .handoff
            .kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(link) = link else {
            let e = "the kernel engine is not running".to_string();
            return self.fail_pending(pi, NativeError::Kernel(e));
        };
        let message = self.armed_message(pi, &resolved.sites);
        let spec = resolved.spec.clone();
        self.handoff
            .placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kernel
            .push((spec, resolved.sites.iter().map(|s| s.address).collect()));
        self.pending[pi] = None;
        self.handed
            .insert(pi, resolved.sites.iter().map(|s| s.object).collect());
        let adoption = Adoption {
            target: self.target.clone(),
            probe: resolved,
            plans,
            tally: self.tally_at[pi],
            message,
        };
        if !link.adopt(adoption) {
            self.handed.remove(&pi);
            let e = "the kernel engine has ended".to_string();
            self.fail_pending(pi, NativeError::Kernel(e));
        }
    }

    /// Takes probe `pi` back from the kernel engine, if it was handed there: its uprobes out
    /// (waited for, bounded). Whether it was still running there.
    pub(crate) fn take_back(&mut self, pi: usize) -> bool {
        if self.handed.remove(&pi).is_none() {
            return false;
        }
        let id = self.probes[pi].spec.id.clone();
        self.handoff
            .placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kernel
            .retain(|(s, _)| s.id != id);
        let link = self
            .handoff
            .kernel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        link.and_then(|l| l.release(self.tally_at[pi]))
            .unwrap_or(false)
    }

    /// Object `oi` is being unloaded: the probes handed to the kernel with sites in it are
    /// taken back and pending again. One that had ended there (its hit limit, its budget, a
    /// failure to attach, already said by the kernel engine) stays ended.
    pub(crate) fn take_back_unloaded(&mut self, oi: usize, library: &str) {
        let mut hit: Vec<usize> = self
            .handed
            .iter()
            .filter(|(_, objects)| objects.contains(&oi))
            .map(|(pi, _)| *pi)
            .collect();
        hit.sort_unstable();
        for pi in hit {
            if !self.take_back(pi) {
                self.done[pi] = true;
                continue;
            }
            let message = format!(
                "pending again: {library} was unloaded; {} arms when it is loaded again",
                self.probes[pi].spec.location
            );
            self.pending[pi] = Some(message.clone());
            self.tally(pi, |t| t.state = ProbeState::Pending(message.clone()));
            let probe = self.probes[pi].spec.id.clone();
            self.emit(EngineEvent::ProbeStopped {
                probe,
                state: ProbeState::Pending(message),
            });
        }
    }

    /// The address of a kernel probe of this session among `sites`, if any: a breakpoint
    /// there would never see a hit (the uprobe takes the trap first).
    pub(crate) fn kernel_probe_at(&self, sites: &[Site]) -> Option<u64> {
        let placed = self
            .handoff
            .placed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sites
            .iter()
            .map(|s| s.address)
            .find(|a| placed.kernel.iter().any(|(_, at)| at.contains(a)))
    }

    /// Records the breakpoint addresses of a probe armed here, so a kernel probe placed later
    /// is steered away from them (see `session.rs`).
    pub(crate) fn record_breakpoints(&self, sites: &[Site]) {
        self.handoff
            .placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ptrace
            .extend(sites.iter().map(|s| s.address));
    }

    /// The addresses of an unloaded library's mappings no longer hold breakpoints.
    pub(crate) fn forget_breakpoint_range(&self, ranges: &[(u64, u64)]) {
        self.handoff
            .placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ptrace
            .retain(|a| !ranges.iter().any(|(lo, hi)| a >= lo && a < hi));
    }
}
