//! Per-source counters in 10-second buckets over the last 15 minutes (lock-free: one
//! atomic add per count), the same buckets for each sink's deliveries and the dispatcher's
//! lag (sampled from the metrics, [`SinkStats`]), and the figures read from hookgate's own Prometheus metrics
//! (sink deliveries, latency histograms, dispatcher lag, quarantine size).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counter index: accepted events.
pub const ACCEPTED: usize = 0;
/// Counter index: duplicates acknowledged.
pub const DUPLICATE: usize = 1;
/// Counter index: refused requests (4xx).
pub const REFUSED: usize = 2;
/// Counter index: 5xx answers.
pub const ERROR_5XX: usize = 3;
/// The counters' names, by index.
pub const NAMES: [&str; 4] = ["accepted", "duplicates", "refused", "errors_5xx"];

/// Width of a bucket, seconds.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept: 15 minutes.
pub const BUCKETS: usize = 90;

struct Slot<const N: usize> {
    /// The bucket number (seconds / BUCKET_SECS) these counts belong to.
    epoch: AtomicU64,
    counts: [AtomicU64; N],
}

/// `N` counters in [`BUCKETS`] buckets of [`BUCKET_SECS`] over the last 15 minutes,
/// lock-free (one atomic add per count). Time is a bucket number passed in (the clock is
/// the caller's: [`now_epoch`] in service, any number in tests).
pub struct Windows<const N: usize> {
    slots: Vec<Slot<N>>,
}

impl<const N: usize> Default for Windows<N> {
    fn default() -> Self {
        Windows {
            slots: (0..BUCKETS)
                .map(|_| Slot {
                    epoch: AtomicU64::new(0),
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
        }
    }
}

impl<const N: usize> Windows<N> {
    /// The slot of bucket `epoch`, cleared first if it held an older bucket.
    fn slot(&self, epoch: u64) -> &Slot<N> {
        let slot = &self.slots[(epoch % BUCKETS as u64) as usize];
        if slot.epoch.load(Ordering::Acquire) != epoch
            && slot.epoch.swap(epoch, Ordering::AcqRel) != epoch
        {
            // First count of a new bucket: clear the old one's counts. A count racing this
            // at the boundary may be lost: rates are for people, totals stay exact.
            for c in &slot.counts {
                c.store(0, Ordering::Relaxed);
            }
        }
        slot
    }

    /// Adds `n` to counter `kind` in bucket `epoch`.
    pub fn add_at(&self, kind: usize, n: u64, epoch: u64) {
        if kind < N && n > 0 {
            self.slot(epoch).counts[kind].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Raises counter `kind` of bucket `epoch` to at least `v` (a gauge's peak).
    pub fn max_at(&self, kind: usize, v: u64, epoch: u64) {
        if kind < N {
            self.slot(epoch).counts[kind].fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Counts per bucket for the 15 minutes up to bucket `now`, oldest first (bucket `now`,
    /// the current and partial one, last). Buckets not written since they last rolled
    /// over read as zero.
    pub fn series_at(&self, now: u64) -> Vec<[u64; N]> {
        (0..BUCKETS as u64)
            .rev()
            .map(|back| {
                let e = now.saturating_sub(back);
                let slot = &self.slots[(e % BUCKETS as u64) as usize];
                if back > now || slot.epoch.load(Ordering::Acquire) != e {
                    [0; N]
                } else {
                    std::array::from_fn(|i| slot.counts[i].load(Ordering::Relaxed))
                }
            })
            .collect()
    }
}

/// One source's counters.
pub struct SourceStats {
    /// Source name.
    pub name: String,
    windows: Windows<4>,
    totals: [AtomicU64; 4],
    /// Refusals by reason code since start (refused path only).
    reasons: Mutex<HashMap<&'static str, u64>>,
}

/// The current bucket number (seconds since the epoch / [`BUCKET_SECS`]).
pub fn now_epoch() -> u64 {
    (hookgate_proto::now_ms().max(0) as u64 / 1000) / BUCKET_SECS
}

impl SourceStats {
    /// Zeroed counters for `name`.
    pub fn new(name: &str) -> SourceStats {
        SourceStats {
            name: name.to_owned(),
            windows: Windows::default(),
            totals: Default::default(),
            reasons: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one `kind` (an index such as [`ACCEPTED`]) now.
    pub fn add(&self, kind: usize) {
        self.add_at(kind, now_epoch());
    }

    fn add_at(&self, kind: usize, epoch: u64) {
        let Some(total) = self.totals.get(kind) else {
            return;
        };
        total.fetch_add(1, Ordering::Relaxed);
        self.windows.add_at(kind, 1, epoch);
    }

    /// Counts a refusal under its reason code.
    pub fn refused_for(&self, code: &'static str) {
        let mut m = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(code).or_insert(0) += 1;
    }

    /// Totals since start, by counter.
    pub fn totals(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.totals[i].load(Ordering::Relaxed))
    }

    /// Refusals by reason since start.
    pub fn reasons(&self) -> Vec<(&'static str, u64)> {
        let m = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort();
        v
    }

    /// Counts per bucket for the last 15 minutes, oldest first (the current, partial
    /// bucket last).
    pub fn series(&self) -> Vec<[u64; 4]> {
        self.series_at(now_epoch())
    }

    fn series_at(&self, now: u64) -> Vec<[u64; 4]> {
        self.windows.series_at(now)
    }
}

/// Sink counter index: delivered.
pub const SINK_OK: usize = 0;
/// Sink counter index: a failed attempt that is retried.
pub const SINK_RETRIABLE: usize = 1;
/// Sink counter index: failed without retry.
pub const SINK_PERMANENT: usize = 2;
/// Sink counter index: written to the dead-letter store.
pub const SINK_DEAD_LETTERED: usize = 3;
/// The sink counters' names in the API, by index.
pub const SINK_NAMES: [&str; 4] = [
    "ok",
    "failed_retriable",
    "failed_permanent",
    "dead_lettered",
];
/// The `outcome` label of `hookgate_sink_deliveries_total` each sink counter counts.
const SINK_OUTCOMES: [&str; 4] = ["ok", "retry", "permanent", "dead_lettered"];

/// Per-sink delivery counts and the dispatcher's lag in the same 10-second buckets as
/// the sources'. Filled by sampling Prometheus counters
/// (`hookgate_sink_deliveries_total{sink,outcome}`, the `hookgate_dispatch_lag` gauge) of
/// one or more origins: hookgate's own metrics (origin [`LOCAL`]) and the `/metrics` of
/// separate `hookgate dispatch` processes (`[admin] dispatchers`, origins 1..). Each
/// sample adds what an origin's counters grew by since that origin's previous sample to
/// the current bucket (so a restarted dispatcher's reset counts as new growth, not as a
/// drop of the others' totals), and records the lag summed over the origins that report
/// one (a consumer group's members own disjoint partitions). The console samples every
/// few seconds and at each `GET /api/v1/stats`, so a bucket holds what happened within
/// it, give or take one sampling interval.
pub struct SinkStats {
    names: Vec<String>,
    windows: Vec<Windows<4>>,
    /// `[peak lag, samples]` per bucket (no sample: no figure, not a zero lag).
    lag: Windows<2>,
    /// The counters' values at each origin's previous sample, by (origin, sink, counter),
    /// and each origin's last known lag.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    counters: HashMap<(usize, usize, usize), f64>,
    lags: HashMap<usize, f64>,
}

/// The origin of hookgate's own metrics in [`SinkStats::sample_from`].
pub const LOCAL: usize = 0;

impl SinkStats {
    /// Zeroed windows for the sinks `names`.
    pub fn new(names: &[String]) -> SinkStats {
        SinkStats {
            names: names.to_vec(),
            windows: names.iter().map(|_| Windows::default()).collect(),
            lag: Windows::default(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Samples hookgate's own metrics now.
    pub fn sample(&self, samples: &[Sample]) {
        self.sample_from(LOCAL, samples, now_epoch());
    }

    /// Samples hookgate's own metrics into bucket `epoch`.
    pub fn sample_at(&self, samples: &[Sample], epoch: u64) {
        self.sample_from(LOCAL, samples, epoch);
    }

    /// Adds what origin `origin`'s delivery counters in `samples` grew by since its
    /// previous sample to bucket `epoch`, and the lag summed over the origins to its peak.
    pub fn sample_from(&self, origin: usize, samples: &[Sample], epoch: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for s in samples
            .iter()
            .filter(|s| s.name == "hookgate_sink_deliveries_total")
        {
            let (Some(sink), Some(outcome)) = (s.label("sink"), s.label("outcome")) else {
                continue;
            };
            let (Some(i), Some(kind)) = (
                self.names.iter().position(|n| n == sink),
                SINK_OUTCOMES.iter().position(|o| *o == outcome),
            ) else {
                continue;
            };
            let before = seen
                .counters
                .insert((origin, i, kind), s.value)
                .unwrap_or(0.0);
            // A counter never goes down; if it did (a reset), all of it is new.
            let grew = if s.value >= before {
                s.value - before
            } else {
                s.value
            };
            self.windows[i].add_at(kind, grew.round() as u64, epoch);
        }
        let lag = samples
            .iter()
            .filter(|s| s.name == "hookgate_dispatch_lag" && s.value.is_finite())
            .map(|s| s.value.max(0.0))
            .reduce(f64::max);
        match lag {
            Some(l) => seen.lags.insert(origin, l),
            None => seen.lags.remove(&origin),
        };
        if lag.is_some() {
            let total: f64 = seen.lags.values().sum();
            self.lag.max_at(0, total.round() as u64, epoch);
            self.lag.add_at(1, 1, epoch);
        }
    }

    /// Forgets origin `origin`'s lag (its metrics could not be read): the lag figures
    /// then leave it out rather than repeat a stale value.
    pub fn forget_lag(&self, origin: usize) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.lags.remove(&origin);
    }

    /// The sinks' names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Sink `i`'s counts per bucket up to bucket `now` (as [`Windows::series_at`]).
    pub fn series_at(&self, i: usize, now: u64) -> Vec<[u64; 4]> {
        self.windows
            .get(i)
            .map(|w| w.series_at(now))
            .unwrap_or_else(|| vec![[0; 4]; BUCKETS])
    }

    /// The dispatcher lag's `[peak, samples]` per bucket up to bucket `now`.
    pub fn lag_series_at(&self, now: u64) -> Vec<[u64; 2]> {
        self.lag.series_at(now)
    }
}

/// The peak of counter 0 over the last `minutes` of a `[peak, samples]` series, `None`
/// when no bucket in that time was sampled.
pub fn peak(series: &[[u64; 2]], minutes: usize) -> Option<u64> {
    let n = (minutes * 60 / BUCKET_SECS as usize).min(series.len());
    series[series.len() - n..]
        .iter()
        .filter(|b| b[1] > 0)
        .map(|b| b[0])
        .max()
}

/// The sum of counter `kind` over the last `minutes` of a series.
pub fn sum<const N: usize>(series: &[[u64; N]], kind: usize, minutes: usize) -> u64 {
    let n = (minutes * 60 / BUCKET_SECS as usize).min(series.len());
    series[series.len() - n..].iter().map(|b| b[kind]).sum()
}

/// Per-second rates over the last `minutes` of a series (as [`SourceStats::series`]).
pub fn rate<const N: usize>(series: &[[u64; N]], kind: usize, minutes: usize) -> f64 {
    let n = (minutes * 60 / BUCKET_SECS as usize).min(series.len());
    sum(series, kind, minutes) as f64 / (n.max(1) as f64 * BUCKET_SECS as f64)
}

/// One sample of Prometheus text: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`… suffixes as written).
    pub name: String,
    /// Labels in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A label's value.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples with those of the same series (name and labels) added up, in the order
/// each series first appears: several processes' counters, histogram buckets and
/// per-process gauges of one consumer group (its lag) are sums.
pub fn sum_same_series(samples: Vec<Sample>) -> Vec<Sample> {
    let mut at: HashMap<(String, Vec<(String, String)>), usize> = HashMap::new();
    let mut out: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        match at.get(&(s.name.clone(), s.labels.clone())) {
            Some(&i) => out[i].value += s.value,
            None => {
                at.insert((s.name.clone(), s.labels.clone()), out.len());
                out.push(s);
            }
        }
    }
    out
}

/// Parses the Prometheus text exposition (what `/metrics` serves); lines it cannot read
/// are skipped.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap_or(rest);
                (name.to_owned(), parse_labels(rest))
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        out.push((k.trim_start_matches(',').trim().to_owned(), v));
        rest = &after[end.min(after.len())..];
    }
    out
}

/// The `q` quantile (0..1) of a histogram from its cumulative `_bucket` samples
/// (`le` → count), interpolated within the bucket; `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, count) in b {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let width = count - prev.1;
            let frac = if width > 0.0 {
                (rank - prev.1) / width
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_roll_over_and_rates_average_per_second() {
        let s = SourceStats::new("a");
        s.add_at(ACCEPTED, 1000);
        s.add_at(ACCEPTED, 1000);
        s.add_at(REFUSED, 1001);
        let one = s.series_at(1000);
        assert!((rate(&one, ACCEPTED, 1) - 2.0 / 60.0).abs() < 1e-9);
        assert_eq!(rate(&one, REFUSED, 15), 0.0);
        // 90 buckets later the same slot is reused: the old counts are cleared.
        s.add_at(ACCEPTED, 1000 + BUCKETS as u64);
        let series = s.series_at(1000 + BUCKETS as u64);
        assert_eq!(series.len(), BUCKETS);
        assert_eq!(series.last().unwrap()[ACCEPTED], 1);
        assert_eq!(series.iter().map(|b| b[ACCEPTED]).sum::<u64>(), 1);
        assert_eq!(series.iter().map(|b| b[REFUSED]).sum::<u64>(), 1);
        assert_eq!(s.totals()[ACCEPTED], 3);
    }

    fn deliveries(sink: &str, ok: u64, retry: u64, dead: u64, lag: Option<u64>) -> Vec<Sample> {
        let mut text = format!(
            "hookgate_sink_deliveries_total{{sink=\"{sink}\",outcome=\"ok\"}} {ok}\n\
             hookgate_sink_deliveries_total{{sink=\"{sink}\",outcome=\"retry\"}} {retry}\n\
             hookgate_sink_deliveries_total{{sink=\"{sink}\",outcome=\"dead_lettered\"}} {dead}\n\
             hookgate_sink_deliveries_total{{sink=\"{sink}\",outcome=\"skipped\"}} 7\n\
             hookgate_sink_deliveries_total{{sink=\"other\",outcome=\"ok\"}} 99\n"
        );
        if let Some(l) = lag {
            text.push_str(&format!("hookgate_dispatch_lag{{log=\"kafka\"}} {l}\n"));
        }
        parse_prometheus(&text)
    }

    #[test]
    fn sink_windows_count_what_the_counters_grew_by_and_forget_old_buckets() {
        let s = SinkStats::new(&["ops".to_owned()]);
        // Counts from before the first sample (since start) land in the first bucket.
        s.sample_at(&deliveries("ops", 2, 1, 0, Some(5)), 1000);
        s.sample_at(&deliveries("ops", 3, 4, 1, Some(2)), 1001);
        s.sample_at(&deliveries("ops", 3, 4, 1, None), 1002);
        let series = s.series_at(0, 1002);
        assert_eq!(series.len(), BUCKETS);
        assert_eq!(sum(&series, SINK_OK, 1), 3);
        assert_eq!(sum(&series, SINK_RETRIABLE, 1), 4);
        assert_eq!(sum(&series, SINK_DEAD_LETTERED, 15), 1);
        assert_eq!(sum(&series, SINK_PERMANENT, 15), 0);
        assert_eq!(series[BUCKETS - 2][SINK_OK], 1);
        assert_eq!(series[BUCKETS - 3][SINK_OK], 2);
        assert!((rate(&series, SINK_RETRIABLE, 1) - 4.0 / 60.0).abs() < 1e-9);
        assert_eq!(peak(&s.lag_series_at(1002), 1), Some(5));
        // Unknown sinks and the skipped outcome are not counted; an unknown index reads 0.
        assert_eq!(s.series_at(1, 1002).iter().map(|b| b[0]).sum::<u64>(), 0);

        // Six minutes later: out of the 1- and 5-minute windows, still in the 15-minute.
        let later = 1002 + 6 * 60 / BUCKET_SECS;
        let series = s.series_at(0, later);
        assert_eq!(sum(&series, SINK_OK, 1), 0);
        assert_eq!(sum(&series, SINK_OK, 5), 0);
        assert_eq!(sum(&series, SINK_OK, 15), 3);
        assert_eq!(peak(&s.lag_series_at(later), 5), None);
        assert_eq!(peak(&s.lag_series_at(later), 15), Some(5));
        // Fifteen minutes later: forgotten; new growth only.
        let much_later = 1002 + BUCKETS as u64;
        s.sample_at(&deliveries("ops", 4, 4, 1, Some(0)), much_later);
        let series = s.series_at(0, much_later);
        assert_eq!(sum(&series, SINK_OK, 15), 1);
        assert_eq!(sum(&series, SINK_RETRIABLE, 15), 0);
        assert_eq!(peak(&s.lag_series_at(much_later), 15), Some(0));
    }

    #[test]
    fn origins_add_up_and_a_restarted_dispatcher_does_not_subtract() {
        let s = SinkStats::new(&["ops".to_owned()]);
        s.sample_from(LOCAL, &deliveries("ops", 2, 0, 0, Some(1)), 1000);
        s.sample_from(1, &deliveries("ops", 10, 0, 0, Some(4)), 1000);
        s.sample_from(2, &deliveries("ops", 5, 0, 0, None), 1000);
        let series = s.series_at(0, 1000);
        assert_eq!(sum(&series, SINK_OK, 1), 17);
        // The lag is the sum of the origins that report one.
        assert_eq!(peak(&s.lag_series_at(1000), 1), Some(5));
        // Origin 1 grows by 3; origin 2 restarts (its counter starts again at 1).
        s.sample_from(1, &deliveries("ops", 13, 0, 0, Some(6)), 1001);
        s.sample_from(2, &deliveries("ops", 1, 0, 0, None), 1001);
        assert_eq!(s.series_at(0, 1001)[BUCKETS - 1][SINK_OK], 4);
        assert_eq!(peak(&s.lag_series_at(1001), 1), Some(7));
        // Origin 1 unreachable: its lag is left out, not repeated.
        s.forget_lag(1);
        s.sample_from(LOCAL, &deliveries("ops", 2, 0, 0, Some(1)), 1002);
        assert_eq!(s.lag_series_at(1002)[BUCKETS - 1][0], 1);
    }

    #[test]
    fn the_same_series_from_several_processes_add_up() {
        let mut all = deliveries("ops", 2, 1, 0, Some(5));
        all.extend(deliveries("ops", 3, 0, 0, Some(4)));
        let s = sum_same_series(all);
        let value = |name: &str, outcome: Option<&str>| {
            s.iter()
                .filter(|x| x.name == name && outcome.is_none_or(|o| x.label("outcome") == Some(o)))
                .filter(|x| x.label("sink") != Some("other"))
                .map(|x| x.value)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            value("hookgate_sink_deliveries_total", Some("ok")),
            vec![5.0]
        );
        assert_eq!(
            value("hookgate_sink_deliveries_total", Some("retry")),
            vec![1.0]
        );
        assert_eq!(value("hookgate_dispatch_lag", None), vec![9.0]);
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn prometheus_text_and_quantiles() {
        let text = "# TYPE x counter\nhookgate_sink_deliveries_total{sink=\"ops\",outcome=\"ok\"} 3\nh_bucket{le=\"0.1\"} 50\nh_bucket{le=\"0.2\"} 100\nh_bucket{le=\"+Inf\"} 100\nbad line\n";
        let s = parse_prometheus(text);
        assert_eq!(s[0].label("sink"), Some("ops"));
        assert_eq!(s[0].label("outcome"), Some("ok"));
        assert_eq!(s[0].value, 3.0);
        let b: Vec<(f64, f64)> = s[1..]
            .iter()
            .map(|x| (x.label("le").unwrap().parse::<f64>().unwrap(), x.value))
            .collect();
        assert!((quantile(&b, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.99).unwrap() - 0.198).abs() < 1e-9);
        assert_eq!(quantile(&[], 0.5), None);
    }
}
