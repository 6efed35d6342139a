//! The corpus file that `wrk` replays (`bench/wrk/replay.lua`) and what the script prints.
//!
//! `hookgate-load --write-corpus FILE --count N` writes N whole HTTP/1.1 requests, each
//! pre-signed with its own delivery id, in this format (read by the Lua script with three
//! `f:read` calls per request, no parsing beyond a number):
//!
//! ```text
//! hookgate-corpus 1 count=N provider=github\n      (one header line)
//! N 000001370\n<1370 bytes of the request>         (a record: kind, space, 9-digit length, \n)
//! R 000001370\n<…>                                 (R: re-sends an earlier record's delivery id)
//! ```
//!
//! Kind `N` is a new delivery id, `R` repeats the bytes of an earlier `N` record (the share
//! asked by `--dup-ratio`), so the distinct delivery ids a run sent is the number of `N`
//! records it sent. The script never repeats a record: when it reaches the end of the file
//! it says so (`wrapped=1`), and the run is refused.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// The first bytes of a corpus file.
pub const MAGIC: &str = "hookgate-corpus 1";
/// Bytes of a record's header: kind, space, 9 digits, newline.
pub const RECORD_HEADER: usize = 12;

/// One record: a new delivery or a re-send of an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A delivery id not sent before in this file.
    New,
    /// The same bytes as an earlier `New` record.
    Resend,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::New => b'N',
            Kind::Resend => b'R',
        }
    }
}

/// Writes corpus files.
pub struct CorpusWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> CorpusWriter<W> {
    /// Writes the header line, announcing `count` records of `provider`.
    pub fn new(mut out: W, count: u64, provider: &str) -> std::io::Result<Self> {
        writeln!(out, "{MAGIC} count={count} provider={provider}")?;
        Ok(CorpusWriter { out, written: 0 })
    }

    /// Appends one request.
    pub fn record(&mut self, kind: Kind, request: &[u8]) -> std::io::Result<()> {
        if request.len() > 999_999_999 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a request of 1 GB or more does not fit the corpus format",
            ));
        }
        writeln!(self.out, "{} {:09}", kind.byte() as char, request.len())?;
        self.out.write_all(request)?;
        self.written += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record read back: its kind and the request's bytes.
pub type Record = (Kind, Vec<u8>);

/// Reads a whole corpus (as the Lua script does, record by record): its header's count
/// and every record.
pub fn read_corpus(mut input: impl BufRead) -> anyhow::Result<(u64, Vec<Record>)> {
    let mut head = String::new();
    input.read_line(&mut head)?;
    let rest = head
        .trim_end()
        .strip_prefix(MAGIC)
        .ok_or_else(|| anyhow::anyhow!("not a hookgate corpus (header `{}`)", head.trim_end()))?;
    let count = rest
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("count="))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("corpus header without count="))?;
    let mut records = Vec::new();
    loop {
        let mut h = [0u8; RECORD_HEADER];
        match input.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let kind = match h[0] {
            b'N' => Kind::New,
            b'R' => Kind::Resend,
            k => anyhow::bail!("record {}: kind {:?}", records.len(), k as char),
        };
        if h[1] != b' ' || h[11] != b'\n' {
            anyhow::bail!("record {}: malformed header", records.len());
        }
        let len: usize = std::str::from_utf8(&h[2..11])?.parse()?;
        let mut bytes = vec![0u8; len];
        input.read_exact(&mut bytes)?;
        records.push((kind, bytes));
    }
    if records.len() as u64 != count {
        anyhow::bail!("corpus says count={count} but holds {}", records.len());
    }
    Ok((count, records))
}

/// What `bench/wrk/replay.lua` printed at the end of one wrk run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkRun {
    /// Responses completed (wrk's `summary.requests`).
    pub requests: u64,
    /// wrk's measured time, µs.
    pub duration_us: u64,
    /// Requests handed to wrk by the script (written, or in flight at the end).
    pub sent: u64,
    /// Of those, records of kind `N`: distinct delivery ids sent.
    pub fresh: u64,
    /// Times a thread reached the end of its corpus and started over (must be 0).
    pub wrapped: u64,
    /// Byte offset after the last record handed out (where the next run may start).
    pub end: u64,
    /// 200 answers saying `"duplicate":false`.
    pub accepted: u64,
    /// 200 answers saying `"duplicate":true`.
    pub duplicates: u64,
    /// Socket errors by kind (`connect`, `read`, `write`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Latency percentiles in µs: p50, p90, p99, p99.9, max, and the mean.
    pub latency_us: [f64; 6],
}

impl WrkRun {
    /// Parses the `RESULT`, `STATUS` and `LATENCY` lines among wrk's output. Fails when
    /// one is missing (the script did not run to its end) or when the statuses do not add
    /// up to the completed requests.
    pub fn parse(output: &str) -> anyhow::Result<WrkRun> {
        fn pairs(line: &str) -> impl Iterator<Item = (&str, &str)> {
            line.split_whitespace()
                .skip(1)
                .filter_map(|kv| kv.split_once('='))
        }
        let line = |tag: &str| {
            output
                .lines()
                .find(|l| l.split_whitespace().next() == Some(tag))
                .ok_or_else(|| anyhow::anyhow!("wrk printed no {tag} line (did replay.lua run?)"))
        };
        let mut r = WrkRun::default();
        for (k, v) in pairs(line("RESULT")?) {
            let n: u64 = v
                .parse()
                .map_err(|_| anyhow::anyhow!("RESULT {k}={v}: not a number"))?;
            match k {
                "requests" => r.requests = n,
                "duration_us" => r.duration_us = n,
                "sent" => r.sent = n,
                "fresh" => r.fresh = n,
                "wrapped" => r.wrapped = n,
                "end" => r.end = n,
                "accepted" => r.accepted = n,
                "duplicates" => r.duplicates = n,
                "connect" | "read" | "write" | "timeout" => {
                    r.errors.insert(k.to_owned(), n);
                }
                _ => {}
            }
        }
        for (k, v) in pairs(line("STATUS")?) {
            let (code, n) = (k.parse::<u16>(), v.parse::<u64>());
            match (code, n) {
                (Ok(c), Ok(n)) => {
                    r.status.insert(c, n);
                }
                _ => anyhow::bail!("STATUS {k}={v}: not a status count"),
            }
        }
        let names = ["p50", "p90", "p99", "p999", "max", "mean"];
        for (k, v) in pairs(line("LATENCY")?) {
            if let Some(i) = names.iter().position(|n| *n == k) {
                r.latency_us[i] = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("LATENCY {k}={v}: not a number"))?;
            }
        }
        let counted: u64 = r.status.values().sum();
        if counted != r.requests {
            anyhow::bail!(
                "statuses add up to {counted} but wrk completed {} requests",
                r.requests
            );
        }
        Ok(r)
    }

    /// Why this run must not be reported, if it must not: a thread ran out of corpus and
    /// replayed records (the server then measured dedupe hits, not new events).
    pub fn refusal(&self) -> Option<String> {
        (self.wrapped > 0).then(|| {
            format!(
                "the corpus wrapped {} time(s) after {} requests: the run repeated delivery ids, so it is refused (use a larger corpus)",
                self.wrapped, self.sent
            )
        })
    }

    /// Responses with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.status
            .iter()
            .filter(|(c, _)| (200..300).contains(*c))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads the `A <ulid>` / `D <ulid>` lines the script writes for 200 answers (accepted /
/// duplicate), as `(accepted, duplicates)`.
pub fn read_answer_ids(text: &str) -> anyhow::Result<(Vec<u128>, Vec<u128>)> {
    let (mut accepted, mut dups) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let Some((kind, id)) = line.split_once(' ') else {
            continue;
        };
        let id = ulid::Ulid::from_string(id.trim())
            .map_err(|e| anyhow::anyhow!("answer id on line {}: {e}", n + 1))?
            .0;
        match kind {
            "A" => accepted.push(id),
            "D" => dups.push(id),
            _ => anyhow::bail!("answer ids line {}: kind `{kind}`", n + 1),
        }
    }
    Ok((accepted, dups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_round_trip() -> anyhow::Result<()> {
        let mut w = CorpusWriter::new(Vec::new(), 3, "github")?;
        w.record(Kind::New, b"POST /a HTTP/1.1\r\n\r\n")?;
        w.record(Kind::Resend, b"POST /a HTTP/1.1\r\n\r\n")?;
        w.record(Kind::New, b"")?;
        assert_eq!(w.written(), 3);
        let bytes = w.finish()?;
        assert!(bytes.starts_with(b"hookgate-corpus 1 count=3 provider=github\nN 000000020\nPOST"));
        let (count, records) = read_corpus(&bytes[..])?;
        assert_eq!(count, 3);
        assert_eq!(
            records,
            vec![
                (Kind::New, b"POST /a HTTP/1.1\r\n\r\n".to_vec()),
                (Kind::Resend, b"POST /a HTTP/1.1\r\n\r\n".to_vec()),
                (Kind::New, Vec::new()),
            ]
        );
        // A short file (a count that does not match) and a foreign file are errors.
        let mut w = CorpusWriter::new(Vec::new(), 2, "github")?;
        w.record(Kind::New, b"x")?;
        assert!(read_corpus(&w.finish()?[..]).is_err());
        assert!(read_corpus(&b"GET / HTTP/1.1\r\n"[..]).is_err());
        Ok(())
    }

    const OUT: &str = "Running 3s test @ http://127.0.0.1:1/hooks/github\n  1 threads and 64 connections\nDONE\nRESULT requests=300 duration_us=3000000 sent=364 fresh=360 wrapped=0 end=498000 connect=0 read=0 write=0 timeout=1\nSTATUS 200=298 503=2\nLATENCY p50=500 p90=900 p99=1500 p999=2500 max=3000 mean=610.5\n";

    #[test]
    fn wrk_output_parses_and_a_wrapped_run_is_refused() -> anyhow::Result<()> {
        let r = WrkRun::parse(OUT)?;
        assert_eq!(
            (r.requests, r.sent, r.fresh, r.end),
            (300, 364, 360, 498_000)
        );
        assert_eq!(r.ok(), 298);
        assert_eq!(r.errors.get("timeout"), Some(&1));
        assert_eq!(r.latency_us, [500.0, 900.0, 1500.0, 2500.0, 3000.0, 610.5]);
        assert_eq!(r.refusal(), None);
        let wrapped = WrkRun::parse(&OUT.replace("wrapped=0", "wrapped=1"))?;
        assert!(wrapped.refusal().is_some_and(|m| m.contains("refused")));
        // Statuses that do not add up, or a missing line: not a result.
        assert!(WrkRun::parse(&OUT.replace("503=2", "503=1")).is_err());
        assert!(WrkRun::parse(&OUT.replace("LATENCY", "LAT")).is_err());
        Ok(())
    }

    #[test]
    fn answer_ids_parse() -> anyhow::Result<()> {
        let a = ulid::Ulid(1).to_string();
        let d = ulid::Ulid(2).to_string();
        let (acc, dup) = read_answer_ids(&format!("A {a}\nD {d}\nA {a}\n"))?;
        assert_eq!((acc, dup), (vec![1, 1], vec![2]));
        assert!(read_answer_ids("A not-a-ulid\n").is_err());
        Ok(())
    }
}
