"""Crash-safe file writes and an inter-process lock, for every layer that writes shared files.

A file is written under a temporary name in its own folder (``.<name>.<random>.tmp``), flushed
to disk (fsync), renamed over its target, and the folder fsynced: a crash at any point leaves
the old file or the new one, never a torn one. ``StagedFiles`` does the same for a set of files
that must change together (a dataset's tables and its manifest): every file is staged first,
the renames are recorded in a journal, and ``recover`` completes them after a crash, so
readers see the whole old set or the whole new one. ``file_lock`` is an ``fcntl.flock`` on a
lock file beside what it guards; the kernel drops it when its process dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """A new empty file beside ``path`` (``.<name>.<random>.tmp``), for staging its content.

    Its mode is what a plain ``open(path, "w")`` would give (0o666 less the umask), not
    mkstemp's 0o600: other users (a serving pod's uid) must read the published file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (before renaming a whole folder into place)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync(Path(folder) / name)
        fsync(Path(folder))


def publish(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it onto ``path`` and fsync the folder: the new file is durable."""
    fsync(tmp)
    os.replace(tmp, path)
    fsync(Path(path).parent)


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; published onto ``path`` on a clean exit."""
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with staged(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    write_bytes(path, text.encode())


def remove_stale_temps(folder: Path, names: list[str]) -> list[Path]:
    """Delete temporary files left by a crashed writer of ``names`` in ``folder``.

    Call it only while holding the lock of every writer of those names.
    """
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class StagedFiles:
    """Files of one folder staged under temporary names and published together.

    ``stage(name)`` gives the temporary path to write ``name`` to; ``commit()`` publishes all
    of them in staging order (put the file that describes the others last). Leaving the
    ``with`` block without a commit deletes what was staged.
    """

    def __init__(self, folder: Path, journal: str) -> None:
        self.folder = Path(folder)
        self.journal = self.folder / journal
        self.renames: dict[str, str] = {}

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for tmp in self.renames:
            (self.folder / tmp).unlink(missing_ok=True)

    def stage(self, name: str) -> Path:
        tmp = temp_path(self.folder / name)
        self.renames[tmp.name] = name
        return tmp

    def commit(self) -> None:
        """fsync every staged file, journal the renames, then rename them all."""
        for tmp in self.renames:
            fsync(self.folder / tmp)
        self.write_journal()
        recover(self.folder, self.journal.name)
        self.renames = {}

    def write_journal(self) -> None:
        """Record the renames; from here on a crash is completed by ``recover``."""
        write_text(self.journal, json.dumps({"renames": self.renames}))


def recover(folder: Path, journal: str) -> bool:
    """Complete the renames a journal records (after a crash, or as the commit); True if any.

    Call it only while holding the lock of the folder's writers.
    """
    folder = Path(folder)
    path = folder / journal
    if not path.exists():
        return False
    renames = json.loads(path.read_text())["renames"]
    for tmp, name in renames.items():
        if (folder / tmp).exists():
            os.replace(folder / tmp, folder / name)
    fsync(folder)
    path.unlink()
    fsync(folder)
    return True


class LockTimeout(TimeoutError):
    """Another process held a lock for longer than the caller would wait."""


@contextmanager
def file_lock(path: Path, timeout_s: float | None = None, poll_s: float = 0.05) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing) for the block.

    ``timeout_s`` None waits as long as it takes; otherwise LockTimeout after that long.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if timeout_s is None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"{path}: still locked by another process after {timeout_s}s"
                        ) from None
                    time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
