//! The records of `__consumer_offsets`, in Kafka's own key and value layouts, so a tool that
//! reads the topic (or a Kafka broker given the files) understands them:
//! - key version 0/1 `OffsetCommitKey` (group, topic, partition) with an `OffsetCommitValue`
//!   (written as version 3: offset, leader epoch, metadata, commit timestamp);
//! - key version 2 `GroupMetadataKey` (group) with a `GroupMetadataValue` (written as
//!   version 3: protocol type, generation, protocol, leader, state timestamp, members).
//!
//! A record with a null value is a tombstone: the offset or the group is gone. Decoding
//! accepts every non-flexible version Kafka has written (values 0–3) and refuses anything
//! else with a message naming the problem; it never panics on damaged input.

use bytes::{BufMut, Bytes, BytesMut};

/// Which group (by Kafka's rule) a `__consumer_offsets` partition coordinates:
/// `Utils.abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    // Kafka's Utils.abs maps i32::MIN to 0 (Math.abs would leave it negative).
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

/// A cursor over untrusted bytes: every read checks the length first.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("{}: truncated", self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| format!("{}: a string is not UTF-8", self.what))
    }

    fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?
            .ok_or_else(|| format!("{}: a required string is null", self.what))
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } => group,
        }
    }

    /// Key version 1 for offsets (what Kafka writes), 2 for group metadata.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                buf.put_i16(1);
                put_string(&mut buf, group);
                put_string(&mut buf, topic);
                buf.put_i32(*partition);
            }
            Key::Group { group } => {
                buf.put_i16(2);
                put_string(&mut buf, group);
            }
        }
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Key, String> {
        let mut r = Reader {
            buf: bytes,
            what: "__consumer_offsets key",
        };
        match r.i16()? {
            0 | 1 => Ok(Key::Offset {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            }),
            2 => Ok(Key::Group { group: r.string()? }),
            v => Err(format!("__consumer_offsets key: unknown version {v}")),
        }
    }
}

impl OffsetValue {
    /// Value version 3.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_string(&mut buf, &self.metadata);
        buf.put_i64(self.commit_timestamp);
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<OffsetValue, String> {
        let mut r = Reader {
            buf: bytes,
            what: "offset commit value",
        };
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(format!("offset commit value: unknown version {version}"));
        }
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp = r.i64()?;
        if version == 1 {
            r.i64()?; // expire timestamp (Kafka ignores it since 2.1)
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    /// Value version 3.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        put_string(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_string(&mut buf, self.protocol.as_deref());
        put_nullable_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.state_timestamp);
        buf.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut buf, &m.member_id);
            put_nullable_string(&mut buf, m.instance_id.as_deref());
            put_string(&mut buf, &m.client_id);
            put_string(&mut buf, &m.client_host);
            buf.put_i32(m.rebalance_timeout_ms);
            buf.put_i32(m.session_timeout_ms);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupValue, String> {
        let mut r = Reader {
            buf: bytes,
            what: "group metadata value",
        };
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(format!("group metadata value: unknown version {version}"));
        }
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
        let count = r.i32()?;
        // Each member takes at least 24 bytes: a hostile count cannot reserve much.
        let mut members = Vec::with_capacity((count.max(0) as usize).min(r.buf.len() / 24));
        for _ in 0..count.max(0) {
            let member_id = r.string()?;
            let instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
            let session_timeout_ms = r.i32()?;
            let rebalance_timeout_ms = if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            };
            members.push(MemberValue {
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_follows_javas_string_hash_code() {
        // Java: "hello".hashCode() == 99162322; "Aa" and "BB" collide at 2112.
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
        assert_eq!(partition_for("Aa", 50), 2112 % 50);
        assert_eq!(partition_for("BB", 50), 2112 % 50);
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Kafka's Utils.abs gives 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // A negative hash: "Hello World!".hashCode() == -969099747.
        assert_eq!(partition_for("Hello World!", 50), 969099747 % 50);
        // Non-ASCII goes by UTF-16 units: "é" is 0xE9.
        assert_eq!(partition_for("é", 50), 0xE9 % 50);
    }

    #[test]
    fn offset_records_match_kafkas_layout() {
        let key = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(
            &key.encode()[..],
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]
        );
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        let value = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        let bytes = value.encode();
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(bytes.len(), 2 + 8 + 4 + 2 + 1 + 8);
        assert_eq!(OffsetValue::decode(&bytes).unwrap(), value);
        // Version 1, as Kafka 0.10–2.0 wrote it (with an expire timestamp).
        let mut v1 = BytesMut::new();
        v1.put_i16(1);
        v1.put_i64(42);
        put_string(&mut v1, "m");
        v1.put_i64(7);
        v1.put_i64(99);
        assert_eq!(OffsetValue::decode(&v1).unwrap(), value);
    }

    #[test]
    fn group_records_round_trip_and_read_old_versions() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 1000,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("host-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30000,
                session_timeout_ms: 10000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(&value.encode()).unwrap(), value);
        let key = Key::Group { group: "g".into() };
        assert_eq!(&key.encode()[..], &[0, 2, 0, 1, b'g']);
        assert_eq!(Key::decode(&key.encode()).unwrap(), key);
        // Version 0: no state timestamp, instance id or rebalance timeout.
        let mut v0 = BytesMut::new();
        v0.put_i16(0);
        put_string(&mut v0, "consumer");
        v0.put_i32(1);
        put_nullable_string(&mut v0, None);
        put_nullable_string(&mut v0, None);
        v0.put_i32(1);
        put_string(&mut v0, "m");
        put_string(&mut v0, "c");
        put_string(&mut v0, "h");
        v0.put_i32(6000);
        put_bytes(&mut v0, b"s");
        put_bytes(&mut v0, b"a");
        let g = GroupValue::decode(&v0).unwrap();
        assert_eq!(
            (g.generation, g.protocol.as_deref(), g.state_timestamp),
            (1, None, -1)
        );
        assert_eq!(g.members[0].rebalance_timeout_ms, 6000);
    }

    #[test]
    fn damaged_records_are_refused_with_a_message() {
        assert!(Key::decode(&[]).unwrap_err().contains("truncated"));
        assert!(Key::decode(&[0, 9])
            .unwrap_err()
            .contains("unknown version 9"));
        assert!(Key::decode(&[0, 1, 0, 5, b'a']).is_err());
        assert!(OffsetValue::decode(&[0, 4, 0])
            .unwrap_err()
            .contains("version 4"));
        let mut hostile = BytesMut::new();
        hostile.put_i16(3);
        put_string(&mut hostile, "consumer");
        hostile.put_i32(1);
        hostile.put_i16(-1);
        hostile.put_i16(-1);
        hostile.put_i64(0);
        hostile.put_i32(i32::MAX);
        assert!(GroupValue::decode(&hostile)
            .unwrap_err()
            .contains("truncated"));
        assert!(Key::decode(&[0, 2, 0, 2, 0xff, 0xfe])
            .unwrap_err()
            .contains("UTF-8"));
    }
}
