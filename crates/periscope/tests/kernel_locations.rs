//! The in-kernel engine reads what optimizing compilers describe with the DWARF expression
//! language: a corpus (examples/targets/dwarfops.c at gcc -O1, -O2, -O3 and dwarfops.rs at
//! rustc -O) whose probed locals exist only as DWARF computations (`dup; mul`, `over; over;
//! div; mul; minus`, shifts, masks, pieces, values through inlined calls, entry values after a
//! call). The sweep lists the location operations the debug info actually has at each probed
//! line, probes every line with `--engine bpf` and `--engine ptrace`, and checks that both read
//! each value as the program computes it, and read the same values as unavailable.

mod common;

use common::*;
use gimli::Reader as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A hit's values by name, as numbers (`None`: not read).
type Values<'a> = &'a dyn Fn(&str) -> Option<i64>;
/// `(value, (read, expected from the others))`: checked when all it names were read.
type Checks = Vec<(&'static str, Option<(i64, i64)>)>;

/// One probed line: its marker, the template, and the relations its values obey.
struct Line {
    tag: &'static str,
    template: &'static str,
    check: fn(Values) -> Checks,
}

fn wrap32(v: i64) -> i64 {
    v as i32 as i64
}

fn squares(v: Values) -> Checks {
    let x = v("x");
    vec![
        ("sq", x.zip(v("sq")).map(|(x, s)| (s, wrap32(x * x)))),
        ("twice", x.zip(v("twice")).map(|(x, t)| (t, wrap32(x + x)))),
    ]
}

fn mixes(v: Values) -> Checks {
    let (a, b) = (v("a"), v("b"));
    let ab = a.zip(b);
    let with = |name: &'static str, f: fn(i64, i64) -> i64| {
        (name, ab.zip(v(name)).map(|((a, b), got)| (got, f(a, b))))
    };
    vec![
        ("b", ab.map(|(a, b)| (b, 5 * a + 3))),
        with("sum", |a, b| a + b),
        with("diff", |a, b| a - b),
        with("shifted", |a, _| a << 3),
        with("masked", |_, b| (b & 0xff) ^ 0x5a),
        with("high", |_, b| b >> 4),
        with("neg", |a, _| -a),
        with("inv", |_, b| !b),
    ]
}

fn pieces(v: Values) -> Checks {
    let x = v("x");
    let (lo, hi) = (v("p.lo"), v("p.hi"));
    vec![
        ("p.lo", x.zip(lo).map(|(x, lo)| (lo, x))),
        ("p.hi", x.zip(hi).map(|(x, hi)| (hi, 2 * x + 1))),
        (
            "total",
            lo.zip(hi).zip(v("total")).map(|((lo, hi), t)| (t, lo + hi)),
        ),
    ]
}

fn inlined(v: Values) -> Checks {
    vec![(
        "scaled",
        v("v").zip(v("scaled")).map(|(x, s)| (s, wrap32(3 * x + 7))),
    )]
}

fn ratio(v: Values) -> Checks {
    let x = v("x");
    vec![
        ("q", x.zip(v("q")).map(|(x, q)| (q, x / 7))),
        ("r", x.zip(v("r")).map(|(x, r)| (r, x % 7))),
    ]
}

const SQUARES: &str = "x={x} sq={sq} twice={twice}";
const MIXES: &str = "a={a} b={b} sum={sum} diff={diff} shifted={shifted} masked={masked} high={high} neg={neg} inv={inv}";
const PIECES: &str = "x={x} p={p} lo={p.lo} hi={p.hi} total={total}";
const RS_PIECES: &str = "x={x} p={p} lo={p.lo} hi={p.hi}";
const INLINED: &str = "v={v} scaled={scaled}";
const RATIO: &str = "x={x} q={q} r={r}";

const C_LINES: &[Line] = &[
    Line {
        tag: "dwarfops-squares",
        template: SQUARES,
        check: squares,
    },
    Line {
        tag: "dwarfops-squares-after",
        template: SQUARES,
        check: squares,
    },
    Line {
        tag: "dwarfops-mixes",
        template: MIXES,
        check: mixes,
    },
    Line {
        tag: "dwarfops-mixes-after",
        template: MIXES,
        check: mixes,
    },
    Line {
        tag: "dwarfops-pieces",
        template: PIECES,
        check: pieces,
    },
    Line {
        tag: "dwarfops-pieces-after",
        template: PIECES,
        check: pieces,
    },
    Line {
        tag: "dwarfops-inlined",
        template: INLINED,
        check: inlined,
    },
    Line {
        tag: "dwarfops-ratio",
        template: RATIO,
        check: ratio,
    },
    Line {
        tag: "dwarfops-ratio-after",
        template: RATIO,
        check: ratio,
    },
];

const RS_LINES: &[Line] = &[
    Line {
        tag: "rs-squares",
        template: SQUARES,
        check: squares,
    },
    Line {
        tag: "rs-squares-after",
        template: SQUARES,
        check: squares,
    },
    Line {
        tag: "rs-mixes",
        template: MIXES,
        check: mixes,
    },
    Line {
        tag: "rs-mixes-after",
        template: MIXES,
        check: mixes,
    },
    Line {
        tag: "rs-pieces",
        template: RS_PIECES,
        check: pieces,
    },
    Line {
        tag: "rs-pieces-after",
        template: RS_PIECES,
        check: pieces,
    },
    Line {
        tag: "rs-inlined",
        template: INLINED,
        check: inlined,
    },
];

/// The value of `name` in a hit as a number, `None` when the debug info says it is gone here.
fn number(h: &Value, name: &str) -> Option<i64> {
    let v = &h["values"][name];
    match v["kind"].as_str() {
        Some("int") => v["value"].as_i64(),
        _ => None,
    }
}

/// The state of every value of a hit: its kind and type, and the reason when unavailable.
fn shapes(h: &Value) -> BTreeMap<String, String> {
    h["values"]
        .as_object()
        .expect("values")
        .iter()
        .map(|(k, v)| {
            let mut s = format!("{} {}", v["kind"], v["type"]);
            if v["kind"] != "int" && v["kind"] != "struct" {
                s.push_str(&format!(" {}", v));
            }
            (k.clone(), s)
        })
        .collect()
}

fn probe(
    pid: u32,
    loc: &str,
    template: &str,
    engine: &str,
    extra: &[&str],
) -> (Vec<Value>, String) {
    let pid = pid.to_string();
    let mut args = vec![
        "log",
        &pid,
        loc,
        template,
        "--json",
        "--engine",
        engine,
        "--max-hits",
        "6",
        "--for",
        "60s",
    ];
    args.extend_from_slice(extra);
    let out = run_periscope(&args);
    assert_success(&out);
    (stdout_json(&out), stderr(&out))
}

/// Checks one line of one build on both engines; the relations verified.
fn sweep_line(pid: u32, build: &str, file: &str, line: &Line) -> usize {
    let loc = format!("{file}:{}", probe_line(file, line.tag));
    let mut verified = 0;
    let mut seen: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for engine in ["bpf", "ptrace"] {
        let (hits, err) = probe(pid, &loc, line.template, engine, &[]);
        assert!(
            err.contains(&format!("engine: {engine}")),
            "{build} {loc} on {engine}: {err}"
        );
        assert_eq!(hits.len(), 6, "{build} {loc} on {engine}: {err}");
        for h in &hits {
            assert_eq!(h["engine"], engine, "{h}");
            let get = |n: &str| number(h, n);
            for (name, pair) in (line.check)(&get) {
                if let Some((got, want)) = pair {
                    assert_eq!(got, want, "{build} {loc} {engine}: {name} in {h}");
                    verified += 1;
                }
            }
            // Every hit of an engine reads the same values as available or gone.
            let s = shapes(h);
            let first = seen.entry(engine).or_insert_with(|| s.clone());
            assert_eq!(
                *first, s,
                "{build} {loc} {engine}: hits differ in shape: {h}"
            );
        }
    }
    assert_eq!(
        seen.get("bpf"),
        seen.get("ptrace"),
        "{build} {loc}: the kernel and ptrace read different values"
    );
    verified
}

/// The DWARF location operations of the variables at the addresses of `file:line`, by name
/// (`dup`, `over`, `pick`, `piece`, `entry_value`, …), read with gimli from the binary.
fn ops_at_line(exe: &Path, file: &str, line: u32) -> BTreeSet<String> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(exe).expect("read binary");
    let obj = object::File::parse(&*data).expect("parse ELF");
    let sections =
        gimli::DwarfSections::load(|id| -> Result<std::borrow::Cow<[u8]>, gimli::Error> {
            Ok(obj
                .section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
                .unwrap_or(std::borrow::Cow::Borrowed(&[])))
        })
        .expect("load DWARF");
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::RunTimeEndian::Little));
    let mut out = BTreeSet::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let unit = dwarf.unit(header).expect("unit");
        let mut addrs = Vec::new();
        if let Some(program) = unit.line_program.clone() {
            let mut rows = program.rows();
            while let Ok(Some((header, row))) = rows.next_row() {
                let name = row
                    .file(header)
                    .and_then(|f| dwarf.attr_string(&unit, f.path_name()).ok())
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.ends_with(file) && row.line().map(|l| l.get()) == Some(u64::from(line)) {
                    addrs.push(row.address());
                }
            }
        }
        if addrs.is_empty() {
            continue;
        }
        // Scopes (functions, inlined calls, blocks) covering one of the line's addresses.
        let mut covering: Vec<(isize, bool)> = Vec::new();
        let mut entries = unit.entries();
        while let Ok(Some(_)) = entries.next_dfs() {
            let depth = entries.depth();
            let Some(entry) = entries.current() else {
                break;
            };
            while covering.last().is_some_and(|(d, _)| *d >= depth) {
                covering.pop();
            }
            match entry.tag() {
                gimli::DW_TAG_subprogram
                | gimli::DW_TAG_inlined_subroutine
                | gimli::DW_TAG_lexical_block => {
                    let mut covers = false;
                    if let Ok(mut ranges) = dwarf.die_ranges(&unit, entry) {
                        while let Ok(Some(r)) = ranges.next() {
                            covers |= addrs.iter().any(|a| *a >= r.begin && *a < r.end);
                        }
                    }
                    covering.push((depth, covers));
                }
                gimli::DW_TAG_variable | gimli::DW_TAG_formal_parameter => {
                    if !covering.last().is_some_and(|(_, c)| *c) {
                        continue;
                    }
                    let mut exprs = Vec::new();
                    match entry.attr_value(gimli::DW_AT_location) {
                        Some(gimli::AttributeValue::Exprloc(e)) => exprs.push(e),
                        Some(attr) => {
                            if let Ok(Some(mut locs)) = dwarf.attr_locations(&unit, attr) {
                                while let Ok(Some(l)) = locs.next() {
                                    if addrs
                                        .iter()
                                        .any(|a| *a >= l.range.begin && *a < l.range.end)
                                    {
                                        exprs.push(l.data);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    for e in exprs {
                        let mut r = e.0;
                        while !r.is_empty() {
                            match gimli::Operation::parse(&mut r, unit.encoding()) {
                                Ok(op) => {
                                    out.insert(op_name(&op));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn op_name<R: gimli::Reader>(op: &gimli::Operation<R>) -> String {
    use gimli::Operation as O;
    match op {
        O::Pick { index: 0 } => "dup".into(),
        O::Pick { index: 1 } => "over".into(),
        O::Pick { .. } => "pick".into(),
        O::RegisterOffset { .. } => "breg".into(),
        O::Register { .. } => "reg".into(),
        O::PlusConstant { .. } => "plus_uconst".into(),
        O::UnsignedConstant { .. } | O::SignedConstant { .. } => "const".into(),
        O::EntryValue { .. } => "entry_value".into(),
        O::ImplicitPointer { .. } => "implicit_pointer".into(),
        O::ImplicitValue { .. } => "implicit_value".into(),
        O::StackValue => "stack_value".into(),
        O::FrameOffset { .. } => "fbreg".into(),
        O::CallFrameCFA => "call_frame_cfa".into(),
        other => {
            let d = format!("{other:?}");
            let name = d.split([' ', '{', '(']).next().unwrap_or("").to_string();
            name.to_lowercase()
        }
    }
}

/// Probes every line of one build on both engines; what the debug info at those lines uses.
fn sweep(exe: &Path, build: &str, file: &str, lines: &[Line]) -> (BTreeSet<String>, usize) {
    let t = Target::start(exe, &["300"]);
    let mut ops = BTreeSet::new();
    let mut verified = 0;
    for line in lines {
        let at = ops_at_line(exe, file, probe_line(file, line.tag));
        eprintln!("{build} {}: {at:?}", line.tag);
        ops.extend(at);
        verified += sweep_line(t.pid, build, file, line);
    }
    (ops, verified)
}

#[test]
fn every_location_form_of_optimized_c_and_rust_reads_the_same_in_the_kernel_and_on_ptrace() {
    let mut all = BTreeSet::new();
    for (build, exe) in [
        ("gcc -O1", dwarfops_o1()),
        ("gcc -O2", dwarfops_o2()),
        ("gcc -O3", dwarfops_o3()),
    ] {
        let (ops, verified) = sweep(&exe, build, "dwarfops.c", C_LINES);
        assert!(verified > 0, "{build}: no relation could be checked");
        all.extend(ops);
    }
    let (ops, verified) = sweep(&dwarfops_rs(), "rustc -O", "dwarfops.rs", RS_LINES);
    assert!(verified > 0, "rustc -O: no relation could be checked");
    all.extend(ops);
    eprintln!("location operations swept: {all:?}");
    // The corpus is made so that compilers describe its locals with these; a compiler that
    // stops doing so needs new shapes here, not a weaker test.
    for needed in [
        "dup",
        "over",
        "piece",
        "entry_value",
        "mul",
        "div",
        "minus",
        "plus",
        "shl",
        "shra",
        "and",
        "xor",
        "not",
        "neg",
        "plus_uconst",
        "stack_value",
        "breg",
        "reg",
    ] {
        assert!(
            all.contains(needed),
            "no `{needed}` in the corpus's locations: {all:?}"
        );
    }
}

/// A condition on locals that exist only as DWARF computations runs in the kernel: at gcc
/// -O2's `squares` line, the kernel computes `twice` (`x` shifted left) and `sq` (`dup; mul`)
/// from the registers and filters on them.
#[test]
fn a_condition_on_a_computed_local_is_evaluated_in_the_kernel() {
    let exe = dwarfops_o2();
    let t = Target::start(&exe, &["300"]);
    let loc = format!(
        "dwarfops.c:{}",
        probe_line("dwarfops.c", "dwarfops-squares")
    );
    let cond = "twice % 4 == 0 && sq >= 0";
    let (hits, err) = probe(t.pid, &loc, SQUARES, "bpf", &["--if", cond]);
    assert!(err.contains("engine: bpf"), "{err}");
    assert_eq!(hits.len(), 6, "{err}");
    for h in &hits {
        let x = number(h, "x").expect("x");
        assert_eq!(x % 2, 0, "the kernel let an odd x through: {h}");
        assert_eq!(number(h, "sq"), Some(wrap32(x * x)), "{h}");
    }
    // Entry values need the caller's frame, which the kernel does not unwind: at gcc -O1 the
    // line has an address where `twice` is one, so `auto` runs the condition on ptrace, saying
    // why, and never takes it to the kernel to refuse it.
    drop(t);
    let t = Target::start(&dwarfops_o1(), &["300"]);
    let after = format!(
        "dwarfops.c:{}",
        probe_line("dwarfops.c", "dwarfops-squares")
    );
    let (hits, err) = probe(t.pid, &after, SQUARES, "auto", &["--if", "twice % 4 == 0"]);
    assert_eq!(hits.len(), 6, "{err}");
    for h in &hits {
        assert_eq!(number(h, "x").map(|x| x % 2), Some(0), "{h}");
    }
    assert!(
        err.contains("engine: ptrace (") && err.contains("entry_value"),
        "auto says why the condition runs on ptrace: {err}"
    );
}

/// `DW_OP_implicit_pointer` (gcc -O2 inlines `total(&q)`, and `p` exists only as "points to
/// `q`", which lives in registers): the kernel reads through it as ptrace does.
#[test]
fn an_implicit_pointer_reads_through_in_the_kernel_as_on_ptrace() {
    let t = Target::start(&tasks_o2(), &["200"]);
    let loc = format!("tasks.c:{}", probe_line("tasks.c", "implicit"));
    let mut seen = Vec::new();
    for engine in ["bpf", "ptrace"] {
        let (hits, err) = probe(t.pid, &loc, "{p->a} {p->b} {p}", engine, &[]);
        assert!(err.contains(&format!("engine: {engine}")), "{err}");
        assert_eq!(hits.len(), 6, "{err}");
        for h in &hits {
            let (a, b) = (number(h, "p->a"), number(h, "p->b"));
            assert_eq!(b, a.map(|a| 2 * a), "read through the pointer: {h}");
            let p = &h["values"]["p"];
            assert_eq!(p["target"]["fields"]["a"]["value"].as_i64(), a, "{h}");
        }
        let p = &hits[0]["values"]["p"];
        seen.push(format!(
            "{} {} {} {}",
            p["kind"], p["type"], p["address"], p["target"]["type"]
        ));
    }
    assert_eq!(
        seen[0], seen[1],
        "the kernel and ptrace read `p` differently"
    );
}
