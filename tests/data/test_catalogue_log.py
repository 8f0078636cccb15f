"""The catalogue log: added items written whole, read once per raw id (the last row)."""

from __future__ import annotations

import pandas as pd

from data.catalogue_log import CatalogueLog, NewItem
from data.schema import ITEM_COLUMNS


def test_added_items_read_back_once_per_raw_id_with_the_last_text(tmp_path):
    log = CatalogueLog(tmp_path / "catalogue_log")
    day = 1_764_720_000.0  # 2025-12-03 00:00 UTC
    first = NewItem(item_id=1683, raw_item_id="opera", title="Starfall", genres=("Sci-Fi",),
                    text="A space opera", timestamp=day + 60)
    other = NewItem(item_id=1684, raw_item_id="western", title="Dust", year=2025,
                    timestamp=day + 86_400 + 5)
    files = log.append([first, other])
    assert sorted(p.parent.name for p in files) == ["date=2025-12-03", "date=2025-12-04"]
    log.append([NewItem(item_id=1683, raw_item_id="opera", title="Starfall",
                        genres=("Sci-Fi",), text="A space opera, corrected", timestamp=day)])
    read = log.read()
    assert list(read.columns) == ITEM_COLUMNS and read.item_id.tolist() == [1683, 1684]
    opera, western = read.iloc[0], read.iloc[1]
    assert opera.text == "A space opera, corrected" and list(opera.genres) == ["Sci-Fi"]
    assert pd.isna(opera.year) and western.year == 2025 and list(western.genres) == []
    assert CatalogueLog(tmp_path / "empty").read().empty
