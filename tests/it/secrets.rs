//! Secrets handling, end to end with the binary: `hookgate check` never prints a secret
//! value in its errors, `serve` refuses a public listener with the embedded development
//! secrets, source secrets come from `secrets_file` and are re-read on SIGHUP, and no
//! configured secret reaches a log.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, hookgate_bin, run, wait_within, COMMAND_TIMEOUT};

/// A recognisable secret: if it shows up anywhere, it leaked.
const LEAK: &str = "leakcheck-7f3a9c-value";

fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(hookgate_bin());
    cmd.current_dir(dir.path())
        .arg("check")
        .arg("--config")
        .arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, COMMAND_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_names_the_key_and_never_the_secret_of_a_type_mismatch() {
    // `secrets = "${VAR}"`: a string where the list belongs (the mistake the issue names).
    let (ok, out) = check(
        "[[sources]]\nname = \"gh\"\nprovider = \"github\"\nsecrets = \"${HG_LEAK}\"\n",
        &[("HG_LEAK", LEAK)],
    );
    assert!(!ok, "{out}");
    assert!(!out.contains(LEAK), "the secret leaked: {out}");
    assert!(
        out.contains("[sources][0]: `secrets`: expected a list of strings"),
        "{out}"
    );

    // Other shapes of the same mistake, one config, every problem reported.
    let config = r#"
[kafka]
brokers = "127.0.0.1:9"
[kafka.options]
"sasl.password" = ["${HG_LEAK}"]

[[sources]]
name = "gh"
provider = "github"
secrets = ["ok-secret", 424242424242]

[[sinks]]
name = "tg"
type = "telegram"
bot_token = 313373133731337
chat_id = "1"

[[sinks]]
name = "slack"
type = "slack"
webhook_url = ["${HG_LEAK}"]

[[sinks]]
name = "ai"
type = "llm"
api_url = "http://127.0.0.1:9/v1"
model = "m"
reply_via = "tg"
api_key = { key = "${HG_LEAK}" }
"#;
    let (ok, out) = check(config, &[("HG_LEAK", LEAK)]);
    assert!(!ok, "{out}");
    for leaked in [LEAK, "424242424242", "313373133731337"] {
        assert!(!out.contains(leaked), "{leaked} leaked: {out}");
    }
    assert!(
        out.contains("sasl.password"),
        "names the kafka option: {out}"
    );
    assert!(
        out.contains("[sources][0]: `secrets`: expected a string, found an integer"),
        "{out}"
    );
    assert!(
        out.contains("`bot_token`: expected a string, found an integer"),
        "{out}"
    );
    assert!(
        out.contains("`webhook_url`: expected a string, found a list"),
        "{out}"
    );
    assert!(
        out.contains("`api_key`: expected a string, found a table"),
        "{out}"
    );

    // A misspelt Kafka password option: librdkafka refuses the property, the value stays hidden.
    let (ok, out) = check(
        "[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.options]\n\"sasl.pasword\" = \"${HG_LEAK}\"\n\n[[sources]]\nname = \"gh\"\nprovider = \"github\"\nsecrets = [\"s\"]\n",
        &[("HG_LEAK", LEAK)],
    );
    assert!(
        !ok && out.contains("sasl.pasword") && !out.contains(LEAK),
        "{out}"
    );
}

#[test]
fn check_refuses_inline_and_file_secrets_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gh.secrets");
    std::fs::write(&file, format!("{LEAK}\n")).unwrap();
    let (ok, out) = check(
        &format!(
            "[[sources]]\nname = \"gh\"\nprovider = \"github\"\nsecrets = [\"a\"]\nsecrets_file = \"{}\"\n\n[[sinks]]\nname = \"tg\"\ntype = \"telegram\"\nbot_token = \"1:A\"\nbot_token_file = \"{}\"\nchat_id = \"1\"\n",
            file.display(),
            file.display()
        ),
        &[],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("set `secrets` or `secrets_file`, not both"),
        "{out}"
    );
    assert!(
        out.contains("set `bot_token` or `bot_token_file`, not both"),
        "{out}"
    );
    assert!(!out.contains(LEAK), "{out}");
    // The file forms alone are fine; a missing file is named.
    let (ok, out) = check(
        &format!(
            "[[sources]]\nname = \"gh\"\nprovider = \"github\"\nsecrets_file = \"{}\"\n\n[[sources]]\nname = \"gone\"\nprovider = \"github\"\nsecrets_file = \"{}/missing\"\n",
            file.display(),
            dir.path().display()
        ),
        &[],
    );
    assert!(
        !ok && out.contains("source `gone`: secrets_file: cannot read")
            && !out.contains("source `gh`"),
        "{out}"
    );
    assert!(!out.contains(LEAK), "{out}");
}

/// `hookgate serve` with the embedded config, killed on drop.
struct Serve(Option<Child>);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn embedded_serve(dir: &std::path::Path, listen: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(hookgate_bin());
    cmd.current_dir(dir)
        .arg("serve")
        .env("HOOKGATE__SERVER__LISTEN", listen)
        .env_remove("HOOKGATE_GITHUB_SECRET")
        .env_remove("HOOKGATE_STRIPE_SECRET")
        .env_remove("HOOKGATE_STANDARD_SECRET")
        .env_remove("HOOKGATE_TELEGRAM_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

const PROD_SECRETS: [(&str, &str); 4] = [
    ("HOOKGATE_GITHUB_SECRET", "prod-github-secret-1"),
    ("HOOKGATE_STRIPE_SECRET", "prod-stripe-secret-1"),
    (
        "HOOKGATE_STANDARD_SECRET",
        "whsec_cHJvZHVjdGlvbi1zdGFuZGFyZC1zZWNyZXQ=",
    ),
    ("HOOKGATE_TELEGRAM_SECRET", "prod-telegram-secret-1"),
];

#[test]
fn serve_refuses_a_public_listener_with_development_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let out = run(
        &mut embedded_serve(dir.path(), &listen, &[]),
        COMMAND_TIMEOUT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("dev_secrets_on_public_listener"), "{err}");
    for (var, _) in PROD_SECRETS {
        assert!(err.contains(var), "names {var}: {err}");
    }
    assert!(!err.contains("dev-github-secret"), "{err}");

    // Three set, one left at its default: refused, and only that variable is named.
    let out = run(
        &mut embedded_serve(dir.path(), &listen, &PROD_SECRETS[..3]),
        COMMAND_TIMEOUT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("HOOKGATE_TELEGRAM_SECRET") && !err.contains("HOOKGATE_GITHUB_SECRET"),
        "{err}"
    );
}

/// Starts `cmd` and waits for its `listening on` line; the process is killed on drop.
fn starts(mut cmd: Command) -> Serve {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.starts_with("listening on ") {
                let _ = tx.send(());
            }
        }
    });
    let mut serve = Serve(Some(child));
    if rx.recv_timeout(COMMAND_TIMEOUT).is_err() {
        let c = serve.0.as_mut().unwrap();
        let exited = wait_within(c, Duration::from_millis(1));
        let mut err = String::new();
        if exited.is_some() {
            if let Some(mut e) = c.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
        }
        panic!("hookgate did not start (exit: {exited:?}): {err}");
    }
    serve
}

#[test]
fn serve_with_development_secrets_is_fine_on_loopback_and_real_secrets_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let _loopback = starts(embedded_serve(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        &[],
    ));
    let dir2 = tempfile::tempdir().unwrap();
    let _public = starts(embedded_serve(
        dir2.path(),
        &format!("0.0.0.0:{}", free_port()),
        &PROD_SECRETS,
    ));
}

async fn post_github(hg: &crate::harness::Hookgate, secret: &str, delivery: &str) -> u16 {
    let body = br#"{"zen":"rotate"}"#;
    let mut req = crate::harness::client()
        .post(hg.url("/hooks/github"))
        .header("x-github-event", "ping")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in crate::harness::sign("github", secret, body, crate::harness::now()) {
        req = req.header(k, v);
    }
    req.send().await.expect("an answer").status().as_u16()
}

fn hup(hg: &crate::harness::Hookgate) {
    let pid = hg.pid().expect("running").to_string();
    let out = run(Command::new("kill").args(["-HUP", &pid]), COMMAND_TIMEOUT);
    assert!(out.status.success());
}

/// Polls `f` until it holds, at most `tries` times a short pause apart (a bound, not an
/// expected duration).
async fn eventually<F, Fut>(tries: u32, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_file_is_reread_on_sighup_and_a_bad_file_keeps_the_old_secrets() {
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("gh.secrets");
    std::fs::write(&file, "# the current secret\nold-secret-1111\n").unwrap();
    let hg = crate::harness::Hookgate::start_in(
        &dir,
        "[server]\nlisten = \"{listen}\"\n\n[spool]\npath = \"{dir}/spool\"\n\n[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets_file = \"{dir}/gh.secrets\"\n",
        &[],
    );
    assert_eq!(post_github(&hg, "old-secret-1111", "d-1").await, 200);
    assert_eq!(post_github(&hg, "new-secret-2222", "d-2").await, 401);

    // Rotation: both during the overlap, then only the new one.
    std::fs::write(&file, "new-secret-2222\nold-secret-1111\n").unwrap();
    hup(&hg);
    let mut n = 0;
    assert!(
        eventually(300, || {
            n += 1;
            let d = format!("d-3-{n}");
            let hg = &hg;
            async move { post_github(hg, "new-secret-2222", &d).await == 200 }
        })
        .await,
        "the new secret was never accepted: {}",
        hg.log()
    );
    assert_eq!(post_github(&hg, "old-secret-1111", "d-4").await, 200);
    std::fs::write(&file, "new-secret-2222\n").unwrap();
    hup(&hg);
    let mut n = 0;
    assert!(
        eventually(300, || {
            n += 1;
            let d = format!("d-5-{n}");
            let hg = &hg;
            async move { post_github(hg, "old-secret-1111", &d).await == 401 }
        })
        .await,
        "the old secret stayed valid: {}",
        hg.log()
    );
    let ok_reloads =
        crate::harness::metric(&hg, "hookgate_secret_reloads_total{result=\"ok\"}").await;
    assert_eq!(ok_reloads, 2.0);

    // A failed re-read (only comments; then no file at all) keeps the new secret in force.
    std::fs::write(&file, "# emptied by mistake\n\n").unwrap();
    hup(&hg);
    assert!(
        eventually(300, || async {
            crate::harness::metric(&hg, "hookgate_secret_reloads_total{result=\"error\"}").await
                >= 1.0
        })
        .await,
        "no failed reload counted: {}",
        hg.log()
    );
    std::fs::remove_file(&file).unwrap();
    hup(&hg);
    assert!(
        eventually(300, || async {
            crate::harness::metric(&hg, "hookgate_secret_reloads_total{result=\"error\"}").await
                >= 2.0
        })
        .await
    );
    assert_eq!(post_github(&hg, "new-secret-2222", "d-6").await, 200);
    assert_eq!(post_github(&hg, "old-secret-1111", "d-7").await, 401);
    let log = hg.log();
    assert!(
        log.contains("previous secrets stay in force") && log.contains("holds no secret"),
        "{log}"
    );
    for s in ["old-secret-1111", "new-secret-2222"] {
        assert!(!log.contains(s), "{s} in the log");
    }
}

/// The log scan has something to find: debug logging, chat sinks whose APIs refuse the
/// token (401) and an LLM API that refuses its key, a Kafka option password, a source
/// secret from a file. The harness checks on drop that none of these secrets appears in
/// hookgate's stdout or stderr; this test also checks that the scan saw them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_scan_finds_no_secret_with_debug_logging_and_failing_tokens() {
    use crate::fakes::{FakeOpenAi, FakeSlack, FakeTelegram, Reply};
    let (tg, slack, ai) = (
        FakeTelegram::start().await,
        FakeSlack::start().await,
        FakeOpenAi::start().await,
    );
    let unauthorized = |body: &str| Reply::Raw {
        status: 401,
        headers: vec![],
        body: body.to_owned(),
    };
    tg.push_n(
        unauthorized(r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#),
        50,
    );
    slack.push_n(unauthorized("invalid_token"), 50);
    ai.push_n(
        unauthorized(r#"{"error":{"message":"Incorrect API key provided: sk-scan-LLMKEY-0042"}}"#),
        50,
    );
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("tg.secrets"), "tg-source-secret-from-file\n").unwrap();
    let config = format!(
        r#"
[server]
listen = "{{listen}}"

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "telegram"
provider = "telegram"
secrets_file = "{{dir}}/tg.secrets"

[[sources]]
name = "github"
provider = "github"
secrets = ["${{HG_SCAN_GH_SECRET}}"]

[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "4711:SCAN-BOT-TOKEN-secret"
chat_id = "-1001"
api_url = "{tg}"
max_attempts = 2
backoff_base = "10ms"
chat_interval = "10ms"

[[sinks]]
name = "slack"
type = "slack"
webhook_url = "{slack}"
max_attempts = 2
backoff_base = "10ms"
interval = "10ms"

[[sinks]]
name = "assistant"
type = "llm"
api_url = "{ai}"
model = "m"
api_key = "sk-scan-LLMKEY-0042"
reply_via = "team-chat"
allow_chats = ["*"]
max_attempts = 2
backoff_base = "10ms"

[[routes]]
source = "github"
sinks = ["team-chat", "slack"]
template = "push"

[[routes]]
source = "telegram"
sink = "assistant"
"#,
        tg = tg.api_url(),
        slack = slack.webhook_url(),
        ai = ai.api_url(),
    );
    let hg = crate::harness::Hookgate::start_in(
        &dir,
        &config,
        &[
            ("HOOKGATE_LOG", "debug"),
            ("HG_SCAN_GH_SECRET", "gh-scan-secret-0815"),
        ],
    );
    let secrets = hg.secrets().to_vec();
    for s in [
        "tg-source-secret-from-file",
        "gh-scan-secret-0815",
        "4711:SCAN-BOT-TOKEN-secret",
        "sk-scan-LLMKEY-0042",
    ] {
        assert!(
            secrets.iter().any(|x| x == s),
            "the scan misses {s}: {secrets:?}"
        );
    }
    assert!(secrets.iter().any(|x| *x == slack.webhook_url()));

    assert_eq!(post_github(&hg, "gh-scan-secret-0815", "scan-1").await, 200);
    let update = serde_json::json!({"update_id": 1, "message": {"message_id": 1, "date": 1,
        "from": {"id": 5, "is_bot": false}, "chat": {"id": 5, "type": "private"}, "text": "hi"}});
    let resp = crate::harness::client()
        .post(hg.url("/hooks/telegram"))
        .header(
            "x-telegram-bot-api-secret-token",
            "tg-source-secret-from-file",
        )
        .header("content-type", "application/json")
        .body(update.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Wait until every sink has failed for good (dead-lettered), so the failures were logged.
    assert!(
        eventually(300, || async {
            tg.count() >= 1
                && slack.count() >= 1
                && ai.count() >= 1
                && hg.log().matches("dead-lettering").count() >= 3
        })
        .await,
        "the sinks were not tried: tg {} slack {} ai {}\n{}",
        tg.count(),
        slack.count(),
        ai.count(),
        hg.log()
    );
    let output = hg.output();
    assert!(output.contains("DEBUG"), "debug logging is on");
    assert!(output.contains("401"), "the refusals were logged: {output}");
    // `hg` drops here: the harness's scan fails the test if any secret above was logged.
}
