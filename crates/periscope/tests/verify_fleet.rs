//! Verify across a fleet: `periscope probe add verify` places it, agents tally the cells, the
//! server sums them (`GET /api/v1/probes/{id}/verify`, `probe show`), and the process goes on
//! failing in reality.

mod common;

use common::fleet::{eventually_or, instance_of, json_out, json_value, test_dir, Agent, Server};
use common::{probe_line, refunds, Target};

#[test]
fn a_verify_probe_is_tallied_by_the_server() {
    let dir = test_dir("verify-fleet");
    let server = Server::start(&dir, 0);
    let mut target = Target::start(&refunds(), &["500"]);
    let token = server.token("agent", "a1");
    let _agent = Agent::start(&server, &token, &["--pid", &target.pid.to_string()]);
    let instance = instance_of(&server, target.pid);
    let location = format!("refunds.rs:{}", probe_line("refunds.rs", "refund-apply"));
    let added = json_out(&server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "verify",
            &instance,
            &location,
            "--failure",
            "refund > charge.amount - charge.refunded",
            "--fix",
            "capped: refund = min(refund, charge.amount - charge.refunded)",
            "--fix",
            "halved: refund = refund / 2",
            "--max-hits",
            "300",
            "--json",
        ],
    ));
    let id = added["id"].as_str().expect("id").to_string();
    let c = server.admin();
    // The agent reports the final counts when the probe reaches its hit limit.
    let result = eventually_or(
        "300 hits tallied",
        || {
            let r = c.verify_result(&id).map(|v| json_value(&v)).ok()?;
            (r["hits"].as_u64() == Some(300)).then_some(r)
        },
        || format!("{:?}", c.verify_result(&id).map(|v| json_value(&v))),
    );
    let capped = &result["candidates"][0];
    assert_eq!(capped["name"], "capped");
    let n = |k: &str| capped[k].as_u64().unwrap_or(0);
    assert!(n("failing") > 0 && n("fixed") == n("failing"), "{result}");
    assert_eq!(n("unchanged"), n("passing"), "{result}");
    assert_eq!(
        n("failing") + n("passing") + n("inconclusive"),
        300,
        "{result}"
    );
    let halved = &result["candidates"][1];
    assert!(halved["changed"].as_u64() > Some(0), "{result}");
    // Examples say which instance they came from.
    assert_eq!(
        capped["examples"]["fixed"][0]["instance"],
        instance.as_str()
    );

    // `probe show` prints the table.
    let out = server.cli(&server.admin, &["probe", "show", &id]);
    common::assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CANDIDATE") && text.contains("capped: fixed"),
        "{text}"
    );
    // A bad fix is refused by the API, naming the field.
    let out = server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "verify",
            &instance,
            &location,
            "--failure",
            "refund > 1",
            "--fix",
            "refund = 1",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME: VAR = EXPR"));
    target.assert_untouched();
}

#[test]
fn a_replay_verify_probe_runs_copies_on_the_agent() {
    let dir = test_dir("verify-fleet-replay");
    let server = Server::start(&dir, 0);
    let mut target = Target::start(&refunds(), &["500"]);
    let token = server.token("agent", "a1");
    let _agent = Agent::start(&server, &token, &["--pid", &target.pid.to_string()]);
    let instance = instance_of(&server, target.pid);
    let location = format!("refunds.rs:{}", probe_line("refunds.rs", "refund-apply"));
    let replay = format!(
        "refund..refunds.rs:{}",
        probe_line("refunds.rs", "refund-check")
    );
    let added = json_out(&server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "verify",
            &instance,
            &location,
            "--failure",
            "charge.refunded > charge.amount",
            "--fix",
            "capped: refund = min(refund, charge.amount - charge.refunded)",
            "--keep",
            "charge.refunded",
            "--replay",
            &replay,
            "--rate",
            "1000",
            "--budget-ms",
            "5000",
            "--max-hits",
            "150",
            "--json",
        ],
    ));
    assert_eq!(added["replay"], replay.as_str(), "{added}");
    let id = added["id"].as_str().expect("id").to_string();
    let c = server.admin();
    let result = eventually_or(
        "150 replays tallied",
        || {
            let r = c.verify_result(&id).map(|v| json_value(&v)).ok()?;
            (r["hits"].as_u64() == Some(150)).then_some(r)
        },
        || format!("{:?}", c.verify_result(&id).map(|v| json_value(&v))),
    );
    let capped = &result["candidates"][0];
    let n = |k: &str| capped[k].as_u64().unwrap_or(0);
    assert!(n("failing") > 0 && n("fixed") == n("failing"), "{result}");
    assert_eq!(n("unchanged"), n("passing"), "{result}");
    assert_eq!(n("failing") + n("passing"), 150, "{result}");
    // The copy's values are the evidence: the charge refunded up to its amount, no more.
    let ex = &capped["examples"]["fixed"][0];
    assert!(
        ex["charge.refunded (fixed)"]["value"].as_u64() < ex["charge.refunded"]["value"].as_u64(),
        "{ex}"
    );
    // A replay that is not FROM..UNTIL is refused by the API, naming the field.
    let out = server.cli(
        &server.admin,
        &[
            "probe",
            "add",
            "verify",
            &instance,
            &location,
            "--failure",
            "refund > 1",
            "--fix",
            "one: refund = 1",
            "--replay",
            "refunds.rs:25",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replay") && err.contains("FROM..UNTIL"),
        "{err}"
    );
    target.assert_untouched();
}
