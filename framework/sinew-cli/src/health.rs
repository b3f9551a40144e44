//! `sinew health`: a grpc.health.v1 probe with `grpc_health_probe`'s exit
//! codes, and `--watch`.

use std::process::ExitCode;

use sinew_server::health::{
    ServingStatus,
    proto::{HealthCheckRequest, health_client::HealthClient},
};

use crate::{CliError, HealthArgs, connect};

/// `sinew health`.
pub(crate) async fn health(args: HealthArgs) -> Result<ExitCode, CliError> {
    let connection = connect::connect(&args.connect).await?;
    let addr = connection.addr.clone();
    let mut client = HealthClient::new(connection.client.clone());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: args.service.clone(),
    });
    *request.metadata_mut() = connection.metadata.clone();
    let what = if args.service.is_empty() {
        "the server".to_owned()
    } else {
        format!("service {}", args.service)
    };
    if !args.watch {
        sinew_client::CallOptions::timeout(args.timeout).apply(&mut request);
        let response = client
            .check(request)
            .await
            .map_err(|status| check_error(&status, &addr, &args.service))?;
        let status = response.get_ref().status;
        println!("{}", status_name(status));
        return verdict(status, &what).map(|()| ExitCode::SUCCESS);
    }
    let mut stream = client
        .watch(request)
        .await
        .map_err(|status| check_error(&status, &addr, &args.service))?
        .into_inner();
    let mut last = None;
    loop {
        match stream.message().await {
            Ok(Some(response)) => {
                println!("{}", status_name(response.status));
                last = Some(response.status);
            }
            Ok(None) => break,
            Err(status) => return Err(check_error(&status, &addr, &args.service)),
        }
    }
    // The server ended the watch (it is going away): the exit code tells
    // the last status heard.
    match last {
        Some(status) => verdict(status, &what).map(|()| ExitCode::SUCCESS),
        None => Err(CliError::Rpc(format!(
            "{addr} ended the watch without a status"
        ))),
    }
}

/// Success when `status` is SERVING; otherwise the error of its exit code.
fn verdict(status: i32, what: &str) -> Result<(), CliError> {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(ServingStatus::ServiceUnknown) => Err(CliError::UnknownService(format!(
            "{what}: the server does not know it"
        ))),
        _ => Err(CliError::NotServing(format!(
            "{what} is {}",
            status_name(status)
        ))),
    }
}

fn status_name(status: i32) -> &'static str {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => "SERVING",
        Ok(ServingStatus::NotServing) => "NOT_SERVING",
        Ok(ServingStatus::ServiceUnknown) => "SERVICE_UNKNOWN",
        Ok(ServingStatus::Unknown) | Err(_) => "UNKNOWN",
    }
}

/// The error of a health call that failed with `status`.
fn check_error(status: &tonic::Status, addr: &str, service: &str) -> CliError {
    if let Some(error) = connect::connect_error(status, addr) {
        return error;
    }
    match status.code() {
        tonic::Code::NotFound => {
            CliError::UnknownService(format!("{addr} does not know the service {service:?}"))
        }
        tonic::Code::Unimplemented => {
            CliError::Rpc(format!("{addr} does not serve grpc.health.v1.Health"))
        }
        tonic::Code::DeadlineExceeded => {
            CliError::Rpc(format!("the health check of {addr} timed out"))
        }
        _ => connect::rpc_error(status, addr, "the health check"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_grpc_health_probe() {
        assert!(verdict(ServingStatus::Serving as i32, "x").is_ok());
        assert_eq!(
            verdict(ServingStatus::NotServing as i32, "x")
                .unwrap_err()
                .exit_code(),
            4
        );
        assert_eq!(
            verdict(ServingStatus::Unknown as i32, "x")
                .unwrap_err()
                .exit_code(),
            4
        );
        assert_eq!(
            verdict(ServingStatus::ServiceUnknown as i32, "x")
                .unwrap_err()
                .exit_code(),
            5
        );
        let error = check_error(&tonic::Status::not_found("unknown service"), "h:1", "a.B");
        assert_eq!(error.exit_code(), 5);
        let error = check_error(&tonic::Status::unimplemented(""), "h:1", "");
        assert_eq!(error.exit_code(), 3);
    }
}
