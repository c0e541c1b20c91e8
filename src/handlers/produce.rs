//! Produce: validates each partition's batches on the connection's shard, then appends them on
//! the owning shards. acks=1 is answered once written, acks=-1 once fdatasync'ed, acks=0 never.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::handlers::error_message;
use crate::protocol::error::{self, KafkaError};
use crate::record;
use crate::shard::{OpKind, OpResult, PartitionOp, Shard};

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
) -> Result<Option<ProduceResponse>, String> {
    let acks = request.acks;
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
                match p.records.map(|r| record::validate_batches(r, max_bytes)) {
                    Some(Ok(batches)) if version < 7 && batches.compression() == record::ZSTD => {
                        Err(KafkaError::new(
                            error::UNSUPPORTED_COMPRESSION_TYPE,
                            "zstd needs Produce v7 or later",
                        ))
                    }
                    Some(Ok(batches)) if compacted => match all_keyed(&batches).await {
                        Ok(true) => Ok(queue(&mut ops, &name, p.index, batches, acks)),
                        Ok(false) => Err(KafkaError::new(
                            error::INVALID_RECORD,
                            format!(
                                "Compacted topic cannot accept message without key in topic \
                                 partition {name}-{}.",
                                p.index
                            ),
                        )),
                        Err(why) => Err(KafkaError::new(error::INVALID_RECORD, why)),
                    },
                    Some(Ok(batches)) => Ok(queue(&mut ops, &name, p.index, batches, acks)),
                    Some(Err(e)) => Err(e.into()),
                    None => Err(KafkaError::new(error::INVALID_RECORD, "no records")),
                }
            } else {
                Err(crate::shard::unknown_partition(&name, p.index))
            };
            parts.push((p.index, slot));
        }
        layout.push((name, parts));
    }
    let outcomes = shard.run_partition_ops(ops).await;
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
                    &KafkaError::new(error::UNKNOWN_SERVER_ERROR, "unexpected result"),
                ),
                Ok(Err((e, _))) => failed(version, index, e),
            };
            topic.partition_responses.push(part);
        }
        response.responses.push(topic);
    }
    Ok(Some(response))
}

/// Adds an append to `ops`; its index there.
fn queue(
    ops: &mut Vec<PartitionOp>,
    topic: &str,
    partition: i32,
    batches: record::ValidatedBatches,
    acks: i16,
) -> usize {
    ops.push(PartitionOp {
        topic: topic.to_string(),
        partition,
        kind: OpKind::Produce {
            batches,
            sync: acks == -1,
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
