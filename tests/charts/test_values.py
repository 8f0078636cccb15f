"""values.schema.json and the templates' own checks refuse bad values with a clear message;
every values key is documented."""

from __future__ import annotations

import pytest
import yaml
from chart_cases import ROOT_VALUES

from irec.k8s import docs
from irec.k8s.render import CHART_DIR, ValuesError, merge_values, render
from irec.k8s.schema import render_schema


def test_schema_file_is_generated():
    assert (CHART_DIR / "values.schema.json").read_text() == render_schema(), (
        "charts/irec/values.schema.json is stale: run `make chart-config`")


@pytest.mark.parametrize("values, message", [
    ({"serving": {"workers": {"cpu": {"replicas": "two"}}}},
     "at '/serving/workers/cpu/replicas': got string, want integer"),
    ({"serving": {"workers": {"cpu": {"replicas": -1}}}},
     "at '/serving/workers/cpu/replicas': minimum: got -1, want 0"),
    ({"features": {"server": {"replicas": -2}}},
     "at '/features/server/replicas': minimum: got -2, want 0"),
    ({"serving": {"replcias": 3}}, "at '/serving': additional properties 'replcias' not allowed"),
    ({"serving": {"app": {"ranking": {"weigths": {}}}}},
     "at '/serving/app/ranking': additional properties 'weigths' not allowed"),
    ({"serving": {"app": {"deployments": {"Rankng": {"num_replicas": 2}}}}}, "Rankng"),
    ({"redis": {"auth": {"existingSecret": "x", "password": "inline"}}},
     "at '/redis/auth': additional properties 'password' not allowed"),
    ({"retraining": {"training": {"epochz": 3}}},
     "at '/retraining/training': additional properties 'epochz' not allowed"),
    ({"retraining": {"training": {"model": {"lm_mode": "bert"}}}},
     "at '/retraining/training/model/lm_mode'"),
    ({"serving": {"upgradeStrategy": {"type": "Recreate"}}},
     "at '/serving/upgradeStrategy/type'"),
    ({"modelStore": {"mode": "nfs"}}, "at '/modelStore/mode'"),
    ({"serving": {"head": {"resources": {"limits": {"memory": None}}}}},
     "at '/serving/head/resources/limits': missing property 'memory'"),
])
def test_schema_refuses_bad_values(values, message):
    with pytest.raises(ValuesError) as refused:
        render(merge_values(ROOT_VALUES, values))
    assert message in str(refused.value)


@pytest.mark.parametrize("values, message", [
    ({}, "redis.auth.existingSecret is required"),
    (merge_values(ROOT_VALUES, {"redis": {"enabled": False}}), "redis.external.host is required"),
    (merge_values(ROOT_VALUES, {"serving": {"workers": {"cpu": {"replicas": 9}}}}),
     "serving.workers.cpu.replicas=9 must lie within minReplicas=2 and maxReplicas=6"),
    (merge_values(ROOT_VALUES, {"modelStore": {"mode": "objectStore"}}),
     "modelStore.objectStore.url is required"),
    (merge_values(ROOT_VALUES, {"modelStore": {"mode": "objectStore",
                                               "objectStore": {"url": "s3://b/m"}}}),
     "serving.modelTag must name a model version"),
    (merge_values(ROOT_VALUES, {"serving": {"upgradeStrategy": {
        "type": "NewClusterWithIncrementalUpgrade"}}}),
     "serving.upgradeStrategy.clusterUpgradeOptions (gatewayClassName"),
])
def test_templates_refuse_inconsistent_values(values, message):
    with pytest.raises(ValuesError) as refused:
        render(values)
    assert str(refused.value).startswith(message)


def test_every_values_key_is_documented():
    text = (CHART_DIR / "values.yaml").read_text()
    assert docs.undocumented(text) == []
    values = yaml.safe_load(text)
    for key in docs.documented(text):
        node = values
        for part in key.split("."):
            node = node[part]


def test_readme_table_is_generated_from_values():
    readme = (CHART_DIR / "README.md").read_text()
    assert readme == docs.with_table(readme, (CHART_DIR / "values.yaml").read_text()), (
        "the values table of charts/irec/README.md is stale: run `make chart-docs`")
    for key in docs.documented((CHART_DIR / "values.yaml").read_text()):
        assert f"| `{key}` |" in readme


def test_undocumented_keys_are_found():
    text = "# -- documented\na: 1\nb:\n  # -- inner\n  c: 2\n  d: 3\n# -- whole map\ne:\n  f: 4\n"
    assert docs.undocumented(text) == ["b.d"]
    assert docs.documented(text) == {"a": "documented", "b.c": "inner", "e": "whole map"}
