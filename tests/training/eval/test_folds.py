"""The regenerated u1..u5 folds are MovieLens-100K's official ones (mku.sh), byte for byte."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from training.eval.folds import (
    NUM_FOLDS,
    TEST_LINES,
    fold_lines,
    official_folds,
    read_lines,
    write_folds,
)


def _mku(u_data, number: int) -> tuple[bytes, bytes]:
    """(base, test) bytes of fold ``number`` from the shell pipeline of mku.sh."""
    sort = "LC_ALL=C sort -t\"$(printf '\\t')\" -k1,1n -k2,2n"
    head, rest = (number - 1) * 20000, 100000 - number * 20000
    test = f"head -n {number * 20000} '{u_data}' | tail -n 20000 | {sort}"
    base = (f"{{ head -n {head} '{u_data}'; tail -n {rest} '{u_data}'; }} | {sort}"
            if rest else f"head -n {head} '{u_data}' | {sort}")
    run = [subprocess.run(["bash", "-c", cmd], check=True, capture_output=True).stdout
           for cmd in (base, test)]
    return run[0], run[1]


def test_folds_partition_u_data_into_disjoint_20000_line_test_sets(datasets):
    lines = read_lines(datasets / "ml-100k" / "u.data")
    all_tests: Counter[str] = Counter()
    for number in range(1, NUM_FOLDS + 1):
        base, test = fold_lines(lines, number)
        assert len(test) == TEST_LINES and len(base) == len(lines) - TEST_LINES
        assert not set(base) & set(test)
        assert Counter(base) + Counter(test) == Counter(lines)
        all_tests.update(test)
    assert all_tests == Counter(lines)  # every line is tested exactly once over the five folds
    with pytest.raises(ValueError, match="fold number 6"):
        fold_lines(lines, 6)


def test_written_folds_match_the_mku_sh_pipeline_byte_for_byte(datasets, tmp_path):
    u_data = datasets / "ml-100k" / "u.data"
    write_folds(u_data, tmp_path)
    for number in range(1, NUM_FOLDS + 1):
        base, test = _mku(u_data, number)
        assert (tmp_path / f"u{number}.test").read_bytes() == test, f"u{number}.test"
        assert (tmp_path / f"u{number}.base").read_bytes() == base, f"u{number}.base"


def test_parsed_folds_keep_ids_and_ratings(datasets):
    folds = official_folds(datasets / "ml-100k" / "u.data")
    first = folds[0]
    assert [len(f.test) for f in folds] == [TEST_LINES] * NUM_FOLDS
    assert len(first.base) == 80_000
    assert first.test.users.min() >= 1 and first.test.items.max() <= 1682
    assert set(first.test.ratings.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
