//! Producer state of one partition, as Kafka's ProducerStateManager keeps it: for each producer
//! id its epoch, the metadata of its last 5 batches, its coordinator epoch and the first offset
//! of its ongoing transaction; the partition's ongoing transactions in offset order; and the
//! verification guards of transactions about to start here (KIP-890 part 1).
//!
//! Plain logic without I/O or clocks: the partition's appender checks each batch of a write
//! round against a [`Draft`] (the state as the round's earlier batches leave it), writes the
//! accepted ones, and only then applies the draft, so a failed write changes nothing. Replay
//! at start-up runs the same checks with `Origin::Replication`.
//!
//! Invariants: at most `BATCHES_KEPT` batches per producer, all of one epoch, in sequence
//! order; `ongoing` holds exactly the producers whose entry has a transaction first offset;
//! a producer's epoch never decreases.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::storage::txn_index::AbortedTxn;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// Batches whose metadata is kept per producer for duplicate detection (Kafka's 5).
pub const BATCHES_KEPT: usize = 5;

/// The producer fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    /// Offsets the batch spans (`lastOffsetDelta + 1`).
    pub offset_count: i64,
    pub max_timestamp: i64,
    pub transactional: bool,
}

impl ProducerBatch {
    /// The producer fields of a batch, if it has a producer id.
    pub fn of(view: &crate::record::BatchView<'_>) -> Option<ProducerBatch> {
        let producer_id = view.producer_id();
        if producer_id < 0 {
            return None;
        }
        let first_seq = view.base_sequence();
        let delta = view.last_offset_delta();
        Some(ProducerBatch {
            producer_id,
            epoch: view.producer_epoch(),
            first_seq,
            last_seq: if first_seq < 0 {
                NO_SEQUENCE
            } else {
                increment_sequence(first_seq, delta)
            },
            offset_count: delta as i64 + 1,
            max_timestamp: view.max_timestamp(),
            transactional: view.is_transactional(),
        })
    }
}

/// Sequences wrap from i32::MAX to 0.
pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    next as i64 == last as i64 + 1 || (next == 0 && last == i32::MAX)
}

/// Who wrote a batch: its checks differ as Kafka's `AppendOrigin` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A producer: epoch and sequence checked, duplicates found.
    Client,
    /// A coordinator writing for a producer (transactional offset commits): epoch only.
    Coordinator,
    /// Rebuilding state from the log: nothing refused.
    Replication,
}

/// A commit or abort marker for one producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub timestamp: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub coordinator_epoch: i32,
    pub last_timestamp: i64,
    /// The first offset of the producer's ongoing transaction on this partition.
    pub txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn empty(producer_id: i64) -> ProducerEntry {
        ProducerEntry {
            producer_id,
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            last_timestamp: -1,
            txn_first_offset: None,
        }
    }

    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    pub fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }

    fn update_epoch(&mut self, epoch: i16) {
        if self.epoch != epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }

    fn add_batch(&mut self, epoch: i16, meta: BatchMeta) {
        self.update_epoch(epoch);
        if self.batches.len() == BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(meta);
        self.last_timestamp = meta.timestamp;
    }

    fn find_duplicate(&self, b: &ProducerBatch) -> Option<BatchMeta> {
        if self.epoch != b.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|m| m.first_seq == b.first_seq && m.last_seq == b.last_seq)
            .copied()
    }
}

/// Why a batch or marker is refused; the Kafka edge picks the error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProducerError {
    /// An epoch older than the producer's: INVALID_PRODUCER_EPOCH.
    StaleEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A sequence that does not follow the last one: OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    },
    /// A transactional write the transaction does not cover, or a plain write inside a
    /// transaction: INVALID_TXN_STATE (TRANSACTION_ABORTABLE for newer Produce versions when
    /// the partition was not verified).
    InvalidTxnState { message: String, unverified: bool },
    /// A marker from an older coordinator epoch: TRANSACTION_COORDINATOR_FENCED.
    CoordinatorFenced { producer_id: i64 },
}

impl std::fmt::Display for ProducerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProducerError::StaleEpoch {
                producer_id,
                epoch,
                current,
            } => write!(
                f,
                "Epoch of producer {producer_id} is {epoch}, which is smaller than the last seen \
                 epoch {current}"
            ),
            ProducerError::OutOfOrder {
                producer_id,
                epoch,
                first_seq,
                last_seq,
            } => write!(
                f,
                "Out of order sequence number for producer {producer_id} at epoch {epoch}: \
                 {first_seq} (incoming seq. number), {last_seq} (current end sequence number)"
            ),
            ProducerError::InvalidTxnState { message, .. } => write!(f, "{message}"),
            ProducerError::CoordinatorFenced { producer_id } => write!(
                f,
                "marker for producer {producer_id} from an older coordinator epoch"
            ),
        }
    }
}

/// What to do with a batch that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write it at the offsets planned.
    Append,
    /// It repeats one of the producer's last batches: answer with that batch's offsets.
    Duplicate { first_offset: i64, last_offset: i64 },
}

/// A transaction that started or ended in a round, in log order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxnEvent {
    Started {
        producer_id: i64,
        first_offset: i64,
    },
    Ended {
        producer_id: i64,
        first_offset: i64,
        marker_offset: i64,
        aborted: bool,
    },
}

/// The state changes of one write round, not yet applied.
#[derive(Default, Debug)]
pub struct Draft {
    touched: HashMap<i64, ProducerEntry>,
    events: Vec<TxnEvent>,
    /// Producers whose verification guard the round consumed or cleared.
    guards_done: Vec<i64>,
}

impl Draft {
    fn entry<'a>(&'a mut self, state: &ProducerState, producer_id: i64) -> &'a mut ProducerEntry {
        self.touched.entry(producer_id).or_insert_with(|| {
            state
                .producers
                .get(&producer_id)
                .cloned()
                .unwrap_or_else(|| ProducerEntry::empty(producer_id))
        })
    }

    fn current<'a>(
        &'a self,
        state: &'a ProducerState,
        producer_id: i64,
    ) -> Option<&'a ProducerEntry> {
        self.touched
            .get(&producer_id)
            .or_else(|| state.producers.get(&producer_id))
    }

    /// Checks a data batch that would be written at `first_offset`, as Kafka's
    /// `analyzeAndValidateProducerState` and `ProducerAppendInfo` do; on `Append` its effect
    /// is recorded in the draft. `guard` is the verification guard the batch was admitted
    /// with (a transactional batch that starts a transaction must carry the current one).
    pub fn check_batch(
        &mut self,
        state: &ProducerState,
        b: &ProducerBatch,
        origin: Origin,
        guard: Option<u64>,
        first_offset: i64,
    ) -> Result<Decision, ProducerError> {
        let current = self.current(state, b.producer_id);
        if origin == Origin::Client {
            if let Some(dup) = current.and_then(|e| e.find_duplicate(b)) {
                return Ok(Decision::Duplicate {
                    first_offset: dup.first_offset,
                    last_offset: dup.last_offset,
                });
            }
        }
        let (epoch, last_seq, in_txn) = current
            .map_or((NO_PRODUCER_EPOCH, NO_SEQUENCE, false), |e| {
                (e.epoch, e.last_seq(), e.txn_first_offset.is_some())
            });
        if origin != Origin::Replication {
            if b.epoch < epoch {
                return Err(ProducerError::StaleEpoch {
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    current: epoch,
                });
            }
            if origin == Origin::Client {
                let fits = if b.epoch != epoch {
                    // A new epoch starts at sequence 0 (any sequence if there was no state).
                    b.first_seq == 0 || epoch == NO_PRODUCER_EPOCH
                } else {
                    epoch == NO_PRODUCER_EPOCH || in_sequence(last_seq, b.first_seq)
                };
                if !fits {
                    return Err(ProducerError::OutOfOrder {
                        producer_id: b.producer_id,
                        epoch: b.epoch,
                        first_seq: b.first_seq,
                        last_seq,
                    });
                }
            }
            // A transaction starts here only with the guard its verification left (KIP-890).
            if b.transactional && !in_txn {
                let verified = guard.is_some()
                    && guard == state.guard(b.producer_id)
                    && !self.guards_done.contains(&b.producer_id);
                if !verified {
                    return Err(ProducerError::InvalidTxnState {
                        message: format!(
                            "the transaction of producer {} was not verified for this \
                             partition, or ended before this write",
                            b.producer_id
                        ),
                        unverified: true,
                    });
                }
            }
            if !b.transactional && in_txn {
                return Err(ProducerError::InvalidTxnState {
                    message: format!(
                        "Expected transactional write from producer {} at offset {first_offset}",
                        b.producer_id
                    ),
                    unverified: false,
                });
            }
        }
        let entry = self.entry(state, b.producer_id);
        entry.add_batch(
            b.epoch,
            BatchMeta {
                first_seq: b.first_seq,
                last_seq: b.last_seq,
                first_offset,
                last_offset: first_offset + b.offset_count - 1,
                timestamp: b.max_timestamp,
            },
        );
        if b.transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(first_offset);
            self.events.push(TxnEvent::Started {
                producer_id: b.producer_id,
                first_offset,
            });
            self.guards_done.push(b.producer_id);
        }
        Ok(Decision::Append)
    }

    /// Checks a commit or abort marker to be written at `offset`; on success its effect (the
    /// end of the producer's transaction here, if one is open) is recorded in the draft.
    pub fn check_marker(
        &mut self,
        state: &ProducerState,
        m: &Marker,
        origin: Origin,
        offset: i64,
    ) -> Result<(), ProducerError> {
        let entry = self.entry(state, m.producer_id);
        if origin != Origin::Replication {
            if m.epoch < entry.epoch {
                return Err(ProducerError::StaleEpoch {
                    producer_id: m.producer_id,
                    epoch: m.epoch,
                    current: entry.epoch,
                });
            }
            if m.coordinator_epoch < entry.coordinator_epoch {
                return Err(ProducerError::CoordinatorFenced {
                    producer_id: m.producer_id,
                });
            }
        }
        entry.update_epoch(m.epoch);
        entry.coordinator_epoch = m.coordinator_epoch;
        entry.last_timestamp = m.timestamp;
        if let Some(first_offset) = entry.txn_first_offset.take() {
            self.events.push(TxnEvent::Ended {
                producer_id: m.producer_id,
                first_offset,
                marker_offset: offset,
                aborted: !m.commit,
            });
        }
        self.guards_done.push(m.producer_id);
        Ok(())
    }
}

/// A transaction whose marker is written but not yet below the high watermark: its records
/// stay unstable until it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unreplicated {
    first_offset: i64,
    marker_offset: i64,
}

#[derive(Default, Debug, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Ongoing transactions by first offset.
    ongoing: BTreeMap<i64, i64>,
    unreplicated: VecDeque<Unreplicated>,
    /// Verification guards by producer id: (epoch, guard).
    verification: HashMap<i64, (i16, u64)>,
    next_guard: u64,
}

impl ProducerState {
    /// State holding `entries` (a snapshot), with their ongoing transactions.
    pub fn from_entries(entries: impl IntoIterator<Item = ProducerEntry>) -> ProducerState {
        let mut state = ProducerState::default();
        for e in entries {
            if let Some(first) = e.txn_first_offset {
                state.ongoing.insert(first, e.producer_id);
            }
            state.producers.insert(e.producer_id, e);
        }
        state
    }

    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Whether the producer has a transaction open on this partition.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    fn guard(&self, producer_id: i64) -> Option<u64> {
        self.verification.get(&producer_id).map(|&(_, g)| g)
    }

    /// The guard to verify a transaction start with: the producer's current one for this
    /// epoch, or a new one (KIP-890's verification guard: a marker written meanwhile clears
    /// it, so a batch verified before an abort cannot start a transaction after it).
    pub fn verification_guard(&mut self, producer_id: i64, epoch: i16) -> u64 {
        match self.verification.get(&producer_id) {
            Some(&(e, g)) if e == epoch => g,
            _ => {
                self.next_guard += 1;
                let g = self.next_guard;
                self.verification.insert(producer_id, (epoch, g));
                g
            }
        }
    }

    /// Applies a written round's draft. Returns the transactions it aborted, with the last
    /// stable offset each leaves behind (for the transaction index).
    pub fn apply(&mut self, draft: Draft) -> Vec<AbortedTxn> {
        let mut aborted = Vec::new();
        for event in draft.events {
            match event {
                TxnEvent::Started {
                    producer_id,
                    first_offset,
                } => {
                    self.ongoing.insert(first_offset, producer_id);
                }
                TxnEvent::Ended {
                    producer_id,
                    first_offset,
                    marker_offset,
                    aborted: was_aborted,
                } => {
                    self.ongoing.remove(&first_offset);
                    self.unreplicated.push_back(Unreplicated {
                        first_offset,
                        marker_offset,
                    });
                    if was_aborted {
                        // Kafka's lastStableOffset(completedTxn): the first offset of the
                        // next transaction still open, else just past the marker.
                        let lso = self
                            .ongoing
                            .iter()
                            .find(|(_, pid)| **pid != producer_id)
                            .map_or(marker_offset + 1, |(first, _)| *first);
                        aborted.push(AbortedTxn {
                            producer_id,
                            first_offset,
                            last_offset: marker_offset,
                            last_stable_offset: lso,
                        });
                    }
                }
            }
        }
        for pid in draft.guards_done {
            self.verification.remove(&pid);
        }
        for (pid, entry) in draft.touched {
            debug_assert!(
                self.producers
                    .get(&pid)
                    .is_none_or(|old| old.epoch <= entry.epoch),
                "a producer's epoch never decreases"
            );
            self.producers.insert(pid, entry);
        }
        aborted
    }

    /// The high watermark reached `hw`: ended transactions whose marker lies below it are
    /// stable now.
    pub fn on_high_watermark(&mut self, hw: i64) {
        while self
            .unreplicated
            .front()
            .is_some_and(|u| u.marker_offset < hw)
        {
            self.unreplicated.pop_front();
        }
    }

    /// The first offset a read_committed reader may not pass: the start of the earliest
    /// transaction that is open or whose marker is not yet below the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let ongoing = self.ongoing.keys().next().copied();
        let ended = self.unreplicated.iter().map(|u| u.first_offset).min();
        match (ongoing, ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops producers idle for `producer.id.expiration.ms` with no transaction open (Kafka's
    /// `removeExpiredProducers`, by the producer's last batch timestamp). Returns how many.
    pub fn expire(&mut self, now: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// The last batch's first offset of each producer (compaction keeps those batches).
    pub fn last_batch_offsets(&self) -> Vec<i64> {
        self.producers
            .values()
            .filter_map(|e| e.batches.back().map(|b| b.first_offset))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first_seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq,
            last_seq: increment_sequence(first_seq, count - 1),
            offset_count: count as i64,
            max_timestamp: 1_000,
            transactional: false,
        }
    }

    fn txn_batch(pid: i64, epoch: i16, first_seq: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            transactional: true,
            ..batch(pid, epoch, first_seq, count)
        }
    }

    /// Checks and applies one batch at `offset` as a round of its own.
    fn append(
        s: &mut ProducerState,
        b: &ProducerBatch,
        offset: i64,
    ) -> Result<Decision, ProducerError> {
        let mut d = Draft::default();
        let r = d.check_batch(s, b, Origin::Client, None, offset);
        s.apply(d);
        r
    }

    fn marker(
        s: &mut ProducerState,
        pid: i64,
        epoch: i16,
        commit: bool,
        offset: i64,
    ) -> Vec<AbortedTxn> {
        let mut d = Draft::default();
        let m = Marker {
            producer_id: pid,
            epoch,
            coordinator_epoch: 0,
            commit,
            timestamp: 2_000,
        };
        d.check_marker(s, &m, Origin::Coordinator, offset).unwrap();
        s.apply(d)
    }

    #[test]
    fn sequences_follow_and_wrap() {
        let mut s = ProducerState::default();
        assert_eq!(append(&mut s, &batch(1, 0, 0, 10), 0), Ok(Decision::Append));
        assert_eq!(
            append(&mut s, &batch(1, 0, 10, 5), 10),
            Ok(Decision::Append)
        );
        assert_eq!(s.get(1).unwrap().last_seq(), 14);
        // A gap and a repeat of an older sequence that is not one of the kept batches.
        assert!(matches!(
            append(&mut s, &batch(1, 0, 16, 1), 15),
            Err(ProducerError::OutOfOrder { last_seq: 14, .. })
        ));
        assert!(matches!(
            append(&mut s, &batch(1, 0, 3, 1), 15),
            Err(ProducerError::OutOfOrder { .. })
        ));
        // Wrapping at i32::MAX.
        let mut w = ProducerState::default();
        append(&mut w, &batch(2, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(w.get(2).unwrap().last_seq(), i32::MAX);
        assert_eq!(append(&mut w, &batch(2, 0, 0, 3), 2), Ok(Decision::Append));
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 2, 5), 2);
    }

    #[test]
    fn the_last_five_batches_are_duplicates_with_their_offsets() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            append(&mut s, &batch(1, 0, i * 2, 2), 100 + i as i64 * 2).unwrap();
        }
        assert_eq!(s.get(1).unwrap().batches.len(), BATCHES_KEPT);
        // Batches 2..=6 are remembered: each is answered with its original offsets.
        for i in 2..7 {
            assert_eq!(
                append(&mut s, &batch(1, 0, i * 2, 2), 999),
                Ok(Decision::Duplicate {
                    first_offset: 100 + i as i64 * 2,
                    last_offset: 101 + i as i64 * 2
                })
            );
        }
        // The oldest two fell out of the window: out of order, not duplicates.
        assert!(matches!(
            append(&mut s, &batch(1, 0, 0, 2), 999),
            Err(ProducerError::OutOfOrder { .. })
        ));
        // Same sequences with a different last sequence are not duplicates.
        assert!(append(&mut s, &batch(1, 0, 12, 3), 999).is_err());
        // A duplicate under another epoch is not one.
        assert!(matches!(
            append(&mut s, &batch(1, 1, 12, 2), 114),
            Err(ProducerError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut s = ProducerState::default();
        append(&mut s, &batch(1, 3, 0, 1), 0).unwrap();
        assert!(matches!(
            append(&mut s, &batch(1, 2, 1, 1), 1),
            Err(ProducerError::StaleEpoch {
                epoch: 2,
                current: 3,
                ..
            })
        ));
        // A new epoch must start at 0 ...
        assert!(matches!(
            append(&mut s, &batch(1, 4, 5, 1), 1),
            Err(ProducerError::OutOfOrder { .. })
        ));
        // ... and then the window restarts.
        assert_eq!(append(&mut s, &batch(1, 4, 0, 1), 1), Ok(Decision::Append));
        assert_eq!(s.get(1).unwrap().batches.len(), 1);
    }

    #[test]
    fn unknown_producers_may_start_anywhere() {
        let mut s = ProducerState::default();
        assert_eq!(
            append(&mut s, &batch(9, 5, 4_242, 3), 0),
            Ok(Decision::Append)
        );
        assert_eq!(
            append(&mut s, &batch(9, 5, 4_245, 1), 3),
            Ok(Decision::Append)
        );
        // Expired: forgotten, and any sequence is accepted again.
        assert_eq!(s.expire(1_000 + 60_000, 60_000), 1);
        assert!(s.is_empty());
        assert_eq!(append(&mut s, &batch(9, 5, 77, 1), 4), Ok(Decision::Append));
    }

    #[test]
    fn a_round_checks_against_its_own_earlier_batches_and_applies_only_when_told() {
        let s = ProducerState::default();
        let mut d = Draft::default();
        assert_eq!(
            d.check_batch(&s, &batch(1, 0, 0, 2), Origin::Client, None, 0),
            Ok(Decision::Append)
        );
        assert_eq!(
            d.check_batch(&s, &batch(1, 0, 2, 2), Origin::Client, None, 2),
            Ok(Decision::Append)
        );
        assert_eq!(
            d.check_batch(&s, &batch(1, 0, 0, 2), Origin::Client, None, 4),
            Ok(Decision::Duplicate {
                first_offset: 0,
                last_offset: 1
            })
        );
        // Not applied (the write failed): nothing changed.
        drop(d);
        assert!(s.is_empty());
    }

    #[test]
    fn transactions_track_the_first_unstable_offset_and_aborts() {
        let mut s = ProducerState::default();
        let g1 = s.verification_guard(1, 0);
        let mut d = Draft::default();
        d.check_batch(&s, &txn_batch(1, 0, 0, 5), Origin::Client, Some(g1), 10)
            .unwrap();
        s.apply(d);
        let g2 = s.verification_guard(2, 0);
        let mut d = Draft::default();
        d.check_batch(&s, &txn_batch(2, 0, 0, 5), Origin::Client, Some(g2), 15)
            .unwrap();
        s.apply(d);
        assert_eq!(s.first_unstable_offset(), Some(10));
        // Further batches of an open transaction need no guard.
        append(&mut s, &txn_batch(1, 0, 5, 1), 20).unwrap();
        // A plain write inside a transaction is refused.
        assert!(matches!(
            append(&mut s, &batch(1, 0, 6, 1), 21),
            Err(ProducerError::InvalidTxnState {
                unverified: false,
                ..
            })
        ));
        let aborted = marker(&mut s, 1, 0, false, 21);
        assert_eq!(
            aborted,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 21,
                last_stable_offset: 15
            }]
        );
        // The abort is unstable until the high watermark passes its marker.
        assert_eq!(s.first_unstable_offset(), Some(10));
        s.on_high_watermark(22);
        assert_eq!(s.first_unstable_offset(), Some(15));
        assert!(
            marker(&mut s, 2, 0, true, 22).is_empty(),
            "commits are not indexed"
        );
        s.on_high_watermark(23);
        assert_eq!(s.first_unstable_offset(), None);
        assert!(!s.in_transaction(1) && !s.in_transaction(2));
    }

    #[test]
    fn an_abort_between_verification_and_write_refuses_the_batch() {
        let mut s = ProducerState::default();
        let guard = s.verification_guard(1, 0);
        // The same guard for a second batch verified meanwhile.
        assert_eq!(s.verification_guard(1, 0), guard);
        marker(&mut s, 1, 0, false, 0);
        let mut d = Draft::default();
        assert!(matches!(
            d.check_batch(&s, &txn_batch(1, 0, 0, 1), Origin::Client, Some(guard), 1),
            Err(ProducerError::InvalidTxnState {
                unverified: true,
                ..
            })
        ));
        // A fresh verification after the marker works.
        let fresh = s.verification_guard(1, 0);
        assert_ne!(fresh, guard);
        let mut d = Draft::default();
        assert!(d
            .check_batch(&s, &txn_batch(1, 0, 0, 1), Origin::Client, Some(fresh), 1)
            .is_ok());
    }

    #[test]
    fn markers_check_epochs_and_coordinator_epochs() {
        let mut s = ProducerState::default();
        append(&mut s, &batch(1, 5, 0, 1), 0).unwrap();
        let mut d = Draft::default();
        let stale = Marker {
            producer_id: 1,
            epoch: 4,
            coordinator_epoch: 0,
            commit: false,
            timestamp: 0,
        };
        assert!(matches!(
            d.check_marker(&s, &stale, Origin::Coordinator, 1),
            Err(ProducerError::StaleEpoch { .. })
        ));
        // A marker with a bumped epoch (the coordinator fencing) moves the producer on.
        marker(&mut s, 1, 6, false, 1);
        assert_eq!(s.get(1).unwrap().epoch, 6);
        let mut d = Draft::default();
        let old_coordinator = Marker {
            producer_id: 1,
            epoch: 6,
            coordinator_epoch: -5,
            commit: true,
            timestamp: 0,
        };
        assert!(matches!(
            d.check_marker(&s, &old_coordinator, Origin::Coordinator, 2),
            Err(ProducerError::CoordinatorFenced { .. })
        ));
    }

    #[test]
    fn coordinator_writes_skip_sequences() {
        let mut s = ProducerState::default();
        let g = s.verification_guard(7, 0);
        let offsets = ProducerBatch {
            first_seq: NO_SEQUENCE,
            last_seq: NO_SEQUENCE,
            ..txn_batch(7, 0, 0, 1)
        };
        for i in 0..3 {
            let mut d = Draft::default();
            d.check_batch(&s, &offsets, Origin::Coordinator, Some(g), i)
                .unwrap();
            s.apply(d);
        }
        assert!(s.in_transaction(7));
        assert_eq!(s.first_unstable_offset(), Some(0));
    }
}
