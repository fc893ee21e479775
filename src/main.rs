//! The binary: parse the configuration, start logging, run the agent, map errors to exit codes
//! (0 done, 1 runtime failure, 2 bad configuration).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use vault_rotator::agent::{Agent, Reload};
use vault_rotator::config::{Config, ConfigError};
use vault_rotator::state::State;

fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match Config::load(std::env::args_os(), &env) {
        Ok(c) => c,
        Err(ConfigError::Cli(e)) => {
            // clap prints help and version on stdout (exit 0), usage errors on stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => {
            eprintln!("vault-rotator: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match vault_rotator::logging::init(cfg.log_format, &cfg.log_level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("vault-rotator: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread is plenty for one sidecar's few requests, and keeps memory and threads low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vault-rotator: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let state = State::new(Vec::new());
        let once = cfg.once;
        let agent = Agent::new(cfg, state)?;
        if once {
            agent.run_once().await
        } else {
            let reload: Reload = Box::new(move || {
                Config::load(std::env::args_os(), &|k: &str| std::env::var(k).ok())
            });
            agent.run(reload, Some(log)).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vault-rotator stopped");
            eprintln!("vault-rotator: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
