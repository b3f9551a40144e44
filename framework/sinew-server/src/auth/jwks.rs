//! JSON Web Key Set parsing (RFC 7517, RFC 7518 section 6) into pinned
//! verification keys for [`super::jwt::verify`].
//!
//! Only asymmetric signature keys are kept: RSA (`n`, `e`), EC P-256/P-384
//! (`crv`, `x`, `y`) and OKP Ed25519 (`x`). Every kept key is pinned to exactly
//! one [`Algorithm`]; a token is only verified with a key whose pinned
//! algorithm equals the token's `alg`.
//!
//! Entries that cannot be used (symmetric `oct` keys, `use` other than `sig`,
//! unsupported key types or curves, an `alg` inconsistent with the key type,
//! bad parameters, ...) are skipped and counted, they do not fail the set.
//! Only a document that is too large, not a JWK Set, has too many entries or
//! ends up with no usable key is an error.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm};
use serde::Deserialize;
use serde_json::Value;

/// Largest JWK Set document accepted by [`KeySet::from_json`]: 64 KiB.
///
/// A typical provider set (a handful of 2048/4096-bit RSA keys) is 2-10 KiB.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Largest number of entries in the `keys` array accepted by
/// [`KeySet::from_json`] (counted before any entry is skipped).
pub const MAX_KEYS: usize = 64;

/// Longest `kid` accepted, in bytes, both in a JWK and in a token header.
pub const MAX_KID_LEN: usize = 256;

/// Smallest RSA modulus accepted, in bits (ring's `*_2048_8192_*` floor).
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (ring's `*_2048_8192_*` ceiling).
const RSA_MAX_BITS: usize = 8192;
/// Largest RSA public exponent accepted, in bytes (ring allows up to 33 bits).
const RSA_MAX_EXPONENT_BYTES: usize = 5;

/// base64url for JWK members: the URL-safe alphabet only, padding tolerated.
///
/// Key parameters come from the trusted JWKS endpoint, so being lenient about
/// `=` padding costs nothing; tokens are decoded strictly (see `jwt`).
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The JWS algorithms this module can verify. Everything else (`none`,
/// `HS*`, `ES512`, ...) is unsupported by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// `RS384`: RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// `RS512`: RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// `PS256`: RSASSA-PSS with SHA-256 and MGF1-SHA-256.
    Ps256,
    /// `PS384`: RSASSA-PSS with SHA-384 and MGF1-SHA-384.
    Ps384,
    /// `PS512`: RSASSA-PSS with SHA-512 and MGF1-SHA-512.
    Ps512,
    /// `ES256`: ECDSA on P-256 with SHA-256 (fixed-size `r || s` signature).
    Es256,
    /// `ES384`: ECDSA on P-384 with SHA-384 (fixed-size `r || s` signature).
    Es384,
    /// `EdDSA`: Ed25519 (the only EdDSA curve supported).
    EdDsa,
}

impl Algorithm {
    /// Parses a JOSE `alg` value (case-sensitive, as RFC 7515 requires).
    /// Returns `None` for anything not supported, including `none` and `HS*`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" => Self::EdDsa,
            _ => return None,
        })
    }

    /// The JOSE `alg` name of this algorithm, e.g. `"RS256"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    /// ring's RSA verification parameters, for the RSA algorithms only.
    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        Some(match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Self::Es256 | Self::Es384 | Self::EdDsa => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a JWK Set document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("JWK Set document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The document is not a JSON object with a `keys` array.
    #[error("malformed JWK Set: {0}")]
    Malformed(&'static str),
    /// The `keys` array has more than [`MAX_KEYS`] entries.
    #[error("JWK Set has more than {MAX_KEYS} keys")]
    TooManyKeys,
    /// Every entry was skipped; `skipped` is how many entries there were.
    #[error("JWK Set has no usable signature key ({skipped} skipped)")]
    NoUsableKeys {
        /// Number of entries skipped.
        skipped: usize,
    },
}

/// One entry of the set that was not kept, and why (for logging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The entry's `kid`, when it had a string one of at most [`MAX_KID_LEN`] bytes.
    pub kid: Option<String>,
    /// Fixed description of the reason; never contains key material.
    pub reason: &'static str,
}

/// Public key bytes plus the ring algorithm they are verified with.
enum Material {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        params: &'static RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// EC uncompressed point (`0x04 || x || y`) or Ed25519 public key.
    Raw {
        alg: &'static dyn VerificationAlgorithm,
        bytes: Vec<u8>,
    },
}

/// A usable verification key pinned to one algorithm.
pub(crate) struct Key {
    kid: Option<String>,
    alg: Algorithm,
    material: Material,
}

impl Key {
    /// The key's `kid`, if the JWK had one.
    pub(crate) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The single algorithm this key may verify.
    pub(crate) fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Checks `signature` over `message` with this key's pinned algorithm.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { params, n, e } => RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(params, message, signature)
            .is_ok(),
            Material::Raw { alg, bytes } => signature::UnparsedPublicKey::new(*alg, bytes)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "{kid:?}: {}", self.alg),
            None => write!(f, "<no kid>: {}", self.alg),
        }
    }
}

/// A parsed JWK Set: the usable signature keys, each pinned to one algorithm.
///
/// Lookup is a linear scan, which is fine for at most [`MAX_KEYS`] keys.
/// Within a set, a (`kid`, algorithm) pair is unique; a later duplicate is
/// skipped. Replace the whole `KeySet` to rotate keys.
pub struct KeySet {
    keys: Vec<Key>,
    skipped: Vec<SkippedKey>,
}

impl KeySet {
    /// Parses a JWK Set document (`{"keys":[...]}`).
    ///
    /// Unusable entries are skipped (see [`KeySet::skipped_keys`]); the set
    /// is refused only when it is too large, malformed, has more than
    /// [`MAX_KEYS`] entries or has no usable key left.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let document: Value = serde_json::from_slice(bytes)
            .map_err(|_| JwksError::Malformed("document is not valid JSON"))?;
        let Value::Object(mut document) = document else {
            return Err(JwksError::Malformed("document is not a JSON object"));
        };
        let Some(Value::Array(entries)) = document.remove("keys") else {
            return Err(JwksError::Malformed("document has no \"keys\" array"));
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }

        let mut set = Self {
            keys: Vec::with_capacity(entries.len()),
            skipped: Vec::new(),
        };
        for entry in entries {
            let kid = entry
                .get("kid")
                .and_then(Value::as_str)
                .filter(|kid| kid.len() <= MAX_KID_LEN)
                .map(str::to_owned);
            let parsed = RawJwk::deserialize(entry)
                .map_err(|_| "entry is not a well-formed JWK object")
                .and_then(parse_key);
            match parsed {
                Ok(key)
                    if set
                        .keys
                        .iter()
                        .any(|k| k.kid == key.kid && k.alg == key.alg) =>
                {
                    set.skipped.push(SkippedKey {
                        kid,
                        reason: "duplicate kid and alg",
                    });
                }
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(SkippedKey { kid, reason }),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKeys {
                skipped: set.skipped.len(),
            });
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no usable key (never true for a set built by
    /// [`KeySet::from_json`], which refuses such a set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of entries of the document that were skipped.
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// The skipped entries, with a fixed reason each (for logging).
    pub fn skipped_keys(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Whether a usable key has this `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid() == Some(kid))
    }

    /// The usable keys.
    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys)
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

/// The JWK members we look at; everything else is ignored (including
/// private-key members, `x5c` and friends).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Turns one JWK into a pinned key, or a fixed reason to skip it.
fn parse_key(raw: RawJwk) -> Result<Key, &'static str> {
    if raw.kty == "oct" {
        return Err("symmetric (oct) key");
    }
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("use is not sig");
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Err("key_ops does not include verify");
    }
    if raw.kid.as_ref().is_some_and(|kid| kid.len() > MAX_KID_LEN) {
        return Err("kid too long");
    }
    let declared = match raw.alg.as_deref() {
        None => None,
        Some(name) => Some(Algorithm::from_name(name).ok_or("unsupported alg")?),
    };
    let (alg, material) = match raw.kty.as_str() {
        "RSA" => rsa_key(&raw, declared)?,
        "EC" => ec_key(&raw, declared)?,
        "OKP" => okp_key(&raw, declared)?,
        _ => return Err("unsupported kty"),
    };
    Ok(Key {
        kid: raw.kid,
        alg,
        material,
    })
}

fn rsa_key(
    raw: &RawJwk,
    declared: Option<Algorithm>,
) -> Result<(Algorithm, Material), &'static str> {
    // An RSA key without `alg` is only trusted for RS256: inferring PS* or a
    // larger hash would let one key serve several algorithms.
    let alg = declared.unwrap_or(Algorithm::Rs256);
    let params = alg
        .rsa_parameters()
        .ok_or("alg inconsistent with key type")?;
    let n = strip_leading_zeros(decode_member(raw.n.as_deref())?);
    let e = strip_leading_zeros(decode_member(raw.e.as_deref())?);
    let n_bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&n_bits) {
        return Err("RSA modulus size out of range");
    }
    if e.is_empty() || e.len() > RSA_MAX_EXPONENT_BYTES {
        return Err("RSA exponent out of range");
    }
    Ok((alg, Material::Rsa { params, n, e }))
}

fn ec_key(
    raw: &RawJwk,
    declared: Option<Algorithm>,
) -> Result<(Algorithm, Material), &'static str> {
    let (curve_alg, coordinate_len, ring_alg): (_, _, &'static dyn VerificationAlgorithm) =
        match raw.crv.as_deref() {
            Some("P-256") => (Algorithm::Es256, 32, &signature::ECDSA_P256_SHA256_FIXED),
            Some("P-384") => (Algorithm::Es384, 48, &signature::ECDSA_P384_SHA384_FIXED),
            Some(_) => return Err("unsupported curve"),
            None => return Err("missing key parameter"),
        };
    if declared.is_some_and(|alg| alg != curve_alg) {
        return Err("alg inconsistent with key type");
    }
    let x = decode_member(raw.x.as_deref())?;
    let y = decode_member(raw.y.as_deref())?;
    if x.len() != coordinate_len || y.len() != coordinate_len {
        return Err("bad EC coordinate length");
    }
    let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok((
        curve_alg,
        Material::Raw {
            alg: ring_alg,
            bytes: point,
        },
    ))
}

fn okp_key(
    raw: &RawJwk,
    declared: Option<Algorithm>,
) -> Result<(Algorithm, Material), &'static str> {
    match raw.crv.as_deref() {
        Some("Ed25519") => {}
        Some(_) => return Err("unsupported curve"),
        None => return Err("missing key parameter"),
    }
    if declared.is_some_and(|alg| alg != Algorithm::EdDsa) {
        return Err("alg inconsistent with key type");
    }
    let x = decode_member(raw.x.as_deref())?;
    if x.len() != 32 {
        return Err("bad Ed25519 key length");
    }
    Ok((
        Algorithm::EdDsa,
        Material::Raw {
            alg: &signature::ED25519,
            bytes: x,
        },
    ))
}

fn decode_member(value: Option<&str>) -> Result<Vec<u8>, &'static str> {
    let value = value.ok_or("missing key parameter")?;
    JWK_BASE64
        .decode(value)
        .map_err(|_| "bad base64url in key parameter")
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A 2048-bit "modulus" (top bit set). Not a real key, which is fine
    /// for parsing tests: ring only rejects it at verification time.
    fn fake_n(bits: usize) -> String {
        let mut n = vec![0xA5_u8; bits / 8];
        n[0] |= 0x80;
        b64(&n)
    }

    fn rsa(kid: &str, alg: Option<&str>) -> Value {
        let mut jwk = json!({"kty": "RSA", "kid": kid, "n": fake_n(2048), "e": "AQAB"});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    fn ec(kid: &str, crv: &str, len: usize, alg: Option<&str>) -> Value {
        let mut jwk = json!({"kty": "EC", "kid": kid, "crv": crv,
            "x": b64(&vec![1; len]), "y": b64(&vec![2; len])});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    fn okp(kid: &str, len: usize) -> Value {
        json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(&vec![3; len])})
    }

    fn set(keys: &[Value]) -> Result<KeySet, JwksError> {
        KeySet::from_json(json!({ "keys": keys }).to_string().as_bytes())
    }

    fn alg_of(set: &KeySet, kid: &str) -> Vec<Algorithm> {
        set.keys()
            .iter()
            .filter(|k| k.kid() == Some(kid))
            .map(Key::alg)
            .collect()
    }

    #[test]
    fn parses_each_key_type_and_pins_algorithms() {
        let set = set(&[
            rsa("rsa", None),
            rsa("rsa-ps", Some("PS384")),
            ec("p256", "P-256", 32, None),
            ec("p384", "P-384", 48, Some("ES384")),
            okp("ed", 32),
        ])
        .unwrap();
        assert_eq!(set.len(), 5);
        assert!(!set.is_empty());
        assert_eq!(set.skipped(), 0);
        assert_eq!(alg_of(&set, "rsa"), [Algorithm::Rs256]);
        assert_eq!(alg_of(&set, "rsa-ps"), [Algorithm::Ps384]);
        assert_eq!(alg_of(&set, "p256"), [Algorithm::Es256]);
        assert_eq!(alg_of(&set, "p384"), [Algorithm::Es384]);
        assert_eq!(alg_of(&set, "ed"), [Algorithm::EdDsa]);
        assert!(set.contains("p256"));
        assert!(!set.contains("nope"));
    }

    #[test]
    fn skips_symmetric_keys_without_failing_the_set() {
        let set = set(&[
            json!({"kty": "oct", "kid": "hmac", "k": b64(b"secret"), "alg": "HS256"}),
            okp("ed", 32),
        ])
        .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped(), 1);
        assert!(!set.contains("hmac"));
        assert_eq!(
            set.skipped_keys(),
            [SkippedKey {
                kid: Some("hmac".into()),
                reason: "symmetric (oct) key"
            }]
        );
    }

    #[test]
    fn skips_non_signature_keys() {
        let mut enc = rsa("enc", None);
        enc["use"] = json!("enc");
        let mut sig = rsa("sig", None);
        sig["use"] = json!("sig");
        let mut wrap = ec("wrap", "P-256", 32, None);
        wrap["key_ops"] = json!(["wrapKey"]);
        let mut verify = ec("verify", "P-256", 32, None);
        verify["key_ops"] = json!(["verify"]);
        let set = set(&[enc, sig, wrap, verify]).unwrap();
        assert!(set.contains("sig") && set.contains("verify"));
        assert!(!set.contains("enc") && !set.contains("wrap"));
        assert_eq!(set.skipped(), 2);
    }

    #[test]
    fn skips_alg_inconsistent_with_key_type() {
        let set = set(&[
            ec("p256-es384", "P-256", 32, Some("ES384")),
            ec("p384-es256", "P-384", 48, Some("ES256")),
            ec("ec-hs256", "P-256", 32, Some("HS256")),
            rsa("rsa-es256", Some("ES256")),
            rsa("rsa-none", Some("none")),
            json!({"kty": "OKP", "kid": "ed-rs", "crv": "Ed25519", "x": b64(&[3; 32]), "alg": "RS256"}),
            okp("ok", 32),
        ])
        .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped(), 6);
        let reasons: Vec<_> = set.skipped_keys().iter().map(|s| s.reason).collect();
        assert_eq!(
            reasons,
            [
                "alg inconsistent with key type",
                "alg inconsistent with key type",
                "unsupported alg",
                "alg inconsistent with key type",
                "unsupported alg",
                "alg inconsistent with key type",
            ]
        );
    }

    #[test]
    fn skips_bad_key_parameters() {
        let set = set(&[
            ec("short-x", "P-256", 31, None),
            ec("p384-len-on-p256", "P-256", 48, None),
            ec("p521", "P-521", 66, None),
            okp("ed-short", 31),
            json!({"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(&[3; 32])}),
            json!({"kty": "RSA", "kid": "small", "n": fake_n(1024), "e": "AQAB"}),
            json!({"kty": "RSA", "kid": "no-e", "n": fake_n(2048)}),
            json!({"kty": "RSA", "kid": "std-alphabet", "n": "ab+/", "e": "AQAB"}),
            json!({"kty": "EC", "kid": "no-crv", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
            json!({"kty": "dunno", "kid": "kty"}),
            json!({"kid": "no-kty"}),
            json!("not an object"),
            okp("ok", 32),
        ])
        .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped(), 12);
        assert!(set.skipped_keys().iter().all(|s| !s.reason.is_empty()));
    }

    #[test]
    fn accepts_padded_and_zero_prefixed_rsa_members() {
        let mut n = vec![0_u8];
        n.extend(vec![0xC3; 256]);
        let padded_e = base64::engine::general_purpose::URL_SAFE.encode([1, 0, 1]);
        let set = set(&[json!({"kty": "RSA", "kid": "r", "n": b64(&n), "e": padded_e})]).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn skips_duplicate_kid_with_same_alg() {
        let set = set(&[
            rsa("dup", None),
            rsa("dup", None),
            rsa("dup", Some("PS256")),
        ])
        .unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.skipped_keys()[0].reason, "duplicate kid and alg");
    }

    #[test]
    fn refuses_bad_documents() {
        assert_eq!(
            KeySet::from_json(b"not json").unwrap_err(),
            JwksError::Malformed("document is not valid JSON")
        );
        assert!(matches!(
            KeySet::from_json(b"[]"),
            Err(JwksError::Malformed(_))
        ));
        assert!(matches!(
            KeySet::from_json(br#"{"keys": {}}"#),
            Err(JwksError::Malformed(_))
        ));
        assert!(matches!(
            KeySet::from_json(br#"{"nokeys": []}"#),
            Err(JwksError::Malformed(_))
        ));
        assert_eq!(
            KeySet::from_json(br#"{"keys": []}"#).unwrap_err(),
            JwksError::NoUsableKeys { skipped: 0 }
        );
        let only_oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string();
        assert_eq!(
            KeySet::from_json(only_oct.as_bytes()).unwrap_err(),
            JwksError::NoUsableKeys { skipped: 1 }
        );
    }

    #[test]
    fn enforces_size_bounds() {
        let big = format!(r#"{{"keys": [], "pad": "{}"}}"#, "a".repeat(MAX_JWKS_BYTES));
        assert_eq!(
            KeySet::from_json(big.as_bytes()).unwrap_err(),
            JwksError::TooLarge
        );

        let many: Vec<_> = (0..=MAX_KEYS).map(|i| okp(&format!("k{i}"), 32)).collect();
        assert_eq!(set(&many).unwrap_err(), JwksError::TooManyKeys);
        let max: Vec<_> = (0..MAX_KEYS).map(|i| okp(&format!("k{i}"), 32)).collect();
        assert_eq!(set(&max).unwrap().len(), MAX_KEYS);

        let long_kid = "k".repeat(MAX_KID_LEN + 1);
        let set = set(&[okp(&long_kid, 32), okp("ok", 32)]).unwrap();
        assert_eq!(
            set.skipped_keys(),
            [SkippedKey {
                kid: None,
                reason: "kid too long"
            }]
        );
    }

    #[test]
    fn debug_is_short_and_has_no_key_material() {
        let n = fake_n(2048);
        let set = set(&[
            json!({"kty": "RSA", "kid": "r1", "n": n, "e": "AQAB"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 32])}),
        ])
        .unwrap();
        let debug = format!("{set:?}");
        assert_eq!(
            debug,
            r#"KeySet { keys: ["r1": RS256, <no kid>: EdDSA], skipped: 0 }"#
        );
        assert!(!debug.contains(&n[..16]));
    }
}
