//! Kafka error codes used by shardlog, and the error value that carries one with a message.
//! Codes and names follow Kafka's `Errors` enum; a handler answers with `code` and, where the
//! response has a message field, `message`.

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const INVALID_GROUP_ID: i16 = 24;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const POLICY_VIOLATION: i16 = 44;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const INVALID_RECORD: i16 = 87;
pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
pub const PRODUCER_FENCED: i16 = 90;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
pub const TRANSACTION_ABORTABLE: i16 = 120;

/// An error code with the message that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaError {
    pub code: i16,
    pub message: String,
}

impl KafkaError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        KafkaError {
            code,
            message: message.into(),
        }
    }
    pub fn storage(e: impl std::fmt::Display) -> Self {
        tracing::warn!("storage error: {e}");
        KafkaError::new(KAFKA_STORAGE_ERROR, e.to_string())
    }
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

impl From<&crate::shard::OpError> for KafkaError {
    /// The Kafka error for a partition op's failure, as most APIs report it (Produce adjusts
    /// the transaction errors to its request version).
    fn from(e: &crate::shard::OpError) -> Self {
        use crate::partition::producer_state::ProducerError;
        use crate::partition::AppendError;
        use crate::shard::OpError;
        use crate::storage::StorageError;
        let message = e.to_string();
        let code = match e {
            OpError::UnknownPartition { .. } => UNKNOWN_TOPIC_OR_PARTITION,
            OpError::Storage(s) | OpError::Append(AppendError::Storage(s)) => match s {
                StorageError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
                StorageError::Io(_) | StorageError::Fenced => KAFKA_STORAGE_ERROR,
                StorageError::Closing => NOT_LEADER_OR_FOLLOWER,
            },
            OpError::Append(AppendError::Producer(p)) => match p {
                ProducerError::StaleEpoch { .. } => INVALID_PRODUCER_EPOCH,
                ProducerError::OutOfOrder { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
                ProducerError::InvalidTxnState { .. } => INVALID_TXN_STATE,
                ProducerError::CoordinatorFenced { .. } => TRANSACTION_COORDINATOR_FENCED,
            },
            // Kafka answers a verification the coordinator could not make with a retriable
            // error.
            OpError::Append(AppendError::VerificationUnavailable(_)) => NOT_ENOUGH_REPLICAS,
            OpError::Invalid(_) => INVALID_REQUEST,
            OpError::ShardUnavailable => NOT_LEADER_OR_FOLLOWER,
        };
        if code == KAFKA_STORAGE_ERROR {
            tracing::warn!("storage error: {message}");
        }
        KafkaError::new(code, message)
    }
}

impl std::fmt::Display for crate::shard::OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::shard::OpError;
        match self {
            OpError::UnknownPartition { topic, partition } => write!(
                f,
                "This server does not host this topic-partition: {topic}-{partition}"
            ),
            OpError::Storage(e) => write!(f, "{e}"),
            OpError::Append(e) => write!(f, "{e}"),
            OpError::Invalid(m) => write!(f, "{m}"),
            OpError::ShardUnavailable => write!(f, "the partition's shard did not answer"),
        }
    }
}

impl From<crate::record::BatchError> for KafkaError {
    fn from(e: crate::record::BatchError) -> Self {
        use crate::record::BatchError::*;
        let code = match e {
            Corrupt(_) => CORRUPT_MESSAGE,
            Invalid(_) => INVALID_RECORD,
            TooLarge(_) => MESSAGE_TOO_LARGE,
        };
        KafkaError::new(code, e.to_string())
    }
}
