//! Producer ids: handed out in blocks, never twice, across crashes too.
//!
//! Shard 0 owns the broker's allocation: `latest-producer-id-block` in the log directory holds
//! the first id of the next block, and is rewritten (atomically, synced) *before* a block is
//! handed out, so a crash can only skip ids, never repeat them. Each shard takes a block at a
//! time from shard 0 and hands out its ids in order. (The controller quorum will own the
//! allocation once there is one, as Kafka's does with AllocateProducerIds.)

use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Ids per block, as Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
pub const BLOCK_SIZE: i64 = 1000;
pub const BLOCK_FILE: &str = "latest-producer-id-block";

/// A run of ids [next, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub next: i64,
    pub end: i64,
}

/// Shard 0's record of what was handed out.
pub struct Allocator {
    path: PathBuf,
    next_block: Cell<i64>,
    /// One allocation at a time: each reads the record, writes the next, then moves on.
    turn: glommio::sync::Semaphore,
}

impl Allocator {
    /// Reads the record (none: ids start at 0). A damaged record is an error: guessing could
    /// hand an id out twice.
    pub fn load(log_dir: &Path) -> anyhow::Result<Allocator> {
        let path = log_dir.join(BLOCK_FILE);
        let next_block = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|_| {
                anyhow::anyhow!("{}: '{}' is not a producer id", path.display(), text.trim())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        Ok(Allocator {
            path,
            next_block: Cell::new(next_block),
            turn: glommio::sync::Semaphore::new(1),
        })
    }

    /// The next block, recorded as handed out before it is returned. Callers take turns, so
    /// two never get the same block.
    pub async fn allocate(&self) -> std::io::Result<Block> {
        let _turn = self
            .turn
            .acquire_permit(1)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let start = self.next_block.get();
        let end = start
            .checked_add(BLOCK_SIZE)
            .ok_or_else(|| std::io::Error::other("producer ids exhausted"))?;
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || {
                crate::metadata::write_atomically(&path, end.to_string().as_bytes())
            })
            .await?;
        self.next_block.set(end);
        Ok(Block { next: start, end })
    }
}

/// A shard's current block.
#[derive(Default)]
pub struct Ids {
    block: Cell<Option<Block>>,
}

impl Ids {
    /// The next id of the current block, if it has one left.
    pub fn take(&self) -> Option<i64> {
        let mut b = self.block.get()?;
        if b.next >= b.end {
            return None;
        }
        let id = b.next;
        b.next += 1;
        self.block.set(Some(b));
        Some(id)
    }

    pub fn refill(&self, block: Block) {
        self.block.set(Some(block));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_recorded_before_use_and_never_repeat() {
        let dir = std::env::temp_dir().join(format!("shardlog-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        glommio::LocalExecutor::default().run(async {
            let a = Allocator::load(&dir).unwrap();
            let first = a.allocate().await.unwrap();
            assert_eq!(first, Block { next: 0, end: 1000 });
            assert_eq!(
                std::fs::read_to_string(dir.join(BLOCK_FILE)).unwrap(),
                "1000"
            );
            // A restart (or a crash) continues after every block handed out.
            let b = Allocator::load(&dir).unwrap();
            assert_eq!(b.allocate().await.unwrap().next, 1000);
        });
        let ids = Ids::default();
        assert_eq!(ids.take(), None);
        ids.refill(Block { next: 5, end: 7 });
        assert_eq!(
            (ids.take(), ids.take(), ids.take()),
            (Some(5), Some(6), None)
        );
        std::fs::write(dir.join(BLOCK_FILE), "x").unwrap();
        assert!(Allocator::load(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
