//! Topic-level configs: the overrides a topic was created or altered with, resolved against the
//! broker's defaults into a typed `LogConfig` that the storage layer reads.
//! Invariant: `TopicConfigs` only ever holds known keys with values that parse.

use std::collections::BTreeMap;

/// Known topic keys and their Kafka defaults (used only where the broker sets nothing).
const TOPIC_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.after.max.ms", "9223372036854775807"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

/// The broker keys whose value a topic key takes when the topic does not override it.
pub fn broker_keys_for(topic_key: &str) -> &'static [&'static str] {
    match topic_key {
        "segment.bytes" => &["log.segment.bytes"],
        "segment.ms" => &["log.roll.ms", "log.roll.hours"],
        "retention.ms" => &[
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        "retention.bytes" => &["log.retention.bytes"],
        "index.interval.bytes" => &["log.index.interval.bytes"],
        "cleanup.policy" => &["log.cleanup.policy"],
        "message.timestamp.type" => &["log.message.timestamp.type"],
        "max.message.bytes" => &["message.max.bytes"],
        "min.insync.replicas" => &["min.insync.replicas"],
        "compression.type" => &["compression.type"],
        "delete.retention.ms" => &["log.cleaner.delete.retention.ms"],
        "min.cleanable.dirty.ratio" => &["log.cleaner.min.cleanable.ratio"],
        "min.compaction.lag.ms" => &["log.cleaner.min.compaction.lag.ms"],
        "max.compaction.lag.ms" => &["log.cleaner.max.compaction.lag.ms"],
        _ => &[],
    }
}

/// Kafka's declared type of a topic key, as DescribeConfigs reports it: BOOLEAN 1, STRING 2,
/// INT 3, LONG 5, DOUBLE 6, LIST 7.
pub fn topic_config_type(key: &str) -> Option<i8> {
    Some(match key {
        "cleanup.policy" => 7,
        "compression.type" | "message.timestamp.type" => 2,
        "index.interval.bytes"
        | "max.message.bytes"
        | "min.insync.replicas"
        | "segment.bytes"
        | "segment.index.bytes" => 3,
        "min.cleanable.dirty.ratio" => 6,
        "preallocate" | "unclean.leader.election.enable" => 1,
        k if is_topic_key(k) => 5,
        _ => return None,
    })
}

pub fn is_topic_key(key: &str) -> bool {
    TOPIC_KEYS.iter().any(|(k, _)| *k == key)
}

/// Fills in Kafka's defaults for keys the broker does not derive.
pub fn complete_defaults(mut from_broker: BTreeMap<String, String>) -> BTreeMap<String, String> {
    for (k, v) in TOPIC_KEYS {
        from_broker
            .entry(k.to_string())
            .or_insert_with(|| v.to_string());
    }
    from_broker
}

/// Typed, validated log settings of one topic.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub compact: bool,
    pub delete: bool,
    /// How long tombstones stay readable after the first clean that saw them.
    pub delete_retention_ms: i64,
    /// Compaction starts once dirty bytes are at least this share of the cleanable log.
    pub min_cleanable_dirty_ratio: f64,
    /// Records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// Dirty records older than this are compacted whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
}

fn int(map: &BTreeMap<String, String>, key: &str, min: i64) -> Result<i64, String> {
    let v = map.get(key).map(String::as_str).unwrap_or("");
    let n: i64 = v
        .parse()
        .map_err(|_| format!("Invalid value {v} for configuration {key}: not a number"))?;
    if n < min {
        return Err(format!(
            "Invalid value {n} for configuration {key}: Value must be at least {min}"
        ));
    }
    Ok(n)
}

/// A key of Kafka's INT type: at most `i32::MAX` (segment positions are 32-bit).
fn int32(map: &BTreeMap<String, String>, key: &str, min: i64) -> Result<i64, String> {
    let n = int(map, key, min)?;
    if n > i32::MAX as i64 {
        return Err(format!(
            "Invalid value {n} for configuration {key}: Value must be at most {}",
            i32::MAX
        ));
    }
    Ok(n)
}

impl LogConfig {
    /// Validates and types a complete map (every key present).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, String> {
        let ts = map
            .get("message.timestamp.type")
            .map(String::as_str)
            .unwrap_or("CreateTime");
        let log_append_time = match ts {
            "CreateTime" => false,
            "LogAppendTime" => true,
            other => {
                return Err(format!(
                    "Invalid value {other} for configuration message.timestamp.type"
                ))
            }
        };
        let policy = map
            .get("cleanup.policy")
            .map(String::as_str)
            .unwrap_or("delete");
        let mut compact = false;
        let mut delete = false;
        for p in policy.split(',').map(str::trim) {
            match p {
                "compact" => compact = true,
                "delete" => delete = true,
                "" if policy.trim().is_empty() => {}
                other => {
                    return Err(format!(
                        "Invalid value {other} for configuration cleanup.policy"
                    ))
                }
            }
        }
        let ct = map
            .get("compression.type")
            .map(String::as_str)
            .unwrap_or("producer");
        if !["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"].contains(&ct) {
            return Err(format!(
                "Invalid value {ct} for configuration compression.type"
            ));
        }
        for key in ["preallocate", "unclean.leader.election.enable"] {
            let v = map.get(key).map(String::as_str).unwrap_or("false");
            if v != "true" && v != "false" {
                return Err(format!("Invalid value {v} for configuration {key}"));
            }
        }
        let ratio = map
            .get("min.cleanable.dirty.ratio")
            .map(String::as_str)
            .unwrap_or("0.5");
        let min_cleanable_dirty_ratio = match ratio.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                return Err(format!(
                    "Invalid value {ratio} for configuration min.cleanable.dirty.ratio"
                ))
            }
        };
        for key in [
            "file.delete.delay.ms",
            "flush.messages",
            "flush.ms",
            "message.timestamp.before.max.ms",
            "message.timestamp.after.max.ms",
            "segment.jitter.ms",
        ] {
            int(map, key, 0)?;
        }
        int32(map, "segment.index.bytes", 4)?;
        int32(map, "min.insync.replicas", 1)?;
        Ok(LogConfig {
            segment_bytes: int32(map, "segment.bytes", 14)? as u64,
            segment_ms: int(map, "segment.ms", 1)?,
            retention_ms: int(map, "retention.ms", -1)?,
            retention_bytes: int(map, "retention.bytes", -1)?,
            index_interval_bytes: int32(map, "index.interval.bytes", 0)? as u32,
            max_message_bytes: int32(map, "max.message.bytes", 0)? as usize,
            log_append_time,
            compact,
            delete,
            delete_retention_ms: int(map, "delete.retention.ms", 0)?,
            min_cleanable_dirty_ratio,
            min_compaction_lag_ms: int(map, "min.compaction.lag.ms", 0)?,
            max_compaction_lag_ms: int(map, "max.compaction.lag.ms", 1)?,
        })
    }
}

/// The overrides a topic carries; resolved against the broker's defaults on use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicConfigs {
    pub overrides: BTreeMap<String, String>,
}

impl TopicConfigs {
    /// Validates overrides (unknown keys, bad values) against broker defaults.
    pub fn new(
        overrides: BTreeMap<String, String>,
        broker_defaults: &LogConfig,
    ) -> Result<Self, String> {
        for k in overrides.keys() {
            if !is_topic_key(k) {
                return Err(format!("Unknown topic config name: {k}"));
            }
        }
        let cfg = TopicConfigs { overrides };
        cfg.resolve_map(broker_defaults)
            .and_then(|m| LogConfig::from_map(&m))?;
        Ok(cfg)
    }

    /// Every topic key with its effective value and whether it is an override.
    pub fn resolve_map(&self, broker: &LogConfig) -> Result<BTreeMap<String, String>, String> {
        let mut map = complete_defaults(BTreeMap::new());
        map.insert("segment.bytes".into(), broker.segment_bytes.to_string());
        map.insert("segment.ms".into(), broker.segment_ms.to_string());
        map.insert("retention.ms".into(), broker.retention_ms.to_string());
        map.insert("retention.bytes".into(), broker.retention_bytes.to_string());
        map.insert(
            "index.interval.bytes".into(),
            broker.index_interval_bytes.to_string(),
        );
        map.insert(
            "max.message.bytes".into(),
            broker.max_message_bytes.to_string(),
        );
        map.insert(
            "message.timestamp.type".into(),
            if broker.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .into(),
        );
        let policy = match (broker.compact, broker.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        };
        map.insert("cleanup.policy".into(), policy.into());
        map.insert(
            "delete.retention.ms".into(),
            broker.delete_retention_ms.to_string(),
        );
        map.insert(
            "min.cleanable.dirty.ratio".into(),
            broker.min_cleanable_dirty_ratio.to_string(),
        );
        map.insert(
            "min.compaction.lag.ms".into(),
            broker.min_compaction_lag_ms.to_string(),
        );
        map.insert(
            "max.compaction.lag.ms".into(),
            broker.max_compaction_lag_ms.to_string(),
        );
        for (k, v) in &self.overrides {
            map.insert(k.clone(), v.clone());
        }
        Ok(map)
    }

    pub fn log_config(&self, broker: &LogConfig) -> LogConfig {
        self.resolve_map(broker)
            .and_then(|m| LogConfig::from_map(&m))
            .unwrap_or_else(|_| broker.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> LogConfig {
        LogConfig::from_map(&complete_defaults(BTreeMap::new())).unwrap()
    }

    #[test]
    fn every_topic_key_has_a_kafka_type() {
        for (k, _) in TOPIC_KEYS {
            assert!(topic_config_type(k).is_some(), "{k}");
        }
        assert_eq!(topic_config_type("cleanup.policy"), Some(7));
        assert_eq!(topic_config_type("segment.bytes"), Some(3));
        assert_eq!(topic_config_type("retention.ms"), Some(5));
        assert_eq!(topic_config_type("log.dirs"), None);
    }

    #[test]
    fn refuses_unknown_and_bad_values() {
        let b = broker();
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(TopicConfigs::new(one("no.such", "1"), &b).is_err());
        assert!(TopicConfigs::new(one("segment.bytes", "abc"), &b).is_err());
        assert!(TopicConfigs::new(one("segment.bytes", "5"), &b).is_err());
        assert!(TopicConfigs::new(one("segment.bytes", "4294967296"), &b).is_err());
        assert!(TopicConfigs::new(one("segment.bytes", "2147483647"), &b).is_ok());
        assert!(TopicConfigs::new(one("cleanup.policy", "shred"), &b).is_err());
        let ok = TopicConfigs::new(one("retention.ms", "1000"), &b).unwrap();
        assert_eq!(ok.log_config(&b).retention_ms, 1000);
    }
}
