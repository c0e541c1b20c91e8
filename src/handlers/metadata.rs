//! Metadata: brokers, and topics with their partitions (all led by this broker). Unknown topics
//! are created when `auto.create.topics.enable` is on and the request allows it.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use crate::metadata::{validate_topic_name, TopicMeta};
use crate::protocol::{error, str_bytes, topic_name};
use crate::shard::admin::{self, AdminRequest, NewTopic};
use crate::shard::Shard;

fn describe(
    version: i16,
    node: i32,
    t: &TopicMeta,
    with_operations: bool,
) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(topic_name(&t.name));
    if version >= 10 {
        topic.topic_id = uuid::Uuid::from_bytes(t.id);
    }
    if version >= 1 {
        topic.is_internal = matches!(
            t.name.as_str(),
            "__consumer_offsets" | "__transaction_state"
        );
    }
    if with_operations && version >= 8 {
        topic.topic_authorized_operations = crate::handlers::TOPIC_AUTHORIZED_OPERATIONS;
    }
    topic.partitions = (0..t.partition_count())
        .map(|p| {
            let mut part = MetadataResponsePartition::default();
            part.partition_index = p;
            part.leader_id = BrokerId(node);
            if version >= 7 {
                part.leader_epoch = crate::storage::log::LEADER_EPOCH;
            }
            part.replica_nodes = vec![BrokerId(node)];
            part.isr_nodes = vec![BrokerId(node)];
            part
        })
        .collect();
    topic
}

fn missing(name: Option<&str>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = name.map(topic_name);
    topic.topic_id = id;
    topic.error_code = code;
    topic
}

pub async fn handle(shard: &Rc<Shard>, version: i16, request: MetadataRequest) -> MetadataResponse {
    let c = &shard.config;
    let node = c.node_id;
    let meta = shard.metadata();
    let topic_ops = request.include_topic_authorized_operations;
    let all = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let mut topics = Vec::new();
    if all {
        topics.extend(
            meta.topics
                .values()
                .map(|t| describe(version, node, t, topic_ops)),
        );
    } else {
        let allow_create =
            (version < 4 || request.allow_auto_topic_creation) && c.auto_create_topics;
        let mut to_create = Vec::new();
        for req in request.topics.iter().flatten() {
            let name = req.name.as_ref().map(|n| n.0.as_str().to_string());
            match name {
                None => match meta.topic_by_id(&req.topic_id) {
                    Some(t) => topics.push(describe(version, node, t, topic_ops)),
                    None => topics.push(missing(None, req.topic_id, error::UNKNOWN_TOPIC_ID)),
                },
                Some(name) => match meta.topics.get(&name) {
                    Some(t) => topics.push(describe(version, node, t, topic_ops)),
                    None if validate_topic_name(&name).is_err() => topics.push(missing(
                        Some(&name),
                        uuid::Uuid::nil(),
                        error::INVALID_TOPIC_EXCEPTION,
                    )),
                    None if allow_create => to_create.push(name),
                    None => topics.push(missing(
                        Some(&name),
                        uuid::Uuid::nil(),
                        error::UNKNOWN_TOPIC_OR_PARTITION,
                    )),
                },
            }
        }
        if !to_create.is_empty() {
            let new = to_create
                .iter()
                .map(|n| NewTopic {
                    name: n.clone(),
                    partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                })
                .collect();
            let created = admin::request(
                shard,
                AdminRequest::CreateTopics {
                    topics: new,
                    validate_only: false,
                },
            )
            .await;
            let meta = shard.metadata();
            for (name, result) in to_create.iter().zip(created) {
                match (result, meta.topics.get(name)) {
                    (_, Some(t)) => topics.push(describe(version, node, t, topic_ops)),
                    (Err(e), None) => topics.push(missing(Some(name), uuid::Uuid::nil(), e.code)),
                    (Ok(_), None) => topics.push(missing(
                        Some(name),
                        uuid::Uuid::nil(),
                        error::LEADER_NOT_AVAILABLE,
                    )),
                }
            }
        }
    }
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(node);
    broker.host = str_bytes(&c.advertised_host);
    broker.port = shard.advertised_port.get() as i32;
    let mut r = MetadataResponse::default();
    r.brokers = vec![broker];
    if version >= 2 {
        r.cluster_id = Some(str_bytes(&c.cluster_id));
    }
    if version >= 1 {
        r.controller_id = BrokerId(node);
    }
    r.topics = topics;
    if request.include_cluster_authorized_operations && (8..=10).contains(&version) {
        r.cluster_authorized_operations = crate::handlers::CLUSTER_AUTHORIZED_OPERATIONS;
    }
    r
}
