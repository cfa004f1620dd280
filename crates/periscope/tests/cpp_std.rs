//! The C++ standard library as gdb's libstdc++ printers show it: a snapshot of every local of
//! examples/targets/stdlib.cpp at its probe line, built `g++ -g` and `g++ -g -O2`, compared
//! element by element with gdb's own `print` of the same variables at the same line in the
//! same round; expressions on them (`len(m)`, `m["b"]`, `*sp`, `dq[250]`, conditions); and the
//! in-kernel engine, which reads their lengths and leaves their elements to ptrace, saying so.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Every local of the probe line that gdb is asked to print.
const VARS: [&str; 29] = [
    "key", "m", "mm", "s", "ms", "um", "ui", "us", "umm", "dq", "l", "fl", "sp", "sp2", "wp",
    "empty_sp", "*up", "opt", "none", "var", "var_d", "sv", "arr", "vb", "pr", "tup", "ms_d",
    "secs", "v",
];

/// A value as gdb prints it: text (a number, a quoted string, `true`), or braces of items,
/// each with its key (`["a"]`, `[0]`, `first`) when gdb gives one.
#[derive(Debug, Clone, PartialEq)]
enum G {
    Atom(String),
    Seq(Vec<(Option<String>, G)>),
}

impl G {
    fn items(&self) -> Vec<G> {
        match self {
            G::Seq(s) => s.iter().map(|(_, v)| v.clone()).collect(),
            a => vec![a.clone()],
        }
    }

    fn pairs(&self) -> Vec<(String, G)> {
        match self {
            G::Seq(s) => s
                .iter()
                .map(|(k, v)| (k.clone().expect("gdb gave no key"), v.clone()))
                .collect(),
            other => panic!("not braces: {other:?}"),
        }
    }

    fn field(&self, name: &str) -> G {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
            .1
    }
}

/// Parses one gdb value from `s` at `*at`.
fn parse_value(s: &[char], at: &mut usize) -> G {
    skip_spaces(s, at);
    if s.get(*at) == Some(&'{') {
        *at += 1;
        let mut items = Vec::new();
        loop {
            skip_spaces(s, at);
            match s.get(*at) {
                Some('}') => {
                    *at += 1;
                    return G::Seq(items);
                }
                Some(',') => *at += 1,
                None => return G::Seq(items),
                _ => items.push(parse_item(s, at)),
            }
        }
    }
    let start = *at;
    let mut quoted = false;
    while let Some(&c) = s.get(*at) {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => *at += 1,
            ',' | '}' if !quoted => break,
            _ => {}
        }
        *at += 1;
    }
    let text: String = s[start..*at].iter().collect();
    // A list cut at gdb's `print elements` limit ends in `...`.
    G::Atom(text.trim().trim_end_matches("...").to_string())
}

/// `[key] = value`, `name = value` or a bare value.
fn parse_item(s: &[char], at: &mut usize) -> (Option<String>, G) {
    let rest: String = s[*at..].iter().take(200).collect();
    if rest.starts_with('[') {
        // The key runs to the `] = ` at its bracket depth (a key may be a quoted "]").
        let mut depth = 0;
        let mut quoted = false;
        let mut i = *at;
        while i < s.len() {
            match s[i] {
                '"' => quoted = !quoted,
                '\\' if quoted => i += 1,
                '[' if !quoted => depth += 1,
                ']' if !quoted => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let key: String = s[*at + 1..i].iter().collect();
        *at = i + 1;
        skip_spaces(s, at);
        assert_eq!(s.get(*at), Some(&'='), "bad gdb item {rest}");
        *at += 1;
        return (Some(key), parse_value(s, at));
    }
    let name_len = rest.find(" = ").filter(|&n| {
        rest[..n]
            .chars()
            .all(|c| c.is_alphanumeric() || "_()".contains(c))
    });
    if let Some(n) = name_len {
        let key = rest[..n].to_string();
        *at += n + 3;
        return (Some(key), parse_value(s, at));
    }
    (None, parse_value(s, at))
}

fn skip_spaces(s: &[char], at: &mut usize) {
    while s.get(*at).is_some_and(|c| c.is_whitespace()) {
        *at += 1;
    }
}

/// gdb's printing of one variable: the text before its braces (`std::map with 3 elements`)
/// and the value.
#[derive(Debug)]
struct Printed {
    header: String,
    value: G,
}

fn printed(line: &str) -> Printed {
    let body = line.split_once(" = ").map(|x| x.1).unwrap_or(line);
    let chars: Vec<char> = body.chars().collect();
    // The value is the last top-level `{…}` or, without braces, the text itself.
    match body.find(" = {").filter(|_| !body.starts_with('{')) {
        Some(i) => {
            let mut at = i + 3;
            Printed {
                header: body[..i].to_string(),
                value: parse_value(&chars, &mut at),
            }
        }
        None => {
            let mut at = 0;
            Printed {
                header: body.to_string(),
                value: parse_value(&chars, &mut at),
            }
        }
    }
}

/// Runs the program under gdb to the probe line in round `round` and prints `VARS`.
fn gdb_prints(exe: &Path, line: u32, round: i64) -> BTreeMap<String, Printed> {
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch", "-ex", "set pagination off"])
        .args(["-ex", "set print elements 200"])
        .args([
            "-ex",
            &format!("break stdlib.cpp:{line} if round == {round}"),
        ])
        .args(["-ex", &format!("run {round} > /dev/null")]);
    for v in VARS {
        cmd.args(["-ex", &format!("print {v}")]);
    }
    cmd.args(["-ex", "kill"]).arg(exe);
    let out = cmd.output().expect("run gdb");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('$')).collect();
    assert_eq!(
        lines.len(),
        VARS.len(),
        "gdb printed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    VARS.iter()
        .zip(lines)
        .map(|(v, l)| (v.to_string(), printed(l)))
        .collect()
}

/// One of our values as gdb writes a scalar: `1`, `2.5`, `"pair"`, `true`.
fn atom(v: &Value) -> G {
    G::Atom(match v["kind"].as_str() {
        Some("int") => v["value"].to_string(),
        Some("float") => format!("{}", v["value"].as_f64().expect("float")),
        Some("bool") => v["value"].to_string(),
        Some("string") => format!("\"{}\"", v["value"].as_str().expect("string")),
        _ => panic!("not a scalar: {v}"),
    })
}

fn items(v: &Value) -> Vec<G> {
    assert_eq!(v["kind"], "list", "{v}");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(atom)
        .collect()
}

fn entries(v: &Value) -> Vec<(String, G)> {
    assert_eq!(v["kind"], "map", "{v}");
    v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let G::Atom(k) = atom(&e["key"]) else {
                unreachable!()
            };
            (k, atom(&e["value"]))
        })
        .collect()
}

/// The count in gdb's `with N elements` or `of length N`.
fn gdb_len(p: &Printed) -> u64 {
    let words: Vec<&str> = p.header.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "with" || w[0] == "length")
        .and_then(|w| w[1].trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no length in {:?}", p.header))
}

/// (use count, weak count) from gdb's `std::shared_ptr<Point> (use count 2, weak count 1)`.
fn gdb_counts(p: &Printed) -> (u64, u64) {
    let inside = p.header.split_once('(').expect("counts").1;
    let nums: Vec<u64> = inside
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn compare_with_gdb(exe: &Path) {
    let t = Target::start(exe, &[]);
    let line = probe_line("stdlib.cpp", "stdlib-all");
    let loc = format!("stdlib.cpp:{line}");
    let out = run_periscope(&[
        "snapshot",
        &t.pid.to_string(),
        &loc,
        "--json",
        "--frames",
        "1",
        "--max-hits",
        "1",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    drop(t);
    let snap = stdout_json(&out).remove(0);
    let vars = &snap["frames"][0]["variables"];
    let var = |n: &str| -> &Value {
        let v = &vars[n];
        assert!(v.is_object(), "no {n} in {vars}");
        v
    };
    let round = var("round")["value"].as_i64().expect("round");
    let gdb = gdb_prints(exe, line, round);
    let g = |n: &str| &gdb[n];

    assert_eq!(atom(var("key")), g("key").value);
    // Ordered and unordered maps: every key and value, in gdb's order.
    for n in ["m", "mm", "um", "ui", "umm"] {
        let ours = var(n);
        assert_eq!(ours["len"].as_u64(), Some(gdb_len(g(n))), "{n}: {ours}");
        let theirs: Vec<(String, G)> = g(n).value.pairs();
        assert_eq!(entries(ours), theirs, "{n}");
    }
    // Sets, lists, deque, vectors: every element in order (gdb prints 200 of the deque's 301,
    // we 100 by default).
    for n in ["s", "ms", "us", "dq", "l", "fl", "vb", "v"] {
        let ours = items(var(n));
        let theirs = g(n).value.items();
        let k = ours.len().min(theirs.len());
        assert!(
            k >= 2,
            "{n}: too few elements compared: {ours:?} / {theirs:?}"
        );
        assert_eq!(ours[..k], theirs[..k], "{n}");
        if !matches!(n, "l" | "fl") {
            assert_eq!(var(n)["len"].as_u64(), Some(gdb_len(g(n))), "{n}");
        } else {
            assert_eq!(var(n)["len"].as_u64(), Some(theirs.len() as u64), "{n}");
        }
    }
    assert_eq!(var("dq")["truncated"], true);
    assert_eq!(items(var("arr")), g("arr").value.field("_M_elems").items());
    // Smart pointers: the counts gdb shows, the object they share.
    for n in ["sp", "sp2", "wp"] {
        let ours = var(n);
        let (u, w) = gdb_counts(g(n));
        assert_eq!(ours["use_count"].as_u64(), Some(u), "{n}: {ours}");
        assert_eq!(ours["weak_count"].as_u64(), Some(w), "{n}: {ours}");
        let target = &ours["target"]["fields"];
        assert_eq!(target["x"]["value"].as_i64(), Some(round), "{n}: {ours}");
        assert_eq!(target["y"]["value"].as_i64(), Some(-round), "{n}: {ours}");
    }
    assert!(g("empty_sp").header.contains("(empty)"));
    assert_eq!(var("empty_sp")["address"], "0x0");
    assert!(var("empty_sp").get("use_count").is_none());
    assert_eq!(atom(&var("up")["target"]), g("*up").value);
    // optional and variant: engaged or not, which alternative, its value.
    let opt = var("opt");
    assert_eq!(opt["variant"], "Some");
    assert_eq!(
        atom(&opt["fields"]["0"]),
        g("opt").value.field("contained value")
    );
    assert!(g("none").header.contains("[no contained value]"));
    assert_eq!(var("none")["variant"], "None");
    for n in ["var", "var_d"] {
        let ours = var(n);
        let index = g(n).header.split("[index ").nth(1).expect("index");
        let index = index.split(']').next().expect("index");
        assert_eq!(ours["variant"], index, "{n}: {ours}");
        assert_eq!(vec![atom(&ours["fields"]["0"])], g(n).value.items(), "{n}");
    }
    assert_eq!(atom(var("sv")), g("sv").value);
    let pr = &var("pr")["fields"];
    assert_eq!(atom(&pr["first"]), g("pr").value.field("first"));
    assert_eq!(atom(&pr["second"]), g("pr").value.field("second"));
    let tup = &var("tup")["fields"];
    let tup: Vec<G> = (0..3).map(|i| atom(&tup[i.to_string()])).collect();
    assert_eq!(tup, g("tup").value.items());
    for (n, unit) in [("ms_d", "ms"), ("secs", "s")] {
        let G::Atom(count) = g(n).value.field("__r") else {
            panic!("{n}")
        };
        assert_eq!(var(n)["value"], format!("{count}{unit}"), "{n}");
    }
}

#[test]
fn o0_locals_read_as_gdb_prints_them() {
    compare_with_gdb(&stdlib_o0());
}

#[test]
fn o2_locals_read_as_gdb_prints_them() {
    compare_with_gdb(&stdlib_o2());
}

const TEMPLATE: &str = r#"{round} {len(m)} {m["b"]} {um["y"]} {ui[7]} {len(s)} {len(um)} {len(dq)} {dq[250]} {len(l)} {len(fl)} {len(vb)} {len(arr)} {arr[3]} {v[2]} {*sp} {sp.x} {sp->y} {*up} {opt} {*opt} {opt.has_value()} {none.has_value()} {len(key)} {ms_d > 250}"#;

fn check_log(h: &Value) {
    let r = int(h, "round");
    let v = &h["values"];
    assert_eq!(int(h, "len(m)"), 3, "{h}");
    assert_eq!(int(h, "m[\"b\"]"), 2 * r, "{h}");
    assert_eq!(int(h, "um[\"y\"]"), r + 1, "{h}");
    assert_eq!(string(h, "ui[7]"), "seven");
    for (e, n) in [
        ("len(s)", 3),
        ("len(um)", 2),
        ("len(dq)", 301),
        ("len(l)", 3),
        ("len(fl)", 4),
        ("len(vb)", 10),
        ("len(arr)", 4),
        ("len(key)", 1),
    ] {
        assert_eq!(int(h, e), n, "{e}: {h}");
    }
    assert_eq!(int(h, "dq[250]"), r + 249, "{h}");
    assert_eq!(int(h, "arr[3]"), r + 3, "{h}");
    assert_eq!(int(h, "v[2]"), r * 100, "{h}");
    assert_eq!(v["*sp"]["fields"]["x"]["value"].as_i64(), Some(r), "{h}");
    assert_eq!(int(h, "sp.x"), r, "{h}");
    assert_eq!(int(h, "sp->y"), -r, "{h}");
    assert_eq!(string(h, "*up"), format!("owned-{r}"));
    assert_eq!(v["opt"]["variant"], "Some", "{h}");
    assert_eq!(int(h, "*opt"), r, "{h}");
    assert_eq!(v["opt.has_value()"]["value"], true, "{h}");
    assert_eq!(v["none.has_value()"]["value"], false, "{h}");
    assert_eq!(v["ms_d > 250"]["value"], true, "{h}");
}

fn expressions_on(exe: &Path) {
    let mut t = Target::start(exe, &[]);
    let line = probe_line("stdlib.cpp", "stdlib-all");
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &format!("stdlib.cpp:{line}"),
        TEMPLATE,
        "--if",
        "len(m) > 2 && *opt % 2 == 0",
        "--json",
        "--max-hits",
        "3",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let hits = stdout_json(&out);
    assert_eq!(hits.len(), 3);
    for h in &hits {
        check_log(h);
        assert_eq!(
            int(h, "round") % 2,
            0,
            "the condition let an odd round through: {h}"
        );
    }
    // Errors say what was wrong.
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &format!("stdlib.cpp:{line}"),
        r#"{m["zz"]} {*none} {dq[301]}"#,
        "--json",
        "--max-hits",
        "1",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let h = &stdout_json(&out)[0]["values"];
    let reason = |e: &str| h[e]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason("m[\"zz\"]").contains("no key \"zz\""), "{h}");
    assert!(reason("*none").contains("empty"), "{h}");
    assert!(
        reason("dq[301]").contains("out of range for len 301"),
        "{h}"
    );
    t.assert_untouched();
}

#[test]
fn o0_expressions_on_std_types() {
    expressions_on(&stdlib_o0());
}

#[test]
fn o2_expressions_on_std_types() {
    expressions_on(&stdlib_o2());
}

/// The kernel engine reads lengths, smart pointers (with their counts), optionals, durations
/// and views as ptrace does; a probe that shows a container's elements goes to ptrace, which
/// says why.
#[test]
fn kernel_reads_lengths_and_leaves_elements_to_ptrace() {
    let mut t = Target::start(&stdlib_o2_alone(), &[]);
    let pid = t.pid.to_string();
    let loc = format!("stdlib.cpp:{}", probe_line("stdlib.cpp", "stdlib-all"));
    let template = "{round} {len(m)} {len(um)} {len(dq)} {len(vb)} {sp} {opt} {ms_d} {sv} {arr}";
    let mut by_engine = Vec::new();
    for engine in ["bpf", "ptrace"] {
        let out = run_periscope(&[
            "log",
            &pid,
            &loc,
            template,
            "--json",
            "--engine",
            engine,
            "--max-hits",
            "3",
            "--for",
            "60s",
        ]);
        assert_success(&out);
        assert!(
            stderr(&out).contains(&format!("engine: {engine}")),
            "{}",
            stderr(&out)
        );
        let hits = stdout_json(&out);
        assert_eq!(hits.len(), 3);
        for h in &hits {
            assert_eq!(h["engine"], engine);
            let r = int(h, "round");
            assert_eq!(int(h, "len(m)"), 3, "{h}");
            assert_eq!(int(h, "len(um)"), 2, "{h}");
            assert_eq!(int(h, "len(dq)"), 301, "{h}");
            assert_eq!(int(h, "len(vb)"), 10, "{h}");
            let sp = &h["values"]["sp"];
            assert_eq!(sp["use_count"], 2, "{h}");
            assert_eq!(sp["weak_count"], 1, "{h}");
            assert_eq!(
                sp["target"]["fields"]["x"]["value"].as_i64(),
                Some(r),
                "{h}"
            );
            assert_eq!(h["values"]["opt"]["fields"]["0"]["value"].as_i64(), Some(r));
            assert_eq!(string(h, "ms_d"), format!("{}ms", 250 + r));
            assert_eq!(string(h, "sv"), "view-of");
            let arr = &h["values"]["arr"]["items"];
            assert_eq!(arr[3]["value"].as_i64(), Some(r + 3), "{h}");
        }
        // The same kinds and types whichever engine read them.
        by_engine.push(
            hits[0]["values"]
                .as_object()
                .expect("values")
                .iter()
                .map(|(k, v)| format!("{k}: {} {}", v["kind"], v["type"]))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(by_engine[0], by_engine[1]);
    let out = run_periscope(&[
        "log",
        &pid,
        &loc,
        "{len(m)} {m}",
        "--json",
        "--max-hits",
        "1",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("engine: ptrace (")
            && err.contains("is a std::map: its elements are read on the ptrace path"),
        "{err}"
    );
    let h = &stdout_json(&out)[0];
    assert_eq!(
        h["values"]["m"]["entries"].as_array().map(|e| e.len()),
        Some(3)
    );
    t.assert_untouched();
}

/// Links that loop (as corrupt memory could have them) end in a truncated value and a clear
/// error, not a hang.
#[test]
fn looping_links_are_cut_not_followed_forever() {
    let mut t = Target::start(&stdlib_o0(), &[]);
    let loc = format!("stdlib.cpp:{}", probe_line("stdlib.cpp", "stdlib-all"));
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &loc,
        "{*bad_list} {len(*bad_list)}",
        "--json",
        "--max-hits",
        "1",
        "--for",
        "60s",
    ]);
    assert_success(&out);
    let h = &stdout_json(&out)[0]["values"];
    let list = &h["*bad_list"];
    assert_eq!(list["truncated"], true, "{list}");
    assert_eq!(list["len"].as_u64(), Some(1 << 40), "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 100);
    assert!(items.iter().all(|i| i["value"] == 7), "{list}");
    assert_eq!(h["len(*bad_list)"]["value"].as_u64(), Some(1 << 40));
    // A forward_list keeps no count: each of these counts its nodes, up to 4096.
    for e in ["*bad_flist", "len(*bad_flist)"] {
        let out = run_periscope(&[
            "log",
            &t.pid.to_string(),
            &loc,
            &format!("{{{e}}}"),
            "--json",
            "--max-hits",
            "1",
            "--for",
            "60s",
        ]);
        assert_success(&out);
        let v = &stdout_json(&out)[0]["values"][e];
        if e == "*bad_flist" {
            assert_eq!(v["truncated"], true, "{v}");
            assert_eq!(v["items"].as_array().map(|i| i.len()), Some(100), "{v}");
        } else {
            let why = v["reason"].as_str().unwrap_or_default();
            assert!(why.contains("more than 4096 nodes (or a cycle)"), "{v}");
        }
    }
    t.assert_untouched();
}
