"""Validate rendered objects as the API server would, without a cluster.

Core kinds go against Kubernetes' own OpenAPI schemas at a pinned version (the strict schemas
of kubernetes-validate: unknown fields are errors). KubeRay kinds (RayService, RayJob,
RayCronJob, RayCluster) go against the ``openAPIV3Schema`` of their CustomResourceDefinition,
made strict the same way (``kubectl apply`` validates fields strictly by default). The
Prometheus Operator's ServiceMonitor has no schema here: its shape is checked.

An object the schemas accept then goes through the rules the KubeRay operator (and, for a
CronJob, the API server) applies in code (irec.k8s.operator): what they refuse is an error
here like a schema error, because such an object installs and then never runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from irec.k8s.operator import operator_errors

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33.0"
# The KubeRay CRDs (ray-project/kuberay helm-chart/kuberay-operator/crds); IREC_KUBERAY_SCHEMAS
# points elsewhere.
KUBERAY_SCHEMAS = Path(os.environ.get("IREC_KUBERAY_SCHEMAS",
                                      ROOT.parent / "shared" / "k8s-schemas" / "kuberay"))

Validator = Callable[[dict], Iterable[str]]
# The CRDs are megabytes of YAML: libyaml's loader where PyYAML has it.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def validate(objects: Iterable[dict], *, kubernetes_version: str = KUBERNETES_VERSION,
             kuberay_dir: Path = KUBERAY_SCHEMAS) -> list[str]:
    """Every problem as ``Kind/name: path: message``; empty when all objects are valid.

    Schema errors first; the operator's rules only run on an object the schemas accept (the
    operator never sees one the API server refused).
    """
    errors = []
    for obj in objects:
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        try:
            check = _validator(obj, kubernetes_version, Path(kuberay_dir))
        except LookupError as exc:
            errors.append(f"{name}: {exc}")
            continue
        problems = [f"{name}: {problem}" for problem in check(obj)]
        errors.extend(problems or operator_errors(obj))
    return errors


def _validator(obj: dict, kubernetes_version: str, kuberay_dir: Path) -> Validator:
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    group, _, version = api_version.rpartition("/")
    if group == "ray.io":
        return _schema_errors(_crd_validator(kuberay_dir, kind, version))
    if group == "monitoring.coreos.com" and kind == "ServiceMonitor":
        return _service_monitor_errors
    return _schema_errors(_core_validator(kubernetes_version, kind, api_version))


def _schema_errors(validator: jsonschema.protocols.Validator) -> Validator:
    def check(obj: dict) -> Iterable[str]:
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            yield f"{path}: {error.message}"
    return check


@cache
def _core_validator(kubernetes_version: str, kind: str, api_version: str):
    """kubernetes-validate's strict schema of a core kind (cached: the definitions are big)."""
    minor = kv.major_minor(kubernetes_version)
    versions = [v for v in kv.all_versions() if kv.major_minor(v) == minor]
    if not versions:
        raise LookupError(f"kubernetes-validate has no schemas for Kubernetes {minor}")
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{versions[-1]}-local-strict"
    try:
        schema = kv.schema_contents(f"{folder}/{kind.lower()}-{group}.json", kubernetes_version)
    except FileNotFoundError:
        raise LookupError(f"no schema for {api_version} {kind} in Kubernetes {minor}") from None
    definitions = kv.schema_contents(f"{folder}/_definitions.json", kubernetes_version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def _crd_validator(kuberay_dir: Path, kind: str, version: str):
    for path in sorted(kuberay_dir.glob("*.yaml")):
        text = path.read_text()
        if not re.search(rf"^\s+kind: {re.escape(kind)}$", text, re.MULTILINE):
            continue
        crd = yaml.load(text, Loader=_Loader)
        if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != kind:
            continue
        for served in crd["spec"]["versions"]:
            if served["name"] == version:
                schema = strict(served["schema"]["openAPIV3Schema"])
                return jsonschema.Draft7Validator(schema)
        raise LookupError(f"{path.name} has no version {version} of {kind}")
    raise LookupError(f"no CRD of kind {kind} in {kuberay_dir}")


def strict(schema: dict) -> dict:
    """A copy of a CRD schema where objects with declared properties refuse unknown fields.

    The API server prunes or (with strict field validation) rejects fields a structural schema
    does not declare, except under ``x-kubernetes-preserve-unknown-fields``.
    """
    copy = {key: _strict_child(key, value) for key, value in schema.items()}
    if ("properties" in copy and "additionalProperties" not in copy
            and not copy.get("x-kubernetes-preserve-unknown-fields")):
        copy["additionalProperties"] = False
    if "x-kubernetes-int-or-string" in copy and "type" not in copy:
        copy["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return copy


def _strict_child(key: str, value):
    if key == "properties":
        return {name: strict(sub) for name, sub in value.items()}
    if key in ("items", "additionalProperties") and isinstance(value, dict):
        return strict(value)
    if key in ("allOf", "anyOf", "oneOf"):
        return [strict(sub) for sub in value]
    return value


def _service_monitor_errors(obj: dict) -> Iterable[str]:
    spec = obj.get("spec") or {}
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        yield f"apiVersion: {obj.get('apiVersion')!r} is not monitoring.coreos.com/v1"
    if not (spec.get("selector") or {}).get("matchLabels"):
        yield "spec.selector.matchLabels: required"
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        yield "spec.endpoints: at least one endpoint is required"
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict) or not (endpoint.get("port")
                                                   or endpoint.get("targetPort")):
            yield f"spec.endpoints.{i}: needs a port name or targetPort"
