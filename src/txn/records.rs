//! `__transaction_state` records in Kafka's layouts: the key `TransactionLogKey` v0 (the
//! transactional id) and the value `TransactionLogValue` v0 (producer id and epoch, timeout,
//! state, partitions, last update and start times). A record with no value (a tombstone) is a
//! transactional id that expired.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::state::{TxnMetadata, TxnState};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// Kafka's rule for a transactional id's `__transaction_state` partition, the same as for
/// group ids: `Utils.abs(transactionalId.hashCode) % partitions`.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    crate::group::records::partition_for(transactional_id, partitions)
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Result<String, String> {
    if buf.remaining() < 2 {
        return Err("truncated string".into());
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return Err("truncated string".into());
    }
    String::from_utf8(buf.split_to(len as usize).to_vec()).map_err(|_| "string is not UTF-8".into())
}

fn need(buf: &Bytes, n: usize) -> Result<(), String> {
    if buf.remaining() < n {
        return Err("truncated value".into());
    }
    Ok(())
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, transactional_id);
    buf.freeze()
}

pub fn decode_key(mut key: Bytes) -> Result<String, String> {
    need(&key, 2)?;
    let version = key.get_i16();
    if version != KEY_VERSION {
        return Err(format!("unknown transaction log key version {version}"));
    }
    get_string(&mut key)
}

pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(m.producer_id);
    buf.put_i16(m.producer_epoch);
    buf.put_i32(m.timeout_ms);
    buf.put_i8(m.state.code());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((last, ps)) if *last == t.as_str() => ps.push(*p),
            _ => topics.push((t.as_str(), vec![*p])),
        }
    }
    buf.put_i32(topics.len() as i32);
    for (t, ps) in topics {
        put_string(&mut buf, t);
        buf.put_i32(ps.len() as i32);
        for p in ps {
            buf.put_i32(p);
        }
    }
    buf.put_i64(m.last_update_ms);
    buf.put_i64(m.start_ms);
    buf.freeze()
}

pub fn decode_value(mut v: Bytes) -> Result<TxnMetadata, String> {
    need(&v, 2 + 8 + 2 + 4 + 1 + 4)?;
    let version = v.get_i16();
    if version != VALUE_VERSION {
        return Err(format!("unknown transaction log value version {version}"));
    }
    let producer_id = v.get_i64();
    let producer_epoch = v.get_i16();
    let timeout_ms = v.get_i32();
    let code = v.get_i8();
    let state = TxnState::from_code(code).ok_or(format!("unknown transaction state {code}"))?;
    let topics = v.get_i32();
    let mut partitions = std::collections::BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut v)?;
        need(&v, 4)?;
        let n = v.get_i32();
        if n < 0 || v.remaining() < 4 * n as usize {
            return Err("truncated partition list".into());
        }
        for _ in 0..n {
            partitions.insert((topic.clone(), v.get_i32()));
        }
    }
    need(&v, 16)?;
    let last_update_ms = v.get_i64();
    let start_ms = v.get_i64();
    Ok(TxnMetadata {
        producer_id,
        last_producer_id: -1,
        producer_epoch,
        last_producer_epoch: -1,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip_in_kafkas_layout() {
        let key = encode_key("tx-1");
        assert_eq!(&key[..], b"\x00\x00\x00\x04tx-1");
        assert_eq!(decode_key(key).unwrap(), "tx-1");
        let m = TxnMetadata {
            producer_id: 4000,
            last_producer_id: -1,
            producer_epoch: 3,
            last_producer_epoch: -1,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            start_ms: 100,
            last_update_ms: 200,
        };
        let bytes = encode_value(&m);
        // version, pid, epoch, timeout, state 1, two topics ...
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(bytes[16], 1);
        assert_eq!(&bytes[17..21], &2i32.to_be_bytes());
        assert_eq!(decode_value(bytes.clone()).unwrap(), m);
        assert!(decode_value(bytes.slice(..bytes.len() - 3)).is_err());
        assert!(decode_key(Bytes::from_static(b"\x00\x01\x00\x01x")).is_err());
    }
}
