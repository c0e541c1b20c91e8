//! One module per Kafka API. Each is a function from a decoded request (and the shard it runs
//! on) to a response; partition work goes through `Shard::run_partition_ops`, topic changes
//! through `shard::admin`. Handlers read one metadata snapshot for their whole run.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_producers;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::shard::{OpKind, PartitionOp};

use crate::protocol::error::KafkaError;

/// Authorized operations as Kafka reports them with no authorizer: every operation the resource
/// type supports, as a bit set of ACL operation codes (READ 3, WRITE 4, CREATE 5, DELETE 6,
/// ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
/// IDEMPOTENT_WRITE 12). Sent only when a request asks; otherwise the field keeps i32::MIN.
pub const TOPIC_AUTHORIZED_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// The error message field: absent when there is no error.
pub fn error_message(e: &KafkaError) -> Option<StrBytes> {
    Some(crate::protocol::str_bytes(&e.message))
}

/// One op per partition of a request's topics, in request order (the order responses follow).
pub fn ops_per_partition<T, P>(
    topics: &[T],
    topic: impl Fn(&T) -> (&TopicName, &[P]),
    op: impl Fn(&P) -> (i32, OpKind),
) -> Vec<PartitionOp> {
    let mut ops = Vec::new();
    for t in topics {
        let (name, partitions) = topic(t);
        for p in partitions {
            let (partition, kind) = op(p);
            ops.push(PartitionOp {
                topic: name.0.as_str().to_string(),
                partition,
                kind,
            });
        }
    }
    ops
}
