"""Helpers shared by the test modules: the repository root, free ports, bounded waiting.

Import as ``from tests.helpers import ...``: ``tests`` is a namespace package found through
pyproject's ``pythonpath = ["."]`` (no ``__init__.py``, so ``tests/training`` never shadows
the ``training`` package).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
