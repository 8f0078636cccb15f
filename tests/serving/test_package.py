"""BentoML model store packaging: exact reload, integrity refusal, promotion gate, and crash
safety with real processes (concurrent promotions, a save killed midway)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest
import torch
import yaml

from serving import package
from tests.helpers import ROOT, wait_until
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


def test_force_promotes_a_worse_model_with_a_warning_but_never_a_nan(untrained, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setattr(package, "_champions_file", lambda: tmp_path / "champions.json")
    first = _save(untrained, 0.050)
    assert package.promote(first).promoted
    worse = _save(untrained, 0.040)
    refused = package.promote(worse)
    assert not refused.promoted and refused.beaten and refused.warning is None
    forced = package.promote(worse, force=True)
    assert forced.promoted and package.champion() == worse
    assert forced.warning == (f"forced: {worse} promoted although the comparison refused it "
                              f"({package.SCORE} 0.0400 vs champion {first} 0.0500; needs "
                              "+0.0000, lost by 0.0100)")
    nan = package.promote(_save(untrained, float("nan")), force=True)
    assert not nan.promoted and not nan.beaten and "not a number" in nan.message
    assert package.champion() == worse


def _private_store(tmp_path: Path, tags: list[str]) -> Path:
    """A BentoML home holding copies of ``tags``, for processes of their own."""
    home = tmp_path / "bentoml"
    for tag in tags:
        src = Path(bentoml.models.get(tag).path)
        shutil.copytree(src, home / "models" / package.MODEL_NAME / src.name)
    return home


RACE = """
import sys, time
from pathlib import Path
from serving import package
tag, signals, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
package.load(tag)  # warm: every race starts at the read-compare-write
print("ready", flush=True)
for race in range(rounds):
    while not (signals / f"go{race}").exists():
        time.sleep(0.001)
    print(package.promote(tag).message, flush=True)
"""
RACES = 6


def test_two_concurrent_promotions_leave_the_better_champion(untrained, tmp_path):
    old, good, best = (_save(untrained, score) for score in (0.03, 0.05, 0.06))
    home = _private_store(tmp_path, [old, good, best])
    champions = home / "irec-champions.json"
    racers = [subprocess.Popen([sys.executable, "-c", RACE, tag, str(tmp_path), str(RACES)],
                               cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(home)},
                               stdout=subprocess.PIPE, text=True) for tag in (good, best)]
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready", f"exited {racer.wait()}"
        for race in range(RACES):  # both start together from the same old champion
            champions.write_text(json.dumps({package.MODEL_NAME: old}))
            (tmp_path / f"go{race}").touch()
            said = [racer.stdout.readline().strip() for racer in racers]
            assert json.loads(champions.read_text()) == {package.MODEL_NAME: best}, (race, said)
            assert said[1].startswith(f"{best} is champion"), said
        assert [racer.wait(timeout=60) for racer in racers] == [0, 0]
    finally:
        for racer in racers:
            racer.kill()


SAVE = """
import sys
import pandas as pd
import torch
from serving import package
model = torch.load(sys.argv[1], weights_only=False)
package.save(model, pd.read_pickle(sys.argv[2]), metrics={package.SCORE: 0.05},
             dataset_fingerprint="e" * 64, feature_services={}, genre_names=[],
             log=lambda _: None)
"""


def test_a_model_save_killed_midway_leaves_the_store_loadable(untrained, tmp_path):
    model, _, items, _ = untrained
    previous = _save(untrained, 0.05)
    home = _private_store(tmp_path, [previous])
    (home / "models" / package.MODEL_NAME / "latest").write_text(previous.split(":")[1])
    torch.save(model, tmp_path / "model.pt")
    items.to_pickle(tmp_path / "items.pkl")
    saver = subprocess.Popen([sys.executable, "-c", SAVE, str(tmp_path / "model.pt"),
                              str(tmp_path / "items.pkl")], cwd=ROOT,
                             env={**os.environ, "BENTOML_HOME": str(home)})
    try:
        wait_until(lambda: list(home.glob(".irec-staging-*/*/*")) or saver.poll() is not None,
                   60, "the save to copy into its staging store", interval_s=0.001)
    finally:
        saver.kill()
        saver.wait()
    assert saver.returncode == -9, "the save ended before the kill"

    versions = home / "models" / package.MODEL_NAME
    complete = []
    for root in sorted(p for p in versions.iterdir() if p.is_dir()):
        package.verify(root, yaml.safe_load((root / "model.yaml").read_text())["metadata"])
        complete.append(root.name)
    assert previous.split(":")[1] in complete
    assert (versions / "latest").read_text() in complete
    assert not list(versions.glob(".*"))
