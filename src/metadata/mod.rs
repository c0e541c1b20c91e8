//! Topic metadata: names, ids, partition placement and topic configs.
//!
//! Shard 0 owns the authoritative copy and is the only writer: it applies a change, writes the
//! whole table atomically (temp file, fsync, rename, fsync of the directory) with a CRC-32 line,
//! then hands every shard a versioned `MetadataSnapshot`. Handlers work against one snapshot for
//! their whole run. Invariant: the file on disk always parses and its checksum matches, or the
//! broker refuses to start with a message naming the file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::TopicConfigs;

pub const METADATA_FILE: &str = "shardlog-topics.meta";

#[derive(Clone, Debug, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    /// Owning shard of each partition, by partition index.
    pub shards: Vec<usize>,
    pub configs: TopicConfigs,
}

impl TopicMeta {
    pub fn partition_count(&self) -> i32 {
        self.shards.len() as i32
    }
}

/// One version of the topic table, as every shard sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataSnapshot {
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl MetadataSnapshot {
    /// The topic with this id (requests from Fetch v13 and Metadata v10 on name topics by id).
    pub fn topic_by_id(&self, id: &uuid::Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == *id.as_bytes())
    }

    pub fn shard_of(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.shards.get(p).copied())
    }
}

/// The deterministic placement rule: a topic's partitions go round-robin over shards, starting
/// at a shard chosen from the topic name so that small topics do not all land on shard 0.
pub fn place_partition(topic: &str, partition: i32, shard_count: usize) -> usize {
    let start = crc32fast::hash(topic.as_bytes()) as usize;
    (start.wrapping_add(partition as usize)) % shard_count.max(1)
}

/// Kafka's rule for topic names: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-' ({c:?})"
        ));
    }
    Ok(())
}

pub fn new_topic_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = nanos ^ ((std::process::id() as u128) << 64);
    for b in id.iter_mut() {
        // splitmix-style mixing: ids need to be unique, not secret.
        seed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            .wrapping_add(0x6A09_E667);
        *b = (seed >> 64) as u8 ^ (seed >> 17) as u8;
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Serialises the table; the last line is `crc32 <hex>` over everything before it.
pub fn encode(snapshot: &MetadataSnapshot) -> String {
    let mut s = String::from("shardlog-metadata 1\n");
    let _ = writeln!(s, "version {}", snapshot.version);
    for t in snapshot.topics.values() {
        let shards: Vec<String> = t.shards.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(s, "topic {} {} {}", t.name, hex(&t.id), shards.join(","));
        for (k, v) in &t.configs.overrides {
            let _ = writeln!(s, "config {} {} {}", t.name, k, v);
        }
    }
    let crc = crc32fast::hash(s.as_bytes());
    let _ = writeln!(s, "crc32 {crc:08x}");
    s
}

pub fn decode(text: &str, shard_count: usize) -> Result<MetadataSnapshot, String> {
    let body_end = text
        .trim_end()
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or("file is truncated")?;
    let (body, crc_line) = text.split_at(body_end);
    let stored = crc_line
        .trim()
        .strip_prefix("crc32 ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("last line is not a crc32 line")?;
    if crc32fast::hash(body.as_bytes()) != stored {
        return Err("checksum does not match".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some("shardlog-metadata 1") {
        return Err("unknown format header".into());
    }
    let mut snap = MetadataSnapshot::default();
    for (n, line) in lines.enumerate() {
        let bad = || format!("line {}: cannot parse '{line}'", n + 2);
        let mut parts = line.splitn(4, ' ');
        match parts.next() {
            Some("version") => {
                snap.version = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?
            }
            Some("topic") => {
                let name = parts.next().ok_or_else(bad)?.to_string();
                let id = parts.next().and_then(unhex).ok_or_else(bad)?;
                let shards = parts
                    .next()
                    .ok_or_else(bad)?
                    .split(',')
                    .enumerate()
                    .map(|(p, s)| {
                        let s: usize = s.parse().map_err(|_| bad())?;
                        // A restart with fewer cores re-places what no longer has a shard.
                        Ok(if s < shard_count {
                            s
                        } else {
                            place_partition(&name, p as i32, shard_count)
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                snap.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name,
                        id,
                        shards,
                        configs: TopicConfigs::default(),
                    },
                );
            }
            Some("config") => {
                let name = parts.next().ok_or_else(bad)?;
                let key = parts.next().ok_or_else(bad)?.to_string();
                let value = parts.next().unwrap_or("").to_string();
                let t = snap.topics.get_mut(name).ok_or_else(bad)?;
                t.configs.overrides.insert(key, value);
            }
            _ => return Err(bad()),
        }
    }
    Ok(snap)
}

/// Writes `contents` to `path` atomically: temp file, fsync, rename, fsync of the directory.
/// Blocking: call it through `spawn_blocking`, or before the executors start.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Beside the file, named after all of it: files differing only in extension never share
    // a temporary.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Loads the table from the log directory, or an empty one if none was ever written.
pub fn load(log_dir: &Path, shard_count: usize) -> anyhow::Result<MetadataSnapshot> {
    let path = log_dir.join(METADATA_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            decode(&text, shard_count).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataSnapshot::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let mut snap = MetadataSnapshot {
            version: 7,
            ..Default::default()
        };
        let mut configs = TopicConfigs::default();
        configs
            .overrides
            .insert("retention.ms".into(), "1000".into());
        snap.topics.insert(
            "orders".into(),
            TopicMeta {
                name: "orders".into(),
                id: new_topic_id(),
                shards: vec![0, 1, 0],
                configs,
            },
        );
        let text = encode(&snap);
        assert_eq!(decode(&text, 2).unwrap(), snap);
        let damaged = text.replace("orders 0", "orders 1");
        assert!(decode(&damaged, 2).is_err() || damaged == text);
        assert!(decode(&text.replacen("1000", "1001", 1), 2).is_err());
        assert!(decode(&text[..text.len() - 5], 2).is_err());
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("good.name_1-x").is_ok());
        for bad in ["", ".", "..", "bad/name", "sp ace", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placement_is_deterministic_and_spreads() {
        let a: Vec<usize> = (0..8).map(|p| place_partition("t", p, 2)).collect();
        let b: Vec<usize> = (0..8).map(|p| place_partition("t", p, 2)).collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|&&s| s == 0).count(), 4);
    }
}
