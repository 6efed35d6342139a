//! Recovery of the writer's segment at open: a torn tail is cut; a bad record with intact
//! records after it is copied to `corrupt/` and overwritten with padding readers skip.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt as _;

use super::{
    head_len, io_err, parse_record, read_file, seg_path, Shared, SpoolError, CORRUPT_DIR, HEADER,
};

/// What a scan of a segment found.
#[derive(Debug, PartialEq)]
pub(super) struct Walk {
    /// End of the last intact record: everything after it is a torn tail.
    pub(super) valid_end: usize,
    /// Bad records with intact records after them (to quarantine and pad).
    pub(super) bad: Vec<std::ops::Range<usize>>,
}

/// Follows the records of a segment from its start. A bad record whose length field stays
/// inside the file is stepped over by that length; it is kept as `bad` only if an intact
/// record follows it, else it belongs to the torn tail.
pub(super) fn walk(data: &[u8]) -> Walk {
    let mut pos = 0usize;
    let mut valid_end = 0usize;
    let mut bad = Vec::new();
    let mut pending = Vec::new();
    loop {
        if let Some((_, next)) = parse_record(data, pos) {
            bad.append(&mut pending);
            pos = next;
            valid_end = next;
            continue;
        }
        let declared = data
            .get(pos..)
            .and_then(head_len)
            .and_then(|len| pos.checked_add(HEADER + len as usize))
            .filter(|end| *end <= data.len());
        match declared {
            Some(end) => {
                pending.push(pos..end);
                pos = end;
            }
            None => break,
        }
    }
    Walk { valid_end, bad }
}

/// Recovers the writer's segment at open: quarantines and pads bad records that intact
/// ones follow, cuts a torn tail. Returns the file and its valid length.
pub(super) fn recover_segment(shared: &Shared, base: u64) -> Result<(File, u64), SpoolError> {
    let path = seg_path(&shared.dir, base);
    let data = read_file(&path)?;
    let found = walk(&data);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("open segment"))?;
    for region in &found.bad {
        let bytes = data.get(region.clone()).unwrap_or_default();
        let offset = base + region.start as u64;
        quarantine_frame(shared, offset, bytes)?;
        file.write_all_at(&padding(bytes.len()), region.start as u64)
            .map_err(io_err("overwrite a corrupt record"))?;
        metrics::counter!("hookgate_spool_corrupt_frames_total").increment(1);
        tracing::error!(
            offset,
            bytes = bytes.len(),
            quarantine = %shared.dir.join(CORRUPT_DIR).display(),
            "spool record corrupt; intact records follow it, so it was moved aside and the rest kept"
        );
    }
    if !found.bad.is_empty() {
        file.sync_data()
            .map_err(io_err("fsync after padding corrupt records"))?;
    }
    let valid = found.valid_end as u64;
    let actual = data.len() as u64;
    if actual != valid {
        tracing::warn!(
            segment = %path.display(),
            cut_bytes = actual - valid,
            "spool segment had a torn tail; cutting it"
        );
        file.set_len(valid).map_err(io_err("truncate torn tail"))?;
        file.sync_all().map_err(io_err("fsync after truncate"))?;
    }
    Ok((file, valid))
}

/// Saves a bad record's bytes as `corrupt/{offset}.bin`, durably, before they are padded.
fn quarantine_frame(shared: &Shared, offset: u64, bytes: &[u8]) -> Result<(), SpoolError> {
    let dir = shared.dir.join(CORRUPT_DIR);
    fs::create_dir_all(&dir).map_err(io_err("create corrupt-record folder"))?;
    let path = dir.join(format!("{offset:020}.bin"));
    let mut f = File::create(&path).map_err(io_err("write corrupt record"))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err("write corrupt record"))?;
    shared
        .sync_dir(&dir)
        .and_then(|_| shared.sync_dir(&shared.dir))
        .map_err(io_err("fsync corrupt-record folder"))
}

/// A padding record of `total` bytes (at least a header and one byte): readers skip it.
pub(super) fn padding(total: usize) -> Vec<u8> {
    let payload = total.saturating_sub(HEADER).max(1);
    let mut out = vec![0u8; HEADER + payload];
    let crc = crc32fast::hash(&out[HEADER..]);
    out[..4].copy_from_slice(&(payload as u32).to_be_bytes());
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}
