//! The `sinew` command: one binary to start a service, call, describe,
//! probe and load-test any gRPC server (not only sinew's), and catch
//! breaking contract changes before they ship.
//!
//! ```text
//! sinew new orders                         # a service crate that builds and passes its test
//! sinew list 127.0.0.1:50051               # services, through server reflection
//! sinew describe 127.0.0.1:50051 orders.v1.Orders
//! sinew call 127.0.0.1:50051 orders.v1.Orders/Get '{"id": "o-1"}'
//! sinew health 127.0.0.1:50051             # exit 0 when serving, as grpc_health_probe
//! sinew bench 127.0.0.1:50051 orders.v1.Orders/Get '{"id": "o-1"}' -c 50 -z 10s
//! sinew breaking proto --against main      # breaking changes since the ref `main`
//! ```
//!
//! # Exit codes
//!
//! Stable; scripts and container probes may rely on them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success (`health`: the service is serving; `breaking`: nothing breaks) |
//! | 1 | `breaking`: breaking changes were found |
//! | 2 | the server could not be reached: refused, timed out, or the TLS handshake failed |
//! | 3 | a call the command needed failed: reflection, the health check (a load test that ran exits 0 and counts its failed calls by code) |
//! | 4 | `health`: the service is not serving |
//! | 5 | `health`: the server does not know the service |
//! | 64 | usage: arguments that do not parse |
//! | 65 | bad input: JSON that does not fit the message, an unknown service, method or symbol, a contract that does not compile, a server without reflection |
//! | 73 | `new`: the directory exists or cannot be written |
//! | 74 | a file could not be read or written |
//! | 100 + c | `call`: the server answered with status code `c` (`105`: `NOT_FOUND`, `114`: `UNAVAILABLE`) |
//!
//! Codes 2 to 5 are those of `grpc_health_probe` (which uses 3 for an
//! unknown service; `sinew health` tells it apart).
//!
//! The library is the command's implementation, public so that its parts
//! ([`breaking::compare`], [`bench::run`], [`new::create`]) can be used on
//! their own; [`run`] runs a parsed command line. A build step of your own
//! can check contracts as `sinew breaking` does:
//!
//! ```
//! use sinew_cli::breaking;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let old = tempfile::tempdir()?;
//! std::fs::write(
//!     old.path().join("orders.proto"),
//!     "syntax = \"proto3\";\npackage orders.v1;\nmessage Order {\n  string id = 1;\n  int64 total = 2;\n}\n",
//! )?;
//! let new = tempfile::tempdir()?;
//! std::fs::write(
//!     new.path().join("orders.proto"),
//!     "syntax = \"proto3\";\npackage orders.v1;\nmessage Order {\n  string id = 1;\n}\n",
//! )?;
//! let findings = breaking::compare(&breaking::load_dir(old.path())?, &breaking::load_dir(new.path())?);
//! assert_eq!(findings.len(), 1);
//! assert_eq!(findings[0].rule.id(), "FIELD_REMOVED");
//! assert_eq!((findings[0].file.as_str(), findings[0].line), ("orders.proto", 3));
//! # Ok(())
//! # }
//! ```

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command line's output is its interface"
)]

pub mod bench;
pub mod breaking;
mod call;
mod connect;
mod error;
mod health;
pub mod new;
mod schema;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, CommandFactory, Parser, Subcommand};

pub use error::CliError;

/// The `sinew` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sinew",
    version,
    about = "Start a service, call, describe, probe and load-test any gRPC server, and catch breaking contract changes.",
    after_help = "Exit codes: 0 success, 1 breaking changes found, 2 cannot connect, 3 a call failed, \
4 not serving, 5 unknown service, 64 usage, 65 bad input, 73 cannot create, 74 I/O error, \
100+code: `call` got that gRPC status."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a service crate: contract, build script, server, test and README.
    #[command(after_help = "Examples:\n  sinew new orders\n  \
sinew new orders --proto ../contracts/orders.proto\n  \
sinew new orders --path ~/src/sinew   # depend on a sinew checkout by path")]
    New(NewArgs),
    /// List the services of a server, or the methods of one service.
    #[command(after_help = "Examples:\n  sinew list 127.0.0.1:50051\n  \
sinew list 127.0.0.1:50051 orders.v1.Orders\n  \
sinew list 127.0.0.1:50051 --proto proto/orders/v1/orders.proto -I proto")]
    List(ListArgs),
    /// Describe a service, method, message or enum: its shape in .proto syntax.
    #[command(
        after_help = "Examples:\n  sinew describe 127.0.0.1:50051 orders.v1.Orders\n  \
sinew describe 127.0.0.1:50051 orders.v1.Orders/Get\n  \
sinew describe 127.0.0.1:50051 orders.v1.GetOrderRequest"
    )]
    Describe(DescribeArgs),
    /// Call a method with a JSON request and print the JSON response(s).
    #[command(
        after_help = "The request is JSON (the proto3 JSON mapping): given inline, as @file, or \
as @- for standard input. Client and bidirectional streams read one JSON message per line.\n\n\
Examples:\n  sinew call 127.0.0.1:50051 orders.v1.Orders/Get '{\"id\": \"o-1\"}'\n  \
sinew call 127.0.0.1:50051 orders.v1.Orders/Watch @request.json\n  \
printf '{\"n\":1}\\n{\"n\":2}\\n' | sinew call 127.0.0.1:50051 calc.v1.Calc/Sum @-\n  \
sinew call localhost:443 orders.v1.Orders/Get '{}' --tls --token \"$TOKEN\" -H x-tenant:acme\n\n\
Exit code 100 + the status code when the server answers an error (105 NOT_FOUND, 114 UNAVAILABLE)."
    )]
    Call(CallArgs),
    /// Probe a server's grpc.health.v1 health, with exit codes for container probes.
    #[command(
        after_help = "Exit codes: 0 SERVING, 2 cannot connect, 3 the check failed, \
4 not serving, 5 unknown service.\n\nExamples:\n  sinew health 127.0.0.1:50051\n  \
sinew health 127.0.0.1:50051 --service orders.v1.Orders\n  \
sinew health 127.0.0.1:50051 --watch"
    )]
    Health(HealthArgs),
    /// Load-test a unary method: requests per second, latency percentiles, status counts.
    #[command(
        after_help = "Examples:\n  sinew bench 127.0.0.1:50051 orders.v1.Orders/Get '{\"id\":\"o-1\"}' -c 50 -n 100000\n  \
sinew bench 127.0.0.1:50051 orders.v1.Orders/Get '{}' -c 20 -z 30s --rps 5000 --connections 4\n  \
sinew bench 127.0.0.1:50051 orders.v1.Orders/Get '{}' -c 10 -n 1000 --json > result.json"
    )]
    Bench(BenchArgs),
    /// Report changes between two versions of the contracts that break callers or stored data.
    #[command(
        after_help = "Exit code 1 when a breaking change is found.\n\nExamples:\n  \
sinew breaking proto --against ../old/proto\n  \
sinew breaking proto --against origin/main\n  \
sinew breaking proto --against v1.4.0 --json"
    )]
    Breaking(BreakingArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  sinew completions bash > /etc/bash_completion.d/sinew\n  \
sinew completions zsh > \"${fpath[1]}/_sinew\"\n  \
sinew completions fish > ~/.config/fish/completions/sinew.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `sinew new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The crate's name: letters, digits, `-` and `_`, not starting with a digit.
    pub name: String,
    /// Start from this contract instead of the starter one: each of its services
    /// gets a handler answering UNIMPLEMENTED.
    #[arg(long, value_name = "FILE")]
    pub proto: Option<PathBuf>,
    /// Depend on the sinew checkout at this path instead of the published crates.
    #[arg(long, value_name = "SINEW_CHECKOUT")]
    pub path: Option<PathBuf>,
    /// Create the crate inside this directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// How to reach a server: its address, TLS, credentials and metadata.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The server: `host:port`, `http://host:port` or `https://host:port`.
    pub addr: String,
    /// Use TLS (implied by `https://` and by the other TLS options).
    #[arg(long)]
    pub tls: bool,
    /// Trust the authorities in this PEM bundle instead of the system's.
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Present this certificate chain (PEM) for mTLS; needs --key.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Expect the server's certificate to be for this name.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Accept any server certificate (encrypted, not authenticated): for test servers only.
    #[arg(long)]
    pub insecure: bool,
    /// Send `authorization: Bearer <TOKEN>` (also read from SINEW_TOKEN).
    #[arg(
        long,
        env = "SINEW_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Metadata sent with every call, as `key:value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY:VALUE")]
    pub headers: Vec<String>,
    /// How long connecting may take.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// Where message shapes come from: the server's reflection, or .proto files.
#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// Compile these .proto files on the spot instead of asking the server's reflection.
    #[arg(long = "proto", value_name = "FILE")]
    pub protos: Vec<PathBuf>,
    /// Import paths of --proto (default: each file's directory).
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub includes: Vec<PathBuf>,
}

/// `sinew list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connect: ConnectArgs,
    /// List this service's methods instead of the services.
    pub service: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub schema: SchemaArgs,
}

/// `sinew describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connect: ConnectArgs,
    /// A service, `Service/Method` or `Service.Method`, message or enum, fully qualified.
    pub symbol: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub schema: SchemaArgs,
}

/// `sinew call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connect: ConnectArgs,
    /// The method: `package.Service/Method`.
    pub method: String,
    /// The request: JSON, `@file`, or `@-` for standard input (default `{}`;
    /// streams of requests: one JSON message per line).
    pub data: Option<String>,
    /// The call's deadline.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print fields that hold their default value too.
    #[arg(long)]
    pub emit_defaults: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub schema: SchemaArgs,
}

/// `sinew health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connect: ConnectArgs,
    /// The service to check (default: the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Stream every change of the status until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// The check's deadline.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `sinew bench`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("stop").required(true).args(["total", "duration"]))]
pub struct BenchArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connect: ConnectArgs,
    /// The unary method: `package.Service/Method`.
    pub method: String,
    /// The request, sent every time: JSON, `@file` or `@-` (default `{}`).
    pub data: Option<String>,
    /// Calls in flight at once.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
    /// Calls in all.
    #[arg(short = 'n', long = "total")]
    pub total: Option<u64>,
    /// Run for this long (`10s`, `2m`).
    #[arg(short = 'z', long = "duration", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Start at most this many calls a second.
    #[arg(long)]
    pub rps: Option<f64>,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Each call's deadline: a call not answered by then counts as DEADLINE_EXCEEDED.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the summary as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub schema: SchemaArgs,
}

/// `sinew breaking`.
#[derive(Debug, Args)]
pub struct BreakingArgs {
    /// The directory of the new contracts (an import root).
    pub new: PathBuf,
    /// The old contracts: a directory, or a git ref (then `<new>` as it was at that ref).
    #[arg(long, value_name = "DIR|GIT_REF")]
    pub against: String,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A duration such as `500ms`, `5s` or `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration like 5s: {e}"))
}

/// Runs the command and gives its exit code; errors are printed to
/// standard error.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::New(args) => new_crate(args),
        Command::Breaking(args) => breaking_command(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sinew", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::List(args) => block_on(schema::list(args)),
        Command::Describe(args) => block_on(schema::describe(args)),
        Command::Call(args) => block_on(call::call(args)),
        Command::Health(args) => block_on(health::health(args)),
        Command::Bench(args) => bench_command(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs `future` on a runtime of its own.
fn block_on<F: Future<Output = Result<ExitCode, CliError>>>(
    future: F,
) -> Result<ExitCode, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Io(format!("cannot start the runtime: {e}")))?
        .block_on(future)
}

fn new_crate(args: NewArgs) -> Result<ExitCode, CliError> {
    let options = new::NewOptions {
        name: args.name,
        parent: args.dir,
        proto: args.proto,
        sinew_path: args.path,
    };
    let dir = new::create(&options)?;
    println!("created {}", dir.display());
    println!("next: cd {} && cargo run", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn breaking_command(args: &BreakingArgs) -> Result<ExitCode, CliError> {
    let new = breaking::load_dir(&args.new)?;
    let old = breaking::load_against(&args.new, &args.against)?;
    let findings = breaking::compare(&old, &new);
    if args.json {
        let text = serde_json::to_string_pretty(&findings)
            .map_err(|e| CliError::Io(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else {
        for finding in &findings {
            println!("{finding}");
        }
        if findings.is_empty() {
            eprintln!("no breaking changes against {}", args.against);
        } else {
            eprintln!(
                "{} breaking change{} against {}",
                findings.len(),
                if findings.len() == 1 { "" } else { "s" },
                args.against
            );
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bench_command(args: &BenchArgs) -> Result<ExitCode, CliError> {
    let prepared = block_on_value(call::prepare_bench(args))?;
    let summary =
        bench_runtime()?.block_on(bench::run(prepared.target, prepared.call, prepared.plan))?;
    if args.json {
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| CliError::Io(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The load test's runtime: one thread, which measured at twice the calls
/// per second of a multi-threaded one (no work stealing, no cross-thread
/// wakeups, the server keeps the other cores).
fn bench_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io(format!("cannot start the runtime: {e}")))
}

/// Runs `future` on a runtime of its own, for a value.
fn block_on_value<T, F: Future<Output = Result<T, CliError>>>(future: F) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io(format!("cannot start the runtime: {e}")))?
        .block_on(future)
}
