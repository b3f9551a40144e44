//! Authentication and the access rules the contract declares: JWT bearer
//! tokens (every way a token can be wrong, and a key rotated), API keys,
//! the mTLS identity, scopes allowed and denied, a public method, the
//! default-deny rule, the application's own rule, and a client's
//! credentials. (No credential in a log: `auth_logs.rs`; in a span:
//! `auth_telemetry.rs`.)

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{
    Running, echo,
    secure::{
        API_KEY, Books, Issuer, Signer, charge, claims, now, payments, start, with_token,
        write_jwks,
    },
};
use sinew::tonic_prost::ProstCodec;
use sinew::{
    Server,
    client::ClientConfig,
    server::{
        ServerConfig,
        auth::{Denied, MtlsAuthenticator, Principal, Undeclared},
    },
    tls::{ClientAuth, ClientTlsConfig},
};
use sinew_workspace::proto::{
    echo::v1::EchoClient,
    greeter::v1::{GreeterClient, HelloRequest},
    shop::payments::v1::{Charge, ChargeRequest, PaymentsClient, payments_server::PaymentsServer},
};
use tonic::{Code, Request};

#[tokio::test]
async fn scopes_are_enforced_as_the_contract_declares() {
    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
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
    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
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
        jwks,
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
    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
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
    write_jwks(jwks, &[&rotated]);
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
    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let server = start(jwks, ServerConfig::new(), move |s| {
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

#[tokio::test]
async fn a_clients_credentials_go_on_every_call_and_never_in_plain_text_elsewhere() {
    use sinew::client::credentials::{RefreshingToken, StaticToken, TokenFile};

    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
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
    let dir = tempfile::tempdir().unwrap();
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

/// Calls `path` (which need not exist) on `server` with `token`, if any.
async fn call_path(server: &Running, path: &'static str, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let request = match token {
        Some(token) => with_token(charge(), token),
        None => Request::new(charge()),
    };
    let codec = ProstCodec::<ChargeRequest, Charge>::default();
    grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn no_one_unauthenticated_learns_which_methods_or_services_exist() {
    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
    let token = signer.sign(&claims("payments.write"));

    // A method that does not exist: UNAUTHENTICATED without credentials,
    // as a real one is; UNIMPLEMENTED only to a principal.
    let missing = "/shop.payments.v1.Payments/Steal";
    assert_eq!(
        call_path(&server, missing, None).await.code(),
        Code::Unauthenticated
    );
    assert_eq!(
        call_path(&server, missing, Some(&token)).await.code(),
        Code::Unimplemented
    );
    let unknown_service = "/shop.vault.v1.Vault/Open";
    assert_eq!(
        call_path(&server, unknown_service, None).await.code(),
        Code::Unauthenticated
    );

    // Health's List names every service: as closed as reflection.
    let mut health = sinew::health::proto::health_client::HealthClient::new(server.channel().await);
    let status = health
        .list(sinew::health::proto::HealthListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let listed = health
        .list(with_token(
            sinew::health::proto::HealthListRequest::default(),
            &token,
        ))
        .await
        .unwrap();
    assert!(
        listed
            .get_ref()
            .statuses
            .contains_key("shop.payments.v1.Payments")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_authenticator_for_a_service_not_hosted_fails_the_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = Server::new("typo")
        .config(ServerConfig::new().lame_duck(Duration::ZERO))
        .add_service(PaymentsServer::new(Books))
        .authenticator_for("shop.payments.v1.Payment", MtlsAuthenticator::new())
        .serve_with_listener(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, sinew::server::ServerError::UnknownService { name } if name == "shop.payments.v1.Payment"),
        "{error}"
    );
}

/// A JWKS served over HTTP on loopback, counting its fetches.
struct JwksServer {
    addr: std::net::SocketAddr,
    body: Arc<Mutex<String>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(signers: &[&Signer]) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let this = Self {
            addr: listener.local_addr().unwrap(),
            body: Arc::new(Mutex::new(String::new())),
            fetches: Arc::default(),
        };
        this.serve(signers);
        let (body, fetches) = (Arc::clone(&this.body), Arc::clone(&this.fetches));
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        this
    }

    /// Serves the keys of `signers` from now on.
    fn serve(&self, signers: &[&Signer]) {
        let keys: Vec<_> = signers.iter().map(|s| s.jwk()).collect();
        *self.body.lock().unwrap() = serde_json::json!({ "keys": keys }).to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn keys_come_from_a_jwks_url_fetched_again_for_a_rotated_key() {
    use sinew::server::auth::{JwksSource, JwtAuthenticator, JwtConfig};

    let first = Signer::new("k1");
    let jwks = JwksServer::start(&[&first]).await;
    let url: http::Uri = format!("http://{}/.well-known/jwks.json", jwks.addr)
        .parse()
        .unwrap();
    let jwt = JwtAuthenticator::new(
        JwtConfig::new(
            JwksSource::Url(url),
            common::secure::ISSUER,
            common::secure::AUDIENCE,
        )
        .min_refetch(Duration::ZERO),
    )
    .await
    .unwrap();
    assert_eq!(jwks.fetches(), 1);
    let now = SystemTime::now();
    let principal = jwt.verify(&first.sign(&claims("a b")), now).await.unwrap();
    assert_eq!(principal.scopes, ["a", "b"]);
    assert_eq!(jwks.fetches(), 1, "a known kid needs no fetch");

    let second = Signer::new("k2");
    jwks.serve(&[&second]);
    jwt.verify(&second.sign(&claims("a")), now).await.unwrap();
    assert_eq!(jwks.fetches(), 2, "an unknown kid was fetched once");

    // Keys in plain text from another host: refused at setup.
    let remote: http::Uri = "http://192.0.2.10/jwks.json".parse().unwrap();
    let error = JwtAuthenticator::new(JwtConfig::new(
        JwksSource::Url(remote),
        common::secure::ISSUER,
        common::secure::AUDIENCE,
    ))
    .await
    .unwrap_err();
    assert!(error.to_string().contains("https://"), "{error}");
}

/// Whether a reflection listing over `server` succeeds, or its status.
async fn list_by_reflection(server: &Running, token: Option<&str>) -> Result<(), Code> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let mut client = ServerReflectionClient::new(server.channel().await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = Request::new(tokio_stream::iter([ask]));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut responses = client
        .server_reflection_info(request)
        .await
        .map_err(|status| status.code())?
        .into_inner();
    match responses.message().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Code::Unknown),
        Err(status) => Err(status.code()),
    }
}

#[tokio::test]
async fn reflection_needs_a_principal_unless_made_public() {
    let issuer = Issuer::new();
    let token = issuer.signer.sign(&claims("payments.write"));
    let server = start(&issuer.jwks, ServerConfig::new(), |s| s).await;
    assert_eq!(
        list_by_reflection(&server, None).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(list_by_reflection(&server, Some(&token)).await, Ok(()));
    server.stop().await;

    let server = start(
        &issuer.jwks,
        ServerConfig::new().reflection_public(true),
        |s| s,
    )
    .await;
    assert_eq!(list_by_reflection(&server, None).await, Ok(()));
    server.stop().await;

    // And health can be closed too.
    let server = start(
        &issuer.jwks,
        ServerConfig::new().health_public(false),
        |s| s,
    )
    .await;
    let mut health = sinew::health::proto::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(sinew::health::proto::HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;
}
