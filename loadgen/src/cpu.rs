//! Where the CPU went: this process's threads' user + system time, split
//! into the embedded broker's (its shard executors and their io_uring
//! workers) and the load generator's own (client runtime, pacer, main).
//! Read from `/proc/self/task/*/stat` at the start and end of the measured
//! window; in cores, so 1.0 is one core busy for the whole window.

use std::time::Instant;

/// CPU seconds used so far by the broker's threads and by the others.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub broker_s: f64,
    pub client_s: f64,
}

fn is_broker_thread(comm: &str) -> bool {
    comm.starts_with("shard-") || comm.starts_with("iou-wrk") || comm.starts_with("iou-sqp")
}

/// One reading of every live thread; `None` where `/proc` is not there.
pub fn sample() -> Option<Sample> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (mut broker, mut client) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the comm: state is field 3 of stat(5); utime and stime are 14 and 15.
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else { continue };
        let used = utime.parse::<u64>().unwrap_or(0) + stime.parse::<u64>().unwrap_or(0);
        if is_broker_thread(comm) {
            broker += used;
        } else {
            client += used;
        }
    }
    Some(Sample { at: Instant::now(), broker_s: broker as f64 / ticks, client_s: client as f64 / ticks })
}

/// Cores used between two samples: (broker, load generator).
pub fn cores(from: &Sample, to: &Sample) -> (f64, f64) {
    let seconds = to.at.saturating_duration_since(from.at).as_secs_f64().max(1e-9);
    ((to.broker_s - from.broker_s) / seconds, (to.client_s - from.client_s) / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_on_this_thread_counts_as_the_load_generators() {
        let before = sample().expect("/proc is mounted");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample().expect("/proc is mounted");
        let (broker, client) = cores(&before, &after);
        assert!(broker < 0.05, "no broker thread ran: {broker}");
        assert!(client > 0.5, "a busy thread is most of a core: {client}");
    }
}
