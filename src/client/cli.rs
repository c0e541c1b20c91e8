//! CLI commands on the client: `topic create|list|describe|delete`, `produce`, `consume`, and
//! the dispatch of `group` (`groups.rs`), `transactions` and `producers` (`transactions.rs`).

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::Bytes;
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

use super::{encode_batch, Client};

#[derive(Args, Clone)]
pub struct Conn {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(super) bootstrap: String,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create, list, describe or delete topics.
    Topic {
        #[command(subcommand)]
        action: TopicAction,
    },
    /// List, describe, delete consumer groups, or reset their committed offsets.
    Group {
        #[command(subcommand)]
        action: super::groups::GroupAction,
    },
    /// List or describe transactions (as kafka-transactions).
    Transactions {
        #[command(subcommand)]
        action: super::transactions::TransactionsAction,
    },
    /// The active producers of a topic's partitions (kafka-transactions describe-producers).
    Producers {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        /// One partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Produce lines from stdin, one record each (optionally "key<sep>value").
    Produce {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        /// Partition to write every record to (default: keyed records by the murmur2 hash of
        /// their key, as the Java producer does; unkeyed ones sticky, a batch per partition).
        #[arg(long)]
        partition: Option<i32>,
        /// Split each line at the first occurrence into key and value.
        #[arg(long)]
        key_separator: Option<String>,
        /// acks: -1, 0 or 1.
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        acks: i16,
        /// none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none")]
        compression: String,
    },
    /// Print records as "partition offset key value" lines.
    Consume {
        #[command(flatten)]
        conn: Conn,
        topic: String,
        /// One partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        /// Start at the beginning (default), the end, or a numeric offset.
        #[arg(long, default_value = "beginning")]
        from: String,
        /// Stop after this many records (default: when caught up).
        #[arg(long)]
        count: Option<usize>,
        /// With --count: how long to wait for more records, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// read_uncommitted (default, as kafka-console-consumer) or read_committed.
        #[arg(long, default_value = "read_uncommitted")]
        isolation_level: String,
    },
}

#[derive(Subcommand)]
pub enum TopicAction {
    Create {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Topic config, e.g. --config retention.ms=60000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    List {
        #[command(flatten)]
        conn: Conn,
    },
    Describe {
        #[command(flatten)]
        conn: Conn,
        name: String,
    },
    Delete {
        #[command(flatten)]
        conn: Conn,
        name: String,
    },
}

pub(super) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(super) fn check(code: i16, what: &str, message: Option<&StrBytes>) -> anyhow::Result<()> {
    if code != 0 {
        anyhow::bail!(
            "{what}: error {code}{}",
            message
                .map(|m| format!(" ({})", m.as_str()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn partitions_of(client: &mut Client, topic: &str) -> anyhow::Result<Vec<i32>> {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(s(topic)));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let resp = client.send(&req, 12)?;
    let topic_meta = resp
        .topics
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no metadata for {topic}"))?;
    check(topic_meta.error_code, topic, None)?;
    Ok(topic_meta
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect())
}

pub(super) fn list_offset(
    client: &mut Client,
    topic: &str,
    partition: i32,
    timestamp: i64,
    isolation_level: i8,
) -> anyhow::Result<i64> {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = isolation_level;
    req.topics = vec![t];
    let resp = client.send(&req, 7)?;
    let part = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| anyhow::anyhow!("empty ListOffsets answer"))?;
    check(part.error_code, &format!("{topic}-{partition}"), None)?;
    Ok(part.offset)
}

pub fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Topic { action } => topic(action),
        ClientCommand::Group { action } => super::groups::run(action),
        ClientCommand::Transactions { action } => super::transactions::run(action),
        ClientCommand::Producers {
            conn,
            topic,
            partition,
        } => super::transactions::producers(&conn, &topic, partition),
        ClientCommand::Produce {
            conn,
            topic,
            partition,
            key_separator,
            acks,
            compression,
        } => {
            let compression = match compression.as_str() {
                "none" => Compression::None,
                "gzip" => Compression::Gzip,
                "snappy" => Compression::Snappy,
                "lz4" => Compression::Lz4,
                "zstd" => Compression::Zstd,
                other => anyhow::bail!("unknown compression '{other}'"),
            };
            let mut client = Client::connect(&conn.bootstrap)?;
            let count = partitions_of(&mut client, &topic)?.len().max(1);
            let mut sticky = super::partitioner::StickyPartitioner::new(
                count,
                16 << 10,
                std::process::id() as u64,
            );
            let stdin = std::io::stdin();
            let mut pending: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>> = BTreeMap::new();
            let mut sent = 0usize;
            let mut flush = |client: &mut Client,
                             pending: &mut BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>>|
             -> anyhow::Result<()> {
                if pending.is_empty() {
                    return Ok(());
                }
                let mut t = TopicProduceData::default();
                t.name = TopicName(s(&topic));
                for (&index, records) in pending.iter() {
                    let mut p = PartitionProduceData::default();
                    p.index = index;
                    p.records = Some(encode_batch(records, compression)?);
                    t.partition_data.push(p);
                }
                let mut req = ProduceRequest::default();
                req.acks = acks;
                req.timeout_ms = 30_000;
                req.topic_data = vec![t];
                if acks == 0 {
                    client.send_only(&req, 9)?;
                } else {
                    let resp = client.send(&req, 9)?;
                    for t in &resp.responses {
                        for p in &t.partition_responses {
                            check(
                                p.error_code,
                                &format!("{topic}-{}", p.index),
                                p.error_message.as_ref(),
                            )?;
                        }
                    }
                }
                sent += pending.values().map(Vec::len).sum::<usize>();
                pending.clear();
                Ok(())
            };
            let mut queued = 0usize;
            for line in stdin.lock().lines() {
                let line = line?;
                let record = match key_separator
                    .as_deref()
                    .and_then(|sep| line.split_once(sep))
                {
                    Some((k, v)) => (Some(Bytes::from(k.to_string())), Bytes::from(v.to_string())),
                    None => (None, Bytes::from(line)),
                };
                let target = match (partition, &record.0) {
                    (Some(p), _) => p,
                    (None, Some(key)) => super::partitioner::partition_for_key(key, count) as i32,
                    (None, None) => sticky.next(record.1.len()) as i32,
                };
                pending.entry(target).or_default().push(record);
                queued += 1;
                if queued >= 1000 {
                    flush(&mut client, &mut pending)?;
                    queued = 0;
                }
            }
            flush(&mut client, &mut pending)?;
            eprintln!("produced {sent} records to {topic}");
            Ok(())
        }
        ClientCommand::Consume {
            conn,
            topic,
            partition,
            from,
            count,
            timeout_ms,
            isolation_level,
        } => {
            let isolation: i8 = match isolation_level.as_str() {
                "read_uncommitted" => 0,
                "read_committed" => 1,
                other => anyhow::bail!(
                    "--isolation-level: '{other}' is not read_uncommitted or read_committed"
                ),
            };
            let mut client = Client::connect(&conn.bootstrap)?;
            let parts = match partition {
                Some(p) => vec![p],
                None => partitions_of(&mut client, &topic)?,
            };
            let mut positions = BTreeMap::new();
            let mut ends = BTreeMap::new();
            for &p in &parts {
                let start = match from.as_str() {
                    "beginning" => list_offset(&mut client, &topic, p, -2, isolation)?,
                    "end" => list_offset(&mut client, &topic, p, -1, isolation)?,
                    n => n.parse().map_err(|_| {
                        anyhow::anyhow!("--from: '{n}' is not beginning, end or an offset")
                    })?,
                };
                positions.insert(p, start);
                ends.insert(p, list_offset(&mut client, &topic, p, -1, isolation)?);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
            let mut printed = 0usize;
            loop {
                let caught_up = positions.iter().all(|(p, pos)| pos >= &ends[p]);
                if count.is_some_and(|c| printed >= c) || (count.is_none() && caught_up) {
                    break;
                }
                if count.is_some() && std::time::Instant::now() >= deadline {
                    break;
                }
                let mut ft = FetchTopic::default();
                ft.topic = TopicName(s(&topic));
                ft.partitions = positions
                    .iter()
                    .map(|(&p, &off)| {
                        let mut fp = FetchPartition::default();
                        fp.partition = p;
                        fp.fetch_offset = off;
                        fp.partition_max_bytes = 1 << 20;
                        fp.current_leader_epoch = -1;
                        fp.log_start_offset = -1;
                        fp.last_fetched_epoch = -1;
                        fp
                    })
                    .collect();
                let mut req = FetchRequest::default();
                req.replica_id = BrokerId(-1);
                req.max_wait_ms = if count.is_some() { 500 } else { 0 };
                req.min_bytes = 1;
                req.max_bytes = 16 << 20;
                req.session_epoch = -1;
                req.isolation_level = isolation;
                req.topics = vec![ft];
                let resp = client.send(&req, 12)?;
                for t in resp.responses {
                    for p in t.partitions {
                        check(
                            p.error_code,
                            &format!("{topic}-{}", p.partition_index),
                            None,
                        )?;
                        let Some(pos) = positions.get_mut(&p.partition_index) else {
                            continue;
                        };
                        let records = p.records.unwrap_or_default();
                        let end = super::batches_end(&records);
                        let aborted: Option<Vec<(i64, i64)>> = p.aborted_transactions.map(|a| {
                            a.iter()
                                .map(|t| (t.producer_id.0, t.first_offset))
                                .collect()
                        });
                        for r in super::committed_records(records, aborted.as_deref())? {
                            if r.offset < *pos || count.is_some_and(|c| printed >= c) {
                                continue;
                            }
                            *pos = r.offset + 1;
                            printed += 1;
                            let key = r
                                .key
                                .map(|k| String::from_utf8_lossy(&k).into_owned())
                                .unwrap_or_default();
                            let value = r
                                .value
                                .map(|v| String::from_utf8_lossy(&v).into_owned())
                                .unwrap_or_default();
                            println!("{}\t{}\t{key}\t{value}", p.partition_index, r.offset);
                        }
                        if let Some(end) = end {
                            *pos = (*pos).max(end);
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

fn topic(action: TopicAction) -> anyhow::Result<()> {
    match action {
        TopicAction::Create {
            conn,
            name,
            partitions,
            configs,
        } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            let mut t = CreatableTopic::default();
            t.name = TopicName(s(&name));
            t.num_partitions = partitions;
            t.replication_factor = -1;
            for kv in configs {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--config {kv}: expected key=value"))?;
                let mut c = CreatableTopicConfig::default();
                c.name = s(k);
                c.value = Some(s(v));
                t.configs.push(c);
            }
            let mut req = CreateTopicsRequest::default();
            req.topics = vec![t];
            req.timeout_ms = 30_000;
            let resp = client.send(&req, 7)?;
            for r in resp.topics {
                check(r.error_code, &name, r.error_message.as_ref())?;
                println!("created topic {name} with {} partitions", r.num_partitions);
            }
            Ok(())
        }
        TopicAction::List { conn } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            let mut req = MetadataRequest::default();
            req.topics = None;
            for t in client.send(&req, 12)?.topics {
                println!(
                    "{}\t{} partitions",
                    t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    t.partitions.len()
                );
            }
            Ok(())
        }
        TopicAction::Describe { conn, name } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            let parts = partitions_of(&mut client, &name)?;
            println!("topic {name}: {} partitions", parts.len());
            for p in parts {
                let start = list_offset(&mut client, &name, p, -2, 0)?;
                let end = list_offset(&mut client, &name, p, -1, 0)?;
                let stable = list_offset(&mut client, &name, p, -1, 1)?;
                println!(
                    "  partition {p}: log start {start}, last stable offset {stable}, high \
                     watermark {end}"
                );
            }
            let mut res = DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s(&name);
            res.configuration_keys = None;
            let mut req = DescribeConfigsRequest::default();
            req.resources = vec![res];
            for r in client.send(&req, 4)?.results {
                check(r.error_code, &name, r.error_message.as_ref())?;
                for c in r.configs {
                    let marker = if c.config_source == 1 {
                        " (override)"
                    } else {
                        ""
                    };
                    println!(
                        "  {}={}{marker}",
                        c.name.as_str(),
                        c.value.map(|v| v.to_string()).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        TopicAction::Delete { conn, name } => {
            let mut client = Client::connect(&conn.bootstrap)?;
            let mut t = DeleteTopicState::default();
            t.name = Some(TopicName(s(&name)));
            let mut req = DeleteTopicsRequest::default();
            req.topics = vec![t];
            req.timeout_ms = 30_000;
            for r in client.send(&req, 6)?.responses {
                check(r.error_code, &name, r.error_message.as_ref())?;
            }
            println!("deleted topic {name}");
            Ok(())
        }
    }
}
