//! Broker and topic configuration under Kafka's key names.
//!
//! Owns the embedded defaults, parsing of a `server.properties`-style file plus `--set key=value`
//! overrides, and the topic-level configs (each a topic override or else the broker's value).
//! Invariant: a `BrokerConfig` or `LogConfig` that exists has been fully validated; nothing later
//! re-parses a value that came from outside.

pub mod cluster;
pub mod topic;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use cluster::ClusterConfig;
pub use topic::{LogConfig, TopicConfigs};

/// Where a configuration value came from, as DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

/// Broker keys with their embedded defaults. Keys not listed are refused at start-up.
const BROKER_DEFAULTS: &[(&str, &str)] = &[
    ("node.id", "0"),
    ("broker.id", "0"),
    ("cluster.id", "shardlog-cluster"),
    ("listeners", "PLAINTEXT://127.0.0.1:9092"),
    ("advertised.listeners", ""),
    ("log.dirs", "./data"),
    ("log.dir", "./data"),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.hours", "168"),
    ("log.roll.ms", ""),
    ("log.retention.hours", "168"),
    ("log.retention.minutes", ""),
    ("log.retention.ms", ""),
    ("log.retention.bytes", "-1"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.index.interval.bytes", "4096"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.dedupe.buffer.size", "134217728"),
    (
        "log.cleaner.io.max.bytes.per.second",
        "1.7976931348623157E308",
    ),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.message.timestamp.type", "CreateTime"),
    ("message.max.bytes", "1048588"),
    ("min.insync.replicas", "1"),
    ("compression.type", "producer"),
    ("socket.request.max.bytes", "104857600"),
    ("delete.topic.enable", "true"),
    ("offsets.topic.replication.factor", "1"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.state.log.segment.bytes", "104857600"),
    ("transaction.state.log.replication.factor", "1"),
    ("transaction.state.log.min.isr", "1"),
    ("transaction.max.timeout.ms", "900000"),
    ("transactional.id.expiration.ms", "604800000"),
    (
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
    ),
    (
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
    ),
    ("producer.id.expiration.ms", "86400000"),
    ("producer.id.expiration.check.interval.ms", "600000"),
    // shardlog's own knobs.
    ("shardlog.write.buffer.bytes", "1048576"),
    ("shardlog.hot.tail.bytes", "8388608"),
    ("shardlog.connection.max.inflight.bytes", "67108864"),
    ("shardlog.connection.max.inflight.requests", "64"),
    ("shardlog.partition.max.pending.bytes", "33554432"),
    ("shardlog.fetch.zero.copy", "false"),
    ("shardlog.read.ahead.bytes", "33554432"),
    ("shardlog.read.ahead.shard.bytes", "268435456"),
    ("shardlog.read.ahead.idle.ms", "10000"),
    ("shardlog.spin.before.park.us", "0"),
    ("shardlog.stall.detection.ms", "0"),
    ("shardlog.latency.report.ms", "0"),
    ("shardlog.log.durability", "sync"),
    ("shardlog.log.preallocate.bytes", "4194304"),
    ("shardlog.io.memory.bytes", "134217728"),
];

/// The broker's configuration: every key with its value and source.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    values: BTreeMap<String, (String, ConfigSource)>,
    pub node_id: i32,
    /// Roles, the controller quorum, listeners by name and the replication settings.
    pub cluster: ClusterConfig,
    pub cluster_id: String,
    pub listen_host: String,
    pub listen_port: u16,
    pub advertised_host: String,
    /// `None` means "the port actually bound" (listeners with port 0).
    pub advertised_port: Option<u16>,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub retention_check_interval_ms: u64,
    /// Log compaction: whether cleaners run, how long one sleeps when nothing needs cleaning,
    /// and the memory of the key→offset map (shared out among the shards).
    pub cleaner_enable: bool,
    pub cleaner_backoff_ms: u64,
    pub cleaner_dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`, shared out among the shards.
    pub cleaner_io_bytes_per_sec: f64,
    pub socket_request_max_bytes: usize,
    pub write_buffer_bytes: usize,
    pub hot_tail_bytes: usize,
    pub connection_max_inflight_bytes: usize,
    pub connection_max_inflight_requests: usize,
    pub partition_max_pending_bytes: usize,
    /// Memory each shard registers with io_uring for DMA buffers (writes and the hot tail);
    /// buffers beyond it come from the heap and cost the kernel a page pinning per write.
    pub io_memory_bytes: usize,
    /// `offsets.topic.num.partitions`: groups are spread over this many coordinator slots.
    pub offsets_topic_partitions: i32,
    /// `offsets.retention.minutes` in ms, and `offsets.retention.check.interval.ms`.
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_ms: u64,
    pub group_config: crate::group::state::GroupConfig,
    /// Send records on disk with sendfile instead of reading them into memory first.
    pub fetch_zero_copy: bool,
    /// Read-ahead memory for readers behind the hot tail: per partition, per shard, and how
    /// long an idle reader's keeps it (`shardlog.read.ahead.bytes`, `.shard.bytes`, `.idle.ms`).
    pub read_ahead_bytes: usize,
    pub read_ahead_shard_bytes: usize,
    pub read_ahead_idle_ms: u64,
    /// How long an idle shard polls for work before it sleeps (0: it sleeps at once).
    pub spin_before_park_us: u64,
    /// A task that runs this much past its budget without yielding is logged with its
    /// backtrace (glommio's stall detector; 0: off).
    pub stall_detection_ms: u64,
    /// Each shard logs where Produce requests waited this often (`timing`; 0: off).
    pub latency_report_ms: u64,
    /// Zeros written ahead of each active segment's end (0: none).
    pub preallocate_bytes: u64,
    /// `shardlog.log.durability`: what the high watermark waits for (fdatasync or the write).
    pub durability: crate::partition::Durability,
    /// `transaction.max.timeout.ms` and `transactional.id.expiration.ms`.
    pub txn_config: crate::txn::state::TxnConfig,
    /// `transaction.state.log.num.partitions` and `transaction.state.log.segment.bytes`.
    pub txn_topic_partitions: i32,
    pub txn_topic_segment_bytes: u64,
    /// How often timed-out transactions are aborted and idle transactional ids expired.
    pub txn_abort_check_ms: u64,
    pub txn_expire_check_ms: u64,
    /// `producer.id.expiration.ms` and how often idle producers are looked for.
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_ms: u64,
    /// Defaults for topic configs, derived from the `log.*` keys.
    pub log_defaults: LogConfig,
}

impl BrokerConfig {
    /// Embedded defaults, then the properties file, then `--set` overrides (last wins).
    pub fn load(file: Option<&std::path::Path>, overrides: &[String]) -> anyhow::Result<Self> {
        let mut values: BTreeMap<String, (String, ConfigSource)> = BROKER_DEFAULTS
            .iter()
            .chain(cluster::CLUSTER_DEFAULTS)
            .map(|(k, v)| (k.to_string(), (v.to_string(), ConfigSource::Default)))
            .collect();
        let mut explicit = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (k, v) = line
                    .split_once('=')
                    .or_else(|| line.split_once(':'))
                    .ok_or_else(|| {
                        anyhow::anyhow!("{}:{}: expected key=value", path.display(), n + 1)
                    })?;
                explicit.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set {o}: expected key=value"))?;
            explicit.push((k.trim().to_string(), v.trim().to_string()));
        }
        for (k, v) in explicit {
            if topic::is_topic_key(&k) && !values.contains_key(&k) {
                anyhow::bail!("'{k}' is a topic config; the broker key is usually 'log.{k}'");
            }
            if !values.contains_key(&k) {
                anyhow::bail!("unknown broker config '{k}'");
            }
            values.insert(k, (v, ConfigSource::StaticBroker));
        }
        Self::from_values(values)
    }

    fn from_values(values: BTreeMap<String, (String, ConfigSource)>) -> anyhow::Result<Self> {
        let get = |k: &str| values.get(k).map(|(v, _)| v.as_str()).unwrap_or("");
        let is_set = |k: &str| {
            values
                .get(k)
                .map(|(_, s)| *s != ConfigSource::Default)
                .unwrap_or(false)
        };
        let num = |k: &str| -> anyhow::Result<i64> {
            get(k)
                .parse::<i64>()
                .map_err(|_| anyhow::anyhow!("{k}: '{}' is not an integer", get(k)))
        };
        let positive = |k: &str| -> anyhow::Result<i64> {
            let n = num(k)?;
            if n <= 0 {
                anyhow::bail!("{k}: must be positive, got {n}");
            }
            Ok(n)
        };
        let node_id = if is_set("node.id") {
            num("node.id")?
        } else {
            num("broker.id")?
        } as i32;
        let cluster = ClusterConfig::parse(node_id, &|k| get(k).to_string())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !cluster.broker {
            anyhow::bail!(
                "process.roles: a controller-only node is not served yet; use broker,controller"
            );
        }
        let client = cluster
            .client_listener()
            .ok_or_else(|| anyhow::anyhow!("listeners: no client listener"))?;
        let (listen_host, listen_port) = (client.host.clone(), client.port);
        let (advertised_host, advertised_port) = if get("advertised.listeners").is_empty() {
            let host = if listen_host == "0.0.0.0" {
                "127.0.0.1".to_string()
            } else {
                listen_host.clone()
            };
            (
                host,
                if listen_port == 0 {
                    None
                } else {
                    Some(listen_port)
                },
            )
        } else {
            let map: BTreeMap<String, String> = cluster
                .listeners
                .iter()
                .map(|l| (l.name.clone(), "PLAINTEXT".to_string()))
                .collect();
            let advertised =
                cluster::parse_listeners(get("advertised.listeners"), "advertised.listeners", &map)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            let chosen = advertised
                .iter()
                .find(|l| l.name == client.name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "advertised.listeners: no entry for the client listener {}",
                        client.name
                    )
                })?;
            (chosen.host.clone(), Some(chosen.port))
        };
        let log_dirs = if is_set("log.dirs") || !is_set("log.dir") {
            get("log.dirs")
        } else {
            get("log.dir")
        };
        let log_dir = PathBuf::from(log_dirs.split(',').next().unwrap_or("./data").trim());
        let retention_ms = if !get("log.retention.ms").is_empty() {
            num("log.retention.ms")?
        } else if !get("log.retention.minutes").is_empty() {
            num("log.retention.minutes")? * 60_000
        } else {
            num("log.retention.hours")? * 3_600_000
        };
        let roll_ms = if !get("log.roll.ms").is_empty() {
            positive("log.roll.ms")?
        } else {
            positive("log.roll.hours")? * 3_600_000
        };
        let mut defaults = BTreeMap::new();
        defaults.insert(
            "segment.bytes".to_string(),
            get("log.segment.bytes").to_string(),
        );
        defaults.insert("segment.ms".to_string(), roll_ms.to_string());
        defaults.insert("retention.ms".to_string(), retention_ms.to_string());
        defaults.insert(
            "retention.bytes".to_string(),
            get("log.retention.bytes").to_string(),
        );
        defaults.insert(
            "index.interval.bytes".to_string(),
            get("log.index.interval.bytes").to_string(),
        );
        defaults.insert(
            "cleanup.policy".to_string(),
            get("log.cleanup.policy").to_string(),
        );
        defaults.insert(
            "message.timestamp.type".to_string(),
            get("log.message.timestamp.type").to_string(),
        );
        defaults.insert(
            "max.message.bytes".to_string(),
            get("message.max.bytes").to_string(),
        );
        defaults.insert(
            "min.insync.replicas".to_string(),
            get("min.insync.replicas").to_string(),
        );
        defaults.insert(
            "compression.type".to_string(),
            get("compression.type").to_string(),
        );
        for (topic_key, broker_key) in [
            ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
            (
                "min.cleanable.dirty.ratio",
                "log.cleaner.min.cleanable.ratio",
            ),
            ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
            ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
        ] {
            defaults.insert(topic_key.to_string(), get(broker_key).to_string());
        }
        let log_defaults = LogConfig::from_map(&topic::complete_defaults(defaults))
            .map_err(|e| anyhow::anyhow!("broker log defaults: {e}"))?;
        let write_buffer_bytes = positive("shardlog.write.buffer.bytes")? as usize;
        if !write_buffer_bytes.is_multiple_of(4096) {
            anyhow::bail!(
                "shardlog.write.buffer.bytes: must be a multiple of 4096, got {write_buffer_bytes}"
            );
        }
        let cfg = BrokerConfig {
            node_id,
            cluster,
            cluster_id: get("cluster.id").to_string(),
            listen_host,
            listen_port,
            advertised_host,
            advertised_port,
            log_dir,
            num_partitions: positive("num.partitions")? as i32,
            auto_create_topics: parse_bool(
                "auto.create.topics.enable",
                get("auto.create.topics.enable"),
            )?,
            retention_check_interval_ms: positive("log.retention.check.interval.ms")? as u64,
            cleaner_enable: parse_bool("log.cleaner.enable", get("log.cleaner.enable"))?,
            cleaner_backoff_ms: positive("log.cleaner.backoff.ms")? as u64,
            cleaner_dedupe_buffer_bytes: positive("log.cleaner.dedupe.buffer.size")? as usize,
            cleaner_io_bytes_per_sec: match get("log.cleaner.io.max.bytes.per.second").parse() {
                Ok(rate) if rate > 0.0 => rate,
                _ => anyhow::bail!(
                    "log.cleaner.io.max.bytes.per.second: '{}' is not a positive number",
                    get("log.cleaner.io.max.bytes.per.second")
                ),
            },
            socket_request_max_bytes: positive("socket.request.max.bytes")? as usize,
            write_buffer_bytes,
            hot_tail_bytes: num("shardlog.hot.tail.bytes")?.max(0) as usize,
            connection_max_inflight_bytes: positive("shardlog.connection.max.inflight.bytes")?
                as usize,
            connection_max_inflight_requests: positive("shardlog.connection.max.inflight.requests")?
                as usize,
            partition_max_pending_bytes: positive("shardlog.partition.max.pending.bytes")? as usize,
            io_memory_bytes: positive("shardlog.io.memory.bytes")? as usize,
            offsets_topic_partitions: positive("offsets.topic.num.partitions")?.min(i32::MAX as i64)
                as i32,
            offsets_retention_ms: positive("offsets.retention.minutes")?.saturating_mul(60_000),
            offsets_retention_check_ms: positive("offsets.retention.check.interval.ms")? as u64,
            group_config: crate::group::state::GroupConfig {
                initial_rebalance_delay_ms: num("group.initial.rebalance.delay.ms")?.max(0) as u64,
                min_session_timeout_ms: positive("group.min.session.timeout.ms")? as u64,
                max_session_timeout_ms: positive("group.max.session.timeout.ms")? as u64,
            },
            fetch_zero_copy: parse_bool(
                "shardlog.fetch.zero.copy",
                get("shardlog.fetch.zero.copy"),
            )?,
            read_ahead_bytes: num("shardlog.read.ahead.bytes")?.max(0) as usize,
            read_ahead_shard_bytes: num("shardlog.read.ahead.shard.bytes")?.max(0) as usize,
            read_ahead_idle_ms: positive("shardlog.read.ahead.idle.ms")? as u64,
            spin_before_park_us: num("shardlog.spin.before.park.us")?.max(0) as u64,
            stall_detection_ms: num("shardlog.stall.detection.ms")?.max(0) as u64,
            latency_report_ms: num("shardlog.latency.report.ms")?.max(0) as u64,
            preallocate_bytes: num("shardlog.log.preallocate.bytes")?.max(0) as u64,
            txn_config: crate::txn::state::TxnConfig {
                max_timeout_ms: positive("transaction.max.timeout.ms")?.min(i32::MAX as i64) as i32,
                id_expiration_ms: positive("transactional.id.expiration.ms")?,
            },
            txn_topic_partitions: positive("transaction.state.log.num.partitions")?
                .min(i32::MAX as i64) as i32,
            txn_topic_segment_bytes: positive("transaction.state.log.segment.bytes")? as u64,
            txn_abort_check_ms: positive(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            )? as u64,
            txn_expire_check_ms: positive(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
            )? as u64,
            producer_id_expiration_ms: positive("producer.id.expiration.ms")?,
            producer_id_expiration_check_ms: positive("producer.id.expiration.check.interval.ms")?
                as u64,
            durability: match get("shardlog.log.durability") {
                "sync" => crate::partition::Durability::Sync,
                "write" => crate::partition::Durability::Write,
                other => {
                    anyhow::bail!("shardlog.log.durability: '{other}' is not 'sync' or 'write'")
                }
            },
            log_defaults,
            values,
        };
        Ok(cfg)
    }

    /// Where a topic's effective value of `key` comes from: its own override, a broker key set
    /// in the config file or on the command line, or the embedded default.
    pub fn topic_config_source(&self, topic: &TopicConfigs, key: &str) -> ConfigSource {
        if topic.overrides.contains_key(key) {
            return ConfigSource::DynamicTopic;
        }
        let set = |k: &str| {
            self.values
                .get(k)
                .is_some_and(|(_, s)| *s == ConfigSource::StaticBroker)
        };
        if topic::broker_keys_for(key).iter().any(|k| set(k)) {
            ConfigSource::StaticBroker
        } else {
            ConfigSource::Default
        }
    }

    /// Every broker key with its value and source, for DescribeConfigs.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, ConfigSource)> {
        self.values
            .iter()
            .map(|(k, (v, s))| (k.as_str(), v.as_str(), *s))
    }
}

pub fn parse_bool(key: &str, v: &str) -> anyhow::Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => anyhow::bail!("{key}: '{v}' is not true or false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_on_9092_under_data() {
        let c = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!((c.listen_host.as_str(), c.listen_port), ("127.0.0.1", 9092));
        assert_eq!(c.log_dir, PathBuf::from("./data"));
        assert_eq!(c.log_defaults.retention_ms, 168 * 3_600_000);
    }

    #[test]
    fn overrides_and_refusals() {
        let c = BrokerConfig::load(
            None,
            &["log.retention.ms=5000".into(), "num.partitions=3".into()],
        )
        .unwrap();
        assert_eq!(c.log_defaults.retention_ms, 5000);
        assert_eq!(c.num_partitions, 3);
        assert!(BrokerConfig::load(None, &["no.such.key=1".into()]).is_err());
        assert!(BrokerConfig::load(None, &["num.partitions=zero".into()]).is_err());
        assert!(BrokerConfig::load(None, &["listeners=SSL://x:1".into()]).is_err());
    }

    #[test]
    fn properties_file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("shardlog-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.properties");
        std::fs::write(
            &file,
            "# comment\n! also a comment\n\nlisteners=PLAINTEXT://0.0.0.0:9093\nlog.dirs = /tmp/a,/tmp/b\nnum.partitions: 4\nlog.retention.hours=1\n",
        )
        .unwrap();
        let c = BrokerConfig::load(Some(&file), &["num.partitions=6".into()]).unwrap();
        assert_eq!((c.listen_host.as_str(), c.listen_port), ("0.0.0.0", 9093));
        assert_eq!(c.advertised_host, "127.0.0.1");
        assert_eq!(c.log_dir, PathBuf::from("/tmp/a"));
        assert_eq!(c.num_partitions, 6, "--set wins over the file");
        assert_eq!(c.log_defaults.retention_ms, 3_600_000);
        let source = c
            .entries()
            .find(|(k, _, _)| *k == "log.retention.hours")
            .map(|e| e.2);
        assert_eq!(source, Some(ConfigSource::StaticBroker));
        std::fs::write(&file, "num.partitions=2\nthis line is wrong\n").unwrap();
        let err = BrokerConfig::load(Some(&file), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.properties:2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
