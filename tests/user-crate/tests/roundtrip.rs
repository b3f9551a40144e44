//! Serves the catalog and calls it through the generated resilient client,
//! with nothing but `sinew` (and tokio) to build on.

#![deny(warnings)]

mod proto {
    sinew::include_contracts!();
}

use proto::shop::v1::{
    CatalogClient, CatalogContract, GetProductRequest, ListProductsRequest, PriceChanged, Product,
    SetPriceRequest,
    catalog_server::{Catalog, CatalogServer},
    price_changed::PhotoReplaced,
};
use sinew::{
    contract::{Contract, Idempotency},
    event::Event,
    tonic::{self, Code, Request, Response, Status},
};

struct Shop;

#[tonic::async_trait]
impl Catalog for Shop {
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        Ok(Response::new(Product {
            id: request.into_inner().id,
            price_cents: 250,
            updated_at: Some(sinew::prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        }))
    }

    async fn set_price(
        &self,
        request: Request<SetPriceRequest>,
    ) -> Result<Response<Product>, Status> {
        let request = request.into_inner();
        Ok(Response::new(Product {
            id: request.id,
            price_cents: request.price_cents,
            updated_at: None,
        }))
    }

    async fn add_product(&self, _request: Request<Product>) -> Result<Response<Product>, Status> {
        Err(Status::already_exists(
            "that product is already in the catalog",
        ))
    }

    type ListProductsStream = std::pin::Pin<
        Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<Product, Status>> + Send>,
    >;

    async fn list_products(
        &self,
        _request: Request<ListProductsRequest>,
    ) -> Result<Response<Self::ListProductsStream>, Status> {
        Err(Status::unimplemented("the catalog is not listed yet"))
    }
}

#[test]
fn the_method_table_reads_the_contract() {
    assert_eq!(CatalogContract::SERVICE, "shop.v1.Catalog");
    assert_eq!(
        CatalogContract::GET_PRODUCT.idempotency,
        Idempotency::NoSideEffects
    );
    assert_eq!(
        CatalogContract::SET_PRICE.idempotency,
        Idempotency::Idempotent
    );
    assert_eq!(
        CatalogContract::ADD_PRODUCT.idempotency,
        Idempotency::Unknown
    );
    assert_eq!(
        CatalogContract::GET_PRODUCT.policy.timeout,
        Some(std::time::Duration::from_secs(2))
    );
}

#[test]
fn events_read_the_contract() {
    assert_eq!(PriceChanged::TYPE, "shop.v1.PriceChanged");
    assert_eq!(PriceChanged::SUBJECT, "shop.catalog.price-changed");
    assert_eq!(PriceChanged::SCHEMA_VERSION, 1);
    let changed = PriceChanged {
        product_id: "tea".into(),
        price_cents: 300,
    };
    assert_eq!(changed.aggregate_id(), "tea");

    assert_eq!(PhotoReplaced::TYPE, "shop.v1.PriceChanged.PhotoReplaced");
    let replaced = PhotoReplaced {
        digest: vec![0xde, 0xad, 0x01],
    };
    assert_eq!(replaced.aggregate_id(), "dead01");
}

#[tokio::test]
async fn a_call_through_the_generated_client_reaches_the_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        sinew::Server::new("catalog")
            .add_service(CatalogServer::new(Shop))
            .serve_with_listener(listener, async move {
                let _ = stopped.await;
            }),
    );

    let config = sinew::client::ClientConfig::endpoint(format!("http://{addr}"));
    let mut client = CatalogClient::connect(config).await.unwrap();
    let product = client
        .get_product(GetProductRequest { id: "tea".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(product.id, "tea");
    assert_eq!(product.price_cents, 250);
    assert_eq!(product.updated_at.map(|t| t.seconds), Some(1_700_000_000));

    let refused = client.add_product(Product::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
