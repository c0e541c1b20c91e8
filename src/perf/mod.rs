//! The load generator behind `shardlog perf`: producers and consumers on the project's own
//! client, with the Java client's partitioning, an open-loop schedule and HDR latencies.

pub mod cli;
pub mod consumer;
pub mod jitter;
pub mod plot;
pub mod producer;
pub mod progress;
pub mod rdkafka_load;
pub mod rebalance;
pub mod schedule;
pub mod stats;
pub mod tune;
pub mod tune_report;
pub mod wire;
