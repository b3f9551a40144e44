//! The catalog service: a binary that only serves, so the generated
//! clients go unused, and must cost no warning.

#![deny(warnings)]

mod proto {
    sinew::include_contracts!();
}

use proto::shop::v1::{
    GetProductRequest, ListProductsRequest, Product, SetPriceRequest,
    catalog_server::{Catalog, CatalogServer},
};
use sinew::tonic::{self, Request, Response, Status};

struct Shop;

type ProductStream = std::pin::Pin<
    Box<dyn sinew::tonic::codegen::tokio_stream::Stream<Item = Result<Product, Status>> + Send>,
>;

#[tonic::async_trait]
impl Catalog for Shop {
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let id = request.into_inner().id;
        Ok(Response::new(Product {
            id,
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

    async fn add_product(&self, request: Request<Product>) -> Result<Response<Product>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type ListProductsStream = ProductStream;

    async fn list_products(
        &self,
        _request: Request<ListProductsRequest>,
    ) -> Result<Response<Self::ListProductsStream>, Status> {
        Err(Status::unimplemented("the catalog is not listed yet"))
    }
}

#[tokio::main]
async fn main() -> Result<(), sinew::server::ServerError> {
    sinew::Server::new("catalog")
        .add_service(CatalogServer::new(Shop))
        .run()
        .await
}
