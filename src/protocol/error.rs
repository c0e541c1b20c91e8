//! Kafka error codes used by shardlog, and the error value that carries one with a message.
//! Codes and names follow Kafka's `Errors` enum; a handler answers with `code` and, where the
//! response has a message field, `message`.

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const POLICY_VIOLATION: i16 = 44;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const INVALID_RECORD: i16 = 87;
pub const UNKNOWN_TOPIC_ID: i16 = 100;

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
