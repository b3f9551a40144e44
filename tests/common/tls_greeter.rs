//! The greeter example serving TLS as its own process.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sinew::{
    client::ClientConfig,
    health::proto::{HealthCheckRequest, HealthClient, health_check_response::ServingStatus},
    tls::ClientTlsConfig,
};
use sinew_testing::pki::{CertFiles, TestPki};

use super::{GreeterProcess, example_binary, processes::free_port};

/// How long a server process may take to come up.
const STARTUP: Duration = Duration::from_secs(30);

/// `p` as text, for the environment.
pub(crate) fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// The environment that makes the greeter serve TLS with `server`.
pub(crate) fn tls_env(server: &CertFiles) -> Vec<(&'static str, String)> {
    vec![
        ("SINEW_TLS_CERT", path(&server.cert).to_owned()),
        ("SINEW_TLS_KEY", path(&server.key).to_owned()),
    ]
}

/// A client TLS configuration that trusts `pki` and expects `localhost`.
pub(crate) fn trusting(pki: &TestPki) -> ClientTlsConfig {
    ClientTlsConfig::new().ca(pki.ca()).server_name("localhost")
}

/// The greeter example serving TLS as its own process, its log in a file;
/// killed when dropped (by [`GreeterProcess`]).
pub(crate) struct TlsGreeter {
    pub(crate) process: GreeterProcess,
    log: tempfile::NamedTempFile,
}

impl TlsGreeter {
    /// Starts `greeter server` with `env`, and waits until a sinew client
    /// with `ready` gets a health check answered over TLS.
    pub(crate) async fn start(env: &[(&str, String)], ready: ClientTlsConfig) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(example_binary("greeter"))
            .args(["server", "--addr", &addr.to_string()])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("NOMAD_ALLOC_ID")
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut greeter = Self {
            process: GreeterProcess { addr, child },
            log,
        };
        let until = Instant::now() + STARTUP;
        while Instant::now() < until {
            if let Some(status) = greeter.exited() {
                panic!(
                    "the greeter exited before serving ({status}):\n{}",
                    greeter.logs()
                );
            }
            if greeter.serving(ready.clone()).await {
                return greeter;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the greeter did not serve TLS on {addr} in {STARTUP:?}:\n{}",
            greeter.logs()
        );
    }

    pub(crate) fn addr(&self) -> String {
        self.process.addr.to_string()
    }

    /// Whether a sinew client with `tls` gets `SERVING` for the greeter.
    pub(crate) async fn serving(&self, tls: ClientTlsConfig) -> bool {
        let config = ClientConfig::endpoint(format!("https://{}", self.process.addr))
            .tls(tls)
            .timeout(Duration::from_secs(2));
        let Ok(mut health) = HealthClient::connect(config).await else {
            return false;
        };
        let asked = HealthCheckRequest {
            service: "greeter.v1.Greeter".to_owned(),
        };
        health
            .check(asked)
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    }

    /// How it ended, if it did.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.child.try_wait().unwrap()
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}
