//! The leader-epoch cache of one partition (Kafka's `LeaderEpochFileCache`, KIP-101): for each
//! leader epoch that wrote to the log, the offset of its first record. It answers
//! OffsetForLeaderEpoch and a follower's `LastFetchedEpoch` (where does epoch e end in this
//! log?), and it is what a follower truncates by, so that a replica that missed a failover
//! never keeps records that the new leader does not have.
//!
//! Invariants: epochs strictly rise and start offsets strictly rise along the entries. Its
//! file (`leader-epoch-checkpoint`) is Kafka's: a version line (0), a count line, then one
//! `epoch start_offset` line per entry. The cache itself does no I/O: storage writes
//! [`LeaderEpochCache::to_checkpoint`] and reads [`LeaderEpochCache::from_checkpoint`].

use std::fmt::Write as _;

/// Kafka's "no epoch" (`RecordBatch.NO_PARTITION_LEADER_EPOCH`, `UNDEFINED_EPOCH`).
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's "no offset" in an OffsetForLeaderEpoch answer (`UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_OFFSET: i64 = -1;

/// One leader epoch and the offset of the first record it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The latest epoch, or [`UNDEFINED_EPOCH`] for an empty cache.
    pub fn latest_epoch(&self) -> i32 {
        self.latest().map_or(UNDEFINED_EPOCH, |e| e.epoch)
    }

    /// Records that `epoch` starts writing at `start_offset`. The same epoch again at a later
    /// offset changes nothing; an entry that the new one contradicts (an epoch not below it or
    /// a start not below it) is dropped, as Kafka does, so the invariant holds whatever comes
    /// in. Returns whether the cache changed (and so must be written out).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(latest) = self.latest() {
            if latest.epoch == epoch && latest.start_offset <= start_offset {
                return false;
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.check();
        true
    }

    /// Where `requested` ends in a log whose end is `log_end`, as OffsetForLeaderEpoch answers:
    /// `(epoch, end_offset)` where epoch is the largest known epoch not above `requested` and
    /// end_offset the start of the next epoch (or `log_end` for the latest). An epoch above
    /// every known one, or a request for [`UNDEFINED_EPOCH`], gets
    /// `(UNDEFINED_EPOCH, UNDEFINED_OFFSET)`; one below every known epoch gets the first
    /// epoch's start offset with the requested epoch.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == requested {
            return (requested, log_end);
        }
        let higher = self.entries.iter().find(|e| e.epoch > requested);
        let Some(higher) = higher else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            None => (requested, higher.start_offset),
        }
    }

    /// The log was truncated to end at `end_offset`: epochs that started at or past it go.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        before != self.entries.len()
    }

    /// The log now starts at `start_offset` (retention, DeleteRecords): epochs that ended before
    /// it go, and the one that covers it starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset);
        let Some(i) = covering else {
            return false;
        };
        let changed = i > 0 || self.entries[i].start_offset != start_offset;
        self.entries.drain(..i);
        self.entries[0].start_offset = start_offset;
        self.check();
        changed
    }

    /// The checkpoint file's text.
    pub fn to_checkpoint(&self) -> String {
        let mut s = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            let _ = writeln!(s, "{} {}", e.epoch, e.start_offset);
        }
        s
    }

    /// Parses a checkpoint file; the error names what is wrong with it.
    pub fn from_checkpoint(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let version = lines.next().ok_or("empty file")?.trim();
        if version != "0" {
            return Err(format!("unsupported version {version:?}"));
        }
        let count: usize = lines
            .next()
            .ok_or("no entry count")?
            .trim()
            .parse()
            .map_err(|_| "the entry count is not a number")?;
        let mut cache = Self::new();
        for n in 0..count {
            let line = lines
                .next()
                .ok_or_else(|| format!("{count} entries announced, {n} found"))?;
            let mut fields = line.split_whitespace();
            let parsed = (
                fields.next().and_then(|f| f.parse::<i32>().ok()),
                fields.next().and_then(|f| f.parse::<i64>().ok()),
                fields.next(),
            );
            let (Some(epoch), Some(start_offset), None) = parsed else {
                return Err(format!("line {} is not `epoch offset`: {line:?}", n + 3));
            };
            if cache
                .latest()
                .is_some_and(|l| l.epoch >= epoch || l.start_offset >= start_offset)
                || epoch < 0
                || start_offset < 0
            {
                return Err(format!("entry {epoch} {start_offset} is out of order"));
            }
            cache.entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        Ok(cache)
    }

    fn check(&self) {
        debug_assert!(
            self.entries
                .windows(2)
                .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset),
            "epoch cache out of order: {:?}",
            self.entries
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(4, 40), (4, 40));
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(
            c.end_offset_for(2, 40),
            (1, 10),
            "an unknown epoch between known ones"
        );
        assert_eq!(c.end_offset_for(0, 40), (0, 0), "below every known epoch");
        assert_eq!(c.end_offset_for(5, 40), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert_eq!(
            c.end_offset_for(UNDEFINED_EPOCH, 40),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        assert_eq!(
            LeaderEpochCache::new().end_offset_for(0, 7),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
    }

    #[test]
    fn assign_keeps_the_order_whatever_comes() {
        let mut c = cache(&[(1, 0), (2, 10)]);
        assert!(!c.assign(2, 15), "the same epoch later changes nothing");
        assert!(
            c.assign(3, 5),
            "a contradicting entry replaces what it contradicts"
        );
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 5
                }
            ]
        );
        assert!(!c.assign(-1, 3));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(c.truncate_from_end(25));
        assert_eq!(c.latest_epoch(), 3);
        assert!(!c.truncate_from_end(30));
        assert!(c.truncate_from_start(12));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 12
            }]
        );
        assert!(!c.truncate_from_start(12));
    }

    #[test]
    fn checkpoint_round_trips_and_damage_is_named() {
        let c = cache(&[(0, 0), (2, 100)]);
        let text = c.to_checkpoint();
        assert_eq!(text, "0\n2\n0 0\n2 100\n");
        assert_eq!(LeaderEpochCache::from_checkpoint(&text), Ok(c));
        assert!(LeaderEpochCache::from_checkpoint("0\n2\n0 0\n")
            .unwrap_err()
            .contains("2 entries announced"));
        assert!(LeaderEpochCache::from_checkpoint("0\n2\n2 0\n1 5\n")
            .unwrap_err()
            .contains("out of order"));
        assert!(LeaderEpochCache::from_checkpoint("1\n0\n")
            .unwrap_err()
            .contains("version"));
        assert!(LeaderEpochCache::from_checkpoint("0\n1\nx 0\n")
            .unwrap_err()
            .contains("line 3"));
    }
}
