//! Building blocks shared by provider files whose scheme is a common shape, so such a
//! file is its description, its defaults and its vendor example, not a copy of the same
//! parsing code:
//!
//! * [`BodyHmac`]: one header holding `prefix` + hex/base64 HMAC of the body (GitHub's
//!   shape: Bitbucket, Lemon Squeezy, Razorpay, Typeform…);
//! * [`BodyHmacWithEarly`]: the same with a handshake answered before the body (Dropbox,
//!   Meta, WooCommerce);
//! * [`StripeLike`]: `t=<unix>,v1=<hex>[,v1=…]` over `"{t}.{body}"` (Stripe, Calendly, Mux);
//! * [`read_kv_header`]: one pass over a `k=v,k=v` signature header (Stripe's shape,
//!   Paddle, PagerDuty).
//!
//! Every rule of the module's helpers applies: a repeated header is malformed, the tag
//! is decoded to exactly its length before any MAC, comparisons are constant time.

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use ring::hmac;

use crate::verify::{
    check_tolerance, decode_b64_exact, decode_hex_exact, header_bytes, hex_entry, hmac_parts,
    parse_timestamp, About, Answer, B64Buf, Defaults, Early, HmacAlgorithm, KeyError, Keys,
    Options, ProviderSpec, Request, SigEncoding, Sigs, Verifier, VerifyError, MAX_SIG_LEN,
};

/// A signature header: `prefix` followed by the encoded HMAC of some bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigHeader {
    /// The header, in the provider's spelling (what `sign` emits).
    pub header: &'static str,
    /// The same name, lowercase and prepared (`header_name!`), for the lookups.
    pub name: &'static HeaderName,
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
        headers.contains_key(self.name)
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
        let value = header_bytes(headers, self.name)?;
        self.decode_value(value, buf)
    }

    /// Decodes one header value (prefix included) onto `buf`.
    pub fn decode_value<'b>(
        &self,
        value: &[u8],
        buf: &'b mut B64Buf,
    ) -> Result<&'b [u8], VerifyError> {
        let encoded = value
            .strip_prefix(self.prefix.as_bytes())
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
        check_parts(keys, sig, parts)
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

/// Checks a decoded signature against the HMAC of `parts` (concatenated, never copied)
/// under every key, in constant time.
pub(crate) fn check_parts(
    keys: &[hmac::Key],
    sig: &[u8],
    parts: &[&[u8]],
) -> Result<(), VerifyError> {
    if keys
        .iter()
        .any(|key| crate::verify::ct_eq(hmac_parts(key, parts).as_ref(), sig))
    {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
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

/// The [`ProviderSpec`] methods of a scheme whose signature (or secret) travels in the body
/// (Adyen, Microsoft Graph, Mailgun): nothing to look for before the body is read, and no
/// headers to sign — `sign_request` builds the whole signed body instead.
macro_rules! signed_in_body {
    () => {
        fn signature_present(&self, _: &$crate::verify::Verifier, _: &::http::HeaderMap) -> bool {
            true
        }

        fn sign(
            &self,
            _: &str,
            _: &[u8],
            _: i64,
            _: &$crate::verify::Options,
        ) -> Result<Vec<(String, String)>, $crate::verify::KeyError> {
            Ok(Vec::new())
        }
    };
}
pub(crate) use signed_in_body;

/// The [`ProviderSpec`] methods of a scheme that wraps a [`BodyHmac`] in `self.hook` and
/// adds a handshake: everything but the handshake is the wrapped scheme's.
macro_rules! delegate_to_body_hmac {
    () => {
        fn name(&self) -> &'static str {
            self.hook.name
        }

        fn aliases(&self) -> &'static [&'static str] {
            self.hook.aliases
        }

        fn about(&self) -> About {
            self.hook.about
        }

        fn signs_body_only(&self) -> bool {
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
    };
}

/// A [`BodyHmac`] scheme with a request answered before its body is read or verified
/// (Dropbox's and Meta's `GET` challenges, WooCommerce's creation ping): the file is the
/// scheme's description and its `early` function.
pub(crate) struct BodyHmacWithEarly {
    /// The scheme.
    pub hook: BodyHmac,
    /// See [`ProviderSpec::early_handshake`].
    pub early: fn(&Verifier, &Early<'_>) -> Option<Answer>,
}

impl ProviderSpec for BodyHmacWithEarly {
    delegate_to_body_hmac!();

    fn early_handshake(&self, v: &Verifier, req: &Early<'_>) -> Option<Answer> {
        (self.early)(v, req)
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
    /// The same name, lowercase and prepared (`header_name!`), for the lookups.
    pub header_name: &'static HeaderName,
    /// Default delivery id and event type.
    pub defaults: fn() -> Defaults,
}

/// One pass over a `k=v<sep>k=v…` signature header (Stripe's `t=…,v1=…`, Paddle's
/// `ts=…;h1=…`, PagerDuty's `v1=…,v1=…`): returns the value of the element `ts_key`
/// (`Malformed` when it is repeated; `None` when absent or when there is no `ts_key`) and decodes the hex HMAC-SHA256
/// of every element named `version` into `sigs` (see [`Sigs::read`] for the rules).
/// Elements without `=` and other keys are skipped.
pub(crate) fn read_kv_header<'a>(
    value: &'a [u8],
    sep: u8,
    ts_key: Option<&[u8]>,
    version: &[u8],
    sigs: &mut Sigs<32>,
) -> Result<Option<&'a [u8]>, VerifyError> {
    let mut ts = None;
    let mut repeated = false;
    let entries = value.split(|b| *b == sep).map(|element| {
        let eq = element.iter().position(|b| *b == b'=')?;
        let (key, val) = (element.get(..eq)?, element.get(eq + 1..)?);
        if key == version {
            Some(val)
        } else {
            if Some(key) == ts_key {
                repeated |= ts.is_some();
                ts = Some(val);
            }
            None
        }
    });
    sigs.read(entries, hex_entry::<32>(32))?;
    if repeated {
        return Err(VerifyError::Malformed);
    }
    Ok(ts)
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

    /// Reads the header once (decoding each `v1` once), judges the timestamp before any
    /// MAC, then computes one MAC per key and compares it with every `v1`.
    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_bytes(req.headers, self.header_name)?;
        let mut sigs = Sigs::new();
        let t = read_kv_header(value, b',', Some(b"t"), b"v1", &mut sigs)?
            .ok_or(VerifyError::Malformed)?;
        let timestamp = parse_timestamp(t)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let tags = v
            .hmac_keys()
            .iter()
            .map(|key| hmac_parts(key, &[t, b".", req.body]));
        sigs.matches(tags)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(self.header_name)
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
    delegate_to_body_hmac!();

    fn learns_secret(&self) -> bool {
        true
    }

    fn learn_handshake(&self, req: &Early<'_>) -> Option<(String, Answer)> {
        (self.from_request)(req)
    }

    fn learn_from_body(&self, headers: &HeaderMap, body: &[u8]) -> Option<(String, Answer)> {
        (self.from_body)(headers, body)
    }
}
