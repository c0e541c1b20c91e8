//! JoinGroup: hands the request to the group's coordinator shard, which answers once the
//! rebalance it joins completes (or at once: MEMBER_ID_REQUIRED, errors, a stable member
//! rejoining unchanged). Fields are set only in the versions that carry them.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state::{self, JoinRequest};
use crate::protocol::str_bytes;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: JoinGroupRequest,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    let req = JoinRequest {
        waiter: 0,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms.max(0) as u64,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms.max(0) as u64
        } else {
            request.session_timeout_ms.max(0) as u64
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let answer = match shard.group_call(&group, GroupCall::Join(req)).await {
        GroupAnswer::Join(j) => j,
        GroupAnswer::Code(code) => state::JoinResponse {
            error: code,
            generation: -1,
            member_id: request.member_id.to_string(),
            ..Default::default()
        },
        _ => state::JoinResponse {
            error: state::COORDINATOR_NOT_AVAILABLE,
            generation: -1,
            ..Default::default()
        },
    };
    let mut r = JoinGroupResponse::default();
    r.error_code = answer.error;
    r.generation_id = answer.generation;
    if version >= 7 {
        r.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        r.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
    } else {
        r.protocol_name = Some(str_bytes(answer.protocol_name.as_deref().unwrap_or("")));
    }
    if version >= 9 {
        r.skip_assignment = answer.skip_assignment;
    }
    r.leader = str_bytes(&answer.leader);
    r.member_id = str_bytes(&answer.member_id);
    r.members = answer
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            if version >= 5 {
                m.group_instance_id = instance.as_deref().map(str_bytes);
            }
            m.metadata = metadata;
            m
        })
        .collect();
    r
}
