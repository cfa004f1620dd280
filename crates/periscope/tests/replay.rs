//! `periscope verify --replay FROM..UNTIL`: at FROM a copy of the live process runs the
//! computation with a candidate fix written in, and the outcome at UNTIL is compared with the
//! original's own. The original is never changed (it goes on failing as before), a copy that
//! reaches for the world is stopped, and no copy outlives the command, not even a `kill -9`.

mod common;

use common::{probe_line, refunds, run_periscope, stderr, stdout_json, Target};
use serde_json::Value;
use std::time::{Duration, Instant};

const FAILURE: &str = "charge.refunded > charge.amount";
const CAPPED: &str = "capped: refund = min(refund, charge.amount - charge.refunded)";
const HALVED: &str = "halved: refund = refund / 2";

fn line(tag: &str) -> String {
    format!("refunds.rs:{}", probe_line("refunds.rs", tag))
}

/// FROM the function's entry, UNTIL the line that checks the outcome.
fn replay() -> String {
    format!("refund..{}", line("refund-check"))
}

fn candidate<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no candidate {name} in {result}"))
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// The target's children: replay copies, if any were left (running or not reaped).
fn children(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path().join("children");
        let list = std::fs::read_to_string(path).unwrap_or_default();
        out.extend(list.split_whitespace().map(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            format!("{c}: {stat}")
        }));
    }
    out
}

fn verify(pid: u32, extra: &[&str]) -> std::process::Output {
    let (pid, location, replay) = (pid.to_string(), line("refund-apply"), replay());
    let mut args = vec![
        "verify",
        &pid,
        &location,
        "--failure",
        FAILURE,
        "--replay",
        &replay,
    ];
    args.extend_from_slice(extra);
    run_periscope(&args)
}

#[test]
fn copies_run_each_fix_and_the_original_goes_on_failing() {
    let mut t = Target::start(&refunds(), &["500"]);
    let out = verify(
        t.pid,
        &[
            "--fix",
            CAPPED,
            "--fix",
            HALVED,
            "--keep",
            "charge.refunded",
            "--rate",
            "1000",
            "--max-hits",
            "300",
            "--for",
            "120s",
            "--json",
        ],
    );
    common::assert_success(&out);
    assert!(
        stderr(&out).contains("replay: at refund, a copy of pid"),
        "{}",
        stderr(&out)
    );
    let result = stdout_json(&out).pop().expect("a result");
    assert_eq!(n(&result, "hits"), 300, "{result}");

    // Copies alternate between the candidates: each gets half. About one request in ten
    // overruns, so each sees failing hits (0 in 150 would be a 1-in-100,000 chance).
    let capped = candidate(&result, "capped");
    assert!(
        n(capped, "failing") > 0 && n(capped, "passing") > 30,
        "{capped}"
    );
    assert_eq!(n(capped, "fixed"), n(capped, "failing"), "{capped}");
    assert_eq!(n(capped, "unchanged"), n(capped, "passing"), "{capped}");
    assert_eq!(n(capped, "inconclusive"), 0, "{capped}");
    // The example is what the copy computed: the refund capped, the charge refunded in full
    // and no more, where the original overran.
    let ex = &capped["examples"]["fixed"][0];
    assert_eq!(ex[format!("({FAILURE})")]["value"], true, "{ex}");
    assert_eq!(ex[format!("({FAILURE}) (fixed)")]["value"], false, "{ex}");
    let refunded = ex["charge.refunded"]["value"].as_u64().expect("real");
    let fixed = ex["charge.refunded (fixed)"]["value"]
        .as_u64()
        .expect("fixed");
    assert!(fixed < refunded, "{ex}");

    let halved = candidate(&result, "halved");
    assert!(
        n(halved, "changed") > 0,
        "halving changes correct refunds: {halved}"
    );
    assert_eq!(
        n(halved, "broken") + n(halved, "inconclusive"),
        0,
        "{halved}"
    );
    assert_eq!(
        n(capped, "failing") + n(capped, "passing") + n(halved, "failing") + n(halved, "passing"),
        300
    );

    // The original was never changed: it still overruns refunds.
    let out = run_periscope(&[
        "log",
        &t.pid.to_string(),
        &line("refund-check"),
        "refunded={charge.refunded} amount={charge.amount}",
        "--if",
        FAILURE,
        "--max-hits",
        "3",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    assert_eq!(
        stdout_json(&out).len(),
        3,
        "the failure still happens after verify"
    );
    assert_eq!(
        children(t.pid),
        Vec::<String>::new(),
        "a copy was left behind"
    );
    t.assert_untouched();
}

#[test]
fn a_copy_that_reaches_for_the_world_is_stopped_and_inconclusive() {
    let mut t = Target::start(&refunds(), &["500"]);
    // UNTIL after the request loop's sleep: the copy would have to call the kernel to get there.
    let pid = t.pid.to_string();
    let replay = format!("refund..{}", line("next-request"));
    let out = run_periscope(&[
        "verify",
        &pid,
        &line("refund-apply"),
        "--failure",
        "n > 0",
        "--fix",
        "zero: refund = 0",
        "--replay",
        &replay,
        "--rate",
        "50",
        "--max-hits",
        "5",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    let result = stdout_json(&out).pop().expect("a result");
    let zero = candidate(&result, "zero");
    assert_eq!(n(zero, "inconclusive"), 5, "{zero}");
    let reason = zero["examples"]["inconclusive"][0]["reason"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("system call (`clock_nanosleep`)")
            || reason.contains("system call (`nanosleep`)"),
        "{reason}"
    );
    assert_eq!(
        children(t.pid),
        Vec::<String>::new(),
        "a copy was left behind"
    );
    t.assert_untouched();
}

#[test]
fn a_copy_that_cannot_reach_until_is_killed_at_the_deadline() {
    // Each job spins until another thread raises a flag: a copy has no such thread.
    let mut t = Target::start(&common::spinwait(), &[]);
    let at = |tag: &str| format!("spinwait.c:{}", probe_line("spinwait.c", tag));
    let replay = format!("job..{}", at("job-return"));
    let out = run_periscope(&[
        "verify",
        &t.pid.to_string(),
        &at("job-done"),
        "--failure",
        "doubled > 0",
        "--fix",
        "zero: doubled = 0",
        "--replay",
        &replay,
        "--max-hits",
        "3",
        "--for",
        "60s",
        "--json",
    ]);
    common::assert_success(&out);
    let result = stdout_json(&out).pop().expect("a result");
    let zero = candidate(&result, "zero");
    assert!(n(zero, "inconclusive") >= 1, "{zero}");
    for ex in zero["examples"]["inconclusive"]
        .as_array()
        .expect("examples")
    {
        let reason = ex["reason"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("did not reach UNTIL within"), "{reason}");
    }
    assert_eq!(
        children(t.pid),
        Vec::<String>::new(),
        "a copy was left behind"
    );
    t.assert_untouched();
}

#[test]
fn kill_9_during_replays_leaves_no_copy_running_and_the_next_attach_reaps() {
    let mut t = Target::start(&refunds(), &["200"]);
    for round in 0..6 {
        let mut child = common::periscope()
            .args([
                "verify",
                &t.pid.to_string(),
                &line("refund-apply"),
                "--failure",
                FAILURE,
                "--fix",
                CAPPED,
                "--replay",
                &replay(),
                "--rate",
                "1000",
                "--for",
                "60s",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Killed at a different moment each round, once copies are being made.
        let mut err = child.stderr.take().expect("stderr");
        let mut buf = [0u8; 256];
        let _ = std::io::Read::read(&mut err, &mut buf); // the header: attached
        std::thread::sleep(Duration::from_millis(20 + 37 * round));
        let _ = child.kill();
        let _ = child.wait();
        // No copy runs on untraced: each is dead (a zombie at most) once periscope is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live: Vec<String> = children(t.pid)
                .into_iter()
                .filter(|c| !c.contains(") Z "))
                .collect();
            if live.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "copies still running: {live:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t.child.try_wait().expect("status").is_none(), "target died");
    }
    // The next periscope reaps what a killed one left, and leaves nothing itself.
    let out = verify(t.pid, &["--fix", CAPPED, "--max-hits", "2", "--for", "60s"]);
    common::assert_success(&out);
    assert_eq!(children(t.pid), Vec::<String>::new(), "copies left");
    t.assert_untouched();
}

#[test]
fn replay_mistakes_are_said_before_anything_starts() {
    let mut t = Target::start(&refunds(), &["500"]);
    let refused = |failure: &str, replay: &str, says: &str| {
        let out = common::periscope()
            .args([
                "verify",
                &t.pid.to_string(),
                &line("refund-apply"),
                "--failure",
                failure,
                "--fix",
                CAPPED,
                "--replay",
                replay,
            ])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{replay} was accepted");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    };
    refused(FAILURE, &line("refund-check"), "FROM..UNTIL");
    refused(FAILURE, "refund..", "UNTIL location is missing");
    // The failure is read at UNTIL: in main, `charge` is a local of the loop but `refund` is not.
    refused(
        "refund > 0",
        &format!("refund..{}", line("next-request")),
        "`refund` is not in scope",
    );
    refused(FAILURE, "refnd..refunds.rs:25", "refnd");
    t.assert_untouched();
}
