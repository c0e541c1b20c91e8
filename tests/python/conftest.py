"""Shared fixtures for the shardlog Python-client test suite.

The broker binary is taken from the SHARDLOG_BIN environment variable (the Rust
integration test that launches pytest sets it).  Every broker started here
listens on 127.0.0.1 with an ephemeral port, keeps its log in a per-test
temporary directory, and is always stopped by a finalizer (SIGTERM, then
SIGKILL if it does not exit in time).

Environment knobs:
    SHARDLOG_BIN          path to the `shardlog` binary (required to run tests)
    SHARDLOG_TEST_CORES   value for `--cores` (default: min(2, cpu count))
"""

import atexit
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

READY_RE = re.compile(r"^shardlog: listening on 127\.0\.0\.1:(\d+)\s*$")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

# Every broker process ever started by this session; the atexit hook makes
# sure none outlives pytest even on KeyboardInterrupt or internal errors.
_ALL_BROKERS = []


def _kill_leftovers():
    for b in _ALL_BROKERS:
        b.kill()


atexit.register(_kill_leftovers)


def _default_cores():
    env = os.environ.get("SHARDLOG_TEST_CORES")
    if env:
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


def shardlog_binary():
    path = os.environ.get("SHARDLOG_BIN")
    if not path:
        pytest.fail(
            "SHARDLOG_BIN is not set: point it at the built `shardlog` binary "
            "(e.g. SHARDLOG_BIN=target/debug/shardlog tests/python/run.sh)",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("SHARDLOG_BIN=%r is not an executable file" % path, pytrace=False)
    return os.path.abspath(path)


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """One shardlog broker process.

    `log_dir` survives restarts, so data written before `restart()` must be
    readable afterwards.  `settings` are extra `--set key=value` pairs.
    """

    def __init__(self, binary, log_dir, run_dir, cores=None, settings=None):
        self.binary = binary
        self.log_dir = str(log_dir)
        self.run_dir = str(run_dir)
        self.cores = _default_cores() if cores is None else cores
        self.settings = dict(settings or {})
        self.proc = None
        self.port = None
        self.generation = 0
        self.exit_codes = []  # return codes of every stopped incarnation
        self._stderr_path = None
        self._stderr_file = None
        self._stdout_lines = []
        os.makedirs(self.log_dir, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        _ALL_BROKERS.append(self)

    # ----------------------------------------------------------------- info
    @property
    def bootstrap(self):
        assert self.port is not None, "broker is not running"
        return "127.0.0.1:%d" % self.port

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, max_chars=6000):
        if not self._stderr_path or not os.path.exists(self._stderr_path):
            return ""
        with open(self._stderr_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_chars))
            return f.read().decode("utf-8", "replace")

    # ------------------------------------------------------------ lifecycle
    def command(self, port=0):
        cmd = [
            self.binary,
            "broker",
            "--set",
            "listeners=PLAINTEXT://127.0.0.1:%d" % port,
            "--set",
            "log.dirs=%s" % self.log_dir,
        ]
        if self.cores:
            cmd += ["--cores", str(self.cores)]
        for k, v in self.settings.items():
            cmd += ["--set", "%s=%s" % (k, v)]
        return cmd

    def start(self, port=0, timeout=START_TIMEOUT_S):
        assert not self.running, "broker already running"
        self.generation += 1
        self._stderr_path = os.path.join(self.run_dir, "stderr.%d.log" % self.generation)
        self._stderr_file = open(self._stderr_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        cmd = self.command(port)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            cwd=self.run_dir,
            env=env,
            start_new_session=True,  # a Ctrl-C to pytest must not hit the broker first
        )
        lines = queue.Queue()
        proc = self.proc

        def drain():
            # Keep reading stdout for the whole life of the process so that the
            # broker can never block on a full pipe.
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stdout_lines.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, name="shardlog-stdout", daemon=True).start()

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise BrokerStartError(
                    "shardlog did not print its ready line within %.0fs\ncmd: %s\n"
                    "stdout: %r\nstderr tail:\n%s"
                    % (timeout, " ".join(cmd), self._stdout_lines, self.stderr_tail())
                )
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process exited
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._sigkill(proc)
                rc = proc.returncode
                self._finish(proc)
                self.exit_codes.append(rc)
                raise BrokerStartError(
                    "shardlog exited (rc=%s) before becoming ready\ncmd: %s\n"
                    "stdout: %r\nstderr tail:\n%s"
                    % (rc, " ".join(cmd), self._stdout_lines, self.stderr_tail())
                )
            m = READY_RE.match(line)
            if m:
                self.port = int(m.group(1))
                assert self.port > 0, line
                if port:
                    assert self.port == port, "asked for port %d, got %r" % (port, line)
                return self

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM and wait; SIGKILL if it does not exit in time.

        Returns the exit code (negative = killed by that signal)."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._sigkill(proc)
        rc = proc.returncode
        self._finish(proc)
        self.exit_codes.append(rc)
        return rc

    def kill(self):
        """SIGKILL (a crash, from the broker's point of view)."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            self._sigkill(proc)
        rc = proc.returncode
        self._finish(proc)
        self.exit_codes.append(rc)
        return rc

    @staticmethod
    def _sigkill(proc):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _finish(self, proc):
        self.proc = None
        self.port = None
        try:
            proc.stdout.close()
        except Exception:
            pass
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def restart(self, same_port=False, crash=False):
        """Stop (SIGTERM, or SIGKILL with crash=True) and start again on the
        same log.dirs.  The port changes unless same_port=True.  Returns the
        exit code of the stopped incarnation."""
        old_port = self.port
        rc = self.kill() if crash else self.stop()
        self.start(port=old_port if same_port else 0)
        return rc


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def broker_factory(request, tmp_path):
    """Callable starting a (further) broker: factory(settings={...}, cores=N,
    start=True).  All brokers are stopped at the end of the test; a broker
    that does not exit 0 on SIGTERM is reported as a teardown error."""
    brokers = []

    def make(settings=None, cores=None, start=True, name=None):
        name = name or "broker%d" % len(brokers)
        b = Broker(
            shardlog_binary(),
            log_dir=tmp_path / name / "data",
            run_dir=tmp_path / name,
            cores=cores,
            settings=settings,
        )
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    problems = []
    for b in brokers:
        was_running = b.running
        died = b.proc is not None and not was_running
        rc = b.stop()
        if died:
            problems.append("broker exited on its own with rc=%s" % rc)
        elif was_running and rc != 0:
            problems.append("broker exited with rc=%s after SIGTERM (expected 0)" % rc)
    failed = any(
        getattr(request.node, "rep_" + w, None) is not None
        and getattr(request.node, "rep_" + w).failed
        for w in ("setup", "call")
    )
    if failed or problems:
        for i, b in enumerate(brokers):
            sys.stderr.write(
                "\n----- shardlog broker %d (%s) stderr tail -----\n%s\n"
                % (i, b.run_dir, b.stderr_tail())
            )
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def broker(broker_factory):
    """A fresh single broker for this test."""
    return broker_factory()


# --------------------------------------------------------------- helpers
def unique_topic(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def _client_errors():
    errs = []
    try:
        from kafka.errors import KafkaError as KpError

        errs.append(KpError)
    except ImportError:
        pass
    try:
        from confluent_kafka import KafkaException as CkError

        errs.append(CkError)
    except ImportError:
        pass
    return tuple(errs)


def wait_until(predicate, timeout=15.0, interval=0.2, message="condition"):
    """Poll `predicate` until it returns a truthy value (which is returned) or
    the deadline passes (AssertionError with the last value / exception).
    Client (Kafka) errors are retried; any other exception (a decoding error,
    a bug) propagates at once."""
    retry_on = _client_errors()
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except retry_on as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, message, last))
        time.sleep(interval)
