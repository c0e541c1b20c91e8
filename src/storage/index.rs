//! Sparse per-segment indexes, kept in memory and written to disk when a segment rolls or the
//! broker shuts down cleanly (they are derived data: recovery rebuilds them from the log).
//!
//! `.index`: 8-byte entries (offset relative to the segment base: u32, file position: u32), one
//! per `index.interval.bytes` of log, keyed by the base offset of the batch at that position.
//! `.timeindex`: 12-byte entries (timestamp: i64, relative offset: u32). An entry (t, o) promises
//! that every batch before offset o has max timestamp <= t; timestamps strictly increase.

/// Offset → position entries, increasing in both.
#[derive(Clone, Debug, Default)]
pub struct OffsetIndex {
    pub entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Position of the last indexed batch starting at or before `relative_offset` (0 if none).
    pub fn floor_position(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn last_position(&self) -> u32 {
        self.entries.last().map(|e| e.1).unwrap_or(0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parses and sanity-checks an index file against its log's size; `None` if damaged.
    pub fn decode(bytes: &[u8], log_size: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / 8);
        for c in bytes.chunks_exact(8) {
            let o = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let p = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            if let Some(&(lo, lp)) = entries.last() {
                if o <= lo || p <= lp {
                    return None;
                }
            }
            if p as u64 >= log_size {
                return None;
            }
            entries.push((o, p));
        }
        Some(OffsetIndex { entries })
    }
}

/// Timestamp → offset entries, strictly increasing timestamps.
#[derive(Clone, Debug, Default)]
pub struct TimeIndex {
    pub entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn maybe_append(&mut self, max_timestamp_before: i64, relative_offset: u32) {
        if max_timestamp_before < 0 {
            return;
        }
        match self.entries.last() {
            Some(&(t, o)) if max_timestamp_before <= t || relative_offset <= o => {}
            _ => self.entries.push((max_timestamp_before, relative_offset)),
        }
    }

    /// Relative offset from which a scan for the first record with timestamp >= `ts` may start.
    pub fn scan_start(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(12) {
            return None;
        }
        let mut idx = TimeIndex::default();
        for c in bytes.chunks_exact(12) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            let t = i64::from_be_bytes(t);
            let o = u32::from_be_bytes([c[8], c[9], c[10], c[11]]);
            if let Some(&(lt, lo)) = idx.entries.last() {
                if t <= lt || o <= lo {
                    return None;
                }
            }
            idx.entries.push((t, o));
        }
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_floor_and_round_trip() {
        let idx = OffsetIndex {
            entries: vec![(10, 4096), (20, 8192)],
        };
        assert_eq!(idx.floor_position(5), 0);
        assert_eq!(idx.floor_position(10), 4096);
        assert_eq!(idx.floor_position(19), 4096);
        assert_eq!(idx.floor_position(25), 8192);
        let back = OffsetIndex::decode(&idx.encode(), 10_000).unwrap();
        assert_eq!(back.entries, idx.entries);
        assert!(
            OffsetIndex::decode(&idx.encode(), 8000).is_none(),
            "position past the log"
        );
        assert!(OffsetIndex::decode(&idx.encode()[..7], 10_000).is_none());
    }

    #[test]
    fn time_index_scan_start() {
        let mut t = TimeIndex::default();
        t.maybe_append(100, 5);
        t.maybe_append(100, 9); // not increasing: skipped
        t.maybe_append(200, 12);
        assert_eq!(t.entries, vec![(100, 5), (200, 12)]);
        assert_eq!(t.scan_start(50), 0);
        assert_eq!(t.scan_start(100), 0);
        assert_eq!(t.scan_start(150), 5);
        assert_eq!(t.scan_start(500), 12);
        assert_eq!(TimeIndex::decode(&t.encode()).unwrap().entries, t.entries);
    }
}
