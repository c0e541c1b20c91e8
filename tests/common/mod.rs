//! Shared harness for the shardlog integration tests.
//!
//! * [`Broker`] starts the real `shardlog` binary on an ephemeral port, waits for its
//!   `shardlog: listening on 127.0.0.1:<port>` line, and always kills it on drop.
//! * Helpers build rdkafka producers / consumers / admin clients with test-friendly settings.
//! * [`consume_all`] / [`consume_messages`] read partitions from explicit offsets with
//!   `assign()` (no consumer-group APIs are used) until every partition reports EOF.
//!
//! Environment knobs (all optional):
//! * `SHARDLOG_TEST_TMPDIR`: where broker temp dirs are created (default: cargo's
//!   `CARGO_TARGET_TMPDIR`, which lives on a real disk so O_DIRECT works; /tmp may be tmpfs).
//! * `SHARDLOG_TEST_BROKER_STDERR=inherit`: let the broker's stderr through to the terminal
//!   instead of writing it to `<root>/broker-<n>.stderr` (its tail is printed on test failure).
//! * `SHARDLOG_TEST_MSGS`: messages per run in rdkafka_produce_consume (default 200,000).
//! * `SHARDLOG_TEST_MSGS_MC`: message count per run for the multi-core tests (default 100,000).

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Timestamp, TopicPartitionList};
use tempfile::TempDir;

/// The exact prefix of the readiness line the broker prints on stdout.
pub const LISTENING_PREFIX: &str = "shardlog: listening on ";
/// How long to wait for the readiness line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a clean exit after SIGTERM / SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

static BROKER_COUNTER: AtomicUsize = AtomicUsize::new(0);
static GROUP_COUNTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Misc helpers
// ---------------------------------------------------------------------------------------------

/// Reads a `usize` from the environment, falling back to `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("environment variable {name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A fresh temp dir on a disk that supports O_DIRECT (see module docs).
pub fn test_tempdir() -> TempDir {
    let base = std::env::var_os("SHARDLOG_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    fs::create_dir_all(&base)
        .unwrap_or_else(|e| panic!("cannot create test temp base {}: {e}", base.display()));
    tempfile::Builder::new()
        .prefix("shardlog-it-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("cannot create temp dir in {}: {e}", base.display()))
}

/// Where a broker rooted at `root` keeps its log.dirs.
pub fn data_dir_of(root: &Path) -> PathBuf {
    root.join("data")
}

/// `<log.dirs>/<topic>-<partition>`.
pub fn partition_dir_of(root: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir_of(root).join(format!("{topic}-{partition}"))
}

/// Lossy, length-limited rendering of bytes for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > 80 {
        let head: String = s.chars().take(80).collect();
        format!("{head}...({} bytes)", bytes.len())
    } else {
        s.into_owned()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

fn tail_of_file(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Drives a future to completion on the current thread (no async runtime needed: the
/// rdkafka admin futures are completed by rdkafka's own background thread).
pub fn block_on<F: Future>(fut: F, timeout: Duration, what: &str) -> F::Output {
    struct ThreadWaker(thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let now = Instant::now();
        if now >= deadline {
            panic!("{what}: no result after {timeout:?}");
        }
        thread::park_timeout((deadline - now).min(Duration::from_millis(100)));
    }
}

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// A running `shardlog broker` child process. Dropping it SIGKILLs and reaps the process.
pub struct Broker {
    child: Option<Child>,
    addr: String,
    port: u16,
    root: PathBuf,
    stderr_path: Option<PathBuf>,
    // Declared last so the process is gone (Drop of Broker runs first) before the dir is removed.
    owned_dir: Option<TempDir>,
}

impl Broker {
    /// Starts a broker in a fresh temp dir owned by the returned value.
    pub fn start(args: &[(&str, &str)], cores: usize) -> Broker {
        let dir = test_tempdir();
        let mut broker = Broker::start_in(dir.path(), args, cores);
        broker.owned_dir = Some(dir);
        broker
    }

    /// Starts a broker whose state lives under `root` (log.dirs = `root/data`, stderr in
    /// `root/broker-<n>.stderr`). Use this to restart on the same data.
    ///
    /// `cores == 0` omits `--cores` (broker default).
    pub fn start_in(root: &Path, args: &[(&str, &str)], cores: usize) -> Broker {
        let data = data_dir_of(root);
        fs::create_dir_all(&data)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardlog"));
        cmd.arg("broker")
            .arg("--set")
            .arg("listeners=PLAINTEXT://127.0.0.1:0")
            .arg("--set")
            .arg(format!("log.dirs={}", data.display()));
        if cores > 0 {
            cmd.arg("--cores").arg(cores.to_string());
        }
        for (k, v) in args {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());

        let inherit = std::env::var("SHARDLOG_TEST_BROKER_STDERR")
            .map(|v| v == "inherit")
            .unwrap_or(false);
        let stderr_path = if inherit {
            cmd.stderr(Stdio::inherit());
            None
        } else {
            let n = BROKER_COUNTER.fetch_add(1, Ordering::SeqCst);
            let path = root.join(format!("broker-{n}.stderr"));
            let file = File::create(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            cmd.stderr(Stdio::from(file));
            Some(path)
        };

        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot spawn {} broker: {e}",
                env!("CARGO_BIN_EXE_shardlog")
            )
        });
        let stdout = child.stdout.take().expect("broker stdout is piped");

        // From here on the guard owns the child: any panic below kills it.
        let mut broker = Broker {
            child: Some(child),
            addr: String::new(),
            port: 0,
            root: root.to_path_buf(),
            stderr_path,
            owned_dir: None,
        };

        // Forward stdout lines over a channel; keep draining until EOF so the broker can
        // never block on a full pipe.
        let (tx, rx) = mpsc::channel::<String>();
        thread::Builder::new()
            .name("broker-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                            let _ = tx.send(line);
                        }
                    }
                }
            })
            .expect("spawn stdout reader thread");

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(LISTENING_PREFIX) {
                        break rest.trim().to_string();
                    }
                    eprintln!("[broker stdout] {line}");
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed without the readiness line: give the process a moment
                    // to exit so we can report its status.
                    let status = broker.wait_exit(Duration::from_secs(5));
                    panic!(
                        "broker closed stdout without printing {LISTENING_PREFIX:?}...; exit status: {}{}",
                        status.map(|s| s.to_string()).unwrap_or_else(|| "still running".into()),
                        broker.stderr_tail()
                    );
                }
            }
            if let Some(status) = broker.try_exit_status() {
                panic!(
                    "broker exited with {status} before printing {LISTENING_PREFIX:?}<addr>{}",
                    broker.stderr_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker did not print {LISTENING_PREFIX:?}<addr> within {START_TIMEOUT:?}{}",
                    broker.stderr_tail()
                );
            }
        };

        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("cannot parse port from readiness line address {addr:?}"));
        assert!(
            port != 0,
            "broker reported port 0 ({addr:?}); it must print the real port"
        );
        broker.addr = addr;
        broker.port = port;
        broker
    }

    /// Starts a broker on `root`'s data listening on `port` (a restart where clients keep
    /// their bootstrap address).
    pub fn start_on(root: &Path, port: u16, args: &[(&str, &str)], cores: usize) -> Broker {
        let listeners = format!("PLAINTEXT://127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![("listeners", &listeners)];
        all.extend_from_slice(args);
        Broker::start_in(root, &all, cores)
    }

    /// SIGKILLs the broker and starts it again on the same data and port.
    pub fn crash_and_restart(&mut self, args: &[(&str, &str)], cores: usize) {
        self.kill();
        let root = self.root.clone();
        let port = self.port;
        let mut next = Broker::start_on(&root, port, args, cores);
        // The old value owns nothing more to clean up but its temp dir, which stays.
        std::mem::swap(&mut self.child, &mut next.child);
        self.stderr_path = next.stderr_path.take();
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        data_dir_of(&self.root)
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        partition_dir_of(&self.root, topic, partition)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none() && self.child.is_some()
    }

    /// SIGKILL (simulated crash) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to 30 s, assert exit code 0.
    pub fn terminate(&mut self) {
        self.stop_with_signal(libc::SIGTERM, "SIGTERM");
    }

    /// SIGINT, wait up to 30 s, assert exit code 0.
    pub fn interrupt(&mut self) {
        self.stop_with_signal(libc::SIGINT, "SIGINT");
    }

    fn stop_with_signal(&mut self, sig: libc::c_int, name: &str) {
        let mut child = self.child.take().expect("broker is not running");
        if let Some(status) = child.try_wait().expect("try_wait on broker") {
            panic!(
                "broker had already exited ({status}) before {name}{}",
                self.stderr_tail()
            );
        }
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        assert_eq!(
            rc,
            0,
            "sending {name} to broker failed: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait on broker") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {STOP_TIMEOUT:?} after {name} (killed it){}",
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "broker exited with {status} after {name}; a clean shutdown must exit 0{}",
            self.stderr_tail()
        );
    }

    fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait on broker"))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything this broker wrote to stderr so far ("" when it is inherited).
    pub fn stderr_text(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The first line of this broker's stderr containing `needle`, waiting up to `timeout` for
    /// it (the broker logs through a background writer, so a line lands a little after the
    /// event that it reports).
    pub fn wait_for_stderr_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr_text().lines().find(|l| l.contains(needle)) {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of this broker's stderr, formatted for appending to a panic message.
    pub fn stderr_tail(&self) -> String {
        match &self.stderr_path {
            Some(p) => format!(
                "\n---- last lines of broker stderr ({}) ----\n{}\n---- end of broker stderr ----",
                p.display(),
                tail_of_file(p, 60)
            ),
            None => String::new(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.stderr_tail());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------------------------

/// Producer settings suitable for tests. Callers add acks / compression / ordering settings.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "shardlog-it-producer")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000");
    c
}

/// A unique group.id: librdkafka requires one for `assign()`, but no group API is used
/// (no subscribe, no commit, offsets are always explicit).
pub fn unique_group() -> String {
    format!(
        "shardlog-it-{}-{}",
        std::process::id(),
        GROUP_COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Consumer settings for assign()-only consumption.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "shardlog-it-consumer")
        .set("group.id", unique_group())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("check.crcs", "true")
        .set("fetch.wait.max.ms", "100");
    c
}

/// A consumer without group.id, used only for metadata / watermark / ListOffsets queries
/// (it never auto-creates topics).
pub fn metadata_client(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "shardlog-it-metadata")
        .create()
        .expect("create metadata consumer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "shardlog-it-admin")
        .create()
        .expect("create AdminClient")
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)))
}

/// CreateTopics through AdminClient (replication factor 1), then waits until Metadata shows
/// every partition with a leader.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for &(k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let results = block_on(
        admin.create_topics([&new_topic], &admin_opts()),
        Duration::from_secs(45),
        &format!("CreateTopics({topic})"),
    )
    .unwrap_or_else(|e| panic!("CreateTopics({topic}, {partitions} partitions) failed: {e}"));
    assert_eq!(
        results.len(),
        1,
        "CreateTopics({topic}) returned {} results, expected 1",
        results.len()
    );
    for r in results {
        match r {
            Ok(name) => assert_eq!(name, topic, "CreateTopics result names another topic"),
            Err((name, code)) => panic!(
                "CreateTopics({name}, {partitions} partitions, configs {configs:?}) failed: {code:?}"
            ),
        }
    }
    wait_for_topic(bootstrap, topic, partitions, Duration::from_secs(15));
}

/// Polls Metadata until `topic` has `partitions` partitions, all error-free with a leader.
pub fn wait_for_topic(bootstrap: &str, topic: &str, partitions: i32, timeout: Duration) {
    let client = metadata_client(bootstrap);
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) => {
                    let ok = t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions()
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0);
                    if ok {
                        return;
                    }
                    last = format!(
                        "topic error {:?}, {} partitions: {:?}",
                        t.error(),
                        t.partitions().len(),
                        t.partitions()
                            .iter()
                            .map(|p| (p.id(), p.leader(), p.error()))
                            .collect::<Vec<_>>()
                    );
                }
                None => last = "topic absent from metadata response".into(),
            },
            Err(e) => last = format!("metadata request failed: {e}"),
        }
        if Instant::now() >= deadline {
            panic!(
                "topic {topic} did not become ready with {partitions} led partitions within {timeout:?}: {last}"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (low, high) watermarks via ListOffsets.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    metadata_client(bootstrap)
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("fetch_watermarks({topic}/{partition}) failed: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------------------------

/// A message the broker acknowledged, as reported by the delivery callback.
#[derive(Clone, Debug)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Delivery-report bookkeeping shared between the producer context and the test.
#[derive(Default)]
pub struct DeliveryLog {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    /// When true, every successful delivery is appended to `acked`.
    pub record: bool,
    pub acked: Mutex<Vec<Acked>>,
}

impl DeliveryLog {
    pub fn new(record: bool) -> Arc<DeliveryLog> {
        Arc::new(DeliveryLog {
            record,
            ..Default::default()
        })
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap().clone()
    }

    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }
}

/// Producer context whose delivery callback records into a [`DeliveryLog`].
pub struct TrackingContext {
    pub log: Arc<DeliveryLog>,
}

impl ClientContext for TrackingContext {}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: Self::DeliveryOpaque) {
        match result {
            Ok(m) => {
                if self.log.record {
                    self.log.acked.lock().unwrap().push(Acked {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| k.to_vec()).unwrap_or_default(),
                        value: m.payload().map(|v| v.to_vec()).unwrap_or_default(),
                    });
                }
                self.log.ok.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, m)) => {
                self.log.failed.fetch_add(1, Ordering::SeqCst);
                let mut first = self.log.first_error.lock().unwrap();
                if first.is_none() {
                    *first = Some(format!(
                        "{e} (partition {}, key {:?})",
                        m.partition(),
                        m.key().map(show)
                    ));
                }
            }
        }
    }
}

pub fn tracking_producer(
    cfg: &ClientConfig,
    record: bool,
) -> (BaseProducer<TrackingContext>, Arc<DeliveryLog>) {
    let log = DeliveryLog::new(record);
    let producer: BaseProducer<TrackingContext> = cfg
        .create_with_context(TrackingContext { log: log.clone() })
        .expect("create BaseProducer");
    (producer, log)
}

pub fn tracking_threaded_producer(
    cfg: &ClientConfig,
    record: bool,
) -> (ThreadedProducer<TrackingContext>, Arc<DeliveryLog>) {
    let log = DeliveryLog::new(record);
    let producer: ThreadedProducer<TrackingContext> = cfg
        .create_with_context(TrackingContext { log: log.clone() })
        .expect("create ThreadedProducer");
    (producer, log)
}

/// Enqueues a record, polling (to serve delivery reports) while the local queue is full.
pub fn send_base<'a, K, P>(
    producer: &BaseProducer<TrackingContext>,
    mut record: BaseRecord<'a, K, P>,
) where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                assert!(
                    Instant::now() < deadline,
                    "producer queue stayed full for 180 s (broker not acknowledging?)"
                );
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("failed to enqueue message: {e}"),
        }
    }
}

/// Like [`send_base`] for a ThreadedProducer (its own thread serves delivery reports).
/// Returns the error instead of panicking so it can be used from background threads.
pub fn send_threaded<'a, K, P>(
    producer: &ThreadedProducer<TrackingContext>,
    mut record: BaseRecord<'a, K, P>,
) -> Result<(), String>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() >= deadline {
                    return Err("producer queue stayed full for 180 s".into());
                }
                record = r;
                thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(format!("failed to enqueue message: {e}")),
        }
    }
}

/// Flushes and panics with context on failure.
pub fn flush_or_panic<P: Producer<TrackingContext>>(producer: &P, what: &str, log: &DeliveryLog) {
    if let Err(e) = producer.flush(Duration::from_secs(180)) {
        panic!(
            "{what}: flush failed: {e}; delivered {} failed {} first error {:?}",
            log.ok(),
            log.failed(),
            log.first_error()
        );
    }
}

/// Asserts every one of `n` messages got a successful delivery report.
pub fn assert_delivered(log: &DeliveryLog, n: usize, what: &str) {
    assert_eq!(
        log.failed(),
        0,
        "{what}: {} of {n} messages failed delivery; first error: {:?}",
        log.failed(),
        log.first_error()
    );
    assert_eq!(
        log.ok(),
        n as u64,
        "{what}: expected {n} successful delivery reports, got {}",
        log.ok()
    );
}

/// Produces `n` messages `key = "k{i}"`, `value = value_of(i)` in order i = 0..n, then flushes
/// and asserts all were acknowledged. With `explicit_partitions = Some(k)` message i goes to
/// partition `i % k`; with `None` librdkafka's default (key hash) partitioner decides.
pub fn produce_keyed<F: Fn(usize) -> String>(
    cfg: &ClientConfig,
    topic: &str,
    n: usize,
    explicit_partitions: Option<i32>,
    value_of: F,
) -> Arc<DeliveryLog> {
    let (producer, log) = tracking_producer(cfg, false);
    for i in 0..n {
        let key = format!("k{i}");
        let value = value_of(i);
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        if let Some(k) = explicit_partitions {
            record = record.partition((i % k as usize) as i32);
        }
        send_base(&producer, record);
        if i % 1000 == 999 {
            producer.poll(Duration::ZERO);
        }
    }
    flush_or_panic(&producer, topic, &log);
    assert_delivered(&log, n, topic);
    log
}

// ---------------------------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------------------------

/// (partition, offset, key, value)
pub type Record = (i32, i64, Vec<u8>, Vec<u8>);

/// A consumed message with its timestamp.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp: Timestamp,
}

/// Errors that mean the broker served bad data; everything else (transport hiccups etc.)
/// is tolerated and reported only if consumption times out.
fn is_data_error(e: &KafkaError) -> bool {
    match e {
        KafkaError::MessageConsumptionFatal(_) => true,
        KafkaError::MessageConsumption(code) => matches!(
            code,
            RDKafkaErrorCode::BadMessage
                | RDKafkaErrorCode::BadCompression
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::Fatal
        ),
        _ => false,
    }
}

/// Assigns `topic` partitions at the given start offsets and reads until at least
/// `expected` messages were received AND every assigned partition has reported EOF
/// (so anything beyond `expected` is also returned). Panics on timeout or on any error
/// indicating corrupt data (the consumer verifies CRCs).
pub fn consume_messages(
    bootstrap: &str,
    topic: &str,
    starts: &[(i32, Offset)],
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .create()
        .expect("create BaseConsumer");
    let mut tpl = TopicPartitionList::new();
    for &(p, off) in starts {
        tpl.add_partition_offset(topic, p, off)
            .unwrap_or_else(|e| panic!("bad start offset {off:?} for {topic}/{p}: {e}"));
    }
    consumer
        .assign(&tpl)
        .unwrap_or_else(|e| panic!("assign({topic}) failed: {e}"));

    let mut out: Vec<Consumed> = Vec::with_capacity(expected);
    let mut at_eof: HashMap<i32, bool> = starts.iter().map(|&(p, _)| (p, false)).collect();
    let mut soft_errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        if out.len() >= expected && at_eof.values().all(|&e| e) {
            return out;
        }
        if Instant::now() >= deadline {
            let mut per_partition: HashMap<i32, usize> = HashMap::new();
            for m in &out {
                *per_partition.entry(m.partition).or_default() += 1;
            }
            let mut not_eof: Vec<i32> = at_eof
                .iter()
                .filter(|(_, e)| !**e)
                .map(|(p, _)| *p)
                .collect();
            not_eof.sort();
            panic!(
                "timed out after {timeout:?} consuming {topic}: got {} messages, expected at least {expected}; \
                 per-partition counts {per_partition:?}; partitions never at EOF: {not_eof:?}; \
                 consumer errors (first 20): {soft_errors:?}",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                at_eof.insert(m.partition(), false);
                out.push(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()).unwrap_or_default(),
                    value: m.payload().map(|v| v.to_vec()).unwrap_or_default(),
                    timestamp: m.timestamp(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_eof.insert(p, true);
            }
            Some(Err(e)) => {
                if is_data_error(&e) {
                    panic!(
                        "consumer of {topic} received invalid data: {e} (after {} good messages; last: {:?})",
                        out.len(),
                        out.last().map(|m| (m.partition, m.offset, show(&m.key)))
                    );
                }
                if soft_errors.len() < 20 {
                    soft_errors.push(e.to_string());
                }
            }
        }
    }
}

/// Reads partitions 0..partitions of `topic` from `Offset::Beginning` (see [`consume_messages`]).
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected_count: usize,
    timeout: Duration,
) -> Vec<Record> {
    let starts: Vec<(i32, Offset)> = (0..partitions).map(|p| (p, Offset::Beginning)).collect();
    consume_messages(bootstrap, topic, &starts, expected_count, timeout)
        .into_iter()
        .map(|m| (m.partition, m.offset, m.key, m.value))
        .collect()
}

/// Parses `k{i}` keys.
pub fn parse_seq(key: &[u8]) -> Option<usize> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix('k')?
        .parse()
        .ok()
}

/// Checks records produced by [`produce_keyed`] (one producer, in order i = 0..n):
/// every key k0..k{n-1} exactly once with value `value_of(i)`, offsets in each partition
/// contiguous from 0 in consumption order, and within a partition the producer sequence
/// increasing with offset. Returns the per-partition message counts.
pub fn check_sequenced<F: Fn(usize) -> String>(
    records: &[Record],
    n: usize,
    partitions: i32,
    what: &str,
    value_of: F,
) -> Vec<usize> {
    let mut seen = vec![false; n];
    let mut next_offset = vec![0i64; partitions as usize];
    let mut last_seq: Vec<Option<usize>> = vec![None; partitions as usize];
    for (idx, (p, off, key, value)) in records.iter().enumerate() {
        assert!(
            *p >= 0 && *p < partitions,
            "{what}: record #{idx} from unexpected partition {p}"
        );
        let pu = *p as usize;
        assert_eq!(
            *off, next_offset[pu],
            "{what}: partition {p}: offsets must be contiguous from 0; expected offset {} but got {off} (record #{idx}, key {:?})",
            next_offset[pu],
            show(key)
        );
        next_offset[pu] += 1;
        let i = parse_seq(key)
            .unwrap_or_else(|| panic!("{what}: {p}@{off}: malformed key {:?}", show(key)));
        assert!(
            i < n,
            "{what}: {p}@{off}: key k{i} was never produced (n = {n})"
        );
        let expected_value = value_of(i);
        assert!(
            value.as_slice() == expected_value.as_bytes(),
            "{what}: {p}@{off}: key k{i} has value {:?}, expected {:?}",
            show(value),
            expected_value
        );
        assert!(
            !seen[i],
            "{what}: duplicate message k{i} (again at {p}@{off})"
        );
        seen[i] = true;
        if let Some(prev) = last_seq[pu] {
            assert!(
                i > prev,
                "{what}: partition {p} out of produce order: k{i} at offset {off} follows k{prev}"
            );
        }
        last_seq[pu] = Some(i);
    }
    let missing_count = seen.iter().filter(|s| !**s).count();
    let missing_examples: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| !**s)
        .map(|(i, _)| i)
        .take(10)
        .collect();
    assert_eq!(
        missing_count, 0,
        "{what}: {missing_count} of {n} produced messages were not consumed, e.g. k{missing_examples:?}"
    );
    assert_eq!(
        records.len(),
        n,
        "{what}: consumed {} records for {n} produced",
        records.len()
    );
    next_offset.iter().map(|&o| o as usize).collect()
}

/// A raw Fetch of partition 0 of `topic` from `offset`, at most `max_bytes` for the partition
/// and for the whole response.
pub fn fetch_request(
    topic: &str,
    offset: i64,
    max_bytes: i32,
) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::{fetch_request, FetchRequest, TopicName};
    let mut p = fetch_request::FetchPartition::default();
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    let mut t = fetch_request::FetchTopic::default();
    t.topic = TopicName(kafka_protocol::protocol::StrBytes::from_string(
        topic.to_string(),
    ));
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.max_bytes = max_bytes;
    r.topics = vec![t];
    r
}
