//! The `lockstep` executable: parses arguments, sets up logging, and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lockstep::Cli::from_args();
    lockstep::init_tracing(&cli);
    let code = match lockstep::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lockstep: error: {e:#}");
            lockstep::USAGE_OR_CONFIG
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
