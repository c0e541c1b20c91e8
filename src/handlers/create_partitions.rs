//! CreatePartitions: grows a topic to a larger partition count (never shrinks), placing the new
//! partitions by the same rule as at creation.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::handlers::error_message;
use crate::protocol::error::{self, KafkaError};
use crate::shard::admin::{self, AdminRequest};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let topics: Vec<(String, i32)> = request
        .topics
        .iter()
        .map(|t| (t.name.0.as_str().to_string(), t.count))
        .collect();
    let results = admin::request(
        shard,
        AdminRequest::CreatePartitions {
            topics,
            validate_only: request.validate_only,
        },
    )
    .await;
    let mut response = CreatePartitionsResponse::default();
    for (t, result) in request.topics.into_iter().zip(results) {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name;
        let result: Result<_, KafkaError> = result;
        if let Err(e) = result {
            r.error_code = e.code;
            r.error_message = error_message(&e);
        } else if t.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .any(|a| a.broker_ids.iter().any(|b| b.0 != shard.config.node_id))
        }) {
            r.error_code = error::INVALID_REPLICA_ASSIGNMENT;
        }
        response.results.push(r);
    }
    response
}
