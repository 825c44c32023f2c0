//! Network namespaces for the partition tests: one namespace per broker,
//! each joined to a bridge in the test's own namespace by a veth pair, so
//! brokers reach each other (and the test reaches them) over addresses of
//! their own, and an nftables table inside one namespace cuts it off from
//! chosen peers, in one direction or both. `tc netem` is not available
//! here; delay, duplication and reordering are the simulator's.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); [`Namespaces::create`]
//! installs nftables with apt when it is missing, so the README's test
//! command needs nothing set up by hand. Everything is removed on drop.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// Installs `package` (for `tool`) with apt when `tool` is missing.
pub fn ensure_tool(tool: &str, package: &str) -> Result<(), String> {
    if have(tool) {
        return Ok(());
    }
    let install = || run(&["apt-get", "install", "-y", "-q", package]);
    install().or_else(|_| run(&["apt-get", "update", "-q"]).and_then(|()| install()))?;
    if have(tool) { Ok(()) } else { Err(format!("{tool} is still missing after installing {package}")) }
}

/// `n` namespaces on one bridge: member `k` (0-based) at `10.201.S.(11+k)`.
pub struct Namespaces {
    tag: String,
    subnet: String,
    n: usize,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Namespaces {
    /// Sets the namespaces up; why not, if this machine cannot.
    pub fn create(n: usize) -> Result<Namespaces, String> {
        assert!(n < 200);
        ensure_tool("ip", "iproute2")?;
        ensure_tool("nft", "nftables")?;
        // A slot (subnet and names) no other run holds, claimed by creating
        // its owner file (O_EXCL): test processes run in parallel. A slot
        // whose owner is dead (a run killed before it could clean up) is
        // taken down and claimed again. Interface names stay within 15
        // characters.
        let start = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed) * 37) % 250;
        let mut last = String::new();
        for k in 0..250 {
            let slot = (start + k) % 250;
            let ns = Namespaces { tag: format!("cairn{slot}"), subnet: format!("10.201.{slot}"), n };
            if !ns.claim() {
                continue;
            }
            ns.tear_down();
            match ns.set_up() {
                Ok(()) => return Ok(ns),
                Err(e) => {
                    ns.tear_down();
                    let _ = std::fs::remove_file(ns.owner_file());
                    last = e;
                }
            }
        }
        Err(format!("no free namespace slot: {last}"))
    }

    /// Takes the slot: its owner file, created new, or left by a process
    /// that is gone.
    fn claim(&self) -> bool {
        let file = self.owner_file();
        for _ in 0..2 {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).create_new(true).open(&file) {
                use std::io::Write as _;
                return f.write_all(std::process::id().to_string().as_bytes()).is_ok();
            }
            let owner = std::fs::read_to_string(&file).ok().and_then(|p| p.trim().parse::<i32>().ok());
            // SAFETY: signal 0 only asks whether the process exists.
            let alive = owner.is_some_and(|pid| unsafe { libc::kill(pid, 0) == 0 });
            if alive || std::fs::remove_file(&file).is_err() {
                return false;
            }
        }
        false
    }

    fn owner_file(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}.netns-owner", self.tag))
    }

    fn tear_down(&self) {
        for k in 0..self.n {
            let _ = run(&["ip", "netns", "del", &self.name(k)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    pub fn name(&self, k: usize) -> String {
        format!("{}n{k}", self.tag)
    }

    /// Member `k`'s address.
    pub fn ip(&self, k: usize) -> String {
        format!("{}.{}", self.subnet, 11 + k)
    }

    /// The command prefix that runs a program inside member `k`.
    pub fn exec(&self, k: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name(k)]
    }

    fn set_up(&self) -> Result<(), String> {
        let br = self.bridge();
        run(&["ip", "link", "add", &br, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{}.1/24", self.subnet), "dev", &br])?;
        run(&["ip", "link", "set", &br, "up"])?;
        for k in 0..self.n {
            let ns = self.name(k);
            let (outer, inner) = (format!("{}v{k}", self.tag), format!("{}p{k}", self.tag));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &outer, "master", &br])?;
            run(&["ip", "link", "set", &outer, "up"])?;
            let inside = |args: &[&str]| {
                let mut full = vec!["ip", "netns", "exec", ns.as_str()];
                full.extend_from_slice(args);
                run(&full)
            };
            inside(&["ip", "addr", "add", &format!("{}/24", self.ip(k)), "dev", &inner])?;
            inside(&["ip", "link", "set", &inner, "up"])?;
            inside(&["ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Member `k` drops what comes from (and, with `both`, what goes to)
    /// each of `peers`. Replaces any cut `k` had.
    pub fn cut(&self, k: usize, peers: &[usize], both: bool) -> Result<(), String> {
        self.heal(k);
        let mut rules = String::from("table inet cairn_cut {\n chain input { type filter hook input priority 0;\n");
        for &p in peers {
            let _ = writeln!(rules, "  ip saddr {} drop", self.ip(p));
        }
        rules.push_str(" }\n chain output { type filter hook output priority 0;\n");
        if both {
            for &p in peers {
                let _ = writeln!(rules, "  ip daddr {} drop", self.ip(p));
            }
        }
        rules.push_str(" }\n}\n");
        let file = std::env::temp_dir().join(format!("{}-cut{k}.nft", self.tag));
        std::fs::write(&file, rules).map_err(|e| e.to_string())?;
        let ns = self.name(k);
        run(&["ip", "netns", "exec", &ns, "nft", "-f", file.to_str().expect("utf-8 path")])
    }

    /// Takes member `k`'s cut away.
    pub fn heal(&self, k: usize) {
        let ns = self.name(k);
        let _ = run(&["ip", "netns", "exec", &ns, "nft", "delete", "table", "inet", "cairn_cut"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.tear_down();
        let _ = std::fs::remove_file(self.owner_file());
    }
}
