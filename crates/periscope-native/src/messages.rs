//! From a message someone saw (a log line, an error text) to the code that can produce it.
//!
//! The text a program prints is built from constants in its read-only data: a literal, a C
//! format string (`"refund %d exceeds the charge"`), or Rust's format template, whose literal
//! pieces sit between placeholder bytes (the encoding is private to each Rust release, so it is
//! not parsed: the printable runs in it are the pieces). Code reaches each constant through a
//! RIP-relative operand; decoding the text section finds every such reference, and the line
//! table maps the referencing instruction to function, file and line.
//!
//! A constant matches a message when its pieces occur in it in order, with anything between
//! them (what the placeholders printed). Matches are ranked by how much of the message their
//! literal text covers, exact ones (nothing left unexplained) first.

use crate::index::ObjectIndex;
use crate::target::Target;
use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind};
use object::{Object, ObjectSection, SectionKind};
use std::collections::BTreeMap;

pub use periscope_runtime::code::MessageMatch;

/// The longest constant read from a reference.
const MAX_CONSTANT: usize = 1024;

/// A constant's pieces must cover at least this many characters of the message, and this
/// share of it, to count (so `"%s"` or `": "` never match everything).
const MIN_COVERED: usize = 4;
const MIN_SHARE: f64 = 0.3;

impl Target {
    /// Code that can produce `message`, best first. Searches the program and its libraries
    /// with debug info (not the system's own: their messages are not the program's).
    pub fn find_message(&self, message: &str) -> Vec<MessageMatch> {
        let mut out: Vec<MessageMatch> = Vec::new();
        for o in &self.objects {
            let idx = &o.index;
            let system = idx.path.starts_with("/usr/") || idx.path.starts_with("/lib");
            if !idx.has_debug_info || system {
                continue;
            }
            for m in find_in_object(idx, message) {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| {
            b.exact
                .cmp(&a.exact)
                .then(b.covered.cmp(&a.covered))
                .then(a.function.cmp(&b.function))
                .then(a.line.cmp(&b.line))
        });
        out
    }
}

/// A read-only data section's bytes and file address.
struct Rodata {
    addr: u64,
    bytes: Vec<u8>,
}

impl Rodata {
    fn at(&self, addr: u64) -> Option<&[u8]> {
        let off = addr.checked_sub(self.addr)? as usize;
        self.bytes.get(off..)
    }
}

fn find_in_object(idx: &ObjectIndex, message: &str) -> Vec<MessageMatch> {
    let Ok(data) = std::fs::read(&idx.opened) else {
        return Vec::new();
    };
    let Ok(file) = object::File::parse(&*data) else {
        return Vec::new();
    };
    let rodata: Vec<Rodata> = file
        .sections()
        .filter(|s| {
            matches!(
                s.kind(),
                SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
            )
        })
        .filter_map(|s| {
            Some(Rodata {
                addr: s.address(),
                bytes: s.data().ok()?.to_vec(),
            })
        })
        .collect();
    // Each referenced constant once, with every instruction that references it.
    let mut refs: BTreeMap<u64, (Option<u64>, Vec<u64>)> = BTreeMap::new();
    // Short literals an optimizer writes with immediates instead: (first instruction, text).
    let mut immediate_texts: Vec<(u64, String)> = Vec::new();
    for text in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let Ok(code) = text.data() else { continue };
        let mut decoder = Decoder::with_ip(64, code, text.address(), DecoderOptions::NONE);
        let mut instr = Instruction::default();
        // A reference waits a few instructions for an immediate that may be its length
        // (`lea rdi, [rip+s]; mov esi, 25` passes a Rust &str).
        let mut pending: Vec<(u64, u64, usize)> = Vec::new();
        let mut built = Immediates::default();
        let mut n: usize = 0;
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            n += 1;
            if let Some(done) = built.feed(&instr, n) {
                immediate_texts.push(done);
            }
            for p in pending.iter_mut() {
                p.2 += 1;
                if let Some(len) = small_immediate(&instr) {
                    refs.entry(p.1).or_default().0.get_or_insert(len);
                    p.2 = usize::MAX;
                }
            }
            pending.retain(|p| p.2 < 3);
            if instr.is_ip_rel_memory_operand() {
                let target = instr.ip_rel_memory_address();
                if rodata.iter().any(|r| r.at(target).is_some()) {
                    refs.entry(target).or_default().1.push(instr.ip());
                    pending.push((instr.ip(), target, 0));
                }
            }
        }
    }
    let mut out = Vec::new();
    for (site, text) in immediate_texts {
        let constant = Constant {
            pieces: vec![text],
            open_start: false,
            open_end: false,
        };
        if let Some((covered, exact)) = constant.matches(message) {
            out.push(describe(idx, site, &constant, covered, exact));
        }
    }
    for (addr, (len, sites)) in refs {
        let Some(bytes) = rodata.iter().find_map(|r| r.at(addr)) else {
            continue;
        };
        let constant = Constant::read(bytes, len);
        let Some((covered, exact)) = constant.matches(message) else {
            continue;
        };
        for site in sites {
            out.push(describe(idx, site, &constant, covered, exact));
        }
    }
    out
}

/// Text built from immediates: an optimizer writes a short literal (`"example.com"` into a
/// new `String`) as stores of 8- and 4-byte immediates, often overlapping (`"example."` at 0,
/// `".com"` at 7). Consecutive printable immediates within a few instructions are joined,
/// overlaps merged.
#[derive(Default)]
struct Immediates {
    run: Option<(u64, String, usize)>,
}

impl Immediates {
    /// Feeds the `n`th instruction; returns a finished run of text, if one ended.
    fn feed(&mut self, instr: &Instruction, n: usize) -> Option<(u64, String)> {
        let chunk = printable_immediate(instr);
        let mut done = None;
        if self.run.as_ref().is_some_and(|(_, _, last)| n - last > 3) {
            done = self
                .run
                .take()
                .filter(|(_, t, _)| t.len() >= 4)
                .map(|(ip, t, _)| (ip, t));
        }
        if let Some(c) = chunk {
            match &mut self.run {
                Some((_, text, last)) => {
                    let k = (1..c.len().min(text.len()))
                        .rev()
                        .find(|k| text.ends_with(&c[..*k]))
                        .unwrap_or(0);
                    text.push_str(&c[k..]);
                    *last = n;
                }
                None => self.run = Some((instr.ip(), c, n)),
            }
        }
        done
    }
}

/// The bytes of a 4- or 8-byte immediate operand, if all are printable ASCII.
fn printable_immediate(instr: &Instruction) -> Option<String> {
    let bytes: Vec<u8> = match instr.op1_kind() {
        OpKind::Immediate64 => instr.immediate64().to_le_bytes().to_vec(),
        OpKind::Immediate32 => instr.immediate32().to_le_bytes().to_vec(),
        OpKind::Immediate32to64 if instr.op0_kind() == OpKind::Memory => {
            (instr.immediate32to64() as u32).to_le_bytes().to_vec()
        }
        _ => return None,
    };
    bytes
        .iter()
        .all(|b| (0x20..0x7f).contains(b))
        .then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// An immediate that could be a string's length, moved into a register.
fn small_immediate(instr: &Instruction) -> Option<u64> {
    if instr.mnemonic() != iced_x86::Mnemonic::Mov || instr.op0_kind() != OpKind::Register {
        return None;
    }
    let v = match instr.op1_kind() {
        OpKind::Immediate32 => instr.immediate32() as u64,
        OpKind::Immediate32to64 => instr.immediate32to64() as u64,
        OpKind::Immediate64 => instr.immediate64(),
        _ => return None,
    };
    (1..=MAX_CONSTANT as u64).contains(&v).then_some(v)
}

/// A constant read at a reference: its literal pieces, in order, and whether something that
/// is not literal text (a placeholder, or a byte of Rust's template encoding) comes before the
/// first piece or after the last.
struct Constant {
    pieces: Vec<String>,
    open_start: bool,
    open_end: bool,
}

impl Constant {
    /// Reads up to a NUL (C strings, Rust format templates) or `len` bytes (a Rust `&str` whose
    /// length the code passes), and splits it into printable runs; C conversions (`%d`, `%s`,
    /// `%.2f`, …) split runs too.
    fn read(bytes: &[u8], len: Option<u64>) -> Constant {
        let limit = bytes.len().min(MAX_CONSTANT);
        let mut bytes = &bytes[..limit];
        if let Some(len) = len {
            let l = len as usize;
            // The immediate is the length only if the text runs that far, printable.
            if l <= bytes.len() && std::str::from_utf8(&bytes[..l]).is_ok_and(printable) {
                bytes = &bytes[..l];
            }
        }
        if let Some(nul) = bytes.iter().position(|b| *b == 0) {
            bytes = &bytes[..nul];
        }
        let mut pieces = Vec::new();
        let mut open_start = false;
        let mut open_end = false;
        let mut cur = String::new();
        let mut gap = |pieces: &mut Vec<String>, cur: &mut String| {
            if pieces.is_empty() && cur.is_empty() {
                open_start = true;
            }
            push_piece(pieces, cur);
        };
        for run in bytes.utf8_chunks() {
            for c in run.valid().chars() {
                if c.is_control() && c != '\n' && c != '\t' {
                    gap(&mut pieces, &mut cur);
                    open_end = true;
                } else {
                    cur.push(c);
                    open_end = false;
                }
            }
            if !run.invalid().is_empty() {
                gap(&mut pieces, &mut cur);
                open_end = true;
            }
        }
        push_piece(&mut pieces, &mut cur);
        // A line's own end (`"…\n"`) is not part of the message as someone copies it.
        for p in pieces.iter_mut() {
            *p = p.trim_matches(|c| c == '\n' || c == '\r').to_string();
        }
        pieces.retain(|p| !p.is_empty());
        // C conversions are placeholders too: split there, dropping the conversion's letters.
        let mut split = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let parts: Vec<&str> = p.split('%').collect();
            for (k, part) in parts.iter().enumerate() {
                let part = if k > 0 { strip_conversion(part) } else { part };
                if k > 0 && i == pieces.len() - 1 && k == parts.len() - 1 && part.is_empty() {
                    open_end = true;
                }
                if k == 0 && i == 0 && part.is_empty() && parts.len() > 1 {
                    open_start = true;
                }
                if !part.is_empty() {
                    split.push(part.to_string());
                }
            }
        }
        Constant {
            pieces: split,
            open_start,
            open_end,
        }
    }

    /// How much of `message` the pieces cover, and whether they explain all of it (every
    /// piece found in order, the gaps between them where placeholders printed). The message may
    /// be a part of what was printed: leading and trailing pieces may be missing from it. None
    /// when too little of it is covered to mean anything.
    fn matches(&self, message: &str) -> Option<(usize, bool)> {
        let mut best: Option<(usize, bool)> = None;
        // A Rust template's piece starts after a length byte, which may be printable.
        for skip_first_char in [false, true] {
            let pieces: Vec<&str> = self
                .pieces
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    if skip_first_char && i == 0 {
                        p.char_indices().nth(1).map_or("", |(k, _)| &p[k..])
                    } else {
                        p.as_str()
                    }
                })
                .collect();
            if let Some(m) = self.cover(&pieces, message, skip_first_char) {
                if best.is_none_or(|b| (m.1, m.0) > (b.1, b.0)) {
                    best = Some(m);
                }
            }
        }
        let (covered, exact) = best?;
        let share = covered as f64 / message.chars().count().max(1) as f64;
        (covered >= MIN_COVERED.min(message.len()) && share >= MIN_SHARE)
            .then_some((covered, exact))
    }

    /// The best run of consecutive pieces found in order in `message`.
    fn cover(&self, pieces: &[&str], message: &str, shifted: bool) -> Option<(usize, bool)> {
        let mut best: Option<(usize, bool)> = None;
        for start in 0..pieces.len() {
            let (mut at, mut covered, mut found) = (0, 0, 0);
            let mut first_at = None;
            for piece in &pieces[start..] {
                if piece.is_empty() {
                    found += 1;
                    continue;
                }
                let Some(f) = message[at..].find(piece) else {
                    break;
                };
                first_at.get_or_insert(at + f);
                covered += piece.chars().count();
                at += f + piece.len();
                found += 1;
            }
            if covered == 0 {
                continue;
            }
            let all = start == 0 && found == pieces.len();
            let exact = all
                && (first_at == Some(0) || self.open_start || shifted)
                && (at == message.len() || self.open_end);
            if best.is_none_or(|b| (exact, covered) > (b.1, b.0)) {
                best = Some((covered, exact));
            }
        }
        best
    }

    fn display(&self) -> String {
        let mut s = String::new();
        if self.open_start {
            s.push_str("{…}");
        }
        s.push_str(&self.pieces.join("{…}"));
        if self.open_end {
            s.push_str("{…}");
        }
        s
    }
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t')
}

fn push_piece(pieces: &mut Vec<String>, cur: &mut String) {
    if !cur.is_empty() {
        pieces.push(std::mem::take(cur));
    }
}

/// What follows a `%` with the conversion removed (`5.2f items` → ` items`); `%%` stays `%`.
fn strip_conversion(part: &str) -> &str {
    let rest = part.trim_start_matches(|c: char| {
        c.is_ascii_digit()
            || matches!(
                c,
                '-' | '+' | ' ' | '#' | '.' | '*' | 'l' | 'h' | 'z' | 'j' | 't' | 'L'
            )
    });
    let mut chars = rest.chars();
    match chars.next() {
        Some(c) if "diouxXeEfFgGaAcspn".contains(c) => chars.as_str(),
        _ => part,
    }
}

/// Source paths of the toolchain, not of the program (Rust's std, system headers).
fn foreign(path: &std::path::Path) -> bool {
    let p = path.to_string_lossy();
    p.starts_with("/rustc/") || p.starts_with("/rust/deps/") || p.starts_with("/usr/")
}

fn describe(
    idx: &ObjectIndex,
    site: u64,
    constant: &Constant,
    covered: usize,
    exact: bool,
) -> MessageMatch {
    let row = idx.row_at(site);
    let mut file = row.and_then(|r| idx.files.get(r.file as usize)).cloned();
    let mut line = row.map(|r| r.line).filter(|l| *l > 0);
    let physical = idx
        .function_at(site)
        .map(|f| f.name.clone())
        .or_else(|| idx.symbol_at(site).map(|(s, _)| s.name.clone()))
        .unwrap_or_else(|| format!("{site:#x}"));
    let mut function = physical.clone();
    // In optimized code the reference sits in std code inlined into the program's (a
    // `format!` expanded inside `alloc::fmt::format`): go out through the inlined calls to the
    // program's own line that made it.
    let chain = row
        .map(|r| r.unit)
        .and_then(|u| idx.scopes(u).ok())
        .map(|s| s.inline_chain(site))
        .unwrap_or_default();
    if let Some(first) = chain.first() {
        function = first.name.clone().unwrap_or_else(|| physical.clone());
    }
    for (k, level) in chain.iter().enumerate() {
        if !file.as_deref().is_some_and(foreign) {
            break;
        }
        if let Some((path, l)) = &level.call_site {
            file = Some(path.clone());
            line = Some(*l);
            function = chain
                .get(k + 1)
                .and_then(|outer| outer.name.clone())
                .unwrap_or_else(|| physical.clone());
        }
    }
    let source = match (&file, line) {
        (Some(f), Some(l)) => std::fs::read_to_string(f)
            .ok()
            .and_then(|t| t.lines().nth(l as usize - 1).map(|s| s.trim().to_string())),
        _ => None,
    };
    MessageMatch {
        text: constant.display(),
        function,
        file: file.map(|f| f.display().to_string()),
        line,
        source,
        exact,
        covered,
    }
}
