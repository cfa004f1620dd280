//! Go: the goroutine a stopped thread is running. The runtime keeps the current `g` in a
//! thread-local slot, at `-8(FS)` on linux/amd64 (where the Go linker puts `runtime.tlsg`,
//! internal or external linking alike), and `g.goid` is the id Go's own tracebacks print.

use super::Engine;
use crate::process::Regs;
use std::cell::OnceCell;

/// Where the goroutine id is, once looked up (`None`: not a Go program).
#[derive(Default)]
pub(crate) struct GoroutineLayout(OnceCell<Option<u64>>);

/// The `g` pointer's offset from the thread pointer.
const G_FROM_FS: u64 = 8;

/// Where `runtime.g` keeps the goroutine id, from the Go runtime's DWARF.
pub(crate) fn goid_offset(target: &crate::target::Target) -> Option<u64> {
    target.objects.iter().find_map(|o| {
        let g = o.index.go_g_type()?;
        o.index
            .type_at(g.unit, g.offset)
            .member("goid")
            .map(|m| m.offset)
    })
}

impl Engine {
    /// The goroutine id of the thread stopped with `regs`, in a Go program.
    pub(crate) fn goroutine(&self, regs: &Regs) -> Option<u64> {
        let goid = *self.goroutines.0.get_or_init(|| goid_offset(&self.target));
        let goid = goid?;
        if regs.fs_base == 0 {
            return None;
        }
        let g = self
            .mem
            .read_u64(regs.fs_base.wrapping_sub(G_FROM_FS))
            .ok()?;
        if g == 0 {
            return None; // a thread of the runtime not running a goroutine
        }
        self.mem.read_u64(g + goid).ok()
    }
}
