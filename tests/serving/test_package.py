"""BentoML model store packaging: exact reload, integrity refusal, promotion gate."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pytest
import torch
import yaml

from serving import package
from training.eval.evaluate import evaluate_model


def _save(untrained, score: float) -> str:
    model, data, items, services = untrained
    return package.save(model, items, metrics={package.SCORE: score},
                        dataset_fingerprint="f" * 64, feature_services=services,
                        genre_names=data.genre_names, log=lambda _: None)


def test_a_saved_model_reloads_and_reproduces_its_scores_exactly(untrained):
    model, data, items, services = untrained
    tag = _save(untrained, 0.05)
    loaded = package.load(tag)
    assert loaded.metadata["feature_services"] == services
    assert loaded.metadata["dataset_fingerprint"] == "f" * 64
    assert loaded.items.title[0] == "Toy Story (1995)"
    assert torch.equal(loaded.item_vectors, model.item_vectors())
    test = data.test
    args = [torch.from_numpy(a[:64]) for a in (test.items, test.ratings, test.stamps)]
    assert torch.equal(loaded.model.score_items(loaded.model.user_state(*args)),
                       model.score_items(model.user_state(*args)))
    assert evaluate_model(loaded.model, data, "test") == evaluate_model(model, data, "test")


@pytest.mark.parametrize("damage", ["flip a byte", "delete a file", "add a file",
                                    "edit the metadata", "an older manifest"])
def test_a_damaged_model_refuses_to_load(untrained, damage):
    tag = _save(untrained, 0.05)
    root = Path(bentoml.models.get(tag).path)
    if damage == "flip a byte":
        blob = bytearray((root / "model.safetensors").read_bytes())
        blob[len(blob) // 2] ^= 0x01
        (root / "model.safetensors").write_bytes(bytes(blob))
        expected = "model.safetensors: sha256"
    elif damage == "delete a file":
        (root / "items.json").unlink()
        expected = "do not match the manifest"
    elif damage == "add a file":
        (root / "extra.bin").write_bytes(b"\0")
        expected = "do not match the manifest"
    elif damage == "edit the metadata":  # the feature contract the replicas check against
        info = yaml.safe_load((root / "model.yaml").read_text())
        info["metadata"]["feature_services"]["retrieval_v1"] = "0" * 64
        (root / "model.yaml").write_text(yaml.safe_dump(info))
        expected = "metadata was changed"
    else:
        manifest = json.loads((root / package.MANIFEST).read_text())
        del manifest[package.METADATA_ENTRY]
        (root / package.MANIFEST).write_text(json.dumps(manifest))
        expected = "no digest of the model's metadata"
    with pytest.raises(package.IntegrityError, match=expected):
        package.load(tag)


def test_promotion_gate(untrained, monkeypatch, tmp_path):
    monkeypatch.setattr(package, "_champions_file", lambda: tmp_path / "champions.json")
    first = _save(untrained, 0.050)
    assert package.promote(first).promoted
    assert package.champion() == first

    worse = package.promote(_save(untrained, 0.040))
    assert not worse.promoted and "lost by 0.0100" in worse.message
    assert package.champion() == first

    better = _save(untrained, 0.060)
    assert package.promote(better, margin=0.005).promoted
    narrow = package.promote(_save(untrained, 0.062), margin=0.005)
    assert not narrow.promoted and "lost by 0.0030" in narrow.message
    assert json.loads((tmp_path / "champions.json").read_text()) == {"interest": better}


def test_a_nan_score_never_promotes_and_a_broken_champion_is_replaced(untrained, monkeypatch,
                                                                       tmp_path):
    monkeypatch.setattr(package, "_champions_file", lambda: tmp_path / "champions.json")
    assert not package.promote(_save(untrained, float("nan"))).promoted
    assert package.champion() is None
    first = _save(untrained, 0.050)
    assert package.promote(first).promoted
    (Path(bentoml.models.get(first).path) / "items.json").write_text("[]")  # now corrupt
    second = _save(untrained, 0.010)  # worse, but the champion can no longer be served
    verdict = package.promote(second)
    assert verdict.promoted and f"the champion {first} cannot be loaded" in verdict.message
    assert package.champion() == second
