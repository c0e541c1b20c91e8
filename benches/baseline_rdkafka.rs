//! Baseline throughput through an existing client (librdkafka): 1 KiB messages, acks=1, the
//! broker on one shard pinned to CPU 0 and this load generator pinned to CPU 1.
//!
//! `cargo bench --bench baseline_rdkafka` (env: BASELINE_MESSAGES, default 1,000,000;
//! BASELINE_ROUNDS, default 3). Prints one line per round and the medians. Numbers go to
//! perf/RESULTS.md with the machine they were taken on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const MESSAGE_BYTES: usize = 1024;

struct BrokerProcess(Child);

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn pin_to(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
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

fn produce(bootstrap: &str, topic: &str, n: usize) -> Duration {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "false")
        .create()
        .expect("producer");
    let payload = vec![b'x'; MESSAGE_BYTES];
    let start = Instant::now();
    for _ in 0..n {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    start.elapsed()
}

fn consume(bootstrap: &str, topic: &str, n: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "baseline")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                assert_eq!(m.payload().map(|p| p.len()), Some(MESSAGE_BYTES));
                got += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("consume stalled at {got} of {n}"),
        }
    }
    start.elapsed()
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
    pin_to(1);
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
        let p = produce(&bootstrap, &topic, n).as_secs_f64();
        let c = consume(&bootstrap, &topic, n).as_secs_f64();
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
