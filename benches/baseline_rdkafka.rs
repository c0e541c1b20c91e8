//! Baseline throughput through an existing client (librdkafka): 1 KiB messages, acks=1, the
//! broker on one shard pinned to CPU 0 and this load generator pinned to CPU 1.
//!
//! `cargo bench --bench baseline_rdkafka` (env: BASELINE_MESSAGES, default 1,000,000;
//! BASELINE_ROUNDS, default 3). Prints one line per round and the medians. Numbers go to
//! perf/RESULTS.md with the machine they were taken on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use shardlog::perf::consumer::ConsumeConfig;
use shardlog::perf::producer::ProduceConfig;
use shardlog::perf::rdkafka_load;
use shardlog::record::builder::Codec;

const MESSAGE_BYTES: usize = 1024;

struct BrokerProcess(Child);

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start_broker(dir: &std::path::Path) -> (BrokerProcess, String) {
    let data = dir.join("data");
    let mut child = Command::new("taskset")
        .args([
            "-c",
            "0",
            env!("CARGO_BIN_EXE_shardlog"),
            "broker",
            "--cores",
            "1",
        ])
        .args(["--set", "listeners=PLAINTEXT://127.0.0.1:0"])
        .arg("--set")
        .arg(format!("log.dirs={}", data.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start broker under taskset");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("broker prints its address");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    (BrokerProcess(child), addr)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn produce(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let cfg = ProduceConfig {
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        partitions: 1,
        record_size: MESSAGE_BYTES,
        records: n as u64,
        throughput: None,
        batch_size: 1_000_000,
        linger: Duration::from_millis(5),
        codec: Codec::None,
        acks: 1,
        max_in_flight: 5,
        producers: 1,
        keyed: false,
        cpus: vec![1],
        stamp_due: false,
        idempotence: false,
        transaction_records: None,
        progress: Default::default(),
        busy_poll: true,
    };
    let stats = rdkafka_load::produce(&cfg).expect("produce through librdkafka");
    assert_eq!((stats.messages, stats.errors), (n as u64, 0));
    stats.elapsed.as_secs_f64()
}

fn consume(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let cfg = ConsumeConfig {
        bootstrap: bootstrap.to_string(),
        topic: topic.to_string(),
        partitions: 1,
        records: Some(n as u64),
        consumers: 1,
        fetch_max_bytes: 52_428_800,
        partition_max_bytes: 10_485_760,
        client_props: Vec::new(),
        cpus: vec![1],
        isolation_level: None,
        progress: Default::default(),
    };
    let stats = rdkafka_load::consume(&cfg).expect("consume through librdkafka");
    assert_eq!(stats.bytes, (n * MESSAGE_BYTES) as u64);
    stats.elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("BASELINE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("BASELINE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::Builder::new()
        .prefix("shardlog-baseline")
        .tempdir()
        .expect("tempdir");
    let (_broker, bootstrap) = start_broker(dir.path());
    let mb = (n * MESSAGE_BYTES) as f64 / 1e6;
    let (mut produced, mut consumed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let topic = format!("baseline-{round}");
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin");
        let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(1));
        block_on(admin.create_topics([&new], &AdminOptions::new())).expect("create topic");
        let p = produce(&bootstrap, &topic, n);
        let c = consume(&bootstrap, &topic, n);
        println!(
            "round {round}: produce {:.0} MB/s ({:.0} msg/s), consume {:.0} MB/s ({:.0} msg/s)",
            mb / p,
            n as f64 / p,
            mb / c,
            n as f64 / c
        );
        produced.push(mb / p);
        consumed.push(mb / c);
    }
    println!(
        "median of {rounds}: produce {:.0} MB/s, consume {:.0} MB/s ({n} x {MESSAGE_BYTES} B, acks=1, librdkafka {})",
        median(produced),
        median(consumed),
        rdkafka::util::get_rdkafka_version().1
    );
}
