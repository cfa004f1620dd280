//! Commands that read a program's code without attaching: `lines`, `functions`, `find`. A
//! target is a process id (its executable and libraries, read through /proc) or a binary.

use anyhow::{anyhow, bail, Context, Result};
use periscope_runtime::{Code, RuntimeKind};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A PID (all digits, a live process: its runtime picked by the dispatcher, or `runtime`) or a
/// path to a binary.
fn open_target(target: &str, runtime: Option<RuntimeKind>) -> Result<Arc<dyn Code>> {
    if target.chars().all(|c| c.is_ascii_digit()) {
        let pid: u32 = target.parse().context("bad pid")?;
        let picked = periscope_runtimes::for_pid(pid, runtime)?;
        if let Some(n) = &picked.note {
            eprintln!("periscope: {n}");
        }
        return Ok(picked.runtime.open_process(pid)?);
    }
    let path = PathBuf::from(target);
    if !path.exists() {
        bail!("{target} is neither a running process id nor an existing file");
    }
    Ok(periscope_runtimes::for_file(&path)?.open_file(&path)?)
}

pub(crate) fn run_lines(
    target: &str,
    file: &str,
    json: bool,
    runtime: Option<RuntimeKind>,
) -> Result<()> {
    let t = open_target(target, runtime)?;
    let bad_range = |r: &str| anyhow!("bad line range `{r}`: write FROM-TO, e.g. 10-40");
    let (name, range) = match file.rsplit_once(':') {
        Some((n, r)) if r.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let a: u32 = a.parse().map_err(|_| bad_range(r))?;
            let b: u32 = b.parse().map_err(|_| bad_range(r))?;
            (n, Some((a.min(b), a.max(b))))
        }
        _ => (file, None),
    };
    let listing = t.source_lines(name, range)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&listing)?)?;
    } else {
        out.write_all(listing.text().as_bytes())?;
    }
    Ok(())
}

pub(crate) fn run_functions(
    target: &str,
    pattern: &str,
    json: bool,
    runtime: Option<RuntimeKind>,
) -> Result<()> {
    let t = open_target(target, runtime)?;
    let rows = t.functions(pattern);
    if rows.is_empty() {
        bail!("no function matches `{pattern}`");
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::json!({ "functions": rows }))?;
        return Ok(());
    }
    for f in rows {
        writeln!(out, "{}", f.text())?;
    }
    Ok(())
}

pub(crate) fn run_find(
    target: &str,
    message: &str,
    json: bool,
    runtime: Option<RuntimeKind>,
) -> Result<()> {
    if message.trim().is_empty() {
        bail!("--message needs the text as seen, e.g. --message \"no route to shard 12\"");
    }
    let t = open_target(target, runtime)?;
    let matches = t.find_message(message);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::json!({ "matches": matches }))?;
        return Ok(());
    }
    if matches.is_empty() {
        bail!(
            "no constant in the program's code produces `{message}`; try a shorter, distinctive part of it (the words, not the numbers)"
        );
    }
    for m in &matches {
        let at = match (&m.file, m.line) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            (Some(f), None) => f.clone(),
            _ => "?".to_string(),
        };
        let how = if m.exact { "exact" } else { "partial" };
        writeln!(out, "{at}  {}  ({how})", m.function)?;
        if let Some(src) = &m.source {
            writeln!(out, "    {src}")?;
        }
        writeln!(out, "    text: {:?}", m.text)?;
    }
    Ok(())
}
