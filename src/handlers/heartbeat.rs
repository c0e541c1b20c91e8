//! Heartbeat: keeps a member's session alive and tells it when a rebalance is under way.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let call = GroupCall::Heartbeat {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: request.generation_id,
    };
    let mut r = HeartbeatResponse::default();
    r.error_code = match shard.group_call(&request.group_id.0, call).await {
        GroupAnswer::Code(code) => code,
        _ => state::COORDINATOR_NOT_AVAILABLE,
    };
    r
}
