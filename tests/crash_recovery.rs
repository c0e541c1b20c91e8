//! Durability and recovery:
//! * acknowledged (acks=-1) messages survive a SIGKILL mid-stream;
//! * a clean restart (SIGINT) keeps everything;
//! * a torn write (truncated last batch) or a corrupted last batch (flipped byte) in the
//!   newest segment is cut off at startup: consumers see exactly the messages before the
//!   damaged batch, never garbage, and new messages continue right after the last good batch.

mod common;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig};

// ---------------------------------------------------------------------------------------------
// (a) SIGKILL while producing with acks=-1
// ---------------------------------------------------------------------------------------------

#[test]
fn acknowledged_messages_survive_sigkill() {
    const PARTITIONS: i32 = 4;
    let topic = "crash-acked";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 1);
    create_topic(&broker.bootstrap(), topic, PARTITIONS, &[]);

    let log = DeliveryLog::new(true);
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let mut cfg = producer_config(&broker.bootstrap());
        cfg.set("acks", "-1")
            .set("linger.ms", "2")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", "10000")
            .set("queue.buffering.max.messages", "100000");
        let log = log.clone();
        let stop = stop.clone();
        let topic = topic.to_string();
        thread::spawn(move || -> (u64, Option<String>) {
            let producer: rdkafka::producer::ThreadedProducer<TrackingContext> = cfg
                .create_with_context(TrackingContext { log })
                .expect("create ThreadedProducer");
            let mut sent: u64 = 0;
            let mut error = None;
            'produce: while !stop.load(Ordering::SeqCst) {
                let key = format!("k{sent}");
                let value = format!("v{sent}-crash");
                let mut record = BaseRecord::to(&topic).key(&key).payload(&value);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            if stop.load(Ordering::SeqCst) {
                                break 'produce;
                            }
                            record = r;
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => {
                            error = Some(format!("failed to enqueue k{sent}: {e}"));
                            break 'produce;
                        }
                    }
                }
                sent += 1;
            }
            // The broker is dead: drop everything still queued or in flight. Purged messages
            // get failed delivery reports, so they are never counted as acknowledged.
            producer.purge(PurgeConfig::default().queue().inflight());
            let _ = producer.flush(Duration::from_secs(2));
            drop(producer);
            (sent, error)
        })
    };

    // Let acknowledgements flow, then crash the broker mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.ok() < 2000 {
        assert!(
            Instant::now() < deadline,
            "only {} messages acknowledged within 20 s (failed: {}, first error {:?})",
            log.ok(),
            log.failed(),
            log.first_error()
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(1000));
    let acked_at_kill = log.ok();
    broker.kill();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (sent, send_error) = producer_thread.join().expect("producer thread panicked");
    assert!(
        send_error.is_none(),
        "producer thread failed: {send_error:?}"
    );
    let acked = log.acked();
    eprintln!(
        "enqueued {sent}, acknowledged {} ({acked_at_kill} just before SIGKILL), failed/purged {}",
        acked.len(),
        log.failed()
    );
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the crash"
    );

    // Restart on the same data.
    broker = Broker::start_in(root.path(), &[], 1);
    let bootstrap = broker.bootstrap();
    wait_for_topic(&bootstrap, topic, PARTITIONS, Duration::from_secs(30));

    let records = consume_all(
        &bootstrap,
        topic,
        PARTITIONS,
        acked.len(),
        Duration::from_secs(120),
    );

    // Every consumed record is well formed, offsets are contiguous from 0.
    let mut by_pos: HashMap<(i32, i64), (Vec<u8>, Vec<u8>)> = HashMap::with_capacity(records.len());
    let mut next_offset = vec![0i64; PARTITIONS as usize];
    for (p, off, key, value) in &records {
        let pu = *p as usize;
        assert_eq!(
            *off, next_offset[pu],
            "after crash: partition {p} has a hole or reordering: expected offset {} got {off}",
            next_offset[pu]
        );
        next_offset[pu] += 1;
        let i = parse_seq(key)
            .unwrap_or_else(|| panic!("after crash: {p}@{off} has malformed key {:?}", show(key)));
        assert!(
            (i as u64) < sent,
            "after crash: {p}@{off} holds k{i} which was never sent"
        );
        assert_eq!(
            value.as_slice(),
            format!("v{i}-crash").as_bytes(),
            "after crash: {p}@{off} key k{i} has garbage value {:?}",
            show(value)
        );
        by_pos.insert((*p, *off), (key.clone(), value.clone()));
    }

    // Every acknowledged message is present at the offset the broker acknowledged.
    let mut lost = Vec::new();
    for a in &acked {
        match by_pos.get(&(a.partition, a.offset)) {
            Some((k, v)) if *k == a.key && *v == a.value => {}
            Some((k, _)) => lost.push(format!(
                "{}@{} acked as {:?} but now holds {:?}",
                a.partition,
                a.offset,
                show(&a.key),
                show(k)
            )),
            None => lost.push(format!(
                "{}@{} ({:?}) acked but missing (partition now has {} messages)",
                a.partition,
                a.offset,
                show(&a.key),
                next_offset[a.partition as usize]
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost after SIGKILL + restart; first: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "after restart: {} messages on disk ({} acknowledged, {} unacknowledged survivors)",
        records.len(),
        acked.len(),
        records.len() - acked.len().min(records.len())
    );

    // The restarted broker keeps serving: new messages continue right after the old ones.
    append_and_check(&bootstrap, topic, PARTITIONS, &next_offset, records.len());
    broker.terminate();
}

/// Produces 10 messages to every partition and checks they land at offsets
/// `old_end[p]..old_end[p]+10` in order.
fn append_and_check(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    old_end: &[i64],
    old_total: usize,
) {
    const PER_PARTITION: usize = 10;
    let mut cfg = producer_config(bootstrap);
    cfg.set("acks", "-1")
        .set("max.in.flight.requests.per.connection", "1");
    let (producer, log) = tracking_producer(&cfg, true);
    for p in 0..partitions {
        for j in 0..PER_PARTITION {
            let key = format!("after-{p}-{j}");
            let value = format!("after-value-{p}-{j}");
            send_base(
                &producer,
                BaseRecord::to(topic).partition(p).key(&key).payload(&value),
            );
        }
    }
    flush_or_panic(&producer, "append after restart", &log);
    let n = PER_PARTITION * partitions as usize;
    assert_delivered(&log, n, "append after restart");
    for a in log.acked() {
        let j: i64 = String::from_utf8_lossy(&a.key)
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("own key format");
        assert_eq!(
            a.offset,
            old_end[a.partition as usize] + j,
            "new message {:?} acknowledged at {}@{}, expected offset {} (right after the recovered log end)",
            show(&a.key),
            a.partition,
            a.offset,
            old_end[a.partition as usize] + j
        );
    }
    let records = consume_all(
        bootstrap,
        topic,
        partitions,
        old_total + n,
        Duration::from_secs(60),
    );
    assert_eq!(
        records.len(),
        old_total + n,
        "expected {old_total} old + {n} new messages"
    );
    let mut new_seen: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    for (p, off, key, value) in &records {
        if *off >= old_end[*p as usize] {
            new_seen
                .entry(*p)
                .or_default()
                .push((*off, String::from_utf8_lossy(key).into_owned()));
            let key_s = String::from_utf8_lossy(key);
            assert!(
                key_s.starts_with(&format!("after-{p}-")),
                "{p}@{off}: expected a newly appended message, got key {key_s:?} value {:?}",
                show(value)
            );
        }
    }
    for p in 0..partitions {
        let got = new_seen.remove(&p).unwrap_or_default();
        let expected: Vec<(i64, String)> = (0..PER_PARTITION)
            .map(|j| (old_end[p as usize] + j as i64, format!("after-{p}-{j}")))
            .collect();
        assert_eq!(
            got, expected,
            "partition {p}: appended messages at wrong offsets / order"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Clean restart keeps everything
// ---------------------------------------------------------------------------------------------

#[test]
fn clean_restart_keeps_all_data() {
    const PARTITIONS: i32 = 4;
    const N: usize = 20_000;
    let topic = "clean-restart";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 1);
    create_topic(&broker.bootstrap(), topic, PARTITIONS, &[]);
    let mut cfg = producer_config(&broker.bootstrap());
    cfg.set("acks", "-1")
        .set("max.in.flight.requests.per.connection", "1");
    let value_of = |i: usize| format!("clean-{i}");
    produce_keyed(&cfg, topic, N, Some(PARTITIONS), value_of);

    broker.interrupt(); // SIGINT must also be a clean shutdown
    broker = Broker::start_in(root.path(), &[], 1);
    let bootstrap = broker.bootstrap();
    wait_for_topic(&bootstrap, topic, PARTITIONS, Duration::from_secs(30));
    let records = consume_all(&bootstrap, topic, PARTITIONS, N, Duration::from_secs(60));
    let counts = check_sequenced(&records, N, PARTITIONS, "after clean restart", value_of);
    for (p, &c) in counts.iter().enumerate() {
        assert_eq!(
            c,
            N / PARTITIONS as usize,
            "partition {p} count after clean restart"
        );
    }
    let old_end: Vec<i64> = counts.iter().map(|&c| c as i64).collect();
    append_and_check(&bootstrap, topic, PARTITIONS, &old_end, N);
    broker.terminate();
}

/// With zeros written ahead of the log end (`shardlog.log.preallocate.bytes`) the active
/// segment's file runs past its data while the broker runs. A SIGKILL leaves those zeros:
/// recovery takes them for padding, everything acknowledged is read back and appends continue
/// right after it. A clean stop trims the file to its batches.
#[test]
fn preallocated_zeros_survive_sigkill_and_go_on_clean_stop() {
    const PARTITIONS: i32 = 2;
    const N: usize = 4_000;
    let topic = "prealloc";
    let args = [("shardlog.log.preallocate.bytes", "4194304")];
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &args, 1);
    create_topic(&broker.bootstrap(), topic, PARTITIONS, &[]);
    let mut cfg = producer_config(&broker.bootstrap());
    cfg.set("acks", "-1")
        .set("max.in.flight.requests.per.connection", "1");
    let value_of = |i: usize| format!("prealloc-{i}-{}", "z".repeat(200));
    produce_keyed(&cfg, topic, N, Some(PARTITIONS), value_of);
    let segment = newest_segment(&broker.partition_dir(topic, 0));
    let bytes = fs::read(&segment).expect("read the active segment");
    let (batches, data_end) = parse_batches(&bytes);
    assert!(!batches.is_empty() && batches.iter().all(|b| b.crc_ok));
    assert!(
        bytes.len() > data_end + (1 << 20) && bytes[data_end..].iter().all(|&b| b == 0),
        "zeros run ahead of the data while the broker runs: file {}, data {data_end}",
        bytes.len()
    );

    broker.crash_and_restart(&args, 1);
    let bootstrap = broker.bootstrap();
    wait_for_topic(&bootstrap, topic, PARTITIONS, Duration::from_secs(30));
    let records = consume_all(&bootstrap, topic, PARTITIONS, N, Duration::from_secs(60));
    let counts = check_sequenced(&records, N, PARTITIONS, "after a crash", value_of);
    assert_eq!(counts.iter().sum::<usize>(), N);
    let old_end: Vec<i64> = counts.iter().map(|&c| c as i64).collect();
    append_and_check(&bootstrap, topic, PARTITIONS, &old_end, N);

    broker.terminate();
    let bytes = fs::read(&segment).expect("read the segment after a clean stop");
    let (batches, data_end) = parse_batches(&bytes);
    assert!(batches.iter().all(|b| b.crc_ok));
    assert_eq!(bytes.len(), data_end, "a clean stop trims the zeros");
}

/// A partition whose write rounds are large (here 512 KiB batches) is writing as fast as it can:
/// it gets no zeros ahead of its end, which would double the bytes each fdatasync flushes. Its
/// file ends where its data does, while the broker runs.
#[test]
fn busy_partition_gets_no_zeros_ahead() {
    const N: usize = 40_000;
    let topic = "prealloc-busy";
    let args = [("shardlog.log.preallocate.bytes", "4194304")];
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &args, 1);
    create_topic(&broker.bootstrap(), topic, 1, &[]);
    let mut cfg = producer_config(&broker.bootstrap());
    cfg.set("acks", "1")
        .set("batch.size", "524288")
        .set("linger.ms", "100");
    produce_keyed(&cfg, topic, N, Some(1), |i| {
        format!("busy-{i}-{}", "b".repeat(200))
    });
    let segment = newest_segment(&broker.partition_dir(topic, 0));
    let bytes = fs::read(&segment).expect("read the active segment");
    let (batches, data_end) = parse_batches(&bytes);
    assert!(batches.len() > 4 && batches.iter().all(|b| b.crc_ok));
    assert!(
        bytes.len() <= data_end.div_ceil(4096) * 4096,
        "no zeros past the data's last block: file {}, data {data_end}",
        bytes.len()
    );
    broker.terminate();
}

// ---------------------------------------------------------------------------------------------
// (b) Corrupted / torn last batch
// ---------------------------------------------------------------------------------------------

/// One Kafka v2 record batch found in a .log file.
#[derive(Clone, Debug)]
struct BatchInfo {
    /// File position of the batch.
    pos: u64,
    /// Total size in bytes (12 + batchLength).
    size: u64,
    base_offset: i64,
    last_offset_delta: i32,
    record_count: i32,
    crc_ok: bool,
}

const BATCH_HEADER_LEN: usize = 61;

/// Parses consecutive v2 batches from the start of a segment. Stops at the first position
/// that does not hold a complete batch (end of file, zero padding, or a torn batch).
/// Returns the batches and the position where parsing stopped.
fn parse_batches(bytes: &[u8]) -> (Vec<BatchInfo>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + BATCH_HEADER_LEN <= bytes.len() {
        let b = &bytes[pos..];
        let base_offset = i64::from_be_bytes(b[0..8].try_into().unwrap());
        let batch_length = i32::from_be_bytes(b[8..12].try_into().unwrap());
        if batch_length <= 0 {
            break; // zero padding (O_DIRECT) or garbage
        }
        let size = 12 + batch_length as usize;
        if size < BATCH_HEADER_LEN || pos + size > bytes.len() {
            break; // torn
        }
        let magic = b[16];
        if magic != 2 {
            break;
        }
        let stored_crc = u32::from_be_bytes(b[17..21].try_into().unwrap());
        let crc_ok = crc32c::crc32c(&b[21..size]) == stored_crc;
        let last_offset_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
        let record_count = i32::from_be_bytes(b[57..61].try_into().unwrap());
        out.push(BatchInfo {
            pos: pos as u64,
            size: size as u64,
            base_offset,
            last_offset_delta,
            record_count,
            crc_ok,
        });
        pos += size;
    }
    (out, pos)
}

/// The `.log` file with the highest base offset in a partition directory.
fn newest_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list partition dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().map(|x| x == "log").unwrap_or(false))
        .collect();
    logs.sort();
    logs.pop()
        .unwrap_or_else(|| panic!("no .log segment in {}", dir.display()))
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Cut the file in the middle of the last batch.
    TornWrite,
    /// Flip one byte inside the last batch's records (CRC mismatch).
    FlipByte,
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Clean,
    Crash,
}

fn corruption_producer_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut cfg = producer_config(bootstrap);
    cfg.set("acks", "-1")
        .set("compression.type", "none")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "50");
    cfg
}

/// Asserts two record lists are equal, reporting only the first difference.
fn assert_same_records(got: &[Record], expected: &[Record], what: &str) {
    for (idx, (g, e)) in got.iter().zip(expected.iter()).enumerate() {
        assert!(
            g == e,
            "{what}: record #{idx} differs: got {}@{} key {:?} value {:?}, expected {}@{} key {:?} value {:?}",
            g.0,
            g.1,
            show(&g.2),
            show(&g.3),
            e.0,
            e.1,
            show(&e.2),
            show(&e.3)
        );
    }
    assert_eq!(got.len(), expected.len(), "{what}: record count differs");
}

fn corruption_case(damage: Damage, stop: Stop) {
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 20;
    const N: usize = ROUNDS * PER_ROUND;
    let what = format!("{damage:?} after {stop:?} stop");
    let topic = "corrupt";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, topic, 1, &[]);

    // Produce in rounds, flushing between them, so the log holds several batches.
    let (producer, log) = tracking_producer(&corruption_producer_config(&bootstrap), false);
    for r in 0..ROUNDS {
        for j in 0..PER_ROUND {
            let i = r * PER_ROUND + j;
            let key = format!("k{i}");
            let value = format!("round{r}-msg{j}-payload-{}", "x".repeat(40));
            send_base(
                &producer,
                BaseRecord::to(topic).partition(0).key(&key).payload(&value),
            );
        }
        flush_or_panic(&producer, &what, &log);
    }
    assert_delivered(&log, N, &what);
    drop(producer);

    let before = consume_all(&bootstrap, topic, 1, N, Duration::from_secs(30));
    assert_eq!(
        before.len(),
        N,
        "{what}: before damage: consumed {} of {N}",
        before.len()
    );
    for (idx, (_, off, key, _)) in before.iter().enumerate() {
        assert_eq!(
            *off, idx as i64,
            "{what}: before damage: offsets not contiguous"
        );
        assert_eq!(
            parse_seq(key),
            Some(idx),
            "{what}: before damage: order differs from produce order"
        );
    }

    match stop {
        Stop::Clean => broker.terminate(),
        Stop::Crash => broker.kill(),
    }

    // Inspect the newest segment and locate the last batch.
    let segment = newest_segment(&partition_dir_of(root.path(), topic, 0));
    let bytes = fs::read(&segment).unwrap_or_else(|e| panic!("read {}: {e}", segment.display()));
    let (batches, end) = parse_batches(&bytes);
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "{what}: {} has {} non-zero bytes after the last complete batch at {end} (file size {})",
        segment.display(),
        bytes[end..].iter().filter(|&&b| b != 0).count(),
        bytes.len()
    );
    assert!(
        batches.len() >= 2,
        "{what}: expected several batches in {}, parsed {batches:?}",
        segment.display()
    );
    for b in &batches {
        assert!(
            b.crc_ok,
            "{what}: batch {b:?} in {} already has a bad CRC before any damage",
            segment.display()
        );
    }
    let last = batches.last().unwrap().clone();
    assert_eq!(
        last.base_offset + last.last_offset_delta as i64,
        N as i64 - 1,
        "{what}: last batch {last:?} of {} does not end at offset {}",
        segment.display(),
        N - 1
    );
    assert!(last.record_count >= 1 && last.size > BATCH_HEADER_LEN as u64);
    let keep = last.base_offset; // messages [0, keep) must survive
    assert!(
        keep > 0,
        "{what}: last batch starts at offset 0; need earlier batches"
    );

    // Damage it.
    let file = OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", segment.display()));
    match damage {
        Damage::TornWrite => {
            file.set_len(last.pos + last.size / 2)
                .expect("truncate segment");
        }
        Damage::FlipByte => {
            let records_len = last.size - BATCH_HEADER_LEN as u64;
            let at = last.pos + BATCH_HEADER_LEN as u64 + records_len / 2;
            let flipped = [bytes[at as usize] ^ 0xFF];
            file.write_all_at(&flipped, at).expect("flip byte");
        }
    }
    file.sync_all().expect("fsync damaged segment");
    drop(file);
    eprintln!(
        "{what}: damaged {} ({damage:?}) in batch {last:?}",
        segment.display()
    );

    // Restart: the damaged batch must be gone, everything before it intact.
    broker = Broker::start_in(root.path(), &[], 1);
    let bootstrap = broker.bootstrap();
    wait_for_topic(&bootstrap, topic, 1, Duration::from_secs(30));
    let (low, high) = watermarks(&bootstrap, topic, 0);
    assert_eq!(
        (low, high),
        (0, keep),
        "{what}: after restart the log must end right before the damaged batch (offset {keep})"
    );
    let after = consume_all(&bootstrap, topic, 1, keep as usize, Duration::from_secs(30));
    assert_eq!(
        after.len(),
        keep as usize,
        "{what}: consumed {} messages, expected exactly the {keep} before the damaged batch",
        after.len()
    );
    assert_same_records(
        &after,
        &before[..keep as usize],
        &format!("{what}: surviving messages vs produced"),
    );

    // The broker keeps serving: new messages continue at `keep`.
    let (producer, log) = tracking_producer(&corruption_producer_config(&bootstrap), true);
    const MORE: usize = 10;
    for j in 0..MORE {
        let key = format!("new{j}");
        let value = format!("new-value-{j}");
        send_base(
            &producer,
            BaseRecord::to(topic).partition(0).key(&key).payload(&value),
        );
    }
    flush_or_panic(&producer, &what, &log);
    assert_delivered(&log, MORE, &what);
    let mut acked_offsets: Vec<i64> = log.acked().iter().map(|a| a.offset).collect();
    acked_offsets.sort();
    let expected_offsets: Vec<i64> = (keep..keep + MORE as i64).collect();
    assert_eq!(
        acked_offsets, expected_offsets,
        "{what}: new messages must be assigned offsets right after the last good batch"
    );
    drop(producer);

    let all = consume_all(
        &bootstrap,
        topic,
        1,
        keep as usize + MORE,
        Duration::from_secs(30),
    );
    assert_eq!(
        all.len(),
        keep as usize + MORE,
        "{what}: total after appending"
    );
    assert_same_records(
        &all[..keep as usize],
        &before[..keep as usize],
        &format!("{what}: old messages after appending"),
    );
    for (j, (_, off, key, value)) in all[keep as usize..].iter().enumerate() {
        assert_eq!(*off, keep + j as i64, "{what}: new message offset");
        assert_eq!(
            key.as_slice(),
            format!("new{j}").as_bytes(),
            "{what}: new message key at {off}"
        );
        assert_eq!(
            value.as_slice(),
            format!("new-value-{j}").as_bytes(),
            "{what}: new message value at {off}"
        );
    }
    broker.terminate();
}

#[test]
fn torn_last_batch_after_clean_shutdown() {
    corruption_case(Damage::TornWrite, Stop::Clean);
}

#[test]
fn corrupted_last_batch_after_clean_shutdown() {
    corruption_case(Damage::FlipByte, Stop::Clean);
}

#[test]
fn torn_last_batch_after_crash() {
    corruption_case(Damage::TornWrite, Stop::Crash);
}

#[test]
fn corrupted_last_batch_after_crash() {
    corruption_case(Damage::FlipByte, Stop::Crash);
}
