"""The ingest section of the platform config: where the raw interactions come from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """A config model that refuses unknown keys (a typo is an error, never a silent default)."""

    model_config = ConfigDict(extra="forbid")


class IngestConfig(StrictModel):
    """Where the raw interactions come from and how to read them."""

    format: Literal["movielens-100k", "sasrec", "generic"] = "movielens-100k"
    # movielens-100k: the folder holding u.data/u.item/u.user (None: download the official
    # archive); sasrec: the `<user> <item>` file; generic: the interactions CSV or parquet file.
    path: Path | None = None
    # generic only: optional items (item_id,title[,genres][,text]) and users files.
    items_path: Path | None = None
    users_path: Path | None = None
    # Ratings outside [rating_min, rating_max] are rejected with the line that holds them.
    rating_min: float = 1.0
    rating_max: float = 5.0
    # Events stamped later than now plus this many seconds are refused (the error names how
    # many, the first such line and the bound): a wrong clock or unit, never real data. The
    # allowance covers clock skew between the machines that log events and the one ingesting.
    max_future_skew_s: float = Field(300.0, ge=0)
    # Keep the ids of the previous ingest into the same folder and number only new raw ids
    # after them (an append-only id map: models trained before keep naming the same items).
    # false: number every id afresh (another dataset in the same folder).
    keep_ids: bool = True
    # Where a downloaded MovieLens archive is cached.
    download_dir: Path = Path.home() / ".cache" / "irec" / "datasets"

    @model_validator(mode="after")
    def _range(self) -> IngestConfig:
        if self.rating_min >= self.rating_max:
            raise ValueError(
                f"rating_min={self.rating_min} must be below rating_max={self.rating_max}"
            )
        return self
