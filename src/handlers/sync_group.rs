//! SyncGroup: the leader hands in the assignment, every member gets its own share (followers
//! wait on the coordinator shard until the leader's arrives).

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state::{self, SyncRequest};
use crate::protocol::str_bytes;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let req = SyncRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let answer = match shard.group_call(&group, GroupCall::Sync(req)).await {
        GroupAnswer::Sync(s) => s,
        GroupAnswer::Code(code) => state::SyncResponse {
            error: code,
            ..Default::default()
        },
        _ => state::SyncResponse {
            error: state::COORDINATOR_NOT_AVAILABLE,
            ..Default::default()
        },
    };
    let mut r = SyncGroupResponse::default();
    r.error_code = answer.error;
    if version >= 5 {
        r.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        r.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
    }
    r.assignment = answer.assignment;
    r
}
