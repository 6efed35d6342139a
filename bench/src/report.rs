//! The result of one load run (what `hookgate-load --json FILE` writes) and the markdown
//! table of several runs, each compared with the bare-hyper ceiling.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// What `--verify-kafka` found after the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KafkaCheck {
    /// Topic read.
    pub topic: String,
    /// Records read from the beginning to the high watermark (all runs on this topic).
    pub records: u64,
    /// Records whose `hookgate-id` this run was answered with.
    pub records_of_run: u64,
    /// Ids answered 200 `"duplicate":false` in this run that are not in the topic.
    pub missing: u64,
    /// `hookgate-id`s that appear in more than one record.
    pub written_twice: u64,
    /// Delivery ids of this run that appear under more than one `hookgate-id`
    /// (a dedupe failure, as opposed to a producer retry).
    pub delivery_ids_twice: u64,
}

/// One load run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario name (the `--label`).
    pub label: String,
    /// Target URL.
    pub url: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Provider whose requests were sent.
    pub provider: String,
    /// Body size asked for, bytes.
    pub body_bytes: usize,
    /// Share of sends that repeat an earlier delivery id.
    pub dup_ratio: f64,
    /// HTTP/1.1 keep-alive connections.
    pub connections: usize,
    /// Open loop: the intended rate, requests per second.
    pub target_rate: Option<f64>,
    /// Measured seconds (after warm-up).
    pub duration_s: f64,
    /// Responses received in the measured window.
    pub requests: u64,
    /// Responses per second in the measured window.
    pub rps: f64,
    /// Every status code seen, with counts (measured window).
    pub status: BTreeMap<String, u64>,
    /// Responses whose status was not 2xx (measured window).
    pub non_2xx: u64,
    /// Transport failures: connect, I/O, timeouts (whole run).
    pub errors: BTreeMap<String, u64>,
    /// Latency; in open loop measured from each request's intended send time.
    pub latency_us: Latency,
    /// Open loop: how late the generator's timer woke each send (part of the latency
    /// above; tokio's timer has 1 ms granularity).
    #[serde(default)]
    pub sched_lag_us: Option<Latency>,
    /// 200 answers with `"duplicate":false` (whole run, warm-up included).
    pub accepted: u64,
    /// 200 answers with `"duplicate":true` (whole run).
    pub duplicates: u64,
    /// Sends that repeated the delivery id of the connection's previous new send, after
    /// that send's exchange ended (`--dup-ratio`; whole run). Against hookgate each is
    /// answered as a duplicate when that earlier send was accepted.
    #[serde(default)]
    pub resent: u64,
    /// Sends that repeated a signed request because the pre-signed corpus ran out.
    pub corpus_wrapped: u64,
    /// Load-generator worker threads.
    pub threads: usize,
    /// The `--verify-kafka` result, when asked for.
    pub kafka: Option<KafkaCheck>,
    /// What drove the load: `hookgate-load` or `wrk`.
    #[serde(default)]
    pub generator: String,
    /// Distinct delivery ids sent in the measured window (re-sends not counted).
    #[serde(default)]
    pub distinct_ids: u64,
    /// CPU of each watched process over the measured window (the generator's included).
    #[serde(default)]
    pub cpu: Vec<ProcCpu>,
}

/// One process's CPU over a run's measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcCpu {
    /// `hookgate`, `tansu`, `bare-hyper`, `generator`, …
    pub name: String,
    /// utime + stime over the window, all threads, seconds.
    pub cpu_s: f64,
    /// Wall-clock length of the window, seconds.
    pub window_s: f64,
    /// `cpu_s` per 2xx answer in the window, µs.
    pub us_per_event: f64,
}

impl ProcCpu {
    /// From two samples of CPU seconds `window_s` apart, over `events` 2xx answers.
    pub fn between(name: &str, before: f64, after: f64, window_s: f64, events: u64) -> ProcCpu {
        let cpu_s = (after - before).max(0.0);
        ProcCpu {
            name: name.to_owned(),
            cpu_s,
            window_s,
            us_per_event: if events > 0 {
                cpu_s * 1e6 / events as f64
            } else {
                0.0
            },
        }
    }
}

impl RunResult {
    /// Reads a result written by `hookgate-load --json`.
    pub fn load(path: &Path) -> anyhow::Result<RunResult> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Every `*.json` result in `dir`, in file-name order.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<RunResult>> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths.iter().map(|p| RunResult::load(p)).collect()
    }

    /// The CPU entry of process `name`, if it was watched.
    pub fn cpu_of(&self, name: &str) -> Option<&ProcCpu> {
        self.cpu.iter().find(|c| c.name == name)
    }

    /// CPU per event of the server under test: `hookgate`, else `bare-hyper`.
    pub fn server_cpu(&self) -> Option<&ProcCpu> {
        self.cpu_of("hookgate")
            .or_else(|| self.cpu_of("bare-hyper"))
    }

    /// 2xx answers in the measured window.
    pub fn ok(&self) -> u64 {
        self.status
            .iter()
            .filter(|(k, _)| k.starts_with('2'))
            .map(|(_, v)| v)
            .sum()
    }

    /// Status codes as `200×N 503×M`.
    pub fn status_text(&self) -> String {
        self.status
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The markdown table of `runs`; the ratio column compares req/s with the run labelled
/// `baseline`.
pub fn markdown_table(runs: &[RunResult], baseline: &str) -> String {
    let base = runs
        .iter()
        .find(|r| r.label == baseline)
        .map(|r| r.rps)
        .filter(|r| *r > 0.0);
    let mut out = String::from(
        "| scenario | by | mode | conns | req/s | vs bare-hyper | p50 ms | p99 ms | p99.9 ms | statuses | errors | distinct ids | CPU µs/event: server / broker / generator | kafka missing / twice |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|\n",
    );
    for r in runs {
        let mode = match r.target_rate {
            Some(rate) => format!("open @{rate:.0}/s"),
            None => r.mode.clone(),
        };
        let ratio = base
            .map(|b| format!("{:.1}%", 100.0 * r.rps / b))
            .unwrap_or_else(|| "-".into());
        let errors: u64 = r.errors.values().sum();
        let errors = if errors == 0 {
            "0".to_owned()
        } else {
            r.errors
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let kafka = r
            .kafka
            .as_ref()
            .map(|k| format!("{} / {}", k.missing, k.written_twice))
            .unwrap_or_else(|| "-".into());
        let us = |name: &str| {
            r.cpu_of(name)
                .map(|c| format!("{:.1}", c.us_per_event))
                .unwrap_or_else(|| "-".into())
        };
        let server = r
            .cpu
            .iter()
            .find(|c| c.name == "hookgate" || c.name == "bare-hyper")
            .map(|c| format!("{:.1}", c.us_per_event))
            .unwrap_or_else(|| "-".into());
        let cpu = format!("{server} / {} / {}", us("tansu"), us("generator"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            if r.generator.is_empty() {
                "hookgate-load"
            } else {
                r.generator.as_str()
            },
            mode,
            r.connections,
            r.rps,
            ratio,
            ms(r.latency_us.p50),
            ms(r.latency_us.p99),
            ms(r.latency_us.p999),
            r.status_text(),
            errors,
            r.distinct_ids,
            cpu,
            kafka
        ));
    }
    out
}
