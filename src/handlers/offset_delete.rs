//! OffsetDelete: removes committed offsets of an empty group; while the group has members they
//! stay (GROUP_SUBSCRIBED_TO_TOPIC), and an unknown group gets GROUP_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let parts: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let (top, codes) = match shard
        .group_call(&request.group_id.0, GroupCall::DeleteOffsets(parts))
        .await
    {
        GroupAnswer::Codes(top, codes) => (top, codes),
        _ => (state::COORDINATOR_NOT_AVAILABLE, Vec::new()),
    };
    let mut r = OffsetDeleteResponse::default();
    r.error_code = top;
    if top != state::NONE {
        return r;
    }
    let mut codes = codes.into_iter();
    for t in request.topics {
        let mut topic = OffsetDeleteResponseTopic::default();
        topic.name = t.name;
        for p in t.partitions {
            let mut part = OffsetDeleteResponsePartition::default();
            part.partition_index = p.partition_index;
            part.error_code = codes.next().unwrap_or(state::NONE);
            topic.partitions.push(part);
        }
        r.topics.push(topic);
    }
    r
}
