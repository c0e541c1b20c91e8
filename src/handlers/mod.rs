//! One module per Kafka API. Each is a function from a decoded request (and the shard it runs
//! on) to a response; partition work goes through `Shard::run_partition_ops`, topic changes
//! through `shard::admin`. Handlers read one metadata snapshot for their whole run.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;

use kafka_protocol::protocol::StrBytes;

use crate::protocol::error::KafkaError;

/// The error message field: absent when there is no error.
pub fn error_message(e: &KafkaError) -> Option<StrBytes> {
    Some(crate::protocol::str_bytes(&e.message))
}
