//! Dropbox: `X-Dropbox-Signature: <hex HMAC-SHA256(app secret, body)>` (Dropbox
//! developer docs, "Webhooks" → "Receiving notifications").
//!
//! Handshake ("Verification request"): when the webhook URI is registered Dropbox sends
//! `GET ?challenge=<string>` and expects the challenge echoed with
//! `Content-Type: text/plain` and `X-Content-Type-Options: nosniff` — unauthenticated by
//! design (it proves only that the endpoint answers). hookgate echoes it (up to 256
//! characters of `[A-Za-z0-9_-]`, else 400) and stores nothing.
//!
//! A notification only says which accounts changed (`list_folder.accounts`), with no
//! id: the body's digest is the delivery id. No worked example is published.

use http::HeaderMap;

use super::common::SigHeader;
use super::meta::echoable;
use crate::extract::FieldSpec;
use crate::verify::{
    About, Answer, Defaults, Early, HmacAlgorithm, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, SigEncoding, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Dropbox);

const SIG: SigHeader = SigHeader {
    header: "X-Dropbox-Signature",
    prefix: "",
    encoding: SigEncoding::Hex,
    algorithm: HmacAlgorithm::Sha256,
};

struct Dropbox;

impl ProviderSpec for Dropbox {
    fn name(&self) -> &'static str {
        "dropbox"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Dropbox-Signature"],
            signed: "hex HMAC-SHA256(body)",
            secret: "the app secret",
            handshakes: &["`GET ?challenge=…` (echoed as text/plain, nosniff)"],
            docs: "https://www.dropbox.com/developers/reference/webhooks",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(SIG.keys(secrets))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        SIG.verify_parts(v.hmac_keys(), req.headers, &[req.body])
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        SIG.present(headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        Ok(vec![SIG.sign(secret, &[body])])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, None)
    }

    fn early_handshake(&self, _: &Verifier, req: &Early<'_>) -> Option<Answer> {
        if req.method != http::Method::GET {
            return None;
        }
        Some(match req.param("challenge") {
            Some(c) if echoable(&c) => Answer::text(c),
            _ => Answer::refuse(
                400,
                "bad_handshake",
                "a GET must carry ?challenge= of up to 256 characters of [A-Za-z0-9_-]",
            ),
        })
    }
}
