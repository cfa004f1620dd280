//! `periscope verify`: candidate fixes checked on a live process's own traffic, read-only. The
//! engine puts each hit in a cell per candidate (counted in the probe's tallies, with the first
//! examples of each cell reported as events); this prints the table live and the verdicts.

use super::{end_with, local_probe, print_probe_error, pump, report, start};
use crate::Common;
use anyhow::Result;
use clap::Args;
use periscope_core::api::{NewProbe, ProbeKind};
use periscope_core::event::Body;
use periscope_core::verify::CandidateResult;
use periscope_runtime::{EngineEvent, Limits, Tallies};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct VerifyArgs {
    pub pid: u32,
    /// FILE:LINE or a function, where the failure shows and the fixes apply.
    pub location: String,
    /// The failure, as a condition at LOCATION: `refund > charge.amount`.
    #[arg(long, value_name = "EXPR")]
    pub failure: String,
    /// A candidate: `NAME: VAR = EXPR[; VAR = EXPR]` (repeatable).
    #[arg(long = "fix", value_name = "FIX", required = true)]
    pub fixes: Vec<String>,
    /// A result that must not change where nothing failed (repeatable; default: every
    /// variable a fix assigns).
    #[arg(long, value_name = "EXPR")]
    pub keep: Vec<String>,
    /// Replay mode: FROM..UNTIL locations, the computation run in a copy of the process.
    #[arg(long, value_name = "FROM..UNTIL")]
    pub replay: Option<String>,
    /// Hits evaluated per second (shadow mode), or copies made per second (replay mode,
    /// default 1).
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Stop after this many hits.
    #[arg(long)]
    pub max_hits: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let mut p = NewProbe::new(ProbeKind::Verify, "", &a.location);
    p.failure = Some(a.failure.clone());
    p.fixes = a.fixes.clone();
    p.keep = a.keep.clone();
    p.replay = a.replay.clone();
    p.max_hits = a.max_hits;
    p.rate_limit = a.rate;
    let names: Vec<String> = a
        .fixes
        .iter()
        .filter_map(|f| periscope_core::verify::parse_fix(f).ok().map(|f| f.name))
        .collect();
    let spec = local_probe(p, &a.common, Limits::default())?;
    let session = start(a.pid, spec, &a.common.output)?;
    if let Some(r) = &a.replay {
        let (from, until) = r.split_once("..").unwrap_or((r, ""));
        super::note(&format!(
            "periscope: replay: at {from}, a copy of pid {} (at most {} a second, one at a time) runs with a candidate applied at {}; the outcome is read at {until} in the copy and in the original",
            a.pid,
            a.rate.unwrap_or(1.0),
            a.location
        ));
    }
    let tallies = session.tallies();
    let json = a.common.output.json;
    let deadline = a.common.output.duration.map(|d| Instant::now() + d);
    let mut examples: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
    let reason = pump(
        &session,
        deadline,
        Some(Duration::from_secs(1)),
        |ev| {
            match ev {
                EngineEvent::Event(Body::Log(l)) => {
                    if let Some(x) = &l.verify {
                        let e = examples
                            .entry((x.fix.clone(), x.cell.as_str().to_string()))
                            .or_default();
                        if e.len() < 3 {
                            e.push(serde_json::to_value(&l.values)?);
                        }
                    }
                }
                EngineEvent::Event(Body::Error(e)) => {
                    print_probe_error(json, &e, &mut std::io::stderr().lock())?
                }
                _ => {}
            }
            Ok(())
        },
        || {
            if !json {
                let (hits, results) = results(&tallies, &names, &BTreeMap::new());
                eprintln!("periscope: {hits} hits so far");
                for r in &results {
                    eprintln!("  {}: {}", r.name, r.verdict);
                }
            }
            Ok(())
        },
    );
    let summary = session.stop();
    report(&summary);
    let (hits, results) = results(&tallies, &names, &examples);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "hits": hits, "candidates": results })
        )?;
    } else {
        print_table(&mut out, hits, &results)?;
    }
    end_with(reason)
}

/// Hits and each candidate's cells from the tallies, with the examples seen.
fn results(
    tallies: &Tallies,
    names: &[String],
    examples: &BTreeMap<(String, String), Vec<serde_json::Value>>,
) -> (u64, Vec<CandidateResult>) {
    let t = tallies.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = t.first() else {
        return (0, Vec::new());
    };
    let counts = t
        .counts
        .iter()
        .filter_map(|((_, key), n)| Some((key.as_deref()?, *n)));
    (
        t.hits,
        periscope_core::verify::results(names, counts, examples),
    )
}

pub(crate) fn print_table(
    out: &mut impl Write,
    hits: u64,
    results: &[CandidateResult],
) -> Result<()> {
    writeln!(out, "{hits} hits")?;
    writeln!(
        out,
        "{:<16} {:>8} {:>8} {:>10} {:>8} {:>10} {:>8} {:>7} {:>13}",
        "CANDIDATE",
        "FAILING",
        "FIXED",
        "NOT_FIXED",
        "PASSING",
        "UNCHANGED",
        "CHANGED",
        "BROKEN",
        "INCONCLUSIVE"
    )?;
    for r in results {
        writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>10} {:>8} {:>10} {:>8} {:>7} {:>13}",
            r.name,
            r.failing,
            r.fixed,
            r.not_fixed,
            r.passing,
            r.unchanged,
            r.changed,
            r.broken,
            r.inconclusive
        )?;
    }
    for r in results {
        writeln!(out, "{}: {}", r.name, r.verdict)?;
        for (cell, examples) in &r.examples {
            if let Some(first) = examples.first() {
                writeln!(out, "  e.g. {cell}: {first}")?;
            }
        }
    }
    Ok(())
}
