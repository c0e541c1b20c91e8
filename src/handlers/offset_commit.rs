//! OffsetCommit: checks the committer's membership and generation with the group's
//! coordinator and stores the offsets there. A commit with generation -1 and no member id
//! comes from a consumer that assigns partitions itself, accepted while the group is empty.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state;
use crate::protocol::error;
use crate::shard::Shard;

/// Kafka's `offset.metadata.max.bytes` default.
const MAX_METADATA_BYTES: usize = 4096;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let meta = shard.metadata();
    // Per partition: an error found here, or an index into the offsets sent on.
    let mut verdicts = Vec::new();
    let mut offsets = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            let md = p.committed_metadata.as_deref().unwrap_or("");
            let verdict = if meta.shard_of(&t.name.0, p.partition_index).is_none() {
                Err(error::UNKNOWN_TOPIC_OR_PARTITION)
            } else if md.len() > MAX_METADATA_BYTES {
                Err(OFFSET_METADATA_TOO_LARGE)
            } else {
                offsets.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    if version >= 6 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    md.to_string(),
                ));
                Ok(offsets.len() - 1)
            };
            verdicts.push(verdict);
        }
    }
    let call = GroupCall::Commit {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: request.generation_id_or_member_epoch,
        offsets,
    };
    let (top, codes) = match shard.group_call(&request.group_id.0, call).await {
        GroupAnswer::Codes(top, codes) => (top, codes),
        _ => (state::COORDINATOR_NOT_AVAILABLE, Vec::new()),
    };
    let mut verdicts = verdicts.into_iter();
    let mut r = OffsetCommitResponse::default();
    for t in request.topics {
        let mut topic = OffsetCommitResponseTopic::default();
        topic.name = t.name;
        for p in t.partitions {
            let mut part = OffsetCommitResponsePartition::default();
            part.partition_index = p.partition_index;
            part.error_code = match verdicts.next() {
                Some(Err(code)) => code,
                Some(Ok(i)) if top == state::NONE => codes.get(i).copied().unwrap_or(top),
                _ => top,
            };
            topic.partitions.push(part);
        }
        r.topics.push(topic);
    }
    r
}
