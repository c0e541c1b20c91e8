//! Topic administration, carried out on shard 0, the owner of topic metadata. A change is
//! validated, written to disk atomically and then installed on every shard before it is
//! answered, so a client that is told "created" can produce to any partition at once.
//! Changes are serialised by the shard's admin lock.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::{Shard, ShardRequest, ShardResponse};
use crate::config::TopicConfigs;
use crate::metadata::{self, MetadataSnapshot, TopicMeta};
use crate::protocol::error::{self, KafkaError};

/// Kafka caps a topic at this many partitions per request (as does shardlog).
const MAX_PARTITIONS: i32 = 100_000;

pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub partitions: i32,
    /// -1: the broker default (1).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

pub enum AdminRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
}

/// The topic as it is after the change (for creates), or the error.
pub type AdminResponse = Vec<Result<TopicMeta, KafkaError>>;

/// Runs an admin request on shard 0, from whichever shard the connection is on.
pub async fn request(shard: &Rc<Shard>, req: AdminRequest) -> AdminResponse {
    if shard.id == 0 {
        return serve(shard, req).await;
    }
    let n = match &req {
        AdminRequest::CreateTopics { topics, .. } => topics.len(),
        AdminRequest::DeleteTopics { names } => names.len(),
        AdminRequest::CreatePartitions { topics, .. } => topics.len(),
    };
    match shard.call(0, ShardRequest::Admin(req)).await {
        Some(ShardResponse::Admin(r)) => r,
        _ => (0..n)
            .map(|_| {
                Err(KafkaError::new(
                    error::UNKNOWN_SERVER_ERROR,
                    "metadata shard did not answer",
                ))
            })
            .collect(),
    }
}

pub async fn serve(shard: &Rc<Shard>, req: AdminRequest) -> AdminResponse {
    let _guard = shard.admin_lock.acquire_permit(1).await;
    let current = shard.metadata();
    let mut next: MetadataSnapshot = (*current).clone();
    next.version += 1;
    let (results, commit) = match req {
        AdminRequest::CreateTopics {
            topics,
            validate_only,
        } => {
            let r: Vec<_> = topics
                .into_iter()
                .map(|t| create_topic(shard, &mut next, t))
                .collect();
            (r, !validate_only)
        }
        AdminRequest::DeleteTopics { names } => {
            let r = names
                .into_iter()
                .map(|n| {
                    next.topics.remove(&n).ok_or_else(|| {
                        KafkaError::new(
                            error::UNKNOWN_TOPIC_OR_PARTITION,
                            "This server does not host this topic-partition.",
                        )
                    })
                })
                .collect();
            (r, true)
        }
        AdminRequest::CreatePartitions {
            topics,
            validate_only,
        } => {
            let r = topics
                .into_iter()
                .map(|(n, count)| add_partitions(shard, &mut next, &n, count))
                .collect();
            (r, !validate_only)
        }
    };
    let changed = results.iter().any(|r| r.is_ok());
    if commit && changed {
        if let Err(e) = install(shard, next).await {
            tracing::error!("cannot write topic metadata: {e}");
            return results
                .into_iter()
                .map(|_| Err(KafkaError::storage(&e)))
                .collect();
        }
    }
    results
}

fn create_topic(
    shard: &Shard,
    next: &mut MetadataSnapshot,
    t: NewTopic,
) -> Result<TopicMeta, KafkaError> {
    metadata::validate_topic_name(&t.name)
        .map_err(|m| KafkaError::new(error::INVALID_TOPIC_EXCEPTION, m))?;
    if next.topics.contains_key(&t.name) {
        return Err(KafkaError::new(
            error::TOPIC_ALREADY_EXISTS,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    let partitions = if t.partitions == -1 {
        shard.config.num_partitions
    } else {
        t.partitions
    };
    if partitions <= 0 || partitions > MAX_PARTITIONS {
        return Err(KafkaError::new(
            error::INVALID_PARTITIONS,
            format!(
                "Number of partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}."
            ),
        ));
    }
    if t.replication_factor != -1 && t.replication_factor != 1 {
        return Err(KafkaError::new(
            error::INVALID_REPLICATION_FACTOR,
            format!(
                "Replication factor: {} larger than available brokers: 1.",
                t.replication_factor
            ),
        ));
    }
    let configs = TopicConfigs::new(t.configs, &shard.config.log_defaults)
        .map_err(|m| KafkaError::new(error::INVALID_CONFIG, m))?;
    let meta = TopicMeta {
        shards: (0..partitions)
            .map(|p| metadata::place_partition(&t.name, p, shard.count))
            .collect(),
        name: t.name.clone(),
        id: metadata::new_topic_id(),
        configs,
    };
    next.topics.insert(t.name, meta.clone());
    Ok(meta)
}

fn add_partitions(
    shard: &Shard,
    next: &mut MetadataSnapshot,
    name: &str,
    count: i32,
) -> Result<TopicMeta, KafkaError> {
    let t = next.topics.get_mut(name).ok_or_else(|| {
        KafkaError::new(
            error::UNKNOWN_TOPIC_OR_PARTITION,
            format!("The topic '{name}' does not exist."),
        )
    })?;
    let have = t.partition_count();
    if count <= have {
        return Err(KafkaError::new(
            error::INVALID_PARTITIONS,
            format!("Topic currently has {have} partitions, which is higher than or equal to the requested {count}."),
        ));
    }
    if count > MAX_PARTITIONS {
        return Err(KafkaError::new(
            error::INVALID_PARTITIONS,
            format!("At most {MAX_PARTITIONS} partitions"),
        ));
    }
    for p in have..count {
        t.shards
            .push(metadata::place_partition(name, p, shard.count));
    }
    Ok(t.clone())
}

/// Writes the new table, then installs it on every shard (this one included).
async fn install(shard: &Rc<Shard>, next: MetadataSnapshot) -> std::io::Result<()> {
    let path = shard.config.log_dir.join(metadata::METADATA_FILE);
    let text = metadata::encode(&next);
    glommio::executor()
        .spawn_blocking(move || metadata::write_atomically(&path, text.as_bytes()))
        .await?;
    let mut waits = Vec::new();
    for other in 0..shard.count {
        if other != shard.id {
            waits.push(shard.call(other, ShardRequest::ApplyMetadata(next.clone())));
        }
    }
    futures::future::join_all(waits).await;
    shard.apply_metadata(next, true).await;
    Ok(())
}
