//! What the kernel says about a process: memory, CPU time, file descriptors, threads and
//! context switches, read from `/proc/PID`. CPU time is preferred over wall-clock time because
//! the machine is shared: other work slows a process down but does not bill it CPU.

use std::io;
use std::process::Command;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// VmRSS: resident memory, file-backed pages (the mapped binary) included.
    pub rss_kib: u64,
    /// RssAnon: the process's own heap and stacks; what grows with work.
    pub anon_kib: u64,
    /// VmHWM: the highest VmRSS so far.
    pub hwm_kib: u64,
    pub threads: u64,
    /// Open file descriptors (`/proc/PID/fd`).
    pub fds: u64,
    /// utime + stime in clock ticks (every thread, exited ones too; 10 ms resolution).
    pub cpu_ticks: u64,
    /// Run time of the live threads in ns (`/proc/PID/task/*/schedstat`): precise, but
    /// threads that have exited are missing.
    pub cpu_ns_live: u64,
    /// Voluntary + involuntary context switches of every thread: each wake-up counts at least
    /// once, so an idle process that polls shows here even when its CPU time rounds to zero.
    pub ctx_switches: u64,
}

impl Sample {
    pub fn read(pid: u32) -> io::Result<Sample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |key: &str| status_field(&status, key).unwrap_or(0);
        Ok(Sample {
            rss_kib: kib("VmRSS:"),
            anon_kib: kib("RssAnon:"),
            hwm_kib: kib("VmHWM:"),
            threads: kib("Threads:"),
            fds: count_fds(pid)?,
            cpu_ticks: cpu_ticks(pid)?,
            cpu_ns_live: cpu_ns_live(pid),
            ctx_switches: ctx_switches(pid),
        })
    }

    /// CPU time in milliseconds for a tick count.
    pub fn ticks_ms(ticks: u64) -> f64 {
        ticks as f64 * 1000.0 / clk_tck() as f64
    }

    /// CPU time in ms: the precise live-thread sum, or the tick count when that is larger
    /// (because threads have exited). Off by less than one tick either way.
    pub fn cpu_ms(&self) -> f64 {
        Sample::ticks_ms(self.cpu_ticks).max(self.cpu_ns_live as f64 / 1e6)
    }
}

/// The first number after `key` in `/proc/PID/status` (kB values stay in KiB).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime from `/proc/PID/stat` (fields 14 and 15; the command name may hold spaces,
/// so count from the closing parenthesis).
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn count_fds(pid: u32) -> io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// The contents of one file of every thread of `pid`.
fn per_thread(pid: u32, file: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join(file)).ok())
        .collect()
}

fn cpu_ns_live(pid: u32) -> u64 {
    per_thread(pid, "schedstat")
        .iter()
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn ctx_switches(pid: u32) -> u64 {
    per_thread(pid, "status")
        .iter()
        .map(|s| {
            status_field(s, "voluntary_ctxt_switches:").unwrap_or(0)
                + status_field(s, "nonvoluntary_ctxt_switches:").unwrap_or(0)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on Linux when it cannot be asked.
pub fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn reads_itself() {
        let s = Sample::read(std::process::id()).expect("own /proc");
        assert!(s.rss_kib > 0 && s.threads >= 1 && s.fds >= 3);
    }
}
