//! `cairn-server`: the broker binary. The network front end, the shard
//! runtime and the configuration file land with the broker issue; until then
//! this binary only says so, so the README's start command stays honest.

fn main() {
    eprintln!(
        "cairn-server {}: the broker's network front end is not built yet; \
         the storage engine is in the `engine` crate (see README.md)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
