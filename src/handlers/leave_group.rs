//! LeaveGroup: one member (v0–v2) or a batch of members by id or instance id (v3+).

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let call = GroupCall::Leave(members.clone());
    let (top, codes) = match shard.group_call(&request.group_id.0, call).await {
        GroupAnswer::Codes(top, codes) => (top, codes),
        _ => (state::COORDINATOR_NOT_AVAILABLE, Vec::new()),
    };
    let mut r = LeaveGroupResponse::default();
    if version >= 3 {
        r.error_code = top;
        r.members = members
            .into_iter()
            .zip(codes)
            .map(|((id, instance), code)| {
                let mut m = MemberResponse::default();
                m.member_id = crate::protocol::str_bytes(&id);
                m.group_instance_id = instance.as_deref().map(crate::protocol::str_bytes);
                m.error_code = code;
                m
            })
            .collect();
    } else {
        r.error_code = if top != state::NONE {
            top
        } else {
            codes.first().copied().unwrap_or(state::UNKNOWN_MEMBER_ID)
        };
    }
    r
}
