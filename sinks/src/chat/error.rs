//! Error types: per-attempt sink errors and config errors.

use std::time::Duration;

/// Why one delivery attempt failed. Texts are already redacted (no secrets, no URLs).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SinkError {
    /// A failure worth retrying: 5xx, timeout, connection error.
    #[error("{message}")]
    Retryable {
        /// What went wrong.
        message: String,
        /// A server-requested wait, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The server said to slow down (429); the retry waits at least `retry_after`.
    #[error("rate limited (retry after {retry_after:?}): {message}")]
    RateLimited {
        /// What the server said.
        message: String,
        /// The wait the server asked for.
        retry_after: Duration,
    },
    /// A failure retrying will not fix: other 4xx, 3xx, refused destination, bad template.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    /// A retryable error without a server-requested wait.
    pub fn retryable(message: impl Into<String>) -> Self {
        SinkError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        SinkError::Permanent(message.into())
    }

    /// Whether retrying may help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Permanent(_))
    }

    /// The minimum wait before the next attempt the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Retryable { retry_after, .. } => *retry_after,
            SinkError::RateLimited { retry_after, .. } => Some(*retry_after),
            SinkError::Permanent(_) => None,
        }
    }

    /// Classifies a transport error from reqwest. The URL is stripped first because
    /// chat URLs carry tokens.
    pub fn from_reqwest(context: &str, err: reqwest::Error) -> Self {
        let err = err.without_url();
        let mut text = format!("{context}: {err}");
        // reqwest's Display is terse ("error sending request"); the cause chain says
        // why (refused, reset, DNS). None of the causes carry the URL path.
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            if s.downcast_ref::<crate::chat::net::RefusedDestination>()
                .is_some()
            {
                return SinkError::Permanent(format!("{context}: {s}"));
            }
            text.push_str(": ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        if err.is_builder() || err.is_redirect() {
            SinkError::Permanent(text)
        } else {
            SinkError::retryable(text)
        }
    }

    /// Classifies a non-2xx HTTP status: 429 rate limited, 5xx/408 retryable, others permanent.
    pub fn from_status(
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        message: String,
    ) -> Self {
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            SinkError::RateLimited {
                message,
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            }
        } else if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
            SinkError::Retryable {
                message,
                retry_after,
            }
        } else {
            SinkError::Permanent(message)
        }
    }

    /// The same error with every occurrence of `secret` replaced by `***`.
    pub fn redacted(self, secret: &crate::secret::Secret) -> Self {
        match self {
            SinkError::Retryable {
                message,
                retry_after,
            } => SinkError::Retryable {
                message: secret.redact(&message),
                retry_after,
            },
            SinkError::RateLimited {
                message,
                retry_after,
            } => SinkError::RateLimited {
                message: secret.redact(&message),
                retry_after,
            },
            SinkError::Permanent(m) => SinkError::Permanent(secret.redact(&m)),
        }
    }
}

/// A configuration problem, naming the sink or route (by index) it is in.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Two sinks share a name.
    #[error("sink '{0}': duplicate sink name")]
    DuplicateSink(String),
    /// A sink setting is invalid.
    #[error("sink '{sink}': {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What is wrong (never includes secret values).
        message: String,
    },
    /// A route setting is invalid.
    #[error("route #{route}: {message}")]
    Route {
        /// Zero-based index of the route in the config.
        route: usize,
        /// What is wrong.
        message: String,
    },
    /// A route's template does not compile.
    #[error("route #{route}: template error: {message}")]
    Template {
        /// Zero-based index of the route in the config.
        route: usize,
        /// The template engine's message, with line information.
        message: String,
    },
}
