//! Idempotent producers against the real broker:
//! * librdkafka (acks=all, 5 in flight) sends 1,000,000 records to 8 partitions while the
//!   broker is SIGKILLed and restarted 3 times: every record is acknowledged and read back
//!   exactly once, each partition in send order, with no fatal client error;
//! * a raw client: a resent batch (one of the last 5, byte for byte) is answered NONE with its
//!   original offset and not written again — also after a SIGKILL and after a clean restart;
//!   a sequence gap gets OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch INVALID_PRODUCER_EPOCH;
//!   an unknown producer may start at any sequence.

mod common;

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use shardlog::client::Client;
use shardlog::record::builder::{BatchBuilder, Codec, ProducerFields};

const NONE: i16 = 0;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

#[test]
fn librdkafka_idempotent_producer_survives_three_broker_kills() {
    const PARTITIONS: i32 = 8;
    let n = env_usize("SHARDLOG_TEST_IDEMPOTENT_MSGS", 1_000_000);
    let topic = "idempotent-kills";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 2);
    create_topic(&broker.bootstrap(), topic, PARTITIONS, &[]);

    let mut cfg: ClientConfig = producer_config(&broker.bootstrap());
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("batch.size", "65536")
        .set("message.timeout.ms", "300000")
        .set("retry.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("queue.buffering.max.messages", "200000");
    let log = DeliveryLog::new(false);
    let producer: ThreadedProducer<TrackingContext> = cfg
        .create_with_context(TrackingContext { log: log.clone() })
        .expect("create idempotent producer");
    let producer = std::sync::Arc::new(producer);
    let sender = {
        let producer = producer.clone();
        thread::spawn(move || {
            for i in 0..n {
                let key = format!("k{i}");
                let value = format!("v{i}");
                let record = BaseRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .partition((i % PARTITIONS as usize) as i32);
                send_threaded(&producer, record).expect("enqueue");
            }
        })
    };
    // Three crashes spread over the run, each once a quarter more is acknowledged.
    for k in 1..=3u64 {
        let target = n as u64 * k / 4;
        let deadline = Instant::now() + Duration::from_secs(300);
        while log.ok() < target {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} acknowledged before crash {k}; first error {:?}",
                log.ok(),
                log.first_error()
            );
            thread::sleep(Duration::from_millis(5));
        }
        broker.crash_and_restart(&[], 2);
    }
    sender.join().expect("sender thread");
    flush_or_panic(&*producer, topic, &log);
    assert_eq!(
        producer.client().fatal_error(),
        None,
        "the idempotent producer hit a fatal error"
    );
    assert_delivered(&log, n, topic);
    let records = consume_all(
        &broker.bootstrap(),
        topic,
        PARTITIONS,
        n,
        Duration::from_secs(300),
    );
    check_sequenced(&records, n, PARTITIONS, topic, |i| format!("v{i}"));
    assert!(log.failed.load(Ordering::SeqCst) == 0);
}

/// A raw producer: its own Client, producer id and sequences.
struct RawProducer {
    client: Client,
    producer_id: i64,
    epoch: i16,
}

impl RawProducer {
    fn new(bootstrap: &str) -> RawProducer {
        let mut client = Client::connect(bootstrap).expect("connect");
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = -1;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let resp = client.send(&req, 4).expect("InitProducerId");
        assert_eq!(resp.error_code, NONE, "InitProducerId");
        assert!(resp.producer_id.0 >= 0);
        assert_eq!(resp.producer_epoch, 0);
        RawProducer {
            client,
            producer_id: resp.producer_id.0,
            epoch: resp.producer_epoch,
        }
    }

    /// A batch of `count` records from sequence `seq` under `epoch`.
    fn batch(&self, epoch: i16, seq: i32, count: i32) -> Bytes {
        let now = now_ms();
        let mut b = BatchBuilder::new(now).producer(ProducerFields {
            producer_id: self.producer_id,
            epoch,
            base_sequence: seq,
            transactional: false,
        });
        for i in 0..count {
            b.push(now, None, format!("s{}", seq + i).as_bytes());
        }
        b.finish(Codec::None).expect("batch")
    }

    /// Produces one batch with acks=-1: (error code, base offset).
    fn send(&mut self, topic: &str, batch: Bytes) -> (i16, i64) {
        let mut p = PartitionProduceData::default();
        p.index = 0;
        p.records = Some(batch);
        let mut t = TopicProduceData::default();
        t.name = TopicName(kafka_protocol::protocol::StrBytes::from_string(
            topic.to_string(),
        ));
        t.partition_data = vec![p];
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 30_000;
        req.topic_data = vec![t];
        let resp = self.client.send(&req, 9).expect("Produce");
        let part = &resp.responses[0].partition_responses[0];
        (part.error_code, part.base_offset)
    }

    fn reconnect(&mut self, bootstrap: &str) {
        self.client = Client::connect(bootstrap).expect("reconnect");
    }
}

fn high_watermark(bootstrap: &str, topic: &str) -> i64 {
    watermarks(bootstrap, topic, 0).1
}

#[test]
fn duplicates_gaps_and_stale_epochs_from_a_raw_producer() {
    let topic = "idempotent-raw";
    let root = test_tempdir();
    let mut broker = Broker::start_in(root.path(), &[], 2);
    create_topic(&broker.bootstrap(), topic, 1, &[]);
    let mut p = RawProducer::new(&broker.bootstrap());
    let epoch = p.epoch;

    // Seven batches of 3: offsets 0, 3, ..., 18.
    let batches: Vec<Bytes> = (0..7).map(|i| p.batch(epoch, i * 3, 3)).collect();
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(p.send(topic, b.clone()), (NONE, i as i64 * 3));
    }
    assert_eq!(high_watermark(&broker.bootstrap(), topic), 21);

    // Each of the last 5, resent byte for byte: NONE with its original offset.
    for (i, batch) in batches.iter().enumerate().skip(2) {
        assert_eq!(
            p.send(topic, batch.clone()),
            (NONE, i as i64 * 3),
            "resending batch {i}"
        );
    }
    // Older than the window: out of order (never written twice either).
    assert_eq!(
        p.send(topic, batches[1].clone()).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    // A gap.
    assert_eq!(
        p.send(topic, p.batch(epoch, 22, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        high_watermark(&broker.bootstrap(), topic),
        21,
        "nothing extra written"
    );

    // After a SIGKILL the window is rebuilt from the log: still duplicates.
    broker.crash_and_restart(&[], 2);
    p.reconnect(&broker.bootstrap());
    assert_eq!(p.send(topic, batches[6].clone()), (NONE, 18));
    assert_eq!(p.send(topic, batches[3].clone()), (NONE, 9));
    assert_eq!(
        p.send(topic, p.batch(epoch, 22, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(p.send(topic, p.batch(epoch, 21, 2)), (NONE, 21));

    // After a clean restart (from the snapshot written at shutdown) too.
    broker.terminate();
    let port = broker.port();
    let mut broker = Broker::start_on(root.path(), port, &[], 2);
    p.reconnect(&broker.bootstrap());
    assert_eq!(p.send(topic, batches[6].clone()), (NONE, 18));
    assert_eq!(
        p.send(topic, p.batch(epoch, 21, 2)),
        (NONE, 21),
        "the last batch too"
    );
    assert_eq!(high_watermark(&broker.bootstrap(), topic), 23);

    // A new epoch restarts at 0; then the old epoch is refused.
    assert_eq!(
        p.send(topic, p.batch(epoch + 1, 5, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(p.send(topic, p.batch(epoch + 1, 0, 1)), (NONE, 23));
    assert_eq!(
        p.send(topic, p.batch(epoch, 23, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        high_watermark(&broker.bootstrap(), topic),
        24,
        "nothing extra written"
    );

    // A producer id the partition has no state for may start at any sequence.
    let mut q = RawProducer::new(&broker.bootstrap());
    assert_ne!(
        q.producer_id, p.producer_id,
        "producer ids are never handed out twice"
    );
    let (code, base) = q.send(topic, q.batch(0, 1_000, 2));
    assert_eq!((code, base), (NONE, 24));
    broker.crash_and_restart(&[], 2);
    let r = RawProducer::new(&broker.bootstrap());
    assert!(
        r.producer_id > q.producer_id,
        "after a crash, ids continue past every block handed out"
    );
}
