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

use super::common::{BodyHmac, BodyHmacWithEarly, SigHeader};
use super::meta::echoable;
use crate::extract::FieldSpec;
use crate::verify::{
    About, Answer, Defaults, Early, HmacAlgorithm, Provider, SigEncoding, Verifier,
};

static SPEC: BodyHmacWithEarly = BodyHmacWithEarly {
    hook: BodyHmac {
        name: "dropbox",
        aliases: &[],
        about: About {
            headers: &["X-Dropbox-Signature"],
            signed: "hex HMAC-SHA256(body)",
            secret: "the app secret",
            handshakes: &["`GET ?challenge=…` (echoed as text/plain, nosniff)"],
            docs: "https://www.dropbox.com/developers/reference/webhooks",
        },
        sig: SigHeader {
            header: "X-Dropbox-Signature",
            name: header_name!("x-dropbox-signature"),
            prefix: "",
            encoding: SigEncoding::Hex,
            algorithm: HmacAlgorithm::Sha256,
        },
        defaults: || Defaults::new(FieldSpec::BodyHash, None),
    },
    early: challenge,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);

/// Dropbox's verification request: `GET ?challenge=…`, echoed.
fn challenge(_: &Verifier, req: &Early<'_>) -> Option<Answer> {
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

