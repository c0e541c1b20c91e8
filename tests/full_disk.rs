//! A full disk: producers are answered KAFKA_STORAGE_ERROR, reads of what was written go on,
//! and the broker keeps serving. Runs the broker on a 6 MiB tmpfs, which needs permission to
//! mount (root in the CI container); where mounting is refused the test says so and passes.

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use shardlog::client::{decode_records, encode_batch, Client};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(dir: &Path) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| Mount(dir.to_path_buf()))
}

fn produce(c: &mut Client, topic: &str, values: &[(Option<Bytes>, Bytes)]) -> (i16, i64) {
    let mut p = produce_request::PartitionProduceData::default();
    p.records = Some(encode_batch(values, Compression::None).expect("batch"));
    let mut t = produce_request::TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = -1;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    let resp = c.send(&r, 9).expect("produce is answered");
    let part = &resp.responses[0].partition_responses[0];
    (part.error_code, part.base_offset)
}

fn fetch_count(c: &mut Client, topic: &str, from: i64) -> usize {
    let resp = c
        .send(&fetch_request(topic, from, 64 << 20), 12)
        .expect("fetch is answered");
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0, "fetch error");
    decode_records(part.records.clone().unwrap_or_default())
        .expect("decodes")
        .len()
}

#[test]
fn full_disk_refuses_writes_and_keeps_serving_reads() {
    let root = tempfile::tempdir().expect("tempdir");
    let Some(_mount) = mount_small_tmpfs(root.path()) else {
        eprintln!("full_disk: cannot mount a tmpfs here (not root?); nothing to check");
        return;
    };
    let broker = Broker::start_in(root.path(), &[], 1);
    let addr = broker.bootstrap();
    create_topic(&addr, "fill", 1, &[]);
    let mut c = Client::connect(&addr).expect("connect");
    let value = Bytes::from(vec![b'v'; 1000]);
    let batch: Vec<(Option<Bytes>, Bytes)> = (0..100).map(|_| (None, value.clone())).collect();
    let mut acknowledged = 0usize;
    let mut refused = None;
    for _ in 0..200 {
        match produce(&mut c, "fill", &batch) {
            (0, _) => acknowledged += batch.len(),
            (code, _) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some(56),
        "a full disk answers KAFKA_STORAGE_ERROR (after {acknowledged} records)"
    );
    assert!(acknowledged > 0, "some writes fit before the disk filled");
    // Reads go on: every acknowledged record is served.
    let mut read = 0;
    while read < acknowledged {
        let n = fetch_count(&mut c, "fill", read as i64);
        assert!(n > 0, "reads stalled at {read} of {acknowledged}");
        read += n;
    }
    assert_eq!(read, acknowledged);
    // Still refusing, still answering.
    assert_eq!(produce(&mut c, "fill", &batch).0, 56);
    drop(broker);
}
