//! No credential reaches an exported span: calls with bearer tokens (good,
//! expired, forged) and API keys (known and not), client and server spans
//! received by an in-process OTLP collector, every byte of every export
//! searched for them.
//!
//! Telemetry is process-wide, so this file holds one test.

mod common;

use std::time::Duration;

use common::{
    collector::Collector,
    secure::{API_KEY, Issuer, Signer, charge, claims, now, start},
};
use sinew::{
    client::{ClientConfig, credentials::StaticToken},
    server::ServerConfig,
    telemetry::{TelemetryConfig, init_with},
};
use sinew_workspace::proto::{
    greeter::v1::{GreeterClient, HelloRequest},
    shop::payments::v1::PaymentsClient,
};
use tonic::Request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_an_exported_span() {
    let collector = Collector::start().await;
    let _telemetry = init_with(
        TelemetryConfig::new("secure")
            .endpoint(collector.endpoint())
            .schedule_delay(Duration::from_millis(50)),
    )
    .expect("telemetry installs");

    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
    let target = format!("http://{}", server.addr);

    let good = signer.sign(&claims("payments.write"));
    let mut expired_claims = claims("payments.write");
    expired_claims["exp"] = (now() - 3600).into();
    let expired = signer.sign(&expired_claims);
    let forged = Signer::new("k1").sign(&claims("payments.write"));
    let wrong_key = "wrong-key-0123456789abcdef";

    let mut calls = 0;
    for (token, ok) in [(&good, true), (&expired, false), (&forged, false)] {
        let mut payments = PaymentsClient::connect(
            ClientConfig::endpoint(&target).credentials(StaticToken::bearer(token).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(payments.charge(charge()).await.is_ok(), ok);
        calls += 1;
    }
    for (key, ok) in [(API_KEY, true), (wrong_key, false)] {
        let mut payments = PaymentsClient::connect(ClientConfig::endpoint(&target))
            .await
            .unwrap();
        let mut request = Request::new(charge());
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        assert_eq!(payments.charge(request).await.is_ok(), ok);
        calls += 1;
    }
    // A public method, called with a token it does not need.
    let mut greeter = GreeterClient::connect(
        ClientConfig::endpoint(&target).credentials(StaticToken::bearer(&good).unwrap()),
    )
    .await
    .unwrap();
    greeter
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();
    calls += 1;

    // A client and a server span for each call.
    let arrived = collector
        .wait_for(|c| c.spans().len() >= 2 * calls, Duration::from_secs(20))
        .await;
    assert!(arrived, "spans received: {:?}", collector.span_names());
    server.stop().await;

    let exported = format!("{:?}", collector.trace_requests());
    // What is searched is the spans themselves.
    assert!(
        exported.contains("shop.payments.v1.Payments/Charge"),
        "{exported}"
    );
    for token in [&good, &expired, &forged] {
        let mut parts = token.split('.');
        let (_header, payload, signature) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(
            !exported.contains(signature),
            "a token's signature was exported"
        );
        assert!(
            !exported.contains(payload),
            "a token's claims were exported"
        );
    }
    assert!(!exported.contains(API_KEY), "an API key was exported");
    assert!(
        !exported.contains(wrong_key),
        "a presented key was exported"
    );
    assert!(
        !exported.contains("Bearer"),
        "an authorization header was exported"
    );
}
