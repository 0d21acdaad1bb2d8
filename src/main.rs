//! The `lockstep` executable: parses arguments, sets up logging, and hands over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A step's supervisor: no command line to parse, no logging to set up.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == lockstep::CONTAIN_ARG) {
        return ExitCode::from(lockstep::supervise_step(&args.collect::<Vec<_>>()));
    }
    let cli = lockstep::Cli::from_args();
    lockstep::init_tracing(&cli);
    let code = match lockstep::run(cli) {
        Ok(code) => code,
        Err(e) if lockstep::is_broken_pipe(&e) => lockstep::BROKEN_PIPE,
        Err(e) => {
            eprintln!("lockstep: error: {e:#}");
            lockstep::USAGE_OR_CONFIG
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
