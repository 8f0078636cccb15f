"""Helpers shared by the test modules: the repository root, free ports, bounded waiting, a
redis-server to break.

Import as ``from tests.helpers import ...``: ``tests`` is a namespace package found through
pyproject's ``pythonpath = ["."]`` (no ``__init__.py``, so ``tests/training`` never shadows
the ``training`` package).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


# Below the kernel's ephemeral range (32768-60999), whose ports any outgoing connection (Ray
# opens many) may take between the pick and the listen; above Ray's worker ports (10002-19999).
PORTS = range(20_000, 32_768)


def free_port() -> int:
    """A TCP port that nothing uses right now on any interface (the gRPC proxy binds [::]),
    outside the range the kernel hands to outgoing connections."""
    for port in random.sample(PORTS, 200):
        try:
            if socket.has_ipv6:
                with socket.socket(socket.AF_INET6) as v6:
                    v6.bind(("::", port))
            with socket.socket() as v4:
                v4.bind(("0.0.0.0", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port in {PORTS}")


def wait_until(predicate: Callable[[], T], timeout_s: float, message: str, *,
               interval_s: float = 0.05,
               ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns something truthy; return that.

    Fails the test after ``timeout_s`` seconds with "gave up ... waiting for <message>" (and
    the last ignored error, if any). Exceptions of the ``ignore`` types count as "not yet";
    any other exception (an assertion that the awaited process is still alive, say) ends the
    wait at once.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            error = f" (last error: {last!r})" if last is not None else ""
            pytest.fail(f"gave up after {timeout_s:g} s waiting for {message}{error}")
        time.sleep(interval_s)


class RedisProcess:
    """A real ``redis-server`` on a free loopback port that a test can stop, pause and restart.

    ``stop`` saves the data first (SAVE) and ``start`` loads it back, as a restarted Redis with
    persistence would; ``pause``/``resume`` are SIGSTOP/SIGCONT: a hung server that keeps its
    connections open.
    """

    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server")
        assert self.binary, "redis-server is not installed: run `make setup`"
        self.directory, self.port = directory, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def answers() -> bool:
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            return self.client().ping()

        wait_until(answers, 10, f"redis-server to answer PING on port {self.port}",
                   ignore=(redis.ConnectionError, redis.BusyLoadingError))

    def stop(self) -> None:
        self.client().save()
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(timeout=10)


def replica_pids(app: str, stage: str) -> list[int]:
    """Live Serve replica processes of ``stage`` of ``app``, by their process title
    (``ray::ServeReplica:<app>:<stage>``)."""
    title = f"ray::ServeReplica:{app}:{stage}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cmdline").read_bytes().split(b"\0")[0].startswith(title):
                found.append(int(proc.name))
        except (OSError, ValueError):  # not a process, or it exited meanwhile
            continue
    return found


@contextmanager
def redis_env(connection: str | None):
    """REDIS_CONNECTION_STRING set to ``connection`` (unchanged when None) inside."""
    previous = os.environ.get("REDIS_CONNECTION_STRING")
    if connection is not None:
        os.environ["REDIS_CONNECTION_STRING"] = connection
    try:
        yield
    finally:
        if connection is not None:
            os.environ.pop("REDIS_CONNECTION_STRING")
            if previous is not None:
                os.environ["REDIS_CONNECTION_STRING"] = previous


class RequestStream:
    """``recommend`` for user 42 back to back in a thread: the model tag of every answer in
    ``seen``, every exception in ``failures``. A context manager: stops and joins on exit."""

    def __init__(self, client) -> None:
        self.client = client
        self.seen: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._run)

    def _run(self) -> None:
        from ray_apps.schemas import RecommendRequest

        while not self.stop.is_set():
            try:
                self.seen.append(self.client.recommend(RecommendRequest(user_id=42, n=5)).model)
            except Exception as exc:  # noqa: BLE001 (every failure is what we count)
                self.failures.append(repr(exc))

    def wait_for(self, more: int, timeout_s: float, what: str) -> None:
        """Until ``more`` answers beyond those seen now (or a failure)."""
        after = len(self.seen)
        wait_until(lambda: len(self.seen) >= after + more or self.failures, timeout_s, what)

    def __enter__(self) -> RequestStream:
        self.worker.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.worker.join(timeout=60)  # the request in flight ends within the client's 30 s
