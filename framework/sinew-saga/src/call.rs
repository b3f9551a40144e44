//! A unary call by path through a resilient client: how a step built from
//! a contract's method calls it and its compensation.

use http::uri::PathAndQuery;
use prost::Message;
use sinew_client::Client;
use tonic::{GrpcMethod, Status};

use crate::definition::StepContext;

/// A response whose fields are not read (a compensation's): prost skips
/// them.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Ignored {}

/// Calls `path` with `message`, carrying the step's idempotency key.
pub(crate) async fn unary<Req, Resp>(
    client: &Client,
    path: &'static str,
    cx: &StepContext,
    message: Req,
) -> Result<Resp, Status>
where
    Req: Message + 'static,
    Resp: Message + Default + 'static,
{
    let mut grpc = tonic::client::Grpc::new(client.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("client not ready: {e}")))?;
    let mut request = cx.request(message);
    if let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
        request
            .extensions_mut()
            .insert(GrpcMethod::new(service, method));
    }
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(request, PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
}
