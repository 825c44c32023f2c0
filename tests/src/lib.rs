//! Helpers shared by the cross-crate and fault tests in `tests/tests/`: a
//! real `cairn-server` process on a free port in a temporary directory, and
//! the `cairn` CLI pointed at it.

pub mod cluster;
pub mod history;
pub mod netns;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Once;

/// The path of a workspace binary, built (once per test process) if it is
/// missing or stale: `cargo test -p cairn-tests` alone must work.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace)
            .args(["build", "--quiet", "--bins", "-p", "server", "-p", "client", "-p", "loadgen"]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building the broker and CLI failed");
    });
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Shards of every test broker (`--cores`).
const SHARDS: u16 = 2;

/// Client ports of the brokers tests start: below the system's ephemeral
/// range (`ip_local_port_range` starts at 32768) and apart from the
/// cluster's replication ports. A broker's shards listen on the ports
/// after its own (port + 1 + shard), so [`Broker::restart_on_same_address`]
/// needs that whole block to be the broker's: a port the system chose
/// could be followed by ports any client connection may hold as its local
/// end (a restart then failed with `EADDRINUSE` on a shard port).
const CLIENT_PORTS: std::ops::Range<u16> = 10_000..20_000;

/// The first of `len` neighbouring ports free now, never handed out twice
/// by this process (test processes of one run start apart in the range).
fn free_port_block(len: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let stride = u32::from(len) + 1;
    let blocks = u32::from(CLIENT_PORTS.end - CLIENT_PORTS.start) / stride;
    let start = std::process::id() * 31 % blocks;
    for _ in 0..blocks {
        let k = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % blocks;
        let first = CLIENT_PORTS.start + u16::try_from(k * stride).expect("within the range");
        if (first..first + len).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return first;
        }
    }
    panic!("no {len} free neighbouring ports in {CLIENT_PORTS:?}");
}

/// A broker process. Killed (SIGKILL) on drop.
pub struct Broker {
    child: Option<Child>,
    root: tempfile::TempDir,
    pub addr: String,
    /// Where it serves `/metrics` (a free port of its own choosing).
    pub metrics_addr: String,
    extra: Vec<String>,
    /// Run in the temporary directory with `--data-dir data`, as a user
    /// running the README's command would (a relative path).
    relative: bool,
    /// Somewhere else than the temporary directory.
    data_dir: Option<PathBuf>,
    /// A command the broker runs under (`ip netns exec NS`), if any.
    wrapper: Vec<String>,
    /// The host it listens on for clients.
    host: String,
}

impl Broker {
    /// Starts a broker with two shards on a free port; `extra` flags are
    /// appended (e.g. `--flush never`).
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_with(extra, false)
    }

    /// Like [`Broker::start`]; the reason (its output and log) if the
    /// broker does not come up.
    pub fn try_start(extra: &[&str]) -> Result<Broker, String> {
        let mut broker = Broker::unstarted(extra, false, None);
        let listen = format!("{}:0", broker.host);
        broker.try_spawn(&listen).map(|()| broker)
    }

    /// Like [`Broker::start_in`]; the reason if the broker does not come up.
    pub fn try_start_in(data_dir: &Path, extra: &[&str]) -> Result<Broker, String> {
        let mut broker = Broker::unstarted(extra, false, Some(data_dir.to_path_buf()));
        let listen = format!("{}:0", broker.host);
        broker.try_spawn(&listen).map(|()| broker)
    }

    /// Like [`Broker::start`], with a relative data directory.
    pub fn start_relative(extra: &[&str]) -> Broker {
        Broker::start_with(extra, true)
    }

    fn start_with(extra: &[&str], relative: bool) -> Broker {
        let mut broker = Broker::unstarted(extra, relative, None);
        broker.spawn();
        broker
    }

    fn unstarted(extra: &[&str], relative: bool, data_dir: Option<PathBuf>) -> Broker {
        Broker {
            child: None,
            root: tempfile::tempdir().expect("temporary directory"),
            addr: String::new(),
            metrics_addr: String::new(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
            relative,
            data_dir,
            wrapper: Vec::new(),
            host: "127.0.0.1".into(),
        }
    }

    /// Starts a broker under `wrapper` (such as `ip netns exec NS`),
    /// listening for clients on `host`.
    pub fn start_wrapped(wrapper: &[String], host: &str, extra: &[&str]) -> Broker {
        let mut broker = Broker::unstarted(extra, false, None);
        broker.wrapper = wrapper.to_vec();
        host.clone_into(&mut broker.host);
        broker.spawn();
        broker
    }

    /// Starts a broker with its data in `data_dir` (a file system of the
    /// test's own, say).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Broker {
        let mut broker = Broker::unstarted(extra, false, Some(data_dir.to_path_buf()));
        broker.spawn();
        broker
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| self.root.path().join("data"))
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    fn spawn(&mut self) {
        let listen = format!("{}:{}", self.host, free_port_block(SHARDS + 1));
        if let Err(e) = self.try_spawn(&listen) {
            panic!("the broker did not start: {e}");
        }
    }

    /// Starts the process listening on `listen`; the reason (its log) if it
    /// does not come up.
    fn try_spawn(&mut self, listen: &str) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_file()).expect("log file");
        let data_dir =
            if self.relative { "data".to_owned() } else { self.data_dir().to_str().expect("utf-8 path").to_owned() };
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("cairn-server"));
                c
            }
            None => Command::new(bin("cairn-server")),
        };
        command
            .current_dir(self.root.path())
            .args(["--data-dir", &data_dir, "--listen", listen, "--cores", &SHARDS.to_string()])
            .args(&self.extra)
            .env("CAIRN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        // Metrics on a free port of the broker's choosing, unless a test
        // says otherwise: brokers of parallel tests must not share one.
        if !self.extra.iter().any(|a| a == "--metrics-listen") {
            command.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        let mut child = command.spawn().expect("starting cairn-server");
        // The broker prints a line once every shard is listening, and then
        // one for its metrics.
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the broker's stdout");
        let Some(addr) = line.trim().strip_prefix("cairn-server listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            return Err(format!("{line:?}\n{log}"));
        };
        self.addr = addr.to_string();
        let metrics_off = self.extra.windows(2).any(|w| w[0] == "--metrics-listen" && w[1] == "off");
        let mut line = String::new();
        if !metrics_off
            && stdout.read_line(&mut line).is_ok()
            && let Some(m) = line.trim().strip_prefix("cairn-server metrics on http://")
        {
            self.metrics_addr = m.trim_end_matches("/metrics").to_string();
        }
        self.child = Some(child);
        Ok(())
    }

    /// Starts the broker again at once on the same address it had (as a
    /// supervisor restarts a broker that died).
    pub fn restart_on_same_address(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "stop the broker first");
        let addr = self.addr.clone();
        self.try_spawn(&addr)
    }

    /// Starts the broker again (new port); the reason if it does not come up.
    pub fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "stop the broker first");
        self.try_spawn(&format!("{}:0", self.host))
    }

    /// The broker's `/metrics` text.
    pub fn metrics(&self) -> String {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&self.metrics_addr).expect("connecting to /metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("sending the scrape");
        let mut response = String::new();
        s.read_to_string(&mut response).expect("reading /metrics");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    /// The value of the first series of `metric` whose labels contain all of
    /// `labels` (`key="value"` pieces), if any.
    pub fn metric(&self, metric: &str, labels: &[&str]) -> Option<f64> {
        self.metrics().lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name == metric && labels.iter().all(|l| series.contains(l))).then(|| value.parse().ok())?
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGSTOP: the process freezes, its connections stay open and silent.
    pub fn pause(&self) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
        assert_eq!(rc, 0, "sending SIGSTOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        // SAFETY: as above.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGCONT) };
        assert_eq!(rc, 0, "sending SIGCONT");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the broker");
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "sending SIGTERM");
        child.wait().expect("waiting for the broker")
    }

    /// SIGTERM, then waits up to `limit` for the exit; `None` if the broker
    /// is still running then (it is killed).
    pub fn terminate_within(&mut self, limit: std::time::Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "sending SIGTERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the broker") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same data directory (new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn();
    }

    /// Runs the `cairn` CLI against this broker.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin("cairn"))
            .args(["--bootstrap", &self.addr])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cairn");
        // A CLI that refuses its arguments exits before reading stdin: a
        // closed pipe then is its answer, not a test failure.
        let mut pipe = child.stdin.take().expect("piped stdin");
        match pipe.write_all(stdin.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("writing stdin: {e}"),
        }
        drop(pipe);
        child.wait_with_output().expect("running cairn")
    }

    /// The broker's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Writes a broker configuration file into `dir` whose log cleaner checks
/// every `check_ms` (compaction tests need far less than the default 15 s);
/// its path, for `--config`.
pub fn cleaner_config(dir: &Path, check_ms: u64) -> String {
    let path = dir.join("cairn.toml");
    std::fs::write(&path, format!("[log]\ncleaner_check_ms = {check_ms}\n")).expect("writing the config");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// Lets `wait` of wall-clock time pass (a segment ages past `segment.ms`),
/// yielding meanwhile: not a synchronisation, a clock the broker reads.
pub async fn let_time_pass(wait: std::time::Duration) {
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until {
        tokio::task::yield_now().await;
    }
}
