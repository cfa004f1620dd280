//! Evidence captured at a stop: the call stack with the variables of the top frames, a fatal
//! signal's details, and a Rust panic's message.

use super::Engine;
use crate::frame::Frame;
use crate::probe::EngineEvent;
use crate::process::{self, Memory};
use crate::target::Target;
use crate::unwind::cfa_rule;
use crate::values::Reader;
use nix::sys::signal::Signal;
use periscope_core::event::{now_rfc3339, Body, Failure, SnapshotEvent, StackFrame};
use periscope_core::value::Fields;

impl Engine {
    /// Captures the stack of a thread about to receive a fatal signal. Only faults raised by the
    /// CPU (si_code > 0) and SIGABRT are captured, once per thread: a handler that re-raises
    /// the signal (Rust's stack-overflow handler does) is not a second failure.
    pub(crate) fn capture_signal(&mut self, tid: i32, signal: i32) {
        let Some(watch) = self.watch_signals.clone() else {
            return;
        };
        let Ok(info) = nix::sys::ptrace::getsiginfo(process::pid(tid)) else {
            return;
        };
        if (signal != libc::SIGABRT && info.si_code <= 0) || !self.captured_failure.insert(tid) {
            return;
        }
        let Ok(regs) = process::getregs(tid) else {
            return;
        };
        let address = (signal != libc::SIGABRT).then(|| {
            // SAFETY: for SIGSEGV/SIGBUS/SIGFPE/SIGILL the kernel fills the si_addr union member.
            format!("{:#x}", unsafe { info.si_addr() } as usize)
        });
        let name = Signal::try_from(signal)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| signal.to_string());
        let cfa = self
            .target
            .object_at(regs.rip)
            .and_then(|(_, o)| cfa_rule(&o.index, regs.rip.wrapping_sub(o.bias)))
            .and_then(|r| r.eval(&regs));
        let main = &self.target.main_object().index;
        let reader =
            Reader::new(main, &self.mem, watch.limits, &watch.redactor).with_target(&self.target);
        let frames = capture_stack(
            &self.target,
            &self.mem,
            &regs,
            tid,
            cfa,
            &reader,
            StackWanted {
                with_vars: watch.frames,
                skip_runtime: !watch.library_frames,
            },
        );
        let location = frames
            .first()
            .map(|f| frame_location(f).unwrap_or_else(|| f.function.clone()))
            .unwrap_or_default();
        let event = SnapshotEvent {
            ts: now_rfc3339(),
            pid: self.pid,
            ns_pid: None,
            tid: tid as u32,
            ns_tid: None,
            goroutine: None,
            location,
            probe: watch.probe.clone(),
            frames,
            watches: Fields::default(),
            failure: Some(Failure {
                kind: "signal".into(),
                message: None,
                signal: Some(name),
                address,
            }),
        };
        self.emit(EngineEvent::Event(Body::Snapshot(event)));
    }
}

/// `file.rs:LINE` (the file's name alone) of a captured frame that has a source position.
pub(crate) fn frame_location(f: &StackFrame) -> Option<String> {
    let file = f.file.as_deref()?;
    Some(format!("{}:{}", file.rsplit('/').next()?, f.line?))
}

/// Which frames of a captured stack get their variables read.
#[derive(Clone, Copy)]
pub(crate) struct StackWanted {
    /// How many frames, from the top.
    pub(crate) with_vars: usize,
    /// Frames outside the program's own code (std's panic machinery, libc's signal and
    /// abort paths) are passed over: no variables, and they do not count.
    pub(crate) skip_runtime: bool,
}

/// Most frames a captured stack lists (with variables only for the top ones asked for).
const MAX_STACK: usize = 64;

/// The call stack at a stopped thread: every frame's function and line, and the arguments and
/// locals of the top `with_vars` frames, read at each frame's own pc with the registers the
/// unwinder recovered (a caller-saved register of a caller frame reads as optimized out).
pub(crate) fn capture_stack(
    target: &Target,
    mem: &Memory,
    regs: &process::Regs,
    tid: i32,
    cfa0: Option<u64>,
    reader: &Reader,
    want: StackWanted,
) -> Vec<StackFrame> {
    let StackWanted {
        with_vars,
        skip_runtime,
    } = want;
    let frames = crate::unwind::unwind(target, mem, regs, MAX_STACK);
    let mut out = Vec::new();
    // Frames whose variables are captured; with `skip_runtime`, Rust's own std frames (a
    // panic's machinery) do not count against `with_vars`.
    let mut vars_left = with_vars;
    for (i, f) in frames.iter().enumerate() {
        let caller = i > 0;
        let lookup = f.pc().wrapping_sub(u64::from(caller));
        let Some((_, obj)) = target.object_at(lookup) else {
            out.push(StackFrame {
                function: format!("{:#x}", f.pc()),
                file: None,
                line: None,
                variables: Fields::default(),
            });
            continue;
        };
        let idx = &obj.index;
        let file_pc = lookup.wrapping_sub(obj.bias);
        let row = idx.row_at(file_pc);
        let function = idx
            .function_at(file_pc)
            .map(|f| f.name.clone())
            .or_else(|| {
                // A clone's separate part (`check.cold`) has no DWARF function of its own.
                idx.symbol_at(file_pc)
                    .map(|(s, _)| crate::index::clone_source_name(&s.name).to_string())
            })
            .unwrap_or_else(|| format!("{:#x} in {}", f.pc(), idx.path.display()));
        let file = row
            .and_then(|r| idx.files.get(r.file as usize))
            .map(|p| p.display().to_string());
        let unit = row.map(|r| r.unit).or_else(|| idx.unit_at(file_pc));
        let scopes = unit.and_then(|u| idx.scopes(u).ok());
        // One physical frame is one or more source frames: each inlined call is a frame of its
        // own, as a reader of the source expects (gdb shows them the same way).
        let mut chain = scopes
            .as_ref()
            .map(|s| s.inline_chain(file_pc))
            .unwrap_or_default();
        if chain.is_empty() {
            chain.push(crate::index::scope::InlineLevel {
                name: None,
                vars: Vec::new(),
                call_site: None,
            });
        }
        let visible = scopes.as_ref().and_then(|s| s.visible_at(file_pc));
        let frame_base = visible.as_ref().and_then(|v| v.frame_base.clone());
        for (k, level) in chain.iter().enumerate() {
            let (file, line) = match (&level.call_site, k) {
                (Some((path, line)), _) => (Some(path.display().to_string()), Some(*line)),
                (None, 0) => (file.clone(), row.map(|r| r.line).filter(|l| *l > 0)),
                (None, _) => (None, None),
            };
            let mut variables = Vec::new();
            let level_function = level.name.as_deref().unwrap_or(&function);
            let runtime = skip_runtime && !own_code(target, obj, file.as_deref(), level_function);
            if vars_left > 0 && !runtime {
                vars_left -= 1;
                if let Some(unit) = unit {
                    let frame = Frame {
                        index: idx,
                        bias: obj.bias,
                        unit,
                        mem,
                        regs: f.regs,
                        tid,
                        cfa: if i == 0 { cfa0.or(f.cfa) } else { f.cfa },
                        frame_base: frame_base.clone(),
                        unknown_regs: f.unknown,
                        caller,
                        target: Some(target),
                        // The innermost level is the scope `visible_at` stopped at.
                        env_param: visible
                            .as_ref()
                            .filter(|_| k == 0)
                            .and_then(|v| v.env_param.as_ref()),
                    };
                    variables = frame_variables(&frame, &level.vars, reader);
                }
            }
            out.push(StackFrame {
                function: level.name.clone().unwrap_or_else(|| function.clone()),
                file,
                line,
                variables: Fields(variables),
            });
        }
    }
    out
}

/// A frame's variables rendered: arguments first, then locals, each in declaration order
/// (scopes list theirs innermost-first and last-declared first, for shadowing).
fn frame_variables(
    frame: &Frame,
    vars: &[crate::index::scope::Var],
    reader: &Reader,
) -> Vec<(String, periscope_core::Value)> {
    let idx = frame.index;
    let r = reader.sharing(idx);
    let mut vars: Vec<(usize, &crate::index::scope::Var)> = vars.iter().enumerate().collect();
    vars.sort_by_key(|(i, v)| (!v.is_param, v.decl_line.unwrap_or(0), std::cmp::Reverse(*i)));
    vars.into_iter()
        .map(|(_, v)| {
            let ty = v.ty.map(|t| idx.type_at(t.unit, t.offset));
            let value = if reader.redactor.is_sensitive(&v.name) {
                periscope_core::Value::Redacted {
                    ty: ty.map(|t| t.name.clone()),
                }
            } else {
                match ty {
                    Some(t) => r.render(&frame.var_place(v), &t, r.limits.depth),
                    None => periscope_core::Value::unavailable(None, "no type information"),
                }
            };
            (v.name.clone(), value)
        })
        .collect()
}

/// The message of a panic at `rust_panic(payload: &mut dyn PanicPayload)`'s entry. Rust's std
/// ships without type information, so the payload's concrete type is told by its vtable (whose
/// methods are named in the symbol table):
/// - `StaticStrPayload(&'static str)` (`panic!("literal")`): one `&str`, read exactly.
/// - `FormatStringPayload { inner: &fmt::Arguments, string: Option<String> }`: by the time
///   `rust_panic` runs, the panic hook has made `string` hold the formatted message. The two
///   fields' order and `String`'s three words (capacity, pointer, length) are not described, so
///   every arrangement is decoded and accepted only when exactly one is structurally valid: one
///   readable pointer, a length no larger than the capacity, and valid UTF-8 behind it. No
///   valid arrangement (or two) means no message rather than a guess.
pub(crate) fn panic_message(target: &Target, mem: &Memory, regs: &process::Regs) -> Option<String> {
    let (data, vtable) = (regs.rdi, regs.rsi);
    // Slots 3.. hold the trait methods (after drop, size, align).
    let payload_kind = (3..8).find_map(|slot| {
        let name = target.describe(mem.read_u64(vtable + slot * 8).ok()?);
        if name.contains("StaticStrPayload") {
            Some(true)
        } else if name.contains("FormatStringPayload") {
            Some(false)
        } else {
            None
        }
    })?;
    let read_text = |ptr: u64, len: u64| -> Option<String> {
        if len > 64 * 1024 {
            return None;
        }
        let mut b = vec![0u8; len as usize];
        mem.read(ptr, &mut b).ok()?;
        String::from_utf8(b).ok()
    };
    if payload_kind {
        let ptr = mem.read_u64(data).ok()?;
        let len = mem.read_u64(data + 8).ok()?;
        return read_text(ptr, len);
    }
    let words: Vec<u64> = (0..4)
        .map(|i| mem.read_u64(data + i * 8))
        .collect::<Result<_, _>>()
        .ok()?;
    let readable = |p: u64| p >= 4096 && mem.read_u64(p).is_ok();
    // The `string` field is words 0..3 (then `inner` is word 3) or words 1..4 (`inner` word 0).
    let candidates = [(&words[0..3], words[3]), (&words[1..4], words[0])];
    let mut found = Vec::new();
    for (string, inner) in candidates {
        if !readable(inner) {
            continue;
        }
        let pointers: Vec<usize> = (0..3).filter(|i| readable(string[*i])).collect();
        let [p] = pointers[..] else { continue };
        let others: Vec<u64> = (0..3).filter(|i| *i != p).map(|i| string[i]).collect();
        let (len, cap) = (others[0].min(others[1]), others[0].max(others[1]));
        if cap > 1 << 32 {
            continue;
        }
        if let Some(text) = read_text(string[p], len) {
            found.push(text);
        }
    }
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Whether a frame is the program's own code: in its executable, from a source file that is
/// not the toolchain's (Rust's std, system headers).
fn own_code(
    target: &Target,
    obj: &crate::target::LoadedObject,
    file: Option<&str>,
    function: &str,
) -> bool {
    std::ptr::eq(obj, target.main_object())
        && file.is_some_and(|p| {
            !(p.starts_with("/rustc/") || p.starts_with("/rust/deps/") || p.starts_with("/usr/"))
        })
        && !go_std(obj, function)
}

/// A function of Go's standard library or runtime (`runtime.gopanic`, `fmt.Sprintf`,
/// `internal/sync.(*Mutex).Lock`), in a Go program: its package path starts with one of the
/// standard library's top-level names (a module path may have no dot, so the list is the test).
fn go_std(obj: &crate::target::LoadedObject, function: &str) -> bool {
    const STD: [&str; 52] = [
        "archive",
        "bufio",
        "builtin",
        "bytes",
        "cmp",
        "compress",
        "container",
        "context",
        "crypto",
        "database",
        "debug",
        "embed",
        "encoding",
        "errors",
        "expvar",
        "flag",
        "fmt",
        "go",
        "hash",
        "html",
        "image",
        "index",
        "internal",
        "io",
        "iter",
        "log",
        "maps",
        "math",
        "mime",
        "net",
        "os",
        "path",
        "plugin",
        "reflect",
        "regexp",
        "runtime",
        "slices",
        "sort",
        "strconv",
        "strings",
        "structs",
        "sync",
        "syscall",
        "testing",
        "text",
        "time",
        "unicode",
        "unique",
        "unsafe",
        "vendor",
        "weak",
        "type",
    ];
    if function.contains("::") || obj.index.language() != Some(crate::index::Lang::Go) {
        return false;
    }
    let package = function.split(".(").next().unwrap_or(function);
    let first = match package.find('/') {
        Some(slash) => &package[..slash],
        None => package.split('.').next().unwrap_or(package),
    };
    STD.contains(&first) || function.starts_with("go:")
}

/// The message of a Go panic or fatal error caught at its runtime function's entry, as Go
/// prints it: the panic value (`e`: a string, an error's text, a runtime error such as
/// `runtime error: index out of range [7] with length 3`) or the fatal error's text (`s`).
pub(crate) fn go_panic_message(
    ev: &crate::eval::Evaluator,
    failure: &crate::resolve::GoFailure,
) -> Option<String> {
    use periscope_core::value::Value;
    let v = ev.value(&periscope_core::expr::parse(failure.value).ok()?);
    let ty = v.type_name().unwrap_or_default().to_string();
    match &v {
        Value::String { value, .. } if ty == "runtime.errorString" => {
            Some(format!("runtime error: {value}"))
        }
        Value::String { value, .. } => Some(value.clone()),
        Value::Struct { fields, .. } if ty == "runtime.boundsError" => bounds_error(fields),
        Value::Unavailable { .. } => None,
        other => Some(other.to_message_text()),
    }
}

/// `runtime.boundsError`'s text, as its `Error` method writes it.
fn bounds_error(fields: &periscope_core::value::Fields) -> Option<String> {
    use periscope_core::value::Value;
    let int = |n: &str| match fields.get(n) {
        Some(Value::Int { value, .. }) => value.as_i128(),
        _ => None,
    };
    let (x, y, code) = (int("x")?, int("y")?, int("code")?);
    let text = match code {
        0 => format!("index out of range [{x}] with length {y}"),
        1 => format!("slice bounds out of range [:{x}] with length {y}"),
        2 => format!("slice bounds out of range [:{x}] with capacity {y}"),
        3 => format!("slice bounds out of range [{x}:{y}]"),
        4 => format!("slice bounds out of range [::{x}] with length {y}"),
        5 => format!("slice bounds out of range [::{x}] with capacity {y}"),
        6 => format!("slice bounds out of range [:{x}:{y}]"),
        7 => format!("slice bounds out of range [{x}:{y}:]"),
        8 => format!(
            "cannot convert slice with length {x} to array or pointer to array with length {y}"
        ),
        _ => return None,
    };
    Some(format!("runtime error: {text}"))
}
