//! The `lockstep` executable: parses arguments, sets up logging, and hands over to the library;
//! how the command ended becomes the process's exit code here, and only here.

use std::process::ExitCode;

use lockstep::Exit;

fn main() -> ExitCode {
    lockstep::begin_timings();
    // A step's supervisor: no command line to parse, no logging to set up. It exits with the
    // status of the step it ran, not an outcome of lockstep's.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == lockstep::CONTAIN_ARG) {
        return ExitCode::from(lockstep::supervise_step(&args.collect::<Vec<_>>()));
    }
    let cli = lockstep::Cli::from_args();
    lockstep::init_tracing(&cli);
    lockstep::mark_timing("init");
    let exit = match lockstep::run(cli) {
        Ok(exit) => exit,
        Err(e) if lockstep::is_broken_pipe(&e) => Exit::BrokenPipe,
        Err(e) => {
            eprintln!("lockstep: error: {e:#}");
            Exit::Error
        }
    };
    lockstep::report_timings(&std::env::args_os().collect::<Vec<_>>());
    ExitCode::from(exit.code())
}
