//! Webhook signature verification.
//!
//! Each provider's scheme lives in its own file; this file holds the shared
//! types ([`Provider`], [`Verifier`], the error enums) and the small parsing and
//! comparison helpers every scheme uses, so that each rule ("timestamp before
//! HMAC", "decode before compare", "non-ASCII header is malformed") is written
//! once.
//!
//! Keys are prepared once, when a [`Verifier`] is built from configuration, so
//! the request path never parses a secret. Secrets never reach `Debug` or
//! `Display` output, and no error says which secret was tried.

// The request path handles attacker-controlled bytes: make the compiler refuse
// the shortcuts that could panic on them rather than relying on review.
#![deny(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt;
use std::time::Duration;

use http::header::AsHeaderName;
use http::{HeaderMap, HeaderName};
use ring::{hmac, rand};

/// A `&'static HeaderName` made at compile time from a lowercase literal, usable in a
/// `const` (a provider's `SigHeader`): a lookup by a prepared name only hashes it, where a
/// lookup by `&str` parses and lowercases the name on every request.
macro_rules! header_name {
    ($name:literal) => {{
        static NAME: ::http::HeaderName = ::http::HeaderName::from_static($name);
        &NAME
    }};
}

pub mod catalog;
pub mod providers;
mod spec;
#[cfg(test)]
mod suite;

pub use providers::discord::discord_public_key_hex;
pub use providers::microsoft_graph::GraphOptions;
pub use spec::{
    percent_decode, query_param, About, Answer, Defaults, Doc, Early, ProviderSpec, SecretKind,
    Signed,
};

/// A webhook sender whose signature scheme hookgate knows: a handle on one entry of the
/// registry (`providers/mod.rs`). Cheap to copy; two handles are equal when they name
/// the same provider.
#[derive(Clone, Copy)]
pub struct Provider(&'static dyn ProviderSpec);

impl Provider {
    /// Every provider, in registry order, so callers can list valid names.
    pub const ALL: &'static [Provider] = providers::REGISTRY;

    /// A handle on `spec` (used by the registry).
    pub const fn of(spec: &'static dyn ProviderSpec) -> Provider {
        Provider(spec)
    }

    /// Looks a provider up by its config name or one of its aliases (exact, kebab-case;
    /// e.g. `"svix"` is an alias of `"standard-webhooks"`).
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL
            .iter()
            .find(|p| p.0.name() == name || p.0.aliases().contains(&name))
            .copied()
    }

    /// Like [`Provider::parse`], with a message listing every valid name on failure.
    pub fn lookup(name: &str) -> Result<Provider, String> {
        Provider::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown provider `{name}` (known: {})", names.join(", "))
        })
    }

    /// The provider's description and behaviour.
    pub fn spec(self) -> &'static dyn ProviderSpec {
        self.0
    }

    /// Whether the scheme signs (or checks) only the body, with nothing that changes per
    /// delivery (no signed timestamp or id): a captured request stays valid under a new
    /// delivery id, so such sources dedupe on the body's digest too.
    pub fn signs_body_only(self) -> bool {
        self.0.signs_body_only()
    }

    /// The canonical kebab-case name (never an alias), as used in config files, logs and
    /// metrics labels.
    pub fn as_str(&self) -> &'static str {
        self.0.name()
    }
}

impl PartialEq for Provider {
    fn eq(&self, other: &Provider) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for Provider {}

impl std::hash::Hash for Provider {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Hash function for `generic-hmac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HmacAlgorithm {
    /// HMAC-SHA1: only for legacy senders that offer nothing better.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl HmacAlgorithm {
    /// Parses `"sha1"`, `"sha256"` or `"sha512"`.
    pub fn parse(name: &str) -> Option<HmacAlgorithm> {
        match name {
            "sha1" => Some(HmacAlgorithm::Sha1),
            "sha256" => Some(HmacAlgorithm::Sha256),
            "sha512" => Some(HmacAlgorithm::Sha512),
            _ => None,
        }
    }

    /// The config name accepted by [`HmacAlgorithm::parse`].
    pub fn as_str(&self) -> &'static str {
        match self {
            HmacAlgorithm::Sha1 => "sha1",
            HmacAlgorithm::Sha256 => "sha256",
            HmacAlgorithm::Sha512 => "sha512",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            HmacAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
            HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// Tag length in bytes, so a received signature of any other length is
    /// rejected before any HMAC work.
    fn tag_len(self) -> usize {
        match self {
            HmacAlgorithm::Sha1 => 20,
            HmacAlgorithm::Sha256 => 32,
            HmacAlgorithm::Sha512 => 64,
        }
    }
}

/// How a `generic-hmac` signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigEncoding {
    /// Hex digits; either case is accepted when verifying, lowercase is emitted.
    Hex,
    /// Standard base64 alphabet with padding.
    Base64,
}

impl SigEncoding {
    /// Parses `"hex"` or `"base64"`.
    pub fn parse(name: &str) -> Option<SigEncoding> {
        match name {
            "hex" => Some(SigEncoding::Hex),
            "base64" => Some(SigEncoding::Base64),
            _ => None,
        }
    }

    /// The config name accepted by [`SigEncoding::parse`].
    pub fn as_str(&self) -> &'static str {
        match self {
            SigEncoding::Hex => "hex",
            SigEncoding::Base64 => "base64",
        }
    }
}

/// Options only generic-hmac uses.
///
/// The header value is `prefix` followed by the encoded
/// `HMAC(algorithm, secret, body)`; the prefix is matched exactly and
/// case-sensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmacOptions {
    /// Header that carries the signature.
    pub header: HeaderName,
    /// Hash function of the HMAC.
    pub algorithm: HmacAlgorithm,
    /// Encoding of the tag after the prefix.
    pub encoding: SigEncoding,
    /// Literal text before the encoded tag (may be empty), e.g. `"sha256="`.
    pub prefix: String,
}

/// Why a request failed verification. Stable codes for the HTTP error body.
///
/// The messages are deliberately generic: they never contain a secret, a
/// computed signature, or which configured secret was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required signature, timestamp, id or token header is absent.
    #[error("a required signature header is missing")]
    Missing,
    /// A signature header is present but cannot be parsed (wrong prefix, bad
    /// encoding, wrong length, non-visible-ASCII bytes, non-integer
    /// timestamp, or the header repeated).
    #[error("the signature header is malformed")]
    Malformed,
    /// The request is well-formed but no configured secret produced a matching
    /// signature.
    #[error("the signature does not match")]
    Invalid,
    /// The signed timestamp is further from now than the tolerance, in either
    /// direction.
    #[error("the signed timestamp is outside the allowed tolerance")]
    Expired,
}

impl VerifyError {
    /// Stable machine-readable code for the HTTP error body; clients may match
    /// on it, so these strings never change.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Missing => "signature_missing",
            VerifyError::Malformed => "signature_malformed",
            VerifyError::Invalid => "signature_invalid",
            VerifyError::Expired => "timestamp_out_of_tolerance",
        }
    }
}

/// Why a verifier (or a signature) could not be built from config: the caller
/// must refuse to start that route rather than accept unsigned traffic.
///
/// `index` is the 0-based position in the configured secret list, so an
/// operator can find the bad entry without the message ever quoting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The secret list is empty.
    #[error("no secrets are configured")]
    NoSecrets,
    /// A secret is the empty string.
    #[error("secret #{index} is empty")]
    EmptySecret {
        /// 0-based position in the secret list.
        index: usize,
    },
    /// A secret is present but unusable for this provider.
    #[error("secret #{index} is unusable: {reason}")]
    BadSecret {
        /// 0-based position in the secret list.
        index: usize,
        /// Fixed explanation; never contains secret material.
        reason: &'static str,
    },
    /// `generic-hmac` was selected without [`GenericHmacOptions`].
    #[error("generic-hmac needs signature options (header, algorithm, encoding, prefix)")]
    MissingOptions,
    /// The provider needs a per-source option that is not set.
    #[error("this provider needs `{name}` set on the source")]
    MissingOption {
        /// The config key.
        name: &'static str,
    },
    /// A per-source option is set but unusable (a key file that cannot be read or holds
    /// no usable key…).
    #[error("{name}: {reason}")]
    BadOption {
        /// The config key.
        name: &'static str,
        /// What is wrong; never contains secret material (at most a path).
        reason: String,
    },
}

/// Per-source settings a scheme may need besides its secrets.
#[derive(Clone)]
pub struct Options {
    /// How far a signed timestamp may be from now (timestamped schemes). Sub-second
    /// parts are rounded up to the next whole second.
    pub tolerance: Duration,
    /// `generic-hmac`'s signature description (required there, ignored elsewhere).
    pub generic: Option<GenericHmacOptions>,
    /// URL-signing schemes: the URL the provider calls (scheme, host, path), to which the
    /// request's query string is appended as received.
    pub public_url: Option<String>,
    /// The token a subscription handshake must present (Meta's `hub.verify_token`).
    pub verify_token: Option<String>,
    /// Microsoft Graph rich notifications: the decryption key file and the validation
    /// token settings (ignored elsewhere).
    pub graph: GraphOptions,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tolerance: Duration::from_secs(300),
            generic: None,
            public_url: None,
            verify_token: None,
            graph: GraphOptions::default(),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("tolerance", &self.tolerance)
            .field("generic", &self.generic)
            .field("public_url", &self.public_url)
            .field(
                "verify_token",
                &self.verify_token.as_ref().map(|_| "<redacted>"),
            )
            .field("graph", &self.graph)
            .finish()
    }
}

impl Options {
    /// Tolerance in whole seconds, rounded up (a `500ms` tolerance is one second, not
    /// zero, so it does not refuse every request).
    pub fn tolerance_secs(&self) -> u64 {
        let t = self.tolerance;
        t.as_secs().saturating_add(u64::from(t.subsec_nanos() > 0))
    }
}

/// One request as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
    /// The query string as received (without `?`), if any.
    pub query: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
}

/// Prepared key material, built once from config. A scheme asks for the kind it made;
/// any other kind reads as "no keys" (so a mismatch can only fail closed).
pub enum Keys {
    /// HMAC keys (any hash).
    Hmac(Vec<hmac::Key>),
    /// Shared tokens echoed by the sender.
    Tokens(TokenSet),
    /// Ed25519 public keys.
    Ed25519(Vec<Ed25519PublicKey>),
    /// ECDSA P-256 public keys, uncompressed points (`04 || x || y`).
    EcdsaP256(Vec<[u8; 65]>),
    /// HMAC keys, and for each secret a SHA-256 context that has absorbed it (schemes
    /// that also accept an unkeyed `SHA-256(secret + …)`, HubSpot's v1/v2): the request
    /// path clones the context instead of keeping the secret's text.
    HmacAndDigest(Vec<hmac::Key>, Vec<ring::digest::Context>),
    /// Shared tokens, and key material of the provider's own kind besides (Microsoft
    /// Graph: the RSA keys that decrypt `encryptedContent.dataKey`, the JWKS of its
    /// validation tokens), read back with [`Verifier::extra`].
    TokensAnd(TokenSet, Box<dyn std::any::Any + Send + Sync>),
}

impl Keys {
    /// HMAC keys over the secrets' bytes.
    pub fn hmac(secrets: &[String], algorithm: hmac::Algorithm) -> Keys {
        Keys::Hmac(
            secrets
                .iter()
                .map(|s| hmac::Key::new(algorithm, s.as_bytes()))
                .collect(),
        )
    }

    fn len(&self) -> usize {
        match self {
            Keys::Hmac(k) => k.len(),
            Keys::Tokens(t) | Keys::TokensAnd(t, _) => t.tags.len(),
            Keys::Ed25519(k) => k.len(),
            Keys::EcdsaP256(k) => k.len(),
            Keys::HmacAndDigest(k, _) => k.len(),
        }
    }
}

/// A ready-to-use verifier: keys pre-parsed at config load (ring HMAC keys built once,
/// Ed25519 public keys decoded once, `whsec_` secrets base64-decoded once).
pub struct Verifier {
    provider: Provider,
    tolerance_secs: u64,
    options: Options,
    keys: Keys,
}

type Ed25519PublicKey = ed25519_dalek::VerifyingKey;

impl Verifier {
    /// Builds a verifier, failing closed on an empty list, an empty secret, or a secret
    /// the provider cannot use. `generic` is required for `generic-hmac`
    /// ([`KeyError::MissingOptions`] otherwise) and ignored for every other provider.
    pub fn new(
        provider: Provider,
        secrets: &[String],
        tolerance: Duration,
        generic: Option<GenericHmacOptions>,
    ) -> Result<Verifier, KeyError> {
        Verifier::with_options(
            provider,
            secrets,
            Options {
                tolerance,
                generic,
                ..Options::default()
            },
        )
    }

    /// Builds a verifier with every per-source option.
    pub fn with_options(
        provider: Provider,
        secrets: &[String],
        options: Options,
    ) -> Result<Verifier, KeyError> {
        if secrets.is_empty() && !provider.0.learns_secret() {
            return Err(KeyError::NoSecrets);
        }
        if let Some(index) = secrets.iter().position(|s| s.is_empty()) {
            return Err(KeyError::EmptySecret { index });
        }
        let keys = provider.0.keys(secrets, &options)?;
        Ok(Verifier {
            provider,
            tolerance_secs: options.tolerance_secs(),
            options,
            keys,
        })
    }

    /// Verify the exact raw bytes, with no query string. `now` = unix seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        self.verify_request(&Request {
            headers,
            body,
            query: None,
            now,
        })
    }

    /// Verify one request. Constant time; any one of the secrets may match (rotation).
    ///
    /// Comparisons of secret-derived values are constant-time; the loop stops at the
    /// first matching secret, which reveals only *that* some secret matched, never
    /// anything about its value. Timestamps are checked before any HMAC is computed, so
    /// stale or far-future requests cost no crypto.
    pub fn verify_request(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        self.provider.0.verify(self, req)
    }

    /// Whether this verifier holds no key yet (a provider that learns its secret on first
    /// contact, before that contact).
    pub fn has_no_keys(&self) -> bool {
        self.keys.len() == 0
    }

    /// Whether the request carries the header its signature (or token) travels in: the
    /// cheap check made before a request takes a slot or its body is read. A `false`
    /// answer is what [`Verifier::verify`] would say too ([`VerifyError::Missing`]).
    pub fn signature_present(&self, headers: &HeaderMap) -> bool {
        self.provider.0.signature_present(self, headers)
    }

    /// Which provider this verifier checks (an alias reports as its provider).
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The source's options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The timestamp tolerance in whole seconds.
    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance_secs
    }

    /// A request answered before its body is read (see
    /// [`ProviderSpec::early_handshake`]).
    pub fn early_handshake(&self, req: &Early<'_>) -> Option<Answer> {
        self.provider.0.early_handshake(self, req)
    }

    /// The HMAC keys (empty if this verifier holds another kind).
    pub fn hmac_keys(&self) -> &[hmac::Key] {
        match &self.keys {
            Keys::Hmac(k) | Keys::HmacAndDigest(k, _) => k,
            _ => &[],
        }
    }

    /// The SHA-256 contexts that have absorbed each secret (empty if this verifier holds
    /// another kind of key).
    pub(crate) fn secret_digests(&self) -> &[ring::digest::Context] {
        match &self.keys {
            Keys::HmacAndDigest(_, d) => d,
            _ => &[],
        }
    }

    /// Whether `presented` is one of the configured tokens (false if this verifier holds
    /// another kind of key).
    pub fn token_matches(&self, presented: &[u8]) -> bool {
        match &self.keys {
            Keys::Tokens(t) | Keys::TokensAnd(t, _) => t.matches(presented),
            _ => false,
        }
    }

    /// The provider's own key material of type `T` (see [`Keys::TokensAnd`]); `None` when
    /// this verifier holds none, or another type.
    pub fn extra<T: 'static>(&self) -> Option<&T> {
        match &self.keys {
            Keys::TokensAnd(_, extra) => extra.downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The ECDSA P-256 public keys (empty if this verifier holds another kind).
    pub fn ecdsa_p256_keys(&self) -> &[[u8; 65]] {
        match &self.keys {
            Keys::EcdsaP256(k) => k,
            _ => &[],
        }
    }

    fn ed25519_keys(&self) -> &[Ed25519PublicKey] {
        match &self.keys {
            Keys::Ed25519(k) => k,
            _ => &[],
        }
    }
}

impl fmt::Debug for Verifier {
    // Only shapes, never key bytes: ring's own Debug for keys is safe today,
    // but a redacting impl here keeps that true whatever the key types become.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Verifier");
        d.field("provider", &self.provider)
            .field("tolerance_secs", &self.tolerance_secs)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()));
        if let Some(options) = &self.options.generic {
            d.field("generic", options);
        }
        d.finish()
    }
}

/// What `hookgate sign` prints: the headers the provider would send for this body, as
/// `(name, value)` pairs in the provider's usual spelling.
///
/// `secret` is what the provider's config takes, except for asymmetric schemes (Discord),
/// where it is the private key (see [`ProviderSpec::config_secret`]). For the token
/// schemes (GitLab, Telegram) the output necessarily contains the token, because that is
/// what those senders put on the wire. `generic` is required for `generic-hmac`.
pub fn sign(
    provider: Provider,
    secret: &str,
    body: &[u8],
    now: i64,
    generic: Option<&GenericHmacOptions>,
) -> Result<Vec<(String, String)>, KeyError> {
    sign_with(
        provider,
        secret,
        body,
        now,
        &Options {
            generic: generic.cloned(),
            ..Options::default()
        },
    )
}

/// [`sign`] with every per-source option (e.g. `public_url` for URL-signing schemes).
pub fn sign_with(
    provider: Provider,
    secret: &str,
    body: &[u8],
    now: i64,
    options: &Options,
) -> Result<Vec<(String, String)>, KeyError> {
    if secret.is_empty() {
        return Err(KeyError::EmptySecret { index: 0 });
    }
    provider.0.sign(secret, body, now, options)
}

/// The whole signed request (headers and body) for the payload `body`: what tests,
/// fuzzing, benches and `hookgate sign` send. For most schemes the body is `body`; those
/// that sign inside the body (Mailgun, Adyen) wrap it.
pub fn sign_request(
    provider: Provider,
    secret: &str,
    body: &[u8],
    now: i64,
    options: &Options,
) -> Result<Signed, KeyError> {
    if secret.is_empty() {
        return Err(KeyError::EmptySecret { index: 0 });
    }
    provider.0.sign_request(secret, body, now, options)
}

// ---------------------------------------------------------------------------
// Shared helpers. Private to the module tree; the provider files use them as
// `crate::verify::...`.
// ---------------------------------------------------------------------------

/// Largest binary signature any scheme carries (HMAC-SHA512 and Ed25519 are
/// both 64 bytes); decode buffers are sized from it so they live on the stack.
const MAX_SIG_LEN: usize = 64;

/// Longest base64 text that can encode [`MAX_SIG_LEN`] bytes; anything longer
/// is rejected before decoding.
const MAX_B64_LEN: usize = MAX_SIG_LEN.div_ceil(3) * 4;

/// Most signature headers carry one entry; those that carry several (during a secret
/// rotation) never need more than a handful. A header with more entries than this is
/// `Malformed`, so a request cannot make the verifier run an unbounded number of MACs.
pub(crate) const MAX_SIG_ENTRIES: usize = 16;

/// The decoded signatures of one header's supported entries, on the stack: each entry
/// is decoded once, and each key's tag (one MAC per key, whatever the number of
/// entries) is compared in constant time against all of them.
pub(crate) struct Sigs<const N: usize> {
    sigs: [[u8; N]; MAX_SIG_ENTRIES],
    len: usize,
    count: usize,
}

impl<const N: usize> Sigs<N> {
    /// No signature yet.
    pub(crate) fn new() -> Sigs<N> {
        Sigs {
            sigs: [[0u8; N]; MAX_SIG_ENTRIES],
            len: 0,
            count: 0,
        }
    }

    /// Reads a list of signature entries the multi-signature way, before any MAC is
    /// computed, in one pass: `entries` yields one item per entry of the header (every
    /// version counted), `Some(encoded signature)` for an entry of a version the scheme
    /// supports, `None` for any other; `decode` turns one signature into bytes (`None`: it
    /// does not decode).
    ///
    /// `Malformed` when there are more than [`MAX_SIG_ENTRIES`] entries, or when supported
    /// entries were offered and none decodes. An entry that does not decode beside one
    /// that does is skipped, not fatal: a spec's own multi-signature form may carry
    /// entries this verifier cannot read. When no supported entry was offered the list is
    /// empty and [`Sigs::matches`] says `Invalid` (nothing we accept was sent).
    pub(crate) fn read<E: AsRef<[u8]>>(
        &mut self,
        entries: impl Iterator<Item = Option<E>>,
        decode: impl Fn(&[u8], &mut [u8; N]) -> Option<usize>,
    ) -> Result<(), VerifyError> {
        let mut offered = false;
        for (index, entry) in entries.enumerate() {
            if index >= MAX_SIG_ENTRIES {
                return Err(VerifyError::Malformed);
            }
            let Some(text) = entry else { continue };
            offered = true;
            let Some(slot) = self.sigs.get_mut(self.count) else {
                continue;
            };
            if let Some(len) = decode(text.as_ref(), slot) {
                self.len = len;
                self.count += 1;
            }
        }
        if offered && self.count == 0 {
            return Err(VerifyError::Malformed);
        }
        Ok(())
    }

    /// Whether any decoded entry equals any of `tags` (pulled lazily, one per key; none
    /// is computed when the list is empty). Every entry is compared for each tag, in
    /// constant time.
    pub(crate) fn matches<T: AsRef<[u8]>>(
        &self,
        tags: impl Iterator<Item = T>,
    ) -> Result<(), VerifyError> {
        let sigs = self.sigs.get(..self.count).unwrap_or_default();
        if sigs.is_empty() {
            return Err(VerifyError::Invalid);
        }
        for tag in tags {
            let hit = sigs.iter().fold(false, |hit, sig| {
                hit | sig
                    .get(..self.len)
                    .is_some_and(|sig| ct_eq(tag.as_ref(), sig))
            });
            if hit {
                return Ok(());
            }
        }
        Err(VerifyError::Invalid)
    }
}

/// A [`Sigs::read`] decoder for hex signatures of exactly `len` bytes.
pub(crate) fn hex_entry<const N: usize>(
    len: usize,
) -> impl Fn(&[u8], &mut [u8; N]) -> Option<usize> {
    move |text, buf| {
        let out = buf.get_mut(..len)?;
        decode_hex_exact(text, out).ok().map(|()| len)
    }
}

/// A [`Sigs::read`] decoder for padded standard base64 of exactly `len` bytes.
pub(crate) fn b64_entry(len: usize) -> impl Fn(&[u8], &mut B64Buf) -> Option<usize> {
    move |text, buf| decode_b64_exact(text, len, buf).ok().map(<[u8]>::len)
}

/// Returns the single value of a required header as visible ASCII.
///
/// Absent → `Missing`. Repeated → `Malformed`: with two values there is no
/// safe choice of which one the sender signed, and picking one would let a
/// proxy-added header shadow the real one. Empty, or containing control or
/// non-ASCII bytes (tab included) → `Malformed`.
fn header_str<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Result<&str, VerifyError> {
    let bytes = header_bytes(headers, name)?;
    std::str::from_utf8(bytes).map_err(|_| VerifyError::Malformed)
}

/// [`header_str`] without the UTF-8 check, for values only hashed, compared or parsed
/// as bytes: the bytes are visible ASCII (so valid UTF-8 anyway), and the second scan
/// cost ~45–110 instructions a header (callgrind, `bench/verify-ir.sh`).
fn header_bytes<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Result<&[u8], VerifyError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(VerifyError::Missing)?;
    if values.next().is_some() {
        return Err(VerifyError::Malformed);
    }
    visible_ascii(value.as_bytes())
}

/// `bytes` if it is non-empty visible ASCII (no tab), `Malformed` otherwise.
fn visible_ascii(bytes: &[u8]) -> Result<&[u8], VerifyError> {
    // A fold without an early exit, so the check runs over whole vectors of bytes.
    let visible = bytes
        .iter()
        .fold(true, |ok, b| ok & (0x20..0x7f).contains(b));
    if bytes.is_empty() || !visible {
        return Err(VerifyError::Malformed);
    }
    Ok(bytes)
}

/// Most header values a request may carry for [`header_values`] to read them in one pass
/// over the map; with more, each name is looked up on its own (hashed), so a request with
/// many headers costs what it did before.
const ONE_PASS_MAX: usize = 32;

/// [`header_bytes`] of each of `names`, in one pass over the map when it holds at most
/// [`ONE_PASS_MAX`] values: a lookup hashes the name byte by byte and probes (~200
/// instructions for a 20-odd-byte custom name, callgrind), where a pass compares each
/// header's name with the few wanted (a length check, rarely a `memcmp`). Same answers,
/// name by name: `Missing`, `Malformed` when repeated or not visible ASCII, or the bytes.
fn header_values<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&HeaderName; N],
) -> [Result<&'h [u8], VerifyError>; N] {
    if headers.len() > ONE_PASS_MAX {
        return names.map(|name| header_bytes(headers, name));
    }
    let mut out = [Err(VerifyError::Missing); N];
    for (name, value) in headers {
        let Some(slot) = names
            .iter()
            .position(|wanted| *wanted == name)
            .and_then(|i| out.get_mut(i))
        else {
            continue;
        };
        *slot = match *slot {
            Err(VerifyError::Missing) => visible_ascii(value.as_bytes()),
            _ => Err(VerifyError::Malformed),
        };
    }
    out
}

/// Parses a unix-seconds timestamp: ASCII digits only (no sign, no spaces,
/// no fraction), at most 18 of them so it always fits an `i64`.
fn parse_timestamp(text: impl AsRef<[u8]>) -> Result<i64, VerifyError> {
    let text = text.as_ref();
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::Malformed);
    }
    // At most 18 digits: no overflow. A fold instead of `str::parse`, which re-checks
    // every digit and the sign (this runs on every timestamped request).
    Ok(text.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Parses an RFC 3339 date-time (`2020-01-01T00:00:00-07:00`, `…T10:11:12.634234626Z`)
/// into unix seconds (fractions dropped). Strict: four-digit year, two-digit fields,
/// `T` (or `t`), and `Z` or a `±HH:MM` offset; anything else is `Malformed`.
///
/// The first 19 bytes have fixed places: their 14 digits are checked in one pass and
/// read by position (a range lookup and a check per field cost ~100 instructions more,
/// on every request of the RFC 3339 schemes).
pub(crate) fn parse_rfc3339(text: impl AsRef<[u8]>) -> Result<i64, VerifyError> {
    let b = text.as_ref();
    let Some((head, tail)) = b.split_first_chunk::<19>() else {
        return Err(VerifyError::Malformed);
    };
    let [y0, y1, y2, y3, dash1, mo0, mo1, dash2, d0, d1, t, h0, h1, colon1, mi0, mi1, colon2, s0, s1] =
        *head;
    if !(dash1 == b'-'
        && dash2 == b'-'
        && matches!(t, b'T' | b't')
        && colon1 == b':'
        && colon2 == b':')
    {
        return Err(VerifyError::Malformed);
    }
    let digits = [y0, y1, y2, y3, mo0, mo1, d0, d1, h0, h1, mi0, mi1, s0, s1]
        .map(|c| i64::from(c.wrapping_sub(b'0')));
    if digits.iter().any(|d| *d > 9) {
        return Err(VerifyError::Malformed);
    }
    let [y0, y1, y2, y3, mo0, mo1, d0, d1, h0, h1, mi0, mi1, s0, s1] = digits;
    let year = y0 * 1000 + y1 * 100 + y2 * 10 + y3;
    let (month, day) = (mo0 * 10 + mo1, d0 * 10 + d1);
    let (hour, minute, second) = (h0 * 10 + h1, mi0 * 10 + mi1, s0 * 10 + s1);
    // The fraction's digits (dropped), then `Z` or `±HH:MM` and nothing after.
    let tail = match tail.split_first() {
        Some((b'.', fraction)) => {
            let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return Err(VerifyError::Malformed);
            }
            fraction.get(n..).unwrap_or_default()
        }
        _ => tail,
    };
    let offset = match *tail {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh0, oh1, b':', om0, om1] => {
            let o = [oh0, oh1, om0, om1].map(|c| i64::from(c.wrapping_sub(b'0')));
            if o.iter().any(|d| *d > 9) {
                return Err(VerifyError::Malformed);
            }
            let [oh0, oh1, om0, om1] = o;
            let (oh, om) = (oh0 * 10 + oh1, om0 * 10 + om1);
            if oh > 23 || om > 59 {
                return Err(VerifyError::Malformed);
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(VerifyError::Malformed),
    };
    unix_seconds([year, month, day, hour, minute, second], offset)
}

/// Seconds since the epoch of a civil date and time (`[year, month, day, hour, minute,
/// second]`, as written) at UTC offset `offset` seconds; `Malformed` for a date or time
/// that does not exist (a leap second, `:60`, is taken as written).
fn unix_seconds(
    [year, month, day, hour, minute, second]: [i64; 6],
    offset: i64,
) -> Result<i64, VerifyError> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = usize::try_from(month - 1)
        .ok()
        .and_then(|m| month_days.get(m))
        .copied()
        .ok_or(VerifyError::Malformed)?;
    if day < 1 || day > max_day || hour > 23 || minute > 59 || second > 60 {
        return Err(VerifyError::Malformed);
    }
    // Days from the civil date (Howard Hinnant's algorithm), in i64 throughout.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Rejects a timestamp more than `tolerance_secs` away from `now`, in either
/// direction: a far-future timestamp would otherwise let a captured request
/// be replayed for longer than the window. Widened to `i128` so no pair of
/// `i64` values can overflow.
fn check_tolerance(timestamp: i64, now: i64, tolerance_secs: u64) -> Result<(), VerifyError> {
    let skew = (i128::from(now) - i128::from(timestamp)).unsigned_abs();
    if skew > u128::from(tolerance_secs) {
        Err(VerifyError::Expired)
    } else {
        Ok(())
    }
}

/// The value of each byte as a hex digit; [`NOT_HEX`] for every other byte.
// Built at compile time: an index out of range would fail the build, not a request.
#[allow(clippy::indexing_slicing)]
const HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
/// Marks a non-hex byte in [`HEX_VALUES`]; any set high bit means "not a digit".
const NOT_HEX: u8 = 0xFF;

/// Decodes hex that must be exactly `out.len()` bytes long; any other length
/// or a non-hex digit is `Malformed`. Either letter case is accepted.
///
/// One table lookup per digit and one check at the end instead of a branch per
/// digit: this runs on every signed request (about 0.1 µs saved per 64 digits).
fn decode_hex_exact(text: impl AsRef<[u8]>, out: &mut [u8]) -> Result<(), VerifyError> {
    let text = text.as_ref();
    if text.len() != out.len() * 2 {
        return Err(VerifyError::Malformed);
    }
    let value = |b: u8| HEX_VALUES.get(usize::from(b)).copied().unwrap_or(NOT_HEX);
    let mut seen = 0u8;
    // Pairs as arrays: no slice pattern or length check per byte.
    for (byte, &[hi, lo]) in out.iter_mut().zip(text.as_chunks::<2>().0) {
        let (hi, lo) = (value(hi), value(lo));
        seen |= hi | lo;
        *byte = (hi << 4) | lo;
    }
    if seen & 0xF0 == 0 {
        Ok(())
    } else {
        Err(VerifyError::Malformed)
    }
}

/// Stack buffer for base64 decoding: a little larger than [`MAX_SIG_LEN`]
/// because the decoder asks for room for its length estimate, which can
/// exceed the exact decoded length by a couple of bytes.
type B64Buf = [u8; MAX_SIG_LEN + 8];

/// The value of each byte as a standard-alphabet base64 digit; [`NOT_HEX`] (any set high
/// bit) for every other byte, `=` included.
// Built at compile time: an index out of range would fail the build, not a request.
#[allow(clippy::indexing_slicing)]
const B64_VALUES: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decodes padded standard base64 that must decode to exactly `len` bytes: exactly
/// `4 * ceil(len / 3)` characters, `=` only as the final padding, and the unused bits of
/// the last digit zero (the canonical encoding, as the `base64` crate's `STANDARD`
/// engine demands); anything else is `Malformed`. Overlong input is rejected before
/// decoding so it cannot cost anything.
///
/// A table lookup per digit and one check at the end, like [`decode_hex_exact`]: the
/// general-purpose engine cost ~350 instructions for a 32-byte tag, this ~120 (callgrind,
/// `bench/verify-ir.sh`), on every request of the base64 schemes.
fn decode_b64_exact(
    text: impl AsRef<[u8]>,
    len: usize,
    buf: &mut B64Buf,
) -> Result<&[u8], VerifyError> {
    let text = text.as_ref();
    if text.len() > MAX_B64_LEN || text.len() != len.div_ceil(3) * 4 {
        return Err(VerifyError::Malformed);
    }
    let out = buf.get_mut(..len).ok_or(VerifyError::Malformed)?;
    let value = |b: u8| u32::from(B64_VALUES.get(usize::from(b)).copied().unwrap_or(NOT_HEX));
    let (mut seen, mut unused_bits) = (0u32, 0u32);
    // Quads and groups as arrays: no slice pattern or length check per group.
    let (quads, _) = text.as_chunks::<4>();
    let (groups, rest) = out.as_chunks_mut::<3>();
    let full = groups.len();
    for ([o0, o1, o2], &[a, b, c, d]) in groups.iter_mut().zip(quads) {
        let (a, b, c, d) = (value(a), value(b), value(c), value(d));
        seen |= a | b | c | d;
        let n = (a << 18) | (b << 12) | (c << 6) | d;
        *o0 = (n >> 16) as u8;
        *o1 = (n >> 8) as u8;
        *o2 = n as u8;
    }
    // The padded last quad: `xx==` for one byte left, `xxx=` for two.
    match (rest, quads.get(full)) {
        ([], None) => {}
        ([o0], Some(&[a, b, b'=', b'='])) => {
            let (a, b) = (value(a), value(b));
            seen |= a | b;
            unused_bits = b & 0x0F;
            *o0 = ((a << 2) | (b >> 4)) as u8;
        }
        ([o0, o1], Some(&[a, b, c, b'='])) => {
            let (a, b, c) = (value(a), value(b), value(c));
            seen |= a | b | c;
            unused_bits = c & 0x03;
            let n = (a << 10) | (b << 4) | (c >> 2);
            *o0 = (n >> 8) as u8;
            *o1 = n as u8;
        }
        _ => return Err(VerifyError::Malformed),
    }
    // A non-digit set a high bit of `seen`; a digit is < 64.
    if seen & !0x3F == 0 && unused_bits == 0 {
        Ok(out)
    } else {
        Err(VerifyError::Malformed)
    }
}

/// HMAC over several pieces without concatenating them, so schemes that sign
/// `prefix || body` never copy the body.
///
/// A run of two or more small pieces (an id, a separator, a timestamp) is gathered on the
/// stack and fed in one `update`: each `update` costs ~50 instructions besides hashing
/// (ring copies a partial block each time), more than the short copy. Large pieces (the
/// body) and a lone small piece are fed as they are.
fn hmac_parts(key: &hmac::Key, parts: &[&[u8]]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    let mut rest = parts;
    while let Some((first, tail)) = rest.split_first() {
        let mut total = 0;
        let run = rest
            .iter()
            .take_while(|part| {
                total += part.len();
                total <= GATHER
            })
            .count();
        match rest.split_at_checked(run) {
            Some((small, after)) if run >= 2 => {
                gather(&mut ctx, small);
                rest = after;
            }
            _ => {
                ctx.update(first);
                rest = tail;
            }
        }
    }
    ctx.sign()
}

/// Room for the small pieces [`hmac_parts`] gathers.
const GATHER: usize = 128;

/// Feeds `parts` (together at most [`GATHER`] bytes) in one `update`.
fn gather(ctx: &mut hmac::Context, parts: &[&[u8]]) {
    let mut buf = [0u8; GATHER];
    let mut held = 0;
    for part in parts {
        if let Some(room) = buf.get_mut(held..held + part.len()) {
            room.copy_from_slice(part);
            held += part.len();
        }
    }
    ctx.update(buf.get(..held).unwrap_or_default());
}

/// Constant-time equality for two HMAC tags.
///
/// `ring::hmac::verify` only accepts one contiguous message, and the schemes
/// that sign `prefix || body` compute their tag with [`hmac_parts`] to avoid
/// copying the body; ring's own slice comparison is deprecated for outside
/// use, so this is the small XOR fold it would do. The lengths compared are
/// fixed digest sizes (public), so the early length check leaks nothing;
/// `black_box` stops the optimiser turning the fold into an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Shared-token schemes (GitLab, Telegram): the sender echoes the secret
/// itself, so the check is an equality test on the secret.
///
/// Comparing raw strings would leak their length and, with a naive compare,
/// a matching prefix. Instead each configured token is replaced at load time
/// by its HMAC under a random key made for this verifier, and a presented
/// token is checked with `ring::hmac::verify` against those tags: the
/// comparison is constant-time over fixed-length tags and the random key
/// means an attacker cannot precompute anything about them.
pub struct TokenSet {
    key: hmac::Key,
    tags: Vec<hmac::Tag>,
}

impl TokenSet {
    /// Prepares `secrets` for constant-time comparison.
    pub fn new(secrets: &[String]) -> Result<TokenSet, KeyError> {
        let rng = rand::SystemRandom::new();
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| KeyError::BadSecret {
                index: 0,
                reason: "could not create a comparison key: the system random generator failed",
            })?;
        let tags = secrets
            .iter()
            .map(|s| hmac::sign(&key, s.as_bytes()))
            .collect();
        Ok(TokenSet { key, tags })
    }

    fn matches(&self, presented: &[u8]) -> bool {
        self.tags
            .iter()
            .any(|tag| hmac::verify(&self.key, presented, tag.as_ref()).is_ok())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub(crate) mod test_support {
    //! Helpers shared by every provider's tests, so each file's tests read as
    //! the scheme's rules rather than as HeaderMap plumbing.

    use std::time::Duration;

    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::{sign_with, GenericHmacOptions, Options, Provider, Verifier};

    /// A fixed "current time" for tests.
    pub(crate) const NOW: i64 = 1_700_000_000;
    /// The tolerance hookgate's caller uses.
    pub(crate) const TOLERANCE: Duration = Duration::from_secs(300);
    /// [`TOLERANCE`] in seconds, for timestamp arithmetic.
    pub(crate) const TOL: i64 = 300;
    /// A JSON-ish body with bytes worth flipping.
    pub(crate) const BODY: &[u8] = br#"{"event":"ping","id":42}"#;

    pub(crate) fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The provider's example options (e.g. its `public_url`) with [`TOLERANCE`].
    pub(crate) fn options(provider: Provider) -> Options {
        Options {
            tolerance: TOLERANCE,
            ..provider.spec().example_options()
        }
    }

    /// A verifier of `provider` with its example options.
    pub(crate) fn verifier(provider: Provider, secrets: &[&str]) -> Verifier {
        Verifier::with_options(provider, &strings(secrets), options(provider))
            .expect("verifier builds")
    }

    /// The whole request `provider` sends for the payload `body` at `now`.
    pub(crate) fn signed_request_by(
        provider: Provider,
        secret: &str,
        body: &[u8],
        now: i64,
    ) -> super::Signed {
        super::sign_request(provider, secret, body, now, &options(provider)).expect("signs")
    }

    /// What `provider` sends for `body` at `now`, with its example options.
    pub(crate) fn signed_by(
        provider: Provider,
        secret: &str,
        body: &[u8],
        now: i64,
    ) -> Vec<(String, String)> {
        sign_with(provider, secret, body, now, &options(provider)).expect("signs")
    }

    pub(crate) fn generic_verifier(secrets: &[&str], options: &GenericHmacOptions) -> Verifier {
        Verifier::new(
            super::providers::generic_hmac::PROVIDER,
            &strings(secrets),
            TOLERANCE,
            Some(options.clone()),
        )
        .expect("verifier builds")
    }

    pub(crate) fn header_map(pairs: &[(String, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        map
    }

    /// Headers with `name` (case-insensitive) replaced by a raw byte value,
    /// so tests can inject obs-text and other bytes `&str` cannot carry.
    pub(crate) fn with_raw(pairs: &[(String, String)], name: &str, value: &[u8]) -> HeaderMap {
        let mut map = header_map(pairs);
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(value).expect("raw header value"),
        );
        map
    }

    /// Headers with `name` (case-insensitive) set to `value`.
    pub(crate) fn with(pairs: &[(String, String)], name: &str, value: &str) -> HeaderMap {
        with_raw(pairs, name, value.as_bytes())
    }

    /// Headers with `name` (case-insensitive) removed.
    pub(crate) fn without(pairs: &[(String, String)], name: &str) -> HeaderMap {
        let mut map = header_map(pairs);
        let removed = map.remove(name);
        assert!(removed.is_some(), "test bug: {name} was not in the headers");
        map
    }

    /// Headers with `name` (case-insensitive) sent twice, both copies valid.
    pub(crate) fn duplicated(pairs: &[(String, String)], name: &str) -> HeaderMap {
        let mut map = header_map(pairs);
        let value = map.get(name).expect("header present").clone();
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        map
    }

    /// The value of `name` (case-insensitive) among signed headers.
    pub(crate) fn value_of(pairs: &[(String, String)], name: &str) -> String {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("test bug: {name} not signed"))
    }

    /// The body with one bit of its middle byte inverted.
    pub(crate) fn flip_bit(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        let mid = out.len() / 2;
        out[mid] ^= 0x01;
        out
    }

    /// `text` with the character at byte `index` changed to another
    /// character that is valid in both hex and base64 ('0' <-> '1'), so the
    /// result still decodes and the failure must come from the comparison.
    pub(crate) fn flip_char(text: &str, index: usize) -> String {
        let mut bytes = text.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn provider_names_round_trip_and_svix_is_an_alias() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(*p));
        }
        let std = Provider::parse("standard-webhooks").unwrap();
        assert_eq!(Provider::parse("svix"), Some(std));
        assert_eq!(
            std.as_str(),
            "standard-webhooks",
            "an alias reports its provider"
        );
        assert_eq!(
            Provider::parse("GitHub"),
            None,
            "names are exact kebab-case"
        );
        assert_eq!(Provider::parse("standard_webhooks"), None);
        let e = Provider::lookup("gihtub").unwrap_err();
        assert!(e.contains("unknown provider `gihtub`"), "{e}");
        for p in Provider::ALL {
            assert!(e.contains(p.as_str()), "{e} lists {p}");
        }
    }

    #[test]
    fn algorithm_and_encoding_names_round_trip() {
        for a in [
            HmacAlgorithm::Sha1,
            HmacAlgorithm::Sha256,
            HmacAlgorithm::Sha512,
        ] {
            assert_eq!(HmacAlgorithm::parse(a.as_str()), Some(a));
        }
        for e in [SigEncoding::Hex, SigEncoding::Base64] {
            assert_eq!(SigEncoding::parse(e.as_str()), Some(e));
        }
        assert_eq!(HmacAlgorithm::parse("md5"), None);
        assert_eq!(SigEncoding::parse("base32"), None);
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(VerifyError::Missing.code(), "signature_missing");
        assert_eq!(VerifyError::Malformed.code(), "signature_malformed");
        assert_eq!(VerifyError::Invalid.code(), "signature_invalid");
        assert_eq!(VerifyError::Expired.code(), "timestamp_out_of_tolerance");
    }

    #[test]
    fn generic_without_options_is_rejected() {
        let generic = providers::generic_hmac::PROVIDER;
        let e = Verifier::new(generic, &strings(&["k"]), TOLERANCE, None).err();
        assert_eq!(e, Some(KeyError::MissingOptions));
        assert_eq!(
            sign(generic, "k", b"", NOW, None).err(),
            Some(KeyError::MissingOptions)
        );
    }

    #[test]
    fn sub_second_tolerances_round_up() {
        let o = |tolerance| Options {
            tolerance,
            ..Options::default()
        };
        assert_eq!(o(Duration::from_millis(1500)).tolerance_secs(), 2);
        assert_eq!(o(Duration::from_millis(1)).tolerance_secs(), 1);
        assert_eq!(o(Duration::ZERO).tolerance_secs(), 0);
        assert_eq!(o(Duration::from_secs(300)).tolerance_secs(), 300);
        assert_eq!(o(Duration::MAX).tolerance_secs(), u64::MAX);
    }

    #[test]
    fn entry_lists_skip_what_they_cannot_read_and_are_capped() {
        let good = "00".repeat(32);
        let decode = hex_entry::<32>(32);
        let read = |list: &[Option<&str>]| {
            let mut sigs = Sigs::<32>::new();
            sigs.read(list.iter().copied(), &decode).map(|()| sigs)
        };
        assert_eq!(
            read(&[Some("zz"), Some("0")]).err(),
            Some(VerifyError::Malformed),
            "none decodes"
        );
        let none_offered = read(&[None, None]).unwrap();
        assert_eq!(
            none_offered.matches([[0u8; 32]].iter()),
            Err(VerifyError::Invalid),
            "none offered"
        );
        let two = read(&[Some("zz"), Some(good.as_str())]).unwrap();
        assert_eq!(two.matches([[0u8; 32]].iter()), Ok(()));
        assert_eq!(two.matches([[1u8; 32]].iter()), Err(VerifyError::Invalid));
        assert_eq!(
            two.matches([[1u8; 32], [0u8; 32]].iter()),
            Ok(()),
            "the second key's tag"
        );
        let mut other = [0u8; 32];
        other[31] = 7;
        let other_hex = hex::encode(other);
        let both = read(&[Some(other_hex.as_str()), None, Some(good.as_str())]).unwrap();
        assert_eq!(both.matches([other].iter()), Ok(()), "the first entry");
        assert_eq!(both.matches([[0u8; 32]].iter()), Ok(()), "the last entry");
        let mut at_cap = vec![None; MAX_SIG_ENTRIES - 1];
        at_cap.push(Some(good.as_str()));
        assert!(read(&at_cap).is_ok(), "at the cap");
        at_cap.insert(0, None);
        assert_eq!(
            read(&at_cap).err(),
            Some(VerifyError::Malformed),
            "too many"
        );
    }

    #[test]
    fn tolerance_is_inclusive_and_symmetric() {
        assert_eq!(check_tolerance(NOW - TOL, NOW, 300), Ok(()));
        assert_eq!(check_tolerance(NOW + TOL, NOW, 300), Ok(()));
        assert_eq!(
            check_tolerance(NOW - TOL - 1, NOW, 300),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            check_tolerance(NOW + TOL + 1, NOW, 300),
            Err(VerifyError::Expired)
        );
        // Extreme values neither overflow nor pass.
        assert_eq!(
            check_tolerance(i64::MAX, i64::MIN, u64::MAX),
            Ok(()),
            "a huge tolerance accepts anything without overflowing"
        );
        assert_eq!(
            check_tolerance(i64::MAX, i64::MIN, 300),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn rfc3339_timestamps_parse_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2019-11-16T10:11:12.634234626Z"),
            Ok(1_573_899_072)
        );
        assert_eq!(
            parse_rfc3339("2020-01-01T00:00:00-07:00"),
            Ok(1_577_862_000)
        );
        assert_eq!(
            parse_rfc3339("2020-01-01T07:00:00+00:00"),
            Ok(1_577_862_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00+05:30"),
            Ok(1_709_188_200)
        );
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Ok(951_868_800));
        for bad in [
            "",
            "2020-01-01",
            "2020-01-01 00:00:00Z",
            "2020-01-01T00:00:00",
            "2020-01-01T00:00:00.Z",
            "2020-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2020-01-01T24:00:00Z",
            "2020-01-01T00:00:00+0700",
            "2020-01-01T00:00:00Zjunk",
            "+020-01-01T00:00:00Z",
            "2020-01-01T00:00:00-07:00:00",
            "１９７０-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), Err(VerifyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_must_be_plain_digits() {
        assert_eq!(parse_timestamp("1531420618"), Ok(1_531_420_618));
        for bad in [
            "",
            "-5",
            "+5",
            " 5",
            "5 ",
            "1.5",
            "0x10",
            "1e9",
            "9999999999999999999",
        ] {
            assert_eq!(parse_timestamp(bad), Err(VerifyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn hex_decoding_accepts_exactly_the_hex_digits() {
        // Every byte value in every position of a 2-byte signature: decoded iff both
        // digits are hex, and then to what the hex crate decodes.
        for pos in 0..4 {
            for b in 0..=255u8 {
                let mut text = *b"0aF9";
                text[pos] = b;
                let text = &text[..];
                let mut ours = [0u8; 2];
                let mut theirs = [0u8; 2];
                let got = decode_hex_exact(text, &mut ours);
                match hex::decode_to_slice(text, &mut theirs) {
                    Ok(()) => {
                        assert_eq!(got, Ok(()), "{text:?}");
                        assert_eq!(ours, theirs, "{text:?}");
                    }
                    Err(_) => assert_eq!(got, Err(VerifyError::Malformed), "{text:?}"),
                }
            }
        }
        let mut out = [0u8; 2];
        for wrong_length in ["", "0a", "0aF", "0aF90", "0aF90a"] {
            assert_eq!(
                decode_hex_exact(wrong_length, &mut out),
                Err(VerifyError::Malformed),
                "{wrong_length:?}"
            );
        }
    }

    #[test]
    fn ct_eq_compares_every_byte() {
        assert!(ct_eq(b"abcd", b"abcd"));
        assert!(!ct_eq(b"abcd", b"abce"));
        assert!(!ct_eq(b"abcd", b"bbcd"));
        assert!(!ct_eq(b"abcd", b"abc"));
    }

    #[test]
    fn token_set_matches_only_exact_tokens() {
        let set = TokenSet::new(&strings(&["alpha", "beta"])).unwrap();
        assert!(set.matches(b"alpha"));
        assert!(set.matches(b"beta"));
        assert!(!set.matches(b"alph"));
        assert!(!set.matches(b"alphaa"));
        assert!(!set.matches(b""));
    }

    /// The table decoder agrees with the `base64` crate's strict `STANDARD` engine (what
    /// it replaced) on every length up to 64 bytes and on every one-character change of
    /// each encoding: same bytes when both accept, both refuse otherwise (bad digits,
    /// misplaced or missing `=`, non-zero unused bits, URL-safe digits, wrong length).
    #[test]
    fn table_base64_decoder_agrees_with_the_base64_crate() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let subs: Vec<u8> = b"AQRSgwxyz019+/=-_ .\x00\xff".to_vec();
        let mut checked = 0;
        for len in 1..=64usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len * 11) as u8).collect();
            let text = engine.encode(&bytes);
            let mut buf = [0u8; MAX_SIG_LEN + 8];
            assert_eq!(decode_b64_exact(&text, len, &mut buf).unwrap(), &bytes[..]);
            for other in [len - 1, len + 1, len + 3] {
                assert!(
                    decode_b64_exact(&text, other, &mut buf).is_err(),
                    "{len} as {other}"
                );
            }
            for pos in 0..text.len() {
                for &c in &subs {
                    let mut t = text.clone().into_bytes();
                    t[pos] = c;
                    let mut theirs = [0u8; MAX_SIG_LEN + 8];
                    let expected = engine
                        .decode_slice(&t, &mut theirs)
                        .ok()
                        .filter(|n| *n == len)
                        .map(|n| theirs[..n].to_vec());
                    let mut buf = [0u8; MAX_SIG_LEN + 8];
                    let got = decode_b64_exact(&t, len, &mut buf).ok().map(<[u8]>::to_vec);
                    assert_eq!(got, expected, "{t:?} ({len} bytes)");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000);
    }

    /// The parser before its fixed-offset rewrite, kept as the reference the new one
    /// must agree with on every input.
    fn parse_rfc3339_reference(text: &str) -> Result<i64, VerifyError> {
        let b = text.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64, VerifyError> {
            let digits = b.get(range).ok_or(VerifyError::Malformed)?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(VerifyError::Malformed);
            }
            Ok(digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
        if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
            return Err(VerifyError::Malformed);
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut i = 19;
        if at(i, b".") {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(VerifyError::Malformed);
            }
        }
        let offset = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b":") => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(VerifyError::Malformed);
                }
                let o = oh * 3600 + om * 60;
                if *sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return Err(VerifyError::Malformed),
        };
        // The date arithmetic is shared: what is compared is how the fields are read.
        unix_seconds([year, month, day, hour, minute, second], offset)
    }

    /// The fixed-offset parser agrees with the one it replaced on valid samples, on
    /// every one-character change of them (digits, separators, signs, letters, bytes
    /// outside ASCII), on every truncation and on one extra character anywhere.
    #[test]
    fn fixed_offset_rfc3339_agrees_with_the_reference_parser() {
        let samples = [
            "2024-05-01T12:00:00Z",
            "2020-01-01T00:00:00-07:00",
            "2019-11-16t10:11:12.634234626z",
            "2024-02-29T23:59:60.5+05:30",
            "0000-03-01T00:00:00Z",
            "9999-12-31T23:59:59.000-23:59",
        ];
        let subs = b"0159:-+.TtZzx /\x00";
        let mut checked = 0;
        for sample in samples {
            assert!(parse_rfc3339(sample).is_ok(), "{sample}");
            let bytes = sample.as_bytes();
            let mut variants: Vec<Vec<u8>> =
                (0..=bytes.len()).map(|n| bytes[..n].to_vec()).collect();
            for pos in 0..bytes.len() {
                for &c in subs.iter() {
                    let mut t = bytes.to_vec();
                    t[pos] = c;
                    variants.push(t.clone());
                    t.insert(pos, c);
                    variants.push(t);
                }
                let mut t = bytes.to_vec();
                t.splice(pos..=pos, "é".bytes());
                variants.push(t);
            }
            for v in variants {
                let text = String::from_utf8(v).unwrap();
                assert_eq!(
                    parse_rfc3339(&text),
                    parse_rfc3339_reference(&text),
                    "{text:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 3_000, "{checked}");
    }

    /// Gathering small pieces on the stack never changes the MAC: every way of cutting
    /// a message into pieces (around the 128-byte gather buffer's edges too) signs as the
    /// whole message does.
    #[test]
    fn hmac_parts_signs_the_concatenation_however_it_is_cut() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"parts-key");
        let msg: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        let cuts: &[&[usize]] = &[
            &[],
            &[0],
            &[1],
            &[36, 56, 57],
            &[127],
            &[128],
            &[129],
            &[10, 138],
            &[10, 137, 138],
            &[100, 200, 201, 202, 600],
            &[127, 255, 256, 383, 384],
            &[0, 0, 5, 5, 699, 700],
        ];
        for len in [0usize, 1, 20, 127, 128, 129, 300, 700] {
            let msg = &msg[..len];
            let whole = hmac::sign(&key, msg);
            for cut in cuts {
                let mut parts = Vec::new();
                let mut from = 0;
                for &at in cut.iter() {
                    let at = at.min(len).max(from);
                    parts.push(&msg[from..at]);
                    from = at;
                }
                parts.push(&msg[from..]);
                assert_eq!(
                    hmac_parts(&key, &parts).as_ref(),
                    whole.as_ref(),
                    "{len} bytes cut at {cut:?}"
                );
            }
        }
    }

    /// One pass over the map answers what a lookup per name answers, for every mix of
    /// absent, single, repeated, empty and non-ASCII values, among other headers, and
    /// past [`ONE_PASS_MAX`] (where it looks each name up).
    #[test]
    fn header_values_answer_as_header_bytes_does() {
        let names = [
            HeaderName::from_static("x-a"),
            HeaderName::from_static("x-bb"),
            HeaderName::from_static("x-cc"),
        ];
        let values: [&[&[u8]]; 6] = [
            &[],
            &[b"one"],
            &[b"one", b"two"],
            &[b""],
            &[b"caf\xc3\xa9"],
            &[b"a\tb", b"ok"],
        ];
        let mut checked = 0;
        for others in [0usize, 3, ONE_PASS_MAX - 1, ONE_PASS_MAX + 5] {
            for a in values {
                for b in values {
                    for c in values {
                        let mut map = HeaderMap::new();
                        for i in 0..others {
                            map.append(
                                HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap(),
                                http::HeaderValue::from_static("v"),
                            );
                        }
                        map.append(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
                        for (name, list) in names.iter().zip([a, b, c]) {
                            for v in list {
                                map.append(name, http::HeaderValue::from_bytes(v).unwrap());
                            }
                        }
                        let expected =
                            [&names[0], &names[1], &names[2]].map(|name| header_bytes(&map, name));
                        let got = header_values(&map, [&names[0], &names[1], &names[2]]);
                        assert_eq!(got, expected, "{map:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 6 * 6 * 6);
    }

    #[test]
    fn header_bytes_reads_one_visible_ascii_value() {
        let mut map = HeaderMap::new();
        let name = HeaderName::from_static("x-sig");
        assert_eq!(header_bytes(&map, &name), Err(VerifyError::Missing));
        map.insert(&name, http::HeaderValue::from_static("abc ~!"));
        assert_eq!(header_bytes(&map, &name), Ok(&b"abc ~!"[..]));
        assert_eq!(header_str(&map, &name), Ok("abc ~!"));
        for bad in [&b""[..], b"a\tb", b"caf\xc3\xa9", b"\x80x"] {
            map.insert(&name, http::HeaderValue::from_bytes(bad).unwrap());
            assert_eq!(
                header_bytes(&map, &name),
                Err(VerifyError::Malformed),
                "{bad:?}"
            );
            assert_eq!(
                header_str(&map, &name),
                Err(VerifyError::Malformed),
                "{bad:?}"
            );
        }
        map.insert(&name, http::HeaderValue::from_static("one"));
        map.append(&name, http::HeaderValue::from_static("one"));
        assert_eq!(
            header_bytes(&map, &name),
            Err(VerifyError::Malformed),
            "repeated"
        );
    }

    #[test]
    fn oversized_base64_is_rejected_without_decoding() {
        let mut buf = [0u8; MAX_SIG_LEN + 8];
        let long = "A".repeat(MAX_B64_LEN + 4);
        assert_eq!(
            decode_b64_exact(&long, 32, &mut buf).err(),
            Some(VerifyError::Malformed)
        );
        // The longest legal input (a 64-byte tag) still fits the buffer.
        use base64::Engine as _;
        let tag = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        assert_eq!(decode_b64_exact(&tag, 64, &mut buf).unwrap(), &[7u8; 64]);
    }
}
