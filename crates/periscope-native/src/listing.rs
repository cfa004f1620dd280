//! A target's code as listings: a source file's lines with the ones a probe can take, and the
//! functions matching a pattern (`periscope lines`, `periscope functions`, the code views).

use crate::error::NativeError;
use crate::index::InlinedCopy;
use crate::target::{FunctionInfo, SourceLine, SourceListing, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

impl Target {
    /// A source file as the debug info knows it: each line, with its text when the file is on
    /// disk (read through /proc/PID/root for processes, so containers work) and whether a probe
    /// can go there. `range` limits the listing to FROM..=TO.
    pub fn source_lines(
        &self,
        file: &str,
        range: Option<(u32, u32)>,
    ) -> Result<SourceListing, NativeError> {
        let hits = self.find_file(file)?;
        let path = hits[0].2.clone();
        let mut code: BTreeSet<u32> = BTreeSet::new();
        for (o, f, _) in &hits {
            code.extend(self.objects[*o].index.lines_with_code(*f));
        }
        let on_disk = match self.pid {
            Some(pid) => {
                let in_root = PathBuf::from(format!("/proc/{pid}/root{}", path.display()));
                if in_root.exists() {
                    in_root
                } else {
                    path.clone()
                }
            }
            None => path.clone(),
        };
        let wanted = |n: u32| range.is_none_or(|(a, b)| n >= a && n <= b);
        let lines = match std::fs::read_to_string(&on_disk) {
            Ok(text) => text
                .lines()
                .enumerate()
                .map(|(i, t)| (i as u32 + 1, t))
                .filter(|(n, _)| wanted(*n))
                .map(|(n, t)| SourceLine {
                    line: n,
                    text: Some(t.to_string()),
                    instrumentable: code.contains(&n),
                })
                .collect(),
            Err(_) => code
                .iter()
                .filter(|n| wanted(**n))
                .map(|n| SourceLine {
                    line: *n,
                    text: None,
                    instrumentable: true,
                })
                .collect(),
        };
        Ok(SourceListing { file: path, lines })
    }

    /// Functions whose qualified name contains `pattern` (case-insensitive; `*` matches
    /// anything), each with its declaration's file and line: the program's own first, then
    /// the toolchain's and the libraries', each sorted by name.
    pub fn find_functions(&self, pattern: &str) -> Vec<FunctionInfo> {
        let pat = pattern.to_lowercase();
        let parts: Vec<&str> = pat.split('*').collect();
        let matches = |name: &str| {
            let n = name.to_lowercase();
            let mut at = 0;
            for p in &parts {
                match n[at..].find(p) {
                    Some(i) => at += i + p.len(),
                    None => return false,
                }
            }
            true
        };
        // The program's own functions first, then its libraries' (std, glibc): ranked by
        // the object (the executable first) and whether the source is the toolchain's.
        let mut rows: BTreeSet<(u8, FunctionInfo)> = BTreeSet::new();
        for (oi, o) in self.objects.iter().enumerate() {
            let rank = |file: &Option<PathBuf>| -> u8 {
                let foreign = file.as_ref().is_none_or(|f| {
                    let f = f.to_string_lossy();
                    f.starts_with("/rustc/")
                        || f.starts_with("/rust/deps/")
                        || f.contains("/.cargo/registry/")
                        || f.starts_with("/usr/")
                });
                match (oi == 0, foreign) {
                    (true, false) => 0,
                    (true, true) => 1,
                    _ => 2,
                }
            };
            let physical: BTreeSet<&str> =
                o.index.functions.iter().map(|f| f.name.as_str()).collect();
            // A listed function, ranked by where it is declared.
            let row = |name: &str, file: Option<u32>, line, inlined_into: Option<Vec<String>>| {
                let file = file.and_then(|i| o.index.files.get(i as usize)).cloned();
                (
                    rank(&file),
                    FunctionInfo {
                        name: name.to_string(),
                        file: file.unwrap_or_else(|| o.index.path.clone()),
                        line,
                        inlined: inlined_into.is_some(),
                        inlined_into: inlined_into.unwrap_or_default(),
                    },
                )
            };
            for f in o.index.functions.iter().filter(|f| matches(&f.name)) {
                rows.insert(row(&f.name, f.decl_file, f.decl_line, None));
            }
            // Functions with no code of their own, only copies inlined into callers.
            let mut inlined: BTreeMap<&str, (&InlinedCopy, BTreeSet<String>)> = BTreeMap::new();
            for c in o.index.inlined.iter().filter(|c| matches(&c.name)) {
                if physical.contains(c.name.as_str()) {
                    continue;
                }
                let caller = o
                    .index
                    .function_at(c.entry_pc)
                    .map(|f| f.name.clone())
                    .unwrap_or_else(|| format!("{:#x}", c.entry_pc));
                inlined
                    .entry(&c.name)
                    .or_insert((c, BTreeSet::new()))
                    .1
                    .insert(caller);
            }
            for (name, (c, callers)) in inlined {
                let callers = Some(callers.into_iter().collect());
                rows.insert(row(name, c.decl_file, c.decl_line, callers));
            }
        }
        rows.into_iter().map(|(_, f)| f).collect()
    }
}
