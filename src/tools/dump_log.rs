//! `shardlog dump-log FILE...`: prints a partition's files as Kafka's kafka-dump-log does —
//! `.log` segments batch by batch (offsets, timestamps, producer id, epoch and sequences,
//! control markers; with `--print-data-log` every record), `.index`, `.timeindex`, `.txnindex`
//! and producer-state `.snapshot` files. Damaged or torn data is reported, never trusted.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;

use crate::record::{self, BatchView};

#[derive(Args)]
pub struct DumpLogArgs {
    /// Files to dump (.log, .index, .timeindex, .txnindex, .snapshot).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print each record of each batch, with its key and value.
    #[arg(long)]
    pub print_data_log: bool,
}

pub fn run(args: DumpLogArgs) -> anyhow::Result<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    for file in &args.files {
        writeln!(out, "Dumping {}", file.display())?;
        let bytes = std::fs::read(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let base = base_offset(file);
        match file.extension().and_then(|e| e.to_str()) {
            Some("log") => dump_segment(&mut out, &bytes, base, args.print_data_log)?,
            Some("index") => dump_index(&mut out, &bytes, base)?,
            Some("timeindex") => dump_time_index(&mut out, &bytes, base)?,
            Some("txnindex") => dump_txn_index(&mut out, &bytes)?,
            Some("snapshot") => dump_snapshot(&mut out, &bytes)?,
            _ => anyhow::bail!(
                "{}: not a .log, .index, .timeindex, .txnindex or .snapshot file",
                file.display()
            ),
        }
    }
    Ok(())
}

/// The base offset a segment file is named after (0 if the name is not a number).
fn base_offset(file: &Path) -> i64 {
    file.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn codec_name(codec: i16) -> &'static str {
    match codec {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

fn text(b: &Option<Bytes>) -> String {
    b.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "null".into())
}

fn dump_segment(
    out: &mut impl Write,
    bytes: &[u8],
    base: i64,
    records: bool,
) -> anyhow::Result<()> {
    writeln!(out, "Log starting offset: {base}")?;
    let mut pos = 0usize;
    while let Some(len) = record::framed_len(&bytes[pos..]) {
        if pos + len > bytes.len() || len < record::HEADER_LEN {
            break;
        }
        let batch = &bytes[pos..pos + len];
        let view = BatchView { bytes: batch };
        let valid = record::check_stored(batch).is_ok();
        let last_seq = if view.base_sequence() < 0 {
            -1
        } else {
            crate::partition::producer_state::increment_sequence(
                view.base_sequence(),
                view.last_offset_delta(),
            )
        };
        let time_type = if view.attributes() & 0x08 != 0 {
            "LogAppendTime"
        } else {
            "CreateTime"
        };
        let horizon = if view.attributes() & record::compact::DELETE_HORIZON_FLAG != 0 {
            format!("OptionalLong[{}]", view.base_timestamp())
        } else {
            "OptionalLong.empty".into()
        };
        writeln!(
            out,
            "baseOffset: {} lastOffset: {} count: {} baseSequence: {} lastSequence: {last_seq} \
             producerId: {} producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} \
             isControl: {} deleteHorizonMs: {horizon} position: {pos} {time_type}: {} size: {len} \
             magic: {} compresscodec: {} crc: {} isvalid: {valid}",
            view.base_offset(),
            view.last_offset(),
            view.record_count(),
            view.base_sequence(),
            view.producer_id(),
            view.producer_epoch(),
            i32::from_be_bytes([batch[12], batch[13], batch[14], batch[15]]),
            view.is_transactional(),
            view.is_control(),
            view.max_timestamp(),
            batch[record::MAGIC],
            codec_name(view.compression()),
            view.stored_crc(),
        )?;
        if records && valid {
            dump_records(out, batch, &view)?;
        }
        pos += len;
    }
    if pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.iter().all(|&b| b == 0) {
            writeln!(out, "{} bytes of zero padding at the end", rest.len())?;
        } else {
            writeln!(
                out,
                "Found {} invalid bytes at the end of the segment (position {pos})",
                rest.len()
            )?;
        }
    }
    Ok(())
}

fn dump_records(out: &mut impl Write, batch: &[u8], view: &BatchView<'_>) -> anyhow::Result<()> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = match kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set,
        Err(e) => {
            writeln!(out, "| cannot read the records: {e}")?;
            return Ok(());
        }
    };
    for r in set.records {
        let key_size = r.key.as_ref().map_or(-1, |k| k.len() as i64);
        let value_size = r.value.as_ref().map_or(-1, |v| v.len() as i64);
        let headers: Vec<String> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        write!(
            out,
            "| offset: {} {}: {} keySize: {key_size} valueSize: {value_size} sequence: {} \
             headerKeys: [{}]",
            r.offset,
            if view.attributes() & 0x08 != 0 {
                "LogAppendTime"
            } else {
                "CreateTime"
            },
            r.timestamp,
            r.sequence,
            headers.join(",")
        )?;
        if r.control {
            match record::control::read_marker(batch) {
                Some(m) => writeln!(
                    out,
                    " endTxnMarker: {} coordinatorEpoch: {}",
                    match m.kind {
                        record::control::COMMIT => "COMMIT",
                        record::control::ABORT => "ABORT",
                        _ => "UNKNOWN",
                    },
                    m.coordinator_epoch
                )?,
                None => writeln!(out, " unreadable control record")?,
            }
        } else {
            writeln!(out, " key: {} payload: {}", text(&r.key), text(&r.value))?;
        }
    }
    Ok(())
}

fn dump_index(out: &mut impl Write, bytes: &[u8], base: i64) -> anyhow::Result<()> {
    match crate::storage::index::OffsetIndex::decode(bytes, u64::MAX) {
        Some(index) => {
            for (rel, position) in index.entries {
                writeln!(out, "offset: {} position: {position}", base + rel as i64)?;
            }
        }
        None => writeln!(out, "damaged index ({} bytes)", bytes.len())?,
    }
    Ok(())
}

fn dump_time_index(out: &mut impl Write, bytes: &[u8], base: i64) -> anyhow::Result<()> {
    match crate::storage::index::TimeIndex::decode(bytes) {
        Some(index) => {
            for (timestamp, rel) in index.entries {
                writeln!(out, "timestamp: {timestamp} offset: {}", base + rel as i64)?;
            }
        }
        None => writeln!(out, "damaged time index ({} bytes)", bytes.len())?,
    }
    Ok(())
}

fn dump_txn_index(out: &mut impl Write, bytes: &[u8]) -> anyhow::Result<()> {
    match crate::storage::txn_index::TxnIndex::decode(bytes) {
        Some(index) => {
            for t in index.entries {
                writeln!(
                    out,
                    "version: 0 producerId: {} firstOffset: {} lastOffset: {} lastStableOffset: {}",
                    t.producer_id, t.first_offset, t.last_offset, t.last_stable_offset
                )?;
            }
        }
        None => writeln!(out, "damaged transaction index ({} bytes)", bytes.len())?,
    }
    Ok(())
}

fn dump_snapshot(out: &mut impl Write, bytes: &[u8]) -> anyhow::Result<()> {
    let file = crate::partition::snapshot::decode(bytes)
        .map_err(|e| anyhow::anyhow!("producer snapshot: {e}"))?;
    writeln!(out, "Producer state at offset {}", file.offset)?;
    for p in file.producers {
        let txn = p
            .txn_first_offset
            .map_or("None".to_string(), |o| o.to_string());
        writeln!(
            out,
            "producerId: {} producerEpoch: {} coordinatorEpoch: {} currentTxnFirstOffset: {txn} \
             lastTimestamp: {}",
            p.producer_id, p.epoch, p.coordinator_epoch, p.last_timestamp
        )?;
        for b in p.batches {
            writeln!(
                out,
                "| firstSequence: {} lastSequence: {} firstOffset: {} lastOffset: {} timestamp: {}",
                b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp
            )?;
        }
    }
    Ok(())
}
