//! Memory figures from `/proc`: a process's resident set (`VmRSS`), the kernel's TCP
//! socket memory (`/proc/net/sockstat`) and slab (`/proc/meminfo`). Read-only; a figure
//! that cannot be read is `None`, never an error that stops a run.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers, for which all-zero is valid; getrusage writes
    // into a valid, exclusively borrowed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds (user + system) process `pid` has used, all its threads together
/// (`/proc/PID/stat`); `None` if it cannot be read (gone, or not Linux).
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&text).map(|ticks| ticks as f64 / clock_ticks_per_sec())
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses: fields are counted after
/// its last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Resident set size of `pid`, bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kib_field(&text, "VmRSS:")
}

/// Reads a PID from a file (whitespace allowed around it).
pub fn pid_from_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `Key:   123 kB` → 123 × 1024.
fn parse_kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// System-wide kernel memory figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMem {
    /// TCP sockets in use (`sockstat` TCP inuse).
    pub tcp_inuse: u64,
    /// Memory of TCP socket buffers, bytes (`sockstat` TCP mem, in pages).
    pub tcp_mem_bytes: u64,
    /// Kernel slab, bytes (`meminfo` Slab): socket structures, dentries, ...
    pub slab_bytes: u64,
}

impl KernelMem {
    pub fn read() -> KernelMem {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (tcp_inuse, tcp_pages) = parse_sockstat(&sockstat).unwrap_or_default();
        KernelMem {
            tcp_inuse,
            tcp_mem_bytes: tcp_pages * page_size(),
            slab_bytes: parse_kib_field(&meminfo, "Slab:").unwrap_or(0),
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096).max(1)
}

/// `TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 2` → (5, 2).
fn parse_sockstat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| words.iter().position(|w| *w == k).and_then(|i| words.get(i + 1)).and_then(|v| v.parse().ok());
    Some((get("inuse")?, get("mem")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_kib_field("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234 * 1024));
        assert_eq!(parse_kib_field("VmHWM: 1 kB\n", "VmRSS:"), None);
        let s = "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat(s), Some((12, 7)));
        assert_eq!(parse_sockstat("UDP: inuse 1"), None);
        // A command name with spaces and parentheses; utime 7 and stime 5 ticks.
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 999 1000 50";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(12));
        assert_eq!(parse_stat_cpu_ticks("42 (x) S 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(KernelMem::read().slab_bytes > 0);
        assert!(own_cpu_secs() >= 0.0);
        let own = process_cpu_secs(std::process::id()).expect("own /proc/PID/stat");
        assert!(own >= 0.0);
    }
}
