//! `.txnindex`: the aborted transactions whose abort marker lies in a segment, in Kafka's file
//! format (34-byte entries: i16 version 0, i64 producer id, i64 first offset, i64 last offset
//! (the marker's), i64 last stable offset once the transaction completed). Kept in memory
//! with the segment and written beside its other indexes at roll and clean shutdown; recovery
//! rebuilds the entries of the segments it replays.
//!
//! Invariant: entries are in marker order (increasing `last_offset`), each at most once.

/// One aborted transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

const ENTRY_LEN: usize = 34;
const VERSION: i16 = 0;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnIndex {
    pub entries: Vec<AbortedTxn>,
}

/// What a search of one segment's index found, as Kafka's `collectAbortedTxns`.
pub struct Search {
    pub found: Vec<AbortedTxn>,
    /// An entry's last stable offset reached the upper bound: later segments hold nothing
    /// that overlaps the range.
    pub complete: bool,
}

impl TxnIndex {
    /// Adds an entry unless one for the same marker is already there (replay after a crash
    /// meets markers whose entries were written before it).
    pub fn push(&mut self, txn: AbortedTxn) {
        if self
            .entries
            .iter()
            .any(|e| e.last_offset == txn.last_offset)
        {
            return;
        }
        let at = self
            .entries
            .partition_point(|e| e.last_offset < txn.last_offset);
        self.entries.insert(at, txn);
    }

    /// Aborted transactions overlapping [`from`, `upper`).
    pub fn collect(&self, from: i64, upper: i64) -> Search {
        let mut found = Vec::new();
        for e in &self.entries {
            if e.last_offset >= from && e.first_offset < upper {
                found.push(*e);
            }
            if e.last_stable_offset >= upper {
                return Search {
                    found,
                    complete: true,
                };
            }
        }
        Search {
            found,
            complete: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&VERSION.to_be_bytes());
            out.extend_from_slice(&e.producer_id.to_be_bytes());
            out.extend_from_slice(&e.first_offset.to_be_bytes());
            out.extend_from_slice(&e.last_offset.to_be_bytes());
            out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
        }
        out
    }

    /// Parses an index file; `None` if it is damaged (a torn entry, an unknown version).
    pub fn decode(bytes: &[u8]) -> Option<TxnIndex> {
        if !bytes.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let long = |c: &[u8], at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&c[at..at + 8]);
            i64::from_be_bytes(a)
        };
        let mut index = TxnIndex::default();
        for c in bytes.chunks_exact(ENTRY_LEN) {
            if i16::from_be_bytes([c[0], c[1]]) != VERSION {
                return None;
            }
            index.entries.push(AbortedTxn {
                producer_id: long(c, 2),
                first_offset: long(c, 10),
                last_offset: long(c, 18),
                last_stable_offset: long(c, 26),
            });
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let mut i = TxnIndex::default();
        i.push(txn(7, 10, 20, 21));
        i.push(txn(8, 5, 30, 31));
        i.push(txn(7, 10, 20, 21));
        assert_eq!(i.entries.len(), 2, "a replayed marker is not added twice");
        let bytes = i.encode();
        assert_eq!(bytes.len(), 68);
        assert_eq!(TxnIndex::decode(&bytes), Some(i));
        assert_eq!(TxnIndex::decode(&bytes[..33]), None);
    }

    #[test]
    fn collect_overlapping_until_the_bound() {
        let mut i = TxnIndex::default();
        i.push(txn(1, 0, 9, 10));
        i.push(txn(2, 12, 19, 20));
        i.push(txn(3, 25, 40, 41));
        let s = i.collect(10, 30);
        assert_eq!(
            s.found.iter().map(|t| t.producer_id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(s.complete, "entry 3 closes at 41 >= 30");
        let s = i.collect(0, 100);
        assert_eq!(s.found.len(), 3);
        assert!(!s.complete);
    }
}
