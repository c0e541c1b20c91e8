//! Fetch responses framed by hand, so records are never copied into the response: the frame
//! is a list of parts — framing bytes, records already in memory (sent as they are), pieces
//! of the shard's buffers (hot tail, read-ahead) and ranges of segment files (sent by the
//! kernel with sendfile when `shardlog.fetch.zero.copy` is on). The codec's encoder would copy every record batch into
//! one buffer. Byte for byte the same as the codec's encoding for Fetch v4–v12 (a unit test
//! holds the two side by side).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;

use crate::storage::chain::{Chain, Piece};
use crate::storage::log::FileSlice;

/// Records of at least this many bytes go out as their own part; smaller ones are copied into
/// the framing (one send instead of two).
const SEPARATE_PART_BYTES: usize = 16 << 10;

/// One piece of a response frame, written to the socket in order.
#[derive(Debug)]
pub enum Part {
    Bytes(Bytes),
    Buffer(Piece),
    File(FileSlice),
}

impl Part {
    pub fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::Buffer(p) => p.len(),
            Part::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A partition's records carried beside the response message (its `records` field is then
/// ignored).
#[derive(Debug)]
pub enum Beside {
    File(FileSlice),
    Buffers(Chain),
}

impl Beside {
    pub fn len(&self) -> usize {
        match self {
            Beside::File(f) => f.len,
            Beside::Buffers(c) => c.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Framer {
    flexible: bool,
    /// The frame's first bytes (size prefix, header), kept mutable until the size is known.
    first: Option<BytesMut>,
    parts: Vec<Part>,
    buf: BytesMut,
}

impl Framer {
    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    /// An array's length (`None`: a null array).
    fn array_len(&mut self, n: Option<usize>) {
        match (self.flexible, n) {
            (true, Some(n)) => self.uvarint(n as u64 + 1),
            (true, None) => self.uvarint(0),
            (false, Some(n)) => self.buf.put_i32(n as i32),
            (false, None) => self.buf.put_i32(-1),
        }
    }

    fn string(&mut self, s: &str) {
        if self.flexible {
            self.uvarint(s.len() as u64 + 1);
        } else {
            self.buf.put_i16(s.len() as i16);
        }
        self.buf.put_slice(s.as_bytes());
    }

    /// An empty set of tagged fields (flexible versions only).
    fn no_tags(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }

    /// The records field: its length, then the records as a part of their own when large.
    fn records(&mut self, records: Option<&Bytes>, beside: Option<&Beside>) {
        let len = beside.map(Beside::len).or(records.map(Bytes::len));
        self.array_len(len);
        if let Some(b) = beside {
            self.flush();
            match b {
                Beside::File(f) => self.parts.push(Part::File(f.clone())),
                Beside::Buffers(c) => {
                    // Small pieces of written buffers (the hot tail holds one per write
                    // round) are copied into the framing: one send instead of many.
                    for p in &c.pieces {
                        match p {
                            Piece::Written { buf, start, end }
                                if end - start < SEPARATE_PART_BYTES =>
                            {
                                self.buf.put_slice(&buf.as_bytes()[*start..*end]);
                            }
                            _ => {
                                self.flush();
                                self.parts.push(Part::Buffer(p.clone()));
                            }
                        }
                    }
                }
            }
        } else if let Some(r) = records {
            if r.len() >= SEPARATE_PART_BYTES {
                self.flush();
                self.parts.push(Part::Bytes(r.clone()));
            } else {
                self.buf.put_slice(r);
            }
        }
    }

    fn flush(&mut self) {
        if self.first.is_none() {
            self.first = Some(self.buf.split());
        } else if !self.buf.is_empty() {
            self.parts.push(Part::Bytes(self.buf.split().freeze()));
        }
    }
}

/// The whole frame (size prefix, response header, body) of a Fetch response of `version`
/// (4–17). `beside` has one entry per partition in response order: `Some` where that
/// partition's records travel beside the message (its `records` field is then ignored).
pub fn frame(
    correlation_id: i32,
    version: i16,
    response: &FetchResponse,
    beside: &[Option<Beside>],
) -> Vec<Part> {
    let flexible = version >= 12;
    let mut f = Framer {
        flexible,
        first: None,
        parts: Vec::new(),
        buf: BytesMut::with_capacity(256),
    };
    f.buf.put_i32(0); // the size, patched below
    f.buf.put_i32(correlation_id);
    f.no_tags(); // response header v1 from Fetch v12 on
    f.buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        f.buf.put_i16(response.error_code);
        f.buf.put_i32(response.session_id);
    }
    f.array_len(Some(response.responses.len()));
    let mut beside = beside.iter();
    for topic in &response.responses {
        if version >= 13 {
            f.buf.put_slice(topic.topic_id.as_bytes());
        } else {
            f.string(topic.topic.0.as_str());
        }
        f.array_len(Some(topic.partitions.len()));
        for p in &topic.partitions {
            f.buf.put_i32(p.partition_index);
            f.buf.put_i16(p.error_code);
            f.buf.put_i64(p.high_watermark);
            f.buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                f.buf.put_i64(p.log_start_offset);
            }
            let aborted = p.aborted_transactions.as_ref();
            f.array_len(aborted.map(Vec::len));
            for a in aborted.into_iter().flatten() {
                f.buf.put_i64(a.producer_id.0);
                f.buf.put_i64(a.first_offset);
                f.no_tags();
            }
            if version >= 11 {
                f.buf.put_i32(p.preferred_read_replica.0);
            }
            let outside = beside.next().and_then(Option::as_ref);
            f.records(p.records.as_ref(), outside);
            f.no_tags();
        }
        f.no_tags();
    }
    f.no_tags();
    f.flush();
    let mut first = f.first.take().unwrap_or_default();
    let size = first.len() + f.parts.iter().map(Part::len).sum::<usize>() - 4;
    first[..4].copy_from_slice(&(size as i32).to_be_bytes());
    f.parts.insert(0, Part::Bytes(first.freeze()));
    f.parts
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, ProducerId, ResponseKind};

    use super::*;

    fn response(big: Bytes) -> FetchResponse {
        let mut r = FetchResponse::default();
        r.throttle_time_ms = 3;
        for (t, name) in ["alpha", "beta"].iter().enumerate() {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = crate::protocol::topic_name(name);
            topic.topic_id = uuid::Uuid::from_bytes([t as u8 + 1; 16]);
            for i in 0..3 {
                let mut p = PartitionData::default();
                p.partition_index = i;
                p.high_watermark = 100 + i as i64;
                p.last_stable_offset = 100 + i as i64;
                p.log_start_offset = 7;
                p.preferred_read_replica = BrokerId(-1);
                p.records = match (t, i) {
                    (0, 0) => Some(big.clone()),
                    (0, 1) => Some(Bytes::from_static(b"small records")),
                    (1, 2) => None,
                    _ => Some(Bytes::new()),
                };
                if (t, i) == (1, 0) {
                    p.error_code = 1;
                    p.aborted_transactions = Some(vec![AbortedTransaction::default()
                        .with_producer_id(ProducerId(9))
                        .with_first_offset(4)]);
                }
                topic.partitions.push(p);
            }
            r.responses.push(topic);
        }
        r
    }

    fn concat(parts: &[Part]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::Buffer(_) => panic!("no buffers in this test"),
                Part::File(_) => panic!("no files in this test"),
            }
        }
        out
    }

    #[test]
    fn matches_the_codec_for_every_version() {
        let big = Bytes::from(vec![0xab; SEPARATE_PART_BYTES + 5]);
        let r = response(big);
        for version in 4..=17 {
            let ours = frame(42, version, &r, &[]);
            let theirs =
                crate::protocol::frame(42, ApiKey::Fetch, version, &ResponseKind::Fetch(r.clone()))
                    .unwrap();
            assert_eq!(concat(&ours), theirs.to_vec(), "Fetch v{version}");
            // The large records travel as their own part, not copied.
            assert!(ours.iter().any(|p| p.len() == SEPARATE_PART_BYTES + 5));
        }
    }

    #[test]
    fn file_ranges_are_parts_with_their_length_framed() {
        let mut r = response(Bytes::new());
        r.responses.truncate(1);
        let file = tempfile::tempfile().unwrap();
        let slice = FileSlice {
            file: std::sync::Arc::new(file),
            path: "/data/t-0/00000000000000000000.log".into(),
            position: 4096,
            len: 1000,
            first_batch_len: 700,
        };
        for version in [4i16, 12, 17] {
            let parts = frame(
                1,
                version,
                &r,
                &[Some(Beside::File(slice.clone())), None, None],
            );
            let total: usize = parts.iter().map(Part::len).sum();
            let Part::Bytes(first) = &parts[0] else {
                panic!("the frame starts with framing bytes");
            };
            let size = i32::from_be_bytes(first[..4].try_into().unwrap()) as usize;
            assert_eq!(size + 4, total);
            assert!(matches!(&parts[1], Part::File(f) if (f.position, f.len) == (4096, 1000)));
            // Replacing the file by 1000 bytes gives the codec's frame.
            let mut with_bytes = r.clone();
            with_bytes.responses[0].partitions[0].records = Some(Bytes::from(vec![0u8; 1000]));
            let theirs =
                crate::protocol::frame(1, ApiKey::Fetch, version, &ResponseKind::Fetch(with_bytes))
                    .unwrap();
            let mut ours = Vec::new();
            for p in &parts {
                match p {
                    Part::Bytes(b) => ours.extend_from_slice(b),
                    Part::Buffer(_) => panic!("no buffers in this test"),
                    Part::File(f) => ours.extend(std::iter::repeat_n(0u8, f.len)),
                }
            }
            assert_eq!(ours, theirs.to_vec(), "Fetch v{version}");
        }
    }
}
