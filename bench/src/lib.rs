//! The benchmarks' shared pieces: the raw-disk baseline (`device`), which the
//! `bench` binary reports and `cairn-loadgen --baseline` measures in the same
//! run as the broker, and the flag parser of the `bench` subcommands.

pub mod device;

use std::collections::HashMap;
use std::str::FromStr;

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
