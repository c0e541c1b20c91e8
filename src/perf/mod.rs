//! The load generator behind `shardlog perf`: producers and consumers on the project's own
//! client, with the Java client's partitioning, an open-loop schedule and HDR latencies.

pub mod partitioner;
pub mod schedule;
pub mod stats;
