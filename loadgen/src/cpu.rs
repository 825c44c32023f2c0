//! Where the CPU went: this process's threads' user + system time, split
//! into the embedded broker's (its shard executors and their io_uring
//! workers) and the load generator's own (client runtime, pacer, main).
//! Read at the start and end of the measured window, in cores (1.0 is one
//! core busy for the whole window): the process's total from
//! `/proc/self/stat` (which keeps the time of threads that have exited),
//! the broker's from its threads in `/proc/self/task/*/stat` (what each
//! thread alive at the end used since the start, or since it was born),
//! the load generator's the difference. What a broker thread that exited
//! within the window used there counts as the load generator's: an error
//! in the broker's favour, small since io_uring workers live for seconds.

use std::time::Instant;

/// CPU used so far: the whole process's, and each live broker thread's
/// (clock ticks).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    total: u64,
    broker: std::collections::HashMap<String, u64>,
    ticks_per_s: f64,
}

fn is_broker_thread(comm: &str) -> bool {
    comm.starts_with("shard-") || comm.starts_with("iou-wrk") || comm.starts_with("iou-sqp")
}

/// utime + stime, in clock ticks, from a `stat` line; and its comm.
fn ticks_of(stat: &str) -> Option<(&str, u64)> {
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3 of stat(5); utime and stime are 14 and 15.
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, utime + stime))
}

/// One reading; `None` where `/proc` is not there.
pub fn sample() -> Option<Sample> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (_, total) = ticks_of(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let mut broker = std::collections::HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        if let Some((comm, used)) = ticks_of(&stat)
            && is_broker_thread(comm)
        {
            broker.insert(task.file_name().to_string_lossy().into_owned(), used);
        }
    }
    Some(Sample { at: Instant::now(), total, broker, ticks_per_s })
}

/// CPU seconds between two samples: (broker, load generator).
pub fn seconds(from: &Sample, to: &Sample) -> (f64, f64) {
    let broker: u64 =
        to.broker.iter().map(|(tid, &t)| t.saturating_sub(from.broker.get(tid).copied().unwrap_or(0))).sum();
    let total = to.total.saturating_sub(from.total);
    (broker as f64 / to.ticks_per_s, total.saturating_sub(broker) as f64 / to.ticks_per_s)
}

/// Cores used between two samples: (broker, load generator).
pub fn cores(from: &Sample, to: &Sample) -> (f64, f64) {
    let elapsed = to.at.saturating_duration_since(from.at).as_secs_f64().max(1e-9);
    let (broker, client) = seconds(from, to);
    (broker / elapsed, client / elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_cpu() -> std::time::Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Busy for 300 ms of this thread's own CPU time (however long the
    /// machine takes to give it that): all of it is the load generator's.
    #[test]
    fn busy_work_on_this_thread_counts_as_the_load_generators() {
        let before = sample().expect("/proc is mounted");
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu().saturating_sub(start).as_millis() < 300 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample().expect("/proc is mounted");
        let (broker, client) = seconds(&before, &after);
        // Clock ticks are 10 ms: allow two of them either way.
        assert!(client >= 0.28, "300 ms of CPU on this thread, {client} s counted");
        assert!(broker.abs() < 1e-9, "no broker thread ran: {broker} s");
    }

    #[test]
    fn a_stat_line_with_spaces_in_its_name_parses() {
        let line = "42 (shard 0) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 100 1000 10";
        assert_eq!(ticks_of(line), Some(("shard 0", 280)));
    }
}
