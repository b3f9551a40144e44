//! What verifying a bearer JWT costs per call, by signature algorithm.
//!
//! Each case is one [`verify`] of a valid access token, as the server's
//! authenticator makes it on every call: the compact token split and its
//! three parts base64url-decoded, the header parsed, the key picked by
//! `kid` from a key set of three keys, the signature checked by `ring`, and
//! the claims parsed and checked (`iss`, `aud`, `exp`, `nbf`, the scopes).
//!
//! - `jwt/es256`: ECDSA P-256 with SHA-256.
//! - `jwt/rs256`: RSASSA-PKCS1-v1_5 with SHA-256, a 2048-bit key (the
//!   most common provider key).
//! - `jwt/eddsa`: Ed25519.
//!
//! Keys are made at the start and never written anywhere that outlives
//! the run: ES256 and Ed25519 keys by `ring`, the RSA key by the `openssl`
//! binary in a temporary directory (`ring` cannot generate RSA keys). When
//! `openssl` is not there, RS256 is skipped with a note, and reported as
//! `nan`. The tokens carry what an identity provider's access tokens
//! typically do (`sub`, `iat`, `nbf`, `exp`, `jti`, `scope`, a client id):
//! about 300 bytes of claims.
//!
//! After the Criterion groups, each algorithm is also timed in a plain loop
//! (a second of verifications each, after a warm-up) for the last line.
//!
//! Run with: `cargo bench --bench jwt` (add `-- --quick` for a short run).
//!
//! The last line is exactly:
//! `RESULT jwt_es256_us=<n> jwt_rs256_us=<n> jwt_eddsa_us=<n>`
//! (microseconds per verification).

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    hint::black_box,
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use criterion::Criterion;
use ring::{
    rand::SystemRandom,
    signature::{
        self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
        RsaKeyPair,
    },
};
use serde_json::{Value, json};
use sinew::server::auth::{
    KeySet, Rules,
    jwt::{self, verify},
};

const ISSUER: &str = "https://id.bench.example";
const AUDIENCE: &str = "orders-api";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A 2048-bit RSA key (PKCS#8 DER) made by `openssl` in `dir`, or why not.
fn rsa_key(dir: &Path) -> Result<RsaKeyPair, String> {
    let pem = dir.join("rsa.pem");
    let der = dir.join("rsa.der");
    let run = |args: &[&str], paths: &[(&str, &Path)]| -> Result<(), String> {
        let mut command = Command::new("openssl");
        command.args(args);
        for (flag, path) in paths {
            command.arg(flag).arg(path);
        }
        let out = command
            .output()
            .map_err(|e| format!("openssl did not run: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        &[("-out", &pem)],
    )?;
    run(
        &[
            "pkcs8", "-topk8", "-nocrypt", "-inform", "PEM", "-outform", "DER",
        ],
        &[("-in", &pem), ("-out", &der)],
    )?;
    let der = std::fs::read(&der).map_err(|e| format!("reading the RSA key: {e}"))?;
    RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("ring refused the RSA key: {e}"))
}

/// A signing key and its public JWK.
enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Signer {
    fn alg(&self) -> &'static str {
        match self {
            Self::Es256(_) => "ES256",
            Self::Rs256(_) => "RS256",
            Self::EdDsa(_) => "EdDSA",
        }
    }

    /// The public key as a JWK, with `kid` and `alg`.
    fn jwk(&self, kid: &str) -> Value {
        let mut jwk = match self {
            Self::Es256(pair) => {
                // An uncompressed point: 0x04, then x and y.
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Self::Rs256(pair) => {
                let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)})
            }
            Self::EdDsa(pair) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key())})
            }
        };
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(self.alg());
        jwk["use"] = json!("sig");
        jwk
    }

    /// A signed access token for `claims`, naming `kid`.
    fn token(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "at+jwt", "kid": kid});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let rng = SystemRandom::new();
        let signature = match self {
            Self::Es256(pair) => pair
                .sign(&rng, input.as_bytes())
                .expect("ES256 signature")
                .as_ref()
                .to_vec(),
            Self::Rs256(pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut out,
                )
                .expect("RS256 signature");
                out
            }
            Self::EdDsa(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(signature))
    }
}

/// The key set, the rules, the time, and one valid token per algorithm
/// (`None` for RS256 when there is no RSA key).
struct Fixture {
    keys: KeySet,
    rules: Rules,
    now: SystemTime,
    es256: String,
    rs256: Option<String>,
    eddsa: String,
}

impl Fixture {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let es256 = Signer::Es256(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .expect("the P-256 key"),
        );
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("an Ed25519 key");
        let eddsa =
            Signer::EdDsa(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("the Ed25519 key"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rs256 = match rsa_key(dir.path()) {
            Ok(pair) => Some(Signer::Rs256(pair)),
            Err(why) => {
                println!("note: RS256 skipped: {why}");
                None
            }
        };
        drop(dir);

        let mut jwks = vec![es256.jwk("es256-1"), eddsa.jwk("eddsa-1")];
        jwks.extend(rs256.as_ref().map(|rsa| rsa.jwk("rs256-1")));
        let keys =
            KeySet::from_json(json!({ "keys": jwks }).to_string().as_bytes()).expect("the key set");

        let now = SystemTime::now();
        let issued = now
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let claims = json!({
            "iss": ISSUER,
            "sub": "user-5f2c9a7e-3b1d-4e8a-9c6f-0d2b7a4e1c35",
            "aud": AUDIENCE,
            "iat": issued,
            "nbf": issued,
            "exp": issued + 3600,
            "jti": "9b3e6f1a-27c4-4d85-a0e2-6c1f8b5d3a97",
            "client_id": "orders-web",
            "scope": "orders.read orders.write profile",
        });
        let fixture = Self {
            keys,
            rules: Rules::new(ISSUER, AUDIENCE),
            now,
            es256: es256.token("es256-1", &claims),
            rs256: rs256.map(|rsa| rsa.token("rs256-1", &claims)),
            eddsa: eddsa.token("eddsa-1", &claims),
        };
        // Every token verifies, or the numbers measure a failure path.
        for (alg, token) in fixture.cases() {
            let claims = fixture
                .verify(token)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert!(claims.has_scope("orders.write"), "{alg}: scopes");
        }
        fixture
    }

    fn verify(&self, token: &str) -> Result<jwt::Claims, jwt::JwtError> {
        verify(token, &self.keys, &self.rules, self.now)
    }

    /// The algorithms with a token, by name.
    fn cases(&self) -> Vec<(&'static str, &str)> {
        let mut cases = vec![("es256", self.es256.as_str())];
        cases.extend(self.rs256.as_deref().map(|token| ("rs256", token)));
        cases.push(("eddsa", self.eddsa.as_str()));
        cases
    }
}

fn criterion_groups(c: &mut Criterion, fixture: &Fixture) {
    let mut group = c.benchmark_group("jwt");
    for (alg, token) in fixture.cases() {
        group.bench_function(alg, |b| {
            b.iter(|| fixture.verify(black_box(token)).expect("a valid token"));
        });
    }
    group.finish();
}

/// Microseconds per verification of `token`: a warm-up, then batches of a
/// hundred for `time`.
fn timed(fixture: &Fixture, token: &str, time: Duration) -> f64 {
    let batch = |n: u32| {
        for _ in 0..n {
            black_box(fixture.verify(black_box(token)).expect("a valid token"));
        }
    };
    batch(200);
    let (start, mut done) = (Instant::now(), 0u64);
    while start.elapsed() < time {
        batch(100);
        done += 100;
    }
    start.elapsed().as_secs_f64() * 1e6 / done as f64
}

fn main() {
    let fixture = Fixture::new();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    criterion_groups(&mut criterion, &fixture);
    criterion.final_summary();

    // `cargo test --benches` runs each case once (no `--bench`): no timed
    // loop there.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let time = Duration::from_secs(1);
    let es256 = timed(&fixture, &fixture.es256, time);
    let rs256 = fixture
        .rs256
        .as_deref()
        .map_or(f64::NAN, |token| timed(&fixture, token, time));
    let eddsa = timed(&fixture, &fixture.eddsa, time);
    println!("RESULT jwt_es256_us={es256:.1} jwt_rs256_us={rs256:.1} jwt_eddsa_us={eddsa:.1}");
}
