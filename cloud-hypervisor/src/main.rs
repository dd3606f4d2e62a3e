// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! `cloud-hypervisor`: boots a VM from the command line and/or serves the
//! REST API, with Cloud Hypervisor's syntax.

mod logger;

use std::fs::OpenOptions;
use std::process::ExitCode;

use ft_backend::error_chain;
use vmm::config::cli::{self, CliCommand};

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
