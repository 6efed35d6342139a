//! Trello: `X-Trello-Webhook: <base64 HMAC-SHA1(app secret, body + callback URL)>`
//! (Trello REST API docs, "Webhooks" → "Webhook signatures"). The callback URL is the one
//! given when the webhook was created: set it as the source's `public_url` (a query
//! string on the request is appended as received).
//!
//! Handshake: when a webhook is created Trello sends `HEAD` to the callback URL and
//! expects 200 ("Creating a webhook"); hookgate answers it without a body and stores
//! nothing. (It is not signed: it only proves the URL answers.)
//!
//! Trello sends no delivery id: the body's digest is the delivery id (a retry is the same
//! body); event type: `action.type`. No worked example is published.

use http::HeaderMap;
use ring::hmac;

use super::common::{example_url_options, require_public_url, signed_url, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    About, Answer, Defaults, Early, HmacAlgorithm, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, SigEncoding, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Trello);

const SIG: SigHeader = SigHeader {
    header: "X-Trello-Webhook",
    name: header_name!("x-trello-webhook"),
    prefix: "",
    encoding: SigEncoding::Base64,
    algorithm: HmacAlgorithm::Sha1,
};

struct Trello;

impl ProviderSpec for Trello {
    fn name(&self) -> &'static str {
        "trello"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Trello-Webhook"],
            signed: "base64 HMAC-SHA1(body + `public_url`)",
            secret: "the app's secret (Power-Up / API key's OAuth secret)",
            handshakes: &["`HEAD` on creation (200, empty)"],
            docs: "https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn url_signed(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        require_public_url(options)?;
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let [url, sep, query] = signed_url(v, req.query)?;
        SIG.verify_parts(v.hmac_keys(), req.headers, &[req.body, url, sep, query])
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        SIG.present(headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let url = require_public_url(options)?;
        Ok(vec![SIG.sign(secret, &[body, url.as_bytes()])])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/action/type")))
    }

    fn early_handshake(&self, _: &Verifier, req: &Early<'_>) -> Option<Answer> {
        (req.method == http::Method::HEAD).then(|| Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: String::new(),
            headers: Vec::new(),
        })
    }

    fn example_options(&self) -> Options {
        example_url_options("https://hooks.example.com/hooks/trello")
    }
}
