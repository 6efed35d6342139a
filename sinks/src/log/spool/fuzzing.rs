//! The pure part of reading a segment, for the `spool` fuzz target
//! (`hookgate_ingest::fuzzing::spool`): not part of the public API.

use bytes::Bytes;
use hookgate_proto::Event;

use super::recover::{padding, walk};
use super::{parse_record, HEADER, PAD};

/// Runs `bytes`, as the content of a segment, through what the spool does with it:
/// recovery's scan at open ([`walk`]), the repair (the torn tail cut, each bad record with
/// intact records after it overwritten by [`padding`]), then the reader's record loop; and
/// returns the events the reader hands out. Panics if an invariant breaks:
/// - the valid end lies within the data and the bad ranges lie before it, in order;
/// - each padding is exactly as long as the bad record it replaces;
/// - on the repaired segment the reader reads record after record up to exactly the valid
///   end (so no acknowledged record after a repaired one is lost).
pub fn segment(bytes: &[u8]) -> Vec<Event> {
    let found = walk(bytes);
    assert!(found.valid_end <= bytes.len(), "valid end past the data");
    let mut repaired = bytes[..found.valid_end].to_vec();
    let mut last = 0;
    for bad in &found.bad {
        assert!(
            last <= bad.start && bad.start < bad.end,
            "bad ranges out of order"
        );
        assert!(
            bad.end <= found.valid_end,
            "a bad range after the valid end"
        );
        last = bad.end;
        let pad = padding(bad.len());
        assert_eq!(pad.len(), bad.len(), "padding changes the record's length");
        repaired[bad.clone()].copy_from_slice(&pad);
    }
    let data = Bytes::from(repaired);
    let mut events = Vec::new();
    let mut pos = 0usize;
    while let Some((range, next)) = parse_record(&data, pos) {
        assert!(
            next > pos && range.start == pos + HEADER,
            "the reader does not advance"
        );
        if data.get(range.start) != Some(&PAD) {
            if let Ok(ev) = Event::decode(&data.slice(range)) {
                events.push(ev);
            }
        }
        pos = next;
    }
    assert_eq!(
        pos, found.valid_end,
        "the reader stops before the end recovery kept"
    );
    events
}
