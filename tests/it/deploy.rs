//! The deployment files (issue 15), validated without a cluster or a container engine:
//! every Kubernetes manifest of `deploy/k8s/` against the Kubernetes JSON schemas
//! (kubernetes-validate, strict) and `deploy/compose.yaml` against the Compose
//! specification's schema, plus the references the schemas cannot see
//! (`scripts/validate-deploy.py`, in the venv of `scripts/deploy-tools.sh`); HAProxy's
//! config with `haproxy -c`; and `hookgate check` on the compose and Kubernetes hookgate
//! configs. Each checker is also shown a broken copy and must refuse it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{hookgate_bin, run};

const HAPROXY: &str = "/usr/sbin/haproxy";
/// A bound on each command, never an expectation of speed.
const WITHIN: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `Some(tool)` when it is installed; `None` (after saying why) when it is not and this is
/// not CI. Under CI a missing tool fails the test: scripts/test.sh installs them all.
fn tool(path: PathBuf, install: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing under CI: {install}",
        path.display()
    );
    eprintln!("SKIPPED: {} is not installed ({install})", path.display());
    None
}

/// The venv's Python (scripts/deploy-tools.sh).
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("HOOKGATE_DEPLOY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/hookgate-ci/venv")
        });
    tool(
        venv.join("bin/python"),
        "run `bash scripts/deploy-tools.sh` (scripts/test.sh does it)",
    )
}

fn haproxy() -> Option<PathBuf> {
    tool(
        PathBuf::from(HAPROXY),
        "apt-get install -y haproxy; scripts/test.sh does it",
    )
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn validate(python: &Path, deploy: &Path, k8s_config_out: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("scripts/validate-deploy.py"))
        .arg(deploy);
    if let Some(out) = k8s_config_out {
        cmd.arg("--k8s-config-out").arg(out);
    }
    run(&mut cmd, WITHIN)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A copy of deploy/ with `from` replaced by `to` in one file (which must contain it).
fn broken_copy(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let deploy = dir.join("deploy");
    let _ = std::fs::remove_dir_all(&deploy);
    copy_dir(&repo().join("deploy"), &deploy);
    let path = deploy.join(file);
    let body = std::fs::read_to_string(&path).unwrap();
    assert!(body.contains(from), "{file} no longer contains {from:?}");
    std::fs::write(&path, body.replacen(from, to, 1)).unwrap();
    deploy
}

#[test]
fn k8s_manifests_and_compose_file_pass_the_schemas_and_the_reference_checks() {
    let Some(python) = venv_python() else { return };
    let out = validate(&python, &repo().join("deploy"), None);
    let t = text(&out);
    assert!(out.status.success(), "validate-deploy.py failed:\n{t}");
    for line in [
        "Kubernetes objects in",
        "(strict)",
        "k8s references: hookgate StatefulSet x3",
        "compose.yaml against the Compose specification's JSON schema",
        "compose: 3 hookgate replicas with their own spools; HAProxy backends = ['hookgate-1', 'hookgate-2', 'hookgate-3']",
    ] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
}

#[test]
fn the_validator_refuses_broken_deploy_files() {
    let Some(python) = venv_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // (file, text, replacement, the error expected)
    let cases = [
        // The Kubernetes schema: an unknown field (strict) and a wrong type.
        (
            "k8s/statefulset.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: true\n            readOnlyRootFs: true",
            "'readOnlyRootFs' was unexpected",
        ),
        (
            "k8s/hpa.yaml",
            "maxReplicas: 12",
            "maxReplicas: twelve",
            "'twelve' is not of type 'integer'",
        ),
        // References the schema cannot see.
        (
            "k8s/statefulset.yaml",
            "httpGet: { path: /readyz, port: admin }",
            "httpGet: { path: /readyz, port: adm }",
            "readinessProbe uses port 'adm', not a container port",
        ),
        (
            "k8s/hpa.yaml",
            "kind: StatefulSet",
            "kind: Deployment",
            "targets Deployment/hookgate, not StatefulSet/hookgate",
        ),
        (
            "k8s/kustomization.yaml",
            "  - pdb.yaml\n",
            "",
            "k8s/pdb.yaml is not in kustomization.yaml resources",
        ),
        // The Compose schema, and the compose checks.
        (
            "compose.yaml",
            "stop_grace_period: 45s",
            "stop_grace_periods: 45s",
            "'stop_grace_periods' does not match any of the regexes",
        ),
        (
            "compose.yaml",
            "spool-3:/var/lib/hookgate",
            "spool-2:/var/lib/hookgate",
            "shares spool volume spool-2 with hookgate-2",
        ),
        (
            "haproxy/haproxy.cfg",
            "    server hookgate-3 hookgate-3:8080\n",
            "",
            "backend hookgate servers ['hookgate-1', 'hookgate-2'] != compose hookgate services",
        ),
        (
            "compose.yaml",
            "webhooks.stripe hookgate.dlq",
            "hookgate.dlq",
            "topic webhooks.stripe of source stripe is not created by kafka-init",
        ),
        (
            "compose/hookgate.toml",
            "claim_ttl",
            "claim_tt",
            "[dedupe.redis] keys",
        ),
    ];
    for (file, from, to, expected) in cases {
        let deploy = broken_copy(dir.path(), file, from, to);
        let out = validate(&python, &deploy, None);
        let t = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file} with {to:?} was accepted:\n{t}"
        );
        assert!(
            t.contains(expected),
            "{file} with {to:?}: expected {expected:?} in:\n{t}"
        );
    }
}

/// `haproxy -c`: exit 0 and no warning but the backend names that only Docker's DNS
/// resolves (`init-addr none` makes them a warning, not an error, offline).
fn haproxy_check(haproxy: &Path, cfg: &Path) -> (bool, String) {
    let out = run(Command::new(haproxy).arg("-c").arg("-f").arg(cfg), WITHIN);
    let t = text(&out);
    let unexpected: Vec<&str> = t
        .lines()
        .filter(|l| {
            (l.contains("[WARNING]") && !l.contains("could not resolve address"))
                || l.contains("[ALERT]")
        })
        .collect();
    (
        out.status.success() && t.contains("Configuration file is valid") && unexpected.is_empty(),
        t,
    )
}

#[test]
fn haproxy_config_passes_haproxy_check_offline() {
    let Some(haproxy) = haproxy() else { return };
    let (ok, t) = haproxy_check(&haproxy, &repo().join("deploy/haproxy/haproxy.cfg"));
    assert!(ok, "haproxy -c refused deploy/haproxy/haproxy.cfg:\n{t}");
    // And the check can fail: a misspelt balance algorithm.
    let dir = tempfile::tempdir().unwrap();
    let deploy = broken_copy(
        dir.path(),
        "haproxy/haproxy.cfg",
        "balance roundrobin",
        "balance roundrobn",
    );
    let (ok, t) = haproxy_check(&haproxy, &deploy.join("haproxy/haproxy.cfg"));
    assert!(!ok, "haproxy -c accepted a broken config:\n{t}");
}

/// Secret files for `hookgate check`: the config's paths under `secrets_dir` (where the
/// container mounts them) moved to `dir`, each file holding a placeholder of the right shape.
fn with_local_secrets(config: &str, secrets_dir: &str, dir: &Path) -> String {
    let mut rest = config;
    while let Some(at) = rest.find(secrets_dir) {
        let name: String = rest[at + secrets_dir.len()..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        let value = match name.as_str() {
            "github_secret" => "deploy-test-github-secret",
            "stripe_secret" => "whsec_ZGVwbG95LXRlc3Q",
            "redis_url" => "redis://127.0.0.1:6379/0",
            other => panic!("add a placeholder for the secret file {other:?} to this test"),
        };
        std::fs::write(dir.join(&name), format!("{value}\n")).unwrap();
        rest = &rest[at + secrets_dir.len()..];
    }
    config.replace(secrets_dir, &format!("{}/", dir.display()))
}

/// `hookgate check` on `path`; fails the test unless it passes. Returns the output and the
/// file checked.
fn hookgate_check(path: &Path) -> (String, PathBuf) {
    let out = run(
        Command::new(hookgate_bin())
            .args(["check", "--config"])
            .arg(path)
            .env("KAFKA_BROKERS", "127.0.0.1:9092"),
        WITHIN,
    );
    let t = text(&out);
    assert!(
        out.status.success(),
        "hookgate check {}:\n{t}",
        path.display()
    );
    (t, path.to_path_buf())
}

#[test]
fn hookgate_check_passes_on_the_compose_and_k8s_configs() {
    let dir = tempfile::tempdir().unwrap();
    let compose = std::fs::read_to_string(repo().join("deploy/compose/hookgate.toml")).unwrap();
    let path = dir.path().join("compose.toml");
    std::fs::write(
        &path,
        with_local_secrets(&compose, "/run/secrets/", dir.path()),
    )
    .unwrap();
    let (t, _) = hookgate_check(&path);
    assert!(
        t.contains("ok: 2 source(s), 0 sink(s), 0 route(s); log: kafka with spool"),
        "{t}"
    );

    let Some(python) = venv_python() else { return };
    let extracted = dir.path().join("k8s-extracted.toml");
    let out = validate(&python, &repo().join("deploy"), Some(&extracted));
    assert!(out.status.success(), "{}", text(&out));
    let k8s = std::fs::read_to_string(&extracted).unwrap();
    let path = dir.path().join("k8s.toml");
    std::fs::write(
        &path,
        with_local_secrets(&k8s, "/etc/hookgate/secrets/", dir.path()),
    )
    .unwrap();
    let (t, passed) = hookgate_check(&path);
    assert!(
        t.contains("ok: 2 source(s), 0 sink(s), 0 route(s); log: kafka with spool"),
        "{t}"
    );

    // And the check can fail: the same file once a secret file holds no secret.
    std::fs::write(dir.path().join("github_secret"), "# empty\n").unwrap();
    let out = run(
        Command::new(hookgate_bin())
            .args(["check", "--config"])
            .arg(&passed),
        WITHIN,
    );
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("github_secret holds no secret"),
        "{t}"
    );
}
