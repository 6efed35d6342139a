//! Per-source counters in 10-second buckets over the last 15 minutes (lock-free: one
//! atomic add per count), and the figures read from hookgate's own Prometheus metrics
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

struct Slot {
    /// The bucket number (seconds / BUCKET_SECS) these counts belong to.
    epoch: AtomicU64,
    counts: [AtomicU64; 4],
}

/// One source's counters.
pub struct SourceStats {
    /// Source name.
    pub name: String,
    slots: Vec<Slot>,
    totals: [AtomicU64; 4],
    /// Refusals by reason code since start (refused path only).
    reasons: Mutex<HashMap<&'static str, u64>>,
}

fn now_epoch() -> u64 {
    (hookgate_proto::now_ms().max(0) as u64 / 1000) / BUCKET_SECS
}

impl SourceStats {
    /// Zeroed counters for `name`.
    pub fn new(name: &str) -> SourceStats {
        SourceStats {
            name: name.to_owned(),
            slots: (0..BUCKETS)
                .map(|_| Slot {
                    epoch: AtomicU64::new(0),
                    counts: Default::default(),
                })
                .collect(),
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
        slot.counts[kind].fetch_add(1, Ordering::Relaxed);
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
        (0..BUCKETS as u64)
            .rev()
            .map(|back| {
                let e = now.saturating_sub(back);
                let slot = &self.slots[(e % BUCKETS as u64) as usize];
                if back > now || slot.epoch.load(Ordering::Acquire) != e {
                    [0; 4]
                } else {
                    std::array::from_fn(|i| slot.counts[i].load(Ordering::Relaxed))
                }
            })
            .collect()
    }
}

/// Per-second rates over the last `minutes` of a series (as [`SourceStats::series`]).
pub fn rate(series: &[[u64; 4]], kind: usize, minutes: usize) -> f64 {
    let n = (minutes * 60 / BUCKET_SECS as usize).min(series.len());
    let sum: u64 = series[series.len() - n..].iter().map(|b| b[kind]).sum();
    sum as f64 / (n as f64 * BUCKET_SECS as f64)
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
