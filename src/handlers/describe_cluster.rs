//! DescribeCluster: this single broker, which is also the controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use crate::protocol::str_bytes;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let c = &shard.config;
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = BrokerId(c.node_id);
    broker.host = str_bytes(&c.advertised_host);
    broker.port = shard.advertised_port.get() as i32;
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = str_bytes(&c.cluster_id);
    r.controller_id = BrokerId(c.node_id);
    r.brokers = vec![broker];
    if request.include_cluster_authorized_operations {
        r.cluster_authorized_operations = crate::handlers::CLUSTER_AUTHORIZED_OPERATIONS;
    }
    r
}
