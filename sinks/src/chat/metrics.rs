//! The sink metrics. Labels are only the sink name and the outcome, to keep cardinality low.

use std::time::Duration;

/// How a delivery ended (or that it is being retried), the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (2xx).
    Ok,
    /// One failed attempt that will be retried.
    Retry,
    /// Failed without retry (4xx, refused, render error).
    Permanent,
    /// Written to the dead-letter store.
    DeadLettered,
    /// Nothing to deliver (e.g. a non-chat event on an llm route).
    Skipped,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retry => "retry",
            Outcome::Permanent => "permanent",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Counts `hookgate_sink_deliveries_total{sink,outcome}`.
pub fn delivery(sink: &str, outcome: Outcome) {
    metrics::counter!("hookgate_sink_deliveries_total", "sink" => sink.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Counts `hookgate_sink_attempts_total{sink}`.
pub fn attempt(sink: &str) {
    metrics::counter!("hookgate_sink_attempts_total", "sink" => sink.to_owned()).increment(1);
}

/// Counts `hookgate_sink_rate_limit_waits_total{sink}` (a limiter or a 429 made us wait).
pub fn rate_limit_wait(sink: &str) {
    metrics::counter!("hookgate_sink_rate_limit_waits_total", "sink" => sink.to_owned())
        .increment(1);
}

/// Records `hookgate_sink_delivery_latency_seconds{sink}` from the event's receipt to now.
pub fn latency(sink: &str, received_at_ms: i64) {
    let ms = hookgate_proto::now_ms()
        .saturating_sub(received_at_ms)
        .max(0);
    metrics::histogram!("hookgate_sink_delivery_latency_seconds", "sink" => sink.to_owned())
        .record(Duration::from_millis(ms as u64).as_secs_f64());
}

/// Counts `hookgate_llm_truncated_total{sink}`: answers the model cut off at its output
/// limit (sent with a note saying so).
pub fn llm_truncated(sink: &str) {
    metrics::counter!("hookgate_llm_truncated_total", "sink" => sink.to_owned()).increment(1);
}
