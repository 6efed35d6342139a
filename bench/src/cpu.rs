//! CPU time of processes, from `/proc/PID/stat` (utime + stime of the whole thread group,
//! every thread included, exited ones too), so each load scenario can report the CPU per
//! event of hookgate, the broker and the generator over the measured window only.

use std::path::Path;

/// utime + stime, in clock ticks, from the text of a `/proc/PID/stat` file. The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses: fields are
/// counted after the *last* `)`. `None` if the text is not a stat line.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's `USER_HZ` (`getconf CLK_TCK`; 100 on every Linux this runs on, and the
/// fallback when `getconf` is missing).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
}

/// CPU seconds used so far by process `pid` (all its threads), or `None` if it is gone.
pub fn process_cpu_seconds(pid: u32, ticks_per_second: u64) -> Option<f64> {
    read_cpu_seconds(
        &Path::new("/proc").join(pid.to_string()).join("stat"),
        ticks_per_second,
    )
}

/// CPU seconds used so far by this process.
pub fn own_cpu_seconds(ticks_per_second: u64) -> Option<f64> {
    read_cpu_seconds(Path::new("/proc/self/stat"), ticks_per_second)
}

fn read_cpu_seconds(path: &Path, ticks_per_second: u64) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat_ticks(&text).map(|t| t as f64 / ticks_per_second.max(1) as f64)
}

/// A process to watch, as given on the command line: `NAME=PID` (e.g. `hookgate=4242`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// What to call it in the report (`hookgate`, `tansu`, …).
    pub name: String,
    /// Its process id.
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=PID"))?;
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{pid}` is not a process id"))?;
        if name.is_empty() {
            return Err(format!("`{s}`: empty name"));
        }
        Ok(Watched {
            name: name.to_owned(),
            pid,
        })
    }
}

/// CPU seconds of each watched process at one instant (`None`: could not be read).
pub fn sample(watched: &[Watched], ticks_per_second: u64) -> Vec<Option<f64>> {
    watched
        .iter()
        .map(|w| process_cpu_seconds(w.pid, ticks_per_second))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A real line of a process named `a) b (c` (utime 1234, stime 56).
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 56 0 0 20 0 9 0 77 1000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(1290));
        assert_eq!(parse_stat_ticks("no parenthesis 1 2 3"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_cpu_time_is_read_and_grows() {
        let hz = clock_ticks_per_second();
        let before = own_cpu_seconds(hz).expect("readable");
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = own_cpu_seconds(hz).expect("readable");
        assert!(after >= before, "{before} -> {after}");
        assert!(process_cpu_seconds(std::process::id(), hz).is_some());
    }

    #[test]
    fn watched_processes_parse() {
        assert_eq!(
            "hookgate=42".parse::<Watched>(),
            Ok(Watched {
                name: "hookgate".into(),
                pid: 42
            })
        );
        assert!("hookgate".parse::<Watched>().is_err());
        assert!("=42".parse::<Watched>().is_err());
        assert!("x=y".parse::<Watched>().is_err());
    }
}
