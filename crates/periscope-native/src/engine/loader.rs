//! Watching the dynamic loader, for probes on libraries loaded later (`dlopen`).
//!
//! The loader keeps a `struct r_debug` for debuggers (its address is the `DT_DEBUG` entry of
//! the executable's dynamic section, read from the live process) and calls the function at
//! its `r_brk` (`_dl_debug_state`, which does nothing) before and after every change of the
//! list of objects, with `r_state` saying which: `RT_ADD`, `RT_DELETE`, then `RT_CONSISTENT`
//! once the change is done. An internal breakpoint there (placed, recorded in the fail-safe
//! table and removed at teardown like any other) tells this engine when to look at the maps:
//!
//! - at `RT_CONSISTENT`, objects whose mapping is gone were unloaded: their breakpoints and
//!   probe sites are forgotten without writing to them (the code is gone), their scratch area
//!   unmapped, and a probe left with no site there is pending again;
//! - files mapped since the last look are indexed on a thread of their own (reading DWARF
//!   can take seconds: the target keeps running meanwhile), and when the index is ready the
//!   pending probes are resolved against it and armed. A probe may so arm a little after the
//!   library is loaded; the program is never held for the indexing.

use super::Engine;
use crate::error::NativeError;
use crate::probe::{EngineEvent, ProbeState};
use crate::target::{load_object, mapped_files, LoadedObject, Mapping};
use nix::sys::eventfd::EventFd;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

/// `r_state` values (`<link.h>`).
const RT_CONSISTENT: u64 = 0;
const RT_DELETE: u64 = 2;
/// Offsets in `struct r_debug` (x86-64): `int r_version; struct link_map *r_map;
/// ElfW(Addr) r_brk; enum r_state; ElfW(Addr) r_ldbase`.
const R_BRK: u64 = 16;
const R_STATE: u64 = 24;
const AT_PHDR: u64 = 3;
const AT_PHNUM: u64 = 5;
const PT_DYNAMIC: u32 = 2;
const PT_PHDR: u32 = 6;
const DT_NULL: u64 = 0;
const DT_DEBUG: u64 = 21;

/// A mapped file, as the maps say: its path and first address.
type FileKey = (String, u64);

/// Objects indexed off the engine thread: each file with its mappings and its index (`None`
/// when it is not ELF).
type Indexed = Vec<(FileKey, Option<LoadedObject>)>;

pub(crate) struct Loader {
    r_debug: u64,
    /// `r_brk`, where our breakpoint is.
    pub(crate) brk: u64,
    /// An unload is under way (`RT_DELETE` seen, `RT_CONSISTENT` not yet): nothing is armed
    /// until it is done (the code being armed might be what is unmapped).
    deleting: bool,
    /// The files already indexed (or found not to be ELF), so each is read once.
    known: HashSet<FileKey>,
    /// Indexing in progress, one receiver per batch.
    indexing: Vec<Receiver<Indexed>>,
    /// Indexed objects waiting for the end of an unload.
    ready: Indexed,
}

impl Engine {
    /// Whether `addr` is the loader's breakpoint (which no probe's removal takes out).
    pub(crate) fn is_loader_breakpoint(&self, addr: u64) -> bool {
        self.loader.as_ref().is_some_and(|l| l.brk == addr)
    }

    /// Starts watching the loader, if not yet: finds `r_debug`, puts the breakpoint at `r_brk`
    /// and indexes what was mapped since the target was read.
    pub(crate) fn watch_loader(&mut self) -> Result<(), NativeError> {
        if self.loader.is_some() {
            return Ok(());
        }
        let no_loader = |why: &str| {
            NativeError::Location(format!(
                "a probe on a library not loaded yet waits for the dynamic loader, but {why} (a statically linked program loads no library later)"
            ))
        };
        let r_debug = self
            .find_r_debug()
            .ok_or_else(|| no_loader("pid's executable has no DT_DEBUG entry set by a loader"))?;
        let brk = self
            .mem
            .read_u64(r_debug + R_BRK)
            .ok()
            .filter(|b| *b != 0)
            .ok_or_else(|| no_loader("the loader's r_debug has no r_brk"))?;
        let (object, _) = self
            .target
            .object_at(brk)
            .ok_or_else(|| no_loader("r_brk is in no mapped object"))?;
        if !self.scratch.has(object) {
            self.with_stopped_leader(|engine, tid| engine.allocate_scratch(tid, object))?;
        }
        self.place(brk, object)?;
        let known = self
            .target
            .objects
            .iter()
            .filter(|o| !o.unloaded)
            .filter_map(|o| {
                let first = o.ranges.iter().map(|r| r.0).min()?;
                Some((o.index.path.to_string_lossy().into_owned(), first))
            })
            .collect();
        self.loader = Some(Loader {
            r_debug,
            brk,
            deleting: false,
            known,
            indexing: Vec::new(),
            ready: Vec::new(),
        });
        // What was mapped after the session's index was made (a library loaded meanwhile).
        self.index_new_files();
        Ok(())
    }

    /// `&r_debug`: the `DT_DEBUG` entry of the executable's dynamic section, found through
    /// the program headers the kernel gave the process (`AT_PHDR` in /proc/PID/auxv).
    fn find_r_debug(&self) -> Option<u64> {
        let auxv = std::fs::read(format!("/proc/{}/auxv", self.pid)).ok()?;
        let word = |b: &[u8], i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let (mut phdr, mut phnum) = (0, 0);
        for i in (0..auxv.len()).step_by(16) {
            match word(&auxv, i)? {
                AT_PHDR => phdr = word(&auxv, i + 8)?,
                AT_PHNUM => phnum = word(&auxv, i + 8)?,
                0 => break,
                _ => {}
            }
        }
        let mut headers = vec![0u8; (phnum.min(64) * 56) as usize];
        self.mem.read(phdr, &mut headers).ok()?;
        let header = |i: usize| {
            let h = &headers[i * 56..i * 56 + 56];
            let kind = u32::from_le_bytes(h[..4].try_into().unwrap_or_default());
            (kind, word(h, 16).unwrap_or(0), word(h, 40).unwrap_or(0))
        };
        let count = headers.len() / 56;
        // The load bias: where the headers are against where the file says they are.
        let bias = (0..count)
            .map(header)
            .find(|h| h.0 == PT_PHDR)
            .map(|h| phdr.wrapping_sub(h.1))
            .unwrap_or(self.target.main_object().bias);
        let (_, vaddr, memsz) = (0..count).map(header).find(|h| h.0 == PT_DYNAMIC)?;
        let dynamic = bias.wrapping_add(vaddr);
        let mut entries = vec![0u8; memsz.min(64 * 1024) as usize];
        self.mem.read(dynamic, &mut entries).ok()?;
        entries
            .chunks_exact(16)
            .find_map(|e| match (word(e, 0)?, word(e, 8)?) {
                (DT_DEBUG, v) if v != 0 => Some(Some(v)),
                (DT_NULL, _) => Some(None),
                _ => None,
            })?
    }

    /// The thread `tid` stopped at `r_brk`: the loader is changing the list of objects.
    pub(crate) fn on_loader_stop(&mut self, tid: i32) {
        let Some(loader) = self.loader.as_mut() else {
            return;
        };
        let state = self.mem.read_u64(loader.r_debug + R_STATE).unwrap_or(0) & 0xffff_ffff;
        match state {
            RT_DELETE => loader.deleting = true,
            RT_CONSISTENT => {
                loader.deleting = false;
                self.forget_unloaded(tid);
                self.index_new_files();
            }
            _ => {}
        }
    }

    /// Objects whose mapping is gone: their sites forgotten, probes left without a site
    /// pending again.
    fn forget_unloaded(&mut self, tid: i32) {
        let Ok(maps) = crate::maps::read(self.pid) else {
            return;
        };
        let gone: Vec<usize> = (1..self.target.objects.len())
            .filter(|&oi| {
                let o = &self.target.objects[oi];
                let path = o.index.path.to_string_lossy();
                let Some(first) = o.ranges.iter().map(|r| r.0).min() else {
                    return false;
                };
                !o.unloaded && !maps.iter().any(|m| m.start == first && m.path == path)
            })
            .collect();
        for oi in gone {
            self.unload(oi, tid);
        }
    }

    fn unload(&mut self, oi: usize, tid: i32) {
        let object = &mut self.target.objects[oi];
        object.unloaded = true;
        let ranges = std::mem::take(&mut object.ranges);
        let name = library_name(&object.index.path);
        if let Some(l) = self.loader.as_mut() {
            l.known
                .retain(|(p, first)| !ranges.iter().any(|r| r.0 == *first) || *p != name.1);
        }
        self.forget_breakpoint_range(&ranges);
        let mut forgotten = Vec::new();
        for (lo, hi) in &ranges {
            forgotten.extend(self.breakpoints.forget_range(*lo, *hi));
        }
        self.unregister_failsafe(&forgotten);
        if let Some(base) = self.scratch.release(oi) {
            let size = crate::failsafe::AREA_SIZE;
            let _ = self.inject_syscall(
                tid,
                libc::SYS_munmap,
                [base, size, 0, 0, 0, 0],
                Some((base, size)),
            );
        }
        self.take_back_unloaded(oi, &name.0);
        for pi in 0..self.probes.len() {
            if self.done[pi] || !self.probes[pi].sites.iter().any(|s| s.object == oi) {
                continue;
            }
            let (kept, _): (Vec<_>, Vec<_>) = std::mem::take(&mut self.probes[pi].sites)
                .into_iter()
                .partition(|s| s.object != oi);
            for s in &kept {
                self.breakpoints.drop_site(s.address, pi);
            }
            self.repeats.forget(pi);
            self.probes[pi].sites = kept;
            if !self.probes[pi].sites.is_empty() {
                if let Err(e) = self.arm(pi) {
                    self.end_probe(pi, ProbeState::Failed(e.to_string()));
                }
                continue;
            }
            let message = format!(
                "pending again: {} was unloaded; {} arms when it is loaded again",
                name.0, self.probes[pi].spec.location
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

    /// Indexes, on a thread of its own, the ELF files mapped since the last look.
    fn index_new_files(&mut self) {
        let Some(loader) = self.loader.as_mut() else {
            return;
        };
        let Ok(maps) = crate::maps::read(self.pid) else {
            return;
        };
        let new: Vec<(String, Vec<Mapping>)> = mapped_files(maps)
            .into_iter()
            .filter(|(path, m)| !loader.known.contains(&(path.clone(), m[0].0)))
            .collect();
        if new.is_empty() {
            return;
        }
        loader
            .known
            .extend(new.iter().map(|(p, m)| (p.clone(), m[0].0)));
        let (tx, rx) = mpsc::channel();
        let (pid, wake): (u32, Arc<EventFd>) = (self.pid, self.wakeup.waker());
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let spawned = std::thread::Builder::new()
            .name("periscope-index".into())
            .spawn(move || {
                let out: Indexed = new
                    .into_iter()
                    .map(|(path, maps)| {
                        let key = (path.clone(), maps[0].0);
                        // Only ELF files are read (a locale archive can be large).
                        let object = is_elf(pid, &path)
                            .then(|| load_object(pid, exe.as_deref(), &path, &maps))
                            .flatten();
                        (key, object)
                    })
                    .collect();
                let _ = tx.send(out);
                let _ = wake.write(1);
            });
        if spawned.is_ok() {
            loader.indexing.push(rx);
        }
    }

    /// Takes the objects indexed meanwhile into the target and arms the pending probes they
    /// have. Called by the event loop each round: a `try_recv`, nothing when idle.
    pub(crate) fn take_indexed(&mut self) {
        let Some(loader) = self.loader.as_mut() else {
            return;
        };
        let mut got: Indexed = Vec::new();
        loader.indexing.retain(|rx| match rx.try_recv() {
            Ok(batch) => {
                got.extend(batch);
                false
            }
            Err(mpsc::TryRecvError::Empty) => true,
            Err(mpsc::TryRecvError::Disconnected) => false,
        });
        loader.ready.extend(got);
        if loader.deleting || loader.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut loader.ready);
        // Only what is still mapped where it was indexed (it may have been unloaded since).
        let Ok(maps) = crate::maps::read(self.pid) else {
            return;
        };
        let mut added = false;
        for ((path, first), object) in ready {
            let Some(object) = object else { continue };
            if maps.iter().any(|m| m.start == first && m.path == path) {
                self.target.objects.push(object);
                added = true;
            }
        }
        if added {
            self.arm_pending();
        }
    }

    /// Resolves every pending probe against the objects known now and arms those found. One
    /// whose location is found but wrong there (a variable the library does not have) fails,
    /// said as an error event.
    pub(crate) fn arm_pending(&mut self) {
        for pi in 0..self.probes.len() {
            if self.done[pi] || self.pending[pi].is_none() {
                continue;
            }
            let spec = self.probes[pi].spec.clone();
            let resolved = match crate::resolve::resolve_or_pending(&self.target, spec) {
                Ok(r) if r.pending.is_none() && !r.sites.is_empty() => r,
                Ok(_) => continue,
                Err(e) => {
                    self.fail_pending(pi, e);
                    continue;
                }
            };
            if self.runs_in_kernel(pi) {
                self.hand_to_kernel(pi, resolved);
                continue;
            }
            if let Some(addr) = self.kernel_probe_at(&resolved.sites) {
                let e = format!("a probe of this session runs in the kernel at {addr:#x}, and a breakpoint there would never see a hit");
                self.fail_pending(pi, NativeError::Kernel(e));
                continue;
            }
            self.record_breakpoints(&resolved.sites);
            let message = self.armed_message(pi, &resolved.sites);
            let n = resolved.sites.len();
            self.probes[pi].sites = resolved.sites;
            self.pending[pi] = None;
            if let Err(e) = self.arm(pi) {
                self.fail_pending(pi, e);
                continue;
            }
            self.tally(pi, |t| t.state = ProbeState::Active);
            let probe = self.probes[pi].spec.id.clone();
            self.emit(EngineEvent::ProbeArmed {
                probe,
                sites: n,
                message,
            });
        }
    }

    /// What the user is told when probe `pi` arms at `sites`: where (the library, the
    /// address).
    pub(crate) fn armed_message(&self, pi: usize, sites: &[crate::target::Site]) -> String {
        let Some(site) = sites.first() else {
            return format!("armed: {}", self.probes[pi].spec.location);
        };
        let (library, _) = library_name(&self.target.objects[site.object].index.path);
        let n = sites.len();
        format!(
            "armed: {} in {library} at {:#x}{}",
            self.probes[pi].spec.location,
            site.address,
            if n > 1 {
                format!(" and {} more addresses", n - 1)
            } else {
                String::new()
            }
        )
    }

    /// A pending probe whose library turned out not to fit it: an error event, then ended.
    pub(crate) fn fail_pending(&mut self, pi: usize, e: NativeError) {
        self.pending[pi] = None;
        let spec = &self.probes[pi].spec;
        let error = format!(
            "{}: the library that was loaded has it, but the probe cannot go there: {e}",
            spec.location
        );
        let body = periscope_core::event::Body::Error(periscope_core::event::ProbeError {
            ts: periscope_core::event::now_rfc3339(),
            pid: self.pid,
            tid: 0,
            // Filled by `emit` (the process's namespace ids), like every engine event.
            ns_pid: None,
            ns_tid: None,
            location: spec.location.to_string(),
            probe: spec.id.clone(),
            error: error.clone(),
        });
        self.emit(EngineEvent::Event(body));
        self.end_probe(pi, ProbeState::Failed(error));
    }
}

/// A library's file name and its full path, for messages.
fn library_name(path: &std::path::Path) -> (String, String) {
    let full = path.to_string_lossy().into_owned();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| full.clone());
    (name, full)
}

/// Whether the mapped file starts with the ELF magic (read through the process's root, as
/// the index reads it).
fn is_elf(pid: u32, path: &str) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(PathBuf::from(format!("/proc/{pid}/root{path}")))
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}
