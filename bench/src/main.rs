//! Cairn benchmarks: `bench <subcommand> [--key value ...]`.
//!
//! Subcommands:
//!
//! - `device`: the raw-disk baseline that engine figures are quoted against
//!   (see [`device`]).
//! - `engine`: partition log append, read and recovery figures, as ratios to
//!   the device baseline measured in the same run (see [`engine`]).

mod engine;

use bench::device;

use std::process::ExitCode;

const USAGE: &str = "usage: bench <subcommand> [--key value ...]

subcommands:
  device    raw disk baseline (O_DIRECT through io_uring) of a directory's disk
  engine    partition log append/read/recovery, as ratios to the device baseline

`bench <subcommand> --help` describes a subcommand's flags.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((subcommand, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match subcommand.as_str() {
        "device" => device::run(rest),
        "engine" => engine::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("bench: unknown subcommand `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench {subcommand}: {error}");
            ExitCode::FAILURE
        }
    }
}
