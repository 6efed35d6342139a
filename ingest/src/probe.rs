//! The admin listener of processes without an HTTP front (`hookgate dispatch`):
//! `GET /metrics`, `/healthz` and `/readyz`, nothing else. Probes and the Prometheus
//! scrape of a dispatcher Deployment use it like a `serve` replica's admin port.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Whether the process can do its work (`/readyz`): `Err` carries the stable reason given
/// in the 503 body.
pub type Readiness = Arc<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// Serves the probe endpoints on `listener` until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    prometheus: PrometheusHandle,
    ready: Readiness,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let (prometheus, ready, builder) = (prometheus.clone(), ready.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = answer(req.method(), req.uri().path(), &prometheus, &ready);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn answer(
    method: &Method,
    path: &str,
    prometheus: &PrometheusHandle,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        (&Method::GET, "/readyz") => match ready() {
            Ok(()) => json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned()),
            Err(why) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(r#"{{"status":"not_ready","reason":"{why}"}}"#),
            ),
        },
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(prometheus.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (_, "/healthz" | "/readyz" | "/metrics") => {
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","message":"use GET"}"#.to_owned(),
            );
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            r
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","message":"this admin listener serves /metrics, /healthz and /readyz"}"#
                .to_owned(),
        ),
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
