//! DescribeTopicPartitions (KIP-966): topics and their partitions a page at a time, sorted by
//! topic name and partition. At most `response_partition_limit` partitions (capped at 2000, as
//! Kafka's `max.request.partition.size.limit`) go in one answer; `next_cursor` names the first
//! partition left out, and a request with that cursor goes on from there. No topics named means
//! every topic. An unknown topic is listed with UNKNOWN_TOPIC_OR_PARTITION; a cursor whose topic
//! is not among those named is INVALID_REQUEST. Every partition is led by this broker, the only
//! replica, at leader epoch 0; eligible leader replicas are not kept (empty lists).

use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};

use crate::protocol::{error, topic_name};
use crate::shard::Shard;

/// Kafka's `max.request.partition.size.limit` default.
const MAX_PARTITIONS: i32 = 2000;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let node = shard.config.node_id;
    let meta = shard.metadata();
    let mut names: Vec<String> = if request.topics.is_empty() {
        meta.topics.keys().cloned().collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.as_str().to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let mut response = DescribeTopicPartitionsResponse::default();
    let (start_topic, start_partition) = match &request.cursor {
        Some(c) => (
            c.topic_name.0.as_str().to_string(),
            c.partition_index.max(0),
        ),
        None => (String::new(), 0),
    };
    if request.cursor.is_some() && !request.topics.is_empty() && !names.contains(&start_topic) {
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(topic_name(&start_topic));
        t.error_code = error::INVALID_REQUEST;
        response.topics.push(t);
        return response;
    }
    let mut room = if request.response_partition_limit <= 0 {
        MAX_PARTITIONS
    } else {
        request.response_partition_limit.min(MAX_PARTITIONS)
    };
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        let mut topic = DescribeTopicPartitionsResponseTopic::default();
        topic.name = Some(topic_name(&name));
        let Some(t) = meta.topics.get(&name) else {
            topic.error_code = error::UNKNOWN_TOPIC_OR_PARTITION;
            response.topics.push(topic);
            continue;
        };
        topic.topic_id = uuid::Uuid::from_bytes(t.id);
        topic.is_internal = matches!(name.as_str(), "__consumer_offsets" | "__transaction_state");
        topic.topic_authorized_operations = crate::handlers::TOPIC_AUTHORIZED_OPERATIONS;
        let first = if name == start_topic {
            start_partition
        } else {
            0
        };
        for p in first..t.partition_count() {
            if room == 0 {
                let mut cursor = Cursor::default();
                cursor.topic_name = topic_name(&name);
                cursor.partition_index = p;
                response.next_cursor = Some(cursor);
                break;
            }
            room -= 1;
            let mut part = DescribeTopicPartitionsResponsePartition::default();
            part.partition_index = p;
            part.leader_id = BrokerId(node);
            part.leader_epoch = crate::storage::log::LEADER_EPOCH;
            part.replica_nodes = vec![BrokerId(node)];
            part.isr_nodes = vec![BrokerId(node)];
            part.eligible_leader_replicas = Some(Vec::new());
            part.last_known_elr = Some(Vec::new());
            topic.partitions.push(part);
        }
        let full = response.next_cursor.is_some();
        if !topic.partitions.is_empty() || !full {
            response.topics.push(topic);
        }
        if full {
            break;
        }
    }
    response
}
