//! Record-level work of log compaction, on one stored batch at a time: listing its records'
//! keys (to build the cleaner's offset map) and filtering it down to the records compaction
//! keeps, rebuilt as Kafka's cleaner rebuilds them.
//!
//! A rebuilt batch keeps its base offset, leader epoch, producer fields and codec; its records
//! keep their offsets (offset deltas against the same base), so `recordCount` may be smaller
//! than `lastOffsetDelta + 1`, as in any compacted Kafka log. Tombstones follow KIP-534: the
//! first clean that keeps a tombstone stamps its batch with a delete horizon (`now +
//! delete.retention.ms`, stored as the base timestamp with attribute bit 6, record timestamp
//! deltas rewritten against it); a later clean after the horizon drops them.
//!
//! Pure functions, CPU-heavy for compressed batches: callers run them off the executor.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::builder::{compress, put_varint, Codec};
use super::{
    codec, read_varint, BatchView, ATTRIBUTES, BASE_TIMESTAMP, CONTROL_FLAG, CRC, HEADER_LEN,
    MAX_TIMESTAMP, RECORD_COUNT, TIMESTAMP_TYPE_LOG_APPEND,
};

/// Attribute bit 6: the base timestamp is the batch's delete horizon (KIP-534).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;
/// Most bytes a compressed batch may expand to when the cleaner looks into it.
const DECOMPRESSED_LIMIT: usize = 256 << 20;

/// One record of a batch, borrowed from its (decompressed) record section.
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub is_tombstone: bool,
    attributes: u8,
    offset_delta: i64,
    /// The record from its key length on (key, value, headers), copied as is when rebuilt.
    rest: &'a [u8],
}

/// The uncompressed record section of a batch (borrowed when it is not compressed), at most
/// `limit` bytes of it.
fn record_section<'a>(view: &BatchView<'a>, limit: usize) -> Result<Cow<'a, [u8]>, String> {
    let body = &view.bytes[HEADER_LEN..];
    match view.compression() {
        0 => Ok(Cow::Borrowed(body)),
        c => codec::decompress(c, body, limit).map(Cow::Owned),
    }
}

/// Parses every record of an uncompressed record section. Offset deltas must increase and
/// stay within the batch's `lastOffsetDelta`: a record claiming another batch's offset would
/// make compaction delete that batch's records.
fn parse<'a>(view: &BatchView<'_>, records: &'a [u8]) -> Result<Vec<Record<'a>>, String> {
    let broken = || {
        format!(
            "batch at offset {} has a malformed record",
            view.base_offset()
        )
    };
    // Every record takes at least 7 bytes: a hostile count cannot reserve much.
    let mut out = Vec::with_capacity((view.record_count().max(0) as usize).min(records.len() / 7));
    let last_delta = view.last_offset_delta() as i64;
    let mut pos = 0;
    while pos < records.len() {
        let len = read_varint(records, &mut pos).ok_or_else(broken)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= records.len())
            .ok_or_else(broken)?;
        let record = &records[..end];
        let attributes = *record.get(pos).ok_or_else(broken)?;
        let mut at = pos + 1;
        let timestamp_delta = read_varint(record, &mut at).ok_or_else(broken)?;
        let offset_delta = read_varint(record, &mut at).ok_or_else(broken)?;
        let rest_start = at;
        let key_len = read_varint(record, &mut at).ok_or_else(broken)?;
        let key = if key_len < 0 {
            None
        } else {
            let key_end = at
                .checked_add(key_len as usize)
                .filter(|&e| e <= end)
                .ok_or_else(broken)?;
            let key = &record[at..key_end];
            at = key_end;
            Some(key)
        };
        let value_len = read_varint(record, &mut at).ok_or_else(broken)?;
        let after_previous = out
            .last()
            .is_none_or(|r: &Record<'_>| offset_delta > r.offset_delta);
        if !(0..=last_delta).contains(&offset_delta) || !after_previous {
            return Err(format!(
                "batch at offset {} has a record at offset delta {offset_delta} (last delta \
                 {last_delta}, or not after the record before it)",
                view.base_offset()
            ));
        }
        out.push(Record {
            offset: view.base_offset().wrapping_add(offset_delta),
            timestamp: view.base_timestamp().wrapping_add(timestamp_delta),
            key,
            is_tombstone: value_len < 0,
            attributes,
            offset_delta,
            rest: &record[rest_start..end],
        });
        pos = end;
    }
    Ok(out)
}

/// (key, offset) of every keyed record of a batch, for the cleaner's offset map. Control
/// batches have no keys to compact.
pub fn keys(batch: &[u8]) -> Result<Vec<(Vec<u8>, i64)>, String> {
    let view = BatchView { bytes: batch };
    if view.attributes() & CONTROL_FLAG != 0 {
        return Ok(Vec::new());
    }
    let section = record_section(&view, DECOMPRESSED_LIMIT)?;
    Ok(parse(&view, &section)?
        .into_iter()
        .filter_map(|r| r.key.map(|k| (k.to_vec(), r.offset)))
        .collect())
}

/// Whether every record of a batch has a key, as a compacted topic requires on produce; an
/// error if its records are malformed or decompress to more than `limit` bytes.
pub fn all_keyed(batch: &[u8], limit: usize) -> Result<bool, String> {
    let view = BatchView { bytes: batch };
    let section = record_section(&view, limit)?;
    Ok(parse(&view, &section)?.iter().all(|r| r.key.is_some()))
}

/// A batch like `batch` with no records left: its header only, spanning the same offsets
/// (Kafka keeps such a batch where it is a producer's last, so its producer state survives).
pub fn empty_batch(batch: &[u8]) -> Vec<u8> {
    let view = BatchView { bytes: batch };
    let mut out = batch[..HEADER_LEN].to_vec();
    let attributes = view.attributes() & !0x07;
    out[8..12].copy_from_slice(&((HEADER_LEN - 12) as i32).to_be_bytes());
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// What compaction makes of one batch.
#[derive(Debug, PartialEq)]
pub enum Filtered {
    /// Written back unchanged.
    Keep,
    /// No record survives: the batch goes.
    Drop,
    /// Some records go (or tombstones get their delete horizon): this batch replaces it.
    Rewrite(Vec<u8>),
}

/// The outcome for one batch, with the delete horizon of tombstones it still holds.
#[derive(Debug, PartialEq)]
pub struct FilterOutcome {
    pub batch: Filtered,
    pub tombstone_horizon: Option<i64>,
}

/// Filters one batch: a record stays unless `superseded(key, offset)` (a newer record of its
/// key exists), it has no key (compacted logs hold keyed records only), or it is a tombstone
/// whose batch's delete horizon has passed at `now`.
pub fn filter(
    batch: &[u8],
    superseded: impl Fn(&[u8], i64) -> bool,
    now: i64,
    delete_retention_ms: i64,
) -> Result<FilterOutcome, String> {
    let view = BatchView { bytes: batch };
    let keep_whole = FilterOutcome {
        batch: Filtered::Keep,
        tombstone_horizon: None,
    };
    if view.attributes() & CONTROL_FLAG != 0 {
        return Ok(keep_whole);
    }
    let section = record_section(&view, DECOMPRESSED_LIMIT)?;
    let records = parse(&view, &section)?;
    let horizon = (view.attributes() & DELETE_HORIZON_FLAG != 0).then_some(view.base_timestamp());
    let kept: Vec<&Record<'_>> = records
        .iter()
        .filter(|r| match r.key {
            None => false,
            Some(k) if superseded(k, r.offset) => false,
            Some(_) => !(r.is_tombstone && horizon.is_some_and(|h| h <= now)),
        })
        .collect();
    if kept.is_empty() {
        return Ok(FilterOutcome {
            batch: Filtered::Drop,
            tombstone_horizon: None,
        });
    }
    let has_tombstones = kept.iter().any(|r| r.is_tombstone);
    let new_horizon = match horizon {
        Some(h) => Some(h),
        None if has_tombstones => Some(now.saturating_add(delete_retention_ms)),
        None => None,
    };
    let tombstone_horizon = new_horizon.filter(|_| has_tombstones);
    if kept.len() == records.len() && new_horizon == horizon {
        return Ok(FilterOutcome {
            batch: Filtered::Keep,
            tombstone_horizon,
        });
    }
    Ok(FilterOutcome {
        batch: Filtered::Rewrite(rebuild(&view, &kept, new_horizon)?),
        tombstone_horizon,
    })
}

/// A batch like `view` holding only `kept` (in offset order), under `horizon` if set. Its
/// `lastOffsetDelta` stays the original's (as Kafka's `filterTo` keeps the last offset), so
/// the batch still spans the offsets it did.
fn rebuild(
    view: &BatchView<'_>,
    kept: &[&Record<'_>],
    horizon: Option<i64>,
) -> Result<Vec<u8>, String> {
    let log_append_time = view.attributes() & TIMESTAMP_TYPE_LOG_APPEND != 0;
    let base_timestamp = horizon.unwrap_or(kept[0].timestamp);
    let max_timestamp = if log_append_time {
        view.max_timestamp()
    } else {
        kept.iter().map(|r| r.timestamp).max().unwrap_or(-1)
    };
    let mut records = BytesMut::new();
    let mut body = BytesMut::new();
    for r in kept {
        body.clear();
        body.put_u8(r.attributes);
        put_varint(&mut body, r.timestamp.wrapping_sub(base_timestamp));
        put_varint(&mut body, r.offset_delta);
        body.put_slice(r.rest);
        put_varint(&mut records, body.len() as i64);
        records.put_slice(&body);
    }
    let codec = match view.compression() {
        0 => Codec::None,
        1 => Codec::Gzip,
        2 => Codec::Snappy,
        3 => Codec::Lz4,
        4 => Codec::Zstd,
        other => return Err(format!("unknown compression codec {other}")),
    };
    let section = match codec {
        Codec::None => records.to_vec(),
        c => compress(c, &records).map_err(|e| e.to_string())?,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + section.len());
    out.extend_from_slice(&view.bytes[..HEADER_LEN]);
    out.extend_from_slice(&section);
    let len = out.len();
    let mut attributes = view.attributes() & !DELETE_HORIZON_FLAG;
    if horizon.is_some() {
        attributes |= DELETE_HORIZON_FLAG;
    }
    out[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::builder::BatchBuilder;

    /// A stored batch at `base`: records (key, value) with timestamps 1000, 1001, ...
    fn batch(base: i64, records: &[(Option<&str>, Option<&str>)], codec: Codec) -> Vec<u8> {
        let mut b = BatchBuilder::new(1000);
        for (i, (k, v)) in records.iter().enumerate() {
            b.push_record(1000 + i as i64, k.map(str::as_bytes), v.map(str::as_bytes));
        }
        let mut bytes = b.finish(codec).unwrap().to_vec();
        crate::record::assign_offsets(&mut bytes, base, 0, None);
        bytes
    }

    fn contents(batch: &[u8]) -> Vec<(i64, i64, Option<String>, bool)> {
        let view = crate::record::check_stored(batch).unwrap();
        let section = record_section(&view, DECOMPRESSED_LIMIT).unwrap();
        parse(&view, &section)
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.timestamp,
                    r.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                    r.is_tombstone,
                )
            })
            .collect()
    }

    #[test]
    fn keys_lists_keyed_records_with_offsets() {
        let b = batch(
            100,
            &[(Some("a"), Some("1")), (None, Some("x")), (Some("b"), None)],
            Codec::Lz4,
        );
        assert_eq!(
            keys(&b).unwrap(),
            vec![(b"a".to_vec(), 100), (b"b".to_vec(), 102)]
        );
    }

    #[test]
    fn superseded_and_keyless_records_go_offsets_stay() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let b = batch(
                10,
                &[
                    (Some("a"), Some("1")),
                    (Some("b"), Some("2")),
                    (None, Some("x")),
                    (Some("c"), Some("3")),
                ],
                codec,
            );
            let out = filter(&b, |k, _| k == b"b", 5000, 0).unwrap();
            let Filtered::Rewrite(nb) = out.batch else {
                panic!("expected a rewrite for {codec:?}");
            };
            assert_eq!(out.tombstone_horizon, None);
            let view = crate::record::check_stored(&nb).unwrap();
            assert_eq!(view.base_offset(), 10);
            assert_eq!(view.record_count(), 2);
            assert_eq!(view.last_offset_delta(), 3);
            assert_eq!(view.compression(), codec as i16);
            assert_eq!(view.max_timestamp(), 1003);
            assert_eq!(
                contents(&nb),
                vec![
                    (10, 1000, Some("a".into()), false),
                    (13, 1003, Some("c".into()), false)
                ]
            );
        }
    }

    #[test]
    fn untouched_batches_are_kept_and_emptied_ones_dropped() {
        let b = batch(
            0,
            &[(Some("a"), Some("1")), (Some("b"), Some("2"))],
            Codec::None,
        );
        assert_eq!(
            filter(&b, |_, _| false, 0, 0).unwrap().batch,
            Filtered::Keep
        );
        assert_eq!(filter(&b, |_, _| true, 0, 0).unwrap().batch, Filtered::Drop);
    }

    #[test]
    fn tombstones_get_a_horizon_then_go_after_it() {
        let b = batch(0, &[(Some("a"), Some("1")), (Some("t"), None)], Codec::Zstd);
        let first = filter(&b, |_, _| false, 10_000, 500).unwrap();
        assert_eq!(first.tombstone_horizon, Some(10_500));
        let Filtered::Rewrite(stamped) = first.batch else {
            panic!("the horizon must be written");
        };
        let view = crate::record::check_stored(&stamped).unwrap();
        assert_ne!(view.attributes() & DELETE_HORIZON_FLAG, 0);
        assert_eq!(view.base_timestamp(), 10_500);
        // Record timestamps survive the new base.
        assert_eq!(
            contents(&stamped),
            vec![
                (0, 1000, Some("a".into()), false),
                (1, 1001, Some("t".into()), true)
            ]
        );
        // Before the horizon nothing changes; after it the tombstone goes.
        let again = filter(&stamped, |_, _| false, 10_499, 500).unwrap();
        assert_eq!(again.batch, Filtered::Keep);
        assert_eq!(again.tombstone_horizon, Some(10_500));
        let after = filter(&stamped, |_, _| false, 10_500, 500).unwrap();
        let Filtered::Rewrite(clean) = after.batch else {
            panic!("the tombstone must go");
        };
        assert_eq!(after.tombstone_horizon, None);
        assert_eq!(contents(&clean), vec![(0, 1000, Some("a".into()), false)]);
    }

    #[test]
    fn a_malformed_record_is_an_error_not_a_panic() {
        let mut b = batch(0, &[(Some("a"), Some("1"))], Codec::None);
        b[HEADER_LEN] = 0x7e; // a record length far past the end
        assert!(filter(&b, |_, _| false, 0, 0).is_err());
        assert!(keys(&b).is_err());
        // A record past the batch's last offset delta would claim a later batch's offset.
        let mut b = batch(
            0,
            &[(Some("a"), Some("1")), (Some("b"), Some("2"))],
            Codec::None,
        );
        b[crate::record::LAST_OFFSET_DELTA..crate::record::LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&0i32.to_be_bytes());
        assert!(keys(&b).unwrap_err().contains("offset delta 1"));
        assert!(all_keyed(&b, 1 << 20).is_err());
    }
}
