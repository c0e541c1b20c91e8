//! The `<20-digit offset>.snapshot` file: a partition's producer state as it stood when the log
//! ended at that offset (all kept batches of every producer), so that recovery replays only
//! the log after it.
//!
//! Layout: `SLPS`, u16 version (1), u32 CRC-32 (IEEE) of the payload, then the payload: an
//! rkyv archive of [`SnapshotFile`], validated before use (a damaged file is refused, never
//! trusted).

use rkyv::rancor::Error as RkyvError;

use super::producer_state::{BatchMeta, ProducerEntry, ProducerState};

const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
const HEADER: usize = 10;

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
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads a snapshot file; an error names what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, String> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err("not a shardlog producer snapshot".into());
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(format!("unknown snapshot version {version}"));
    }
    let crc = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let payload = &bytes[HEADER..];
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    // The archive wants aligned bytes.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
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
