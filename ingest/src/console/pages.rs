//! The console's pages: the login page and the shell (the views are drawn by
//! `console.js` from the JSON API, with `textContent` only, so nothing a webhook sender
//! controls is ever parsed as HTML). Assets are embedded in the binary; a strict
//! Content-Security-Policy allows only them.
//!
//! No template crate: the two pages substitute one or two values (HTML-escaped here),
//! and everything else is drawn client-side from the API.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use hookgate_sinks::Secret;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;

use super::api::{error, no_store, read_body};
use super::auth::{self, Door, COOKIE, LOGIN_COOKIE, SESSION_TTL};
use super::Console;

const LOGIN_HTML: &str = include_str!("assets/login.html");
const SHELL_HTML: &str = include_str!("assets/console.html");
const JS: &str = include_str!("assets/console.js");
const CSS: &str = include_str!("assets/console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn page(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    no_store(h);
    r
}

fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = page(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

fn login_page(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let csrf = auth::random_token();
    let html = LOGIN_HTML
        .replace("{{csrf}}", &escape(&csrf))
        .replace("{{message}}", &escape(message));
    let mut r = page(status, "text/html; charset=utf-8", html);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={csrf}; HttpOnly; SameSite=Strict; Path=/console/login; Max-Age=3600"
    )) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// `/console` and everything under it.
pub async fn handle<B>(
    c: &Arc<Console>,
    req: Request<B>,
    client: IpAddr,
    token: &Secret,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/console") => redirect("/console/"),
        (Method::GET, "/console/assets/console.js") => {
            page(StatusCode::OK, "text/javascript; charset=utf-8", JS)
        }
        (Method::GET, "/console/assets/console.css") => {
            page(StatusCode::OK, "text/css; charset=utf-8", CSS)
        }
        (Method::GET, "/console/login") => login_page(StatusCode::OK, ""),
        (Method::POST, "/console/login") => login(c, req, client, token).await,
        (Method::POST, "/console/logout") => {
            let Some(s) = c.auth.session(req.headers()) else {
                return redirect("/console/login");
            };
            let headers = req.headers().clone();
            let form = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let sent = url::form_urlencoded::parse(&form)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if !auth::token_eq(sent.as_bytes(), s.csrf.as_bytes()) {
                return error(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "missing or wrong CSRF token",
                );
            }
            c.auth.end_session(&headers);
            let mut r = redirect("/console/login");
            r.headers_mut().insert(
                SET_COOKIE,
                HeaderValue::from_static(
                    "hookgate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                ),
            );
            r
        }
        (Method::GET, "/console/") => match c.auth.session(req.headers()) {
            Some(s) => page(
                StatusCode::OK,
                "text/html; charset=utf-8",
                SHELL_HTML.replace("{{csrf}}", &escape(&s.csrf)),
            ),
            None => redirect("/console/login"),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such console page"),
    }
}

async fn login<B>(
    c: &Arc<Console>,
    req: Request<B>,
    client: IpAddr,
    token: &Secret,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(wait) = c.auth.limited(Door::Form, client) {
        let mut r = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many wrong tokens from this address. Wait and try again.",
        );
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let cookie_csrf = auth::cookie(req.headers(), LOGIN_COOKIE)
        .unwrap_or("")
        .to_owned();
    let form = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (mut presented, mut csrf) = (String::new(), String::new());
    for (k, v) in url::form_urlencoded::parse(&form) {
        match &*k {
            "token" => presented = v.into_owned(),
            "csrf" => csrf = v.into_owned(),
            _ => {}
        }
    }
    // Double submit: the form's hidden field must match the cookie set with the form.
    if cookie_csrf.is_empty() || !auth::token_eq(csrf.as_bytes(), cookie_csrf.as_bytes()) {
        return login_page(StatusCode::FORBIDDEN, "The login form expired. Try again.");
    }
    if !auth::token_eq(presented.trim().as_bytes(), token.expose().as_bytes()) {
        c.auth.failed(Door::Form, client);
        tracing::info!(%client, "console: wrong token at login");
        return login_page(StatusCode::UNAUTHORIZED, "Wrong token.");
    }
    c.auth.succeeded(Door::Form, client);
    let Some(id) = c.auth.start_session() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_randomness",
            "cannot make a session id",
        );
    };
    tracing::info!(%client, "console: login");
    let mut r = redirect("/console/");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}
