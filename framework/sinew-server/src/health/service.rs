//! The `grpc.health.v1.Health` service over a [`HealthRegistry`].

use std::pin::Pin;

use futures_util::{Stream, stream};
use tonic::{Request, Response, Status};

use super::{
    HealthRegistry, ServingStatus,
    proto::{
        HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
        health_server::Health,
    },
};

/// Answers health checks from the registry.
#[derive(Debug, Clone)]
pub(crate) struct HealthService {
    registry: HealthRegistry,
}

impl HealthService {
    pub(crate) fn new(registry: HealthRegistry) -> Self {
        Self { registry }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.registry.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let statuses = self
            .registry
            .list()
            .into_iter()
            .map(|(name, status)| (name, response(status)))
            .collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let receiver = self
            .registry
            .subscribe(&service)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let closing = self.registry.closing();
        let watcher = Watcher {
            receiver: Some(receiver),
            registry: self.registry.clone(),
            service,
        };

        // The first item is the current status; then one per change, until
        // the server drains (a stream opened during the drain ends after
        // its first item).
        let stream = stream::unfold((watcher, true), move |(mut watcher, first)| {
            let mut closing = closing.clone();
            async move {
                let receiver = watcher.receiver.as_mut()?;
                if !first {
                    tokio::select! {
                        changed = receiver.changed() => changed.ok()?,
                        _ = closing.wait_for(|closing| *closing) => return None,
                    }
                }
                let status = *receiver.borrow_and_update();
                Some((Ok(response(status)), (watcher, false)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

/// A watch on one name; releases the name when the stream goes away.
struct Watcher {
    receiver: Option<tokio::sync::watch::Receiver<ServingStatus>>,
    registry: HealthRegistry,
    service: String,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The receiver must be gone before the registry counts watchers.
        drop(self.receiver.take());
        self.registry.release(&self.service);
    }
}
