"""shardlog against the pure-Python kafka-python client (3.x).

No consumer groups: consumers use manual assignment (group_id=None).
"""

import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as Errors
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.protocol.admin import DescribeConfigsRequest
from kafka.protocol.consumer import OffsetForLeaderEpochRequest
from kafka.protocol.metadata import MetadataRequest

from conftest import unique_topic, wait_until

CLIENT_TIMEOUT_MS = 15000
POLL_DEADLINE_S = 30.0

# API keys the broker promises (ApiVersions must advertise all of them).
REQUIRED_API_KEYS = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    18: "ApiVersions",
    19: "CreateTopics",
    20: "DeleteTopics",
    21: "DeleteRecords",
    23: "OffsetForLeaderEpoch",
    32: "DescribeConfigs",
    37: "CreatePartitions",
    60: "DescribeCluster",
}


class Clients:
    """Creates kafka-python clients bound to the current broker address and
    closes them all at the end of the test (before the broker stops)."""

    def __init__(self, broker):
        self.broker = broker
        self._open = []

    def _track(self, c):
        self._open.append(c)
        return c

    def admin(self, **kw):
        cfg = dict(
            bootstrap_servers=self.broker.bootstrap,
            client_id="shardlog-py-admin",
            request_timeout_ms=CLIENT_TIMEOUT_MS,
        )
        cfg.update(kw)
        return self._track(KafkaAdminClient(**cfg))

    def producer(self, **kw):
        cfg = dict(
            bootstrap_servers=self.broker.bootstrap,
            client_id="shardlog-py-producer",
            acks="all",
            enable_idempotence=False,
            retries=3,
            linger_ms=5,
            request_timeout_ms=CLIENT_TIMEOUT_MS,
            delivery_timeout_ms=30000,
            max_block_ms=CLIENT_TIMEOUT_MS,
        )
        cfg.update(kw)
        return self._track(KafkaProducer(**cfg))

    def consumer(self, **kw):
        cfg = dict(
            bootstrap_servers=self.broker.bootstrap,
            client_id="shardlog-py-consumer",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=CLIENT_TIMEOUT_MS,
            fetch_max_wait_ms=200,
        )
        cfg.update(kw)
        return self._track(KafkaConsumer(**cfg))

    def close_all(self):
        for c in reversed(self._open):
            try:
                if isinstance(c, KafkaProducer):
                    c.close(timeout=5)
                else:
                    c.close()
            except Exception:
                pass
        self._open = []


@pytest.fixture
def kp(broker):
    c = Clients(broker)
    yield c
    c.close_all()


# ------------------------------------------------------------------ helpers
def send_raw(admin, request, node_id=None):
    """Sends one protocol request through the admin client's connections (the version is
    the highest both sides support) and returns the decoded response."""

    async def send():
        return await admin._manager.send(request, node_id=node_id)

    return admin._manager.run(send)


def create_topic(admin, name, partitions, configs=None):
    resp = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})],
        timeout_ms=CLIENT_TIMEOUT_MS,
    )
    # kafka-python raises on a non-zero error code; double check anyway.
    for t in resp["topics"]:
        assert t["error_code"] == 0, t
    wait_for_partitions(admin, name, partitions)


def topic_partition_count(admin, name):
    for t in admin.describe_topics([name]):
        if t["name"] == name and t["error_code"] == 0:
            return len(t["partitions"])
    return None


def wait_for_partitions(admin, name, expected, timeout=15.0):
    wait_until(
        lambda: topic_partition_count(admin, name) == expected,
        timeout=timeout,
        message="topic %s to have %d partitions in metadata" % (name, expected),
    )


def produce_and_record(producer, topic, messages, timeout=60.0):
    """messages: list of dicts with key/value/headers/partition/timestamp_ms.
    Returns [(msg, RecordMetadata)] in send order."""
    futures = [
        producer.send(
            topic,
            key=m.get("key"),
            value=m.get("value"),
            headers=m.get("headers"),
            partition=m.get("partition"),
            timestamp_ms=m.get("timestamp_ms"),
        )
        for m in messages
    ]
    producer.flush(timeout=timeout)
    out = []
    for m, f in zip(messages, futures):
        out.append((m, f.get(timeout=1)))
    return out


def consume_exactly(consumer, tps, expected, deadline_s=POLL_DEADLINE_S, from_beginning=True):
    """Assign `tps`, read until `expected` records arrived (then a short
    extra poll to catch duplicates).  Returns {partition: [records]}."""
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    got = {tp.partition: [] for tp in tps}
    n = 0
    deadline = time.monotonic() + deadline_s
    while n < expected and time.monotonic() < deadline:
        for tp, recs in consumer.poll(timeout_ms=500, max_records=2000).items():
            got[tp.partition].extend(recs)
            n += len(recs)
    assert n >= expected, "consumed %d of %d records before the deadline (per partition: %s)" % (
        n,
        expected,
        {p: len(r) for p, r in got.items()},
    )
    for tp, recs in consumer.poll(timeout_ms=500).items():
        got[tp.partition].extend(recs)
        n += len(recs)
    assert n == expected, "consumed %d records, expected exactly %d" % (n, expected)
    return got


def check_round_trip(sent, consumed):
    """sent: [(msg, RecordMetadata)]; consumed: {partition: [ConsumerRecord]}.
    Per partition, the consumed records must be exactly the produced ones, in
    send order, with dense offsets from 0 that match the produce acks."""
    by_partition = {}
    for m, md in sent:
        by_partition.setdefault(md.partition, []).append((m, md))
    assert set(by_partition) <= set(consumed), (set(by_partition), set(consumed))
    for p, recs in consumed.items():
        expected = by_partition.get(p, [])
        assert len(recs) == len(expected), "partition %d: consumed %d, produced %d" % (p, len(recs), len(expected))
        ack_offsets = [md.offset for _, md in expected]
        assert ack_offsets == list(range(len(expected))), "partition %d: produce acks not dense/in send order: %s..." % (
            p,
            ack_offsets[:20],
        )
        assert [r.offset for r in recs] == ack_offsets, "partition %d: consumed offsets differ from acks" % p
        for r, (m, md) in zip(recs, expected):
            assert r.key == m.get("key"), (p, r.offset, r.key, m.get("key"))
            assert r.value == m.get("value"), (p, r.offset)
            if m.get("headers") is not None:
                assert list(r.headers) == list(m["headers"]), (p, r.offset, r.headers)
            if m.get("timestamp_ms") is not None:
                assert r.timestamp == m["timestamp_ms"], (p, r.offset, r.timestamp)


def describe_topic_configs(admin, topic, keys=None):
    """DescribeConfigs for one topic, sent raw so that its error code shows (the admin
    client's describe_configs drops it): (result, {name: config entry})."""
    Resource = DescribeConfigsRequest.DescribeConfigsResource
    request = DescribeConfigsRequest(
        resources=[Resource(resource_type=int(ConfigResourceType.TOPIC), resource_name=topic, configuration_keys=keys)],
        include_synonyms=False,
    )
    results = send_raw(admin, request).to_dict()["results"]
    assert len(results) == 1, results
    r = results[0]
    return r, {e["name"]: e for e in r["configs"]}


# -------------------------------------------------------------------- tests
def test_api_versions_advertise_required_apis(kp):
    admin = kp.admin()
    versions = {int(k): v for k, v in admin.api_versions().items()}
    assert versions, "no ApiVersions response"
    missing = {k: n for k, n in REQUIRED_API_KEYS.items() if k not in versions}
    assert not missing, "ApiVersions lacks %s" % missing
    for k, (lo, hi) in versions.items():
        assert 0 <= lo <= hi, (k, lo, hi)
    # kafka-python infers the broker version from ApiVersions; it must be new
    # enough for v2 record batches, headers and zstd.
    broker_version = admin._manager.broker_version_data.broker_version
    assert broker_version >= (2, 1), broker_version


def test_cluster_metadata(kp, broker):
    admin = kp.admin()
    md = admin.describe_cluster()
    brokers = md["brokers"]
    assert len(brokers) == 1, md
    b = brokers[0]
    assert b["host"] == "127.0.0.1" and b["port"] == broker.port, b
    assert md["controller_id"] == b["broker_id"], md


def test_metadata_authorized_operations(kp):
    """KafkaAdminClient always sends Metadata v8 with include_*_authorized_operations
    and decodes the answer as ACL operations.  With no authorizer Kafka answers
    with every operation the resource supports; the INT32_MIN sentinel (bit 31)
    is only for when the client did not ask, and kafka-python fails on it."""
    admin = kp.admin()
    topic = unique_topic("ops")
    admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=CLIENT_TIMEOUT_MS)

    def metadata(include):
        req = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=include,
            include_topic_authorized_operations=include,
            version=8,
        )
        resp = send_raw(admin, req).to_dict()
        topics = [t for t in resp["topics"] if t["name"] == topic]
        assert len(topics) == 1 and topics[0]["error_code"] == 0, resp
        # BitFields decode to the set of bit numbers (ACL operation codes); the INT32_MIN
        # sentinel (bit 31 alone) to None.
        def ops(v):
            return {31} if v is None else set(v)

        return ops(resp["authorized_operations"]), ops(topics[0]["authorized_operations"])

    cluster_ops, topic_ops = metadata(True)
    # 3 READ, 4 WRITE, 8 DESCRIBE, 10 DESCRIBE_CONFIGS; cluster: 8 DESCRIBE
    assert 31 not in topic_ops and {3, 4, 8, 10} <= topic_ops, (
        "topic authorized_operations when requested: bits %s" % sorted(topic_ops)
    )
    assert 31 not in cluster_ops and 8 in cluster_ops, (
        "cluster authorized_operations when requested: bits %s" % sorted(cluster_ops)
    )
    cluster_ops, topic_ops = metadata(False)
    assert topic_ops == {31} and cluster_ops == {31}, (cluster_ops, topic_ops)


def test_create_topic_with_config_and_describe(kp):
    admin = kp.admin()
    topic = unique_topic("cfg")
    create_topic(admin, topic, 4, {"retention.ms": "3600000", "cleanup.policy": "delete"})
    assert topic in admin.list_topics()

    desc = [t for t in admin.describe_topics([topic]) if t["name"] == topic]
    assert len(desc) == 1
    parts = sorted(desc[0]["partitions"], key=lambda p: p["partition_index"])
    assert [p["partition_index"] for p in parts] == [0, 1, 2, 3]
    for p in parts:
        assert p["error_code"] == 0, p
        assert p["leader_id"] >= 0, p

    r, entries = describe_topic_configs(admin, topic)
    assert r["error_code"] == 0, r
    assert "retention.ms" in entries, sorted(entries)
    assert entries["retention.ms"]["value"] == "3600000"
    assert entries["cleanup.policy"]["value"] == "delete"

    # Asking for one key returns just that key.
    r, entries = describe_topic_configs(admin, topic, keys=["retention.ms"])
    assert r["error_code"] == 0, r
    assert set(entries) == {"retention.ms"}, sorted(entries)
    assert entries["retention.ms"]["value"] == "3600000"


def test_describe_configs_unknown_topic(kp):
    admin = kp.admin()
    r, _ = describe_topic_configs(admin, unique_topic("nope"))
    assert Errors.for_code(r["error_code"]) is Errors.UnknownTopicOrPartitionError, r


def test_create_topic_validate_only_does_not_create(kp):
    admin = kp.admin()
    topic = unique_topic("validate")
    resp = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, topic_configs={"retention.ms": "60000"})],
        timeout_ms=CLIENT_TIMEOUT_MS,
        validate_only=True,
    )
    assert all(t["error_code"] == 0 for t in resp["topics"]), resp
    time.sleep(0.5)
    assert topic not in admin.list_topics()
    # ...and it can still be created for real afterwards.
    create_topic(admin, topic, 3)
    assert topic in admin.list_topics()


def test_create_existing_topic_fails(kp):
    admin = kp.admin()
    topic = unique_topic("dup")
    create_topic(admin, topic, 1)
    with pytest.raises(Errors.TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=CLIENT_TIMEOUT_MS)


@pytest.mark.parametrize("name", ["bad/name", "bad name", "..", "x" * 250])
def test_invalid_topic_name_refused(kp, name):
    admin = kp.admin()
    with pytest.raises(Errors.InvalidTopicError):
        admin.create_topics([NewTopic(name, 1, 1)], timeout_ms=CLIENT_TIMEOUT_MS)
    assert name not in admin.list_topics()


def test_invalid_partition_count_refused(kp):
    admin = kp.admin()
    with pytest.raises(Errors.InvalidPartitionsError):
        admin.create_topics([NewTopic(unique_topic("zero"), 0, 1)], timeout_ms=CLIENT_TIMEOUT_MS)


def test_create_partitions(kp):
    admin = kp.admin()
    topic = unique_topic("grow")
    create_topic(admin, topic, 4)
    admin.create_partitions({topic: NewPartitions(6)}, timeout_ms=CLIENT_TIMEOUT_MS)
    wait_for_partitions(admin, topic, 6)
    # Shrinking (or "growing" to the same count) is refused.
    with pytest.raises(Errors.InvalidPartitionsError):
        admin.create_partitions({topic: NewPartitions(3)}, timeout_ms=CLIENT_TIMEOUT_MS)
    with pytest.raises(Errors.InvalidPartitionsError):
        admin.create_partitions({topic: NewPartitions(6)}, timeout_ms=CLIENT_TIMEOUT_MS)
    with pytest.raises(Errors.UnknownTopicOrPartitionError):
        admin.create_partitions({unique_topic("nope"): NewPartitions(6)}, timeout_ms=CLIENT_TIMEOUT_MS)
    assert topic_partition_count(admin, topic) == 6


def test_produce_consume_5000_keyed_after_create_partitions(kp):
    """4 partitions + retention override, grown to 6, then 5,000 keyed
    messages with headers (acks=all) read back in order per partition."""
    admin = kp.admin()
    topic = unique_topic("keyed")
    create_topic(admin, topic, 4, {"retention.ms": "3600000"})
    admin.create_partitions({topic: NewPartitions(6)}, timeout_ms=CLIENT_TIMEOUT_MS)
    wait_for_partitions(admin, topic, 6)

    producer = kp.producer()
    wait_until(
        lambda: len(producer.partitions_for(topic) or ()) == 6,
        message="producer to see 6 partitions",
    )
    n = 5000
    messages = [
        {
            "key": ("key-%d" % (i % 1000)).encode(),
            "value": ("value-%05d-" % i).encode() + b"x" * (i % 200),
            "headers": [("seq", str(i).encode()), ("src", b"kafka-python")],
        }
        for i in range(n)
    ]
    sent = produce_and_record(producer, topic, messages)
    used = {md.partition for _, md in sent}
    assert len(used) == 6, "keys should spread over all 6 partitions, got %s" % sorted(used)
    # the same key always lands in the same partition
    key_part = {}
    for m, md in sent:
        assert key_part.setdefault(m["key"], md.partition) == md.partition

    consumer = kp.consumer()
    tps = [TopicPartition(topic, p) for p in range(6)]
    check_round_trip(sent, consume_exactly(consumer, tps, n))

    ends = consumer.end_offsets(tps)
    per_part = {}
    for _, md in sent:
        per_part[md.partition] = per_part.get(md.partition, 0) + 1
    assert {tp.partition: off for tp, off in ends.items()} == {p: per_part.get(p, 0) for p in range(6)}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_round_trip(kp, codec):
    admin = kp.admin()
    topic = unique_topic("codec-" + codec)
    create_topic(admin, topic, 2)
    producer = kp.producer(compression_type=codec, linger_ms=20, batch_size=64 * 1024)
    n = 2000
    messages = [
        {
            "key": ("k%d" % i).encode(),
            "value": (("%s message %d " % (codec, i)) * 8).encode(),
            "headers": [("i", str(i).encode())],
        }
        for i in range(n)
    ]
    sent = produce_and_record(producer, topic, messages)
    consumer = kp.consumer()
    tps = [TopicPartition(topic, p) for p in range(2)]
    check_round_trip(sent, consume_exactly(consumer, tps, n))


def test_null_key_null_value_and_large_message(kp):
    admin = kp.admin()
    topic = unique_topic("edge")
    create_topic(admin, topic, 1)
    producer = kp.producer(max_request_size=2 * 1024 * 1024)
    big = bytes(range(256)) * 2048  # 512 KiB
    messages = [
        {"key": None, "value": b"no key", "partition": 0},
        {"key": b"tombstone", "value": None, "partition": 0},
        {"key": b"", "value": b"", "partition": 0},
        {"key": b"big", "value": big, "partition": 0},
        {"key": b"after", "value": b"after big", "partition": 0},
    ]
    sent = produce_and_record(producer, topic, messages)
    consumer = kp.consumer(max_partition_fetch_bytes=1024 * 1024)
    check_round_trip(sent, consume_exactly(consumer, [TopicPartition(topic, 0)], len(messages)))


def test_auto_topic_creation_on_produce(kp):
    topic = unique_topic("auto")
    producer = kp.producer()
    md = producer.send(topic, key=b"k", value=b"v").get(timeout=30)
    assert md.offset == 0
    admin = kp.admin()
    assert topic in admin.list_topics()
    consumer = kp.consumer()
    got = consume_exactly(consumer, [TopicPartition(topic, md.partition)], 1)
    assert got[md.partition][0].value == b"v"


def test_offsets_beginning_end_and_for_times(kp):
    admin = kp.admin()
    topic = unique_topic("offsets")
    create_topic(admin, topic, 2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = kp.consumer()
    # empty partitions
    assert consumer.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
    assert consumer.end_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
    assert consumer.offsets_for_times({tp0: 0})[tp0] is None

    base = (int(time.time()) - 3600) * 1000
    n = 100
    producer = kp.producer(linger_ms=0)
    messages = [
        {"key": b"k%d" % i, "value": b"v%d" % i, "partition": 0, "timestamp_ms": base + i * 1000} for i in range(n)
    ]
    sent = produce_and_record(producer, topic, messages)
    assert [md.offset for _, md in sent] == list(range(n))

    assert consumer.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
    assert consumer.end_offsets([tp0, tp1]) == {tp0: n, tp1: 0}

    found = consumer.offsets_for_times({tp0: base + 42500, tp1: base})
    assert found[tp0].offset == 43 and found[tp0].timestamp == base + 43000, found
    assert found[tp1] is None
    found = consumer.offsets_for_times({tp0: base})
    assert found[tp0].offset == 0 and found[tp0].timestamp == base, found
    found = consumer.offsets_for_times({tp0: 0})
    assert found[tp0].offset == 0, found
    found = consumer.offsets_for_times({tp0: base + n * 1000})
    assert found[tp0] is None, found

    # timestamps come back as produced (CreateTime)
    got = consume_exactly(consumer, [tp0], n)
    assert [r.timestamp for r in got[0]] == [base + i * 1000 for i in range(n)]
    assert all(r.timestamp_type == 0 for r in got[0])


def test_seek_to_middle(kp):
    admin = kp.admin()
    topic = unique_topic("seek")
    create_topic(admin, topic, 1)
    producer = kp.producer()
    n = 1000
    produce_and_record(producer, topic, [{"value": b"m%d" % i, "partition": 0} for i in range(n)])
    consumer = kp.consumer()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 737)
    got = []
    deadline = time.monotonic() + POLL_DEADLINE_S
    while len(got) < n - 737 and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            got.extend(recs)
    assert [r.offset for r in got] == list(range(737, n))
    assert got[0].value == b"m737"


def test_delete_records(kp):
    admin = kp.admin()
    topic = unique_topic("delrec")
    create_topic(admin, topic, 2)
    producer = kp.producer()
    n = 50
    produce_and_record(
        producer, topic, [{"value": b"r%d" % i, "partition": i % 2} for i in range(2 * n)]
    )
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    result = admin.delete_records({tp0: 10, tp1: 0}, timeout_ms=CLIENT_TIMEOUT_MS)
    assert result[tp0]["low_watermark"] == 10, result
    assert result[tp1]["low_watermark"] == 0, result

    consumer = kp.consumer()
    assert consumer.beginning_offsets([tp0, tp1]) == {tp0: 10, tp1: 0}
    assert consumer.end_offsets([tp0, tp1]) == {tp0: n, tp1: n}
    got = consume_exactly(consumer, [tp0], n - 10)
    assert [r.offset for r in got[0]] == list(range(10, n))
    assert got[0][0].value == b"r20"

    # beyond the high watermark is refused
    with pytest.raises(Errors.OffsetOutOfRangeError):
        admin.delete_records({tp0: n + 5}, timeout_ms=CLIENT_TIMEOUT_MS)
    # -1 means "up to the high watermark"
    result = admin.delete_records({tp1: -1}, timeout_ms=CLIENT_TIMEOUT_MS)
    assert result[tp1]["low_watermark"] == n, result
    assert consumer.beginning_offsets([tp1]) == {tp1: n}


def test_offset_for_leader_epoch(kp):
    admin = kp.admin()
    topic = unique_topic("epoch")
    create_topic(admin, topic, 1)
    producer = kp.producer()
    produce_and_record(producer, topic, [{"value": b"e%d" % i, "partition": 0} for i in range(25)])

    part = [p for t in admin.describe_topics([topic]) for p in t["partitions"]][0]
    epoch = part.get("leader_epoch", 0)
    Topic = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
    req = OffsetForLeaderEpochRequest(
        replica_id=-1,
        topics=[Topic(topic=topic, partitions=[Topic.OffsetForLeaderPartition(partition=0, current_leader_epoch=-1, leader_epoch=epoch)])],
    )
    resp = send_raw(admin, req, node_id=part["leader_id"])
    parts = resp.to_dict()["topics"][0]["partitions"]
    assert parts[0]["error_code"] == 0, resp
    # the current epoch ends at the log end offset
    assert parts[0]["end_offset"] == 25, resp
    if resp.version >= 1:
        assert parts[0]["leader_epoch"] == epoch, resp


def test_delete_topics(kp):
    admin = kp.admin()
    keep, gone = unique_topic("keep"), unique_topic("gone")
    create_topic(admin, keep, 1)
    create_topic(admin, gone, 3)
    producer = kp.producer()
    produce_and_record(producer, gone, [{"value": b"x", "partition": p} for p in range(3)])
    producer.close(timeout=5)  # its metadata refreshes could re-create the topic

    admin.delete_topics([gone], timeout_ms=CLIENT_TIMEOUT_MS)
    wait_until(lambda: gone not in admin.list_topics(), message="deleted topic to vanish from metadata")
    assert keep in admin.list_topics()
    with pytest.raises(Errors.UnknownTopicOrPartitionError):
        admin.delete_topics([unique_topic("never")], timeout_ms=CLIENT_TIMEOUT_MS)

    # The name can be reused and the new topic starts empty.
    create_topic(admin, gone, 1)
    consumer = kp.consumer()
    tp = TopicPartition(gone, 0)
    assert consumer.end_offsets([tp]) == {tp: 0}


def test_concurrent_producers(kp):
    """Several producers (own connections) into the same partitions at once:
    each producer's records stay in its send order within a partition."""
    admin = kp.admin()
    topic = unique_topic("conc")
    create_topic(admin, topic, 4)
    producers = [kp.producer(client_id="p%d" % i) for i in range(3)]
    per = 1000
    results = [None] * len(producers)
    errors = []

    def run(i):
        try:
            msgs = [
                {"key": b"p%d" % i, "value": b"%d:%d" % (i, j), "partition": j % 4} for j in range(per)
            ]
            results[i] = produce_and_record(producers[i], topic, msgs)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(producers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "producer thread hung"
    assert not errors, errors

    consumer = kp.consumer()
    tps = [TopicPartition(topic, p) for p in range(4)]
    got = consume_exactly(consumer, tps, per * len(producers))
    for p, recs in got.items():
        assert [r.offset for r in recs] == list(range(len(recs)))
        for i in range(len(producers)):
            mine = [int(r.value.split(b":")[1]) for r in recs if r.key == b"p%d" % i]
            assert mine == [j for j in range(per) if j % 4 == p], (p, i)
    for i, sent in enumerate(results):
        for m, md in sent:
            rec = got[md.partition][md.offset]
            assert rec.value == m["value"], (i, md)


def test_data_survives_restart(kp, broker):
    admin = kp.admin()
    topic = unique_topic("durable")
    create_topic(admin, topic, 3, {"retention.ms": "7200000"})
    producer = kp.producer()
    n = 600
    sent = produce_and_record(producer, topic, [{"key": b"k%d" % i, "value": b"v%d" % i} for i in range(n)])
    kp.close_all()

    rc = broker.restart()
    assert rc == 0, "SIGTERM shutdown exit code %s" % rc

    admin = kp.admin()
    assert topic in admin.list_topics()
    assert topic_partition_count(admin, topic) == 3
    _, entries = describe_topic_configs(admin, topic, keys=["retention.ms"])
    assert entries["retention.ms"]["value"] == "7200000"
    consumer = kp.consumer()
    tps = [TopicPartition(topic, p) for p in range(3)]
    check_round_trip(sent, consume_exactly(consumer, tps, n))

    # appends continue after the recovered end offset
    producer = kp.producer()
    md = producer.send(topic, value=b"after", partition=0).get(timeout=30)
    assert md.offset == sum(1 for _, ack in sent if ack.partition == 0)


def test_sigterm_exits_cleanly(broker):
    rc = broker.stop()
    assert rc == 0, "exit code after SIGTERM: %s\n%s" % (rc, broker.stderr_tail())
