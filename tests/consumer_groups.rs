//! Consumer groups through librdkafka against the real binary: members share a topic's
//! partitions, every message is consumed once across the group, committed offsets are where a
//! restarted consumer resumes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    let mut c = rdkafka::config::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    c.create().expect("consumer")
}

fn produce(bootstrap: &str, topic: &str, n: usize) {
    let mut pcfg = producer_config(bootstrap);
    pcfg.set("acks", "1");
    let (producer, log) = tracking_producer(&pcfg, false);
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("v{i}");
        send_base(
            &producer,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(value.as_bytes()),
        );
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert_eq!(log.ok(), n as u64, "{:?}", log.first_error());
}

#[test]
fn three_consumers_split_twelve_partitions_and_read_everything_once() {
    let mut broker = Broker::start(&[("group.initial.rebalance.delay.ms", "500")], 2);
    let bootstrap = broker.bootstrap();
    let topic = "shared";
    create_topic(&bootstrap, topic, 12, &[]);
    const N: usize = 30_000;
    produce(&bootstrap, topic, N);
    let consumers: Vec<BaseConsumer> = (0..3).map(|_| group_consumer(&bootstrap, "g3")).collect();
    for c in &consumers {
        c.subscribe(&[topic]).expect("subscribe");
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut by_consumer: Vec<HashSet<i32>> = vec![HashSet::new(); 3];
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < N {
        assert!(Instant::now() < deadline, "consumed {} of {N}", seen.len());
        for (i, c) in consumers.iter().enumerate() {
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                let m = m.expect("message");
                by_consumer[i].insert(m.partition());
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                *seen.entry(value).or_default() += 1;
            }
        }
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was consumed twice"
    );
    for c in &consumers {
        let assigned = c.assignment().expect("assignment").count();
        assert_eq!(assigned, 4, "each of 3 consumers owns 4 of 12 partitions");
    }
    let all: HashSet<i32> = by_consumer.iter().flatten().copied().collect();
    assert_eq!(all.len(), 12);
    for c in &consumers {
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
    }
    drop(consumers);
    broker.terminate();
}

/// Joins `group` on `topic` and returns the offset of the first message it gets.
fn first_offset_after_joining(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let c = group_consumer(bootstrap, group);
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no message after joining");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            return m.expect("message").offset();
        }
    }
}

fn consume_and_commit(bootstrap: &str, group: &str, topic: &str, upto: i64) {
    let c = group_consumer(bootstrap, group);
    c.subscribe(&[topic]).expect("subscribe");
    let mut last = -1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while last < upto - 1 {
        assert!(Instant::now() < deadline, "reached offset {last}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            last = m.expect("message").offset();
        }
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(upto))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    c.unsubscribe();
}

#[test]
fn committed_offsets_survive_consumer_and_broker_restarts() {
    let root = test_tempdir();
    let args = [("group.initial.rebalance.delay.ms", "0")];
    let mut broker = Broker::start_in(root.path(), &args, 2);
    let bootstrap = broker.bootstrap();
    let topic = "resume";
    create_topic(&bootstrap, topic, 1, &[]);
    produce(&bootstrap, topic, 100);
    consume_and_commit(&bootstrap, "resumers", topic, 40);
    assert_eq!(
        first_offset_after_joining(&bootstrap, "resumers", topic),
        40
    );

    // SIGKILL: the commit was acknowledged, so it was on disk.
    broker.kill();
    let mut broker = Broker::start_in(root.path(), &args, 2);
    let bootstrap = broker.bootstrap();
    assert_eq!(
        first_offset_after_joining(&bootstrap, "resumers", topic),
        40
    );
    consume_and_commit(&bootstrap, "resumers", topic, 70);
    broker.terminate();
    let mut broker = Broker::start_in(root.path(), &args, 2);
    let bootstrap = broker.bootstrap();
    assert_eq!(
        first_offset_after_joining(&bootstrap, "resumers", topic),
        70
    );
    broker.terminate();
}
