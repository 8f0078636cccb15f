"""Find the pod specs and containers inside rendered objects, whatever the kind.

KubeRay kinds nest pod templates deeply (a RayCronJob's job template holds a Ray cluster spec
with a head group, worker groups and a submitter pod); the checks on pods (security profile,
resources, secrets) walk them all through here.
"""

from __future__ import annotations

from collections.abc import Iterator

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_templates(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod template: metadata and spec) of every pod ``obj`` makes."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    name = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
    if kind == "Pod":
        yield name, obj
    elif kind in WORKLOADS:
        yield f"{name}.template", spec["template"]
    elif kind == "CronJob":
        yield f"{name}.jobTemplate", spec["jobTemplate"]["spec"]["template"]
    elif kind == "RayCluster":
        yield from _ray_cluster(name, spec)
    elif kind == "RayService":
        yield from _ray_cluster(f"{name}.rayClusterConfig", spec["rayClusterConfig"])
    elif kind == "RayJob":
        yield from _ray_job(name, spec)
    elif kind == "RayCronJob":
        yield from _ray_job(f"{name}.jobTemplate", spec["jobTemplate"])


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod template in ``obj``."""
    for where, template in pod_templates(obj):
        yield where, template["spec"]


def containers(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, container) of every container, init container and Ray autoscaler sidecar."""
    for where, spec in pod_specs(obj):
        for field in ("initContainers", "containers"):
            for container in spec.get(field) or []:
                yield f"{where}.{field}[{container.get('name')}]", container
    for where, cluster in ray_clusters(obj):
        if cluster.get("enableInTreeAutoscaling"):
            yield f"{where}.autoscalerOptions", cluster.get("autoscalerOptions") or {}


def ray_clusters(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, Ray cluster spec) of a RayCluster, RayService, RayJob or RayCronJob."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    name = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
    cluster = {"RayCluster": spec, "RayService": spec.get("rayClusterConfig"),
               "RayJob": spec.get("rayClusterSpec"),
               "RayCronJob": (spec.get("jobTemplate") or {}).get("rayClusterSpec")}.get(kind)
    if cluster:
        yield name, cluster


def _ray_cluster(name: str, cluster: dict) -> Iterator[tuple[str, dict]]:
    yield f"{name}.head", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs") or []:
        yield f"{name}.workers[{group['groupName']}]", group["template"]


def _ray_job(name: str, spec: dict) -> Iterator[tuple[str, dict]]:
    if spec.get("rayClusterSpec"):
        yield from _ray_cluster(f"{name}.rayClusterSpec", spec["rayClusterSpec"])
    if spec.get("submitterPodTemplate"):
        yield f"{name}.submitter", spec["submitterPodTemplate"]
