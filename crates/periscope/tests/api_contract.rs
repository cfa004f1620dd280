//! The API against its own OpenAPI document, as client generators and API testers read it:
//! schemathesis (PyPI) with every check, against a live server on SQLite and one on
//! PostgreSQL. A fixed seed and a bounded number of examples per operation keep the run the
//! same each time; `scripts/api_contract.sh` explores with new seeds.

mod common;

use common::fleet::*;
use common::postgres::PgCluster;
use std::process::Command;

/// Examples per operation, and the seed.
const EXAMPLES: &str = "15";
const SEED: &str = "1";

fn check(server: &Server) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/api_contract.sh");
    let out = Command::new("bash")
        .arg(script)
        .args([EXAMPLES, SEED])
        .env("API_URL", &server.url)
        .env("API_TOKEN", &server.admin)
        .output()
        .expect("run scripts/api_contract.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found contract failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Tested: "),
        "schemathesis ran no operation:\n{text}"
    );
}

#[test]
fn the_api_keeps_its_openapi_contract_on_sqlite() {
    let dir = test_dir("contract-sqlite");
    let db = dir.join("periscope.db");
    let server = Server::start_on(&dir, 0, &db.to_string_lossy(), &[]);
    check(&server);
}

#[test]
fn the_api_keeps_its_openapi_contract_on_postgres() {
    let cluster = PgCluster::start();
    let dir = test_dir("contract-postgres");
    let url = cluster.database("contract");
    let server = Server::start_on(&dir, 0, &url, &[]);
    check(&server);
}
