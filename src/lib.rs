//! shardlog: a Kafka-compatible broker, thread-per-core on io_uring (glommio).
//!
//! Module map: `config` (Kafka-named settings), `metadata` (topic table, placement),
//! `server` (process, listeners, connections), `shard` (executors, mesh, routing, admin),
//! `protocol` (API table, framing, error codes), `handlers` (one per Kafka API),
//! `partition` (per-partition owner: log, producer state, offsets, replication state),
//! `cluster` (metadata records and image, controller decisions, placement, the raft-rs quorum
//! and its disk; the replica fetcher to come), `storage` (segments, indexes, recovery,
//! retention), `record` (batch validation), `client` (the project's own Kafka client, used by
//! the CLI), `sim` (a seeded simulator of a replicated cluster over the state machines of
//! `cluster` and `partition::replica`), `sealed` (magic, version and CRC around an rkyv
//! payload), `alloc` (allocation guard), `timing` (where a Produce request waits, per shard).

pub mod alloc;
pub mod client;
pub mod cluster;
pub mod config;
pub mod group;
pub mod handlers;
pub mod metadata;
pub mod partition;
pub mod perf;
pub mod protocol;
pub mod record;
pub mod sealed;
pub mod server;
pub mod shard;
pub mod sim;
pub mod storage;
pub mod timing;
pub mod tools;
pub mod txn;
