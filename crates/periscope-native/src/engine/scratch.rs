//! Scratch areas: one small anonymous mapping near each probed object, holding the fail-safe
//! table and handler and the out-of-line copies of displaced instructions (layout in
//! [`crate::failsafe`]). Mapped within ±2 GiB of the object so relocated RIP-relative operands
//! reach; removed at teardown, and found by their magic header after a killed periscope.

use super::Engine;
use crate::error::NativeError;
use crate::failsafe::{self, AREA_SIZE};
use crate::trap::SLOT_SIZE;
use std::collections::HashMap;

struct Area {
    base: u64,
    /// The next free out-of-line slot.
    next: u64,
}

/// The scratch areas of one session, and where the fail-safe handler is.
#[derive(Default)]
pub(crate) struct ScratchAreas {
    /// Object index → its area.
    areas: HashMap<usize, Area>,
    /// The area the fail-safe handler and its table live in, once set up (in the first area).
    failsafe: Option<u64>,
    /// The program's own SIGTRAP action, given back at teardown.
    previous_action: failsafe::KernelSigaction,
}

impl ScratchAreas {
    pub(crate) fn has(&self, object: usize) -> bool {
        self.areas.contains_key(&object)
    }

    pub(crate) fn bases(&self) -> impl Iterator<Item = u64> + '_ {
        self.areas.values().map(|a| a.base)
    }

    /// Every area as `(base, size)`.
    pub(crate) fn ranges(&self) -> Vec<(u64, u64)> {
        self.areas.values().map(|a| (a.base, AREA_SIZE)).collect()
    }

    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.areas
            .values()
            .any(|a| addr >= a.base && addr < a.base + AREA_SIZE)
    }

    /// Takes the next out-of-line slot of `object`'s area.
    pub(crate) fn next_slot(&self, object: usize, address: u64) -> Result<u64, NativeError> {
        let area = self.areas.get(&object).ok_or(NativeError::Breakpoint {
            address,
            reason: "no scratch page".into(),
        })?;
        if area.next + SLOT_SIZE > area.base + failsafe::LOCK_PAGE_OFFSET {
            return Err(NativeError::Breakpoint {
                address,
                reason: "too many probe sites in one object".into(),
            });
        }
        Ok(area.next)
    }

    /// Marks the slot [`Self::next_slot`] gave as used.
    pub(crate) fn use_slot(&mut self, object: usize) {
        if let Some(a) = self.areas.get_mut(&object) {
            a.next += SLOT_SIZE;
        }
    }

    /// The area holding the fail-safe table, when there is one.
    pub(crate) fn failsafe_base(&self) -> Option<u64> {
        self.failsafe
    }

    pub(crate) fn clear(&mut self) {
        self.areas.clear();
    }

    /// Forgets `object`'s area (its object was unloaded) and returns its base to unmap;
    /// `None` when it has none, or when it holds the fail-safe handler, which stays until
    /// teardown (the other objects' breakpoints need it).
    pub(crate) fn release(&mut self, object: usize) -> Option<u64> {
        let base = self.areas.get(&object)?.base;
        if self.failsafe == Some(base) {
            return None;
        }
        self.areas.remove(&object);
        Some(base)
    }
}

impl Engine {
    /// Maps a scratch area within ±2 GiB of an object, so relocated RIP-relative operands reach.
    pub(crate) fn allocate_scratch(&mut self, tid: i32, object: usize) -> Result<(), NativeError> {
        let lo = self.target.objects[object]
            .ranges
            .iter()
            .map(|r| r.0)
            .min()
            .unwrap_or(0);
        let prot = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let mut candidates: Vec<u64> = (1..64u64)
            .filter_map(|k| lo.checked_sub(k * 0x10_0000))
            .collect();
        candidates.push(0);
        for hint in candidates {
            let fixed = if hint == 0 {
                0
            } else {
                // Noted first: a kill before the header is written leaves it findable.
                super::intents::note(self.pid, hint);
                libc::MAP_FIXED_NOREPLACE as u64
            };
            let r = self.inject_syscall(
                tid,
                libc::SYS_mmap,
                [hint, AREA_SIZE, prot, flags | fixed, u64::MAX, 0],
                None,
            )?;
            if r < 0 && r > -4096 {
                if hint != 0 {
                    super::intents::forget(self.pid, hint);
                }
                continue;
            }
            let base = r as u64;
            if std::env::var_os("PERISCOPE_TEST_DIE_AFTER_SCRATCH_MMAP").is_some() {
                // Test hook: die as a SIGKILL would, between the mapping and its header.
                std::process::abort();
            }
            // The handler's lock page is the one writable part (see `failsafe`).
            let lock_page = base + failsafe::LOCK_PAGE_OFFSET;
            let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            let r = self.inject_syscall(
                tid,
                libc::SYS_mprotect,
                [
                    lock_page,
                    AREA_SIZE - failsafe::LOCK_PAGE_OFFSET,
                    rw,
                    0,
                    0,
                    0,
                ],
                None,
            )?;
            if r < 0 {
                return Err(NativeError::Breakpoint {
                    address: lock_page,
                    reason: format!(
                        "mprotect of the scratch area's lock page failed: errno {}",
                        -r
                    ),
                });
            }
            self.mem.write(base, failsafe::MAGIC)?;
            if hint != 0 {
                super::intents::forget(self.pid, hint);
            }
            self.scratch.areas.insert(
                object,
                Area {
                    base,
                    next: base + failsafe::SLOTS_OFFSET,
                },
            );
            if self.scratch.failsafe.is_none() {
                self.install_failsafe(tid, base)?;
            }
            return Ok(());
        }
        Err(NativeError::Breakpoint {
            address: lo,
            reason: "could not map a scratch page in the target".into(),
        })
    }

    /// Points SIGTRAP at the fail-safe handler in the area at `base` (see [`failsafe`]), unless
    /// the program has a SIGTRAP disposition of its own, which we leave alone.
    fn install_failsafe(&mut self, tid: i32, base: u64) -> Result<(), NativeError> {
        let (code, restorer) =
            failsafe::handler_code(base).map_err(|e| NativeError::Breakpoint {
                address: base,
                reason: format!("cannot assemble the fail-safe handler: {e}"),
            })?;
        self.mem.write(base + failsafe::HANDLER_OFFSET, &code)?;
        // The program's own action first, where the handler hands it signals not ours.
        let previous = self.sigaction(tid, libc::SIGTRAP, None)?;
        self.mem.write(
            base + failsafe::PREVIOUS_ACTION_OFFSET,
            &previous.to_bytes(),
        )?;
        let action = failsafe::handler_action(base, restorer, &previous);
        self.sigaction(tid, libc::SIGTRAP, Some(&action))?;
        self.scratch.failsafe = Some(base);
        self.scratch.previous_action = previous;
        Ok(())
    }

    /// Adds a breakpoint to the fail-safe table before its int3 is written (entry, then count:
    /// the handler never sees a half-written entry).
    pub(crate) fn register_failsafe(&mut self, addr: u64, original: u8) -> Result<(), NativeError> {
        let Some(base) = self.scratch.failsafe_base() else {
            return Ok(());
        };
        let count = self
            .mem
            .read_u64(base + failsafe::COUNT_OFFSET)
            .unwrap_or(0)
            .min(failsafe::MAX_ENTRIES);
        // An entry freed by an unloaded library (address 0) is used again: original first,
        // then the address, so the handler never matches a half-written entry.
        if let Some(entry) = self.failsafe_entry(base, count, 0) {
            self.mem
                .write(entry + 8, &u64::from(original).to_le_bytes())?;
            return self.mem.write(entry, &addr.to_le_bytes());
        }
        if count >= failsafe::MAX_ENTRIES {
            return Err(NativeError::Breakpoint {
                address: addr,
                reason: format!(
                    "more than {} breakpoints in one process",
                    failsafe::MAX_ENTRIES
                ),
            });
        }
        let entry = base + failsafe::ENTRIES_OFFSET + count * 16;
        self.mem.write(entry, &addr.to_le_bytes())?;
        self.mem
            .write(entry + 8, &u64::from(original).to_le_bytes())?;
        self.mem
            .write(base + failsafe::COUNT_OFFSET, &(count + 1).to_le_bytes())
    }

    /// Takes breakpoints whose code was unmapped out of the fail-safe table: their address
    /// becomes 0, which no trap has, so neither the handler nor the next attach writes the
    /// old bytes into whatever is mapped there later.
    pub(crate) fn unregister_failsafe(&mut self, addrs: &[u64]) {
        let Some(base) = self.scratch.failsafe_base() else {
            return;
        };
        let count = self
            .mem
            .read_u64(base + failsafe::COUNT_OFFSET)
            .unwrap_or(0)
            .min(failsafe::MAX_ENTRIES);
        for &a in addrs {
            if let Some(entry) = self.failsafe_entry(base, count, a) {
                let _ = self.mem.write(entry, &0u64.to_le_bytes());
            }
        }
    }

    /// The first of the table's `count` entries whose address is `addr`.
    fn failsafe_entry(&self, base: u64, count: u64, addr: u64) -> Option<u64> {
        let mut table = vec![0u8; (count * 16) as usize];
        self.mem
            .read(base + failsafe::ENTRIES_OFFSET, &mut table)
            .ok()?;
        table
            .chunks_exact(16)
            .position(|e| e[..8] == addr.to_le_bytes())
            .map(|i| base + failsafe::ENTRIES_OFFSET + i as u64 * 16)
    }

    /// Gives SIGTRAP back its default action, if the fail-safe took it.
    pub(crate) fn release_failsafe(&mut self, tid: i32) -> Result<(), NativeError> {
        if self.scratch.failsafe_base().is_some() {
            let previous = self.scratch.previous_action;
            self.sigaction(tid, libc::SIGTRAP, Some(&previous))?;
        }
        Ok(())
    }

    /// Removes what an earlier periscope left behind when it was killed: restores the bytes its
    /// table lists, gives SIGTRAP back its default action, unmaps its scratch areas, and puts
    /// back call stubs it left in padding.
    pub(crate) fn recover_leftovers(&mut self, tid: i32) -> Result<usize, NativeError> {
        let mut found = self.remove_leftover_stubs() + self.reap_leftover_copies(tid);
        found += self.recover_unmarked(tid)?;
        for m in crate::maps::read(self.pid)? {
            if !m.is_anonymous() || !m.perms.starts_with("r-x") {
                continue;
            }
            let (lo, hi) = (m.start, m.end);
            let mut magic = [0u8; 16];
            if self.mem.read(lo, &mut magic).is_err() || &magic != failsafe::MAGIC {
                continue;
            }
            let count = self
                .mem
                .read_u64(lo + failsafe::COUNT_OFFSET)
                .unwrap_or(0)
                .min(failsafe::MAX_ENTRIES);
            for i in 0..count {
                let e = lo + failsafe::ENTRIES_OFFSET + i * 16;
                let (Ok(addr), Ok(orig)) = (self.mem.read_u64(e), self.mem.read_u64(e + 8)) else {
                    continue;
                };
                let mut cur = [0u8; 1];
                if self.mem.read(addr, &mut cur).is_ok() && cur[0] == 0xcc {
                    self.mem.write(addr, &[orig as u8])?;
                }
            }
            // The area is its r-x mapping and the lock page after it.
            let hi = hi.max(lo + AREA_SIZE);
            let current = self.sigaction(tid, libc::SIGTRAP, None)?;
            if current.handler >= lo && current.handler < hi {
                // The program's own action, kept in the area (all zero: the default).
                let mut b = [0u8; 32];
                let previous = self
                    .mem
                    .read(lo + failsafe::PREVIOUS_ACTION_OFFSET, &mut b)
                    .ok()
                    .and_then(|()| failsafe::KernelSigaction::from_bytes(&b))
                    .filter(|p| p.handler < lo || p.handler >= hi)
                    .unwrap_or_default();
                self.sigaction(tid, libc::SIGTRAP, Some(&previous))?;
            }
            self.inject_syscall(
                tid,
                libc::SYS_munmap,
                [lo, hi - lo, 0, 0, 0, 0],
                Some((lo, hi - lo)),
            )?;
            found += 1;
        }
        Ok(found)
    }

    /// Unmaps scratch areas an earlier periscope noted (see [`super::intents`]) but was killed
    /// before marking. Only a mapping of exactly our shape at a noted address, anonymous,
    /// executable and still blank (its first page all zero) is taken: mapped with
    /// MAP_FIXED_NOREPLACE there, and never written, it can only be ours.
    fn recover_unmarked(&mut self, tid: i32) -> Result<usize, NativeError> {
        let noted = super::intents::pending(self.pid);
        if noted.is_empty() {
            return Ok(0);
        }
        let maps = crate::maps::read(self.pid)?;
        let mut found = 0;
        for addr in noted {
            let ours = maps.iter().find(|m| m.start == addr).is_some_and(|m| {
                m.is_anonymous()
                    && m.perms.starts_with("r-x")
                    && maps
                        .iter()
                        .filter(|n| n.start >= addr && n.end <= addr + AREA_SIZE)
                        .map(|n| n.end - n.start)
                        .sum::<u64>()
                        == AREA_SIZE
            });
            let mut page = vec![0u8; 4096];
            let blank =
                ours && self.mem.read(addr, &mut page).is_ok() && page.iter().all(|b| *b == 0);
            if blank {
                self.inject_syscall(
                    tid,
                    libc::SYS_munmap,
                    [addr, AREA_SIZE, 0, 0, 0, 0],
                    Some((addr, AREA_SIZE)),
                )?;
                found += 1;
            }
            super::intents::forget(self.pid, addr);
        }
        Ok(found)
    }
}
