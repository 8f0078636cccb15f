"""``irec run``'s demo plan on real ingested data: what it shows, skips and warns about."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from data.config import IngestConfig
from data.ingest import ingest, read_manifest
from feature_repo.definitions import BEHAVIOUR_TTL
from irec.config import PlatformConfig
from irec.demo import QUERY, plan

TTL_S = BEHAVIOUR_TTL.total_seconds()
NOW = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def movielens(ml100k_workspace) -> dict:
    return read_manifest(ml100k_workspace.data_dir)


@pytest.fixture(scope="module")
def video_games(tmp_path_factory, datasets) -> dict:
    """The SASRec video-games sequences: ids only, no genres, no text, synthetic times."""
    data = tmp_path_factory.mktemp("video-games") / "data"
    ingest(IngestConfig(format="sasrec", path=datasets / "amazon-video-games" / "Video.txt"),
           data, log=lambda _: None)
    return read_manifest(data)


def _cfg(clock) -> PlatformConfig:
    return PlatformConfig.load("configs/tiny.yaml", {"serving.clock": clock})


def test_movielens_replayed_as_of_its_end_gets_the_whole_demo(movielens):
    demo = plan(movielens, _cfg("dataset_end"), [1, 2, 3], TTL_S, now=NOW)
    assert (demo.users, demo.query, demo.notes, demo.warnings) == ([1, 2, 3], QUERY, [], [])


def test_old_data_under_the_wall_clock_is_named_with_its_fix(movielens):
    demo = plan(movielens, _cfg("wall"), [1, 2, 3], TTL_S, now=NOW)
    assert len(demo.warnings) == 1, demo.warnings
    warning = demo.warnings[0]
    end = pd.Timestamp(movielens["time_range"][1])
    assert f"({end:%Y-%m-%d})" in warning and "365-day history TTL" in warning
    assert f"{(NOW - end.to_pydatetime()).days:,} days" in warning
    assert "clock: dataset_end" in warning and "cold start" in warning


def test_a_pinned_clock_within_the_ttl_is_not_warned_about(movielens):
    end = int(pd.Timestamp(movielens["time_range"][1]).timestamp())
    assert plan(movielens, _cfg(end + 30 * 86_400), [1], TTL_S).warnings == []
    late = plan(movielens, _cfg(end + 400 * 86_400), [1], TTL_S).warnings
    assert len(late) == 1 and f"serving.clock {end + 400 * 86_400}" in late[0]


def test_a_dataset_without_genres_or_text_skips_the_query_and_says_why(video_games):
    assert not video_games["has_genres"] and not video_games["has_text"]
    demo = plan(video_games, _cfg("dataset_end"), [1, 2, 3], TTL_S, now=NOW)
    assert demo.query is None and demo.users == [1, 2, 3]
    assert demo.notes == ["demo: no free-text query: the items carry no genres and item "
                          "text, so the model has no intent a query could steer"]


def test_users_the_data_does_not_have_are_left_out_with_a_note(movielens):
    demo = plan(movielens, _cfg("dataset_end"), [1, 5000, 943, 0], TTL_S)
    assert demo.users == [1, 943]
    assert demo.notes == ["demo: users [0, 5000] are not in the data (943 users); left out"]
