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
    const N: usize = 300_000;
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

/// Polls every consumer until each owns the expected number of partitions.
fn wait_for_assignment(consumers: &[&BaseConsumer], expected: &[usize], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let counts: Vec<usize> = consumers
            .iter()
            .map(|c| {
                c.poll(Duration::from_millis(20));
                c.assignment().map(|a| a.count()).unwrap_or(0)
            })
            .collect();
        if counts == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "assignments {counts:?}, expected {expected:?}"
        );
    }
}

#[test]
fn a_consumer_that_leaves_hands_its_partitions_over() {
    let mut broker = Broker::start(&[("group.initial.rebalance.delay.ms", "0")], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "handover", 4, &[]);
    let a = group_consumer(&bootstrap, "handover");
    let b = group_consumer(&bootstrap, "handover");
    a.subscribe(&["handover"]).expect("subscribe");
    b.subscribe(&["handover"]).expect("subscribe");
    wait_for_assignment(&[&a, &b], &[2, 2], Duration::from_secs(30));
    // Closing sends LeaveGroup: the other member takes over at once, not after a timeout.
    let left = Instant::now();
    drop(b);
    wait_for_assignment(&[&a], &[4], Duration::from_secs(5));
    eprintln!("hand-over took {:?}", left.elapsed());
    drop(a);
    broker.terminate();
}

/// A member that joined and then went silent (as a killed process does) is evicted after its
/// session timeout, and a librdkafka consumer then gets every partition.
#[test]
fn a_silent_member_is_evicted_after_the_session_timeout() {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{GroupId, JoinGroupRequest, SyncGroupRequest};
    use kafka_protocol::protocol::StrBytes;
    use shardlog::client::Client;

    let mut broker = Broker::start(&[("group.initial.rebalance.delay.ms", "0")], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "evict", 3, &[]);
    // The silent member: joins with a 6 s session, syncs, never heartbeats.
    let mut raw = Client::connect(&bootstrap).expect("connect");
    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(StrBytes::from_static_str("evict"));
    join.session_timeout_ms = 6000;
    join.rebalance_timeout_ms = 30000;
    join.protocol_type = StrBytes::from_static_str("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    join.protocols = vec![p];
    let first = raw.send(&join, 5).expect("join");
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    join.member_id = first.member_id.clone();
    let joined = raw.send(&join, 5).expect("join");
    assert_eq!(joined.error_code, 0);
    let mut sync = SyncGroupRequest::default();
    sync.group_id = join.group_id.clone();
    sync.generation_id = joined.generation_id;
    sync.member_id = joined.member_id.clone();
    assert_eq!(raw.send(&sync, 3).expect("sync").error_code, 0);
    let silent_since = Instant::now();

    let c = group_consumer(&bootstrap, "evict");
    c.subscribe(&["evict"]).expect("subscribe");
    wait_for_assignment(&[&c], &[3], Duration::from_secs(20));
    let took = silent_since.elapsed();
    assert!(
        took >= Duration::from_millis(5500),
        "the silent member was dropped before its session ended ({took:?})"
    );
    drop(c);
    drop(raw);
    broker.terminate();
}

#[test]
fn cooperative_sticky_keeps_the_partitions_a_member_still_owns() {
    let mut broker = Broker::start(&[("group.initial.rebalance.delay.ms", "0")], 1);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "coop", 6, &[]);
    let coop = |b: &str| -> BaseConsumer {
        let mut c = rdkafka::config::ClientConfig::new();
        c.set("bootstrap.servers", b)
            .set("group.id", "coop")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("enable.auto.commit", "false");
        c.create().expect("consumer")
    };
    let owned = |c: &BaseConsumer| -> HashSet<i32> {
        c.assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    };
    let a = coop(&bootstrap);
    a.subscribe(&["coop"]).expect("subscribe");
    wait_for_assignment(&[&a], &[6], Duration::from_secs(30));
    let before = owned(&a);
    let b = coop(&bootstrap);
    b.subscribe(&["coop"]).expect("subscribe");
    // Watch a's assignment through the incremental rebalance: it only ever shrinks to what
    // it keeps; nothing it keeps is revoked and handed back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lowest = before.clone();
    loop {
        a.poll(Duration::from_millis(20));
        b.poll(Duration::from_millis(20));
        let now_a = owned(&a);
        assert!(
            now_a.is_subset(&before),
            "a gained {now_a:?} beyond {before:?}"
        );
        if now_a.len() < lowest.len() {
            lowest = now_a.clone();
        }
        if now_a.len() == 3 && owned(&b).len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a {:?}, b {:?}",
            now_a,
            owned(&b)
        );
    }
    assert_eq!(lowest.len(), 3, "a never dropped below the 3 it keeps");
    assert!(owned(&a).is_disjoint(&owned(&b)));
    drop(b);
    drop(a);
    broker.terminate();
}
