"""The live side of the Kubernetes commands: the ``kubernetes`` client against a cluster.

Objects come from ``irec.k8s.ops`` (rendered from the chart). Applies are server-side
(field manager ``irec``, as ``kubectl apply --server-side``); waits poll and print one line
per change, plus a heartbeat with the elapsed time, and end with a summary line.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from irec.k8s.ops import (
    ORDER,
    PREVIOUS_TAG,
    app_status,
    is_hook,
    job_state,
    rollout_patch,
    rollout_state,
    stage_tags,
    summarize,
)

FIELD_MANAGER = "irec"
RAY = "ray.io/v1"


class ClusterError(RuntimeError):
    """The cluster cannot be reached, or refused or failed what was asked."""


def connect(context: str | None = None) -> dynamic.DynamicClient:
    """A client from the kubeconfig (``context``), or the in-cluster service account."""
    try:
        config.load_kube_config(context=context)
    except config.ConfigException as kube_error:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise ClusterError(f"no Kubernetes cluster configured ({kube_error}); "
                               "use --dry-run to print the objects instead") from None
    return dynamic.DynamicClient(client.ApiClient())


def _resource(api: dynamic.DynamicClient, api_version: str, kind: str):
    try:
        return api.resources.get(api_version=api_version, kind=kind)
    except dynamic.exceptions.ResourceNotFoundError:
        hint = " (install the KubeRay operator first)" if api_version == RAY else ""
        raise ClusterError(f"the cluster does not serve {kind} {api_version}{hint}") from None


def _call(what: str, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        raise ClusterError(f"{what}: {exc.status} {exc.reason}: {exc.body}") from None


def apply(api: dynamic.DynamicClient, objects: list[dict], log: Callable[[str], None]) -> None:
    """Server-side apply every object; Helm hooks (one-off Jobs) only when absent."""
    for obj in objects:
        meta = obj["metadata"]
        resource = _resource(api, obj["apiVersion"], obj["kind"])
        where = meta.get("namespace") if resource.namespaced else None
        label = f"{obj['kind']}/{meta['name']}"
        if is_hook(obj):
            try:
                resource.get(name=meta["name"], namespace=where)
                log(f"  {label}: exists (one-off hook, left as is)")
                continue
            except ApiException as exc:
                if exc.status != 404:
                    raise ClusterError(f"{label}: {exc.status} {exc.reason}") from None
            _call(label, resource.create, body=obj, namespace=where)
            log(f"  {label}: created")
            continue
        _call(label, api.server_side_apply, resource, body=obj, name=meta["name"],
              namespace=where, field_manager=FIELD_MANAGER, force_conflicts=True)
        log(f"  {label}: applied")


def release_objects(api: dynamic.DynamicClient, release: str, namespace: str) -> list[dict]:
    """The release's objects of the kinds that have a status worth showing."""
    selector = f"app.kubernetes.io/instance={release}"
    found = []
    kinds = [("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "CronJob"),
             ("batch/v1", "Job"), (RAY, "RayService"), (RAY, "RayCronJob"), (RAY, "RayJob")]
    for api_version, kind in kinds:
        try:
            resource = api.resources.get(api_version=api_version, kind=kind)
        except dynamic.exceptions.ResourceNotFoundError:
            continue  # e.g. an operator without the RayCronJob CRD
        listed = _call(f"list {kind}", resource.get, namespace=namespace,
                       label_selector=selector)
        found += [item.to_dict() for item in listed.items]
    rank = {kind: i for i, kind in enumerate(ORDER)}
    return sorted(found, key=lambda o: (rank.get(o["kind"], len(ORDER)), o["metadata"]["name"]))


def status_lines(api: dynamic.DynamicClient, release: str, namespace: str) -> list[str]:
    objects = release_objects(api, release, namespace)
    if not objects:
        return [f"no objects of release {release!r} in namespace {namespace!r}"]
    return [summarize(o) for o in objects]


def get(api: dynamic.DynamicClient, api_version: str, kind: str, name: str,
        namespace: str) -> dict:
    resource = _resource(api, api_version, kind)
    return _call(f"{kind}/{name}", resource.get, name=name, namespace=namespace).to_dict()


def submit_job(api: dynamic.DynamicClient, job: dict) -> None:
    resource = _resource(api, RAY, "RayJob")
    _call(f"RayJob/{job['metadata']['name']}", resource.create, body=job,
          namespace=job["metadata"]["namespace"])


def follow_job(api: dynamic.DynamicClient, name: str, namespace: str, *, timeout_s: float,
               poll_s: float, log: Callable[[str], None]) -> dict:
    """Poll a RayJob until it finishes; a line per state change and a heartbeat each minute."""
    began = last_beat = time.monotonic()
    seen = None
    while True:
        job = get(api, RAY, "RayJob", name, namespace)
        deployment, ray_status, finished = job_state(job)
        elapsed = time.monotonic() - began
        if (deployment, ray_status) != seen or time.monotonic() - last_beat >= 60:
            log(f"  [{elapsed:6.0f}s] RayJob/{name}: {deployment or 'New'} "
                f"(job {ray_status or 'PENDING'})")
            seen, last_beat = (deployment, ray_status), time.monotonic()
        if finished:
            return job
        if elapsed > timeout_s:
            raise ClusterError(f"RayJob/{name} not finished after {timeout_s:.0f}s "
                               f"(last: {deployment} / {ray_status}); it keeps running")
        time.sleep(poll_s)


def rollout(api: dynamic.DynamicClient, name: str, namespace: str, tag: str, *, app: str,
            timeout_s: float, poll_s: float, log: Callable[[str], None]) -> dict:
    """Patch the RayService's serveConfigV2 to ``tag`` and wait until the app runs it.

    On DEPLOY_FAILED or a timeout the tag it had goes back, and the ClusterError says so."""
    current = get(api, RAY, "RayService", name, namespace)
    before = stage_tags(current, app)
    _patch(api, name, namespace, rollout_patch(current, tag, app))
    try:
        return _wait_for(api, name, namespace, tag, app, timeout_s, poll_s, log)
    except ClusterError as exc:
        if len(before) != 1 or before == {tag}:
            raise
        previous = before.pop()
        log(f"rollout: {exc}; putting {previous} back")
        _patch(api, name, namespace, rollout_patch(get(api, RAY, "RayService", name, namespace),
                                                   previous, app))
        _wait_for(api, name, namespace, previous, app, timeout_s, poll_s, log)
        raise ClusterError(f"{exc}; RayService/{name} runs {previous} again") from None


def previous_tag(api: dynamic.DynamicClient, name: str, namespace: str) -> str:
    """The tag the RayService ran before its last ``irec rollout`` (for ``--undo``)."""
    service = get(api, RAY, "RayService", name, namespace)
    tag = ((service.get("metadata") or {}).get("annotations") or {}).get(PREVIOUS_TAG)
    if not tag:
        raise ClusterError(f"RayService/{name} has no {PREVIOUS_TAG} annotation: it was not "
                           "rolled out by `irec rollout`, nothing to undo")
    return tag


def _patch(api: dynamic.DynamicClient, name: str, namespace: str, body: dict) -> None:
    resource = _resource(api, RAY, "RayService")
    _call(f"RayService/{name}", resource.patch, body=body, name=name, namespace=namespace,
          content_type="application/merge-patch+json")


def _wait_for(api: dynamic.DynamicClient, name: str, namespace: str, tag: str, app: str,
              timeout_s: float, poll_s: float, log: Callable[[str], None]) -> dict:
    began = time.monotonic()
    seen = None
    while True:
        service = get(api, RAY, "RayService", name, namespace)
        line = summarize(service)
        elapsed = time.monotonic() - began
        if line != seen:
            log(f"  [{elapsed:6.0f}s] {line}")
            seen = line
        state = rollout_state(service, tag, app)
        if state == "done":
            return service
        if state == "failed":
            raise ClusterError(f"RayService/{name}: {app} failed to deploy {tag} "
                               f"({app_status(service, app)[1] or 'no message'})")
        if elapsed > timeout_s:
            raise ClusterError(f"RayService/{name} not running {tag} after {timeout_s:.0f}s "
                               f"(last: {line})")
        time.sleep(poll_s)
