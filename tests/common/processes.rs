//! Processes a test starts, kills and restarts: a private NATS server with
//! JetStream, and the example binaries.
//!
//! Every wait here is bounded, and every process is killed (SIGKILL) when
//! its handle is dropped, so a failing test leaves nothing running.

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

/// How long a process may take to come up before the test fails.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A loopback port that was free a moment ago, for a server process that
/// must bind it itself (unlike [`super::ClosedPort`], it is not held).
pub(crate) fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    probe.local_addr().unwrap().port()
}

/// The NATS server binary the broker tests run.
pub(crate) const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// Whether `/usr/sbin/nats-server` is installed; says SKIP (or fails
/// under `SINEW_REQUIRE_SERVICES=1`) when it is not.
#[allow(clippy::print_stderr, reason = "a skipped test says so")]
pub(crate) fn nats_server_installed() -> bool {
    if Path::new(NATS_SERVER).is_file() {
        return true;
    }
    assert!(
        !super::require_services(),
        "SINEW_REQUIRE_SERVICES=1 but {NATS_SERVER} is not installed"
    );
    eprintln!("SKIP: {NATS_SERVER} is not installed; this test does nothing");
    false
}

/// A private `nats-server` with JetStream on a free loopback port, storing
/// in a directory the caller owns; killed when dropped. It can be killed
/// and started again on the same port and store, as a crashed broker
/// comes back.
pub(crate) struct NatsServer {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server storing in `store`, and waits until it accepts
    /// connections.
    pub(crate) async fn start(store: &Path) -> Self {
        let mut server = Self {
            port: free_port(),
            store: store.to_owned(),
            child: None,
        };
        server.restart().await;
        server
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client address.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server with SIGKILL (no clean shutdown) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and store, and waits
    /// until it accepts connections.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("nats-server on port {} exited: {status}", self.port);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen on port {} in {START_LIMIT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An example binary running as a service: started with its arguments and
/// environment, up once it printed `ready`, killed with SIGKILL when
/// dropped. Its standard output is kept, line by line.
pub(crate) struct ExampleProcess {
    name: String,
    child: Child,
    ready: mpsc::Receiver<()>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ExampleProcess {
    /// Runs example `example` with `args` and `env`, and waits until it
    /// prints a line `ready` (its standard error goes to the test's).
    pub(crate) async fn start(example: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut process = Self::spawn(example, args, env);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while process.ready.try_recv().is_err() {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("`{}` exited before it was ready: {status}", process.name);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{}` was not ready in {START_LIMIT:?}",
                process.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        process
    }

    /// Runs example `example` with `args` and `env`, without waiting for
    /// anything: for a process that works and exits rather than serves.
    pub(crate) fn spawn(example: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(super::example_binary(example))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // A thread reads its output to the end, so that it never blocks on
        // a full pipe, keeps the lines, and says when the `ready` line came.
        let stdout = child.stdout.take().unwrap();
        let (ready, is_ready) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.trim() == "ready" {
                    let _ = ready.send(());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let name = format!("{example} {}", args.join(" "));
        Self {
            name,
            child,
            ready: is_ready,
            lines,
        }
    }

    /// The lines it printed so far on its standard output.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until it exits, and returns how it exited;
    /// kills it and fails the test past `limit`.
    pub(crate) async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                panic!("`{}` did not finish in {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs example `example` with `args` and `env` to its end (at most
    /// `limit`), and returns how it exited.
    pub(crate) async fn run(
        example: &str,
        args: &[&str],
        env: &[(&str, String)],
        limit: Duration,
    ) -> ExitStatus {
        let mut child = Command::new(super::example_binary(example))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{example} {}` did not finish in {limit:?}", args.join(" "));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it still runs; `None` while it does, how it ended otherwise.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ExampleProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A seeded source of random waits, for crash schedules (splitmix64):
/// the same seed, the same schedule.
pub(crate) struct Schedule(pub(crate) u64);

impl Schedule {
    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A wait between `low` and `high`.
    pub(crate) fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = u64::try_from((high - low).as_millis()).unwrap_or(u64::MAX);
        low + Duration::from_millis(self.next() % span.max(1))
    }
}
