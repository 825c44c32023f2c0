//! Cairn benchmarks: `bench <subcommand> [--key value ...]`.
//!
//! Subcommands:
//!
//! - `device`: the raw-disk baseline that engine figures are quoted against
//!   (see [`device`]).
//! - `engine`: partition log append, read and recovery figures, as ratios to
//!   the device baseline measured in the same run (see [`engine`]).
//! - `compaction`: log compaction throughput, as a ratio to the raw read
//!   bandwidth measured in the same run (see [`compaction`]).

mod compaction;
mod device;
mod engine;

use std::collections::HashMap;
use std::process::ExitCode;
use std::str::FromStr;

const USAGE: &str = "usage: bench <subcommand> [--key value ...]

subcommands:
  device    raw disk baseline (O_DIRECT through io_uring) of a directory's disk
  engine    partition log append/read/recovery, as ratios to the device baseline
  compaction  log compaction MB/s of input, as a ratio to raw reads of the same size

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
        "compaction" => compaction::run(rest),
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

/// A subcommand's `--key value` flags.
pub struct Flags {
    values: HashMap<String, String>,
}

impl Flags {
    /// Parses `args` as `--key value` pairs, rejecting keys not in `known`,
    /// repeated keys and stray arguments.
    pub fn parse(args: &[String], known: &[&str]) -> Result<Flags, String> {
        let mut values = HashMap::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(key) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}` (flags are `--key value`)"));
            };
            if !known.contains(&key) {
                return Err(format!("unknown flag `--{key}` (known: --{})", known.join(", --")));
            }
            let Some(value) = args.next() else {
                return Err(format!("flag `--{key}` needs a value"));
            };
            if values.insert(key.to_string(), value.clone()).is_some() {
                return Err(format!("flag `--{key}` given twice"));
            }
        }
        Ok(Flags { values })
    }

    /// The value of `--key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `--key` parsed as a `T`, or `default` if not given.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            Some(value) => value.parse().map_err(|e| format!("--{key} `{value}`: {e}")),
            None => Ok(default),
        }
    }
}
