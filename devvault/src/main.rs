//! devvault binary: parse flags, set up stderr logging, run. See the crate
//! docs in `lib.rs` for the layout. NEVER for production use.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = devvault::cli::Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("devvault: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(devvault::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devvault: {e}");
            ExitCode::FAILURE
        }
    }
}
