//! OffsetForLeaderEpoch: the end offset of a leader epoch. A single broker has only epoch 0,
//! which ends at the log end; a later epoch is unknown, and a client that believes the current
//! epoch is newer than 0 is told UNKNOWN_LEADER_EPOCH.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::protocol::error;
use crate::shard::{OpKind, OpResult, Shard};
use crate::storage::log::LEADER_EPOCH;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let ops = super::ops_per_partition(
        &request.topics,
        |t| (&t.topic, &t.partitions),
        |p| (p.partition, OpKind::Info),
    );
    let mut outcomes = shard.run_partition_ops(ops).await.into_iter();
    let mut response = OffsetForLeaderEpochResponse::default();
    for t in request.topics {
        let mut topic = OffsetForLeaderTopicResult::default();
        topic.topic = t.topic;
        for p in t.partitions {
            let mut part = EpochEndOffset::default();
            part.partition = p.partition;
            part.leader_epoch = -1;
            part.end_offset = -1;
            match outcomes.next() {
                Some(Ok(OpResult::Info(offsets))) => {
                    if p.current_leader_epoch > LEADER_EPOCH {
                        part.error_code = error::UNKNOWN_LEADER_EPOCH;
                    } else if p.leader_epoch == LEADER_EPOCH {
                        part.leader_epoch = LEADER_EPOCH;
                        part.end_offset = offsets.log_end;
                    }
                }
                Some(Err((e, _))) => part.error_code = error::KafkaError::from(&e).code,
                _ => part.error_code = error::UNKNOWN_SERVER_ERROR,
            }
            topic.partitions.push(part);
        }
        response.topics.push(topic);
    }
    response
}
