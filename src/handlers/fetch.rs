//! Fetch: reads each partition on its owning shard; if fewer than `min_bytes` came back it
//! waits (up to `max_wait_ms`) for any of the partitions to get data, then reads again.
//! `max_bytes` caps the whole response, `partition_max_bytes` each partition, but the first
//! batch with data is always whole (KIP-74). No fetch sessions: the answer's session id is 0.
//! Under read_uncommitted a reader sees up to the high watermark; under read_committed
//! (`isolation_level` 1) up to the last stable offset, with the aborted transactions of what it
//! read listed so it can drop their records (`aborted_transactions`, null otherwise).
//! From v13 on topics are named by id (an unknown one gets UNKNOWN_TOPIC_ID); v15's replica
//! state and v17's replica directory id matter only to followers, and the KIP-951 leader hints
//! of v16 (tagged fields) are left out since this broker leads every partition it has.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};

use crate::partition::Isolation;
use crate::protocol::error::KafkaError;
use crate::protocol::fetch_frame::Beside;
use crate::shard::{OpKind, OpOutcome, OpResult, PartitionOp, Shard, ShardRequest};
use crate::storage::log::Fetched;

struct Wanted {
    /// Empty for a topic id (Fetch v13+) that names no topic.
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// The high watermark the last read saw: waiting means waiting for data past it.
    seen: i64,
}

fn ops(wanted: &[Wanted], isolation: Isolation) -> Vec<PartitionOp> {
    wanted
        .iter()
        .map(|w| PartitionOp {
            topic: w.topic.clone(),
            partition: w.partition,
            kind: OpKind::Fetch {
                offset: w.offset,
                max_bytes: w.max_bytes,
                isolation,
            },
        })
        .collect()
}

fn bytes_of(outcomes: &[OpOutcome]) -> usize {
    outcomes
        .iter()
        .map(|o| match o {
            Ok(OpResult::Fetch(d)) => d.records.len(),
            _ => 0,
        })
        .sum()
}

/// Waits until a partition of the request has data past what the last read saw, or `wait`
/// passes. (Waiting only for data past the fetch offset would return at once whenever some,
/// but fewer than `min_bytes`, is there, and the handler would spin.)
async fn wait_for_data(shard: &Rc<Shard>, wanted: &[Wanted], wait: Duration) {
    let meta = shard.metadata();
    let mut per_shard: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); shard.count];
    for w in wanted {
        if let Some(s) = meta.shard_of(&w.topic, w.partition) {
            per_shard[s].push((w.topic.clone(), w.partition, w.seen));
        }
    }
    let mut waits = Vec::new();
    for (s, parts) in per_shard.into_iter().enumerate() {
        if parts.is_empty() {
            continue;
        }
        if s == shard.id {
            let me = Rc::clone(shard);
            waits.push(async move { me.wait_local(&parts, wait).await }.boxed_local());
        } else {
            let me = Rc::clone(shard);
            waits.push(
                async move {
                    me.call(s, ShardRequest::WaitForData { parts, wait }).await;
                }
                .boxed_local(),
            );
        }
    }
    if waits.is_empty() {
        glommio::timer::sleep(wait).await;
    } else {
        futures::future::select_all(waits).await;
    }
}

/// The response, and for each of its partitions in order the records that travel beside the
/// message (a file range, or pieces of the shard's buffers); its `records` field is then unset.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: FetchRequest,
) -> (FetchResponse, Vec<Option<Beside>>) {
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    // From v13 on topics come by id: each is named from the metadata snapshot, and one that
    // names no topic gets UNKNOWN_TOPIC_ID.
    let names: Vec<Option<String>> = if version >= 13 {
        let meta = shard.metadata();
        request
            .topics
            .iter()
            .map(|t| meta.topic_by_id(&t.topic_id).map(|m| m.name.clone()))
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| Some(t.topic.0.as_str().to_string()))
            .collect()
    };
    let mut wanted = Vec::new();
    for (t, name) in request.topics.iter().zip(&names) {
        for p in &t.partitions {
            wanted.push(Wanted {
                topic: name.clone().unwrap_or_default(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                seen: p.fetch_offset,
            });
        }
    }
    let isolation = Isolation::from_level(request.isolation_level);
    let mut outcomes = shard.run_partition_ops(ops(&wanted, isolation)).await;
    loop {
        let now = Instant::now();
        let any_error = outcomes.iter().any(|o| o.is_err());
        if bytes_of(&outcomes) >= min_bytes || now >= deadline || any_error || shard.stopping.get()
        {
            break;
        }
        for (w, o) in wanted.iter_mut().zip(&outcomes) {
            if let Ok(OpResult::Fetch(d)) = o {
                w.seen = w.seen.max(d.offsets.high_watermark);
            }
        }
        wait_for_data(shard, &wanted, deadline - now).await;
        outcomes = shard.run_partition_ops(ops(&wanted, isolation)).await;
    }
    let mut response = FetchResponse::default();
    let mut files = Vec::new();
    let mut total = 0usize;
    let mut outcomes = outcomes.into_iter();
    for (t, name) in request.topics.into_iter().zip(names) {
        let known = name.is_some();
        let mut topic = FetchableTopicResponse::default();
        topic.topic = t.topic.clone();
        topic.topic_id = t.topic_id;
        for p in t.partitions {
            let mut part = PartitionData::default();
            part.partition_index = p.partition;
            part.preferred_read_replica = BrokerId(-1);
            part.records = Some(Bytes::new());
            part.aborted_transactions = None;
            let mut file = None;
            match outcomes.next() {
                Some(Ok(OpResult::Fetch(d))) => {
                    part.high_watermark = d.offsets.high_watermark;
                    part.last_stable_offset = d.offsets.last_stable;
                    if version >= 5 {
                        part.log_start_offset = d.offsets.log_start;
                    }
                    part.aborted_transactions = d.aborted.map(|list| {
                        list.into_iter()
                            .map(|(producer_id, first_offset)| {
                                let mut a = AbortedTransaction::default();
                                a.producer_id = ProducerId(producer_id);
                                a.first_offset = first_offset;
                                a
                            })
                            .collect()
                    });
                    // What fits in the response's `max_bytes`: whole batches from memory, a
                    // file range cut at the limit (as Kafka's file slices are). The first
                    // batch of the response goes whole even past the limit (KIP-74); a later
                    // partition whose first batch does not fit gets no records.
                    let room = max_bytes.saturating_sub(total);
                    match d.records {
                        Fetched::Memory(b) => {
                            let mut end = crate::record::whole_batches_within(&b, room);
                            if total == 0 && end == 0 {
                                end = crate::record::framed_len(&b).unwrap_or(0).min(b.len());
                            }
                            let b = b.slice(..end);
                            total += b.len();
                            part.records = Some(b);
                        }
                        Fetched::File(mut f) => {
                            f.len = f.len.min(allowed(total, room, f.first_batch_len));
                            total += f.len;
                            if f.len > 0 {
                                part.records = None;
                                file = Some(Beside::File(f));
                            }
                        }
                        Fetched::Buffers(mut c) => {
                            c.truncate(allowed(total, room, c.first_batch_len));
                            total += c.len;
                            if c.len > 0 {
                                part.records = None;
                                file = Some(Beside::Buffers(c));
                            }
                        }
                    }
                }
                Some(Err(_)) if !known => {
                    part.error_code = crate::protocol::error::UNKNOWN_TOPIC_ID;
                    part.high_watermark = -1;
                    part.last_stable_offset = -1;
                    part.log_start_offset = -1;
                }
                Some(Err((e, offsets))) => {
                    part.error_code = KafkaError::from(&e).code;
                    part.high_watermark = offsets.map_or(-1, |o| o.high_watermark);
                    part.last_stable_offset = offsets.map_or(-1, |o| o.last_stable);
                    if version >= 5 {
                        part.log_start_offset = offsets.map_or(-1, |o| o.log_start);
                    }
                }
                _ => {
                    part.error_code = crate::protocol::error::NOT_LEADER_OR_FOLLOWER;
                    part.high_watermark = -1;
                    part.last_stable_offset = -1;
                }
            }
            topic.partitions.push(part);
            files.push(file);
        }
        response.responses.push(topic);
    }
    (response, files)
}

/// How much of a partition's range (whose first batch is `first_batch_len`) fits with `total`
/// bytes already in the response and `room` left: the response's first batch goes whole even
/// past the limit (KIP-74); a later partition whose first batch does not fit gets nothing.
fn allowed(total: usize, room: usize, first_batch_len: usize) -> usize {
    if total == 0 {
        room.max(first_batch_len)
    } else if room < first_batch_len {
        0
    } else {
        room
    }
}
