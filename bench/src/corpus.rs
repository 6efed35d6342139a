//! Webhook bodies and signed requests for the benches and the load generator.
//!
//! Bodies look like what each provider really sends (a GitHub `push` with commits, a
//! Stripe event, a Slack event callback, …) and are padded to the requested size inside a
//! text field, so they stay valid JSON of about that many bytes. Every request is signed
//! with [`hookgate_ingest::verify::sign`], the same code `hookgate sign` uses.

use std::fmt::Write as _;

use bytes::Bytes;
use hookgate_ingest::verify::{
    self, GenericHmacOptions, HmacAlgorithm, Provider, SecretKind, SigEncoding,
};
use http::{HeaderName, HeaderValue};

/// The HMAC / token secret the bench configs use for every HMAC provider.
pub const HMAC_SECRET: &str = "hookgate-bench-secret";
/// The Standard Webhooks secret (`whsec_` + base64 of `hookgate-bench-standard-webhooks`).
pub const STANDARD_SECRET: &str = "whsec_aG9va2dhdGUtYmVuY2gtc3RhbmRhcmQtd2ViaG9va3M=";
/// The Discord Ed25519 private seed (hex) the generator signs with; the config holds the
/// matching public key (see [`config_secret`]).
pub const DISCORD_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// Providers the generator and benches can produce, by config name: every registered one
/// (those without a body of their own below get a small generic JSON event).
pub fn providers() -> impl Iterator<Item = &'static str> {
    Provider::ALL.iter().map(|p| p.as_str())
}

/// The signing secret used by default for `provider`: [`HMAC_SECRET`] for text-secret
/// schemes, the provider's own example secret for the others (a `whsec_` key, a seed).
pub fn default_secret(provider: Provider) -> &'static str {
    match provider.as_str() {
        "standard-webhooks" => STANDARD_SECRET,
        "discord" => DISCORD_SEED,
        _ if provider.spec().secret_kind() == SecretKind::Text => HMAC_SECRET,
        _ => provider.spec().example_secrets()[0],
    }
}

/// What goes in the source's `secrets = [...]` for a signing secret: the same string,
/// except for asymmetric schemes (Discord), whose verifier takes the public key.
pub fn config_secret(provider: Provider, secret: &str) -> anyhow::Result<String> {
    provider
        .spec()
        .config_secret(secret)
        .map_err(|e| anyhow::anyhow!("{provider} secret: {e}"))
}

/// The options the benches build `provider`'s verifier and signatures with.
pub fn options(provider: Provider) -> verify::Options {
    let mut options = provider.spec().example_options();
    if options.generic.is_some() {
        options.generic = Some(generic_options());
    }
    options
}

/// The generic-hmac scheme the benches use: `x-signature: sha256=<hex>`.
pub fn generic_options() -> GenericHmacOptions {
    GenericHmacOptions {
        header: HeaderName::from_static("x-signature"),
        algorithm: HmacAlgorithm::Sha256,
        encoding: SigEncoding::Hex,
        prefix: "sha256=".into(),
    }
}

/// The header that carries the delivery id, when it is an *unsigned* header: then one
/// signed body can be sent many times with a fresh id each time, without re-signing.
pub fn unsigned_id_header(provider: Provider) -> Option<HeaderName> {
    match provider.as_str() {
        "github" => Some(HeaderName::from_static("x-github-delivery")),
        "gitlab" => Some(HeaderName::from_static("x-gitlab-event-uuid")),
        "shopify" => Some(HeaderName::from_static("x-shopify-webhook-id")),
        _ => None,
    }
}

/// A delivery id unique to (`nonce`, `seq`), in a shape the provider's extractor accepts
/// (Telegram's `update_id` is a number; the others take text).
pub fn delivery_id(provider: Provider, nonce: u64, seq: u64) -> String {
    let mut id = String::with_capacity(24);
    write_delivery_id(&mut id, provider, nonce, seq);
    id
}

/// [`delivery_id`] appended to `out`, so a caller can reuse one buffer per send.
pub fn write_delivery_id(out: &mut String, provider: Provider, nonce: u64, seq: u64) {
    let _ = match provider.as_str() {
        "telegram" => write!(out, "{}{:010}", nonce % 100_000 + 1, seq),
        _ => write!(out, "{:08x}-{seq:012}", nonce as u32),
    };
}

/// A body of about `size` bytes (never less than the provider's skeleton) carrying `id`
/// where the provider puts its delivery id (body-id providers) or as an inner id.
pub fn body(provider: Provider, size: usize, id: &str) -> Vec<u8> {
    let (head, tail) = skeleton(provider, id, size);
    let fill = size.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + fill + tail.len());
    out.extend_from_slice(head.as_bytes());
    // Words, not one repeated byte, so hashing and parsing see ordinary text.
    const WORDS: &[u8] = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
    out.extend(WORDS.iter().cycle().take(fill));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// JSON before and after the filler text.
fn skeleton(provider: Provider, id: &str, size: usize) -> (String, String) {
    match provider.as_str() {
        "github" | "gitlab" | "generic-hmac" => {
            // 64 repositories, so a partition key of `/repository/full_name` spreads.
            let repo = id
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()))
                % 64;
            let mut head = String::with_capacity(2048);
            let _ = write!(
                head,
                r#"{{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"0000000000000000000000000000000000000000","repository":{{"id":1296269,"node_id":"MDEwOlJlcG9zaXRvcnkxMjk2MjY5","name":"hello-world-{repo:02}","full_name":"octo-org/hello-world-{repo:02}","private":false,"owner":{{"name":"octo-org","login":"octo-org","id":6811672}},"html_url":"https://github.com/octo-org/hello-world-{repo:02}","default_branch":"main"}},"pusher":{{"name":"octocat","email":"octocat@github.com"}},"sender":{{"login":"octocat","id":583231,"type":"User"}},"created":false,"deleted":false,"forced":false,"compare":"https://github.com/octo-org/hello-world-{repo:02}/compare/6113728f27ae...000000000000","commits":["#
            );
            // About one commit per 300 bytes beyond the skeleton: many small objects, as in
            // a real push, rather than one huge string.
            let commits = size.saturating_sub(1100) / 300;
            for n in 0..commits {
                if n > 0 {
                    head.push(',');
                }
                let _ = write!(
                    head,
                    r#"{{"id":"{n:040x}","message":"Fix the thing, part {n}","timestamp":"2024-05-01T12:00:00Z","author":{{"name":"Mona Lisa","email":"mona@github.com","username":"mona"}},"added":[],"removed":[],"modified":["src/lib.rs","README.md"]}}"#
                );
            }
            let _ = write!(head, r#"],"head_commit":{{"id":"{id}","message":""#);
            (head, r#"","timestamp":"2024-05-01T12:00:00Z"}}"#.to_owned())
        }
        "stripe" => (
            format!(
                r#"{{"id":"evt_{id}","object":"event","api_version":"2024-06-20","created":1714564800,"type":"charge.succeeded","livemode":false,"data":{{"object":{{"id":"ch_3PBf","object":"charge","amount":2000,"currency":"usd","paid":true,"description":""#
            ),
            r#""}}}"#.to_owned(),
        ),
        "shopify" => (
            format!(
                r#"{{"id":"{id}","email":"jon@example.com","total_price":"199.00","currency":"USD","note":""#
            ),
            r#""}"#.to_owned(),
        ),
        "slack" => (
            format!(
                r#"{{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","team_id":"T061EG9R6","api_app_id":"A0PNCHHK2","type":"event_callback","event_id":"Ev{id}","event_time":1714564800,"event":{{"type":"message","channel":"C024BE91L","user":"U2147483697","ts":"1714564800.000200","text":""#
            ),
            r#""}}"#.to_owned(),
        ),
        "standard-webhooks" => (
            format!(
                r#"{{"type":"invoice.paid","timestamp":"2024-05-01T12:00:00Z","data":{{"id":"{id}","note":""#
            ),
            r#""}}"#.to_owned(),
        ),
        "telegram" => (
            format!(
                r#"{{"update_id":{id},"message":{{"message_id":1,"from":{{"id":42,"is_bot":false,"first_name":"Ada"}},"chat":{{"id":42,"type":"private"}},"date":1714564800,"text":""#
            ),
            r#""}}"#.to_owned(),
        ),
        "discord" => (
            format!(
                r#"{{"type":2,"id":"{id}","application_id":"1011","token":"aW50ZXJhY3Rpb24","data":{{"name":"echo","options":[{{"name":"text","type":3,"value":""#
            ),
            r#""}]}}"#.to_owned(),
        ),
        _ => (
            format!(r#"{{"id":"{id}","type":"bench.event","data":{{"note":""#),
            r#""}}"#.to_owned(),
        ),
    }
}

/// One signed webhook request, ready to send many times.
#[derive(Clone)]
pub struct SignedRequest {
    /// Path to post to.
    pub path: String,
    /// Signature and provider headers, plus `content-type: application/json`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The exact signed body.
    pub body: Bytes,
    /// The delivery id hookgate will extract (for unsigned-header providers: the one the
    /// headers carry now; the generator may replace it per send).
    pub delivery_id: String,
}

/// Builds and signs one request for `provider` with body size `size` and delivery id
/// `id`, signed at unix time `now`. `path` is `/hooks/{source}`.
pub fn signed_request(
    provider: Provider,
    secret: &str,
    size: usize,
    id: &str,
    now: i64,
    path: &str,
) -> anyhow::Result<SignedRequest> {
    let body = body(provider, size, id);
    let verify::Signed {
        headers: signed,
        body,
    } = verify::sign_request(provider, secret, &body, now, &options(provider))
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    let mut headers = Vec::with_capacity(signed.len() + 3);
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    for (k, v) in signed {
        headers.push((
            HeaderName::from_bytes(k.as_bytes())?,
            HeaderValue::try_from(v)?,
        ));
    }
    let mut delivery_id = id.to_owned();
    match provider.as_str() {
        "github" => {
            headers.push((
                HeaderName::from_static("x-github-event"),
                HeaderValue::from_static("push"),
            ));
        }
        "gitlab" => {
            headers.push((
                HeaderName::from_static("x-gitlab-event"),
                HeaderValue::from_static("Push Hook"),
            ));
        }
        "shopify" => {
            headers.push((
                HeaderName::from_static("x-shopify-topic"),
                HeaderValue::from_static("orders/create"),
            ));
        }
        "standard-webhooks" => {
            // The id is the `webhook-id` that `sign` derived and signed.
            if let Some((_, v)) = headers.iter().find(|(k, _)| k == "webhook-id") {
                delivery_id = v.to_str().unwrap_or_default().to_owned();
            }
        }
        "stripe" => delivery_id = format!("evt_{id}"),
        "slack" => delivery_id = format!("Ev{id}"),
        _ => {}
    }
    if let Some(h) = unsigned_id_header(provider) {
        headers.push((h, HeaderValue::try_from(id)?));
    }
    Ok(SignedRequest {
        path: path.to_owned(),
        headers,
        body: Bytes::from(body),
        delivery_id,
    })
}

/// A `[[sources]]` entry named `name` for `provider`, verifying what `secret` signs, with
/// hookgate's defaults for everything else (the partition key is the delivery id).
pub fn source_toml(name: &str, provider: Provider, secret: &str) -> anyhow::Result<String> {
    let mut s = format!(
        "[[sources]]\nname = \"{name}\"\nprovider = \"{}\"\nsecrets = [\"{}\"]\n",
        provider.as_str(),
        config_secret(provider, secret)?
    );
    if provider.as_str() == "generic-hmac" {
        s.push_str(
            "signature_header = \"x-signature\"\nalgorithm = \"sha256\"\nencoding = \"hex\"\nprefix = \"sha256=\"\n",
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_the_asked_size_and_verify() -> anyhow::Result<()> {
        for name in providers() {
            let p = Provider::parse(name).ok_or_else(|| anyhow::anyhow!("{name}"))?;
            for size in [1024, 64 << 10] {
                let id = delivery_id(p, 7, 1);
                let r = signed_request(p, default_secret(p), size, &id, 1_714_564_800, "/")?;
                let v: serde_json::Value = serde_json::from_slice(&r.body)?;
                assert!(v.is_object());
                // Schemes that sign inside the body add their envelope around it.
                let limit = if p.spec().signature_in_body() {
                    2 * size + 1024
                } else {
                    size + 64
                };
                assert!(
                    r.body.len() >= size && r.body.len() < limit,
                    "{name} {size}: {}",
                    r.body.len()
                );
                let secret = config_secret(p, default_secret(p))?;
                let ver = verify::Verifier::with_options(p, &[secret], options(p))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut hm = http::HeaderMap::new();
                for (k, v) in &r.headers {
                    hm.insert(k.clone(), v.clone());
                }
                ver.verify(&hm, &r.body, 1_714_564_800)
                    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            }
        }
        Ok(())
    }
}
