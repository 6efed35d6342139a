//! Unit tests of the spool, with crafted files for the crash edges and injected fsync
//! errors for fail-stop.

use super::recover::{padding, walk, Walk};
use super::*;

fn ev(n: u32) -> Event {
    crate::log::test_support::event("t", n)
}

fn cfg(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        path: dir.to_path_buf(),
        max_bytes: ByteSize(1 << 20),
        segment_bytes: ByteSize(4096),
        ..SpoolConfig::default()
    }
}

fn small(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        max_bytes: ByteSize(8192),
        segment_bytes: ByteSize(4096),
        ..cfg(dir)
    }
}

fn ids(recs: &[(u64, Event)]) -> Vec<String> {
    recs.iter().map(|(_, e)| e.delivery_id.clone()).collect()
}

/// Opens again once the writer thread of a dropped handle let go of the lock.
fn reopen(c: &SpoolConfig) -> Spool {
    reopen_as(c, None)
}

fn reopen_as(c: &SpoolConfig, consumers: Option<&[String]>) -> Spool {
    for _ in 0..500 {
        let res = match consumers {
            Some(list) => Spool::open_with_consumers(c, list),
            None => Spool::open(c),
        };
        match res {
            Err(SpoolError::Locked(_)) => std::thread::sleep(Duration::from_millis(10)),
            other => return other.unwrap(),
        }
    }
    panic!("the spool stayed locked");
}

#[tokio::test]
async fn appends_are_read_back_in_order_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path())).unwrap();
    let mut want = Vec::new();
    for i in 0..100 {
        let e = ev(i);
        spool.append(&e).await.unwrap();
        want.push(e);
    }
    assert!(spool.stats().unwrap().segments > 1);
    drop(spool);
    let spool = reopen(&cfg(dir.path()));
    let (got, next) = spool.read(0, 1000).unwrap();
    assert_eq!(next, spool.end_offset());
    let offs: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    let got: Vec<Event> = got.into_iter().map(|(_, e)| e).collect();
    assert_eq!(got, want);
    assert_eq!(spool.peek(0).unwrap().as_ref(), Some(&want[0]));
    assert_eq!(spool.peek(offs[57]).unwrap().as_ref(), Some(&want[57]));
    assert_eq!(spool.peek(spool.end_offset()).unwrap(), None);
}

#[tokio::test]
async fn concurrent_appends_beyond_the_queue_bound_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let c = SpoolConfig {
        segment_bytes: ByteSize(64 << 10),
        ..cfg(dir.path())
    };
    let spool = Spool::open(&c).unwrap();
    let n = WRITER_QUEUE as u32 * 2 + 10;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = spool.clone();
        tasks.push(tokio::spawn(async move { s.append(&ev(i)).await }));
    }
    let mut offs = Vec::new();
    for t in tasks {
        offs.push(t.await.unwrap().unwrap());
    }
    offs.sort_unstable();
    offs.dedup();
    assert_eq!(offs.len(), n as usize);
    assert_eq!(spool.read(0, 100_000).unwrap().0.len(), n as usize);
}

#[tokio::test]
async fn torn_tail_is_cut_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path())).unwrap();
    for i in 0..3 {
        spool.append(&ev(i)).await.unwrap();
    }
    drop(spool);
    let seg = seg_path(dir.path(), 0);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    // A half record: header claims 500 bytes, only some follow.
    f.write_all(&500u32.to_be_bytes()).unwrap();
    f.write_all(&[1, 2, 3, 4, 5, 6]).unwrap();
    drop(f);
    let spool = reopen(&cfg(dir.path()));
    assert_eq!(spool.read(0, 100).unwrap().0.len(), 3);
    spool.append(&ev(9)).await.unwrap();
    let (all, _) = spool.read(0, 100).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].1.delivery_id, "d9");
    assert!(!dir.path().join(CORRUPT_DIR).exists());
}

#[tokio::test]
async fn full_spool_refuses_and_recovers_after_consumption() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&small(dir.path())).unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..100 {
        match spool.append(&ev(i)).await {
            Ok(_) => accepted += 1,
            Err(SpoolError::Full) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(accepted > 0 && refused > 0);
    let (recs, next) = spool.read(0, 1000).unwrap();
    assert_eq!(recs.len(), accepted);
    spool.commit("fwd", next, &["fwd"]).unwrap();
    assert_eq!(spool.cursor("fwd").unwrap(), next);
    spool.append(&ev(1000)).await.unwrap();
}

#[tokio::test]
async fn with_no_registered_consumer_the_oldest_segments_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let c = small(dir.path());
    let spool = Spool::open_with_consumers(&c, &[]).unwrap();
    for i in 0..300 {
        spool.append(&ev(i)).await.unwrap();
        assert!(spool.used_bytes() <= c.max_bytes.0, "over max_bytes at {i}");
        assert!(!spool.is_full());
    }
    assert!(spool.start_offset() > 0);
    let (recs, _) = spool.read(0, 1000).unwrap();
    let got = ids(&recs);
    // The newest records are all there, in order, ending with the last; the oldest went.
    assert_eq!(got.last().map(String::as_str), Some("d299"));
    assert!(!got.contains(&"d0".to_owned()));
    let first: u32 = got[0][1..].parse().unwrap();
    let want: Vec<String> = (first..300).map(|n| format!("d{n}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn an_event_larger_than_max_bytes_is_refused_without_deleting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open_with_consumers(&small(dir.path()), &[]).unwrap();
    for i in 0..30 {
        spool.append(&ev(i)).await.unwrap();
    }
    let start = spool.start_offset();
    let mut huge = ev(99);
    huge.body = Bytes::from(vec![b'x'; 9000]);
    assert!(matches!(spool.append(&huge).await, Err(SpoolError::Full)));
    assert_eq!(spool.start_offset(), start);
}

#[tokio::test]
async fn the_open_segment_is_rolled_when_it_holds_the_room() {
    let dir = tempfile::tempdir().unwrap();
    // One segment could hold more than max_bytes: only a roll lets old data go.
    let c = SpoolConfig {
        segment_bytes: ByteSize(1 << 20),
        ..small(dir.path())
    };
    let spool = Spool::open_with_consumers(&c, &[]).unwrap();
    for i in 0..200 {
        spool.append(&ev(i)).await.unwrap();
    }
    assert!(spool.used_bytes() <= c.max_bytes.0);
    assert!(spool.stats().unwrap().segments >= 1);
}

#[tokio::test]
async fn a_lagging_registered_consumer_holds_its_segments_until_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let c = small(dir.path());
    let spool = Spool::open_with_consumers(&c, &["fwd".to_owned()]).unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        match spool.append(&ev(i)).await {
            Ok(_) => accepted.push(format!("d{i}")),
            Err(SpoolError::Full) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0);
    assert_eq!(spool.start_offset(), 0);
    let (recs, _) = spool.read(0, 1000).unwrap();
    assert_eq!(ids(&recs), accepted);
    // The consumer moves past two thirds (into the second segment): the first segment
    // goes, and what it still needs stays.
    let cut = recs.len() * 2 / 3;
    let half = recs[cut].0;
    spool.commit("fwd", half, &["fwd"]).unwrap();
    spool.append(&ev(1000)).await.unwrap();
    assert!(spool.start_offset() > 0 && spool.start_offset() <= half);
    let (rest, _) = spool.read(half, 1000).unwrap();
    let mut want: Vec<String> = accepted[cut..].to_vec();
    want.push("d1000".into());
    assert_eq!(ids(&rest), want);
    let stats = spool.stats().unwrap();
    assert_eq!(stats.consumers.len(), 1);
    assert_eq!(stats.consumers[0].name, "fwd");
    assert!(stats.consumers[0].registered);
    assert_eq!(stats.consumers[0].cursor, half);
    assert_eq!(stats.consumers[0].lag_bytes, spool.end_offset() - half);
}

#[tokio::test]
async fn age_retention_deletes_old_segments_only_once_consumers_are_past() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let spool = Spool::open_with_consumers(&c, &["fwd".to_owned()]).unwrap();
    for i in 0..100 {
        spool.append(&ev(i)).await.unwrap();
    }
    let segs = list_segments(dir.path()).unwrap();
    assert!(segs.len() > 3);
    // The two oldest segments were last written eight days ago.
    let old = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    for base in &segs[..2] {
        let f = OpenOptions::new()
            .write(true)
            .open(seg_path(dir.path(), *base))
            .unwrap();
        f.set_modified(old).unwrap();
    }
    // The consumer has read nothing: everything stays.
    assert_eq!(spool.enforce_retention().unwrap(), 0);
    assert_eq!(spool.start_offset(), 0);
    // It is past everything (saved without deleting, as a crash after the cursor write
    // would leave it): only the two old segments go.
    std::fs::write(
        dir.path().join("fwd.cursor"),
        spool.end_offset().to_string(),
    )
    .unwrap();
    drop(spool);
    let spool = reopen_as(&c, Some(&["fwd".to_owned()]));
    assert_eq!(spool.enforce_retention().unwrap(), segs[2]);
    assert_eq!(spool.start_offset(), segs[2]);
    assert_eq!(spool.stats().unwrap().segments, segs.len() - 2);
}

/// Sets every segment's last-write time eight days back.
fn age_all_segments(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    for base in list_segments(dir).unwrap() {
        let f = OpenOptions::new()
            .write(true)
            .open(seg_path(dir, base))
            .unwrap();
        f.set_modified(old).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_also_deletes_an_idle_open_segment_once_it_is_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let spool = Spool::open_with_consumers(&c, &["fwd".to_owned()]).unwrap();
    for i in 0..100 {
        spool.append(&ev(i)).await.unwrap();
    }
    let end = spool.end_offset();
    age_all_segments(dir.path());
    let retention = |s: &Spool| {
        let s = s.clone();
        tokio::task::spawn_blocking(move || s.enforce_retention())
    };
    // The consumer is half way: the open segment holds unread records and stays.
    let half = spool.read(0, 50).unwrap().1;
    spool.commit("fwd", half, &["fwd"]).unwrap();
    retention(&spool).await.unwrap().unwrap();
    assert!(spool.start_offset() <= half);
    assert_eq!(spool.read(half, 1000).unwrap().0.len(), 50);
    // Past everything: the open segment goes too (the writer rolled), nothing is left.
    spool.commit("fwd", end, &["fwd"]).unwrap();
    let freed = retention(&spool).await.unwrap().unwrap();
    assert!(freed > 0);
    assert_eq!(spool.start_offset(), end);
    assert_eq!(spool.stats().unwrap().bytes, 0);
    assert!(spool.read(0, 10).unwrap().0.is_empty());
    // The writer goes on in its new segment, and the record is read back.
    let off = spool.append(&ev(500)).await.unwrap();
    assert_eq!(off, end);
    assert_eq!(
        ids(&spool.read(end, 10).unwrap().0),
        vec!["d500".to_owned()]
    );
    // A young open segment stays even when consumed.
    spool.commit("fwd", spool.end_offset(), &["fwd"]).unwrap();
    assert_eq!(retention(&spool).await.unwrap().unwrap(), 0);
    assert_eq!(spool.read(end, 10).unwrap().0.len(), 1);
}

#[tokio::test]
async fn an_fsync_error_stops_the_writer_until_it_reopens_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let spool = Spool::open(&c).unwrap();
    spool.append(&ev(0)).await.unwrap();
    spool.faults().fsync.store(1, Ordering::Release);
    assert!(matches!(
        spool.append(&ev(1)).await,
        Err(SpoolError::Stopped { .. })
    ));
    // The disk would take it now, but the writer refuses until it reopens.
    assert!(matches!(
        spool.append(&ev(2)).await,
        Err(SpoolError::Stopped { .. })
    ));
    assert!(spool.is_stopped() && spool.is_full());
    let before = spool.stats().unwrap().segments;
    spool.faults().reopen_now.store(true, Ordering::Release);
    // Once a reopen is due, readiness lets an append in to try it.
    assert!(spool.is_stopped() && !spool.is_full());
    spool.append(&ev(3)).await.unwrap();
    assert!(!spool.is_stopped());
    assert_eq!(spool.stats().unwrap().segments, before + 1);
    assert_eq!(ids(&spool.read(0, 100).unwrap().0), ["d0", "d3"]);
    drop(spool);
    let spool = reopen(&c);
    assert_eq!(ids(&spool.read(0, 100).unwrap().0), ["d0", "d3"]);
}

#[tokio::test]
async fn a_failed_reopen_keeps_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path())).unwrap();
    spool.faults().fsync.store(1, Ordering::Release);
    assert!(spool.append(&ev(1)).await.is_err());
    spool.faults().reopen_now.store(true, Ordering::Release);
    // The reopen's own directory fsync fails: still stopped.
    spool.faults().dir_fsync.store(1, Ordering::Release);
    assert!(matches!(
        spool.append(&ev(2)).await,
        Err(SpoolError::Stopped { .. })
    ));
    spool.append(&ev(3)).await.unwrap();
    assert_eq!(ids(&spool.read(0, 100).unwrap().0), ["d3"]);
}

#[tokio::test]
async fn a_directory_fsync_error_at_a_segment_roll_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path())).unwrap();
    spool.faults().dir_fsync.store(1, Ordering::Release);
    let mut acked = Vec::new();
    let mut stopped = false;
    for i in 0..100 {
        match spool.append(&ev(i)).await {
            Ok(_) => acked.push(format!("d{i}")),
            Err(SpoolError::Stopped { .. }) => {
                stopped = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(stopped, "a roll happened and its directory fsync failed");
    assert!(matches!(
        spool.append(&ev(500)).await,
        Err(SpoolError::Stopped { .. })
    ));
    spool.faults().reopen_now.store(true, Ordering::Release);
    spool.append(&ev(501)).await.unwrap();
    acked.push("d501".into());
    assert_eq!(ids(&spool.read(0, 1000).unwrap().0), acked);
}

#[tokio::test]
async fn a_directory_fsync_error_fails_the_cursor_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&small(dir.path())).unwrap();
    for i in 0..60 {
        let _ = spool.append(&ev(i)).await;
    }
    let end = spool.end_offset();
    spool.faults().dir_fsync.store(1, Ordering::Release);
    assert!(matches!(
        spool.commit("fwd", end, &["fwd"]),
        Err(SpoolError::Io { .. })
    ));
    // Nothing was deleted on the strength of a cursor that may not survive a crash.
    assert_eq!(spool.start_offset(), 0);
    spool.commit("fwd", end, &["fwd"]).unwrap();
    assert!(spool.start_offset() > 0);
}

/// Appends five records, then lets `damage` change the segment's bytes (given the
/// records' offsets and the segment's length) before a reopen.
async fn damaged(damage: impl FnOnce(&mut Vec<u8>, &[u64])) -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    let spool = Spool::open(&c).unwrap();
    let mut offs = Vec::new();
    for i in 0..5 {
        offs.push(spool.append(&ev(i)).await.unwrap());
    }
    drop(spool);
    let seg = seg_path(dir.path(), 0);
    let mut data = std::fs::read(&seg).unwrap();
    damage(&mut data, &offs);
    std::fs::write(&seg, &data).unwrap();
    let spool = reopen(&c);
    (dir, spool)
}

#[tokio::test]
async fn a_corrupt_record_mid_segment_is_moved_aside_and_the_records_after_it_kept() {
    let mut bad = Vec::new();
    let mut at = 0;
    let (dir, spool) = damaged(|data, offs| {
        at = offs[1];
        let end = offs[2] as usize;
        data[offs[1] as usize + HEADER + 20] ^= 0xff;
        bad = data[offs[1] as usize..end].to_vec();
    })
    .await;
    let (recs, _) = spool.read(0, 100).unwrap();
    assert_eq!(ids(&recs), ["d0", "d2", "d3", "d4"]);
    let saved = std::fs::read(dir.path().join(CORRUPT_DIR).join(format!("{at:020}.bin"))).unwrap();
    assert_eq!(saved, bad);
    assert_eq!(spool.stats().unwrap().corrupt_frames, 1);
    // Offsets are unchanged and appends go on after the kept records.
    assert_eq!(recs[1].0, at + bad.len() as u64);
    spool.append(&ev(5)).await.unwrap();
    assert_eq!(
        ids(&spool.read(0, 100).unwrap().0),
        ["d0", "d2", "d3", "d4", "d5"]
    );
    assert_eq!(
        spool.peek(at).unwrap().map(|e| e.delivery_id),
        Some("d2".into())
    );
    // A second open finds nothing left to repair.
    drop(spool);
    let spool = reopen(&cfg(dir.path()));
    assert_eq!(spool.read(0, 100).unwrap().0.len(), 5);
    assert_eq!(spool.stats().unwrap().corrupt_frames, 1);
}

#[tokio::test]
async fn a_corrupt_last_record_is_a_torn_tail() {
    let (dir, spool) = damaged(|data, offs| {
        data[offs[4] as usize + HEADER + 20] ^= 0xff;
    })
    .await;
    assert_eq!(
        ids(&spool.read(0, 100).unwrap().0),
        ["d0", "d1", "d2", "d3"]
    );
    assert!(!dir.path().join(CORRUPT_DIR).exists());
}

#[tokio::test]
async fn a_damaged_length_field_is_cut_like_a_torn_tail() {
    let (_dir, spool) = damaged(|data, offs| {
        let at = offs[2] as usize;
        data[at..at + 4].copy_from_slice(&0u32.to_be_bytes());
    })
    .await;
    assert_eq!(ids(&spool.read(0, 100).unwrap().0), ["d0", "d1"]);
    spool.append(&ev(9)).await.unwrap();
    assert_eq!(ids(&spool.read(0, 100).unwrap().0), ["d0", "d1", "d9"]);
}

#[test]
fn walk_keeps_bad_records_only_when_intact_ones_follow() {
    let rec = |n: usize| {
        let mut r = padding(n);
        r[HEADER] = 1;
        let crc = crc32fast::hash(&r[HEADER..]);
        r[4..8].copy_from_slice(&crc.to_be_bytes());
        r
    };
    let broken = |n: usize| {
        let mut r = rec(n);
        r[HEADER + 1] ^= 1;
        r
    };
    let mut data = [rec(20), broken(30), broken(25), rec(40), broken(20)].concat();
    data.extend_from_slice(&[7, 7, 7]);
    let w = walk(&data);
    assert_eq!(w.valid_end, 20 + 30 + 25 + 40);
    assert_eq!(w.bad, vec![20..50, 50..75]);
    assert_eq!(
        walk(&[]),
        Walk {
            valid_end: 0,
            bad: vec![]
        }
    );
    assert_eq!(
        walk(&[0; 64]),
        Walk {
            valid_end: 0,
            bad: vec![]
        }
    );
}

#[tokio::test]
async fn tail_gives_the_newest_records_oldest_first_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&cfg(dir.path())).unwrap();
    let mut offsets = Vec::new();
    for i in 0..100 {
        offsets.push(spool.append(&ev(i)).await.unwrap());
    }
    // 4 KiB segments hold about 20 records each: 30 span more than one.
    let tail = spool.tail(30, |o, e| Some((o, e.delivery_id))).unwrap();
    let want: Vec<(u64, String)> = (70..100)
        .map(|i| (offsets[i as usize], format!("d{i}")))
        .collect();
    assert_eq!(tail, want);
    // `keep` can drop records; fewer records than asked gives them all.
    let two_digits = spool
        .tail(1000, |_, e| {
            (e.delivery_id.len() == 3).then_some(e.delivery_id)
        })
        .unwrap();
    assert_eq!(two_digits.len(), 90);
    assert_eq!(two_digits.first().map(String::as_str), Some("d10"));
    assert_eq!(two_digits.last().map(String::as_str), Some("d99"));
    assert!(spool.tail(0, |_, e| Some(e)).unwrap().is_empty());
}
