"""Moving model tags (``champion``, ``name:latest``, a bare ``name``) pinned once per app.

A Serve config that names a moving tag (the chart's default ``serving.modelTag: champion``, a
hand-written ``serve run`` config) is resolved by the replicas themselves. Unpinned, a replica
restarted after a nightly promote would load the new champion while its peers serve the old
one. So the first replica of an app to resolve a moving tag records the concrete tag in the Ray
cluster's key-value store (GCS), under the app's name, and every later resolution in that app,
a restarted replica's included, reads that record back (the first writer wins a race).

A replica that loads a concrete tag (a rollout: ``irec rollout`` and ``deploy`` always write
one) clears its app's pins, so a config that names ``champion`` again later resolves the
champion of that moment, not a stale pin. Pins live as long as the cluster's GCS (with GCS
fault tolerance, across head restarts); a new Ray cluster (KubeRay's upgrade of
``rayClusterConfig``) resolves afresh. Outside a Serve replica a tag is resolved directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ray import serve
from ray.experimental import internal_kv
from ray.serve.exceptions import RayServeException

LOG = logging.getLogger("ray.serve")

NAMESPACE = "irec-pins"


def moving(tag: str) -> bool:
    """Whether ``tag`` can name a different version tomorrow."""
    return tag == "champion" or ":" not in tag or tag.endswith(":latest")


def _app_name() -> str | None:
    try:
        return serve.get_replica_context().app_name
    except RayServeException:
        return None


def resolve(tag: str, concrete: Callable[[str], str]) -> str:
    """``tag`` as the concrete tag this app serves; ``concrete`` resolves a tag afresh."""
    app = _app_name()
    if app is None:
        return concrete(tag)
    prefix = f"{app}/"
    if not moving(tag):
        internal_kv._internal_kv_del(prefix, del_by_prefix=True, namespace=NAMESPACE)
        return concrete(tag)
    key = prefix + tag
    pinned = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
    if pinned is None:
        resolved = concrete(tag)
        internal_kv._internal_kv_put(key, resolved, overwrite=False, namespace=NAMESPACE)
        pinned = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
        LOG.info("app %s: model_tag %r pinned to %s", app, tag, pinned.decode())
    return pinned.decode()
