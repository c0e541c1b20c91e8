//! CreatePartitions: grows a topic to a larger partition count (never shrinks), placing the new
//! partitions by the same rule as at creation.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::handlers::error_message;
use crate::protocol::error::{self, KafkaError};
use crate::shard::admin::{self, AdminRequest};
use crate::shard::Shard;

/// Kafka's checks of a manual assignment: one entry per new partition, naming only brokers
/// that exist (here, this one).
fn check_assignment(
    shard: &Shard,
    name: &str,
    count: i32,
    assignments: Option<&Vec<CreatePartitionsAssignment>>,
) -> Result<(), KafkaError> {
    let Some(assignments) = assignments.filter(|a| !a.is_empty()) else {
        return Ok(()); // null or empty: placed automatically
    };
    let node = shard.config.node_id;
    if let Some(bad) = assignments
        .iter()
        .flat_map(|a| &a.broker_ids)
        .find(|b| b.0 != node)
    {
        return Err(KafkaError::new(
            error::INVALID_REPLICA_ASSIGNMENT,
            format!(
                "Unknown broker {} in the assignment; the only broker is {node}",
                bad.0
            ),
        ));
    }
    let current = shard
        .metadata()
        .topics
        .get(name)
        .map(|t| t.partition_count());
    if let Some(current) = current {
        if assignments.len() as i32 != count - current {
            return Err(KafkaError::new(
                error::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "Increasing the number of partitions by {} but {} assignments provided.",
                    count - current,
                    assignments.len()
                ),
            ));
        }
    }
    Ok(())
}

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let checked: Vec<Result<(), KafkaError>> = request
        .topics
        .iter()
        .map(|t| check_assignment(shard, t.name.0.as_str(), t.count, t.assignments.as_ref()))
        .collect();
    let topics: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&checked)
        .filter(|(_, c)| c.is_ok())
        .map(|(t, _)| (t.name.0.as_str().to_string(), t.count))
        .collect();
    let mut results = admin::request(
        shard,
        AdminRequest::CreatePartitions {
            topics,
            validate_only: request.validate_only,
        },
    )
    .await
    .into_iter();
    let mut response = CreatePartitionsResponse::default();
    for (t, check) in request.topics.into_iter().zip(checked) {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name;
        let outcome = check.and_then(|()| {
            results
                .next()
                .map(|r| r.map(|_| ()))
                .unwrap_or_else(|| Err(KafkaError::new(error::UNKNOWN_SERVER_ERROR, "no result")))
        });
        if let Err(e) = outcome {
            r.error_code = e.code;
            r.error_message = error_message(&e);
        }
        response.results.push(r);
    }
    response
}
