// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `cloud-hypervisor`: boots a VM from the command line and/or serves the
//! REST API, with Cloud Hypervisor's syntax.

mod logger;

use std::fs::OpenOptions;
use std::process::ExitCode;

use vmm::config::cli::{self, CliCommand};

/// The error and each of its causes, joined: printed once, at the top.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match cli::parse_args(args) {
        Ok(CliCommand::Run(a)) => a,
        Ok(CliCommand::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(CliCommand::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("Error: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    let log_file = match &args.log_file {
        Some(path) => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("Error: cannot open log file {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    if let Err(e) = logger::init(args.verbosity, log_file) {
        eprintln!("Error: cannot set up logging: {e}");
        return ExitCode::from(1);
    }
    match vmm::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            eprintln!("Error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}
