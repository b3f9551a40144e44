//! Two services with mTLS: `payments` serves TLS, requires a client
//! certificate from its CA, and lets in only the workloads it grants a
//! scope; `orders` calls it with its own certificate. Certificates are
//! made at start, in a temporary directory (a real deployment reads them
//! from its secret store: the same calls, other paths).
//!
//! Run with: `cargo run --example mtls`. It prints what each caller gets
//! and exits 0:
//!
//! - `orders` (SPIFFE id `spiffe://shop.test/sa/orders`, granted
//!   `payments.write`): its charge goes through, and the handler sees who
//!   called;
//! - `reports` (a certificate of the same CA, granted nothing):
//!   `PERMISSION_DENIED`;
//! - a client without a certificate: refused at the handshake,
//!   `UNAVAILABLE`, with the reason.

#![allow(clippy::print_stdout, reason = "an example program talks to its user")]

use std::time::Duration;

use sinew::{
    Server,
    client::ClientConfig,
    server::{ServerConfig, auth::MtlsAuthenticator},
    tls::{ClientAuth, ClientTlsConfig},
};
use sinew_testing::pki::TestPki;
use sinew_workspace::proto::shop::payments::v1::{
    Charge, ChargeRequest, PaymentsClient, RefundReply,
    payments_server::{Payments, PaymentsServer},
};
use tonic::{Request, Response, Status};

/// Payments that charge, and say who asked.
struct Books;

#[tonic::async_trait]
impl Payments for Books {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Charge>, Status> {
        let caller = sinew::server::principal(request.extensions())
            .map(|principal| principal.subject.clone())
            .unwrap_or_default();
        Ok(Response::new(Charge {
            charge_id: format!("charged for {caller}"),
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pki = TestPki::new("shop CA");
    let payments_cert = pki.server(&["payments.shop.test"]);
    let orders = pki.client("orders", Some("spiffe://shop.test/sa/orders"));
    let reports = pki.client("reports", Some("spiffe://shop.test/sa/reports"));

    // payments: TLS, client certificates required, scopes by identity.
    let config = ServerConfig::new()
        .lame_duck(Duration::ZERO)
        .tls(&payments_cert.cert, &payments_cert.key)
        .mtls(ClientAuth::Required, pki.ca());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new("payments")
            .config(config)
            .add_service(PaymentsServer::new(Books))
            .authenticator(
                MtlsAuthenticator::new().grant("spiffe://shop.test/sa/orders", ["payments.write"]),
            )
            .serve_with_listener(listener, async {
                let _ = stopped.await;
            }),
    );

    // Each caller trusts the shop CA and expects payments' name.
    let endpoint = format!("https://{addr}");
    let tls = || {
        ClientTlsConfig::new()
            .ca(pki.ca())
            .server_name("payments.shop.test")
    };
    let charge = || ChargeRequest {
        order_id: "o-1".into(),
        amount_cents: 1250,
    };

    let mut as_orders = PaymentsClient::connect(
        ClientConfig::endpoint(&endpoint).tls(tls().identity(&orders.cert, &orders.key)),
    )
    .await?;
    let reply = as_orders.charge(charge()).await?;
    println!("orders: {}", reply.get_ref().charge_id);

    let mut as_reports = PaymentsClient::connect(
        ClientConfig::endpoint(&endpoint).tls(tls().identity(&reports.cert, &reports.key)),
    )
    .await?;
    let refused = as_reports.charge(charge()).await.unwrap_err();
    println!("reports: {:?}: {}", refused.code(), refused.message());

    let mut anonymous =
        PaymentsClient::connect(ClientConfig::endpoint(&endpoint).tls(tls())).await?;
    let refused = anonymous.charge(charge()).await.unwrap_err();
    println!("anonymous: {:?}: {}", refused.code(), refused.message());

    let _ = stop.send(());
    server.await??;
    Ok(())
}
