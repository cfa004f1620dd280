//! The index of one ELF object file: its source lines, functions, symbols, scopes and types.
//!
//! Addresses here are the file's own (link-time) addresses; [`crate::target`] adds each
//! mapping's load bias. Everything is read once when the index is built, except scopes and types,
//! which are parsed per compilation unit on first use (a large Rust binary has tens of thousands of
//! functions, and a probe needs only a handful).

pub mod abi;
pub mod callsite;
pub mod debugfile;
pub mod debuginfod;
mod gopcln;
mod load;
pub mod pclntab;
pub mod scope;
pub mod types;

use crate::error::NativeError;
use gimli::{EndianArcSlice, Reader as _, RunTimeEndian};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub type R = EndianArcSlice<RunTimeEndian>;

/// The unit of a function known from the symbol table alone (no DWARF describes it).
pub const NO_UNIT: u32 = u32::MAX;

/// The source language of a compilation unit, which picks the value renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
    Cpp,
    Go,
    Other,
}

impl Lang {
    fn from_dw(lang: gimli::DwLang) -> Lang {
        match lang {
            gimli::DW_LANG_Rust => Lang::Rust,
            gimli::DW_LANG_C
            | gimli::DW_LANG_C89
            | gimli::DW_LANG_C99
            | gimli::DW_LANG_C11
            | gimli::DW_LANG_C17 => Lang::C,
            gimli::DW_LANG_C_plus_plus
            | gimli::DW_LANG_C_plus_plus_03
            | gimli::DW_LANG_C_plus_plus_11
            | gimli::DW_LANG_C_plus_plus_14
            | gimli::DW_LANG_C_plus_plus_17
            | gimli::DW_LANG_C_plus_plus_20 => Lang::Cpp,
            gimli::DW_LANG_Go => Lang::Go,
            _ => Lang::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Cpp => "c++",
            Lang::Go => "go",
            Lang::Other => "other",
        }
    }
}

/// One row of a line table, flattened. Rows of one sequence are contiguous and ascending.
#[derive(Debug, Clone, Copy)]
pub struct LineRow {
    pub address: u64,
    /// Index into [`ObjectIndex::files`].
    pub file: u32,
    pub line: u32,
    pub is_stmt: bool,
    pub prologue_end: bool,
    pub end_sequence: bool,
    pub unit: u32,
}

/// A function with code in this object.
#[derive(Debug, Clone)]
pub struct Function {
    /// Qualified, demangled, without Rust's hash suffix: `ledger::settle`, `Cart::total`.
    pub name: String,
    pub linkage_name: Option<String>,
    pub low_pc: u64,
    pub high_pc: u64,
    pub decl_file: Option<u32>,
    pub decl_line: Option<u32>,
    pub unit: u32,
    pub offset: gimli::UnitOffset,
}

/// A copy of a function inlined into another one.
#[derive(Debug, Clone)]
pub struct InlinedCopy {
    /// Index into [`ObjectIndex::functions_by_origin`] keys: the abstract function's name.
    pub name: String,
    pub entry_pc: u64,
    pub unit: u32,
    /// The inlined function's own declaration (index into [`ObjectIndex::files`]).
    pub decl_file: Option<u32>,
    pub decl_line: Option<u32>,
}

/// A global or static variable.
#[derive(Debug, Clone)]
pub struct Global {
    pub name: String,
    pub unit: u32,
    pub offset: gimli::UnitOffset,
}

/// An ELF symbol, for naming addresses in code without debug info.
#[derive(Debug, Clone)]
pub struct Symbol {
    pub address: u64,
    pub size: u64,
    pub name: String,
}

/// A loadable segment, to map file addresses to memory.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
}

pub struct UnitData {
    pub unit: gimli::Unit<R>,
    /// Where the unit starts in .debug_info, to resolve `DW_FORM_ref_addr` references.
    pub start: usize,
    pub lang: Lang,
    pub producer: Option<String>,
}

/// Everything Periscope knows about one ELF file.
pub struct ObjectIndex {
    pub path: PathBuf,
    /// Where the bytes were read: `path`, or for a live process /proc/PID/exe or
    /// /proc/PID/root/PATH (an executable deleted since it started, a container's files).
    pub opened: PathBuf,
    /// The separate debug file the DWARF was read from, if it is not in the binary.
    pub debug_file: Option<PathBuf>,
    /// Debug files looked at and refused, or why none could be fetched: said when the
    /// object turns out to have no DWARF.
    pub debug_notes: Vec<String>,
    pub build_id: Option<String>,
    /// `ET_DYN`: a PIE executable or a shared library, loaded at a bias.
    pub relocatable: bool,
    pub entry: u64,
    pub segments: Vec<Segment>,
    pub has_debug_info: bool,
    pub dwarf: gimli::Dwarf<R>,
    pub units: Vec<UnitData>,
    pub files: Vec<PathBuf>,
    pub rows: Vec<LineRow>,
    pub functions: Vec<Function>,
    pub inlined: Vec<InlinedCopy>,
    pub globals: Vec<Global>,
    /// One symbol per address (the longest), to name addresses.
    pub symbols: Vec<Symbol>,
    /// Every code symbol, aliases included (`write`, `__write`, `__libc_write`), by address.
    pub aliases: Vec<Symbol>,
    pub eh_frame: Option<(gimli::EhFrame<R>, gimli::BaseAddresses)>,
    pub debug_frame: Option<gimli::DebugFrame<R>>,
    scopes: Mutex<HashMap<u32, Arc<scope::UnitScopes>>>,
    call_sites: Mutex<HashMap<u32, Arc<callsite::UnitCallSites>>>,
    types: Mutex<HashMap<(u32, gimli::UnitOffset), Arc<types::Type>>>,
    /// Go: the DWARF type of each runtime type descriptor (link-time address), built on first
    /// use (an interface's dynamic type).
    go_types: std::sync::OnceLock<GoTypes>,
    /// Go: the link-time address of `runtime.types`, which runtime type offsets count from.
    pub go_types_base: Option<u64>,
    /// Go without DWARF (`-ldflags=-w`): the functions, lines and inlined copies come from
    /// the runtime's pclntab ([`gopcln`]), the toolchain's version with them (`go1.22.10`).
    pub go_pclntab: Option<String>,
}

/// The Go types the reader and the engine look up, found in one walk of the Go units.
#[derive(Default)]
pub struct GoTypes {
    by_descriptor: HashMap<u64, scope::TypeRef>,
    table: Option<scope::TypeRef>,
    g: Option<scope::TypeRef>,
}

impl ObjectIndex {
    /// The program's language: the one most of its compilation units with debug info use.
    pub fn language(&self) -> Option<Lang> {
        if self.go_pclntab.is_some() {
            return Some(Lang::Go);
        }
        let mut counts: HashMap<&'static str, (usize, Lang)> = HashMap::new();
        for u in self.units.iter().filter(|u| u.lang != Lang::Other) {
            counts.entry(u.lang.name()).or_insert((0, u.lang)).0 += 1;
        }
        counts.into_values().max_by_key(|(n, _)| *n).map(|(_, l)| l)
    }

    /// Reads and indexes an ELF file.
    pub fn open(path: &Path) -> Result<ObjectIndex, NativeError> {
        load::open(path, path, None)
    }

    /// Reads and indexes the ELF file at `path`, which a process knows as `logical` under
    /// `root` (`/proc/PID/root`): separate debug files are looked for where that process's
    /// files are.
    pub fn open_as(
        path: &Path,
        logical: &Path,
        root: Option<&Path>,
    ) -> Result<ObjectIndex, NativeError> {
        load::open(path, logical, root)
    }

    /// Whether the functions come from the symbol table alone (no DWARF), or Go's pclntab.
    pub fn symbols_only(&self) -> bool {
        !self.has_debug_info && !self.functions.is_empty()
    }

    /// Whether source lines can be placed: DWARF line tables, or a Go binary's pclntab.
    pub fn has_line_tables(&self) -> bool {
        (self.has_debug_info || self.go_pclntab.is_some()) && !self.rows.is_empty()
    }

    /// The DWARF encoding of a unit; for code without units (arguments by position), the
    /// x86-64 default, which is all a register location needs.
    pub fn encoding(&self, unit: u32) -> gimli::Encoding {
        self.units
            .get(unit as usize)
            .map(|u| u.unit.encoding())
            .unwrap_or(gimli::Encoding {
                address_size: 8,
                format: gimli::Format::Dwarf32,
                version: 4,
            })
    }

    /// The file paths in the line tables whose path ends with `suffix` on a path-component
    /// boundary (`cart.rs` matches `src/shop/cart.rs`, not `mycart.rs`).
    pub fn files_matching(&self, suffix: &str) -> Vec<u32> {
        let suffix = suffix.trim_start_matches("./");
        self.files
            .iter()
            .enumerate()
            .filter(|(_, f)| path_ends_with(f, suffix))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Lines of `file` that have a statement row (a place a probe can go), ascending.
    pub fn lines_with_code(&self, file: u32) -> Vec<u32> {
        let mut lines: Vec<u32> = self
            .rows
            .iter()
            .filter(|r| r.file == file && r.is_stmt && !r.end_sequence && r.line > 0)
            .map(|r| r.line)
            .collect();
        lines.sort_unstable();
        lines.dedup();
        lines
    }

    /// The addresses where execution of `line` in `file` starts: statement rows that begin a run
    /// of that line (the row before them, in the same sequence, is another line or none).
    pub fn line_starts(&self, file: u32, line: u32) -> Vec<u64> {
        let mut out = Vec::new();
        let mut prev: Option<&LineRow> = None;
        for row in &self.rows {
            let continues =
                prev.is_some_and(|p| !p.end_sequence && p.file == row.file && p.line == row.line);
            if row.file == file
                && row.line == line
                && row.is_stmt
                && !row.end_sequence
                && !continues
            {
                out.push(row.address);
            }
            prev = Some(row);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The function whose code contains `pc` (the innermost physical one).
    pub fn function_at(&self, pc: u64) -> Option<&Function> {
        // Functions are sorted by low_pc; the candidate is the last one starting at or before pc.
        let i = self.functions.partition_point(|f| f.low_pc <= pc);
        self.functions[..i]
            .iter()
            .rev()
            .take(8)
            .find(|f| pc < f.high_pc)
    }

    /// The address after the function's prologue: the first `prologue_end` row, else the second
    /// line-table row of the function (as gdb does for gcc, which rarely marks prologue ends).
    pub fn after_prologue(&self, f: &Function) -> u64 {
        let start = self.rows.partition_point(|r| r.address < f.low_pc);
        // A sequence ending where this function starts (Go's pclntab has one per function).
        let rows: Vec<&LineRow> = self.rows[start..]
            .iter()
            .skip_while(|r| r.end_sequence && r.address == f.low_pc)
            .take_while(|r| r.address < f.high_pc && !r.end_sequence)
            .collect();
        if let Some(r) = rows.iter().find(|r| r.prologue_end) {
            return r.address;
        }
        // The second distinct address with a statement row, within the function.
        rows.iter()
            .filter(|r| r.is_stmt)
            .map(|r| r.address)
            .find(|a| *a > f.low_pc)
            .unwrap_or(f.low_pc)
    }

    /// The line-table row covering `pc`.
    pub fn row_at(&self, pc: u64) -> Option<&LineRow> {
        let i = self.rows.partition_point(|r| r.address <= pc);
        let row = self.rows[..i].last()?;
        // The next row must exist past pc in the same sequence.
        if row.end_sequence {
            return None;
        }
        Some(row)
    }

    /// The symbol covering `addr`, with the offset into it.
    pub fn symbol_at(&self, addr: u64) -> Option<(&Symbol, u64)> {
        let i = self.symbols.partition_point(|s| s.address <= addr);
        let s = self.symbols[..i].last()?;
        let off = addr - s.address;
        (off < s.size.max(1)).then_some((s, off))
    }

    pub fn unit_lang(&self, unit: u32) -> Lang {
        if unit == NO_UNIT && self.go_pclntab.is_some() {
            return Lang::Go;
        }
        self.units
            .get(unit as usize)
            .map(|u| u.lang)
            .unwrap_or(Lang::Other)
    }

    /// Scopes (functions, blocks, inlined calls) and their variables for a unit, parsed once.
    pub fn scopes(&self, unit: u32) -> Result<Arc<scope::UnitScopes>, NativeError> {
        let mut cache = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&unit) {
            return Ok(s.clone());
        }
        let s = Arc::new(scope::UnitScopes::parse(self, unit)?);
        cache.insert(unit, s.clone());
        Ok(s)
    }

    /// The type at a DIE offset, parsed once.
    pub fn type_at(&self, unit: u32, offset: gimli::UnitOffset) -> Arc<types::Type> {
        if unit == NO_UNIT {
            return abi::arg_type();
        }
        if let Some(t) = self
            .types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(unit, offset))
        {
            return t.clone();
        }
        let t = Arc::new(types::parse(self, unit, offset));
        self.types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((unit, offset), t.clone());
        t
    }

    /// Go: the DWARF type whose runtime type descriptor is at offset `off` from
    /// `runtime.types` (`DW_AT_go_runtime_type`, which the Go linker writes on every type).
    pub fn go_runtime_type(&self, off: u64) -> Option<scope::TypeRef> {
        self.go_types().by_descriptor.get(&off).copied()
    }

    /// Go: a Swiss-map `table<K,V>` type (their layout is the same for every K and V).
    pub fn go_table_type(&self) -> Option<scope::TypeRef> {
        self.go_types().table
    }

    /// Go: `runtime.g`, the goroutine.
    pub fn go_g_type(&self) -> Option<scope::TypeRef> {
        self.go_types().g
    }

    fn go_types(&self) -> &GoTypes {
        self.go_types.get_or_init(|| self.read_go_types())
    }

    fn read_go_types(&self) -> GoTypes {
        const DW_AT_GO_RUNTIME_TYPE: gimli::DwAt = gimli::DwAt(0x2904);
        let mut out = GoTypes::default();
        for (i, u) in self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.lang == Lang::Go)
        {
            let mut cursor = u.unit.entries();
            while let Ok(Some(e)) = cursor.next_dfs() {
                let here = scope::TypeRef {
                    unit: i as u32,
                    offset: e.offset(),
                };
                if e.tag() == gimli::DW_TAG_structure_type
                    && (out.table.is_none() || out.g.is_none())
                {
                    let name = e
                        .attr_value(gimli::DW_AT_name)
                        .and_then(|v| attr_str(&self.dwarf, &u.unit, v));
                    match name.as_deref() {
                        Some("runtime.g") => out.g = Some(here),
                        Some(n) if n.starts_with("table<") => out.table = Some(here),
                        _ => {}
                    }
                }
                let off = match e.attr_value(DW_AT_GO_RUNTIME_TYPE) {
                    Some(gimli::AttributeValue::Addr(a)) => a,
                    Some(gimli::AttributeValue::Udata(a)) => a,
                    _ => continue,
                };
                if off != 0 {
                    out.by_descriptor.entry(off).or_insert(here);
                }
            }
        }
        out
    }

    /// Resolves a type reference: within the unit, or (`DW_FORM_ref_addr`, common in optimized
    /// and LTO builds) anywhere in .debug_info.
    pub fn type_ref(
        &self,
        unit: u32,
        v: Option<gimli::AttributeValue<R>>,
    ) -> Option<scope::TypeRef> {
        match v? {
            gimli::AttributeValue::UnitRef(offset) => Some(scope::TypeRef { unit, offset }),
            gimli::AttributeValue::DebugInfoRef(gimli::DebugInfoOffset(off)) => {
                let i = load::unit_containing(&self.units, off)?;
                let offset =
                    gimli::DebugInfoOffset(off).to_unit_offset(&self.units[i].unit.header)?;
                Some(scope::TypeRef {
                    unit: i as u32,
                    offset,
                })
            }
            _ => None,
        }
    }

    /// A global variable by name: exact, or unqualified within the crate (or C file scope) of
    /// the code asking, so `COUNTER` in `ledger::settle` finds `ledger::COUNTER` but a short
    /// name never lands on some library's static.
    pub fn find_global(&self, name: &str, function: &str) -> Option<&Global> {
        if let Some(g) = self.globals.iter().find(|g| g.name == name) {
            return Some(g);
        }
        let krate = function
            .trim_start_matches('<')
            .split("::")
            .next()
            .unwrap_or("");
        let wanted = format!("{krate}::{name}");
        self.globals.iter().find(|g| g.name == wanted)
    }

    /// The unit whose address ranges contain `pc`, found through the functions table.
    pub fn unit_at(&self, pc: u64) -> Option<u32> {
        self.function_at(pc).map(|f| f.unit)
    }

    /// Maps a file offset (as in /proc/PID/maps) to this file's virtual address.
    pub fn vaddr_for_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset < s.offset + s.filesz.max(1))
            .map(|s| s.vaddr + (offset - s.offset))
    }
}

/// The source name of a GCC clone's symbol: `rank.isra.0` → `rank`, `check.cold` → `check`,
/// `lookup.part.0` → `lookup` (suffixes stack: `f.constprop.0.isra.0`). Other names unchanged.
pub fn clone_source_name(symbol: &str) -> &str {
    const CLONES: [&str; 6] = [
        "cold",
        "part",
        "isra",
        "constprop",
        "lto_priv",
        "localalias",
    ];
    let mut name = symbol;
    loop {
        let mut parts = name.rsplitn(2, '.');
        let last = parts.next().unwrap_or("");
        let Some(head) = parts.next() else {
            return name;
        };
        if CLONES.contains(&last) {
            name = head;
            continue;
        }
        // `.N` after a clone kind: `rank.isra.0`.
        let mut inner = head.rsplitn(2, '.');
        let kind = inner.next().unwrap_or("");
        match inner.next() {
            Some(base) if last.bytes().all(|b| b.is_ascii_digit()) && CLONES.contains(&kind) => {
                name = base
            }
            _ => return name,
        }
    }
}

fn path_ends_with(path: &Path, suffix: &str) -> bool {
    let p = path.to_string_lossy();
    if p == suffix {
        return true;
    }
    p.ends_with(suffix)
        && (suffix.starts_with('/') || p.as_bytes()[p.len() - suffix.len() - 1] == b'/')
}

/// Turns a gimli attribute string into an owned `String`.
pub(crate) fn attr_str(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    v: gimli::AttributeValue<R>,
) -> Option<String> {
    dwarf
        .attr_string(unit, v)
        .ok()
        .and_then(|r| r.to_string_lossy().ok().map(|c| c.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matching_respects_components() {
        let p = Path::new("/home/u/shop/src/cart.rs");
        assert!(path_ends_with(p, "cart.rs"));
        assert!(path_ends_with(p, "src/cart.rs"));
        assert!(!path_ends_with(p, "art.rs"));
        assert!(path_ends_with(p, "/home/u/shop/src/cart.rs"));
    }
}

#[cfg(test)]
mod clone_tests {
    use super::clone_source_name;

    #[test]
    fn gcc_clones_go_by_their_source_names() {
        assert_eq!(clone_source_name("rank.isra.0"), "rank");
        assert_eq!(clone_source_name("check.cold"), "check");
        assert_eq!(clone_source_name("lookup.part.0"), "lookup");
        assert_eq!(clone_source_name("f.constprop.0.isra.0"), "f");
        assert_eq!(clone_source_name("main"), "main");
        assert_eq!(clone_source_name("a.b.c"), "a.b.c");
        assert_eq!(clone_source_name("v1.2"), "v1.2");
    }
}
