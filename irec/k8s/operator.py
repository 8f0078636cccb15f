"""What the KubeRay v1.7.0 operator refuses in objects that pass its CRD schemas.

The CRD schemas (irec.k8s.validate) say which fields exist; the operator then validates each
custom resource in its controllers and refuses to reconcile one it finds invalid (an
``Invalid*`` event, a ``ValidationFailed`` status, nothing runs). This module ports those
rules, so that ``validate`` reports them like schema errors before anything is installed.

Ported from ray-project/kuberay, ``ray-operator/controllers/ray/utils/validation.go``
(``ValidateRayClusterSpec``, ``ValidateRayServiceMetadata``/``Spec``,
``ValidateClusterUpgradeOptions``, ``ValidateRayJobMetadata``/``Spec`` with the deletion
rules, ``ValidateRayCronJobSpec``), in the version of the v1.7 line that has
``MaxRayCronJobNameLength`` (PR #4888, merged 2026-05-28; v1.7.0 was tagged 2026-08-20, its
CRDs are ../shared/k8s-schemas at commit feeaf72facab4881ba2b179248bb67315634e229). The
stored copy read came without its commit id; earlier stored versions are commits 0074504f
(no worker-group or cron-name checks) and 59939cbc (v1.3 era). Constants from
``utils/constant.go`` (name limits), feature-gate defaults from ``pkg/features/features.go``
of v1.7, the unique worker-group names from the RayCluster webhook
(``pkg/webhooks/v1/raycluster_webhook.go``), schedules and zones from irec.k8s.cron.

Not ported beyond their feature gate (off by default in v1.7.0, and fields the chart never
renders): network policy, mTLS, history-server collector and embedded RocksDB GCS details.
The operator stops at the first problem; this reports every one, each naming the object, the
field and the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import yaml

from irec.k8s.cron import GO_DURATION, schedule_error, time_zone_error
from irec.k8s.raycluster import Problem, cluster_errors, k8s_auth, pod_spec

MAX_RAYCLUSTER_NAME = 53  # 63 - len("-serve-svc")
MAX_RAYSERVICE_NAME = MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6  # + "-" and 5 random letters
MAX_RAYCRONJOB_NAME = 36  # child RayJob: "<name>-<unix minutes>", up to 10 digits
MAX_CRONJOB_NAME = 52  # Kubernetes: the Job controller appends 11 characters
# v1.7.0 defaults of the gates these rules consult (RayCronJob itself must be turned on).
GATES = MappingProxyType({
    "RayJobDeletionPolicy": True, "RayServiceIncrementalUpgrade": True,
    "RayClusterNetworkPolicy": False, "GCSFaultToleranceEmbeddedStorage": False,
    "RayClusterMTLS": False, "RayClusterHistoryServer": False})
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")


def operator_errors(obj: dict, gates: Mapping[str, bool] = GATES) -> list[str]:
    """Every rule of the operator ``obj`` breaks, as ``Kind/name: field: message``."""
    kind = obj.get("kind", "")
    check = {"RayService": _ray_service, "RayJob": _ray_job, "RayCronJob": _ray_cron_job,
             "RayCluster": _ray_cluster, "CronJob": _cron_job}.get(kind)
    if check is None or not obj.get("apiVersion", "").startswith(("ray.io/", "batch/")):
        return []
    name = (obj.get("metadata") or {}).get("name", "")
    return [f"{kind}/{name}: {path}: {message}" for path, message in check(obj, gates)]


def _meta(obj: dict) -> tuple[str, dict]:
    """(name, annotations) of an object; annotations feed the GCS fault tolerance rules."""
    metadata = obj.get("metadata") or {}
    return metadata.get("name", ""), metadata.get("annotations") or {}


def _name(name: str, limit: int, kind: str) -> Iterator[Problem]:
    """``Validate<Kind>Metadata``: a length limit, then a DNS-1035 label."""
    if len(name) > limit:
        yield "metadata.name", (f"{kind} name should be no more than {limit} characters, "
                                f"got {len(name)}: {name!r}")
    elif not DNS1035.fullmatch(name):
        yield "metadata.name", (f"{kind} name should be a valid DNS1035 label (lower case "
                                f"alphanumerics or '-', starting with a letter): {name!r}")


def _ray_service(obj: dict, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """``ValidateRayServiceMetadata`` and ``ValidateRayServiceSpec`` (the RayService
    controller's checks before it creates the cluster)."""
    name, annotations = _meta(obj)
    yield from _name(name, MAX_RAYSERVICE_NAME, "RayService")
    timeout = annotations.get("ray.io/initializing-timeout")
    if timeout and not ((re.fullmatch(GO_DURATION, timeout) and not timeout.startswith("-")
                         and re.search(r"[1-9]", timeout))
                        or (re.fullmatch(r"[+-]?[0-9]+", timeout) and int(timeout) > 0)):
        yield ("metadata.annotations.ray.io/initializing-timeout",
               f"must be a positive Go duration or integer seconds, got {timeout!r}")
    spec = obj.get("spec") or {}
    cluster = spec.get("rayClusterConfig") or {}
    where = "spec.rayClusterConfig"
    if k8s_auth(cluster):
        yield f"{where}.authOptions", "K8s token auth mode is not supported for RayService"
    yield from cluster_errors(cluster, annotations, where, gates, created_by="RayService")
    head_service = (cluster.get("headGroupSpec") or {}).get("headService") or {}
    if (head_service.get("metadata") or {}).get("name"):
        yield (f"{where}.headGroupSpec.headService.metadata.name",
               f"should not be set, got {head_service['metadata']['name']!r}")
    strategy = spec.get("upgradeStrategy") or {}
    kind = strategy.get("type")
    if kind is not None and kind not in UPGRADE_TYPES:
        yield "spec.upgradeStrategy.type", (f"value {kind!r} is invalid, valid options are "
                                            f"{', '.join(UPGRADE_TYPES)}")
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        yield "spec.rayClusterDeletionDelaySeconds", f"should be non-negative, got {delay}"
    if gates["RayServiceIncrementalUpgrade"] and kind == "NewClusterWithIncrementalUpgrade":
        yield from _upgrade_options(strategy.get("clusterUpgradeOptions"), cluster)


def _upgrade_options(options: dict | None, cluster: dict) -> Iterator[Problem]:
    """``ValidateClusterUpgradeOptions`` of NewClusterWithIncrementalUpgrade."""
    where = "spec.upgradeStrategy.clusterUpgradeOptions"
    if not cluster.get("enableInTreeAutoscaling"):
        yield ("spec.rayClusterConfig.enableInTreeAutoscaling",
               "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade, got "
               f"{cluster.get('enableInTreeAutoscaling')!r}")
    if options is None:
        yield where, "ClusterUpgradeOptions are required for NewClusterWithIncrementalUpgrade"
        return
    surge, step = options.get("maxSurgePercent", 100), options.get("stepSizePercent")
    interval = options.get("intervalSeconds")
    if not 0 <= surge <= 100:
        yield f"{where}.maxSurgePercent", f"must be between 0 and 100, got {surge}"
    if step is None or not 0 <= step <= 100:
        yield f"{where}.stepSizePercent", f"must be between 0 and 100, got {step}"
    elif step > surge:
        yield f"{where}.stepSizePercent", (f"must be less than or equal to maxSurgePercent "
                                           f"({surge}), got {step}")
    if interval is None or interval <= 0:
        yield f"{where}.intervalSeconds", f"must be greater than 0, got {interval}"
    if not options.get("gatewayClassName"):
        yield f"{where}.gatewayClassName", "is required for NewClusterWithIncrementalUpgrade"


def _ray_cluster(obj: dict, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """A RayCluster of its own (the chart renders none; irec.k8s.validate takes any)."""
    name, annotations = _meta(obj)
    yield from _name(name, MAX_RAYCLUSTER_NAME, "RayCluster")
    yield from cluster_errors(obj.get("spec") or {}, annotations, "spec", gates, created_by="")


def _ray_job(obj: dict, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """``ValidateRayJobMetadata`` (also the RayJob webhook's) and ``ValidateRayJobSpec``."""
    name, annotations = _meta(obj)
    yield from _name(name, MAX_RAYJOB_NAME, "RayJob")
    yield from _job_spec(obj.get("spec") or {}, annotations, "spec", gates)


def _ray_cron_job(obj: dict, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """``ValidateRayCronJobSpec``, and the metadata check its child RayJobs then get."""
    name, _ = _meta(obj)
    spec = obj.get("spec") or {}
    if len(name) > MAX_RAYCRONJOB_NAME:
        yield "metadata.name", (f"RayCronJob name should be no more than "
                                f"{MAX_RAYCRONJOB_NAME} characters, got {len(name)}: {name!r}")
    elif not DNS1035.fullmatch(f"{name}-28000000"):
        yield "metadata.name", (f"its RayJobs ({name}-<unix minutes>) would not be DNS1035 "
                                f"labels: {name!r} must start with a letter")
    schedule = spec.get("schedule", "")
    problem = ("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
               if "TZ" in schedule else schedule_error(schedule))
    if problem:
        yield "spec.schedule", f"invalid cron schedule {schedule!r}: {problem}"
    if "timeZone" in spec:
        zone = spec["timeZone"]
        problem = ("must not be empty string, omit the field to use the operator's local time "
                   "zone" if zone == "" else time_zone_error(zone))
        if problem:
            yield "spec.timeZone", f"invalid time zone {zone!r}: {problem}"
    yield from _job_spec(spec.get("jobTemplate") or {}, {}, "spec.jobTemplate", gates)


def _cron_job(obj: dict, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """Not KubeRay: the API server's own CronJob checks (pkg/apis/batch/validation), which the
    strict schemas cannot express either (same cron library, same time zone loading)."""
    name, _ = _meta(obj)
    spec = obj.get("spec") or {}
    if len(name) > MAX_CRONJOB_NAME:
        yield "metadata.name", (f"CronJob name must be no more than {MAX_CRONJOB_NAME} "
                                f"characters, got {len(name)}: {name!r}")
    schedule, zone = spec.get("schedule", ""), spec.get("timeZone")
    problem = ("cannot use both timeZone field and TZ or CRON_TZ in schedule"
               if zone is not None and "TZ" in schedule else schedule_error(schedule))
    if problem:
        yield "spec.schedule", f"invalid cron schedule {schedule!r}: {problem}"
    if zone is not None:
        problem = ("must be an explicit IANA time zone" if zone.lower() in ("", "local")
                   else time_zone_error(zone))
        if problem:
            yield "spec.timeZone", f"invalid time zone {zone!r}: {problem}"


def _job_spec(spec: dict, annotations: dict, where: str,
              gates: Mapping[str, bool]) -> Iterator[Problem]:
    """``ValidateRayJobSpec``."""
    shutdown, suspend = bool(spec.get("shutdownAfterJobFinishes")), bool(spec.get("suspend"))
    ttl, mode = spec.get("ttlSecondsAfterFinished", 0), spec.get("submissionMode")
    backoff, selector = spec.get("backoffLimit"), spec.get("clusterSelector") or {}
    if suspend and not shutdown:
        yield f"{where}.suspend", ("a RayJob with shutdownAfterJobFinishes set to false is not "
                                   "allowed to be suspended")
    if ttl < 0:
        yield f"{where}.ttlSecondsAfterFinished", f"must be a non-negative integer, got {ttl}"
    if not shutdown and ttl > 0:
        yield f"{where}.ttlSecondsAfterFinished", (
            f"a RayJob with shutdownAfterJobFinishes set to false cannot have "
            f"TTLSecondsAfterFinished, got {ttl}")
    yield from _deletion(spec, where, gates)
    if selector and suspend:
        yield f"{where}.suspend", "the ClusterSelector mode doesn't support the suspend operation"
    if not spec.get("rayClusterSpec") and not selector:
        yield f"{where}.rayClusterSpec", "one of RayClusterSpec or ClusterSelector must be set"
    if selector:
        if not selector.get("ray.io/cluster"):
            yield f"{where}.clusterSelector", f"cluster name should not be empty: {selector}"
        if mode == "SidecarMode":
            yield f"{where}.submissionMode", "ClusterSelector is not supported in SidecarMode"
        if backoff and backoff > 0:
            yield f"{where}.backoffLimit", (f"BackoffLimit is incompatible with ClusterSelector "
                                            f"mode, got {backoff}")
    if mode == "InteractiveMode" and backoff and backoff > 0:
        yield f"{where}.backoffLimit", (f"BackoffLimit is incompatible with InteractiveMode, "
                                        f"got {backoff}")
    cluster = spec.get("rayClusterSpec")
    if mode == "SidecarMode":
        for field in ("submitterPodTemplate", "submitterConfig"):
            if field in spec:
                yield f"{where}.{field}", f"SidecarMode doesn't support {field}"
        restart = pod_spec((cluster or {}).get("headGroupSpec") or {}).get("restartPolicy")
        if restart not in (None, "", "Never"):
            yield (f"{where}.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                   f"should be Never or unset when using SidecarMode, got {restart!r}")
    if cluster:
        if k8s_auth(cluster):
            yield (f"{where}.rayClusterSpec.authOptions",
                   "K8s token auth mode is not supported for RayJob")
        yield from cluster_errors(cluster, annotations, f"{where}.rayClusterSpec", gates,
                                  created_by="RayJob")
    yield from _runtime_env(spec.get("runtimeEnvYAML") or "", where)
    for field, low in (("activeDeadlineSeconds", 1), ("preRunningDeadlineSeconds", 1),
                       ("backoffLimit", 0)):
        value = spec.get(field)
        if value is not None and value < low:
            kind = "a positive" if low else "a non-negative"
            yield f"{where}.{field}", f"must be {kind} integer, got {value}"


def _runtime_env(text: str, where: str) -> Iterator[Problem]:
    """``UnmarshalRuntimeEnvYAML``: YAML that decodes into a map (or nothing)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        yield f"{where}.runtimeEnvYAML", f"failed to unmarshal RuntimeEnvYAML: {exc}"
        return
    if parsed is not None and not isinstance(parsed, dict):
        yield f"{where}.runtimeEnvYAML", f"must be a YAML mapping, got {parsed!r}"


def _deletion(spec: dict, where: str, gates: Mapping[str, bool]) -> Iterator[Problem]:
    """``validateDeletionConfiguration``: the ``deletionStrategy`` block."""
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return
    where = f"{where}.deletionStrategy"
    if not gates["RayJobDeletionPolicy"]:
        yield where, "RayJobDeletionPolicy feature gate must be enabled to use DeletionStrategy"
        return
    legacy = {k: strategy[k] for k in ("onSuccess", "onFailure") if k in strategy}
    rules, shutdown = strategy.get("deletionRules") or [], spec.get("shutdownAfterJobFinishes")
    autoscaling = bool((spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"))
    if rules and shutdown:
        yield where, "spec.shutdownAfterJobFinishes and deletionRules are mutually exclusive"
    if rules and legacy:
        yield where, "cannot use both legacy onSuccess/onFailure and deletionRules"
    if not rules and not legacy:
        yield where, "requires either BOTH onSuccess and onFailure, OR deletionRules"
    policies = [(k, (v or {}).get("policy")) for k, v in legacy.items()]
    if legacy and (len(policies) < 2 or any(p is None for _, p in policies)):
        yield where, f"onSuccess and onFailure must both be set with a policy, got {legacy}"
    policies += [(f"deletionRules.{i}", (r or {}).get("policy")) for i, r in enumerate(rules)]
    for field, policy in policies:
        if policy == "DeleteWorkers" and autoscaling:
            yield f"{where}.{field}", "DeleteWorkers is not supported with autoscaling enabled"
        if policy == "DeleteNone" and shutdown and not field.startswith("deletionRules"):
            yield f"{where}.{field}", "shutdownAfterJobFinishes is true while policy is DeleteNone"
