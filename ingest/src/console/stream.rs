//! `GET /api/v1/stream`: live updates as server-sent events (`text/event-stream`), for the
//! Overview page (which falls back to polling `GET /api/v1/stats` when it cannot stream).
//!
//! - Auth as the API (bearer token or session cookie; nothing to write, so no CSRF).
//! - At most [`MAX_STREAMS`] at a time on the admin listener; one more is `429
//!   too_many_streams`. A stream's slot is freed when its client goes away (the body is
//!   dropped).
//! - A `stats` event (what `GET /stats` answers) at once and every [`STATS_EVERY`]; a
//!   `: heartbeat` comment every [`HEARTBEAT_EVERY`] so proxies and the browser see the
//!   connection alive.
//! - Ends with an `end` event when the session is logged out (or the token it was opened
//!   with no longer matches), and when hookgate shuts down.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::watch;

use super::api::{self, error};
use super::{auth, Console};

/// Streams open at once, at most.
pub const MAX_STREAMS: usize = 8;
/// How often a `stats` event is sent.
pub const STATS_EVERY: Duration = Duration::from_secs(2);
/// How often a heartbeat comment is sent.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How often the stream checks that its session is still valid (and hookgate running).
const TICK: Duration = Duration::from_secs(1);

/// The frames of a stream.
pub type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;
/// A response body of the admin listener: a whole one, or a stream.
pub type AdminBody = Either<Full<Bytes>, StreamBody<Frames>>;

/// One open stream's place among [`MAX_STREAMS`]; given back on drop.
struct Slot(Arc<Console>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

struct State {
    c: Arc<Console>,
    _slot: Slot,
    headers: HeaderMap,
    bearer: Option<String>,
    stop: watch::Receiver<bool>,
    ticks: u64,
    ended: bool,
}

impl State {
    /// Whether the credentials the stream was opened with still hold.
    fn allowed(&self) -> bool {
        match &self.bearer {
            Some(b) => self
                .c
                .token()
                .is_some_and(|t| auth::token_eq(b.as_bytes(), t.expose().as_bytes())),
            None => self.c.auth.session(&self.headers).is_some(),
        }
    }
}

fn whole(r: Response<Full<Bytes>>) -> Response<AdminBody> {
    r.map(Either::Left)
}

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Serves `GET /api/v1/stream` (see the module's doc).
pub async fn handle<B>(
    c: &Arc<Console>,
    req: Request<B>,
    client: IpAddr,
    stop: watch::Receiver<bool>,
) -> Response<AdminBody> {
    let Some(token) = c.token() else {
        return whole(error(
            StatusCode::NOT_FOUND,
            "console_off",
            "the console is off: set [admin] token",
        ));
    };
    if let Err(r) = api::authorize(c, req.headers(), false, client, &token) {
        return whole(r);
    }
    if req.method() != Method::GET {
        return whole(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ));
    }
    if c.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        c.streams.fetch_sub(1, Ordering::AcqRel);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            &format!("{MAX_STREAMS} live streams are open; poll GET /api/v1/stats instead"),
        );
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("10"));
        return whole(r);
    }
    let state = State {
        c: c.clone(),
        _slot: Slot(c.clone()),
        bearer: auth::bearer(req.headers()).map(str::to_owned),
        headers: req.headers().clone(),
        stop,
        ticks: 0,
        ended: false,
    };
    let stats_ticks = (STATS_EVERY.as_secs() / TICK.as_secs()).max(1);
    let heartbeat_ticks = (HEARTBEAT_EVERY.as_secs() / TICK.as_secs()).max(1);
    let frames = futures_util::stream::unfold(state, move |mut st| async move {
        if st.ended {
            return None;
        }
        let mut out = Vec::new();
        if st.ticks == 0 {
            out.extend_from_slice(b"retry: 2000\n: connected\n\n");
        } else {
            let gone = tokio::select! {
                _ = tokio::time::sleep(TICK) => false,
                // A dropped sender: hookgate is going away too.
                r = st.stop.changed() => r.is_err(),
            };
            if gone {
                st.ended = true;
            }
        }
        if st.ended || *st.stop.borrow() {
            st.ended = true;
            out.extend_from_slice(&event("end", &json!({"reason": "hookgate is stopping"})));
        } else if !st.allowed() {
            st.ended = true;
            out.extend_from_slice(&event("end", &json!({"reason": "logged out"})));
        } else {
            if st.ticks % stats_ticks == 0 {
                let stats = api::stats_json(&st.c).await;
                out.extend_from_slice(&event("stats", &stats));
            }
            if st.ticks > 0 && st.ticks % heartbeat_ticks == 0 {
                out.extend_from_slice(b": heartbeat\n\n");
            }
        }
        st.ticks += 1;
        Some((Ok(Frame::data(Bytes::from(out))), st))
    });
    let frames: Frames = Box::pin(frames);
    let mut r = Response::new(Either::Right(StreamBody::new(frames)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}
