//! Verification of JWS compact-serialization bearer tokens (RFC 7515,
//! RFC 7519, RFC 9068) with asymmetric keys from a [`KeySet`], on `ring`.
//!
//! Verification only; no signing, no encryption (JWE), no symmetric (`HS*`)
//! algorithms and never `none`. The steps, in order:
//!
//! 1. bounds: at most [`MAX_TOKEN_LEN`] bytes, exactly three `.`-separated
//!    parts, each strict base64url (URL-safe alphabet, no padding);
//! 2. header: a JSON object whose `alg` is a supported algorithm (anything
//!    else is [`JwtError::UnsupportedAlgorithm`], before any key lookup), no
//!    `crit`, `typ` absent or an accepted value (see [`verify`]), `kid`
//!    absent or a string; keys embedded in the header (`jwk`, `jku`, `x5u`,
//!    `x5c`) are ignored, keys only ever come from the [`KeySet`];
//! 3. key selection by `kid`, and the key's pinned algorithm must equal the
//!    header's `alg` ([`JwtError::AlgorithmMismatch`]);
//! 4. signature over `header.payload`;
//! 5. only then the payload is parsed and checked against [`Rules`].
//!
//! No error (neither `Display` nor `Debug`) contains token text, key
//! material or claim values; only fixed strings, a sanitised `alg` name and
//! the `kid`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::jwks::{Algorithm, Key, KeySet, MAX_KID_LEN};

/// Longest token accepted, in bytes (8 KiB). Longer tokens are refused as
/// [`JwtError::Malformed`] before anything is decoded.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Default clock-skew allowance applied to `exp` and `nbf`: 60 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// At most this many characters of an unsupported `alg` are reported.
const MAX_REPORTED_ALG_LEN: usize = 32;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is not a well-formed JWS/JWT; the reason is a fixed string.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not one we verify (`none`, `HS256`, ...). Holds
    /// the alg name only, cut to 32 characters, unusual characters as `?`.
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No key in the set has the token's `kid`: the caller may refresh the
    /// key set and retry once (see [`JwtError::is_unknown_key`]).
    #[error("no key with kid {kid:?} in the key set")]
    UnknownKey {
        /// The token's `kid` (not secret; at most 256 bytes).
        kid: String,
    },
    /// The token's `alg` differs from the pinned algorithm of its key (or,
    /// for a token without `kid`, no key in the set has that algorithm).
    #[error("token algorithm does not match the key's algorithm")]
    AlgorithmMismatch,
    /// The token has no `kid` and several keys in the set have its algorithm.
    #[error("token has no kid and several keys could verify it")]
    AmbiguousKey,
    /// The signature does not verify with the selected key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not one of the accepted issuers.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// No `aud` value is one of the accepted audiences.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim (`exp`, `iss` or `aud`) is absent.
    #[error("token is missing the {0} claim")]
    MissingClaim(&'static str),
}

impl JwtError {
    /// Whether this is [`JwtError::UnknownKey`], i.e. refreshing the key set
    /// and retrying once may help.
    pub fn is_unknown_key(&self) -> bool {
        matches!(self, Self::UnknownKey { .. })
    }
}

/// What a token must satisfy besides its signature.
///
/// Built with [`Rules::new`] plus setters. Empty issuer/audience strings are
/// ignored, so a mis-configured empty value accepts nothing rather than
/// tokens with an empty `iss`/`aud`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
}

impl Rules {
    /// Accepts tokens from `issuer` (exact `iss` match) for `audience`, with
    /// the [`DEFAULT_LEEWAY`].
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
        }
        .issuers([issuer])
        .audiences([audience])
    }

    /// Also accepts these issuers (adds to those already accepted).
    #[must_use]
    pub fn issuers<I>(mut self, issuers: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        extend_non_empty(&mut self.issuers, issuers);
        self
    }

    /// Also accepts these audiences (adds to those already accepted).
    #[must_use]
    pub fn audiences<I>(mut self, audiences: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        extend_non_empty(&mut self.audiences, audiences);
        self
    }

    /// Sets the clock-skew allowance applied to `exp` and `nbf`.
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

fn extend_non_empty<I>(accepted: &mut Vec<String>, values: I)
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    for value in values {
        let value = value.into();
        if !value.is_empty() && !accepted.contains(&value) {
            accepted.push(value);
        }
    }
}

/// The claims of a verified token.
#[derive(Clone, PartialEq)]
pub struct Claims {
    /// `sub`, when present.
    pub subject: Option<String>,
    /// `iss` (one of the accepted issuers).
    pub issuer: String,
    /// `aud`, always as a list (a single string becomes one element).
    pub audience: Vec<String>,
    /// `exp`.
    pub expires_at: SystemTime,
    /// From `scope` (space-separated, RFC 8693/9068) or, when that is absent,
    /// `scp` (array of strings or space-separated string). Empty if neither.
    pub scopes: Vec<String>,
    /// Every claim of the payload, including the ones above.
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Whether `scope` is one of the token's scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

impl fmt::Debug for Claims {
    /// Prints the typed fields and only the *names* of the other claims
    /// (their values may be personal data).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Verifies a compact JWS bearer token and returns its claims.
///
/// `now` is the current time (passed in so tests are deterministic).
///
/// Header `typ`: absent, or `JWT` or `at+jwt` (RFC 9068), compared
/// case-insensitively, optionally with an `application/` prefix (RFC 7515
/// section 4.1.9). Anything else (e.g. `JOSE`, `dpop+jwt`, `logout+jwt`) is
/// refused, so tokens minted for another purpose by the same issuer are not
/// taken as access tokens.
///
/// Key selection: a token with a `kid` uses the key with that `kid` whose
/// pinned algorithm is the token's `alg` ([`JwtError::UnknownKey`] if no key
/// has the `kid`, [`JwtError::AlgorithmMismatch`] if none of them has the
/// `alg`). A token without `kid` is accepted only when exactly one key of
/// the set has its `alg`.
///
/// Claims: `exp` required, `nbf` optional, both with the rules' leeway;
/// `iat` ignored; `iss` required and exactly one of the accepted issuers;
/// `aud` required (string or array), accepted if any value is accepted.
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &Rules,
    now: SystemTime,
) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("token too long"));
    }
    let (signing_input, signature_b64) = token
        .rsplit_once('.')
        .ok_or(JwtError::Malformed("token must have three parts"))?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(JwtError::Malformed("token must have three parts"))?;
    if payload_b64.contains('.') {
        return Err(JwtError::Malformed("token must have three parts"));
    }

    let header = parse_header(&decode_part(header_b64, "header is not base64url")?)?;
    let payload = decode_part(payload_b64, "payload is not base64url")?;
    let signature = decode_part(signature_b64, "signature is not base64url")?;

    let key = select_key(keys, header.kid.as_deref(), header.alg)?;
    if !key.verify(signing_input.as_bytes(), &signature) {
        return Err(JwtError::BadSignature);
    }

    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| JwtError::Malformed("payload is not a JSON object"))?;
    check_claims(claims, rules, now)
}

/// Strict base64url: URL-safe alphabet, no padding, canonical trailing bits.
fn decode_part(part: &str, reason: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(reason))
}

/// The header fields we act on.
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

fn parse_header(bytes: &[u8]) -> Result<Header, JwtError> {
    let mut header: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name)
            .ok_or_else(|| JwtError::UnsupportedAlgorithm(reportable_alg(name)))?,
        _ => return Err(JwtError::Malformed("header alg missing or not a string")),
    };
    if header.contains_key("crit") {
        return Err(JwtError::Malformed("crit header not supported"));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ_accepted(typ) => {}
        Some(_) => return Err(JwtError::Malformed("typ is not JWT or at+jwt")),
    }
    let kid = match header.remove("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => Some(kid),
        Some(Value::String(_)) => return Err(JwtError::Malformed("kid too long")),
        Some(_) => return Err(JwtError::Malformed("kid is not a string")),
    };
    Ok(Header { alg, kid })
}

fn typ_accepted(typ: &str) -> bool {
    let bare = match typ.split_at_checked("application/".len()) {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case("application/") => rest,
        _ => typ,
    };
    bare.eq_ignore_ascii_case("JWT") || bare.eq_ignore_ascii_case("at+jwt")
}

/// The unsupported `alg` as reported in errors: bounded, printable, no quotes.
fn reportable_alg(name: &str) -> String {
    name.chars()
        .take(MAX_REPORTED_ALG_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '.') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn select_key<'k>(
    keys: &'k KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k Key, JwtError> {
    match kid {
        Some(kid) => {
            let mut kid_found = false;
            for key in keys.keys().iter().filter(|key| key.kid() == Some(kid)) {
                if key.alg() == alg {
                    return Ok(key);
                }
                kid_found = true;
            }
            if kid_found {
                Err(JwtError::AlgorithmMismatch)
            } else {
                Err(JwtError::UnknownKey {
                    kid: kid.to_owned(),
                })
            }
        }
        None => {
            let mut candidates = keys.keys().iter().filter(|key| key.alg() == alg);
            match (candidates.next(), candidates.next()) {
                (Some(key), None) => Ok(key),
                (None, _) => Err(JwtError::AlgorithmMismatch),
                (Some(_), Some(_)) => Err(JwtError::AmbiguousKey),
            }
        }
    }
}

fn check_claims(
    claims: Map<String, Value>,
    rules: &Rules,
    now: SystemTime,
) -> Result<Claims, JwtError> {
    let expires_at = numeric_date(claims.get("exp"), "exp is not a NumericDate")?
        .ok_or(JwtError::MissingClaim("exp"))?;
    if let Ok(past) = now.duration_since(expires_at)
        && past >= rules.leeway
    {
        return Err(JwtError::Expired);
    }
    if let Some(not_before) = numeric_date(claims.get("nbf"), "nbf is not a NumericDate")?
        && let Ok(ahead) = not_before.duration_since(now)
        && ahead > rules.leeway
    {
        return Err(JwtError::NotYetValid);
    }

    let issuer = match claims.get("iss") {
        None => return Err(JwtError::MissingClaim("iss")),
        Some(Value::String(iss)) => iss.clone(),
        Some(_) => return Err(JwtError::Malformed("iss is not a string")),
    };
    if !rules.issuers.contains(&issuer) {
        return Err(JwtError::WrongIssuer);
    }

    let audience = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(auds)) => string_array(auds, "aud is not a string or array of strings")?,
        Some(_) => {
            return Err(JwtError::Malformed(
                "aud is not a string or array of strings",
            ));
        }
    };
    if !audience.iter().any(|aud| rules.audiences.contains(aud)) {
        return Err(JwtError::WrongAudience);
    }

    let subject = match claims.get("sub") {
        None => None,
        Some(Value::String(sub)) => Some(sub.clone()),
        Some(_) => return Err(JwtError::Malformed("sub is not a string")),
    };
    let scopes = scopes(&claims)?;

    Ok(Claims {
        subject,
        issuer,
        audience,
        expires_at,
        scopes,
        extra: claims,
    })
}

/// A NumericDate (seconds since the epoch, fractions allowed), if present.
fn numeric_date(value: Option<&Value>, bad: &'static str) -> Result<Option<SystemTime>, JwtError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let since_epoch = match value.as_u64() {
        Some(secs) => Duration::from_secs(secs),
        None => value
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or(JwtError::Malformed(bad))?,
    };
    UNIX_EPOCH
        .checked_add(since_epoch)
        .map(Some)
        .ok_or(JwtError::Malformed(bad))
}

fn string_array(values: &[Value], bad: &'static str) -> Result<Vec<String>, JwtError> {
    values
        .iter()
        .map(|value| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or(JwtError::Malformed(bad))
        })
        .collect()
}

fn split_scopes(scopes: &str) -> Vec<String> {
    scopes.split_ascii_whitespace().map(str::to_owned).collect()
}

/// `scope` (string) wins; otherwise `scp` (array or string); else none.
fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(scope)), _) => Ok(split_scopes(scope)),
        (Some(_), _) => Err(JwtError::Malformed("scope is not a string")),
        (None, Some(Value::String(scp))) => Ok(split_scopes(scp)),
        (None, Some(Value::Array(scp))) => {
            string_array(scp, "scp is not a string or array of strings")
        }
        (None, Some(_)) => Err(JwtError::Malformed(
            "scp is not a string or array of strings",
        )),
        (None, None) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hmac;
    use ring::rand::SystemRandom;
    use ring::signature::{
        self, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
    };
    use serde_json::json;
    use std::process::Command;
    use std::sync::OnceLock;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://issuer.example";
    const AUD: &str = "sinew-api";
    const HMAC_SECRET: &[u8] = b"a shared secret that must never be accepted";

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// PKCS#8 DER of a 2048-bit RSA key made by openssl in a temp dir, once
    /// per test process (never written anywhere that outlives the tests).
    fn rsa_pkcs8() -> &'static [u8] {
        static KEY: OnceLock<Vec<u8>> = OnceLock::new();
        KEY.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let pem = dir.path().join("key.pem");
            let der = dir.path().join("key.der");
            let out = Command::new("/usr/bin/openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&pem)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl genpkey failed");
            let out = Command::new("/usr/bin/openssl")
                .args([
                    "pkcs8", "-topk8", "-nocrypt", "-inform", "PEM", "-outform", "DER", "-in",
                ])
                .arg(&pem)
                .arg("-out")
                .arg(&der)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl pkcs8 failed");
            std::fs::read(&der).unwrap()
        })
    }

    enum Signer {
        Ecdsa(EcdsaKeyPair, &'static str),
        Ed(Ed25519KeyPair),
        Rsa(RsaKeyPair),
    }

    impl Signer {
        fn ecdsa(alg: &'static EcdsaSigningAlgorithm, crv: &'static str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self::Ecdsa(
                EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
                crv,
            )
        }

        fn p256() -> Self {
            Self::ecdsa(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
        }

        fn p384() -> Self {
            Self::ecdsa(&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
        }

        fn ed25519() -> Self {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Self::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        }

        fn rsa() -> Self {
            Self::Rsa(RsaKeyPair::from_pkcs8(rsa_pkcs8()).unwrap())
        }

        /// The public JWK, with optional `kid` and `alg`.
        fn jwk(&self, kid: Option<&str>, alg: Option<&str>) -> Value {
            let mut jwk = match self {
                Self::Ecdsa(pair, crv) => {
                    let point = pair.public_key().as_ref();
                    let half = (point.len() - 1) / 2;
                    json!({"kty": "EC", "crv": crv,
                        "x": b64(&point[1..=half]), "y": b64(&point[1 + half..])})
                }
                Self::Ed(pair) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key())})
                }
                Self::Rsa(pair) => {
                    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                    json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)})
                }
            };
            if let Some(kid) = kid {
                jwk["kid"] = json!(kid);
            }
            if let Some(alg) = alg {
                jwk["alg"] = json!(alg);
            }
            jwk
        }

        /// Signs with this key; for RSA, `alg` picks PKCS#1 v1.5 or PSS.
        fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match self {
                Self::Ecdsa(pair, _) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
                Self::Ed(pair) => pair.sign(message).as_ref().to_vec(),
                Self::Rsa(pair) => {
                    let padding: &'static dyn signature::RsaEncoding = match alg {
                        "RS384" => &signature::RSA_PKCS1_SHA384,
                        "RS512" => &signature::RSA_PKCS1_SHA512,
                        "PS256" => &signature::RSA_PSS_SHA256,
                        "PS384" => &signature::RSA_PSS_SHA384,
                        "PS512" => &signature::RSA_PSS_SHA512,
                        _ => &signature::RSA_PKCS1_SHA256,
                    };
                    let mut out = vec![0; pair.public().modulus_len()];
                    pair.sign(padding, &rng, message, &mut out).unwrap();
                    out
                }
            }
        }

        fn token(&self, header: &Value, claims: &Value) -> String {
            let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
            let alg = header["alg"].as_str().unwrap_or_default();
            format!("{input}.{}", b64(self.sign(alg, input.as_bytes())))
        }
    }

    struct Fixture {
        es256: Signer,
        es384: Signer,
        ed: Signer,
        rsa: Signer,
        keys: KeySet,
    }

    /// Keys: `ec256` (ES256 inferred), `ec384` (alg ES384), `ed` (EdDSA
    /// inferred), `rsa` (no alg, so RS256), `rsa-pss` (same RSA key, alg
    /// PS256) and `hmac` (an oct key, which must be skipped).
    fn fixture() -> Fixture {
        let (es256, es384, ed, rsa) = (
            Signer::p256(),
            Signer::p384(),
            Signer::ed25519(),
            Signer::rsa(),
        );
        let set = json!({"keys": [
            es256.jwk(Some("ec256"), None),
            es384.jwk(Some("ec384"), Some("ES384")),
            ed.jwk(Some("ed"), None),
            rsa.jwk(Some("rsa"), None),
            rsa.jwk(Some("rsa-pss"), Some("PS256")),
            {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64(HMAC_SECRET)},
        ]});
        let keys = KeySet::from_json(set.to_string().as_bytes()).unwrap();
        assert_eq!((keys.len(), keys.skipped()), (5, 1));
        Fixture {
            es256,
            es384,
            ed,
            rsa,
            keys,
        }
    }

    fn header(alg: &str, kid: &str) -> Value {
        json!({"alg": alg, "kid": kid, "typ": "JWT"})
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": NOW - 10,
            "nbf": NOW - 10, "exp": NOW + 300, "tenant": "t-9"})
    }

    fn rules() -> Rules {
        Rules::new(ISS, AUD)
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    /// Asserts that the error's Display and Debug contain neither the token
    /// nor any of its parts (header, payload, signature).
    fn assert_no_leak(err: &JwtError, token: &str) {
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!token.is_empty() && !text.contains(token), "{text}");
            for part in token.split('.').filter(|part| part.len() >= 8) {
                assert!(!text.contains(part), "{text}");
            }
        }
    }

    /// Verifies with `rules()` at `now()`, expects a failure, checks no leak.
    fn reject(token: &str, keys: &KeySet) -> JwtError {
        reject_with(token, keys, &rules())
    }

    fn reject_with(token: &str, keys: &KeySet, rules: &Rules) -> JwtError {
        let err = verify(token, keys, rules, now()).unwrap_err();
        assert_no_leak(&err, token);
        err
    }

    fn accept(token: &str, keys: &KeySet) -> Claims {
        verify(token, keys, &rules(), now()).unwrap()
    }

    fn assert_standard_claims(claims: &Claims) {
        assert_eq!(claims.subject.as_deref(), Some("user-1"));
        assert_eq!(claims.issuer, ISS);
        assert_eq!(claims.audience, [AUD]);
        assert_eq!(claims.expires_at, now() + Duration::from_secs(300));
        assert_eq!(claims.extra["tenant"], "t-9");
        assert!(claims.scopes.is_empty());
    }

    #[test]
    fn accepts_es256() {
        let fx = fixture();
        let token = fx.es256.token(&header("ES256", "ec256"), &claims());
        assert_standard_claims(&accept(&token, &fx.keys));
    }

    #[test]
    fn accepts_es384() {
        let fx = fixture();
        let token = fx.es384.token(&header("ES384", "ec384"), &claims());
        assert_standard_claims(&accept(&token, &fx.keys));
    }

    #[test]
    fn accepts_eddsa() {
        let fx = fixture();
        let token = fx.ed.token(&header("EdDSA", "ed"), &claims());
        assert_standard_claims(&accept(&token, &fx.keys));
    }

    #[test]
    fn accepts_rs256() {
        let fx = fixture();
        let token = fx.rsa.token(&header("RS256", "rsa"), &claims());
        assert_standard_claims(&accept(&token, &fx.keys));
    }

    #[test]
    fn accepts_ps256() {
        let fx = fixture();
        let token = fx.rsa.token(&header("PS256", "rsa-pss"), &claims());
        assert_standard_claims(&accept(&token, &fx.keys));
    }

    #[test]
    fn accepts_rs512_and_ps384_on_keys_pinned_to_them() {
        let rsa = Signer::rsa();
        let set =
            json!({"keys": [rsa.jwk(Some("a"), Some("RS512")), rsa.jwk(Some("b"), Some("PS384"))]});
        let keys = KeySet::from_json(set.to_string().as_bytes()).unwrap();
        accept(&rsa.token(&header("RS512", "a"), &claims()), &keys);
        accept(&rsa.token(&header("PS384", "b"), &claims()), &keys);
    }

    #[test]
    fn rejects_wrong_number_of_parts() {
        let fx = fixture();
        let token = fx.es256.token(&header("ES256", "ec256"), &claims());
        let (input, _) = token.rsplit_once('.').unwrap();
        let expected = JwtError::Malformed("token must have three parts");
        assert_eq!(reject(input, &fx.keys), expected);
        assert_eq!(reject(&format!("{token}.AAAA"), &fx.keys), expected);
        assert_eq!(reject(&format!("{token}."), &fx.keys), expected);
        assert_eq!(verify("", &fx.keys, &rules(), now()).unwrap_err(), expected);
        assert_eq!(
            verify("abc", &fx.keys, &rules(), now()).unwrap_err(),
            expected
        );
    }

    #[test]
    fn rejects_malformed_base64() {
        let fx = fixture();
        let token = fx.es256.token(&header("ES256", "ec256"), &claims());
        let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let cases = [
            (format!("{h}=.{p}.{s}"), "header is not base64url"),
            (format!("{h}.{p}==.{s}"), "payload is not base64url"),
            (format!("{h}.{p}.{s}="), "signature is not base64url"),
            (
                format!("{h}.{p}.+{}", &s[1..]),
                "signature is not base64url",
            ),
            (format!("{h}.{p}/.{s}"), "payload is not base64url"),
            (
                format!("{h}.{p}.{}!", &s[1..]),
                "signature is not base64url",
            ),
            (format!("{h} .{p}.{s}"), "header is not base64url"),
        ];
        for (token, reason) in cases {
            assert_eq!(
                reject(&token, &fx.keys),
                JwtError::Malformed(reason),
                "{reason}"
            );
        }
        let not_json = format!("{}.{p}.{s}", b64("not json"));
        assert_eq!(
            reject(&not_json, &fx.keys),
            JwtError::Malformed("header is not a JSON object")
        );
    }

    #[test]
    fn rejects_oversized_token_before_decoding() {
        let fx = fixture();
        let big = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_LEN)));
        let token = fx.es256.token(&header("ES256", "ec256"), &big);
        assert_eq!(
            reject(&token, &fx.keys),
            JwtError::Malformed("token too long")
        );
        let junk = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            reject(&junk, &fx.keys),
            JwtError::Malformed("token too long")
        );
    }

    #[test]
    fn rejects_signature_with_one_bit_flipped() {
        let fx = fixture();
        for (signer, alg, kid) in [
            (&fx.es256, "ES256", "ec256"),
            (&fx.ed, "EdDSA", "ed"),
            (&fx.rsa, "RS256", "rsa"),
            (&fx.rsa, "PS256", "rsa-pss"),
        ] {
            let token = signer.token(&header(alg, kid), &claims());
            let (input, sig) = token.rsplit_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            sig[10] ^= 0x01;
            let tampered = format!("{input}.{}", b64(&sig));
            assert_eq!(reject(&tampered, &fx.keys), JwtError::BadSignature, "{alg}");
        }
    }

    #[test]
    fn rejects_altered_payload() {
        let fx = fixture();
        let token = fx.es256.token(&header("ES256", "ec256"), &claims());
        let [h, _, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let forged = b64(with(claims(), "sub", json!("admin")).to_string());
        assert_eq!(
            reject(&format!("{h}.{forged}.{s}"), &fx.keys),
            JwtError::BadSignature
        );
    }

    #[test]
    fn rejects_token_signed_by_another_key_with_same_kid() {
        let fx = fixture();
        let token = Signer::p256().token(&header("ES256", "ec256"), &claims());
        assert_eq!(reject(&token, &fx.keys), JwtError::BadSignature);
    }

    #[test]
    fn rejects_expired() {
        let fx = fixture();
        let expired = with(claims(), "exp", json!(NOW - 61));
        let token = fx.es256.token(&header("ES256", "ec256"), &expired);
        assert_eq!(reject(&token, &fx.keys), JwtError::Expired);
        let at_edge = with(claims(), "exp", json!(NOW - 60));
        let token = fx.es256.token(&header("ES256", "ec256"), &at_edge);
        assert_eq!(reject(&token, &fx.keys), JwtError::Expired);
    }

    #[test]
    fn accepts_expired_within_leeway() {
        let fx = fixture();
        let recent = with(claims(), "exp", json!(NOW - 30));
        let token = fx.es256.token(&header("ES256", "ec256"), &recent);
        assert_eq!(
            accept(&token, &fx.keys).expires_at,
            now() - Duration::from_secs(30)
        );
        let strict = rules().leeway(Duration::ZERO);
        assert_eq!(reject_with(&token, &fx.keys, &strict), JwtError::Expired);
        let lenient = rules().leeway(Duration::from_secs(120));
        let older = fx.es256.token(
            &header("ES256", "ec256"),
            &with(claims(), "exp", json!(NOW - 100)),
        );
        verify(&older, &fx.keys, &lenient, now()).unwrap();
    }

    #[test]
    fn rejects_not_yet_valid() {
        let fx = fixture();
        let future = with(claims(), "nbf", json!(NOW + 61));
        let token = fx.es256.token(&header("ES256", "ec256"), &future);
        assert_eq!(reject(&token, &fx.keys), JwtError::NotYetValid);
        let soon = with(claims(), "nbf", json!(NOW + 60));
        accept(&fx.es256.token(&header("ES256", "ec256"), &soon), &fx.keys);
        let no_nbf = without(claims(), "nbf");
        accept(
            &fx.es256.token(&header("ES256", "ec256"), &no_nbf),
            &fx.keys,
        );
    }

    #[test]
    fn accepts_fractional_numeric_dates_and_rejects_bad_ones() {
        let fx = fixture();
        let fractional = with(claims(), "exp", json!(NOW as f64 + 0.5));
        let got = accept(
            &fx.es256.token(&header("ES256", "ec256"), &fractional),
            &fx.keys,
        );
        assert_eq!(got.expires_at, now() + Duration::from_millis(500));
        for bad in [json!("1700000300"), json!(-5), json!(null), json!(1e300)] {
            let token = fx
                .es256
                .token(&header("ES256", "ec256"), &with(claims(), "exp", bad));
            assert_eq!(
                reject(&token, &fx.keys),
                JwtError::Malformed("exp is not a NumericDate")
            );
        }
    }

    #[test]
    fn rejects_wrong_audience() {
        let fx = fixture();
        let other = with(claims(), "aud", json!("other-api"));
        let token = fx.es256.token(&header("ES256", "ec256"), &other);
        assert_eq!(reject(&token, &fx.keys), JwtError::WrongAudience);
        let none_match = with(claims(), "aud", json!(["a", "b"]));
        let token = fx.es256.token(&header("ES256", "ec256"), &none_match);
        assert_eq!(reject(&token, &fx.keys), JwtError::WrongAudience);
        let empty = with(claims(), "aud", json!([]));
        let token = fx.es256.token(&header("ES256", "ec256"), &empty);
        assert_eq!(reject(&token, &fx.keys), JwtError::WrongAudience);
    }

    #[test]
    fn accepts_audience_array_and_extra_accepted_audiences() {
        let fx = fixture();
        let many = with(claims(), "aud", json!(["other-api", AUD]));
        let token = fx.es256.token(&header("ES256", "ec256"), &many);
        assert_eq!(accept(&token, &fx.keys).audience, ["other-api", AUD]);

        let second = with(claims(), "aud", json!("admin-api"));
        let token = fx.es256.token(&header("ES256", "ec256"), &second);
        assert_eq!(reject(&token, &fx.keys), JwtError::WrongAudience);
        let rules = rules().audiences(["admin-api"]);
        verify(&token, &fx.keys, &rules, now()).unwrap();
    }

    #[test]
    fn rejects_wrong_issuer_and_accepts_listed_issuers() {
        let fx = fixture();
        let other = with(claims(), "iss", json!("https://evil.example"));
        let token = fx.es256.token(&header("ES256", "ec256"), &other);
        assert_eq!(reject(&token, &fx.keys), JwtError::WrongIssuer);
        let trailing = with(claims(), "iss", json!(format!("{ISS}/")));
        let token2 = fx.es256.token(&header("ES256", "ec256"), &trailing);
        assert_eq!(reject(&token2, &fx.keys), JwtError::WrongIssuer);

        let rules = rules().issuers(["https://evil.example", "https://other.example"]);
        verify(&token, &fx.keys, &rules, now()).unwrap();
    }

    #[test]
    fn empty_configured_issuer_accepts_nothing() {
        let fx = fixture();
        let token = fx
            .es256
            .token(&header("ES256", "ec256"), &with(claims(), "iss", json!("")));
        let rules = Rules::new("", AUD);
        assert_eq!(reject_with(&token, &fx.keys, &rules), JwtError::WrongIssuer);
    }

    #[test]
    fn rejects_missing_required_claims() {
        let fx = fixture();
        for (name, expected) in [
            ("exp", JwtError::MissingClaim("exp")),
            ("iss", JwtError::MissingClaim("iss")),
            ("aud", JwtError::MissingClaim("aud")),
        ] {
            let token = fx
                .es256
                .token(&header("ES256", "ec256"), &without(claims(), name));
            assert_eq!(reject(&token, &fx.keys), expected);
        }
    }

    #[test]
    fn rejects_alg_none() {
        let fx = fixture();
        for alg in ["none", "None", "NONE"] {
            let token = format!(
                "{}.{}.",
                b64(json!({"alg": alg, "kid": "ec256"}).to_string()),
                b64(claims().to_string())
            );
            assert_eq!(
                reject(&token, &fx.keys),
                JwtError::UnsupportedAlgorithm(alg.to_owned())
            );
        }
    }

    #[test]
    fn rejects_hs256_even_with_an_oct_key_in_the_set() {
        let fx = fixture();
        assert!(!fx.keys.contains("hmac"));
        let input = format!(
            "{}.{}",
            b64(header("HS256", "hmac").to_string()),
            b64(claims().to_string())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, HMAC_SECRET);
        let token = format!("{input}.{}", b64(hmac::sign(&key, input.as_bytes())));
        assert_eq!(
            reject(&token, &fx.keys),
            JwtError::UnsupportedAlgorithm("HS256".into())
        );
        // Also with a kid that exists: the alg is refused before any lookup.
        let token = fx.rsa.token(&header("HS512", "rsa"), &claims());
        assert_eq!(
            reject(&token, &fx.keys),
            JwtError::UnsupportedAlgorithm("HS512".into())
        );
    }

    #[test]
    fn unsupported_alg_name_is_bounded_and_sanitised() {
        let fx = fixture();
        let alg = format!("x\"y\n{}", "z".repeat(100));
        let token = fx.es256.token(&header(&alg, "ec256"), &claims());
        let JwtError::UnsupportedAlgorithm(reported) = reject(&token, &fx.keys) else {
            panic!("expected UnsupportedAlgorithm");
        };
        assert_eq!(reported.len(), MAX_REPORTED_ALG_LEN);
        assert!(reported.starts_with("x?y?z"));
    }

    #[test]
    fn rejects_token_alg_differing_from_key_alg() {
        let fx = fixture();
        // Key pinned ES256, token claims ES384 (signed with the P-384 key).
        let token = fx.es384.token(&header("ES384", "ec256"), &claims());
        assert_eq!(reject(&token, &fx.keys), JwtError::AlgorithmMismatch);
        // RSA key without alg is pinned RS256: a *valid* PS256 signature by
        // the very same key is still refused.
        let token = fx.rsa.token(&header("PS256", "rsa"), &claims());
        assert_eq!(reject(&token, &fx.keys), JwtError::AlgorithmMismatch);
        // And the PS256-pinned entry refuses RS256.
        let token = fx.rsa.token(&header("RS256", "rsa-pss"), &claims());
        assert_eq!(reject(&token, &fx.keys), JwtError::AlgorithmMismatch);
        // EdDSA key, ES256 token.
        let token = fx.es256.token(&header("ES256", "ed"), &claims());
        assert_eq!(reject(&token, &fx.keys), JwtError::AlgorithmMismatch);
    }

    #[test]
    fn unknown_kid_is_reported_for_refresh() {
        let fx = fixture();
        let token = fx.es256.token(&header("ES256", "not-there"), &claims());
        let err = reject(&token, &fx.keys);
        assert!(err.is_unknown_key());
        assert_eq!(
            err,
            JwtError::UnknownKey {
                kid: "not-there".into()
            }
        );
        assert!(!JwtError::BadSignature.is_unknown_key());
        let long_kid = "k".repeat(MAX_KID_LEN + 1);
        let token = fx.es256.token(&header("ES256", &long_kid), &claims());
        assert_eq!(
            reject(&token, &fx.keys),
            JwtError::Malformed("kid too long")
        );
    }

    #[test]
    fn key_rotation_replaces_the_set() {
        let (old, new) = (Signer::p256(), Signer::p256());
        let set = |jwk: Value| {
            KeySet::from_json(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap()
        };
        let before = set(old.jwk(Some("2024-01"), None));
        let after = set(new.jwk(Some("2024-02"), None));
        let old_token = old.token(&header("ES256", "2024-01"), &claims());
        let new_token = new.token(&header("ES256", "2024-02"), &claims());

        accept(&old_token, &before);
        assert!(reject(&new_token, &before).is_unknown_key()); // caller refreshes...
        accept(&new_token, &after); // ...and the retry passes
        assert_eq!(
            reject(&old_token, &after),
            JwtError::UnknownKey {
                kid: "2024-01".into()
            }
        );
    }

    #[test]
    fn token_without_kid_needs_exactly_one_key_for_its_alg() {
        let fx = fixture();
        let no_kid = json!({"alg": "EdDSA"});
        accept(&fx.ed.token(&no_kid, &claims()), &fx.keys);
        // Exactly one ES384 key in the fixture, too.
        accept(
            &fx.es384.token(&json!({"alg": "ES384"}), &claims()),
            &fx.keys,
        );

        let (a, b) = (Signer::p256(), Signer::p256());
        let two = json!({"keys": [a.jwk(None, None), b.jwk(Some("b"), None)]});
        let keys = KeySet::from_json(two.to_string().as_bytes()).unwrap();
        let token = a.token(&json!({"alg": "ES256"}), &claims());
        assert_eq!(reject(&token, &keys), JwtError::AmbiguousKey);
        let token = fx.ed.token(&json!({"alg": "EdDSA"}), &claims());
        assert_eq!(reject(&token, &keys), JwtError::AlgorithmMismatch);
        // A kid in the token never falls back to a key without kid.
        let token = a.token(&header("ES256", "a"), &claims());
        assert!(reject(&token, &keys).is_unknown_key());
    }

    #[test]
    fn scopes_from_scope_claim() {
        let fx = fixture();
        let scoped = with(claims(), "scope", json!("read:orders  write:orders"));
        let got = accept(
            &fx.es256.token(&header("ES256", "ec256"), &scoped),
            &fx.keys,
        );
        assert_eq!(got.scopes, ["read:orders", "write:orders"]);
        assert!(got.has_scope("write:orders"));
        assert!(!got.has_scope("admin"));
        // `scope` wins over `scp`.
        let both = with(scoped, "scp", json!(["ignored"]));
        let got = accept(&fx.es256.token(&header("ES256", "ec256"), &both), &fx.keys);
        assert_eq!(got.scopes, ["read:orders", "write:orders"]);
    }

    #[test]
    fn scopes_from_scp_claim() {
        let fx = fixture();
        let array = with(claims(), "scp", json!(["a", "b"]));
        let got = accept(&fx.es256.token(&header("ES256", "ec256"), &array), &fx.keys);
        assert_eq!(got.scopes, ["a", "b"]);
        let string = with(claims(), "scp", json!("c d"));
        let got = accept(
            &fx.es256.token(&header("ES256", "ec256"), &string),
            &fx.keys,
        );
        assert_eq!(got.scopes, ["c", "d"]);
        let bad = with(claims(), "scp", json!([1, 2]));
        let token = fx.es256.token(&header("ES256", "ec256"), &bad);
        assert!(matches!(reject(&token, &fx.keys), JwtError::Malformed(_)));
    }

    #[test]
    fn rejects_crit_header() {
        let fx = fixture();
        let crit = json!({"alg": "ES256", "kid": "ec256", "crit": ["exp"], "exp": NOW + 300});
        let token = fx.es256.token(&crit, &claims());
        assert_eq!(
            reject(&token, &fx.keys),
            JwtError::Malformed("crit header not supported")
        );
    }

    #[test]
    fn typ_must_be_jwt_or_at_jwt() {
        let fx = fixture();
        for typ in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/JWT",
        ] {
            let h = json!({"alg": "ES256", "kid": "ec256", "typ": typ});
            accept(&fx.es256.token(&h, &claims()), &fx.keys);
        }
        for typ in [
            json!("JOSE"),
            json!("dpop+jwt"),
            json!("application/"),
            json!(1),
        ] {
            let h = json!({"alg": "ES256", "kid": "ec256", "typ": typ});
            let token = fx.es256.token(&h, &claims());
            assert_eq!(
                reject(&token, &fx.keys),
                JwtError::Malformed("typ is not JWT or at+jwt")
            );
        }
    }

    #[test]
    fn rejects_bad_header_and_payload_shapes() {
        let fx = fixture();
        let cases = [
            (
                json!({"kid": "ec256"}),
                claims(),
                "header alg missing or not a string",
            ),
            (
                json!({"alg": 256, "kid": "ec256"}),
                claims(),
                "header alg missing or not a string",
            ),
            (
                json!({"alg": "ES256", "kid": 7}),
                claims(),
                "kid is not a string",
            ),
            (
                header("ES256", "ec256"),
                json!(["not", "an", "object"]),
                "payload is not a JSON object",
            ),
            (
                header("ES256", "ec256"),
                with(claims(), "iss", json!(1)),
                "iss is not a string",
            ),
            (
                header("ES256", "ec256"),
                with(claims(), "aud", json!([AUD, 1])),
                "aud is not a string or array of strings",
            ),
            (
                header("ES256", "ec256"),
                with(claims(), "sub", json!({})),
                "sub is not a string",
            ),
            (
                header("ES256", "ec256"),
                with(claims(), "scope", json!(["a"])),
                "scope is not a string",
            ),
        ];
        for (h, c, reason) in cases {
            let token = fx.es256.token(&h, &c);
            assert_eq!(
                reject(&token, &fx.keys),
                JwtError::Malformed(reason),
                "{reason}"
            );
        }
    }

    #[test]
    fn errors_never_contain_the_token_or_signature() {
        // Every failing case above goes through `reject`, which asserts this;
        // here the variants that carry data are checked once more explicitly.
        let fx = fixture();
        let token = fx.es256.token(&header("ES256", "kid-x"), &claims());
        let sig = token.rsplit('.').next().unwrap();
        let err = reject(&token, &fx.keys);
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(text.contains("kid-x"));
            assert!(!text.contains(sig) && !text.contains(&token));
            assert!(!text.contains("user-1") && !text.contains(ISS));
        }
        let expired = fx.es256.token(
            &header("ES256", "ec256"),
            &with(claims(), "exp", json!(NOW - 3600)),
        );
        let err = reject(&expired, &fx.keys);
        assert_eq!(err.to_string(), "token expired");
        assert_eq!(format!("{err:?}"), "Expired");
    }

    #[test]
    fn claims_debug_omits_extra_values() {
        let fx = fixture();
        let secretive = with(claims(), "email", json!("someone@example.com"));
        let got = accept(
            &fx.es256.token(&header("ES256", "ec256"), &secretive),
            &fx.keys,
        );
        let debug = format!("{got:?}");
        assert!(debug.contains("\"email\"") && debug.contains("user-1"));
        assert!(!debug.contains("someone@example.com") && !debug.contains("t-9"));
    }
}
