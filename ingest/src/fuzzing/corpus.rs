//! Unit tests of the fuzz targets: replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash regressions
//! (`fuzz/regressions/<target>/`) through the same functions the cargo-fuzz targets call
//! (`hookgate_ingest::fuzzing`), on stable, in the normal test suite.
//!
//! `write_seeds` (ignored) writes the seed inputs built from real requests, configs and
//! spool records: `cargo test --workspace --lib -- --ignored fuzzing::corpus::write_seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fuzzing::{self, TARGETS};
use crate::verify::Provider;
use hookgate_sinks::chat::markup::Markup;

fn named(name: &str) -> Provider {
    Provider::parse(name).expect("a registered provider")
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("read corpus dir").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every input of a directory; the name of the file is in the panic message of a
/// failing input.
fn replay(target: &str, run: fn(&[u8]), dir: &Path) -> usize {
    let inputs = files(dir);
    for path in &inputs {
        let data = fs::read(path).expect("read corpus file");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("fuzz target `{target}` fails on {}", path.display());
        }
    }
    inputs.len()
}

#[test]
fn every_corpus_replays() {
    let mut missing = Vec::new();
    for (name, run) in TARGETS {
        let n = replay(name, *run, &fuzz_dir().join("corpus").join(name));
        if n == 0 {
            missing.push(*name);
        }
        replay(name, *run, &fuzz_dir().join("regressions").join(name));
    }
    assert!(
        missing.is_empty(),
        "no corpus for fuzz target(s) {missing:?}: fuzz/corpus/<target>/ must hold inputs"
    );
}

/// The fuzz targets in `fuzz/` and the bodies here are the same list, so a target cannot be
/// added on one side only (and then have nothing replaying its corpus).
#[test]
fn fuzz_targets_match_the_replayed_list() {
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &listed {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}

/// Regressions must be replayed from a directory named after an existing target.
#[test]
fn regression_dirs_name_targets() {
    let Ok(entries) = fs::read_dir(fuzz_dir().join("regressions")) else {
        return;
    };
    for e in entries {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            continue;
        }
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} is not a target"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------

const PUSH: &[u8] = br#"{"ref":"refs/heads/main","repository":{"full_name":"octo/repo","id":1296269},"pusher":{"name":"mona"},"commits":[{"id":"a1","message":"Fix the thing\n\nLong explanation"}]}"#;

fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn verify_seeds() -> Vec<(String, Vec<u8>)> {
    let bodies: [(&str, &[u8]); 4] = [
        ("push", PUSH),
        ("empty", b""),
        ("form", b"token=x&team_id=T1&command=%2Fdeploy&text=now"),
        ("binary", &[0, 1, 2, 0xff, 0xfe, b'\n', b'\n', 0x80]),
    ];
    let mut out = Vec::new();
    for &p in Provider::ALL {
        let flag_set: &[u8] = if p == named("generic-hmac") {
            &[0, 1, 2, 4, 8, 14]
        } else {
            &[0]
        };
        for &flags in flag_set {
            for (name, body) in bodies {
                let signed = fuzzing::signed(p, flags, body);
                let mut headers = signed.headers;
                headers.push(("content-type".into(), "application/json".into()));
                out.push((
                    format!("{}-{flags}-{name}", p.as_str()),
                    fuzzing::encode_verify(p, flags, &headers, &signed.body),
                ));
            }
        }
    }
    // Rotation and multi-signature headers, as providers send them.
    let body = PUSH;
    let mut stripe = fuzzing::signed_headers(named("stripe"), 0, body);
    if let Some((_, v)) = stripe.first_mut() {
        v.push_str(",v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
    }
    out.push((
        "stripe-multi".into(),
        fuzzing::encode_verify(named("stripe"), 0, &stripe, body),
    ));
    let mut std = fuzzing::signed_headers(named("standard-webhooks"), 0, body);
    for (n, v) in &mut std {
        if n.ends_with("signature") {
            v.insert_str(
                0,
                "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,abc ",
            );
        }
    }
    out.push((
        "standard-webhooks-multi".into(),
        fuzzing::encode_verify(named("standard-webhooks"), 0, &std, body),
    ));
    let svix: Vec<(String, String)> = fuzzing::signed_headers(named("standard-webhooks"), 0, body)
        .into_iter()
        .map(|(n, v)| (n.replacen("webhook-", "svix-", 1), v))
        .collect();
    out.push((
        "svix".into(),
        fuzzing::encode_verify(named("standard-webhooks"), 0, &svix, body),
    ));
    out
}

/// Name, provider, overrides (dedupe key, event type, partition key), headers, body.
type ExtractCase<'a> = (
    &'a str,
    Provider,
    [Option<&'a str>; 3],
    Vec<(String, String)>,
    &'a [u8],
);

fn extract_seeds() -> Vec<(String, Vec<u8>)> {
    let json = ("content-type", "application/json");
    let cases: Vec<ExtractCase> = vec![
        (
            "github-push",
            named("github"),
            [None, None, Some("/repository/full_name")],
            s(&[
                ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                ("x-github-event", "push"),
                json,
            ]),
            PUSH,
        ),
        (
            "gitlab",
            named("gitlab"),
            [None, None, Some("/project/path_with_namespace")],
            s(&[
                ("x-gitlab-event-uuid", "13792a34-cac6-4fda-95a8-c58e00a3954e"),
                ("x-gitlab-event", "Push Hook"),
                json,
            ]),
            br#"{"object_kind":"push","project":{"id":15,"path_with_namespace":"group/app"}}"#,
        ),
        (
            "stripe",
            named("stripe"),
            [None, None, Some("/data/object/customer")],
            s(&[json]),
            br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"charge.succeeded","data":{"object":{"id":"ch_1","amount":2000,"customer":"cus_9","paid":true,"refunds":[]}},"livemode":false,"created":1686089970}"#,
        ),
        (
            "shopify",
            named("shopify"),
            [None, None, None],
            s(&[
                ("x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
                ("x-shopify-topic", "orders/create"),
                json,
            ]),
            br#"{"id":820982911946154508,"email":"jon@example.com","total_price":"403.00"}"#,
        ),
        (
            "slack-event",
            named("slack"),
            [None, None, None],
            s(&[json]),
            br#"{"token":"x","team_id":"T1","type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"<@U1> hi","ts":"1515449522.000016"}}"#,
        ),
        (
            "slack-challenge",
            named("slack"),
            [None, None, None],
            s(&[json]),
            br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#,
        ),
        (
            "slack-form",
            named("slack"),
            [None, None, None],
            s(&[("content-type", "application/x-www-form-urlencoded")]),
            b"token=x&team_id=T1&command=%2Fdeploy&text=now",
        ),
        (
            "standard-webhooks",
            named("standard-webhooks"),
            [None, None, Some("/data/id")],
            s(&[("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"), json]),
            br#"{"type":"invoice.paid","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"inv_1","amount":[1,2.5,-3e2,null,true]}}"#,
        ),
        (
            "telegram",
            named("telegram"),
            [None, None, Some("/message/chat/id")],
            s(&[json]),
            br#"{"update_id":10000,"message":{"message_id":1365,"chat":{"id":-1001234567890,"type":"group"},"text":"/start \u00e9\ud83d\ude00"}}"#,
        ),
        (
            "discord-ping",
            named("discord"),
            [None, None, None],
            s(&[json]),
            br#"{"type":1,"id":"787053080478613555","application_id":"7"}"#,
        ),
        (
            "discord-command",
            named("discord"),
            [None, None, Some("/guild_id")],
            s(&[("content-type", "application/json; charset=utf-8")]),
            br#"{"type":2,"id":"787053080478613556","guild_id":"290926798626357999","data":{"name":"ping","options":[]}}"#,
        ),
        (
            "generic-overrides",
            named("generic-hmac"),
            [Some("header:x-request-id"), Some("/a~1b/0"), Some("/~0key")],
            s(&[("x-request-id", "7"), ("content-type", "application/cloudevents+json")]),
            br#"{"a/b":["ev",2],"~key":{"deep":[[[]]]}}"#,
        ),
        (
            "generic-body-hash",
            named("generic-hmac"),
            [None, None, None],
            s(&[]),
            b"not json at all",
        ),
        (
            "generic-pointer-root",
            named("generic-hmac"),
            [Some("/0/"), Some("/1"), Some("")],
            s(&[json]),
            br#"[{"":1},"x",18446744073709551615,1.5e308]"#,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, p, overrides, headers, body)| {
            (
                name.to_string(),
                fuzzing::encode_extract(p, overrides, &headers, body),
            )
        })
        .collect()
}

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let embedded = crate::config::EMBEDDED;
    let kafka = include_str!("../../../deploy/examples/kafka.toml");
    let chat = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["${GH_SECRET}", "old-secret"]
keep_headers = ["x-github-hook-id"]

[[sources]]
name = "partner"
provider = "generic-hmac"
secrets = ["k1"]
signature_header = "x-signature"
algorithm = "sha512"
encoding = "base64"
prefix = "sha512="
dedupe_key = "header:x-request-id"
event_type = "/type"

[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "${TG_TOKEN:-123:ABC}"
chat_id = "-1001234567890"
parse_mode = "HTML"

[[sinks]]
name = "ops-discord"
type = "discord"
webhook_url = "https://discord.com/api/webhooks/ID/TOKEN"
max_attempts = 3
max_age = "24h"

[[sinks]]
name = "forward"
type = "http"
url = "https://example.com/in"
signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[[sinks]]
name = "assistant"
type = "llm"
api_url = "http://127.0.0.1:11434/v1"
model = "llama3.1"
history = 20
reply_via = "team-chat"

[[routes]]
source = "github"
events = ["push"]
when = { "/ref" = "refs/heads/main" }
sink = "team-chat"
template = "{{ pusher.name }} pushed {{ commits | length }} commit(s)"

[[routes]]
source = "partner"
sinks = ["assistant", "forward"]
"#;
    let admin = "[server]\nlisten = \"127.0.0.1:8080\"\nmax_headers = 64\nshutdown_timeout = \"30s\"\n[[sources]]\nname = \"gl\"\nprovider = \"gitlab\"\nsecrets = [\"t\"]\ntolerance = \"1m\"\nallow_ips = [\"10.0.0.0/8\", \"::1/128\"]\n[admin]\nlisten = \"127.0.0.1:9090\"\n[dedupe]\nttl = \"1h\"\n[spool]\npath = \"/var/lib/hookgate\"\nmax_bytes = \"10GiB\"\nretention = \"7d\"\n[bench]\ndiscard = true\n";
    vec![
        (
            "embedded".to_string(),
            fuzzing::encode_config(&[("HOOKGATE_GITHUB_SECRET", "s3cret")], embedded),
        ),
        (
            "embedded-overrides".to_string(),
            fuzzing::encode_config(
                &[
                    ("HOOKGATE__SERVER__LISTEN", "0.0.0.0:9000"),
                    ("HOOKGATE__SOURCES__0__TOPIC", "gh"),
                    ("HOOKGATE__DEDUPE__TTL", "5m"),
                ],
                embedded,
            ),
        ),
        (
            "kafka".to_string(),
            fuzzing::encode_config(
                &[
                    ("KAFKA_BROKERS", "10.0.0.1:9092,10.0.0.2:9092"),
                    ("KAFKA_USER", "hookgate"),
                    ("KAFKA_PASSWORD", "pw"),
                    ("GITHUB_SECRET", "gh-secret"),
                    ("STRIPE_SECRET", "whsec_stripe"),
                    ("TELEGRAM_SECRET", "tg-secret_1"),
                    ("TELEGRAM_BOT_TOKEN", "123:ABC"),
                    ("HOOKGATE__KAFKA__DEFAULT_TOPIC", "hooks"),
                ],
                kafka,
            ),
        ),
        (
            "chat".to_string(),
            fuzzing::encode_config(&[("GH_SECRET", "abc")], chat),
        ),
        ("admin".to_string(), fuzzing::encode_config(&[], admin)),
        (
            "bad".to_string(),
            fuzzing::encode_config(
                &[("HOOKGATE__NOPE", "1")],
                "[server]\nlisten = 5\nunknown = true\n[[sources]]\nname = \"x\"\nprovider = \"nope\"\nsecrets = [\"${MISSING}\"]\n",
            ),
        ),
    ]
}

fn events() -> Vec<hookgate_proto::Event> {
    let mut a = fuzzing::sample_event(1, PUSH);
    let mut b = fuzzing::sample_event(2, &[0, 159, 146, 150, 0xff]);
    b.content_type = None;
    b.kept_headers.clear();
    b.event_type.clear();
    let mut c = fuzzing::sample_event(3, b"");
    c.kept_headers
        .push(("x-two".into(), bytes::Bytes::from_static(b"")));
    a.received_at_ms = 1_700_000_000_000;
    vec![a, b, c]
}

fn event_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, ev) in events().iter().enumerate() {
        out.push((format!("frame-{i}"), fuzzing::encode_event_frame(ev)));
        out.push((format!("record-{i}"), fuzzing::encode_event_record(ev)));
    }
    out
}

/// Segments written by the spool itself: a few appends, then the segment file's bytes;
/// and the same with a damaged record in the middle and with a torn tail.
fn spool_seeds() -> Vec<(String, Vec<u8>)> {
    use hookgate_sinks::log::spool::{Spool, SpoolConfig};
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        path: dir.path().join("spool"),
        ..SpoolConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = Spool::open(&cfg).unwrap();
        for ev in events() {
            spool.append(&ev).await.unwrap();
        }
    });
    let seg = files(&cfg.path)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment file");
    let data = fs::read(seg).unwrap();
    let mut damaged = data.clone();
    let mid = data.len() / 2;
    damaged[mid] ^= 0x40;
    let torn = data[..data.len() - 7].to_vec();
    vec![
        ("segment".into(), data),
        ("segment-damaged".into(), damaged),
        ("segment-torn".into(), torn),
    ]
}

fn markup_seeds() -> Vec<(String, Vec<u8>)> {
    let long =
        "The deploy of octo/repo finished.\nEverything is fine; nothing to see here. ".repeat(8);
    let cases: [(&str, Markup, u8, String); 7] = [
        ("plain", Markup::Plain, 64, long.clone()),
        (
            "html",
            Markup::TelegramHtml,
            48,
            "<b>mona</b> pushed <a href=\"https://example.com/a?b=1&amp;c=2\">3 commits</a> &lt;main&gt; <i>nested <u>tags</u> here</i> <pre><code class=\"language-rust\">fn main() {}</code></pre> ".repeat(4),
        ),
        (
            "mdv2",
            Markup::TelegramMarkdownV2,
            32,
            "*bold* _it_ \\*not\\* `code` [link](https://x\\.y) \\\\ end\\. ".repeat(5),
        ),
        (
            "discord",
            Markup::Discord,
            40,
            "**bold** ~~gone~~ ||spoiler|| > quote\n```\ncode\n``` \\* ".repeat(5),
        ),
        (
            "slack",
            Markup::Slack,
            24,
            "<https://example.com|link> &amp; *b* _i_ ~s~ <@U123> ".repeat(5),
        ),
        (
            "utf16",
            Markup::TelegramHtml,
            16,
            "ä😀é𝄞 中文 <b>😀😀😀😀</b> &amp;😀".repeat(6),
        ),
        ("no-spaces", Markup::Plain, 16, "x".repeat(100)),
    ];
    cases
        .into_iter()
        .map(|(name, m, max, text)| (name.to_string(), fuzzing::encode_markup(m, max, &text)))
        .collect()
}

fn proxy_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // PROXY, TCP over IPv4, 12 address bytes plus a 7-byte TLV (authority "a.b").
    v2.extend_from_slice(&[0x21, 0x11, 0, 19]);
    v2.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1, 0xc3, 0x50, 0x1f, 0x90]);
    v2.extend_from_slice(&[0x02, 0, 4, b'a', b'.', b'b', b'c']);
    v2.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let mut v2_6 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2_6.extend_from_slice(&[0x21, 0x21, 0, 36]);
    v2_6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v2_6.extend_from_slice(&[0; 15]);
    v2_6.extend_from_slice(&[1, 0x30, 0x39, 0x01, 0xbb]);
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let with = |sel: u8, body: &[u8]| {
        let mut d = vec![sel];
        d.extend_from_slice(body);
        d
    };
    vec![
        (
            "v1-tcp4".into(),
            with(
                0,
                b"PROXY TCP4 192.0.2.7 127.0.0.1 50000 8080\r\nGET / HTTP/1.1\r\n",
            ),
        ),
        (
            "v1-tcp6".into(),
            with(0, b"PROXY TCP6 2001:db8::1 ::1 50000 443\r\n"),
        ),
        ("v1-unknown".into(), with(0, b"PROXY UNKNOWN\r\n")),
        ("v2-tcp4-tlv".into(), with(0, &v2)),
        ("v2-tcp6".into(), with(0, &v2_6)),
        ("v2-local".into(), with(0, &local)),
        ("xff".into(), with(1, b"203.0.113.9, 10.1.2.3, 127.0.0.1")),
        (
            "forwarded".into(),
            with(
                1,
                b"for=198.51.100.17;proto=https, for=\"[2001:db8::2]:4711\", for=unknown",
            ),
        ),
    ]
}

/// Writes the seed inputs into `fuzz/corpus/<target>/seed-<name>` (run before fuzzing a
/// fresh checkout, or to refresh the seeds after an input layout changes).
#[test]
#[ignore = "writes files into fuzz/corpus; run on purpose"]
fn write_seeds() {
    let sets = [
        ("verify", verify_seeds()),
        ("extract", extract_seeds()),
        ("config", config_seeds()),
        ("event", event_seeds()),
        ("spool", spool_seeds()),
        ("markup", markup_seeds()),
        ("proxy", proxy_seeds()),
    ];
    for (target, seeds) in sets {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

/// The seeds are real, accepted inputs, not just bytes: signed requests verify, extraction
/// finds events, configs parse, frames and segments decode. (The targets' own assertions
/// run on all of them too.)
#[test]
fn seeds_are_real_inputs() {
    for (name, data) in verify_seeds() {
        assert_eq!(
            fuzzing::verify_outcome(&data),
            Some(Ok(())),
            "verify seed {name}"
        );
    }
    for (name, data) in extract_seeds() {
        assert!(
            matches!(fuzzing::extract_outcome(&data), Some(Ok(_))),
            "extract seed {name}: {:?}",
            fuzzing::extract_outcome(&data)
        );
    }
    let spool = spool_seeds();
    let events = hookgate_sinks::log::spool::fuzzing::segment(&spool[0].1);
    assert_eq!(
        events,
        self::events(),
        "the spool seed reads back what was appended"
    );
    let damaged = hookgate_sinks::log::spool::fuzzing::segment(&spool[1].1);
    assert_eq!(
        damaged.len(),
        2,
        "the damaged record is padded, the others read"
    );
    let torn = hookgate_sinks::log::spool::fuzzing::segment(&spool[2].1);
    assert_eq!(torn.len(), 2, "the torn tail is cut");
    for (name, data) in config_seeds() {
        let outcome = fuzzing::config_outcome(&data);
        if name == "bad" {
            assert!(matches!(outcome, Some(Err(_))), "{outcome:?}");
        } else {
            assert_eq!(outcome, Some(Ok(())), "config seed {name}");
        }
    }
    for (_, data) in event_seeds() {
        fuzzing::event(&data);
    }
    for (_, data) in markup_seeds() {
        fuzzing::markup(&data);
    }
    for (name, data) in proxy_seeds() {
        let (sel, rest) = data.split_first().unwrap();
        if sel % 2 == 0 {
            assert!(
                matches!(crate::edge::proxy::parse(rest), Ok(Some(_))),
                "proxy seed {name} is a complete PROXY header"
            );
        }
    }
}
