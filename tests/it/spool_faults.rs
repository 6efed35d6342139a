//! The spool under pressure, with the real binary: retention when nothing reads the spool,
//! 503 `spool_full` when a registered consumer lags, a real full filesystem (a small tmpfs),
//! a body limit no spool record can hold, and recovery after `kill -9` from a corrupt
//! record and a torn dedupe id line. Each test reconciles what got a 2xx with what
//! `hookgate spool read` shows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{client, Hookgate};
use crate::ingest::post_github;

/// A signed-push body of about `size` bytes.
/// A push of about `size` bytes of its own for `delivery` (GitHub signs only the body: the
/// same body under another delivery id would be a replay).
fn body(delivery: &str, size: usize) -> Vec<u8> {
    serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "octo/hello"},
        "pusher": {"name": "mona"},
        "commits": [],
        "delivery": delivery,
        "pad": "x".repeat(size),
    })
    .to_string()
    .into_bytes()
}

const SOURCE: &str = r#"
[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#;

/// `hookgate spool <cmd>` against the instance's config; its stdout.
fn spool_cli(hg: &Hookgate, cmd: &str) -> String {
    let out = hg.cli(&["spool", cmd]);
    assert!(
        out.status.success(),
        "spool {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stats(hg: &Hookgate) -> Value {
    serde_json::from_str(&spool_cli(hg, "stats")).expect("stats JSON")
}

/// `(delivery id, hookgate id)` of every spooled event, oldest first.
fn spooled(hg: &Hookgate) -> Vec<(String, String)> {
    spool_cli(hg, "read")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("spool read JSON");
            (
                v["delivery_id"].as_str().unwrap_or_default().to_owned(),
                v["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Every acknowledged delivery is spooled exactly once, with the id its 2xx reported.
fn assert_all_spooled(hg: &Hookgate, acked: &HashMap<String, String>) {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for (delivery, id) in spooled(hg) {
        seen.entry(delivery).or_default().push(id);
    }
    for (delivery, id) in acked {
        assert_eq!(
            seen.get(delivery),
            Some(&vec![id.clone()]),
            "acknowledged delivery {delivery} is not in the spool exactly once with id {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_reading_the_spool_the_oldest_events_make_room() {
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\n\n[spool]\npath = \"{{dir}}/spool\"\nmax_bytes = \"64KiB\"\nsegment_bytes = \"8KiB\"\n{SOURCE}"
    );
    let hg = Hookgate::start(&cfg);
    let c = client();
    let mut order = Vec::new();
    let mut ids = HashMap::new();
    // About three times max_bytes, one after another.
    for n in 0..200 {
        let delivery = format!("keep-{n}");
        let (status, v, _) = post_github(&c, &hg, &delivery, &body(&delivery, 900)).await;
        assert_eq!(status, 200, "event {n} past max_bytes: {v}");
        ids.insert(
            delivery.clone(),
            v["id"].as_str().unwrap_or_default().to_owned(),
        );
        order.push(delivery);
    }
    let s = stats(&hg);
    assert!(s["bytes"].as_u64().unwrap() <= 64 << 10, "{s}");
    assert!(s["start_offset"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["consumers"], serde_json::json!([]), "{s}");
    // What is left is the newest events, in order, with their ids; the oldest are gone.
    let left = spooled(&hg);
    assert!(
        left.len() > 10 && left.len() < order.len(),
        "{}",
        left.len()
    );
    let tail = &order[order.len() - left.len()..];
    let got: Vec<&str> = left.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(got, tail);
    for (d, id) in &left {
        assert_eq!(&ids[d], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_registered_consumer_holds_its_events_and_ingest_answers_503() {
    // The forwarder is registered (Kafka with ack = "spool") and its broker is down: it
    // reads nothing, so nothing may be dropped for it.
    let dead = crate::harness::free_port();
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\n\n[kafka]\nbrokers = \"127.0.0.1:{dead}\"\nack = \"spool\"\nretry_after_secs = 1\n\n[spool]\npath = \"{{dir}}/spool\"\nmax_bytes = \"64KiB\"\nsegment_bytes = \"8KiB\"\n{SOURCE}"
    );
    let hg = Hookgate::start(&cfg);
    let c = client();
    let mut acked = HashMap::new();
    let mut first = None;
    let mut refused = 0;
    for n in 0..200 {
        let delivery = format!("lag-{n}");
        match post_github(&c, &hg, &delivery, &body(&delivery, 900)).await {
            (200, v, _) => {
                assert_eq!(refused, 0, "a 2xx after the spool was full: {v}");
                first.get_or_insert_with(|| delivery.clone());
                acked.insert(delivery, v["id"].as_str().unwrap_or_default().to_owned());
            }
            (503, v, retry) => {
                assert_eq!(v["error"], "spool_full", "{v}");
                assert!(retry.is_some());
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            (s, v, _) => panic!("event {n}: {s} {v}"),
        }
    }
    assert_eq!(refused, 5, "the spool never filled");
    assert!(acked.len() > 10);
    let s = stats(&hg);
    assert_eq!(s["start_offset"], 0, "{s}");
    let fwd = &s["consumers"][0];
    assert_eq!(fwd["name"], "forwarder", "{s}");
    assert_eq!(fwd["registered"], true, "{s}");
    assert_eq!(fwd["lag_bytes"], s["end_offset"], "{s}");
    let left = spooled(&hg);
    assert_eq!(left.first().map(|(d, _)| d.clone()), first);
    assert_eq!(left.len(), acked.len());
    assert_all_spooled(&hg, &acked);
}

/// A tmpfs mounted for one test, unmounted when it ends (also on failure).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs a real small filesystem: `mount -t tmpfs` failed (run the suite as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open cannot keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_every_acknowledged_event_and_recovers() {
    let fs = Tmpfs::mount("12m");
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![7u8; 9 << 20]).expect("filler");
    let spool = fs.path().join("spool");
    let cfg = format!(
        "[server]\nlisten = \"{{listen}}\"\nmax_body_bytes = \"256KiB\"\n\n[spool]\npath = \"{}\"\nmax_bytes = \"1GiB\"\nsegment_bytes = \"1MiB\"\n{SOURCE}",
        spool.display()
    );
    // Declared after the mount, so it stops before the unmount.
    let hg = Hookgate::start(&cfg);
    let c = client();
    let mut acked = HashMap::new();
    let mut refused = 0;
    let mut n = 0;
    while refused < 5 {
        assert!(n < 400, "the disk never filled");
        let delivery = format!("disk-{n}");
        match post_github(&c, &hg, &delivery, &body(&delivery, 100 << 10)).await {
            (200, v, _) => {
                acked.insert(delivery, v["id"].as_str().unwrap_or_default().to_owned());
            }
            (503, v, retry) => {
                assert_eq!(v["error"], "spool_full", "{v}");
                assert!(retry.is_some());
                refused += 1;
            }
            (s, v, _) => panic!("event {n} on a full disk: {s} {v} (0: no answer, crashed?)"),
        }
        n += 1;
    }
    assert!(
        acked.len() > 3,
        "{} acknowledged before the disk filled",
        acked.len()
    );
    let health = c.get(hg.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert_all_spooled(&hg, &acked);

    // Room again: it accepts again, and everything acknowledged is still there.
    std::fs::remove_file(&filler).expect("remove filler");
    let mut after = None;
    for k in 0..50 {
        let delivery = format!("after-{k}");
        match post_github(&c, &hg, &delivery, &body(&delivery, 100 << 10)).await {
            (200, v, _) => {
                acked.insert(delivery, v["id"].as_str().unwrap_or_default().to_owned());
                after = Some(k);
                break;
            }
            (503, _, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            (s, v, _) => panic!("after freeing space: {s} {v}"),
        }
    }
    assert!(after.is_some(), "no 2xx once the disk had room again");
    for k in 0..5 {
        let delivery = format!("more-{k}");
        let (s, v, _) = post_github(&c, &hg, &delivery, &body(&delivery, 100 << 10)).await;
        assert_eq!(s, 200, "{v}");
        acked.insert(delivery, v["id"].as_str().unwrap_or_default().to_owned());
    }
    assert_all_spooled(&hg, &acked);
}

#[test]
fn check_refuses_a_body_limit_no_spool_record_can_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.toml");
    std::fs::write(
        &path,
        format!("[server]\nmax_body_bytes = \"300MiB\"\n\n[spool]\npath = \"spool\"\n{SOURCE}"),
    )
    .expect("config");
    let out = Command::new(crate::harness::hookgate_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run hookgate check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("[server]") && text.contains("spool record holds at most"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_corrupt_record_and_a_torn_id_line_cost_only_themselves() {
    let cfg =
        format!("[server]\nlisten = \"{{listen}}\"\n\n[spool]\npath = \"{{dir}}/spool\"\n{SOURCE}");
    let mut hg = Hookgate::start(&cfg);
    let c = client();
    let mut acked = HashMap::new();
    for n in 0..10 {
        let delivery = format!("crash-{n}");
        let (s, v, _) = post_github(&c, &hg, &delivery, &body(&delivery, 200)).await;
        assert_eq!(s, 200, "{v}");
        acked.insert(delivery, v["id"].as_str().unwrap_or_default().to_owned());
    }
    // Offsets of the records, from the CLI.
    let offsets: Vec<(String, u64)> = spool_cli(&hg, "read")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["delivery_id"].as_str().unwrap().to_owned(),
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets.len(), 10);
    hg.kill();

    // One bit flipped inside the fourth record's payload (a checksum mismatch), and a torn
    // line at the end of the dedupe id file.
    let spool = hg.dir.join("spool");
    let seg = spool.join(format!("{:020}.seg", 0));
    let mut data = std::fs::read(&seg).unwrap();
    data[offsets[3].1 as usize + 8 + 30] ^= 0x10;
    std::fs::write(&seg, &data).unwrap();
    let ids_file = std::fs::read_dir(spool.join("dedupe"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "ids"))
        .expect("dedupe id file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&ids_file)
        .unwrap();
    std::io::Write::write_all(&mut f, b"[1764000000000,\"github\",\"torn-").unwrap();
    drop(f);

    hg.restart();
    acked.remove(&offsets[3].0);
    let left = spooled(&hg);
    assert_eq!(left.len(), 9, "{left:?}");
    assert!(left.iter().all(|(d, _)| d != &offsets[3].0));
    assert_all_spooled(&hg, &acked);
    let s = stats(&hg);
    assert_eq!(s["corrupt_frames"], 1, "{s}");
    assert_eq!(std::fs::read_dir(spool.join("corrupt")).unwrap().count(), 1);

    // The first id accepted after the restart survives the next one.
    let (s, v, _) = post_github(&c, &hg, "after-crash", &body("after-crash", 200)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    let id = v["id"].clone();
    hg.restart();
    let (s, v, _) = post_github(&c, &hg, "after-crash", &body("after-crash", 200)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], true, "{v}");
    assert_eq!(v["id"], id);
    acked.insert(
        "after-crash".into(),
        id.as_str().unwrap_or_default().to_owned(),
    );
    assert_all_spooled(&hg, &acked);
}
