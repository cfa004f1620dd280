//! Building an [`ObjectIndex`] from an ELF file: sections, line tables, functions, symbols.

use super::*;
use gimli::Reader as _;
use object::{Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};
use std::borrow::Cow;

pub(super) fn open(
    path: &Path,
    logical: &Path,
    root: Option<&Path>,
) -> Result<ObjectIndex, NativeError> {
    let data = std::fs::read(path).map_err(|e| NativeError::Io {
        what: format!("read {}", path.display()),
        source: e,
    })?;
    let file = object::File::parse(&*data).map_err(|e| NativeError::NotElf {
        path: logical.to_path_buf(),
        reason: e.to_string(),
    })?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(NativeError::NotElf {
            path: logical.to_path_buf(),
            reason: format!(
                "it is built for {:?}; Periscope reads x86-64 code only",
                file.architecture()
            ),
        });
    }
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let build_id = file.build_id().ok().flatten().map(debugfile::hex);

    // The DWARF may live in a separate debug file (see `debugfile`): it supplies the debug
    // sections only; code, segments, file offsets and .eh_frame stay the binary's own.
    let mut debug_notes = Vec::new();
    let mut debug_path = None;
    let debug_data = if file.section_by_name(".debug_info").is_none() {
        let lookup = debugfile::find(&debugfile::Binary {
            path: logical,
            root,
            build_id: build_id.as_deref(),
            debuglink: file
                .gnu_debuglink()
                .ok()
                .flatten()
                .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc)),
        });
        debug_notes = lookup.notes;
        lookup.found.map(|f| {
            debug_path = Some(f.path);
            f.data
        })
    } else {
        None
    };
    let debug_file = match &debug_data {
        Some(d) => match object::File::parse(&**d) {
            Ok(f) => Some(f),
            Err(e) => {
                debug_notes.push(format!(
                    "its debug file {} is unreadable: {e}",
                    debug_path.as_deref().unwrap_or(Path::new("?")).display()
                ));
                debug_path = None;
                None
            }
        },
        None => None,
    };
    let dwarf_source = debug_file.as_ref().unwrap_or(&file);
    let has_debug_info = dwarf_source.section_by_name(".debug_info").is_some();

    let section = |f: &object::File, name: &str| -> R {
        let bytes: Cow<[u8]> = f
            .section_by_name(name)
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        EndianArcSlice::new(Arc::from(&*bytes), endian)
    };
    let dwarf = gimli::Dwarf::load(|id| -> Result<R, gimli::Error> {
        Ok(section(dwarf_source, id.name()))
    })
    .map_err(|e| NativeError::Dwarf(e.to_string()))?;

    let segments = file
        .segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            Segment {
                vaddr: s.address(),
                memsz: s.size(),
                offset,
                filesz,
                executable: matches!(s.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & 1 != 0),
            }
        })
        .collect();

    let eh_frame = file.section_by_name(".eh_frame").map(|s| {
        let mut bases = gimli::BaseAddresses::default().set_eh_frame(s.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        (gimli::EhFrame::from(section(&file, ".eh_frame")), bases)
    });
    let debug_frame = dwarf_source
        .section_by_name(".debug_frame")
        .map(|_| gimli::DebugFrame::from(section(dwarf_source, ".debug_frame")));

    // Symbols: the binary's, and the debug file's (`strip --strip-all` leaves only dynamic
    // symbols; `--only-keep-debug` keeps the full table).
    let mut aliases = text_symbols(&file);
    if let Some(d) = &debug_file {
        aliases.extend(text_symbols(d));
    }
    aliases.sort_by(|a, b| {
        (a.address, std::cmp::Reverse(a.size), &a.name).cmp(&(
            b.address,
            std::cmp::Reverse(b.size),
            &b.name,
        ))
    });
    aliases.dedup_by(|a, b| a.address == b.address && a.name == b.name);
    let mut symbols = aliases.clone();
    symbols.dedup_by_key(|s| s.address);
    let mut index = ObjectIndex {
        path: logical.to_path_buf(),
        opened: path.to_path_buf(),
        debug_file: debug_path,
        debug_notes,
        build_id,
        relocatable: file.kind() == ObjectKind::Dynamic,
        entry: file.entry(),
        segments,
        has_debug_info,
        dwarf,
        units: Vec::new(),
        files: Vec::new(),
        rows: Vec::new(),
        functions: Vec::new(),
        inlined: Vec::new(),
        globals: Vec::new(),
        symbols,
        aliases,
        eh_frame,
        debug_frame,
        scopes: Mutex::new(HashMap::new()),
        call_sites: Mutex::new(HashMap::new()),
        types: Mutex::new(HashMap::new()),
        go_types: std::sync::OnceLock::new(),
        go_types_base: file
            .symbols()
            .find(|s| s.name() == Ok("runtime.types"))
            .map(|s| s.address()),
        go_pclntab: None,
    };
    if has_debug_info {
        read_units(&mut index)?;
    } else if let Some(go) = gopcln::read(&file) {
        // Go without DWARF (`-ldflags=-w`): its runtime's own table names the functions
        // and lines (better than a symbol table, which `-s` drops anyway).
        match go {
            Ok(go) => {
                index.functions = go.functions;
                index.rows = go.rows;
                index.files = go.files;
                index.inlined = go.inlined;
                index.go_pclntab = Some(gopcln::go_version(&file).unwrap_or_default());
            }
            Err(e) => index.debug_notes.push(e.to_string()),
        }
    }
    if index.functions.is_empty() {
        // No DWARF (a default `cargo build --release`, `strip --strip-debug`): the symbol
        // table names the functions, and a probe at one reads its arguments by position.
        index.functions = symbol_functions(&index.aliases);
    }
    Ok(index)
}

/// Functions from the symbol table, for an object without DWARF: every name of each address
/// (C aliases such as `write` and `__libc_write` are all names a user may give).
fn symbol_functions(symbols: &[Symbol]) -> Vec<Function> {
    symbols
        .iter()
        .map(|s| Function {
            name: s.name.clone(),
            linkage_name: None,
            low_pc: s.address,
            high_pc: s.address + s.size.max(1),
            decl_file: None,
            decl_line: None,
            unit: NO_UNIT,
            offset: gimli::UnitOffset(0),
        })
        .collect()
}

/// The code symbols of a file, demangled, sorted by address; several per address (aliases).
fn text_symbols(file: &object::File) -> Vec<Symbol> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            Some(Symbol {
                address: s.address(),
                size: s.size(),
                name: demangle(raw),
            })
        })
        .collect()
}

/// Demangles a Rust (without the hash) or C++ symbol; other names come back unchanged.
pub fn demangle(raw: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(raw) {
        return format!("{d:#}");
    }
    if raw.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(raw) {
            if let Ok(s) = sym.demangle(&cpp_demangle::DemangleOptions::default()) {
                return s;
            }
        }
    }
    raw.to_string()
}

/// `ns::Class::method(int, char const*) const` → `ns::Class::method`.
pub(super) fn strip_cpp_params(name: &str) -> String {
    let trimmed = name
        .trim_end_matches(" const")
        .trim_end_matches(" &&")
        .trim_end_matches(" &");
    if !trimmed.ends_with(')') {
        return trimmed.to_string();
    }
    let mut depth = 0i32;
    for (i, c) in trimmed.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return trimmed[..i].to_string();
                }
            }
            _ => {}
        }
    }
    trimmed.to_string()
}

fn read_units(index: &mut ObjectIndex) -> Result<(), NativeError> {
    let mut headers = index.dwarf.units();
    let mut file_ids: HashMap<PathBuf, u32> = HashMap::new();
    // Every unit first: a DIE may refer to another unit, before or after its own (Go's
    // inlined copies name functions of other packages' units).
    let mut units = Vec::new();
    while let Some(header) = headers
        .next()
        .map_err(|e| NativeError::Dwarf(e.to_string()))?
    {
        let start = header.offset().0;
        let unit = match index.dwarf.unit(header) {
            Ok(u) => u,
            Err(_) => continue, // A unit gimli cannot read: skip it, keep the rest usable.
        };
        let (lang, producer) = {
            let mut cursor = unit.entries();
            match cursor.next_dfs() {
                Ok(Some(root)) => {
                    let lang = match root.attr_value(gimli::DW_AT_language) {
                        Some(gimli::AttributeValue::Language(l)) => Lang::from_dw(l),
                        _ => Lang::Other,
                    };
                    let producer = root
                        .attr_value(gimli::DW_AT_producer)
                        .and_then(|v| attr_str(&index.dwarf, &unit, v));
                    (lang, producer)
                }
                _ => (Lang::Other, None),
            }
        };
        units.push(UnitData {
            unit,
            start,
            lang,
            producer,
        });
    }
    for (i, u) in units.iter().enumerate() {
        read_lines(index, &u.unit, i as u32, &mut file_ids);
        read_dies(index, &units, i as u32, &mut file_ids);
    }
    index.units = units;
    index
        .functions
        .sort_by_key(|f| (f.low_pc, std::cmp::Reverse(f.high_pc)));
    sort_rows_by_sequence(&mut index.rows);
    // Go's abstract functions name no file: an inlined copy is declared in the file its first
    // instruction's line row names.
    let files: Vec<Option<u32>> = index
        .inlined
        .iter()
        .map(|c| match c.decl_file {
            Some(f) => Some(f),
            None => index.row_at(c.entry_pc).map(|r| r.file),
        })
        .collect();
    for (c, f) in index.inlined.iter_mut().zip(files) {
        c.decl_file = f;
    }
    Ok(())
}

/// Orders whole sequences by their first address, keeping each sequence's rows together, so that
/// binary searches by address work across units.
fn sort_rows_by_sequence(rows: &mut Vec<LineRow>) {
    let mut seqs: Vec<Vec<LineRow>> = Vec::new();
    let mut cur = Vec::new();
    for r in rows.drain(..) {
        let end = r.end_sequence;
        cur.push(r);
        if end {
            seqs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        seqs.push(cur);
    }
    // Sequences at address 0 are code the linker dropped (discarded sections): ignore them.
    seqs.retain(|s| s.first().is_some_and(|r| r.address != 0));
    seqs.sort_by_key(|s| s.first().map(|r| r.address).unwrap_or(0));
    *rows = seqs.into_iter().flatten().collect();
}

pub(super) fn file_path(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    header: &gimli::LineProgramHeader<R>,
    file: &gimli::FileEntry<R>,
) -> PathBuf {
    let mut path = PathBuf::new();
    if let Some(dir) = &unit.comp_dir {
        path.push(
            dir.to_string_lossy()
                .map(|c| c.into_owned())
                .unwrap_or_default(),
        );
    }
    if let Some(dir) = file.directory(header) {
        if let Some(d) = attr_str(dwarf, unit, dir) {
            path.push(d);
        }
    }
    if let Some(name) = attr_str(dwarf, unit, file.path_name()) {
        path.push(name);
    }
    path
}

fn intern_file(files: &mut Vec<PathBuf>, ids: &mut HashMap<PathBuf, u32>, p: PathBuf) -> u32 {
    if let Some(id) = ids.get(&p) {
        return *id;
    }
    let id = files.len() as u32;
    files.push(p.clone());
    ids.insert(p, id);
    id
}

fn read_lines(
    index: &mut ObjectIndex,
    unit: &gimli::Unit<R>,
    unit_idx: u32,
    ids: &mut HashMap<PathBuf, u32>,
) {
    let Some(program) = unit.line_program.clone() else {
        return;
    };
    let mut local: HashMap<u64, u32> = HashMap::new();
    let mut rows = program.rows();
    while let Ok(Some((header, row))) = rows.next_row() {
        let file_index = row.file_index();
        let file = match local.get(&file_index) {
            Some(f) => *f,
            None => {
                let path = header
                    .file(file_index)
                    .map(|f| file_path(&index.dwarf, unit, header, f))
                    .unwrap_or_default();
                let id = intern_file(&mut index.files, ids, path);
                local.insert(file_index, id);
                id
            }
        };
        index.rows.push(LineRow {
            address: row.address(),
            file,
            line: row.line().map(|l| l.get() as u32).unwrap_or(0),
            is_stmt: row.is_stmt(),
            prologue_end: row.prologue_end(),
            end_sequence: row.end_sequence(),
            unit: unit_idx,
        });
    }
}

/// Walks every DIE of a unit once, collecting functions, inlined copies and globals.
fn read_dies(
    index: &mut ObjectIndex,
    units: &[UnitData],
    unit_idx: u32,
    ids: &mut HashMap<PathBuf, u32>,
) {
    let unit = &units[unit_idx as usize].unit;
    let lang = units[unit_idx as usize].lang;
    let dwarf = &index.dwarf;
    // A file number is the line program's of the unit the attribute was read in.
    let file_of =
        |index_files: &mut Vec<PathBuf>, ids: &mut HashMap<PathBuf, u32>, (u, n): (u32, u64)| {
            let unit = &units.get(u as usize)?.unit;
            let program = unit.line_program.as_ref()?;
            let header = program.header();
            let f = header.file(n)?;
            Some(intern_file(
                index_files,
                ids,
                file_path(dwarf, unit, header, f),
            ))
        };
    // (depth, name) of enclosing namespaces and types; `in_function` depth for locals.
    let mut scopes: Vec<(isize, Option<String>, bool)> = Vec::new();
    let mut cursor = unit.entries();
    let mut functions = Vec::new();
    let mut inlined = Vec::new();
    let mut globals = Vec::new();
    while let Ok(Some(_)) = cursor.next_dfs() {
        let depth = cursor.depth();
        let Some(entry) = cursor.current() else { break };
        while scopes.last().is_some_and(|(d, _, _)| *d >= depth) {
            scopes.pop();
        }
        let in_function = scopes.iter().any(|(_, _, f)| *f);
        let tag = entry.tag();
        let own_name = entry
            .attr_value(gimli::DW_AT_name)
            .and_then(|v| attr_str(dwarf, unit, v));
        match tag {
            gimli::DW_TAG_namespace
            | gimli::DW_TAG_structure_type
            | gimli::DW_TAG_class_type
            | gimli::DW_TAG_union_type
            | gimli::DW_TAG_enumeration_type
                if entry.has_children() =>
            {
                scopes.push((depth, own_name.clone(), false));
            }
            gimli::DW_TAG_subprogram => {
                if entry.has_children() {
                    scopes.push((depth, None, true));
                }
                if entry.attr_value(gimli::DW_AT_declaration).is_some() {
                    continue;
                }
                let Some((low, high)) = first_range(dwarf, unit, entry) else {
                    continue;
                };
                let origin = origin_entry(units, unit_idx, entry);
                // An attribute of the DIE, else of its origin, read in the unit it is in.
                let attr = |at| match entry.attr_value(at) {
                    Some(v) => Some((unit, v)),
                    None => origin
                        .as_ref()
                        .and_then(|(ou, o)| Some((&units[*ou as usize].unit, o.attr_value(at)?))),
                };
                let text = |at| attr(at).and_then(|(u, v)| attr_str(dwarf, u, v));
                let linkage = text(gimli::DW_AT_linkage_name)
                    .or_else(|| text(gimli::DW_AT_MIPS_linkage_name));
                let short = text(gimli::DW_AT_name);
                let name = match (&linkage, lang) {
                    (Some(l), Lang::Rust) => demangle(l),
                    (Some(l), Lang::Cpp) => strip_cpp_params(&demangle(l)),
                    _ => match &short {
                        Some(s) => qualify(&scopes, s),
                        None => continue,
                    },
                };
                let file_unit = match entry.attr_value(gimli::DW_AT_decl_file) {
                    Some(_) => unit_idx,
                    None => origin.as_ref().map_or(unit_idx, |(u, _)| *u),
                };
                let decl_file = match attr(gimli::DW_AT_decl_file).map(|(_, v)| v) {
                    Some(gimli::AttributeValue::FileIndex(n)) => Some((file_unit, n)),
                    Some(gimli::AttributeValue::Udata(n)) => Some((file_unit, n)),
                    _ => None,
                };
                let decl_line = match attr(gimli::DW_AT_decl_line).map(|(_, v)| v) {
                    Some(gimli::AttributeValue::Udata(n)) => Some(n as u32),
                    _ => None,
                };
                functions.push((
                    name,
                    linkage,
                    low,
                    high,
                    decl_file,
                    decl_line,
                    entry.offset(),
                ));
            }
            gimli::DW_TAG_inlined_subroutine => {
                let Some((ou, origin)) = origin_entry(units, unit_idx, entry) else {
                    continue;
                };
                let origin_unit = &units[ou as usize].unit;
                let entry_pc = match entry.attr_value(gimli::DW_AT_entry_pc) {
                    Some(v) => dwarf.attr_address(unit, v).ok().flatten(),
                    None => None,
                }
                .or_else(|| first_range(dwarf, unit, entry).map(|r| r.0));
                let Some(entry_pc) = entry_pc else { continue };
                let text = |at| {
                    origin
                        .attr_value(at)
                        .and_then(|v| attr_str(dwarf, origin_unit, v))
                };
                let name = match (text(gimli::DW_AT_linkage_name), lang) {
                    (Some(l), Lang::Rust) => demangle(&l),
                    (Some(l), Lang::Cpp) => strip_cpp_params(&demangle(&l)),
                    _ => match text(gimli::DW_AT_name) {
                        Some(n) => n,
                        None => continue,
                    },
                };
                let decl_file = match origin.attr_value(gimli::DW_AT_decl_file) {
                    Some(gimli::AttributeValue::FileIndex(n)) => Some((ou, n)),
                    Some(gimli::AttributeValue::Udata(n)) => Some((ou, n)),
                    _ => None,
                };
                let decl_line = match origin.attr_value(gimli::DW_AT_decl_line) {
                    Some(gimli::AttributeValue::Udata(n)) => Some(n as u32),
                    _ => None,
                };
                inlined.push((
                    InlinedCopy {
                        name,
                        entry_pc,
                        unit: unit_idx,
                        decl_file: None,
                        decl_line,
                    },
                    decl_file,
                ));
            }
            gimli::DW_TAG_variable if !in_function => {
                if entry.attr_value(gimli::DW_AT_location).is_none() {
                    continue;
                }
                if let Some(n) = &own_name {
                    globals.push(Global {
                        name: qualify(&scopes, n),
                        unit: unit_idx,
                        offset: entry.offset(),
                    });
                }
            }
            _ => {}
        }
    }
    for (name, linkage, low, high, decl_file, decl_line, offset) in functions {
        let decl_file = decl_file.and_then(|n| file_of(&mut index.files, ids, n));
        index.functions.push(Function {
            name,
            linkage_name: linkage,
            low_pc: low,
            high_pc: high,
            decl_file,
            decl_line,
            unit: unit_idx,
            offset,
        });
    }
    for (mut copy, decl_file) in inlined {
        copy.decl_file = decl_file.and_then(|f| file_of(&mut index.files, ids, f));
        index.inlined.push(copy);
    }
    index.globals.extend(globals);
}

/// `name` inside the enclosing namespaces and types on the DIE walk's stack.
fn qualify(scopes: &[(isize, Option<String>, bool)], name: &str) -> String {
    let mut parts: Vec<&str> = scopes.iter().filter_map(|(_, n, _)| n.as_deref()).collect();
    parts.push(name);
    parts.join("::")
}

/// The DIE named by `DW_AT_abstract_origin` or `DW_AT_specification`, followed twice at most
/// (a concrete copy of an abstract instance of a declaration).
pub(crate) fn origin_entry(
    units: &[UnitData],
    unit_idx: u32,
    entry: &gimli::DebuggingInformationEntry<R>,
) -> Option<(u32, gimli::DebuggingInformationEntry<R>)> {
    let next = |u: u32, e: &gimli::DebuggingInformationEntry<R>| {
        let v = e
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| e.attr_value(gimli::DW_AT_specification))?;
        let (u, off) = match v {
            gimli::AttributeValue::UnitRef(off) => (u, off),
            // Another unit's DIE (`DW_FORM_ref_addr`): Go and LTO builds.
            gimli::AttributeValue::DebugInfoRef(off) => {
                let i = unit_containing(units, off.0)?;
                (i as u32, off.to_unit_offset(&units[i].unit.header)?)
            }
            _ => return None,
        };
        Some((u, units.get(u as usize)?.unit.entry(off).ok()?))
    };
    let (fu, first) = next(unit_idx, entry)?;
    match next(fu, &first) {
        Some((su, second))
            if second.attr_value(gimli::DW_AT_name).is_some()
                && first.attr_value(gimli::DW_AT_name).is_none() =>
        {
            Some((su, second))
        }
        _ => Some((fu, first)),
    }
}

/// The unit that holds .debug_info offset `off`.
pub(crate) fn unit_containing(units: &[UnitData], off: usize) -> Option<usize> {
    units.partition_point(|u| u.start <= off).checked_sub(1)
}

/// The first address range of a DIE (the hot part of a function split by the compiler).
pub(crate) fn first_range(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    entry: &gimli::DebuggingInformationEntry<R>,
) -> Option<(u64, u64)> {
    let mut ranges = dwarf.die_ranges(unit, entry).ok()?;
    while let Ok(Some(r)) = ranges.next() {
        if r.begin != 0 && r.end > r.begin {
            return Some((r.begin, r.end));
        }
    }
    None
}

/// All address ranges of a DIE.
pub(crate) fn all_ranges(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    entry: &gimli::DebuggingInformationEntry<R>,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if let Ok(mut ranges) = dwarf.die_ranges(unit, entry) {
        while let Ok(Some(r)) = ranges.next() {
            if r.begin != 0 && r.end > r.begin {
                out.push((r.begin, r.end));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_names_lose_their_parameters() {
        assert_eq!(
            strip_cpp_params("ns::A::f(int, char const*) const"),
            "ns::A::f"
        );
        assert_eq!(strip_cpp_params("g(std::function<void (int)>)"), "g");
        assert_eq!(strip_cpp_params("plain"), "plain");
    }
}
