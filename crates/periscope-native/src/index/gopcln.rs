//! The index of a Go binary without DWARF (`go build -ldflags='-s -w'`), from its pclntab
//! ([`super::pclntab`]): functions by their Go names, a line table, the files, and the copies
//! inlined into callers. Functions have no unit ([`super::NO_UNIT`]): a probe at one reads
//! its arguments by position (Go's register ABI, [`super::abi`]).
//!
//! The line table has no `is_stmt`: every change of file or line starts a row, so a line's
//! starts are the first pc of each of its runs. Each function's row at its body start (past
//! the stack check and frame set-up, see [`pclntab::body_start`]) is marked `prologue_end`,
//! as Go's own DWARF marks it, so a function probe goes where the DWARF build's does.

use super::pclntab::{self, GoFunc, Pclntab, PclntabError, Run};
use super::{Function, InlinedCopy, LineRow, NO_UNIT};
use object::{Object, ObjectSection};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// What the pclntab gives the index.
pub(super) struct GoIndex {
    pub functions: Vec<Function>,
    pub rows: Vec<LineRow>,
    pub files: Vec<PathBuf>,
    pub inlined: Vec<InlinedCopy>,
}

/// The Go toolchain that built the binary (`go1.22.10`), from `.go.buildinfo`.
pub(super) fn go_version(file: &object::File) -> Option<String> {
    let data = file.section_by_name(".go.buildinfo")?.data().ok()?;
    // "\xff Go buildinf:", pointer size, flags; flag 2: the strings follow inline (Go 1.18+),
    // each a uvarint length and its bytes.
    if data.get(..14) != Some(b"\xff Go buildinf:") || data.get(15)? & 2 == 0 {
        return None;
    }
    let (mut len, mut shift, mut at) = (0usize, 0, 32);
    loop {
        let b = *data.get(at)?;
        at += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let v = std::str::from_utf8(data.get(at..at + len)?).ok()?;
    Some(v.to_string())
}

/// Reads the index from the pclntab; `None` when the binary has none (not Go).
pub(super) fn read(file: &object::File) -> Option<Result<GoIndex, PclntabError>> {
    let section = file
        .section_by_name(".gopclntab")
        .or_else(|| file.section_by_name(".data.rel.ro.gopclntab"))?;
    let data = section.data().ok()?;
    Some(build(file, section.address(), data))
}

fn build(file: &object::File, table_addr: u64, data: &[u8]) -> Result<GoIndex, PclntabError> {
    let module = ModuleData::find(file, table_addr, data);
    let text = module
        .as_ref()
        .map(|m| m.text)
        .or_else(|| file.section_by_name(".text").map(|s| s.address()))
        .ok_or_else(|| PclntabError::Malformed("no .text section".into()))?;
    let table = Pclntab::parse(data, text)?;
    let funcs = table.functions()?;
    let mut out = GoIndex {
        functions: Vec::with_capacity(funcs.len()),
        rows: Vec::new(),
        files: Vec::new(),
        inlined: Vec::new(),
    };
    let mut file_ids: HashMap<String, u32> = HashMap::new();
    for f in &funcs {
        let mut intern = |name: &str| -> u32 {
            if let Some(id) = file_ids.get(name) {
                return *id;
            }
            out.files.push(PathBuf::from(name));
            let id = (out.files.len() - 1) as u32;
            file_ids.insert(name.to_string(), id);
            id
        };
        let files = table.pcfile(f);
        let mut rows: Vec<LineRow> = Vec::new();
        for (pc, n, line) in merge(&files, &table.pcln(f)) {
            let Some(name) = table.file(f, n) else {
                continue;
            };
            rows.push(LineRow {
                address: pc,
                file: intern(name),
                line: u32::try_from(line).unwrap_or(0),
                is_stmt: true,
                prologue_end: false,
                end_sequence: false,
                unit: NO_UNIT,
            });
        }
        if let Some(code) = bytes_at(file, f.entry, (f.end - f.entry) as usize) {
            first_runs_of_blocks(&mut rows, &block_starts(code, f.entry));
        }
        let decl_file = rows.first().map(|r| r.file);
        mark_body(&mut rows, pclntab::body_start(f, &table.pcsp(f)));
        if let Some(last) = rows.last().copied() {
            rows.push(LineRow {
                address: f.end,
                end_sequence: true,
                is_stmt: false,
                prologue_end: false,
                ..last
            });
        }
        out.rows.extend(rows);
        out.functions.push(Function {
            name: f.name.clone(),
            linkage_name: None,
            low_pc: f.entry,
            high_pc: f.end.max(f.entry + 1),
            decl_file,
            decl_line: Some(f.start_line),
            unit: NO_UNIT,
            offset: gimli::UnitOffset(0),
        });
        if let Some(m) = &module {
            for (name, entry_pc, line, file) in inlined_copies(&table, f, m, file, &files) {
                let decl_file = file.map(&mut intern);
                out.inlined.push(InlinedCopy {
                    name,
                    entry_pc,
                    unit: NO_UNIT,
                    decl_file,
                    decl_line: Some(line),
                });
            }
        }
    }
    out.functions
        .sort_by_key(|f| (f.low_pc, std::cmp::Reverse(f.high_pc)));
    Ok(out)
}

/// Keeps `is_stmt` on the first run of each line in a basic block only: the compiler's
/// scheduling interleaves the instructions of neighbouring lines within a block, and a probe
/// on every run would report one execution of the line several times.
fn first_runs_of_blocks(rows: &mut [LineRow], blocks: &[u64]) {
    let mut seen: HashSet<(usize, u32, u32)> = HashSet::new();
    for r in rows.iter_mut() {
        let block = blocks.partition_point(|b| *b <= r.address);
        r.is_stmt = seen.insert((block, r.file, r.line));
    }
}

/// Where the basic blocks of the code at `base` start: its entry, every branch target in
/// it, and the instruction after each branch or return.
fn block_starts(code: &[u8], base: u64) -> Vec<u64> {
    use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};
    let end = base + code.len() as u64;
    let mut out = vec![base];
    let mut decoder = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        match ins.flow_control() {
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                let t = ins.near_branch_target();
                if (base..end).contains(&t) {
                    out.push(t);
                }
                out.push(ins.next_ip());
            }
            FlowControl::Return | FlowControl::IndirectBranch => out.push(ins.next_ip()),
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Marks the row at `body` as the prologue's end, adding one of the same position if the
/// body starts inside a run.
fn mark_body(rows: &mut Vec<LineRow>, body: u64) {
    let i = rows.partition_point(|r| r.address < body);
    match rows.get_mut(i) {
        Some(r) if r.address == body => r.prologue_end = true,
        _ if i > 0 => {
            let prev = rows[i - 1];
            rows.insert(
                i,
                LineRow {
                    address: body,
                    is_stmt: false,
                    prologue_end: true,
                    ..prev
                },
            );
        }
        _ => {}
    }
}

/// The pcs where the (file number, line) pair changes, from the two tables.
fn merge(files: &[Run], lines: &[Run]) -> Vec<(u64, i32, i32)> {
    let mut cuts: Vec<u64> = files.iter().chain(lines).map(|r| r.start).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u64, i32, i32)> = Vec::new();
    for pc in cuts {
        let (Some(f), Some(l)) = (pclntab::value_at(files, pc), pclntab::value_at(lines, pc))
        else {
            continue;
        };
        if out.last().is_none_or(|(_, pf, pl)| (*pf, *pl) != (f, l)) {
            out.push((pc, f, l));
        }
    }
    out
}

/// The copies inlined into `f`: (name, first pc, the callee's `func` line, its file). A
/// copy's code is every pc whose inline-tree index is it or a copy nested in it (the parent
/// of an entry is the index at its `parent_pc`).
fn inlined_copies<'a>(
    table: &Pclntab<'a>,
    f: &GoFunc,
    module: &ModuleData,
    file: &object::File,
    files: &[Run],
) -> Vec<(String, u64, u32, Option<&'a str>)> {
    let off = table.pcdata(f, pclntab::PCDATA_INL_TREE_INDEX);
    let Some(tree_off) = table.funcdata(f, pclntab::FUNCDATA_INL_TREE) else {
        return Vec::new();
    };
    if off == 0 {
        return Vec::new();
    }
    let index = table.runs(f, off);
    let count = index.iter().map(|r| r.value).max().unwrap_or(-1) + 1;
    if count <= 0 {
        return Vec::new();
    }
    let Some(tree) = bytes_at(
        file,
        module.gofunc + u64::from(tree_off),
        count as usize * 16,
    ) else {
        return Vec::new();
    };
    let calls: Vec<pclntab::InlinedCall> = (0..count as usize)
        .map_while(|i| pclntab::inlined_call(tree, i))
        .collect();
    let parent = |i: usize| -> Option<usize> {
        let pc = f.entry + u64::from(calls.get(i)?.parent_pc);
        let p = pclntab::value_at(&index, pc)?;
        usize::try_from(p).ok().filter(|p| *p != i)
    };
    // (first pc, first pc of its own code) of each copy.
    let mut first: Vec<Option<(u64, u64)>> = vec![None; calls.len()];
    for r in &index {
        let Ok(mut i) = usize::try_from(r.value) else {
            continue;
        };
        let own = i;
        for _ in 0..calls.len() {
            let Some(slot) = first.get_mut(i) else { break };
            let own_pc = if i == own { r.start } else { u64::MAX };
            *slot = Some(match *slot {
                Some((a, b)) => (a.min(r.start), b.min(own_pc)),
                None => (r.start, own_pc),
            });
            match parent(i) {
                Some(p) => i = p,
                None => break,
            }
        }
    }
    calls
        .iter()
        .zip(first)
        .filter_map(|(c, at)| {
            let (entry, own) = at?;
            let name = table.name(c.name_off)?.to_string();
            let file = pclntab::value_at(files, if own == u64::MAX { entry } else { own })
                .and_then(|n| table.file(f, n));
            Some((name, entry, c.start_line, file))
        })
        .collect()
}

/// The fields of the runtime's `moduledata` this index needs, found in the binary's data:
/// it starts with the pclntab's address and its `ftab` slice points into the table.
struct ModuleData {
    /// `moduledata.text`, where function entries count from.
    text: u64,
    /// `moduledata.gofunc`, where funcdata (the inline trees) count from.
    gofunc: u64,
}

impl ModuleData {
    fn find(file: &object::File, table_addr: u64, table: &[u8]) -> Option<ModuleData> {
        // pcHeader's word 7: the offset of the function table; moduledata's ftab points there.
        let ftab = table_addr + read_u64(table, 8 + 7 * 8)?;
        let rodata = file.section_by_name(".rodata").map(|s| s.address());
        for name in [".go.module", ".noptrdata", ".data"] {
            let Some(s) = file.section_by_name(name) else {
                continue;
            };
            let Ok(d) = s.data() else { continue };
            for at in (0..d.len().saturating_sub(400)).step_by(8) {
                if read_u64(d, at) != Some(table_addr) || read_u64(d, at + 128) != Some(ftab) {
                    continue;
                }
                let text = read_u64(d, at + 176)?;
                // gofunc follows rodata, whose place after the type fields moved between Go
                // releases: the word after the last one holding .rodata's address.
                let gofunc = rodata.and_then(|r| {
                    (37..=44)
                        .rev()
                        .find(|w| read_u64(d, at + w * 8) == Some(r))
                        .and_then(|w| read_u64(d, at + (w + 1) * 8))
                });
                return Some(ModuleData {
                    text,
                    gofunc: gofunc.unwrap_or(0),
                });
            }
        }
        None
    }
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// `len` bytes of the file's sections at link-time address `addr`.
fn bytes_at<'a>(file: &object::File<'a>, addr: u64, len: usize) -> Option<&'a [u8]> {
    if addr == 0 {
        return None;
    }
    file.sections()
        .find(|s| addr >= s.address() && addr + len as u64 <= s.address() + s.size())
        .and_then(|s| s.data_range(addr, len as u64).ok().flatten())
}
