"""MovieLens-100K's official five-fold rating splits (u1..u5), regenerated from ``u.data``.

The GroupLens release builds them with its ``mku.sh`` script::

    head -20000 u.data | sort -t"<tab>" -k 1,1n -k 2,2n > u1.test
    tail -80000 u.data | sort -t"<tab>" -k 1,1n -k 2,2n > u1.base
    head -40000 u.data | tail -20000 | sort ... > u2.test
    head -20000 u.data > tmp; tail -60000 u.data >> tmp; sort ... tmp > u2.base
    ... (u3, u4, u5 the same, 20,000 lines further each time)

so for fold i (1..5) the test set is lines (i-1)*20000+1 .. i*20000 of ``u.data`` in file
order and the base set is the other 80,000 lines, both sorted by user id then item id
(numerically). The five test sets are disjoint and together are exactly ``u.data``. Since the
(user, item) pairs of ``u.data`` are unique, that sort is total and the files written here are
byte-for-byte those of ``mku.sh`` (checked against the shell pipeline in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_FOLDS = 5
TEST_LINES = 20_000
TOTAL_LINES = NUM_FOLDS * TEST_LINES


@dataclass(frozen=True)
class Ratings:
    """Rating triples as parallel arrays; ids are the raw MovieLens ids (users 1..943,
    items 1..1682), so every fold shares one id space."""

    users: np.ndarray  # (N,) int64
    items: np.ndarray  # (N,) int64
    ratings: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.ratings)

    def subset(self, rows: np.ndarray) -> Ratings:
        return Ratings(self.users[rows], self.items[rows], self.ratings[rows])


@dataclass(frozen=True)
class Fold:
    number: int  # 1..5: u<number>.base / u<number>.test
    base: Ratings
    test: Ratings


def read_lines(u_data: Path) -> list[str]:
    """The lines of ``u.data`` (newline kept), checked to be the 100,000 of the release."""
    with open(u_data, encoding="latin-1", newline="") as f:
        lines = f.readlines()
    if len(lines) != TOTAL_LINES:
        raise ValueError(f"{u_data}: {len(lines)} lines, expected {TOTAL_LINES} "
                         "(the MovieLens-100K u.data)")
    return lines


def _sort_key(line: str) -> tuple[int, int]:
    fields = line.split("\t")
    return int(fields[0]), int(fields[1])


def fold_lines(lines: list[str], number: int) -> tuple[list[str], list[str]]:
    """(base, test) lines of fold ``number`` (1..5), sorted as ``mku.sh`` sorts them."""
    if not 1 <= number <= NUM_FOLDS:
        raise ValueError(f"fold number {number} is outside 1..{NUM_FOLDS}")
    if len(lines) != TOTAL_LINES:
        raise ValueError(f"{len(lines)} lines, expected {TOTAL_LINES}")
    lo, hi = (number - 1) * TEST_LINES, number * TEST_LINES
    test = sorted(lines[lo:hi], key=_sort_key)
    base = sorted(lines[:lo] + lines[hi:], key=_sort_key)
    return base, test


def parse(lines: list[str]) -> Ratings:
    """Parse ``user<TAB>item<TAB>rating<TAB>timestamp`` lines into arrays."""
    table = np.array([line.split("\t")[:3] for line in lines], dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 3:
        raise ValueError(f"expected 3+ tab-separated fields per line, got shape {table.shape}")
    bad = np.flatnonzero((table[:, 2] < 1) | (table[:, 2] > 5))
    if bad.size:
        raise ValueError(f"line {bad[0] + 1}: rating {table[bad[0], 2]} is outside 1..5")
    return Ratings(table[:, 0], table[:, 1], table[:, 2].astype(np.float32))


def official_folds(u_data: Path) -> list[Fold]:
    """The five official folds u1..u5, parsed."""
    lines = read_lines(Path(u_data))
    folds = []
    for number in range(1, NUM_FOLDS + 1):
        base, test = fold_lines(lines, number)
        folds.append(Fold(number, parse(base), parse(test)))
    return folds


def write_folds(u_data: Path, out_dir: Path) -> list[Path]:
    """Write u1.base, u1.test .. u5.base, u5.test into ``out_dir``; returns the paths."""
    lines = read_lines(Path(u_data))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for number in range(1, NUM_FOLDS + 1):
        for suffix, part in zip(("base", "test"), fold_lines(lines, number), strict=True):
            path = out_dir / f"u{number}.{suffix}"
            with open(path, "w", encoding="latin-1", newline="") as f:
                f.writelines(part)
            written.append(path)
    return written
