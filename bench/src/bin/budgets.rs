//! `budgets`: checks hookgate against `bench/budgets.toml`. It runs the criterion stage
//! benches (`cargo bench -p hookgate-bench --bench stages -- --save-baseline budgets`),
//! reads each bench's median from `target/criterion/<id>/new/estimates.json` and the load
//! results JSON of the last `bench/run.sh`, and prints every budget with its measured
//! value and PASS / FAIL (MISSING when there is nothing to compare). Exit status 1 when a
//! budget fails.
//!
//! Run: `cargo run --release -p hookgate-bench --bin budgets` (add `-- --skip-bench` to
//! only read existing results, `-- --only-budgeted` to bench just the budgeted stages).
//! For people and `run.sh`; never a timed test in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use clap::Parser;
use hookgate_bench::report::RunResult;
use serde::Deserialize;

/// Compare measurements with bench/budgets.toml.
#[derive(Parser)]
#[command(name = "budgets", about)]
struct Args {
    /// The budgets file (default: bench/budgets.toml of this workspace).
    #[arg(long)]
    budgets: Option<PathBuf>,
    /// Do not run `cargo bench`; read the results already under target/criterion.
    #[arg(long)]
    skip_bench: bool,
    /// Bench only the stages that have a budget (faster).
    #[arg(long)]
    only_budgeted: bool,
    /// Folder of load results (default: `load_results` of the budgets file).
    #[arg(long)]
    load_results: Option<PathBuf>,
    /// Extra criterion arguments, e.g. `--measurement-time 5`.
    #[arg(long, allow_hyphen_values = true, num_args = 1..)]
    criterion_args: Vec<String>,
}

/// The budgets file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Budgets {
    load_results: PathBuf,
    #[serde(default)]
    stage: Vec<StageBudget>,
    #[serde(default)]
    load: Vec<LoadBudget>,
}

/// A limit on one criterion bench's median: in nanoseconds (`max_ns`), or as a multiple of
/// another bench's median from the same run (`ratio_to` + `max_ratio`, e.g. a provider's
/// verify against the raw HMAC floor), or both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBudget {
    name: String,
    bench: String,
    max_ns: Option<f64>,
    ratio_to: Option<String>,
    max_ratio: Option<f64>,
}

/// Limits on one load scenario's result.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadBudget {
    name: String,
    scenario: String,
    min_rps: Option<f64>,
    ratio_to: Option<String>,
    min_ratio: Option<f64>,
    max_p99_ms: Option<f64>,
    max_non_2xx: Option<u64>,
    max_missing: Option<u64>,
    /// Records of the run found more than once in the topic (same hookgate id, or one
    /// delivery id under two hookgate ids).
    max_twice: Option<u64>,
    /// The server's (hookgate's) CPU per 2xx event over the measured window, µs.
    max_cpu_us: Option<f64>,
    /// With `ratio_to`: the server's CPU per event over the `ratio_to` scenario's.
    max_cpu_ratio: Option<f64>,
}

#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// The workspace root: the parent of this crate's folder.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn median_ns(target: &Path, bench: &str) -> Option<f64> {
    let path = target
        .join("criterion")
        .join(bench)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<Estimates>(&text)
        .ok()
        .map(|e| e.median.point_estimate)
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

struct Row {
    name: String,
    measured: String,
    limit: String,
    verdict: &'static str,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let root = root();
    let path = args
        .budgets
        .clone()
        .unwrap_or_else(|| root.join("bench/budgets.toml"));
    let budgets: Budgets = toml::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    )
    .with_context(|| format!("parse {}", path.display()))?;
    let target = target_dir(&root);

    if !args.skip_bench {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args([
            "bench",
            "-p",
            "hookgate-bench",
            "--bench",
            "stages",
            "--",
            "--save-baseline",
            "budgets",
        ]);
        if args.only_budgeted {
            let ids: Vec<String> = budgets
                .stage
                .iter()
                .flat_map(|s| std::iter::once(&s.bench).chain(s.ratio_to.as_ref()))
                .map(|bench| regex_escape(bench))
                .collect();
            cmd.arg(format!("^({})$", ids.join("|")));
        }
        cmd.args(&args.criterion_args);
        // Criterion's report goes to stderr: stdout is the budget table alone (run.sh puts
        // it in RESULTS.md).
        cmd.stdout(std::io::stderr());
        eprintln!("running {cmd:?}");
        let status = cmd.status().context("run cargo bench")?;
        if !status.success() {
            anyhow::bail!("cargo bench failed: {status}");
        }
    }

    let mut rows = Vec::new();
    for s in &budgets.stage {
        let Some(m) = median_ns(&target, &s.bench) else {
            rows.push(Row {
                name: format!("{} (`{}`, median)", s.name, s.bench),
                measured: "no result".into(),
                limit: "-".into(),
                verdict: "MISSING",
            });
            continue;
        };
        let mut measured = vec![human_ns(m)];
        let mut limits = Vec::new();
        let (mut fail, mut missing) = (false, false);
        if let Some(max) = s.max_ns {
            limits.push(format!("≤ {}", human_ns(max)));
            fail |= m > max;
        }
        if let (Some(base), Some(max)) = (&s.ratio_to, s.max_ratio) {
            match median_ns(&target, base) {
                Some(b) if b > 0.0 => {
                    measured.push(format!("{:.2}× `{base}` ({})", m / b, human_ns(b)));
                    fail |= m / b > max;
                }
                _ => {
                    measured.push(format!("no `{base}` result"));
                    missing = true;
                }
            }
            limits.push(format!("≤ {max}× `{base}`"));
        }
        rows.push(Row {
            name: format!("{} (`{}`, median)", s.name, s.bench),
            measured: measured.join(", "),
            limit: limits.join(", "),
            verdict: match (fail, missing) {
                (true, _) => "FAIL",
                (false, true) => "MISSING",
                (false, false) => "PASS",
            },
        });
    }

    let dir = args
        .load_results
        .clone()
        .unwrap_or_else(|| root.join(&budgets.load_results));
    let runs = RunResult::load_dir(&dir).unwrap_or_default();
    let find = |label: &str| runs.iter().find(|r| r.label == label);
    for b in &budgets.load {
        let Some(r) = find(&b.scenario) else {
            rows.push(Row {
                name: b.name.clone(),
                measured: format!("no `{}` result in {}", b.scenario, dir.display()),
                limit: "-".into(),
                verdict: "MISSING",
            });
            continue;
        };
        let mut measured = Vec::new();
        let mut limits = Vec::new();
        let (mut fail, mut missing) = (false, false);
        if let Some(min) = b.min_rps {
            measured.push(format!("{:.0} req/s", r.rps));
            limits.push(format!("≥ {min:.0} req/s"));
            fail |= r.rps < min;
        }
        if let (Some(base), Some(min)) = (&b.ratio_to, b.min_ratio) {
            match find(base) {
                Some(base_run) if base_run.rps > 0.0 => {
                    let ratio = r.rps / base_run.rps;
                    measured.push(format!(
                        "{:.0} / {:.0} req/s = {:.1}%",
                        r.rps,
                        base_run.rps,
                        100.0 * ratio
                    ));
                    fail |= ratio < min;
                }
                _ => {
                    measured.push(format!("no `{base}` result"));
                    missing = true;
                }
            }
            limits.push(format!("≥ {:.0}% of {base}", 100.0 * min));
        }
        if let Some(max) = b.max_twice {
            match &r.kafka {
                Some(k) => {
                    let twice = k.written_twice + k.delivery_ids_twice;
                    measured.push(format!("{twice} stored twice"));
                    fail |= twice > max;
                }
                None => {
                    measured.push("not verified".into());
                    missing = true;
                }
            }
            limits.push(format!("≤ {max} stored twice"));
        }
        if let Some(max) = b.max_cpu_us {
            match r.server_cpu() {
                Some(c) => {
                    measured.push(format!("{} CPU {:.1} µs/event", c.name, c.us_per_event));
                    fail |= c.us_per_event > max;
                }
                None => {
                    measured.push("no CPU measured".into());
                    missing = true;
                }
            }
            limits.push(format!("CPU ≤ {max} µs/event"));
        }
        if let (Some(base), Some(max)) = (&b.ratio_to, b.max_cpu_ratio) {
            let base_cpu = find(base)
                .and_then(|x| x.server_cpu())
                .map(|c| c.us_per_event);
            match (r.server_cpu(), base_cpu) {
                (Some(c), Some(bc)) if bc > 0.0 => {
                    let ratio = c.us_per_event / bc;
                    measured.push(format!(
                        "CPU {:.1} / {bc:.1} µs/event = {ratio:.2}×",
                        c.us_per_event
                    ));
                    fail |= ratio > max;
                }
                _ => {
                    measured.push(format!("no CPU of this run or of `{base}`"));
                    missing = true;
                }
            }
            limits.push(format!("CPU ≤ {max}× {base}'s"));
        }
        if let Some(max) = b.max_p99_ms {
            let p99 = r.latency_us.p99 as f64 / 1000.0;
            let at = r
                .target_rate
                .map(|rate| format!(" at {rate:.0} req/s"))
                .unwrap_or_default();
            measured.push(format!("p99 {p99:.2} ms{at}"));
            limits.push(format!("p99 ≤ {max} ms"));
            fail |= p99 > max;
        }
        if let Some(max) = b.max_non_2xx {
            let bad = r.non_2xx + r.errors.values().sum::<u64>();
            measured.push(format!("{bad} non-2xx/errors"));
            limits.push(format!("≤ {max} non-2xx"));
            fail |= bad > max;
        }
        if let Some(max) = b.max_missing {
            match &r.kafka {
                Some(k) => {
                    measured.push(format!("{} missing", k.missing));
                    fail |= k.missing > max;
                }
                None => {
                    measured.push("not verified".into());
                    missing = true;
                }
            }
            limits.push(format!("≤ {max} missing"));
        }
        let verdict = match (fail, missing) {
            (true, _) => "FAIL",
            (false, true) => "MISSING",
            _ => "PASS",
        };
        rows.push(Row {
            name: b.name.clone(),
            measured: measured.join(", "),
            limit: limits.join(", "),
            verdict,
        });
    }

    println!("| budget | measured | limit | verdict |\n|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | **{}** |",
            r.name, r.measured, r.limit, r.verdict
        );
    }
    let failed = rows.iter().filter(|r| r.verdict == "FAIL").count();
    let missing = rows.iter().filter(|r| r.verdict == "MISSING").count();
    eprintln!(
        "{} budget(s): {} pass, {failed} fail, {missing} missing",
        rows.len(),
        rows.len() - failed - missing
    );
    Ok(if failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Escapes regex metacharacters for criterion's bench filter.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
