//! The public edge (issue 13): what the public listener exposes and what only the admin
//! listener does.

use crate::harness::{client, free_port, now, sign, Hookgate};

/// With `[admin] listen`, the public port serves only `/hooks/*` (404 elsewhere, metrics
/// and probes included) and the admin port serves `/metrics`, `/healthz` and `/readyz`
/// (and no webhooks); without it, the public port serves both, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_takes_metrics_and_probes_off_the_public_port() {
    let admin_port = free_port();
    let hg = Hookgate::start(&format!(
        r#"
[server]
listen = "{{listen}}"

[admin]
listen = "127.0.0.1:{admin_port}"

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#
    ));
    let admin = format!("http://127.0.0.1:{admin_port}");
    let c = client();
    let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"}}"#.to_vec();
    let post = |base: String| {
        let mut req = c
            .post(format!("{base}/hooks/github"))
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("edge-{base}"))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in sign("github", "gh-secret", &body, now()) {
            req = req.header(k, v);
        }
        req.send()
    };
    let r = post(hg.url("")).await.expect("public post");
    assert_eq!(r.status(), 200, "webhooks on the public port");
    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        let r = c.get(hg.url(path)).send().await.expect("public get");
        assert_eq!(r.status(), 404, "{path} on the public port");
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(v["error"], "not_found", "{path}: {v}");
    }
    let r = post(admin.clone()).await.expect("admin post");
    assert_eq!(r.status(), 404, "no webhooks on the admin port");
    let r = c
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let text = c
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        text.contains("hookgate_requests_total{source=\"github\",status=\"200\"} 1"),
        "the public request is counted on the admin port's metrics:\n{text}"
    );
    // The same port for both is a config error that `check` names.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("same.toml");
    std::fs::write(
        &p,
        "[server]\nlisten = \"127.0.0.1:8088\"\n[admin]\nlisten = \"127.0.0.1:8088\"\n",
    )
    .expect("write");
    let out = crate::harness::run(
        std::process::Command::new(crate::harness::hookgate_bin())
            .args(["check", "--config"])
            .arg(&p),
        crate::harness::COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("admin.listen"),
        "{out:?}"
    );
}

/// SIGHUP asks for a reload (secrets files, certificates); with nothing to reload it must
/// not terminate the process (the signal's default action), twice in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_nothing_to_reload_keeps_serving() {
    let hg = Hookgate::start(
        r#"
[server]
listen = "{listen}"

[spool]
path = "{dir}/spool"
"#,
    );
    let pid = hg.pid().expect("running").to_string();
    for _ in 0..2 {
        let out = crate::harness::run(
            std::process::Command::new("kill").args(["-HUP", &pid]),
            crate::harness::COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "{out:?}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let r = client().get(hg.url("/healthz")).send().await;
        assert!(
            r.as_ref().map(|r| r.status() == 200).unwrap_or(false),
            "still serving after SIGHUP: {r:?}\n{}",
            hg.log()
        );
    }
}
