//! `sinew-gateway <config.toml>`: the gateway as a ready binary.
//!
//! The gRPC side listens where sinew's server settings say (`SINEW_ADDR`,
//! default `127.0.0.1:50051`, and every other server setting); the HTTP/JSON
//! side on `[gateway] http_listen`, if set. The clusters and routes are
//! reloaded when the file changes. SIGTERM drains both sides.

use std::process::ExitCode;

use sinew_gateway::{Gateway, GatewayConfig};

#[tokio::main]
async fn main() -> ExitCode {
    // Traces, metrics and logs, from the standard OTEL_* variables.
    let telemetry = match sinew_telemetry::init("sinew-gateway") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            #[allow(clippy::print_stderr, reason = "no logging without telemetry")]
            {
                eprintln!("sinew-gateway: telemetry: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        tracing::error!("usage: sinew-gateway <config.toml>");
        return ExitCode::from(2);
    };
    let code = match run(path.into()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the gateway stopped");
            ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}

async fn run(path: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let config = GatewayConfig::from_file(&path)?;
    let http_listen = config.settings.http_listen;
    let gateway = Gateway::from_config(config).await?;
    let _watch = gateway.watch();
    let http = match http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(%addr, "serving HTTP/JSON");
            let gateway = gateway.clone();
            Some(tokio::spawn(async move {
                gateway.serve_http(listener, terminate()).await
            }))
        }
        None => None,
    };
    gateway.server("sinew-gateway").run().await?;
    if let Some(http) = http {
        http.await??;
    }
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn terminate() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
