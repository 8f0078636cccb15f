"""Feature pipeline: build Feast source tables from ingested data and drive the feature store.

Feast is imported only inside this package (and ``feature_repo/``, which ``features.store``
loads), so this module runs first in every process that reads features: the CLI, the training
pipeline and its Ray Train workers, the Serve replicas and the Bento.

Feast 0.67 decorates its definition classes (``FeatureView``, ``Entity``, ``FeatureService``,
data sources, ...) with typeguard's ``@typechecked``, which re-parses and recompiles their
source when ``feast`` is imported: 8-12 s of CPU in every such process on a 2-core box, more
than half of a Serve replica's start-up (``python benchmarks/import_time.py``). typeguard's
own off switch is ``python -O``, which would also strip every ``assert`` and needs optimized
bytecode caches; instead the decorator is made a no-op before Feast is imported. Feast's
definitions then skip its run-time argument type checks; ours are built from validated
pydantic config and covered by the feature tests.
"""

from __future__ import annotations

from typing import Any

import typeguard


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """``typeguard.typechecked`` without the instrumentation: returns its target unchanged."""
    return _unchecked if target is None else target


typeguard.typechecked = _unchecked
