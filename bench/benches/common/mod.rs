//! The broker the client-side benchmarks run in their own process: one
//! place for its temporary data directory (the system's, never the working
//! tree) and the settings they share (an ephemeral port, no metrics
//! endpoint).

use server::config::{Overrides, ServerConfig};

/// A broker on `127.0.0.1:0` over a fresh temporary directory, with
/// `cores` shards (`None`: one per core) and the `flush` policy (`None`:
/// the default, `always`), after `tune` had its say. Bind it as
/// `let (_dir, broker)`: the broker drops first, then its directory.
pub fn start_broker(
    cores: Option<usize>,
    flush: Option<&str>,
    tune: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, server::Broker) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = ServerConfig::load(
        None,
        &Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some("127.0.0.1:0".parse().expect("address")),
            cores,
            flush: flush.map(str::to_owned),
            metrics_listen: Some("off".into()),
            ..Overrides::default()
        },
    )
    .expect("valid configuration");
    tune(&mut config);
    (dir, server::start(config).expect("the broker starts"))
}
