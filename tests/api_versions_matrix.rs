//! Every API at every version the broker advertises answers with a response that decodes at
//! that version and carries the expected outcome. Catches fields set in a version that lacks
//! them (which the codec refuses to encode) and version-specific handling mistakes.

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use shardlog::client::{decode_records, encode_batch, Client};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

fn advertised(client: &mut Client) -> Vec<(i16, i16, i16)> {
    let resp = client
        .send(&ApiVersionsRequest::default(), 0)
        .expect("ApiVersions v0");
    assert_eq!(resp.error_code, 0);
    resp.api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect()
}

fn range(apis: &[(i16, i16, i16)], key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let &(_, min, max) = apis
        .iter()
        .find(|a| a.0 == key as i16)
        .unwrap_or_else(|| panic!("{key:?} not advertised"));
    min..=max
}

#[test]
fn every_advertised_version_answers() {
    let mut broker = Broker::start(&[], 1);
    let addr = broker.bootstrap();
    let mut c = Client::connect(&addr).expect("connect");
    let apis = advertised(&mut c);
    let topic = "matrix";
    create_topic(&addr, topic, 1, &[]);

    for v in range(&apis, ApiKey::ApiVersions) {
        let r = c
            .send(&ApiVersionsRequest::default(), v)
            .unwrap_or_else(|e| panic!("ApiVersions v{v}: {e}"));
        assert_eq!(r.error_code, 0, "ApiVersions v{v}");
        assert_eq!(
            r.api_keys.len(),
            apis.len(),
            "ApiVersions v{v} lists the same APIs"
        );
    }

    let mut topic_id = uuid::Uuid::nil();
    for v in range(&apis, ApiKey::Metadata) {
        let mut t = metadata_request::MetadataRequestTopic::default();
        t.name = Some(tn(topic));
        let mut r = MetadataRequest::default();
        r.topics = Some(vec![t]);
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("Metadata v{v}: {e}"));
        assert_eq!(resp.brokers.len(), 1, "Metadata v{v}");
        assert_eq!(resp.topics[0].error_code, 0, "Metadata v{v}");
        assert_eq!(resp.topics[0].partitions.len(), 1, "Metadata v{v}");
        if v >= 10 {
            topic_id = resp.topics[0].topic_id;
        }
    }
    assert!(!topic_id.is_nil(), "Metadata v10+ gives the topic id");

    let mut produced = 0i64;
    for v in range(&apis, ApiKey::Produce) {
        let value = Bytes::from(format!("produce-v{v}"));
        let mut p = produce_request::PartitionProduceData::default();
        p.records = Some(encode_batch(&[(None, value)], Compression::None).expect("batch"));
        let mut t = produce_request::TopicProduceData::default();
        t.name = tn(topic);
        t.partition_data = vec![p];
        let mut r = ProduceRequest::default();
        r.acks = -1;
        r.timeout_ms = 5000;
        r.topic_data = vec![t];
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("Produce v{v}: {e}"));
        let part = &resp.responses[0].partition_responses[0];
        assert_eq!(
            (part.error_code, part.base_offset),
            (0, produced),
            "Produce v{v}"
        );
        produced += 1;
        // An error answer must encode at this version too.
        let mut bad = r.clone();
        bad.topic_data[0].name = tn("no-such-topic-matrix");
        let resp = c
            .send(&bad, v)
            .unwrap_or_else(|e| panic!("Produce v{v} (error): {e}"));
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, 3,
            "Produce v{v} unknown topic"
        );
    }

    for v in range(&apis, ApiKey::Fetch) {
        let mut p = fetch_request::FetchPartition::default();
        p.partition_max_bytes = 1 << 20;
        let mut t = fetch_request::FetchTopic::default();
        // By name up to v12, by id from v13.
        if v >= 13 {
            t.topic_id = topic_id;
        } else {
            t.topic = tn(topic);
        }
        t.partitions = vec![p];
        let mut r = FetchRequest::default();
        r.max_bytes = 1 << 20;
        r.min_bytes = 1;
        r.topics = vec![t];
        let resp = c.send(&r, v).unwrap_or_else(|e| panic!("Fetch v{v}: {e}"));
        let part = &resp.responses[0].partitions[0];
        assert_eq!(
            (part.error_code, part.high_watermark),
            (0, produced),
            "Fetch v{v}"
        );
        let records =
            decode_records(part.records.clone().unwrap_or_default()).expect("records decode");
        assert_eq!(
            records.len() as i64,
            produced,
            "Fetch v{v} returns every record"
        );
        // Out of range, an error answer with watermarks.
        let mut r2 = r.clone();
        r2.topics[0].partitions[0].fetch_offset = produced + 100;
        let resp = c
            .send(&r2, v)
            .unwrap_or_else(|e| panic!("Fetch v{v} (error): {e}"));
        assert_eq!(
            resp.responses[0].partitions[0].error_code, 1,
            "Fetch v{v} OFFSET_OUT_OF_RANGE"
        );
        if v >= 13 {
            assert_eq!(
                resp.responses[0].topic_id, topic_id,
                "Fetch v{v} echoes the id"
            );
            let mut r3 = r.clone();
            r3.topics[0].topic_id = uuid::Uuid::from_bytes([0x77; 16]);
            let resp = c
                .send(&r3, v)
                .unwrap_or_else(|e| panic!("Fetch v{v} (unknown id): {e}"));
            assert_eq!(
                resp.responses[0].partitions[0].error_code, 100,
                "Fetch v{v} UNKNOWN_TOPIC_ID"
            );
        }
    }

    for v in range(&apis, ApiKey::ListOffsets) {
        let mut cases = vec![(-2i64, 0i64), (-1, produced), (0, 0)];
        if v >= 9 {
            // Earliest local is the log start; latest tiered has no answer without tiering.
            cases.extend([(-4, 0), (-5, -1)]);
        }
        for (ts, expected) in cases {
            let mut p = list_offsets_request::ListOffsetsPartition::default();
            p.timestamp = ts;
            let mut t = list_offsets_request::ListOffsetsTopic::default();
            t.name = tn(topic);
            t.partitions = vec![p];
            let mut r = ListOffsetsRequest::default();
            r.replica_id = BrokerId(-1);
            r.topics = vec![t];
            let resp = c
                .send(&r, v)
                .unwrap_or_else(|e| panic!("ListOffsets v{v}: {e}"));
            let part = &resp.topics[0].partitions[0];
            assert_eq!(
                (part.error_code, part.offset),
                (0, expected),
                "ListOffsets v{v} ts {ts}"
            );
        }
    }

    for v in range(&apis, ApiKey::OffsetForLeaderEpoch) {
        let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
        p.leader_epoch = 0;
        p.current_leader_epoch = -1;
        let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
        t.topic = tn(topic);
        t.partitions = vec![p];
        let mut r = OffsetForLeaderEpochRequest::default();
        r.replica_id = BrokerId(-1);
        r.topics = vec![t];
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("OffsetForLeaderEpoch v{v}: {e}"));
        let part = &resp.topics[0].partitions[0];
        assert_eq!(
            (part.error_code, part.leader_epoch, part.end_offset),
            (0, 0, produced),
            "OffsetForLeaderEpoch v{v}"
        );
    }

    for v in range(&apis, ApiKey::DescribeConfigs) {
        let mut topic_res = describe_configs_request::DescribeConfigsResource::default();
        topic_res.resource_type = 2;
        topic_res.resource_name = s(topic);
        topic_res.configuration_keys = None;
        let mut broker_res = describe_configs_request::DescribeConfigsResource::default();
        broker_res.resource_type = 4;
        broker_res.resource_name = s("0");
        broker_res.configuration_keys = None;
        let mut r = DescribeConfigsRequest::default();
        r.resources = vec![topic_res, broker_res];
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("DescribeConfigs v{v}: {e}"));
        for res in &resp.results {
            assert_eq!(
                res.error_code, 0,
                "DescribeConfigs v{v} type {}",
                res.resource_type
            );
            assert!(
                !res.configs.is_empty(),
                "DescribeConfigs v{v} type {}",
                res.resource_type
            );
        }
    }

    for v in range(&apis, ApiKey::DescribeCluster) {
        let resp = c
            .send(&DescribeClusterRequest::default(), v)
            .unwrap_or_else(|e| panic!("DescribeCluster v{v}: {e}"));
        assert_eq!(
            (resp.error_code, resp.brokers.len()),
            (0, 1),
            "DescribeCluster v{v}"
        );
    }

    for v in range(&apis, ApiKey::FindCoordinator) {
        let mut r = FindCoordinatorRequest::default();
        if v >= 4 {
            r.coordinator_keys = vec![s("group-a"), s("group-b")];
        } else {
            r.key = s("group-a");
        }
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("FindCoordinator v{v}: {e}"));
        if v >= 4 {
            assert_eq!(resp.coordinators.len(), 2, "FindCoordinator v{v}");
            for co in &resp.coordinators {
                assert_eq!(
                    (co.error_code, co.node_id.0, co.port),
                    (0, 0, broker.port() as i32),
                    "FindCoordinator v{v}"
                );
            }
        } else {
            assert_eq!(
                (resp.error_code, resp.node_id.0, resp.port),
                (0, 0, broker.port() as i32),
                "FindCoordinator v{v}"
            );
        }
    }

    for v in range(&apis, ApiKey::CreateTopics) {
        let name = format!("matrix-created-v{v}");
        let mut t = create_topics_request::CreatableTopic::default();
        t.name = tn(&name);
        t.num_partitions = 2;
        t.replication_factor = 1;
        let mut r = CreateTopicsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 5000;
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("CreateTopics v{v}: {e}"));
        assert_eq!(resp.topics[0].error_code, 0, "CreateTopics v{v}");
        let again = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("CreateTopics v{v} (again): {e}"));
        assert_eq!(
            again.topics[0].error_code, 36,
            "CreateTopics v{v} TOPIC_ALREADY_EXISTS"
        );
    }

    for v in range(&apis, ApiKey::CreatePartitions) {
        let mut t = create_partitions_request::CreatePartitionsTopic::default();
        t.name = tn(&format!(
            "matrix-created-v{}",
            range(&apis, ApiKey::CreateTopics).start()
        ));
        t.count = 3 + v as i32;
        let mut r = CreatePartitionsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 5000;
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("CreatePartitions v{v}: {e}"));
        assert_eq!(resp.results[0].error_code, 0, "CreatePartitions v{v}");
    }

    for v in range(&apis, ApiKey::DeleteRecords) {
        let mut p = delete_records_request::DeleteRecordsPartition::default();
        p.offset = 1;
        let mut t = delete_records_request::DeleteRecordsTopic::default();
        t.name = tn(topic);
        t.partitions = vec![p];
        let mut r = DeleteRecordsRequest::default();
        r.topics = vec![t];
        r.timeout_ms = 5000;
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("DeleteRecords v{v}: {e}"));
        let part = &resp.topics[0].partitions[0];
        assert_eq!(
            (part.error_code, part.low_watermark),
            (0, 1),
            "DeleteRecords v{v}"
        );
    }

    for v in range(&apis, ApiKey::DeleteTopics) {
        let name = format!(
            "matrix-created-v{}",
            range(&apis, ApiKey::CreateTopics).start() + v - 1
        );
        let mut r = DeleteTopicsRequest::default();
        r.timeout_ms = 5000;
        if v >= 6 {
            let mut t = delete_topics_request::DeleteTopicState::default();
            t.name = Some(tn(&name));
            r.topics = vec![t];
        } else {
            r.topic_names = vec![tn(&name)];
        }
        let resp = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("DeleteTopics v{v}: {e}"));
        assert_eq!(
            resp.responses[0].error_code, 0,
            "DeleteTopics v{v} ({name})"
        );
        let again = c
            .send(&r, v)
            .unwrap_or_else(|e| panic!("DeleteTopics v{v} (again): {e}"));
        assert_eq!(
            again.responses[0].error_code, 3,
            "DeleteTopics v{v} unknown topic"
        );
    }

    // A too-new ApiVersions request gets a v0-format UNSUPPORTED_VERSION answer, listing the
    // supported versions so the client can retry lower.
    let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
    let mut req = Vec::new();
    req.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    req.extend_from_slice(&99i16.to_be_bytes()); // a version from the future
    req.extend_from_slice(&4242i32.to_be_bytes());
    req.extend_from_slice(&[0xff, 0xff, 0x00]); // null client id, no tagged fields
    let mut framed = (req.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    std::io::Write::write_all(&mut raw, &framed).expect("send");
    let mut len = [0u8; 4];
    std::io::Read::read_exact(&mut raw, &mut len).expect("answer length");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    std::io::Read::read_exact(&mut raw, &mut body).expect("answer body");
    let i16_at = |i: usize| i16::from_be_bytes([body[i], body[i + 1]]);
    assert_eq!(
        i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        4242,
        "correlation id"
    );
    assert_eq!(i16_at(4), 35, "UNSUPPORTED_VERSION");
    let count = i32::from_be_bytes([body[6], body[7], body[8], body[9]]) as usize;
    assert_eq!(count, apis.len(), "v0 answer lists every API");
    assert_eq!(
        body.len(),
        10 + count * 6,
        "v0 layout: no throttle time, no tagged fields"
    );
    let listed: Vec<(i16, i16, i16)> = (0..count)
        .map(|k| (i16_at(10 + 6 * k), i16_at(12 + 6 * k), i16_at(14 + 6 * k)))
        .collect();
    assert_eq!(listed, apis);
    broker.terminate();
}

/// DescribeTopicPartitions (KIP-966) pages through topics sorted by name, a partition limit at
/// a time, and goes on from the cursor it returned.
#[test]
fn describe_topic_partitions_pages_with_a_cursor() {
    let mut broker = Broker::start(&[], 1);
    let addr = broker.bootstrap();
    let mut c = Client::connect(&addr).expect("connect");
    for (name, partitions) in [("dtp-a", 3), ("dtp-b", 2), ("dtp-c", 1)] {
        create_topic(&addr, name, partitions, &[]);
    }
    let request = |names: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
        let mut r = DescribeTopicPartitionsRequest::default();
        r.topics = names
            .iter()
            .map(|n| describe_topic_partitions_request::TopicRequest::default().with_name(tn(n)))
            .collect();
        r.response_partition_limit = limit;
        r.cursor = cursor.map(|(t, p)| {
            describe_topic_partitions_request::Cursor::default()
                .with_topic_name(tn(t))
                .with_partition_index(p)
        });
        r
    };
    let listed = |r: &DescribeTopicPartitionsResponse| -> Vec<(String, i16, Vec<i32>)> {
        r.topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map_or(String::new(), |n| n.0.to_string()),
                    t.error_code,
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect()
    };
    let names = ["dtp-c", "nope", "dtp-a", "dtp-b"];
    let first = c.send(&request(&names, 4, None), 0).expect("page 1");
    assert_eq!(
        listed(&first),
        vec![
            ("dtp-a".to_string(), 0, vec![0, 1, 2]),
            ("dtp-b".to_string(), 0, vec![0]),
        ]
    );
    let cursor = first.next_cursor.expect("a cursor");
    assert_eq!(
        (cursor.topic_name.0.as_str(), cursor.partition_index),
        ("dtp-b", 1)
    );
    let p = &first.topics[0].partitions[0];
    assert_eq!((p.leader_id.0, p.leader_epoch), (0, 0));
    assert!(!first.topics[0].topic_id.is_nil());
    let second = c
        .send(&request(&names, 4, Some(("dtp-b", 1))), 0)
        .expect("page 2");
    assert_eq!(
        listed(&second),
        vec![
            ("dtp-b".to_string(), 0, vec![1]),
            ("dtp-c".to_string(), 0, vec![0]),
            ("nope".to_string(), 3, vec![]),
        ]
    );
    assert!(second.next_cursor.is_none());
    // No topics named: every topic; a cursor outside the named topics is refused.
    let all = c.send(&request(&[], 0, None), 0).expect("all");
    assert_eq!(all.topics.len(), 3);
    let bad = c
        .send(&request(&["dtp-a"], 10, Some(("dtp-z", 0))), 0)
        .expect("bad cursor");
    assert_eq!(bad.topics[0].error_code, 42, "INVALID_REQUEST");
    broker.terminate();
}
