//! The `lockstep` executable: parses arguments, sets up logging, and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lockstep::cli::Cli::from_args();
    lockstep::cli::init_tracing(&cli);
    let code = match lockstep::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lockstep: error: {e:#}");
            lockstep::cli::USAGE_OR_CONFIG
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
