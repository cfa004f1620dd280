//! Go's own function table, the pclntab (`.gopclntab`), which every Go binary keeps for its
//! runtime (stack traces, garbage collection) even when `-ldflags='-s -w'` drops the symbol
//! table and DWARF: each function's entry, end and name, and per-pc tables of its stack
//! depth, source file and line, and inlining.
//!
//! Written by hand: the Rust crates that read it (parts of disassemblers and decompilers:
//! smda, binscout, rsleigh-decompile) recover function names and entries only, not the
//! pc-value tables (file, line, stack depth, inline tree) this index needs, and are not
//! libraries of that. The format is the Go runtime's (`runtime/symtab.go`, `runtime2.go`'s
//! `_func`); Go 1.20 and later share it (magic 0xfffffff1). Older tables are refused.

/// Go 1.20+'s pclntab magic.
const MAGIC_GO120: u32 = 0xffff_fff1;

/// `PCDATA_InlTreeIndex`: the pc-value table of the inline tree index.
pub const PCDATA_INL_TREE_INDEX: usize = 2;
/// `FUNCDATA_InlTree`: the function's inline tree, as an offset from `moduledata.gofunc`.
pub const FUNCDATA_INL_TREE: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    #[error("its Go function table (.gopclntab) is the format of {0}; Periscope reads that of Go 1.20 and later: rebuild with a current Go, or keep DWARF (build without `-w` in -ldflags)")]
    Unsupported(&'static str),
    #[error("its Go function table (.gopclntab) is malformed: {0}")]
    Malformed(String),
}

fn malformed(what: &str) -> PclntabError {
    PclntabError::Malformed(what.to_string())
}

/// The parsed header and the tables it points to.
pub struct Pclntab<'a> {
    quantum: u64,
    nfunc: usize,
    funcnametab: &'a [u8],
    cutab: &'a [u8],
    filetab: &'a [u8],
    pctab: &'a [u8],
    /// The function table and the `_func` records (`moduledata.pclntable`).
    pclntable: &'a [u8],
    /// `moduledata.text`: function entries are offsets from it.
    text_start: u64,
}

/// One function of the table.
#[derive(Debug, Clone)]
pub struct GoFunc {
    pub entry: u64,
    /// The next function's entry (the table's end for the last).
    pub end: u64,
    pub name: String,
    /// The line of the `func` keyword.
    pub start_line: u32,
    /// Where its `_func` record starts in `pclntable`.
    record: usize,
    pcsp: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    nfuncdata: u8,
    cu_offset: u32,
}

/// A pc-value table decoded: `value` holds over `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub end: u64,
    pub value: i32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// A NUL-terminated string at `off`.
fn cstr(b: &[u8], off: usize) -> Option<&str> {
    let rest = b.get(off..)?;
    let len = rest.iter().position(|c| *c == 0)?;
    std::str::from_utf8(&rest[..len]).ok()
}

fn varint(p: &[u8], at: &mut usize) -> Option<u32> {
    let (mut v, mut shift) = (0u32, 0u32);
    loop {
        let b = *p.get(*at)?;
        *at += 1;
        v |= u32::from(b & 0x7f) << (shift & 31);
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
}

impl<'a> Pclntab<'a> {
    /// Reads the header of `data` (the `.gopclntab` section); `text_start` is the address
    /// function entries count from (`moduledata.text`; Go 1.26+ no longer stores it in the
    /// header).
    pub fn parse(data: &'a [u8], text_start: u64) -> Result<Pclntab<'a>, PclntabError> {
        let magic = u32_at(data, 0).ok_or_else(|| malformed("shorter than its header"))?;
        match magic {
            MAGIC_GO120 => {}
            0xffff_fff0 => return Err(PclntabError::Unsupported("Go 1.18 or 1.19")),
            0xffff_fffa => return Err(PclntabError::Unsupported("Go 1.16 or 1.17")),
            0xffff_fffb => return Err(PclntabError::Unsupported("Go 1.2 to 1.15")),
            m => {
                return Err(PclntabError::Malformed(format!(
                    "unknown magic {m:#x} (not a little-endian Go table)"
                )))
            }
        }
        if data.get(4..6) != Some(&[0, 0]) || data.get(7) != Some(&8) {
            return Err(malformed("not a 64-bit table"));
        }
        let quantum = u64::from(data[6]);
        let word = |i: usize| u64_at(data, 8 + i * 8).ok_or_else(|| malformed("truncated header"));
        let nfunc = word(0)? as usize;
        let table = |i: usize| -> Result<&'a [u8], PclntabError> {
            let off = word(i)? as usize;
            data.get(off..)
                .ok_or_else(|| malformed("a table offset past its end"))
        };
        Ok(Pclntab {
            quantum,
            nfunc,
            funcnametab: table(3)?,
            cutab: table(4)?,
            filetab: table(5)?,
            pctab: table(6)?,
            pclntable: table(7)?,
            text_start,
        })
    }

    /// Every function of the table, in address order.
    pub fn functions(&self) -> Result<Vec<GoFunc>, PclntabError> {
        let ft = |i: usize, field: usize| {
            u32_at(self.pclntable, i * 8 + field * 4)
                .ok_or_else(|| malformed("the function table is cut short"))
        };
        let mut out = Vec::with_capacity(self.nfunc);
        for i in 0..self.nfunc {
            let entry = self.text_start + u64::from(ft(i, 0)?);
            let end = self.text_start + u64::from(ft(i + 1, 0)?);
            let record = ft(i, 1)? as usize;
            let field = |n: usize| {
                u32_at(self.pclntable, record + n * 4)
                    .ok_or_else(|| malformed("a function record past the table's end"))
            };
            let name = cstr(self.funcnametab, field(1)? as usize)
                .ok_or_else(|| malformed("a function name past the name table"))?;
            out.push(GoFunc {
                entry,
                end: end.max(entry),
                name: name.to_string(),
                start_line: field(9)?,
                record,
                pcsp: field(4)?,
                pcfile: field(5)?,
                pcln: field(6)?,
                npcdata: field(7)?,
                nfuncdata: self.pclntable.get(record + 43).copied().unwrap_or(0),
                cu_offset: field(8)?,
            });
        }
        Ok(out)
    }

    /// Decodes the pc-value table at `off` of `f`'s: the runtime's encoding, a value delta
    /// (zig-zag varint, from -1) then a pc delta (varint, in instruction quanta) per step.
    pub fn runs(&self, f: &GoFunc, off: u32) -> Vec<Run> {
        let mut out = Vec::new();
        if off == 0 {
            return out;
        }
        let p = self.pctab;
        let (mut at, mut pc, mut val, mut first) = (off as usize, f.entry, -1i32, true);
        while let Some(uv) = varint(p, &mut at) {
            if uv == 0 && !first {
                break;
            }
            first = false;
            val = val.wrapping_add((-((uv & 1) as i32)) ^ ((uv >> 1) as i32));
            let Some(dpc) = varint(p, &mut at) else { break };
            let next = pc + u64::from(dpc) * self.quantum;
            if next > f.end {
                break;
            }
            if next == pc {
                continue;
            }
            out.push(Run {
                start: pc,
                end: next,
                value: val,
            });
            pc = next;
        }
        out
    }

    /// The stack-pointer delta table.
    pub fn pcsp(&self, f: &GoFunc) -> Vec<Run> {
        self.runs(f, f.pcsp)
    }

    /// The file table (values are file numbers of the function's compilation unit).
    pub fn pcfile(&self, f: &GoFunc) -> Vec<Run> {
        self.runs(f, f.pcfile)
    }

    /// The line table.
    pub fn pcln(&self, f: &GoFunc) -> Vec<Run> {
        self.runs(f, f.pcln)
    }

    /// The offset of `f`'s pcdata table `i` in pctab (0: none).
    pub fn pcdata(&self, f: &GoFunc, i: usize) -> u32 {
        if i >= f.npcdata as usize {
            return 0;
        }
        u32_at(self.pclntable, f.record + 44 + 4 * i).unwrap_or(0)
    }

    /// `f`'s funcdata `i`: an offset from `moduledata.gofunc` (`None`: none).
    pub fn funcdata(&self, f: &GoFunc, i: usize) -> Option<u32> {
        if i >= f.nfuncdata as usize {
            return None;
        }
        let at = f.record + 44 + 4 * f.npcdata as usize + 4 * i;
        u32_at(self.pclntable, at).filter(|v| *v != u32::MAX)
    }

    /// The path of file number `n` of `f`'s compilation unit.
    pub fn file(&self, f: &GoFunc, n: i32) -> Option<&'a str> {
        let n = u32::try_from(n).ok()?;
        let off = u32_at(self.cutab, 4 * (f.cu_offset + n) as usize)?;
        if off == u32::MAX {
            return None;
        }
        cstr(self.filetab, off as usize)
    }

    /// A function name by its offset in the name table (the inline tree's names).
    pub fn name(&self, off: u32) -> Option<&'a str> {
        cstr(self.funcnametab, off as usize)
    }
}

/// One entry of a function's inline tree (`runtime.inlinedCall`, Go 1.20+: 16 bytes).
#[derive(Debug, Clone, Copy)]
pub struct InlinedCall {
    pub name_off: u32,
    /// Offset from the outer function's entry of an instruction at the call site.
    pub parent_pc: u32,
    pub start_line: u32,
}

/// Reads entry `i` of an inline tree that starts at `tree`.
pub fn inlined_call(tree: &[u8], i: usize) -> Option<InlinedCall> {
    let at = i.checked_mul(16)?;
    Some(InlinedCall {
        name_off: u32_at(tree, at + 4)?,
        parent_pc: u32_at(tree, at + 8)?,
        start_line: u32_at(tree, at + 12)?,
    })
}

/// The value of a decoded table at `pc`.
pub fn value_at(runs: &[Run], pc: u64) -> Option<i32> {
    let i = runs.partition_point(|r| r.end <= pc);
    runs.get(i).filter(|r| r.start <= pc).map(|r| r.value)
}

/// Where a function's body starts: past the stack-bound check and the frame set-up, which
/// the stack-pointer table shows as the first run of rising depths from the entry (0 during
/// the check, 8 once the frame pointer is pushed, the frame size after `sub rsp`). A frameless
/// function starts at its entry. The argument registers are untouched by the prologue.
pub fn body_start(f: &GoFunc, pcsp: &[Run]) -> u64 {
    let mut k = 0;
    while k + 1 < pcsp.len()
        && pcsp[k + 1].value > pcsp[k].value
        && pcsp[k].end == pcsp[k + 1].start
    {
        k += 1;
    }
    match pcsp.get(k) {
        Some(r) if r.value > 0 && r.start < f.end => r.start,
        _ => f.entry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(entry: u64, end: u64) -> GoFunc {
        GoFunc {
            entry,
            end,
            name: "main.f".into(),
            start_line: 1,
            record: 0,
            pcsp: 0,
            pcfile: 0,
            pcln: 0,
            npcdata: 0,
            nfuncdata: 0,
            cu_offset: 0,
        }
    }

    #[test]
    fn pc_value_tables_decode_as_the_runtime_does() {
        // Values 0 (delta +1 from -1: zig-zag 2), then 8 (+8: 16), then 0xd8 (+0xd0: 0x1a0,
        // a two-byte varint), over pc deltas 16, 10 and 0x20; then the end marker.
        let pctab = [0u8, 2, 16, 16, 10, 0xa0, 0x03, 0x20, 0];
        let t = Pclntab {
            quantum: 1,
            nfunc: 0,
            funcnametab: &[],
            cutab: &[],
            filetab: &[],
            pctab: &pctab,
            pclntable: &[],
            text_start: 0,
        };
        let f = func(0x1000, 0x1100);
        let runs = t.runs(&f, 1);
        assert_eq!(
            runs,
            vec![
                Run {
                    start: 0x1000,
                    end: 0x1010,
                    value: 0
                },
                Run {
                    start: 0x1010,
                    end: 0x101a,
                    value: 8
                },
                Run {
                    start: 0x101a,
                    end: 0x103a,
                    value: 0xd8
                },
            ]
        );
        assert_eq!(value_at(&runs, 0x1019), Some(8));
        assert_eq!(value_at(&runs, 0x103a), None);
        assert_eq!(body_start(&f, &runs), 0x101a);
        assert_eq!(body_start(&f, &runs[..1]), 0x1000);
    }

    #[test]
    fn older_tables_are_refused_with_the_go_version() {
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let err = Pclntab::parse(&data, 0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("Go 1.18 or 1.19") && e.contains("Go 1.20")));
        assert!(Pclntab::parse(&[1, 2], 0).is_err());
    }
}
