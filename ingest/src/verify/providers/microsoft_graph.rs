//! Microsoft Graph change notifications: no signature; every notification in the body's
//! `value` array carries the `clientState` the subscription was created with, a shared
//! secret the receiver must compare (Microsoft Graph docs, "Receive change notifications
//! through webhooks" → "Processing the change notification"). hookgate requires every
//! item's `clientState` to equal one of `secrets` (constant-time); at most 256 items.
//!
//! Rich notifications ("Set up change notifications that include resource data",
//! <https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data>) are
//! checked further when the source asks for it, and only once every `clientState` has
//! matched (so no anonymous request reaches the RSA or JWT code):
//! - `encryption_key_file` (PEM RSA private keys, several during a certificate rotation):
//!   every item carrying `encryptedContent` must have a `dataKey` that one of the keys
//!   decrypts (RSA-OAEP with SHA-1 and MGF1-SHA-1, "RSA/ECB/OAEPWithSHA1AndMGF1Padding" in
//!   the `changeNotificationEncryptedContent` reference) and a `dataSignature` equal to the
//!   base64 HMAC-SHA256 of the base64-decoded `data` under that key (`ring::hmac::verify`).
//!   `encryption_certificate_ids`, when set, restricts `encryptionCertificateId`. `data`
//!   itself is not decrypted: the HMAC covers the ciphertext (encrypt-then-MAC), the body is
//!   stored as received, so a decryption would only add a CBC padding check on bytes the
//!   HMAC already authenticated, and put plaintext in memory for nothing. Items without
//!   `encryptedContent` pass on their `clientState`, as without the option.
//! - `jwks_file` + `app_ids` + `tenant_ids`: every token of the top-level
//!   `validationTokens` must be an RS256 JWT signed by a key of the JWKS, with `iss` =
//!   `https://sts.windows.net/{tenant}/` for a configured tenant, `aud` a configured app id,
//!   the publisher (`appid`, or `azp` in v2 tokens) Microsoft Graph's
//!   `0bf30f3b-4a52-48df-9a82-234910c4a086`, and `exp`/`nbf` within 5 minutes of leeway.
//!   A notification with `encryptedContent` must carry tokens then; one without them (a
//!   basic notification) passes on its `clientState`.
//!
//! Handshake ("Notification endpoint validation"): on subscription creation Graph POSTs
//! `?validationToken=<token>` with an empty body and expects, within 10 seconds, 200 with
//! the decoded token as `text/plain`. hookgate answers it before reading any body (it is
//! unauthenticated by design) — only up to 1024 characters of visible ASCII and space
//! without `<>&"'`, with `nosniff`, so nothing a browser could run is reflected; anything
//! else is 400. Nothing is stored.
//!
//! Delivery id: a digest of the body; event type: the first item's `changeType`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use openssl::pkey::{Private, Public};
use openssl::rsa::{Padding, Rsa};
use ring::{hmac, signature};
use serde_json::Value;

use crate::extract::FieldSpec;
use crate::verify::{
    About, Answer, Defaults, Early, KeyError, Keys, Options, Provider, ProviderSpec, Request,
    SecretKind, Signed, TokenSet, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&MicrosoftGraph);

/// Most notifications one POST may carry.
const MAX_ITEMS: usize = 256;
/// Longest validation token echoed.
const MAX_TOKEN: usize = 1024;

/// Most RSA keys an `encryption_key_file` may hold (a certificate rotation needs two).
const MAX_RSA_KEYS: usize = 8;
/// Most keys read from a JWKS file.
const MAX_JWKS_KEYS: usize = 64;
/// Most validation tokens one notification may carry (one per app and tenant).
const MAX_TOKENS: usize = 16;
/// Longest validation token read.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew allowed on a validation token's `exp` and `nbf`, in seconds.
const LEEWAY: i64 = 300;
/// The app id of the Microsoft Graph change notification publisher (`appid`/`azp`).
pub const GRAPH_PUBLISHER: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

struct MicrosoftGraph;

/// A source's rich-notification settings (`[[sources]]` keys of the same names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphOptions {
    /// PEM file of the RSA private key(s) that decrypt `encryptedContent.dataKey`.
    pub encryption_key_file: Option<PathBuf>,
    /// The `encryptionCertificateId`s accepted (empty: any).
    pub encryption_certificate_ids: Vec<String>,
    /// JWKS file of the keys that sign `validationTokens`.
    pub jwks_file: Option<PathBuf>,
    /// The app ids a validation token may be issued for (`aud`).
    pub app_ids: Vec<String>,
    /// The tenants whose tokens are accepted (`iss`).
    pub tenant_ids: Vec<String>,
}

impl GraphOptions {
    fn is_empty(&self) -> bool {
        *self == GraphOptions::default()
    }
}

/// The key material of a source with rich-notification checks.
struct RichKeys {
    /// Decrypt `dataKey` (empty: `encryptedContent` is not checked).
    rsa: Vec<Rsa<Private>>,
    certificate_ids: Vec<String>,
    /// Verify `validationTokens` (absent: not checked).
    jwt: Option<TokenCheck>,
}

/// What a validation token is checked against.
struct TokenCheck {
    keys: Vec<Jwk>,
    audiences: Vec<String>,
    issuers: Vec<String>,
}

/// One RSA key of the JWKS.
struct Jwk {
    kid: Option<String>,
    key: signature::RsaPublicKeyComponents<Vec<u8>>,
}

fn bad(name: &'static str, reason: impl Into<String>) -> KeyError {
    KeyError::BadOption {
        name,
        reason: reason.into(),
    }
}

/// Largest key or JWKS file read (eight 4096-bit PEM keys are about 26 KB).
const MAX_FILE: u64 = 1 << 20;

/// A key file's text, at most [`MAX_FILE`] bytes (so `/dev/zero` is an error, not a hang).
/// Errors name the path and the kind of failure only.
fn read_file(name: &'static str, path: &Path) -> Result<String, KeyError> {
    use std::io::Read as _;
    let fail = |reason: String| bad(name, format!("cannot read {}: {reason}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(e.kind().to_string()))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.kind().to_string()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(fail("larger than 1 MiB".into()));
    }
    Ok(text)
}

/// The RSA private keys of a PEM file: every `… PRIVATE KEY` block (PKCS#8 or PKCS#1,
/// unencrypted), 2048 to 4096 bits; other blocks (a certificate) are skipped. The error
/// never quotes the file's content or OpenSSL's message about it.
fn load_rsa_keys(path: &Path) -> Result<Vec<Rsa<Private>>, KeyError> {
    const NAME: &str = "encryption_key_file";
    let text = read_file(NAME, path)?;
    let mut keys = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = rest.get(start..).unwrap_or_default();
        let label_end = block.get(11..).and_then(|b| b.find("-----")).unwrap_or(0) + 11;
        let label = block.get(11..label_end).unwrap_or_default().to_owned();
        let end_marker = format!("-----END {label}-----");
        let file = path.display();
        let Some(end) = block.find(&end_marker) else {
            return Err(bad(NAME, format!("{file}: a PEM block is not closed")));
        };
        let len = end + end_marker.len();
        let pem = block.get(..len).unwrap_or_default();
        rest = block.get(len..).unwrap_or_default();
        if !label.ends_with("PRIVATE KEY") {
            continue;
        }
        if label.contains("ENCRYPTED") {
            let reason = "the private key is encrypted; hookgate needs it unencrypted (protect the file instead)";
            return Err(bad(NAME, format!("{file}: {reason}")));
        }
        let unreadable = format!("{file}: a private key block is not a readable RSA key");
        let key = openssl::pkey::PKey::private_key_from_pem(pem.as_bytes())
            .ok()
            .and_then(|k| k.rsa().ok())
            .ok_or_else(|| bad(NAME, unreadable))?;
        let bits = key.size().saturating_mul(8);
        if !(2048..=4096).contains(&bits) {
            let reason = "Microsoft Graph takes 2048 to 4096";
            return Err(bad(NAME, format!("{file}: an RSA key is {bits} bits; {reason}")));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(bad(
            NAME,
            format!("{}: no PEM RSA private key found", path.display()),
        ));
    }
    if keys.len() > MAX_RSA_KEYS {
        return Err(bad(
            NAME,
            format!("{}: more than {MAX_RSA_KEYS} keys", path.display()),
        ));
    }
    Ok(keys)
}

/// Base64url without padding (a trailing `=` tolerated), as JWTs and JWKs write it.
fn b64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// The RSA keys of a JWKS file (`{"keys": [{"kty": "RSA", "kid", "n", "e"}, …]}`); keys of
/// other types are skipped.
fn load_jwks(path: &Path) -> Result<Vec<Jwk>, KeyError> {
    const NAME: &str = "jwks_file";
    let text = read_file(NAME, path)?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| bad(NAME, format!("{}: not JSON: {e}", path.display())))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(NAME, format!("{}: no `keys` array", path.display())))?;
    let mut keys = Vec::new();
    for (i, k) in list.iter().enumerate() {
        if k.get("kty").and_then(Value::as_str) != Some("RSA") {
            continue;
        }
        let part = |field: &str| {
            k.get(field)
                .and_then(Value::as_str)
                .and_then(b64url)
                .ok_or_else(|| {
                    bad(
                        NAME,
                        format!("{}: key #{i} has no base64url `{field}`", path.display()),
                    )
                })
        };
        let (mut n, e) = (part("n")?, part("e")?);
        while n.first() == Some(&0) {
            n.remove(0);
        }
        if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 8 {
            return Err(bad(
                NAME,
                format!("{}: key #{i} is not a 2048- to 8192-bit RSA key", path.display()),
            ));
        }
        keys.push(Jwk {
            kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
            key: signature::RsaPublicKeyComponents { n, e },
        });
    }
    if keys.is_empty() {
        return Err(bad(NAME, format!("{}: no RSA key", path.display())));
    }
    if keys.len() > MAX_JWKS_KEYS {
        return Err(bad(
            NAME,
            format!("{}: more than {MAX_JWKS_KEYS} keys", path.display()),
        ));
    }
    Ok(keys)
}

/// Ids listed in config: non-empty visible ASCII.
fn check_ids(name: &'static str, ids: &[String]) -> Result<(), KeyError> {
    match ids
        .iter()
        .position(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()))
    {
        Some(i) => Err(bad(name, format!("entry #{i} is empty or not visible ASCII"))),
        None => Ok(()),
    }
}

fn rich_keys(g: &GraphOptions) -> Result<RichKeys, KeyError> {
    check_ids("encryption_certificate_ids", &g.encryption_certificate_ids)?;
    check_ids("app_ids", &g.app_ids)?;
    check_ids("tenant_ids", &g.tenant_ids)?;
    let rsa = match &g.encryption_key_file {
        Some(path) => load_rsa_keys(path)?,
        None if !g.encryption_certificate_ids.is_empty() => {
            return Err(KeyError::MissingOption {
                name: "encryption_key_file",
            })
        }
        None => Vec::new(),
    };
    let jwt = match &g.jwks_file {
        Some(path) => {
            if g.app_ids.is_empty() {
                return Err(KeyError::MissingOption { name: "app_ids" });
            }
            if g.tenant_ids.is_empty() {
                return Err(KeyError::MissingOption { name: "tenant_ids" });
            }
            Some(TokenCheck {
                keys: load_jwks(path)?,
                audiences: g.app_ids.clone(),
                issuers: g
                    .tenant_ids
                    .iter()
                    .map(|t| format!("https://sts.windows.net/{t}/"))
                    .collect(),
            })
        }
        None if !g.app_ids.is_empty() || !g.tenant_ids.is_empty() => {
            return Err(KeyError::MissingOption { name: "jwks_file" })
        }
        None => None,
    };
    Ok(RichKeys {
        rsa,
        certificate_ids: g.encryption_certificate_ids.clone(),
        jwt,
    })
}

/// Standard base64 (as `encryptedContent` writes it); `Malformed` otherwise.
fn b64(text: &str) -> Result<Vec<u8>, VerifyError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| VerifyError::Malformed)
}

/// One item's `encryptedContent`: its `dataKey` decrypts under one of the keys and its
/// `dataSignature` is the HMAC-SHA256 of `data` under that key.
fn check_encrypted(keys: &RichKeys, content: &Value) -> Result<(), VerifyError> {
    let field = |name: &str| {
        content
            .get(name)
            .and_then(Value::as_str)
            .ok_or(VerifyError::Malformed)
    };
    let data = b64(field("data")?)?;
    let sig = b64(field("dataSignature")?)?;
    let wrapped = b64(field("dataKey")?)?;
    if sig.len() != 32 || !(256..=512).contains(&wrapped.len()) {
        return Err(VerifyError::Malformed);
    }
    if !keys.certificate_ids.is_empty() {
        let id = field("encryptionCertificateId")?;
        if !keys.certificate_ids.iter().any(|c| c == id) {
            return Err(VerifyError::Invalid);
        }
    }
    let mut buf = [0u8; 512];
    for rsa in &keys.rsa {
        if usize::try_from(rsa.size()).ok() != Some(wrapped.len()) {
            continue;
        }
        // OpenSSL's OAEP decoding is constant time; a failure says only "not this key".
        let Ok(n) = rsa.private_decrypt(&wrapped, &mut buf, Padding::PKCS1_OAEP) else {
            continue;
        };
        let Some(symmetric) = buf.get(..n).filter(|k| !k.is_empty()) else {
            continue;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, symmetric);
        buf.fill(0);
        if hmac::verify(&key, &data, &sig).is_ok() {
            return Ok(());
        }
    }
    buf.fill(0);
    Err(VerifyError::Invalid)
}

/// One validation token: an RS256 JWT signed by a JWKS key, for a configured app and tenant,
/// published by Microsoft Graph, within its lifetime.
fn check_token(check: &TokenCheck, token: &str, now: i64) -> Result<(), VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    let header: Value = b64url(h64)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(VerifyError::Malformed)?;
    let claims: Value = b64url(p64)
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(VerifyError::Malformed)?;
    let sig = b64url(s64).ok_or(VerifyError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(VerifyError::Invalid);
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let signed = token.get(..h64.len() + 1 + p64.len()).ok_or(VerifyError::Malformed)?;
    let verified = check
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .any(|k| {
            k.key
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    signed.as_bytes(),
                    &sig,
                )
                .is_ok()
        });
    if !verified {
        return Err(VerifyError::Invalid);
    }
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let issuer_ok = claim("iss").is_some_and(|iss| check.issuers.iter().any(|i| i == iss));
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => check.audiences.contains(aud),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| check.audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    let publisher_ok = claim("appid").or_else(|| claim("azp")) == Some(GRAPH_PUBLISHER);
    if !(issuer_ok && audience_ok && publisher_ok) {
        return Err(VerifyError::Invalid);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(VerifyError::Invalid)?;
    let nbf = claims.get("nbf").map(Value::as_i64);
    if now > exp.saturating_add(LEEWAY) {
        return Err(VerifyError::Expired);
    }
    match nbf {
        None => Ok(()),
        Some(Some(nbf)) if nbf <= now.saturating_add(LEEWAY) => Ok(()),
        Some(Some(_)) => Err(VerifyError::Expired),
        Some(None) => Err(VerifyError::Invalid),
    }
}

/// The rich-notification checks, after every `clientState` matched.
fn check_rich(keys: &RichKeys, doc: &Value, items: &[Value], now: i64) -> Result<(), VerifyError> {
    let encrypted = || items.iter().filter_map(|i| i.get("encryptedContent"));
    if let Some(check) = &keys.jwt {
        match doc.get("validationTokens") {
            None if encrypted().next().is_none() => {}
            None => return Err(VerifyError::Missing),
            Some(tokens) => {
                let tokens = tokens.as_array().ok_or(VerifyError::Malformed)?;
                if tokens.is_empty() || tokens.len() > MAX_TOKENS {
                    return Err(VerifyError::Malformed);
                }
                for token in tokens {
                    check_token(check, token.as_str().ok_or(VerifyError::Malformed)?, now)?;
                }
            }
        }
    }
    if !keys.rsa.is_empty() {
        for content in encrypted() {
            check_encrypted(keys, content)?;
        }
    }
    Ok(())
}

/// The `encryptedContent` Microsoft Graph sends for `resource` (JSON) to a subscription whose
/// certificate holds `public_key_pem` (a PEM public key, `BEGIN PUBLIC KEY`): a random
/// 32-byte key, AES-256-CBC of the resource with the key's first 16 bytes as IV, the
/// HMAC-SHA256 of that ciphertext, and the key RSA-OAEP-encrypted. For tests and tools.
pub fn encrypted_content(
    public_key_pem: &[u8],
    resource: &[u8],
    certificate_id: &str,
) -> Result<Value, KeyError> {
    let fail = |what: &str| bad("encryptedContent", format!("cannot {what}"));
    let rsa: Rsa<Public> =
        Rsa::public_key_from_pem(public_key_pem).map_err(|_| fail("read the public key"))?;
    let mut key = [0u8; 32];
    openssl::rand::rand_bytes(&mut key).map_err(|_| fail("make a random key"))?;
    let iv = key.get(..16).ok_or_else(|| fail("take the IV"))?;
    let cipher = openssl::symm::Cipher::aes_256_cbc();
    let data = openssl::symm::encrypt(cipher, &key, Some(iv), resource)
        .map_err(|_| fail("encrypt the resource"))?;
    let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &data);
    let mut wrapped = vec![0u8; usize::try_from(rsa.size()).map_err(|_| fail("size the key"))?];
    let n = rsa
        .public_encrypt(&key, &mut wrapped, Padding::PKCS1_OAEP)
        .map_err(|_| fail("encrypt the key"))?;
    wrapped.truncate(n);
    let std = base64::engine::general_purpose::STANDARD;
    Ok(serde_json::json!({
        "data": std.encode(&data),
        "dataSignature": std.encode(sig.as_ref()),
        "dataKey": std.encode(&wrapped),
        "encryptionCertificateId": certificate_id,
        "encryptionCertificateThumbprint": "0000000000000000000000000000000000000000",
    }))
}

/// A validation token safe to echo as text.
fn echoable_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !b"<>&\"'".contains(&b))
}

impl ProviderSpec for MicrosoftGraph {
    fn name(&self) -> &'static str {
        "microsoft-graph"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["graph"]
    }

    fn about(&self) -> About {
        About {
            headers: &[
                "(body) `value[].clientState`; rich: `encryptedContent.dataSignature`, `validationTokens`",
            ],
            signed: "nothing: each notification's `clientState` must equal the secret; optionally (`encryption_key_file`) `dataSignature` = base64 HMAC-SHA256(`data`) under the RSA-OAEP-decrypted `dataKey`, and (`jwks_file`) the RS256 `validationTokens`",
            secret: "the subscription's `clientState`",
            handshakes: &["`POST ?validationToken=…` (token echoed as text/plain, nosniff)"],
            docs: "https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn signature_in_body(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Token("[!-~]{1,64}")
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        let tokens = TokenSet::new(secrets)?;
        if options.graph.is_empty() {
            return Ok(Keys::Tokens(tokens));
        }
        Ok(Keys::TokensAnd(
            tokens,
            Box::new(rich_keys(&options.graph)?),
        ))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let doc: Value = serde_json::from_slice(req.body).map_err(|_| VerifyError::Malformed)?;
        let items = doc
            .get("value")
            .and_then(Value::as_array)
            .ok_or(VerifyError::Missing)?;
        if items.is_empty() || items.len() > MAX_ITEMS {
            return Err(VerifyError::Malformed);
        }
        for item in items {
            let state = item
                .get("clientState")
                .ok_or(VerifyError::Missing)?
                .as_str()
                .ok_or(VerifyError::Malformed)?;
            if !v.token_matches(state.as_bytes()) {
                return Err(VerifyError::Invalid);
            }
        }
        // Only now, with the shared secret proven: RSA and JWT work.
        match v.extra::<RichKeys>() {
            Some(keys) => check_rich(keys, &doc, items, req.now),
            None => Ok(()),
        }
    }

    super::common::signed_in_body!();

    /// One notification carrying `secret` as its `clientState`, the payload (as text) as
    /// its `resource`.
    fn sign_request(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Signed, KeyError> {
        let doc = serde_json::json!({"value": [{
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "clientState": secret,
            "changeType": "created",
            "resource": String::from_utf8_lossy(body),
        }]});
        Ok(Signed {
            headers: Vec::new(),
            body: doc.to_string().into_bytes(),
        })
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::pointer("/value/0/changeType")),
        )
    }

    fn early_handshake(&self, _: &Verifier, req: &Early<'_>) -> Option<Answer> {
        if req.method != http::Method::POST {
            return None;
        }
        let token = req.param("validationToken")?;
        Some(if echoable_token(&token) {
            Answer::text(token)
        } else {
            Answer::refuse(
                400,
                "bad_handshake",
                "validationToken is too long or holds characters that are not echoed",
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::{HeaderMap, Method};

    use crate::verify::test_support::*;
    use crate::verify::{Early, VerifyError};

    #[test]
    fn every_notification_must_carry_the_client_state() {
        let v = verifier(super::PROVIDER, &["secretClientValue"]);
        let h = HeaderMap::new();
        let one = |state: &str| {
            format!(r#"{{"value":[{{"clientState":"{state}","changeType":"created","resource":"Users/1/messages/2"}}]}}"#)
        };
        assert_eq!(v.verify(&h, one("secretClientValue").as_bytes(), NOW), Ok(()));
        assert_eq!(
            v.verify(&h, one("guess").as_bytes(), NOW),
            Err(VerifyError::Invalid)
        );
        let mixed = r#"{"value":[{"clientState":"secretClientValue"},{"clientState":"guess"}]}"#;
        assert_eq!(v.verify(&h, mixed.as_bytes(), NOW), Err(VerifyError::Invalid));
        for (body, expected) in [
            (r#"{"value":[{"changeType":"created"}]}"#, VerifyError::Missing),
            (r#"{"value":[]}"#, VerifyError::Malformed),
            (r#"{"other":1}"#, VerifyError::Missing),
            ("", VerifyError::Malformed),
        ] {
            assert_eq!(v.verify(&h, body.as_bytes(), NOW), Err(expected), "{body}");
        }
    }

    #[allow(clippy::indexing_slicing)]
    mod rich {
        //! Rich notifications, built exactly as Microsoft Graph builds them (its docs publish
        //! no worked example with a key, only placeholders): a random 32-byte key,
        //! AES-256-CBC of the resource with the key's first 16 bytes as IV, HMAC-SHA256 of
        //! the ciphertext, the key RSA-OAEP-encrypted with the subscriber's public key.

        use std::io::Write as _;

        use base64::Engine as _;
        use http::HeaderMap;
        use openssl::pkey::{PKey, Private};
        use openssl::rsa::Rsa;
        use serde_json::{json, Value};

        use super::super::{encrypted_content, GRAPH_PUBLISHER};
        use crate::verify::test_support::*;
        use crate::verify::{GraphOptions, KeyError, Options, Verifier, VerifyError};

        const STATE: &str = "secretClientValue";
        const RESOURCE: &[u8] = br#"{"id":"1565293727947","body":{"content":"hello"}}"#;

        fn key_pair(bits: u32) -> (Rsa<Private>, String, Vec<u8>) {
            let rsa = Rsa::generate(bits).unwrap();
            let private = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
            let public = rsa.public_key_to_pem().unwrap();
            (rsa, private, public)
        }

        fn file(text: &str) -> tempfile::NamedTempFile {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f
        }

        fn build(graph: GraphOptions) -> Result<Verifier, KeyError> {
            Verifier::with_options(
                super::super::PROVIDER,
                &strings(&[STATE]),
                Options {
                    graph,
                    ..Options::default()
                },
            )
        }

        fn with_key_file(path: &std::path::Path) -> Verifier {
            build(GraphOptions {
                encryption_key_file: Some(path.to_owned()),
                ..GraphOptions::default()
            })
            .unwrap()
        }

        fn notification(state: &str, content: Option<Value>) -> Vec<u8> {
            let mut item = json!({
                "subscriptionId": "76222963-cc7b-42d2-882d-8aaa69cb2ba3",
                "clientState": state,
                "changeType": "created",
                "resource": "teams('1')/channels('2')/messages('3')",
            });
            if let Some(c) = content {
                item["encryptedContent"] = c;
            }
            json!({"value": [item]}).to_string().into_bytes()
        }

        fn check(v: &Verifier, body: &[u8]) -> Result<(), VerifyError> {
            v.verify(&HeaderMap::new(), body, NOW)
        }

        /// `field` of `content` (base64) with one bit of its decoded middle byte flipped.
        fn flip(content: &Value, field: &str) -> Value {
            let std = base64::engine::general_purpose::STANDARD;
            let bytes = std.decode(content[field].as_str().unwrap()).unwrap();
            let mut out = content.clone();
            out[field] = Value::String(std.encode(flip_bit(&bytes)));
            out
        }

        #[test]
        fn encrypted_content_must_be_signed_with_the_key_the_private_key_decrypts() {
            let (_, private, public) = key_pair(2048);
            let key_file = file(&private);
            let v = with_key_file(key_file.path());
            let content = encrypted_content(&public, RESOURCE, "cert-1").unwrap();
            assert_eq!(check(&v, &notification(STATE, Some(content.clone()))), Ok(()));
            assert_eq!(check(&v, &notification(STATE, None)), Ok(()), "a basic notification");
            for field in ["dataSignature", "data", "dataKey"] {
                assert_eq!(
                    check(&v, &notification(STATE, Some(flip(&content, field)))),
                    Err(VerifyError::Invalid),
                    "{field} bit flip"
                );
            }
            // The key wrapped for another subscriber's certificate: no panic, Invalid.
            let (_, _, other_public) = key_pair(2048);
            let foreign = encrypted_content(&other_public, RESOURCE, "cert-1").unwrap();
            let mut spliced = content.clone();
            spliced["dataKey"] = foreign["dataKey"].clone();
            assert_eq!(
                check(&v, &notification(STATE, Some(spliced))),
                Err(VerifyError::Invalid)
            );
            assert_eq!(
                check(&v, &notification(STATE, Some(foreign))),
                Err(VerifyError::Invalid)
            );
            // Every item is checked.
            let mut two: Value =
                serde_json::from_slice(&notification(STATE, Some(content.clone()))).unwrap();
            let mut bad_item = two["value"][0].clone();
            bad_item["encryptedContent"] = flip(&content, "dataSignature");
            two["value"].as_array_mut().unwrap().push(bad_item);
            assert_eq!(
                check(&v, two.to_string().as_bytes()),
                Err(VerifyError::Invalid),
                "the second item"
            );
        }

        #[test]
        fn malformed_encrypted_content_is_refused_as_malformed() {
            let (_, private, public) = key_pair(2048);
            let key_file = file(&private);
            let v = with_key_file(key_file.path());
            let content = encrypted_content(&public, RESOURCE, "cert-1").unwrap();
            let mut cases = vec![json!("a string"), json!({})];
            for field in ["data", "dataSignature", "dataKey"] {
                let mut missing = content.clone();
                missing.as_object_mut().unwrap().remove(field);
                cases.push(missing);
                let mut not_base64 = content.clone();
                not_base64[field] = json!("%%%not base64%%%");
                cases.push(not_base64);
                let mut not_text = content.clone();
                not_text[field] = json!(42);
                cases.push(not_text);
            }
            let mut short_sig = content.clone();
            short_sig["dataSignature"] = json!("AAAA");
            cases.push(short_sig);
            let mut short_key = content.clone();
            short_key["dataKey"] = json!("AAAA");
            cases.push(short_key);
            for case in cases {
                assert_eq!(
                    check(&v, &notification(STATE, Some(case.clone()))),
                    Err(VerifyError::Malformed),
                    "{case}"
                );
            }
        }

        /// The client state is proven before any `encryptedContent` is read: a wrong one is
        /// `Invalid` even when the content is garbage (no RSA work for an anonymous client).
        #[test]
        fn the_client_state_is_checked_before_the_encrypted_content() {
            let (_, private, _) = key_pair(2048);
            let key_file = file(&private);
            let v = with_key_file(key_file.path());
            assert_eq!(
                check(&v, &notification("guess", Some(json!({})))),
                Err(VerifyError::Invalid)
            );
        }

        #[test]
        fn without_a_key_file_encrypted_content_is_passed_on_as_received() {
            let (_, _, public) = key_pair(2048);
            let v = build(GraphOptions::default()).unwrap();
            let content = encrypted_content(&public, RESOURCE, "cert-1").unwrap();
            assert_eq!(
                check(&v, &notification(STATE, Some(flip(&content, "data")))),
                Ok(())
            );
        }

        #[test]
        fn certificate_ids_and_rotation() {
            let (_, old_private, old_public) = key_pair(2048);
            let (_, new_private, new_public) = key_pair(3072);
            // A rotation: both keys in one file (with a certificate block, skipped).
            let key_file = file(&format!(
                "{old_private}-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n{new_private}"
            ));
            let v = build(GraphOptions {
                encryption_key_file: Some(key_file.path().to_owned()),
                encryption_certificate_ids: vec!["cert-old".into(), "cert-new".into()],
                ..GraphOptions::default()
            })
            .unwrap();
            for (public, id) in [(&old_public, "cert-old"), (&new_public, "cert-new")] {
                let content = encrypted_content(public, RESOURCE, id).unwrap();
                assert_eq!(check(&v, &notification(STATE, Some(content))), Ok(()), "{id}");
            }
            let content = encrypted_content(&new_public, RESOURCE, "cert-other").unwrap();
            assert_eq!(
                check(&v, &notification(STATE, Some(content.clone()))),
                Err(VerifyError::Invalid),
                "an id not configured"
            );
            let mut no_id = content;
            no_id.as_object_mut().unwrap().remove("encryptionCertificateId");
            assert_eq!(
                check(&v, &notification(STATE, Some(no_id))),
                Err(VerifyError::Malformed)
            );
        }

        #[test]
        fn unusable_key_files_are_start_up_errors_that_quote_no_key() {
            let (rsa, private, public) = key_pair(2048);
            let small = String::from_utf8(Rsa::generate(1024).unwrap().private_key_to_pem().unwrap()).unwrap();
            let encrypted = String::from_utf8(
                PKey::from_rsa(rsa)
                    .unwrap()
                    .private_key_to_pem_pkcs8_passphrase(
                        openssl::symm::Cipher::aes_256_cbc(),
                        b"pass",
                    )
                    .unwrap(),
            )
            .unwrap();
            let truncated = private.get(..private.len() - 40).unwrap().to_owned();
            let body_line = private.lines().nth(3).unwrap().to_owned();
            let garbage = private.replace(&body_line, &"*".repeat(body_line.len()));
            for (text, expected) in [
                ("", "no PEM RSA private key"),
                ("not a key at all", "no PEM RSA private key"),
                (String::from_utf8(public).unwrap().as_str(), "no PEM RSA private key"),
                (small.as_str(), "1024 bits"),
                (encrypted.as_str(), "encrypted"),
                (truncated.as_str(), "not closed"),
                (garbage.as_str(), "not a readable RSA key"),
            ] {
                let f = file(text);
                let e = build(GraphOptions {
                    encryption_key_file: Some(f.path().to_owned()),
                    ..GraphOptions::default()
                })
                .err()
                .unwrap_or_else(|| panic!("{expected}: accepted"));
                let message = e.to_string();
                assert!(message.starts_with("encryption_key_file: "), "{message}");
                assert!(message.contains(expected), "{expected}: {message}");
                assert!(!message.contains(&body_line), "{message}");
            }
            let e = build(GraphOptions {
                encryption_key_file: Some("/nonexistent/graph.pem".into()),
                ..GraphOptions::default()
            })
            .err()
            .unwrap();
            assert!(e.to_string().contains("cannot read /nonexistent/graph.pem"), "{e}");
            let e = build(GraphOptions {
                encryption_key_file: Some("/dev/zero".into()),
                ..GraphOptions::default()
            })
            .err()
            .unwrap();
            assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
            assert_eq!(
                build(GraphOptions {
                    encryption_certificate_ids: vec!["cert-1".into()],
                    ..GraphOptions::default()
                })
                .err(),
                Some(KeyError::MissingOption {
                    name: "encryption_key_file"
                })
            );
        }

        // -- validation tokens ------------------------------------------------------------

        const APP: &str = "8e460676-ae3f-4b1e-8790-ee0fb5d6148f";
        const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";

        fn b64url(bytes: &[u8]) -> String {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }

        fn jwks(keys: &[(&str, &Rsa<Private>)]) -> tempfile::NamedTempFile {
            let keys: Vec<Value> = keys
                .iter()
                .map(|(kid, rsa)| {
                    json!({"kty": "RSA", "use": "sig", "kid": kid,
                           "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec())})
                })
                .collect();
            // A key of another type first: skipped.
            let mut all = vec![json!({"kty": "EC", "kid": "skipped"})];
            all.extend(keys);
            file(&json!({ "keys": all }).to_string())
        }

        fn jwt(rsa: &Rsa<Private>, header: Value, claims: Value) -> String {
            let signed = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let pkey = PKey::from_rsa(rsa.clone()).unwrap();
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
            signer.update(signed.as_bytes()).unwrap();
            format!("{signed}.{}", b64url(&signer.sign_to_vec().unwrap()))
        }

        fn claims() -> Value {
            json!({
                "aud": APP,
                "iss": format!("https://sts.windows.net/{TENANT}/"),
                "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
                "appid": GRAPH_PUBLISHER, "tid": TENANT, "ver": "1.0",
            })
        }

        fn with_tokens(content: Option<Value>, tokens: &[String]) -> Vec<u8> {
            let mut doc: Value = serde_json::from_slice(&notification(STATE, content)).unwrap();
            doc["validationTokens"] = json!(tokens);
            doc.to_string().into_bytes()
        }

        #[test]
        fn validation_tokens_must_be_microsoft_graph_tokens_for_this_app_and_tenant() {
            let (signer, _, _) = key_pair(2048);
            let (stranger, _, _) = key_pair(2048);
            let keys = jwks(&[("kid-1", &signer)]);
            let v = build(GraphOptions {
                jwks_file: Some(keys.path().to_owned()),
                app_ids: vec!["another-app".into(), APP.into()],
                tenant_ids: vec![TENANT.into()],
                ..GraphOptions::default()
            })
            .unwrap();
            let header = json!({"typ": "JWT", "alg": "RS256", "kid": "kid-1"});
            let good = jwt(&signer, header.clone(), claims());
            assert_eq!(
                check(&v, &with_tokens(None, std::slice::from_ref(&good))),
                Ok(())
            );
            let no_kid = jwt(&signer, json!({"alg": "RS256"}), claims());
            assert_eq!(check(&v, &with_tokens(None, &[no_kid])), Ok(()), "no kid: every key");
            let v2 = {
                let mut c = claims();
                c.as_object_mut().unwrap().remove("appid");
                c["azp"] = json!(GRAPH_PUBLISHER);
                jwt(&signer, header.clone(), c)
            };
            assert_eq!(check(&v, &with_tokens(None, &[v2])), Ok(()), "a v2 token (azp)");
            let changed = |field: &str, value: Value| {
                let mut c = claims();
                c[field] = value;
                jwt(&signer, header.clone(), c)
            };
            for (case, token, expected) in [
                ("another app", changed("aud", json!("another-app-2")), VerifyError::Invalid),
                ("another tenant", changed("iss", json!("https://sts.windows.net/other/")), VerifyError::Invalid),
                ("another publisher", changed("appid", json!("11111111-2222-3333-4444-555555555555")), VerifyError::Invalid),
                ("expired", changed("exp", json!(NOW - 301)), VerifyError::Expired),
                ("not yet valid", changed("nbf", json!(NOW + 301)), VerifyError::Expired),
                ("exp not a number", changed("exp", json!("soon")), VerifyError::Invalid),
                ("signed by a stranger", jwt(&stranger, header.clone(), claims()), VerifyError::Invalid),
                ("another kid", jwt(&signer, json!({"alg": "RS256", "kid": "kid-2"}), claims()), VerifyError::Invalid),
                ("alg none", jwt(&signer, json!({"alg": "none", "kid": "kid-1"}), claims()), VerifyError::Invalid),
                ("HS256", jwt(&signer, json!({"alg": "HS256", "kid": "kid-1"}), claims()), VerifyError::Invalid),
                ("two parts", "e30.e30".to_owned(), VerifyError::Malformed),
                ("not base64", "%%.%%.%%".to_owned(), VerifyError::Malformed),
            ] {
                assert_eq!(check(&v, &with_tokens(None, &[token])), Err(expected), "{case}");
            }
            // Within the leeway.
            assert_eq!(check(&v, &with_tokens(None, &[changed("exp", json!(NOW - 300))])), Ok(()));
            assert_eq!(check(&v, &with_tokens(None, &[changed("nbf", json!(NOW + 300))])), Ok(()));
            // A payload swapped under a good signature.
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            let mut c = claims();
            c["aud"] = json!("another-app");
            parts[1] = b64url(c.to_string().as_bytes());
            assert_eq!(
                check(&v, &with_tokens(None, &[parts.join(".")])),
                Err(VerifyError::Invalid),
                "a tampered payload"
            );
            // All tokens must verify.
            let expired = changed("exp", json!(NOW - 4000));
            assert_eq!(
                check(&v, &with_tokens(None, &[good.clone(), expired])),
                Err(VerifyError::Expired)
            );
            assert_eq!(check(&v, &with_tokens(None, &[])), Err(VerifyError::Malformed));
            // Encrypted content needs tokens; a basic notification does not.
            let (_, _, public) = key_pair(2048);
            let content = encrypted_content(&public, RESOURCE, "cert-1").unwrap();
            assert_eq!(
                check(&v, &notification(STATE, Some(content.clone()))),
                Err(VerifyError::Missing)
            );
            assert_eq!(check(&v, &with_tokens(Some(content), &[good])), Ok(()));
            assert_eq!(check(&v, &notification(STATE, None)), Ok(()));
        }

        #[test]
        fn token_settings_need_each_other_and_a_readable_jwks() {
            let (signer, _, _) = key_pair(2048);
            let keys = jwks(&[("kid-1", &signer)]);
            let with = |jwks_file: Option<std::path::PathBuf>, app: bool, tenant: bool| {
                build(GraphOptions {
                    jwks_file,
                    app_ids: if app { vec![APP.into()] } else { vec![] },
                    tenant_ids: if tenant { vec![TENANT.into()] } else { vec![] },
                    ..GraphOptions::default()
                })
                .err()
            };
            let path = Some(keys.path().to_owned());
            assert_eq!(with(path.clone(), true, true), None);
            assert_eq!(with(path.clone(), false, true), Some(KeyError::MissingOption { name: "app_ids" }));
            assert_eq!(with(path, true, false), Some(KeyError::MissingOption { name: "tenant_ids" }));
            assert_eq!(with(None, true, true), Some(KeyError::MissingOption { name: "jwks_file" }));
            for (text, expected) in [
                ("{", "not JSON"),
                ("{}", "no `keys` array"),
                (r#"{"keys":[{"kty":"EC"}]}"#, "no RSA key"),
                (r#"{"keys":[{"kty":"RSA","n":"AQAB"}]}"#, "no base64url `e`"),
                (r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#, "not a 2048- to 8192-bit"),
            ] {
                let f = file(text);
                let e = with(Some(f.path().to_owned()), true, true).unwrap().to_string();
                assert!(e.starts_with("jwks_file: ") && e.contains(expected), "{text}: {e}");
            }
        }
    }

    #[test]
    fn the_validation_token_is_echoed_only_when_harmless() {
        let v = verifier(super::PROVIDER, &["secretClientValue"]);
        let h = HeaderMap::new();
        let post = |q: &'static str| {
            v.early_handshake(&Early {
                method: &Method::POST,
                headers: &h,
                query: Some(q),
            })
            .map(|a| (a.status, a.body))
        };
        assert_eq!(
            post("validationToken=Validation%3a+Testing+client+application+reachability"),
            Some((200, "Validation: Testing client application reachability".into()))
        );
        assert_eq!(post("validationToken=%3Cscript%3E").map(|a| a.0), Some(400));
        assert_eq!(post("other=1"), None, "an ordinary notification");
    }
}
