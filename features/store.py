"""Drive the Feast feature store: apply, materialize, training sets, online reads.

The definitions always come from ``feature_repo.definitions``; the store configuration from
``feature_repo/feature_store.yaml`` (SQLite) or ``feature_store.production.yaml`` (Redis);
the data, registry and SQLite file from the workspace ``features.repo_path``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    FileSource,
    OnDemandFeatureView,
)
from feast.errors import FeatureViewNotFoundException
from redis.exceptions import RedisError

from data.atomic import file_lock
from feature_repo import definitions
from feature_repo.registry_store import AtomicFileRegistryStore
from features.config import FeatureConfig

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What an online read raises when the store is down, hung (a timeout) or busy: a caller that
# can answer without it catches these, and nothing else.
STORE_ERRORS = (RedisError, sqlite3.Error, OSError, TimeoutError)


def open_store(cfg: FeatureConfig) -> FeatureStore:
    return FeatureStore(repo_path=str(cfg.repo_path), fs_yaml_file=cfg.store_yaml)


def feast_objects(repo_path: Path) -> list:
    """Every Feast object of ``feature_repo.definitions``, file sources under ``repo_path``.

    Source paths in the definitions are relative (``data/events.parquet``); the registry gets
    them resolved against the workspace, because not every Feast reader resolves relative
    paths (0.67's DuckDB store reads them from the current directory).
    """
    kinds = (Entity, FeatureView, OnDemandFeatureView, FeatureService)
    objects = [v for v in vars(definitions).values() if isinstance(v, kinds)]
    return [_anchored(o, Path(repo_path).resolve()) for o in objects]


def _anchored(obj, root: Path):
    if not isinstance(obj, FeatureView) or not isinstance(obj.batch_source, FileSource):
        return obj
    source = obj.batch_source
    if Path(source.path).is_absolute() or "://" in source.path:
        return obj
    anchored = copy.copy(obj)
    anchored.batch_source = copy.deepcopy(source)
    anchored.batch_source.file_options.uri = str(root / source.path)
    return anchored


def registry_lock(store: FeatureStore):
    """The lock every registry writer holds (apply, materialize): ``<registry>.lock`` beside it.

    Each writer reads the registry, changes it and writes it whole: two at once would lose one
    writer's change (and two materializations into SQLite would collide). A remote registry
    (``s3://``...) is locked in the workspace instead, for the writers of this workspace.
    """
    where = str(store.config.registry.path)
    path = Path(store.repo_path) / ("registry.db" if "://" in where else where)
    return file_lock(path.with_name(f"{path.name}.lock"))


def _check_registry_store(store: FeatureStore, log: Callable[[str], None]) -> None:
    kind = store.config.registry.registry_store_type
    if kind is None or not kind.endswith(AtomicFileRegistryStore.__name__):
        log(f"features: warning: registry {store.config.registry.path} is written in place "
            f"(registry_store_type {kind}): a reader can see a half-written file; set "
            f"registry_store_type: feature_repo.registry_store.{AtomicFileRegistryStore.__name__}")


def apply(store: FeatureStore, log: Callable[[str], None] = print) -> list[str]:
    """Register every object of ``feature_repo.definitions``, under the registry lock."""
    objects = feast_objects(store.repo_path)
    _check_registry_store(store, log)
    with registry_lock(store):
        store.refresh_registry()
        store.apply(objects)
    names = [o.name for o in objects]
    log(f"features: applied {len(names)} objects to project {store.project!r}: "
        f"{', '.join(names)}")
    return names


def materialize(
    store: FeatureStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    incremental: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, tuple[datetime, datetime]]:
    """Load offline rows in [start, end] into the online store.

    Full (default): every view over [start or 1970, end or now]. Incremental: each view from
    the end of its last materialized interval (or from 1970 when it has none) to ``end``.
    Older rows never replace newer online values (guarded on both SQLite and Redis). One
    materialize (or apply) at a time per registry: the registry lock is held throughout, and
    the registry is re-read under it.
    """
    end = end or datetime.now(UTC)
    windows: dict[str, tuple[datetime, datetime]] = {}
    _check_registry_store(store, log)
    began = time.perf_counter()
    with registry_lock(store):
        store.refresh_registry()
        for view in store.list_feature_views():
            if not view.online:  # offline-only (the event log): nothing to load
                continue
            view_start = start or EPOCH
            if incremental and view.most_recent_end_time is not None:
                view_start = view.most_recent_end_time
            if view_start >= end:
                log(f"features: {view.name} already materialized up to "
                    f"{view_start.isoformat()}")
                continue
            store.materialize(view_start, end, feature_views=[view.name])
            windows[view.name] = (view_start, end)
    log(f"features: materialized {len(windows)} view(s) up to {end.isoformat()} "
        f"in {time.perf_counter() - began:.1f}s")
    return windows


def training_set(
    store: FeatureStore, entity_df: pd.DataFrame, features: str | list[str] = "ranking_v1"
) -> pd.DataFrame:
    """Point-in-time-correct features for each (entity keys, event_timestamp) row.

    ``features`` is a feature-service name or a list of ``view:feature`` references. For
    services with the ``user_decay`` view, ``request_ts`` defaults to the row's timestamp.
    """
    if "event_timestamp" not in entity_df.columns:
        raise ValueError(
            f"entity frame needs an 'event_timestamp' column; has {list(entity_df.columns)}"
        )
    frame = entity_df.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    if "request_ts" not in frame.columns:
        frame["request_ts"] = frame["event_timestamp"].astype("int64") // 10**9
    refs = store.get_feature_service(features) if isinstance(features, str) else features
    result = store.get_historical_features(entity_df=frame, features=refs).to_df()
    # Feast returns rows in its own order; hand them back in the caller's.
    return result.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def online_features(
    store: FeatureStore,
    rows: Iterable[dict],
    features: str | list[str] | FeatureService = "retrieval_v1",
    request_ts: int | None = None,
) -> dict[str, list]:
    """Online features for entity rows (``{"user_id": 1}``...); columns as lists.

    ``features``: a service name, a FeatureService, or ``view:feature`` references. Hot paths
    should pass a FeatureService fetched once: each lookup by name builds a new object, and
    Feast recompiles an on-demand view for every new object (~15 ms per call here).
    """
    now = int(request_ts if request_ts is not None else time.time())
    entity_rows = [{"request_ts": now, **row} for row in rows]
    refs = store.get_feature_service(features) if isinstance(features, str) else features
    return store.get_online_features(features=refs, entity_rows=entity_rows).to_dict()


def schema_hash(store: FeatureStore, service: str) -> str:
    """sha256 of a feature service's contract: views, features and types, entity keys.

    A model records the hash of the service it was trained on; serving refuses a model whose
    hash differs from the store it is pointed at.
    """
    fs = store.get_feature_service(service)
    contract = []
    for projection in sorted(fs.feature_view_projections, key=lambda p: p.name):
        view = _any_view(store, projection.name)
        keys = sorted(getattr(view, "join_keys", None) or
                      [c.name for c in getattr(view, "entity_columns", [])])
        contract.append({
            "view": projection.name,
            "keys": keys,
            "features": sorted((f.name, str(f.dtype)) for f in projection.features),
        })
    blob = json.dumps({"service": service, "contract": contract}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _any_view(store: FeatureStore, name: str):
    try:
        return store.get_feature_view(name)
    except FeatureViewNotFoundException:  # an on-demand view lives in its own registry list
        return store.get_on_demand_feature_view(name)
