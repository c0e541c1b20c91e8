//! Storage: per-partition logs of segments with sparse offset and time indexes.
//!
//! Layout under `log.dirs`: `<topic>-<partition>/` holds `<20-digit base offset>.log`,
//! `.index`, `.timeindex`, `.txnindex` (aborted transactions, when there are any),
//! `<20-digit offset>.snapshot` (producer state, written by the partition layer),
//! `leader-epoch-checkpoint`, `log-start-offset` and `recovery-point`;
//! compacted partitions add `cleaner-offset-checkpoint` (and, for an instant, `.cleaned`
//! segments and a `cleaner-swap` marker).
//! The broker writes `.clean-shutdown` beside the partition directories after a clean stop and
//! removes it at start; without it, logs are scanned and repaired from their recovery points.

pub mod chain;
pub mod cleaner;
pub mod index;
pub mod log;
pub mod read_ahead;
pub mod segment;
pub mod txn_index;

pub use log::{
    now_ms, partition_dir, Bound, LogSettings, PartitionLog, Position, RoundWritten, StorageError,
};

pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Makes glommio's first direct-I/O open in this process hit a file with data in it.
///
/// glommio decides once per block device whether to use io_uring's polled ring, by reading the
/// first block of the first DMA file opened on it. An empty file answers that read with EOF
/// without reaching the device, so a fresh log directory (whose first file is an empty segment)
/// would be judged "pollable" even on devices that are not, and every later read would fail
/// with EOPNOTSUPP. Opening a one-block probe file first gets the real answer.
pub async fn probe_direct_io(log_dir: &std::path::Path, shard: usize) -> std::io::Result<()> {
    let path = log_dir.join(format!(".direct-io-probe-{shard}"));
    let p = path.clone();
    glommio::executor()
        .spawn_blocking(move || std::fs::write(&p, vec![0u8; 4096]))
        .await?;
    let file = glommio::io::DmaFile::open(&path)
        .await
        .map_err(std::io::Error::from)?;
    file.close().await.map_err(std::io::Error::from)?;
    glommio::executor()
        .spawn_blocking(move || std::fs::remove_file(path))
        .await
}
