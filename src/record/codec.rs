//! Bounded decompression of a batch's records, for the few places that must look inside a
//! compressed batch (ListOffsets by timestamp). Kafka's codec framings: gzip (RFC 1952, members
//! may be concatenated), snappy in xerial framing (or a bare snappy block), lz4 frames, zstd
//! frames. Every decoder stops at `limit` bytes of output, so a small hostile batch cannot
//! expand without bound. CPU-heavy: run it off the executor (`spawn_blocking`).

use std::io::Read;

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Decompresses `data` compressed with Kafka codec `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let read_bounded = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), String> {
        r.take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(|e| e.to_string())?;
        if out.len() > limit {
            return Err(format!("decompresses to more than {limit} bytes"));
        }
        Ok(())
    };
    match codec {
        1 => read_bounded(&mut flate2::read::MultiGzDecoder::new(data), &mut out)?,
        2 => snappy(data, limit, &mut out)?,
        3 => read_bounded(
            &mut lz4::Decoder::new(data).map_err(|e| e.to_string())?,
            &mut out,
        )?,
        4 => read_bounded(
            &mut zstd::stream::read::Decoder::new(data).map_err(|e| e.to_string())?,
            &mut out,
        )?,
        other => return Err(format!("unknown compression codec {other}")),
    }
    Ok(out)
}

fn snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let len = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if out.len() + len > limit {
        return Err(format!("decompresses to more than {limit} bytes"));
    }
    out.extend(
        snap::raw::Decoder::new()
            .decompress_vec(block)
            .map_err(|e| e.to_string())?,
    );
    Ok(())
}

fn snappy(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snappy_block(data, limit, out);
    }
    // Xerial: 8-byte magic, 4-byte version, 4-byte compatible version, then
    // (4-byte big-endian length, snappy block) pairs.
    let mut rest = data.get(16..).ok_or("truncated xerial header")?;
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("truncated block length")?;
        let block = rest.get(4..4 + len).ok_or("truncated snappy block")?;
        snappy_block(block, limit, out)?;
        rest = &rest[4 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::Compression;

    /// Round trip through the Kafka client codec: what it compresses, this decompresses.
    #[test]
    fn reads_what_kafka_clients_write() {
        let records: Vec<(Option<Bytes>, Bytes)> = (0..50)
            .map(|i| (None, Bytes::from(format!("value-{i}"))))
            .collect();
        for (codec, compression) in [
            (1, Compression::Gzip),
            (2, Compression::Snappy),
            (3, Compression::Lz4),
            (4, Compression::Zstd),
        ] {
            let batch = crate::client::encode_batch(&records, compression).unwrap();
            let plain = decompress(codec, &batch[crate::record::HEADER_LEN..], 1 << 20).unwrap();
            let stamps = crate::record::scan_timestamps(0, 0, &plain).unwrap();
            assert_eq!(stamps.len(), 50, "codec {codec}");
            assert!(
                decompress(codec, &batch[crate::record::HEADER_LEN..], 16).is_err(),
                "limit holds for codec {codec}"
            );
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = zstd::encode_all(&zeros[..], 19).unwrap();
        assert!(bomb.len() < 4096);
        assert!(decompress(4, &bomb, 1 << 20).is_err());
    }
}
