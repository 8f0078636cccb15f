"""``ValidateRayClusterSpec`` of the KubeRay v1.7.0 operator: the Ray cluster of a RayService,
a RayJob or a RayCronJob's job template (irec.k8s.operator has the source and the other kinds).

Every check yields ``(field path, message)``; the path starts at the object (``spec.
rayClusterConfig.headGroupSpec...``) and the message carries the offending value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

Problem = tuple[str, str]  # (field path, message)
QUALIFIED = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")
AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"


def cluster_errors(spec: dict, annotations: dict, where: str, gates: Mapping[str, bool],
                   created_by: str) -> Iterator[Problem]:
    """``ValidateRayClusterSpec``, and the webhook's unique worker-group names.

    ``where``: the path of the cluster spec in its object; ``annotations``: the object's;
    ``created_by``: the kind that creates the RayCluster ("" for a RayCluster itself).
    """
    head = spec.get("headGroupSpec") or {}
    head_containers = pod_spec(head).get("containers") or []
    if not head_containers:
        yield f"{where}.headGroupSpec", "headGroupSpec should have at least one container"
    head_env = head_containers[0].get("env") if head_containers else None
    env = {e.get("name"): e for e in head_env or []}
    env_path = f"{where}.headGroupSpec.template.spec.containers[0].env"
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    yield from _group(head, "Head", f"{where}.headGroupSpec")
    names: set[str] = set()
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        yield from _worker(group, f"{where}.workerGroupSpecs[{i}]", autoscaling, spec, env, gates)
        if group.get("groupName") in names:
            yield (f"{where}.workerGroupSpecs[{i}].groupName",
                   f"worker group names must be unique, {group.get('groupName')!r} repeats")
        names.add(group.get("groupName"))
    yield from _fault_tolerance(spec, head, env, env_path, annotations, where, gates)
    upgrade = (spec.get("upgradeStrategy") or {}).get("type")
    if created_by and upgrade:
        yield f"{where}.upgradeStrategy", (f"cannot be set when RayCluster is created by "
                                           f"{created_by}, got {spec['upgradeStrategy']}")
    elif upgrade not in (None, "Recreate", "None"):
        yield f"{where}.upgradeStrategy.type", (f"value {upgrade!r} is invalid, valid options "
                                                "are Recreate or None")
    v2_env = (env.get(AUTOSCALER_V2_ENV) or {}).get("value")
    options = spec.get("autoscalerOptions") or {}
    if not autoscaling and v2_env in ("1", "true"):
        yield f"{env_path}.{AUTOSCALER_V2_ENV}", (f"cannot be {v2_env!r} when "
                                                  "enableInTreeAutoscaling is false")
    if autoscaling and options.get("version") and AUTOSCALER_V2_ENV in env:
        yield f"{where}.autoscalerOptions.version", (f"and head env {AUTOSCALER_V2_ENV} are both "
                                                     "set, please only use the former")
    if autoscaling and options.get("version") == "v2":
        restart = pod_spec(head).get("restartPolicy")
        if restart not in (None, "", "Never"):
            yield (f"{where}.headGroupSpec.template.spec.restartPolicy",
                   f"should be Never or unset when using autoscaler V2, got {restart!r}")
    if options.get("idleTimeoutSeconds", 0) < 0:
        yield (f"{where}.autoscalerOptions.idleTimeoutSeconds",
               f"must be non-negative, got {options['idleTimeoutSeconds']}")
    if any(e.get("name") == "KUBERAY_GEN_AUTOSCALER_START_CMD" for e in options.get("env") or []):
        yield f"{where}.autoscalerOptions.env", "must not set KUBERAY_GEN_AUTOSCALER_START_CMD"
    for field, gate in (("historyServerOptions", "RayClusterHistoryServer"),
                        ("networkPolicy", "RayClusterNetworkPolicy"),
                        ("tlsOptions", "RayClusterMTLS")):
        if spec.get(field) is not None and not gates[gate]:
            yield f"{where}.{field}", f"requires the {gate} feature gate to be enabled"
    yield from _auth(spec, where)


def _group(group: dict, name: str, where: str) -> Iterator[Problem]:
    """``validateRayGroupResources`` and ``validateRayGroupLabels``."""
    params = group.get("rayStartParams") or {}
    if group.get("resources") and any(params.get(k) for k in START_RESOURCES):
        yield f"{where}.resources", (f"resource fields should not be set in both rayStartParams "
                                     f"and Resources for {name} group")
    if "labels" in params:
        yield f"{where}.rayStartParams.labels", f"is not supported for {name} group"
    for key, value in (group.get("labels") or {}).items():
        if not QUALIFIED.fullmatch(key) or len(key.rpartition("/")[2]) > 63:
            yield f"{where}.labels", f"invalid label key for {name} group: {key!r}"
        if not LABEL_VALUE.fullmatch(str(value)) or len(str(value)) > 63:
            yield f"{where}.labels.{key}", f"invalid label value for {name} group: {value!r}"


def _worker(group: dict, where: str, autoscaling: bool, spec: dict, head_env: dict,
            gates: Mapping[str, bool]) -> Iterator[Problem]:
    """One worker group: containers, replica bounds, idle timeout and priority (autoscaler
    v2 only), suspension."""
    name = group.get("groupName")
    low, high = group.get("minReplicas"), group.get("maxReplicas")
    if not pod_spec(group).get("containers"):
        yield where, f"workerGroupSpec {name} should have at least one container"
    if not autoscaling and (low is None or high is None):
        yield where, (f"worker group {name} must set both minReplicas and maxReplicas when "
                      f"autoscaling is disabled, got {low} and {high}")
    for field, value in (("minReplicas", low), ("maxReplicas", high)):
        if value is not None and value < 0:
            yield f"{where}.{field}", f"worker group {name} has negative {field} {value}"
    if low is not None and high is not None and low > high:
        yield f"{where}.minReplicas", (f"worker group {name} has minReplicas {low} greater than "
                                       f"maxReplicas {high}")
    yield from _group(group, str(name), where)
    v2 = ((spec.get("autoscalerOptions") or {}).get("version") == "v2"
          or (head_env.get(AUTOSCALER_V2_ENV) or {}).get("value") in ("1", "true"))
    idle = group.get("idleTimeoutSeconds")
    if idle is not None and (idle < 0 or not v2):
        yield f"{where}.idleTimeoutSeconds", (f"worker group {name}: must be non-negative and "
                                              f"needs autoscaler v2, got {idle}")
    if group.get("priority"):
        if not v2 or _version(spec.get("rayVersion")) < (2, 56, 0):
            yield f"{where}.priority", (f"worker group {name}: needs Ray >= 2.56.0 (got "
                                        f"{spec.get('rayVersion')!r}) and autoscaler v2")
    if group.get("suspend") and (not gates["RayJobDeletionPolicy"] or autoscaling):
        yield f"{where}.suspend", (f"worker group {name} cannot be suspended with autoscaling "
                                   "enabled or without the RayJobDeletionPolicy gate")
    restart = pod_spec(group).get("restartPolicy")
    if (spec.get("enableInTreeAutoscaling") and (spec.get("autoscalerOptions") or {}).get(
            "version") == "v2" and restart not in (None, "", "Never")):
        yield (f"{where}.template.spec.restartPolicy",
               f"should be Never or unset when using autoscaler V2, got {restart!r}")


def _fault_tolerance(spec: dict, head: dict, env: dict, env_path: str, annotations: dict,
                     where: str, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """The GCS fault tolerance rules: one way to configure Redis, GcsFaultToleranceOptions."""
    options = spec.get("gcsFaultToleranceOptions")
    ft_annotation = annotations.get("ray.io/ft-enabled", "")
    params = head.get("rayStartParams") or {}
    if ft_annotation and options is not None:
        yield "metadata.annotations.ray.io/ft-enabled", (
            f"ray.io/ft-enabled={ft_annotation!r} and GcsFaultToleranceOptions are both set; "
            "use only GcsFaultToleranceOptions")
    enabled = ft_annotation.lower() == "true" or options is not None
    if not enabled and "RAY_REDIS_ADDRESS" in env:
        yield f"{env_path}.RAY_REDIS_ADDRESS", ("is set which implicitly enables GCS fault "
                                                "tolerance, but GcsFaultToleranceOptions is not")
    if options is not None:
        if params.get("redis-password"):
            yield f"{where}.headGroupSpec.rayStartParams.redis-password", (
                "cannot be set when GcsFaultToleranceOptions is enabled - use "
                "GcsFaultToleranceOptions.RedisPassword instead")
        for var, instead in (("REDIS_PASSWORD", "RedisPassword"),
                             ("RAY_REDIS_ADDRESS", "RedisAddress")):
            if var in env:
                yield f"{env_path}.{var}", (
                    f"cannot set `{var}` env var in head Pod when GcsFaultToleranceOptions is "
                    f"enabled (got {_shown(env[var])}) - use GcsFaultToleranceOptions."
                    f"{instead} instead")
        if annotations.get("ray.io/external-storage-namespace"):
            yield "metadata.annotations.ray.io/external-storage-namespace", (
                "cannot be set when GcsFaultToleranceOptions is enabled - use "
                "GcsFaultToleranceOptions.ExternalStorageNamespace instead")
        if options.get("backend") == "rocksdb" and not gates["GCSFaultToleranceEmbeddedStorage"]:
            yield f"{where}.gcsFaultToleranceOptions.backend", (
                "'rocksdb' requires the GCSFaultToleranceEmbeddedStorage feature gate")
        if options.get("backend", "redis") == "redis" and options.get("storage") is not None:
            yield f"{where}.gcsFaultToleranceOptions.storage", (
                "only applies to the 'rocksdb' backend, got backend 'redis'")
    if params.get("redis-username"):
        yield f"{where}.headGroupSpec.rayStartParams.redis-username", (
            f"cannot set redis username in rayStartParams (got {params['redis-username']!r}) "
            "- use GcsFaultToleranceOptions.RedisUsername instead")
    if "REDIS_USERNAME" in env:
        yield f"{env_path}.REDIS_USERNAME", (
            f"cannot set redis username in environment variables (got "
            f"{_shown(env['REDIS_USERNAME'])}) - use GcsFaultToleranceOptions.RedisUsername "
            "instead")


def _auth(spec: dict, where: str) -> Iterator[Problem]:
    """Token authentication needs a Ray version that supports it."""
    auth = spec.get("authOptions") or {}
    version = spec.get("rayVersion")
    if auth.get("mode") == "token":
        if _version(version) < (2, 52, 0):
            yield f"{where}.rayVersion", (f"authOptions.mode is 'token' but Ray version 2.52.0 "
                                          f"or later is required, got {version!r}")
        if k8s_auth(spec) and (_version(version) < (2, 55, 0) or auth.get("secretName")):
            yield f"{where}.authOptions", ("enableK8sTokenAuth needs Ray >= 2.55.0 and no "
                                           f"secretName, got {version!r}, {auth}")
    elif k8s_auth(spec):
        yield f"{where}.authOptions", "enableK8sTokenAuth is enabled but mode is not 'token'"


def k8s_auth(cluster: dict) -> bool:
    """``IsK8sAuthEnabled``: RayService and RayJob refuse it."""
    return bool((cluster.get("authOptions") or {}).get("enableK8sTokenAuth"))


def pod_spec(group: dict) -> dict:
    """The pod spec of a head or worker group's template ({} when absent)."""
    return (group.get("template") or {}).get("spec") or {}


def _shown(env: dict) -> str:
    """An env var as found, never a literal secret value."""
    return "valueFrom " + str(env["valueFrom"]) if "valueFrom" in env else "a literal value"


def _version(text: object) -> tuple[int, ...]:
    """``version.ParseGeneric``: two or more dotted numbers; () when it does not parse."""
    match = re.match(r"\s*v?([0-9]+(\.[0-9]+)+)", str(text or ""))
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()
