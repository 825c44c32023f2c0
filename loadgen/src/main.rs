//! `cairn-loadgen`: lands with the load generator issue. The storage
//! engine's own benchmarks are in `bench/` (`cargo run --release -p bench`).

fn main() {
    eprintln!("cairn-loadgen {}: not built yet; see bench/ for engine benchmarks", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
