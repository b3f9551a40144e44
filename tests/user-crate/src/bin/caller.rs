//! A binary that only calls the catalog, through the resilient generated
//! client: the servers go unused, and must cost no warning.

#![deny(warnings)]

mod proto {
    sinew::include_contracts!();
}

use proto::shop::v1::{CatalogClient, GetProductRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let mut client = CatalogClient::connect(sinew::client::ClientConfig::endpoint(addr)).await?;
    let product = client
        .get_product(GetProductRequest { id: "tea".into() })
        .await?
        .into_inner();
    std::process::exit(if product.id == "tea" { 0 } else { 1 });
}
