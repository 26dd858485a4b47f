//! `jitgate`: the gateway binary and its CLI.
#![forbid(unsafe_code)]

mod admin_client;
mod audit_cli;
mod cli;
mod demo;
mod echo;
mod tickets_cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
