//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), or the first
//! offset whose record timestamp is at or after a given time (through the time index).

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::shard::{OpKind, OpResult, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let ops = super::ops_per_partition(
        &request.topics,
        |t| (&t.name, &t.partitions),
        |p| {
            (
                p.partition_index,
                OpKind::ListOffsets {
                    timestamp: p.timestamp,
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
                    part.error_code = e.code;
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
