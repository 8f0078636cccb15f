"""The objects the Kubernetes commands send, built from the chart: no cluster needed.

Every command renders the same chart (``irec.k8s.render``) with the same values as
``helm install``, so what ``irec deploy apply``, ``irec retrain submit`` and ``irec rollout``
send is exactly what the chart would create; their ``--dry-run`` prints these objects.

    deploy_objects(values)            # every object of the release, in apply order
    retrain_job(values, name)         # a one-off retraining RayJob
    rolled_out(rayservice, tag)       # the RayService with its stages on ``tag``
"""

from __future__ import annotations

import copy
import hashlib
import time

import yaml

from irec.k8s.operator import MAX_RAYJOB_NAME
from irec.k8s.render import ValuesError, merge_values, render
from ray_apps.config import with_model_tag

HOOK = "helm.sh/hook"
# Apply order: what others refer to first (accounts, config, storage), then workloads, then
# the policies and custom resources that select or run them.
ORDER = ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim",
         "Service", "StatefulSet", "Deployment", "Job", "CronJob", "NetworkPolicy",
         "PodDisruptionBudget", "RayService", "RayJob", "RayCronJob", "ServiceMonitor"]


def deploy_objects(values: dict, *, release: str, namespace: str) -> list[dict]:
    """Every object of the release, namespaced, in apply order (Helm hooks last)."""
    objects = render(values, release=release, namespace=namespace)
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("namespace", namespace)
    rank = {kind: i for i, kind in enumerate(ORDER)}
    return sorted(objects, key=lambda o: (is_hook(o), rank.get(o["kind"], len(ORDER))))


def is_hook(obj: dict) -> bool:
    """Helm hooks (the post-install ``feast apply`` Job) are created once, not re-applied."""
    return HOOK in ((obj.get("metadata") or {}).get("annotations") or {})


def run_name(release: str, at: float | None = None) -> str:
    """A unique RayJob name per run: ``<release>-retrain-<UTC yyyymmdd-hhmmss>``.

    KubeRay refuses RayJob names over 47 characters (irec.k8s.operator): a longer release is
    cut and followed by a short hash of it, so the name stays unique and deterministic.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(at if at is not None else time.time()))
    tail = f"-retrain-{stamp}"
    if len(release) + len(tail) <= MAX_RAYJOB_NAME:
        return release + tail
    digest = hashlib.sha256(release.encode()).hexdigest()[:8]
    keep = MAX_RAYJOB_NAME - len(tail) - len(digest) - 1
    return f"{release[:keep].rstrip('-')}-{digest}{tail}"


def retrain_job(values: dict, *, name: str, release: str, namespace: str) -> dict:
    """The chart's one-off retraining RayJob named ``name`` (the same spec the schedule runs)."""
    run = merge_values(values, {"retraining": {"enabled": True,
                                               "job": {"enabled": True, "name": name}}})
    jobs = [o for o in render(run, release=release, namespace=namespace)
            if o["kind"] == "RayJob"]
    if len(jobs) != 1:
        raise ValuesError(f"expected the chart to render one RayJob, got {len(jobs)}")
    job = jobs[0]
    job["metadata"].setdefault("namespace", namespace)
    return job


def serve_app_config(rayservice: dict) -> dict:
    """The Serve config a RayService carries (``spec.serveConfigV2``), parsed."""
    text = (rayservice.get("spec") or {}).get("serveConfigV2")
    if not text:
        name = (rayservice.get("metadata") or {}).get("name")
        raise ValuesError(f"RayService {name} has no spec.serveConfigV2")
    return yaml.safe_load(text)


def rolled_out(rayservice: dict, tag: str, app: str = "irec") -> dict:
    """A copy of ``rayservice`` whose stages load ``tag``: only their ``user_config`` changes.

    KubeRay applies a serveConfigV2 change to the running cluster (no new cluster), and Serve
    turns a ``user_config``-only change into an in-place ``reconfigure``: the hot swap.
    """
    updated = copy.deepcopy(rayservice)
    config = with_model_tag(serve_app_config(rayservice), tag, app)
    updated["spec"]["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)
    return updated


PREVIOUS_TAG = "irec.dev/previous-model-tag"  # RayService annotation: what --undo goes back to


def rollout_patch(rayservice: dict, tag: str, app: str = "irec") -> dict:
    """The merge patch that ``irec rollout`` sends: the stages' tag, and the tag they had in
    the ``PREVIOUS_TAG`` annotation (for ``--undo``)."""
    patch = {"spec": {"serveConfigV2": rolled_out(rayservice, tag, app)["spec"]["serveConfigV2"]}}
    before = stage_tags(rayservice, app)
    if len(before) == 1:
        patch["metadata"] = {"annotations": {PREVIOUS_TAG: before.pop()}}
    return patch


def stage_tags(rayservice: dict, app: str = "irec") -> set[str]:
    """The model tags the stages of ``app`` are configured with."""
    apps = {a["name"]: a for a in serve_app_config(rayservice).get("applications", [])}
    return {(d.get("user_config") or {}).get("model_tag")
            for d in apps.get(app, {}).get("deployments", [])} - {None}


def app_status(rayservice: dict, app: str = "irec") -> tuple[str, str]:
    """(status, message) of ``app`` on the RayService's active cluster; ("", "") if none yet."""
    active = ((rayservice.get("status") or {}).get("activeServiceStatus") or {})
    found = (active.get("applicationStatuses") or {}).get(app) or {}
    return found.get("status", ""), found.get("message", "")


def rollout_state(rayservice: dict, tag: str, app: str = "irec") -> str:
    """``done`` (the operator saw the new spec, the app runs, its stages are on ``tag``),
    ``failed`` (it saw it and the app is DEPLOY_FAILED) or ``pending``."""
    meta, status = rayservice.get("metadata") or {}, rayservice.get("status") or {}
    seen = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    if not seen or stage_tags(rayservice, app) != {tag}:
        return "pending"
    return {"RUNNING": "done", "DEPLOY_FAILED": "failed"}.get(app_status(rayservice, app)[0],
                                                              "pending")


def rolled_out_to(rayservice: dict, tag: str, app: str = "irec") -> bool:
    """The operator saw the new spec, the app runs, and its stages are configured with ``tag``."""
    return rollout_state(rayservice, tag, app) == "done"


def job_state(job: dict) -> tuple[str, str, bool]:
    """(deployment status, Ray job status, finished) of a RayJob."""
    status = job.get("status") or {}
    deployment = status.get("jobDeploymentStatus", "")
    ray_status = status.get("jobStatus", "")
    finished = deployment in ("Complete", "Failed", "ValidationFailed") or ray_status in (
        "SUCCEEDED", "FAILED", "STOPPED")
    return deployment, ray_status, finished


def summarize(obj: dict) -> str:
    """One status line of a release object."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if kind == "RayService":
        app, message = app_status(obj)
        ready = next((c["status"] for c in status.get("conditions", [])
                      if c.get("type") == "Ready"), "?")
        return f"RayService/{name}: ready={ready} app={app or 'unknown'} {message}".rstrip()
    if kind == "RayJob":
        deployment, ray_status, _ = job_state(obj)
        return f"RayJob/{name}: {deployment or 'New'} (job {ray_status or 'PENDING'})"
    if kind in ("Deployment", "StatefulSet"):
        return (f"{kind}/{name}: {status.get('readyReplicas', 0)}/"
                f"{spec.get('replicas', 1)} ready")
    if kind == "CronJob":
        last = status.get("lastSuccessfulTime") or "never"
        return f"CronJob/{name}: schedule {spec.get('schedule')!r}, last success {last}"
    if kind == "RayCronJob":
        return f"RayCronJob/{name}: schedule {spec.get('schedule')!r}"
    if kind == "Job":
        return (f"Job/{name}: succeeded={status.get('succeeded', 0)} "
                f"failed={status.get('failed', 0)}")
    return f"{kind}/{name}"
