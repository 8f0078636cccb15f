"""Which tags move, and resolution outside a Serve replica (the live pin is tested in
test_rollout.py, on the running app)."""

from __future__ import annotations

import pytest

from ray_apps.pins import moving, resolve


@pytest.mark.parametrize(("tag", "expected"), [
    ("champion", True), ("interest", True), ("interest:latest", True),
    ("interest:q4ufmtbk3o6ygsoa", False),
])
def test_moving_tags(tag, expected):
    assert moving(tag) is expected


def test_outside_a_replica_every_resolution_is_fresh():
    answers = iter(["interest:a", "interest:b"])
    assert [resolve("champion", lambda tag: next(answers)) for _ in range(2)] == \
        ["interest:a", "interest:b"]
