//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), latest
//! tiered (-5: none, there is no tiered storage; v9+), or the first
//! offset whose record timestamp is at or after a given time (through the time index). Under
//! read_committed (`isolation_level` 1) latest is the last stable offset, and no answer lies at
//! or past it; under read_uncommitted the same holds for the high watermark.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::protocol::error::KafkaError;
use crate::shard::{OpKind, OpResult, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let isolation = crate::partition::Isolation::from_level(request.isolation_level);
    let ops = super::ops_per_partition(
        &request.topics,
        |t| (&t.name, &t.partitions),
        |p| {
            (
                p.partition_index,
                OpKind::ListOffsets {
                    timestamp: p.timestamp,
                    isolation,
                },
            )
        },
    );
    let mut outcomes = shard.run_partition_ops(ops).await.into_iter();
    let mut response = ListOffsetsResponse::default();
    for t in request.topics {
        let mut topic = ListOffsetsTopicResponse::default();
        topic.name = t.name;
        for p in t.partitions {
            let mut part = ListOffsetsPartitionResponse::default();
            part.partition_index = p.partition_index;
            if version >= 4 {
                part.leader_epoch = crate::storage::log::LEADER_EPOCH;
            }
            match outcomes.next() {
                Some(Ok(OpResult::Offset { offset, timestamp })) => {
                    part.offset = offset;
                    part.timestamp = timestamp;
                }
                Some(Err((e, _))) => {
                    part.error_code = KafkaError::from(&e).code;
                    part.offset = -1;
                    part.timestamp = -1;
                }
                _ => part.error_code = crate::protocol::error::UNKNOWN_SERVER_ERROR,
            }
            topic.partitions.push(part);
        }
        response.topics.push(topic);
    }
    response
}
