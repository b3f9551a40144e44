//! Authentication and the access rules the contract declares: JWT bearer
//! tokens (every way a token can be wrong, and a key rotated), API keys,
//! the mTLS identity, scopes allowed and denied, a public method, the
//! default-deny rule, the application's own rule, and no credential in
//! any log.

mod common;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Running, echo};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use sinew::{
    Server,
    client::ClientConfig,
    server::{
        ServerConfig,
        auth::{
            ApiKeys, Denied, FirstOf, JwksSource, JwtAuthenticator, JwtConfig, MtlsAuthenticator,
            Principal, Undeclared,
        },
    },
    tls::{ClientAuth, ClientTlsConfig},
};
use sinew_workspace::{
    echo::EchoService,
    proto::{
        echo::v1::{EchoClient, echo_server::EchoServer},
        greeter::v1::{
            GreeterClient, HelloReply, HelloRequest,
            greeter_server::{Greeter, GreeterServer},
        },
        shop::payments::v1::{
            Charge, ChargeRequest, PaymentsClient, RefundReply,
            payments_server::{Payments, PaymentsServer},
        },
    },
};
use tonic::{Code, Request, Response, Status};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "payments";

/// Payments that answer, and say who called.
struct Books;

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

struct Hello;

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

/// An ES256 signing key and its JWKS entry.
struct Signer {
    kid: String,
    key: EcdsaKeyPair,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            kid: kid.to_owned(),
            key,
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let point = self.key.public_key().as_ref();
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A token with `claims`, signed; `alg` as the header says.
    fn sign_as(&self, alg: &str, claims: &serde_json::Value) -> String {
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

    fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as("ES256", claims)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims with `scope`.
fn claims(scope: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": scope,
        "exp": now() + 600, "nbf": now() - 10, "tenant": "acme",
    })
}

fn write_jwks(path: &Path, signers: &[&Signer]) {
    let keys: Vec<_> = signers.iter().map(|s| s.jwk()).collect();
    std::fs::write(path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
}

const API_KEY: &str = "ops-cli-0123456789abcdef";

/// The server under test: payments (scoped), greeter (public), echo
/// (undeclared), with JWTs from `jwks` and the API keys.
async fn start(jwks: &Path, config: ServerConfig, extra: impl FnOnce(Server) -> Server) -> Running {
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

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn charge() -> ChargeRequest {
    ChargeRequest {
        order_id: "o-1".into(),
        amount_cents: 100,
    }
}

async fn payments(server: &Running) -> PaymentsClient {
    PaymentsClient::connect(ClientConfig::endpoint(format!("http://{}", server.addr)).seed(1))
        .await
        .unwrap()
}

#[tokio::test]
async fn scopes_are_enforced_as_the_contract_declares() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write_jwks(&jwks, &[&signer]);
    let server = start(&jwks, ServerConfig::new(), |s| s).await;
    let mut payments = payments(&server).await;

    // Charge needs the service default, payments.write.
    let writer = signer.sign(&claims("payments.write"));
    let reply = payments
        .charge(with_token(charge(), &writer))
        .await
        .unwrap();
    assert_eq!(
        reply.get_ref().charge_id,
        "alice",
        "the handler sees the principal"
    );
    // Refund needs payments.refund.
    let refund = Charge::default;
    let status = payments
        .refund(with_token(refund(), &writer))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "missing scope payments.refund");
    let both = signer.sign(&claims("payments.write payments.refund"));
    payments.refund(with_token(refund(), &both)).await.unwrap();
    // Refund's own rule replaces the default: payments.refund alone will do.
    let refunder = signer.sign(&claims("payments.refund"));
    payments
        .refund(with_token(refund(), &refunder))
        .await
        .unwrap();
    let status = payments
        .charge(with_token(charge(), &refunder))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // No credentials: UNAUTHENTICATED, and the message says no more.
    let status = payments.charge(charge()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing credentials");

    // An API key with both scopes.
    let mut request = Request::new(charge());
    request
        .metadata_mut()
        .insert("x-api-key", API_KEY.parse().unwrap());
    let reply = payments.charge(request).await.unwrap();
    assert_eq!(reply.get_ref().charge_id, "ops-cli");
    let mut request = Request::new(charge());
    request
        .metadata_mut()
        .insert("x-api-key", "ops-cli-0123456789abcdeX".parse().unwrap());
    let status = payments.charge(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "invalid credentials");
    server.stop().await;
}

#[tokio::test]
async fn public_methods_and_health_need_nothing_undeclared_ones_are_denied() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write_jwks(&jwks, &[&signer]);
    let server = start(&jwks, ServerConfig::new(), |s| s).await;
    let target = format!("http://{}", server.addr);

    let mut greeter = GreeterClient::connect(ClientConfig::endpoint(&target))
        .await
        .unwrap();
    let hello = HelloRequest {
        name: "anyone".into(),
    };
    greeter
        .say_hello(hello)
        .await
        .expect("a public method needs no credentials");

    let mut health = tonic_health_client(&server).await;
    health
        .check(tonic_health_request())
        .await
        .expect("health is public by default");

    // Echo declares nothing: denied, even with a valid token.
    let mut echo_client = EchoClient::connect(ClientConfig::endpoint(&target))
        .await
        .unwrap();
    let token = signer.sign(&claims("payments.write"));
    let status = echo_client
        .get(with_token(echo("hi"), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // And without one, the caller is told to authenticate first.
    let status = echo_client.get(echo("hi")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;

    // With auth_undeclared = allow, any principal may call it.
    let server = start(
        &jwks,
        ServerConfig::new().auth_undeclared(Undeclared::Allow),
        |s| s,
    )
    .await;
    let target = format!("http://{}", server.addr);
    let mut echo_client = EchoClient::connect(ClientConfig::endpoint(&target))
        .await
        .unwrap();
    echo_client
        .get(with_token(echo("hi"), &token))
        .await
        .unwrap();
    let status = echo_client.get(echo("hi")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;
}

async fn tonic_health_client(
    server: &Running,
) -> sinew::health::proto::health_client::HealthClient<tonic::transport::Channel> {
    sinew::health::proto::health_client::HealthClient::new(server.channel().await)
}

fn tonic_health_request() -> sinew::health::proto::HealthCheckRequest {
    sinew::health::proto::HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test]
async fn every_kind_of_bad_token_is_unauthenticated_and_a_rotated_key_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write_jwks(&jwks, &[&signer]);
    let server = start(&jwks, ServerConfig::new(), |s| s).await;
    let mut payments = payments(&server).await;

    let good = claims("payments.write");
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let stranger = Signer::new("k1");
    let good_token = signer.sign(&good);
    let (head, _) = good_token.rsplit_once('.').unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "not-a-jwt".to_owned()),
        ("expired", signer.sign(&with("exp", (now() - 3600).into()))),
        (
            "not yet valid",
            signer.sign(&with("nbf", (now() + 3600).into())),
        ),
        ("wrong audience", signer.sign(&with("aud", "orders".into()))),
        (
            "wrong issuer",
            signer.sign(&with("iss", "https://evil.test".into())),
        ),
        ("bad signature", stranger.sign(&good)),
        ("alg none", format!("{head}.")),
        (
            "alg none header",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(good.to_string())
            ),
        ),
        ("alg HS256", signer.sign_as("HS256", &good)),
        ("unknown kid", Signer::new("k9").sign(&good)),
    ];
    for (case, token) in cases {
        let status = payments
            .charge(with_token(charge(), &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(status.message(), "invalid credentials", "{case}");
    }
    payments
        .charge(with_token(charge(), &good_token))
        .await
        .unwrap();

    // The issuer rotates in k2: its first token has the keys fetched again.
    let rotated = Signer::new("k2");
    write_jwks(&jwks, &[&rotated]);
    payments
        .charge(with_token(charge(), &rotated.sign(&good)))
        .await
        .expect("an unknown kid is answered by fetching the keys again");
    // k1 is gone from the set.
    let status = payments
        .charge(with_token(charge(), &good_token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn the_applications_own_rule_sees_the_principal_and_the_method() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write_jwks(&jwks, &[&signer]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let server = start(&jwks, ServerConfig::new(), move |s| {
        s.authorizer(
            move |principal: &Principal,
                  method: &sinew::contract::MethodInfo,
                  headers: &http::HeaderMap| {
                record.lock().unwrap().push(method.name);
                let claimed = principal
                    .claims
                    .as_ref()
                    .and_then(|c| c.extra.get("tenant"))
                    .and_then(|t| t.as_str());
                let asked = headers.get("x-tenant").and_then(|t| t.to_str().ok());
                if claimed.is_some() && claimed == asked {
                    Ok(())
                } else {
                    Err(Denied("not your tenant".into()))
                }
            },
        )
    })
    .await;
    let mut payments = payments(&server).await;
    let token = signer.sign(&claims("payments.write"));
    let mut own = with_token(charge(), &token);
    own.metadata_mut()
        .insert("x-tenant", "acme".parse().unwrap());
    payments.charge(own).await.unwrap();
    let mut other = with_token(charge(), &token);
    other
        .metadata_mut()
        .insert("x-tenant", "globex".parse().unwrap());
    let status = payments.charge(other).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "not your tenant");
    assert_eq!(seen.lock().unwrap().as_slice(), ["Charge", "Charge"]);
    server.stop().await;
}

#[tokio::test]
async fn an_mtls_identity_is_a_principal_with_the_scopes_granted_to_it() {
    let pki = sinew_testing::pki::TestPki::new("test CA");
    let cert = pki.server(&["localhost"]);
    let orders = pki.client("orders", Some("spiffe://shop.test/sa/orders"));
    let billing = pki.client("billing", Some("spiffe://shop.test/sa/billing"));
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .tls(&cert.cert, &cert.key)
        .mtls(ClientAuth::Required, pki.ca());
    let server = Running::start(
        Server::new("secure")
            .config(config)
            .add_service(PaymentsServer::new(Books))
            .authenticator(
                MtlsAuthenticator::new().grant("spiffe://shop.test/sa/orders", ["payments.write"]),
            ),
    )
    .await;
    let client = |identity: &sinew_testing::pki::CertFiles| {
        let tls = ClientTlsConfig::new()
            .ca(pki.ca())
            .server_name("localhost")
            .identity(&identity.cert, &identity.key);
        PaymentsClient::connect(ClientConfig::endpoint(format!("https://{}", server.addr)).tls(tls))
    };
    let reply = client(&orders)
        .await
        .unwrap()
        .charge(charge())
        .await
        .unwrap();
    assert_eq!(reply.get_ref().charge_id, "spiffe://shop.test/sa/orders");
    let status = client(&billing)
        .await
        .unwrap()
        .charge(charge())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.stop().await;
}

/// What the test's subscriber captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_credential_reaches_a_log_or_a_tracing_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Every event and every span's fields, at every level.
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write_jwks(&jwks, &[&signer]);
    let server = start(&jwks, ServerConfig::new(), |s| s).await;
    let mut payments = payments(&server).await;
    let good = signer.sign(&claims("payments.write"));
    let expired = signer.sign(&serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now() - 3600,
    }));
    let forged = Signer::new("k1").sign(&claims("payments.write"));
    payments.charge(with_token(charge(), &good)).await.unwrap();
    for token in [&expired, &forged] {
        payments
            .charge(with_token(charge(), token))
            .await
            .unwrap_err();
    }
    let mut request = Request::new(charge());
    request
        .metadata_mut()
        .insert("x-api-key", API_KEY.parse().unwrap());
    payments.charge(request).await.unwrap();
    let mut request = Request::new(charge());
    let wrong_key = "wrong-key-0123456789abcdef";
    request
        .metadata_mut()
        .insert("x-api-key", wrong_key.parse().unwrap());
    payments.charge(request).await.unwrap_err();
    server.stop().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("credentials refused"),
        "the refusals were logged:\n{text}"
    );
    for secret in [&good, &expired, &forged] {
        let signature = secret.rsplit_once('.').unwrap().1;
        assert!(!text.contains(signature), "a token's signature was logged");
        let payload = secret.split('.').nth(1).unwrap();
        assert!(!text.contains(payload), "a token's claims were logged");
    }
    assert!(
        !text.contains(API_KEY) && !text.contains(wrong_key),
        "an API key was logged"
    );
}

#[tokio::test]
async fn a_clients_credentials_go_on_every_call_and_never_in_plain_text_elsewhere() {
    use sinew::client::credentials::{RefreshingToken, StaticToken, TokenFile};

    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::new("k1");
    write_jwks(&jwks, &[&signer]);
    let server = start(&jwks, ServerConfig::new(), |s| s).await;
    let target = format!("http://{}", server.addr);

    let token = signer.sign(&claims("payments.write"));
    let mut payments = PaymentsClient::connect(
        ClientConfig::endpoint(&target).credentials(StaticToken::bearer(&token).unwrap()),
    )
    .await
    .unwrap();
    let reply = payments.charge(charge()).await.unwrap();
    assert_eq!(reply.get_ref().charge_id, "alice");

    // A token file, read again when it changes.
    let file = dir.path().join("token");
    std::fs::write(&file, &token).unwrap();
    let mut payments = PaymentsClient::connect(
        ClientConfig::endpoint(&target)
            .credentials(TokenFile::new(&file).check_every(Duration::ZERO)),
    )
    .await
    .unwrap();
    assert_eq!(
        payments.charge(charge()).await.unwrap().get_ref().charge_id,
        "alice"
    );
    let mut bob = claims("payments.write");
    bob["sub"] = "bob".into();
    // A later modification time than the first write's.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&file, signer.sign(&bob)).unwrap();
    assert_eq!(
        payments.charge(charge()).await.unwrap().get_ref().charge_id,
        "bob"
    );

    // A callback, asked once while its token is fresh.
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&fetches);
    let fresh = token.clone();
    let refreshing = RefreshingToken::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let token = fresh.clone();
        async move { Ok((token, SystemTime::now() + Duration::from_secs(600))) }
    });
    let mut payments =
        PaymentsClient::connect(ClientConfig::endpoint(&target).credentials(refreshing))
            .await
            .unwrap();
    for _ in 0..3 {
        payments.charge(charge()).await.unwrap();
    }
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Plain text to another host: refused when the client is built.
    let error = PaymentsClient::connect(
        ClientConfig::endpoint("http://10.20.30.40:50051")
            .credentials(StaticToken::bearer(&token).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            sinew::client::ClientError::InsecureCredentials { .. }
        ),
        "{error}"
    );
    assert!(!error.to_string().contains(&token));
    // Unless allowed.
    PaymentsClient::connect(
        ClientConfig::endpoint("http://10.20.30.40:50051")
            .credentials(StaticToken::bearer(&token).unwrap())
            .allow_credentials_over_plaintext(true),
    )
    .await
    .unwrap();
    server.stop().await;
}
