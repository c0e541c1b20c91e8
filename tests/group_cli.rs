//! `shardlog group` against a real broker, with librdkafka consumers as the group's members:
//! reset-offsets to every kind of target (a dry run changes nothing; --execute moves where a
//! fresh member resumes), describe's offsets and lag, list, a reset refused while a member is
//! active, and delete.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "orders";
const PER_PARTITION: i64 = 100;
/// 2024-01-01T00:00:00Z. Records 0..50 of each partition carry this timestamp, 50..100 one
/// minute later (the topic keeps them: retention.ms=-1).
const T0: i64 = 1_704_067_200_000;
const CLIENT_ID: &str = "group-cli-test";

fn group_cli(bootstrap: &str, action: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["group", action, "--bootstrap", bootstrap])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run shardlog")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rows of the table printed after its `GROUP ...` header, split on whitespace.
fn table_rows(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("GROUP"));
    lines.next();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn both(offset: i64) -> BTreeMap<i32, i64> {
    [(0, offset), (1, offset)].into_iter().collect()
}

fn produce_stamped(bootstrap: &str) {
    let (producer, log) = tracking_producer(&producer_config(bootstrap), false);
    for p in 0..2 {
        for i in 0..PER_PARTITION {
            let key = format!("k{p}-{i}");
            let ts = if i < 50 { T0 } else { T0 + 60_000 };
            send_base(
                &producer,
                BaseRecord::to(TOPIC)
                    .partition(p)
                    .key(&key)
                    .payload(&key)
                    .timestamp(ts),
            );
        }
    }
    flush_or_panic(&producer, TOPIC, &log);
    assert_delivered(&log, 2 * PER_PARTITION as usize, TOPIC);
}

fn group_consumer(bootstrap: &str, group: &str, offset_reset: &str) -> BaseConsumer {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", CLIENT_ID)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", offset_reset)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100");
    c.create().expect("consumer")
}

/// Reads both partitions to the end as a member of `group`, commits, and leaves.
fn consume_everything_and_commit(bootstrap: &str, group: &str) {
    let c = group_consumer(bootstrap, group, "earliest");
    c.subscribe(&[TOPIC]).expect("subscribe");
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 2 * PER_PARTITION {
        assert!(Instant::now() < deadline, "consumed {got} records");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            m.expect("message");
            got += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).expect("commit");
}

/// Joins `group` as a fresh member with auto.offset.reset=latest (so that it can only start
/// before the end through the committed offsets), returns the first offset it gets on each
/// partition, and leaves without committing.
fn first_offsets(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    let c = group_consumer(bootstrap, group, "latest");
    c.subscribe(&[TOPIC]).expect("subscribe");
    let mut first = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.len() < 2 {
        assert!(Instant::now() < deadline, "first offsets so far: {first:?}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            first.entry(m.partition()).or_insert(m.offset());
        }
    }
    first
}

/// The group's committed offsets as librdkafka reads them (-1: none).
fn committed(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    tpl.add_partition(TOPIC, 1);
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..2)
        .map(|p| {
            let offset = match got.find_partition(TOPIC, p).map(|e| e.offset()) {
                Some(Offset::Offset(n)) => n,
                _ => -1,
            };
            (p, offset)
        })
        .collect()
}

fn wait_for_state(bootstrap: &str, group: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ok(group_cli(bootstrap, "list", &[]), "list");
        if table_rows(&out)
            .iter()
            .any(|r| r.len() == 2 && r[0] == group && r[1] == state)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never became {state}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs reset-offsets and returns the plan it printed (partition -> new offset).
fn reset(bootstrap: &str, group: &str, target: &[&str], execute: bool) -> BTreeMap<i32, i64> {
    let mut args = vec![group, "--topic", TOPIC];
    args.extend_from_slice(target);
    if execute {
        args.push("--execute");
    }
    let out = ok(
        group_cli(bootstrap, "reset-offsets", &args),
        &format!("reset-offsets {args:?}"),
    );
    table_rows(&out)
        .into_iter()
        .map(|r| {
            assert_eq!(r.len(), 4, "plan row {r:?} in\n{out}");
            assert_eq!((r[0].as_str(), r[1].as_str()), (group, TOPIC), "{out}");
            let partition: i32 = r[2].parse().expect("partition");
            let offset: i64 = r[3].parse().expect("new offset");
            (partition, offset)
        })
        .collect()
}

/// describe's rows by partition: (CURRENT-OFFSET, LOG-END-OFFSET, LAG, CLIENT-ID).
fn described(bootstrap: &str, group: &str) -> (String, BTreeMap<i32, [String; 4]>) {
    let out = ok(group_cli(bootstrap, "describe", &[group]), "describe");
    let header = out
        .lines()
        .find(|l| l.starts_with("GROUP"))
        .unwrap_or_else(|| panic!("no table header in\n{out}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]
    );
    let rows = table_rows(&out)
        .into_iter()
        .filter(|r| r.get(1).map(String::as_str) == Some(TOPIC))
        .map(|r| {
            assert_eq!(r.len(), 9, "row {r:?} in\n{out}");
            let partition: i32 = r[2].parse().expect("partition");
            (
                partition,
                [r[3].clone(), r[4].clone(), r[5].clone(), r[8].clone()],
            )
        })
        .collect();
    (out, rows)
}

fn row(current: i64, end: i64, lag: i64, client: &str) -> [String; 4] {
    [
        current.to_string(),
        end.to_string(),
        lag.to_string(),
        client.to_string(),
    ]
}

#[test]
fn reset_offsets_moves_a_stopped_group_to_each_target_and_it_resumes_there() {
    let mut broker = Broker::start(&[("group.initial.rebalance.delay.ms", "0")], 1);
    let b = broker.bootstrap();
    create_topic(&b, TOPIC, 2, &[("retention.ms", "-1")]);
    produce_stamped(&b);
    let group = "resetters";
    consume_everything_and_commit(&b, group);
    wait_for_state(&b, group, "Empty");
    assert_eq!(committed(&b, group), both(PER_PARTITION));

    let targets: [(&[&str], i64); 7] = [
        (&["--to-earliest"][..], 0),
        (&["--to-offset", "30"][..], 30),
        (&["--shift-by", "-10"][..], 20),
        // Beyond the end: kept at the log end offset.
        (&["--shift-by", "1000"][..], 100),
        // The first record stamped at or after that instant.
        (&["--to-datetime", "2024-01-01T00:01:00.000Z"][..], 50),
        // Ten years back: before every record.
        (&["--by-duration", "P3650D"][..], 0),
        (&["--to-latest"][..], 100),
    ];
    for (target, want) in targets {
        let before = committed(&b, group);
        assert_eq!(
            reset(&b, group, target, false),
            both(want),
            "dry run {target:?}"
        );
        assert_eq!(
            committed(&b, group),
            before,
            "the dry run {target:?} changed the committed offsets"
        );
        assert_eq!(
            reset(&b, group, target, true),
            both(want),
            "--execute {target:?}"
        );
        assert_eq!(committed(&b, group), both(want), "after {target:?}");
        if want < PER_PARTITION {
            assert_eq!(
                first_offsets(&b, group),
                both(want),
                "where a fresh member resumes after {target:?}"
            );
            wait_for_state(&b, group, "Empty");
        } else {
            // Nothing left to read: describe shows the group at the end, without lag.
            let (out, rows) = described(&b, group);
            assert!(
                out.starts_with("Consumer group 'resetters' is Empty"),
                "{out}"
            );
            let at_end = row(PER_PARTITION, PER_PARTITION, 0, "-");
            assert_eq!(
                rows,
                [(0, at_end.clone()), (1, at_end)]
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                "{out}"
            );
        }
    }

    // More ways to name a time, as dry runs: a zone offset (00:00:30.5 UTC: the first half
    // is earlier, so the second half's first record), a time before every record, and a
    // duration after every record (no record that late: the end of the log).
    assert_eq!(
        reset(
            &b,
            group,
            &["--to-datetime", "2024-01-01T01:00:30.500+01:00"],
            false
        ),
        both(50)
    );
    assert_eq!(
        reset(&b, group, &["--to-datetime", "2023-12-31T23:59:59"], false),
        both(0)
    );
    assert_eq!(
        reset(&b, group, &["--by-duration", "PT1M"], false),
        both(100)
    );
    // One partition only.
    assert_eq!(
        reset(&b, group, &["--partitions", "1", "--to-offset", "7"], false),
        [(1, 7)].into_iter().collect::<BTreeMap<_, _>>()
    );
    // A target outside the log is clamped; bad values are refused with the option named.
    assert_eq!(reset(&b, group, &["--to-offset", "-5"], false), both(0));
    let bad = failed(
        group_cli(
            &b,
            "reset-offsets",
            &[
                group,
                "--topic",
                TOPIC,
                "--to-datetime",
                "2024-02-30T00:00:00",
            ],
        ),
        "an impossible date",
    );
    assert!(bad.contains("--to-datetime"), "{bad}");
    let bad = failed(
        group_cli(
            &b,
            "reset-offsets",
            &[group, "--topic", TOPIC, "--by-duration", "10 minutes"],
        ),
        "a malformed duration",
    );
    assert!(bad.contains("--by-duration"), "{bad}");
    let bad = failed(
        group_cli(
            &b,
            "reset-offsets",
            &[group, "--topic", TOPIC, "--to-earliest", "--to-latest"],
        ),
        "two targets",
    );
    assert!(bad.contains("cannot be used with"), "{bad}");
    assert_eq!(
        committed(&b, group),
        both(100),
        "nothing above was executed"
    );
    broker.terminate();
}

#[test]
fn describe_list_and_delete_and_no_reset_while_a_member_is_active() {
    let mut broker = Broker::start(&[("group.initial.rebalance.delay.ms", "0")], 1);
    let b = broker.bootstrap();
    create_topic(&b, TOPIC, 2, &[("retention.ms", "-1")]);
    produce_stamped(&b);
    let group = "watched";
    consume_everything_and_commit(&b, group);
    wait_for_state(&b, group, "Empty");
    assert_eq!(
        reset(&b, group, &["--partitions", "0", "--to-offset", "30"], true),
        [(0, 30)].into_iter().collect::<BTreeMap<_, _>>()
    );

    let (out, rows) = described(&b, group);
    assert!(
        out.starts_with("Consumer group 'watched' is Empty with 0 members"),
        "{out}"
    );
    assert_eq!(
        rows,
        [(0, row(30, 100, 70, "-")), (1, row(100, 100, 0, "-"))]
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        "{out}"
    );

    // A member joins: the group is Stable, describe names the member on each partition, and
    // neither a reset nor a delete is allowed.
    let member = group_consumer(&b, group, "latest");
    member.subscribe(&[TOPIC]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(20);
    while member.assignment().map(|a| a.count()).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "the member got no assignment");
        member.poll(Duration::from_millis(50));
    }
    wait_for_state(&b, group, "Stable");
    let (out, rows) = described(&b, group);
    assert!(
        out.starts_with("Consumer group 'watched' is Stable with 1 member"),
        "{out}"
    );
    assert_eq!(rows.len(), 2, "{out}");
    for (p, r) in &rows {
        assert_eq!(
            r[3], CLIENT_ID,
            "partition {p} is owned by the member:\n{out}"
        );
    }
    let refused = failed(
        group_cli(
            &b,
            "reset-offsets",
            &[group, "--topic", TOPIC, "--to-earliest", "--execute"],
        ),
        "reset while a member is active",
    );
    assert!(
        refused.contains(
            "Assignments can only be reset if the group 'watched' is inactive, but the current \
             state is Stable."
        ),
        "{refused}"
    );
    let refused = failed(
        group_cli(&b, "delete", &[group]),
        "delete while a member is active",
    );
    assert!(
        refused.contains("error 68"),
        "NON_EMPTY_GROUP named: {refused}"
    );
    drop(member);
    wait_for_state(&b, group, "Empty");
    assert_eq!(
        committed(&b, group),
        [(0, 30), (1, 100)].into_iter().collect::<BTreeMap<_, _>>(),
        "the refused reset changed nothing"
    );

    let list = ok(group_cli(&b, "list", &[]), "list");
    assert_eq!(
        list.lines()
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["GROUP", "STATE"]),
        "{list}"
    );
    assert!(
        table_rows(&list).contains(&vec![group.to_string(), "Empty".to_string()]),
        "{list}"
    );
    let out = ok(group_cli(&b, "delete", &[group]), "delete");
    assert!(out.contains("'watched'"), "{out}");
    let list = ok(group_cli(&b, "list", &[]), "list after delete");
    assert!(!table_rows(&list).iter().any(|r| r[0] == group), "{list}");
    assert_eq!(committed(&b, group), both(-1), "its offsets went with it");
    let gone = failed(group_cli(&b, "describe", &[group]), "describe after delete");
    assert!(gone.contains("does not exist"), "{gone}");
    let gone = failed(group_cli(&b, "delete", &[group]), "delete again");
    assert!(
        gone.contains("error 69"),
        "GROUP_ID_NOT_FOUND named: {gone}"
    );
    broker.terminate();
}

/// A static member's group as the broker last recorded it (generation, member, assignment)
/// comes back after a crash: describe shows the same member owning the same partitions.
#[test]
fn group_metadata_survives_a_broker_crash() {
    let root = test_tempdir();
    let args = [("group.initial.rebalance.delay.ms", "0")];
    let mut broker = Broker::start_in(root.path(), &args, 1);
    let b = broker.bootstrap();
    create_topic(&b, TOPIC, 2, &[]);
    let group = "remembered";
    {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &b)
            .set("group.id", group)
            .set("group.instance.id", "static-1")
            .set("client.id", CLIENT_ID)
            .set("session.timeout.ms", "60000")
            .set("heartbeat.interval.ms", "500");
        let consumer: BaseConsumer = c.create().expect("consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(15);
        while consumer.assignment().map(|a| a.count()).unwrap_or(0) < 2 {
            assert!(Instant::now() < deadline, "never assigned");
            consumer.poll(Duration::from_millis(50));
        }
        wait_for_state(&b, group, "Stable");
        // A static member does not leave when it closes: the group stays Stable.
    }
    let owners = |b: &str| -> (String, Vec<(String, String)>) {
        let out = ok(group_cli(b, "describe", &[group]), "describe");
        let rows = table_rows(&out)
            .into_iter()
            .map(|r| (r[2].clone(), r[6].clone()))
            .collect();
        (out, rows)
    };
    let (before, owned) = owners(&b);
    assert!(before.contains("is Stable with 1 member"), "{before}");
    assert_eq!(owned.len(), 2, "{before}");
    assert!(owned[0].1 != "-" && owned[0].1 == owned[1].1, "{before}");

    broker.kill();
    let mut broker = Broker::start_in(root.path(), &args, 1);
    let b = broker.bootstrap();
    let (after, owned_after) = owners(&b);
    assert!(after.contains("is Stable with 1 member"), "{after}");
    assert_eq!(owned_after, owned, "{after}");
    broker.terminate();
}
