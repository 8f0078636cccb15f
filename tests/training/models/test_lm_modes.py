"""The finetune and lora LM modes of the interest transformer: real MiniLM weights, real
ML-100K item texts and sequences from the Feast workspace, CPU, a few optimizer steps."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from irec.config import PlatformConfig
from serving import package
from tests.training.conftest import fit_preset, resolved
from training.eval.evaluate import evaluate_model
from training.models.config import InterestModelConfig, ModelConfig
from training.models.text_tower import resolve_path
from training.train import (
    best_checkpoint,
    build_model,
    load_checkpoint,
    make_optimizer,
)

USERS = 32  # sequences per test batch
STEPS = 4


def _config(cfg: PlatformConfig, **model) -> PlatformConfig:
    m = cfg.training.model.model_copy(update=model)
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"model": m})})


def _build(tiny, **model):
    cfg, data = tiny
    lines: list[str] = []
    mcfg = resolved(_config(cfg, lm_items_per_step=64, **model), data, log=lines.append)
    torch.manual_seed(0)
    return build_model(mcfg, data).train(), lines


@pytest.fixture(scope="module")
def finetune(tiny):
    return _build(tiny, lm_mode="finetune", lm_layers=2)[0]


@pytest.fixture(scope="module")
def lora(tiny):
    return _build(tiny, lm_mode="lora", lm_layers=1)[0]


def _batch(data):
    return [torch.from_numpy(a[:USERS]) for a in (data.train.items, data.train.ratings,
                                                  data.train.stamps)]


def _loss(model, batch) -> float:
    torch.manual_seed(1)  # the same dropout masks and fresh-item subset every time
    return float(model(*batch)["total"].detach())


def _train(model, batch, steps: int = STEPS) -> None:
    optimizer = make_optimizer(model, lr=2e-3, lm_lr=1e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        torch.manual_seed(100 + step)
        loss = model(*batch)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_auto_resolves_to_lora_on_gpu_and_frozen_on_cpu(tiny):
    cfg, data = tiny
    assert ModelConfig(lm_mode="auto").resolved_lm_mode(use_gpu=True) == "lora"
    assert ModelConfig(lm_mode="auto").resolved_lm_mode(use_gpu=False) == "frozen"
    assert ModelConfig(lm_mode="finetune").resolved_lm_mode(use_gpu=False) == "finetune"
    assert cfg.training.model.lm_mode == "auto"  # the default; the tiny preset leaves it
    for use_gpu, mode in ((False, "frozen"), (True, "lora")):
        gpu = cfg.model_copy(update={"training": cfg.training.model_copy(
            update={"use_gpu": use_gpu})})
        lines: list[str] = []
        assert resolved(gpu, data, log=lines.append).lm_mode == mode
        assert f"model: lm_mode auto -> {mode} (training.use_gpu={use_gpu})" in lines
    with pytest.raises(ValueError, match="lm_layers=7 > the LM's 6 layers"):
        resolved(_config(cfg, lm_mode="finetune", lm_layers=7), data)


def test_finetune_trains_the_top_layers_on_frozen_bottom_outputs(tiny, finetune):
    _, data = tiny
    model = copy.deepcopy(finetune)
    tower = model.text_tower
    path = resolve_path(model.cfg.lm_path)
    lm = AutoModel.from_pretrained(path).eval()
    # the tower holds the LM's top 2 layers, all trainable, and nothing below them
    assert len(tower.layers) == 2
    pretrained = {f"layers.{k}.{n}": p for k in range(2)
                  for n, p in lm.encoder.layer[4 + k].named_parameters()}
    assert {n for n, _ in tower.named_parameters()} == set(pretrained)
    assert all(torch.equal(p, pretrained[n]) for n, p in tower.named_parameters())
    assert {id(p) for p in model.lm_parameters()} == {id(p) for p in tower.parameters()}
    # the cached bottom output is the pretrained LM's hidden state below layer 5
    items = [1, 50, 1682]
    tokens = AutoTokenizer.from_pretrained(path)([data.item_texts[i] for i in items],
                                                 padding=True, return_tensors="pt")
    with torch.no_grad():
        below = lm(**tokens, output_hidden_states=True).hidden_states[4]  # (3, S, H)
    for row, item in enumerate(items):
        n = int(tower.length[item])
        assert torch.allclose(tower.base[item, :n], below[row, :n], atol=1e-5)
    base, top = tower.base.clone(), copy.deepcopy(tower.layers.state_dict())

    batch = _batch(data)
    before = _loss(model, batch)
    model.zero_grad()
    model(*batch)["total"].backward()
    assert all(p.grad is not None for p in tower.parameters())
    assert all(p.grad.abs().sum() > 0 for n, p in tower.named_parameters() if "weight" in n)
    _train(model, batch)
    after = _loss(model, batch)
    assert after < before, (before, after)
    assert torch.equal(tower.base, base)  # the frozen bottom never changes
    changed = [n for n, p in tower.layers.state_dict().items() if not torch.equal(p, top[n])]
    assert "1.output.dense.weight" in changed and "0.attention.self.query.weight" in changed


def test_lora_trains_only_the_adapters_and_the_heads(tiny, lora):
    _, data = tiny
    model = copy.deepcopy(lora)
    tower = model.text_tower
    adapters = {n for n, p in model.named_parameters() if p.requires_grad and "text_tower" in n}
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert {id(p) for p in model.lm_parameters()} == {
        id(p) for n, p in model.named_parameters() if n in adapters}
    heads = [n for n, p in model.named_parameters() if "text_tower" not in n]
    assert all(p.requires_grad for n, p in model.named_parameters() if n in heads)
    lm_before = {n: p.clone() for n, p in tower.named_parameters() if "lora_" not in n}
    lora_before = {n: p.clone() for n, p in tower.named_parameters() if "lora_" in n}
    head_before = model.text_proj.weight.clone()

    batch = _batch(data)
    before = _loss(model, batch)
    _train(model, batch)
    assert _loss(model, batch) < before
    params = dict(tower.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in lm_before.items())  # base LM unchanged
    assert any(not torch.equal(params[n], p) for n, p in lora_before.items()
               if ".lora_B." in n)
    assert not torch.equal(model.text_proj.weight, head_before)


def test_export_frozen_scores_exactly_as_the_tuned_model(tiny, finetune, ml100k_workspace):
    _, data = tiny
    model = copy.deepcopy(finetune)
    initial = model.text.clone()
    _train(model, _batch(data), steps=2)
    tuned = evaluate_model(model, data, "valid")  # eval mode refreshes the text cache
    assert not torch.equal(model.text, initial)  # the tuned LM embeds items differently
    frozen = model.export_frozen()
    assert frozen.cfg.lm_mode == "frozen" and frozen.text_tower is None
    assert torch.equal(frozen.text, model.text)
    assert evaluate_model(frozen, data, "valid") == tuned
    history = [torch.from_numpy(a[:8]) for a in (data.valid.items, data.valid.ratings,
                                                 data.valid.stamps)]
    model.eval()
    expected = model.score_items(model.user_state(*history))
    assert torch.equal(frozen.score_items(frozen.user_state(*history)), expected)
    # serving rebuilds the exported model from config.json + safetensors, without the LM
    items = pd.read_parquet(ml100k_workspace.data_dir / "items.parquet")
    tag = package.save(frozen, items, metrics={"val_ndcg@10": tuned["ndcg@10"]},
                       dataset_fingerprint="lm-modes-test", feature_services={},
                       genre_names=data.genre_names, log=lambda _: None)
    served = package.load(tag).model
    assert torch.equal(served.score_items(served.user_state(*history)), expected)


def test_state_dict_carries_the_trained_lm_and_rebuilds_bit_identically(tiny, lora):
    cfg, data = tiny
    model = copy.deepcopy(lora)
    batch = _batch(data)
    _train(model, batch, steps=2)
    model.eval()
    model.train()
    state = model.state_dict()
    assert any(".lora_B." in k for k in state) and "text" in state
    assert not any(k.endswith(".base") for k in state)  # the frozen cache is rebuilt
    torch.manual_seed(7)
    again = build_model(model.cfg, data)
    again.load_state_dict(state)
    again.train()
    assert _loss(again, batch) == _loss(model, batch)


def test_ray_train_finetune_resumes_bit_identically_and_exports(ray_cluster, tiny, tmp_path):
    """Two short epochs of lm_mode finetune through Ray Train (the LM path travels in the
    train_loop_config); a worker failure at epoch 1 resumes from epoch 0's checkpoint, the
    tuned top layer included, and ends with the same metrics as the uninterrupted run."""
    cfg, data = tiny
    short = _config(cfg, lm_mode="finetune", lm_layers=1, lm_items_per_step=32)
    short = short.model_copy(update={"training": short.training.model_copy(update={
        "epochs": 2, "batch_size": 256, "patience": 10, "storage_path": str(tmp_path)})})

    def run(name: str, **failure):
        t = short.training.model_copy(update={"run_name": name, **failure})
        return fit_preset(short.model_copy(update={"training": t}), data)

    clean = run("clean")
    failed = run("failed", max_failures=1, inject_failure_at_epoch=1)
    assert len(list((tmp_path / "failed").glob("*/injected_failure.txt"))) == 1
    epochs = sorted(m["epoch"] for _, m in failed.best_checkpoints)
    assert epochs == sorted(m["epoch"] for _, m in clean.best_checkpoints) == [0, 1]
    timing = {"sequences_per_s"}
    assert {k: v for k, v in failed.metrics.items() if k not in timing} == {
        k: v for k, v in clean.metrics.items() if k not in timing}

    best = best_checkpoint(clean)
    with best.as_directory() as directory:
        state = torch.load(f"{directory}/train_state.pt", weights_only=True)
        saved = InterestModelConfig.load(directory)
    assert saved.lm_mode == "finetune" and saved.lm_path is None
    assert "text_tower.layers.0.output.dense.weight" in state["model"]
    model = load_checkpoint(best, data)
    tuned = evaluate_model(model, data, "test")
    assert evaluate_model(model.export_frozen(), data, "test") == tuned
