//! Builds a v2 record batch directly into bytes: records are varint-encoded as they are added,
//! then the record section is compressed (Kafka's framings: gzip, xerial snappy, lz4 frames of
//! independent blocks, zstd) and the 61-byte header written with its CRC-32C. Used by the
//! project's client and load generator, where per-record allocation would cost too much.
//! Offsets start at 0 (the broker assigns real ones); an idempotent or transactional producer
//! sets its id, epoch and first sequence with `producer`.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};

use super::{ATTRIBUTES, CRC, HEADER_LEN};

/// Kafka compression codec ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub fn parse(name: &str) -> Option<Codec> {
        Some(match name {
            "none" | "uncompressed" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            _ => return None,
        })
    }

    /// The `compression.type` name of the codec.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

pub(crate) fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// The producer fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

impl ProducerFields {
    /// A batch of no producer (not idempotent).
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

pub struct BatchBuilder {
    /// The header's 61 bytes (filled in by `finish`), then the records.
    records: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerFields,
    control: bool,
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64) -> Self {
        Self::with_capacity(base_timestamp, 0)
    }

    pub fn with_capacity(base_timestamp: i64, bytes: usize) -> Self {
        let mut records = BytesMut::with_capacity(HEADER_LEN + bytes);
        records.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            records,
            count: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
            producer: ProducerFields::NONE,
            control: false,
        }
    }

    /// Marks the batch as written by this producer.
    pub fn producer(mut self, producer: ProducerFields) -> Self {
        self.producer = producer;
        self
    }

    /// Marks the batch as a control batch (a transaction marker).
    pub fn control(mut self) -> Self {
        self.control = true;
        self
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Bytes of records so far (before compression and the header).
    pub fn size(&self) -> usize {
        self.records.len() - HEADER_LEN
    }

    /// Appends a record without headers.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: &[u8]) {
        self.push_record(timestamp, key, Some(value));
    }

    /// Appends a record without headers; a `None` value is a tombstone (compaction drops the
    /// key).
    pub fn push_record(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let ts_delta = timestamp - self.base_timestamp;
        let offset_delta = self.count as i64;
        let key_len = key.map(|k| k.len() as i64).unwrap_or(-1);
        let value_len = value.map(|v| v.len() as i64).unwrap_or(-1);
        let body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map(|k| k.len()).unwrap_or(0)
            + varint_len(value_len)
            + value.map(|v| v.len()).unwrap_or(0)
            + 1;
        self.records.reserve(body + 5);
        put_varint(&mut self.records, body as i64);
        self.records.put_u8(0); // attributes
        put_varint(&mut self.records, ts_delta);
        put_varint(&mut self.records, offset_delta);
        put_varint(&mut self.records, key_len);
        if let Some(k) = key {
            self.records.put_slice(k);
        }
        put_varint(&mut self.records, value_len);
        if let Some(v) = value {
            self.records.put_slice(v);
        }
        put_varint(&mut self.records, 0); // no headers
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// The finished batch. An empty builder makes an empty batch, which brokers refuse.
    /// Uncompressed, the records stay where they are and the header is written in front.
    pub fn finish(mut self, codec: Codec) -> std::io::Result<Bytes> {
        let mut out = match codec {
            Codec::None => self.records,
            _ => {
                let body = compress(codec, &self.records[HEADER_LEN..])?;
                self.records.truncate(HEADER_LEN);
                self.records.extend_from_slice(&body);
                self.records
            }
        };
        let len = out.len();
        let mut header = &mut out[..HEADER_LEN];
        header.put_i64(0); // base offset
        header.put_i32((len - 12) as i32);
        header.put_i32(-1); // partition leader epoch
        header.put_i8(2); // magic
        header.put_u32(0); // CRC, below
        let mut attributes = codec as i16;
        if self.producer.transactional {
            attributes |= super::TRANSACTIONAL_FLAG;
        }
        if self.control {
            attributes |= super::CONTROL_FLAG;
        }
        header.put_i16(attributes);
        header.put_i32(self.count - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(self.producer.producer_id);
        header.put_i16(self.producer.epoch);
        header.put_i32(self.producer.base_sequence);
        header.put_i32(self.count);
        let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
        out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

/// Compresses a record section with a codec other than `None`, in Kafka's framing.
pub(crate) fn compress(codec: Codec, data: &[u8]) -> std::io::Result<Vec<u8>> {
    Ok(match codec {
        Codec::None => data.to_vec(), // not reached from `finish`, which keeps records in place
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data)?;
            e.finish()?
        }
        Codec::Snappy => {
            // Xerial framing, as the Java client writes it: magic, version 1, compatible 1,
            // then (length, block) pairs of up to 32 KiB of input each.
            let mut out = b"\x82SNAPPY\x00".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(32 << 10) {
                let block = enc.compress_vec(chunk).map_err(std::io::Error::other)?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Codec::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(1)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())?;
            e.write_all(data)?;
            let (out, result) = e.finish();
            result?;
            out
        }
        Codec::Zstd => zstd::bulk::compress(data, 1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            8191,
            8192,
            i32::MAX as i64,
            i64::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    /// What the builder writes, Kafka's own record codec (kafka-protocol) reads back exactly,
    /// for every compression, and the broker's validation accepts.
    #[test]
    fn batches_decode_with_the_kafka_codec() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let mut b = BatchBuilder::new(1_000);
            for i in 0..300 {
                let key = format!("k{i}");
                let value = format!("value-{i}").repeat(i % 7 + 1);
                b.push(
                    1_000 + i as i64,
                    (i % 3 != 0).then_some(key.as_bytes()),
                    value.as_bytes(),
                );
            }
            let batch = b.finish(codec).unwrap();
            let valid = crate::record::validate_batches(batch.clone(), 1 << 20).unwrap();
            assert_eq!(valid.offset_count, 300);
            let mut buf = batch.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            assert_eq!(set.records.len(), 300, "{codec:?}");
            for (i, r) in set.records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_000 + i as i64);
                let key = format!("k{i}");
                assert_eq!(r.key.as_deref(), (i % 3 != 0).then_some(key.as_bytes()));
                assert_eq!(
                    r.value.as_deref(),
                    Some(format!("value-{i}").repeat(i % 7 + 1).as_bytes())
                );
            }
        }
    }
}
