"""Model and store agreement: the id map is checked, unknown history ids are dropped."""

from __future__ import annotations

import asyncio
import sqlite3

import pandas as pd
import pytest

from features.store import STORE_ERRORS, open_store
from ray_apps.models import ContractError, Refreshed, check_data
from ray_apps.retrieval import known_history


def test_a_model_whose_id_map_disagrees_with_the_store_is_refused(untrained, ml100k_workspace):
    _, _, items, _ = untrained
    store = open_store(ml100k_workspace)
    check_data(items, {"dataset_fingerprint": "0" * 64}, store, "interest:agrees")
    with pytest.raises(ContractError, match=r"trained on dataset 000000000000\.\.\., the "
                                            r"feature store .* holds [0-9a-f]{12}\.\.\."):
        check_data(items, {"dataset_fingerprint": "0" * 64}, store, "interest:older", "refuse")
    swapped = items.copy()
    swapped.loc[swapped.item_id == 1, "raw_item_id"] = "not-the-same-item"
    with pytest.raises(ContractError, match=r"disagree on 1 of 1682 item ids \(item 1: model "
                                            r"'not-the-same-item', store '1'\)"):
        check_data(swapped, {}, store, "interest:swapped")
    beyond = pd.concat([items, pd.DataFrame([{"item_id": 99_999, "raw_item_id": "new",
                                              "title": "", "genres": []}])])
    with pytest.raises(ContractError, match="item 99999: model 'new', store no such item"):
        check_data(beyond, {}, store, "interest:bigger")


def test_history_ids_the_model_does_not_know_are_dropped_in_order():
    ids, stamps, ratings, dropped = known_history(
        100, [5, 101, 7, 0, 250, 100], [1, 2, 3, 4, 5, 6], [4.0, 5.0, None, 1.0, 2.0, 3.0])
    assert (ids, stamps, ratings, dropped) == ([5, 7, 100], [1, 3, 6], [4.0, None, 3.0], 3)
    assert known_history(10, [], [], []) == ([], [], [], 0)


def test_a_refreshed_value_is_reread_in_the_background_and_kept_while_the_store_fails():
    reads = iter([1, 2, sqlite3.OperationalError("database is locked"), 4])

    def read() -> int:
        value = next(reads)
        if isinstance(value, Exception):
            raise value
        return value

    async def run() -> list[int]:
        value = Refreshed(read, 0, STORE_ERRORS)
        seen = [await value.load(), value.get(ttl_s=60)]  # fresh: no re-read
        seen.append(value.get(ttl_s=0))  # stale: the old value now, a re-read behind it
        await value.refreshing
        seen.append(value.get(ttl_s=60))
        value.get(ttl_s=0)
        await value.refreshing  # the store fails: the last value stays
        seen.append(value.get(ttl_s=60))
        value.get(ttl_s=0)
        await value.refreshing
        seen.append(value.get(ttl_s=60))
        return seen

    assert asyncio.run(run()) == [1, 1, 1, 2, 2, 4]
