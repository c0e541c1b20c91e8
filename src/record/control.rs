//! Control batches: the commit and abort markers that end a transaction in a partition.
//!
//! A marker is a transactional control batch of one record whose key is (i16 version 0,
//! i16 type: 0 abort, 1 commit) and whose value is (i16 version 0, i32 coordinator epoch), as
//! Kafka's `EndTransactionMarker` writes it. Control batches are never compressed.

use bytes::Bytes;

use super::builder::{BatchBuilder, Codec, ProducerFields};
use super::BatchView;

pub const ABORT: i16 = 0;
pub const COMMIT: i16 = 1;

/// A marker as read back from a control batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlRecord {
    /// 0 abort, 1 commit (other types are possible in newer Kafka versions).
    pub kind: i16,
    pub coordinator_epoch: i32,
}

/// The batch of a commit or abort marker for a producer, at offset 0 (the log assigns one).
pub fn marker_batch(
    producer_id: i64,
    epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    timestamp: i64,
) -> Bytes {
    let key = [
        0i16.to_be_bytes(),
        (if commit { COMMIT } else { ABORT }).to_be_bytes(),
    ]
    .concat();
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = BatchBuilder::new(timestamp)
        .producer(ProducerFields {
            producer_id,
            epoch,
            base_sequence: -1,
            transactional: true,
        })
        .control();
    b.push(timestamp, Some(&key), &value);
    // An uncompressed batch cannot fail to build.
    b.finish(Codec::None).unwrap_or_default()
}

/// The marker in a control batch, or `None` if the batch is not a readable one.
pub fn read_marker(batch: &[u8]) -> Option<ControlRecord> {
    let view = BatchView { bytes: batch };
    if !view.is_control() || view.compression() != 0 || batch.len() <= super::HEADER_LEN {
        return None;
    }
    let records = &batch[super::HEADER_LEN..];
    let mut pos = 0;
    let _len = super::read_varint(records, &mut pos)?;
    pos += 1; // attributes
    super::read_varint(records, &mut pos)?; // timestamp delta
    super::read_varint(records, &mut pos)?; // offset delta
    let key_len = usize::try_from(super::read_varint(records, &mut pos)?).ok()?;
    let key = records.get(pos..pos.checked_add(key_len)?)?;
    pos += key_len;
    let value_len = usize::try_from(super::read_varint(records, &mut pos)?).ok()?;
    let value = records.get(pos..pos.checked_add(value_len)?)?;
    if key.len() < 4 {
        return None;
    }
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let coordinator_epoch = match value {
        [_, _, a, b, c, d, ..] => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => -1,
    };
    Some(ControlRecord {
        kind,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_decode_with_the_kafka_codec() {
        for commit in [true, false] {
            let b = marker_batch(42, 3, 7, commit, 1_000);
            let view = crate::record::check_stored(&b).unwrap();
            assert!(view.is_control() && view.is_transactional());
            assert_eq!(
                (
                    view.producer_id(),
                    view.producer_epoch(),
                    view.base_sequence()
                ),
                (42, 3, -1)
            );
            assert_eq!(
                read_marker(&b),
                Some(ControlRecord {
                    kind: if commit { COMMIT } else { ABORT },
                    coordinator_epoch: 7
                })
            );
            let mut buf = b.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            assert_eq!(set.records.len(), 1);
            assert!(set.records[0].control && set.records[0].transactional);
            assert_eq!(set.records[0].producer_id, 42);
        }
        let plain = crate::client::encode_batch(
            &[(None, Bytes::from("v"))],
            kafka_protocol::records::Compression::None,
        )
        .unwrap();
        assert_eq!(read_marker(&plain), None);
    }
}
