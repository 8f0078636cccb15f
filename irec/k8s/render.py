"""Render and lint charts/irec with the real Helm engine (helm-python-sdk: Helm's Go SDK).

    objects = render(profile_values("production"))        # every object, parsed, no NOTES
    errors = validate(objects)                              # [] when all are valid
    problems = lint(profile_values("gpu"))                  # Helm lint warnings and errors

Values go through the chart's values.schema.json, as ``helm install`` does: a bad value, or
one a template's own check refuses, raises ``ValuesError`` with Helm's message naming the key.
Used by the chart tests and by the Kubernetes commands of the CLI.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from irec.k8s.validate import validate

__all__ = ["CHART_DIR", "PROFILES_DIR", "ValuesError", "RenderError", "lint", "load_values",
           "merge_values", "notes", "profile_values", "profiles", "render", "render_manifests",
           "validate"]

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "irec"
PROFILES_DIR = CHART_DIR / "profiles"
NOTES = "NOTES.txt"


class ValuesError(ValueError):
    """Values the chart's schema (or a template's own check) refuses; Helm's message."""


class RenderError(RuntimeError):
    """A template failed to render."""


def merge_values(base: dict, override: dict) -> dict:
    """``override`` on top of ``base`` as Helm merges ``-f`` files: maps deep, the rest replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(*files: str | Path) -> dict:
    """Values files merged left to right (``helm -f a.yaml -f b.yaml``)."""
    values: dict = {}
    for path in files:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValuesError(f"{path}: a values file must be a mapping")
        values = merge_values(values, loaded)
    return values


def profiles(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    """Names of the documented value profiles (charts/irec/profiles/<name>.yaml)."""
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def profile_values(name: str, profiles_dir: Path = PROFILES_DIR) -> dict:
    path = Path(profiles_dir) / f"{name}.yaml"
    if not path.exists():
        raise ValuesError(f"no profile {name!r}; profiles: {', '.join(profiles(profiles_dir))}")
    return load_values(path)


def render_manifests(values: dict | None = None, *, release: str = "irec",
                     namespace: str = "irec", chart_dir: Path = CHART_DIR) -> dict[str, str]:
    """{template path: rendered YAML} of every template, NOTES.txt included."""
    with helm.Chart.load(str(chart_dir)) as chart:
        try:
            return chart.render(values or {}, name=release, namespace=namespace,
                                is_install=True)
        except helm.HelmValuesError as exc:
            raise ValuesError(str(exc)) from None
        except helm.HelmRenderError as exc:
            checked = _template_check(str(exc))
            if checked is None:
                raise RenderError(str(exc)) from None
            raise ValuesError(checked) from None


def render(values: dict | None = None, *, release: str = "irec", namespace: str = "irec",
           chart_dir: Path = CHART_DIR) -> list[dict]:
    """Every object the chart renders (hooks included), parsed; NOTES.txt left out."""
    manifests = render_manifests(values, release=release, namespace=namespace,
                                 chart_dir=chart_dir)
    return list(_objects(text for path, text in sorted(manifests.items())
                         if not path.endswith(NOTES)))


def notes(values: dict | None = None, **kwargs: Any) -> str:
    """The rendered NOTES.txt (what ``helm install`` prints)."""
    manifests = render_manifests(values, **kwargs)
    return next((text for path, text in manifests.items() if path.endswith(NOTES)), "")


def lint(values: dict | None = None, *, chart_dir: Path = CHART_DIR,
         namespace: str = "irec") -> list[str]:
    """Helm lint findings of warning severity or worse (strict mode), as ``path: message``."""
    report = helm.lint(str(chart_dir), values or {}, strict=True, namespace=namespace)
    findings = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return findings + list(report.get("errors") or [])


def _objects(texts: Iterable[str]) -> Iterable[dict]:
    for text in texts:
        for document in yaml.safe_load_all(text):
            if document:
                yield document


def _template_check(message: str) -> str | None:
    """The message of a template's own value check (``fail``), None for other errors.

    Helm reports it as 'execution error at (<template>:<line>:<col>): <message>'.
    """
    match = re.match(r"execution error at \([^)]*\): (.*)", message, re.DOTALL)
    return match.group(1) if match else None
