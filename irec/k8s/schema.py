"""Write charts/irec/values.schema.json (JSON Schema draft-07): ``python -m irec.k8s.schema``.

Every object refuses unknown keys. Kubernetes pass-through fields (affinity, NetworkPolicy
peers, ...) are typed to their first level here and validated in full against the Kubernetes
schemas after rendering (irec.k8s.validate). ``retraining.training`` is generated from
``training.config.TrainingConfig`` and ``serving.app`` from ``ray_apps.config.ServingConfig``,
so the chart refuses what the training job and the Serve app would refuse.
Values the KubeRay operator or the API server would refuse past every CRD schema are refused
here where a pattern can say it: Kubernetes quantities, cron schedules (irec.k8s.cron), RayJob
names. ``files/time-zones.txt`` (the IANA zones, for the templates' own time zone check) is
written alongside. ``make chart-config`` runs this; tests fail when a committed file differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from irec.k8s.cron import SCHEDULE_PATTERN, time_zones
from irec.k8s.render import CHART_DIR
from ray_apps.config import ServingConfig
from training.config import TrainingConfig

SCHEMA_PATH = CHART_DIR / "values.schema.json"
TIME_ZONES_PATH = CHART_DIR / "files" / "time-zones.txt"
# resource.Quantity's grammar (k8s.io/apimachinery), unsigned: 8Gi, 500m, "1.5", 2e3; not 8GB.
# Numbers only as integers: the KubeRay CRDs declare quantities int-or-string (1.5 is refused).
QUANTITY = {"type": ["string", "integer"], "minimum": 0,
            "pattern": r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
                       r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}


def obj(properties: dict[str, Any], description: str = "", **extra: Any) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False, **extra}
    if description:
        schema["description"] = description
    return schema


def string(**extra: Any) -> dict:
    return {"type": "string", **extra}


def integer(minimum: int | None = 0, **extra: Any) -> dict:
    schema: dict[str, Any] = {"type": "integer", **extra}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


BOOLEAN = {"type": "boolean"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
REF = {name: {"$ref": f"#/definitions/{name}"} for name in
       ("resources", "nodeSelector", "tolerations", "affinity", "peers", "labelSelector",
        "image")}
CRON = string(pattern=SCHEDULE_PATTERN, description="Cron schedule: five fields (minute hour "
              "day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly/"
              "@every <duration>, as KubeRay and Kubernetes parse it (robfig/cron).")
# Redis `maxmemory`: bytes, or with a unit.
MAXMEMORY = string(pattern=r"^\d+(b|kb|mb|gb)?$")
# KubeRay: a RayJob name is a DNS-1035 label of at most 47 characters.
RAYJOB_NAME = string(pattern=r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$", maxLength=47)


def definitions() -> dict:
    compute = obj({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY},
                  required=["cpu", "memory"])
    selector = obj({
        "matchLabels": STRING_MAP,
        "matchExpressions": {"type": "array", "items": obj({
            "key": string(), "operator": string(enum=["In", "NotIn", "Exists", "DoesNotExist"]),
            "values": {"type": "array", "items": string()}}, required=["key", "operator"])},
    })
    peer = obj({"podSelector": REF["labelSelector"], "namespaceSelector": REF["labelSelector"],
                "ipBlock": obj({"cidr": string(), "except": {"type": "array", "items": string()}},
                               required=["cidr"])})
    return {
        "resources": obj({"requests": compute, "limits": compute}, required=["requests", "limits"],
                         description="Requests and limits (cpu and memory both required)."),
        "nodeSelector": STRING_MAP,
        "tolerations": {"type": "array", "items": obj({
            "key": string(), "operator": string(enum=["Exists", "Equal"]), "value": string(),
            "effect": string(enum=["NoSchedule", "PreferNoSchedule", "NoExecute"]),
            "tolerationSeconds": integer()})},
        "affinity": obj({"nodeAffinity": {"type": "object"}, "podAffinity": {"type": "object"},
                         "podAntiAffinity": {"type": "object"}}),
        "labelSelector": selector,
        "peers": {"type": "array", "items": peer},
        "image": obj({"repository": string(minLength=1), "tag": string(minLength=1),
                      "pullPolicy": string(enum=["Always", "IfNotPresent", "Never"])},
                     required=["repository", "tag", "pullPolicy"]),
    }


def scheduling(affinity: bool = True) -> dict:
    fields = {"nodeSelector": REF["nodeSelector"], "tolerations": REF["tolerations"]}
    if affinity:
        fields["affinity"] = REF["affinity"]
    return fields


def gpu_group(autoscaled: bool) -> dict:
    fields = {"enabled": BOOLEAN, "replicas": integer(), "gpus": integer(1),
              "gpuResourceName": string(minLength=1), "resources": REF["resources"],
              **scheduling(affinity=autoscaled)}
    if autoscaled:
        fields |= {"minReplicas": integer(), "maxReplicas": integer()}
    return obj(fields)


def persistence(extra: dict | None = None) -> dict:
    return obj({"existingClaim": string(), "size": QUANTITY, "storageClassName": string(),
                "accessModes": {"type": "array", "minItems": 1, "items": string(enum=[
                    "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"])},
                **(extra or {})})


def overrides(model: type[BaseModel], description: str, exclude: tuple[str, ...] = ()) -> dict:
    """``model``'s JSON schema with its $defs inlined, nothing required, ``exclude`` left out."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items() if k not in ("title", "required")}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result = inline(schema)
    for key in exclude:
        result["properties"].pop(key, None)
    result["description"] = description
    return result


def values_schema() -> dict:
    serving = obj({
        "enabled": BOOLEAN, "modelTag": string(), "serveConfigV2": string(),
        "app": overrides(ServingConfig, "Changes to the serving section of configs/k8s.yaml "
                         "(ray_apps.config.ServingConfig); modelTag sets the model, "
                         "serving.auth the API tokens.",
                         exclude=("model_tag", "http_port", "grpc_port", "auth")),
        "rayVersion": string(pattern=r"^\d+\.\d+\.\d+$"),
        "auth": obj({"enabled": BOOLEAN, "existingSecret": string(),
                     "secretKey": string(pattern=r"^[-._a-zA-Z0-9]+$")}),
        "upgradeStrategy": obj({
            "type": string(enum=["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]),
            "clusterUpgradeOptions": obj({
                "gatewayClassName": string(), "stepSizePercent": integer(1, maximum=100),
                "intervalSeconds": integer(1), "maxSurgePercent": integer(1, maximum=100)})},
            required=["type"]),
        "rayClusterDeletionDelaySeconds": integer(),
        "serveService": obj({"type": string(enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                             "annotations": STRING_MAP, "httpPort": integer(1, maximum=65535),
                             "grpcPort": integer(1, maximum=65535)}),
        "autoscaling": obj({"enabled": BOOLEAN, "idleTimeoutSeconds": integer(),
                            "upscalingMode": string(enum=["Default", "Aggressive",
                                                          "Conservative"]),
                            "resources": REF["resources"]}),
        "gcsFaultTolerance": obj({
            "enabled": BOOLEAN,
            "redisAddress": string(pattern=r"^([^:/\s]+:[0-9]{1,5})?$"),
            "auth": obj({"existingSecret": string(),
                         "existingSecretPasswordKey": string(minLength=1)}),
            "externalStorageNamespace": string(),
            "redis": obj({"maxmemory": MAXMEMORY, "resources": REF["resources"],
                          "persistence": obj({"enabled": BOOLEAN, "size": QUANTITY,
                                              "storageClassName": string()}),
                          **scheduling(affinity=False),
                          "podDisruptionBudget": obj({"enabled": BOOLEAN})})}),
        "head": obj({"resources": REF["resources"], **scheduling()}),
        "workers": obj({
            "cpu": obj({"replicas": integer(), "minReplicas": integer(),
                        "maxReplicas": integer(1), "resources": REF["resources"],
                        **scheduling()}),
            "gpu": gpu_group(autoscaled=True)}),
        "podDisruptionBudget": obj({"enabled": BOOLEAN, "minAvailable": integer()}),
        "serviceMonitor": obj({"enabled": BOOLEAN, "interval": string(pattern=r"^\d+[smh]$"),
                               "labels": STRING_MAP}),
    })
    retraining = obj({
        "enabled": BOOLEAN, "margin": {"type": "number"},
        "training": overrides(TrainingConfig, "Overrides of the training section of "
                              "configs/k8s.yaml (training.config.TrainingConfig)."),
        "runtimeEnv": obj({"env_vars": STRING_MAP, "pip": {}, "uv": {}, "conda": {},
                           "working_dir": string(), "py_modules": {"type": "array"},
                           "excludes": {"type": "array", "items": string()},
                           "config": {"type": "object"}}),
        "shutdownAfterJobFinishes": BOOLEAN, "ttlSecondsAfterFinished": integer(),
        "backoffLimit": integer(), "activeDeadlineSeconds": integer(1),
        "schedule": obj({"enabled": BOOLEAN, "cron": CRON, "timeZone": string(minLength=1),
                         "suspend": BOOLEAN}),
        "job": obj({"enabled": BOOLEAN, "name": RAYJOB_NAME}),
        "rollout": obj({"enabled": BOOLEAN, "timeoutSeconds": integer(1)}),
        "head": obj({"resources": REF["resources"], **scheduling(affinity=False)}),
        "workers": obj({
            "cpu": obj({"replicas": integer(), "resources": REF["resources"],
                        **scheduling(affinity=False)}),
            "gpu": gpu_group(autoscaled=False)}),
        "submitterResources": REF["resources"],
    })
    features = obj({
        "enabled": BOOLEAN,
        "store": obj({"project": string(pattern=r"^[a-zA-Z0-9_]+$"), "registry": string(),
                      "redisType": string(enum=["redis", "redis_cluster", "redis_sentinel"]),
                      "keyTtlSeconds": integer()}),
        "dataset": obj({"format": string(enum=["movielens-100k", "sasrec", "generic"]),
                        "path": string()}),
        "persistence": persistence(),
        "server": obj({"enabled": BOOLEAN, "replicas": integer(), "workers": integer(1),
                       "registryTtlSeconds": integer(), "resources": REF["resources"],
                       **scheduling(),
                       "podDisruptionBudget": obj({"enabled": BOOLEAN,
                                                   "maxUnavailable": integer(1)})}),
        "apply": obj({"enabled": BOOLEAN, "onUpgrade": BOOLEAN, "ingest": BOOLEAN,
                      "build": BOOLEAN, "materialize": BOOLEAN, "backoffLimit": integer(),
                      "activeDeadlineSeconds": integer(1),
                      "ttlSecondsAfterFinished": integer(), "resources": REF["resources"]}),
        "materialize": obj({"enabled": BOOLEAN, "schedule": CRON,
                            "timeZone": string(minLength=1), "suspend": BOOLEAN,
                            "backoffLimit": integer(), "activeDeadlineSeconds": integer(1),
                            "startingDeadlineSeconds": integer(1),
                            "ttlSecondsAfterFinished": integer(),
                            "historyLimit": integer(), "resources": REF["resources"]}),
    })
    redis = obj({
        "enabled": BOOLEAN,
        "auth": obj({"existingSecret": string(), "existingSecretPasswordKey": string(minLength=1)}),
        "external": obj({"host": string(), "port": integer(1, maximum=65535), "tls": BOOLEAN}),
        "image": REF["image"], "runAsUser": integer(1),
        "persistence": obj({"enabled": BOOLEAN, "size": QUANTITY, "storageClassName": string()}),
        "maxmemory": MAXMEMORY,
        "resources": REF["resources"], **scheduling(affinity=False),
        "podDisruptionBudget": obj({"enabled": BOOLEAN}),
    })
    model_store = obj({
        "mode": string(enum=["pvc", "objectStore"]),
        "persistence": persistence(),
        "objectStore": obj({"url": string(pattern=r"^([a-z0-9]+://.+)?$"),
                            "credentialsSecret": string(), "resources": REF["resources"],
                            "sizeLimit": QUANTITY}),
    })
    network = obj({
        "enabled": BOOLEAN, "serveClients": REF["peers"], "featureServerClients": REF["peers"],
        "kubeRayOperator": {"$ref": "#/definitions/peers/items"},
        "dns": {"$ref": "#/definitions/peers/items"},
        "apiServerCIDRs": {"type": "array", "items": string(pattern=r"^[0-9a-fA-F.:]+/\d+$")},
        "apiServerPorts": {"type": "array", "items": integer(1, maximum=65535)},
        "metricsScrapers": REF["peers"], "externalRedis": REF["peers"],
        "externalGcsRedis": REF["peers"],
        "datasetDownload": obj({"enabled": BOOLEAN, "to": REF["peers"],
                                "ports": {"type": "array", "minItems": 1,
                                          "items": integer(1, maximum=65535)}}),
        "extraEgress": {"type": "array", "items": obj({
            "to": REF["peers"],
            "ports": {"type": "array", "items": obj({
                "port": {"type": ["integer", "string"]}, "endPort": integer(1),
                "protocol": string(enum=["TCP", "UDP", "SCTP"])})}})},
    })
    return obj({
        "nameOverride": string(), "fullnameOverride": string(), "image": REF["image"],
        "imagePullSecrets": {"type": "array", "items": string(minLength=1)},
        "serviceAccount": obj({"create": BOOLEAN, "name": string()}),
        "podSecurityContext": obj({"runAsUser": integer(1), "runAsGroup": integer(1),
                                   "fsGroup": integer(1)},
                                  description="Non-root IDs only (restricted profile)."),
        "topologySpread": obj({
            "enabled": BOOLEAN, "topologyKey": string(minLength=1), "maxSkew": integer(1),
            "whenUnsatisfiable": string(enum=["ScheduleAnyway", "DoNotSchedule"])}),
        "rayAuth": obj({"secretName": string(pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")}),
        "networkPolicy": network, "serving": serving, "retraining": retraining,
        "features": features, "redis": redis, "modelStore": model_store,
    }, **{"$schema": "http://json-schema.org/draft-07/schema#", "title": "irec chart values",
          "definitions": definitions()})


def render_schema() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


def render_time_zones() -> str:
    """files/time-zones.txt: a header line, then one IANA zone name a line."""
    header = "# IANA time zones of the schedules; from `python -m irec.k8s.schema`"
    return "\n".join([header, *time_zones()]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the schema (to the path given, default the chart's) and files/time-zones.txt."""
    path = Path((argv or sys.argv[1:] or [str(SCHEMA_PATH)])[0])
    path.write_text(render_schema())
    TIME_ZONES_PATH.write_text(render_time_zones())
    print(f"values schema: wrote {path} and {TIME_ZONES_PATH}")


if __name__ == "__main__":
    main()
