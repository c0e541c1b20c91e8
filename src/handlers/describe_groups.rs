//! DescribeGroups: state, protocol and members (with their metadata and assignment) of each
//! group asked; a group nobody knows is reported Dead, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::state;
use crate::protocol::str_bytes;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in request.groups {
        let mut g = DescribedGroup::default();
        match shard.group_call(&id.0, GroupCall::Describe).await {
            GroupAnswer::Describe(s) => {
                g.group_state = str_bytes(s.state.name());
                g.protocol_type = str_bytes(&s.protocol_type);
                g.protocol_data = str_bytes(&s.protocol);
                g.members = s
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default();
                        d.member_id = str_bytes(&m.member_id);
                        if version >= 4 {
                            d.group_instance_id = m.instance_id.as_deref().map(str_bytes);
                        }
                        d.client_id = str_bytes(&m.client_id);
                        d.client_host = str_bytes(&m.client_host);
                        d.member_metadata = m.metadata;
                        d.member_assignment = m.assignment;
                        d
                    })
                    .collect();
            }
            _ => g.error_code = state::COORDINATOR_NOT_AVAILABLE,
        }
        if version >= 3 {
            g.authorized_operations = i32::MIN;
        }
        g.group_id = id;
        r.groups.push(g);
    }
    r
}
