//! The deployment files: the Kubernetes manifests pass a maintained schema validator
//! (kubernetes-validate, from PyPI, with the API schemas of a current Kubernetes) in strict
//! mode, and hold what a platform team relies on; the image's Dockerfile builds the binary the
//! manifests run.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    [
        "namespace.yaml",
        "secrets.yaml",
        "server.yaml",
        "agent.yaml",
    ]
    .iter()
    .map(|f| deploy_dir().join(f))
    .collect()
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn"])
        .args(files)
        .output()
        .expect("run kubernetes-validate (pip install kubernetes-validate)")
}

/// The manifests as JSON documents (PyYAML comes with the validator).
fn documents() -> Vec<serde_json::Value> {
    let script = "import json,sys,yaml\nfor f in sys.argv[1:]:\n  for d in yaml.safe_load_all(open(f)):\n    print(json.dumps(d))";
    let out = Command::new("python3")
        .args(["-c", script])
        .args(manifests())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a document"))
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in the manifests"))
}

#[test]
fn the_kubernetes_manifests_are_valid_and_hold_what_matters() {
    let out = validate(&manifests());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The validator does reject a mistake (a misspelt field), so its pass means something.
    let broken = std::env::temp_dir().join(format!("periscope-broken-{}.yaml", std::process::id()));
    let server = std::fs::read_to_string(deploy_dir().join("server.yaml")).expect("server.yaml");
    std::fs::write(&broken, server.replace("containerPort:", "containerPorts:")).expect("write");
    let out = validate(std::slice::from_ref(&broken));
    let _ = std::fs::remove_file(&broken);
    assert!(
        !out.status.success(),
        "a misspelt field must fail validation"
    );

    let kustomization =
        std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).expect("kustomization");
    for f in manifests() {
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(kustomization.contains(name), "kustomization lists {name}");
    }

    let docs = documents();
    let server = find(&docs, "Deployment", "periscope-server");
    assert_eq!(server["spec"]["replicas"], 2);
    let c = &server["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"].as_array().expect("env");
    let from_secret = |var: &str| {
        env.iter()
            .find(|e| e["name"] == var)
            .and_then(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
            .map(str::to_string)
    };
    assert_eq!(from_secret("PERISCOPE_DB").as_deref(), Some("periscope-db"));
    assert_eq!(
        from_secret("PERISCOPE_ADMIN_TOKEN").as_deref(),
        Some("periscope-admin")
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    let service = find(&docs, "Service", "periscope-server");
    assert_eq!(
        service["spec"]["selector"],
        server["spec"]["template"]["metadata"]["labels"]
    );

    let agent = find(&docs, "DaemonSet", "periscope-agent");
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        caps["add"],
        serde_json::json!(["SYS_PTRACE", "BPF", "PERFMON"])
    );
    assert!(
        c["securityContext"]["privileged"].is_null() || c["securityContext"]["privileged"] == false
    );
    assert!(
        pod["hostNetwork"].is_null(),
        "the agent needs no host network"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let server_url = args
        .iter()
        .skip_while(|a| **a != "--server")
        .nth(1)
        .expect("--server");
    assert!(
        server_url.contains("periscope-server"),
        "the agent reports to the Service: {server_url}"
    );
    let token = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "PERISCOPE_TOKEN")
        .expect("the agent's token");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"],
        "periscope-agent"
    );
}

#[test]
fn the_dockerfile_builds_the_binary_the_manifests_run() {
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("../../Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a slim final stage: {stages:?}"
    );
    assert!(stages[0].ends_with(" AS build"));
    assert!(dockerfile.contains("cargo build --release --locked --bin periscope"));
    assert!(dockerfile
        .contains("COPY --from=build /src/target/release/periscope /usr/local/bin/periscope"));
    assert!(dockerfile.contains("ENTRYPOINT [\"periscope\"]"));
    // The server's arguments in the manifest are ones the binary takes.
    let docs = documents();
    let server = find(&docs, "Deployment", "periscope-server");
    let args: Vec<String> = server["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let mut help = common::periscope();
    let out = help
        .arg(&args[0])
        .arg("--help")
        .output()
        .expect("periscope");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            text.contains(flag.as_str()),
            "`periscope {}` takes {flag}",
            args[0]
        );
    }
    assert!(text.contains("PERISCOPE_DB") && text.contains("PERISCOPE_ADMIN_TOKEN"));
}
