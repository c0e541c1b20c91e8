//! DeleteTopics, by name or (v6) by topic id; carried out on shard 0, after which the owning
//! shards close and remove the partitions' directories.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use crate::handlers::error_message;
use crate::protocol::error::{self, KafkaError};
use crate::protocol::topic_name;
use crate::shard::admin::{self, AdminRequest};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let meta = shard.metadata();
    // Each entry: the name to delete, or the error for an unknown id.
    let mut wanted: Vec<(Option<String>, uuid::Uuid, Option<KafkaError>)> = Vec::new();
    for n in &request.topic_names {
        wanted.push((Some(n.0.as_str().to_string()), uuid::Uuid::nil(), None));
    }
    for t in &request.topics {
        match &t.name {
            Some(n) => wanted.push((Some(n.0.as_str().to_string()), t.topic_id, None)),
            None => match meta
                .topics
                .values()
                .find(|m| uuid::Uuid::from_bytes(m.id) == t.topic_id)
            {
                Some(m) => wanted.push((Some(m.name.clone()), t.topic_id, None)),
                None => wanted.push((
                    None,
                    t.topic_id,
                    Some(KafkaError::new(
                        error::UNKNOWN_TOPIC_ID,
                        "Topic id not found",
                    )),
                )),
            },
        }
    }
    let names: Vec<String> = wanted
        .iter()
        .filter(|w| w.2.is_none())
        .filter_map(|w| w.0.clone())
        .collect();
    let mut results = admin::request(shard, AdminRequest::DeleteTopics { names })
        .await
        .into_iter();
    let mut response = DeleteTopicsResponse::default();
    for (name, id, early) in wanted {
        let mut r = DeletableTopicResult::default();
        r.name = name.as_deref().map(topic_name);
        r.topic_id = id;
        let outcome = match early {
            Some(e) => Err(e),
            None => results
                .next()
                .unwrap_or_else(|| Err(KafkaError::new(error::UNKNOWN_SERVER_ERROR, "no result"))),
        };
        match outcome {
            Ok(meta) if version >= 6 => r.topic_id = uuid::Uuid::from_bytes(meta.id),
            Ok(_) => {}
            Err(e) => {
                r.error_code = e.code;
                if version >= 5 {
                    r.error_message = error_message(&e);
                }
            }
        }
        response.responses.push(r);
    }
    response
}
