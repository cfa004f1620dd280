//! Verifying a candidate fix on live traffic, read-only: at each hit of a location the failure
//! condition and the results to keep are evaluated on the real state and on the state the
//! candidate would have computed, and the hit lands in one cell per candidate.
//!
//! This module is the vocabulary every surface shares: parsing a candidate
//! (`NAME: VAR = EXPR; VAR = EXPR`), the cells, and the verdict with its statistical bound.

use crate::expr::{self, Expr, ExprKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A candidate fix: a name, and what the fixed code would compute, as assignments applied in
/// order (each sees the ones before it).
#[derive(Debug, Clone)]
pub struct Fix {
    pub name: String,
    /// (what is assigned, as written: a variable or a field path; its new value).
    pub assigns: Vec<(Expr, Expr)>,
}

/// Parses `capped: refund = min(refund, charge.amount - charge.refunded); fee = 0`.
pub fn parse_fix(text: &str) -> Result<Fix, String> {
    let colon = text
        .char_indices()
        .find(|(i, c)| *c == ':' && !text[i + 1..].starts_with(':'))
        .map(|(i, _)| i)
        .ok_or_else(|| {
            format!("`{text}`: a fix is NAME: VAR = EXPR[; VAR = EXPR], e.g. `capped: refund = min(refund, limit)`")
        })?;
    let name = text[..colon].trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{text}`: the fix's name (before `:`) must be a word such as `capped`"
        ));
    }
    let mut assigns = Vec::new();
    for part in text[colon + 1..].split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let eq = assignment_sign(part)
            .ok_or_else(|| format!("fix `{name}`: `{part}` is not an assignment VAR = EXPR"))?;
        let (lhs, rhs) = (part[..eq].trim(), part[eq + 1..].trim());
        let target = expr::parse(lhs).map_err(|e| format!("fix `{name}`, `{lhs}`: {e}"))?;
        if !is_place(&target) {
            return Err(format!(
                "fix `{name}`: `{lhs}` cannot be assigned; assign a variable or a field path (`fee`, `t.fee`)"
            ));
        }
        let value = expr::parse(rhs).map_err(|e| format!("fix `{name}`, `{rhs}`: {e}"))?;
        assigns.push((target, value));
    }
    if assigns.is_empty() {
        return Err(format!(
            "fix `{name}` assigns nothing; write NAME: VAR = EXPR"
        ));
    }
    Ok(Fix {
        name: name.to_string(),
        assigns,
    })
}

/// Replay mode's two locations: the computation starts at `from` (a function or a line) and
/// its outcome is known at `until` (a line reached later by the same thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub from: crate::Location,
    pub until: crate::Location,
}

/// Parses `FROM..UNTIL`: `refunds.rs:20..refunds.rs:25`, `handle..server.rs:88`.
pub fn parse_replay(text: &str) -> Result<Replay, String> {
    let (from, until) = text.split_once("..").ok_or_else(|| {
        format!("`{text}`: replay is FROM..UNTIL, two locations, e.g. `refund..refunds.rs:25`")
    })?;
    let location = |what: &str, s: &str| {
        let s = s.trim();
        if s.is_empty() {
            return Err(format!(
                "`{text}`: the {what} location is missing; replay is FROM..UNTIL, e.g. `refund..refunds.rs:25`"
            ));
        }
        s.parse::<crate::Location>()
            .map_err(|e| format!("`{text}`, {what} `{s}`: {e}"))
    };
    Ok(Replay {
        from: location("FROM", from)?,
        until: location("UNTIL", until)?,
    })
}

/// The `=` of an assignment: not part of `==`, `!=`, `<=`, `>=`.
fn assignment_sign(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| {
        b[i] == b'='
            && b.get(i + 1) != Some(&b'=')
            && (i == 0 || !matches!(b[i - 1], b'=' | b'!' | b'<' | b'>'))
    })
}

fn is_place(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Name(_) => true,
        ExprKind::Field(b, _) | ExprKind::Arrow(b, _) => is_place(b),
        ExprKind::Deref(b) => is_place(b),
        _ => false,
    }
}

/// Where one hit lands for one candidate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    /// The failure held in reality and not with the fix.
    Fixed,
    /// The failure held in reality and still does with the fix.
    NotFixed,
    /// No failure, and the kept results are the same with the fix.
    Unchanged,
    /// No failure either way, but a kept result differs.
    Changed,
    /// No failure in reality, but there is one with the fix.
    Broken,
    /// Something could not be evaluated at this hit.
    Inconclusive,
}

impl Cell {
    pub const ALL: [Cell; 6] = [
        Cell::Fixed,
        Cell::NotFixed,
        Cell::Unchanged,
        Cell::Changed,
        Cell::Broken,
        Cell::Inconclusive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cell::Fixed => "fixed",
            Cell::NotFixed => "not_fixed",
            Cell::Unchanged => "unchanged",
            Cell::Changed => "changed",
            Cell::Broken => "broken",
            Cell::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(s: &str) -> Option<Cell> {
        Cell::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The cell of a hit from what was seen: the failure in reality and with the fix, and
    /// whether every kept result is the same.
    pub fn of(real_failure: bool, fixed_failure: bool, kept_same: bool) -> Cell {
        match (real_failure, fixed_failure) {
            (true, false) => Cell::Fixed,
            (true, true) => Cell::NotFixed,
            (false, true) => Cell::Broken,
            (false, false) if kept_same => Cell::Unchanged,
            (false, false) => Cell::Changed,
        }
    }
}

/// A candidate's tally, as `verify --json` and the API report it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CandidateResult {
    pub name: String,
    pub failing: u64,
    pub fixed: u64,
    pub not_fixed: u64,
    pub passing: u64,
    pub unchanged: u64,
    pub changed: u64,
    pub broken: u64,
    pub inconclusive: u64,
    /// Up to 3 examples per cell: the values that decided it.
    pub examples: BTreeMap<String, Vec<serde_json::Value>>,
    pub verdict: String,
}

impl CandidateResult {
    pub fn new(name: &str) -> CandidateResult {
        CandidateResult {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn add(&mut self, cell: Cell, n: u64) {
        match cell {
            Cell::Fixed => self.fixed += n,
            Cell::NotFixed => self.not_fixed += n,
            Cell::Unchanged => self.unchanged += n,
            Cell::Changed => self.changed += n,
            Cell::Broken => self.broken += n,
            Cell::Inconclusive => self.inconclusive += n,
        }
        self.failing = self.fixed + self.not_fixed;
        self.passing = self.unchanged + self.changed + self.broken;
        self.verdict = self.verdict_text();
    }

    /// "fixed 37/37 failing hits; 0 broken in 1,203 passing (95% upper bound 0.25%)".
    fn verdict_text(&self) -> String {
        let mut s = format!("fixed {}/{} failing hits", self.fixed, self.failing);
        if self.passing > 0 {
            s.push_str(&format!(
                "; {} broken, {} changed in {} passing (95% upper bound of breaking: {})",
                self.broken,
                self.changed,
                self.passing,
                percent(upper_bound_95(self.broken, self.passing))
            ));
        } else {
            s.push_str("; no passing hits yet");
        }
        if self.inconclusive > 0 {
            s.push_str(&format!("; {} inconclusive", self.inconclusive));
        }
        s
    }
}

/// The counter group of a candidate's cell (`capped:fixed`): how verify tallies travel, as a
/// counter's groups, from the engine to every surface and to OTLP.
pub fn group_key(fix: &str, cell: Cell) -> String {
    format!("{fix}:{}", cell.as_str())
}

/// The candidate and cell of a group key.
pub fn parse_group_key(key: &str) -> Option<(&str, Cell)> {
    let (fix, cell) = key.rsplit_once(':')?;
    Some((fix, Cell::parse(cell)?))
}

/// Every candidate's result from counts per group key (summed over threads or instances) and
/// the examples seen per (candidate, cell); candidates in the order given.
pub fn results<'a>(
    names: &[String],
    counts: impl IntoIterator<Item = (&'a str, u64)>,
    examples: &BTreeMap<(String, String), Vec<serde_json::Value>>,
) -> Vec<CandidateResult> {
    let mut out: Vec<CandidateResult> = names.iter().map(|n| CandidateResult::new(n)).collect();
    for r in out.iter_mut() {
        r.add(Cell::Fixed, 0);
    }
    for (key, n) in counts {
        let Some((fix, cell)) = parse_group_key(key) else {
            continue;
        };
        if let Some(r) = out.iter_mut().find(|r| r.name == fix) {
            r.add(cell, n);
        }
    }
    for r in out.iter_mut() {
        for cell in Cell::ALL {
            if let Some(e) = examples.get(&(r.name.clone(), cell.as_str().to_string())) {
                let e: Vec<serde_json::Value> = e.iter().take(3).cloned().collect();
                r.examples.insert(cell.as_str().to_string(), e);
            }
        }
    }
    out
}

/// What a verify probe's example log event shows: one hit of candidate `fix` that landed in
/// `cell`, with the values that decided it in the event's `values`. Carried as a field of the
/// event, so the server and local mode read it as typed data (the event's `message`,
/// `verify FIX: CELL`, is only its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Example {
    #[schema(pattern = "^[^\\u0000]*$")]
    pub fix: String,
    pub cell: Cell,
}

impl Example {
    /// The event text of this example: `verify capped: fixed`.
    pub fn message(&self) -> String {
        format!("verify {}: {}", self.fix, self.cell.as_str())
    }
}

fn percent(p: f64) -> String {
    if p < 0.0001 {
        format!("{:.4}%", p * 100.0)
    } else {
        format!("{:.2}%", p * 100.0)
    }
}

/// The one-sided 95% upper bound of a rate from `k` events in `n` trials (Clopper-Pearson):
/// the largest p for which seeing `k` or fewer is still 5% likely. For k = 0 that is
/// 1 - 0.05^(1/n), about 3/n.
pub fn upper_bound_95(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    if k >= n {
        return 1.0;
    }
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if binomial_cdf(k, n, mid) > 0.05 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// P(X ≤ k) for X ~ Binomial(n, p), summed in log space.
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let mut total = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        total += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    total.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_parse_with_their_assignments_in_order() {
        let f = parse_fix("capped: refund = min(refund, limit - used); fee = 0").unwrap();
        assert_eq!(f.name, "capped");
        assert_eq!(f.assigns.len(), 2);
        assert_eq!(f.assigns[0].0.to_string(), "refund");
        assert_eq!(f.assigns[1].1.to_string(), "0");
        let g = parse_fix("x: t.fee = if a >= b { a } else { b }").unwrap();
        assert_eq!(g.assigns[0].0.to_string(), "t.fee");
        assert!(parse_fix("refund = 1").is_err());
        assert!(parse_fix("bad: 3 = 4")
            .unwrap_err()
            .contains("cannot be assigned"));
        assert!(parse_fix("nothing:")
            .unwrap_err()
            .contains("assigns nothing"));
    }

    #[test]
    fn replays_are_two_locations() {
        let r = parse_replay("refund..refunds.rs:25").unwrap();
        assert_eq!(r.from.to_string(), "refund");
        assert_eq!(r.until.to_string(), "refunds.rs:25");
        assert!(parse_replay("refunds.rs:25")
            .unwrap_err()
            .contains("FROM..UNTIL"));
        assert!(parse_replay("a..")
            .unwrap_err()
            .contains("UNTIL location is missing"));
    }

    #[test]
    fn the_bound_is_the_rule_of_three_and_grows_with_breaks() {
        let b = upper_bound_95(0, 1203);
        assert!((b - 3.0 / 1203.0).abs() < 0.0002, "{b}");
        assert!(upper_bound_95(5, 100) > 0.05 && upper_bound_95(5, 100) < 0.12);
        assert_eq!(upper_bound_95(0, 0), 1.0);
    }

    #[test]
    fn cells_follow_reality_then_the_fix() {
        assert_eq!(Cell::of(true, false, true), Cell::Fixed);
        assert_eq!(Cell::of(true, true, true), Cell::NotFixed);
        assert_eq!(Cell::of(false, true, true), Cell::Broken);
        assert_eq!(Cell::of(false, false, false), Cell::Changed);
        assert_eq!(Cell::of(false, false, true), Cell::Unchanged);
    }
}
