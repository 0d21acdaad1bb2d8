//! The `lockstep` executable: parses arguments, sets up logging, and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A step's supervisor: no command line to parse, no logging to set up.
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|a| a == lockstep::delivery::contain::CONTAIN_ARG)
    {
        return ExitCode::from(lockstep::delivery::contain::supervise(
            &args.collect::<Vec<_>>(),
        ));
    }
    let cli = lockstep::cli::Cli::from_args();
    lockstep::cli::init_tracing(&cli);
    let code = match lockstep::cli::run(cli) {
        Ok(code) => code,
        Err(e) if lockstep::cli::is_broken_pipe(&e) => lockstep::cli::BROKEN_PIPE,
        Err(e) => {
            eprintln!("lockstep: error: {e:#}");
            lockstep::cli::USAGE_OR_CONFIG
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
