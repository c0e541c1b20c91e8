//! CreateTopics: validated and carried out on shard 0 (see `shard::admin`); `validate_only`
//! checks everything and creates nothing. Names, partition counts, replication factors,
//! manual assignments and configs are checked as Kafka checks them.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use crate::handlers::error_message;
use crate::protocol::error::{self, KafkaError};
use crate::protocol::str_bytes;
use crate::shard::admin::{self, AdminRequest, NewTopic};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let node = shard.config.node_id;
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.as_str().to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let mut slots: Vec<(String, Result<(), KafkaError>)> = Vec::new();
    let mut new = Vec::new();
    for t in request.topics {
        let name = t.name.0.as_str().to_string();
        if duplicates.contains(&name) && slots.iter().any(|(n, _)| *n == name) {
            continue; // one answer per duplicated name, as Kafka gives
        }
        let checked = (|| {
            if duplicates.contains(&name) {
                return Err(KafkaError::new(error::INVALID_REQUEST, format!("Create topics request from client contains multiple entries for topic {name}")));
            }
            let mut partitions = t.num_partitions;
            let mut replication_factor = t.replication_factor;
            if !t.assignments.is_empty() {
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(KafkaError::new(
                        error::INVALID_REQUEST,
                        "Both numPartitions or replicationFactor and replicasAssignments were set.",
                    ));
                }
                let mut indexes: Vec<i32> =
                    t.assignments.iter().map(|a| a.partition_index).collect();
                indexes.sort_unstable();
                if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
                    return Err(KafkaError::new(
                        error::INVALID_REPLICA_ASSIGNMENT,
                        "Partitions should be a consecutive 0-based integer sequence",
                    ));
                }
                if t.assignments
                    .iter()
                    .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
                {
                    return Err(KafkaError::new(
                        error::INVALID_REPLICA_ASSIGNMENT,
                        format!("Unknown broker in replica assignment; the only broker is {node}"),
                    ));
                }
                partitions = t.assignments.len() as i32;
                replication_factor = 1;
            }
            let mut configs = BTreeMap::new();
            for c in t.configs {
                let value = c.value.ok_or_else(|| {
                    KafkaError::new(
                        error::INVALID_CONFIG,
                        format!(
                            "Null value not supported for topic configs: {}",
                            c.name.as_str()
                        ),
                    )
                })?;
                configs.insert(c.name.as_str().to_string(), value.as_str().to_string());
            }
            new.push(NewTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                configs,
            });
            Ok(())
        })();
        slots.push((name, checked));
    }
    let mut results = admin::request(
        shard,
        AdminRequest::CreateTopics {
            topics: new,
            validate_only: request.validate_only,
        },
    )
    .await
    .into_iter();
    let mut response = CreateTopicsResponse::default();
    for (name, checked) in slots {
        let mut r = CreatableTopicResult::default();
        r.name = crate::protocol::topic_name(&name);
        let outcome = checked.and_then(|()| {
            results
                .next()
                .unwrap_or_else(|| Err(KafkaError::new(error::UNKNOWN_SERVER_ERROR, "no result")))
        });
        match outcome {
            Ok(meta) => {
                if version >= 7 {
                    r.topic_id = uuid::Uuid::from_bytes(meta.id);
                }
                if version < 5 {
                    response.topics.push(r);
                    continue;
                }
                r.num_partitions = meta.partition_count();
                r.replication_factor = 1;
                let effective = meta
                    .configs
                    .resolve_map(&shard.config.log_defaults)
                    .unwrap_or_default();
                r.configs = Some(
                    effective
                        .into_iter()
                        .map(|(k, v)| {
                            let mut c = CreatableTopicConfigs::default();
                            c.config_source =
                                shard.config.topic_config_source(&meta.configs, &k) as i8;
                            c.name = str_bytes(&k);
                            c.value = Some(str_bytes(&v));
                            c
                        })
                        .collect(),
                );
            }
            Err(e) => {
                r.error_code = e.code;
                r.error_message = error_message(&e);
            }
        }
        response.topics.push(r);
    }
    response
}
