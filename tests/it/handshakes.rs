//! Provider handshakes over HTTP, against the binary: each is answered as its provider
//! expects (after verification where the scheme signs it), and none is stored as an event
//! (`hookgate spool read` shows only the ordinary event each test also sends).

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{client, now, sign, Hookgate};

const DISCORD_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// The sources under test: name, provider, and the rest of its `[[sources]]` table
/// (`{discord_key}` stands for the public key of [`DISCORD_SEED`]).
const SOURCES: &[(&str, &str, &str)] = &[
    ("slack", "slack", r#"secrets = ["slack-signing-secret"]"#),
    ("discord", "discord", r#"secrets = ["{discord_key}"]"#),
    (
        "meta",
        "whatsapp",
        "secrets = [\"meta-app-secret\"]\nverify_token = \"meta-verify-token-123\"",
    ),
    (
        "zoom",
        "zoom",
        r#"secrets = ["zoom-old-token", "zoom-secret-token"]"#,
    ),
    (
        "twitch",
        "twitch",
        "secrets = [\"twitch-eventsub-secret\"]\ntolerance = \"10m\"",
    ),
    ("dropbox", "dropbox", r#"secrets = ["dropbox-app-secret"]"#),
    ("woocommerce", "woocommerce", r#"secrets = ["wc-webhook-secret"]"#),
    (
        "trello",
        "trello",
        "secrets = [\"trello-app-secret\"]\npublic_url = \"https://hooks.example.com/hooks/trello\"",
    ),
    ("okta", "okta", r#"secrets = ["okta-hook-secret-value"]"#),
    (
        "adyen",
        "adyen",
        r#"secrets = ["44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"]"#,
    ),
    ("graph", "microsoft-graph", r#"secrets = ["secretClientValue"]"#),
    ("asana", "asana", ""),
    ("notion", "notion", ""),
];

fn config() -> String {
    let discord_key = hookgate_ingest::verify::discord_public_key_hex(DISCORD_SEED).unwrap();
    let mut text =
        "[server]\nlisten = \"{listen}\"\n\n[spool]\npath = \"{dir}/spool\"\n".to_owned();
    for (name, provider, rest) in SOURCES {
        let rest = rest.replace("{discord_key}", &discord_key);
        text.push_str(&format!(
            "\n[[sources]]\nname = \"{name}\"\nprovider = \"{provider}\"\n{rest}\n"
        ));
    }
    text
}

/// Delivery ids of the spooled events of `source`.
fn spooled(hg: &Hookgate, source: &str) -> Vec<String> {
    let out = hg.cli(&["spool", "read"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("spool read JSON"))
        .filter(|v| v["source"] == source)
        .map(|v| v["delivery_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// POSTs `body` to `source`, signed as `provider` with `secret`, plus `extra` headers.
async fn post(
    hg: &Hookgate,
    source: &str,
    provider: &str,
    secret: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(hg.url(&format!("/hooks/{source}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in sign(provider, secret, body, now()) {
        req = req.header(k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.expect("post")
}

/// POSTs `body` to `source` signed with `secret`, then with `wrong`: the second is refused
/// 401; the first answers 200 and is returned.
async fn post_signed_only(
    hg: &Hookgate,
    (source, provider): (&str, &str),
    (secret, wrong): (&str, &str),
    body: &[u8],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let r = post(hg, source, provider, secret, body, extra).await;
    assert_eq!(r.status(), StatusCode::OK, "signed with the secret");
    let refused = post(hg, source, provider, wrong, body, extra).await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "signed with another secret"
    );
    r
}

/// The body of an echoed challenge, after checking it is `text/plain` with `nosniff`.
async fn plain_text(r: reqwest::Response) -> String {
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    r.text().await.unwrap()
}

/// Checks `r` is a refusal with `status` and hookgate's error `code`.
async fn refused(r: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], code);
}

#[tokio::test]
async fn slack_url_verification_is_answered_after_verification_and_not_stored() {
    let hg = Hookgate::start(&config());
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    // Not signed with the source's secret: refused, not answered.
    let secrets = ("slack-signing-secret", "another-secret");
    let r = post_signed_only(&hg, ("slack", "slack"), secrets, body, &[]).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    let event = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}"#;
    let r = post(&hg, "slack", "slack", "slack-signing-secret", event, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(spooled(&hg, "slack"), vec!["Ev1".to_string()]);
}

#[tokio::test]
async fn discord_ping_is_answered_with_pong_and_not_stored() {
    let hg = Hookgate::start(&config());
    let ping = br#"{"type":1,"id":"787053080478613555","application_id":"7"}"#;
    let other_seed = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    let seeds = (DISCORD_SEED, other_seed);
    let r = post_signed_only(&hg, ("discord", "discord"), seeds, ping, &[]).await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"type": 1})
    );
    let command = br#"{"type":2,"id":"787053080478613556","data":{"name":"ping"}}"#;
    let r = post(&hg, "discord", "discord", DISCORD_SEED, command, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        spooled(&hg, "discord"),
        vec!["787053080478613556".to_string()]
    );
}

#[tokio::test]
async fn meta_verification_get_echoes_the_challenge_only_for_the_right_token() {
    let hg = Hookgate::start(&config());
    let get = |query: &str| client().get(hg.url(&format!("/hooks/meta?{query}"))).send();
    let r =
        get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meta-verify-token-123")
            .await
            .unwrap();
    assert_eq!(plain_text(r).await, "1158201444");
    let r = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess")
        .await
        .unwrap();
    refused(r, StatusCode::FORBIDDEN, "verify_token_mismatch").await;
    let r = get("hub.mode=subscribe&hub.challenge=%3Cb%3E&hub.verify_token=meta-verify-token-123")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no HTML is reflected");
    // Events are POSTed and signed with the app secret.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[]}]}"#;
    let secrets = ("meta-app-secret", "not-the-app-secret");
    post_signed_only(&hg, ("meta", "meta"), secrets, body, &[]).await;
    assert_eq!(
        spooled(&hg, "meta").len(),
        1,
        "only the signed event is stored"
    );
}

#[tokio::test]
async fn zoom_url_validation_is_answered_with_the_encrypted_token_and_not_stored() {
    let hg = Hookgate::start(&config());
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let secrets = ("zoom-secret-token", "not-zoom");
    let r = post_signed_only(&hg, ("zoom", "zoom"), secrets, body, &[]).await;
    let v: Value = r.json().await.unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"zoom-secret-token");
    let expected = hex::encode(ring::hmac::sign(&key, b"qgg8vlvZRS6UYooatFL8Aw").as_ref());
    assert_eq!(v["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(v["encryptedToken"], expected.as_str());
    let event =
        br#"{"event":"meeting.started","event_ts":1654503849681,"payload":{"object":{"id":"1"}}}"#;
    let r = post(&hg, "zoom", "zoom", "zoom-old-token", event, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(spooled(&hg, "zoom").len(), 1);
}

#[tokio::test]
async fn twitch_callback_verification_echoes_the_challenge_and_revocations_are_recorded() {
    let hg = Hookgate::start(&config());
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","type":"channel.follow","version":"1"}}"#;
    let kind = (
        "twitch-eventsub-message-type",
        "webhook_callback_verification",
    );
    let secrets = ("twitch-eventsub-secret", "another-secret");
    let r = post_signed_only(&hg, ("twitch", "twitch"), secrets, body, &[kind]).await;
    assert_eq!(plain_text(r).await, "pogchamp-kappa-360noscope-vohiyo");
    // A challenge that is not echoed: refused with the handshake's own status and code.
    let html = br#"{"challenge":"<b>hi</b>","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","type":"channel.follow","version":"1"}}"#;
    let r = post(
        &hg,
        "twitch",
        "twitch",
        "twitch-eventsub-secret",
        html,
        &[kind],
    )
    .await;
    refused(r, StatusCode::BAD_REQUEST, "bad_handshake").await;
    let revoked = br#"{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"authorization_revoked","type":"channel.follow","version":"1"}}"#;
    let r = post(
        &hg,
        "twitch",
        "twitch",
        "twitch-eventsub-secret",
        revoked,
        &[
            ("twitch-eventsub-message-type", "revocation"),
            ("twitch-eventsub-subscription-type", "channel.follow"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(spooled(&hg, "twitch").len(), 1, "the revocation only");
}

#[tokio::test]
async fn dropbox_challenge_get_is_echoed_as_plain_text_and_not_stored() {
    let hg = Hookgate::start(&config());
    let get = |query: &str| {
        client()
            .get(hg.url(&format!("/hooks/dropbox{query}")))
            .send()
    };
    let r = get("?challenge=b5b9a8e3-Zz_09").await.unwrap();
    assert_eq!(plain_text(r).await, "b5b9a8e3-Zz_09");
    for bad in ["", "?challenge=%3Cscript%3Ealert(1)%3C/script%3E"] {
        let r = get(bad).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let body = br#"{"list_folder":{"accounts":["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]},"delta":{"users":[12345678]}}"#;
    let secrets = ("dropbox-app-secret", "wrong");
    post_signed_only(&hg, ("dropbox", "dropbox"), secrets, body, &[]).await;
    assert_eq!(spooled(&hg, "dropbox").len(), 1);
}

#[tokio::test]
async fn woocommerce_creation_ping_is_answered_200_and_not_stored() {
    let hg = Hookgate::start(&config());
    let ping = |agent: &'static str| {
        client()
            .post(hg.url("/hooks/woocommerce"))
            .header("user-agent", agent)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("webhook_id=137")
            .send()
    };
    // As `WC_Webhook::deliver_ping` sends it: WooCommerce keeps the webhook only on a 200.
    let r = ping("WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The same from another agent is an unsigned request.
    let r = ping("curl/8.5.0").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = br#"{"id":727,"status":"processing","billing":{"first_name":"Ada"}}"#;
    let topic = [
        ("x-wc-webhook-topic", "order.created"),
        ("x-wc-webhook-delivery-id", "d-1"),
    ];
    let r = post(
        &hg,
        "woocommerce",
        "woocommerce",
        "wc-webhook-secret",
        body,
        &topic,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        spooled(&hg, "woocommerce"),
        vec!["d-1".to_string()],
        "the order only"
    );
}

#[tokio::test]
async fn trello_head_is_answered_and_signed_posts_need_the_callback_url() {
    let hg = Hookgate::start(&config());
    let r = client().head(hg.url("/hooks/trello")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Signed over body + the registered callback URL (public_url), as Trello does.
    let body = br#"{"action":{"id":"5f1","type":"updateCard"},"model":{"id":"4d5"}}"#;
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        b"trello-app-secret",
    );
    let mut signed = body.to_vec();
    signed.extend_from_slice(b"https://hooks.example.com/hooks/trello");
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ring::hmac::sign(&key, &signed).as_ref(),
    );
    let send = |sig: String| {
        client()
            .post(hg.url("/hooks/trello"))
            .header("content-type", "application/json")
            .header("x-trello-webhook", sig)
            .body(body.to_vec())
            .send()
    };
    assert_eq!(send(sig.clone()).await.unwrap().status(), StatusCode::OK);
    let over_body_only = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        ring::hmac::sign(&key, body).as_ref(),
    );
    assert_eq!(
        send(over_body_only).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(spooled(&hg, "trello").len(), 1, "the HEAD is not an event");
}

#[tokio::test]
async fn okta_verification_get_is_answered_only_with_the_hook_secret() {
    let hg = Hookgate::start(&config());
    let get = |auth: Option<&'static str>| {
        let mut req = client().get(hg.url("/hooks/okta")).header(
            "x-okta-verification-challenge",
            "ZVGI7M2m7x9bx8Yz2wjHLPTSX0rTBOmexVTvoKOB",
        );
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let r = get(Some("okta-hook-secret-value")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"verification": "ZVGI7M2m7x9bx8Yz2wjHLPTSX0rTBOmexVTvoKOB"})
    );
    assert_eq!(
        get(Some("guess")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let body = br#"{"eventType":"com.okta.event_hook","eventId":"b5a188b9-5ece-4636-b041-482ffda96311","data":{"events":[]}}"#;
    let r = post(&hg, "okta", "okta", "okta-hook-secret-value", body, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        spooled(&hg, "okta"),
        vec!["b5a188b9-5ece-4636-b041-482ffda96311".to_string()]
    );
}

/// Adyen expects `[accepted]` as the answer to a stored notification, and to its retries.
#[tokio::test]
async fn adyen_notifications_are_answered_accepted_also_as_duplicates() {
    let hg = Hookgate::start(&config());
    let p = hookgate_ingest::verify::Provider::parse("adyen").unwrap();
    let signed = hookgate_ingest::verify::sign_request(
        p,
        "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
        br#"{"order":"1"}"#,
        now(),
        &hookgate_ingest::verify::Options::default(),
    )
    .unwrap();
    let send = |body: Vec<u8>| {
        client()
            .post(hg.url("/hooks/adyen"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for _ in 0..2 {
        let r = send(signed.body.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "[accepted]");
    }
    let tampered = String::from_utf8(signed.body.clone())
        .unwrap()
        .replace("1130", "1131");
    let r = send(tampered.into_bytes()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(spooled(&hg, "adyen").len(), 1, "the retry is a duplicate");
}

#[tokio::test]
async fn graph_validation_token_is_echoed_as_text_and_notifications_need_the_client_state() {
    let hg = Hookgate::start(&config());
    let validate = |query: &str| {
        client()
            .post(hg.url(&format!("/hooks/graph?validationToken={query}")))
            .header("content-type", "text/plain")
            .send()
    };
    let r = validate("Validation%3a+Testing+client+application+reachability")
        .await
        .unwrap();
    assert_eq!(
        plain_text(r).await,
        "Validation: Testing client application reachability"
    );
    let r = validate("%3Chtml%3E").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no HTML is reflected");
    let note = |state: &str| {
        client()
            .post(hg.url("/hooks/graph"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"value":[{{"subscriptionId":"s1","clientState":"{state}","changeType":"created","resource":"Users/1/messages/2"}}]}}"#
            ))
            .send()
    };
    assert_eq!(
        note("secretClientValue").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        note("guess").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(spooled(&hg, "graph").len(), 1);
}

/// A provider that learns its secret from a handshake (the source is named after it).
struct Learning {
    source: &'static str,
    secret: &'static str,
    /// The handshake handing `secret` over.
    handshake: fn(&Hookgate, &str) -> reqwest::RequestBuilder,
    /// Checks the answer to the first handshake (its status is checked already).
    answer: fn(&reqwest::Response, &str),
    /// A later handshake's secret, and how it is refused.
    attacker: &'static str,
    again: (StatusCode, Option<&'static str>),
    /// Two events: one sent before the restart, one after.
    events: [&'static [u8]; 2],
}

/// Before the handshake nothing verifies; the handshake stores the secret under the spool
/// directory; events then verify with it (another secret: 401); a later handshake cannot
/// replace it (trust on first use) and changes nothing; after a restart the learned secret
/// still verifies; handshakes are not events; the secret never appears in the output.
async fn learns_the_secret_once(l: Learning) {
    let mut hg = Hookgate::start(&config());
    let [before_restart, after_restart] = l.events;
    let r = post(&hg, l.source, l.source, l.secret, before_restart, &[]).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "before the handshake nothing verifies"
    );
    let r = (l.handshake)(&hg, l.secret).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    (l.answer)(&r, l.secret);
    let file = hg
        .dir()
        .join(format!("spool/learned-secrets/{}.secret", l.source));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), l.secret);
    let secrets = (l.secret, "someone-else");
    post_signed_only(&hg, (l.source, l.source), secrets, before_restart, &[]).await;
    let r = (l.handshake)(&hg, l.attacker).send().await.unwrap();
    match l.again {
        (status, Some(code)) => refused(r, status, code).await,
        (status, None) => assert_eq!(r.status(), status),
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), l.secret);
    hg.restart();
    let r = post(&hg, l.source, l.source, l.secret, after_restart, &[]).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the learned secret survives a restart"
    );
    assert_eq!(spooled(&hg, l.source).len(), 2, "handshakes are not events");
    assert!(
        !hg.output().contains(l.secret),
        "the learned secret appears in hookgate's output"
    );
}

/// Asana's handshake sets the secret on first contact (stored under the spool directory,
/// echoed, never logged); later events verify with it, also after a restart; a second
/// handshake is refused 409.
#[tokio::test]
async fn asana_handshake_learns_the_secret_once_and_keeps_it_across_restarts() {
    learns_the_secret_once(Learning {
        source: "asana",
        secret: "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81",
        handshake: |hg, secret| {
            client()
                .post(hg.url("/hooks/asana"))
                .header("x-hook-secret", secret.to_owned())
        },
        answer: |r, secret| assert_eq!(r.headers()["x-hook-secret"], secret),
        attacker: "attacker-chosen-secret",
        again: (StatusCode::CONFLICT, Some("secret_already_set")),
        events: [
            br#"{"events":[{"action":"changed","resource":{"gid":"1","resource_type":"task"}}]}"#,
            br#"{"events":[{"action":"added","resource":{"gid":"2","resource_type":"task"}}]}"#,
        ],
    })
    .await;
}

/// Notion's verification request (an unsigned body holding only `verification_token`) sets
/// the secret on first contact, stored under the spool directory for the user to paste into
/// Notion and never logged; events then verify with `X-Notion-Signature`, also after a
/// restart; a later unsigned verification request is refused and changes nothing.
#[tokio::test]
async fn notion_verification_token_is_learned_once_and_signs_the_events_after_it() {
    learns_the_secret_once(Learning {
        source: "notion",
        secret: "secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl",
        handshake: |hg, token| {
            client()
                .post(hg.url("/hooks/notion"))
                .header("content-type", "application/json")
                .body(format!(r#"{{"verification_token":"{token}"}}"#))
        },
        answer: |_, _| {},
        attacker: "secret_attacker",
        again: (StatusCode::UNAUTHORIZED, None),
        events: [
            br#"{"id":"367cba44-b6f3-4c92-81e7-6a2e9659efd4","timestamp":"2024-12-05T23:55:34.285Z","type":"page.content_updated","entity":{"id":"153104cd-477e-809d-8dc4-ff2d96ae3090","type":"page"}}"#,
            br#"{"id":"c7e2b8f1-0000-4c92-81e7-6a2e9659efd4","timestamp":"2024-12-05T23:57:00.000Z","type":"page.created","entity":{"id":"253104cd-477e-809d-8dc4-ff2d96ae3090","type":"page"}}"#,
        ],
    })
    .await;
}

/// Rich notifications with `encryption_key_file`: a notification whose `encryptedContent`
/// is signed (HMAC-SHA256 of `data`) with the key the source's private key decrypts is
/// stored as received; the same with one bit of `dataSignature` changed is refused; the
/// private key never appears in hookgate's output.
#[tokio::test]
async fn graph_rich_notifications_are_checked_with_the_encryption_key() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let private = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("graph-key.pem"), &private).unwrap();
    let hg = Hookgate::start_in(
        dir.path(),
        r#"
[server]
listen = "{listen}"

[spool]
path = "{dir}/spool"

[[sources]]
name = "graph-rich"
provider = "microsoft-graph"
secrets = ["secretClientValue"]
encryption_key_file = "{dir}/graph-key.pem"
encryption_certificate_ids = ["cert-1"]
"#,
        &[],
    );
    let public = rsa.public_key_to_pem().unwrap();
    let content = hookgate_ingest::verify::providers::microsoft_graph::encrypted_content(
        &public,
        br#"{"id":"1565293727947","body":{"content":"hello"}}"#,
        "cert-1",
    )
    .unwrap();
    let body = |content: &Value| {
        serde_json::json!({"value": [{
            "subscriptionId": "76222963-cc7b-42d2-882d-8aaa69cb2ba3",
            "clientState": "secretClientValue",
            "changeType": "created",
            "resource": "teams('1')/channels('2')/messages('3')",
            "encryptedContent": content,
        }]})
        .to_string()
    };
    let send = |body: String| {
        client()
            .post(hg.url("/hooks/graph-rich"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let good = body(&content);
    let r = send(good.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64
        .decode(content["dataSignature"].as_str().unwrap())
        .unwrap();
    sig[7] ^= 0x01;
    let mut tampered = content.clone();
    tampered["dataSignature"] = Value::String(b64.encode(&sig));
    let r = send(body(&tampered)).await.unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "signature_invalid").await;
    let mut malformed = content.clone();
    malformed["dataKey"] = Value::String("not base64!".into());
    let r = send(body(&malformed)).await.unwrap();
    refused(r, StatusCode::UNAUTHORIZED, "signature_malformed").await;
    assert_eq!(spooled(&hg, "graph-rich").len(), 1, "the signed one only");
    let out = hg.cli(&["spool", "read"]);
    let stored: Value = serde_json::from_slice(&out.stdout).expect("one spooled event");
    assert_eq!(
        stored["body"],
        good.as_str(),
        "the body is stored as received"
    );
    // A certificate rotation: the new key is refused until the file holds it and SIGHUP
    // re-reads it; then both keys are accepted.
    let new_rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let for_new_key = || {
        let content = hookgate_ingest::verify::providers::microsoft_graph::encrypted_content(
            &new_rsa.public_key_to_pem().unwrap(),
            br#"{"id":"1565293727948"}"#,
            "cert-1",
        )
        .unwrap();
        body(&content)
    };
    let r = send(for_new_key()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a key not in the file"
    );
    let new_private = String::from_utf8(new_rsa.private_key_to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("graph-key.pem"),
        format!("{private}{new_private}"),
    )
    .unwrap();
    let pid = hg.pid().expect("running").to_string();
    let out = crate::harness::run(
        std::process::Command::new("kill").args(["-HUP", &pid]),
        std::time::Duration::from_secs(10),
    );
    assert!(out.status.success());
    let mut accepted = false;
    for _ in 0..300 {
        if send(for_new_key()).await.unwrap().status() == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "the new key was never accepted: {}", hg.log());
    let again = hookgate_ingest::verify::providers::microsoft_graph::encrypted_content(
        &public,
        br#"{"id":"1565293727949"}"#,
        "cert-1",
    )
    .unwrap();
    let r = send(body(&again)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the old key still decrypts");
    let key_line = private.lines().nth(2).unwrap();
    let new_key_line = new_private.lines().nth(2).unwrap();
    let output = hg.output();
    assert!(
        !output.contains(key_line) && !output.contains(new_key_line),
        "a private key appears in hookgate's output"
    );
}
