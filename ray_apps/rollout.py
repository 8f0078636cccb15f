"""Roll the running Serve app to another model version, safely (``irec rollout --local``).

1. Resolve: ``champion`` (or ``interest:latest``) becomes a concrete tag here, once. Replicas
   are only ever handed concrete tags (``ray_apps.app.deploy`` pins them too), so a replica
   that restarts after a later promote loads the version its peers serve.
2. Verify before touching the app: the model is in the store, its manifest verifies, and its
   feature contract and id map agree with the feature store the app reads
   (``ray_apps.app.preflight``). A refusal changes nothing.
3. Patch: only the stages' ``user_config`` changes, so Serve reconfigures the running replicas
   in place (no restart, no lost request).
4. Wait until the app runs with every deployment healthy. On DEPLOY_FAILED or a timeout the
   previous config goes back, and the rollout fails saying so.
5. Record: each rollout appends ``{app, from, to, at}`` to ``irec-rollouts.json`` beside the
   model store, so ``--undo`` rolls back to the version served before the last rollout.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ray.serve.context import _get_global_client

from data.atomic import file_lock, write_text
from ray_apps.app import apply, preflight
from ray_apps.config import AppArgs, with_model_tag
from serving.package import store_home

HISTORY = "irec-rollouts.json"


class RolloutRefused(RuntimeError):
    """The target failed verification: the app was not touched."""


class RolloutFailed(RuntimeError):
    """The app did not run the target in time; the previous version was put back."""


@dataclass(frozen=True)
class Rolled:
    app: str
    previous: str
    current: str
    seconds: float


def deployed_config() -> dict:
    """The running Serve instance's config, in ``serve deploy``'s format."""
    details = _get_global_client().get_serve_details()
    apps = [a["deployed_app_config"] for a in details["applications"].values()
            if a.get("deployed_app_config")]
    if not apps:
        raise RolloutRefused("no Serve application is running on this Ray cluster "
                             "(start one with `irec serve`)")
    return {key: details[key] for key in ("proxy_location", "http_options", "grpc_options")
            if details.get(key)} | {"applications": apps}


def served_tag(config: dict, app: str) -> str:
    """The model tag the stages of ``app`` are configured with."""
    for application in config["applications"]:
        if application["name"] == app:
            tags = {d["user_config"]["model_tag"] for d in application.get("deployments", [])
                    if "model_tag" in (d.get("user_config") or {})}
            if len(tags) == 1:
                return tags.pop()
            raise RolloutRefused(f"application {app!r} has stages on {sorted(tags)}; "
                                 "roll it out to one version first")
    raise RolloutRefused(f"no application {app!r} is running")


def rollout(tag: str, app: str = "irec", timeout_s: float = 600.0) -> Rolled:
    """Verify ``tag``, then move ``app`` to it; see the module docstring."""
    began = time.monotonic()
    config = deployed_config()
    previous = served_tag(config, app)
    application = next(a for a in config["applications"] if a["name"] == app)
    args = AppArgs.model_validate(application.get("args") or {})
    try:
        target = preflight(args.model_copy(update={"serving": args.serving.model_copy(
            update={"model_tag": tag})}))
    except Exception as exc:  # any failed check: report it, touch nothing
        raise RolloutRefused(f"{tag}: {type(exc).__name__}: {exc}") from None
    try:
        apply(with_model_tag(config, target, app), timeout_s=timeout_s)
    except (RuntimeError, TimeoutError) as exc:
        apply(config, timeout_s=max(timeout_s, 300.0))
        raise RolloutFailed(f"{app} did not run {target} ({exc}); it serves {previous} "
                            "again") from None
    _record(app, previous, target)
    return Rolled(app, previous, target, time.monotonic() - began)


def undo(app: str = "irec", timeout_s: float = 600.0) -> Rolled:
    """Roll ``app`` back to the version it served before its last rollout."""
    last = [r for r in _history() if r["app"] == app]
    if not last:
        raise RolloutRefused(f"no rollout of {app!r} is recorded in {_history_file()}")
    return rollout(last[-1]["from"], app, timeout_s)


def _history_file() -> Path:
    return store_home() / HISTORY


def _history() -> list[dict]:
    path = _history_file()
    return json.loads(path.read_text()) if path.exists() else []


def _record(app: str, previous: str, current: str) -> None:
    path = _history_file()
    with file_lock(path.with_name(f"{path.name}.lock")):
        entries = [*_history(), {"app": app, "from": previous, "to": current,
                                 "at": time.time()}]
        write_text(path, json.dumps(entries[-100:], indent=2))
