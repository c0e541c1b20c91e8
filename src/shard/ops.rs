//! Work on partitions, as it travels between shards. A handler turns its request into
//! `PartitionOp`s; `Shard::run_partition_ops` sends each to the shard that owns the partition
//! (running local ones in place) and hands back the results in the order of the ops.

use crate::protocol::error::KafkaError;
use crate::record::ValidatedBatches;

pub struct PartitionOp {
    pub topic: String,
    pub partition: i32,
    pub kind: OpKind,
}

pub enum OpKind {
    /// Already validated on the connection's shard; `sync` for acks=-1.
    Produce {
        batches: ValidatedBatches,
        sync: bool,
    },
    Fetch {
        offset: i64,
        max_bytes: usize,
    },
    /// Kafka's ListOffsets timestamp: -1 latest, -2 earliest, -3 max timestamp, -4 earliest local.
    ListOffsets {
        timestamp: i64,
    },
    DeleteRecords {
        offset: i64,
    },
    /// High watermark and log start offset.
    Info,
}

#[derive(Debug)]
pub struct FetchData {
    pub records: crate::storage::log::Fetched,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug)]
pub enum OpResult {
    Produce {
        base_offset: i64,
        log_append_time: i64,
        log_start_offset: i64,
    },
    /// The error of a failed fetch still carries the watermarks.
    Fetch(FetchData),
    Offset {
        offset: i64,
        timestamp: i64,
    },
    LowWatermark(i64),
    Info {
        high_watermark: i64,
        log_start_offset: i64,
    },
}

pub type OpOutcome = Result<OpResult, (KafkaError, Option<(i64, i64)>)>;
