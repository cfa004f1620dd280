//! A target: the executable and shared libraries of a process (or one binary on disk), each with
//! its index and load bias, and the resolution of user locations to code addresses.

use crate::error::NativeError;
use crate::index::scope::Visible;
use crate::index::{Function, InlinedCopy, ObjectIndex};
use periscope_core::Location;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One mapping of a file: (start, end, file offset).
pub(crate) type Mapping = (u64, u64, u64);

/// One object file as mapped into the target.
#[derive(Clone)]
pub struct LoadedObject {
    pub index: Arc<ObjectIndex>,
    /// Added to the file's addresses to get run-time addresses.
    pub bias: u64,
    /// The run-time address ranges of its mappings.
    pub ranges: Vec<(u64, u64)>,
    /// `dlclose` unmapped it: nothing resolves to it any more (its slot in
    /// [`Target::objects`] stays, so the indexes of the others do not move).
    pub unloaded: bool,
}

/// Cheap to clone: the indexes are shared.
#[derive(Clone)]
pub struct Target {
    pub pid: Option<u32>,
    pub objects: Vec<LoadedObject>,
}

pub use periscope_runtime::code::{FunctionInfo, SourceLine, SourceListing};

/// One code address a probe goes to.
#[derive(Debug, Clone)]
pub struct Site {
    pub object: usize,
    /// Run-time address.
    pub address: u64,
    /// The object file's own address (`address - bias`).
    pub file_address: u64,
    pub unit: u32,
    pub file: PathBuf,
    pub line: u32,
    pub function: String,
    pub visible: Visible,
}

impl Site {
    /// `file.rs:LINE`, the file by its name alone, as events name their location.
    pub fn short_location(&self) -> String {
        // A function known by its symbol alone has no source line: it goes by its name.
        if self.unit == crate::index::NO_UNIT && self.line == 0 {
            return self.function.clone();
        }
        let file = self
            .file
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{file}:{}", self.line)
    }
}

impl Target {
    /// Indexes the executable and every mapped library of a running process.
    /// The code of a process reported as `pid` running `executable`: read from the live
    /// process when it runs on this machine (so its libraries come too), else from the
    /// executable's file.
    pub fn of_process(pid: u32, executable: &str) -> Result<Target, NativeError> {
        let running = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            });
        if running.as_deref() == Some(executable) {
            Target::attach_view(pid)
        } else {
            Target::from_binary(Path::new(executable))
        }
    }

    pub fn attach_view(pid: u32) -> Result<Target, NativeError> {
        let maps = crate::maps::read(pid)?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let objects: Vec<LoadedObject> = mapped_files(maps)
            .into_iter()
            .filter_map(|(path, maps)| load_object(pid, exe.as_deref(), &path, &maps))
            .collect();
        if objects.is_empty() {
            return Err(NativeError::NoSuchProcess { pid });
        }
        Ok(Target {
            pid: Some(pid),
            objects,
        })
    }

    /// Indexes one binary on disk, at its link-time addresses.
    pub fn from_binary(path: &Path) -> Result<Target, NativeError> {
        let index = ObjectIndex::open(path)?;
        Ok(Target {
            pid: None,
            objects: vec![LoadedObject {
                index: Arc::new(index),
                bias: 0,
                ranges: Vec::new(),
                unloaded: false,
            }],
        })
    }

    /// The main executable (the first mapping of a process).
    pub fn main_object(&self) -> &LoadedObject {
        &self.objects[0]
    }

    pub fn object_at(&self, addr: u64) -> Option<(usize, &LoadedObject)> {
        self.objects
            .iter()
            .enumerate()
            .find(|(_, o)| o.ranges.iter().any(|(lo, hi)| addr >= *lo && addr < *hi))
    }

    fn with_debug_info(&self) -> Result<Vec<(usize, &LoadedObject)>, NativeError> {
        let v: Vec<_> = self
            .objects
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.unloaded && o.index.has_line_tables())
            .collect();
        if v.is_empty() {
            return Err(self.no_line_tables());
        }
        Ok(v)
    }

    /// Why a source location cannot be placed: the program has no DWARF, and its symbols
    /// (if it has them) name functions only.
    fn no_line_tables(&self) -> NativeError {
        let main = &self.main_object().index;
        let path = main.path.clone();
        let notes = main.debug_notes.clone();
        if main.symbols_only() {
            NativeError::NoLineTables { path, notes }
        } else {
            NativeError::NoDebugInfo { path, notes }
        }
    }

    /// The objects whose functions a name is looked up in: those with DWARF first; the
    /// symbol tables of the others only when no DWARF function has the name (so a library's
    /// symbol never makes a program's own function ambiguous).
    fn function_sources(&self, dwarf: bool) -> Vec<(usize, &LoadedObject)> {
        self.objects
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                !o.unloaded && !o.index.functions.is_empty() && o.index.has_debug_info == dwarf
            })
            .collect()
    }

    /// Resolves a location to the code addresses a probe must cover.
    pub fn resolve(&self, location: &Location) -> Result<Vec<Site>, NativeError> {
        let result = match location {
            Location::Line { file, line } => self.resolve_line(file, *line),
            Location::Function(name) => self.resolve_function(name),
        };
        // Not found, and the program itself has no debug info: that is the real problem
        // (a function found by its symbol needs none).
        let main = &self.main_object().index;
        let by_symbol = main.symbols_only() && matches!(location, Location::Function(_));
        match result {
            Err(NativeError::Location(_)) if !main.has_line_tables() && !by_symbol => {
                Err(self.no_line_tables())
            }
            other => other,
        }
    }

    /// Source files matching a path suffix, across objects: (object, file id, path).
    pub fn find_file(&self, file: &str) -> Result<Vec<(usize, u32, PathBuf)>, NativeError> {
        let objects = self.with_debug_info()?;
        let mut hits = Vec::new();
        for (oi, o) in &objects {
            for f in o.index.files_matching(file) {
                hits.push((*oi, f, o.index.files[f as usize].clone()));
            }
        }
        // Only files that have code count; headers that contribute nothing are skipped.
        hits.retain(|(oi, f, _)| self.objects[*oi].index.rows.iter().any(|r| r.file == *f));
        if hits.is_empty() {
            let base = Path::new(file)
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = base.split('.').next().unwrap_or(&base).to_string();
            let mut similar: BTreeSet<String> = BTreeSet::new();
            for (_, o) in &objects {
                for p in &o.index.files {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if !stem.is_empty()
                        && name.contains(&stem)
                        && !p.to_string_lossy().contains("/rustc/")
                    {
                        similar.insert(p.display().to_string());
                    }
                }
            }
            let hint = if similar.is_empty() {
                "; name a source file of the program, e.g. main.rs or src/lib.rs".to_string()
            } else {
                format!(
                    "; files with similar names: {}",
                    similar.into_iter().take(10).collect::<Vec<_>>().join(", ")
                )
            };
            return Err(NativeError::Location(format!(
                "no source file matching `{file}` in the debug info{hint}"
            )));
        }
        let distinct: BTreeSet<&PathBuf> = hits.iter().map(|(_, _, p)| p).collect();
        if distinct.len() > 1 {
            return Err(NativeError::Location(format!(
                "`{file}` matches several source files; write more of the path:\n  {}",
                distinct
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )));
        }
        Ok(hits)
    }

    fn resolve_line(&self, file: &str, line: u32) -> Result<Vec<Site>, NativeError> {
        let hits = self.find_file(file)?;
        let mut sites = Vec::new();
        let mut all_lines: BTreeSet<u32> = BTreeSet::new();
        for (oi, f, path) in &hits {
            let o = &self.objects[*oi];
            all_lines.extend(o.index.lines_with_code(*f));
            for mut addr in o.index.line_starts(*f, line) {
                // A line at a function's first instruction means its prologue: break after it,
                // where arguments are in place (as gdb does).
                if let Some(func) = o.index.function_at(addr) {
                    if func.low_pc == addr {
                        addr = o.index.after_prologue(func);
                    }
                }
                if let Some(site) = self.site(*oi, addr, Some((path.clone(), line))) {
                    if !sites.iter().any(|s: &Site| s.address == site.address) {
                        sites.push(site);
                    }
                }
            }
        }
        if sites.is_empty() {
            let before: Vec<String> = all_lines
                .range(..line)
                .rev()
                .take(3)
                .map(|l| l.to_string())
                .collect();
            let after: Vec<String> = all_lines
                .range(line..)
                .take(3)
                .map(|l| l.to_string())
                .collect();
            let mut near: Vec<String> = before.into_iter().rev().collect();
            near.extend(after);
            return Err(NativeError::Location(format!(
                "no code at {file}:{line}; nearest lines with code: {}",
                if near.is_empty() {
                    "none".to_string()
                } else {
                    near.join(", ")
                }
            )));
        }
        Ok(sites)
    }

    fn resolve_function(&self, name: &str) -> Result<Vec<Site>, NativeError> {
        let mut dwarf = self.function_sources(true);
        let mut symbols = self.function_sources(false);
        let mut name = name;
        if let Some((library, function)) = periscope_core::location::library_function(name) {
            // `libplugin.so:compute`: that library's functions only.
            let libraries = self.libraries_named(library);
            if libraries.is_empty() {
                return Err(NativeError::Location(format!(
                    "no library `{library}` is loaded in this process"
                )));
            }
            dwarf.retain(|(oi, _)| libraries.contains(oi));
            symbols.retain(|(oi, _)| libraries.contains(oi));
            name = function;
        }
        match self.resolve_function_in(name, &dwarf) {
            Err(NativeError::Location(why)) => {
                // A C alias (`write` of glibc's `__libc_write`): the DWARF function at the
                // address of the symbol of that name.
                if let Some(sites) = self.resolve_alias(name, &dwarf) {
                    return Ok(sites);
                }
                if symbols.is_empty() {
                    return Err(NativeError::Location(why));
                }
                match self.resolve_function_in(name, &symbols) {
                    Err(NativeError::Location(_)) if !dwarf.is_empty() => {
                        Err(NativeError::Location(why))
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// `name` as another name of a DWARF function: a symbol of exactly that name at the
    /// function's entry.
    fn resolve_alias(&self, name: &str, objects: &[(usize, &LoadedObject)]) -> Option<Vec<Site>> {
        for (_, o) in objects {
            let Some(sym) = o.index.aliases.iter().find(|s| s.name == name) else {
                continue;
            };
            let Some(f) = o.index.function_at(sym.address) else {
                continue;
            };
            if f.low_pc == sym.address && f.name != name {
                if let Ok(sites) = self.resolve_function_in(&f.name, objects) {
                    return Some(sites);
                }
            }
        }
        None
    }

    fn resolve_function_in(
        &self,
        name: &str,
        objects: &[(usize, &LoadedObject)],
    ) -> Result<Vec<Site>, NativeError> {
        // Exact, or unqualified: the last segments of a Rust or C++ path (`::`), of a Go name
        // (`.` between package, receiver and method, `/` in the package path). A Go generic
        // function's instances (`main.Sum[go.shape.int]`) all answer to its plain name.
        let matches = |f: &str| {
            let plain = without_instance(f);
            [f, plain.as_str()].iter().any(|f| {
                *f == name
                    || f.ends_with(&format!("::{name}"))
                    || f.ends_with(&format!(".{name}"))
                    || f.ends_with(&format!("/{name}"))
            })
        };
        // Each candidate name with where it comes from, to tell candidates apart.
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, o) in objects {
            for f in &o.index.functions {
                if matches(&f.name) {
                    let origin = declared_at(&o.index, f.decl_file, f.decl_line);
                    names.entry(f.name.clone()).or_default().insert(origin);
                }
            }
            for c in &o.index.inlined {
                if matches(&c.name) {
                    let origin = declared_at(&o.index, c.decl_file, c.decl_line);
                    names
                        .entry(c.name.clone())
                        .or_default()
                        .insert(format!("{origin}, inlined"));
                }
            }
        }
        if names.is_empty() {
            return Err(NativeError::Location(self.no_function(name, objects)));
        }
        let instances = names.len() > 1 && {
            let mut plain = names.keys().map(|n| without_instance(n));
            let first = plain.next();
            plain.all(|p| Some(p) == first) && !name.contains('[')
        };
        if names.len() > 1 && !instances {
            return Err(NativeError::Location(format!(
                "`{name}` is ambiguous; candidates (write one in full):\n  {}",
                names
                    .into_iter()
                    .take(20)
                    .map(|(n, origins)| format!(
                        "{n}  ({})",
                        origins.into_iter().collect::<Vec<_>>().join("; ")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )));
        }
        let fulls: Vec<String> = names.into_keys().collect();
        let Some(full) = fulls.first().cloned() else {
            return Err(NativeError::Location(format!("no function named `{name}`")));
        };
        let mut sites = Vec::new();
        for (oi, o) in objects {
            let funcs: Vec<&Function> = o
                .index
                .functions
                .iter()
                .filter(|f| fulls.contains(&f.name))
                .collect();
            let mut addrs: Vec<(u64, Option<&InlinedCopy>)> = funcs
                .iter()
                .map(|f| (function_entry(&o.index, f), None))
                .collect();
            addrs.extend(
                o.index
                    .inlined
                    .iter()
                    .filter(|c| fulls.contains(&c.name))
                    .map(|c| (c.entry_pc, Some(c))),
            );
            for (addr, copy) in addrs {
                if let Some(mut site) = self.site(*oi, addr, None) {
                    if let Some(c) = copy {
                        // An inlined copy: its own parameters and locals, its own line.
                        if let Some(v) = o
                            .index
                            .scopes(c.unit)
                            .ok()
                            .and_then(|s| s.inlined_visible_at(site.file_address, &c.name))
                        {
                            site.visible = v;
                        }
                        if let (Some(file), Some(line)) = (c.decl_file, c.decl_line) {
                            if let Some(p) = o.index.files.get(file as usize) {
                                site.file = p.clone();
                                site.line = line;
                            }
                        }
                    }
                    let own = funcs
                        .iter()
                        .find(|f| f.low_pc <= site.file_address && site.file_address < f.high_pc);
                    if let Some(f) = own {
                        if let Some(v) = o
                            .index
                            .scopes(f.unit)
                            .ok()
                            .and_then(|s| s.function_visible_at(site.file_address))
                        {
                            site.visible = v;
                        }
                        // Report the function's own line, not that of code inlined into its start.
                        if let (Some(file), Some(line)) = (f.decl_file, f.decl_line) {
                            if let Some(p) = o.index.files.get(file as usize) {
                                site.file = p.clone();
                                site.line = line;
                            }
                        }
                    }
                    if !sites.iter().any(|s: &Site| s.address == site.address) {
                        sites.push(site);
                    }
                }
            }
        }
        if sites.is_empty() {
            return Err(NativeError::Location(format!(
                "`{full}` has no code in this process"
            )));
        }
        Ok(sites)
    }

    /// Why no function is named `name`, with what was probably meant: `FILE:LINE` for a file
    /// name, the functions whose names contain it, else those spelled closest to it.
    fn no_function(&self, name: &str, objects: &[(usize, &LoadedObject)]) -> String {
        const SOURCE_EXTENSIONS: [&str; 9] = [
            ".rs", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".go", ".s",
        ];
        if SOURCE_EXTENSIONS.iter().any(|e| name.ends_with(e)) {
            return format!(
                "`{name}` is a source file, and a probe needs a line in it: `{name}:LINE` (`periscope lines PID {name}` shows the lines with code), or a function name"
            );
        }
        let lower = name.to_lowercase();
        let short = lower.rsplit("::").next().unwrap_or(&lower).to_string();
        let mut containing: BTreeSet<&str> = BTreeSet::new();
        // (distance, name) of the last path segments closest in spelling.
        let mut close: BTreeSet<(usize, &str)> = BTreeSet::new();
        for (_, o) in objects {
            let names = o
                .index
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .chain(o.index.inlined.iter().map(|c| c.name.as_str()));
            for full in names {
                let last = full.rsplit("::").next().unwrap_or(full).to_lowercase();
                if last.contains(&short) {
                    containing.insert(full);
                }
                let d = strsim::damerau_levenshtein(&last, &short);
                if d <= (short.len() / 3).max(1) {
                    close.insert((d, full));
                }
            }
        }
        let listed: Vec<&str> = if containing.is_empty() {
            close.into_iter().map(|(_, n)| n).take(5).collect()
        } else {
            containing.into_iter().take(10).collect()
        };
        if listed.is_empty() {
            format!(
                "no function named `{name}`; `periscope functions PID PATTERN` lists the functions"
            )
        } else {
            format!(
                "no function named `{name}`; did you mean {}?",
                listed
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// Builds a site at a file address of an object.
    fn site(&self, oi: usize, file_address: u64, line: Option<(PathBuf, u32)>) -> Option<Site> {
        let o = &self.objects[oi];
        let idx = &o.index;
        if idx.go_pclntab.is_some() {
            return self.pclntab_site(oi, file_address, line);
        }
        if idx.symbols_only() {
            return self.symbol_site(oi, file_address);
        }
        let row = idx.row_at(file_address);
        let unit = row.map(|r| r.unit).or_else(|| idx.unit_at(file_address))?;
        let (file, line) = match line {
            Some(l) => l,
            None => {
                let r = row?;
                (idx.files.get(r.file as usize)?.clone(), r.line)
            }
        };
        let function = idx
            .function_at(file_address)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| "?".into());
        let visible = idx.scopes(unit).ok()?.visible_at(file_address)?;
        Some(Site {
            object: oi,
            address: file_address.wrapping_add(o.bias),
            file_address,
            unit,
            file,
            line,
            function,
            visible,
        })
    }

    /// A site at the entry of a function known by its symbol alone: no source line, and the
    /// arguments by position (`arg0`…, see [`crate::index::abi`]), valid at the entry only.
    fn symbol_site(&self, oi: usize, file_address: u64) -> Option<Site> {
        let o = &self.objects[oi];
        let f = o.index.function_at(file_address)?;
        let vars = if f.low_pc == file_address {
            crate::index::abi::arguments()
        } else {
            Vec::new()
        };
        Some(Site {
            object: oi,
            address: file_address.wrapping_add(o.bias),
            file_address,
            unit: crate::index::NO_UNIT,
            file: o.index.path.clone(),
            line: 0,
            function: f.name.clone(),
            visible: Visible {
                vars,
                scope_id: gimli::UnitOffset(f.low_pc as usize),
                frame_base: None,
                env_param: None,
            },
        })
    }

    /// A site in a Go binary without DWARF: its line from the pclntab, and Go's arguments by
    /// position at a function's entry (up to the end of its prologue, where a function probe
    /// goes; the registers are the arguments until the body runs).
    fn pclntab_site(
        &self,
        oi: usize,
        file_address: u64,
        line: Option<(PathBuf, u32)>,
    ) -> Option<Site> {
        let o = &self.objects[oi];
        let idx = &o.index;
        let f = idx.function_at(file_address)?;
        let (file, line) = match line {
            Some(l) => l,
            None => idx
                .row_at(file_address)
                .and_then(|r| Some((idx.files.get(r.file as usize)?.clone(), r.line)))
                .unwrap_or_else(|| (idx.path.clone(), 0)),
        };
        let entry = file_address >= f.low_pc && file_address <= idx.after_prologue(f);
        Some(Site {
            object: oi,
            address: file_address.wrapping_add(o.bias),
            file_address,
            unit: crate::index::NO_UNIT,
            file,
            line,
            function: f.name.clone(),
            visible: Visible {
                vars: if entry {
                    crate::index::abi::go_arguments()
                } else {
                    Vec::new()
                },
                scope_id: gimli::UnitOffset(f.low_pc as usize),
                frame_base: None,
                env_param: None,
            },
        })
    }

    /// A run-time code address as `function (file:line)` or a symbol, for stacks and errors.
    pub fn describe(&self, addr: u64) -> String {
        match self.object_at(addr) {
            Some((_, o)) => {
                let fa = addr.wrapping_sub(o.bias);
                if let Some(f) = o.index.function_at(fa) {
                    return f.name.clone();
                }
                match o.index.symbol_at(fa) {
                    Some((s, off)) => format!("{}+{off:#x}", s.name),
                    None => format!("{addr:#x}"),
                }
            }
            None => format!("{addr:#x}"),
        }
    }
}

/// The files mapped into a process, each with its mappings as (start, end, file offset), in
/// the order of the maps (the executable first).
pub(crate) fn mapped_files(maps: Vec<crate::maps::Mapping>) -> Vec<(String, Vec<Mapping>)> {
    let mut by_path: Vec<(String, Vec<Mapping>)> = Vec::new();
    for m in maps {
        if m.inode == 0 || !m.path.starts_with('/') {
            continue;
        }
        let entry = (m.start, m.end, m.offset);
        match by_path.iter_mut().find(|(p, _)| *p == m.path) {
            Some((_, v)) => v.push(entry),
            None => by_path.push((m.path, vec![entry])),
        }
    }
    by_path
}

/// Indexes one mapped file of a process with its load bias; `None` when it is not ELF (a
/// font, a locale archive: nothing to probe). Also used when the loader maps a library later.
pub(crate) fn load_object(
    pid: u32,
    exe: Option<&Path>,
    path: &str,
    maps: &[Mapping],
) -> Option<LoadedObject> {
    // The paths in the maps are the process's own: in a container (another mount namespace
    // or root) they name its files, which the host may not have at all. So every file is
    // opened through /proc/PID/root, always: for a process that sees our files it is the same
    // file, and it is right for a chroot too. The executable through /proc/PID/exe (the very
    // file it runs). Debug directories are looked for inside a foreign root first, then on
    // the host (see `index/debugfile.rs`).
    let is_exe = exe.is_some_and(|e| e.to_string_lossy() == path);
    let open_path = if is_exe {
        PathBuf::from(format!("/proc/{pid}/exe"))
    } else {
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    };
    let foreign = crate::namespace::foreign_root(pid);
    let index = ObjectIndex::open_as(&open_path, Path::new(path), foreign.as_deref()).ok()?;
    let bias = maps
        .iter()
        .find_map(|(lo, _, off)| {
            index
                .segments
                .iter()
                .find(|s| *off >= s.offset & !0xfff && *off < s.offset + s.filesz.max(1))
                .map(|s| lo.wrapping_sub(s.vaddr.wrapping_add(*off).wrapping_sub(s.offset)))
        })
        .unwrap_or(0);
    Some(LoadedObject {
        index: Arc::new(index),
        bias,
        ranges: maps.iter().map(|(lo, hi, _)| (*lo, *hi)).collect(),
        unloaded: false,
    })
}

/// `file:line` of a declaration, else the object file it is in (a library without source).
fn declared_at(index: &ObjectIndex, file: Option<u32>, line: Option<u32>) -> String {
    match (file.and_then(|f| index.files.get(f as usize)), line) {
        (Some(p), Some(l)) => format!("{}:{l}", p.display()),
        (Some(p), None) => p.display().to_string(),
        _ => index.path.display().to_string(),
    }
}

/// Indexed binaries by (executable, build id), for code views that read the same program
/// again and again (indexing is the slow part: seconds for a large binary). Cheap to share.
#[derive(Clone, Default)]
pub struct TargetCache(Arc<std::sync::Mutex<HashMap<BinaryKey, Target>>>);

/// A binary: its path and build id.
type BinaryKey = (String, Option<String>);

impl TargetCache {
    /// [`Target::of_process`], indexed once per executable and build id.
    pub fn of_process(
        &self,
        pid: u32,
        executable: &str,
        build_id: Option<&str>,
    ) -> Result<Target, NativeError> {
        let key = (executable.to_string(), build_id.map(str::to_string));
        let lock = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = lock().get(&key) {
            return Ok(t.clone());
        }
        let target = Target::of_process(pid, executable)?;
        lock().insert(key, target.clone());
        Ok(target)
    }
}

/// Where a function probe goes: after the prologue, where arguments sit in their home slots (as
/// gdb does). In optimized code that address may fall inside an inlined callee; the site then
/// still shows the function's own variables (see `function_visible_at`).
fn function_entry(index: &ObjectIndex, f: &Function) -> u64 {
    index.after_prologue(f)
}

/// A function name without the type arguments of a Go generic instance:
/// `main.Sum[go.shape.int]` → `main.Sum`, `main.(*List[go.shape.int]).Push` → `main.(*List).Push`.
fn without_instance(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0u32;
    for c in name.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}
