//! Replay defence (issue 13): GitHub, Shopify, GitLab and generic HMAC sign only the body,
//! so a captured request stays valid under a fresh (unsigned) delivery id. Such sources
//! also dedupe on the body's digest: the replay is answered `"duplicate":true` with the
//! original event's id and nothing is stored — also after a restart.

use std::collections::HashMap;

use serde_json::Value;

use crate::harness::{metric, now, sign, Hookgate};

const CONFIG: &str = r#"
[server]
listen = "{listen}"

[spool]
path = "{dir}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]

[[sources]]
name = "shopify"
provider = "shopify"
secrets = ["shop-secret"]

[[sources]]
name = "gitlab"
provider = "gitlab"
secrets = ["gitlab-token-0123"]

[[sources]]
name = "github-repeats"
provider = "github"
secrets = ["gh-secret"]
dedupe_body = false
"#;

/// `(delivery-id header, event header, event, secret)` per source's provider.
fn headers_of(source: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    match source {
        "shopify" => (
            "x-shopify-webhook-id",
            "x-shopify-topic",
            "orders/create",
            "shop-secret",
        ),
        "gitlab" => (
            "x-gitlab-event-uuid",
            "x-gitlab-event",
            "Push Hook",
            "gitlab-token-0123",
        ),
        _ => ("x-github-delivery", "x-github-event", "push", "gh-secret"),
    }
}

/// Posts `body` to `source` as its provider would, under `delivery`: the body signed, the
/// delivery id beside the signature, unsigned.
async fn post(hg: &Hookgate, source: &str, delivery: &str, body: &[u8]) -> (u16, Value) {
    let (id_header, event_header, event, secret) = headers_of(source);
    let provider = match source {
        "github-repeats" => "github",
        s => s,
    };
    let mut req = crate::harness::client()
        .post(hg.url(&format!("/hooks/{source}")))
        .header(id_header, delivery)
        .header(event_header, event)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in sign(provider, secret, body, now()) {
        req = req.header(k, v);
    }
    let r = req.send().await.expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Delivery ids of the spooled events, per source.
fn spooled(hg: &Hookgate) -> HashMap<String, Vec<String>> {
    let out = hg.cli(&["spool", "read"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_source: HashMap<String, Vec<String>> = HashMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).expect("spool read JSON");
        by_source
            .entry(v["source"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(v["delivery_id"].as_str().unwrap_or_default().to_owned());
    }
    by_source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_request_replayed_under_a_new_delivery_id_is_a_duplicate() {
    let mut hg = Hookgate::start(CONFIG);
    for source in ["github", "shopify", "gitlab"] {
        let body = format!(r#"{{"source":"{source}","n":1}}"#).into_bytes();
        let (s, first) = post(&hg, source, &format!("{source}-orig"), &body).await;
        assert_eq!(
            (s, &first["duplicate"]),
            (200, &Value::Bool(false)),
            "{source}: {first}"
        );
        // The attacker's replay: same signed body, a delivery id of their own.
        let (s, replay) = post(&hg, source, &format!("{source}-replay"), &body).await;
        assert_eq!(s, 200, "{source}: {replay}");
        assert_eq!(replay["duplicate"], true, "{source}: {replay}");
        assert_eq!(
            replay["id"], first["id"],
            "{source}: the original event's id"
        );
        // The replay's own re-send is a duplicate too.
        let (_, again) = post(&hg, source, &format!("{source}-replay"), &body).await;
        assert_eq!(again["duplicate"], true, "{source}: {again}");
        // A new body is a new event, whatever its delivery id.
        let other = format!(r#"{{"source":"{source}","n":2}}"#).into_bytes();
        let (s, new) = post(&hg, source, &format!("{source}-second"), &other).await;
        assert_eq!(
            (s, &new["duplicate"]),
            (200, &Value::Bool(false)),
            "{source}: {new}"
        );
    }
    // A source that opted out stores identical bodies under new delivery ids.
    let body = br#"{"same":"body"}"#;
    for d in ["r-1", "r-2"] {
        let (s, v) = post(&hg, "github-repeats", d, body).await;
        assert_eq!((s, &v["duplicate"]), (200, &Value::Bool(false)), "{v}");
    }
    let got = spooled(&hg);
    for source in ["github", "shopify", "gitlab"] {
        assert_eq!(
            got.get(source).cloned().unwrap_or_default(),
            vec![format!("{source}-orig"), format!("{source}-second")],
            "{source}: nothing of the replays was stored"
        );
    }
    assert_eq!(got["github-repeats"], vec!["r-1", "r-2"]);
    assert_eq!(
        metric(&hg, "hookgate_replays_refused_total{source=\"github\"}").await,
        1.0,
        "a replay is counted once (its own re-send is an ordinary duplicate)"
    );
    assert_eq!(
        metric(
            &hg,
            "hookgate_replays_refused_total{source=\"github-repeats\"}"
        )
        .await,
        0.0
    );

    // After a restart the digest is still remembered (the dedupe store on disk).
    hg.restart();
    let body = br#"{"source":"github","n":1}"#;
    let (s, v) = post(&hg, "github", "github-after-restart", body).await;
    assert_eq!((s, &v["duplicate"]), (200, &Value::Bool(true)), "{v}");
    assert_eq!(
        spooled(&hg).get("github").map(Vec::len),
        Some(2),
        "still nothing stored for the replay"
    );
}

/// `dedupe_body = true` on a scheme that signs a timestamp or id is refused by `check`
/// with the source named: the replay is already refused there, and the digest would drop
/// legitimate identical bodies.
#[test]
fn dedupe_body_on_a_timestamped_scheme_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[[sources]]\nname = \"pay\"\nprovider = \"stripe\"\nsecrets = [\"whsec_x\"]\ndedupe_body = true\n",
    )
    .expect("write");
    let out = crate::harness::run(
        std::process::Command::new(crate::harness::hookgate_bin())
            .args(["check", "--config"])
            .arg(&p),
        crate::harness::COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("pay") && text.contains("dedupe_body"),
        "{text}"
    );
}
