//! `shardlog perf produce | consume | e2e | rebalance`, with the options of Kafka's own perf tools
//! (`kafka-producer-perf-test`, `kafka-consumer-perf-test`) where they exist.

use std::time::Duration;

use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::consumer::{self, ConsumeConfig};
use super::producer::{self, ProduceConfig};
use super::stats::Stats;
use crate::client::Client;
use crate::record::builder::Codec;

#[derive(Args, Clone)]
pub struct Target {
    /// Broker address.
    #[arg(
        long = "bootstrap-server",
        alias = "bootstrap",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    /// Partitions to create the topic with if it does not exist.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// CPUs to pin load threads to, e.g. "1" or "2,3" (keep them off the broker's cores).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// The client that drives the load: the project's own, or librdkafka for reference.
    #[arg(long, value_enum, default_value = "shardlog")]
    pub client: ClientKind,
    /// Also write the latency distributions: PREFIX.svg (a percentile plot) and
    /// PREFIX.<what>.hgrm for each (HdrHistogram's text format; `perf plot` lays runs together).
    #[arg(long = "latency-plot", value_name = "PREFIX")]
    pub latency_plot: Option<std::path::PathBuf>,
    /// The producer sleeps in ppoll(2) between sends instead of spinning on its socket: its
    /// CPU idles, but a sleeping thread (on a VM, a halted vCPU) can wake late, and that
    /// shows up as latency. In `perf e2e` the consumer waits the same way (it runs on the
    /// producer's thread).
    #[arg(long)]
    pub sleep: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    Shardlog,
    Rdkafka,
}

/// Produces with the chosen client, showing a live progress line on a terminal.
pub fn produce_with(target: &Target, cfg: &ProduceConfig) -> anyhow::Result<Stats> {
    let _line = cfg
        .progress
        .display("produce", cfg.records, cfg.record_size, target.json);
    match target.client {
        ClientKind::Shardlog if cfg.idempotence || cfg.transaction_records.is_some() => {
            anyhow::bail!("idempotent and transactional producers need --client rdkafka")
        }
        ClientKind::Shardlog => producer::run(cfg),
        ClientKind::Rdkafka => super::rdkafka_load::produce(cfg),
    }
}

/// Consumes with the chosen client, showing a live progress line on a terminal.
fn consume_with(target: &Target, cfg: &ConsumeConfig) -> anyhow::Result<Stats> {
    let total = cfg.records.unwrap_or(0);
    let _line = cfg.progress.display("consume", total, 0, target.json);
    match target.client {
        ClientKind::Shardlog if cfg.isolation_level.is_some() => {
            anyhow::bail!("--isolation-level needs --client rdkafka")
        }
        ClientKind::Shardlog => consumer::run(cfg),
        ClientKind::Rdkafka => super::rdkafka_load::consume(cfg),
    }
}

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Consumer-group timings with librdkafka: first assignment, N members joining, one more
    /// member joining and leaving a stable group.
    Rebalance(super::rebalance::RebalanceArgs),
    /// The machine's scheduling floor: spins on each CPU and reports the gaps in which it did
    /// not run, and the delay they cause to work due at a random instant.
    Jitter {
        /// CPUs to measure at once, e.g. "0,1" (default: every CPU this process may use).
        #[arg(long, value_delimiter = ',')]
        cpus: Vec<usize>,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Print one JSON object per CPU.
        #[arg(long)]
        json: bool,
    },
    /// Draws the `.hgrm` latency distributions of several runs into one SVG percentile plot.
    Plot {
        /// The SVG to write.
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value = "latency by percentile")]
        title: String,
        /// `.hgrm` files (as `--latency-plot` writes them); each is named by its file name.
        #[arg(required = true)]
        runs: Vec<std::path::PathBuf>,
    },
    /// Produce records and report throughput and acknowledgement latency.
    Produce {
        #[command(flatten)]
        target: Target,
        #[arg(long = "num-records", default_value_t = 1_000_000)]
        num_records: u64,
        #[arg(long = "record-size", default_value_t = 1024)]
        record_size: usize,
        /// Records per second over all producers (open loop); -1 for as fast as possible.
        #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
        throughput: f64,
        /// Kafka producer settings: batch.size, linger.ms, compression.type, acks,
        /// max.in.flight.requests.per.connection, partitioner.ignore.keys, enable.idempotence.
        #[arg(long = "producer-props", num_args = 1.., value_name = "KEY=VALUE")]
        producer_props: Vec<String>,
        /// Send in transactions of this many records (librdkafka; each producer thread has its
        /// own transactional id).
        #[arg(long = "transaction-records")]
        transaction_records: Option<u64>,
        /// Producer threads, each with its own connection.
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// Give each record a key (its number), partitioned as the Java client does.
        #[arg(long)]
        keyed: bool,
    },
    /// Produce and consume at once: ack latency and producer-to-consumer latency.
    E2e {
        #[command(flatten)]
        target: Target,
        #[arg(long = "num-records", default_value_t = 100_000)]
        num_records: u64,
        /// At least 8: the first 8 bytes carry the record's due time.
        #[arg(long = "record-size", default_value_t = 1024)]
        record_size: usize,
        /// Records per second (open loop); -1 for as fast as possible.
        #[arg(long, default_value_t = 10_000.0, allow_hyphen_values = true)]
        throughput: f64,
        #[arg(long = "producer-props", num_args = 1.., value_name = "KEY=VALUE")]
        producer_props: Vec<String>,
    },
    /// Read a topic from the start and report throughput.
    Consume {
        #[command(flatten)]
        target: Target,
        /// Records to read (default: everything there at the start).
        #[arg(long)]
        messages: Option<u64>,
        /// Consumer threads, each with its own connection and share of the partitions.
        #[arg(long, default_value_t = 1)]
        consumers: usize,
        /// read_committed or read_uncommitted (librdkafka; default: its own, read_committed).
        #[arg(long = "isolation-level")]
        isolation_level: Option<String>,
        /// Kafka consumer settings: max.partition.fetch.bytes (default 1048576, as every
        /// mainstream client) and fetch.max.bytes (default 52428800); with `--client rdkafka`
        /// any other librdkafka setting is passed through as given.
        #[arg(long = "consumer-props", num_args = 1.., value_name = "KEY=VALUE")]
        consumer_props: Vec<String>,
    },
}

/// Consumer settings as `consumer_props` parses them: fetch.max.bytes,
/// max.partition.fetch.bytes, and the other settings (for librdkafka).
pub type ConsumerProps = (i32, i32, Vec<(String, String)>);

/// Consumer settings by their Kafka names; the defaults are the clients' own.
pub fn consumer_props(props: &[String]) -> anyhow::Result<ConsumerProps> {
    let (mut fetch_max, mut partition_max, mut other) = (52_428_800i32, 1_048_576i32, Vec::new());
    for kv in props {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--consumer-props {kv}: expected key=value"))?;
        let bad = || anyhow::anyhow!("--consumer-props: bad value '{v}' for {k}");
        match k {
            "fetch.max.bytes" => fetch_max = v.parse().map_err(|_| bad())?,
            "max.partition.fetch.bytes" => partition_max = v.parse().map_err(|_| bad())?,
            _ => other.push((k.to_string(), v.to_string())),
        }
    }
    if fetch_max < 1 || partition_max < 1 {
        anyhow::bail!("fetch.max.bytes and max.partition.fetch.bytes must be at least 1");
    }
    Ok((fetch_max, partition_max, other))
}

/// Producer settings by their Kafka names, with the Java client's defaults.
pub fn producer_props(props: &[String]) -> anyhow::Result<ProducerProps> {
    let (mut batch, mut linger, mut codec, mut acks, mut inflight, mut ignore_keys) =
        (16384usize, 5u64, Codec::None, -1i16, 5usize, false);
    for kv in props {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--producer-props {kv}: expected key=value"))?;
        let bad = || anyhow::anyhow!("--producer-props: bad value '{v}' for {k}");
        match k {
            "batch.size" => batch = v.parse().map_err(|_| bad())?,
            "linger.ms" => linger = v.parse().map_err(|_| bad())?,
            "compression.type" => codec = Codec::parse(v).ok_or_else(bad)?,
            "acks" => {
                acks = match v {
                    "all" | "-1" => -1,
                    "1" => 1,
                    "0" => 0,
                    _ => return Err(bad()),
                }
            }
            "max.in.flight.requests.per.connection" => inflight = v.parse().map_err(|_| bad())?,
            "partitioner.ignore.keys" => ignore_keys = crate::config::parse_bool(k, v)?,
            "enable.idempotence" => {
                crate::config::parse_bool(k, v)?;
            }
            "bootstrap.servers" | "client.id" => {}
            other => anyhow::bail!("--producer-props: unsupported setting '{other}'"),
        }
    }
    if inflight == 0 {
        anyhow::bail!("max.in.flight.requests.per.connection must be at least 1");
    }
    Ok((
        batch.max(1),
        Duration::from_millis(linger),
        codec,
        acks,
        inflight,
        ignore_keys,
    ))
}

/// `enable.idempotence` among the producer settings (false unless set, as librdkafka).
fn idempotence(props: &[String]) -> anyhow::Result<bool> {
    let mut on = false;
    for (k, v) in props.iter().filter_map(|kv| kv.split_once('=')) {
        if k == "enable.idempotence" {
            on = crate::config::parse_bool(k, v)?;
        }
    }
    Ok(on)
}

/// Kafka producer settings as `producer_props` parses them: batch.size, linger.ms,
/// compression.type, acks, max.in.flight.requests.per.connection, partitioner.ignore.keys.
pub type ProducerProps = (usize, Duration, Codec, i16, usize, bool);

/// The settings `produce` and `e2e` share: one producer, unkeyed, no due-time stamps.
pub fn produce_config(
    target: &Target,
    partitions: usize,
    record_size: usize,
    records: u64,
    throughput: f64,
    props: &ProducerProps,
) -> ProduceConfig {
    let &(batch_size, linger, codec, acks, max_in_flight, _) = props;
    ProduceConfig {
        bootstrap: target.bootstrap.clone(),
        topic: target.topic.clone(),
        partitions,
        record_size,
        records,
        throughput: (throughput > 0.0).then_some(throughput),
        batch_size,
        linger,
        codec,
        acks,
        max_in_flight,
        producers: 1,
        keyed: false,
        cpus: target.cpus.clone(),
        stamp_due: false,
        idempotence: false,
        transaction_records: None,
        progress: Default::default(),
        busy_poll: !target.sleep,
    }
}

/// The topic's partition count, creating the topic with `partitions` if it does not exist.
pub fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<usize> {
    let mut client = Client::connect(bootstrap)?;
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![t]);
    r.allow_auto_topic_creation = false;
    let meta = client.send(&r, 12)?;
    if let Some(t) = meta.topics.first().filter(|t| t.error_code == 0) {
        return Ok(t.partitions.len());
    }
    let mut ct = CreatableTopic::default();
    ct.name = TopicName(StrBytes::from_string(topic.to_string()));
    ct.num_partitions = partitions;
    ct.replication_factor = -1;
    let mut c = CreateTopicsRequest::default();
    c.topics = vec![ct];
    c.timeout_ms = 30_000;
    let created = client.send(&c, 7)?;
    match created.topics.first() {
        Some(t) if t.error_code == 0 || t.error_code == 36 => Ok(partitions as usize),
        Some(t) => anyhow::bail!("cannot create {topic}: error {}", t.error_code),
        None => anyhow::bail!("cannot create {topic}: empty answer"),
    }
}

/// Writes PREFIX.svg with every distribution given and PREFIX.<what>.hgrm for each.
fn write_plots(prefix: &std::path::Path, runs: &[(&str, &Stats)]) -> anyhow::Result<()> {
    let with_ext = |ext: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(ext);
        std::path::PathBuf::from(name)
    };
    let mut series = Vec::new();
    for (what, stats) in runs {
        let path = with_ext(&format!(".{what}.hgrm"));
        std::fs::write(&path, super::plot::hgrm(&stats.latency_us))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        series.push(super::plot::series(what, &stats.latency_us));
    }
    let path = with_ext(".svg");
    let title = prefix
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    std::fs::write(&path, super::plot::svg(&title, &series))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn report(stats: &Stats, what: &str, json: bool) {
    if json {
        println!("{}", stats.json(what));
    } else {
        println!("{}", stats.text(what));
    }
}

pub fn run(cmd: PerfCommand) -> anyhow::Result<()> {
    match cmd {
        PerfCommand::Rebalance(args) => super::rebalance::run(args),
        PerfCommand::Jitter {
            cpus,
            seconds,
            json,
        } => {
            let cpus = if cpus.is_empty() {
                core_affinity::get_core_ids()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.id)
                    .collect()
            } else {
                cpus
            };
            if !(seconds > 0.0 && seconds <= 3600.0) {
                anyhow::bail!("--seconds must be between 0 and 3600, got {seconds}");
            }
            let all = super::jitter::measure(&cpus, std::time::Duration::from_secs_f64(seconds))?;
            for gaps in &all {
                println!("{}", if json { gaps.json() } else { gaps.text() });
            }
            if all.len() > 1 && !json {
                println!("{}", super::jitter::combined_text(&all));
            }
            Ok(())
        }
        PerfCommand::Plot { out, title, runs } => {
            let mut series = Vec::new();
            for path in &runs {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                let name = path.file_name().map_or_else(String::new, |n| {
                    n.to_string_lossy().trim_end_matches(".hgrm").to_string()
                });
                series.push(super::plot::parse_hgrm(&name, &text)?);
            }
            std::fs::write(&out, super::plot::svg(&title, &series))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))
        }
        PerfCommand::E2e {
            target,
            num_records,
            record_size,
            throughput,
            producer_props: props,
        } => {
            if record_size < 8 {
                anyhow::bail!(
                    "--record-size must be at least 8 for e2e (the due time travels in the value)"
                );
            }
            let props = producer_props(&props)?;
            let partitions = ensure_topic(&target.bootstrap, &target.topic, target.partitions)?;
            let consume = ConsumeConfig {
                bootstrap: target.bootstrap.clone(),
                topic: target.topic.clone(),
                partitions,
                records: Some(num_records),
                consumers: 1,
                fetch_max_bytes: 64 << 20,
                partition_max_bytes: 16 << 20,
                client_props: Vec::new(),
                cpus: target.cpus.clone(),
                isolation_level: None,
                progress: Default::default(),
            };
            // The consumer runs on the producer's thread, polled whenever the producer
            // waits: on a second thread it would wait for the scheduler (or share the
            // CPU with a spinning producer) each time its records arrive.
            if !matches!(target.client, ClientKind::Shardlog) {
                anyhow::bail!("perf e2e runs on the project's own client (drop --client)");
            }
            let tail = consumer::Tail::start(&consume)?;
            let cfg = ProduceConfig {
                stamp_due: true,
                ..produce_config(
                    &target,
                    partitions,
                    record_size,
                    num_records,
                    throughput,
                    &props,
                )
            };
            let line = cfg
                .progress
                .display("produce", cfg.records, cfg.record_size, target.json);
            let (produced, tail) = producer::run_with_tail(&cfg, tail)?;
            drop(line);
            let e2e = tail.finish(num_records, Duration::from_secs(10))?;
            report(&produced, "produce", target.json);
            report(&e2e, "e2e", target.json);
            if let Some(prefix) = &target.latency_plot {
                write_plots(prefix, &[("produce", &produced), ("e2e", &e2e)])?;
            }
            if e2e.messages < num_records {
                anyhow::bail!("the consumer saw {} of {num_records} records", e2e.messages);
            }
            Ok(())
        }
        PerfCommand::Produce {
            target,
            num_records,
            record_size,
            throughput,
            producer_props: props,
            transaction_records,
            producers,
            keyed,
        } => {
            let idempotence = idempotence(&props)? || transaction_records.is_some();
            let props = producer_props(&props)?;
            if transaction_records == Some(0) {
                anyhow::bail!("--transaction-records must be at least 1");
            }
            let partitions = ensure_topic(&target.bootstrap, &target.topic, target.partitions)?;
            let cfg = ProduceConfig {
                producers,
                idempotence,
                transaction_records,
                keyed: keyed && !props.5,
                ..produce_config(
                    &target,
                    partitions,
                    record_size,
                    num_records,
                    throughput,
                    &props,
                )
            };
            let stats = produce_with(&target, &cfg)?;
            report(&stats, "produce", target.json);
            if let Some(prefix) = &target.latency_plot {
                write_plots(prefix, &[("produce", &stats)])?;
            }
            if stats.errors > 0 {
                anyhow::bail!("{} records were refused", stats.errors);
            }
            Ok(())
        }
        PerfCommand::Consume {
            target,
            messages,
            consumers,
            isolation_level,
            consumer_props: props,
        } => {
            let (fetch_max_bytes, partition_max_bytes, client_props) = consumer_props(&props)?;
            if target.client == ClientKind::Shardlog && !client_props.is_empty() {
                anyhow::bail!(
                    "--consumer-props: {} is a librdkafka setting (use --client rdkafka)",
                    client_props[0].0
                );
            }
            if let Some(level) = isolation_level.as_deref() {
                if !matches!(level, "read_committed" | "read_uncommitted") {
                    anyhow::bail!(
                        "--isolation-level: '{level}' is not read_committed or read_uncommitted"
                    );
                }
            }
            let partitions = ensure_topic(&target.bootstrap, &target.topic, target.partitions)?;
            let cfg = ConsumeConfig {
                bootstrap: target.bootstrap.clone(),
                topic: target.topic.clone(),
                partitions,
                records: messages,
                consumers,
                fetch_max_bytes,
                partition_max_bytes,
                client_props,
                cpus: target.cpus.clone(),
                isolation_level,
                progress: Default::default(),
            };
            let stats = consume_with(&target, &cfg)?;
            report(&stats, "consume", target.json);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_props_take_kafka_names_and_defaults() {
        let (batch, linger, codec, acks, inflight, ignore) = producer_props(&[]).unwrap();
        assert_eq!(
            (batch, linger, codec, acks, inflight, ignore),
            (16384, Duration::from_millis(5), Codec::None, -1, 5, false)
        );
        let props: Vec<String> = [
            "batch.size=1000000",
            "linger.ms=0",
            "compression.type=zstd",
            "acks=1",
            "max.in.flight.requests.per.connection=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (batch, linger, codec, acks, inflight, _) = producer_props(&props).unwrap();
        assert_eq!(
            (batch, linger, codec, acks, inflight),
            (1_000_000, Duration::ZERO, Codec::Zstd, 1, 1)
        );
        assert!(producer_props(&["acks=2".into()]).is_err());
        assert!(producer_props(&["no.such=1".into()]).is_err());
        assert!(producer_props(&["max.in.flight.requests.per.connection=0".into()]).is_err());
    }
}
