//! Kafka v2 record batches as raw bytes.
//!
//! Owns the batch wire layout (the 61-byte header), validation of batches that arrive in Produce
//! requests (magic 2, CRC-32C, lengths, record count, size limit) and the header rewrite that gives
//! a batch its offsets. Batches are never decompressed here: an uncompressed batch has its records'
//! framing checked, a compressed one is trusted past its CRC, as Kafka does for v2.
//!
//! Invariant: every batch that `validate_batches` accepts is a complete, CRC-valid v2 batch whose
//! `lastOffsetDelta + 1 == recordCount`; `iterate_batches` over stored bytes stops at the first
//! batch that is not, which is how recovery finds a torn or damaged tail.

pub mod builder;
pub mod codec;
pub mod compact;
pub mod control;

use bytes::Bytes;

/// Size of the fixed v2 batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before the `batchLength` field ends: a batch occupies `LOG_OVERHEAD + batchLength`.
pub const LOG_OVERHEAD: usize = 12;

pub const BASE_OFFSET: usize = 0;
pub const BATCH_LENGTH: usize = 8;
pub const PARTITION_LEADER_EPOCH: usize = 12;
pub const MAGIC: usize = 16;
pub const CRC: usize = 17;
pub const ATTRIBUTES: usize = 21;
pub const LAST_OFFSET_DELTA: usize = 23;
pub const BASE_TIMESTAMP: usize = 27;
pub const MAX_TIMESTAMP: usize = 35;
pub const PRODUCER_ID: usize = 43;
pub const PRODUCER_EPOCH: usize = 51;
pub const BASE_SEQUENCE: usize = 53;
pub const RECORD_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
pub const CONTROL_FLAG: i16 = 0x20;
/// The compression codec id of zstd, which Produce accepts only from v7.
pub const ZSTD: i16 = 4;

fn get_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn get_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// A read-only view of one complete batch (header plus records).
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    pub bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    pub fn base_offset(&self) -> i64 {
        get_i64(self.bytes, BASE_OFFSET)
    }
    pub fn last_offset_delta(&self) -> i32 {
        get_i32(self.bytes, LAST_OFFSET_DELTA)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn attributes(&self) -> i16 {
        get_i16(self.bytes, ATTRIBUTES)
    }
    pub fn compression(&self) -> i16 {
        self.attributes() & COMPRESSION_MASK
    }
    pub fn base_timestamp(&self) -> i64 {
        get_i64(self.bytes, BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        get_i64(self.bytes, MAX_TIMESTAMP)
    }
    pub fn record_count(&self) -> i32 {
        get_i32(self.bytes, RECORD_COUNT)
    }
    pub fn producer_id(&self) -> i64 {
        get_i64(self.bytes, PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        get_i16(self.bytes, PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        get_i32(self.bytes, BASE_SEQUENCE)
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_FLAG != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_FLAG != 0
    }
    pub fn stored_crc(&self) -> u32 {
        get_i32(self.bytes, CRC) as u32
    }
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[ATTRIBUTES..])
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Why a batch was refused; each maps onto one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Framing broken or CRC mismatch: CORRUPT_MESSAGE.
    Corrupt(String),
    /// Well framed but not acceptable (magic, counts): INVALID_RECORD.
    Invalid(String),
    /// Larger than `max.message.bytes`: MESSAGE_TOO_LARGE.
    TooLarge(usize),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Corrupt(m) => write!(f, "corrupt record batch: {m}"),
            BatchError::Invalid(m) => write!(f, "invalid record batch: {m}"),
            BatchError::TooLarge(n) => write!(f, "record batch of {n} bytes is too large"),
        }
    }
}

/// Length of the batch starting at `buf[0]`, if its header's length field can be read.
pub fn framed_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = get_i32(buf, BATCH_LENGTH);
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some(LOG_OVERHEAD + len as usize)
}

/// Checks one complete batch read back from storage: length, magic and CRC.
pub fn check_stored(bytes: &[u8]) -> Result<BatchView<'_>, BatchError> {
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::Corrupt(format!(
            "{} bytes is shorter than a header",
            bytes.len()
        )));
    }
    let view = BatchView { bytes };
    if bytes[MAGIC] != 2 {
        return Err(BatchError::Invalid(format!(
            "magic {} is not 2",
            bytes[MAGIC] as i8
        )));
    }
    if view.stored_crc() != view.computed_crc() {
        return Err(BatchError::Corrupt(format!(
            "CRC-32C {:#010x} does not match the stored {:#010x}",
            view.computed_crc(),
            view.stored_crc()
        )));
    }
    if view.last_offset_delta() < 0 || view.record_count() < 0 {
        return Err(BatchError::Invalid(
            "negative lastOffsetDelta or record count".into(),
        ));
    }
    Ok(view)
}

/// Iterates over the complete, valid batches at the start of `buf`. Returns the batches and the
/// number of bytes they cover; whatever follows (a torn batch, damage, zero padding) is left.
pub fn valid_prefix(buf: &[u8]) -> (Vec<BatchView<'_>>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(len) = framed_len(&buf[pos..]) {
        if pos + len > buf.len() {
            break;
        }
        match check_stored(&buf[pos..pos + len]) {
            Ok(view) => out.push(view),
            Err(_) => break,
        }
        pos += len;
    }
    (out, pos)
}

/// Length of the longest prefix of `batches` made of whole batches and at most `limit` long.
pub fn whole_batches_within(batches: &[u8], limit: usize) -> usize {
    let mut end = 0;
    while let Some(len) = framed_len(&batches[end..]) {
        if end + len > limit || end + len > batches.len() {
            break;
        }
        end += len;
    }
    end
}

/// The batch in a produce request's `records`, validated (a `Vec` of ranges so stored and
/// future multi-batch sources share the append path).
#[derive(Clone)]
pub struct ValidatedBatches {
    pub records: Bytes,
    /// Byte ranges of each batch within `records`.
    pub batches: Vec<(usize, usize)>,
    /// Sum over batches of `lastOffsetDelta + 1`.
    pub offset_count: i64,
}

pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

impl ValidatedBatches {
    /// A batch the broker built itself (a transaction marker), trusted as it is.
    pub fn trusted(records: Bytes) -> ValidatedBatches {
        let view = BatchView { bytes: &records };
        let offset_count = view.last_offset_delta() as i64 + 1;
        let len = records.len();
        ValidatedBatches {
            records,
            batches: vec![(0, len)],
            offset_count,
        }
    }

    /// The header of the first (in a Produce request: the only) batch.
    pub fn first(&self) -> Option<BatchView<'_>> {
        self.batches.first().map(|&(s, e)| BatchView {
            bytes: &self.records[s..e],
        })
    }

    /// The compression codec id of the (first) batch.
    pub fn compression(&self) -> i16 {
        self.batches
            .first()
            .map(|&(s, e)| {
                BatchView {
                    bytes: &self.records[s..e],
                }
                .compression()
            })
            .unwrap_or(0)
    }
}

/// Counts the records of an uncompressed batch by walking their length prefixes.
fn count_plain_records(records: &[u8]) -> Option<i32> {
    let mut pos = 0;
    let mut count = 0i32;
    while pos < records.len() {
        let len = read_varint(records, &mut pos)?;
        if len < 0 || pos + len as usize > records.len() {
            return None;
        }
        pos += len as usize;
        count = count.checked_add(1)?;
    }
    Some(count)
}

/// Validates every batch in a Produce request's record set.
pub fn validate_batches(
    records: Bytes,
    max_batch_bytes: usize,
) -> Result<ValidatedBatches, BatchError> {
    let mut batches = Vec::new();
    let mut offset_count = 0i64;
    let mut pos = 0;
    if records.is_empty() {
        return Err(BatchError::Invalid("empty record set".into()));
    }
    while pos < records.len() {
        if !batches.is_empty() {
            // Kafka: a v3+ Produce carries exactly one batch per partition.
            return Err(BatchError::Invalid(
                "a produce request may carry only one record batch per partition".into(),
            ));
        }
        let rest = &records[pos..];
        let len = framed_len(rest)
            .ok_or_else(|| BatchError::Corrupt(format!("unreadable batch length at byte {pos}")))?;
        if len > rest.len() {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {pos} claims {len} bytes, {} remain",
                rest.len()
            )));
        }
        if len > max_batch_bytes {
            return Err(BatchError::TooLarge(len));
        }
        let view = check_stored(&rest[..len])?;
        let count = view.record_count();
        if count == 0 || view.last_offset_delta() != count - 1 {
            return Err(BatchError::Invalid(format!(
                "record count {count} does not match lastOffsetDelta {}",
                view.last_offset_delta()
            )));
        }
        if view.compression() == 0 && count_plain_records(&view.bytes[HEADER_LEN..]) != Some(count)
        {
            return Err(BatchError::Invalid(format!(
                "records do not add up to the count {count}"
            )));
        }
        if view.attributes() & CONTROL_FLAG != 0 {
            return Err(BatchError::Invalid(
                "clients may not write control batches".into(),
            ));
        }
        if view.compression() > 4 {
            return Err(BatchError::Invalid(format!(
                "unknown compression {}",
                view.compression()
            )));
        }
        offset_count += count as i64;
        batches.push((pos, pos + len));
        pos += len;
    }
    Ok(ValidatedBatches {
        records,
        batches,
        offset_count,
    })
}

/// Rewrites a batch copied into `batch` for the log: base offset, leader epoch and, under
/// LogAppendTime, the timestamp type and max timestamp (which the CRC covers, so it is redone).
pub fn assign_offsets(
    batch: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time {
        let attrs = get_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_LOG_APPEND;
        batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
        batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Most bytes a compressed batch may expand to when looked into.
const DECOMPRESSED_LIMIT: usize = 64 << 20;

/// (offset, timestamp) of every record in `records` (a batch's record section, uncompressed),
/// reading only each record's length, attributes and timestamp/offset deltas: headers, keys
/// and values are skipped, never decoded.
pub fn scan_timestamps(
    base_offset: i64,
    base_timestamp: i64,
    records: &[u8],
) -> Option<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let len = read_varint(records, &mut pos)?;
        let end = pos.checked_add(usize::try_from(len).ok()?)?;
        if end > records.len() {
            return None;
        }
        let mut at = pos + 1; // attributes
        let timestamp_delta = read_varint(records, &mut at)?;
        let offset_delta = read_varint(records, &mut at)?;
        out.push((
            base_offset.wrapping_add(offset_delta),
            base_timestamp.wrapping_add(timestamp_delta),
        ));
        pos = end;
    }
    Some(out)
}

/// (offset, timestamp) of each record of a batch, for lookups by time. A compressed batch is
/// decompressed (bounded); CPU-heavy, so callers run it off the executor. A batch that cannot
/// be read record by record answers for itself: its base offset with its max timestamp.
pub fn record_timestamps(batch: &[u8]) -> Vec<(i64, i64)> {
    let view = BatchView { bytes: batch };
    let whole_batch = vec![(view.base_offset(), view.max_timestamp())];
    if view.attributes() & TIMESTAMP_TYPE_LOG_APPEND != 0 || batch.len() < HEADER_LEN {
        return whole_batch;
    }
    let body = &batch[HEADER_LEN..];
    let plain;
    let records = match view.compression() {
        0 => body,
        codec => match codec::decompress(codec, body, DECOMPRESSED_LIMIT) {
            Ok(p) => {
                plain = p;
                &plain[..]
            }
            Err(_) => return whole_batch,
        },
    };
    scan_timestamps(view.base_offset(), view.base_timestamp(), records).unwrap_or(whole_batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn whole_batch_prefix() {
        let batch = crate::client::encode_batch(
            &[(None, Bytes::from("v"))],
            kafka_protocol::records::Compression::None,
        )
        .unwrap();
        let three = [&batch[..], &batch[..], &batch[..]].concat();
        let n = batch.len();
        assert_eq!(whole_batches_within(&three, 0), 0);
        assert_eq!(whole_batches_within(&three, n - 1), 0);
        assert_eq!(whole_batches_within(&three, 2 * n + 5), 2 * n);
        assert_eq!(whole_batches_within(&three, usize::MAX), 3 * n);
    }

    #[test]
    fn varint_zigzag() {
        let mut pos = 0;
        assert_eq!(read_varint(&[0x03], &mut pos), Some(-2));
        let mut pos = 0;
        assert_eq!(read_varint(&[0xac, 0x02], &mut pos), Some(150));
    }
}
