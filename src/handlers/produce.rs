//! Produce: validates each partition's batches on the connection's shard, then, in the
//! connection's order (its `Turn`), hands them to the owning partitions, whose producer state
//! decides each batch (written, a duplicate answered with its original offsets, or refused).
//! acks=1 is answered once written, acks=-1 once the high watermark passed the batch, acks=0
//! never. Partition errors become Kafka codes here, by request version: a transactional batch
//! whose partition is not in the transaction gets TRANSACTION_ABORTABLE from v11 and
//! INVALID_TXN_STATE before.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::handlers::error_message;
use crate::partition::producer_state::ProducerError;
use crate::partition::AppendError;
use crate::protocol::error::{self, KafkaError};
use crate::record;
use crate::server::order::Turn;
use crate::shard::{OpError, OpKind, OpResult, PartitionOp, Shard};

/// A partition of the request: its index and either the position of its op or its error.
type PartitionSlot = (i32, Result<usize, KafkaError>);

fn failed(version: i16, index: i32, e: &KafkaError) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = e.code;
    if version >= 8 {
        p.error_message = error_message(e);
    }
    p.base_offset = -1;
    p
}

/// The response, `Ok(None)` for acks=0, or `Err` with the reason to close the connection (an
/// acks=0 request that failed: closing is how Kafka tells a client that gets no answers).
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ProduceRequest,
    turn: Option<Turn>,
) -> Result<Option<ProduceResponse>, String> {
    let acks = request.acks;
    let transactional_id = request.transactional_id.map(|t| t.0.to_string());
    let mut layout: Vec<(String, Vec<PartitionSlot>)> = Vec::new();
    let mut ops = Vec::new();
    for t in request.topic_data {
        let name = t.name.0.as_str().to_string();
        let config = shard.log_config(&name);
        let max_bytes = config.as_ref().map(|c| c.max_message_bytes);
        let compacted = config.is_some_and(|c| c.compact);
        let mut parts = Vec::new();
        for p in t.partition_data {
            let slot = if !matches!(acks, -1..=1) {
                Err(KafkaError::new(
                    error::INVALID_REQUIRED_ACKS,
                    format!("acks must be -1, 0 or 1, got {acks}"),
                ))
            } else if let Some(max_bytes) = max_bytes {
                check(p.records, max_bytes, version, compacted, &transactional_id)
                    .await
                    .map_err(|e| e.at(&name, p.index))
                    .map(|batches| {
                        queue(&mut ops, &name, p.index, batches, acks, &transactional_id)
                    })
            } else {
                Err(crate::shard::unknown_partition(&name, p.index))
            };
            parts.push((p.index, slot));
        }
        layout.push((name, parts));
    }
    // Hand the batches to their partitions in the connection's order, then let the next
    // request of the connection go while these are written.
    if let Some(turn) = &turn {
        turn.wait().await;
    }
    let dispatched = shard.dispatch(ops).await;
    drop(turn);
    let outcomes = dispatched.results(shard).await;
    if acks == 0 {
        let failed = layout
            .iter()
            .flat_map(|(_, parts)| parts)
            .any(|(_, slot)| match slot {
                Err(_) => true,
                Ok(i) => outcomes[*i].is_err(),
            });
        return if failed {
            Err("an acks=0 produce request failed".into())
        } else {
            Ok(None)
        };
    }
    let mut response = ProduceResponse::default();
    for (name, parts) in layout {
        let mut topic = TopicProduceResponse::default();
        topic.name = crate::protocol::topic_name(&name);
        for (index, slot) in parts {
            let part = match slot.map(|i| &outcomes[i]) {
                Err(e) => failed(version, index, &e),
                Ok(Ok(OpResult::Produce {
                    base_offset,
                    log_append_time,
                    log_start_offset,
                })) => {
                    let mut p = PartitionProduceResponse::default();
                    p.index = index;
                    p.base_offset = *base_offset;
                    p.log_append_time_ms = *log_append_time;
                    if version >= 5 {
                        p.log_start_offset = *log_start_offset;
                    }
                    p
                }
                Ok(Ok(_)) => failed(
                    version,
                    index,
                    &KafkaError::new(error::NOT_LEADER_OR_FOLLOWER, "unexpected result"),
                ),
                Ok(Err((e, _))) => failed(version, index, &produce_error(e, version)),
            };
            topic.partition_responses.push(part);
        }
        response.responses.push(topic);
    }
    Ok(Some(response))
}

/// Why a partition's records are refused before they reach the partition.
enum Refused {
    Kafka(KafkaError),
    /// A record without a key for a compacted topic (the message names the partition).
    Keyless,
}

impl Refused {
    fn at(self, topic: &str, partition: i32) -> KafkaError {
        match self {
            Refused::Kafka(e) => e,
            Refused::Keyless => KafkaError::new(
                error::INVALID_RECORD,
                format!(
                    "Compacted topic cannot accept message without key in topic partition \
                     {topic}-{partition}."
                ),
            ),
        }
    }
}

/// Validates one partition's records as Kafka does.
async fn check(
    records: Option<bytes::Bytes>,
    max_bytes: usize,
    version: i16,
    compacted: bool,
    transactional_id: &Option<String>,
) -> Result<record::ValidatedBatches, Refused> {
    let refuse = |code, message: &str| Refused::Kafka(KafkaError::new(code, message));
    let records = records.ok_or_else(|| refuse(error::INVALID_RECORD, "no records"))?;
    let batches =
        record::validate_batches(records, max_bytes).map_err(|e| Refused::Kafka(e.into()))?;
    if version < 7 && batches.compression() == record::ZSTD {
        return Err(refuse(
            error::UNSUPPORTED_COMPRESSION_TYPE,
            "zstd needs Produce v7 or later",
        ));
    }
    if is_transactional(&batches) && transactional_id.is_none() {
        return Err(refuse(
            error::INVALID_REQUEST,
            "a transactional batch needs the request's transactional id",
        ));
    }
    if compacted {
        match all_keyed(&batches).await {
            Ok(true) => {}
            Ok(false) => return Err(Refused::Keyless),
            Err(why) => return Err(refuse(error::INVALID_RECORD, &why)),
        }
    }
    Ok(batches)
}

/// The Kafka error for a failed append, for this request version.
fn produce_error(e: &OpError, version: i16) -> KafkaError {
    let mut k = KafkaError::from(e);
    let unverified = matches!(
        e,
        OpError::Append(AppendError::Producer(ProducerError::InvalidTxnState {
            unverified: true,
            ..
        }))
    );
    if unverified && version >= 11 {
        k.code = error::TRANSACTION_ABORTABLE;
    }
    k
}

fn is_transactional(batches: &record::ValidatedBatches) -> bool {
    batches.first().is_some_and(|b| b.is_transactional())
}

/// Adds an append to `ops`; its index there.
fn queue(
    ops: &mut Vec<PartitionOp>,
    topic: &str,
    partition: i32,
    batches: record::ValidatedBatches,
    acks: i16,
    transactional_id: &Option<String>,
) -> usize {
    let transactional_id = transactional_id
        .as_ref()
        .filter(|_| is_transactional(&batches))
        .cloned();
    ops.push(PartitionOp {
        topic: topic.to_string(),
        partition,
        kind: OpKind::Produce {
            batches,
            acks,
            transactional_id,
        },
    });
    ops.len() - 1
}

/// Most bytes a compressed batch for a compacted topic may expand to when its keys are checked.
const KEY_CHECK_LIMIT: usize = 64 << 20;

/// Whether every record has a key (a compacted topic refuses records without one, as Kafka
/// does); an error naming the problem if the records are malformed. A compressed batch is
/// decompressed off the executor.
async fn all_keyed(batches: &record::ValidatedBatches) -> Result<bool, String> {
    let (records, ranges) = (batches.records.clone(), batches.batches.clone());
    let check = move || -> Result<bool, String> {
        for &(s, e) in &ranges {
            if !record::compact::all_keyed(&records[s..e], KEY_CHECK_LIMIT)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if batches.compression() == 0 {
        check()
    } else {
        glommio::executor().spawn_blocking(check).await
    }
}
