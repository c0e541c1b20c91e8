//! Work on partitions, as it travels between shards. A handler turns its request into
//! `PartitionOp`s; `Shard::dispatch` sends each to the shard that owns the partition (taking
//! local appends' places in line at once) and `Dispatched::results` hands back the results in
//! the order of the ops. Results carry the partition layer's own errors; handlers choose the
//! Kafka codes.

use crate::partition::producer_state::{Marker, ProducerEntry};
use crate::partition::{AppendError, Isolation, Offsets};
use crate::record::ValidatedBatches;
use crate::storage::log::{Fetched, SentFetched};
use crate::storage::StorageError;

pub struct PartitionOp {
    pub topic: String,
    pub partition: i32,
    pub kind: OpKind,
}

pub enum OpKind {
    /// Already validated on the connection's shard.
    Produce {
        batches: ValidatedBatches,
        acks: i16,
        /// The request's transactional id (for verifying a transaction's first write).
        transactional_id: Option<String>,
    },
    Fetch {
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    },
    /// Kafka's ListOffsets timestamp: -1 latest, -2 earliest, -3 max timestamp, -4 earliest local,
    /// -5 latest tiered.
    ListOffsets {
        timestamp: i64,
        isolation: Isolation,
    },
    DeleteRecords {
        offset: i64,
    },
    /// A transaction marker from the transaction coordinator (or WriteTxnMarkers).
    WriteMarker(Marker),
    /// The partition's offsets.
    Info,
    /// The partition's active producers (DescribeProducers).
    Producers,
}

/// `R`: the records as read on the owning shard (`Fetched`), or as sent to another
/// (`SentFetched`).
#[derive(Debug)]
pub struct FetchData<R = Fetched> {
    pub records: R,
    pub offsets: Offsets,
    /// Under read_committed: the aborted transactions (producer id, first offset) overlapping
    /// what was read; `None` under read_uncommitted.
    pub aborted: Option<Vec<(i64, i64)>>,
}

#[derive(Debug)]
pub enum OpResult<R = Fetched> {
    Produce {
        base_offset: i64,
        log_append_time: i64,
        log_start_offset: i64,
    },
    Fetch(FetchData<R>),
    Offset {
        offset: i64,
        timestamp: i64,
    },
    LowWatermark(i64),
    Info(Offsets),
    MarkerWritten,
    Producers(Vec<ProducerEntry>),
}

/// Why an op failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    UnknownPartition {
        topic: String,
        partition: i32,
    },
    Storage(StorageError),
    Append(AppendError),
    /// The request asked for something that does not exist (an unknown timestamp code).
    Invalid(String),
    /// The owning shard did not answer (it is stopping).
    ShardUnavailable,
}

impl From<StorageError> for OpError {
    fn from(e: StorageError) -> OpError {
        OpError::Storage(e)
    }
}

impl From<AppendError> for OpError {
    fn from(e: AppendError) -> OpError {
        OpError::Append(e)
    }
}

/// A failed op, with the partition's offsets when it exists (a failed fetch still reports
/// its watermarks).
pub type OpOutcome<R = Fetched> = Result<OpResult<R>, (OpError, Option<Offsets>)>;

/// An outcome as it travels back from another shard.
pub type SentOutcome = OpOutcome<SentFetched>;

impl<R> OpResult<R> {
    /// The fetched data if this is a fetch result; any other result, retyped.
    fn split_fetch<S>(self) -> Result<OpResult<S>, FetchData<R>> {
        Ok(match self {
            OpResult::Fetch(d) => return Err(d),
            OpResult::Produce {
                base_offset,
                log_append_time,
                log_start_offset,
            } => OpResult::Produce {
                base_offset,
                log_append_time,
                log_start_offset,
            },
            OpResult::Offset { offset, timestamp } => OpResult::Offset { offset, timestamp },
            OpResult::LowWatermark(o) => OpResult::LowWatermark(o),
            OpResult::Info(o) => OpResult::Info(o),
            OpResult::MarkerWritten => OpResult::MarkerWritten,
            OpResult::Producers(p) => OpResult::Producers(p),
        })
    }
}

/// An outcome for another shard: this shard's buffers are copied into bytes (once their
/// reads are done; a failed read fails the op).
pub async fn sent(o: OpOutcome) -> SentOutcome {
    let d = match o?.split_fetch() {
        Ok(other) => return Ok(other),
        Err(d) => d,
    };
    let records = match d.records {
        Fetched::Memory(b) => SentFetched::Memory(b),
        Fetched::File(f) => SentFetched::File(f),
        Fetched::Buffers(c) => match c.to_bytes().await {
            Ok(b) => SentFetched::Memory(b),
            Err(e) => return Err((StorageError::io(e).into(), Some(d.offsets))),
        },
    };
    Ok(OpResult::Fetch(FetchData {
        records,
        offsets: d.offsets,
        aborted: d.aborted,
    }))
}

/// An outcome from another shard, as a local one.
pub fn received(o: SentOutcome) -> OpOutcome {
    let d = match o?.split_fetch() {
        Ok(other) => return Ok(other),
        Err(d) => d,
    };
    let records = match d.records {
        SentFetched::Memory(b) => Fetched::Memory(b),
        SentFetched::File(f) => Fetched::File(f),
    };
    Ok(OpResult::Fetch(FetchData {
        records,
        offsets: d.offsets,
        aborted: d.aborted,
    }))
}
