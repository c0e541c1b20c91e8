//! Storage: per-partition logs of segments with sparse offset and time indexes.
//!
//! Layout under `log.dirs`: `<topic>-<partition>/` holds `<20-digit base offset>.log`,
//! `.index`, `.timeindex`, `leader-epoch-checkpoint`, `log-start-offset` and `recovery-point`.
//! The broker writes `.clean-shutdown` beside the partition directories after a clean stop and
//! removes it at start; without it, logs are scanned and repaired from their recovery points.

pub mod index;
pub mod log;
pub mod segment;

pub use log::{now_ms, partition_dir, AppendOutcome, LogSettings, PartitionLog};

pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
