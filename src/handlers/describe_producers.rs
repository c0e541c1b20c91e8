//! DescribeProducers: the active producers of partitions (producer id and epoch, last
//! sequence and timestamp, coordinator epoch, and the start of the open transaction).

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::handlers::error_message;
use crate::protocol::error::KafkaError;
use crate::shard::{OpKind, OpResult, Shard};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let ops = super::ops_per_partition(
        &request.topics,
        |t| (&t.name, &t.partition_indexes),
        |p| (*p, OpKind::Producers),
    );
    let mut outcomes = shard.run_partition_ops(ops).await.into_iter();
    let mut r = DescribeProducersResponse::default();
    for t in request.topics {
        let mut topic = TopicResponse::default();
        topic.name = t.name;
        for p in t.partition_indexes {
            let mut part = PartitionResponse::default();
            part.partition_index = p;
            match outcomes.next() {
                Some(Ok(OpResult::Producers(mut producers))) => {
                    producers.sort_by_key(|e| e.producer_id);
                    part.active_producers = producers
                        .into_iter()
                        .map(|e| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(e.producer_id);
                            s.producer_epoch = e.epoch as i32;
                            s.last_sequence = e.last_seq();
                            s.last_timestamp = e.last_timestamp;
                            s.coordinator_epoch = e.coordinator_epoch;
                            s.current_txn_start_offset = e.txn_first_offset.unwrap_or(-1);
                            s
                        })
                        .collect();
                }
                Some(Err((e, _))) => {
                    let e = KafkaError::from(&e);
                    part.error_code = e.code;
                    part.error_message = error_message(&e);
                }
                _ => part.error_code = crate::protocol::error::NOT_LEADER_OR_FOLLOWER,
            }
            topic.partitions.push(part);
        }
        r.topics.push(topic);
    }
    r
}
