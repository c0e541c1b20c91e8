//! DeleteGroups: removes empty groups with their committed offsets; a group with members gets
//! NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    for id in request.groups_names {
        let mut g = DeletableGroupResult::default();
        g.error_code = match shard.group_call(&id.0, GroupCall::Delete).await {
            GroupAnswer::Code(code) => code,
            _ => state::COORDINATOR_NOT_AVAILABLE,
        };
        g.group_id = id;
        r.results.push(g);
    }
    r
}
