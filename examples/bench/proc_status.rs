//! Memory and CPU time of processes, and the machine's load, from Linux's `/proc`.

use std::fmt;
use std::time::Duration;

/// Kibibytes, as `/proc` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kib(pub u64);

impl fmt::Display for Kib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} MB", self.0 as f64 / 1024.0)
    }
}

/// `VmRSS` (resident now) and `VmHWM` (the most ever resident) of a live process.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: Kib,
    pub peak: Kib,
}

/// The process's memory, or `None` once it has exited (a zombie has no memory lines).
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss: field(&status, "VmRSS:")?,
        peak: field(&status, "VmHWM:")?,
    })
}

/// A line such as `VmRSS:    12345 kB` (a tab after the colon, then padding).
fn field(status: &str, name: &str) -> Option<Kib> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    let kib = line[name.len()..].trim().trim_end_matches("kB").trim();
    kib.parse().ok().map(Kib)
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user and system) a process (`self` for this one) used so far, every thread.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU time the process's thread named `name` used so far.
pub fn thread_cpu(pid: &str, name: &str) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let task = tasks.flatten().find(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        comm.trim() == name
    })?;
    stat_cpu(&task.path().join("stat").to_string_lossy())
}

/// `utime + stime` from a `stat` file: the 14th and 15th fields, counted after the
/// parenthesized command name, which may itself hold spaces.
fn stat_cpu(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

/// The 1-minute load average: how busy the machine was, other processes included.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
