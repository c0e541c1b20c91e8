"""Idempotent and transactional producers through confluent-kafka and kafka-python 3.x.

Each scenario runs once per client (the `client` fixture): an idempotent producer through
three broker SIGKILLs, consume-transform-produce exactly once through aborts and a SIGKILL,
fencing by a second producer with the same transactional id, and a transaction left open
until the coordinator aborts it. What came out is always read back with confluent-kafka
readers assigned to every partition, under the isolation level the check needs.
"""

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition as CkTp

from conftest import unique_topic, wait_until

BROKER_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
}
N_IDEMPOTENT = 100_000
N_COPY = 100_000
DEADLINE_S = 300


class TxnFailed(Exception):
    """A transaction step failed; `fatal` when the producer cannot go on."""

    def __init__(self, why, fatal):
        super().__init__(why)
        self.fatal = fatal


# ------------------------------------------------------------------ clients
class Confluent:
    name = "confluent-kafka"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def _conf(self, **extra):
        c = {"bootstrap.servers": self.bootstrap, "broker.address.family": "v4"}
        c.update(extra)
        return c

    def idempotent_producer(self):
        p = Producer(
            self._conf(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "max.in.flight.requests.per.connection": 5,
                    "linger.ms": 5,
                    "message.timeout.ms": 300000,
                    "retry.backoff.ms": 50,
                    "reconnect.backoff.max.ms": 500,
                }
            )
        )
        return ConfluentProducer(p)

    def txn_producer(self, txn_id, timeout_ms=60000):
        p = Producer(
            self._conf(
                **{
                    "transactional.id": txn_id,
                    "transaction.timeout.ms": timeout_ms,
                    "message.timeout.ms": timeout_ms,
                    "linger.ms": 5,
                }
            )
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                p.init_transactions(10)
                return ConfluentProducer(p)
            except Exception as e:
                err = e.args[0] if e.args else None
                if time.monotonic() > deadline or (isinstance(err, KafkaError) and err.fatal()):
                    raise
                time.sleep(0.2)

    def group_consumer(self, group, topic):
        c = Consumer(
            self._conf(
                **{
                    "group.id": group,
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 50,
                }
            )
        )
        c.subscribe([topic])
        return ConfluentConsumer(c)


class ConfluentProducer:
    def __init__(self, p):
        self.p = p
        self.acked = 0
        self.failed = []

    def _cb(self, err, msg):
        if err is None:
            self.acked += 1
        else:
            self.failed.append(err)

    def send(self, topic, partition, key, value):
        while True:
            try:
                self.p.produce(topic, key=key, value=value, partition=partition, on_delivery=self._cb)
                break
            except BufferError:
                self.p.poll(0.01)
        self.p.poll(0)

    def flush(self):
        assert self.p.flush(300) == 0, "messages left unflushed"

    def serve(self):
        """Lets delivery reports arrive (librdkafka serves them on poll)."""
        self.p.poll(0.05)

    def fatal_error(self):
        return None  # a fatal error shows as a failed delivery with fatal() set

    def _txn(self, op, *args):
        try:
            return op(*args)
        except Exception as e:
            err = e.args[0] if e.args else None
            fatal = not isinstance(err, KafkaError) or err.fatal() or not err.txn_requires_abort()
            if isinstance(err, KafkaError) and err.retriable() and not err.fatal():
                fatal = False
            raise TxnFailed(str(e), fatal)

    def begin(self):
        self._txn(self.p.begin_transaction)

    def send_offsets(self, offsets, consumer):
        tps = [CkTp(t, p, o) for (t, p), o in offsets.items()]
        self._txn(self.p.send_offsets_to_transaction, tps, consumer.c.consumer_group_metadata(), 30)

    def commit(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                return self._txn(self.p.commit_transaction, 10)
            except TxnFailed as e:
                retriable = "retriable" in str(e).lower() or "timed out" in str(e).lower()
                if e.fatal or not retriable or time.monotonic() > deadline:
                    raise

    def abort(self):
        self._txn(self.p.abort_transaction, 30)

    def close(self):
        try:
            self.p.flush(1)
        except Exception:  # a fenced producer's flush raises its fatal error again
            pass


class GroupConsumer:
    """A group member of either client; `_fetch(n)` is one poll of up to n records."""

    def __init__(self, c):
        self.c = c

    def poll(self, max_records, timeout_s):
        """Up to `max_records` as (topic, partition, offset, key, value), within `timeout_s`."""
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < max_records and time.monotonic() < deadline:
            out.extend(self._fetch(max_records - len(out)))
        return out

    def close(self):
        self.c.close()


class ConfluentConsumer(GroupConsumer):
    def _fetch(self, n):
        msgs = self.c.consume(num_messages=n, timeout=0.1)
        return [(m.topic(), m.partition(), m.offset(), m.key(), m.value()) for m in msgs if not m.error()]


class KafkaPython:
    name = "kafka-python"

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap

    def idempotent_producer(self):
        from kafka import KafkaProducer

        # kafka-python 3.x: idempotence is on by default; these are its defaults, spelled out.
        p = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            max_in_flight_requests_per_connection=5,
            linger_ms=5,
            delivery_timeout_ms=300000,
            request_timeout_ms=10000,
            reconnect_backoff_max_ms=500,
        )
        return KafkaPythonProducer(p)

    def txn_producer(self, txn_id, timeout_ms=60000):
        from kafka import KafkaProducer

        p = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            transactional_id=txn_id,
            transaction_timeout_ms=timeout_ms,
            linger_ms=5,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                p.init_transactions()
                return KafkaPythonProducer(p)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def group_consumer(self, group, topic):
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        return KafkaPythonConsumer(c)


class KafkaPythonProducer:
    def __init__(self, p):
        self.p = p
        self.acked = 0
        self.failed = []
        self._lock = threading.Lock()

    def _ok(self, _md):
        with self._lock:
            self.acked += 1

    def _err(self, e):
        with self._lock:
            self.failed.append(e)

    def send(self, topic, partition, key, value):
        f = self.p.send(topic, key=key, value=value, partition=partition)
        f.add_callback(self._ok)
        f.add_errback(self._err)

    def flush(self):
        self.p.flush(timeout=300)

    def serve(self):
        time.sleep(0.05)  # kafka-python's sender thread runs the callbacks

    def fatal_error(self):
        tm = getattr(self.p, "_transaction_manager", None)
        return tm.last_error() if tm and tm.has_fatal_error() else None

    def _txn(self, op, *args):
        try:
            return op(*args)
        except Exception as e:
            tm = getattr(self.p, "_transaction_manager", None)
            fatal = bool(tm and tm.has_fatal_error())
            raise TxnFailed("%s: %s" % (type(e).__name__, e), fatal)

    def begin(self):
        self._txn(self.p.begin_transaction)

    def send_offsets(self, offsets, consumer):
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        offs = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        self._txn(self.p.send_offsets_to_transaction, offs, consumer.c.group_metadata())

    def commit(self):
        self._txn(self.p.commit_transaction)

    def abort(self):
        self._txn(self.p.abort_transaction)

    def close(self):
        try:
            self.p.close(timeout=2)
        except Exception:
            pass


class KafkaPythonConsumer(GroupConsumer):
    def _fetch(self, n):
        batch = self.c.poll(timeout_ms=100, max_records=n)
        return [(m.topic, m.partition, m.offset, m.key, m.value) for msgs in batch.values() for m in msgs]


CLIENTS = {"confluent-kafka": Confluent, "kafka-python": KafkaPython}


@pytest.fixture(params=list(CLIENTS))
def client_kind(request):
    return request.param


@pytest.fixture
def eos_broker(broker_factory):
    return broker_factory(settings=BROKER_SETTINGS)


# ------------------------------------------------------------------ readers
def create_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)
    wait_until(
        lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == partitions,
        message="topic %s" % topic,
    )


def read_all(bootstrap, topic, partitions, isolation):
    """Every record of `topic` visible at `isolation`: [(partition, offset, key, value)]."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-" + uuid.uuid4().hex[:8],
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([CkTp(topic, p, 0) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.monotonic() + 120
    try:
        while len(eof) < partitions:
            assert time.monotonic() < deadline, "reading %s timed out" % topic
            for m in c.consume(num_messages=10000, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                    continue
                eof.discard(m.partition())
                out.append((m.partition(), m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return out


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([CkTp(topic, p) for p in range(partitions)], timeout=15)
        return [max(tp.offset, -1) for tp in got]
    finally:
        c.close()


def end_offsets(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        return [c.get_watermark_offsets(CkTp(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()


def check_exactly_once(records, n, what):
    """Keys k0..k{n-1} each once, with value v{i}, increasing within each partition."""
    seen = set()
    last = {}
    for p, off, key, value in records:
        i = int(key[1:])
        assert value == b"v%d" % i, (what, p, off, key, value)
        assert i not in seen, "%s: k%d twice (again at %d@%d)" % (what, i, p, off)
        seen.add(i)
        assert last.get(p, -1) < i, "%s: partition %d out of order at k%d" % (what, p, i)
        last[p] = i
    assert len(seen) == n, "%s: %d of %d records" % (what, len(seen), n)


# ------------------------------------------------------------------ tests
@pytest.mark.timeout(DEADLINE_S + 60)
def test_idempotent_producer_through_three_broker_kills(eos_broker, client_kind):
    partitions = 8
    topic = unique_topic("idem")
    create_topic(eos_broker.bootstrap, topic, partitions)
    producer = CLIENTS[client_kind](eos_broker.bootstrap).idempotent_producer()
    kills = []

    def crasher():
        for k in (1, 2, 3):
            deadline = time.monotonic() + DEADLINE_S
            while producer.acked < N_IDEMPOTENT * k // 4 and time.monotonic() < deadline:
                time.sleep(0.005)
            eos_broker.restart(same_port=True, crash=True)
            kills.append(producer.acked)

    t = threading.Thread(target=crasher, daemon=True)
    t.start()
    for i in range(N_IDEMPOTENT):
        producer.send(topic, i % partitions, b"k%d" % i, b"v%d" % i)
    deadline = time.monotonic() + DEADLINE_S
    while t.is_alive() and time.monotonic() < deadline:
        producer.serve()
    assert len(kills) == 3, "the broker was killed %d times" % len(kills)
    producer.flush()
    assert not producer.failed, "%s: %d deliveries failed, first %r" % (
        client_kind,
        len(producer.failed),
        producer.failed[:1],
    )
    assert producer.fatal_error() is None
    assert producer.acked == N_IDEMPOTENT
    producer.close()
    check_exactly_once(read_all(eos_broker.bootstrap, topic, partitions, "read_uncommitted"), N_IDEMPOTENT, client_kind)


@pytest.mark.timeout(DEADLINE_S + 60)
def test_consume_transform_produce_exactly_once(eos_broker, client_kind):
    partitions, txn_records = 4, 1000
    src, dst = unique_topic("eos-in"), unique_topic("eos-out")
    group = "copier-" + uuid.uuid4().hex[:8]
    txn_id = "copier-" + uuid.uuid4().hex[:8]
    b = eos_broker.bootstrap
    create_topic(b, src, partitions)
    create_topic(b, dst, partitions)
    feeder = Producer({"bootstrap.servers": b, "acks": "all", "linger.ms": 5})
    for i in range(N_COPY):
        while True:
            try:
                feeder.produce(src, key=b"k%d" % i, value=b"v%d" % i, partition=i % partitions)
                break
            except BufferError:
                feeder.poll(0.01)
    assert feeder.flush(60) == 0

    clients = CLIENTS[client_kind](b)
    producer = clients.txn_producer(txn_id)
    consumer = clients.group_consumer(group, src)
    txn_no, aborted, crashed, errors = 0, 0, False, []
    # Progress as the commits this loop saw succeed: the next offset per source partition.
    # (A commit that raised yet landed is picked up again from the group's offsets.)
    progress = {}
    deadline = time.monotonic() + DEADLINE_S
    while True:
        done = sum(progress.values())
        assert time.monotonic() < deadline, "copy unfinished: %d of %d; errors %s" % (done, N_COPY, errors[:5])
        if done >= N_COPY:
            break
        if not crashed and done >= N_COPY // 2:
            eos_broker.restart(same_port=True, crash=True)
            crashed = True
            if client_kind == "confluent-kafka":
                # librdkafka >= 2.10 re-bootstraps when its only broker goes away and keeps the
                # decommissioned broker as the cached group coordinator, so its next
                # send_offsets_to_transaction never returns (confluentinc/librdkafka#5511,
                # #5456). A new producer with the same transactional id is what recovers.
                producer.close()
                producer = clients.txn_producer(txn_id)
        ok = False
        try:
            producer.begin()
            records = consumer.poll(txn_records, 2.0)
            if not records:
                # Nothing to copy yet, or a consumer that lost its group: a new one.
                producer.abort()
                consumer.close()
                consumer = clients.group_consumer(group, src)
                continue
            offsets = {}
            for topic, p, off, key, value in records:
                producer.send(dst, p, key, value)
                offsets[(topic, p)] = off + 1
            producer.send_offsets(offsets, consumer)
            txn_no += 1
            if txn_no % 7 == 0:
                producer.abort()
                aborted += 1
            else:
                producer.commit()
                ok = True
                for key, off in offsets.items():
                    progress[key] = max(progress.get(key, 0), off)
        except TxnFailed as e:
            errors.append(str(e))
            try:
                if e.fatal:
                    raise e
                producer.abort()
            except TxnFailed:
                producer.close()
                producer = clients.txn_producer(txn_id)
        if not ok:
            # Not committed: read again from the group's committed offsets.
            consumer.close()
            consumer = clients.group_consumer(group, src)
    consumer.close()
    producer.close()
    assert crashed and aborted > 0
    check_exactly_once(read_all(b, dst, partitions, "read_committed"), N_COPY, client_kind + " read_committed")
    everything = read_all(b, dst, partitions, "read_uncommitted")
    assert len(everything) > N_COPY, "read_uncommitted shows the aborted copies too"
    assert committed(b, group, src, partitions) == end_offsets(b, src, partitions)


def test_a_second_producer_fences_the_first(eos_broker, client_kind):
    topic = unique_topic("fence")
    b = eos_broker.bootstrap
    create_topic(b, topic, 1)
    clients = CLIENTS[client_kind](b)
    txn_id = "fence-" + uuid.uuid4().hex[:8]
    first = clients.txn_producer(txn_id)
    first.begin()
    for i in range(10):
        first.send(topic, 0, None, b"first-%d" % i)
    first.flush()
    second = clients.txn_producer(txn_id)
    second.begin()
    for i in range(10):
        second.send(topic, 0, None, b"second-%d" % i)
    second.commit()
    with pytest.raises(TxnFailed):
        first.commit()
    first.close()
    second.close()
    visible = read_all(b, topic, 1, "read_committed")
    assert sorted(r[3] for r in visible) == sorted(b"second-%d" % i for i in range(10))
    assert len(read_all(b, topic, 1, "read_uncommitted")) == 20


def test_an_abandoned_transaction_times_out_and_readers_move_on(eos_broker, client_kind):
    topic = unique_topic("timeout")
    b = eos_broker.bootstrap
    create_topic(b, topic, 1)
    clients = CLIENTS[client_kind](b)
    stuck = clients.txn_producer("stuck-" + uuid.uuid4().hex[:8], timeout_ms=1500)
    stuck.begin()
    for i in range(5):
        stuck.send(topic, 0, None, b"stuck-%d" % i)
    stuck.flush()
    reader = Consumer({"bootstrap.servers": b, "group.id": "lso", "isolation.level": "read_committed"})
    tp = CkTp(topic, 0)
    lo, lso = reader.get_watermark_offsets(tp, timeout=10)
    assert (lo, lso) == (0, 0), "read_committed LATEST is the open transaction's first offset"
    wait_until(
        lambda: reader.get_watermark_offsets(tp, timeout=10)[1] == 6,
        timeout=20,
        message="the coordinator to abort the timed-out transaction",
    )
    reader.close()
    committer = clients.txn_producer("after-" + uuid.uuid4().hex[:8])
    committer.begin()
    committer.send(topic, 0, None, b"after")
    committer.commit()
    committer.close()
    visible = read_all(b, topic, 1, "read_committed")
    assert [r[3] for r in visible] == [b"after"], "read_committed moves on past the aborted records"
    with pytest.raises(TxnFailed):
        stuck.commit()
    stuck.close()
