"""shardlog against confluent-kafka (librdkafka).

No consumer groups: the Consumer needs a group.id to be constructed, but it
only ever uses assign() with explicit offsets and never subscribes or commits.
"""

import logging
import threading
import time
import uuid

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from conftest import unique_topic, wait_until

REQ_TIMEOUT_S = 15.0
POLL_DEADLINE_S = 30.0
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

log = logging.getLogger("librdkafka")


class Clients:
    def __init__(self, broker):
        self.broker = broker
        self._open = []
        self.errors = []  # (client, KafkaError) from error_cb

    def _base(self, name):
        def error_cb(err):
            self.errors.append((name, err))
            log.warning("%s error_cb: %s", name, err)

        return {
            "bootstrap.servers": self.broker.bootstrap,
            "client.id": "shardlog-ck-" + name,
            "broker.address.family": "v4",
            "socket.timeout.ms": 10000,
            "error_cb": error_cb,
            "logger": log,
        }

    def admin(self, **conf):
        c = self._base("admin")
        c.update(conf)
        a = AdminClient(c)
        self._open.append(a)
        return a

    def producer(self, **conf):
        c = self._base("producer")
        c.update(
            {
                "acks": "all",
                "enable.idempotence": False,
                "linger.ms": 5,
                "message.timeout.ms": 30000,
                "request.timeout.ms": 15000,
            }
        )
        c.update(conf)
        p = Producer(c)
        self._open.append(p)
        return p

    def consumer(self, **conf):
        c = self._base("consumer")
        c.update(
            {
                "group.id": "shardlog-tests-" + uuid.uuid4().hex[:8],
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 200,
            }
        )
        c.update(conf)
        k = Consumer(c)
        self._open.append(k)
        return k

    def close_all(self):
        for c in reversed(self._open):
            try:
                if isinstance(c, Consumer):
                    c.close()
                elif isinstance(c, Producer):
                    c.flush(5)
            except Exception:
                pass
        self._open = []


@pytest.fixture
def ck(broker):
    c = Clients(broker)
    yield c
    c.close_all()


# ------------------------------------------------------------------ helpers
def result(future, timeout=REQ_TIMEOUT_S + 5):
    return future.result(timeout=timeout)


def error_code(excinfo):
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), err
    return err.code()


def create_topic(admin, name, partitions, config=None):
    fs = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=REQ_TIMEOUT_S,
        request_timeout=REQ_TIMEOUT_S,
    )
    assert result(fs[name]) is None
    wait_for_partitions(admin, name, partitions)


def partition_count(admin, name):
    md = admin.list_topics(topic=name, timeout=REQ_TIMEOUT_S)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def wait_for_partitions(admin, name, expected):
    wait_until(
        lambda: partition_count(admin, name) == expected,
        message="topic %s with %d partitions in metadata" % (name, expected),
    )


def all_topics(admin):
    return set(admin.list_topics(timeout=REQ_TIMEOUT_S).topics)


def produce(producer, topic, messages, timeout=60.0):
    """messages: dicts with key/value/partition/headers/timestamp.  Returns a
    list parallel to `messages` of (partition, offset) from delivery reports."""
    reports = [None] * len(messages)
    failures = []

    def make_cb(i):
        def cb(err, msg):
            if err is not None:
                failures.append((i, err))
            else:
                reports[i] = (msg.partition(), msg.offset())

        return cb

    deadline = time.monotonic() + timeout
    for i, m in enumerate(messages):
        kw = {"key": m.get("key"), "value": m.get("value"), "on_delivery": make_cb(i)}
        if m.get("partition") is not None:
            kw["partition"] = m["partition"]
        if m.get("headers") is not None:
            kw["headers"] = m["headers"]
        if m.get("timestamp") is not None:
            kw["timestamp"] = m["timestamp"]
        while True:
            try:
                producer.produce(topic, **kw)
                break
            except BufferError:
                assert time.monotonic() < deadline, "producer queue stayed full"
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    assert remaining == 0, "%d messages not delivered in time" % remaining
    assert not failures, "delivery failures: %s" % failures[:10]
    assert all(r is not None for r in reports)
    return reports


def consume_exactly(consumer, topic, partitions, expected, start=OFFSET_BEGINNING, deadline_s=POLL_DEADLINE_S):
    """assign() the partitions at `start`, read `expected` messages (plus a
    short extra poll to catch duplicates).  Returns {partition: [Message]}."""
    consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    got = {p: [] for p in partitions}
    errors = []
    n = 0
    deadline = time.monotonic() + deadline_s
    while n < expected and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            if msg.error():
                # librdkafka reports some non-fatal conditions (e.g. no group
                # coordinator, as groups are unsupported) as error events.
                assert not msg.error().fatal(), msg.error()
                errors.append(msg.error())
                continue
            got[msg.partition()].append(msg)
            n += 1
    assert n >= expected, "consumed %d of %d messages before the deadline (%s); errors: %s" % (
        n,
        expected,
        {p: len(v) for p, v in got.items()},
        errors[:10],
    )
    for msg in consumer.consume(num_messages=1000, timeout=0.5):
        if not msg.error():
            got[msg.partition()].append(msg)
            n += 1
    assert n == expected, "consumed %d messages, expected exactly %d" % (n, expected)
    return got


def check_round_trip(messages, reports, got):
    per = {}
    for m, (p, off) in zip(messages, reports):
        per.setdefault(p, []).append((off, m))
    assert set(per) <= set(got), (set(per), set(got))
    for p, msgs in got.items():
        expected = per.get(p, [])
        assert len(msgs) == len(expected), "partition %d: consumed %d, produced %d" % (p, len(msgs), len(expected))
        assert [off for off, _ in expected] == list(range(len(expected))), (
            "partition %d: delivery offsets not dense / not in produce order" % p
        )
        for msg, (off, m) in zip(msgs, expected):
            assert msg.offset() == off, (p, msg.offset(), off)
            assert msg.key() == m.get("key"), (p, off)
            assert msg.value() == m.get("value"), (p, off)
            if m.get("headers") is not None:
                assert msg.headers() == m["headers"], (p, off, msg.headers())
            if m.get("timestamp") is not None:
                assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, m["timestamp"]), (p, off, msg.timestamp())


# -------------------------------------------------------------------- tests
def test_describe_cluster(ck, broker):
    admin = ck.admin()
    desc = result(admin.describe_cluster(request_timeout=REQ_TIMEOUT_S))
    assert len(desc.nodes) == 1, desc.nodes
    node = desc.nodes[0]
    assert node.host == "127.0.0.1" and node.port == broker.port, node
    assert desc.controller is not None and desc.controller.id == node.id, desc.controller
    md = admin.list_topics(timeout=REQ_TIMEOUT_S)
    assert list(md.brokers) == [node.id]
    assert desc.cluster_id, desc
    assert md.cluster_id == desc.cluster_id


def test_authorized_operations_when_requested(ck):
    """With no authorizer, Kafka reports every operation the resource supports
    when a client asks for authorized operations."""
    from confluent_kafka.admin import AclOperation

    admin = ck.admin()
    topic = unique_topic("ck-ops")
    create_topic(admin, topic, 1)
    desc = result(admin.describe_cluster(include_authorized_operations=True, request_timeout=REQ_TIMEOUT_S))
    assert desc.authorized_operations and AclOperation.DESCRIBE in desc.authorized_operations, (
        "cluster authorized_operations when requested: %r" % (desc.authorized_operations,)
    )
    tdesc = result(
        admin.describe_topics(
            TopicCollection([topic]), include_authorized_operations=True, request_timeout=REQ_TIMEOUT_S
        )[topic]
    )
    ops = set(tdesc.authorized_operations or [])
    assert {AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE} <= ops, (
        "topic authorized_operations when requested: %r" % (tdesc.authorized_operations,)
    )


def test_admin_create_describe_delete(ck):
    admin = ck.admin()
    topic = unique_topic("ck-admin")

    # validate_only creates nothing
    fs = admin.create_topics(
        [NewTopic(topic, num_partitions=4, replication_factor=1, config={"retention.ms": "3600000"})],
        validate_only=True,
        operation_timeout=REQ_TIMEOUT_S,
        request_timeout=REQ_TIMEOUT_S,
    )
    assert result(fs[topic]) is None
    time.sleep(0.5)
    assert topic not in all_topics(admin)

    create_topic(admin, topic, 4, {"retention.ms": "3600000", "max.message.bytes": "2000000"})
    assert topic in all_topics(admin)

    # creating it again fails
    fs = admin.create_topics([NewTopic(topic, 4, 1)], request_timeout=REQ_TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        result(fs[topic])
    assert error_code(ei) == KafkaError.TOPIC_ALREADY_EXISTS

    # DescribeConfigs shows the overrides as topic configs
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = result(admin.describe_configs([res], request_timeout=REQ_TIMEOUT_S)[res])
    assert entries["retention.ms"].value == "3600000"
    source = entries["retention.ms"].source
    assert getattr(source, "value", source) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, source
    assert not entries["retention.ms"].is_default
    assert entries["max.message.bytes"].value == "2000000"

    # grow 4 -> 6
    fs = admin.create_partitions([NewPartitions(topic, 6)], request_timeout=REQ_TIMEOUT_S, operation_timeout=REQ_TIMEOUT_S)
    assert result(fs[topic]) is None
    wait_for_partitions(admin, topic, 6)
    fs = admin.create_partitions([NewPartitions(topic, 2)], request_timeout=REQ_TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        result(fs[topic])
    assert error_code(ei) == KafkaError.INVALID_PARTITIONS

    # delete
    fs = admin.delete_topics([topic], operation_timeout=REQ_TIMEOUT_S, request_timeout=REQ_TIMEOUT_S)
    assert result(fs[topic]) is None
    wait_until(lambda: topic not in all_topics(admin), message="deleted topic to vanish")
    fs = admin.delete_topics([topic], request_timeout=REQ_TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        result(fs[topic])
    assert error_code(ei) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_topics(ck):
    admin = ck.admin()
    topic = unique_topic("ck-desc")
    create_topic(admin, topic, 3)
    desc = result(admin.describe_topics(TopicCollection([topic]), request_timeout=REQ_TIMEOUT_S)[topic])
    assert desc.name == topic
    assert sorted(p.id for p in desc.partitions) == [0, 1, 2]
    for p in desc.partitions:
        assert p.leader is not None and p.leader.port > 0


@pytest.mark.parametrize("name", ["bad/name", "bad name", "."])
def test_invalid_topic_name_refused(ck, name):
    admin = ck.admin()
    fs = admin.create_topics([NewTopic(name, 1, 1)], request_timeout=REQ_TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        result(fs[name])
    assert error_code(ei) == KafkaError.TOPIC_EXCEPTION, ei.value
    assert name not in all_topics(admin)


def test_describe_configs_unknown_topic(ck):
    admin = ck.admin()
    res = ConfigResource(ResourceType.TOPIC, unique_topic("ck-none"))
    with pytest.raises(KafkaException) as ei:
        result(admin.describe_configs([res], request_timeout=REQ_TIMEOUT_S)[res])
    assert error_code(ei) == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_codecs(ck, codec):
    admin = ck.admin()
    topic = unique_topic("ck-" + codec)
    create_topic(admin, topic, 3)
    producer = ck.producer(**{"compression.type": codec, "linger.ms": 20, "batch.num.messages": 400})
    n = 3000
    messages = [
        {
            "key": b"key-%d" % (i % 300),
            "value": (b"%s payload %d " % (codec.encode(), i)) * (1 + i % 10),
            "headers": [("seq", str(i).encode()), ("codec", codec.encode())],
        }
        for i in range(n)
    ]
    reports = produce(producer, topic, messages)
    assert {p for p, _ in reports} == {0, 1, 2}
    consumer = ck.consumer()
    check_round_trip(messages, reports, consume_exactly(consumer, topic, [0, 1, 2], n))


def test_produce_5000_to_grown_topic(ck):
    admin = ck.admin()
    topic = unique_topic("ck-keyed")
    create_topic(admin, topic, 4, {"retention.ms": "3600000"})
    fs = admin.create_partitions([NewPartitions(topic, 6)], request_timeout=REQ_TIMEOUT_S)
    result(fs[topic])
    wait_for_partitions(admin, topic, 6)

    producer = ck.producer(**{"topic.metadata.refresh.interval.ms": 1000})
    wait_until(
        lambda: len(producer.list_topics(topic=topic, timeout=5).topics[topic].partitions) == 6,
        message="producer to see 6 partitions",
    )
    n = 5000
    messages = [{"key": b"k%d" % i, "value": b"v%d" % i} for i in range(n)]
    reports = produce(producer, topic, messages)
    assert len({p for p, _ in reports}) == 6
    consumer = ck.consumer()
    check_round_trip(messages, reports, consume_exactly(consumer, topic, list(range(6)), n))


def test_auto_create_on_produce(ck):
    topic = unique_topic("ck-auto")
    producer = ck.producer()
    reports = produce(producer, topic, [{"key": b"a", "value": b"b"}])
    assert reports[0][1] == 0
    admin = ck.admin()
    assert topic in all_topics(admin)


def test_list_offsets_and_watermarks(ck):
    admin = ck.admin()
    topic = unique_topic("ck-offsets")
    create_topic(admin, topic, 2)
    base = (int(time.time()) - 7200) * 1000
    n = 80
    producer = ck.producer(**{"linger.ms": 0})
    messages = [{"value": b"m%d" % i, "partition": 0, "timestamp": base + 1000 * i} for i in range(n)]
    reports = produce(producer, topic, messages)
    assert [off for _, off in reports] == list(range(n))

    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    def list_offsets(spec):
        fs = admin.list_offsets({tp0: spec, tp1: spec}, request_timeout=REQ_TIMEOUT_S)
        return {tp.partition: result(f) for tp, f in fs.items()}

    earliest = list_offsets(OffsetSpec.earliest())
    assert (earliest[0].offset, earliest[1].offset) == (0, 0)
    latest = list_offsets(OffsetSpec.latest())
    assert (latest[0].offset, latest[1].offset) == (n, 0)
    at = list_offsets(OffsetSpec.for_timestamp(base + 10500))
    assert at[0].offset == 11 and at[0].timestamp == base + 11000, at[0]
    assert at[1].offset == -1, at[1]
    past_end = list_offsets(OffsetSpec.for_timestamp(base + 1000 * n))
    assert past_end[0].offset == -1, past_end[0]

    consumer = ck.consumer()
    assert consumer.get_watermark_offsets(tp0, timeout=REQ_TIMEOUT_S, cached=False) == (0, n)
    assert consumer.get_watermark_offsets(tp1, timeout=REQ_TIMEOUT_S, cached=False) == (0, 0)
    found = consumer.offsets_for_times([TopicPartition(topic, 0, base + 42000)], timeout=REQ_TIMEOUT_S)
    assert found[0].offset == 42 and found[0].error is None, found

    # start reading from the looked-up offset
    got = consume_exactly(consumer, topic, [0], n - 42, start=42)
    assert [m.offset() for m in got[0]] == list(range(42, n))
    assert got[0][0].timestamp() == (TIMESTAMP_CREATE_TIME, base + 42000)


def test_delete_records(ck):
    admin = ck.admin()
    topic = unique_topic("ck-delrec")
    create_topic(admin, topic, 2)
    producer = ck.producer()
    n = 40
    produce(producer, topic, [{"value": b"d%d" % i, "partition": i % 2} for i in range(2 * n)])

    fs = admin.delete_records(
        [TopicPartition(topic, 0, 15), TopicPartition(topic, 1, -1)],
        request_timeout=REQ_TIMEOUT_S,
        operation_timeout=REQ_TIMEOUT_S,
    )
    lw = {tp.partition: result(f).low_watermark for tp, f in fs.items()}
    assert lw == {0: 15, 1: n}, lw

    fs = admin.list_offsets(
        {TopicPartition(topic, 0): OffsetSpec.earliest(), TopicPartition(topic, 1): OffsetSpec.earliest()},
        request_timeout=REQ_TIMEOUT_S,
    )
    assert {tp.partition: result(f).offset for tp, f in fs.items()} == {0: 15, 1: n}

    consumer = ck.consumer()
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=REQ_TIMEOUT_S) == (15, n)
    got = consume_exactly(consumer, topic, [0], n - 15)
    assert [m.offset() for m in got[0]] == list(range(15, n))
    assert got[0][0].value() == b"d30"

    fs = admin.delete_records([TopicPartition(topic, 0, n + 10)], request_timeout=REQ_TIMEOUT_S)
    with pytest.raises(KafkaException) as ei:
        result(list(fs.values())[0])
    assert error_code(ei) == KafkaError.OFFSET_OUT_OF_RANGE, ei.value


def test_parallel_producers_and_consumer(ck):
    """Producers on several threads/connections while a consumer tails."""
    admin = ck.admin()
    topic = unique_topic("ck-par")
    create_topic(admin, topic, 4)
    per, nprod = 2000, 3
    producers = [ck.producer(**{"client.id": "p%d" % i, "compression.type": ["none", "lz4", "zstd"][i]}) for i in range(nprod)]
    consumer = ck.consumer()
    results, errors = [None] * nprod, []

    def run(i):
        try:
            msgs = [{"key": b"p%d" % i, "value": b"%d:%d" % (i, j), "partition": j % 4} for j in range(per)]
            results[i] = produce(producers[i], topic, msgs)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(nprod)]
    for t in threads:
        t.start()
    # tail from the beginning while the producers are running
    got = consume_exactly(consumer, topic, [0, 1, 2, 3], per * nprod)
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for p, msgs in got.items():
        assert [m.offset() for m in msgs] == list(range(len(msgs)))
        for i in range(nprod):
            seq = [int(m.value().split(b":")[1]) for m in msgs if m.key() == b"p%d" % i]
            assert seq == [j for j in range(per) if j % 4 == p], (p, i)
