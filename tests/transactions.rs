//! Transactions through librdkafka against the real broker:
//! * consume-transform-produce: a read_committed consumer and a transactional producer with
//!   `send_offsets_to_transaction` copy 100,000 records, aborting every 7th transaction, with a
//!   broker SIGKILL in the middle; read_committed output holds each input record exactly once
//!   (in order per partition), read_uncommitted also shows the aborted copies, and the group's
//!   committed offsets are the input's end;
//! * two producers with one transactional id: the first is fenced and none of its records
//!   become visible;
//! * a transaction left open is aborted after `transaction.timeout.ms`, and read_committed
//!   consumers move on;
//! * while a transaction is open, read_committed LATEST is its first offset; after the commit
//!   the last stable offset is the high watermark.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const BROKER: &[(&str, &str)] = &[
    ("group.initial.rebalance.delay.ms", "0"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200",
    ),
];

/// A transactional producer (threaded: commit and abort flush, which needs its delivery
/// reports served).
fn txn_producer(
    bootstrap: &str,
    id: &str,
    timeout_ms: u32,
) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "5")
        .set("message.timeout.ms", timeout_ms.to_string())
        .create()
        .expect("create transactional producer");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.init_transactions(Duration::from_secs(10)) {
            Ok(()) => return producer,
            Err(e) if Instant::now() < deadline && !is_fatal(&e) => {
                thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("init_transactions({id}): {e}"),
        }
    }
}

fn txn_error(e: &KafkaError) -> Option<&rdkafka::error::RDKafkaError> {
    match e {
        KafkaError::Transaction(t) => Some(t),
        _ => None,
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    txn_error(e).is_some_and(|r| r.is_fatal())
}

fn requires_abort(e: &KafkaError) -> bool {
    txn_error(e).is_some_and(|r| r.txn_requires_abort())
}

fn retriable(e: &KafkaError) -> bool {
    txn_error(e).is_some_and(|r| r.is_retriable())
}

fn group_consumer(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("create group consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Committed offsets of the group for `partitions` of `topic` (-1 where none).
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("create offsets consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => {
                return (0..partitions)
                    .map(|p| match c.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => -1,
                    })
                    .collect()
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets: {e}, retrying");
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets: {e}"),
        }
    }
}

/// Reads a whole topic at an isolation level (until every partition is at its end).
fn read_all(bootstrap: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<Record> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .set("isolation.level", isolation)
        .create()
        .expect("create reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut eof: HashMap<i32, bool> = (0..partitions).map(|p| (p, false)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !eof.values().all(|e| *e) {
        assert!(
            Instant::now() < deadline,
            "reading {topic} ({isolation}) timed out"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                eof.insert(m.partition(), false);
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p, true);
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn consume_transform_produce_exactly_once_through_aborts_and_a_crash() {
    const PARTITIONS: i32 = 4;
    const TXN_RECORDS: usize = 500;
    let n = env_usize("SHARDLOG_TEST_EOS_MSGS", 100_000);
    let (input, output, group) = ("eos-in", "eos-out", "eos-copier");
    let root = test_tempdir();
    let broker = Broker::start_in(root.path(), BROKER, 2);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, input, PARTITIONS, &[]);
    create_topic(&bootstrap, output, PARTITIONS, &[]);
    let mut cfg = producer_config(&bootstrap);
    cfg.set("acks", "all");
    produce_keyed(&cfg, input, n, Some(PARTITIONS), |i| format!("v{i}"));

    // The crash: once half the input is copied, SIGKILL and restart on the same port.
    let copied = Arc::new(AtomicUsize::new(0));
    let crasher = {
        let copied = copied.clone();
        let mut broker = broker;
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while copied.load(Ordering::SeqCst) < n / 2 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            broker.crash_and_restart(BROKER, 2);
            broker
        })
    };

    let mut producer = txn_producer(&bootstrap, "eos-tx", 30_000);
    let mut consumer = group_consumer(&bootstrap, group, input);
    let mut txn_no = 0usize;
    let mut aborted_on_purpose = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(400);
    loop {
        assert!(
            Instant::now() < deadline,
            "copy did not finish: {} of {n} committed; errors {errors:?}",
            copied.load(Ordering::SeqCst)
        );
        let done = committed(&bootstrap, group, input, PARTITIONS);
        let total: i64 = done.iter().map(|o| (*o).max(0)).sum();
        copied.store(total as usize, Ordering::SeqCst);
        if total as usize >= n {
            break;
        }
        // One transaction: up to TXN_RECORDS records copied, with their input offsets.
        let result = (|| -> Result<bool, KafkaError> {
            producer.begin_transaction()?;
            let mut next: HashMap<i32, i64> = HashMap::new();
            let mut count = 0;
            let idle_until = Instant::now() + Duration::from_secs(2);
            while count < TXN_RECORDS && Instant::now() < idle_until {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let key = m.key().unwrap_or_default().to_vec();
                        let value = m.payload().unwrap_or_default().to_vec();
                        let mut record = BaseRecord::to(output)
                            .key(&key)
                            .payload(&value)
                            .partition(m.partition());
                        loop {
                            match producer.send(record) {
                                Ok(()) => break,
                                Err((e, r)) => {
                                    if !matches!(
                                        e,
                                        KafkaError::MessageProduction(
                                            rdkafka::types::RDKafkaErrorCode::QueueFull
                                        )
                                    ) {
                                        return Err(e);
                                    }
                                    record = r;
                                    thread::sleep(Duration::from_millis(1));
                                }
                            }
                        }
                        next.insert(m.partition(), m.offset() + 1);
                        count += 1;
                    }
                    Some(Err(e)) => eprintln!("consumer: {e}"),
                    None => {}
                }
            }
            if count == 0 {
                producer.abort_transaction(Duration::from_secs(30))?;
                return Ok(false);
            }
            let mut offsets = TopicPartitionList::new();
            for (p, o) in &next {
                offsets
                    .add_partition_offset(input, *p, Offset::Offset(*o))
                    .expect("offset");
            }
            let meta = consumer.group_metadata().expect("group metadata");
            producer.send_offsets_to_transaction(&offsets, &meta, Duration::from_secs(30))?;
            txn_no += 1;
            if txn_no.is_multiple_of(7) {
                producer.abort_transaction(Duration::from_secs(30))?;
                aborted_on_purpose += 1;
                return Ok(false);
            }
            let commit_deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match producer.commit_transaction(Duration::from_secs(10)) {
                    Ok(()) => return Ok(true),
                    Err(e) if retriable(&e) && Instant::now() < commit_deadline => {
                        eprintln!("commit: {e}, retrying");
                    }
                    Err(e) => return Err(e),
                }
            }
        })();
        let committed_now = match result {
            Ok(c) => c,
            Err(e) => {
                errors.push(e.to_string());
                if requires_abort(&e) && producer.abort_transaction(Duration::from_secs(30)).is_ok()
                {
                    false
                } else {
                    // Fatal (or an abort that failed): a new producer fences the old one.
                    drop(producer);
                    producer = txn_producer(&bootstrap, "eos-tx", 30_000);
                    false
                }
            }
        };
        if !committed_now {
            // Not committed: read again from the group's committed offsets.
            drop(consumer);
            consumer = group_consumer(&bootstrap, group, input);
        }
    }
    let broker = crasher.join().expect("crash thread");
    assert!(aborted_on_purpose > 0);
    eprintln!(
        "copied {n} records in {txn_no} transactions ({aborted_on_purpose} aborted on purpose); \
         errors met: {errors:?}"
    );

    let committed_out = read_all(&broker.bootstrap(), output, PARTITIONS, "read_committed");
    let mut seen = vec![false; n];
    let mut last: HashMap<i32, usize> = HashMap::new();
    for (p, off, key, value) in &committed_out {
        let i = parse_seq(key).unwrap_or_else(|| panic!("bad key at {p}@{off}"));
        assert_eq!(value, format!("v{i}").as_bytes());
        assert!(!seen[i], "k{i} copied twice (again at {p}@{off})");
        seen[i] = true;
        if let Some(prev) = last.insert(*p, i) {
            assert!(i > prev, "partition {p}: k{i} after k{prev}");
        }
    }
    assert_eq!(
        committed_out.len(),
        n,
        "read_committed output holds every input record once"
    );
    let all_out = read_all(&broker.bootstrap(), output, PARTITIONS, "read_uncommitted");
    assert!(
        all_out.len() > n,
        "read_uncommitted also shows the aborted copies ({} records)",
        all_out.len()
    );
    let offsets = committed(&broker.bootstrap(), group, input, PARTITIONS);
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| watermarks(&broker.bootstrap(), input, p).1)
        .collect();
    assert_eq!(
        offsets, ends,
        "the group's committed offsets are the input's end"
    );
}

/// ListOffsets LATEST at an isolation level through the project's client.
fn latest(bootstrap: &str, topic: &str, isolation: i8) -> i64 {
    let mut client = shardlog::client::Client::connect(bootstrap).expect("connect");
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = isolation;
    req.topics = vec![t];
    let resp = client.send(&req, 7).expect("ListOffsets");
    let part = &resp.topics[0].partitions[0];
    assert_eq!(part.error_code, 0, "ListOffsets");
    part.offset
}

fn send_values(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    prefix: &str,
    n: usize,
) {
    for i in 0..n {
        let value = format!("{prefix}{i}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&value).partition(0))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

#[test]
fn a_second_producer_fences_the_first_and_its_records_never_show() {
    let topic = "txn-fence";
    let broker = Broker::start(BROKER, 2);
    let b = broker.bootstrap();
    create_topic(&b, topic, 1, &[]);
    let first = txn_producer(&b, "fence-me", 60_000);
    first.begin_transaction().expect("begin");
    send_values(&first, topic, "first-", 10);
    let second = txn_producer(&b, "fence-me", 60_000);
    second.begin_transaction().expect("begin");
    send_values(&second, topic, "second-", 10);
    second
        .commit_transaction(Duration::from_secs(30))
        .expect("the second producer commits");
    let e = first
        .commit_transaction(Duration::from_secs(30))
        .expect_err("the first producer is fenced");
    assert!(is_fatal(&e), "fencing is fatal for the first producer: {e}");
    let visible = read_all(&b, topic, 1, "read_committed");
    assert_eq!(visible.len(), 10);
    assert!(visible.iter().all(|r| r.3.starts_with(b"second-")));
    let all = read_all(&b, topic, 1, "read_uncommitted");
    assert_eq!(all.len(), 20, "the fenced records are there, aborted");
}

#[test]
fn an_open_transaction_holds_the_lso_and_times_out() {
    let topic = "txn-lso";
    let broker = Broker::start(BROKER, 2);
    let b = broker.bootstrap();
    create_topic(&b, topic, 1, &[]);
    let plain = producer_config(&b)
        .set("acks", "all")
        .create::<ThreadedProducer<DefaultProducerContext>>()
        .expect("plain producer");
    send_values(&plain, topic, "plain-", 5);

    // Open transaction: read_committed LATEST is its first offset.
    let committer = txn_producer(&b, "lso-commit", 60_000);
    committer.begin_transaction().expect("begin");
    send_values(&committer, topic, "txn-", 5);
    assert_eq!(
        latest(&b, topic, 1),
        5,
        "read_committed LATEST: the open transaction's start"
    );
    assert_eq!(
        latest(&b, topic, 0),
        10,
        "read_uncommitted LATEST: the high watermark"
    );
    committer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");
    assert_eq!(
        latest(&b, topic, 1),
        latest(&b, topic, 0),
        "after commit LSO = HW"
    );
    assert_eq!(
        latest(&b, topic, 0),
        11,
        "the commit marker takes an offset"
    );

    // A transaction left open past transaction.timeout.ms is aborted by the coordinator.
    let stuck = txn_producer(&b, "lso-stuck", 1_500);
    stuck.begin_transaction().expect("begin");
    send_values(&stuck, topic, "stuck-", 5);
    assert_eq!(latest(&b, topic, 1), 11);
    let deadline = Instant::now() + Duration::from_secs(20);
    while latest(&b, topic, 1) != latest(&b, topic, 0) {
        assert!(
            Instant::now() < deadline,
            "the timed-out transaction was never aborted"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let visible = read_all(&b, topic, 1, "read_committed");
    assert_eq!(
        visible.len(),
        10,
        "read_committed moves on past the aborted records"
    );
    assert!(!visible.iter().any(|r| r.3.starts_with(b"stuck-")));
    // The timed-out producer was fenced.
    let e = stuck
        .commit_transaction(Duration::from_secs(30))
        .expect_err("the timed-out producer cannot commit");
    assert!(is_fatal(&e) || requires_abort(&e), "{e}");
}
