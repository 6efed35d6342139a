//! Building blocks shared by provider files whose scheme is a common shape, so such a
//! file is its description, its defaults and its vendor example, not a copy of the same
//! parsing code:
//!
//! * [`BodyHmac`]: one header holding `prefix` + hex/base64 HMAC of the body (GitHub's
//!   shape: Bitbucket, Lemon Squeezy, Razorpay, Typeform…);
//! * [`StripeLike`]: `t=<unix>,v1=<hex>[,v1=…]` over `"{t}.{body}"` (Calendly, Mux).
//!
//! Every rule of the module's helpers applies: a repeated header is malformed, the tag
//! is decoded to exactly its length before any MAC, comparisons are constant time.

use base64::Engine as _;
use http::HeaderMap;
use ring::hmac;

use crate::verify::{
    check_tolerance, decode_b64_exact, decode_hex_exact, header_str, hex_entry, hmac_parts,
    match_entries, parse_timestamp, scan_entries, About, Answer, B64Buf, Defaults, Early,
    HmacAlgorithm, KeyError, Keys, Options, ProviderSpec, Request, SigEncoding, Verifier,
    VerifyError, MAX_SIG_LEN,
};

/// A signature header: `prefix` followed by the encoded HMAC of some bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigHeader {
    /// The header, in the provider's spelling (looked up case-insensitively).
    pub header: &'static str,
    /// Literal text before the encoded tag (may be empty).
    pub prefix: &'static str,
    /// How the tag is written.
    pub encoding: SigEncoding,
    /// The HMAC's hash.
    pub algorithm: HmacAlgorithm,
}

impl SigHeader {
    /// Whether the header is there (the cheap admission check).
    pub fn present(&self, headers: &HeaderMap) -> bool {
        headers.contains_key(self.header)
    }

    /// HMAC keys for this hash over the secrets' bytes.
    pub fn keys(&self, secrets: &[String]) -> Keys {
        Keys::hmac(secrets, self.algorithm.ring())
    }

    /// Decodes the header's tag onto `buf` (exactly the hash's length).
    pub fn decode<'b>(
        &self,
        headers: &HeaderMap,
        buf: &'b mut B64Buf,
    ) -> Result<&'b [u8], VerifyError> {
        let value = header_str(headers, self.header)?;
        self.decode_value(value, buf)
    }

    /// Decodes one header value (prefix included) onto `buf`.
    pub fn decode_value<'b>(
        &self,
        value: &str,
        buf: &'b mut B64Buf,
    ) -> Result<&'b [u8], VerifyError> {
        let encoded = value
            .strip_prefix(self.prefix)
            .ok_or(VerifyError::Malformed)?;
        let len = self.algorithm.tag_len();
        match self.encoding {
            SigEncoding::Hex => {
                let out = buf.get_mut(..len).ok_or(VerifyError::Malformed)?;
                decode_hex_exact(encoded, out)?;
                Ok(out)
            }
            SigEncoding::Base64 => decode_b64_exact(encoded, len, buf),
        }
    }

    /// Checks the header against the HMAC of `parts` (concatenated) under every key.
    pub fn verify_parts(
        &self,
        keys: &[hmac::Key],
        headers: &HeaderMap,
        parts: &[&[u8]],
    ) -> Result<(), VerifyError> {
        let mut buf: B64Buf = [0u8; MAX_SIG_LEN + 8];
        let sig = self.decode(headers, &mut buf)?;
        if keys
            .iter()
            .any(|key| crate::verify::ct_eq(hmac_parts(key, parts).as_ref(), sig))
        {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    /// The header value for the HMAC of `parts` under `secret`.
    pub fn value(&self, secret: &[u8], parts: &[&[u8]]) -> String {
        let key = hmac::Key::new(self.algorithm.ring(), secret);
        let tag = hmac_parts(&key, parts);
        let encoded = match self.encoding {
            SigEncoding::Hex => hex::encode(tag.as_ref()),
            SigEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        };
        format!("{}{encoded}", self.prefix)
    }

    /// `(header, value)` for the HMAC of `parts` under `secret`.
    pub fn sign(&self, secret: &str, parts: &[&[u8]]) -> (String, String) {
        (
            self.header.to_string(),
            self.value(secret.as_bytes(), parts),
        )
    }
}

/// A provider whose whole scheme is one [`SigHeader`] over the raw body.
pub(crate) struct BodyHmac {
    /// Config name.
    pub name: &'static str,
    /// Other config names.
    pub aliases: &'static [&'static str],
    /// Description.
    pub about: About,
    /// The signature header.
    pub sig: SigHeader,
    /// Default delivery id and event type.
    pub defaults: fn() -> Defaults,
}

impl ProviderSpec for BodyHmac {
    fn name(&self) -> &'static str {
        self.name
    }

    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }

    fn about(&self) -> About {
        self.about
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(self.sig.keys(secrets))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        self.sig
            .verify_parts(v.hmac_keys(), req.headers, &[req.body])
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        self.sig.present(headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        Ok(vec![self.sig.sign(secret, &[body])])
    }

    fn defaults(&self) -> Defaults {
        (self.defaults)()
    }
}

/// A provider with Stripe's header shape: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
/// `"{t}.{body}"`, several `v1` allowed (one per active secret), other schemes skipped.
pub(crate) struct StripeLike {
    /// Config name.
    pub name: &'static str,
    /// Description.
    pub about: About,
    /// The header, in the provider's spelling.
    pub header: &'static str,
    /// Default delivery id and event type.
    pub defaults: fn() -> Defaults,
}

/// The `t` of a `t=…,v1=…` header: exactly one.
pub(crate) fn t_of(value: &str) -> Result<&str, VerifyError> {
    let mut found = None;
    for element in value.split(',') {
        if let Some(t) = element.strip_prefix("t=") {
            if found.is_some() {
                return Err(VerifyError::Malformed);
            }
            found = Some(t);
        }
    }
    found.ok_or(VerifyError::Malformed)
}

/// The values of the elements named `version` in a `k=v,k=v` list.
pub(crate) fn elements<'a>(
    value: &'a str,
    version: &'static str,
) -> impl Iterator<Item = &'a str> + Clone {
    value
        .split(',')
        .filter_map(|element| element.split_once('='))
        .filter(move |(key, _)| *key == version)
        .map(|(_, val)| val)
}

impl ProviderSpec for StripeLike {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> About {
        self.about
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_str(req.headers, self.header)?;
        let t = t_of(value)?;
        let timestamp = parse_timestamp(t)?;
        let entries = value.split(',').count();
        let scan = scan_entries(entries, elements(value, "v1"), hex_entry::<32>(32));
        if scan == Err(VerifyError::Malformed) {
            return scan;
        }
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        scan?;
        let tags = v
            .hmac_keys()
            .iter()
            .map(|key| hmac_parts(key, &[t.as_bytes(), b".", req.body]));
        match_entries(elements(value, "v1"), hex_entry::<32>(32), tags)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(self.header)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let t = now.to_string();
        let tag = hmac_parts(&key, &[t.as_bytes(), b".", body]);
        Ok(vec![(
            self.header.to_string(),
            format!("t={t},v1={}", hex::encode(tag.as_ref())),
        )])
    }

    fn defaults(&self) -> Defaults {
        (self.defaults)()
    }
}

/// The URL a URL-signing scheme signs: the source's `public_url`, then `?` and the
/// request's query string when it has one, as three pieces to feed a MAC without
/// copying. `Invalid` without a `public_url` (config refuses that before it runs).
pub(crate) fn signed_url<'a>(
    v: &'a Verifier,
    query: Option<&'a str>,
) -> Result<[&'a [u8]; 3], VerifyError> {
    let url = v
        .options()
        .public_url
        .as_deref()
        .ok_or(VerifyError::Invalid)?;
    Ok(match query {
        Some(q) => [url.as_bytes(), b"?", q.as_bytes()],
        None => [url.as_bytes(), b"", b""],
    })
}

/// A URL-signing scheme needs `public_url`.
pub(crate) fn require_public_url(options: &Options) -> Result<&str, KeyError> {
    options
        .public_url
        .as_deref()
        .ok_or(KeyError::MissingOption { name: "public_url" })
}

/// The `public_url` the shared tests use for URL-signing schemes.
pub(crate) fn example_url_options(url: &str) -> Options {
    Options {
        public_url: Some(url.to_string()),
        ..Options::default()
    }
}

/// A secret handed over by a handshake, with the answer to send once it is stored.
pub(crate) type Handover = Option<(String, Answer)>;

/// A [`BodyHmac`] scheme whose secret the provider hands over in its first, unsigned
/// request (trust on first use: Asana's `X-Hook-Secret`, Notion's `verification_token`).
/// `from_request` sees the request before its body is read, `from_body` after; each says
/// whether the request is the handover (see [`ProviderSpec::learn_handshake`] and
/// [`ProviderSpec::learn_from_body`]).
pub(crate) struct LearnedBodyHmac {
    /// The scheme once the secret is known.
    pub hook: BodyHmac,
    /// The handover, from method, headers and query.
    pub from_request: fn(&Early<'_>) -> Handover,
    /// The handover, from headers and body.
    pub from_body: fn(&HeaderMap, &[u8]) -> Handover,
}

/// For a [`LearnedBodyHmac`] whose handover is not seen before the body.
pub(crate) fn no_request_handover(_: &Early<'_>) -> Handover {
    None
}

/// For a [`LearnedBodyHmac`] whose handover is not in a body.
pub(crate) fn no_body_handover(_: &HeaderMap, _: &[u8]) -> Handover {
    None
}

impl ProviderSpec for LearnedBodyHmac {
    fn name(&self) -> &'static str {
        self.hook.name
    }

    fn about(&self) -> About {
        self.hook.about
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn learns_secret(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        self.hook.keys(secrets, options)
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        self.hook.verify(v, req)
    }

    fn signature_present(&self, v: &Verifier, headers: &HeaderMap) -> bool {
        self.hook.signature_present(v, headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        self.hook.sign(secret, body, now, options)
    }

    fn defaults(&self) -> Defaults {
        self.hook.defaults()
    }

    fn learn_handshake(&self, req: &Early<'_>) -> Option<(String, Answer)> {
        (self.from_request)(req)
    }

    fn learn_from_body(&self, headers: &HeaderMap, body: &[u8]) -> Option<(String, Answer)> {
        (self.from_body)(headers, body)
    }
}
