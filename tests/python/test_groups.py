"""Consumer groups through kafka-python (the pure-Python client, its own implementation of
the group protocol): members split a topic's partitions and read every message once, a
killed consumer process is evicted after its session timeout, committed offsets survive
consumer and broker restarts, and `shardlog group reset-offsets` moves a stopped group.
Messages are produced with confluent-kafka, which is much faster at it.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from conftest import shardlog_binary, unique_topic, wait_until

GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": "0"}


def create_topic(broker, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="py-groups-admin")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce(broker, topic, n, partitions):
    """n messages with value str(i), spread round-robin over the partitions."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
    failures = []
    for i in range(n):
        while True:
            try:
                p.produce(
                    topic,
                    value=str(i).encode(),
                    partition=i % partitions,
                    on_delivery=lambda err, _m: err and failures.append(err),
                )
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert not failures, failures[:3]


def consumer(broker, group, topic=None, **kw):
    cfg = dict(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        client_id="py-groups",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        # kafka-python refuses frames over 1 MB by default, yet asks for up to 50 MB.
        receive_message_max_bytes=64 << 20,
    )
    cfg.update(kw)
    c = KafkaConsumer(**cfg)
    if topic:
        # Load the topic's metadata first: a leader that assigns before it knows the
        # partitions hands out nothing, and kafka-python 3.0's rejoin after that can hang.
        wait_until(lambda: c.partitions_for_topic(topic), message="metadata for %s" % topic)
        c.subscribe([topic])
    return c


def owned(c):
    return sorted(tp.partition for tp in c.assignment())


def test_three_consumers_split_twelve_partitions_and_read_everything_once(broker_factory):
    broker = broker_factory(settings=GROUP_SETTINGS)
    topic = unique_topic("groups")
    create_topic(broker, topic, 12)
    total = 300_000
    produce(broker, topic, total, 12)

    members = [consumer(broker, "py-trio", topic) for _ in range(3)]
    seen = {}
    try:
        # Every member polls (joins) until all three own four partitions each. Nothing is
        # committed, so what a member reads before the final assignment its successor would
        # read again: reading starts from the beginning once the group is balanced.
        def balanced():
            for c in members:
                c.poll(timeout_ms=50)
            return [len(owned(c)) for c in members] == [4, 4, 4]

        wait_until(balanced, timeout=60, interval=0, message="three members with 4 partitions each")
        assignments = [set(owned(c)) for c in members]
        assert set().union(*assignments) == set(range(12))
        for c in members:
            c.seek_to_beginning()

        deadline = time.monotonic() + 120
        while len(seen) < total and time.monotonic() < deadline:
            for c in members:
                for tp, records in c.poll(timeout_ms=50).items():
                    for r in records:
                        seen[(r.partition, r.offset)] = seen.get((r.partition, r.offset), 0) + 1
        assert len(seen) == total, "read %d of %d messages" % (len(seen), total)
        duplicates = [k for k, n in seen.items() if n > 1]
        assert not duplicates, "read more than once: %r" % duplicates[:5]
        assert all(len(owned(c)) == 4 for c in members)
    finally:
        for c in members:
            c.close()


def test_a_consumer_that_leaves_hands_its_partitions_over(broker_factory):
    broker = broker_factory(settings=GROUP_SETTINGS)
    topic = unique_topic("leave")
    create_topic(broker, topic, 12)
    stays, leaves = consumer(broker, "py-leavers", topic), consumer(broker, "py-leavers", topic)
    try:
        wait_until(
            lambda: [len(owned(c)) for c in (stays, leaves) if c.poll(timeout_ms=50) is not None]
            == [6, 6],
            timeout=60,
            interval=0,
            message="two members with 6 partitions each",
        )
        leaves.close()  # LeaveGroup: no waiting for the session timeout
        closed_at = time.monotonic()
        wait_until(
            lambda: stays.poll(timeout_ms=50) is not None and len(owned(stays)) == 12,
            timeout=30,
            interval=0,
            message="the remaining member taking over",
        )
        took = time.monotonic() - closed_at
        assert took < 5.0, "hand-over took %.1f s, as long as a session timeout" % took
    finally:
        stays.close()


KILLABLE_CONSUMER = textwrap.dedent(
    """
    import logging, sys, time
    from kafka import KafkaConsumer
    logging.basicConfig(level=logging.INFO)
    bootstrap, group, topic = sys.argv[1:4]
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id="py-victim",
                      session_timeout_ms=6000, heartbeat_interval_ms=500,
                      enable_auto_commit=False)
    # As consumer() does: the topic's metadata first (see there).
    deadline = time.monotonic() + 30
    while not c.partitions_for_topic(topic) and time.monotonic() < deadline:
        time.sleep(0.05)
    c.subscribe([topic])
    told = False
    while True:
        c.poll(timeout_ms=100)
        if c.assignment() and not told:
            print("assigned", len(c.assignment()), flush=True)
            told = True
    """
)


def test_a_killed_consumer_process_is_evicted_and_its_partitions_reassigned(
    broker_factory, tmp_path
):
    broker = broker_factory(settings=GROUP_SETTINGS)
    topic = unique_topic("victim")
    create_topic(broker, topic, 12)
    survivor = consumer(broker, "py-victims", topic)
    victim_log = tmp_path / "victim.stderr"
    with open(victim_log, "wb") as err:
        victim = subprocess.Popen(
            [sys.executable, "-c", KILLABLE_CONSUMER, broker.bootstrap, "py-victims", topic],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        try:
            wait_until(
                lambda: survivor.poll(timeout_ms=100) is not None and len(owned(survivor)) == 6,
                timeout=60,
                interval=0,
                message="the survivor sharing the partitions with the victim",
            )
        except AssertionError as e:
            state = "exited with %r" % victim.poll() if victim.poll() is not None else "running"
            tail = victim_log.read_bytes()[-4000:].decode(errors="replace")
            raise AssertionError("%s; the victim is %s, its stderr ends:\n%s" % (e, state, tail))
        assert victim.stdout.readline().startswith(b"assigned")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        wait_until(
            lambda: survivor.poll(timeout_ms=100) is not None and len(owned(survivor)) == 12,
            timeout=45,
            interval=0,
            message="the survivor taking over every partition",
        )
        took = time.monotonic() - killed_at
        # Evicted by the session timeout (6 s), not sooner: the process never said goodbye.
        assert took >= 4.0, "reassigned after %.1f s, before the session timeout" % took
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        survivor.close()


def first_offset(broker, group, topic):
    """Joins `group`, returns the offset of the first message it is given, and leaves."""
    c = consumer(broker, group, topic)
    try:
        found = wait_until(
            lambda: [r for rs in c.poll(timeout_ms=200).values() for r in rs],
            timeout=30,
            interval=0,
            message="a first message",
        )
        return found[0].offset
    finally:
        c.close()


def commit_at(broker, group, topic, offset):
    c = consumer(broker, group, topic)
    try:
        wait_until(
            lambda: c.poll(timeout_ms=100) is not None and owned(c) == [0],
            timeout=30,
            interval=0,
            message="an assignment",
        )
        c.commit({TopicPartition(topic, 0): OffsetAndMetadata(offset, "", -1)})
        # kafka-python 3.0 may answer committed() from an OffsetFetch it sent before the
        # commit; ask until a fresh one comes back.
        wait_until(lambda: c.committed(TopicPartition(topic, 0)) == offset, message="committed offset %d" % offset)
    finally:
        c.close()


def test_committed_offsets_survive_consumer_and_broker_restarts(broker_factory):
    broker = broker_factory(settings=GROUP_SETTINGS)
    topic = unique_topic("resume")
    create_topic(broker, topic, 1)
    produce(broker, topic, 100, 1)
    commit_at(broker, "py-resumers", topic, 40)
    assert first_offset(broker, "py-resumers", topic) == 40
    broker.restart(crash=True)
    assert first_offset(broker, "py-resumers", topic) == 40
    commit_at(broker, "py-resumers", topic, 70)
    broker.restart()
    assert first_offset(broker, "py-resumers", topic) == 70


def test_reset_offsets_moves_a_stopped_group_and_it_resumes_there(broker_factory):
    broker = broker_factory(settings=GROUP_SETTINGS)
    topic = unique_topic("reset")
    create_topic(broker, topic, 1)
    produce(broker, topic, 100, 1)
    commit_at(broker, "py-reset", topic, 100)

    def state():
        out = subprocess.run(
            [shardlog_binary(), "group", "list", "--bootstrap", broker.bootstrap],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return {row.split()[0]: row.split()[-1] for row in out.splitlines()[1:] if row.strip()}

    def reset(*target):
        # A member that just left has the group Empty at once; wait for it all the same.
        wait_until(lambda: state().get("py-reset") == "Empty", message="the group to be empty")
        cmd = [shardlog_binary(), "group", "reset-offsets", "--bootstrap", broker.bootstrap]
        cmd += ["py-reset", "--topic", topic] + list(target) + ["--execute"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr

    reset("--to-offset", "25")
    assert first_offset(broker, "py-reset", topic) == 25
    reset("--to-earliest")
    assert first_offset(broker, "py-reset", topic) == 0
    reset("--shift-by", "60")
    assert first_offset(broker, "py-reset", topic) == 60
