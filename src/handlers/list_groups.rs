//! ListGroups: every group of every shard's coordinator, filtered by state (v4+) and by type
//! (v5+: only "classic" groups exist here).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use crate::protocol::str_bytes;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut r = ListGroupsResponse::default();
    for (id, protocol_type, state) in shard.list_groups().await {
        if !states.is_empty() && !states.contains(&state.name().to_lowercase()) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t == "classic") {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(str_bytes(&id));
        g.protocol_type = str_bytes(&protocol_type);
        if version >= 4 {
            g.group_state = str_bytes(state.name());
        }
        if version >= 5 {
            g.group_type = str_bytes("classic");
        }
        r.groups.push(g);
    }
    r
}
