//! A small blocking Kafka client of the project's own, used by the CLI (and later the perf
//! tool): one connection, request/response with the `kafka-protocol` codecs, record batches
//! built and read with its record codec.

pub mod cli;
pub mod groups;
pub mod partitioner;
pub mod transactions;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::record::builder::{BatchBuilder, Codec};

pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

impl Client {
    pub fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends one request at `version` and reads its response.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        self.write_request(request, version)?;
        self.read_response::<R>(version)
    }

    /// Writes a request that gets no response (Produce with acks=0).
    pub fn send_only<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<()> {
        self.write_request(request, version)
    }

    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<()> {
        self.correlation_id += 1;
        let frame = encode_request(request, version, self.correlation_id)?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    fn read_response<R: Request>(&mut self, version: i16) -> anyhow::Result<R::Response> {
        let (correlation_id, response) =
            decode_response::<R>(read_frame(&mut self.stream)?, version)?;
        if correlation_id != self.correlation_id {
            anyhow::bail!(
                "correlation id {correlation_id} does not match {}",
                self.correlation_id
            );
        }
        Ok(response)
    }

    /// The connection, for callers that pipeline (write and read from different threads).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

/// A size-prefixed request frame.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Bytes> {
    let key =
        ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown api key {}", R::KEY))?;
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("shardlog"));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, key.request_header_version(version))?;
    request.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Reads one size-prefixed frame (without its prefix).
pub fn read_frame(stream: &mut impl Read) -> anyhow::Result<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if n < 0 {
        anyhow::bail!("broker sent a negative frame length");
    }
    let mut body = vec![0u8; n as usize];
    stream.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}

/// Decodes a response frame: its correlation id and body.
pub fn decode_response<R: Request>(
    mut body: Bytes,
    version: i16,
) -> anyhow::Result<(i32, R::Response)> {
    let key =
        ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown api key {}", R::KEY))?;
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))?;
    Ok((
        header.correlation_id,
        R::Response::decode(&mut body, version)?,
    ))
}

/// Encodes records as one v2 batch (offsets relative from 0; the broker assigns real ones).
/// A Produce request carries exactly one batch per partition.
pub fn encode_batch(
    records: &[(Option<Bytes>, Bytes)],
    compression: Compression,
) -> anyhow::Result<Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let codec = match compression {
        Compression::None => Codec::None,
        Compression::Gzip => Codec::Gzip,
        Compression::Snappy => Codec::Snappy,
        Compression::Lz4 => Codec::Lz4,
        Compression::Zstd => Codec::Zstd,
    };
    let mut batch = BatchBuilder::new(now);
    for (k, v) in records {
        batch.push(now, k.as_deref(), v);
    }
    Ok(batch.finish(codec)?)
}

/// Decodes every record of the batches in a fetch response's record set; a trailing partial
/// batch (allowed by the protocol) is ignored.
/// The offset after the last whole batch in `records`: where the next fetch starts. Records
/// alone can't tell, since compaction may have removed the last records of a batch.
pub fn batches_end(records: &[u8]) -> Option<i64> {
    crate::record::valid_prefix(records)
        .0
        .last()
        .map(|b| b.next_offset())
}

/// Control records (transaction markers) are not data and are left out.
pub fn decode_records(records: Bytes) -> anyhow::Result<Vec<Consumed>> {
    committed_records(records, None)
}

/// Like `decode_records`, but as a read_committed consumer sees them: `aborted` lists the
/// aborted transactions (producer id, first offset) a Fetch response gave, and a
/// transactional batch of such a producer from that offset on is skipped until the producer's
/// abort marker, as the Java consumer does.
pub fn committed_records(
    mut records: Bytes,
    aborted: Option<&[(i64, i64)]>,
) -> anyhow::Result<Vec<Consumed>> {
    let mut pending: Vec<(i64, i64)> = aborted.unwrap_or_default().to_vec();
    pending.sort_by_key(|a| a.1);
    let mut skipping: std::collections::HashSet<i64> = Default::default();
    let mut out = Vec::new();
    while records.len() >= 12 {
        let len = (&records[8..12]).get_i32();
        let total = 12 + len.max(0) as usize;
        if total > records.len() {
            break;
        }
        let mut batch = records.split_to(total);
        let view = crate::record::BatchView { bytes: &batch };
        if batch.len() >= crate::record::HEADER_LEN && view.is_transactional() {
            let (pid, base) = (view.producer_id(), view.base_offset());
            // Aborted transactions that began at or before this batch start skipping.
            while let Some(&(p, first)) = pending.first() {
                if first > base {
                    break;
                }
                skipping.insert(p);
                pending.remove(0);
            }
            if view.is_control() {
                if crate::record::control::read_marker(&batch)
                    .is_some_and(|m| m.kind == crate::record::control::ABORT)
                {
                    skipping.remove(&pid);
                }
                continue;
            }
            if skipping.contains(&pid) {
                continue;
            }
        } else if batch.len() >= crate::record::HEADER_LEN && view.is_control() {
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut batch)?;
        out.extend(
            set.records
                .into_iter()
                .filter(|r| !r.control)
                .map(|r| Consumed {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_records_make_one_batch() {
        let records: Vec<(Option<Bytes>, Bytes)> = (0..100)
            .map(|i| (None, Bytes::from(format!("v{i}"))))
            .collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let encoded = encode_batch(&records, compression).unwrap();
            let (batches, used) = crate::record::valid_prefix(&encoded);
            assert_eq!((batches.len(), used), (1, encoded.len()), "{compression:?}");
            assert_eq!(batches[0].record_count(), 100);
            assert_eq!(
                i32::from_be_bytes(encoded[53..57].try_into().unwrap()),
                -1,
                "base sequence"
            );
            assert_eq!(decode_records(encoded).unwrap().len(), 100);
        }
    }
}
