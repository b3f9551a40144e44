//! For the authentication tests: signed JWTs and their JWKS, and the
//! services they call (payments, scoped; the greeter, public).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sinew::{
    Server,
    client::ClientConfig,
    server::{
        ServerConfig,
        auth::{ApiKeys, FirstOf, JwksSource, JwtAuthenticator, JwtConfig},
    },
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sinew_workspace::{
    echo::EchoService,
    proto::{
        echo::v1::echo_server::EchoServer,
        greeter::v1::{
            HelloReply, HelloRequest,
            greeter_server::{Greeter, GreeterServer},
        },
        shop::payments::v1::{
            Charge, ChargeRequest, PaymentsClient, RefundReply,
            payments_server::{Payments, PaymentsServer},
        },
    },
};

use super::Running;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use tonic::{Request, Response, Status};

/// The issuer the tests' servers accept.
pub(crate) const ISSUER: &str = "https://issuer.test";
/// The audience the tests' servers accept.
pub(crate) const AUDIENCE: &str = "payments";

/// An ES256 signing key and its JWKS entry.
pub(crate) struct Signer {
    kid: String,
    key: EcdsaKeyPair,
}

impl Signer {
    pub(crate) fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            kid: kid.to_owned(),
            key,
        }
    }

    pub(crate) fn jwk(&self) -> serde_json::Value {
        let point = self.key.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A token with `claims`, signed; `alg` as the header says.
    pub(crate) fn sign_as(&self, alg: &str, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as("ES256", claims)
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims with `scope`.
pub(crate) fn claims(scope: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": scope,
        "exp": now() + 600, "nbf": now() - 10, "tenant": "acme",
    })
}

pub(crate) fn write_jwks(path: &Path, signers: &[&Signer]) {
    let keys: Vec<_> = signers.iter().map(|s| s.jwk()).collect();
    std::fs::write(path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
}

/// Payments that answer, and say who called (the charge id is the
/// principal's subject).
pub(crate) struct Books;

#[tonic::async_trait]
impl Payments for Books {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Charge>, Status> {
        let caller = sinew::server::principal(request.extensions())
            .map(|p| p.subject.clone())
            .unwrap_or_default();
        Ok(Response::new(Charge {
            charge_id: caller,
            order_id: request.get_ref().order_id.clone(),
            amount_cents: request.get_ref().amount_cents,
        }))
    }

    async fn refund(&self, request: Request<Charge>) -> Result<Response<RefundReply>, Status> {
        Ok(Response::new(RefundReply {
            charge_id: request.get_ref().charge_id.clone(),
        }))
    }
}

/// A greeter, whose contract makes it public.
pub(crate) struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply {
            message: format!("Hello, {}!", request.get_ref().name),
        }))
    }
}

/// A charge to make.
pub(crate) fn charge() -> ChargeRequest {
    ChargeRequest {
        order_id: "o-1".into(),
        amount_cents: 100,
    }
}

/// The tests' token issuer: its key `k1`, published in a JWKS file.
pub(crate) struct Issuer {
    _dir: tempfile::TempDir,
    /// The JWKS file.
    pub(crate) jwks: std::path::PathBuf,
    /// Its signing key, `k1`.
    pub(crate) signer: Signer,
}

impl Issuer {
    /// A new key, published.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let signer = Signer::new("k1");
        write_jwks(&jwks, &[&signer]);
        Self {
            _dir: dir,
            jwks,
            signer,
        }
    }
}

/// The API key of the servers [`start`] starts, with both payments scopes.
pub(crate) const API_KEY: &str = "ops-cli-0123456789abcdef";

/// The server under test: payments (scoped), greeter (public), echo
/// (undeclared), with JWTs from `jwks` (fetched again at once for an
/// unknown `kid`) and the API key; `extra` adds to it.
pub(crate) async fn start(
    jwks: &Path,
    config: ServerConfig,
    extra: impl FnOnce(Server) -> Server,
) -> Running {
    let jwt = JwtAuthenticator::new(
        JwtConfig::new(JwksSource::File(jwks.to_owned()), ISSUER, AUDIENCE)
            .min_refetch(Duration::ZERO),
    )
    .await
    .unwrap();
    let keys = ApiKeys::from_toml(&format!(
        "[[keys]]\nname = \"ops-cli\"\nkey = \"{API_KEY}\"\nscopes = [\"payments.write\", \"payments.refund\"]\n"
    ))
    .unwrap();
    let server = Server::new("secure")
        .config(config.lame_duck(Duration::ZERO))
        .add_service(PaymentsServer::new(Books))
        .add_service(GreeterServer::new(Hello))
        .add_service(EchoServer::new(EchoService))
        .authenticator(FirstOf::new(vec![Arc::new(jwt), Arc::new(keys)]));
    Running::start(extra(server)).await
}

/// `message` with `authorization: Bearer <token>`.
pub(crate) fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A payments client of `server`, without credentials.
pub(crate) async fn payments(server: &Running) -> PaymentsClient {
    PaymentsClient::connect(ClientConfig::endpoint(format!("http://{}", server.addr)).seed(1))
        .await
        .unwrap()
}
