//! `periscope watch`: evidence at the point of failure, and the process then fails exactly as
//! it would have without Periscope.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;

/// Starts `periscope watch` and returns once it is watching, with a reader of its stderr.
fn watch_json(pid: &str, extra: &[&str]) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut args = vec!["watch", pid, "--json", "--for", "120s"];
    args.extend_from_slice(extra);
    let mut child = periscope()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    loop {
        banner.clear();
        std::io::BufRead::read_line(&mut err, &mut banner).unwrap();
        assert!(!banner.is_empty(), "periscope watch ended early");
        if banner.starts_with("periscope: watching pid") {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    (child, rest)
}

fn send(t: &mut Target, line: &str) {
    use std::io::Write;
    writeln!(t.stdin.as_mut().unwrap(), "{line}").unwrap();
}

#[test]
fn a_segfault_is_captured_and_the_process_still_dies_of_it() {
    let mut t = Target::start(&crasher(), &[]);
    let pid = t.pid.to_string();
    let (w, werr) = watch_json(&pid, &["--signals"]);
    send(&mut t, "go");
    let (status, _) = t.wait_output();
    assert_eq!(
        status.signal(),
        Some(11),
        "target ended with {status}, not SIGSEGV"
    );
    let out = w.wait_with_output().unwrap();
    assert!(out.status.success());
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let s = &snaps[0];
    assert_eq!(s["failure"]["kind"], "signal");
    assert_eq!(s["failure"]["signal"], "SIGSEGV");
    // j->next is NULL: the fault reads next->id at offset 0.
    assert_eq!(s["failure"]["address"], "0x0");
    let top = &s["frames"][0];
    assert_eq!(top["function"], "deref_job");
    assert_eq!(
        top["line"].as_u64(),
        Some(probe_line("crasher.c", "crash") as u64)
    );
    assert_eq!(top["variables"]["depth"]["value"], 7);
    assert_eq!(top["variables"]["sum"]["value"], 49);
    let j = &top["variables"]["j"]["target"]["fields"];
    assert_eq!(j["id"]["value"], 42);
    assert_eq!(j["name"]["value"], "answer");
    assert_eq!(j["next"]["address"], "0x0");
    assert_eq!(s["frames"][1]["function"], "main");
    let err = werr.join().unwrap();
    assert!(err.contains("killed by signal 11"), "{err}");
}

#[test]
fn abort_is_captured() {
    let mut t = Target::start(&crasher(), &[]);
    let pid = t.pid.to_string();
    let (w, werr) = watch_json(&pid, &[]);
    send(&mut t, "abort");
    let (status, _) = t.wait_output();
    assert_eq!(status.signal(), Some(6));
    let out = w.wait_with_output().unwrap();
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 1, "{}", werr.join().unwrap());
    assert_eq!(snaps[0]["failure"]["signal"], "SIGABRT");
    let frames = snaps[0]["frames"].as_array().unwrap();
    // abort() runs in libc: its frames (raise, abort, pthread_kill…) show where, never their
    // locals (a jmp_buf rendered as garbage helped nobody); the program's `main` shows its own.
    let main = frames
        .iter()
        .find(|f| f["function"] == "main")
        .unwrap_or_else(|| panic!("no main frame: {frames:?}"));
    assert!(main["variables"].get("line").is_some(), "{main}");
    let top = &frames[0];
    assert_ne!(top["function"], "main");
    for f in frames.iter().take_while(|f| f["function"] != "main") {
        assert!(
            f.get("variables").is_none(),
            "a libc frame with variables: {f}"
        );
    }
}

#[test]
fn library_frames_variables_come_when_asked() {
    let mut t = Target::start(&crasher(), &[]);
    let pid = t.pid.to_string();
    let (w, werr) = watch_json(&pid, &["--library-frames", "--frames", "3"]);
    send(&mut t, "abort");
    let (status, _) = t.wait_output();
    assert_eq!(status.signal(), Some(6));
    let out = w.wait_with_output().unwrap();
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 1, "{}", werr.join().unwrap());
    let frames = snaps[0]["frames"].as_array().unwrap();
    // The top frames are libc's; with --library-frames they are read like the program's
    // own. (Only where libc has debug info, which its source file shows.)
    let top = &frames[0];
    assert_ne!(top["function"], "main");
    if top.get("file").is_some() {
        assert!(top.get("variables").is_some(), "{top}");
    }
}

#[test]
fn a_rust_panic_is_captured_before_unwinding_with_the_panicking_frames_locals() {
    let mut t = Target::start(&panicker(), &[]);
    let pid = t.pid.to_string();
    let (w, werr) = watch_json(&pid, &["--frames", "2"]);
    send(&mut t, "50");
    let (status, _) = t.wait_output();
    assert_eq!(
        status.code(),
        Some(101),
        "a panicking Rust program exits with 101"
    );
    let out = w.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", werr.join().unwrap());
    let snaps = stdout_json(&out);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let s = &snaps[0];
    assert_eq!(s["failure"]["kind"], "panic");
    assert_eq!(s["failure"]["message"], "index 50 beyond limit 6");
    assert_eq!(
        s["location"],
        format!(
            "panicker.rs:{}",
            probe_line("panicker.rs", "formatted-panic")
        )
    );
    let frames = s["frames"].as_array().unwrap();
    let check = frames
        .iter()
        .find(|f| f["function"] == "panicker::check")
        .expect("panicking frame");
    assert_eq!(check["variables"]["i"]["value"], 50);
    assert_eq!(check["variables"]["limit"]["value"], 6);
    let main = frames
        .iter()
        .find(|f| f["function"] == "panicker::main")
        .expect("caller");
    assert_eq!(main["variables"]["i"]["value"], 50);
}

#[test]
fn a_literal_panic_message_is_read_exactly() {
    let mut t = Target::start(&panicker(), &[]);
    let pid = t.pid.to_string();
    let (w, _stderr) = watch_json(&pid, &["--panics"]);
    send(&mut t, "boom");
    let (status, _) = t.wait_output();
    assert_eq!(status.code(), Some(101));
    let out = w.wait_with_output().unwrap();
    let snaps = stdout_json(&out);
    assert_eq!(snaps[0]["failure"]["message"], "boom");
}

#[test]
fn a_bounds_check_panic_carries_rusts_own_message() {
    let mut t = Target::start(&panicker(), &[]);
    let pid = t.pid.to_string();
    let (w, _stderr) = watch_json(&pid, &["--panics"]);
    send(&mut t, "5");
    let (status, _) = t.wait_output();
    assert_eq!(status.code(), Some(101));
    let out = w.wait_with_output().unwrap();
    let s = &stdout_json(&out)[0];
    assert_eq!(
        s["failure"]["message"],
        "index out of bounds: the len is 3 but the index is 5"
    );
    let frames = s["frames"].as_array().unwrap();
    let check = frames
        .iter()
        .find(|f| f["function"] == "panicker::check")
        .expect("panicking frame");
    assert_eq!(check["variables"]["i"]["value"], 5);
}
