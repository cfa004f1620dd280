//! Which locations are *pending*: they name a source file, a function or a library found in
//! no object the process has loaded, so a library it loads later (`dlopen`) may have them.
//! Such a probe waits for the loader (see `engine/loader.rs`) instead of failing. A location
//! in a loaded object that is wrong (a line with no code, a missing variable) is an error as
//! before, and so is a name spelled close to one that is loaded (a typo of it, most likely:
//! the error says what was meant; `LIB.so:FUNC` names a library that is not loaded yet).

use crate::error::NativeError;
use crate::target::{LoadedObject, Target};
use periscope_core::location::library_function;
use periscope_core::Location;
use std::path::Path;

impl Target {
    /// The objects (loaded ones) a library name stands for: `libplugin.so` is the file of that
    /// name, also with a version after it (`libplugin.so.1`), or a path ending with it.
    pub fn libraries_named(&self, library: &str) -> Vec<usize> {
        self.live()
            .filter(|(_, o)| {
                let path = o.index.path.to_string_lossy();
                let name = o
                    .index
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name == library
                    || name.starts_with(&format!("{library}."))
                    || (library.contains('/') && path.ends_with(library))
            })
            .map(|(i, _)| i)
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = (usize, &LoadedObject)> {
        self.objects.iter().enumerate().filter(|(_, o)| !o.unloaded)
    }

    /// Whether `location` names nothing in any loaded object, nor anything spelled close to it:
    /// a probe there is pending until a library that has it is loaded.
    pub fn names_nothing(&self, location: &Location) -> bool {
        match location {
            Location::Line { file, .. } => !self.has_file_like(file),
            Location::Function(name) => match library_function(name) {
                Some((library, _)) => self.libraries_named(library).is_empty(),
                None => !self.has_function_like(name),
            },
        }
    }

    /// A source file with code that matches `file`, or whose name is spelled close to it.
    fn has_file_like(&self, file: &str) -> bool {
        let wanted = base_name(file);
        self.live().any(|(_, o)| {
            let idx = &o.index;
            let matching = idx.files_matching(file);
            idx.files.iter().enumerate().any(|(fi, p)| {
                let matches = matching.contains(&(fi as u32));
                let close = close_spelling(&base_name(&p.to_string_lossy()), &wanted, 1);
                (matches || close) && idx.rows.iter().any(|r| r.file == fi as u32)
            })
        })
    }

    /// A function (or inlined copy, or symbol alias) named `name` as a probe names one, or
    /// whose last path segment is spelled close to it.
    fn has_function_like(&self, name: &str) -> bool {
        let short = last_segment(name).to_lowercase();
        let typos = if short.len() < 8 { 1 } else { 2 };
        let named = |full: &str| {
            full == name
                || [":", ".", "/"]
                    .iter()
                    .any(|sep| full.ends_with(&format!("{sep}{name}")))
                || close_spelling(&last_segment(full).to_lowercase(), &short, typos)
        };
        self.live().any(|(_, o)| {
            let idx = &o.index;
            idx.functions.iter().any(|f| named(&f.name))
                || idx.inlined.iter().any(|c| named(&c.name))
                || idx.aliases.iter().any(|s| named(&s.name))
        })
    }
}

/// Whether a probe's location stays pending given why resolving it failed: only when it named
/// nothing loaded (a wrong line or variable in a loaded object is an error). The message
/// the user is told: why it is not placed yet, and when it will be.
pub fn pending_reason(target: &Target, location: &Location, error: &NativeError) -> Option<String> {
    // A program without debug info gets the error saying how to build it: most likely the
    // file is its own (a library with DWARF loaded later can still be named `LIB.so:FUNC`).
    let unresolved = matches!(error, NativeError::Location(_));
    if !unresolved || target.pid.is_none() || !target.names_nothing(location) {
        return None;
    }
    let what = match location {
        Location::Line { file, .. } => format!("a library with source file `{file}`"),
        Location::Function(name) => match library_function(name) {
            Some((library, _)) => format!("`{library}`"),
            None => format!("a library with function `{name}`"),
        },
    };
    Some(format!(
        "pending: no object loaded yet has it; it arms when {what} is loaded"
    ))
}

fn base_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn last_segment(name: &str) -> &str {
    name.rsplit([':', '.', '/']).next().unwrap_or(name)
}

/// A spelling at most `edits` edits (a transposition is one) from the name: a typo of it.
/// Kept tight: a library's file or function a couple of letters from another name
/// (`login.c`, `plugin.c`) must not keep a probe from being pending.
fn close_spelling(a: &str, b: &str, edits: usize) -> bool {
    !b.is_empty() && a != b && strsim::damerau_levenshtein(a, b) <= edits
}

#[cfg(test)]
mod tests {
    use super::close_spelling;

    #[test]
    fn typos_are_close_and_other_names_are_not() {
        assert!(close_spelling("ledger.rs", "ledgr.rs", 1));
        assert!(close_spelling("handle", "handel", 1));
        assert!(!close_spelling("login.c", "plugin.c", 1));
        assert!(!close_spelling("compute", "plugin_compute", 2));
    }
}
