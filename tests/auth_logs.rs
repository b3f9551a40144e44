//! No credential reaches a log or a `tracing` span: calls with bearer
//! tokens (good, expired, forged) and API keys (known and not), with every
//! event and span of the process captured at every level.
//!
//! The subscriber is process-wide, so this file holds one test.

mod common;

use std::sync::{Arc, Mutex};

use common::secure::{
    API_KEY, AUDIENCE, ISSUER, Issuer, Signer, charge, claims, now, payments, start, with_token,
};
use sinew::server::ServerConfig;
use tonic::Request;

/// What the subscriber captured.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_a_log_or_a_tracing_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Every event and every span's fields, at every level, on every thread.
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let issuer = Issuer::new();
    let (jwks, signer) = (&issuer.jwks, &issuer.signer);
    let server = start(jwks, ServerConfig::new(), |s| s).await;
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
    assert!(
        !text.contains("Bearer"),
        "an authorization header was logged"
    );
}
