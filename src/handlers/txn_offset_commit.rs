//! TxnOffsetCommit: a transactional producer's consumer offsets, sent to the group's
//! coordinator, which writes them in a transactional batch to the group's `__consumer_offsets`
//! partition (verified to be in the producer's transaction) and holds them pending until the
//! transaction's marker commits or drops them. v3+ carries the consumer's member id and
//! generation (KIP-447), checked as Kafka does; a write under an older producer epoch is
//! answered INVALID_PRODUCER_EPOCH.

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::protocol::error;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let meta = shard.metadata();
    let mut verdicts = Vec::new();
    let mut offsets = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            verdicts.push(if meta.shard_of(&t.name.0, p.partition_index).is_none() {
                Err(error::UNKNOWN_TOPIC_OR_PARTITION)
            } else {
                offsets.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    if version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    p.committed_metadata.as_deref().unwrap_or("").to_string(),
                ));
                Ok(offsets.len() - 1)
            });
        }
    }
    let (top, codes) = if offsets.is_empty() {
        (error::NONE, Vec::new())
    } else {
        let call = GroupCall::TxnCommit {
            transactional_id: request.transactional_id.0.to_string(),
            producer_id: request.producer_id.0,
            epoch: request.producer_epoch,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            generation: request.generation_id,
            offsets,
        };
        match shard.group_call(&request.group_id.0, call).await {
            GroupAnswer::Codes(top, codes) => (top, codes),
            _ => (error::COORDINATOR_NOT_AVAILABLE, Vec::new()),
        }
    };
    let mut verdicts = verdicts.into_iter();
    let mut r = TxnOffsetCommitResponse::default();
    for t in request.topics {
        let mut topic = TxnOffsetCommitResponseTopic::default();
        topic.name = t.name;
        for p in t.partitions {
            let mut part = TxnOffsetCommitResponsePartition::default();
            part.partition_index = p.partition_index;
            part.error_code = match verdicts.next() {
                Some(Err(code)) => code,
                Some(Ok(i)) if top == error::NONE => codes.get(i).copied().unwrap_or(top),
                _ => top,
            };
            topic.partitions.push(part);
        }
        r.topics.push(topic);
    }
    r
}
