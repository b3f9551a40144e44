//! `sinew`: start a service, call, describe, probe and load-test any gRPC
//! server, and catch breaking contract changes. `sinew --help` tells how;
//! the crate docs list the exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match sinew_cli::Cli::try_parse() {
        Ok(cli) => sinew_cli::run(cli),
        Err(error) => {
            // `--help` and `--version` are printed to standard output and
            // succeed; anything else is a usage error.
            let code = if error.use_stderr() {
                sinew_cli::CliError::USAGE
            } else {
                0
            };
            let _ = error.print();
            ExitCode::from(code)
        }
    }
}
