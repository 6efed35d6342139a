//! The retry loop every delivery attempt and llm completion runs in: exponential backoff
//! with full jitter, bounded by attempts and event age. The policy itself is sink config
//! ([`RetryPolicy`], in `chat::config`); how it backs off is here, with the loop.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::chat::config::RetryPolicy;
use crate::chat::error::SinkError;
use crate::chat::metrics;

impl RetryPolicy {
    /// The delay ceiling after failed attempt number `attempt` (1-based): base·2^(attempt-1), capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.backoff_base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// A full-jitter delay after failed attempt `attempt`: uniform in `[0, ceiling]`.
    /// Full jitter spreads retries of many events so they do not hit a recovering API together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=cap))
    }
}

/// Runs `attempt` until it succeeds, fails permanently, runs out of attempts, or the next
/// wait would take the event past `max_age` (counted from `received_at_ms`). 429 waits at
/// least the server's `retry_after`. Returns the result and the number of attempts made.
pub async fn run<T, F, Fut>(
    sink: &str,
    policy: &RetryPolicy,
    received_at_ms: i64,
    mut attempt: F,
) -> Result<(T, u32), SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let deadline_ms = received_at_ms.saturating_add(policy.max_age.as_millis() as i64);
    let mut n = 0u32;
    loop {
        n += 1;
        metrics::attempt(sink);
        let err = match tokio::time::timeout(policy.timeout, attempt()).await {
            Ok(Ok(v)) => return Ok((v, n)),
            Ok(Err(e)) => e,
            // The HTTP clients have their own timeout; this one also bounds rate-limit
            // waits and anything else inside the attempt.
            Err(_) => SinkError::retryable(format!("timed out after {:?}", policy.timeout)),
        };
        if err.is_permanent() {
            metrics::delivery(sink, metrics::Outcome::Permanent);
            return Err(err);
        }
        if n >= policy.max_attempts {
            return Err(prefix(err, &format!("gave up after {n} attempts")));
        }
        let mut wait = policy.backoff(n);
        if let Some(ra) = err.retry_after() {
            wait = wait.max(ra);
            metrics::rate_limit_wait(sink);
        }
        let left_ms = deadline_ms.saturating_sub(hookgate_proto::now_ms());
        if (wait.as_millis() as i64) > left_ms {
            return Err(prefix(
                err,
                &format!("gave up after {n} attempts (max_age)"),
            ));
        }
        metrics::delivery(sink, metrics::Outcome::Retry);
        tracing::debug!(sink, attempt = n, wait_ms = wait.as_millis() as u64, error = %err, "retrying");
        tokio::time::sleep(wait).await;
    }
}

fn prefix(err: SinkError, what: &str) -> SinkError {
    match err {
        SinkError::Permanent(m) => SinkError::Permanent(format!("{what}: {m}")),
        other => SinkError::Permanent(format!("{what}: {other}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_is_bounded_by_ceiling() {
        let p = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(3), Duration::from_millis(400));
        assert_eq!(p.ceiling(10), Duration::from_secs(2));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(2));
        for a in 1..40 {
            for _ in 0..20 {
                assert!(p.backoff(a) <= p.ceiling(a));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let r: Result<((), u32), _> = run("t", &p, hookgate_proto::now_ms(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(SinkError::retryable("boom")) }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(r.unwrap_err().to_string().contains("boom"));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_is_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<((), u32), _> = run(
            "t",
            &RetryPolicy::default(),
            hookgate_proto::now_ms(),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(SinkError::permanent("400")) }
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(r.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_lower_bound() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r = run(
            "t",
            &RetryPolicy::default(),
            hookgate_proto::now_ms(),
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(SinkError::RateLimited {
                            message: "slow down".into(),
                            retry_after: Duration::from_secs(7),
                        })
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(((), 2)));
        assert!(start.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn old_events_are_not_retried_past_max_age() {
        let p = RetryPolicy {
            max_age: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let received = hookgate_proto::now_ms() - 59_000;
        let r: Result<((), u32), _> = run("t", &p, received, || async {
            Err(SinkError::RateLimited {
                message: "x".into(),
                retry_after: Duration::from_secs(5),
            })
        })
        .await;
        assert!(r.unwrap_err().to_string().contains("max_age"));
    }
}
