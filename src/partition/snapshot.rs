//! The `<20-digit offset>.snapshot` file: a partition's producer state as it stood when the log
//! ended at that offset (all kept batches of every producer), so that recovery replays only
//! the log after it.
//!
//! Layout: `SLPS`, u16 version (1), u32 CRC-32 (IEEE) of the payload, then the payload: an
//! rkyv archive of [`SnapshotFile`], validated before use (a damaged file is refused, never
//! trusted).

use rkyv::rancor::Error as RkyvError;

use super::producer_state::{BatchMeta, ProducerEntry, ProducerState};

const SEAL: crate::sealed::Seal = crate::sealed::Seal {
    magic: b"SLPS",
    version: 1,
    what: "shardlog producer snapshot",
};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct SnapshotFile {
    pub offset: i64,
    pub producers: Vec<SnapshotProducer>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct SnapshotProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub coordinator_epoch: i32,
    pub last_timestamp: i64,
    pub txn_first_offset: Option<i64>,
    pub batches: Vec<SnapshotBatch>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
pub struct SnapshotBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

/// The snapshot file of `state` at log end `offset`.
pub fn encode(state: &ProducerState, offset: i64) -> Vec<u8> {
    let mut producers: Vec<SnapshotProducer> = state
        .entries()
        .map(|e| SnapshotProducer {
            producer_id: e.producer_id,
            epoch: e.epoch,
            coordinator_epoch: e.coordinator_epoch,
            last_timestamp: e.last_timestamp,
            txn_first_offset: e.txn_first_offset,
            batches: e
                .batches
                .iter()
                .map(|b| SnapshotBatch {
                    first_seq: b.first_seq,
                    last_seq: b.last_seq,
                    first_offset: b.first_offset,
                    last_offset: b.last_offset,
                    timestamp: b.timestamp,
                })
                .collect(),
        })
        .collect();
    producers.sort_by_key(|p| p.producer_id);
    let file = SnapshotFile { offset, producers };
    // Serializing plain vectors and integers into memory cannot fail.
    let payload = rkyv::to_bytes::<RkyvError>(&file)
        .map(|v| v.to_vec())
        .unwrap_or_default();
    SEAL.wrap(&payload)
}

/// Reads a snapshot file; an error names what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, String> {
    let aligned = SEAL.open(bytes)?;
    rkyv::from_bytes::<SnapshotFile, RkyvError>(&aligned).map_err(|e| format!("malformed: {e}"))
}

/// The producer state a snapshot holds.
pub fn restore(file: SnapshotFile) -> ProducerState {
    ProducerState::from_entries(file.producers.into_iter().map(|p| {
        ProducerEntry {
            producer_id: p.producer_id,
            epoch: p.epoch,
            batches: p
                .batches
                .into_iter()
                .map(|b| BatchMeta {
                    first_seq: b.first_seq,
                    last_seq: b.last_seq,
                    first_offset: b.first_offset,
                    last_offset: b.last_offset,
                    timestamp: b.timestamp,
                })
                .collect(),
            coordinator_epoch: p.coordinator_epoch,
            last_timestamp: p.last_timestamp,
            txn_first_offset: p.txn_first_offset,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::super::producer_state::{Draft, Origin, ProducerBatch};
    use super::*;

    /// One step of a log: a data batch or a marker, at its offset.
    enum Step {
        Batch(ProducerBatch),
        Marker(super::super::producer_state::Marker),
    }

    fn sorted(state: &ProducerState) -> Vec<ProducerEntry> {
        let mut v: Vec<_> = state.entries().cloned().collect();
        v.sort_by_key(|e| e.producer_id);
        v
    }

    /// The live state after a log, against a snapshot taken part-way and the rest replayed.
    #[test]
    fn snapshot_plus_replay_gives_the_live_state() {
        let plain = |pid, epoch, seq, n| ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: seq,
            last_seq: seq + n - 1,
            offset_count: n as i64,
            max_timestamp: 9_000,
            transactional: false,
        };
        let txn = |pid, epoch, seq, n| ProducerBatch {
            transactional: true,
            ..plain(pid, epoch, seq, n)
        };
        let marker = |pid, epoch, commit| super::super::producer_state::Marker {
            producer_id: pid,
            epoch,
            coordinator_epoch: 0,
            commit,
            timestamp: 9_500,
        };
        let steps = vec![
            Step::Batch(plain(1, 0, 0, 5)),
            Step::Batch(txn(2, 0, 0, 3)),
            Step::Batch(plain(1, 0, 5, 5)),
            Step::Batch(txn(3, 1, 0, 2)),
            Step::Marker(marker(2, 0, false)),
            // snapshot here
            Step::Batch(plain(1, 0, 10, 1)),
            Step::Batch(txn(2, 0, 3, 4)),
            Step::Marker(marker(3, 1, true)),
            Step::Batch(plain(4, 2, 100, 3)),
            Step::Marker(marker(2, 1, false)),
            Step::Batch(plain(1, 0, 11, 2)),
        ];
        let mut live = ProducerState::default();
        let mut offsets = Vec::new();
        let mut offset = 0i64;
        let mut aborted_live = Vec::new();
        for step in &steps {
            let mut d = Draft::default();
            match step {
                Step::Batch(b) => {
                    let guard = b
                        .transactional
                        .then(|| live.verification_guard(b.producer_id, b.epoch));
                    d.check_batch(&live, b, Origin::Client, guard, offset)
                        .unwrap();
                    offsets.push(offset);
                    offset += b.offset_count;
                }
                Step::Marker(m) => {
                    d.check_marker(&live, m, Origin::Coordinator, offset)
                        .unwrap();
                    offsets.push(offset);
                    offset += 1;
                }
            }
            aborted_live.extend(live.apply(d));
        }
        let at = 5;
        // The snapshot as it was after `at` steps.
        let mut partial = ProducerState::default();
        let mut aborted_replayed = Vec::new();
        let replay = |state: &mut ProducerState, steps: &[Step], offsets: &[i64]| {
            let mut aborted = Vec::new();
            for (step, &o) in steps.iter().zip(offsets) {
                let mut d = Draft::default();
                match step {
                    Step::Batch(b) => {
                        d.check_batch(state, b, Origin::Replication, None, o)
                            .unwrap();
                    }
                    Step::Marker(m) => d.check_marker(state, m, Origin::Replication, o).unwrap(),
                }
                aborted.extend(state.apply(d));
            }
            aborted
        };
        aborted_replayed.extend(replay(&mut partial, &steps[..at], &offsets[..at]));
        let file = decode(&encode(&partial, offsets[at])).unwrap();
        let mut restored = restore(file);
        aborted_replayed.extend(replay(&mut restored, &steps[at..], &offsets[at..]));
        assert_eq!(sorted(&restored), sorted(&live));
        // Recovery starts with everything durable (the high watermark at the log end).
        live.on_high_watermark(offset);
        restored.on_high_watermark(offset);
        assert_eq!(
            restored.first_unstable_offset(),
            live.first_unstable_offset()
        );
        assert!(live.first_unstable_offset().is_none());
        assert_eq!(
            aborted_replayed, aborted_live,
            "the same transaction index entries"
        );
        assert_eq!(aborted_live.len(), 2);
    }

    #[test]
    fn round_trip_and_damage_refused() {
        let mut state = ProducerState::default();
        for (pid, n) in [(1i64, 7), (2, 2)] {
            for i in 0..n {
                let mut d = Draft::default();
                let b = ProducerBatch {
                    producer_id: pid,
                    epoch: 3,
                    first_seq: i * 10,
                    last_seq: i * 10 + 9,
                    offset_count: 10,
                    max_timestamp: 5_000 + i as i64,
                    transactional: false,
                };
                d.check_batch(
                    &state,
                    &b,
                    Origin::Client,
                    None,
                    (pid * 1000) + i as i64 * 10,
                )
                .unwrap();
                state.apply(d);
            }
        }
        let bytes = encode(&state, 1234);
        let file = decode(&bytes).unwrap();
        assert_eq!(file.offset, 1234);
        assert_eq!(restore(file), state);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        assert!(decode(&bytes[..5]).is_err());
        assert!(decode(b"garbage!!!!!!").is_err());
    }
}
