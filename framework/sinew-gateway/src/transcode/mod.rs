//! HTTP/JSON transcoding: the `google.api.http` bindings of gRPC methods.
//!
//! Everything here works on descriptors and bytes and does no IO:
//!
//! - [`HttpRoutes`] reads every method's `google.api.http` option (a method
//!   without one gets `POST /package.Service/Method` with the whole request
//!   as body) and finds the [`Binding`] for a verb and a path.
//! - [`Binding::request`] builds the request message from the body, the path
//!   variables and the query; [`Binding::response_json`] turns the response
//!   into JSON. Both use the proto3 JSON mapping of `prost-reflect`.
//! - [`status_json`] and [`http_status`] turn a gRPC error into an HTTP one.
//! - [`HttpRoutes::openapi`] describes every binding as OpenAPI 3.0.3.

mod json;
mod openapi;
mod routes;
mod status;
mod template;
#[cfg(test)]
mod tests;

pub use routes::{Binding, Captures, HttpRoutes};
pub use status::{RpcStatus, http_status, status_json};

/// The bindings of a set of services cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A service named is not in the descriptor pool.
    #[error("service `{0}` is not in the descriptor pool")]
    UnknownService(String),
    /// One binding of a method cannot be used: its template does not parse,
    /// or it names a field that does not exist or cannot be bound.
    #[error("{method}: `{template}`: {reason}")]
    Binding {
        /// The method's full name.
        method: String,
        /// The path template as written.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// Two bindings have the same verb and match the same paths.
    #[error("{verb} {template} is bound twice: by {first} and by {second}")]
    Conflict {
        /// The HTTP verb.
        verb: String,
        /// The template of the second binding.
        template: String,
        /// The method of the first binding.
        first: String,
        /// The method of the second binding.
        second: String,
    },
}

/// A request cannot be turned into a message, or a response into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// The body is not JSON, or JSON that does not fit the request; the
    /// message names the field and the type it expects.
    #[error("request body: {0}")]
    Body(String),
    /// A path variable does not fit its field.
    #[error("path: {0}")]
    Path(String),
    /// A query parameter is unknown, bound by the path or body, or does not
    /// fit its field.
    #[error("query: {0}")]
    Query(String),
    /// The response cannot be written as JSON.
    #[error("response: {0}")]
    Response(String),
}

impl TranscodeError {
    /// The gRPC code to answer with: `INVALID_ARGUMENT` for a bad request,
    /// `INTERNAL` for a response that cannot be written.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::Body(_) | Self::Path(_) | Self::Query(_) => tonic::Code::InvalidArgument,
            Self::Response(_) => tonic::Code::Internal,
        }
    }
}
